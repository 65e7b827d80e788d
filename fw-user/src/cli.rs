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
        /// Interfaces the lockout guard assumes guarded (repeatable), as
        /// `load --iface`. Default: the policy's `interfaces`, or every
        /// interface that is up.
        #[arg(long = "iface", value_name = "IF")]
        ifaces: Vec<String>,
        /// Do not fail when the lockout guard finds that the policy would
        /// cut your SSH session or leave no way in.
        #[arg(long)]
        force: bool,
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
        /// foreground to sweep expired connections and print log events.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        output: EventArgs,
        /// Stay in the foreground without printing log events (leave them
        /// to `fw-user events`).
        #[arg(long, conflicts_with_all = ["json", "syslog"])]
        no_events: bool,
        /// Serve Prometheus metrics on this address while in the
        /// foreground, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR:PORT", conflicts_with = "detach")]
        metrics: Option<std::net::SocketAddr>,
        /// Where the policy goes: the eBPF datapath (xdp), iptables rules
        /// (iptables), or xdp with a fallback to iptables when eBPF cannot
        /// run here (auto, which says why it fell back).
        #[arg(long, value_enum, default_value = "auto")]
        backend: crate::commands::load::Backend,
        /// Apply on probation: unless `fw-user confirm` runs within this
        /// time (e.g. 60s, 5m), a watchdog process restores what ran
        /// before, even if fw-user or your session dies.
        #[arg(long, value_name = "DURATION", value_parser = crate::commands::confirm::parse_within)]
        confirm: Option<std::time::Duration>,
        /// Apply even if the lockout guard finds that the policy would cut
        /// your SSH session or leave no way in on the SSH port.
        #[arg(long)]
        force: bool,
        /// Without `--iface` or the policy's `interfaces`, guard every
        /// interface, up or not, except lo: what the boot unit of
        /// `fw-user install` does, before the network is up.
        #[arg(long, conflicts_with = "ifaces")]
        all_interfaces: bool,
    },
    /// Keep the policy loaded with `--confirm`: cancel its rollback.
    Confirm {
        #[command(flatten)]
        pin: PinArg,
    },
    /// Restore now what a `--confirm` load replaced; without one pending,
    /// the policy that ran before the current one (or before `unload`).
    Rollback {
        #[command(flatten)]
        pin: PinArg,
    },
    /// The rollback watchdog `load --confirm` starts (not for direct use).
    #[command(hide = true)]
    Watchdog {
        #[command(flatten)]
        pin: PinArg,
        #[arg(long)]
        token: u64,
    },
    /// Follow the log events of the running firewall (one reader at a
    /// time: a foreground `fw-user load` is one).
    Events {
        #[command(flatten)]
        pin: PinArg,
        #[command(flatten)]
        output: EventArgs,
    },
    /// Serve Prometheus metrics of the running firewall until interrupted.
    Metrics {
        #[command(flatten)]
        pin: PinArg,
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
    },
    /// Print the policy as iptables-restore input (ip6tables-restore with
    /// --family ipv6) with the same meaning.
    Export {
        /// Policy file; without it the built-in default policy.
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "ipv4")]
        family: FamilyArg,
        /// Guarded interface (repeatable); overrides the policy's
        /// `interfaces`. Default: every interface but lo.
        #[arg(long = "iface", value_name = "IF")]
        ifaces: Vec<String>,
    },
    /// Translate an iptables-save file (and its ip6tables-save twin) into
    /// an equivalent policy.toml, printed on stdout.
    Import {
        /// The IPv4 rules, e.g. /etc/iptables/rules.v4.
        rules_v4: Option<PathBuf>,
        /// The IPv6 rules, e.g. /etc/iptables/rules.v6.
        #[arg(long = "ipv6", value_name = "RULES_V6")]
        rules_v6: Option<PathBuf>,
        /// Leave out rules fw cannot express (each is listed) instead of
        /// failing.
        #[arg(long)]
        skip_unsupported: bool,
    },
    /// Store the running policy (and its relative set files) where the
    /// boot unit of `fw-user install` loads it, like netfilter-persistent.
    Save {
        #[command(flatten)]
        pin: PinArg,
        /// Where to write it.
        #[arg(long, value_name = "FILE", default_value = "/etc/fw/policy.toml")]
        to: PathBuf,
    },
    /// Write a systemd unit that loads the saved policy early at boot,
    /// before the network is up, and enable it.
    Install {
        /// The policy the unit loads.
        #[arg(long, value_name = "FILE", default_value = "/etc/fw/policy.toml")]
        policy: PathBuf,
        /// Install under this root instead of / (packaging, tests); the
        /// unit is then written but not enabled.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Write the unit but do not enable it.
        #[arg(long)]
        no_enable: bool,
    },
    /// Disable and remove the unit of `fw-user install` (the running
    /// firewall stays; `fw-user unload` removes it).
    Uninstall {
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// What the unit of `fw-user install` runs at boot: `load POLICY
    /// --detach --all-interfaces --force`, but a missing or invalid POLICY
    /// loads the built-in safe policy instead (and still fails).
    Boot {
        /// The saved policy.
        #[arg(default_value = "/etc/fw/policy.toml")]
        policy: PathBuf,
        #[command(flatten)]
        pin: PinArg,
    },
    /// Detach the firewall from every interface and remove its maps.
    Unload {
        #[command(flatten)]
        pin: PinArg,
    },
    /// List, delete or flush tracked connections.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
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

impl Command {
    /// The command only reads and prints: nothing of the host changes
    /// whenever it stops. `fw-user status | head` may then end it the way
    /// it ends `cat` (SIGPIPE) rather than with a panic on the closed pipe.
    #[must_use]
    pub const fn only_reads(&self) -> bool {
        match self {
            Self::Check { .. }
            | Self::Events { .. }
            | Self::Metrics { .. }
            | Self::Export { .. }
            | Self::Import { .. }
            | Self::Status { .. } => true,
            Self::Conntrack { command } => matches!(command, ConntrackCommand::List { .. }),
            _ => false,
        }
    }
}

/// `fw-user conntrack …`: the connection tables, like `conntrack -L/-D/-F`.
#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// List tracked connections, one a line, oriented as they were opened
    /// (the source is the end that sent the first packet).
    List {
        #[command(flatten)]
        filter: CtFilterArgs,
        /// Print a JSON array for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pin: PinArg,
    },
    /// Delete one connection named by its tuple, e.g.
    /// `tcp 192.0.2.10:40000 192.0.2.1:22`, `udp [2001:db8::10]:5353
    /// [2001:db8::1]:53` or `icmp 192.0.2.10 192.0.2.1 --id 77` (either end
    /// first); or every connection the filters match.
    Delete {
        /// PROTO SRC DST: the connection to delete.
        #[arg(value_name = "TUPLE")]
        tuple: Vec<String>,
        /// Echo identifier of an ICMP tuple (IPv4 or IPv6).
        #[arg(long, value_name = "N")]
        id: Option<u16>,
        #[command(flatten)]
        filter: CtFilterArgs,
        #[command(flatten)]
        pin: PinArg,
    },
    /// Delete every tracked connection and fragment, then adopt this host's
    /// established TCP connections again (as `load` does) so open sessions
    /// such as SSH survive.
    Flush {
        /// Do not re-adopt: cut this host's open TCP connections too.
        #[arg(long)]
        no_adopt: bool,
        #[command(flatten)]
        pin: PinArg,
    },
}

