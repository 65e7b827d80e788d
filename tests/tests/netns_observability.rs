//! Observability on real traffic: two namespaces joined by a veth pair,
//! the firewall loaded by the real `fw-user` in the server namespace.
//!
//! Known numbers of hand-built frames (so their sizes are known too) are
//! sent from the client with `AF_PACKET`; the counters `fw-user status`
//! reports per rule, per default and per reason must match them exactly,
//! before and after a reload that keeps some rules, changes one, removes
//! one and inserts one. A flood of logged drops is sent at a known rate:
//! the events delivered stay within rate × time + burst, and the rest is
//! counted and reported as suppressed. The metrics endpoint is scraped
//! with a real HTTP client and parsed as Prometheus exposition text.
//! `fw-user events` follows events as text or into a syslog socket, and a
//! second reader is refused.
#![expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "Prometheus samples are f64; the counts compared are small integers, exact in an f64"
)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use fw_common::conntrack::tcp_flags::{ACK, SYN};
use fw_tests::{
    fwcli::fw_user,
    lacks_privileges,
    netns::{Pair, client_addr, server_addr},
    packet::{Segment, Way, tcp_segment, udp_datagram},
};

const APP: u16 = 8080;
const BLOCKED: u16 = 9000;
const BLOCKED_NEXT: u16 = 9001;
const MDNS: u16 = 5353;
const CLOSED: u16 = 7000;
const NEW: u16 = 6000;
const UNLISTED: u16 = 1234;

const POLICY_A: &str = r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
name = "app"
proto = "tcp"
dport = 8080
action = "accept"

[[input]]
name = "blocked"
proto = "tcp"
dport = 9000
action = "drop"

[[input]]
name = "mdns"
proto = "udp"
dport = 5353
action = "accept"

[[input]]
name = "closed"
proto = "tcp"
dport = 7000
action = "reject"

# The client's own multicast listener reports: counted here, not by the
# default the tests count exactly.
[[input]]
name = "icmpv6"
proto = "icmpv6"
action = "accept"
"#;

/// `POLICY_A` edited: a rule inserted first, `app` and `mdns` unchanged
/// (but moved), `blocked` changed, `closed` removed.
const POLICY_B: &str = r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
name = "new"
proto = "tcp"
dport = 6000
action = "accept"

[[input]]
name = "app"
proto = "tcp"
dport = 8080
action = "accept"

[[input]]
name = "blocked"
proto = "tcp"
dport = 9001
action = "drop"

[[input]]
name = "mdns"
proto = "udp"
dport = 5353
action = "accept"

[[input]]
name = "icmpv6"
proto = "icmpv6"
action = "accept"
"#;

/// A SYN from a client port of its own to `port` (a new connection each).
fn syn(v6: bool, sport: u16, port: u16) -> Vec<u8> {
    tcp_segment(
        Way::In,
        client_addr(v6, sport),
        server_addr(v6, port),
        &Segment {
            seq: 1000,
            window: 64_240,
            flags: SYN,
            mss: Some(1460),
            ..Segment::default()
        },
    )
}

/// An ACK no connection knows: INVALID.
fn stray_ack(v6: bool, sport: u16, port: u16) -> Vec<u8> {
    tcp_segment(
        Way::In,
        client_addr(v6, sport),
        server_addr(v6, port),
        &Segment {
            seq: 5000,
            ack: 7000,
            window: 500,
            flags: ACK,
            ..Segment::default()
        },
    )
}

fn udp(v6: bool, sport: u16, port: u16) -> Vec<u8> {
    udp_datagram(Way::In, client_addr(v6, sport), server_addr(v6, port), 32)
}

/// `count` frames built by `build(v6, client port)`, alternating IPv4 and
/// IPv6, with their total size.
fn frames(
    count: u16,
    first_port: u16,
    build: impl Fn(bool, u16) -> Vec<u8>,
) -> (Vec<Vec<u8>>, u64) {
    let f: Vec<Vec<u8>> = (0..count)
        .map(|i| build(i % 2 == 1, first_port + i))
        .collect();
    let bytes = f.iter().map(|f| f.len() as u64).sum();
    (f, bytes)
}

