//! The router's status page (#15), on its `metrics_addr` beside the Prometheus metrics: plain
//! server-rendered HTML (no script; the page reloads itself every few seconds). It shows what
//! this router knows: regions and nodes up or down (its health checks), each shard's leader and
//! replicas with their lag (the last health round's answers), where each region's traffic goes,
//! ops/s and p99 of the calls it forwarded over the last five minutes (`Traffic`, drawn as
//! inline SVG), and the last audit's verdict with its age.
//!
//! A page load does no work on the cluster (#28): the audit and the probes of the other routers
//! run in background tasks, an audit every `AUDIT_EVERY` and a probe round every `PROBE_EVERY`,
//! only while the page has been loaded within `WATCHED` (so nodes do no audit work while nobody
//! looks); a load renders their last results. Audits run are counted in
//! `hongbao_router_status_audits_total`.
//!
//! Every value rendered goes through `esc`; elements carry `data-*` attributes for tests and
//! scripts (`data-region`/`data-up`, `data-shard`/`data-leader-region`, `data-audit`, ...).
//!
//! HTTP is `hongbao_telemetry::http` (the same endpoint, rules and limits as `/metrics`): `/`
//! and `/status` the page, `/health` "OK".

use crate::route::Router;
use hongbao_proto::v1::{AuditReply, AuditRequest, ReplicaRole, ShardStatus};
use hongbao_telemetry::http;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Seconds of traffic kept and drawn.
pub const WINDOW: usize = 300;
/// An audit starts at most this often, while the page is watched.
pub const AUDIT_EVERY: Duration = Duration::from_secs(10);
const AUDIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The other routers' gRPC ports are probed this often, while the page is watched.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the first load waits for the first probe round (the page is not drawn blind).
const FIRST_PROBE_WAIT: Duration = Duration::from_secs(1);
/// The background tasks work while the page has been loaded within this.
const WATCHED: Duration = Duration::from_secs(300);
const REFRESH_S: u32 = 5;
/// Latency buckets per second: bucket i holds calls of at most 100 µs × 2^(i/4) (up to ~6.5 s;
/// the last bucket holds everything slower). A p99 read from them is within 19 % of the truth.
const BUCKETS: usize = 65;

#[derive(Clone, Copy)]
struct Second {
    at: u64,
    count: u32,
    latency: [u32; BUCKETS],
}

const EMPTY: Second = Second { at: u64::MAX, count: 0, latency: [0; BUCKETS] };

/// The count and latency of every call this router forwarded, one slot per second for the last
/// `WINDOW` seconds (a ring: a slot is cleared when its second comes round again).
pub struct Traffic {
    start: Instant,
    ring: Mutex<Vec<Second>>,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic { start: Instant::now(), ring: Mutex::new(vec![EMPTY; WINDOW]) }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 100.0 {
        return 0;
    }
    ((us / 100.0).log2() * 4.0).ceil().clamp(0.0, (BUCKETS - 1) as f64) as usize
}

fn bucket_ms(i: usize) -> f64 {
    0.1 * 2f64.powf(i as f64 / 4.0)
}

impl Traffic {
    pub fn record(&self, took: Duration) {
        let sec = self.start.elapsed().as_secs();
        let mut ring = self.ring.lock().expect("traffic lock");
        let slot = &mut ring[(sec % WINDOW as u64) as usize];
        if slot.at != sec {
            *slot = Second { at: sec, ..EMPTY };
        }
        slot.count += 1;
        slot.latency[bucket_of(took)] += 1;
    }

    /// (calls, p99 in ms) of each of the last `WINDOW` whole seconds, oldest first.
    pub fn series(&self) -> Vec<(u32, f64)> {
        let now = self.start.elapsed().as_secs();
        let ring = self.ring.lock().expect("traffic lock");
        (1..=WINDOW as u64)
            .rev()
            .map(|back| {
                let Some(sec) = now.checked_sub(back) else { return (0, 0.0) };
                let s = &ring[(sec % WINDOW as u64) as usize];
                if s.at != sec || s.count == 0 {
                    return (0, 0.0);
                }
                (s.count, p99(s))
            })
            .collect()
    }
}

