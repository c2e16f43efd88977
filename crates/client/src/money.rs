//! Yuan strings <-> integer cents, strictly: "12.34" -> 1234. No floats anywhere.

/// Why a string is not an amount in yuan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAmount {
    #[error("not an amount in yuan with at most 2 decimals: {0:?}")]
    NotYuan(String),
    #[error("amount too large: {0}")]
    TooLarge(String),
}

/// Parses "12", "12.3" or "12.34" (yuan) into cents. Rejects signs, more than two decimals,
/// and anything that would overflow.
pub fn parse_yuan(s: &str) -> Result<u64, BadAmount> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) || frac.len() > 2 || (s.contains('.') && frac.is_empty()) {
        return Err(BadAmount::NotYuan(s.to_string()));
    }
    let too_large = || BadAmount::TooLarge(s.to_string());
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let frac_cents: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().expect("digit") * 10,
        _ => frac.parse::<u64>().expect("digits"),
    };
    whole.checked_mul(100).and_then(|c| c.checked_add(frac_cents)).ok_or_else(too_large)
}

/// Formats cents as yuan with two decimals.
pub fn yuan(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Signed cents as yuan, e.g. "-1.05".
pub fn yuan_signed(delta: i64) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!("{sign}{}", yuan(delta.unsigned_abs()))
}

/// One line for people: the cluster's conservation identity and the verdict.
pub fn audit_summary(a: &hongbao_proto::v1::AuditReply) -> String {
    format!(
        "top-ups {} = balances {} + escrow {} + in flight {} + fees {} + withdrawals {}: {}",
        yuan(a.total_topups_cents),
        yuan(a.total_balances_cents),
        yuan(a.total_escrow_cents),
        yuan(a.total_in_flight_cents),
        yuan(a.total_fees_cents),
        yuan(a.total_withdrawals_cents),
        if a.balanced { "BALANCED" } else { "NOT BALANCED" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_parse_to_exact_cents() {
        assert_eq!(parse_yuan("12.34"), Ok(1234));
        assert_eq!(parse_yuan("12.3"), Ok(1230));
        assert_eq!(parse_yuan("12"), Ok(1200));
        assert_eq!(parse_yuan("0.01"), Ok(1));
        for bad in ["", "-1", "1.234", "1.", ".5", "1e3", "abc", "1.2.3", "99999999999999999999"] {
            assert!(parse_yuan(bad).is_err(), "{bad} must be rejected");
        }
        assert_eq!(yuan(1234), "12.34");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan_signed(-105), "-1.05");
    }
}
