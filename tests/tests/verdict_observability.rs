//! What the datapath reports besides the verdict: packets and bytes per
//! rule and chain default (`FW_RULE_STATS`), kept across a reload for the
//! rules that did not change, and log events (`FW_EVENTS`) with their
//! rate limits (`FW_LOG_STATS`), driven with the injected clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fw_common::{
    Direction,
    conntrack::tcp_flags::{ACK, PSH, SYN},
    counters::Counter,
    events::{Event, RING_BYTES},
    family, ipproto,
    policy::{Chain, PacketState},
};
use fw_tests::{
    datapath::{Datapath, addr_words},
    lacks_privileges,
    packet::{
        CLIENT_MAC, CLIENT4, CLIENT6, L4, SERVER_MAC, SERVER4, SERVER6, Side, TcpConversation,
        Vlan, Way, frame, frame_between,
    },
};

fn tcp_in(v6: bool, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frame(
        v6,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport,
            dport,
            flags,
        },
    )
}

fn syn_in(v6: bool, sport: u16, dport: u16) -> Vec<u8> {
    tcp_in(v6, sport, dport, SYN)
}

fn udp_in(v6: bool, sport: u16, dport: u16) -> Vec<u8> {
    frame(v6, Way::In, Vlan::None, L4::Udp { sport, dport })
}

fn udp_out(v6: bool, sport: u16, dport: u16) -> Vec<u8> {
    frame(v6, Way::Out, Vlan::None, L4::Udp { sport, dport })
}

/// Run `frame` in `dir`, insist on `want`, and return its length: what
/// the byte counters must add.
fn send(dp: &mut Datapath, dir: Direction, frame: &[u8], want: Counter) -> u64 {
    let got = dp.run(dir, frame).counter;
    assert_eq!(got, want, "verdict of a {}-byte {dir:?} frame", frame.len());
    frame.len() as u64
}

/// The test client and server, as `(remote, local)` of the family.
fn peers(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (CLIENT6.into(), SERVER6.into())
    } else {
        (CLIENT4.into(), SERVER4.into())
    }
}

/// The event the datapath must report for `frame` from `src` to `dst`,
/// with the time left out (`time_ns` is checked against a window).
struct Expect {
    src: SocketAddr,
    dst: SocketAddr,
    proto: u8,
    tcp_flags: u8,
    dir: Direction,
    reason: Counter,
    log_rule: u16,
    rule: u16,
    rule_id: u64,
    state: PacketState,
    len: usize,
}

impl Expect {
    fn event(&self, dp: &Datapath, time_ns: u64) -> Event {
        let generation = dp.maps.config().expect("FW_CONFIG").active_gen;
        Event {
            time_ns,
            rule_id: self.rule_id,
            src: addr_words(self.src.ip()),
            dst: addr_words(self.dst.ip()),
            // `BPF_PROG_TEST_RUN` presents packets on the namespace's `lo`.
            ifindex: 1,
            len: u32::try_from(self.len).expect("a test frame"),
            sport: self.src.port(),
            dport: self.dst.port(),
            log_rule: self.log_rule,
            rule: self.rule,
            reason: self.reason as u8,
            direction: self.dir as u8,
            chain: match self.dir {
                Direction::Ingress => Chain::Input as u8,
                Direction::Egress => Chain::Output as u8,
            },
            family: if self.src.is_ipv6() {
                family::IPV6
            } else {
                family::IPV4
            },
            proto: self.proto,
            tcp_flags: self.tcp_flags,
            icmp_type: 0,
            state: self.state as u8,
            generation: u8::try_from(generation).expect("generation 0 or 1"),
            _pad: [0; 7],
        }
    }
}

