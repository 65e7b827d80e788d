//! `fw-user status`: attachment, policy, connection table and counters.

use std::{collections::BTreeMap, fmt::Write as _};

use fw_common::{
    events::{LogStat, default_stats_id},
    policy::{Action, Chain, PolicyHeader, rule_index},
};
use serde::Serialize;

use crate::{
    backend::{
        conntrack::{self, CtTable, TableUsage},
        iptables,
        maps::FwMaps,
        xdp,
    },
    error::Error,
    error::Result,
    events::text,
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
    /// Every chain with its rules and their counters, as `iptables -vL`.
    pub chains: Vec<ChainStatus>,
    pub conntrack: ConntrackStatus,
    /// Packets by outcome (drop reason, accept path) and direction.
    pub counters: Vec<CounterStatus>,
    pub events: EventStatus,
}

#[derive(Debug, Serialize)]
pub struct ChainStatus {
    pub name: &'static str,
    /// The default: "accept", "drop" or "reject".
    pub policy: &'static str,
    /// New connections the default decided.
    pub packets: u64,
    pub bytes: u64,
    pub rules: Vec<RuleStatus>,
}

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    /// 1-based position in the chain (what events call RULE=).
    pub number: u16,
    pub name: Option<String>,
    pub action: &'static str,
    /// What it matches, as the policy says it.
    #[serde(rename = "match")]
    pub matches: String,
    pub packets: u64,
    pub bytes: u64,
    /// Line in the policy file.
    pub line: u32,
    /// Stable identity: unchanged rules keep it (and their counters)
    /// across reloads.
    pub id: String,
}

/// Log events since the firewall was installed.
#[derive(Debug, Serialize)]
pub struct EventStatus {
    pub emitted: u64,
    /// Held back by the rate limit.
    pub suppressed: u64,
    /// Within the limit, but nobody was reading and the ring was full.
    pub lost: u64,
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
        Action::Drop | Action::NoMatch => "drop",
        Action::Log => "log",
    }
}

/// The chains of the policy in force, with their counters.
fn chains(maps: &FwMaps, generation: u32, header: &PolicyHeader) -> Result<Vec<ChainStatus>> {
    let stats = maps.rule_stats()?;
    let count = |id: u64| stats.get(&id).copied().unwrap_or_default();
    let mut out = Vec::new();
    for chain in Chain::ALL {
        let ch = &header.chains[chain as usize];
        let infos = maps.rule_infos(generation, ch)?;
        let mut rules = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let meta = maps
                .rules
                .get(&rule_index(generation, ch.rule_base, index), 0)
                .map_err(|e| crate::error::Error::bpf("cannot read `FW_RULES`", e))?;
            let c = count(meta.id);
            let name = text(&info.name);
            rules.push(RuleStatus {
                number: u16::try_from(i + 1).unwrap_or(u16::MAX),
                name: (!name.is_empty()).then_some(name),
                action: action_name(meta.action),
                matches: text(&info.text),
                packets: c.packets,
                bytes: c.bytes,
                line: info.line,
                id: format!("{:016x}", meta.id),
            });
        }
        let d = count(default_stats_id(chain));
        out.push(ChainStatus {
            name: chain.name(),
            policy: action_name(ch.default_action),
            packets: d.packets,
            bytes: d.bytes,
            rules,
        });
    }
    Ok(out)
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
    let generation = cfg.active_gen & 1;
    let chains = chains(&maps, generation, &header)?;
    let log = maps.log_stats()?;
    let log_stat = |k: LogStat| log.iter().find(|(x, _)| *x == k).map_or(0, |(_, v)| *v);
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
        chains,
        conntrack: ConntrackStatus {
            entries: records.len(),
            max_entries: maps.ct_capacity(CtTable::Established)?,
            by_state: conntrack::summary(&records),
            tables,
            fragments: maps.frag_usage()?,
        },
        counters,
        events: EventStatus {
            emitted: log_stat(LogStat::Emitted),
            suppressed: log_stat(LogStat::Suppressed),
            lost: log_stat(LogStat::Lost),
        },
    })
}

/// The iptables backend's status: what is loaded and the counters of
/// fw's chains.
#[derive(Debug, Serialize)]
pub struct IptablesStatus {
    pub backend: &'static str,
    pub policy: String,
    pub policy_fingerprint: String,
    /// Guarded interfaces; empty: every interface but lo.
    pub interfaces: Vec<String>,
    /// Connections in the kernel's conntrack table (this namespace).
    pub conntrack_entries: Option<u64>,
    pub rules: Vec<iptables::RuleCounter>,
}

fn iptables_status(layout: &PinLayout, json: bool) -> Result<()> {
    let state = iptables::state(layout)?.ok_or_else(|| Error::NotLoaded(layout.root.clone()))?;
    let s = IptablesStatus {
        backend: "iptables",
        policy: state.policy_name,
        policy_fingerprint: format!("{:016x}", state.policy_hash),
        interfaces: state.ifaces.unwrap_or_default(),
        conntrack_entries: iptables::conntrack_count(),
        rules: iptables::counters()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!(
        "fw: iptables backend; policy {} (fingerprint {})",
        s.policy, s.policy_fingerprint
    );
    if s.interfaces.is_empty() {
        println!("interfaces: every interface but lo");
    } else {
        println!("interfaces: {}", s.interfaces.join(", "));
    }
    if let Some(n) = s.conntrack_entries {
        println!("connection table (kernel conntrack): {n} connections");
    }
    let mut current = (String::new(), "");
    for r in &s.rules {
        if (r.chain.as_str(), r.family) != (current.0.as_str(), current.1) {
            println!("\nChain {} ({})", r.chain, r.family);
            println!("  {:>10} {:>12}  rule", "pkts", "bytes");
            current = (r.chain.clone(), r.family);
        }
        println!("  {:>10} {:>12}  {}", r.packets, r.bytes, r.rule);
    }
    Ok(())
}

/// # Errors
/// As `collect`.
pub fn run(layout: &PinLayout, json: bool) -> Result<()> {
    if iptables::is_active(layout) {
        iptables_status(layout, json)?;
    } else {
        let status = collect(layout)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
        } else {
            print!("{}", crate::output::status_table(&status));
        }
    }
    if !json {
        print!("{}", provenance(layout));
    }
    Ok(())
}

/// Where the running policy came from, and whether it is on probation
/// (`load --confirm`), from the state directory.
fn provenance(layout: &PinLayout) -> String {
    let state = crate::state::StateDir::for_layout(layout);
    let mut out = String::new();
    if let Ok(Some(running)) = state.running() {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(running.meta.loaded_at);
        let _ = writeln!(
            out,
            "\npolicy source: {} (loaded {})",
            running.meta.name,
            humantime::format_rfc3339_seconds(when)
        );
    }
    if let Ok(Some(p)) = state.pending() {
        let left = p.deadline_ms.saturating_sub(crate::state::now_ms()) / 1000;
        let _ = writeln!(
            out,
            "awaiting confirmation: {} is rolled back in {left} s unless `fw-user confirm{}` runs",
            p.policy_name,
            super::load::pin_arg(layout)
        );
    }
    out
}
