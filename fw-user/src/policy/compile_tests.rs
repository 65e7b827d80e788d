use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fw_common::policy::PacketState;

use super::*;
use crate::policy::parse;

/// A packet as the classifier sees it.
#[derive(Clone, Copy, Debug)]
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    icmp_type: u8,
    tcp_flags: u8,
    state: PacketState,
    ifindex: u32,
}

fn ifindex(name: &str) -> Option<u32> {
    match name {
        "eth0" => Some(2),
        "eth1" => Some(3),
        _ => None,
    }
}

/// The meaning of a rule, written as plainly as possible: the oracle.
fn matches(r: &Rule, p: &Pkt) -> bool {
    let fam_ok = match p.src {
        IpAddr::V4(_) => r.families.ipv4,
        IpAddr::V6(_) => r.families.ipv6,
    };
    let addr_ok = |m: &Option<AddrMatch>, a: IpAddr| match m {
        None => true,
        Some(m) => m.nets.iter().any(|n| n.contains(&a)) != m.negated,
    };
    let port_ok = |v: &[PortRange], port: u16| {
        v.is_empty() || v.iter().any(|r| r.first <= port && port <= r.last)
    };
    let name = if p.ifindex == 2 {
        "eth0"
    } else if p.ifindex == 3 {
        "eth1"
    } else {
        "other"
    };
    fam_ok
        && addr_ok(&r.src, p.src)
        && addr_ok(&r.dst, p.dst)
        && r.proto.is_none_or(|x| x == p.proto)
        && port_ok(&r.sport, p.sport)
        && port_ok(&r.dport, p.dport)
        && (r.iface.is_empty() || r.iface.iter().any(|i| i == name))
        && (r.icmp_type.is_empty()
            || (r.proto == Some(p.proto) && r.icmp_type.contains(&p.icmp_type)))
        && (r.state.is_empty() || r.state.contains(&p.state))
        && r.tcp_flags.is_none_or(|m| p.tcp_flags & m.mask == m.comp)
}

/// First matching non-log rule (1-based), by walking the rules.
fn oracle(rules: &[Rule], p: &Pkt) -> Option<usize> {
    rules
        .iter()
        .position(|r| r.action != RuleAction::Log && matches(r, p))
        .map(|i| i + 1)
}

/// The datapath's algorithm over the compiled tables.
fn classify(c: &CompiledPolicy, chain: Chain, p: &Pkt) -> Option<usize> {
    let t = &c.chains[chain as usize];
    let (fam, bytes, bits) = match p.src {
        IpAddr::V4(_) => (family::IPV4, 32u8, 32),
        IpAddr::V6(_) => (family::IPV6, 128u8, 128),
    };
    let _ = bits;
    let lpm = |entries: &[AddrEntry], a: IpAddr| -> u16 {
        entries
            .iter()
            .filter(|e| e.family == fam)
            .filter(|e| {
                let net = match a {
                    IpAddr::V4(_) => IpNet::new(
                        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&e.addr[..4]).unwrap())),
                        e.prefix_len,
                    )
                    .unwrap(),
                    IpAddr::V6(_) => {
                        IpNet::new(IpAddr::V6(Ipv6Addr::from(e.addr)), e.prefix_len).unwrap()
                    }
                };
                net.contains(&a)
            })
            .max_by_key(|e| e.prefix_len)
            .expect("the root entry always matches")
            .class
    };
    let _ = bytes;
    let icmp_table = if fam == family::IPV4 {
        table::ICMP4_TYPE
    } else {
        table::ICMP6_TYPE
    };
    let iface = t.ifaces.iter().find(|(i, _)| *i == p.ifindex).map_or(
        c.header.chains[chain as usize].iface_default_class,
        |(_, cl)| *cl,
    );
    let classes = [
        lpm(&t.src, p.src),
        lpm(&t.dst, p.dst),
        t.table[(table::PROTO + u32::from(p.proto)) as usize],
        t.table[(table::SPORT + u32::from(p.sport)) as usize],
        t.table[(table::DPORT + u32::from(p.dport)) as usize],
        t.table[(icmp_table + u32::from(p.icmp_type)) as usize],
        t.table[(table::TCP_FLAGS + u32::from(p.tcp_flags)) as usize],
        t.table[(table::STATE + p.state as u32) as usize],
        iface,
    ];
    // The sparse form, decoded: what the datapath reads.
    let bitmaps: Vec<Bits> = classes.iter().map(|&cl| c.class_bitmap(cl)).collect();
    (0..t.rules.len())
        .find(|&i| {
            bitmaps.iter().all(|b| b.has(i)) && Action::from_u8(t.rules[i].action) != Action::Log
        })
        .map(|i| i + 1)
}