/// Send `frame`, then check that exactly the events `want` were reported
/// for it, in order, stamped with the datapath clock of the moment.
fn assert_events(dp: &mut Datapath, frame: &[u8], want_counter: Counter, want: &[Expect]) {
    let dir = want.first().map_or(Direction::Ingress, |e| e.dir);
    let before = dp.now_ns();
    send(dp, dir, frame, want_counter);
    let after = dp.now_ns();
    let got = dp.events();
    assert_eq!(
        got.len(),
        want.len(),
        "events for one {want_counter:?} packet: {got:#?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert!(
            (before..=after).contains(&g.time_ns),
            "event time {} outside [{before}, {after}]",
            g.time_ns
        );
        assert_eq!(*g, w.event(dp, g.time_ns));
    }
}

/// A source port no earlier packet of the test binary used: an accepted
/// SYN starts a flow, and the next must not look like its retransmission.
fn fresh_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Send `n` frames `build(v6, sport)`, alternating IPv4 and IPv6, each
/// with a fresh source port and each expected to hit `want`. Returns the
/// `(packets, bytes)` the counters must add. The families' frames differ
/// in size, so the bytes show every packet of both was counted.
fn send_each(
    dp: &mut Datapath,
    dir: Direction,
    n: u64,
    build: impl Fn(bool, u16) -> Vec<u8>,
    want: Counter,
) -> (u64, u64) {
    let bytes = (0..n)
        .map(|i| send(dp, dir, &build(i % 2 == 1, fresh_port()), want))
        .sum();
    (n, bytes)
}

fn plus(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 + b.0, a.1 + b.1)
}

const COUNTING: &str = r#"
[defaults]
input = "drop"
output = "accept"
[[input]]
name = "watch ssh"
proto = "tcp"
dport = 22
action = "log"
[[input]]
name = "ssh"
proto = "tcp"
dport = 22
action = "accept"
[[input]]
name = "no dns"
proto = "udp"
dport = 53
action = "drop"
[[output]]
name = "no ntp out"
proto = "udp"
dport = 123
action = "drop"
"#;

#[test]
fn rules_and_defaults_count_packets_and_bytes() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(COUNTING);
    let (ingress, egress) = (Direction::Ingress, Direction::Egress);
    let ssh = send_each(
        &mut dp,
        ingress,
        6,
        |v6, s| syn_in(v6, s, 22),
        Counter::AcceptRule,
    );
    let dns = send_each(
        &mut dp,
        ingress,
        4,
        |v6, s| udp_in(v6, s, 53),
        Counter::DropRule,
    );
    let input_default = send_each(
        &mut dp,
        ingress,
        8,
        |v6, s| syn_in(v6, s, 80),
        Counter::DropDefault,
    );
    let ntp = send_each(
        &mut dp,
        egress,
        4,
        |v6, s| udp_out(v6, s, 123),
        Counter::DropRule,
    );
    let output_default = send_each(
        &mut dp,
        egress,
        2,
        |v6, s| udp_out(v6, s, 5000),
        Counter::AcceptDefault,
    );
    assert_ne!(syn_in(false, 1, 22).len(), syn_in(true, 1, 22).len());
    // The `log` rule counts what it saw though it decided nothing.
    assert_eq!(dp.rule_counts(Chain::Input), vec![ssh, ssh, dns]);
    assert_eq!(dp.default_count(Chain::Input), input_default);
    assert_eq!(dp.rule_counts(Chain::Output), vec![ntp]);
    assert_eq!(dp.default_count(Chain::Output), output_default);
    assert_eq!(dp.default_count(Chain::Forward), (0, 0));
}

