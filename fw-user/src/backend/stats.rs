//! Per-rule counters, rule descriptions and event counts in the maps:
//! the loader's side of `FW_RULE_STATS`, `FW_RULE_INFO`, `FW_LOG_STATS`
//! and `FW_LOG_BUCKETS`.
//!
//! Counters are keyed by a rule's stable identity (`RuleMeta::id`), so a
//! reload creates entries for the new rules before switching and removes
//! the entries of rules that are gone after; the rules both policies share
//! keep counting through the switch.

use std::collections::{BTreeSet, HashMap};

use aya::maps::{IterableMap as _, PerCpuValues};
use fw_common::{
    counters::CounterValue,
    events::{GLOBAL_BUCKET, LogStat, RuleInfo, default_stats_id},
    policy::{Chain, ChainHeader, rule_index},
};

use super::maps::FwMaps;
use crate::{
    error::{Error, Result},
    policy::CompiledPolicy,
};

/// The counter identities `compiled` uses: its rules' and the defaults'.
fn ids(compiled: &CompiledPolicy) -> BTreeSet<u64> {
    Chain::ALL
        .iter()
        .flat_map(|c| {
            compiled.chains[*c as usize]
                .rules
                .iter()
                .map(|m| m.id)
                .chain([default_stats_id(*c)])
        })
        .collect()
}

impl FwMaps {
    /// Describe the rules of `compiled` in generation `target`, give every
    /// rule that has none a zeroed counter, and give the rules with their
    /// own `log_rate` a full limiter. Before the switch to `target`.
    ///
    /// # Errors
    /// A map write failed.
    pub(super) fn prepare_observability(
        &mut self,
        compiled: &CompiledPolicy,
        target: u32,
    ) -> Result<()> {
        for chain in Chain::ALL {
            let t = &compiled.chains[chain as usize];
            let at = rule_index(target, compiled.rule_base(chain), 0);
            super::batch::update_array(self.rule_info.map(), at, &t.infos)
                .map_err(|e| Error::io("cannot write `FW_RULE_INFO`", e))?;
            let fresh = vec![0u64; t.rules.len()];
            super::batch::update_array(self.log_buckets.map(), at, &fresh)
                .map_err(|e| Error::io("cannot write `FW_LOG_BUCKETS`", e))?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::io("cannot count the CPUs", e))?;
        let existing = self.stats_ids()?;
        for id in ids(compiled).difference(&existing) {
            match self.rule_stats.insert(
                id,
                PerCpuValues::try_from(vec![CounterValue::default(); cpus])
                    .map_err(|e| Error::io("cannot build per-CPU counters", e))?,
                u64::from(aya_obj::generated::BPF_NOEXIST),
            ) {
                // The datapath created it meanwhile: it holds real counts.
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(Error::bpf("cannot write `FW_RULE_STATS`", e)),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// After the switch to `compiled`: drop the counters of rules it no
    /// longer has. Returns how many were dropped.
    ///
    /// # Errors
    /// A map operation failed.
    pub fn prune_rule_stats(&mut self, compiled: &CompiledPolicy) -> Result<usize> {
        let keep = ids(compiled);
        let stale: Vec<u64> = self
            .stats_ids()?
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        for id in &stale {
            // Gone already (another loader) is fine.
            let _ = self.rule_stats.remove(id);
        }
        Ok(stale.len())
    }

    fn stats_ids(&self) -> Result<BTreeSet<u64>> {
        self.rule_stats
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::bpf("cannot read `FW_RULE_STATS`", e))
    }

    /// Packets and bytes of every rule and default, by identity, summed
    /// over CPUs.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn rule_stats(&self) -> Result<HashMap<u64, CounterValue>> {
        let mut out = HashMap::new();
        for item in &self.rule_stats {
            let (id, per_cpu) = item.map_err(|e| Error::bpf("cannot read `FW_RULE_STATS`", e))?;
            let sum = per_cpu
                .iter()
                .fold(CounterValue::default(), |acc, v| CounterValue {
                    packets: acc.packets + v.packets,
                    bytes: acc.bytes + v.bytes,
                });
            out.insert(id, sum);
        }
        Ok(out)
    }

    /// The descriptions of the rules of the chain `chain` (its header) in
    /// `generation`.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn rule_infos(&self, generation: u32, chain: &ChainHeader) -> Result<Vec<RuleInfo>> {
        (0..u32::from(chain.rule_count))
            .map(|i| {
                self.rule_info
                    .get(&rule_index(generation, chain.rule_base, i), 0)
                    .map_err(|e| Error::bpf("cannot read `FW_RULE_INFO`", e))
            })
            .collect()
    }

    /// Events emitted, suppressed and lost since the firewall was
    /// installed, summed over CPUs.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn log_stats(&self) -> Result<[(LogStat, u64); 3]> {
        let read = |s: LogStat| -> Result<u64> {
            Ok(self
                .log_stats
                .get(&(s as u32), 0)
                .map_err(|e| Error::bpf("cannot read `FW_LOG_STATS`", e))?
                .iter()
                .sum())
        };
        Ok([
            (LogStat::Emitted, read(LogStat::Emitted)?),
            (LogStat::Suppressed, read(LogStat::Suppressed)?),
            (LogStat::Lost, read(LogStat::Lost)?),
        ])
    }

    /// Refill the policy-wide event limiter (tests: a known start).
    ///
    /// # Errors
    /// The map write failed.
    pub fn reset_log_limiter(&mut self) -> Result<()> {
        self.log_buckets
            .set(GLOBAL_BUCKET, 0, 0)
            .map_err(|e| Error::bpf("cannot write `FW_LOG_BUCKETS`", e))
    }
}
