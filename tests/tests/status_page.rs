//! The router's status page and tracing across hops (#15).
//!
//! - The page, loaded in headless Chromium (Debian's `chromium`, installed by scripts/env.sh
//!   `ensure_chromium`) from a surviving router while a whole region is killed: the region and
//!   its node show down and every shard it led is led, and served, elsewhere. Screenshots of the
//!   healthy and the failed-over cluster go to the cluster's folder, or to
//!   `$HONGBAO_STATUS_SCREENSHOTS` (docs/ keeps a pair: status-healthy.png, status-failover.png).
//! - The audit it shows is the one a background task of the router ran (every 10 s while the
//!   page is watched): a hundred loads start no audit of their own, counted by the router and
//!   by the nodes that answered (#28).
//! - A grab and a top-up sent with known sampled traceparents leave their trace ids in the
//!   router's and the nodes' logs; an unsampled one leaves none at the default log level. Without
//!   an OTLP endpoint no process runs an exporter.
//! - With `OTEL_EXPORTER_OTLP_ENDPOINT` set to a small in-process collector, the same calls are
//!   exported as spans of the client's trace by the router and by a node, the node's span a child
//!   of the router's; a clean stop flushes the exporter.

use hongbao_client::{new_request_id, Client, PacketRef};
use hongbao_tests::{eventually, poll, Cluster, Spec, OTLP_ENDPOINT_ENV};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chromium: `$HONGBAO_CHROMIUM` (scripts/env.sh sets it), else `chromium` on the PATH.
fn chromium() -> PathBuf {
    let p = std::env::var_os("HONGBAO_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("chromium"));
    let found = Command::new(&p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success());
    assert!(
        matches!(found, Ok(true)),
        "{} not found: run scripts/test, or `. scripts/env.sh && ensure_chromium` (Debian's chromium package)",
        p.display()
    );
    p
}

/// Runs headless Chromium on `url` with `args`, within 60 s; returns its stdout.
fn run_chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    if !poll::until(Duration::from_secs(60), || child.try_wait().expect("wait for chromium").is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish loading {url} within 60 s");
    }
    reader.join().expect("chromium's output")
}

/// The DOM of the page as Chromium built it.
fn dump_dom(profile: &Path, url: &str) -> String {
    run_chromium(profile, url, &["--dump-dom"])
}

fn screenshot(profile: &Path, url: &str, to: &Path) {
    run_chromium(profile, url, &[&format!("--screenshot={}", to.display()), "--window-size=1180,1120"]);
    let len = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    assert!(len > 10_000, "chromium wrote no screenshot of {url} to {} ({len} bytes)", to.display());
}

