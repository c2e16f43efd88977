//! The public API on a node: gRPC requests become ledger commands on the right shard.
//!
//! Writes are proposed through Raft on the shard's leader (NotLeader with a hint elsewhere);
//! reads are linearizable (ReadIndex) unless the caller opts into a stale local read.

use crate::host::{Host, ReadPermit};
use crate::limits::{MAX_REQUEST_BYTES, MAX_STATEMENT};
use crate::service::convert::{bounded, claim, detail, invalid, kind_of, refused, request_id, statement_entry, verification, About};
use hongbao_ledger::state::EntryKind;
use hongbao_ledger::{
    phrase_hash, view, Cents, Code, Command, Outcome, PacketId, PacketKind, PinCheck, Reply, RequestId, RiskGrade, ShardId, Store, UserId,
};
use hongbao_proto::v1::coalesced_server::Coalesced;
use hongbao_proto::v1::packets_server::Packets;
use hongbao_proto::v1::wallet_server::Wallet;
use hongbao_proto::v1::*;
use hongbao_proto::{detail_of, status, ErrorCode, MAX_GRAB_BATCH};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Entries in a statement or packet-history page when the request names no limit.
const DEFAULT_PAGE: usize = 50;

#[derive(Clone)]
pub struct ApiService {
    pub host: Arc<Host>,
    /// Slow PIN hashes already verified on this leader (memory only; see `pin`).
    pub pins: Arc<crate::service::pin::PinCache>,
}

impl ApiService {
    pub fn new(host: Arc<Host>) -> ApiService {
        ApiService { host, pins: Arc::new(crate::service::pin::PinCache::new()) }
    }
}

type Res<T> = Result<Response<T>, Status>;

/// What a spend's command takes from the checks (`ApiService::spend`).
struct Spend {
    device: String,
    verification: Option<hongbao_ledger::Verification>,
    pin: PinCheck,
}

impl ApiService {
    fn user_shard(&self, user: u64) -> Result<ShardId, Status> {
        if user == 0 {
            return Err(invalid("user id 0 is not a user"));
        }
        Ok(self.host.topology().shard_of_user(user))
    }

    async fn write(&self, shard: ShardId, id: RequestId, cmd: Command) -> Result<Outcome, Status> {
        let about = About::of(&cmd);
        let home = cmd.home_user();
        let o = self.host.propose(shard, id, cmd).await?;
        if let Some(u) = home {
            self.count(u);
        }
        if o.code.is_misrouted() {
            return Err(self.misrouted(o.code, shard, home.unwrap_or(about.user), &about));
        }
        if o.code != Code::Ok {
            return Err(refused(&o, shard, &about));
        }
        Ok(o)
    }

