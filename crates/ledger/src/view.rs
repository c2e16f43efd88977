//! Read-only queries over a shard's state: balances, statements, packets, totals, the audit,
//! and what the relay, sweeper and notifier need. No view returns a challenge code: none is
//! stored (see `challenge_code`).

use crate::keys;
use crate::money::Cents;
use crate::state::*;
use crate::store::Store;
use crate::types::*;

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    bincode::deserialize(b).expect("ledger record decodes")
}

/// Rows a full scan reads per step, so an audit never loads a whole table at once.
const SCAN_STEP: usize = 4096;

/// Calls `f` on every row in `[start, end)`, in bounded steps.
fn for_each(store: &(impl Store + ?Sized), start: &[u8], end: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
    let mut from = start.to_vec();
    loop {
        let rows = store.scan(&from, end, SCAN_STEP);
        let n = rows.len();
        for (k, v) in &rows {
            f(k, v);
        }
        if n < SCAN_STEP {
            return;
        }
        from = rows.last().expect("non-empty").0.clone();
        from.push(0);
    }
}

pub fn account(store: &(impl Store + ?Sized), user: UserId) -> Option<Account> {
    store.get(&keys::account(user)).map(|b| dec(&b))
}

/// Why `user`'s wallet is not here although the request came here: its slot is moving
/// (SlotMoving) or it moved on (SlotMoved, with the shard it went to when known). None: the
/// wallet is here, or simply does not exist.
pub fn moved(store: &(impl Store + ?Sized), user: UserId) -> Option<(Code, Option<ShardId>)> {
    if store.get(&keys::account(user)).is_some() {
        return None;
    }
    if let Some(to) = store.get(&keys::moved(user)) {
        return Some((Code::SlotMoved, Some(dec(&to))));
    }
    match slot_table(store).of(user)? {
        SlotState::Leaving { .. } | SlotState::Arriving { .. } => Some((Code::SlotMoving, None)),
        SlotState::Gone { to } => Some((Code::SlotMoved, Some(to))),
    }
}

/// The slots moving in or out of this shard, or gone from it.
pub fn slot_table(store: &(impl Store + ?Sized)) -> SlotTable {
    store.get(&keys::slot_table()).map(|b| dec(&b)).unwrap_or_default()
}

pub fn totals(store: &(impl Store + ?Sized)) -> Totals {
    store.get(&keys::totals()).map(|b| dec(&b)).unwrap_or_default()
}

/// Newest first, at most `limit`.
pub fn statement(store: &(impl Store + ?Sized), user: UserId, limit: usize) -> Vec<StatementEntry> {
    let Some(a) = account(store, user) else { return vec![] };
    let from = a.stmt_next.saturating_sub(limit as u64).max(a.stmt_first);
    let mut v: Vec<StatementEntry> =
        store.scan(&keys::statement(user, from), &keys::statement(user, a.stmt_next), limit).into_iter().map(|(_, v)| dec(&v)).collect();
    v.reverse();
    v
}

/// One page of a user's statement entries, newest first, each with its sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementPage {
    pub entries: Vec<(u64, StatementEntry)>,
    /// Pass as `before` for the next (older) page; None: nothing older is kept.
    pub next: Option<u64>,
}

/// Entries with seq below `before` (None: from the newest), newest first, at most `limit`.
pub fn statement_page(store: &(impl Store + ?Sized), user: UserId, before: Option<u64>, limit: usize) -> StatementPage {
    let Some(a) = account(store, user) else { return StatementPage::default() };
    let end = before.unwrap_or(a.stmt_next).min(a.stmt_next);
    let from = end.saturating_sub(limit as u64).max(a.stmt_first);
    let mut entries = seq_rows(store, user, from, end);
    entries.reverse();
    StatementPage { entries, next: (from > a.stmt_first).then_some(from) }
}

/// Which of a user's red packets: 發出的紅包 (sent) or 收到的紅包 (received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketSide {
    Sent,
    Received,
}

/// Statement rows one packet-list page reads at most, so a page costs a bounded scan even for
/// a user whose recent history holds no packet at all (the cursor then moves past them).
pub const PACKET_PAGE_SCAN: u64 = 1024;

