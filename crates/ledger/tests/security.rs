//! Security rules of the ledger: request ids scoped by the acting user, the payment PIN
//! (set once, counted failures, the lock), challenge codes that are computed and never stored,
//! bound to the operation, with limited attempts, and the notification outbox.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_ledger::*;

const SHARD: ShardId = 1;
const T0: u64 = 1_800_000_000_000; // 2027-01-15, an ordinary day

struct World {
    store: MemStore,
    config: LedgerConfig,
    now: u64,
    next_id: u64,
}

impl World {
    fn new() -> World {
        // Hours pass in one command here (locks, expiries, retention): no bound on one step.
        let config = LedgerConfig { challenge_key: [0x42; 32], max_stamp_step_ms: u64::MAX, ..LedgerConfig::default() };
        World { store: MemStore::default(), config, now: T0, next_id: 1 }
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        let mut unique = [0; 10];
        unique[2..].copy_from_slice(&self.next_id.to_be_bytes());
        RequestId::new(self.now, unique)
    }

    fn apply_req(&mut self, req: &Request) -> Outcome {
        let mut l = Ledger::new(SHARD, &self.config, &self.store);
        let o = l.apply(req);
        let w = l.into_writes();
        self.store.apply(w);
        assert!(view::audit(&self.store).ok, "audit after {req}");
        o
    }

    fn run(&mut self, cmd: Command) -> Outcome {
        let req = Request { id: self.fresh_id(), time_ms: self.now, cmd };
        self.apply_req(&req)
    }

    fn code(&mut self, cmd: Command) -> Code {
        self.run(cmd).code
    }

    /// Opens a wallet on "phone", sets its PIN, tops it up.
    fn open(&mut self, user: UserId, cents: u64) {
        self.open_without_pin(user, cents);
        assert_eq!(self.code(set_pin(user)), Code::Ok);
    }

    fn open_without_pin(&mut self, user: UserId, cents: u64) {
        assert_eq!(self.code(Command::OpenAccount { user, device: "phone".into() }), Code::Ok);
        if cents > 0 {
            assert_eq!(self.code(Command::TopUp { user, amount: Cents(cents) }), Code::Ok);
        }
    }

    fn balance(&self, user: UserId) -> u64 {
        view::account(&self.store, user).map(|a| a.balance.0).unwrap_or(0)
    }

    fn pin(&self, user: UserId) -> view::PinState {
        view::pin_state(&self.store, user).expect("account exists")
    }

    fn code_for(&self, challenge_id: u64, user: UserId, op: ChallengeOp) -> u32 {
        challenge_code(&self.config.challenge_key, challenge_id, user, &op)
    }

    fn challenge(&self, id: u64) -> Challenge {
        let b = self.store.get(&keys::challenge(id)).expect("challenge stored");
        bincode::deserialize(&b).unwrap()
    }
}

fn set_pin(user: UserId) -> Command {
    Command::SetPin { user, salt: [user as u8; 16], hash: [0x5a; 32] }
}

fn withdraw(user: UserId, amount: u64, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::Withdraw { user, amount: Cents(amount), device: device.into(), verification, pin }
}

fn transfer(from: UserId, to: UserId, amount: u64, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::Transfer { from, to, to_shard: SHARD, amount: Cents(amount), device: device.into(), verification, pin }
}

fn send(sender: UserId, kind: PacketKind, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::SendPacket { sender, kind, device: device.into(), verification, greeting: String::new(), pin }
}

fn lucky(total: u64, count: u32) -> PacketKind {
    PacketKind::Lucky { total: Cents(total), count }
}

fn challenge_id(o: &Outcome) -> u64 {
    assert_eq!(o.code, Code::ChallengeRequired, "{o:?}");
    let Reply::Challenge { challenge_id } = o.reply else { panic!("challenge id expected: {o:?}") };
    challenge_id
}

const V: PinCheck = PinCheck::Verified;

// ------------------------------------------------------------------ request ids per user

