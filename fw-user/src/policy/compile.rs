//! `Policy` → map contents for the bitmap classifier (see
//! `fw_common::policy`). For every match field and every value the field can
//! take, the compiler computes the bitmap of rules that value allows, and
//! interns equal bitmaps into one class (one numbering for the three
//! chains). Rule order lives in the bit positions, so the datapath needs one
//! lookup per field whatever the rule count. The classes are then stored
//! sparsely: a summary of the words that are not zero, and those words.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use fw_common::{
    counters::Counter,
    events::{RuleInfo, default_stats_id},
    family, ipproto,
    policy::{
        Action, AddrKey, BITMAP_WORDS, Chain, ChainHeader, ClassEntry, MAX_CLASSES, MAX_RULES,
        MAX_WORDS, PolicyHeader, RULE_FLAG_LOG, RejectWith, RuleMeta, SUMMARY_WORDS, StageAction,
        table,
    },
    rate::rate_params,
};
use ipnet::IpNet;

use super::{AddrMatch, Policy, PortRange, Rule, RuleAction, Stage, Verdict, fingerprint};
use crate::error::PolicyError;

/// One address-trie entry: family, prefix bytes, prefix length, class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrEntry {
    pub family: u8,
    pub addr: [u8; 16],
    pub prefix_len: u8,
    pub class: u16,
}

impl AddrEntry {
    /// The trie key of this entry in (generation, chain).
    #[must_use]
    pub fn key(&self, generation: u32, chain: Chain) -> (u32, AddrKey) {
        let key = AddrKey {
            generation: u8::try_from(generation).unwrap_or(0),
            chain: chain as u8,
            family: self.family,
            _pad: 0,
            addr: self.addr,
        };
        (
            fw_common::policy::ADDR_KEY_HEADER_BITS + u32::from(self.prefix_len),
            key,
        )
    }
}

/// Everything one chain writes into the maps.
#[derive(Debug)]
pub struct ChainTables {
    pub rules: Vec<RuleMeta>,
    /// Names and texts of the rules, for the tools (same order).
    pub infos: Vec<RuleInfo>,
    /// `table::SLOTS` class ids (ports, protocol, ICMP types, TCP flags, state).
    pub table: Vec<u16>,
    pub src: Vec<AddrEntry>,
    pub dst: Vec<AddrEntry>,
    /// (ifindex, class) for interfaces some rule names.
    pub ifaces: Vec<(u32, u16)>,
}

/// Everything one policy generation writes into the maps.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub header: PolicyHeader,
    pub chains: [ChainTables; 3],
    /// Class id → where its bitmap is (`FW_CLASSES`), for every chain.
    pub classes: Vec<ClassEntry>,
    /// The stored words of the class bitmaps (`FW_WORDS`).
    pub words: Vec<u64>,
    /// `[conntrack] max_entries`: the capacity of each connection table.
    /// Not part of a generation: the maps are sized once, at first load.
    pub ct_max_entries: u32,
    /// `max_entries` was written in the policy (not the default).
    pub ct_max_entries_set: bool,
}

impl CompiledPolicy {
    /// The class id in `slot` of `chain`'s table.
    #[must_use]
    pub fn table_class(&self, chain: Chain, slot: u32) -> u16 {
        self.chains[chain as usize].table[slot as usize]
    }

    /// Where `chain`'s rules start in the generation's rule slots.
    #[must_use]
    pub const fn rule_base(&self, chain: Chain) -> u16 {
        self.header.chains[chain as usize].rule_base
    }

    /// The bitmap of class `class`, rebuilt from its sparse form.
    #[must_use]
    pub fn class_bitmap(&self, class: u16) -> Bits {
        let e = &self.classes[usize::from(class)];
        let mut b = Bits::empty(MAX_RULES);
        let mut at = e.offset as usize;
        for w in 0..BITMAP_WORDS {
            if e.summary[w / 64] & (1 << (w % 64)) != 0 {
                b.0[w] = self.words[at];
                at += 1;
            }
        }
        b
    }
}

