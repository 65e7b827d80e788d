//! The connection tables and the fragment table as the loader, `status`
//! and `fw-user conntrack` see them.
//!
//! A flow lives in one of two maps, by its state
//! (`fw_common::conntrack::is_transient_state`): `FW_CONNTRACK`, a plain
//! hash of established (replied) flows that never evicts, and
//! `FW_CT_TRANSIENT`, an LRU hash of flows being opened or closed, so a
//! flood of new flows can only push out other new or closing ones. The
//! datapath moves an entry when its state crosses that line; a walk of both
//! tables taken meanwhile may see it in both, or in neither.

use std::collections::{BTreeMap, HashMap as StdHashMap};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError};
use fw_common::{
    conntrack::{CtEntry, CtKey, CtState, FragEntry, FragKey, is_expired},
    maps,
};
use serde::Serialize;

use super::maps::FwMaps;
use crate::error::{Error, Result};

/// Which of the two connection tables an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtTable {
    /// `FW_CONNTRACK`: replied flows; never evicts.
    Established,
    /// `FW_CT_TRANSIENT`: unreplied or closing flows; evicts the least
    /// recently used entry when full.
    Transient,
}

impl CtTable {
    pub const ALL: [Self; 2] = [Self::Established, Self::Transient];

    /// As `conntrack list` and `status` print it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Transient => "transient",
        }
    }

    /// The BPF map holding this table.
    #[must_use]
    pub const fn map_name(self) -> &'static str {
        match self {
            Self::Established => maps::CONNTRACK,
            Self::Transient => maps::CT_TRANSIENT,
        }
    }
}

/// One entry of a connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtRecord {
    pub table: CtTable,
    pub key: CtKey,
    pub entry: CtEntry,
}

/// How full one map is, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TableUsage {
    pub name: &'static str,
    pub map: &'static str,
    pub entries: usize,
    pub max_entries: u32,
}

/// What a flush or a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub established: usize,
    pub transient: usize,
    pub fragments: usize,
}

impl Removed {
    /// Connections removed, from both tables.
    #[must_use]
    pub const fn connections(&self) -> usize {
        self.established + self.transient
    }
}

/// Every entry of a hash map: batched where the kernel can (5.6+), key by
/// key otherwise. Entries deleted while we walk are skipped.
fn read_all<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &str,
) -> Result<Vec<(K, V)>> {
    if let Ok(all) = super::batch::lookup_hash(map.map()) {
        return Ok(all);
    }
    map.iter()
        .filter_map(|r| match r {
            Ok(kv) => Some(Ok(kv)),
            Err(MapError::KeyNotFound) => None,
            Err(e) => Some(Err(Error::bpf(format!("cannot read `{name}`"), e))),
        })
        .collect()
}

/// Delete `key`; `false` if it was not there (the datapath may have
/// removed it first).
fn remove_key<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &str,
) -> Result<bool> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(Error::bpf(format!("cannot delete from `{name}`"), e)),
    }
}

fn capacity(map: &MapData, name: &str) -> Result<u32> {
    map.info()
        .map(|i| i.max_entries())
        .map_err(|e| Error::bpf(format!("cannot read the size of `{name}`"), e))
}

impl FwMaps {
    fn ct_map(&self, table: CtTable) -> &HashMap<MapData, CtKey, CtEntry> {
        match table {
            CtTable::Established => &self.conntrack,
            CtTable::Transient => &self.ct_transient,
        }
    }

    fn ct_map_mut(&mut self, table: CtTable) -> &mut HashMap<MapData, CtKey, CtEntry> {
        match table {
            CtTable::Established => &mut self.conntrack,
            CtTable::Transient => &mut self.ct_transient,
        }
    }

    /// Every tracked connection, tagged with its table (a snapshot; the
    /// datapath keeps changing the tables). A flow caught while moving
    /// between the tables is reported once, from the table where it was
    /// seen last.
    ///
    /// # Errors
    /// A map could not be read.
    pub fn ct_records(&self) -> Result<Vec<CtRecord>> {
        let mut records: Vec<CtRecord> = Vec::new();
        let mut seen: StdHashMap<CtKey, usize> = StdHashMap::new();
        for table in CtTable::ALL {
            for (key, entry) in read_all(self.ct_map(table), table.map_name())? {
                let record = CtRecord { table, key, entry };
                match seen.get(&key) {
                    Some(&i) if records[i].entry.last_seen_ns >= entry.last_seen_ns => {}
                    Some(&i) => records[i] = record,
                    None => {
                        seen.insert(key, records.len());
                        records.push(record);
                    }
                }
            }
        }
        Ok(records)
    }

