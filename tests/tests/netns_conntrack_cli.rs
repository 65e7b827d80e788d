//! `fw-user conntrack` and `[conntrack]` on real traffic: a TCP session, UDP
//! exchanges over IPv4 and IPv6 and a ping through a namespace pair, then
//! `list` (text and JSON, with filters), `delete` by tuple and by filter,
//! `flush`, the table size in `status`, and reloads that may or may not
//! change the tables.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use fw_tests::{
    fwcli::fw_user,
    lacks_privileges,
    netns::{
        Connect, Datagram, EchoServer, Netns, Pair, Session, ping, server_addr, tcp_probe,
        udp_exchange,
    },
    packet::{CLIENT4, CLIENT6, SERVER4, SERVER6},
};
use serde_json::Value;

const PORT: u16 = 8080;
const LATER: u16 = 9090;
const WAIT: Duration = Duration::from_millis(1500);

fn policy(conntrack: &str, extra_port: Option<u16>) -> String {
    let extra = extra_port.map_or(String::new(), |p| {
        format!("[[input]]\nproto = \"tcp\"\ndport = {p}\naction = \"accept\"\n")
    });
    format!(
        r#"
[defaults]
input = "drop"
output = "accept"

[conntrack]
{conntrack}

[[input]]
name = "echo tcp"
proto = "tcp"
dport = {PORT}
action = "accept"

[[input]]
name = "echo udp"
proto = "udp"
dport = {PORT}
action = "accept"

[[input]]
proto = "icmp"
action = "accept"

{extra}"#
    )
}

