//! A simulated MT5 account that looks real: quotes on a dozen symbols,
//! positions and pending orders that follow them, the account figures, logs
//! and trading signals.
//!
//! It is the source for demos, load tests and the gateway's standalone mode
//! (which calls [`run`] in-process): a crate of its own so that the gateway
//! links the simulator and its [`Publisher`], not the ingestor's bridge
//! server and recorder. One task owns all the state, so the
//! positions always agree with the last quotes without any locking; each
//! kind of data has its own interval, and high rates are met by sending
//! several messages per wake-up (see `pacer`).

mod chatter;
mod market;
mod pacer;
pub mod publisher;
mod trading;

use market::{Market, SYMBOLS};
use pacer::Pacer;
use protocol::time::now_rfc3339;
pub use publisher::{FailureLog, PublishError, Publisher};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Duration;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use trading::{Book, Event};

/// What to simulate and how fast. Rates of 0 and intervals of 0 switch
/// that kind off.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The account the data is published as (the publisher's own account
    /// is used when this is empty).
    pub account: String,
    /// Total across all symbols.
    pub quotes_per_sec: f64,
    pub positions_interval: Duration,
    pub orders_interval: Duration,
    pub account_interval: Duration,
    pub logs_per_sec: f64,
    pub signals_per_sec: f64,
    /// Makes prices, positions and signals reproducible.
    pub seed: Option<u64>,
    /// How many of the built-in symbols to quote (see [`symbol_names`]).
    pub symbols: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            account: "demo".to_owned(),
            quotes_per_sec: 50.0,
            positions_interval: Duration::from_secs(1),
            orders_interval: Duration::from_secs(2),
            account_interval: Duration::from_secs(1),
            logs_per_sec: 2.0,
            signals_per_sec: 0.2,
            seed: None,
            symbols: 12,
        }
    }
}

/// Above this the simulator would only measure the machine.
pub const MAX_RATE: f64 = 1_000_000.0;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("symbols must be between 1 and {max}, got {got}")]
    Symbols { got: usize, max: usize },
    #[error("{what} must be a number between 0 and {MAX_RATE}, got {value}")]
    Rate { what: &'static str, value: f64 },
    #[error("account `{0}` cannot be used in a NATS subject")]
    Account(String),
}

/// The built-in symbols in the order `SimConfig::symbols` takes them.
pub fn symbol_names() -> Vec<&'static str> {
    SYMBOLS.iter().map(|s| s.name).collect()
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        if !self.account.is_empty() && protocol::Account::new(self.account.as_str()).is_err() {
            return Err(SimError::Account(self.account.clone()));
        }
        if self.symbols == 0 || self.symbols > SYMBOLS.len() {
            return Err(SimError::Symbols {
                got: self.symbols,
                max: SYMBOLS.len(),
            });
        }
        for (what, value) in [
            ("quotes_per_sec", self.quotes_per_sec),
            ("logs_per_sec", self.logs_per_sec),
            ("signals_per_sec", self.signals_per_sec),
        ] {
            if !(0.0..=MAX_RATE).contains(&value) {
                return Err(SimError::Rate { what, value });
            }
        }
        Ok(())
    }
}