/// A user's packets sent (`PacketSend` entries) or received (`PacketGrab`), newest first, from
/// the statement: at most `limit`, reading at most `PACKET_PAGE_SCAN` entries.
pub fn packets_page(store: &(impl Store + ?Sized), user: UserId, side: PacketSide, before: Option<u64>, limit: usize) -> StatementPage {
    let Some(a) = account(store, user) else { return StatementPage::default() };
    let mut end = before.unwrap_or(a.stmt_next).min(a.stmt_next);
    let stop = end.saturating_sub(PACKET_PAGE_SCAN).max(a.stmt_first);
    let mut entries = vec![];
    while end > stop && entries.len() < limit {
        let from = end.saturating_sub(64).max(stop);
        let rows = seq_rows(store, user, from, end);
        for (seq, e) in rows.into_iter().rev() {
            let wanted = match side {
                PacketSide::Sent => matches!(e.kind, EntryKind::PacketSend { .. }),
                PacketSide::Received => matches!(e.kind, EntryKind::PacketGrab { .. }),
            };
            if entries.len() == limit {
                break;
            }
            end = seq;
            if wanted {
                entries.push((seq, e));
            }
        }
        if entries.len() < limit {
            end = from;
        }
    }
    StatementPage { entries, next: (end > a.stmt_first).then_some(end) }
}

/// Statement rows `[from, to)` with their seqs, ascending.
fn seq_rows(store: &(impl Store + ?Sized), user: UserId, from: u64, to: u64) -> Vec<(u64, StatementEntry)> {
    if from >= to {
        return vec![];
    }
    let n = (to - from) as usize;
    store
        .scan(&keys::statement(user, from), &keys::statement(user, to), n)
        .into_iter()
        .map(|(k, v)| (keys::statement_seq(&k), dec(&v)))
        .collect()
}

