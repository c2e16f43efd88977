//! hongbao client library: typed calls for the whole API, with failover.
//!
//! A `Client` knows a list of endpoints (routers, home region first) and its `Credentials`: a
//! certificate per service role, and user tokens for calls that act for a user. Each
//! call gets one request id, generated once and reused on every retry, so a retry after a
//! timeout or a failover can never move money twice. On NotLeader the client follows the leader
//! hint; on Unavailable / Timeout / Overloaded it backs off and tries the next endpoint, all
//! within the call's deadline.
//!
//! Every call carries a W3C `traceparent` (the same on each of its attempts): a new trace per
//! call, unsampled, unless the client continues a trace (`with_traceparent`, or the
//! `TRACEPARENT` environment variable): then its trace id and flags with a new parent id per
//! call. Routers and nodes log a sampled trace's id at info, one line per call (#15).

pub mod audit;
pub mod credentials;
pub mod grab_batch;
pub mod limits;
pub mod membership;
pub mod money;
pub mod rebalance;
pub mod when;

pub use credentials::Credentials;
use hongbao_auth::Role;
use hongbao_proto::v1::{
    cluster_client::ClusterClient, fault_injection_client::FaultInjectionClient, notifier_client::NotifierClient,
    packets_client::PacketsClient, wallet_client::WalletClient, *,
};
use hongbao_proto::{detail_of, retry_step, ErrorCode, ErrorDetail, RetryStep};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use limits::{ATTEMPT_TIMEOUT, BACKOFF_MAX, BACKOFF_START, MAX_ATTEMPTS, MEMBERSHIP_ATTEMPT, RESEND_PAUSE};

/// A failed call: the domain detail (code, message, leader hint, challenge id).
#[derive(Debug, Clone)]
pub struct ClientError {
    pub detail: ErrorDetail,
}

impl ClientError {
    pub fn code(&self) -> ErrorCode {
        self.detail.code()
    }
    /// The outcome is unknown (the request may or may not have been applied): re-sending the
    /// same request id settles it.
    pub fn outcome_unknown(&self) -> bool {
        retry_step(self.code()) != RetryStep::Final
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code().as_str_name(), self.detail.message)
    }
}
impl std::error::Error for ClientError {}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The topology of the local cluster: the one given, else the one `scripts/cluster up` wrote
/// (`$HONGBAO_HOME/topology.toml`, default `.cluster/`), else the shipped default.
pub fn local_topology_path(given: Option<&std::path::Path>) -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = given {
        return p.to_path_buf();
    }
    let mut candidates = Vec::new();
    if let Ok(home) = std::env::var("HONGBAO_HOME") {
        candidates.push(PathBuf::from(home).join("topology.toml"));
    }
    candidates.push(PathBuf::from(".cluster/topology.toml"));
    candidates.into_iter().find(|p| p.exists()).unwrap_or_else(|| PathBuf::from("deploy/local-3x1.toml"))
}

/// Runs a mutating call and re-sends it while its outcome is unknown (timeout, unavailable,
/// not leader, overloaded: [`ClientError::outcome_unknown`]), at most `max_resends` times and
/// not once `within` has passed since the first send. Returns the first definite answer, or the
/// last unknown one when a bound is reached.
///
/// Safe because `f` re-sends the *same* request, with the request id it captured once: the
/// ledger remembers request ids and applies a request at most once, so a re-send either applies
/// it (the first try never landed) or returns the remembered result (it did). `f` must not make
/// a fresh request id per call, or a re-send could move money twice.
pub async fn settle<T, F, Fut>(f: F, max_resends: u32, within: Duration) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut resends = 0;
    loop {
        match f().await {
            Err(e) if e.outcome_unknown() && resends < max_resends && start.elapsed() < within => {
                resends += 1;
                tokio::time::sleep(RESEND_PAUSE.min(within.saturating_sub(start.elapsed()))).await;
            }
            other => return other,
        }
    }
}

