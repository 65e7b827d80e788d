//! Map definitions. Names, layouts and sizes come from `fw-common`, so the
//! loader and the programs cannot drift apart. The loader pins them.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf,
    },
};
use fw_common::{
    config::FwConfig,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey},
    counters::{Counter, CounterValue},
    events::{BUCKET_ENTRIES, LogStat, RING_BYTES, RULE_STATS_ENTRIES, RuleInfo},
    maps::{CONNTRACK_MAX_ENTRIES, FRAG_MAX_ENTRIES, JUMP_ENTRIES},
    policy::{
        ADDR_TRIE_MAX_ENTRIES, AddrKey, CLASS_ENTRIES, ClassEntry, GENERATIONS, IFACE_MAX_ENTRIES,
        IfaceKey, PolicyHeader, RULE_ENTRIES, RuleMeta, TABLE_ENTRIES, WORD_ENTRIES,
    },
};

#[map]
pub static FW_CONFIG: Array<FwConfig> = Array::with_max_entries(1, 0);

#[map]
pub static FW_POLICY: Array<PolicyHeader> = Array::with_max_entries(GENERATIONS, 0);

#[map]
pub static FW_RULES: Array<RuleMeta> = Array::with_max_entries(RULE_ENTRIES, 0);

#[map]
pub static FW_CLASSES: Array<ClassEntry> = Array::with_max_entries(CLASS_ENTRIES, 0);

#[map]
pub static FW_WORDS: Array<u64> = Array::with_max_entries(WORD_ENTRIES, 0);

#[map]
pub static FW_TABLES: Array<[u16; 4]> = Array::with_max_entries(TABLE_ENTRIES, 0);

// LPM tries must not be preallocated; they grow with the sets loaded.
#[map]
pub static FW_SRC: LpmTrie<AddrKey, u32> =
    LpmTrie::with_max_entries(ADDR_TRIE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static FW_DST: LpmTrie<AddrKey, u32> =
    LpmTrie::with_max_entries(ADDR_TRIE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static FW_IFACES: HashMap<IfaceKey, u32> = HashMap::with_max_entries(IFACE_MAX_ENTRIES, 0);

#[map]
pub static FW_CONNTRACK: HashMap<CtKey, CtEntry> =
    HashMap::with_max_entries(CONNTRACK_MAX_ENTRIES, 0);

/// Flows being opened or closed; evicts its least recently used entry when
/// full, so a flood of new flows cannot push out established ones.
#[map]
pub static FW_CT_TRANSIENT: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CONNTRACK_MAX_ENTRIES, 0);

/// First fragments accepted, so that the rest of their datagram may follow.
#[map]
pub static FW_FRAGS: LruHashMap<FragKey, FragEntry> =
    LruHashMap::with_max_entries(FRAG_MAX_ENTRIES, 0);

#[map]
pub static FW_COUNTERS: PerCpuArray<CounterValue> =
    PerCpuArray::with_max_entries(Counter::MAP_ENTRIES, 0);

/// Scratch space too big for the stack (route lookups, REJECT quotes).
#[map]
pub static FW_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// 128 bytes of per-CPU scratch.
#[repr(C)]
pub struct Scratch {
    pub words: [u64; 16],
}

/// The classifier's search state (per CPU), shared by its `bpf_loop`
/// steps. Kernel only.
#[map]
pub static FW_MATCH: PerCpuArray<crate::policy::MatchState> = PerCpuArray::with_max_entries(1, 0);

/// The packet handed from the stateful stages to the rules (per CPU). Kernel
/// only: never read by the loader.
#[map]
pub static FW_PENDING: PerCpuArray<crate::pipeline::Pending> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call targets: the REJECT reply builders, which need a stack of
/// their own. One table per program type (the kernel ties a program array
/// to the type of the programs that use it).
#[map]
pub static FW_JUMP_XDP: ProgramArray = ProgramArray::with_max_entries(JUMP_ENTRIES, 0);

#[map]
pub static FW_JUMP_TC: ProgramArray = ProgramArray::with_max_entries(JUMP_ENTRIES, 0);

/// Rate limiters of rules with `limit`, one word per rule slot, updated
/// atomically by every CPU (`rate::rate_take`).
#[map]
pub static FW_LIMITS: Array<u64> = Array::with_max_entries(RULE_ENTRIES, 0);

/// A loop position kept out of the verifier's sight (see
/// `parse::window_scale`, `policy::first_match`). Kernel only.
#[map]
pub static FW_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Packets and bytes per rule and chain default, per CPU, keyed by the
/// rule's stable identity (`RuleMeta::id`, `events::default_stats_id`).
/// The loader creates the entries of a policy before switching to it and
/// removes those no policy uses any more; the datapath only adds to them.
#[map]
// Not preallocated: room for every rule slot of both generations would be
// megabytes per CPU, and only the loader creates entries.
pub static FW_RULE_STATS: PerCpuHashMap<u64, CounterValue> =
    PerCpuHashMap::with_max_entries(RULE_STATS_ENTRIES, BPF_F_NO_PREALLOC);

/// Rule names and texts for the tools; never read here, declared so that
/// it is created and pinned with the rest.
#[map]
pub static FW_RULE_INFO: Array<RuleInfo> =
    Array::with_max_entries(fw_common::policy::RULE_ENTRIES, 0);

/// Log events for `fw-user load` / `fw-user events`.
#[map]
pub static FW_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events emitted, suppressed by the rate limit, lost to a full ring.
#[map]
pub static FW_LOG_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LogStat::ENTRIES, 0);

/// Event rate limiters (one word each, updated atomically by every CPU).
#[map]
pub static FW_LOG_BUCKETS: Array<u64> = Array::with_max_entries(BUCKET_ENTRIES, 0);
