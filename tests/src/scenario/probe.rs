//! One probe: real packets from one namespace to another, and what came
//! back. The socket probes run on a thread that has entered the sending
//! host's namespace; `ping` runs through `ip netns exec`.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use super::spec::{Outcome, Probe, ProbeProto};

/// How long a probe expected to be answered may take: generous, since it
/// only costs time when the probe fails.
pub const OPEN_WAIT: Duration = Duration::from_secs(3);
/// How long silence lasts before a probe counts as dropped (and how long
/// one expected to be refused or dropped waits).
pub const DROP_WAIT: Duration = Duration::from_secs(1);

const MESSAGE: &[u8] = b"fw scenario probe";

/// The wait for `p`: answers come in milliseconds, so the long wait is
/// only for probes that should be answered, where waiting longer can
/// only turn a slow answer into a pass, never hide a drop.
#[must_use]
pub fn wait_for(p: &Probe) -> Duration {
    match p.expect {
        Outcome::Open | Outcome::Closed => OPEN_WAIT,
        _ => DROP_WAIT,
    }
}

/// Send probe `p` from namespace `ns`; the calling thread must already be
/// in that namespace (ping, which execs, is the exception).
#[must_use]
pub fn send(ns: &str, p: &Probe) -> Outcome {
    let wait = wait_for(p);
    let port = p.port.unwrap_or(0);
    let to = SocketAddr::new(p.to, port);
    let local = (p.src.is_some() || p.sport.is_some()).then(|| {
        let ip = p.src.unwrap_or(if p.to.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        });
        SocketAddr::new(ip, p.sport.unwrap_or(0))
    });
    match p.proto {
        ProbeProto::Tcp => tcp(local, to, wait),
        ProbeProto::Udp => udp(local, to, wait),
        ProbeProto::TcpAck => tcp_ack(p.src, p.sport, to, wait),
        ProbeProto::Icmp => ping(ns, p.src, p.to, wait),
    }
}

fn socket(to: SocketAddr, ty: Type, proto: Option<Protocol>) -> std::io::Result<Socket> {
    let domain = if to.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    Socket::new(domain, ty, proto)
}

fn error_outcome(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::EPERM | libc::EACCES) => Outcome::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Outcome::Unreachable,
        Some(libc::ETIMEDOUT | libc::EAGAIN | libc::EINPROGRESS) => Outcome::Dropped,
        _ => Outcome::Error(e.to_string()),
    }
}

/// Connect, send a message, read it back. The socket closes with a RST
/// (linger 0), so no `TIME_WAIT` keeps its ports from the next run's probe.
fn tcp(local: Option<SocketAddr>, to: SocketAddr, wait: Duration) -> Outcome {
    let sock = match socket(to, Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("socket: {e}")),
    };
    let _ = sock.set_linger(Some(Duration::ZERO));
    // An IPv6 probe from a fixed port must not hold that port for IPv4
    // too: the two run side by side.
    if to.is_ipv6() {
        let _ = sock.set_only_v6(true);
    }
    if let Some(l) = local {
        let _ = sock.set_reuse_address(true);
        if let Err(e) = sock.bind(&l.into()) {
            return Outcome::Error(format!("bind {l}: {e}"));
        }
    }
    if let Err(e) = sock.connect_timeout(&to.into(), wait) {
        return if e.kind() == std::io::ErrorKind::TimedOut {
            Outcome::Dropped
        } else {
            error_outcome(&e)
        };
    }
    let mut stream: TcpStream = sock.into();
    let _ = stream.set_read_timeout(Some(wait));
    if stream.write_all(MESSAGE).is_err() {
        return Outcome::Closed;
    }
    let mut buf = [0u8; MESSAGE.len()];
    match stream.read_exact(&mut buf) {
        Ok(()) if buf == MESSAGE => Outcome::Open,
        Ok(()) => Outcome::Error("a different message came back".into()),
        Err(_) => Outcome::Closed,
    }
}