impl ConntrackCommand {
    #[must_use]
    pub const fn pin(&self) -> &PinArg {
        match self {
            Self::List { pin, .. } | Self::Delete { pin, .. } | Self::Flush { pin, .. } => pin,
        }
    }
}

/// Filters of `conntrack list` and `delete`. Each matches the connection's
/// original direction: `--src` is the end that opened it.
#[derive(Debug, clap::Args)]
pub struct CtFilterArgs {
    /// Protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long, value_name = "PROTO", value_parser = crate::commands::conntrack::parse_proto)]
    pub proto: Option<u8>,
    /// Address or prefix of the end that opened the connection.
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = crate::commands::conntrack::parse_net)]
    pub src: Option<ipnet::IpNet>,
    /// Address or prefix of the end that was connected to.
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = crate::commands::conntrack::parse_net)]
    pub dst: Option<ipnet::IpNet>,
    /// Source port of the opening end (TCP, UDP).
    #[arg(long, value_name = "PORT")]
    pub sport: Option<u16>,
    /// Destination port of the opening packet (TCP, UDP).
    #[arg(long, value_name = "PORT")]
    pub dport: Option<u16>,
    /// State as `list` prints it, in any case: established, time-wait,
    /// unreplied, replied …
    #[arg(long, value_name = "NAME", value_parser = crate::commands::conntrack::parse_state)]
    pub state: Option<String>,
}

impl CtFilterArgs {
    #[must_use]
    pub fn filter(&self) -> crate::commands::conntrack::Filter {
        crate::commands::conntrack::Filter {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            state: self.state.clone(),
        }
    }
}

/// An address family on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
}

impl FamilyArg {
    #[must_use]
    pub const fn family(self) -> crate::iptables::IpFamily {
        match self {
            Self::Ipv4 => crate::iptables::IpFamily::V4,
            Self::Ipv6 => crate::iptables::IpFamily::V6,
        }
    }
}

/// How log events are printed.
#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Send events to syslog (and so journald) instead of stdout.
    #[arg(long)]
    pub syslog: bool,
    /// The syslog socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/dev/log",
        requires = "syslog"
    )]
    pub syslog_socket: PathBuf,
}

impl EventArgs {
    #[must_use]
    pub fn output(&self) -> crate::commands::foreground::EventOutput {
        crate::commands::foreground::EventOutput {
            json: self.json,
            syslog: self.syslog.then(|| self.syslog_socket.clone()),
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    fn only_reads(args: &[&str]) -> bool {
        let command_line = std::iter::once("fw-user").chain(args.iter().copied());
        Cli::try_parse_from(command_line)
            .unwrap()
            .command
            .only_reads()
    }

    #[test]
    fn only_commands_that_change_nothing_may_die_of_a_closed_pipe() {
        for reads in [
            &["check"][..],
            &["status"],
            &["export"],
            &["events"],
            &["conntrack", "list"],
        ] {
            assert!(only_reads(reads), "{reads:?}");
        }
        for writes in [
            &["load"][..],
            &["unload"],
            &["confirm"],
            &["rollback"],
            &["save"],
            &["boot"],
            &["conntrack", "flush"],
        ] {
            assert!(!only_reads(writes), "{writes:?}");
        }
    }
}
