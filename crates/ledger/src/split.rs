use domain::Amount;

/// Basis points of every price that go to the creator, the serving node and
/// the treasury. They always sum to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSplit {
    creator_bps: u32,
    node_bps: u32,
    treasury_bps: u32,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the fee split must add up to 10000 basis points, not {0}")]
pub struct FeeSplitError(u64);

/// A price divided by a [`FeeSplit`]; the three always sum to the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub creator: Amount,
    pub node: Amount,
    pub treasury: Amount,
}

const BPS_TOTAL: u64 = 10_000;

impl FeeSplit {
    pub fn new(creator_bps: u32, node_bps: u32, treasury_bps: u32) -> Result<FeeSplit, FeeSplitError> {
        let total = creator_bps as u64 + node_bps as u64 + treasury_bps as u64;
        if total != BPS_TOTAL {
            return Err(FeeSplitError(total));
        }
        Ok(FeeSplit { creator_bps, node_bps, treasury_bps })
    }

    pub fn creator_bps(&self) -> u32 {
        self.creator_bps
    }
    pub fn node_bps(&self) -> u32 {
        self.node_bps
    }
    pub fn treasury_bps(&self) -> u32 {
        self.treasury_bps
    }

    /// The node's and the treasury's shares are rounded down
    /// (`price × bps / 10 000`, integer division); the creator receives the
    /// rest, so every remainder of the division goes to the creator and the
    /// shares always sum to the price exactly.
    pub fn split(&self, price: Amount) -> Shares {
        let units = price.minor_units() as u128;
        let share = |bps: u32| (units * bps as u128 / BPS_TOTAL as u128) as u64;
        let node = share(self.node_bps);
        let treasury = share(self.treasury_bps);
        let creator = price.minor_units() - node - treasury;
        let amount = |units| Amount::from_minor_units(units).expect("a share is at most the price");
        Shares { creator: amount(creator), node: amount(node), treasury: amount(treasury) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remainders_go_to_the_creator() {
        let split = FeeSplit::new(8000, 1500, 500).unwrap();
        let shares = split.split(Amount::from_minor_units(101).unwrap());
        assert_eq!(
            (shares.creator.minor_units(), shares.node.minor_units(), shares.treasury.minor_units()),
            (81, 15, 5)
        );
        let shares = split.split(Amount::from_minor_units(1).unwrap());
        assert_eq!((shares.creator.minor_units(), shares.node.minor_units(), shares.treasury.minor_units()), (1, 0, 0));
        assert_eq!(FeeSplit::new(8000, 1500, 501), Err(FeeSplitError(10_001)));
    }

    proptest! {
        #[test]
        fn shares_always_sum_to_the_price(
            price in 0u64..=i64::MAX as u64,
            node_bps in 0u32..=10_000,
            treasury_fraction in 0u32..=10_000,
        ) {
            let treasury_bps = (10_000 - node_bps) * treasury_fraction / 10_000;
            let split = FeeSplit::new(10_000 - node_bps - treasury_bps, node_bps, treasury_bps).unwrap();
            let price = Amount::from_minor_units(price).unwrap();
            let shares = split.split(price);
            let sum = shares.creator.minor_units() as u128 + shares.node.minor_units() as u128 + shares.treasury.minor_units() as u128;
            prop_assert_eq!(sum, price.minor_units() as u128);
            // Each rounded-down share is within one unit of its exact value.
            let exact = |bps: u32| price.minor_units() as u128 * bps as u128;
            prop_assert!(shares.node.minor_units() as u128 * 10_000 <= exact(node_bps));
            prop_assert!(exact(node_bps) < (shares.node.minor_units() as u128 + 1) * 10_000);
        }
    }
}
