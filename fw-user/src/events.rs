//! Log events from the datapath's ring buffer (`FW_EVENTS`): decoded into
//! `EventRecord`s with interface and rule names, printed as
//! iptables-LOG-style lines or JSON, or sent to syslog.
//!
//! A BPF ring buffer has one consumer position: two readers would each see
//! part of the events. A lock file per firewall (`/run/fw/`) keeps a second
//! reader out with a message naming the first.

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use aya::maps::{Map, MapData, RingBuf};
use fw_common::{
    Direction,
    conntrack::tcp_flags as tf,
    counters::Counter,
    events::{Event, LogStat, RuleInfo},
    family, ipproto, maps,
    policy::{Chain, PacketState, rule_index},
};
use serde::Serialize;

use crate::{
    backend::maps::FwMaps,
    error::{Error, Result},
    pin::PinLayout,
    policy::{icmp, state_name},
};

/// One event, decoded and named.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EventRecord {
    /// Wall-clock time the datapath saw the packet (RFC 3339, UTC).
    pub time: String,
    /// The log prefix in force for this event.
    pub prefix: String,
    /// "input" (arriving, XDP) or "output" (leaving, TC).
    pub direction: &'static str,
    pub chain: &'static str,
    pub interface: String,
    /// "accept", "drop" or "reject".
    pub verdict: &'static str,
    /// What decided: drop-rule, drop-default, drop-invalid … (`Counter`).
    pub reason: &'static str,
    /// Rule that decided the packet (1-based, in `chain`); none for a
    /// default or a stateful stage.
    pub rule: Option<u16>,
    pub rule_name: Option<String>,
    /// Rule that asked for this event, when it is not `rule` (an
    /// `action = "log"` rule); none when a `[log]` setting did.
    pub log_rule: Option<u16>,
    pub log_rule_name: Option<String>,
    /// "ipv4" or "ipv6"; none when the headers could not be read.
    pub family: Option<&'static str>,
    pub proto: Option<String>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags set, in iptables' order and spelling (SYN, ACK …).
    pub tcp_flags: Vec<&'static str>,
    pub icmp_type: Option<u8>,
    /// Connection state the packet had: new, established, related, invalid.
    pub state: &'static str,
    /// Bytes of the packet.
    pub len: u32,
}

const TCP_FLAG_NAMES: [(u8, &str); 8] = [
    (tf::CWR, "CWR"),
    (tf::ECE, "ECE"),
    (tf::URG, "URG"),
    (tf::ACK, "ACK"),
    (tf::PSH, "PSH"),
    (tf::RST, "RST"),
    (tf::SYN, "SYN"),
    (tf::FIN, "FIN"),
];

/// The TCP flags set in `flags`, in iptables' order and spelling.
#[must_use]
pub fn tcp_flag_names(flags: u8) -> Vec<&'static str> {
    TCP_FLAG_NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Turns raw events into records, reading the names the loader stored.
pub struct Decoder<'a> {
    maps: &'a FwMaps,
    /// Wall clock minus the datapath clock, in nanoseconds.
    wall_offset_ns: i128,
}

impl<'a> Decoder<'a> {
    /// # Errors
    /// `FW_CONFIG` cannot be read.
    pub fn new(maps: &'a FwMaps) -> Result<Self> {
        let mut d = Self {
            maps,
            wall_offset_ns: 0,
        };
        d.sync_clock()?;
        Ok(d)
    }

    /// Re-read the offset between the wall clock and the datapath's.
    ///
    /// # Errors
    /// `FW_CONFIG` cannot be read.
    pub fn sync_clock(&mut self) -> Result<()> {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let datapath = self.maps.datapath_now()?;
        self.wall_offset_ns = i128::try_from(wall).unwrap_or(0) - i128::from(datapath);
        Ok(())
    }

    fn info(&self, generation: u8, chain: Chain, rule: u16) -> Option<RuleInfo> {
        if rule == 0 {
            return None;
        }
        // The header of the event's generation says where the chain's
        // rules start; it stays until the reload after next.
        let header = self.maps.policy.get(&u32::from(generation), 0).ok()?;
        let base = header.chains[chain as usize].rule_base;
        self.maps
            .rule_info
            .get(
                &rule_index(u32::from(generation), base, u32::from(rule) - 1),
                0,
            )
            .ok()
    }

