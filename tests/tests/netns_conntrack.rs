//! Connection tracking on real traffic: two namespaces joined by a veth
//! pair, the firewall loaded by the real `fw-user` in the server
//! namespace, real sockets on both ends. Real TCP (with Linux's window
//! scaling), UDP and ping flows land in the right table; ICMP "too big"
//! errors about a live flow reach the stack (its route MTU drops) while
//! forged ones do not; datagrams larger than the MTU pass in fragments
//! both ways; a flood of 20 000 spoofed SYNs against a 1024-entry table
//! cannot push out an established session; the firewall keeps its state
//! when `fw-user` is killed, restarted, or loads another policy; the
//! foreground `fw-user` sweeps expired entries from both tables.
//!
//! Frames the client's stack would not build (ICMP errors, fragments cut
//! by hand, spoofed SYNs) are sent from the client's interface with
//! `AF_PACKET`. Spoofed sources come from 198.51.100.0/24 and
//! 203.0.113.0/24, which the server has no route to, so nothing answers
//! them and nothing leaves the namespaces.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use fw_common::{
    conntrack::{CT_FLAG_LIBERAL, CtEntry, CtKey, CtState, tcp_flags::SYN},
    ipproto, maps,
};
use fw_tests::{
    datapath::{Flow, ct_key},
    lacks_privileges,
    netns::{
        Capture, Connect, Datagram, EchoServer, Pair, Session, client_addr, ping, server_addr,
        tcp_probe, udp_exchange, udp_exchange_len,
    },
    packet::{
        CLIENT4, CLIENT6, IcmpError, SERVER4, SERVER6, Segment, Way, fragment, icmp_error, payload,
        quote, tcp_segment, udp_datagram,
    },
};

const TCP_PORT: u16 = 8080;
const BLOCKED: u16 = 9090;
const UDP_PORT: u16 = 5353;
const WAIT: Duration = Duration::from_millis(1500);

/// The room for a fragment's fragmentable part in a 1500-byte MTU, for
/// both families.
const CHUNK: usize = 1448;

fn policy(extra: &str) -> String {
    format!(
        r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
proto = "tcp"
dport = {TCP_PORT}
action = "accept"

[[input]]
proto = "udp"
dport = {UDP_PORT}
action = "accept"

[[input]]
proto = "icmp"
icmp_type = "echo-request"
action = "accept"

[[input]]
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
{extra}"#
    )
}

fn server_ip(v6: bool) -> IpAddr {
    if v6 { SERVER6.into() } else { SERVER4.into() }
}

/// The server's connection-table key of a session the client opened.
fn session_key(s: &Session) -> CtKey {
    ct_key(s.peer_addr(), s.local_addr(), ipproto::TCP)
}

fn find<'a>(flows: &'a [Flow], key: &CtKey) -> Option<&'a CtEntry> {
    flows.iter().find(|(k, _)| k == key).map(|(_, e)| e)
}

fn state(e: &CtEntry) -> CtState {
    CtState::from_u8(e.state)
}

/// The entries of `fw-user conntrack list --json`: a top-level array, or
/// the first array found under a top-level key.
fn listed(json: &serde_json::Value) -> Vec<&serde_json::Value> {
    if let Some(a) = json.as_array() {
        return a.iter().collect();
    }
    json.as_object()
        .and_then(|o| o.values().find_map(serde_json::Value::as_array))
        .map_or_else(
            || panic!("no list of connections in {json}"),
            |a| a.iter().collect(),
        )
}

/// Does a listed entry mention `port`, as a number or inside a string
/// such as "192.0.2.2:40000"? Field names are not assumed.
fn mentions(entry: &serde_json::Value, port: u16) -> bool {
    match entry {
        serde_json::Value::Number(n) => n.as_u64() == Some(u64::from(port)),
        serde_json::Value::String(s) => s
            .split(|c: char| !c.is_ascii_digit())
            .any(|w| w == port.to_string()),
        serde_json::Value::Array(a) => a.iter().any(|v| mentions(v, port)),
        serde_json::Value::Object(o) => o.values().any(|v| mentions(v, port)),
        _ => false,
    }
}

