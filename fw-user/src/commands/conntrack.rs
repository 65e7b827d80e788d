//! `fw-user conntrack list|delete|flush`: the connection tables, as
//! `conntrack -L`, `-D` and `-F` show and edit netfilter's.
//!
//! Every connection is shown in its original direction: the end that sent
//! the first packet is the source. The tables store (local, remote) keys,
//! so that comes from the entry's origin: opened by a remote peer
//! (ingress) or by this host (egress); a routed flow is keyed as its first
//! packet arrived (local = that packet's destination), so its source is
//! the remote end too. Filters (`--src`, `--dport` …) match that original
//! tuple, as `conntrack -L -s/-d` match netfilter's original tuple.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_ADOPTED, CT_FLAG_FORWARD, CT_FLAG_LIBERAL, CT_FLAG_SEEN_REPLY, CtKey, CtState,
    },
    family, ipproto,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    backend::{
        conntrack::{CtRecord, CtTable},
        xdp,
    },
    error::{Error, Result},
    pin::PinLayout,
    policy::icmp,
};

/// `--proto`: a name (`tcp`, `udp`, `icmp`, `icmpv6` …) or a number.
///
/// # Errors
/// Not a protocol fw knows (clap prints the message).
pub fn parse_proto(s: &str) -> Result<u8, String> {
    match icmp::proto_number(&s.to_ascii_lowercase()) {
        Some(Some(p)) => Ok(p),
        Some(None) => Err("leave out --proto to match every protocol".into()),
        None => Err("write tcp, udp, icmp, icmpv6 or a protocol number 0-255".into()),
    }
}

/// `--src`/`--dst`: an address or a prefix (`192.0.2.0/24`,
/// `2001:db8::/32`); host bits of a prefix are ignored, as in the policy.
///
/// # Errors
/// Neither an address nor a prefix.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "write an address (192.0.2.1, 2001:db8::1) or a prefix (192.0.2.0/24)".into())
}

/// Every state name `conntrack list` prints.
const STATE_NAMES: [&str; 11] = [
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
    "UNREPLIED",
    "REPLIED",
];

/// `--state`: a state name as `conntrack list` prints it, in any case;
/// `UNREPLIED` and `REPLIED` cover UDP and ICMP.
///
/// # Errors
/// Not a state name.
pub fn parse_state(s: &str) -> Result<String, String> {
    let name = s.trim().to_ascii_uppercase().replace('-', "_");
    if STATE_NAMES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!("states are {}", STATE_NAMES.join(", ")))
    }
}

/// Which connections a `list` or `delete` applies to; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub proto: Option<u8>,
    /// The originator's address.
    pub src: Option<IpNet>,
    /// The responder's address.
    pub dst: Option<IpNet>,
    /// Ports of the original direction; flows without ports never match.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// A state name from `STATE_NAMES`.
    pub state: Option<String>,
}

impl Filter {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    #[must_use]
    pub fn matches(&self, f: &Flow) -> bool {
        self.proto.is_none_or(|p| p == f.proto_number)
            && self.src.is_none_or(|n| n.contains(&f.src))
            && self.dst.is_none_or(|n| n.contains(&f.dst))
            && self.sport.is_none_or(|p| f.sport == Some(p))
            && self.dport.is_none_or(|p| f.dport == Some(p))
            && self.state.as_deref().is_none_or(|s| s == f.state)
    }
}

/// Packets or bytes in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Directional {
    pub original: u64,
    pub reply: u64,
}

/// A tracked connection as `conntrack list` shows it. The JSON form
/// (`--json`) is this, field for field; fields are only ever added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
    pub proto: String,
    pub proto_number: u8,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The end that opened the connection.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP and UDP only.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP and `ICMPv6` echo only: the echo identifier.
    pub icmp_id: Option<u16>,
    /// As `conntrack -L` names it: `ESTABLISHED`, `TIME_WAIT`, `UNREPLIED` …
    pub state: &'static str,
    /// Seconds since the first packet.
    pub age_secs: u64,
    /// Seconds left before the entry expires without traffic (0: expired,
    /// waiting to be reclaimed).
    pub timeout_secs: u64,
    pub packets: Directional,
    pub bytes: Directional,
    /// `SEEN_REPLY`, `ADOPTED`, `FORWARD`, `LIBERAL`.
    pub flags: Vec<&'static str>,
    /// `established` (`FW_CONNTRACK`) or `transient` (`FW_CT_TRANSIENT`).
    pub table: CtTable,
    /// The chain that admitted it: `input`, `output` or `forward`.
    pub chain: &'static str,
    /// 1-based rule of `chain` that admitted it; `null`: the chain's
    /// default, or adopted at load.
    pub rule: Option<u16>,
}

