//! The rate limiter behind `limit` (rules that match at most so often) and
//! `log_rate`/`[log] rate` (events): GCRA, the token bucket kept as one
//! "theoretical arrival time" word, so every CPU can update it atomically
//! and the bound holds exactly however many CPUs race for it.

use crate::atomic::update;

/// Attempts at the limiter's compare-and-swap before giving up (counted
/// as suppressed): only CPUs racing for the same limiter retry.
const CAS_ATTEMPTS: usize = 4;

/// May one more event pass at `now_ns`? A GCRA limiter (the token bucket as
/// a "theoretical arrival time" in one word, so it updates atomically): on
/// average one event per `interval_ns`, with up to `tolerance_ns /
/// interval_ns + 1` (the burst) at once. A fresh limiter (0) is full.
///
/// Over any period `t` from a full limiter at most `burst + t / interval`
/// events pass, even with every CPU taking at once.
///
/// # Safety
/// `tat` points at an aligned word that every user updates only through
/// this function (or other atomics).
#[expect(
    clippy::inline_always,
    reason = "the kernel build must not make BPF-to-BPF calls"
)]
#[inline(always)]
pub unsafe fn rate_take(tat: *mut u64, now_ns: u64, interval_ns: u64, tolerance_ns: u64) -> bool {
    // SAFETY: the caller's word, updated only atomically.
    unsafe {
        update(tat, CAS_ATTEMPTS, |old| {
            let base = if old > now_ns { old } else { now_ns };
            (base - now_ns <= tolerance_ns).then_some(base + interval_ns)
        })
    }
}

/// `(interval_ns, tolerance_ns)` of a limiter passing `burst` events at
/// once and then one per `interval_ns`.
#[must_use]
pub const fn rate_params(interval_ns: u64, burst: u32) -> (u64, u64) {
    let burst = if burst == 0 { 1 } else { burst };
    (interval_ns, interval_ns.saturating_mul(burst as u64 - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn limiter_passes_the_burst_then_the_rate() {
        // 60/minute, burst 5.
        let (interval, tolerance) = rate_params(SEC, 5);
        let mut word = 0u64;
        let tat = &raw mut word;
        let take = |now| unsafe { rate_take(tat, now, interval, tolerance) };
        let t0 = 1000 * SEC;
        let passed = (0..100).filter(|_| take(t0)).count();
        assert_eq!(passed, 5, "a fresh limiter holds the burst");
        assert!(!take(t0 + SEC / 2));
        assert!(take(t0 + SEC));
        assert!(!take(t0 + SEC));
        // A flood of one attempt per millisecond for 10 s passes the rate.
        let mut passed = 0;
        for ms in 1..=10_000 {
            if take(t0 + SEC + ms * SEC / 1000) {
                passed += 1;
            }
        }
        assert_eq!(passed, 10);
        // A long pause refills to the burst, not beyond.
        let later = t0 + 3600 * SEC;
        let passed = (0..100).filter(|_| take(later)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn limiter_bound_holds_for_any_arrival_pattern() {
        // 7 per second, burst 3: over [0, t] at most 3 + 7t pass.
        let (interval, tolerance) = rate_params(SEC / 7, 3);
        let mut word = 0u64;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = 5 * SEC;
        let start = now;
        let mut passed = 0u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % (SEC / 50);
            // SAFETY: a local word, used by this thread only.
            if unsafe { rate_take(&raw mut word, now, interval, tolerance) } {
                passed += 1;
            }
            let bound = 3 + (now - start) / interval;
            assert!(passed <= bound, "{passed} passed, bound {bound}");
        }
    }
}
