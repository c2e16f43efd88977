//! The chaos workload: clients in every region doing top-ups, withdrawals, cross-shard
//! transfers, group sends and grabs through the routers, recording every operation.
//!
//! Every user is opened on [`DEVICE`] and sets the payment PIN [`crate::TEST_PIN`] at setup;
//! withdrawals, transfers and sends carry it. The test client makes user calls as the `app` role
//! with development tokens minted for that device, and top-ups as the `payment-gateway` role.

use super::history::{Ack, Event, Op, Outcome, Size};
use crate::TEST_PIN;
use hongbao_client::{new_request_id, settle, Client, ClientError, PacketRef};
use hongbao_proto::v1::{PacketKind, SendPacketRequest, TransferRequest, WithdrawRequest};
use hongbao_proto::ErrorCode;
use hongbao_topology::{PacketId, Topology};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub const DEVICE: &str = "chaos-phone";
/// Starting money per user, recorded in the history like any other top-up.
pub const OPENING_TOPUP: u64 = 50_000;
/// Packets grabbers choose from: the most recent ones.
const PACKET_POOL: usize = 32;
/// Pause between one worker's operations, so the cluster is loaded but not saturated and
/// recovery times measure failover, not queueing.
const THINK: Duration = Duration::from_millis(20);
/// Operations one worker has in flight: a stalled shard must not stop traffic to the others
/// (so each shard's unavailability is its own), yet the backlog stays bounded.
const INFLIGHT_PER_WORKER: usize = 64;
/// The API's bound on one string field, in bytes (the ledger's default `max_string`).
pub const MAX_STRING: usize = 128;

/// A string of exactly `len` bytes, mostly 3-byte characters (so a byte-count bug that counts
/// characters instead would show).
pub fn text_of(ch: char, len: usize) -> String {
    let n = len / ch.len_utf8();
    let mut s = ch.to_string().repeat(n);
    s.push_str(&"x".repeat(len - s.len()));
    s
}

/// The greeting a send of this size carries.
pub fn greeting(size: Size) -> String {
    match size {
        Size::Normal => "恭喜发财".into(),
        Size::Max => text_of('福', MAX_STRING),
        Size::Over => text_of('福', MAX_STRING + 1),
        Size::Huge => text_of('福', 20 << 10),
    }
}

/// The password of big-entries' password packets: exactly at the limit.
pub fn phrase() -> String {
    text_of('码', MAX_STRING)
}

pub struct Shared {
    pub topology: Topology,
    pub users: Vec<u64>,
    pub start: Instant,
    pub history: Mutex<Vec<Event>>,
    /// Packets sent, with their keys: what a grab may name.
    packets: Mutex<Vec<(u64, u64)>>,
    pub stop: AtomicBool,
    /// While set, workers start no new operation (those in flight finish): a schedule that needs
    /// the shards' logs still for a while (no new snapshot built) sets it.
    pub hold: AtomicBool,
    /// Mix maximum-size and oversize requests in (the big-entries schedule).
    pub big: bool,
}

impl Shared {
    pub fn new(topology: Topology, users: Vec<u64>, big: bool) -> Arc<Shared> {
        Arc::new(Shared {
            topology,
            users,
            big,
            start: Instant::now(),
            history: Mutex::new(Vec::new()),
            packets: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            hold: AtomicBool::new(false),
        })
    }

    pub fn shard_of(&self, op: &Op) -> u32 {
        match *op {
            Op::TopUp { user, .. } | Op::Withdraw { user, .. } => self.topology.shard_of_user(user),
            Op::Transfer { from, .. } => self.topology.shard_of_user(from),
            Op::Send { sender, .. } => self.topology.shard_of_user(sender),
            Op::Grab { packet, .. } => PacketId(packet).shard(),
        }
    }

    pub fn record(&self, e: Event) {
        if let Some(Ack::Sent { packet, key }) = e.ack() {
            let mut p = self.packets.lock().expect("packets lock");
            p.push((packet, key));
            if p.len() > PACKET_POOL {
                p.remove(0);
            }
        }
        self.history.lock().expect("history lock").push(e);
    }

    fn random_packet(&self, rng: &mut impl Rng) -> Option<(u64, u64)> {
        let p = self.packets.lock().expect("packets lock");
        if p.is_empty() {
            None
        } else {
            Some(p[rng.gen_range(0..p.len())])
        }
    }
}

/// How an answer reads in the history: ok, a definite failure, or unknown.
pub fn outcome(r: Result<Ack, ClientError>) -> Outcome {
    match r {
        Ok(ack) => Outcome::Ok(ack),
        Err(e) if e.outcome_unknown() => Outcome::Unknown(e.code()),
        Err(e) => Outcome::Fail(e.code()),
    }
}

