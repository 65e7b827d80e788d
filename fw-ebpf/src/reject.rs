//! REJECT: answering a refused packet from the kernel, as iptables' REJECT
//! target does. A TCP packet gets a RST; anything else an ICMP or ICMPv6
//! destination-unreachable (or parameter problem) quoting the offending
//! packet: its IP header and 8 bytes for IPv4 (RFC 792), as much as fits in
//! 1280 bytes for IPv6 (RFC 4443 2.4c).
//!
//! On ingress (XDP) the frame is rewritten into the reply and sent back out
//! of the interface it came in on. No answer is ever sent to a multicast or
//! broadcast address, for a RST, or for an ICMP error: those are dropped.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action},
    cty::c_void,
    helpers::{
        bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail, bpf_xdp_load_bytes, generated::bpf_loop,
    },
    programs::{TcContext, XdpContext},
};
use fw_common::{
    checksum::{add_bytes, add16, add32, finish},
    conntrack::tcp_flags,
    family, ipproto,
    policy::RejectWith,
};

use crate::{
    maps::{FW_PENDING, FW_SCRATCH},
    parse::{self, Headers, Packet},
};

/// Longest ICMPv6 error we send: the IPv6 minimum MTU.
const IPV6_MIN_MTU: usize = 1280;
/// Layer-2 header: Ethernet plus up to two VLAN tags.
const MAX_L2: usize = 22;

/// The concrete answer for `with` (iptables' defaults for `Auto`).
#[inline(always)]
fn concrete(with: u8, proto: u8) -> RejectWith {
    match RejectWith::from_u8(with) {
        RejectWith::Auto => match proto {
            ipproto::TCP => RejectWith::TcpReset,
            ipproto::UDP => RejectWith::PortUnreachable,
            _ => RejectWith::ProtoUnreachable,
        },
        w => w,
    }
}

/// May this packet be answered at all?
#[inline(always)]
fn may_answer(h: &Headers) -> bool {
    if h.family == family::IPV4 {
        let (s, d) = (h.src[0].to_ne_bytes(), h.dst[0].to_ne_bytes());
        // Multicast, broadcast, "this network" source.
        if d[0] >= 224 || s[0] >= 224 || s[0] == 0 {
            return false;
        }
        // Never answer an ICMP error (RFC 1122 3.2.2).
        if h.proto == ipproto::ICMP && !matches!(h.icmp_type, 8 | 13 | 15 | 17) {
            return false;
        }
    } else {
        let (s, d) = (h.src[0].to_ne_bytes(), h.dst[0].to_ne_bytes());
        if d[0] == 0xff || s[0] == 0xff || h.src == [0; 4] {
            return false;
        }
        if h.proto == ipproto::ICMPV6 && h.icmp_type < 128 {
            return false;
        }
    }
    !(h.proto == ipproto::TCP && h.tcp_flags & tcp_flags::RST != 0)
}

/// Answer the frame in `ctx`, which the rules stage parked in
/// `FW_PENDING` and judged REJECT. Returns the XDP action: `XDP_TX` with
/// the reply in place, or `XDP_DROP`.
#[inline(always)]
pub fn xdp(ctx: &XdpContext) -> u32 {
    let Some(p) = FW_PENDING.get(0) else {
        return xdp_action::XDP_DROP;
    };
    let with = p.reject_with;
    // This program is verified on its own, so parsing the frame again here
    // costs the main program nothing.
    let pkt = Packet::new(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data());
    let Ok(h) = parse::parse(&pkt, true, false) else {
        return xdp_action::XDP_DROP;
    };
    if !may_answer(&h) {
        return xdp_action::XDP_DROP;
    }
    let built = match concrete(with, h.proto) {
        RejectWith::TcpReset if h.proto == ipproto::TCP => tcp_reset(ctx, &pkt, &h),
        RejectWith::TcpReset => None,
        w => icmp_error(ctx, &h, w),
    };
    if built.is_some() {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    }
}

