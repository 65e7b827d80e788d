//! `fw-user unload`: detach everything and remove the pins.

use crate::{backend::xdp, error::Result, pin::PinLayout};

/// # Errors
/// No firewall at the pin path, or removing it failed.
pub fn run(layout: &PinLayout) -> Result<()> {
    let freed = xdp::unload(layout)?;
    if freed.is_empty() {
        println!("fw: unloaded (no interface was guarded)");
    } else {
        println!("fw: unloaded; {} no longer filtered", freed.join(", "));
    }
    Ok(())
}
