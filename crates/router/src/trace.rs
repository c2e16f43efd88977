//! W3C trace context through the router (#15): a client call's `traceparent` (read, or created
//! when missing or malformed) goes on to the node with this hop's own parent id, and the trace id
//! is on the router's log lines for that call. A sampled trace (flags bit 0, set by the caller)
//! is logged at info, one line per call; others at debug, so a busy router writes nothing extra.
//!
//! With OTLP export on (`hongbao_telemetry::tracing_init`), the call's span is exported as a
//! child of the client's span, and the parent id sent on to the node is that span's id, so the
//! node's span hangs under the router's in the same trace.

use hongbao_telemetry::tracing_init;
use rand::Rng;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Request;

/// The gRPC metadata key (the W3C header's name).
pub const TRACEPARENT: &str = "traceparent";
/// Coalesced grabs: the trace context of the sampled grabs in a batch, comma-separated in the
/// order of the batch's grabs (`<trace id>-<parent id>`, an empty entry for each other grab);
/// absent when no grab is sampled.
pub const GRAB_TRACE_IDS: &str = "hongbao-grab-trace-ids";

/// One call's trace context, as sent on to the node.
#[derive(Clone, Debug)]
pub struct Trace {
    /// 32 lowercase hex digits.
    pub id: String,
    pub sampled: bool,
    flags: u8,
    /// The caller's span (16 hex digits), when the call came with a valid `traceparent`.
    parent: Option<String>,
    /// This hop's parent id for the node when its span is not exported (16 hex digits).
    hop: String,
}

impl Trace {
    /// The caller's trace (a new parent id: this hop's), or a new unsampled one.
    pub fn of<T>(req: &Request<T>) -> Trace {
        let header = req.metadata().get(TRACEPARENT).and_then(|v| v.to_str().ok());
        let parsed = header.and_then(|v| parse(v).map(|(id, flags)| (id, flags, v.trim().split('-').nth(2).map(str::to_string))));
        let mut rng = rand::thread_rng();
        let (id, flags, parent) = parsed.unwrap_or_else(|| (format!("{:032x}", rng.gen::<u128>().max(1)), 0, None));
        Trace { id, sampled: flags & 1 == 1, flags, parent, hop: format!("{:016x}", rng.gen::<u64>().max(1)) }
    }

    /// `msg` with this trace's `traceparent`, for the node. Inside the call's span (`span`):
    /// when that span is exported, its id is the parent the node continues from.
    pub fn request<Q>(&self, msg: Q) -> Request<Q> {
        let parent = tracing_init::span_id(&tracing::Span::current()).unwrap_or_else(|| self.hop.clone());
        let header: MetadataValue<Ascii> =
            format!("00-{}-{parent}-{:02x}", self.id, self.flags).parse().expect("hex digits and dashes are ASCII");
        let mut r = Request::new(msg);
        r.metadata_mut().insert(TRACEPARENT, header);
        r
    }

    /// The span a call's log lines are in: info when sampled, else debug (off by default).
    /// Exported as `router <what>` (`router GrabRequest`) in the caller's trace, with the
    /// shard, and the node and outcome code once recorded.
    pub fn span(&self, what: &str, shard: u32) -> tracing::Span {
        use tracing::field::Empty;
        let span = if self.sampled {
            tracing::info_span!("call", trace_id = %self.id, otel.name = %format!("router {what}"), shard, node = Empty, code = Empty)
        } else {
            tracing::debug_span!("call", trace_id = %self.id, otel.name = %format!("router {what}"), shard, node = Empty, code = Empty)
        };
        if let Some(parent) = &self.parent {
            tracing_init::continue_trace(&span, &self.id, parent, self.sampled);
        }
        span
    }
}

/// A call's request and its trace: `let (trace, r) = trace::split(req)`.
pub fn split<T>(req: Request<T>) -> (Trace, T) {
    (Trace::of(&req), req.into_inner())
}

/// (trace id, flags) of a valid `traceparent` (version 00, or a later one read as 00); None for
/// anything else, which starts a new trace as the W3C rules say.
pub fn parse(v: &str) -> Option<(String, u8)> {
    hongbao_proto::parse_traceparent(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_anything_else_starts_a_new_trace() {
        assert_eq!(parse(TP), Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), 1)));
        assert_eq!(
            parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), 0))
        );
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736\n-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_node_gets_the_callers_trace_id_with_this_hops_parent_id() {
        let mut req = Request::new(());
        req.metadata_mut().insert(TRACEPARENT, TP.parse().unwrap());
        let t = Trace::of(&req);
        assert_eq!((t.id.as_str(), t.sampled), ("4bf92f3577b34da6a3ce929d0e0e4736", true));
        let out = t.request(());
        let sent = out.metadata().get(TRACEPARENT).unwrap().to_str().unwrap();
        assert_eq!(parse(sent), Some((t.id.clone(), 1)));
        assert_ne!(sent, TP, "a parent id of its own");

        let fresh = Trace::of(&Request::new(()));
        assert!(!fresh.sampled && parse(fresh.request(()).metadata().get(TRACEPARENT).unwrap().to_str().unwrap()).is_some());
        assert_ne!(fresh.id, Trace::of(&Request::new(())).id);
    }
}