/// The address stored in key words (network byte order in memory).
fn addr_of(words: [u32; 4], fam: u8) -> IpAddr {
    if fam == family::IPV6 {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    }
}

/// The key words of an address.
fn words_of(addr: IpAddr) -> [u32; 4] {
    let mut words = [0u32; 4];
    match addr {
        IpAddr::V4(a) => words[0] = u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            for (w, chunk) in words.iter_mut().zip(a.octets().chunks_exact(4)) {
                *w = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
    words
}

const fn is_icmp(proto: u8) -> bool {
    matches!(proto, ipproto::ICMP | ipproto::ICMPV6)
}

const fn has_ports(proto: u8) -> bool {
    matches!(proto, ipproto::TCP | ipproto::UDP)
}

impl Flow {
    /// The original-direction view of `r` at `now_ns` (datapath clock).
    #[must_use]
    pub fn of(r: &CtRecord, now_ns: u64) -> Self {
        let (k, e) = (&r.key, &r.entry);
        let forward = e.flags & CT_FLAG_FORWARD != 0;
        let opened_by_remote = forward || e.origin == Direction::Ingress as u8;
        let (local, remote) = (addr_of(k.local, k.family), addr_of(k.remote, k.family));
        let (src, dst, sport, dport) = if opened_by_remote {
            (remote, local, k.remote_port, k.local_port)
        } else {
            (local, remote, k.local_port, k.remote_port)
        };
        let ports = has_ports(k.proto);
        let flags = [
            (CT_FLAG_SEEN_REPLY, "SEEN_REPLY"),
            (CT_FLAG_ADOPTED, "ADOPTED"),
            (CT_FLAG_FORWARD, "FORWARD"),
            (CT_FLAG_LIBERAL, "LIBERAL"),
        ]
        .iter()
        .filter(|(bit, _)| e.flags & bit != 0)
        .map(|&(_, name)| name)
        .collect();
        Self {
            proto: icmp::proto_name(k.proto),
            proto_number: k.proto,
            family: if k.family == family::IPV6 {
                "ipv6"
            } else {
                "ipv4"
            },
            src,
            dst,
            sport: ports.then_some(sport),
            dport: ports.then_some(dport),
            icmp_id: is_icmp(k.proto).then_some(k.local_port),
            state: CtState::from_u8(e.state).name(),
            age_secs: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
            timeout_secs: e.expires_ns.saturating_sub(now_ns) / 1_000_000_000,
            packets: Directional {
                original: e.packets[0],
                reply: e.packets[1],
            },
            bytes: Directional {
                original: e.bytes[0],
                reply: e.bytes[1],
            },
            flags,
            table: r.table,
            chain: if forward {
                "forward"
            } else if e.origin == Direction::Ingress as u8 {
                "input"
            } else {
                "output"
            },
            rule: (e.rule != 0).then_some(e.rule),
        }
    }

    /// Sort key: by protocol, then the original tuple.
    fn order(&self) -> (u8, IpAddr, IpAddr, Option<u16>, Option<u16>, Option<u16>) {
        (
            self.proto_number,
            self.src,
            self.dst,
            self.sport,
            self.dport,
            self.icmp_id,
        )
    }
}

impl fmt::Display for Flow {
    /// One line, in the manner of `conntrack -L`: protocol name and number,
    /// seconds left, state, the original tuple, counters, then fw's own
    /// fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<3} {:<7} {:<12} src={} dst={}",
            self.proto, self.proto_number, self.timeout_secs, self.state, self.src, self.dst
        )?;
        if let (Some(s), Some(d)) = (self.sport, self.dport) {
            write!(f, " sport={s} dport={d}")?;
        }
        if let Some(id) = self.icmp_id {
            write!(f, " id={id}")?;
        }
        write!(
            f,
            " packets={} bytes={} reply_packets={} reply_bytes={} age={}",
            self.packets.original,
            self.bytes.original,
            self.packets.reply,
            self.bytes.reply,
            self.age_secs
        )?;
        for flag in &self.flags {
            write!(f, " [{flag}]")?;
        }
        write!(f, " table={} rule=", self.table.name())?;
        match self.rule {
            Some(n) => write!(f, "{}:{n}", self.chain),
            None if self.flags.contains(&"ADOPTED") => f.write_str("adopted"),
            None => write!(f, "{}:default", self.chain),
        }
    }
}

/// One end of a tuple as written: an address, with a port for TCP and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (a, None) => write!(f, "{a}"),
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

