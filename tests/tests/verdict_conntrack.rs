//! Connection tracking through the real programs: multi-packet sequences
//! across XDP (ingress) and TC (egress) sharing one table, with the
//! datapath clock moved forward to exercise timeouts.

use std::net::{IpAddr, SocketAddr};

use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_SEEN_REPLY, CtEntry, CtKey, CtState,
        tcp_flags::{ACK, FIN, PSH, RST, SYN},
    },
    counters::Counter,
    ipproto,
};
use fw_tests::{
    datapath::{CtTable, Datapath, ct_key},
    lacks_privileges,
    packet::{CLIENT4, CLIENT6, L4, SERVER4, SERVER6, Side, TcpConversation, Vlan, Way, frame},
};

const POLICY: &str = "[defaults]\ninput = \"drop\"\noutput = \"accept\"\n[[input]]\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\n";

fn tcp_in(v6: bool, flags: u8) -> Vec<u8> {
    frame(
        v6,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_000,
            dport: 22,
            flags,
        },
    )
}
fn tcp_out(v6: bool, flags: u8) -> Vec<u8> {
    frame(
        v6,
        Way::Out,
        Vlan::None,
        L4::Tcp {
            sport: 22,
            dport: 40_000,
            flags,
        },
    )
}

fn only_state(dp: &Datapath) -> CtState {
    let entries = dp.conntrack();
    assert_eq!(entries.len(), 1, "expected one tracked flow: {entries:?}");
    CtState::from_u8(entries[0].1.state)
}

#[test]
fn inbound_handshake_data_and_close() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        // (direction, frame, expected counter, state after)
        let steps: Vec<(Direction, Vec<u8>, Counter, CtState)> = vec![
            (
                Direction::Ingress,
                tcp_in(v6, SYN),
                Counter::AcceptRule,
                CtState::TcpSynSent,
            ),
            (
                Direction::Egress,
                tcp_out(v6, SYN | ACK),
                Counter::AcceptEstablished,
                CtState::TcpSynRecv,
            ),
            (
                Direction::Ingress,
                tcp_in(v6, ACK),
                Counter::AcceptEstablished,
                CtState::TcpEstablished,
            ),
            (
                Direction::Ingress,
                tcp_in(v6, ACK | PSH),
                Counter::AcceptEstablished,
                CtState::TcpEstablished,
            ),
            (
                Direction::Egress,
                tcp_out(v6, ACK | PSH),
                Counter::AcceptEstablished,
                CtState::TcpEstablished,
            ),
            // Garbage flags inside a live flow are still INVALID.
            (
                Direction::Ingress,
                tcp_in(v6, SYN | FIN),
                Counter::DropInvalid,
                CtState::TcpEstablished,
            ),
            (
                Direction::Ingress,
                tcp_in(v6, FIN | ACK),
                Counter::AcceptEstablished,
                CtState::TcpFinWait,
            ),
            (
                Direction::Egress,
                tcp_out(v6, FIN | ACK),
                Counter::AcceptEstablished,
                CtState::TcpLastAck,
            ),
            (
                Direction::Ingress,
                tcp_in(v6, ACK),
                Counter::AcceptEstablished,
                CtState::TcpTimeWait,
            ),
        ];
        for (i, (dir, f, counter, state)) in steps.into_iter().enumerate() {
            let got = dp.run(dir, &f);
            assert_eq!(got.counter, counter, "v6={v6} step {i}");
            assert_eq!(only_state(&dp), state, "v6={v6} step {i}");
        }
        let (_, e) = dp.conntrack()[0];
        assert_eq!(e.origin, Direction::Ingress as u8);
        assert_eq!(e.rule, 1, "the flow remembers the rule that admitted it");
        assert_ne!(e.flags & CT_FLAG_SEEN_REPLY, 0);
        assert_eq!(e.packets, [5, 3], "packets counted per direction");
    }
}

