//! The forward chain: fw on a router between two LANs judges routed
//! traffic once, as it arrives; replies are tracked across both interfaces,
//! and the router's own input stays governed by the input chain.

use std::{net::SocketAddr, time::Duration};

use fw_tests::{
    lab::Lab,
    lacks_privileges,
    netns::{Connect, Datagram, EchoServer, tcp_probe, udp_exchange},
};

const WAIT: Duration = Duration::from_millis(1500);

const ROUTER_POLICY: &str = r#"
[defaults]
input = "drop"
output = "accept"
forward = "drop"

[[forward]]
name = "web to the server"
proto = "tcp"
dst = ["198.51.100.2", "2001:db8:2::2"]
dport = 8080
action = "accept"

[[forward]]
proto = "udp"
dport = 5353
action = "reject"

[[input]]
name = "ssh to the router"
proto = "tcp"
dport = 22
action = "accept"
"#;

fn addr(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(s.parse().unwrap(), port)
}

#[test]
fn routed_traffic_meets_the_forward_chain() {
    if lacks_privileges() {
        return;
    }
    let mut lab = Lab::new();
    lab.lan("left");
    lab.lan("right");
    lab.plug(
        "client",
        "eth0",
        "left",
        &["192.0.2.2/24", "2001:db8:1::2/64"],
    );
    lab.plug(
        "router",
        "eth0",
        "left",
        &["192.0.2.1/24", "2001:db8:1::1/64"],
    );
    lab.plug(
        "router",
        "eth1",
        "right",
        &["198.51.100.1/24", "2001:db8:2::1/64"],
    );
    lab.plug(
        "server",
        "eth0",
        "right",
        &["198.51.100.2/24", "2001:db8:2::2/64"],
    );
    for (host, v4, v6) in [
        ("client", "192.0.2.1", "2001:db8:1::1"),
        ("server", "198.51.100.1", "2001:db8:2::1"),
    ] {
        lab.host(host).ip(&["route", "add", "default", "via", v4]);
        lab.host(host)
            .ip(&["-6", "route", "add", "default", "via", v6]);
    }
    for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        assert!(
            lab.host("router")
                .exec(&["sysctl", "-qw", key])
                .status
                .success(),
            "{key}"
        );
    }
    let _server: Vec<EchoServer> = [8080, 9090, 5353]
        .iter()
        .map(|&p| EchoServer::start(lab.host("server"), p))
        .collect();
    let _client = EchoServer::start(lab.host("client"), 7070);
    let _router: Vec<EchoServer> = [22, 8080]
        .iter()
        .map(|&p| EchoServer::start(lab.host("router"), p))
        .collect();
    // Control: routing works before the firewall.
    assert_eq!(
        tcp_probe(lab.host("client"), addr("198.51.100.2", 9090), WAIT),
        Connect::Echoed
    );

    let file = lab.file("router.toml", ROUTER_POLICY);
    lab.load("router", &file, &["eth0", "eth1"]);
    let client = lab.host("client");
    assert_eq!(
        tcp_probe(client, addr("198.51.100.2", 8080), WAIT),
        Connect::Echoed,
        "forwarded and its replies tracked"
    );
    assert_eq!(
        tcp_probe(client, addr("2001:db8:2::2", 8080), WAIT),
        Connect::Echoed,
        "over IPv6 too"
    );
    assert_eq!(
        tcp_probe(client, addr("198.51.100.2", 9090), WAIT),
        Connect::TimedOut,
        "forward default drop"
    );
    assert_eq!(
        tcp_probe(lab.host("server"), addr("192.0.2.2", 7070), WAIT),
        Connect::TimedOut,
        "the other way is a new flow, and dropped"
    );
    assert_eq!(
        udp_exchange(client, addr("198.51.100.2", 5353), WAIT),
        Datagram::Refused,
        "forward reject"
    );
    // The router's own ports follow the input chain, not the forward one.
    assert_eq!(
        tcp_probe(client, addr("192.0.2.1", 22), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(client, addr("192.0.2.1", 8080), WAIT),
        Connect::TimedOut,
        "8080 is open for forwarding only"
    );
}