/// (packets, bytes) of every input rule by name, and of the input default.
/// Packets, bytes and identity of a rule, by name.
type RuleCounts = HashMap<String, (u64, u64, String)>;

fn input_counts(pair: &Pair) -> (RuleCounts, (u64, u64)) {
    let s = pair.status_json();
    let input = &s["chains"][0];
    assert_eq!(input["name"], "input");
    let rules = input["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("named rule").to_string(),
                (
                    r["packets"].as_u64().unwrap(),
                    r["bytes"].as_u64().unwrap(),
                    r["id"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    (
        rules,
        (
            input["packets"].as_u64().unwrap(),
            input["bytes"].as_u64().unwrap(),
        ),
    )
}

fn counts_of(rules: &RuleCounts, name: &str) -> (u64, u64) {
    let (p, b, _) = rules
        .get(name)
        .unwrap_or_else(|| panic!("no rule {name}: {rules:?}"));
    (*p, *b)
}

/// The counters of the rules must reach exactly what was sent; the
/// datapath counts as the frames arrive, so allow it a moment.
fn settle(pair: &Pair, check: impl Fn(&Pair) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check(pair) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rule_counters_are_exact_and_unchanged_rules_keep_theirs_across_a_reload() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    pair.load(POLICY_A);
    let before = input_counts(&pair);
    assert!(
        before.0.values().all(|(p, b, _)| *p == 0 && *b == 0),
        "{before:?}"
    );

    let (app, app_bytes) = frames(5, 40_000, |v6, p| syn(v6, p, APP));
    let (blocked, blocked_bytes) = frames(3, 41_000, |v6, p| syn(v6, p, BLOCKED));
    let (mdns, mdns_bytes) = frames(4, 42_000, |v6, p| udp(v6, p, MDNS));
    let (closed, closed_bytes) = frames(2, 43_000, |v6, p| syn(v6, p, CLOSED));
    let (other, other_bytes) = frames(6, 44_000, |v6, p| syn(v6, p, UNLISTED));
    let (acks, acks_bytes) = frames(2, 45_000, |v6, p| stray_ack(v6, p, APP));
    let drops_before = pair.counter("input", "drop-default");
    for f in [&app, &blocked, &mdns, &closed, &other, &acks] {
        pair.send_to_server(f);
    }
    settle(&pair, |p| input_counts(p).1.0 >= 6);
    let (rules, default) = input_counts(&pair);
    assert_eq!(counts_of(&rules, "app"), (5, app_bytes));
    assert_eq!(counts_of(&rules, "blocked"), (3, blocked_bytes));
    assert_eq!(counts_of(&rules, "mdns"), (4, mdns_bytes));
    assert_eq!(counts_of(&rules, "closed"), (2, closed_bytes));
    assert_eq!(default, (6, other_bytes), "the input default");
    // The same packets by reason; INVALID never reaches a rule.
    assert_eq!(pair.counter("input", "accept-rule"), 9);
    assert_eq!(pair.counter("input", "drop-rule"), 3);
    assert_eq!(pair.counter("input", "reject-rule"), 2);
    assert_eq!(pair.counter("input", "drop-default") - drops_before, 6);
    assert_eq!(pair.counter("input", "drop-invalid"), 2);
    let invalid_bytes = pair.status_json()["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["direction"] == "input" && c["name"] == "drop-invalid")
        .and_then(|c| c["bytes"].as_u64())
        .unwrap();
    assert_eq!(invalid_bytes, acks_bytes);

    // Reload: unchanged rules keep counting from where they were.
    pair.load(POLICY_B);
    let (after, default_after) = input_counts(&pair);
    assert_eq!(
        after["app"].2, rules["app"].2,
        "an unchanged rule keeps its identity"
    );
    assert_eq!(
        counts_of(&after, "app"),
        (5, app_bytes),
        "moved, not changed"
    );
    assert_eq!(counts_of(&after, "mdns"), (4, mdns_bytes));
    assert_ne!(after["blocked"].2, rules["blocked"].2);
    assert_eq!(counts_of(&after, "blocked"), (0, 0), "a changed rule");
    assert_eq!(counts_of(&after, "new"), (0, 0));
    assert!(!after.contains_key("closed"));
    assert_eq!(default_after, (6, other_bytes), "the default keeps its own");

    let (app_more, app_more_bytes) = frames(2, 46_000, |v6, p| syn(v6, p, APP));
    let (blocked_next, blocked_next_bytes) = frames(1, 47_000, |v6, p| syn(v6, p, BLOCKED_NEXT));
    let (new, new_bytes) = frames(3, 48_000, |v6, p| syn(v6, p, NEW));
    let (old_blocked, old_blocked_bytes) = frames(2, 49_000, |v6, p| syn(v6, p, BLOCKED));
    for f in [&app_more, &blocked_next, &new, &old_blocked] {
        pair.send_to_server(f);
    }
    settle(&pair, |p| input_counts(p).1.0 >= 8);
    let (end, default_end) = input_counts(&pair);
    assert_eq!(counts_of(&end, "app"), (7, app_bytes + app_more_bytes));
    assert_eq!(counts_of(&end, "blocked"), (1, blocked_next_bytes));
    assert_eq!(counts_of(&end, "new"), (3, new_bytes));
    assert_eq!(counts_of(&end, "mdns"), (4, mdns_bytes));
    assert_eq!(
        default_end,
        (8, other_bytes + old_blocked_bytes),
        "port 9000 is no rule's any more: the default drops it"
    );
    // The removed rule's counter is gone from the map: status of every
    // chain lists only the rules in force.
    let ids: Vec<String> = pair.status_json()["chains"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["rules"].as_array().unwrap().clone())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.contains(&rules["closed"].2));
    let status = pair.status();
    assert!(
        status.contains("Chain input (policy drop 8 packets"),
        "{status}"
    );
    assert!(status.contains("dport 8080"), "{status}");
}

/// `[log]` of the flood test: 20 events a second after a burst of 5.
const RATE: u64 = 20;
const BURST: u64 = 5;
/// The flood: rounds of SYNs, 200 ms apart.
const ROUNDS: u16 = 15;
const PER_ROUND: u16 = 40;

#[test]
fn a_flood_of_logged_drops_is_held_to_the_rate_and_the_rest_is_counted() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let policy = format!(
        "[defaults]\ninput = \"drop\"\n[log]\nrate = \"{RATE}/second\"\nburst = {BURST}\nprefix = \"fw DROP: \"\ndefault = true\n"
    );
    let file = pair.policy_file("flood.toml", &policy);
    let mut fg = pair.load_foreground_with(&file, &["--json"]);
    fg.wait_for("staying in the foreground", Duration::from_secs(5));

    // 15 rounds of 40 SYNs, 200 ms apart: 200 a second for 3 seconds.
    let started = Instant::now();
    for round in 0..ROUNDS {
        let (f, _) = frames(PER_ROUND, 20_000 + round * PER_ROUND, |v6, p| {
            syn(v6, p, UNLISTED)
        });
        pair.send_to_server(&f);
        if round + 1 < ROUNDS {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let elapsed = started.elapsed();
    let lines = fg.lines_until_quiet(Duration::from_millis(1500));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "packet")
        .collect();
    let flood: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"]["dport"] == UNLISTED)
        .collect();
    let bound = BURST
        + u64::try_from((u128::from(RATE) * elapsed.as_nanos()).div_ceil(1_000_000_000)).unwrap();
    println!(
        "flood of {} drops in {elapsed:?}: {} events (bound {bound})",
        ROUNDS * PER_ROUND,
        flood.len()
    );
    assert!(
        flood.len() as u64 <= bound,
        "{} events in {elapsed:?}, more than burst {BURST} + {RATE}/s",
        flood.len()
    );
    assert!(
        flood.len() as u64 >= BURST + RATE,
        "the limiter let only {} events through in {elapsed:?}",
        flood.len()
    );
    let e = &flood[0]["event"];
    assert_eq!(e["prefix"], "fw DROP: ");
    assert_eq!(e["verdict"], "drop");
    assert_eq!(e["reason"], "drop-default");
    assert_eq!(e["chain"], "input");
    assert_eq!(e["interface"], pair.server_if.as_str());
    assert_eq!(e["tcp_flags"], serde_json::json!(["SYN"]));

    // Every logged drop was either emitted or suppressed; everything
    // emitted reached the reader.
    let s = pair.status_json();
    let emitted = s["events"]["emitted"].as_u64().unwrap();
    let suppressed = s["events"]["suppressed"].as_u64().unwrap();
    assert_eq!(s["events"]["lost"], 0);
    assert_eq!(emitted, events.len() as u64, "every emitted event was read");
    assert_eq!(
        emitted + suppressed,
        pair.counter("input", "drop-default"),
        "each default drop made one attempt"
    );
    assert!(suppressed >= u64::from(ROUNDS * PER_ROUND) - bound);
    // The foreground reports what was held back (every 10 s).
    let report = fg.wait_for("\"undelivered\"", Duration::from_secs(15));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["suppressed"].as_u64().unwrap(), suppressed);
    assert_eq!(report["lost"], 0);
}

/// Scrape `http://{addr}/metrics` from inside the server namespace.
fn scrape(pair: &Pair, addr: SocketAddr) -> (String, String) {
    pair.server.run(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ureq::get(&format!("http://{addr}/metrics")).call() {
                Ok(mut r) => {
                    let ct = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    return (ct, r.body_mut().read_to_string().expect("body"));
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("GET http://{addr}/metrics: {e}"),
            }
        }
    })
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("not a scalar: {s:?}"),
    }
}

