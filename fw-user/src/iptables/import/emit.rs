//! The policy text: IPv4 and IPv6 rules merged where they are the same
//! rule, each rule under the lines it came from.

use std::{collections::HashMap, fmt::Write as _};

use fw_common::{
    conntrack::tcp_flags as tf,
    ipproto,
    policy::{MAX_RULES, RejectWith},
};
use ipnet::IpNet;

use super::{
    Diags, SKIP_HINT,
    flatten::{self, Action, FORWARD, FamilyRules, FlatRule, INPUT, OUTPUT},
    matches::{self, ALL, Addr, Bits, ESTABLISHED, INVALID, NEW, Ports, RELATED},
    stages::{Plan, fam_name},
    syntax::Policy,
};
use crate::{
    iptables::IpFamily,
    policy::{Stage, icmp},
};

/// One fw rule as text, before the merge.
#[derive(Clone)]
struct Written {
    comments: Vec<String>,
    /// `key = value` lines, without `family`.
    body: Vec<String>,
    /// A rule with a rate limit is per family in iptables: never merged.
    mergeable: bool,
    /// Written last, spelled for the rule's family.
    reject: Option<RejectWith>,
}

/// Sets made for negated lists of networks (fw negates a set, not a list).
#[derive(Default)]
struct Sets {
    sets: Vec<(String, Vec<IpNet>)>,
}

impl Sets {
    fn name_for(&mut self, nets: &[IpNet]) -> String {
        if let Some((name, _)) = self.sets.iter().find(|(_, n)| n == nets) {
            return name.clone();
        }
        let name = format!("excluded_{}", self.sets.len() + 1);
        self.sets.push((name.clone(), nets.to_vec()));
        name
    }
}

/// Write the policy of `plan`.
#[expect(
    clippy::too_many_lines,
    reason = "the file top to bottom, one section after the other"
)]
pub(super) fn write(plan: &Plan, diags: &mut Diags) -> String {
    let mut sets = Sets::default();
    let mut cubes: HashMap<(Bits, Bits), Vec<(u8, u8)>> = HashMap::new();
    let mut chains: Vec<Vec<(Option<IpFamily>, Written)>> = Vec::new();
    for ch in [INPUT, OUTPUT, FORWARD] {
        let mut per_family: Vec<Vec<Written>> = Vec::new();
        for f in &plan.families {
            let mut list = Vec::new();
            for r in &f.chains[ch] {
                list.extend(render(r, f, &mut sets, &mut cubes, diags));
            }
            per_family.push(list);
        }
        let merged = merge(&per_family[0], &per_family[1]);
        if merged.len() > MAX_RULES {
            let first = plan
                .families
                .iter()
                .find(|f| f.given)
                .unwrap_or(&plan.families[0]);
            diags.error(
                &first.file,
                first.filter_line,
                format!(
                    "the ruleset becomes {} rules in fw's {} chain; fw holds at most {MAX_RULES} per chain (hint: merge rules with lists of ports or addresses, or move addresses into sets)",
                    merged.len(),
                    flatten::chain_name(ch).to_ascii_lowercase()
                ),
            );
        }
        chains.push(merged);
    }

    let mut out = String::new();
    header(plan, diags, &mut out);

    out.push_str("[defaults]\n");
    for (key, ch) in [("input", INPUT), ("output", OUTPUT), ("forward", FORWARD)] {
        let _ = writeln!(
            out,
            "{key} = \"{}\"",
            match plan.defaults[ch] {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            }
        );
    }

    out.push_str("\n[stateful]\n");
    out.push_str("# Each stage keeps fw's own verdict only where every chain gives its packets\n");
    out.push_str("# that verdict before any other rule; otherwise they meet the rules below.\n");
    for reason in &plan.reasons {
        comment(&mut out, reason);
    }
    if !plan.absorbed.is_empty() {
        out.push_str("# The stages stand for these rules:\n");
        let mut seen: Vec<String> = Vec::new();
        for (file, o) in &plan.absorbed {
            let line = format!("  {file}:{}: {}", o.line, o.text);
            if o.line != 0 && !seen.contains(&line) {
                comment(&mut out, &line);
                seen.push(line);
            }
        }
    }
    let stage = |s: Stage| match s {
        Stage::Accept => "accept",
        Stage::Drop => "drop",
        Stage::Rules => "rules",
    };
    let _ = writeln!(out, "established = \"{}\"", stage(plan.established));
    let _ = writeln!(out, "related = \"{}\"", stage(plan.related));
    let _ = writeln!(out, "invalid = \"{}\"", stage(plan.invalid));
    let _ = writeln!(out, "tcp_syn_only = {}", plan.tcp_syn_only);
    let _ = writeln!(
        out,
        "icmpv6_neighbor_discovery = \"{}\"",
        stage(plan.neighbor_discovery)
    );

    if !sets.sets.is_empty() {
        out.push_str(
            "\n# Networks a rule must not match (fw negates a set, not a list).\n[sets]\n",
        );
        for (name, nets) in &sets.sets {
            let items: Vec<String> = nets
                .iter()
                .map(|n| toml_str(&matches::net_text(n)))
                .collect();
            let _ = writeln!(out, "{name} = [{}]", items.join(", "));
        }
    }

    for (ch, rules) in chains.iter().enumerate() {
        let table = flatten::chain_name(ch).to_ascii_lowercase();
        for (family, w) in rules {
            out.push('\n');
            for c in &w.comments {
                comment(&mut out, c);
            }
            let _ = writeln!(out, "[[{table}]]");
            let mut family_written = false;
            for line in &w.body {
                // `family` after `name`, as the reference orders the keys.
                if !family_written && !line.starts_with("name = ") {
                    if let Some(f) = family {
                        let _ = writeln!(out, "family = \"{}\"", f.name());
                    }
                    family_written = true;
                }
                out.push_str(line);
                out.push('\n');
            }
            if let Some(with) = w.reject {
                let _ = writeln!(
                    out,
                    "reject_with = \"{}\"",
                    reject_text(with, *family == Some(IpFamily::V6))
                );
            }
        }
    }
    out
}