fn listed_state(entry: &serde_json::Value) -> &str {
    entry["state"]
        .as_str()
        .unwrap_or_else(|| panic!("no state in {entry}"))
}

/// Wait up to `timeout` for `check` to hold.
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_tcp_udp_and_ping_flows_are_tracked_in_the_right_tables() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _tcp = EchoServer::start(&pair.server, TCP_PORT);
    let _udp = EchoServer::start(&pair.server, UDP_PORT);
    pair.load(&policy(""));
    let mut sessions = Vec::new();
    for v6 in [false, true] {
        let mut s = Session::open(&pair.client, server_addr(v6, TCP_PORT));
        assert!(s.echo(b"hello"), "v6={v6}");
        assert_eq!(
            udp_exchange(&pair.client, server_addr(v6, UDP_PORT), WAIT),
            Datagram::Answered,
            "v6={v6}"
        );
        assert!(ping(&pair.client, server_ip(v6)), "v6={v6}");
        let (main, transient) = pair.pinned_tables();
        let e = find(&main, &session_key(&s))
            .unwrap_or_else(|| panic!("v6={v6}: session not in FW_CONNTRACK: {main:?}"));
        assert_eq!(state(e), CtState::TcpEstablished);
        assert_eq!(
            e.flags & CT_FLAG_LIBERAL,
            0,
            "seen from its SYN: windows checked"
        );
        let family = if v6 { 6 } else { 4 };
        let in_main = |proto: u8, want: CtState| {
            main.iter().any(|(k, e)| {
                k.family == family
                    && k.proto == proto
                    && state(e) == want
                    && (proto != ipproto::UDP || k.local_port == UDP_PORT)
            })
        };
        assert!(
            in_main(ipproto::UDP, CtState::UdpReplied),
            "v6={v6}: answered UDP in FW_CONNTRACK: {main:?}"
        );
        let icmp = if v6 { ipproto::ICMPV6 } else { ipproto::ICMP };
        assert!(
            in_main(icmp, CtState::IcmpReplied),
            "v6={v6}: answered ping in FW_CONNTRACK: {main:?}"
        );
        assert!(
            transient
                .iter()
                .all(|(k, _)| k.family != family || k.proto != ipproto::TCP),
            "v6={v6}: nothing of TCP left in the transient table: {transient:?}"
        );
        sessions.push(s);
    }

    // 2 MiB each way per session, in 64 KiB echoes: Linux scales its
    // windows; not one of its segments may be INVALID.
    let invalid = || {
        (
            pair.counter("input", "drop-invalid"),
            pair.counter("output", "drop-invalid"),
        )
    };
    let before = invalid();
    let chunk = payload(65_536);
    for s in &mut sessions {
        for i in 0..32 {
            assert!(s.echo(&chunk), "bulk echo {i}");
        }
    }
    assert_eq!(invalid(), before, "real traffic was judged INVALID");

    // A connection that closes goes through the FIN states into TIME_WAIT,
    // in the transient table.
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, TCP_PORT), WAIT),
        Connect::Echoed
    );
    let session_ports: Vec<u16> = sessions.iter().map(|s| s.local_addr().port()).collect();
    assert!(
        eventually(Duration::from_secs(3), || {
            pair.pinned_tables().1.iter().any(|(k, e)| {
                k.proto == ipproto::TCP
                    && k.local_port == TCP_PORT
                    && !session_ports.contains(&k.remote_port)
                    && state(e) == CtState::TcpTimeWait
            })
        }),
        "a closed connection in TIME_WAIT in the transient table: {:?}",
        pair.pinned_tables()
    );

    // What `fw-user conntrack list` shows.
    let json = pair.conntrack_list_json();
    for s in &sessions {
        let port = s.local_addr().port();
        let entry = listed(&json)
            .into_iter()
            .find(|e| mentions(e, port) && mentions(e, TCP_PORT))
            .unwrap_or_else(|| panic!("session port {port} not listed: {json}"));
        assert_eq!(listed_state(entry), "ESTABLISHED", "{entry}");
    }
}