#[test]
fn commands_name_their_actor_and_system_commands_have_none() {
    assert_eq!(set_pin(7).actor(), Some(7));
    assert_eq!(transfer(3, 4, 1, "p", None, V).actor(), Some(3));
    assert_eq!(send(5, lucky(1, 1), "p", None, V).actor(), Some(5));
    assert_eq!(Command::Grab { packet: PacketId::new(1, 1), grabber: 9, grabber_shard: 1, password: None }.actor(), Some(9));
    let ack = Command::AckNotifications { up_to_seq: 1 };
    assert!(ack.is_system());
    assert_eq!(ack.actor(), None);
    assert_eq!(Command::ExpirePacket { packet: PacketId::new(1, 1) }.actor(), None);
}

#[test]
fn two_users_may_use_the_same_request_id_and_a_retry_replays_only_its_own_outcome() {
    let mut w = World::new();
    w.open(1, 0);
    w.open(2, 0);
    let id = w.fresh_id();
    let a = w.apply_req(&Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    let b = w.apply_req(&Request { id, time_ms: w.now, cmd: Command::TopUp { user: 2, amount: Cents(300) } });
    assert!(a.is_ok() && b.is_ok(), "the same id from another user is another request: {b:?}");
    assert_eq!((w.balance(1), w.balance(2)), (700, 300));
    // A's retry answers A's outcome (not B's) and moves nothing.
    let again = w.apply_req(&Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    assert_eq!(again, a);
    assert_eq!(again.reply, Reply::Wallet { user: 1, balance: Cents(700), fee: Cents(0), credit_in_flight: false });
    assert_eq!((w.balance(1), w.balance(2)), (700, 300));
    // A different payload from A under the same id is still a reuse.
    let reuse = w.apply_req(&Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(1) } });
    assert_eq!(reuse.code, Code::RequestIdReused);
    assert!(w.store.get(&keys::dedup(1, &id)).is_some() && w.store.get(&keys::dedup(2, &id)).is_some());
}

#[test]
fn the_fast_grab_refusal_looks_up_the_grabbers_own_request_id() {
    let mut w = World::new();
    w.open(1, 1000);
    w.open(2, 0);
    w.open(3, 0);
    let p = match w.run(send(1, lucky(100, 1), "phone", None, V)).reply {
        Reply::Sent { packet, .. } => packet,
        r => panic!("{r:?}"),
    };
    let id = w.fresh_id();
    assert!(w
        .apply_req(&Request { id, time_ms: w.now, cmd: Command::Grab { packet: p, grabber: 2, grabber_shard: SHARD, password: None } })
        .is_ok());
    // 2's replay is never refused early; 3 reusing 2's id is a new request and is refused.
    assert_eq!(view::grab_refusal(&w.store, &id, p, 2, || w.now), None);
    assert_eq!(view::grab_refusal(&w.store, &id, p, 3, || w.now), Some(Code::PacketExhausted));
    let o =
        w.apply_req(&Request { id, time_ms: w.now, cmd: Command::Grab { packet: p, grabber: 3, grabber_shard: SHARD, password: None } });
    assert_eq!(o.code, Code::PacketExhausted, "3 never sees 2's outcome");
}

#[test]
fn scoped_request_ids_are_still_collected_after_the_retention() {
    let mut w = World::new();
    w.open(1, 0);
    w.open(2, 0);
    let id = w.fresh_id();
    for user in [1, 2] {
        assert!(w.apply_req(&Request { id, time_ms: w.now, cmd: Command::TopUp { user, amount: Cents(5) } }).is_ok());
    }
    w.now += w.config.dedup_retention_ms + 1;
    w.run(Command::TopUp { user: 1, amount: Cents(1) }); // runs the collector
    assert!(w.store.get(&keys::dedup(1, &id)).is_none() && w.store.get(&keys::dedup(2, &id)).is_none());
    let (a, b) = keys::dedup_expiry_until(w.now - w.config.dedup_retention_ms);
    assert!(w.store.scan(&a, &b, 10).is_empty(), "the expiry index went with them");
}

// ------------------------------------------------------------------ payment PIN

