//! Ledger rules: one test per error code, the lucky split's statistics, and property tests over
//! random command sequences (conservation, replay, batch equivalence, split bounds).

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_ledger::testing::{lucky, set_pin, World, KEY, T0};
use hongbao_ledger::*;
use proptest::prelude::*;

const SHARD: ShardId = 1;
const OTHER: ShardId = 2;

/// These tests move time by hours in one command (expiries, retention, daily limits); the
/// bound on one stamp's step has its own test.
fn unbounded_steps() -> LedgerConfig {
    LedgerConfig { max_stamp_step_ms: u64::MAX, ..LedgerConfig::default() }
}

/// The random sequences advance time by seconds: short lives and retention make packets expire
/// and move to the archive within them.
fn property_config() -> LedgerConfig {
    LedgerConfig { packet_ttl_ms: 60_000, packet_retention_ms: 1_000, ..unbounded_steps() }
}

/// One shard (packets and transfers may name `OTHER`, which has no ledger here).
fn world() -> World {
    World::new(1, unbounded_steps())
}

// ------------------------------------------------------------------ one test per error code

#[test]
fn zero_amounts_are_rejected_with_amount_zero() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    assert_eq!(w.code(SHARD, Command::TopUp { user: 1, amount: Cents(0) }), Code::AmountZero);
    assert_eq!(
        w.code(SHARD, Command::Withdraw { user: 1, amount: Cents(0), device: "phone".into(), verification: None, pin: PinCheck::Verified }),
        Code::AmountZero
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::Transfer {
                from: 1,
                to: 2,
                to_shard: OTHER,
                amount: Cents(0),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified
            }
        ),
        Code::AmountZero
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: lucky(0, 1),
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified
            }
        ),
        Code::AmountZero
    );
    assert_eq!(w.cents(SHARD, 1), 1000);
}

#[test]
fn overflowing_amounts_are_rejected_with_amount_overflow() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    assert_eq!(w.code(SHARD, Command::TopUp { user: 1, amount: Cents(u64::MAX) }), Code::AmountOverflow);
    let fixed = PacketKind::Fixed { per_share: Cents(u64::MAX / 2), count: 3 };
    assert_eq!(
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: fixed,
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified
            }
        ),
        Code::AmountOverflow
    );
    assert_eq!(w.cents(SHARD, 1), 0);
}

#[test]
fn spending_more_than_the_balance_is_insufficient_funds() {
    let mut w = world();
    w.open(SHARD, 1, 500);
    assert_eq!(
        w.code(
            SHARD,
            Command::Withdraw { user: 1, amount: Cents(501), device: "phone".into(), verification: None, pin: PinCheck::Verified }
        ),
        Code::InsufficientFunds
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: lucky(600, 2),
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified
            }
        ),
        Code::InsufficientFunds
    );
    assert_eq!(w.cents(SHARD, 1), 500);
}

#[test]
fn unknown_users_and_existing_users_have_their_codes() {
    let mut w = world();
    assert_eq!(w.code(SHARD, Command::TopUp { user: 9, amount: Cents(1) }), Code::UnknownUser);
    w.open(SHARD, 9, 0);
    assert_eq!(w.code(SHARD, Command::OpenAccount { user: 9, device: "x".into() }), Code::UserExists);
}

#[test]
fn unknown_packets_and_foreign_packet_ids_are_rejected() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    assert_eq!(w.grab(SHARD, PacketId::new(SHARD, 999), 1, SHARD).code, Code::UnknownPacket);
    assert_eq!(w.grab(SHARD, PacketId::new(OTHER, 1), 1, SHARD).code, Code::WrongShard);
}

#[test]
fn a_second_grab_by_the_same_user_is_already_grabbed() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    let p = w.send(SHARD, 1, lucky(100, 5));
    assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
    let b = w.cents(SHARD, 2);
    assert_eq!(w.grab(SHARD, p, 2, SHARD).code, Code::AlreadyGrabbed);
    assert_eq!(w.cents(SHARD, 2), b);
}

#[test]
fn grabbing_a_fully_grabbed_packet_is_exhausted() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    w.open(SHARD, 3, 0);
    let p = w.send(SHARD, 1, lucky(100, 1));
    assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
    assert_eq!(w.grab(SHARD, p, 3, SHARD).code, Code::PacketExhausted);
}

#[test]
fn an_expired_packet_refuses_grabs_and_refunds_its_sender_exactly_once() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    let p = w.send(SHARD, 1, lucky(300, 3));
    assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
    let got = w.cents(SHARD, 2);
    assert_eq!(w.code(SHARD, Command::ExpirePacket { packet: p }), Code::PacketNotExpired);
    w.now += w.config.packet_ttl_ms;
    assert_eq!(w.grab(SHARD, p, 1, SHARD).code, Code::PacketExpired);
    assert_eq!(view::expired_packets(w.store(SHARD), w.now, 10), vec![p]);
    let o = w.run(SHARD, Command::ExpirePacket { packet: p });
    assert_eq!(o.reply, Reply::Expired { refunded: Cents(300 - got) });
    assert_eq!(w.cents(SHARD, 1), 1000 - got);
    // A second sweep (e.g. by a new leader) refunds nothing more.
    assert_eq!(w.run(SHARD, Command::ExpirePacket { packet: p }).reply, Reply::Expired { refunded: Cents(0) });
    assert_eq!(w.cents(SHARD, 1), 1000 - got);
    assert!(view::expired_packets(w.store(SHARD), w.now, 10).is_empty());
}

#[test]
fn a_wrong_phrase_on_a_password_packet_is_wrong_password() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    let p = w.send(SHARD, 1, PacketKind::Password { total: Cents(100), count: 2, phrase_hash: phrase_hash(KEY, "恭喜發財") });
    assert_eq!(
        w.run(SHARD, Command::Grab { key: KEY, packet: p, grabber: 2, grabber_shard: SHARD, phrase: Some(phrase_hash(KEY, "wrong")) }).code,
        Code::WrongPassword
    );
    assert_eq!(
        w.run(SHARD, Command::Grab { key: KEY, packet: p, grabber: 2, grabber_shard: SHARD, phrase: None }).code,
        Code::WrongPassword
    );
    assert!(w
        .run(SHARD, Command::Grab { key: KEY, packet: p, grabber: 2, grabber_shard: SHARD, phrase: Some(phrase_hash(KEY, "恭喜發財")) })
        .is_ok());
}

