//! TCP sequence-window tracking through the real programs (netfilter's
//! `tcp_in_window`, without SACK): whole connections with realistic
//! initial sequence numbers that cross 2^32, segments outside the window
//! (INVALID, the entry untouched), RST in and out of the window, window
//! scaling negotiated or not, SYN retransmission, simultaneous open,
//! reopening after `TIME_WAIT`, and the liberal flows that skip the checks.
//! Each sequence runs for IPv4 and IPv6; each step asserts the counter that
//! moved, the state and the table the flow is in.

use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_ADOPTED, CT_FLAG_LIBERAL, CT_FLAG_SEEN_REPLY, CtEntry, CtState,
        tcp_flags::{ACK, FIN, PSH, RST, SYN},
    },
    counters::Counter,
    ipproto,
};
use fw_tests::{
    datapath::{CtTable, Datapath, ct_key},
    lacks_privileges,
    packet::{Segment, Side, TcpConversation},
};

const POLICY: &str = r#"
[defaults]
input = "drop"
output = "accept"
[[input]]
proto = "tcp"
dport = 22
action = "accept"
"#;

/// Initial sequence numbers a few kilobytes below 2^32: a few segments of
/// data wrap both sides' numbers past zero.
const REMOTE_ISN: u32 = 0xffff_f000;
const LOCAL_ISN: u32 = 0xffff_fa00;

const MSS: usize = 1400;

/// A client connecting to the guarded host's port 22.
fn inbound(v6: bool) -> TcpConversation {
    TcpConversation::new(v6, 22, 40_000, LOCAL_ISN, REMOTE_ISN)
}

/// The guarded host connecting out to port 443.
fn outbound(v6: bool, local_port: u16) -> TcpConversation {
    TcpConversation::new(v6, local_port, 443, 0x1357_9bdf, 0x2468_ace0)
}

/// State and table of the conversation's flow; panics if untracked.
fn flow(dp: &Datapath, conv: &TcpConversation) -> (CtState, CtTable, CtEntry) {
    let (table, e) = dp
        .flow(&ct_key(conv.local, conv.remote, ipproto::TCP))
        .unwrap_or_else(|| panic!("{conv:?} is not tracked: {:?}", dp.conntrack()));
    (CtState::from_u8(e.state), table, e)
}

/// Run one step of a conversation and check where it leaves the flow.
fn step(
    dp: &mut Datapath,
    conv: &mut TcpConversation,
    (from, flags, len): (Side, u8, usize),
    counter: Counter,
    (state, table): (CtState, CtTable),
    what: &str,
) {
    let got = dp.send_tcp(conv, from, flags, len);
    assert_eq!(got, counter, "{what}: counter");
    let (s, t, _) = flow(dp, conv);
    assert_eq!((s, t), (state, table), "{what}: state and table");
}

/// Handshake of an inbound connection; the flow ends ESTABLISHED.
fn handshake(dp: &mut Datapath, conv: &mut TcpConversation) {
    use CtState::{TcpEstablished, TcpSynRecv, TcpSynSent};
    use CtTable::{Established, Transient};
    let steps = [
        (
            (Side::Remote, SYN, 0),
            Counter::AcceptRule,
            (TcpSynSent, Transient),
        ),
        (
            (Side::Local, SYN | ACK, 0),
            Counter::AcceptEstablished,
            (TcpSynRecv, Transient),
        ),
        (
            (Side::Remote, ACK, 0),
            Counter::AcceptEstablished,
            (TcpEstablished, Established),
        ),
    ];
    for (i, (s, counter, at)) in steps.into_iter().enumerate() {
        step(dp, conv, s, counter, at, &format!("handshake step {i}"));
    }
}

/// A segment of `conv` from `from` that must be INVALID and leave the
/// entry exactly as it was (state, counts, windows, expiry).
fn refused(dp: &mut Datapath, conv: &TcpConversation, from: Side, seg: &Segment, what: &str) {
    let (_, table, before) = flow(dp, conv);
    assert_eq!(
        dp.probe_tcp(conv, from, seg),
        Counter::DropInvalid,
        "{what}: {seg:?}"
    );
    let (_, table_after, after) = flow(dp, conv);
    assert_eq!(table_after, table, "{what}: the flow changed table");
    assert_eq!(
        after, before,
        "{what}: an INVALID segment changed the entry"
    );
}

