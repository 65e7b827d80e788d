//! `fw-user load`: compile, install or replace atomically, then either
//! return (`--detach`) or stay in the foreground: sweep expired
//! connections, print log events, serve metrics.

use std::path::Path;

use super::foreground::{self, EventOutput, Jobs};
use crate::{
    backend::{iptables, xdp},
    error::{Error, Result},
    ifaces, kernel,
    pin::{PinLayout, ensure_bpffs},
    policy::{self, Policy},
};

/// Which datapath `load` puts the policy in (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// XDP/TC when the programs load and attach, iptables otherwise.
    Auto,
    /// The eBPF datapath only.
    Xdp,
    /// iptables/ip6tables rules only.
    Iptables,
}

/// What `load` was asked to do.
pub struct Request<'a> {
    pub path: Option<&'a Path>,
    pub ifaces: &'a [String],
    pub layout: &'a PinLayout,
    pub detach: bool,
    pub follow: &'a Follow,
    pub backend: Backend,
    /// Why the BPF filesystem is not usable, found before `load` ran.
    pub bpffs_problem: Option<Error>,
}

/// Errors that mean "eBPF cannot run here" rather than "this policy or
/// request is wrong": the ones `--backend auto` falls back on.
pub(crate) fn ebpf_unavailable(e: &Error) -> bool {
    matches!(
        e,
        Error::Bpf { .. }
            | Error::Privileges { .. }
            | Error::NotBpffs { .. }
            | Error::UnsupportedKernel { .. }
    )
}

/// # Errors
/// The policy is invalid or could not be put in place; the previous state
/// of the host is then unchanged.
pub fn run(req: Request<'_>) -> Result<()> {
    let Request {
        path,
        ifaces: cli_ifaces,
        layout,
        detach,
        follow,
        backend,
        bpffs_problem,
    } = req;
    let (policy, name) = super::read_policy(path)?;
    let compiled = policy::compile(&policy, &name, &|n| nix::net::if_::if_nametoindex(n).ok())?;
    let explicit: Option<Vec<String>> = if cli_ifaces.is_empty() {
        policy.interfaces.clone()
    } else {
        Some(cli_ifaces.to_vec())
    };
    let targets = match &explicit {
        Some(list) => list.clone(),
        None => ifaces::up_interfaces()?,
    };
    ifaces::validate(&targets)?;
    let xdp_attempt = |problem: Option<Error>| -> Result<()> {
        // Before anything is loaded, so an old kernel gets a clear error
        // instead of a verifier log. A reload loads no program: the ones
        // running already passed.
        if !layout.is_installed() {
            kernel::check_running()?;
        }
        if let Some(e) = problem {
            return Err(e);
        }
        load_xdp(layout, &compiled, &targets, &policy, &name)
    };
    let chosen = match backend {
        Backend::Xdp => {
            xdp_attempt(bpffs_problem)?;
            Backend::Xdp
        }
        Backend::Iptables => {
            load_iptables(layout, &policy, &name, explicit.as_deref())?;
            Backend::Iptables
        }
        Backend::Auto => match xdp_attempt(bpffs_problem) {
            Ok(()) => Backend::Xdp,
            Err(e) if ebpf_unavailable(&e) => {
                println!("fw: the eBPF datapath cannot run here: {e}");
                println!("fw: falling back to the iptables backend");
                load_iptables(layout, &policy, &name, explicit.as_deref())?;
                Backend::Iptables
            }
            Err(e) => return Err(e),
        },
    };
    // The new backend is in force; only now does the other one go.
    if chosen == Backend::Xdp && iptables::is_active(layout) {
        iptables::unload(layout)?;
        println!("fw: removed the iptables backend's rules (the eBPF datapath replaces them)");
    }
    if chosen == Backend::Iptables && layout.is_installed() {
        xdp::unload(layout)?;
        println!("fw: removed the eBPF datapath (the iptables backend replaces it)");
    }
    if detach {
        return Ok(());
    }
    if chosen == Backend::Iptables {
        println!(
            "fw: staying in the foreground{} (Ctrl-C leaves; the rules stay; use --detach to skip)",
            if follow.events.is_some() {
                " to print log events"
            } else {
                ""
            }
        );
        return foreground::run(
            layout,
            &Jobs {
                sweep: false,
                events: follow.events.clone().map(|o| (o, false)),
                metrics: None,
                announce: None,
            },
        );
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
            announce: None,
        },
    )
}

fn loaded_or_replaced(fresh: bool) -> &'static str {
    if fresh {
        "loaded"
    } else {
        "replaced the running policy with"
    }
}

/// Rule counts and defaults, as both backends report a load and `check`
/// reports a policy.
pub(super) fn summary(policy: &Policy) -> String {
    format!(
        "{} input, {} output, {} forward rules; defaults: input {}, output {}, forward {}",
        policy.input.len(),
        policy.output.len(),
        policy.forward.len(),
        policy.defaults.input,
        policy.defaults.output,
        policy.defaults.forward,
    )
}

fn load_iptables(
    layout: &PinLayout,
    policy: &Policy,
    name: &str,
    ifaces: Option<&[String]>,
) -> Result<()> {
    let report = iptables::load(layout, policy, name, ifaces)?;
    println!(
        "fw: {} policy {name} with the iptables backend ({})",
        loaded_or_replaced(report.fresh),
        summary(policy)
    );
    match ifaces {
        Some(list) => println!("fw: guarding {} (iptables, ip6tables)", list.join(", ")),
        None => println!("fw: guarding every interface but lo (iptables, ip6tables)"),
    }
    for h in &report.unhooked {
        println!("fw: removed jump {h}");
    }
    println!(
        "fw: rules in chains FW-INPUT, FW-OUTPUT, FW-FORWARD; they stay after fw-user exits (`fw-user unload` removes them)"
    );
    Ok(())
}

fn load_xdp(
    layout: &PinLayout,
    compiled: &policy::CompiledPolicy,
    targets: &[String],
    policy: &Policy,
    name: &str,
) -> Result<()> {
    if let Some(note) = ensure_bpffs(&layout.root)? {
        println!("fw: {note}");
    }
    let report = xdp::load(layout, compiled, targets)?;
    println!(
        "fw: {} policy {name} (generation {}; {})",
        loaded_or_replaced(report.fresh),
        report.generation,
        summary(policy)
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
    Ok(())
}

/// What `load` does in the foreground besides sweeping.
pub struct Follow {
    /// Print log events (unless another reader has them).
    pub events: Option<EventOutput>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
}
