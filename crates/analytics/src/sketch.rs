//! Distinct callers: exact while small, HyperLogLog when large.
//!
//! Callers are identified by 64-bit hashes (the first 8 bytes of their
//! pseudonym, already uniformly distributed). Up to [`SKETCH_EXACT_MAX`]
//! distinct callers the sketch keeps the set itself and counts exactly; past
//! that it switches to HyperLogLog with 2^10 registers, whose standard error
//! is 1.04/√1024 ≈ 3.3%. Sketches merge (union), so a window's distinct
//! callers come from its buckets' sketches.

/// Distinct callers counted exactly; past this the sketch is HyperLogLog.
pub const SKETCH_EXACT_MAX: usize = 256;
const PRECISION: u32 = 10;
const REGISTERS: usize = 1 << PRECISION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerSketch {
    /// Sorted, distinct.
    Exact(Vec<u64>),
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for CallerSketch {
    fn default() -> CallerSketch {
        CallerSketch::Exact(vec![])
    }
}

impl CallerSketch {
    pub fn insert(&mut self, caller_hash: u64) {
        match self {
            CallerSketch::Exact(set) => {
                if let Err(position) = set.binary_search(&caller_hash) {
                    set.insert(position, caller_hash);
                    if set.len() > SKETCH_EXACT_MAX {
                        let mut registers = Box::new([0u8; REGISTERS]);
                        for &hash in set.iter() {
                            set_register(&mut registers, hash);
                        }
                        *self = CallerSketch::Dense(registers);
                    }
                }
            }
            CallerSketch::Dense(registers) => set_register(registers, caller_hash),
        }
    }

    pub fn merge(&mut self, other: &CallerSketch) {
        match other {
            CallerSketch::Exact(set) => set.iter().for_each(|&h| self.insert(h)),
            CallerSketch::Dense(theirs) => {
                if let CallerSketch::Exact(set) = self {
                    let mut registers = Box::new([0u8; REGISTERS]);
                    for &hash in set.iter() {
                        set_register(&mut registers, hash);
                    }
                    *self = CallerSketch::Dense(registers);
                }
                if let CallerSketch::Dense(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// Distinct callers: exact for exact sketches, estimated for dense ones.
    pub fn estimate(&self) -> u64 {
        match self {
            CallerSketch::Exact(set) => set.len() as u64,
            CallerSketch::Dense(registers) => {
                let m = REGISTERS as f64;
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let sum: f64 = registers.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
                let raw = alpha * m * m / sum;
                let zeros = registers.iter().filter(|&&r| r == 0).count();
                let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
                estimate.round() as u64
            }
        }
    }

    /// `0x00` then sorted little-endian u64s, or `0x01` then the registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            CallerSketch::Exact(set) => {
                let mut out = Vec::with_capacity(1 + set.len() * 8);
                out.push(0);
                set.iter().for_each(|h| out.extend_from_slice(&h.to_le_bytes()));
                out
            }
            CallerSketch::Dense(registers) => {
                let mut out = Vec::with_capacity(1 + REGISTERS);
                out.push(1);
                out.extend_from_slice(registers.as_slice());
                out
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<CallerSketch> {
        match bytes.split_first() {
            None => Some(CallerSketch::default()),
            Some((0, rest)) if rest.len().is_multiple_of(8) && rest.len() / 8 <= SKETCH_EXACT_MAX => {
                let set: Vec<u64> =
                    rest.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
                set.windows(2).all(|w| w[0] < w[1]).then_some(CallerSketch::Exact(set))
            }
            Some((1, rest)) if rest.len() == REGISTERS => {
                let mut registers = Box::new([0u8; REGISTERS]);
                registers.copy_from_slice(rest);
                Some(CallerSketch::Dense(registers))
            }
            _ => None,
        }
    }
}

fn set_register(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = hash << PRECISION;
    let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
    registers[index] = registers[index].max(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A well-mixed hash of a counter (splitmix64), standing in for pseudonyms.
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn exact_while_small_and_close_when_large() {
        let mut sketch = CallerSketch::default();
        for i in 0..200 {
            sketch.insert(mix(i));
            sketch.insert(mix(i));
        }
        assert_eq!(sketch.estimate(), 200);
        for n in [1_000u64, 10_000, 100_000] {
            let mut sketch = CallerSketch::default();
            (0..n).for_each(|i| sketch.insert(mix(i)));
            let error = (sketch.estimate() as f64 - n as f64).abs() / n as f64;
            assert!(error < 4.0 * 0.033, "{n}: estimated {}", sketch.estimate());
        }
    }

    proptest! {
        #[test]
        fn merge_is_union(a in proptest::collection::vec(0u64..1000, 0..400), b in proptest::collection::vec(0u64..1000, 0..400)) {
            let (mut sa, mut sb, mut all) = (CallerSketch::default(), CallerSketch::default(), CallerSketch::default());
            a.iter().for_each(|&x| { sa.insert(mix(x)); all.insert(mix(x)); });
            b.iter().for_each(|&x| { sb.insert(mix(x)); all.insert(mix(x)); });
            sa.merge(&sb);
            prop_assert_eq!(sa.estimate(), all.estimate());
            prop_assert_eq!(CallerSketch::from_bytes(&all.to_bytes()), Some(all.clone()));
            let distinct: std::collections::HashSet<u64> = a.iter().chain(&b).copied().collect();
            if distinct.len() <= SKETCH_EXACT_MAX {
                prop_assert_eq!(all.estimate(), distinct.len() as u64);
            }
        }
    }
}
