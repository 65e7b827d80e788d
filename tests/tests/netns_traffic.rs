//! Real traffic between two namespaces joined by a veth pair, with the
//! firewall loaded by the real `fw-user` inside the server namespace only.
//! Each test builds and removes its own namespaces.

use std::{
    net::{IpAddr, SocketAddrV4},
    time::Duration,
};

use fw_tests::{
    fwcli::fw_user,
    lacks_privileges,
    netns::{
        Connect, EchoServer, Pair, Session, ack_probe_answered, client_addr, ping, server_addr,
        tcp_probe, udp_probe,
    },
    packet::{CLIENT4, CLIENT6, SERVER4, SERVER6},
};

const ALLOWED: u16 = 8080;
const BLOCKED: u16 = 9090;
const UDP_ALLOWED: u16 = 5353;
const WAIT: Duration = Duration::from_millis(1500);

fn web_policy() -> String {
    format!(
        r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
name = "web"
proto = "tcp"
dport = [{ALLOWED}, "8443-8445"]
action = "accept"

[[input]]
name = "mdns"
proto = "udp"
dport = {UDP_ALLOWED}
action = "accept"
"#
    )
}

#[test]
fn ipv4_allowed_denied_ack_probe_and_outbound() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _srv = EchoServer::start(&pair.server, ALLOWED);
    let _blk = EchoServer::start(&pair.server, BLOCKED);
    let _udp = EchoServer::start(&pair.server, UDP_ALLOWED);
    let _cli = EchoServer::start(&pair.client, 7070);
    let probe_target = SocketAddrV4::new(SERVER4, ALLOWED);

    // Control: without the firewall everything answers, and a stray ACK
    // gets the kernel's RST.
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::Echoed
    );
    assert!(
        ack_probe_answered(&pair.client, CLIENT4, probe_target, WAIT),
        "control: stray ACK must get an RST"
    );
    assert!(ping(&pair.client, IpAddr::V4(SERVER4)));

    let out = pair.load(&web_policy());
    assert!(
        out.contains(&format!("guarding {}", pair.server_if)),
        "{out}"
    );

    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, ALLOWED), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut,
        "a non-allowed port is dropped, not refused"
    );
    assert!(
        !ack_probe_answered(&pair.client, CLIENT4, probe_target, WAIT),
        "an ACK probe must get nothing back"
    );
    assert!(udp_probe(
        &pair.client,
        server_addr(false, UDP_ALLOWED),
        WAIT
    ));
    assert!(!udp_probe(&pair.client, server_addr(false, BLOCKED), WAIT));
    assert!(
        !ping(&pair.client, IpAddr::V4(SERVER4)),
        "inbound ping is dropped by default"
    );
    // The server's own connections and their replies pass.
    assert!(ping(&pair.server, IpAddr::V4(CLIENT4)));
    assert_eq!(
        tcp_probe(&pair.server, client_addr(false, 7070), WAIT),
        Connect::Echoed
    );
    assert!(udp_probe(&pair.server, client_addr(false, 7070), WAIT));

    let status = pair.status();
    assert!(status.contains(&pair.server_if), "{status}");
    assert!(status.contains("xdp native"), "{status}");
    assert!(status.contains("connection table:"), "{status}");
    let json = fw_user(
        &pair.server,
        &["status", "--json", "--pin-path", &pair.pin_path()],
    );
    assert!(json.ok, "{}", json.stderr);
    assert!(json.stdout.contains("\"drop-default\""), "{}", json.stdout);
}

#[test]
fn ipv6_allowed_denied_and_outbound() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _srv = EchoServer::start(&pair.server, ALLOWED);
    let _blk = EchoServer::start(&pair.server, BLOCKED);
    let _udp = EchoServer::start(&pair.server, UDP_ALLOWED);
    let _cli = EchoServer::start(&pair.client, 7070);
    pair.load(&web_policy());

    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, ALLOWED), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, BLOCKED), WAIT),
        Connect::TimedOut
    );
    assert!(udp_probe(
        &pair.client,
        server_addr(true, UDP_ALLOWED),
        WAIT
    ));
    assert!(!udp_probe(&pair.client, server_addr(true, BLOCKED), WAIT));
    assert!(!ping(&pair.client, IpAddr::V6(SERVER6)));
    // Neighbour discovery keeps working under default drop, and the
    // server's own traffic flows.
    assert!(ping(&pair.server, IpAddr::V6(CLIENT6)));
    assert_eq!(
        tcp_probe(&pair.server, client_addr(true, 7070), WAIT),
        Connect::Echoed
    );
}

