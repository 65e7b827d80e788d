use fw_common::conntrack::CtEntry;

use super::*;

const SEC: u64 = 1_000_000_000;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn tuple(s: &str) -> Tuple {
    parse_tuple(&words(s), None).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn tuple_err(s: &str, id: Option<u16>) -> String {
    parse_tuple(&words(s), id)
        .expect_err("tuple should be refused")
        .to_string()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn record(
    local: &str,
    local_port: u16,
    remote: &str,
    remote_port: u16,
    proto: u8,
    entry: CtEntry,
) -> CtRecord {
    let (l, r) = (ip(local), ip(remote));
    CtRecord {
        table: CtTable::Established,
        key: CtKey {
            local: words_of(l),
            remote: words_of(r),
            local_port,
            remote_port,
            proto,
            family: if l.is_ipv6() {
                family::IPV6
            } else {
                family::IPV4
            },
            _pad: [0; 2],
        },
        entry,
    }
}

/// An SSH session a client opened to this host: in the table as local
/// 192.0.2.1:22, remote 192.0.2.10:40000.
fn inbound_ssh() -> CtRecord {
    record(
        "192.0.2.1",
        22,
        "192.0.2.10",
        40000,
        ipproto::TCP,
        CtEntry {
            created_ns: 100 * SEC,
            last_seen_ns: 150 * SEC,
            expires_ns: 1000 * SEC,
            packets: [5, 4],
            bytes: [300, 260],
            state: CtState::TcpEstablished as u8,
            origin: Direction::Ingress as u8,
            flags: CT_FLAG_SEEN_REPLY,
            rule: 2,
            ..CtEntry::default()
        },
    )
}

#[test]
fn endpoints_in_every_form() {
    assert_eq!(
        parse_endpoint("192.0.2.10:40000").unwrap(),
        Endpoint {
            addr: ip("192.0.2.10"),
            port: Some(40000)
        }
    );
    assert_eq!(
        parse_endpoint("[2001:db8::1]:22").unwrap(),
        Endpoint {
            addr: ip("2001:db8::1"),
            port: Some(22)
        }
    );
    for bare in ["192.0.2.10", "2001:db8::1", "[2001:db8::1]"] {
        let e = parse_endpoint(bare).unwrap();
        assert_eq!(e.port, None, "{bare}");
    }
    for bad in [
        "192.0.2.300:1",
        "host:22",
        "192.0.2.1:0",
        "2001:db8::1:22x",
        "",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad} should be refused");
    }
    assert_eq!(
        parse_endpoint("[2001:db8::1]:22").unwrap().to_string(),
        "[2001:db8::1]:22"
    );
}

#[test]
fn tuples_for_each_protocol() {
    let t = tuple("tcp 192.0.2.10:40000 192.0.2.1:22");
    assert_eq!(t.proto, ipproto::TCP);
    assert_eq!(t.to_string(), "tcp 192.0.2.10:40000 192.0.2.1:22");
    let t = tuple("UDP [2001:db8::10]:5353 [2001:db8::1]:53");
    assert_eq!(t.proto, ipproto::UDP);
    let t = parse_tuple(&words("icmp 192.0.2.10 192.0.2.1"), Some(77)).unwrap();
    assert_eq!(t.icmp_id, Some(77));
    assert_eq!(t.to_string(), "icmp 192.0.2.10 192.0.2.1 id 77");
    let t = parse_tuple(&words("icmpv6 2001:db8::10 2001:db8::1"), Some(1)).unwrap();
    assert_eq!(t.proto, ipproto::ICMPV6);
    let t = tuple("47 192.0.2.10 192.0.2.1");
    assert_eq!((t.proto, t.a.port), (47, None));
}

#[test]
fn malformed_tuples_say_what_to_write() {
    let cases = [
        ("tcp 192.0.2.10:40000", None, "three words, got 2"),
        ("tcp 192.0.2.10 192.0.2.1:22", None, "port of both ends"),
        ("sctpx 192.0.2.10:1 192.0.2.1:2", None, "not a protocol"),
        ("any 192.0.2.10:1 192.0.2.1:2", None, "not a protocol"),
        (
            "tcp 192.0.2.10:1 [2001:db8::1]:2",
            None,
            "different address families",
        ),
        ("icmp 192.0.2.10 192.0.2.1", None, "echo id"),
        ("icmp 192.0.2.10:5 192.0.2.1", Some(1), "has no ports"),
        ("udp 192.0.2.10:5 192.0.2.1:53", Some(1), "not ICMP"),
        ("tcp 192.0.2.10:x 192.0.2.1:22", None, "not an address"),
    ];
    for (text, id, want) in cases {
        let e = tuple_err(text, id);
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains("hint:"), "{text}: {e}");
    }
    // The ICMP hint shows how to find the id and how to do without it.
    let e = tuple_err("icmp 192.0.2.10 192.0.2.1", None);
    assert!(e.contains("conntrack list --proto icmp"), "{e}");
    assert!(e.contains("--src 192.0.2.10"), "{e}");
}

