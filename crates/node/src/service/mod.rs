//! The gRPC services this node serves, and the only room that builds proto replies: the public
//! API (`api`, `notifier`), cluster admin (`cluster`), health and reflection (`health`), fault
//! injection in test builds (`faults`); who may call what (`access`), the payment PIN's verdict
//! (`pin`), every mapping between domain types and proto (`convert`), request tracing
//! (`trace`), and the per-call deadlines below.

pub mod access;
pub mod api;
pub mod cluster;
pub mod convert;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod health;
pub mod notifier;
pub mod pin;
pub mod trace;

use hongbao_proto::ErrorCode;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

/// How long one unary call may run on this node: the caller's `grpc-timeout` when it sent one,
/// never more than `max`; `default` when it sent none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub default: Duration,
    pub max: Duration,
}

/// The public API (wallet, packets, coalesced grabs, notifier): above the longest wait inside a
/// call (`host::PROPOSE_TIMEOUT`), so a caller that sends no deadline sees the same answers as
/// before; what a call may still add (a PIN hash, several acknowledgement rounds) is cut here.
pub const API_DEADLINES: Deadlines = Deadlines { default: Duration::from_secs(6), max: Duration::from_secs(10) };
/// Cluster admin: a drain or an audit walks every shard and may take tens of seconds.
pub const ADMIN_DEADLINES: Deadlines = Deadlines { default: Duration::from_secs(30), max: Duration::from_secs(60) };
/// The Raft transport's unary calls (append, votes, leader transfer, forwarded proposals). The
/// snapshot stream is not cut by it (`RAFT_STREAMS`): each of its messages has its own wait.
pub const RAFT_DEADLINES: Deadlines = Deadlines { default: Duration::from_secs(6), max: Duration::from_secs(10) };
/// The Raft transport's streaming methods (bounded per message in `transport::server`).
pub const RAFT_STREAMS: &[&str] = &["InstallSnapshot"];

/// Our deadline ends before the caller's, so the answer is ours (DEADLINE_EXCEEDED with a
/// TIMEOUT detail) and reaches the caller before its own cut (tonic's, CANCELLED): a tenth of
/// the time, at least this much (a busy machine delays the reply by milliseconds).
const MIN_MARGIN: Duration = Duration::from_millis(20);

fn margin(t: Duration) -> Duration {
    (t / 10).max(MIN_MARGIN).min(t / 2)
}

impl Deadlines {
    /// The time a call with these headers gets.
    pub fn of(&self, headers: &HeaderMap) -> Duration {
        match grpc_timeout(headers) {
            Some(t) => {
                let t = t.min(self.max);
                t - margin(t)
            }
            None => self.default,
        }
    }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a unit), if well formed.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC service whose unary calls end by their deadline (`Deadlines`): past it the caller
/// hears DEADLINE_EXCEEDED with a TIMEOUT detail, which says the outcome is unknown (a write
/// may still be applied; re-send it with the same request id), never a refusal. The handler's
/// future is dropped, so nothing more waits on the caller's behalf. Streaming methods (`streams`,
/// by method name) are passed through uncut: they bound each message themselves.
///
/// Per service, not tonic's `Server::timeout`, which would also cut snapshot streams.
///
/// A unary call that came with a W3C `traceparent` runs in a span with its trace id (exported
/// over OTLP when that is on) and ends with one log line (`trace::Traced::served`).
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    deadlines: Deadlines,
    streams: &'static [&'static str],
}

impl<S> Deadline<S> {
    pub fn new(inner: S, deadlines: Deadlines) -> Deadline<S> {
        Deadline { inner, deadlines, streams: &[] }
    }

    /// Methods (by name, as in the proto) never cut by the deadline.
    pub fn streams(mut self, methods: &'static [&'static str]) -> Deadline<S> {
        self.streams = methods;
        self
    }
}