/// Compile `policy` (read from `file`, named in errors). `ifindex` resolves
/// interface names of `iface` matches.
///
/// # Errors
/// An interface that does not resolve, or a chain whose rules produce more
/// distinct bitmaps than the classifier holds.
pub fn compile(
    policy: &Policy,
    file: &str,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<CompiledPolicy, PolicyError> {
    let stage = |s: Stage| match s {
        Stage::Accept => StageAction::Accept as u8,
        Stage::Drop => StageAction::Drop as u8,
        Stage::Rules => StageAction::Rules as u8,
    };
    let mut header = PolicyHeader::EMPTY;
    header.policy_hash = policy.hash;
    header.established = stage(policy.stateful.established);
    header.invalid = stage(policy.stateful.invalid);
    header.tcp_syn_only = u8::from(policy.stateful.tcp_syn_only);
    header.neighbor_discovery = stage(policy.stateful.neighbor_discovery);
    header.related = stage(policy.stateful.related);
    header.ct_timeouts = policy.conntrack.timeouts;
    header.log_mask = log_mask(&policy.log);
    (header.log_interval_ns, header.log_tolerance_ns) =
        rate_params(policy.log.rate.interval_ns, policy.log.rate.burst);
    put_text(&mut header.log_prefix, &policy.log.prefix);
    let total: usize = Chain::ALL.iter().map(|&c| policy.rules(c).len()).sum();
    if total > MAX_RULES {
        return Err(PolicyError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!(
                "the policy has {total} rules; fw holds at most {MAX_RULES} in all chains together"
            ),
            hint: "merge rules that differ only in ports or addresses into lists or sets".into(),
        });
    }
    let mut classes = Classes::new();
    let mut chains = Vec::new();
    let mut rule_base = 0u16;
    for chain in Chain::ALL {
        let default = match chain {
            Chain::Input => policy.defaults.input,
            Chain::Output => policy.defaults.output,
            Chain::Forward => policy.defaults.forward,
        };
        let rules = policy.rules(chain);
        let (tables, iface_default) = compile_chain(
            rules,
            chain,
            file,
            ifindex,
            &policy.log.prefix,
            &mut classes,
        )?;
        let (action, with) = match default {
            Verdict::Accept => (Action::Accept, RejectWith::Auto),
            Verdict::Drop => (Action::Drop, RejectWith::Auto),
            Verdict::Reject(w) => (Action::Reject, w),
        };
        header.chains[chain as usize] = ChainHeader {
            default_action: action as u8,
            default_reject_with: with as u8,
            rule_count: u16::try_from(rules.len()).unwrap_or(u16::MAX),
            iface_default_class: iface_default,
            rule_base,
        };
        rule_base += u16::try_from(rules.len()).expect("at most MAX_RULES rules");
        chains.push(tables);
    }
    let chains: [ChainTables; 3] = chains.try_into().expect("three chains");
    let (classes, words) = encode(&classes.list);
    if words.len() > MAX_WORDS as usize {
        return Err(PolicyError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!(
                "the rules' match combinations need {} bitmap words; fw holds at most {MAX_WORDS}",
                words.len()
            ),
            hint: "merge rules that differ only in ports or addresses into lists or sets".into(),
        });
    }
    Ok(CompiledPolicy {
        header,
        chains,
        classes,
        words,
        ct_max_entries: policy.conntrack.max_entries(),
        ct_max_entries_set: policy.conntrack.max_entries.is_some(),
    })
}

/// The outcomes decided outside the rules that `[log]` asks events for,
/// as `PolicyHeader::log_mask`.
fn log_mask(log: &super::LogSettings) -> u32 {
    let mut outcomes = Vec::new();
    if log.default {
        outcomes.extend([Counter::DropDefault, Counter::RejectDefault]);
    }
    if log.invalid {
        outcomes.extend([
            Counter::DropInvalid,
            Counter::DropSpoofed,
            Counter::DropMalformed,
            Counter::DropFragment,
            Counter::DropTableFull,
        ]);
    }
    if log.stateful {
        outcomes.extend([
            Counter::DropEstablished,
            Counter::DropRelated,
            Counter::DropNeighborDiscovery,
        ]);
    }
    outcomes.iter().fold(0, |m, c| m | 1 << (*c as u32))
}

