//! What operators read about the money and the node: the audit of every shard's totals
//! (`audit`) and the gauges sampled for Prometheus (`gauges`).

pub mod audit;
pub mod gauges;
