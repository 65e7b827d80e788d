//! Header parsing. Every read goes through `Packet::ptr_at`, the one
//! bounds-checked primitive, so the verifier sees a check before each access.
//! Each stage returns what the next one needs.

use core::mem::size_of;

use crate::maps::FW_CURSOR;
use fw_common::{
    conntrack::{CtKey, NO_WSCALE},
    family, ipproto,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// 802.1Q / 802.1ad tags fw looks through (QinQ).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up on a packet.
const MAX_IPV6_EXT_HEADERS: usize = 8;
/// Offsets beyond this are never legitimate header positions; the bound
/// also keeps the verifier's range tracking finite.
const MAX_HEADER_OFFSET: usize = 1024;

const IPV6_NEXT_HOP_BY_HOP: u8 = 0;
const IPV6_NEXT_ROUTING: u8 = 43;
const IPV6_NEXT_FRAGMENT: u8 = 44;
const IPV6_NEXT_AH: u8 = 51;
const IPV6_NEXT_DEST_OPTS: u8 = 60;

/// A frame as both hooks see it: the readable bytes and the full length.
pub struct Packet {
    data: usize,
    data_end: usize,
    /// Length of the whole packet, which on egress may exceed the linear
    /// part `data..data_end` (GSO, paged skbs).
    pub len: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(data: usize, data_end: usize, len: usize) -> Self {
        Self {
            data,
            data_end,
            len,
        }
    }

    /// Pointer to a `T` at `offset`, if the whole `T` is inside the packet.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Option<*const T> {
        if offset > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return None;
        }
        Some(start as *const T)
    }

    /// `ptr_at` whose check the compiler cannot drop: the end is read with
    /// a volatile load, so no earlier check can prove this one redundant.
    /// The verifier tracks ranges per pointer and wants a check before each
    /// access; code that rewrites a frame after reading it needs this.
    #[inline(always)]
    pub fn ptr_at_checked<T>(&self, offset: usize) -> Option<*mut T> {
        if offset > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.data + offset;
        // SAFETY: a read of a field of `self`.
        let end = unsafe { core::ptr::read_volatile(&raw const self.data_end) };
        if start + size_of::<T>() > end {
            return None;
        }
        Some(start as *mut T)
    }

    #[inline(always)]
    pub fn be16_at(&self, offset: usize) -> Option<u16> {
        // SAFETY: ptr_at checked both bytes are inside the packet.
        self.ptr_at::<[u8; 2]>(offset)
            .map(|p| u16::from_be_bytes(unsafe { *p }))
    }
}

/// Why a packet could not be parsed.
pub enum ParseError {
    /// Not IP: passed untouched, as netfilter never sees it either.
    NotIp,
    /// Truncated or inconsistent headers: dropped.
    Malformed,
    /// A first fragment that does not hold its whole layer-4 header.
    TinyFragment,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    None,
    First,
    /// No layer-4 header: cannot be matched by port.
    Later,
}

/// What the pipeline needs to know about a packet.
pub struct Headers {
    pub family: u8,
    pub proto: u8,
    /// Source and destination; IPv4 in the first word, network byte order.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Host byte order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// ICMP echo identifier (host byte order).
    pub icmp_id: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    pub fragment: Fragment,
    /// Offsets from the start of the frame: IP header, layer-4 header, and
    /// the byte naming the layer-4 protocol (for ICMPv6 parameter problems).
    pub l3_off: usize,
    pub l4_off: usize,
    pub nh_off: usize,
    /// TCP sequence and acknowledgement numbers (host order), data offset.
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// TCP window field (unscaled) and window-scale option of a SYN
    /// (`NO_WSCALE` when absent).
    pub tcp_win: u16,
    pub tcp_wscale: u8,
    /// Bytes of TCP payload.
    pub tcp_payload: u32,
    /// TCP header length in bytes (data offset × 4).
    pub tcp_hlen: u8,
    /// Bytes of the IP datagram as its header says (0 when unknown).
    pub ip_len: usize,
    /// Fragment identification (IPv4: 16 bits) and offset in bytes.
    pub frag_id: u32,
    pub frag_off: u16,
    /// First fragment: bytes from the start of the fragmentable part to the
    /// end of the layer-4 header.
    pub frag_l4_end: u16,
    /// Offset of the fragmentable part (after the IPv6 fragment header, or
    /// the IPv4 header).
    frag_data_off: u16,
}