/// A rule bitmap while compiling: bit `i` is rule `i` of a chain, one
/// word per 64 rules of that chain (a whole `MAX_RULES` for
/// `CompiledPolicy::class_bitmap`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bits(Vec<u64>);

impl Bits {
    fn empty(rules: usize) -> Self {
        Self(vec![0; rules.div_ceil(64).max(1)])
    }

    /// Rule `rule` is in the bitmap.
    #[must_use]
    pub fn has(&self, rule: usize) -> bool {
        self.0
            .get(rule / 64)
            .is_some_and(|w| w & (1 << (rule % 64)) != 0)
    }

    fn set(&mut self, rule: usize) {
        self.0[rule / 64] |= 1 << (rule % 64);
    }

    fn clear(&mut self, rule: usize) {
        self.0[rule / 64] &= !(1 << (rule % 64));
    }

    /// The words, as many as the chain needs.
    #[must_use]
    pub fn words(&self) -> &[u64] {
        &self.0
    }
}

/// Interns bitmaps into class ids, for all chains of a policy.
struct Classes {
    ids: HashMap<Bits, u16>,
    list: Vec<Bits>,
}

impl Classes {
    fn new() -> Self {
        Self {
            ids: HashMap::new(),
            list: Vec::new(),
        }
    }

    fn intern(&mut self, b: Bits) -> Option<u16> {
        if let Some(&id) = self.ids.get(&b) {
            return Some(id);
        }
        if self.list.len() >= MAX_CLASSES as usize {
            return None;
        }
        let id = u16::try_from(self.list.len()).ok()?;
        self.list.push(b.clone());
        self.ids.insert(b, id);
        Some(id)
    }
}

/// The sparse form of `classes` (`fw_common::policy::ClassEntry`): entries
/// and the word pool.
fn encode(classes: &[Bits]) -> (Vec<ClassEntry>, Vec<u64>) {
    let mut words = Vec::new();
    let entries = classes
        .iter()
        .map(|b| {
            let mut e = ClassEntry {
                offset: u32::try_from(words.len()).unwrap_or(u32::MAX),
                ..ClassEntry::default()
            };
            for sw in 0..SUMMARY_WORDS {
                e.rank[sw] = u16::try_from(words.len() - e.offset as usize).unwrap_or(u16::MAX);
                for w in sw * 64..(sw + 1) * 64 {
                    let word = b.0.get(w).copied().unwrap_or(0);
                    if word != 0 {
                        e.summary[sw] |= 1 << (w % 64);
                        words.push(word);
                    }
                }
            }
            e
        })
        .collect();
    (entries, words)
}

fn or(a: &Bits, b: &Bits) -> Bits {
    Bits(a.0.iter().zip(&b.0).map(|(x, y)| x | y).collect())
}

fn and(a: &Bits, b: &Bits) -> Bits {
    Bits(a.0.iter().zip(&b.0).map(|(x, y)| x & y).collect())
}

fn and_not(a: &Bits, b: &Bits) -> Bits {
    Bits(a.0.iter().zip(&b.0).map(|(x, y)| x & !y).collect())
}

/// Bitmap of the rules for which `f` holds.
fn rules_where(rules: &[Rule], f: impl Fn(&Rule) -> bool) -> Bits {
    let mut b = Bits::empty(rules.len());
    for (i, r) in rules.iter().enumerate() {
        if f(r) {
            b.set(i);
        }
    }
    b
}