#[test]
fn handshake_data_and_close_across_the_sequence_wrap() {
    use CtState::{TcpCloseWait, TcpEstablished, TcpFinWait, TcpLastAck, TcpTimeWait};
    use CtTable::{Established, Transient};
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let mut conv = inbound(v6);
        handshake(&mut dp, &mut conv);
        let (_, _, e) = flow(&dp, &conv);
        assert_eq!(
            e.flags & CT_FLAG_LIBERAL,
            0,
            "v6={v6}: a flow seen from its SYN is checked"
        );
        for i in 0..4 {
            for from in [Side::Remote, Side::Local] {
                step(
                    &mut dp,
                    &mut conv,
                    (from, ACK | PSH, MSS),
                    Counter::AcceptEstablished,
                    (TcpEstablished, Established),
                    &format!("v6={v6} data {i} from {from:?}"),
                );
            }
        }
        assert!(
            conv.seq(Side::Remote) < REMOTE_ISN && conv.seq(Side::Local) < LOCAL_ISN,
            "both sides' sequence numbers wrapped past 2^32"
        );
        let (_, _, e) = flow(&dp, &conv);
        assert_eq!(
            [e.tcp[0].end, e.tcp[1].end],
            [conv.seq(Side::Remote), conv.seq(Side::Local)],
            "v6={v6}: `end` is the highest sequence each side sent plus its length"
        );
        // Closing: the client's FIN, the server's ACK and FIN, the last ACK.
        let close = [
            ((Side::Local, ACK, 0), (TcpEstablished, Established)),
            ((Side::Remote, FIN | ACK, 0), (TcpFinWait, Transient)),
            ((Side::Local, ACK, 0), (TcpCloseWait, Transient)),
            ((Side::Local, FIN | ACK, 0), (TcpLastAck, Transient)),
            ((Side::Remote, ACK, 0), (TcpTimeWait, Transient)),
        ];
        for (i, (segment, at)) in close.into_iter().enumerate() {
            step(
                &mut dp,
                &mut conv,
                segment,
                Counter::AcceptEstablished,
                at,
                &format!("v6={v6} close step {i}"),
            );
        }
        // The last ACK again (the server's FIN was retransmitted): still
        // part of the flow.
        let last_ack = Segment {
            seq: conv.seq(Side::Remote),
            ack: conv.seq(Side::Local),
            window: 64_240,
            flags: ACK,
            ..Segment::default()
        };
        assert_eq!(
            dp.probe_tcp(&conv, Side::Remote, &last_ack),
            Counter::AcceptEstablished
        );
        assert_eq!(flow(&dp, &conv).0, TcpTimeWait);
        assert_eq!(dp.conntrack().len(), 1, "one flow, in one table");
    }
}

