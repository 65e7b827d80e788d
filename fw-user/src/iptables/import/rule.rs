//! One rule's options → its match and target. Whatever iptables would
//! refuse is an error; whatever fw cannot express is unsupported, with the
//! reason and what to do instead.

use std::net::{IpAddr, Ipv4Addr};

use fw_common::{conntrack::tcp_flags as tf, ipproto, policy::RejectWith};
use ipnet::IpNet;

use super::{
    Diags, SKIP_HINT,
    matches::{
        self, ALL_STATES, Addr, Bits, ESTABLISHED, INVALID, Match, NEW, RELATED, RateLimit,
        bits_not, bits_where,
    },
    syntax::shorten,
};
use crate::{iptables::IpFamily, policy::icmp};

/// Where a rule is, for its messages.
pub(super) struct Context<'a> {
    pub file: &'a str,
    pub family: IpFamily,
    /// The filter table's chains, for jumps.
    pub chains: &'a [String],
    pub line: usize,
    pub text: &'a str,
}

/// A terminal verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Accept,
    Drop,
    Reject(RejectWith),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Verdict(Verdict),
    /// `-j LOG` (or NFLOG): log, go on.
    Log,
    Return,
    Jump(String),
    /// No `-j`: the rule only counts packets.
    Nothing,
}

/// How a rule logs: `-j LOG`, or a LOG rule folded into the rule after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LogSpec {
    pub prefix: Option<String>,
    /// The LOG rule's line and text (for a folded pair, not the verdict's).
    pub line: usize,
    pub text: String,
    /// What of iptables' LOG options fw does not keep.
    pub dropped: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) struct Rule {
    pub line: usize,
    pub text: String,
    /// Disjoint alternatives; empty: the rule matches no packet.
    pub alts: Vec<Match>,
    pub target: Target,
    /// From `-m comment --comment`.
    pub name: Option<String>,
    pub log: Option<LogSpec>,
    /// False: unsupported or invalid (reported), so left out.
    pub ok: bool,
}

