//! The bank checker (in the spirit of Jepsen's bank test), run on a quiesced cluster:
//!
//! - every audit that answered during the run balanced, and the final one balances with nothing
//!   in flight, its top-up / withdrawal / fee totals equal to the acknowledged ones;
//! - each user's balance equals what the history says: acknowledged top-ups, withdrawals (with
//!   fees), transfers, sends, grabs and expiry refunds, each counted once;
//! - each packet: no grabber twice, no share below 1 cent, shares plus refund equal the total,
//!   and its claims are exactly the acknowledged grabs (a grab the client saw fail did not land);
//! - no operation is left with an unknown outcome;
//! - big-entries: maximum-size sends kept their strings, oversize ones were refused.

use super::history::{self, Ack, Event, Op, Outcome, Size};
use super::workload;
use hongbao_proto::v1::{AuditReply, PacketView};
use hongbao_proto::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};

pub struct Final {
    pub balances: BTreeMap<u64, u64>,
    pub packets: BTreeMap<u64, PacketView>,
    pub audit: AuditReply,
}

pub fn check(history: &[Event], during: &[AuditReply], fin: &Final) -> Vec<String> {
    let mut v = Vec::new();
    check_audits(during, &fin.audit, &mut v);
    let mut acked = Acked::replay(history, &mut v);
    check_packets(&mut acked, &fin.packets, &mut v);
    check_balances(&acked.balances, &fin.balances, &mut v);
    check_audit_totals(&acked, &fin.audit, &mut v);
    v
}

/// Every audit answered during the run balanced; the final one balances with nothing in flight.
fn check_audits(during: &[AuditReply], last: &AuditReply, v: &mut Vec<String>) {
    for (i, a) in during.iter().enumerate() {
        if !a.balanced {
            v.push(format!("audit #{i} during the run did not balance: {:?}", a.problems));
        }
    }
    if !last.balanced {
        v.push(format!("final audit did not balance: {:?}", last.problems));
    }
    if last.total_in_flight_cents != 0 {
        v.push(format!("{} cents still in flight after quiescence", last.total_in_flight_cents));
    }
}

/// What the acknowledged history says the cluster must hold.
#[derive(Default)]
struct Acked {
    /// Expected balance per user (refunds are added by `check_packets`).
    balances: BTreeMap<u64, i128>,
    topups: u64,
    withdrawals: u64,
    fees: u64,
    /// Acknowledged grabs per packet: grabber -> amount.
    grabs: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Acknowledged sends: packet -> (sender, total).
    senders: BTreeMap<u64, (u64, u64)>,
}

impl Acked {
    /// Replays every acknowledged operation once; an operation still unknown is a violation.
    fn replay(history: &[Event], v: &mut Vec<String>) -> Acked {
        let mut a = Acked::default();
        for e in history {
            match e.outcome {
                Outcome::Ok(ack) => a.apply(e.op, ack, v),
                Outcome::Fail(_) => {}
                Outcome::Unknown(code) => {
                    v.push(format!("{} {:?} (request {}) still unknown ({})", e.op.name(), e.op, hex(&e.request_id), code.as_str_name()));
                }
            }
        }
        a
    }

    fn apply(&mut self, op: Op, ack: Ack, v: &mut Vec<String>) {
        match (op, ack) {
            (Op::TopUp { user, amount }, _) => {
                *self.balances.entry(user).or_default() += amount as i128;
                self.topups += amount;
            }
            (Op::Withdraw { user, amount }, Ack::Wallet { fee }) => {
                *self.balances.entry(user).or_default() -= (amount + fee) as i128;
                self.withdrawals += amount;
                self.fees += fee;
            }
            (Op::Transfer { from, to, amount }, _) => {
                *self.balances.entry(from).or_default() -= amount as i128;
                *self.balances.entry(to).or_default() += amount as i128;
            }
            (Op::Send { sender, total, .. }, Ack::Sent { packet, .. }) => {
                *self.balances.entry(sender).or_default() -= total as i128;
                if self.senders.insert(packet, (sender, total)).is_some() {
                    v.push(format!("packet {packet} acknowledged to two sends"));
                }
            }
            (Op::Grab { packet, grabber, .. }, Ack::Grabbed { amount }) => {
                *self.balances.entry(grabber).or_default() += amount as i128;
                if let Some(prev) = self.grabs.entry(packet).or_default().insert(grabber, amount) {
                    v.push(format!("user {grabber} acknowledged two grabs of packet {packet} ({prev} and {amount} cents)"));
                }
            }
            (op, ack) => v.push(format!("{op:?} acknowledged with a reply of the wrong kind: {ack:?}")),
        }
    }
}

