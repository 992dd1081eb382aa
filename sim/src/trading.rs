//! The simulated account's book: open positions, pending orders, balance,
//! and the account figures derived from them.
//!
//! Positions are valued at the market's current prices, the way a terminal
//! does (a buy closes at the bid, a sell at the ask), so the positions and
//! account a dashboard sees agree with the quotes it sees.

use super::market::{round_to, Instrument, Market};
use protocol::payload::{Account, Order, Position};
use protocol::time::{now_epoch_ms, rfc3339};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::json;

pub(crate) const STRATEGIES: &[&str] = &[
    "RSI_Strategy",
    "MACD_Cross",
    "Breakout_H1",
    "MeanReversion_M15",
    "Trend_Follow_D1",
    "Scalper_M5",
    "Grid_EA",
];

const LEVERAGE: f64 = 100.0;
/// Commission per side as a share of notional, about 3.5 USD a lot on
/// EURUSD: an ECN-like account.
const COMMISSION_RATE: f64 = 0.000_035;
const MIN_POSITIONS: usize = 3;
const MAX_POSITIONS: usize = 6;
/// Chance per positions tick that a trade closes and another opens.
const TRADE_CHANCE: f64 = 0.05;
/// Chance per orders tick that a pending order is cancelled and replaced.
const REPLACE_ORDER_CHANCE: f64 = 0.03;

/// Something the book did that deserves a log line.
pub(crate) struct Event {
    pub level: &'static str,
    pub module: &'static str,
    pub message: String,
    pub extra: serde_json::Value,
}

pub(crate) struct Book {
    pub positions: Vec<Position>,
    pub orders: Vec<Order>,
    balance: f64,
    next_ticket: u64,
}

impl Book {
    pub fn new(market: &Market, rng: &mut StdRng) -> Self {
        let mut book = Book {
            positions: Vec::new(),
            orders: Vec::new(),
            balance: 10_000.0,
            next_ticket: rng.random_range(150_000_000..190_000_000),
        };
        let now = now_epoch_ms();
        for _ in 0..rng.random_range(MIN_POSITIONS..=MAX_POSITIONS) {
            // Already open for a while: from five minutes to two days.
            let opened = now - rng.random_range(300_000..172_800_000);
            let p = book.open_position(market, rng, opened, true);
            book.positions.push(p);
        }
        for _ in 0..rng.random_range(2..=4) {
            let setup = now - rng.random_range(60_000..86_400_000);
            let o = book.new_order(market, rng, setup);
            book.orders.push(o);
        }
        book.mark_to_market(market);
        book
    }

    /// Revalues every position at the current prices.
    pub fn mark_to_market(&mut self, market: &Market) {
        for p in &mut self.positions {
            if let Some(ins) = market.find(&p.symbol) {
                let (current, profit) = valuation(market, ins, &p.kind, p.volume, p.price_open);
                p.price_current = current;
                p.profit = profit;
            }
        }
    }

    pub fn account(&self, market: &Market) -> Account {
        let floating: f64 = self
            .positions
            .iter()
            .map(|p| p.profit + p.swap + p.commission)
            .sum();
        let margin: f64 = self
            .positions
            .iter()
            .filter_map(|p| {
                let ins = market.find(&p.symbol)?;
                let notional = p.volume * ins.spec.contract * ins.mid();
                Some(market.to_usd(notional, ins.spec.quote_ccy) / LEVERAGE)
            })
            .sum();
        let equity = self.balance + floating;
        Account {
            balance: round_to(self.balance, 2),
            equity: round_to(equity, 2),
            margin: round_to(margin, 2),
            free_margin: round_to(equity - margin, 2),
            margin_level: if margin > 0.0 {
                round_to(equity / margin * 100.0, 2)
            } else {
                0.0
            },
            profit: round_to(floating, 2),
            currency: "USD".to_owned(),
        }
    }

