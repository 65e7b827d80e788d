//! The policy: what `policy.toml` says, validated (`parse`), and turned into
//! the map contents the datapath reads (`compile`).
//!
//! Nothing is applied from a policy until the whole file parsed, validated
//! and compiled without error.

mod compile;
pub(crate) mod icmp;
pub mod judge;
mod parse;

use std::{collections::BTreeMap, fmt};

pub use compile::{AddrEntry, ChainTables, CompiledPolicy, compile};
use fw_common::{
    conntrack::{DEFAULT_TIMEOUTS, Timeouts},
    ipproto,
    maps::CONNTRACK_MAX_ENTRIES,
    policy::{PacketState, RejectWith},
};
use ipnet::IpNet;
pub use parse::{line_col as line_col_of, parse, parse_file, parse_with_set_files};

/// The policy `fw-user load` uses when no file is given.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");
/// How the built-in policy is named in messages.
pub const DEFAULT_POLICY_NAME: &str = "<built-in default policy>";

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Interfaces to guard; `None`: every interface that is up, except lo.
    pub interfaces: Option<Vec<String>>,
    pub defaults: Defaults,
    pub stateful: Stateful,
    pub conntrack: ConntrackSettings,
    pub log: LogSettings,
    /// Named address sets, for `@name` in `src`/`dst`.
    pub sets: BTreeMap<String, Vec<IpNet>>,
    pub input: Vec<Rule>,
    pub output: Vec<Rule>,
    pub forward: Vec<Rule>,
    /// FNV-1a of the source text, shown by `status` to identify the policy.
    pub hash: u64,
}

impl Policy {
    /// The rules of `chain`.
    #[must_use]
    pub fn rules(&self, chain: fw_common::policy::Chain) -> &[Rule] {
        match chain {
            fw_common::policy::Chain::Input => &self.input,
            fw_common::policy::Chain::Output => &self.output,
            fw_common::policy::Chain::Forward => &self.forward,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub input: Verdict,
    pub output: Verdict,
    pub forward: Verdict,
}

/// What a chain does with a new connection no rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject(RejectWith),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
            Self::Reject(_) => "reject",
        })
    }
}

/// What a `[stateful]` stage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Accept,
    Drop,
    /// The rules decide, matching on `state`.
    Rules,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stateful {
    /// Packets of tracked connections (ESTABLISHED, replies).
    pub established: Stage,
    pub invalid: Stage,
    /// New TCP must be a pure SYN; otherwise mid-stream segments are NEW.
    pub tcp_syn_only: bool,
    pub neighbor_discovery: Stage,
    /// ICMP errors about a tracked connection (RELATED).
    pub related: Stage,
}

impl Default for Stateful {
    fn default() -> Self {
        Self {
            established: Stage::Accept,
            invalid: Stage::Drop,
            tcp_syn_only: true,
            neighbor_discovery: Stage::Accept,
            related: Stage::Accept,
        }
    }
}

/// `[conntrack]`: the size of the connection tables and the idle timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Capacity of each connection table; `None`: not set, so
    /// `CONNTRACK_MAX_ENTRIES`. Fixed while the firewall is loaded.
    pub max_entries: Option<u32>,
    /// Idle timeout in seconds by `CtState` value.
    pub timeouts: Timeouts,
}

impl ConntrackSettings {
    /// The table capacity this policy asks for.
    #[must_use]
    pub fn max_entries(&self) -> u32 {
        self.max_entries.unwrap_or(CONNTRACK_MAX_ENTRIES)
    }
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        Self {
            max_entries: None,
            timeouts: DEFAULT_TIMEOUTS,
        }
    }
}

/// `[log]`: how events are limited and labelled, and which verdicts made
/// outside the rules are logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Events per interval, with a burst (`rate`, `burst`).
    pub rate: Limit,
    /// Starts every log line (`prefix`), as iptables' `--log-prefix`.
    pub prefix: String,
    /// Log what the chain defaults drop or reject.
    pub default: bool,
    /// Log INVALID and broken packets: invalid state, spoofed loopback
    /// addresses, malformed headers, fragments fw cannot vouch for, and
    /// new connections refused because the table is full.
    pub invalid: bool,
    /// Log what a `[stateful]` stage set to "drop" drops (established,
    /// related, neighbour discovery).
    pub stateful: bool,
}

/// `[log] rate` when the policy does not set it: one event a second on
/// average, as the tutorials' `-m limit --limit 60/min`.
pub const DEFAULT_LOG_RATE: Limit = Limit {
    interval_ns: 1_000_000_000,
    burst: 5,
};
/// `[log] prefix` when the policy does not set it.
pub const DEFAULT_LOG_PREFIX: &str = "fw: ";

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            rate: DEFAULT_LOG_RATE,
            prefix: DEFAULT_LOG_PREFIX.to_string(),
            default: false,
            invalid: false,
            stateful: false,
        }
    }
}

/// Bounds of `[conntrack] max_entries`: below 1024 a busy host fills the
/// table at once; above 4 Mi entries the two preallocated tables take
/// gigabytes of kernel memory.
pub const CT_MAX_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 1024..=4_194_304;

/// Address families a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Families {
    pub const BOTH: Self = Self {
        ipv4: true,
        ipv6: true,
    };
    pub const IPV4: Self = Self {
        ipv4: true,
        ipv6: false,
    };
    pub const IPV6: Self = Self {
        ipv4: false,
        ipv6: true,
    };
}

