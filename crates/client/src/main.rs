//! `hongbao`: the command-line tool. Tables for people, `--json` for scripts.
//!
//! Exit status: 0 done; 1 refused or failed (the cluster's reason, or a local one); 75 outcome
//! unknown (re-send with `--request-id`); 2 usage. A failure prints `error: <what happened, in
//! words> (<CODE>)` on stderr; with `--json` it also prints one JSON object on stdout,
//! `{"error": {"code", "message", "exit_code", "outcome_unknown", "shard", "challenge_id",
//! "request_id"}}`, so a script reads one JSON document from stdout whatever happened and tells
//! which by the exit status (see `output::ErrorOut`).

mod demo;
mod output;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand};
use hongbao_client::credentials::{local_security_dir, SavedTokens};
use hongbao_client::money::{parse_yuan, yuan};
use hongbao_client::{membership, new_request_id, Client, ClientError, Credentials, PacketRef};
use hongbao_proto::v1::*;
use hongbao_topology::Topology;
use output::print_json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hongbao", about = "hongbao red packets and wallets: command-line client")]
struct Cli {
    /// Router (or node) gRPC address; repeat for failover, home region first.
    #[arg(long = "router", global = true)]
    routers: Vec<String>,
    /// Topology file; its routers (its nodes, if it has no routers) are the default endpoints.
    #[arg(long, global = true)]
    topology: Option<PathBuf>,
    /// Machine-readable output: one JSON document on stdout, errors included
    /// (`{"error": {"code": ..., "message": ...}}`, with the same exit status).
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a call after this many seconds (retries included).
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// Security folder (CA, role certificates, dev signing key); default: `security/` beside
    /// the topology file, or $HONGBAO_SECURITY_DIR.
    #[arg(long, global = true)]
    security_dir: Option<PathBuf>,
    /// Re-send an earlier request instead of making a new one: the 32 hex digits an
    /// "outcome unknown" answer printed. The cluster applies one id at most once, so re-sending
    /// it settles the outcome without paying twice.
    #[arg(long, global = true)]
    request_id: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Exit status when the outcome of a money-moving command is unknown (EX_TEMPFAIL): not a
/// failure, so a script must re-send with `--request-id`, never with a new id.
const EXIT_OUTCOME_UNKNOWN: i32 = 75;

/// One invocation makes at most one money-moving request; its id, new or given by --request-id.
static REQUEST_ID: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
/// Whether this invocation sent a request under `REQUEST_ID` (so an unknown outcome can be
/// settled by re-sending it).
static REQUEST_SENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn request_id() -> Vec<u8> {
    REQUEST_SENT.store(true, std::sync::atomic::Ordering::Relaxed);
    REQUEST_ID.get().expect("set in main").clone()
}

fn parse_request_id(hex_id: &str) -> anyhow::Result<Vec<u8>> {
    match hex::decode(hex_id) {
        Ok(b) if b.len() == 16 => Ok(b),
        _ => bail!("--request-id takes the 32 hex digits printed by an earlier call"),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Wallet accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Development convenience: mint a token for USER on DEVICE with the local cluster's dev
    /// signing key and save it; later commands acting for USER use it. A real deployment gets
    /// tokens from its login service.
    Login {
        user: u64,
        #[arg(long)]
        device: String,
        /// Token lifetime in minutes (at most 24 h).
        #[arg(long, default_value_t = 720)]
        minutes: u64,
    },
    /// Development convenience: create what is missing of a local security folder (a dev CA,
    /// certificates for every node, router and role of the topology, the dev token-signing key,
    /// the challenge key). `scripts/cluster up` runs it. Never for production: bring your own CA.
    /// It fills only a folder it created (marked `.dev-ca`) or a new or empty one, and refuses
    /// any other, changing nothing in it.
    DevCa,
    /// Move money from one wallet to another (possibly on another shard).
    Transfer {
        from: u64,
        to: u64,
        /// Yuan, e.g. 12.34
        amount: String,
        #[command(flatten)]
        pin: PinArg,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// The notifier service: delivers challenge codes from every shard's outbox to the users'
    /// devices (locally: appends them to a file), then acknowledges them.
    Notifier {
        /// Where delivered codes are written, one line each.
        #[arg(long)]
        out: PathBuf,
        /// Drain once and exit instead of running until killed.
        #[arg(long)]
        once: bool,
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
    /// Ask a node or router for its gRPC health (grpc.health.v1 Check) and exit 0 when it answers
    /// SERVING, 1 otherwise (NOT_SERVING, no answer within --timeout, or TLS refused). A probe for
    /// orchestrators: the container image's HEALTHCHECK runs `hongbao health` with no flags, which
    /// probes the process of its own container (see --addr and --as).
    Health {
        /// The address to probe. Default: 127.0.0.1 and the port of $HONGBAO_LISTEN (the socket
        /// the node or router of this container binds).
        #[arg(long, env = "HONGBAO_HEALTH_ADDR")]
        addr: Option<String>,
        /// The certificate to present, by its file stem in the security folder's certs/ (node-1,
        /// router-shanghai, admin, ...). Default: node-$HONGBAO_NODE_ID or router-$HONGBAO_REGION
        /// when set (the process's own certificate, the only one its container holds), else admin.
        #[arg(long = "as", env = "HONGBAO_HEALTH_AS")]
        identity: Option<String>,
        /// The service to ask about ("" is the whole process).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Print a shell completion script, e.g.
    /// `hongbao completions bash > ~/.local/share/bash-completion/completions/hongbao`,
    /// `hongbao completions zsh > ~/.zfunc/_hongbao`,
    /// `hongbao completions fish > ~/.config/fish/completions/hongbao.fish`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Clone)]
struct VerifyArgs {
    /// Challenge id from a CHALLENGE_REQUIRED answer.
    #[arg(long)]
    challenge: Option<u64>,
    /// The code delivered to the account's known device (locally: the notifier's file).
    #[arg(long)]
    code: Option<u32>,
}

#[derive(Args, Clone)]
struct PinArg {
    /// The payment PIN (6 digits). A real app collects it on the device; here also from
    /// $HONGBAO_PIN, so it stays out of the shell history.
    #[arg(long, env = "HONGBAO_PIN", hide_env_values = true)]
    pin: String,
}

impl VerifyArgs {
    fn get(&self) -> Option<Verification> {
        Some(Verification { challenge_id: self.challenge?, code: self.code.unwrap_or(0) })
    }
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Open USER's wallet on the device of USER's token (`hongbao login USER --device D`).
    Open {
        user: u64,
    },
    /// Set USER's payment PIN (once); needed to send, transfer and withdraw.
    /// A wallet that holds money needs --challenge and --code too (from the first try's answer
    /// and the known device).
    SetPin {
        user: u64,
        #[command(flatten)]
        pin: PinArg,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    Topup {
        user: u64,
        amount: String,
    },
    Withdraw {
        user: u64,
        amount: String,
        #[command(flatten)]
        pin: PinArg,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    Balance {
        user: u64,
    },
    /// Newest first, a page at a time (`--before` the seq a page ends with reads older ones).
    Statement {
        user: u64,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        before: u64,
    },
    /// Risk role: freeze / unfreeze, set the risk grade (normal, elevated, high).
    Risk {
        user: u64,
        #[arg(long)]
        freeze: bool,
        #[arg(long, default_value = "normal")]
        grade: String,
    },
    /// Voids every token of USER issued until now (a stolen session): as the risk role. The
    /// user signs in again for a new one.
    RevokeTokens {
        user: u64,
    },
}

#[derive(Subcommand)]
enum PacketCmd {
    /// Send a packet: exactly one of --lucky, --fixed, --exclusive, --password.
    Send(SendArgs),
    /// `packet` as `packet send` printed it: `<id>.<key>`.
    Grab {
        packet: PacketRef,
        user: u64,
        #[arg(long, default_value = "")]
        password: String,
    },
    /// `packet` as `<id>.<key>`; the admin role (the default) may give the id alone.
    Show {
        packet: PacketRef,
        /// Look as this signed-in user (default: as the admin role).
        #[arg(long = "as")]
        viewer: Option<u64>,
    },
    /// The packets a user sent (發出的紅包, default) or received (收到的紅包, --received), newest
    /// first, with this year's counts and totals.
    History {
        user: u64,
        #[arg(long)]
        received: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        before: u64,
    },
}

#[derive(Args)]
struct SendArgs {
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
    #[command(flatten)]
    pin: PinArg,
    #[command(flatten)]
    verify: VerifyArgs,
}

#[derive(Subcommand)]
enum ClusterCmd {
    Status,
    /// Exit 0 once every shard has a leader.
    WaitReady,
    /// Conservation over all shards; exit 1 on any mismatch.
    Audit,
    Drain {
        region: String,
    },
    Undrain {
        region: String,
    },
    TransferLeader {
        shard: u32,
        node: u64,
    },
    /// The cluster map in force: its version and its TOML (a topology file, as a node holds it).
    Map,
    /// Add a node to the map, then make it a replica of each of --shards in turn (each waits
    /// for the new replica to catch up). Start the node first.
    AddNode {
        #[command(flatten)]
        node: NewNode,
        /// Shards to give it a replica of, e.g. --shards 1,2,3 (none: only into the map).
        #[arg(long, value_delimiter = ',')]
        shards: Vec<u32>,
    },
    /// Add a shard: a new Raft group on --replicas (one per region, at least three), homed in
    /// --home, owning no slot yet. Waits for its first leader.
    AddShard {
        #[arg(long)]
        id: u32,
        #[arg(long)]
        home: String,
        /// Its replicas' node ids, e.g. --replicas 2,5,8.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
    },
    /// Move a slot's users (wallets, statements, daily limits, request history) to another
    /// shard, online: the slot is frozen for about a second; its users' requests meanwhile get
    /// a retryable SLOT_MOVING. Shows progress; safe to run again if interrupted.
    MoveSlot {
        slot: u32,
        #[arg(long)]
        to_shard: u32,
    },
    /// Propose slot moves from the requests each slot serves (sampled over --seconds): hot
    /// slots from the busiest shard to the idlest until they are within 20% of the mean load.
    /// --apply runs them (as move-slot does).
    Rebalance {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        max_moves: usize,
        #[arg(long)]
        apply: bool,
    },
    /// Take a node out of every shard it holds a replica of, then out of the map.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Move node --old's replicas to a new node, one shard at a time (the new one becomes a
    /// voter before the old one leaves), then take --old out of the map. Start the new node first.
    ReplaceNode {
        #[arg(long)]
        old: u64,
        /// The new node's id.
        #[arg(long)]
        new: u64,
        #[arg(long)]
        region: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        metrics_addr: String,
    },
    /// Chaos testing: replace the injected faults of the node at ADDR (no flags = clear them).
    /// Only nodes built with the `fault-injection` feature (scripts/chaos, the tests) have it.
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

/// A node joining the cluster (`cluster add-node`).
#[derive(Args)]
struct NewNode {
    #[arg(long)]
    id: u64,
    #[arg(long)]
    region: String,
    /// Its gRPC address (host:port), as the other nodes and the routers reach it.
    #[arg(long)]
    addr: String,
    /// Its Prometheus metrics address (host:port).
    #[arg(long)]
    metrics_addr: String,
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
    // Routers only: they follow leaders and fail over, so a client never needs the nodes (and a
    // node that hosts another shard could only say so). Nodes only in a router-less topology.
    if t.routers.is_empty() {
        return Ok(t.nodes.iter().map(|n| n.addr.clone()).collect());
    }
    Ok(t.routers.iter().map(|r| r.addr.clone()).collect())
}

/// Exit status of a refusal or failure.
const EXIT_FAILED: i32 = 1;
/// Exit status of a command line that does not parse (clap's own).
const EXIT_USAGE: i32 = 2;

/// Whether `--json` is among the arguments (before any `--`): for a command line that does not
/// parse, so its usage error can be JSON too.
fn json_requested() -> bool {
    std::env::args_os().take_while(|a| a != "--").any(|a| a == "--json")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are not errors (stdout, exit 0): clap prints them.
            if e.use_stderr() && json_requested() {
                // The error's lines up to the usage line, as one line.
                let rendered = e.render().to_string();
                let lines: Vec<&str> = rendered.lines().take_while(|l| !l.is_empty() && !l.starts_with("Usage:")).map(str::trim).collect();
                let message = lines.join(" ");
                let message = message.strip_prefix("error: ").unwrap_or(&message).to_string();
                print_json(&output::ErrorOut::usage(message, EXIT_USAGE));
            }
            e.exit()
        }
    };
    let id = match cli.request_id.as_deref().map(parse_request_id).transpose() {
        Ok(id) => id.unwrap_or_else(new_request_id),
        Err(e) => {
            eprintln!("error: {e:#}");
            if cli.json {
                print_json(&output::ErrorOut::usage(format!("{e:#}"), EXIT_USAGE));
            }
            std::process::exit(EXIT_USAGE);
        }
    };
    REQUEST_ID.set(id).expect("set once");
    let json = cli.json;
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => std::process::exit(report_failure(&e, json)),
    }
}

/// Tells why the command failed: the cluster's sentence and the code's name on stderr (and what
/// to do next), and with `--json` the same as one JSON object on stdout. Returns the exit status.
fn report_failure(e: &anyhow::Error, json: bool) -> i32 {
    let sent = REQUEST_SENT.load(std::sync::atomic::Ordering::Relaxed);
    let request_id = sent.then(|| hex::encode(REQUEST_ID.get().expect("set in main")));
    let Some(ce) = e.downcast_ref::<ClientError>() else {
        // Failed here, before or without an answer (bad input, a missing file).
        eprintln!("error: {e:#}");
        if json {
            print_json(&output::ErrorOut::local(format!("{e:#}"), EXIT_FAILED, request_id));
        }
        return EXIT_FAILED;
    };
    let code = hongbao_proto::reason(ce.code());
    let words = if ce.detail.message.is_empty() { code.to_lowercase().replace('_', " ") } else { ce.detail.message.clone() };
    // Never "failed" once a request went out without a definite answer: it may have been
    // applied, and a new id could pay twice.
    let unknown = sent && ce.outcome_unknown();
    let exit = if unknown { EXIT_OUTCOME_UNKNOWN } else { EXIT_FAILED };
    if unknown {
        let id = request_id.as_deref().unwrap_or_default();
        eprintln!("outcome unknown: {words} ({code})");
        eprintln!("the request may or may not have been applied; it has NOT failed.");
        eprintln!("settle it by re-sending the same command with: --request-id {id}");
    } else {
        eprintln!("error: {words} ({code})");
        if ce.code() == ErrorCode::RequestExpired {
            eprintln!("check the statement (hongbao account statement <user>) before sending anew without --request-id.");
        }
        if ce.detail.challenge_id != 0 {
            let id = ce.detail.challenge_id;
            eprintln!("challenge id: {id} — re-send with --challenge {id} --code <code from the known device>");
        }
    }
    if json {
        print_json(&output::ErrorOut::cluster(code, words, exit, unknown, &ce.detail, request_id));
    }
    exit
}

/// Where `hongbao login` keeps tokens: `tokens/` beside the security folder.
fn tokens_dir(security: &std::path::Path) -> PathBuf {
    security.parent().map(|p| p.join("tokens")).unwrap_or_else(|| PathBuf::from("tokens"))
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let security = cli.security_dir.clone().unwrap_or_else(|| local_security_dir(&topology_path(&cli.topology)));
    let json = cli.json;
    if let Cmd::Completions { shell } = &cli.cmd {
        use std::io::Write;
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "hongbao", &mut script);
        match std::io::stdout().write_all(&script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => return Ok(0),
        }
    }
    if let Cmd::Login { user, device, minutes } = &cli.cmd {
        return login(&security, *user, device, *minutes, json);
    }
    if let Cmd::Health { addr, identity, service } = &cli.cmd {
        return health(&security, addr.as_deref(), identity.as_deref(), service, Duration::from_secs(cli.timeout), json).await;
    }
    if let Cmd::DevCa = &cli.cmd {
        let t = Topology::load(&topology_path(&cli.topology)).map_err(anyhow::Error::msg)?;
        let folder = hongbao_auth::ensure_dev_pki(&hongbao_auth::SecurityDir::new(&security), &t)?;
        if folder == hongbao_auth::DevFolder::Adopted {
            eprintln!(
                "note: {} was made by an earlier `hongbao dev-ca` (its CA is the development CA and it holds the dev signing key); \
                 marked it as a dev-ca folder (.dev-ca)",
                security.display()
            );
        }
        if !t.development {
            eprintln!(
                "note: {} does not say `development = true`: its routers refuse tokens of the development key (`hongbao login`)",
                topology_path(&cli.topology).display()
            );
        }
        if json {
            print_json(&output::DevCa { security_dir: security.display().to_string() });
        } else {
            println!("development security folder ready: {}", security.display());
        }
        return Ok(0);
    }
    // The demo acts for many users at once: it mints their tokens with the dev key itself.
    let creds = match &cli.cmd {
        Cmd::Demo { .. } => Credentials::dev(&security)?,
        _ => Credentials::load(&security)?.with_tokens(std::sync::Arc::new(SavedTokens { dir: tokens_dir(&security) })),
    };
    let client = Client::new(endpoints(&cli)?, std::sync::Arc::new(creds)).with_deadline(Duration::from_secs(cli.timeout));
    match cli.cmd {
        Cmd::Login { .. } | Cmd::DevCa | Cmd::Health { .. } | Cmd::Completions { .. } => unreachable!("handled above"),
        Cmd::Account(a) => account(&client, a, json).await?,
        Cmd::Transfer { from, to, amount, pin, verify } => transfer(&client, from, to, &amount, pin.pin, verify, json).await?,
        Cmd::Packet(p) => packet(&client, p, json).await?,
        Cmd::Cluster(c) => return cluster(&client, c, json).await,
        Cmd::Notifier { out, once } => return notifier(&client, &topology_path(&cli.topology), &out, once).await,
        Cmd::Demo { kill_region, cluster_script } => {
            let topology = Topology::load(&topology_path(&cli.topology)).map_err(anyhow::Error::msg)?;
            return demo::run(&client, &topology, &cluster_script, kill_region.as_deref()).await;
        }
    }
    Ok(0)
}

/// `hongbao health`: one grpc.health.v1 Check, bounded by `timeout` (connect included).
async fn health(
    security: &std::path::Path,
    addr: Option<&str>,
    identity: Option<&str>,
    service: &str,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<i32> {
    use hongbao_auth::{Identity, Role, SecurityDir};
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let addr = match addr {
        Some(a) => a.to_string(),
        None => {
            let listen = env("HONGBAO_LISTEN").context("no --addr given and $HONGBAO_LISTEN is not set: nothing to probe")?;
            let port = listen.rsplit_once(':').map(|(_, p)| p).context("$HONGBAO_LISTEN is not HOST:PORT")?;
            format!("127.0.0.1:{port}")
        }
    };
    let stem = match identity {
        Some(s) => s.to_string(),
        None => match (env("HONGBAO_NODE_ID"), env("HONGBAO_REGION")) {
            (Some(n), _) => format!("node-{n}"),
            (None, Some(r)) => format!("router-{r}"),
            (None, None) => "admin".to_string(),
        },
    };
    let id = if let Some(n) = stem.strip_prefix("node-") {
        Identity::Node(n.parse().with_context(|| format!("--as {stem}: node-<id>"))?)
    } else if let Some(r) = stem.strip_prefix("router-") {
        Identity::Router(r.to_string())
    } else {
        Identity::Service(Role::parse(&stem).with_context(|| format!("--as {stem}: node-<id>, router-<region> or a role"))?)
    };
    let tls = SecurityDir::new(security).client_tls(&id)?;
    let check = async {
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?;
        let reply = HealthClient::new(ch).check(HealthCheckRequest { service: service.to_string() }).await?;
        anyhow::Ok(reply.into_inner().status())
    };
    let status = match tokio::time::timeout(timeout, check).await {
        Ok(Ok(s)) => s.as_str_name().to_string(),
        Ok(Err(e)) => format!("no answer: {e:#}"),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    let serving = status == ServingStatus::Serving.as_str_name();
    if json {
        print_json(&serde_json::json!({ "addr": addr, "service": service, "status": status, "serving": serving }));
    } else {
        println!("{addr} {:?}: {status}", service);
    }
    Ok(if serving { 0 } else { EXIT_FAILED })
}

fn login(security: &std::path::Path, user: u64, device: &str, minutes: u64, json: bool) -> anyhow::Result<i32> {
    let signer = hongbao_auth::DevSigner::load(&hongbao_auth::SecurityDir::new(security))
        .context("`hongbao login` mints with the local cluster's development key (scripts/cluster up makes it)")?;
    let ttl = (minutes * 60).clamp(60, hongbao_auth::MAX_TOKEN_TTL_S);
    let token = signer.mint(user, device, ttl);
    let dir = tokens_dir(security);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{user}.jwt"));
    write_private(&path, token.as_bytes())?;
    if json {
        print_json(&output::LoggedIn { user, device, minutes: ttl / 60, token_file: path.display().to_string() });
    } else {
        println!("user {user} signed in on device {device} for {} min (development token, minted with the local dev key)", ttl / 60);
        println!("saved to {}", path.display());
    }
    Ok(0)
}

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// Polls every shard's notification outbox, writes each code to `out` (the stand-in for a push
/// to the user's phone), then acknowledges what it wrote. Codes go to that file only, which is
/// readable by its owner only: it holds live codes.
async fn notifier(client: &Client, topology: &std::path::Path, out: &std::path::Path, once: bool) -> anyhow::Result<i32> {
    use std::io::Write;
    let t = Topology::load(topology).map_err(anyhow::Error::msg)?;
    let mut f = open_private_log(out)?;
    loop {
        for s in &t.shards {
            let polled = match client.poll_notifications(s.id, 0, 256).await {
                Ok(p) => p.notifications,
                Err(e) => {
                    tracing::warn!(shard = s.id, "notifier poll failed: {e}");
                    continue;
                }
            };
            let Some(last) = polled.last().map(|n| n.seq) else { continue };
            for n in &polled {
                writeln!(
                    f,
                    "user={} device={} challenge={} code={:06} operation={} amount={} counterparty={} expires_at_ms={}",
                    n.user,
                    n.device,
                    n.challenge_id,
                    n.code,
                    n.operation,
                    yuan(n.amount_cents),
                    n.counterparty,
                    n.expires_at_ms
                )?;
            }
            f.flush()?;
            f.sync_data()?;
            if let Err(e) = client.ack_notifications(s.id, last).await {
                tracing::warn!(shard = s.id, "notifier ack failed (the codes are re-sent next time): {e}");
            }
        }
        if once {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens `path` for appending, created 0600; an existing file anyone else may read (made by an
/// earlier version, 0644) is tightened to 0600 before a code is written to it.
fn open_private_log(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).with_context(|| format!("open {}", path.display()))?;
    let mode = f.metadata().with_context(|| format!("stat {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| {
            format!(
                "{} is readable by others (mode {:o}) and could not be made 0600; it holds live challenge codes",
                path.display(),
                mode & 0o777
            )
        })?;
        eprintln!("note: {} was readable by others (mode {:o}); made it 0600: it holds live challenge codes", path.display(), mode & 0o777);
    }
    Ok(f)
}

fn amount(yuan: &str) -> anyhow::Result<u64> {
    parse_yuan(yuan).map_err(anyhow::Error::msg)
}

// ---------------- wallet ----------------

async fn transfer(
    client: &Client,
    from: u64,
    to: u64,
    yuan_amount: &str,
    pin: String,
    verify: VerifyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let amount_cents = amount(yuan_amount)?;
    let req = TransferRequest {
        request_id: request_id(),
        from_user: from,
        to_user: to,
        amount_cents,
        pin,
        verification: verify.get(),
        ..Default::default()
    };
    let r = client.transfer(req).await?;
    if json {
        print_json(&output::Wallet::from(&r));
    } else {
        let in_flight = if r.credit_in_flight { " (credit to the receiver's shard in flight)" } else { "" };
        println!("transferred {yuan_amount} from {from} to {to}; balance of {from}: {}{in_flight}", yuan(r.balance_cents));
    }
    Ok(())
}

async fn account(client: &Client, cmd: AccountCmd, json: bool) -> anyhow::Result<()> {
    let r = match cmd {
        AccountCmd::Open { user } => client.open_account(user, "").await?,
        AccountCmd::SetPin { user, pin, verify } => client.set_pin_verified(request_id(), user, &pin.pin, verify.get()).await?,
        AccountCmd::Topup { user, amount: a } => client.top_up(request_id(), user, amount(&a)?).await?,
        AccountCmd::Withdraw { user, amount: a, pin, verify } => {
            let req = WithdrawRequest {
                request_id: request_id(),
                user,
                amount_cents: amount(&a)?,
                pin: pin.pin,
                verification: verify.get(),
                ..Default::default()
            };
            client.withdraw(req).await?
        }
        AccountCmd::Balance { user } => return balance(client, user, json).await,
        AccountCmd::Statement { user, limit, before } => return statement(client, user, limit, before, json).await,
        AccountCmd::RevokeTokens { user } => {
            let b = client.revoke_tokens(user).await?;
            if json {
                print_json(&output::Balance::from(&b));
            } else {
                println!("user {}: every token issued until now is revoked", b.user);
            }
            return Ok(());
        }
        AccountCmd::Risk { user, freeze, grade } => {
            let b = client.set_risk(user, freeze, &grade).await?;
            if json {
                print_json(&output::Balance::from(&b));
            } else {
                println!("user {} frozen={} grade={}", b.user, b.frozen, b.risk_grade);
            }
            return Ok(());
        }
    };
    if json {
        print_json(&output::Wallet::from(&r));
    } else {
        let fee = if r.fee_cents > 0 { format!("  fee {}", yuan(r.fee_cents)) } else { String::new() };
        println!("user {}  balance {}{}  (shard {})", r.user, yuan(r.balance_cents), fee, r.shard);
    }
    Ok(())
}

async fn balance(client: &Client, user: u64, json: bool) -> anyhow::Result<()> {
    let b = client.balance(user).await?;
    if json {
        print_json(&output::Balance::from(&b));
    } else {
        let frozen = if b.frozen { "  FROZEN" } else { "" };
        println!("user {}  balance {}  shard {}  grade {}{frozen}", b.user, yuan(b.balance_cents), b.shard, b.risk_grade);
    }
    Ok(())
}

async fn statement(client: &Client, user: u64, limit: u32, before: u64, json: bool) -> anyhow::Result<()> {
    let s = client.statement_page(user, limit, before).await?;
    if json {
        print_json(&s.entries.iter().map(output::StatementRow::from).collect::<Vec<_>>());
    } else {
        output::print_statement(&s.entries, s.next_before_seq);
    }
    Ok(())
}

// ---------------- packets ----------------

async fn packet(client: &Client, cmd: PacketCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PacketCmd::Send(a) => {
            let r = client.send_packet(send_request(a)?).await?;
            if json {
                print_json(&output::Sent::from(&r));
            } else {
                let p = PacketRef::from(&r);
                println!(
                    "packet {p} sent; expires at {}; sender balance {}",
                    hongbao_client::when::utc(r.expires_at_ms),
                    yuan(r.balance_cents)
                );
            }
        }
        PacketCmd::Grab { packet, user, password } => {
            let r = client.grab(request_id(), packet, user, &password).await?;
            if json {
                print_json(&output::Grabbed::from(&r));
            } else {
                let (share, left, left_yuan) = (r.index + 1, r.remaining_count, yuan(r.remaining_cents));
                let in_flight = if r.credit_in_flight { "; credit on its way to the wallet's shard" } else { "" };
                println!("user {user} grabbed {} (share #{share}); {left} shares / {left_yuan} left{in_flight}", yuan(r.amount_cents));
            }
        }
        PacketCmd::History { user, received, limit, before } => {
            let side = if received { PacketSide::Received } else { PacketSide::Sent };
            let r = client.packet_history(user, side, limit, before).await?;
            if json {
                print_json(&output::History::new(&r, if received { "received" } else { "sent" }));
            } else {
                output::print_history(&r, !received);
            }
        }
        PacketCmd::Show { packet, viewer } => {
            let p = client.show_packet_as(viewer, packet).await?;
            if json {
                print_json(&output::Packet::from(&p));
            } else {
                output::print_packet(&p);
            }
        }
    }
    Ok(())
}

/// The request for `packet send`: exactly one kind of packet.
fn send_request(a: SendArgs) -> anyhow::Result<SendPacketRequest> {
    let chosen = [&a.lucky, &a.fixed, &a.exclusive, &a.password].iter().filter(|x| x.is_some()).count();
    if chosen != 1 {
        bail!("give exactly one of --lucky, --fixed, --exclusive, --password");
    }
    let amt = |s: &Option<String>| s.as_deref().map(amount).transpose();
    let verification = a.verify.get();
    let mut req = SendPacketRequest {
        request_id: request_id(),
        sender: a.sender,
        count: a.count,
        greeting: a.greeting,
        pin: a.pin.pin,
        verification,
        ..Default::default()
    };
    if let Some(t) = amt(&a.lucky)? {
        req.kind = PacketKind::Lucky as i32;
        req.total_cents = t;
    } else if let Some(p) = amt(&a.fixed)? {
        req.kind = PacketKind::Fixed as i32;
        req.per_share_cents = p;
    } else if let Some(t) = amt(&a.exclusive)? {
        req.kind = PacketKind::Exclusive as i32;
        req.total_cents = t;
        req.count = 1;
        req.recipient = a.to.context("--exclusive needs --to USER")?;
    } else if let Some(t) = amt(&a.password)? {
        req.kind = PacketKind::Password as i32;
        req.total_cents = t;
        req.phrase = a.phrase;
    }
    Ok(req)
}

// ---------------- cluster ----------------

async fn cluster(client: &Client, cmd: ClusterCmd, json: bool) -> anyhow::Result<i32> {
    match cmd {
        ClusterCmd::Status => {
            let s = client.status().await?;
            if json {
                print_json(&output::Status::from(&s));
            } else {
                output::print_status(&s);
            }
            Ok(0)
        }
        ClusterCmd::WaitReady => wait_ready(client, json).await,
        ClusterCmd::Audit => {
            let a = client.audit().await?;
            if json {
                print_json(&hongbao_client::audit::Audit::from(&a));
            } else {
                output::print_audit(&a);
            }
            Ok(if a.balanced { 0 } else { 1 })
        }
        ClusterCmd::Drain { region } => {
            let r = client.drain(&region).await?;
            print_drain(&region, true, &r.moved, json);
            Ok(0)
        }
        ClusterCmd::Undrain { region } => {
            let r = client.undrain(&region).await?;
            print_drain(&region, false, &r.moved, json);
            Ok(0)
        }
        ClusterCmd::TransferLeader { shard, node } => {
            client.transfer_leader(shard, node).await?;
            if json {
                print_json(&output::LeaderHandedOver { shard, node });
            } else {
                println!("leadership of shard {shard} handed to node {node}");
            }
            Ok(0)
        }
        ClusterCmd::Map => {
            let m = client.get_map().await?;
            if json {
                print_json(&output::ClusterMap { version: m.version, toml: &m.toml });
            } else {
                // A TOML comment: the output is a topology file as it stands.
                println!("# cluster map version {}", m.version);
                print!("{}", m.toml);
                if !m.toml.ends_with('\n') {
                    println!();
                }
            }
            Ok(0)
        }
        ClusterCmd::AddNode { node, shards } => {
            let spec = NodeSpec { id: node.id, region: node.region, addr: node.addr, metrics_addr: node.metrics_addr };
            membership(client, membership::add_plan(spec, &shards), json).await
        }
        ClusterCmd::AddShard { id, home, replicas } => {
            membership(client, vec![membership::Step::AddShard { shard: id, home, replicas }], json).await
        }
        ClusterCmd::Rebalance { seconds, max_moves, apply } => rebalance(client, seconds, max_moves, apply, json).await,
        ClusterCmd::MoveSlot { slot, to_shard } => {
            let r =
                membership::move_slot(client, slot, to_shard, |line| if json { eprintln!("{line}") } else { println!("{line}") }).await?;
            if json {
                print_json(&output::SlotMoved { slot: r.slot, from_shard: r.from_shard, to_shard: r.to_shard, map_version: r.map_version });
            }
            Ok(0)
        }
        ClusterCmd::RemoveNode { id } => {
            let map = current_map(client).await?;
            membership(client, membership::remove_plan(&map, id), json).await
        }
        ClusterCmd::ReplaceNode { old, new, region, addr, metrics_addr } => {
            let map = current_map(client).await?;
            let spec = NodeSpec { id: new, region, addr, metrics_addr };
            membership(client, membership::replace_plan(&map, old, spec), json).await
        }
        ClusterCmd::Faults { addr, cut_off, delay_ms, delay_to, drop_percent, clock_offset_ms } => {
            let f = hongbao_proto::v1::Faults { cut_off, delay_ms, delay_to, drop_percent, clock_offset_ms };
            let r = client.set_faults_of(&addr, f).await?;
            let faults = r.faults.unwrap_or_default();
            if json {
                print_json(&output::FaultsNow::new(r.node, &faults));
            } else {
                println!("node {}: faults now {:?}", r.node, faults);
            }
            Ok(0)
        }
    }
}

/// The cluster map in force, read from the cluster (the shards a node holds come from it).
async fn current_map(client: &Client) -> anyhow::Result<Topology> {
    let m = client.get_map().await?;
    Topology::parse(&m.toml).map_err(|e| anyhow::anyhow!("the cluster map (version {}) does not parse: {e}", m.version))
}

/// Runs membership steps one at a time, a progress line each (and one per re-send): on stdout,
/// or with `--json` on stderr and then the steps done as one JSON document on stdout. A step
/// that fails ends the command with its error; the steps before it stay done, and running the
/// same command again continues (every step is idempotent).
async fn membership(client: &Client, steps: Vec<membership::Step>, json: bool) -> anyhow::Result<i32> {
    let done = membership::run(client, steps, |line| if json { eprintln!("{line}") } else { println!("{line}") }).await?;
    if json {
        print_json(&output::Membership::new(&done));
    }
    Ok(0)
}

/// `cluster rebalance`: samples the per-slot load twice, `seconds` apart, plans moves and, with
/// `apply`, runs them one by one.
async fn rebalance(client: &Client, seconds: u64, max_moves: usize, apply: bool, json: bool) -> anyhow::Result<i32> {
    use hongbao_client::rebalance;
    if !(1..=3600).contains(&seconds) || max_moves > 64 {
        anyhow::bail!("--seconds must be 1..=3600 and --max-moves at most 64");
    }
    let say = |line: &str| if json { eprintln!("{line}") } else { println!("{line}") };
    let first = client.slot_load().await?;
    say(&format!("sampling the load per slot for {seconds} s ..."));
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    let second = client.slot_load().await?;
    if !second.missing.is_empty() {
        say(&format!("nodes {:?} did not answer: their requests are not counted", second.missing));
    }
    let before: std::collections::BTreeMap<u32, u64> = first.slots.iter().map(|c| (c.slot, c.requests)).collect();
    let rates: std::collections::BTreeMap<u32, f64> = second
        .slots
        .iter()
        .map(|c| (c.slot, c.requests.saturating_sub(before.get(&c.slot).copied().unwrap_or(0)) as f64 / seconds as f64))
        .filter(|(_, r)| *r > 0.0)
        .collect();
    let map = current_map(client).await?;
    let loads = rebalance::shard_loads(&map, &rates);
    let moves = rebalance::plan(&map, &rates, max_moves, 0.2);
    if !json {
        for (shard, load) in &loads {
            println!("shard {shard}: {load:.1} requests/s");
        }
        if moves.is_empty() {
            println!("balanced: no move proposed");
        }
        for m in &moves {
            println!("move slot {} ({:.1} requests/s) from shard {} to shard {}", m.slot, m.rate, m.from_shard, m.to_shard);
        }
    }
    if apply {
        for m in &moves {
            membership::move_slot(client, m.slot, m.to_shard, say).await?;
        }
    }
    if json {
        let shards = loads.iter().map(|(shard, load)| output::ShardLoad { shard: *shard, requests_per_s: *load }).collect();
        print_json(&output::Rebalance { seconds, shards, moves, applied: apply });
    }
    Ok(0)
}

/// What `cluster drain` / `undrain` did: each leadership moved, then a summary line.
fn print_drain(region: &str, drained: bool, moved: &[String], json: bool) {
    if json {
        print_json(&output::Drained { region, drained, moved });
        return;
    }
    for m in moved {
        println!("{m}");
    }
    let what = if drained { "drained" } else { "undrained" };
    let plural = if moved.len() == 1 { "" } else { "s" };
    println!("region {region} {what}: {} shard leader{plural} moved", moved.len());
}

/// Exit 0 once every shard the status reports has a leader.
async fn wait_ready(client: &Client, json: bool) -> anyhow::Result<i32> {
    let s = client.status().await?;
    let shards: std::collections::BTreeSet<u32> = s.nodes.iter().flat_map(|n| n.shards.iter().map(|x| x.shard)).collect();
    let ready = !shards.is_empty() && shards.iter().all(|sh| s.leader_of(*sh).is_some());
    if json {
        print_json(&output::Ready { ready, shards: shards.len() });
    } else {
        println!("{}", if ready { "ready" } else { "not ready" });
    }
    Ok(if ready { 0 } else { 1 })
}
