//! W3C trace context through the router (#15): a client call's `traceparent` (read, or created
//! when missing or malformed) goes on to the node with this hop's own parent id, and the trace id
//! is on the router's log lines for that call. A sampled trace (flags bit 0, set by the caller)
//! is logged at info, one line per call; others at debug, so a busy router writes nothing extra.

use rand::Rng;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Request;

/// The gRPC metadata key (the W3C header's name).
pub const TRACEPARENT: &str = "traceparent";
/// Coalesced grabs: the trace ids of the sampled grabs in a batch, comma-separated in the order
/// of the batch's grabs (an empty entry for each other grab); absent when no grab is sampled.
pub const GRAB_TRACE_IDS: &str = "hongbao-grab-trace-ids";

/// One call's trace context, as sent on to the node.
#[derive(Clone, Debug)]
pub struct Trace {
    /// 32 lowercase hex digits.
    pub id: String,
    pub sampled: bool,
    header: MetadataValue<Ascii>,
}

impl Trace {
    /// The caller's trace (a new parent id: this hop's), or a new unsampled one.
    pub fn of<T>(req: &Request<T>) -> Trace {
        let parsed = req.metadata().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse);
        let mut rng = rand::thread_rng();
        let (id, flags) = parsed.unwrap_or_else(|| (format!("{:032x}", rng.gen::<u128>().max(1)), 0));
        let header = format!("00-{id}-{:016x}-{flags:02x}", rng.gen::<u64>().max(1));
        Trace { id, sampled: flags & 1 == 1, header: header.parse().expect("hex digits and dashes are ASCII") }
    }

    /// `msg` with this trace's `traceparent`, for the node.
    pub fn request<Q>(&self, msg: Q) -> Request<Q> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(TRACEPARENT, self.header.clone());
        r
    }

    /// The span a call's log lines are in: info when sampled, else debug (off by default).
    pub fn span(&self) -> tracing::Span {
        if self.sampled {
            tracing::info_span!("call", trace_id = %self.id)
        } else {
            tracing::debug_span!("call", trace_id = %self.id)
        }
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
