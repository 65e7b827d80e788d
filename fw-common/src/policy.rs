//! The compiled policy as the datapath reads it.
//!
//! The policy is double-buffered: every map below holds two generations and
//! the datapath reads the one `FwConfig::active_gen` names. Within a
//! generation, first-match rule order is resolved at compile time, so the
//! datapath does one array lookup per new flow whatever the rule count.

use crate::Direction;

/// What the policy decided for a new flow.
///
/// Append-only: never renumber; retire a value by renaming it `Reserved…`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No rule matched: fall through to the direction's default.
    NoMatch = 0,
    Accept = 1,
    Drop = 2,
}

impl Action {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Accept,
            2 => Self::Drop,
            _ => Self::NoMatch,
        }
    }
}

/// Number of policy generations kept side by side.
pub const GENERATIONS: u32 = 2;

/// Layer-4 protocols with a per-port table.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProto {
    Tcp = 0,
    Udp = 1,
}

impl PortProto {
    pub const COUNT: u32 = 2;
}

/// Protocols without ports, each with one verdict per direction.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherProto {
    Icmp = 0,
    Icmpv6 = 1,
    /// Any other IP protocol (GRE, ESP, SCTP …).
    Other = 2,
}

impl OtherProto {
    pub const COUNT: usize = 4;
}

/// The verdict of the first matching rule for one (protocol, port), or
/// `Action::NoMatch`. `rule` is the 1-based index of that rule in its
/// direction's list (0 when nothing matched), for counters and events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortVerdict {
    pub action: u8,
    pub _pad: u8,
    pub rule: u16,
}
const _: () = assert!(size_of::<PortVerdict>() == 4);

impl PortVerdict {
    pub const NO_MATCH: Self = Self {
        action: Action::NoMatch as u8,
        _pad: 0,
        rule: 0,
    };
}

/// Entries in `FW_PORTS`: generations × directions × protocols × ports.
pub const PORT_TABLE_ENTRIES: u32 = GENERATIONS * 2 * PortProto::COUNT * 65_536;

/// Index of (generation, direction, protocol, port) in `FW_PORTS`.
#[must_use]
pub const fn port_index(generation: u32, dir: Direction, proto: PortProto, port: u16) -> u32 {
    ((generation * 2 + dir as u32) * PortProto::COUNT + proto as u32) * 65_536 + port as u32
}

/// Per-generation header: everything about a policy that is not per port.
/// Element `generation` of the `FW_POLICY` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyHeader {
    /// Identifies the policy text (FNV-1a of the source) for `status`.
    pub policy_hash: u64,
    /// `Action` for new flows no rule decided, per direction. Never `NoMatch`.
    pub default_action: [u8; 2],
    /// `1`: accept `ICMPv6` neighbour discovery (types 133–137 with hop limit
    /// 255) before the rules; without it IPv6 stops working.
    pub accept_neighbor_discovery: u8,
    pub _pad0: u8,
    /// Number of rules per direction (for status output).
    pub rule_count: [u16; 2],
    /// Verdicts for port-less protocols: `[direction][OtherProto]`.
    pub other: [[PortVerdict; OtherProto::COUNT]; 2],
}
const _: () = assert!(size_of::<PolicyHeader>() == 48);

impl PolicyHeader {
    pub const EMPTY: Self = Self {
        policy_hash: 0,
        default_action: [Action::Drop as u8, Action::Accept as u8],
        accept_neighbor_discovery: 1,
        _pad0: 0,
        rule_count: [0; 2],
        other: [[PortVerdict::NO_MATCH; OtherProto::COUNT]; 2],
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for PortVerdict {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyHeader {}
