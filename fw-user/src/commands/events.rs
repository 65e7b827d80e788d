//! `fw-user events`: follow the log events of a running firewall.

use super::foreground::{self, EventOutput, Jobs};
use crate::{backend::xdp, error::Result, pin::PinLayout};

/// # Errors
/// No firewall is loaded, or another process already reads its events.
pub fn run(layout: &PinLayout, output: EventOutput) -> Result<()> {
    // Fail early, with the usual message, when nothing is loaded.
    if !crate::backend::iptables::is_active(layout) {
        xdp::open_loaded(layout)?;
    }
    foreground::run(
        layout,
        &Jobs {
            sweep: false,
            events: Some((output, true)),
            metrics: None,
            announce: Some(format!(
                "fw: following log events of the firewall at {} (Ctrl-C leaves)",
                layout.root.display()
            )),
        },
    )
}