    /// Every tracked connection of both tables, untagged.
    ///
    /// # Errors
    /// A map could not be read.
    pub fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        Ok(self
            .ct_records()?
            .into_iter()
            .map(|r| (r.key, r.entry))
            .collect())
    }

    /// Connections per state name, for `status`.
    ///
    /// # Errors
    /// A map could not be read.
    pub fn conntrack_summary(&self) -> Result<BTreeMap<&'static str, usize>> {
        Ok(summary(&self.ct_records()?))
    }

    /// Capacity of a connection table (its `max_entries`, fixed when the
    /// firewall was first loaded).
    ///
    /// # Errors
    /// The kernel did not describe the map.
    pub fn ct_capacity(&self, table: CtTable) -> Result<u32> {
        capacity(self.ct_map(table).map(), table.map_name())
    }

    /// Entries and capacity of both connection tables, counting `records`
    /// (from `ct_records`).
    ///
    /// # Errors
    /// The kernel did not describe a map.
    pub fn table_usage(&self, records: &[CtRecord]) -> Result<Vec<TableUsage>> {
        CtTable::ALL
            .iter()
            .map(|&table| {
                Ok(TableUsage {
                    name: table.name(),
                    map: table.map_name(),
                    entries: records.iter().filter(|r| r.table == table).count(),
                    max_entries: self.ct_capacity(table)?,
                })
            })
            .collect()
    }

    /// Entries and capacity of the fragment table.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn frag_usage(&self) -> Result<TableUsage> {
        Ok(TableUsage {
            name: "fragments",
            map: maps::FRAGS,
            entries: self.frag_entries()?.len(),
            max_entries: capacity(self.frags.map(), maps::FRAGS)?,
        })
    }

    /// First fragments being tracked.
    ///
    /// # Errors
    /// The map could not be read.
    pub fn frag_entries(&self) -> Result<Vec<(FragKey, FragEntry)>> {
        read_all(&self.frags, maps::FRAGS)
    }

    /// Delete one connection. `false`: it was not (or no longer) there.
    ///
    /// # Errors
    /// The map refused the deletion.
    pub fn ct_remove(&mut self, table: CtTable, key: &CtKey) -> Result<bool> {
        remove_key(self.ct_map_mut(table), key, table.map_name())
    }

    /// Delete `key` from whichever table holds it. `false`: neither did.
    ///
    /// # Errors
    /// A map refused the deletion.
    pub fn ct_remove_any(&mut self, key: &CtKey) -> Result<bool> {
        let mut removed = false;
        for table in CtTable::ALL {
            removed |= self.ct_remove(table, key)?;
        }
        Ok(removed)
    }

    /// Empty both connection tables and the fragment table. Flows the
    /// datapath creates meanwhile survive.
    ///
    /// # Errors
    /// A map could not be read or changed.
    pub fn ct_flush(&mut self) -> Result<Removed> {
        self.remove_where(|_| true, |_| true)
    }

    /// Remove connections and fragments whose time is up at `now_ns` (the
    /// datapath clock). The datapath reclaims expired entries lazily, when
    /// a packet looks them up; this reclaims the rest.
    ///
    /// # Errors
    /// A map could not be read or changed.
    pub fn sweep(&mut self, now_ns: u64) -> Result<Removed> {
        self.remove_where(
            |e| is_expired(e, now_ns),
            |f: &FragEntry| now_ns > f.expires_ns,
        )
    }

    fn remove_where(
        &mut self,
        conn: impl Fn(&CtEntry) -> bool,
        frag: impl Fn(&FragEntry) -> bool,
    ) -> Result<Removed> {
        let mut removed = Removed::default();
        for table in CtTable::ALL {
            let doomed: Vec<CtKey> = read_all(self.ct_map(table), table.map_name())?
                .into_iter()
                .filter(|(_, e)| conn(e))
                .map(|(k, _)| k)
                .collect();
            let mut n = 0;
            for key in &doomed {
                // An entry the datapath refreshed or removed meanwhile is
                // fine to miss.
                if self.ct_remove(table, key)? {
                    n += 1;
                }
            }
            match table {
                CtTable::Established => removed.established = n,
                CtTable::Transient => removed.transient = n,
            }
        }
        let doomed: Vec<FragKey> = self
            .frag_entries()?
            .into_iter()
            .filter(|(_, f)| frag(f))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            if remove_key(&mut self.frags, key, maps::FRAGS)? {
                removed.fragments += 1;
            }
        }
        Ok(removed)
    }

    /// Enter adopted (established) connections into `FW_CONNTRACK`, unless
    /// the flow is already tracked in either table. Returns how many were
    /// added.
    ///
    /// # Errors
    /// A map write failed for another reason than an existing entry.
    pub fn adopt(&mut self, entries: &[(CtKey, CtEntry)]) -> Result<usize> {
        let mut added = 0;
        for (key, entry) in entries {
            // The datapath already follows this flow (its last handshake
            // packet may be in flight): its own entry is the better one.
            if self.ct_transient.get(key, 0).is_ok() {
                continue;
            }
            match self
                .conntrack
                .insert(key, entry, u64::from(aya_obj::generated::BPF_NOEXIST))
            {
                Ok(()) => added += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(Error::bpf("cannot write `FW_CONNTRACK`", e)),
            }
        }
        Ok(added)
    }
}

/// Connections per state name (`conntrack -L` names; UDP and ICMP share
/// UNREPLIED and REPLIED).
#[must_use]
pub fn summary(records: &[CtRecord]) -> BTreeMap<&'static str, usize> {
    let mut by_state = BTreeMap::new();
    for r in records {
        *by_state
            .entry(CtState::from_u8(r.entry.state).name())
            .or_insert(0) += 1;
    }
    by_state
}
