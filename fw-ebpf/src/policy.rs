//! Classification of a packet against a chain of the compiled policy: one
//! lookup per match field, each giving a class whose bitmap lists the rules
//! that field value allows; the AND of the bitmaps, lowest bit first, is the
//! first matching rule. The bitmaps are sparse: the AND of the classes'
//! summaries names the candidate words, and only those are fetched. See
//! `fw_common::policy` for the layout.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, maps::lpm_trie::Key};
use fw_common::{
    config::FwConfig,
    family,
    policy::{
        ADDR_KEY_HEADER_BITS, Action, AddrKey, BITMAP_WORDS, Chain, IfaceKey, MAX_RULES_U32,
        PolicyHeader, SUMMARY_WORDS, class_index, rule_index, table, table_slot, word_index,
    },
};

use crate::report::LogTrail;

use crate::maps::{
    FW_CLASSES, FW_CONFIG, FW_DST, FW_IFACES, FW_LIMITS, FW_MATCH, FW_POLICY, FW_RULES, FW_SRC,
    FW_TABLES, FW_WORDS,
};

/// The policy generation in force and the clock, read once per packet so a
/// packet never mixes two policies.
pub struct Snapshot {
    pub generation: u32,
    pub clock_offset_ns: u64,
    pub header: &'static PolicyHeader,
}

#[inline(always)]
pub fn snapshot() -> Option<Snapshot> {
    let cfg: &FwConfig = FW_CONFIG.get(0)?;
    let generation = cfg.active_gen & 1;
    let header = FW_POLICY.get(generation)?;
    Some(Snapshot {
        generation,
        clock_offset_ns: cfg.clock_offset_ns,
        header,
    })
}

/// Everything the rules can match on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Query {
    /// A `Chain`, kept as a byte: the record travels through a map, and
    /// the verifier must see every index into an array bounds-checked.
    pub chain: u8,
    /// A `PacketState`.
    pub state: u8,
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
}

/// The verdict for a packet the rules decided: action, how to reject, and
/// the 1-based rule (0: the chain's default).
pub struct Decision {
    pub action: Action,
    pub reject_with: u8,
    pub rule: u16,
}

/// `Log` rules (and rules over their `limit`) are passed over; at most
/// this many per packet, which bounds the search.
const MAX_PASSES: u32 = 8;

/// Classify `q` against generation `generation` of the policy.
#[inline(always)]
pub fn classify(generation: u32, q: &Query, now: u64, trail: &mut LogTrail) -> Decision {
    let Some(header) = FW_POLICY.get(generation & 1) else {
        return Decision {
            action: Action::Drop,
            reject_with: 0,
            rule: 0,
        };
    };
    let chain = match q.chain {
        0 => Chain::Input,
        1 => Chain::Output,
        _ => Chain::Forward,
    };
    let Some(chain_header) = header.chains.get(chain as usize) else {
        return Decision {
            action: Action::Drop,
            reject_with: 0,
            rule: 0,
        };
    };
    let default = Decision {
        action: Action::from_u8(chain_header.default_action),
        reject_with: chain_header.default_reject_with,
        rule: 0,
    };
    match first_match(
        generation & 1,
        chain,
        q,
        u32::from(chain_header.iface_default_class),
        chain_header.rule_base,
        now,
        trail,
    ) {
        Some(d) => d,
        None => default,
    }
}

#[inline(always)]
fn table_class(generation: u32, chain: Chain, slot: u32) -> Option<u32> {
    let (index, lane) = table_slot(generation, chain, slot);
    let entry = FW_TABLES.get(index)?;
    Some(u32::from(entry[(lane & 3) as usize]))
}

