//! How `hongbao` shows each reply: the `--json` shapes (derived with serde, converted from the
//! proto replies) and the tables people read.

use hongbao_client::membership::StepDone;
use hongbao_client::money::{yuan, yuan_signed};
use hongbao_client::when::utc;
use hongbao_proto::v1::{
    AuditReply, BalanceReply, Claim, ErrorDetail, Faults, GrabReply, NodeStatus, PacketHistoryEntry, PacketHistoryReply, PacketKind,
    PacketView, RouterView, SendPacketReply, ShardStatus, StatementEntry, StatusReply, WalletReply,
};
use serde::Serialize;

/// Prints `v` as pretty JSON. It goes through `serde_json::Value`, so keys come out sorted at
/// every level, as they always have.
pub fn print_json<T: Serialize>(v: &T) {
    let v = serde_json::to_value(v).expect("json");
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

fn up(b: bool) -> &'static str {
    if b {
        "up"
    } else {
        "DOWN"
    }
}

// ---------------- wallet ----------------

#[derive(Serialize)]
pub struct Wallet {
    user: u64,
    balance_cents: u64,
    fee_cents: u64,
    credit_in_flight: bool,
    shard: u32,
}

impl From<&WalletReply> for Wallet {
    fn from(r: &WalletReply) -> Wallet {
        Wallet {
            user: r.user,
            balance_cents: r.balance_cents,
            fee_cents: r.fee_cents,
            credit_in_flight: r.credit_in_flight,
            shard: r.shard,
        }
    }
}

#[derive(Serialize)]
pub struct Balance<'a> {
    user: u64,
    balance_cents: u64,
    frozen: bool,
    risk_grade: &'a str,
    shard: u32,
    withdrawn_cents: u64,
}

impl<'a> From<&'a BalanceReply> for Balance<'a> {
    fn from(b: &'a BalanceReply) -> Balance<'a> {
        Balance {
            user: b.user,
            balance_cents: b.balance_cents,
            frozen: b.frozen,
            risk_grade: &b.risk_grade,
            shard: b.shard,
            withdrawn_cents: b.withdrawn_cents,
        }
    }
}

#[derive(Serialize)]
pub struct StatementRow<'a> {
    /// The entry's number: `--before` it reads older entries.
    seq: u64,
    time_ms: u64,
    kind: &'a str,
    delta_cents: i64,
    balance_after_cents: u64,
    counterparty_user: u64,
    packet_id: u64,
    counterparty_shard: u32,
    /// Hex.
    request_id: String,
}

impl<'a> From<&'a StatementEntry> for StatementRow<'a> {
    fn from(e: &'a StatementEntry) -> StatementRow<'a> {
        StatementRow {
            seq: e.seq,
            time_ms: e.time_ms,
            kind: &e.kind,
            delta_cents: e.delta_cents,
            balance_after_cents: e.balance_after_cents,
            counterparty_user: e.counterparty_user,
            packet_id: e.packet_id,
            counterparty_shard: e.counterparty_shard,
            request_id: hex::encode(&e.request_id),
        }
    }
}

pub fn print_statement(entries: &[StatementEntry], next_before_seq: u64) {
    println!("{:<6} {:<24} {:<17} {:>12} {:>12}  counterparty", "seq", "time", "kind", "delta", "balance");
    for e in entries {
        let user = format!("user {} (shard {})", e.counterparty_user, e.counterparty_shard);
        let cp = match (e.packet_id != 0, e.counterparty_user != 0) {
            // grab_returned: the sender's packet, and the grabber who had no wallet.
            (true, true) => format!("packet {}, {user}", e.packet_id),
            (true, false) => format!("packet {}", e.packet_id),
            (false, true) => user,
            (false, false) => String::new(),
        };
        println!(
            "{:<6} {:<24} {:<17} {:>12} {:>12}  {}",
            e.seq,
            utc(e.time_ms),
            e.kind,
            yuan_signed(e.delta_cents),
            yuan(e.balance_after_cents),
            cp
        );
    }
    if next_before_seq != 0 {
        println!("older entries: --before {next_before_seq}");
    }
}

// ---------------- packets ----------------

#[derive(Serialize)]
pub struct History {
    user: u64,
    side: &'static str,
    year: u32,
    sent_count: u64,
    sent_cents: u64,
    received_count: u64,
    received_cents: u64,
    entries: Vec<HistoryRow>,
    /// 0: no older entries; else pass as `--before`.
    next_before_seq: u64,
}