fn header(plan: &Plan, diags: &Diags, out: &mut String) {
    let sources: Vec<String> = plan
        .families
        .iter()
        .filter(|f| f.given)
        .map(|f| format!("{} ({})", f.file, fam_name(f.family)))
        .collect();
    comment(
        out,
        &format!(
            "fw policy imported by `fw-user import` from {}.",
            sources.join(" and ")
        ),
    );
    out.push_str(
        "# Only the filter table is translated. Custom chains are inlined where they\n\
         # are jumped to; each rule keeps the lines it comes from as comments.\n",
    );
    for f in plan.families.iter().filter(|f| !f.given) {
        comment(
            out,
            &format!(
                "No {} file was given: {} traffic is accepted, as on a host without such rules.",
                fam_name(f.family),
                fam_name(f.family)
            ),
        );
    }
    if plan
        .families
        .iter()
        .flat_map(|f| f.chains.iter().flatten())
        .any(|r| r.log.is_some())
    {
        out.push_str(
            "# Log events are limited by [log] rate (60/minute, burst 5 by default), where\n\
             # iptables' LOG without `-m limit` logs every packet.\n",
        );
    }
    if !diags.unsupported.is_empty() {
        out.push_str("#\n# Left out as unsupported (--skip-unsupported):\n");
        let mut skipped: Vec<_> = diags.unsupported.iter().zip(&diags.skipped_text).collect();
        skipped.sort_by(|a, b| (&a.0.file, a.0.line).cmp(&(&b.0.file, b.0.line)));
        for (d, text) in skipped {
            comment(out, &format!("  {}:{}: {text}", d.file, d.line));
            let why = d.message.replace(&format!("; {SKIP_HINT}"), "");
            comment(out, &format!("    {why}"));
        }
    }
    if !plan.dead.is_empty() {
        out.push_str(
            "#\n# Left out because no packet reaches them with the TCP flags they match:\n",
        );
        let mut seen: Vec<String> = Vec::new();
        for (file, o) in &plan.dead {
            let line = format!("  {file}:{}: {}", o.line, o.text);
            if o.line != 0 && !seen.contains(&line) {
                comment(out, &line);
                seen.push(line);
            }
        }
    }
    let notes: Vec<(&str, &flatten::Origin, &String)> = plan
        .families
        .iter()
        .flat_map(|f| {
            f.notes
                .iter()
                .map(move |(o, why)| (f.file.as_str(), o, why))
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("#\n# Left out because fw decides their packets before the rules:\n");
        for (file, o, why) in notes {
            comment(out, &format!("  {file}:{}: {} ({why})", o.line, o.text));
        }
    }
    out.push('\n');
}

/// `# text`, with what a TOML comment cannot hold replaced.
fn comment(out: &mut String, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    let _ = writeln!(out, "# {clean}");
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One family's rule as text: several when its TCP flags take several fw
/// rules.
#[expect(clippy::too_many_lines, reason = "one key of the rule after the other")]
fn render(
    rule: &FlatRule,
    fam: &FamilyRules,
    sets: &mut Sets,
    cubes: &mut HashMap<(Bits, Bits), Vec<(u8, u8)>>,
    diags: &mut Diags,
) -> Vec<Written> {
    let v6 = fam.family == IpFamily::V6;
    let mut comments = Vec::new();
    for o in &rule.origins {
        if o.line == 0 {
            comments.push(o.text.clone());
        } else {
            comments.push(format!("{}:{}: {}", fam.file, o.line, o.text));
        }
    }
    for e in &rule.excluded {
        comments.push(format!(
            "  without the packets of {}:{}: {}",
            fam.file, e.line, e.text
        ));
    }
    if let Some(log) = &rule.log
        && !log.dropped.is_empty()
    {
        comments.push(format!(
            "  not kept (fw's events have no such options): {}",
            log.dropped.join(" ")
        ));
    }
    let m = &rule.m;
    let mut body = Vec::new();
    if let Some(name) = &rule.name {
        body.push(format!("name = {}", toml_str(name)));
    }
    if let Some(p) = m.proto {
        body.push(match p {
            ipproto::TCP | ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6 => {
                format!("proto = \"{}\"", icmp::proto_name(p))
            }
            parts => format!("proto = {parts}"),
        });
    }
    for (key, addr) in [("src", &m.src), ("dst", &m.dst)] {
        match addr {
            Addr::Any => {}
            Addr::In(nets) if nets.len() == 1 => {
                body.push(format!(
                    "{key} = {}",
                    toml_str(&matches::net_text(&nets[0]))
                ));
            }
            Addr::In(nets) => {
                let items: Vec<String> = nets
                    .iter()
                    .map(|parts| toml_str(&matches::net_text(parts)))
                    .collect();
                body.push(format!("{key} = [{}]", items.join(", ")));
            }
            Addr::NotIn(nets) if nets.len() == 1 => {
                body.push(format!(
                    "{key} = {}",
                    toml_str(&format!("!{}", matches::net_text(&nets[0])))
                ));
            }
            Addr::NotIn(nets) => {
                let name = sets.name_for(nets);
                body.push(format!("{key} = \"!@{name}\""));
            }
        }
    }
    for (key, ports) in [("sport", &m.sport), ("dport", &m.dport)] {
        let Some(ports) = ports else { continue };
        let (text, lost_zero) = ports_text(ports);
        if lost_zero {
            diags.warn(
                &fam.file,
                rule.line(),
                format!(
                    "fw's ports start at 1, so in fw this rule does not match {key} 0 (no service uses port 0)"
                ),
            );
        }
        match text {
            Some(flags) => body.push(format!("{key} = {flags}")),
            None => return Vec::new(),
        }
    }
    if let Some(i) = &rule.iface {
        body.push(format!("iface = {}", toml_str(i)));
    }
    if let Some(flags) = &m.icmp_type {
        let names: Vec<String> = matches::bits_members(flags)
            .map(|parts| icmp_type_text(parts, v6))
            .collect();
        body.push(if names.len() == 1 {
            format!("icmp_type = {}", names[0])
        } else {
            format!("icmp_type = [{}]", names.join(", "))
        });
    }
    if let Some(s) = m.state {
        let names: Vec<&str> = [
            (NEW, "\"new\""),
            (ESTABLISHED, "\"established\""),
            (RELATED, "\"related\""),
            (INVALID, "\"invalid\""),
        ]
        .iter()
        .filter(|(b, _)| s & b != 0)
        .map(|(_, parts)| *parts)
        .collect();
        body.push(if names.len() == 1 {
            format!("state = {}", names[0])
        } else {
            format!("state = [{}]", names.join(", "))
        });
    }
    let flags_at = body.len();
    if let Some(l) = m.limit {
        body.push(format!("limit = \"{}/{}\"", l.count, l.unit));
        if l.burst != 5 {
            body.push(format!("limit_burst = {}", l.burst));
        }
    }
    let action = match rule.action {
        Action::Accept => "accept",
        Action::Drop => "drop",
        Action::Reject(_) => "reject",
        Action::Log => "log",
    };
    body.push(format!("action = \"{action}\""));
    let reject = match rule.action {
        Action::Reject(with) => Some(with),
        _ => None,
    };
    if let Some(log) = &rule.log {
        if rule.action != Action::Log {
            body.push("log = true".into());
        }
        if let Some(p) = &log.prefix {
            body.push(format!("log_prefix = {}", toml_str(p)));
        }
    }
    let mergeable = m.limit.is_none();
    let Some(flags) = m.tcp_flags else {
        return vec![Written {
            comments,
            body,
            mergeable,
            reject,
        }];
    };
    let care = rule.flags_care.unwrap_or(ALL);
    let list = cubes
        .entry((flags, care))
        .or_insert_with(|| flag_cubes(&flags, &care))
        .clone();
    let parts = list.len();
    list.into_iter()
        .enumerate()
        .map(|(i, cube)| {
            let mut body = body.clone();
            if let Some(line) = flags_text(cube) {
                body.insert(flags_at, line);
            }
            let mut comments = comments.clone();
            if parts > 1 {
                comments.push(format!(
                    "  TCP flags, part {} of {parts} (fw's `tcp_flags` is one mask and value)",
                    i + 1
                ));
            }
            Written {
                comments,
                body,
                mergeable,
                reject,
            }
        })
        .collect()
}

/// Ports as the policy writes them; `None` if only port 0 was meant. The
/// flag says port 0 was left out.
fn ports_text(ports: &Ports) -> (Option<String>, bool) {
    let mut lost = false;
    let mut items = Vec::new();
    for &(a, b) in ports {
        if a == 0 {
            lost = true;
            if b == 0 {
                continue;
            }
        }
        let a = a.max(1);
        items.push(if a == b {
            a.to_string()
        } else {
            format!("\"{a}-{b}\"")
        });
    }
    let text = match items.len() {
        0 => None,
        1 => Some(items.remove(0)),
        _ => Some(format!("[{}]", items.join(", "))),
    };
    (text, lost)
}

fn icmp_type_text(t: u8, v6: bool) -> String {
    const V4: [&str; 11] = [
        "echo-reply",
        "destination-unreachable",
        "source-quench",
        "redirect",
        "echo-request",
        "router-advertisement",
        "router-solicitation",
        "time-exceeded",
        "parameter-problem",
        "timestamp-request",
        "timestamp-reply",
    ];
    const V6: [&str; 11] = [
        "destination-unreachable",
        "packet-too-big",
        "time-exceeded",
        "parameter-problem",
        "echo-request",
        "echo-reply",
        "router-solicitation",
        "router-advertisement",
        "neighbour-solicitation",
        "neighbour-advertisement",
        "redirect",
    ];
    let found = if v6 {
        V6.iter().find(|n| icmp::icmp6_type(n) == Some(t))
    } else {
        V4.iter().find(|n| icmp::icmp4_type(n) == Some(t))
    };
    found.map_or_else(|| t.to_string(), |n| format!("\"{n}\""))
}

fn reject_text(with: RejectWith, v6: bool) -> &'static str {
    match (with, v6) {
        (RejectWith::TcpReset, _) => "tcp-reset",
        (RejectWith::PortUnreachable | RejectWith::Auto, false) => "icmp-port-unreachable",
        (RejectWith::PortUnreachable | RejectWith::Auto, true) => "icmp6-port-unreachable",
        (RejectWith::ProtoUnreachable, _) => "icmp-proto-unreachable",
        (RejectWith::HostUnreachable, false) => "icmp-host-unreachable",
        (RejectWith::HostUnreachable, true) => "icmp6-addr-unreachable",
        (RejectWith::NetUnreachable, false) => "icmp-net-unreachable",
        (RejectWith::NetUnreachable, true) => "icmp6-no-route",
        (RejectWith::AdminProhibited, false) => "icmp-admin-prohibited",
        (RejectWith::AdminProhibited, true) => "icmp6-adm-prohibited",
    }
}

// ---- TCP flags: fw's `tcp_flags` is one mask and value ----

const FLAG_NAMES: [(u8, &str); 8] = [
    (tf::FIN, "fin"),
    (tf::SYN, "syn"),
    (tf::RST, "rst"),
    (tf::PSH, "psh"),
    (tf::ACK, "ack"),
    (tf::URG, "urg"),
    (tf::ECE, "ece"),
    (tf::CWR, "cwr"),
];

/// `--syn`.
const SYN_CUBE: (u8, u8) = (tf::FIN | tf::SYN | tf::RST | tf::ACK, tf::SYN);

fn cube_bits((mask, comp): (u8, u8)) -> Bits {
    matches::bits_where(|f| f & mask == comp)
}

/// Cubes (mask, value) whose union is `t` wherever `care` (the flag bytes
/// that can reach the rule): one if possible, else disjoint ones.
fn flag_cubes(t: &Bits, care: &Bits) -> Vec<(u8, u8)> {
    if let Some(c) = single_cube(t, &ALL) {
        return vec![c];
    }
    let t = matches::bits_and(t, care);
    if let Some(c) = single_cube(&t, care) {
        return vec![c];
    }
    let mut out = Vec::new();
    split_cubes(&t, care, (0, 0), 0, &mut out);
    out
}

/// A cube C with C ∩ care = t.
fn single_cube(t: &Bits, care: &Bits) -> Option<(u8, u8)> {
    let first = matches::bits_members(t).next()?;
    // The bits every member agrees on bound the cube's mask.
    let mut agree: u8 = 0xff;
    for f in matches::bits_members(t) {
        agree &= !(f ^ first);
    }
    let fits = |c: (u8, u8)| matches::bits_and(&cube_bits(c), care) == *t;
    if SYN_CUBE.0 & agree == SYN_CUBE.0 && first & SYN_CUBE.0 == SYN_CUBE.1 && fits(SYN_CUBE) {
        return Some(SYN_CUBE);
    }
    // Sub-masks of `agree`, fewest flags first.
    let mut masks: Vec<u8> = (0..=255u8).filter(|m| m & !agree == 0).collect();
    masks.sort_by_key(|m| m.count_ones());
    masks.into_iter().map(|m| (m, first & m)).find(|c| fits(*c))
}

fn split_cubes(t: &Bits, care: &Bits, cube: (u8, u8), depth: usize, out: &mut Vec<(u8, u8)>) {
    const ORDER: [u8; 8] = [
        tf::SYN,
        tf::ACK,
        tf::RST,
        tf::FIN,
        tf::URG,
        tf::PSH,
        tf::ECE,
        tf::CWR,
    ];
    let here = cube_bits(cube);
    let tt = matches::bits_and(t, &here);
    if matches::bits_empty(&tt) {
        return;
    }
    if tt == matches::bits_and(care, &here) || depth == ORDER.len() {
        out.push(cube);
        return;
    }
    let bit = ORDER[depth];
    for value in [0, bit] {
        split_cubes(t, care, (cube.0 | bit, cube.1 | value), depth + 1, out);
    }
}

fn flags_text((mask, comp): (u8, u8)) -> Option<String> {
    if mask == 0 {
        return None;
    }
    if (mask, comp) == SYN_CUBE {
        return Some("tcp_flags = \"syn\"".into());
    }
    let names = |bits: u8| -> String {
        FLAG_NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "tcp_flags = {{ mask = [{}], set = [{}] }}",
        names(mask),
        names(comp)
    ))
}

