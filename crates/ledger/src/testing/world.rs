//! `World`: shards 1..=n of real ledgers on `MemStore`, a hand-moved clock, unique request ids
//! and a hand-driven relay between the shards' outboxes. Tests drive it command by command and
//! check the books with `assert_books_balance`.

use super::{set_pin, KEY, T0};
use crate::{
    view, Cents, Command, Ledger, LedgerConfig, MemStore, Outcome, PacketId, PacketKind, PinCheck, Reply, Request, RequestId, ShardId,
    UserId,
};

/// Shards `1..=n`, each a ledger on its own `MemStore`, under one config and one clock.
#[derive(Debug, Clone)]
pub struct World {
    /// Shard `s`'s store at index `s - 1`.
    pub stores: Vec<MemStore>,
    pub config: LedgerConfig,
    /// The time of the next command, in ms since the epoch.
    pub now: u64,
    /// How far `run` moves the clock before each command (0: the test moves it by hand).
    pub tick_ms: u64,
    /// Whether every command is followed by a check that its shard's audit holds.
    pub audit_every_command: bool,
    /// The counter behind `fresh_id`; tests that need ids of their own may move it on.
    pub next_id: u64,
}

impl World {
    /// `shards` empty shards at `T0`, the clock moved by hand.
    pub fn new(shards: u32, config: LedgerConfig) -> World {
        World { stores: vec![MemStore::default(); shards as usize], config, now: T0, tick_ms: 0, audit_every_command: false, next_id: 0 }
    }

    /// The clock moves `ms` before every command `run` applies.
    pub fn ticking(mut self, ms: u64) -> World {
        self.tick_ms = ms;
        self
    }

    /// Every command is followed by its shard's audit, which must hold.
    pub fn audited(mut self) -> World {
        self.audit_every_command = true;
        self
    }

    pub fn store(&self, on: ShardId) -> &MemStore {
        &self.stores[on as usize - 1]
    }

