//! The metrics an on-call engineer reads (#15): the Grafana dashboard in
//! `deploy/grafana/hongbao.json` charts only what a running cluster exports. Every metric any
//! panel's query names is scraped from every node and router of the kind that serves it, after a
//! little traffic through each router (a packet, a cross-shard grab, a refused second grab, an
//! unknown user), and a few values are checked against what the cluster answered.
//!
//! Who may read them (#28, `hongbao_telemetry::http`): plain HTTP on loopback; on any other
//! address a node or router refuses to start without TLS and a credential file, and with them a
//! request without the bearer token is answered 401.

use hongbao_client::new_request_id;
use hongbao_proto::ErrorCode;
use hongbao_tests::scrape::{self, Scraper};
use hongbao_tests::{bin, eventually, poll, repo_root, Cluster, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);

fn dashboard() -> serde_json::Value {
    let path = repo_root().join("deploy/grafana/hongbao.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every target's `expr` of every panel (rows' nested panels too), with its panel's title.
fn queries(d: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = vec![];
    walk(&d["panels"], &mut out);
    out
}

/// PromQL words that are never metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    // Aggregations (they may be followed by `by (...)` before their parenthesis).
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a list of labels in parentheses.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression selects: identifiers outside label matchers `{...}`,
/// ranges `[...]`, strings and label lists, that are neither keywords nor functions (followed by
/// `(`). A histogram's series are named as exported (`x_bucket`), so they are looked up as they are.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let (mut i, mut out) = (0, vec![]);
    let skip_to = |i: &mut usize, close: u8| {
        while *i < b.len() && b[*i] != close {
            if b[*i] == b'"' {
                *i += 1;
                while *i < b.len() && b[*i] != b'"' {
                    *i += if b[*i] == b'\\' { 2 } else { 1 };
                }
            }
            *i += 1;
        }
        *i += 1;
    };
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            skip_to(&mut i, b'}');
        } else if c == b'[' {
            skip_to(&mut i, b']');
        } else if c == b'"' {
            i += 1;
            skip_to(&mut i, b'"');
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let j = next_non_space(i);
            let call = b.get(j) == Some(&b'(');
            if LABEL_LISTS.contains(&word) {
                if call {
                    i = j + 1;
                    skip_to(&mut i, b')');
                }
            } else if !KEYWORDS.contains(&word) && !call {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn metric_names_are_read_from_promql_as_a_dashboard_writes_it() {
    let names = |e: &str| metric_names(e);
    assert_eq!(
        names(r#"sum by (method) (rate(hongbao_rpc_requests_total{code!="OK"}[$__rate_interval]))"#),
        ["hongbao_rpc_requests_total"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le, method) (rate(hongbao_rpc_seconds_bucket[5m])))"),
        ["hongbao_rpc_seconds_bucket"]
    );
    assert_eq!(names("max by (shard) (hongbao_shard_escrow_cents) / 100"), ["hongbao_shard_escrow_cents"]);
    assert_eq!(
        names("hongbao_shard_commit_index - hongbao_shard_applied_index"),
        ["hongbao_shard_commit_index", "hongbao_shard_applied_index"]
    );
    assert_eq!(
        names(r#"a * on(instance, shard) group_left(role) b{role="leader", x="a{b}"} offset 5m"#),
        ["a", "b"],
        "label lists, matchers with braces in strings, offsets"
    );
    assert_eq!(names(r#"sum without(cf)(process_open_fds)"#), ["process_open_fds"]);
}

/// The panels' metric names, each with a query that names it.
fn dashboard_metrics() -> BTreeMap<String, String> {
    let d = dashboard();
    assert_eq!(d["uid"].as_str(), Some("hongbao-overview"));
    let qs = queries(&d);
    assert!(qs.len() >= 30, "the dashboard has {} queries", qs.len());
    let mut out = BTreeMap::new();
    for (title, expr) in qs {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "panel {title:?}: no metric in {expr:?}");
        for n in names {
            out.entry(n).or_insert(expr.clone());
        }
    }
    out
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    let mut ids = BTreeSet::new();
    fn each(panels: &serde_json::Value, f: &mut dyn FnMut(&serde_json::Value)) {
        for p in panels.as_array().into_iter().flatten() {
            f(p);
            each(&p["panels"], f);
        }
    }
    each(&d["panels"], &mut |p| {
        assert!(ids.insert(p["id"].as_u64().expect("every panel has an id")), "panel id {} twice", p["id"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}: the dashboard's datasource variable", p["title"]);
            assert!(p["gridPos"]["w"].as_u64().unwrap() + p["gridPos"]["x"].as_u64().unwrap() <= 24, "panel {}", p["title"]);
        }
    });
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
}

/// One scraped page: series names and the names described by a HELP line.
struct Page {
    series: BTreeSet<String>,
    described: BTreeSet<String>,
    text: String,
}

impl Page {
    fn parse(text: String) -> Page {
        let mut series = BTreeSet::new();
        let mut described = BTreeSet::new();
        for l in text.lines() {
            if let Some(help) = l.strip_prefix("# HELP ") {
                described.insert(help.split(' ').next().unwrap_or_default().to_string());
            } else if !l.starts_with('#') && !l.is_empty() {
                series.insert(l.split(['{', ' ']).next().unwrap_or_default().to_string());
            }
        }
        Page { series, described, text }
    }

    /// The sum of every series named `name` whose labels include all of `labels` (`k="v"`).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A histogram's or summary's name as described (`x` for `x_bucket`, `x_sum`, `x_count`).
fn described_as(name: &str, page: &Page) -> bool {
    page.described.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s).is_some_and(|base| page.described.contains(base)))
}

/// Which processes must export a metric: a router's (`hongbao_router_*`), a process's own
/// (`process_*`: all), else a node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Router,
}

fn exported_by(name: &str, kind: Kind) -> bool {
    if name.starts_with("process_") {
        return true;
    }
    (kind == Kind::Router) == name.starts_with("hongbao_router_")
}

/// Node metrics only a shard's leader records (what it proposed): on some node, not every one.
const LEADER_ONLY: &[&str] = &["hongbao_commit_seconds_bucket"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported_by_a_running_cluster() {
    let wanted = dashboard_metrics();
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;

    // Through each router: a packet on shard 1, a grab from shard 2 (the share crosses shards by
    // the relay), the same grab again (ALREADY_GRABBED), a balance of a user with no wallet.
    let mut escrow_left = 0u64;
    for (i, r) in (0u64..).zip(&c.topology.routers) {
        let client = c.router_client(&r.region);
        let sender = c.topology.user_in_shard(1, 2_000 + 100 * i);
        let grabber = c.topology.user_in_shard(2, 3_000 + 100 * i);
        let p = c.packet_to_grab(&client, sender, grabber, 1_000, 300).await;
        let g = client.grab(new_request_id(), p, grabber, "").await.unwrap();
        escrow_left += g.remaining_cents;
        let again = client.grab(new_request_id(), p, grabber, "").await.expect_err("a second grab is refused");
        assert_eq!(again.code(), ErrorCode::AlreadyGrabbed);
        let nobody = c.topology.user_in_shard(3, 9_000 + i);
        assert_eq!(client.balance(nobody).await.expect_err("no wallet").code(), ErrorCode::UnknownUser);
    }
    c.node_client().status().await.unwrap();

    // Gauges are sampled every second, the process every two: scrape until all are there.
    let mut pages: Vec<(String, Kind, Page)> = vec![];
    let mut missing: Vec<String>;
    let all_there = eventually!(Duration::from_secs(20), {
        pages = vec![];
        for n in &c.topology.nodes {
            let page = c.scraper().metrics(&n.metrics_addr).await.unwrap_or_else(|| panic!("node {} serves no metrics", n.id));
            pages.push((format!("node {}", n.id), Kind::Node, Page::parse(page)));
        }
        for r in &c.topology.routers {
            let addr = r.metrics_addr.clone().expect("test topologies give routers a metrics port");
            let page = c.scraper().metrics(&addr).await.unwrap_or_else(|| panic!("router {} serves no metrics", r.region));
            pages.push((format!("router {}", r.region), Kind::Router, Page::parse(page)));
        }
        missing = vec![];
        for (name, expr) in &wanted {
            let of_kind: Vec<_> = pages.iter().filter(|(_, k, _)| exported_by(name, *k)).collect();
            assert!(!of_kind.is_empty());
            let without: Vec<&str> = of_kind.iter().filter(|(_, _, p)| !p.series.contains(name)).map(|(w, _, _)| w.as_str()).collect();
            let absent = if LEADER_ONLY.contains(&name.as_str()) { without.len() == of_kind.len() } else { !without.is_empty() };
            if absent {
                missing.push(format!("{name} (queried by {expr:?}) not exported by {without:?}"));
            }
            for (who, _, p) in &of_kind {
                if p.series.contains(name) && !described_as(name, p) {
                    missing.push(format!("{name}: no HELP line on {who}"));
                }
            }
        }
        let escrow = pages.iter().map(|(_, _, p)| p.sum("hongbao_shard_escrow_cents", &[r#"shard="1""#]) as u64).max().unwrap_or(0);
        if escrow != escrow_left {
            missing.push(format!("shard 1's escrow is {escrow} cents, the packets hold {escrow_left}"));
        }
        // Each shard has one leader, and every replica knows which.
        for s in &c.topology.shards {
            let shard = format!("shard=\"{}\"", s.id);
            let nodes = pages.iter().filter(|(_, k, _)| *k == Kind::Node);
            let leading = nodes.clone().map(|(_, _, p)| p.sum("hongbao_shard_role", &[&shard, r#"role="leader""#])).sum::<f64>();
            let leaders: BTreeSet<u64> = nodes.map(|(_, _, p)| p.sum("hongbao_shard_leader", &[&shard]) as u64).collect();
            if leading != 1.0 || leaders.len() != 1 || leaders.contains(&0) {
                missing.push(format!("shard {}: {leading} replicas lead, the replicas name {leaders:?}", s.id));
            }
        }
        for (who, _, p) in &pages {
            if p.sum("process_resident_memory_bytes", &[]) < 1e6 || p.sum("process_cpu_seconds_total", &[]) <= 0.0 {
                missing.push(format!("{who}: no CPU time or memory sampled yet"));
            }
        }
        // The relay delivers every share: nothing stays in flight, no backlog.
        for (who, _, p) in &pages {
            for name in ["hongbao_relay_backlog_records", "hongbao_shard_in_flight_cents"] {
                if p.sum(name, &[]) != 0.0 {
                    missing.push(format!("{who}: {name} is {}", p.sum(name, &[])));
                }
            }
        }
        missing.is_empty()
    });
    assert!(all_there, "{} problems:\n{}", missing.len(), missing.join("\n"));

    // The RED counters count what the clients saw, by method and code.
    let routers: Vec<&Page> = pages.iter().filter(|(_, k, _)| *k == Kind::Router).map(|(_, _, p)| p).collect();
    let nodes: Vec<&Page> = pages.iter().filter(|(_, k, _)| *k == Kind::Node).map(|(_, _, p)| p).collect();
    let on = |ps: &[&Page], name: &str, labels: &[&str]| ps.iter().map(|p| p.sum(name, labels)).sum::<f64>();
    let grab = r#"method="hongbao.v1.Packets/Grab""#;
    assert_eq!(on(&routers, "hongbao_router_rpc_requests_total", &[grab, r#"code="OK""#]), 3.0);
    assert_eq!(on(&routers, "hongbao_router_rpc_requests_total", &[grab, r#"code="ALREADY_GRABBED""#]), 3.0);
    assert_eq!(
        on(&routers, "hongbao_router_rpc_requests_total", &[r#"method="hongbao.v1.Wallet/Balance""#, r#"code="UNKNOWN_USER""#]),
        3.0
    );
    assert_eq!(on(&routers, "hongbao_router_rpc_seconds_count", &[grab]), 6.0);
    assert_eq!(on(&routers, "hongbao_router_rpc_seconds_bucket", &[grab, r#"le="+Inf""#]), 6.0);
    // Every router's grabs went to the nodes as coalesced calls; every second grab was refused there.
    let coalesced = r#"method="hongbao.v1.Coalesced/Grabs""#;
    assert!(on(&nodes, "hongbao_rpc_requests_total", &[coalesced]) >= 3.0, "grabs reach the nodes coalesced");
    assert!(on(&nodes, "hongbao_rpc_requests_total", &[r#"method="hongbao.v1.RaftTransport/Append""#, r#"code="OK""#]) > 0.0);
    assert!(on(&nodes, "hongbao_rpc_requests_total", &[r#"method="hongbao.v1.Cluster/Status""#, r#"code="OK""#]) >= 1.0);
}

/// A free port on `ip` (released at once: the process about to start binds it).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).expect("bind an ephemeral port").local_addr().expect("addr").port()
}

/// A process this test started itself, killed when the test ends (also on a failed assert).
struct Extra(Child);

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` until it exits (at most 30 s); its exit status and stderr.
fn run_to_exit(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child = Extra(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the process"));
    let mut status = None;
    let exited = poll::until(Duration::from_secs(30), || {
        status = child.0.try_wait().expect("wait");
        status.is_some()
    });
    assert!(exited, "the process is still running after 30 s: it did not refuse to start");
    let status = status.expect("exited");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut err).expect("read stderr");
    (status, err)
}

/// A second Shanghai router on fresh ports (`--addr`, `--metrics-listen`), with `env`.
fn extra_router(c: &Cluster, grpc: u16, metrics: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(bin("hongbao-router"));
    cmd.arg("--topology")
        .arg(&c.topology_path)
        .args(["--region", "shanghai", "--addr", &format!("127.0.0.1:{grpc}"), "--metrics-listen", metrics])
        .arg("--security-dir")
        .arg(c.security_dir())
        .env_remove(scrape::TLS_ENV)
        .env_remove(scrape::CREDENTIAL_ENV)
        .env_remove(hongbao_tests::OTLP_ENDPOINT_ENV)
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_or_router_told_to_serve_metrics_off_loopback_without_tls_and_a_credential_refuses_to_start() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(READY).await;
    // The default: loopback, plain HTTP, no credential, as `curl -s 127.0.0.1:9101/metrics`.
    for n in &c.topology.nodes {
        assert!(Scraper::plain().metrics(&n.metrics_addr).await.is_some(), "node {} serves plain HTTP on loopback", n.id);
    }
    let token = c.dir.path().join("metrics.token");
    scrape::new_token_file(&token);
    let with_token = [(scrape::CREDENTIAL_ENV, token.display().to_string())];
    let with_tls = [(scrape::TLS_ENV, "1".to_string())];

    // A router on 0.0.0.0: without both, with the credential only, with TLS only.
    for (env, missing) in [
        (&[][..], "--metrics-tls and --metrics-credential-file FILE are not given"),
        (&with_token[..], "--metrics-tls is not given"),
        (&with_tls[..], "--metrics-credential-file FILE is not given"),
    ] {
        let (grpc, metrics) = (free_port("127.0.0.1"), format!("0.0.0.0:{}", free_port("0.0.0.0")));
        let (status, err) = tokio::task::block_in_place(|| run_to_exit(extra_router(&c, grpc, &metrics, env)));
        assert!(!status.success(), "the router started with its metrics on {metrics} and {env:?}");
        assert!(err.contains(&format!("refusing to serve metrics on {metrics} without TLS and a credential")), "{err}");
        assert!(err.contains(missing), "the error names what is missing ({missing}): {err}");
        // It refused before serving anything: its gRPC port never opened.
        assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err(), "the refused router's gRPC port {grpc} is open");
    }

    // A node on [::] (any IPv6 address) without either: refused before it opens its data directory.
    let data = c.dir.path().join("never-opened");
    let mut node = Command::new(bin("hongbao-node"));
    node.arg("--topology")
        .arg(&c.topology_path)
        .args(["--node-id", "1", "--listen", &format!("127.0.0.1:{}", free_port("127.0.0.1")), "--metrics-listen", "[::]:9"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--security-dir")
        .arg(c.security_dir())
        .env_remove(scrape::TLS_ENV)
        .env_remove(scrape::CREDENTIAL_ENV)
        .env_remove(hongbao_tests::OTLP_ENDPOINT_ENV);
    let (status, err) = tokio::task::block_in_place(|| run_to_exit(node));
    assert!(!status.success(), "the node started with its metrics on [::]:9");
    assert!(err.contains("refusing to serve metrics on [::]:9 without TLS and a credential"), "{err}");
    assert!(!data.exists(), "the refused node created its data directory {}", data.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_and_a_credential_a_scrape_without_the_bearer_token_is_401_and_with_it_200() {
    // Every node and router of this cluster serves its metrics over TLS with a token (allowed
    // on loopback too), so both binaries are exercised.
    let files = tempfile::tempdir().expect("temp dir");
    let token_file = files.path().join("metrics.token");
    let token = scrape::new_token_file(&token_file);
    let env = vec![(scrape::TLS_ENV, "1".to_string()), (scrape::CREDENTIAL_ENV, token_file.display().to_string())];
    let c = Cluster::start(Spec { routers: true, env: env.clone(), ..Spec::default() });
    c.wait_ready(READY).await;
    let tls = Scraper::tls(&c.security_dir().join("ca.crt"));
    let mut endpoints: Vec<(String, String)> =
        c.topology.nodes.iter().map(|n| (format!("node {}", n.id), n.metrics_addr.clone())).collect();
    endpoints.extend(c.topology.routers.iter().map(|r| (format!("router {}", r.region), r.metrics_addr.clone().expect("metrics_addr"))));

    // And a router bound to 0.0.0.0, which the same two settings allow.
    let (grpc, port) = (free_port("127.0.0.1"), free_port("0.0.0.0"));
    let _open = Extra(
        extra_router(&c, grpc, &format!("0.0.0.0:{port}"), &env)
            .stdout(Stdio::from(std::fs::File::create(c.dir.path().join("router-open.log")).expect("log")))
            .stderr(Stdio::from(std::fs::File::create(c.dir.path().join("router-open.err.log")).expect("log")))
            .spawn()
            .expect("start a router on 0.0.0.0"),
    );
    endpoints.push(("the router on 0.0.0.0".into(), format!("127.0.0.1:{port}")));

    for (who, addr) in &endpoints {
        // Up to 15 s for the extra router to start; the others are up already.
        let mut answer;
        let served = eventually!(Duration::from_secs(15), {
            answer = tls.clone().with_token(&token).get(addr, "/metrics").await;
            answer.as_ref().is_some_and(|a| a.status == 200)
        });
        assert!(served, "{who} at {addr}: no 200 with the token: {answer:?}");
        let ok = answer.expect("an answer");
        assert!(ok.body.contains("# HELP process_resident_memory_bytes"), "{who}: the metrics, with the token: {:.300}", ok.body);
        for (how, scraper) in [("no token", tls.clone()), ("a wrong token", tls.clone().with_token(&format!("{token}0")))] {
            let refused = scraper.get(addr, "/metrics").await.unwrap_or_else(|| panic!("{who}: no answer with {how}"));
            assert_eq!(refused.status, 401, "{who} with {how}: {refused:?}");
            assert!(!refused.body.contains("process_"), "{who} with {how}: the 401 carries no metric: {}", refused.body);
        }
        // Plain HTTP gets no HTTP answer from a TLS port.
        assert!(Scraper::plain().metrics(addr).await.is_none(), "{who}: plain HTTP answered on a TLS port");
    }
    // A router's status page sits behind the same token.
    let page = tls.clone().with_token(&token).get(&format!("127.0.0.1:{port}"), "/").await.expect("the page");
    assert!(page.status == 200 && page.body.contains("id=\"audit\""), "{page:?}");
    assert_eq!(tls.get(&format!("127.0.0.1:{port}"), "/").await.expect("an answer").status, 401);

    // The token is in no log line of any process.
    for entry in std::fs::read_dir(c.dir.path()).expect("cluster dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains(&token), "{} holds the metrics token", path.display());
        }
    }
}
