//! The arithmetic of the budgets, pure (times are passed in, in nanoseconds),
//! so it is tested exactly and a shared limiter can mirror it.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key: the
//! theoretical arrival time (TAT) of the next call if calls came exactly at
//! the rate. With emission interval `T = per / count` and tolerance
//! `τ = (burst − 1) · T`, a call at `now` is admitted iff
//! `max(TAT, now) − now ≤ τ`, and then `TAT = max(TAT, now) + T`. Over any
//! span `E` at most `burst + E / T` calls are admitted. A key whose TAT is in
//! the past is the same as a fresh key, so it can be forgotten.
//!
//! Quotas count per calendar window: window `w = floor(now / length)`, a count
//! per window, admitted while the count is below the quota; the window ends at
//! `(w + 1) · length`.

use std::time::Duration;

/// A rate as GCRA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between calls at the steady rate.
    pub interval: u64,
    /// How far ahead of `now` the TAT may be and still admit a call.
    pub tolerance: u64,
}

impl Gcra {
    /// `count` calls per `per`, `burst` (≥ 1) at once.
    pub fn new(count: u32, per: Duration, burst: u32) -> Gcra {
        let per = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (per / u64::from(count.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Decide a call at `now` against `tat` (0 for a fresh key): the new TAT,
    /// or how long until a call would be admitted.
    pub fn check(&self, tat: u64, now: u64) -> Result<u64, Duration> {
        let start = tat.max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance));
        }
        Ok(start.saturating_add(self.interval))
    }
}

/// A quota's window at `now_secs` (seconds since the Unix epoch, UTC).
pub fn window(now_secs: u64, length: Duration) -> u64 {
    now_secs / length.as_secs().max(1)
}

/// Decide a call in `current` window against a key's `(window, count)`: the
/// new state, or how long until the window ends.
pub fn quota(
    state: Option<(u64, u64)>,
    current: u64,
    now_secs: u64,
    length: Duration,
    max: u64,
) -> Result<(u64, u64), Duration> {
    let used = match state {
        Some((w, n)) if w == current => n,
        _ => 0,
    };
    if used >= max {
        let end = (current + 1).saturating_mul(length.as_secs().max(1));
        return Err(Duration::from_secs(end.saturating_sub(now_secs).max(1)));
    }
    Ok((current, used + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 10/s, burst 5: 5 at once, then one every 100 ms.
        let g = Gcra::new(10, Duration::from_secs(1), 5);
        assert_eq!(g.interval, S / 10);
        assert_eq!(g.tolerance, 4 * S / 10);
        let mut tat = 0;
        let now = 50 * S;
        for _ in 0..5 {
            tat = g.check(tat, now).expect("within the burst");
        }
        let wait = g.check(tat, now).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(100));
        // Just before the wait is over: still refused; at it: admitted.
        assert!(g.check(tat, now + S / 10 - 1).is_err());
        let tat = g.check(tat, now + S / 10).expect("one interval later");
        assert!(g.check(tat, now + S / 10).is_err());
    }

    #[test]
    fn burst_one_spaces_calls_evenly() {
        let g = Gcra::new(2, Duration::from_secs(1), 1);
        let tat = g.check(0, 10 * S).unwrap();
        assert_eq!(g.check(tat, 10 * S), Err(Duration::from_millis(500)));
        assert!(g.check(tat, 10 * S + S / 2).is_ok());
    }

    #[test]
    fn an_idle_key_is_a_fresh_key() {
        let g = Gcra::new(1, Duration::from_secs(60), 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.check(tat, S).unwrap();
        }
        assert!(g.check(tat, S).is_err());
        // Long after its TAT, a key admits a full burst again.
        let later = tat + 1;
        let mut t2 = tat;
        for _ in 0..3 {
            t2 = g.check(t2, later).unwrap();
        }
        assert!(g.check(t2, later).is_err());
    }

    #[test]
    fn admitted_calls_never_exceed_burst_plus_rate_times_time() {
        // Calls every 7 ms for 3 s against 5/s burst 5.
        let g = Gcra::new(5, Duration::from_secs(1), 5);
        let (mut tat, mut admitted) = (0, 0u64);
        let start = 1_000 * S;
        let mut now = start;
        while now < start + 3 * S {
            if let Ok(t) = g.check(tat, now) {
                tat = t;
                admitted += 1;
            }
            now += 7_000_000;
        }
        let elapsed = (now - start) as f64 / S as f64;
        assert!(admitted as f64 <= 5.0 + 5.0 * elapsed, "{admitted}");
        assert!(admitted >= 15, "the steady rate is served: {admitted}");
    }

    #[test]
    fn quotas_count_per_calendar_window() {
        let day = Duration::from_secs(86_400);
        let now = 20_000 * 86_400 + 3600; // 01:00 UTC
        let w = window(now, day);
        let mut state = None;
        for _ in 0..3 {
            state = Some(quota(state, w, now, day, 3).unwrap());
        }
        assert_eq!(
            quota(state, w, now, day, 3),
            Err(Duration::from_secs(23 * 3600))
        );
        // The next day starts from zero.
        let tomorrow = now + 23 * 3600;
        let w2 = window(tomorrow, day);
        assert_eq!(quota(state, w2, tomorrow, day, 3), Ok((w2, 1)));
    }
}
