//! The one atomic the datapath needs beyond what its Rust target offers: a
//! 64-bit compare-and-swap on a map value's word, for state that every CPU
//! updates (rate limiters, a connection's TCP windows), and the retry loop
//! every such update runs.

/// Replace `*word` by `next(old)` atomically, retrying while other CPUs
/// change the word in between, at most `attempts` times (only CPUs racing
/// for the same word retry). `next` returning `None` leaves the word as it
/// is. True when the word was set (or already held the value), false when
/// `next` declined or every attempt lost the race.
///
/// # Safety
/// `word` points at an aligned `u64` that other CPUs change only through
/// `compare_exchange`.
#[expect(
    clippy::inline_always,
    reason = "the kernel build must not make BPF-to-BPF calls"
)]
#[inline(always)]
pub unsafe fn update(
    word: *mut u64,
    attempts: usize,
    mut next: impl FnMut(u64) -> Option<u64>,
) -> bool {
    let mut i = 0;
    while i < attempts {
        // SAFETY: the caller's aligned word; a torn read cannot happen on
        // an aligned u64, and a stale one only makes the exchange fail.
        let old = unsafe { core::ptr::read_volatile(word) };
        let Some(new) = next(old) else {
            return false;
        };
        // SAFETY: as above.
        if new == old || unsafe { compare_exchange(word, old, new) } {
            return true;
        }
        i += 1;
    }
    false
}

/// Atomically replace `*word` by `new` if it still holds `old`. The BPF
/// target offers no `AtomicU64::compare_exchange` (its Rust target
/// declares no compare-and-swap), but the instruction exists since Linux
/// 5.12 (`BPF_CMPXCHG`), so the kernel build asks LLVM for it directly.
///
/// # Safety
/// `word` points at an aligned `u64` that other CPUs change only through
/// this function.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub unsafe fn compare_exchange(word: *mut u64, old: u64, new: u64) -> bool {
    use core::intrinsics::AtomicOrdering::Relaxed;
    // SAFETY: the caller's aligned word.
    unsafe { core::intrinsics::atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(word, old, new).1 }
}

/// Atomically replace `*word` by `new` if it still holds `old` (the host
/// build, for the tests that drive the datapath's code).
///
/// # Safety
/// `word` points at an aligned `u64` that other threads change only
/// atomically.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub unsafe fn compare_exchange(word: *mut u64, old: u64, new: u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
    // SAFETY: the caller's aligned word, only used atomically.
    unsafe { AtomicU64::from_ptr(word) }
        .compare_exchange(old, new, Relaxed, Relaxed)
        .is_ok()
}
