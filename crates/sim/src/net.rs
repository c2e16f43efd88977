//! The simulated network: one link per ordered pair of nodes, each a tower service that a node's
//! `Peers` uses in place of tonic's Channel (`Dial::Simulated`). A call crosses the link as one
//! message each way, to the other node's real gRPC services in this process (no HTTP/2, no
//! TLS: the link hands the callee the caller's identity, as mutual TLS would). The seed decides,
//! per message, its delay and whether it is lost, its reply lost, or delivered twice; partitions
//! cut links one way or both.

use crate::trace::Trace;
use hongbao_auth::Identity;
use hongbao_node::transport::peers::PeerChannel;
use hongbao_topology::NodeId;
use http_body_util::BodyExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::service::Routes;

/// How long a caller waits on a lost message before its own timeout has surely fired: every
/// node-to-node call has one of at most a few seconds.
const LOST: Duration = Duration::from_secs(30);
/// What a cut link or a down node costs a caller before it hears UNAVAILABLE (a connect timeout).
const REFUSED_AFTER: Duration = Duration::from_millis(300);

/// The link's weather, set by the fault schedule (`schedule`); percentages per message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weather {
    pub loss_pct: u32,
    pub reply_loss_pct: u32,
    pub dup_pct: u32,
    /// Extra one-way delay drawn from 0..=jitter_ms; a slow message (slow_pct) waits up to 20 times that.
    pub jitter_ms: u64,
    pub slow_pct: u32,
}

impl Weather {
    /// Calm: a little jitter, so concurrent messages still reorder.
    pub const CALM: Weather = Weather { loss_pct: 0, reply_loss_pct: 0, dup_pct: 0, jitter_ms: 2, slow_pct: 0 };
}

/// Messages the network carried and what it did to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetCounts {
    pub messages: u64,
    pub lost: u64,
    pub replies_lost: u64,
    pub duplicated: u64,
    pub refused: u64,
}

struct State {
    rng: ChaCha8Rng,
    /// The gRPC services of every node that is up.
    up: BTreeMap<NodeId, Routes>,
    /// Cut links, (from, to): nothing from `from` reaches `to`.
    cut: BTreeSet<(NodeId, NodeId)>,
    weather: Weather,
    counts: NetCounts,
}

/// What happens to one call.
struct Plan {
    there: Duration,
    back: Duration,
    lose: bool,
    lose_reply: bool,
    duplicate: Option<Duration>,
}

pub struct Net {
    state: Mutex<State>,
    trace: Arc<Trace>,
}

impl Net {
    pub fn new(rng: ChaCha8Rng, trace: Arc<Trace>) -> Arc<Net> {
        let state = State { rng, up: BTreeMap::new(), cut: BTreeSet::new(), weather: Weather::CALM, counts: NetCounts::default() };
        Arc::new(Net { state: Mutex::new(state), trace })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("net lock")
    }

    /// The link from `from` to `to`, as a node's `Peers` uses it.
    pub fn link(self: &Arc<Self>, from: NodeId, to: NodeId) -> PeerChannel {
        PeerChannel::new(Link { net: self.clone(), from, to })
    }

    /// Node `id` answers calls with `routes` (it is up).
    pub fn attach(&self, id: NodeId, routes: Routes) {
        self.lock().up.insert(id, routes);
    }

    /// Node `id` answers nothing (it crashed or stopped).
    pub fn detach(&self, id: NodeId) {
        self.lock().up.remove(&id);
    }

    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    pub fn cut_links(&self) -> usize {
        self.lock().cut.len()
    }

    pub fn set_weather(&self, w: Weather) {
        self.lock().weather = w;
    }

    pub fn counts(&self) -> NetCounts {
        self.lock().counts
    }

    fn plan(&self, from: NodeId, to: NodeId) -> Option<Plan> {
        let mut s = self.lock();
        s.counts.messages += 1;
        if s.cut.contains(&(from, to)) || !s.up.contains_key(&to) {
            s.counts.refused += 1;
            return None;
        }
        let w = s.weather;
        let delay = |rng: &mut ChaCha8Rng| {
            let mut ms = rng.gen_range(0..=w.jitter_ms);
            if w.slow_pct > 0 && rng.gen_range(0..100) < w.slow_pct {
                ms = ms.saturating_mul(20).max(50);
            }
            Duration::from_micros(200 + ms * 1000)
        };
        let there = delay(&mut s.rng);
        let back = delay(&mut s.rng);
        let lose = w.loss_pct > 0 && s.rng.gen_range(0..100) < w.loss_pct;
        let lose_reply = !lose && w.reply_loss_pct > 0 && s.rng.gen_range(0..100) < w.reply_loss_pct;
        let duplicate = (!lose && w.dup_pct > 0 && s.rng.gen_range(0..100) < w.dup_pct).then(|| delay(&mut s.rng) * 3);
        s.counts.lost += lose as u64;
        s.counts.replies_lost += lose_reply as u64;
        s.counts.duplicated += duplicate.is_some() as u64;
        Some(Plan { there, back, lose, lose_reply, duplicate })
    }

    fn routes(&self, to: NodeId, from: NodeId) -> Option<Routes> {
        let s = self.lock();
        if s.cut.contains(&(from, to)) {
            return None;
        }
        s.up.get(&to).cloned()
    }
}

type BoxError = std::io::Error;

#[derive(Clone)]
struct Link {
    net: Arc<Net>,
    from: NodeId,
    to: NodeId,
}

fn unavailable(why: String) -> http::Response<Body> {
    tonic::Status::unavailable(why).into_http()
}

/// The request again, for a second delivery (a duplicate), with the caller's identity.
fn rebuild(parts: &http::request::Parts, body: &Bytes, from: NodeId) -> http::Request<Body> {
    let mut b = http::Request::builder().method(parts.method.clone()).uri(parts.uri.clone()).version(parts.version);
    for (k, v) in parts.headers.iter() {
        b = b.header(k, v);
    }
    let mut req = b.body(Body::new(http_body_util::Full::new(body.clone()))).expect("a request rebuilt from valid parts");
    req.extensions_mut().insert(Identity::Node(from));
    req
}

impl tower::Service<http::Request<Body>> for Link {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (net, from, to) = (self.net.clone(), self.from, self.to);
        Box::pin(async move {
            let Some(plan) = net.plan(from, to) else {
                tokio::time::sleep(REFUSED_AFTER).await;
                return Ok(unavailable(format!("node {to} unreachable from node {from} (simulated)")));
            };
            let (parts, body) = req.into_parts();
            // The whole message leaves before any of it arrives (a snapshot stream included).
            let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
            tokio::time::sleep(plan.there).await;
            if plan.lose {
                tokio::time::sleep(LOST).await;
                return Ok(unavailable("message lost (simulated)".into()));
            }
            let Some(routes) = net.routes(to, from) else {
                return Ok(unavailable(format!("node {to} went away (simulated)")));
            };
            if let Some(after) = plan.duplicate {
                let (again, routes, trace) = (rebuild(&parts, &body, from), routes.clone(), net.trace.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tower::ServiceExt::oneshot(routes, again).await;
                    trace.note(format!("dup {from}->{to} delivered"));
                });
            }
            let resp = tower::ServiceExt::oneshot(routes, rebuild(&parts, &body, from))
                .await
                .map_err(|e: std::convert::Infallible| -> std::io::Error { match e {} })?;
            if plan.lose_reply {
                tokio::time::sleep(LOST).await;
                return Ok(unavailable("reply lost (simulated)".into()));
            }
            tokio::time::sleep(plan.back).await;
            Ok(resp)
        })
    }
}
