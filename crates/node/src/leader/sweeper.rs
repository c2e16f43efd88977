//! The expiry sweeper: on each shard's leader, refunds what is left of expired packets.

use crate::host::system_id;
use crate::host::Host;
use hongbao_ledger::{Command, ShardId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Expired packets refunded per sweep and shard: proposed together, so the shard's proposer
/// carries them in one Raft entry (one round for all of them, not one round each).
const SWEEP_BATCH: usize = crate::limits::MAX_BATCH;
const SWEEP_EVERY: Duration = Duration::from_millis(500);

pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    let mut period = SWEEP_EVERY;
    while let Some(leads) = super::next_turn(&host, shard_id, period, &mut stop).await {
        period = SWEEP_EVERY;
        if !leads {
            continue;
        }
        // Ledger time, not this node's clock: a packet counts as expired by the time the ledger
        // will stamp on the expiry, even after another node's clock ran ahead.
        let now = host.ledger_time_ms(shard_id);
        let expired = hongbao_ledger::view::expired_packets(&host.store(shard_id), now, SWEEP_BATCH);
        let full = expired.len() == SWEEP_BATCH;
        let sweeps = expired.into_iter().map(|packet| {
            let host = host.clone();
            async move {
                let id = system_id(b'x', shard_id, packet.0, 0);
                (packet, host.propose(shard_id, id, Command::ExpirePacket { packet }).await)
            }
        });
        let mut failed = false;
        for (packet, res) in futures::future::join_all(sweeps).await {
            match res {
                Ok(o) => {
                    tracing::debug!(shard = shard_id, packet = packet.0, code = ?o.code, "expired packet swept");
                    metrics::counter!(crate::metrics::PACKETS_EXPIRED).increment(1);
                }
                Err(e) => {
                    tracing::debug!(shard = shard_id, packet = packet.0, msg = %e.message, "sweep failed; will retry");
                    failed = true;
                }
            }
        }
        // A full batch after a storm: sweep on at once rather than leave money in escrow.
        if full && !failed {
            period = Duration::from_millis(1);
        }
    }
}