fn usage(message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Usage {
        message: message.into(),
        hint: hint.into(),
    }
}

/// `192.0.2.10:40000`, `192.0.2.10`, `[2001:db8::1]:22`, `2001:db8::1` or
/// `[2001:db8::1]`.
///
/// # Errors
/// None of those forms.
pub fn parse_endpoint(s: &str) -> Result<Endpoint> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(usage(format!("`{s}` has port 0"), "ports are 1-65535"));
        }
        return Ok(Endpoint {
            addr: sa.ip(),
            port: Some(sa.port()),
        });
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|addr| Endpoint { addr, port: None })
        .map_err(|_| {
            usage(
                format!("`{s}` is not an address or ADDRESS:PORT"),
                "write 192.0.2.10:40000, or [2001:db8::1]:22 for IPv6 with a port",
            )
        })
}

/// A connection named on the command line: protocol and both ends (and the
/// echo id for ICMP), in either order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub proto: u8,
    pub a: Endpoint,
    pub b: Endpoint,
    pub icmp_id: Option<u16>,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", icmp::proto_name(self.proto), self.a, self.b)?;
        if let Some(id) = self.icmp_id {
            write!(f, " id {id}")?;
        }
        Ok(())
    }
}

const TUPLE_HINT: &str = "write PROTO SRC DST, e.g. `tcp 192.0.2.10:40000 192.0.2.1:22`, `udp [2001:db8::10]:5353 [2001:db8::1]:53` or `icmp 192.0.2.10 192.0.2.1 --id 77`; `fw-user conntrack list` shows the connections";

/// `PROTO SRC DST` (+ `--id` for ICMP) as `conntrack delete` takes it.
///
/// # Errors
/// A malformed tuple, with what to write instead.
pub fn parse_tuple(words: &[String], icmp_id: Option<u16>) -> Result<Tuple> {
    let [proto, a, b] = words else {
        return Err(usage(
            format!(
                "a connection is named by three words, got {}: `{}`",
                words.len(),
                words.join(" ")
            ),
            TUPLE_HINT,
        ));
    };
    let proto =
        parse_proto(proto).map_err(|hint| usage(format!("`{proto}` is not a protocol"), hint))?;
    let (a, b) = (parse_endpoint(a)?, parse_endpoint(b)?);
    if a.addr.is_ipv4() != b.addr.is_ipv4() {
        return Err(usage(
            format!("`{a}` and `{b}` are of different address families"),
            TUPLE_HINT,
        ));
    }
    let name = icmp::proto_name(proto);
    if has_ports(proto) {
        if a.port.is_none() || b.port.is_none() {
            return Err(usage(
                format!("a {name} connection needs the port of both ends"),
                TUPLE_HINT,
            ));
        }
    } else if a.port.is_some() || b.port.is_some() {
        return Err(usage(
            format!("{name} has no ports; write the addresses alone"),
            TUPLE_HINT,
        ));
    }
    if is_icmp(proto) {
        if icmp_id.is_none() {
            return Err(usage(
                format!("{name} connections are told apart by their echo id"),
                format!(
                    "add --id N (`fw-user conntrack list --proto {name}` shows it), or delete them all with `fw-user conntrack delete --proto {name} --src {}`",
                    a.addr
                ),
            ));
        }
    } else if icmp_id.is_some() {
        return Err(usage(
            "--id names an ICMP echo; this tuple is not ICMP",
            TUPLE_HINT,
        ));
    }
    Ok(Tuple {
        proto,
        a,
        b,
        icmp_id,
    })
}

impl Tuple {
    /// The table keys this tuple can be stored under: either end local.
    #[must_use]
    pub fn keys(&self) -> Vec<CtKey> {
        let key = |local: Endpoint, remote: Endpoint| {
            let (local_port, remote_port) = match self.icmp_id {
                Some(id) => (id, id),
                None => (local.port.unwrap_or(0), remote.port.unwrap_or(0)),
            };
            CtKey {
                local: words_of(local.addr),
                remote: words_of(remote.addr),
                local_port,
                remote_port,
                proto: self.proto,
                family: if local.addr.is_ipv6() {
                    family::IPV6
                } else {
                    family::IPV4
                },
                _pad: [0; 2],
            }
        };
        let mut keys = vec![key(self.a, self.b), key(self.b, self.a)];
        keys.dedup();
        keys
    }
}

