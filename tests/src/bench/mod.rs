//! `cargo xtask bench`: fw measured side by side with what operators would
//! pick instead (iptables, nftables, ipset, xdp-filter) and with the floor
//! and ceiling of XDP itself (empty programs returning PASS and DROP), in
//! one run on one machine. Every figure is reported as a ratio to a
//! baseline measured in the same run: absolute numbers on a shared machine
//! drift, ratios much less.
//!
//! - `bpf`: `bpf(2)` by hand: empty XDP programs, test runs, live-frame
//!   floods, XDP links;
//! - `policies`: the generated policies (N rules, blocklists of N prefixes)
//!   and the packet classes every arm sees;
//! - `testrun`: in-kernel cost per packet with `BPF_PROG_TEST_RUN`
//!   (`repeat`, the kernel's own duration);
//! - `traffic`: real floods over veth between namespaces, per arm;
//! - `control`: compile, load, reload and memory of the control plane,
//!   beside `iptables-restore` and `nft -f`;
//! - `report`: the table, `--json`, and the SVG plot of cost over rule count.
//!
//! Nothing here touches the root namespace: programs are test-run or
//! attached inside namespaces the bench creates, floods are bounded in
//! count and time, and addresses come from the documentation ranges.

pub mod bpf;
pub mod control;
pub mod policies;
pub mod report;
pub mod testrun;
pub mod traffic;

use serde::Serialize;

/// Which part of the bench a figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// `BPF_PROG_TEST_RUN`, ns per packet.
    Kernel,
    /// Floods over veth: packets per second and CPU time per packet.
    Traffic,
    /// Compile/load/reload times, memory.
    Control,
}

/// The unit of `Measurement::value`. Lower is better for all but `Pps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Nanoseconds per packet (test-run duration, or CPU time per packet).
    NsPerPacket,
    /// Packets per second.
    Pps,
    /// Seconds of wall time.
    Seconds,
    /// Bytes of memory.
    Bytes,
}

impl Unit {
    #[must_use]
    pub const fn higher_is_better(self) -> bool {
        matches!(self, Self::Pps)
    }

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::NsPerPacket => "ns/pkt",
            Self::Pps => "pps",
            Self::Seconds => "s",
            Self::Bytes => "bytes",
        }
    }
}

/// One figure of one arm on one case.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub section: Section,
    /// What was measured: `fw`, `xdp-pass`, `xdp-drop`, `xdp-filter`,
    /// `iptables-raw`, `iptables`, `iptables+ipset`, `nft`, `nft-set`,
    /// `none`, ...
    pub arm: String,
    /// The packet class or operation: `established`, `new-syn-allowed`,
    /// `udp-flood`, `load`, `reload`, `map-memory`, ...
    pub case: String,
    /// What the figure varies with (plot x-axis): rules in the policy, or
    /// prefixes in the blocklist; `None` when it does not apply.
    pub rules: Option<u64>,
    pub set_size: Option<u64>,
    pub value: f64,
    pub unit: Unit,
    /// The arm this figure is divided by in the report (same section and
    /// case, and the same `rules`/`set_size` where the baseline has them);
    /// `None`: shown without a ratio.
    pub baseline: Option<String>,
    /// Anything the reader needs to read the figure right (e.g. "xdp-filter
    /// cannot express port ranges: ran with the nearest policy it can").
    pub note: Option<String>,
}

/// How much to measure: `Quick` is a smoke run (a few seconds per section,
/// small sizes) that proves every arm works; `Full` is what
/// `docs/performance.md` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    Quick,
    Full,
}

/// Rule counts of the cost curves.
#[must_use]
pub const fn rule_counts(depth: Depth) -> &'static [u64] {
    match depth {
        Depth::Quick => &[1, 100],
        Depth::Full => &[1, 10, 100, 1_000, 10_000],
    }
}

/// Blocklist sizes.
#[must_use]
pub const fn set_sizes(depth: Depth) -> &'static [u64] {
    match depth {
        Depth::Quick => &[1_000],
        Depth::Full => &[1_000, 100_000, 1_000_000],
    }
}
