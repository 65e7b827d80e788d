//! `Policy` → map contents. First-match order is resolved here: every
//! (direction, protocol, port) gets the verdict of the first rule that
//! matches it, so the datapath needs one lookup whatever the rule count.

use fw_common::{
    Direction,
    policy::{Action, OtherProto, PolicyHeader, PortProto, PortVerdict},
};

use super::{Policy, Proto, Rule};

/// Ports per protocol table.
pub const PORTS: usize = 65_536;

/// Everything one policy generation writes into the maps.
pub struct CompiledPolicy {
    pub header: PolicyHeader,
    /// `[direction][PortProto]`, each `PORTS` long.
    pub ports: [[Vec<PortVerdict>; 2]; 2],
}

impl CompiledPolicy {
    #[must_use]
    pub fn port_verdict(&self, dir: Direction, proto: PortProto, port: u16) -> PortVerdict {
        self.ports[dir as usize][proto as usize][usize::from(port)]
    }
}

#[must_use]
pub fn compile(policy: &Policy) -> CompiledPolicy {
    let mut header = PolicyHeader::EMPTY;
    header.policy_hash = policy.hash;
    header.default_action = [
        policy.defaults.input.action() as u8,
        policy.defaults.output.action() as u8,
    ];
    header.accept_neighbor_discovery = u8::from(policy.neighbor_discovery);
    let mut ports = [
        [
            vec![PortVerdict::NO_MATCH; PORTS],
            vec![PortVerdict::NO_MATCH; PORTS],
        ],
        [
            vec![PortVerdict::NO_MATCH; PORTS],
            vec![PortVerdict::NO_MATCH; PORTS],
        ],
    ];
    for (dir, rules) in [
        (Direction::Ingress, &policy.input),
        (Direction::Egress, &policy.output),
    ] {
        header.rule_count[dir as usize] = u16::try_from(rules.len()).unwrap_or(u16::MAX);
        for (i, rule) in rules.iter().enumerate() {
            let verdict = PortVerdict {
                action: rule.verdict.action() as u8,
                _pad: 0,
                rule: u16::try_from(i + 1).unwrap_or(u16::MAX),
            };
            apply_rule(
                rule,
                verdict,
                &mut ports[dir as usize],
                &mut header.other[dir as usize],
            );
        }
    }
    CompiledPolicy { header, ports }
}

/// Give every slot `rule` matches its verdict, unless an earlier rule
/// already claimed the slot.
fn apply_rule(
    rule: &Rule,
    verdict: PortVerdict,
    ports: &mut [Vec<PortVerdict>; 2],
    other: &mut [PortVerdict; OtherProto::COUNT],
) {
    let mut claim = |slot: &mut PortVerdict| {
        if slot.action == Action::NoMatch as u8 {
            *slot = verdict;
        }
    };
    let port_protos: &[PortProto] = match rule.proto {
        Proto::Tcp => &[PortProto::Tcp],
        Proto::Udp => &[PortProto::Udp],
        Proto::Any => &[PortProto::Tcp, PortProto::Udp],
        Proto::Icmp | Proto::Icmpv6 => &[],
    };
    for &proto in port_protos {
        let table = &mut ports[proto as usize];
        if rule.dport.is_empty() {
            table.iter_mut().for_each(&mut claim);
        } else {
            for range in &rule.dport {
                table[usize::from(range.first)..=usize::from(range.last)]
                    .iter_mut()
                    .for_each(&mut claim);
            }
        }
    }
    let others: &[OtherProto] = match rule.proto {
        Proto::Icmp => &[OtherProto::Icmp],
        Proto::Icmpv6 => &[OtherProto::Icmpv6],
        Proto::Any => &[OtherProto::Icmp, OtherProto::Icmpv6, OtherProto::Other],
        Proto::Tcp | Proto::Udp => &[],
    };
    for &o in others {
        claim(&mut other[o as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn compiled(text: &str) -> CompiledPolicy {
        compile(&parse(text, "t.toml").unwrap())
    }

    fn action(c: &CompiledPolicy, dir: Direction, proto: PortProto, port: u16) -> (Action, u16) {
        let v = c.port_verdict(dir, proto, port);
        (Action::from_u8(v.action), v.rule)
    }

    #[test]
    fn ports_and_ranges_edges() {
        let c = compiled(
            "[[input]]\nproto = \"tcp\"\ndport = [22, \"8000-8100\"]\naction = \"accept\"\n",
        );
        let i = Direction::Ingress;
        assert_eq!(action(&c, i, PortProto::Tcp, 22), (Action::Accept, 1));
        assert_eq!(action(&c, i, PortProto::Tcp, 21), (Action::NoMatch, 0));
        assert_eq!(action(&c, i, PortProto::Tcp, 23), (Action::NoMatch, 0));
        assert_eq!(action(&c, i, PortProto::Tcp, 7999), (Action::NoMatch, 0));
        assert_eq!(action(&c, i, PortProto::Tcp, 8000), (Action::Accept, 1));
        assert_eq!(action(&c, i, PortProto::Tcp, 8100), (Action::Accept, 1));
        assert_eq!(action(&c, i, PortProto::Tcp, 8101), (Action::NoMatch, 0));
        // Other protocol, other direction: untouched.
        assert_eq!(action(&c, i, PortProto::Udp, 22), (Action::NoMatch, 0));
        assert_eq!(
            action(&c, Direction::Egress, PortProto::Tcp, 22),
            (Action::NoMatch, 0)
        );
        assert_eq!(
            c.header.default_action,
            [Action::Drop as u8, Action::Accept as u8]
        );
        assert_eq!(c.header.rule_count, [1, 0]);
    }

    #[test]
    fn first_match_wins() {
        let c = compiled(
            "[[input]]\nproto = \"tcp\"\ndport = \"1000-2000\"\naction = \"drop\"\n\
             [[input]]\nproto = \"tcp\"\ndport = [1500, 2500]\naction = \"accept\"\n\
             [[input]]\naction = \"drop\"\n",
        );
        let i = Direction::Ingress;
        assert_eq!(action(&c, i, PortProto::Tcp, 1500), (Action::Drop, 1));
        assert_eq!(action(&c, i, PortProto::Tcp, 2500), (Action::Accept, 2));
        // The catch-all rule 3 takes every port and protocol left.
        assert_eq!(action(&c, i, PortProto::Tcp, 80), (Action::Drop, 3));
        assert_eq!(action(&c, i, PortProto::Udp, 53), (Action::Drop, 3));
        assert_eq!(c.header.other[0][OtherProto::Icmp as usize].rule, 3);
        assert_eq!(c.header.other[0][OtherProto::Other as usize].rule, 3);
    }

    #[test]
    fn icmp_rules_fill_their_slot_only() {
        let c = compiled(
            "[[output]]\nproto = \"icmpv6\"\naction = \"drop\"\n[defaults]\noutput = \"drop\"\n",
        );
        let out = &c.header.other[Direction::Egress as usize];
        assert_eq!(
            Action::from_u8(out[OtherProto::Icmpv6 as usize].action),
            Action::Drop
        );
        assert_eq!(
            Action::from_u8(out[OtherProto::Icmp as usize].action),
            Action::NoMatch
        );
        assert_eq!(c.header.default_action[1], Action::Drop as u8);
    }
}
