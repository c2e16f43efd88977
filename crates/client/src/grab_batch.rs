//! Grabs sent many to a call (`GrabGateway.Grabs`), for gateways and load generators that hold
//! many users' grabs at once. Callers call [`GrabBatcher::grab`] as they would `Client::grab`;
//! a sender task takes whatever grabs are waiting (up to `MAX_GRAB_BATCH`) and sends them in one
//! call with each grab's own token, with a few such calls in flight. Nothing waits on a timer:
//! alone, a grab goes out at once; under load grabs pile up while earlier calls are in flight
//! and leave together (as a router coalesces grabs for a node).
//!
//! Each grab keeps its request id on every re-send, so a grab whose outcome was unknown (the
//! whole call failed, or its own result said UNAVAILABLE) is settled by sending it again, never
//! paid twice. The CLI and single calls do not use this.

use crate::{refused, Client, ClientError, Result};
use hongbao_auth::Role;
use hongbao_proto::v1::grab_gateway_client::GrabGatewayClient;
use hongbao_proto::v1::{GrabReply, GrabRequest, UserGrab, UserGrabBatchRequest};
use hongbao_proto::{retry_step, ErrorCode, ErrorDetail, RetryStep, MAX_GRAB_BATCH};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::limits::{BACKOFF_MAX, BACKOFF_START, MAX_ATTEMPTS, MAX_BATCHES_IN_FLIGHT, MAX_QUEUED_GRABS};

type Answer = oneshot::Sender<std::result::Result<GrabReply, ErrorDetail>>;

pub struct GrabBatcher {
    client: Arc<Client>,
    queue: mpsc::Sender<(UserGrab, Answer)>,
}

impl GrabBatcher {
    /// A batcher sending through `client` (its endpoints, its `app` certificate, its users'
    /// tokens). Spawns its sender task on the current runtime; the task ends with the batcher.
    pub fn new(client: Arc<Client>) -> Arc<GrabBatcher> {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_GRABS);
        tokio::spawn(send_loop(client.clone(), rx));
        Arc::new(GrabBatcher { client, queue: tx })
    }

    /// `Client::grab`, sent in a batch: the same request, answered with the same outcome, retried
    /// within the client's deadline and attempts while its outcome is unknown.
    pub async fn grab(&self, request_id: Vec<u8>, packet: crate::PacketRef, grabber: u64, password: &str) -> Result<GrabReply> {
        let token = self.client.user_token(grabber)?;
        let grab = GrabRequest { request_id, packet_id: packet.id, packet_key: packet.key, grabber, password: password.into() };
        let start = Instant::now();
        let mut backoff = BACKOFF_START;
        let mut last = ErrorDetail { code: ErrorCode::Unavailable as i32, message: "no attempt made".into(), ..Default::default() };
        for _ in 0..MAX_ATTEMPTS {
            let left = self.client.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let (tx, rx) = oneshot::channel();
            let entry = UserGrab { grab: Some(grab.clone()), token: token.clone() };
            let res = match self.queue.try_send((entry, tx)) {
                Ok(()) => match tokio::time::timeout(left, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(detail(ErrorCode::Unavailable, "the grab batcher stopped")),
                    Err(_) => Err(detail(ErrorCode::Timeout, "no answer within the deadline")),
                },
                Err(_) => Err(detail(ErrorCode::Overloaded, &format!("{MAX_QUEUED_GRABS} grabs queued in this batcher"))),
            };
            let d = match res {
                Ok(reply) => return Ok(reply),
                Err(d) => d,
            };
            if retry_step(d.code()) == RetryStep::Final {
                return Err(ClientError { detail: d });
            }
            last = d;
            tokio::time::sleep(backoff.min(self.client.deadline.saturating_sub(start.elapsed()))).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        last.message = format!("gave up after {:?}: {}", start.elapsed(), last.message);
        if matches!(last.code(), ErrorCode::UnknownShard | ErrorCode::Internal) {
            last.code = ErrorCode::Unavailable as i32;
        }
        Err(ClientError { detail: last })
    }
}

fn detail(code: ErrorCode, message: &str) -> ErrorDetail {
    ErrorDetail { code: code as i32, message: message.into(), ..Default::default() }
}

async fn send_loop(client: Arc<Client>, mut queue: mpsc::Receiver<(UserGrab, Answer)>) {
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
        let client = client.clone();
        tokio::spawn(async move {
            let (grabs, answers): (Vec<UserGrab>, Vec<Answer>) = batch.into_iter().unzip();
            let n = grabs.len();
            let req = UserGrabBatchRequest { grabs };
            // `call` re-sends the whole batch while the call itself fails (no router, a timeout):
            // every grab in it keeps its request id, so a re-send never pays twice.
            let res = client
                .call(Role::App, crate::Auth::default(), |ch, a| {
                    let r = a.req(req.clone());
                    async move { GrabGatewayClient::new(ch).grabs(r).await }
                })
                .await;
            drop(slot);
            let results = match res {
                Ok(reply) if reply.results.len() == n => reply.results,
                Ok(reply) => {
                    let d = detail(ErrorCode::Unavailable, &format!("the router answered {} results for {n} grabs", reply.results.len()));
                    return answer_all(answers, &d);
                }
                Err(e) => return answer_all(answers, &e.detail),
            };
            for (answer, r) in answers.into_iter().zip(results) {
                let one = match (r.reply, r.error) {
                    (_, Some(d)) => Err(d),
                    (Some(reply), None) => Ok(reply),
                    (None, None) => Err(detail(ErrorCode::Unavailable, "the router answered a grab with neither reply nor error")),
                };
                // The caller may have given up (its deadline): nothing to tell it then.
                let _ = answer.send(one);
            }
        });
    }
}

/// The whole call failed: each grab hears why (its outcome unknown unless the code is final,
/// e.g. PERMISSION_DENIED for a certificate without the `app` role).
fn answer_all(answers: Vec<Answer>, d: &ErrorDetail) {
    for a in answers {
        let _ = a.send(Err(d.clone()));
    }
}

impl Client {
    /// The raw token (no `Bearer `) of `user`, for calls that carry tokens in their body.
    pub(crate) fn user_token(&self, user: u64) -> Result<String> {
        let tokens = self.creds.tokens.as_ref().ok_or_else(|| {
            refused(ErrorCode::Unauthenticated, format!("no user tokens configured; user {user} needs one (hongbao login)"))
        })?;
        tokens.token(user, None).map_err(|m| refused(ErrorCode::Unauthenticated, m))
    }
}