/// A fresh 16-byte request id, UUIDv7's layout: the first 48 bits are now in Unix ms (the
/// ledger's request window starts there, so every re-send must reuse the id, never remake it),
/// then the version nibble 7, the variant bits 10, and 74 random bits.
/// What reaches a packet: its id and its key (`SendPacketReply`). The sender posts both to the
/// chat; a grab or a look without the key finds no packet. Written `<id>.<key in hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketRef {
    pub id: u64,
    pub key: u64,
}

impl From<&SendPacketReply> for PacketRef {
    fn from(r: &SendPacketReply) -> PacketRef {
        PacketRef { id: r.packet_id, key: r.packet_key }
    }
}

impl std::fmt::Display for PacketRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:016x}", self.id, self.key)
    }
}

/// Why a string is not a packet reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPacketRef {
    #[error("{0:?} is not a packet id: a packet is written <id>.<key>, as `packet send` prints it")]
    Id(String),
    #[error("{0:?} is not a packet key (16 hex digits)")]
    Key(String),
}

impl std::str::FromStr for PacketRef {
    type Err = BadPacketRef;
    /// `<id>.<key>`, or `<id>` alone (key 0: for the admin role, who needs none).
    fn from_str(s: &str) -> std::result::Result<PacketRef, BadPacketRef> {
        let (id, key) = s.split_once('.').unwrap_or((s, "0"));
        let id = id.parse().map_err(|_| BadPacketRef::Id(id.to_string()))?;
        let key = u64::from_str_radix(key, 16).map_err(|_| BadPacketRef::Key(key.to_string()))?;
        Ok(PacketRef { id, key })
    }
}

/// A `traceparent` that is not a W3C one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent: {0:?}")]
pub struct BadTraceparent(pub String);

pub fn new_request_id() -> Vec<u8> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut id: [u8; 16] = rand::random();
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id[6] = 0x70 | (id[6] & 0x0f);
    id[8] = 0x80 | (id[8] & 0x3f);
    id.to_vec()
}

/// How long a call may try: each attempt, all of them, and how many.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    attempt: Duration,
    deadline: Duration,
    attempts: u32,
}

pub struct Client {
    endpoints: Vec<String>,
    creds: Arc<Credentials>,
    channels: Mutex<HashMap<(Role, String), Channel>>,
    /// Index into `endpoints` that answered last; calls start there.
    preferred: Mutex<usize>,
    pub deadline: Duration,
    /// The trace every call continues (trace id, flags), if any.
    trace: Option<(String, u8)>,
}

/// Adds the acting user's token and the call's `traceparent` to a call's metadata.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<MetadataValue<Ascii>>,
    traceparent: Option<MetadataValue<Ascii>>,
}

impl Auth {
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(v) = &self.token {
            r.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.traceparent {
            r.metadata_mut().insert("traceparent", v.clone());
        }
        r
    }
}

pub use hongbao_proto::parse_traceparent;

fn refused(code: ErrorCode, message: String) -> ClientError {
    ClientError { detail: ErrorDetail { code: code as i32, message, ..Default::default() } }
}

impl Client {
    /// `endpoints` are `host:port` gRPC addresses (routers), in order of preference.
    pub fn new(endpoints: Vec<String>, creds: Arc<Credentials>) -> Client {
        assert!(!endpoints.is_empty(), "a client needs at least one endpoint");
        let trace = std::env::var("TRACEPARENT").ok().and_then(|v| parse_traceparent(&v));
        Client {
            endpoints,
            creds,
            channels: Mutex::new(HashMap::new()),
            preferred: Mutex::new(0),
            deadline: Duration::from_secs(10),
            trace,
        }
    }

    /// Every call continues this trace (a W3C `traceparent`: its trace id and flags; flags 01,
    /// sampled, makes routers and nodes log each call at info).
    pub fn with_traceparent(mut self, traceparent: &str) -> std::result::Result<Client, BadTraceparent> {
        self.trace = Some(parse_traceparent(traceparent).ok_or_else(|| BadTraceparent(traceparent.to_string()))?);
        Ok(self)
    }

