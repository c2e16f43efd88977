//! Slot moves: a slot's wallets leave one shard and arrive on another, whole (balance, daily
//! limit, PIN, statement, remembered requests), while money keeps arriving for them from every
//! side. Three shards on `MemStore`, a hand-driven relay and a slot table standing in for the
//! cluster map; the property test interleaves moves, payments and relay steps at random and
//! checks that every cent is accounted for and every wallet is in exactly one place.

// Amounts are written yuan_fen (200_00 is 200.00 yuan): the grouping is the money, not a typo.
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_ledger::state::EntryKind;
use hongbao_ledger::testing::{lucky, World, KEY};
use hongbao_ledger::*;
use proptest::prelude::*;

const A: ShardId = 1;
const B: ShardId = 2;
const C: ShardId = 3;
const SLOTS: u32 = 4;

/// Three shards, each command a millisecond after the last, and the slot table.
struct Cluster {
    world: World,
    /// Slot -> shard: the map routers and nodes route by.
    owner: [ShardId; SLOTS as usize],
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

fn slot(u: UserId) -> u32 {
    (u % SLOTS as u64) as u32
}

impl Cluster {
    fn new() -> Cluster {
        let config = LedgerConfig { packet_ttl_ms: 60_000, ..LedgerConfig::default() };
        Cluster { world: World::new(3, config).ticking(1), owner: [A, B, C, A] }
    }

    fn home(&self, u: UserId) -> ShardId {
        self.owner[slot(u) as usize]
    }

    /// Opens `user`'s wallet on its home shard with `cents`.
    fn open(&mut self, user: UserId, cents: u64) {
        let on = self.home(user);
        self.world.open(on, user, cents);
    }

    /// `sender` sends a lucky packet of `cents` in `count` shares from its home shard.
    fn send_packet(&mut self, sender: UserId, cents: u64, count: u32) -> PacketId {
        let on = self.home(sender);
        self.world.send(on, sender, lucky(cents, count))
    }

    fn transfer_cmd(&self, from: UserId, to: UserId, cents: u64) -> Command {
        Command::Transfer {
            from,
            to,
            to_shard: self.home(to),
            amount: Cents(cents),
            device: "phone".into(),
            verification: None,
            pin: PinCheck::Verified,
        }
    }

    /// The mover's first steps: the destination expects the slot, the source sends it all.
    /// Returns the seq the destination must reach before it serves the slot.
    fn move_out(&mut self, s: u32, to: ShardId, page: u32) -> u64 {
        let from = self.owner[s as usize];
        assert!(self.run(to, Command::MoveSlotIn { slot: s, slots: SLOTS, from }).is_ok());
        loop {
            let o = self.run(from, Command::MoveSlotOut { slot: s, slots: SLOTS, to, max_users: page });
            let Reply::SlotOut { done, through_seq, .. } = o.reply else { panic!("{o:?}") };
            if done {
                return through_seq;
            }
        }
    }

    /// The mover's last steps: the destination serves the slot, then the map flips.
    fn finish(&mut self, s: u32, to: ShardId, through_seq: u64) -> Outcome {
        let from = self.owner[s as usize];
        let o = self.run(to, Command::FinishSlotIn { slot: s, from, through_seq });
        if o.is_ok() {
            self.owner[s as usize] = to;
        }
        o
    }

    fn move_slot(&mut self, s: u32, to: ShardId) {
        let through = self.move_out(s, to, 2);
        self.drain(64);
        assert!(self.finish(s, to, through).is_ok());
    }

