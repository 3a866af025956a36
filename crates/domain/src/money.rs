use std::fmt;

/// Decimal places of the token unless configured otherwise: one token is
/// 10^9 minor units.
pub const DEFAULT_DECIMALS: u32 = 9;

/// The token's symbol unless configured otherwise.
pub const DEFAULT_TOKEN_SYMBOL: &str = "OPG";

/// An amount of tokens in integer minor units. Never negative and at most
/// `i64::MAX`, so every amount fits a signed 64-bit database integer; there is
/// no floating point anywhere on the way in or out.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AmountError {
    #[error("an amount is a string of decimal digits (minor units), such as \"2500000\"")]
    NotMinorUnits,
    #[error("an amount is a decimal number with at most {decimals} decimal places, such as \"0.0025\"")]
    NotDecimal { decimals: u32 },
    #[error("the amount is larger than the largest amount ({max} minor units)")]
    TooLarge { max: u64 },
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: what fits a signed 64-bit integer.
    pub const MAX: Amount = Amount(i64::MAX as u64);

    /// An amount of `units` minor units, if not above [`Amount::MAX`].
    pub fn from_minor_units(units: u64) -> Result<Amount, AmountError> {
        if units > Amount::MAX.0 {
            return Err(AmountError::TooLarge { max: Amount::MAX.0 });
        }
        Ok(Amount(units))
    }

    pub fn minor_units(self) -> u64 {
        self.0
    }

    /// Parses the API's form: decimal digits only, no sign, no spaces, no
    /// leading zeros except "0" itself, so each amount has one spelling.
    pub fn parse_minor_units(text: &str) -> Result<Amount, AmountError> {
        let canonical =
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
        if !canonical {
            return Err(AmountError::NotMinorUnits);
        }
        let units: u64 = text.parse().map_err(|_| AmountError::TooLarge { max: Amount::MAX.0 })?;
        Amount::from_minor_units(units)
    }

    /// Parses a human decimal ("0.002", "12", "1.5") with at most `decimals`
    /// places, exactly: "0.002" with 9 decimals is 2 000 000 minor units.
    pub fn parse_decimal(text: &str, decimals: u32) -> Result<Amount, AmountError> {
        let invalid = AmountError::NotDecimal { decimals };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid);
        }
        if fraction.len() > decimals as usize {
            return Err(invalid);
        }
        let too_large = AmountError::TooLarge { max: Amount::MAX.0 };
        let scale = 10u64.checked_pow(decimals).ok_or(invalid)?;
        let whole: u64 = whole.parse().map_err(|_| too_large.clone())?;
        let fraction_units: u64 = if fraction.is_empty() {
            0
        } else {
            let padded = format!("{fraction:0<width$}", width = decimals as usize);
            padded.parse().map_err(|_| too_large.clone())?
        };
        let units = whole.checked_mul(scale).and_then(|w| w.checked_add(fraction_units)).ok_or(too_large)?;
        Amount::from_minor_units(units)
    }

    /// Prints as a decimal with `decimals` places, trailing zeros trimmed:
    /// 2 000 000 minor units with 9 decimals is "0.002".
    pub fn to_decimal_string(self, decimals: u32) -> String {
        let scale = 10u64.pow(decimals);
        let whole = self.0 / scale;
        let fraction = self.0 % scale;
        if fraction == 0 {
            return whole.to_string();
        }
        let fraction = format!("{fraction:0>width$}", width = decimals as usize);
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).and_then(|units| Amount::from_minor_units(units).ok())
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    /// Minor units, the API's form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minor_units_have_one_spelling() {
        assert_eq!(Amount::parse_minor_units("0"), Ok(Amount::ZERO));
        assert_eq!(Amount::parse_minor_units("2500000").map(Amount::minor_units), Ok(2_500_000));
        for bad in ["", "-1", "+1", "01", "1.0", " 1", "1e3", "abc"] {
            assert_eq!(Amount::parse_minor_units(bad), Err(AmountError::NotMinorUnits), "{bad:?}");
        }
        assert_eq!(Amount::parse_minor_units(&i64::MAX.to_string()), Ok(Amount::MAX));
        assert!(matches!(Amount::parse_minor_units("9223372036854775808"), Err(AmountError::TooLarge { .. })));
        assert!(matches!(Amount::parse_minor_units("99999999999999999999999"), Err(AmountError::TooLarge { .. })));
    }

    #[test]
    fn decimals_are_exact() {
        let parse = |s| Amount::parse_decimal(s, 9).map(Amount::minor_units);
        assert_eq!(parse("0.002"), Ok(2_000_000));
        assert_eq!(parse("12"), Ok(12_000_000_000));
        assert_eq!(parse("1.000000001"), Ok(1_000_000_001));
        for bad in ["", ".5", "5.", "1.0000000001", "-1", "1,5", "1.2.3", "0x10"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Amount::from_minor_units(2_000_000).unwrap().to_decimal_string(9), "0.002");
        assert_eq!(Amount::from_minor_units(12_000_000_000).unwrap().to_decimal_string(9), "12");
        assert_eq!(Amount::ZERO.to_decimal_string(9), "0");
    }

    proptest! {
        #[test]
        fn decimal_round_trip(units in 0u64..=i64::MAX as u64, decimals in 0u32..=18) {
            let amount = Amount::from_minor_units(units).unwrap();
            let text = amount.to_decimal_string(decimals);
            prop_assert_eq!(Amount::parse_decimal(&text, decimals), Ok(amount));
            prop_assert_eq!(Amount::parse_minor_units(&amount.to_string()), Ok(amount));
        }
    }
}