// ---- merge ----

/// IPv4 and IPv6 rules in one list that keeps each family's order: the
/// longest common run of identical rules become rules for both families.
fn merge(v4: &[Written], v6: &[Written]) -> Vec<(Option<IpFamily>, Written)> {
    let same = |x: &Written, y: &Written| {
        x.mergeable && y.mergeable && x.body == y.body && x.reject == y.reject
    };
    let mut out = Vec::with_capacity(v4.len() + v6.len());
    // Past a few million cells the table is not worth it.
    if v4.is_empty() || v6.is_empty() || v4.len().saturating_mul(v6.len()) > 4_000_000 {
        out.extend(v4.iter().map(|both| (Some(IpFamily::V4), both.clone())));
        out.extend(v6.iter().map(|both| (Some(IpFamily::V6), both.clone())));
        return out;
    }
    let (len4, len6) = (v4.len(), v6.len());
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (len4 + 1) * (len6 + 1)];
    let at = |i: usize, j: usize| i * (len6 + 1) + j;
    for i in (0..len4).rev() {
        for j in (0..len6).rev() {
            lcs[at(i, j)] = if same(&v4[i], &v6[j]) {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < len4 || j < len6 {
        if i < len4 && j < len6 && same(&v4[i], &v6[j]) {
            let mut both = v4[i].clone();
            for c in &v6[j].comments {
                if !both.comments.contains(c) {
                    both.comments.push(c.clone());
                }
            }
            out.push((None, both));
            i += 1;
            j += 1;
        } else if j >= len6 || (i < len4 && lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            out.push((Some(IpFamily::V4), v4[i].clone()));
            i += 1;
        } else {
            out.push((Some(IpFamily::V6), v6[j].clone()));
            j += 1;
        }
    }
    out
}