    /// Now and then a position is closed (its result goes to the balance)
    /// and another one is opened, keeping between 3 and 6 open.
    pub fn trade(&mut self, market: &Market, rng: &mut StdRng) -> Vec<Event> {
        let mut events = Vec::new();
        if !rng.random_bool(TRADE_CHANCE) {
            return events;
        }
        let n = self.positions.len();
        let close = n > MIN_POSITIONS && (n >= MAX_POSITIONS || rng.random_bool(0.6));
        if close {
            let p = self.positions.remove(rng.random_range(0..n));
            let result = p.profit + p.swap + p.commission;
            let reason = *["tp", "sl", "strategy_exit", "manual"]
                .choose(rng)
                .unwrap_or(&"manual");
            self.balance += result;
            events.push(Event {
                level: "INFO",
                module: "order_executor",
                message: format!(
                    "Position closed: #{} {} {} {:.2} at {} (profit {:.2} USD)",
                    p.ticket,
                    p.symbol,
                    p.kind.to_uppercase(),
                    p.volume,
                    p.price_current,
                    result
                ),
                extra: json!({
                    "ticket": p.ticket,
                    "symbol": p.symbol,
                    "profit": round_to(result, 2),
                    "reason": reason,
                }),
            });
        }
        if self.positions.len() < MAX_POSITIONS && (close || rng.random_bool(0.5)) {
            let p = self.open_position(market, rng, now_epoch_ms(), false);
            events.push(opened_event(&p));
            self.positions.push(p);
        }
        self.mark_to_market(market);
        events
    }