/// A user's red packets this China year (as of `now_ms`): counts and sums sent and received.
pub fn packet_year(store: &(impl Store + ?Sized), user: UserId, now_ms: u64) -> Option<PacketYear> {
    Some(account(store, user)?.packets_year.as_of(crate::config::china_year(now_ms)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketView {
    pub packet: Packet,
    pub claims: Vec<Claim>,
    /// The largest share, the earlier grab on a tie; only once every share is taken.
    pub best_luck: Option<Claim>,
}

/// A packet and its claims, hot or archived.
pub fn packet(store: &(impl Store + ?Sized), id: PacketId) -> Option<PacketView> {
    let (p, claims) = match store.get(&keys::packet(id)) {
        Some(b) => {
            let p: Packet = dec(&b);
            let (a, b) = keys::claims_of(id);
            let claims: Vec<Claim> = store.scan(&a, &b, p.count as usize).into_iter().map(|(_, v)| dec(&v)).collect();
            (p, claims)
        }
        None => {
            let a: ArchivedPacket = store.get(&keys::archived(id)).map(|b| dec(&b))?;
            (a.packet, a.claims)
        }
    };
    let best_luck = if p.remaining_count == 0 {
        claims
            .iter()
            .fold(None::<&Claim>, |best, c| match best {
                Some(b) if b.amount >= c.amount => Some(b),
                _ => Some(c),
            })
            .cloned()
    } else {
        None
    };
    Some(PacketView { packet: p, claims, best_luck })
}

/// A packet's grab key, hot or archived.
pub fn packet_key(store: &(impl Store + ?Sized), id: PacketId) -> Option<u64> {
    match store.get(&keys::packet(id)) {
        Some(b) => Some(dec::<Packet>(&b).key),
        None => store.get(&keys::archived(id)).map(|b| dec::<ArchivedPacket>(&b).packet.key),
    }
}

/// What a grab would surely be refused with, judged from applied state alone: a wrong key, a
/// grabbed marker, a refund, an exhausted packet and a grabber out of phrase tries are final, so
/// no command not yet applied can undo them. The leader answers these without proposing (the
/// storm's late grabbers and a bot's guessed ids cost no Raft entry). None: propose it. A wrong phrase is proposed: it must
/// be counted. A request id already seen is never refused here: its replay must answer the first
/// outcome.
/// `now_ms` is asked only for an exhausted packet, where expiry decides the code.
pub fn grab_refusal(
    store: &(impl Store + ?Sized),
    id: &RequestId,
    packet: PacketId,
    key: u64,
    grabber: UserId,
    now_ms: impl FnOnce() -> u64,
) -> Option<Code> {
    let refusal = match store.get(&keys::packet(packet)) {
        Some(b) => {
            let p: Packet = dec(&b);
            if p.key == key {
                hot_refusal(store, p, grabber, now_ms)?
            } else {
                Code::UnknownPacket
            }
        }
        None => match store.get(&keys::archived(packet)).map(|b| dec::<ArchivedPacket>(&b)) {
            Some(a) if a.packet.key == key => a.refusal(grabber, now_ms()),
            Some(_) => Code::UnknownPacket,
            None => return None,
        },
    };
    // Only now the request id (the common grab, on an open packet, is proposed without this
    // read): a replay must answer its first outcome, never this refusal. Request ids are
    // scoped by the acting user, here the grabber.
    if store.get(&keys::dedup(grabber, id)).is_some() {
        return None;
    }
    Some(refusal)
}

/// Whether this shard had given out `packet`'s id by the state applied here (a packet leaves hot
/// state only for the archive). An id not yet issued, read after a linearizable read barrier,
/// is no packet: the leader refuses it without a log entry.
pub fn packet_issued(store: &(impl Store + ?Sized), packet: PacketId) -> bool {
    (1..=totals(store).next_packet_seq).contains(&packet.seq())
}

fn hot_refusal(store: &(impl Store + ?Sized), p: Packet, grabber: UserId, now_ms: impl FnOnce() -> u64) -> Option<Code> {
    let packet = p.id;
    let out_of_tries = || {
        matches!(p.kind, PacketKind::Password { .. })
            && store.get(&keys::phrase_tries(packet, grabber)).is_some_and(|v| dec::<u32>(&v) >= crate::ledger::PHRASE_MAX_TRIES)
    };
    let refusal = if store.get(&keys::grabbed(packet, grabber)).is_some() {
        Code::AlreadyGrabbed
    } else if p.refunded.is_some() {
        Code::PacketExpired
    } else if p.remaining_count == 0 {
        if now_ms() >= p.expires_ms {
            Code::PacketExpired
        } else {
            Code::PacketExhausted
        }
    } else if out_of_tries() {
        Code::PhraseTriesExhausted
    } else {
        return None;
    };
    Some(refusal)
}

/// The seq up to which credits to `dest` are delivered (their outbox records deleted).
pub fn delivered(store: &(impl Store + ?Sized), dest: ShardId) -> u64 {
    store.get(&keys::delivered(dest)).map(|v| dec(&v)).unwrap_or(0)
}

/// The cluster map this shard stores (the meta shard only): its version and TOML bytes.
pub fn cluster_map(store: &(impl Store + ?Sized)) -> Option<(u64, Vec<u8>)> {
    let v = store.get(&keys::cluster_map())?;
    let (version, map) = v.split_at_checked(8)?;
    Some((u64::from_be_bytes(version.try_into().ok()?), map.to_vec()))
}

/// The regions this shard's applied state marks drained (`Command::SetDrained`).
pub fn drained_regions(store: &(impl Store + ?Sized)) -> std::collections::BTreeSet<String> {
    let (a, b) = keys::drained_all();
    let mut out = std::collections::BTreeSet::new();
    for_each(store, &a, &b, |k, _| {
        out.insert(String::from_utf8_lossy(&k[1..]).into_owned());
    });
    out
}

/// Credits waiting to go to `dest`, seq > `after_seq`, oldest first.
pub fn outbox(store: &(impl Store + ?Sized), dest: ShardId, after_seq: u64, limit: usize) -> Vec<CreditEntry> {
    let (a, b) = keys::outbox_from(dest, after_seq.saturating_add(1));
    store.scan(&a, &b, limit).into_iter().map(|(_, v)| dec(&v)).collect()
}

/// Cumulative (seq, cents) sent to each destination shard.
pub fn sent(store: &(impl Store + ?Sized)) -> Vec<(ShardId, PairState)> {
    let (a, b) = keys::sent_all();
    store.scan(&a, &b, usize::MAX).into_iter().map(|(k, v)| (keys::shard_of_pair_key(&k), dec(&v))).collect()
}

/// Cumulative (high-water seq, cents) received from each source shard.
pub fn received(store: &(impl Store + ?Sized)) -> Vec<(ShardId, PairState)> {
    let (a, b) = keys::received_all();
    store.scan(&a, &b, usize::MAX).into_iter().map(|(k, v)| (keys::shard_of_pair_key(&k), dec(&v))).collect()
}

/// Open packets whose expiry time is before `now_ms`, oldest first.
pub fn expired_packets(store: &(impl Store + ?Sized), now_ms: u64, limit: usize) -> Vec<PacketId> {
    let (a, b) = keys::expiry_until(now_ms.saturating_add(1));
    store.scan(&a, &b, limit).into_iter().map(|(k, _)| keys::expiry_packet(&k)).collect()
}

/// A user's payment PIN as the ledger keeps it: the salted hash (never the PIN), the wrong
/// tries in a row and the lock. The leader refuses early from it (no PIN set, locked) and
/// verifies the typed PIN against salt and hash before proposing the spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinState {
    pub pin: Option<PinRecord>,
    pub failures: u32,
    pub locked_until_ms: u64,
}

/// None: no such account on this shard.
pub fn pin_state(store: &(impl Store + ?Sized), user: UserId) -> Option<PinState> {
    let a = account(store, user)?;
    Some(PinState { pin: a.pin, failures: a.pin_failures, locked_until_ms: a.pin_locked_until_ms })
}

/// Challenge notifications not yet acked, seq > `after_seq`, ascending: the notifier computes
/// each code with the shared key (`challenge_code`), pushes it to `device`, then acks.
pub fn notifications(store: &(impl Store + ?Sized), after_seq: u64, limit: usize) -> Vec<Notification> {
    let (a, b) = keys::notifications_from(after_seq.saturating_add(1));
    store.scan(&a, &b, limit).into_iter().map(|(_, v)| dec(&v)).collect()
}

/// What a shard holds for one destination: everything it ever queued there (`sent`, cumulative),
/// the seq up to which the destination confirmed applying it (`delivered_seq`: those records are
/// deleted), and the outbox records still held, which must be exactly `delivered_seq+1 ..=
/// sent.seq`. The cluster audit measures money in flight from these, against what each
/// destination says it received, instead of taking whatever the totals leave unexplained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairOut {
    pub dest: ShardId,
    pub sent: PairState,
    pub delivered_seq: u64,
    pub outbox_cents: Cents,
    pub outbox_records: u64,
}

impl PairOut {
    /// Cents of the records no longer in the outbox: confirmed applied by the destination.
    pub fn delivered_cents(&self) -> Option<Cents> {
        self.sent.cents.checked_sub(self.outbox_cents)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub totals: Totals,
    /// Recomputed from the records.
    pub balances: Cents,
    pub escrow: Cents,
    pub outbox_pending: Cents,
    pub accounts: u64,
    pub open_packets: u64,
    pub outbox_records: u64,
    pub notifications_pending: u64,
    /// Per destination, from the same read.
    pub pairs_out: Vec<PairOut>,
    /// Per source: the (high-water seq, cumulative cents) applied from it.
    pub received: Vec<(ShardId, PairState)>,
    /// Recomputed sums equal the running aggregates, the identity holds, every outbox holds
    /// exactly the records its counters say, and the pair counters add up to the credit totals.
    pub ok: bool,
}

/// Recomputes every sum by scanning and compares it with the running aggregates.
pub fn audit(store: &(impl Store + ?Sized)) -> Audit {
    let totals = totals(store);
    let (mut balances, mut accounts) = (0u128, 0u64);
    let (a, b) = keys::accounts_range();
    for_each(store, &a, &b, |_, v| {
        let acct: Account = dec(v);
        balances += acct.balance.0 as u128;
        accounts += 1;
    });
    let (mut escrow, mut open_packets) = (0u128, 0u64);
    let (a, b) = keys::packets_range();
    for_each(store, &a, &b, |_, v| {
        let p: Packet = dec(v);
        if p.is_open() {
            escrow += p.remaining.0 as u128;
            open_packets += 1;
        }
    });
    let mut pairs: std::collections::BTreeMap<ShardId, PairOut> =
        sent(store).into_iter().map(|(dest, sent)| (dest, PairOut { dest, sent, ..Default::default() })).collect();
    let (mut outbox_pending, mut outbox_records) = (0u128, 0u64);
    let mut by_dest: std::collections::BTreeMap<ShardId, (u128, u64, u64, u64)> = Default::default(); // cents, records, lowest and highest seq
    let (a, b) = keys::outbox_all();
    for_each(store, &a, &b, |k, v| {
        let e: CreditEntry = dec(v);
        outbox_pending += e.amount.0 as u128;
        outbox_records += 1;
        let d = by_dest.entry(keys::shard_of_pair_key(k)).or_insert((0, 0, e.seq, e.seq));
        d.0 += e.amount.0 as u128;
        d.1 += 1;
        d.3 = e.seq; // keys ascend
    });
    // An outbox to a destination never sent to is itself a mismatch: it shows as a pair whose
    // records exceed its (zero) counters.
    let mut pairs_ok = true;
    for (dest, (cents, records, lowest, highest)) in by_dest {
        let p = pairs.entry(dest).or_insert(PairOut { dest, ..Default::default() });
        p.outbox_cents = Cents(cents.min(u64::MAX as u128) as u64);
        p.outbox_records = records;
        pairs_ok &= cents <= u64::MAX as u128 && lowest > delivered(store, dest) && highest <= p.sent.seq;
    }
    for p in pairs.values_mut() {
        p.delivered_seq = delivered(store, p.dest);
        // Within `delivered_seq+1 ..= sent.seq` (checked above), the count says none is missing.
        pairs_ok &= p.delivered_seq <= p.sent.seq && p.outbox_records == p.sent.seq - p.delivered_seq && p.sent.cents >= p.outbox_cents;
    }
    let pairs_out: Vec<PairOut> = pairs.into_values().collect();
    let received = received(store);
    // Everything ever queued is either still pending or delivered; everything received is a credit in.
    let sent_sum: u128 = pairs_out.iter().map(|p| p.sent.cents.0 as u128).sum();
    let received_sum: u128 = received.iter().map(|(_, p)| p.cents.0 as u128).sum();
    pairs_ok &=
        sent_sum == totals.outbox_pending.0 as u128 + totals.credits_out_delivered.0 as u128 && received_sum == totals.credits_in.0 as u128;
    // Archived packets are settled (they hold no escrow) and counted.
    let (mut archived, mut archive_ok) = (0u64, true);
    let (a, b) = keys::archived_range();
    for_each(store, &a, &b, |_, v| {
        let p: ArchivedPacket = dec(v);
        archive_ok &= !p.packet.is_open() && p.claims.len() as u32 == p.packet.count - p.packet.remaining_count;
        archived += 1;
    });
    let mut notifications_pending = 0u64;
    let (a, b) = keys::notifications_from(0);
    for_each(store, &a, &b, |_, _| notifications_pending += 1);
    let ok = totals.identity_holds()
        && pairs_ok
        && balances == totals.balances.0 as u128
        && escrow == totals.escrow.0 as u128
        && outbox_pending == totals.outbox_pending.0 as u128
        && accounts == totals.accounts
        && open_packets == totals.open_packets
        && outbox_records == totals.outbox_records
        && archive_ok
        && archived == totals.archived_packets
        && notifications_pending == totals.notifications_pending;
    let clamp = |x: u128| Cents(x.min(u64::MAX as u128) as u64);
    Audit {
        totals,
        balances: clamp(balances),
        escrow: clamp(escrow),
        outbox_pending: clamp(outbox_pending),
        accounts,
        open_packets,
        outbox_records,
        notifications_pending,
        pairs_out,
        received,
        ok,
    }
}