#[test]
fn packets_of_tracked_flows_are_not_counted_by_the_rules() {
    if lacks_privileges() {
        return;
    }
    // Once the flow is tracked its packets are the connection's: the rules
    // (and so their counters) see only the packet that opened it.
    let mut dp = Datapath::with_policy(COUNTING);
    for v6 in [false, true] {
        let before = dp.rule_counts(Chain::Input);
        let mut conv = TcpConversation::new(v6, 22, fresh_port(), 1_000, 2_000);
        let opening = [
            (Side::Remote, SYN, Counter::AcceptRule),
            (Side::Local, SYN | ACK, Counter::AcceptEstablished),
            (Side::Remote, ACK, Counter::AcceptEstablished),
            (Side::Remote, ACK | PSH, Counter::AcceptEstablished),
        ];
        let mut syn_bytes = 0;
        for (from, flags, want) in opening {
            let f = conv.send(from, flags, 100);
            if flags == SYN {
                syn_bytes = f.len() as u64;
            }
            assert_eq!(dp.run(from.direction(), &f).counter, want);
        }
        let ssh = plus(before[1], (1, syn_bytes));
        assert_eq!(dp.rule_counts(Chain::Input), vec![ssh, ssh, before[2]]);
        assert_eq!(dp.rule_counts(Chain::Output), vec![(0, 0)]);
        assert_eq!(dp.default_count(Chain::Output), (0, 0));
    }
}

const BEFORE_RELOAD: &str = r#"
[defaults]
input = "drop"
[[input]]
name = "ssh"
proto = "tcp"
dport = 22
action = "accept"
[[input]]
name = "web"
proto = "tcp"
dport = 80
action = "accept"
[[input]]
name = "no dns"
proto = "udp"
dport = 53
action = "drop"
"#;

/// `BEFORE_RELOAD` edited: "ssh" unchanged but third now, "web" on another
/// port, "no dns" gone.
const AFTER_RELOAD: &str = r#"
[defaults]
input = "drop"
[[input]]
name = "https"
proto = "tcp"
dport = 443
action = "accept"
[[input]]
name = "no ntp"
proto = "udp"
dport = 123
action = "drop"
[[input]]
name = "ssh"
proto = "tcp"
dport = 22
action = "accept"
[[input]]
name = "web"
proto = "tcp"
dport = 8080
action = "accept"
"#;

#[test]
fn unchanged_rules_keep_their_counters_across_a_reload() {
    if lacks_privileges() {
        return;
    }
    let ingress = Direction::Ingress;
    let mut dp = Datapath::with_policy(BEFORE_RELOAD);
    let ssh = send_each(
        &mut dp,
        ingress,
        3,
        |v6, s| syn_in(v6, s, 22),
        Counter::AcceptRule,
    );
    let web = send_each(
        &mut dp,
        ingress,
        2,
        |v6, s| syn_in(v6, s, 80),
        Counter::AcceptRule,
    );
    let dns = send_each(
        &mut dp,
        ingress,
        4,
        |v6, s| udp_in(v6, s, 53),
        Counter::DropRule,
    );
    let dflt = send_each(
        &mut dp,
        ingress,
        1,
        |v6, s| syn_in(v6, s, 9),
        Counter::DropDefault,
    );
    assert_eq!(dp.rule_counts(Chain::Input), vec![ssh, web, dns]);
    let old_ids = dp.rule_ids(Chain::Input);
    let old_gen = dp.maps.config().unwrap().active_gen;

    dp.install(AFTER_RELOAD);
    assert_ne!(dp.maps.config().unwrap().active_gen, old_gen);
    let new_ids = dp.rule_ids(Chain::Input);
    assert_eq!(new_ids[2], old_ids[0], "\"ssh\" keeps its identity");
    assert_ne!(new_ids[3], old_ids[1], "\"web\" changed: a new identity");
    assert_eq!(
        dp.rule_counts(Chain::Input),
        vec![(0, 0), (0, 0), ssh, (0, 0)]
    );
    assert_eq!(dp.default_count(Chain::Input), dflt);
    let stats = dp.rule_stats();
    for (name, id) in [("web", old_ids[1]), ("no dns", old_ids[2])] {
        assert!(
            !stats.contains_key(&id),
            "the counters of the old {name:?} were not removed"
        );
    }

    // Counting goes on from where it was.
    let ssh2 = send_each(
        &mut dp,
        ingress,
        2,
        |v6, s| syn_in(v6, s, 22),
        Counter::AcceptRule,
    );
    let web2 = send_each(
        &mut dp,
        ingress,
        1,
        |v6, s| syn_in(v6, s, 8080),
        Counter::AcceptRule,
    );
    let dflt2 = send_each(
        &mut dp,
        ingress,
        2,
        |v6, s| udp_in(v6, s, 53),
        Counter::DropDefault,
    );
    assert_eq!(
        dp.rule_counts(Chain::Input),
        vec![(0, 0), (0, 0), plus(ssh, ssh2), web2]
    );
    assert_eq!(dp.default_count(Chain::Input), plus(dflt, dflt2));

    // Back to the first policy: "web" on 80 and "no dns" start again from
    // zero, "ssh" still keeps its count.
    dp.install(BEFORE_RELOAD);
    assert_eq!(dp.rule_ids(Chain::Input), old_ids);
    assert_eq!(
        dp.rule_counts(Chain::Input),
        vec![plus(ssh, ssh2), (0, 0), (0, 0)]
    );
}