impl Headers {
    const fn empty() -> Self {
        Self {
            family: 0,
            proto: 0,
            src: [0; 4],
            dst: [0; 4],
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_id: 0,
            hop_limit: 0,
            fragment: Fragment::None,
            l3_off: 0,
            l4_off: 0,
            nh_off: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_win: 0,
            tcp_wscale: NO_WSCALE,
            tcp_payload: 0,
            tcp_hlen: 0,
            ip_len: 0,
            frag_id: 0,
            frag_off: 0,
            frag_l4_end: 0,
            frag_data_off: 0,
        }
    }
}

/// Parse Ethernet (with up to two VLAN tags), IP and the layer-4 header.
#[inline(always)]
///
/// `tcp_options`: also read a SYN's window-scale option (connection
/// tracking needs it; the REJECT builders do not, and skip the loop).
pub fn parse(pkt: &Packet, strict_lengths: bool, tcp_options: bool) -> Result<Headers, ParseError> {
    let eth: *const EthHdr = pkt.ptr_at(0).ok_or(ParseError::Malformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the inner EtherType.
        ether_type = pkt.be16_at(off + 2).ok_or(ParseError::Malformed)?;
        off += 4;
    }
    let mut h = Headers::empty();
    h.l3_off = off;
    let l4_off = match ether_type {
        ETH_P_IP => parse_ipv4(pkt, off, strict_lengths, &mut h)?,
        ETH_P_IPV6 => parse_ipv6(pkt, off, strict_lengths, &mut h)?,
        // A third VLAN tag or anything else that is not IP.
        _ => return Err(ParseError::NotIp),
    };
    h.l4_off = l4_off;
    if h.fragment != Fragment::Later
        && let Err(e) = parse_l4(pkt, l4_off, &mut h, tcp_options)
    {
        // A first fragment too short for its layer-4 header is the
        // tiny-fragment evasion, not a broken packet.
        return Err(if h.fragment == Fragment::First {
            ParseError::TinyFragment
        } else {
            e
        });
    }
    Ok(h)
}

/// Returns the offset of the layer-4 header.
#[inline(always)]
fn parse_ipv4(
    pkt: &Packet,
    off: usize,
    strict: bool,
    h: &mut Headers,
) -> Result<usize, ParseError> {
    let ip: *const Ipv4Hdr = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    let ihl = usize::from(ip.ihl());
    if ip.version() != 4 || ihl < Ipv4Hdr::LEN {
        return Err(ParseError::Malformed);
    }
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    // On ingress the frame is what came off the wire and must hold the whole
    // datagram. Egress may carry GSO packets whose total length is 0 (BIG TCP).
    if (strict || tot_len != 0) && tot_len < ihl {
        return Err(ParseError::Malformed);
    }
    if strict && off + tot_len > pkt.len {
        return Err(ParseError::Malformed);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let more_fragments = frags & 0x2000 != 0;
    let offset = frags & 0x1fff;
    h.fragment = if offset != 0 {
        Fragment::Later
    } else if more_fragments {
        Fragment::First
    } else {
        Fragment::None
    };
    h.family = family::IPV4;
    h.ip_len = tot_len;
    h.frag_id = u32::from(u16::from_be_bytes(ip.id));
    h.frag_off = offset << 3;
    h.frag_data_off = (off + ihl) as u16;
    h.nh_off = off + 9;
    h.proto = ip.proto;
    h.hop_limit = ip.ttl;
    h.src[0] = u32::from_ne_bytes(ip.src_addr);
    h.dst[0] = u32::from_ne_bytes(ip.dst_addr);
    Ok(off + ihl)
}

#[inline(always)]
fn parse_ipv6(
    pkt: &Packet,
    off: usize,
    strict: bool,
    h: &mut Headers,
) -> Result<usize, ParseError> {
    let ip: *const Ipv6Hdr = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes(ip.payload_len));
    if strict && off + Ipv6Hdr::LEN + payload_len > pkt.len {
        return Err(ParseError::Malformed);
    }
    h.family = family::IPV6;
    h.ip_len = if payload_len == 0 {
        0
    } else {
        Ipv6Hdr::LEN + payload_len
    };
    h.nh_off = off + 6;
    h.hop_limit = ip.hop_limit;
    for i in 0..4 {
        h.src[i] = u32::from_ne_bytes([
            ip.src_addr[i * 4],
            ip.src_addr[i * 4 + 1],
            ip.src_addr[i * 4 + 2],
            ip.src_addr[i * 4 + 3],
        ]);
        h.dst[i] = u32::from_ne_bytes([
            ip.dst_addr[i * 4],
            ip.dst_addr[i * 4 + 1],
            ip.dst_addr[i * 4 + 2],
            ip.dst_addr[i * 4 + 3],
        ]);
    }
    let mut next = ip.next_hdr;
    let mut cur = off + Ipv6Hdr::LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !matches!(
            next,
            IPV6_NEXT_HOP_BY_HOP
                | IPV6_NEXT_ROUTING
                | IPV6_NEXT_DEST_OPTS
                | IPV6_NEXT_AH
                | IPV6_NEXT_FRAGMENT
        ) {
            h.proto = next;
            return Ok(cur);
        }
        // Every extension header is at least 8 bytes; read all fields
        // through this one checked pointer.
        let ext: *const [u8; 8] = pkt.ptr_at(cur).ok_or(ParseError::Malformed)?;
        // SAFETY: bounds-checked by ptr_at.
        let ext = unsafe { &*ext };
        let len = match next {
            IPV6_NEXT_AH => (usize::from(ext[1]) + 2) * 4,
            IPV6_NEXT_FRAGMENT => {
                let frag = u16::from_be_bytes([ext[2], ext[3]]);
                let offset = frag >> 3;
                h.frag_id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                h.frag_off = offset << 3;
                h.frag_data_off = (cur + 8) as u16;
                let more = frag & 1 != 0;
                h.fragment = if offset != 0 {
                    Fragment::Later
                } else if more {
                    Fragment::First
                } else {
                    Fragment::None
                };
                8
            }
            _ => (usize::from(ext[1]) + 1) * 8,
        };
        next = ext[0];
        h.nh_off = cur;
        cur += len;
        if h.fragment == Fragment::Later {
            h.proto = next;
            return Ok(cur);
        }
    }
    // More extension headers than any sane sender uses.
    Err(ParseError::Malformed)
}