    /// Decode one event.
    #[must_use]
    pub fn decode(&self, e: &Event) -> EventRecord {
        let chain = match e.chain {
            0 => Chain::Input,
            1 => Chain::Output,
            _ => Chain::Forward,
        };
        let direction = Direction::from_u8(e.direction).unwrap_or(Direction::Ingress);
        let reason = Counter::from_u8(e.reason);
        let rule_info = self.info(e.generation, chain, e.rule);
        let log_info = self.info(e.generation, chain, e.log_rule);
        let prefix = match &log_info {
            Some(i) => text(&i.prefix),
            None => self.policy_prefix(e.generation),
        };
        let v4 = |a: [u32; 4]| IpAddr::V4(Ipv4Addr::from(u32::from_be(a[0])));
        let v6 = |a: [u32; 4]| {
            let mut b = [0u8; 16];
            for (i, w) in a.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        };
        let (fam, src, dst) = match e.family {
            family::IPV4 => (Some("ipv4"), Some(v4(e.src)), Some(v4(e.dst))),
            family::IPV6 => (Some("ipv6"), Some(v6(e.src)), Some(v6(e.dst))),
            _ => (None, None, None),
        };
        let ports = fam.is_some() && matches!(e.proto, ipproto::TCP | ipproto::UDP);
        let icmp = fam.is_some() && matches!(e.proto, ipproto::ICMP | ipproto::ICMPV6);
        let time_ns = i128::from(e.time_ns) + self.wall_offset_ns;
        let time = SystemTime::UNIX_EPOCH
            + Duration::from_nanos(u64::try_from(time_ns.max(0)).unwrap_or(0));
        let name =
            |i: &Option<RuleInfo>| i.as_ref().map(|i| text(&i.name)).filter(|n| !n.is_empty());
        let separate_log_rule = e.log_rule != 0 && e.log_rule != e.rule;
        EventRecord {
            time: humantime::format_rfc3339_millis(time).to_string(),
            prefix,
            direction: direction.name(),
            chain: chain.name(),
            interface: nix::net::if_::if_indextoname(e.ifindex).map_or_else(
                |_| format!("if{}", e.ifindex),
                |n| n.to_string_lossy().into_owned(),
            ),
            verdict: reason.map_or("drop", Counter::verdict),
            reason: reason.map_or("unknown", Counter::name),
            rule: (e.rule != 0).then_some(e.rule),
            rule_name: name(&rule_info),
            log_rule: separate_log_rule.then_some(e.log_rule),
            log_rule_name: if separate_log_rule {
                name(&log_info)
            } else {
                None
            },
            family: fam,
            proto: fam.map(|_| icmp::proto_name(e.proto)),
            src,
            dst,
            sport: ports.then_some(e.sport),
            dport: ports.then_some(e.dport),
            tcp_flags: if fam.is_some() && e.proto == ipproto::TCP {
                tcp_flag_names(e.tcp_flags)
            } else {
                Vec::new()
            },
            icmp_type: icmp.then_some(e.icmp_type),
            state: match e.state {
                1 => state_name(PacketState::Established),
                2 => state_name(PacketState::Related),
                3 => state_name(PacketState::Invalid),
                _ => state_name(PacketState::New),
            },
            len: e.len,
        }
    }

    fn policy_prefix(&self, generation: u8) -> String {
        self.maps
            .policy
            .get(&u32::from(generation), 0)
            .map(|h| text(&h.log_prefix))
            .unwrap_or_default()
    }
}

/// A NUL-padded UTF-8 field as a string.
#[must_use]
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl EventRecord {
    /// The event as one log line, in the key=value style of iptables' LOG
    /// target (which log parsers such as fail2ban already read), then
    /// fw's own keys: the verdict, why, and which rule.
    #[must_use]
    pub fn line(&self) -> String {
        let mut l = self.prefix.clone();
        let (inn, out) = if self.direction == "input" {
            (self.interface.as_str(), "")
        } else {
            ("", self.interface.as_str())
        };
        let _ = write!(l, "IN={inn} OUT={out}");
        if let (Some(s), Some(d)) = (self.src, self.dst) {
            let _ = write!(l, " SRC={s} DST={d}");
        }
        let _ = write!(l, " LEN={}", self.len);
        if let Some(p) = &self.proto {
            let _ = write!(l, " PROTO={}", p.to_uppercase());
        }
        if let (Some(s), Some(d)) = (self.sport, self.dport) {
            let _ = write!(l, " SPT={s} DPT={d}");
        }
        for f in &self.tcp_flags {
            let _ = write!(l, " {f}");
        }
        if let Some(t) = self.icmp_type {
            let _ = write!(l, " TYPE={t}");
        }
        let _ = write!(
            l,
            " STATE={} VERDICT={} REASON={} CHAIN={}",
            self.state.to_uppercase(),
            self.verdict.to_uppercase(),
            self.reason,
            self.chain
        );
        if let Some(r) = self.rule {
            let _ = write!(l, " RULE={r}");
            if let Some(n) = &self.rule_name {
                let _ = write!(l, " NAME=\"{n}\"");
            }
        }
        if let Some(r) = self.log_rule {
            let _ = write!(l, " LOG_RULE={r}");
            if let Some(n) = &self.log_rule_name {
                let _ = write!(l, " LOG_NAME=\"{n}\"");
            }
        }
        l
    }
}

