//! Limits on strangers. Per key: calls (inference and uploads, which both
//! take a model worker) running at once, and calls per minute. Per network
//! address: sign-ups per hour and failed authentications per minute. Each
//! rate is a token bucket; past any limit, 429 `rate_limited` with
//! `Retry-After`, before anything is charged or run.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use market::Buckets;

#[derive(Debug)]
pub struct CallLimits {
    /// `calls_per_key_concurrent_max`; 0: no limit.
    concurrent_max: u32,
    /// `calls_per_key_per_minute_max`, a minute's worth at once at most.
    per_minute: Buckets<i64>,
    /// Calls running, by account.
    in_flight: Arc<Tally<i64>>,
}

/// Amounts in use by key (calls running, connections open, bytes unsent),
/// each taken by a [`Taken`] that gives it back when dropped; a key is here
/// only while it has some.
#[derive(Debug)]
pub struct Tally<K: Hash + Eq + Copy> {
    amounts: Mutex<HashMap<K, u64>>,
}

/// An amount of a key's taken from a [`Tally`]; dropping it gives it back.
#[derive(Debug)]
pub struct Taken<K: Hash + Eq + Copy> {
    tally: Arc<Tally<K>>,
    key: K,
    amount: u64,
}

impl<K: Hash + Eq + Copy> Default for Tally<K> {
    fn default() -> Tally<K> {
        Tally { amounts: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Copy> Tally<K> {
    /// Takes `amount` for `key` if what the key holds is below `max` (0: no
    /// limit); else takes nothing.
    pub fn take_below(self: &Arc<Self>, key: K, amount: u64, max: u64) -> Option<Taken<K>> {
        let mut amounts = self.lock();
        let held = amounts.get(&key).copied().unwrap_or(0);
        if max > 0 && held >= max {
            return None;
        }
        *amounts.entry(key).or_insert(0) += amount;
        Some(Taken { tally: self.clone(), key, amount })
    }

    /// Takes `amount` for `key` if what the key then holds is within `max`
    /// (0: no limit); else takes nothing.
    pub fn take_within(self: &Arc<Self>, key: K, amount: u64, max: u64) -> Option<Taken<K>> {
        let mut amounts = self.lock();
        let held = amounts.get(&key).copied().unwrap_or(0);
        if max > 0 && held.saturating_add(amount) > max {
            return None;
        }
        *amounts.entry(key).or_insert(0) += amount;
        Some(Taken { tally: self.clone(), key, amount })
    }

    /// What `key` holds now.
    pub fn held(&self, key: K) -> u64 {
        self.lock().get(&key).copied().unwrap_or(0)
    }

    /// Whether no key holds anything.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, u64>> {
        // Every update under this lock completes before anything that could panic.
        self.amounts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Hash + Eq + Copy> Taken<K> {
    /// Takes `more` on top, if what the key then holds is within `max` (0:
    /// no limit); false if not (nothing more is taken).
    pub fn grow(&mut self, more: u64, max: u64) -> bool {
        let mut amounts = self.tally.lock();
        let held = amounts.entry(self.key).or_insert(0);
        if max > 0 && held.saturating_add(more) > max {
            return false;
        }
        *held += more;
        self.amount += more;
        true
    }

    /// What it holds.
    pub fn amount(&self) -> u64 {
        self.amount
    }
}

impl<K: Hash + Eq + Copy> Drop for Taken<K> {
    fn drop(&mut self) {
        let mut amounts = self.tally.lock();
        if let Some(held) = amounts.get_mut(&self.key) {
            *held -= self.amount;
            if *held == 0 {
                amounts.remove(&self.key);
            }
        }
    }
}

/// Why a call may not start now, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    TooManyAtOnce { max: u32 },
    TooManyPerMinute { max: u32, retry_after_s: u64 },
}

/// A call in flight; dropping it ends it.
pub type CallPermit = Taken<i64>;

impl CallLimits {
    pub fn new(concurrent_max: u32, per_minute_max: u32) -> CallLimits {
        CallLimits {
            concurrent_max,
            per_minute: Buckets::new(per_minute_max, Duration::from_secs(60)),
            in_flight: Arc::default(),
        }
    }

    /// Starts a call for `account` at `now`, or says why not. A call refused
    /// for being one too many at once takes nothing from the minute's budget.
    pub fn start(&self, account: i64, now: Instant) -> Result<CallPermit, Refusal> {
        let permit = self
            .in_flight
            .take_below(account, 1, u64::from(self.concurrent_max))
            .ok_or(Refusal::TooManyAtOnce { max: self.concurrent_max })?;
        self.per_minute
            .take(account, now)
            .map_err(|retry_after_s| Refusal::TooManyPerMinute { max: self.per_minute.capacity(), retry_after_s })?;
        Ok(permit)
    }
}

/// Uploads in flight: per account, per network address, and on the node
/// (keyed by `()`), counted while their [`Taken`]s live.
#[derive(Debug, Default)]
pub struct Uploads {
    pub per_account: Arc<Tally<i64>>,
    pub per_address: Arc<Tally<IpAddr>>,
    pub in_all: Arc<Tally<()>>,
    /// Bytes received or declared, in all.
    pub bytes: Arc<Tally<()>>,
}

/// Per network address: sign-ups and failed authentications.
#[derive(Debug)]
pub struct AddressLimits {
    /// `signups_per_address_per_hour`.
    pub signups: Buckets<IpAddr>,
    /// `failed_auth_per_address_per_minute`.
    pub failed_auth: Buckets<IpAddr>,
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
    fn a_tally_takes_below_its_maximum_and_gives_back_when_dropped() {
        let tally = Arc::new(Tally::default());
        let bytes = tally.take_below("a", 600, 1000).unwrap();
        let more = tally.take_below("a", 600, 1000).unwrap();
        assert_eq!(tally.held("a"), 1200, "taken while below the maximum, whatever the amount");
        assert!(tally.take_below("a", 1, 1000).is_none());
        assert!(tally.take_below("b", 1, 0).is_some(), "0: no limit");
        drop((bytes, more));
        assert_eq!(tally.held("a"), 0);
        assert!(tally.is_empty(), "keys holding nothing are forgotten");
        assert!(Arc::new(Tally::default()).take_below("c", 5, 1).is_some());
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
        assert!(limits.in_flight.is_empty(), "keys without calls running are forgotten");
    }
}
