//! Names of protocols and ICMP types, as iptables and ip6tables spell them.

use fw_common::ipproto;

/// IP protocol by name or number: `Some(None)` is "any", `None` unknown.
#[must_use]
#[expect(clippy::option_option, reason = "any, a protocol, or not a protocol")]
pub fn proto_number(name: &str) -> Option<Option<u8>> {
    Some(Some(match name {
        "any" | "all" => return Some(None),
        "tcp" => ipproto::TCP,
        "udp" => ipproto::UDP,
        "icmp" => ipproto::ICMP,
        "icmpv6" | "ipv6-icmp" => ipproto::ICMPV6,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        _ => return name.parse::<u8>().ok().map(Some),
    }))
}

#[must_use]
pub fn proto_name(p: u8) -> String {
    match p {
        ipproto::TCP => "tcp".into(),
        ipproto::UDP => "udp".into(),
        ipproto::ICMP => "icmp".into(),
        ipproto::ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// ICMP (v4) type numbers by name.
#[must_use]
pub fn icmp4_type(name: &str) -> Option<u8> {
    Some(match name {
        "echo-reply" | "pong" => 0,
        "destination-unreachable" => 3,
        "source-quench" => 4,
        "redirect" => 5,
        "echo-request" | "ping" => 8,
        "router-advertisement" => 9,
        "router-solicitation" => 10,
        "time-exceeded" | "ttl-exceeded" => 11,
        "parameter-problem" => 12,
        "timestamp-request" => 13,
        "timestamp-reply" => 14,
        _ => return None,
    })
}

/// `ICMPv6` type numbers by name.
#[must_use]
pub fn icmp6_type(name: &str) -> Option<u8> {
    Some(match name {
        "destination-unreachable" => 1,
        "packet-too-big" => 2,
        "time-exceeded" | "ttl-exceeded" => 3,
        "parameter-problem" => 4,
        "echo-request" | "ping" => 128,
        "echo-reply" | "pong" => 129,
        "router-solicitation" => 133,
        "router-advertisement" => 134,
        "neighbour-solicitation" | "neighbor-solicitation" => 135,
        "neighbour-advertisement" | "neighbor-advertisement" => 136,
        "redirect" => 137,
        _ => return None,
    })
}