#[test]
fn metrics_are_served_in_the_prometheus_format() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    pair.server.ip(&["link", "set", "lo", "up"]);
    let file = pair.policy_file("metrics.toml", POLICY_A);
    let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let _fg = pair.load_foreground_with(&file, &["--metrics", "127.0.0.1:9464", "--no-events"]);
    let (app, app_bytes) = frames(3, 30_000, |v6, p| syn(v6, p, APP));
    let (other, _) = frames(4, 31_000, |v6, p| syn(v6, p, UNLISTED));
    pair.send_to_server(&app);
    pair.send_to_server(&other);
    settle(&pair, |p| input_counts(p).1.0 >= 4);

    let (content_type, body) = scrape(&pair, addr);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("exposition text parses");
    let app_packets = sample(
        &parsed,
        "fw_rule_packets_total",
        &[("chain", "input"), ("name", "app"), ("rule", "1")],
    );
    assert_eq!(value(app_packets), 3.0);
    assert_eq!(
        app_packets.labels.get("match"),
        Some("proto tcp dport 8080")
    );
    assert_eq!(
        value(sample(
            &parsed,
            "fw_rule_bytes_total",
            &[("chain", "input"), ("name", "app")]
        )),
        app_bytes as f64
    );
    assert_eq!(
        value(sample(
            &parsed,
            "fw_default_packets_total",
            &[("chain", "input"), ("policy", "drop")]
        )),
        4.0
    );
    assert!(
        value(sample(
            &parsed,
            "fw_packets_total",
            &[("direction", "input"), ("reason", "drop-default")]
        )) >= 4.0
    );
    assert_eq!(
        value(sample(
            &parsed,
            "fw_conntrack_capacity",
            &[("table", "established")]
        )),
        65_536.0
    );
    // The three accepted SYNs opened transient connections.
    assert!(
        value(sample(
            &parsed,
            "fw_conntrack_entries",
            &[("table", "transient")]
        )) >= 3.0
    );
    for outcome in ["emitted", "suppressed", "lost"] {
        sample(&parsed, "fw_log_events_total", &[("outcome", outcome)]);
    }
    // The standalone server answers too, and only at /metrics.
    let standalone: SocketAddr = "127.0.0.1:9465".parse().unwrap();
    let _m = pair.spawn_fw_user(&[
        "metrics",
        "--listen",
        "127.0.0.1:9465",
        "--pin-path",
        &pair.pin_path(),
    ]);
    let (_, body) = scrape(&pair, standalone);
    assert!(body.contains("fw_rule_packets_total{"), "{body}");
    let missing =
        pair.server.run(
            move || match ureq::get(&format!("http://{standalone}/other")).call() {
                Err(ureq::Error::StatusCode(code)) => code,
                other => panic!("{other:?}"),
            },
        );
    assert_eq!(missing, 404);
}

