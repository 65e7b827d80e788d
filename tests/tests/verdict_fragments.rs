//! Fragments, IPv4 and IPv6, cut from real datagrams: a first fragment is
//! judged like the whole packet by its layer-4 header; once accepted, the
//! rest of its datagram follows for 30 seconds (`accept-fragment`), in
//! both directions. Everything else that does not start a datagram is
//! dropped (`drop-fragment`): later fragments whose first was not seen,
//! not yet seen, or refused; later fragments of another datagram; ones
//! that would overwrite the layer-4 header the verdict was made on (RFC
//! 1858); and first fragments too short to hold that header.

use std::net::{IpAddr, SocketAddr};

use fw_common::{conntrack::tcp_flags::SYN, counters::Counter, ipproto};
use fw_tests::{
    datapath::Datapath,
    lacks_privileges,
    packet::{
        CLIENT4, CLIENT6, Piece, SERVER4, SERVER6, Segment, Way, echo, fragment, fragments_at,
        tcp_segment, udp_datagram,
    },
};

const POLICY: &str = r#"
[defaults]
input = "drop"
output = "accept"
[[input]]
proto = "udp"
dport = 5353
action = "accept"
[[input]]
proto = "tcp"
dport = 22
action = "accept"
[[input]]
proto = "icmp"
icmp_type = "echo-request"
action = "accept"
[[input]]
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
"#;

/// Room for the fragmentable part in a 1500-byte MTU, a multiple of 8
/// for both families (1500 - 20 for IPv4 would be 1480; IPv6 needs 40 + 8).
const CHUNK: usize = 1448;

fn local(v6: bool) -> IpAddr {
    if v6 { SERVER6.into() } else { SERVER4.into() }
}

fn remote(v6: bool) -> IpAddr {
    if v6 { CLIENT6.into() } else { CLIENT4.into() }
}

/// A datagram of `len` bytes from the peer's `sport` to the host's `dport`.
fn udp_in(v6: bool, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    udp_datagram(
        Way::In,
        SocketAddr::new(remote(v6), sport),
        SocketAddr::new(local(v6), dport),
        len,
    )
}

fn run_all(dp: &mut Datapath, egress: bool, frames: &[Vec<u8>]) -> Vec<Counter> {
    frames
        .iter()
        .map(|f| {
            if egress {
                dp.egress(f).counter
            } else {
                dp.ingress(f).counter
            }
        })
        .collect()
}

/// What the first and the later fragments of a datagram should count.
fn first_then(first: Counter, n: usize, later: Counter) -> Vec<Counter> {
    std::iter::once(first)
        .chain(std::iter::repeat_n(later, n - 1))
        .collect()
}

#[test]
fn an_accepted_first_fragment_lets_its_datagram_through_both_ways() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        // A 4000-byte query and its 4000-byte answer.
        let query = fragment(&udp_in(v6, 40_000, 5353, 4000), CHUNK, 0x1001);
        assert_eq!(query.len(), 3);
        assert_eq!(
            run_all(&mut dp, false, &query),
            first_then(Counter::AcceptRule, 3, Counter::AcceptFragment),
            "v6={v6} query"
        );
        let frags = dp.frags();
        assert_eq!(frags.len(), 1, "v6={v6}: the datagram is remembered");
        let (key, entry) = frags[0];
        assert_eq!((key.id, key.proto), (0x1001, ipproto::UDP));
        assert_eq!(entry.l4_end, 8, "the UDP header ends 8 bytes in");
        let answer = udp_datagram(
            Way::Out,
            SocketAddr::new(local(v6), 5353),
            SocketAddr::new(remote(v6), 40_000),
            4000,
        );
        assert_eq!(
            run_all(&mut dp, true, &fragment(&answer, CHUNK, 0x2002)),
            first_then(Counter::AcceptEstablished, 3, Counter::AcceptFragment),
            "v6={v6} answer"
        );
        // A big ping and its reply.
        let ping = echo(Way::In, remote(v6), local(v6), true, 77, 3000);
        assert_eq!(
            run_all(&mut dp, false, &fragment(&ping, CHUNK, 0x3003)),
            first_then(Counter::AcceptRule, 3, Counter::AcceptFragment),
            "v6={v6} ping"
        );
        let echo_reply = echo(Way::Out, local(v6), remote(v6), false, 77, 3000);
        assert_eq!(
            run_all(&mut dp, true, &fragment(&echo_reply, CHUNK, 0x4004)),
            first_then(Counter::AcceptEstablished, 3, Counter::AcceptFragment),
            "v6={v6} echo reply"
        );
    }
}

