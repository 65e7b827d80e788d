//! RELATED: ICMP and `ICMPv6` errors about a tracked flow. The error's quote
//! (inner IP header and the first 8 bytes of layer 4) is the packet its
//! recipient sent, so an error arriving on ingress about the host's own
//! flow quotes the host's address and port as its source. Such errors pass
//! (`accept-related`) from the peer or from any router on the path, and
//! neither create nor refresh an entry; errors quoting no known flow, or
//! quoting too little, are INVALID; `[stateful] related` can drop them or
//! hand them to the rules. Run for IPv4 and IPv6, ingress and egress.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fw_common::{
    conntrack::{
        CtState,
        tcp_flags::{ACK, PSH, SYN},
    },
    counters::Counter,
    ipproto,
};
use fw_tests::{
    datapath::{Datapath, Flow, ct_key},
    lacks_privileges,
    packet::{
        CLIENT4, CLIENT6, IcmpError, SERVER4, SERVER6, Side, TcpConversation, Way, echo,
        icmp_error, ip_header_len, quote, udp_datagram,
    },
};

/// Both directions default to drop: an error that is not RELATED meets
/// the defaults and is dropped as `drop-default`, not `accept-related`.
const POLICY: &str = r#"
[defaults]
input = "drop"
output = "drop"
[[input]]
proto = "tcp"
dport = 22
action = "accept"
[[input]]
proto = "udp"
dport = 5353
action = "accept"
[[output]]
proto = "tcp"
dport = 443
action = "accept"
[[output]]
proto = "udp"
dport = [53, "33434-33534"]
action = "accept"
[[output]]
proto = "icmp"
icmp_type = "echo-request"
action = "accept"
[[output]]
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
"#;

const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

fn addrs(v6: bool) -> (IpAddr, IpAddr, IpAddr) {
    if v6 {
        (SERVER6.into(), CLIENT6.into(), ROUTER6.into())
    } else {
        (SERVER4.into(), CLIENT4.into(), ROUTER4.into())
    }
}

/// "The packet was too big for the path", in the family's own words.
fn too_big(v6: bool) -> IcmpError {
    if v6 {
        IcmpError::PacketTooBig { mtu: 1280 }
    } else {
        IcmpError::FragNeeded { mtu: 1400 }
    }
}

/// What an error quotes: RFC 792's IP header and 8 bytes for IPv4, as
/// much as fits for `ICMPv6` (RFC 4443).
fn full_quote(frame: &[u8]) -> Vec<u8> {
    quote(frame, if frame[14] >> 4 == 6 { 1232 } else { 8 })
}

/// An error travelling `way` about `quoted` (a frame), from `from`.
fn error_in(from: IpAddr, v6: bool, kind: IcmpError, quoted: &[u8]) -> Vec<u8> {
    let (local, _, _) = addrs(v6);
    icmp_error(Way::In, from, local, kind, &full_quote(quoted))
}

/// The host's outgoing TCP connection to port 443, established, with the
/// data segment it last sent.
fn outgoing_tcp(dp: &mut Datapath, v6: bool, port: u16) -> (TcpConversation, Vec<u8>) {
    let mut conv = TcpConversation::new(v6, port, 443, 0xffff_ff00, 0x0bad_cafe);
    assert_eq!(
        dp.send_tcp(&mut conv, Side::Local, SYN, 0),
        Counter::AcceptRule
    );
    dp.send_tcp(&mut conv, Side::Remote, SYN | ACK, 0);
    dp.send_tcp(&mut conv, Side::Local, ACK, 0);
    let data = conv.send(Side::Local, ACK | PSH, 1400);
    assert_eq!(dp.egress(&data).counter, Counter::AcceptEstablished);
    (conv, data)
}

/// Run `frame` on ingress or egress and check the counter, and that the
/// connection tables did not change at all.
fn untouched(dp: &mut Datapath, egress: bool, frame: &[u8], want: Counter, what: &str) {
    let sorted = |mut v: Vec<Flow>| {
        v.sort_by_key(|(k, _)| format!("{k:?}"));
        v
    };
    let before = sorted(dp.conntrack());
    let got = if egress {
        dp.egress(frame)
    } else {
        dp.ingress(frame)
    };
    assert_eq!(got.counter, want, "{what}");
    assert_eq!(
        sorted(dp.conntrack()),
        before,
        "{what}: an ICMP error created or refreshed an entry"
    );
}

