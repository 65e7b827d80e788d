//! fw's loader: policy compilation, the eBPF backend and the commands of
//! `fw-user`. The binary (`main.rs`) only parses arguments and reports errors;
//! tests use this library directly.

pub mod adopt;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod error;
pub mod events;
pub mod guard;
pub mod ifaces;
pub mod iptables;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pin;
pub mod policy;
pub mod state;

use cli::{Cli, Command, ConntrackCommand};

/// Use the host's BPF filesystem for commands that reach a firewall's
/// pins; the problem found, for a load that may fall back to iptables.
fn join_bpffs(cli: &Cli) -> error::Result<Option<error::Error>> {
    let pin_root = match &cli.command {
        Command::Load { pin, .. }
        | Command::Boot { pin, .. }
        | Command::Unload { pin }
        | Command::Status { pin, .. }
        | Command::Events { pin, .. }
        | Command::Metrics { pin, .. }
        | Command::Confirm { pin }
        | Command::Rollback { pin }
        | Command::Watchdog { pin, .. } => Some(pin.layout().root),
        Command::Conntrack { command } => Some(command.pin().layout().root),
        Command::Check { .. }
        | Command::Export { .. }
        | Command::Import { .. }
        | Command::Save { .. }
        | Command::Install { .. }
        | Command::Uninstall { .. } => None,
    };
    // A load that may fall back to iptables must not stop at the BPF
    // filesystem: the problem is kept for `--backend auto` to weigh.
    let tolerant = matches!(
        &cli.command,
        Command::Load { backend, .. } if *backend != commands::load::Backend::Xdp
    ) || matches!(&cli.command, Command::Boot { .. });
    let mut bpffs_problem = None;
    if let Some(root) = pin_root {
        match pin::use_host_bpffs(&root) {
            Ok(Some(note))
                if matches!(
                    cli.command,
                    Command::Load { .. } | Command::Rollback { .. } | Command::Boot { .. }
                ) =>
            {
                println!("fw: {note}");
            }
            Ok(_) => {}
            Err(e) if tolerant => bpffs_problem = Some(e),
            Err(e) => return Err(e),
        }
    }
    Ok(bpffs_problem)
}

/// Run one parsed command line.
///
/// # Errors
/// Whatever the command failed with.
pub fn run(cli: Cli) -> error::Result<()> {
    // Before anything else (joining a mount namespace needs a single thread).
    let bpffs_problem = join_bpffs(&cli)?;
    match cli.command {
        Command::Check {
            policy,
            ifaces,
            force,
        } => commands::check::run(policy.as_deref(), &ifaces, force),
        Command::Import {
            rules_v4,
            rules_v6,
            skip_unsupported,
        } => commands::import::run(rules_v4.as_deref(), rules_v6.as_deref(), skip_unsupported),
        Command::Export {
            policy,
            family,
            ifaces,
        } => commands::export::run(policy.as_deref(), family.family(), &ifaces),
        Command::Load {
            policy,
            ifaces,
            pin,
            detach,
            output,
            no_events,
            metrics,
            backend,
            confirm,
            force,
            all_interfaces,
        } => commands::load::run(commands::load::Request {
            input: commands::load::PolicyInput::read(policy.as_deref())?,
            ifaces: &ifaces,
            layout: &pin.layout(),
            detach,
            follow: &commands::load::Follow {
                events: (!no_events).then(|| output.output()),
                metrics,
            },
            backend,
            bpffs_problem,
            confirm,
            force,
            all_interfaces,
        }),
        Command::Save { pin, to } => commands::save::run(&pin.layout(), &to),
        Command::Install {
            policy,
            root,
            no_enable,
        } => commands::install::install(&policy, &root, no_enable),
        Command::Uninstall { root } => commands::install::uninstall(&root),
        Command::Boot { policy, pin } => commands::boot::run(&policy, &pin.layout(), bpffs_problem),
        Command::Confirm { pin } => commands::confirm::run(&pin.layout()),
        Command::Rollback { pin } => commands::rollback::run(&pin.layout()),
        Command::Watchdog { pin, token } => commands::rollback::watchdog(&pin.layout(), token),
        Command::Events { pin, output } => commands::events::run(&pin.layout(), output.output()),
        Command::Metrics { pin, listen } => commands::metrics::run(&pin.layout(), listen),
        Command::Unload { pin } => commands::unload::run(&pin.layout()),
        Command::Status { pin, json } => commands::status::run(&pin.layout(), json),
        Command::Conntrack { command } => match command {
            ConntrackCommand::List { filter, json, pin } => {
                commands::conntrack::list(&pin.layout(), &filter.filter(), json)
            }
            ConntrackCommand::Delete {
                tuple,
                id,
                filter,
                pin,
            } => commands::conntrack::delete(&pin.layout(), &tuple, id, &filter.filter()),
            ConntrackCommand::Flush { no_adopt, pin } => {
                commands::conntrack::flush(&pin.layout(), no_adopt)
            }
        },
    }
}
