//! Logging and trace export: human-readable lines by default, JSON lines for log shippers, and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported over OTLP (HTTP/protobuf) to a
//! collector or trace viewer (`http://jaeger:4318`, say), in batches. The spans of one order in
//! the three services share its trace id: see `messaging::trace` for how messages carry it.
//!
//! The usual OpenTelemetry variables apply: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY` (how often a batch goes, 5 s by
//! default), `OTEL_SERVICE_NAME` (the service's own name by default).

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The variable that turns export on.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span fields (order id, …) of each line.
    Json,
}

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace export: {0}")]
pub struct TelemetryError(String);

/// Installs the global subscriber, with OTLP export of the spans of `service` if
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call once, from `main`.
pub fn init(filter: &str, format: LogFormat, service: &'static str) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let export = match std::env::var(OTLP_ENDPOINT) {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(exporting(service)?),
        _ => None,
    };
    let registry = tracing_subscriber::registry().with(filter).with(export);
    match format {
        LogFormat::Text => registry.with(fmt::layer()).init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .init(),
    }
    Ok(())
}

/// The layer that exports spans, with its provider kept for [`shutdown`].
fn exporting<S>(service: &'static str) -> Result<impl tracing_subscriber::Layer<S>, TelemetryError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // The endpoint (with `/v1/traces` added), headers and timeout come from the environment.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|err| TelemetryError(err.to_string()))?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(service);
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans not yet exported; call once at the end of `main`. Nothing if export is off.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(err) = provider.shutdown()
    {
        eprintln!("OTLP trace export did not shut down cleanly: {err}");
    }
}
