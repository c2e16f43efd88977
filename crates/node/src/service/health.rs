//! What operators' tools ask a node (#15): `grpc.health.v1.Health` with a status that means
//! something, and server reflection (`grpcurl ... list`).
//!
//! Overall health ("") and the API services (Wallet, Packets, Coalesced, Notifier) are SERVING
//! while every shard hosted here is loaded (not still catching up after an empty start) and has
//! a live leader, here or elsewhere, and the node's region is not drained; NOT_SERVING otherwise,
//! and from the moment the node is asked to shut down (SIGTERM / SIGINT). A live leader: if this
//! replica leads, a quorum acknowledged it within `stale_after`; if another node leads, this
//! replica heard from it within `stale_after` (with pre-vote, a follower keeps naming a dead
//! leader, so the name alone says nothing). RaftTransport and Cluster (admin: status, undrain)
//! stay SERVING until shutdown: elections and operators need them most when shards have no
//! leader. At shutdown every status turns NOT_SERVING and is then removed (Watch streams end).
//! The loop itself (every `PERIOD`, only changes reported) is `hongbao_telemetry::health`'s.

use crate::host::Host;
use hongbao_ledger::ShardId;
use hongbao_proto::v1;
use hongbao_telemetry::health::{Judge, Verdict};
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A raft core that does not say when it last heard its leader within this is asked again next
/// round (the status stays as it was).
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Services that serve clients: SERVING only while the node is ready ("" is the overall status).
pub fn api_services() -> Vec<&'static str> {
    vec![
        "",
        v1::wallet_server::SERVICE_NAME,
        v1::packets_server::SERVICE_NAME,
        v1::coalesced_server::SERVICE_NAME,
        v1::notifier_server::SERVICE_NAME,
    ]
}

/// Services the cluster and operators need whatever the shards' state: SERVING until shutdown.
pub fn process_services() -> Vec<&'static str> {
    let mut s = vec![v1::raft_transport_server::SERVICE_NAME, v1::cluster_server::SERVICE_NAME];
    if cfg!(feature = "fault-injection") {
        s.push(v1::fault_injection_server::SERVICE_NAME);
    }
    s
}

/// Leaders are judged stale after this long without a quorum ack (leader) or a word from the
/// leader (follower): twice the longest election timeout, so an ordinary election does not flap
/// the status, while a shard whose majority is gone turns NOT_SERVING within about two seconds.
pub fn stale_after(host: &Host) -> Duration {
    Duration::from_millis(2 * host.topology().raft.election_timeout_max_ms)
}

/// Judges whether this node is ready to serve clients, round after round.
#[derive(Default)]
pub struct Readiness {
    /// Shards with no leader at all (mid-election), since when: NOT_SERVING only once that lasts
    /// longer than `stale_after`, as for a leader gone silent, so an election does not flap it.
    leaderless_since: HashMap<ShardId, std::time::Instant>,
}

impl Readiness {
    /// Why this node is not ready to serve clients (Ok: ready). None: a shard's raft core did not
    /// answer in time, so nothing can be said this round.
    pub async fn check(&mut self, host: &Host) -> Option<Result<(), String>> {
        let stale = stale_after(host);
        for replica in host.replica_list() {
            let shard = &replica.id;
            if host.rejoin.is_rejoining(*shard) {
                return Some(Err(format!("shard {shard}: still catching up after an empty start")));
            }
            let (state, leader, quorum_acked) = {
                let m = replica.raft.metrics();
                let m = m.borrow_watched();
                (m.state, m.current_leader, m.last_quorum_acked.as_ref().map(|t| t.elapsed()))
            };
            let Some(l) = leader else {
                let since = *self.leaderless_since.entry(*shard).or_insert_with(std::time::Instant::now);
                if since.elapsed() > stale {
                    return Some(Err(format!("shard {shard}: no leader for over {stale:?}")));
                }
                continue;
            };
            self.leaderless_since.remove(shard);
            if l == host.node_id && state == ServerState::Leader {
                if quorum_acked.is_none_or(|age| age > stale) {
                    return Some(Err(format!("shard {shard}: leading here, but no quorum acknowledged it for over {stale:?}")));
                }
                continue;
            }
            let heard = replica.raft.with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()));
            match tokio::time::timeout(ASK_TIMEOUT, heard).await {
                Err(_) => return None,
                Ok(Err(e)) => return Some(Err(format!("shard {shard}: raft stopped: {e}"))),
                Ok(Ok(Some(age))) if age <= stale => {}
                Ok(Ok(_)) => return Some(Err(format!("shard {shard}: no word from its leader (node {l}) for over {stale:?}"))),
            }
        }
        if host.placement.drained_regions().contains(&host.region) {
            return Some(Err(format!("region {} is drained", host.region)));
        }
        Some(Ok(()))
    }
}

/// The node's verdicts: the API services by `Readiness`, the process services serving from
/// the first round until shutdown.
struct NodeJudge {
    host: Arc<Host>,
    readiness: Readiness,
}

impl Judge for NodeJudge {
    async fn judge(&mut self) -> Vec<Verdict> {
        let api = match self.readiness.check(&self.host).await {
            None => Verdict::Unknown,
            Some(Ok(())) => Verdict::Serving,
            Some(Err(why)) => Verdict::NotServing(why),
        };
        vec![api, Verdict::Serving]
    }
}

/// Builds the health and reflection services, with every status NOT_SERVING until the first
/// evaluation, and spawns the task that keeps them current until shutdown
/// (`hongbao_telemetry::health`).
pub async fn start(
    host: Arc<Host>,
) -> anyhow::Result<
    hongbao_telemetry::health::Services<
        impl tonic_health::pb::health_server::Health,
        impl tonic_reflection::server::v1::ServerReflection,
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    let reflected: Vec<&str> = api_services().into_iter().filter(|n| !n.is_empty()).chain(process_services()).collect();
    let judge = NodeJudge { host, readiness: Readiness::default() };
    hongbao_telemetry::health::start(vec![api_services(), process_services()], &reflected, judge).await
}
