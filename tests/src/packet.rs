//! Test frames. Well-formed ones come from etherparse's builder; the
//! malformed ones are well-formed frames cut or patched afterwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, PacketBuilderStep, TcpHeader, VlanId};
use fw_common::conntrack::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const SERVER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// Which way a frame travels relative to the guarded host.
#[derive(Clone, Copy, Debug)]
pub enum Way {
    /// Remote peer → host (fed to the XDP program).
    In,
    /// Host → remote peer (fed to the TC program).
    Out,
}

/// VLAN tags in front of the IP header.
#[derive(Clone, Copy, Debug)]
pub enum Vlan {
    None,
    Single(u16),
    Double(u16, u16),
}

/// A layer-4 description of a test packet.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    EchoRequest { id: u16 },
    EchoReply { id: u16 },
}

/// Build a frame between the test client (remote) and server (local host).
/// `remote_port`/`local_port` semantics follow `way`: for `In`, the client
/// is the source.
#[must_use]
pub fn frame(v6: bool, way: Way, vlan: Vlan, l4: L4) -> Vec<u8> {
    let (smac, dmac) = match way {
        Way::In => (CLIENT_MAC, SERVER_MAC),
        Way::Out => (SERVER_MAC, CLIENT_MAC),
    };
    let (src, dst): (IpAddr, IpAddr) = match (v6, way) {
        (false, Way::In) => (CLIENT4.into(), SERVER4.into()),
        (false, Way::Out) => (SERVER4.into(), CLIENT4.into()),
        (true, Way::In) => (CLIENT6.into(), SERVER6.into()),
        (true, Way::Out) => (SERVER6.into(), CLIENT6.into()),
    };
    frame_between(src, dst, smac, dmac, vlan, l4)
}

/// Build a frame between arbitrary addresses (same family).
#[must_use]
pub fn frame_between(
    src: IpAddr,
    dst: IpAddr,
    smac: [u8; 6],
    dmac: [u8; 6],
    vlan: Vlan,
    l4: L4,
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let vid = |v: u16| VlanId::try_new(v).expect("vlan id");
    match vlan {
        Vlan::None => ip(eth, src, dst, l4),
        Vlan::Single(a) => ip(eth.single_vlan(vid(a)), src, dst, l4),
        Vlan::Double(a, b) => ip(eth.double_vlan(vid(a), vid(b)), src, dst, l4),
    }
}

trait IpStep: Sized {
    fn v4(self, src: [u8; 4], dst: [u8; 4]) -> PacketBuilderStep<etherparse::IpHeaders>;
    fn v6(self, src: [u8; 16], dst: [u8; 16]) -> PacketBuilderStep<etherparse::IpHeaders>;
}

macro_rules! ip_step {
    ($t:ty) => {
        impl IpStep for PacketBuilderStep<$t> {
            fn v4(self, src: [u8; 4], dst: [u8; 4]) -> PacketBuilderStep<etherparse::IpHeaders> {
                self.ipv4(src, dst, 64)
            }
            fn v6(self, src: [u8; 16], dst: [u8; 16]) -> PacketBuilderStep<etherparse::IpHeaders> {
                self.ipv6(src, dst, 64)
            }
        }
    };
}
ip_step!(etherparse::Ethernet2Header);
ip_step!(etherparse::VlanHeader);

fn ip(step: impl IpStep, src: IpAddr, dst: IpAddr, l4: L4) -> Vec<u8> {
    let (ip, v6) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (step.v4(s.octets(), d.octets()), false),
        (IpAddr::V6(s), IpAddr::V6(d)) => (step.v6(s.octets(), d.octets()), true),
        _ => panic!("mixed address families"),
    };
    let payload: &[u8] = b"fw-test";
    let mut out = Vec::new();
    match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => write(
            tcp_flags(ip.tcp(sport, dport, 1000, 64240), flags),
            payload,
            &mut out,
        ),
        L4::Udp { sport, dport } => {
            let b = ip.udp(sport, dport);
            b.write(&mut out, payload).expect("write");
        }
        L4::EchoRequest { id } => {
            if v6 {
                ip.icmpv6_echo_request(id, 1)
                    .write(&mut out, payload)
                    .expect("write");
            } else {
                ip.icmpv4_echo_request(id, 1)
                    .write(&mut out, payload)
                    .expect("write");
            }
        }
        L4::EchoReply { id } => {
            if v6 {
                ip.icmpv6_echo_reply(id, 1)
                    .write(&mut out, payload)
                    .expect("write");
            } else {
                ip.icmpv4_echo_reply(id, 1)
                    .write(&mut out, payload)
                    .expect("write");
            }
        }
    }
    out
}