/// The connections `filter` matches, oriented and sorted.
fn flows(
    maps: &crate::backend::maps::FwMaps,
    filter: &Filter,
) -> Result<(Vec<(CtRecord, Flow)>, usize)> {
    let now = maps.datapath_now()?;
    let records = maps.ct_records()?;
    let total = records.len();
    let mut out: Vec<(CtRecord, Flow)> = records
        .into_iter()
        .map(|r| {
            let flow = Flow::of(&r, now);
            (r, flow)
        })
        .filter(|(_, f)| filter.matches(f))
        .collect();
    out.sort_by_key(|(_, f)| f.order());
    Ok((out, total))
}

/// `fw-user conntrack list`.
///
/// # Errors
/// No firewall at `layout`, or its tables could not be read.
pub fn list(layout: &PinLayout, filter: &Filter, json: bool) -> Result<()> {
    let maps = xdp::open_loaded(layout)?;
    let (flows, total) = flows(&maps, filter)?;
    if json {
        let list: Vec<&Flow> = flows.iter().map(|(_, f)| f).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    } else {
        for (_, f) in &flows {
            println!("{f}");
        }
        // The count goes to stderr, as conntrack's does, so that stdout
        // holds nothing but connections.
        eprintln!("fw: {} of {total} tracked connections shown", flows.len());
    }
    Ok(())
}

/// `fw-user conntrack delete`: one connection by its tuple, or every
/// connection the filters match.
///
/// # Errors
/// Neither or both of a tuple and filters; no such connection; or the
/// tables could not be changed.
pub fn delete(
    layout: &PinLayout,
    tuple: &[String],
    icmp_id: Option<u16>,
    filter: &Filter,
) -> Result<()> {
    match (tuple.is_empty(), filter.is_empty()) {
        (true, true) => {
            return Err(usage(
                "`conntrack delete` needs a connection or filters",
                "name one connection (`fw-user conntrack delete tcp 192.0.2.10:40000 192.0.2.1:22`), or filter (`--src 192.0.2.10`, `--proto udp` …); `fw-user conntrack flush` empties the tables",
            ));
        }
        (false, false) => {
            return Err(usage(
                "`conntrack delete` takes a connection or filters, not both",
                "drop the tuple to delete everything the filters match",
            ));
        }
        _ => {}
    }
    if tuple.is_empty() && icmp_id.is_some() {
        return Err(usage(
            "--id goes with a tuple (`icmp SRC DST --id N`)",
            "without a tuple, filter with --proto icmp --src ADDR",
        ));
    }
    // Parse before touching the firewall: a typo is not "not loaded".
    let tuple = if tuple.is_empty() {
        None
    } else {
        Some(parse_tuple(tuple, icmp_id)?)
    };
    let mut maps = xdp::open_loaded(layout)?;
    if let Some(tuple) = tuple {
        let mut tables = Vec::new();
        for key in tuple.keys() {
            for table in CtTable::ALL {
                if maps.ct_remove(table, &key)? {
                    tables.push(table.name());
                }
            }
        }
        if tables.is_empty() {
            return Err(Error::NoSuchConnection {
                tuple: format!("`{tuple}`"),
            });
        }
        println!(
            "fw: deleted {tuple} (from the {} table)",
            tables.join(" and ")
        );
        return Ok(());
    }
    let (matching, _) = flows(&maps, filter)?;
    let mut deleted = 0;
    for (r, _) in &matching {
        // From both tables: a flow moving between them may be in either.
        if maps.ct_remove_any(&r.key)? {
            deleted += 1;
        }
    }
    println!("fw: deleted {deleted} connection(s)");
    Ok(())
}

/// `fw-user conntrack flush`. Unless `no_adopt`, this host's own
/// established TCP connections are entered again at once, as `load` adopts
/// them: only a pure SYN opens a flow, so a flush would otherwise cut every
/// open session, the operator's SSH included (netfilter's flush does not,
/// because it picks connections up mid-stream).
///
/// # Errors
/// No firewall at `layout`, or its tables could not be changed.
pub fn flush(layout: &PinLayout, no_adopt: bool) -> Result<()> {
    let mut maps = xdp::open_loaded(layout)?;
    let removed = maps.ct_flush()?;
    println!(
        "fw: flushed {} connection(s) ({} established, {} transient) and {} fragment entries",
        removed.connections(),
        removed.established,
        removed.transient,
        removed.fragments
    );
    if !no_adopt {
        let timeouts = maps.active_header()?.ct_timeouts;
        let adopted = maps.adopt(&crate::adopt::established_connections(
            maps.datapath_now()?,
            &timeouts,
        ))?;
        if adopted > 0 {
            println!(
                "fw: re-adopted {adopted} established TCP connection(s) of this host, so its open sessions survive (--no-adopt cuts them too)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