/// Send a datagram on a connected socket, wait for its echo; an ICMP
/// error comes back as the socket's error.
fn udp(local: Option<SocketAddr>, to: SocketAddr, wait: Duration) -> Outcome {
    let sock = match socket(to, Type::DGRAM, None) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("socket: {e}")),
    };
    if to.is_ipv6() {
        let _ = sock.set_only_v6(true);
    }
    if let Some(l) = local {
        let _ = sock.set_reuse_address(true);
        if let Err(e) = sock.bind(&l.into()) {
            return Outcome::Error(format!("bind {l}: {e}"));
        }
    }
    let sock: UdpSocket = sock.into();
    if let Err(e) = sock.connect(to) {
        return error_outcome(&e);
    }
    let _ = sock.set_read_timeout(Some(wait));
    // The sender's own firewall may refuse the send: iptables' OUTPUT
    // REJECT says so with EPERM, where fw's datapath answers with an ICMP
    // error that the receive below reports.
    if let Err(e) = sock.send(MESSAGE) {
        return error_outcome(&e);
    }
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Ok(n) if buf[..n] == *MESSAGE => Outcome::Open,
        Ok(n) => Outcome::Error(format!("{n} unexpected bytes came back")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Outcome::Dropped,
        Err(e) => error_outcome(&e),
    }
}

/// Source ports for bare ACKs, distinct within this process.
fn next_raw_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    41_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 20_000
}

/// The source address the kernel picks for `to`.
fn source_for(to: SocketAddr) -> std::io::Result<IpAddr> {
    let any = if to.is_ipv4() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    };
    let s = UdpSocket::bind(any)?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// A bare TCP ACK that belongs to no connection, from a raw socket: the
/// target's stack answers it with a RST (`refused`) if it gets there.
fn tcp_ack(src: Option<IpAddr>, sport: Option<u16>, to: SocketAddr, wait: Duration) -> Outcome {
    let from = match src.map_or_else(|| source_for(to), Ok) {
        Ok(a) => a,
        Err(e) => return error_outcome(&e),
    };
    let sport = sport.unwrap_or_else(next_raw_port);
    let mut tcp = etherparse::TcpHeader::new(sport, to.port(), 0x1234_5678, 64_240);
    tcp.ack = true;
    tcp.acknowledgment_number = 0x0bad_cafe;
    tcp.checksum = match (from, to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4_raw(s.octets(), d.octets(), &[]),
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6_raw(s.octets(), d.octets(), &[]),
        _ => return Outcome::Error("source and target of different families".into()),
    }
    .expect("an empty payload fits");
    let sock = match socket(to, Type::RAW, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("raw socket: {e}")),
    };
    if let Err(e) = sock.bind(&SocketAddr::new(from, 0).into()) {
        return Outcome::Error(format!("bind {from}: {e}"));
    }
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    if let Err(e) = sock.send_to(&tcp.to_bytes(), &SocketAddr::new(to.ip(), 0).into()) {
        return error_outcome(&e);
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok(n) = (&sock).read(&mut buf) else {
            continue;
        };
        // IPv4 raw sockets see the IP header, IPv6 ones only the payload.
        let start = if to.is_ipv4() {
            usize::from(buf[0] & 0x0f) * 4
        } else {
            0
        };
        let Some(seg) = buf.get(start..n).filter(|s| s.len() >= 20) else {
            continue;
        };
        let (s, d) = (
            u16::from_be_bytes([seg[0], seg[1]]),
            u16::from_be_bytes([seg[2], seg[3]]),
        );
        if s == to.port() && d == sport {
            let rst = seg[13] & 0x04 != 0;
            return if rst {
                Outcome::Refused
            } else {
                Outcome::Error(format!("a segment with flags {:#04x} came back", seg[13]))
            };
        }
    }
    Outcome::Dropped
}

/// `ping -c 1` from `ns`: answered, silent, or an ICMP error (`ping`
/// prints it), or refused by the sender's own firewall (EPERM).
fn ping(ns: &str, src: Option<IpAddr>, to: IpAddr, wait: Duration) -> Outcome {
    let secs = wait.as_secs().max(1).to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "ping", "-n", "-c", "1", "-W", &secs]);
    let src = src.map(|s| s.to_string());
    if let Some(s) = &src {
        cmd.args(["-I", s]);
    }
    let out = match cmd.arg(to.to_string()).output() {
        Ok(o) => o,
        Err(e) => return Outcome::Error(format!("run ping: {e}")),
    };
    if out.status.success() {
        return Outcome::Open;
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("Host Unreachable")
        || text.contains("Net Unreachable")
        || text.contains("Network is unreachable")
        || text.contains("Prohibited")
        || text.contains("Packet filtered")
    {
        Outcome::Unreachable
    } else if text.contains("Unreachable")
        || text.contains("Operation not permitted")
        || text.contains("Parameter problem")
    {
        Outcome::Refused
    } else if text.contains(" 0 received") {
        Outcome::Dropped
    } else {
        Outcome::Error(text.trim().replace('\n', " | "))
    }
}
