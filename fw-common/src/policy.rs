//! The compiled policy as the datapath reads it: a bitmap classifier.
//!
//! Every rule of a chain is one bit. Each match field (source, destination,
//! protocol, ports, interface, ICMP type, TCP flags, connection state) is
//! looked up once and yields a *class*: the bitmap of the rules that field
//! value allows. `AND`ing the bitmaps leaves the rules that match on every
//! field; the lowest set bit is the first matching rule.
//!
//! A chain holds up to `MAX_RULES` (16384) rules, so a bitmap is 256 words,
//! but a class is stored sparsely: a `ClassEntry` has a *summary* with one
//! bit per word that is not zero, and only those words are kept, in order,
//! in the generation's word pool (`FW_WORDS`). The datapath `AND`s the nine
//! summaries (4 words each) to find the words where every field allows some
//! rule, lowest first, and only for those fetches and `AND`s the nine
//! words. The cost depends on how many such candidate words there are
//! before the first match, not on how many rules or set entries the policy
//! has: a 10 000-rule policy whose rules differ in address or port costs
//! what a 10-rule one does.
//!
//! Everything is double-buffered: generation `FwConfig::active_gen` is in
//! force, the other one is written by a reload and then switched in.

/// Rules per chain (bits of a class bitmap), and rules per generation:
/// the three chains share one pool of rule slots (`ChainHeader::rule_base`).
pub const MAX_RULES: usize = 16_384;
/// `MAX_RULES` as the datapath indexes it.
pub const MAX_RULES_U32: u32 = 16_384;
const _: () = assert!(MAX_RULES_U32 as usize == MAX_RULES);
/// 64-bit words of a full class bitmap.
pub const BITMAP_WORDS: usize = MAX_RULES / 64;
/// Words of a class summary: one bit per bitmap word.
pub const SUMMARY_WORDS: usize = BITMAP_WORDS / 64;
const _: () = assert!(SUMMARY_WORDS == 4);
/// Distinct class bitmaps per generation (all chains together; class ids
/// are `u16`).
pub const MAX_CLASSES: u32 = 32_768;
/// Stored (non-zero) bitmap words per generation, all classes together.
pub const MAX_WORDS: u32 = 262_144;
/// Number of policy generations kept side by side.
pub const GENERATIONS: u32 = 2;

/// The policy chains.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// New connections to this host (XDP, destination is local).
    Input = 0,
    /// New connections from this host (TC egress).
    Output = 1,
    /// Packets routed through this host.
    Forward = 2,
}

impl Chain {
    pub const COUNT: u32 = 3;
    pub const ALL: [Self; 3] = [Self::Input, Self::Output, Self::Forward];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::Forward => "forward",
        }
    }
}

/// One class (element of `FW_CLASSES`): which words of its bitmap are not
/// zero, and where they are in the word pool. Word `w` (rules `64w` to
/// `64w + 63`) is zero when bit `w` of the summary is clear; otherwise it is
/// pool word `offset + rank[w / 64] + n` of the generation, where `n`
/// counts the summary bits set below bit `w` in its summary word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassEntry {
    /// Bit `w`: word `w` of the bitmap is not zero.
    pub summary: [u64; SUMMARY_WORDS],
    /// Pool index (within the generation) of the class's first word.
    pub offset: u32,
    pub _pad: u32,
    /// Stored words before summary word `i`.
    pub rank: [u16; SUMMARY_WORDS],
}
const _: () = assert!(size_of::<ClassEntry>() == 48);

/// What a rule or default does.
///
/// Append-only: never renumber; retire a value by renaming it `Reserved…`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No rule matched (internal): the chain's default applies.
    NoMatch = 0,
    Accept = 1,
    Drop = 2,
    /// Drop and answer: TCP RST, or an ICMP/ICMPv6 error (`RejectWith`).
    Reject = 3,
    /// Log and go on with the next matching rule (`-j LOG`).
    Log = 4,
}

impl Action {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Accept,
            2 => Self::Drop,
            3 => Self::Reject,
            4 => Self::Log,
            _ => Self::NoMatch,
        }
    }
}

/// How a REJECT answers. `Auto` is iptables' behaviour: TCP RST for TCP,
/// port unreachable for UDP, protocol unreachable otherwise.
///
/// Append-only: never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectWith {
    Auto = 0,
    TcpReset = 1,
    PortUnreachable = 2,
    ProtoUnreachable = 3,
    HostUnreachable = 4,
    NetUnreachable = 5,
    AdminProhibited = 6,
}