    /// Bounds a client string before it can reach the log (the ledger's own limit).
    fn text<'a>(&self, field: &str, s: &'a str) -> Result<&'a str, Status> {
        bounded(field, s, self.host.config.max_string)
    }

    /// The leader's verdict on the PIN typed for a spend; refusals that need no Raft round
    /// (locked, no PIN set) answer at once. Only the verdict enters the command.
    async fn pin_check(&self, shard: ShardId, user: UserId, pin: &str) -> Result<PinCheck, Status> {
        self.leading(shard).await?;
        crate::service::pin::verdict(&self.host, &self.pins, shard, user, pin)
            .await?
            .map_err(|code| refused(&Outcome::err(code), shard, &About::user(user)))
    }

    /// This node leads `shard`, and its applied state holds every entry committed before its
    /// term (`Host::fence_local_read`): the gate before answering from the leader's own state
    /// without a Raft round (revoked tokens on writes, PIN verdicts). NotLeader elsewhere.
    async fn leading(&self, shard: ShardId) -> Result<(), Status> {
        let replica = self.host.replica(shard)?;
        if !self.host.is_leader(&replica) {
            return Err(self.host.not_leader(&replica, None).into());
        }
        Ok(self.host.fence_local_read(&replica).await?)
    }

    /// Gate for reads: linearizable unless the caller allows a stale local read. Hold the permit
    /// until the reply is built: reads in flight on this node are bounded (OVERLOADED past it).
    async fn read_gate(&self, shard: ShardId, allow_stale: bool) -> Result<ReadPermit, Status> {
        Ok(self.host.begin_read(shard, allow_stale).await?)
    }

    /// A spend from `user`'s wallet (withdraw, transfer): checks, in this order, that the user's
    /// token is not revoked, the device string is bounded, the request id is well formed, and
    /// the typed PIN's verdict (the only part of the PIN that enters the command); then proposes
    /// the command `cmd` builds from them and answers with the wallet.
    #[allow(clippy::too_many_arguments)]
    async fn spend(
        &self,
        shard: ShardId,
        user: UserId,
        token_issued_s: u64,
        request_id_bytes: &[u8],
        pin: &str,
        device: String,
        verification: &Option<hongbao_proto::v1::Verification>,
        cmd: impl FnOnce(Spend) -> Command,
    ) -> Res<WalletReply> {
        self.leading(shard).await?;
        self.token_live(shard, user, token_issued_s)?;
        self.text("device", &device)?;
        let id = request_id(request_id_bytes)?;
        let pin = self.pin_check(shard, user, pin).await?;
        let o =
            self.write(shard, id, cmd(Spend { device, verification: crate::service::convert::verification(verification), pin })).await?;
        self.wallet_reply(o, shard)
    }

    /// Refuses a request whose user token (issued at `issued_s`, as the router read it; 0: no
    /// user token) was revoked: issued before the account's `tokens_void_before_s`. Read from
    /// this node's applied state: after the read gate on reads, after `leading` on writes.
    fn token_live(&self, shard: ShardId, user: UserId, issued_s: u64) -> Result<(), Status> {
        if issued_s == 0 {
            return Ok(());
        }
        let void_before = view::account(&self.host.store(shard), user).map(|a| a.tokens_void_before_s).unwrap_or(0);
        if issued_s < void_before {
            metrics::counter!(crate::metrics::TOKENS_REVOKED).increment(1);
            return Err(hongbao_proto::unauthenticated(format!(
                "user {user}'s tokens issued before {void_before} (Unix s) are revoked: sign in again"
            )));
        }
        Ok(())
    }

    /// One request of `user` served here, for the per-slot load.
    fn count(&self, user: UserId) {
        self.host.slot_load.hit(self.host.topology().slot_of(user));
    }

    /// The start of every read of one user's wallet: its shard by this node's map, the read
    /// gate (hold the permit until the reply is built), and the request counted for its slot.
    async fn read_user(&self, user: UserId, allow_stale: bool) -> Result<(ShardId, ReadPermit), Status> {
        let shard = self.user_shard(user)?;
        let permit = self.read_gate(shard, allow_stale).await?;
        self.count(user);
        Ok((shard, permit))
    }

    /// A read of `user` on `shard` that found no wallet: the retryable SLOT_MOVED / SLOT_MOVING
    /// if it moved away with its slot or is moving (this node's map is older). Asked only when
    /// nothing was found, so a served read costs no extra lookup.
    fn wallet_here(&self, shard: ShardId, user: UserId) -> Result<(), Status> {
        match view::moved(&self.host.store(shard), user) {
            Some((code, _)) => Err(self.misrouted(code, shard, user, &About::user(user))),
            None => Ok(()),
        }
    }

    /// SLOT_MOVING / SLOT_MOVED, saying where `user`'s wallet went when this shard knows (its
    /// forwarding mark): the hint for a caller whose map is older.
    fn misrouted(&self, code: Code, shard: ShardId, user: UserId, about: &About) -> Status {
        let mut d = hongbao_proto::detail_of(&refused(&Outcome::err(code), shard, about));
        if let Some((_, Some(to))) = view::moved(&self.host.store(shard), user) {
            d.message = format!("{} (to shard {to})", d.message);
        }
        status(d)
    }

    /// One grab: fast refusal on the leader when the outcome is already final, else a proposal.
    /// Shared by the single `Grab` RPC and the router's coalesced `Grabs`.
    /// A grab the leader refuses without a log entry (`view::grab_refusal`): none here unless
    /// this node leads the shard. An id the shard has not issued by its applied state is asked
    /// again after a linearizable read barrier (a packet sent a moment ago may not be applied
    /// here yet), and refused if still not issued: a bot counting through ids costs a read, no
    /// log entry and no request-id row.
    async fn grab_refusal(
        &self,
        shard: ShardId,
        id: &RequestId,
        packet: PacketId,
        key: u64,
        grabber: UserId,
    ) -> Result<Option<Code>, Status> {
        let Ok(s) = self.host.replica(shard) else { return Ok(None) };
        if !self.host.is_leader(&s) {
            return Ok(None);
        }
        self.host.fence_local_read(&s).await?;
        let now = || self.host.ledger_time_ms(shard);
        if let Some(code) = view::grab_refusal(&self.host.store(shard), id, packet, key, grabber, now) {
            return Ok(Some(code));
        }
        if view::packet_issued(&self.host.store(shard), packet) {
            return Ok(None);
        }
        let _read = self.read_gate(shard, false).await?;
        let store = self.host.store(shard);
        if let Some(code) = view::grab_refusal(&store, id, packet, key, grabber, now) {
            return Ok(Some(code));
        }
        let seen = store.get(&hongbao_ledger::keys::dedup(grabber, id)).is_some();
        Ok((!view::packet_issued(&store, packet) && !seen).then_some(Code::UnknownPacket))
    }

    async fn grab_one(&self, r: GrabRequest) -> Result<GrabReply, Status> {
        let packet = PacketId(r.packet_id);
        let shard = packet.shard();
        if self.host.topology().shard(shard).is_none() {
            return Err(status(detail(ErrorCode::UnknownPacket, format!("packet {} names no shard", r.packet_id), shard)));
        }
        let grabber_shard = self.user_shard(r.grabber)?;
        self.text("password", &r.password)?;
        let key = r.packet_key;
        // The phrase is hashed here, salted with the key the grabber names: a wrong key finds
        // no packet anyway, and the phrase never reaches the log.
        let phrase = if r.password.is_empty() { None } else { Some(phrase_hash(key, &r.password)) };
        let id = request_id(&r.request_id)?;
        let cmd = Command::Grab { packet, key, grabber: r.grabber, grabber_shard, phrase };
        if let Some(code) = self.grab_refusal(shard, &id, packet, key, r.grabber).await? {
            metrics::counter!(crate::metrics::GRABS_FAST_REJECTED).increment(1);
            return Err(refused(&Outcome::err(code), shard, &About::of(&cmd)));
        }
        let o = self.write(shard, id, cmd).await?;
        metrics::counter!(crate::metrics::GRABS).increment(1);
        match o.reply {
            Reply::Grabbed { packet, amount, index, remaining_count, remaining, credit_in_flight } => Ok(GrabReply {
                packet_id: packet.0,
                amount_cents: amount.0,
                index,
                remaining_count,
                remaining_cents: remaining.0,
                credit_in_flight,
            }),
            other => Err(Status::internal(format!("unexpected ledger reply {other:?}"))),
        }
    }

    fn wallet_reply(&self, o: Outcome, shard: ShardId) -> Res<WalletReply> {
        match o.reply {
            Reply::Wallet { user, balance, fee, credit_in_flight } => {
                Ok(Response::new(WalletReply { user, balance_cents: balance.0, fee_cents: fee.0, credit_in_flight, shard }))
            }
            other => Err(Status::internal(format!("unexpected ledger reply {other:?}"))),
        }
    }

    fn balance_reply(&self, user: u64, shard: ShardId) -> Res<BalanceReply> {
        let Some(a) = view::account(&self.host.store(shard), user) else {
            self.wallet_here(shard, user)?;
            return Err(status(detail(ErrorCode::UnknownUser, format!("no wallet for user {user}"), shard)));
        };
        Ok(Response::new(BalanceReply {
            user,
            balance_cents: a.balance.0,
            frozen: a.frozen,
            risk_grade: a.grade.as_str().into(),
            shard,
            withdrawn_cents: a.withdrawn.0,
        }))
    }
}

