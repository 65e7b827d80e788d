//! Every match field of the rule language, in the kernel, for IPv4 and
//! IPv6: addresses, prefixes, sets and negation, ports at their edges,
//! protocols by number, interfaces, ICMP types, TCP flags, connection
//! state, family, rule order with overlaps, and LOG rules that continue.

use std::net::IpAddr;

use fw_common::{
    Direction,
    conntrack::tcp_flags::{ACK, SYN},
    counters::Counter,
};
use fw_tests::{
    datapath::{Datapath, assert_table},
    lacks_privileges,
    packet::{CLIENT_MAC, L4, SERVER_MAC, SERVER4, SERVER6, Vlan, Way, frame, frame_between},
};

fn from(src: &str, l4: L4) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = if src.is_ipv4() {
        SERVER4.into()
    } else {
        SERVER6.into()
    };
    frame_between(src, dst, CLIENT_MAC, SERVER_MAC, Vlan::None, l4)
}

fn to(dst: &str, l4: L4) -> Vec<u8> {
    let dst: IpAddr = dst.parse().unwrap();
    let src: IpAddr = if dst.is_ipv4() {
        "192.0.2.2".parse().unwrap()
    } else {
        "2001:db8::2".parse().unwrap()
    };
    frame_between(src, dst, CLIENT_MAC, SERVER_MAC, Vlan::None, l4)
}

/// A fresh TCP SYN (its own source port, so rows never share a flow).
fn syn(dport: u16) -> L4 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static SPORT: AtomicU16 = AtomicU16::new(20_000);
    L4::Tcp {
        sport: SPORT.fetch_add(1, Ordering::Relaxed),
        dport,
        flags: SYN,
    }
}

#[test]
fn source_addresses_sets_and_negation() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
[sets]
blocked = ["203.0.113.0/24", "198.51.100.66", "2001:db8:bad::/48"]
admins = ["192.0.2.0/28", "2001:db8:1::/64"]
[[input]]
name = "blocklist"
src = "@blocked"
action = "drop"
[[input]]
name = "admin exception inside the blocked /24"
src = "203.0.113.7"
action = "accept"
[[input]]
name = "ssh only from admins"
proto = "tcp"
dport = 22
src = "!@admins"
action = "drop"
"#,
    );
    let rows = vec![
        (
            "blocked /24",
            from("203.0.113.9", syn(80)),
            Counter::DropRule,
        ),
        (
            "the exception comes after the blocklist: still dropped",
            from("203.0.113.7", syn(80)),
            Counter::DropRule,
        ),
        (
            "blocked host",
            from("198.51.100.66", syn(80)),
            Counter::DropRule,
        ),
        (
            "its neighbour",
            from("198.51.100.67", syn(80)),
            Counter::AcceptDefault,
        ),
        (
            "blocked v6 /48",
            from("2001:db8:bad:ffff::1", syn(80)),
            Counter::DropRule,
        ),
        (
            "v6 outside it",
            from("2001:db8:bae::1", syn(80)),
            Counter::AcceptDefault,
        ),
        (
            "ssh from an admin",
            from("192.0.2.15", syn(22)),
            Counter::AcceptDefault,
        ),
        (
            "ssh from just outside the admin /28",
            from("192.0.2.16", syn(22)),
            Counter::DropRule,
        ),
        (
            "ssh from a v6 admin",
            from("2001:db8:1::99", syn(22)),
            Counter::AcceptDefault,
        ),
        (
            "ssh from another v6 host",
            from("2001:db8:2::99", syn(22)),
            Counter::DropRule,
        ),
        (
            "http from a non-admin is fine",
            from("192.0.2.16", syn(80)),
            Counter::AcceptDefault,
        ),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
}

