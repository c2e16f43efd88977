//! Ledger key layout: one prefix byte per table, big-endian numbers so ranges scan in order.
//!
//! | prefix | key                          | value            |
//! |--------|------------------------------|------------------|
//! | `t`    | `t`                          | Totals           |
//! | `a`    | `a user`                     | Account          |
//! | `m`    | `m user seq`                 | StatementEntry   |
//! | `p`    | `p packet`                   | Packet           |
//! | `c`    | `c packet index`             | Claim            |
//! | `g`    | `g packet grabber`           | claim index (u32)|
//! | `f`    | `f packet grabber`           | u32: wrong phrases this grabber sent (password packets) |
//! | `x`    | `x expires_ms packet`        | () expiry index  |
//! | `o`    | `o dest seq`                 | CreditEntry      |
//! | `s`    | `s dest`                     | PairState (sent) |
//! | `l`    | `l dest`                     | u64: outbox delivered up to this seq |
//! | `r`    | `r source`                   | PairState (received) |
//! | `q`    | `q actor request_id`         | DedupEntry       |
//! | `d`    | `d time_ms actor request_id` | () dedup expiry index (time: the later of apply and issue) |
//! | `h`    | `h challenge_id`             | Challenge        |
//! | `j`    | `j expires_ms challenge_id`  | () challenge expiry index |
//! | `y`    | `y settled_ms packet`        | () archive index: settled packets still hot |
//! | `k`    | `k packet`                   | ArchivedPacket (a settled packet and its claims) |
//! | `n`    | `n seq`                      | Notification (challenge outbox) |
//! | `z`    | `z region`                   | () region drained (absent: not) |
//! | `v`    | `v`                          | cluster map: version (u64 BE) then its TOML (meta shard) |
//! | `w`    | `w`                          | SlotTable: slots moving in or out, or gone |
//! | `u`    | `u user`                     | ShardId: the wallet moved there with its slot |
//!
//! Request ids are scoped by the acting user (`Command::actor`): the same 16 bytes from two
//! users are two requests, and neither can replay (read) the other's outcome.

use crate::types::{PacketId, RequestId, ShardId, UserId};