#[inline(always)]
fn addr_class(
    trie: &aya_ebpf::maps::LpmTrie<AddrKey, u32>,
    generation: u32,
    chain: Chain,
    q: &Query,
    addr: &[u32; 4],
) -> Option<u32> {
    let mut data = AddrKey {
        generation: generation as u8,
        chain: chain as u8,
        family: q.family,
        _pad: 0,
        addr: [0; 16],
    };
    // IPv4 keys keep the last 12 bytes zero, as the loader writes them.
    let words = if q.family == family::IPV4 { 1 } else { 4 };
    for (i, word) in addr.iter().enumerate() {
        if i < words {
            data.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    let bits = if q.family == family::IPV4 { 32 } else { 128 };
    trie.get(Key::new(ADDR_KEY_HEADER_BITS + bits, data))
        .copied()
}

/// The classifier's per-CPU search state (`FW_MATCH`): the nine classes
/// looked up for the packet, the candidate words left, and the word being
/// walked.
#[repr(C)]
pub struct MatchState {
    /// `FW_CLASSES` indices, one per match field.
    classes: [u32; FIELDS],
    _pad: u32,
    /// Bit `w`: word `w` may hold a matching rule (every field's summary
    /// has it) and has not been walked yet.
    candidates: [u64; SUMMARY_WORDS],
    /// The rules of word `word_index` that match on every field and have
    /// not been passed over yet.
    word: u64,
    word_index: u32,
    /// Rules passed over (`log`, or over their `limit`).
    passes: u32,
}

/// Match fields, each one class.
const FIELDS: usize = 9;

#[inline(always)]
fn first_match(
    g: u32,
    c: Chain,
    q: &Query,
    iface_default: u32,
    rule_base: u16,
    now: u64,
    trail: &mut LogTrail,
) -> Option<Decision> {
    let icmp_table = if q.family == family::IPV4 {
        table::ICMP4_TYPE
    } else {
        table::ICMP6_TYPE
    };
    let iface_key = IfaceKey {
        generation: g as u8,
        chain: c as u8,
        _pad: 0,
        ifindex: q.ifindex,
    };
    // SAFETY: hash map lookup of a plain key.
    let iface_class = unsafe { FW_IFACES.get(iface_key) }
        .copied()
        .unwrap_or(iface_default);
    let st = FW_MATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot from a map lookup; nothing else uses it while
    // this program runs on this CPU.
    let st = unsafe { &mut *st };
    st.classes = [
        class_index(g, addr_class(&FW_SRC, g, c, q, &q.src)?),
        class_index(g, addr_class(&FW_DST, g, c, q, &q.dst)?),
        class_index(g, table_class(g, c, table::PROTO + u32::from(q.proto))?),
        class_index(g, table_class(g, c, table::SPORT + u32::from(q.sport))?),
        class_index(g, table_class(g, c, table::DPORT + u32::from(q.dport))?),
        class_index(g, table_class(g, c, icmp_table + u32::from(q.icmp_type))?),
        class_index(
            g,
            table_class(g, c, table::TCP_FLAGS + u32::from(q.tcp_flags))?,
        ),
        class_index(g, table_class(g, c, table::STATE + u32::from(q.state & 3))?),
        class_index(g, iface_class),
    ];
    st.candidates = [u64::MAX; SUMMARY_WORDS];
    for i in 0..FIELDS {
        let entry = FW_CLASSES.get(st.classes[i])?;
        for w in 0..SUMMARY_WORDS {
            st.candidates[w] &= entry.summary[w];
        }
    }
    st.word = 0;
    st.word_index = 0;
    st.passes = 0;
    let mut search = Search {
        trail: core::ptr::from_mut(trail),
        now,
        generation: g,
        rule_base: u32::from(rule_base),
        rule: 0,
        action: 0,
        reject_with: 0,
        _pad: [0; 2],
    };
    // The steps run under `bpf_loop` (kernel 5.17): the verifier checks one
    // step once, where an unrolled loop has it walk every way through every
    // step, which the 6.1 verifier gives up on at a million instructions.
    // SAFETY: `match_step` is a BPF function taking `Search`, as given.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            (match_step as *const ()).cast_mut().cast::<c_void>(),
            core::ptr::from_mut(&mut search).cast(),
            0,
        );
    }
    (search.rule != 0).then(|| Decision {
        action: Action::from_u8(search.action),
        reject_with: search.reject_with,
        rule: search.rule as u16,
    })
}

/// Steps of the search: one per candidate word, one per rule passed over.
const MAX_STEPS: u32 = (BITMAP_WORDS + MAX_PASSES as usize + 1) as u32;