#[test]
fn a_logging_rule_reports_every_packet_it_decides() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
output = "accept"
[log]
rate = "1/minute"
burst = 100
[[input]]
proto = "udp"
dport = 53
action = "accept"
[[input]]
name = "no telnet"
proto = "tcp"
dport = 23
action = "drop"
log = true
[[output]]
name = "no syslog out"
proto = "udp"
dport = 514
action = "drop"
log = true
"#,
    );
    let input_id = dp.rule_ids(Chain::Input)[1];
    let output_id = dp.rule_ids(Chain::Output)[0];
    let mut sent = 0;
    for v6 in [false, true] {
        let (client, server) = peers(v6);
        for sport in [40_001, 40_002] {
            let f = syn_in(v6, sport, 23);
            let want = Expect {
                src: SocketAddr::new(client, sport),
                dst: SocketAddr::new(server, 23),
                proto: ipproto::TCP,
                tcp_flags: SYN,
                dir: Direction::Ingress,
                reason: Counter::DropRule,
                log_rule: 2,
                rule: 2,
                rule_id: input_id,
                state: PacketState::New,
                len: f.len(),
            };
            assert_events(&mut dp, &f, Counter::DropRule, &[want]);
            sent += 1;
        }
        let f = udp_out(v6, 40_003, 514);
        let want = Expect {
            src: SocketAddr::new(server, 40_003),
            dst: SocketAddr::new(client, 514),
            proto: ipproto::UDP,
            tcp_flags: 0,
            dir: Direction::Egress,
            reason: Counter::DropRule,
            log_rule: 1,
            rule: 1,
            rule_id: output_id,
            state: PacketState::New,
            len: f.len(),
        };
        assert_events(&mut dp, &f, Counter::DropRule, &[want]);
        sent += 1;
        // Rules that do not log, and defaults, report nothing.
        send(
            &mut dp,
            Direction::Ingress,
            &udp_in(v6, 40_004, 53),
            Counter::AcceptRule,
        );
        send(
            &mut dp,
            Direction::Ingress,
            &syn_in(v6, 40_005, 8080),
            Counter::AcceptDefault,
        );
        assert_eq!(dp.events(), vec![]);
    }
    assert_eq!(dp.log_stats(), (sent, 0, 0));
}

