//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fw-user",
    version,
    about = "fw: a stateful host firewall in eBPF (XDP ingress, TC egress)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a policy file without touching the running firewall.
    Check {
        /// Policy file; without it the built-in default policy is checked.
        policy: Option<PathBuf>,
    },
    /// Load a policy: install the firewall, or replace the running policy
    /// atomically without dropping tracked connections.
    Load {
        /// Policy file; without it the built-in safe default is used
        /// (loopback, established, SSH in; everything else inbound dropped).
        policy: Option<PathBuf>,
        /// Interface to guard (repeatable); overrides the policy's
        /// `interfaces`. Default: every interface that is up, except lo.
        #[arg(long = "iface", value_name = "IF")]
        ifaces: Vec<String>,
        #[command(flatten)]
        pin: PinArg,
        /// Return once the policy is in place instead of staying in the
        /// foreground to sweep expired connections.
        #[arg(long)]
        detach: bool,
    },
    /// Detach the firewall from every interface and remove its maps.
    Unload {
        #[command(flatten)]
        pin: PinArg,
    },
    /// Show where the firewall is attached, its policy, connection table
    /// and counters.
    Status {
        #[command(flatten)]
        pin: PinArg,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PinArg {
    /// Where the firewall's programs, maps and links are pinned (bpffs).
    /// Default: /sys/fs/bpf/fw, or /sys/fs/bpf/fw-<netns> inside a named
    /// network namespace.
    #[arg(long = "pin-path", value_name = "DIR")]
    pub pin_path: Option<PathBuf>,
}

impl PinArg {
    #[must_use]
    pub fn layout(&self) -> crate::pin::PinLayout {
        crate::pin::PinLayout::new(
            self.pin_path
                .clone()
                .unwrap_or_else(crate::pin::default_pin_path),
        )
    }
}
