//! Names of the BPF maps and programs. The loader finds them by these names
//! in the object file and pins them under `<pin-path>/maps/<NAME>`.

pub const CONFIG: &str = "FW_CONFIG";
pub const POLICY: &str = "FW_POLICY";
pub const RULES: &str = "FW_RULES";
pub const CLASSES: &str = "FW_CLASSES";
/// The stored words of the class bitmaps (`policy::ClassEntry`).
pub const WORDS: &str = "FW_WORDS";
pub const TABLES: &str = "FW_TABLES";
pub const SRC: &str = "FW_SRC";
pub const DST: &str = "FW_DST";
pub const IFACES: &str = "FW_IFACES";
/// Established connections: a hash that never evicts.
pub const CONNTRACK: &str = "FW_CONNTRACK";
/// Connections being opened (unreplied) or closed: an LRU hash, which
/// evicts its least recently used entry when full.
pub const CT_TRANSIENT: &str = "FW_CT_TRANSIENT";
/// First fragments accepted, so their later fragments may follow.
pub const FRAGS: &str = "FW_FRAGS";
pub const COUNTERS: &str = "FW_COUNTERS";
/// Token buckets of rules with `limit`.
pub const LIMITS: &str = "FW_LIMITS";
/// Per-CPU packets and bytes of every rule and chain default, keyed by
/// the rule's stable identity, so counters outlive reloads.
pub const RULE_STATS: &str = "FW_RULE_STATS";
/// Names and match texts of the rules (`events::RuleInfo`), for the tools.
pub const RULE_INFO: &str = "FW_RULE_INFO";
/// The event ring buffer (`events::Event`).
pub const EVENTS: &str = "FW_EVENTS";
/// Per-CPU counts of events emitted, suppressed and lost (`LogStat`).
pub const LOG_STATS: &str = "FW_LOG_STATS";
/// Rate limiters of the events (`events::rate_take`).
pub const LOG_BUCKETS: &str = "FW_LOG_BUCKETS";
/// Program arrays for tail calls (REJECT replies). A program array belongs
/// to one program type, so XDP and TC each have their own.
pub const JUMP_XDP: &str = "FW_JUMP_XDP";
pub const JUMP_TC: &str = "FW_JUMP_TC";

/// Every map the loader pins, in a stable order.
pub const ALL: [&str; 21] = [
    CONFIG,
    POLICY,
    RULES,
    CLASSES,
    WORDS,
    TABLES,
    SRC,
    DST,
    IFACES,
    CONNTRACK,
    CT_TRANSIENT,
    FRAGS,
    COUNTERS,
    LIMITS,
    RULE_STATS,
    RULE_INFO,
    EVENTS,
    LOG_STATS,
    LOG_BUCKETS,
    JUMP_XDP,
    JUMP_TC,
];

pub const PROG_INGRESS: &str = "fw_ingress";
pub const PROG_EGRESS: &str = "fw_egress";
/// Builds the REJECT reply on ingress; reached by tail call from `fw_ingress`.
pub const PROG_INGRESS_REJECT: &str = "fw_ingress_reject";
/// Builds the REJECT reply on egress; reached by tail call from `fw_egress`.
pub const PROG_EGRESS_REJECT: &str = "fw_egress_reject";
/// The rules stage on ingress: reached by tail call from `fw_ingress` with
/// the packet parked in `FW_PENDING`.
pub const PROG_INGRESS_RULES: &str = "fw_ingress_rules";
/// The rules stage on egress; reached by tail call from `fw_egress`.
pub const PROG_EGRESS_RULES: &str = "fw_egress_rules";
/// Passes everything: benchmark floor, and the veth peer of tests.
pub const PROG_PASS: &str = "fw_pass";

/// The XDP programs of the firewall, entry point first.
pub const XDP_PROGS: [&str; 3] = [PROG_INGRESS, PROG_INGRESS_RULES, PROG_INGRESS_REJECT];
/// The TC programs of the firewall, entry point first.
pub const TC_PROGS: [&str; 3] = [PROG_EGRESS, PROG_EGRESS_RULES, PROG_EGRESS_REJECT];

/// Slots of the jump tables.
pub const JUMP_REJECT: u32 = 0;
pub const JUMP_RULES: u32 = 1;
pub const JUMP_ENTRIES: u32 = 2;

/// Default capacity of each connection table (`[conntrack] max_entries`);
/// the loader sizes both maps before creating them.
pub const CONNTRACK_MAX_ENTRIES: u32 = 65_536;
/// Capacity of `FW_FRAGS` (datagrams in flight as fragments).
pub const FRAG_MAX_ENTRIES: u32 = 8192;
