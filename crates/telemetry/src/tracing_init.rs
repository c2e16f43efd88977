//! Log lines, and trace spans over OTLP when a collector is configured (#15): one set-up for
//! nodes and routers.
//!
//! Without an endpoint this is the plain `tracing_subscriber::fmt` set-up the processes always
//! had, and nothing of OpenTelemetry runs (no exporter, no thread). With one, a
//! `tracing-opentelemetry` layer turns the per-call spans (`call`, created where a call's
//! `traceparent` is read) into OpenTelemetry spans, batched by a dedicated thread and sent over
//! OTLP/gRPC. A call's span continues the caller's trace ([`continue_trace`]), and the
//! `traceparent` a router sends on names the router's span ([`span_id`]), so one grab is one trace
//! from client through router to node.
//!
//! What is exported is what the caller sampled: spans exist at info level only for sampled
//! traces (flags bit 0), and the sampler exports a span only under a sampled parent, never a root
//! of its own. Export never holds up a call: finished spans go into a bounded queue
//! ([`MAX_QUEUED_SPANS`]), dropped when it is full; each export is bounded by [`EXPORT_TIMEOUT`].

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The standard variable, read when `--otlp-endpoint` is not given.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Finished spans waiting for export; past this, new spans are dropped (a call never waits on
/// the collector). A sampled grab makes two or three spans, so this is seconds of a busy trace.
pub const MAX_QUEUED_SPANS: usize = 4096;
/// Spans per export call.
pub const MAX_EXPORT_BATCH: usize = 512;
/// How often the queue is sent when it is not full.
pub const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// One export, retries included: past it the batch is dropped (and the SDK logs a warning).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a clean shutdown waits for the last spans to go out.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What a process says about itself on every span it exports.
pub struct Service {
    /// `service.name`: `hongbao-node` or `hongbao-router`.
    pub name: &'static str,
    /// `service.instance.id`: `node-3`, `router-shenzhen`.
    pub instance: String,
    /// More resource attributes (`hongbao.region`, `hongbao.node_id`).
    pub attributes: Vec<(&'static str, String)>,
}

/// The process's tracing set-up; [`Tracing::shutdown`] sends the spans still queued.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: log lines to stdout (text, or JSON with `json`) filtered by
/// `RUST_LOG` or else `default_filter`, and, when `endpoint` is given, OTLP export of spans.
///
/// With an endpoint this must run inside a tokio runtime: the exporter's gRPC channel lives on
/// it. Only `http://` endpoints: the exporter is built without TLS (a collector on the host or in
/// the pod, forwarding with TLS if it must).
pub fn init(default_filter: &str, json: bool, endpoint: Option<&str>, service: Service) -> Result<Tracing, OtlpError> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_ansi(false));
    let json = json.then(|| tracing_subscriber::fmt::layer().json());
    let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
        tracing_subscriber::registry().with(filter).with(text).with(json).init();
        return Ok(Tracing { provider: None });
    };
    let provider = provider(endpoint, &service)?;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("hongbao"))
        // The call's own fields say what matters; file and thread would be noise on every span.
        .with_location(false)
        .with_threads(false);
    tracing_subscriber::registry().with(filter).with(text).with(json).with(layer).init();
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!(endpoint, service = service.name, instance = %service.instance, "exporting sampled traces over OTLP");
    Ok(Tracing { provider: Some(provider) })
}

/// Why spans cannot be exported as asked.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "OTLP endpoint {0:?}: give an http:// URL of a collector's gRPC port (e.g. http://127.0.0.1:4317); \
         TLS to a collector is not built in"
    )]
    NotHttp(String),
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
}

fn provider(endpoint: &str, service: &Service) -> Result<SdkTracerProvider, OtlpError> {
    if !endpoint.starts_with("http://") {
        return Err(OtlpError::NotHttp(endpoint.to_string()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| OtlpError::Exporter { endpoint: endpoint.to_string(), source })?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_max_export_batch_size(MAX_EXPORT_BATCH)
        .with_scheduled_delay(EXPORT_EVERY)
        .build();
    let mut attributes = vec![KeyValue::new("service.instance.id", service.instance.clone())];
    attributes.extend(service.attributes.iter().map(|(k, v)| KeyValue::new(*k, v.clone())));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.name).with_attributes(attributes).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batches).build())
        // Only under a sampled parent: the caller decides, a span never starts a trace here.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
        .with_resource(resource)
        .build())
}

impl Tracing {
    /// Sends the spans still queued (within [`SHUTDOWN_TIMEOUT`]) and stops the exporter's
    /// thread; nothing without an endpoint. Call it inside the runtime, before it stops: the
    /// blocking flush runs on a blocking thread while the runtime drives the gRPC channel.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("trace export flushed"),
            Ok(Err(e)) => tracing::warn!("trace export not flushed: {e}"),
            Err(e) => tracing::warn!("trace export not flushed: {e}"),
        }
    }
}

/// Whether spans are exported (an endpoint was configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes the remote span `parent_id` of trace `trace_id` (the caller's, from its `traceparent`)
/// the parent of `span`, so the span is exported in the caller's trace. Call it before the span
/// is first entered. Nothing when not exporting, or when the span is disabled (an unsampled
/// trace at the default level).
pub fn continue_trace(span: &tracing::Span, trace_id: &str, parent_id: &str, sampled: bool) {
    if !exporting() || span.is_disabled() {
        return;
    }
    let (Ok(trace), Ok(parent)) = (TraceId::from_hex(trace_id), SpanId::from_hex(parent_id)) else { return };
    let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED };
    let remote = SpanContext::new(trace, parent, flags, true, TraceState::default());
    // Fails only if the span was already entered or the layer is absent: then it stays a root.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The exported span id of `span` (16 hex digits), to name it as the parent in the
/// `traceparent` sent on to the next hop; None when not exporting or the span is not exported.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    if !exporting() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.span_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_that_is_not_plain_http_is_refused_with_the_fix_in_words() {
        let service = Service { name: "hongbao-test", instance: "test-1".into(), attributes: vec![] };
        let Err(e) = provider("https://collector:4317", &service) else { panic!("an https endpoint was taken") };
        assert!(matches!(&e, OtlpError::NotHttp(url) if url == "https://collector:4317"), "{e:?}");
        let words = e.to_string();
        assert!(
            words.starts_with("OTLP endpoint \"https://collector:4317\": give an http:// URL") && words.ends_with("not built in"),
            "{words}"
        );
    }
}
