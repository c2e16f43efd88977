//! The bank checker (in the spirit of Jepsen's bank test), run on a quiesced cluster:
//!
//! - every audit that answered during the run balanced, and the final one balances with nothing
//!   in flight, its top-up / withdrawal / fee totals equal to the acknowledged ones;
//! - each user's balance equals what the history says: acknowledged top-ups, withdrawals (with
//!   fees), transfers, sends, grabs and expiry refunds, each counted once;
//! - each packet: no grabber twice, no share below 1 cent, shares plus refund equal the total,
//!   and its claims are exactly the acknowledged grabs (a grab the client saw fail did not land);
//! - no operation is left with an unknown outcome.

use super::history::{Ack, Event, Op, Outcome};
use hongbao_proto::v1::{AuditReply, PacketView};
use std::collections::{BTreeMap, BTreeSet};

pub struct Final {
    pub balances: BTreeMap<u64, u64>,
    pub packets: BTreeMap<u64, PacketView>,
    pub audit: AuditReply,
}

pub fn check(history: &[Event], during: &[AuditReply], fin: &Final) -> Vec<String> {
    let mut v = Vec::new();
    for (i, a) in during.iter().enumerate() {
        if !a.balanced {
            v.push(format!("audit #{i} during the run did not balance: {:?}", a.problems));
        }
    }
    if !fin.audit.balanced {
        v.push(format!("final audit did not balance: {:?}", fin.audit.problems));
    }
    if fin.audit.total_in_flight_cents != 0 {
        v.push(format!("{} cents still in flight after quiescence", fin.audit.total_in_flight_cents));
    }

    let mut expect: BTreeMap<u64, i128> = BTreeMap::new();
    let (mut topups, mut withdrawals, mut fees) = (0u64, 0u64, 0u64);
    // Acknowledged grabs per packet: grabber -> amount.
    let mut grabs: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut senders: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in history {
        let ack = match e.outcome {
            Outcome::Ok(a) => a,
            Outcome::Fail(_) => continue,
            Outcome::Unknown(code) => {
                v.push(format!("{} {:?} (request {}) still unknown ({})", e.op.name(), e.op, hex(&e.request_id), code.as_str_name()));
                continue;
            }
        };
        match (e.op, ack) {
            (Op::TopUp { user, amount }, _) => {
                *expect.entry(user).or_default() += amount as i128;
                topups += amount;
            }
            (Op::Withdraw { user, amount }, Ack::Wallet { fee }) => {
                *expect.entry(user).or_default() -= (amount + fee) as i128;
                withdrawals += amount;
                fees += fee;
            }
            (Op::Transfer { from, to, amount }, _) => {
                *expect.entry(from).or_default() -= amount as i128;
                *expect.entry(to).or_default() += amount as i128;
            }
            (Op::Send { sender, total, .. }, Ack::Sent { packet }) => {
                *expect.entry(sender).or_default() -= total as i128;
                if senders.insert(packet, (sender, total)).is_some() {
                    v.push(format!("packet {packet} acknowledged to two sends"));
                }
            }
            (Op::Grab { packet, grabber }, Ack::Grabbed { amount }) => {
                *expect.entry(grabber).or_default() += amount as i128;
                if let Some(prev) = grabs.entry(packet).or_default().insert(grabber, amount) {
                    v.push(format!("user {grabber} acknowledged two grabs of packet {packet} ({prev} and {amount} cents)"));
                }
            }
            (op, ack) => v.push(format!("{op:?} acknowledged with a reply of the wrong kind: {ack:?}")),
        }
    }

    for (&packet, &(sender, total)) in &senders {
        let Some(p) = fin.packets.get(&packet) else {
            v.push(format!("packet {packet} acknowledged but not found"));
            continue;
        };
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
        let settled = if p.refunded { claimed + p.refunded_cents } else { claimed + p.remaining_cents };
        if settled != p.total_cents {
            v.push(format!("packet {packet}: shares {claimed} + rest {} != total {}", if p.refunded { p.refunded_cents } else { p.remaining_cents }, p.total_cents));
        }
        if !p.refunded && p.remaining_count > 0 {
            v.push(format!("packet {packet}: neither fully grabbed nor refunded after quiescence"));
        }
        if p.refunded {
            *expect.entry(sender).or_default() += p.refunded_cents as i128;
        }
        let claims: BTreeMap<u64, u64> = p.claims.iter().map(|c| (c.grabber, c.amount_cents)).collect();
        let acked = grabs.remove(&packet).unwrap_or_default();
        if claims != acked {
            v.push(format!("packet {packet}: claims {claims:?} differ from acknowledged grabs {acked:?}"));
        }
    }
    for (packet, g) in grabs {
        v.push(format!("grabs {g:?} acknowledged on packet {packet}, whose send was never acknowledged"));
    }

    for (&user, &want) in &expect {
        match fin.balances.get(&user) {
            Some(&have) if have as i128 == want => {}
            Some(&have) => v.push(format!("user {user}: balance {have} but the acknowledged history says {want}")),
            None => v.push(format!("user {user}: balance not read")),
        }
    }
    let a = &fin.audit;
    if a.total_topups_cents != topups {
        v.push(format!("audit counts {} cents of top-ups, the history acknowledges {topups}", a.total_topups_cents));
    }
    if a.total_withdrawals_cents != withdrawals {
        v.push(format!("audit counts {} cents of withdrawals, the history acknowledges {withdrawals}", a.total_withdrawals_cents));
    }
    if a.total_fees_cents != fees {
        v.push(format!("audit counts {} cents of fees, the history acknowledges {fees}", a.total_fees_cents));
    }
    v
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
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
            ev(Op::Send { sender: 1, total: 10, count: 2 }, Outcome::Ok(Ack::Sent { packet: 9 })),
            ev(Op::Grab { packet: 9, grabber: 2 }, Outcome::Ok(Ack::Grabbed { amount: 4 })),
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
