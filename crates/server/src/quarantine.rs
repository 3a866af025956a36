//! Quarantine: a version whose calls crash their worker or exhaust its memory
//! `quarantine_strikes` times within `quarantine_window_ms` is taken out of
//! service. Strikes are counted in this process; the quarantine itself is
//! stored on the version, so it holds across restarts until the operator
//! lifts it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Recent strikes per (model id, version).
#[derive(Debug)]
pub struct Strikes {
    /// 0: never quarantine.
    threshold: u32,
    window: Duration,
    recent: Mutex<HashMap<(i64, i64), VecDeque<Instant>>>,
}

impl Strikes {
    pub fn new(threshold: u32, window_ms: u64) -> Strikes {
        Strikes { threshold, window: Duration::from_millis(window_ms), recent: Mutex::new(HashMap::new()) }
    }

    /// Counts one strike against a version; true when that makes
    /// `threshold` within the window (the strikes are then forgotten).
    pub fn strike(&self, model_id: i64, version: i64, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Old entries of every version go, so the map stays as small as the
        // set of versions that struck within one window.
        recent.retain(|_, times| {
            while times.front().is_some_and(|&t| now.duration_since(t) > self.window) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = recent.entry((model_id, version)).or_default();
        times.push_back(now);
        if times.len() >= self.threshold as usize {
            recent.remove(&(model_id, version));
            return true;
        }
        false
    }

    /// Forgets a version's strikes (its quarantine was lifted).
    pub fn forgive(&self, model_id: i64, version: i64) {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).remove(&(model_id, version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_counts_only_strikes_within_the_window() {
        let strikes = Strikes::new(3, 10_000);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(!strikes.strike(1, 1, at(0)));
        assert!(!strikes.strike(1, 1, at(5)));
        // Another version's strikes are its own.
        assert!(!strikes.strike(1, 2, at(6)));
        // The first strike is past the window by now.
        assert!(!strikes.strike(1, 1, at(11)));
        assert!(strikes.strike(1, 1, at(12)), "three within ten seconds");
        // Counting starts again after a quarantine.
        assert!(!strikes.strike(1, 1, at(13)));
        strikes.forgive(1, 1);
        assert!(!strikes.strike(1, 1, at(14)));
        assert!(!strikes.strike(1, 1, at(15)));
        assert!(strikes.strike(1, 1, at(16)));
        assert!(!Strikes::new(0, 10_000).strike(1, 1, at(0)), "0 never quarantines");
        assert!(Strikes::new(1, 10_000).strike(1, 1, at(0)));
    }
}