/// The value of attribute `name` of the first element whose opening tag contains `marker`
/// (e.g. `data-shard="1"`).
fn attr(dom: &str, marker: &str, name: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let open = dom[..at].rfind('<')?;
    let tag = &dom[open..open + dom[open..].find('>')?];
    let key = format!(" {name}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

/// Polls the page until `ok` holds for its DOM, or panics after `within` with the last DOM.
fn wait_for_page(profile: &Path, url: &str, within: Duration, what: &str, ok: impl Fn(&str) -> bool) -> (String, Duration) {
    let start = Instant::now();
    let mut dom = String::new();
    let shown = poll::until(within, || {
        dom = dump_dom(profile, url);
        ok(&dom)
    });
    assert!(shown, "the status page did not show {what} within {within:?}; last DOM:\n{dom}");
    (dom, start.elapsed())
}

/// Top-ups through the routers until stopped, each re-sent with its id until settled.
fn workload(client: Arc<Client>, users: Vec<u64>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let u = users[n as usize % users.len()];
            let rid = new_request_id();
            loop {
                match client.top_up(rid.clone(), u, 1).await {
                    Ok(_) => break,
                    Err(e) if e.outcome_unknown() => continue,
                    Err(e) => panic!("top-up of {u}: {e}"),
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_killed_region_down_and_its_shards_led_elsewhere() {
    let started = Instant::now();
    let mut c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    // Pictures for docs/: a longer run, so the chart shows a history and the failover in it.
    let for_docs = std::env::var_os("HONGBAO_STATUS_SCREENSHOTS").map(PathBuf::from);
    let pause = if for_docs.is_some() { Duration::from_secs(40) } else { Duration::ZERO };
    let shots = for_docs.unwrap_or_else(|| c.dir.path().to_path_buf());
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let profile = c.dir.path().join("chromium-profile");
    // The page of the Shanghai router, which survives.
    let metrics_addr = c.topology.routers.iter().find(|r| r.region == "shanghai").and_then(|r| r.metrics_addr.clone()).unwrap();
    let url = format!("http://{metrics_addr}/");

    // Traffic through the routers for the chart: one user per shard.
    let client = Arc::new(c.router_client("shanghai").with_deadline(Duration::from_secs(10)));
    let mut users = vec![];
    for s in &c.topology.shards {
        let u = c.topology.user_in_shard(s.id, 800);
        client.open_account(u, "phone").await.unwrap();
        users.push(u);
    }
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let load = workload(client.clone(), users, stop.clone(), done.clone());

    // Healthy: every region up, every shard led at home, an audit balanced.
    let url_ = url.clone();
    let profile_ = profile.clone();
    let (dom, took) = tokio::task::spawn_blocking(move || {
        wait_for_page(&profile_, &url_, Duration::from_secs(30), "a healthy cluster with a balanced audit and traffic", |dom| {
            ["shenzhen", "shanghai", "tianjin"].iter().all(|r| dom.contains(&format!("data-region=\"{r}\" data-up=\"true\"")))
                && (1..=3).all(|s| {
                    attr(dom, &format!("data-shard=\"{s}\""), "data-leader-region")
                        == attr(dom, &format!("data-shard=\"{s}\""), "data-home")
                })
                && attr(dom, "id=\"audit\"", "data-audit").as_deref() == Some("balanced")
                && attr(dom, "data-chart=\"ops\"", "data-max").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) > 0.0
        })
    })
    .await
    .unwrap();
    println!("healthy page after {took:?}");
    assert!(dom.contains("data-traffic-region=\"shenzhen\" data-router-up=\"true\" data-entry=\"shenzhen\""), "{dom}");
    assert!(!dom.contains("data-up=\"false\""), "nothing is down yet: {dom}");
    tokio::time::sleep(pause).await;
    let (u, p) = (url.clone(), profile.clone());
    let healthy_png = shots.join("status-healthy.png");
    let shot = healthy_png.clone();
    tokio::task::spawn_blocking(move || screenshot(&p, &u, &shot)).await.unwrap();

    // Shenzhen is lost: its node (leader of shard 1, its home) and its router, kill -9.
    let shenzhen_node = c.nodes_in("shenzhen")[0];
    assert_eq!(attr(&dom, "data-shard=\"1\"", "data-leader").as_deref(), Some(shenzhen_node.to_string().as_str()));
    let killed = Instant::now();
    let killed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    c.kill_region("shenzhen");
    let (u, p) = (url.clone(), profile.clone());
    let (dom, took) = tokio::task::spawn_blocking(move || {
        wait_for_page(&p, &u, Duration::from_secs(30), "shenzhen down and shard 1 led elsewhere", |dom| {
            // The other routers are checked every 2 s in the background: wait for that too.
            dom.contains("data-region=\"shenzhen\" data-up=\"false\"")
                && matches!(attr(dom, "data-shard=\"1\"", "data-leader-region").as_deref(), Some("shanghai" | "tianjin"))
                && dom.contains("data-traffic-region=\"shenzhen\" data-router-up=\"false\"")
        })
    })
    .await
    .unwrap();
    println!("page shows the failover {:?} after the kill (polled for {took:?})", killed.elapsed());
    assert!(dom.contains(&format!("data-node=\"{shenzhen_node}\" data-up=\"false\"")), "{dom}");
    for s in 1..=3 {
        let region = attr(&dom, &format!("data-shard=\"{s}\""), "data-leader-region").unwrap_or_default();
        assert!(region == "shanghai" || region == "tianjin", "shard {s} led in {region:?} after shenzhen was lost: {dom}");
        let replica = format!("data-replica=\"{shenzhen_node}\" data-up=\"false\"");
        let row = &dom[dom.find(&format!("data-shard=\"{s}\"")).unwrap()..];
        assert!(row[..row.find("</tr>").unwrap()].contains(&replica), "shard {s}: its shenzhen replica shown down: {dom}");
    }
    for r in ["shanghai", "tianjin"] {
        assert!(dom.contains(&format!("data-region=\"{r}\" data-up=\"true\"")), "{r} still up: {dom}");
    }
    // Shenzhen's clients enter at the next router; its shard is served in another region.
    assert!(dom.contains("data-traffic-region=\"shenzhen\" data-router-up=\"false\" data-entry=\"shanghai\""), "{dom}");
    let served = attr(&dom, "data-home-shard=\"1\"", "data-served-region").unwrap_or_default();
    assert!(served == "shanghai" || served == "tianjin", "shard 1 served in {served:?}: {dom}");

    // Money still adds up, audited after the kill, while the workload goes on.
    let (u, p) = (url.clone(), profile.clone());
    let (dom, _) = tokio::task::spawn_blocking(move || {
        wait_for_page(&p, &u, Duration::from_secs(40), "a balanced audit run after the kill", |dom| {
            attr(dom, "id=\"audit\"", "data-audit").as_deref() == Some("balanced")
                && attr(dom, "id=\"audit\"", "data-audit-at-ms").and_then(|a| a.parse::<u128>().ok()).unwrap_or(0) > killed_ms
                && dom.contains("data-region=\"shenzhen\" data-up=\"false\"")
        })
    })
    .await
    .unwrap();
    assert!(attr(&dom, "data-chart=\"ops\"", "data-max").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) > 0.0, "{dom}");
    tokio::time::sleep(pause / 2).await;
    let (u, p) = (url.clone(), profile.clone());
    let failover_png = shots.join("status-failover.png");
    let shot = failover_png.clone();
    tokio::task::spawn_blocking(move || screenshot(&p, &u, &shot)).await.unwrap();

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    println!(
        "{} top-ups during the test; screenshots {} and {}; {:?} in all",
        done.load(Ordering::Relaxed),
        healthy_png.display(),
        failover_png.display(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_the_status_page_many_times_runs_no_audit_per_visit() {
    const AUDITS: &str = "hongbao_router_status_audits_total";
    const AUDIT_CALL: &str = "method=\"hongbao.v1.Cluster/Audit\"";
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let page = c.topology.routers.iter().find(|r| r.region == "shanghai").and_then(|r| r.metrics_addr.clone()).unwrap();
    // Audits reaching the nodes, from any caller: only the page's task runs one in this test.
    async fn node_audits(c: &Cluster) -> f64 {
        let mut sum = 0.0;
        for n in &c.topology.nodes {
            sum += c.metric(&n.metrics_addr, "hongbao_rpc_requests_total", AUDIT_CALL).await.expect("metrics");
        }
        sum
    }
    // Nobody has looked at the page yet: no audit at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.metric(&page, AUDITS, "").await.expect("metrics"), 0.0, "audits before any visit");
    assert_eq!(node_audits(&c).await, 0.0, "audits reached the nodes before any visit");

    // A hundred loads, four at a time, then loads until the page shows a verdict.
    let first = Instant::now();
    let mut loads = 0u32;
    let mut slowest = Duration::ZERO;
    for _ in 0..25 {
        let batch = (0..4).map(|_| async {
            let t = Instant::now();
            let a = c.scraper().get(&page, "/").await.expect("the page answers");
            (a, t.elapsed())
        });
        for (a, took) in futures::future::join_all(batch).await {
            assert_eq!(a.status, 200, "{a:?}");
            assert!(a.body.contains("id=\"audit\""), "the page has its audit paragraph: {:.300}", a.body);
            slowest = slowest.max(took);
            loads += 1;
        }
    }
    // Loads every 250 ms until the page shows a balanced verdict, then until it shows the next
    // one: the task's refresh, about AUDIT_EVERY (10 s) later.
    let audit_at = |body: &str| attr(body, "id=\"audit\"", "data-audit-at-ms").and_then(|a| a.parse::<u128>().ok());
    let mut shown: Option<u128> = None;
    let mut body;
    let refreshed = eventually!(Duration::from_secs(30).saturating_sub(first.elapsed()), {
        let a = c.scraper().get(&page, "/").await.expect("the page answers");
        assert_eq!(a.status, 200, "{a:?}");
        loads += 1;
        let balanced = attr(&a.body, "id=\"audit\"", "data-audit").as_deref() == Some("balanced");
        let mut next = false;
        match (shown, audit_at(&a.body)) {
            (None, Some(at)) if balanced => shown = Some(at),
            (Some(first_at), Some(at)) if balanced && at != first_at => {
                assert!(at >= first_at + 9_000, "the audit was refreshed {} ms after the one before", at - first_at);
                next = true;
            }
            _ => {}
        }
        body = a.body;
        next
    });
    assert!(refreshed, "no two balanced audits on the page within 30 s: {body:.2000}");
    let watched = first.elapsed();
    let ran = c.metric(&page, AUDITS, "").await.expect("metrics");
    let reached = node_audits(&c).await;
    // One audit at the first visit, then one per 10 s at most (plus one starting as we read).
    let most = 2.0 + (watched.as_secs_f64() / 10.0).floor();
    println!(
        "{loads} loads over {watched:?} (slowest of the burst {slowest:?}): {ran} audits run by the router, {reached} reached the nodes"
    );
    assert!(ran >= 2.0, "the page showed two audits its task ran");
    assert!(ran <= most, "{ran} audits for {loads} loads over {watched:?}: more than one per 10 s");
    assert!((2.0..=ran).contains(&reached), "{reached} audit calls reached the nodes for {ran} run by the router");
    // The page says how old the verdict it shows is.
    let age: u64 = attr(&body, "id=\"audit\"", "data-audit-age-s").and_then(|a| a.parse().ok()).expect("the audit's age");
    assert!(age <= 1, "the verdict just refreshed is {age} s old");
    assert!(body.contains("s ago"), "the age is shown");
    // No load waited for an audit (one may take seconds; the first waits at most 1 s for the
    // first probe of the other routers).
    assert!(slowest < Duration::from_secs(2), "a page load took {slowest:?}");
}

/// 32 random hex digits: a trace id no earlier run can have logged.
fn trace_id() -> String {
    format!("{:032x}", rand::random::<u128>() | 1)
}

/// A funded sender on shard 1, a grabber on shard 2, and a packet of two shares sent through the
/// Shenzhen router: what both tracing tests grab from.
async fn sender_grabber_and_packet(c: &Cluster) -> (u64, u64, PacketRef) {
    let setup = c.router_client("shenzhen");
    let sender = c.topology.user_in_shard(1, 900);
    let grabber = c.topology.user_in_shard(2, 900);
    (sender, grabber, c.packet_to_grab(&setup, sender, grabber, 10_000, 500).await)
}

/// Through the Shenzhen router, each call continuing a trace of its own: a grab (coalesced at
/// the router: the trace id rides in the batch) and a top-up (one call per request) in sampled
/// traces, a balance read in an unsampled one. (The client library sends each call with a
/// parent id of its own.) The sender, and the three trace ids.
async fn traced_calls(c: &Cluster) -> (u64, String, String, String) {
    let (sender, grabber, packet_id) = sender_grabber_and_packet(c).await;
    let (grab_id, topup_id, quiet_id) = (trace_id(), trace_id(), trace_id());
    let g = traced(c, &grab_id, "01").grab(new_request_id(), packet_id, grabber, "").await.unwrap();
    assert!(g.amount_cents > 0);
    traced(c, &topup_id, "01").top_up(new_request_id(), sender, 100).await.unwrap();
    traced(c, &quiet_id, "00").balance(sender).await.unwrap();
    (sender, grab_id, topup_id, quiet_id)
}

/// A client of the Shenzhen router whose calls continue trace `id` (flags "01": sampled).
fn traced(c: &Cluster, id: &str, flags: &str) -> Client {
    c.router_client("shenzhen").with_traceparent(&format!("00-{id}-00f067aa0ba902b7-{flags}")).expect("a valid traceparent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grab_with_a_traceparent_leaves_its_trace_id_in_the_router_and_node_logs() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let (_, grab_id, topup_id, quiet_id) = traced_calls(&c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let router_log = std::fs::read_to_string(c.dir.path().join("router-shenzhen.log")).unwrap();
    let nodes: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    let node_logs: String = nodes.iter().map(|n| c.node_log(*n)).collect();
    let lines = |log: &str, id: &str| log.lines().filter(|l| l.contains(id)).map(str::to_string).collect::<Vec<_>>();
    for (id, what, method) in
        [(&grab_id, "GrabRequest", "/hongbao.v1.Coalesced/Grabs (one grab)"), (&topup_id, "TopUpRequest", "/hongbao.v1.Wallet/TopUp")]
    {
        let routed = lines(&router_log, id);
        assert!(
            routed.iter().any(|l| l.contains("routed") && l.contains(&format!("what=\"{what}\"")) && l.contains("code=\"OK\"")),
            "router log has no line for trace {id}: {routed:?}"
        );
        let served = lines(&node_logs, id);
        assert!(
            served.iter().any(|l| l.contains("served") && l.contains(method) && l.contains("code=\"OK\"")),
            "no node log has a line for trace {id} ({method}): {served:?}"
        );
        println!("trace {id}:\n  {}\n  {}", routed.join("\n  "), served.join("\n  "));
    }
    assert!(
        lines(&router_log, &quiet_id).is_empty() && lines(&node_logs, &quiet_id).is_empty(),
        "an unsampled trace is not logged at info"
    );
    // No endpoint: nothing of OpenTelemetry runs, in any process.
    for (name, pid) in c.pids() {
        assert_eq!(exporter_threads(pid), 0, "{name} runs an OTLP exporter without an endpoint");
    }
}

/// Threads of `pid` named by OpenTelemetry's batch span processor
/// ("OpenTelemetry.Traces.BatchProcessor", cut by Linux to 15 bytes).
fn exporter_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).filter(|name| name.starts_with("OpenTelemetry")).count()
}

/// One exported span as the collector got it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: Vec<(String, String)>,
}

impl Got {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A tiny OTLP/gRPC collector: records every span it is sent, with its resource's names.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let resource: Vec<(String, String)> =
                rs.resource.iter().flat_map(|r| &r.attributes).map(|kv| (kv.key.clone(), text(kv))).collect();
            let of = |key: &str| resource.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Got {
                    service: of("service.name"),
                    instance: of("service.instance.id"),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(kv))).collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves on an ephemeral loopback port; its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap()
        });
        format!("http://{addr}")
    }

    fn spans(&self, trace_id: &str) -> Vec<Got> {
        self.0.lock().unwrap().iter().filter(|g| g.trace_id == trace_id).cloned().collect()
    }

    /// The spans of `trace_id` once both a router and a node have sent theirs (within 15 s).
    async fn wait_for(&self, trace_id: &str) -> Vec<Got> {
        let mut spans;
        // Not asserted here: the caller says what it wanted of them.
        eventually!(Duration::from_secs(15), {
            spans = self.spans(trace_id);
            let from = |service: &str| spans.iter().any(|g| g.service == service);
            from("hongbao-router") && from("hongbao-node")
        });
        spans
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_grab_is_exported_over_otlp_by_the_router_and_the_node_in_the_clients_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut c = Cluster::start(Spec { routers: true, env: vec![(OTLP_ENDPOINT_ENV, endpoint.clone())], ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    for (name, pid) in c.pids() {
        assert_eq!(exporter_threads(pid), 1, "{name} runs one OTLP exporter with {OTLP_ENDPOINT_ENV}={endpoint}");
    }
    let (sender, grab_id, topup_id, quiet_id) = traced_calls(&c).await;

    for (id, router_name, node_name) in [
        (&grab_id, "router GrabRequest", "hongbao.v1.Coalesced/Grabs (one grab)"),
        (&topup_id, "router TopUpRequest", "hongbao.v1.Wallet/TopUp"),
    ] {
        let spans = collector.wait_for(id).await;
        let router: Vec<&Got> = spans.iter().filter(|g| g.service == "hongbao-router").collect();
        let node: Vec<&Got> = spans.iter().filter(|g| g.service == "hongbao-node").collect();
        assert!(!router.is_empty() && !node.is_empty(), "trace {id}: spans from the router and a node, got {spans:#?}");
        let r = router.iter().find(|g| g.name == router_name).unwrap_or_else(|| panic!("trace {id}: no {router_name:?} span: {spans:#?}"));
        assert_eq!(r.instance, "router-shenzhen", "{r:?}");
        assert!(
            r.parent_id.len() == 16 && r.parent_id != "0000000000000000" && !spans.iter().any(|g| g.span_id == r.parent_id),
            "the router's span is the child of the client's call (not exported by hongbao), not a root: {r:?}"
        );
        assert_eq!((r.attribute("code"), r.attribute("trace_id")), (Some("OK"), Some(id.as_str())), "{r:?}");
        let n = node.iter().find(|g| g.name == node_name).unwrap_or_else(|| panic!("trace {id}: no {node_name:?} span: {spans:#?}"));
        assert_eq!(n.parent_id, r.span_id, "the node's span is the router's child: {n:?} under {r:?}");
        assert_eq!(n.attribute("code"), Some("OK"), "{n:?}");
        assert_eq!(r.attribute("node"), n.instance.strip_prefix("node-"), "the router names the node that answered: {r:?} {n:?}");
        println!("trace {id}:\n  {r:?}\n  {n:?}");
    }
    assert!(collector.spans(&quiet_id).is_empty(), "an unsampled trace is not exported");

    // A clean stop runs the exporter's flush and ends (the router's single-threaded runtime
    // included: the blocking flush must not stall the channel it sends on), and the last
    // sampled call's spans arrive.
    let last_id = trace_id();
    traced(&c, &last_id, "01").balance(sender).await.unwrap();
    c.signal_router("shenzhen", "TERM");
    let nodes: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    for id in &nodes {
        c.stop(*id);
    }
    let spans = collector.wait_for(&last_id).await;
    assert!(
        spans.iter().any(|g| g.service == "hongbao-router") && spans.iter().any(|g| g.service == "hongbao-node"),
        "the last call's spans arrive: {spans:#?}"
    );
    let router_log = || std::fs::read_to_string(c.dir.path().join("router-shenzhen.log")).unwrap();
    let flushed = eventually!(Duration::from_secs(10), router_log().contains("trace export flushed"));
    assert!(flushed, "the router flushed its exporter on SIGTERM");
    for id in nodes {
        assert!(c.node_log(id).contains("trace export flushed"), "node {id} flushed its exporter on SIGTERM");
    }
}