#[test]
fn a_log_action_reports_the_rule_that_decides_after_it() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[log]
burst = 100
[[input]]
name = "watch tcp"
proto = "tcp"
action = "log"
[[input]]
name = "web"
proto = "tcp"
dport = 80
action = "accept"
[[input]]
name = "no 81"
proto = "tcp"
dport = 81
action = "drop"
log = true
"#,
    );
    let ids = dp.rule_ids(Chain::Input);
    for v6 in [false, true] {
        let (client, server) = peers(v6);
        let expect = |dport: u16, f: &[u8], reason, log_rule, rule, rule_id| Expect {
            src: SocketAddr::new(client, 40_000 + dport),
            dst: SocketAddr::new(server, dport),
            proto: ipproto::TCP,
            tcp_flags: SYN,
            dir: Direction::Ingress,
            reason,
            log_rule,
            rule,
            rule_id,
            state: PacketState::New,
            len: f.len(),
        };
        // Logged by rule 1, accepted by rule 2.
        let f = syn_in(v6, 40_080, 80);
        let want = [expect(80, &f, Counter::AcceptRule, 1, 2, ids[0])];
        assert_events(&mut dp, &f, Counter::AcceptRule, &want);
        // Logged by rule 1, dropped by the default (which logs nothing
        // itself: no `[log] default`).
        let f = syn_in(v6, 48_000, 8000);
        let want = [expect(8000, &f, Counter::DropDefault, 1, 0, ids[0])];
        assert_events(&mut dp, &f, Counter::DropDefault, &want);
        // Logged by rule 1 on the way, then by rule 3, which decides.
        let f = syn_in(v6, 40_081, 81);
        let want = [
            expect(81, &f, Counter::DropRule, 1, 3, ids[0]),
            expect(81, &f, Counter::DropRule, 3, 3, ids[2]),
        ];
        assert_events(&mut dp, &f, Counter::DropRule, &want);
        // Not TCP: rule 1 does not match, nothing logs.
        send(
            &mut dp,
            Direction::Ingress,
            &udp_in(v6, 40_053, 53),
            Counter::DropDefault,
        );
        assert_eq!(dp.events(), vec![]);
    }
    let counts: Vec<u64> = dp.rule_counts(Chain::Input).iter().map(|c| c.0).collect();
    assert_eq!(counts, vec![6, 2, 2], "the log rule counts what it saw");
    assert_eq!(dp.log_stats(), (8, 0, 0));
}

#[test]
fn log_default_reports_what_the_defaults_drop() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
output = "accept"
[log]
default = true
burst = 100
[[input]]
proto = "tcp"
dport = 22
action = "drop"
"#,
    );
    for v6 in [false, true] {
        let (client, server) = peers(v6);
        let f = syn_in(v6, 40_009, 9);
        let want = Expect {
            src: SocketAddr::new(client, 40_009),
            dst: SocketAddr::new(server, 9),
            proto: ipproto::TCP,
            tcp_flags: SYN,
            dir: Direction::Ingress,
            reason: Counter::DropDefault,
            log_rule: 0,
            rule: 0,
            rule_id: 0,
            state: PacketState::New,
            len: f.len(),
        };
        assert_events(&mut dp, &f, Counter::DropDefault, &[want]);
        // A rule's drop is not the default's, and an accepting default is
        // not logged.
        send(
            &mut dp,
            Direction::Ingress,
            &syn_in(v6, 40_022, 22),
            Counter::DropRule,
        );
        send(
            &mut dp,
            Direction::Egress,
            &udp_out(v6, 40_123, 123),
            Counter::AcceptDefault,
        );
        assert_eq!(dp.events(), vec![]);
    }
    assert_eq!(dp.log_stats(), (2, 0, 0));
}

#[test]
fn log_invalid_reports_invalid_and_spoofed_packets() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[log]
invalid = true
burst = 100
"#,
    );
    for v6 in [false, true] {
        let (client, server) = peers(v6);
        // An ACK with no connection: INVALID, dropped by `[stateful]`.
        let f = tcp_in(v6, 40_001, 22, ACK);
        let want = Expect {
            src: SocketAddr::new(client, 40_001),
            dst: SocketAddr::new(server, 22),
            proto: ipproto::TCP,
            tcp_flags: ACK,
            dir: Direction::Ingress,
            reason: Counter::DropInvalid,
            log_rule: 0,
            rule: 0,
            rule_id: 0,
            state: PacketState::Invalid,
            len: f.len(),
        };
        assert_events(&mut dp, &f, Counter::DropInvalid, &[want]);
        // A default drop is not logged without `[log] default`.
        send(
            &mut dp,
            Direction::Ingress,
            &syn_in(v6, 40_002, 22),
            Counter::DropDefault,
        );
        assert_eq!(dp.events(), vec![]);
    }
    // A loopback source on a guarded interface.
    let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
    let f = frame_between(
        lo,
        SERVER4.into(),
        CLIENT_MAC,
        SERVER_MAC,
        Vlan::None,
        L4::Tcp {
            sport: 40_003,
            dport: 22,
            flags: SYN,
        },
    );
    let want = Expect {
        src: SocketAddr::new(lo, 40_003),
        dst: SocketAddr::new(SERVER4.into(), 22),
        proto: ipproto::TCP,
        tcp_flags: SYN,
        dir: Direction::Ingress,
        reason: Counter::DropSpoofed,
        log_rule: 0,
        rule: 0,
        rule_id: 0,
        state: PacketState::New,
        len: f.len(),
    };
    assert_events(&mut dp, &f, Counter::DropSpoofed, &[want]);
    assert_eq!(dp.log_stats(), (3, 0, 0));
}

