//! Money: integer cents (fen) in a newtype. Never floats; every operation checked.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Cents(pub u64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn checked_add(self, o: Cents) -> Option<Cents> {
        self.0.checked_add(o.0).map(Cents)
    }
    pub fn checked_sub(self, o: Cents) -> Option<Cents> {
        self.0.checked_sub(o.0).map(Cents)
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Cents {
    /// As yuan with two decimals: `Cents(1234)` is "12.34".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_arithmetic_is_checked_and_displays_as_yuan() {
        assert_eq!(Cents(u64::MAX).checked_add(Cents(1)), None);
        assert_eq!(Cents(0).checked_sub(Cents(1)), None);
        assert_eq!(Cents(5).checked_add(Cents(7)), Some(Cents(12)));
        assert_eq!(Cents(1234).to_string(), "12.34");
        assert_eq!(Cents(5).to_string(), "0.05");
    }
}
