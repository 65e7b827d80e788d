//! fw's `[stateful]` stages decide established, related and invalid
//! packets (and neighbour discovery) before the rules, in every chain and
//! for both families at once. A stage keeps a verdict only where that is
//! exactly what the ruleset does: in every chain that can see such
//! packets, the first rule that can match them decides all of them that
//! way (or none matches and the policy does). Otherwise the stage is
//! `"rules"` and the ruleset's own rules see those packets, in order.
//!
//! Then the rules are cut to what can still reach them: states a stage
//! decides are taken out of `state` (a rule left with none is gone, like
//! the classic `--ctstate ESTABLISHED,RELATED -j ACCEPT`), and so are TCP
//! flag combinations that cannot arrive.

use fw_common::{
    conntrack::{tcp_flags as tf, tcp_flags_valid},
    ipproto,
};

use super::{
    Diags,
    flatten::{self, Action, FORWARD, FamilyRules, FlatRule, INPUT, OUTPUT, Origin},
    matches::{
        self, ALL, ALL_STATES, Bits, ESTABLISHED, INVALID, Match, NEW, RELATED, bits_and,
        bits_empty, bits_subset, bits_where,
    },
    syntax::Policy,
};
use crate::{iptables::IpFamily, policy::Stage};

/// What `emit` writes.
pub(super) struct Plan {
    /// IPv4 then IPv6 (a family without a file: the empty ruleset).
    pub families: Vec<FamilyRules>,
    pub defaults: [Policy; 3],
    pub established: Stage,
    pub related: Stage,
    pub invalid: Stage,
    pub tcp_syn_only: bool,
    pub neighbor_discovery: Stage,
    /// Why, one comment line each, for `[stateful]`.
    pub reasons: Vec<String>,
    /// Rules a stage made redundant.
    pub absorbed: Vec<(String, Origin)>,
    /// Rules no packet reaches with the TCP flags they need.
    pub dead: Vec<(String, Origin)>,
}

/// A class of packets the stages decide, as the rules see it.
#[derive(Clone, Copy)]
struct Probe {
    /// `None`: untracked (netfilter does not track neighbour discovery).
    state: Option<u8>,
    proto: Option<u8>,
    icmp: Option<Bits>,
    flags: Option<Bits>,
}

enum Outcome {
    /// Every such packet gets this verdict: from the rule at the index, or
    /// from the policy.
    Decided(Policy, Option<usize>),
    /// The rule at the index matches some of them only, or logs them.
    Mixed(usize),
}

/// TCP flag bytes: a lone ACK (as netfilter picks up a connection).
fn ack_only() -> Bits {
    bits_where(|f| f & (tf::SYN | tf::RST | tf::ACK | tf::FIN) == tf::ACK)
}

/// What fw takes for NEW: a pure SYN, or (`tcp_syn_only = false`) a
/// segment with ACK and without RST.
fn fw_new(syn_only: bool) -> Bits {
    bits_where(|f| {
        tcp_flags_valid(f)
            && (f & (tf::SYN | tf::ACK | tf::FIN | tf::RST) == tf::SYN
                || (!syn_only && f & tf::ACK != 0 && f & tf::RST == 0))
    })
}

/// What netfilter takes for NEW: a SYN, or a lone ACK it picks up.
fn nf_new() -> Bits {
    bits_where(|f| {
        tcp_flags_valid(f)
            && matches!(
                f & (tf::SYN | tf::ACK | tf::FIN | tf::RST),
                tf::SYN | tf::ACK
            )
    })
}

/// NEW for fw (`tcp_syn_only = false`) but INVALID for netfilter: SYN/ACK
/// and FIN/ACK without a connection.
fn fw_only_new() -> Bits {
    bits_and(&fw_new(false), &matches::bits_not(&nf_new()))
}

fn valid_flags() -> Bits {
    bits_where(tcp_flags_valid)
}