/// What a rule's options said, before they become a match.
#[derive(Default)]
struct Opts {
    proto: Option<(bool, String)>,
    src: Option<(bool, String)>,
    dst: Option<(bool, String)>,
    in_if: Option<(bool, String)>,
    out_if: Option<(bool, String)>,
    /// Modules loaded with `-m`, lowercase.
    modules: Vec<String>,
    sport: Vec<(bool, String)>,
    dport: Vec<(bool, String)>,
    /// (negated, mask, comp)
    tcp_flags: Vec<(bool, String, String)>,
    syn: Vec<bool>,
    icmp: Vec<(bool, String)>,
    /// (negated, option, list)
    multiport: Vec<(bool, &'static str, String)>,
    state: Vec<(bool, String)>,
    limit: Option<String>,
    burst: Option<String>,
    comment: Option<String>,
    target: Option<String>,
    target_options: Vec<(String, Option<String>)>,
    /// The rule is for the other family only (`-4` in ip6tables, `-6` in
    /// iptables): iptables-restore skips it.
    other_family: bool,
}

/// Problems found in one rule.
#[derive(Default)]
struct Problems {
    unsupported: Vec<String>,
    invalid: Vec<String>,
    warnings: Vec<String>,
}

impl Problems {
    fn unsupported(&mut self, what: &str, why: &str, hint: &str) {
        self.unsupported.push(format!(
            "{what} is not supported: {why} (hint: {hint}; {SKIP_HINT})"
        ));
    }
}

const MATCHES: [&str; 9] = [
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "multiport",
    "state",
    "conntrack",
    "limit",
    "comment",
];

/// Parse the options of the rule at `ctx`, reporting its problems.
pub(super) fn parse(args: &[String], ctx: &Context, diags: &mut Diags) -> Rule {
    let mut p = Problems::default();
    let opts = read_options(args, ctx, &mut p);
    let (alts, target, log) = if p.invalid.is_empty() {
        let alts = build_match(&opts, ctx, &mut p);
        let (target, log) = build_target(&opts, ctx, &alts, &mut p);
        (alts, target, log)
    } else {
        (Vec::new(), Target::Nothing, None)
    };
    for m in &p.invalid {
        diags.error(ctx.file, ctx.line, m.clone());
    }
    for m in &p.unsupported {
        diags.unsupported(ctx.file, ctx.line, ctx.text, m.clone());
    }
    for m in &p.warnings {
        diags.warn(ctx.file, ctx.line, m.clone());
    }
    let ok = p.invalid.is_empty() && p.unsupported.is_empty();
    Rule {
        line: ctx.line,
        text: ctx.text.to_string(),
        alts: if opts.other_family { Vec::new() } else { alts },
        target,
        name: opts.comment,
        log,
        ok,
    }
}

/// Walk the words; each option's value is kept as written.
#[expect(clippy::too_many_lines, reason = "one arm per option iptables has")]
fn read_options(args: &[String], ctx: &Context, p: &mut Problems) -> Opts {
    let mut opts = Opts::default();
    // Options of a module or target fw does not support are skipped with
    // their values; the module itself is reported.
    let mut foreign = false;
    let mut neg = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if arg == "!" {
            if neg {
                p.invalid.push("`!` twice in a row".into());
                return opts;
            }
            neg = true;
            continue;
        }
        let negated = std::mem::take(&mut neg);
        // An option's value; `-s ! ADDR` is iptables' old way to negate.
        let value = |i: &mut usize, negated: &mut bool| -> Option<String> {
            let mut value = args.get(*i)?;
            if value == "!" {
                *negated = true;
                *i += 1;
                value = args.get(*i)?;
            }
            *i += 1;
            Some(value.clone())
        };
        let mut negated = negated;
        let missing = |p: &mut Problems| p.invalid.push(format!("`{arg}` needs a value"));
        macro_rules! take {
            () => {
                match value(&mut i, &mut negated) {
                    Some(value) => value,
                    None => {
                        missing(p);
                        return opts;
                    }
                }
            };
        }
        let once = |slot: &Option<(bool, String)>, p: &mut Problems| {
            if slot.is_some() {
                p.invalid.push(format!(
                    "`{arg}` is given twice (iptables allows it once per rule)"
                ));
            }
        };
        match arg {
            "-p" | "--protocol" => {
                let value = take!();
                once(&opts.proto, p);
                opts.proto = Some((negated, value.to_ascii_lowercase()));
            }
            "-s" | "--source" | "--src" => {
                let value = take!();
                once(&opts.src, p);
                opts.src = Some((negated, value));
            }
            "-d" | "--destination" | "--dst" => {
                let value = take!();
                once(&opts.dst, p);
                opts.dst = Some((negated, value));
            }
            "-i" | "--in-interface" => {
                let value = take!();
                once(&opts.in_if, p);
                opts.in_if = Some((negated, value));
            }
            "-o" | "--out-interface" => {
                let value = take!();
                once(&opts.out_if, p);
                opts.out_if = Some((negated, value));
            }
            "-f" | "--fragment" => p.unsupported(
                "`-f` (later fragments)",
                "fw decides a later fragment by its datagram's first fragment and never shows it to the rules",
                "remove the rule: fw drops fragments whose first fragment was not accepted",
            ),
            "-c" | "--set-counters" => {
                // `-c PACKETS BYTES`; counters do not carry over.
                let first = take!();
                if !first.contains(':') {
                    let _ = take!();
                }
            }
            "-4" | "--ipv4" => opts.other_family |= ctx.family == IpFamily::V6,
            "-6" | "--ipv6" => opts.other_family |= ctx.family == IpFamily::V4,
            "-m" | "--match" => {
                let m = take!().to_ascii_lowercase();
                if negated {
                    p.invalid.push(format!("`! -m {m}`: a module cannot be negated"));
                }
                foreign = !MATCHES.contains(&m.as_str());
                if foreign {
                    unsupported_module(&m, p);
                }
                opts.modules.push(m);
            }
            "-j" | "--jump" => {
                let t = take!();
                if opts.target.is_some() {
                    p.invalid.push("two targets (`-j`) in one rule".into());
                }
                foreign = !matches!(
                    t.as_str(),
                    "ACCEPT" | "DROP" | "REJECT" | "LOG" | "NFLOG" | "RETURN"
                ) && !ctx.chains.contains(&t);
                opts.target = Some(t);
            }
            "-g" | "--goto" => {
                let t = take!();
                p.unsupported(
                    &format!("`-g {}` (goto)", shorten(&t)),
                    "after a goto, a RETURN of the chain returns past the rule that jumped",
                    "write `-j` if the chain's end is the end of the caller too, and move the caller's later rules",
                );
                opts.target = Some(t);
                foreign = true;
            }
            "--sport" | "--source-port" => {
                let value = take!();
                opts.sport.push((negated, value));
            }
            "--dport" | "--destination-port" => {
                let value = take!();
                opts.dport.push((negated, value));
            }
            "--tcp-flags" => {
                let mask = take!();
                let comp = take!();
                opts.tcp_flags.push((negated, mask, comp));
            }
            "--syn" => opts.syn.push(negated),
            "--tcp-option" => {
                let _ = take!();
                p.unsupported(
                    "`--tcp-option`",
                    "fw does not read TCP options",
                    "remove the match",
                );
            }
            "--icmp-type" | "--icmpv6-type" => {
                let value = take!();
                let v6 = arg == "--icmpv6-type";
                if v6 != (ctx.family == IpFamily::V6) {
                    p.invalid.push(format!(
                        "`{arg}` in an {} ruleset (hint: iptables has `--icmp-type`, ip6tables `--icmpv6-type`)",
                        if ctx.family == IpFamily::V6 { "IPv6" } else { "IPv4" }
                    ));
                    return opts;
                }
                opts.icmp.push((negated, value));
            }
            "--dports" | "--destination-ports" | "--sports" | "--source-ports" | "--ports" => {
                let value = take!();
                let kind = match arg {
                    "--dports" | "--destination-ports" => "dports",
                    "--sports" | "--source-ports" => "sports",
                    _ => "ports",
                };
                opts.multiport.push((negated, kind, value));
            }
            "--state" | "--ctstate" => {
                let value = take!();
                opts.state.push((negated, value));
            }
            "--ctproto" | "--ctorigsrc" | "--ctorigdst" | "--ctreplsrc" | "--ctrepldst"
            | "--ctorigsrcport" | "--ctorigdstport" | "--ctreplsrcport" | "--ctrepldstport"
            | "--ctstatus" | "--ctexpire" | "--ctdir" => {
                let _ = take!();
                p.unsupported(
                    &format!("`-m conntrack {arg}`"),
                    "fw's rules match the connection state only",
                    "keep `--ctstate` and match addresses and ports with `-s`, `-d`, `--sport`, `--dport`",
                );
            }
            "--limit" => {
                let value = take!();
                opts.limit = Some(value);
            }
            "--limit-burst" => {
                let value = take!();
                opts.burst = Some(value);
            }
            "--comment" => {
                let value = take!();
                opts.comment = Some(value);
            }
            "--reject-with" | "--log-prefix" | "--log-level" | "--nflog-group"
            | "--nflog-prefix" | "--nflog-range" | "--nflog-size" | "--nflog-threshold" => {
                let value = take!();
                opts.target_options.push((arg.to_string(), Some(value)));
            }
            "--log-tcp-sequence" | "--log-tcp-options" | "--log-ip-options" | "--log-uid"
            | "--log-macdecode" => opts.target_options.push((arg.to_string(), None)),
            _ if foreign && arg.starts_with('-') => {
                // A value-less flag or an option with its values: skip the
                // words up to the next option.
                while i < args.len() && !args[i].starts_with('-') && args[i] != "!" {
                    i += 1;
                }
            }
            _ if arg.starts_with('-') => {
                p.invalid.push(format!(
                    "unknown option `{}` (hint: is a `-m MODULE` missing before it?)",
                    shorten(arg)
                ));
                return opts;
            }
            _ => {
                p.invalid.push(format!(
                    "`{}` is not an option (hint: quote values with spaces, e.g. --comment \"two words\")",
                    shorten(arg)
                ));
                return opts;
            }
        }
    }
    if neg {
        p.invalid
            .push("`!` at the end of the rule negates nothing".into());
    }
    opts
}

