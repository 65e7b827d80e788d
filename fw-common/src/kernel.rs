//! The kernel fw's eBPF datapath needs: every feature the programs of
//! `fw-ebpf` and the loader rely on, the mainline Linux release that
//! introduced it, and what fw uses it for.
//!
//! `fw-user load` checks this list before it loads anything (probing each
//! feature where a probe is cheap, because distribution kernels backport
//! features to older version numbers) and falls back to the iptables
//! backend when something is missing; docs/architecture.md ("Kernel
//! requirements") shows the same list. Add a row here whenever the
//! datapath starts to use something newer.

/// A mainline Linux release: (major, minor).
pub type Version = (u32, u32);

/// What the datapath needs from the kernel. Each has one row in
/// [`REQUIREMENTS`]; the loader knows how to probe each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// TC programs in direct-action mode on a `clsact` qdisc.
    TcClassifier,
    /// Per-CPU hash and array maps.
    PerCpuMaps,
    /// LRU hash maps.
    LruHash,
    /// Longest-prefix-match tries.
    LpmTrie,
    /// XDP programs, in generic (skb) mode on drivers without native XDP.
    Xdp,
    /// `bpf_fib_lookup` from XDP and TC programs.
    FibLookup,
    /// `bpf_xdp_adjust_tail` (shrinking).
    XdpAdjustTail,
    /// Programs of more than 4096 instructions.
    LargePrograms,
    /// Global data: `.rodata` as a map the program addresses directly.
    GlobalData,
    /// `bpf_skb_adjust_room` with `BPF_ADJ_ROOM_MAC`.
    AdjustRoomMac,
    /// Loops the verifier proves bounded.
    BoundedLoops,
    /// `BPF_MAP_UPDATE_BATCH` on array maps.
    MapBatchUpdate,
    /// The BPF ring buffer map.
    RingBuf,
    /// XDP attached through a BPF link (`BPF_LINK_CREATE`).
    XdpLink,
    /// Tail calls from programs that also make BPF-to-BPF calls.
    TailCallsWithCalls,
    /// The `BPF_CMPXCHG` atomic instruction.
    AtomicCmpxchg,
    /// The `bpf_loop` helper, calling a BPF function up to N times.
    Loop,
    /// `bpf_xdp_load_bytes`.
    XdpLoadBytes,
}

/// One thing the datapath needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub feature: Feature,
    /// The feature in the kernel's terms.
    pub name: &'static str,
    /// The mainline release that introduced it, on the architecture this
    /// crate is built for.
    pub since: Version,
    /// What fw needs it for.
    pub used_for: &'static str,
}

/// Mixing tail calls and BPF-to-BPF calls needs the JIT to keep the tail
/// call count across calls: x86-64 since 5.10 (e411901c0b77), arm64 since
/// 6.0 (d4609a5d8c70). fw's entry points tail-call and call `memcpy`,
/// `memset` and friends, which LLVM emits as subprograms.
const TAIL_CALLS_WITH_CALLS: Version = if cfg!(target_arch = "aarch64") {
    (6, 0)
} else {
    (5, 10)
};

/// `BPF_CMPXCHG` arrived in 5.12 (5ffa25502b5a) with the x86-64 JIT; the
/// arm64 JIT learned it in 5.18 (1902472b4fa9). Without JIT support a
/// kernel built with `BPF_JIT_ALWAYS_ON` refuses the program.
const ATOMIC_CMPXCHG: Version = if cfg!(target_arch = "aarch64") {
    (5, 18)
} else {
    (5, 12)
};

