//! The openraft type configuration shared by every shard's Raft group on this node.

use serde::{Deserialize, Serialize};

/// What a Raft log entry carries: the ledger requests the leader gathered while earlier entries
/// were in flight (one or many, each stamped with the leader's time), applied in order. One
/// entry for many requests is what makes replication, fsync and apply cheap per request.
///
/// The second field is the proposer's ledger-config fingerprint (`LedgerConfig::fingerprint`):
/// a replica whose own differs refuses to apply the entry (fail-stop) rather than apply it by
/// other rules than the ones it was proposed under.
#[derive(Clone, Serialize, Deserialize)]
pub struct Batch(pub Vec<hongbao_ledger::Request>, pub u64);

/// Names only, never fields: a batch holds PIN hashes and packet phrases, and openraft and our
/// logs print entries with `{:?}` (#28).
impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let requests: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        write!(f, "Batch({requests:?}, config {:016x})", self.1)
    }
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => write!(f, "batch of {}", many.len()),
        }
    }
}

pub type AppData = Batch;

/// What applying an entry answers: one outcome per request of the batch, in order. Blank and
/// membership entries answer `Empty`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppResponse {
    Ledger(Vec<hongbao_ledger::Outcome>),
    Empty,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = AppData,
        R = AppResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::NodeRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, crate::raft::snapshot::SnapshotFile>;

/// Persisted alongside the ledger data in every apply batch.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
pub struct SmMeta {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
}

#[cfg(test)]
mod tests {
    use super::Batch;
    use hongbao_ledger::{Cents, Command, PacketKind, PinCheck, Request, RequestId};

    #[test]
    fn a_batch_printed_for_a_log_shows_no_pin_hash_phrase_hash_or_packet_key() {
        let req = |cmd| Request { id: RequestId([7; 16]), time_ms: 1, cmd };
        let key = 0x1234_5678_9abc_def0u64;
        let batch = Batch(
            vec![
                req(Command::SetPin { user: 1, salt: [0x11; 16], hash: [0x5a; 32], verification: None }),
                req(Command::SendPacket {
                    sender: 1,
                    kind: PacketKind::Password { total: Cents(100), count: 1, phrase_hash: [0x33; 32] },
                    device: "phone".into(),
                    verification: None,
                    greeting: String::new(),
                    pin: PinCheck::Verified,
                    key,
                }),
                req(Command::Grab {
                    packet: hongbao_ledger::PacketId::new(1, 1),
                    key,
                    grabber: 2,
                    grabber_shard: 1,
                    phrase: Some([0x33; 32]),
                }),
            ],
            9,
        );
        let printed = format!("{batch:?}");
        assert!(printed.contains("SetPin") && printed.contains("SendPacket") && printed.contains("Grab"), "{printed}");
        for secret in ["51, 51", "90, 90", "17, 17", &key.to_string(), "1234"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
}
