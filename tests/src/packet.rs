//! Test frames. Well-formed ones come from etherparse's builder; the
//! malformed ones are well-formed frames cut or patched afterwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

// ---------------------------------------------------------------------------
// Frames with every field under the test's control: TCP segments with real
// sequence numbers and options, datagrams of any size, ICMP errors quoting
// another frame, and genuine IP fragments of a whole datagram.

/// Source and destination MACs of a frame travelling `way`.
const fn macs(way: Way) -> ([u8; 6], [u8; 6]) {
    match way {
        Way::In => (CLIENT_MAC, SERVER_MAC),
        Way::Out => (SERVER_MAC, CLIENT_MAC),
    }
}

/// Ethernet + IP step between two addresses of one family.
fn ip_between(way: Way, src: IpAddr, dst: IpAddr) -> PacketBuilderStep<etherparse::IpHeaders> {
    let (smac, dmac) = macs(way);
    let eth = PacketBuilder::ethernet2(smac, dmac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families: {src} and {dst}"),
    }
}

/// `len` bytes of recognisable payload.
#[must_use]
pub fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).expect("< 251"))
        .collect()
}

/// One TCP segment with every header field explicit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    /// Written whether or not `ACK` is among the flags.
    pub ack: u32,
    /// The window field as sent (unscaled).
    pub window: u16,
    /// `tcp_flags` bits.
    pub flags: u8,
    /// Bytes of payload.
    pub payload: usize,
    /// Window-scale option (RFC 7323), as a SYN carries it.
    pub wscale: Option<u8>,
    /// Maximum-segment-size option.
    pub mss: Option<u16>,
}

/// The TCP header of `seg` (checksum left to the builder).
#[must_use]
pub fn tcp_header(sport: u16, dport: u16, seg: &Segment) -> TcpHeader {
    let mut h = TcpHeader::new(sport, dport, seg.seq, seg.window);
    h.acknowledgment_number = seg.ack;
    h.fin = seg.flags & FIN != 0;
    h.syn = seg.flags & SYN != 0;
    h.rst = seg.flags & RST != 0;
    h.psh = seg.flags & PSH != 0;
    h.ack = seg.flags & ACK != 0;
    h.urg = seg.flags & URG != 0;
    h.ece = seg.flags & ECE != 0;
    h.cwr = seg.flags & CWR != 0;
    // Linux's order on a SYN: MSS first, then NOP-padded window scale.
    let mut options = Vec::new();
    if let Some(mss) = seg.mss {
        options.push(etherparse::TcpOptionElement::MaximumSegmentSize(mss));
    }
    if let Some(ws) = seg.wscale {
        options.push(etherparse::TcpOptionElement::Noop);
        options.push(etherparse::TcpOptionElement::WindowScale(ws));
    }
    h.set_options(&options).expect("options fit");
    h
}

/// A TCP segment from `src` to `dst`, travelling `way`.
#[must_use]
pub fn tcp_segment(way: Way, src: SocketAddr, dst: SocketAddr, seg: &Segment) -> Vec<u8> {
    let mut out = Vec::new();
    ip_between(way, src.ip(), dst.ip())
        .tcp_header(tcp_header(src.port(), dst.port(), seg))
        .write(&mut out, &payload(seg.payload))
        .expect("write");
    out
}

/// A UDP datagram of `len` payload bytes from `src` to `dst`.
#[must_use]
pub fn udp_datagram(way: Way, src: SocketAddr, dst: SocketAddr, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    ip_between(way, src.ip(), dst.ip())
        .udp(src.port(), dst.port())
        .write(&mut out, &payload(len))
        .expect("write");
    out
}

/// An ICMP or `ICMPv6` echo request or reply with `len` payload bytes.
#[must_use]
pub fn echo(way: Way, src: IpAddr, dst: IpAddr, request: bool, id: u16, len: usize) -> Vec<u8> {
    let ip = ip_between(way, src, dst);
    let mut out = Vec::new();
    let data = payload(len);
    match (src.is_ipv6(), request) {
        (false, true) => ip.icmpv4_echo_request(id, 1).write(&mut out, &data),
        (false, false) => ip.icmpv4_echo_reply(id, 1).write(&mut out, &data),
        (true, true) => ip.icmpv6_echo_request(id, 1).write(&mut out, &data),
        (true, false) => ip.icmpv6_echo_reply(id, 1).write(&mut out, &data),
    }
    .expect("write");
    out
}