#[test]
fn reload_keeps_open_connections_and_applies_the_new_policy() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _a = EchoServer::start(&pair.server, ALLOWED);
    let _b = EchoServer::start(&pair.server, BLOCKED);
    pair.load(&web_policy());
    let mut v4 = Session::open(&pair.client, server_addr(false, ALLOWED));
    let mut v6 = Session::open(&pair.client, server_addr(true, ALLOWED));
    assert!(v4.echo(b"before") && v6.echo(b"before"));

    // The new policy closes 8080 and opens 9090.
    let swapped = format!(
        "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = {BLOCKED}\naction = \"accept\"\n"
    );
    let out = pair.load(&swapped);
    assert!(out.contains("replaced the running policy"), "{out}");
    assert!(out.contains("generation 1"), "{out}");

    assert!(
        v4.echo(b"after reload"),
        "an established IPv4 connection survives the reload"
    );
    assert!(
        v6.echo(b"after reload"),
        "an established IPv6 connection survives the reload"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, ALLOWED), WAIT),
        Connect::TimedOut
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::Echoed
    );

    // And back again, many times: the sessions never notice.
    let web = web_policy();
    for i in 0..10 {
        pair.load(if i % 2 == 0 { &web } else { &swapped });
        assert!(v4.echo(format!("swap {i}").as_bytes()), "swap {i}");
    }
}

#[test]
fn unload_restores_plain_connectivity() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _b = EchoServer::start(&pair.server, BLOCKED);
    pair.load(&web_policy());
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut
    );
    let out = pair.unload();
    assert!(out.contains(&pair.server_if), "{out}");
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, BLOCKED), WAIT),
        Connect::Echoed
    );
    assert!(ping(&pair.client, IpAddr::V4(SERVER4)));
    assert!(
        !std::path::Path::new(&pair.pin_path()).exists(),
        "every pin is removed"
    );
    let again = fw_user(&pair.server, &["status", "--pin-path", &pair.pin_path()]);
    assert!(
        !again.ok && again.stderr.contains("no firewall is loaded"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_bad_policy_leaves_the_running_one_in_place() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _a = EchoServer::start(&pair.server, ALLOWED);
    let _b = EchoServer::start(&pair.server, BLOCKED);
    pair.load(&web_policy());
    let mut session = Session::open(&pair.client, server_addr(false, ALLOWED));

    let bad = pair.policy_file("bad.toml", "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = \"9100-9000\"\naction = \"accept\"\n");
    let r = fw_user(
        &pair.server,
        &[
            "load",
            &bad,
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pair.pin_path(),
            "--detach",
        ],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("bad.toml:5:9:") && r.stderr.contains("reversed"),
        "{}",
        r.stderr
    );
    let r = fw_user(&pair.server, &["check", &bad]);
    assert!(!r.ok && r.stderr.contains("bad.toml:5:9:"), "{}", r.stderr);

    let missing_if = pair.policy_file("ok.toml", "[defaults]\ninput = \"accept\"\n");
    let r = fw_user(
        &pair.server,
        &[
            "load",
            &missing_if,
            "--iface",
            "nosuch0",
            "--pin-path",
            &pair.pin_path(),
            "--detach",
        ],
    );
    assert!(
        !r.ok && r.stderr.contains("`nosuch0` does not exist"),
        "{}",
        r.stderr
    );

    // The running policy is untouched.
    assert!(session.echo(b"still here"));
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut
    );
    assert!(pair.status().contains("generation 0"));
}

#[test]
fn built_in_policy_allows_ssh_only() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _ssh = EchoServer::start(&pair.server, 22);
    let _other = EchoServer::start(&pair.server, ALLOWED);
    let out = fw_tests::fwcli::fw_user_ok(
        &pair.server,
        &[
            "load",
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pair.pin_path(),
            "--detach",
        ],
    );
    assert!(out.contains("built-in default policy"), "{out}");
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 22), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, 22), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, ALLOWED), WAIT),
        Connect::TimedOut
    );
}

