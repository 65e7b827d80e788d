//! Connection tracking through the real programs: multi-packet sequences
//! across XDP (ingress) and TC (egress) sharing one table, with the
//! datapath clock moved forward to exercise timeouts.

use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_SEEN_REPLY, CtState,
        tcp_flags::{ACK, FIN, PSH, RST, SYN},
    },
    counters::Counter,
};
use fw_tests::{
    datapath::Datapath,
    lacks_privileges,
    packet::{L4, Vlan, Way, frame},
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
