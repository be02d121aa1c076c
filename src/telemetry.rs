//! Logs and traces. Logs go to stderr (text or JSON lines, `log_format`);
//! with `otel_endpoint` set, spans are also exported by OTLP over
//! HTTP/protobuf (to `{otel_endpoint}/v1/traces`; on ECS the ADOT sidecar,
//! which sends them on to X-Ray), sampled at `otel_sampling_ratio` unless the
//! caller's `traceparent` decided already (parent-based).

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, Settings};

/// The crates whose info spans make up traces.
const TRACED: &[&str] = &[
    "shopstream",
    "api",
    "processors",
    "ingest",
    "commerce",
    "storage",
    "serving",
    "search",
    "tower_http",
];

/// Keeps the trace exporter until [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: the log layer, and the OpenTelemetry
/// layer when `otel_endpoint` is set.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOPSTREAM_LOG")
        .unwrap_or_else(|_| "info,tower_http=info,aws_config=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match settings.log_format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    }
    .with_filter(filter);
    let (otel, provider) = match &settings.otel_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .context("cannot build the OTLP trace exporter (setting `otel_endpoint`)")?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    settings.otel_sampling_ratio,
                ))))
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("shopstream")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("shopstream");
            // Its own filter: the log level (`SHOPSTREAM_LOG`) does not
            // decide which spans a trace has.
            let spans = tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::WARN)
                .with_targets(TRACED.iter().map(|t| (*t, tracing::Level::INFO)));
            (
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(spans),
                ),
                Some(provider),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still buffered (the batch thread blocks: off the
    /// async workers).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("shopstream: the trace exporter did not flush: {e}");
            }
        }
    }
}