#[test]
fn destination_addresses_and_family() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[[input]]
proto = "tcp"
dport = 3306
dst = "192.0.2.30"
action = "accept"
[[input]]
family = "ipv6"
proto = "tcp"
dport = 8080
action = "accept"
[[input]]
proto = "tcp"
dport = 9000
dst = "!2001:db8::/64"
action = "accept"
"#,
    );
    let rows = vec![
        (
            "mysql to its address",
            to("192.0.2.30", syn(3306)),
            Counter::AcceptRule,
        ),
        (
            "mysql to another address",
            to("192.0.2.31", syn(3306)),
            Counter::DropDefault,
        ),
        (
            "8080 over IPv6",
            to("2001:db8::1", syn(8080)),
            Counter::AcceptRule,
        ),
        (
            "8080 over IPv4: the rule is IPv6-only",
            to("192.0.2.1", syn(8080)),
            Counter::DropDefault,
        ),
        (
            "9000 to a v6 address outside the negated /64",
            to("2001:db8:5::1", syn(9000)),
            Counter::AcceptRule,
        ),
        (
            "9000 inside the negated /64",
            to("2001:db8::1", syn(9000)),
            Counter::DropDefault,
        ),
        (
            "9000 over IPv4: the negated v6 prefix pins the rule to IPv6",
            to("192.0.2.1", syn(9000)),
            Counter::DropDefault,
        ),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
}

#[test]
fn ports_at_their_edges_and_source_ports() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[[input]]
name = "mail, with a client source port"
proto = "tcp"
dport = [25, 110, 143, "62000-64000"]
sport = "1024-65535"
action = "accept"
[[input]]
proto = "udp"
dport = 65535
action = "accept"
"#,
    );
    for v6 in [false, true] {
        let t = |sport, dport| {
            frame(
                v6,
                Way::In,
                Vlan::None,
                L4::Tcp {
                    sport,
                    dport,
                    flags: SYN,
                },
            )
        };
        let rows = vec![
            ("25 from 1024", t(1024, 25), Counter::AcceptRule),
            (
                "25 from 1023 (privileged source)",
                t(1023, 25),
                Counter::DropDefault,
            ),
            ("25 from 65535", t(65535, 25), Counter::AcceptRule),
            ("61999", t(40_000, 61_999), Counter::DropDefault),
            ("62000", t(40_001, 62_000), Counter::AcceptRule),
            ("64000", t(40_002, 64_000), Counter::AcceptRule),
            ("64001", t(40_003, 64_001), Counter::DropDefault),
            (
                "udp 65535",
                frame(
                    v6,
                    Way::In,
                    Vlan::None,
                    L4::Udp {
                        sport: 5,
                        dport: 65_535,
                    },
                ),
                Counter::AcceptRule,
            ),
            (
                "udp 65534",
                frame(
                    v6,
                    Way::In,
                    Vlan::None,
                    L4::Udp {
                        sport: 5,
                        dport: 65_534,
                    },
                ),
                Counter::DropDefault,
            ),
        ];
        assert_table(&mut dp, Direction::Ingress, &rows);
    }
}

#[test]
fn icmp_types_and_protocol_numbers() {
    if lacks_privileges() {
        return;
    }
    // ICMP errors quoting no tracked flow are INVALID (as in netfilter);
    // hand INVALID to the rules so the type match itself is what is tested.
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[stateful]
invalid = "rules"
[[input]]
proto = "icmp"
icmp_type = ["echo-request", "time-exceeded", "destination-unreachable"]
action = "accept"
[[input]]
proto = "icmpv6"
icmp_type = ["echo-request", 2]
action = "accept"
[[input]]
proto = 47
action = "accept"
"#,
    );
    let mut unreachable = frame(false, Way::In, Vlan::None, L4::EchoRequest { id: 9 });
    unreachable[14 + 20] = 3;
    let mut timestamp = frame(false, Way::In, Vlan::None, L4::EchoRequest { id: 9 });
    timestamp[14 + 20] = 13;
    let mut too_big = frame(true, Way::In, Vlan::None, L4::EchoRequest { id: 9 });
    too_big[14 + 40] = 2;
    let mut v6_unreach = frame(true, Way::In, Vlan::None, L4::EchoRequest { id: 9 });
    v6_unreach[14 + 40] = 1;
    let mut gre = frame(false, Way::In, Vlan::None, L4::Udp { sport: 1, dport: 1 });
    gre[14 + 9] = 47;
    let mut esp = gre.clone();
    esp[14 + 9] = 50;
    let rows = vec![
        (
            "echo request",
            frame(false, Way::In, Vlan::None, L4::EchoRequest { id: 1 }),
            Counter::AcceptRule,
        ),
        ("destination unreachable", unreachable, Counter::AcceptRule),
        ("timestamp request", timestamp, Counter::DropDefault),
        (
            "v6 echo request",
            frame(true, Way::In, Vlan::None, L4::EchoRequest { id: 1 }),
            Counter::AcceptRule,
        ),
        (
            "v6 packet too big (by number)",
            too_big,
            Counter::AcceptRule,
        ),
        (
            "v6 destination unreachable",
            v6_unreach,
            Counter::DropDefault,
        ),
        ("GRE by number", gre, Counter::AcceptRule),
        ("ESP", esp, Counter::DropDefault),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
}