#[derive(Serialize)]
pub struct HistoryRow {
    seq: u64,
    time_ms: u64,
    /// `<id>.<key>` (key 0: a packet of another shard, whose key is kept there).
    packet: String,
    packet_id: u64,
    amount_cents: u64,
}

impl History {
    pub fn new(r: &PacketHistoryReply, side: &'static str) -> History {
        let y = r.year.unwrap_or_default();
        History {
            user: r.user,
            side,
            year: y.year,
            sent_count: y.sent_count,
            sent_cents: y.sent_cents,
            received_count: y.received_count,
            received_cents: y.received_cents,
            entries: r
                .entries
                .iter()
                .map(|e| HistoryRow {
                    seq: e.seq,
                    time_ms: e.time_ms,
                    packet: packet_ref(e).to_string(),
                    packet_id: e.packet_id,
                    amount_cents: e.amount_cents,
                })
                .collect(),
            next_before_seq: r.next_before_seq,
        }
    }
}

fn packet_ref(e: &PacketHistoryEntry) -> hongbao_client::PacketRef {
    hongbao_client::PacketRef { id: e.packet_id, key: e.packet_key }
}

/// 發出的紅包 / 收到的紅包: the year's totals, then the page.
pub fn print_history(r: &PacketHistoryReply, sent: bool) {
    let y = r.year.unwrap_or_default();
    if sent {
        println!("user {} sent {} packets in {}, {} in all", r.user, y.sent_count, y.year, yuan(y.sent_cents));
    } else {
        println!("user {} received {} packets in {}, {} in all", r.user, y.received_count, y.year, yuan(y.received_cents));
    }
    println!("{:<6} {:<24} {:>37} {:>12}", "seq", "time", "packet", "amount");
    for e in &r.entries {
        println!("{:<6} {:<24} {:>37} {:>12}", e.seq, utc(e.time_ms), packet_ref(e).to_string(), yuan(e.amount_cents));
    }
    if r.next_before_seq != 0 {
        println!("older packets: --before {}", r.next_before_seq);
    }
}

#[derive(Serialize)]
pub struct Sent {
    /// `<id>.<key>`: what grabbers need (post it to the chat).
    packet: String,
    packet_id: u64,
    packet_key: u64,
    expires_at_ms: u64,
    balance_cents: u64,
}

impl From<&SendPacketReply> for Sent {
    fn from(r: &SendPacketReply) -> Sent {
        Sent {
            packet: hongbao_client::PacketRef::from(r).to_string(),
            packet_id: r.packet_id,
            packet_key: r.packet_key,
            expires_at_ms: r.expires_at_ms,
            balance_cents: r.balance_cents,
        }
    }
}

#[derive(Serialize)]
pub struct Grabbed {
    packet_id: u64,
    amount_cents: u64,
    index: u32,
    remaining_count: u32,
    remaining_cents: u64,
    credit_in_flight: bool,
}

impl From<&GrabReply> for Grabbed {
    fn from(r: &GrabReply) -> Grabbed {
        Grabbed {
            packet_id: r.packet_id,
            amount_cents: r.amount_cents,
            index: r.index,
            remaining_count: r.remaining_count,
            remaining_cents: r.remaining_cents,
            credit_in_flight: r.credit_in_flight,
        }
    }
}

#[derive(Serialize)]
pub struct ClaimRow {
    grabber: u64,
    amount_cents: u64,
    index: u32,
    time_ms: u64,
}

impl From<&Claim> for ClaimRow {
    fn from(c: &Claim) -> ClaimRow {
        ClaimRow { grabber: c.grabber, amount_cents: c.amount_cents, index: c.index, time_ms: c.time_ms }
    }
}

#[derive(Serialize)]
pub struct Packet {
    packet_id: u64,
    sender: u64,
    kind: &'static str,
    total_cents: u64,
    count: u32,
    remaining_cents: u64,
    remaining_count: u32,
    expires_at_ms: u64,
    refunded: bool,
    refunded_cents: u64,
    claims: Vec<ClaimRow>,
    /// The grabber of the largest share, once the packet is fully grabbed.
    best_luck: Option<u64>,
}

impl From<&PacketView> for Packet {
    fn from(p: &PacketView) -> Packet {
        Packet {
            packet_id: p.packet_id,
            sender: p.sender,
            kind: p.kind().as_str_name(),
            total_cents: p.total_cents,
            count: p.count,
            remaining_cents: p.remaining_cents,
            remaining_count: p.remaining_count,
            expires_at_ms: p.expires_at_ms,
            refunded: p.refunded,
            refunded_cents: p.refunded_cents,
            claims: p.claims.iter().map(ClaimRow::from).collect(),
            best_luck: if p.has_best_luck { p.best_luck.as_ref().map(|b| b.grabber) } else { None },
        }
    }
}

