//! Every example policy of `examples/`, loaded by the real `fw-user` and
//! judged by real traffic; the multi-host ones on bridged LANs of several
//! namespaces.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use fw_tests::{
    lab::{Lab, example},
    lacks_privileges,
    netns::{
        Connect, Datagram, EchoServer, Pair, client_addr, ping, server_addr, tcp_probe,
        tcp_probe_from, udp_exchange, udp_probe,
    },
    packet::{CLIENT4, SERVER4},
};

const WAIT: Duration = Duration::from_millis(1500);

fn v4(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(s.parse().unwrap()), port)
}

#[test]
fn database_reachable_only_from_the_web_hosts_on_the_private_side() {
    if lacks_privileges() {
        return;
    }
    let mut lab = Lab::new();
    lab.lan("public");
    lab.lan("private");
    lab.plug("db", "eth0", "public", &["198.51.100.30/24"]);
    lab.plug("db", "eth1", "private", &["192.0.2.30/24"]);
    lab.plug("web1", "eth0", "private", &["192.0.2.11/24"]);
    lab.plug("web2", "eth0", "private", &["192.0.2.12/24"]);
    lab.plug("other", "eth0", "private", &["192.0.2.50/24"]);
    lab.plug("outsider", "eth0", "public", &["198.51.100.99/24"]);
    let _mysql = EchoServer::start(lab.host("db"), 3306);
    let _ssh = EchoServer::start(lab.host("db"), 22);
    let db_private = v4("192.0.2.30", 3306);
    assert_eq!(
        tcp_probe(lab.host("other"), db_private, WAIT),
        Connect::Echoed,
        "control: open before the firewall"
    );

    lab.load("db", &example("database-server.toml"), &["eth0", "eth1"]);
    assert_eq!(
        tcp_probe(lab.host("web1"), db_private, WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(lab.host("web2"), db_private, WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(lab.host("other"), db_private, WAIT),
        Connect::TimedOut,
        "not a web server"
    );
    assert_eq!(
        tcp_probe(lab.host("outsider"), v4("198.51.100.30", 3306), WAIT),
        Connect::TimedOut,
        "public side"
    );
    assert_eq!(
        tcp_probe(lab.host("other"), v4("192.0.2.30", 22), WAIT),
        Connect::Echoed,
        "ssh from the private net"
    );
    assert_eq!(
        tcp_probe(lab.host("outsider"), v4("198.51.100.30", 22), WAIT),
        Connect::TimedOut,
        "no ssh from outside"
    );
    assert!(
        ping(lab.host("outsider"), "198.51.100.30".parse().unwrap()),
        "echo requests are answered"
    );
}

#[test]
fn ssh_only_through_the_bastion() {
    if lacks_privileges() {
        return;
    }
    let mut lab = Lab::new();
    lab.lan("outside");
    lab.lan("private");
    lab.plug("bastion", "eth0", "outside", &["203.0.113.10/24"]);
    lab.plug("bastion", "eth1", "private", &["192.0.2.10/24"]);
    lab.plug("app1", "eth0", "private", &["192.0.2.21/24"]);
    lab.plug("app2", "eth0", "private", &["192.0.2.22/24"]);
    lab.plug("intruder", "eth0", "private", &["192.0.2.77/24"]);
    lab.plug("outsider", "eth0", "outside", &["203.0.113.99/24"]);
    let _servers: Vec<EchoServer> = ["app1", "bastion"]
        .iter()
        .flat_map(|h| {
            [
                EchoServer::start(lab.host(h), 22),
                EchoServer::start(lab.host(h), 8080),
            ]
        })
        .collect();
    lab.load("bastion", &example("bastion.toml"), &["eth0", "eth1"]);
    lab.load("app1", &example("private-server.toml"), &["eth0"]);
    lab.load("app2", &example("private-server.toml"), &["eth0"]);

    let app1 = |port| v4("192.0.2.21", port);
    assert_eq!(
        tcp_probe(lab.host("bastion"), app1(22), WAIT),
        Connect::Echoed,
        "the bastion may ssh in"
    );
    assert_eq!(
        tcp_probe(lab.host("app2"), app1(22), WAIT),
        Connect::TimedOut,
        "a peer may not ssh in"
    );
    assert_eq!(
        tcp_probe(lab.host("app2"), app1(8080), WAIT),
        Connect::Echoed,
        "peers trust each other"
    );
    assert_eq!(
        tcp_probe(lab.host("intruder"), app1(8080), WAIT),
        Connect::TimedOut,
        "not a peer"
    );
    assert_eq!(
        tcp_probe(lab.host("outsider"), v4("203.0.113.10", 22), WAIT),
        Connect::Echoed,
        "ssh to the bastion"
    );
    assert_eq!(
        tcp_probe(lab.host("outsider"), v4("203.0.113.10", 8080), WAIT),
        Connect::TimedOut
    );
    assert_eq!(
        tcp_probe(lab.host("app1"), v4("192.0.2.10", 8080), WAIT),
        Connect::Echoed,
        "peers reach the bastion"
    );
}

#[test]
fn blocklist_from_a_file() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    // Extra addresses on the link: one inside the blocked /25, one outside.
    pair.server
        .ip(&["addr", "add", "203.0.113.1/24", "dev", &pair.server_if]);
    pair.client
        .ip(&["addr", "add", "203.0.113.50/24", "dev", &pair.client_if]);
    pair.client
        .ip(&["addr", "add", "203.0.113.200/24", "dev", &pair.client_if]);
    let _https = EchoServer::start(&pair.server, 443);
    pair.load_file(&example("blocklist.toml"));
    let to = v4("203.0.113.1", 443);
    assert_eq!(
        tcp_probe_from(&pair.client, v4("203.0.113.50", 0), to, WAIT),
        Connect::TimedOut,
        "listed"
    );
    assert_eq!(
        tcp_probe_from(&pair.client, v4("203.0.113.200", 0), to, WAIT),
        Connect::Echoed,
        "outside the /25"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 443), WAIT),
        Connect::Echoed
    );
}