#[test]
fn only_the_named_recipient_may_grab_an_exclusive_packet() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    w.open(SHARD, 3, 0);
    let p = w.send(SHARD, 1, PacketKind::Exclusive { amount: Cents(520), recipient: 2, recipient_shard: SHARD });
    assert_eq!(w.grab(SHARD, p, 3, SHARD).code, Code::NotRecipient);
    assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
    assert_eq!(w.cents(SHARD, 2), 520);
}

#[test]
fn packet_limits_total_count_and_share_have_their_codes() {
    let mut w = world();
    w.open(SHARD, 1, 100_000);
    let send = |w: &mut World, kind| {
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind,
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified,
            },
        )
    };
    assert_eq!(send(&mut w, lucky(200_01, 10)), Code::TotalTooLarge);
    assert_eq!(send(&mut w, lucky(200_00, 10)), Code::Ok);
    assert_eq!(send(&mut w, lucky(100, 0)), Code::CountOutOfRange);
    assert_eq!(send(&mut w, lucky(1000, 101)), Code::CountOutOfRange);
    assert_eq!(send(&mut w, lucky(5, 10)), Code::ShareTooSmall);
    assert_eq!(send(&mut w, PacketKind::Fixed { per_share: Cents(0), count: 3 }), Code::AmountZero);
    assert_eq!(send(&mut w, PacketKind::Exclusive { amount: Cents(10), recipient: 1, recipient_shard: SHARD }), Code::SelfTransfer);
    assert_eq!(send(&mut w, PacketKind::Password { total: Cents(10), count: 1, phrase_hash: [0; 32] }), Code::InvalidArgument);
}

#[test]
fn may_20th_raises_the_packet_limit_to_520() {
    let mut w = world();
    w.now = 1_779_208_200_000; // 2026-05-20 00:30 China time
    w.open(SHARD, 1, 100_000);
    assert_eq!(
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: lucky(520_00, 1),
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified
            }
        ),
        Code::Ok
    );
}

#[test]
fn a_frozen_account_can_neither_send_nor_withdraw_but_can_receive() {
    let mut w = world();
    w.open(SHARD, 1, 10_000);
    w.open(SHARD, 2, 10_000);
    assert!(w.run(SHARD, Command::SetRisk { user: 1, frozen: true, grade: RiskGrade::Normal }).is_ok());
    assert_eq!(
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: lucky(100, 1),
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified
            }
        ),
        Code::AccountFrozen
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::Withdraw { user: 1, amount: Cents(100), device: "phone".into(), verification: None, pin: PinCheck::Verified }
        ),
        Code::AccountFrozen
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::Transfer {
                from: 1,
                to: 2,
                to_shard: SHARD,
                amount: Cents(100),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified
            }
        ),
        Code::AccountFrozen
    );
    assert_eq!(
        w.code(
            SHARD,
            Command::Transfer {
                from: 2,
                to: 1,
                to_shard: SHARD,
                amount: Cents(100),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified
            }
        ),
        Code::Ok
    );
    assert_eq!(w.cents(SHARD, 1), 10_100);
}

#[test]
fn the_daily_send_limit_depends_on_the_risk_grade_and_resets_each_day() {
    let mut w = world();
    w.open(SHARD, 1, 2_000_000);
    w.open(SHARD, 2, 0);
    let send = |w: &mut World, c| {
        w.code(
            SHARD,
            Command::SendPacket {
                key: KEY,
                sender: 1,
                kind: lucky(c, 1),
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified,
            },
        )
    };
    for _ in 0..25 {
        assert_eq!(send(&mut w, 200_00), Code::Ok); // 25 × 200 = 5,000 yuan: the normal limit
    }
    assert_eq!(send(&mut w, 1), Code::DailyLimitExceeded);
    w.now += 24 * 3600 * 1000;
    assert_eq!(send(&mut w, 200_00), Code::Ok, "a new day");
    assert!(w.run(SHARD, Command::SetRisk { user: 1, frozen: false, grade: RiskGrade::High }).is_ok());
    assert_eq!(send(&mut w, 100), Code::RiskGradeBlocked);
    assert_eq!(
        w.code(
            SHARD,
            Command::Transfer {
                from: 1,
                to: 2,
                to_shard: SHARD,
                amount: Cents(100),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified
            }
        ),
        Code::RiskGradeBlocked
    );
}

#[test]
fn a_new_device_above_the_threshold_needs_a_challenge_and_passes_with_the_right_code() {
    let mut w = world();
    w.open(SHARD, 1, 100_000);
    let withdraw = |w: &mut World, v: Option<Verification>| {
        w.run(
            SHARD,
            Command::Withdraw { user: 1, amount: Cents(200_00), device: "new-phone".into(), verification: v, pin: PinCheck::Verified },
        )
    };
    let o = withdraw(&mut w, None);
    assert_eq!(o.code, Code::ChallengeRequired);
    let Reply::Challenge { challenge_id } = o.reply else { panic!("challenge id expected") };
    assert_eq!(w.cents(SHARD, 1), 100_000, "nothing moved");
    // The notification goes to the known device; the notifier computes the code there.
    let n = view::notifications(w.store(SHARD), 0, 10);
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].challenge_id, n[0].user, n[0].device.as_str()), (challenge_id, 1, "phone"));
    let code = challenge_code(&w.config.challenge_key, challenge_id, 1, &n[0].op);
    assert_eq!(withdraw(&mut w, Some(Verification { challenge_id, code: code.wrapping_add(1) })).code, Code::ChallengeInvalid);
    assert!(withdraw(&mut w, Some(Verification { challenge_id, code })).is_ok());
    assert_eq!(w.cents(SHARD, 1), 100_000 - 200_00);
    // Used once only.
    assert_eq!(withdraw(&mut w, Some(Verification { challenge_id, code })).code, Code::ChallengeInvalid);
    // Small amounts from a new device pass without a challenge; the known device always does.
    assert!(w
        .run(
            SHARD,
            Command::Withdraw { user: 1, amount: Cents(50), device: "new-phone".into(), verification: None, pin: PinCheck::Verified }
        )
        .is_ok());
}

#[test]
fn an_expired_challenge_is_invalid() {
    let mut w = world();
    w.open(SHARD, 1, 100_000);
    let o = w.run(
        SHARD,
        Command::Withdraw { user: 1, amount: Cents(200_00), device: "other".into(), verification: None, pin: PinCheck::Verified },
    );
    let Reply::Challenge { challenge_id } = o.reply else { panic!() };
    let op = ChallengeOp { kind: ChallengeKind::Withdraw, amount: Cents(200_00), counterparty: 0 };
    let code = challenge_code(&w.config.challenge_key, challenge_id, 1, &op);
    w.now += w.config.challenge_ttl_ms;
    let o = w.run(
        SHARD,
        Command::Withdraw {
            user: 1,
            amount: Cents(200_00),
            device: "other".into(),
            verification: Some(Verification { challenge_id, code }),
            pin: PinCheck::Verified,
        },
    );
    assert_eq!(o.code, Code::ChallengeInvalid);
}

