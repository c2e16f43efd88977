//! The gRPC health loop every hongbao server runs (#15), written once for nodes and routers:
//! `grpc.health.v1.Health` whose statuses mean something, and server reflection.
//!
//! A server names groups of services that share one status and a `Judge` that gives each group
//! a verdict every `PERIOD`. Every status is NOT_SERVING until the first verdict; only changes
//! are reported (Watch streams see each once). From the moment the process is asked to shut
//! down (SIGTERM / SIGINT) every status turns NOT_SERVING and is then removed, which ends Watch
//! streams so none holds the server's graceful shutdown open.

use std::future::Future;
use std::time::Duration;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often the statuses are re-evaluated.
pub const PERIOD: Duration = Duration::from_millis(250);

/// One group's status for one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Serving,
    /// Not serving, and why (logged when the first group turns so).
    NotServing(String),
    /// Nothing can be said this round: the status stays as it was.
    Unknown,
}

impl Verdict {
    /// Serving when `serving`, else not serving for `why`.
    pub fn from_bool(serving: bool, why: &str) -> Verdict {
        if serving {
            Verdict::Serving
        } else {
            Verdict::NotServing(why.to_string())
        }
    }
}

/// What decides a server's statuses, round after round.
pub trait Judge: Send + 'static {
    /// This round's verdict for each group given to `start`, in the same order.
    fn judge(&mut self) -> impl Future<Output = Vec<Verdict>> + Send;
}

/// A health service and the two reflection services (v1 and v1alpha).
pub type Services<H, R1, R1a> = (
    tonic_health::pb::health_server::HealthServer<H>,
    tonic_reflection::server::v1::ServerReflectionServer<R1>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<R1a>,
);

/// Builds the health service, with every status of `groups` NOT_SERVING, and reflection over
/// `reflected` (besides health and reflection themselves); spawns the task that keeps the
/// statuses current with `judge` until shutdown. The first group is the overall one (it holds
/// ""): its changes are logged.
pub async fn start(
    groups: Vec<Vec<&'static str>>,
    reflected: &[&str],
    judge: impl Judge,
) -> anyhow::Result<
    Services<
        impl tonic_health::pb::health_server::Health,
        impl tonic_reflection::server::v1::ServerReflection,
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for s in groups.iter().flatten() {
        reporter.set_service_status(s, ServingStatus::NotServing).await;
    }
    let reflected: Vec<&str> = reflected
        .iter()
        .copied()
        .chain(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"])
        .collect();
    let builder = || {
        reflected.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hongbao_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(hongbao_proto::GOOGLE_RPC_FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, s| b.with_service_name(*s),
        )
    };
    let (v1, v1alpha) = (builder().build_v1()?, builder().build_v1alpha()?);
    tokio::spawn(run(groups, judge, reporter));
    Ok((health, v1, v1alpha))
}

async fn run(groups: Vec<Vec<&'static str>>, mut judge: impl Judge, mut reporter: HealthReporter) {
    use tokio::signal::unix::{signal, SignalKind};
    // The server's own shutdown listens to the same signals: tokio delivers each to both.
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("health: no signal handlers; the status will not turn NOT_SERVING at shutdown");
        return;
    };
    let mut last: Vec<Option<bool>> = vec![None; groups.len()];
    loop {
        let verdicts = judge.judge().await;
        for (i, (services, verdict)) in groups.iter().zip(verdicts).enumerate() {
            let serving = match &verdict {
                Verdict::Serving => true,
                Verdict::NotServing(_) => false,
                Verdict::Unknown => continue,
            };
            if last[i] == Some(serving) {
                continue;
            }
            if i == 0 {
                match &verdict {
                    Verdict::NotServing(why) => tracing::warn!("health: NOT_SERVING: {why}"),
                    _ => tracing::info!("health: SERVING"),
                }
            }
            set(&reporter, services, serving).await;
            last[i] = Some(serving);
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("health: NOT_SERVING: shutting down");
    let all: Vec<&str> = groups.iter().flatten().copied().collect();
    set(&reporter, &all, false).await;
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
