//! fw's loader: policy compilation, the eBPF backend and the commands of
//! `fw-user`. The binary (`main.rs`) only parses arguments and reports errors;
//! tests use this library directly.

pub mod adopt;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod error;
pub mod ifaces;
pub mod output;
pub mod pin;
pub mod policy;

use cli::{Cli, Command};

/// Run one parsed command line.
///
/// # Errors
/// Whatever the command failed with.
pub fn run(cli: Cli) -> error::Result<()> {
    match cli.command {
        Command::Check { policy } => commands::check::run(policy.as_deref()),
        Command::Load {
            policy,
            ifaces,
            pin,
            detach,
        } => commands::load::run(policy.as_deref(), &ifaces, &pin.layout(), detach),
        Command::Unload { pin } => commands::unload::run(&pin.layout()),
        Command::Status { pin, json } => commands::status::run(&pin.layout(), json),
    }
}