fn can_match(r: &FlatRule, p: &Probe) -> bool {
    let state_ok = match (r.m.state, p.state) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(s), Some(x)) => s & x != 0,
    };
    let proto_ok = match (r.m.proto, p.proto) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let icmp_ok = match (&r.m.icmp_type, &p.icmp) {
        (Some(a), Some(b)) => !bits_empty(&bits_and(a, b)),
        _ => true,
    };
    let flags_ok = match (&r.m.tcp_flags, &p.flags) {
        (Some(a), Some(b)) => !bits_empty(&bits_and(a, b)),
        _ => true,
    };
    state_ok && proto_ok && icmp_ok && flags_ok
}

fn covers(r: &FlatRule, p: &Probe) -> bool {
    let m = &r.m;
    can_match(r, p)
        && m.src == matches::Addr::Any
        && m.dst == matches::Addr::Any
        && m.sport.is_none()
        && m.dport.is_none()
        && r.iface.is_none()
        && m.limit.is_none()
        && m.state.is_none_or(|s| p.state.is_some_and(|x| s & x == x))
        && m.proto.is_none_or(|a| p.proto == Some(a))
        && m.icmp_type
            .is_none_or(|t| p.icmp.is_some_and(|x| bits_subset(&x, &t)))
        && m.tcp_flags
            .is_none_or(|t| p.flags.is_some_and(|x| bits_subset(&x, &t)))
}

fn walk(rules: &[FlatRule], policy: Policy, p: &Probe) -> Outcome {
    for (i, r) in rules.iter().enumerate() {
        if !can_match(r, p) {
            continue;
        }
        let verdict = match r.action {
            Action::Accept => Some(Policy::Accept),
            Action::Drop => Some(Policy::Drop),
            _ => None,
        };
        return match verdict {
            Some(v) if covers(r, p) && r.log.is_none() => Outcome::Decided(v, Some(i)),
            _ => Outcome::Mixed(i),
        };
    }
    Outcome::Decided(policy, None)
}

fn accepts_something(f: &FamilyRules, ch: usize) -> bool {
    f.policies[ch] == Policy::Accept || f.chains[ch].iter().any(|r| r.action == Action::Accept)
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Accept => "accept",
        Stage::Drop => "drop",
        Stage::Rules => "rules",
    }
}

/// The stage for a class of packets, with one line of reasons, and the
/// rules that decided it.
fn decide(
    fams: &[FamilyRules],
    what: &str,
    probe: impl Fn(IpFamily) -> Probe,
    relevant: impl Fn(&FamilyRules, usize) -> bool,
) -> (Option<Stage>, Vec<String>, Vec<(String, Origin)>) {
    let mut verdict: Option<Policy> = None;
    let mut mixed = false;
    let mut why = Vec::new();
    let mut deciders = Vec::new();
    for f in fams {
        for ch in [INPUT, OUTPUT, FORWARD] {
            let chain = flatten::chain_name(ch);
            let name = if f.given {
                format!("{} {chain}", f.file)
            } else {
                format!("{} {chain} (no file)", fam_name(f.family))
            };
            if !relevant(f, ch) {
                continue;
            }
            match walk(&f.chains[ch], f.policies[ch], &probe(f.family)) {
                Outcome::Decided(v, at) => {
                    if verdict.is_some_and(|x| x != v) {
                        mixed = true;
                    }
                    verdict = Some(v);
                    let by = match at {
                        Some(i) => {
                            let r = &f.chains[ch][i];
                            deciders.push((
                                f.file.clone(),
                                r.origins.last().cloned().unwrap_or(Origin {
                                    line: 0,
                                    text: String::new(),
                                }),
                            ));
                            format!("line {}", r.line())
                        }
                        None => "its policy".into(),
                    };
                    why.push(format!("{name}: {} by {by}", policy_word(v)));
                }
                Outcome::Mixed(i) => {
                    mixed = true;
                    why.push(format!(
                        "{name}: line {} sees some {what} packets first",
                        f.chains[ch][i].line()
                    ));
                }
            }
        }
    }
    let stage = if mixed {
        Some(Stage::Rules)
    } else {
        verdict.map(|v| match v {
            Policy::Accept => Stage::Accept,
            Policy::Drop => Stage::Drop,
        })
    };
    (stage, why, deciders)
}

fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::Accept => "accepted",
        Policy::Drop => "dropped",
    }
}

pub(super) fn fam_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// Decide the stages and cut the rules to what can reach them.
#[expect(
    clippy::too_many_lines,
    reason = "one step per stage, in the datapath's order"
)]
pub(super) fn plan(given: Vec<FamilyRules>, diags: &mut Diags) -> Plan {
    // Both families; one without a file is the empty ruleset.
    let mut families: Vec<FamilyRules> = Vec::new();
    for fam in [IpFamily::V4, IpFamily::V6] {
        if !given.iter().any(|f| f.family == fam) {
            let other = &given[0];
            diags.warn(
                &other.file,
                other.filter_line,
                format!(
                    "no {} ruleset was given, so {} traffic is accepted, as on a host where only {} was restored (hint: import the {} ruleset too, with --ipv6/the IPv4 file, or drop the `family = \"{}\"` rules to filter it with these defaults)",
                    fam_name(fam),
                    fam_name(fam),
                    other.file,
                    if fam == IpFamily::V6 { "ip6tables-save" } else { "iptables-save" },
                    fam.name()
                ),
            );
            families.push(FamilyRules::empty(fam, fam_name(fam)));
        }
    }
    let mut given = given;
    for f in given.drain(..) {
        families.push(f);
    }
    families.sort_by_key(|f| u8::from(f.family == IpFamily::V6));

    // Defaults: the files must agree.
    let mut defaults = [Policy::Accept; 3];
    for ch in [INPUT, OUTPUT, FORWARD] {
        let files: Vec<&FamilyRules> = families.iter().filter(|f| f.given).collect();
        defaults[ch] = files[0].policies[ch];
        if files.len() == 2 && files[0].policies[ch] != files[1].policies[ch] {
            let name = flatten::chain_name(ch);
            diags.error(
                &files[1].file,
                files[1].policy_lines[ch].max(1),
                format!(
                    "the {name} policy is {} here but {} in {}:{}: fw has one default per chain for both families (hint: make the policies agree, and end the other file's {name} chain with `-A {name} -j {}` to keep its meaning)",
                    policy_upper(files[1].policies[ch]),
                    policy_upper(files[0].policies[ch]),
                    files[0].file,
                    files[0].policy_lines[ch].max(1),
                    policy_upper(files[1].policies[ch]),
                ),
            );
        }
    }

    let mut reasons = Vec::new();
    let mut absorbed = Vec::new();
    let mut dead = Vec::new();
    let note = |reasons: &mut Vec<String>, key: &str, value: &str, why: Vec<String>| {
        reasons.push(format!("{key} = {value}: {}", why.join("; ")));
    };

    // established
    let live = |f: &FamilyRules, ch: usize| match ch {
        FORWARD => accepts_something(f, FORWARD),
        _ => accepts_something(f, INPUT) || accepts_something(f, OUTPUT),
    };
    let (est, why, by) = decide(
        &families,
        "ESTABLISHED",
        |_| Probe {
            state: Some(ESTABLISHED),
            proto: None,
            icmp: None,
            flags: None,
        },
        live,
    );
    let established = est.unwrap_or(Stage::Accept);
    note(&mut reasons, "established", stage_name(established), why);
    if established != Stage::Rules {
        absorbed.extend(by);
    }

    // related: ICMP errors (those fw tracks).
    let (rel, why, by) = decide(
        &families,
        "RELATED",
        |fam| match fam {
            IpFamily::V4 => Probe {
                state: Some(RELATED),
                proto: Some(ipproto::ICMP),
                icmp: Some(bits_where(|t| matches!(t, 3 | 11 | 12))),
                flags: None,
            },
            IpFamily::V6 => Probe {
                state: Some(RELATED),
                proto: Some(ipproto::ICMPV6),
                icmp: Some(bits_where(|t| matches!(t, 1..=4))),
                flags: None,
            },
        },
        live,
    );
    let related = rel.unwrap_or(Stage::Accept);
    note(&mut reasons, "related", stage_name(related), why);
    if related != Stage::Rules {
        absorbed.extend(by);
    }

    // invalid: OUTPUT only counts when it looks at INVALID (the host's own
    // packets are practically never INVALID).
    let output_looks =
        |f: &FamilyRules, test: &dyn Fn(&FlatRule) -> bool| f.chains[OUTPUT].iter().any(test);
    let inv_relevant = |f: &FamilyRules, ch: usize| {
        ch != OUTPUT || output_looks(f, &|r| r.m.state.is_some_and(|s| s & INVALID != 0))
    };
    let (inv, why, by) = decide(
        &families,
        "INVALID",
        |_| Probe {
            state: Some(INVALID),
            proto: None,
            icmp: None,
            flags: None,
        },
        inv_relevant,
    );
    let invalid = inv.unwrap_or(Stage::Drop);
    note(&mut reasons, "invalid", stage_name(invalid), why);
    if invalid != Stage::Rules {
        absorbed.extend(by);
    }

    // tcp_syn_only: fw makes a TCP segment without a connection that is
    // not a SYN INVALID; exact if the ruleset drops (as NEW) what fw would
    // drop as INVALID.
    let syn_relevant =
        |f: &FamilyRules, ch: usize| ch != OUTPUT || output_looks(f, &|r| r.m.tcp_flags.is_some());
    let (syn, why, by) = decide(
        &families,
        "mid-stream TCP",
        |_| Probe {
            state: Some(NEW),
            proto: Some(ipproto::TCP),
            icmp: None,
            flags: Some(ack_only()),
        },
        syn_relevant,
    );
    let tcp_syn_only = invalid == Stage::Drop && syn == Some(Stage::Drop);
    if tcp_syn_only {
        absorbed.extend(by);
        note(&mut reasons, "tcp_syn_only", "true", why);
    } else if invalid == Stage::Drop {
        note(
            &mut reasons,
            "tcp_syn_only",
            "false (netfilter takes a lone ACK for NEW, and the ruleset does not drop it first)",
            why,
        );
    } else {
        reasons.push("tcp_syn_only = false: with INVALID packets meeting the rules, a lone ACK must stay NEW as in netfilter".into());
    }

    // Neighbour discovery (netfilter: untracked), one ICMPv6 type at a
    // time: rulesets often accept each type with a rule of its own.
    let nd_probe = |state: Option<u8>, t: u8| Probe {
        state,
        proto: Some(ipproto::ICMPV6),
        icmp: Some(bits_where(|x| x == t)),
        flags: None,
    };
    let v6 = |f: &FamilyRules, ch: usize| f.family == IpFamily::V6 && ch != FORWARD;
    let mut nd: Option<Stage> = None;
    let mut nd_why = Vec::new();
    for t in 133..=137u8 {
        let (s, why, _) = decide(&families, "neighbour discovery", |_| nd_probe(None, t), v6);
        nd = match (nd, s) {
            (None, s) => s,
            (Some(a), Some(b)) if a == b => Some(a),
            (Some(_), Some(_)) => Some(Stage::Rules),
            (a, None) => a,
        };
        if nd_why.is_empty() || s == Some(Stage::Rules) {
            nd_why = why.into_iter().map(|w| format!("type {t}: {w}")).collect();
        }
    }
    let neighbor_discovery = nd.unwrap_or(Stage::Accept);
    note(
        &mut reasons,
        "icmpv6_neighbor_discovery",
        stage_name(neighbor_discovery),
        nd_why,
    );
    if neighbor_discovery == Stage::Rules {
        // fw hands them to the rules as NEW; netfilter's rules see them
        // without a state. Same path, same verdict, as long as no rule
        // tells the two apart.
        for f in families
            .iter()
            .filter(|f| f.family == IpFamily::V6 && f.given)
        {
            for ch in [INPUT, OUTPUT] {
                let path = |state| -> Vec<usize> {
                    f.chains[ch]
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| (133..=137).any(|t| can_match(r, &nd_probe(state, t))))
                        .map(|(i, _)| i)
                        .collect()
                };
                let (nf, fw) = (path(None), path(Some(NEW)));
                if let Some(i) = fw.iter().find(|i| !nf.contains(i)) {
                    diags.warn(
                        &f.file,
                        f.chains[ch][*i].line(),
                        "neighbour discovery is untracked in netfilter but NEW in fw, so this rule (which matches NEW) sees neighbour solicitations and advertisements in fw only (hint: let `-p ipv6-icmp` through without a state match)",
                    );
                }
            }
        }
    }

    // A ruleset that drops replies to the host's own connections.
    if established != Stage::Accept {
        let probe = Probe {
            state: Some(ESTABLISHED),
            proto: None,
            icmp: None,
            flags: None,
        };
        for f in families.iter().filter(|f| f.given) {
            if !matches!(
                walk(&f.chains[INPUT], f.policies[INPUT], &probe),
                Outcome::Decided(Policy::Accept, _)
            ) {
                diags.warn(
                    &f.file,
                    f.policy_lines[INPUT].max(f.filter_line),
                    "no INPUT rule accepts every ESTABLISHED packet: replies to the host's own connections pass only where a rule accepts them, as with iptables (hint: add `-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT` at the top)",
                );
            }
        }
    }

    // Cut the rules.
    let decided = [
        (established, ESTABLISHED),
        (related, RELATED),
        (invalid, INVALID),
    ]
    .iter()
    .filter(|(s, _)| *s != Stage::Rules)
    .fold(0u8, |acc, (_, b)| acc | b);
    let reach = ALL_STATES & !decided;
    for f in &mut families {
        for ch in [INPUT, OUTPUT, FORWARD] {
            let policy = f.policies[ch];
            let rules = std::mem::take(&mut f.chains[ch]);
            // fw's NEW SYN/ACK and FIN/ACK are INVALID in netfilter: give
            // them the INVALID path of the original where it differs.
            let prefix = if tcp_syn_only || (ch == OUTPUT && !inv_relevant(f, ch)) {
                Vec::new()
            } else {
                fw_only_new_prefix(&rules, policy, invalid, f.given)
            };
            let new_flags = if tcp_syn_only {
                fw_new(true)
            } else if prefix.is_empty() {
                fw_new(false)
            } else {
                nf_new()
            };
            let mut kept = prefix;
            for mut r in rules {
                if let Some(s) = r.m.state {
                    let s = s & !decided;
                    if s == 0 {
                        absorbed.push((
                            f.file.clone(),
                            r.origins.last().cloned().unwrap_or(Origin {
                                line: 0,
                                text: String::new(),
                            }),
                        ));
                        continue;
                    }
                    r.m.state = if s & reach == reach { None } else { Some(s) };
                }
                if r.m.proto == Some(ipproto::TCP) {
                    let states = r.m.state.unwrap_or(reach) & reach;
                    let mut care = [0u64; 4];
                    let mut add = |b: Bits| care = matches::bits_or(&care, &b);
                    if states & NEW != 0 {
                        add(new_flags);
                    }
                    if states & (ESTABLISHED | RELATED) != 0 {
                        add(valid_flags());
                    }
                    if states & INVALID != 0 {
                        add(ALL);
                    }
                    if let Some(t) = r.m.tcp_flags {
                        let left = bits_and(&t, &care);
                        if bits_empty(&left) {
                            // No packet fw hands to this rule has these flags.
                            dead.push((
                                f.file.clone(),
                                r.origins.last().cloned().unwrap_or(Origin {
                                    line: 0,
                                    text: String::new(),
                                }),
                            ));
                            continue;
                        }
                        if bits_subset(&care, &t) {
                            r.m.tcp_flags = None;
                        }
                    }
                    r.flags_care = Some(care);
                }
                kept.push(r);
            }
            f.chains[ch] = kept;
        }
    }
    // A family without a file accepts everything; where the default does
    // not, a rule says so.
    for f in families.iter_mut().filter(|f| !f.given) {
        for ch in [INPUT, OUTPUT, FORWARD] {
            if defaults[ch] != Policy::Accept {
                f.chains[ch].push(FlatRule {
                    m: Match::ANY,
                    iface: None,
                    action: Action::Accept,
                    log: None,
                    name: Some(format!("{}: no ruleset was imported", fam_name(f.family))),
                    origins: vec![Origin {
                        line: 0,
                        text: format!(
                            "no {} file was given: its traffic is accepted, as without rules",
                            fam_name(f.family)
                        ),
                    }],
                    excluded: Vec::new(),
                    flags_care: None,
                });
            }
        }
    }
    Plan {
        families,
        defaults,
        established,
        related,
        invalid,
        tcp_syn_only,
        neighbor_discovery,
        reasons,
        absorbed,
        dead,
    }
}

