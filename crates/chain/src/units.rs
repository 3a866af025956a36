//! Ledger amounts and token amounts, exactly.
//!
//! The ledger counts minor units of `ledger_decimals` (9 for OPG); the
//! token on the chain has its own decimals (OPG 18, USDC 6). The rule:
//!
//! - a ledger amount is paid on the chain as that amount × 10^(token −
//!   ledger decimals) token units; when the token has fewer decimals than
//!   the ledger, only ledger amounts that are whole token units can be paid
//!   (others are refused, never rounded);
//! - a token amount is credited to the ledger rounded down to a whole
//!   ledger unit, and the rest (less than one ledger unit) is reported as
//!   the remainder, never lost silently.

use alloy::primitives::U256;

/// The two scales of one token: the ledger's and the chain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    pub ledger_decimals: u32,
    pub token_decimals: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    #[error("{amount} minor units are not a whole number of the token's units (it has {token_decimals} decimals)")]
    NotWhole { amount: u64, token_decimals: u32 },
    #[error("the amount is larger than the ledger can hold")]
    TooLarge,
}

impl Units {
    /// The token units that pay `amount` ledger minor units.
    pub fn to_token(self, amount: u64) -> Result<U256, UnitsError> {
        if self.token_decimals >= self.ledger_decimals {
            let scale = U256::from(10u8).pow(U256::from(self.token_decimals - self.ledger_decimals));
            return Ok(U256::from(amount) * scale);
        }
        let scale = 10u64.pow(self.ledger_decimals - self.token_decimals);
        if !amount.is_multiple_of(scale) {
            return Err(UnitsError::NotWhole { amount, token_decimals: self.token_decimals });
        }
        Ok(U256::from(amount / scale))
    }

    /// The ledger minor units `amount` token units are worth, rounded down,
    /// and the token units left over (less than one ledger unit).
    pub fn to_ledger(self, amount: U256) -> Result<(u64, U256), UnitsError> {
        if self.token_decimals >= self.ledger_decimals {
            let scale = U256::from(10u8).pow(U256::from(self.token_decimals - self.ledger_decimals));
            let (whole, rest) = amount.div_rem(scale);
            return Ok((u64::try_from(whole).map_err(|_| UnitsError::TooLarge)?, rest));
        }
        let scale = U256::from(10u64.pow(self.ledger_decimals - self.token_decimals));
        let ledger = amount.checked_mul(scale).ok_or(UnitsError::TooLarge)?;
        Ok((u64::try_from(ledger).map_err(|_| UnitsError::TooLarge)?, U256::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPG: Units = Units { ledger_decimals: 9, token_decimals: 18 };
    const USDC: Units = Units { ledger_decimals: 9, token_decimals: 6 };

    #[test]
    fn the_rule_on_tokens_of_more_and_fewer_decimals() {
        // 0.002 OPG: 2,000,000 minor units, 2e15 token units.
        assert_eq!(OPG.to_token(2_000_000), Ok(U256::from(2_000_000_000_000_000u64)));
        assert_eq!(OPG.to_ledger(U256::from(2_000_000_000_000_001u64)), Ok((2_000_000, U256::from(1u8))));
        // USDC has 6 decimals: 0.002 is 2,000 of its units; 0.0000001 cannot be paid.
        assert_eq!(USDC.to_token(2_000_000), Ok(U256::from(2_000u64)));
        assert_eq!(USDC.to_token(100), Err(UnitsError::NotWhole { amount: 100, token_decimals: 6 }));
        assert_eq!(USDC.to_ledger(U256::from(2_000u64)), Ok((2_000_000, U256::ZERO)));
        assert_eq!(OPG.to_ledger(U256::MAX), Err(UnitsError::TooLarge));
        let same = Units { ledger_decimals: 9, token_decimals: 9 };
        assert_eq!(same.to_token(7), Ok(U256::from(7u8)));
    }

    proptest! {
        /// A ledger amount paid on the chain comes back whole; a token
        /// amount credited to the ledger loses nothing: its whole ledger
        /// units and its remainder add up to it.
        #[test]
        fn amounts_map_exactly_both_ways(amount in any::<u64>(), token in any::<u128>(), decimals in 0u32..=30) {
            let units = Units { ledger_decimals: 9, token_decimals: decimals };
            match units.to_token(amount) {
                Ok(paid) => prop_assert_eq!(units.to_ledger(paid), Ok((amount, U256::ZERO))),
                Err(UnitsError::NotWhole { .. }) => prop_assert!(decimals < 9),
                Err(other) => prop_assert!(false, "{other}"),
            }
            let token = U256::from(token);
            if let Ok((ledger, rest)) = units.to_ledger(token) {
                let back = units.to_token(ledger).expect("whole ledger units are payable back");
                prop_assert_eq!(back + rest, token);
                if let Ok(one) = units.to_token(1) {
                    prop_assert!(rest < one.max(U256::from(1u8)));
                }
            }
        }
    }
}
