//! The expiry sweeper: on each shard's leader, refunds what is left of expired packets.

use crate::host::Host;
use crate::tasks::system_id;
use hongbao_ledger::{Command, ShardId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Expired packets refunded per sweep and shard.
const SWEEP_BATCH: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_millis(500);

pub async fn run(host: Arc<Host>, shard_id: ShardId, mut stop: watch::Receiver<bool>) {
    while let Some(leads) = crate::tasks::next_turn(&host, shard_id, SWEEP_EVERY, &mut stop).await {
        if !leads {
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
                    metrics::counter!(crate::metrics::PACKETS_EXPIRED).increment(1);
                }
                Err(e) => {
                    tracing::debug!(shard = shard_id, packet = packet.0, msg = %e.message, "sweep failed; will retry");
                    break;
                }
            }
        }
    }
}
