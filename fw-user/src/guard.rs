//! The lockout guard: before `load` applies a policy (and when `check`
//! validates one), find the live SSH sessions of this host and refuse a
//! policy that would cut the operator's own session or leave no way in on
//! the SSH port, naming the rule responsible. `--force` overrides.
//!
//! Where the sessions come from:
//! - `SSH_CONNECTION` (set by sshd for the session's shell; `sudo` usually
//!   drops it, hence the next source);
//! - the sshd processes among fw-user's ancestors, whose TCP sockets are
//!   the operator's session (`/proc/<pid>/fd` against `/proc/net/tcp`);
//! - the sockets sshd listens on (the SSH ports) and every established
//!   connection to them in the kernel's socket table: other people's
//!   sessions, reported as warnings.
//!
//! A session counts only if its local address belongs to this network
//! namespace: a test namespace never judges the host's own SSH session.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    fs,
    net::IpAddr,
};

use fw_common::policy::{Chain, PacketState};

use crate::{
    adopt,
    error::{Error, Result},
    policy::{
        Policy,
        judge::{ACK, Decider, Probe, SYN, judge},
    },
};

/// `st` of `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

/// An SSH session terminated on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// The interface that holds `server`.
    pub iface: String,
    /// The session of the person running fw-user.
    pub yours: bool,
    /// How it was found.
    pub found_by: &'static str,
}

/// What the guard knows about SSH on this host.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Ports sshd listens on, with the interface-less `(port)`.
    pub ssh_ports: BTreeSet<u16>,
    pub sessions: Vec<Session>,
    /// Every non-loopback interface with its addresses, for "a way in".
    pub iface_addrs: HashMap<String, Vec<IpAddr>>,
}

#[derive(Debug)]
struct Socket {
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
    state: u8,
    inode: u64,
}

fn to_ip(words: [u32; 4], family: u8) -> IpAddr {
    if family == fw_common::family::IPV4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(bytes)
    }
}

fn sockets() -> Vec<Socket> {
    let mut out = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Some((l, lp, fam)), Some((r, rp, _))) =
                (adopt::parse_endpoint(f[1]), adopt::parse_endpoint(f[2]))
            else {
                continue;
            };
            let (l, lfam) = adopt::unmap(l, fam);
            let (r, rfam) = adopt::unmap(r, fam);
            let (Ok(state), Ok(inode)) = (u8::from_str_radix(f[3], 16), f[9].parse()) else {
                continue;
            };
            out.push(Socket {
                local: to_ip(l, lfam),
                local_port: lp,
                remote: to_ip(r, rfam),
                remote_port: rp,
                state,
                inode,
            });
        }
    }
    out
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// sshd and its per-session processes (`sshd-session` since OpenSSH 9.8).
fn is_sshd(pid: u32) -> bool {
    comm(pid).starts_with("sshd")
}

impl Live {
    /// Look at this host (this network namespace).
    #[must_use]
    pub fn gather() -> Self {
        let mut live = Self::default();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let ip = a.address.as_ref().and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                });
                if let Some(ip) = ip {
                    live.iface_addrs
                        .entry(a.interface_name)
                        .or_default()
                        .push(ip);
                }
            }
        }
        let socks = sockets();
        let by_inode: HashMap<u64, &Socket> = socks.iter().map(|s| (s.inode, s)).collect();
        let pids: Vec<u32> = fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for pid in pids.iter().copied().filter(|&p| is_sshd(p)) {
            for inode in socket_inodes(pid) {
                if let Some(s) = by_inode.get(&inode).filter(|s| s.state == TCP_LISTEN) {
                    live.ssh_ports.insert(s.local_port);
                }
            }
        }
        // Your session: the sockets of the sshd processes above fw-user.
        let mut pid = std::process::id();
        while let Some(pp) = parent(pid).filter(|&p| p > 1) {
            if is_sshd(pp) {
                for inode in socket_inodes(pp) {
                    if let Some(s) = by_inode.get(&inode).filter(|s| s.state == TCP_ESTABLISHED) {
                        live.add(
                            s.remote,
                            s.remote_port,
                            s.local,
                            s.local_port,
                            true,
                            "your sshd process",
                        );
                    }
                }
            }
            pid = pp;
        }
        if let Ok(conn) = std::env::var("SSH_CONNECTION") {
            let f: Vec<&str> = conn.split_whitespace().collect();
            if let [client, cport, server, sport] = f[..]
                && let (Ok(c), Ok(cp), Ok(s), Ok(sp)) = (
                    client.parse::<IpAddr>(),
                    cport.parse::<u16>(),
                    server.parse::<IpAddr>(),
                    sport.parse::<u16>(),
                )
            {
                live.add(c, cp, s, sp, true, "SSH_CONNECTION");
                if live.iface_of(s).is_some() {
                    live.ssh_ports.insert(sp);
                }
            }
        }
        for s in socks.iter().filter(|s| s.state == TCP_ESTABLISHED) {
            if live.ssh_ports.contains(&s.local_port) {
                live.add(
                    s.remote,
                    s.remote_port,
                    s.local,
                    s.local_port,
                    false,
                    "the socket table",
                );
            }
        }
        live
    }

    fn iface_of(&self, addr: IpAddr) -> Option<String> {
        let unmapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.iface_addrs
            .iter()
            .find(|(_, addrs)| addrs.contains(&unmapped))
            .map(|(name, _)| name.clone())
    }

    fn add(
        &mut self,
        client: IpAddr,
        client_port: u16,
        server: IpAddr,
        server_port: u16,
        yours: bool,
        found_by: &'static str,
    ) {
        // Not an address of this namespace: not a session fw here guards.
        let Some(iface) = self.iface_of(server) else {
            return;
        };
        if client.is_loopback() || iface == "lo" {
            return;
        }
        if let Some(known) = self.sessions.iter_mut().find(|k| {
            k.client == client && k.client_port == client_port && k.server_port == server_port
        }) {
            known.yours |= yours;
            return;
        }
        self.sessions.push(Session {
            client,
            client_port,
            server,
            server_port,
            iface,
            yours,
            found_by,
        });
    }
}