    /// A call's `traceparent`: the client's trace or a new unsampled one, with a new parent id.
    fn traceparent(&self) -> (String, bool, MetadataValue<Ascii>) {
        let (id, flags) = self.trace.clone().unwrap_or_else(|| (format!("{:032x}", rand::random::<u128>().max(1)), 0));
        let v = format!("00-{id}-{:016x}-{flags:02x}", rand::random::<u64>().max(1));
        (id, flags & 1 == 1, v.parse().expect("hex digits and dashes are ASCII"))
    }

    pub fn with_deadline(mut self, d: Duration) -> Client {
        self.deadline = d;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.creds
    }

    fn channel(&self, role: Role, addr: &str) -> Result<Channel> {
        let (role, tls) = self.creds.tls(role).map_err(|e| refused(ErrorCode::PermissionDenied, e.to_string()))?;
        let mut map = self.channels.lock().expect("channel map lock");
        let key = (role, addr.to_string());
        if let Some(ch) = map.get(&key) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| refused(ErrorCode::InvalidArgument, format!("endpoint {addr}: {e}")))?
            .tls_config(tls)
            .map_err(|e| refused(ErrorCode::InvalidArgument, format!("TLS for {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(key, ch.clone());
        Ok(ch)
    }

    /// The token of the user a call acts for (`device`: the device the call names, if any).
    fn auth(&self, user: u64, device: Option<&str>) -> Result<Auth> {
        let tokens = self.creds.tokens.as_ref().ok_or_else(|| {
            refused(ErrorCode::Unauthenticated, format!("no user tokens configured; user {user} needs one (hongbao login)"))
        })?;
        let tok = tokens.token(user, device).map_err(|m| refused(ErrorCode::Unauthenticated, m))?;
        let v = format!("Bearer {tok}").parse().map_err(|_| refused(ErrorCode::Unauthenticated, "token is not ASCII".into()))?;
        Ok(Auth { token: Some(v), traceparent: None })
    }

    /// Runs `f` against endpoints, as `role`, until it succeeds, fails with a definite domain
    /// error, or the deadline passes. `f` must send the same request (same request id) each time.
    pub async fn call<T, F, Fut>(&self, role: Role, auth: Auth, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(role, auth, Bounds { attempt: ATTEMPT_TIMEOUT, deadline: self.deadline, attempts: MAX_ATTEMPTS }, f).await
    }

    /// `call`, within `bounds` instead of the client's own.
    async fn call_within<T, F, Fut>(&self, role: Role, auth: Auth, bounds: Bounds, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let (trace_id, sampled, traceparent) = self.traceparent();
        let auth = Auth { traceparent: Some(traceparent), ..auth };
        let mut idx = *self.preferred.lock().expect("preferred lock");
        let mut hint: Option<String> = None;
        let mut backoff = BACKOFF_START;
        let mut last = ErrorDetail { code: ErrorCode::Unavailable as i32, message: "no attempt made".into(), ..Default::default() };
        for attempt in 0..bounds.attempts {
            let left = bounds.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let addr = hint.take().unwrap_or_else(|| self.endpoints[idx % self.endpoints.len()].clone());
            let fut = f(self.channel(role, &addr)?, auth.clone());
            let res = tokio::time::timeout(left.min(bounds.attempt), fut).await;
            let status = match res {
                Ok(Ok(resp)) => {
                    if let Some(pos) = self.endpoints.iter().position(|e| *e == addr) {
                        *self.preferred.lock().expect("preferred lock") = pos;
                    }
                    if sampled {
                        tracing::info!(%trace_id, attempt, addr, "call answered");
                    }
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded(format!("attempt to {addr} timed out")),
            };
            let d = detail_of(&status);
            tracing::debug!(%trace_id, attempt, addr, code = d.code().as_str_name(), msg = %d.message, "call failed");
            match retry_step(d.code()) {
                RetryStep::Final => return Err(ClientError { detail: d }),
                // Only hints to an endpoint of ours: a router's client is never sent to a node.
                RetryStep::FollowHint if d.leader_hint_addr != addr && self.endpoints.contains(&d.leader_hint_addr) => {
                    hint = Some(d.leader_hint_addr.clone());
                }
                RetryStep::FollowHint | RetryStep::Elsewhere | RetryStep::BackOff => {
                    idx += 1;
                    tokio::time::sleep(backoff.min(bounds.deadline.saturating_sub(start.elapsed()))).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            last = d;
        }
        // Giving up is never an outcome: report it as the retryable code it is (UNAVAILABLE for a
        // last answer of "that node has no such shard" or an internal failure).
        match last.code() {
            ErrorCode::Ok => last.code = ErrorCode::Timeout as i32,
            ErrorCode::UnknownShard | ErrorCode::Internal => last.code = ErrorCode::Unavailable as i32,
            _ => {}
        }
        last.message = format!("gave up after {:?}: {}", start.elapsed(), last.message);
        Err(ClientError { detail: last })
    }

    /// A call made by the `app` role for `user`, with the user's token.
    async fn as_user<T, F, Fut>(&self, user: u64, device: Option<&str>, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let auth = self.auth(user, device)?;
        self.call(Role::App, auth, f).await
    }

    /// A call made by a service role, for no particular user.
    async fn as_role<T, F, Fut>(&self, role: Role, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(role, Auth::default(), f).await
    }

    /// Reads of a wallet: the user themself with a token, or the risk or admin role (when the
    /// credentials are made for one role only, or hold no tokens).
    async fn as_reader<T, F, Fut>(&self, user: u64, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        if !self.creds.acts_for_users() {
            return self.as_role(Role::Admin, f).await;
        }
        self.as_user(user, None, f).await
    }

    // ---------------- wallet ----------------

    pub async fn open_account(&self, user: u64, device: &str) -> Result<WalletReply> {
        let req = OpenAccountRequest { request_id: new_request_id(), user, device: device.into() };
        self.as_user(user, (!device.is_empty()).then_some(device), |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).open_account(r).await }
        })
        .await
    }

    /// Money in from a bank: the payment gateway's call.
    pub async fn top_up(&self, request_id: Vec<u8>, user: u64, amount_cents: u64) -> Result<WalletReply> {
        let req = TopUpRequest { request_id, user, amount_cents };
        self.as_role(Role::PaymentGateway, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).top_up(r).await }
        })
        .await
    }

    pub async fn withdraw(&self, req: WithdrawRequest) -> Result<WalletReply> {
        let device = (!req.device.is_empty()).then_some(req.device.as_str());
        self.as_user(req.user, device, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).withdraw(r).await }
        })
        .await
    }

    pub async fn transfer(&self, req: TransferRequest) -> Result<WalletReply> {
        let device = (!req.device.is_empty()).then_some(req.device.as_str());
        self.as_user(req.from_user, device, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).transfer(r).await }
        })
        .await
    }

    /// Sets the payment PIN (once; 6 digits), on a wallet without money yet.
    pub async fn set_pin(&self, request_id: Vec<u8>, user: u64, pin: &str) -> Result<WalletReply> {
        self.set_pin_verified(request_id, user, pin, None).await
    }

    /// Sets the payment PIN; a wallet that holds money needs the code sent to its known device
    /// (`verification`, from the CHALLENGE_REQUIRED answer of a first try without).
    pub async fn set_pin_verified(
        &self,
        request_id: Vec<u8>,
        user: u64,
        pin: &str,
        verification: Option<Verification>,
    ) -> Result<WalletReply> {
        let req = SetPinRequest { request_id, user, pin: pin.into(), verification, token_issued_s: 0 };
        self.as_user(user, None, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).set_pin(r).await }
        })
        .await
    }

    pub async fn balance(&self, user: u64) -> Result<BalanceReply> {
        let req = BalanceRequest { user, allow_stale: false, token_issued_s: 0 };
        self.as_reader(user, |ch, a| {
            let r = a.req(req);
            async move { WalletClient::new(ch).balance(r).await }
        })
        .await
    }

    /// The newest `limit` statement entries.
    pub async fn statement(&self, user: u64, limit: u32) -> Result<StatementReply> {
        self.statement_page(user, limit, 0).await
    }

    /// One page of the statement: entries older than `before_seq` (0: from the newest); the
    /// reply's `next_before_seq` asks for the next page, 0 when there is none.
    pub async fn statement_page(&self, user: u64, limit: u32, before_seq: u64) -> Result<StatementReply> {
        let req = StatementRequest { user, limit, allow_stale: false, before_seq, token_issued_s: 0 };
        self.as_reader(user, |ch, a| {
            let r = a.req(req);
            async move { WalletClient::new(ch).statement(r).await }
        })
        .await
    }

    /// Freeze / grade an account: the risk role's call.
    pub async fn set_risk(&self, user: u64, frozen: bool, grade: &str) -> Result<BalanceReply> {
        let req = SetRiskRequest { request_id: new_request_id(), user, frozen, risk_grade: grade.into() };
        self.as_role(Role::Risk, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).set_risk(r).await }
        })
        .await
    }

    /// Voids every token of `user` issued until now: the risk role's call (a stolen session).
    pub async fn revoke_tokens(&self, user: u64) -> Result<BalanceReply> {
        let req = RevokeTokensRequest { request_id: new_request_id(), user, issued_before_s: 0 };
        self.as_role(Role::Risk, |ch, a| {
            let r = a.req(req.clone());
            async move { WalletClient::new(ch).revoke_tokens(r).await }
        })
        .await
    }

    // ---------------- packets ----------------

    /// One page of the packets `user` sent or received, with this year's totals.
    pub async fn packet_history(&self, user: u64, side: PacketSide, limit: u32, before_seq: u64) -> Result<PacketHistoryReply> {
        let req = PacketHistoryRequest { user, side: side as i32, before_seq, limit, allow_stale: false, token_issued_s: 0 };
        self.as_reader(user, |ch, a| {
            let r = a.req(req);
            async move { PacketsClient::new(ch).history(r).await }
        })
        .await
    }

    pub async fn send_packet(&self, req: SendPacketRequest) -> Result<SendPacketReply> {
        let device = (!req.device.is_empty()).then_some(req.device.as_str());
        self.as_user(req.sender, device, |ch, a| {
            let r = a.req(req.clone());
            async move { PacketsClient::new(ch).send(r).await }
        })
        .await
    }

    pub async fn grab(&self, request_id: Vec<u8>, packet: PacketRef, grabber: u64, password: &str) -> Result<GrabReply> {
        let req = GrabRequest { request_id, packet_id: packet.id, packet_key: packet.key, grabber, password: password.into() };
        self.as_user(grabber, None, |ch, a| {
            let r = a.req(req.clone());
            async move { PacketsClient::new(ch).grab(r).await }
        })
        .await
    }

    /// Shows a packet. `viewer`: the signed-in user looking (any user holding the packet's
    /// key may), or None to look as the admin role (who needs no key).
    pub async fn show_packet_as(&self, viewer: Option<u64>, packet: PacketRef) -> Result<PacketView> {
        // `inspect` asks for no key check: a router sets it from the caller's role whatever is
        // sent (risk and admin only); set here for the harness, which talks to nodes as a router.
        let req = ShowPacketRequest { packet_id: packet.id, packet_key: packet.key, allow_stale: false, inspect: viewer.is_none() };
        let f = |ch, a: Auth| {
            let r = a.req(req);
            async move { PacketsClient::new(ch).show(r).await }
        };
        match viewer {
            Some(u) => self.as_user(u, None, f).await,
            None => self.as_role(Role::Admin, f).await,
        }
    }

    /// Shows a packet as the admin role, by id alone.
    pub async fn show_packet(&self, packet_id: u64) -> Result<PacketView> {
        self.show_packet_as(None, PacketRef { id: packet_id, key: 0 }).await
    }

    // ---------------- notifications ----------------

    /// Pending challenge notifications of a shard, with their codes: the notifier role's call.
    pub async fn poll_notifications(&self, shard: u32, after_seq: u64, limit: u32) -> Result<PollNotificationsReply> {
        let req = PollNotificationsRequest { shard, after_seq, limit };
        self.as_role(Role::Notifier, |ch, a| {
            let r = a.req(req);
            async move { NotifierClient::new(ch).poll(r).await }
        })
        .await
    }

    pub async fn ack_notifications(&self, shard: u32, up_to_seq: u64) -> Result<AckNotificationsReply> {
        let req = AckNotificationsRequest { shard, up_to_seq };
        self.as_role(Role::Notifier, |ch, a| {
            let r = a.req(req);
            async move { NotifierClient::new(ch).ack(r).await }
        })
        .await
    }

    // ---------------- cluster (admin) ----------------

    pub async fn status(&self) -> Result<StatusReply> {
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(StatusRequest { local_only: false });
            async move { ClusterClient::new(ch).status(r).await }
        })
        .await
    }

    pub async fn audit(&self) -> Result<AuditReply> {
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(AuditRequest {});
            async move { ClusterClient::new(ch).audit(r).await }
        })
        .await
    }

    pub async fn transfer_leader(&self, shard: u32, to_node: u64) -> Result<TransferLeaderReply> {
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(TransferLeaderRequest { shard, to_node });
            async move { ClusterClient::new(ch).transfer_leader(r).await }
        })
        .await
    }

    pub async fn drain(&self, region: &str) -> Result<DrainReply> {
        let req = DrainRequest { region: region.into(), local_only: false };
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(req.clone());
            async move { ClusterClient::new(ch).drain(r).await }
        })
        .await
    }

    pub async fn undrain(&self, region: &str) -> Result<DrainReply> {
        let req = DrainRequest { region: region.into(), local_only: false };
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(req.clone());
            async move { ClusterClient::new(ch).undrain(r).await }
        })
        .await
    }

    /// The cluster map (#16): its version and its TOML.
    pub async fn get_map(&self) -> Result<ClusterMap> {
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(GetMapRequest {});
            async move { ClusterClient::new(ch).get_map(r).await }
        })
        .await
    }

    /// Membership steps: each is one idempotent call (re-sending one continues or confirms it),
    /// answered TIMEOUT / UNAVAILABLE while it is still under way (`membership::resend`).
    pub async fn add_node(&self, node: NodeSpec) -> Result<MembershipReply> {
        let req = AddNodeRequest { node: Some(node) };
        self.membership(|ch, a| {
            let r = long(a.req(req.clone()));
            async move { ClusterClient::new(ch).add_node(r).await }
        })
        .await
    }

    pub async fn remove_node(&self, node: u64) -> Result<MembershipReply> {
        self.membership(|ch, a| {
            let r = long(a.req(RemoveNodeRequest { node }));
            async move { ClusterClient::new(ch).remove_node(r).await }
        })
        .await
    }

    pub async fn add_replica(&self, shard: u32, node: u64) -> Result<MembershipReply> {
        self.membership(|ch, a| {
            let r = long(a.req(ReplicaChangeRequest { shard, node }));
            async move { ClusterClient::new(ch).add_replica(r).await }
        })
        .await
    }

    pub async fn add_shard(&self, shard: u32, home: &str, replicas: &[u64]) -> Result<MembershipReply> {
        let req = AddShardRequest { shard, home: home.into(), replicas: replicas.to_vec() };
        self.membership(|ch, a| {
            let r = long(a.req(req.clone()));
            async move { ClusterClient::new(ch).add_shard(r).await }
        })
        .await
    }

    /// Requests served per slot so far, summed over every node that answered.
    pub async fn slot_load(&self) -> Result<SlotLoadReply> {
        self.as_role(Role::Admin, |ch, a| {
            let r = a.req(SlotLoadRequest { local_only: false });
            async move { ClusterClient::new(ch).slot_load(r).await }
        })
        .await
    }

    /// One call of a slot move: does a bounded part and says where the move stands (call again
    /// until `done`; `membership::move_slot` does).
    pub async fn move_slot(&self, slot: u32, to_shard: u32) -> Result<MoveSlotReply> {
        self.membership(|ch, a| {
            let r = long(a.req(MoveSlotRequest { slot, to_shard }));
            async move { ClusterClient::new(ch).move_slot(r).await }
        })
        .await
    }

    pub async fn remove_replica(&self, shard: u32, node: u64) -> Result<MembershipReply> {
        self.membership(|ch, a| {
            let r = long(a.req(ReplicaChangeRequest { shard, node }));
            async move { ClusterClient::new(ch).remove_replica(r).await }
        })
        .await
    }

    /// An admin call given `MEMBERSHIP_ATTEMPT`: one pass over the endpoints (and one leader
    /// hint), no more, so that a step's "still under way" answer reaches the caller, which
    /// says so and re-sends it (`membership::resend`) instead of it being retried unseen here.
    async fn membership<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let attempts = self.endpoints.len() as u32 + 1;
        let bounds = Bounds { attempt: MEMBERSHIP_ATTEMPT, deadline: MEMBERSHIP_ATTEMPT, attempts };
        self.call_within(Role::Admin, Auth::default(), bounds, f).await
    }

    /// Asks one specific endpoint (no failover), as admin: for status of a single node.
    pub async fn status_of(&self, addr: &str) -> Result<StatusReply> {
        let mut c = ClusterClient::new(self.channel(Role::Admin, addr)?);
        once(addr, c.status(StatusRequest { local_only: true })).await
    }

    /// Replaces the injected faults of the node at `addr` (chaos testing, nodes built with the
    /// `fault-injection` feature only; no failover: the fault belongs to that node).
    pub async fn set_faults_of(&self, addr: &str, faults: Faults) -> Result<FaultsReply> {
        let mut c = FaultInjectionClient::new(self.channel(Role::Admin, addr)?);
        once(addr, c.set_faults(faults)).await
    }
}