#[test]
fn later_fragments_without_an_accepted_first_are_dropped() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        // The second fragment overtakes the first.
        let f = fragment(&udp_in(v6, 40_000, 5353, 4000), CHUNK, 0x1111);
        assert_eq!(
            dp.ingress(&f[1]).counter,
            Counter::DropFragment,
            "v6={v6}: before its first fragment"
        );
        assert_eq!(
            run_all(&mut dp, false, &f),
            first_then(Counter::AcceptRule, 3, Counter::AcceptFragment),
            "v6={v6}: the retransmitted datagram, in order"
        );
        // A datagram to a port the rules refuse.
        let blocked = fragment(&udp_in(v6, 40_000, 9999, 4000), CHUNK, 0x2222);
        assert_eq!(
            run_all(&mut dp, false, &blocked),
            first_then(Counter::DropDefault, 3, Counter::DropFragment),
            "v6={v6}: the rest of a refused datagram"
        );
        // Later fragments of other datagrams: the identification or the
        // source differs from the accepted one's.
        let other_id = fragment(&udp_in(v6, 40_000, 5353, 4000), CHUNK, 0x1112);
        assert_eq!(
            dp.ingress(&other_id[1]).counter,
            Counter::DropFragment,
            "v6={v6}: another identification"
        );
        let stranger: IpAddr = if v6 {
            "2001:db8::3".parse().unwrap()
        } else {
            "192.0.2.3".parse().unwrap()
        };
        let other_source = fragment(
            &udp_datagram(
                Way::In,
                SocketAddr::new(stranger, 40_000),
                SocketAddr::new(local(v6), 5353),
                4000,
            ),
            CHUNK,
            0x1111,
        );
        assert_eq!(
            dp.ingress(&other_source[2]).counter,
            Counter::DropFragment,
            "v6={v6}: same identification from another source"
        );
    }
}

/// A SYN with options (a 28-byte TCP header) and some data, to cut up.
fn syn_with_options(v6: bool, sport: u16) -> Vec<u8> {
    tcp_segment(
        Way::In,
        SocketAddr::new(remote(v6), sport),
        SocketAddr::new(local(v6), 22),
        &Segment {
            seq: 1,
            window: 64_240,
            flags: SYN,
            payload: 200,
            wscale: Some(7),
            mss: Some(1460),
            ..Segment::default()
        },
    )
}

#[test]
fn fragments_that_split_or_overwrite_the_layer4_header_are_dropped() {
    if lacks_privileges() {
        return;
    }
    let piece = |offset, len, more| Piece { offset, len, more };
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        // First fragment: the 28-byte header and 4 bytes of data. A later
        // fragment starting at 24 would rewrite the last 4 bytes of the
        // header (RFC 1858's overlapping attack); one at 32 does not.
        let f = fragments_at(
            &syn_with_options(v6, 40_000),
            0x5151,
            &[
                piece(0, 32, true),
                piece(24, 64, true),
                piece(32, 300, false),
            ],
        );
        assert_eq!(
            run_all(&mut dp, false, &f),
            [
                Counter::AcceptRule,
                Counter::DropFragment,
                Counter::AcceptFragment
            ],
            "v6={v6}"
        );
        let frags = dp.frags();
        assert_eq!(frags.len(), 1);
        assert_eq!(frags[0].1.l4_end, 28, "v6={v6}: 20 bytes + 8 of options");

        // A first fragment of 16 bytes splits the TCP header: ports and
        // sequence number, but no flags. Nothing of that datagram passes,
        // and no connection is created.
        let tiny = fragments_at(
            &syn_with_options(v6, 40_001),
            0x5252,
            &[piece(0, 16, true), piece(16, 300, false)],
        );
        assert_eq!(
            run_all(&mut dp, false, &tiny),
            [Counter::DropFragment, Counter::DropFragment],
            "v6={v6}: tiny first fragment"
        );
        assert_eq!(
            dp.conntrack().len(),
            1,
            "v6={v6}: only the first SYN's flow"
        );

        // A first fragment of exactly the UDP header is enough.
        let exact = fragments_at(
            &udp_in(v6, 40_002, 5353, 100),
            0x5353,
            &[piece(0, 8, true), piece(8, 100, false)],
        );
        assert_eq!(
            run_all(&mut dp, false, &exact),
            [Counter::AcceptRule, Counter::AcceptFragment],
            "v6={v6}: first fragment of exactly the UDP header"
        );
    }
}

#[test]
fn an_accepted_first_fragment_is_remembered_for_30_seconds() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let a = fragment(&udp_in(v6, 40_000, 5353, 3000), CHUNK, 0x0a0a);
        let b = fragment(&udp_in(v6, 40_001, 5353, 3000), CHUNK, 0x0b0b);
        assert_eq!(dp.ingress(&a[0]).counter, Counter::AcceptRule);
        dp.advance_clock(20);
        assert_eq!(dp.ingress(&b[0]).counter, Counter::AcceptRule);
        dp.advance_clock(9);
        assert_eq!(
            dp.ingress(&a[1]).counter,
            Counter::AcceptFragment,
            "v6={v6}: 29 s after its first fragment"
        );
        // B's flow is kept alive by an unfragmented datagram, so only the
        // fragment memory can have expired by 31 s.
        dp.advance_clock(11);
        assert!(dp.ingress(&udp_in(v6, 40_001, 5353, 10)).pass);
        dp.advance_clock(11);
        assert_eq!(
            dp.ingress(&b[1]).counter,
            Counter::DropFragment,
            "v6={v6}: 31 s after its first fragment"
        );
    }
}