/// The server's last data segment to the client on a session, and the
/// sequence number right after it: what the server's stack has sent
/// (`snd_nxt`), which an ICMP error must quote to be believed (Linux
/// ignores errors quoting sequence numbers outside `snd_una..=snd_nxt`).
fn last_server_segment(cap: &Capture, s: &Session) -> (Vec<u8>, u32) {
    let (server, client) = (s.peer_addr(), s.local_addr());
    cap.frames()
        .into_iter()
        .filter_map(|f| {
            let p = etherparse::SlicedPacket::from_ethernet(&f).ok()?;
            let (src, dst) = match p.net? {
                etherparse::NetSlice::Ipv4(ip) => (
                    IpAddr::from(ip.header().source_addr()),
                    IpAddr::from(ip.header().destination_addr()),
                ),
                etherparse::NetSlice::Ipv6(ip) => (
                    IpAddr::from(ip.header().source_addr()),
                    IpAddr::from(ip.header().destination_addr()),
                ),
            };
            let etherparse::TransportSlice::Tcp(t) = p.transport? else {
                return None;
            };
            let ok = src == server.ip()
                && dst == client.ip()
                && t.source_port() == server.port()
                && t.destination_port() == client.port()
                && !t.payload().is_empty();
            let next = t
                .sequence_number()
                .wrapping_add(u32::try_from(t.payload().len()).ok()?);
            ok.then(|| (f.clone(), next))
        })
        .next_back()
        .expect("the server's echo was captured")
}

/// `frame` (a TCP segment) with another sequence number or destination
/// port: the checksum is left stale, as only the quote is used.
fn patched(frame: &[u8], seq: u32, dport: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let tcp = 14 + fw_tests::packet::ip_header_len(frame);
    f[tcp + 2..tcp + 4].copy_from_slice(&dport.to_be_bytes());
    f[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    f
}

/// The MTU `ip route get` reports in the server namespace for the client.
fn route_mtu(pair: &Pair, v6: bool) -> Option<u32> {
    let to = if v6 {
        CLIENT6.to_string()
    } else {
        CLIENT4.to_string()
    };
    let family = if v6 { "-6" } else { "-4" };
    let out = pair.server.exec(&["ip", family, "route", "get", &to]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

/// Open a session, learn the server's sequence number, and send the
/// server a "too big" error from an on-link router quoting the session
/// (or, with `forged`, a flow one port away). Returns the session so it
/// outlives the check.
fn too_big_about_a_session(pair: &Pair, v6: bool, mtu: u16, forged: bool) -> Session {
    let mut s = Session::open(&pair.client, server_addr(v6, TCP_PORT));
    let cap = Capture::start(&pair.client, &pair.client_if);
    assert!(s.echo(b"ping"));
    std::thread::sleep(Duration::from_millis(100));
    let (segment, next) = last_server_segment(&cap, &s);
    let dport = s.local_addr().port() + u16::from(forged);
    let inner = patched(&segment, next, dport);
    let (router, kind, quoted): (IpAddr, _, _) = if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe).into(),
            IcmpError::PacketTooBig {
                mtu: u32::from(mtu),
            },
            quote(&inner, 1232),
        )
    } else {
        (
            Ipv4Addr::new(192, 0, 2, 254).into(),
            IcmpError::FragNeeded { mtu },
            quote(&inner, 8),
        )
    };
    let error = icmp_error(Way::In, router, server_ip(v6), kind, &quoted);
    pair.send_to_server(&[error]);
    s
}

