//! Map definitions. Names, layouts and sizes come from `fw-common`, so the
//! loader and the programs cannot drift apart. The loader pins them.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use fw_common::{
    config::FwConfig,
    conntrack::{CtEntry, CtKey},
    counters::{Counter, CounterValue},
    maps::CONNTRACK_MAX_ENTRIES,
    policy::{GENERATIONS, PORT_TABLE_ENTRIES, PolicyHeader, PortVerdict},
};

#[map]
pub static FW_CONFIG: Array<FwConfig> = Array::with_max_entries(1, 0);

#[map]
pub static FW_POLICY: Array<PolicyHeader> = Array::with_max_entries(GENERATIONS, 0);

#[map]
pub static FW_PORTS: Array<PortVerdict> = Array::with_max_entries(PORT_TABLE_ENTRIES, 0);

#[map]
pub static FW_CONNTRACK: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CONNTRACK_MAX_ENTRIES, 0);

#[map]
pub static FW_COUNTERS: PerCpuArray<CounterValue> =
    PerCpuArray::with_max_entries(Counter::MAP_ENTRIES, 0);
