//! Cheap consistency checks on acknowledged ops: every packet the bench saw sent, and every grab
//! the cluster acknowledged, must add up, and must be in the packet the cluster shows.

use hongbao_proto::v1::PacketView;
use std::collections::{HashMap, HashSet};

/// One acknowledged grab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub grabber: u64,
    pub amount: u64,
    pub index: u32,
}

#[derive(Debug, Clone)]
pub struct Tracked {
    pub total: u64,
    pub count: u32,
    pub acks: Vec<Ack>,
}

/// Acknowledged packets and grabs, up to `max_packets` packets (later ones are counted, not kept,
/// so a long run has a bounded memory).
pub struct Tracker {
    pub packets: HashMap<u64, Tracked>,
    max_packets: usize,
    pub untracked_packets: u64,
}

impl Tracker {
    pub fn new(max_packets: usize) -> Tracker {
        Tracker { packets: HashMap::new(), max_packets, untracked_packets: 0 }
    }

    pub fn add_packet(&mut self, packet: u64, total: u64, count: u32) {
        if self.packets.len() >= self.max_packets {
            self.untracked_packets += 1;
            return;
        }
        self.packets.insert(packet, Tracked { total, count, acks: Vec::new() });
    }

    pub fn add_grab(&mut self, packet: u64, ack: Ack) {
        if let Some(t) = self.packets.get_mut(&packet) {
            t.acks.push(ack);
        }
    }

    pub fn grabs(&self) -> usize {
        self.packets.values().map(|t| t.acks.len()).sum()
    }
}

/// What the acknowledgements alone must satisfy: shares never sum past the total or the count,
/// no share index and no grabber twice.
pub fn check_acks(packet: u64, t: &Tracked) -> Vec<String> {
    let mut problems = Vec::new();
    let sum: u64 = t.acks.iter().map(|a| a.amount).sum();
    if sum > t.total {
        problems.push(format!("packet {packet}: acknowledged grabs sum to {sum} > total {}", t.total));
    }
    if t.acks.len() > t.count as usize {
        problems.push(format!("packet {packet}: {} acknowledged grabs > count {}", t.acks.len(), t.count));
    }
    if t.acks.iter().any(|a| a.amount == 0) {
        problems.push(format!("packet {packet}: an acknowledged grab of 0 cents"));
    }
    let indices: HashSet<u32> = t.acks.iter().map(|a| a.index).collect();
    if indices.len() != t.acks.len() {
        problems.push(format!("packet {packet}: two acknowledged grabs share an index"));
    }
    let grabbers: HashSet<u64> = t.acks.iter().map(|a| a.grabber).collect();
    if grabbers.len() != t.acks.len() {
        problems.push(format!("packet {packet}: a grabber was acknowledged twice"));
    }
    problems
}

/// The packet as the cluster shows it against what the bench was told: claims + left + refunded
/// = total, claims + shares left = count, every acknowledged grab is one claim with the same
/// amount and index. (The cluster may hold claims the bench never heard back about: an op whose
/// answer was lost. That is not a problem.)
pub fn check_view(packet: u64, t: &Tracked, v: &PacketView) -> Vec<String> {
    let mut problems = Vec::new();
    if v.total_cents != t.total || v.count != t.count {
        problems.push(format!("packet {packet}: shows total {} count {}, sent with {} / {}", v.total_cents, v.count, t.total, t.count));
    }
    let claimed: u64 = v.claims.iter().map(|c| c.amount_cents).sum();
    if claimed + v.remaining_cents + v.refunded_cents != v.total_cents {
        problems.push(format!(
            "packet {packet}: claims {claimed} + left {} + refunded {} != total {}",
            v.remaining_cents, v.refunded_cents, v.total_cents
        ));
    }
    if v.claims.len() + v.remaining_count as usize != v.count as usize {
        problems.push(format!("packet {packet}: {} claims + {} shares left != count {}", v.claims.len(), v.remaining_count, v.count));
    }
    let by_grabber: HashMap<u64, Vec<(u64, u32)>> = v.claims.iter().fold(HashMap::new(), |mut m, c| {
        m.entry(c.grabber).or_insert_with(Vec::new).push((c.amount_cents, c.index));
        m
    });
    if by_grabber.values().any(|c| c.len() > 1) {
        problems.push(format!("packet {packet}: a grabber holds two claims"));
    }
    for a in &t.acks {
        match by_grabber.get(&a.grabber) {
            Some(c) if c.contains(&(a.amount, a.index)) => {}
            Some(c) => problems.push(format!(
                "packet {packet}: grab by {} acknowledged as {} cents (#{}), shown as {:?}",
                a.grabber, a.amount, a.index, c
            )),
            None => problems.push(format!("packet {packet}: acknowledged grab by {} ({} cents) is missing", a.grabber, a.amount)),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_proto::v1::Claim;

    fn tracked() -> Tracked {
        Tracked { total: 500, count: 3, acks: vec![Ack { grabber: 7, amount: 200, index: 0 }, Ack { grabber: 8, amount: 100, index: 1 }] }
    }

    fn view(claims: &[(u64, u64, u32)], remaining: u64, remaining_count: u32) -> PacketView {
        PacketView {
            packet_id: 1,
            total_cents: 500,
            count: 3,
            remaining_cents: remaining,
            remaining_count,
            claims: claims.iter().map(|(g, a, i)| Claim { grabber: *g, amount_cents: *a, index: *i, time_ms: 0 }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn consistent_packet_passes() {
        let t = tracked();
        assert!(check_acks(1, &t).is_empty());
        // One more claim the bench never heard about (lost answer): fine.
        assert!(check_view(1, &t, &view(&[(7, 200, 0), (8, 100, 1), (9, 150, 2)], 50, 0)).is_empty());
    }

    #[test]
    fn inconsistencies_are_reported() {
        let mut t = tracked();
        t.acks.push(Ack { grabber: 7, amount: 300, index: 1 });
        let p = check_acks(1, &t);
        assert_eq!(p.len(), 3, "{p:?}"); // sum > total, index twice, grabber twice
        let t = tracked();
        // Acknowledged grab of user 8 missing, and money does not add up.
        let p = check_view(1, &t, &view(&[(7, 200, 0)], 250, 2));
        assert_eq!(p.len(), 2, "{p:?}");
        // Amount differs from the acknowledgement.
        let p = check_view(1, &t, &view(&[(7, 200, 0), (8, 101, 1)], 199, 1));
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