fn policy_upper(p: Policy) -> &'static str {
    match p {
        Policy::Accept => "ACCEPT",
        Policy::Drop => "DROP",
    }
}

/// Rules for the top of a chain that give fw's NEW SYN/ACK and FIN/ACK
/// (INVALID in netfilter) what the original ruleset gives INVALID packets,
/// where that differs from what they would get as NEW. Empty if no rule
/// tells the two apart.
fn fw_only_new_prefix(
    rules: &[FlatRule],
    policy: Policy,
    invalid: Stage,
    given: bool,
) -> Vec<FlatRule> {
    let x = fw_only_new();
    let as_new = Probe {
        state: Some(NEW),
        proto: Some(ipproto::TCP),
        icmp: None,
        flags: Some(x),
    };
    let as_invalid = Probe {
        state: Some(INVALID),
        ..as_new
    };
    let catch = Match {
        proto: Some(ipproto::TCP),
        state: Some(NEW),
        tcp_flags: Some(x),
        ..Match::ANY
    };
    let note = Origin {
        line: 0,
        text: "fw takes SYN/ACK and FIN/ACK without a connection for NEW, netfilter for INVALID: these give them the original INVALID treatment".into(),
    };
    let rule = |m: Match, action: Action, log, name| FlatRule {
        m,
        iface: None,
        action,
        log,
        name,
        origins: vec![note.clone()],
        excluded: Vec::new(),
        flags_care: Some(fw_new(false)),
    };
    let verdict = |p: Policy| match p {
        Policy::Accept => Action::Accept,
        Policy::Drop => Action::Drop,
    };
    match invalid {
        Stage::Accept | Stage::Drop => {
            let v = if invalid == Stage::Accept {
                Policy::Accept
            } else {
                Policy::Drop
            };
            match walk(rules, policy, &as_new) {
                Outcome::Decided(w, _) if w == v => Vec::new(),
                _ if !given && v == Policy::Accept => Vec::new(),
                _ => vec![rule(catch, verdict(v), None, None)],
            }
        }
        Stage::Rules => {
            let path = |p: &Probe| -> Vec<usize> {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| can_match(r, p))
                    .map(|(i, _)| i)
                    .collect()
            };
            let invalid_path = path(&as_invalid);
            if invalid_path == path(&as_new) {
                return Vec::new();
            }
            let mut out = Vec::new();
            for i in invalid_path {
                let r = &rules[i];
                // A rule that decides every such packet ends the path.
                let last = r.action != Action::Log && covers(r, &as_invalid);
                let mut m = r.m.clone();
                m.state = None;
                if let Ok(Some(m)) = matches::conj(&m, &catch) {
                    let mut copy = rule(m, r.action, r.log.clone(), r.name.clone());
                    copy.iface.clone_from(&r.iface);
                    copy.origins = vec![note.clone()];
                    copy.origins.extend(r.origins.iter().cloned());
                    copy.excluded.clone_from(&r.excluded);
                    out.push(copy);
                }
                if last {
                    return out;
                }
            }
            out.push(rule(catch, verdict(policy), None, None));
            out
        }
    }
}
