//! Security rules of the ledger: request ids scoped by the acting user, the payment PIN
//! (set once, counted failures, the lock), challenge codes that are computed and never stored,
//! bound to the operation, with limited attempts, and the notification outbox.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_ledger::testing::{lucky, set_pin, World, KEY, T0};
use hongbao_ledger::*;

const SHARD: ShardId = 1;

/// One shard, its audit checked after every command; hours pass in one command here (locks,
/// expiries, retention): no bound on one step.
fn world() -> World {
    let config = LedgerConfig { challenge_key: [0x42; 32], max_stamp_step_ms: u64::MAX, ..LedgerConfig::default() };
    World::new(1, config).audited()
}

fn pin_state(w: &World, user: UserId) -> view::PinState {
    view::pin_state(w.store(SHARD), user).expect("account exists")
}

fn code_for(w: &World, challenge_id: u64, user: UserId, op: ChallengeOp) -> u32 {
    challenge_code(&w.config.challenge_key, challenge_id, user, &op)
}

fn challenge(w: &World, id: u64) -> Challenge {
    let b = w.store(SHARD).get(&keys::challenge(id)).expect("challenge stored");
    bincode::deserialize(&b).unwrap()
}

fn withdraw(user: UserId, amount: u64, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::Withdraw { user, amount: Cents(amount), device: device.into(), verification, pin }
}

fn transfer(from: UserId, to: UserId, amount: u64, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::Transfer { from, to, to_shard: SHARD, amount: Cents(amount), device: device.into(), verification, pin }
}

fn send(sender: UserId, kind: PacketKind, device: &str, verification: Option<Verification>, pin: PinCheck) -> Command {
    Command::SendPacket { key: KEY, sender, kind, device: device.into(), verification, greeting: String::new(), pin }
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
    assert_eq!(Command::Grab { key: KEY, packet: PacketId::new(1, 1), grabber: 9, grabber_shard: 1, phrase: None }.actor(), Some(9));
    let ack = Command::AckNotifications { up_to_seq: 1 };
    assert!(ack.is_system());
    assert_eq!(ack.actor(), None);
    assert_eq!(Command::ExpirePacket { packet: PacketId::new(1, 1) }.actor(), None);
}

#[test]
fn two_users_may_use_the_same_request_id_and_a_retry_replays_only_its_own_outcome() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    w.open(SHARD, 2, 0);
    let id = w.fresh_id();
    let a = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    let b = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 2, amount: Cents(300) } });
    assert!(a.is_ok() && b.is_ok(), "the same id from another user is another request: {b:?}");
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (700, 300));
    // A's retry answers A's outcome (not B's) and moves nothing.
    let again = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    assert_eq!(again, a);
    assert_eq!(again.reply, Reply::Wallet { user: 1, balance: Cents(700), fee: Cents(0), credit_in_flight: false });
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (700, 300));
    // A different payload from A under the same id is still a reuse.
    let reuse = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(1) } });
    assert_eq!(reuse.code, Code::RequestIdReused);
    assert!(w.store(SHARD).get(&keys::dedup(1, &id)).is_some() && w.store(SHARD).get(&keys::dedup(2, &id)).is_some());
}

#[test]
fn the_fast_grab_refusal_looks_up_the_grabbers_own_request_id() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    w.open(SHARD, 3, 0);
    let p = match w.run(SHARD, send(1, lucky(100, 1), "phone", None, V)).reply {
        Reply::Sent { packet, .. } => packet,
        r => panic!("{r:?}"),
    };
    let id = w.fresh_id();
    assert!(w
        .apply(
            SHARD,
            &Request { id, time_ms: w.now, cmd: Command::Grab { key: KEY, packet: p, grabber: 2, grabber_shard: SHARD, phrase: None } }
        )
        .is_ok());
    // 2's replay is never refused early; 3 reusing 2's id is a new request and is refused.
    assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY, 2, || w.now), None);
    assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY, 3, || w.now), Some(Code::PacketExhausted));
    let o = w.apply(
        SHARD,
        &Request { id, time_ms: w.now, cmd: Command::Grab { key: KEY, packet: p, grabber: 3, grabber_shard: SHARD, phrase: None } },
    );
    assert_eq!(o.code, Code::PacketExhausted, "3 never sees 2's outcome");
}

#[test]
fn scoped_request_ids_are_still_collected_after_the_retention() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    w.open(SHARD, 2, 0);
    let id = w.fresh_id();
    for user in [1, 2] {
        assert!(w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user, amount: Cents(5) } }).is_ok());
    }
    w.now += w.config.dedup_retention_ms + 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) }); // runs the collector
    assert!(w.store(SHARD).get(&keys::dedup(1, &id)).is_none() && w.store(SHARD).get(&keys::dedup(2, &id)).is_none());
    let (a, b) = keys::dedup_expiry_until(w.now - w.config.dedup_retention_ms);
    assert!(w.store(SHARD).scan(&a, &b, 10).is_empty(), "the expiry index went with them");
}

// ------------------------------------------------------------------ payment PIN

#[test]
fn a_pin_is_set_once_and_a_second_set_pin_is_pin_already_set() {
    let mut w = world();
    assert_eq!(w.code(SHARD, set_pin(1)), Code::UnknownUser);
    w.open_without_pin(SHARD, 1, 0);
    assert_eq!(pin_state(&w, 1), view::PinState { pin: None, failures: 0, locked_until_ms: 0 });
    let o = w.run(SHARD, set_pin(1));
    assert_eq!(o, Outcome::ok(Reply::Wallet { user: 1, balance: Cents(0), fee: Cents(0), credit_in_flight: false }));
    assert_eq!(pin_state(&w, 1).pin, Some(PinRecord { salt: [1; 16], hash: [0x5a; 32] }));
    let other = Command::SetPin { user: 1, salt: [9; 16], hash: [9; 32], verification: None };
    assert_eq!(w.code(SHARD, other), Code::PinAlreadySet);
    assert_eq!(pin_state(&w, 1).pin, Some(PinRecord { salt: [1; 16], hash: [0x5a; 32] }), "the first PIN stays");
}