#[test]
fn opener_cannot_skip_the_handshake() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    assert_eq!(dp.ingress(&tcp_in(false, SYN)).counter, Counter::AcceptRule);
    // The client sends ACK before any SYN/ACK: invalid in SYN_SENT, and the
    // entry is untouched.
    assert_eq!(
        dp.ingress(&tcp_in(false, ACK)).counter,
        Counter::DropInvalid
    );
    assert_eq!(only_state(&dp), CtState::TcpSynSent);
    // A retransmitted SYN is still NEW (no reply yet): the rule admits it
    // again.
    assert_eq!(dp.ingress(&tcp_in(false, SYN)).counter, Counter::AcceptRule);
}

#[test]
fn rst_closes_the_flow() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    dp.ingress(&tcp_in(false, SYN));
    // Nothing listens: the host answers RST/ACK, which closes the flow.
    assert_eq!(
        dp.egress(&tcp_out(false, RST | ACK)).counter,
        Counter::AcceptEstablished
    );
    assert_eq!(only_state(&dp), CtState::TcpClose);
    // After CLOSE, a stray ACK from the client is handled by the table
    // (CLOSE stays CLOSE) until the entry times out (10 s), then INVALID.
    dp.advance_clock(11);
    assert_eq!(
        dp.ingress(&tcp_in(false, ACK)).counter,
        Counter::DropInvalid
    );
    assert!(
        dp.conntrack().is_empty(),
        "the expired entry was reclaimed on lookup"
    );
}

#[test]
fn outbound_connection_replies_pass_default_drop() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let out = |flags| {
            frame(
                v6,
                Way::Out,
                Vlan::None,
                L4::Tcp {
                    sport: 50_000,
                    dport: 443,
                    flags,
                },
            )
        };
        let back = |flags| {
            frame(
                v6,
                Way::In,
                Vlan::None,
                L4::Tcp {
                    sport: 443,
                    dport: 50_000,
                    flags,
                },
            )
        };
        // Before the host opened it, the same SYN/ACK is INVALID.
        assert_eq!(dp.ingress(&back(SYN | ACK)).counter, Counter::DropInvalid);
        assert_eq!(dp.egress(&out(SYN)).counter, Counter::AcceptDefault);
        assert_eq!(
            dp.ingress(&back(SYN | ACK)).counter,
            Counter::AcceptEstablished
        );
        assert_eq!(dp.egress(&out(ACK)).counter, Counter::AcceptEstablished);
        assert_eq!(
            dp.ingress(&back(ACK | PSH)).counter,
            Counter::AcceptEstablished
        );
        assert_eq!(only_state(&dp), CtState::TcpEstablished);
        assert_eq!(dp.conntrack()[0].1.origin, Direction::Egress as u8);
        // A new inbound SYN to the same client port is not part of the flow
        // (it would be a SYN from the reply side in ESTABLISHED: ignored
        // by the table, i.e. it can never open anything new).
        assert_eq!(
            dp.ingress(&frame(
                v6,
                Way::In,
                Vlan::None,
                L4::Tcp {
                    sport: 443,
                    dport: 50_001,
                    flags: SYN
                }
            ))
            .counter,
            Counter::DropDefault
        );
    }
}

#[test]
fn syn_sent_times_out() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    let out = |flags| {
        frame(
            false,
            Way::Out,
            Vlan::None,
            L4::Tcp {
                sport: 50_000,
                dport: 443,
                flags,
            },
        )
    };
    let back = |flags| {
        frame(
            false,
            Way::In,
            Vlan::None,
            L4::Tcp {
                sport: 443,
                dport: 50_000,
                flags,
            },
        )
    };
    dp.egress(&out(SYN));
    dp.advance_clock(119);
    assert_eq!(
        dp.ingress(&back(SYN | ACK)).counter,
        Counter::AcceptEstablished,
        "inside the 120 s SYN_SENT timeout"
    );
    let mut dp = Datapath::with_policy(POLICY);
    dp.egress(&out(SYN));
    dp.advance_clock(121);
    assert_eq!(
        dp.ingress(&back(SYN | ACK)).counter,
        Counter::DropInvalid,
        "after the 120 s SYN_SENT timeout"
    );
}