#[test]
fn rst_inside_the_window_closes_outside_it_is_invalid() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let mut conv = inbound(v6);
        handshake(&mut dp, &mut conv);
        for from in [Side::Remote, Side::Local] {
            dp.send_tcp(&mut conv, from, ACK | PSH, MSS);
        }
        // A blind reset: right ports, sequence number far from the window.
        for flags in [RST, RST | ACK] {
            let blind = Segment {
                seq: conv.seq(Side::Remote).wrapping_add(0x1000_0000),
                ack: conv.seq(Side::Local),
                flags,
                ..Segment::default()
            };
            refused(&mut dp, &conv, Side::Remote, &blind, "out-of-window RST");
            assert_eq!(
                flow(&dp, &conv).0,
                CtState::TcpEstablished,
                "v6={v6}: the flow survives a blind RST"
            );
        }
        let reset = Segment {
            seq: conv.seq(Side::Remote),
            ack: conv.seq(Side::Local),
            flags: RST | ACK,
            ..Segment::default()
        };
        assert_eq!(
            dp.probe_tcp(&conv, Side::Remote, &reset),
            Counter::AcceptEstablished,
            "v6={v6}: in-window RST"
        );
        let (state, table, _) = flow(&dp, &conv);
        assert_eq!((state, table), (CtState::TcpClose, CtTable::Transient));
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of segments, read top to bottom"
)]
fn segments_outside_the_window_are_invalid_and_leave_the_entry_alone() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let mut conv = inbound(v6);
        handshake(&mut dp, &mut conv);
        for _ in 0..3 {
            for from in [Side::Remote, Side::Local] {
                dp.send_tcp(&mut conv, from, ACK | PSH, MSS);
            }
        }
        let (_, _, e) = flow(&dp, &conv);
        let remote_maxend = e.tcp[0].maxend;
        let data = |seq: u32, ack: u32| Segment {
            seq,
            ack,
            window: 64_240,
            flags: ACK | PSH,
            payload: 100,
            ..Segment::default()
        };
        let (r, l) = (conv.seq(Side::Remote), conv.seq(Side::Local));
        let rows = [
            (
                "data far beyond the window",
                data(r.wrapping_add(10_000_000), l),
            ),
            (
                "data starting one past the highest allowed sequence",
                data(remote_maxend.wrapping_add(1), l),
            ),
            (
                "data from far in the past (below end - receiver's max window)",
                data(r.wrapping_sub(300_000), l),
            ),
            (
                "acknowledging data the host never sent",
                data(r, l.wrapping_add(5_000)),
            ),
            (
                "acknowledging further back than max(window, 66000)",
                data(r, l.wrapping_sub(200_000)),
            ),
        ];
        for (what, seg) in rows {
            refused(
                &mut dp,
                &conv,
                Side::Remote,
                &seg,
                &format!("v6={v6} {what}"),
            );
        }
        // The same checks hold for the host's own segments.
        let from_host = Segment {
            seq: l.wrapping_add(10_000_000),
            ack: r,
            window: 64_240,
            flags: ACK | PSH,
            payload: 100,
            ..Segment::default()
        };
        refused(
            &mut dp,
            &conv,
            Side::Local,
            &from_host,
            "host data far beyond the window",
        );
        // What a real stack may send passes. A retransmission first: old
        // data does not move the sender's end back.
        let retransmission = Segment {
            payload: MSS,
            ..data(r.wrapping_sub(u32::try_from(MSS).unwrap()), l)
        };
        assert_eq!(
            dp.probe_tcp(&conv, Side::Remote, &retransmission),
            Counter::AcceptEstablished,
            "v6={v6} retransmission of the last segment"
        );
        assert_eq!(flow(&dp, &conv).2.tcp[0].end, r, "v6={v6}");
        let rows = [
            (
                "an old ACK within 66000 bytes",
                Segment {
                    payload: 0,
                    flags: ACK,
                    ..data(r, l.wrapping_sub(60_000))
                },
            ),
            (
                "an ACK at the highest allowed sequence (window probe)",
                Segment {
                    payload: 0,
                    flags: ACK,
                    ..data(remote_maxend, l)
                },
            ),
        ];
        for (what, seg) in rows {
            assert_eq!(
                dp.probe_tcp(&conv, Side::Remote, &seg),
                Counter::AcceptEstablished,
                "v6={v6} {what}"
            );
        }
        let (state, table, _) = flow(&dp, &conv);
        assert_eq!(
            (state, table),
            (CtState::TcpEstablished, CtTable::Established)
        );
    }
}

