//! REJECT on ingress: the reply the kernel builds, checked byte by byte,
//! checksums included, against an independent checksum implementation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fw_common::{
    Direction,
    conntrack::tcp_flags::{ACK, RST, SYN},
    counters::Counter,
};
use fw_tests::{
    datapath::Datapath,
    lacks_privileges,
    packet::{
        CLIENT_MAC, CLIENT4, CLIENT6, L4, SERVER_MAC, SERVER4, SERVER6, Vlan, Way, frame,
        frame_between,
    },
};

/// RFC 1071, written here again on purpose: the oracle must not share code
/// with what it checks.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the carries were folded in: the sum fits 16 bits"
)]
fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |b| u64::from(*b));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the IPv4 header at `ip` (20 bytes, no options) and returns
/// (protocol, payload range).
fn check_ipv4(r: &[u8], ip: usize, src: Ipv4Addr, dst: Ipv4Addr) -> (u8, std::ops::Range<usize>) {
    assert_eq!(r[ip], 0x45, "IPv4 without options");
    let total = usize::from(be16(r, ip + 2));
    assert_eq!(ip + total, r.len(), "total length matches the frame");
    assert_eq!(r[ip + 8], 64, "TTL");
    assert_eq!(
        &r[ip + 12..ip + 16],
        &src.octets(),
        "source is the refused packet's destination"
    );
    assert_eq!(&r[ip + 16..ip + 20], &dst.octets());
    assert_eq!(csum(&[&r[ip..ip + 20]]), 0, "IPv4 header checksum");
    (r[ip + 9], ip + 20..ip + total)
}

fn check_ipv6(r: &[u8], ip: usize, src: Ipv6Addr, dst: Ipv6Addr) -> (u8, std::ops::Range<usize>) {
    assert_eq!(r[ip] >> 4, 6);
    let payload = usize::from(be16(r, ip + 4));
    assert_eq!(
        ip + 40 + payload,
        r.len(),
        "payload length matches the frame"
    );
    assert_eq!(&r[ip + 8..ip + 24], &src.octets());
    assert_eq!(&r[ip + 24..ip + 40], &dst.octets());
    (r[ip + 6], ip + 40..ip + 40 + payload)
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

fn check_macs_swapped(reply: &[u8]) {
    assert_eq!(&reply[0..6], &CLIENT_MAC, "sent back to the sender");
    assert_eq!(&reply[6..12], &SERVER_MAC);
}

fn reject(dp: &mut Datapath, f: &[u8]) -> Vec<u8> {
    let out = dp.ingress(f);
    assert!(
        matches!(out.counter, Counter::RejectRule | Counter::RejectDefault),
        "{out:?}"
    );
    let counter = out.counter;
    out.reply
        .unwrap_or_else(|| panic!("no reply sent ({counter:?})"))
}

const POLICY: &str = r#"
[defaults]
input = "reject"
[[input]]
proto = "tcp"
dport = 2222
action = "reject"
reject_with = "icmp-admin-prohibited"
[[input]]
proto = "udp"
dport = 5555
action = "reject"
reject_with = "icmp-host-unreachable"
"#;

#[test]
fn tcp_syn_gets_a_rst_ack_v4_and_v6() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    // The builder sends seq 1000 and a 7-byte payload: RST must ack seq+1+7.
    let syn4 = frame(
        false,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 80,
            flags: SYN,
        },
    );
    let r = reject(&mut dp, &syn4);
    check_macs_swapped(&r);
    let (proto, tcp) = check_ipv4(&r, 14, SERVER4, CLIENT4);
    assert_eq!(proto, 6);
    assert_eq!(tcp.len(), 20, "a bare TCP header");
    let t = &r[tcp.clone()];
    assert_eq!((be16(t, 0), be16(t, 2)), (80, 40_000), "ports swapped");
    assert_eq!(be32(t, 4), 0, "seq 0: the SYN carried no ACK");
    assert_eq!(be32(t, 8), 1000 + 1 + 7, "acks the SYN and its payload");
    assert_eq!(t[12] >> 4, 5);
    assert_eq!(t[13], RST | ACK);
    assert_eq!(be16(t, 14), 0, "window 0");
    assert_eq!(
        csum(&[&pseudo4(SERVER4, CLIENT4, 6, 20), t]),
        0,
        "TCP checksum"
    );

    let syn6 = frame(
        true,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 80,
            flags: SYN,
        },
    );
    let r = reject(&mut dp, &syn6);
    check_macs_swapped(&r);
    let (next, tcp) = check_ipv6(&r, 14, SERVER6, CLIENT6);
    assert_eq!(next, 6);
    let t = &r[tcp];
    assert_eq!(t.len(), 20);
    assert_eq!(t[13], RST | ACK);
    assert_eq!(be32(t, 8), 1008);
    assert_eq!(
        csum(&[&pseudo6(SERVER6, CLIENT6, 6, 20), t]),
        0,
        "TCP checksum over the IPv6 pseudo-header"
    );
}

