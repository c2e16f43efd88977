//! W3C trace context on a node (#15): a call that comes with a `traceparent` (routers send one
//! with every call they forward, clients of the library with theirs) runs in a span with its
//! trace id, and ends with one log line naming the trace id, the method and the outcome code. A
//! sampled trace (flags bit 0, the caller's choice) is logged at info; others at debug, so a busy
//! node writes nothing extra. Coalesced grabs carry the trace ids of their sampled grabs in the
//! batch's metadata (`GRAB_TRACE_IDS`), each logged with its own grab.

use hongbao_proto::detail_of;
use std::time::Duration;
use tonic::codegen::http::HeaderMap;
use tonic::Status;

pub const TRACEPARENT: &str = "traceparent";
/// The trace ids of a batch's sampled grabs, comma-separated in the batch's order, an empty
/// entry for each other grab (the router's `trace::GRAB_TRACE_IDS`).
pub const GRAB_TRACE_IDS: &str = "hongbao-grab-trace-ids";

/// One call's trace: its trace id (32 lowercase hex digits) and whether it is sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    pub id: String,
    pub sampled: bool,
}

/// A valid `traceparent` (version 00, or a later one read as 00); None for anything else.
pub fn parse(v: &str) -> Option<Traced> {
    hongbao_proto::parse_traceparent(v).map(|(id, flags)| Traced { id, sampled: flags & 1 == 1 })
}

impl Traced {
    /// The call's trace, when it came with a valid `traceparent`.
    pub fn of(headers: &HeaderMap) -> Option<Traced> {
        headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse)
    }

    pub fn span(&self) -> tracing::Span {
        if self.sampled {
            tracing::info_span!("call", trace_id = %self.id)
        } else {
            tracing::debug_span!("call", trace_id = %self.id)
        }
    }

    /// The call's one log line; `status` gives its error (None: answered OK), read only when
    /// the line is written.
    pub fn served(&self, method: &str, status: impl FnOnce() -> Option<Status>, elapsed: Duration) {
        let code = || status().map(|s| detail_of(&s).code().as_str_name()).unwrap_or("OK");
        if self.sampled {
            tracing::info!(trace_id = %self.id, method, code = code(), ?elapsed, "served");
        } else {
            tracing::debug!(trace_id = %self.id, method, code = code(), ?elapsed, "served");
        }
    }
}

/// A coalesced batch's per-grab trace ids, in the batch's order (None: not sampled, or not a
/// well-formed id). Empty when the batch carries none.
pub fn grab_trace_ids(headers: &HeaderMap) -> Vec<Option<Traced>> {
    let Some(v) = headers.get(GRAB_TRACE_IDS).and_then(|v| v.to_str().ok()) else { return Vec::new() };
    v.split(',').map(|id| hongbao_proto::is_trace_id(id).then(|| Traced { id: id.to_string(), sampled: true })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let t = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t, Traced { id: "4bf92f3577b34da6a3ce929d0e0e4736".into(), sampled: true });
        assert!(!parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_batch_names_the_trace_of_each_sampled_grab_in_order() {
        let mut h = HeaderMap::new();
        assert!(grab_trace_ids(&h).is_empty());
        h.insert(GRAB_TRACE_IDS, HeaderValue::from_static(",4bf92f3577b34da6a3ce929d0e0e4736,,not-an-id"));
        let ids: Vec<Option<String>> = grab_trace_ids(&h).into_iter().map(|t| t.map(|t| t.id)).collect();
        assert_eq!(ids, vec![None, Some("4bf92f3577b34da6a3ce929d0e0e4736".into()), None, None]);
    }
}