/// Which end of a conversation sends a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The guarded host (its segments leave by TC egress).
    Local,
    /// The peer (its segments arrive at XDP ingress).
    Remote,
}

impl Side {
    #[must_use]
    pub const fn way(self) -> Way {
        match self {
            Self::Local => Way::Out,
            Self::Remote => Way::In,
        }
    }

    #[must_use]
    pub const fn direction(self) -> fw_common::Direction {
        match self {
            Self::Local => fw_common::Direction::Egress,
            Self::Remote => fw_common::Direction::Ingress,
        }
    }

    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::Local => Self::Remote,
            Self::Remote => Self::Local,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Local => 0,
            Self::Remote => 1,
        }
    }
}

/// A TCP connection between the guarded host and a peer, as the two stacks
/// would number it: `send` stamps each segment with the sender's next
/// sequence number and the other side's as acknowledgment, and moves the
/// sender on (SYN and FIN count one). `segment` builds any other segment
/// without bookkeeping, for the ones the firewall must refuse.
#[derive(Clone, Debug)]
pub struct TcpConversation {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Next sequence number of each side, `[local, remote]`.
    pub nxt: [u32; 2],
    /// Window field of each side's non-SYN segments (unscaled).
    pub window: [u16; 2],
    /// Window field of each side's SYN (never scaled).
    pub syn_window: [u16; 2],
    /// Window-scale option on each side's SYN; `None`: no option.
    pub wscale: [Option<u8>; 2],
}

impl TcpConversation {
    /// Between the test server (local) and client (remote) addresses, with
    /// the given initial sequence numbers and no window scaling.
    #[must_use]
    pub fn new(
        v6: bool,
        local_port: u16,
        remote_port: u16,
        local_isn: u32,
        remote_isn: u32,
    ) -> Self {
        let (l, r): (IpAddr, IpAddr) = if v6 {
            (SERVER6.into(), CLIENT6.into())
        } else {
            (SERVER4.into(), CLIENT4.into())
        };
        Self {
            local: SocketAddr::new(l, local_port),
            remote: SocketAddr::new(r, remote_port),
            nxt: [local_isn, remote_isn],
            window: [64_240; 2],
            syn_window: [64_240; 2],
            wscale: [None; 2],
        }
    }

    /// Next sequence number `side` will send.
    #[must_use]
    pub const fn seq(&self, side: Side) -> u32 {
        self.nxt[side.index()]
    }

    /// Set the window-scale option `side` puts on its SYN.
    pub const fn set_wscale(&mut self, side: Side, scale: Option<u8>) {
        self.wscale[side.index()] = scale;
    }

    /// Set the window field of `side`'s later segments.
    pub const fn set_window(&mut self, side: Side, window: u16) {
        self.window[side.index()] = window;
    }

    /// The segment `from` would send next with `flags` and `len` bytes of
    /// payload; the conversation moves on as if it was delivered.
    pub fn send(&mut self, from: Side, flags: u8, len: usize) -> Vec<u8> {
        let seg = self.next_segment(from, flags, len);
        let consumed = u32::try_from(len).expect("payload fits u32")
            + u32::from(flags & SYN != 0)
            + u32::from(flags & FIN != 0);
        let i = from.index();
        self.nxt[i] = self.nxt[i].wrapping_add(consumed);
        self.segment(from, &seg)
    }

    /// The segment `send` would build, without sending it.
    #[must_use]
    pub fn next_segment(&self, from: Side, flags: u8, len: usize) -> Segment {
        let i = from.index();
        let syn = flags & SYN != 0;
        Segment {
            seq: self.nxt[i],
            ack: if flags & ACK != 0 {
                self.nxt[from.other().index()]
            } else {
                0
            },
            window: if syn {
                self.syn_window[i]
            } else {
                self.window[i]
            },
            flags,
            payload: len,
            wscale: if syn { self.wscale[i] } else { None },
            mss: syn.then_some(1460),
        }
    }

