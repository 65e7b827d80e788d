//! The policy: what `policy.toml` says, validated (`parse`), and turned into
//! the map contents the datapath reads (`compile`).
//!
//! Nothing is applied from a policy until the whole file parsed, validated
//! and compiled without error.

mod compile;
pub(crate) mod icmp;
mod parse;

use std::{collections::BTreeMap, fmt};

pub use compile::{ChainTables, CompiledPolicy, compile};
use fw_common::{
    conntrack::{DEFAULT_TIMEOUTS, Timeouts},
    maps::CONNTRACK_MAX_ENTRIES,
    policy::{PacketState, RejectWith},
};
use ipnet::IpNet;
pub use parse::{line_col as line_col_of, parse, parse_file};

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
}

/// A token-bucket rate: one match per `interval_ns` on average, `burst`
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub interval_ns: u64,
    pub burst: u32,
}

impl fmt::Display for Rule {
    /// One-line summary, as `status` prints a rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action)?;
        if let Some(p) = self.proto {
            write!(f, " proto {}", icmp::proto_name(p))?;
        }
        if self.families != Families::BOTH {
            write!(f, " {}", if self.families.ipv4 { "ipv4" } else { "ipv6" })?;
        }
        if let Some(a) = &self.src {
            write!(f, " src {}", a.shown)?;
        }
        if let Some(a) = &self.dst {
            write!(f, " dst {}", a.shown)?;
        }
        let ports = |v: &[PortRange]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.sport.is_empty() {
            write!(f, " sport {}", ports(&self.sport))?;
        }
        if !self.dport.is_empty() {
            write!(f, " dport {}", ports(&self.dport))?;
        }
        if !self.iface.is_empty() {
            write!(f, " iface {}", self.iface.join(","))?;
        }
        if !self.icmp_type.is_empty() {
            let t: Vec<String> = self.icmp_type.iter().map(ToString::to_string).collect();
            write!(f, " icmp-type {}", t.join(","))?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: a stable fingerprint of the policy text.
#[must_use]
pub fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
