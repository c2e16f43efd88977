//! What operators' tools ask a router (#15): `grpc.health.v1.Health` and server reflection,
//! run by the loop in `hongbao_telemetry::health`; this file says what the statuses mean.
//!
//! Overall health ("") and the client services (Wallet, Packets, Notifier) are SERVING while the
//! router's last health round reached, for every shard, a leader that a majority of the shard's
//! replicas follows (`route::unreached_shards`); Cluster (admin) while any node answers. Every
//! status is NOT_SERVING before the first round and from the moment the router is asked to shut
//! down (then the statuses are removed, which ends Watch streams).

use crate::route::Router;
use hongbao_proto::v1;
use hongbao_telemetry::health::{Judge, Verdict};
use std::sync::Arc;

/// Services that route client calls to shard leaders ("" is the overall status).
const CLIENT: [&str; 4] = ["", v1::wallet_server::SERVICE_NAME, v1::packets_server::SERVICE_NAME, v1::notifier_server::SERVICE_NAME];
const ADMIN: &str = v1::cluster_server::SERVICE_NAME;

/// The router's verdicts: client services by its readiness, admin by any node answering.
struct RouterJudge(Arc<Router>);

impl Judge for RouterJudge {
    async fn judge(&mut self) -> Vec<Verdict> {
        let client = match self.0.readiness() {
            Ok(()) => Verdict::Serving,
            Err(why) => Verdict::NotServing(why.to_string()),
        };
        vec![client, Verdict::from_bool(self.0.any_node_up(), "no node answers")]
    }
}

/// Builds the health and reflection services (every status NOT_SERVING until the first
/// evaluation) and spawns the task that keeps the health status current until shutdown.
pub async fn start(
    router: Arc<Router>,
) -> anyhow::Result<
    hongbao_telemetry::health::Services<
        impl tonic_health::pb::health_server::Health,
        impl tonic_reflection::server::v1::ServerReflection,
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    let reflected: Vec<&str> = CLIENT[1..].iter().copied().chain([ADMIN]).collect();
    hongbao_telemetry::health::start(vec![CLIENT.to_vec(), vec![ADMIN]], &reflected, RouterJudge(router)).await
}