/// The upper bound of the bucket that holds a second's 99th percentile call.
fn p99(s: &Second) -> f64 {
    let target = (s.count as u64 * 99).div_ceil(100);
    let mut seen = 0u64;
    let i = s.latency.iter().position(|n| {
        seen += *n as u64;
        seen >= target
    });
    bucket_ms(i.unwrap_or(BUCKETS - 1))
}

/// Why the page's last audit has no verdict.
#[derive(Debug, Clone, thiserror::Error)]
enum AuditFailed {
    /// The cluster answered with an error: its message.
    #[error("{0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

/// The last audit the page's task ran, and whether one is running.
#[derive(Default)]
struct Audits {
    last: Option<(SystemTime, Result<AuditReply, AuditFailed>)>,
    running: bool,
}

/// One probe round: each router region and whether its gRPC port accepted a connection.
type RoutersUp = Arc<Vec<(String, bool)>>;

/// The page's state: what the background tasks found, and when the page was last loaded.
pub struct Page {
    router: Arc<Router>,
    audits: Mutex<Audits>,
    /// The last probe round (None: no round yet).
    routers_up: watch::Sender<Option<RoutersUp>>,
    /// When the page was last loaded (None: never); the tasks work while it is recent.
    visited: watch::Sender<Option<Instant>>,
}

impl Page {
    /// The page of `router`, with its two background tasks (idle until the first load).
    pub fn start(router: Arc<Router>) -> Arc<Page> {
        let page = Arc::new(Page {
            router,
            audits: Mutex::new(Audits::default()),
            routers_up: watch::channel(None).0,
            visited: watch::channel(None).0,
        });
        metrics::counter!(crate::metrics::STATUS_AUDITS).increment(0);
        tokio::spawn(audit_loop(page.clone()));
        tokio::spawn(probe_loop(page.clone()));
        page
    }
}

/// Returns once the page has been loaded within `WATCHED`; waits for a load otherwise.
async fn watched(visited: &mut watch::Receiver<Option<Instant>>) {
    loop {
        if visited.borrow_and_update().is_some_and(|at| at.elapsed() < WATCHED) {
            return;
        }
        if visited.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One audit every `AUDIT_EVERY` (from the start of one to the start of the next) while the
/// page is watched; page loads only read the last verdict.
async fn audit_loop(page: Arc<Page>) {
    let mut visited = page.visited.subscribe();
    loop {
        watched(&mut visited).await;
        let next = tokio::time::Instant::now() + AUDIT_EVERY;
        page.audits.lock().expect("audit lock").running = true;
        metrics::counter!(crate::metrics::STATUS_AUDITS).increment(1);
        let call = page.router.any_node(|mut c| async move { c.audit(AuditRequest {}).await });
        let verdict = match tokio::time::timeout(AUDIT_TIMEOUT, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(AuditFailed::Refused(hongbao_proto::detail_of(&s).message)),
            Err(_) => Err(AuditFailed::NoAnswer(AUDIT_TIMEOUT)),
        };
        *page.audits.lock().expect("audit lock") = Audits { last: Some((SystemTime::now(), verdict)), running: false };
        tokio::time::sleep_until(next).await;
    }
}

/// The other routers' gRPC ports, probed every `PROBE_EVERY` while the page is watched: up
/// while one accepts a TCP connection (this router is up: it answers the page).
async fn probe_loop(page: Arc<Page>) {
    let mut visited = page.visited.subscribe();
    loop {
        watched(&mut visited).await;
        let next = tokio::time::Instant::now() + PROBE_EVERY;
        let topology = page.router.topology();
        let probes = topology.routers.iter().map(|x| {
            let (region, addr) = (x.region.clone(), x.addr.clone());
            let me = region == page.router.region;
            async move { (region, me || matches!(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(&addr)).await, Ok(Ok(_)))) }
        });
        let round = futures::future::join_all(probes).await;
        page.routers_up.send_replace(Some(Arc::new(round)));
        tokio::time::sleep_until(next).await;
    }
}

/// The page's paths on the metrics endpoint.
pub struct Pages(pub Arc<Page>);

impl http::Pages for Pages {
    fn get(&self, path: &str) -> Option<Pin<Box<dyn Future<Output = http::Page> + Send>>> {
        match path {
            "/" | "/status" => {
                let page = self.0.clone();
                Some(Box::pin(async move { http::Page { content_type: "text/html; charset=utf-8", body: page.render().await } }))
            }
            "/health" => Some(Box::pin(async { http::Page { content_type: "text/plain; charset=utf-8", body: "OK".into() } })),
            _ => None,
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn yuan(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
}

fn role_name(r: ReplicaRole) -> &'static str {
    match r {
        ReplicaRole::Leader => "leader",
        ReplicaRole::Follower => "follower",
        ReplicaRole::Candidate => "candidate",
        ReplicaRole::Learner => "learner",
        ReplicaRole::Shutdown => "shut down",
        ReplicaRole::Unspecified => "unknown",
    }
}

impl Page {
    async fn render(self: &Arc<Self>) -> String {
        // A load only marks the page watched: the tasks do the work, at their own pace.
        self.visited.send_replace(Some(Instant::now()));
        let (audit, running) = {
            let a = self.audits.lock().expect("audit lock");
            (a.last.clone(), a.running)
        };
        let mut probed = self.routers_up.subscribe();
        let routers_up = match tokio::time::timeout(FIRST_PROBE_WAIT, probed.wait_for(Option::is_some)).await {
            Ok(Ok(round)) => round.clone().unwrap_or_default(),
            // No round yet: only this router is known to be up.
            _ => Arc::new(vec![(self.router.region.clone(), true)]),
        };
        let r = &self.router;
        let t = r.topology();
        let router_up = |region: &str| routers_up.iter().find(|(r, _)| r == region).map(|(_, up)| *up);
        let view = r.view();
        let round = r.last_round();
        let node_up = |id: u64| view.nodes.iter().any(|n| n.node == id && n.up);
        let region_of = |id: u64| t.region_of(id).unwrap_or("?").to_string();
        // Each shard's leader: the claim of the highest term among the answers.
        let leader = |shard: u32| -> Option<&ShardStatus> {
            round.iter().filter(|a| a.shard == shard && a.role() == ReplicaRole::Leader && a.leader == a.node).max_by_key(|a| a.term)
        };
        let routed = |shard: u32| view.leaders.iter().find(|l| l.shard == shard).map(|l| l.node);

        let mut h = String::with_capacity(16 << 10);
        let now = SystemTime::now();
        let _ = write!(
            h,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
             <title>hongbao · router {region}</title><style>{CSS}</style></head><body>\
             <h1>hongbao <span class=\"dim\">router</span> {region}</h1>\
             <p class=\"dim\">{now} · refreshes every {REFRESH_S} s · cluster map version {version} · \
             <span data-ready=\"{ready}\">{readiness}</span></p>",
            region = esc(&r.region),
            now = esc(&utc(now)),
            version = t.version,
            ready = r.readiness().is_ok(),
            readiness = esc(&match r.readiness() {
                Ok(()) => "SERVING: a followed leader reached for every shard".to_string(),
                Err(why) => format!("NOT_SERVING: {why}"),
            }),
        );

        // Regions and nodes.
        h.push_str("<h2>Regions and nodes</h2><table><tr><th>Region</th><th>State</th><th>Nodes</th></tr>");
        for reg in &view.regions {
            let _ = write!(
                h,
                "<tr data-region=\"{name}\" data-up=\"{up}\"><td>{name}</td><td>{badge}</td><td>",
                name = esc(&reg.region),
                up = reg.up,
                badge = badge(reg.up, "up", "down"),
            );
            for n in view.nodes.iter().filter(|n| n.region == reg.region) {
                let addr = t.node(n.node).map(|x| x.addr.as_str()).unwrap_or_default();
                let _ = write!(
                    h,
                    "<span class=\"node {cls}\" data-node=\"{id}\" data-up=\"{up}\">node {id} <span class=\"dim\">{addr}</span> {state}</span> ",
                    cls = if n.up { "up" } else { "down" },
                    id = n.node,
                    up = n.up,
                    addr = esc(addr),
                    state = if n.up { "up" } else { "down" },
                );
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");

        // Shards: leader, replicas and lag.
        h.push_str(
            "<h2>Shards</h2><table><tr><th>Shard</th><th>Home</th><th>Leader</th><th>Routed to</th>\
             <th>Replicas (role, applied index, entries behind the leader)</th></tr>",
        );
        for s in &t.shards {
            let l = leader(s.id);
            let (lid, lregion) = l.map(|l| (l.node, region_of(l.node))).unwrap_or((0, String::new()));
            let routed_to = routed(s.id).unwrap_or(0);
            let _ = write!(
                h,
                "<tr data-shard=\"{id}\" data-home=\"{home}\" data-leader=\"{lid}\" data-leader-region=\"{lregion}\" data-routed-to=\"{routed_to}\">\
                 <td>{id}</td><td>{home}</td><td>{leader_txt}</td><td>{routed_txt}</td><td>",
                id = s.id,
                home = esc(&s.home),
                lregion = esc(&lregion),
                leader_txt = match l {
                    Some(l) => format!(
                        "node {} <span class=\"dim\">({}, term {})</span>{}",
                        l.node,
                        esc(&lregion),
                        l.term,
                        if lregion != s.home { " <span class=\"badge warn\">moved from home</span>" } else { "" }
                    ),
                    None => "<span class=\"badge down\">no leader</span>".to_string(),
                },
                routed_txt = if routed_to == 0 { "—".to_string() } else { format!("node {routed_to}") },
            );
            for rep in &s.replicas {
                let answer = round.iter().find(|a| a.shard == s.id && a.node == *rep);
                match answer {
                    Some(a) if node_up(*rep) => {
                        let lag = l.map(|l| l.last_log_index.saturating_sub(a.last_log_index)).unwrap_or(0);
                        let _ = write!(
                            h,
                            "<span class=\"node up\" data-replica=\"{rep}\" data-up=\"true\" data-lag=\"{lag}\">node {rep} {role}, applied {applied}, lag {lag}</span> ",
                            role = role_name(a.role()),
                            applied = a.applied,
                        );
                    }
                    _ => {
                        let _ = write!(h, "<span class=\"node down\" data-replica=\"{rep}\" data-up=\"false\">node {rep} down</span> ");
                    }
                }
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");

        // Traffic: each region's clients enter at their router (the next one up when it is
        // down: clients try their home router first, then the others in topology order); each
        // shard homed there is served wherever its leader is.
        h.push_str(
            "<h2>Where each region's traffic goes</h2><table><tr><th>Region</th><th>Enters through</th>\
             <th>Its shards are served by</th></tr>",
        );
        for reg in &t.regions {
            let own = router_up(&reg.name);
            let entry = match own {
                Some(true) => Some(reg.name.clone()),
                _ => t.routers.iter().find(|x| router_up(&x.region) == Some(true)).map(|x| x.region.clone()),
            };
            let _ = write!(
                h,
                "<tr data-traffic-region=\"{name}\" data-router-up=\"{up}\" data-entry=\"{entry}\"><td>{name}</td><td>{entry_txt}</td><td>",
                name = esc(&reg.name),
                up = own.unwrap_or(false),
                entry = esc(entry.as_deref().unwrap_or("")),
                entry_txt = match (own, &entry) {
                    (Some(true), _) => format!("router {}", esc(&reg.name)),
                    (Some(false), Some(e)) => format!("router {} <span class=\"badge warn\">router {} down</span>", esc(e), esc(&reg.name)),
                    (None, Some(e)) => format!("router {} <span class=\"dim\">(no router of its own)</span>", esc(e)),
                    (_, None) => "<span class=\"badge down\">no router up</span>".to_string(),
                },
            );
            for s in t.shards.iter().filter(|s| s.home == reg.name) {
                let served = leader(s.id).map(|l| (l.node, region_of(l.node)));
                let _ = write!(
                    h,
                    "<span data-home-shard=\"{id}\" data-served-region=\"{sr}\">shard {id} → {txt}</span> ",
                    id = s.id,
                    sr = esc(served.as_ref().map(|(_, r)| r.as_str()).unwrap_or("")),
                    txt = match &served {
                        Some((n, sr)) => format!("node {n} in {}", esc(sr)),
                        None => "no leader".to_string(),
                    },
                );
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");

        // Traffic through this router over the last minutes.
        let series = r.traffic.series();
        let ops: Vec<f64> = series.iter().map(|(n, _)| *n as f64).collect();
        let p99: Vec<f64> = series.iter().map(|(_, p)| *p).collect();
        let (last_ops, last_p99) = series.last().copied().unwrap_or((0, 0.0));
        let _ = write!(
            h,
            "<h2>Calls forwarded by this router, last {min} minutes</h2>\
             <p data-ops-per-s=\"{last_ops}\" data-p99-ms=\"{last_p99:.1}\">last second: <b>{last_ops}</b> ops/s, p99 <b>{last_p99:.1}</b> ms</p>\
             <div class=\"charts\">{c1}{c2}</div>",
            min = WINDOW / 60,
            c1 = chart("ops", "ops/s", &ops, "#2b6cb0"),
            c2 = chart("p99", "p99 ms", &p99, "#c05621"),
        );

        // The last audit.
        let _ = write!(
            h,
            "<h2>Audit</h2><p class=\"dim\">Run by this router every {every} s while this page is watched, never by a page load.</p>",
            every = AUDIT_EVERY.as_secs()
        );
        match &audit {
            None => {
                let _ = write!(
                    h,
                    "<p id=\"audit\" data-audit=\"none\">No audit yet{}.</p>",
                    if running { " (the first one is running)" } else { " (one starts now)" }
                );
            }
            Some((at, verdict)) => {
                let ago = at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                let at_ms = at.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
                let when = format!("{} ({ago} s ago{})", utc(*at), if running { "; a new one is running" } else { "" });
                match verdict {
                    Ok(a) => {
                        let _ = write!(
                            h,
                            "<p id=\"audit\" data-audit=\"{state}\" data-audit-at-ms=\"{at_ms}\" data-audit-age-s=\"{ago}\">{badge} at {when}: top-ups {tu}, \
                             withdrawals {wd}, balances {bal}, escrow {esc_}, in flight {fl}, fees {fee} (yuan), {shards} shards</p>",
                            state = if a.balanced { "balanced" } else { "unbalanced" },
                            badge = badge(a.balanced, "balanced", "UNBALANCED"),
                            when = esc(&when),
                            tu = yuan(a.total_topups_cents),
                            wd = yuan(a.total_withdrawals_cents),
                            bal = yuan(a.total_balances_cents),
                            esc_ = yuan(a.total_escrow_cents),
                            fl = yuan(a.total_in_flight_cents),
                            fee = yuan(a.total_fees_cents),
                            shards = a.shards.len(),
                        );
                        if !a.problems.is_empty() {
                            h.push_str("<ul class=\"problems\">");
                            for p in &a.problems {
                                let _ = write!(h, "<li>{}</li>", esc(p));
                            }
                            h.push_str("</ul>");
                        }
                    }
                    Err(e) => {
                        let _ = write!(
                            h,
                            "<p id=\"audit\" data-audit=\"failed\" data-audit-at-ms=\"{at_ms}\" data-audit-age-s=\"{ago}\"><span class=\"badge down\">audit failed</span> at {}: {}</p>",
                            esc(&when),
                            esc(&e.to_string()),
                        );
                    }
                }
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

fn badge(good: bool, yes: &str, no: &str) -> String {
    if good {
        format!("<span class=\"badge up\">{}</span>", esc(yes))
    } else {
        format!("<span class=\"badge down\">{}</span>", esc(no))
    }
}

/// A line chart of `values` (oldest first, one per second) as inline SVG, 0 at the bottom.
fn chart(id: &str, unit: &str, values: &[f64], color: &str) -> String {
    const W: f64 = 440.0;
    const H: f64 = 120.0;
    const LEFT: f64 = 50.0;
    let peak = values.iter().copied().fold(0.0, f64::max);
    // A round top: 1, 2 or 5 times a power of ten.
    let top = {
        let p = 10f64.powf(peak.max(1.0).log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= peak).unwrap_or(10.0 * p)
    };
    let step = W / (values.len().max(2) - 1) as f64;
    let points: Vec<String> =
        values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", LEFT + i as f64 * step, 10.0 + H - v / top * H)).collect();
    format!(
        "<svg data-chart=\"{id}\" data-max=\"{peak:.1}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{unit}\">\
         <rect x=\"{LEFT}\" y=\"10\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
         <line x1=\"{LEFT}\" y1=\"{mid}\" x2=\"{right}\" y2=\"{mid}\" stroke=\"#eee\"/>\
         <text x=\"{lx}\" y=\"16\" text-anchor=\"end\">{top}</text><text x=\"{lx}\" y=\"{bottom}\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{below}\">−{min} min</text><text x=\"{right}\" y=\"{below}\" text-anchor=\"end\">now</text>\
         <text x=\"{cx}\" y=\"{below}\" text-anchor=\"middle\" font-weight=\"bold\">{unit}</text>\
         <polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{points}\"/></svg>",
        w = LEFT + W + 10.0,
        h = H + 34.0,
        mid = 10.0 + H / 2.0,
        right = LEFT + W,
        lx = LEFT - 4.0,
        bottom = 10.0 + H,
        below = H + 28.0,
        cx = LEFT + W / 2.0,
        min = values.len() / 60,
        top = esc(&format!("{top}")),
        unit = esc(unit),
        id = esc(id),
        color = esc(color),
        points = points.join(" "),
    )
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;max-width:1100px}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e5e5e5;padding:5px 8px;text-align:left;vertical-align:top}\
th{background:#f4f4f4;font-weight:600}.dim{color:#777}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600}\
.badge.up{background:#c6f6d5;color:#22543d}.badge.down{background:#fed7d7;color:#822727}.badge.warn{background:#feebc8;color:#7b341e}\
.node{display:inline-block;margin:1px 6px 1px 0;padding:1px 6px;border-radius:4px}\
.node.up{background:#f0fff4;border:1px solid #9ae6b4}.node.down{background:#fff5f5;border:1px solid #feb2b2;color:#822727}\
.charts svg{margin-right:16px}svg text{font-size:11px;fill:#555}.problems{color:#822727}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_text_is_escaped() {
        assert_eq!(esc("<script>alert('x') & \"y\"</script>"), "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;");
        assert!(!chart("a\"b", "<u>", &[1.0, 2.0], "red").contains("<u>"));
    }

    #[test]
    fn the_p99_of_a_second_is_its_slowest_percent() {
        let t = Traffic::default();
        // All within the first second.
        for i in 0..1000 {
            t.record(Duration::from_micros(if i < 985 { 500 } else { 40_000 }));
        }
        let s = t.ring.lock().unwrap()[0];
        assert_eq!(s.count, 1000);
        let p = p99(&s);
        assert!((40.0..48.0).contains(&p), "p99 {p} ms of 1.5 % slow calls at 40 ms");
        assert!(bucket_ms(bucket_of(Duration::from_millis(1))) >= 1.0);
        assert_eq!(bucket_of(Duration::from_secs(100)), BUCKETS - 1);
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "2024-02-29 12:34:56 UTC");
    }
}