const POLICY: &str = r#"
[sets]
admins = ["192.0.2.0/28", "2001:db8:1::/48"]
bad = ["198.51.100.0/24", "198.51.100.128/25", "2001:db8:bad::/48"]

[[input]]
name = "log everything from bad"
src = "@bad"
action = "log"

[[input]]
name = "drop bad"
src = "@bad"
action = "drop"

[[input]]
name = "ssh from admins only"
proto = "tcp"
dport = 22
src = "!@admins"
action = "drop"

[[input]]
proto = "tcp"
dport = [22, "1000-2000", 65535]
sport = "1024-65535"
action = "accept"

[[input]]
proto = "tcp"
dport = "1500-1600"
action = "reject"

[[input]]
proto = "udp"
dst = "192.0.2.53"
iface = "eth1"
dport = 53
action = "accept"

[[input]]
proto = "icmp"
icmp_type = ["echo-request", 11]
action = "accept"

[[input]]
proto = "icmpv6"
icmp_type = ["echo-request"]
action = "accept"

[[input]]
proto = "tcp"
tcp_flags = { mask = ["syn", "ack", "fin", "rst"], set = ["syn"] }
state = "new"
dst = "2001:db8::/64"
action = "accept"

[[input]]
state = ["established", "related"]
action = "accept"

[[input]]
family = "ipv6"
proto = 47
action = "drop"
"#;