/// The packet kind as people say it ("lucky"); `--json` keeps the proto name.
pub fn kind_word(k: PacketKind) -> &'static str {
    match k {
        PacketKind::Unspecified => "unknown",
        PacketKind::Lucky => "lucky",
        PacketKind::Fixed => "fixed",
        PacketKind::Exclusive => "exclusive",
        PacketKind::Password => "password",
    }
}

pub fn print_packet(p: &PacketView) {
    println!("packet {} from user {} ({}) \"{}\"", p.packet_id, p.sender, kind_word(p.kind()), p.greeting);
    let refunded = if p.refunded { format!("  refunded {}", yuan(p.refunded_cents)) } else { String::new() };
    let (total, left) = (yuan(p.total_cents), yuan(p.remaining_cents));
    let expires = utc(p.expires_at_ms);
    println!("total {total}  shares {}  left {left} in {} shares{refunded}  expires {expires}", p.count, p.remaining_count);
    let best = p.best_luck.as_ref().filter(|_| p.has_best_luck).map(|b| b.index);
    for c in &p.claims {
        let mark = if Some(c.index) == best { "  手氣最佳 best luck" } else { "" };
        println!("  #{:<3} user {:<10} {:>10}{}", c.index + 1, c.grabber, yuan(c.amount_cents), mark);
    }
}

// ---------------- cluster status ----------------

#[derive(Serialize)]
pub struct Status<'a> {
    nodes: Vec<Node<'a>>,
    regions: Vec<Region<'a>>,
    router: Option<Router<'a>>,
}

#[derive(Serialize)]
struct Node<'a> {
    node: u64,
    region: &'a str,
    addr: &'a str,
    up: bool,
    error: &'a str,
    shards: Vec<Replica<'a>>,
}

#[derive(Serialize)]
struct Replica<'a> {
    shard: u32,
    role: &'static str,
    leader: u64,
    term: u64,
    last_log_index: u64,
    committed: u64,
    applied: u64,
    lag: u64,
    home_region: &'a str,
    /// Started empty and not yet caught up with a leader: it votes for no one with history.
    catching_up: bool,
}

#[derive(Serialize)]
struct Region<'a> {
    region: &'a str,
    up: bool,
    drained: bool,
}

/// What the answering router itself sees.
#[derive(Serialize)]
struct Router<'a> {
    region: &'a str,
    nodes: Vec<RouterNode<'a>>,
    regions: Vec<RouterRegion<'a>>,
    leaders: Vec<RouterLeader>,
}

#[derive(Serialize)]
struct RouterNode<'a> {
    node: u64,
    region: &'a str,
    up: bool,
}

#[derive(Serialize)]
struct RouterRegion<'a> {
    region: &'a str,
    up: bool,
}

#[derive(Serialize)]
struct RouterLeader {
    shard: u32,
    node: u64,
}

impl<'a> From<&'a ShardStatus> for Replica<'a> {
    fn from(sh: &'a ShardStatus) -> Replica<'a> {
        Replica {
            shard: sh.shard,
            role: sh.role().name(),
            leader: sh.leader,
            term: sh.term,
            last_log_index: sh.last_log_index,
            committed: sh.committed,
            applied: sh.applied,
            lag: sh.lag,
            home_region: &sh.home_region,
            catching_up: sh.catching_up,
        }
    }
}

impl<'a> From<&'a NodeStatus> for Node<'a> {
    fn from(n: &'a NodeStatus) -> Node<'a> {
        let shards = n.shards.iter().map(Replica::from).collect();
        Node { node: n.node, region: &n.region, addr: &n.addr, up: n.up, error: &n.error, shards }
    }
}

impl<'a> From<&'a RouterView> for Router<'a> {
    fn from(v: &'a RouterView) -> Router<'a> {
        Router {
            region: &v.region,
            nodes: v.nodes.iter().map(|n| RouterNode { node: n.node, region: &n.region, up: n.up }).collect(),
            regions: v.regions.iter().map(|r| RouterRegion { region: &r.region, up: r.up }).collect(),
            leaders: v.leaders.iter().map(|l| RouterLeader { shard: l.shard, node: l.node }).collect(),
        }
    }
}

impl<'a> From<&'a StatusReply> for Status<'a> {
    fn from(s: &'a StatusReply) -> Status<'a> {
        Status {
            nodes: s.nodes.iter().map(Node::from).collect(),
            regions: s.regions.iter().map(|r| Region { region: &r.region, up: r.up, drained: r.drained }).collect(),
            router: s.router.as_ref().map(Router::from),
        }
    }
}

