//! Work each shard leader does on its own: the expiry sweeper (refund what is left of expired
//! packets) and the relay (deliver outbox credits to other shards exactly once).
//!
//! Both read only replicated state and propose commands, so a new leader simply resumes where
//! the old one stopped: the outbox and the packets' expiry index are in the state machine.

use openraft::async_runtime::WatchReceiver;
use crate::host::{detail, Host};
use crate::codec::{decode, encode};
use hongbao_ledger::{Code, Command, RequestId, ShardId};
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::RaftMessage;
use hongbao_proto::{ErrorCode, ErrorDetail};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Expired packets refunded per sweep and shard.
const SWEEP_BATCH: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Credits sent to one destination in one relay batch.
pub const RELAY_BATCH: usize = 256;
const RELAY_EVERY: Duration = Duration::from_millis(10);
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(2);
const RELAY_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a leader checks whether its leadership belongs elsewhere (home region back, or
/// its own region drained).
const PLACEMENT_EVERY: Duration = Duration::from_millis(1000);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub fn spawn_all(host: Arc<Host>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for shard in host.shards.keys().copied() {
        tasks.push(tokio::spawn(sweeper(host.clone(), shard, stop.clone())));
        tasks.push(tokio::spawn(relay(host.clone(), shard, stop.clone())));
        tasks.push(tokio::spawn(placement(host.clone(), shard, stop.clone())));
    }
    tasks
}


/// A request id for a system command, derived from what it does (these commands are idempotent
/// by their own sequence numbers / state, so the id only has to be well-formed).
fn system_id(tag: u8, shard: ShardId, a: u64, b: u64) -> RequestId {
    let mut id = [0u8; 16];
    id[0] = 0xff;
    id[1] = tag;
    id[2..4].copy_from_slice(&(shard as u16).to_be_bytes());
    id[4..10].copy_from_slice(&a.to_be_bytes()[2..]);
    id[10..16].copy_from_slice(&b.to_be_bytes()[2..]);
    RequestId(id)
}

async fn sweeper(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {},
            _ = stop.changed() => return,
        }
        let Ok(shard) = host.shard(shard_id) else { return };
        if !host.is_leader(shard) {
            continue;
        }
        // Ledger time, not this node's clock: a packet counts as expired by the time the ledger
        // will stamp on the expiry, even after another node's clock ran ahead.
        let now = host.ledger_time_ms(shard_id);
        let expired = hongbao_ledger::view::expired_packets(&host.store(shard_id), now, SWEEP_BATCH);
        for packet in expired {
            let id = system_id(b'x', shard_id, packet.0, 0);
            match host.propose(shard_id, id, Command::ExpirePacket { packet }).await {
                Ok(o) => {
                    tracing::info!(shard = shard_id, packet = packet.0, code = ?o.code, "expired packet swept");
                    metrics::counter!("hongbao_packets_expired_total").increment(1);
                }
                Err(d) => {
                    tracing::debug!(shard = shard_id, packet = packet.0, msg = %d.message, "sweep failed; will retry");
                    break;
                }
            }
        }
    }
}

async fn relay(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut backoff = RELAY_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stop.changed() => return,
        }
        let Ok(shard) = host.shard(shard_id) else { return };
        if !host.is_leader(shard) {
            backoff = RELAY_EVERY * 10;
            continue;
        }
        let mut failed = false;
        let mut backlog = 0u64;
        for dest in host.topology.shards.iter().map(|s| s.id).filter(|d| *d != shard_id) {
            // From the replicated delivered mark: the scan does not wade through the tombstones
            // of every record delivered before.
            let store = host.store(shard_id);
            let after = hongbao_ledger::view::delivered(&store, dest);
            let batch = hongbao_ledger::view::outbox(&store, dest, after, RELAY_BATCH);
            if batch.is_empty() {
                continue;
            }
            backlog += batch.len() as u64;
            let last = batch.last().expect("non-empty").seq;
            let credit = Command::Credit { source: shard_id, entries: batch };
            let id = system_id(b'c', shard_id, dest as u64, last);
            match deliver(&host, dest, id, credit).await {
                Ok(()) => {
                    let mark = Command::MarkDelivered { dest, up_to_seq: last };
                    if let Err(d) = host.propose(shard_id, system_id(b'd', shard_id, dest as u64, last), mark).await {
                        tracing::debug!(shard = shard_id, dest, msg = %d.message, "mark delivered failed; will redo");
                        failed = true;
                    } else {
                        metrics::counter!("hongbao_relay_delivered_total").increment(1);
                    }
                }
                Err(d) => {
                    tracing::debug!(shard = shard_id, dest, code = ?d.code(), msg = %d.message, "credit delivery failed; will retry");
                    failed = true;
                }
            }
        }
        metrics::gauge!("hongbao_relay_backlog", "shard" => shard_id.to_string()).set(backlog as f64);
        backoff = if failed { (backoff * 2).clamp(Duration::from_millis(50), RELAY_BACKOFF_MAX) } else { RELAY_EVERY };
    }
}

