//! The clients and the bank's model of what they were told.
//!
//! Users on every shard top up, withdraw, transfer to each other, send lucky packets and grab
//! them, through `Client::call`, which retries with the same request id as a router does (the
//! leader it was pointed at, then the shard's other replicas) until it hears an outcome. The
//! model keeps, per user, what the outcomes it heard add up to:
//! - `own`: the user's own commands (top-ups, withdrawals with their fee, transfers and packets
//!   sent), which move the balance as they are answered;
//! - `same_in`: credits answered as applied (a transfer or grab on the user's own shard);
//! - `cross_in`: credits answered as in flight (the relay delivers them later);
//! - `maybe_in`: the most that commands still unanswered may credit.
//!
//! A user has one command of its own in flight at a time, so a linearizable read of an idle
//! user's balance must lie in [own + same_in at the read's start, own + same_in + cross_in +
//! maybe_in at its end]: a stale read misses an answered credit, a lost or doubled command
//! leaves the range. When faults stop, every unanswered command is sent again with its id until
//! it is answered, the relay drains, and every balance must then equal own + same_in + cross_in.

use crate::cluster::{Hosts, EPOCH_MS};
use crate::trace::Trace;
use hongbao_ledger::{Cents, Code, Command, Outcome, PacketId, PacketKind, PinCheck, Reply, RequestId, ShardId, UserId};
use hongbao_node::error::ErrorKind;
use hongbao_topology::{NodeId, Topology};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client keeps trying one command before it leaves it unanswered (re-sent once
/// faults stop, for up to `RESOLVE_WITHIN`).
pub const CALL_WITHIN: Duration = Duration::from_secs(10);
const RESOLVE_WITHIN: Duration = Duration::from_secs(60);
/// The longest one try may take (a node's own propose timeout is shorter).
const TRY_TIMEOUT: Duration = Duration::from_secs(8);
const DEVICE: &str = "sim-phone";

#[derive(Debug, Clone, Default)]
pub struct User {
    pub id: UserId,
    pub shard: ShardId,
    pub own: i128,
    pub same_in: i128,
    pub cross_in: i128,
    pub maybe_in: i128,
    /// What the user's packets hold: the most the sweeper may refund to it.
    pub packets_out: i128,
    /// A command of its own (or a read) is in flight.
    pub busy: bool,
    /// A command of its own went unanswered: the user waits for the end of faults.
    pub stuck: bool,
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub id: PacketId,
    /// The sender's index.
    pub sender: usize,
    pub key: u64,
    pub shard: ShardId,
    pub total: u64,
}

/// One command as sent: what it is and for whom, so it can be sent again with its id.
#[derive(Debug, Clone)]
pub struct Op {
    pub shard: ShardId,
    pub actor: usize,
    pub id: RequestId,
    pub cmd: Command,
    /// The user (index) the command may credit, and at most how much.
    pub credits: Option<(usize, u64)>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct OpCounts {
    pub sent: u64,
    pub ok: u64,
    pub refused: u64,
    pub unanswered: u64,
    pub reads: u64,
    pub replays: u64,
}

#[derive(Default)]
pub struct Model {
    pub users: Vec<User>,
    pub packets: Vec<Packet>,
    /// Every grab answered OK: (packet, grabber index, amount).
    pub grabs: Vec<(PacketId, usize, u64)>,
    /// Every outcome heard, by (actor, id): a replay must hear the same.
    pub heard: BTreeMap<(usize, [u8; 16]), (Op, Outcome)>,
    pub unanswered: Vec<Op>,
    pub counts: OpCounts,
    /// The first broken rule, if any.
    pub violation: Option<String>,
}

impl Model {
    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    /// Records the outcome of `op`, the first time it is heard; a later one must be the same.
    pub fn heard(&mut self, op: &Op, o: &Outcome) {
        let key = (op.actor, op.id.0);
        if let Some((_, first)) = self.heard.get(&key) {
            if first != o {
                let msg = format!("request {:?} of user {} answered {:?} once and {:?} later", op.cmd, self.users[op.actor].id, first, o);
                self.violate(msg);
            }
            return;
        }
        self.heard.insert(key, (op.clone(), o.clone()));
        if o.code != Code::Ok {
            self.counts.refused += 1;
            return;
        }
        self.counts.ok += 1;
        let credit = |m: &mut Model, to: usize, amount: u64, in_flight: bool| {
            let u = &mut m.users[to];
            if in_flight {
                u.cross_in += amount as i128;
            } else {
                u.same_in += amount as i128;
            }
        };
        match (&op.cmd, &o.reply) {
            (Command::TopUp { amount, .. }, _) => self.users[op.actor].own += amount.0 as i128,
            (Command::Withdraw { amount, .. }, Reply::Wallet { fee, .. }) => self.users[op.actor].own -= (amount.0 + fee.0) as i128,
            (Command::Transfer { amount, .. }, Reply::Wallet { fee, credit_in_flight, .. }) => {
                self.users[op.actor].own -= (amount.0 + fee.0) as i128;
                let (to, _) = op.credits.expect("a transfer credits its payee");
                credit(self, to, amount.0, *credit_in_flight);
            }
            (Command::SendPacket { kind: PacketKind::Lucky { total, .. }, .. }, Reply::Sent { packet, key, .. }) => {
                self.users[op.actor].own -= total.0 as i128;
                self.users[op.actor].packets_out += total.0 as i128;
                let shard = op.shard;
                self.packets.push(Packet { id: *packet, sender: op.actor, key: *key, shard, total: total.0 });
            }
            (Command::Grab { packet, .. }, Reply::Grabbed { amount, credit_in_flight, .. }) => {
                self.grabs.push((*packet, op.actor, amount.0));
                credit(self, op.actor, amount.0, *credit_in_flight)
            }
            (Command::OpenAccount { .. } | Command::SetPin { .. }, _) => {}
            (cmd, reply) => self.violate(format!("{cmd:?} answered OK with {reply:?}")),
        }
    }
}

/// Sends commands to the shards' leaders, as a router would.
pub struct Client {
    pub hosts: Hosts,
    pub topology: Topology,
    pub model: Arc<Mutex<Model>>,
    pub trace: Arc<Trace>,
    /// The leader each shard was last known to have.
    leaders: Mutex<BTreeMap<ShardId, NodeId>>,
    rng: Mutex<ChaCha8Rng>,
}

impl Client {
    pub fn new(hosts: Hosts, topology: Topology, model: Arc<Mutex<Model>>, trace: Arc<Trace>, rng: ChaCha8Rng) -> Client {
        Client { hosts, topology, model, trace, leaders: Mutex::new(BTreeMap::new()), rng: Mutex::new(rng) }
    }

    fn draw(&self, below: u64) -> u64 {
        self.rng.lock().expect("client rng").gen_range(0..below.max(1))
    }

    /// A fresh request id, issued now (by the true time: clients' clocks are not simulated).
    pub fn fresh_id(&self) -> RequestId {
        let unique: [u8; 10] = self.rng.lock().expect("client rng").gen();
        RequestId::new(EPOCH_MS + self.trace.now_ms(), unique)
    }

    /// The node to try for `shard`: the leader last heard of, else a replica drawn at random.
    fn pick(&self, shard: ShardId) -> Option<NodeId> {
        let up: Vec<NodeId> = self.hosts.lock().expect("hosts lock").keys().copied().collect();
        if let Some(l) = self.leaders.lock().expect("leaders lock").get(&shard) {
            if up.contains(l) {
                return Some(*l);
            }
        }
        let replicas: Vec<NodeId> = self.topology.shard(shard)?.replicas.iter().copied().filter(|r| up.contains(r)).collect();
        (!replicas.is_empty()).then(|| replicas[self.draw(replicas.len() as u64) as usize])
    }

    /// One command until an outcome is heard, for at most `within` (None: unanswered).
    pub async fn call(&self, op: &Op, within: Duration) -> Option<Outcome> {
        let deadline = tokio::time::Instant::now() + within;
        let mut attempt = 0u64;
        while tokio::time::Instant::now() < deadline {
            attempt += 1;
            let Some(node) = self.pick(op.shard) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let host = self.hosts.lock().expect("hosts lock").get(&node).cloned();
            let res = match host {
                Some(host) => tokio::time::timeout(TRY_TIMEOUT, host.propose(op.shard, op.id, op.cmd.clone())).await,
                None => continue,
            };
            match res {
                Ok(Ok(o)) if o.code.is_misrouted() => {}
                Ok(Ok(o)) => {
                    self.leaders.lock().expect("leaders lock").insert(op.shard, node);
                    return Some(o);
                }
                Ok(Err(e)) if e.kind == ErrorKind::NotLeader => {
                    self.follow_hint(op.shard, e.leader.map(|l| l.0));
                    // A hint can be stale (two replicas naming each other after a partition).
                    tokio::time::sleep(Duration::from_millis(2 + self.draw(10))).await;
                    continue;
                }
                Ok(Err(_)) | Err(_) => self.follow_hint(op.shard, None),
            }
            let backoff = 50 + self.draw(100) * attempt.min(10);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
        None
    }

    fn follow_hint(&self, shard: ShardId, leader: Option<NodeId>) {
        let mut leaders = self.leaders.lock().expect("leaders lock");
        match leader {
            Some(l) => leaders.insert(shard, l),
            None => leaders.remove(&shard),
        };
    }

    /// Sends `op` and records what it heard (or that it heard nothing).
    pub async fn run(&self, op: Op) {
        self.model.lock().expect("model lock").counts.sent += 1;
        let answer = self.call(&op, CALL_WITHIN).await;
        self.settle(op, answer);
    }

    fn settle(&self, op: Op, answer: Option<Outcome>) {
        let mut m = self.model.lock().expect("model lock");
        let user = m.users[op.actor].id;
        match &answer {
            Some(o) => {
                self.trace.note(format!("user {user} {:?} -> {:?} {:?}", op.cmd, o.code, o.reply));
                if let Some((to, most)) = op.credits {
                    m.users[to].maybe_in -= most as i128;
                }
                m.heard(&op, o);
                m.users[op.actor].busy = false;
            }
            None => {
                self.trace.note(format!("user {user} {:?} -> no answer", op.cmd));
                m.counts.unanswered += 1;
                m.users[op.actor].stuck = true;
                m.unanswered.push(op);
            }
        }
    }

    /// Re-sends every unanswered command with its id (after faults stop): each must be answered.
    pub async fn resolve_unanswered(&self) -> Result<(), String> {
        let ops: Vec<Op> = std::mem::take(&mut self.model.lock().expect("model lock").unanswered);
        for op in ops {
            let Some(o) = self.call(&op, RESOLVE_WITHIN).await else {
                return Err(format!("{}request {:?} on shard {} still unanswered after faults stopped", crate::LIVENESS, op.cmd, op.shard));
            };
            let mut m = self.model.lock().expect("model lock");
            if let Some((to, most)) = op.credits {
                m.users[to].maybe_in -= most as i128;
            }
            m.heard(&op, &o);
            m.users[op.actor].busy = false;
            m.users[op.actor].stuck = false;
        }
        Ok(())
    }

    /// A linearizable read of user `user`'s balance on its shard's leader (None: no leader
    /// answered in time; Some(None): no such wallet).
    pub async fn read_balance(&self, shard: ShardId, user: UserId) -> Option<Option<u64>> {
        self.read(shard, |store| hongbao_ledger::view::account(store, user).map(|a| a.balance.0)).await
    }

    /// `what` of `shard`'s state, read linearizably (ReadIndex) on its leader.
    pub async fn read<T>(&self, shard: ShardId, what: impl Fn(&hongbao_node::storage::ShardStore<'_>) -> T) -> Option<T> {
        let deadline = tokio::time::Instant::now() + CALL_WITHIN;
        while tokio::time::Instant::now() < deadline {
            let Some(node) = self.pick(shard) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Some(host) = self.hosts.lock().expect("hosts lock").get(&node).cloned() else { continue };
            match tokio::time::timeout(TRY_TIMEOUT, host.linearizable(shard)).await {
                Ok(Ok(_)) => return Some(what(&host.store(shard))),
                Ok(Err(e)) if e.kind == ErrorKind::NotLeader => {
                    self.follow_hint(shard, e.leader.map(|l| l.0));
                    tokio::time::sleep(Duration::from_millis(2 + self.draw(10))).await;
                }
                _ => {
                    self.follow_hint(shard, None);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        None
    }

    /// Reads idle user `u`'s balance and checks it against the model's bounds.
    pub async fn check_read(&self, u: usize) {
        let (user, shard, lower) = {
            let mut m = self.model.lock().expect("model lock");
            let x = &mut m.users[u];
            if x.busy || x.stuck {
                return;
            }
            x.busy = true;
            m.counts.reads += 1;
            let x = &m.users[u];
            (x.id, x.shard, x.own + x.same_in)
        };
        let read = self.read_balance(shard, user).await;
        let mut m = self.model.lock().expect("model lock");
        m.users[u].busy = false;
        let x = m.users[u].clone();
        // Expired packets' refunds come back to their sender without an answer to anyone.
        let upper = x.own + x.same_in + x.cross_in + x.maybe_in + x.packets_out;
        match read {
            None => self.trace.note(format!("read user {user}: no leader answered")),
            Some(None) => m.violate(format!("user {user}'s wallet is missing on shard {shard}")),
            Some(Some(b)) => {
                self.trace.note(format!("read user {user}: {b} in [{lower}, {upper}]"));
                if (b as i128) < lower || (b as i128) > upper {
                    m.violate(format!(
                        "read of user {user}'s balance on shard {shard} gave {b}, outside [{lower}, {upper}] that the answers so far allow"
                    ));
                }
            }
        }
    }

    /// The next command for a random idle user, or None when every user is busy.
    pub fn next_op(&self) -> Option<Op> {
        let mut m = self.model.lock().expect("model lock");
        let idle: Vec<usize> = (0..m.users.len()).filter(|i| !m.users[*i].busy && !m.users[*i].stuck).collect();
        if idle.is_empty() {
            return None;
        }
        let actor = idle[self.draw(idle.len() as u64) as usize];
        let me = m.users[actor].clone();
        let id = self.fresh_id();
        let kind = self.draw(100);
        let op = if kind < 20 {
            Op { shard: me.shard, actor, id, cmd: Command::TopUp { user: me.id, amount: Cents(100 + self.draw(5_000)) }, credits: None }
        } else if kind < 25 {
            let amount = Cents(1 + self.draw(2_000));
            let cmd = Command::Withdraw { user: me.id, amount, device: DEVICE.into(), verification: None, pin: PinCheck::Verified };
            Op { shard: me.shard, actor, id, cmd, credits: None }
        } else if kind < 50 {
            let others: Vec<usize> = (0..m.users.len()).filter(|i| *i != actor).collect();
            let to = others[self.draw(others.len() as u64) as usize];
            let payee = m.users[to].clone();
            let amount = 1 + self.draw(3_000);
            let cmd = Command::Transfer {
                from: me.id,
                to: payee.id,
                to_shard: payee.shard,
                amount: Cents(amount),
                device: DEVICE.into(),
                verification: None,
                pin: PinCheck::Verified,
            };
            Op { shard: me.shard, actor, id, cmd, credits: Some((to, amount)) }
        } else if kind < 65 || m.packets.is_empty() {
            let count = 1 + self.draw(6) as u32;
            let total = Cents(count as u64 * (1 + self.draw(500)));
            let cmd = Command::SendPacket {
                sender: me.id,
                kind: PacketKind::Lucky { total, count },
                device: DEVICE.into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified,
                // A leader draws it for the public API; the client stands in for that here.
                key: 1 + self.draw(u64::MAX - 1),
            };
            Op { shard: me.shard, actor, id, cmd, credits: None }
        } else {
            // Mostly the newest packets, as a group chat grabs.
            let n = m.packets.len() as u64;
            let p = m.packets[(n - 1 - self.draw(n.min(8))) as usize].clone();
            let cmd = Command::Grab { packet: p.id, key: p.key, grabber: me.id, grabber_shard: me.shard, phrase: None };
            Op { shard: p.shard, actor, id, cmd, credits: Some((actor, p.total)) }
        };
        m.users[actor].busy = true;
        if let Some((to, most)) = op.credits {
            m.users[to].maybe_in += most as i128;
        }
        Some(op)
    }

    /// A command already answered, sent again with its id: it must be answered the same.
    pub fn replay(&self) -> Option<Op> {
        let m = self.model.lock().expect("model lock");
        if m.heard.is_empty() {
            return None;
        }
        let i = self.draw(m.heard.len() as u64) as usize;
        let (op, _) = m.heard.values().nth(i)?;
        // Replays carry no new credit: the model counts only the first answer.
        Some(Op { credits: None, ..op.clone() })
    }

    pub async fn run_replay(&self, op: Op) {
        self.model.lock().expect("model lock").counts.replays += 1;
        if let Some(o) = self.call(&op, CALL_WITHIN).await {
            self.trace.note(format!("replay {:?} -> {:?}", op.cmd, o.code));
            self.model.lock().expect("model lock").heard(&op, &o);
        }
    }
}