#[test]
fn a_segment_with_ack_gets_a_bare_rst_at_its_ack_number() {
    if lacks_privileges() {
        return;
    }
    // Mid-stream segments are NEW when tcp_syn_only is off, so they reach
    // the rules and can be rejected.
    let mut dp =
        Datapath::with_policy("[stateful]\ntcp_syn_only = false\n[defaults]\ninput = \"reject\"\n");
    let ack = frame(
        false,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_001,
            dport: 80,
            flags: ACK,
        },
    );
    let r = reject(&mut dp, &ack);
    let (_, tcp) = check_ipv4(&r, 14, SERVER4, CLIENT4);
    let t = &r[tcp];
    assert_eq!(t[13], RST, "RST without ACK");
    assert_eq!(
        be32(t, 4),
        1,
        "seq = the segment's ACK number (the builder sends ack 1)"
    );
    assert_eq!(csum(&[&pseudo4(SERVER4, CLIENT4, 6, 20), t]), 0);
}

#[test]
fn udp_gets_port_unreachable_quoting_header_and_8_bytes() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let udp = frame(
        false,
        Way::In,
        Vlan::None,
        L4::Udp {
            sport: 33_000,
            dport: 53,
        },
    );
    let r = reject(&mut dp, &udp);
    check_macs_swapped(&r);
    let (proto, icmp) = check_ipv4(&r, 14, SERVER4, CLIENT4);
    assert_eq!(proto, 1);
    let m = &r[icmp];
    assert_eq!(
        (m[0], m[1]),
        (3, 3),
        "destination unreachable / port unreachable"
    );
    assert_eq!(&m[4..8], &[0, 0, 0, 0]);
    assert_eq!(
        &m[8..],
        &udp[14..14 + 20 + 8],
        "the offending IP header and 8 bytes of UDP"
    );
    assert_eq!(csum(&[m]), 0, "ICMP checksum");
}

#[test]
fn udp_v6_gets_port_unreachable_quoting_the_whole_packet() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let udp = frame(
        true,
        Way::In,
        Vlan::None,
        L4::Udp {
            sport: 33_000,
            dport: 53,
        },
    );
    let r = reject(&mut dp, &udp);
    let (next, icmp) = check_ipv6(&r, 14, SERVER6, CLIENT6);
    assert_eq!(next, 58);
    let m = &r[icmp.clone()];
    assert_eq!(
        (m[0], m[1]),
        (1, 4),
        "destination unreachable / port unreachable"
    );
    assert_eq!(&m[8..], &udp[14..], "a small packet is quoted whole");
    assert_eq!(
        csum(&[&pseudo6(SERVER6, CLIENT6, 58, m.len()), m]),
        0,
        "ICMPv6 checksum"
    );
}

#[test]
fn big_ipv6_packets_are_quoted_up_to_1280_bytes() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let mut big = frame(
        true,
        Way::In,
        Vlan::None,
        L4::Udp {
            sport: 33_000,
            dport: 53,
        },
    );
    // Grow the payload to 1400 bytes (lengths patched; checksums do not
    // matter to the firewall).
    big.resize(big.len() + 1393, 0xab);
    let udp_len = u16::try_from(big.len() - 14 - 40).unwrap();
    big[14 + 4..14 + 6].copy_from_slice(&udp_len.to_be_bytes());
    big[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&udp_len.to_be_bytes());
    let r = reject(&mut dp, &big);
    let (_, icmp) = check_ipv6(&r, 14, SERVER6, CLIENT6);
    assert_eq!(
        r.len() - 14,
        1280,
        "the error fills the minimum MTU exactly"
    );
    let m = &r[icmp];
    assert_eq!(&m[8..], &big[14..14 + 1280 - 48]);
    assert_eq!(csum(&[&pseudo6(SERVER6, CLIENT6, 58, m.len()), m]), 0);
}

#[test]
fn reject_with_overrides_and_other_protocols() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let cases: [(bool, L4, (u8, u8)); 4] = [
        (
            false,
            L4::Tcp {
                sport: 1,
                dport: 2222,
                flags: SYN,
            },
            (3, 13),
        ),
        (
            true,
            L4::Tcp {
                sport: 1,
                dport: 2222,
                flags: SYN,
            },
            (1, 1),
        ),
        (
            false,
            L4::Udp {
                sport: 1,
                dport: 5555,
            },
            (3, 1),
        ),
        (
            true,
            L4::Udp {
                sport: 1,
                dport: 5555,
            },
            (1, 3),
        ),
    ];
    for (v6, l4, want) in cases {
        let f = frame(v6, Way::In, Vlan::None, l4);
        let r = reject(&mut dp, &f);
        let m = if v6 { &r[14 + 40..] } else { &r[14 + 20..] };
        assert_eq!((m[0], m[1]), want, "v6={v6} {l4:?}");
    }
    // GRE: protocol unreachable; in IPv6 a parameter problem pointing at
    // the next-header field.
    let mut gre4 = frame(false, Way::In, Vlan::None, L4::Udp { sport: 1, dport: 2 });
    gre4[14 + 9] = 47;
    let r = reject(&mut dp, &gre4);
    assert_eq!((r[34], r[35]), (3, 2));
    let mut gre6 = frame(true, Way::In, Vlan::None, L4::Udp { sport: 1, dport: 2 });
    gre6[14 + 6] = 47;
    let r = reject(&mut dp, &gre6);
    let m = &r[14 + 40..];
    assert_eq!((m[0], m[1]), (4, 1));
    assert_eq!(be32(m, 4), 6, "pointer to the next-header byte");
    assert_eq!(csum(&[&pseudo6(SERVER6, CLIENT6, 58, m.len()), m]), 0);
}

