//! `gateway`: serve dashboards, or `gateway token` to mint a token.
//!
//! Startup: read the configuration, set up logging, bind the listener
//! (first, so a bad address fails before anything else starts), print what
//! a person needs to connect, then hand over to `gateway::run` until
//! SIGINT/SIGTERM starts the drain.

use anyhow::Context;
use gateway::auth::{random_secret, Minter};
use gateway::config::{Cli, Command, Config, TokenArgs};
use gateway::telemetry;
use std::io::Write;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::load();
    let mut config = cli.config;
    if let Some(Command::Token(args)) = cli.command {
        println!("{}", mint(&config, &args)?);
        return Ok(());
    }
    let replica = config
        .replica_id
        .get_or_insert_with(gateway::default_replica_id)
        .clone();
    let telemetry = telemetry::init(
        &config.log_format,
        config.otel_endpoint.as_deref(),
        "mt5-gateway",
        &replica,
    )?;

    if !config.standalone && config.bus.nats_url.is_none() {
        anyhow::bail!(gateway::StartError::NoBus);
    }
    let demo_secret = config.standalone
        && config.auth.jwt_secret.is_none()
        && config.auth.jwt_public_key_file.is_none();
    if demo_secret {
        config.auth.jwt_secret = Some(random_secret());
    }
    config.validate()?;

    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    announce(&config, addr, demo_secret)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let result = gateway::run(config, listener, shutdown).await;
    telemetry.shutdown();
    Ok(result?)
}

/// Tells a person (and tests, which read stdout) where to connect.
fn announce(config: &Config, addr: std::net::SocketAddr, demo_secret: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let (http, ws) = if config.tls.tls_cert_file.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    writeln!(out, "gateway listening on {http}://{addr}")?;
    if demo_secret {
        let secret = config.auth.jwt_secret.as_deref().unwrap_or_default();
        let token =
            Minter::from_secret(secret.as_bytes()).mint_for("demo", None, None, 24 * 3600)?;
        writeln!(out, "token: {token}")?;
        writeln!(out, "dashboard: {http}://{addr}/#token={token}")?;
        writeln!(out, "wscat: wscat -c \"{ws}://{addr}/?token={token}\"")?;
    }
    out.flush()?;
    Ok(())
}

fn mint(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let minter = match (&args.private_key_file, &config.auth.jwt_secret) {
        (Some(path), _) => Minter::from_private_key_file(path, args.kid.clone())?,
        (None, Some(secret)) => Minter::from_secret(secret.as_bytes()),
        (None, None) => anyhow::bail!("set JWT_SECRET (or JWT_PRIVATE_KEY_FILE) to mint a token"),
    };
    Ok(minter.mint_for(
        &args.sub,
        args.account.as_deref(),
        args.channels.clone(),
        args.ttl,
    )?)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}