/// Where followed events go.
pub enum Sink {
    /// One line per event on stdout, time first.
    Lines,
    /// One JSON object per event on stdout.
    Json,
    /// syslog (and so journald), facility daemon, severity warning.
    Syslog(Box<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
}

impl Sink {
    /// A sink writing to the syslog socket at `socket` (normally
    /// `/dev/log`).
    ///
    /// # Errors
    /// Nothing listens there.
    pub fn syslog(socket: &Path) -> Result<Self> {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "fw".into(),
            pid: std::process::id(),
        };
        syslog::unix_custom(formatter, socket)
            .map(|l| Self::Syslog(Box::new(l)))
            .map_err(|e| {
                Error::io(
                    format!(
                        "cannot reach syslog at `{}` (hint: is a syslog daemon or journald running? without --syslog events go to stdout)",
                        socket.display()
                    ),
                    std::io::Error::other(e.to_string()),
                )
            })
    }

    /// Write one event.
    pub fn event(&mut self, r: &EventRecord) {
        match self {
            Self::Lines => println!("{} {}", r.time, r.line()),
            Self::Json => println!("{}", serde_json::json!({ "type": "packet", "event": r })),
            Self::Syslog(logger) => {
                let _ = logger.warning(r.line());
            }
        }
        let _ = std::io::stdout().flush();
    }

    /// Report events the kernel counted but could not deliver since the
    /// last report: never lost in silence.
    pub fn undelivered(&mut self, suppressed: u64, lost: u64) {
        let text = format!(
            "fw: {suppressed} events suppressed by the rate limit ([log] rate), {lost} lost to a full ring buffer"
        );
        match self {
            Self::Lines => println!("{text}"),
            Self::Json => println!(
                "{}",
                serde_json::json!({ "type": "undelivered", "suppressed": suppressed, "lost": lost })
            ),
            Self::Syslog(logger) => {
                let _ = logger.notice(text);
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// The right to read a firewall's events, held for as long as this lives.
pub struct ReaderLock {
    _file: fs::File,
}

/// Where readers of the firewall pinned at `root` take their lock.
#[must_use]
pub fn lock_path(root: &Path) -> PathBuf {
    let name: String = root
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/fw").join(format!("events{name}.lock"))
}

/// Become the one reader of the events of the firewall at `layout`.
///
/// # Errors
/// Another process reads them (its pid is named), or the lock file cannot
/// be created.
pub fn lock_reader(layout: &PinLayout) -> Result<ReaderLock> {
    let path = lock_path(&layout.root);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open `{}`", path.display()), e))?;
    // SAFETY: flock on a descriptor we own; released when it closes.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::EventsBusy {
            holder: holder.trim().to_string(),
            lock: path,
        });
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(ReaderLock { _file: file })
}

/// The ring buffer of the firewall at `layout`, ready to poll.
///
/// # Errors
/// The pinned map is missing or not a ring buffer.
pub fn open_ring(layout: &PinLayout) -> Result<RingBuf<MapData>> {
    let path = layout.maps_dir().join(maps::EVENTS);
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::bpf(format!("cannot open pinned map `{}`", path.display()), e))?;
    let map = Map::from_map_data(data)
        .map_err(|e| Error::bpf(format!("pinned map `{}` is not usable", maps::EVENTS), e))?;
    RingBuf::try_from(map)
        .map_err(|e| Error::bpf(format!("map `{}` is not a ring buffer", maps::EVENTS), e))
}

/// Copy an event out of a ring buffer record.
#[must_use]
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: `Event` is plain old data and `bytes` holds at least one.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Events not delivered since the last call: suppressed and lost.
pub struct UndeliveredWatch {
    last: (u64, u64),
}

impl UndeliveredWatch {
    /// Start counting from now.
    ///
    /// # Errors
    /// `FW_LOG_STATS` cannot be read.
    pub fn new(maps: &FwMaps) -> Result<Self> {
        Ok(Self {
            last: Self::read(maps)?,
        })
    }

    fn read(maps: &FwMaps) -> Result<(u64, u64)> {
        let s = maps.log_stats()?;
        let get = |k: LogStat| s.iter().find(|(x, _)| *x == k).map_or(0, |(_, v)| *v);
        Ok((get(LogStat::Suppressed), get(LogStat::Lost)))
    }

    /// Report to `sink` what went undelivered since the last check, if
    /// anything did.
    ///
    /// # Errors
    /// `FW_LOG_STATS` cannot be read.
    pub fn check(&mut self, maps: &FwMaps, sink: &mut Sink) -> Result<()> {
        let now = Self::read(maps)?;
        let (s, l) = (
            now.0 - self.last.0.min(now.0),
            now.1 - self.last.1.min(now.1),
        );
        if s + l > 0 {
            sink.undelivered(s, l);
        }
        self.last = now;
        Ok(())
    }
}
