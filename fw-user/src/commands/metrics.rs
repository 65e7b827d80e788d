//! `fw-user metrics`: serve Prometheus metrics of a running firewall.

use std::net::SocketAddr;

use super::foreground::{self, Jobs};
use crate::{backend::xdp, error::Result, pin::PinLayout};

/// # Errors
/// No firewall is loaded, or `listen` cannot be bound.
pub fn run(layout: &PinLayout, listen: SocketAddr) -> Result<()> {
    xdp::open_loaded(layout)?;
    foreground::run(
        layout,
        &Jobs {
            sweep: false,
            events: None,
            metrics: Some(listen),
            announce: None,
        },
    )
}
