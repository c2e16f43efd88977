//! The RED set per gRPC method: requests (rate), their outcome code (errors) and how long each
//! took (duration), as one tower layer over a whole tonic server.
//!
//! Two metrics, named by the process (a node's `hongbao_rpc_*`, a router's `hongbao_router_rpc_*`):
//! - a counter `<requests>{method, code}`: every call that ended, `method` its gRPC path without
//!   the leading slash (`hongbao.v1.Packets/Grab`), `code` how it ended: `OK`, the domain
//!   `ErrorCode`'s name (`ALREADY_GRABBED`, `NOT_LEADER`, `TIMEOUT`: hongbao's statuses carry it),
//!   another status's gRPC code name (`UNIMPLEMENTED`, `FAILED_PRECONDITION`: tonic's own, a
//!   refused vote, a config check's answer), or `CANCELLED` when the caller went away before the
//!   answer;
//! - a histogram `<seconds>{method}`: from the call's arrival to its status (the end of the
//!   response stream; for a unary call, the answer).
//!
//! The status is read where gRPC puts it: the response headers of a trailers-only answer (every
//! error from a handler, an interceptor or a deadline), else the trailers after the body.
//! Cardinality is bounded: at most `MAX_METHODS` methods (later paths count as `other`), codes
//! from the `ErrorCode` enum and gRPC's 17. The hot path allocates nothing: each method's handles are made
//! once and found by path under a read lock, each code's counter on its first use.

use hongbao_proto::ErrorCode;
use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;

/// Methods labelled one by one; calls to any further path count under [`OTHER_METHOD`].
pub const MAX_METHODS: usize = 128;
/// The `method` label of every path beyond the first `MAX_METHODS`.
pub const OTHER_METHOD: &str = "other";
/// The `code` label of a call answered OK.
pub const OK: &str = "OK";
/// The `code` label of a call that ended without a status: the caller cancelled or reset it (or
/// the connection dropped) before the answer.
pub const CANCELLED: &str = "CANCELLED";

/// How one call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A hongbao status: its `ErrorDetail`'s code.
    Error(ErrorCode),
    /// Any other status (tonic's own, a vote refused, a config check's answer): its gRPC code.
    Grpc(tonic::Code),
    Cancelled,
}

impl Outcome {
    /// The `code` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok | Outcome::Error(ErrorCode::Ok) | Outcome::Grpc(tonic::Code::Ok) => OK,
            Outcome::Error(c) => hongbao_proto::reason(c),
            Outcome::Grpc(c) => grpc_name(c),
            Outcome::Cancelled => CANCELLED,
        }
    }
}