    /// Fills orders whose price has been reached, and occasionally replaces
    /// one, so the pending list is alive too.
    pub fn work_orders(&mut self, market: &Market, rng: &mut StdRng) -> Vec<Event> {
        let mut events = Vec::new();
        let mut i = 0;
        while i < self.orders.len() {
            let o = &self.orders[i];
            let triggered = market.find(&o.symbol).is_some_and(|ins| {
                let (bid, ask) = (ins.bid(), ins.ask());
                match o.kind.as_str() {
                    "buy_limit" => ask <= o.price_open,
                    "sell_limit" => bid >= o.price_open,
                    "buy_stop" => ask >= o.price_open,
                    "sell_stop" => bid <= o.price_open,
                    _ => false,
                }
            });
            if triggered && self.positions.len() >= MAX_POSITIONS {
                let o = self.orders.remove(i);
                events.push(Event {
                    level: "WARNING",
                    module: "risk_manager",
                    message: format!(
                        "Pending order #{} {} rejected: max open positions ({MAX_POSITIONS}) reached",
                        o.ticket, o.symbol
                    ),
                    extra: json!({"ticket": o.ticket, "symbol": o.symbol, "open_positions": self.positions.len()}),
                });
                let replacement = self.new_order(market, rng, now_epoch_ms());
                events.push(placed_event(&replacement));
                self.orders.push(replacement);
            } else if triggered {
                let o = self.orders.remove(i);
                let p = self.fill(market, &o);
                events.push(Event {
                    level: "INFO",
                    module: "order_executor",
                    message: format!(
                        "Pending order #{} {} {} {:.2} filled at {}",
                        o.ticket,
                        o.symbol,
                        o.kind.to_uppercase(),
                        o.volume,
                        p.price_open
                    ),
                    extra: json!({"ticket": o.ticket, "position": p.ticket, "symbol": o.symbol}),
                });
                self.positions.push(p);
                let replacement = self.new_order(market, rng, now_epoch_ms());
                events.push(placed_event(&replacement));
                self.orders.push(replacement);
            } else {
                i += 1;
            }
        }
        if !self.orders.is_empty() && rng.random_bool(REPLACE_ORDER_CHANCE) {
            let o = self.orders.remove(rng.random_range(0..self.orders.len()));
            events.push(Event {
                level: "INFO",
                module: "order_executor",
                message: format!("Pending order #{} {} cancelled", o.ticket, o.symbol),
                extra: json!({"ticket": o.ticket, "symbol": o.symbol}),
            });
            let replacement = self.new_order(market, rng, now_epoch_ms());
            events.push(placed_event(&replacement));
            self.orders.push(replacement);
        }
        self.mark_to_market(market);
        events
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn open_position(
        &mut self,
        market: &Market,
        rng: &mut StdRng,
        opened_ms: i64,
        earlier: bool,
    ) -> Position {
        let ins = market.get(market.random_index(rng));
        let buy = rng.random_bool(0.5);
        let kind = if buy { "buy" } else { "sell" };
        let entry = if buy { ins.ask() } else { ins.bid() };
        // A position opened a while ago was opened at some other price.
        let price_open = if earlier {
            ins.round(entry * (1.0 + rng.random_range(-0.003..0.003)))
        } else {
            entry
        };
        let volume = lots(ins, rng);
        let dir = if buy { 1.0 } else { -1.0 };
        let sl = ins.round(price_open * (1.0 - dir * rng.random_range(0.002..0.006)));
        let tp = ins.round(price_open * (1.0 + dir * rng.random_range(0.003..0.012)));
        let notional = market.to_usd(volume * ins.spec.contract * price_open, ins.spec.quote_ccy);
        let days_open = ((now_epoch_ms() - opened_ms) / 86_400_000) as f64;
        let swap = -days_open * round_to(notional * rng.random_range(0.00002..0.0001), 2);
        Position {
            ticket: self.ticket(),
            symbol: ins.spec.name.to_owned(),
            kind: kind.to_owned(),
            volume,
            price_open,
            price_current: price_open,
            sl,
            tp,
            profit: 0.0,
            swap: round_to(swap, 2),
            commission: -round_to(notional * COMMISSION_RATE, 2),
            time: rfc3339_ms(opened_ms),
            comment: STRATEGIES
                .choose(rng)
                .copied()
                .unwrap_or("Manual")
                .to_owned(),
        }
    }

    fn fill(&mut self, market: &Market, o: &Order) -> Position {
        let kind = if o.kind.starts_with("buy") {
            "buy"
        } else {
            "sell"
        };
        let (price_open, commission) = match market.find(&o.symbol) {
            Some(ins) => {
                let price = if kind == "buy" { ins.ask() } else { ins.bid() };
                let notional =
                    market.to_usd(o.volume * ins.spec.contract * price, ins.spec.quote_ccy);
                (price, -round_to(notional * COMMISSION_RATE, 2))
            }
            None => (o.price_open, 0.0),
        };
        Position {
            ticket: self.ticket(),
            symbol: o.symbol.clone(),
            kind: kind.to_owned(),
            volume: o.volume,
            price_open,
            price_current: price_open,
            sl: o.sl,
            tp: o.tp,
            profit: 0.0,
            swap: 0.0,
            commission,
            time: rfc3339_ms(now_epoch_ms()),
            comment: o.comment.clone(),
        }
    }

    fn new_order(&mut self, market: &Market, rng: &mut StdRng, setup_ms: i64) -> Order {
        let ins = market.get(market.random_index(rng));
        let kind = *["buy_limit", "sell_limit", "buy_stop", "sell_stop"]
            .choose(rng)
            .unwrap_or(&"buy_limit");
        let distance = rng.random_range(0.002..0.008);
        // Limits wait for a better price, stops for a breakout.
        let (reference, offset) = match kind {
            "buy_limit" => (ins.ask(), -distance),
            "sell_limit" => (ins.bid(), distance),
            "buy_stop" => (ins.ask(), distance),
            _ => (ins.bid(), -distance),
        };
        let price_open = ins.round(reference * (1.0 + offset));
        let dir = if kind.starts_with("buy") { 1.0 } else { -1.0 };
        Order {
            ticket: self.ticket(),
            symbol: ins.spec.name.to_owned(),
            kind: kind.to_owned(),
            volume: lots(ins, rng),
            price_open,
            sl: ins.round(price_open * (1.0 - dir * rng.random_range(0.002..0.005))),
            tp: ins.round(price_open * (1.0 + dir * rng.random_range(0.004..0.01))),
            time_setup: rfc3339_ms(setup_ms),
            state: "pending".to_owned(),
            comment: if rng.random_bool(0.4) {
                "Manual order".to_owned()
            } else {
                STRATEGIES
                    .choose(rng)
                    .copied()
                    .unwrap_or("Manual")
                    .to_owned()
            },
        }
    }
}

/// Current price and profit in USD of a position.
fn valuation(market: &Market, ins: &Instrument, kind: &str, volume: f64, open: f64) -> (f64, f64) {
    let buy = kind == "buy";
    let current = if buy { ins.bid() } else { ins.ask() };
    let dir = if buy { 1.0 } else { -1.0 };
    let in_quote_ccy = dir * (current - open) * volume * ins.spec.contract;
    (
        current,
        round_to(market.to_usd(in_quote_ccy, ins.spec.quote_ccy), 2),
    )
}

/// Retail-looking lot sizes: 1, 2, 5, 10, 20 or 50 minimum lots.
pub(crate) fn lots(ins: &Instrument, rng: &mut StdRng) -> f64 {
    let k = *[1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
        .choose(rng)
        .unwrap_or(&1.0);
    round_to(ins.spec.min_lot * k, 2)
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(rfc3339)
        .unwrap_or_else(protocol::time::now_rfc3339)
}

fn opened_event(p: &Position) -> Event {
    Event {
        level: "INFO",
        module: "order_executor",
        message: format!(
            "Order placed successfully: {} {} {:.2} at {}",
            p.symbol,
            p.kind.to_uppercase(),
            p.volume,
            p.price_open
        ),
        extra: json!({"ticket": p.ticket, "symbol": p.symbol, "strategy": p.comment}),
    }
}

fn placed_event(o: &Order) -> Event {
    Event {
        level: "INFO",
        module: "order_executor",
        message: format!(
            "Pending order placed: #{} {} {} {:.2} at {}",
            o.ticket,
            o.symbol,
            o.kind.to_uppercase(),
            o.volume,
            o.price_open
        ),
        extra: json!({"ticket": o.ticket, "symbol": o.symbol, "type": o.kind}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn setup(seed: u64) -> (Market, Book, StdRng) {
        let mut rng = StdRng::seed_from_u64(seed);
        let market = Market::new(12, 50.0, &mut rng);
        let book = Book::new(&market, &mut rng);
        (market, book, rng)
    }

    #[test]
    fn account_figures_add_up() {
        for seed in 0..20 {
            let (mut market, mut book, mut rng) = setup(seed);
            for _ in 0..200 {
                market.tick(&mut rng);
            }
            book.mark_to_market(&market);
            let a = book.account(&market);
            let floating: f64 = book
                .positions
                .iter()
                .map(|p| p.profit + p.swap + p.commission)
                .sum();
            assert!((a.equity - (a.balance + floating)).abs() < 0.011, "{a:?}");
            assert!((a.free_margin - (a.equity - a.margin)).abs() < 0.011);
            assert!(a.margin > 0.0);
            assert!((a.margin_level - a.equity / a.margin * 100.0).abs() < 0.5);
            assert_eq!(a.currency, "USD");
        }
    }

    #[test]
    fn positions_and_orders_look_like_a_terminal() {
        let (market, book, _) = setup(5);
        assert!((MIN_POSITIONS..=MAX_POSITIONS).contains(&book.positions.len()));
        for p in &book.positions {
            let ins = market.find(&p.symbol).unwrap();
            let expected = if p.kind == "buy" {
                ins.bid()
            } else {
                ins.ask()
            };
            assert_eq!(p.price_current, expected);
            if p.kind == "buy" {
                assert!(p.sl < p.price_open && p.tp > p.price_open);
            } else {
                assert!(p.sl > p.price_open && p.tp < p.price_open, "{p:?}");
            }
            assert!(p.commission < 0.0 && p.volume > 0.0);
        }
        assert!(!book.orders.is_empty());
        for o in &book.orders {
            assert_eq!(o.state, "pending");
            assert!(["buy_limit", "sell_limit", "buy_stop", "sell_stop"].contains(&o.kind.as_str()));
        }
    }

    #[test]
    fn a_buy_gains_when_the_price_rises() {
        let (market, _, _) = setup(1);
        let ins = market.find("EURUSD").unwrap();
        let (_, profit) = valuation(&market, ins, "buy", 1.0, ins.bid() - 0.0010);
        assert!((profit - 100.0).abs() < 0.01, "{profit}");
        let jpy = market.find("USDJPY").unwrap();
        let (_, profit) = valuation(&market, jpy, "sell", 1.0, jpy.ask() + 0.10);
        // 10 pips on USDJPY at ~151 is about 66 USD a lot.
        assert!((60.0..72.0).contains(&profit), "{profit}");
    }

    #[test]
    fn trading_keeps_three_to_six_positions() {
        let (mut market, mut book, mut rng) = setup(9);
        let mut events = 0;
        for _ in 0..3_000 {
            market.tick(&mut rng);
            events += book.trade(&market, &mut rng).len();
            events += book.work_orders(&market, &mut rng).len();
            assert!(book.positions.len() >= MIN_POSITIONS);
            assert!(book.positions.len() <= MAX_POSITIONS);
            assert!(!book.orders.is_empty());
        }
        assert!(events > 0);
    }
}