#[test]
fn a_pin_is_set_once_and_a_second_set_pin_is_pin_already_set() {
    let mut w = World::new();
    assert_eq!(w.code(set_pin(1)), Code::UnknownUser);
    w.open_without_pin(1, 250);
    assert_eq!(w.pin(1), view::PinState { pin: None, failures: 0, locked_until_ms: 0 });
    let o = w.run(set_pin(1));
    assert_eq!(o, Outcome::ok(Reply::Wallet { user: 1, balance: Cents(250), fee: Cents(0), credit_in_flight: false }));
    assert_eq!(w.pin(1).pin, Some(PinRecord { salt: [1; 16], hash: [0x5a; 32] }));
    let other = Command::SetPin { user: 1, salt: [9; 16], hash: [9; 32] };
    assert_eq!(w.code(other), Code::PinAlreadySet);
    assert_eq!(w.pin(1).pin, Some(PinRecord { salt: [1; 16], hash: [0x5a; 32] }), "the first PIN stays");
}

#[test]
fn spending_without_a_pin_is_pin_not_set_and_moves_no_money() {
    let mut w = World::new();
    w.open_without_pin(1, 100_00);
    w.open(2, 0);
    let totals = view::totals(&w.store);
    assert_eq!(w.code(withdraw(1, 10_00, "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(transfer(1, 2, 10_00, "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(send(1, lucky(10_00, 2), "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(withdraw(1, 10_00, "phone", None, PinCheck::Wrong)), Code::PinNotSet, "nothing to count against");
    assert_eq!((w.balance(1), w.balance(2)), (100_00, 0));
    let after = view::totals(&w.store);
    assert_eq!((after.balances, after.escrow, after.withdrawals), (totals.balances, totals.escrow, totals.withdrawals));
    assert_eq!(w.pin(1).failures, 0);
    // Receiving needs no PIN.
    assert_eq!(w.code(transfer(2, 1, 1, "phone", None, V)), Code::InsufficientFunds);
    assert_eq!(w.code(Command::TopUp { user: 2, amount: Cents(5) }), Code::Ok);
    assert_eq!(w.code(transfer(2, 1, 5, "phone", None, V)), Code::Ok);
    assert_eq!(w.balance(1), 100_05);
}

#[test]
fn five_wrong_pins_lock_spending_and_the_right_pin_during_the_lock_is_pin_locked() {
    let mut w = World::new();
    w.open(1, 100_00);
    w.open(2, 0);
    let wrongs = [
        withdraw(1, 10_00, "phone", None, PinCheck::Wrong),
        transfer(1, 2, 10_00, "phone", None, PinCheck::Wrong),
        send(1, lucky(10_00, 2), "phone", None, PinCheck::Wrong),
        withdraw(1, 10_00, "phone", None, PinCheck::Wrong),
    ];
    for (i, cmd) in wrongs.into_iter().enumerate() {
        assert_eq!(w.code(cmd), Code::WrongPin);
        assert_eq!(w.pin(1).failures, i as u32 + 1, "each wrong PIN is counted, whatever the spend");
    }
    assert_eq!(w.code(transfer(1, 2, 10_00, "phone", None, PinCheck::Wrong)), Code::PinLocked, "the fifth locks");
    let locked_until = w.now + w.config.pin_lock_ms;
    assert_eq!(w.pin(1), view::PinState { pin: w.pin(1).pin, failures: 0, locked_until_ms: locked_until });
    // During the lock even the right PIN is refused, and nothing moves.
    w.now = locked_until - 1;
    assert_eq!(w.code(withdraw(1, 10_00, "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(transfer(1, 2, 10_00, "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(send(1, lucky(10_00, 2), "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(withdraw(1, 10_00, "phone", None, PinCheck::Wrong)), Code::PinLocked);
    assert_eq!((w.balance(1), w.balance(2)), (100_00, 0));
    assert_eq!(w.pin(1).locked_until_ms, locked_until, "wrong tries during the lock do not extend it");
    // The lock ends by itself.
    w.now = locked_until;
    assert_eq!(w.code(transfer(1, 2, 10_00, "phone", None, V)), Code::Ok);
    assert_eq!((w.balance(1), w.balance(2)), (90_00, 10_00));
}

#[test]
fn a_successful_spend_resets_the_failure_count() {
    let mut w = World::new();
    w.open(1, 100_00);
    for _ in 0..4 {
        assert_eq!(w.code(withdraw(1, 1_00, "phone", None, PinCheck::Wrong)), Code::WrongPin);
    }
    // A right PIN on a spend that is refused later (too much) resets nothing.
    assert_eq!(w.code(withdraw(1, 1_000_00, "phone", None, V)), Code::InsufficientFunds);
    assert_eq!(w.pin(1).failures, 4);
    assert_eq!(w.code(withdraw(1, 1_00, "phone", None, V)), Code::Ok);
    assert_eq!(w.pin(1).failures, 0);
    for _ in 0..4 {
        assert_eq!(w.code(withdraw(1, 1_00, "phone", None, PinCheck::Wrong)), Code::WrongPin, "the count started again");
    }
    assert_eq!(w.pin(1).locked_until_ms, 0);
}

#[test]
fn a_retried_wrong_pin_is_answered_from_the_request_id_and_counted_once() {
    let mut w = World::new();
    w.open(1, 100_00);
    let req = Request { id: w.fresh_id(), time_ms: w.now, cmd: withdraw(1, 1_00, "phone", None, PinCheck::Wrong) };
    for _ in 0..6 {
        assert_eq!(w.apply_req(&req).code, Code::WrongPin);
    }
    assert_eq!(w.pin(1).failures, 1);
}

// ------------------------------------------------------------------ challenge codes

#[test]
fn the_challenge_code_under_the_shared_key_passes_once() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let o = w.run(withdraw(1, 200_00, "new-phone", None, V));
    let id = challenge_id(&o);
    assert_eq!(w.balance(1), 1_000_00);
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let code = w.code_for(id, 1, op);
    let v = Verification { challenge_id: id, code };
    assert_eq!(w.code(withdraw(1, 200_00, "new-phone", Some(v.clone()), V)), Code::Ok);
    assert_eq!(w.balance(1), 800_00);
    assert!(w.challenge(id).used);
    assert_eq!(w.code(withdraw(1, 200_00, "new-phone", Some(v), V)), Code::ChallengeInvalid, "used once only");
    assert_eq!(w.balance(1), 800_00);
}

#[test]
fn wrong_codes_are_counted_and_after_three_the_right_code_fails() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let right = w.code_for(id, 1, op);
    let wrong_key = challenge_code(&[0u8; 32], id, 1, &op);
    assert_ne!(wrong_key, right);
    let try_code = |w: &mut World, code| w.code(withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V));
    assert_eq!(try_code(&mut w, wrong_key), Code::ChallengeInvalid, "a code under another key");
    assert_eq!(w.challenge(id).attempts, 1);
    assert_eq!(try_code(&mut w, (right + 1) % 1_000_000), Code::ChallengeInvalid);
    assert_eq!(try_code(&mut w, (right + 2) % 1_000_000), Code::ChallengeInvalid);
    assert_eq!(w.challenge(id).attempts, 3);
    assert_eq!(try_code(&mut w, right), Code::ChallengeInvalid, "the challenge is dead");
    assert_eq!(w.challenge(id).attempts, 3, "a dead challenge counts no more");
    assert!(!w.challenge(id).used);
    assert_eq!(w.balance(1), 1_000_00);
}

#[test]
fn the_code_is_bound_to_the_operation_amount_and_counterparty() {
    let mut w = World::new();
    w.open(1, 2_000_00);
    w.open(2, 0);
    w.open(3, 0);
    let id = challenge_id(&w.run(transfer(1, 2, 300_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(300_00), counterparty: 2 };
    assert_eq!(w.challenge(id).op, op);
    let v = Some(Verification { challenge_id: id, code: w.code_for(id, 1, op) });
    assert_eq!(w.code(transfer(1, 3, 300_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another receiver");
    assert_eq!(w.code(transfer(1, 2, 999_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another amount");
    assert_eq!(w.code(withdraw(1, 300_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another kind");
    assert_eq!(w.challenge(id).attempts, 3);
    assert_eq!((w.balance(1), w.balance(2), w.balance(3)), (2_000_00, 0, 0));
    assert_eq!(w.code(transfer(1, 2, 300_00, "new-phone", v, V)), Code::ChallengeInvalid, "spent on mismatches");

    // An exclusive packet's challenge names its recipient.
    let kind = |r| PacketKind::Exclusive { amount: Cents(150_00), recipient: r, recipient_shard: SHARD };
    let id = challenge_id(&w.run(send(1, kind(2), "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::SendPacket, amount: Cents(150_00), counterparty: 2 };
    assert_eq!(w.challenge(id).op, op);
    let v = Some(Verification { challenge_id: id, code: w.code_for(id, 1, op) });
    assert_eq!(w.code(send(1, kind(3), "new-phone", v.clone(), V)), Code::ChallengeInvalid);
    assert_eq!(w.code(send(1, kind(2), "new-phone", v, V)), Code::Ok);
    assert_eq!(w.balance(1), 1_850_00);
}

#[test]
fn another_users_challenge_is_invalid_and_their_guesses_do_not_burn_it() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    w.open(2, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let code = w.code_for(id, 1, op);
    for _ in 0..5 {
        let v = Some(Verification { challenge_id: id, code });
        assert_eq!(w.code(withdraw(2, 200_00, "new-phone", v, V)), Code::ChallengeInvalid);
    }
    assert_eq!(w.challenge(id).attempts, 0);
    assert_eq!(w.code(withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V)), Code::Ok);
}

#[test]
fn an_expired_challenge_is_deleted_and_its_code_is_invalid() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let code = w.code_for(id, 1, ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 });
    w.now += w.config.challenge_ttl_ms;
    assert_eq!(w.code(withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V)), Code::ChallengeInvalid);
    assert!(w.store.get(&keys::challenge(id)).is_none(), "a dead challenge is deleted, not kept for ever");
    let (a, b) = keys::challenge_expiry_all();
    assert!(w.store.scan(&a, &b, 10).is_empty(), "and its expiry index row with it");
    assert_eq!(w.balance(1), 1_000_00, "nothing moved");
}

#[test]
fn the_pin_is_checked_before_the_challenge_so_a_wrong_pin_spends_no_attempt() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let v = Some(Verification { challenge_id: id, code: 0 });
    assert_eq!(w.code(withdraw(1, 200_00, "new-phone", v, PinCheck::Wrong)), Code::WrongPin);
    assert_eq!(w.challenge(id).attempts, 0);
    // And a new-device spend without a PIN gets no challenge (no notification) at all.
    w.open_without_pin(2, 1_000_00);
    assert_eq!(w.code(withdraw(2, 200_00, "new-phone", None, V)), Code::PinNotSet);
    assert_eq!(view::notifications(&w.store, 0, 10).len(), 1);
}

// ------------------------------------------------------------------ notification outbox

#[test]
fn challenges_queue_notifications_to_the_known_device_that_the_notifier_lists_and_acks_in_pages() {
    let mut w = World::new();
    w.config.max_credit_batch = 2; // the per-command ack bound
    w.open(1, 5_000_00);
    w.open(2, 0);
    assert_eq!(w.code(Command::AckNotifications { up_to_seq: 0 }), Code::Ok, "nothing to ack on a fresh shard");
    let a = challenge_id(&w.run(withdraw(1, 200_00, "tablet", None, V)));
    let b = challenge_id(&w.run(transfer(1, 2, 150_00, "tablet", None, V)));
    let c = challenge_id(&w.run(send(1, lucky(120_00, 3), "tablet", None, V)));
    let n = view::notifications(&w.store, 0, 10);
    assert_eq!(n.iter().map(|n| n.seq).collect::<Vec<_>>(), vec![1, 2, 3], "seq from 1, ascending");
    assert_eq!(n.iter().map(|n| n.challenge_id).collect::<Vec<_>>(), vec![a, b, c]);
    assert!(n.iter().all(|n| n.user == 1 && n.device == "phone"), "pushed to the known device, not the new one");
    assert_eq!(n[1].op, ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(150_00), counterparty: 2 });
    assert_eq!(n[2].op, ChallengeOp { kind: ChallengeKind::SendPacket, amount: Cents(120_00), counterparty: 0 });
    assert_eq!(n[0].expires_ms, w.now + w.config.challenge_ttl_ms);
    assert_eq!(view::notifications(&w.store, 1, 10).len(), 2);
    assert_eq!(view::notifications(&w.store, 0, 1).len(), 1);
    assert_eq!(view::totals(&w.store).notifications_pending, 3);

    // What the notifier sends confirms the operation.
    let code = w.code_for(n[1].challenge_id, n[1].user, n[1].op);
    assert_eq!(w.code(transfer(1, 2, 150_00, "tablet", Some(Verification { challenge_id: b, code }), V)), Code::Ok);

    assert_eq!(w.code(Command::AckNotifications { up_to_seq: 4 }), Code::InvalidArgument, "cannot ack what was never issued");
    assert_eq!(w.run(Command::AckNotifications { up_to_seq: 3 }).reply, Reply::Acked { records: 2, more: true });
    assert_eq!(view::notifications(&w.store, 0, 10).iter().map(|n| n.seq).collect::<Vec<_>>(), vec![3]);
    assert_eq!(w.run(Command::AckNotifications { up_to_seq: 3 }).reply, Reply::Acked { records: 1, more: false });
    assert!(view::notifications(&w.store, 0, 10).is_empty());
    assert_eq!(w.run(Command::AckNotifications { up_to_seq: 2 }).reply, Reply::Acked { records: 0, more: false }, "a late ack");
    let t = view::totals(&w.store);
    assert_eq!((t.notifications_pending, t.notifications_acked), (0, 3));
    // The next challenge continues the sequence.
    challenge_id(&w.run(withdraw(1, 200_00, "tablet", None, V)));
    assert_eq!(view::notifications(&w.store, 0, 10)[0].seq, 4);
    assert!(view::audit(&w.store).ok);
}

#[test]
fn no_record_or_view_holds_a_challenge_code() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let c = w.challenge(id);
    let n = view::notifications(&w.store, 0, 10).remove(0);
    // Exhaustive destructuring: a `code` field added to either record would not compile here.
    let Challenge { user, op, expires_ms, used, attempts } = c;
    let Notification { seq: _, user: n_user, device: _, challenge_id, op: n_op, expires_ms: n_expires } = n;
    assert_eq!((user, op, expires_ms, used, attempts), (n_user, n_op, n_expires, false, 0));
    assert_eq!(challenge_id, id);
    let view::PinState { pin: _, failures: _, locked_until_ms: _ } = w.pin(1);
    // And the code's bytes appear in no stored value.
    let code = w.code_for(id, 1, op);
    let needle = code.to_le_bytes();
    for (k, v) in &w.store.map {
        assert!(!v.windows(4).any(|x| x == needle), "code bytes under key {k:?}");
    }
}

#[test]
fn the_challenge_key_is_part_of_the_replicated_config_and_decides_the_code() {
    let mut w = World::new();
    w.open(1, 1_000_00);
    let id = challenge_id(&w.run(withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    // A replica with the default (all-zero) key would refuse the code the others accept.
    let other = LedgerConfig::default();
    let code = w.code_for(id, 1, op);
    assert_ne!(challenge_code(&other.challenge_key, id, 1, &op), code);
    let req_id = w.fresh_id();
    let mut l = Ledger::new(SHARD, &other, &w.store);
    let o = l.apply(&Request {
        id: req_id,
        time_ms: w.now,
        cmd: withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V),
    });
    assert_eq!(o.code, Code::ChallengeInvalid);
}
