//! `policy.toml` → `Policy`. Every error names the file, line and column of
//! the offending value and says how to fix it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use fw_common::{
    conntrack::{CtState, tcp_flags as tf},
    ipproto,
    policy::{MAX_RULES, PacketState, RejectWith},
};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{
    AddrMatch, CT_MAX_ENTRIES_RANGE, ConntrackSettings, Defaults, Families, LogSettings, Policy,
    PortRange, Rule, RuleAction, Stage, Stateful, TcpFlagsMatch, Verdict, fingerprint, icmp,
};
use crate::error::PolicyError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    defaults: Option<RawDefaults>,
    stateful: Option<RawStateful>,
    conntrack: Option<RawConntrack>,
    log: Option<RawLog>,
    sets: Option<BTreeMap<String, Spanned<RawSet>>>,
    #[serde(default)]
    input: Vec<Spanned<RawRule>>,
    #[serde(default)]
    output: Vec<Spanned<RawRule>>,
    #[serde(default)]
    forward: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    input: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    forward: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStateful {
    established: Option<Spanned<String>>,
    invalid: Option<Spanned<String>>,
    tcp_syn_only: Option<bool>,
    icmpv6_neighbor_discovery: Option<Spanned<String>>,
    related: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    rate: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
    prefix: Option<Spanned<String>>,
    default: Option<bool>,
    invalid: Option<bool>,
    stateful: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    max_entries: Option<Spanned<RawWord>>,
    tcp_syn_sent: Option<Spanned<RawWord>>,
    tcp_syn_recv: Option<Spanned<RawWord>>,
    tcp_established: Option<Spanned<RawWord>>,
    tcp_fin_wait: Option<Spanned<RawWord>>,
    tcp_close_wait: Option<Spanned<RawWord>>,
    tcp_last_ack: Option<Spanned<RawWord>>,
    tcp_time_wait: Option<Spanned<RawWord>>,
    tcp_close: Option<Spanned<RawWord>>,
    udp: Option<Spanned<RawWord>>,
    udp_stream: Option<Spanned<RawWord>>,
    icmp: Option<Spanned<RawWord>>,
}

/// A `[conntrack]` timeout key, its value if written, and the connection
/// states it sets.
type TimeoutKey<'a> = (
    &'static str,
    Option<&'a Spanned<RawWord>>,
    &'static [CtState],
);

impl RawConntrack {
    /// Every timeout key, with the connection states it sets (netfilter's
    /// sysctl names: `nf_conntrack_tcp_timeout_syn_sent` and so on).
    fn timeouts(&self) -> [TimeoutKey<'_>; 11] {
        use CtState::{
            IcmpReplied, IcmpUnreplied, TcpClose, TcpCloseWait, TcpEstablished, TcpFinWait,
            TcpLastAck, TcpSynRecv, TcpSynSent, TcpSynSent2, TcpTimeWait, UdpReplied, UdpUnreplied,
        };
        [
            (
                "tcp_syn_sent",
                self.tcp_syn_sent.as_ref(),
                &[TcpSynSent, TcpSynSent2],
            ),
            ("tcp_syn_recv", self.tcp_syn_recv.as_ref(), &[TcpSynRecv]),
            (
                "tcp_established",
                self.tcp_established.as_ref(),
                &[TcpEstablished],
            ),
            ("tcp_fin_wait", self.tcp_fin_wait.as_ref(), &[TcpFinWait]),
            (
                "tcp_close_wait",
                self.tcp_close_wait.as_ref(),
                &[TcpCloseWait],
            ),
            ("tcp_last_ack", self.tcp_last_ack.as_ref(), &[TcpLastAck]),
            ("tcp_time_wait", self.tcp_time_wait.as_ref(), &[TcpTimeWait]),
            ("tcp_close", self.tcp_close.as_ref(), &[TcpClose]),
            ("udp", self.udp.as_ref(), &[UdpUnreplied]),
            ("udp_stream", self.udp_stream.as_ref(), &[UdpReplied]),
            ("icmp", self.icmp.as_ref(), &[IcmpUnreplied, IcmpReplied]),
        ]
    }
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a list of addresses and prefixes, or { file = \"path\" }"
)]
enum RawSet {
    List(Vec<String>),
    File { file: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    family: Option<Spanned<String>>,
    proto: Option<Spanned<RawWord>>,
    src: Option<Spanned<RawList<String>>>,
    dst: Option<Spanned<RawList<String>>>,
    sport: Option<Spanned<RawList<RawWord>>>,
    dport: Option<Spanned<RawList<RawWord>>>,
    iface: Option<Spanned<RawList<String>>>,
    icmp_type: Option<Spanned<RawList<RawWord>>>,
    state: Option<Spanned<RawList<String>>>,
    tcp_flags: Option<Spanned<RawTcpFlags>>,
    limit: Option<Spanned<String>>,
    limit_burst: Option<Spanned<i64>>,
    action: Spanned<String>,
    reject_with: Option<Spanned<String>>,
    log: Option<bool>,
    log_rate: Option<Spanned<String>>,
    log_burst: Option<Spanned<i64>>,
    log_prefix: Option<Spanned<String>>,
}

/// A value written as a name or a number.
#[derive(Clone, Deserialize)]
#[serde(untagged, expecting = "expected a name (a string) or a whole number")]
enum RawWord {
    Number(i64),
    Text(String),
}

/// One value or a list of them.
#[derive(Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "expected one value or a list of them: whole numbers or strings for ports and ICMP types, strings for everything else"
)]
enum RawList<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> RawList<T> {
    fn items(&self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected \"syn\" or { mask = [\"syn\", \"ack\"], set = [\"syn\"] }"
)]
enum RawTcpFlags {
    Named(String),
    Mask { mask: Vec<String>, set: Vec<String> },
}