/// Sends one operation with its request id (the client retries it within its deadline) and
/// returns what its acknowledgement says.
pub async fn send(client: &Client, rid: &[u8], op: &Op) -> Result<Ack, ClientError> {
    let rid = rid.to_vec();
    match *op {
        Op::TopUp { user, amount } => client.top_up(rid, user, amount).await.map(|r| Ack::Wallet { fee: r.fee_cents }),
        Op::Withdraw { user, amount } => {
            let req = WithdrawRequest {
                request_id: rid,
                user,
                amount_cents: amount,
                device: DEVICE.into(),
                verification: None,
                pin: TEST_PIN.into(),
                token_issued_s: 0,
            };
            client.withdraw(req).await.map(|r| Ack::Wallet { fee: r.fee_cents })
        }
        Op::Transfer { from, to, amount } => {
            let req = TransferRequest {
                request_id: rid,
                from_user: from,
                to_user: to,
                amount_cents: amount,
                device: DEVICE.into(),
                verification: None,
                pin: TEST_PIN.into(),
                token_issued_s: 0,
            };
            client.transfer(req).await.map(|r| Ack::Wallet { fee: r.fee_cents })
        }
        Op::Send { sender, total, count, size } => {
            let (kind, phrase) = match size {
                Size::Max => (PacketKind::Password, phrase()),
                _ => (PacketKind::Lucky, String::new()),
            };
            let req = SendPacketRequest {
                request_id: rid,
                sender,
                kind: kind as i32,
                total_cents: total,
                count,
                device: DEVICE.into(),
                pin: TEST_PIN.into(),
                greeting: greeting(size),
                phrase,
                ..Default::default()
            };
            client.send_packet(req).await.map(|r| Ack::Sent { packet: r.packet_id, key: r.packet_key })
        }
        Op::Grab { packet, key, grabber, phrase: p } => {
            let password = if p { phrase() } else { String::new() };
            client.grab(rid, PacketRef { id: packet, key }, grabber, &password).await.map(|r| Ack::Grabbed { amount: r.amount_cents })
        }
    }
}

/// Sends one operation with its request id and classifies the answer.
pub async fn execute(client: &Client, rid: &[u8], op: &Op) -> Outcome {
    outcome(send(client, rid, op).await)
}

/// Runs one operation and records it.
pub async fn run_op(shared: &Shared, client: &Client, op: Op) -> Outcome {
    let rid = new_request_id();
    let invoked = shared.start.elapsed();
    let out = execute(client, &rid, &op).await;
    shared.record(Event {
        request_id: rid,
        op,
        shard: shared.shard_of(&op),
        invoked,
        completed: shared.start.elapsed(),
        outcome: out,
        resolved: false,
    });
    out
}

fn pick_op(shared: &Shared, rng: &mut impl Rng) -> Op {
    let users = &shared.users;
    let user = users[rng.gen_range(0..users.len())];
    let roll = rng.gen_range(0..100);
    match roll {
        0..=9 => Op::TopUp { user, amount: rng.gen_range(1..=2_000) },
        10..=14 => Op::Withdraw { user, amount: rng.gen_range(1..=500) },
        15..=34 => {
            let mut to = users[rng.gen_range(0..users.len())];
            if to == user {
                to = users[(users.iter().position(|u| *u == user).expect("user") + 1) % users.len()];
            }
            Op::Transfer { from: user, to, amount: rng.gen_range(1..=1_000) }
        }
        35..=49 => {
            let count = rng.gen_range(2..=8);
            let size = match roll {
                35..=40 if shared.big => Size::Max,
                41 if shared.big => Size::Huge,
                42 if shared.big => Size::Over,
                _ => Size::Normal,
            };
            Op::Send { sender: user, total: rng.gen_range(count as u64..=2_000), count, size }
        }
        _ => match shared.random_packet(rng) {
            Some((packet, key)) => Op::Grab { packet, key, grabber: user, phrase: shared.big },
            None => Op::TopUp { user, amount: 100 },
        },
    }
}

/// One client worker: a new operation every THINK until told to stop, each on its own task.
pub async fn worker(shared: Arc<Shared>, client: Arc<Client>, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let slots = Arc::new(Semaphore::new(INFLIGHT_PER_WORKER));
    let mut ops = JoinSet::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.hold.load(Ordering::Relaxed) {
            while let Some(done) = ops.try_join_next() {
                done.expect("operation task");
            }
            tokio::time::sleep(THINK).await;
            continue;
        }
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let op = pick_op(&shared, &mut rng);
        let (shared, client) = (shared.clone(), client.clone());
        ops.spawn(async move {
            run_op(&shared, &client, op).await;
            drop(permit);
        });
        while let Some(done) = ops.try_join_next() {
            done.expect("operation task");
        }
        tokio::time::sleep(THINK).await;
    }
    while let Some(done) = ops.join_next().await {
        done.expect("operation task");
    }
}

/// Opens the accounts (with retries: the cluster may still be electing), sets each user's payment
/// PIN and gives each user its opening money.
pub async fn setup(shared: &Shared, client: &Client) -> anyhow::Result<()> {
    for &u in &shared.users {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.open_account(u, DEVICE).await {
                Ok(_) => break,
                Err(e) if e.code() == ErrorCode::UserExists => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => anyhow::bail!("could not open account {u}: {e}"),
            }
        }
        // One request id, re-sent while the outcome is unknown: the ledger answers a re-send
        // with the first result, so the PIN is set once.
        let rid = new_request_id();
        settle(|| client.set_pin(rid.clone(), u, TEST_PIN), 20, Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("could not set the PIN of {u}: {e}"))?;
        if let Outcome::Fail(c) = run_op(shared, client, Op::TopUp { user: u, amount: OPENING_TOPUP }).await {
            anyhow::bail!("opening top-up for {u} failed: {}", c.as_str_name());
        }
    }
    Ok(())
}
