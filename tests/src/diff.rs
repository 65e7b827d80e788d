//! The differential harness: one policy, two servers side by side, the
//! same probes, the same answers expected.
//!
//! Each side is a `Pair` (client and server namespaces joined by a veth;
//! the server's interface is `eth0`, as rulesets written for real hosts
//! name it). One server is guarded by fw's XDP/TC datapath, the other by
//! iptables: either with `fw-user export` of the same policy, or with an
//! original `iptables-save` file (for imported rulesets). Both servers run
//! the same listeners; the clients hold the same extra source addresses.
//! Every probe is sent to both sides (the sides run in parallel threads)
//! and the outcomes must be equal; a difference fails with the probe.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use fw_common::conntrack::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};

use crate::{
    netns::{Capture, Connect, Datagram, EchoServer, Netns, Pair, tcp_probe_from},
    packet::{SERVER4, SERVER6, Segment, Way, tcp_segment},
};

/// The server's interface on both sides.
pub const SERVER_IF: &str = "eth0";

/// Source addresses the clients probe from besides their own: hosts of
/// the server's LAN and of two other networks (routed to the client).
/// The example policies' sets name some of them (the bastion, web
/// servers, peers, abusers).
pub const SOURCES: [&str; 9] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.21",
    "198.51.100.7",
    "198.51.100.23",
    "203.0.113.5",
    "2001:db8::10",
    "2001:db8:2::11",
    "2001:db8:bad::1",
];

/// What guards the iptables side.
pub enum Oracle<'a> {
    /// `fw-user export` of the policy, for both families.
    Export,
    /// An `iptables-save` file (and optionally an `ip6tables-save` one).
    Files { v4: &'a str, v6: Option<&'a str> },
}

/// One probe, sent the same way to both servers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    /// A TCP connection from `from` (None: the client's own address) to
    /// `port`, with a message echoed over it.
    Tcp {
        from: Option<IpAddr>,
        v6: bool,
        sport: u16,
        port: u16,
    },
    /// A UDP datagram echoed.
    Udp {
        from: Option<IpAddr>,
        v6: bool,
        sport: u16,
        port: u16,
    },
    /// One ICMP echo request.
    Ping { from: Option<IpAddr>, v6: bool },
    /// A hand-built TCP segment with `flags` and no connection: what comes
    /// back (RST, SYN/ACK, nothing).
    Flags { v6: bool, port: u16, flags: u8 },
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = |v6: bool| if v6 { "ipv6" } else { "ipv4" };
        let src = |from: &Option<IpAddr>| from.map_or_else(String::new, |a| format!(" from {a}"));
        match self {
            Self::Tcp {
                from,
                v6,
                sport,
                port,
            } => write!(f, "tcp {} :{sport} -> {port}{}", fam(*v6), src(from)),
            Self::Udp {
                from,
                v6,
                sport,
                port,
            } => write!(f, "udp {} :{sport} -> {port}{}", fam(*v6), src(from)),
            Self::Ping { from, v6 } => write!(f, "ping {}{}", fam(*v6), src(from)),
            Self::Flags { v6, port, flags } => {
                write!(f, "tcp {} flags {} -> {port}", fam(*v6), flag_names(*flags))
            }
        }
    }
}

impl Probe {
    /// Is this an IPv6 probe?
    #[must_use]
    pub fn is_v6(&self) -> bool {
        match self {
            Self::Tcp { v6, .. }
            | Self::Udp { v6, .. }
            | Self::Ping { v6, .. }
            | Self::Flags { v6, .. } => *v6,
        }
    }
}

