//! One packet against one connection entry: what the datapath runs for
//! every tracked packet, kept here so the host tests drive exactly the same
//! code with an injected clock.

use super::{
    CT_FLAG_LIBERAL, CT_FLAG_SEEN_REPLY, CtEntry, CtState, TcpSeg, TcpStep, TcpWindow, Timeouts,
    expiry, tcp_is_pure_syn, tcp_transition_raw, window::store_windows, window::tcp_window,
    window::window_open,
};

/// Windows of a flow that tracks none (UDP, ICMP, picked-up TCP).
pub const ZERO_WINDOW: TcpWindow = TcpWindow {
    end: 0,
    maxend: 0,
    maxwin: 0,
    scale: 0,
    flags: 0,
    _pad: [0; 2],
};
use crate::Direction;

/// Judge a TCP segment against a flow's entry: netfilter's state table,
/// then the sequence window. Changes nothing; on `TcpStep::To`, `windows`
/// receives the flow's windows as they will be once the segment is
/// accepted, for `ct_apply` to store.
#[must_use]
#[inline(always)]
pub const fn tcp_judge(
    e: &CtEntry,
    seg: &TcpSeg,
    original: bool,
    windows: &mut [TcpWindow; 2],
) -> TcpStep {
    let step = tcp_transition_raw(e.state, original, seg.flags);
    let TcpStep::To(next) = step else {
        return step;
    };
    if next as u8 == CtState::TcpSynSent as u8
        && (e.state == CtState::TcpTimeWait as u8 || e.state == CtState::TcpClose as u8)
        && tcp_is_pure_syn(seg.flags)
    {
        return TcpStep::Reopen;
    }
    *windows = e.tcp;
    if e.flags & CT_FLAG_LIBERAL != 0 || tcp_window(windows, seg, original, e.state) {
        step
    } else {
        TcpStep::Invalid
    }
}

/// The windows `tcp_judge` computed for an accepted segment, for
/// `ct_apply` to store.
#[derive(Clone, Copy)]
pub struct JudgedWindows<'a> {
    pub windows: &'a [TcpWindow; 2],
    /// The segment carried SYN: its windows replace the entry's rather
    /// than being folded into them (`store_windows`).
    pub syn: bool,
}

/// Record an accepted packet on its entry: counters, state, expiry under
/// the policy's `timeouts`, and for TCP the windows `tcp_judge` computed
/// (when the state table moved the flow).
#[inline(always)]
pub fn ct_apply(
    e: &mut CtEntry,
    original: bool,
    next: CtState,
    now: u64,
    timeouts: &Timeouts,
    bytes: u64,
    windows: Option<JudgedWindows<'_>>,
) {
    if let Some(w) = windows {
        // SAFETY: the entry's own windows, 8-aligned (asserted with
        // `CtEntry`); every writer goes through `store_windows`.
        unsafe { store_windows(&raw mut e.tcp, w.windows, w.syn) };
    }
    // Two plain branches rather than an index: the verifier must see every
    // offset into the entry as a constant.
    if original {
        e.packets[0] += 1;
        e.bytes[0] += bytes;
    } else {
        e.packets[1] += 1;
        e.bytes[1] += bytes;
    }
    e.last_seen_ns = now;
    e.state = next as u8;
    e.expires_ns = expiry(timeouts, next as u8, now);
    if !original {
        e.flags |= CT_FLAG_SEEN_REPLY;
    }
}

/// Fill `e` as the entry of a new flow whose first packet the policy
/// accepted. A TCP flow opened by a SYN (`tcp`) tracks sequence windows
/// from it; one picked up mid-stream does not (`CT_FLAG_LIBERAL`). Fills in
/// place: the datapath builds entries in per-CPU scratch space, its stack
/// is too small to hold them.
#[expect(clippy::too_many_arguments, reason = "one packet's worth of facts")]
#[inline(always)]
pub fn ct_init(
    e: &mut CtEntry,
    dir: Direction,
    state: CtState,
    rule: u16,
    now: u64,
    timeouts: &Timeouts,
    bytes: u64,
    flags: u8,
    tcp: Option<&TcpSeg>,
) {
    e.flags = flags;
    match tcp {
        Some(seg) if tcp_is_pure_syn(seg.flags) => e.tcp = window_open(seg),
        Some(_) => {
            e.flags |= CT_FLAG_LIBERAL;
            e.tcp = [ZERO_WINDOW; 2];
        }
        None => e.tcp = [ZERO_WINDOW; 2],
    }
    e.created_ns = now;
    e.last_seen_ns = now;
    e.expires_ns = expiry(timeouts, state as u8, now);
    e.packets = [1, 0];
    e.bytes = [bytes, 0];
    e.state = state as u8;
    e.origin = dir as u8;
    // Scratch memory is reused: clear the padding too, so entries are
    // byte-for-byte deterministic.
    #[allow(clippy::used_underscore_binding, reason = "clearing padding")]
    {
        e._pad0 = 0;
        e._pad1 = [0; 2];
    }
    e.rule = rule;
}

