//! `load --confirm`: apply a policy on probation, like iptables-apply or
//! Junos `commit confirmed`. `fw-user confirm` keeps it; otherwise a
//! watchdog restores what ran before.
//!
//! The watchdog is its own process in its own session (`setsid`), started
//! before the new policy is applied: killing `fw-user`, its terminal or its
//! SSH session cannot stop the rollback. What it restores is copied to the
//! state directory first (`rollback/`), so a load that dies half-way is
//! rolled back too. `fw-user confirm` removes `pending.json` and stops the
//! watchdog; a watchdog that finds no `pending.json` of its own exits.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    pin::PinLayout,
    state::{Pending, StateDir, now_ms},
};

/// A watchdog started by `arm`.
pub struct Armed {
    pub within: Duration,
    pub pid: i32,
    /// Rolling back unloads the firewall (nothing ran before).
    pub unload: bool,
}

/// Keep what runs now for a rollback, record the unconfirmed load and start
/// its watchdog. The caller holds the state lock.
///
/// # Errors
/// Nothing records what runs now, so there is nothing to roll back to; or
/// the watchdog cannot start.
pub fn arm(state: &StateDir, layout: &PinLayout, within: Duration, name: &str) -> Result<Armed> {
    let running = state.running()?;
    let firewall_runs = layout.is_installed() || crate::backend::iptables::is_active(layout);
    let unload = match (&running, firewall_runs) {
        (Some(_), _) => {
            state.keep_for_rollback()?;
            false
        }
        (None, false) => true,
        (None, true) => {
            return Err(Error::NoRollbackRecord {
                state: state.root.clone(),
            });
        }
    };
    let token = now_ms() ^ (u64::from(std::process::id()) << 40);
    let mut pending = Pending {
        token,
        deadline_ms: now_ms() + u64::try_from(within.as_millis()).unwrap_or(u64::MAX / 2),
        watchdog_pid: 0,
        policy_name: name.to_string(),
        unload,
    };
    state.set_pending(&pending)?;
    match spawn_watchdog(state, layout, token) {
        Ok(pid) => pending.watchdog_pid = pid,
        Err(e) => {
            state.clear_pending();
            return Err(e);
        }
    }
    state.set_pending(&pending)?;
    Ok(Armed {
        within,
        pid: pending.watchdog_pid,
        unload,
    })
}

fn spawn_watchdog(state: &StateDir, layout: &PinLayout, token: u64) -> Result<i32> {
    let log_path = state.watchdog_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(format!("cannot open `{}`", log_path.display()), e))?;
    let err_log = log
        .try_clone()
        .map_err(|e| Error::io("cannot duplicate the watchdog's log", e))?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the fw-user binary for the watchdog", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("watchdog")
        .arg("--pin-path")
        .arg(&layout.root)
        .arg("--token")
        .arg(token.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    // SAFETY: setsid is async-signal-safe; it makes the watchdog leader of
    // a new session, out of reach of the terminal's and the session's
    // hangup and of signals to fw-user's process group.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start the rollback watchdog", e))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // Reap it if it ends while this process still runs (a foreground load).
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Stop the watchdog of `pending`, if it is still the one we started.
fn stop_watchdog(pending: &Pending) {
    if pending.watchdog_pid <= 0 {
        return;
    }
    // The pid may have been reused: only a watchdog of this token is ours.
    let ours = fs::read(format!("/proc/{}/cmdline", pending.watchdog_pid))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&pending.token.to_string()));
    if ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pending.watchdog_pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Start the probation of the pending load now.
///
/// # Errors
/// `pending.json` cannot be rewritten.
pub fn restart_clock(state: &StateDir, within: Duration) -> Result<()> {
    if let Some(mut pending) = state.pending()? {
        pending.deadline_ms = now_ms() + u64::try_from(within.as_millis()).unwrap_or(u64::MAX / 2);
        state.set_pending(&pending)?;
    }
    Ok(())
}

/// The load failed (nothing changed): forget it and stop its watchdog.
pub fn disarm(state: &StateDir) {
    if let Ok(Some(pending)) = state.pending() {
        stop_watchdog(&pending);
    }
    state.clear_pending();
}

/// `fw-user confirm`: keep the policy loaded with `--confirm`.
///
/// # Errors
/// No load awaits confirmation (it may have been rolled back already).
pub fn run(layout: &PinLayout) -> Result<()> {
    let state = StateDir::for_layout(layout);
    let _lock = state.lock()?;
    let Some(pending) = state.pending()? else {
        return Err(Error::NothingToConfirm {
            log: state.watchdog_log(),
        });
    };
    stop_watchdog(&pending);
    state.clear_pending();
    println!(
        "fw: confirmed policy {}; the rollback is cancelled",
        pending.policy_name
    );
    Ok(())
}

/// Parse `--confirm`'s duration: `60s`, `2m`, or plain seconds.
///
/// # Errors
/// Not a duration, or outside 1 s ..= 1 day.
pub fn parse_within(s: &str) -> std::result::Result<Duration, String> {
    let d = s
        .parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(s))
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 60s, 5m"))?;
    if d < Duration::from_secs(1) || d > Duration::from_hours(24) {
        return Err(format!(
            "`{s}` is outside 1s..=1d: long enough to test the new policy, short enough to get back in"
        ));
    }
    Ok(d)
}
