//! `fw-user load`: compile, install or replace atomically, then either
//! return (`--detach`) or stay to sweep expired connections.

use std::{path::Path, time::Duration};

use fw_common::Direction;

use crate::{
    backend::{conntrack::Removed, maps::FwMaps, xdp},
    error::Result,
    ifaces,
    pin::{PinLayout, ensure_bpffs},
    policy,
};

/// How often the foreground loop reclaims expired connection entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// # Errors
/// The policy is invalid or could not be put in place; the previous state
/// of the host is then unchanged.
pub fn run(
    path: Option<&Path>,
    cli_ifaces: &[String],
    layout: &PinLayout,
    detach: bool,
) -> Result<()> {
    let (policy, name) = super::read_policy(path)?;
    let compiled = policy::compile(&policy, &name, &|n| nix::net::if_::if_nametoindex(n).ok())?;
    let targets = if !cli_ifaces.is_empty() {
        cli_ifaces.to_vec()
    } else if let Some(list) = &policy.interfaces {
        list.clone()
    } else {
        ifaces::up_interfaces()?
    };
    ifaces::validate(&targets)?;
    if let Some(note) = ensure_bpffs(&layout.root)? {
        println!("fw: {note}");
    }
    let report = xdp::load(layout, &compiled, &targets)?;
    println!(
        "fw: {} policy {name} (generation {}; {} input, {} output, {} forward rules; defaults: input {}, output {}, forward {})",
        if report.fresh {
            "loaded"
        } else {
            "replaced the running policy with"
        },
        report.generation,
        policy.input.len(),
        policy.output.len(),
        policy.forward.len(),
        policy.defaults.input,
        policy.defaults.output,
        policy.defaults.forward,
    );
    for a in &report.attached {
        println!(
            "fw: guarding {} (xdp {}, tc egress {})",
            a.iface, a.xdp_mode, a.tc_mode
        );
    }
    if report.fresh {
        println!(
            "fw: connection tables hold {} connections each (`[conntrack] max_entries`, fixed until `fw-user unload`)",
            compiled.ct_max_entries
        );
    }
    for iface in &report.detached {
        println!("fw: no longer guarding {iface}");
    }
    if report.adopted_connections > 0 {
        println!(
            "fw: adopted {} established connection(s) opened before this load",
            report.adopted_connections
        );
    }
    println!(
        "fw: pinned at {}; the firewall stays after fw-user exits (`fw-user unload` removes it)",
        layout.root.display()
    );
    if detach {
        return Ok(());
    }
    foreground(layout)
}

/// Sweep expired entries until interrupted. Leaving this loop never
/// unloads the firewall: the pinned programs keep filtering.
fn foreground(layout: &PinLayout) -> Result<()> {
    println!(
        "fw: staying in the foreground to sweep expired connections (Ctrl-C leaves; use --detach to skip)"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::io("cannot start the runtime", e))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| crate::error::Error::io("cannot watch SIGTERM", e))?;
        let mut last_drops = None;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                () = tokio::time::sleep(SWEEP_INTERVAL) => {
                    let mut maps = FwMaps::open_pinned(&layout.maps_dir())?;
                    let swept = maps.sweep(maps.datapath_now()?)?;
                    let entries = maps.ct_records()?.len();
                    let drops: u64 = maps
                        .counters()?
                        .iter()
                        .filter(|(d, c, _)| *d == Direction::Ingress && c.is_drop())
                        .map(|(_, _, v)| v.packets)
                        .sum();
                    if last_drops != Some(drops) || swept != Removed::default() {
                        println!(
                            "fw: {entries} tracked connections; swept {} expired connections and {} fragment entries; {drops} inbound packets dropped so far",
                            swept.connections(),
                            swept.fragments,
                        );
                        last_drops = Some(drops);
                    }
                }
            }
        }
        println!("fw: leaving the foreground; the firewall stays loaded");
        Ok(())
    })
}
