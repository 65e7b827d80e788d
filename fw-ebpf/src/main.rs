//! Entry points. Each program only adapts its context and maps the
//! pipeline's verdict to the hook's return code; the logic lives in the
//! modules below (see docs/architecture.md for the stage order).
#![no_std]
#![no_main]

mod conntrack;
mod maps;
mod parse;
mod pipeline;
mod policy;
mod reject;
mod report;
mod route;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use fw_common::Direction;

use crate::{parse::Packet, pipeline::Verdict};

/// Ingress: every frame arriving on a guarded interface.
#[xdp]
pub fn fw_ingress(ctx: XdpContext) -> u32 {
    let len = ctx.data_end() - ctx.data();
    let pkt = Packet::new(ctx.data(), ctx.data_end(), len);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "interface indexes are 32-bit"
    )]
    let ifindex = ctx.ingress_ifindex() as u32;
    xdp_verdict(
        &ctx,
        pipeline::process(ctx.ctx.cast(), &pkt, Direction::Ingress, ifindex),
    )
}

/// The rules stage on ingress, tail-called by `fw_ingress` with the packet
/// parked in `FW_PENDING`. A program of its own, so the verifier checks the
/// classifier once instead of once per way a packet can reach it.
#[xdp]
pub fn fw_ingress_rules(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, pipeline::rules(Direction::Ingress))
}

#[inline(always)]
fn xdp_verdict(ctx: &XdpContext, verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Rules => {
            // SAFETY: the loader filled the slot with `fw_ingress_rules`;
            // if it is empty the call returns and the packet is dropped.
            unsafe { maps::FW_JUMP_XDP.tail_call(ctx, fw_common::maps::JUMP_RULES) };
            xdp_action::XDP_DROP
        }
        Verdict::Reject => {
            // SAFETY: the loader filled the slot with `fw_ingress_reject`;
            // if it is empty the call returns and the packet is dropped.
            unsafe { maps::FW_JUMP_XDP.tail_call(ctx, fw_common::maps::JUMP_REJECT) };
            xdp_action::XDP_DROP
        }
    }
}

/// The REJECT reply on ingress, tail-called by `fw_ingress` with the
/// packet parked in `FW_PENDING`.
#[xdp]
pub fn fw_ingress_reject(ctx: XdpContext) -> u32 {
    reject::xdp(&ctx)
}

/// Bytes of headers egress must see in the linear part of the skb: Ethernet,
/// two VLAN tags, IPv6 with extension headers and TCP with options.
const EGRESS_PULL: u32 = 256;

/// Egress: every packet the host sends out of a guarded interface.
#[classifier]
pub fn fw_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    // Locally built packets may keep headers outside the linear area;
    // pull them in so the parser sees them (no-op when already linear).
    let want = if len < EGRESS_PULL { len } else { EGRESS_PULL };
    if ((ctx.data_end() - ctx.data()) as u32) < want && ctx.pull_data(want).is_err() {
        // Cannot see the headers: let the packet go rather than break the
        // host's own traffic; it is counted as passed by nothing.
        return TC_ACT_OK;
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end(), len as usize);
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    tc_verdict(
        &ctx,
        pipeline::process(ctx.skb.skb.cast(), &pkt, Direction::Egress, ifindex),
    )
}

/// The rules stage on egress, tail-called by `fw_egress`.
#[classifier]
pub fn fw_egress_rules(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, pipeline::rules(Direction::Egress))
}

#[inline(always)]
fn tc_verdict(ctx: &TcContext, verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Rules => {
            // SAFETY: the loader filled the slot with `fw_egress_rules`;
            // if it is empty the call returns and the packet is dropped.
            unsafe { maps::FW_JUMP_TC.tail_call(ctx, fw_common::maps::JUMP_RULES) };
            TC_ACT_SHOT
        }
        Verdict::Reject => {
            // SAFETY: the loader filled the slot with `fw_egress_reject`;
            // if it is empty the call returns and the packet is dropped.
            unsafe { maps::FW_JUMP_TC.tail_call(ctx, fw_common::maps::JUMP_REJECT) };
            TC_ACT_SHOT
        }
    }
}

/// The REJECT reply on egress, tail-called by `fw_egress` with the packet
/// parked in `FW_PENDING`.
#[classifier]
pub fn fw_egress_reject(ctx: TcContext) -> i32 {
    reject::tc(&ctx)
}

/// Passes every frame. Not part of the firewall: the floor of the
/// benchmarks, and in tests the program a veth peer must run to receive the
/// frames fw sends back with `XDP_TX` (a veth only delivers those to a peer
/// in XDP mode; real NICs need nothing).
#[xdp]
pub fn fw_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