/// `fw-user conntrack ARGS --pin-path …` in the server namespace.
fn conntrack(pair: &Pair, args: &[&str]) -> fw_tests::fwcli::Run {
    let pin = pair.pin_path();
    let mut full = vec!["conntrack"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--pin-path", &pin]);
    fw_user(&pair.server, &full)
}

fn conntrack_ok(pair: &Pair, args: &[&str]) -> String {
    let r = conntrack(pair, args);
    assert!(
        r.ok,
        "conntrack {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// `conntrack list --json` with `filters`, parsed.
fn flows(pair: &Pair, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    args.extend_from_slice(filters);
    let out = conntrack_ok(pair, &args);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("list --json is not JSON ({e}): {out}"))
        .as_array()
        .expect("list --json is an array")
        .clone()
}

/// A TCP connection from `ns` whose local port the test knows.
fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s =
        ns.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `status` shows both tables (and the fragment table) at `size`.
fn assert_status_shows_the_size(pair: &Pair, size: u64) {
    let ct = &pair.status_json()["conntrack"];
    assert_eq!(num(&ct["max_entries"]), size, "{ct}");
    let tables = ct["tables"].as_array().expect("tables");
    let names: Vec<&str> = tables.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["established", "transient"], "{ct}");
    for t in tables {
        assert_eq!(num(&t["max_entries"]), size, "{t}");
    }
    assert!(num(&ct["fragments"]["max_entries"]) > 0, "{ct}");
    assert!(
        pair.status().contains(&format!("of {size}")),
        "the text status shows the capacity"
    );
}

/// `list`, JSON and text, shows the flows the client opened: one TCP
/// session from `port`, UDP over IPv4 and IPv6, a ping. Returns the IPv6
/// UDP flow's source port.
fn assert_listed(pair: &Pair, port: u16) -> u64 {
    // --- list --json: every flow, oriented as opened (the client is the
    // source), with counters both ways.
    let all = flows(pair, &[]);
    let find = |proto: &str, fam: &str| -> Vec<&Value> {
        all.iter()
            .filter(|f| f["proto"] == proto && f["family"] == fam)
            .collect()
    };
    let t = find("tcp", "ipv4");
    assert_eq!(t.len(), 1, "one TCP flow: {all:?}");
    let t = t[0];
    assert_eq!(t["src"], CLIENT4.to_string());
    assert_eq!(t["dst"], SERVER4.to_string());
    assert_eq!(num(&t["sport"]), u64::from(port));
    assert_eq!(num(&t["dport"]), u64::from(PORT));
    assert_eq!(t["state"], "ESTABLISHED");
    assert_eq!(t["table"], "established");
    assert_eq!(
        (t["chain"].as_str(), t["rule"].as_u64()),
        (Some("input"), Some(1))
    );
    // SYN, ACK, data (and maybe an ACK) out; SYN/ACK, echo back.
    assert!(num(&t["packets"]["original"]) >= 3, "{t}");
    assert!(num(&t["packets"]["reply"]) >= 2, "{t}");
    assert!(
        num(&t["bytes"]["original"]) > num(&t["bytes"]["reply"]) / 4,
        "{t}"
    );
    assert!(
        t["flags"]
            .as_array()
            .unwrap()
            .contains(&"SEEN_REPLY".into()),
        "{t}"
    );
    let left = num(&t["timeout_secs"]);
    assert!(
        left > 0 && left <= 432_000,
        "netfilter's 5 days at most: {t}"
    );
    assert!(num(&t["age_secs"]) < 60, "{t}");

    let u = find("udp", "ipv4");
    assert_eq!(u.len(), 1, "{all:?}");
    assert_eq!(u[0]["src"], CLIENT4.to_string());
    assert_eq!(num(&u[0]["dport"]), u64::from(PORT));
    assert_eq!(u[0]["state"], "REPLIED");
    assert_eq!(
        (
            num(&u[0]["packets"]["original"]),
            num(&u[0]["packets"]["reply"])
        ),
        (1, 1)
    );
    let u6 = find("udp", "ipv6");
    assert_eq!(u6.len(), 1, "{all:?}");
    assert_eq!(u6[0]["src"], CLIENT6.to_string());
    assert_eq!(u6[0]["dst"], SERVER6.to_string());
    let u6_port = num(&u6[0]["sport"]);

    let i = find("icmp", "ipv4");
    assert_eq!(i.len(), 1, "{all:?}");
    assert_eq!(i[0]["state"], "REPLIED");
    assert!(
        i[0]["icmp_id"].is_u64() && i[0]["sport"].is_null(),
        "{}",
        i[0]
    );
    assert_eq!(i[0]["rule"].as_u64(), Some(3));

    // --- the text form: one conntrack-like line per flow.
    let text = conntrack_ok(pair, &["list"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("tcp "))
        .unwrap_or_else(|| panic!("no tcp line: {text}"));
    assert!(
        line.contains(&format!(
            "ESTABLISHED  src={CLIENT4} dst={SERVER4} sport={port} dport={PORT} "
        )),
        "{line}"
    );
    assert!(
        line.contains("[SEEN_REPLY]") && line.ends_with("table=established rule=input:1"),
        "{line}"
    );
    assert_eq!(text.lines().count(), all.len(), "{text}");

    u6_port
}

/// Filters narrow the list, on the original tuple.
fn assert_filters_narrow(pair: &Pair, port: u16) {
    assert_eq!(flows(pair, &["--proto", "udp"]).len(), 2);
    assert_eq!(flows(pair, &["--proto", "tcp", "--dport", "8080"]).len(), 1);
    assert_eq!(
        flows(pair, &["--src", "192.0.2.0/24", "--dport", "8080"]).len(),
        2,
        "tcp and udp over IPv4"
    );
    assert_eq!(flows(pair, &["--src", "2001:db8::/64"]).len(), 1);
    assert!(
        flows(pair, &["--src", &SERVER4.to_string()]).is_empty(),
        "the client opened every flow"
    );
    assert_eq!(flows(pair, &["--state", "established"]).len(), 1);
    assert_eq!(flows(pair, &["--state", "replied"]).len(), 3);
    assert_eq!(
        flows(
            pair,
            &["--sport", &port.to_string(), "--dst", &SERVER4.to_string()]
        )
        .len(),
        1
    );
}

/// `flush` re-adopts this host's open sessions (as at load); with
/// `--no-adopt` it cuts them too.
fn assert_flush_keeps_open_sessions(pair: &Pair) {
    // --- flush: this host's open sessions survive it (their sockets are
    // re-adopted, as at load); with --no-adopt the tables end empty.
    let mut session = connect(&pair.client, server_addr(false, PORT));
    let session_port = session.local_addr().unwrap().port();
    assert!(echoes(&mut session, b"before flush"));
    let out = conntrack_ok(pair, &["flush"]);
    assert!(out.contains("flushed"), "{out}");
    // The server's end of the session cut above is still open too (its
    // peer's segments were dropped), so it comes back as well, as
    // netfilter's loose pickup would bring it back.
    assert!(out.contains("re-adopted 2"), "{out}");
    let left = flows(pair, &["--sport", &session_port.to_string()]);
    assert_eq!(left.len(), 1, "the re-adopted session: {left:?}");
    assert!(
        left[0]["flags"]
            .as_array()
            .unwrap()
            .contains(&"ADOPTED".into()),
        "{left:?}"
    );
    assert_eq!(
        left[0]["src"],
        CLIENT4.to_string(),
        "adopted as opened by the client (the server listens on its port)"
    );
    assert!(
        echoes(&mut session, b"after flush"),
        "the session survives a flush"
    );
    let out = conntrack_ok(pair, &["flush", "--no-adopt"]);
    assert!(out.contains("flushed"), "{out}");
    assert!(!out.contains("re-adopted"), "{out}");
}

#[test]
fn list_delete_and_flush_real_flows() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _echo = EchoServer::start(&pair.server, PORT);
    pair.load(&policy("max_entries = 2048", None));

    assert_status_shows_the_size(&pair, 2048);

    let mut tcp = connect(&pair.client, server_addr(false, PORT));
    let port = tcp.local_addr().unwrap().port();
    assert!(echoes(&mut tcp, b"hello"));
    assert_eq!(
        udp_exchange(&pair.client, server_addr(false, PORT), WAIT),
        Datagram::Answered
    );
    assert_eq!(
        udp_exchange(&pair.client, server_addr(true, PORT), WAIT),
        Datagram::Answered
    );
    assert!(ping(&pair.client, IpAddr::V4(SERVER4)));

    let u6_port = assert_listed(&pair, port);

    assert_filters_narrow(&pair, port);

    // --- delete the TCP tuple, written from the server's end: the session
    // is cut, its next segment is INVALID (tcp_syn_only).
    let out = conntrack_ok(
        &pair,
        &[
            "delete",
            "tcp",
            &format!("{SERVER4}:{PORT}"),
            &format!("{CLIENT4}:{port}"),
        ],
    );
    assert!(out.contains("deleted tcp"), "{out}");
    assert!(flows(&pair, &["--proto", "tcp"]).is_empty());
    let invalid = pair.counter("input", "drop-invalid");
    assert!(!echoes(&mut tcp, b"after"), "the deleted connection is cut");
    assert!(pair.counter("input", "drop-invalid") > invalid);
    assert!(
        flows(&pair, &["--proto", "tcp"]).is_empty(),
        "a mid-stream segment does not bring the flow back"
    );
    // Deleting it again: no such connection, and where to look.
    let r = conntrack(
        &pair,
        &[
            "delete",
            "tcp",
            &format!("{CLIENT4}:{port}"),
            &format!("{SERVER4}:{PORT}"),
        ],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("no tracked connection") && r.stderr.contains("conntrack list"),
        "{}",
        r.stderr
    );

    // IPv6 tuple in brackets.
    let out = conntrack_ok(
        &pair,
        &[
            "delete",
            "udp",
            &format!("[{CLIENT6}]:{u6_port}"),
            &format!("[{SERVER6}]:{PORT}"),
        ],
    );
    assert!(out.contains("deleted udp"), "{out}");
    assert!(flows(&pair, &["--src", "2001:db8::/64"]).is_empty());

    // --- delete by filter.
    let out = conntrack_ok(&pair, &["delete", "--proto", "udp"]);
    assert!(out.contains("deleted 1 connection"), "{out}");
    assert!(flows(&pair, &["--proto", "udp"]).is_empty());
    assert_eq!(flows(&pair, &["--proto", "icmp"]).len(), 1);

    assert_flush_keeps_open_sessions(&pair);
    assert!(flows(&pair, &[]).is_empty());
    assert_eq!(num(&pair.status_json()["conntrack"]["entries"]), 0);
}

#[test]
fn table_size_is_fixed_while_loaded_and_timeouts_follow_reloads() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _echo = EchoServer::start(&pair.server, PORT);
    let _later = EchoServer::start(&pair.server, LATER);
    pair.load(&policy(
        "max_entries = 2048\ntcp_established = \"1h\"",
        None,
    ));
    let before = pair.status_json();
    let mut session = Session::open(&pair.client, server_addr(false, PORT));
    assert!(session.echo(b"one"));

    // A reload asking another size is refused before anything changes,
    // and says what to do.
    for (conntrack, asked) in [
        ("max_entries = 4096", "the policy asks 4096"),
        ("", "the policy asks 65536 (the default"),
    ] {
        let file = pair.policy_file("resize.toml", &policy(conntrack, Some(LATER)));
        let r = fw_user(
            &pair.server,
            &[
                "load",
                &file,
                "--iface",
                &pair.server_if,
                "--pin-path",
                &pair.pin_path(),
                "--detach",
            ],
        );
        assert!(!r.ok, "a resize must fail: {}", r.stdout);
        assert!(
            r.stderr.contains(&format!(
                "max_entries` is 2048 in the running firewall, {asked}"
            )),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("fw-user unload"), "{}", r.stderr);
        let now = pair.status_json();
        assert_eq!(now["policy_fingerprint"], before["policy_fingerprint"]);
        assert_eq!(now["generation"], before["generation"]);
        assert_eq!(
            tcp_probe(&pair.client, server_addr(false, LATER), WAIT),
            Connect::TimedOut,
            "the old policy is still in force"
        );
        assert!(session.echo(b"still"));
    }

    // The established timeout is the policy's.
    let tcp = flows(&pair, &["--proto", "tcp", "--dport", "8080"]);
    assert_eq!(tcp.len(), 1, "{tcp:?}");
    let left = num(&tcp[0]["timeout_secs"]);
    assert!(
        (3500..=3600).contains(&left),
        "tcp_established = 1h: {left} s left"
    );

    // A reload with the same size and new timeouts works; the next packet
    // of the session takes the new timeout.
    pair.load(&policy(
        "max_entries = 2048\ntcp_established = \"2h\"\nudp_stream = 600",
        Some(LATER),
    ));
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, LATER), WAIT),
        Connect::Echoed,
        "the new policy is in force"
    );
    assert!(session.echo(b"two"));
    let tcp = flows(&pair, &["--proto", "tcp", "--dport", "8080"]);
    let left = num(&tcp[0]["timeout_secs"]);
    assert!(
        (7100..=7200).contains(&left),
        "tcp_established = 2h after the reload: {left} s left"
    );
    assert_eq!(
        udp_exchange(&pair.client, server_addr(false, PORT), WAIT),
        Datagram::Answered
    );
    let udp = flows(&pair, &["--proto", "udp"]);
    let left = num(&udp[0]["timeout_secs"]);
    assert!(
        (590..=600).contains(&left),
        "udp_stream = 600: {left} s left"
    );
    assert_eq!(
        num(&pair.status_json()["conntrack"]["max_entries"]),
        2048,
        "the size is kept"
    );

    // Not loaded: the same answer as status.
    pair.unload();
    let r = conntrack(&pair, &["list"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("no firewall is loaded"), "{}", r.stderr);
}