pub fn print_status(s: &StatusReply) {
    println!(
        "{:<5} {:<10} {:<6} {:<6} {:<10} {:<7} {:<6} {:>9} {:>9} {:>6}",
        "node", "region", "up", "shard", "role", "leader", "term", "committed", "applied", "lag"
    );
    for n in &s.nodes {
        if n.shards.is_empty() {
            println!("{:<5} {:<10} {:<6} {}", n.node, n.region, n.up, n.error);
        }
        for sh in &n.shards {
            println!(
                "{:<5} {:<10} {:<6} {:<6} {:<10} {:<7} {:<6} {:>9} {:>9} {:>6}",
                n.node,
                n.region,
                n.up,
                sh.shard,
                if sh.catching_up { "rejoining" } else { sh.role().name() },
                sh.leader,
                sh.term,
                sh.committed,
                sh.applied,
                sh.lag
            );
        }
    }
    for r in &s.regions {
        println!("region {:<10} {}{}", r.region, up(r.up), if r.drained { " (drained)" } else { "" });
    }
    if let Some(v) = &s.router {
        let nodes: Vec<String> = v.nodes.iter().map(|n| format!("{} {}", n.node, up(n.up))).collect();
        let leaders: Vec<String> = v.leaders.iter().map(|l| format!("shard {} -> node {}", l.shard, l.node)).collect();
        let regions: Vec<String> = v.regions.iter().map(|r| format!("{} {}", r.region, up(r.up))).collect();
        println!("router {} sees: nodes {}; regions {}; routes {}", v.region, nodes.join(", "), regions.join(", "), leaders.join(", "));
    }
}

// ---------------- cluster audit ----------------

pub fn print_audit(a: &AuditReply) {
    println!(
        "{:<6} {:>14} {:>12} {:>12} {:>10} {:>14} {:>14} {:>12} {:>12}  ok",
        "shard", "balances", "escrow", "outbox", "fees", "top-ups", "withdrawals", "credits in", "credits out"
    );
    for s in &a.shards {
        println!(
            "{:<6} {:>14} {:>12} {:>12} {:>10} {:>14} {:>14} {:>12} {:>12}  {}",
            s.shard,
            yuan(s.balances_cents),
            yuan(s.escrow_cents),
            yuan(s.outbox_pending_cents),
            yuan(s.fees_cents),
            yuan(s.topups_cents),
            yuan(s.withdrawals_cents),
            yuan(s.credits_in_cents),
            yuan(s.credits_out_delivered_cents),
            s.identity_holds
        );
    }
    println!(
        "total: balances {} + escrow {} + in flight {} + fees {} vs top-ups {} - withdrawals {}",
        yuan(a.total_balances_cents),
        yuan(a.total_escrow_cents),
        yuan(a.total_in_flight_cents),
        yuan(a.total_fees_cents),
        yuan(a.total_topups_cents),
        yuan(a.total_withdrawals_cents)
    );
    for p in &a.problems {
        println!("PROBLEM: {p}");
    }
    println!("{}", if a.balanced { "BALANCED" } else { "NOT BALANCED" });
}

// ---------------- cluster administration ----------------

#[derive(Serialize)]
pub struct Drained<'a> {
    pub region: &'a str,
    /// true: `drain`; false: `undrain`.
    pub drained: bool,
    /// One line per leadership moved, e.g. "shard 1: leader 1 -> 2".
    pub moved: &'a [String],
}

#[derive(Serialize)]
pub struct LeaderHandedOver {
    pub shard: u32,
    pub node: u64,
}

/// `cluster map`.
#[derive(Serialize)]
pub struct ClusterMap<'a> {
    pub version: u64,
    /// The map as a topology file.
    pub toml: &'a str,
}

/// `cluster rebalance`: the load per shard over the window, and the moves proposed (made, if
/// `applied`).
#[derive(Serialize)]
pub struct Rebalance {
    pub seconds: u64,
    pub shards: Vec<ShardLoad>,
    pub moves: Vec<hongbao_client::rebalance::Move>,
    pub applied: bool,
}

#[derive(Serialize)]
pub struct ShardLoad {
    pub shard: u32,
    pub requests_per_s: f64,
}

/// `cluster move-slot`: where the slot is now.
#[derive(Serialize)]
pub struct SlotMoved {
    pub slot: u32,
    pub from_shard: u32,
    pub to_shard: u32,
    /// The map version that routes the slot to `to_shard`.
    pub map_version: u64,
}

