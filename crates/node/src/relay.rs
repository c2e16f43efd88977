//! The cross-shard relay: on each shard's leader, delivers outbox credits to their destination
//! shards exactly once (the destination skips sequence numbers it has applied), then marks them
//! delivered at the source.

use crate::codec::{decode, encode};
use crate::host::Host;
use crate::tasks::system_id;
use hongbao_ledger::{Code, Command, RequestId, ShardId};
use hongbao_proto::v1::raft_transport_client::RaftTransportClient;
use hongbao_proto::v1::RaftMessage;
use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Credits sent to one destination in one relay batch.
pub const RELAY_BATCH: usize = 256;
const RELAY_EVERY: Duration = Duration::from_millis(10);
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(2);
const RELAY_CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut backoff = RELAY_EVERY;
    while let Some(leads) = crate::tasks::next_turn(&host, shard_id, backoff, &mut stop).await {
        if !leads {
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
                        metrics::counter!(crate::metrics::RELAY_DELIVERED).increment(1);
                    }
                }
                Err(msg) => {
                    tracing::debug!(shard = shard_id, dest, %msg, "credit delivery failed; will retry");
                    failed = true;
                }
            }
        }
        metrics::gauge!(crate::metrics::RELAY_BACKLOG, "shard" => shard_id.to_string()).set(backlog as f64);
        backoff = if failed { (backoff * 2).clamp(Duration::from_millis(50), RELAY_BACKOFF_MAX) } else { RELAY_EVERY };
    }
}

/// Proposes a credit on the destination shard's leader: locally if we lead it, else over gRPC
/// to the leader our replica knows of, else to each replica in turn (one will hint the leader).
/// The error says why, for the log; the relay retries either way.
async fn deliver(host: &Host, dest: ShardId, id: RequestId, cmd: Command) -> Result<(), String> {
    let check = |code: Code| if code == Code::Ok { Ok(()) } else { Err(format!("credit rejected by shard {dest}: {code:?}")) };
    if let Ok(r) = host.replica(dest) {
        if host.is_leader(r) {
            return check(host.propose(dest, id, cmd).await.map_err(|e| e.to_string())?.code);
        }
    }
    let known = host.replica(dest).ok().and_then(|r| r.raft.metrics().borrow_watched().current_leader);
    let mut candidates: Vec<u64> = known.into_iter().collect();
    if let Some(s) = host.topology.shard(dest) {
        candidates.extend(s.replicas.iter().copied().filter(|r| Some(*r) != known));
    }
    let payload = encode(&hongbao_ledger::Request { id, time_ms: 0, cmd });
    let mut last = format!("no replica of shard {dest} reachable");
    for node in candidates {
        let Some(ch) = host.peers.channel(node) else { continue };
        let mut c = RaftTransportClient::new(ch);
        let msg = RaftMessage { shard: dest, from_node: host.node_id, payload: payload.clone(), sent_ms: host.clock.now_ms() };
        match tokio::time::timeout(RELAY_CALL_TIMEOUT, c.propose(msg)).await {
            Ok(Ok(r)) => {
                let o: hongbao_ledger::Outcome = decode(&r.into_inner().payload).map_err(|e| e.to_string())?;
                return check(o.code);
            }
            Ok(Err(s)) => last = format!("node {node}: {:?}: {}", s.code(), s.message()),
            Err(_) => last = format!("node {node} timed out"),
        }
    }
    Err(last)
}