/// Every acknowledged packet as the cluster shows it; its refund is credited to the sender's
/// expected balance. Grabs acknowledged on a packet whose send was not are violations too.
fn check_packets(acked: &mut Acked, packets: &BTreeMap<u64, PacketView>, v: &mut Vec<String>) {
    for (&packet, &(sender, total)) in &acked.senders {
        let Some(p) = packets.get(&packet) else {
            v.push(format!("packet {packet} acknowledged but not found"));
            continue;
        };
        let grabs = acked.grabs.remove(&packet).unwrap_or_default();
        check_packet(packet, sender, total, p, &grabs, v);
        if p.refunded {
            *acked.balances.entry(sender).or_default() += p.refunded_cents as i128;
        }
    }
    for (packet, g) in &acked.grabs {
        v.push(format!("grabs {g:?} acknowledged on packet {packet}, whose send was never acknowledged"));
    }
}

/// One packet: its send, no grabber twice, no share below 1 cent, shares plus the rest equal
/// the total, fully grabbed or refunded, and its claims exactly the acknowledged grabs.
fn check_packet(packet: u64, sender: u64, total: u64, p: &PacketView, acked_grabs: &BTreeMap<u64, u64>, v: &mut Vec<String>) {
    if p.sender != sender || p.total_cents != total {
        v.push(format!("packet {packet}: sender/total {}/{} differ from the send {sender}/{total}", p.sender, p.total_cents));
    }
    let mut seen = BTreeSet::new();
    let mut claimed = 0u64;
    for c in &p.claims {
        if !seen.insert(c.grabber) {
            v.push(format!("packet {packet}: user {} grabbed twice", c.grabber));
        }
        if c.amount_cents < 1 {
            v.push(format!("packet {packet}: a share of {} cents", c.amount_cents));
        }
        claimed += c.amount_cents;
    }
    let rest = if p.refunded { p.refunded_cents } else { p.remaining_cents };
    if claimed + rest != p.total_cents {
        v.push(format!("packet {packet}: shares {claimed} + rest {rest} != total {}", p.total_cents));
    }
    if !p.refunded && p.remaining_count > 0 {
        v.push(format!("packet {packet}: neither fully grabbed nor refunded after quiescence"));
    }
    let claims: BTreeMap<u64, u64> = p.claims.iter().map(|c| (c.grabber, c.amount_cents)).collect();
    if claims != *acked_grabs {
        v.push(format!("packet {packet}: claims {claims:?} differ from acknowledged grabs {acked_grabs:?}"));
    }
}

/// Each user's balance equals what the acknowledged history says.
fn check_balances(expect: &BTreeMap<u64, i128>, balances: &BTreeMap<u64, u64>, v: &mut Vec<String>) {
    for (&user, &want) in expect {
        match balances.get(&user) {
            Some(&have) if have as i128 == want => {}
            Some(&have) => v.push(format!("user {user}: balance {have} but the acknowledged history says {want}")),
            None => v.push(format!("user {user}: balance not read")),
        }
    }
}

/// The final audit's top-up, withdrawal and fee totals equal the acknowledged ones.
fn check_audit_totals(acked: &Acked, a: &AuditReply, v: &mut Vec<String>) {
    if a.total_topups_cents != acked.topups {
        v.push(format!("audit counts {} cents of top-ups, the history acknowledges {}", a.total_topups_cents, acked.topups));
    }
    if a.total_withdrawals_cents != acked.withdrawals {
        v.push(format!("audit counts {} cents of withdrawals, the history acknowledges {}", a.total_withdrawals_cents, acked.withdrawals));
    }
    if a.total_fees_cents != acked.fees {
        v.push(format!("audit counts {} cents of fees, the history acknowledges {}", a.total_fees_cents, acked.fees));
    }
}