/// Stable identity of a rule across reloads, its key in `FW_RULE_STATS`:
/// the chain, what the rule says (sets by name, so a blocklist that grows
/// keeps its counters), and which occurrence of that text it is (two equal
/// rules of a chain count apart). The line is left out: a rule moved by an
/// edit elsewhere keeps its counters; a rule whose text changes starts
/// from zero.
fn rule_id(chain: Chain, r: &Rule, occurrence: usize) -> u64 {
    let id = fingerprint(&format!(
        "{}|{occurrence}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        chain.name(),
        r,
        r.action,
        r.state,
        r.tcp_flags,
        r.families,
        r.limit,
        r.log,
        r.log_rate,
        r.log_prefix,
    ));
    // Never one of the chain defaults' identities.
    if id >= default_stats_id(Chain::Forward) {
        id / 2
    } else {
        id
    }
}

/// The identities of `rules`, in order.
fn rule_ids(chain: Chain, rules: &[Rule]) -> Vec<u64> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    rules
        .iter()
        .map(|r| {
            let n = seen.entry(format!("{r}|{:?}", r.action)).or_insert(0);
            *n += 1;
            rule_id(chain, r, *n)
        })
        .collect()
}

/// Copy `text` into `out`, NUL padded, cut at a character boundary so
/// that it fits (with a closing "…" when cut).
fn put_text(out: &mut [u8], text: &str) {
    out.fill(0);
    if text.len() <= out.len() {
        out[..text.len()].copy_from_slice(text.as_bytes());
        return;
    }
    let ellipsis = "…";
    let mut end = out.len() - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out[end..end + ellipsis.len()].copy_from_slice(ellipsis.as_bytes());
}

/// What the tools show of `r` (see `RuleInfo`).
fn rule_info(r: &Rule, id: u64, default_prefix: &str) -> RuleInfo {
    let mut info = RuleInfo::EMPTY;
    info.id = id;
    info.line = u32::try_from(r.line).unwrap_or(u32::MAX);
    put_text(&mut info.name, r.name.as_deref().unwrap_or(""));
    put_text(
        &mut info.prefix,
        r.log_prefix.as_deref().unwrap_or(default_prefix),
    );
    put_text(&mut info.text, &r.match_text());
    info
}