#[test]
fn a_tuple_finds_its_entry_from_either_end() {
    let stored = inbound_ssh().key;
    for text in [
        "tcp 192.0.2.10:40000 192.0.2.1:22",
        "tcp 192.0.2.1:22 192.0.2.10:40000",
    ] {
        assert!(tuple(text).keys().contains(&stored), "{text}");
    }
    assert!(
        !tuple("tcp 192.0.2.10:40001 192.0.2.1:22")
            .keys()
            .contains(&stored)
    );
    assert!(
        !tuple("udp 192.0.2.10:40000 192.0.2.1:22")
            .keys()
            .contains(&stored)
    );
    // ICMP echo: both ports of the key hold the identifier.
    let t = parse_tuple(&words("icmp 192.0.2.1 192.0.2.10"), Some(77)).unwrap();
    let k = t.keys()[0];
    assert_eq!(
        (k.local_port, k.remote_port, k.proto),
        (77, 77, ipproto::ICMP)
    );
    // IPv6 keys use all four words, in network order.
    let t = tuple("tcp [2001:db8::1]:22 [2001:db8::10]:40000");
    let k = t.keys()[0];
    assert_eq!(k.family, family::IPV6);
    assert_eq!(addr_of(k.local, k.family), ip("2001:db8::1"));
    assert_eq!(addr_of(k.remote, k.family), ip("2001:db8::10"));
}

#[test]
fn flows_read_in_their_original_direction() {
    let now = 200 * SEC;
    // Opened by the remote client: the client is the source.
    let f = Flow::of(&inbound_ssh(), now);
    assert_eq!((f.src, f.dst), (ip("192.0.2.10"), ip("192.0.2.1")));
    assert_eq!((f.sport, f.dport, f.icmp_id), (Some(40000), Some(22), None));
    assert_eq!((f.age_secs, f.timeout_secs), (100, 800));
    assert_eq!((f.chain, f.rule), ("input", Some(2)));
    assert_eq!(f.state, "ESTABLISHED");
    assert_eq!(f.flags, vec!["SEEN_REPLY"]);

    // Opened by this host: the host is the source.
    let mut r = inbound_ssh();
    r.entry.origin = Direction::Egress as u8;
    let f = Flow::of(&r, now);
    assert_eq!((f.src, f.sport), (ip("192.0.2.1"), Some(22)));
    assert_eq!((f.dst, f.dport), (ip("192.0.2.10"), Some(40000)));
    assert_eq!(f.chain, "output");

    // Routed: keyed as the first packet arrived (local = its destination).
    let mut r = inbound_ssh();
    r.entry.flags |= CT_FLAG_FORWARD;
    r.entry.origin = Direction::Ingress as u8;
    let f = Flow::of(&r, now);
    assert_eq!((f.src, f.dst), (ip("192.0.2.10"), ip("192.0.2.1")));
    assert_eq!(f.chain, "forward");

    // Expired but not yet reclaimed: no time left, never negative.
    let f = Flow::of(&inbound_ssh(), 5000 * SEC);
    assert_eq!(f.timeout_secs, 0);
}

#[test]
fn icmp_flows_show_the_echo_id_and_no_ports() {
    let r = record(
        "2001:db8::1",
        9,
        "2001:db8::10",
        9,
        ipproto::ICMPV6,
        CtEntry {
            state: CtState::IcmpReplied as u8,
            origin: Direction::Ingress as u8,
            ..CtEntry::default()
        },
    );
    let f = Flow::of(&r, 0);
    assert_eq!((f.sport, f.dport, f.icmp_id), (None, None, Some(9)));
    assert_eq!((f.proto.as_str(), f.family), ("icmpv6", "ipv6"));
    assert_eq!(f.state, "REPLIED");
    let line = f.to_string();
    assert!(line.contains(" id=9 "), "{line}");
    assert!(!line.contains("sport="), "{line}");
    assert!(line.ends_with("rule=input:default"), "{line}");
}

