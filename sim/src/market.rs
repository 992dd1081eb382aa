//! The simulated market: the built-in symbols, their prices as random walks,
//! and the quote each tick produces.
//!
//! Prices are kept as an unrounded mid; what leaves the simulator (bid, ask,
//! spread) is rounded to the symbol's digits and point, as a terminal shows
//! it, so `spread == round((ask - bid) / point)` holds exactly.

use protocol::payload::Quote;
use rand::rngs::StdRng;
use rand::Rng;

/// What a symbol looks like on an ordinary retail MT5 account.
#[derive(Debug)]
pub(crate) struct SymbolSpec {
    pub name: &'static str,
    pub digits: u32,
    pub start: f64,
    /// Typical spread in points.
    pub spread: i64,
    /// Relative volatility per √second of simulated time; a few times
    /// livelier than a real quiet session so that a dashboard has
    /// something to show.
    pub vol: f64,
    pub contract: f64,
    /// Currency that profit is computed in before conversion to USD.
    pub quote_ccy: &'static str,
    /// Share of the quote stream: majors tick more often than crosses.
    pub weight: f64,
    /// Smallest lot; trades use 1, 2, 5, 10, 20 or 50 of these.
    pub min_lot: f64,
}

const fn fx(
    name: &'static str,
    digits: u32,
    start: f64,
    spread: i64,
    vol: f64,
    quote_ccy: &'static str,
    weight: f64,
) -> SymbolSpec {
    SymbolSpec {
        name,
        digits,
        start,
        spread,
        vol,
        contract: 100_000.0,
        quote_ccy,
        weight,
        min_lot: 0.01,
    }
}

/// The order matters: `SimConfig::symbols` takes the first N.
pub(crate) const SYMBOLS: &[SymbolSpec] = &[
    fx("EURUSD", 5, 1.08520, 12, 3.0e-5, "USD", 3.0),
    fx("GBPUSD", 5, 1.27150, 15, 3.5e-5, "USD", 2.5),
    fx("USDJPY", 3, 151.250, 14, 3.5e-5, "JPY", 2.5),
    SymbolSpec {
        name: "XAUUSD",
        digits: 2,
        start: 2345.60,
        spread: 25,
        vol: 6.0e-5,
        contract: 100.0,
        quote_ccy: "USD",
        weight: 2.5,
        min_lot: 0.01,
    },
    fx("AUDUSD", 5, 0.65820, 13, 4.0e-5, "USD", 1.5),
    fx("USDCHF", 5, 0.88150, 16, 3.0e-5, "CHF", 1.0),
    fx("USDCAD", 5, 1.36050, 18, 3.0e-5, "CAD", 1.0),
    fx("NZDUSD", 5, 0.60120, 20, 4.0e-5, "USD", 1.0),
    fx("EURJPY", 3, 164.120, 20, 4.0e-5, "JPY", 1.2),
    fx("GBPJPY", 3, 192.310, 28, 5.0e-5, "JPY", 1.0),
    SymbolSpec {
        name: "US30",
        digits: 1,
        start: 38950.0,
        spread: 20,
        vol: 5.0e-5,
        contract: 1.0,
        quote_ccy: "USD",
        weight: 1.5,
        min_lot: 0.1,
    },
    SymbolSpec {
        name: "BTCUSD",
        digits: 2,
        start: 67250.00,
        spread: 2500,
        vol: 1.2e-4,
        contract: 1.0,
        quote_ccy: "USD",
        weight: 1.5,
        min_lot: 0.01,
    },
    SymbolSpec {
        name: "GER40",
        digits: 1,
        start: 18420.0,
        spread: 12,
        vol: 5.0e-5,
        contract: 1.0,
        quote_ccy: "EUR",
        weight: 1.0,
        min_lot: 0.1,
    },
    fx("EURGBP", 5, 0.85320, 15, 2.5e-5, "GBP", 0.8),
    SymbolSpec {
        name: "XAGUSD",
        digits: 3,
        start: 28.450,
        spread: 25,
        vol: 8.0e-5,
        contract: 5000.0,
        quote_ccy: "USD",
        weight: 0.8,
        min_lot: 0.01,
    },
];

#[derive(Debug)]
pub(crate) struct Instrument {
    pub spec: &'static SymbolSpec,
    pub point: f64,
    mid: f64,
    /// Current spread in points.
    spread: i64,
    /// Simulated seconds between two ticks of this symbol on average; the
    /// walk scales by it so volatility per second does not depend on the
    /// configured quote rate (and seeded runs stay reproducible).
    dt: f64,
}

impl Instrument {
    /// Rounded bid, as the terminal quotes it.
    pub fn bid(&self) -> f64 {
        round_to(self.bid_points() as f64 * self.point, self.spec.digits)
    }

    pub fn ask(&self) -> f64 {
        round_to(
            (self.bid_points() + self.spread) as f64 * self.point,
            self.spec.digits,
        )
    }

    pub fn mid(&self) -> f64 {
        self.mid
    }

    pub fn round(&self, price: f64) -> f64 {
        round_to(price, self.spec.digits)
    }

    fn bid_points(&self) -> i64 {
        (self.mid / self.point - self.spread as f64 / 2.0).round() as i64
    }

    fn step(&mut self, rng: &mut StdRng) {
        let shock = self.spec.vol * self.dt.sqrt() * standard_normal(rng);
        // A gentle pull back to the start keeps long demos near realistic
        // levels instead of drifting without bound.
        let pull = -1.0e-4 * (self.mid / self.spec.start).ln() * self.dt;
        self.mid *= (shock + pull).exp();
        // Spreads breathe around their typical value and now and then widen
        // sharply, the way they do on news.
        let base = self.spec.spread as f64;
        let factor = if rng.random_bool(0.01) {
            rng.random_range(2.0..4.0)
        } else {
            rng.random_range(0.7..1.4)
        };
        self.spread = ((base * factor).round() as i64).max(1);
    }
}