/// Answer a packet the host was sending (an output-chain REJECT): turn it
/// into the reply its destination would send and hand that to the host's
/// own stack, by redirecting it to the ingress of the device it was
/// leaving by. The application sees "connection refused" at once.
#[inline(always)]
pub fn tc(ctx: &TcContext) -> i32 {
    let Some(p) = FW_PENDING.get(0) else {
        return TC_ACT_SHOT;
    };
    let with = p.reject_with;
    let pkt = Packet::new(ctx.data(), ctx.data_end(), ctx.len() as usize);
    let Ok(h) = parse::parse(&pkt, false, false) else {
        return TC_ACT_SHOT;
    };
    if !may_answer(&h) {
        return TC_ACT_SHOT;
    }
    let built = match concrete(with, h.proto) {
        RejectWith::TcpReset if h.proto == ipproto::TCP => tc_tcp_reset(ctx, &pkt, &h),
        RejectWith::TcpReset => None,
        w => tc_icmp_error(ctx, &h, w),
    };
    if built.is_none() {
        return TC_ACT_SHOT;
    }
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the helper only records where the packet goes.
    unsafe { bpf_redirect(ifindex, u64::from(BPF_F_INGRESS)) as i32 }
}

#[inline(always)]
fn tc_swap_macs(ctx: &TcContext) -> Option<()> {
    let mut macs = [0u8; 12];
    // The helper directly, with a constant length: the wrapper clamps the
    // length to the packet, which the verifier then sees as maybe zero.
    // SAFETY: the helper bounds-checks the packet; `macs` holds 12 bytes.
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, macs.as_mut_ptr().cast(), 12) } != 0 {
        return None;
    }
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0).ok()
}

#[inline(always)]
fn tc_trim(ctx: &TcContext, len: usize) -> Option<()> {
    // SAFETY: the helper checks the context and the length.
    (unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) } == 0).then_some(())
}

#[inline(always)]
fn tc_tcp_reset(ctx: &TcContext, pkt: &Packet, h: &Headers) -> Option<()> {
    let l3 = h.l3_off;
    let doff = usize::from(*pkt_byte(pkt, h.l4_off + 12)? >> 4) * 4;
    let (src, dst) = reply_addrs(h);
    let tcp = rst_segment(h, doff, &src, &dst);
    tc_swap_macs(ctx)?;
    let ip_len = if h.family == family::IPV6 {
        ctx.store(l3, &ipv6_header(20, ipproto::TCP, 64, src, dst), 0)
            .ok()?;
        40
    } else {
        ctx.store(
            l3,
            &ipv4_header(40, ipproto::TCP, first4(&src), first4(&dst)),
            0,
        )
        .ok()?;
        20
    };
    ctx.store(l3 + ip_len, &tcp, 0).ok()?;
    tc_trim(ctx, l3 + ip_len + 20)
}

#[inline(always)]
fn tc_icmp_error(ctx: &TcContext, h: &Headers, with: RejectWith) -> Option<()> {
    let l2 = h.l3_off;
    let plan = icmp_plan(h, with, ctx.len() as usize)?;
    tc_swap_macs(ctx)?;
    // Room between the link layer and the offending IP header: the new IP
    // and ICMP headers go there, the old packet becomes the quote.
    ctx.adjust_room(plan.grow as i32, BPF_ADJ_ROOM_MAC, 0)
        .ok()?;
    tc_trim(ctx, l2 + plan.grow + plan.quote)?;
    let (src, dst) = reply_addrs(h);
    let ip = icmp_ip_header(h, &plan, &src, &dst);
    if plan.ip_hdr_len == 40 {
        ctx.store(l2, &ip, 0).ok()?;
    } else {
        ctx.store(l2, &first20(&ip), 0).ok()?;
    }
    let icmp_off = l2 + plan.ip_hdr_len;
    let quote_sum = add_quote::<SkbFrame>(ctx.skb.skb.cast(), icmp_off + 8, plan.quote)?;
    ctx.store(icmp_off, &icmp_header(h, &plan, &src, &dst, quote_sum), 0)
        .ok()
}

/// Swap the Ethernet addresses of the frame at `pkt`.
#[inline(always)]
fn swap_macs(pkt: &Packet) -> Option<()> {
    let eth = pkt.ptr_at_checked::<[u8; 12]>(0)?;
    // SAFETY: bounds-checked by ptr_at_mut.
    let old = unsafe { *eth };
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&old[6..]);
    swapped[6..].copy_from_slice(&old[..6]);
    // SAFETY: as above.
    unsafe { *eth = swapped };
    Some(())
}

