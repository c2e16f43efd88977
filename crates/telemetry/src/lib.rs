//! What every hongbao process (node and router) exports alike. To Prometheus:
//!
//! - `red`: the RED set per gRPC method (requests by outcome code, latency histogram), one tower
//!   layer over the tonic server (`Server::builder().layer(..)`);
//! - `process`: the process's CPU time, memory, threads and file descriptors from `/proc`;
//! - `http`: the endpoint that serves them (and a router's status page): loopback plain HTTP,
//!   any other address only with TLS and a bearer token.
//!
//! And `tracing_init`: log lines, plus trace spans over OTLP when a collector is configured;
//! `health`: the gRPC health loop (statuses from a server's own verdicts) and reflection.
//!
//! Each process names its own RED metrics (a node's `hongbao_rpc_*`, a router's
//! `hongbao_router_rpc_*`) and builds its recorder with [`builder`], which renders the given
//! latency metrics as histograms (buckets), so `histogram_quantile` works across instances.

pub mod health;
pub mod http;
pub mod process;
pub mod red;
pub mod tracing_init;

pub use red::RedLayer;

/// Latency buckets (seconds) of every RPC and commit histogram: a grab answered from applied
/// state takes well under a millisecond, a cross-region commit tens of ms, a cut call seconds.
pub const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A Prometheus recorder's settings with `histograms` (full metric names) rendered as histograms
/// over [`LATENCY_BUCKETS`]; every other histogram stays a summary, as before. Installed with
/// `install_recorder`; its handle goes to [`http::Endpoint::serve`].
pub fn builder(histograms: &[&str]) -> Result<metrics_exporter_prometheus::PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut b = PrometheusBuilder::new();
    for name in histograms {
        b = b.set_buckets_for_metric(Matcher::Full(name.to_string()), LATENCY_BUCKETS)?;
    }
    Ok(b)
}