fn decider_text(policy_name: &str, by: &Decider<'_>) -> String {
    match by {
        Decider::Stage(stage) => format!("`{stage}` of {policy_name} drops it"),
        Decider::Rule(rule) => format!(
            "rule `{rule}` at {policy_name}:{} {} it",
            rule.line,
            match rule.action {
                crate::policy::RuleAction::Reject(_) => "rejects",
                _ => "drops",
            }
        ),
        Decider::Default(chain) => format!(
            "no rule accepts it and the {} default of {policy_name} drops it",
            match chain {
                Chain::Input => "input",
                Chain::Output => "output",
                Chain::Forward => "forward",
            }
        ),
    }
}

/// Why one session would be cut or could not come back, if so.
fn judge_session(policy: &Policy, name: &str, s: &Session) -> Vec<String> {
    let mut problems = Vec::new();
    let inbound = |state, flags| Probe {
        src: s.client,
        dst: s.server,
        sport: s.client_port,
        dport: s.server_port,
        iface: s.iface.clone(),
        state,
        tcp_flags: flags,
    };
    let outbound = Probe {
        src: s.server,
        dst: s.client,
        sport: s.server_port,
        dport: s.client_port,
        iface: s.iface.clone(),
        state: PacketState::Established,
        tcp_flags: ACK,
    };
    let incoming = judge(
        policy,
        Chain::Input,
        &inbound(PacketState::Established, ACK),
    );
    if !incoming.accepted {
        problems.push(format!(
            "it would cut the session: its packets from {} arrive as established: {}",
            s.client,
            decider_text(name, &incoming.by)
        ));
    }
    let replies = judge(policy, Chain::Output, &outbound);
    if !replies.accepted {
        problems.push(format!(
            "it would cut the session: this host's replies to {} leave as established: {}",
            s.client,
            decider_text(name, &replies.by)
        ));
    }
    let new = judge(policy, Chain::Input, &inbound(PacketState::New, SYN));
    if !new.accepted {
        problems.push(format!(
            "it leaves no way back in: a new connection from {} to port {}: {}",
            s.client,
            s.server_port,
            decider_text(name, &new.by)
        ));
    }
    problems
}

/// Can anyone open a new connection to `port` on `iface`? Probes the
/// sources the policy's own accept rules name (and one outside them all),
/// each judged by the whole chain, so a drop before the accept counts.
fn way_in(policy: &Policy, iface: &str, addrs: &[IpAddr], port: u16) -> bool {
    let mut sources: Vec<IpAddr> = vec![
        "192.0.2.1".parse().expect("address"),
        "2001:db8::1".parse().expect("address"),
    ];
    for rule in &policy.input {
        if let Some(m) = rule.src.as_ref().filter(|m| !m.negated) {
            sources.extend(m.nets.iter().map(|n| {
                // An address inside the prefix, not its network address.
                n.hosts().next().unwrap_or_else(|| n.addr())
            }));
        }
    }
    addrs.iter().any(|&dst| {
        sources
            .iter()
            .filter(|s| s.is_ipv4() == dst.is_ipv4())
            .any(|&src| {
                let probe = Probe {
                    src,
                    dst,
                    sport: 40000,
                    dport: port,
                    iface: iface.to_string(),
                    state: PacketState::New,
                    tcp_flags: SYN,
                };
                judge(policy, Chain::Input, &probe).accepted
            })
    })
}

/// What the guard objects to, and what it only warns about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Reasons to refuse.
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
}

