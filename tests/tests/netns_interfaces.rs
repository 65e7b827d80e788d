//! Interfaces: VLAN traffic over a guarded link, guarding several
//! interfaces, and changing the guarded set on reload.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use fw_common::conntrack::tcp_flags::{ACK, SYN};
use fw_tests::{
    lacks_privileges,
    netns::{EchoServer, Pair, send_frame, server_addr},
    packet::{L4, Vlan, Way, frame},
};

const WAIT: Duration = Duration::from_millis(1500);
const POLICY: &str =
    "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"tcp\"\ndport = 8080\naction = \"accept\"\n";

fn xdp_attached(pair: &Pair, iface: &str) -> bool {
    let out = pair.server.exec(&["ip", "link", "show", "dev", iface]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn vlan_tagged_frames_on_the_wire_are_classified() {
    if lacks_privileges() {
        return;
    }
    // Real 802.1Q and QinQ frames sent into the veth from the client side;
    // the verdict is read from the firewall's counters and table (the
    // server stack itself has no VLAN device to answer them).
    let pair = Pair::new();
    pair.load(POLICY);
    let syn = |vlan, dport| {
        frame(
            false,
            Way::In,
            vlan,
            L4::Tcp {
                sport: 41_000 + dport % 1000,
                dport,
                flags: SYN,
            },
        )
    };
    let cases = [
        ("802.1Q to 8080", syn(Vlan::Single(10), 8080), "accept-rule"),
        (
            "802.1Q to 9090",
            syn(Vlan::Single(10), 9090),
            "drop-default",
        ),
        (
            "QinQ to 8080",
            frame(
                true,
                Way::In,
                Vlan::Double(100, 10),
                L4::Tcp {
                    sport: 41_500,
                    dport: 8080,
                    flags: SYN,
                },
            ),
            "accept-rule",
        ),
        (
            "802.1Q ACK without state",
            frame(
                false,
                Way::In,
                Vlan::Single(10),
                L4::Tcp {
                    sport: 41_600,
                    dport: 8080,
                    flags: ACK,
                },
            ),
            "drop-invalid",
        ),
    ];
    for (what, f, counter) in cases {
        let before = pair.counter("input", counter);
        send_frame(&pair.client, &pair.client_if, f);
        let deadline = std::time::Instant::now() + WAIT;
        while pair.counter("input", counter) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: `{counter}` never moved"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let states = &pair.status_json()["conntrack"]["by_state"];
    assert_eq!(
        states["SYN_SENT"], 2,
        "the two accepted tagged SYNs are tracked: {states}"
    );
}

#[test]
fn the_guarded_set_follows_the_latest_load() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    // A second link in the server namespace.
    pair.server.ip(&[
        "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
    ]);
    pair.server.ip(&["link", "set", "extra0", "up"]);
    pair.server.ip(&["link", "set", "extra1", "up"]);
    let file = pair.policy_file("p.toml", POLICY);
    let pin = pair.pin_path();
    let both = [
        "load",
        &file,
        "--iface",
        &pair.server_if,
        "--iface",
        "extra0",
        "--pin-path",
        &pin,
        "--detach",
    ];
    let out = fw_tests::fwcli::fw_user_ok(&pair.server, &both);
    assert!(out.contains("guarding extra0"), "{out}");
    assert!(xdp_attached(&pair, "extra0") && xdp_attached(&pair, &pair.server_if));
    let status = pair.status();
    assert!(
        status.contains("extra0") && status.contains(&pair.server_if),
        "{status}"
    );

    let out = pair.load(POLICY);
    assert!(out.contains("no longer guarding extra0"), "{out}");
    assert!(
        !xdp_attached(&pair, "extra0"),
        "detached from the interface dropped from the set"
    );
    assert!(xdp_attached(&pair, &pair.server_if));
    assert!(!pair.status().contains("extra0"));

    // An interface that disappears is reported, and unload still works.
    fw_tests::fwcli::fw_user_ok(&pair.server, &both);
    pair.server.ip(&["link", "del", "extra0"]);
    assert!(pair.status().contains("(interface gone)"));
    let out = pair.unload();
    assert!(out.contains("extra0"), "{out}");
}

#[test]
fn bulk_transfer_through_both_hooks() {
    if lacks_privileges() {
        return;
    }
    // Megabytes each way: egress sees GSO super-packets, ingress a stream
    // of full-size frames, all on one tracked connection.
    let pair = Pair::new();
    let _a = EchoServer::start(&pair.server, 8080);
    pair.load(POLICY);
    for v6 in [false, true] {
        let to = server_addr(v6, 8080);
        let received = pair.client.run(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let chunk = vec![0x5a_u8; 64 * 1024];
            let mut reader = s.try_clone().unwrap();
            let total = 8 * 1024 * 1024;
            let rx = std::thread::spawn(move || {
                let mut got = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                while got < total {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                got
            });
            for _ in 0..total / chunk.len() {
                s.write_all(&chunk).unwrap();
            }
            rx.join().unwrap()
        });
        assert_eq!(
            received,
            8 * 1024 * 1024,
            "v6={v6}: every echoed byte came back"
        );
    }
    let status = pair.status();
    assert!(
        !status.contains("drop-malformed"),
        "no large packet was mistaken for malformed:\n{status}"
    );
}