/// Window scaling: the SYN/ACK's window is never scaled; later windows
/// are, by the scale the sender announced, but only when both SYNs
/// carried the option.
#[test]
fn window_scaling_applies_only_when_both_sides_offer_it() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        for both in [true, false] {
            let what = format!("v6={v6} both offer scaling={both}");
            let mut dp = Datapath::with_policy(POLICY);
            let mut conv = inbound(v6);
            conv.syn_window = [65_160, 64_240];
            conv.set_wscale(Side::Remote, Some(7));
            conv.set_wscale(Side::Local, both.then_some(7));
            conv.window = if both { [502, 502] } else { [64_240, 64_240] };
            handshake(&mut dp, &mut conv);
            let (_, _, e) = flow(&dp, &conv);
            let scale = if both { 7 } else { 0 };
            assert_eq!(
                (e.tcp[0].scale, e.tcp[1].scale),
                (scale, scale),
                "{what}: scales"
            );
            // The host's SYN/ACK allowed 65160 bytes past the client's ISN:
            // unscaled, whatever was negotiated.
            let after_isn = REMOTE_ISN.wrapping_add(1);
            assert_eq!(
                e.tcp[0].maxend,
                after_isn.wrapping_add(65_160),
                "{what}: the SYN/ACK's window is not scaled"
            );
            // A pure ACK from the host moves neither side's sequence.
            let (r, l, w) = (
                conv.seq(Side::Remote),
                conv.seq(Side::Local),
                conv.window[1],
            );
            let ahead = move |n: u32| Segment {
                seq: r.wrapping_add(n),
                ack: l,
                window: w,
                flags: ACK | PSH,
                payload: 100,
                ..Segment::default()
            };
            assert_eq!(
                dp.probe_tcp(&conv, Side::Remote, &ahead(30_000)),
                Counter::AcceptEstablished,
                "{what}: inside the window"
            );
            refused(&mut dp, &conv, Side::Remote, &ahead(1_000_000), &what);
            // The host opens its window: field 0x4000, 2 MiB once scaled
            // by 7, 16 KiB if not.
            conv.set_window(Side::Local, 0x4000);
            let acked = conv.seq(Side::Remote);
            assert_eq!(
                dp.send_tcp(&mut conv, Side::Local, ACK, 0),
                Counter::AcceptEstablished
            );
            let (_, _, e) = flow(&dp, &conv);
            if both {
                assert_eq!(
                    e.tcp[0].maxend,
                    acked.wrapping_add(0x4000 << 7),
                    "{what}: maxend = ack + scaled window"
                );
                assert_eq!(
                    dp.probe_tcp(&conv, Side::Remote, &ahead(1_000_000)),
                    Counter::AcceptEstablished,
                    "{what}: 1 MB ahead fits the scaled window"
                );
            } else {
                assert_eq!(
                    e.tcp[0].maxend,
                    after_isn.wrapping_add(65_160),
                    "{what}: a smaller window does not shrink maxend"
                );
                refused(&mut dp, &conv, Side::Remote, &ahead(1_000_000), &what);
            }
        }
    }
}

#[test]
fn syn_retransmission_stays_new_and_a_synack_must_ack_the_syn() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let mut conv = inbound(v6);
        let syn = conv.send(Side::Remote, SYN, 0);
        for attempt in 0..3 {
            assert_eq!(
                dp.ingress(&syn).counter,
                Counter::AcceptRule,
                "v6={v6} SYN attempt {attempt}: NEW, judged by the rules"
            );
            let (state, table, e) = flow(&dp, &conv);
            assert_eq!((state, table), (CtState::TcpSynSent, CtTable::Transient));
            assert_eq!(e.tcp[0].end, REMOTE_ISN.wrapping_add(1));
        }
        let mut synack = conv.next_segment(Side::Local, SYN | ACK, 0);
        synack.ack = REMOTE_ISN.wrapping_add(1000);
        refused(
            &mut dp,
            &conv,
            Side::Local,
            &synack,
            "SYN/ACK acknowledging what the client never sent",
        );
        assert_eq!(
            dp.send_tcp(&mut conv, Side::Local, SYN | ACK, 0),
            Counter::AcceptEstablished
        );
        assert_eq!(flow(&dp, &conv).0, CtState::TcpSynRecv);
    }
}