    /// Where each of `users` has a wallet: exactly one shard, the one the map names.
    fn assert_one_wallet_each(&self, users: &[UserId]) {
        for u in users {
            let at: Vec<ShardId> = [A, B, C].into_iter().filter(|s| self.balance(*s, *u).is_some()).collect();
            assert_eq!(at, vec![self.home(*u)], "user {u}'s wallet");
        }
    }
}

#[test]
fn a_moved_wallet_keeps_its_balance_statement_daily_limit_pin_and_request_history() {
    let mut c = Cluster::new();
    let (x, y) = (4, 8); // slot 0, on A
    c.open(x, 500_00);
    c.open(y, 10_00);
    let paid = c.fresh_id();
    let pay = c.transfer_cmd(x, y, 120_00);
    let first = c.run_as(A, paid, pay.clone());
    assert!(first.is_ok());
    let before = view::account(c.store(A), x).unwrap();
    let stmt_before = view::statement(c.store(A), x, 100);

    c.move_slot(0, B);

    assert_eq!(c.balance(A, x), None, "the wallet left A");
    let after = view::account(c.store(B), x).unwrap();
    assert_eq!(after, before, "balance, daily count, PIN and statement numbers moved unchanged");
    assert_eq!(view::statement(c.store(B), x, 100), stmt_before);
    assert_eq!(after.sent_today, Cents(120_00), "the daily limit counts what was sent on A");
    // The retry of a payment made on A, sent to B after the move: the first outcome, no second payment.
    assert_eq!(c.run_as(B, paid, pay.clone()), first);
    assert_eq!(c.balance(B, x), Some(380_00));
    // A retry routed by a newer map (the receiver's slot moved since: another shard hint) is
    // the same request: its first outcome, not REQUEST_ID_REUSED.
    let Command::Transfer { from, to, amount, device, verification, pin, to_shard } = pay.clone() else { unreachable!() };
    assert_ne!(to_shard, c.home(y));
    let rerouted = Command::Transfer { from, to, to_shard: c.home(y), amount, device, verification, pin };
    assert_eq!(c.run_as(B, paid, rerouted), first);
    // A refuses x's commands as moved (retryable, not remembered); B serves them.
    let topup = Command::TopUp { user: x, amount: Cents(1_00) };
    let late = c.fresh_id();
    assert_eq!(c.run_as(A, late, topup.clone()).code, Code::SlotMoved);
    assert!(c.run_as(B, late, topup).is_ok(), "the refusal on A was not remembered");
    assert_eq!(c.balance(B, x), Some(381_00));
    assert_eq!(view::moved(c.store(A), x), Some((Code::SlotMoved, Some(B))));
    assert_eq!(c.run(A, Command::OpenAccount { user: 12, device: "p".into() }).code, Code::SlotMoved, "slot 0 is served on B");
    c.assert_one_wallet_each(&[x, y]);
    c.assert_books_balance();
}

#[test]
fn a_frozen_slot_refuses_its_users_until_the_destination_has_everything() {
    let mut c = Cluster::new();
    let x = 4;
    c.open(x, 50_00);
    let through = c.move_out(0, B, 1);
    let topup = Command::TopUp { user: x, amount: Cents(1_00) };
    assert_eq!(c.run(A, topup.clone()).code, Code::SlotMoved, "gone from A");
    assert_eq!(c.run(B, topup.clone()).code, Code::SlotMoving, "not served on B before it finished");
    assert_eq!(c.finish(0, B, through).code, Code::SlotMoving, "the wallet is still in A's outbox");
    assert!(c.relay(A, B, 64));
    assert!(c.finish(0, B, through).is_ok());
    assert!(c.run(B, topup).is_ok());
    assert!(c.finish(0, B, through).is_ok(), "a re-sent finish is a no-op");
    c.assert_one_wallet_each(&[x]);
    c.assert_books_balance();
}

#[test]
fn a_move_that_never_went_on_leaves_no_mark_that_blocks_the_next() {
    let mut c = Cluster::new();
    let x = 4;
    c.open(x, 50_00);
    // Two admins move slot 0 (on A) at once, to B and to C: both destinations expect it, the
    // source sends it to the first that asks, the other is refused.
    assert!(c.run(B, Command::MoveSlotIn { slot: 0, slots: SLOTS, from: A }).is_ok());
    let through = c.move_out(0, C, 4);
    let o = c.run(A, Command::MoveSlotOut { slot: 0, slots: SLOTS, to: B, max_users: 4 });
    assert_eq!(o.code, Code::InvalidArgument, "the slot is leaving for C");
    c.drain(64);
    assert!(c.finish(0, C, through).is_ok());
    // Later the slot goes from C to B, whose mark still says it comes from A.
    c.move_slot(0, B);
    assert_eq!(c.balance(B, x), Some(50_00));
    assert!(c.run(B, Command::TopUp { user: x, amount: Cents(1) }).is_ok(), "B serves the slot");
    // A slot leaving a shard (one wallet of two sent) cannot arrive there meanwhile.
    c.open(8, 1_00);
    assert!(c.run(C, Command::MoveSlotIn { slot: 0, slots: SLOTS, from: B }).is_ok());
    let o = c.run(B, Command::MoveSlotOut { slot: 0, slots: SLOTS, to: C, max_users: 1 });
    assert!(matches!(o.reply, Reply::SlotOut { exported: 1, done: false, .. }), "{o:?}");
    assert_eq!(c.run(B, Command::MoveSlotIn { slot: 0, slots: SLOTS, from: C }).code, Code::SlotMoving);
    c.assert_books_balance();
}

#[test]
fn money_for_a_moved_wallet_follows_it_exactly_once() {
    let mut c = Cluster::new();
    let (x, z, nobody) = (4, 6, 10); // x on A (slot 0), z on C (slot 2); nobody never opens (slot 2, C)
    c.open(x, 500_00);
    c.open(z, 500_00);
    // Before the move: x sends two packets on A; z sends one on C.
    let expiring = c.send_packet(x, 30_00, 3);
    let returned = c.send_packet(x, 20_00, 2);
    let zs = c.send_packet(z, 10_00, 1);
    // A grab of x's packet by a user with no wallet anywhere: C will send the share back to A.
    assert!(c.grab(returned.shard(), returned, nobody, C).is_ok());
    // A transfer from z to x routed with the old map (x on A), still in C's outbox.
    let stale = c.transfer_cmd(z, x, 7_00);
    assert!(c.run(C, stale).is_ok());

    c.move_slot(0, B);
    let x_after_move = c.balance(B, x).unwrap();

    // A grab on C by x, the grabber's shard from an old map: A is named, the money goes to B.
    assert!(c.grab(zs.shard(), zs, x, A).is_ok());
    // A transfer on C to x with the old map, after the move.
    let stale = c.transfer_cmd(z, x, 3_00);
    let Command::Transfer { to_shard, .. } = stale else { unreachable!() };
    assert_eq!(to_shard, B);
    let old_map = Command::Transfer {
        from: z,
        to: x,
        to_shard: A,
        amount: Cents(2_00),
        device: "phone".into(),
        verification: None,
        pin: PinCheck::Verified,
    };
    assert!(c.run(C, old_map).is_ok());
    c.drain(64);
    // x's packet on A expires: its refund goes to x's wallet on B.
    c.now += 61_000;
    let o = c.run(A, Command::ExpirePacket { packet: expiring });
    assert_eq!(o.reply, Reply::Expired { refunded: Cents(30_00) });
    c.drain(64);

    let x_now = c.balance(B, x).unwrap();
    assert_eq!(x_now, x_after_move + 10_00 + 2_00 + 30_00, "the grab, the old-map transfer and the refund, once each");
    let kinds: Vec<&str> = view::statement(c.store(B), x, 10).iter().map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"packet_refund") && kinds.contains(&"packet_grab") && kinds.contains(&"grab_returned"), "{kinds:?}");
    assert!(view::statement(c.store(B), x, 30)
        .iter()
        .any(|e| matches!(e.kind, EntryKind::GrabReturned { packet, grabber, .. } if packet == returned && grabber == nobody)));
    c.assert_one_wallet_each(&[x, z]);
    c.assert_books_balance();
}

