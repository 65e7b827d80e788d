//! Names of the BPF maps and programs. The loader finds them by these names
//! in the object file and pins them under `<pin-path>/maps/<NAME>`.

pub const CONFIG: &str = "FW_CONFIG";
pub const POLICY: &str = "FW_POLICY";
pub const RULES: &str = "FW_RULES";
pub const CLASSES: &str = "FW_CLASSES";
pub const TABLES: &str = "FW_TABLES";
pub const SRC: &str = "FW_SRC";
pub const DST: &str = "FW_DST";
pub const IFACES: &str = "FW_IFACES";
pub const CONNTRACK: &str = "FW_CONNTRACK";
pub const COUNTERS: &str = "FW_COUNTERS";
/// Token buckets of rules with `limit`.
pub const LIMITS: &str = "FW_LIMITS";
/// Program arrays for tail calls (REJECT replies). A program array belongs
/// to one program type, so XDP and TC each have their own.
pub const JUMP_XDP: &str = "FW_JUMP_XDP";
pub const JUMP_TC: &str = "FW_JUMP_TC";

/// Every map the loader pins, in a stable order.
pub const ALL: [&str; 13] = [
    CONFIG, POLICY, RULES, CLASSES, TABLES, SRC, DST, IFACES, CONNTRACK, COUNTERS, LIMITS,
    JUMP_XDP, JUMP_TC,
];

pub const PROG_INGRESS: &str = "fw_ingress";
pub const PROG_EGRESS: &str = "fw_egress";
/// Builds the REJECT reply on ingress; reached by tail call from `fw_ingress`.
pub const PROG_INGRESS_REJECT: &str = "fw_ingress_reject";
/// Builds the REJECT reply on egress; reached by tail call from `fw_egress`.
pub const PROG_EGRESS_REJECT: &str = "fw_egress_reject";
/// Passes everything: benchmark floor, and the veth peer of tests.
pub const PROG_PASS: &str = "fw_pass";

/// Slots of the jump tables.
pub const JUMP_REJECT: u32 = 0;
pub const JUMP_ENTRIES: u32 = 1;

/// Default capacity of the connection table. The map is an LRU hash, so a
/// full table evicts the least recently used entry instead of failing.
pub const CONNTRACK_MAX_ENTRIES: u32 = 65_536;