#[test]
fn spending_without_a_pin_is_pin_not_set_and_moves_no_money() {
    let mut w = world();
    w.open_without_pin(SHARD, 1, 100_00);
    w.open(SHARD, 2, 0);
    let totals = view::totals(w.store(SHARD));
    assert_eq!(w.code(SHARD, withdraw(1, 10_00, "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(SHARD, transfer(1, 2, 10_00, "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(SHARD, send(1, lucky(10_00, 2), "phone", None, V)), Code::PinNotSet);
    assert_eq!(w.code(SHARD, withdraw(1, 10_00, "phone", None, PinCheck::Wrong)), Code::PinNotSet, "nothing to count against");
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (100_00, 0));
    let after = view::totals(w.store(SHARD));
    assert_eq!((after.balances, after.escrow, after.withdrawals), (totals.balances, totals.escrow, totals.withdrawals));
    assert_eq!(pin_state(&w, 1).failures, 0);
    // Receiving needs no PIN.
    assert_eq!(w.code(SHARD, transfer(2, 1, 1, "phone", None, V)), Code::InsufficientFunds);
    assert_eq!(w.code(SHARD, Command::TopUp { user: 2, amount: Cents(5) }), Code::Ok);
    assert_eq!(w.code(SHARD, transfer(2, 1, 5, "phone", None, V)), Code::Ok);
    assert_eq!(w.cents(SHARD, 1), 100_05);
}

#[test]
fn five_wrong_pins_lock_spending_and_the_right_pin_during_the_lock_is_pin_locked() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    w.open(SHARD, 2, 0);
    let wrongs = [
        withdraw(1, 10_00, "phone", None, PinCheck::Wrong),
        transfer(1, 2, 10_00, "phone", None, PinCheck::Wrong),
        send(1, lucky(10_00, 2), "phone", None, PinCheck::Wrong),
        withdraw(1, 10_00, "phone", None, PinCheck::Wrong),
    ];
    for (i, cmd) in wrongs.into_iter().enumerate() {
        assert_eq!(w.code(SHARD, cmd), Code::WrongPin);
        assert_eq!(pin_state(&w, 1).failures, i as u32 + 1, "each wrong PIN is counted, whatever the spend");
    }
    assert_eq!(w.code(SHARD, transfer(1, 2, 10_00, "phone", None, PinCheck::Wrong)), Code::PinLocked, "the fifth locks");
    let locked_until = w.now + w.config.pin_lock_ms;
    assert_eq!(pin_state(&w, 1), view::PinState { pin: pin_state(&w, 1).pin, failures: 0, locked_until_ms: locked_until });
    // During the lock even the right PIN is refused, and nothing moves.
    w.now = locked_until - 1;
    assert_eq!(w.code(SHARD, withdraw(1, 10_00, "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(SHARD, transfer(1, 2, 10_00, "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(SHARD, send(1, lucky(10_00, 2), "phone", None, V)), Code::PinLocked);
    assert_eq!(w.code(SHARD, withdraw(1, 10_00, "phone", None, PinCheck::Wrong)), Code::PinLocked);
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (100_00, 0));
    assert_eq!(pin_state(&w, 1).locked_until_ms, locked_until, "wrong tries during the lock do not extend it");
    // The lock ends by itself.
    w.now = locked_until;
    assert_eq!(w.code(SHARD, transfer(1, 2, 10_00, "phone", None, V)), Code::Ok);
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (90_00, 10_00));
}

#[test]
fn a_successful_spend_resets_the_failure_count() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    for _ in 0..4 {
        assert_eq!(w.code(SHARD, withdraw(1, 1_00, "phone", None, PinCheck::Wrong)), Code::WrongPin);
    }
    // A right PIN on a spend that is refused later (too much) resets nothing.
    assert_eq!(w.code(SHARD, withdraw(1, 1_000_00, "phone", None, V)), Code::InsufficientFunds);
    assert_eq!(pin_state(&w, 1).failures, 4);
    assert_eq!(w.code(SHARD, withdraw(1, 1_00, "phone", None, V)), Code::Ok);
    assert_eq!(pin_state(&w, 1).failures, 0);
    for _ in 0..4 {
        assert_eq!(w.code(SHARD, withdraw(1, 1_00, "phone", None, PinCheck::Wrong)), Code::WrongPin, "the count started again");
    }
    assert_eq!(pin_state(&w, 1).locked_until_ms, 0);
}

#[test]
fn a_replayed_request_id_answers_its_first_outcome_whatever_pin_verdict_it_carries() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    w.open(SHARD, 2, 0);
    // A wrong PIN, then the same id again with wrong and right verdicts: all answered from the
    // request id, counted once.
    let id = w.fresh_id();
    let wrong = Request { id, time_ms: w.now, cmd: withdraw(1, 1_00, "phone", None, PinCheck::Wrong) };
    assert_eq!(w.apply(SHARD, &wrong).code, Code::WrongPin);
    for pin in [PinCheck::Wrong, V, PinCheck::Wrong, V] {
        let again = Request { id, time_ms: w.now, cmd: withdraw(1, 1_00, "phone", None, pin) };
        assert_eq!(w.apply(SHARD, &again).code, Code::WrongPin, "a replay with {pin:?} tells nothing new");
    }
    assert_eq!(pin_state(&w, 1).failures, 1);
    // The attack of #28: a spend refused before the PIN check (to oneself, amount 0, count 0),
    // then its id replayed with PIN guesses. Every guess, right or wrong, answers the first
    // refusal: never REQUEST_ID_REUSED for the right one alone.
    for cmd in [
        transfer(1, 1, 1_00, "phone", None, PinCheck::Wrong),
        withdraw(1, 0, "phone", None, PinCheck::Wrong),
        send(1, lucky(1_00, 0), "phone", None, PinCheck::Wrong),
    ] {
        let id = w.fresh_id();
        let first = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: cmd.clone() });
        assert_ne!(first.code, Code::Ok);
        for pin in [PinCheck::Wrong, V] {
            let mut guess = cmd.clone();
            match &mut guess {
                Command::Transfer { pin: p, .. } | Command::Withdraw { pin: p, .. } | Command::SendPacket { pin: p, .. } => *p = pin,
                _ => unreachable!(),
            }
            assert_eq!(w.apply(SHARD, &Request { id, time_ms: w.now, cmd: guess }), first, "{pin:?} replayed on {cmd:?}");
        }
    }
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (100_00, 0));
}