#[test]
fn a_request_id_reused_with_another_payload_is_rejected_and_a_replay_returns_the_first_result() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    let id = w.fresh_id();
    let first = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    let again = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(700) } });
    assert_eq!(first, again);
    let other = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(800) } });
    assert_eq!(other.code, Code::RequestIdReused);
    assert_eq!(w.cents(SHARD, 1), 700);
}

/// An id is forgotten after the retention, and a retry that arrives after that is refused as
/// REQUEST_EXPIRED, not run again: before the request window, it paid a second time.
#[test]
fn a_retry_after_its_id_was_forgotten_is_request_expired_and_pays_nothing() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    let id = w.fresh_id();
    let topup = Command::TopUp { user: 1, amount: Cents(1) };
    assert!(w.apply(SHARD, &Request { id, time_ms: w.now, cmd: topup.clone() }).is_ok());
    w.now += w.config.dedup_retention_ms + 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) }); // any command runs the collector
    assert!(w.store(SHARD).get(&keys::dedup(1, &id)).is_none(), "the id was forgotten");
    let o = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: topup });
    assert_eq!(o.code, Code::RequestExpired);
    assert_eq!(w.cents(SHARD, 1), 2, "the late retry moved nothing");
}

/// The window is the id's issue time, not the time it was first applied: an id issued a day
/// ago that first arrives now is refused too (its earlier attempt may have been forgotten),
/// and one issued further ahead than `request_ahead_ms` is refused as REQUEST_AHEAD.
#[test]
fn ids_outside_the_request_window_are_refused_and_move_nothing() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    let stale = RequestId::new(w.now - w.config.dedup_retention_ms, [1; 10]);
    let ahead = RequestId::new(w.now + w.config.request_ahead_ms + 1, [2; 10]);
    let just_in = RequestId::new(w.now - w.config.dedup_retention_ms + 1, [3; 10]);
    let topup = Command::TopUp { user: 1, amount: Cents(1) };
    assert_eq!(w.apply(SHARD, &Request { id: stale, time_ms: w.now, cmd: topup.clone() }).code, Code::RequestExpired);
    assert_eq!(w.apply(SHARD, &Request { id: ahead, time_ms: w.now, cmd: topup.clone() }).code, Code::RequestAhead);
    assert_eq!(w.cents(SHARD, 1), 0);
    assert_eq!(w.apply(SHARD, &Request { id: just_in, time_ms: w.now, cmd: topup }).code, Code::Ok);
    assert_eq!(w.cents(SHARD, 1), 1);
}

/// Ledger time may run far past the clients' (a leader's clock that leapt, a step of
/// `max_stamp_step_ms` per command): ids are then forgotten early by ledger time, and a retry
/// of one is still refused, never run twice. Property: over any interleaving of time jumps,
/// fresh requests and retries, a request id moves money at most once.
#[test]
fn no_request_id_pays_twice_whatever_ledger_time_does() {
    proptest!(ProptestConfig::with_cases(64), |(steps in proptest::collection::vec((0u8..3, 0u64..4 * 24 * 3600 * 1000), 1..60))| {
        let mut w = world();
        w.open(SHARD, 1, 0);
        let mut sent: Vec<RequestId> = vec![];
        let mut paid = std::collections::BTreeSet::new();
        for (kind, jump) in steps {
            match kind {
                0 => w.now += jump,
                1 => sent.push(w.fresh_id()),
                _ => {}
            }
            for id in &sent {
                let o = w.apply(SHARD, &Request { id: *id, time_ms: w.now, cmd: Command::TopUp { user: 1, amount: Cents(1) } });
                if o.is_ok() {
                    paid.insert(*id);
                }
            }
            prop_assert!(w.cents(SHARD, 1) as usize == paid.len(), "balance {} after {} distinct ids paid", w.cents(SHARD, 1), paid.len());
        }
    });
}

#[test]
fn transfers_to_oneself_are_self_transfer_and_malformed_input_is_invalid_argument() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    assert_eq!(
        w.code(
            SHARD,
            Command::Transfer {
                from: 1,
                to: 1,
                to_shard: SHARD,
                amount: Cents(1),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified
            }
        ),
        Code::SelfTransfer
    );
    assert_eq!(w.code(SHARD, Command::OpenAccount { user: 0, device: "x".into() }), Code::InvalidArgument);
    assert_eq!(w.code(SHARD, Command::OpenAccount { user: 5, device: "x".repeat(1000) }), Code::InvalidArgument);
    assert_eq!(w.code(SHARD, Command::OpenAccount { user: 5, device: String::new() }), Code::InvalidArgument);
}

#[test]
fn credits_apply_exactly_once_in_sequence_and_gaps_are_credit_out_of_order() {
    let mut w = world();
    w.open(SHARD, 5, 0);
    w.open(SHARD, 6, 0);
    let e = |seq, user, amount| CreditEntry { seq, user, amount: Cents(amount), origin: Origin::Transfer { from: 77 }, bundle: None };
    assert!(w.run(SHARD, Command::Credit { source: OTHER, entries: vec![e(1, 5, 100), e(2, 6, 50)] }).is_ok());
    assert_eq!((w.cents(SHARD, 5), w.cents(SHARD, 6)), (100, 50));
    // Redelivery of 1..2 plus new 3: only 3 applies.
    let o = w.run(SHARD, Command::Credit { source: OTHER, entries: vec![e(1, 5, 100), e(2, 6, 50), e(3, 5, 1)] });
    assert_eq!(o.reply, Reply::Credited { applied: 1, skipped: 2 });
    assert_eq!(w.cents(SHARD, 5), 101);
    assert_eq!(w.code(SHARD, Command::Credit { source: OTHER, entries: vec![e(5, 5, 1)] }), Code::CreditOutOfOrder);
    assert_eq!(w.cents(SHARD, 5), 101);
    assert!(view::audit(w.store(SHARD)).ok);
}

