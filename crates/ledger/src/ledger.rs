//! The state machine: `Ledger::apply` runs one command against the state seen through an
//! overlay of the batch's pending writes.
//!
//! Every command follows the same shape (TigerBeetle style): checks in a fixed order, each with
//! its own code and no side effect; after the last check the command must succeed, so the apply
//! phase uses `expect` on arithmetic that the checks already proved safe. The conservation
//! identity is asserted after every command.

use crate::challenge::{challenge_code, codes_equal};
use crate::config::{china_day, china_year, LedgerConfig};
use crate::keys;
use crate::money::Cents;
use crate::split::{self, fnv1a};
use crate::state::*;
use crate::store::{Overlay, Store, WriteSet};
use crate::types::*;

pub struct Ledger<'a, S: Store + ?Sized> {
    shard: ShardId,
    config: &'a LedgerConfig,
    db: Overlay<'a, S>,
    totals: Totals,
    /// Slots moving in or out, or gone (`keys::slot_table`), read once per batch.
    slots: SlotTable,
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("ledger records serialize")
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    // A record that no longer decodes is corruption: stopping beats guessing with money.
    bincode::deserialize(b).expect("ledger record decodes")
}

fn add(a: Cents, b: Cents) -> Cents {
    a.checked_add(b).expect("checked before apply")
}
fn sub(a: Cents, b: Cents) -> Cents {
    a.checked_sub(b).expect("checked before apply")
}

/// Largest cluster map a SetClusterMap may carry (64 nodes and 256 shards fit many times over).
pub const MAX_CLUSTER_MAP_BYTES: usize = 256 << 10;

/// Most wallets one MoveSlotOut sends.
pub const MAX_MOVE_USERS: u32 = 1024;
/// Wrong phrases one grabber may send to one password packet; then it is closed to them.
pub const PHRASE_MAX_TRIES: u32 = 5;
/// Account records one MoveSlotOut looks at (a slot's users are spread over the whole table).
pub const MOVE_SCAN_ROWS: usize = 4096;
/// One MoveSlotOut stops adding wallets past this many bytes of bundles (at least one goes).
pub const MOVE_PAGE_BYTES: usize = 512 << 10;
/// Remembered requests one wallet may take along (a day of a very busy user); more refuses
/// the move of its slot (AmountOverflow) until the oldest expire.
pub const MAX_MOVED_REQUESTS: usize = 20_000;

/// Where a user's wallet is, seen from this shard. Lives on the stack for one command; boxing
/// the account would allocate on every payment.
#[allow(clippy::large_enum_variant)]
enum Wallet {
    Here(Account),
    /// It moved with its slot to this shard: money for it goes there.
    Moved(ShardId),
    /// None here, and its slot is moving (SlotMoving) or gone (SlotMoved).
    Elsewhere(Code),
    Missing,
}

/// What a command's checks decided: reject with a code, or go ahead.
type Check<T> = Result<T, Code>;

/// Where one new credit entry's money goes on the receiving shard.
enum Landing {
    /// Into `user`'s wallet (`balance` as read, for the overflow check) with this statement entry.
    Wallet { user: UserId, balance: Cents, kind: EntryKind },
    /// On into this shard's outbox: back to the source (the receiver has no account here), or
    /// on to where the wallet moved.
    Outbox { dest: ShardId, user: UserId, origin: Origin },
    /// A moved wallet arriving.
    Import(Box<UserBundle>),
}