fn unsupported_module(m: &str, p: &mut Problems) {
    let what = format!("`-m {}`", shorten(m));
    let (why, hint) = match m {
        "owner" => (
            "fw judges packets at the network interface, where the process that sent them is not known",
            "remove the rule, or allow the traffic by port and address",
        ),
        "string" => (
            "fw does not look into payloads",
            "filter the content in the application or a proxy",
        ),
        "recent" => (
            "fw keeps no lists of addresses seen recently",
            "rate-limit new connections with `-m limit`, or use fail2ban with a fw set",
        ),
        "hashlimit" => (
            "fw's `limit` is one rate for the rule, not one per address or port",
            "use `-m limit` for one shared rate",
        ),
        "set" => (
            "an ipset lives in the kernel, not in the saved ruleset",
            "list the set's members (`ipset save`) in a fw [sets] entry and match it with src = \"@name\"",
        ),
        "mac" => (
            "fw does not match Ethernet addresses",
            "match the host's IP address instead",
        ),
        "physdev" => (
            "fw does not see bridge ports",
            "guard the bridge's member interfaces by name",
        ),
        "iprange" => (
            "fw matches prefixes, not arbitrary ranges",
            "write the range as prefixes in `-s`/`-d` (e.g. 192.0.2.0/25)",
        ),
        "connlimit" => (
            "fw does not count connections per address",
            "remove the match",
        ),
        "mark" | "connmark" => (
            "fw has no packet or connection marks",
            "match the traffic by address, port or interface",
        ),
        "tos" | "dscp" | "ecn" => (
            "fw does not match the TOS/DSCP/ECN bits",
            "remove the match",
        ),
        "ttl" | "hl" | "length" | "pkttype" | "addrtype" | "u32" | "bpf" | "time" => (
            "fw has no such match",
            "remove the match, or match by address and port",
        ),
        _ => (
            "fw has no match like this iptables module",
            "remove the match, or express it with addresses, ports, interfaces and states",
        ),
    };
    p.unsupported(&what, why, hint);
}

fn unsupported_target(t: &str, p: &mut Problems) -> bool {
    let what = format!("`-j {t}`");
    let (why, hint) = match t {
        "ULOG" => (
            "ULOG is gone from current kernels",
            "use `-j LOG` (fw's action = \"log\")",
        ),
        "QUEUE" | "NFQUEUE" => (
            "fw cannot hand packets to a program in userspace",
            "remove the rule",
        ),
        "MARK" | "CONNMARK" | "CT" | "NOTRACK" | "TCPMSS" | "TOS" | "DSCP" | "TTL" | "HL"
        | "CLASSIFY" | "SET" | "CHECKSUM" | "TEE" | "SECMARK" | "CONNSECMARK" | "IDLETIMER"
        | "LED" | "AUDIT" | "TRACE" | "SYNPROXY" | "ECN" | "HMARK" | "TPROXY" => (
            "fw decides, it does not mark, rewrite or copy packets",
            "keep this rule in iptables or nftables, or remove it",
        ),
        "MASQUERADE" | "SNAT" | "DNAT" | "REDIRECT" | "NETMAP" => (
            "fw does not translate addresses",
            "keep NAT in iptables or nftables",
        ),
        _ => return false,
    };
    p.unsupported(&what, why, hint);
    true
}