#[test]
fn too_big_errors_about_a_live_flow_are_related_forged_ones_are_dropped() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let pair = Pair::new();
        let _tcp = EchoServer::start(&pair.server, TCP_PORT);
        // Control, no firewall yet: the stack believes the error and
        // lowers the route's MTU.
        let _s = too_big_about_a_session(&pair, v6, 1400, false);
        assert!(
            eventually(WAIT, || route_mtu(&pair, v6) == Some(1400)),
            "v6={v6} control: the error quoting the session lowered the path MTU"
        );

        pair.load(&policy(""));
        let related = || pair.counter("input", "accept-related");
        let invalid = || pair.counter("input", "drop-invalid");
        let (r0, i0) = (related(), invalid());
        let _s = too_big_about_a_session(&pair, v6, 1300, false);
        assert!(
            eventually(WAIT, || related() == r0 + 1),
            "v6={v6}: accept-related moved"
        );
        assert!(
            eventually(WAIT, || route_mtu(&pair, v6) == Some(1300)),
            "v6={v6}: the RELATED error reached the stack"
        );
        assert_eq!(invalid(), i0);

        let _s = too_big_about_a_session(&pair, v6, 1280, true);
        assert!(
            eventually(WAIT, || invalid() == i0 + 1),
            "v6={v6}: drop-invalid moved for the error about no flow"
        );
        assert_eq!(related(), r0 + 1);
        assert_eq!(route_mtu(&pair, v6), Some(1300), "v6={v6}");
    }
}

/// Cut a datagram of `len` bytes from the client's `port` to the server's
/// echo port by hand, send its fragments, and return the size of the
/// echo the client receives.
fn hand_cut_exchange(pair: &Pair, v6: bool, port: u16, len: usize) -> Option<usize> {
    let from = client_addr(v6, port);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = pair.client.spawn(move || {
        let sock = std::net::UdpSocket::bind(from).expect("bind");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 65_536];
        sock.recv(&mut buf).ok()
    });
    rx.recv().unwrap();
    let datagram = udp_datagram(Way::In, from, server_addr(v6, UDP_PORT), len);
    let id = u32::from(port);
    pair.send_to_server(&fragment(&datagram, CHUNK, id));
    waiter.join().unwrap()
}

#[test]
fn datagrams_larger_than_the_mtu_pass_in_fragments_both_ways() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _udp = EchoServer::start(&pair.server, UDP_PORT);
    for v6 in [false, true] {
        assert_eq!(
            hand_cut_exchange(&pair, v6, 41_000, 4000),
            Some(4000),
            "v6={v6} control: Linux reassembles the hand-cut fragments"
        );
    }
    pair.load(&policy(""));
    let frag = |dir: &str| pair.counter(dir, "accept-fragment");
    for v6 in [false, true] {
        let (in0, out0) = (frag("input"), frag("output"));
        assert_eq!(
            udp_exchange_len(&pair.client, server_addr(v6, UDP_PORT), 4000, WAIT),
            Some(4000),
            "v6={v6}: 4000 bytes there and back over a 1500-byte MTU"
        );
        assert!(
            frag("input") >= in0 + 2 && frag("output") >= out0 + 2,
            "v6={v6}: the later fragments of both datagrams were counted"
        );
        assert_eq!(
            hand_cut_exchange(&pair, v6, 41_001, 4000),
            Some(4000),
            "v6={v6}: hand-cut fragments pass too"
        );

        let dropped = pair.counter("input", "drop-fragment");
        let datagram = udp_datagram(
            Way::In,
            client_addr(v6, 41_002),
            server_addr(v6, UDP_PORT),
            4000,
        );
        let lone = fragment(&datagram, CHUNK, 0x7777)[1].clone();
        pair.send_to_server(&[lone]);
        assert!(
            eventually(WAIT, || pair.counter("input", "drop-fragment")
                == dropped + 1),
            "v6={v6}: a later fragment on its own is dropped"
        );
    }
}