fn flag_names(flags: u8) -> String {
    let names = [
        (SYN, "SYN"),
        (ACK, "ACK"),
        (FIN, "FIN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (URG, "URG"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "NULL".into()
    } else {
        v.join(",")
    }
}

/// The usual probe set: TCP and UDP to a spread of service ports from
/// every source, privileged and unprivileged source ports, DNS's source
/// port, pings, and stray-flag segments (ACK, FIN, NULL, XMAS, SYN/FIN).
#[must_use]
pub fn standard_probes(tcp_ports: &[u16], udp_ports: &[u16]) -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut sport = 41_000u16;
    let mut next = || {
        sport += 1;
        sport
    };
    let mut sources: Vec<Option<IpAddr>> = vec![None];
    sources.extend(SOURCES.iter().map(|s| Some(s.parse().unwrap())));
    for from in &sources {
        let v6s: Vec<bool> = match from {
            None => vec![false, true],
            Some(a) => vec![a.is_ipv6()],
        };
        for v6 in v6s {
            for &port in tcp_ports {
                probes.push(Probe::Tcp {
                    from: *from,
                    v6,
                    sport: next(),
                    port,
                });
            }
            for &port in udp_ports {
                probes.push(Probe::Udp {
                    from: *from,
                    v6,
                    sport: next(),
                    port,
                });
            }
            probes.push(Probe::Ping { from: *from, v6 });
        }
    }
    for v6 in [false, true] {
        // Source port 53 (the classic DNS hole) and a privileged port.
        for (sport, port) in [(53, 53), (53, 1234), (80, 22), (1023, 25)] {
            probes.push(Probe::Tcp {
                from: None,
                v6,
                sport,
                port,
            });
            probes.push(Probe::Udp {
                from: None,
                v6,
                sport,
                port,
            });
        }
        for &port in tcp_ports.iter().take(3) {
            // A SYN shows the probe sees answers at all (SYN/ACK or RST).
            for flags in [SYN, ACK, FIN, 0, FIN | PSH | URG, SYN | FIN, SYN | ACK, RST] {
                probes.push(Probe::Flags { v6, port, flags });
            }
        }
    }
    probes
}

/// Both servers, with listeners and extra client addresses.
pub struct Twin {
    pub fw: Pair,
    pub ipt: Pair,
    _servers: Vec<EchoServer>,
}

impl Twin {
    /// Two sides with `ports` listening (TCP and UDP) on each server and
    /// `extra_ifaces` (idle interfaces, e.g. "eth1") present on each.
    #[must_use]
    pub fn new(ports: &[u16], extra_ifaces: &[&str]) -> Self {
        let fw = Pair::with_server_if(Some(SERVER_IF));
        let ipt = Pair::with_server_if(Some(SERVER_IF));
        let mut servers = Vec::new();
        for pair in [&fw, &ipt] {
            for src in SOURCES {
                let a: IpAddr = src.parse().unwrap();
                let len = if a.is_ipv6() { 128 } else { 32 };
                pair.client.ip(&[
                    "addr",
                    "add",
                    &format!("{a}/{len}"),
                    "dev",
                    &pair.client_if,
                    "nodad",
                ]);
                pair.server
                    .ip(&["route", "add", &format!("{a}/{len}"), "dev", SERVER_IF]);
            }
            // (This kernel has no dummy devices: a veth with its peer in
            // the same namespace stands in.)
            for name in extra_ifaces {
                let peer = format!("{name}p");
                pair.server
                    .ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
                pair.server.ip(&["link", "set", name, "up"]);
            }
            pair.server.ip(&["link", "set", "lo", "up"]);
            for &p in ports {
                servers.push(EchoServer::start(&pair.server, p));
            }
        }
        Self {
            fw,
            ipt,
            _servers: servers,
        }
    }