/// Proposes a credit on the destination shard's leader: locally if we lead it, else over gRPC
/// to the leader our replica knows of, else to each replica in turn (one will hint the leader).
async fn deliver(host: &Host, dest: ShardId, id: RequestId, cmd: Command) -> Result<(), ErrorDetail> {
    let check = |code: Code| -> Result<(), ErrorDetail> {
        if code == Code::Ok {
            Ok(())
        } else {
            Err(detail(ErrorCode::Internal, format!("credit rejected by shard {dest}: {code:?}"), dest))
        }
    };
    if let Ok(s) = host.shard(dest) {
        if host.is_leader(s) {
            return check(host.propose(dest, id, cmd).await?.code);
        }
    }
    let known = host.shard(dest).ok().and_then(|s| s.raft.metrics().borrow_watched().current_leader);
    let mut candidates: Vec<u64> = known.into_iter().collect();
    if let Some(s) = host.topology.shard(dest) {
        candidates.extend(s.replicas.iter().copied().filter(|r| Some(*r) != known));
    }
    let req = hongbao_ledger::Request { id, time_ms: 0, cmd };
    let payload = encode(&req);
    let mut last = detail(ErrorCode::Unavailable, format!("no replica of shard {dest} reachable"), dest);
    for node in candidates {
        let Some(ch) = host.peers.channel(node) else { continue };
        let mut c = RaftTransportClient::new(ch);
        let msg = RaftMessage { shard: dest, from_node: host.node_id, payload: payload.clone() };
        match tokio::time::timeout(RELAY_CALL_TIMEOUT, c.propose(msg)).await {
            Ok(Ok(r)) => {
                let o: hongbao_ledger::Outcome = decode(&r.into_inner().payload).map_err(|e| detail(ErrorCode::Internal, e.to_string(), dest))?;
                return check(o.code);
            }
            Ok(Err(s)) => last = hongbao_proto::detail_of(&s),
            Err(_) => last = detail(ErrorCode::Timeout, format!("node {node} timed out"), dest),
        }
    }
    Err(last)
}

/// Keeps each shard's leadership where the operator wants it: out of drained regions, and back
/// in the home region once a home replica is up and caught up (failback). Only the leader acts,
/// by leader transfer, so client requests see at most a NotLeader that routers retry.
async fn placement(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PLACEMENT_EVERY) => {},
            _ = stop.changed() => return,
        }
        let Ok(shard) = host.shard(shard_id) else { return };
        if !host.is_leader(shard) {
            continue;
        }
        let Some(target) = placement_target(&host, shard_id).await else { continue };
        tracing::info!(shard = shard_id, from = host.node_id, to = target, "moving leadership (failback or drain)");
        if let Err(d) = host.transfer_leader(shard_id, target).await {
            tracing::warn!(shard = shard_id, to = target, msg = %d.message, "leader transfer failed");
        }
    }
}

/// Where this shard's leadership should go, if not here.
async fn placement_target(host: &Host, shard_id: ShardId) -> Option<u64> {
    let topo = host.topology.shard(shard_id)?;
    let drained = host.drained_regions();
    let last = host.shard(shard_id).ok()?.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let here_drained = drained.contains(&host.region);
    let home_ok = !drained.contains(&topo.home);
    if host.region == topo.home && !here_drained {
        return None;
    }
    // Candidates: home-region replicas first (failback), then any undrained region (drain).
    let mut cands: Vec<u64> = Vec::new();
    if home_ok {
        cands.extend(topo.replicas.iter().copied().filter(|r| host.topology.region_of(*r) == Some(topo.home.as_str())));
    }
    if here_drained {
        cands.extend(topo.replicas.iter().copied().filter(|r| host.topology.region_of(*r).map(|g| !drained.contains(g)).unwrap_or(false)));
    }
    for node in cands {
        if node == host.node_id {
            continue;
        }
        // Probe: the target must answer and have applied (almost) everything we have.
        let Some(ch) = host.peers.channel(node) else { continue };
        let mut c = hongbao_proto::v1::cluster_client::ClusterClient::new(ch);
        let Ok(Ok(r)) = tokio::time::timeout(PROBE_TIMEOUT, c.status(hongbao_proto::v1::StatusRequest { local_only: true })).await else { continue };
        let caught_up = r.into_inner().nodes.iter().flat_map(|n| n.shards.iter()).any(|s| s.shard == shard_id && s.applied + crate::host::CAUGHT_UP_SLACK >= last);
        if caught_up {
            return Some(node);
        }
    }
    None
}
