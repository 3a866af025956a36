//! How much of a caller's balance one serving node may hold as a grant.
//!
//! On a market several nodes share, a node spends a caller's money from a
//! grant (a hold it places and draws on call by call). A grant as large as
//! the whole balance would leave the other nodes nothing: a caller who can
//! pay would be refused there. So a grant takes at most a share of what is
//! available: `available / (2 × live nodes)`. Each node then leaves at least
//! half of what it saw to the others, so a node finds money as long as the
//! caller has more than a few calls' worth; below that, nodes recall their
//! idle grants (the server's `reserve.rs`).

/// What a grant asks for ([`grant_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantAsk {
    /// What the node would like: a number of calls' worth.
    pub want: u64,
    /// One call's price: a grant is a whole number of these, and at least one.
    pub price: u64,
    /// Serving nodes alive on the market, this one included (at least 1).
    pub live_nodes: u64,
}

/// The grant to place on a balance with `available` minor units free, or
/// `None` when not even one price is available.
///
/// The grant is a whole number of prices (so that no remainder is stranded
/// in it), never more than `want` (rounded up to a price), never more than
/// the share `available / (2 × live_nodes)` unless that share is less than
/// one price, and then one price, and never more than `available`.
pub fn grant_size(ask: GrantAsk, available: i128) -> Option<u64> {
    let price = ask.price.max(1);
    let available = u64::try_from(available.max(0)).unwrap_or(u64::MAX);
    if available < price {
        return None;
    }
    let share = available / ask.live_nodes.max(1).saturating_mul(2);
    let calls = ask.want.div_ceil(price).min(share / price).max(1);
    Some(calls * price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ask(want: u64, price: u64, live_nodes: u64) -> GrantAsk {
        GrantAsk { want, price, live_nodes }
    }

    #[test]
    fn a_grant_takes_a_share_of_the_balance_in_whole_prices() {
        // The market: 200 calls of 100, three nodes, grants of 100 calls.
        assert_eq!(grant_size(ask(10_000, 100, 3), 20_000), Some(3_300));
        // One node alone takes half.
        assert_eq!(grant_size(ask(10_000, 100, 1), 20_000), Some(10_000));
        // A rich caller: what the node asks for.
        assert_eq!(grant_size(ask(10_000, 100, 3), 10_000_000), Some(10_000));
        // A share below one price: one price, while one is available.
        assert_eq!(grant_size(ask(10_000, 100, 3), 250), Some(100));
        assert_eq!(grant_size(ask(10_000, 100, 3), 100), Some(100));
        assert_eq!(grant_size(ask(10_000, 100, 3), 99), None);
        assert_eq!(grant_size(ask(10_000, 100, 3), -5), None);
        // No node count is taken as one node.
        assert_eq!(grant_size(ask(10_000, 100, 0), 20_000), Some(10_000));
    }

    proptest! {
        #[test]
        fn a_grant_is_whole_prices_within_the_balance_and_the_share(
            want in 0u64..1 << 40,
            price in 1u64..1 << 30,
            live_nodes in 1u64..64,
            available in -(1i128 << 40)..(1i128 << 50),
        ) {
            match grant_size(ask(want, price, live_nodes), available) {
                None => prop_assert!(available < price as i128),
                Some(size) => {
                    prop_assert!(size >= price && size % price == 0);
                    prop_assert!(size as i128 <= available);
                    prop_assert!(size <= want.div_ceil(price).max(1) * price);
                    let share = (available / (2 * live_nodes as i128)) as u64;
                    prop_assert!(size <= share.max(price));
                }
            }
        }

        /// Nodes that each take a grant in turn never take all of a balance
        /// that covers one call per node: the last node finds money too.
        #[test]
        fn every_live_node_finds_a_grant(
            calls in 1u64..10_000,
            price in 1u64..1_000_000,
            live_nodes in 1u64..16,
        ) {
            prop_assume!(calls >= live_nodes);
            let mut available = (calls * price) as i128;
            for _ in 0..live_nodes {
                let size = grant_size(ask(100 * price, price, live_nodes), available);
                prop_assert!(size.is_some(), "a node found nothing with {available} left");
                available -= size.unwrap() as i128;
            }
        }
    }
}
