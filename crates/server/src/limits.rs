//! Per-key limits on the work a caller can ask for: calls (inference and
//! uploads, which both take a model worker) running at once, and calls per
//! minute (a token bucket). Past either, 429 `rate_limited` with
//! `Retry-After`, before anything is charged or run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries idle this long hold a full bucket and no call: they can go.
const IDLE_ENTRY_AGE: Duration = Duration::from_secs(120);
/// Above this many entries, idle ones are pruned.
const ENTRIES_BEFORE_PRUNING: usize = 10_000;

#[derive(Debug)]
pub struct CallLimits {
    /// `calls_per_key_concurrent_max`; 0: no limit.
    concurrent_max: u32,
    /// `calls_per_key_per_minute_max`; 0: no limit.
    per_minute_max: u32,
    keys: Mutex<HashMap<i64, KeyState>>,
}

#[derive(Debug)]
struct KeyState {
    in_flight: u32,
    /// Calls that may start now; refilled at `per_minute_max` per minute,
    /// up to `per_minute_max` (a minute's worth may come at once).
    tokens: f64,
    refilled_at: Instant,
}

/// Why a call may not start now, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    TooManyAtOnce { max: u32 },
    TooManyPerMinute { max: u32, retry_after_s: u64 },
}

/// A call in flight; dropping it ends it.
#[derive(Debug)]
pub struct CallPermit {
    limits: Arc<CallLimits>,
    account: i64,
}

impl CallLimits {
    pub fn new(concurrent_max: u32, per_minute_max: u32) -> CallLimits {
        CallLimits { concurrent_max, per_minute_max, keys: Mutex::new(HashMap::new()) }
    }

    /// Starts a call for `account` at `now`, or says why not.
    pub fn start(self: &Arc<Self>, account: i64, now: Instant) -> Result<CallPermit, Refusal> {
        let mut keys = self.lock();
        if keys.len() > ENTRIES_BEFORE_PRUNING {
            keys.retain(|_, key| key.in_flight > 0 || now.duration_since(key.refilled_at) < IDLE_ENTRY_AGE);
        }
        let capacity = f64::from(self.per_minute_max);
        let key = keys.entry(account).or_insert(KeyState { in_flight: 0, tokens: capacity, refilled_at: now });
        if self.concurrent_max > 0 && key.in_flight >= self.concurrent_max {
            return Err(Refusal::TooManyAtOnce { max: self.concurrent_max });
        }
        if self.per_minute_max > 0 {
            let elapsed = now.duration_since(key.refilled_at).as_secs_f64();
            key.tokens = (key.tokens + elapsed * capacity / 60.0).min(capacity);
            key.refilled_at = now;
            if key.tokens < 1.0 {
                let wait_s = (1.0 - key.tokens) * 60.0 / capacity;
                return Err(Refusal::TooManyPerMinute {
                    max: self.per_minute_max,
                    retry_after_s: wait_s.ceil() as u64,
                });
            }
            key.tokens -= 1.0;
        }
        key.in_flight += 1;
        Ok(CallPermit { limits: self.clone(), account })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, KeyState>> {
        // Every update under this lock completes before anything that could panic.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some(key) = self.limits.lock().get_mut(&self.account) {
            key.in_flight = key.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_at_once_are_bounded_per_key_and_freed_when_done() {
        let limits = Arc::new(CallLimits::new(2, 0));
        let now = Instant::now();
        let first = limits.start(1, now).unwrap();
        let _second = limits.start(1, now).unwrap();
        assert_eq!(limits.start(1, now).unwrap_err(), Refusal::TooManyAtOnce { max: 2 });
        // Another key has its own budget.
        let _other = limits.start(2, now).unwrap();
        drop(first);
        limits.start(1, now).unwrap();
    }

    #[test]
    fn calls_per_minute_refill_steadily_and_say_when_to_retry() {
        let limits = Arc::new(CallLimits::new(0, 60));
        let start = Instant::now();
        for _ in 0..60 {
            drop(limits.start(1, start).unwrap());
        }
        assert_eq!(limits.start(1, start).unwrap_err(), Refusal::TooManyPerMinute { max: 60, retry_after_s: 1 });
        // One call a second comes back.
        drop(limits.start(1, start + Duration::from_secs(1)).unwrap());
        assert!(limits.start(1, start + Duration::from_secs(1)).is_err());
        // A minute later, a full minute's worth again, not more.
        let later = start + Duration::from_secs(120);
        for _ in 0..60 {
            drop(limits.start(1, later).unwrap());
        }
        assert!(limits.start(1, later).is_err());
        assert!(Arc::new(CallLimits::new(0, 0)).start(1, start).is_ok(), "0 is no limit");
    }
}