#[test]
fn connections_open_before_the_first_load_are_adopted() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _b = EchoServer::start(&pair.server, BLOCKED);
    // Opened before fw exists, to a port the policy will not allow.
    let mut session = Session::open(&pair.client, server_addr(false, BLOCKED));
    assert!(session.echo(b"hello"));
    let out = pair.load(&web_policy());
    assert!(out.contains("adopted 1 established connection"), "{out}");
    assert!(session.echo(b"still alive after the first load"));
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut,
        "new ones are dropped"
    );
}

#[test]
fn the_web_server_example_filters_real_traffic() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _s: Vec<EchoServer> = [22, 80, 443, 5432]
        .iter()
        .map(|&p| EchoServer::start(&pair.server, p))
        .collect();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web-server.toml");
    pair.load_file(example);
    for v6 in [false, true] {
        for port in [22, 80, 443] {
            assert_eq!(
                tcp_probe(&pair.client, server_addr(v6, port), WAIT),
                Connect::Echoed,
                "v6={v6} port {port}"
            );
        }
        assert_eq!(
            tcp_probe(&pair.client, server_addr(v6, 5432), WAIT),
            Connect::TimedOut,
            "v6={v6}"
        );
        assert!(
            udp_probe(&pair.client, server_addr(v6, 443), WAIT),
            "quic v6={v6}"
        );
        assert!(
            !udp_probe(&pair.client, server_addr(v6, 5432), WAIT),
            "v6={v6}"
        );
    }
    assert!(ping(&pair.client, IpAddr::V4(SERVER4)));
    assert!(ping(&pair.client, IpAddr::V6(SERVER6)));
}

#[test]
fn foreground_load_leaves_the_firewall_when_it_exits() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _b = EchoServer::start(&pair.server, BLOCKED);
    let file = pair.policy_file("fg.toml", &web_policy());
    let mut child = fw_tests::fwcli::in_netns(&pair.server)
        .args([
            "load",
            &file,
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pair.pin_path(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fw-user load");
    // Wait until the policy is in place, then stop fw-user as systemd would.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Attached, not merely installed: the policy goes in before the links.
    let attached = || {
        let r = fw_user(&pair.server, &["status", "--pin-path", &pair.pin_path()]);
        r.ok && r.stdout.contains("tc egress tcx")
    };
    while !attached() {
        assert!(
            std::time::Instant::now() < deadline,
            "fw-user load never installed the firewall"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "fw-user exits cleanly on SIGTERM: {status}"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut,
        "still filtering after exit"
    );
}

/// Removes the default-path pins of a test namespace even if the test fails.
struct DefaultPins(String);

impl Drop for DefaultPins {
    fn drop(&mut self) {
        let _ = fw_tests::fwcli::command()
            .args(["unload", "--pin-path", &self.0])
            .output();
    }
}

#[test]
fn default_pin_path_under_ip_netns_exec_outlives_the_command() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _b = EchoServer::start(&pair.server, BLOCKED);
    let pins = DefaultPins(format!("/sys/fs/bpf/fw-{}", pair.server.name));
    // No --pin-path: `ip netns exec` gives fw-user a private /sys, and the
    // pins must still land where they outlive the command.
    let file = pair.policy_file("p.toml", &web_policy());
    let out = fw_tests::fwcli::fw_user_ok(
        &pair.server,
        &["load", &file, "--iface", &pair.server_if, "--detach"],
    );
    assert!(out.contains(&format!("pinned at {}", pins.0)), "{out}");
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::TimedOut,
        "filtering after the command exited"
    );
    assert!(
        std::path::Path::new(&pins.0).exists(),
        "pins live in the host's bpffs"
    );
    let status = fw_tests::fwcli::fw_user_ok(&pair.server, &["status"]);
    assert!(status.contains(&pair.server_if), "{status}");
    fw_tests::fwcli::fw_user_ok(&pair.server, &["unload"]);
    assert!(!std::path::Path::new(&pins.0).exists());
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, BLOCKED), WAIT),
        Connect::Echoed
    );
}
