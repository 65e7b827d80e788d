//! The iptables backend on real traffic, and the choice between backends:
//! `--backend iptables` filters like the eBPF datapath, replaces its own
//! rules on reload without touching other tools' rules, shows in `status`
//! and goes with `unload`; `--backend auto` falls back to iptables when
//! eBPF cannot be used (here: `CAP_BPF` and `CAP_SYS_ADMIN` dropped), says
//! why, and a later eBPF load replaces the iptables rules.

use std::{net::IpAddr, time::Duration};

use fw_tests::{
    fwcli::{binary, fw_user_ok},
    lab::example,
    lacks_privileges,
    netns::{Connect, EchoServer, Netns, Pair, ping, server_addr, tcp_probe, udp_probe},
    packet::SERVER4,
};

const WAIT: Duration = Duration::from_millis(600);

/// `iptables-save` (both families) inside `ns`.
fn saved(ns: &Netns) -> String {
    ["iptables-save", "ip6tables-save"]
        .iter()
        .map(|c| String::from_utf8_lossy(&ns.exec(&[c]).stdout).into_owned())
        .collect()
}

/// The web server example's answers: SSH and HTTPS in, Postgres dropped.
fn web_server_answers(pair: &Pair) {
    for v6 in [false, true] {
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, 22), WAIT),
            Connect::Echoed
        );
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, 443), WAIT),
            Connect::Echoed
        );
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, 5432), WAIT),
            Connect::TimedOut,
            "postgres is not open (v6 {v6})"
        );
    }
    assert!(udp_probe(&pair.client, server_addr(false, 443), WAIT));
    assert!(!udp_probe(&pair.client, server_addr(false, 5432), WAIT));
    assert!(ping(&pair.client, IpAddr::V4(SERVER4)));
}

/// `fw-user load FILE --backend iptables` on the pair's server.
fn load_iptables(pair: &Pair, file: &str) -> String {
    fw_user_ok(
        &pair.server,
        &[
            "load",
            file,
            "--backend",
            "iptables",
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pair.pin_path(),
            "--detach",
        ],
    )
}

fn servers(pair: &Pair) -> Vec<EchoServer> {
    [22, 443, 5432, 8080]
        .iter()
        .map(|&p| EchoServer::start(&pair.server, p))
        .collect()
}

#[test]
fn the_iptables_backend_filters_reloads_reports_and_unloads() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _s = servers(&pair);
    // Another tool's rule, which fw must leave alone.
    let added = pair.server.exec(&[
        "iptables",
        "-A",
        "INPUT",
        "-s",
        "198.51.100.99",
        "-j",
        "DROP",
    ]);
    assert!(added.status.success(), "{added:?}");
    let pin = pair.pin_path();
    let web = example("web-server.toml");
    let out = load_iptables(&pair, &web);
    assert!(out.contains("with the iptables backend"), "{out}");
    web_server_answers(&pair);
    let rules = saved(&pair.server);
    assert!(rules.contains(":FW-INPUT"), "{rules}");
    assert!(rules.contains("-s 198.51.100.99/32 -j DROP"), "{rules}");

    let status = fw_user_ok(&pair.server, &["status", "--pin-path", &pin]);
    assert!(status.contains("iptables backend"), "{status}");
    assert!(status.contains("Chain FW-INPUT (ipv4)"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&fw_user_ok(
        &pair.server,
        &["status", "--json", "--pin-path", &pin],
    ))
    .unwrap();
    assert_eq!(json["backend"], "iptables");
    assert!(
        json["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["packets"].as_u64() > Some(0))
    );

    // A reload replaces fw's rules: 8080 opens, nothing is doubled.
    let policy = pair.policy_file(
        "open8080.toml",
        "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = 8080\naction = \"accept\"\n",
    );
    let out = load_iptables(&pair, &policy);
    assert!(out.contains("replaced the running policy"), "{out}");
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 8080), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 22), WAIT),
        Connect::TimedOut
    );
    let rules = saved(&pair.server);
    let jumps = rules.lines().filter(|l| l.contains("-j FW-INPUT")).count();
    assert_eq!(jumps, 2, "one jump per family:\n{rules}");

    let out = fw_user_ok(&pair.server, &["unload", "--pin-path", &pin]);
    assert!(out.contains("removed the iptables backend"), "{out}");
    let rules = saved(&pair.server);
    assert!(!rules.contains("FW-"), "{rules}");
    assert!(
        rules.contains("-s 198.51.100.99/32 -j DROP"),
        "the other tool's rule stays"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 22), WAIT),
        Connect::Echoed
    );
}

#[test]
fn auto_falls_back_to_iptables_when_ebpf_cannot_load_and_xdp_replaces_it_later() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _s = servers(&pair);
    let pin = pair.pin_path();
    let web = example("web-server.toml");
    // Without CAP_BPF and CAP_SYS_ADMIN nothing of eBPF can be loaded;
    // iptables needs only CAP_NET_ADMIN.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.server.name,
            "setpriv",
            "--bounding-set",
            "-bpf,-sys_admin,-perfmon",
            "--inh-caps",
            "-bpf,-sys_admin,-perfmon",
        ])
        .arg(binary())
        .env("FW_STATE_DIR", fw_tests::fwcli::state_base())
        .args([
            "load",
            &web,
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pin,
            "--detach",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the eBPF datapath cannot run here"),
        "{stdout}"
    );
    assert!(
        stdout.contains("falling back to the iptables backend"),
        "{stdout}"
    );
    web_server_answers(&pair);
    assert!(saved(&pair.server).contains(":FW-INPUT"));

    // With the privileges back, the eBPF datapath takes over and the
    // iptables rules go.
    let out = fw_user_ok(
        &pair.server,
        &[
            "load",
            &web,
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pin,
            "--detach",
        ],
    );
    assert!(
        out.contains("removed the iptables backend's rules"),
        "{out}"
    );
    assert!(!saved(&pair.server).contains("FW-"));
    web_server_answers(&pair);
    let status = fw_user_ok(&pair.server, &["status", "--pin-path", &pin]);
    assert!(status.contains("xdp backend"), "{status}");
}

#[test]
fn the_iptables_backend_reports_log_rules_as_events() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let pin = pair.pin_path();
    let policy = pair.policy_file(
        "logged.toml",
        "[defaults]\ninput = \"drop\"\n[log]\nprefix = \"fw DROP: \"\ndefault = true\n[[input]]\nname = \"telnet\"\nproto = \"tcp\"\ndport = 23\naction = \"drop\"\nlog = true\nlog_prefix = \"telnet: \"\n",
    );
    load_iptables(&pair, &policy);
    let mut events = pair.spawn_fw_user(&["events", "--pin-path", &pin]);
    events.wait_for("following log events", Duration::from_secs(5));
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 23), WAIT),
        Connect::TimedOut
    );
    let line = events.wait_for("DPT=23", Duration::from_secs(5));
    assert!(
        line.contains("telnet: IN=") && line.contains("PROTO=TCP") && line.contains(" SYN "),
        "{line}"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, 2222), WAIT),
        Connect::TimedOut
    );
    let line = events.wait_for("DPT=2222", Duration::from_secs(5));
    assert!(
        line.contains("fw DROP: IN=") && line.contains("SRC=2001:db8::"),
        "{line}"
    );
}