#[inline(always)]
fn parse_l4(
    pkt: &Packet,
    off: usize,
    h: &mut Headers,
    tcp_options: bool,
) -> Result<(), ParseError> {
    // Each header is read through one checked pointer: the compiler merges
    // repeated bounds checks, and the verifier only trusts the pointer that
    // was checked.
    let mut l4_len = 0;
    match h.proto {
        ipproto::TCP => {
            let tcp: *const [u8; 20] = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
            // SAFETY: bounds-checked by ptr_at.
            let tcp = unsafe { &*tcp };
            h.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
            h.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            let doff = usize::from(tcp[12] >> 4) * 4;
            h.tcp_flags = tcp[13];
            h.tcp_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            h.tcp_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
            h.tcp_win = u16::from_be_bytes([tcp[14], tcp[15]]);
            // The options must be inside the packet.
            if doff < 20 || off + doff > pkt.len {
                return Err(ParseError::Malformed);
            }
            if tcp_options && h.tcp_flags & fw_common::conntrack::tcp_flags::SYN != 0 {
                h.tcp_wscale = window_scale(pkt, off, doff);
            }
            // The datagram's own length, not the frame's (which may be
            // padded); GSO packets on egress may say 0 (BIG TCP): then the
            // skb's length is the datagram.
            let end = if h.ip_len == 0 {
                pkt.len
            } else {
                h.l3_off + h.ip_len
            };
            h.tcp_payload = end.saturating_sub(off + doff) as u32;
            h.tcp_hlen = doff as u8;
            l4_len = doff;
        }
        ipproto::UDP => {
            let udp: *const UdpHdr = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
            // SAFETY: bounds-checked by ptr_at.
            let udp = unsafe { &*udp };
            h.sport = u16::from_be_bytes(udp.src);
            h.dport = u16::from_be_bytes(udp.dst);
            l4_len = UdpHdr::LEN;
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            // Type, code, checksum, then the rest-of-header word.
            let icmp: *const [u8; 8] = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
            // SAFETY: bounds-checked by ptr_at.
            let icmp = unsafe { &*icmp };
            h.icmp_type = icmp[0];
            h.icmp_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            l4_len = 8;
        }
        _ => {}
    }
    if h.fragment == Fragment::First {
        // The verdict on a fragmented datagram is made on its first
        // fragment, so that fragment must hold the whole layer-4 header
        // inside its own payload (a tiny fragment splitting the TCP header
        // is the classic evasion, RFC 1858).
        let header_end = off + l4_len;
        let data_off = usize::from(h.frag_data_off);
        if h.ip_len == 0 || header_end > h.l3_off + h.ip_len || header_end < data_off {
            return Err(ParseError::TinyFragment);
        }
        h.frag_l4_end = (header_end - data_off) as u16;
    }
    Ok(())
}