/// A small deterministic generator for the flood's addresses and ports.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` SYNs to the server's TCP port from random spoofed sources.
fn spoofed_syns(rng: &mut XorShift, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let r = rng.next();
            let net = if r & 1 == 0 {
                [198, 51, 100]
            } else {
                [203, 0, 113]
            };
            let host = u8::try_from((r >> 8) % 254 + 1).unwrap();
            let sport = u16::try_from((r >> 16) % 50_000 + 10_000).unwrap();
            let src = SocketAddr::new(Ipv4Addr::new(net[0], net[1], net[2], host).into(), sport);
            tcp_segment(
                Way::In,
                src,
                server_addr(false, TCP_PORT),
                &Segment {
                    seq: u32::try_from(r >> 32).unwrap(),
                    window: 64_240,
                    flags: SYN,
                    mss: Some(1460),
                    wscale: Some(7),
                    ..Segment::default()
                },
            )
        })
        .collect()
}

/// `[conntrack] max_entries` of the flood test.
const TABLE: u32 = 1024;
/// 20 batches of 1000 spoofed SYNs, the sessions echoing between them.
const BATCHES: usize = 20;
const BATCH: usize = 1000;

#[test]
fn a_syn_flood_cannot_push_out_an_established_session() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _tcp = EchoServer::start(&pair.server, TCP_PORT);
    pair.load(&policy(&format!("\n[conntrack]\nmax_entries = {TABLE}\n")));
    for name in [maps::CONNTRACK, maps::CT_TRANSIENT] {
        assert_eq!(
            pair.pinned_capacity(name),
            TABLE,
            "{name} sized by max_entries"
        );
    }
    let mut sessions: Vec<Session> = [false, true]
        .into_iter()
        .map(|v6| Session::open(&pair.client, server_addr(v6, TCP_PORT)))
        .collect();
    let accepted_before = pair.counter("input", "accept-rule");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for batch in 0..BATCHES {
        pair.send_to_server(&spoofed_syns(&mut rng, BATCH));
        for (i, s) in sessions.iter_mut().enumerate() {
            assert!(
                s.echo(format!("batch {batch}").as_bytes()),
                "session {i} broke after {} spoofed SYNs",
                (batch + 1) * BATCH
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the flood took {:?}",
        started.elapsed()
    );
    for s in &mut sessions {
        assert!(s.echo(b"after the flood"));
    }
    assert!(
        pair.counter("input", "accept-rule") >= accepted_before + 19_000,
        "the spoofed SYNs reached the firewall and were accepted by the rule"
    );

    let (main, transient) = pair.pinned_tables();
    for s in &sessions {
        let e = find(&main, &session_key(s))
            .unwrap_or_else(|| panic!("session gone from FW_CONNTRACK: {main:?}"));
        assert_eq!(state(e), CtState::TcpEstablished);
    }
    let syn_sent = transient
        .iter()
        .filter(|(_, e)| state(e) == CtState::TcpSynSent)
        .count();
    assert!(
        syn_sent >= TABLE as usize * 3 / 4 && transient.len() <= TABLE as usize,
        "the transient table is full of SYN_SENT: {syn_sent} of {} entries, capacity {TABLE}",
        transient.len()
    );

    // What the operator sees.
    let status = pair.status_json();
    let by_state = &status["conntrack"]["by_state"];
    assert!(
        by_state["ESTABLISHED"].as_u64() >= Some(2),
        "status counts the sessions: {by_state}"
    );
    assert!(
        by_state["SYN_SENT"].as_u64() >= Some(u64::from(TABLE) * 3 / 4),
        "status counts the transient table: {by_state}"
    );
    let json = pair.conntrack_list_json();
    let list = listed(&json);
    for s in &sessions {
        let port = s.local_addr().port();
        let entry = list
            .iter()
            .find(|e| mentions(e, port) && mentions(e, TCP_PORT))
            .unwrap_or_else(|| panic!("session port {port} not listed"));
        assert_eq!(listed_state(entry), "ESTABLISHED");
    }
    assert!(
        list.iter()
            .filter(|e| listed_state(e) == "SYN_SENT")
            .count()
            >= TABLE as usize * 3 / 4,
        "conntrack list shows the full transient table"
    );
}

/// Keys of the established flows in `FW_CONNTRACK`.
fn established_keys(pair: &Pair) -> Vec<CtKey> {
    pair.pinned_tables()
        .0
        .into_iter()
        .filter(|(_, e)| state(e) == CtState::TcpEstablished)
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn state_survives_a_killed_fw_user_a_restart_and_a_new_policy() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _tcp = EchoServer::start(&pair.server, TCP_PORT);
    let _blk = EchoServer::start(&pair.server, BLOCKED);
    let first = pair.policy_file("first.toml", &policy(""));
    let fg = pair.load_foreground(&first);
    let mut sessions: Vec<Session> = [false, true]
        .into_iter()
        .map(|v6| Session::open(&pair.client, server_addr(v6, TCP_PORT)))
        .collect();
    for s in &mut sessions {
        assert!(s.echo(b"before"));
    }
    let before = established_keys(&pair);
    assert!(before.len() >= 2, "{before:?}");

    let status = fg.stop(nix::sys::signal::Signal::SIGKILL);
    assert!(!status.success(), "fw-user was killed: {status}");
    for s in &mut sessions {
        assert!(
            s.echo(b"fw-user is gone"),
            "the pinned firewall keeps state"
        );
    }
    for v6 in [false, true] {
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, BLOCKED), WAIT),
            Connect::TimedOut,
            "v6={v6}: and keeps filtering"
        );
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, TCP_PORT), WAIT),
            Connect::Echoed,
            "v6={v6}: and keeps admitting"
        );
    }

    // Restart, with a policy that changes timeouts and opens one more port.
    let second = pair.policy_file(
        "second.toml",
        &policy("\n[[input]]\nproto = \"tcp\"\ndport = 7070\naction = \"accept\"\n\n[conntrack]\ntcp_established = \"1d\"\n"),
    );
    let fg = pair.load_foreground(&second);
    for s in &mut sessions {
        assert!(s.echo(b"after the restart"));
    }
    let (main, _) = pair.pinned_tables();
    for key in &before {
        let e = find(&main, key)
            .unwrap_or_else(|| panic!("an established connection was lost: {key:?}"));
        assert_eq!(state(e), CtState::TcpEstablished);
    }
    for s in &sessions {
        let e = find(&main, &session_key(s)).expect("session tracked");
        assert_eq!(
            e.flags & CT_FLAG_LIBERAL,
            0,
            "the restart kept the entry instead of adopting the socket anew"
        );
    }
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut
    );
    let status = fg.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}");
    for s in &mut sessions {
        assert!(s.echo(b"after fw-user left"));
    }
}

