//! `fw-user status`: attachment, policy, connection table and counters.

use std::collections::BTreeMap;

use fw_common::policy::{Action, Chain};
use serde::Serialize;

use crate::{
    backend::{
        conntrack::{self, CtTable, TableUsage},
        xdp,
    },
    error::Result,
    ifaces,
    pin::PinLayout,
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub backend: &'static str,
    pub pin_path: String,
    pub generation: u32,
    pub policy_fingerprint: String,
    pub defaults: BTreeMap<&'static str, &'static str>,
    pub rules: BTreeMap<&'static str, u16>,
    pub interfaces: Vec<InterfaceStatus>,
    pub conntrack: ConntrackStatus,
    pub counters: Vec<CounterStatus>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub present: bool,
    pub xdp: String,
    pub tc_egress: String,
}

#[derive(Debug, Serialize)]
pub struct ConntrackStatus {
    /// Connections in both tables.
    pub entries: usize,
    /// `[conntrack] max_entries`: the capacity of each table.
    pub max_entries: u32,
    pub by_state: BTreeMap<&'static str, usize>,
    /// The established and the transient table.
    pub tables: Vec<TableUsage>,
    pub fragments: TableUsage,
}

#[derive(Debug, Serialize)]
pub struct CounterStatus {
    pub direction: &'static str,
    pub name: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

fn action_name(a: u8) -> &'static str {
    match Action::from_u8(a) {
        Action::Accept => "accept",
        Action::Reject => "reject",
        Action::Drop | Action::NoMatch | Action::Log => "drop",
    }
}

/// Gather the status of the firewall at `layout`.
///
/// # Errors
/// No firewall there, or its maps could not be read.
pub fn collect(layout: &PinLayout) -> Result<Status> {
    let maps = xdp::open_loaded(layout)?;
    let cfg = maps.config()?;
    let header = maps.active_header()?;
    let records = maps.ct_records()?;
    let tables = maps.table_usage(&records)?;
    let interfaces = xdp::attached_ifaces(layout)?
        .into_iter()
        .map(|name| {
            let a = xdp::attachment(layout, &name);
            InterfaceStatus {
                present: ifaces::exists(&name),
                name,
                xdp: a.xdp_mode,
                tc_egress: a.tc_mode,
            }
        })
        .collect();
    let counters = maps
        .counters()?
        .into_iter()
        .map(|(d, c, v)| CounterStatus {
            direction: d.name(),
            name: c.name(),
            packets: v.packets,
            bytes: v.bytes,
        })
        .collect();
    Ok(Status {
        backend: "xdp",
        pin_path: layout.root.display().to_string(),
        generation: cfg.active_gen,
        policy_fingerprint: format!("{:016x}", header.policy_hash),
        defaults: Chain::ALL
            .iter()
            .map(|c| {
                (
                    c.name(),
                    action_name(header.chains[*c as usize].default_action),
                )
            })
            .collect(),
        rules: Chain::ALL
            .iter()
            .map(|c| (c.name(), header.chains[*c as usize].rule_count))
            .collect(),
        interfaces,
        conntrack: ConntrackStatus {
            entries: records.len(),
            max_entries: maps.ct_capacity(CtTable::Established)?,
            by_state: conntrack::summary(&records),
            tables,
            fragments: maps.frag_usage()?,
        },
        counters,
    })
}

/// # Errors
/// As `collect`.
pub fn run(layout: &PinLayout, json: bool) -> Result<()> {
    let status = collect(layout)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", crate::output::status_table(&status));
    }
    Ok(())
}