/// Both ends send a SYN before either answers (RFC 793 section 3.4).
#[test]
fn simultaneous_open() {
    use CtState::{TcpEstablished, TcpSynRecv, TcpSynSent, TcpSynSent2};
    use CtTable::{Established, Transient};
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let mut conv = outbound(v6, 50_000);
        step(
            &mut dp,
            &mut conv,
            (Side::Local, SYN, 0),
            Counter::AcceptDefault,
            (TcpSynSent, Transient),
            "host SYN",
        );
        step(
            &mut dp,
            &mut conv,
            (Side::Remote, SYN, 0),
            Counter::AcceptEstablished,
            (TcpSynSent2, Transient),
            "peer SYN crossing it",
        );
        // Each side now sends SYN/ACK: its own ISN again, acknowledging the
        // other's SYN.
        let synack = |conv: &TcpConversation, side: Side| Segment {
            seq: conv.seq(side).wrapping_sub(1),
            ack: conv.seq(side.other()),
            window: 64_240,
            flags: SYN | ACK,
            ..Segment::default()
        };
        assert_eq!(
            dp.probe_tcp(&conv, Side::Local, &synack(&conv, Side::Local)),
            Counter::AcceptEstablished
        );
        assert_eq!(flow(&dp, &conv).0, TcpSynRecv, "v6={v6}");
        assert_eq!(
            dp.probe_tcp(&conv, Side::Remote, &synack(&conv, Side::Remote)),
            Counter::AcceptEstablished,
            "v6={v6}: the peer's SYN/ACK belongs to the flow"
        );
        step(
            &mut dp,
            &mut conv,
            (Side::Local, ACK, 0),
            Counter::AcceptEstablished,
            (TcpEstablished, Established),
            "host ACK",
        );
        for from in [Side::Remote, Side::Local] {
            step(
                &mut dp,
                &mut conv,
                (from, ACK | PSH, MSS),
                Counter::AcceptEstablished,
                (TcpEstablished, Established),
                "data",
            );
        }
    }
}

/// A new SYN on the ports of a flow in `TIME_WAIT` or CLOSE starts a new
/// connection, with new sequence numbers that the old window knows nothing
/// about.
#[test]
fn a_syn_reopens_a_flow_in_time_wait_or_close_with_a_fresh_window() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        for via_rst in [false, true] {
            let what = format!("v6={v6} closed by {}", if via_rst { "RST" } else { "FIN" });
            let mut dp = Datapath::with_policy(POLICY);
            let mut conv = inbound(v6);
            handshake(&mut dp, &mut conv);
            dp.send_tcp(&mut conv, Side::Remote, ACK | PSH, MSS);
            if via_rst {
                dp.send_tcp(&mut conv, Side::Remote, RST | ACK, 0);
                assert_eq!(flow(&dp, &conv).0, CtState::TcpClose, "{what}");
            } else {
                for (from, flags) in [
                    (Side::Remote, FIN | ACK),
                    (Side::Local, FIN | ACK),
                    (Side::Remote, ACK),
                ] {
                    dp.send_tcp(&mut conv, from, flags, 0);
                }
                assert_eq!(flow(&dp, &conv).0, CtState::TcpTimeWait, "{what}");
            }
            // The client reuses its port with an unrelated ISN, the server
            // answers with a new one of its own.
            let new_remote_isn = conv.seq(Side::Remote).wrapping_add(0x4000_0000);
            let mut again = TcpConversation::new(v6, 22, 40_000, 0x0123_4567, new_remote_isn);
            assert!(
                dp.ingress(&again.send(Side::Remote, SYN, 0)).pass,
                "{what}: the new SYN passes"
            );
            let (state, table, e) = flow(&dp, &again);
            assert_eq!(
                (state, table),
                (CtState::TcpSynSent, CtTable::Transient),
                "{what}"
            );
            let isn1 = new_remote_isn.wrapping_add(1);
            assert_eq!(
                (e.tcp[0].end, e.tcp[0].maxend),
                (isn1, isn1),
                "{what}: the opener's window starts at its new SYN"
            );
            assert_eq!(e.tcp[1].maxwin, 0, "{what}: the answerer is not seen yet");
            for (from, flags) in [(Side::Local, SYN | ACK), (Side::Remote, ACK)] {
                assert_eq!(
                    dp.send_tcp(&mut again, from, flags, 0),
                    Counter::AcceptEstablished,
                    "{what}: handshake of the new connection"
                );
            }
            for from in [Side::Remote, Side::Local] {
                assert_eq!(
                    dp.send_tcp(&mut again, from, ACK | PSH, MSS),
                    Counter::AcceptEstablished,
                    "{what}: data of the new connection"
                );
            }
            assert_eq!(flow(&dp, &again).0, CtState::TcpEstablished);
        }
    }
}