#[expect(
    clippy::too_many_lines,
    reason = "one block per match field, in the order the datapath looks them up"
)]
fn compile_chain(
    rules: &[Rule],
    chain: Chain,
    file: &str,
    ifindex: &dyn Fn(&str) -> Option<u32>,
    log_prefix: &str,
    classes: &mut Classes,
) -> Result<(ChainTables, u16), PolicyError> {
    let too_many = || PolicyError {
        file: file.to_string(),
        line: 1,
        column: 1,
        message: format!(
            "the rules need more than {MAX_CLASSES} distinct match combinations (reached in [[{}]])",
            chain.name()
        ),
        hint: "merge rules that differ only in ports or addresses into lists or sets".into(),
    };
    let mut intern = |b: Bits| classes.intern(b).ok_or_else(too_many);

    let ids = rule_ids(chain, rules);
    let infos = rules
        .iter()
        .zip(&ids)
        .map(|(r, &id)| rule_info(r, id, log_prefix))
        .collect();
    let metas = rules
        .iter()
        .zip(&ids)
        .map(|(r, &id)| {
            let (action, with) = match r.action {
                RuleAction::Accept => (Action::Accept, RejectWith::Auto),
                RuleAction::Drop => (Action::Drop, RejectWith::Auto),
                RuleAction::Reject(w) => (Action::Reject, w),
                RuleAction::Log => (Action::Log, RejectWith::Auto),
            };
            let (limit_interval_ns, limit_tolerance_ns) = r
                .limit
                .map_or((0, 0), |l| rate_params(l.interval_ns, l.burst));
            let (log_interval_ns, log_tolerance_ns) = r
                .log_rate
                .map_or((0, 0), |l| rate_params(l.interval_ns, l.burst));
            RuleMeta {
                action: action as u8,
                reject_with: with as u8,
                // `action = "log"` logs by itself; the flag is for a rule
                // that logs and decides.
                flags: if r.log { RULE_FLAG_LOG } else { 0 },
                _pad: [0; 5],
                id,
                limit_interval_ns,
                limit_tolerance_ns,
                log_interval_ns,
                log_tolerance_ns,
            }
        })
        .collect();

    let mut tbl = vec![0u16; table::SLOTS as usize];
    port_field(
        rules,
        |r| &r.sport,
        &mut tbl[table::SPORT as usize..table::DPORT as usize],
        &mut intern,
    )?;
    port_field(
        rules,
        |r| &r.dport,
        &mut tbl[table::DPORT as usize..table::PROTO as usize],
        &mut intern,
    )?;
    for p in 0..=255u8 {
        tbl[(table::PROTO + u32::from(p)) as usize] =
            intern(rules_where(rules, |r| r.proto.is_none_or(|x| x == p)))?;
    }
    for t in 0..=255u8 {
        let v4 = rules_where(rules, |r| {
            r.icmp_type.is_empty() || (r.proto == Some(ipproto::ICMP) && r.icmp_type.contains(&t))
        });
        let v6 = rules_where(rules, |r| {
            r.icmp_type.is_empty() || (r.proto == Some(ipproto::ICMPV6) && r.icmp_type.contains(&t))
        });
        tbl[(table::ICMP4_TYPE + u32::from(t)) as usize] = intern(v4)?;
        tbl[(table::ICMP6_TYPE + u32::from(t)) as usize] = intern(v6)?;
    }
    for f in 0..=255u8 {
        let b = rules_where(rules, |r| r.tcp_flags.is_none_or(|m| f & m.mask == m.comp));
        tbl[(table::TCP_FLAGS + u32::from(f)) as usize] = intern(b)?;
    }
    for s in [
        fw_common::policy::PacketState::New,
        fw_common::policy::PacketState::Established,
        fw_common::policy::PacketState::Related,
        fw_common::policy::PacketState::Invalid,
    ] {
        tbl[(table::STATE + s as u32) as usize] = intern(rules_where(rules, |r| {
            r.state.is_empty() || r.state.contains(&s)
        }))?;
    }

    let src = addr_field(rules, |r| r.src.as_ref(), &mut intern)?;
    let dst = addr_field(rules, |r| r.dst.as_ref(), &mut intern)?;

    let any_iface = rules_where(rules, |r| r.iface.is_empty());
    let iface_default = intern(any_iface.clone())?;
    let names: BTreeSet<&str> = rules
        .iter()
        .flat_map(|r| r.iface.iter().map(String::as_str))
        .collect();
    let mut ifaces = Vec::new();
    for name in names {
        let index = ifindex(name).ok_or_else(|| {
            let line = rules
                .iter()
                .find(|r| r.iface.iter().any(|i| i == name))
                .map_or(1, |r| r.line);
            PolicyError {
                file: file.to_string(),
                line,
                column: 1,
                message: format!(
                    "a [[{}]] rule names interface `{name}`, which does not exist here",
                    chain.name()
                ),
                hint: "`ip link` lists the interfaces of this network namespace".into(),
            }
        })?;
        let b = or(
            &any_iface,
            &rules_where(rules, |r| r.iface.iter().any(|i| i == name)),
        );
        ifaces.push((index, intern(b)?));
    }
    Ok((
        ChainTables {
            rules: metas,
            infos,
            table: tbl,
            src,
            dst,
            ifaces,
        },
        iface_default,
    ))
}