#[test]
fn a_replayed_set_pin_answers_its_first_outcome_whatever_pin_it_carries() {
    let mut w = world();
    w.open_without_pin(SHARD, 1, 0);
    let id = w.fresh_id();
    let set = |hash| Request { id, time_ms: T0, cmd: Command::SetPin { user: 1, salt: [1; 16], hash, verification: None } };
    assert_eq!(w.apply(SHARD, &set([0x5a; 32])).code, Code::Ok);
    // Another PIN's hash under the same id is not REQUEST_ID_REUSED (that would confirm a guess
    // of the PIN the owner set), and changes nothing.
    assert_eq!(w.apply(SHARD, &set([0x11; 32])).code, Code::Ok);
    assert_eq!(pin_state(&w, 1).pin.expect("set").hash, [0x5a; 32]);
}

/// One step of the PIN property test: a spend of user 1 (fresh id or a replayed one), or time.
#[derive(Debug, Clone)]
enum PinStep {
    Fresh { kind: u8, amount: u64, count: u32, to_self: bool, wrong: bool },
    Replay { which: usize, wrong: bool, amount_change: bool },
    Wait { ms: u64 },
}

fn pin_step() -> impl proptest::strategy::Strategy<Value = PinStep> {
    use proptest::prelude::*;
    let amount = prop_oneof![Just(0u64), 1u64..5_00, Just(1_000_000_00u64)];
    prop_oneof![
        6 => (0u8..3, amount, 0u32..3, proptest::bool::weighted(0.2), proptest::bool::weighted(0.7))
            .prop_map(|(kind, amount, count, to_self, wrong)| PinStep::Fresh { kind, amount, count, to_self, wrong }),
        4 => (0usize..64, any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(which, wrong, amount_change)| PinStep::Replay { which, wrong, amount_change }),
        1 => prop_oneof![1u64..60_000, Just(3 * 3600 * 1000u64)].prop_map(|ms| PinStep::Wait { ms }),
    ]
}

fn spend_with(cmd: &Command, pin: PinCheck) -> Command {
    let mut c = cmd.clone();
    match &mut c {
        Command::Transfer { pin: p, .. } | Command::Withdraw { pin: p, .. } | Command::SendPacket { pin: p, .. } => *p = pin,
        _ => unreachable!("a spend"),
    }
    c
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// The property of #28: nothing about a PIN is learnt except through a counted try, and five
    /// wrong tries lock spending, whatever request ids, amounts and refusals are used. Each step
    /// is tried on copies of the state with the verdict right and wrong: where the answers
    /// differ, the wrong one must have counted a failure. Counting such informative wrong tries
    /// in a model, the fifth since the last success must find spending locked.
    #[test]
    fn nothing_about_a_pin_is_learnt_except_through_a_counted_try_and_five_lock_spending(
        steps in proptest::collection::vec(pin_step(), 1..80)
    ) {
        let mut w = world();
        w.open(SHARD, 1, 50_00);
        w.open(SHARD, 2, 0);
        let mut sent: Vec<Request> = vec![];
        let mut informative_wrong = 0u32;
        for step in steps {
            let (req, wrong) = match step {
                PinStep::Wait { ms } => { w.now += ms; continue; }
                PinStep::Fresh { kind, amount, count, to_self, wrong } => {
                    let to = if to_self { 1 } else { 2 };
                    let cmd = match kind {
                        0 => withdraw(1, amount, "phone", None, V),
                        1 => transfer(1, to, amount, "phone", None, V),
                        _ => send(1, lucky(amount, count), "phone", None, V),
                    };
                    (Request { id: w.fresh_id(), time_ms: w.now, cmd }, wrong)
                }
                PinStep::Replay { which, wrong, amount_change } => {
                    let Some(first) = sent.get(which % sent.len().max(1)).cloned() else { continue };
                    let mut cmd = first.cmd.clone();
                    if amount_change {
                        if let Command::Withdraw { amount, .. } | Command::Transfer { amount, .. } = &mut cmd {
                            amount.0 += 1;
                        }
                    }
                    (Request { id: first.id, time_ms: w.now, cmd }, wrong)
                }
            };
            // The same request with each verdict, on copies of the state.
            let before = pin_state(&w, 1);
            let answer = |w: &World, pin| {
                let mut copy = w.clone();
                let o = copy.apply(SHARD, &Request { cmd: spend_with(&req.cmd, pin), ..req.clone() });
                (o, pin_state(&copy, 1))
            };
            let (right, _) = answer(&w, V);
            let (wrong_answer, wrong_state) = answer(&w, PinCheck::Wrong);
            let counted = wrong_state.failures == before.failures + 1
                || (wrong_state.locked_until_ms > before.locked_until_ms && wrong_state.failures == 0);
            if right != wrong_answer {
                proptest::prop_assert!(counted, "the answer tells the verdict ({right:?} vs {wrong_answer:?}) but no try was counted: {req:?}");
            }
            // The real step.
            let pin = if wrong { PinCheck::Wrong } else { V };
            let o = w.apply(SHARD, &Request { cmd: spend_with(&req.cmd, pin), ..req.clone() });
            let after = pin_state(&w, 1);
            if wrong && right != wrong_answer {
                informative_wrong += 1;
            }
            let fresh = !sent.iter().any(|r| r.id == req.id);
            if fresh && !wrong && o.code == Code::Ok {
                informative_wrong = 0; // a success with the right PIN starts the count again
            }
            if after.locked_until_ms > before.locked_until_ms {
                proptest::prop_assert_eq!(informative_wrong, w.config.pin_max_failures, "the lock came at another count");
                informative_wrong = 0;
            }
            proptest::prop_assert!(informative_wrong < 5, "five informative wrong tries and spending is not locked");
            if w.now < after.locked_until_ms {
                // Locked: the right PIN on a valid spend is refused too.
                let mut copy = w.clone();
                copy.next_id += 1_000;
                proptest::prop_assert_eq!(copy.code(SHARD, withdraw(1, 1, "phone", None, V)), Code::PinLocked);
            }
            if fresh {
                sent.push(req);
            }
        }
    }
}

