//! `hongbao`: the command-line tool. Tables for people, `--json` for scripts.

mod demo;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hongbao_client::money::{parse_yuan, yuan, yuan_signed};
use hongbao_client::{new_request_id, Client, ClientError};
use hongbao_proto::v1::*;
use hongbao_topology::Topology;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hongbao", about = "hongbao red packets and wallets: command-line client")]
struct Cli {
    /// Router (or node) gRPC address; repeat for failover, home region first.
    #[arg(long = "router", global = true)]
    routers: Vec<String>,
    /// Topology file; its routers, then its nodes, are the default endpoints.
    #[arg(long, global = true)]
    topology: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a call after this many seconds (retries included).
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Wallet accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Move money from one wallet to another (possibly on another shard).
    Transfer {
        from: u64,
        to: u64,
        /// Yuan, e.g. 12.34
        amount: String,
        #[arg(long, default_value = "cli")]
        device: String,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// Red packets.
    #[command(subcommand)]
    Packet(PacketCmd),
    /// Cluster status and administration.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// A guided tour against the running local cluster (kills and restarts a region).
    Demo {
        /// Region to kill in the middle of the demo (default: the second region).
        #[arg(long)]
        kill_region: Option<String>,
        /// The cluster control script.
        #[arg(long, default_value = "scripts/cluster")]
        cluster_script: PathBuf,
    },
}

#[derive(Args, Clone)]
struct VerifyArgs {
    /// Challenge id from a CHALLENGE_REQUIRED answer.
    #[arg(long)]
    challenge: Option<u64>,
    /// The code sent to the account's known device (`hongbao account challenge-code`).
    #[arg(long)]
    code: Option<u32>,
}

impl VerifyArgs {
    fn get(&self) -> Option<Verification> {
        Some(Verification { challenge_id: self.challenge?, code: self.code.unwrap_or(0) })
    }
}

#[derive(Subcommand)]
enum AccountCmd {
    Open { user: u64, #[arg(long, default_value = "cli")] device: String },
    Topup { user: u64, amount: String },
    Withdraw { user: u64, amount: String, #[arg(long, default_value = "cli")] device: String, #[command(flatten)] verify: VerifyArgs },
    Balance { user: u64 },
    Statement { user: u64, #[arg(long, default_value_t = 20)] limit: u32 },
    /// The verification code the account's known device would receive.
    ChallengeCode { user: u64, #[arg(long)] device: String },
    /// Admin: freeze / unfreeze, set the risk grade (normal, elevated, high).
    Risk { user: u64, #[arg(long)] freeze: bool, #[arg(long, default_value = "normal")] grade: String },
}

#[derive(Subcommand)]
enum PacketCmd {
    /// Send a packet: exactly one of --lucky, --fixed, --exclusive, --password.
    Send {
        sender: u64,
        /// Lucky packet: total yuan split at random (double-average rule).
        #[arg(long)]
        lucky: Option<String>,
        /// Fixed packet: yuan per share.
        #[arg(long)]
        fixed: Option<String>,
        /// Exclusive packet: yuan for one recipient (--to).
        #[arg(long)]
        exclusive: Option<String>,
        /// Password packet: total yuan; grabbers must send --phrase.
        #[arg(long)]
        password: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, default_value = "")]
        phrase: String,
        #[arg(long, default_value = "恭喜發財")]
        greeting: String,
        #[arg(long, default_value = "cli")]
        device: String,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    Grab { packet: u64, user: u64, #[arg(long, default_value = "")] password: String },
    Show { packet: u64 },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Status,
    /// Exit 0 once every shard has a leader.
    WaitReady,
    /// Conservation over all shards; exit 1 on any mismatch.
    Audit,
    Drain { region: String },
    Undrain { region: String },
    TransferLeader { shard: u32, node: u64 },
    /// Chaos testing: replace the injected faults of the node at ADDR (no flags = clear them).
    Faults {
        /// gRPC address of the node (not a router).
        addr: String,
        /// Nodes it can neither reach nor hear from, e.g. --cut-off 2,3.
        #[arg(long, value_delimiter = ',')]
        cut_off: Vec<u64>,
        /// Extra one-way delay on its outgoing messages.
        #[arg(long, default_value_t = 0)]
        delay_ms: u32,
        /// Only delay messages to these nodes (default: all).
        #[arg(long, value_delimiter = ',')]
        delay_to: Vec<u64>,
        #[arg(long, default_value_t = 0)]
        drop_percent: u32,
        /// Shifts the time its leaders stamp into commands.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        clock_offset_ms: i64,
    },
}

fn topology_path(given: &Option<PathBuf>) -> PathBuf {
    hongbao_client::local_topology_path(given.as_deref())
}

fn endpoints(cli: &Cli) -> anyhow::Result<Vec<String>> {
    if !cli.routers.is_empty() {
        return Ok(cli.routers.clone());
    }
    let path = topology_path(&cli.topology);
    let t = Topology::load(&path).map_err(anyhow::Error::msg).context("no --router given; reading the topology")?;
    Ok(t.routers.iter().map(|r| r.addr.clone()).chain(t.nodes.iter().map(|n| n.addr.clone())).collect())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ClientError>() {
                eprintln!("error: {} ({})", ce.detail.message, ce.code().as_str_name());
                if ce.detail.challenge_id != 0 {
                    eprintln!("challenge id: {} — re-send with --challenge {} --code <code from the known device>", ce.detail.challenge_id, ce.detail.challenge_id);
                }
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let client = Client::new(endpoints(&cli)?).with_deadline(Duration::from_secs(cli.timeout));
    let json = cli.json;
    match cli.cmd {
        Cmd::Account(a) => account(&client, a, json).await?,
        Cmd::Transfer { from, to, amount, device, verify } => {
            let r = client
                .transfer(TransferRequest { request_id: new_request_id(), from, to, amount_cents: parse_yuan(&amount).map_err(anyhow::Error::msg)?, device, verification: verify.get() })
                .await?;
            if json { print_json(&wallet_json(&r)) } else {
                println!("transferred {amount} from {from} to {to}; balance of {from}: {}{}", yuan(r.balance_cents), if r.credit_in_flight { " (credit to the receiver's shard in flight)" } else { "" });
            }
        }
        Cmd::Packet(p) => packet(&client, p, json).await?,
        Cmd::Cluster(c) => return cluster(&client, c, json).await,
        Cmd::Demo { kill_region, cluster_script } => {
            let topology = Topology::load(&topology_path(&cli.topology)).map_err(anyhow::Error::msg)?;
            return demo::run(&client, &topology, &cluster_script, kill_region.as_deref()).await;
        }
    }
    Ok(0)
}

fn wallet_json(r: &WalletReply) -> serde_json::Value {
    serde_json::json!({"user": r.user, "balance_cents": r.balance_cents, "fee_cents": r.fee_cents, "credit_in_flight": r.credit_in_flight, "shard": r.shard})
}

async fn account(client: &Client, cmd: AccountCmd, json: bool) -> anyhow::Result<()> {
    let amount = |s: &str| parse_yuan(s).map_err(anyhow::Error::msg);
    let r = match cmd {
        AccountCmd::Open { user, device } => client.open_account(user, &device).await?,
        AccountCmd::Topup { user, amount: a } => client.top_up(new_request_id(), user, amount(&a)?).await?,
        AccountCmd::Withdraw { user, amount: a, device, verify } => {
            client.withdraw(WithdrawRequest { request_id: new_request_id(), user, amount_cents: amount(&a)?, device, verification: verify.get() }).await?
        }
        AccountCmd::Balance { user } => {
            let b = client.balance(user).await?;
            if json {
                print_json(&serde_json::json!({"user": b.user, "balance_cents": b.balance_cents, "frozen": b.frozen, "risk_grade": b.risk_grade, "shard": b.shard, "withdrawn_cents": b.withdrawn_cents}));
            } else {
                println!("user {}  balance {}  shard {}  grade {}{}", b.user, yuan(b.balance_cents), b.shard, b.risk_grade, if b.frozen { "  FROZEN" } else { "" });
            }
            return Ok(());
        }
        AccountCmd::Statement { user, limit } => {
            let s = client.statement(user, limit).await?;
            if json {
                let rows: Vec<_> = s.entries.iter().map(|e| serde_json::json!({"time_ms": e.time_ms, "kind": e.kind, "delta_cents": e.delta_cents, "balance_after_cents": e.balance_after_cents, "counterparty_user": e.counterparty_user, "packet_id": e.packet_id, "counterparty_shard": e.counterparty_shard, "request_id": hex::encode(&e.request_id)})).collect();
                print_json(&rows);
            } else {
                println!("{:<14} {:<16} {:>12} {:>12}  {}", "time_ms", "kind", "delta", "balance", "counterparty");
                for e in &s.entries {
                    let cp = if e.packet_id != 0 { format!("packet {}", e.packet_id) } else if e.counterparty_user != 0 { format!("user {} (shard {})", e.counterparty_user, e.counterparty_shard) } else { String::new() };
                    println!("{:<14} {:<16} {:>12} {:>12}  {}", e.time_ms, e.kind, yuan_signed(e.delta_cents), yuan(e.balance_after_cents), cp);
                }
            }
            return Ok(());
        }
        AccountCmd::ChallengeCode { user, device } => {
            let c = client.challenge_code(user, &device).await?;
            if json { print_json(&serde_json::json!({"challenge_id": c.challenge_id, "code": c.code})) } else { println!("challenge {} code {:06}", c.challenge_id, c.code) }
            return Ok(());
        }
        AccountCmd::Risk { user, freeze, grade } => {
            let b = client.set_risk(user, freeze, &grade).await?;
            println!("user {} frozen={} grade={}", b.user, b.frozen, b.risk_grade);
            return Ok(());
        }
    };
    if json { print_json(&wallet_json(&r)) } else {
        let fee = if r.fee_cents > 0 { format!("  fee {}", yuan(r.fee_cents)) } else { String::new() };
        println!("user {}  balance {}{}  (shard {})", r.user, yuan(r.balance_cents), fee, r.shard);
    }
    Ok(())
}

async fn packet(client: &Client, cmd: PacketCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PacketCmd::Send { sender, lucky, fixed, exclusive, password, count, to, phrase, greeting, device, verify } => {
            let chosen = [&lucky, &fixed, &exclusive, &password].iter().filter(|x| x.is_some()).count();
            if chosen != 1 {
                bail!("give exactly one of --lucky, --fixed, --exclusive, --password");
            }
            let amt = |s: &Option<String>| s.as_deref().map(parse_yuan).transpose().map_err(anyhow::Error::msg);
            let mut req = SendPacketRequest { request_id: new_request_id(), sender, count, greeting, device, verification: verify.get(), ..Default::default() };
            if let Some(t) = amt(&lucky)? {
                req.kind = PacketKind::Lucky as i32;
                req.total_cents = t;
            } else if let Some(p) = amt(&fixed)? {
                req.kind = PacketKind::Fixed as i32;
                req.per_share_cents = p;
            } else if let Some(t) = amt(&exclusive)? {
                req.kind = PacketKind::Exclusive as i32;
                req.total_cents = t;
                req.count = 1;
                req.recipient = to.context("--exclusive needs --to USER")?;
            } else if let Some(t) = amt(&password)? {
                req.kind = PacketKind::Password as i32;
                req.total_cents = t;
                req.phrase = phrase;
            }
            let r = client.send_packet(req).await?;
            if json { print_json(&serde_json::json!({"packet_id": r.packet_id, "expires_at_ms": r.expires_at_ms, "balance_cents": r.balance_cents})) } else {
                println!("packet {} sent; expires at {} ms; sender balance {}", r.packet_id, r.expires_at_ms, yuan(r.balance_cents));
            }
        }
        PacketCmd::Grab { packet, user, password } => {
            let r = client.grab(new_request_id(), packet, user, &password).await?;
            if json { print_json(&serde_json::json!({"packet_id": r.packet_id, "amount_cents": r.amount_cents, "index": r.index, "remaining_count": r.remaining_count, "remaining_cents": r.remaining_cents, "credit_in_flight": r.credit_in_flight})) } else {
                println!("user {user} grabbed {} (share #{}); {} shares / {} left{}", yuan(r.amount_cents), r.index + 1, r.remaining_count, yuan(r.remaining_cents), if r.credit_in_flight { "; credit on its way to the wallet's shard" } else { "" });
            }
        }
        PacketCmd::Show { packet } => {
            let p = client.show_packet(packet).await?;
            if json {
                let claims: Vec<_> = p.claims.iter().map(|c| serde_json::json!({"grabber": c.grabber, "amount_cents": c.amount_cents, "index": c.index, "time_ms": c.time_ms})).collect();
                print_json(&serde_json::json!({"packet_id": p.packet_id, "sender": p.sender, "kind": p.kind().as_str_name(), "total_cents": p.total_cents, "count": p.count, "remaining_cents": p.remaining_cents, "remaining_count": p.remaining_count, "expires_at_ms": p.expires_at_ms, "refunded": p.refunded, "refunded_cents": p.refunded_cents, "claims": claims, "best_luck": if p.has_best_luck { p.best_luck.as_ref().map(|b| b.grabber) } else { None }}));
            } else {
                println!("packet {} from user {} ({}) \"{}\"", p.packet_id, p.sender, p.kind().as_str_name(), p.greeting);
                println!("total {}  shares {}  left {} in {} shares{}", yuan(p.total_cents), p.count, yuan(p.remaining_cents), p.remaining_count, if p.refunded { format!("  refunded {}", yuan(p.refunded_cents)) } else { String::new() });
                let best = p.best_luck.as_ref().filter(|_| p.has_best_luck).map(|b| b.index);
                for c in &p.claims {
                    println!("  #{:<3} user {:<10} {:>10}{}", c.index + 1, c.grabber, yuan(c.amount_cents), if Some(c.index) == best { "  手氣最佳 best luck" } else { "" });
                }
            }
        }
    }
    Ok(())
}

async fn cluster(client: &Client, cmd: ClusterCmd, json: bool) -> anyhow::Result<i32> {
    match cmd {
        ClusterCmd::Status => {
            let s = client.status().await?;
            if json {
                let nodes: Vec<_> = s.nodes.iter().map(|n| serde_json::json!({"node": n.node, "region": n.region, "addr": n.addr, "up": n.up, "error": n.error, "shards": n.shards.iter().map(|sh| serde_json::json!({"shard": sh.shard, "role": sh.role().name(), "leader": sh.leader, "term": sh.term, "last_log_index": sh.last_log_index, "committed": sh.committed, "applied": sh.applied, "lag": sh.lag, "home_region": sh.home_region})).collect::<Vec<_>>()})).collect();
                let router = s.router.as_ref().map(|v| serde_json::json!({
                    "region": v.region,
                    "nodes": v.nodes.iter().map(|n| serde_json::json!({"node": n.node, "region": n.region, "up": n.up})).collect::<Vec<_>>(),
                    "regions": v.regions.iter().map(|r| serde_json::json!({"region": r.region, "up": r.up})).collect::<Vec<_>>(),
                    "leaders": v.leaders.iter().map(|l| serde_json::json!({"shard": l.shard, "node": l.node})).collect::<Vec<_>>(),
                }));
                print_json(&serde_json::json!({"nodes": nodes, "regions": s.regions.iter().map(|r| serde_json::json!({"region": r.region, "up": r.up, "drained": r.drained})).collect::<Vec<_>>(), "router": router}));
            } else {
                println!("{:<5} {:<10} {:<6} {:<6} {:<10} {:<7} {:<6} {:>9} {:>9} {:>6}", "node", "region", "up", "shard", "role", "leader", "term", "committed", "applied", "lag");
                for n in &s.nodes {
                    if n.shards.is_empty() {
                        println!("{:<5} {:<10} {:<6} {}", n.node, n.region, n.up, n.error);
                    }
                    for sh in &n.shards {
                        println!("{:<5} {:<10} {:<6} {:<6} {:<10} {:<7} {:<6} {:>9} {:>9} {:>6}", n.node, n.region, n.up, sh.shard, sh.role().name(), sh.leader, sh.term, sh.committed, sh.applied, sh.lag);
                    }
                }
                for r in &s.regions {
                    println!("region {:<10} {}{}", r.region, if r.up { "up" } else { "DOWN" }, if r.drained { " (drained)" } else { "" });
                }
                if let Some(v) = &s.router {
                    let nodes: Vec<String> = v.nodes.iter().map(|n| format!("{} {}", n.node, if n.up { "up" } else { "DOWN" })).collect();
                    let leaders: Vec<String> = v.leaders.iter().map(|l| format!("shard {} -> node {}", l.shard, l.node)).collect();
                    let regions: Vec<String> = v.regions.iter().map(|r| format!("{} {}", r.region, if r.up { "up" } else { "DOWN" })).collect();
                    println!("router {} sees: nodes {}; regions {}; routes {}", v.region, nodes.join(", "), regions.join(", "), leaders.join(", "));
                }
            }
            Ok(0)
        }
        ClusterCmd::WaitReady => {
            let s = client.status().await?;
            let shards: std::collections::BTreeSet<u32> = s.nodes.iter().flat_map(|n| n.shards.iter().map(|x| x.shard)).collect();
            let ready = !shards.is_empty() && shards.iter().all(|sh| s.leader_of(*sh).is_some());
            println!("{}", if ready { "ready" } else { "not ready" });
            Ok(if ready { 0 } else { 1 })
        }
        ClusterCmd::Audit => {
            let a = client.audit().await?;
            if json {
                print_json(&serde_json::json!({"balanced": a.balanced, "problems": a.problems, "total_topups_cents": a.total_topups_cents, "total_withdrawals_cents": a.total_withdrawals_cents, "total_balances_cents": a.total_balances_cents, "total_escrow_cents": a.total_escrow_cents, "total_in_flight_cents": a.total_in_flight_cents, "total_fees_cents": a.total_fees_cents, "shards": a.shards.iter().map(|s| serde_json::json!({"shard": s.shard, "balances_cents": s.balances_cents, "escrow_cents": s.escrow_cents, "outbox_pending_cents": s.outbox_pending_cents, "fees_cents": s.fees_cents, "topups_cents": s.topups_cents, "withdrawals_cents": s.withdrawals_cents, "credits_in_cents": s.credits_in_cents, "credits_out_delivered_cents": s.credits_out_delivered_cents, "identity_holds": s.identity_holds})).collect::<Vec<_>>()}));
            } else {
                println!("{:<6} {:>14} {:>12} {:>12} {:>10} {:>14} {:>14} {:>12} {:>12}  ok", "shard", "balances", "escrow", "outbox", "fees", "top-ups", "withdrawals", "credits in", "credits out");
                for s in &a.shards {
                    println!("{:<6} {:>14} {:>12} {:>12} {:>10} {:>14} {:>14} {:>12} {:>12}  {}", s.shard, yuan(s.balances_cents), yuan(s.escrow_cents), yuan(s.outbox_pending_cents), yuan(s.fees_cents), yuan(s.topups_cents), yuan(s.withdrawals_cents), yuan(s.credits_in_cents), yuan(s.credits_out_delivered_cents), s.identity_holds);
                }
                println!("total: balances {} + escrow {} + in flight {} + fees {} vs top-ups {} - withdrawals {}", yuan(a.total_balances_cents), yuan(a.total_escrow_cents), yuan(a.total_in_flight_cents), yuan(a.total_fees_cents), yuan(a.total_topups_cents), yuan(a.total_withdrawals_cents));
                for p in &a.problems {
                    println!("PROBLEM: {p}");
                }
                println!("{}", if a.balanced { "BALANCED" } else { "NOT BALANCED" });
            }
            Ok(if a.balanced { 0 } else { 1 })
        }
        ClusterCmd::Drain { region } => {
            let r = client.drain(&region).await?;
            for m in r.moved { println!("{m}"); }
            Ok(0)
        }
        ClusterCmd::Undrain { region } => {
            let r = client.undrain(&region).await?;
            for m in r.moved { println!("{m}"); }
            Ok(0)
        }
        ClusterCmd::TransferLeader { shard, node } => {
            client.transfer_leader(shard, node).await?;
            println!("leadership of shard {shard} handed to node {node}");
            Ok(0)
        }
        ClusterCmd::Faults { addr, cut_off, delay_ms, delay_to, drop_percent, clock_offset_ms } => {
            let f = hongbao_proto::v1::Faults { cut_off, delay_ms, delay_to, drop_percent, clock_offset_ms };
            let r = client.set_faults_of(&addr, f).await?;
            println!("node {}: faults now {:?}", r.node, r.faults.unwrap_or_default());
            Ok(0)
        }
    }
}
