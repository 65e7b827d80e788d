//! Per-CPU packet/byte counters indexed by direction and outcome.

/// What happened to a packet. The index into `FW_COUNTERS` is
/// `direction * Counter::SLOTS + counter`.
///
/// Append-only: never renumber; retire a value by renaming it `Reserved…`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not IPv4/IPv6 (ARP, LLDP …): passed untouched, like netfilter.
    PassNonIp = 0,
    /// Part of a tracked flow.
    AcceptEstablished = 1,
    /// New flow accepted by a rule.
    AcceptRule = 2,
    /// New flow accepted by the direction's default policy.
    AcceptDefault = 3,
    /// IPv6 neighbour discovery (hop limit 255), accepted before the rules.
    AcceptNeighborDiscovery = 4,
    /// Truncated or malformed headers.
    DropMalformed = 5,
    /// Loopback addresses on a non-loopback interface.
    DropSpoofed = 6,
    /// No connection and not a valid start of one (ACK without state, bad flags …).
    DropInvalid = 7,
    /// New flow dropped by a rule.
    DropRule = 8,
    /// New flow dropped by the direction's default policy.
    DropDefault = 9,
    /// A fragment fw cannot vouch for: a later fragment of a datagram whose
    /// first fragment was not seen or not accepted, one overlapping the
    /// layer-4 header, or a first fragment too short to hold that header.
    DropFragment = 10,
    /// Could not create a connection-table entry.
    DropTableFull = 11,
    /// New flow rejected by a rule (dropped and answered).
    RejectRule = 12,
    /// New flow rejected by the chain's default.
    RejectDefault = 13,
    /// INVALID packet accepted because `[stateful] invalid = "accept"`.
    AcceptInvalid = 14,
    /// Packet of a tracked connection dropped by `[stateful] established = "drop"`.
    DropEstablished = 15,
    /// Neighbour discovery dropped by `[stateful] icmpv6_neighbor_discovery = "drop"`.
    DropNeighborDiscovery = 16,
    /// Egress of a packet routed through the host: judged by the forward
    /// chain when it arrived, passed untouched here.
    PassForwarded = 17,
    /// An ICMP error about a tracked connection (RELATED).
    AcceptRelated = 18,
    /// A later fragment of a datagram whose first fragment was accepted.
    AcceptFragment = 19,
    /// RELATED ICMP error dropped by `[stateful] related = "drop"`.
    DropRelated = 20,
}

impl Counter {
    /// Room per direction, so counters can be appended without a new layout.
    pub const SLOTS: u32 = 32;
    /// Total entries in `FW_COUNTERS`.
    pub const MAP_ENTRIES: u32 = Self::SLOTS * 2;

    pub const ALL: [Self; 21] = [
        Self::PassNonIp,
        Self::AcceptEstablished,
        Self::AcceptRule,
        Self::AcceptDefault,
        Self::AcceptNeighborDiscovery,
        Self::DropMalformed,
        Self::DropSpoofed,
        Self::DropInvalid,
        Self::DropRule,
        Self::DropDefault,
        Self::DropFragment,
        Self::DropTableFull,
        Self::RejectRule,
        Self::RejectDefault,
        Self::AcceptInvalid,
        Self::DropEstablished,
        Self::DropNeighborDiscovery,
        Self::PassForwarded,
        Self::AcceptRelated,
        Self::AcceptFragment,
        Self::DropRelated,
    ];

    /// The counter numbered `v`, if there is one.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| *c as u8 == v)
    }

    /// What happened to the packet: "accept", "drop" or "reject".
    #[must_use]
    pub const fn verdict(self) -> &'static str {
        match self {
            Self::RejectRule | Self::RejectDefault => "reject",
            c if c.is_drop() => "drop",
            _ => "accept",
        }
    }

    #[must_use]
    pub const fn index(self, dir: crate::Direction) -> u32 {
        dir as u32 * Self::SLOTS + self as u32
    }

    /// Does the packet stop here (dropped, or rejected)?
    #[must_use]
    pub const fn is_drop(self) -> bool {
        !matches!(
            self,
            Self::PassNonIp
                | Self::AcceptEstablished
                | Self::AcceptRule
                | Self::AcceptDefault
                | Self::AcceptNeighborDiscovery
                | Self::AcceptInvalid
                | Self::PassForwarded
                | Self::AcceptRelated
                | Self::AcceptFragment
        )
    }

    /// Stable name used by `fw-user status` and its JSON output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PassNonIp => "pass-non-ip",
            Self::AcceptEstablished => "accept-established",
            Self::AcceptRule => "accept-rule",
            Self::AcceptDefault => "accept-default",
            Self::AcceptNeighborDiscovery => "accept-neighbor-discovery",
            Self::DropMalformed => "drop-malformed",
            Self::DropSpoofed => "drop-spoofed",
            Self::DropInvalid => "drop-invalid",
            Self::DropRule => "drop-rule",
            Self::DropDefault => "drop-default",
            Self::DropFragment => "drop-fragment",
            Self::DropTableFull => "drop-table-full",
            Self::RejectRule => "reject-rule",
            Self::RejectDefault => "reject-default",
            Self::AcceptInvalid => "accept-invalid",
            Self::DropEstablished => "drop-established",
            Self::DropNeighborDiscovery => "drop-neighbor-discovery",
            Self::PassForwarded => "pass-forwarded",
            Self::AcceptRelated => "accept-related",
            Self::AcceptFragment => "accept-fragment",
            Self::DropRelated => "drop-related",
        }
    }
}

/// One counter cell (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<CounterValue>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for CounterValue {}