/// The match of a rule: disjoint alternatives (more than one only for
/// `--ports`).
#[expect(clippy::too_many_lines, reason = "one step per kind of match")]
fn build_match(opts: &Opts, ctx: &Context, p: &mut Problems) -> Vec<Match> {
    let v6 = ctx.family == IpFamily::V6;
    let mut base = Match::ANY;
    // Nothing matches: the rule is dead (e.g. `! -s 0.0.0.0/0`).
    let mut never = false;

    // Protocol, and the modules it brings.
    let mut implicit: Vec<&str> = Vec::new();
    let reported_before = p.unsupported.len();
    if let Some((neg, name)) = &opts.proto {
        // iptables reads protocol 0 as "all".
        let number = if name == "0" {
            Some(None)
        } else {
            icmp::proto_number(name)
        };
        match number {
            None => p.unsupported(
                &format!("protocol `{}`", shorten(name)),
                "fw does not know this protocol name",
                "write the protocol's number, e.g. `-p 47` for gre",
            ),
            Some(None) if *neg => never = true,
            Some(None) => {}
            Some(Some(_)) if *neg => p.unsupported(
                &format!("`! -p {name}`"),
                "fw's `proto` cannot be negated",
                "list the protocols you mean in rules of their own",
            ),
            Some(Some(n)) => {
                base.proto = Some(n);
                implicit.push(match n {
                    ipproto::TCP => "tcp",
                    ipproto::UDP => "udp",
                    ipproto::ICMP => "icmp",
                    ipproto::ICMPV6 => "icmp6",
                    _ => "",
                });
                let other = if v6 { ipproto::ICMP } else { ipproto::ICMPV6 };
                if n == other {
                    never = true;
                    p.warnings.push(format!(
                        "`-p {name}` in an {} ruleset matches no packet, so the rule is left out (hint: {})",
                        if v6 { "IPv6" } else { "IPv4" },
                        if v6 { "ip6tables writes ICMPv6 as `-p ipv6-icmp`" } else { "ICMPv6 belongs in the ip6tables ruleset" }
                    ));
                }
            }
        }
    }
    let has = |module: &str| implicit.contains(&module) || opts.modules.iter().any(|x| x == module);
    for explicit in &opts.modules {
        let needs = match explicit.as_str() {
            "tcp" => Some(ipproto::TCP),
            "udp" => Some(ipproto::UDP),
            "icmp" => Some(ipproto::ICMP),
            "icmp6" => Some(ipproto::ICMPV6),
            _ => None,
        };
        if let Some(n) = needs
            && base.proto != Some(n)
            && p.unsupported.len() == reported_before
        {
            p.invalid.push(format!(
                "`-m {explicit}` needs `-p {}` in the same rule",
                icmp::proto_name(n)
            ));
        }
    }

    // Addresses.
    for (slot, opt, which) in [(&opts.src, "-s", 0), (&opts.dst, "-d", 1)] {
        let Some((neg, text)) = slot else { continue };
        match parse_nets(text, v6) {
            Err(Bad::Invalid(msg)) => p.invalid.push(format!("`{opt} {}`: {msg}", shorten(text))),
            Err(Bad::Unsupported(msg)) => p.unsupported(
                &format!("`{opt} {}`", shorten(text)),
                &msg,
                "write the addresses: iptables looks names up once, when it loads the rules",
            ),
            Ok(nets) => {
                if *neg && nets.len() > 1 {
                    p.invalid.push(format!(
                        "`! {opt}` with several addresses (iptables allows one when negated)"
                    ));
                }
                let everything = nets.iter().any(matches::is_everything);
                let addr = match (neg, everything) {
                    (false, true) => Addr::Any,
                    (true, true) => {
                        never = true;
                        Addr::Any
                    }
                    (false, false) => Addr::In(matches::nets_union(&nets)),
                    (true, false) => Addr::NotIn(nets),
                };
                if which == 0 {
                    base.src = addr;
                } else {
                    base.dst = addr;
                }
            }
        }
    }

    // Interfaces.
    for (slot, opt, which) in [(&opts.in_if, "-i", 0), (&opts.out_if, "-o", 1)] {
        let Some((neg, name)) = slot else { continue };
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', ' ', '\0'])
            || name.chars().any(char::is_control)
        {
            p.invalid.push(format!(
                "`{opt} {}` is not an interface name",
                shorten(name)
            ));
            continue;
        }
        if name.ends_with('+') {
            p.unsupported(
                &format!("`{opt} {name}` (an interface wildcard)"),
                "fw's `iface` names interfaces one by one",
                "list the interfaces in rules of their own",
            );
            continue;
        }
        match (neg, name.as_str()) {
            // fw never sees loopback traffic: "not lo" is every packet.
            (true, "lo") => {}
            (true, _) => p.unsupported(
                &format!("`! {opt} {name}`"),
                "fw's `iface` cannot be negated",
                "name the interfaces the rule is for (`-i eth1`), in rules of their own",
            ),
            (false, _) => {
                if which == 0 {
                    base.in_if = Some(name.clone());
                } else {
                    base.out_if = Some(name.clone());
                }
            }
        }
    }

    // A protocol fw cannot take is reported once: the matches that need
    // it are not errors on top.
    let proto_reported = p.unsupported.len() > reported_before;
    let proto_number = base.proto.unwrap_or(0);
    let other_ports = matches!(proto_number, 33 | 132 | 136);
    let needs_proto = |p: &mut Problems, msg: String| {
        if other_ports {
            p.unsupported(
                &format!("ports of protocol {proto_number}"),
                "fw imports the ports of TCP and UDP only",
                "remove the port match, or the rule",
            );
        } else if !proto_reported {
            p.invalid.push(msg);
        }
    };

    // tcp/udp ports.
    let ports_ok = matches!(base.proto, Some(ipproto::TCP | ipproto::UDP));
    for (list, opt) in [(&opts.sport, "--sport"), (&opts.dport, "--dport")] {
        for (neg, text) in list {
            if !ports_ok || !(has("tcp") || has("udp")) {
                needs_proto(
                    p,
                    format!("`{opt}` needs `-p tcp` or `-p udp` in the same rule"),
                );
                continue;
            }
            match parse_port_range(text) {
                Err(msg) => p.invalid.push(format!("`{opt} {}`: {msg}", shorten(text))),
                Ok(range) => {
                    let set = if *neg {
                        matches::ports_not(&vec![range])
                    } else {
                        matches::ports_normalize(vec![range])
                    };
                    let (slot, name) = if opt == "--sport" {
                        (&mut base.sport, "sport")
                    } else {
                        (&mut base.dport, "dport")
                    };
                    narrow_ports(slot, set, &mut never, name);
                }
            }
        }
    }

    // TCP flags, as the set of flag bytes they let through.
    let mut flags: Option<Bits> = None;
    let mut add_flags = |b: Bits| {
        flags = Some(flags.map_or(b, |f| matches::bits_and(&f, &b)));
    };
    for (neg, mask, comp) in &opts.tcp_flags {
        if base.proto != Some(ipproto::TCP) {
            needs_proto(p, "`--tcp-flags` needs `-p tcp`".into());
            continue;
        }
        match (flag_list(mask), flag_list(comp)) {
            (Ok(mask), Ok(comp)) => {
                let b = bits_where(|f| f & mask == comp & mask);
                add_flags(if *neg { bits_not(&b) } else { b });
            }
            (Err(bad), _) | (_, Err(bad)) => p.invalid.push(format!(
                "unknown TCP flag `{}` in `--tcp-flags`",
                shorten(&bad)
            )),
        }
    }
    for neg in &opts.syn {
        if base.proto != Some(ipproto::TCP) {
            needs_proto(p, "`--syn` needs `-p tcp`".into());
            continue;
        }
        let syn = bits_where(|f| f & (tf::SYN | tf::RST | tf::ACK | tf::FIN) == tf::SYN);
        add_flags(if *neg { bits_not(&syn) } else { syn });
    }
    if let Some(f) = flags {
        if matches::bits_empty(&f) {
            never = true;
        } else if f != matches::ALL {
            base.tcp_flags = Some(f);
        }
    }

    // ICMP types.
    for (neg, text) in &opts.icmp {
        let need = if v6 { ipproto::ICMPV6 } else { ipproto::ICMP };
        if base.proto != Some(need) || !has(if v6 { "icmp6" } else { "icmp" }) {
            needs_proto(
                p,
                format!(
                    "`{}` needs `-p {}`",
                    if v6 { "--icmpv6-type" } else { "--icmp-type" },
                    if v6 { "ipv6-icmp" } else { "icmp" }
                ),
            );
            continue;
        }
        match icmp_type(text, v6) {
            Err(Bad::Invalid(msg)) => p.invalid.push(msg),
            Err(Bad::Unsupported(msg)) => p.unsupported(
                &format!("ICMP type `{}`", shorten(text)),
                &msg,
                "match the whole type (e.g. `destination-unreachable`)",
            ),
            Ok(None) => never |= *neg,
            Ok(Some(t)) => {
                let b = bits_where(|x| x == t);
                let b = if *neg { bits_not(&b) } else { b };
                base.icmp_type = Some(base.icmp_type.map_or(b, |x| matches::bits_and(&x, &b)));
                if base.icmp_type.is_some_and(|x| matches::bits_empty(&x)) {
                    never = true;
                }
            }
        }
    }

    // Connection state.
    for (neg, text) in &opts.state {
        if !has("state") && !has("conntrack") {
            p.invalid
                .push("`--state` needs `-m state` (`--ctstate`: `-m conntrack`)".into());
            continue;
        }
        match states(text) {
            Err(Bad::Invalid(msg)) => p.invalid.push(msg),
            Err(Bad::Unsupported(msg)) => p.unsupported(
                &format!("state `{}`", shorten(text)),
                &msg,
                "match NEW, ESTABLISHED, RELATED or INVALID",
            ),
            Ok(s) => {
                let s = if *neg { ALL_STATES & !s } else { s };
                let s = base.state.map_or(s, |x| x & s);
                if s == 0 {
                    never = true;
                } else {
                    base.state = Some(s);
                }
            }
        }
    }

    // Rate limit.
    if opts.limit.is_some() || opts.burst.is_some() {
        if has("limit") {
            match rate_limit(opts.limit.as_deref(), opts.burst.as_deref(), ctx.line) {
                Ok(l) => base.limit = Some(l),
                Err(msg) => p.invalid.push(msg),
            }
        } else {
            p.invalid.push("`--limit` needs `-m limit`".into());
        }
    }
    if opts.comment.is_some() && !has("comment") {
        p.invalid.push("`--comment` needs `-m comment`".into());
    }

    // multiport: a conjunction, except `--ports` (source or destination).
    let mut alts = vec![base];
    for (neg, kind, text) in &opts.multiport {
        if !has("multiport") {
            p.invalid.push(format!("`--{kind}` needs `-m multiport`"));
            continue;
        }
        if !ports_ok {
            needs_proto(p, "`-m multiport` needs `-p tcp` or `-p udp`".into());
            continue;
        }
        let set = match parse_port_list(text) {
            Ok(set) => set,
            Err(msg) => {
                p.invalid
                    .push(format!("`--{kind} {}`: {msg}", shorten(text)));
                continue;
            }
        };
        let Some(set) = set else {
            // Every port: no condition, or (negated) nothing.
            never |= *neg;
            continue;
        };
        let not_set = matches::ports_not(&set);
        let mut next = Vec::new();
        for a in alts {
            let mut with = |sport: Option<Option<Ports>>, dport: Option<Option<Ports>>| {
                let mut b = a.clone();
                let mut dead = false;
                if let Some(s) = sport {
                    narrow_ports(&mut b.sport, s, &mut dead, "sport");
                }
                if let Some(d) = dport {
                    narrow_ports(&mut b.dport, d, &mut dead, "dport");
                }
                if !dead {
                    next.push(b);
                }
            };
            match (kind, neg) {
                (&"dports", false) => with(None, Some(Some(set.clone()))),
                (&"dports", true) => with(None, Some(not_set.clone())),
                (&"sports", false) => with(Some(Some(set.clone())), None),
                (&"sports", true) => with(Some(not_set.clone()), None),
                // Either port in the set: the destination, or else the source.
                (_, false) => {
                    with(None, Some(Some(set.clone())));
                    with(Some(Some(set.clone())), Some(not_set.clone()));
                }
                (_, true) => with(Some(not_set.clone()), Some(not_set.clone())),
            }
        }
        alts = next;
    }
    if never { Vec::new() } else { alts }
}

