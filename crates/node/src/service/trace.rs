//! W3C trace context on a node (#15): a call that comes with a `traceparent` (routers send one
//! with every call they forward, clients of the library with theirs) runs in a span with its
//! trace id, and ends with one log line naming the trace id, the method and the outcome code. A
//! sampled trace (flags bit 0, the caller's choice) is logged at info; others at debug, so a busy
//! node writes nothing extra. Coalesced grabs carry the trace context of their sampled grabs in
//! the batch's metadata (`GRAB_TRACE_IDS`), each logged with its own grab.
//!
//! With OTLP export on (`hongbao_telemetry::tracing_init`), the span is exported as a child of
//! the caller's span (the `traceparent`'s parent id), named after the method, with the outcome
//! code as its `code` attribute.
use hongbao_proto::detail_of;
use std::time::Duration;
use tonic::codegen::http::HeaderMap;
use tonic::Status;

pub const TRACEPARENT: &str = "traceparent";
/// The trace context of a batch's sampled grabs, comma-separated in the batch's order, an empty
/// entry for each other grab (the router's `trace::GRAB_TRACE_IDS`): `<trace id>-<parent id>`,
/// or a bare trace id (routers before OTLP export).
pub const GRAB_TRACE_IDS: &str = "hongbao-grab-trace-ids";

/// One call's trace: its trace id (32 lowercase hex digits), the caller's span id (16 lowercase
/// hex digits, when known) and whether it is sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    pub id: String,
    pub parent: Option<String>,
    pub sampled: bool,
}

/// A valid `traceparent` (version 00, or a later one read as 00); None for anything else.
pub fn parse(v: &str) -> Option<Traced> {
    let (id, flags) = hongbao_proto::parse_traceparent(v)?;
    // Well-formed, so the third field is the 16-digit parent id.
    let parent = v.trim().split('-').nth(2).map(str::to_string);
    Some(Traced { id, parent, sampled: flags & 1 == 1 })
}

impl Traced {
    /// The call's trace, when it came with a valid `traceparent`.
    pub fn of(headers: &HeaderMap) -> Option<Traced> {
        headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse)
    }

    /// The call's span, `method` its name when exported (`hongbao.v1.Wallet/TopUp`), continuing
    /// the caller's trace. Create it before the call runs: an exported span takes its parent
    /// when first entered.
    pub fn span(&self, method: &str) -> tracing::Span {
        let span = if self.sampled {
            tracing::info_span!("call", trace_id = %self.id, otel.name = method, code = tracing::field::Empty)
        } else {
            tracing::debug_span!("call", trace_id = %self.id, otel.name = method, code = tracing::field::Empty)
        };
        if let Some(parent) = &self.parent {
            hongbao_telemetry::tracing_init::continue_trace(&span, &self.id, parent, self.sampled);
        }
        span
    }

    /// The call's one log line, and its outcome code on `span` (the one [`Traced::span`] made);
    /// `status` gives its error (None: answered OK), read only when the line or the span is
    /// written.
    pub fn served(&self, span: &tracing::Span, method: &str, status: impl FnOnce() -> Option<Status>, elapsed: Duration) {
        let line = if self.sampled { tracing::enabled!(tracing::Level::INFO) } else { tracing::enabled!(tracing::Level::DEBUG) };
        if !line && span.is_disabled() {
            return;
        }
        let code = status().map(|s| detail_of(&s).code().as_str_name()).unwrap_or("OK");
        span.record("code", code);
        if self.sampled {
            tracing::info!(trace_id = %self.id, method, code, ?elapsed, "served");
        } else {
            tracing::debug!(trace_id = %self.id, method, code, ?elapsed, "served");
        }
    }
}

/// A coalesced batch's per-grab traces, in the batch's order (None: not sampled, or not well
/// formed). Empty when the batch carries none.
pub fn grab_trace_ids(headers: &HeaderMap) -> Vec<Option<Traced>> {
    let Some(v) = headers.get(GRAB_TRACE_IDS).and_then(|v| v.to_str().ok()) else { return Vec::new() };
    v.split(',').map(grab_trace).collect()
}

/// One entry of `GRAB_TRACE_IDS`: `<trace id>-<parent id>`, or a bare trace id.
fn grab_trace(entry: &str) -> Option<Traced> {
    let (id, parent) = match entry.split_once('-') {
        Some((id, parent)) => (id, Some(parent)),
        None => (entry, None),
    };
    let parent_ok = parent.is_none_or(|p| {
        p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && p.bytes().any(|b| b != b'0')
    });
    (hongbao_proto::is_trace_id(id) && parent_ok).then(|| Traced { id: id.to_string(), parent: parent.map(str::to_string), sampled: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let t = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t, Traced { id: "4bf92f3577b34da6a3ce929d0e0e4736".into(), parent: Some("00f067aa0ba902b7".into()), sampled: true });
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
        h.insert(
            GRAB_TRACE_IDS,
            HeaderValue::from_static(
                ",4bf92f3577b34da6a3ce929d0e0e4736,,not-an-id,4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7,\
                 4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000,4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7",
            ),
        );
        let ids: Vec<Option<(String, Option<String>)>> = grab_trace_ids(&h).into_iter().map(|t| t.map(|t| (t.id, t.parent))).collect();
        let id = || "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
        assert_eq!(ids, vec![None, Some((id(), None)), None, None, Some((id(), Some("00f067aa0ba902b7".into()))), None, None]);
    }
}
