//! Ledger limits. Part of the replicated behaviour: every replica must use the same values
//! (they come from the topology file).

use crate::money::Cents;
use crate::types::RiskGrade;

#[derive(Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Packet total limit on ordinary days (200.00 yuan).
    pub max_packet_total: Cents,
    /// (month, day, limit) in China time: e.g. May 20th allows 520.00.
    pub special_days: Vec<(u32, u32, Cents)>,
    pub max_count: u32,
    pub packet_ttl_ms: u64,
    /// Largest single top-up, withdrawal or transfer.
    pub max_amount: Cents,
    /// Withdrawal fee in per mille: 1 = 0.1 %.
    pub fee_per_mille: u64,
    pub min_fee: Cents,
    /// Lifetime fee-free withdrawal per user.
    pub free_withdrawal: Cents,
    /// How long request ids are remembered, and so the request window: an id issued (its
    /// head, see `RequestId`) longer ago than this is refused as `RequestExpired`.
    pub dedup_retention_ms: u64,
    /// Furthest an id's issue time may be ahead of ledger time (a client clock running fast):
    /// beyond it, `RequestAhead`. Bounds how long an entry outlives its window.
    pub request_ahead_ms: u64,
    /// Dedup entries dropped per applied command, so GC cost per command is bounded.
    pub dedup_gc_per_apply: usize,
    pub statement_keep: u64,
    /// Sends, transfers and withdrawals from an unknown device at or above this need a challenge.
    pub challenge_threshold: Cents,
    pub challenge_ttl_ms: u64,
    pub daily_limit_normal: Cents,
    pub daily_limit_elevated: Cents,
    /// Longest device id, phrase, greeting (bytes).
    pub max_string: usize,
    /// Most entries in one Credit batch (and notifications dropped by one AckNotifications).
    pub max_credit_batch: usize,
    /// Secret shared by every replica and the notifier (from the cluster's security folder):
    /// the key of `challenge_code`. Never logged (`Debug` redacts it).
    pub challenge_key: [u8; 32],
    /// Wrong codes a challenge survives; at this many it is dead.
    pub challenge_attempts: u32,
    /// Wrong PINs in a row that lock spending.
    pub pin_max_failures: u32,
    /// How long a PIN lock lasts.
    pub pin_lock_ms: u64,
    /// Most one command's stamp may move ledger time forward. A leader whose clock leapt
    /// (and that its node did not catch) moves ledger time by this much per command, never by
    /// days at once; after an idle gap longer than this, time catches up a step per command.
    pub max_stamp_step_ms: u64,
    /// How long a settled packet (every share taken, or refunded) stays in hot state before it
    /// moves to the archive: one compact record with its claims, its grab markers deleted.
    pub packet_retention_ms: u64,
    /// Settled packets archived per applied command, so the cost per command is bounded (more
    /// than one, so the archive keeps up with the packets sent).
    pub archive_per_apply: usize,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so a new field cannot be forgotten here.
        let LedgerConfig {
            max_packet_total,
            special_days,
            max_count,
            packet_ttl_ms,
            max_amount,
            fee_per_mille,
            min_fee,
            free_withdrawal,
            dedup_retention_ms,
            request_ahead_ms,
            dedup_gc_per_apply,
            statement_keep,
            challenge_threshold,
            challenge_ttl_ms,
            daily_limit_normal,
            daily_limit_elevated,
            max_string,
            max_credit_batch,
            challenge_key: _,
            challenge_attempts,
            pin_max_failures,
            pin_lock_ms,
            max_stamp_step_ms,
            packet_retention_ms,
            archive_per_apply,
        } = self;
        f.debug_struct("LedgerConfig")
            .field("max_packet_total", max_packet_total)
            .field("special_days", special_days)
            .field("max_count", max_count)
            .field("packet_ttl_ms", packet_ttl_ms)
            .field("max_amount", max_amount)
            .field("fee_per_mille", fee_per_mille)
            .field("min_fee", min_fee)
            .field("free_withdrawal", free_withdrawal)
            .field("dedup_retention_ms", dedup_retention_ms)
            .field("request_ahead_ms", request_ahead_ms)
            .field("dedup_gc_per_apply", dedup_gc_per_apply)
            .field("statement_keep", statement_keep)
            .field("challenge_threshold", challenge_threshold)
            .field("challenge_ttl_ms", challenge_ttl_ms)
            .field("daily_limit_normal", daily_limit_normal)
            .field("daily_limit_elevated", daily_limit_elevated)
            .field("max_string", max_string)
            .field("max_credit_batch", max_credit_batch)
            .field("challenge_key", &"<redacted>")
            .field("challenge_attempts", challenge_attempts)
            .field("pin_max_failures", pin_max_failures)
            .field("pin_lock_ms", pin_lock_ms)
            .field("max_stamp_step_ms", max_stamp_step_ms)
            .field("packet_retention_ms", packet_retention_ms)
            .field("archive_per_apply", archive_per_apply)
            .finish()
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            max_packet_total: Cents(200_00),
            special_days: vec![(5, 20, Cents(520_00))],
            max_count: 100,
            packet_ttl_ms: 24 * 3600 * 1000,
            max_amount: Cents(50_000_00),
            fee_per_mille: 1,
            min_fee: Cents(10),
            free_withdrawal: Cents(1_000_00),
            dedup_retention_ms: 24 * 3600 * 1000,
            request_ahead_ms: 10 * 60 * 1000,
            dedup_gc_per_apply: 16,
            statement_keep: 1000,
            challenge_threshold: Cents(100_00),
            challenge_ttl_ms: 5 * 60 * 1000,
            daily_limit_normal: Cents(5_000_00),
            daily_limit_elevated: Cents(1_000_00),
            max_string: 128,
            max_credit_batch: 1024,
            // All zeros only for tests: a deployment loads the real key.
            challenge_key: [0; 32],
            challenge_attempts: 3,
            pin_max_failures: 5,
            pin_lock_ms: 3 * 3600 * 1000,
            max_stamp_step_ms: 60 * 1000,
            packet_retention_ms: 3 * 24 * 3600 * 1000,
            archive_per_apply: 2,
        }
    }
}