    /// Guard the fw side with `policy_file` (XDP/TC) and the iptables side
    /// with `oracle`.
    pub fn load(&self, policy_file: &str, oracle: &Oracle<'_>) {
        crate::fwcli::fw_user_ok(
            &self.fw.server,
            &[
                "load",
                policy_file,
                "--backend",
                "xdp",
                "--iface",
                SERVER_IF,
                "--pin-path",
                &self.fw.pin_path(),
                "--detach",
            ],
        );
        match oracle {
            Oracle::Export => {
                for (family, restore) in
                    [("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")]
                {
                    let rules = crate::fwcli::fw_user_ok(
                        &self.ipt.server,
                        &[
                            "export",
                            policy_file,
                            "--family",
                            family,
                            "--iface",
                            SERVER_IF,
                        ],
                    );
                    restore_in(&self.ipt.server, restore, &rules);
                }
            }
            Oracle::Files { v4, v6 } => {
                restore_in(&self.ipt.server, "iptables-restore", v4);
                if let Some(v6) = v6 {
                    restore_in(&self.ipt.server, "ip6tables-restore", v6);
                }
            }
        }
    }

    /// Send every probe to both sides: the differences, one line each, and
    /// how many probes had each outcome on fw's side (so a test can tell a
    /// real comparison from two servers that both answer nothing).
    #[must_use]
    pub fn compare(&self, probes: &[Probe]) -> Comparison {
        let run_side = |pair: &Pair| {
            let client = pair.client.name.clone();
            let client_if = pair.client_if.clone();
            let server_if_mac = pair.server.mac(SERVER_IF);
            let client_mac = pair.client.mac(&pair.client_if);
            // Probes are independent (each has ports of its own), and most
            // of the time goes to waiting for answers that do not come: run
            // them eight at a time.
            let chunks: Vec<Vec<Probe>> = probes
                .chunks(probes.len().div_ceil(PARALLEL).max(1))
                .map(<[Probe]>::to_vec)
                .collect();
            let workers: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let (client, client_if) = (client.clone(), client_if.clone());
                    thread::spawn(move || {
                        let ns = Netns::existing(&client);
                        chunk
                            .iter()
                            .map(|p| {
                                (
                                    p.clone(),
                                    outcome(&ns, &client_if, client_mac, server_if_mac, p),
                                )
                            })
                            .collect::<Vec<(Probe, String)>>()
                    })
                })
                .collect();
            thread::spawn(move || {
                workers
                    .into_iter()
                    .flat_map(|w| w.join().expect("probe thread"))
                    .collect::<BTreeMap<Probe, String>>()
            })
        };
        let fw = run_side(&self.fw);
        let ipt = run_side(&self.ipt);
        let (fw, ipt) = (fw.join().expect("fw side"), ipt.join().expect("ipt side"));
        let diffs = fw
            .iter()
            .filter(|(p, o)| ipt.get(*p) != Some(*o))
            .map(|(p, o)| {
                format!(
                    "{p}: fw {o}, iptables {}",
                    ipt.get(p).map_or("(missing)", String::as_str)
                )
            })
            .collect();
        let mut outcomes = BTreeMap::new();
        for o in fw.values() {
            *outcomes.entry(o.clone()).or_insert(0) += 1;
        }
        Comparison { diffs, outcomes }
    }
}

/// What `Twin::compare` found.
pub struct Comparison {
    pub diffs: Vec<String>,
    /// Outcome → number of probes with it (fw's side).
    pub outcomes: BTreeMap<String, usize>,
}

impl Comparison {
    /// Fail, printing every differing probe, unless both sides agree on
    /// all of them; and make sure the probes saw both allowed and refused
    /// traffic.
    ///
    /// # Panics
    /// A probe differs, or every probe had the same outcome.
    pub fn assert_agree(&self, what: &str, probes: usize) {
        assert!(
            self.diffs.is_empty(),
            "{what}: {} of {probes} probes differ between fw and iptables:\n{}",
            self.diffs.len(),
            self.diffs.join("\n")
        );
        assert!(
            self.outcomes.len() > 1,
            "{what}: every probe had the same outcome {:?}; the comparison proves nothing",
            self.outcomes
        );
        println!("{what}: {probes} probes agree: {:?}", self.outcomes);
    }
}