impl RejectWith {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::TcpReset,
            2 => Self::PortUnreachable,
            3 => Self::ProtoUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::NetUnreachable,
            6 => Self::AdminProhibited,
            _ => Self::Auto,
        }
    }
}

/// What a `[stateful]` stage does with its packets.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageAction {
    Accept = 1,
    Drop = 2,
    /// Hand the packet to the rules, which see its connection state.
    Rules = 3,
}

impl StageAction {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Accept,
            3 => Self::Rules,
            _ => Self::Drop,
        }
    }
}

/// Connection state of a packet, as the `state` match sees it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketState {
    New = 0,
    Established = 1,
    Related = 2,
    Invalid = 3,
}

/// Per-rule data the datapath needs once a rule matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleMeta {
    /// An `Action`.
    pub action: u8,
    /// A `RejectWith`.
    pub reject_with: u8,
    /// `RULE_FLAG_*`.
    pub flags: u8,
    pub _pad: [u8; 5],
    /// Stable identity of the rule across reloads: its key in
    /// `FW_RULE_STATS`, so an unchanged rule keeps its counters.
    pub id: u64,
    /// `limit`: one match per this many nanoseconds on average (0: no
    /// limit), with up to `limit_tolerance_ns / limit_interval_ns + 1` (the
    /// burst) at once (`rate::rate_take`). The loader multiplies, so the
    /// datapath never has to.
    pub limit_interval_ns: u64,
    pub limit_tolerance_ns: u64,
    /// The rule's own `log_rate` (see `rate::rate_take`); 0: the
    /// policy's `[log] rate` limits its events.
    pub log_interval_ns: u64,
    pub log_tolerance_ns: u64,
}
const _: () = assert!(size_of::<RuleMeta>() == 48);

/// The rule asks for its matches to be logged.
pub const RULE_FLAG_LOG: u8 = 1;

/// Per-chain part of the policy header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainHeader {
    /// `Action` when no rule decides (Accept, Drop or Reject).
    pub default_action: u8,
    /// `RejectWith` of a rejecting default.
    pub default_reject_with: u8,
    pub rule_count: u16,
    /// Class of an interface no rule names.
    pub iface_default_class: u16,
    /// The chain's first slot in the generation's rule pool (`rule_index`).
    pub rule_base: u16,
}
const _: () = assert!(size_of::<ChainHeader>() == 8);

/// Element `generation` of `FW_POLICY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyHeader {
    /// Identifies the policy text (FNV-1a of the source) for `status`.
    pub policy_hash: u64,
    pub chains: [ChainHeader; 3],
    /// `StageAction` for packets of tracked connections (ESTABLISHED).
    pub established: u8,
    /// `StageAction` for INVALID packets.
    pub invalid: u8,
    /// 1: a TCP packet without a connection must be a pure SYN to be NEW;
    /// anything else is INVALID.
    pub tcp_syn_only: u8,
    /// `StageAction` for `ICMPv6` neighbour discovery with hop limit 255.
    pub neighbor_discovery: u8,
    /// `StageAction` for ICMP errors about a tracked connection (RELATED).
    pub related: u8,
    pub _pad: [u8; 3],
    /// `[conntrack]` idle timeouts in seconds, by `CtState`.
    pub ct_timeouts: crate::conntrack::Timeouts,
    /// Outcomes decided outside the rules that emit an event (`[log]
    /// default`, `[log] invalid`): bit `c` for `Counter` `c`.
    pub log_mask: u32,
    pub _pad2: u32,
    /// `[log] rate` and `burst` (see `rate::rate_take`).
    pub log_interval_ns: u64,
    pub log_tolerance_ns: u64,
    /// `[log] prefix`, UTF-8, NUL padded. Not read by the datapath: kept
    /// here so that any `fw-user` formats events as the policy asks.
    pub log_prefix: [u8; crate::events::RULE_PREFIX_BYTES],
}
const _: () = assert!(size_of::<PolicyHeader>() == 160);

impl PolicyHeader {
    pub const EMPTY: Self = Self {
        policy_hash: 0,
        chains: [ChainHeader {
            default_action: Action::Drop as u8,
            default_reject_with: 0,
            rule_count: 0,
            iface_default_class: 0,
            rule_base: 0,
        }; 3],
        established: StageAction::Accept as u8,
        invalid: StageAction::Drop as u8,
        tcp_syn_only: 1,
        neighbor_discovery: StageAction::Accept as u8,
        related: StageAction::Accept as u8,
        _pad: [0; 3],
        ct_timeouts: crate::conntrack::DEFAULT_TIMEOUTS,
        log_mask: 0,
        _pad2: 0,
        log_interval_ns: 0,
        log_tolerance_ns: 0,
        log_prefix: [0; crate::events::RULE_PREFIX_BYTES],
    };
}

