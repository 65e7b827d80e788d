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
/// Program array for tail calls (REJECT replies).
pub const JUMP: &str = "FW_JUMP";

/// Every map the loader pins, in a stable order.
pub const ALL: [&str; 11] = [
    CONFIG, POLICY, RULES, CLASSES, TABLES, SRC, DST, IFACES, CONNTRACK, COUNTERS, JUMP,
];

pub const PROG_INGRESS: &str = "fw_ingress";
pub const PROG_EGRESS: &str = "fw_egress";
/// Builds the REJECT reply on ingress; reached by tail call from `fw_ingress`.
pub const PROG_INGRESS_REJECT: &str = "fw_ingress_reject";
/// Passes everything: benchmark floor, and the veth peer of tests.
pub const PROG_PASS: &str = "fw_pass";

/// Slots of `FW_JUMP`.
pub const JUMP_INGRESS_REJECT: u32 = 0;
pub const JUMP_EGRESS_REJECT: u32 = 1;
pub const JUMP_ENTRIES: u32 = 2;

/// Default capacity of the connection table. The map is an LRU hash, so a
/// full table evicts the least recently used entry instead of failing.
pub const CONNTRACK_MAX_ENTRIES: u32 = 65_536;
