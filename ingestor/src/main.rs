//! The `ingestor` binary: read the configuration, connect to NATS, run the
//! chosen source until SIGINT/SIGTERM, flush, exit.

use anyhow::Context;
use bus::{Bus, NatsBus, NatsOptions};
use ingestor::config::{Cli, Source};
use ingestor::{bridge, record, replay, sim, Metrics, Publisher};
use protocol::SubjectScheme;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a source may take to wind down after a signal.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Flushing waits for NATS; if NATS is down at exit, give up after this.
const FLUSH_GRACE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cli, dotenv) = Cli::load();
    init_tracing();
    if let Err(e) = dotenv {
        tracing::warn!(error = %e, "ignoring unreadable .env");
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    // The bridge's keys, TLS files and port are checked before anything
    // else: a misconfigured bridge must not start at all.
    let bridge_args = match &cli.source {
        Source::Bridge(args) => Some(args.clone()),
        Source::Record(args) if args.raw => {
            let mut bridge = args.bridge.clone();
            bridge.raw_dir = Some(args.dir.clone());
            Some(bridge)
        }
        _ => None,
    };
    let bridge = match &bridge_args {
        Some(args) => {
            let cfg = args.to_config()?;
            let listener = TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("BRIDGE_ADDR {}: cannot listen", cfg.listen))?;
            let scheme = if cfg.tls.is_some() { "tls" } else { "tcp" };
            println!(
                "ingestor bridge listening on {scheme}://{}",
                listener.local_addr().map_or(cfg.listen, |a| a)
            );
            Some((cfg, listener))
        }
        None => None,
    };
    let http = match cli.http_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("INGESTOR_HTTP_ADDR {addr}: cannot listen"))?;
            println!(
                "ingestor http on http://{}",
                listener.local_addr().map_or(addr, |a| a)
            );
            Some(listener)
        }
        None => None,
    };

    let source = cli.source.name();
    let bus = Bus::Nats(
        NatsBus::connect(&NatsOptions {
            url: cli.nats_url().to_owned(),
            name: format!("ingestor-{source}"),
        })
        .await
        .context("connecting to NATS")?,
    );
    let scheme = SubjectScheme::new(cli.subject_prefix.clone());
    // Streams first, so that what we publish is kept even before any
    // gateway runs. Gateways make them too, so a failure is not fatal.
    if let Bus::Nats(nats) = &bus {
        let limits = bus::StreamLimits {
            replicas: cli.stream_replicas,
            ..bus::StreamLimits::default()
        };
        if let Err(e) = nats.ensure_streams(scheme.prefix(), &limits).await {
            tracing::warn!(error = %e, "JetStream streams not ready; publishing anyway");
        }
    }
    let account = protocol::Account::new(cli.account_or_default())?;
    let publisher = Publisher::new(bus.clone(), scheme.clone(), account);
    let metrics = Metrics::new();
    if let Some(listener) = http {
        let (metrics, bus, shutdown) = (metrics.clone(), bus.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = ingestor::http::serve(listener, metrics, bus, shutdown).await {
                tracing::warn!(error = %e, "metrics/health server stopped");
            }
        });
    }

    println!(
        "ingestor {source} publishing to {} as account {}",
        bus::redact(cli.nats_url()),
        cli.account_or_default()
    );
    std::io::stdout().flush().ok();

    let work = run_source(
        &cli,
        publisher,
        bus.clone(),
        scheme,
        bridge,
        metrics,
        shutdown.clone(),
    );
    tokio::pin!(work);
    let outcome = tokio::select! {
        r = &mut work => r,
        _ = shutdown.cancelled() => match tokio::time::timeout(STOP_GRACE, &mut work).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("source did not stop within {STOP_GRACE:?}, exiting anyway");
                Ok(())
            }
        },
    };

    match tokio::time::timeout(FLUSH_GRACE, bus.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final flush failed"),
        Err(_) => tracing::warn!("final flush timed out; NATS unreachable?"),
    }
    tracing::info!("ingestor stopped");
    outcome
}

async fn run_source(
    cli: &Cli,
    publisher: Publisher,
    bus: Bus,
    scheme: SubjectScheme,
    bridge: Option<(bridge::BridgeConfig, TcpListener)>,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some((cfg, listener)) = bridge {
        bridge::serve(publisher, listener, cfg, metrics, shutdown).await?;
        return Ok(());
    }
    match &cli.source {
        Source::Sim(args) => {
            let cfg = args.to_config(cli.account_or_default());
            sim::run(publisher, cfg, shutdown).await?;
        }
        // Bound above; never reached without its listener.
        Source::Bridge(_) => {}
        Source::Replay(args) => {
            let opts = args.to_options(cli.account.clone());
            replay::run(publisher, opts, shutdown).await?;
        }
        Source::Record(args) => {
            record::run(bus, scheme, args.dir.clone(), shutdown).await?;
        }
    }
    Ok(())
}

/// Logs go to stderr so that stdout carries only the start line that
/// scripts wait for.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The first SIGINT/SIGTERM asks for a clean stop; a second one means the
/// operator is not willing to wait.
async fn cancel_on_signal(shutdown: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal, exiting now");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            // Without a handler we must not treat the error as a signal.
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