#[test]
fn udp_and_icmp_echo_pseudo_connections() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let query = frame(
            v6,
            Way::Out,
            Vlan::None,
            L4::Udp {
                sport: 33_333,
                dport: 53,
            },
        );
        let answer = frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_333,
            },
        );
        let stray = frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_334,
            },
        );
        assert_eq!(
            dp.ingress(&answer).counter,
            Counter::DropDefault,
            "no query yet"
        );
        assert_eq!(dp.egress(&query).counter, Counter::AcceptDefault);
        assert_eq!(dp.ingress(&answer).counter, Counter::AcceptEstablished);
        assert_eq!(
            dp.ingress(&stray).counter,
            Counter::DropDefault,
            "other port"
        );
        assert_eq!(only_state(&dp), CtState::UdpReplied);
        // Replied UDP lives 120 s without traffic.
        dp.advance_clock(121);
        assert_eq!(dp.ingress(&answer).counter, Counter::DropDefault, "expired");

        let mut dp = Datapath::with_policy(POLICY);
        let req = frame(v6, Way::Out, Vlan::None, L4::EchoRequest { id: 77 });
        let reply = frame(v6, Way::In, Vlan::None, L4::EchoReply { id: 77 });
        let other = frame(v6, Way::In, Vlan::None, L4::EchoReply { id: 78 });
        assert_eq!(
            dp.ingress(&reply).counter,
            Counter::DropInvalid,
            "echo reply without a request"
        );
        assert_eq!(dp.egress(&req).counter, Counter::AcceptDefault);
        assert_eq!(dp.ingress(&reply).counter, Counter::AcceptEstablished);
        assert_eq!(
            dp.ingress(&other).counter,
            Counter::DropInvalid,
            "wrong identifier"
        );
        let ping_in = frame(v6, Way::In, Vlan::None, L4::EchoRequest { id: 5 });
        assert_eq!(
            dp.ingress(&ping_in).counter,
            Counter::DropDefault,
            "inbound ping under default drop"
        );
    }
}

#[test]
fn state_survives_a_policy_swap() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(POLICY);
    dp.ingress(&tcp_in(false, SYN));
    dp.egress(&tcp_out(false, SYN | ACK));
    dp.ingress(&tcp_in(false, ACK));
    // The new policy no longer allows port 22.
    dp.install("[defaults]\ninput = \"drop\"\n");
    assert_eq!(dp.maps.config().unwrap().active_gen, 1);
    assert_eq!(
        dp.ingress(&tcp_in(false, ACK | PSH)).counter,
        Counter::AcceptEstablished
    );
    let new_client = frame(
        false,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: 40_001,
            dport: 22,
            flags: SYN,
        },
    );
    assert_eq!(dp.ingress(&new_client).counter, Counter::DropDefault);
    // And back: generation 0 again.
    dp.install(POLICY);
    assert_eq!(dp.maps.config().unwrap().active_gen, 0);
    assert_eq!(dp.ingress(&new_client).counter, Counter::AcceptRule);
}

#[test]
fn unanswered_syn_meets_the_current_policy_again() {
    if lacks_privileges() {
        return;
    }
    // As in netfilter, the opener's packets stay NEW until the peer
    // answers: a SYN retransmitted after a reload that closed the port is
    // dropped by the new policy.
    let mut dp = Datapath::with_policy(POLICY);
    assert_eq!(dp.ingress(&tcp_in(false, SYN)).counter, Counter::AcceptRule);
    dp.install("[defaults]\ninput = \"drop\"\n");
    assert_eq!(
        dp.ingress(&tcp_in(false, SYN)).counter,
        Counter::DropDefault
    );
}

// ---------------------------------------------------------------------------
// Timeouts from the policy's `[conntrack]` section, the two tables, and a
// flood of new flows against a small table.

/// Every timeout distinct, in each of the accepted spellings.
const TIMEOUTS: &str = r#"
[conntrack]
tcp_syn_sent = 11
tcp_syn_recv = "12s"
tcp_established = "2d"
tcp_fin_wait = 14
tcp_close_wait = 15
tcp_last_ack = 16
tcp_time_wait = 17
tcp_close = 18
udp = 19
udp_stream = "3m"
icmp = "21s"
"#;

