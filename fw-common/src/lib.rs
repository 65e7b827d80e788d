//! Everything that crosses the kernel/user boundary of fw: map names, map
//! value layouts, verdict and reason codes, and the connection-tracking
//! state machine that both sides must agree on; and the kernel features the
//! datapath needs (`kernel`).
//!
//! Rules for this crate (see `docs/architecture.md`):
//! - every shared type is `#[repr(C)]`, `Copy`, has explicit padding and a
//!   size assertion, so the kernel and the loader can never disagree;
//! - shared enums have explicit discriminants and are append-only: never
//!   renumber, retire a value by renaming it `Reserved…`.
#![no_std]
// The kernel build needs a compare-and-swap the BPF target does not expose
// (see `atomic::compare_exchange`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

pub mod atomic;
pub mod checksum;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod events;
pub mod kernel;
pub mod maps;
pub mod policy;
pub mod rate;

/// Which hook saw the packet. Also the index of the per-direction halves of
/// the policy and counter maps.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// XDP on a guarded interface: the packet is arriving at the host.
    Ingress = 0,
    /// TC egress on a guarded interface: the host is sending the packet.
    Egress = 1,
}

impl Direction {
    pub const COUNT: usize = 2;

    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ingress => "input",
            Self::Egress => "output",
        }
    }
}

/// IP protocol numbers fw understands at layer 4.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Address families as stored in connection keys.
pub mod family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}
