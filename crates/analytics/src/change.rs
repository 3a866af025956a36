//! The one growth figure people are shown: this window against the window
//! before, the same on every page, CLI table and client.
//!
//! Trending ranks by another score ([`crate::growth`], against the mean of
//! three windows before); that is a ranking, explained where it is shown,
//! and never printed as "growth".

use std::fmt;

/// Past this ratio of increase (+1,000 %) a change reads as "×N": a
/// percentage of five digits tells a person less than a multiple.
pub const TIMES_PAST: f64 = 10.0;

/// Changes smaller than this (0.05 %) read as no change.
const FLAT_BELOW: f64 = 0.0005;

/// How a figure moved from the window before to this one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Nothing in either window, or a change below 0.05 %.
    Flat,
    /// Nothing in the window before, something in this one.
    New,
    /// (current − previous) / previous, at most [`TIMES_PAST`].
    Ratio(f64),
    /// current / previous, where the increase passed [`TIMES_PAST`].
    Times(f64),
}

impl Change {
    /// `current` against `previous` (both non-negative).
    pub fn of(current: f64, previous: f64) -> Change {
        if !(current.is_finite() && previous.is_finite()) {
            return Change::Flat;
        }
        if previous <= 0.0 {
            return if current <= 0.0 { Change::Flat } else { Change::New };
        }
        let ratio = (current - previous) / previous;
        if ratio.abs() < FLAT_BELOW {
            Change::Flat
        } else if ratio > TIMES_PAST {
            Change::Times(current / previous)
        } else {
            Change::Ratio(ratio)
        }
    }

    /// Whether the figure went up (`Some(true)`), down (`Some(false)`), or
    /// neither or cannot say (`None`).
    pub fn rising(self) -> Option<bool> {
        match self {
            Change::Flat | Change::New => None,
            Change::Ratio(r) => Some(r > 0.0),
            Change::Times(_) => Some(true),
        }
    }
}

/// `+12.5%`, `−3.0%` (a minus sign, not a hyphen), `±0%`, `new`, `×12`,
/// `×4,546`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Change::Flat => f.write_str("±0%"),
            Change::New => f.write_str("new"),
            Change::Ratio(r) => write!(f, "{}{:.1}%", if r > 0.0 { "+" } else { "−" }, r.abs() * 100.0),
            Change::Times(t) => {
                let whole = t.round() as u128;
                let digits = whole.to_string();
                f.write_str("×")?;
                for (i, digit) in digits.chars().enumerate() {
                    if i > 0 && (digits.len() - i).is_multiple_of(3) {
                        f.write_str(",")?;
                    }
                    write!(f, "{digit}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn changes_read_as_people_write_them() {
        let text = |c: f64, p: f64| Change::of(c, p).to_string();
        assert_eq!(text(150.0, 100.0), "+50.0%");
        assert_eq!(text(50.0, 100.0), "−50.0%");
        assert_eq!(text(0.0, 100.0), "−100.0%");
        assert_eq!(text(5.0, 0.0), "new");
        assert_eq!(text(0.0, 0.0), "±0%");
        assert_eq!(text(100.0, 100.0), "±0%");
        // +1,000 % is still a percentage; past it, a multiple.
        assert_eq!(text(1100.0, 100.0), "+1000.0%");
        assert_eq!(text(1101.0, 100.0), "×11");
        // The leaderboard's 454500 % of the issue: 4,546 times the window before.
        assert_eq!(text(4546.0, 1.0), "×4,546");
        assert_eq!(Change::of(f64::NAN, 1.0), Change::Flat);
        assert_eq!(Change::of(3.0, 1.0).rising(), Some(true));
        assert_eq!(Change::of(1.0, 3.0).rising(), Some(false));
        assert_eq!(Change::of(1.0, 0.0).rising(), None);
    }

    proptest! {
        #[test]
        fn no_percentage_ever_passes_a_thousand(current in 0u64..10_000_000, previous in 0u64..10_000_000) {
            let change = Change::of(current as f64, previous as f64);
            let text = change.to_string();
            if let Some(number) = text.strip_suffix('%') {
                let number: f64 = number.trim_start_matches(['+', '−', '±']).parse().unwrap();
                prop_assert!(number <= 1000.0, "{text}");
            }
            // The sign always says which way it went.
            match change.rising() {
                Some(true) => prop_assert!(current > previous && (text.starts_with('+') || text.starts_with('×'))),
                Some(false) => prop_assert!(current < previous && text.starts_with('−')),
                None => prop_assert!(text == "new" || text == "±0%"),
            }
            prop_assert_eq!(text == "new", previous == 0 && current > 0);
        }
    }
}