#[test]
fn tcp_flags_and_connection_state() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        tcp_flags_and_state_on(v6);
    }
}

fn tcp_flags_and_state_on(v6: bool) {
    // A locked-down host whose OUTPUT allows only replies from 22/80/443:
    // established traffic goes to the rules, which match on state.
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
output = "drop"
[stateful]
established = "rules"
[[input]]
proto = "tcp"
tcp_flags = { mask = ["syn", "ack"], set = ["syn"] }
dport = 23
action = "drop"
[[output]]
proto = "tcp"
sport = [22, 80, 443]
state = ["established", "related"]
action = "accept"
"#,
    );
    let conn = |dport: u16, flags| {
        frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Tcp {
                sport: 50_000,
                dport,
                flags,
            },
        )
    };
    let reply = |sport: u16, flags| {
        frame(
            v6,
            Way::Out,
            Vlan::None,
            L4::Tcp {
                sport,
                dport: 50_000,
                flags,
            },
        )
    };
    assert_eq!(
        dp.ingress(&conn(23, SYN)).counter,
        Counter::DropRule,
        "tcp_flags matched the SYN"
    );
    for port in [22u16, 8080] {
        assert_eq!(dp.ingress(&conn(port, SYN)).counter, Counter::AcceptDefault);
    }
    // The SYN/ACK reply is ESTABLISHED and goes to the output rules.
    assert_eq!(
        dp.egress(&reply(22, SYN | ACK)).counter,
        Counter::AcceptRule,
        "replies from 22"
    );
    assert_eq!(
        dp.egress(&reply(8080, SYN | ACK)).counter,
        Counter::DropDefault,
        "replies from 8080 are not allowed"
    );
    // The client's ACK in is established too; input has no rule for it:
    // the default (accept) decides.
    assert_eq!(dp.ingress(&conn(22, ACK)).counter, Counter::AcceptDefault);
    // A new outbound connection: state NEW, no rule allows it.
    let new_out = frame(
        v6,
        Way::Out,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 22,
            flags: SYN,
        },
    );
    assert_eq!(dp.egress(&new_out).counter, Counter::DropDefault);
}

#[test]
fn invalid_packets_to_the_rules() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        invalid_packets_on(v6);
    }
}

fn invalid_packets_on(v6: bool) {
    let mut dp = Datapath::with_policy(
        "[stateful]\ninvalid = \"rules\"\n[defaults]\ninput = \"accept\"\n[[input]]\nstate = \"invalid\"\nproto = \"tcp\"\ndport = 80\naction = \"drop\"\n",
    );
    let ack = |dport| {
        frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Tcp {
                sport: 1,
                dport,
                flags: ACK,
            },
        )
    };
    assert_eq!(
        dp.ingress(&ack(80)).counter,
        Counter::DropRule,
        "INVALID reached the rules"
    );
    assert_eq!(
        dp.ingress(&ack(81)).counter,
        Counter::AcceptDefault,
        "and the default accepts the rest"
    );
    let mut dp = Datapath::with_policy("[stateful]\ninvalid = \"accept\"\n");
    assert_eq!(dp.ingress(&ack(80)).counter, Counter::AcceptInvalid);
}