/// A closed port answers a SYN with a RST: RST/ACK with sequence 0, or
/// (other stacks) a bare RST with sequence 0. Both close the flow.
#[test]
fn rst_answering_a_syn_closes_the_flow() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        for (port, flags) in [(50_000, RST | ACK), (50_001, RST)] {
            let mut conv = outbound(v6, port);
            assert_eq!(
                dp.send_tcp(&mut conv, Side::Local, SYN, 0),
                Counter::AcceptDefault
            );
            let rst = Segment {
                seq: 0,
                ack: if flags & ACK != 0 {
                    conv.seq(Side::Local)
                } else {
                    0
                },
                flags,
                ..Segment::default()
            };
            assert_eq!(
                dp.probe_tcp(&conv, Side::Remote, &rst),
                Counter::AcceptEstablished,
                "v6={v6} flags {flags:#04x}"
            );
            let (state, table, _) = flow(&dp, &conv);
            assert_eq!((state, table), (CtState::TcpClose, CtTable::Transient));
        }
    }
}

/// Flows whose beginning fw did not see (adopted at load, or picked up
/// mid-stream with `tcp_syn_only = false`) are tracked liberally: any
/// sequence number, but the state machine still applies.
#[test]
fn liberal_flows_skip_the_sequence_checks_but_not_the_state_machine() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        // Adopted: as the loader enters a connection from /proc/net/tcp.
        let conv = inbound(v6);
        let now = dp.now_ns();
        let adopted = CtEntry {
            created_ns: now,
            last_seen_ns: now,
            expires_ns: now + 3_600_000_000_000,
            state: CtState::TcpEstablished as u8,
            origin: Direction::Ingress as u8,
            flags: CT_FLAG_SEEN_REPLY | CT_FLAG_ADOPTED | CT_FLAG_LIBERAL,
            ..CtEntry::default()
        };
        dp.insert_established(&ct_key(conv.local, conv.remote, ipproto::TCP), &adopted);
        let seg = |seq: u32, ack: u32, flags: u8| Segment {
            seq,
            ack,
            window: 512,
            flags,
            payload: if flags & PSH != 0 { 100 } else { 0 },
            ..Segment::default()
        };
        for (from, s) in [
            (Side::Remote, seg(0x1234_5678, 0x9abc_def0, ACK | PSH)),
            (Side::Local, seg(0x9abc_def0, 0x1234_56dc, ACK | PSH)),
            (Side::Remote, seg(0x5555_0000, 0x0000_1111, ACK | PSH)),
            (Side::Local, seg(0x0000_0001, 0xffff_0000, ACK)),
        ] {
            assert_eq!(
                dp.probe_tcp(&conv, from, &s),
                Counter::AcceptEstablished,
                "v6={v6} adopted flow, {from:?} {s:?}"
            );
        }
        assert_eq!(
            dp.probe_tcp(&conv, Side::Remote, &seg(7, 7, FIN | ACK)),
            Counter::AcceptEstablished
        );
        let (state, table, _) = flow(&dp, &conv);
        assert_eq!((state, table), (CtState::TcpFinWait, CtTable::Transient));

        // Picked up mid-stream.
        dp.install(&format!("{POLICY}[stateful]\ntcp_syn_only = false\n"));
        let conv = TcpConversation::new(v6, 22, 40_001, 1, 2);
        assert_eq!(
            dp.probe_tcp(
                &conv,
                Side::Remote,
                &seg(0x4000_0000, 0x8000_0000, ACK | PSH)
            ),
            Counter::AcceptRule,
            "v6={v6}: mid-stream segment judged by the rules"
        );
        let (state, table, e) = flow(&dp, &conv);
        assert_eq!(
            (state, table),
            (CtState::TcpEstablished, CtTable::Established)
        );
        assert_ne!(e.flags & CT_FLAG_LIBERAL, 0, "v6={v6}: picked up liberally");
        for (from, s) in [
            (Side::Local, seg(0x0000_0010, 0x4000_0064, ACK | PSH)),
            (Side::Remote, seg(0xc000_0000, 0x0000_0010, ACK | PSH)),
        ] {
            assert_eq!(
                dp.probe_tcp(&conv, from, &s),
                Counter::AcceptEstablished,
                "v6={v6} picked-up flow, {from:?} {s:?}"
            );
        }
    }
}