/// A source or destination match: addresses and prefixes (sets already
/// expanded), possibly negated as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    pub negated: bool,
    pub nets: Vec<IpNet>,
    /// As written, for messages and `status`.
    pub shown: String,
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// `--tcp-flags MASK COMP`: `flags & mask == comp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlagsMatch {
    pub mask: u8,
    pub comp: u8,
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Accept,
    Drop,
    Reject(RejectWith),
    /// Log and continue with the next rule.
    Log,
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
            Self::Reject(_) => "reject",
            Self::Log => "log",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: Option<String>,
    /// 1-based line of the rule in the policy file, for messages.
    pub line: usize,
    pub families: Families,
    /// IP protocol number; `None`: any.
    pub proto: Option<u8>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    /// Empty: any port.
    pub sport: Vec<PortRange>,
    pub dport: Vec<PortRange>,
    /// Empty: any interface.
    pub iface: Vec<String>,
    /// ICMP or `ICMPv6` types (of the rule's protocol); empty: any.
    pub icmp_type: Vec<u8>,
    /// Empty: any state.
    pub state: Vec<PacketState>,
    pub tcp_flags: Option<TcpFlagsMatch>,
    /// Match only while under this rate (`-m limit`).
    pub limit: Option<Limit>,
    pub action: RuleAction,
    pub log: bool,
    /// The rule's own event rate (`log_rate`, `log_burst`); `None`: the
    /// policy's `[log] rate`.
    pub log_rate: Option<Limit>,
    /// The rule's own prefix (`log_prefix`); `None`: `[log] prefix`.
    pub log_prefix: Option<String>,
}

impl Rule {
    /// Does a match of this rule emit an event?
    #[must_use]
    pub fn logs(&self) -> bool {
        self.log || self.action == RuleAction::Log
    }
}

/// A token-bucket rate: one match per `interval_ns` on average, `burst`
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub interval_ns: u64,
    pub burst: u32,
}

impl fmt::Display for Rule {
    /// One-line summary: action, match, name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.match_text())?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

impl Rule {
    /// What the rule matches (and whether it logs), without its action or
    /// name: `status`'s "match" column and the text kept in `FW_RULE_INFO`.
    #[must_use]
    pub fn match_text(&self) -> String {
        let list = |v: Vec<String>| v.join(",");
        let mut t: Vec<String> = Vec::new();
        if let Some(p) = self.proto {
            t.push(format!("proto {}", icmp::proto_name(p)));
        }
        // ICMP and ICMPv6 name their family already.
        let implied = matches!(self.proto, Some(ipproto::ICMP | ipproto::ICMPV6));
        if self.families != Families::BOTH && !implied {
            t.push(if self.families.ipv4 { "ipv4" } else { "ipv6" }.into());
        }
        if let Some(a) = &self.src {
            t.push(format!("src {}", a.shown));
        }
        if let Some(a) = &self.dst {
            t.push(format!("dst {}", a.shown));
        }
        if !self.sport.is_empty() {
            t.push(format!(
                "sport {}",
                list(self.sport.iter().map(ToString::to_string).collect())
            ));
        }
        if !self.dport.is_empty() {
            t.push(format!(
                "dport {}",
                list(self.dport.iter().map(ToString::to_string).collect())
            ));
        }
        if !self.iface.is_empty() {
            t.push(format!("iface {}", self.iface.join(",")));
        }
        if !self.icmp_type.is_empty() {
            t.push(format!(
                "icmp-type {}",
                list(self.icmp_type.iter().map(ToString::to_string).collect())
            ));
        }
        if !self.state.is_empty() {
            t.push(format!(
                "state {}",
                list(
                    self.state
                        .iter()
                        .map(|s| state_name(*s).to_string())
                        .collect()
                )
            ));
        }
        if let Some(f) = self.tcp_flags {
            t.push(format!("tcp-flags {:#04x}/{:#04x}", f.comp, f.mask));
        }
        if let Some(l) = self.limit {
            t.push(format!("limit {}", rate_text(l)));
        }
        if self.log && self.action != RuleAction::Log {
            t.push("log".into());
        }
        if t.is_empty() {
            "any".to_string()
        } else {
            t.join(" ")
        }
    }
}

/// `PacketState` as the policy writes it.
#[must_use]
pub const fn state_name(s: PacketState) -> &'static str {
    match s {
        PacketState::New => "new",
        PacketState::Established => "established",
        PacketState::Related => "related",
        PacketState::Invalid => "invalid",
    }
}

/// A rate as the policy could write it ("10/second", "1/minute" …) with
/// its burst.
#[must_use]
pub fn rate_text(l: Limit) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000, "second"),
        (60_000_000_000, "minute"),
        (3_600_000_000_000, "hour"),
        (86_400_000_000_000, "day"),
    ];
    let per = UNITS
        .iter()
        .find(|(ns, _)| ns % l.interval_ns == 0)
        .map_or_else(
            || format!("1/{}ns", l.interval_ns),
            |(ns, unit)| format!("{}/{unit}", ns / l.interval_ns),
        );
    format!("{per} burst {}", l.burst)
}

/// FNV-1a, 64 bit: a stable fingerprint of the policy text.
#[must_use]
pub fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