#[test]
fn mail_dns_ftp_ports_ranges_and_source_ports() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _s: Vec<EchoServer> = [25, 53, 21, 63_000, 5_000, 8_080]
        .iter()
        .map(|&p| EchoServer::start(&pair.server, p))
        .collect();
    pair.load_file(&example("mail-dns-ftp.toml"));
    let from_port = |p| SocketAddr::new(IpAddr::V4(CLIENT4), p);
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 25), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe_from(&pair.client, from_port(1000), server_addr(false, 25), WAIT),
        Connect::TimedOut,
        "privileged source port"
    );
    assert_eq!(
        tcp_probe_from(&pair.client, from_port(1024), server_addr(false, 25), WAIT),
        Connect::Echoed,
        "first unprivileged port"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 63_000), WAIT),
        Connect::Echoed,
        "passive FTP range"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 21), WAIT),
        Connect::Echoed
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 8_080), WAIT),
        Connect::TimedOut
    );
    assert!(udp_probe(&pair.client, server_addr(false, 53), WAIT));
    assert_eq!(
        udp_exchange(&pair.client, server_addr(false, 5_000), WAIT),
        Datagram::Refused,
        "other UDP is rejected"
    );
    assert_eq!(
        udp_exchange(&pair.client, server_addr(true, 5_000), WAIT),
        Datagram::Refused,
        "over IPv6 too"
    );
}

#[test]
fn web_server_rejecting_instead_of_dropping_refuses_fast() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _s = EchoServer::start(&pair.server, 9_090);
    pair.load("[defaults]\ninput = \"reject\"\n[[input]]\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n");
    let started = std::time::Instant::now();
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 9_090), WAIT),
        Connect::Refused,
        "a RST came back"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(true, 9_090), WAIT),
        Connect::Refused
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusals are immediate, not timeouts"
    );
    assert!(
        !ping(&pair.client, IpAddr::V4(SERVER4)),
        "ping gets an ICMP error, not a reply"
    );
}

#[test]
fn locked_down_webapp_only_dns_leaves() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _web = EchoServer::start(&pair.server, 443);
    let _dns = EchoServer::start(&pair.client, 53);
    let _other = EchoServer::start(&pair.client, 8_080);
    pair.load_file(&example("locked-down-webapp.toml"));
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, 443), WAIT),
        Connect::Echoed,
        "replies leave"
    );
    assert!(
        udp_probe(&pair.server, client_addr(false, 53), WAIT),
        "dns out"
    );
    assert_eq!(
        tcp_probe(&pair.server, client_addr(false, 53), WAIT),
        Connect::Echoed,
        "dns over tcp out"
    );
    let started = std::time::Instant::now();
    assert_eq!(
        tcp_probe(&pair.server, client_addr(false, 8_080), WAIT),
        Connect::Refused,
        "refused at once"
    );
    assert_eq!(
        tcp_probe(&pair.server, client_addr(true, 8_080), WAIT),
        Connect::Refused
    );
    assert_eq!(
        udp_exchange(&pair.server, client_addr(false, 8_080), WAIT),
        Datagram::Refused
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no timeouts: the host's own stack was told"
    );
}