type Ports = matches::Ports;

/// AND a port set into a slot: `set` `None` means "no port" (the rule
/// cannot match).
fn narrow_ports(slot: &mut Option<Ports>, set: Option<Ports>, never: &mut bool, _name: &str) {
    let Some(set) = set else {
        *never = true;
        return;
    };
    let probe = Match {
        dport: Some(set),
        ..Match::ANY
    };
    let current = Match {
        dport: slot.clone(),
        ..Match::ANY
    };
    match matches::conj(&current, &probe) {
        Ok(Some(x)) => *slot = x.dport,
        _ => *never = true,
    }
}

/// The target and, for LOG, how it logs.
#[expect(clippy::too_many_lines, reason = "one arm per target iptables has")]
fn build_target(
    opts: &Opts,
    ctx: &Context,
    alts: &[Match],
    p: &mut Problems,
) -> (Target, Option<LogSpec>) {
    let v6 = ctx.family == IpFamily::V6;
    let target_name = opts.target.clone().unwrap_or_default();
    let allowed: &[&str] = match target_name.as_str() {
        "REJECT" => &["--reject-with"],
        "LOG" => &[
            "--log-prefix",
            "--log-level",
            "--log-tcp-sequence",
            "--log-tcp-options",
            "--log-ip-options",
            "--log-uid",
            "--log-macdecode",
        ],
        "NFLOG" => &[
            "--nflog-group",
            "--nflog-prefix",
            "--nflog-range",
            "--nflog-size",
            "--nflog-threshold",
        ],
        _ => &[],
    };
    for (opt, _) in &opts.target_options {
        if !allowed.contains(&opt.as_str()) {
            p.invalid.push(format!(
                "`{opt}` belongs to another target than `-j {}`",
                shorten(if target_name.is_empty() {
                    "(none)"
                } else {
                    &target_name
                })
            ));
        }
    }
    let opt = |name: &str| {
        opts.target_options
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    let target = match target_name.as_str() {
        "" => Target::Nothing,
        "ACCEPT" => Target::Verdict(Verdict::Accept),
        "DROP" => Target::Verdict(Verdict::Drop),
        "RETURN" => Target::Return,
        "REJECT" => {
            let with = match opt("--reject-with") {
                None => RejectWith::PortUnreachable,
                Some(w) => match reject_with(&w, v6) {
                    Ok(with) => with,
                    Err(Bad::Invalid(msg)) => {
                        p.invalid.push(msg);
                        RejectWith::PortUnreachable
                    }
                    Err(Bad::Unsupported(msg)) => {
                        p.unsupported(
                            &format!("`--reject-with {}`", shorten(&w)),
                            &msg,
                            "reject with icmp-admin-prohibited (icmp6-adm-prohibited) or icmp-port-unreachable",
                        );
                        RejectWith::PortUnreachable
                    }
                },
            };
            if let Some(w) = opt("--reject-with")
                && matches!(
                    w.as_str(),
                    "icmp-net-prohibited" | "net-prohib" | "icmp-host-prohibited" | "host-prohib"
                )
            {
                p.warnings.push(format!(
                    "`--reject-with {w}` is imported as icmp-admin-prohibited: fw answers with ICMP code 13 (communication administratively prohibited), not code {}; both tell the client it is filtered",
                    if w.contains("net") { 9 } else { 10 }
                ));
            }
            if with == RejectWith::TcpReset && alts.iter().any(|a| a.proto != Some(ipproto::TCP)) {
                p.invalid
                    .push("`--reject-with tcp-reset` needs `-p tcp` in the same rule".into());
            }
            Target::Verdict(Verdict::Reject(with))
        }
        "LOG" | "NFLOG" => {
            let prefix = opt(if target_name == "LOG" {
                "--log-prefix"
            } else {
                "--nflog-prefix"
            });
            if let Some(pre) = &prefix
                && (pre.len() >= fw_common::events::RULE_PREFIX_BYTES
                    || pre.chars().any(char::is_control))
            {
                p.unsupported(
                    &format!("the log prefix \"{}\"", shorten(pre).escape_debug()),
                    &format!(
                        "fw keeps at most {} bytes of printable text",
                        fw_common::events::RULE_PREFIX_BYTES - 1
                    ),
                    "shorten it",
                );
            }
            let mut dropped = Vec::new();
            for (name, value) in &opts.target_options {
                if !matches!(name.as_str(), "--log-prefix" | "--nflog-prefix") {
                    dropped.push(match value {
                        Some(v) => format!("{name} {v}"),
                        None => name.clone(),
                    });
                }
            }
            if target_name == "NFLOG" {
                p.warnings.push(format!(
                    "`-j NFLOG` is imported as action = \"log\": fw reports the packet as one of its own events (`fw-user events`), not to netlink group {}",
                    opt("--nflog-group").unwrap_or_else(|| "0".into())
                ));
            }
            return (
                Target::Log,
                Some(LogSpec {
                    prefix,
                    line: ctx.line,
                    text: ctx.text.to_string(),
                    dropped,
                }),
            );
        }
        other if ctx.chains.iter().any(|c| c == other) => {
            if super::syntax::BUILTIN.contains(&other) {
                p.invalid.push(format!(
                    "`-j {other}`: iptables does not jump to a builtin chain"
                ));
            }
            Target::Jump(other.to_string())
        }
        other => {
            // Neither a chain nor a target fw knows: iptables-restore
            // refuses the file too.
            if !unsupported_target(other, p) {
                p.invalid.push(format!(
                    "`-j {}`: no chain of that name in the filter table, and not a target iptables has (hint: declare the chain with `:{} - [0:0]`)",
                    shorten(other),
                    shorten(other)
                ));
            }
            Target::Nothing
        }
    };
    (target, None)
}

/// Fold "LOG, then a verdict with the same match" into one rule that logs:
/// exactly what fw's `log = true` means.
pub(super) fn fold_log_pairs(rules: &mut Vec<Rule>) {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules.drain(..) {
        if let Some(prev) = out.last()
            && prev.ok
            && r.ok
            && prev.target == Target::Log
            && matches!(r.target, Target::Verdict(_))
            && r.log.is_none()
            && prev.alts == r.alts
            && prev.alts.iter().all(|a| a.limit.is_none())
        {
            let log_rule = out.pop().unwrap_or_else(|| unreachable!());
            out.push(Rule {
                name: r.name.or(log_rule.name),
                log: log_rule.log,
                ..r
            });
            continue;
        }
        out.push(r);
    }
    *rules = out;
}

// ---- values ----

enum Bad {
    Invalid(String),
    Unsupported(String),
}

/// `-s`/`-d`: addresses and prefixes, comma-separated.
fn parse_nets(text: &str, v6: bool) -> Result<Vec<IpNet>, Bad> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (addr, mask) = match item.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (item, None),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            if !addr.is_empty()
                && addr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && addr.chars().any(|c| c.is_ascii_alphabetic())
            {
                return Err(Bad::Unsupported(format!(
                    "`{}` is a host name",
                    shorten(addr)
                )));
            }
            return Err(Bad::Invalid(format!(
                "`{}` is not an address",
                shorten(addr)
            )));
        };
        if ip.is_ipv6() != v6 {
            return Err(Bad::Invalid(format!(
                "`{ip}` is an {} address in an {} ruleset",
                if ip.is_ipv6() { "IPv6" } else { "IPv4" },
                if v6 { "IPv6" } else { "IPv4" }
            )));
        }
        let max = if v6 { 128 } else { 32 };
        let len = match mask {
            None => max,
            Some(m) => {
                if let Ok(n) = m.parse::<u8>() {
                    if n > max {
                        return Err(Bad::Invalid(format!("prefix length /{n} is too long")));
                    }
                    n
                } else if let (false, Ok(dotted)) = (v6, m.parse::<Ipv4Addr>()) {
                    let bits = u32::from(dotted);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return Err(Bad::Unsupported(format!(
                            "the netmask {m} is not contiguous"
                        )));
                    }
                    u8::try_from(bits.leading_ones()).unwrap_or(32)
                } else {
                    return Err(Bad::Invalid(format!(
                        "`/{}` is not a prefix length",
                        shorten(m)
                    )));
                }
            }
        };
        let net = IpNet::new(ip, len)
            .map_err(|_| Bad::Invalid(format!("`/{len}` is not a prefix length")))?;
        out.push(net.trunc());
    }
    Ok(out)
}