/// The policy's timeout for a flow, as recorded on its entry.
fn timeout_secs(e: &CtEntry) -> u64 {
    assert!(e.expires_ns > e.last_seen_ns, "{e:?}");
    let ns = e.expires_ns - e.last_seen_ns;
    assert_eq!(ns % 1_000_000_000, 0, "expiry is last seen + whole seconds");
    ns / 1_000_000_000
}

fn state_and_timeout(dp: &Datapath, key: &CtKey) -> (CtState, u64) {
    let (_, e) = dp.flow(key).expect("tracked");
    (CtState::from_u8(e.state), timeout_secs(&e))
}

#[test]
fn every_packet_sets_the_expiry_from_the_policy_timeout_of_the_new_state() {
    use CtState::{
        IcmpReplied, IcmpUnreplied, TcpClose, TcpCloseWait, TcpEstablished, TcpFinWait, TcpLastAck,
        TcpSynRecv, TcpSynSent, TcpTimeWait, UdpReplied, UdpUnreplied,
    };
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(&format!("{POLICY}{TIMEOUTS}"));
        let mut conv = TcpConversation::new(v6, 22, 40_000, 1_000, 2_000);
        let key = ct_key(conv.local, conv.remote, ipproto::TCP);
        for (from, flags, want) in [
            (Side::Remote, SYN, (TcpSynSent, 11)),
            (Side::Local, SYN | ACK, (TcpSynRecv, 12)),
            (Side::Remote, ACK, (TcpEstablished, 2 * 86_400)),
            (Side::Remote, ACK | PSH, (TcpEstablished, 2 * 86_400)),
            (Side::Remote, FIN | ACK, (TcpFinWait, 14)),
            (Side::Local, ACK, (TcpCloseWait, 15)),
            (Side::Local, FIN | ACK, (TcpLastAck, 16)),
            (Side::Remote, ACK, (TcpTimeWait, 17)),
        ] {
            dp.advance_clock(1);
            let len = if flags & PSH != 0 { 100 } else { 0 };
            assert!(dp.send_tcp(&mut conv, from, flags, len) != Counter::DropInvalid);
            assert_eq!(
                state_and_timeout(&dp, &key),
                want,
                "v6={v6} {from:?} {flags:#04x}"
            );
        }
        let mut reset = TcpConversation::new(v6, 22, 40_001, 1_000, 2_000);
        for (from, flags) in [
            (Side::Remote, SYN),
            (Side::Local, SYN | ACK),
            (Side::Remote, RST | ACK),
        ] {
            dp.send_tcp(&mut reset, from, flags, 0);
        }
        assert_eq!(
            state_and_timeout(&dp, &ct_key(reset.local, reset.remote, ipproto::TCP)),
            (TcpClose, 18)
        );

        let query = frame(
            v6,
            Way::Out,
            Vlan::None,
            L4::Udp {
                sport: 33_333,
                dport: 53,
            },
        );
        let answer = frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_333,
            },
        );
        let (l, r) = addrs(v6);
        let udp = ct_key(
            SocketAddr::new(l, 33_333),
            SocketAddr::new(r, 53),
            ipproto::UDP,
        );
        dp.egress(&query);
        assert_eq!(state_and_timeout(&dp, &udp), (UdpUnreplied, 19), "v6={v6}");
        dp.ingress(&answer);
        assert_eq!(state_and_timeout(&dp, &udp), (UdpReplied, 180), "v6={v6}");

        let icmp = ct_key(SocketAddr::new(l, 9), SocketAddr::new(r, 9), icmp_proto(v6));
        dp.egress(&frame(v6, Way::Out, Vlan::None, L4::EchoRequest { id: 9 }));
        assert_eq!(
            state_and_timeout(&dp, &icmp),
            (IcmpUnreplied, 21),
            "v6={v6}"
        );
        dp.ingress(&frame(v6, Way::In, Vlan::None, L4::EchoReply { id: 9 }));
        assert_eq!(state_and_timeout(&dp, &icmp), (IcmpReplied, 21), "v6={v6}");
    }
}

fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (SERVER6.into(), CLIENT6.into())
    } else {
        (SERVER4.into(), CLIENT4.into())
    }
}

const fn icmp_proto(v6: bool) -> u8 {
    if v6 { ipproto::ICMPV6 } else { ipproto::ICMP }
}

/// Short timeouts, then the clock moved past them: an expired entry is
/// gone for the next packet, which is judged as if the flow never existed.
#[test]
fn expired_flows_are_gone_for_the_next_packet() {
    if lacks_privileges() {
        return;
    }
    let short = format!(
        "{POLICY}[conntrack]\nudp = 5\nudp_stream = 8\ntcp_syn_sent = 3\ntcp_established = 10\nicmp = 4\n"
    );
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(&short);
        let query = frame(
            v6,
            Way::Out,
            Vlan::None,
            L4::Udp {
                sport: 33_333,
                dport: 53,
            },
        );
        let answer = frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_333,
            },
        );
        assert_eq!(dp.egress(&query).counter, Counter::AcceptDefault);
        dp.advance_clock(6);
        assert_eq!(
            dp.ingress(&answer).counter,
            Counter::DropDefault,
            "v6={v6}: an answer 6 s after the query (udp = 5) is a new datagram"
        );
        assert_eq!(dp.egress(&query).counter, Counter::AcceptDefault);
        assert_eq!(dp.ingress(&answer).counter, Counter::AcceptEstablished);
        dp.advance_clock(7);
        assert_eq!(
            dp.ingress(&answer).counter,
            Counter::AcceptEstablished,
            "v6={v6}: 7 s into udp_stream = 8"
        );
        dp.advance_clock(7);
        assert_eq!(
            dp.ingress(&answer).counter,
            Counter::AcceptEstablished,
            "v6={v6}: the last answer restarted the 8 s"
        );
        dp.advance_clock(9);
        assert_eq!(
            dp.ingress(&answer).counter,
            Counter::DropDefault,
            "v6={v6}: 9 s of silence"
        );

        let mut opening = TcpConversation::new(v6, 50_000, 443, 1, 2);
        dp.send_tcp(&mut opening, Side::Local, SYN, 0);
        dp.advance_clock(4);
        assert_eq!(
            dp.send_tcp(&mut opening, Side::Remote, SYN | ACK, 0),
            Counter::DropInvalid,
            "v6={v6}: SYN/ACK after tcp_syn_sent = 3"
        );

        let mut conv = TcpConversation::new(v6, 22, 40_000, 1, 2);
        for (from, flags) in [
            (Side::Remote, SYN),
            (Side::Local, SYN | ACK),
            (Side::Remote, ACK),
        ] {
            dp.send_tcp(&mut conv, from, flags, 0);
        }
        dp.advance_clock(9);
        assert_eq!(
            dp.send_tcp(&mut conv, Side::Remote, ACK | PSH, 10),
            Counter::AcceptEstablished
        );
        dp.advance_clock(11);
        assert_eq!(
            dp.send_tcp(&mut conv, Side::Remote, ACK | PSH, 10),
            Counter::DropInvalid,
            "v6={v6}: an ACK 11 s into tcp_established = 10 has no connection"
        );
        assert!(
            dp.flow(&ct_key(conv.local, conv.remote, ipproto::TCP))
                .is_none(),
            "v6={v6}: reclaimed on lookup"
        );

        dp.egress(&frame(v6, Way::Out, Vlan::None, L4::EchoRequest { id: 3 }));
        dp.advance_clock(5);
        assert_eq!(
            dp.ingress(&frame(v6, Way::In, Vlan::None, L4::EchoReply { id: 3 }))
                .counter,
            Counter::DropInvalid,
            "v6={v6}: an echo reply after icmp = 4"
        );
    }
}