/// Runs until `shutdown` is cancelled. Publish failures are logged and the
/// simulation goes on: the NATS client reconnects by itself.
pub async fn run(
    publisher: Publisher,
    cfg: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    cfg.validate()?;
    let publisher = if cfg.account.is_empty() || publisher.account_name() == cfg.account.as_str() {
        publisher
    } else {
        let account = protocol::Account::new(cfg.account.as_str())
            .map_err(|_| SimError::Account(cfg.account.clone()))?;
        tracing::info!(
            publisher = %publisher.account_name(),
            sim = %account,
            "simulator publishes under SimConfig::account"
        );
        publisher.with_account(account)
    };
    let mut sim = Sim::new(publisher, &cfg);
    tracing::info!(
        account = %sim.publisher.account_name(),
        symbols = sim.market.len(),
        quotes_per_sec = cfg.quotes_per_sec,
        seed = ?cfg.seed,
        "simulator started"
    );

    let start = Instant::now();
    let mut quotes = Pacer::new(cfg.quotes_per_sec, start);
    let mut logs = Pacer::new(cfg.logs_per_sec, start);
    let mut signals = Pacer::new(cfg.signals_per_sec, start);
    let mut quote_tick = ticker(start, quotes.as_ref().map(Pacer::period));
    let mut log_tick = ticker(start, logs.as_ref().map(Pacer::period));
    let mut signal_tick = ticker(start, signals.as_ref().map(Pacer::period));
    let mut positions_tick = ticker(start, nonzero(cfg.positions_interval));
    let mut orders_tick = ticker(start, nonzero(cfg.orders_interval));
    let mut account_tick = ticker(start, nonzero(cfg.account_interval));

    // A subscriber that arrives late should find every value already there
    // (values first: one who arrives meanwhile gets them before any log).
    if quotes.is_some() {
        for i in 0..sim.market.len() {
            sim.quote(i).await;
        }
    }
    if positions_tick.is_some() {
        sim.positions().await;
    }
    if orders_tick.is_some() {
        sim.orders().await;
    }
    if account_tick.is_some() {
        sim.account().await;
    }
    let hello = Event {
        level: "INFO",
        module: "mt5_communication",
        message: format!(
            "Connected to trade server MetaQuotes-Demo, account {}, {} symbols",
            sim.publisher.account_name(),
            sim.market.len()
        ),
        extra: serde_json::json!({"server": "MetaQuotes-Demo", "symbols": symbol_names()[..sim.market.len()]}),
    };
    sim.events(vec![hello], logs.is_some()).await;

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick(&mut quote_tick) => {
                let due = quotes.as_mut().map_or(0, |p| p.due(Instant::now()));
                for _ in 0..due {
                    let i = sim.market.tick(&mut sim.rng);
                    sim.quote(i).await;
                }
            }
            _ = tick(&mut positions_tick) => {
                let events = sim.book.trade(&sim.market, &mut sim.rng);
                sim.events(events, logs.is_some()).await;
                sim.book.mark_to_market(&sim.market);
                sim.positions().await;
            }
            _ = tick(&mut orders_tick) => {
                let events = sim.book.work_orders(&sim.market, &mut sim.rng);
                sim.events(events, logs.is_some()).await;
                sim.orders().await;
            }
            _ = tick(&mut account_tick) => {
                sim.book.mark_to_market(&sim.market);
                sim.account().await;
            }
            _ = tick(&mut log_tick) => {
                let due = logs.as_mut().map_or(0, |p| p.due(Instant::now()));
                for _ in 0..due {
                    let e = chatter::random_event(&sim.market, &sim.book, &mut sim.rng);
                    sim.events(vec![e], true).await;
                }
            }
            _ = tick(&mut signal_tick) => {
                let due = signals.as_mut().map_or(0, |p| p.due(Instant::now()));
                for _ in 0..due {
                    sim.signal(logs.is_some()).await;
                }
            }
        }
    }
    tracing::info!(
        publish_failures = sim.failures.failures(),
        "simulator stopped"
    );
    Ok(())
}

struct Sim {
    publisher: Publisher,
    rng: StdRng,
    market: Market,
    book: Book,
    signals_sent: u64,
    failures: FailureLog,
}

impl Sim {
    fn new(publisher: Publisher, cfg: &SimConfig) -> Self {
        let mut rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let market = Market::new(cfg.symbols, cfg.quotes_per_sec, &mut rng);
        let book = Book::new(&market, &mut rng);
        Sim {
            publisher,
            rng,
            market,
            book,
            signals_sent: 0,
            failures: FailureLog::default(),
        }
    }

    async fn quote(&mut self, i: usize) {
        let q = self.market.quote(i, now_rfc3339());
        let r = self.publisher.quote(&q).await;
        self.failures.check("quote", r);
    }

    async fn positions(&mut self) {
        let r = self.publisher.positions(&self.book.positions).await;
        self.failures.check("positions", r);
    }

    async fn orders(&mut self) {
        let r = self.publisher.orders(&self.book.orders).await;
        self.failures.check("orders", r);
    }

    async fn account(&mut self) {
        let a = self.book.account(&self.market);
        let r = self.publisher.account(&a).await;
        self.failures.check("account", r);
    }

    async fn events(&mut self, events: Vec<Event>, logs_enabled: bool) {
        if !logs_enabled {
            return;
        }
        for e in events {
            let r = self.publisher.log(&chatter::log_entry(e)).await;
            self.failures.check("log", r);
        }
    }

    async fn signal(&mut self, logs_enabled: bool) {
        self.signals_sent += 1;
        let s = chatter::signal(&self.market, &mut self.rng, self.signals_sent);
        let r = self.publisher.signal(&s).await;
        self.failures.check("signal", r);
        self.events(vec![chatter::signal_event(&s)], logs_enabled)
            .await;
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The first tick is one period after start: the initial values are sent
/// explicitly before the loop.
fn ticker(start: Instant, period: Option<Duration>) -> Option<Interval> {
    period.map(|p| {
        let mut i = interval_at(start + p, p);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    })
}

/// Waits for the next tick, or forever when that kind is switched off.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
