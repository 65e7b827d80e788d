//! `fw-user load`: compile, install or replace atomically, then either
//! return (`--detach`) or stay in the foreground: sweep expired
//! connections, print log events, serve metrics.

use std::path::{Path, PathBuf};

use super::foreground::{self, EventOutput, Jobs};
use crate::{
    backend::{iptables, xdp},
    error::{Error, Result},
    ifaces, kernel,
    pin::{PinLayout, ensure_bpffs},
    policy::{self, Policy},
    state::{NewSnapshot, Snapshot, StateDir},
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
    pub input: PolicyInput,
    pub ifaces: &'a [String],
    pub layout: &'a PinLayout,
    pub detach: bool,
    pub follow: &'a Follow,
    pub backend: Backend,
    /// Why the BPF filesystem is not usable, found before `load` ran.
    pub bpffs_problem: Option<Error>,
    /// `--confirm`: roll back unless `fw-user confirm` runs within this.
    pub confirm: Option<std::time::Duration>,
    /// `--force`: apply even if the lockout guard objects.
    pub force: bool,
    /// `--all-interfaces`: without a list, guard every interface, up or
    /// not (a load at boot, before the network is up).
    pub all_interfaces: bool,
}

/// A policy to load: its text, and where it came from.
#[derive(Clone, Debug)]
pub struct PolicyInput {
    pub text: String,
    /// How messages name it.
    pub name: String,
    /// The file to parse it as (set files are relative to it); `None`:
    /// the built-in policy.
    pub parse_path: Option<PathBuf>,
    /// The file it was loaded from, recorded for `save` and `status`.
    pub source: Option<PathBuf>,
}

impl PolicyInput {
    /// The policy at `path`, or the built-in one.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                text: policy::DEFAULT_POLICY.to_string(),
                name: policy::DEFAULT_POLICY_NAME.to_string(),
                parse_path: None,
                source: None,
            });
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadPolicy {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            text,
            name: path.display().to_string(),
            parse_path: Some(path.to_path_buf()),
            source: Some(path.to_path_buf()),
        })
    }

    /// A stored policy (`rollback`): parsed from the snapshot, named and
    /// recorded as it was first loaded.
    ///
    /// # Errors
    /// The snapshot is damaged.
    pub fn stored(snap: &Snapshot) -> Result<Self> {
        Ok(Self {
            text: snap.text()?,
            name: snap.meta.name.clone(),
            parse_path: Some(snap.policy_path()),
            source: snap.meta.source.clone(),
        })
    }

    /// Parse and validate it.
    ///
    /// # Errors
    /// The policy is invalid.
    pub fn parse(&self) -> Result<Policy> {
        let parsed = match &self.parse_path {
            Some(path) => policy::parse_file(&self.text, path),
            None => policy::parse(&self.text, &self.name),
        };
        Ok(parsed.map_err(|mut e| {
            // A stored copy is reported under its original name.
            if self.parse_path != self.source {
                e.file.clone_from(&self.name);
            }
            e
        })?)
    }
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
        input,
        ifaces: cli_ifaces,
        layout,
        detach,
        follow,
        backend,
        bpffs_problem,
        confirm,
        force,
        all_interfaces,
    } = req;
    let state = StateDir::for_layout(layout);
    let lock = state.lock()?;
    if let Some(pending) = state.pending()? {
        return Err(Error::ConfirmPending {
            policy: pending.policy_name,
            seconds: pending.deadline_ms.saturating_sub(crate::state::now_ms()) / 1000,
        });
    }
    // The watchdog is armed before anything changes: if fw-user dies
    // while applying, the rollback still comes.
    let armed = match confirm {
        Some(within) => Some(super::confirm::arm(&state, layout, within, &input.name)?),
        None => None,
    };
    let applied = apply(Apply {
        state: &state,
        input: &input,
        cli_ifaces,
        layout,
        backend,
        bpffs_problem,
        force,
        all_interfaces,
    });
    let chosen = match applied {
        Ok(chosen) => chosen,
        Err(e) => {
            if armed.is_some() {
                super::confirm::disarm(&state);
            }
            return Err(e);
        }
    };
    if armed.is_some() {
        // The probation starts once the policy is in force, however long
        // applying it took (the watchdog reads the deadline as it waits).
        super::confirm::restart_clock(&state, confirm.unwrap_or_default())?;
    }
    drop(lock);
    if let Some(armed) = &armed {
        println!(
            "fw: run `fw-user confirm{}` within {} to keep this policy; otherwise the watchdog (pid {}) restores {} (`fw-user rollback` does it now)",
            pin_arg(layout),
            humantime::format_duration(armed.within),
            armed.pid,
            if armed.unload {
                "no firewall, as before"
            } else {
                "the previous policy"
            }
        );
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

/// ` --pin-path P` when `layout` is not the default, for hints.
pub(crate) fn pin_arg(layout: &PinLayout) -> String {
    if layout.root == crate::pin::default_pin_path() {
        String::new()
    } else {
        format!(" --pin-path {}", layout.root.display())
    }
}

/// One policy put in place: by `load`, and by a rollback.
pub(crate) struct Apply<'a> {
    pub state: &'a StateDir,
    pub input: &'a PolicyInput,
    pub cli_ifaces: &'a [String],
    pub layout: &'a PinLayout,
    pub backend: Backend,
    pub bpffs_problem: Option<Error>,
    pub force: bool,
    pub all_interfaces: bool,
}