/// Reports problems at a byte offset of the policy text.
struct Src<'a> {
    file: &'a str,
    text: &'a str,
    base: Option<&'a Path>,
    /// Reads a set file, its path already resolved against `base`.
    read_set: &'a dyn Fn(&Path) -> Result<String, String>,
    /// Byte offset of the start of every line: a rule's line is a binary
    /// search, where counting newlines from the top for every rule made a
    /// 10 000-rule policy take seconds.
    line_starts: Vec<usize>,
}

impl Src<'_> {
    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>, hint: &str) -> PolicyError {
        PolicyError::at(self.file, self.text, span.start, message.into(), hint)
    }
}

/// Parse and validate policy `text`; `file` names it in messages. Set files
/// are looked up relative to the current directory.
///
/// # Errors
/// A `PolicyError` pointing at the first problem found.
pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    parse_in(text, file, None, &read_set_file_from_disk)
}

/// Parse `text` read from `path`: set files are relative to its directory.
///
/// # Errors
/// A `PolicyError` pointing at the first problem found.
pub fn parse_file(text: &str, path: &Path) -> Result<Policy, PolicyError> {
    let name = path.display().to_string();
    parse_in(text, &name, path.parent(), &read_set_file_from_disk)
}

/// Parse `text` as `parse` does, but read set files (`{ file = "…" }`)
/// through `read`, which gets the path as written and returns the file's
/// text or why it cannot. The fuzz targets use it so that arbitrary
/// policies read no file of the machine (`/dev/zero`, `/proc/kcore` …).
///
/// # Errors
/// A `PolicyError` pointing at the first problem found.
pub fn parse_with_set_files(
    text: &str,
    file: &str,
    read: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<Policy, PolicyError> {
    parse_in(text, file, None, read)
}

#[expect(
    clippy::too_many_lines,
    reason = "one step per top-level key, in file order"
)]
fn parse_in(
    text: &str,
    file: &str,
    base: Option<&Path>,
    read_set: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<Policy, PolicyError> {
    let line_starts = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let src = Src {
        file,
        text,
        base,
        read_set,
        line_starts,
    };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start);
        PolicyError::at(
            file,
            text,
            start,
            toml_message(&e, text, start),
            "docs/policy.md lists every key fw understands",
        )
    })?;

    let interfaces = match raw.interfaces {
        None => None,
        Some(list) => {
            let span = list.span();
            let list = list.into_inner();
            if list.is_empty() {
                return Err(src.err(
                    span,
                    "`interfaces` is empty, so the firewall would guard nothing",
                    "list at least one interface, or remove the key to guard every interface that is up",
                ));
            }
            let mut names = Vec::new();
            for name in list {
                validate_interface_name(name.get_ref()).map_err(|msg| {
                    src.err(
                        name.span(),
                        msg,
                        "use the interface name `ip link` shows, e.g. \"eth0\"",
                    )
                })?;
                names.push(name.into_inner());
            }
            Some(names)
        }
    };

    let d = raw.defaults.as_ref();
    let default_of = |v: Option<&Spanned<String>>, key: &str, fallback: Verdict| match v {
        None => Ok(fallback),
        Some(v) => verdict(&src, v, key),
    };
    let defaults = Defaults {
        input: default_of(
            d.and_then(|d| d.input.as_ref()),
            "defaults.input",
            Verdict::Drop,
        )?,
        output: default_of(
            d.and_then(|d| d.output.as_ref()),
            "defaults.output",
            Verdict::Accept,
        )?,
        forward: default_of(
            d.and_then(|d| d.forward.as_ref()),
            "defaults.forward",
            Verdict::Drop,
        )?,
    };

    let mut stateful = Stateful::default();
    if let Some(s) = &raw.stateful {
        if let Some(v) = &s.established {
            stateful.established = stage(&src, v, "stateful.established")?;
        }
        if let Some(v) = &s.invalid {
            stateful.invalid = stage(&src, v, "stateful.invalid")?;
        }
        if let Some(v) = s.tcp_syn_only {
            stateful.tcp_syn_only = v;
        }
        if let Some(v) = &s.icmpv6_neighbor_discovery {
            stateful.neighbor_discovery = stage(&src, v, "stateful.icmpv6_neighbor_discovery")?;
        }
        if let Some(v) = &s.related {
            stateful.related = stage(&src, v, "stateful.related")?;
        }
    }

    let conntrack = match &raw.conntrack {
        None => ConntrackSettings::default(),
        Some(c) => conntrack_settings(&src, c)?,
    };

    let log = match &raw.log {
        None => LogSettings::default(),
        Some(l) => log_settings(&src, l)?,
    };

    let mut sets = BTreeMap::new();
    for (name, set) in raw.sets.unwrap_or_default() {
        let nets = match set.get_ref() {
            RawSet::List(items) => items
                .iter()
                .map(|i| {
                    parse_net(i)
                        .map_err(|m| src.err(set.span(), format!("set `{name}`: {m}"), NET_HINT))
                })
                .collect::<Result<Vec<_>, _>>()?,
            RawSet::File { file } => read_set_file(&src, set.span(), &name, file)?,
        };
        sets.insert(name, nets);
    }

    let rules = |chain: &str, list: Vec<Spanned<RawRule>>| -> Result<Vec<Rule>, PolicyError> {
        if list.len() > MAX_RULES {
            return Err(src.err(
                list[MAX_RULES].span(),
                format!(
                    "[[{chain}]] has {} rules; fw holds at most {MAX_RULES} per chain",
                    list.len()
                ),
                "merge rules with lists of ports or addresses, or move addresses into a set",
            ));
        }
        list.into_iter()
            .map(|r| rule(&src, &sets, chain, r))
            .collect()
    };
    let input = rules("input", raw.input)?;
    let output = rules("output", raw.output)?;
    let forward = rules("forward", raw.forward)?;

    Ok(Policy {
        interfaces,
        defaults,
        stateful,
        conntrack,
        log,
        sets,
        input,
        output,
        forward,
        hash: fingerprint(text),
    })
}