#[test]
fn compiled_tables_agree_with_walking_the_rules() {
    let policy = parse(POLICY, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let c = compile(&policy, "t.toml", &ifindex).unwrap_or_else(|e| panic!("{e}"));
    let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
    let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
    let srcs = [
        v4("192.0.2.1"),
        v4("192.0.2.17"),
        v4("198.51.100.7"),
        v4("198.51.100.200"),
        v4("203.0.113.9"),
    ];
    let srcs6 = [
        v6("2001:db8:1::5"),
        v6("2001:db8:bad::1"),
        v6("2001:db8:2::1"),
    ];
    let dsts = [v4("192.0.2.53"), v4("192.0.2.1")];
    let dsts6 = [v6("2001:db8::1"), v6("2001:db8:9::1")];
    let ports = [
        0u16, 1, 22, 53, 999, 1000, 1023, 1024, 1500, 1550, 1600, 1601, 2000, 2001, 65534, 65535,
    ];
    let protos = [
        ipproto::TCP,
        ipproto::UDP,
        ipproto::ICMP,
        ipproto::ICMPV6,
        47,
    ];
    let states = [
        PacketState::New,
        PacketState::Established,
        PacketState::Related,
        PacketState::Invalid,
    ];
    let mut checked = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    for _ in 0..20_000 {
        let v6fam = next(2) == 1;
        let (src, dst) = if v6fam {
            (srcs6[next(srcs6.len())], dsts6[next(dsts6.len())])
        } else {
            (srcs[next(srcs.len())], dsts[next(dsts.len())])
        };
        let p = Pkt {
            src,
            dst,
            proto: protos[next(protos.len())],
            sport: ports[next(ports.len())],
            dport: ports[next(ports.len())],
            icmp_type: [0u8, 3, 8, 11, 128, 129][next(6)],
            tcp_flags: [0x02u8, 0x12, 0x10, 0x03, 0x00][next(5)],
            state: states[next(states.len())],
            ifindex: [2u32, 3, 9][next(3)],
        };
        assert_eq!(
            classify(&c, Chain::Input, &p),
            oracle(&policy.input, &p),
            "{p:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 20_000);
}

#[test]
fn header_carries_defaults_and_stages() {
    let p = parse("[defaults]\ninput = \"reject\"\nforward = \"accept\"\n[stateful]\nestablished = \"rules\"\n[[input]]\naction = \"drop\"\n", "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_eq!(c.header.chains[0].default_action, Action::Reject as u8);
    assert_eq!(c.header.chains[1].default_action, Action::Accept as u8);
    assert_eq!(c.header.chains[2].default_action, Action::Accept as u8);
    assert_eq!(c.header.chains[0].rule_count, 1);
    assert_eq!(c.header.established, StageAction::Rules as u8);
}

#[test]
fn unknown_interfaces_name_the_rule() {
    let p = parse(
        "[[input]]\niface = \"wlan9\"\naction = \"drop\"\n",
        "t.toml",
    )
    .unwrap();
    let e = compile(&p, "t.toml", &ifindex).unwrap_err().to_string();
    assert!(e.starts_with("t.toml:1:") && e.contains("`wlan9`"), "{e}");
}

#[test]
fn big_sets_share_one_class() {
    let mut text = String::from("[sets]\nblock = [");
    for i in 0..5000u32 {
        let _ = write!(text, "\"10.{}.{}.0/24\",", i / 256, i % 256);
    }
    text.push_str("]\n[[input]]\nsrc = \"@block\"\naction = \"drop\"\n");
    let p = parse(&text, "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    let t = &c.chains[0];
    assert_eq!(t.src.len(), 5000 + 2, "every prefix plus the two roots");
    assert!(
        c.classes.len() < 8,
        "prefixes with the same rules share a class: {}",
        c.classes.len()
    );
}

#[test]
fn header_carries_related_and_conntrack_timeouts() {
    use fw_common::conntrack::{CtState, DEFAULT_TIMEOUTS};
    let p = parse("", "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_eq!(c.header.related, StageAction::Accept as u8);
    assert_eq!(c.header.ct_timeouts, DEFAULT_TIMEOUTS);
    assert_eq!(c.ct_max_entries, fw_common::maps::CONNTRACK_MAX_ENTRIES);
    assert!(!c.ct_max_entries_set);

    let p = parse(
        "[stateful]\nrelated = \"drop\"\n[conntrack]\nmax_entries = 2048\ntcp_established = \"1h\"\nicmp = 7\n",
        "t.toml",
    )
    .unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_eq!(c.header.related, StageAction::Drop as u8);
    assert_eq!(c.header.ct_timeouts[CtState::TcpEstablished as usize], 3600);
    assert_eq!(c.header.ct_timeouts[CtState::IcmpReplied as usize], 7);
    assert_eq!(
        c.header.ct_timeouts[CtState::TcpSynSent as usize],
        DEFAULT_TIMEOUTS[CtState::TcpSynSent as usize]
    );
    assert_eq!((c.ct_max_entries, c.ct_max_entries_set), (2048, true));

    let p = parse("[stateful]\nrelated = \"rules\"\n", "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_eq!(c.header.related, StageAction::Rules as u8);
}

/// With `related = "rules"`, an ICMP error about a tracked connection
/// reaches the rules in state RELATED; a rule on `state = "related"` must
/// take it and nothing else.
#[test]
fn state_related_rules_match_only_related_packets() {
    let p = parse(
        "[stateful]\nrelated = \"rules\"\n[[input]]\nproto = \"icmp\"\nstate = \"related\"\naction = \"accept\"\n[[input]]\nstate = [\"new\", \"related\"]\naction = \"drop\"\n",
        "t.toml",
    )
    .unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    let base = Pkt {
        src: "192.0.2.9".parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        proto: fw_common::ipproto::ICMP,
        sport: 0,
        dport: 0,
        icmp_type: 3,
        tcp_flags: 0,
        state: PacketState::Related,
        ifindex: 2,
    };
    assert_eq!(classify(&c, Chain::Input, &base), Some(1));
    let new = Pkt {
        state: PacketState::New,
        ..base
    };
    assert_eq!(classify(&c, Chain::Input, &new), Some(2));
    let established = Pkt {
        state: PacketState::Established,
        ..base
    };
    assert_eq!(classify(&c, Chain::Input, &established), None);
    let udp_related = Pkt {
        proto: fw_common::ipproto::UDP,
        ..base
    };
    assert_eq!(classify(&c, Chain::Input, &udp_related), Some(2));
}

fn input_ids(text: &str) -> Vec<u64> {
    let p = parse(text, "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    c.chains[Chain::Input as usize]
        .rules
        .iter()
        .map(|m| m.id)
        .collect()
}

#[test]
#[expect(clippy::many_single_char_names, reason = "policies a to d")]
fn rule_ids_follow_the_rule_not_its_position() {
    let a = input_ids(
        "[[input]]\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\n[[input]]\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n",
    );
    // A rule inserted first moves both; their identities stay.
    let b = input_ids(
        "[[input]]\nproto = \"udp\"\naction = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\n[[input]]\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n",
    );
    assert_eq!(&b[1..], &a[..]);
    // Changing what a rule matches or does makes it another rule.
    let c = input_ids(
        "[[input]]\nproto = \"tcp\"\ndport = 22\naction = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = 81\naction = \"accept\"\n",
    );
    assert_ne!(c[0], a[0]);
    assert_ne!(c[1], a[1]);
    // Two equal rules count apart; the same text in another chain too.
    let d = input_ids("[[input]]\naction = \"log\"\n[[input]]\naction = \"log\"\n");
    assert_ne!(d[0], d[1]);
    let p = parse(
        "[[input]]\naction = \"log\"\n[[output]]\naction = \"log\"\n",
        "t.toml",
    )
    .unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_ne!(
        c.chains[Chain::Input as usize].rules[0].id,
        c.chains[Chain::Output as usize].rules[0].id
    );
    for chain in Chain::ALL {
        assert!(
            !d.contains(&fw_common::events::default_stats_id(chain)),
            "never a default's identity"
        );
    }
}

#[test]
fn log_settings_compile_into_the_header_and_rules() {
    use fw_common::counters::Counter;
    let p = parse(
        "[log]\nrate = \"2/second\"\nburst = 4\nprefix = \"fw: \"\ndefault = true\n[[input]]\naction = \"drop\"\nlog = true\nlog_rate = \"1/minute\"\nname = \"x\"\n",
        "t.toml",
    )
    .unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    let bit = |c: Counter| 1u32 << (c as u32);
    assert_eq!(
        c.header.log_mask,
        bit(Counter::DropDefault) | bit(Counter::RejectDefault)
    );
    assert_eq!(c.header.log_interval_ns, 500_000_000);
    assert_eq!(
        c.header.log_tolerance_ns, 1_500_000_000,
        "3 more after the first"
    );
    assert_eq!(&c.header.log_prefix[..5], b"fw: \0");
    let m = &c.chains[Chain::Input as usize].rules[0];
    assert_eq!(m.flags & fw_common::policy::RULE_FLAG_LOG, RULE_FLAG_LOG);
    assert_eq!(
        (m.log_interval_ns, m.log_tolerance_ns),
        (60_000_000_000, 4 * 60_000_000_000)
    );
    let info = &c.chains[Chain::Input as usize].infos[0];
    assert_eq!(info.id, m.id);
    assert_eq!(crate::events::text(&info.name), "x");
    assert_eq!(crate::events::text(&info.text), "log");
    assert_eq!(crate::events::text(&info.prefix), "fw: ");
}

/// 10 000 rules of one shape (source and port differ), with a catch-all
/// `log` and a rule for every port range across the bitmap: the sparse
/// classes agree with walking the rules, near both ends of the chain.
#[test]
fn ten_thousand_rules_classify_like_walking_them() {
    let mut text = String::from("[[input]]\nproto = \"tcp\"\ndport = 1\naction = \"log\"\n");
    for i in 0..10_000u32 {
        let _ = write!(
            text,
            "[[input]]\nproto = \"tcp\"\nsrc = \"203.0.113.{}\"\ndport = {}\naction = \"accept\"\n",
            1 + i % 250,
            20_000 + i
        );
    }
    text.push_str("[[output]]\nproto = \"udp\"\ndport = 53\naction = \"accept\"\n");
    let p = parse(&text, "t.toml").unwrap();
    let c = compile(&p, "t.toml", &ifindex).unwrap();
    assert_eq!(c.rule_base(Chain::Input), 0);
    assert_eq!(c.rule_base(Chain::Output), 10_001);
    let pkt = |src: u8, dport: u16| Pkt {
        src: IpAddr::V4(Ipv4Addr::new(203, 0, 113, src)),
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        proto: 6,
        sport: 40_000,
        dport,
        icmp_type: 0,
        tcp_flags: 2,
        state: PacketState::New,
        ifindex: 2,
    };
    for i in [0u32, 1, 63, 64, 4095, 4096, 9_998, 9_999] {
        let src = u8::try_from(1 + i % 250).unwrap();
        let port = u16::try_from(20_000 + i).unwrap();
        for p2 in [
            pkt(src, port),
            pkt(src.wrapping_add(1), port),
            pkt(src, 19_999),
        ] {
            assert_eq!(
                classify(&c, Chain::Input, &p2),
                oracle(&p.input, &p2),
                "{p2:?}"
            );
        }
    }
    assert_eq!(classify(&c, Chain::Input, &pkt(250, 29_999)), Some(10_001));
    // The words stored are the ones that are not zero: far fewer than
    // classes times 157.
    assert!(
        c.words.len() < 3 * c.classes.len(),
        "{} words",
        c.words.len()
    );
}

#[test]
fn rules_of_all_chains_share_one_pool() {
    let text = "[[input]]\naction = \"drop\"\n[[output]]\naction = \"drop\"\n"
        .repeat(fw_common::policy::MAX_RULES / 2 + 1);
    let e = compile(&parse(&text, "t.toml").unwrap(), "t.toml", &ifindex)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 16384 in all chains together"), "{e}");
}
