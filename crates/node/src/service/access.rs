//! Who may call what on a node. Every connection is mutual TLS; the caller's identity comes from
//! its certificate (`hongbao_auth::Identity`), never from a field of the message.
//!
//! - Raft transport: only nodes, and per shard only that shard's replicas (`raft_peer`); the
//!   proposals a node may forward are a credit from a replica of its source shard and the steps
//!   of a slot move the cluster map records (`forwarded_proposal`).
//! - Public API and notifications: routers only (which checked the end user's token and the
//!   caller's role against the one role table, `crates/router/src/gate.rs`). No service reaches
//!   a node's public API directly, the admin identity included: at a node it would skip the
//!   router's rules (top-ups are the payment gateway's alone, codes the notifier's, a device is
//!   the token's), so admin money power would be unlimited there.
//! - Cluster admin: routers (forwarding an admin's call), other nodes (status fan-out, audit)
//!   and the admin identity. Drain and undrain: routers and the admin identity only.
//! - Fault injection (test builds only): the admin identity.

use hongbao_auth::{Identity, Role};
use hongbao_ledger::{Command, ShardId};
use hongbao_proto::{denied, unauthenticated};
use hongbao_topology::Topology;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Status};

/// This node's ledger-config fingerprint (0 until the host starts), for `ConfigCheck` asks.
static CONFIG_FINGERPRINT: AtomicU64 = AtomicU64::new(0);

pub fn set_config_fingerprint(fingerprint: u64) {
    CONFIG_FINGERPRINT.store(fingerprint, Ordering::Relaxed);
}

/// How a peer answers a `ConfigCheck` whose fingerprint equals its own (any other answer, an
/// error included, is not an agreement).
pub const CONFIG_AGREES: tonic::Code = tonic::Code::AlreadyExists;

/// The verified caller, from the request's extensions (put there by an interceptor below).
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions().get::<Identity>().cloned().ok_or_else(|| unauthenticated("no verified client certificate"))
}

/// Interceptor body: reads the identity once per request and keeps it for the handler.
fn admit(mut req: Request<()>, allowed: impl Fn(&Identity) -> bool, what: &str) -> Result<Request<()>, Status> {
    let Some(id) = hongbao_auth::peer_identity(&req) else {
        metrics::counter!(crate::metrics::ACCESS_DENIED, "what" => what.to_string()).increment(1);
        return Err(unauthenticated("client certificate names no hongbao identity"));
    };
    if !allowed(&id) {
        metrics::counter!(crate::metrics::ACCESS_DENIED, "what" => what.to_string()).increment(1);
        tracing::warn!(caller = %id, what, "refused: identity may not call this service");
        return Err(denied(format!("{id} may not call the {what} service of a node")));
    }
    req.extensions_mut().insert(id);
    Ok(req)
}

pub fn raft_transport(req: Request<()>) -> Result<Request<()>, Status> {
    admit(req, |id| matches!(id, Identity::Node(_)), "raft transport")
}

pub fn public_api(req: Request<()>) -> Result<Request<()>, Status> {
    admit(req, |id| matches!(id, Identity::Router(_)), "public API")
}

pub fn cluster_admin(req: Request<()>) -> Result<Request<()>, Status> {
    admit(req, |id| matches!(id, Identity::Router(_) | Identity::Node(_) | Identity::Service(Role::Admin)), "cluster admin")
}

pub fn admin_only(req: Request<()>) -> Result<Request<()>, Status> {
    admit(req, |id| matches!(id, Identity::Service(Role::Admin)), "admin-only")
}

/// The node id of a Raft message's sender: its certificate must name a replica of `shard`, and
/// the `from_node` it wrote must be itself (node 2 cannot speak as node 3).
pub fn raft_peer(topology: &Topology, id: &Identity, shard: ShardId, from_node: u64) -> Result<u64, Status> {
    let Identity::Node(n) = id else { return Err(denied(format!("{id} is not a node"))) };
    if from_node != *n {
        tracing::warn!(caller = %id, from_node, shard, "refused: raft message claims another sender");
        return Err(denied(format!("node {n} may not speak as node {from_node}")));
    }
    let member = topology.shard(shard).map(|s| s.replicas.contains(n)).unwrap_or(false);
    if !member {
        tracing::warn!(caller = %id, shard, "refused: raft message from a node that is no replica of the shard");
        return Err(denied(format!("node {n} is no replica of shard {shard}")));
    }
    Ok(*n)
}