/// The TOML parser's message on one line (some span several, which would
/// break the `file:line:column: message` form); where it has none (a
/// control character in a comment), what is at `offset`.
fn toml_message(e: &toml::de::Error, text: &str, offset: usize) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !message.is_empty() {
        return message;
    }
    match text.get(offset..).and_then(|t| t.chars().next()) {
        Some(c) if c.is_control() => format!(
            "control character U+{:04X} is not allowed here, not even in a comment",
            u32::from(c)
        ),
        Some(c) => format!("unexpected {c:?}"),
        None => "unexpected end of file".to_string(),
    }
}

const NET_HINT: &str =
    "write an address like \"192.0.2.10\" or \"2001:db8::10\", or a prefix like \"192.0.2.0/24\"";

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        // 192.0.2.1/24 means the network, as iptables reads it.
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("\"{s}\" is not an address or a prefix"))
}

/// The largest set file read: room for every prefix the address tries
/// hold (2.2 million), written out at length with comments.
const SET_FILE_MAX_BYTES: u64 = 256 * 1024 * 1024;

fn read_set_file(
    src: &Src,
    span: Range<usize>,
    name: &str,
    file: &str,
) -> Result<Vec<IpNet>, PolicyError> {
    let path: PathBuf = match src.base {
        Some(base) if Path::new(file).is_relative() => base.join(file),
        _ => PathBuf::from(file),
    };
    let cannot = |e: &dyn std::fmt::Display| {
        src.err(
            span.clone(),
            format!("set `{name}`: cannot read `{}`: {e}", path.display()),
            "the path is relative to the policy file; one address or prefix per line, `#` starts a comment",
        )
    };
    let text = (src.read_set)(&path).map_err(|e| cannot(&e))?;
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let item = line.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let net = parse_net(item).map_err(|m| {
            src.err(
                span.clone(),
                format!("set `{name}`: {}:{}: {m}", path.display(), i + 1),
                NET_HINT,
            )
        })?;
        nets.push(net);
    }
    Ok(nets)
}