#[test]
fn errors_about_the_hosts_flows_are_related_on_ingress() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let (local, remote, router) = addrs(v6);
        let (_, data) = outgoing_tcp(&mut dp, v6, 50_000);
        let unreachable = IcmpError::Unreachable { code: 1 };
        let rows = [
            ("too big, from a router", router, too_big(v6)),
            ("too big, from the peer", remote, too_big(v6)),
            ("host unreachable, from a router", router, unreachable),
            (
                "time exceeded, from a router",
                router,
                IcmpError::TimeExceeded,
            ),
            (
                "parameter problem, from the peer",
                remote,
                IcmpError::ParamProblem { pointer: 8 },
            ),
        ];
        for (what, from, kind) in rows {
            untouched(
                &mut dp,
                false,
                &error_in(from, v6, kind, &data),
                Counter::AcceptRelated,
                &format!("v6={v6} TCP, {what}"),
            );
        }

        // A flow still being opened (in the transient table): the peer
        // connected to port 22 and the host's SYN/ACK met a small MTU.
        let mut inbound = TcpConversation::new(v6, 22, 40_000, 0x1111_0000, 0x2222_0000);
        dp.send_tcp(&mut inbound, Side::Remote, SYN, 0);
        let synack = inbound.send(Side::Local, SYN | ACK, 0);
        assert_eq!(dp.egress(&synack).counter, Counter::AcceptEstablished);
        untouched(
            &mut dp,
            false,
            &error_in(router, v6, too_big(v6), &synack),
            Counter::AcceptRelated,
            &format!("v6={v6} about a SYN/ACK"),
        );

        // Traceroute over UDP: time exceeded from a router on the way, port
        // unreachable from the destination. Neither is a reply: the flow
        // stays unreplied.
        let probe = udp_datagram(
            Way::Out,
            SocketAddr::new(local, 33_333),
            SocketAddr::new(remote, 33_434),
            32,
        );
        assert_eq!(dp.egress(&probe).counter, Counter::AcceptRule);
        for (what, from, kind) in [
            ("time exceeded", router, IcmpError::TimeExceeded),
            ("port unreachable", remote, IcmpError::port_unreachable(v6)),
        ] {
            untouched(
                &mut dp,
                false,
                &error_in(from, v6, kind, &probe),
                Counter::AcceptRelated,
                &format!("v6={v6} UDP {what}"),
            );
        }
        let key = ct_key(
            SocketAddr::new(local, 33_333),
            SocketAddr::new(remote, 33_434),
            ipproto::UDP,
        );
        assert_eq!(
            dp.flow(&key).map(|(_, e)| CtState::from_u8(e.state)),
            Some(CtState::UdpUnreplied)
        );

        // Traceroute over ICMP: the quote is the echo request.
        let ping = echo(Way::Out, local, remote, true, 99, 56);
        assert_eq!(dp.egress(&ping).counter, Counter::AcceptRule);
        untouched(
            &mut dp,
            false,
            &error_in(router, v6, IcmpError::TimeExceeded, &ping),
            Counter::AcceptRelated,
            &format!("v6={v6} about an echo request"),
        );
    }
}

#[test]
fn errors_quoting_no_known_flow_or_too_little_are_invalid() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let (local, _, router) = addrs(v6);
        let (conv, data) = outgoing_tcp(&mut dp, v6, 50_000);
        // The same flow one port off, and a flow never opened.
        let mut other_port = conv.clone();
        other_port.remote.set_port(444);
        let mut never = conv.clone();
        never.local.set_port(50_001);
        let hlen = ip_header_len(&data);
        let quoted_error = |q: Vec<u8>| icmp_error(Way::In, router, local, too_big(v6), &q);
        let rows = [
            (
                "quoting another remote port",
                error_in(
                    router,
                    v6,
                    too_big(v6),
                    &other_port.send(Side::Local, ACK, 0),
                ),
            ),
            (
                "quoting a flow never opened",
                error_in(router, v6, too_big(v6), &never.send(Side::Local, ACK, 0)),
            ),
            (
                "quote truncated to 4 bytes of TCP (ports only)",
                quoted_error(quote(&data, 4)),
            ),
            (
                "quote of the IP header alone",
                quoted_error(quote(&data, 0)),
            ),
            (
                "quote cut inside the IP header",
                quoted_error(data[14..14 + hlen - 4].to_vec()),
            ),
        ];
        for (what, frame) in rows {
            untouched(
                &mut dp,
                false,
                &frame,
                Counter::DropInvalid,
                &format!("v6={v6} {what}"),
            );
        }
        // The flow is untouched by all that and still works.
        let mut conv = conv;
        assert_eq!(
            dp.send_tcp(&mut conv, Side::Remote, ACK, 0),
            Counter::AcceptEstablished
        );
    }
}