fn write(b: PacketBuilderStep<TcpHeader>, payload: &[u8], out: &mut Vec<u8>) {
    b.write(out, payload).expect("write");
}

fn tcp_flags(mut b: PacketBuilderStep<TcpHeader>, flags: u8) -> PacketBuilderStep<TcpHeader> {
    for (bit, f) in [
        (FIN, PacketBuilderStep::<TcpHeader>::fin as fn(_) -> _),
        (SYN, PacketBuilderStep::<TcpHeader>::syn),
        (RST, PacketBuilderStep::<TcpHeader>::rst),
        (PSH, PacketBuilderStep::<TcpHeader>::psh),
        (ECE, PacketBuilderStep::<TcpHeader>::ece),
        (CWR, PacketBuilderStep::<TcpHeader>::cwr),
    ] {
        if flags & bit != 0 {
            b = f(b);
        }
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    if flags & URG != 0 {
        b = b.urg(0);
    }
    b
}

/// Offset of the IP header in an untagged Ethernet frame.
pub const IP_OFF: usize = 14;

/// Insert IPv6 extension headers (each `(next_header_type, 8 bytes)`) between
/// the IPv6 header and its payload, fixing next-header chain and payload
/// length. Layer-4 checksums stay valid: the pseudo-header does not cover
/// extension headers.
#[must_use]
pub fn with_ipv6_ext_headers(frame: &[u8], ext_types: &[u8]) -> Vec<u8> {
    let ip = IP_OFF;
    let mut out = frame[..ip + 40].to_vec();
    let upper = frame[ip + 6];
    out[ip + 6] = ext_types[0];
    for (i, _) in ext_types.iter().enumerate() {
        let next = ext_types.get(i + 1).copied().unwrap_or(upper);
        // Next header, length 0 (= 8 bytes), then a PadN option of 4 bytes.
        out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    out.extend_from_slice(&frame[ip + 40..]);
    let payload_len = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]])
        + 8 * u16::try_from(ext_types.len()).expect("a few headers");
    out[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// Insert an IPv6 fragment header with the given offset (in 8-byte units)
/// and more-fragments flag.
#[must_use]
pub fn with_ipv6_fragment(frame: &[u8], offset_units: u16, more: bool) -> Vec<u8> {
    let mut out = with_ipv6_ext_headers(frame, &[44]);
    let frag = IP_OFF + 40;
    // The fragment header has no length field: byte 1 is reserved.
    out[frag + 1] = 0;
    let field = (offset_units << 3) | u16::from(more);
    out[frag + 2..frag + 4].copy_from_slice(&field.to_be_bytes());
    out[frag + 4..frag + 8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    out
}

/// Set the IPv4 fragment field of an untagged IPv4 frame.
#[must_use]
pub fn with_ipv4_fragment(frame: &[u8], offset_units: u16, more: bool) -> Vec<u8> {
    let mut out = frame.to_vec();
    let field = offset_units | if more { 0x2000 } else { 0 };
    out[IP_OFF + 6..IP_OFF + 8].copy_from_slice(&field.to_be_bytes());
    out
}

/// An ARP request (not IP: passes untouched).
#[must_use]
pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT4.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SERVER4.octets());
    f
}

/// An `ICMPv6` neighbour solicitation for the server's address.
#[must_use]
pub fn neighbor_solicitation(hop_limit: u8) -> Vec<u8> {
    let target = SERVER6.octets();
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target);
    let step = PacketBuilder::ethernet2(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 1]).ipv6(
        CLIENT6.octets(),
        [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
        hop_limit,
    );
    let mut out = Vec::new();
    step.icmpv6(etherparse::Icmpv6Type::Unknown {
        type_u8: 135,
        code_u8: 0,
        bytes5to8: [0; 4],
    })
    .write(&mut out, &target)
    .expect("write");
    out
}
