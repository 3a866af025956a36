//! Latency histogram: bucket `k` holds latencies in `[2^((k-1)/4), 2^(k/4))`
//! microseconds (bucket 0 holds everything under 1 µs), up to about 2^31 µs
//! (35 minutes). A percentile is reported as the geometric middle of its
//! bucket, so it is within a factor 2^(1/8) (±9%) of the true value.

/// Buckets per histogram.
pub const LATENCY_BUCKETS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram { counts: [0; LATENCY_BUCKETS] }
    }
}

/// The bucket of a latency in microseconds.
fn bucket(latency_us: u64) -> usize {
    if latency_us == 0 {
        return 0;
    }
    // k = floor(4 · log2(us)) + 1, computed without floating point drift at
    // exact powers of two.
    let k = ((latency_us as f64).log2() * 4.0).floor() as i64 + 1;
    k.clamp(0, LATENCY_BUCKETS as i64 - 1) as usize
}

impl LatencyHistogram {
    pub fn record(&mut self, latency_us: u64) {
        self.counts[bucket(latency_us)] += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds, `None` if empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (k, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                if k == 0 {
                    return Some(0.0);
                }
                let middle_us = 2f64.powf((k as f64 - 0.5) / 4.0);
                return Some(middle_us / 1000.0);
            }
        }
        None
    }

    /// Sparse: for each non-empty bucket, its index (one byte) and its count
    /// (unsigned LEB128). A rollup row usually has a handful of buckets.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![];
        for (k, &count) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            out.push(k as u8);
            let mut rest = count;
            loop {
                let byte = (rest & 0x7f) as u8;
                rest >>= 7;
                if rest == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<LatencyHistogram> {
        let mut histogram = LatencyHistogram::default();
        let mut at = 0;
        while at < bytes.len() {
            let k = bytes[at] as usize;
            at += 1;
            let (mut count, mut shift) = (0u64, 0u32);
            loop {
                let byte = *bytes.get(at)?;
                at += 1;
                count |= ((byte & 0x7f) as u64).checked_shl(shift)?;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 63 {
                    return None;
                }
            }
            *histogram.counts.get_mut(k)? += count;
        }
        Some(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_percentiles() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0 / 1.1..=50.0 * 1.1).contains(&p50), "{p50}");
        assert!((99.0 / 1.1..=99.0 * 1.1).contains(&p99), "{p99}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
        assert_eq!(LatencyHistogram::from_bytes(&h.to_bytes()), Some(h.clone()));
        let mut big = LatencyHistogram::default();
        (0..300).for_each(|_| big.record(5));
        assert_eq!(big.to_bytes().len(), 3, "one bucket: index and a two-byte count");
        assert_eq!(LatencyHistogram::from_bytes(&big.to_bytes()), Some(big));
        assert_eq!(LatencyHistogram::from_bytes(&[200, 1]), None, "no bucket 200");
        assert_eq!(LatencyHistogram::from_bytes(&[3, 0x80]), None, "a count cut short");
    }

    proptest! {
        /// Any single latency is reported within ±9.1% (a factor 2^(1/8)).
        #[test]
        fn one_value_within_the_stated_error(us in 1u64..2_000_000_000) {
            let mut h = LatencyHistogram::default();
            h.record(us);
            let reported = h.quantile_ms(0.5).unwrap() * 1000.0;
            let ratio = reported / us as f64;
            prop_assert!((2f64.powf(-0.125) - 1e-9..=2f64.powf(0.125) + 1e-9).contains(&ratio), "{} µs reported as {}", us, reported);
        }

        #[test]
        fn merging_is_adding(a in proptest::collection::vec(0u64..10_000_000, 0..50), b in proptest::collection::vec(0u64..10_000_000, 0..50)) {
            let (mut ha, mut hb, mut all) = (LatencyHistogram::default(), LatencyHistogram::default(), LatencyHistogram::default());
            a.iter().for_each(|&v| { ha.record(v); all.record(v); });
            b.iter().for_each(|&v| { hb.record(v); all.record(v); });
            ha.merge(&hb);
            prop_assert_eq!(ha, all);
        }
    }
}