/// The window-scale option of a SYN, `NO_WSCALE` without one. Options are
/// walked one at a time (at most 40 bytes of them).
///
/// The position lives in a per-CPU map, not in a register: the verifier
/// then knows nothing of it on each pass but its mask, so every way through
/// the loop reaches the loop head in the same state and is pruned, instead
/// of being followed once per possible option layout.
#[inline(always)]
fn window_scale(pkt: &Packet, off: usize, doff: usize) -> u8 {
    const OPT_EOL: u8 = 0;
    const OPT_NOP: u8 = 1;
    const OPT_WSCALE: u8 = 3;
    let Some(cursor) = FW_CURSOR.get_ptr_mut(0) else {
        return NO_WSCALE;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    unsafe { *cursor = 20 };
    for _ in 0..40 {
        // SAFETY: as above.
        let rel = (unsafe { *cursor } & 63) as usize;
        if rel + 2 > doff {
            break;
        }
        let Some(p) = pkt.ptr_at::<[u8; 3]>(off + rel) else {
            break;
        };
        // SAFETY: bounds-checked by ptr_at.
        let [kind, len, value] = unsafe { *p };
        if kind == OPT_EOL {
            break;
        }
        if kind == OPT_WSCALE && len == 3 && rel + 3 <= doff {
            return value;
        }
        let step = if kind == OPT_NOP {
            1
        } else if len < 2 {
            break;
        } else {
            u32::from(len)
        };
        // SAFETY: as above.
        unsafe { *cursor = rel as u32 + step };
    }
    NO_WSCALE
}

/// Is this ICMP/ICMPv6 type an error that quotes the packet it is about
/// (and so may be RELATED to a connection)? Destination unreachable
/// (including fragmentation needed), time exceeded, parameter problem;
/// for ICMPv6 also packet too big.
#[inline(always)]
pub fn is_icmp_error(h: &Headers) -> bool {
    match h.proto {
        ipproto::ICMP => matches!(h.icmp_type, 3 | 11 | 12),
        ipproto::ICMPV6 => matches!(h.icmp_type, 1..=4),
        _ => false,
    }
}

/// The connection key of the packet an ICMP error quotes, as the host
/// would key it: the quoted packet travelled the other way (an error
/// arriving on ingress is about a packet the host sent). `None` when the
/// quote is truncated (less than the IP header and 8 bytes of layer 4) or
/// not of the error's own family.
#[inline(always)]
pub fn quoted_key(pkt: &Packet, h: &Headers, ingress: bool) -> Option<CtKey> {
    let off = h.l4_off + 8;
    let mut key = CtKey::default();
    let (src, dst, l4_off) = if h.family == family::IPV4 {
        let ip: *const [u8; 20] = pkt.ptr_at(off)?;
        // SAFETY: bounds-checked by ptr_at.
        let ip = unsafe { &*ip };
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 {
            return None;
        }
        key.proto = ip[9];
        let mut src = [0u32; 4];
        let mut dst = [0u32; 4];
        src[0] = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
        dst[0] = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
        (src, dst, off + ihl)
    } else {
        let ip: *const [u8; 40] = pkt.ptr_at(off)?;
        // SAFETY: bounds-checked by ptr_at.
        let ip = unsafe { &*ip };
        if ip[0] >> 4 != 6 {
            return None;
        }
        key.proto = ip[6];
        let mut src = [0u32; 4];
        let mut dst = [0u32; 4];
        for i in 0..4 {
            let s = 8 + i * 4;
            let d = 24 + i * 4;
            src[i] = u32::from_ne_bytes([ip[s], ip[s + 1], ip[s + 2], ip[s + 3]]);
            dst[i] = u32::from_ne_bytes([ip[d], ip[d + 1], ip[d + 2], ip[d + 3]]);
        }
        (src, dst, off + 40)
    };
    let l4: *const [u8; 8] = pkt.ptr_at(l4_off)?;
    // SAFETY: bounds-checked by ptr_at.
    let l4 = unsafe { &*l4 };
    let (sport, dport) = match key.proto {
        ipproto::TCP | ipproto::UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        // Echo flows are keyed by their identifier on both ends.
        ipproto::ICMP | ipproto::ICMPV6 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    key.family = h.family;
    if ingress {
        key.local = src;
        key.remote = dst;
        key.local_port = sport;
        key.remote_port = dport;
    } else {
        key.local = dst;
        key.remote = src;
        key.local_port = dport;
        key.remote_port = sport;
    }
    Some(key)
}