/// A gRPC code's name as the gRPC spec writes it.
fn grpc_name(c: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match c {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The outcome in a header map holding a `grpc-status` (a trailers-only answer's headers, or
/// the trailers); None when it holds none.
pub fn outcome_of(headers: &HeaderMap) -> Option<Outcome> {
    let code = tonic::Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    if code == tonic::Code::Ok {
        return Some(Outcome::Ok);
    }
    // hongbao's statuses begin their message with the domain code's name
    // (`hongbao_proto::status`): read it there, without decoding the details.
    if let Some(c) = headers.get("grpc-message").and_then(|m| domain_code(m.as_bytes())) {
        return Some(Outcome::Error(c));
    }
    // A hongbao detail under another message (rare: decoded), else the status's gRPC code.
    let carried = match headers.contains_key("grpc-status-details-bin") {
        true => tonic::Status::from_header_map(headers).and_then(|s| carried_code(s.details())),
        false => None,
    };
    Some(carried.map(Outcome::Error).unwrap_or(Outcome::Grpc(code)))
}

/// The code of the `ErrorDetail` inside a `grpc-status-details-bin` (a `google.rpc.Status`).
fn carried_code(details: &[u8]) -> Option<ErrorCode> {
    use prost::Message;
    let rpc = tonic_types::Status::decode(details).ok()?;
    let any = rpc.details.iter().find(|a| a.type_url == hongbao_proto::ERROR_DETAIL_TYPE_URL)?;
    let d = hongbao_proto::ErrorDetail::decode(any.value.as_slice()).ok()?;
    (d.code != 0).then(|| d.code())
}

/// `ERROR_CODE_ALREADY_GRABBED` from a message that begins with it.
fn domain_code(message: &[u8]) -> Option<ErrorCode> {
    let end = message.iter().position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')).unwrap_or(message.len());
    let name = std::str::from_utf8(&message[..end]).ok()?;
    name.starts_with("ERROR_CODE_").then(|| ErrorCode::from_str_name(name)).flatten()
}

/// Counters per code: `ErrorCode` values 0..64 and 100..164 each have a slot.
const CODE_SLOTS: usize = 128;
/// Counters per gRPC code (0..=16).
const GRPC_SLOTS: usize = 17;

fn slot(code: ErrorCode) -> Option<usize> {
    match code as i32 {
        v @ 0..=63 => Some(v as usize),
        v @ 100..=163 => Some(v as usize - 36),
        _ => None,
    }
}

/// One method's handles.
pub struct Method {
    requests: &'static str,
    label: String,
    seconds: Histogram,
    ok: Counter,
    codes: [OnceLock<Counter>; CODE_SLOTS],
    grpc: [OnceLock<Counter>; GRPC_SLOTS],
    cancelled: OnceLock<Counter>,
}

impl Method {
    fn new(requests: &'static str, seconds: &'static str, label: String) -> Method {
        Method {
            requests,
            seconds: metrics::histogram!(seconds, "method" => label.clone()),
            ok: metrics::counter!(requests, "method" => label.clone(), "code" => OK),
            codes: std::array::from_fn(|_| OnceLock::new()),
            grpc: std::array::from_fn(|_| OnceLock::new()),
            cancelled: OnceLock::new(),
            label,
        }
    }

    fn counter(&self, outcome: Outcome) -> &Counter {
        let register = |code: &'static str| metrics::counter!(self.requests, "method" => self.label.clone(), "code" => code);
        match outcome {
            Outcome::Ok | Outcome::Error(ErrorCode::Ok) | Outcome::Grpc(tonic::Code::Ok) => &self.ok,
            Outcome::Cancelled => self.cancelled.get_or_init(|| register(CANCELLED)),
            Outcome::Grpc(c) => self.grpc[(c as usize).min(GRPC_SLOTS - 1)].get_or_init(|| register(grpc_name(c))),
            Outcome::Error(c) => {
                let c = if slot(c).is_some() { c } else { ErrorCode::Internal };
                self.codes[slot(c).expect("INTERNAL has a slot")].get_or_init(|| register(hongbao_proto::reason(c)))
            }
        }
    }

    /// Counts one call that ended with `outcome` after `took` seconds.
    pub fn record(&self, outcome: Outcome, took: f64) {
        self.seconds.record(took);
        self.counter(outcome).increment(1);
    }

    /// The `method` label.
    pub fn label(&self) -> &str {
        &self.label
    }
}

struct Registry {
    requests: &'static str,
    seconds: &'static str,
    methods: RwLock<HashMap<Box<str>, Arc<Method>>>,
    other: OnceLock<Arc<Method>>,
}

impl Registry {
    fn method(&self, path: &str) -> Arc<Method> {
        {
            let methods = self.methods.read().expect("method registry");
            if let Some(m) = methods.get(path) {
                return m.clone();
            }
            if methods.len() >= MAX_METHODS {
                return self.other();
            }
        }
        let mut methods = self.methods.write().expect("method registry");
        if let Some(m) = methods.get(path) {
            return m.clone();
        }
        if methods.len() >= MAX_METHODS {
            return self.other();
        }
        let label = path.strip_prefix('/').unwrap_or(path).to_string();
        let m = Arc::new(Method::new(self.requests, self.seconds, label));
        methods.insert(path.into(), m.clone());
        m
    }

    fn other(&self) -> Arc<Method> {
        self.other.get_or_init(|| Arc::new(Method::new(self.requests, self.seconds, OTHER_METHOD.to_string()))).clone()
    }
}

/// The layer: `tonic::transport::Server::builder().layer(RedLayer::new(REQUESTS, SECONDS))`.
/// Clones share one registry of methods.
#[derive(Clone)]
pub struct RedLayer {
    registry: Arc<Registry>,
}

impl RedLayer {
    /// Counts calls in the counter `requests` and times them in the histogram `seconds`.
    pub fn new(requests: &'static str, seconds: &'static str) -> RedLayer {
        RedLayer { registry: Arc::new(Registry { requests, seconds, methods: RwLock::default(), other: OnceLock::new() }) }
    }

    /// The handles of the method at `path` (registered on first use).
    pub fn method(&self, path: &str) -> Arc<Method> {
        self.registry.method(path)
    }
}

impl<S> tower_layer::Layer<S> for RedLayer {
    type Service = Red<S>;

    fn layer(&self, inner: S) -> Red<S> {
        Red { inner, layer: self.clone() }
    }
}

/// A service whose every call is counted and timed (`RedLayer`).
#[derive(Clone)]
pub struct Red<S> {
    inner: S,
    layer: RedLayer,
}

impl<S, B, R> Service<Request<B>> for Red<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<RedBody<R>>;
    type Error = S::Error;
    type Future = RedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pending = Pending(Some((self.layer.method(req.uri().path()), Instant::now())));
        RedFuture { inner: self.inner.call(req), pending: Some(pending) }
    }
}

/// A call not yet counted: counted once, with its outcome, or as CANCELLED when dropped first.
struct Pending(Option<(Arc<Method>, Instant)>);

impl Pending {
    fn finish(&mut self, outcome: Outcome) {
        if let Some((m, started)) = self.0.take() {
            m.record(outcome, started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// The answer of a counted call: counts it when the status is in the response's headers,
    /// else hands the count to the body, which counts it at the trailers.
    pub struct RedFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, R, E> Future for RedFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<RedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let mut pending = this.pending.take().expect("a RedFuture is polled to completion once");
        Poll::Ready(match res {
            Ok(resp) => {
                let pending = match outcome_of(resp.headers()) {
                    Some(outcome) => {
                        pending.finish(outcome);
                        None
                    }
                    None => Some(pending),
                };
                Ok(resp.map(|inner| RedBody { inner, pending }))
            }
            Err(e) => {
                pending.finish(Outcome::Error(ErrorCode::Internal));
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call at the trailers (`grpc-status`), or at its end.
    pub struct RedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

impl<B: http_body::Body> http_body::Body for RedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(pending) = this.pending.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(trailers) = f.trailers_ref() {
                        pending.finish(outcome_of(trailers).unwrap_or(Outcome::Error(ErrorCode::Internal)));
                    }
                }
                // A body that fails, or ends without trailers, has no gRPC status.
                Some(Err(_)) | None => pending.finish(Outcome::Error(ErrorCode::Internal)),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn outcomes_are_read_from_hongbao_statuses_foreign_ones_and_ok() {
        let headers = |s: tonic::Status| s.into_http::<tonic::body::Body>().into_parts().0.headers;
        let refused = headers(hongbao_proto::error(ErrorCode::AlreadyGrabbed, "user 1002 already grabbed packet 7: naïve % text"));
        assert_eq!(outcome_of(&refused), Some(Outcome::Error(ErrorCode::AlreadyGrabbed)));
        assert_eq!(outcome_of(&refused).unwrap().label(), "ALREADY_GRABBED");
        let timeout = headers(hongbao_proto::error(ErrorCode::Timeout, "cut"));
        assert_eq!(outcome_of(&timeout).unwrap().label(), "TIMEOUT");
        // Any other status (no detail, no prefix): by its gRPC code.
        assert_eq!(outcome_of(&headers(tonic::Status::unimplemented("no such method"))).unwrap().label(), "UNIMPLEMENTED");
        assert_eq!(outcome_of(&headers(tonic::Status::unavailable("down"))).unwrap().label(), "UNAVAILABLE");
        assert_eq!(outcome_of(&headers(tonic::Status::already_exists("agrees"))).unwrap().label(), "ALREADY_EXISTS");
        assert_eq!(outcome_of(&headers(tonic::Status::deadline_exceeded("late"))), Some(Outcome::Grpc(tonic::Code::DeadlineExceeded)));
        // Details without the message prefix: decoded.
        let mut odd = headers(hongbao_proto::error(ErrorCode::NotLeader, "x"));
        odd.insert("grpc-message", HeaderValue::from_static("moved"));
        assert_eq!(outcome_of(&odd), Some(Outcome::Error(ErrorCode::NotLeader)));
        let mut ok = HeaderMap::new();
        assert_eq!(outcome_of(&ok), None, "no status: in the trailers");
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(outcome_of(&ok), Some(Outcome::Ok));
    }

    #[test]
    fn every_code_has_its_own_counter_slot() {
        let mut seen = std::collections::BTreeSet::new();
        for v in 0..200 {
            if let Ok(c) = ErrorCode::try_from(v) {
                assert!(seen.insert(slot(c).unwrap_or_else(|| panic!("{c:?} has no slot"))), "{c:?} shares a slot");
            }
        }
        assert!(seen.iter().all(|s| *s < CODE_SLOTS));
    }

    /// A response body of fixed frames (data, then trailers).
    struct Frames(std::collections::VecDeque<http_body::Frame<tonic::codegen::Bytes>>);

    impl http_body::Body for Frames {
        type Data = tonic::codegen::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// `/t.S/Ok` answers a message then OK in the trailers; `/t.S/Refused` a trailers-only
    /// ALREADY_GRABBED; `/t.S/Stuck` never answers.
    #[derive(Clone)]
    struct Handler;

    impl Service<Request<()>> for Handler {
        type Response = Response<Frames>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Frames>, std::convert::Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Self::Future {
            let path = req.uri().path().to_string();
            Box::pin(async move {
                let mut frames = std::collections::VecDeque::new();
                let mut resp = Response::new(());
                match path.as_str() {
                    "/t.S/Ok" => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        frames.push_back(http_body::Frame::data(tonic::codegen::Bytes::from_static(b"answer")));
                        frames.push_back(http_body::Frame::trailers(trailers));
                    }
                    "/t.S/Refused" => {
                        *resp.headers_mut() =
                            hongbao_proto::error(ErrorCode::AlreadyGrabbed, "no").into_http::<()>().into_parts().0.headers;
                    }
                    _ => std::future::pending::<()>().await,
                }
                Ok(resp.map(|()| Frames(frames)))
            })
        }
    }

    fn call(svc: &mut Red<Handler>, path: &str) -> RedFuture<<Handler as Service<Request<()>>>::Future> {
        svc.call(Request::builder().uri(format!("http://node{path}")).body(()).unwrap())
    }

    #[test]
    fn the_layer_counts_each_call_once_by_its_status_wherever_it_is_and_times_it() {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("t_rpc_seconds".into()), crate::LATENCY_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use tower_layer::Layer;
                let mut svc = RedLayer::new("t_rpc_requests_total", "t_rpc_seconds").layer(Handler);
                for i in 0..2 {
                    let resp = call(&mut svc, "/t.S/Ok").await.unwrap();
                    let mut body = std::pin::pin!(resp.into_body());
                    let before_trailers = format!("t_rpc_requests_total{{method=\"t.S/Ok\",code=\"OK\"}} {i}\n");
                    assert!(handle.render().contains(&before_trailers), "not counted before its trailers");
                    while std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await.is_some() {}
                }
                let resp = call(&mut svc, "/t.S/Refused").await.unwrap();
                drop(resp);
                let stuck = call(&mut svc, "/t.S/Stuck");
                assert!(tokio::time::timeout(std::time::Duration::from_millis(20), stuck).await.is_err(), "dropped unanswered");
            });
        });
        let page = handle.render();
        for line in [
            "t_rpc_requests_total{method=\"t.S/Ok\",code=\"OK\"} 2",
            "t_rpc_requests_total{method=\"t.S/Refused\",code=\"ALREADY_GRABBED\"} 1",
            "t_rpc_requests_total{method=\"t.S/Refused\",code=\"OK\"} 0",
            "t_rpc_requests_total{method=\"t.S/Stuck\",code=\"CANCELLED\"} 1",
            "t_rpc_seconds_count{method=\"t.S/Ok\"} 2",
            "t_rpc_seconds_bucket{method=\"t.S/Stuck\",le=\"+Inf\"} 1",
        ] {
            assert!(page.contains(line), "{line} missing from:\n{page}");
        }
    }

    #[test]
    fn methods_beyond_the_bound_count_as_other() {
        let layer = RedLayer::new("test_red_requests_total", "test_red_seconds");
        assert_eq!(layer.method("/hongbao.v1.Packets/Grab").label(), "hongbao.v1.Packets/Grab");
        assert!(Arc::ptr_eq(&layer.method("/hongbao.v1.Packets/Grab"), &layer.method("/hongbao.v1.Packets/Grab")));
        for i in 1..MAX_METHODS {
            layer.method(&format!("/x.Y/M{i}"));
        }
        assert_eq!(layer.method("/x.Y/M1").label(), "x.Y/M1");
        assert_eq!(layer.method("/x.Y/Unseen").label(), OTHER_METHOD);
        assert_eq!(layer.method("/x.Y/Another").label(), OTHER_METHOD);
    }
}
