//! Money to nobody: a cross-shard credit for a user with no account on the destination opens
//! no wallet; it goes back through the destination's outbox and lands on whoever paid, exactly
//! once however often the relay redelivers. Two shards on `MemStore`, with a hand-driven relay.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_ledger::state::EntryKind;
use hongbao_ledger::testing::{World, KEY};
use hongbao_ledger::*;
use proptest::prelude::*;

const A: ShardId = 1;
const B: ShardId = 2;
/// Never opened on shard B.
const NOBODY: UserId = 9_999;

/// Two shards, and every credit batch ever delivered, to redeliver at will.
struct Cluster {
    world: World,
    delivered: Vec<(ShardId, Command)>,
}

impl std::ops::Deref for Cluster {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

impl Cluster {
    fn new() -> Cluster {
        let config = LedgerConfig { packet_ttl_ms: 60_000, ..LedgerConfig::default() };
        Cluster { world: World::new(2, config), delivered: vec![] }
    }

    fn transfer(&mut self, on: ShardId, from: UserId, to: UserId, to_shard: ShardId, cents: u64) -> Outcome {
        let cmd = Command::Transfer {
            from,
            to,
            to_shard,
            amount: Cents(cents),
            device: "phone".into(),
            verification: None,
            pin: PinCheck::Verified,
        };
        self.run(on, cmd)
    }

    /// One relay step `from` → `to`: deliver what is undelivered (and, if asked, deliver it
    /// again before marking it delivered, as a relay does after a lost answer). True if it moved
    /// anything.
    fn relay(&mut self, from: ShardId, to: ShardId, twice: bool) -> bool {
        let Some((credit, last)) = self.next_credit(from, to, 256) else { return false };
        for _ in 0..if twice { 2 } else { 1 } {
            let o = self.run(to, credit.clone());
            assert!(o.is_ok(), "{o:?}");
        }
        self.delivered.push((to, credit));
        assert!(self.run(from, Command::MarkDelivered { dest: to, up_to_seq: last }).is_ok());
        true
    }

    /// Relays both ways until both outboxes are empty.
    fn drain(&mut self, twice: bool) {
        while self.relay(A, B, twice) | self.relay(B, A, twice) {}
    }

    /// Every batch ever delivered, again: all of them must be skipped.
    fn redeliver_everything(&mut self) {
        for (to, credit) in self.delivered.clone() {
            let o = self.run(to, credit);
            let Reply::Credited { applied, .. } = o.reply else { panic!("{o:?}") };
            assert_eq!(applied, 0, "a redelivered batch applies nothing");
        }
    }