/// What the match steps share, on the stack of `first_match`.
#[repr(C)]
struct Search {
    trail: *mut LogTrail,
    now: u64,
    generation: u32,
    /// `ChainHeader::rule_base`.
    rule_base: u32,
    /// Out: the 1-based rule that decided; 0 while none has.
    rule: u32,
    action: u8,
    reject_with: u8,
    _pad: [u8; 2],
}

/// One step of the search, called by `bpf_loop`: 1 stops it (a rule
/// decided, or none is left), 0 goes on: to the next candidate word, or
/// past a `log` rule or a rule over its limit.
#[inline(never)]
extern "C" fn match_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` that `first_match` handed `bpf_loop`.
    let s = unsafe { &mut *ctx.cast::<Search>() };
    match step(s) {
        Some(false) => 0,
        _ => 1,
    }
}

/// `Some(true)`: a rule decided (written into `s`); `Some(false)`: moved
/// to a candidate word or passed over one rule; `None`: no rule left.
#[inline(always)]
fn step(s: &mut Search) -> Option<bool> {
    let g = s.generation & 1;
    let st = FW_MATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot from a map lookup, filled by `first_match`;
    // nothing else uses it while this program runs here.
    let st = unsafe { &mut *st };
    if st.word == 0 {
        // The next candidate word: AND the nine fields' words there.
        let w = take_lowest(&mut st.candidates)?;
        let mut word = u64::MAX;
        for i in 0..FIELDS {
            word &= class_word(g, st.classes[i], w)?;
        }
        st.word = word;
        st.word_index = w;
        return Some(false);
    }
    let rule = (st.word_index * 64 + st.word.trailing_zeros()) % MAX_RULES_U32;
    let slot = rule_index(g, s.rule_base as u16, rule);
    let meta = FW_RULES.get(slot)?;
    let action = Action::from_u8(meta.action);
    // A rule over its `limit` does not match: on to the next one.
    let within_limit = meta.limit_interval_ns == 0 || take_token(slot, meta, s.now);
    if action != Action::Log && within_limit {
        s.rule = rule + 1;
        s.action = meta.action;
        s.reject_with = meta.reject_with;
        return Some(true);
    }
    // A LOG rule logs (after the verdict, `report::after_rules`) and the
    // packet goes on, as does a rule over its limit.
    if action == Action::Log && within_limit {
        // SAFETY: `trail` points at the caller's per-CPU `LogTrail`.
        unsafe { (*s.trail).push(slot) };
    }
    st.word &= st.word - 1;
    st.passes += 1;
    (st.passes < MAX_PASSES).then_some(false)
}

/// Word `w` of the bitmap of class `class` (an `FW_CLASSES` index).
#[inline(always)]
fn class_word(g: u32, class: u32, w: u32) -> Option<u64> {
    let entry = FW_CLASSES.get(class)?;
    let sw = (w / 64) as usize % SUMMARY_WORDS;
    let bit = w % 64;
    let summary = entry.summary[sw];
    // Branch-free: the word at the rank the bit would have, masked to zero
    // when the bit is clear, so the verifier sees one way through.
    let present = 0u64.wrapping_sub((summary >> bit) & 1);
    let below = summary & ((1u64 << bit) - 1);
    let rank = u32::from(entry.rank[sw]) + below.count_ones();
    let word = FW_WORDS.get(word_index(g, entry.offset + rank))?;
    Some(*word & present)
}

/// Take the lowest set bit of `bits` (cleared), if any.
#[inline(always)]
fn take_lowest(bits: &mut [u64; SUMMARY_WORDS]) -> Option<u32> {
    for (w, slot) in bits.iter_mut().enumerate() {
        let b = *slot;
        if b != 0 {
            *slot = b & (b - 1);
            return Some(w as u32 * 64 + b.trailing_zeros());
        }
    }
    None
}

#[inline(always)]
fn take_token(slot: u32, meta: &fw_common::policy::RuleMeta, now: u64) -> bool {
    match FW_LIMITS.get_ptr_mut(slot) {
        // SAFETY: an aligned word of map memory, updated only through
        // `rate_take` (atomically) by every CPU.
        Some(w) => unsafe {
            fw_common::rate::rate_take(w, now, meta.limit_interval_ns, meta.limit_tolerance_ns)
        },
        None => false,
    }
}
