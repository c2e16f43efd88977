//! The two scenarios, one op (or one packet round) at a time, and the closed / open loop drivers.
//!
//! Every client call goes to a router of the user's home region first (a real phone talks to
//! its nearest data center), then to the other routers. Every mutating request carries one
//! request id, reused on every re-send, so a re-send after an unknown outcome never moves money
//! twice.
//!
//! The bench acts for every one of its users through the routers: user calls go with the `app`
//! certificate and a token minted with the development key for the device the request names
//! (`Credentials::dev`), top-ups with the `payment-gateway` certificate. Every account is opened
//! on [`DEVICE`] and gets the payment PIN [`PIN`], which every send and transfer carries.

use crate::check::{Ack, Tracker};
use crate::limits::{CALL_DEADLINE, CLIENTS_PER_REGION, MAX_RESENDS, MAX_SHARES, POOL_MAX, SETTLE_WITHIN};
use crate::stats::{Kind, Outcome, Recorder};
use hongbao_client::grab_batch::GrabBatcher;
use hongbao_client::{new_request_id, settle, Client, ClientError, Credentials, PacketRef};
use hongbao_proto::v1::{PacketKind, SendPacketRequest, TransferRequest};
use hongbao_proto::ErrorCode;
use hongbao_topology::{ShardId, Topology};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The device every bench account is opened with, so sends and transfers never need a challenge
/// (the development tokens are minted for the device a request names, and that is always this
/// one).
pub const DEVICE: &str = "bench-phone";
/// The payment PIN every bench account sets once at setup; every send and transfer carries it.
pub const PIN: &str = "135790";
/// evening-mix weights, in percent: send, grab, balance read, cross-shard transfer.
pub const MIX: [(Kind, u32); 4] = [(Kind::Send, 10), (Kind::Grab, 45), (Kind::Balance, 30), (Kind::Transfer, 15)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    HotPackets,
    EveningMix,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::HotPackets => "hot-packets",
            Scenario::EveningMix => "evening-mix",
        }
    }
}

/// One client list per region (its routers first), several clients each so that the load is
/// spread over several HTTP/2 connections per router.
pub struct Clients {
    lists: Vec<Vec<Arc<Client>>>,
    /// With `--batch-grabs`: one grab batcher per list, over its first client.
    batchers: Option<Vec<Arc<GrabBatcher>>>,
    home_of_shard: HashMap<ShardId, usize>,
    pub topology: Topology,
}

impl Clients {
    /// `routers` from the command line, or (when empty) the topology's routers by region.
    /// `credentials`: every role's certificate and development tokens for the bench's users.
    pub fn new(topology: Topology, routers: &[String], credentials: Arc<Credentials>, batch_grabs: bool) -> Clients {
        let mut orders: Vec<Vec<String>> = Vec::new();
        let mut home_of_shard = HashMap::new();
        if routers.is_empty() {
            let all: Vec<&hongbao_topology::Router> = topology.routers.iter().collect();
            for (i, region) in topology.regions.iter().enumerate() {
                let mut order: Vec<String> = all.iter().filter(|r| r.region == region.name).map(|r| r.addr.clone()).collect();
                order.extend(all.iter().filter(|r| r.region != region.name).map(|r| r.addr.clone()));
                orders.push(order);
                for s in topology.shards.iter().filter(|s| s.home == region.name) {
                    home_of_shard.insert(s.id, i);
                }
            }
        } else {
            // Given addresses carry no region: rotate the list so each shard still gets its own
            // first router.
            for i in 0..routers.len() {
                let mut order = routers.to_vec();
                order.rotate_left(i);
                orders.push(order);
            }
            for (i, s) in topology.shards.iter().enumerate() {
                home_of_shard.insert(s.id, i % routers.len());
            }
        }
        assert!(orders.iter().all(|o| !o.is_empty()), "the topology lists no router");
        let lists = orders
            .into_iter()
            .map(|order| {
                (0..CLIENTS_PER_REGION)
                    .map(|_| Arc::new(Client::new(order.clone(), credentials.clone()).with_deadline(CALL_DEADLINE)))
                    .collect()
            })
            .collect::<Vec<Vec<Arc<Client>>>>();
        let batchers = batch_grabs.then(|| lists.iter().map(|l| GrabBatcher::new(l[0].clone())).collect());
        Clients { lists, batchers, home_of_shard, topology }
    }