#[test]
fn a_cross_shard_grab_goes_through_the_outbox_and_mark_delivered_settles_it() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    let p = w.send(SHARD, 1, lucky(500, 2));
    let o = w.run(SHARD, Command::Grab { key: KEY, packet: p, grabber: 42, grabber_shard: OTHER, phrase: None });
    let Reply::Grabbed { amount, credit_in_flight: true, .. } = o.reply else { panic!("{o:?}") };
    let out = view::outbox(w.store(SHARD), OTHER, 0, 10);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].seq, out[0].user, out[0].amount), (1, 42, amount));
    assert_eq!(view::totals(w.store(SHARD)).outbox_pending, amount);
    assert_eq!(
        w.code(SHARD, Command::MarkDelivered { dest: OTHER, up_to_seq: 2 }),
        Code::InvalidArgument,
        "cannot settle what was never sent"
    );
    assert!(w.run(SHARD, Command::MarkDelivered { dest: OTHER, up_to_seq: 1 }).is_ok());
    assert!(view::outbox(w.store(SHARD), OTHER, 0, 10).is_empty());
    let t = view::totals(w.store(SHARD));
    assert_eq!((t.outbox_pending, t.credits_out_delivered), (Cents(0), amount));
    assert!(view::audit(w.store(SHARD)).ok);
}

#[test]
fn withdrawal_fees_follow_the_free_quota_and_are_collected() {
    let mut w = world();
    w.open(SHARD, 1, 500_000);
    let o = w.run(
        SHARD,
        Command::Withdraw { user: 1, amount: Cents(1_200_00), device: "phone".into(), verification: None, pin: PinCheck::Verified },
    );
    assert_eq!(o.reply, Reply::Wallet { user: 1, balance: Cents(500_000 - 1_200_00 - 20), fee: Cents(20), credit_in_flight: false });
    let t = view::totals(w.store(SHARD));
    assert_eq!((t.withdrawals, t.fees), (Cents(1_200_00), Cents(20)));
}

#[test]
fn best_luck_is_the_largest_share_earliest_on_ties_shown_once_fully_grabbed() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    for u in 2..5 {
        w.open(SHARD, u, 0);
    }
    let p = w.send(SHARD, 1, PacketKind::Fixed { per_share: Cents(10), count: 3 });
    w.grab(SHARD, p, 2, SHARD);
    w.grab(SHARD, p, 3, SHARD);
    assert_eq!(view::packet(w.store(SHARD), p).unwrap().best_luck, None);
    w.grab(SHARD, p, 4, SHARD);
    let v = view::packet(w.store(SHARD), p).unwrap();
    assert_eq!(v.best_luck.unwrap().grabber, 2, "ties go to the earlier grab");
}

// ------------------------------------------------------------------ statistics

#[test]
fn the_mean_lucky_share_at_every_grab_position_is_close_to_total_over_count() {
    const PACKETS: u64 = 20_000;
    const TOTAL: u64 = 100_00;
    const COUNT: u32 = 10;
    let mut sums = [0u64; COUNT as usize];
    for seed in 0..PACKETS {
        let seed = split::fnv1a(&[&seed.to_be_bytes()]);
        let mut r = TOTAL;
        for i in 0..COUNT {
            let s = split::share(seed, i, r, COUNT - i);
            sums[i as usize] += s;
            r -= s;
        }
        assert_eq!(r, 0);
    }
    let expected = (TOTAL / COUNT as u64) as f64;
    for (i, s) in sums.iter().enumerate() {
        let mean = *s as f64 / PACKETS as f64;
        assert!((mean - expected).abs() / expected < 0.03, "position {i}: mean {mean:.1} vs {expected}");
    }
}

#[test]
fn the_split_through_the_ledger_matches_the_statistics_too() {
    let mut w = world();
    w.config.daily_limit_normal = Cents(u64::MAX / 4);
    w.open(SHARD, 1, 5_000_000);
    let grabbers: Vec<UserId> = (100..110).collect();
    for g in &grabbers {
        w.open(SHARD, *g, 0);
    }
    let mut sums = [0u64; 10];
    for _ in 0..500 {
        let p = w.send(SHARD, 1, lucky(100_00, 10));
        for (i, g) in grabbers.iter().enumerate() {
            let Reply::Grabbed { amount, index, .. } = w.grab(SHARD, p, *g, SHARD).reply else { panic!() };
            assert_eq!(index as usize, i);
            sums[i] += amount.0;
        }
    }
    for s in sums {
        let mean = s as f64 / 500.0;
        assert!((mean - 1000.0).abs() < 120.0, "mean {mean}");
    }
    assert!(view::audit(w.store(SHARD)).ok);
}

// ------------------------------------------------------------------ properties

#[derive(Debug, Clone)]
enum Op {
    Open(u8),
    TopUp(u8, u64),
    Withdraw(u8, u64, bool),
    Transfer(u8, u8, bool, u64),
    Send(u8, u8, u64, u32),
    Grab(u8, u8, bool, bool),
    Credit(u8, u64),
    Deliver(u64),
    Expire(u8),
    Advance(u64),
    Replay(u16),
    Reuse(u16),
    Freeze(u8, bool),
    SetPin(u8),
    /// A spend (0 withdraw, 1 transfer, 2 send) with a PIN the leader found wrong.
    WrongPin(u8, u8),
    /// The notifier acks all but the last `k` challenge notifications.
    Ack(u64),
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1u64..20_000, 1 => Just(0u64), 1 => 1u64..50, 1 => Just(u64::MAX), 1 => Just(u64::MAX / 2)]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1u32..12, 1 => 0u32..120]
}

fn packet_index() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..4, 1 => 0u8..12]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..8).prop_map(Op::Open),
        3 => (0u8..8, amount()).prop_map(|(u, a)| Op::TopUp(u, a)),
        1 => (0u8..8, amount(), any::<bool>()).prop_map(|(u, a, d)| Op::Withdraw(u, a, d)),
        2 => (0u8..8, 0u8..8, any::<bool>(), amount()).prop_map(|(f, t, x, a)| Op::Transfer(f, t, x, a)),
        4 => (0u8..8, 0u8..4, amount(), count()).prop_map(|(u, k, a, c)| Op::Send(u, k, a, c)),
        8 => (packet_index(), 0u8..8, any::<bool>(), any::<bool>()).prop_map(|(p, g, x, pw)| Op::Grab(p, g, x, pw)),
        1 => (1u8..5, 0u64..3).prop_map(|(n, skip)| Op::Credit(n, skip)),
        1 => (0u64..5).prop_map(Op::Deliver),
        2 => packet_index().prop_map(Op::Expire),
        2 => prop_oneof![0u64..1000, 0u64..30 * 3600 * 1000].prop_map(Op::Advance),
        1 => any::<u16>().prop_map(Op::Replay),
        1 => any::<u16>().prop_map(Op::Reuse),
        1 => (0u8..8, any::<bool>()).prop_map(|(u, f)| Op::Freeze(u, f)),
        1 => (0u8..8).prop_map(Op::SetPin),
        1 => (0u8..8, 0u8..3).prop_map(|(u, k)| Op::WrongPin(u, k)),
        1 => (0u64..3).prop_map(Op::Ack),
    ]
}