/// What another node may propose on `shard` here: the cross-shard relay's credit, sent by a
/// replica of the credit's source shard, and the steps of a slot move the cluster map records
/// (`Topology::moves`: the meta shard committed it on an admin's call). Nothing else: drain
/// marks, map changes and moves nobody recorded come from no node (#28), so one node's key
/// cannot freeze a slot, send it elsewhere, drain a region or rewrite the map. Everything else
/// a node proposes, it proposes locally, as leader of the shard.
pub fn forwarded_proposal(topology: &Topology, from: u64, shard: ShardId, cmd: &Command) -> Result<(), Status> {
    match cmd {
        Command::Credit { source, .. } => {
            let of_source = topology.shard(*source).map(|s| s.replicas.contains(&from)).unwrap_or(false);
            if *source == shard || !of_source {
                tracing::warn!(from, shard, source, "refused: forwarded credit from a node that is no replica of its source");
                return Err(denied(format!("node {from} may not deliver credits from shard {source}")));
            }
            Ok(())
        }
        Command::MoveSlotIn { slot, slots, from: source } => recorded_move(topology, from, *slot, *slots, *source, shard),
        Command::FinishSlotIn { slot, from: source, .. } => recorded_move(topology, from, *slot, topology.slots, *source, shard),
        Command::MoveSlotOut { slot, slots, to, .. } => recorded_move(topology, from, *slot, *slots, shard, *to),
        // Answered here and never proposed: whether this node's ledger config is the asker's.
        Command::ConfigCheck { fingerprint } => {
            let mine = CONFIG_FINGERPRINT.load(Ordering::Relaxed);
            if *fingerprint == mine && mine != 0 {
                Err(Status::new(CONFIG_AGREES, format!("ledger config fingerprint {mine:016x} here too")))
            } else {
                tracing::error!(from, shard, theirs = %format!("{fingerprint:016x}"), mine = %format!("{mine:016x}"),
                    "node {from} runs another ledger config fingerprint than this node: it must not lead");
                Err(Status::failed_precondition(format!("ledger config fingerprint {mine:016x} here, not {fingerprint:016x}")))
            }
        }
        _ => Err(denied(format!(
            "node {from} may not propose {} on shard {shard}: nodes forward only credits and the steps of a slot move the cluster map records",
            command_name(cmd)
        ))),
    }
}

/// The command's name alone (its fields may hold secrets: PIN hashes, phrases).
fn command_name(cmd: &Command) -> String {
    let debug = format!("{cmd:?}");
    debug.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// Whether a slot move's step is checked against the cluster map (so a node that refused it
/// may read the map again first: the map naming the move may not have reached it yet).
pub fn checked_against_map(cmd: &Command) -> bool {
    matches!(cmd, Command::MoveSlotIn { .. } | Command::MoveSlotOut { .. } | Command::FinishSlotIn { .. })
}

/// A step of the move of `slot` from shard `source` to shard `to`: the map must record that
/// move (`slots` its slot count).
fn recorded_move(topology: &Topology, caller: u64, slot: u32, slots: u32, source: ShardId, to: ShardId) -> Result<(), Status> {
    let recorded = topology.moving(slot).is_some_and(|m| m.from == source && m.to == to) && slots == topology.slots;
    if recorded {
        return Ok(());
    }
    metrics::counter!(crate::metrics::ACCESS_DENIED, "what" => "slot move step").increment(1);
    tracing::warn!(
        caller,
        slot,
        source,
        to,
        map_version = topology.version,
        "refused: a slot move step the cluster map records no move for"
    );
    Err(denied(format!(
        "node {caller} may not move slot {slot} from shard {source} to shard {to}: the cluster map (version {}) records no such move",
        topology.version
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local-3x1.toml");
        Topology::load(&path).expect("shipped topology")
    }

    #[test]
    fn a_node_forwards_only_credits_of_its_shards_and_the_steps_of_the_move_the_map_records() {
        let t = map();
        let slot = (0..t.slots).find(|s| t.owner_of_slot(*s) == Some(2)).unwrap();
        let slots = t.slots;
        let steps = |to: ShardId| {
            [
                (2, Command::MoveSlotOut { slot, slots, to, max_users: 10 }),
                (to, Command::MoveSlotIn { slot, slots, from: 2 }),
                (to, Command::FinishSlotIn { slot, from: 2, through_seq: 0 }),
            ]
        };
        for (shard, cmd) in steps(3) {
            assert!(forwarded_proposal(&t, 1, shard, &cmd).is_err(), "no move recorded: {cmd:?}");
        }
        let moving = t.begin_move(slot, 3).unwrap();
        for (shard, cmd) in steps(3) {
            assert!(forwarded_proposal(&moving, 1, shard, &cmd).is_ok(), "the recorded move: {cmd:?}");
        }
        for (shard, cmd) in steps(1) {
            assert!(forwarded_proposal(&moving, 1, shard, &cmd).is_err(), "another destination: {cmd:?}");
        }
        let wrong_slots = Command::MoveSlotIn { slot, slots: slots + 1, from: 2 };
        assert!(forwarded_proposal(&moving, 1, 3, &wrong_slots).is_err(), "another slot count");
        for (shard, cmd) in [
            (1, Command::SetDrained { region: "shenzhen".into(), drained: true }),
            (t.meta_shard(), Command::SetClusterMap { version: 1, map: t.to_toml().into_bytes() }),
        ] {
            let s = forwarded_proposal(&moving, 1, shard, &cmd).expect_err("never forwarded");
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        }
    }
}