#[test]
fn a_slot_moves_away_and_back_and_its_wallets_are_served_where_the_map_says() {
    let mut c = Cluster::new();
    let users: Vec<UserId> = (1..=24).collect();
    for u in &users {
        c.open(*u, 100_00 + *u);
    }
    for (s, to) in [(0, B), (0, C), (1, A), (0, A), (1, B), (3, B), (3, A)] {
        c.move_slot(s, to);
        c.assert_one_wallet_each(&users);
        c.assert_books_balance();
    }
    for u in &users {
        assert_eq!(c.balance(c.home(*u), *u), Some(100_00 + *u));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: u8,
        to: u8,
        cents: u16,
        stale: bool,
    },
    Packet {
        sender: u8,
        cents: u16,
    },
    Grab {
        packet: u8,
        grabber: u8,
        stale: bool,
    },
    Relay {
        from: u8,
        to: u8,
    },
    Expire,
    /// Moves slot `slot` to shard `to`, relaying between its steps as the other ops interleave.
    MoveStart {
        slot: u8,
        to: u8,
    },
    MoveFinish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..16u8, 0..16u8, 1..5000u16, any::<bool>()).prop_map(|(from, to, cents, stale)| Op::Transfer { from, to, cents, stale }),
        2 => (0..16u8, 2..3000u16).prop_map(|(sender, cents)| Op::Packet { sender, cents }),
        3 => (0..32u8, 0..16u8, any::<bool>()).prop_map(|(packet, grabber, stale)| Op::Grab { packet, grabber, stale }),
        4 => (0..3u8, 0..3u8).prop_map(|(from, to)| Op::Relay { from, to }),
        1 => Just(Op::Expire),
        2 => (0..SLOTS as u8, 0..3u8).prop_map(|(slot, to)| Op::MoveStart { slot, to }),
        2 => Just(Op::MoveFinish),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the interleaving of payments, grabs, expiries, relay steps and slot moves (with
    /// senders and grabbers using maps from before a move), once the relay drains: every wallet
    /// is in exactly one place, the one the map names, and the cluster holds every cent it took
    /// in, each shard's audit agreeing.
    #[test]
    fn slot_moves_under_random_traffic_lose_and_make_no_money(ops in proptest::collection::vec(op(), 1..120)) {
        let mut c = Cluster::new();
        // Users 1..=16 hold wallets; 17..20 never open one.
        let users: Vec<UserId> = (1..=16).collect();
        for u in &users {
            c.open(*u, 1_000_00);
        }
        let mut packets: Vec<PacketId> = vec![];
        // The move under way: (slot, to, through_seq).
        let mut moving: Option<(u32, ShardId, u64)> = None;
        let mut old_owner = c.owner;
        for op in ops {
            match op {
                Op::Transfer { from, to, cents, stale } => {
                    let (from, to) = (from as u64 + 1, to as u64 + 1 + (to % 5 == 4) as u64 * 4);
                    let mut cmd = c.transfer_cmd(from, to, cents as u64);
                    if stale {
                        if let Command::Transfer { to_shard, .. } = &mut cmd {
                            *to_shard = old_owner[slot(to) as usize];
                        }
                    }
                    let on = c.home(from);
                    c.run(on, cmd);
                }
                Op::Packet { sender, cents } => {
                    let sender = sender as u64 + 1;
                    let cmd = Command::SendPacket { key: KEY,
                        sender,
                        kind: PacketKind::Lucky { total: Cents(cents as u64), count: 3 },
                        device: "phone".into(),
                        verification: None,
                        greeting: String::new(),
                        pin: PinCheck::Verified,
                    };
                    let on = c.home(sender);
                    if let Reply::Sent { packet, .. } = c.run(on, cmd).reply {
                        packets.push(packet);
                    }
                }
                Op::Grab { packet, grabber, stale } => {
                    if let Some(p) = packets.get(packet as usize % packets.len().max(1)).copied() {
                        let grabber = grabber as u64 + 1 + (grabber % 4 == 3) as u64 * 4;
                        let shard = if stale { old_owner[slot(grabber) as usize] } else { c.home(grabber) };
                        c.grab(p.shard(), p, grabber, shard);
                    }
                }
                Op::Relay { from, to } => {
                    if from != to {
                        c.relay(from as ShardId + 1, to as ShardId + 1, 64);
                    }
                }
                Op::Expire => {
                    c.now += 61_000;
                    for p in &packets {
                        let o = c.run(p.shard(), Command::ExpirePacket { packet: *p });
                        prop_assert!(o.is_ok() || o.code == Code::PacketNotExpired, "{o:?}");
                    }
                }
                Op::MoveStart { slot: s, to } => {
                    let to = to as ShardId + 1;
                    if moving.is_none() && c.owner[s as usize] != to {
                        old_owner = c.owner;
                        let through = c.move_out(s as u32, to, 3);
                        moving = Some((s as u32, to, through));
                    }
                }
                Op::MoveFinish => {
                    if let Some((s, to, through)) = moving {
                        if c.finish(s, to, through).is_ok() {
                            moving = None;
                        }
                    }
                }
            }
        }
        c.drain(64);
        if let Some((s, to, through)) = moving {
            prop_assert!(c.finish(s, to, through).is_ok());
        }
        c.drain(64);
        c.assert_one_wallet_each(&users);
        c.assert_books_balance();
        for s in [A, B, C] {
            prop_assert_eq!(view::totals(c.store(s)).outbox_pending, Cents(0), "shard {} drained", s);
        }
    }
}