/// Turns ops into concrete requests against the evolving state of `w` (packets sent so far,
/// the simulated source shard's credit sequence), applying each and checking the properties.
fn run_ops(ops: &[Op]) -> (World, Vec<Request>) {
    let mut w = world();
    w.config = property_config();
    let mut packets: Vec<PacketId> = vec![];
    let mut log: Vec<(Request, Outcome)> = vec![];
    let mut credit_seq = 0u64;
    let user = |u: u8| 1 + u as u64;
    for op in ops {
        let cmd = match op.clone() {
            Op::Open(u) => Command::OpenAccount { user: user(u), device: "phone".into() },
            Op::TopUp(u, a) => Command::TopUp { user: user(u), amount: Cents(a) },
            Op::Withdraw(u, a, known) => Command::Withdraw {
                user: user(u),
                amount: Cents(a),
                device: if known { "phone" } else { "other" }.into(),
                verification: None,
                pin: PinCheck::Verified,
            },
            Op::Transfer(f, t, cross, a) => Command::Transfer {
                from: user(f),
                to: user(t),
                to_shard: if cross { OTHER } else { SHARD },
                amount: Cents(a),
                device: "phone".into(),
                verification: None,
                pin: PinCheck::Verified,
            },
            Op::Send(u, k, a, c) => {
                let kind = match k {
                    0 => PacketKind::Lucky { total: Cents(a), count: c },
                    1 => PacketKind::Fixed { per_share: Cents(a / 100), count: c },
                    2 => PacketKind::Exclusive { amount: Cents(a), recipient: user((u + 1) % 8), recipient_shard: SHARD },
                    _ => PacketKind::Password { total: Cents(a), count: c, phrase_hash: phrase_hash(KEY, "kw") },
                };
                Command::SendPacket {
                    key: KEY,
                    sender: user(u),
                    kind,
                    device: "phone".into(),
                    verification: None,
                    greeting: "hi".into(),
                    pin: PinCheck::Verified,
                }
            }
            Op::Grab(p, g, cross, pw) => {
                let packet = packets.get(p as usize).copied().unwrap_or(PacketId::new(SHARD, 1_000 + p as u64));
                Command::Grab {
                    key: KEY,
                    packet,
                    grabber: user(g),
                    grabber_shard: if cross { OTHER } else { SHARD },
                    phrase: pw.then(|| phrase_hash(KEY, "kw")),
                }
            }
            Op::Credit(n, skip) => {
                let start = credit_seq.saturating_sub(1) + 1 + skip.saturating_sub(1) * 2;
                let entries: Vec<CreditEntry> = (0..n as u64)
                    .map(|i| CreditEntry {
                        seq: start + i,
                        user: user((i % 8) as u8),
                        amount: Cents(1 + i * 3),
                        origin: Origin::Grab { packet: PacketId::new(OTHER, 1) },
                        bundle: None,
                    })
                    .collect();
                Command::Credit { source: OTHER, entries }
            }
            Op::Deliver(k) => {
                let sent = view::sent(w.store(SHARD)).into_iter().find(|(d, _)| *d == OTHER).map(|(_, p)| p.seq).unwrap_or(0);
                Command::MarkDelivered { dest: OTHER, up_to_seq: sent.saturating_sub(k) }
            }
            Op::Expire(p) => Command::ExpirePacket { packet: packets.get(p as usize).copied().unwrap_or(PacketId::new(SHARD, 999)) },
            Op::Advance(ms) => {
                w.now += ms;
                continue;
            }
            Op::Freeze(u, f) => Command::SetRisk { user: user(u), frozen: f, grade: RiskGrade::Normal },
            Op::SetPin(u) => set_pin(user(u)),
            Op::WrongPin(u, k) => {
                let (device, verification, pin) = ("phone".to_string(), None, PinCheck::Wrong);
                match k {
                    0 => Command::Withdraw { user: user(u), amount: Cents(100), device, verification, pin },
                    1 => Command::Transfer {
                        from: user(u),
                        to: user((u + 1) % 8),
                        to_shard: SHARD,
                        amount: Cents(100),
                        device,
                        verification,
                        pin,
                    },
                    _ => Command::SendPacket {
                        key: KEY,
                        sender: user(u),
                        kind: lucky(100, 2),
                        device,
                        verification,
                        greeting: String::new(),
                        pin,
                    },
                }
            }
            Op::Ack(k) => {
                let issued = view::totals(w.store(SHARD)).next_notification.saturating_sub(1);
                Command::AckNotifications { up_to_seq: issued.saturating_sub(k) }
            }
            Op::Replay(k) | Op::Reuse(k) => {
                if log.is_empty() {
                    continue;
                }
                let (req, first) = log[k as usize % log.len()].clone();
                if req.cmd.is_system() {
                    continue;
                }
                let before = w.store(SHARD).clone();
                let actor = req.cmd.actor().expect("non-system commands have an actor");
                let stored: Option<state::DedupEntry> =
                    w.store(SHARD).get(&keys::dedup(actor, &req.id)).map(|b| bincode::deserialize(&b).unwrap());
                let remembered = stored.is_some();
                let mut replay = Request { id: req.id, time_ms: w.now, cmd: req.cmd.clone() };
                let reuse = matches!(op, Op::Reuse(_));
                if reuse {
                    // Same actor, other payload: ids are scoped by the actor, so only this is a reuse.
                    replay.cmd = Command::TopUp { user: actor, amount: Cents(424242 + w.next_id) };
                    w.next_id += 1;
                    if replay.cmd == req.cmd {
                        continue;
                    }
                }
                let o = w.apply(SHARD, &replay);
                if let Some(d) = &stored {
                    let fp = split::fnv1a(&[&bincode::serialize(&replay.cmd.for_fingerprint()).unwrap()]);
                    if d.fingerprint == fp {
                        assert_eq!(&o, &d.outcome, "a replay returns the first outcome");
                    } else {
                        assert_eq!(o.code, Code::RequestIdReused);
                    }
                }
                let _ = first;
                // Only the clock may have moved.
                let mut after = w.store(SHARD).clone();
                let mut b = before;
                after.map.remove(&keys::totals());
                b.map.remove(&keys::totals());
                if remembered {
                    assert_eq!(after, b, "a replay or reuse changes no state");
                } else {
                    // Forgotten: only after its window closed, and then refused, never re-run.
                    assert_eq!(o.code, Code::RequestExpired, "a forgotten id is past its window");
                    assert_eq!(after, b, "a late retry changes no state");
                }
                log.push((replay, o));
                continue;
            }
        };
        // Wallets whose owner opens the app next and sets a PIN, as it asks: one just opened on
        // the phone, or one an incoming credit opened.
        let pin_for: Vec<UserId> = match &cmd {
            Command::OpenAccount { user, .. } => vec![*user],
            Command::Credit { entries, .. } => entries.iter().map(|e| e.user).collect(),
            _ => vec![],
        };
        if let Command::Credit { entries, .. } = &cmd {
            // Track what the destination has taken, as the real relay would.
            let o_cmd = cmd.clone();
            let req = Request { id: w.fresh_id(), time_ms: w.now, cmd: o_cmd };
            let o = w.apply(SHARD, &req);
            if o.is_ok() {
                credit_seq = credit_seq.max(entries.last().unwrap().seq);
            }
            log.push((req, o));
        } else {
            let req = Request { id: w.fresh_id(), time_ms: w.now, cmd };
            let o = w.apply(SHARD, &req);
            if let Reply::Sent { packet, .. } = o.reply {
                packets.push(packet);
            }
            log.push((req, o));
        }
        for u in pin_for {
            if view::pin_state(w.store(SHARD), u).is_some_and(|p| p.pin.is_none()) {
                check_invariants(&w);
                let req = Request { id: w.fresh_id(), time_ms: w.now, cmd: set_pin(u) };
                let o = w.apply(SHARD, &req);
                assert!(o.is_ok());
                log.push((req, o));
            }
        }
        check_invariants(&w);
    }
    (w, log.into_iter().map(|(r, _)| r).collect())
}