#[tonic::async_trait]
impl Wallet for ApiService {
    async fn open_account(&self, req: Request<OpenAccountRequest>) -> Res<WalletReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        self.text("device", &r.device)?;
        let o = self.write(shard, request_id(&r.request_id)?, Command::OpenAccount { user: r.user, device: r.device }).await?;
        self.wallet_reply(o, shard)
    }

    async fn top_up(&self, req: Request<TopUpRequest>) -> Res<WalletReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        let o = self.write(shard, request_id(&r.request_id)?, Command::TopUp { user: r.user, amount: Cents(r.amount_cents) }).await?;
        self.wallet_reply(o, shard)
    }

    async fn withdraw(&self, req: Request<WithdrawRequest>) -> Res<WalletReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        let (user, amount) = (r.user, Cents(r.amount_cents));
        self.spend(shard, user, r.token_issued_s, &r.request_id, &r.pin, r.device, &r.verification, |s| Command::Withdraw {
            user,
            amount,
            device: s.device,
            verification: s.verification,
            pin: s.pin,
        })
        .await
    }

    async fn transfer(&self, req: Request<TransferRequest>) -> Res<WalletReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.from_user)?;
        let to_shard = self.user_shard(r.to_user)?;
        let (from, to, amount) = (r.from_user, r.to_user, Cents(r.amount_cents));
        self.spend(shard, from, r.token_issued_s, &r.request_id, &r.pin, r.device, &r.verification, |s| Command::Transfer {
            from,
            to,
            to_shard,
            amount,
            device: s.device,
            verification: s.verification,
            pin: s.pin,
        })
        .await
    }

    async fn balance(&self, req: Request<BalanceRequest>) -> Res<BalanceReply> {
        let r = req.into_inner();
        let (shard, _read) = self.read_user(r.user, r.allow_stale).await?;
        self.token_live(shard, r.user, r.token_issued_s)?;
        self.balance_reply(r.user, shard)
    }

    async fn statement(&self, req: Request<StatementRequest>) -> Res<StatementReply> {
        let r = req.into_inner();
        let (shard, _read) = self.read_user(r.user, r.allow_stale).await?;
        self.token_live(shard, r.user, r.token_issued_s)?;
        let page = view::statement_page(&self.host.store(shard), r.user, cursor(r.before_seq), page_limit(r.limit));
        if page.entries.is_empty() {
            self.wallet_here(shard, r.user)?;
        }
        let entries = page.entries.iter().map(|(seq, e)| statement_entry(*seq, e)).collect();
        Ok(Response::new(StatementReply { user: r.user, entries, next_before_seq: page.next.unwrap_or(0) }))
    }

    async fn set_pin(&self, req: Request<SetPinRequest>) -> Res<WalletReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        self.leading(shard).await?;
        self.token_live(shard, r.user, r.token_issued_s)?;
        let id = request_id(&r.request_id)?;
        if !hongbao_auth::valid_pin(&r.pin) {
            return Err(invalid("a payment PIN is exactly 6 digits"));
        }
        let (salt, hash) = crate::service::pin::new_record(self.host.config.challenge_key, shard, r.user, id.0, r.pin).await?;
        let cmd = Command::SetPin { user: r.user, salt, hash, verification: verification(&r.verification) };
        let o = self.write(shard, id, cmd).await?;
        self.wallet_reply(o, shard)
    }

    async fn set_risk(&self, req: Request<SetRiskRequest>) -> Res<BalanceReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        let grade = RiskGrade::parse(&r.risk_grade).ok_or_else(|| invalid("risk_grade must be normal, elevated or high"))?;
        self.write(shard, request_id(&r.request_id)?, Command::SetRisk { user: r.user, frozen: r.frozen, grade }).await?;
        self.balance_reply(r.user, shard)
    }

    async fn revoke_tokens(&self, req: Request<RevokeTokensRequest>) -> Res<BalanceReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.user)?;
        if r.issued_before_s == 0 {
            return Err(invalid("issued_before_s is required (a router fills in now)"));
        }
        let cmd = Command::RevokeTokens { user: r.user, before_s: r.issued_before_s };
        self.write(shard, request_id(&r.request_id)?, cmd).await?;
        self.balance_reply(r.user, shard)
    }
}