/// Fill `out` (65536 slots) with the class of every port.
fn port_field(
    rules: &[Rule],
    pick: impl Fn(&Rule) -> &[PortRange],
    out: &mut [u16],
    intern: &mut impl FnMut(Bits) -> Result<u16, PolicyError>,
) -> Result<(), PolicyError> {
    let any = rules_where(rules, |r| pick(r).is_empty());
    // Sweep the port line: +1 where a rule's range starts, -1 past its end,
    // visiting only the ports where something changes and filling the
    // stretches between them (a loop over all 65536 ports with a list each
    // cost more than the rest of a small policy's compilation).
    let mut events: Vec<(usize, usize, i32)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        for range in pick(r) {
            events.push((usize::from(range.first), i, 1));
            events.push((usize::from(range.last) + 1, i, -1));
        }
    }
    // Within one port the order does not matter: each rule ends at the
    // depth all its events there add up to.
    events.sort_unstable_by_key(|&(port, _, _)| port);
    let mut depth = vec![0i32; rules.len()];
    let mut current = any.clone();
    let mut class = intern(current.clone())?;
    let mut start = 0;
    let mut next = events.iter().peekable();
    while let Some(&&(port, _, _)) = next.peek() {
        if port >= out.len() {
            // Past 65535: ranges that end at the last port.
            break;
        }
        out[start..port].fill(class);
        while let Some((_, i, d)) = next.next_if(|e| e.0 == port) {
            depth[*i] += d;
            if depth[*i] > 0 {
                current.set(*i);
            } else {
                current.clear(*i);
            }
        }
        current = or(&current, &any);
        class = intern(current.clone())?;
        start = port;
    }
    out[start..].fill(class);
    Ok(())
}

fn net_bytes(net: &IpNet) -> (u8, [u8; 16]) {
    let mut bytes = [0u8; 16];
    match net.addr() {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            (family::IPV4, bytes)
        }
        IpAddr::V6(a) => (family::IPV6, a.octets()),
    }
}

/// Trie entries for an address field: every listed prefix, plus the root
/// of each family, each with the bitmap of rules an address whose longest
/// listed prefix is that one satisfies.
fn addr_field(
    rules: &[Rule],
    pick: impl Fn(&Rule) -> Option<&AddrMatch>,
    intern: &mut impl FnMut(Bits) -> Result<u16, PolicyError>,
) -> Result<Vec<AddrEntry>, PolicyError> {
    let mut entries = Vec::new();
    for v6 in [false, true] {
        let allows = |r: &Rule| if v6 { r.families.ipv6 } else { r.families.ipv4 };
        let wild = rules_where(rules, |r| allows(r) && pick(r).is_none());
        let positive = rules_where(rules, |r| allows(r) && pick(r).is_some_and(|a| !a.negated));
        let negated = rules_where(rules, |r| allows(r) && pick(r).is_some_and(|a| a.negated));
        // Rules listing each prefix.
        let mut direct: HashMap<IpNet, Bits> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if let Some(a) = pick(r).filter(|_| allows(r)) {
                for net in a.nets.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6) {
                    direct
                        .entry(net.trunc())
                        .or_insert_with(|| Bits::empty(rules.len()))
                        .set(i);
                }
            }
        }
        let root: IpNet = if v6 {
            "::/0".parse().expect("root")
        } else {
            "0.0.0.0/0".parse().expect("root")
        };
        let mut prefixes: Vec<IpNet> = direct.keys().copied().collect();
        prefixes.push(root);
        prefixes.sort_unstable();
        prefixes.dedup();
        // In address order, a prefix comes after every prefix containing
        // it (shorter first at the same address), and listed prefixes are
        // nested or disjoint: a stack of the chain of prefixes containing
        // the current one carries what they cover, so a million prefixes
        // take one pass instead of a lookup per prefix length.
        let mut chain: Vec<(IpNet, Bits)> = Vec::new();
        for p in prefixes {
            while chain.last().is_some_and(|(q, _)| !q.contains(&p)) {
                chain.pop();
            }
            // Every listed prefix containing p: the chain's, and p itself.
            let mut covering = chain
                .last()
                .map_or_else(|| Bits::empty(rules.len()), |(_, b)| b.clone());
            if let Some(b) = direct.get(&p) {
                covering = or(&covering, b);
            }
            let bits = or(
                &or(&wild, &and(&covering, &positive)),
                &and_not(&negated, &covering),
            );
            let (fam, addr) = net_bytes(&p);
            entries.push(AddrEntry {
                family: fam,
                addr,
                prefix_len: p.prefix_len(),
                class: intern(bits)?,
            });
            chain.push((p, covering));
        }
    }
    Ok(entries)
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
