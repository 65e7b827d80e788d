//! Policy → `iptables-restore` / `ip6tables-restore` input for the filter
//! table, with the meaning of fw's datapath (docs/policy.md, "How a packet
//! is judged").
//!
//! fw's chains are `FW-INPUT`, `FW-OUTPUT` and `FW-FORWARD`; the builtin
//! chains only jump to them for the guarded interfaces (`hooks`), so other
//! tools' rules survive. Each fw chain runs fw's stages in order:
//!
//! 1. loopback addresses on a guarded interface: DROP (spoofed);
//! 2. IPv6 neighbour discovery with hop limit 255: `[stateful]
//!    icmpv6_neighbor_discovery`;
//! 3. conntrack's ESTABLISHED, RELATED and INVALID: `[stateful]
//!    established`, `related`, `invalid`; with `tcp_syn_only`, new TCP that
//!    is not a pure SYN is INVALID to fw and gets the `invalid` verdict;
//! 4. the rules, first match wins;
//! 5. the chain's default.
//!
//! Helper chains, all named `FW-…`: `FW-LOG` (the `[log]` rate and prefix:
//! one token bucket for every event that uses them, as in fw), and per rule
//! `FW-IN-R<n>` / `FW-OUT-R<n>` / `FW-FWD-R<n>` when a rule expands to
//! several iptables rules and has a `limit` or logs (one rule, one token
//! bucket), or negates several prefixes (each prefix RETURNs, then the rule
//! acts). `FW-…-R<n>-HIT` holds what such a limited rule does when it
//! matches, if that takes more than one iptables rule.
//!
//! The choices, and where iptables cannot follow fw, are spelled out in the
//! header `standalone` writes (`HEADER_NOTES`).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use fw_common::{
    conntrack::{CtState, DEFAULT_TIMEOUTS, tcp_flags as tf},
    ipproto,
    policy::{PacketState, RejectWith},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{CHAIN_FORWARD, CHAIN_INPUT, CHAIN_OUTPUT, IpFamily};
use crate::policy::{
    AddrMatch, Families, Limit, Policy, PortRange, Rule, RuleAction, Stage, TcpFlagsMatch, Verdict,
};

/// Where the hooks send packets to fw's chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Guarded interfaces; `None`: every interface except `lo` (including
    /// interfaces that appear later, unlike fw's "every interface that is
    /// up").
    pub ifaces: Option<Vec<String>>,
}

/// The chain of events that use `[log] rate` and `[log] prefix`.
const CHAIN_LOG: &str = "FW-LOG";
/// iptables' `--log-prefix` holds at most 29 characters; fw keeps 31.
const LOG_PREFIX_MAX: usize = 29;
/// `-m multiport` takes at most 15 ports; a range counts as two.
const MULTIPORT_MAX: usize = 15;
/// Router solicitation .. redirect (RFC 4861), valid only with hop limit 255.
const ND_TYPES: std::ops::RangeInclusive<u8> = 133..=137;
/// The fastest rate `-m limit` can express.
const LIMIT_MAX_PER_SECOND: u64 = 10_000;
const NS_PER_SECOND: u64 = 1_000_000_000;
/// `--limit` units, smallest first.
const RATE_UNITS: [(u64, &str); 4] = [
    (NS_PER_SECOND, "second"),
    (60 * NS_PER_SECOND, "minute"),
    (3_600 * NS_PER_SECOND, "hour"),
    (86_400 * NS_PER_SECOND, "day"),
];