/// `restore < rules` inside `ns`.
///
/// # Panics
/// iptables refuses the rules.
pub fn restore_in(ns: &Netns, restore: &str, rules: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, restore])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iptables-restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{restore} refused the rules: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const WAIT: Duration = Duration::from_millis(400);
/// Probes in flight at once on each side.
const PARALLEL: usize = 8;

fn server(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(SERVER6)
    } else {
        IpAddr::V4(SERVER4)
    }
}

fn local(from: Option<IpAddr>, v6: bool, sport: u16) -> SocketAddr {
    let ip = from.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    SocketAddr::new(ip, sport)
}

/// What one probe observed, as a word both sides can be compared on.
fn outcome(
    ns: &Netns,
    client_if: &str,
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    p: &Probe,
) -> String {
    match p {
        Probe::Tcp {
            from,
            v6,
            sport,
            port,
        } => match tcp_probe_from(
            ns,
            local(*from, *v6, *sport),
            SocketAddr::new(server(*v6), *port),
            WAIT,
        ) {
            Connect::Echoed => "connected".into(),
            Connect::Refused => "refused".into(),
            Connect::TimedOut => "dropped".into(),
            Connect::Other(e) => format!("error {e}"),
        },
        Probe::Udp {
            from,
            v6,
            sport,
            port,
        } => match crate::netns::udp_exchange_from(
            ns,
            local(*from, *v6, *sport),
            SocketAddr::new(server(*v6), *port),
            WAIT,
        ) {
            Datagram::Answered => "answered".into(),
            Datagram::Refused => "refused".into(),
            Datagram::Silent => "silent".into(),
            Datagram::Other(e) => format!("error {e}"),
        },
        Probe::Ping { from, v6 } => {
            let to = server(*v6).to_string();
            let mut args = vec!["ping", "-c", "1", "-W", "0.4"];
            let src;
            if let Some(a) = from {
                src = a.to_string();
                args.extend(["-I", &src]);
            }
            args.push(&to);
            if ns.exec(&args).status.success() {
                "answered".into()
            } else {
                "silent".into()
            }
        }
        Probe::Flags { v6, port, flags } => {
            let sport = 30_000 + u16::from(*flags) * 7 + *port % 1000;
            let src = SocketAddr::new(
                if *v6 {
                    IpAddr::V6(crate::packet::CLIENT6)
                } else {
                    IpAddr::V4(crate::packet::CLIENT4)
                },
                sport,
            );
            let frame = tcp_segment(
                Way::In,
                src,
                SocketAddr::new(server(*v6), *port),
                &Segment {
                    seq: 77_777,
                    ack: if flags & ACK != 0 { 88_888 } else { 0 },
                    window: 1024,
                    flags: *flags,
                    ..Segment::default()
                },
            );
            let cap = Capture::start(ns, client_if);
            crate::netns::send_frame(
                ns,
                client_if,
                crate::packet::with_macs(&frame, client_mac, server_mac),
            );
            thread::sleep(WAIT);
            let answers: Vec<u8> = cap
                .frames()
                .iter()
                .filter_map(|f| tcp_reply_flags(f, *port, sport))
                .collect();
            match answers.first() {
                None => "none".into(),
                Some(f) if f & RST != 0 => "rst".into(),
                Some(f) if f & (SYN | ACK) == SYN | ACK => "synack".into(),
                Some(f) => format!("flags {f:#04x}"),
            }
        }
    }
}

/// The TCP flags of `frame` if it is a segment from `sport` to `dport`.
fn tcp_reply_flags(frame: &[u8], sport: u16, dport: u16) -> Option<u8> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Tcp(t)
            if t.source_port() == sport && t.destination_port() == dport =>
        {
            let h = t.to_header();
            Some(
                u8::from(h.fin)
                    | u8::from(h.syn) << 1
                    | u8::from(h.rst) << 2
                    | u8::from(h.psh) << 3
                    | u8::from(h.ack) << 4
                    | u8::from(h.urg) << 5,
            )
        }
        _ => None,
    }
}
