//! `fw-user rollback` and the watchdog of `load --confirm`: put back the
//! policy that ran before.

use std::time::{Duration, SystemTime};

use super::load::{Apply, Backend, PolicyInput, apply};
use crate::{
    error::{Error, Result},
    pin::PinLayout,
    state::{Pending, StateDir, now_ms},
};

fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Restore what `pending` was to replace, or without one the previous
/// policy. The caller holds the state lock.
fn restore(state: &StateDir, layout: &PinLayout, pending: Option<&Pending>) -> Result<()> {
    if pending.is_some_and(|p| p.unload) {
        // Nothing ran before the unconfirmed load.
        super::unload::remove(layout)?;
        state.record_unload()?;
        state.clear_pending();
        println!("fw: rolled back: no firewall, as before the unconfirmed load");
        return Ok(());
    }
    let target = if pending.is_some() {
        state.rollback_target()?
    } else {
        state.previous()?
    };
    let Some(snap) = target else {
        return Err(Error::NothingToRollBack {
            state: state.root.clone(),
        });
    };
    let input = PolicyInput::stored(&snap)?;
    let ifaces = snap.meta.ifaces.clone().unwrap_or_default();
    let backend = if snap.meta.backend == "iptables" {
        Backend::Iptables
    } else {
        Backend::Auto
    };
    apply(Apply {
        state,
        input: &input,
        cli_ifaces: &ifaces,
        layout,
        backend,
        bpffs_problem: None,
        // Going back to what ran is the way out of a lockout, not into one.
        force: true,
        all_interfaces: false,
    })?;
    state.clear_pending();
    println!("fw: rolled back to policy {}", snap.meta.name);
    Ok(())
}

/// `fw-user rollback`: restore now what an unconfirmed load replaced, or
/// else the policy before the running one.
///
/// # Errors
/// Nothing to roll back to, or the old policy no longer loads.
pub fn run(layout: &PinLayout) -> Result<()> {
    let state = StateDir::for_layout(layout);
    let _lock = state.lock()?;
    let pending = state.pending()?;
    restore(&state, layout, pending.as_ref())
}

/// The watchdog process (`fw-user watchdog`, started by `load --confirm`):
/// wait for the deadline of the load `token`, then roll back unless it was
/// confirmed. Its output goes to the state directory's `watchdog.log`.
///
/// # Errors
/// The rollback failed.
pub fn watchdog(layout: &PinLayout, token: u64) -> Result<()> {
    let state = StateDir::for_layout(layout);
    let me = std::process::id();
    println!(
        "{} watchdog {me}: rolling back {} unless confirmed",
        stamp(),
        layout.root.display()
    );
    let ours = |p: &Option<Pending>| p.as_ref().filter(|p| p.token == token).cloned();
    let (p, _lock) = loop {
        let Some(p) = ours(&state.pending()?) else {
            println!("{} watchdog {me}: confirmed; nothing to do", stamp());
            return Ok(());
        };
        let now = now_ms();
        if now < p.deadline_ms {
            std::thread::sleep(Duration::from_millis((p.deadline_ms - now).min(250)));
            continue;
        }
        // The load may still be applying (it holds the lock) and restart
        // the clock when done, or a confirm may win the lock: decide again
        // under it.
        let lock = state.lock()?;
        match ours(&state.pending()?) {
            Some(p) if now_ms() >= p.deadline_ms => break (p, lock),
            _ => {}
        }
    };
    println!(
        "{} watchdog {me}: policy {} was not confirmed in time: rolling back",
        stamp(),
        p.policy_name
    );
    let result = restore(&state, layout, Some(&p));
    match &result {
        Ok(()) => println!("{} watchdog {me}: done", stamp()),
        Err(e) => println!("{} watchdog {me}: the rollback failed: {e}", stamp()),
    }
    result
}