    /// The grab batcher whose first router is in the user's home region (`--batch-grabs`).
    pub fn batcher_for(&self, user: u64) -> Option<Arc<GrabBatcher>> {
        let batchers = self.batchers.as_ref()?;
        let shard = self.topology.shard_of_user(user);
        Some(batchers[self.home_of_shard.get(&shard).copied().unwrap_or(0) % batchers.len()].clone())
    }

    /// A client whose first router is in the user's home region.
    pub fn client_for(&self, user: u64) -> Arc<Client> {
        let shard = self.topology.shard_of_user(user);
        let home = self.home_of_shard.get(&shard).copied().unwrap_or(0) % self.lists.len();
        let list = &self.lists[home];
        list[rand::thread_rng().gen_range(0..list.len())].clone()
    }

    pub fn any(&self) -> Arc<Client> {
        self.lists[0][0].clone()
    }
}

fn outcome<T>(r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => match e.code() {
            c @ (ErrorCode::PacketExhausted | ErrorCode::AlreadyGrabbed) => Outcome::Expected(c),
            c => Outcome::Error(c),
        },
    }
}

/// `n` users homed in `shard`, counting up from `start`.
pub fn users_in_shard(t: &Topology, shard: ShardId, start: u64, n: usize) -> Vec<u64> {
    (start..).filter(|u| t.shard_of_user(*u) == shard).take(n).collect()
}