/// `cluster add-node`, `remove-node`, `replace-node`: the steps done, in order.
#[derive(Serialize)]
pub struct Membership<'a> {
    steps: Vec<MembershipStep<'a>>,
    /// The map's version after the last step.
    map_version: u64,
}

#[derive(Serialize)]
struct MembershipStep<'a> {
    /// add_node, add_replica, remove_replica or remove_node.
    step: &'static str,
    shard: Option<u32>,
    node: u64,
    map_version: u64,
    /// What the node said it did ("already a voter" when there was nothing to do).
    done: &'a str,
    /// Times the step was re-sent while under way.
    resends: u32,
}

impl<'a> Membership<'a> {
    pub fn new(done: &'a [StepDone]) -> Membership<'a> {
        let steps = done
            .iter()
            .map(|d| MembershipStep {
                step: d.step.name(),
                shard: d.step.shard(),
                node: d.step.node(),
                map_version: d.map_version,
                done: &d.done,
                resends: d.resends,
            })
            .collect();
        Membership { steps, map_version: done.last().map(|d| d.map_version).unwrap_or(0) }
    }
}

#[derive(Serialize)]
pub struct FaultsNow {
    node: u64,
    cut_off: Vec<u64>,
    delay_ms: u32,
    delay_to: Vec<u64>,
    drop_percent: u32,
    clock_offset_ms: i64,
}

impl FaultsNow {
    pub fn new(node: u64, f: &Faults) -> FaultsNow {
        FaultsNow {
            node,
            cut_off: f.cut_off.clone(),
            delay_ms: f.delay_ms,
            delay_to: f.delay_to.clone(),
            drop_percent: f.drop_percent,
            clock_offset_ms: f.clock_offset_ms,
        }
    }
}

#[derive(Serialize)]
pub struct Ready {
    pub ready: bool,
    /// Shards the status reported.
    pub shards: usize,
}

// ---------------- local ----------------

#[derive(Serialize)]
pub struct LoggedIn<'a> {
    pub user: u64,
    pub device: &'a str,
    pub minutes: u64,
    pub token_file: String,
}

#[derive(Serialize)]
pub struct DevCa {
    pub security_dir: String,
}

// ---------------- errors ----------------

/// A failed command under `--json`, printed on stdout (the words for people still go to
/// stderr): `{"error": {...}}`, and the exit status is `exit_code`.
#[derive(Serialize)]
pub struct ErrorOut {
    error: ErrorBody,
}

#[derive(Serialize)]
struct ErrorBody {
    /// The cluster's code name (`ALREADY_GRABBED`, `CHALLENGE_REQUIRED`, `TIMEOUT`, ...; the
    /// proto's `ErrorCode` without its `ERROR_CODE_` prefix), or `USAGE` (the command line does
    /// not parse, exit 2) or `LOCAL` (failed here without an answer: bad input, a missing file).
    code: &'static str,
    /// What happened, in words.
    message: String,
    /// 1 refused or failed, 75 outcome unknown, 2 usage.
    exit_code: i32,
    /// The request went out and its outcome is unknown: re-send it with `--request-id`.
    outcome_unknown: bool,
    /// The shard that answered, when known.
    shard: Option<u32>,
    /// With CHALLENGE_REQUIRED: re-send with `--challenge` and the code.
    challenge_id: Option<u64>,
    /// The id of the money-moving request this command sent (hex), if it sent one.
    request_id: Option<String>,
}

impl ErrorOut {
    pub fn cluster(
        code: &'static str,
        message: String,
        exit_code: i32,
        outcome_unknown: bool,
        d: &ErrorDetail,
        request_id: Option<String>,
    ) -> ErrorOut {
        let nonzero_u32 = |x: u32| (x != 0).then_some(x);
        let nonzero_u64 = |x: u64| (x != 0).then_some(x);
        ErrorOut {
            error: ErrorBody {
                code,
                message,
                exit_code,
                outcome_unknown,
                shard: nonzero_u32(d.shard),
                challenge_id: nonzero_u64(d.challenge_id),
                request_id,
            },
        }
    }

    pub fn local(message: String, exit_code: i32, request_id: Option<String>) -> ErrorOut {
        let error = ErrorBody { code: "LOCAL", message, exit_code, outcome_unknown: false, shard: None, challenge_id: None, request_id };
        ErrorOut { error }
    }

    pub fn usage(message: String, exit_code: i32) -> ErrorOut {
        let error =
            ErrorBody { code: "USAGE", message, exit_code, outcome_unknown: false, shard: None, challenge_id: None, request_id: None };
        ErrorOut { error }
    }
}
