//! Logs and traces: `tracing` to stderr (text or JSON) and, when an OTLP
//! endpoint is configured, OpenTelemetry spans exported over OTLP/HTTP.
//!
//! Each bus message the relay handles gets a `relay` span whose parent is
//! the `traceparent` the ingestor put in the NATS headers, so one trace
//! shows a quote from the terminal to the gateway's fan-out. With no
//! endpoint configured that span is never built: the hot path pays one
//! relaxed load.

use bus::Headers;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static TRACING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    /// The OTLP trace pipeline, when an endpoint is configured.
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: stderr logs in `format` (`text` or
/// `json`, filtered by `RUST_LOG`, default `info`), plus span export to
/// `otlp_endpoint` (e.g. `http://collector:4318`) when given.
pub fn init(
    format: &str,
    otlp_endpoint: Option<&str>,
    service: &str,
    replica: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let provider = match otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint, service, replica)?),
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        // Spans only: log events stay on stderr, not in every trace.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mt5-gateway"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    if installed.is_ok() && provider.is_some() {
        TRACING.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = otlp_endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn provider(
    endpoint: &str,
    service: &str,
    replica: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            replica.to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The OTLP/HTTP traces URL for a collector base URL, as the OpenTelemetry
/// spec says for `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Telemetry {
    /// Exports what is still buffered; call once, at exit.
    /// An unreachable collector must not hold the exit up for long.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(provider.shutdown());
        });
        match wait.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("trace export shutdown: {e}"),
            Err(_) => eprintln!("trace export shutdown: collector did not answer in 5 s"),
        }
    }
}

/// Whether spans are exported at all (cheap; for hot paths).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// The span for relaying one bus message, a child of the publisher's
/// trace context; a disabled span when traces are not exported.
pub fn relay_span(subject: &str, headers: &Headers) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "relay",
        messaging.system = "nats",
        messaging.destination.name = subject,
    );
    if headers.traceparent.is_some() {
        let parent = TraceContextPropagator::new().extract(&BusHeaders(headers));
        let _ = span.set_parent(parent);
    }
    span
}

struct BusHeaders<'a>(&'a Headers);

impl Extractor for BusHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn collector_base_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://c:4318"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            traces_url("http://c:4318/"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces".to_owned()
        );
    }
}