#[test]
fn interfaces() {
    if lacks_privileges() {
        return;
    }
    // `testdev` is the device BPF_PROG_TEST_RUN presents packets on.
    let mut dp = Datapath::with_policy(
        "[defaults]\ninput = \"drop\"\n[[input]]\niface = \"if7\"\naction = \"accept\"\n[[input]]\niface = [\"testdev\", \"if9\"]\nproto = \"tcp\"\naction = \"accept\"\n",
    );
    let rows = vec![
        (
            "tcp on the test device (listed)",
            frame(false, Way::In, Vlan::None, syn(80)),
            Counter::AcceptRule,
        ),
        (
            "udp on the test device (only if7 takes udp)",
            frame(false, Way::In, Vlan::None, L4::Udp { sport: 1, dport: 2 }),
            Counter::DropDefault,
        ),
        (
            "v6 tcp on the test device",
            frame(true, Way::In, Vlan::None, syn(80)),
            Counter::AcceptRule,
        ),
        (
            "v6 udp on the test device",
            frame(true, Way::In, Vlan::None, L4::Udp { sport: 1, dport: 2 }),
            Counter::DropDefault,
        ),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
}

#[test]
fn overlapping_rules_first_match_and_log_continues() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[[input]]
name = "log all tcp"
proto = "tcp"
action = "log"
[[input]]
proto = "tcp"
dport = "8000-8999"
src = "192.0.2.0/24"
action = "accept"
[[input]]
proto = "tcp"
dport = "8500-9500"
action = "reject"
[[input]]
proto = "tcp"
action = "accept"
"#,
    );
    let rows = vec![
        (
            "in both ranges, from the /24: rule 2",
            from("192.0.2.9", syn(8600)),
            Counter::AcceptRule,
        ),
        (
            "in both ranges, from elsewhere: rule 3",
            from("198.51.100.1", syn(8600)),
            Counter::RejectRule,
        ),
        (
            "only in the second range",
            from("192.0.2.9", syn(9200)),
            Counter::RejectRule,
        ),
        (
            "outside both: rule 4",
            from("192.0.2.9", syn(7000)),
            Counter::AcceptRule,
        ),
        (
            "udp: no rule but the default",
            from(
                "192.0.2.9",
                L4::Udp {
                    sport: 1,
                    dport: 8600,
                },
            ),
            Counter::DropDefault,
        ),
        (
            "v6: outside the v4 /24, rule 3",
            from("2001:db8::9", syn(8600)),
            Counter::RejectRule,
        ),
        (
            "v6: outside both ranges, rule 4",
            from("2001:db8::9", syn(7000)),
            Counter::AcceptRule,
        ),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
    // The flow admitted by rule 2 remembers it (1-based), not the LOG rule.
    let admitted: Vec<u16> = dp.conntrack().iter().map(|(_, e)| e.rule).collect();
    assert!(admitted.contains(&2), "{admitted:?}");
    assert!(!admitted.contains(&1), "{admitted:?}");
}

#[test]
fn limit_matches_only_under_the_rate() {
    if lacks_privileges() {
        return;
    }
    // Two pings a second with a burst of 2; beyond that the rule does not
    // match and the next one (here: the default) decides.
    let mut dp = Datapath::with_policy(
        "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"icmp\"\nicmp_type = \"echo-request\"\nlimit = \"2/second\"\nlimit_burst = 2\naction = \"accept\"\n",
    );
    let ping = |id| frame(false, Way::In, Vlan::None, L4::EchoRequest { id });
    let burst: Vec<Counter> = (0..5).map(|i| dp.ingress(&ping(100 + i)).counter).collect();
    assert_eq!(
        burst,
        [
            Counter::AcceptRule,
            Counter::AcceptRule,
            Counter::DropDefault,
            Counter::DropDefault,
            Counter::DropDefault
        ]
    );
    dp.advance_clock(1);
    let next: Vec<Counter> = (0..3).map(|i| dp.ingress(&ping(200 + i)).counter).collect();
    assert_eq!(
        next,
        [
            Counter::AcceptRule,
            Counter::AcceptRule,
            Counter::DropDefault
        ],
        "one second buys two more"
    );
    // A reload starts the bucket full again.
    dp.install(
        "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"icmp\"\nicmp_type = \"echo-request\"\nlimit = \"2/second\"\nlimit_burst = 2\naction = \"accept\"\n",
    );
    assert_eq!(dp.ingress(&ping(300)).counter, Counter::AcceptRule);
}