/// A port number or a well-known service name.
fn parse_port(s: &str) -> Result<u16, String> {
    const SERVICES: [(&str, u16); 34] = [
        ("ftp-data", 20),
        ("ftp", 21),
        ("ssh", 22),
        ("telnet", 23),
        ("smtp", 25),
        ("domain", 53),
        ("bootps", 67),
        ("bootpc", 68),
        ("tftp", 69),
        ("http", 80),
        ("www", 80),
        ("pop3", 110),
        ("sunrpc", 111),
        ("auth", 113),
        ("ntp", 123),
        ("imap", 143),
        ("imap2", 143),
        ("snmp", 161),
        ("ldap", 389),
        ("https", 443),
        ("microsoft-ds", 445),
        ("submissions", 465),
        ("smtps", 465),
        ("syslog", 514),
        ("submission", 587),
        ("ldaps", 636),
        ("rsync", 873),
        ("imaps", 993),
        ("pop3s", 995),
        ("openvpn", 1194),
        ("nfs", 2049),
        ("mysql", 3306),
        ("postgresql", 5432),
        ("http-alt", 8080),
    ];
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return u16::try_from(n).map_err(|_| format!("port {n} is out of range (0-65535)"));
    }
    SERVICES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            format!(
                "`{}` is not a port number (hint: write the number; fw knows only common service names)",
                shorten(s)
            )
        })
}