/// Parse, compile, guard, apply and record `a.input`; the caller holds the
/// state lock.
///
/// # Errors
/// The policy is invalid, the guard refused it, or it could not be put in
/// place; the previous state of the host is then unchanged.
pub(crate) fn apply(a: Apply<'_>) -> Result<Backend> {
    let Apply {
        state,
        input,
        cli_ifaces,
        layout,
        backend,
        bpffs_problem,
        force,
        all_interfaces,
    } = a;
    let policy = input.parse()?;
    let name = input.name.as_str();
    let compiled = policy::compile(&policy, name, &|n| nix::net::if_::if_nametoindex(n).ok())?;
    let explicit: Option<Vec<String>> = if cli_ifaces.is_empty() {
        policy.interfaces.clone()
    } else {
        Some(cli_ifaces.to_vec())
    };
    let targets = match &explicit {
        Some(list) => list.clone(),
        None if all_interfaces => ifaces::all_interfaces()?,
        None => ifaces::up_interfaces()?,
    };
    ifaces::validate(&targets)?;
    crate::guard::enforce(&policy, name, &targets, force)?;
    let staged = |backend: &str| {
        state.stage(&NewSnapshot {
            text: &input.text,
            name,
            source: input.source.as_deref(),
            read_from: input.parse_path.as_deref(),
            ifaces: (!cli_ifaces.is_empty()).then_some(cli_ifaces),
            backend,
            hash: policy.hash,
        })
    };
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
        staged("xdp")?;
        load_xdp(layout, &compiled, &targets, &policy, name)
    };
    let iptables_attempt = || -> Result<()> {
        staged("iptables")?;
        load_iptables(layout, &policy, name, explicit.as_deref())
    };
    let result = match backend {
        Backend::Xdp => xdp_attempt(bpffs_problem).map(|()| Backend::Xdp),
        Backend::Iptables => iptables_attempt().map(|()| Backend::Iptables),
        Backend::Auto => match xdp_attempt(bpffs_problem) {
            Ok(()) => Ok(Backend::Xdp),
            Err(e) if ebpf_unavailable(&e) => {
                println!("fw: the eBPF datapath cannot run here: {e}");
                println!("fw: falling back to the iptables backend");
                iptables_attempt().map(|()| Backend::Iptables)
            }
            Err(e) => Err(e),
        },
    };
    let chosen = match result {
        Ok(chosen) => chosen,
        Err(e) => {
            state.discard_staged();
            return Err(e);
        }
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
    state.commit()?;
    Ok(chosen)
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