fn k(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    // Sized once: keys are built for every read and write of every command.
    let mut v = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    v.push(prefix);
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

pub fn totals() -> Vec<u8> {
    vec![b't']
}
pub fn account(u: UserId) -> Vec<u8> {
    k(b'a', &[&u.to_be_bytes()])
}
pub fn accounts_range() -> (Vec<u8>, Vec<u8>) {
    (vec![b'a'], vec![b'a' + 1])
}
pub fn statement(u: UserId, seq: u64) -> Vec<u8> {
    k(b'm', &[&u.to_be_bytes(), &seq.to_be_bytes()])
}
/// The seq of a statement key.
pub fn statement_seq(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[9..17].try_into().expect("statement key layout"))
}
pub fn packet(p: PacketId) -> Vec<u8> {
    k(b'p', &[&p.0.to_be_bytes()])
}
pub fn packets_range() -> (Vec<u8>, Vec<u8>) {
    (vec![b'p'], vec![b'p' + 1])
}
pub fn claim(p: PacketId, index: u32) -> Vec<u8> {
    k(b'c', &[&p.0.to_be_bytes(), &index.to_be_bytes()])
}
pub fn claims_of(p: PacketId) -> (Vec<u8>, Vec<u8>) {
    (k(b'c', &[&p.0.to_be_bytes()]), k(b'c', &[&(p.0 + 1).to_be_bytes()]))
}
pub fn grabbed(p: PacketId, u: UserId) -> Vec<u8> {
    k(b'g', &[&p.0.to_be_bytes(), &u.to_be_bytes()])
}
pub fn phrase_tries(p: PacketId, u: UserId) -> Vec<u8> {
    k(b'f', &[&p.0.to_be_bytes(), &u.to_be_bytes()])
}
pub fn phrase_tries_of(p: PacketId) -> (Vec<u8>, Vec<u8>) {
    (k(b'f', &[&p.0.to_be_bytes()]), k(b'f', &[&(p.0 + 1).to_be_bytes()]))
}
pub fn expiry(expires_ms: u64, p: PacketId) -> Vec<u8> {
    k(b'x', &[&expires_ms.to_be_bytes(), &p.0.to_be_bytes()])
}
/// Expiry index entries with expiry time `< until_ms`.
pub fn expiry_until(until_ms: u64) -> (Vec<u8>, Vec<u8>) {
    (vec![b'x'], k(b'x', &[&until_ms.to_be_bytes()]))
}
pub fn expiry_packet(key: &[u8]) -> PacketId {
    PacketId(u64::from_be_bytes(key[9..17].try_into().expect("expiry key layout")))
}
pub fn outbox(dest: ShardId, seq: u64) -> Vec<u8> {
    k(b'o', &[&dest.to_be_bytes(), &seq.to_be_bytes()])
}
/// Outbox records to `dest` with seq in `[from_seq, ∞)`.
pub fn outbox_from(dest: ShardId, from_seq: u64) -> (Vec<u8>, Vec<u8>) {
    let end = match dest.checked_add(1) {
        Some(next) => k(b'o', &[&next.to_be_bytes()]),
        None => vec![b'o' + 1],
    };
    (outbox(dest, from_seq), end)
}
pub fn outbox_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'o'], vec![b'o' + 1])
}
pub fn delivered(dest: ShardId) -> Vec<u8> {
    k(b'l', &[&dest.to_be_bytes()])
}
pub fn sent(dest: ShardId) -> Vec<u8> {
    k(b's', &[&dest.to_be_bytes()])
}
pub fn sent_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b's'], vec![b's' + 1])
}
pub fn received(source: ShardId) -> Vec<u8> {
    k(b'r', &[&source.to_be_bytes()])
}
pub fn received_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'r'], vec![b'r' + 1])
}
pub fn shard_of_pair_key(key: &[u8]) -> ShardId {
    u32::from_be_bytes(key[1..5].try_into().expect("pair key layout"))
}
pub fn dedup(actor: UserId, id: &RequestId) -> Vec<u8> {
    k(b'q', &[&actor.to_be_bytes(), &id.0])
}
pub fn dedup_expiry(time_ms: u64, actor: UserId, id: &RequestId) -> Vec<u8> {
    k(b'd', &[&time_ms.to_be_bytes(), &actor.to_be_bytes(), &id.0])
}
pub fn dedup_expiry_until(until_ms: u64) -> (Vec<u8>, Vec<u8>) {
    (vec![b'd'], k(b'd', &[&until_ms.to_be_bytes()]))
}
/// The whole dedup expiry index.
pub fn dedup_expiry_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'd'], vec![b'd' + 1])
}
/// The time of a time-index key (`d`, `j`, `y`: prefix, then the time as u64 BE).
pub fn index_time(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[1..9].try_into().expect("time index key layout"))
}
/// The (actor, request id) an expiry index entry points at: `dedup(actor, &id)` is its entry.
pub fn dedup_expiry_id(key: &[u8]) -> (UserId, RequestId) {
    let actor = u64::from_be_bytes(key[9..17].try_into().expect("dedup expiry key layout"));
    (actor, RequestId(key[17..33].try_into().expect("dedup expiry key layout")))
}
pub fn challenge(id: u64) -> Vec<u8> {
    k(b'h', &[&id.to_be_bytes()])
}
pub fn challenge_expiry(expires_ms: u64, id: u64) -> Vec<u8> {
    k(b'j', &[&expires_ms.to_be_bytes(), &id.to_be_bytes()])
}
pub fn challenge_expiry_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'j'], vec![b'j' + 1])
}
pub fn challenge_expiry_id(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[9..17].try_into().expect("challenge expiry key layout"))
}
pub fn settled(settled_ms: u64, p: PacketId) -> Vec<u8> {
    k(b'y', &[&settled_ms.to_be_bytes(), &p.0.to_be_bytes()])
}
pub fn settled_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'y'], vec![b'y' + 1])
}
pub fn settled_packet(key: &[u8]) -> PacketId {
    PacketId(u64::from_be_bytes(key[9..17].try_into().expect("settled key layout")))
}
pub fn archived(p: PacketId) -> Vec<u8> {
    k(b'k', &[&p.0.to_be_bytes()])
}
pub fn archived_range() -> (Vec<u8>, Vec<u8>) {
    (vec![b'k'], vec![b'k' + 1])
}
pub fn notification(seq: u64) -> Vec<u8> {
    k(b'n', &[&seq.to_be_bytes()])
}
/// Notification records with seq in `[from_seq, ∞)`.
pub fn notifications_from(from_seq: u64) -> (Vec<u8>, Vec<u8>) {
    (notification(from_seq), vec![b'n' + 1])
}
pub fn drained(region: &str) -> Vec<u8> {
    k(b'z', &[region.as_bytes()])
}
pub fn drained_all() -> (Vec<u8>, Vec<u8>) {
    (vec![b'z'], vec![b'z' + 1])
}
pub fn cluster_map() -> Vec<u8> {
    vec![b'v']
}
pub fn slot_table() -> Vec<u8> {
    vec![b'w']
}
pub fn moved(u: UserId) -> Vec<u8> {
    k(b'u', &[&u.to_be_bytes()])
}
/// Accounts with user id above `after`.
pub fn accounts_after(after: UserId) -> (Vec<u8>, Vec<u8>) {
    match after.checked_add(1) {
        Some(next) => (account(next), vec![b'a' + 1]),
        None => (vec![b'a' + 1], vec![b'a' + 1]),
    }
}
/// The user of an account key.
pub fn account_user(key: &[u8]) -> UserId {
    u64::from_be_bytes(key[1..9].try_into().expect("account key layout"))
}
/// Every statement entry of `u`.
pub fn statements_of(u: UserId) -> (Vec<u8>, Vec<u8>) {
    (k(b'm', &[&u.to_be_bytes()]), k(b'm', &[&u.to_be_bytes(), &[0xff; 9]]))
}
/// Every remembered request of `actor`.
pub fn dedup_of(actor: UserId) -> (Vec<u8>, Vec<u8>) {
    (k(b'q', &[&actor.to_be_bytes()]), k(b'q', &[&actor.to_be_bytes(), &[0xff; 17]]))
}
/// The request id of a dedup key.
pub fn dedup_request(key: &[u8]) -> RequestId {
    RequestId(key[9..25].try_into().expect("dedup key layout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_range_covers_exactly_one_destination() {
        let (a, b) = outbox_from(2, 1);
        assert!(a <= outbox(2, 1) && outbox(2, u64::MAX) < b);
        assert!(outbox(3, 0) >= b);
        assert!(outbox(1, u64::MAX) < a);
        let (a, b) = outbox_from(u32::MAX, 0);
        assert!(a <= outbox(u32::MAX, u64::MAX) && outbox(u32::MAX, u64::MAX) < b);
    }

    #[test]
    fn index_keys_round_trip() {
        let p = PacketId::new(3, 77);
        assert_eq!(expiry_packet(&expiry(123, p)), p);
        let id = RequestId([7; 16]);
        assert_eq!(dedup_expiry_id(&dedup_expiry(5, 1234, &id)), (1234, id));
        assert_eq!(index_time(&dedup_expiry(5, 1234, &id)), 5);
        assert_eq!((index_time(&settled(6, p)), settled_packet(&settled(6, p))), (6, p));
        assert_eq!((index_time(&challenge_expiry(7, 99)), challenge_expiry_id(&challenge_expiry(7, 99))), (7, 99));
        assert_ne!(dedup(1, &id), dedup(2, &id), "request ids are per user");
        assert_eq!(shard_of_pair_key(&sent(9)), 9);
    }
}