#[tonic::async_trait]
impl Packets for ApiService {
    async fn send(&self, req: Request<SendPacketRequest>) -> Res<SendPacketReply> {
        let r = req.into_inner();
        let shard = self.user_shard(r.sender)?;
        self.leading(shard).await?;
        self.token_live(shard, r.sender, r.token_issued_s)?;
        self.text("device", &r.device)?;
        self.text("greeting", &r.greeting)?;
        self.text("phrase", &r.phrase)?;
        let id = request_id(&r.request_id)?;
        // The grab key: random and never zero. A re-send drawn another key by another leader is
        // answered the first packet's (the fingerprint leaves the key out).
        let key = loop {
            let k: u64 = rand::random();
            if k != 0 {
                break k;
            }
        };
        let kind = match r.kind() {
            hongbao_proto::v1::PacketKind::Lucky => PacketKind::Lucky { total: Cents(r.total_cents), count: r.count },
            hongbao_proto::v1::PacketKind::Fixed => PacketKind::Fixed { per_share: Cents(r.per_share_cents), count: r.count },
            hongbao_proto::v1::PacketKind::Exclusive => PacketKind::Exclusive {
                amount: Cents(r.total_cents),
                recipient: r.recipient,
                recipient_shard: self.user_shard(r.recipient)?,
            },
            hongbao_proto::v1::PacketKind::Password => {
                if r.phrase.is_empty() {
                    return Err(invalid("a password packet needs a phrase"));
                }
                // Only the salted hash goes into the log and the state, never the phrase.
                PacketKind::Password { total: Cents(r.total_cents), count: r.count, phrase_hash: phrase_hash(key, &r.phrase) }
            }
            hongbao_proto::v1::PacketKind::Unspecified => return Err(invalid("packet kind is required")),
        };
        let pin = self.pin_check(shard, r.sender, &r.pin).await?;
        let cmd = Command::SendPacket {
            sender: r.sender,
            kind,
            device: r.device,
            verification: verification(&r.verification),
            greeting: r.greeting,
            pin,
            key,
        };
        let o = self.write(shard, id, cmd).await?;
        match o.reply {
            Reply::Sent { packet, key, expires_ms, balance } => Ok(Response::new(SendPacketReply {
                packet_id: packet.0,
                expires_at_ms: expires_ms,
                balance_cents: balance.0,
                packet_key: key,
            })),
            other => Err(Status::internal(format!("unexpected ledger reply {other:?}"))),
        }
    }

