//! TCP sequence-window tracking: netfilter's `tcp_in_window`
//! (`net/netfilter/nf_conntrack_proto_tcp.c`) without SACK. Each side's
//! `TcpWindow` records what it has sent and what the other side allows it
//! to send; a segment whose sequence or acknowledgement numbers fall outside
//! those bounds is not part of the flow (a blind RST, injected data) and is
//! INVALID.

use super::{CtState, NO_WSCALE, TcpSeg, TcpWindow, WIN_FLAG_SCALE, tcp_flags};

/// netfilter's `MAXACKWINCONST`: how far back an ACK may lag when the
/// sender's window is still small.
pub const MAX_ACK_WINDOW: u32 = 66_000;
/// Largest shift RFC 7323 allows.
const MAX_WSCALE: u8 = 14;

/// `a` comes before `b` in sequence space (mod 2^32).
#[must_use]
#[expect(clippy::cast_possible_wrap, reason = "serial-number arithmetic")]
#[inline(always)]
pub const fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b` in sequence space (mod 2^32).
#[must_use]
#[inline(always)]
pub const fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Sequence number just past the segment: SYN and FIN count one each.
#[must_use]
#[inline(always)]
pub const fn seg_end(seg: &TcpSeg) -> u32 {
    let mut end = seg.seq.wrapping_add(seg.len);
    if seg.flags & tcp_flags::SYN != 0 {
        end = end.wrapping_add(1);
    }
    if seg.flags & tcp_flags::FIN != 0 {
        end = end.wrapping_add(1);
    }
    end
}

/// Record the window-scale option of a SYN on its side.
#[inline(always)]
const fn take_scale(w: &mut TcpWindow, wscale: u8) {
    if wscale == NO_WSCALE {
        w.scale = 0;
        w.flags &= !WIN_FLAG_SCALE;
    } else {
        w.scale = if wscale > MAX_WSCALE {
            MAX_WSCALE
        } else {
            wscale
        };
        w.flags |= WIN_FLAG_SCALE;
    }
}

/// The windows of a flow opened by `syn` (the opener is side 0).
#[must_use]
#[inline(always)]
pub const fn window_open(syn: &TcpSeg) -> [TcpWindow; 2] {
    let mut w = [TcpWindow {
        end: 0,
        maxend: 0,
        maxwin: 0,
        scale: 0,
        flags: 0,
        _pad: [0; 2],
    }; 2];
    let end = seg_end(syn);
    w[0].end = end;
    w[0].maxend = end;
    w[0].maxwin = if syn.win == 0 { 1 } else { syn.win as u32 };
    take_scale(&mut w[0], syn.wscale);
    w
}

/// Check `seg`, sent by the original side or not, against the windows of a
/// flow in `state` (its state before this segment). In window: update
/// `tcp` and return true. Out of window: return false, with `tcp` left in
/// an unspecified state, so callers pass a copy (`tcp_judge` does). The
/// windows are worked on in place: the datapath has no stack to spare for
/// copies.
#[must_use]
#[inline(always)]
pub const fn tcp_window(tcp: &mut [TcpWindow; 2], seg: &TcpSeg, original: bool, state: u8) -> bool {
    let [a, b] = tcp;
    // Plain branches, not an index: the datapath's verifier must see
    // constant offsets into the windows.
    let (sender, receiver) = if original { (a, b) } else { (b, a) };
    let syn = seg.flags & tcp_flags::SYN != 0;
    let has_ack = seg.flags & tcp_flags::ACK != 0;
    let rst = seg.flags & tcp_flags::RST != 0;
    let win = seg.win as u32;
    let mut seq = seg.seq;
    let mut ack = seg.ack;
    let mut end = seg_end(seg);

    if sender.maxwin == 0 {
        // The first segment from this side.
        if syn {
            // The SYN/ACK (or the peer's SYN of a simultaneous open).
            sender.end = end;
            sender.maxend = end;
            sender.maxwin = if win == 0 { 1 } else { win };
            take_scale(sender, seg.wscale);
            // RFC 7323: scaling only if both sides offered it.
            if sender.flags & WIN_FLAG_SCALE == 0 || receiver.flags & WIN_FLAG_SCALE == 0 {
                sender.scale = 0;
                receiver.scale = 0;
            }
            if !has_ack {
                return true;
            }
        } else {
            // Mid-stream: the history is lost, learn from this segment.
            sender.end = end;
            let swin = win << sender.scale;
            sender.maxwin = if swin == 0 { 1 } else { swin };
            sender.maxend = end.wrapping_add(sender.maxwin);
            if receiver.maxwin == 0 {
                receiver.end = ack;
                receiver.maxend = ack;
            }
        }
    } else if syn
        && ((state == CtState::TcpSynSent as u8 && original)
            || (state == CtState::TcpSynRecv as u8 && !original))
        && after(end, sender.end)
    {
        // A new SYN (or SYN/ACK) with a later initial sequence number: the
        // side restarted the handshake (RFC 793 allows reinitialising).
        sender.end = end;
        sender.maxend = end;
        sender.maxwin = if win == 0 { 1 } else { win };
        take_scale(sender, seg.wscale);
    }

    if !has_ack || (rst && ack == 0) {
        // Nothing acknowledged (or a broken stack's RST|ACK with ack 0):
        // take it as acknowledging everything seen.
        ack = receiver.end;
    }
    if rst && seq == 0 && state == CtState::TcpSynSent as u8 {
        // A RST answering a SYN (RFC 793 reset generation).
        seq = sender.end;
        end = sender.end;
    }

    let max_ack_window = if sender.maxwin > MAX_ACK_WINDOW {
        sender.maxwin
    } else {
        MAX_ACK_WINDOW
    };
    let in_window = before(seq, sender.maxend.wrapping_add(1))
        && after(
            end,
            sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1),
        )
        && before(ack, receiver.end.wrapping_add(1))
        && after(
            ack,
            receiver.end.wrapping_sub(max_ack_window).wrapping_sub(1),
        );
    if !in_window {
        return false;
    }

    let win = if syn { win } else { win << sender.scale };
    if sender.maxwin < win {
        sender.maxwin = win;
    }
    if after(end, sender.end) {
        sender.end = end;
    }
    if receiver.maxwin != 0 && after(end, sender.maxend) {
        receiver.maxwin = receiver
            .maxwin
            .wrapping_add(end.wrapping_sub(sender.maxend));
    }
    if after(ack.wrapping_add(win), receiver.maxend.wrapping_sub(1)) {
        receiver.maxend = ack.wrapping_add(win);
        if win == 0 {
            receiver.maxend = receiver.maxend.wrapping_add(1);
        }
    }
    true
}

/// Attempts at each compare-and-swap of `store_windows`: only CPUs racing
/// on the same flow retry.
const STORE_ATTEMPTS: usize = 4;

/// Of two sequence numbers, the later.
#[inline(always)]
const fn seq_max(a: u32, b: u32) -> u32 {
    if after(b, a) { b } else { a }
}

/// Store the windows `tcp_window` computed for an accepted segment into
/// its entry's `cur`.
///
/// The segment was judged against a copy of the entry, and a connection's
/// two directions run on different CPUs (XDP for what arrives, TC for what
/// leaves, in parallel under bulk traffic). Overwriting the entry with the
/// copy would undo what the other direction recorded meanwhile: the
/// client's data would be forgotten and the server's ACK of it judged
/// INVALID. netfilter holds the entry's lock for this; the datapath instead
/// folds the copy in: every bound only moves forward (`end`, `maxend` in
/// sequence space, `maxwin` in size), so the later of the two values is
/// the right one whichever CPU wrote first. Each side is two words, each
/// folded with a compare-and-swap.
///
/// A SYN (`syn`) may restart a side's sequence space (`tcp_window`'s
/// reinitialisation), which folding would not undo; the handshake has no
/// concurrent traffic, so its windows are stored as computed. So is a side
/// the entry has not seen yet.
///
/// # Safety
/// `cur` points into a map value, 8-aligned, whose windows other CPUs
/// change only through this function.
#[inline(always)]
pub unsafe fn store_windows(cur: *mut [TcpWindow; 2], new: &[TcpWindow; 2], syn: bool) {
    let cur = cur.cast::<TcpWindow>();
    // Plain statements per side, not a loop over an index: the datapath's
    // verifier must see constant offsets.
    // SAFETY: the caller's windows; side 1 follows side 0.
    unsafe {
        store_side(cur, &new[0], syn);
        store_side(cur.add(1), &new[1], syn);
    }
}

/// One side of `store_windows`: `(end, maxend)` and `(maxwin, scale,
/// flags)` are one word each.
#[inline(always)]
unsafe fn store_side(cur: *mut TcpWindow, new: &TcpWindow, syn: bool) {
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "the caller's windows are 8-aligned (asserted with `CtEntry`)"
    )]
    let bounds = cur.cast::<u64>();
    // SAFETY: `TcpWindow` is 16 bytes, the second word is inside it.
    let sizes = unsafe { bounds.add(1) };
    // SAFETY: the caller's aligned words; a stale read only makes an
    // exchange below fail and retry.
    let replace = syn || unsafe { core::ptr::read_volatile(&raw const (*cur).maxwin) } == 0;
    // SAFETY: the caller's aligned words, changed only atomically.
    unsafe {
        crate::atomic::update(bounds, STORE_ATTEMPTS, |old| {
            let [end, maxend] = split(old);
            Some(if replace {
                join(new.end, new.maxend)
            } else {
                join(seq_max(end, new.end), seq_max(maxend, new.maxend))
            })
        });
    }
    // Padding stays zero.
    let tail = u32::from_ne_bytes([new.scale, new.flags, 0, 0]);
    // SAFETY: as above.
    unsafe {
        crate::atomic::update(sizes, STORE_ATTEMPTS, |old| {
            let [maxwin, _] = split(old);
            let grown = new.maxwin > maxwin;
            Some(join(
                if replace || grown { new.maxwin } else { maxwin },
                tail,
            ))
        });
    }
}