    /// Any segment from `from`, built as given; the conversation is not
    /// moved on.
    #[must_use]
    pub fn segment(&self, from: Side, seg: &Segment) -> Vec<u8> {
        let (src, dst) = match from {
            Side::Local => (self.local, self.remote),
            Side::Remote => (self.remote, self.local),
        };
        tcp_segment(from.way(), src, dst, seg)
    }
}

/// An ICMP or `ICMPv6` error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// IPv4 destination unreachable, fragmentation needed (type 3 code 4),
    /// with the next-hop MTU (RFC 1191).
    FragNeeded { mtu: u16 },
    /// Destination unreachable (IPv4 type 3, `ICMPv6` type 1) with `code`.
    Unreachable { code: u8 },
    /// `ICMPv6` packet too big (type 2) with the MTU.
    PacketTooBig { mtu: u32 },
    /// Time exceeded in transit (IPv4 type 11, `ICMPv6` type 3, code 0).
    TimeExceeded,
    /// Parameter problem (IPv4 type 12, `ICMPv6` type 4) at `pointer`.
    ParamProblem { pointer: u32 },
    /// Redirect (IPv4 type 5): an ICMP message quoting a packet that is not
    /// an error in netfilter's sense.
    Redirect { gateway: Ipv4Addr },
}

impl IcmpError {
    /// Port unreachable: IPv4 type 3 code 3, `ICMPv6` type 1 code 4.
    #[must_use]
    pub const fn port_unreachable(v6: bool) -> Self {
        Self::Unreachable {
            code: if v6 { 4 } else { 3 },
        }
    }

    /// (type, code, bytes 5 to 8 of the header).
    fn header(self, v6: bool) -> (u8, u8, [u8; 4]) {
        match (self, v6) {
            (Self::FragNeeded { mtu }, false) => {
                let m = mtu.to_be_bytes();
                (3, 4, [0, 0, m[0], m[1]])
            }
            (Self::Unreachable { code }, false) => (3, code, [0; 4]),
            (Self::Unreachable { code }, true) => (1, code, [0; 4]),
            (Self::PacketTooBig { mtu }, true) => (2, 0, mtu.to_be_bytes()),
            (Self::TimeExceeded, false) => (11, 0, [0; 4]),
            (Self::TimeExceeded, true) => (3, 0, [0; 4]),
            (Self::ParamProblem { pointer }, false) => (
                12,
                0,
                [
                    u8::try_from(pointer).expect("IPv4 pointer is a byte"),
                    0,
                    0,
                    0,
                ],
            ),
            (Self::ParamProblem { pointer }, true) => (4, 0, pointer.to_be_bytes()),
            (Self::Redirect { gateway }, false) => (5, 1, gateway.octets()),
            (e, v6) => panic!(
                "{e:?} does not exist for {}",
                if v6 { "IPv6" } else { "IPv4" }
            ),
        }
    }
}

/// `frame` with its Ethernet addresses replaced (frames sent to a real
/// interface must carry its MAC).
#[must_use]
pub fn with_macs(frame: &[u8], src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// The IP packet inside an untagged Ethernet frame.
#[must_use]
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    &frame[IP_OFF..]
}

/// Length of the IP header(s) before layer 4 of an untagged frame (IPv4
/// options included; IPv6 without extension headers).
#[must_use]
pub fn ip_header_len(frame: &[u8]) -> usize {
    match frame[IP_OFF] >> 4 {
        4 => usize::from(frame[IP_OFF] & 0x0f) * 4,
        6 => 40,
        v => panic!("not an IP frame (version {v})"),
    }
}

/// What an ICMP error quotes of `frame`: its IP header and the first
/// `l4_bytes` of layer 4 (RFC 792 asks for 8; `ICMPv6` quotes as much as
/// fits). Fewer bytes than 8 make a truncated quote.
#[must_use]
pub fn quote(frame: &[u8], l4_bytes: usize) -> Vec<u8> {
    let ip = ip_packet(frame);
    let end = (ip_header_len(frame) + l4_bytes).min(ip.len());
    ip[..end].to_vec()
}