fn v4_bytes(a: u32) -> [u8; 4] {
    a.to_ne_bytes()
}

fn v6_bytes(a: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, w) in a.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    out
}

/// An IPv4 header with a correct checksum.
fn ipv4_header(total_len: u16, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = finish(add_bytes(0, &ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn ipv6_header(
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
) -> [u8; 40] {
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = next;
    ip[7] = hop_limit;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    ip
}

/// Sum of the pseudo-header of the reply (addresses as written in it).
fn pseudo_sum(v6: bool, src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u32 {
    let n = if v6 { 16 } else { 4 };
    let mut sum = add_bytes(0, &src[..n]);
    sum = add_bytes(sum, &dst[..n]);
    sum = add16(sum, u16::from(proto));
    add32(sum, len)
}

/// Source and destination of the reply (the refused packet's, swapped),
/// as 16-byte arrays (IPv4 in the first four).
#[inline(always)]
fn reply_addrs(h: &Headers) -> ([u8; 16], [u8; 16]) {
    if h.family == family::IPV6 {
        (v6_bytes(&h.dst), v6_bytes(&h.src))
    } else {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&v4_bytes(h.dst[0]));
        d[..4].copy_from_slice(&v4_bytes(h.src[0]));
        (s, d)
    }
}

/// The RST that refuses the TCP segment `h` (RFC 793, "reset
/// generation"), checksummed for the reply addresses. `doff` is the
/// segment's header length.
#[inline(always)]
fn rst_segment(h: &Headers, doff: usize, src: &[u8; 16], dst: &[u8; 16]) -> [u8; 20] {
    // Sequence space the segment used: payload plus SYN and FIN.
    let payload = h.ip_len.saturating_sub(h.l4_off - h.l3_off + doff);
    let mut seg_len = payload as u32;
    if h.tcp_flags & tcp_flags::SYN != 0 {
        seg_len += 1;
    }
    if h.tcp_flags & tcp_flags::FIN != 0 {
        seg_len += 1;
    }
    let (seq, ack, flags) = if h.tcp_flags & tcp_flags::ACK != 0 {
        (h.tcp_ack, 0, tcp_flags::RST)
    } else {
        (
            0,
            h.tcp_seq.wrapping_add(seg_len),
            tcp_flags::RST | tcp_flags::ACK,
        )
    };
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&h.dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&h.sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    let v6 = h.family == family::IPV6;
    let sum = finish(add_bytes(pseudo_sum(v6, src, dst, ipproto::TCP, 20), &tcp));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    tcp
}

/// Turn a TCP segment into the RST that refuses it, in place, and cut the
/// frame to the new length.
#[inline(always)]
fn tcp_reset(ctx: &XdpContext, pkt: &Packet, h: &Headers) -> Option<()> {
    let l3 = h.l3_off;
    let doff = usize::from(h.tcp_hlen);
    let v6 = h.family == family::IPV6;
    let (src, dst) = reply_addrs(h);
    let tcp = rst_segment(h, doff, &src, &dst);
    swap_macs(pkt)?;
    let ip_len = if v6 {
        let ip = pkt.ptr_at_checked::<[u8; 40]>(l3)?;
        let t = pkt.ptr_at_checked::<[u8; 20]>(l3 + 40)?;
        // SAFETY: bounds-checked by ptr_at_checked.
        unsafe {
            *ip = ipv6_header(20, ipproto::TCP, 64, src, dst);
            *t = tcp;
        }
        60
    } else {
        let ip = pkt.ptr_at_checked::<[u8; 20]>(l3)?;
        let t = pkt.ptr_at_checked::<[u8; 20]>(l3 + 20)?;
        // SAFETY: bounds-checked by ptr_at_checked.
        unsafe {
            *ip = ipv4_header(40, ipproto::TCP, first4(&src), first4(&dst));
            *t = tcp;
        }
        40
    };
    trim(ctx, l3 + ip_len)
}

fn first4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

#[inline(always)]
fn pkt_byte(pkt: &Packet, off: usize) -> Option<&u8> {
    // SAFETY: bounds-checked by ptr_at_checked.
    pkt.ptr_at_checked::<u8>(off).map(|p| unsafe { &*p })
}

/// Cut the frame to `len` bytes.
#[inline(always)]
fn trim(ctx: &XdpContext, len: usize) -> Option<()> {
    let cur = ctx.data_end() - ctx.data();
    if cur > len {
        let delta = -((cur - len) as i32);
        // SAFETY: the helper checks the context and the delta.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return None;
        }
    }
    Some(())
}

/// (type, code, rest-of-header word) of the error for `with`.
#[inline(always)]
fn icmp_kind(v6: bool, with: RejectWith, pointer: u32) -> (u8, u8, u32) {
    if v6 {
        match with {
            RejectWith::NetUnreachable => (1, 0, 0),
            RejectWith::AdminProhibited => (1, 1, 0),
            RejectWith::HostUnreachable => (1, 3, 0),
            // "Unrecognized Next Header" pointing at the protocol field.
            RejectWith::ProtoUnreachable => (4, 1, pointer),
            _ => (1, 4, 0),
        }
    } else {
        match with {
            RejectWith::NetUnreachable => (3, 0, 0),
            RejectWith::HostUnreachable => (3, 1, 0),
            RejectWith::ProtoUnreachable => (3, 2, 0),
            RejectWith::AdminProhibited => (3, 13, 0),
            _ => (3, 3, 0),
        }
    }
}

/// How an ICMP error for `h` is laid out: bytes inserted before the
/// offending packet (new IP header + ICMP header), and bytes of it quoted.
struct IcmpPlan {
    ip_hdr_len: usize,
    grow: usize,
    quote: usize,
    ty: u8,
    code: u8,
    rest: u32,
}

#[inline(always)]
fn icmp_plan(h: &Headers, with: RejectWith, frame_len: usize) -> Option<IcmpPlan> {
    let v6 = h.family == family::IPV6;
    let l2 = h.l3_off;
    if l2 > MAX_L2 {
        return None;
    }
    let ip_hdr_len = if v6 { 40 } else { 20 };
    let grow = ip_hdr_len + 8;
    let available = frame_len.saturating_sub(l2);
    let quote = if v6 {
        let want = if h.ip_len == 0 { available } else { h.ip_len };
        min(min(want, available), IPV6_MIN_MTU - grow)
    } else {
        // The offending IP header and the first 8 bytes of its payload.
        let want = h.l4_off.saturating_sub(l2) + 8;
        min(min(want, h.ip_len), available)
    };
    let pointer = h.nh_off.saturating_sub(l2) as u32;
    let (ty, code, rest) = icmp_kind(v6, with, pointer);
    Some(IcmpPlan {
        ip_hdr_len,
        grow,
        quote,
        ty,
        code,
        rest,
    })
}

/// The new IP header of the error (in the first `plan.ip_hdr_len` bytes).
#[inline(always)]
fn icmp_ip_header(h: &Headers, plan: &IcmpPlan, src: &[u8; 16], dst: &[u8; 16]) -> [u8; 40] {
    let msg_len = 8 + plan.quote;
    if h.family == family::IPV6 {
        ipv6_header(msg_len as u16, ipproto::ICMPV6, 64, *src, *dst)
    } else {
        let mut out = [0u8; 40];
        out[..20].copy_from_slice(&ipv4_header(
            (20 + msg_len) as u16,
            ipproto::ICMP,
            first4(src),
            first4(dst),
        ));
        out
    }
}

/// The ICMP header, checksummed over the header and `quote_sum` (the sum
/// of the quoted bytes).
#[inline(always)]
fn icmp_header(
    h: &Headers,
    plan: &IcmpPlan,
    src: &[u8; 16],
    dst: &[u8; 16],
    quote_sum: u32,
) -> [u8; 8] {
    let v6 = h.family == family::IPV6;
    let mut icmp = [0u8; 8];
    icmp[0] = plan.ty;
    icmp[1] = plan.code;
    icmp[4..8].copy_from_slice(&plan.rest.to_be_bytes());
    let msg_len = (8 + plan.quote) as u32;
    let mut sum = if v6 {
        pseudo_sum(true, src, dst, ipproto::ICMPV6, msg_len)
    } else {
        0
    };
    sum = add_bytes(sum, &icmp) + quote_sum;
    icmp[2..4].copy_from_slice(&finish(sum).to_be_bytes());
    icmp
}

/// Grow the frame in front of the offending IP packet by a new IP header
/// and an ICMP header, so the old packet becomes the quote; cut the quote
/// to its allowed length and checksum the message.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, h: &Headers, with: RejectWith) -> Option<()> {
    let l2 = h.l3_off;
    let frame_len = ctx.data_end() - ctx.data();
    let plan = icmp_plan(h, with, frame_len)?;
    // Keep the link-layer header (with VLAN tags), addresses swapped.
    let l2_hdr = {
        let pkt = Packet::new(ctx.data(), ctx.data_end(), frame_len);
        let src = pkt.ptr_at_checked::<[u8; MAX_L2]>(0)?;
        // SAFETY: bounds-checked (every frame here holds an IP header after
        // its link layer, so 22 bytes are there).
        let mut hdr = unsafe { *src };
        let old = hdr;
        hdr[..6].copy_from_slice(&old[6..12]);
        hdr[6..12].copy_from_slice(&old[..6]);
        hdr
    };
    // SAFETY: the helper checks the context and the delta; it invalidates
    // every packet pointer, so the frame is re-read below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(plan.grow as i32)) } != 0 {
        return None;
    }
    trim(ctx, l2 + plan.grow + plan.quote)?;
    let pkt = Packet::new(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data());
    let (src, dst) = reply_addrs(h);
    let head = pkt.ptr_at_checked::<[u8; MAX_L2]>(0)?;
    // SAFETY: bounds-checked; only the first `l2` bytes are the link layer,
    // the rest is overwritten by the IP header next.
    unsafe { *head = l2_hdr };
    let ip = icmp_ip_header(h, &plan, &src, &dst);
    if plan.ip_hdr_len == 40 {
        let at = pkt.ptr_at_checked::<[u8; 40]>(l2)?;
        // SAFETY: bounds-checked by ptr_at_checked.
        unsafe { *at = ip };
    } else {
        let at = pkt.ptr_at_checked::<[u8; 20]>(l2)?;
        // SAFETY: bounds-checked by ptr_at_checked.
        unsafe { *at = first20(&ip) };
    }
    let icmp_off = l2 + plan.ip_hdr_len;
    let quote_sum = add_quote::<XdpFrame>(ctx.ctx.cast(), icmp_off + 8, plan.quote)?;
    let hdr = pkt.ptr_at_checked::<[u8; 8]>(icmp_off)?;
    // SAFETY: bounds-checked by ptr_at_checked.
    unsafe { *hdr = icmp_header(h, &plan, &src, &dst, quote_sum) };
    Some(())
}

