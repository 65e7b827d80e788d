//! The policy stage: ports and ranges at their edges, first match, default
//! policies per direction, protocols without ports, neighbour discovery.

use fw_common::{Direction, conntrack::tcp_flags::SYN, counters::Counter};
use fw_tests::{
    datapath::{Datapath, assert_table},
    lacks_privileges,
    packet::{L4, Vlan, Way, frame, neighbor_solicitation},
};

fn syn(v6: bool, dport: u16) -> Vec<u8> {
    frame(
        v6,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport,
            flags: SYN,
        },
    )
}
fn udp(v6: bool, dport: u16) -> Vec<u8> {
    frame(
        v6,
        Way::In,
        Vlan::None,
        L4::Udp {
            sport: 40_000,
            dport,
        },
    )
}

#[test]
fn ranges_at_their_edges_and_first_match() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
[[input]]
name = "block low ports"
proto = "tcp"
dport = "1-1023"
action = "drop"
[[input]]
name = "but allow ssh"
proto = "tcp"
dport = 22
action = "accept"
[[input]]
proto = "udp"
dport = [53, 65535]
action = "drop"
"#,
    );
    for v6 in [false, true] {
        let rows = vec![
            ("tcp 1 (range start)", syn(v6, 1), Counter::DropRule),
            (
                "tcp 22: the earlier drop range wins",
                syn(v6, 22),
                Counter::DropRule,
            ),
            ("tcp 1023 (range end)", syn(v6, 1023), Counter::DropRule),
            (
                "tcp 1024 (past the range)",
                syn(v6, 1024),
                Counter::AcceptDefault,
            ),
            ("tcp 65535", syn(v6, 65535), Counter::AcceptDefault),
            ("udp 53", udp(v6, 53), Counter::DropRule),
            ("udp 54", udp(v6, 54), Counter::AcceptDefault),
            ("udp 65535", udp(v6, 65535), Counter::DropRule),
        ];
        assert_table(&mut dp, Direction::Ingress, &rows);
    }
}

#[test]
fn portless_protocols_and_catch_all() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        "[[input]]\nproto = \"icmp\"\naction = \"accept\"\n[[input]]\nproto = \"icmpv6\"\naction = \"drop\"\n",
    );
    let ping4 = frame(false, Way::In, Vlan::None, L4::EchoRequest { id: 1 });
    let ping6 = frame(true, Way::In, Vlan::None, L4::EchoRequest { id: 1 });
    let mut gre = udp(false, 1);
    gre[14 + 9] = 47; // IP protocol GRE
    assert_table(
        &mut dp,
        Direction::Ingress,
        &[
            ("icmp echo request allowed", ping4, Counter::AcceptRule),
            (
                "icmpv6 echo request dropped by rule",
                ping6,
                Counter::DropRule,
            ),
            ("GRE hits the default", gre.clone(), Counter::DropDefault),
        ],
    );
    let mut dp = Datapath::with_policy("[[input]]\naction = \"accept\"\n");
    assert_table(
        &mut dp,
        Direction::Ingress,
        &[("GRE under a catch-all accept", gre, Counter::AcceptRule)],
    );
}

#[test]
fn neighbor_discovery_needs_hop_limit_255() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy("[defaults]\ninput = \"drop\"\n");
    assert_table(
        &mut dp,
        Direction::Ingress,
        &[
            (
                "NS with hop limit 255",
                neighbor_solicitation(255),
                Counter::AcceptNeighborDiscovery,
            ),
            (
                "NS with hop limit 64 (off-link forgery)",
                neighbor_solicitation(64),
                Counter::DropDefault,
            ),
        ],
    );
    let mut dp = Datapath::with_policy("[stateful]\nicmpv6_neighbor_discovery = \"drop\"\n");
    assert_table(
        &mut dp,
        Direction::Ingress,
        &[(
            "NS when disabled",
            neighbor_solicitation(255),
            Counter::DropNeighborDiscovery,
        )],
    );
}

#[test]
fn egress_default_drop_still_answers_inbound_flows() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        "[defaults]\ninput = \"drop\"\noutput = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n",
    );
    let syn_ack = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Tcp {
            sport: 80,
            dport: 40_000,
            flags: SYN | 0x10,
        },
    );
    let new_out = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 80,
            flags: SYN,
        },
    );
    assert_eq!(
        dp.egress(&new_out).counter,
        Counter::DropDefault,
        "locked-down egress"
    );
    assert_eq!(
        dp.egress(&syn_ack).counter,
        Counter::DropInvalid,
        "no flow yet"
    );
    assert_eq!(dp.ingress(&syn(false, 80)).counter, Counter::AcceptRule);
    assert_eq!(
        dp.egress(&syn_ack).counter,
        Counter::AcceptEstablished,
        "reply of an accepted inbound flow"
    );
}

/// A chain of 10 000 rules (the sparse classifier): the first, last and
/// middle rules decide, across bitmap words and summary words; a `log`
/// rule ahead of them is passed over; a packet no rule takes falls to the
/// default after all of them; and the output chain, whose rules follow the
/// input chain's in the rule pool, still finds its own.
#[test]
fn ten_thousand_rules_first_match_at_every_depth() {
    use std::fmt::Write as _;
    if lacks_privileges() {
        return;
    }
    let mut policy = String::from(
        "[defaults]\ninput = \"drop\"\noutput = \"drop\"\n\
         [[input]]\nproto = \"tcp\"\naction = \"log\"\n",
    );
    for i in 0..10_000u32 {
        let action = if i % 2 == 0 { "accept" } else { "reject" };
        let _ = write!(
            policy,
            "[[input]]\nproto = \"tcp\"\ndport = {}\naction = \"{action}\"\n",
            20_000 + i
        );
    }
    policy.push_str("[[output]]\nproto = \"udp\"\ndport = 53\naction = \"accept\"\n");
    let mut dp = Datapath::with_policy(&policy);
    let mut rows = Vec::new();
    for i in [0u16, 1, 62, 63, 64, 4_094, 4_095, 4_096, 9_998, 9_999] {
        let counter = if i % 2 == 0 {
            Counter::AcceptRule
        } else {
            Counter::RejectRule
        };
        rows.push((format!("rule {}", i + 2), syn(false, 20_000 + i), counter));
    }
    rows.push(("no rule".into(), syn(false, 19_999), Counter::DropDefault));
    rows.push((
        "past the last".into(),
        syn(false, 30_000),
        Counter::DropDefault,
    ));
    let rows: Vec<(&str, Vec<u8>, Counter)> = rows
        .iter()
        .map(|(n, f, c)| (n.as_str(), f.clone(), *c))
        .collect();
    assert_table(&mut dp, Direction::Ingress, &rows);
    let dns = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Udp {
            sport: 40_000,
            dport: 53,
        },
    );
    assert_eq!(dp.egress(&dns).counter, Counter::AcceptRule);
    let other = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Udp {
            sport: 40_000,
            dport: 54,
        },
    );
    assert_eq!(dp.egress(&other).counter, Counter::DropDefault);
}
