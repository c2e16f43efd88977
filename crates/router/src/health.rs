//! What operators' tools ask a router (#15): `grpc.health.v1.Health` and server reflection.
//!
//! Overall health ("") and the client services (Wallet, Packets, Notifier) are SERVING while the
//! router's last health round reached, for every shard, a leader that a majority of the shard's
//! replicas follows (`route::unreached_shards`); Cluster (admin) while any node answers. Every
//! status is NOT_SERVING before the first round and from the moment the router is asked to shut
//! down (then the statuses are removed, which ends Watch streams). Re-evaluated every `PERIOD`;
//! only changes are reported (Watch streams see each once).

use crate::route::Router;
use hongbao_proto::v1;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub const PERIOD: Duration = Duration::from_millis(250);

/// Services that route client calls to shard leaders ("" is the overall status).
const CLIENT: [&str; 4] = ["", v1::wallet_server::SERVICE_NAME, v1::packets_server::SERVICE_NAME, v1::notifier_server::SERVICE_NAME];
const ADMIN: &str = v1::cluster_server::SERVICE_NAME;

/// Builds the health and reflection services (every status NOT_SERVING until the first
/// evaluation) and spawns the task that keeps the health status current until shutdown.
#[allow(clippy::type_complexity)]
pub async fn start(
    router: Arc<Router>,
) -> anyhow::Result<(
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for s in CLIENT.iter().chain([&ADMIN]) {
        reporter.set_service_status(s, ServingStatus::NotServing).await;
    }
    let services = CLIENT[1..].iter().copied().chain([
        ADMIN,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let builder = || {
        services.clone().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hongbao_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(hongbao_proto::GOOGLE_RPC_FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, s| b.with_service_name(s),
        )
    };
    let (v1, v1alpha) = (builder().build_v1()?, builder().build_v1alpha()?);
    tokio::spawn(run(router, reporter));
    Ok((health, v1, v1alpha))
}

async fn run(router: Arc<Router>, reporter: HealthReporter) {
    use tokio::signal::unix::{signal, SignalKind};
    // The server's own shutdown listens to the same signals: tokio delivers each to both.
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("health: no signal handlers; the status will not turn NOT_SERVING at shutdown");
        return;
    };
    let (mut client, mut admin) = (None, None);
    loop {
        let verdict = router.readiness();
        let ready = verdict.is_ok();
        if client != Some(ready) {
            match &verdict {
                Ok(()) => tracing::info!("health: SERVING"),
                Err(why) => tracing::warn!("health: NOT_SERVING: {why}"),
            }
            set(&reporter, &CLIENT, ready).await;
            client = Some(ready);
        }
        let up = router.any_node_up();
        if admin != Some(up) {
            set(&reporter, &[ADMIN], up).await;
            admin = Some(up);
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("health: NOT_SERVING: shutting down");
    let all: Vec<&str> = CLIENT.iter().copied().chain([ADMIN]).collect();
    set(&reporter, &all, false).await;
    // Then forget them: each Watch stream ends after its NOT_SERVING, so none holds the server's
    // graceful shutdown open (a Check from here on answers NOT_FOUND).
    let mut reporter = reporter;
    for s in all {
        reporter.clear_service_status(s).await;
    }
}

async fn set(reporter: &HealthReporter, services: &[&str], serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    for s in services {
        reporter.set_service_status(s, status).await;
    }
}