fn first20(a: &[u8; 40]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(&a[..20]);
    out
}

/// Bytes summed per step of `add_quote`.
const CHUNK: usize = 64;
const _: () = assert!(CHUNK.is_power_of_two());
/// Steps for the longest quote (1232 bytes).
const MAX_CHUNKS: usize = (IPV6_MIN_MTU - 48).div_ceil(CHUNK);

/// Where `add_quote` copies the frame's bytes from.
trait Frame {
    /// Copy `n` bytes at `off` into `buf`; 0 on success.
    ///
    /// # Safety
    /// `ctx` is the program's context of this kind; `buf` holds `n` bytes.
    unsafe fn load(ctx: *mut c_void, off: u32, buf: *mut c_void, n: u32) -> i64;
}

struct XdpFrame;
impl Frame for XdpFrame {
    unsafe fn load(ctx: *mut c_void, off: u32, buf: *mut c_void, n: u32) -> i64 {
        // SAFETY: per the trait; the helper bounds-checks the frame.
        unsafe { bpf_xdp_load_bytes(ctx.cast(), off, buf, n) }
    }
}

struct SkbFrame;
impl Frame for SkbFrame {
    unsafe fn load(ctx: *mut c_void, off: u32, buf: *mut c_void, n: u32) -> i64 {
        // SAFETY: per the trait; the helper bounds-checks the packet.
        unsafe { bpf_skb_load_bytes(ctx.cast_const(), off, buf, n) }
    }
}