    /// A request id never used before in this world, stamped with the current time.
    pub fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        let mut unique = [0; 10];
        unique[2..].copy_from_slice(&self.next_id.to_be_bytes());
        RequestId::new(self.now, unique)
    }

    /// Applies `req` on shard `on` and commits its writes, as a replica does.
    pub fn apply(&mut self, on: ShardId, req: &Request) -> Outcome {
        let store = &mut self.stores[on as usize - 1];
        let mut ledger = Ledger::new(on, &self.config, &*store);
        let outcome = ledger.apply(req);
        let writes = ledger.into_writes();
        store.apply(writes);
        if self.audit_every_command {
            assert!(view::audit(self.store(on)).ok, "shard {on} audit after {req}");
        }
        outcome
    }

    /// Runs `cmd` on shard `on` under a fresh request id.
    pub fn run(&mut self, on: ShardId, cmd: Command) -> Outcome {
        self.now += self.tick_ms;
        let id = self.fresh_id();
        self.apply(on, &Request { id, time_ms: self.now, cmd })
    }

    /// Runs `cmd` on shard `on` under the given request id (a retry, a reuse).
    pub fn run_as(&mut self, on: ShardId, id: RequestId, cmd: Command) -> Outcome {
        self.now += self.tick_ms;
        self.apply(on, &Request { id, time_ms: self.now, cmd })
    }

    pub fn code(&mut self, on: ShardId, cmd: Command) -> crate::Code {
        self.run(on, cmd).code
    }

    /// Opens `user`'s wallet on shard `on` with device "phone", sets its PIN and tops it up.
    pub fn open(&mut self, on: ShardId, user: UserId, cents: u64) {
        self.open_without_pin(on, user, 0);
        let o = self.run(on, set_pin(user));
        assert!(o.is_ok(), "set pin of {user}: {o:?}");
        if cents > 0 {
            let o = self.run(on, Command::TopUp { user, amount: Cents(cents) });
            assert!(o.is_ok(), "top up {user}: {o:?}");
        }
    }

    /// Opens `user`'s wallet on shard `on` with device "phone" and tops it up; no PIN.
    pub fn open_without_pin(&mut self, on: ShardId, user: UserId, cents: u64) {
        let o = self.run(on, Command::OpenAccount { user, device: "phone".into() });
        assert!(o.is_ok(), "open {user}: {o:?}");
        if cents > 0 {
            let o = self.run(on, Command::TopUp { user, amount: Cents(cents) });
            assert!(o.is_ok(), "top up {user}: {o:?}");
        }
    }

    /// `user`'s balance on shard `on`, `None` without a wallet there.
    pub fn balance(&self, on: ShardId, user: UserId) -> Option<u64> {
        view::account(self.store(on), user).map(|a| a.balance.0)
    }

    /// `user`'s balance on shard `on`, 0 without a wallet there.
    pub fn cents(&self, on: ShardId, user: UserId) -> u64 {
        self.balance(on, user).unwrap_or(0)
    }

    /// `sender` sends a packet of `kind` from "phone" with a verified PIN; it must be sent.
    pub fn send(&mut self, on: ShardId, sender: UserId, kind: PacketKind) -> PacketId {
        let o = self.run(
            on,
            Command::SendPacket {
                key: KEY,
                sender,
                kind,
                device: "phone".into(),
                verification: None,
                greeting: String::new(),
                pin: PinCheck::Verified,
            },
        );
        match o.reply {
            Reply::Sent { packet, .. } => packet,
            _ => panic!("send failed: {o:?}"),
        }
    }

    /// `grabber` (whose wallet is on `grabber_shard`) grabs `packet`, asking shard `on`.
    pub fn grab(&mut self, on: ShardId, packet: PacketId, grabber: UserId, grabber_shard: ShardId) -> Outcome {
        self.run(on, Command::Grab { key: KEY, packet, grabber, grabber_shard, phrase: None })
    }

    /// The relay's next batch `from` → `to` (at most `max` records) as the credit command the
    /// destination applies, with the last seq in it; `None` when nothing is undelivered.
    pub fn next_credit(&self, from: ShardId, to: ShardId, max: usize) -> Option<(Command, u64)> {
        let src = self.store(from);
        let batch = view::outbox(src, to, view::delivered(src, to), max);
        let last = batch.last()?.seq;
        Some((Command::Credit { source: from, entries: batch }, last))
    }

    /// One relay step `from` → `to`: deliver a batch, then mark it delivered at the source. True
    /// if it moved anything.
    pub fn relay(&mut self, from: ShardId, to: ShardId, max: usize) -> bool {
        let Some((credit, last)) = self.next_credit(from, to, max) else { return false };
        let o = self.run(to, credit);
        assert!(o.is_ok(), "credit {from}->{to}: {o:?}");
        let o = self.run(from, Command::MarkDelivered { dest: to, up_to_seq: last });
        assert!(o.is_ok(), "mark {from}->{to}: {o:?}");
        true
    }

    /// Relays between every pair of shards until every outbox is empty.
    pub fn drain(&mut self, max: usize) {
        let shards = self.stores.len() as ShardId;
        loop {
            let mut moved = false;
            for from in 1..=shards {
                for to in (1..=shards).filter(|to| *to != from) {
                    moved |= self.relay(from, to, max);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Every shard's audit holds, and the world holds exactly what came in:
    /// `Σ balances + escrow + outboxes + fees = Σ top-ups − withdrawals`, to the cent. `relay`
    /// marks what it delivered in the same step, so no credit is counted both in its outbox and
    /// at its destination.
    pub fn assert_books_balance(&self) {
        let (mut held, mut came_in) = (0u128, 0u128);
        for (i, store) in self.stores.iter().enumerate() {
            let a = view::audit(store);
            assert!(a.ok, "shard {} audit: {a:?}", i + 1);
            let t = a.totals;
            held += t.balances.0 as u128 + t.escrow.0 as u128 + t.outbox_pending.0 as u128 + t.fees.0 as u128;
            came_in += t.topups.0 as u128 - t.withdrawals.0 as u128;
        }
        assert_eq!(held, came_in, "every cent is somewhere, once");
    }
}
