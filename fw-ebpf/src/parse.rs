//! Header parsing. Every read goes through `Packet::ptr_at`, the one
//! bounds-checked primitive, so the verifier sees a check before each access.
//! Each stage returns what the next one needs.

use core::mem::size_of;

use fw_common::{family, ipproto};
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
    /// Bytes of the IP datagram as its header says (0 when unknown).
    pub ip_len: usize,
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
            ip_len: 0,
        }
    }
}

/// Parse Ethernet (with up to two VLAN tags), IP and the layer-4 header.
#[inline(always)]
pub fn parse(pkt: &Packet, strict_lengths: bool) -> Result<Headers, ParseError> {
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
    if h.fragment != Fragment::Later {
        parse_l4(pkt, l4_off, &mut h)?;
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
fn parse_l4(pkt: &Packet, off: usize, h: &mut Headers) -> Result<(), ParseError> {
    // Each header is read through one checked pointer: the compiler merges
    // repeated bounds checks, and the verifier only trusts the pointer that
    // was checked.
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
            // The options must be inside the packet; a first fragment that
            // splits the TCP header ends up here as malformed.
            if doff < 20 || off + doff > pkt.len {
                return Err(ParseError::Malformed);
            }
        }
        ipproto::UDP => {
            let udp: *const UdpHdr = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
            // SAFETY: bounds-checked by ptr_at.
            let udp = unsafe { &*udp };
            h.sport = u16::from_be_bytes(udp.src);
            h.dport = u16::from_be_bytes(udp.dst);
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            // Type, code, checksum, then the rest-of-header word.
            let icmp: *const [u8; 8] = pkt.ptr_at(off).ok_or(ParseError::Malformed)?;
            // SAFETY: bounds-checked by ptr_at.
            let icmp = unsafe { &*icmp };
            h.icmp_type = icmp[0];
            h.icmp_id = u16::from_be_bytes([icmp[4], icmp[5]]);
        }
        _ => {}
    }
    Ok(())
}