// ------------------------------------------------------------------ challenge codes

#[test]
fn the_challenge_code_under_the_shared_key_passes_once() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let o = w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V));
    let id = challenge_id(&o);
    assert_eq!(w.cents(SHARD, 1), 1_000_00);
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let code = code_for(&w, id, 1, op);
    let v = Verification { challenge_id: id, code };
    assert_eq!(w.code(SHARD, withdraw(1, 200_00, "new-phone", Some(v.clone()), V)), Code::Ok);
    assert_eq!(w.cents(SHARD, 1), 800_00);
    assert!(challenge(&w, id).used);
    assert_eq!(w.code(SHARD, withdraw(1, 200_00, "new-phone", Some(v), V)), Code::ChallengeInvalid, "used once only");
    assert_eq!(w.cents(SHARD, 1), 800_00);
}

#[test]
fn wrong_codes_are_counted_and_after_three_the_right_code_fails() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let right = code_for(&w, id, 1, op);
    let wrong_key = challenge_code(&[0u8; 32], id, 1, &op);
    assert_ne!(wrong_key, right);
    let try_code = |w: &mut World, code| w.code(SHARD, withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V));
    assert_eq!(try_code(&mut w, wrong_key), Code::ChallengeInvalid, "a code under another key");
    assert_eq!(challenge(&w, id).attempts, 1);
    assert_eq!(try_code(&mut w, (right + 1) % 1_000_000), Code::ChallengeInvalid);
    assert_eq!(try_code(&mut w, (right + 2) % 1_000_000), Code::ChallengeInvalid);
    assert_eq!(challenge(&w, id).attempts, 3);
    assert_eq!(try_code(&mut w, right), Code::ChallengeInvalid, "the challenge is dead");
    assert_eq!(challenge(&w, id).attempts, 3, "a dead challenge counts no more");
    assert!(!challenge(&w, id).used);
    assert_eq!(w.cents(SHARD, 1), 1_000_00);
}

#[test]
fn the_code_is_bound_to_the_operation_amount_and_counterparty() {
    let mut w = world();
    w.open(SHARD, 1, 2_000_00);
    w.open(SHARD, 2, 0);
    w.open(SHARD, 3, 0);
    let id = challenge_id(&w.run(SHARD, transfer(1, 2, 300_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(300_00), counterparty: 2 };
    assert_eq!(challenge(&w, id).op, op);
    let v = Some(Verification { challenge_id: id, code: code_for(&w, id, 1, op) });
    assert_eq!(w.code(SHARD, transfer(1, 3, 300_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another receiver");
    assert_eq!(w.code(SHARD, transfer(1, 2, 999_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another amount");
    assert_eq!(w.code(SHARD, withdraw(1, 300_00, "new-phone", v.clone(), V)), Code::ChallengeInvalid, "another kind");
    assert_eq!(challenge(&w, id).attempts, 3);
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2), w.cents(SHARD, 3)), (2_000_00, 0, 0));
    assert_eq!(w.code(SHARD, transfer(1, 2, 300_00, "new-phone", v, V)), Code::ChallengeInvalid, "spent on mismatches");

    // An exclusive packet's challenge names its recipient.
    let kind = |r| PacketKind::Exclusive { amount: Cents(150_00), recipient: r, recipient_shard: SHARD };
    let id = challenge_id(&w.run(SHARD, send(1, kind(2), "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::SendPacket, amount: Cents(150_00), counterparty: 2 };
    assert_eq!(challenge(&w, id).op, op);
    let v = Some(Verification { challenge_id: id, code: code_for(&w, id, 1, op) });
    assert_eq!(w.code(SHARD, send(1, kind(3), "new-phone", v.clone(), V)), Code::ChallengeInvalid);
    assert_eq!(w.code(SHARD, send(1, kind(2), "new-phone", v, V)), Code::Ok);
    assert_eq!(w.cents(SHARD, 1), 1_850_00);
}

#[test]
fn another_users_challenge_is_invalid_and_their_guesses_do_not_burn_it() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    w.open(SHARD, 2, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let code = code_for(&w, id, 1, op);
    for _ in 0..5 {
        let v = Some(Verification { challenge_id: id, code });
        assert_eq!(w.code(SHARD, withdraw(2, 200_00, "new-phone", v, V)), Code::ChallengeInvalid);
    }
    assert_eq!(challenge(&w, id).attempts, 0);
    assert_eq!(w.code(SHARD, withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V)), Code::Ok);
}

#[test]
fn an_expired_challenge_is_deleted_and_its_code_is_invalid() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let code = code_for(&w, id, 1, ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 });
    w.now += w.config.challenge_ttl_ms;
    assert_eq!(w.code(SHARD, withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V)), Code::ChallengeInvalid);
    assert!(w.store(SHARD).get(&keys::challenge(id)).is_none(), "a dead challenge is deleted, not kept for ever");
    let (a, b) = keys::challenge_expiry_all();
    assert!(w.store(SHARD).scan(&a, &b, 10).is_empty(), "and its expiry index row with it");
    assert_eq!(w.cents(SHARD, 1), 1_000_00, "nothing moved");
}

/// Counts the scans the ledger makes (the housekeeping bounds exist so most commands make none).
struct CountingStore<'a> {
    inner: &'a MemStore,
    scans: std::cell::Cell<usize>,
}

impl Store for CountingStore<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scans.set(self.scans.get() + 1);
        self.inner.scan(start, end, limit)
    }
}

/// Scans made by applying `cmd` on `w`'s shard at `w.now` (its writes are committed).
fn scans_of(w: &mut World, cmd: Command) -> usize {
    w.now += 1;
    let req = Request { id: w.fresh_id(), time_ms: w.now, cmd };
    let counting = CountingStore { inner: &w.stores[0], scans: Default::default() };
    let mut ledger = Ledger::new(SHARD, &w.config, &counting);
    assert!(ledger.apply(&req).is_ok(), "{req}");
    let scans = counting.scans.get();
    let writes = ledger.into_writes();
    w.stores[0].apply(writes);
    scans
}

#[test]
fn with_no_live_challenge_a_command_scans_no_challenge_index_and_a_live_one_bounds_it_until_it_expires() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let top_up = Command::TopUp { user: 1, amount: Cents(1) };
    assert_eq!(scans_of(&mut w, top_up.clone()), 0, "an empty challenge index is never scanned");
    assert_eq!(scans_of(&mut w, top_up.clone()), 0);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let expires = challenge(&w, id).expires_ms;
    assert_eq!(scans_of(&mut w, top_up.clone()), 0, "a live challenge is not due before it expires");
    w.now = expires;
    assert_eq!(scans_of(&mut w, top_up.clone()), 1, "at its expiry the index is scanned once");
    assert!(w.store(SHARD).get(&keys::challenge(id)).is_none(), "and the dead challenge deleted");
    assert_eq!(scans_of(&mut w, top_up), 0, "then the index is empty and never scanned again");
}

