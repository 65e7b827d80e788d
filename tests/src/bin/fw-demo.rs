//! `cargo xtask demo`: the main job, `fw-user load examples/web-server.toml`,
//! run against a throwaway server namespace, with real connections from a
//! client namespace to show what it allows and drops. Everything is removed
//! at the end; the host's own interfaces are never touched.

use std::{net::IpAddr, time::Duration};

use fw_tests::{
    netns::{Connect, EchoServer, Pair, ping, server_addr, tcp_probe, udp_probe},
    packet::SERVER4,
};

fn main() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web-server.toml");
    let example = example.canonicalize().expect("examples/web-server.toml");
    let example = example.to_str().expect("utf-8 path");
    let pair = Pair::new();
    println!(
        "demo: server namespace {} ({}: 192.0.2.1, 2001:db8::1), client namespace {}",
        pair.server.name, pair.server_if, pair.client.name
    );
    let _servers: Vec<EchoServer> = [22, 80, 443, 5432]
        .iter()
        .map(|&p| EchoServer::start(&pair.server, p))
        .collect();

    println!(
        "\n$ fw-user load examples/web-server.toml --iface {} --detach",
        pair.server_if
    );
    print!("{}", pair.load_file(example));

    println!("\nprobes from the client:");
    let wait = Duration::from_millis(800);
    for (what, port) in [
        ("tcp 22 (ssh)", 22),
        ("tcp 80 (http)", 80),
        ("tcp 443 (https)", 443),
        ("tcp 5432 (postgres)", 5432),
    ] {
        for v6 in [false, true] {
            let r = match tcp_probe(&pair.client, server_addr(v6, port), wait) {
                Connect::Echoed => "connected".to_string(),
                Connect::TimedOut => "dropped (connect timed out)".to_string(),
                other => format!("{other:?}"),
            };
            println!("  {what:<22} {:<5} {r}", if v6 { "IPv6" } else { "IPv4" });
        }
    }
    println!(
        "  {:<22} IPv4  {}",
        "udp 443 (quic)",
        if udp_probe(&pair.client, server_addr(false, 443), wait) {
            "answered"
        } else {
            "dropped"
        }
    );
    println!(
        "  {:<22} IPv4  {}",
        "udp 5432",
        if udp_probe(&pair.client, server_addr(false, 5432), wait) {
            "answered"
        } else {
            "dropped"
        }
    );
    println!(
        "  {:<22} IPv4  {}",
        "ping",
        if ping(&pair.client, IpAddr::V4(SERVER4)) {
            "answered"
        } else {
            "dropped"
        }
    );

    // Nobody followed the events (`--detach`): the ring buffer kept them.
    println!("\n$ fw-user events");
    let mut events = pair.spawn_fw_user(&["events", "--pin-path", &pair.pin_path()]);
    for line in events.lines_until_quiet(Duration::from_millis(1500)) {
        println!("{line}");
    }
    drop(events);
    println!("^C");

    println!("\n$ fw-user status");
    print!("{}", pair.status());
    println!("\n$ fw-user unload");
    print!("{}", pair.unload());
    println!("\ndemo: namespaces removed; nothing outside them was touched");
}