/// big-entries: maximum-size sends went through and kept their strings; every oversize one was
/// refused with INVALID_ARGUMENT (and so, by the checker, moved nothing).
/// Returns what it proved; pushes what it found wrong onto `v`.
pub fn big_entries_held(history: &[Event], fin: &Final, v: &mut Vec<String>) -> Option<String> {
    let (mut max_ok, mut over, mut huge) = (0, 0, 0);
    for e in history {
        let Op::Send { size, .. } = e.op else { continue };
        match size {
            Size::Normal => {}
            Size::Max => {
                if let Outcome::Ok(history::Ack::Sent { packet, .. }) = e.outcome {
                    max_ok += 1;
                    if let Some(view) = fin.packets.get(&packet) {
                        if view.greeting != workload::greeting(Size::Max) {
                            v.push(format!(
                                "packet {packet}: its {}-byte greeting came back as {} bytes",
                                workload::MAX_STRING,
                                view.greeting.len()
                            ));
                        }
                    }
                }
            }
            Size::Over | Size::Huge => {
                if size == Size::Over {
                    over += 1;
                } else {
                    huge += 1;
                }
                if e.outcome != Outcome::Fail(ErrorCode::InvalidArgument) {
                    v.push(format!("an oversize send ({size:?}) ended {:?}, not refused with INVALID_ARGUMENT", e.outcome));
                }
            }
        }
    }
    if max_ok == 0 || over == 0 {
        v.push(format!("big-entries mixed in too few: {max_ok} maximum-size sends acknowledged, {over} one byte over, {huge} of 20 KiB"));
        None
    } else {
        Some(format!(
            "{max_ok} maximum-size sends ({}-byte greeting and phrase) acknowledged, greetings intact; {over} one-byte-over and {huge} 20 KiB sends refused with INVALID_ARGUMENT",
            workload::MAX_STRING
        ))
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::super::history::Size;
    use super::*;
    use hongbao_proto::v1::Claim;
    use hongbao_proto::ErrorCode;
    use std::time::Duration;

    fn ev(op: Op, outcome: Outcome) -> Event {
        Event { request_id: vec![1; 16], op, shard: 1, invoked: Duration::ZERO, completed: Duration::ZERO, outcome, resolved: false }
    }

    fn fin(balances: &[(u64, u64)], packets: Vec<PacketView>, topups: u64) -> Final {
        Final {
            balances: balances.iter().copied().collect(),
            packets: packets.into_iter().map(|p| (p.packet_id, p)).collect(),
            audit: AuditReply { balanced: true, total_topups_cents: topups, ..Default::default() },
        }
    }

    fn history() -> Vec<Event> {
        vec![
            ev(Op::TopUp { user: 1, amount: 100 }, Outcome::Ok(Ack::Wallet { fee: 0 })),
            ev(Op::TopUp { user: 2, amount: 7 }, Outcome::Fail(ErrorCode::UnknownUser)),
            ev(Op::Send { sender: 1, total: 10, count: 2, size: Size::Normal }, Outcome::Ok(Ack::Sent { packet: 9, key: 1 })),
            ev(Op::Grab { packet: 9, key: 1, grabber: 2, phrase: false }, Outcome::Ok(Ack::Grabbed { amount: 4 })),
            ev(Op::Transfer { from: 1, to: 2, amount: 5 }, Outcome::Ok(Ack::Wallet { fee: 0 })),
        ]
    }

    fn packet(claims: Vec<(u64, u64)>, refunded: u64) -> PacketView {
        PacketView {
            packet_id: 9,
            sender: 1,
            total_cents: 10,
            count: 2,
            refunded: true,
            refunded_cents: refunded,
            claims: claims.into_iter().map(|(grabber, amount_cents)| Claim { grabber, amount_cents, ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_history_that_adds_up_passes() {
        let f = fin(&[(1, 100 - 10 + 6 - 5), (2, 4 + 5)], vec![packet(vec![(2, 4)], 6)], 100);
        assert_eq!(check(&history(), &[], &f), Vec::<String>::new());
    }

    #[test]
    fn a_lost_grab_a_doubled_transfer_and_an_unknown_outcome_are_caught() {
        // The claim is missing from the packet, user 2 got the transfer twice.
        let f = fin(&[(1, 91), (2, 10)], vec![packet(vec![], 10)], 100);
        let mut h = history();
        h.push(ev(Op::TopUp { user: 1, amount: 1 }, Outcome::Unknown(ErrorCode::Timeout)));
        let v = check(&h, &[], &f);
        assert!(v.iter().any(|x| x.contains("claims")), "{v:?}");
        assert!(v.iter().any(|x| x.contains("user 2: balance")), "{v:?}");
        assert!(v.iter().any(|x| x.contains("still unknown")), "{v:?}");
    }

    #[test]
    fn a_double_grab_a_tiny_share_and_an_unbalanced_audit_are_caught() {
        let mut p = packet(vec![(2, 4), (2, 0)], 6);
        p.claims[1].grabber = 2;
        let mut f = fin(&[(1, 91), (2, 9)], vec![p], 100);
        let during = vec![AuditReply { balanced: false, problems: vec!["x".into()], ..Default::default() }];
        f.audit.total_in_flight_cents = 3;
        let v = check(&history(), &during, &f);
        assert!(v.iter().any(|x| x.contains("grabbed twice")), "{v:?}");
        assert!(v.iter().any(|x| x.contains("a share of 0")), "{v:?}");
        assert!(v.iter().any(|x| x.contains("during the run")), "{v:?}");
        assert!(v.iter().any(|x| x.contains("in flight")), "{v:?}");
    }
}