#[test]
fn the_pin_is_checked_before_the_challenge_so_a_wrong_pin_spends_no_attempt() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let v = Some(Verification { challenge_id: id, code: 0 });
    assert_eq!(w.code(SHARD, withdraw(1, 200_00, "new-phone", v, PinCheck::Wrong)), Code::WrongPin);
    assert_eq!(challenge(&w, id).attempts, 0);
    // And a new-device spend without a PIN gets no challenge (no notification) at all.
    w.open_without_pin(SHARD, 2, 1_000_00);
    assert_eq!(w.code(SHARD, withdraw(2, 200_00, "new-phone", None, V)), Code::PinNotSet);
    assert_eq!(view::notifications(w.store(SHARD), 0, 10).len(), 1);
}

// ------------------------------------------------------------------ notification outbox

#[test]
fn challenges_queue_notifications_to_the_known_device_that_the_notifier_lists_and_acks_in_pages() {
    let mut w = world();
    w.config.max_credit_batch = 2; // the per-command ack bound
    w.open(SHARD, 1, 5_000_00);
    w.open(SHARD, 2, 0);
    assert_eq!(w.code(SHARD, Command::AckNotifications { up_to_seq: 0 }), Code::Ok, "nothing to ack on a fresh shard");
    let a = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "tablet", None, V)));
    let b = challenge_id(&w.run(SHARD, transfer(1, 2, 150_00, "tablet", None, V)));
    let c = challenge_id(&w.run(SHARD, send(1, lucky(120_00, 3), "tablet", None, V)));
    let n = view::notifications(w.store(SHARD), 0, 10);
    assert_eq!(n.iter().map(|n| n.seq).collect::<Vec<_>>(), vec![1, 2, 3], "seq from 1, ascending");
    assert_eq!(n.iter().map(|n| n.challenge_id).collect::<Vec<_>>(), vec![a, b, c]);
    assert!(n.iter().all(|n| n.user == 1 && n.device == "phone"), "pushed to the known device, not the new one");
    assert_eq!(n[1].op, ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(150_00), counterparty: 2 });
    assert_eq!(n[2].op, ChallengeOp { kind: ChallengeKind::SendPacket, amount: Cents(120_00), counterparty: 0 });
    assert_eq!(n[0].expires_ms, w.now + w.config.challenge_ttl_ms);
    assert_eq!(view::notifications(w.store(SHARD), 1, 10).len(), 2);
    assert_eq!(view::notifications(w.store(SHARD), 0, 1).len(), 1);
    assert_eq!(view::totals(w.store(SHARD)).notifications_pending, 3);

    // What the notifier sends confirms the operation.
    let code = code_for(&w, n[1].challenge_id, n[1].user, n[1].op);
    assert_eq!(w.code(SHARD, transfer(1, 2, 150_00, "tablet", Some(Verification { challenge_id: b, code }), V)), Code::Ok);

    assert_eq!(w.code(SHARD, Command::AckNotifications { up_to_seq: 4 }), Code::InvalidArgument, "cannot ack what was never issued");
    assert_eq!(w.run(SHARD, Command::AckNotifications { up_to_seq: 3 }).reply, Reply::Acked { records: 2, more: true });
    assert_eq!(view::notifications(w.store(SHARD), 0, 10).iter().map(|n| n.seq).collect::<Vec<_>>(), vec![3]);
    assert_eq!(w.run(SHARD, Command::AckNotifications { up_to_seq: 3 }).reply, Reply::Acked { records: 1, more: false });
    assert!(view::notifications(w.store(SHARD), 0, 10).is_empty());
    assert_eq!(w.run(SHARD, Command::AckNotifications { up_to_seq: 2 }).reply, Reply::Acked { records: 0, more: false }, "a late ack");
    let t = view::totals(w.store(SHARD));
    assert_eq!((t.notifications_pending, t.notifications_acked), (0, 3));
    // The next challenge continues the sequence.
    challenge_id(&w.run(SHARD, withdraw(1, 200_00, "tablet", None, V)));
    assert_eq!(view::notifications(w.store(SHARD), 0, 10)[0].seq, 4);
    assert!(view::audit(w.store(SHARD)).ok);
}