/// The datapath's TCP tracking on a host-side table of one flow, with a
/// clock the test moves: the TCP state machine through every state and
/// every way out of it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{
        DEFAULT_TIMEOUTS, NO_WSCALE, is_expired,
        tcp_flags::{ACK, FIN, PSH, RST, SYN},
    };

    /// `ct_init` into a fresh value (the host has room on its stack).
    #[must_use]
    #[expect(clippy::too_many_arguments, reason = "one packet's worth of facts")]
    fn ct_new(
        dir: Direction,
        state: CtState,
        rule: u16,
        now: u64,
        timeouts: &Timeouts,
        bytes: u64,
        flags: u8,
        tcp: Option<&TcpSeg>,
    ) -> CtEntry {
        let mut e = CtEntry {
            created_ns: 0,
            last_seen_ns: 0,
            expires_ns: 0,
            packets: [0; 2],
            bytes: [0; 2],
            tcp: [ZERO_WINDOW; 2],
            state: 0,
            origin: 0,
            flags: 0,
            _pad0: 0,
            rule: 0,
            _pad1: [0; 2],
        };
        ct_init(&mut e, dir, state, rule, now, timeouts, bytes, flags, tcp);
        e
    }

    const SEC: u64 = 1_000_000_000;
    /// Client and server initial sequence numbers; the client's wraps.
    const C_ISN: u32 = 0xffff_ff00;
    const S_ISN: u32 = 0x1000_0000;

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        New,
        Established,
        Invalid,
    }

    /// One flow as the datapath sees it: the host opened nothing, the
    /// client (original side) connects.
    struct Flow {
        entry: Option<CtEntry>,
        now: u64,
        timeouts: Timeouts,
    }

    impl Flow {
        fn new() -> Self {
            Self {
                entry: None,
                now: 1_000 * SEC,
                timeouts: DEFAULT_TIMEOUTS,
            }
        }

        fn advance(&mut self, secs: u64) {
            self.now += secs * SEC;
        }

        fn state(&self) -> CtState {
            self.entry
                .map_or(CtState::None, |e| CtState::from_u8(e.state))
        }

        /// The pipeline's steps for one accepted-by-policy segment.
        fn send(&mut self, original: bool, seg: TcpSeg) -> Seen {
            if let Some(e) = self.entry
                && is_expired(&e, self.now)
            {
                self.entry = None;
            }
            let Some(mut e) = self.entry else {
                if original && tcp_is_pure_syn(seg.flags) {
                    self.entry = Some(ct_new(
                        Direction::Ingress,
                        CtState::TcpSynSent,
                        1,
                        self.now,
                        &self.timeouts,
                        60,
                        0,
                        Some(&seg),
                    ));
                    return Seen::New;
                }
                return Seen::Invalid;
            };
            let mut windows = [ZERO_WINDOW; 2];
            let (next, window) = match tcp_judge(&e, &seg, original, &mut windows) {
                TcpStep::Invalid => return Seen::Invalid,
                TcpStep::Reopen => {
                    self.entry = None;
                    return self.send(original, seg);
                }
                TcpStep::Ignore => (CtState::from_u8(e.state), false),
                TcpStep::To(s) => (s, true),
            };
            let new = original && e.flags & CT_FLAG_SEEN_REPLY == 0;
            ct_apply(
                &mut e,
                original,
                next,
                self.now,
                &self.timeouts,
                60,
                window.then_some(JudgedWindows {
                    windows: &windows,
                    syn: seg.flags & SYN != 0,
                }),
            );
            self.entry = Some(e);
            if new { Seen::New } else { Seen::Established }
        }
    }

    fn seg(seq: u32, ack: u32, len: u32, flags: u8) -> TcpSeg {
        TcpSeg {
            seq,
            ack,
            len,
            win: 64_000,
            flags,
            wscale: NO_WSCALE,
        }
    }

    /// Handshake to ESTABLISHED; returns the next (client, server) seq.
    fn establish(f: &mut Flow) -> (u32, u32) {
        let c = C_ISN;
        let s = S_ISN;
        assert_eq!(f.send(true, seg(c, 0, 0, SYN)), Seen::New);
        assert_eq!(f.state(), CtState::TcpSynSent);
        assert_eq!(
            f.send(false, seg(s, c.wrapping_add(1), 0, SYN | ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpSynRecv);
        assert_eq!(
            f.send(true, seg(c.wrapping_add(1), s + 1, 0, ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpEstablished);
        (c.wrapping_add(1), s + 1)
    }

    #[test]
    fn handshake_data_across_the_wrap_and_both_fins() {
        let mut f = Flow::new();
        let (mut c, mut s) = establish(&mut f);
        // 3 × 100 bytes from the client cross 2^32.
        for _ in 0..3 {
            assert_eq!(f.send(true, seg(c, s, 100, ACK | PSH)), Seen::Established);
            c = c.wrapping_add(100);
            assert_eq!(f.send(false, seg(s, c, 0, ACK)), Seen::Established);
        }
        assert!(c < 1000, "the client's sequence wrapped");
        assert_eq!(f.send(false, seg(s, c, 500, ACK | PSH)), Seen::Established);
        s += 500;
        // The client closes first: FIN_WAIT, the server's FIN: LAST_ACK,
        // the final ACK: TIME_WAIT.
        assert_eq!(f.send(true, seg(c, s, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpFinWait);
        c = c.wrapping_add(1);
        assert_eq!(f.send(false, seg(s, c, 0, ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpCloseWait);
        assert_eq!(f.send(false, seg(s, c, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpLastAck);
        s += 1;
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpTimeWait);
        // TIME_WAIT lasts 120 s, then the entry is gone.
        f.advance(120);
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Established);
        f.advance(121);
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Invalid);
        assert_eq!(f.state(), CtState::None);
    }

    #[test]
    fn both_fins_at_once_and_close_timeout() {
        let mut f = Flow::new();
        let (c, s) = establish(&mut f);
        assert_eq!(f.send(true, seg(c, s, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpFinWait);
        // The server's FIN crosses the client's.
        assert_eq!(f.send(false, seg(s, c, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpLastAck);
        assert_eq!(
            f.send(true, seg(c.wrapping_add(1), s + 1, 0, ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpTimeWait);
    }

    #[test]
    fn rst_in_window_closes_and_out_of_window_is_invalid_and_harmless() {
        let mut f = Flow::new();
        let (c, s) = establish(&mut f);
        let before = f.entry;
        // A blind RST a megabyte away.
        assert_eq!(
            f.send(false, seg(s.wrapping_add(1 << 20), 0, 0, RST)),
            Seen::Invalid
        );
        assert_eq!(f.entry, before, "the entry is untouched");
        // Data beyond what the receiver allows.
        assert_eq!(
            f.send(true, seg(c.wrapping_add(200_000), s, 10, ACK)),
            Seen::Invalid
        );
        // An ACK for data never sent.
        assert_eq!(
            f.send(true, seg(c, s.wrapping_add(100_000), 0, ACK)),
            Seen::Invalid
        );
        assert_eq!(f.entry, before);
        // The real one closes, CLOSE lasts 10 s.
        assert_eq!(f.send(false, seg(s, 0, 0, RST)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpClose);
        f.advance(11);
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Invalid);
    }

    #[test]
    fn refused_connection_rst_answering_the_syn() {
        let mut f = Flow::new();
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        // RST|ACK acknowledging the SYN, seq 0 (RFC 793).
        assert_eq!(
            f.send(false, seg(0, C_ISN.wrapping_add(1), 0, RST | ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpClose);
        // A RST|ACK acknowledging some other SYN is not for us.
        let mut f = Flow::new();
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        assert_eq!(
            f.send(false, seg(0, C_ISN.wrapping_add(500_000), 0, RST | ACK)),
            Seen::Invalid
        );
        assert_eq!(f.state(), CtState::TcpSynSent);
    }

    #[test]
    fn syn_retransmits_stay_new_and_expire_after_syn_sent_timeout() {
        let mut f = Flow::new();
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        f.advance(3);
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        assert_eq!(f.state(), CtState::TcpSynSent);
        // A new ISN re-initialises the opener's window.
        assert_eq!(
            f.send(true, seg(C_ISN.wrapping_add(1000), 0, 0, SYN)),
            Seen::New
        );
        assert_eq!(
            f.send(false, seg(S_ISN, C_ISN.wrapping_add(1001), 0, SYN | ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpSynRecv);
        // SYN_RECV lasts 60 s.
        f.advance(61);
        assert_eq!(
            f.send(true, seg(C_ISN.wrapping_add(1001), S_ISN + 1, 0, ACK)),
            Seen::Invalid
        );
        // SYN_SENT lasts 120 s.
        let mut f = Flow::new();
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        f.advance(120);
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        assert!(f.entry.is_some());
        f.advance(121);
        assert!(is_expired(&f.entry.unwrap(), f.now));
    }

    #[test]
    fn simultaneous_open() {
        let mut f = Flow::new();
        assert_eq!(f.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        // The peer's own SYN crosses ours: SYN_SENT2.
        assert_eq!(f.send(false, seg(S_ISN, 0, 0, SYN)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpSynSent2);
        assert_eq!(
            f.send(true, seg(C_ISN, S_ISN + 1, 0, SYN | ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpSynRecv);
        // Each side acknowledges the other's SYN; as in netfilter, the
        // opener's ACK completes it.
        assert_eq!(
            f.send(false, seg(S_ISN + 1, C_ISN.wrapping_add(1), 0, ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpSynRecv);
        assert_eq!(
            f.send(true, seg(C_ISN.wrapping_add(1), S_ISN + 1, 0, ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpEstablished);
    }

    /// Both directions judged against the same copy of the entry, as two
    /// CPUs do under bulk traffic, then stored in either order: neither
    /// side's progress may be lost, or the ACKs that follow are INVALID.
    #[test]
    fn concurrent_directions_keep_both_sides_progress() {
        for client_stored_first in [true, false] {
            let mut f = Flow::new();
            let (c, s) = establish(&mut f);
            let mut entry = f.entry.unwrap();
            let snapshot = entry;
            let judge = |original, seg: TcpSeg| {
                let mut windows = [ZERO_WINDOW; 2];
                assert_eq!(
                    tcp_judge(&snapshot, &seg, original, &mut windows),
                    TcpStep::To(CtState::TcpEstablished)
                );
                windows
            };
            let client = judge(true, seg(c, s, 1000, ACK | PSH));
            let server = judge(false, seg(s, c, 500, ACK | PSH));
            let store = |e: &mut CtEntry, original, windows: &[TcpWindow; 2]| {
                let judged = JudgedWindows {
                    windows,
                    syn: false,
                };
                let next = CtState::TcpEstablished;
                ct_apply(e, original, next, f.now, &f.timeouts, 60, Some(judged));
            };
            if client_stored_first {
                store(&mut entry, true, &client);
                store(&mut entry, false, &server);
            } else {
                store(&mut entry, false, &server);
                store(&mut entry, true, &client);
            }
            assert_eq!(
                entry.tcp[0].end,
                c.wrapping_add(1000),
                "{client_stored_first}"
            );
            assert_eq!(entry.tcp[1].end, s + 500, "{client_stored_first}");
            f.entry = Some(entry);
            // Each side acknowledges all the other sent.
            assert_eq!(
                f.send(false, seg(s + 500, c.wrapping_add(1000), 0, ACK)),
                Seen::Established,
                "{client_stored_first}"
            );
            assert_eq!(
                f.send(true, seg(c.wrapping_add(1000), s + 500, 0, ACK)),
                Seen::Established,
                "{client_stored_first}"
            );
        }
    }

    /// A SYN that restarts the handshake with an earlier bound than the
    /// entry holds still replaces it: folding would keep the old one.
    #[test]
    fn a_syn_stores_its_windows_as_judged() {
        let mut e = ct_new(
            Direction::Ingress,
            CtState::TcpSynSent,
            1,
            SEC,
            &DEFAULT_TIMEOUTS,
            60,
            0,
            Some(&seg(1000, 0, 0, SYN)),
        );
        let mut w = e.tcp;
        w[0].maxend = 5;
        w[0].maxwin = 1;
        let judged = JudgedWindows {
            windows: &w,
            syn: true,
        };
        let next = CtState::TcpSynSent;
        ct_apply(&mut e, true, next, SEC, &DEFAULT_TIMEOUTS, 60, Some(judged));
        assert_eq!((e.tcp[0].maxend, e.tcp[0].maxwin), (5, 1));
        // Not a SYN: bounds only move forward.
        w[0].maxend = 3;
        let judged = JudgedWindows {
            windows: &w,
            syn: false,
        };
        let next = CtState::TcpEstablished;
        ct_apply(&mut e, true, next, SEC, &DEFAULT_TIMEOUTS, 60, Some(judged));
        assert_eq!(e.tcp[0].maxend, 5);
    }

    #[test]
    fn time_wait_reopens_as_a_new_connection() {
        let mut f = Flow::new();
        let (c, s) = establish(&mut f);
        assert_eq!(f.send(false, seg(s, c, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpFinWait);
        assert_eq!(f.send(true, seg(c, s + 1, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpLastAck);
        assert_eq!(
            f.send(false, seg(s + 1, c.wrapping_add(1), 0, ACK)),
            Seen::Established
        );
        assert_eq!(f.state(), CtState::TcpTimeWait);
        // Same ports, new ISN: NEW again, with fresh windows.
        assert_eq!(f.send(true, seg(7, 0, 0, SYN)), Seen::New);
        assert_eq!(f.state(), CtState::TcpSynSent);
        assert_eq!(f.entry.unwrap().tcp[0].end, 8);
        assert_eq!(f.entry.unwrap().tcp[1].maxwin, 0);
    }

    #[test]
    fn close_wait_and_established_timeouts() {
        let mut f = Flow::new();
        let (c, s) = establish(&mut f);
        // ESTABLISHED lasts five days.
        f.advance(432_000);
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Established);
        // The server half-closes: CLOSE_WAIT, 60 s.
        assert_eq!(f.send(false, seg(s, c, 0, FIN | ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpFinWait);
        assert_eq!(f.send(true, seg(c, s + 1, 0, ACK)), Seen::Established);
        assert_eq!(f.state(), CtState::TcpCloseWait);
        f.advance(60);
        assert_eq!(
            f.send(true, seg(c, s + 1, 10, ACK | PSH)),
            Seen::Established
        );
        f.advance(61);
        assert_eq!(
            f.send(true, seg(c.wrapping_add(10), s + 1, 0, ACK)),
            Seen::Invalid
        );
    }

    #[test]
    fn policy_timeouts_apply() {
        let mut f = Flow::new();
        f.timeouts[CtState::TcpEstablished as usize] = 30;
        let (c, s) = establish(&mut f);
        f.advance(31);
        assert_eq!(f.send(true, seg(c, s, 0, ACK)), Seen::Invalid);
    }

    #[test]
    fn window_scaling_widens_the_window() {
        let mut f = Flow::new();
        let mut syn = seg(C_ISN, 0, 0, SYN);
        syn.wscale = 7;
        assert_eq!(f.send(true, syn), Seen::New);
        let mut synack = seg(S_ISN, C_ISN.wrapping_add(1), 0, SYN | ACK);
        synack.wscale = 7;
        assert_eq!(f.send(false, synack), Seen::Established);
        let c = C_ISN.wrapping_add(1);
        let s = S_ISN + 1;
        // The client acks with window 1000 << 7 = 128 000.
        let mut ack = seg(c, s, 0, ACK);
        ack.win = 1000;
        assert_eq!(f.send(true, ack), Seen::Established);
        // The server may send 100 000 bytes ahead; unscaled (1000) it could not.
        let mut far = seg(s.wrapping_add(100_000), c, 10, ACK);
        far.win = 1000;
        assert_eq!(f.send(false, far), Seen::Established);

        let mut g = Flow::new();
        assert_eq!(g.send(true, seg(C_ISN, 0, 0, SYN)), Seen::New);
        assert_eq!(
            g.send(false, seg(S_ISN, C_ISN.wrapping_add(1), 0, SYN | ACK)),
            Seen::Established
        );
        let mut ack = seg(c, s, 0, ACK);
        ack.win = 1000;
        assert_eq!(g.send(true, ack), Seen::Established);
        // The server's maxend is now the client's ack + 64 000 from the SYN
        // exchange at most: 100 000 ahead is out.
        let mut far = seg(s.wrapping_add(100_000), c, 10, ACK);
        far.win = 1000;
        assert_eq!(g.send(false, far), Seen::Invalid);
    }

    #[test]
    fn picked_up_flows_are_liberal() {
        let e = ct_new(
            Direction::Egress,
            CtState::TcpEstablished,
            0,
            0,
            &DEFAULT_TIMEOUTS,
            0,
            0,
            Some(&seg(5, 5, 0, ACK)),
        );
        assert_ne!(e.flags & CT_FLAG_LIBERAL, 0);
        assert_eq!(
            tcp_judge(
                &e,
                &seg(0x8000_0000, 3, 0, ACK),
                true,
                &mut [ZERO_WINDOW; 2]
            ),
            TcpStep::To(CtState::TcpEstablished)
        );
    }
}