    fn kinds(&self, on: ShardId, user: UserId) -> Vec<EntryKind> {
        let mut v: Vec<EntryKind> = view::statement(self.store(on), user, 100).into_iter().map(|e| e.kind).collect();
        v.reverse();
        v
    }
}

#[test]
fn a_credit_for_a_user_with_no_account_opens_no_wallet_and_the_owner_can_still_open_theirs() {
    let mut c = Cluster::new();
    c.open(A, 1, 1_000_00);
    assert!(c.transfer(A, 1, NOBODY, B, 300_00).is_ok());
    c.relay(A, B, false);
    assert_eq!(view::account(c.store(B), NOBODY), None, "no ghost wallet on the destination");
    assert_eq!(view::totals(c.store(B)).accounts, 0);
    // The real owner opens their account with their own device, and a spend from another device
    // above the threshold needs a challenge (an empty device would have skipped it).
    assert!(c.run(B, Command::OpenAccount { user: NOBODY, device: "own-phone".into() }).is_ok());
    assert_eq!(view::account(c.store(B), NOBODY).unwrap().device, "own-phone");
    assert_eq!(c.balance(B, NOBODY), Some(0), "the refused money is not in the new wallet");
    c.assert_books_balance();
}

#[test]
fn a_transfer_to_nobody_comes_back_to_the_sender_exactly_once_though_every_batch_is_redelivered() {
    let mut c = Cluster::new();
    c.open(A, 1, 1_000_00);
    assert!(c.transfer(A, 1, NOBODY, B, 300_00).is_ok());
    assert_eq!(c.balance(A, 1), Some(700_00));
    // Credit on B twice, then B's return to A twice.
    c.drain(true);
    assert_eq!(c.balance(A, 1), Some(1_000_00), "the sender has the money back, to the cent");
    c.redeliver_everything();
    c.drain(true);
    assert_eq!(c.balance(A, 1), Some(1_000_00), "and only once");
    assert_eq!(
        c.kinds(A, 1),
        vec![EntryKind::TopUp, EntryKind::TransferOut { to: NOBODY, to_shard: B }, EntryKind::TransferReturned { to: NOBODY, to_shard: B }]
    );
    // On B the money came in and went out again, through its outbox.
    let tb = view::totals(c.store(B));
    assert_eq!(
        (tb.credits_in, tb.credits_out_delivered, tb.balances, tb.outbox_pending),
        (Cents(300_00), Cents(300_00), Cents(0), Cents(0))
    );
    let ta = view::totals(c.store(A));
    assert_eq!((ta.credits_in, ta.credits_out_delivered, ta.balances), (Cents(300_00), Cents(300_00), Cents(1_000_00)));
    c.assert_books_balance();
}

#[test]
fn the_return_is_queued_in_the_same_command_as_the_credit_so_the_destination_identity_never_breaks() {
    let mut c = Cluster::new();
    c.open(A, 1, 1_000_00);
    c.open(B, 2, 0);
    assert!(c.transfer(A, 1, NOBODY, B, 300_00).is_ok());
    assert!(c.transfer(A, 1, 2, B, 5_00).is_ok());
    c.relay(A, B, false);
    let tb = view::totals(c.store(B));
    assert_eq!((tb.credits_in, tb.outbox_pending, tb.outbox_records, tb.balances), (Cents(305_00), Cents(300_00), 1, Cents(5_00)));
    let back = view::outbox(c.store(B), A, 0, 10);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].user, back[0].amount, back[0].origin), (NOBODY, Cents(300_00), Origin::TransferReturned { from: 1 }));
    c.assert_books_balance();
    c.drain(false);
    assert_eq!((c.balance(A, 1), c.balance(B, 2)), (Some(995_00), Some(5_00)), "only the 300.00 came back");
    c.assert_books_balance();
}

#[test]
fn a_share_grabbed_by_nobody_goes_back_to_the_packet_sender_exactly_once() {
    let mut c = Cluster::new();
    c.open(A, 1, 1_000_00);
    let o = c.run(
        A,
        Command::SendPacket {
            key: KEY,
            sender: 1,
            kind: PacketKind::Fixed { per_share: Cents(10_00), count: 3 },
            device: "phone".into(),
            verification: None,
            greeting: String::new(),
            pin: PinCheck::Verified,
        },
    );
    let Reply::Sent { packet, .. } = o.reply else { panic!("{o:?}") };
    assert!(c.run(A, Command::Grab { key: KEY, packet, grabber: NOBODY, grabber_shard: B, phrase: None }).is_ok());
    c.drain(true);
    c.redeliver_everything();
    assert_eq!(view::account(c.store(B), NOBODY), None);
    assert_eq!(c.balance(A, 1), Some(1_000_00 - 30_00 + 10_00));
    assert_eq!(c.kinds(A, 1).last(), Some(&EntryKind::GrabReturned { packet, grabber: NOBODY, grabber_shard: B }));
    // The rest expires and is refunded: the sender ends where they started.
    c.now += 61_000;
    assert!(c.run(A, Command::ExpirePacket { packet }).is_ok());
    assert_eq!(c.balance(A, 1), Some(1_000_00));
    c.assert_books_balance();
}

/// The packet settles (its one share taken by nobody) and moves to the archive before the share
/// comes back: the return still finds the sender through the archive and lands once.
#[test]
fn a_share_returned_after_its_packet_was_archived_still_reaches_the_sender_once() {
    let mut c = Cluster::new();
    c.config.packet_retention_ms = 1_000;
    c.open(A, 1, 1_000_00);
    let o = c.run(
        A,
        Command::SendPacket {
            key: KEY,
            sender: 1,
            kind: PacketKind::Fixed { per_share: Cents(10_00), count: 1 },
            device: "phone".into(),
            verification: None,
            greeting: String::new(),
            pin: PinCheck::Verified,
        },
    );
    let Reply::Sent { packet, .. } = o.reply else { panic!("{o:?}") };
    assert!(c.run(A, Command::Grab { key: KEY, packet, grabber: NOBODY, grabber_shard: B, phrase: None }).is_ok());
    // Deliver to B only: B queues the return, A has not seen it yet.
    c.relay(A, B, false);
    c.now += 2_000;
    c.open(A, 2, 0); // any command archives what is due
    assert!(c.store(A).get(&keys::packet(packet)).is_none(), "the packet left hot state");
    assert!(c.store(A).get(&keys::archived(packet)).is_some(), "into the archive");
    c.drain(true);
    c.redeliver_everything();
    assert_eq!(c.balance(A, 1), Some(1_000_00), "the share came back once");
    assert_eq!(c.kinds(A, 1).last(), Some(&EntryKind::GrabReturned { packet, grabber: NOBODY, grabber_shard: B }));
    c.assert_books_balance();
}