/// The state of one `add_quote`, on its stack; `bpf_loop` hands its address
/// to every step.
#[repr(C)]
struct Quote {
    ctx: *mut c_void,
    off: u32,
    len: u32,
    sum: u32,
    failed: u32,
}

/// Sum `len` bytes of the frame from `off`, copied out chunk by chunk into
/// a zeroed buffer: a short last chunk sums as if padded with zeros. The
/// chunks run under `bpf_loop` (5.17), so the verifier checks one chunk
/// once; an unrolled loop of 20 chunks, each with its own way out, is more
/// than the 6.1 verifier can walk within its million instructions.
#[inline(always)]
fn add_quote<F: Frame>(ctx: *mut c_void, off: usize, len: usize) -> Option<u32> {
    let mut q = Quote {
        ctx,
        off: off as u32,
        len: len as u32,
        sum: 0,
        failed: 0,
    };
    // SAFETY: `quote_step::<F>` is a BPF function taking `Quote`, as given.
    unsafe {
        bpf_loop(
            MAX_CHUNKS as u32,
            (quote_step::<F> as *const ()).cast_mut().cast::<c_void>(),
            core::ptr::from_mut(&mut q).cast(),
            0,
        );
    }
    (q.failed == 0).then_some(q.sum)
}

/// One chunk of `add_quote`: 0 goes on, 1 stops (done, or failed).
#[inline(never)]
extern "C" fn quote_step<F: Frame>(index: u64, q: *mut c_void) -> i64 {
    // SAFETY: `q` is the `Quote` that `add_quote` handed `bpf_loop`.
    let q = unsafe { &mut *q.cast::<Quote>() };
    let at = (index as usize % MAX_CHUNKS) * CHUNK;
    let len = q.len as usize;
    if at >= len {
        return 1;
    }
    // 1 <= n <= CHUNK, which the verifier must see at the load: hide the
    // value from the compiler (it would drop any check it can prove), then
    // bound it by arithmetic. A compare-and-branch is not enough for the
    // 6.1 verifier, which does not take `n != 0` as a lower bound.
    let n = min(len - at, CHUNK);
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = (n.wrapping_sub(1) & (CHUNK - 1)) + 1;
    // The classifier's per-CPU scratch bitmap is free by now.
    let Some(buf) = FW_SCRATCH.get_ptr_mut(0) else {
        q.failed = 1;
        return 1;
    };
    // Zeroed in place, word by word: `*bytes = [0; CHUNK]` builds the zeros
    // on the stack first, and this frame adds to the caller's, which 6.1
    // holds to 512 bytes together.
    // SAFETY: per-CPU map slot of 128 bytes; CHUNK of it used.
    let words = unsafe { &mut *buf.cast::<[u64; CHUNK / 8]>() };
    for w in words.iter_mut() {
        // SAFETY: a word of the slot above.
        unsafe { core::ptr::write_volatile(w, 0) };
    }
    // SAFETY: as above, the same bytes.
    let bytes = unsafe { &mut *buf.cast::<[u8; CHUNK]>() };
    // SAFETY: `ctx` is this program's context, of the kind `F` reads.
    if unsafe {
        F::load(
            q.ctx,
            q.off + at as u32,
            bytes.as_mut_ptr().cast(),
            n as u32,
        )
    } != 0
    {
        q.failed = 1;
        return 1;
    }
    // Summed pair by pair in order (volatile reads): left to itself the
    // compiler loads all 64 bytes first and spills them to this frame.
    let mut sum = q.sum;
    for pair in bytes.chunks_exact(2) {
        // SAFETY: reads of the slot above.
        let (hi, lo) = unsafe {
            (
                core::ptr::read_volatile(&pair[0]),
                core::ptr::read_volatile(&pair[1]),
            )
        };
        sum += (u32::from(hi) << 8) | u32::from(lo);
    }
    q.sum = sum;
    0
}

#[inline(always)]
fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}