/// `P`, `A:B`, `A:` or `:B`.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = match s.split_once(':') {
        None => {
            let p = parse_port(s)?;
            return Ok((p, p));
        }
        Some((a, b)) => (
            if a.is_empty() { 0 } else { parse_port(a)? },
            if b.is_empty() {
                u16::MAX
            } else {
                parse_port(b)?
            },
        ),
    };
    if a > b {
        return Err(format!(
            "the range {a}:{b} is reversed (hint: write the lower port first)"
        ));
    }
    Ok((a, b))
}

/// A multiport list; `None`: every port.
fn parse_port_list(s: &str) -> Result<Option<Ports>, String> {
    let mut v = Vec::new();
    for item in s.split(',') {
        v.push(parse_port_range(item)?);
    }
    Ok(matches::ports_normalize(v))
}

/// `--tcp-flags` words: `SYN,ACK`, `ALL`, `NONE`.
fn flag_list(s: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for w in s.split(',') {
        bits |= match w.trim().to_ascii_uppercase().as_str() {
            "FIN" => tf::FIN,
            "SYN" => tf::SYN,
            "RST" => tf::RST,
            "PSH" => tf::PSH,
            "ACK" => tf::ACK,
            "URG" => tf::URG,
            "ECE" => tf::ECE,
            "CWR" => tf::CWR,
            // iptables' ALL is the six classic flags.
            "ALL" => tf::FIN | tf::SYN | tf::RST | tf::PSH | tf::ACK | tf::URG,
            "NONE" => 0,
            _ => return Err(w.to_string()),
        };
    }
    Ok(bits)
}

/// `--state`/`--ctstate` list.
fn states(s: &str) -> Result<u8, Bad> {
    let mut bits = 0;
    for w in s.split(',') {
        bits |= match w.trim().to_ascii_uppercase().as_str() {
            "NEW" => NEW,
            "ESTABLISHED" => ESTABLISHED,
            "RELATED" => RELATED,
            "INVALID" => INVALID,
            "UNTRACKED" => {
                return Err(Bad::Unsupported(
                    "fw tracks every connection, so no packet is UNTRACKED".into(),
                ));
            }
            "SNAT" | "DNAT" => {
                return Err(Bad::Unsupported("fw does not translate addresses".into()));
            }
            other => {
                return Err(Bad::Invalid(format!(
                    "unknown state `{}` (hint: NEW, ESTABLISHED, RELATED, INVALID)",
                    shorten(other)
                )));
            }
        };
    }
    Ok(bits)
}

/// iptables' ICMP type names: (name, type, code if the name means one).
const ICMP4_NAMES: [(&str, u8, Option<u8>); 39] = [
    ("echo-reply", 0, None),
    ("pong", 0, None),
    ("destination-unreachable", 3, None),
    ("network-unreachable", 3, Some(0)),
    ("host-unreachable", 3, Some(1)),
    ("protocol-unreachable", 3, Some(2)),
    ("port-unreachable", 3, Some(3)),
    ("fragmentation-needed", 3, Some(4)),
    ("source-route-failed", 3, Some(5)),
    ("network-unknown", 3, Some(6)),
    ("host-unknown", 3, Some(7)),
    ("network-prohibited", 3, Some(9)),
    ("host-prohibited", 3, Some(10)),
    ("tos-network-unreachable", 3, Some(11)),
    ("tos-host-unreachable", 3, Some(12)),
    ("communication-prohibited", 3, Some(13)),
    ("host-precedence-violation", 3, Some(14)),
    ("precedence-cutoff", 3, Some(15)),
    ("source-quench", 4, None),
    ("redirect", 5, None),
    ("network-redirect", 5, Some(0)),
    ("host-redirect", 5, Some(1)),
    ("tos-network-redirect", 5, Some(2)),
    ("tos-host-redirect", 5, Some(3)),
    ("echo-request", 8, None),
    ("ping", 8, None),
    ("router-advertisement", 9, None),
    ("router-solicitation", 10, None),
    ("time-exceeded", 11, None),
    ("ttl-exceeded", 11, None),
    ("ttl-zero-during-transit", 11, Some(0)),
    ("ttl-zero-during-reassembly", 11, Some(1)),
    ("parameter-problem", 12, None),
    ("ip-header-bad", 12, Some(0)),
    ("required-option-missing", 12, Some(1)),
    ("timestamp-request", 13, None),
    ("timestamp-reply", 14, None),
    ("address-mask-request", 17, None),
    ("address-mask-reply", 18, None),
];