#[test]
fn list_line_reads_like_conntrack() {
    let line = Flow::of(&inbound_ssh(), 200 * SEC).to_string();
    assert_eq!(
        line,
        "tcp      6   800     ESTABLISHED  src=192.0.2.10 dst=192.0.2.1 sport=40000 dport=22 packets=5 bytes=300 reply_packets=4 reply_bytes=260 age=100 [SEEN_REPLY] table=established rule=input:2"
    );
    let mut r = inbound_ssh();
    r.entry.flags = CT_FLAG_SEEN_REPLY | CT_FLAG_ADOPTED | CT_FLAG_LIBERAL;
    r.entry.rule = 0;
    r.table = CtTable::Transient;
    let line = Flow::of(&r, 200 * SEC).to_string();
    assert!(
        line.ends_with("[SEEN_REPLY] [ADOPTED] [LIBERAL] table=transient rule=adopted"),
        "{line}"
    );
}

#[test]
fn json_fields_are_stable() {
    let v = serde_json::to_value(Flow::of(&inbound_ssh(), 200 * SEC)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "proto": "tcp",
            "proto_number": 6,
            "family": "ipv4",
            "src": "192.0.2.10",
            "dst": "192.0.2.1",
            "sport": 40000,
            "dport": 22,
            "icmp_id": null,
            "state": "ESTABLISHED",
            "age_secs": 100,
            "timeout_secs": 800,
            "packets": { "original": 5, "reply": 4 },
            "bytes": { "original": 300, "reply": 260 },
            "flags": ["SEEN_REPLY"],
            "table": "established",
            "chain": "input",
            "rule": 2,
        })
    );
}

#[test]
fn filters_match_the_original_tuple() {
    let f = Flow::of(&inbound_ssh(), 200 * SEC);
    let yes = |filter: Filter| assert!(filter.matches(&f), "{filter:?}");
    let no = |filter: Filter| assert!(!filter.matches(&f), "{filter:?}");
    yes(Filter::default());
    yes(Filter {
        proto: Some(ipproto::TCP),
        src: Some(parse_net("192.0.2.10").unwrap()),
        dst: Some(parse_net("192.0.2.0/24").unwrap()),
        sport: Some(40000),
        dport: Some(22),
        state: Some(parse_state("established").unwrap()),
    });
    no(Filter {
        proto: Some(ipproto::UDP),
        ..Filter::default()
    });
    // The client opened it: it is the source, this host the destination.
    no(Filter {
        src: Some(parse_net("192.0.2.1").unwrap()),
        ..Filter::default()
    });
    no(Filter {
        dport: Some(40000),
        ..Filter::default()
    });
    no(Filter {
        sport: Some(22),
        ..Filter::default()
    });
    no(Filter {
        dst: Some(parse_net("2001:db8::/32").unwrap()),
        ..Filter::default()
    });
    no(Filter {
        state: Some(parse_state("time_wait").unwrap()),
        ..Filter::default()
    });
    // A port filter never matches a flow without ports.
    let icmp = Flow::of(
        &record(
            "192.0.2.1",
            7,
            "192.0.2.10",
            7,
            ipproto::ICMP,
            CtEntry::default(),
        ),
        0,
    );
    assert!(
        !Filter {
            sport: Some(7),
            ..Filter::default()
        }
        .matches(&icmp)
    );
}

#[test]
fn filter_values_parse_like_the_policy() {
    assert_eq!(parse_proto("TCP"), Ok(ipproto::TCP));
    assert_eq!(parse_proto("ipv6-icmp"), Ok(ipproto::ICMPV6));
    assert_eq!(parse_proto("47"), Ok(47));
    assert!(parse_proto("any").is_err());
    assert!(parse_proto("256").is_err());
    assert_eq!(
        parse_net("192.0.2.77/24").unwrap().to_string(),
        "192.0.2.0/24"
    );
    assert!(parse_net("192.0.2.0/33").is_err());
    assert_eq!(parse_state("time-wait").as_deref(), Ok("TIME_WAIT"));
    assert_eq!(parse_state("Unreplied").as_deref(), Ok("UNREPLIED"));
    let e = parse_state("closed").unwrap_err();
    assert!(e.contains("ESTABLISHED"), "{e}");
    // Every state the table can hold has a name the filter accepts.
    for v in 1..=13u8 {
        let name = CtState::from_u8(v).name();
        assert_eq!(parse_state(name).as_deref(), Ok(name));
    }
}