// ---- per-field tables -------------------------------------------------

/// Small per-field tables share one array, `FW_TABLES`, of `[u16; 4]`
/// elements holding class ids. Each (generation, chain) owns a block of
/// `TABLE_SLOTS` slots, laid out by the offsets below.
pub mod table {
    pub const SPORT: u32 = 0;
    pub const DPORT: u32 = 65_536;
    pub const PROTO: u32 = 131_072;
    pub const ICMP4_TYPE: u32 = 131_328;
    pub const ICMP6_TYPE: u32 = 131_584;
    pub const TCP_FLAGS: u32 = 131_840;
    pub const STATE: u32 = 132_096;
    /// Slots per block (multiple of 4).
    pub const SLOTS: u32 = 132_100;
    /// `[u16; 4]` elements per block.
    pub const ELEMENTS: u32 = SLOTS / 4;
}
const _: () = assert!(table::SLOTS.is_multiple_of(4));

/// Entries of `FW_TABLES`.
pub const TABLE_ENTRIES: u32 = GENERATIONS * Chain::COUNT * table::ELEMENTS;

/// Element index and lane of slot `slot` of (generation, chain).
#[must_use]
pub const fn table_slot(generation: u32, chain: Chain, slot: u32) -> (u32, u32) {
    (
        (generation * Chain::COUNT + chain as u32) * table::ELEMENTS + slot / 4,
        slot % 4,
    )
}

/// Entries of `FW_CLASSES`.
pub const CLASS_ENTRIES: u32 = GENERATIONS * MAX_CLASSES;

/// Index of `class` of `generation` in `FW_CLASSES`.
#[must_use]
pub const fn class_index(generation: u32, class: u32) -> u32 {
    (generation % GENERATIONS) * MAX_CLASSES + (class % MAX_CLASSES)
}

/// Entries of `FW_WORDS`.
pub const WORD_ENTRIES: u32 = GENERATIONS * MAX_WORDS;

/// Index of pool word `word` of `generation` in `FW_WORDS`.
#[must_use]
pub const fn word_index(generation: u32, word: u32) -> u32 {
    (generation % GENERATIONS) * MAX_WORDS + (word % MAX_WORDS)
}

/// Entries of `FW_RULES` (and of the other per-rule arrays).
pub const RULE_ENTRIES: u32 = GENERATIONS * MAX_RULES_U32;

/// Index in `FW_RULES` of rule `rule` (0-based) of the chain whose rules
/// start at `base` (`ChainHeader::rule_base`) in `generation`.
#[must_use]
pub const fn rule_index(generation: u32, base: u16, rule: u32) -> u32 {
    (generation % GENERATIONS) * MAX_RULES_U32 + (base as u32 + rule) % MAX_RULES_U32
}

/// The 0-based rule number within its chain of `FW_RULES` slot `slot`.
#[must_use]
pub const fn rule_number(slot: u32, base: u16) -> u32 {
    (slot % MAX_RULES_U32).wrapping_sub(base as u32) % MAX_RULES_U32
}

/// Key of the address tries `FW_SRC` and `FW_DST` (`LpmTrie` data). The
/// first four bytes (generation, chain, family, 0) are always part of the
/// prefix, so `prefix_len` = 32 + address prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub generation: u8,
    pub chain: u8,
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    pub _pad: u8,
    /// IPv4 uses the first four bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<AddrKey>() == 20);

/// Bits of `AddrKey` before the address.
pub const ADDR_KEY_HEADER_BITS: u32 = 32;

/// Key of `FW_IFACES`: which class an interface has in a chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    pub generation: u8,
    pub chain: u8,
    pub _pad: u16,
    pub ifindex: u32,
}
const _: () = assert!(size_of::<IfaceKey>() == 8);

/// Capacity of each address trie (both generations, every chain).
pub const ADDR_TRIE_MAX_ENTRIES: u32 = 2_200_000;
/// Capacity of `FW_IFACES`.
pub const IFACE_MAX_ENTRIES: u32 = 4096;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ClassEntry {}
    unsafe impl aya::Pod for super::RuleMeta {}
    unsafe impl aya::Pod for super::PolicyHeader {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::IfaceKey {}
}