#[test]
fn vlan_tags_are_kept_on_the_reply() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let f = frame(
        false,
        Way::In,
        Vlan::Double(100, 10),
        L4::Udp {
            sport: 1,
            dport: 53,
        },
    );
    let r = reject(&mut dp, &f);
    assert_eq!(&r[12..22], &f[12..22], "both tags and the inner EtherType");
    let (_, icmp) = check_ipv4(&r, 22, SERVER4, CLIENT4);
    assert_eq!(csum(&[&r[icmp]]), 0);
}

#[test]
fn some_packets_are_never_answered() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy("[defaults]\ninput = \"reject\"\n");
    let rst = frame(
        false,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 1,
            dport: 80,
            flags: RST,
        },
    );
    let multicast = frame_between(
        IpAddr::V4(CLIENT4),
        IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3)),
        CLIENT_MAC,
        SERVER_MAC,
        Vlan::None,
        L4::Udp {
            sport: 1,
            dport: 5353,
        },
    );
    let mut icmp_error = frame(false, Way::In, Vlan::None, L4::EchoRequest { id: 1 });
    icmp_error[14 + 20] = 3; // destination unreachable
    let v6_multicast = frame_between(
        IpAddr::V6(CLIENT6),
        IpAddr::V6("ff02::fb".parse().unwrap()),
        CLIENT_MAC,
        SERVER_MAC,
        Vlan::None,
        L4::Udp {
            sport: 1,
            dport: 5353,
        },
    );
    for (what, f) in [
        ("RST", rst),
        ("multicast", multicast),
        ("ICMP error", icmp_error),
        ("IPv6 multicast", v6_multicast),
    ] {
        let out = dp.run(Direction::Ingress, &f);
        // A RST without state is INVALID before the rules; the rest are
        // rejected by the default and dropped without an answer.
        assert!(!out.pass, "{what}");
        assert!(out.reply.is_none(), "{what} must not be answered");
    }
}

#[test]
fn output_reject_answers_the_local_stack() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy("[defaults]\noutput = \"reject\"\n");
    // The host opens a connection: the reply is a RST "from" the peer,
    // redirected into the host's own ingress.
    let syn = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 25,
            flags: SYN,
        },
    );
    let out = dp.egress(&syn);
    assert_eq!(out.counter, Counter::RejectDefault);
    let r = out.reply.expect("a reply for the local stack");
    assert_eq!(&r[0..6], &SERVER_MAC, "addressed to the host");
    assert_eq!(&r[6..12], &CLIENT_MAC);
    let (proto, tcp) = check_ipv4(&r, 14, CLIENT4, SERVER4);
    assert_eq!(proto, 6);
    let t = &r[tcp];
    assert_eq!((be16(t, 0), be16(t, 2)), (25, 40_000));
    assert_eq!(t[13], RST | ACK);
    assert_eq!(be32(t, 8), 1008);
    assert_eq!(csum(&[&pseudo4(CLIENT4, SERVER4, 6, 20), t]), 0);

    let udp6 = frame(
        true,
        Way::Out,
        Vlan::None,
        L4::Udp {
            sport: 40_000,
            dport: 123,
        },
    );
    let r = dp.egress(&udp6).reply.expect("a reply for the local stack");
    let (next, icmp) = check_ipv6(&r, 14, CLIENT6, SERVER6);
    assert_eq!(next, 58);
    let m = &r[icmp];
    assert_eq!((m[0], m[1]), (1, 4));
    assert_eq!(&m[8..], &udp6[14..]);
    assert_eq!(csum(&[&pseudo6(CLIENT6, SERVER6, 58, m.len()), m]), 0);

    let udp4 = frame(
        false,
        Way::Out,
        Vlan::None,
        L4::Udp {
            sport: 40_000,
            dport: 123,
        },
    );
    let r = dp.egress(&udp4).reply.expect("a reply for the local stack");
    let (proto, icmp) = check_ipv4(&r, 14, CLIENT4, SERVER4);
    assert_eq!(proto, 1);
    let m = &r[icmp];
    assert_eq!((m[0], m[1]), (3, 3));
    assert_eq!(&m[8..], &udp4[14..14 + 28]);
    assert_eq!(csum(&[m]), 0);
}