/// Unreplied datagram flows live in the transient table and move to the
/// established one with the first reply; a reload's new timeouts apply
/// from the next packet, and the entries stay where they are.
#[test]
fn datagram_flows_move_tables_when_answered_and_survive_a_reload() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(&format!("{POLICY}[conntrack]\nudp_stream = 8\n"));
    let mut keys = Vec::new();
    for v6 in [false, true] {
        let (l, r) = addrs(v6);
        let udp = ct_key(
            SocketAddr::new(l, 33_333),
            SocketAddr::new(r, 53),
            ipproto::UDP,
        );
        let icmp = ct_key(SocketAddr::new(l, 9), SocketAddr::new(r, 9), icmp_proto(v6));
        dp.egress(&frame(
            v6,
            Way::Out,
            Vlan::None,
            L4::Udp {
                sport: 33_333,
                dport: 53,
            },
        ));
        dp.egress(&frame(v6, Way::Out, Vlan::None, L4::EchoRequest { id: 9 }));
        for key in [&udp, &icmp] {
            assert_eq!(
                dp.flow(key).map(|f| f.0),
                Some(CtTable::Transient),
                "v6={v6}"
            );
        }
        dp.ingress(&frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_333,
            },
        ));
        dp.ingress(&frame(v6, Way::In, Vlan::None, L4::EchoReply { id: 9 }));
        for key in [&udp, &icmp] {
            assert_eq!(
                dp.flow(key).map(|f| f.0),
                Some(CtTable::Established),
                "v6={v6}"
            );
        }
        keys.push((v6, udp));
    }
    let before = dp.conntrack_tables();
    dp.install(&format!("{POLICY}[conntrack]\nudp_stream = 100\n"));
    assert_eq!(
        dp.conntrack_tables(),
        before,
        "a reload leaves the tables alone"
    );
    for (v6, key) in keys {
        assert_eq!(
            state_and_timeout(&dp, &key).1,
            8,
            "v6={v6}: until the next packet"
        );
        dp.ingress(&frame(
            v6,
            Way::In,
            Vlan::None,
            L4::Udp {
                sport: 53,
                dport: 33_333,
            },
        ));
        assert_eq!(
            state_and_timeout(&dp, &key),
            (CtState::UdpReplied, 100),
            "v6={v6}: the new policy's timeout"
        );
    }
}

/// Each connection table's size in the flood test.
const SIZE: u32 = 64;

/// `max_entries` sizes each table. A flood of new flows fills the
/// transient (LRU) table and evicts only its own kind: established flows
/// in `FW_CONNTRACK` all stay and keep passing.
#[test]
fn a_flood_of_new_flows_never_evicts_established_ones() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_table_size(POLICY, SIZE);
    let mut established = Vec::new();
    for i in 0..8u16 {
        let v6 = i % 2 == 1;
        let mut conv = TcpConversation::new(v6, 22, 30_000 + i, 1, 2);
        for (from, flags) in [
            (Side::Remote, SYN),
            (Side::Local, SYN | ACK),
            (Side::Remote, ACK),
        ] {
            dp.send_tcp(&mut conv, from, flags, 0);
        }
        established.push(conv);
    }
    let (main, _) = dp.conntrack_tables();
    assert_eq!(main.len(), established.len());
    for n in 0..2000u16 {
        let v6 = n % 2 == 1;
        let syn = TcpConversation::new(v6, 22, 40_000 + n, 1, 2).send(Side::Remote, SYN, 0);
        assert_eq!(dp.ingress(&syn).counter, Counter::AcceptRule, "SYN {n}");
    }
    let (main, transient) = dp.conntrack_tables();
    assert_eq!(
        main.len(),
        established.len(),
        "the flood added nothing to and evicted nothing from FW_CONNTRACK"
    );
    assert!(
        transient.len() <= SIZE as usize && transient.len() > SIZE as usize / 2,
        "the transient table is full of SYN_SENT: {} of {SIZE}",
        transient.len()
    );
    assert!(
        transient
            .iter()
            .all(|(_, e)| e.state == CtState::TcpSynSent as u8)
    );
    for conv in &mut established {
        assert_eq!(
            dp.send_tcp(conv, Side::Remote, ACK | PSH, 100),
            Counter::AcceptEstablished,
            "{conv:?} survived the flood"
        );
        assert_eq!(
            dp.send_tcp(conv, Side::Local, ACK | PSH, 100),
            Counter::AcceptEstablished
        );
    }
}
