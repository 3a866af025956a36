//! How demand is spread over a market's items (models, creators, tasks,
//! apps, nodes), and which items are trending.

/// An item needs this many calls in the current window to trend, so that a
/// jump from 1 call to 3 is not reported as +200%.
pub const TRENDING_CALLS_MIN: u64 = 10;

/// Concentration of a market, from each item's volume (calls or revenue).
#[derive(Debug, Clone, PartialEq)]
pub struct Concentration {
    /// Each item's fraction of the total, in the input's order; all zero if
    /// the total is zero.
    pub shares: Vec<f64>,
    /// Sum of the 10 largest shares.
    pub top10_share: f64,
    /// Herfindahl–Hirschman index: the sum of squared shares, from 1/n
    /// (even) to 1 (one item has everything); 0 for an empty market.
    pub hhi: f64,
    /// Gini coefficient over the items: 0 when all are equal, approaching 1
    /// when one has everything.
    pub gini: f64,
    /// Lorenz curve points (fraction of items, fraction of volume), from
    /// (0, 0) to (1, 1), items in increasing volume.
    pub lorenz: Vec<(f64, f64)>,
}

pub fn concentration(volumes: &[u64]) -> Concentration {
    let total: u128 = volumes.iter().map(|&v| v as u128).sum();
    let n = volumes.len();
    if total == 0 {
        let lorenz = if n == 0 {
            vec![(0.0, 0.0), (1.0, 1.0)]
        } else {
            (0..=n).map(|i| (i as f64 / n as f64, i as f64 / n as f64)).collect()
        };
        return Concentration { shares: vec![0.0; n], top10_share: 0.0, hhi: 0.0, gini: 0.0, lorenz };
    }
    let shares: Vec<f64> = volumes.iter().map(|&v| v as f64 / total as f64).collect();
    let mut sorted: Vec<u64> = volumes.to_vec();
    sorted.sort_unstable();
    let top10_share = sorted.iter().rev().take(10).map(|&v| v as f64).sum::<f64>() / total as f64;
    let hhi = shares.iter().map(|s| s * s).sum();
    // Gini = Σ_i (2i − n − 1) x_i / (n Σ x), i = 1..n over ascending x.
    let weighted: f64 =
        sorted.iter().enumerate().map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * x as f64).sum();
    let gini = weighted / (n as f64 * total as f64);
    let mut lorenz = Vec::with_capacity(n + 1);
    lorenz.push((0.0, 0.0));
    let mut cumulative: u128 = 0;
    for (i, &x) in sorted.iter().enumerate() {
        cumulative += x as u128;
        lorenz.push(((i + 1) as f64 / n as f64, cumulative as f64 / total as f64));
    }
    Concentration { shares, top10_share, hhi, gini, lorenz }
}

/// Growth of an item: `(current − mean of previous windows) / max(mean, 1)`,
/// `None` below [`TRENDING_CALLS_MIN`] calls in the current window. An item
/// with no previous calls grows by `current` (as if it had had one call).
pub fn growth(current: u64, previous: &[u64]) -> Option<f64> {
    if current < TRENDING_CALLS_MIN {
        return None;
    }
    let mean = if previous.is_empty() { 0.0 } else { previous.iter().sum::<u64>() as f64 / previous.len() as f64 };
    Some((current as f64 - mean) / mean.max(1.0))
}

/// The median (mean of the two middle values for an even count).
pub fn median(values: &[u64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] as f64 + sorted[middle] as f64) / 2.0
    } else {
        sorted[middle] as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn known_answers() {
        let even = concentration(&[5, 5, 5, 5]);
        assert!(close(even.hhi, 0.25) && close(even.gini, 0.0) && close(even.top10_share, 1.0));
        let one = concentration(&[0, 0, 0, 12]);
        assert!(close(one.hhi, 1.0) && close(one.gini, 0.75), "{one:?}");
        // Shares 1/10, 2/10, 3/10, 4/10: HHI = 0.30; Gini = (−3·1 −1·2 +1·3 +3·4)/(4·10) = 0.25.
        let mixed = concentration(&[4, 1, 3, 2]);
        assert!(close(mixed.hhi, 0.30) && close(mixed.gini, 0.25));
        assert_eq!(mixed.shares, vec![0.4, 0.1, 0.3, 0.2]);
        assert_eq!(mixed.lorenz, vec![(0.0, 0.0), (0.25, 0.1), (0.5, 0.3), (0.75, 0.6), (1.0, 1.0)]);
        let many: Vec<u64> = (1..=20).collect();
        assert!(close(concentration(&many).top10_share, (11..=20).sum::<u64>() as f64 / 210.0));
        assert_eq!(concentration(&[]).hhi, 0.0);
        assert_eq!(growth(9, &[1]), None);
        assert_eq!(growth(20, &[10, 10]), Some(1.0));
        assert_eq!(growth(10, &[]), Some(10.0));
        assert_eq!(median(&[3, 1, 2]), Some(2.0));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));
    }

    proptest! {
        #[test]
        fn measures_stay_in_range(volumes in proptest::collection::vec(0u64..1_000_000, 1..60)) {
            let c = concentration(&volumes);
            let total: u64 = volumes.iter().sum();
            if total > 0 {
                prop_assert!((c.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                prop_assert!(c.hhi >= 1.0 / volumes.len() as f64 - 1e-12 && c.hhi <= 1.0 + 1e-12);
            }
            prop_assert!((0.0..1.0).contains(&c.gini) || c.gini.abs() < 1e-12);
            prop_assert!(c.lorenz.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 + 1e-12));
            prop_assert!(c.lorenz.iter().all(|&(x, y)| y <= x + 1e-9), "the Lorenz curve lies under the diagonal");
        }
    }
}
