//! `fw-user boot`: what the unit of `fw-user install` runs at boot.
//!
//! A `load POLICY --detach --all-interfaces --force` that never leaves the
//! host open because of the file:
//! - a saved policy that is missing, unreadable or invalid (edited after
//!   `install` without `fw-user check`) is replaced by the built-in safe
//!   policy (loopback, established, SSH in; everything else inbound
//!   dropped), and the command still fails, so the unit shows as failed
//!   with both errors in its journal. A host that runs fw wants a
//!   firewall: a server reachable over SSH but closed otherwise is
//!   repaired remotely, one silently open is not noticed. To boot without
//!   fw, `fw-user uninstall`;
//! - a `--confirm` probation of the previous boot (its `pending.json`
//!   outlives the reboot in `/var/lib/fw`, its watchdog does not) would
//!   make every load wait for a confirmation that cannot come: it is
//!   dropped when its watchdog is gone.

use std::path::{Path, PathBuf};

use super::load::{self, Backend, Follow, PolicyInput, Request};
use crate::{
    error::{Error, Result},
    pin::PinLayout,
    state::StateDir,
};

/// # Errors
/// The saved policy could not be loaded (the built-in one then runs:
/// `BootFallback`), or neither could.
pub fn run(policy: &Path, layout: &PinLayout, bpffs_problem: Option<Error>) -> Result<()> {
    drop_stale_pending(&StateDir::for_layout(layout))?;
    let saved = PolicyInput::read(Some(policy)).and_then(|input| {
        input.parse()?;
        Ok(input)
    });
    let failed = match saved {
        Ok(input) => match load_at_boot(input, layout, bpffs_problem) {
            Ok(()) => return Ok(()),
            // The BPF filesystem problem went to the first attempt; the
            // second finds it again if it is still there.
            Err(e) => (e, None),
        },
        Err(e) => (e, bpffs_problem),
    };
    let (error, bpffs_problem) = failed;
    eprintln!("fw-user: error: {error}");
    println!("fw: loading the built-in safe policy instead");
    load_at_boot(PolicyInput::read(None)?, layout, bpffs_problem)?;
    Err(Error::BootFallback {
        policy: policy.to_path_buf(),
    })
}

fn load_at_boot(
    input: PolicyInput,
    layout: &PinLayout,
    bpffs_problem: Option<Error>,
) -> Result<()> {
    load::run(Request {
        input,
        ifaces: &[],
        layout,
        detach: true,
        follow: &Follow {
            events: None,
            metrics: None,
        },
        backend: Backend::Auto,
        bpffs_problem,
        confirm: None,
        // No SSH session exists yet to protect, and what was saved must
        // come back.
        force: true,
        // Interfaces are still down before network-pre.target.
        all_interfaces: true,
    })
}

/// Forget a `--confirm` probation whose watchdog no longer runs (the
/// previous boot's); a live one is left to the load to report.
fn drop_stale_pending(state: &StateDir) -> Result<()> {
    let _lock = state.lock()?;
    if let Some(pending) = state.pending()?
        && !is_watchdog(pending.watchdog_pid)
    {
        println!(
            "fw: dropping the unconfirmed load of {} left by an earlier boot (its watchdog is gone)",
            pending.policy_name
        );
        state.clear_pending();
    }
    Ok(())
}

/// Is `pid` an fw-user watchdog? (After a reboot the pid may belong to
/// anything, hence the command line, not just `kill(pid, 0)`.)
fn is_watchdog(pid: i32) -> bool {
    pid > 0
        && std::fs::read(PathBuf::from(format!("/proc/{pid}/cmdline"))).is_ok_and(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == b"watchdog".as_slice())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_watchdog_process_counts_as_one() {
        assert!(!is_watchdog(0));
        assert!(!is_watchdog(-1));
        // This test binary runs, but it is no watchdog.
        assert!(!is_watchdog(i32::try_from(std::process::id()).unwrap()));
    }
}