/// What `standalone` says about its choices and the limits of the
/// translation, below the layout.
const HEADER_NOTES: &str = "\
Choices:
  - A set is written as one rule per prefix of this family (no ipset
    needed). fw looks a packet up once whatever the size of a set;
    iptables walks the rules, so a large set costs a rule per prefix.
  - A negated list of several prefixes (\"!@set\") is a helper chain that
    RETURNs for each prefix and then does what the rule does.
  - Port lists use -m multiport, at most 15 ports a rule (a range counts
    two); longer lists are split over several rules.
  - fw's state \"new\" is conntrack's NEW or UNTRACKED: netfilter does not
    track neighbour discovery and MLD, fw calls them new.
  - With invalid = \"rules\" and tcp_syn_only, new TCP that is not a pure
    SYN is INVALID to fw but NEW to conntrack: a rule's state \"invalid\"
    also matches it, and state \"new\" leaves it out.
  - reject answers as fw does: tcp-reset for TCP, port unreachable for UDP,
    protocol unreachable otherwise (one REJECT rule per case when the rule
    has no protocol). ip6tables has no protocol unreachable (fw sends a
    parameter problem): icmp6-port-unreachable stands in. For IPv6, host
    unreachable is icmp6-addr-unreachable, net unreachable icmp6-no-route,
    admin prohibited icmp6-adm-prohibited.
  - Events that use the [log] rate and prefix go through FW-LOG, one limit
    for all of them as in fw. A rule with its own log_prefix but no
    log_rate gets a limit of its own at the [log] rate: iptables cannot
    share one limit between LOG rules of different prefixes.
  - Rates are written in the smallest unit that expresses them exactly
    (60/minute is 1/second); LOG prefixes are cut to 29 bytes, iptables'
    limit (fw keeps 31).
Where iptables cannot follow fw:
  - iptables and ip6tables have separate limits, so a rule's limit and the
    [log] limit hold per family here; fw shares them.
  - fw logs a packet for at most four action = \"log\" rules; iptables
    logs every one.
  - Conntrack reassembles fragments before the rules see them; fw follows
    fragments without reassembling and drops a later fragment that
    arrives before its first.
  - tcp_syn_only = false needs net.netfilter.nf_conntrack_tcp_loose = 1
    (the default) to pick up mid-stream TCP as fw does.
  - ICMP informational messages other than echo (router advertisements,
    redirects, timestamp replies ...) are INVALID to conntrack and meet
    [stateful] invalid; fw calls them new and gives them to the rules.
  - fw counts per fw rule; iptables per iptables rule.
";

/// The jumps from the builtin chains to fw's chains: (builtin chain, rule
/// spec). Each guarded interface gets `INPUT -i IF -j FW-INPUT`, `OUTPUT -o
/// IF -j FW-OUTPUT` and `FORWARD -i IF -j FW-FORWARD` (a routed packet is
/// judged once, as it arrives); without a list, `! -i lo` / `! -o lo`.
#[must_use]
pub fn hooks(target: &Target) -> Vec<(&'static str, Vec<String>)> {
    let hooks = [
        ("INPUT", "-i", CHAIN_INPUT),
        ("OUTPUT", "-o", CHAIN_OUTPUT),
        ("FORWARD", "-i", CHAIN_FORWARD),
    ];
    let mut out = Vec::new();
    for (builtin, flag, chain) in hooks {
        let spec = |head: &[&str]| -> Vec<String> {
            head.iter()
                .chain(&["-j", chain])
                .map(ToString::to_string)
                .collect()
        };
        match &target.ifaces {
            None => out.push((builtin, spec(&["!", flag, "lo"]))),
            Some(ifaces) => {
                for iface in ifaces {
                    out.push((builtin, spec(&[flag, iface])));
                }
            }
        }
    }
    out
}

/// fw's chains for `family` as `iptables-restore --noflush` input: the
/// table, the declarations of `FW-INPUT`, `FW-OUTPUT`, `FW-FORWARD` and the
/// helper chains they use (declaring a chain in a restore flushes it), their
/// rules, `COMMIT`. No builtin chain is touched; `hooks` says how to reach
/// them.
#[must_use]
pub fn chains(policy: &Policy, family: IpFamily) -> String {
    let w = Writer::build(policy, family);
    let mut out = String::from("*filter\n");
    w.declarations(&mut out);
    w.rules(&mut out);
    out.push_str("COMMIT\n");
    out
}

/// What `fw-user export` prints: a header explaining the layout and the
/// choices, then a complete filter table for `iptables-restore` (which
/// replaces the table): the builtin chains with policy ACCEPT, fw's chains,
/// the hooks of `target`.
#[must_use]
pub fn standalone(policy: &Policy, family: IpFamily, target: &Target) -> String {
    let w = Writer::build(policy, family);
    let mut out = header(policy, family, target);
    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    w.declarations(&mut out);
    w.rules(&mut out);
    out.push_str("# the guarded interfaces\n");
    for (builtin, spec) in hooks(target) {
        let _ = writeln!(out, "-A {builtin} {}", spec.join(" "));
    }
    out.push_str("COMMIT\n");
    out
}

fn header(policy: &Policy, family: IpFamily, target: &Target) -> String {
    let mut h = String::new();
    let guarded = target.ifaces.as_ref().map_or_else(
        || "every interface except lo".to_string(),
        |l| {
            if l.is_empty() {
                "none".to_string()
            } else {
                l.join(", ")
            }
        },
    );
    let cmd = family.restore_command();
    let _ = write!(
        h,
        "\
fw policy {hash:016x}, {name} rules for {cmd} (written by `fw-user export`).
`{cmd} < FILE` replaces the whole filter table.
Guarded interfaces: {guarded}.

Layout: the builtin chains (policy ACCEPT) send the packets of the guarded
interfaces to fw's chains: INPUT -i IF to {CHAIN_INPUT}, OUTPUT -o IF to
{CHAIN_OUTPUT}, FORWARD -i IF to {CHAIN_FORWARD} (a routed packet is judged once,
as it arrives). lo is never filtered. Each fw chain runs fw's stages in order:
  1. loopback addresses on a guarded interface are spoofed: DROP;
  2. IPv6 neighbour discovery (types 133-137, hop limit 255):
     [stateful] icmpv6_neighbor_discovery;
  3. conntrack's ESTABLISHED, RELATED and INVALID: [stateful] established,
     related and invalid (\"rules\": nothing here, the rules see the state);
     with tcp_syn_only, new TCP that is not a pure SYN is INVALID to fw;
  4. the rules, first match wins, each under a comment
     \"# rule N (name) line L\";
  5. the chain's default.
Helper chains: {CHAIN_LOG} logs with the [log] rate and prefix. FW-IN-R<n>,
FW-OUT-R<n> and FW-FWD-R<n> belong to rule n of [[input]], [[output]] or
[[forward]]: for a rule written as several iptables rules that has a limit or
logs (so the rule keeps one token bucket, as in fw), or that negates several
prefixes (each RETURNs, then the rule acts). FW-...-R<n>-HIT is what a limited
rule does when it matches, if that takes several iptables rules.

{HEADER_NOTES}",
        hash = policy.hash,
        name = family.name(),
    );
    let sysctls = conntrack_sysctls(policy, family);
    if !sysctls.is_empty() {
        h.push_str("[conntrack] settings are sysctls, not rules:\n");
        for s in sysctls {
            let _ = writeln!(h, "  sysctl -w {s}");
        }
    }
    let mut out = String::new();
    for line in h.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    out
}

/// `[conntrack]` keys the policy sets, as netfilter's sysctls.
fn conntrack_sysctls(policy: &Policy, family: IpFamily) -> Vec<String> {
    let icmp = match family {
        IpFamily::V4 => "nf_conntrack_icmp_timeout",
        IpFamily::V6 => "nf_conntrack_icmpv6_timeout",
    };
    // One state per key (`SynSent2` and `IcmpReplied` share theirs).
    let keys = [
        (CtState::TcpSynSent, "nf_conntrack_tcp_timeout_syn_sent"),
        (CtState::TcpSynRecv, "nf_conntrack_tcp_timeout_syn_recv"),
        (
            CtState::TcpEstablished,
            "nf_conntrack_tcp_timeout_established",
        ),
        (CtState::TcpFinWait, "nf_conntrack_tcp_timeout_fin_wait"),
        (CtState::TcpCloseWait, "nf_conntrack_tcp_timeout_close_wait"),
        (CtState::TcpLastAck, "nf_conntrack_tcp_timeout_last_ack"),
        (CtState::TcpTimeWait, "nf_conntrack_tcp_timeout_time_wait"),
        (CtState::TcpClose, "nf_conntrack_tcp_timeout_close"),
        (CtState::UdpUnreplied, "nf_conntrack_udp_timeout"),
        (CtState::UdpReplied, "nf_conntrack_udp_timeout_stream"),
        (CtState::IcmpUnreplied, icmp),
    ];
    let t = &policy.conntrack.timeouts;
    let mut out: Vec<String> = keys
        .iter()
        .filter(|(s, _)| t[*s as usize] != DEFAULT_TIMEOUTS[*s as usize])
        .map(|(s, key)| format!("net.netfilter.{key}={}", t[*s as usize]))
        .collect();
    if let Some(n) = policy.conntrack.max_entries {
        // fw holds this many in each of its two tables; conntrack has one.
        out.push(format!("net.netfilter.nf_conntrack_max={n}"));
    }
    out
}

/// One of fw's chains.
struct ChainDesc<'p> {
    name: &'static str,
    /// In helper chain names: `FW-IN-R3`.
    short: &'static str,
    /// As the policy names it.
    label: &'static str,
    /// `-i` or `-o`: the rules' `iface`.
    iface_flag: &'static str,
    rules: &'p [Rule],
    default: Verdict,
}

/// A step of what a rule (or stage) does: one iptables rule's target, with
/// the protocol or limit that step alone needs.
#[derive(Clone, Debug)]
struct Step {
    proto: Option<u8>,
    limit: Option<Limit>,
    target: String,
}

impl Step {
    fn to(target: impl Into<String>) -> Self {
        Self {
            proto: None,
            limit: None,
            target: target.into(),
        }
    }
}

/// The matches of one iptables rule, written in `iptables-save`'s order.
#[derive(Clone, Debug, Default)]
struct Spec {
    src: Option<(bool, IpNet)>,
    dst: Option<(bool, IpNet)>,
    iface: Option<(&'static str, String)>,
    proto: Option<u8>,
    /// A single port or range (`--sport`), or a multiport list.
    sport: Option<Vec<PortRange>>,
    dport: Option<Vec<PortRange>>,
    tcp_flags: Option<TcpFlagsMatch>,
    icmp_type: Option<u8>,
    hop_limit_255: bool,
    ctstate: Vec<&'static str>,
    /// TCP that fails fw's `tcp_syn_only` test, `flags & (SYN|ACK|FIN|RST)
    /// == SYN`.
    not_pure_syn: bool,
    limits: Vec<Limit>,
}

/// fw's pure-SYN test as `--tcp-flags MASK COMP`.
const PURE_SYN: TcpFlagsMatch = TcpFlagsMatch {
    mask: tf::FIN | tf::SYN | tf::RST | tf::ACK,
    comp: tf::SYN,
};

impl Spec {
    /// New TCP that is not a pure SYN: INVALID to fw with `tcp_syn_only`.
    fn new_tcp_not_pure_syn() -> Self {
        Self {
            proto: Some(ipproto::TCP),
            not_pure_syn: true,
            ctstate: vec!["NEW"],
            ..Self::default()
        }
    }

    fn with_step(&self, step: &Step) -> Self {
        let mut s = self.clone();
        if s.proto.is_none() {
            s.proto = step.proto;
        }
        s.limits.extend(step.limit);
        s
    }

    /// `-A CHAIN <matches> -j TARGET`.
    fn line(&self, chain: &str, target: &str) -> String {
        let m = self.matches();
        if m.is_empty() {
            format!("-A {chain} -j {target}")
        } else {
            format!("-A {chain} {m} -j {target}")
        }
    }

    fn matches(&self) -> String {
        fn push(a: &mut Vec<String>, words: &[&str]) {
            a.extend(words.iter().map(ToString::to_string));
        }
        let mut a: Vec<String> = Vec::new();
        for (flag, addr) in [("-s", &self.src), ("-d", &self.dst)] {
            if let Some((negated, net)) = addr {
                if *negated {
                    push(&mut a, &["!"]);
                }
                push(&mut a, &[flag, &net.to_string()]);
            }
        }
        if let Some((flag, name)) = &self.iface {
            push(&mut a, &[flag, name]);
        }
        if let Some(p) = self.proto {
            push(&mut a, &["-p", &proto_name(p)]);
        }
        // The protocol's own match: single ports, TCP flags.
        let mut l4: Vec<String> = Vec::new();
        for (flag, ports) in [("--sport", &self.sport), ("--dport", &self.dport)] {
            if let Some([one]) = ports.as_deref() {
                l4.extend([flag.to_string(), port_text(*one)]);
            }
        }
        let low = |f: TcpFlagsMatch| TcpFlagsMatch {
            mask: f.mask & LOW_FLAGS,
            comp: f.comp & LOW_FLAGS,
        };
        let own_flags = self.tcp_flags.map(low).filter(|f| f.mask != 0);
        if let Some(f) = own_flags {
            l4.extend(tcp_flags_words(f, false));
        }
        // fw's SYN test shares the match when the rule has no flags of its
        // own; otherwise it is a second `-m tcp`.
        let mut syn_words = if self.not_pure_syn {
            tcp_flags_words(PURE_SYN, true)
        } else {
            Vec::new()
        };
        if own_flags.is_none() {
            l4.append(&mut syn_words);
        }
        if !l4.is_empty() {
            let module = self.proto.map_or_else(|| "tcp".to_string(), proto_name);
            push(&mut a, &["-m", &module]);
            a.append(&mut l4);
        }
        for (flag, ports) in [("--sports", &self.sport), ("--dports", &self.dport)] {
            if let Some(list) = ports.as_deref().filter(|l| l.len() > 1) {
                let list: Vec<String> = list.iter().map(|p| port_text(*p)).collect();
                push(&mut a, &["-m", "multiport", flag, &list.join(",")]);
            }
        }
        if let Some(t) = self.icmp_type {
            if self.proto == Some(ipproto::ICMPV6) {
                push(&mut a, &["-m", "icmp6", "--icmpv6-type", &t.to_string()]);
            } else {
                push(&mut a, &["-m", "icmp", "--icmp-type", &t.to_string()]);
            }
        }
        if self.hop_limit_255 {
            push(&mut a, &["-m", "hl", "--hl-eq", "255"]);
        }
        // `--tcp-flags` knows only the low six flags; ECE and CWR are the
        // ecn match's.
        if let Some(f) = self.tcp_flags.filter(|f| f.mask & !LOW_FLAGS != 0) {
            push(&mut a, &["-m", "ecn"]);
            for (bit, opt) in [(tf::ECE, "--ecn-tcp-ece"), (tf::CWR, "--ecn-tcp-cwr")] {
                if f.mask & bit != 0 {
                    if f.comp & bit == 0 {
                        push(&mut a, &["!"]);
                    }
                    push(&mut a, &[opt]);
                }
            }
        }
        if !syn_words.is_empty() {
            push(&mut a, &["-m", "tcp"]);
            a.append(&mut syn_words);
        }
        if !self.ctstate.is_empty() {
            push(
                &mut a,
                &["-m", "conntrack", "--ctstate", &self.ctstate.join(",")],
            );
        }
        for l in &self.limits {
            a.extend(limit_words(*l));
        }
        a.join(" ")
    }
}

/// FIN, SYN, RST, PSH, ACK, URG: what `--tcp-flags` can name.
const LOW_FLAGS: u8 = 0x3f;

fn tcp_flags_words(f: TcpFlagsMatch, negated: bool) -> Vec<String> {
    const NAMES: [(u8, &str); 6] = [
        (tf::FIN, "FIN"),
        (tf::SYN, "SYN"),
        (tf::RST, "RST"),
        (tf::PSH, "PSH"),
        (tf::ACK, "ACK"),
        (tf::URG, "URG"),
    ];
    let names = |bits: u8| {
        let n: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if n.is_empty() {
            "NONE".to_string()
        } else {
            n.join(",")
        }
    };
    let mut w = Vec::new();
    if negated {
        w.push("!".to_string());
    }
    w.extend(["--tcp-flags".to_string(), names(f.mask), names(f.comp)]);
    w
}

/// `-p` as `iptables-save` writes it.
fn proto_name(p: u8) -> String {
    match p {
        ipproto::TCP => "tcp".into(),
        ipproto::UDP => "udp".into(),
        ipproto::ICMP => "icmp".into(),
        ipproto::ICMPV6 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn port_text(p: PortRange) -> String {
    if p.first == p.last {
        p.first.to_string()
    } else {
        format!("{}:{}", p.first, p.last)
    }
}

/// A port list in `-m multiport`-sized pieces (a range counts two).
fn port_chunks(list: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut chunks: Vec<Vec<PortRange>> = Vec::new();
    let mut weight = 0;
    for p in list {
        let w = if p.first == p.last { 1 } else { 2 };
        if chunks.is_empty() || weight + w > MULTIPORT_MAX {
            chunks.push(Vec::new());
            weight = 0;
        }
        weight += w;
        if let Some(last) = chunks.last_mut() {
            last.push(*p);
        }
    }
    chunks
}

/// A `Limit` as `--limit` writes it: `(text, note)`, the note saying how it
/// was changed when iptables cannot express it.
fn rate_text(l: Limit) -> (String, Option<String>) {
    let fastest = NS_PER_SECOND / LIMIT_MAX_PER_SECOND;
    if l.interval_ns < fastest {
        let asked = NS_PER_SECOND.checked_div(l.interval_ns).map_or_else(
            || "an unbounded rate".to_string(),
            |n| format!("{n}/second"),
        );
        return (
            format!("{LIMIT_MAX_PER_SECOND}/second"),
            Some(format!(
                "{asked} is faster than -m limit allows: {LIMIT_MAX_PER_SECOND}/second"
            )),
        );
    }
    let interval = u128::from(l.interval_ns);
    // (count, unit, error in ns per unit): the count of events per unit,
    // rounded; fw divides the unit by the count, so exact rates come back
    // within a few nanoseconds.
    let candidates = RATE_UNITS.iter().filter_map(|&(ns, unit)| {
        let ns = u128::from(ns);
        let n = (ns + interval / 2) / interval;
        (n > 0).then(|| (n, unit, ns, (n * interval).abs_diff(ns)))
    });
    let mut best: Option<(u128, &str, u128, u128)> = None;
    for c in candidates {
        // Within a millionth of the unit: exact as fw parsed it.
        if c.3 * 1_000_000 <= c.2 {
            return (format!("{}/{}", c.0, c.1), None);
        }
        if best.is_none_or(|b| c.3 * b.2 < b.3 * c.2) {
            best = Some(c);
        }
    }
    let (n, unit, _, _) = best.unwrap_or((1, "day", 0, 0));
    (
        format!("{n}/{unit}"),
        Some(format!(
            "one per {} ns cannot be written exactly for -m limit: {n}/{unit}",
            l.interval_ns
        )),
    )
}

fn limit_words(l: Limit) -> Vec<String> {
    vec![
        "-m".into(),
        "limit".into(),
        "--limit".into(),
        rate_text(l).0,
        "--limit-burst".into(),
        l.burst.to_string(),
    ]
}

/// `--log-prefix` with its argument quoted: `(words, note)`.
fn log_prefix(prefix: &str) -> (String, Option<String>) {
    let mut cut = prefix;
    let mut note = None;
    if prefix.len() > LOG_PREFIX_MAX {
        let mut end = LOG_PREFIX_MAX;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        cut = &prefix[..end];
        note = Some(format!(
            "log prefix {prefix:?} cut to {LOG_PREFIX_MAX} bytes (iptables' limit): {cut:?}"
        ));
    }
    let escaped = cut.replace('\\', "\\\\").replace('"', "\\\"");
    (format!("--log-prefix \"{escaped}\""), note)
}

/// `--reject-with` for a concrete answer.
fn reject_name(with: RejectWith, family: IpFamily) -> &'static str {
    match (family, with) {
        (_, RejectWith::TcpReset) => "tcp-reset",
        (IpFamily::V4, RejectWith::Auto | RejectWith::PortUnreachable) => "icmp-port-unreachable",
        (IpFamily::V4, RejectWith::ProtoUnreachable) => "icmp-proto-unreachable",
        (IpFamily::V4, RejectWith::HostUnreachable) => "icmp-host-unreachable",
        (IpFamily::V4, RejectWith::NetUnreachable) => "icmp-net-unreachable",
        (IpFamily::V4, RejectWith::AdminProhibited) => "icmp-admin-prohibited",
        // ip6tables cannot send fw's parameter problem for an unknown
        // protocol; port unreachable (its default) says "nobody here" too.
        (
            IpFamily::V6,
            RejectWith::Auto | RejectWith::PortUnreachable | RejectWith::ProtoUnreachable,
        ) => "icmp6-port-unreachable",
        (IpFamily::V6, RejectWith::HostUnreachable) => "icmp6-addr-unreachable",
        (IpFamily::V6, RejectWith::NetUnreachable) => "icmp6-no-route",
        (IpFamily::V6, RejectWith::AdminProhibited) => "icmp6-adm-prohibited",
    }
}

/// The REJECT rules for `with` on packets of `proto` (`None`: any): as fw,
/// `Auto` is a RST for TCP, port unreachable for UDP, protocol unreachable
/// otherwise; `tcp-reset` on anything but TCP is a plain drop.
fn reject_steps(with: RejectWith, proto: Option<u8>, family: IpFamily) -> Vec<Step> {
    let reject = |w: RejectWith| format!("REJECT --reject-with {}", reject_name(w, family));
    let for_proto = |p: u8, w: RejectWith| Step {
        proto: Some(p),
        limit: None,
        target: reject(w),
    };
    match (with, proto) {
        // REJECT takes tcp-reset only on a rule that says `-p tcp`.
        (RejectWith::Auto | RejectWith::TcpReset, Some(ipproto::TCP)) => {
            vec![for_proto(ipproto::TCP, RejectWith::TcpReset)]
        }
        (RejectWith::Auto, Some(ipproto::UDP)) => {
            vec![Step::to(reject(RejectWith::PortUnreachable))]
        }
        (RejectWith::Auto, Some(_)) => vec![Step::to(reject(RejectWith::ProtoUnreachable))],
        (RejectWith::Auto, None) => vec![
            for_proto(ipproto::TCP, RejectWith::TcpReset),
            for_proto(ipproto::UDP, RejectWith::PortUnreachable),
            Step::to(reject(RejectWith::ProtoUnreachable)),
        ],
        (RejectWith::TcpReset, Some(_)) => vec![Step::to("DROP")],
        (RejectWith::TcpReset, None) => vec![
            for_proto(ipproto::TCP, RejectWith::TcpReset),
            Step::to("DROP"),
        ],
        (w, _) => vec![Step::to(reject(w))],
    }
}

/// A rule's `src` or `dst` for one family.
enum AddrPart {
    Any,
    /// One iptables rule per prefix.
    Each(Vec<IpNet>),
    /// None of these.
    NoneOf(Vec<IpNet>),
}

/// `None`: the match can never hold for this family (a positive list
/// without a prefix of it).
fn addr_part(m: Option<&AddrMatch>, family: IpFamily) -> Option<AddrPart> {
    let Some(m) = m else {
        return Some(AddrPart::Any);
    };
    // Duplicates dropped with a set, keeping the first occurrence's order:
    // a search of the list per prefix made a 100k-prefix blocklist take
    // minutes.
    let mut seen = std::collections::HashSet::new();
    let mut nets: Vec<IpNet> = Vec::new();
    for n in &m.nets {
        let n = n.trunc();
        let ours = match family {
            IpFamily::V4 => matches!(n, IpNet::V4(_)),
            IpFamily::V6 => matches!(n, IpNet::V6(_)),
        };
        if ours && seen.insert(n) {
            nets.push(n);
        }
    }
    match (m.negated, nets.is_empty()) {
        (true, true) => Some(AddrPart::Any),
        (true, false) => Some(AddrPart::NoneOf(nets)),
        (false, true) => None,
        (false, false) => Some(AddrPart::Each(nets)),
    }
}

/// The single-prefix choices of an address part (`None`: no match), and
/// the prefixes that must RETURN in a helper chain.
fn addr_choices(part: AddrPart) -> (Vec<Option<(bool, IpNet)>>, Vec<IpNet>) {
    match part {
        AddrPart::Any => (vec![None], Vec::new()),
        AddrPart::Each(nets) => (
            nets.into_iter().map(|n| Some((false, n))).collect(),
            Vec::new(),
        ),
        AddrPart::NoneOf(nets) if nets.len() == 1 => (vec![Some((true, nets[0]))], Vec::new()),
        AddrPart::NoneOf(nets) => (vec![None], nets),
    }
}

/// One way of writing a rule's `state`.
#[derive(Clone)]
struct StateChoice {
    ctstate: Vec<&'static str>,
    /// Only TCP that is not a pure SYN (`Spec::not_pure_syn`).
    not_pure_syn: bool,
}

fn family_has(f: Families, family: IpFamily) -> bool {
    match family {
        IpFamily::V4 => f.ipv4,
        IpFamily::V6 => f.ipv6,
    }
}

/// `# …` with what cannot be on one comment line made harmless.
fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("# {clean}")
}

/// Builds one family's rules for fw's chains.
struct Writer<'p> {
    policy: &'p Policy,
    family: IpFamily,
    /// Helper chains, in the order they were needed.
    helpers: Vec<String>,
    uses_log_chain: bool,
    lines: Vec<String>,
}

impl<'p> Writer<'p> {
    fn build(policy: &'p Policy, family: IpFamily) -> Self {
        let mut w = Self {
            policy,
            family,
            helpers: Vec::new(),
            uses_log_chain: false,
            lines: Vec::new(),
        };
        let chains = [
            ChainDesc {
                name: CHAIN_INPUT,
                short: "IN",
                label: "input",
                iface_flag: "-i",
                rules: &policy.input,
                default: policy.defaults.input,
            },
            ChainDesc {
                name: CHAIN_OUTPUT,
                short: "OUT",
                label: "output",
                iface_flag: "-o",
                rules: &policy.output,
                default: policy.defaults.output,
            },
            ChainDesc {
                name: CHAIN_FORWARD,
                short: "FWD",
                label: "forward",
                iface_flag: "-i",
                rules: &policy.forward,
                default: policy.defaults.forward,
            },
        ];
        for ch in &chains {
            w.prologue(ch);
            for (i, rule) in ch.rules.iter().enumerate() {
                w.rule(ch, i + 1, rule);
            }
            w.default(ch);
        }
        if w.uses_log_chain {
            w.log_chain();
        }
        w
    }

    fn declarations(&self, out: &mut String) {
        let mut names = vec![CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_FORWARD];
        if self.uses_log_chain {
            names.push(CHAIN_LOG);
        }
        names.extend(self.helpers.iter().map(String::as_str));
        for n in names {
            let _ = writeln!(out, ":{n} - [0:0]");
        }
    }

    fn rules(&self, out: &mut String) {
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
    }

    fn comment(&mut self, text: &str) {
        self.lines.push(comment(text));
    }

    fn add(&mut self, chain: &str, spec: &Spec, step: &Step) {
        if step.target == CHAIN_LOG {
            self.uses_log_chain = true;
        }
        let line = spec.with_step(step).line(chain, &step.target);
        self.lines.push(line);
    }

    fn helper(&mut self, name: String) -> String {
        self.helpers.push(name.clone());
        name
    }

    /// `-j FW-LOG` when `log` is set, then `verdict`.
    fn logged(&mut self, chain: &str, spec: &Spec, log: bool, verdict: &str) {
        if log {
            self.add(chain, spec, &Step::to(CHAIN_LOG));
        }
        self.add(chain, spec, &Step::to(verdict));
    }

    /// Stages 1 to 3: spoofed loopback addresses, neighbour discovery,
    /// connection state.
    fn prologue(&mut self, ch: &ChainDesc) {
        let st = self.policy.stateful;
        let log = &self.policy.log;
        let (log_invalid, log_stateful) = (log.invalid, log.stateful);
        let lo = match self.family {
            IpFamily::V4 => IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
            IpFamily::V6 => IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        };
        self.comment(&format!(
            "{}: loopback addresses on a guarded interface are spoofed",
            ch.name
        ));
        for dst in [false, true] {
            let spec = Spec {
                src: (!dst).then_some((false, lo)),
                dst: dst.then_some((false, lo)),
                ..Spec::default()
            };
            self.logged(ch.name, &spec, log_invalid, "DROP");
        }
        let stage_target = |s: Stage| match s {
            Stage::Accept => Some("ACCEPT"),
            Stage::Drop => Some("DROP"),
            Stage::Rules => None,
        };
        if self.family == IpFamily::V6
            && let Some(target) = stage_target(st.neighbor_discovery)
        {
            self.comment("neighbour discovery: [stateful] icmpv6_neighbor_discovery");
            for t in ND_TYPES {
                let spec = Spec {
                    proto: Some(ipproto::ICMPV6),
                    icmp_type: Some(t),
                    hop_limit_255: true,
                    ..Spec::default()
                };
                self.logged(ch.name, &spec, log_stateful && target == "DROP", target);
            }
        }
        let stages = [
            ("ESTABLISHED", st.established, log_stateful),
            ("RELATED", st.related, log_stateful),
            ("INVALID", st.invalid, log_invalid),
        ];
        if stages.iter().any(|(_, s, _)| *s != Stage::Rules) {
            self.comment("connection state: [stateful] established, related, invalid");
        }
        for (state, stage, log) in stages {
            if let Some(target) = stage_target(stage) {
                let spec = Spec {
                    ctstate: vec![state],
                    ..Spec::default()
                };
                self.logged(ch.name, &spec, log && target == "DROP", target);
            }
        }
        // With "rules", the rules' state matches take these packets as
        // INVALID instead (`state_choices`).
        if st.tcp_syn_only
            && let Some(target) = stage_target(st.invalid)
        {
            self.comment("tcp_syn_only: new TCP that is not a pure SYN is INVALID");
            self.logged(
                ch.name,
                &Spec::new_tcp_not_pure_syn(),
                log_invalid && target == "DROP",
                target,
            );
        }
    }

    /// Stage 5: the chain's default, logged if `[log] default` asks.
    fn default(&mut self, ch: &ChainDesc) {
        self.comment(&format!("{} default: {}", ch.label, ch.default));
        let steps = match ch.default {
            Verdict::Accept => vec![Step::to("ACCEPT")],
            Verdict::Drop => vec![Step::to("DROP")],
            Verdict::Reject(with) => reject_steps(with, None, self.family),
        };
        if self.policy.log.default && ch.default != Verdict::Accept {
            self.add(ch.name, &Spec::default(), &Step::to(CHAIN_LOG));
        }
        for s in &steps {
            self.add(ch.name, &Spec::default(), s);
        }
    }

    /// The `FW-LOG` chain: `[log] rate` and `[log] prefix`.
    fn log_chain(&mut self) {
        let log = &self.policy.log;
        let (prefix, prefix_note) = log_prefix(&log.prefix);
        let rate_note = rate_text(log.rate).1;
        self.comment(&format!("{CHAIN_LOG}: [log] rate and prefix"));
        for n in [rate_note, prefix_note].into_iter().flatten() {
            self.comment(&format!("note: {n}"));
        }
        let spec = Spec {
            limits: vec![log.rate],
            ..Spec::default()
        };
        self.lines
            .push(spec.line(CHAIN_LOG, &format!("LOG {prefix}")));
    }

    /// How a rule logs: through `FW-LOG`, or with its own prefix and limit.
    fn log_step(&self, rule: &Rule) -> (Step, Vec<String>) {
        if rule.log_rate.is_none() && rule.log_prefix.is_none() {
            return (Step::to(CHAIN_LOG), Vec::new());
        }
        let rate = rule.log_rate.unwrap_or(self.policy.log.rate);
        let (prefix, prefix_note) = log_prefix(
            rule.log_prefix
                .as_deref()
                .unwrap_or(&self.policy.log.prefix),
        );
        let notes = [rate_text(rate).1, prefix_note].into_iter().flatten();
        (
            Step {
                proto: None,
                limit: Some(rate),
                target: format!("LOG {prefix}"),
            },
            notes.collect(),
        )
    }

    /// What a rule does once it matches, for packets of `proto`.
    fn body(&self, rule: &Rule, proto: Option<u8>) -> Vec<Step> {
        let mut steps = Vec::new();
        if rule.logs() {
            steps.push(self.log_step(rule).0);
        }
        match rule.action {
            RuleAction::Accept => steps.push(Step::to("ACCEPT")),
            RuleAction::Drop => steps.push(Step::to("DROP")),
            RuleAction::Reject(with) => steps.extend(reject_steps(with, proto, self.family)),
            RuleAction::Log => {}
        }
        steps
    }

    /// A rule's `state` as conntrack states, and a packet class the rule
    /// must leave out (`Spec`, to RETURN from a helper chain).
    ///
    /// fw's "new" is conntrack's NEW or UNTRACKED. With `tcp_syn_only` and
    /// `invalid = "rules"`, new TCP that is not a pure SYN reaches the
    /// rules as INVALID in fw but NEW in conntrack: "invalid" takes it in,
    /// "new" leaves it out.
    fn state_choices(&self, rule: &Rule) -> (Vec<StateChoice>, Option<Spec>) {
        if rule.state.is_empty() {
            return (
                vec![StateChoice {
                    ctstate: Vec::new(),
                    not_pure_syn: false,
                }],
                None,
            );
        }
        let mut ctstate: Vec<&'static str> = Vec::new();
        for s in &rule.state {
            let names: &[&'static str] = match s {
                PacketState::New => &["NEW", "UNTRACKED"],
                PacketState::Established => &["ESTABLISHED"],
                PacketState::Related => &["RELATED"],
                PacketState::Invalid => &["INVALID"],
            };
            for n in names {
                if !ctstate.contains(n) {
                    ctstate.push(n);
                }
            }
        }
        let plain = StateChoice {
            ctstate,
            not_pure_syn: false,
        };
        let st = self.policy.stateful;
        let split = st.tcp_syn_only
            && st.invalid == Stage::Rules
            && matches!(rule.proto, None | Some(ipproto::TCP));
        let new = rule.state.contains(&PacketState::New);
        let invalid = rule.state.contains(&PacketState::Invalid);
        if !split || new == invalid {
            return (vec![plain], None);
        }
        if invalid {
            let extra = StateChoice {
                ctstate: vec!["NEW"],
                not_pure_syn: true,
            };
            (vec![plain, extra], None)
        } else {
            (vec![plain], Some(Spec::new_tcp_not_pure_syn()))
        }
    }

    /// Stage 4: one fw rule.
    #[expect(
        clippy::too_many_lines,
        reason = "the expansion, then the one place that decides inline or helper chains"
    )]
    fn rule(&mut self, ch: &ChainDesc, n: usize, rule: &Rule) {
        let name = rule
            .name
            .as_ref()
            .map_or_else(String::new, |s| format!(" ({s})"));
        let head = format!("rule {n}{name} line {}", rule.line);
        if !family_has(rule.families, self.family) {
            let only = if rule.families.ipv4 { "ipv4" } else { "ipv6" };
            self.comment(&format!(
                "{head}: {only} only, not in the {} rules",
                self.family.name()
            ));
            return;
        }
        if rule.proto == Some(0) {
            self.comment(&format!(
                "{head}: left out: -p 0 means every protocol to iptables, not protocol 0"
            ));
            return;
        }
        let (Some(src), Some(dst)) = (
            addr_part(rule.src.as_ref(), self.family),
            addr_part(rule.dst.as_ref(), self.family),
        ) else {
            self.comment(&format!(
                "{head}: no {} address in its src/dst, so it cannot match here",
                self.family.name()
            ));
            return;
        };
        self.comment(&head);
        let mut notes: Vec<String> = Vec::new();
        if let Some(l) = rule.limit {
            notes.extend(rate_text(l).1);
        }
        if rule.logs() {
            notes.extend(self.log_step(rule).1);
        }
        for note in notes {
            self.comment(&format!("note: {note}"));
        }

        let (srcs, src_out) = addr_choices(src);
        let (dsts, dst_out) = addr_choices(dst);
        let (states, state_out) = self.state_choices(rule);
        let mut exclusions: Vec<Spec> = src_out
            .into_iter()
            .map(|net| Spec {
                src: Some((false, net)),
                ..Spec::default()
            })
            .chain(dst_out.into_iter().map(|net| Spec {
                dst: Some((false, net)),
                ..Spec::default()
            }))
            .collect();
        exclusions.extend(state_out);

        let ifaces: Vec<Option<String>> = if rule.iface.is_empty() {
            vec![None]
        } else {
            rule.iface.iter().cloned().map(Some).collect()
        };
        let ports = |l: &[PortRange]| -> Vec<Option<Vec<PortRange>>> {
            if l.is_empty() {
                vec![None]
            } else {
                port_chunks(l).into_iter().map(Some).collect()
            }
        };
        let (sports, dports) = (ports(&rule.sport), ports(&rule.dport));
        let icmp_types: Vec<Option<u8>> = if rule.icmp_type.is_empty() {
            vec![None]
        } else {
            rule.icmp_type.iter().copied().map(Some).collect()
        };
        let mut expansions: Vec<Spec> = Vec::new();
        for iface in &ifaces {
            for s in &srcs {
                for d in &dsts {
                    for state in &states {
                        for sp in &sports {
                            for dp in &dports {
                                for t in &icmp_types {
                                    let proto = if state.not_pure_syn {
                                        Some(ipproto::TCP)
                                    } else {
                                        rule.proto
                                    };
                                    expansions.push(Spec {
                                        src: *s,
                                        dst: *d,
                                        iface: iface.clone().map(|i| (ch.iface_flag, i)),
                                        proto,
                                        sport: sp.clone(),
                                        dport: dp.clone(),
                                        tcp_flags: rule.tcp_flags,
                                        icmp_type: *t,
                                        hop_limit_255: false,
                                        ctstate: state.ctstate.clone(),
                                        not_pure_syn: state.not_pure_syn,
                                        limits: Vec::new(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }

        let bodies: Vec<Vec<Step>> = expansions
            .iter()
            .map(|e| self.body(rule, e.proto))
            .collect();
        let shares_bucket = rule.limit.is_some() || rule.logs();
        let needs_helper = !exclusions.is_empty()
            || (shares_bucket && expansions.len() > 1)
            || (rule.limit.is_some() && bodies.iter().any(|b| b.len() > 1));
        if !needs_helper {
            // At most one iptables rule carries the limit: one expansion
            // with a one-step body.
            for (e, body) in expansions.iter().zip(&bodies) {
                let mut e = e.clone();
                e.limits.extend(rule.limit);
                for step in body {
                    self.add(ch.name, &e, step);
                }
            }
            return;
        }

        let helper = self.helper(format!("FW-{}-R{n}", ch.short));
        let body = self.body(rule, rule.proto);
        let jump = Step::to(helper.clone());
        if exclusions.is_empty() && expansions.len() == 1 {
            // Here only for a limited rule whose action takes several
            // iptables rules: the jump carries the limit.
            let mut e = expansions[0].clone();
            e.limits.extend(rule.limit);
            self.add(ch.name, &e, &jump);
            for step in &body {
                self.add(&helper, &Spec::default(), step);
            }
            return;
        }
        for e in &expansions {
            self.add(ch.name, e, &jump);
        }
        for x in &exclusions {
            self.add(&helper, x, &Step::to("RETURN"));
        }
        match rule.limit {
            None => {
                for step in &body {
                    self.add(&helper, &Spec::default(), step);
                }
            }
            Some(l) if body.len() == 1 => {
                let limited = Spec {
                    limits: vec![l],
                    ..Spec::default()
                };
                self.add(&helper, &limited, &body[0]);
            }
            Some(l) => {
                let hit = self.helper(format!("{helper}-HIT"));
                let limited = Spec {
                    limits: vec![l],
                    ..Spec::default()
                };
                self.add(&helper, &limited, &Step::to(hit.clone()));
                for step in &body {
                    self.add(&hit, &Spec::default(), step);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