#[test]
fn no_record_or_view_holds_a_challenge_code() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let c = challenge(&w, id);
    let n = view::notifications(w.store(SHARD), 0, 10).remove(0);
    // Exhaustive destructuring: a `code` field added to either record would not compile here.
    let Challenge { user, op, expires_ms, used, attempts } = c;
    let Notification { seq: _, user: n_user, device: _, challenge_id, op: n_op, expires_ms: n_expires } = n;
    assert_eq!((user, op, expires_ms, used, attempts), (n_user, n_op, n_expires, false, 0));
    assert_eq!(challenge_id, id);
    let view::PinState { pin: _, failures: _, locked_until_ms: _ } = pin_state(&w, 1);
    // And the code's bytes appear in no stored value.
    let code = code_for(&w, id, 1, op);
    let needle = code.to_le_bytes();
    for (k, v) in &w.store(SHARD).map {
        assert!(!v.windows(4).any(|x| x == needle), "code bytes under key {k:?}");
    }
}

#[test]
fn the_challenge_key_is_part_of_the_replicated_config_and_decides_the_code() {
    let mut w = world();
    w.open(SHARD, 1, 1_000_00);
    let id = challenge_id(&w.run(SHARD, withdraw(1, 200_00, "new-phone", None, V)));
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    // A replica with the default (all-zero) key would refuse the code the others accept.
    let other = LedgerConfig::default();
    let code = code_for(&w, id, 1, op);
    assert_ne!(challenge_code(&other.challenge_key, id, 1, &op), code);
    let req_id = w.fresh_id();
    let mut l = Ledger::new(SHARD, &other, w.store(SHARD));
    let o = l.apply(&Request {
        id: req_id,
        time_ms: w.now,
        cmd: withdraw(1, 200_00, "new-phone", Some(Verification { challenge_id: id, code }), V),
    });
    assert_eq!(o.code, Code::ChallengeInvalid);
}

// ------------------------------------------------------------------ smaller gaps of #28

#[test]
fn a_withdrawal_counts_against_the_daily_limit_and_a_blocked_grade_cannot_withdraw() {
    let mut w = world();
    w.open(SHARD, 1, 20_000_00);
    w.open(SHARD, 2, 0);
    let limit = w.config.daily_limit_normal.0;
    // Up to the limit in one day, withdrawals and transfers together.
    assert_eq!(w.code(SHARD, withdraw(1, limit - 10_00, "phone", None, V)), Code::Ok);
    assert_eq!(w.code(SHARD, transfer(1, 2, 10_00, "phone", None, V)), Code::Ok);
    let balance = w.cents(SHARD, 1);
    assert_eq!(w.code(SHARD, withdraw(1, 1, "phone", None, V)), Code::DailyLimitExceeded, "a withdrawal past the day's limit");
    assert_eq!(w.cents(SHARD, 1), balance, "nothing moved");
    // The next China day the limit starts again.
    w.now += 24 * 3600 * 1000;
    assert_eq!(w.code(SHARD, withdraw(1, 1_00, "phone", None, V)), Code::Ok);
    // A high risk grade may receive, never send: withdrawing included.
    assert_eq!(w.code(SHARD, Command::SetRisk { user: 1, frozen: false, grade: RiskGrade::High }), Code::Ok);
    let balance = w.cents(SHARD, 1);
    assert_eq!(w.code(SHARD, withdraw(1, 1_00, "phone", None, V)), Code::RiskGradeBlocked);
    assert_eq!(w.cents(SHARD, 1), balance, "nothing moved");
}

#[test]
fn payments_from_another_device_are_summed_for_the_challenge_so_ten_of_99_99_do_not_pass() {
    let mut w = world();
    w.open(SHARD, 1, 5_000_00);
    w.open(SHARD, 2, 0);
    let threshold = w.config.challenge_threshold.0;
    let small = threshold - 1; // 99.99: each alone is under the threshold
    assert_eq!(w.code(SHARD, transfer(1, 2, small, "new-phone", None, V)), Code::Ok, "the first passes alone");
    // The second from a new device (this one or another) brings the day's sum past the
    // threshold: challenged, and nothing moves.
    let o = w.run(SHARD, transfer(1, 2, small, "new-phone", None, V));
    let id = challenge_id(&o);
    assert_eq!(challenge_id(&w.run(SHARD, withdraw(1, small, "tablet", None, V))), id + 1, "another new device counts too");
    assert_eq!(challenge_id(&w.run(SHARD, send(1, lucky(small, 2), "new-phone", None, V))), id + 2);
    assert_eq!((w.cents(SHARD, 1), w.cents(SHARD, 2)), (5_000_00 - small, small));
    // The known device pays as before; the sum is per day.
    assert_eq!(w.code(SHARD, transfer(1, 2, small, "phone", None, V)), Code::Ok);
    w.now += 24 * 3600 * 1000;
    assert_eq!(w.code(SHARD, transfer(1, 2, small, "new-phone", None, V)), Code::Ok, "a new day starts a new sum");
    // A challenged payment, once verified, is not added to the sum.
    let o = w.run(SHARD, transfer(1, 2, 50_00, "new-phone", None, V));
    let id = challenge_id(&o);
    let op = ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(50_00), counterparty: 2 };
    let v = Verification { challenge_id: id, code: code_for(&w, id, 1, op) };
    assert_eq!(w.code(SHARD, transfer(1, 2, 50_00, "new-phone", Some(v), V)), Code::Ok);
}