#[test]
fn the_foreground_fw_user_sweeps_expired_entries_from_both_tables() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _udp = EchoServer::start(&pair.server, UDP_PORT);
    let file = pair.policy_file(
        "short.toml",
        &policy("\n[conntrack]\nudp = 1\nudp_stream = 2\ntcp_syn_sent = 1\n"),
    );
    let _fg = pair.load_foreground(&file);
    assert_eq!(
        udp_exchange(&pair.client, server_addr(false, UDP_PORT), WAIT),
        Datagram::Answered
    );
    // A SYN from an address nobody can answer: it stays SYN_SENT.
    pair.send_to_server(&spoofed_syns(&mut XorShift(7), 1));
    let udp = |f: &Flow| f.0.proto == ipproto::UDP && f.0.local_port == UDP_PORT;
    let syn = |f: &Flow| f.0.proto == ipproto::TCP && state(&f.1) == CtState::TcpSynSent;
    assert!(
        eventually(WAIT, || {
            let (main, transient) = pair.pinned_tables();
            main.iter().any(udp) && transient.iter().any(syn)
        }),
        "both flows tracked: {:?}",
        pair.pinned_tables()
    );
    // No packet touches them again: only the sweep (every 10 s) can
    // remove them.
    assert!(
        eventually(Duration::from_secs(25), || {
            let (main, transient) = pair.pinned_tables();
            !main.iter().any(udp) && !transient.iter().any(syn)
        }),
        "expired entries swept from both tables: {:?}",
        pair.pinned_tables()
    );
}