/// The two `u32` fields stored in one word, in memory order.
#[inline(always)]
const fn split(word: u64) -> [u32; 2] {
    // SAFETY: any 8 bytes are two valid `u32`s.
    unsafe { core::mem::transmute::<u64, [u32; 2]>(word) }
}

/// The word holding two `u32` fields, in memory order.
#[inline(always)]
const fn join(first: u32, second: u32) -> u64 {
    // SAFETY: any 8 bytes are a valid `u64`.
    unsafe { core::mem::transmute::<[u32; 2], u64>([first, second]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::tcp_flags::{ACK, RST, SYN};

    fn seg(seq: u32, ack: u32, len: u32, win: u16, flags: u8) -> TcpSeg {
        TcpSeg {
            seq,
            ack,
            len,
            win,
            flags,
            wscale: NO_WSCALE,
        }
    }

    #[test]
    fn serial_number_comparisons_wrap() {
        assert!(before(0xffff_fff0, 5));
        assert!(after(5, 0xffff_fff0));
        assert!(!before(7, 7));
        assert!(!after(7, 7));
    }

    #[test]
    fn syn_and_fin_count_one() {
        assert_eq!(seg_end(&seg(10, 0, 0, 1, SYN)), 11);
        assert_eq!(seg_end(&seg(10, 0, 5, 1, ACK | tcp_flags::FIN)), 16);
        assert_eq!(seg_end(&seg(u32::MAX, 0, 2, 1, ACK)), 1);
    }

    #[test]
    fn scaling_needs_both_sides() {
        let mut syn = seg(100, 0, 0, 1000, SYN);
        syn.wscale = 7;
        let mut w = window_open(&syn);
        assert_eq!(w[0].scale, 7);
        // The SYN/ACK does not offer scaling: neither side scales.
        let synack = seg(5000, 101, 0, 2000, SYN | ACK);
        assert!(tcp_window(
            &mut w,
            &synack,
            false,
            CtState::TcpSynSent as u8
        ));
        assert_eq!((w[0].scale, w[1].scale), (0, 0));
        // Both offer it: both keep their own.
        let mut w = window_open(&syn);
        let mut synack = synack;
        synack.wscale = 3;
        assert!(tcp_window(
            &mut w,
            &synack,
            false,
            CtState::TcpSynSent as u8
        ));
        assert_eq!((w[0].scale, w[1].scale), (7, 3));
    }

    #[test]
    fn out_of_window_segments_are_refused() {
        let mut w = window_open(&seg(100, 0, 0, 1000, SYN));
        assert!(tcp_window(
            &mut w,
            &seg(5000, 101, 0, 2000, SYN | ACK),
            false,
            CtState::TcpSynSent as u8
        ));
        // Acknowledges data the opener never sent.
        assert!(!tcp_window(
            &mut w.clone(),
            &seg(5001, 90_000, 0, 2000, ACK),
            false,
            CtState::TcpSynRecv as u8
        ));
        // A RST far outside the window.
        assert!(!tcp_window(
            &mut w.clone(),
            &seg(5001 + 1_000_000, 101, 0, 0, RST | ACK),
            false,
            CtState::TcpSynRecv as u8
        ));
        // The opener's ACK of the SYN/ACK is fine.
        assert!(tcp_window(
            &mut w,
            &seg(101, 5001, 0, 1000, ACK),
            true,
            CtState::TcpSynRecv as u8
        ));
    }
}