/// A membership step's request, with its gRPC deadline: the router (or node) knows how long
/// the step may take.
fn long<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.set_timeout(MEMBERSHIP_ATTEMPT);
    r
}

/// One call to one endpoint, bounded in time, no retry.
async fn once<T>(addr: &str, call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(ClientError { detail: detail_of(&s) }),
        Err(_) => Err(ClientError {
            detail: ErrorDetail { code: ErrorCode::Timeout as i32, message: format!("{addr} timed out"), ..Default::default() },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(code: ErrorCode) -> ClientError {
        ClientError { detail: ErrorDetail { code: code as i32, ..Default::default() } }
    }

    /// Answers with `answers` in turn (the last one forever), counting the sends.
    async fn run(answers: &[Result<u32>], max_resends: u32, within: Duration) -> (Result<u32>, u32) {
        let sends = AtomicU32::new(0);
        let r = settle(
            || {
                let i = sends.fetch_add(1, Ordering::Relaxed) as usize;
                let a = answers[i.min(answers.len() - 1)].clone();
                async move { a }
            },
            max_resends,
            within,
        )
        .await;
        (r, sends.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn settle_re_sends_only_while_the_outcome_is_unknown() {
        let long = Duration::from_secs(60);
        let (r, n) = run(&[Err(err(ErrorCode::Timeout)), Err(err(ErrorCode::NotLeader)), Ok(7)], 5, long).await;
        assert_eq!((r.unwrap(), n), (7, 3));
        let (r, n) = run(&[Err(err(ErrorCode::Unavailable)), Err(err(ErrorCode::InsufficientFunds))], 5, long).await;
        assert_eq!((r.unwrap_err().code(), n), (ErrorCode::InsufficientFunds, 2), "a definite error is the answer");
        let (r, n) = run(&[Ok(1)], 5, long).await;
        assert_eq!((r.unwrap(), n), (1, 1));
    }

    #[tokio::test]
    async fn settle_stops_at_its_bounds() {
        let (r, n) = run(&[Err(err(ErrorCode::Overloaded))], 2, Duration::from_secs(60)).await;
        assert_eq!((r.unwrap_err().code(), n), (ErrorCode::Overloaded, 3), "one send and two re-sends");
        let (r, n) = run(&[Err(err(ErrorCode::Timeout))], u32::MAX, RESEND_PAUSE * 3).await;
        assert_eq!(r.unwrap_err().code(), ErrorCode::Timeout);
        assert!((2..=5).contains(&n), "the time bound ends it: {n} sends");
    }
}