fn check_invariants(w: &World) {
    let a = view::audit(w.store(SHARD));
    assert!(a.ok, "audit disagrees with running totals: {a:?}");
    assert!(a.totals.identity_holds());
    // Every packet: claims + remaining + refund = total; shares ≥ 1 and within the bound.
    let (s, e) = keys::packets_range();
    for (_, v) in w.store(SHARD).scan(&s, &e, usize::MAX) {
        let p: Packet = bincode::deserialize(&v).unwrap();
        let pv = view::packet(w.store(SHARD), p.id).unwrap();
        let claimed: u64 = pv.claims.iter().map(|c| c.amount.0).sum();
        assert_eq!(claimed + p.remaining.0 + p.refunded.map(|c| c.0).unwrap_or(0), p.total.0, "packet {p:?}");
        let mut left = p.total.0;
        for (i, c) in pv.claims.iter().enumerate() {
            assert_eq!(c.index as usize, i);
            assert!(c.amount.0 >= 1, "every share at least one cent");
            if matches!(p.kind, PacketKind::Lucky { .. } | PacketKind::Password { .. }) {
                assert!(c.amount.0 <= split::bound(left, p.count - i as u32), "share above the double-average bound");
            }
            left -= c.amount.0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_conserve_money_and_replays_change_nothing(ops in prop::collection::vec(op(), 1..120)) {
        run_ops(&ops);
    }

    #[test]
    fn applying_in_batches_gives_the_same_bytes_as_one_at_a_time(ops in prop::collection::vec(op(), 1..80), cuts in prop::collection::vec(1usize..6, 1..40)) {
        let (one_by_one, requests) = run_ops(&ops);
        // A second replica applies the same log in batches, one ledger context per batch.
        let config = property_config();
        let mut store = MemStore::default();
        let mut i = 0;
        let mut c = 0;
        while i < requests.len() {
            let n = cuts[c % cuts.len()].min(requests.len() - i);
            let mut l = Ledger::new(SHARD, &config, &store);
            for r in &requests[i..i + n] {
                l.apply(r);
            }
            let w = l.into_writes();
            store.apply(w);
            i += n;
            c += 1;
        }
        prop_assert_eq!(&store.map, &one_by_one.store(SHARD).map, "replicas diverged");
    }
}

#[test]
fn the_random_workload_exercises_successful_sends_grabs_credits_and_expiries() {
    // Guards the property tests against a generator that only produces rejections.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut codes = std::collections::BTreeMap::<&'static str, u32>::new();
    // 500 sequences: with PIN and notification ops in the mix, a successful expiry (a send, a
    // day passing, then the sweep) is rarer per sequence than before.
    for _ in 0..500 {
        let ops = prop::collection::vec(op(), 100..120).new_tree(&mut runner).unwrap().current();
        let (w, reqs) = run_ops(&ops);
        let _ = w;
        // Re-run to collect outcomes by command kind.
        let mut w2 = world();
        for r in &reqs {
            let o = w2.apply(SHARD, r);
            if o.is_ok() {
                let name = match r.cmd {
                    Command::SendPacket { .. } => "send",
                    Command::Grab { .. } => "grab",
                    Command::Credit { .. } => "credit",
                    Command::ExpirePacket { .. } => "expire",
                    Command::Transfer { .. } => "transfer",
                    Command::MarkDelivered { .. } => "deliver",
                    _ => "other",
                };
                *codes.entry(name).or_default() += 1;
            }
        }
    }
    for k in ["send", "grab", "credit", "expire", "transfer", "deliver"] {
        assert!(codes.get(k).copied().unwrap_or(0) > 10, "too few successful {k}: {codes:?}");
        println!("{k}: {}", codes[k]);
    }
}

#[test]
fn the_leaders_fast_grab_refusal_agrees_with_the_ledger_and_never_refuses_a_replay() {
    let mut w = world();
    w.open(SHARD, 1, 1000);
    w.open(SHARD, 2, 0);
    w.open(SHARD, 3, 0);
    let p = w.send(SHARD, 1, lucky(200, 2));
    let first = Request {
        id: w.fresh_id(),
        time_ms: w.now,
        cmd: Command::Grab { key: KEY, packet: p, grabber: 2, grabber_shard: SHARD, phrase: None },
    };
    assert_eq!(view::grab_refusal(w.store(SHARD), &first.id, p, KEY, 2, || w.now), None, "an open packet goes to Raft");
    let granted = w.apply(SHARD, &first);
    assert!(granted.is_ok());
    // A replay of the same request id is never refused: it must answer the first outcome.
    assert_eq!(view::grab_refusal(w.store(SHARD), &first.id, p, KEY, 2, || w.now), None);
    assert_eq!(w.apply(SHARD, &first), granted);
    // A second grab by the same user, with a new id: refused as the ledger would.
    let again = w.fresh_id();
    assert_eq!(view::grab_refusal(w.store(SHARD), &again, p, KEY, 2, || w.now), Some(Code::AlreadyGrabbed));
    assert_eq!(w.grab(SHARD, p, 2, SHARD).code, Code::AlreadyGrabbed);
    assert!(w.grab(SHARD, p, 3, SHARD).is_ok());
    let late = w.fresh_id();
    assert_eq!(view::grab_refusal(w.store(SHARD), &late, p, KEY, 1, || w.now), Some(Code::PacketExhausted));
    assert_eq!(w.grab(SHARD, p, 1, SHARD).code, Code::PacketExhausted);
    w.now += w.config.packet_ttl_ms;
    assert_eq!(view::grab_refusal(w.store(SHARD), &late, p, KEY, 1, || w.now), Some(Code::PacketExpired));
    assert_eq!(w.grab(SHARD, p, 1, SHARD).code, Code::PacketExpired);
    assert_eq!(view::grab_refusal(w.store(SHARD), &late, PacketId(p.0 + 1), KEY, 1, || w.now), None, "unknown packets go to the ledger");
}

/// A leader whose clock leapt two days cannot move ledger time two days: one command moves it
/// by at most `max_stamp_step_ms`. So a request id from a minute ago is still remembered, and a
/// packet with a day to live is still open. Without the bound, the leap forgot the id (a retry
/// paid twice) and expired the packet.
#[test]
fn a_stamp_two_days_ahead_moves_ledger_time_one_step_and_forgets_no_request_id() {
    let mut w = world();
    w.config = LedgerConfig::default();
    w.open(SHARD, 1, 10_00);
    w.open(SHARD, 2, 0);
    let id = w.fresh_id();
    let topup = Command::TopUp { user: 1, amount: Cents(5_00) };
    assert_eq!(w.apply(SHARD, &Request { id, time_ms: w.now, cmd: topup.clone() }).code, Code::Ok);
    let packet = w.send(SHARD, 1, lucky(3_00, 2));
    // The leap: two days ahead on the leader, then clients' traffic (ids issued by their own,
    // right clocks) stamped by the leader's.
    w.now += 2 * 24 * 3600 * 1000;
    for n in 0..10u8 {
        let id = RequestId::new(T0 + n as u64, [0xcd; 10]);
        assert_eq!(w.apply(SHARD, &Request { id, time_ms: w.now, cmd: Command::TopUp { user: 2, amount: Cents(1) } }).code, Code::Ok);
    }
    let t = view::totals(w.store(SHARD)).last_time_ms;
    assert!(t <= T0 + 11 * 60_000, "ledger time moved {} ms, at most a step per command", t - T0);
    let again = w.apply(SHARD, &Request { id, time_ms: w.now, cmd: topup });
    assert_eq!(again.code, Code::Ok);
    assert_eq!(w.cents(SHARD, 1), 15_00 - 3_00, "the retry paid once");
    let grab = Command::Grab { key: KEY, packet, grabber: 2, grabber_shard: SHARD, phrase: None };
    let grab = Request { id: RequestId::new(T0 + 60_000, [0xce; 10]), time_ms: w.now, cmd: grab };
    assert_eq!(w.apply(SHARD, &grab).code, Code::Ok, "the packet is still open");
}

// ------------------------------------------------------------------ archive

fn hot_rows(w: &World, packet: PacketId) -> usize {
    let (a, b) = keys::claims_of(packet);
    let claims = w.store(SHARD).scan(&a, &b, 1000).len();
    let markers = w.store(SHARD).map.keys().filter(|k| k[0] == b'g' && k[1..9] == packet.0.to_be_bytes()).count();
    claims + markers + w.store(SHARD).get(&keys::packet(packet)).map_or(0, |_| 1)
}

/// A settled packet stays hot for `packet_retention_ms`, then moves to one archive record: its
/// packet, claim and grab-marker rows are deleted, and the statement view finds it unchanged.
#[test]
fn a_settled_packet_moves_to_the_archive_after_the_retention_and_reads_the_same() {
    let mut w = world();
    for u in 1..=4 {
        w.open(SHARD, u, 100_00);
    }
    let p = w.send(SHARD, 1, lucky(3_00, 3));
    for g in 2..=4 {
        assert!(w.grab(SHARD, p, g, SHARD).is_ok());
    }
    let before = view::packet(w.store(SHARD), p).expect("hot");
    assert_eq!(hot_rows(&w, p), 1 + 3 + 3);
    w.now += w.config.packet_retention_ms - 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert_eq!(hot_rows(&w, p), 7, "still hot within the retention");
    w.now += 2;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert_eq!(hot_rows(&w, p), 0, "every hot row is gone");
    assert_eq!(view::packet(w.store(SHARD), p), Some(before), "statements still find it, claims and best luck included");
    assert_eq!(view::totals(w.store(SHARD)).archived_packets, 1);
    assert!(view::audit(w.store(SHARD)).ok);
}

/// A late grab of an archived packet gets the answer it would have got while hot (the leader's
/// fast path too), and an expiry of it moves nothing.
#[test]
fn late_grabs_and_expiries_of_an_archived_packet_answer_as_before_and_move_nothing() {
    let mut w = world();
    for u in 1..=4 {
        w.open(SHARD, u, 100_00);
    }
    let full = w.send(SHARD, 1, lucky(2_00, 2));
    assert!(w.grab(SHARD, full, 2, SHARD).is_ok() && w.grab(SHARD, full, 3, SHARD).is_ok());
    let refunded = w.send(SHARD, 1, lucky(2_00, 2));
    assert!(w.grab(SHARD, refunded, 2, SHARD).is_ok());
    w.now += w.config.packet_ttl_ms;
    assert!(w.run(SHARD, Command::ExpirePacket { packet: refunded }).is_ok());
    let cases = [
        (full, 2, Code::AlreadyGrabbed),
        (full, 4, Code::PacketExpired),
        (refunded, 2, Code::AlreadyGrabbed),
        (refunded, 4, Code::PacketExpired),
    ];
    let hot: Vec<Code> = cases.iter().map(|(p, g, _)| w.grab(SHARD, *p, *g, SHARD).code).collect();
    w.now += w.config.packet_retention_ms + 1;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert_eq!(view::totals(w.store(SHARD)).archived_packets, 2);
    let balances: Vec<u64> = (1..=4).map(|u| w.cents(SHARD, u)).collect();
    for (i, (p, g, want)) in cases.iter().enumerate() {
        assert_eq!(hot[i], *want);
        let id = w.fresh_id();
        assert_eq!(view::grab_refusal(w.store(SHARD), &id, *p, KEY, *g, || w.now), Some(*want), "fast path, case {i}");
        assert_eq!(w.grab(SHARD, *p, *g, SHARD).code, *want, "ledger, case {i}");
    }
    assert_eq!(w.run(SHARD, Command::ExpirePacket { packet: refunded }).reply, Reply::Expired { refunded: Cents(0) });
    assert_eq!((1..=4).map(|u| w.cents(SHARD, u)).collect::<Vec<_>>(), balances, "nothing moved");
    assert!(view::audit(w.store(SHARD)).ok);
}

/// An exhausted packet archived before its expiry still answers PACKET_EXHAUSTED, like a hot one.
#[test]
fn an_exhausted_packet_archived_before_its_expiry_answers_packet_exhausted() {
    let mut w = world();
    w.config.packet_retention_ms = 1_000;
    for u in 1..=3 {
        w.open(SHARD, u, 100_00);
    }
    let p = w.send(SHARD, 1, lucky(1_00, 1));
    assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
    w.now += 2_000;
    w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    assert!(w.store(SHARD).get(&keys::archived(p)).is_some());
    assert_eq!(w.grab(SHARD, p, 3, SHARD).code, Code::PacketExhausted);
}

/// Archiving costs each command a bounded amount: `archive_per_apply` packets per command, and
/// no scan at all while nothing is due.
#[test]
fn archiving_is_bounded_per_command_and_catches_up() {
    let mut w = world();
    for u in 1..=2 {
        w.open(SHARD, u, 100_00);
    }
    let packets: Vec<PacketId> = (0..7).map(|_| w.send(SHARD, 1, lucky(1_00, 1))).collect();
    for p in &packets {
        assert!(w.grab(SHARD, *p, 2, SHARD).is_ok());
    }
    w.now += w.config.packet_retention_ms + 1;
    let per = w.config.archive_per_apply as u64;
    for n in 1..=4u64 {
        w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
        assert_eq!(view::totals(w.store(SHARD)).archived_packets, (n * per).min(7));
    }
    assert!(view::audit(w.store(SHARD)).ok);
}

// ------------------------------------------------------------------ history views

/// Paging a statement with the cursor reads every kept entry exactly once, newest first.
#[test]
fn statement_pages_read_the_whole_kept_history_once_newest_first() {
    let mut w = world();
    w.open(SHARD, 1, 0);
    for _ in 0..137 {
        w.run(SHARD, Command::TopUp { user: 1, amount: Cents(1) });
    }
    let a = view::account(w.store(SHARD), 1).unwrap();
    let mut seqs = vec![];
    let mut before = None;
    loop {
        let page = view::statement_page(w.store(SHARD), 1, before, 20);
        assert!(page.entries.len() <= 20);
        seqs.extend(page.entries.iter().map(|(s, _)| *s));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let want: Vec<u64> = (a.stmt_first..a.stmt_next).rev().collect();
    assert_eq!(seqs, want);
    assert_eq!(
        view::statement_page(w.store(SHARD), 1, None, 5).entries.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        view::statement(w.store(SHARD), 1, 5)
    );
}

/// 發出的紅包 / 收到的紅包: the packets a user sent and the shares they received, paged, and
/// this year's counts and sums, which start again at zero in a new China year.
#[test]
fn packets_sent_and_received_are_listed_and_counted_for_the_year() {
    let mut w = world();
    for u in 1..=3 {
        w.open(SHARD, u, 100_00);
    }
    let mut sent = vec![];
    for i in 0..5 {
        let p = w.send(SHARD, 1, lucky(1_00 + i, 2));
        sent.push(p);
        assert!(w.grab(SHARD, p, 2, SHARD).is_ok());
        for _ in 0..3 {
            w.run(SHARD, Command::TopUp { user: 2, amount: Cents(1) }); // noise between packets
        }
    }
    // A share from another shard lands through a credit.
    let remote = PacketId::new(OTHER, 7);
    let entries = vec![CreditEntry { seq: 1, user: 2, amount: Cents(33), origin: Origin::Grab { packet: remote }, bundle: None }];
    assert!(w.run(SHARD, Command::Credit { source: OTHER, entries }).is_ok());

    let listed = |w: &World, user, side, limit| {
        let (mut all, mut before) = (vec![], None);
        loop {
            let page = view::packets_page(w.store(SHARD), user, side, before, limit);
            all.extend(page.entries.into_iter().map(|(_, e)| e.kind));
            match page.next {
                Some(n) => before = Some(n),
                None => return all,
            }
        }
    };
    let want_sent: Vec<_> = sent.iter().rev().map(|p| state::EntryKind::PacketSend { packet: *p }).collect();
    assert_eq!(listed(&w, 1, view::PacketSide::Sent, 2), want_sent);
    assert!(listed(&w, 1, view::PacketSide::Received, 2).is_empty());
    let mut want_received = vec![state::EntryKind::PacketGrab { packet: remote }];
    want_received.extend(sent.iter().rev().map(|p| state::EntryKind::PacketGrab { packet: *p }));
    assert_eq!(listed(&w, 2, view::PacketSide::Received, 3), want_received);

    let y1 = view::packet_year(w.store(SHARD), 1, w.now).unwrap();
    assert_eq!((y1.sent_count, y1.sent.0), (5, 1_00 + 1_01 + 1_02 + 1_03 + 1_04));
    let y2 = view::packet_year(w.store(SHARD), 2, w.now).unwrap();
    let grabbed: u64 = sent.iter().map(|p| view::packet(w.store(SHARD), *p).unwrap().claims[0].amount.0).sum();
    assert_eq!((y2.received_count, y2.received.0), (6, grabbed + 33));
    // A year later the counters read zero, and the first packet of the new year starts them again.
    w.now += 366 * 24 * 3600 * 1000;
    assert_eq!(view::packet_year(w.store(SHARD), 1, w.now).unwrap().sent_count, 0);
    w.send(SHARD, 1, lucky(50, 1));
    let y = view::packet_year(w.store(SHARD), 1, w.now).unwrap();
    assert_eq!((y.sent_count, y.sent.0), (1, 50));
}

#[test]
fn the_china_year_turns_at_midnight_beijing_time() {
    // 2026-12-31T16:00:00Z is 2027-01-01 00:00 in Beijing.
    let new_year_utc_ms = 1_798_732_800_000u64;
    assert_eq!(config::china_year(new_year_utc_ms - 1), 2026);
    assert_eq!(config::china_year(new_year_utc_ms), 2027);
    assert_eq!(config::china_year(0), 1970);
}