// ------------------------------------------------------------------ packet keys and phrases

fn grab(packet: PacketId, key: u64, grabber: UserId, phrase: Option<&str>) -> Command {
    Command::Grab { packet, key, grabber, grabber_shard: SHARD, phrase: phrase.map(|p| phrase_hash(key, p)) }
}

fn sent(o: &Outcome) -> (PacketId, u64) {
    let Reply::Sent { packet, key, .. } = o.reply else { panic!("packet expected: {o:?}") };
    (packet, key)
}

/// Every row of the store, to show that a refusal wrote nothing that matters.
fn rows(w: &World) -> Vec<(Vec<u8>, Vec<u8>)> {
    w.store(SHARD).scan(&[0], &[0xff], usize::MAX)
}

/// Packet ids count up: only the key makes one reachable. A wrong key is answered exactly as an
/// id that was never issued (the ledger and the leader's fast path), hot or archived, and moves
/// nothing.
#[test]
fn a_grab_with_a_wrong_key_is_answered_as_no_packet_hot_or_archived_and_moves_nothing() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    w.open(SHARD, 2, 0);
    let o = w.run(SHARD, send(1, lucky(2_00, 2), "phone", None, V));
    let (p, key) = sent(&o);
    assert_eq!(key, KEY, "the reply hands the sender the packet's key");
    let never_issued = PacketId::new(SHARD, p.seq() + 1);
    for (packet, k) in [(p, KEY ^ 1), (p, 0), (never_issued, KEY), (PacketId::new(SHARD, 0), KEY)] {
        let before = rows(&w);
        let id = w.fresh_id();
        let fast = view::grab_refusal(w.store(SHARD), &id, packet, k, 2, || w.now);
        assert_eq!(w.code(SHARD, grab(packet, k, 2, None)), Code::UnknownPacket, "{packet:?} key {k:x}");
        if packet == p {
            assert_eq!(fast, Some(Code::UnknownPacket), "the leader refuses a wrong key without a log entry");
        } else {
            assert_eq!(fast, None, "an id not yet issued here goes to the leader's read barrier");
            assert!(!view::packet_issued(w.store(SHARD), packet));
        }
        let after = rows(&w);
        let changed: Vec<_> = after.iter().filter(|r| !before.contains(r)).map(|(k, _)| k[0] as char).collect();
        assert!(changed.iter().all(|c| matches!(c, 't' | 'q' | 'd')), "only the clock and the request id: {changed:?}");
    }
    assert_eq!(view::packet(w.store(SHARD), p).unwrap().packet.remaining, Cents(2_00));
    assert_eq!(w.cents(SHARD, 2), 0);
    // The right key grabs; then settled and archived, a wrong key still says no packet.
    assert!(w.run(SHARD, grab(p, KEY, 2, None)).is_ok());
    w.open(SHARD, 3, 0);
    assert!(w.run(SHARD, grab(p, KEY, 3, None)).is_ok());
    w.now += w.config.packet_retention_ms + 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert_eq!(view::totals(w.store(SHARD)).archived_packets, 1);
    let id = w.fresh_id();
    assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY ^ 1, 2, || w.now), Some(Code::UnknownPacket));
    assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY, 2, || w.now), Some(Code::AlreadyGrabbed));
    assert_eq!(w.code(SHARD, grab(p, KEY ^ 1, 2, None)), Code::UnknownPacket);
}

/// A password packet's phrase is never in a command or in state: only its hash salted with
/// the packet's key, which differs from packet to packet.
#[test]
fn a_password_packet_keeps_only_a_hash_of_its_phrase_salted_with_its_key() {
    let phrase = "恭喜發財";
    assert_ne!(phrase_hash(1, phrase), phrase_hash(2, phrase), "salted");
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    w.open(SHARD, 2, 0);
    let kind = PacketKind::Password { total: Cents(1_00), count: 1, phrase_hash: phrase_hash(KEY, phrase) };
    let (p, _) = sent(&w.run(SHARD, send(1, kind, "phone", None, V)));
    assert!(w.run(SHARD, grab(p, KEY, 2, Some(phrase))).is_ok());
    let needle = phrase.as_bytes();
    for (k, v) in rows(&w) {
        assert!(!v.windows(needle.len()).any(|x| x == needle), "row {:?} holds the phrase", k[0] as char);
    }
}