/// ip6tables' type names for `ICMPv6`.
const ICMP6_NAMES: [(&str, u8, Option<u8>); 32] = [
    ("destination-unreachable", 1, None),
    ("no-route", 1, Some(0)),
    ("communication-prohibited", 1, Some(1)),
    ("beyond-scope", 1, Some(2)),
    ("address-unreachable", 1, Some(3)),
    ("port-unreachable", 1, Some(4)),
    ("failed-policy", 1, Some(5)),
    ("reject-route", 1, Some(6)),
    ("packet-too-big", 2, None),
    ("time-exceeded", 3, None),
    ("ttl-exceeded", 3, None),
    ("ttl-zero-during-transit", 3, Some(0)),
    ("ttl-zero-during-reassembly", 3, Some(1)),
    ("parameter-problem", 4, None),
    ("bad-header", 4, Some(0)),
    ("unknown-header-type", 4, Some(1)),
    ("unknown-option", 4, Some(2)),
    ("echo-request", 128, None),
    ("ping", 128, None),
    ("echo-reply", 129, None),
    ("pong", 129, None),
    ("mld-listener-query", 130, None),
    ("mld-listener-report", 131, None),
    ("mld-listener-done", 132, None),
    ("mld2-listener-report", 143, None),
    ("router-solicitation", 133, None),
    ("router-advertisement", 134, None),
    ("neighbour-solicitation", 135, None),
    ("neighbor-solicitation", 135, None),
    ("neighbour-advertisement", 136, None),
    ("neighbor-advertisement", 136, None),
    ("redirect", 137, None),
];

/// `--icmp-type`/`--icmpv6-type`: `None` for "any".
fn icmp_type(s: &str, v6: bool) -> Result<Option<u8>, Bad> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    let code_unsupported = |code: &str| {
        Bad::Unsupported(format!(
            "fw matches ICMP types, not codes (this is code {code})"
        ))
    };
    if let Some((t, c)) = s.split_once('/') {
        let (Ok(t), Ok(_)) = (t.parse::<u8>(), c.parse::<u8>()) else {
            return Err(Bad::Invalid(format!(
                "`{}` is not an ICMP type/code",
                shorten(s)
            )));
        };
        if c.parse::<u8>().ok() == Some(u8::MAX) {
            return Ok(Some(t));
        }
        return Err(code_unsupported(c));
    }
    if let Ok(t) = s.parse::<u8>() {
        return Ok(Some(t));
    }
    let table: &[(&str, u8, Option<u8>)] = if v6 { &ICMP6_NAMES } else { &ICMP4_NAMES };
    match table.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(s)) {
        Some((_, t, None)) => Ok(Some(*t)),
        Some((_, _, Some(code))) => Err(code_unsupported(&code.to_string())),
        None => Err(Bad::Invalid(format!(
            "unknown {} type `{}` (hint: a number 0-255 or a name like echo-request)",
            if v6 { "ICMPv6" } else { "ICMP" },
            shorten(s)
        ))),
    }
}

/// `--limit N/unit` and `--limit-burst N` (iptables' defaults: 3/hour, 5).
fn rate_limit(limit: Option<&str>, burst: Option<&str>, line: usize) -> Result<RateLimit, String> {
    let text = limit.unwrap_or("3/hour");
    let (n, unit) = text.split_once('/').unwrap_or((text, "second"));
    let count: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`--limit {}` needs a positive count", shorten(text)))?;
    let u = unit.trim().to_ascii_lowercase();
    let (unit, secs) = [
        ("second", 1u64),
        ("minute", 60),
        ("hour", 3600),
        ("day", 86_400),
    ]
    .into_iter()
    .find(|(name, _)| !u.is_empty() && name.starts_with(&u))
    .ok_or_else(|| {
        format!(
            "`--limit {}` has an unknown unit (hint: /second, /minute, /hour or /day)",
            shorten(text)
        )
    })?;
    if u64::from(count) > 10_000 * secs {
        return Err(format!(
            "`--limit {}` is faster than iptables allows (10000/second)",
            shorten(text)
        ));
    }
    let burst = match burst {
        None => 5,
        Some(b) => b
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|b| (1..=10_000).contains(b))
            .ok_or_else(|| format!("`--limit-burst {}` must be 1 to 10000", shorten(b)))?,
    };
    Ok(RateLimit {
        count,
        unit,
        burst,
        origin: line,
    })
}

/// `--reject-with` → fw's answer.
fn reject_with(w: &str, v6: bool) -> Result<RejectWith, Bad> {
    let with = match (w, v6) {
        ("tcp-reset", _) => RejectWith::TcpReset,
        ("icmp-port-unreachable" | "port-unreach", false)
        | ("icmp6-port-unreachable" | "port-unreach", true) => RejectWith::PortUnreachable,
        ("icmp-proto-unreachable" | "proto-unreach", false) => RejectWith::ProtoUnreachable,
        ("icmp-host-unreachable" | "host-unreach", false)
        | ("icmp6-addr-unreachable" | "addr-unreach", true) => RejectWith::HostUnreachable,
        ("icmp-net-unreachable" | "net-unreach", false) | ("icmp6-no-route" | "no-route", true) => {
            RejectWith::NetUnreachable
        }
        (
            "icmp-admin-prohibited"
            | "admin-prohib"
            | "icmp-net-prohibited"
            | "net-prohib"
            | "icmp-host-prohibited"
            | "host-prohib",
            false,
        )
        | ("icmp6-adm-prohibited" | "adm-prohibited", true) => RejectWith::AdminProhibited,
        ("icmp6-policy-fail" | "policy-fail" | "icmp6-reject-route" | "reject-route", true) => {
            return Err(Bad::Unsupported("fw does not send this ICMPv6 code".into()));
        }
        _ => {
            return Err(Bad::Invalid(format!(
                "`--reject-with {}` is not a reject type of {}",
                shorten(w),
                if v6 { "ip6tables" } else { "iptables" }
            )));
        }
    };
    Ok(with)
}
