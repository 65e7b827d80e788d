//! Log events: what the datapath reports through the `FW_EVENTS` ring
//! buffer, how their rate is limited, and the counters of what the limit
//! held back.
//!
//! An event is emitted for a packet matched by a rule with `log = true` or
//! `action = "log"`, and for the outcomes `[log] default` and
//! `[log] invalid` select (`PolicyHeader::log_mask`, one bit per
//! `Counter`). Before it is written, the event takes a token from a
//! rate limiter: the rule's own (`log_rate`) or the policy's (`[log] rate`).
//! An event without a token is counted as suppressed; one the ring buffer
//! has no room for (nobody reading) is counted as lost. Nothing is dropped
//! uncounted.

/// One event, as read from `FW_EVENTS`. Addresses are in network byte
/// order (IPv4 in the first word), ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The datapath clock (`CLOCK_MONOTONIC` plus the test offset).
    pub time_ns: u64,
    /// Stable identity of the rule that logged (`RuleMeta::id`); 0 for an
    /// event of `[log] default` or `[log] invalid`.
    pub rule_id: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub ifindex: u32,
    /// Bytes of the packet as the hook saw it.
    pub len: u32,
    pub sport: u16,
    pub dport: u16,
    /// 1-based rule of `chain` that logged (0: a `[log]` setting did).
    pub log_rule: u16,
    /// 1-based rule that decided the packet (0: a default or a stateful
    /// stage did).
    pub rule: u16,
    /// The packet's outcome: a `Counter` (drop-rule, drop-invalid …), which
    /// also says whether it was accepted, dropped or rejected.
    pub reason: u8,
    /// A `Direction`.
    pub direction: u8,
    /// A `Chain`.
    pub chain: u8,
    /// `family::IPV4`, `family::IPV6`, or 0 when the headers could not be
    /// read (a malformed packet).
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// A `PacketState`.
    pub state: u8,
    /// Policy generation in force (0 or 1): which `FW_RULE_INFO` half
    /// describes `log_rule` and `rule`.
    pub generation: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<Event>() == 80);

/// Bytes of `FW_EVENTS` (a power of two, as the kernel requires): about
/// 3,000 events of backlog when nobody reads.
pub const RING_BYTES: u32 = 256 * 1024;

/// What happened to the events the datapath wanted to emit; the index
/// into the per-CPU `FW_LOG_STATS`.
///
/// Append-only: never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStat {
    /// Written to the ring buffer.
    Emitted = 0,
    /// Held back by the rate limit.
    Suppressed = 1,
    /// Within the limit, but the ring buffer was full (nobody reading, or
    /// a reader too slow).
    Lost = 2,
}

impl LogStat {
    pub const ENTRIES: u32 = 4;
    pub const ALL: [Self; 3] = [Self::Emitted, Self::Suppressed, Self::Lost];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Emitted => "emitted",
            Self::Suppressed => "suppressed",
            Self::Lost => "lost",
        }
    }
}

/// Index in `FW_LOG_BUCKETS` of the policy-wide limiter (`[log] rate`);
/// the slots before it belong to rules with their own `log_rate`, at the
/// rule's `FW_RULES` index.
pub const GLOBAL_BUCKET: u32 = crate::policy::RULE_ENTRIES;
/// Entries of `FW_LOG_BUCKETS`.
pub const BUCKET_ENTRIES: u32 = GLOBAL_BUCKET + 1;

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
    let mut i = 0;
    while i < CAS_ATTEMPTS {
        // SAFETY: the caller's word; a torn read cannot happen on an
        // aligned u64, and a stale one only makes the exchange fail.
        let old = unsafe { core::ptr::read_volatile(tat) };
        let base = if old > now_ns { old } else { now_ns };
        if base - now_ns > tolerance_ns {
            return false;
        }
        // SAFETY: as above.
        if unsafe { compare_exchange(tat, old, base + interval_ns) } {
            return true;
        }
        i += 1;
    }
    false
}

/// Atomically replace `*word` by `new` if it still holds `old`. The BPF
/// target offers no `AtomicU64::compare_exchange` (its Rust target
/// declares no compare-and-swap), but the instruction exists since Linux
/// 5.12 (BPF_CMPXCHG), so the kernel build asks LLVM for it directly.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn compare_exchange(word: *mut u64, old: u64, new: u64) -> bool {
    use core::intrinsics::AtomicOrdering::Relaxed;
    // SAFETY: the caller's aligned word.
    unsafe { core::intrinsics::atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(word, old, new).1 }
}

#[cfg(not(target_arch = "bpf"))]
unsafe fn compare_exchange(word: *mut u64, old: u64, new: u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
    // SAFETY: the caller's aligned word, only used atomically.
    unsafe { AtomicU64::from_ptr(word) }
        .compare_exchange(old, new, Relaxed, Relaxed)
        .is_ok()
}

/// `(interval_ns, tolerance_ns)` of a limiter passing `burst` events at
/// once and then one per `interval_ns`.
#[must_use]
pub const fn rate_params(interval_ns: u64, burst: u32) -> (u64, u64) {
    let burst = if burst == 0 { 1 } else { burst };
    (interval_ns, interval_ns.saturating_mul(burst as u64 - 1))
}

/// Identity in `FW_RULE_STATS` of `chain`'s default policy. Rule
/// identities (`RuleMeta::id`) never take these values.
#[must_use]
pub const fn default_stats_id(chain: crate::policy::Chain) -> u64 {
    u64::MAX - chain as u64
}

/// Entries of `FW_RULE_STATS`: every rule slot of both generations, and
/// the chain defaults, with room for identities in transit during a reload.
pub const RULE_STATS_ENTRIES: u32 = 2 * crate::policy::RULE_ENTRIES;

/// Bytes of the texts kept in a `RuleInfo`.
pub const RULE_NAME_BYTES: usize = 48;
pub const RULE_PREFIX_BYTES: usize = 32;
pub const RULE_TEXT_BYTES: usize = 160;

/// What `status`, `events` and the metrics show of a rule: written by the
/// loader next to the rule's `RuleMeta` (same index) and never read by the
/// datapath. Kept in a map, so any `fw-user` can describe the rules in
/// force without the policy file. Texts are UTF-8, NUL padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// `RuleMeta::id`.
    pub id: u64,
    /// Line of the rule in its policy file.
    pub line: u32,
    pub _pad: u32,
    /// `name`, if the rule has one.
    pub name: [u8; RULE_NAME_BYTES],
    /// The prefix of its log lines (`log_prefix`, else `[log] prefix`).
    pub prefix: [u8; RULE_PREFIX_BYTES],
    /// The match, as `status` prints it (cut at a character boundary).
    pub text: [u8; RULE_TEXT_BYTES],
}
const _: () = assert!(size_of::<RuleInfo>() == 256);

impl RuleInfo {
    pub const EMPTY: Self = Self {
        id: 0,
        line: 0,
        _pad: 0,
        name: [0; RULE_NAME_BYTES],
        prefix: [0; RULE_PREFIX_BYTES],
        text: [0; RULE_TEXT_BYTES],
    };
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::RuleInfo {}
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

    #[test]
    fn default_ids_are_distinct() {
        use crate::policy::Chain;
        let ids = Chain::ALL.map(default_stats_id);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}
