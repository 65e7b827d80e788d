//! `fw-user unload`: detach everything and remove the pins, or remove the
//! iptables backend's rules.

use crate::{
    backend::{iptables, xdp},
    error::{Error, Result},
    pin::PinLayout,
    state::StateDir,
};

/// # Errors
/// No firewall at the pin path, or removing it failed.
pub fn run(layout: &PinLayout) -> Result<()> {
    let state = StateDir::for_layout(layout);
    let _lock = state.lock()?;
    remove(layout)?;
    // An unload also ends a load on probation: there is nothing left for
    // its watchdog to roll back.
    super::confirm::disarm(&state);
    state.record_unload()
}

/// Remove the firewall (either backend); the caller holds the state lock.
///
/// # Errors
/// No firewall at the pin path, or removing it failed.
pub(crate) fn remove(layout: &PinLayout) -> Result<()> {
    let mut any = false;
    if iptables::is_active(layout) {
        let freed = iptables::unload(layout)?;
        println!(
            "fw: removed the iptables backend's rules; {} no longer filtered",
            freed.join(", ")
        );
        any = true;
    }
    if layout.is_installed() || !any {
        let freed = match xdp::unload(layout) {
            Err(Error::NotLoaded(_)) if any => return Ok(()),
            other => other?,
        };
        if freed.is_empty() {
            println!("fw: unloaded (no interface was guarded)");
        } else {
            println!("fw: unloaded; {} no longer filtered", freed.join(", "));
        }
    }
    Ok(())
}