/// Opens the accounts, sets each one's payment PIN and tops each up by `cents` (not measured).
/// `parallel` bounds the calls in flight.
pub async fn open_and_fund(clients: &Arc<Clients>, users: &[u64], cents: u64, parallel: usize) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut set = JoinSet::new();
    for &u in users {
        let permit = gate.clone().acquire_owned().await?;
        let clients = clients.clone();
        set.spawn(async move {
            let r = open_one(&clients, u, cents).await;
            drop(permit);
            r.map_err(|e| anyhow::anyhow!("setting up user {u}: {e}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

async fn open_one(clients: &Clients, user: u64, cents: u64) -> Result<(), ClientError> {
    let client = clients.client_for(user);
    // open_account picks a fresh request id per call: safe to re-send all the same, because an
    // account opens once; after an unknown outcome the re-send may find the account already
    // there, which is the success we wanted.
    let open = || async {
        match client.open_account(user, DEVICE).await {
            Err(e) if e.code() == ErrorCode::UserExists => Ok(()),
            r => r.map(|_| ()),
        }
    };
    settle(open, MAX_RESENDS, SETTLE_WITHIN).await?;
    // One request id for the PIN, re-sent while its outcome is unknown (the ledger remembers it,
    // so a re-send returns the first answer). PIN_ALREADY_SET can only mean it is set: accounts
    // are fresh for every run.
    let id = new_request_id();
    let pin = || async {
        match client.set_pin(id.clone(), user, PIN).await {
            Err(e) if e.code() == ErrorCode::PinAlreadySet => Ok(()),
            r => r.map(|_| ()),
        }
    };
    settle(pin, MAX_RESENDS, SETTLE_WITHIN).await?;
    if cents > 0 {
        let id = new_request_id();
        settle(|| client.top_up(id.clone(), user, cents), MAX_RESENDS, SETTLE_WITHIN).await?;
    }
    Ok(())
}

/// Shared state of a run.
pub struct Ctx {
    pub scenario: Scenario,
    pub clients: Arc<Clients>,
    pub recorder: Mutex<Recorder>,
    pub tracker: Mutex<Tracker>,
    /// No new op or packet round starts at or after this.
    pub stop_at: Instant,
    /// hot-packets: people who send, and the group members who grab.
    pub senders: Vec<u64>,
    pub grabbers: Vec<u64>,
    /// Grabbers per packet (hot-packets); shares are min(group_size, 100).
    pub group_size: usize,
    /// evening-mix: every user, and by shard (for cross-shard transfers).
    pub users: Vec<u64>,
    pub users_by_shard: Vec<Vec<u64>>,
    pool: Mutex<VecDeque<PacketRef>>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: Scenario,
        clients: Arc<Clients>,
        recorder: Recorder,
        stop_at: Instant,
        senders: Vec<u64>,
        grabbers: Vec<u64>,
        group_size: usize,
        users_by_shard: Vec<Vec<u64>>,
    ) -> Ctx {
        Ctx {
            scenario,
            clients,
            recorder: Mutex::new(recorder),
            // ~100 bytes per tracked packet plus 24 per grab: a few MB at most.
            tracker: Mutex::new(Tracker::new(200_000)),
            stop_at,
            senders,
            grabbers,
            group_size,
            users: users_by_shard.iter().flatten().copied().collect(),
            users_by_shard,
            pool: Mutex::new(VecDeque::new()),
        }
    }

    fn record(&self, kind: Kind, outcome: Outcome, intended: Instant, done: Instant) {
        self.recorder.lock().expect("recorder lock").record(kind, outcome, intended, done);
    }
}

/// One op (evening-mix) or one packet round (hot-packets) that should start at `intended`.
pub async fn run_one(ctx: Arc<Ctx>, intended: Instant) {
    match ctx.scenario {
        Scenario::HotPackets => hot_packet(ctx, intended).await,
        Scenario::EveningMix => mix_op(ctx, intended).await,
    }
}

/// hot-packets: one sender sends a lucky group packet, then the whole group grabs at once.
async fn hot_packet(ctx: Arc<Ctx>, intended: Instant) {
    // Open loop: how late this round starts against its schedule. Grabs could not start before
    // the packet existed, so each grab's intended start is its actual start minus this lag: a
    // backlog in the bench shows up in grab latency instead of being hidden (no coordinated
    // omission), and the send's own time is measured once, on the send.
    let lag = Instant::now().saturating_duration_since(intended);
    let count = ctx.group_size.min(MAX_SHARES) as u32;
    let (sender, total, grabbers) = {
        let mut rng = rand::thread_rng();
        // A random sender: packets land on every shard in the mix of the senders, at any moment.
        let sender = *ctx.senders.choose(&mut rng).expect("hot-packets has senders");
        // "Several hundred cents" in 100 shares: every share at least 1 cent.
        let total = rng.gen_range(3_00..=8_00).max(count as u64);
        let grabbers: Vec<u64> = ctx.grabbers.choose_multiple(&mut rng, ctx.group_size).copied().collect();
        (sender, total, grabbers)
    };
    let Some(packet) = send_lucky(&ctx, sender, total, count, "恭喜發財", intended).await else { return };
    let mut set = JoinSet::new();
    for g in grabbers {
        set.spawn(grab(ctx.clone(), packet, g, lag));
    }
    while set.join_next().await.is_some() {}
}

async fn grab(ctx: Arc<Ctx>, packet: PacketRef, grabber: u64, lag: Duration) -> Option<u32> {
    let start = Instant::now();
    let intended = start.checked_sub(lag).unwrap_or(start);
    let client = ctx.clients.client_for(grabber);
    let id = new_request_id();
    let res = match ctx.clients.batcher_for(grabber) {
        Some(b) => settle(|| b.grab(id.clone(), packet, grabber, ""), MAX_RESENDS, SETTLE_WITHIN).await,
        None => settle(|| client.grab(id.clone(), packet, grabber, ""), MAX_RESENDS, SETTLE_WITHIN).await,
    };
    let done = Instant::now();
    let left = match &res {
        Ok(r) => {
            ctx.tracker.lock().expect("tracker lock").add_grab(packet.id, Ack { grabber, amount: r.amount_cents, index: r.index });
            Some(r.remaining_count)
        }
        Err(e) if e.code() == ErrorCode::PacketExhausted => Some(0),
        Err(_) => None,
    };
    ctx.record(Kind::Grab, outcome(&res), intended, done);
    left
}

enum Plan {
    Send { sender: u64, total: u64, count: u32 },
    Grab { packet: PacketRef, grabber: u64 },
    Balance { user: u64 },
    Transfer { from: u64, to: u64, amount: u64 },
}

fn plan(ctx: &Ctx) -> Plan {
    let mut rng = rand::thread_rng();
    let user = *ctx.users.choose(&mut rng).expect("evening-mix has users");
    let mut roll = rng.gen_range(0..MIX.iter().map(|(_, w)| w).sum::<u32>());
    let mut kind = Kind::Send;
    for (k, w) in MIX {
        if roll < w {
            kind = k;
            break;
        }
        roll -= w;
    }
    let send =
        |rng: &mut rand::rngs::ThreadRng| Plan::Send { sender: user, total: rng.gen_range(2_00..=20_00), count: rng.gen_range(2..=20) };
    match kind {
        Kind::Send => send(&mut rng),
        Kind::Grab => {
            let pool = ctx.pool.lock().expect("pool lock");
            match pool.len() {
                // Nothing open yet (start of the run): someone has to send first.
                0 => {
                    drop(pool);
                    send(&mut rng)
                }
                n => Plan::Grab { packet: pool[rng.gen_range(0..n)], grabber: user },
            }
        }
        Kind::Balance => Plan::Balance { user },
        Kind::Transfer => {
            // Across regions: the receiver lives on another shard (falls back to any other
            // user when there is one shard).
            let home = ctx.clients.topology.shard_of_user(user);
            let others: Vec<&Vec<u64>> =
                ctx.users_by_shard.iter().filter(|v| v.first().map(|u| ctx.clients.topology.shard_of_user(*u)) != Some(home)).collect();
            let to = match others.choose(&mut rng) {
                Some(v) => *v.choose(&mut rng).expect("non-empty shard list"),
                None => *ctx.users.iter().filter(|u| **u != user).collect::<Vec<_>>().choose(&mut rng).copied().unwrap_or(&user),
            };
            Plan::Transfer { from: user, to, amount: rng.gen_range(1..=5_00) }
        }
    }
}

/// Sends a lucky group packet, records it, and tracks it for the end-of-run checks.
async fn send_lucky(ctx: &Ctx, sender: u64, total: u64, count: u32, greeting: &str, intended: Instant) -> Option<PacketRef> {
    let req = SendPacketRequest {
        request_id: new_request_id(),
        sender,
        kind: PacketKind::Lucky as i32,
        total_cents: total,
        count,
        greeting: greeting.into(),
        device: DEVICE.into(),
        pin: PIN.into(),
        ..Default::default()
    };
    let client = ctx.clients.client_for(sender);
    let res = settle(|| client.send_packet(req.clone()), MAX_RESENDS, SETTLE_WITHIN).await;
    ctx.record(Kind::Send, outcome(&res), intended, Instant::now());
    let sent = res.ok()?;
    ctx.tracker.lock().expect("tracker lock").add_packet(sent.packet_id, total, count);
    Some(PacketRef::from(&sent))
}

/// evening-mix: one op of the weighted mix.
async fn mix_op(ctx: Arc<Ctx>, intended: Instant) {
    match plan(&ctx) {
        Plan::Send { sender, total, count } => {
            if let Some(packet) = send_lucky(&ctx, sender, total, count, "晚上好", intended).await {
                let mut pool = ctx.pool.lock().expect("pool lock");
                if pool.len() >= POOL_MAX {
                    pool.pop_front();
                }
                pool.push_back(packet);
            }
        }
        Plan::Grab { packet, grabber } => {
            let start = Instant::now();
            let lag = start.saturating_duration_since(intended);
            if grab(ctx.clone(), packet, grabber, lag).await == Some(0) {
                // Empty now: stop offering it.
                ctx.pool.lock().expect("pool lock").retain(|p| *p != packet);
            }
        }
        Plan::Balance { user } => {
            let res = ctx.clients.client_for(user).balance(user).await;
            ctx.record(Kind::Balance, outcome(&res), intended, Instant::now());
        }
        Plan::Transfer { from, to, amount } => {
            let req = TransferRequest {
                request_id: new_request_id(),
                from_user: from,
                to_user: to,
                amount_cents: amount,
                device: DEVICE.into(),
                verification: None,
                pin: PIN.into(),
                token_issued_s: 0,
            };
            let client = ctx.clients.client_for(from);
            let res = settle(|| client.transfer(req.clone()), MAX_RESENDS, SETTLE_WITHIN).await;
            ctx.record(Kind::Transfer, outcome(&res), intended, Instant::now());
        }
    }
}

/// Closed loop: `workers` tasks, each starting its next round as soon as the last one ended.
pub async fn closed_loop(ctx: Arc<Ctx>, workers: usize) {
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let ctx = ctx.clone();
        set.spawn(async move {
            while Instant::now() < ctx.stop_at {
                run_one(ctx.clone(), Instant::now()).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Open loop: rounds start on a fixed schedule of `per_sec` a second, whatever the answers do.
/// At most `slots` rounds are in flight; when all are busy the schedule slips, and the slip is
/// counted in latency because every op is measured from its scheduled start.
pub async fn open_loop(ctx: Arc<Ctx>, per_sec: f64, slots: usize) {
    let gate = Arc::new(Semaphore::new(slots));
    let start = Instant::now();
    let mut i: u64 = 0;
    loop {
        let intended = start + Duration::from_secs_f64(i as f64 / per_sec);
        if intended >= ctx.stop_at {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let permit = gate.clone().acquire_owned().await.expect("gate is never closed");
        let ctx = ctx.clone();
        tokio::spawn(async move {
            run_one(ctx, intended).await;
            drop(permit);
        });
        i += 1;
    }
    // Wait for every round in flight.
    let _ = gate.acquire_many(slots as u32).await;
}