/// A user remembering more requests than one move carries stops the page that meets it with
/// MOVE_TOO_LARGE (not a money code), and that page changes nothing: no wallet leaves, the slot
/// is not frozen, the books balance.
#[test]
fn a_user_with_too_many_remembered_requests_stops_the_move_with_move_too_large_and_nothing_leaves() {
    let mut c = Cluster::new();
    let x = 4; // slot 0, on A
    c.open(x, 1_00);
    for _ in 0..MAX_MOVED_REQUESTS {
        assert!(c.run(A, Command::TopUp { user: x, amount: Cents(1) }).is_ok());
    }
    assert!(c.run(B, Command::MoveSlotIn { slot: 0, slots: SLOTS, from: A }).is_ok());
    let o = c.run(A, Command::MoveSlotOut { slot: 0, slots: SLOTS, to: B, max_users: 8 });
    assert_eq!(o.code, Code::MoveTooLarge, "{o:?}");
    assert_eq!(c.balance(A, x), Some(1_00 + MAX_MOVED_REQUESTS as u64), "the wallet stays at home");
    assert!(view::outbox(c.store(A), B, 0, 8).is_empty(), "nothing was sent");
    assert!(c.run(A, Command::TopUp { user: x, amount: Cents(1) }).is_ok(), "the slot is not frozen");
    c.assert_books_balance();
}
