//! Typed access to the datapath's maps, for the loader, `status` and tests.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap,
        ProgramArray, lpm_trie::Key,
    },
};
use fw_common::{
    Direction,
    config::{ABI_VERSION, FwConfig},
    conntrack::{CtEntry, CtKey, FragEntry, FragKey},
    counters::{Counter, CounterValue},
    events::RuleInfo,
    maps,
    policy::{
        AddrKey, Chain, ClassEntry, GENERATIONS, IfaceKey, PolicyHeader, RuleMeta, class_index,
        rule_index, table, table_slot, word_index,
    },
};

use crate::{
    error::{Error, Result},
    policy::CompiledPolicy,
};

const _: u32 = table::SLOTS;

/// Handles on every map of one loaded firewall.
pub struct FwMaps {
    pub config: Array<MapData, FwConfig>,
    pub policy: Array<MapData, PolicyHeader>,
    pub rules: Array<MapData, RuleMeta>,
    pub classes: Array<MapData, ClassEntry>,
    pub words: Array<MapData, u64>,
    pub tables: Array<MapData, [u16; 4]>,
    pub src: LpmTrie<MapData, AddrKey, u32>,
    pub dst: LpmTrie<MapData, AddrKey, u32>,
    pub ifaces: HashMap<MapData, IfaceKey, u32>,
    /// Established connections (`FW_CONNTRACK`); see `backend::conntrack`.
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    /// Connections being opened or closed (`FW_CT_TRANSIENT`, LRU).
    pub ct_transient: HashMap<MapData, CtKey, CtEntry>,
    /// Accepted first fragments (`FW_FRAGS`, LRU).
    pub frags: HashMap<MapData, FragKey, FragEntry>,
    pub counters: PerCpuArray<MapData, CounterValue>,
    pub limits: Array<MapData, u64>,
    /// Packets and bytes per rule identity (see `backend::stats`).
    pub rule_stats: PerCpuHashMap<MapData, u64, CounterValue>,
    pub rule_info: Array<MapData, RuleInfo>,
    pub log_stats: PerCpuArray<MapData, u64>,
    pub log_buckets: Array<MapData, u64>,
    pub jump_xdp: ProgramArray<MapData>,
    pub jump_tc: ProgramArray<MapData>,
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(map: Map, name: &str) -> Result<T> {
    T::try_from(map).map_err(|e| Error::bpf(format!("map `{name}` has an unexpected type"), e))
}

impl FwMaps {
    /// Take the maps out of a freshly loaded object (programs keep their
    /// own references, so they go on working).
    ///
    /// # Errors
    /// A map is missing from the object or has the wrong type.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| {
                Error::bpf(
                    format!("map `{name}` is missing from the kernel object"),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })
        };
        Ok(Self {
            config: typed(take(maps::CONFIG)?, maps::CONFIG)?,
            policy: typed(take(maps::POLICY)?, maps::POLICY)?,
            rules: typed(take(maps::RULES)?, maps::RULES)?,
            classes: typed(take(maps::CLASSES)?, maps::CLASSES)?,
            words: typed(take(maps::WORDS)?, maps::WORDS)?,
            tables: typed(take(maps::TABLES)?, maps::TABLES)?,
            src: typed(take(maps::SRC)?, maps::SRC)?,
            dst: typed(take(maps::DST)?, maps::DST)?,
            ifaces: typed(take(maps::IFACES)?, maps::IFACES)?,
            conntrack: typed(take(maps::CONNTRACK)?, maps::CONNTRACK)?,
            ct_transient: typed(take(maps::CT_TRANSIENT)?, maps::CT_TRANSIENT)?,
            frags: typed(take(maps::FRAGS)?, maps::FRAGS)?,
            counters: typed(take(maps::COUNTERS)?, maps::COUNTERS)?,
            limits: typed(take(maps::LIMITS)?, maps::LIMITS)?,
            rule_stats: typed(take(maps::RULE_STATS)?, maps::RULE_STATS)?,
            rule_info: typed(take(maps::RULE_INFO)?, maps::RULE_INFO)?,
            log_stats: typed(take(maps::LOG_STATS)?, maps::LOG_STATS)?,
            log_buckets: typed(take(maps::LOG_BUCKETS)?, maps::LOG_BUCKETS)?,
            jump_xdp: typed(take(maps::JUMP_XDP)?, maps::JUMP_XDP)?,
            jump_tc: typed(take(maps::JUMP_TC)?, maps::JUMP_TC)?,
        })
    }

    /// The layout version (`FwConfig::abi_version`) of the firewall pinned
    /// in `dir`, read from `FW_CONFIG` alone, so that a firewall of another
    /// version is recognised before its other maps are opened.
    ///
    /// # Errors
    /// `FW_CONFIG` is missing or unreadable.
    pub fn pinned_abi(dir: &Path) -> Result<u32> {
        let data = MapData::from_pin(dir.join(maps::CONFIG)).map_err(|e| {
            Error::bpf(
                format!(
                    "cannot open pinned map `{}`",
                    dir.join(maps::CONFIG).display()
                ),
                e,
            )
        })?;
        let map = Map::from_map_data(data)
            .map_err(|e| Error::bpf(format!("pinned map `{}` is not usable", maps::CONFIG), e))?;
        let config: Array<MapData, FwConfig> = typed(map, maps::CONFIG)?;
        config
            .get(&0, 0)
            .map(|c| c.abi_version)
            .map_err(|e| Error::bpf("cannot read `FW_CONFIG`", e))
    }

    /// Open the maps pinned in `dir`.
    ///
    /// # Errors
    /// A pin is missing or is not the map fw expects.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let data = MapData::from_pin(dir.join(name)).map_err(|e| {
                Error::bpf(
                    format!("cannot open pinned map `{}`", dir.join(name).display()),
                    e,
                )
            })?;
            Map::from_map_data(data)
                .map_err(|e| Error::bpf(format!("pinned map `{name}` is not usable"), e))
        };
        Ok(Self {
            config: typed(open(maps::CONFIG)?, maps::CONFIG)?,
            policy: typed(open(maps::POLICY)?, maps::POLICY)?,
            rules: typed(open(maps::RULES)?, maps::RULES)?,
            classes: typed(open(maps::CLASSES)?, maps::CLASSES)?,
            words: typed(open(maps::WORDS)?, maps::WORDS)?,
            tables: typed(open(maps::TABLES)?, maps::TABLES)?,
            src: typed(open(maps::SRC)?, maps::SRC)?,
            dst: typed(open(maps::DST)?, maps::DST)?,
            ifaces: typed(open(maps::IFACES)?, maps::IFACES)?,
            conntrack: typed(open(maps::CONNTRACK)?, maps::CONNTRACK)?,
            ct_transient: typed(open(maps::CT_TRANSIENT)?, maps::CT_TRANSIENT)?,
            frags: typed(open(maps::FRAGS)?, maps::FRAGS)?,
            counters: typed(open(maps::COUNTERS)?, maps::COUNTERS)?,
            limits: typed(open(maps::LIMITS)?, maps::LIMITS)?,
            rule_stats: typed(open(maps::RULE_STATS)?, maps::RULE_STATS)?,
            rule_info: typed(open(maps::RULE_INFO)?, maps::RULE_INFO)?,
            log_stats: typed(open(maps::LOG_STATS)?, maps::LOG_STATS)?,
            log_buckets: typed(open(maps::LOG_BUCKETS)?, maps::LOG_BUCKETS)?,
            jump_xdp: typed(open(maps::JUMP_XDP)?, maps::JUMP_XDP)?,
            jump_tc: typed(open(maps::JUMP_TC)?, maps::JUMP_TC)?,
        })
    }

    /// # Errors
    /// The map could not be read.
    pub fn config(&self) -> Result<FwConfig> {
        self.config
            .get(&0, 0)
            .map_err(|e| Error::bpf("cannot read `FW_CONFIG`", e))
    }

    /// The datapath's clock now: the kernel's monotonic clock plus the
    /// offset tests use to move time forward. Entries are stamped with it.
    ///
    /// # Errors
    /// `FW_CONFIG` cannot be read.
    pub fn datapath_now(&self) -> Result<u64> {
        Ok(monotonic_now_ns() + self.config()?.clock_offset_ns)
    }

    fn set_config(&mut self, cfg: FwConfig) -> Result<()> {
        self.config
            .set(0, cfg, 0)
            .map_err(|e| Error::bpf("cannot write `FW_CONFIG`", e))
    }

    /// Has a policy ever been installed in these maps?
    ///
    /// # Errors
    /// The map could not be read.
    pub fn is_initialised(&self) -> Result<bool> {
        Ok(self.config()?.abi_version != 0)
    }

    /// The header of the policy in force.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn active_header(&self) -> Result<PolicyHeader> {
        let generation = self.config()?.active_gen & 1;
        self.policy
            .get(&generation, 0)
            .map_err(|e| Error::bpf("cannot read `FW_POLICY`", e))
    }

    /// Write `compiled` into the generation not in force, then switch the
    /// datapath to it with one map write. Returns the generation now active.
    /// Packets see either the old or the new policy, never a mix.
    ///
    /// # Errors
    /// A map write failed; the policy in force is then unchanged.
    pub fn install(&mut self, compiled: &CompiledPolicy) -> Result<u32> {
        let mut cfg = self.config()?;
        let target = if cfg.abi_version == 0 {
            0
        } else {
            (cfg.active_gen + 1) % GENERATIONS
        };
        self.clear_generation(target)?;
        // Arrays go in with batch updates, one syscall per few thousand
        // elements.
        super::batch::update_array(self.words.map(), word_index(target, 0), &compiled.words)
            .map_err(|e| Error::io("cannot write `FW_WORDS`", e))?;
        super::batch::update_array(
            self.classes.map(),
            class_index(target, 0),
            &compiled.classes,
        )
        .map_err(|e| Error::io("cannot write `FW_CLASSES`", e))?;
        for chain in Chain::ALL {
            let t = &compiled.chains[chain as usize];
            let rules_at = rule_index(target, compiled.rule_base(chain), 0);
            // Every rule of the new policy starts with a full `limit`.
            let fresh = vec![0u64; t.rules.len()];
            super::batch::update_array(self.limits.map(), rules_at, &fresh)
                .map_err(|e| Error::io("cannot write `FW_LIMITS`", e))?;
            super::batch::update_array(self.rules.map(), rules_at, &t.rules)
                .map_err(|e| Error::io("cannot write `FW_RULES`", e))?;
            let lanes: Vec<[u16; 4]> = t
                .table
                .chunks_exact(4)
                .map(|l| [l[0], l[1], l[2], l[3]])
                .collect();
            let (tables_at, _) = table_slot(target, chain, 0);
            super::batch::update_array(self.tables.map(), tables_at, &lanes)
                .map_err(|e| Error::io("cannot write `FW_TABLES`", e))?;
            for (trie, entries, name) in [
                (&mut self.src, &t.src, "FW_SRC"),
                (&mut self.dst, &t.dst, "FW_DST"),
            ] {
                for entry in entries {
                    let (len, data) = entry.key(target, chain);
                    trie.insert(&Key::new(len, data), u32::from(entry.class), 0)
                        .map_err(|e| Error::bpf(format!("cannot write `{name}`"), e))?;
                }
            }
            for &(ifindex, class) in &t.ifaces {
                let key = IfaceKey {
                    generation: u8::try_from(target).unwrap_or(0),
                    chain: chain as u8,
                    _pad: 0,
                    ifindex,
                };
                self.ifaces
                    .insert(key, u32::from(class), 0)
                    .map_err(|e| Error::bpf("cannot write `FW_IFACES`", e))?;
            }
        }
        self.prepare_observability(compiled, target)?;
        self.policy
            .set(target, compiled.header, 0)
            .map_err(|e| Error::bpf("cannot write `FW_POLICY`", e))?;
        cfg.active_gen = target;
        cfg.abi_version = ABI_VERSION;
        self.set_config(cfg)?;
        Ok(target)
    }

    /// Remove what an earlier policy left in generation `target` of the
    /// tries and the interface map (arrays are overwritten in full).
    fn clear_generation(&mut self, target: u32) -> Result<()> {
        let target = u8::try_from(target).unwrap_or(0);
        for (trie, name) in [(&mut self.src, "FW_SRC"), (&mut self.dst, "FW_DST")] {
            let stale: Vec<Key<AddrKey>> = trie
                .keys()
                .filter_map(std::result::Result::ok)
                .filter(|k| k.data().generation == target)
                .collect();
            for k in stale {
                trie.remove(&k)
                    .map_err(|e| Error::bpf(format!("cannot clean `{name}`"), e))?;
            }
        }
        let stale: Vec<IfaceKey> = self
            .ifaces
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| k.generation == target)
            .collect();
        for k in stale {
            self.ifaces
                .remove(&k)
                .map_err(|e| Error::bpf("cannot clean `FW_IFACES`", e))?;
        }
        Ok(())
    }

    /// Go back to the other generation (used to undo `install`).
    ///
    /// # Errors
    /// The map write failed.
    pub fn flip_back(&mut self) -> Result<()> {
        let mut cfg = self.config()?;
        cfg.active_gen = (cfg.active_gen + 1) % GENERATIONS;
        self.set_config(cfg)
    }

    /// Move the datapath clock (tests only: exercises timeouts).
    ///
    /// # Errors
    /// The map write failed.
    pub fn set_clock_offset(&mut self, offset_ns: u64) -> Result<()> {
        let mut cfg = self.config()?;
        cfg.clock_offset_ns = offset_ns;
        self.set_config(cfg)
    }

    /// Counters summed over CPUs.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn counters(&self) -> Result<Vec<(Direction, Counter, CounterValue)>> {
        let mut out = Vec::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            for c in Counter::ALL {
                let per_cpu = self
                    .counters
                    .get(&c.index(dir), 0)
                    .map_err(|e| Error::bpf("cannot read `FW_COUNTERS`", e))?;
                let sum = per_cpu
                    .iter()
                    .fold(CounterValue::default(), |acc, v| CounterValue {
                        packets: acc.packets + v.packets,
                        bytes: acc.bytes + v.bytes,
                    });
                out.push((dir, c, sum));
            }
        }
        Ok(out)
    }

    /// One counter, summed over CPUs.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn counter(&self, dir: Direction, c: Counter) -> Result<CounterValue> {
        Ok(self
            .counters()?
            .into_iter()
            .find(|(d, k, _)| *d == dir && *k == c)
            .map(|(_, _, v)| v)
            .unwrap_or_default())
    }
}

/// The datapath's clock now: the kernel's monotonic clock, as
/// `bpf_ktime_get_ns` reads it.
#[must_use]
pub fn monotonic_now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(ts.tv_nsec()).unwrap_or(0)
}
