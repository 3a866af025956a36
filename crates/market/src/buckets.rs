//! Token buckets by key, for limits per period: calls per minute, bytes
//! of kept answers per window, load time per hour.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many buckets, those idle for a whole period (full again) are pruned.
const ENTRIES_BEFORE_PRUNING: usize = 10_000;

/// Token buckets by key: `capacity` tokens refilled evenly over `period`.
#[derive(Debug)]
pub struct Buckets<K> {
    /// 0: no limit.
    capacity: u32,
    period: Duration,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    pub fn new(capacity: u32, period: Duration) -> Buckets<K> {
        Buckets { capacity, period, buckets: Mutex::new(HashMap::new()) }
    }

    /// Tokens a full bucket holds (0: no limit).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes a token for `key`, or says in how many seconds one comes back.
    pub fn take(&self, key: K, now: Instant) -> Result<(), u64> {
        self.take_many(key, 1, now)
    }

    /// Takes `tokens` at once for `key` (bytes, say), or none and says in how
    /// many seconds that many are back; more than the capacity never are.
    pub fn take_many(&self, key: K, tokens: u32, now: Instant) -> Result<(), u64> {
        let tokens = f64::from(tokens);
        self.with_bucket(key, tokens, now, |bucket| bucket.tokens -= tokens)
    }

    /// Takes `tokens` for `key` whatever is left, into debt (time spent,
    /// say): later takes and checks wait until the bucket refills past it.
    pub fn spend(&self, key: K, tokens: u32, now: Instant) {
        let tokens = f64::from(tokens);
        let _ = self.with_bucket(key, f64::NEG_INFINITY, now, |bucket| bucket.tokens -= tokens);
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&self, key: K, now: Instant) -> Result<(), u64> {
        self.with_bucket(key, 1.0, now, |_| {})
    }

    fn with_bucket(&self, key: K, wanted: f64, now: Instant, on_token: impl FnOnce(&mut Bucket)) -> Result<(), u64> {
        if self.capacity == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.capacity);
        let per_second = capacity / self.period.as_secs_f64();
        // Every update under this lock completes before anything that could panic.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > ENTRIES_BEFORE_PRUNING {
            // A bucket idle for a whole period is full again: forgetting it changes nothing.
            buckets.retain(|_, bucket| now.duration_since(bucket.refilled_at) < self.period);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: capacity, refilled_at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.refilled_at).as_secs_f64() * per_second).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens < wanted {
            return Err(((wanted - bucket.tokens) / per_second).ceil().max(1.0) as u64);
        }
        on_token(bucket);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_and_check_per_key() {
        let buckets = Buckets::new(2, Duration::from_secs(60));
        let now = Instant::now();
        buckets.take("a", now).unwrap();
        buckets.check("a", now).unwrap();
        buckets.take("a", now).unwrap();
        assert_eq!(buckets.check("a", now), Err(30), "one token every 30 s");
        assert_eq!(buckets.take("a", now), Err(30));
        buckets.take("b", now).unwrap();
        buckets.take("a", now + Duration::from_secs(30)).unwrap();
        // Many at once, as bytes: all or nothing.
        let bytes = Buckets::new(1000, Duration::from_secs(100));
        bytes.take_many("a", 600, now).unwrap();
        assert_eq!(bytes.take_many("a", 600, now), Err(20), "10 bytes a second, 200 missing");
        bytes.take_many("a", 400, now).unwrap();
        assert!(bytes.take_many("b", 1001, now + Duration::from_secs(1000)).is_err(), "never more than capacity");
        let unlimited = Buckets::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            unlimited.take("a", now).unwrap();
        }
    }
}