/// The text of the set file at `path`, or why it cannot be read.
fn read_set_file_from_disk(path: &Path) -> Result<String, String> {
    // A device or a pipe could be read forever: only a regular file of a
    // size the address tries can hold is a set.
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > SET_FILE_MAX_BYTES {
        return Err(format!(
            "it has {} bytes; fw reads at most {SET_FILE_MAX_BYTES}",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn verdict(src: &Src, v: &Spanned<String>, key: &str) -> Result<Verdict, PolicyError> {
    match v.get_ref().as_str() {
        "accept" => Ok(Verdict::Accept),
        "drop" => Ok(Verdict::Drop),
        "reject" => Ok(Verdict::Reject(RejectWith::Auto)),
        other => Err(src.err(
            v.span(),
            format!("`{key}` is \"{other}\", which is not a verdict fw knows"),
            "write \"accept\", \"drop\" or \"reject\"",
        )),
    }
}

fn stage(src: &Src, v: &Spanned<String>, key: &str) -> Result<Stage, PolicyError> {
    match v.get_ref().as_str() {
        "accept" => Ok(Stage::Accept),
        "drop" => Ok(Stage::Drop),
        "rules" => Ok(Stage::Rules),
        other => Err(src.err(
            v.span(),
            format!("`{key}` is \"{other}\""),
            "write \"accept\", \"drop\", or \"rules\" to let the rules decide (they can match `state`)",
        )),
    }
}

/// `[conntrack]`: the table size and the idle timeouts.
fn conntrack_settings(src: &Src, raw: &RawConntrack) -> Result<ConntrackSettings, PolicyError> {
    let mut settings = ConntrackSettings::default();
    if let Some(v) = &raw.max_entries {
        let (lo, hi) = (CT_MAX_ENTRIES_RANGE.start(), CT_MAX_ENTRIES_RANGE.end());
        let hint = format!(
            "write a whole number from {lo} to {hi}, e.g. 262144; each table (established and transient) holds this many connections, about 200 bytes each, allocated at load"
        );
        let n = match v.get_ref() {
            RawWord::Number(n) => *n,
            RawWord::Text(t) => {
                return Err(src.err(
                    v.span(),
                    format!("`conntrack.max_entries` is \"{t}\", not a number"),
                    &hint,
                ));
            }
        };
        let n = u32::try_from(n)
            .ok()
            .filter(|n| CT_MAX_ENTRIES_RANGE.contains(n))
            .ok_or_else(|| {
                src.err(
                    v.span(),
                    format!("`conntrack.max_entries` is {n}, outside {lo}..={hi}"),
                    &hint,
                )
            })?;
        settings.max_entries = Some(n);
    }
    for (key, value, states) in raw.timeouts() {
        if let Some(v) = value {
            let secs = timeout_secs(src, key, v)?;
            for &state in states {
                settings.timeouts[state as usize] = secs;
            }
        }
    }
    Ok(settings)
}

/// A `[conntrack]` timeout: whole seconds, as a number or a duration
/// string ("30s", "2m", "12h", "5d", "1h30m").
fn timeout_secs(src: &Src, key: &str, v: &Spanned<RawWord>) -> Result<u32, PolicyError> {
    const HINT: &str =
        "write seconds (300) or a duration such as \"30s\", \"2m\", \"12h\" or \"5d\"";
    let secs: u64 = match v.get_ref() {
        RawWord::Number(n) => u64::try_from(*n).map_err(|_| {
            src.err(
                v.span(),
                format!("`conntrack.{key}` is negative ({n})"),
                HINT,
            )
        })?,
        RawWord::Text(t) => {
            let t = t.trim();
            if let Ok(n) = t.parse::<u64>() {
                n
            } else {
                let d = humantime::parse_duration(t).map_err(|e| {
                    src.err(
                        v.span(),
                        format!("`conntrack.{key}` \"{t}\" is not a duration ({e})"),
                        HINT,
                    )
                })?;
                if d.subsec_nanos() != 0 {
                    return Err(src.err(
                        v.span(),
                        format!("`conntrack.{key}` \"{t}\" is not a whole number of seconds"),
                        "timeouts count whole seconds, as netfilter's do",
                    ));
                }
                d.as_secs()
            }
        }
    };
    if secs == 0 {
        return Err(src.err(
            v.span(),
            format!("`conntrack.{key}` is 0: connections would expire as soon as they are seen"),
            "a timeout is at least 1 second; remove the key to keep netfilter's default",
        ));
    }
    u32::try_from(secs).map_err(|_| {
        src.err(
            v.span(),
            format!(
                "`conntrack.{key}` is {secs} seconds; fw holds at most {} (about 136 years)",
                u32::MAX
            ),
            HINT,
        )
    })
}

fn reject_with(src: &Src, v: &Spanned<String>) -> Result<RejectWith, PolicyError> {
    Ok(match v.get_ref().as_str() {
        "tcp-reset" => RejectWith::TcpReset,
        "icmp-port-unreachable" | "icmp6-port-unreachable" | "port-unreachable" => {
            RejectWith::PortUnreachable
        }
        "icmp-proto-unreachable" | "proto-unreachable" => RejectWith::ProtoUnreachable,
        "icmp-host-unreachable"
        | "icmp6-addr-unreachable"
        | "host-unreachable"
        | "addr-unreachable" => RejectWith::HostUnreachable,
        "icmp-net-unreachable" | "icmp6-no-route" | "net-unreachable" | "no-route" => {
            RejectWith::NetUnreachable
        }
        "icmp-admin-prohibited"
        | "icmp6-adm-prohibited"
        | "admin-prohibited"
        | "adm-prohibited" => RejectWith::AdminProhibited,
        other => {
            return Err(src.err(
                v.span(),
                format!("unknown `reject_with` \"{other}\""),
                "write tcp-reset, icmp-port-unreachable, icmp-proto-unreachable, icmp-host-unreachable, icmp-net-unreachable or icmp-admin-prohibited",
            ));
        }
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "one validation step per rule key, in file order"
)]
fn rule(
    src: &Src,
    sets: &BTreeMap<String, Vec<IpNet>>,
    chain: &str,
    raw: Spanned<RawRule>,
) -> Result<Rule, PolicyError> {
    let line = src.line(raw.span().start);
    let rule_span = raw.span();
    let raw = raw.into_inner();

    let limit = match (&raw.limit, &raw.limit_burst) {
        (None, None) => None,
        (None, Some(b)) => {
            return Err(src.err(
                b.span(),
                "`limit_burst` needs `limit`",
                "add limit = \"10/second\" (or remove `limit_burst`)",
            ));
        }
        (Some(l), burst) => Some(rate(src, l, burst.as_ref(), ("limit", "limit_burst"))?),
    };
    let logs = raw.log == Some(true) || raw.action.get_ref() == "log";
    let log_rate = match (&raw.log_rate, &raw.log_burst) {
        (None, None) => None,
        (None, Some(b)) => {
            return Err(src.err(
                b.span(),
                "`log_burst` needs `log_rate`",
                "add log_rate = \"10/minute\" (or remove `log_burst`)",
            ));
        }
        (Some(l), burst) => Some(rate(src, l, burst.as_ref(), ("log_rate", "log_burst"))?),
    };
    let log_prefix = raw
        .log_prefix
        .as_ref()
        .map(|p| prefix(src, p, "log_prefix"))
        .transpose()?;
    if !logs {
        let stray = [
            ("log_rate", raw.log_rate.as_ref().map(Spanned::span)),
            ("log_burst", raw.log_burst.as_ref().map(Spanned::span)),
            ("log_prefix", raw.log_prefix.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.err(
                span,
                format!("`{key}` is set but the rule does not log"),
                "add log = true (or action = \"log\"), or remove the key",
            ));
        }
    }

    let proto = match &raw.proto {
        None => None,
        Some(p) => {
            let parsed = match p.get_ref() {
                RawWord::Number(n) => u8::try_from(*n).ok().map(Some),
                RawWord::Text(t) => icmp::proto_number(t),
            };
            parsed.ok_or_else(|| {
                src.err(p.span(), format!("unknown protocol in a [[{chain}]] rule"), "write \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"any\" or a protocol number 0-255")
            })?
        }
    };
    let proto_span = raw.proto.as_ref().map_or(rule_span.clone(), Spanned::span);
    let has_ports = matches!(proto, Some(ipproto::TCP | ipproto::UDP | 132));

    // Families: explicit, from the protocol, then from the addresses.
    let mut families = Families::BOTH;
    if let Some(f) = &raw.family {
        families = match f.get_ref().as_str() {
            "ipv4" | "inet" => Families::IPV4,
            "ipv6" | "inet6" => Families::IPV6,
            "any" | "both" => Families::BOTH,
            other => {
                return Err(src.err(
                    f.span(),
                    format!("unknown family \"{other}\""),
                    "write \"ipv4\" or \"ipv6\"",
                ));
            }
        };
    }
    let pinned_by_proto = match proto {
        Some(ipproto::ICMP) => Some(Families::IPV4),
        Some(ipproto::ICMPV6) => Some(Families::IPV6),
        _ => None,
    };
    if let Some(p) = pinned_by_proto {
        if raw.family.is_some() && families != p {
            return Err(src.err(
                proto_span,
                "the protocol contradicts `family`",
                "icmp is IPv4 only and icmpv6 IPv6 only",
            ));
        }
        families = p;
    }
    let explicit_family = raw.family.is_some() || pinned_by_proto.is_some();

    let mut addr = |spec: &Option<Spanned<RawList<String>>>,
                    key: &str|
     -> Result<Option<AddrMatch>, PolicyError> {
        let Some(spec) = spec else { return Ok(None) };
        let items = spec.get_ref().items();
        let mut negated = false;
        let mut nets = Vec::new();
        let mut literal = Families {
            ipv4: false,
            ipv6: false,
        };
        for (i, item) in items.iter().enumerate() {
            let mut item = item.trim();
            if let Some(rest) = item.strip_prefix('!') {
                if items.len() > 1 {
                    return Err(src.err(
                        spec.span(),
                        format!(
                            "`{key}`: negation applies to a whole match, not to one item of a list"
                        ),
                        "put the addresses in a [sets] entry and write \"!@name\"",
                    ));
                }
                negated = true;
                item = rest.trim();
            }
            if let Some(set) = item.strip_prefix('@') {
                let members = sets.get(set).ok_or_else(|| {
                    let known: Vec<&str> = sets.keys().map(String::as_str).collect();
                    src.err(
                        spec.span(),
                        format!("`{key}` names set `{set}`, which is not defined"),
                        &if known.is_empty() {
                            "define it under [sets]".to_string()
                        } else {
                            format!("defined sets: {}", known.join(", "))
                        },
                    )
                })?;
                nets.extend(members.iter().copied());
            } else {
                let net = parse_net(item).map_err(|m| {
                    src.err(
                        spec.span(),
                        format!("`{key}` item {}: {m}", i + 1),
                        NET_HINT,
                    )
                })?;
                match net {
                    IpNet::V4(_) => literal.ipv4 = true,
                    IpNet::V6(_) => literal.ipv6 = true,
                }
                nets.push(net);
            }
        }
        // Literal addresses pin the family unless it was given.
        if explicit_family {
            if literal.ipv4 && !families.ipv4 {
                return Err(src.err(
                    spec.span(),
                    format!("`{key}` has an IPv4 address in an IPv6-only rule"),
                    "drop the address, or the `family`/protocol that makes the rule IPv6-only",
                ));
            }
            if literal.ipv6 && !families.ipv6 {
                return Err(src.err(
                    spec.span(),
                    format!("`{key}` has an IPv6 address in an IPv4-only rule"),
                    "drop the address, or the `family`/protocol that makes the rule IPv4-only",
                ));
            }
        } else if literal.ipv4 || literal.ipv6 {
            let from_sets = Families {
                ipv4: nets.iter().any(|n| matches!(n, IpNet::V4(_))),
                ipv6: nets.iter().any(|n| matches!(n, IpNet::V6(_))),
            };
            let narrowed = Families {
                ipv4: families.ipv4 && from_sets.ipv4,
                ipv6: families.ipv6 && from_sets.ipv6,
            };
            if !narrowed.ipv4 && !narrowed.ipv6 {
                return Err(src.err(
                    spec.span(),
                    format!("`{key}` is of another address family than the rest of the rule"),
                    "an IPv4 source and an IPv6 destination can never match together",
                ));
            }
            families = narrowed;
        }
        Ok(Some(AddrMatch {
            negated,
            nets,
            shown: items.join(","),
        }))
    };
    let src_match = addr(&raw.src, "src")?;
    let dst_match = addr(&raw.dst, "dst")?;

    let ports = |spec: &Option<Spanned<RawList<RawWord>>>,
                 key: &str|
     -> Result<Vec<PortRange>, PolicyError> {
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        if !has_ports {
            let has = proto.map_or("no `proto`".to_string(), |p| {
                format!("proto \"{}\"", icmp::proto_name(p))
            });
            return Err(src.err(
                spec.span(),
                format!("`{key}` needs a protocol with ports, but this rule has {has}"),
                "add proto = \"tcp\" or proto = \"udp\" to the rule",
            ));
        }
        let items = spec.get_ref().items();
        if items.is_empty() {
            return Err(src.err(
                spec.span(),
                format!("`{key}` is an empty list, so the rule could never match"),
                "list ports like [22, 80, \"8000-8100\"], or remove the key to match every port",
            ));
        }
        items
            .iter()
            .map(|p| port_range(p).map_err(|(msg, hint)| src.err(spec.span(), msg, hint)))
            .collect()
    };
    let sport = ports(&raw.sport, "sport")?;
    let dport = ports(&raw.dport, "dport")?;

    let iface = match &raw.iface {
        None => Vec::new(),
        Some(spec) => {
            let items = spec.get_ref().items();
            for i in &items {
                validate_interface_name(i).map_err(|m| {
                    src.err(spec.span(), m, "use the interface name `ip link` shows")
                })?;
            }
            items
        }
    };

    let icmp_type = match &raw.icmp_type {
        None => Vec::new(),
        Some(spec) => {
            let v6 = match proto {
                Some(ipproto::ICMP) => false,
                Some(ipproto::ICMPV6) => true,
                _ => {
                    return Err(src.err(
                        spec.span(),
                        "`icmp_type` needs proto = \"icmp\" or \"icmpv6\"",
                        "add the protocol whose types you mean",
                    ));
                }
            };
            spec.get_ref()
                .items()
                .iter()
                .map(|t| {
                    let n = match t {
                        RawWord::Number(n) => u8::try_from(*n).ok(),
                        RawWord::Text(name) => if v6 { icmp::icmp6_type(name) } else { icmp::icmp4_type(name) },
                    };
                    n.ok_or_else(|| src.err(spec.span(), format!("unknown {} type", if v6 { "ICMPv6" } else { "ICMP" }), "write a type number 0-255 or a name such as \"echo-request\", \"destination-unreachable\", \"time-exceeded\""))
                })
                .collect::<Result<_, _>>()?
        }
    };

    let state = match &raw.state {
        None => Vec::new(),
        Some(spec) => spec
            .get_ref()
            .items()
            .iter()
            .map(|s| match s.as_str() {
                "new" => Ok(PacketState::New),
                "established" => Ok(PacketState::Established),
                "related" => Ok(PacketState::Related),
                "invalid" => Ok(PacketState::Invalid),
                other => Err(src.err(
                    spec.span(),
                    format!("unknown state \"{other}\""),
                    "write new, established, related or invalid",
                )),
            })
            .collect::<Result<_, _>>()?,
    };

    let tcp_flags = match &raw.tcp_flags {
        None => None,
        Some(spec) => {
            if proto != Some(ipproto::TCP) {
                return Err(src.err(
                    spec.span(),
                    "`tcp_flags` needs proto = \"tcp\"",
                    "add proto = \"tcp\" to the rule",
                ));
            }
            let bits = |names: &[String]| -> Result<u8, PolicyError> {
                names.iter().try_fold(0u8, |acc, n| {
                    let b = match n.to_ascii_lowercase().as_str() {
                        "fin" => tf::FIN,
                        "syn" => tf::SYN,
                        "rst" => tf::RST,
                        "psh" => tf::PSH,
                        "ack" => tf::ACK,
                        "urg" => tf::URG,
                        "ece" => tf::ECE,
                        "cwr" => tf::CWR,
                        "all" => 0xff,
                        "none" => 0,
                        other => {
                            return Err(src.err(
                                spec.span(),
                                format!("unknown TCP flag \"{other}\""),
                                "flags are fin, syn, rst, psh, ack, urg, ece, cwr, all, none",
                            ));
                        }
                    };
                    Ok(acc | b)
                })
            };
            Some(match spec.get_ref() {
                RawTcpFlags::Named(n) if n == "syn" => TcpFlagsMatch { mask: tf::SYN | tf::RST | tf::ACK | tf::FIN, comp: tf::SYN },
                RawTcpFlags::Named(other) => return Err(src.err(spec.span(), format!("unknown `tcp_flags` \"{other}\""), "write \"syn\", or { mask = [\"syn\", \"ack\"], set = [\"syn\"] } like iptables' --tcp-flags")),
                RawTcpFlags::Mask { mask, set } => {
                    let (mask, comp) = (bits(mask)?, bits(set)?);
                    if comp & !mask != 0 {
                        return Err(src.err(spec.span(), "`tcp_flags.set` has flags outside `mask`", "every flag in `set` must also be in `mask`"));
                    }
                    TcpFlagsMatch { mask, comp }
                }
            })
        }
    };

    let action = match raw.action.get_ref().as_str() {
        "accept" => RuleAction::Accept,
        "drop" => RuleAction::Drop,
        "reject" => RuleAction::Reject(RejectWith::Auto),
        "log" => RuleAction::Log,
        other => {
            return Err(src.err(
                raw.action.span(),
                format!("`{chain}.action` is \"{other}\", which is not an action fw knows"),
                "write \"accept\", \"drop\", \"reject\" or \"log\"",
            ));
        }
    };
    let action = match (&raw.reject_with, action) {
        (None, a) => a,
        (Some(w), RuleAction::Reject(_)) => {
            let with = reject_with(src, w)?;
            if with == RejectWith::TcpReset && proto != Some(ipproto::TCP) {
                return Err(src.err(
                    w.span(),
                    "`tcp-reset` only answers TCP",
                    "add proto = \"tcp\", or reject with an ICMP error",
                ));
            }
            RuleAction::Reject(with)
        }
        (Some(w), _) => {
            return Err(src.err(
                w.span(),
                "`reject_with` needs action = \"reject\"",
                "set action = \"reject\" or remove `reject_with`",
            ));
        }
    };

    Ok(Rule {
        name: raw.name,
        line,
        families,
        proto,
        src: src_match,
        dst: dst_match,
        sport,
        dport,
        iface,
        icmp_type,
        state,
        tcp_flags,
        limit,
        action,
        log: raw.log.unwrap_or(false),
        log_rate,
        log_prefix,
    })
}

/// `[log]`.
fn log_settings(src: &Src, raw: &RawLog) -> Result<LogSettings, PolicyError> {
    let mut log = LogSettings::default();
    match (&raw.rate, &raw.burst) {
        (None, None) => {}
        (None, Some(b)) => {
            log.rate.burst = burst(src, b, "burst")?;
        }
        (Some(r), b) => log.rate = rate(src, r, b.as_ref(), ("rate", "burst"))?,
    }
    if let Some(p) = &raw.prefix {
        log.prefix = prefix(src, p, "prefix")?;
    }
    log.default = raw.default.unwrap_or(false);
    log.invalid = raw.invalid.unwrap_or(false);
    log.stateful = raw.stateful.unwrap_or(false);
    Ok(log)
}

/// A log prefix: what starts each log line of the rule (at most 31 bytes,
/// printable, as iptables' `--log-prefix` allows 29).
fn prefix(src: &Src, p: &Spanned<String>, key: &str) -> Result<String, PolicyError> {
    let text = p.get_ref();
    if text.len() >= fw_common::events::RULE_PREFIX_BYTES {
        return Err(src.err(
            p.span(),
            format!(
                "`{key}` is {} bytes long; fw keeps at most {}",
                text.len(),
                fw_common::events::RULE_PREFIX_BYTES - 1
            ),
            "shorten it, e.g. \"fw DROP: \"",
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(src.err(
            p.span(),
            format!("`{key}` contains a control character"),
            "use printable characters only: the prefix starts syslog lines",
        ));
    }
    Ok(text.clone())
}

/// A rate `"N/unit"` with an optional burst (iptables' default 5): `limit`
/// and `limit_burst`, `log_rate` and `log_burst`, or `[log]`'s `rate` and
/// `burst`, as `keys` names them.
fn rate(
    src: &Src,
    l: &Spanned<String>,
    burst_value: Option<&Spanned<i64>>,
    keys: (&str, &str),
) -> Result<super::Limit, PolicyError> {
    const HINT: &str =
        "write a rate like \"10/second\", \"60/minute\", \"100/hour\" or \"1000/day\"";
    let (key, burst_key) = keys;
    let text = l.get_ref();
    let (n, unit) = text
        .split_once('/')
        .ok_or_else(|| src.err(l.span(), format!("`{key}` \"{text}\" is not a rate"), HINT))?;
    let n: u64 = n.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        src.err(
            l.span(),
            format!("`{key}` \"{text}\" needs a positive count"),
            HINT,
        )
    })?;
    let unit_ns: u64 = match unit.trim() {
        "s" | "sec" | "second" => 1_000_000_000,
        "m" | "min" | "minute" => 60_000_000_000,
        "h" | "hour" => 3_600_000_000_000,
        "d" | "day" => 86_400_000_000_000,
        other => {
            return Err(src.err(
                l.span(),
                format!("`{key}` has an unknown unit \"{other}\""),
                HINT,
            ));
        }
    };
    // The limiter counts whole nanoseconds between matches; a zero
    // interval would also divide by zero wherever the rate is shown.
    let interval_ns = unit_ns / n;
    if interval_ns == 0 {
        return Err(src.err(
            l.span(),
            format!("`{key}` \"{text}\" is faster than one a nanosecond, which fw cannot measure"),
            "write at most \"1000000000/second\", or remove the limit to match every packet",
        ));
    }
    let burst = match burst_value {
        None => 5,
        Some(b) => burst(src, b, burst_key)?,
    };
    Ok(super::Limit { interval_ns, burst })
}

/// A burst: 1 to 10000.
fn burst(src: &Src, b: &Spanned<i64>, key: &str) -> Result<u32, PolicyError> {
    u32::try_from(*b.get_ref())
        .ok()
        .filter(|&b| (1..=10_000).contains(&b))
        .ok_or_else(|| {
            src.err(
                b.span(),
                format!("`{key}` must be between 1 and 10000"),
                "iptables uses 5 when none is given",
            )
        })
}

fn port_range(p: &RawWord) -> Result<PortRange, (String, &'static str)> {
    const HINT: &str =
        "ports are 1-65535; write a single port like 443 or a range like \"8000-8100\"";
    let number = |n: i64, shown: &str| -> Result<u16, (String, &'static str)> {
        u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| (format!("port {shown} is out of range"), HINT))
    };
    match p {
        RawWord::Number(n) => {
            let port = number(*n, &n.to_string())?;
            Ok(PortRange {
                first: port,
                last: port,
            })
        }
        RawWord::Text(s) => {
            let parse = |part: &str| -> Result<u16, (String, &'static str)> {
                let n: i64 = part
                    .trim()
                    .parse()
                    .map_err(|_| (format!("\"{s}\" is not a port or a port range"), HINT))?;
                number(n, part.trim())
            };
            let (first, last) = if let Some((a, b)) = s.split_once('-') {
                (parse(a)?, parse(b)?)
            } else {
                let p = parse(s)?;
                (p, p)
            };
            if first > last {
                return Err((
                    format!("port range \"{s}\" is reversed"),
                    "write the lower port first, e.g. \"8000-8100\"",
                ));
            }
            Ok(PortRange { first, last })
        }
    }
}

fn validate_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(format!("\"{name}\" is not a valid interface name"));
    }
    if name == "lo" {
        return Err(
            "fw never guards the loopback interface `lo`; loopback traffic is always allowed"
                .into(),
        );
    }
    Ok(())
}

/// 1-based line and column of byte `offset` in `text`.
#[must_use]
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