impl<'a, S: Store + ?Sized> Ledger<'a, S> {
    pub fn new(shard: ShardId, config: &'a LedgerConfig, store: &'a S) -> Ledger<'a, S> {
        let totals = store.get(&keys::totals()).map(|b| dec(&b)).unwrap_or_default();
        let slots = store.get(&keys::slot_table()).map(|b| dec(&b)).unwrap_or_default();
        Ledger { shard, config, db: Overlay { store, writes: WriteSet::default() }, totals, slots }
    }

    /// The writes of every command applied so far, to commit in one batch.
    pub fn into_writes(mut self) -> WriteSet {
        let t = enc(&self.totals);
        self.db.put(keys::totals(), t);
        self.db.writes
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.db.get(key).map(|b| dec(&b))
    }
    fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, v: &T) {
        self.db.put(key, enc(v));
    }

    /// Applies one command. Never panics on bad input: every rejection is a code.
    pub fn apply(&mut self, req: &Request) -> Outcome {
        // Time only from the command, never backwards, and at most a bounded step forward
        // (the first command of a shard takes its stamp as it is).
        let last = self.totals.last_time_ms;
        let now = if last == 0 { req.time_ms } else { req.time_ms.clamp(last, last.saturating_add(self.config.max_stamp_step_ms)) };
        self.totals.last_time_ms = now;

        let system = req.cmd.is_system();
        // Request ids are scoped by the acting user: another user's id is another request, and
        // its outcome is never answered to anyone else. (Every non-system command has an actor.)
        let actor = req.cmd.actor().unwrap_or(0);
        let fingerprint = fnv1a(&[&enc(&req.cmd.for_fingerprint())]);
        if !system {
            // A replay answers the first outcome and touches nothing else.
            if let Some(seen) = self.get::<DedupEntry>(&keys::dedup(actor, &req.id)) {
                return if seen.fingerprint == fingerprint { seen.outcome } else { Outcome::err(Code::RequestIdReused) };
            }
            // The request window. An id is remembered until ledger time passes the later of
            // its apply and issue times by the retention, so an id forgotten was issued more
            // than the retention ago: refused here, whatever ledger time did meanwhile.
            let issued = req.id.issued_ms();
            if issued.saturating_add(self.config.dedup_retention_ms) <= now {
                return Outcome::err(Code::RequestExpired);
            }
            if issued > now.saturating_add(self.config.request_ahead_ms) {
                return Outcome::err(Code::RequestAhead);
            }
        }
        self.collect(now);
        let outcome = self.execute(req, now);
        if !system && !outcome.code.is_misrouted() {
            let remember_from = now.max(req.id.issued_ms());
            self.put(keys::dedup(actor, &req.id), &DedupEntry { fingerprint, time_ms: now, outcome: outcome.clone() });
            self.db.put(keys::dedup_expiry(remember_from, actor, &req.id), vec![]);
        }
        // The request's name, not its fields (which may hold a PIN hash or a phrase).
        assert!(self.totals.identity_holds(), "conservation broken after {req}: {:?}", self.totals);
        outcome
    }

    /// Bounded housekeeping on every command: forgets request ids past the window, deletes
    /// dead challenges, and archives packets settled longer than the retention.
    fn collect(&mut self, now: u64) {
        let oldest = self.totals.dedup_oldest_ms;
        if let Some((due, next)) = self.due(keys::dedup_expiry_all(), now.checked_sub(self.config.dedup_retention_ms), oldest, now) {
            for k in due {
                let (actor, id) = keys::dedup_expiry_id(&k);
                self.db.delete(keys::dedup(actor, &id));
                self.db.delete(k);
            }
            self.totals.dedup_oldest_ms = next;
        }
        // A challenge is dead once `now >= expires_ms` (`check_device`); gone, it is refused alike.
        // A challenge added later expires after `now`, not at it, so an empty index's bound is
        // "never" (`challenge` lowers it on insert); with `now` every command would scan it.
        let oldest = self.totals.challenges_oldest_ms;
        let index = keys::challenge_expiry_all();
        if let Some((due, next)) = self.due_limited(index, now.checked_add(1), oldest, u64::MAX, self.config.dedup_gc_per_apply) {
            for k in due {
                self.db.delete(keys::challenge(keys::challenge_expiry_id(&k)));
                self.db.delete(k);
            }
            self.totals.challenges_oldest_ms = next;
        }
        let oldest = self.totals.settled_oldest_ms;
        let until = now.checked_sub(self.config.packet_retention_ms);
        if let Some((due, next)) = self.due_limited(keys::settled_all(), until, oldest, now, self.config.archive_per_apply) {
            for k in due {
                self.archive(keys::settled_packet(&k));
                self.db.delete(k);
            }
            self.totals.settled_oldest_ms = next;
        }
    }

    fn due(&self, index: (Vec<u8>, Vec<u8>), until: Option<u64>, oldest: u64, now: u64) -> Option<(Vec<Vec<u8>>, u64)> {
        self.due_limited(index, until, oldest, now, self.config.dedup_gc_per_apply)
    }

    /// The rows of a time index (keys `prefix time ...`) with time before `until`, at most
    /// `limit`, and the index's new lower bound: the first row left, or `empty` when none is (no
    /// row added later has a time before `empty`; `now` for the indexes whose rows are stamped
    /// with the apply time or later). None when the bound says nothing is due, so most commands
    /// cost no scan.
    fn due_limited(
        &self,
        index: (Vec<u8>, Vec<u8>),
        until: Option<u64>,
        oldest: u64,
        empty: u64,
        limit: usize,
    ) -> Option<(Vec<Vec<u8>>, u64)> {
        let until = until?;
        if until <= oldest {
            return None;
        }
        let rows = self.db.scan(&index.0, &index.1, limit.saturating_add(1));
        let mut due = Vec::with_capacity(rows.len());
        let mut next = empty;
        for (k, _) in rows {
            let t = keys::index_time(&k);
            if t < until && due.len() < limit {
                due.push(k);
            } else {
                next = t;
                break;
            }
        }
        assert!(due.first().is_none_or(|k| keys::index_time(k) >= oldest), "no row is older than the index's bound");
        Some((due, next))
    }

    /// Moves a settled packet out of hot state: one archive record with its claims; its claim
    /// records and grab markers are deleted (a late grab is answered from the archive).
    fn archive(&mut self, id: PacketId) {
        let p: Packet = self.get(&keys::packet(id)).expect("a settled index row names a hot packet");
        assert!(!p.is_open(), "only settled packets are archived");
        let (a, b) = keys::claims_of(id);
        let rows = self.db.scan(&a, &b, p.count as usize + 1);
        assert_eq!(rows.len() as u32, p.count - p.remaining_count, "one claim per share taken");
        let mut claims = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let c: Claim = dec(&v);
            self.db.delete(keys::grabbed(id, c.grabber));
            self.db.delete(k);
            claims.push(c);
        }
        // A late wrong phrase is answered from the archive (as any late grab), so the counts go.
        let (a, b) = keys::phrase_tries_of(id);
        let tries = self.db.scan(&a, &b, p.phrase_missers as usize + 1);
        assert_eq!(tries.len() as u32, p.phrase_missers, "one count per grabber who sent a wrong phrase");
        for (k, _) in tries {
            self.db.delete(k);
        }
        self.db.delete(keys::packet(id));
        self.put(keys::archived(id), &ArchivedPacket { packet: p, claims });
        self.totals.archived_packets += 1;
    }

    /// A settled packet moved to the archive, if this one was.
    fn archived(&self, id: PacketId) -> Option<ArchivedPacket> {
        self.get(&keys::archived(id))
    }

    fn execute(&mut self, req: &Request, now: u64) -> Outcome {
        // A frozen or moved slot's users are served elsewhere: refused before any check, and
        // not remembered (`apply`), so the re-send runs where the wallet is.
        if let Some(code) = req.cmd.home_user().and_then(|u| self.slot_refusal(u)) {
            return Outcome::err(code);
        }
        let res = match &req.cmd {
            Command::OpenAccount { user, device } => self.open_account(*user, device),
            Command::TopUp { user, amount } => self.top_up(req, now, *user, *amount),
            Command::Withdraw { user, amount, device, verification, pin } => {
                self.withdraw(req, now, *user, *amount, device, verification.as_ref(), *pin)
            }
            Command::Transfer { from, to, to_shard, amount, device, verification, pin } => {
                self.transfer(req, now, *from, *to, *to_shard, *amount, device, verification.as_ref(), *pin)
            }
            Command::SendPacket { sender, kind, device, verification, greeting, pin, key } => {
                self.send_packet(req, now, *sender, kind, device, verification.as_ref(), greeting, *pin, *key)
            }
            Command::Grab { packet, key, grabber, grabber_shard, phrase } => {
                self.grab(req, now, *packet, *key, *grabber, *grabber_shard, phrase.as_ref())
            }
            Command::Credit { source, entries } => self.credit(req, now, *source, entries),
            Command::MarkDelivered { dest, up_to_seq } => self.mark_delivered(*dest, *up_to_seq),
            Command::ExpirePacket { packet } => self.expire(req, now, *packet),
            Command::SetRisk { user, frozen, grade } => self.set_risk(*user, *frozen, *grade),
            Command::RevokeTokens { user, before_s } => self.revoke_tokens(*user, *before_s),
            Command::SetPin { user, salt, hash, verification } => self.set_pin(now, *user, *salt, *hash, verification.as_ref()),
            Command::AckNotifications { up_to_seq } => self.ack_notifications(*up_to_seq),
            Command::SetDrained { region, drained } => self.set_drained(region, *drained),
            Command::ConfigCheck { .. } => Err(Code::InvalidArgument),
            Command::SetClusterMap { version, map } => self.set_cluster_map(*version, map),
            Command::MoveSlotIn { slot, slots, from } => self.move_slot_in(*slot, *slots, *from),
            Command::MoveSlotOut { slot, slots, to, max_users } => self.move_slot_out(*slot, *slots, *to, *max_users),
            Command::FinishSlotIn { slot, from, through_seq } => self.finish_slot_in(*slot, *from, *through_seq),
        };
        match res {
            Ok(o) => o,
            Err(code) => Outcome::err(code),
        }
    }

    // ------------------------------------------------------------------ helpers

    fn account(&self, user: UserId) -> Check<Account> {
        self.get(&keys::account(user)).ok_or(Code::UnknownUser)
    }

    /// SlotMoving / SlotMoved when `user`'s slot is frozen, arriving or gone here.
    fn slot_refusal(&self, user: UserId) -> Option<Code> {
        match self.slots.of(user)? {
            SlotState::Leaving { .. } | SlotState::Arriving { .. } => Some(Code::SlotMoving),
            SlotState::Gone { .. } => Some(Code::SlotMoved),
        }
    }

    /// Where `user`'s wallet is: here, moved on (its forwarding mark), or not here.
    fn find_wallet(&self, user: UserId) -> Wallet {
        if let Some(acct) = self.get::<Account>(&keys::account(user)) {
            return Wallet::Here(acct);
        }
        if let Some(to) = self.get::<ShardId>(&keys::moved(user)) {
            return Wallet::Moved(to);
        }
        match self.slot_refusal(user) {
            Some(code) => Wallet::Elsewhere(code),
            None => Wallet::Missing,
        }
    }

    /// Where money for `user` goes, whose shard the node's map says is `shard`: the wallet, if
    /// here, or the shard to send it to. A wallet that moved on from here is paid where it went
    /// (the sender's map was older).
    fn payee(&self, user: UserId, shard: ShardId) -> Check<(Option<Account>, ShardId)> {
        if shard != self.shard {
            return Ok((None, shard));
        }
        Ok(match self.local_or_moved(user)? {
            Ok(a) => (Some(a), shard),
            Err(moved) => (None, moved),
        })
    }

    /// A wallet that must be here for a local transfer or grab: Ok(None) when it moved on
    /// (the money goes to that shard), the slot's code when it is moving, else UnknownUser.
    fn local_or_moved(&self, user: UserId) -> Check<Result<Account, ShardId>> {
        match self.find_wallet(user) {
            Wallet::Here(a) => Ok(Ok(a)),
            Wallet::Moved(to) => Ok(Err(to)),
            Wallet::Elsewhere(code) => Err(code),
            Wallet::Missing => Err(Code::UnknownUser),
        }
    }

    fn valid_string(&self, s: &str, allow_empty: bool) -> Check<()> {
        if (!allow_empty && s.is_empty()) || s.len() > self.config.max_string {
            return Err(Code::InvalidArgument);
        }
        Ok(())
    }

    fn check_amount(&self, amount: Cents) -> Check<()> {
        if amount.is_zero() {
            return Err(Code::AmountZero);
        }
        if amount > self.config.max_amount {
            return Err(Code::AmountOverflow);
        }
        Ok(())
    }

    /// Frozen, risk grade and daily limit, for money leaving by send or transfer.
    fn check_sender(&self, acct: &Account, amount: Cents, now: u64) -> Check<()> {
        if acct.frozen {
            return Err(Code::AccountFrozen);
        }
        let limit = self.config.daily_limit(acct.grade).ok_or(Code::RiskGradeBlocked)?;
        let today = if acct.day == china_day(now) { acct.sent_today } else { Cents(0) };
        let after = today.checked_add(amount).ok_or(Code::AmountOverflow)?;
        if after > limit {
            return Err(Code::DailyLimitExceeded);
        }
        Ok(())
    }

    /// The payment PIN, checked right after the account is loaded. Locked and not-set refuse
    /// with no side effect. A wrong PIN is a rejection that changes state (like issuing a
    /// challenge): the failure is counted, and the `pin_max_failures`-th in a row locks spending
    /// for `pin_lock_ms` (answered PinLocked) and starts the count again. The lock ends by
    /// itself; during it even the right PIN is PinLocked, so guessing gains nothing.
    fn check_pin(&mut self, now: u64, acct: &mut Account, pin: PinCheck) -> Result<(), Outcome> {
        if now < acct.pin_locked_until_ms {
            return Err(Outcome::err(Code::PinLocked));
        }
        if acct.pin.is_none() {
            return Err(Outcome::err(Code::PinNotSet));
        }
        match pin {
            PinCheck::Verified => Ok(()),
            PinCheck::Wrong => {
                acct.pin_failures = acct.pin_failures.saturating_add(1);
                let code = if acct.pin_failures >= self.config.pin_max_failures {
                    acct.pin_failures = 0;
                    acct.pin_locked_until_ms = now.saturating_add(self.config.pin_lock_ms);
                    Code::PinLocked
                } else {
                    Code::WrongPin
                };
                self.put(keys::account(acct.user), &*acct);
                Err(Outcome::err(code))
            }
        }
    }

    /// New device at or above the threshold needs a live challenge bound to this operation.
    /// Returns Ok(Some(id)) when a verification will be consumed, Ok(None) when none is needed.
    /// Two rejections change state: ChallengeRequired issues a challenge and queues its
    /// notification (the code goes to the known device, computed there from the shared key;
    /// it is stored nowhere), and a wrong code or another operation counts an attempt.
    fn check_device(
        &mut self,
        now: u64,
        acct: &Account,
        device: &str,
        op: ChallengeOp,
        v: Option<&Verification>,
    ) -> Result<Option<u64>, Outcome> {
        if device == acct.device {
            return Ok(None);
        }
        // The day's unchallenged spending from other devices, this payment included.
        let today = if acct.other_devices_day == china_day(now) { acct.other_devices_today } else { Cents(0) };
        if today.checked_add(op.amount).is_some_and(|sum| sum < self.config.challenge_threshold) {
            return Ok(None);
        }
        self.challenge(now, acct, op, v)
    }

    /// The second check itself: without a verification, a new challenge (its code goes to the
    /// account's known device through the notification outbox) and CHALLENGE_REQUIRED; with
    /// one, the challenge it names, if its code fits `op` (Some(id): use it once the operation
    /// succeeds).
    fn challenge(&mut self, now: u64, acct: &Account, op: ChallengeOp, v: Option<&Verification>) -> Result<Option<u64>, Outcome> {
        let Some(v) = v else {
            // Ids start at 1: 0 means "no challenge" in replies and on the wire.
            self.totals.next_challenge += 1;
            let id = self.totals.next_challenge;
            let expires_ms = now + self.config.challenge_ttl_ms;
            self.put(keys::challenge(id), &Challenge { user: acct.user, op, expires_ms, used: false, attempts: 0 });
            self.db.put(keys::challenge_expiry(expires_ms, id), vec![]);
            self.totals.challenges_oldest_ms = self.totals.challenges_oldest_ms.min(expires_ms);
            let seq = self.totals.next_notification.max(1);
            self.totals.next_notification = seq + 1;
            let n = Notification { seq, user: acct.user, device: acct.device.clone(), challenge_id: id, op, expires_ms };
            self.put(keys::notification(seq), &n);
            self.totals.notifications_pending += 1;
            return Err(Outcome { code: Code::ChallengeRequired, reply: Reply::Challenge { challenge_id: id } });
        };
        let invalid = || Outcome::err(Code::ChallengeInvalid);
        let Some(mut c) = self.get::<Challenge>(&keys::challenge(v.challenge_id)) else { return Err(invalid()) };
        // Another user's, spent, expired or out of attempts: refused and nothing counted (a
        // stranger's guesses must not burn someone else's challenge).
        if c.user != acct.user || c.used || now >= c.expires_ms || c.attempts >= self.config.challenge_attempts {
            return Err(invalid());
        }
        let expected = challenge_code(&self.config.challenge_key, v.challenge_id, c.user, &c.op);
        if c.op != op || !codes_equal(expected, v.code) {
            c.attempts += 1;
            self.put(keys::challenge(v.challenge_id), &c);
            return Err(invalid());
        }
        Ok(Some(v.challenge_id))
    }

    fn use_challenge(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            let mut c: Challenge = self.get(&keys::challenge(id)).expect("checked challenge exists");
            c.used = true;
            self.put(keys::challenge(id), &c);
        }
    }

    fn statement(&mut self, acct: &mut Account, now: u64, kind: EntryKind, delta: i64, req: &Request) {
        let e = StatementEntry { time_ms: now, kind, delta, balance_after: acct.balance, request: req.id };
        self.put(keys::statement(acct.user, acct.stmt_next), &e);
        acct.stmt_next += 1;
        // Keep a bounded history: drop the oldest entry once over the limit.
        while acct.stmt_next - acct.stmt_first > self.config.statement_keep {
            self.db.delete(keys::statement(acct.user, acct.stmt_first));
            acct.stmt_first += 1;
        }
    }

    fn new_account(user: UserId, device: &str) -> Account {
        Account {
            user,
            balance: Cents(0),
            frozen: false,
            grade: RiskGrade::Normal,
            device: device.to_string(),
            withdrawn: Cents(0),
            day: 0,
            sent_today: Cents(0),
            stmt_first: 0,
            stmt_next: 0,
            pin: None,
            pin_failures: 0,
            pin_locked_until_ms: 0,
            packets_year: PacketYear::default(),
            other_devices_day: 0,
            other_devices_today: Cents(0),
            tokens_void_before_s: 0,
        }
    }

    fn credit_wallet(&mut self, acct: &mut Account, amount: Cents) {
        acct.balance = add(acct.balance, amount);
        self.totals.balances = add(self.totals.balances, amount);
    }

    fn debit_wallet(&mut self, acct: &mut Account, amount: Cents) {
        acct.balance = sub(acct.balance, amount);
        self.totals.balances = sub(self.totals.balances, amount);
    }

    /// Adds a payment made from a device other than the account's, without a challenge, to the
    /// day's running sum that `check_device` compares with the challenge threshold.
    fn count_other_device(acct: &mut Account, device: &str, amount: Cents, now: u64, challenge: Option<u64>) {
        if device == acct.device || challenge.is_some() {
            return;
        }
        let day = china_day(now);
        if acct.other_devices_day != day {
            acct.other_devices_day = day;
            acct.other_devices_today = Cents(0);
        }
        acct.other_devices_today = add(acct.other_devices_today, amount);
    }

    fn count_sent(acct: &mut Account, amount: Cents, now: u64) {
        let day = china_day(now);
        if acct.day != day {
            acct.day = day;
            acct.sent_today = Cents(0);
        }
        acct.sent_today = add(acct.sent_today, amount);
    }

    /// Queues money for a user on another shard: an outbox record with the next sequence number.
    fn outbox(&mut self, dest: ShardId, user: UserId, amount: Cents, origin: Origin) {
        self.outbox_entry(dest, user, amount, origin, None)
    }

    fn outbox_entry(&mut self, dest: ShardId, user: UserId, amount: Cents, origin: Origin, bundle: Option<Box<UserBundle>>) {
        assert_ne!(dest, self.shard, "an outbox goes to another shard");
        let mut pair: PairState = self.get(&keys::sent(dest)).unwrap_or_default();
        pair.seq += 1;
        pair.cents = add(pair.cents, amount);
        self.put(keys::sent(dest), &pair);
        self.put(keys::outbox(dest, pair.seq), &CreditEntry { seq: pair.seq, user, amount, origin, bundle });
        self.totals.outbox_pending = add(self.totals.outbox_pending, amount);
        self.totals.outbox_records += 1;
    }

    // ------------------------------------------------------------------ commands

    fn open_account(&mut self, user: UserId, device: &str) -> Check<Outcome> {
        if user == 0 {
            return Err(Code::InvalidArgument);
        }
        self.valid_string(device, false)?;
        if self.get::<Account>(&keys::account(user)).is_some() {
            return Err(Code::UserExists);
        }
        let acct = Self::new_account(user, device);
        self.put(keys::account(user), &acct);
        self.totals.accounts += 1;
        Ok(Outcome::ok(Reply::Wallet { user, balance: Cents(0), fee: Cents(0), credit_in_flight: false }))
    }

    fn top_up(&mut self, req: &Request, now: u64, user: UserId, amount: Cents) -> Check<Outcome> {
        self.check_amount(amount)?;
        let mut acct = self.account(user)?;
        if acct.balance.checked_add(amount).is_none()
            || self.totals.topups.checked_add(amount).is_none()
            || self.totals.balances.checked_add(amount).is_none()
        {
            return Err(Code::AmountOverflow);
        }
        // After this point the top-up must succeed.
        self.credit_wallet(&mut acct, amount);
        self.totals.topups = add(self.totals.topups, amount);
        self.statement(&mut acct, now, EntryKind::TopUp, amount.0 as i64, req);
        self.put(keys::account(user), &acct);
        Ok(Outcome::ok(Reply::Wallet { user, balance: acct.balance, fee: Cents(0), credit_in_flight: false }))
    }

    #[allow(clippy::too_many_arguments)]
    fn withdraw(
        &mut self,
        req: &Request,
        now: u64,
        user: UserId,
        amount: Cents,
        device: &str,
        v: Option<&Verification>,
        pin: PinCheck,
    ) -> Check<Outcome> {
        self.check_amount(amount)?;
        self.valid_string(device, true)?;
        let mut acct = self.account(user)?;
        if let Err(o) = self.check_pin(now, &mut acct, pin) {
            return Ok(o);
        }
        // Money out to a bank is money out: the grade and the daily limit hold as for a
        // transfer (a withdrawal skipped both before #28).
        self.check_sender(&acct, amount, now)?;
        let fee = self.config.withdrawal_fee(amount, acct.withdrawn);
        let cost = amount.checked_add(fee).ok_or(Code::AmountOverflow)?;
        if acct.balance < cost {
            return Err(Code::InsufficientFunds);
        }
        if acct.withdrawn.checked_add(amount).is_none()
            || self.totals.withdrawals.checked_add(amount).is_none()
            || self.totals.fees.checked_add(fee).is_none()
        {
            return Err(Code::AmountOverflow);
        }
        let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount, counterparty: 0 };
        let challenge = match self.check_device(now, &acct, device, op, v) {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        // After this point the withdrawal must succeed.
        self.use_challenge(challenge);
        Self::count_other_device(&mut acct, device, amount, now, challenge);
        acct.pin_failures = 0;
        self.debit_wallet(&mut acct, cost);
        Self::count_sent(&mut acct, amount, now);
        acct.withdrawn = add(acct.withdrawn, amount);
        self.totals.withdrawals = add(self.totals.withdrawals, amount);
        self.totals.fees = add(self.totals.fees, fee);
        self.statement(&mut acct, now, EntryKind::Withdraw { fee }, -(cost.0 as i64), req);
        self.put(keys::account(user), &acct);
        Ok(Outcome::ok(Reply::Wallet { user, balance: acct.balance, fee, credit_in_flight: false }))
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        req: &Request,
        now: u64,
        from: UserId,
        to: UserId,
        to_shard: ShardId,
        amount: Cents,
        device: &str,
        v: Option<&Verification>,
        pin: PinCheck,
    ) -> Check<Outcome> {
        self.check_amount(amount)?;
        self.valid_string(device, true)?;
        if from == to {
            return Err(Code::SelfTransfer);
        }
        if to == 0 || to_shard == 0 {
            return Err(Code::InvalidArgument);
        }
        let mut src = self.account(from)?;
        let (mut dst, to_shard) = self.payee(to, to_shard)?;
        let local = dst.is_some();
        if let Err(o) = self.check_pin(now, &mut src, pin) {
            return Ok(o);
        }
        self.check_sender(&src, amount, now)?;
        if src.balance < amount {
            return Err(Code::InsufficientFunds);
        }
        if let Some(d) = &dst {
            if d.balance.checked_add(amount).is_none() {
                return Err(Code::AmountOverflow);
            }
        }
        let op = ChallengeOp { kind: ChallengeKind::Transfer, amount, counterparty: to };
        let challenge = match self.check_device(now, &src, device, op, v) {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        // After this point the transfer must succeed.
        self.use_challenge(challenge);
        Self::count_other_device(&mut src, device, amount, now, challenge);
        src.pin_failures = 0;
        self.debit_wallet(&mut src, amount);
        Self::count_sent(&mut src, amount, now);
        self.statement(&mut src, now, EntryKind::TransferOut { to, to_shard }, -(amount.0 as i64), req);
        self.put(keys::account(from), &src);
        match dst.as_mut() {
            Some(d) => {
                self.credit_wallet(d, amount);
                self.statement(d, now, EntryKind::TransferIn { from, from_shard: self.shard }, amount.0 as i64, req);
                self.put(keys::account(to), &*d);
            }
            None => self.outbox(to_shard, to, amount, Origin::Transfer { from }),
        }
        Ok(Outcome::ok(Reply::Wallet { user: from, balance: src.balance, fee: Cents(0), credit_in_flight: !local }))
    }

    /// Validates a packet's shape; returns (total, count).
    fn check_kind(&self, sender: UserId, kind: &PacketKind, now: u64) -> Check<(Cents, u32)> {
        let count_ok = |c: u32| if c == 0 || c > self.config.max_count { Err(Code::CountOutOfRange) } else { Ok(()) };
        let (total, count) = match kind {
            PacketKind::Lucky { total, count } => {
                count_ok(*count)?;
                (*total, *count)
            }
            PacketKind::Password { total, count, phrase_hash } => {
                count_ok(*count)?;
                // The node checked the phrase itself (non-empty, its length) before hashing it.
                if *phrase_hash == [0; 32] {
                    return Err(Code::InvalidArgument);
                }
                (*total, *count)
            }
            PacketKind::Fixed { per_share, count } => {
                count_ok(*count)?;
                if per_share.is_zero() {
                    return Err(Code::AmountZero);
                }
                let total = per_share.0.checked_mul(*count as u64).ok_or(Code::AmountOverflow)?;
                (Cents(total), *count)
            }
            PacketKind::Exclusive { amount, recipient, recipient_shard } => {
                if *recipient == sender {
                    return Err(Code::SelfTransfer);
                }
                if *recipient == 0 || *recipient_shard == 0 {
                    return Err(Code::InvalidArgument);
                }
                (*amount, 1)
            }
        };
        if total.is_zero() {
            return Err(Code::AmountZero);
        }
        if total > self.config.packet_limit(now) {
            return Err(Code::TotalTooLarge);
        }
        if total.0 < count as u64 {
            return Err(Code::ShareTooSmall);
        }
        Ok((total, count))
    }

    #[allow(clippy::too_many_arguments)]
    fn send_packet(
        &mut self,
        req: &Request,
        now: u64,
        sender: UserId,
        kind: &PacketKind,
        device: &str,
        v: Option<&Verification>,
        greeting: &str,
        pin: PinCheck,
        key: u64,
    ) -> Check<Outcome> {
        if key == 0 {
            return Err(Code::InvalidArgument);
        }
        self.valid_string(device, true)?;
        self.valid_string(greeting, true)?;
        let (total, count) = self.check_kind(sender, kind, now)?;
        let mut acct = self.account(sender)?;
        if let Err(o) = self.check_pin(now, &mut acct, pin) {
            return Ok(o);
        }
        self.check_sender(&acct, total, now)?;
        if acct.balance < total {
            return Err(Code::InsufficientFunds);
        }
        if self.totals.escrow.checked_add(total).is_none() || self.totals.next_packet_seq + 1 >= (1 << PacketId::SEQ_BITS) {
            return Err(Code::AmountOverflow);
        }
        let counterparty = match kind {
            PacketKind::Exclusive { recipient, .. } => *recipient,
            _ => 0,
        };
        let op = ChallengeOp { kind: ChallengeKind::SendPacket, amount: total, counterparty };
        let challenge = match self.check_device(now, &acct, device, op, v) {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        // After this point the send must succeed.
        self.use_challenge(challenge);
        Self::count_other_device(&mut acct, device, total, now, challenge);
        acct.pin_failures = 0;
        self.totals.next_packet_seq += 1;
        let id = PacketId::new(self.shard, self.totals.next_packet_seq);
        let seed = fnv1a(&[&req.id.0, &self.shard.to_be_bytes(), &id.0.to_be_bytes()]);
        let expires_ms = now + self.config.packet_ttl_ms;
        self.debit_wallet(&mut acct, total);
        Self::count_sent(&mut acct, total, now);
        acct.packets_year = acct.packets_year.sent_one(china_year(now), total);
        self.totals.escrow = add(self.totals.escrow, total);
        self.totals.open_packets += 1;
        self.statement(&mut acct, now, EntryKind::PacketSend { packet: id }, -(total.0 as i64), req);
        self.put(keys::account(sender), &acct);
        let p = Packet {
            id,
            key,
            sender,
            kind: kind.clone(),
            total,
            count,
            remaining: total,
            remaining_count: count,
            seed,
            created_ms: now,
            expires_ms,
            refunded: None,
            greeting: greeting.to_string(),
            phrase_missers: 0,
        };
        self.put(keys::packet(id), &p);
        self.db.put(keys::expiry(expires_ms, id), vec![]);
        Ok(Outcome::ok(Reply::Sent { packet: id, key, expires_ms, balance: acct.balance }))
    }

    #[allow(clippy::too_many_arguments)]
    fn grab(
        &mut self,
        req: &Request,
        now: u64,
        packet: PacketId,
        key: u64,
        grabber: UserId,
        grabber_shard: ShardId,
        phrase: Option<&[u8; 32]>,
    ) -> Check<Outcome> {
        if packet.shard() != self.shard {
            return Err(Code::WrongShard);
        }
        if grabber == 0 || grabber_shard == 0 {
            return Err(Code::InvalidArgument);
        }
        // A wrong key is answered as no packet at all: nothing about the id is learnt.
        let Some(mut p) = self.get::<Packet>(&keys::packet(packet)).filter(|p| p.key == key) else {
            let archived = self.archived(packet).filter(|a| a.packet.key == key);
            return Err(archived.map(|a| a.refusal(grabber, now)).unwrap_or(Code::UnknownPacket));
        };
        if self.db.get(&keys::grabbed(packet, grabber)).is_some() {
            return Err(Code::AlreadyGrabbed);
        }
        if now >= p.expires_ms || p.refunded.is_some() {
            return Err(Code::PacketExpired);
        }
        if p.remaining_count == 0 {
            return Err(Code::PacketExhausted);
        }
        match &p.kind {
            PacketKind::Exclusive { recipient, .. } if *recipient != grabber => return Err(Code::NotRecipient),
            PacketKind::Password { phrase_hash, .. } => {
                // Counted per grabber: after the last try even the right phrase is refused, so
                // the answer stops telling right from wrong.
                let tries: u32 = self.get(&keys::phrase_tries(packet, grabber)).unwrap_or(0);
                if tries >= PHRASE_MAX_TRIES {
                    return Err(Code::PhraseTriesExhausted);
                }
                if phrase != Some(phrase_hash) {
                    if tries == 0 {
                        p.phrase_missers += 1;
                        self.put(keys::packet(packet), &p);
                    }
                    self.put(keys::phrase_tries(packet, grabber), &(tries + 1));
                    return Ok(Outcome::err(Code::WrongPassword));
                }
            }
            _ => {}
        }
        let (mut wallet, grabber_shard) = self.payee(grabber, grabber_shard)?;
        let local = wallet.is_some();
        let index = p.count - p.remaining_count;
        let amount = match &p.kind {
            PacketKind::Lucky { .. } | PacketKind::Password { .. } => Cents(split::share(p.seed, index, p.remaining.0, p.remaining_count)),
            PacketKind::Fixed { per_share, .. } => *per_share,
            PacketKind::Exclusive { amount, .. } => *amount,
        };
        assert!(amount.0 >= 1 && amount <= p.remaining, "share within what is left");
        assert!(p.remaining.0 - amount.0 >= (p.remaining_count - 1) as u64, "a cent left for every later share");
        if let Some(w) = &wallet {
            if w.balance.checked_add(amount).is_none() {
                return Err(Code::AmountOverflow);
            }
        }
        // After this point the grab must succeed.
        p.remaining = sub(p.remaining, amount);
        p.remaining_count -= 1;
        self.totals.escrow = sub(self.totals.escrow, amount);
        if p.remaining_count == 0 {
            assert!(p.remaining.is_zero(), "a fully grabbed packet has nothing left");
            self.db.delete(keys::expiry(p.expires_ms, packet));
            self.db.put(keys::settled(now, packet), vec![]);
            self.totals.open_packets -= 1;
        }
        self.put(keys::packet(packet), &p);
        self.put(keys::claim(packet, index), &Claim { grabber, amount, index, time_ms: now });
        self.put(keys::grabbed(packet, grabber), &index);
        match wallet.as_mut() {
            Some(w) => {
                self.credit_wallet(w, amount);
                w.packets_year = w.packets_year.received_one(china_year(now), amount);
                self.statement(w, now, EntryKind::PacketGrab { packet }, amount.0 as i64, req);
                self.put(keys::account(grabber), &*w);
            }
            None => self.outbox(grabber_shard, grabber, amount, Origin::Grab { packet }),
        }
        Ok(Outcome::ok(Reply::Grabbed {
            packet,
            amount,
            index,
            remaining_count: p.remaining_count,
            remaining: p.remaining,
            credit_in_flight: !local,
        }))
    }

    /// Applies a batch from `source`'s outbox, each new entry exactly once (by sequence number).
    /// An entry for a user with no account here opens nothing: it goes back to `source` through
    /// this shard's outbox (credits in, then outbox pending: the identity holds throughout), so a
    /// wallet is only ever opened by its owner, with their device, or arrives whole with its slot.
    /// Money for a wallet that moved on with its slot is forwarded there, in this shard's outbox.
    fn credit(&mut self, req: &Request, now: u64, source: ShardId, entries: &[CreditEntry]) -> Check<Outcome> {
        if source == self.shard || source == 0 || entries.is_empty() || entries.len() > self.config.max_credit_batch {
            return Err(Code::InvalidArgument);
        }
        let mut pair: PairState = self.get(&keys::received(source)).unwrap_or_default();
        // Pass 1, no side effects: order, amounts, where each new entry lands, and overflow.
        let mut expect = pair.seq + 1;
        let mut sum = Cents(0);
        let mut per_user: std::collections::BTreeMap<UserId, (Cents, Cents)> = Default::default();
        // Wallets arriving earlier in this batch, with their balance: later entries land in them.
        let mut arrived: std::collections::BTreeMap<UserId, Cents> = Default::default();
        let mut outgoing: std::collections::BTreeMap<ShardId, Cents> = Default::default();
        let mut landings = Vec::with_capacity(entries.len());
        for e in entries {
            if e.seq < expect {
                continue; // already applied: a redelivery
            }
            if e.seq > expect {
                return Err(Code::CreditOutOfOrder);
            }
            let moved = matches!(e.origin, Origin::Moved);
            if (e.amount.is_zero() && !moved) || e.user == 0 || e.bundle.is_some() != moved {
                return Err(Code::InvalidArgument);
            }
            expect += 1;
            sum = sum.checked_add(e.amount).ok_or(Code::AmountOverflow)?;
            let landing = self.landing(source, e, &arrived)?;
            match &landing {
                Landing::Wallet { user, balance, .. } => {
                    let u = per_user.entry(*user).or_insert((*balance, Cents(0)));
                    u.1 = u.1.checked_add(e.amount).ok_or(Code::AmountOverflow)?;
                }
                Landing::Outbox { dest, .. } => {
                    let o = outgoing.entry(*dest).or_default();
                    *o = o.checked_add(e.amount).ok_or(Code::AmountOverflow)?;
                }
                Landing::Import(b) => {
                    arrived.insert(e.user, b.account.balance);
                    per_user.insert(e.user, (b.account.balance, Cents(0)));
                }
            }
            landings.push(landing);
        }
        let out_sum = outgoing.values().try_fold(Cents(0), |a, b| a.checked_add(*b)).ok_or(Code::AmountOverflow)?;
        if per_user.values().any(|(balance, incoming)| balance.checked_add(*incoming).is_none())
            || self.totals.balances.checked_add(sum).is_none()
            || self.totals.credits_in.checked_add(sum).is_none()
            || pair.cents.checked_add(sum).is_none()
            || self.totals.outbox_pending.checked_add(out_sum).is_none()
            || outgoing
                .iter()
                .any(|(dest, c)| self.get::<PairState>(&keys::sent(*dest)).unwrap_or_default().cents.checked_add(*c).is_none())
        {
            return Err(Code::AmountOverflow);
        }
        // After this point the credit must succeed.
        let (mut applied, mut skipped) = (0u32, 0u32);
        let mut landings = landings.into_iter();
        for e in entries {
            if e.seq <= pair.seq {
                skipped += 1;
                continue;
            }
            match landings.next().expect("one landing per new entry") {
                Landing::Wallet { user, kind, .. } => {
                    let mut acct: Account = self.get(&keys::account(user)).expect("checked account exists");
                    self.credit_wallet(&mut acct, e.amount);
                    if matches!(kind, EntryKind::PacketGrab { .. }) {
                        acct.packets_year = acct.packets_year.received_one(china_year(now), e.amount);
                    }
                    self.statement(&mut acct, now, kind, e.amount.0 as i64, req);
                    self.put(keys::account(user), &acct);
                }
                Landing::Outbox { dest, user, origin } => self.outbox(dest, user, e.amount, origin),
                Landing::Import(bundle) => self.import(*bundle),
            }
            pair.seq = e.seq;
            pair.cents = add(pair.cents, e.amount);
            self.totals.credits_in = add(self.totals.credits_in, e.amount);
            applied += 1;
        }
        self.put(keys::received(source), &pair);
        Ok(Outcome::ok(Reply::Credited { applied, skipped }))
    }

    /// Where a new credit entry from `source` lands, read-only (`arrived`: wallets imported
    /// earlier in the same batch, with their balances).
    ///
    /// A return is never returned again: its payer is refused (UnknownUser / UnknownPacket, the
    /// batch waits in the source's outbox, audited as in flight, and the relay logs the refusal)
    /// rather than bounced. That refusal cannot happen to a return this shard caused: `transfer`
    /// loaded `from` here before queueing the original, `send_packet` loaded the sender before
    /// writing the packet, no command deletes an account but a slot move, which leaves a
    /// forwarding mark, and a packet leaves hot state only for the archive, where this still
    /// finds its sender. Only a forged or corrupted entry could be refused, and it must not move
    /// money.
    fn landing(&self, source: ShardId, e: &CreditEntry, arrived: &std::collections::BTreeMap<UserId, Cents>) -> Check<Landing> {
        enum Found {
            Here(Cents),
            Moved(ShardId),
            Absent,
        }
        let found = |user: UserId| -> Found {
            if let Some(balance) = arrived.get(&user) {
                return Found::Here(*balance);
            }
            match self.find_wallet(user) {
                Wallet::Here(a) => Found::Here(a.balance),
                Wallet::Moved(to) => Found::Moved(to),
                Wallet::Elsewhere(_) | Wallet::Missing => Found::Absent,
            }
        };
        // Money owed to `wallet` (a return or a refund): there, forwarded as (`user`, `fwd`)
        // where it moved, or refused.
        let owed = |wallet: UserId, kind: EntryKind, user: UserId, fwd: Origin| -> Check<Landing> {
            match found(wallet) {
                Found::Here(balance) => Ok(Landing::Wallet { user: wallet, balance, kind }),
                Found::Moved(dest) => Ok(Landing::Outbox { dest, user, origin: fwd }),
                Found::Absent => Err(Code::UnknownUser),
            }
        };
        // New money for the entry's user: there, forwarded where it moved, or back to the payer.
        let fresh = |kind: EntryKind, back: Origin| -> Check<Landing> {
            match found(e.user) {
                Found::Here(balance) => Ok(Landing::Wallet { user: e.user, balance, kind }),
                Found::Moved(dest) => Ok(Landing::Outbox { dest, user: e.user, origin: e.origin }),
                Found::Absent => Ok(Landing::Outbox { dest: source, user: e.user, origin: back }),
            }
        };
        match e.origin {
            Origin::Transfer { from } => fresh(EntryKind::TransferIn { from, from_shard: source }, Origin::TransferReturned { from }),
            Origin::Grab { packet } => fresh(EntryKind::PacketGrab { packet }, Origin::GrabReturned { packet }),
            Origin::TransferReturned { from } => owed(from, EntryKind::TransferReturned { to: e.user, to_shard: source }, e.user, e.origin),
            Origin::GrabReturned { packet } => {
                if packet.shard() != self.shard {
                    return Err(Code::WrongShard);
                }
                let sender = match self.get::<Packet>(&keys::packet(packet)) {
                    Some(p) => p.sender,
                    None => self.archived(packet).ok_or(Code::UnknownPacket)?.packet.sender,
                };
                let kind = EntryKind::GrabReturned { packet, grabber: e.user, grabber_shard: source };
                owed(sender, kind, sender, Origin::ShareReturned { packet, grabber: e.user, grabber_shard: source })
            }
            Origin::Refund { packet } => owed(e.user, EntryKind::PacketRefund { packet }, e.user, e.origin),
            Origin::ShareReturned { packet, grabber, grabber_shard } => {
                owed(e.user, EntryKind::GrabReturned { packet, grabber, grabber_shard }, e.user, e.origin)
            }
            Origin::Moved => {
                let b = e.bundle.as_ref().expect("checked: a move carries its bundle");
                let a = &b.account;
                if a.user != e.user || a.balance != e.amount || a.stmt_first > a.stmt_next {
                    return Err(Code::InvalidArgument);
                }
                if b.statements.iter().any(|(seq, _)| !(a.stmt_first..a.stmt_next).contains(seq)) {
                    return Err(Code::InvalidArgument);
                }
                if arrived.contains_key(&e.user) || self.db.get(&keys::account(e.user)).is_some() {
                    return Err(Code::UserExists);
                }
                Ok(Landing::Import(b.clone()))
            }
        }
    }

    /// A wallet arriving with its slot: its account, statement and remembered requests, as they
    /// were on the source (which forwards whatever comes for it later, in sequence after this).
    fn import(&mut self, b: UserBundle) {
        let user = b.account.user;
        self.totals.balances = add(self.totals.balances, b.account.balance);
        self.totals.accounts += 1;
        self.put(keys::account(user), &b.account);
        for (seq, e) in &b.statements {
            self.put(keys::statement(user, *seq), e);
        }
        for (id, d) in &b.requests {
            // A request this shard remembers already (the wallet was here before) is the same.
            if self.db.get(&keys::dedup(user, id)).is_none() {
                let from = d.time_ms.max(id.issued_ms());
                self.put(keys::dedup(user, id), d);
                self.db.put(keys::dedup_expiry(from, user, id), vec![]);
                self.totals.dedup_oldest_ms = self.totals.dedup_oldest_ms.min(from);
            }
        }
        self.db.delete(keys::moved(user));
    }

    /// A wallet leaving with its slot for `to`: its records as they are now.
    fn bundle(&self, account: Account) -> Check<UserBundle> {
        let user = account.user;
        let (a, b) = keys::statements_of(user);
        let rows = self.db.scan(&a, &b, (account.stmt_next - account.stmt_first) as usize + 1);
        let statements = rows.into_iter().map(|(k, v)| (keys::statement_seq(&k), dec(&v))).collect();
        let (a, b) = keys::dedup_of(user);
        let rows = self.db.scan(&a, &b, MAX_MOVED_REQUESTS + 1);
        if rows.len() > MAX_MOVED_REQUESTS {
            return Err(Code::MoveTooLarge);
        }
        let requests = rows.into_iter().map(|(k, v)| (keys::dedup_request(&k), dec(&v))).collect();
        Ok(UserBundle { account, statements, requests })
    }

    fn mark_delivered(&mut self, dest: ShardId, up_to: u64) -> Check<Outcome> {
        let sent: PairState = self.get(&keys::sent(dest)).unwrap_or_default();
        if up_to > sent.seq {
            return Err(Code::InvalidArgument);
        }
        // Start after what was delivered before: deleted records stay behind as tombstones in
        // RocksDB for a while, and a scan from 0 would wade through all of them.
        let done: u64 = self.get(&keys::delivered(dest)).unwrap_or(0);
        let (a, _) = keys::outbox_from(dest, done.saturating_add(1));
        let b = keys::outbox(dest, up_to.saturating_add(1));
        let limit = self.config.max_credit_batch * 4;
        let rows = self.db.scan(&a, &b, limit);
        // After this point the command must succeed.
        let mut amount = Cents(0);
        let n = rows.len() as u32;
        let mut reached = if rows.len() == limit { done } else { up_to.max(done) };
        for (k, v) in rows {
            let e: CreditEntry = dec(&v);
            assert!(e.seq > done && e.seq <= up_to, "outbox scan out of range");
            amount = add(amount, e.amount);
            reached = reached.max(e.seq);
            self.db.delete(k);
        }
        self.put(keys::delivered(dest), &reached);
        self.totals.outbox_pending = sub(self.totals.outbox_pending, amount);
        self.totals.credits_out_delivered = add(self.totals.credits_out_delivered, amount);
        self.totals.outbox_records -= n as u64;
        Ok(Outcome::ok(Reply::Delivered { records: n, amount }))
    }

    fn expire(&mut self, req: &Request, now: u64, packet: PacketId) -> Check<Outcome> {
        if packet.shard() != self.shard {
            return Err(Code::WrongShard);
        }
        let Some(mut p) = self.get::<Packet>(&keys::packet(packet)) else {
            // Archived: settled long ago.
            return match self.archived(packet) {
                Some(_) => Ok(Outcome::ok(Reply::Expired { refunded: Cents(0) })),
                None => Err(Code::UnknownPacket),
            };
        };
        if !p.is_open() {
            // Already refunded or fully grabbed: nothing to do, and that is fine (the sweeper
            // may re-send after a leader change).
            return Ok(Outcome::ok(Reply::Expired { refunded: Cents(0) }));
        }
        if now < p.expires_ms {
            return Err(Code::PacketNotExpired);
        }
        // The sender's wallet may have moved on with its slot: the refund follows it there.
        let sender = self.local_or_moved(p.sender)?;
        let refund = p.remaining;
        match &sender {
            Ok(acct) if acct.balance.checked_add(refund).is_none() => return Err(Code::AmountOverflow),
            Err(to) if self.get::<PairState>(&keys::sent(*to)).unwrap_or_default().cents.checked_add(refund).is_none() => {
                return Err(Code::AmountOverflow)
            }
            _ if self.totals.outbox_pending.checked_add(refund).is_none() => return Err(Code::AmountOverflow),
            _ => {}
        }
        // After this point the refund must succeed.
        self.totals.escrow = sub(self.totals.escrow, refund);
        match sender {
            Ok(mut acct) => {
                self.credit_wallet(&mut acct, refund);
                self.statement(&mut acct, now, EntryKind::PacketRefund { packet }, refund.0 as i64, req);
                self.put(keys::account(p.sender), &acct);
            }
            Err(to) => self.outbox(to, p.sender, refund, Origin::Refund { packet }),
        }
        p.remaining = Cents(0);
        p.refunded = Some(refund);
        self.db.delete(keys::expiry(p.expires_ms, packet));
        self.db.put(keys::settled(now, packet), vec![]);
        self.totals.open_packets -= 1;
        self.put(keys::packet(packet), &p);
        Ok(Outcome::ok(Reply::Expired { refunded: refund }))
    }

    fn set_risk(&mut self, user: UserId, frozen: bool, grade: RiskGrade) -> Check<Outcome> {
        let mut acct = self.account(user)?;
        acct.frozen = frozen;
        acct.grade = grade;
        self.put(keys::account(user), &acct);
        Ok(Outcome::ok(Reply::Risk { user, frozen, grade }))
    }

    /// Voids the user's tokens issued before `before_s`. A later mark replaces an earlier one;
    /// an earlier one changes nothing (a revocation is never undone by a late duplicate).
    fn revoke_tokens(&mut self, user: UserId, before_s: u64) -> Check<Outcome> {
        let mut acct = self.account(user)?;
        acct.tokens_void_before_s = acct.tokens_void_before_s.max(before_s);
        self.put(keys::account(user), &acct);
        Ok(Outcome::ok(Reply::Risk { user, frozen: acct.frozen, grade: acct.grade }))
    }

    /// The PIN is set once; changing it needs a flow of its own (old PIN or identity check),
    /// not a replay of this command.
    fn set_pin(&mut self, now: u64, user: UserId, salt: [u8; 16], hash: [u8; 32], v: Option<&Verification>) -> Check<Outcome> {
        let mut acct = self.account(user)?;
        if acct.pin.is_some() {
            return Err(Code::PinAlreadySet);
        }
        // A wallet that already holds money gets its first PIN only with the code sent to its
        // known device: a stolen token alone must not choose the PIN that spends the money.
        let op = ChallengeOp { kind: ChallengeKind::SetPin, amount: Cents(0), counterparty: 0 };
        let challenge = if acct.balance.is_zero() {
            None
        } else {
            match self.challenge(now, &acct, op, v) {
                Ok(c) => c,
                Err(o) => return Ok(o),
            }
        };
        // After this point the command must succeed.
        self.use_challenge(challenge);
        acct.pin = Some(PinRecord { salt, hash });
        acct.pin_failures = 0;
        self.put(keys::account(user), &acct);
        Ok(Outcome::ok(Reply::Wallet { user, balance: acct.balance, fee: Cents(0), credit_in_flight: false }))
    }

    /// Drops pushed challenge notifications up to `up_to`, at most `max_credit_batch` per
    /// command (the notifier acks in pages: `more` says to ack again).
    fn ack_notifications(&mut self, up_to: u64) -> Check<Outcome> {
        let issued = self.totals.next_notification.saturating_sub(1);
        if up_to > issued {
            return Err(Code::InvalidArgument);
        }
        let done = self.totals.notifications_acked;
        if up_to <= done {
            return Ok(Outcome::ok(Reply::Acked { records: 0, more: false }));
        }
        // Start after what was acked before, past RocksDB's tombstones of the deleted ones.
        let (a, _) = keys::notifications_from(done + 1);
        let b = keys::notification(up_to.saturating_add(1));
        let limit = self.config.max_credit_batch.max(1);
        let rows = self.db.scan(&a, &b, limit);
        let more = rows.len() == limit;
        // After this point the command must succeed.
        let n = rows.len();
        let mut reached = done;
        for (k, v) in rows {
            let e: Notification = dec(&v);
            assert!(e.seq > done && e.seq <= up_to, "notification scan out of range");
            reached = e.seq;
            self.db.delete(k);
        }
        self.totals.notifications_acked = if more { reached } else { up_to };
        self.totals.notifications_pending -= n as u64;
        Ok(Outcome::ok(Reply::Acked { records: n as u32, more }))
    }

    /// Stores the cluster map's next version (compare-and-set on the version, see
    /// `Command::SetClusterMap`).
    fn set_cluster_map(&mut self, version: u64, map: &[u8]) -> Check<Outcome> {
        if map.is_empty() || map.len() > MAX_CLUSTER_MAP_BYTES {
            return Err(Code::InvalidArgument);
        }
        let stored = self.db.get(&keys::cluster_map());
        let current = stored.as_ref().map(|v| u64::from_be_bytes(v[..8].try_into().expect("stored with its version"))).unwrap_or(0);
        if current == version && stored.as_ref().is_some_and(|v| &v[8..] == map) {
            return Ok(Outcome::ok(Reply::ClusterMap { version }));
        }
        if version != current + 1 {
            return Err(Code::ClusterMapStale);
        }
        let mut value = version.to_be_bytes().to_vec();
        value.extend_from_slice(map);
        self.db.put(keys::cluster_map(), value);
        Ok(Outcome::ok(Reply::ClusterMap { version }))
    }

    /// The slot and slot count of a move, checked against what this shard knows.
    fn check_slot(&self, slot: u32, slots: u32) -> Check<()> {
        if slots == 0 || slot >= slots || (self.slots.slots != 0 && self.slots.slots != slots) {
            return Err(Code::InvalidArgument);
        }
        Ok(())
    }

    fn set_slot(&mut self, slot: u32, slots: u32, state: Option<SlotState>) {
        self.slots.slots = slots;
        match state {
            Some(s) => self.slots.states.insert(slot, s),
            None => self.slots.states.remove(&slot),
        };
        let table = enc(&self.slots);
        self.db.put(keys::slot_table(), table);
    }

    /// The destination's first step of a slot move (`Command::MoveSlotIn`).
    fn move_slot_in(&mut self, slot: u32, slots: u32, from: ShardId) -> Check<Outcome> {
        if from == 0 || from == self.shard {
            return Err(Code::InvalidArgument);
        }
        self.check_slot(slot, slots)?;
        match self.slots.states.get(&slot) {
            Some(SlotState::Arriving { from: f }) if *f == from => {}
            // Only the slot's owner sends it, and the mover names the owner: a mark of arrival
            // from another shard is left by a move that never went on (refused, or abandoned
            // before its source froze the slot). Wallets import whatever the mark says.
            None | Some(SlotState::Gone { .. }) | Some(SlotState::Arriving { .. }) => {
                self.set_slot(slot, slots, Some(SlotState::Arriving { from }))
            }
            // It is leaving from here: a move out is under way.
            Some(SlotState::Leaving { .. }) => return Err(Code::SlotMoving),
        }
        Ok(Outcome::ok(Reply::SlotIn { slot }))
    }

    /// The source's step of a slot move (`Command::MoveSlotOut`): one page of wallets out.
    fn move_slot_out(&mut self, slot: u32, slots: u32, to: ShardId, max_users: u32) -> Check<Outcome> {
        if to == 0 || to == self.shard || max_users == 0 || max_users > MAX_MOVE_USERS {
            return Err(Code::InvalidArgument);
        }
        self.check_slot(slot, slots)?;
        let after = match self.slots.states.get(&slot) {
            None => 0,
            Some(SlotState::Leaving { to: t, after }) if *t == to => *after,
            Some(SlotState::Gone { to: t }) if *t == to => {
                let through_seq = self.get::<PairState>(&keys::sent(to)).unwrap_or_default().seq;
                return Ok(Outcome::ok(Reply::SlotOut { exported: 0, done: true, through_seq }));
            }
            Some(SlotState::Arriving { .. }) => return Err(Code::SlotMoving),
            // Leaving for, or gone to, another shard.
            Some(_) => return Err(Code::InvalidArgument),
        };
        let (a, b) = keys::accounts_after(after);
        let rows = self.db.scan(&a, &b, MOVE_SCAN_ROWS);
        let mut scanned_all = rows.len() < MOVE_SCAN_ROWS;
        let (mut cursor, mut bytes, mut sum) = (after, 0usize, Cents(0));
        let mut bundles = Vec::new();
        for (k, v) in rows {
            if bundles.len() as u32 == max_users || bytes >= MOVE_PAGE_BYTES {
                scanned_all = false;
                break;
            }
            let user = keys::account_user(&k);
            cursor = user;
            if user % slots as u64 != slot as u64 {
                continue;
            }
            let bundle = self.bundle(dec(&v))?;
            bytes = bytes.saturating_add(bincode::serialized_size(&bundle).map(|n| n as usize).unwrap_or(usize::MAX));
            sum = sum.checked_add(bundle.account.balance).ok_or(Code::AmountOverflow)?;
            bundles.push(bundle);
        }
        let pair: PairState = self.get(&keys::sent(to)).unwrap_or_default();
        if pair.cents.checked_add(sum).is_none() || self.totals.outbox_pending.checked_add(sum).is_none() {
            return Err(Code::AmountOverflow);
        }
        // After this point the command must succeed.
        let exported = bundles.len() as u32;
        for b in bundles {
            let (user, balance) = (b.account.user, b.account.balance);
            for (seq, _) in &b.statements {
                self.db.delete(keys::statement(user, *seq));
            }
            self.db.delete(keys::account(user));
            self.put(keys::moved(user), &to);
            self.totals.balances = sub(self.totals.balances, balance);
            self.totals.accounts -= 1;
            // Its remembered requests stay here too: a grab's retry comes back to the packet's shard.
            self.outbox_entry(to, user, balance, Origin::Moved, Some(Box::new(b)));
        }
        let state = if scanned_all { SlotState::Gone { to } } else { SlotState::Leaving { to, after: cursor } };
        self.set_slot(slot, slots, Some(state));
        let through_seq = if scanned_all { self.get::<PairState>(&keys::sent(to)).unwrap_or_default().seq } else { 0 };
        Ok(Outcome::ok(Reply::SlotOut { exported, done: scanned_all, through_seq }))
    }

    /// The destination's last step of a slot move (`Command::FinishSlotIn`).
    fn finish_slot_in(&mut self, slot: u32, from: ShardId, through_seq: u64) -> Check<Outcome> {
        match self.slots.states.get(&slot) {
            Some(SlotState::Arriving { from: f }) if *f == from => {
                let received: PairState = self.get(&keys::received(from)).unwrap_or_default();
                if received.seq < through_seq {
                    return Err(Code::SlotMoving);
                }
                let slots = self.slots.slots;
                self.set_slot(slot, slots, None);
            }
            // Finished before (a re-send).
            None => {}
            Some(_) => return Err(Code::InvalidArgument),
        }
        Ok(Outcome::ok(Reply::SlotIn { slot }))
    }

    /// Sets or clears a region's drain mark. Idempotent: the admin re-sends it to every shard.
    fn set_drained(&mut self, region: &str, drained: bool) -> Check<Outcome> {
        self.valid_string(region, false)?;
        if drained {
            self.db.put(keys::drained(region), vec![]);
        } else {
            self.db.delete(keys::drained(region));
        }
        Ok(Outcome::ok(Reply::Drained { region: region.to_string(), drained }))
    }
}