/// Five wrong phrases from one grabber close the packet to that grabber, then even the right
/// phrase is refused (so the answer stops telling right from wrong), on the leader's fast path
/// too; other grabbers are not affected; the counts leave with the archive.
#[test]
fn five_wrong_phrases_close_a_password_packet_to_that_grabber_even_for_the_right_phrase() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    for u in 2..=4 {
        w.open(SHARD, u, 0);
    }
    let kind = PacketKind::Password { total: Cents(2_00), count: 2, phrase_hash: phrase_hash(KEY, "open sesame") };
    let (p, _) = sent(&w.run(SHARD, send(1, kind, "phone", None, V)));
    for i in 0..PHRASE_MAX_TRIES {
        let id = w.fresh_id();
        assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY, 2, || w.now), None, "a wrong phrase must be counted: try {i}");
        assert_eq!(w.code(SHARD, grab(p, KEY, 2, Some(&format!("guess {i}")))), Code::WrongPassword);
    }
    assert_eq!(w.code(SHARD, grab(p, KEY, 2, Some("open sesame"))), Code::PhraseTriesExhausted);
    assert_eq!(w.code(SHARD, grab(p, KEY, 2, None)), Code::PhraseTriesExhausted);
    let id = w.fresh_id();
    assert_eq!(view::grab_refusal(w.store(SHARD), &id, p, KEY, 2, || w.now), Some(Code::PhraseTriesExhausted));
    assert_eq!(w.cents(SHARD, 2), 0);
    // Another grabber: one wrong try, then the right phrase.
    assert_eq!(w.code(SHARD, grab(p, KEY, 3, Some("sesame"))), Code::WrongPassword);
    assert!(w.run(SHARD, grab(p, KEY, 3, Some("open sesame"))).is_ok());
    assert!(w.run(SHARD, grab(p, KEY, 4, Some("open sesame"))).is_ok());
    assert_eq!(w.cents(SHARD, 3) + w.cents(SHARD, 4), 2_00);
    w.now += w.config.packet_retention_ms + 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert_eq!(view::totals(w.store(SHARD)).archived_packets, 1);
    let (a, b) = keys::phrase_tries_of(p);
    assert!(w.store(SHARD).scan(&a, &b, 10).is_empty(), "the counts went with the archive");
}

/// The key is drawn by whichever leader proposes a send, and the phrase's hash is salted with
/// it: a re-sent request id answers the first packet and its key, and sends nothing more.
#[test]
fn a_resent_packet_request_id_answers_the_first_packet_and_key_whatever_key_the_new_leader_drew() {
    let mut w = world();
    w.open(SHARD, 1, 100_00);
    let id = w.fresh_id();
    let cmd = |key: u64| Command::SendPacket {
        key,
        sender: 1,
        kind: PacketKind::Password { total: Cents(1_00), count: 1, phrase_hash: phrase_hash(key, "kw") },
        device: "phone".into(),
        verification: None,
        greeting: String::new(),
        pin: V,
    };
    let first = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: cmd(KEY) });
    let again = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: cmd(KEY + 1) });
    assert_eq!(again, first);
    assert_eq!(sent(&first).1, KEY);
    assert_eq!(w.cents(SHARD, 1), 99_00, "one packet sent");
}

/// A token alone set the first PIN of a wallet that already held money, and so chose the PIN
/// that spends it. Now that takes the code sent to the wallet's known device: without it
/// CHALLENGE_REQUIRED and no PIN; a wrong code is counted; the right one sets the PIN, once. An
/// empty wallet's first PIN needs no code (nothing to take yet).
#[test]
fn the_first_pin_of_a_wallet_holding_money_needs_the_code_sent_to_its_known_device() {
    let mut w = world();
    w.open_without_pin(SHARD, 1, 50_00);
    let o = w.run(SHARD, set_pin(1));
    let id = challenge_id(&o);
    assert_eq!(pin_state(&w, 1).pin, None, "no PIN without the code");
    let op = ChallengeOp { kind: ChallengeKind::SetPin, amount: Cents(0), counterparty: 0 };
    let code = code_for(&w, id, 1, op);
    let with = |code: u32| Command::SetPin {
        user: 1,
        salt: [1; 16],
        hash: [0x5a; 32],
        verification: Some(Verification { challenge_id: id, code }),
    };
    assert_eq!(w.code(SHARD, with(code ^ 1)), Code::ChallengeInvalid);
    assert_eq!(challenge(&w, id).attempts, 1, "a wrong code is counted");
    assert_eq!(pin_state(&w, 1).pin, None);
    assert_eq!(w.code(SHARD, with(code)), Code::Ok);
    assert!(pin_state(&w, 1).pin.is_some() && challenge(&w, id).used);
    assert_eq!(w.code(SHARD, with(code)), Code::PinAlreadySet);
    // A code for another operation does not set a PIN.
    w.open_without_pin(SHARD, 2, 50_00);
    let other = challenge_id(&w.run(SHARD, set_pin(2)));
    let transfer_code = code_for(&w, other, 2, ChallengeOp { kind: ChallengeKind::Transfer, amount: Cents(0), counterparty: 0 });
    let v = Some(Verification { challenge_id: other, code: transfer_code });
    assert_eq!(w.code(SHARD, Command::SetPin { user: 2, salt: [2; 16], hash: [0x5a; 32], verification: v }), Code::ChallengeInvalid);
    // An empty wallet: no code needed.
    w.open_without_pin(SHARD, 3, 0);
    assert_eq!(w.code(SHARD, set_pin(3)), Code::Ok);
    assert_eq!(w.cents(SHARD, 1) + w.cents(SHARD, 2), 100_00, "not one cent moved");
}

/// A revocation mark only moves forward: a late or repeated RevokeTokens with an earlier time
/// never brings a revoked token back, and it moves no money.
#[test]
fn a_token_revocation_only_moves_forward_and_moves_no_money() {
    let mut w = world();
    w.open(SHARD, 1, 10_00);
    assert_eq!(w.code(SHARD, Command::RevokeTokens { user: 2, before_s: 5 }), Code::UnknownUser);
    assert!(w.run(SHARD, Command::RevokeTokens { user: 1, before_s: 2_000 }).is_ok());
    assert!(w.run(SHARD, Command::RevokeTokens { user: 1, before_s: 1_000 }).is_ok());
    assert_eq!(view::account(w.store(SHARD), 1).unwrap().tokens_void_before_s, 2_000);
    assert!(w.run(SHARD, Command::RevokeTokens { user: 1, before_s: 3_000 }).is_ok());
    assert_eq!(view::account(w.store(SHARD), 1).unwrap().tokens_void_before_s, 3_000);
    assert_eq!(w.cents(SHARD, 1), 10_00);
}