    async fn grab(&self, req: Request<GrabRequest>) -> Res<GrabReply> {
        self.grab_one(req.into_inner()).await.map(Response::new)
    }
    async fn history(&self, req: Request<PacketHistoryRequest>) -> Res<PacketHistoryReply> {
        let r = req.into_inner();
        let side = match r.side() {
            PacketSide::Sent => view::PacketSide::Sent,
            PacketSide::Received => view::PacketSide::Received,
            PacketSide::Unspecified => return Err(invalid("side must be SENT or RECEIVED")),
        };
        let (shard, _read) = self.read_user(r.user, r.allow_stale).await?;
        self.token_live(shard, r.user, r.token_issued_s)?;
        let store = self.host.store(shard);
        let page = view::packets_page(&store, r.user, side, cursor(r.before_seq), page_limit(r.limit));
        if page.entries.is_empty() {
            self.wallet_here(shard, r.user)?;
        }
        let entries = page
            .entries
            .iter()
            .map(|(seq, e)| {
                let packet = match e.kind {
                    EntryKind::PacketSend { packet } | EntryKind::PacketGrab { packet } => packet,
                    _ => unreachable!("packets_page lists only sends and grabs"),
                };
                // The user sent or grabbed it, so they hold its key already. A packet grabbed
                // from another shard lives there: its key is not here (0).
                let packet_key = view::packet_key(&store, packet).unwrap_or(0);
                PacketHistoryEntry { seq: *seq, time_ms: e.time_ms, packet_id: packet.0, amount_cents: e.delta.unsigned_abs(), packet_key }
            })
            .collect();
        // The year as of ledger time: the counters roll over by it.
        let y = view::packet_year(&store, r.user, view::totals(&store).last_time_ms).unwrap_or_default();
        let year = PacketYear {
            year: y.year,
            sent_count: y.sent_count,
            sent_cents: y.sent.0,
            received_count: y.received_count,
            received_cents: y.received.0,
        };
        Ok(Response::new(PacketHistoryReply { user: r.user, entries, next_before_seq: page.next.unwrap_or(0), year: Some(year) }))
    }