/// Separates the fingerprint's digests from any other use of SHA-256 or of the key; bump the
/// version if the encoding below changes.
const FINGERPRINT_DOMAIN: &[u8] = b"hongbao/ledger-config-fingerprint/v1";

impl LedgerConfig {
    /// A stable 64-bit digest of every field: equal on two nodes exactly when they apply commands
    /// alike (up to SHA-256 collisions). Every Raft entry carries its proposer's, and a replica
    /// refuses to apply an entry whose fingerprint is not its own. Independent of the Rust
    /// version and the process (no `Hash`/`DefaultHasher`): fixed-width big-endian fields in a
    /// fixed order, lists length-prefixed. The challenge key enters only as its HMAC, so the
    /// fingerprint (which is logged) tells nothing about the key.
    pub fn fingerprint(&self) -> u64 {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        // Destructured so a new field cannot be left out of the fingerprint.
        let LedgerConfig {
            max_packet_total,
            special_days,
            max_count,
            packet_ttl_ms,
            max_amount,
            fee_per_mille,
            min_fee,
            free_withdrawal,
            dedup_retention_ms,
            request_ahead_ms,
            dedup_gc_per_apply,
            statement_keep,
            challenge_threshold,
            challenge_ttl_ms,
            daily_limit_normal,
            daily_limit_elevated,
            max_string,
            max_credit_batch,
            challenge_key,
            challenge_attempts,
            pin_max_failures,
            pin_lock_ms,
            max_stamp_step_ms,
            packet_retention_ms,
            archive_per_apply,
        } = self;
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        let u64s = |h: &mut Sha256, vs: &[u64]| vs.iter().for_each(|v| h.update(v.to_be_bytes()));
        u64s(&mut h, &[max_packet_total.0, special_days.len() as u64]);
        for (m, d, c) in special_days {
            u64s(&mut h, &[*m as u64, *d as u64, c.0]);
        }
        u64s(
            &mut h,
            &[
                *max_count as u64,
                *packet_ttl_ms,
                max_amount.0,
                *fee_per_mille,
                min_fee.0,
                free_withdrawal.0,
                *dedup_retention_ms,
                *dedup_gc_per_apply as u64,
                *statement_keep,
                challenge_threshold.0,
                *challenge_ttl_ms,
                daily_limit_normal.0,
                daily_limit_elevated.0,
                *max_string as u64,
                *max_credit_batch as u64,
                *challenge_attempts as u64,
                *pin_max_failures as u64,
                *pin_lock_ms,
                *max_stamp_step_ms,
                *request_ahead_ms,
                *packet_retention_ms,
                *archive_per_apply as u64,
            ],
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(challenge_key).expect("HMAC takes any key length");
        mac.update(FINGERPRINT_DOMAIN);
        h.update(mac.finalize().into_bytes());
        u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }
}

/// Days since 1970-01-01 in China time (UTC+8): the "day" of daily limits.
pub fn china_day(time_ms: u64) -> u64 {
    (time_ms + 8 * 3600 * 1000) / 86_400_000
}

/// (month, day) of a day number since 1970-01-01 (proleptic Gregorian).
pub fn month_day(days: u64) -> (u32, u32) {
    let (_, m, d) = civil(days);
    (m, d)
}

/// The year in China time (UTC+8) of a time: the year of the yearly packet totals.
pub fn china_year(time_ms: u64) -> u32 {
    civil(china_day(time_ms)).0
}

/// (year, month, day) of a day number since 1970-01-01. Past the year 9999, which no clock
/// reads, the last representable day stands in: the ledger never panics on a stamp.
fn civil(days: u64) -> (u32, u32, u32) {
    let date = i32::try_from(days)
        .ok()
        .and_then(|d| UNIX_EPOCH_JULIAN_DAY.checked_add(d))
        .and_then(|julian| time::Date::from_julian_day(julian).ok())
        .unwrap_or(time::Date::MAX);
    (date.year() as u32, u8::from(date.month()) as u32, date.day() as u32)
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

impl LedgerConfig {
    pub fn packet_limit(&self, time_ms: u64) -> Cents {
        let (m, d) = month_day(china_day(time_ms));
        self.special_days.iter().find(|(sm, sd, _)| *sm == m && *sd == d).map(|(_, _, c)| *c).unwrap_or(self.max_packet_total)
    }

    /// None: this grade may not send at all.
    pub fn daily_limit(&self, grade: RiskGrade) -> Option<Cents> {
        match grade {
            RiskGrade::Normal => Some(self.daily_limit_normal),
            RiskGrade::Elevated => Some(self.daily_limit_elevated),
            RiskGrade::High => None,
        }
    }

    /// Fee on withdrawing `amount` when `already` was withdrawn before (lifetime).
    /// 0.1 % rounded up to the cent, at least `min_fee`, on the part above the free quota.
    pub fn withdrawal_fee(&self, amount: Cents, already: Cents) -> Cents {
        let free_left = self.free_withdrawal.0.saturating_sub(already.0);
        let chargeable = amount.0.saturating_sub(free_left);
        if chargeable == 0 {
            return Cents(0);
        }
        let fee = (chargeable as u128 * self.fee_per_mille as u128).div_ceil(1000) as u64;
        Cents(fee.max(self.min_fee.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_days_and_special_day_limits() {
        assert_eq!(month_day(0), (1, 1));
        // 2026-05-20 00:30 China time = 2026-05-19 16:30 UTC.
        let t = 1_779_208_200_000u64;
        assert_eq!(month_day(china_day(t)), (5, 20));
        let c = LedgerConfig::default();
        assert_eq!(c.packet_limit(t), Cents(520_00));
        assert_eq!(c.packet_limit(t - 3600 * 1000), Cents(200_00), "May 19th 23:30 in China");
    }

    #[test]
    fn leap_days_and_far_stamps_have_calendar_dates() {
        assert_eq!(month_day(19_782), (2, 29), "2024-02-29");
        assert_eq!(month_day(19_783), (3, 1));
        assert_eq!(civil(u64::MAX), (9999, 12, 31), "a stamp past the calendar gets its last day, no panic");
    }

    #[test]
    fn debug_output_never_shows_the_challenge_key() {
        let c = LedgerConfig { challenge_key: [0xab; 32], ..LedgerConfig::default() };
        let s = format!("{c:?}");
        assert!(s.contains("<redacted>") && !s.contains("171"), "{s}");
    }

    /// Each field, changed alone, changes the fingerprint; equal configs give equal ones; the
    /// value is pinned so it cannot drift between builds (it must agree across nodes).
    #[test]
    fn the_fingerprint_changes_with_every_field_and_is_stable() {
        let base = LedgerConfig::default();
        let variants: Vec<(&str, LedgerConfig)> = vec![
            ("max_packet_total", LedgerConfig { max_packet_total: Cents(200_01), ..base.clone() }),
            ("special_days", LedgerConfig { special_days: vec![(5, 20, Cents(520_01))], ..base.clone() }),
            ("special_days (none)", LedgerConfig { special_days: vec![], ..base.clone() }),
            ("max_count", LedgerConfig { max_count: 101, ..base.clone() }),
            ("packet_ttl_ms", LedgerConfig { packet_ttl_ms: base.packet_ttl_ms + 1, ..base.clone() }),
            ("max_amount", LedgerConfig { max_amount: Cents(1), ..base.clone() }),
            ("fee_per_mille", LedgerConfig { fee_per_mille: 2, ..base.clone() }),
            ("min_fee", LedgerConfig { min_fee: Cents(11), ..base.clone() }),
            ("free_withdrawal", LedgerConfig { free_withdrawal: Cents(0), ..base.clone() }),
            ("dedup_retention_ms", LedgerConfig { dedup_retention_ms: 1, ..base.clone() }),
            ("dedup_gc_per_apply", LedgerConfig { dedup_gc_per_apply: 17, ..base.clone() }),
            ("statement_keep", LedgerConfig { statement_keep: 1001, ..base.clone() }),
            ("challenge_threshold", LedgerConfig { challenge_threshold: Cents(1), ..base.clone() }),
            ("challenge_ttl_ms", LedgerConfig { challenge_ttl_ms: 1, ..base.clone() }),
            ("daily_limit_normal", LedgerConfig { daily_limit_normal: Cents(1), ..base.clone() }),
            ("daily_limit_elevated", LedgerConfig { daily_limit_elevated: Cents(1), ..base.clone() }),
            ("max_string", LedgerConfig { max_string: 129, ..base.clone() }),
            ("max_credit_batch", LedgerConfig { max_credit_batch: 1025, ..base.clone() }),
            ("challenge_key", LedgerConfig { challenge_key: [1; 32], ..base.clone() }),
            ("challenge_attempts", LedgerConfig { challenge_attempts: 4, ..base.clone() }),
            ("pin_max_failures", LedgerConfig { pin_max_failures: 6, ..base.clone() }),
            ("pin_lock_ms", LedgerConfig { pin_lock_ms: 1, ..base.clone() }),
            ("max_stamp_step_ms", LedgerConfig { max_stamp_step_ms: 1, ..base.clone() }),
            ("request_ahead_ms", LedgerConfig { request_ahead_ms: 1, ..base.clone() }),
            ("packet_retention_ms", LedgerConfig { packet_retention_ms: 1, ..base.clone() }),
            ("archive_per_apply", LedgerConfig { archive_per_apply: 3, ..base.clone() }),
        ];
        let mut seen = std::collections::BTreeMap::new();
        seen.insert(base.fingerprint(), "default");
        for (field, c) in &variants {
            if let Some(other) = seen.insert(c.fingerprint(), field) {
                panic!("changing {field} gives the fingerprint of {other}");
            }
        }
        assert_eq!(base.fingerprint(), base.clone().fingerprint());
        // Pinned: a change here means nodes of two builds would refuse each other's entries.
        assert_eq!(format!("{:016x}", base.fingerprint()), "c5ee3fd9dbe6c89c");
    }

    #[test]
    fn withdrawal_fee_has_a_free_quota_a_minimum_and_rounds_up() {
        let c = LedgerConfig::default();
        assert_eq!(c.withdrawal_fee(Cents(500_00), Cents(0)), Cents(0));
        assert_eq!(c.withdrawal_fee(Cents(1_000_00), Cents(0)), Cents(0));
        assert_eq!(c.withdrawal_fee(Cents(1_000_01), Cents(0)), Cents(10), "minimum fee");
        assert_eq!(c.withdrawal_fee(Cents(200_00), Cents(1_000_00)), Cents(20));
        assert_eq!(c.withdrawal_fee(Cents(123_45), Cents(2_000_00)), Cents(13), "12.345 rounds up");
    }
}