#[test]
fn other_icmp_types_are_not_related() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let (local, remote, router) = addrs(v6);
        let (_, data) = outgoing_tcp(&mut dp, v6, 50_000);
        if !v6 {
            // A redirect quotes a packet too, but is no error: NEW, and the
            // input chain drops it by default.
            let redirect = IcmpError::Redirect {
                gateway: Ipv4Addr::new(192, 0, 2, 254),
            };
            untouched(
                &mut dp,
                false,
                &error_in(router, v6, redirect, &data),
                Counter::DropDefault,
                "redirect",
            );
        }
        untouched(
            &mut dp,
            false,
            &echo(Way::In, remote, local, true, 7, 56),
            Counter::DropDefault,
            &format!("v6={v6} echo request"),
        );
    }
}

/// The host's own errors about a flow the peer opened: the host's stack
/// answers a datagram to a port with no listener.
#[test]
fn the_hosts_own_errors_are_related_on_egress() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let (local, remote, _) = addrs(v6);
        let datagram = udp_datagram(
            Way::In,
            SocketAddr::new(remote, 40_000),
            SocketAddr::new(local, 5353),
            64,
        );
        assert_eq!(dp.ingress(&datagram).counter, Counter::AcceptRule);
        let answer = |quoted: &[u8]| {
            icmp_error(
                Way::Out,
                local,
                remote,
                IcmpError::port_unreachable(v6),
                &full_quote(quoted),
            )
        };
        untouched(
            &mut dp,
            true,
            &answer(&datagram),
            Counter::AcceptRelated,
            &format!("v6={v6} port unreachable for a tracked datagram"),
        );
        let stranger = udp_datagram(
            Way::In,
            SocketAddr::new(remote, 40_001),
            SocketAddr::new(local, 5353),
            64,
        );
        untouched(
            &mut dp,
            true,
            &answer(&stranger),
            Counter::DropInvalid,
            &format!("v6={v6} port unreachable for an unknown datagram"),
        );
    }
}

/// `[stateful] related = "drop"` and `"rules"`.
#[test]
fn the_related_stage_can_drop_or_hand_over_to_the_rules() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let flows: Vec<(bool, Vec<u8>)> = [false, true]
        .into_iter()
        .zip([50_000, 50_001])
        .map(|(v6, port)| (v6, outgoing_tcp(&mut dp, v6, port).1))
        .collect();
    let errors: Vec<(bool, Vec<u8>)> = flows
        .iter()
        .map(|(v6, data)| (*v6, error_in(addrs(*v6).2, *v6, too_big(*v6), data)))
        .collect();
    let with_rules = format!(
        "{POLICY}[stateful]\nrelated = \"rules\"\n[[input]]\nproto = \"icmp\"\nstate = \"related\"\naction = \"accept\"\n[[input]]\nproto = \"icmpv6\"\nstate = \"related\"\naction = \"accept\"\n"
    );
    for (policy, want, what) in [
        (
            format!("{POLICY}[stateful]\nrelated = \"drop\"\n"),
            Counter::DropRelated,
            "related = drop",
        ),
        (
            format!("{POLICY}[stateful]\nrelated = \"rules\"\n"),
            Counter::DropDefault,
            "related = rules, no rule for it",
        ),
        (
            with_rules,
            Counter::AcceptRule,
            "related = rules, a rule accepts state related",
        ),
        (POLICY.to_string(), Counter::AcceptRelated, "the default"),
    ] {
        dp.install(&policy);
        for (v6, frame) in &errors {
            untouched(&mut dp, false, frame, want, &format!("v6={v6} {what}"));
        }
    }
}