    async fn show(&self, req: Request<ShowPacketRequest>) -> Res<PacketView> {
        let r = req.into_inner();
        let id = PacketId(r.packet_id);
        let shard = id.shard();
        if self.host.topology().shard(shard).is_none() {
            return Err(status(detail(ErrorCode::UnknownPacket, format!("packet {} names no shard", r.packet_id), shard)));
        }
        let _read = self.read_gate(shard, r.allow_stale).await?;
        // Without the key (or a router's inspect flag for risk and admin), the same answer as an
        // id never issued.
        let v = view::packet(&self.host.store(shard), id)
            .filter(|v| r.inspect || v.packet.key == r.packet_key)
            .ok_or_else(|| status(detail(ErrorCode::UnknownPacket, format!("no packet {}", r.packet_id), shard)))?;
        let p = &v.packet;
        Ok(Response::new(PacketView {
            packet_id: p.id.0,
            sender: p.sender,
            kind: kind_of(&p.kind) as i32,
            total_cents: p.total.0,
            count: p.count,
            remaining_cents: p.remaining.0,
            remaining_count: p.remaining_count,
            created_ms: p.created_ms,
            expires_at_ms: p.expires_ms,
            refunded: p.refunded.is_some(),
            refunded_cents: p.refunded.map(|c| c.0).unwrap_or(0),
            greeting: p.greeting.clone(),
            claims: v.claims.iter().map(claim).collect(),
            has_best_luck: v.best_luck.is_some(),
            best_luck: v.best_luck.as_ref().map(claim),
        }))
    }
}

/// Router-to-node coalescing: many grabs in one call, each answered as a single Grab would be.
/// They run concurrently, so they reach the shard's proposer together and share Raft entries.
#[tonic::async_trait]
impl Coalesced for ApiService {
    async fn grabs(&self, req: Request<GrabBatchRequest>) -> Res<GrabBatchReply> {
        // The sampled grabs' traces: each such grab runs in its span and gets its log line.
        let traces = crate::service::trace::grab_trace_ids(req.metadata().as_ref());
        let grabs = req.into_inner().grabs;
        if grabs.len() > MAX_GRAB_BATCH {
            return Err(invalid(&format!("{} grabs in one batch; at most {MAX_GRAB_BATCH}", grabs.len())));
        }
        metrics::histogram!(crate::metrics::COALESCED_GRABS).record(grabs.len() as f64);
        let results = futures::future::join_all(grabs.into_iter().enumerate().map(|(i, g)| {
            let trace = traces.get(i).cloned().flatten();
            async move {
                // Each grab is held to the single-request limit, as if it had come alone, and
                // refused alone: the others in the batch are other users' and go on.
                let size = prost::Message::encoded_len(&g);
                if size > MAX_REQUEST_BYTES {
                    return Err(invalid(&format!("a grab of {size} bytes; at most {MAX_REQUEST_BYTES}")));
                }
                let Some(t) = trace else { return self.grab_one(g).await };
                let started = std::time::Instant::now();
                let span = t.span("hongbao.v1.Coalesced/Grabs (one grab)");
                let r = tracing::Instrument::instrument(self.grab_one(g), span.clone()).await;
                t.served(&span, "/hongbao.v1.Coalesced/Grabs (one grab)", || r.as_ref().err().cloned(), started.elapsed());
                r
            }
        }))
        .await;
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok(reply) => GrabResult { reply: Some(reply), error: None },
                Err(s) => GrabResult { reply: None, error: Some(detail_of(&s)) },
            })
            .collect();
        Ok(Response::new(GrabBatchReply { results }))
    }
}

/// A page cursor from the wire: 0 starts at the newest entry (a real cursor is never 0: it is
/// the seq of an entry with an older one before it).
fn cursor(before_seq: u64) -> Option<u64> {
    (before_seq != 0).then_some(before_seq)
}

/// A page's size from the wire: 0 asks for the default, more than the maximum gets the maximum.
fn page_limit(limit: u32) -> usize {
    if limit == 0 {
        DEFAULT_PAGE
    } else {
        limit.min(MAX_STATEMENT) as usize
    }
}
