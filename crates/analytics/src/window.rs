//! Windows of time over bucketed usage: the 24h, 7d and 30d windows the
//! stats routes accept, the bucket range each covers (whole buckets, the
//! current one included), and which window a bucket falls in when a window
//! is compared with the ones before it (trending).

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// A window: `buckets` buckets of `bucket_ms`, ending with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub name: &'static str,
    pub bucket_ms: i64,
    pub buckets: i64,
}

impl Window {
    /// 24 hour buckets.
    pub const DAY: Window = Window { name: "24h", bucket_ms: HOUR_MS, buckets: 24 };
    /// 7 day buckets.
    pub const WEEK: Window = Window { name: "7d", bucket_ms: DAY_MS, buckets: 7 };
    /// 30 day buckets.
    pub const MONTH: Window = Window { name: "30d", bucket_ms: DAY_MS, buckets: 30 };
    pub const ALL: [Window; 3] = [Window::DAY, Window::WEEK, Window::MONTH];

    /// `24h`, `7d` or `30d`.
    pub fn parse(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name == name)
    }

    pub fn duration_ms(&self) -> i64 {
        self.bucket_ms * self.buckets
    }

    /// Every day from the one holding `first_ms` (the market's first usage)
    /// to the one holding `now_ms`: the window named `all`.
    pub fn since(first_ms: i64, now_ms: i64) -> Window {
        let first_day = first_ms.min(now_ms).div_euclid(DAY_MS);
        let current_day = now_ms.div_euclid(DAY_MS);
        Window { name: "all", bucket_ms: DAY_MS, buckets: current_day - first_day + 1 }
    }

    /// Bucket starts `[from, to)` of this window and the `previous` windows
    /// before it, the last bucket being the one that holds `now_ms`.
    pub fn range(&self, previous: i64, now_ms: i64) -> (i64, i64) {
        let current = now_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        let count = self.buckets * (previous + 1);
        (current - (count - 1) * self.bucket_ms, current + self.bucket_ms)
    }

    /// Which window the bucket starting at `bucket_ms` falls in, for a range
    /// ending (exclusive) at `to_ms`: 0 for the current window, 1 for the
    /// one before, and so on.
    pub fn age(&self, bucket_start_ms: i64, to_ms: i64) -> i64 {
        (to_ms - 1 - bucket_start_ms).div_euclid(self.duration_ms())
    }

    /// Calls per window, the current one first, from `(bucket start, calls)`
    /// pairs over [`Window::range`] with `previous` windows; buckets outside
    /// the range are ignored.
    pub fn calls_per_window(
        &self,
        buckets: impl IntoIterator<Item = (i64, u64)>,
        previous: i64,
        to_ms: i64,
    ) -> Vec<u64> {
        let mut calls = vec![0u64; (previous + 1) as usize];
        for (start, count) in buckets {
            let age = self.age(start, to_ms);
            if (0..=previous).contains(&age) {
                calls[age as usize] += count;
            }
        }
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_by_name_only() {
        assert_eq!(Window::parse("24h"), Some(Window::DAY));
        assert_eq!(Window::parse("7d"), Some(Window::WEEK));
        assert_eq!(Window::parse("30d"), Some(Window::MONTH));
        assert_eq!(Window::parse("1y"), None);
        assert_eq!(Window::parse(""), None);
    }

    #[test]
    fn a_range_is_whole_buckets_ending_with_the_current_one() {
        let now = 10 * DAY_MS + 5 * HOUR_MS + 17;
        assert_eq!(Window::WEEK.range(0, now), (4 * DAY_MS, 11 * DAY_MS));
        assert_eq!(Window::DAY.range(0, now), (10 * DAY_MS + 5 * HOUR_MS - 23 * HOUR_MS, 10 * DAY_MS + 6 * HOUR_MS));
        // With three windows before it: four weeks of days.
        assert_eq!(Window::WEEK.range(3, now), (11 * DAY_MS - 28 * DAY_MS, 11 * DAY_MS));
        // Exactly on a bucket's start, that bucket is the current one.
        assert_eq!(Window::WEEK.range(0, 7 * DAY_MS), (DAY_MS, 8 * DAY_MS));
    }

    #[test]
    fn all_time_is_every_day_since_the_first_usage() {
        let now = 10 * DAY_MS + 5 * HOUR_MS;
        let all = Window::since(3 * DAY_MS + 7, now);
        assert_eq!((all.name, all.bucket_ms, all.buckets), ("all", DAY_MS, 8));
        assert_eq!(all.range(0, now), (3 * DAY_MS, 11 * DAY_MS));
        // Usage only today, or a clock that went back: one day.
        assert_eq!(Window::since(now, now).buckets, 1);
        assert_eq!(Window::since(now + DAY_MS, now).buckets, 1);
    }

    #[test]
    fn each_bucket_counts_in_the_window_it_falls_in() {
        let now = 30 * DAY_MS + 1;
        let (from, to) = Window::WEEK.range(3, now);
        let buckets: Vec<(i64, u64)> = (0..(to - from) / DAY_MS).map(|i| (from + i * DAY_MS, 1 + i as u64)).collect();
        // Days 1..=7 are the oldest week, 22..=28 the current one.
        let calls = Window::WEEK.calls_per_window(buckets.clone(), 3, to);
        assert_eq!(calls, vec![(22..=28).sum::<u64>(), (15..=21).sum(), (8..=14).sum(), (1..=7).sum()]);
        // Fewer windows: the older buckets are ignored, not folded in.
        assert_eq!(Window::WEEK.calls_per_window(buckets, 1, to), vec![calls[0], calls[1]]);
        // A bucket after the range is in no window.
        assert_eq!(Window::WEEK.calls_per_window([(to, 5)], 0, to), vec![0]);
    }
}
