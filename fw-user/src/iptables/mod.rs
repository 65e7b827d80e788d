//! fw's policy model in iptables terms: `export` turns a policy into
//! `iptables-restore` input with the same meaning (the fallback backend
//! and `fw-user export`), `import` turns an `iptables-save` file into a
//! policy (`fw-user import`).

pub mod export;
pub mod import;

/// Which of iptables / ip6tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The command that reads this family's rulesets.
    #[must_use]
    pub const fn restore_command(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

/// The chains fw owns in the filter table; the builtin chains only jump
/// to them, so other tools' rules are left alone.
pub const CHAIN_INPUT: &str = "FW-INPUT";
pub const CHAIN_OUTPUT: &str = "FW-OUTPUT";
pub const CHAIN_FORWARD: &str = "FW-FORWARD";