impl<S, B, R> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
    R: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    R::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        if self.streams.contains(&method) {
            let call = self.inner.call(req);
            return Box::pin(async move { call.await.map(|r| r.map(Body::new)) });
        }
        let limit = self.deadlines.of(req.headers());
        let path = req.uri().path().to_string();
        let trace = trace::Traced::of(req.headers());
        let span = trace.as_ref().map(|t| t.span(path.trim_start_matches('/'))).unwrap_or_else(tracing::Span::none);
        let call = tracing::Instrument::instrument(span.in_scope(|| self.inner.call(req)), span.clone());
        let started = Instant::now();
        Box::pin(async move {
            let res = match tokio::time::timeout(limit, call).await {
                Ok(res) => res.map(|r| r.map(Body::new)),
                Err(_) => {
                    tracing::debug!(%path, ?limit, "call cut at its deadline");
                    let msg = format!(
                        "{path}: no answer within the call's deadline ({limit:?}); the outcome is unknown: \
                         re-send with the same request id"
                    );
                    Ok(hongbao_proto::error(ErrorCode::Timeout, msg).into_http())
                }
            };
            if let (Some(t), Ok(r)) = (&trace, &res) {
                t.served(&span, &path, || tonic::Status::from_header_map(r.headers()), started.elapsed());
            }
            res
        })
    }
}

impl<S: NamedService> NamedService for Deadline<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    fn headers(timeout: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = timeout {
            h.insert("grpc-timeout", HeaderValue::from_str(t).unwrap());
        }
        h
    }

    #[test]
    fn a_call_gets_the_callers_deadline_capped_or_the_default() {
        let d = Deadlines { default: Duration::from_secs(6), max: Duration::from_secs(10) };
        assert_eq!(d.of(&headers(None)), Duration::from_secs(6));
        assert_eq!(d.of(&headers(Some("300m"))), Duration::from_millis(270));
        assert_eq!(d.of(&headers(Some("100m"))), Duration::from_millis(80), "at least 20 ms early");
        assert_eq!(d.of(&headers(Some("2S"))), Duration::from_millis(1800));
        assert_eq!(d.of(&headers(Some("1H"))), Duration::from_secs(9), "capped at the maximum");
        assert_eq!(d.of(&headers(Some("1000000u"))), Duration::from_millis(900));
        assert_eq!(d.of(&headers(Some("30m"))), Duration::from_millis(15), "never less than half");
        for junk in ["", "m", "12", "12x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(grpc_timeout(&headers(Some(junk))), None, "{junk:?}");
            assert_eq!(d.of(&headers(Some(junk))), Duration::from_secs(6), "{junk:?}: the default");
        }
    }

    /// Answers every call after `delay`, with an empty OK response.
    #[derive(Clone)]
    struct Slow(Duration);

    impl Service<Request<Body>> for Slow {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Response<Body>, Infallible>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let delay = self.0;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(tonic::Status::ok("").into_http())
            })
        }
    }

    fn call(path: &str, timeout: Option<&str>) -> Request<Body> {
        let mut r = Request::builder().uri(format!("http://node{path}"));
        if let Some(t) = timeout {
            r = r.header("grpc-timeout", t);
        }
        r.body(Body::empty()).unwrap()
    }

    fn grpc_status(r: &Response<Body>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(r.headers())
    }

    #[tokio::test]
    async fn a_unary_call_ends_at_its_deadline_with_a_timeout_and_a_stream_is_never_cut() {
        let d = Deadlines { default: Duration::from_millis(200), max: Duration::from_millis(400) };
        let mut svc = Deadline::new(Slow(Duration::from_millis(1_000)), d).streams(RAFT_STREAMS);

        let started = tokio::time::Instant::now();
        let r = svc.call(call("/hongbao.v1.RaftTransport/Propose", Some("50m"))).await.unwrap();
        let took = started.elapsed();
        let s = grpc_status(&r).expect("a status");
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{s:?}");
        assert_eq!(hongbao_proto::detail_of(&s).code(), ErrorCode::Timeout, "an unknown outcome, retryable");
        assert!(took >= Duration::from_millis(25) && took < Duration::from_millis(150), "{took:?}");

        let started = tokio::time::Instant::now();
        svc.call(call("/hongbao.v1.RaftTransport/Append", None)).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190) && took < Duration::from_millis(400), "the default: {took:?}");

        let started = tokio::time::Instant::now();
        svc.call(call("/hongbao.v1.RaftTransport/Vote", Some("10S"))).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(350) && took < Duration::from_millis(700), "the maximum, less its margin: {took:?}");

        // The snapshot stream outlives the unary maximum and ends with the handler's own answer.
        let started = tokio::time::Instant::now();
        let r = svc.call(call("/hongbao.v1.RaftTransport/InstallSnapshot", Some("50m"))).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1_000));
        assert_eq!(grpc_status(&r).expect("a status").code(), tonic::Code::Ok);
    }
}