/// Judge `policy` (named `name`) against `live`, guarding `targets`.
#[must_use]
pub fn assess(policy: &Policy, name: &str, targets: &[String], live: &Live) -> Findings {
    let mut f = Findings::default();
    for s in live.sessions.iter().filter(|s| targets.contains(&s.iface)) {
        let problems = judge_session(policy, name, s);
        if problems.is_empty() {
            continue;
        }
        let mut text = format!(
            "{} SSH session {}:{} -> {}:{} on {} (found through {}):",
            if s.yours { "your" } else { "the" },
            s.client,
            s.client_port,
            s.server,
            s.server_port,
            s.iface,
            s.found_by
        );
        for p in &problems {
            let _ = write!(text, "\n    {p}");
        }
        if s.yours {
            f.refusals.push(text);
        } else {
            f.warnings.push(text);
        }
    }
    for &port in &live.ssh_ports {
        let guarded: Vec<(&String, &Vec<IpAddr>)> = live
            .iface_addrs
            .iter()
            .filter(|(name, _)| targets.contains(name))
            .collect();
        if guarded.is_empty() {
            continue;
        }
        if !guarded
            .iter()
            .any(|(iface, addrs)| way_in(policy, iface, addrs, port))
        {
            let ifaces: Vec<&str> = guarded.iter().map(|(n, _)| n.as_str()).collect();
            f.refusals.push(format!(
                "sshd listens on port {port}, but no new connection to it from anywhere is accepted on {} by {name}",
                ifaces.join(", ")
            ));
        }
    }
    f
}

/// Refuse `policy` if it would lock the operator out, unless `force`.
///
/// # Errors
/// `Error::Lockout` with every reason and the rules responsible.
pub fn enforce(policy: &Policy, name: &str, targets: &[String], force: bool) -> Result<()> {
    let findings = assess(policy, name, targets, &Live::gather());
    for w in &findings.warnings {
        println!("fw: warning: this policy affects {w}");
    }
    if findings.refusals.is_empty() {
        return Ok(());
    }
    let mut text = String::from("this policy could lock you out of this host:");
    for r in &findings.refusals {
        let _ = write!(text, "\n  - {r}");
    }
    if force {
        println!("fw: --force: applying although {text}");
        return Ok(());
    }
    text.push_str(
        "\n  (hint: add an accept rule for the SSH port before the rule named above; or try it with `--confirm 60s`, which rolls back unless confirmed; `--force` applies it anyway)",
    );
    Err(Error::Lockout(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn live() -> Live {
        let mut l = Live::default();
        l.iface_addrs
            .insert("eth0".into(), vec!["192.0.2.1".parse().unwrap()]);
        l.ssh_ports.insert(22);
        l.add(
            "198.51.100.10".parse().unwrap(),
            40000,
            "192.0.2.1".parse().unwrap(),
            22,
            true,
            "SSH_CONNECTION",
        );
        l
    }

    const SSH_FROM_OFFICE: &str =
        "[[input]]\nproto = \"tcp\"\ndport = 22\nsrc = \"198.51.100.0/24\"\naction = \"accept\"\n";

    #[test]
    fn a_policy_that_keeps_ssh_open_passes() {
        let p = parse(SSH_FROM_OFFICE, "ok.toml").unwrap();
        assert_eq!(
            assess(&p, "ok.toml", &["eth0".into()], &live()),
            Findings::default()
        );
    }

    #[test]
    fn no_way_back_in_is_refused_with_the_default_named() {
        let p = parse(
            "[[input]]\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n",
            "web.toml",
        )
        .unwrap();
        let f = assess(&p, "web.toml", &["eth0".into()], &live());
        assert_eq!(f.refusals.len(), 2, "{f:?}");
        assert!(f.refusals[0].contains("your SSH session 198.51.100.10:40000 -> 192.0.2.1:22"));
        assert!(f.refusals[0].contains("no way back in"));
        assert!(f.refusals[0].contains("input default of web.toml drops it"));
        assert!(f.refusals[1].contains("sshd listens on port 22"));
    }

    #[test]
    fn a_blocking_rule_is_named_with_its_line() {
        let text = format!(
            "[stateful]\nestablished = \"rules\"\n\n[[input]]\nsrc = \"198.51.100.0/24\"\naction = \"drop\"\n\n{SSH_FROM_OFFICE}[[input]]\nstate = \"established\"\naction = \"accept\"\n"
        );
        let p = parse(&text, "p.toml").unwrap();
        let f = assess(&p, "p.toml", &["eth0".into()], &live());
        let all = f.refusals.join("\n");
        assert!(all.contains("it would cut the session"), "{all}");
        assert!(all.contains("at p.toml:4"), "{all}");
        // Others may still come in: port 22 has a way in from elsewhere? No:
        // only the office is accepted, and the office is dropped first.
        assert!(all.contains("sshd listens on port 22"), "{all}");
    }

    #[test]
    fn unguarded_interfaces_and_foreign_sessions_are_ignored() {
        let p = parse("", "empty.toml").unwrap();
        assert_eq!(
            assess(&p, "e.toml", &["eth1".into()], &live()),
            Findings::default()
        );
        let mut l = live();
        l.add(
            "198.51.100.11".parse().unwrap(),
            1,
            "203.0.113.1".parse().unwrap(),
            22,
            true,
            "SSH_CONNECTION",
        );
        assert_eq!(
            l.sessions.len(),
            1,
            "203.0.113.1 is no address of this host"
        );
    }
}
