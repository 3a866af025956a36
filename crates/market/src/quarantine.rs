//! Quarantine: a version whose calls crash their worker or exhaust its
//! memory is taken out of service, once enough of its callers saw it fail
//! and failures outnumber its successes. Strikes are counted in this
//! process; the quarantine itself is stored on the version, so it holds
//! across restarts until the operator lifts it.
//!
//! Any caller can make a model fail on purpose (inputs as large as the
//! limits allow, to a model whose memory grows with them), so one caller's
//! strikes must not take a competitor's model away from everyone else: a
//! caller counts once per window however often they strike, and a version
//! that serves other calls well meanwhile stays in service.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Recent strikes per (model id, version).
#[derive(Debug)]
pub struct Strikes {
    /// Distinct callers whose calls must strike within the window; 0: never
    /// quarantine.
    threshold: u32,
    window: Duration,
    recent: Mutex<HashMap<(i64, i64), Recent>>,
    /// Versions in `recent`: a successful call of a market with none (the
    /// usual case) costs one atomic read, not a lock.
    versions_struck: AtomicUsize,
}

/// One version's strikes within the window, and its successes since the
/// oldest of them.
#[derive(Debug, Default)]
struct Recent {
    /// When each strike happened and whose call it was, oldest first.
    strikes: VecDeque<(Instant, i64)>,
    /// Calls that succeeded since the oldest strike still in the window.
    successes: u64,
}

/// What a strike did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough distinct callers yet, or the version serves more calls
    /// than it fails.
    Counted,
    /// The version is to be quarantined (its strikes are then forgotten).
    Quarantine { callers: usize, strikes: usize, successes: u64 },
}

impl Strikes {
    pub fn new(threshold: u32, window_ms: u64) -> Strikes {
        Strikes {
            threshold,
            window: Duration::from_millis(window_ms),
            recent: Mutex::new(HashMap::new()),
            versions_struck: AtomicUsize::new(0),
        }
    }

    /// Counts one strike by `caller` against a version. The version is to be
    /// quarantined when, within the window, `threshold` distinct callers
    /// struck it and its strikes outnumber its successful calls.
    pub fn strike(&self, model_id: i64, version: i64, caller: i64, now: Instant) -> Verdict {
        if self.threshold == 0 {
            return Verdict::Counted;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_old(&mut recent, now);
        let entry = recent.entry((model_id, version)).or_default();
        entry.strikes.push_back((now, caller));
        let callers = entry.strikes.iter().map(|&(_, caller)| caller).collect::<HashSet<_>>().len();
        let (strikes, successes) = (entry.strikes.len(), entry.successes);
        let verdict = if callers >= self.threshold as usize && strikes as u64 > successes {
            recent.remove(&(model_id, version));
            Verdict::Quarantine { callers, strikes, successes }
        } else {
            Verdict::Counted
        };
        self.versions_struck.store(recent.len(), Ordering::Relaxed);
        verdict
    }

    /// Counts a successful call of a version, against its strikes.
    pub fn succeeded(&self, model_id: i64, version: i64) {
        if self.versions_struck.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = recent.get_mut(&(model_id, version)) {
            entry.successes += 1;
        }
    }

    /// Forgets a version's strikes (its quarantine was lifted).
    pub fn forgive(&self, model_id: i64, version: i64) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.remove(&(model_id, version));
        self.versions_struck.store(recent.len(), Ordering::Relaxed);
    }

    /// Old strikes of every version go, so the map stays as small as the set
    /// of versions that struck within one window; a version's successes
    /// count from its oldest strike left, so they start again with it.
    fn forget_old(&self, recent: &mut HashMap<(i64, i64), Recent>, now: Instant) {
        recent.retain(|_, entry| {
            let before = entry.strikes.len();
            while entry.strikes.front().is_some_and(|&(t, _)| now.duration_since(t) > self.window) {
                entry.strikes.pop_front();
            }
            if entry.strikes.len() != before {
                entry.successes = 0;
            }
            !entry.strikes.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarantines(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Quarantine { .. })
    }

    #[test]
    fn the_threshold_counts_distinct_callers_within_the_window() {
        let strikes = Strikes::new(3, 10_000);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(!quarantines(strikes.strike(1, 1, 10, at(0))));
        assert!(!quarantines(strikes.strike(1, 1, 11, at(5))));
        // Another version's strikes are its own.
        assert!(!quarantines(strikes.strike(1, 2, 12, at(6))));
        // The first strike is past the window by now.
        assert!(!quarantines(strikes.strike(1, 1, 12, at(11))));
        assert_eq!(
            strikes.strike(1, 1, 13, at(12)),
            Verdict::Quarantine { callers: 3, strikes: 3, successes: 0 },
            "three callers within ten seconds"
        );
        // Counting starts again after a quarantine.
        assert!(!quarantines(strikes.strike(1, 1, 10, at(13))));
        strikes.forgive(1, 1);
        assert!(!quarantines(strikes.strike(1, 1, 10, at(14))));
        assert!(!quarantines(strikes.strike(1, 1, 11, at(15))));
        assert!(quarantines(strikes.strike(1, 1, 12, at(16))));
        assert!(!quarantines(Strikes::new(0, 10_000).strike(1, 1, 10, at(0))), "0 never quarantines");
        assert!(quarantines(Strikes::new(1, 10_000).strike(1, 1, 10, at(0))));
    }

    #[test]
    fn one_caller_alone_never_quarantines_a_version_however_often_it_strikes() {
        let strikes = Strikes::new(3, 10_000);
        let start = Instant::now();
        for i in 0..1000 {
            let verdict = strikes.strike(1, 1, 66, start + Duration::from_millis(i));
            assert_eq!(verdict, Verdict::Counted, "strike {i}");
        }
        // Two more callers make three.
        assert!(!quarantines(strikes.strike(1, 1, 67, start)));
        assert!(quarantines(strikes.strike(1, 1, 68, start)));
    }

    #[test]
    fn a_version_that_serves_more_calls_than_it_fails_stays_in_service() {
        let strikes = Strikes::new(3, 10_000);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // Successes before any strike do not count: nothing is tracked then.
        strikes.succeeded(1, 1);
        assert!(!quarantines(strikes.strike(1, 1, 10, at(0))));
        for _ in 0..3 {
            strikes.succeeded(1, 1);
        }
        assert!(!quarantines(strikes.strike(1, 1, 11, at(1))));
        assert!(!quarantines(strikes.strike(1, 1, 12, at(2))), "3 strikes against 3 successes");
        assert_eq!(
            strikes.strike(1, 1, 13, at(3)),
            Verdict::Quarantine { callers: 4, strikes: 4, successes: 3 },
            "4 strikes against 3 successes"
        );
        // Successes start again with the oldest strike left in the window.
        assert!(!quarantines(strikes.strike(2, 1, 10, at(0))));
        strikes.succeeded(2, 1);
        strikes.succeeded(2, 1);
        assert!(!quarantines(strikes.strike(2, 1, 11, at(20))));
        assert!(!quarantines(strikes.strike(2, 1, 12, at(21))));
        assert!(quarantines(strikes.strike(2, 1, 13, at(22))), "the two successes left with the first strike");
    }
}