#[test]
fn log_stateful_reports_what_the_stateful_stages_drop() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
output = "accept"
[stateful]
established = "drop"
[log]
stateful = true
burst = 100
"#,
    );
    for v6 in [false, true] {
        let mut conv = TcpConversation::new(v6, 22, fresh_port(), 1_000, 2_000);
        let f = conv.send(Side::Remote, SYN, 0);
        send(&mut dp, Direction::Ingress, &f, Counter::AcceptDefault);
        assert_eq!(dp.events(), vec![], "an accepting default is not logged");
        // The answer belongs to the flow: the established stage drops it.
        let f = conv.send(Side::Local, SYN | ACK, 0);
        let want = Expect {
            src: conv.local,
            dst: conv.remote,
            proto: ipproto::TCP,
            tcp_flags: SYN | ACK,
            dir: Direction::Egress,
            reason: Counter::DropEstablished,
            log_rule: 0,
            rule: 0,
            rule_id: 0,
            state: PacketState::Established,
            len: f.len(),
        };
        assert_events(&mut dp, &f, Counter::DropEstablished, &[want]);
    }
    assert_eq!(dp.log_stats(), (2, 0, 0));
}

#[test]
fn events_the_ring_has_no_room_for_are_counted_as_lost() {
    if lacks_privileges() {
        return;
    }
    // A burst larger than the ring holds, and nobody reading.
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
[log]
rate = "1/minute"
burst = 10000
[[input]]
proto = "tcp"
dport = 23
action = "drop"
log = true
"#,
    );
    // An `Event` and the ring's 8-byte record header per event.
    let room = u64::from(RING_BYTES) / (size_of::<Event>() as u64 + 8);
    let attempts = u16::try_from(room + 100).expect("a few thousand");
    flood(&mut dp, 23, attempts);
    let (emitted, suppressed, lost) = dp.log_stats();
    assert_eq!(suppressed, 0);
    assert_eq!(emitted + lost, u64::from(attempts), "every attempt counted");
    assert_eq!((emitted, lost), (room, u64::from(attempts) - room));
    assert_eq!(dp.events().len() as u64, emitted);
    // Read, the ring takes events again.
    flood(&mut dp, 23, 1);
    assert_eq!(dp.log_stats(), (room + 1, 0, lost));
    assert_eq!(dp.events().len(), 1);
}

#[test]
fn nothing_is_reported_unless_the_policy_asks() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "drop"
[[input]]
proto = "udp"
dport = 53
action = "drop"
"#,
    );
    for v6 in [false, true] {
        send(
            &mut dp,
            Direction::Ingress,
            &syn_in(v6, 40_001, 9),
            Counter::DropDefault,
        );
        send(
            &mut dp,
            Direction::Ingress,
            &udp_in(v6, 40_002, 53),
            Counter::DropRule,
        );
        send(
            &mut dp,
            Direction::Ingress,
            &tcp_in(v6, 40_003, 22, ACK),
            Counter::DropInvalid,
        );
    }
    assert_eq!(dp.events(), vec![]);
    assert_eq!(dp.log_stats(), (0, 0, 0));
}