pub(crate) struct Market {
    instruments: Vec<Instrument>,
    /// Running totals of the weights, for picking the next symbol to tick.
    cumulative: Vec<f64>,
}

impl Market {
    pub fn new(symbols: usize, quotes_per_sec: f64, rng: &mut StdRng) -> Self {
        let specs = &SYMBOLS[..symbols.min(SYMBOLS.len())];
        let total_weight: f64 = specs.iter().map(|s| s.weight).sum();
        let mut cumulative = Vec::with_capacity(specs.len());
        let mut running = 0.0;
        let instruments = specs
            .iter()
            .map(|spec| {
                running += spec.weight;
                cumulative.push(running);
                let ticks_per_sec = quotes_per_sec * spec.weight / total_weight;
                let point = 10f64.powi(-(spec.digits as i32));
                Instrument {
                    spec,
                    point,
                    // Each run starts somewhere near the reference price.
                    mid: spec.start * (1.0 + rng.random_range(-0.003..0.003)),
                    spread: spec.spread,
                    dt: if ticks_per_sec > 0.0 {
                        1.0 / ticks_per_sec
                    } else {
                        1.0
                    },
                }
            })
            .collect();
        Market {
            instruments,
            cumulative,
        }
    }

    pub fn len(&self) -> usize {
        self.instruments.len()
    }

    pub fn get(&self, i: usize) -> &Instrument {
        &self.instruments[i]
    }

    pub fn find(&self, name: &str) -> Option<&Instrument> {
        self.instruments.iter().find(|i| i.spec.name == name)
    }

    pub fn random_index(&self, rng: &mut StdRng) -> usize {
        rng.random_range(0..self.instruments.len())
    }

    /// Moves one symbol, chosen by its share of the stream, and returns its
    /// index.
    pub fn tick(&mut self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
        let i = self
            .cumulative
            .partition_point(|&c| c <= x)
            .min(self.instruments.len() - 1);
        self.instruments[i].step(rng);
        i
    }

    pub fn quote(&self, i: usize, timestamp: String) -> Quote {
        let ins = &self.instruments[i];
        Quote {
            symbol: ins.spec.name.to_owned(),
            bid: ins.bid(),
            ask: ins.ask(),
            spread: ins.spread,
            timestamp,
        }
    }

    /// Converts an amount in `ccy` to USD at current prices, through
    /// `USD<ccy>` or `<ccy>USD`; symbols that are not simulated fall back to
    /// their reference price.
    pub fn to_usd(&self, amount: f64, ccy: &str) -> f64 {
        if ccy == "USD" {
            return amount;
        }
        let price = |name: &str| {
            self.find(name)
                .map(|i| i.mid)
                .or_else(|| SYMBOLS.iter().find(|s| s.name == name).map(|s| s.start))
        };
        if let Some(p) = price(&format!("USD{ccy}")) {
            return amount / p;
        }
        if let Some(p) = price(&format!("{ccy}USD")) {
            return amount * p;
        }
        amount
    }
}

pub(crate) fn round_to(x: f64, digits: u32) -> f64 {
    let scale = 10f64.powi(digits as i32);
    // `+ 0.0` turns -0.0 into 0.0: "-0.0" in a payload looks like a bug.
    (x * scale).round() / scale + 0.0
}

/// Box–Muller: rand 0.9 has no normal distribution without rand_distr, and
/// one is all the walk needs.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quotes_are_rounded_and_spread_is_in_points() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut m = Market::new(SYMBOLS.len(), 100.0, &mut rng);
        for _ in 0..5_000 {
            let i = m.tick(&mut rng);
            let q = m.quote(i, "t".into());
            let ins = m.get(i);
            assert_eq!(q.bid, round_to(q.bid, ins.spec.digits), "{q:?}");
            assert_eq!(q.ask, round_to(q.ask, ins.spec.digits), "{q:?}");
            assert_eq!(q.spread, ((q.ask - q.bid) / ins.point).round() as i64);
            assert!(q.spread > 0 && q.bid > 0.0);
            let drift = (ins.mid() / ins.spec.start - 1.0).abs();
            assert!(drift < 0.1, "{} drifted {drift}", q.symbol);
        }
    }

    #[test]
    fn seeded_runs_repeat() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut m = Market::new(12, 50.0, &mut rng);
            (0..100)
                .map(|_| {
                    let i = m.tick(&mut rng);
                    m.quote(i, String::new())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn every_symbol_gets_ticks() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut m = Market::new(12, 50.0, &mut rng);
        let mut seen = vec![0; m.len()];
        for _ in 0..2_000 {
            seen[m.tick(&mut rng)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        assert!(seen[0] > seen[7], "EURUSD ticks more than NZDUSD: {seen:?}");
    }

    #[test]
    fn no_negative_zero() {
        assert!(round_to(-0.0001, 2).is_sign_positive());
    }

    #[test]
    fn converts_to_usd() {
        let mut rng = StdRng::seed_from_u64(3);
        let m = Market::new(SYMBOLS.len(), 50.0, &mut rng);
        let jpy = m.to_usd(15_000.0, "JPY");
        assert!((90.0..110.0).contains(&jpy), "{jpy}");
        let eur = m.to_usd(100.0, "EUR");
        assert!((105.0..112.0).contains(&eur), "{eur}");
        assert_eq!(m.to_usd(5.0, "USD"), 5.0);
    }
}
