//! What a policy does with one packet, decided by walking its rules the
//! way the datapath's tables encode them: the lockout guard asks this of a
//! policy before it is loaded.
//!
//! It covers the stages a TCP packet to or from this host meets after
//! connection tracking (`[stateful]`, the chain's rules, the default);
//! loopback and malformed-packet handling do not depend on the policy.

use std::net::IpAddr;

use fw_common::policy::{Chain, PacketState};

use super::{AddrMatch, Policy, PortRange, Rule, RuleAction, Stage, Verdict};

/// A packet of a TCP connection, as the policy sees it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The interface it arrives on (input) or leaves through (output).
    pub iface: String,
    pub state: PacketState,
    /// TCP flags byte (`0x02` SYN, `0x10` ACK).
    pub tcp_flags: u8,
}

/// TCP flag bits.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// What decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decider<'p> {
    /// `[stateful] established` (or `invalid`, `related`) set to accept
    /// or drop.
    Stage(&'static str),
    Rule(&'p Rule),
    /// The chain's default.
    Default(Chain),
}

/// The outcome for a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement<'p> {
    pub accepted: bool,
    pub by: Decider<'p>,
}

fn addr_ok(m: Option<&AddrMatch>, a: IpAddr) -> bool {
    m.is_none_or(|m| m.nets.iter().any(|n| n.contains(&a)) != m.negated)
}

fn port_ok(ranges: &[PortRange], port: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.first <= port && port <= r.last)
}

/// Does `rule` match the TCP packet `p`? A rate `limit` is taken as not
/// exhausted: the guard asks whether a packet *can* pass.
#[must_use]
pub fn matches(rule: &Rule, p: &Probe) -> bool {
    let family_ok = match p.src {
        IpAddr::V4(_) => rule.families.ipv4,
        IpAddr::V6(_) => rule.families.ipv6,
    };
    family_ok
        && rule.proto.is_none_or(|x| x == fw_common::ipproto::TCP)
        && rule.icmp_type.is_empty()
        && addr_ok(rule.src.as_ref(), p.src)
        && addr_ok(rule.dst.as_ref(), p.dst)
        && port_ok(&rule.sport, p.sport)
        && port_ok(&rule.dport, p.dport)
        && (rule.iface.is_empty() || rule.iface.contains(&p.iface))
        && (rule.state.is_empty() || rule.state.contains(&p.state))
        && rule
            .tcp_flags
            .is_none_or(|m| p.tcp_flags & m.mask == m.comp)
}

/// Judge `p` in `chain` (input: `p` comes to this host; output: it
/// leaves).
#[must_use]
pub fn judge<'p>(policy: &'p Policy, chain: Chain, p: &Probe) -> Judgement<'p> {
    let stage = match p.state {
        PacketState::Established => Some(("[stateful] established", policy.stateful.established)),
        PacketState::Related => Some(("[stateful] related", policy.stateful.related)),
        PacketState::Invalid => Some(("[stateful] invalid", policy.stateful.invalid)),
        PacketState::New => None,
    };
    match stage {
        Some((name, Stage::Accept)) => {
            return Judgement {
                accepted: true,
                by: Decider::Stage(name),
            };
        }
        Some((name, Stage::Drop)) => {
            return Judgement {
                accepted: false,
                by: Decider::Stage(name),
            };
        }
        Some((_, Stage::Rules)) | None => {}
    }
    for rule in policy.rules(chain) {
        if rule.action == RuleAction::Log || !matches(rule, p) {
            continue;
        }
        return Judgement {
            accepted: rule.action == RuleAction::Accept,
            by: Decider::Rule(rule),
        };
    }
    let default = match chain {
        Chain::Input => policy.defaults.input,
        Chain::Output => policy.defaults.output,
        Chain::Forward => policy.defaults.forward,
    };
    Judgement {
        accepted: default == Verdict::Accept,
        by: Decider::Default(chain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn probe(src: &str, dport: u16, state: PacketState, flags: u8) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            sport: 40000,
            dport,
            iface: "eth0".into(),
            state,
            tcp_flags: flags,
        }
    }

    const POLICY: &str = r#"
[sets]
office = ["198.51.100.0/24"]

[[input]]
name = "log everything"
action = "log"

[[input]]
name = "blocklist"
src = "203.0.113.0/24"
action = "drop"

[[input]]
proto = "tcp"
dport = 22
src = "@office"
iface = "eth0"
action = "accept"

[[input]]
proto = "udp"
dport = 22
action = "accept"
"#;

    #[test]
    fn first_matching_rule_decides_new_connections() {
        let p = parse(POLICY, "p.toml").unwrap();
        let j = judge(
            &p,
            Chain::Input,
            &probe("198.51.100.7", 22, PacketState::New, SYN),
        );
        assert!(j.accepted);
        assert!(matches!(j.by, Decider::Rule(r) if r.line == 14), "{j:?}");
        let j = judge(
            &p,
            Chain::Input,
            &probe("203.0.113.9", 22, PacketState::New, SYN),
        );
        assert!(!j.accepted);
        assert!(matches!(j.by, Decider::Rule(r) if r.name.as_deref() == Some("blocklist")));
        // Not from the office, and the UDP rule is no way in for TCP.
        let j = judge(
            &p,
            Chain::Input,
            &probe("192.0.2.99", 22, PacketState::New, SYN),
        );
        assert_eq!(j.by, Decider::Default(Chain::Input));
        assert!(!j.accepted, "the input default is drop");
        let mut other_if = probe("198.51.100.7", 22, PacketState::New, SYN);
        other_if.iface = "eth1".into();
        assert!(!judge(&p, Chain::Input, &other_if).accepted);
    }

    #[test]
    fn established_packets_meet_the_stateful_stage_or_the_rules() {
        let p = parse(POLICY, "p.toml").unwrap();
        let j = judge(
            &p,
            Chain::Input,
            &probe("203.0.113.9", 22, PacketState::Established, ACK),
        );
        assert!(j.accepted, "established is accepted before the blocklist");
        assert_eq!(j.by, Decider::Stage("[stateful] established"));
        let strict = parse(
            "[stateful]\nestablished = \"rules\"\n[[input]]\nstate = \"established\"\nproto = \"tcp\"\nsport = 80\naction = \"accept\"\n",
            "s.toml",
        )
        .unwrap();
        let j = judge(
            &strict,
            Chain::Input,
            &probe("192.0.2.7", 22, PacketState::Established, ACK),
        );
        assert!(!j.accepted);
        assert_eq!(j.by, Decider::Default(Chain::Input));
    }
}
