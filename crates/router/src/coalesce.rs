//! Router-to-node coalescing of grabs. In a grab storm most of a router's CPU (and much of the
//! node's) went into per-call HTTP/2 and gRPC work, one call per grab. Here each node has a queue;
//! a sender task takes whatever grabs are waiting (up to `MAX_GRAB_BATCH`) and sends them in one
//! `Coalesced.Grabs` call, with a few such calls in flight per node. Nothing waits on a timer:
//! under light load a grab goes out alone at once; under heavy load grabs pile up while earlier
//! calls are in flight and leave together. Each grab keeps its request id and gets its own result,
//! so retries and failover in `Router::forward` work exactly as for single calls. A sampled
//! grab's trace id and parent id go along in the batch's metadata (`trace::GRAB_TRACE_IDS`), for
//! the node to log the grab with its trace id and export its span in that trace.

use hongbao_proto::v1::coalesced_client::CoalescedClient;
use hongbao_proto::v1::{GrabBatchRequest, GrabReply, GrabRequest};
use hongbao_proto::{error, status, ErrorCode, MAX_GRAB_BATCH};
use hongbao_topology::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::limits::{MAX_BATCHES_IN_FLIGHT, MAX_QUEUED_PER_NODE};

type Answer = oneshot::Sender<Result<GrabReply, Status>>;
/// A grab waiting to go, with `<trace id>-<parent id>` when its trace is sampled.
type Queued = (GrabRequest, Option<String>, Answer);

pub struct Coalescer {
    /// One queue per node, made on the node's first grab: nodes join the cluster map while the
    /// router runs (#16), so the set is not known at start.
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Queued>>>,
    call_timeout: Duration,
}

impl Coalescer {
    /// `call_timeout` bounds each coalesced call, so a node that stops answering frees its
    /// in-flight slots.
    pub fn new(call_timeout: Duration) -> Arc<Coalescer> {
        Arc::new(Coalescer { queues: Mutex::new(HashMap::new()), call_timeout })
    }

    /// `node`'s queue, starting its sender task (on `ch`) if it has none yet.
    fn queue(&self, node: NodeId, ch: &Channel) -> mpsc::Sender<Queued> {
        let mut queues = self.queues.lock().expect("queues lock");
        queues
            .entry(node)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(MAX_QUEUED_PER_NODE);
                tokio::spawn(send_loop(node, ch.clone(), rx, self.call_timeout));
                tx
            })
            .clone()
    }

    /// Drops `node`'s queue (the node left the map, or its address changed). Its sender task
    /// sends what is queued, then ends; a later grab for the node starts a new one.
    pub fn forget(&self, node: NodeId) {
        self.queues.lock().expect("queues lock").remove(&node);
    }

    /// Whether `node` has a queue (tests).
    #[cfg(test)]
    fn has_queue(&self, node: NodeId) -> bool {
        self.queues.lock().expect("queues lock").contains_key(&node)
    }

    /// Sends `req` to `node` (over `ch`) in the next coalesced call and waits for its own result.
    pub async fn grab(&self, node: NodeId, ch: &Channel, req: Request<GrabRequest>) -> Result<GrabReply, Status> {
        let queue = self.queue(node, ch);
        // A sampled grab's trace id and parent id (the router's span when exported), for the
        // node to continue its trace.
        let header = req.metadata().get(crate::trace::TRACEPARENT).and_then(|v| v.to_str().ok());
        let trace_id = header
            .and_then(|v| crate::trace::parse(v).filter(|(_, flags)| flags & 1 == 1).zip(v.trim().split('-').nth(2)))
            .map(|((id, _), parent)| format!("{id}-{parent}"));
        let (tx, rx) = oneshot::channel();
        queue.try_send((req.into_inner(), trace_id, tx)).map_err(|_| {
            metrics::counter!(crate::metrics::OVERLOADED).increment(1);
            error(ErrorCode::Overloaded, format!("router: {MAX_QUEUED_PER_NODE} grabs queued for node {node}; back off and retry"))
        })?;
        rx.await.map_err(|_| error(ErrorCode::Unavailable, format!("router: call to node {node} was dropped")))?
    }
}

async fn send_loop(node: NodeId, ch: Channel, mut queue: mpsc::Receiver<Queued>, call_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_GRAB_BATCH {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::metrics::COALESCED_GRABS).record(batch.len() as f64);
        let ch = ch.clone();
        tokio::spawn(async move {
            let mut req = GrabBatchRequest { grabs: Vec::with_capacity(batch.len()) };
            let (mut traces, mut answers) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
            for (grab, trace, answer) in batch {
                req.grabs.push(grab);
                traces.push(trace);
                answers.push(answer);
            }
            let n = req.grabs.len();
            let mut req = Request::new(req);
            // At most 256 entries of 49 characters (12.5 KiB): inside a node's 16 KiB of headers.
            if traces.iter().any(Option::is_some) {
                let ids: Vec<&str> = traces.iter().map(|t| t.as_deref().unwrap_or("")).collect();
                if let Ok(v) = ids.join(",").parse() {
                    req.metadata_mut().insert(crate::trace::GRAB_TRACE_IDS, v);
                }
            }
            let res = tokio::time::timeout(call_timeout, CoalescedClient::new(ch).grabs(req)).await;
            drop(slot);
            let results = match res {
                Ok(Ok(reply)) => reply.into_inner().results,
                Ok(Err(s)) => return answer_all(answers, &s),
                Err(_) => return answer_all(answers, &error(ErrorCode::Timeout, format!("node {node} did not answer in time"))),
            };
            if results.len() != n {
                let s = error(ErrorCode::Internal, format!("node {node} answered {} results for {n} grabs", results.len()));
                return answer_all(answers, &s);
            }
            for (answer, r) in answers.into_iter().zip(results) {
                let one = match (r.reply, r.error) {
                    (_, Some(detail)) => Err(status(detail)),
                    (Some(reply), None) => Ok(reply),
                    (None, None) => Err(error(ErrorCode::Internal, format!("node {node} answered a grab with neither reply nor error"))),
                };
                // The caller may have given up (its own deadline): nothing to tell it then.
                let _ = answer.send(one);
            }
        });
    }
}

/// The whole call failed: every grab in it hears the same status (outcome unknown for
/// UNAVAILABLE / TIMEOUT, so `forward` retries each with its request id).
fn answer_all(answers: Vec<Answer>, s: &Status) {
    for a in answers {
        let _ = a.send(Err(s.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_proto::detail_of;

    /// A channel to a port nothing listens on: every call fails at once, as UNAVAILABLE.
    fn dead_channel() -> Channel {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy()
    }

    #[tokio::test]
    async fn a_node_added_after_start_gets_a_queue_on_its_first_grab() {
        let c = Coalescer::new(Duration::from_millis(500));
        assert!(!c.has_queue(7), "no node is known at start");
        let err = c.grab(7, &dead_channel(), Request::new(GrabRequest::default())).await.unwrap_err();
        // The grab went out to the node (and found nothing there): not "no queue for node 7".
        assert!(matches!(detail_of(&err).code(), ErrorCode::Unavailable | ErrorCode::Timeout), "{err:?}");
        assert!(c.has_queue(7));
        c.forget(7);
        assert!(!c.has_queue(7), "a node that left the map loses its queue");
        c.grab(7, &dead_channel(), Request::new(GrabRequest::default())).await.unwrap_err();
        assert!(c.has_queue(7), "and gets a new one if it comes back");
    }
}
