//! The policy: what `policy.toml` says, validated (`parse`), and turned into
//! the map contents the datapath reads (`compile`).
//!
//! Nothing is applied from a policy until the whole file parsed, validated
//! and compiled without error.

mod compile;
mod parse;

use std::fmt;

pub use compile::{CompiledPolicy, compile};
pub use parse::{line_col as line_col_of, parse};

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
    pub neighbor_discovery: bool,
    pub input: Vec<Rule>,
    pub output: Vec<Rule>,
    /// FNV-1a of the source text, shown by `status` to identify the policy.
    pub hash: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub input: Verdict,
    pub output: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    #[must_use]
    pub const fn action(self) -> fw_common::policy::Action {
        match self {
            Self::Accept => fw_common::policy::Action::Accept,
            Self::Drop => fw_common::policy::Action::Drop,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Icmpv6 => "icmpv6",
        })
    }
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: Option<String>,
    pub proto: Proto,
    /// Empty: any destination port.
    pub dport: Vec<PortRange>,
    pub verdict: Verdict,
    /// 1-based line of the rule in the policy file, for messages.
    pub line: usize,
}

impl fmt::Display for Rule {
    /// One-line summary, as `status` prints a rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} proto {}", self.verdict, self.proto)?;
        if !self.dport.is_empty() {
            let ports: Vec<String> = self.dport.iter().map(ToString::to_string).collect();
            write!(f, " dport {}", ports.join(","))?;
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
