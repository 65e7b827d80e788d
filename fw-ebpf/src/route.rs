//! Is a packet for this host, or routed through it? Asked of the kernel's
//! routing table with `bpf_fib_lookup`, only for packets connection
//! tracking could not place (new flows), so established traffic pays
//! nothing.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_PROHIBIT, BPF_FIB_LKUP_RET_UNREACHABLE, bpf_fib_lookup as FibParams,
    },
    helpers::bpf_fib_lookup,
};
use fw_common::family;

use crate::{maps::FW_SCRATCH, parse::Headers};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Look `dst` up in the routing table as a packet from `src` arriving on
/// `ifindex`; returns the helper's answer.
#[inline(always)]
fn lookup(
    ctx: *mut core::ffi::c_void,
    h: &Headers,
    dst: &[u32; 4],
    src: &[u32; 4],
    ifindex: u32,
) -> Option<u32> {
    // The parameters are 64 bytes: kept in the per-CPU scratch slot, which
    // is free before classification, rather than on the small stack.
    let scratch = FW_SCRATCH.get_ptr_mut(0)?;
    let p = scratch.cast::<FibParams>();
    // SAFETY: the scratch slot (128 bytes) holds a `bpf_fib_lookup` (64);
    // zeroed, then filled field by field.
    unsafe {
        core::ptr::write_bytes(p.cast::<u8>(), 0, size_of::<FibParams>());
        (*p).family = if h.family == family::IPV4 {
            AF_INET
        } else {
            AF_INET6
        };
        (*p).l4_protocol = h.proto;
        (*p).sport = h.sport.to_be();
        (*p).dport = h.dport.to_be();
        (*p).ifindex = ifindex;
        if h.family == family::IPV4 {
            (*p).__bindgen_anon_3.ipv4_src = src[0];
            (*p).__bindgen_anon_4.ipv4_dst = dst[0];
        } else {
            (*p).__bindgen_anon_3.ipv6_src = *src;
            (*p).__bindgen_anon_4.ipv6_dst = *dst;
        }
        let ret = bpf_fib_lookup(ctx, p, size_of::<FibParams>() as i32, 0);
        (ret >= 0).then_some(ret as u32)
    }
}

/// Is the packet `h`, arriving on `ifindex`, routed through this host
/// (rather than addressed to it)? A host that does not forward on that
/// interface answers "forwarding disabled": then nothing is forwarded.
#[inline(always)]
pub fn is_forwarded(ctx: *mut core::ffi::c_void, h: &Headers, ifindex: u32) -> bool {
    match lookup(ctx, h, &h.dst, &h.src, ifindex) {
        Some(r) => !matches!(
            r,
            BPF_FIB_LKUP_RET_NOT_FWDED
                | BPF_FIB_LKUP_RET_FWD_DISABLED
                | BPF_FIB_LKUP_RET_BLACKHOLE
                | BPF_FIB_LKUP_RET_UNREACHABLE
                | BPF_FIB_LKUP_RET_PROHIBIT
        ),
        None => false,
    }
}

/// Was the packet `h`, leaving by `ifindex`, sent by this host (its source
/// is a local address), rather than forwarded?
///
/// Asked as "would the source address, arriving on this interface, be
/// delivered locally?": an output-mode lookup is pinned to the interface
/// and misses local addresses of the others. A host that does not forward
/// answers "forwarding disabled": everything it sends is its own.
#[inline(always)]
pub fn source_is_local(ctx: *mut core::ffi::c_void, h: &Headers, ifindex: u32) -> bool {
    match lookup(ctx, h, &h.src, &h.dst, ifindex) {
        Some(r) => matches!(
            r,
            BPF_FIB_LKUP_RET_NOT_FWDED | BPF_FIB_LKUP_RET_FWD_DISABLED
        ),
        None => true,
    }
}