/// An ICMP (IPv4) or `ICMPv6` error from `src` to `dst`, travelling `way`,
/// carrying `quoted` (an IP packet or a part of one, see `quote`).
#[must_use]
pub fn icmp_error(way: Way, src: IpAddr, dst: IpAddr, kind: IcmpError, quoted: &[u8]) -> Vec<u8> {
    let (t, c, rest) = kind.header(src.is_ipv6());
    let ip = ip_between(way, src, dst);
    let mut out = Vec::new();
    if src.is_ipv6() {
        ip.icmpv6_raw(t, c, rest).write(&mut out, quoted)
    } else {
        ip.icmpv4_raw(t, c, rest).write(&mut out, quoted)
    }
    .expect("write");
    out
}

/// The IPv4 header checksum of `header` (its checksum field is skipped).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, w)| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded")
}

/// One fragment to cut from a datagram: `len` bytes of its fragmentable
/// part starting at `offset` (a multiple of 8), and whether more follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: usize,
    pub len: usize,
    pub more: bool,
}

/// Cut the untagged IPv4 or IPv6 datagram in `frame` into the fragments
/// `pieces` describe, as a router or the sending host would: same
/// identification `id`, offsets in 8-byte units, more-fragments flag, IP
/// lengths and IPv4 header checksums fixed; IPv6 fragments carry a
/// fragment header after the fixed header. Pieces may overlap or leave
/// gaps: tests use that for the fragments a firewall must refuse. IPv4
/// identifications are 16 bits.
#[must_use]
pub fn fragments_at(frame: &[u8], id: u32, pieces: &[Piece]) -> Vec<Vec<u8>> {
    let hlen = ip_header_len(frame);
    let body = &frame[IP_OFF + hlen..];
    let v6 = frame[IP_OFF] >> 4 == 6;
    pieces
        .iter()
        .map(|p| {
            assert_eq!(p.offset % 8, 0, "fragment offsets are multiples of 8");
            let data = &body[p.offset..(p.offset + p.len).min(body.len())];
            let units = u16::try_from(p.offset / 8).expect("offset fits 13 bits");
            let mut out = frame[..IP_OFF + hlen].to_vec();
            let ip = IP_OFF;
            if v6 {
                let next = out[ip + 6];
                out[ip + 6] = 44;
                let plen = u16::try_from(8 + data.len()).expect("fragment fits");
                out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
                let field = (units << 3) | u16::from(p.more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                let id = u16::try_from(id).expect("IPv4 identification is 16 bits");
                let total = u16::try_from(hlen + data.len()).expect("fragment fits");
                out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                out[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
                // DF clear: a fragmented datagram never carries it.
                let field = units | if p.more { 0x2000 } else { 0 };
                out[ip + 6..ip + 8].copy_from_slice(&field.to_be_bytes());
                let sum = ipv4_checksum(&out[ip..ip + hlen]);
                out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
            }
            out.extend_from_slice(data);
            out
        })
        .collect()
}

/// Cut the datagram in `frame` into consecutive fragments of at most
/// `chunk` bytes of its fragmentable part (`chunk` a multiple of 8), as a
/// host with that much room per fragment would.
#[must_use]
pub fn fragment(frame: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0, "fragment sizes are multiples of 8");
    let body_len = frame.len() - IP_OFF - ip_header_len(frame);
    let pieces: Vec<Piece> = (0..body_len)
        .step_by(chunk)
        .map(|offset| Piece {
            offset,
            len: chunk.min(body_len - offset),
            more: offset + chunk < body_len,
        })
        .collect();
    fragments_at(frame, id, &pieces)
}

#[cfg(test)]
mod tests {
    use etherparse::{
        Icmpv4Type, Icmpv6Type, Ipv4Header, NetSlice, SlicedPacket, TcpOptionElement,
        TransportSlice,
    };

    use super::*;

    fn v4_socket(ip: Ipv4Addr, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(ip), port)
    }

    #[test]
    fn segments_carry_every_field_and_a_valid_checksum() {
        for v6 in [false, true] {
            let conv = TcpConversation::new(v6, 22, 40_000, 1, 2);
            let seg = Segment {
                seq: 0xffff_fff0,
                ack: 77,
                window: 502,
                flags: SYN | ACK,
                payload: 5,
                wscale: Some(7),
                mss: Some(1460),
            };
            let frame = conv.segment(Side::Remote, &seg);
            let parsed = SlicedPacket::from_ethernet(&frame).expect("parses");
            let Some(TransportSlice::Tcp(tcp)) = parsed.transport else {
                panic!("not TCP")
            };
            assert_eq!(tcp.sequence_number(), 0xffff_fff0);
            assert_eq!(tcp.acknowledgment_number(), 77);
            assert_eq!(tcp.window_size(), 502);
            assert!(tcp.syn() && tcp.ack() && !tcp.fin() && !tcp.rst());
            assert_eq!((tcp.source_port(), tcp.destination_port()), (40_000, 22));
            assert_eq!(tcp.payload(), &payload(5)[..]);
            let options: Vec<_> = tcp.options_iterator().map(Result::unwrap).collect();
            assert!(options.contains(&TcpOptionElement::WindowScale(7)));
            assert!(options.contains(&TcpOptionElement::MaximumSegmentSize(1460)));
            assert_eq!(tcp.data_offset(), 7, "20 bytes + 8 of options");
            let header = tcp.to_header();
            let want = match parsed.net {
                Some(NetSlice::Ipv4(ip)) => {
                    assert_eq!(ip.header().source_addr(), CLIENT4);
                    header.calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                }
                Some(NetSlice::Ipv6(ip)) => {
                    assert_eq!(ip.header().source_addr(), CLIENT6);
                    header.calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                }
                _ => panic!("no IP"),
            }
            .unwrap();
            assert_eq!(tcp.checksum(), want, "v6={v6}");
        }
    }

    #[test]
    fn a_conversation_numbers_segments_like_two_stacks_across_the_wrap() {
        let mut c = TcpConversation::new(false, 22, 40_000, 0x7fff_fff0, 0xffff_fffe);
        c.set_wscale(Side::Remote, Some(7));
        let syn = c.next_segment(Side::Remote, SYN, 0);
        assert_eq!((syn.seq, syn.ack, syn.wscale), (0xffff_fffe, 0, Some(7)));
        let _ = c.send(Side::Remote, SYN, 0);
        let _ = c.send(Side::Local, SYN | ACK, 0);
        let ack = c.next_segment(Side::Remote, ACK, 0);
        assert_eq!(
            (ack.seq, ack.ack, ack.wscale),
            (0xffff_ffff, 0x7fff_fff1, None)
        );
        let _ = c.send(Side::Remote, ACK | PSH, 10);
        assert_eq!(c.seq(Side::Remote), 9, "0xffffffff + 10 wraps");
        let _ = c.send(Side::Remote, FIN | ACK, 0);
        assert_eq!(c.seq(Side::Remote), 10, "FIN counts one");
    }

    #[test]
    fn icmp_errors_quote_the_ip_header_and_eight_bytes() {
        let inner = tcp_segment(
            Way::Out,
            v4_socket(SERVER4, 22),
            v4_socket(CLIENT4, 40_000),
            &Segment {
                seq: 5,
                flags: ACK,
                payload: 100,
                ..Segment::default()
            },
        );
        let q = quote(&inner, 8);
        assert_eq!(q.len(), 28);
        assert_eq!(&q[..], &inner[IP_OFF..IP_OFF + 28]);
        let router = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let f = icmp_error(
            Way::In,
            router,
            SERVER4.into(),
            IcmpError::FragNeeded { mtu: 1400 },
            &q,
        );
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400
                }
            )
        );
        assert_eq!(icmp.payload(), &q[..]);
        let mut sum = icmp.header();
        sum.update_checksum(icmp.payload());
        assert_eq!(icmp.checksum(), sum.checksum, "valid ICMP checksum");
        assert_eq!(quote(&inner, 4).len(), 24, "a truncated quote");
    }

    #[test]
    fn icmpv6_packet_too_big_quotes_as_much_as_given() {
        let inner = udp_datagram(
            Way::Out,
            SocketAddr::new(SERVER6.into(), 53),
            SocketAddr::new(CLIENT6.into(), 33_333),
            64,
        );
        let q = quote(&inner, 1000);
        assert_eq!(q.len(), 40 + 8 + 64, "the whole packet fits");
        let router: IpAddr = "2001:db8:ffff::1".parse().unwrap();
        let f = icmp_error(
            Way::In,
            router,
            SERVER6.into(),
            IcmpError::PacketTooBig { mtu: 1280 },
            &q,
        );
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });
        assert_eq!(icmp.payload(), &q[..]);
        let Some(NetSlice::Ipv6(ip)) = p.net else {
            panic!("not IPv6")
        };
        let h = ip.header().to_header();
        let want = icmp
            .header()
            .icmp_type
            .calc_checksum(h.source, h.destination, icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), want, "valid ICMPv6 checksum");
    }

    /// Reassemble what `fragment` produced and compare with the datagram.
    #[test]
    fn fragments_reassemble_into_the_datagram() {
        for v6 in [false, true] {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                (CLIENT6.into(), SERVER6.into())
            } else {
                (CLIENT4.into(), SERVER4.into())
            };
            let whole = udp_datagram(
                Way::In,
                SocketAddr::new(s, 5000),
                SocketAddr::new(d, 5353),
                4000,
            );
            let hlen = ip_header_len(&whole);
            let body = &whole[IP_OFF + hlen..];
            let frags = fragment(&whole, 1448, 0xbeef);
            assert_eq!(frags.len(), 3, "4008 bytes in 1448-byte pieces");
            let mut rebuilt = vec![0u8; body.len()];
            let mut seen = 0;
            for (i, f) in frags.iter().enumerate() {
                assert!(f.len() <= 1514, "fits a 1500-byte MTU");
                let p = etherparse::LaxSlicedPacket::from_ethernet(f).expect("parses");
                let (offset, more, data) = match p.net {
                    Some(etherparse::LaxNetSlice::Ipv4(ip)) => {
                        let h = ip.header();
                        assert_eq!(h.identification(), 0xbeef);
                        assert!(!h.dont_fragment());
                        let hh: Ipv4Header = h.to_header();
                        assert_eq!(h.header_checksum(), hh.calc_header_checksum());
                        assert_eq!(usize::from(h.total_len()), f.len() - IP_OFF);
                        (
                            usize::from(h.fragments_offset().value()) * 8,
                            h.more_fragments(),
                            ip.payload().payload,
                        )
                    }
                    Some(etherparse::LaxNetSlice::Ipv6(ip)) => {
                        let h = ip.header();
                        assert_eq!(usize::from(h.payload_length()), f.len() - IP_OFF - 40);
                        assert_eq!(
                            h.next_header(),
                            etherparse::IpNumber::IPV6_FRAGMENTATION_HEADER
                        );
                        // Read by hand: etherparse 0.16 misplaces the M flag
                        // and the offset of the fragment header (fixed in
                        // later versions), RFC 8200 puts them as below.
                        let fh = &f[IP_OFF + 40..IP_OFF + 48];
                        assert_eq!(fh[0], 17, "next header: UDP");
                        assert_eq!(u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]), 0xbeef);
                        let field = u16::from_be_bytes([fh[2], fh[3]]);
                        (
                            usize::from(field >> 3) * 8,
                            field & 1 == 1,
                            &f[IP_OFF + 48..],
                        )
                    }
                    _ => panic!("no IP"),
                };
                assert_eq!(more, i + 1 < frags.len(), "v6={v6} fragment {i}");
                assert_eq!(offset, seen);
                rebuilt[offset..offset + data.len()].copy_from_slice(data);
                seen += data.len();
            }
            assert_eq!(seen, body.len());
            assert_eq!(rebuilt, body, "v6={v6}");
        }
    }

    #[test]
    fn pieces_may_overlap_for_the_fragments_to_refuse() {
        let whole = udp_datagram(
            Way::In,
            v4_socket(CLIENT4, 5000),
            v4_socket(SERVER4, 5353),
            100,
        );
        let f = fragments_at(
            &whole,
            7,
            &[
                Piece {
                    offset: 0,
                    len: 16,
                    more: true,
                },
                Piece {
                    offset: 8,
                    len: 16,
                    more: true,
                },
            ],
        );
        assert_eq!(
            f[1][IP_OFF + 6..IP_OFF + 8],
            [0x20, 0x01],
            "MF, offset 1 unit"
        );
        assert_eq!(&f[1][IP_OFF + 20..], &whole[IP_OFF + 28..IP_OFF + 44]);
    }
}