#[test]
fn a_return_whose_payer_is_missing_is_refused_never_bounced_and_moves_nothing() {
    let mut c = Cluster::new();
    c.open(A, 1, 100);
    let before = c.store(A).clone();
    let forged =
        |seq, origin| Command::Credit { source: B, entries: vec![CreditEntry { seq, user: 5, amount: Cents(7), origin, bundle: None }] };
    assert_eq!(c.run(A, forged(1, Origin::TransferReturned { from: 404 })).code, Code::UnknownUser);
    assert_eq!(c.run(A, forged(1, Origin::GrabReturned { packet: PacketId::new(A, 77) })).code, Code::UnknownPacket);
    assert_eq!(c.run(A, forged(1, Origin::GrabReturned { packet: PacketId::new(B, 1) })).code, Code::WrongShard);
    // Nothing moved, nothing queued back (the batch waits in the sender's outbox instead).
    let (t0, t1) = (view::totals(&before), view::totals(c.store(A)));
    assert_eq!((t1.balances, t1.credits_in, t1.outbox_records, t1.accounts), (t0.balances, t0.credits_in, t0.outbox_records, t0.accounts));
    assert!(view::received(c.store(A)).is_empty());
    assert!(view::audit(c.store(A)).ok);
}

#[derive(Debug, Clone)]
enum Step {
    /// Transfer from user index to user index (either shard, or nobody), amount.
    Transfer(u8, u8, u16),
    /// Relay A→B or B→A, once or twice.
    Relay(bool, bool),
    Redeliver,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..4, 0u8..6, 1u16..500).prop_map(|(f, t, a)| Step::Transfer(f, t, a)),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(d, t)| Step::Relay(d, t)),
        1 => Just(Step::Redeliver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random transfers between two shards, a third of them to users who never opened an
    /// account, under random relay order and redelivery: every audit holds at every step, no
    /// wallet is ever opened by money, and once drained every sender holds exactly what it sent
    /// to real users subtracted, every return landed once.
    #[test]
    fn random_transfers_to_nobody_all_come_back_exactly_once(steps in proptest::collection::vec(step(), 1..60)) {
        let mut c = Cluster::new();
        // Users 0, 1 on shard A; 2, 3 on shard B; 4 and 5 exist nowhere (one per shard).
        let users: [(UserId, ShardId); 6] = [(10, A), (11, A), (20, B), (21, B), (90, A), (91, B)];
        for (u, s) in &users[..4] {
            c.open(*s, *u, 10_000);
        }
        let mut expect: std::collections::BTreeMap<UserId, i64> = users[..4].iter().map(|(u, _)| (*u, 10_000)).collect();
        for s in steps {
            match s {
                Step::Transfer(f, t, a) => {
                    let ((from, fs), (to, ts)) = (users[f as usize], users[t as usize]);
                    let o = c.transfer(fs, from, to, ts, a as u64);
                    if o.is_ok() && expect.contains_key(&to) {
                        *expect.get_mut(&from).unwrap() -= a as i64;
                        *expect.get_mut(&to).unwrap() += a as i64;
                    }
                }
                Step::Relay(ab, twice) => {
                    let (f, t) = if ab { (A, B) } else { (B, A) };
                    c.relay(f, t, twice);
                }
                Step::Redeliver => c.redeliver_everything(),
            }
            c.assert_books_balance();
            for (u, s) in &users[4..] {
                prop_assert_eq!(c.balance(*s, *u), None);
            }
        }
        c.drain(false);
        c.redeliver_everything();
        c.assert_books_balance();
        for (u, s) in &users[..4] {
            prop_assert_eq!(c.balance(*s, *u), Some(expect[u] as u64), "user {}", u);
        }
    }
}
