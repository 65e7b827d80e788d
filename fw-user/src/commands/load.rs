//! `fw-user load`: compile, install or replace atomically, then either
//! return (`--detach`) or stay in the foreground: sweep expired
//! connections, print log events, serve metrics.

use std::path::Path;

use super::foreground::{self, EventOutput, Jobs};
use crate::{
    backend::xdp,
    error::Result,
    ifaces,
    pin::{PinLayout, ensure_bpffs},
    policy,
};

/// # Errors
/// The policy is invalid or could not be put in place; the previous state
/// of the host is then unchanged.
pub fn run(
    path: Option<&Path>,
    cli_ifaces: &[String],
    layout: &PinLayout,
    detach: bool,
    follow: &Follow,
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
    println!(
        "fw: staying in the foreground to sweep expired connections{} (Ctrl-C leaves; use --detach to skip)",
        if follow.events.is_some() {
            " and print log events"
        } else {
            ""
        }
    );
    foreground::run(
        layout,
        &Jobs {
            sweep: true,
            events: follow.events.clone().map(|o| (o, false)),
            metrics: follow.metrics,
        },
    )
}

/// What `load` does in the foreground besides sweeping.
pub struct Follow {
    /// Print log events (unless another reader has them).
    pub events: Option<EventOutput>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
}