#[test]
fn events_follow_as_text_or_into_syslog_and_one_reader_at_a_time() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let policy = POLICY_A.replace(
        "dport = 9000\naction = \"drop\"",
        "dport = 9000\naction = \"drop\"\nlog = true\nlog_prefix = \"blocked: \"",
    );
    pair.load(&format!("{policy}\n[log]\ninvalid = true\n"));
    let pin = pair.pin_path();

    // Text lines.
    let mut text = pair.spawn_fw_user(&["events", "--pin-path", &pin]);
    text.wait_for("following log events", Duration::from_secs(5));
    // A second reader is refused, naming the first.
    let second = fw_user(&pair.server, &["events", "--pin-path", &pin]);
    assert!(!second.ok);
    assert!(
        second.stderr.contains("already following"),
        "{}",
        second.stderr
    );
    pair.send_to_server(&[syn(false, 50_000, BLOCKED)]);
    let line = text.wait_for("DPT=9000", Duration::from_secs(5));
    for part in [
        "blocked: IN=",
        "SRC=192.0.2.",
        "SPT=50000 DPT=9000",
        "PROTO=TCP",
        " SYN ",
        "VERDICT=DROP REASON=drop-rule CHAIN=input RULE=2 NAME=\"blocked\"",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    pair.send_to_server(&[stray_ack(true, 50_001, APP)]);
    let line = text.wait_for("DPT=8080", Duration::from_secs(5));
    assert!(
        line.contains("SRC=2001:db8::")
            && line.contains("STATE=INVALID VERDICT=DROP REASON=drop-invalid"),
        "{line}"
    );
    assert!(line.contains("fw: IN="), "the default prefix: {line}");
    drop(text);

    // Syslog: a socket of the test's own stands in for /dev/log.
    let socket = pair.workdir.join("log.sock");
    let log = UnixDatagram::bind(&socket).expect("bind the syslog socket");
    log.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let socket_arg = socket.display().to_string();
    let mut sys = pair.spawn_fw_user(&[
        "events",
        "--syslog",
        "--syslog-socket",
        &socket_arg,
        "--pin-path",
        &pin,
    ]);
    sys.wait_for("following log events", Duration::from_secs(5));
    pair.send_to_server(&[syn(false, 50_002, BLOCKED)]);
    let mut buf = [0u8; 2048];
    let n = log.recv(&mut buf).expect("a syslog message");
    let msg = String::from_utf8_lossy(&buf[..n]);
    // RFC 3164: <PRI> with facility daemon (3) and severity warning (4).
    assert!(msg.starts_with("<28>"), "{msg}");
    assert!(msg.contains("fw["), "{msg}");
    assert!(
        msg.contains("blocked: IN=") && msg.contains("SPT=50002 DPT=9000"),
        "{msg}"
    );
    assert!(sys.exited().is_none(), "{:?}", sys.seen());
    // A follower does not outlive the firewall it follows.
    pair.unload();
    sys.wait_for("was unloaded; leaving", Duration::from_secs(15));
}