/// Everything the datapath needs, oldest first (on x86-64).
pub const REQUIREMENTS: [Requirement; 18] = [
    Requirement {
        feature: Feature::TcClassifier,
        name: "TC `clsact` qdisc with direct-action classifiers",
        since: (4, 5),
        used_for: "the egress hook",
    },
    Requirement {
        feature: Feature::PerCpuMaps,
        name: "per-CPU hash and array maps",
        since: (4, 6),
        used_for: "counters and per-CPU scratch space",
    },
    Requirement {
        feature: Feature::LruHash,
        name: "LRU hash maps",
        since: (4, 10),
        used_for: "the transient connection table and the fragment table",
    },
    Requirement {
        feature: Feature::LpmTrie,
        name: "LPM trie maps",
        since: (4, 11),
        used_for: "address matches",
    },
    Requirement {
        feature: Feature::Xdp,
        name: "XDP with generic mode",
        since: (4, 12),
        used_for: "the ingress hook",
    },
    Requirement {
        feature: Feature::FibLookup,
        name: "`bpf_fib_lookup`",
        since: (4, 18),
        used_for: "telling routed packets from local ones",
    },
    Requirement {
        feature: Feature::XdpAdjustTail,
        name: "`bpf_xdp_adjust_tail`",
        since: (4, 18),
        used_for: "REJECT on ingress",
    },
    Requirement {
        feature: Feature::LargePrograms,
        name: "programs over 4096 instructions",
        since: (5, 2),
        used_for: "the entry programs of about 4500 instructions",
    },
    Requirement {
        feature: Feature::GlobalData,
        name: "global data (`.rodata` maps)",
        since: (5, 2),
        used_for: "constant tables",
    },
    Requirement {
        feature: Feature::AdjustRoomMac,
        name: "`bpf_skb_adjust_room` with `BPF_ADJ_ROOM_MAC`",
        since: (5, 2),
        used_for: "REJECT on egress",
    },
    Requirement {
        feature: Feature::BoundedLoops,
        name: "bounded loops",
        since: (5, 3),
        used_for: "header, option, rule and checksum walks",
    },
    Requirement {
        feature: Feature::MapBatchUpdate,
        name: "`BPF_MAP_UPDATE_BATCH`",
        since: (5, 6),
        used_for: "writing a policy into the maps",
    },
    Requirement {
        feature: Feature::RingBuf,
        name: "BPF ring buffer",
        since: (5, 8),
        used_for: "log events",
    },
    Requirement {
        feature: Feature::XdpLink,
        name: "XDP BPF links",
        since: (5, 9),
        used_for: "an XDP attachment that outlives `fw-user`",
    },
    Requirement {
        feature: Feature::TailCallsWithCalls,
        name: "tail calls mixed with BPF-to-BPF calls",
        since: TAIL_CALLS_WITH_CALLS,
        used_for: "the rules and REJECT stages",
    },
    Requirement {
        feature: Feature::AtomicCmpxchg,
        name: "BPF compare-and-exchange (`BPF_CMPXCHG`)",
        since: ATOMIC_CMPXCHG,
        used_for: "rate limits and the TCP windows of connection tracking",
    },
    Requirement {
        feature: Feature::Loop,
        name: "`bpf_loop`",
        since: (5, 17),
        used_for: "the rule search and REJECT's checksum, verified once per step \
                   (unrolled, they exceed the 6.1 verifier's budget)",
    },
    Requirement {
        feature: Feature::XdpLoadBytes,
        name: "`bpf_xdp_load_bytes`",
        since: (5, 18),
        used_for: "ICMP errors of REJECT on ingress",
    },
];

/// The oldest mainline kernel with every requirement: the newest `since`.
/// Older distribution kernels may still qualify through backports.
pub const MIN_KERNEL: Version = newest(&REQUIREMENTS);

const fn newest(reqs: &[Requirement]) -> Version {
    let mut max = (0, 0);
    let mut i = 0;
    while i < reqs.len() {
        let v = reqs[i].since;
        if v.0 > max.0 || (v.0 == max.0 && v.1 > max.1) {
            max = v;
        }
        i += 1;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_has_one_row() {
        for (i, a) in REQUIREMENTS.iter().enumerate() {
            for b in &REQUIREMENTS[i + 1..] {
                assert_ne!(a.feature, b.feature, "{} listed twice", a.name);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rows_are_oldest_first() {
        assert!(REQUIREMENTS.windows(2).all(|w| w[0].since <= w[1].since));
    }

    #[test]
    fn min_kernel_is_the_newest_requirement() {
        assert!(REQUIREMENTS.iter().all(|r| r.since <= MIN_KERNEL));
        assert!(REQUIREMENTS.iter().any(|r| r.since == MIN_KERNEL));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(MIN_KERNEL, (5, 18));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(MIN_KERNEL, (6, 0));
    }
}