/// Send `n` packets that the logging drop rule on TCP port `dport` takes,
/// alternating families.
fn flood(dp: &mut Datapath, dport: u16, n: u16) {
    for i in 0..n {
        send(
            dp,
            Direction::Ingress,
            &syn_in(i % 2 == 1, 30_000 + i, dport),
            Counter::DropRule,
        );
    }
}

/// `(emitted, suppressed)` since `before` (a `log_stats()`), checking that
/// nothing was lost and that the ring holds exactly the emitted events.
fn log_delta(dp: &mut Datapath, before: (u64, u64, u64)) -> (u64, u64) {
    let now = dp.log_stats();
    assert_eq!(
        now.2, before.2,
        "events lost with a reader draining the ring"
    );
    let emitted = now.0 - before.0;
    assert_eq!(dp.events().len() as u64, emitted);
    (emitted, now.1 - before.1)
}

#[test]
fn the_log_rate_passes_the_burst_then_the_rate() {
    if lacks_privileges() {
        return;
    }
    // One event per 2.4 hours, 3 at once. The rule program reads the
    // clock per packet, so real time passes during the test too: under
    // emulation (TCG) minutes of it. A per-day rate keeps that far below
    // one interval, so the counts are exact.
    let mut dp = Datapath::with_policy(
        r#"
[defaults]
input = "accept"
[log]
rate = "10/day"
burst = 3
[[input]]
proto = "tcp"
dport = 23
action = "drop"
log = true
"#,
    );
    let start = dp.log_stats();
    flood(&mut dp, 23, 50);
    assert_eq!(log_delta(&mut dp, start), (3, 47), "a flood at one instant");

    // A day of flood, 5 packets every 24 minutes: the rate, 10, passes. (A
    // jump of the clock refills the limiter only to its burst, so the day
    // is walked in steps shorter than one interval.)
    let before = dp.log_stats();
    for _ in 0..60 {
        dp.advance_clock(1440);
        flood(&mut dp, 23, 5);
    }
    assert_eq!(log_delta(&mut dp, before), (10, 290), "a day of flood");

    // After an idle week, the burst again, not more.
    dp.advance_clock(7 * 86_400);
    let before = dp.log_stats();
    flood(&mut dp, 23, 50);
    assert_eq!(log_delta(&mut dp, before), (3, 47), "after an idle week");
}

/// Rule 1 logs at its own rate, rule 2 at the policy's.
const OWN_RATE: &str = r#"
[defaults]
input = "accept"
[log]
rate = "1/minute"
burst = 2
[[input]]
name = "own rate"
proto = "tcp"
dport = 23
action = "drop"
log = true
log_rate = "1/minute"
log_burst = 4
[[input]]
name = "policy rate"
proto = "tcp"
dport = 25
action = "drop"
log = true
"#;

#[test]
fn a_rule_with_its_own_log_rate_has_its_own_limiter() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy(OWN_RATE);
    let ids = dp.rule_ids(Chain::Input);
    // Use up the policy's limiter first: the rule's own is untouched.
    flood(&mut dp, 25, 10);
    flood(&mut dp, 23, 10);
    flood(&mut dp, 25, 10);
    assert_eq!(dp.log_stats(), (6, 24, 0));
    let by_rule: Vec<u64> = dp.events().iter().map(|e| e.rule_id).collect();
    assert_eq!(
        by_rule,
        [[ids[1]; 2].as_slice(), &[ids[0]; 4]].concat(),
        "2 events within `[log]`'s burst, then 4 within the rule's"
    );

    // A reload refills the rule's own limiter (not the policy's).
    dp.install(OWN_RATE);
    let before = dp.log_stats();
    flood(&mut dp, 23, 10);
    flood(&mut dp, 25, 10);
    assert_eq!(log_delta(&mut dp, before), (4, 16));
}
