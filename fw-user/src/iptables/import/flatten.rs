//! Custom chains inlined into INPUT, OUTPUT and FORWARD, in order and with
//! their meaning: a jump `-A INPUT M -j CH` puts CH's rules in its place,
//! each with M added to its match; a RETURN in CH takes its packets out of the rules
//! of CH after it (they go back to the caller, whose next rules follow
//! anyway); a chain's end is a return.

use fw_common::{
    conntrack::tcp_flags as tf,
    ipproto,
    policy::{MAX_RULES, RejectWith},
};

use super::{
    Diags, SKIP_HINT,
    matches::{self, Addr, Match},
    rule::{LogSpec, Rule, Target, Verdict},
    syntax::{BUILTIN, Chain, Policy, SourceFile},
};
use crate::iptables::IpFamily;

/// fw's chains, in `BUILTIN`'s order.
pub(super) const INPUT: usize = 0;
pub(super) const OUTPUT: usize = 1;
pub(super) const FORWARD: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Accept,
    Drop,
    Reject(RejectWith),
    /// Log, go on.
    Log,
}

/// A line of an imported file (line 0: a note of the importer's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub line: usize,
    pub text: String,
}

/// A rule of fw's model, still per family.
#[derive(Clone, Debug)]
pub(super) struct FlatRule {
    /// `in_if`/`out_if` are resolved into `iface`.
    pub m: Match,
    pub iface: Option<String>,
    pub action: Action,
    /// How it logs (`Action::Log`, or a LOG folded in).
    pub log: Option<LogSpec>,
    pub name: Option<String>,
    /// The jumps that led here, then the rule itself.
    pub origins: Vec<Origin>,
    /// RETURN rules whose packets were taken out of this rule.
    pub excluded: Vec<Origin>,
    /// The TCP flag bytes that can reach the rule (set by `stages`): what
    /// the rule's `tcp_flags` need to tell apart.
    pub flags_care: Option<matches::Bits>,
}

impl FlatRule {
    /// The line of the rule itself (not of the jumps to it).
    pub fn line(&self) -> usize {
        self.origins.last().map_or(0, |o| o.line)
    }
}

/// One family's rules, flattened.
pub(super) struct FamilyRules {
    pub family: IpFamily,
    pub file: String,
    /// False: no file was given; this is the empty ruleset of a host
    /// where only the other family's was restored.
    pub given: bool,
    pub chains: [Vec<FlatRule>; 3],
    pub policies: [Policy; 3],
    /// Where each policy was set (0: never declared).
    pub policy_lines: [usize; 3],
    pub filter_line: usize,
    /// Rules left out because fw decides their packets before the rules
    /// (loopback), with why.
    pub notes: Vec<(Origin, String)>,
}

impl FamilyRules {
    /// The empty ruleset: every chain accepts.
    pub fn empty(family: IpFamily, file: &str) -> Self {
        Self {
            family,
            file: file.to_string(),
            given: false,
            chains: [Vec::new(), Vec::new(), Vec::new()],
            policies: [Policy::Accept; 3],
            policy_lines: [0; 3],
            filter_line: 1,
            notes: Vec::new(),
        }
    }
}

/// Inlining stops past this many steps (a ruleset that jumps to the same
/// chains from everywhere can grow exponentially).
const MAX_STEPS: usize = 100_000;
/// A flattened chain longer than this is an error anyway (fw holds
/// `MAX_RULES`); the margin lets the merge of identical IPv4 and IPv6
/// rules and the stages' removals bring it down.
const MAX_FLAT: usize = 4 * MAX_RULES;
/// Pieces a rule may split into through RETURNs and conjunctions.
const MAX_PIECES: usize = 64;

/// Packets that reach a point of a chain: a match, and how they got there.
#[derive(Clone)]
struct Piece {
    m: Match,
    origins: Vec<Origin>,
    name: Option<String>,
    excluded: Vec<Origin>,
}

struct Inliner<'a> {
    file: &'a SourceFile,
    diags: &'a mut Diags,
    steps: usize,
    reached: Vec<String>,
    stopped: bool,
    notes: Vec<(Origin, String)>,
}

/// Flatten the three builtin chains of `file`.
pub(super) fn flatten(file: &SourceFile, diags: &mut Diags) -> FamilyRules {
    let mut inl = Inliner {
        file,
        diags,
        steps: 0,
        reached: Vec::new(),
        stopped: false,
        notes: Vec::new(),
    };
    let mut chains: [Vec<FlatRule>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut policies = [Policy::Accept; 3];
    let mut policy_lines = [0; 3];
    for (ch, name) in BUILTIN.iter().enumerate() {
        let Some(chain) = file.chain(name) else {
            continue;
        };
        policies[ch] = chain.policy.unwrap_or(Policy::Accept);
        policy_lines[ch] = chain.line;
        let start = Piece {
            m: Match::ANY,
            origins: Vec::new(),
            name: None,
            excluded: Vec::new(),
        };
        let mut stack = vec![(*name).to_string()];
        inl.inline(
            chain,
            &[start],
            &mut stack,
            ch,
            policies[ch],
            &mut chains[ch],
        );
    }
    check_limits(file, &mut chains, inl.diags);
    for chain in &file.chains {
        if chain.policy.is_none() && !chain.rules.is_empty() && !inl.reached.contains(&chain.name) {
            inl.diags.warn(
                &file.name,
                chain.line,
                format!(
                    "chain `{}` is never jumped to from INPUT, OUTPUT or FORWARD, so its rules are not imported",
                    chain.name
                ),
            );
        }
    }
    FamilyRules {
        family: file.family,
        file: file.name.clone(),
        given: true,
        chains,
        policies,
        policy_lines,
        filter_line: file.filter_line,
        notes: inl.notes,
    }
}

impl Inliner<'_> {
    /// The rules of `chain` for the packets `pieces`, appended to `out`.
    fn inline(
        &mut self,
        chain: &Chain,
        pieces: &[Piece],
        stack: &mut Vec<String>,
        ch: usize,
        policy: Policy,
        out: &mut Vec<FlatRule>,
    ) {
        if !self.reached.contains(&chain.name) {
            self.reached.push(chain.name.clone());
        }
        let builtin = chain.policy.is_some();
        // The RETURNs seen so far in this chain: their packets are gone.
        let mut returns: Vec<&Rule> = Vec::new();
        for (index, rule) in chain.rules.iter().enumerate() {
            if self.stopped {
                return;
            }
            self.steps += pieces.len().max(1);
            if self.steps > MAX_STEPS || out.len() > MAX_FLAT {
                self.stopped = true;
                self.diags.error(
                    &self.file.name,
                    rule.line,
                    format!(
                        "inlining the chains gets past {} rules here: fw holds at most {MAX_RULES} per chain (hint: jump to fewer chains from fewer places; lists of ports and addresses make one rule)",
                        out.len().max(MAX_RULES)
                    ),
                );
                return;
            }
            if !rule.ok {
                continue;
            }
            let Some(here) = self.reaching(pieces, rule, &returns, stack) else {
                continue;
            };
            match &rule.target {
                Target::Verdict(v) => {
                    let action = match v {
                        Verdict::Accept => Action::Accept,
                        Verdict::Drop => Action::Drop,
                        Verdict::Reject(w) => Action::Reject(*w),
                    };
                    for p in here {
                        self.emit(ch, p, rule, action, out);
                    }
                }
                Target::Log => {
                    for p in here {
                        self.emit(ch, p, rule, Action::Log, out);
                    }
                }
                Target::Return if builtin => {
                    // The end of a builtin chain: its policy.
                    let action = match policy {
                        Policy::Accept => Action::Accept,
                        Policy::Drop => Action::Drop,
                    };
                    for p in here {
                        self.emit(ch, p, rule, action, out);
                    }
                }
                Target::Return => {
                    if self.return_expressible(chain, index, pieces, rule, &returns) {
                        returns.push(rule);
                    }
                }
                Target::Jump(target) => {
                    if let Some(pos) = stack.iter().position(|c| c == target) {
                        let mut cycle: Vec<&str> =
                            stack[pos..].iter().map(String::as_str).collect();
                        cycle.push(target);
                        self.diags.error(
                            &self.file.name,
                            rule.line,
                            format!(
                                "chain `{target}` is jumped to again while it is running ({}): iptables refuses such loops (hint: break the loop)",
                                cycle.join(" -> ")
                            ),
                        );
                        continue;
                    }
                    let Some(callee) = self.file.chain(target) else {
                        continue;
                    };
                    let into: Vec<Piece> = here
                        .into_iter()
                        .map(|mut p| {
                            p.name = rule.name.clone().or(p.name);
                            p
                        })
                        .collect();
                    stack.push(target.clone());
                    self.inline(callee, &into, stack, ch, policy, out);
                    stack.pop();
                }
                Target::Nothing => self.diags.warn(
                    &self.file.name,
                    rule.line,
                    "the rule has no target (`-j`): it only counts packets, so it is left out",
                ),
            }
        }
    }

    /// The packets of `pieces` that reach `rule` and match it: a RETURN
    /// before it took some away. `None` after reporting a problem.
    fn reaching(
        &mut self,
        pieces: &[Piece],
        rule: &Rule,
        returns: &[&Rule],
        stack: &[String],
    ) -> Option<Vec<Piece>> {
        let mut here = Vec::new();
        let own = Origin {
            line: rule.line,
            text: rule.text.clone(),
        };
        for p in pieces {
            for alt in &rule.alts {
                match matches::conj(&p.m, alt) {
                    Ok(None) => {}
                    Ok(Some(m)) => {
                        let mut origins = p.origins.clone();
                        if let Some(log) = &rule.log
                            && log.line != rule.line
                        {
                            origins.push(Origin {
                                line: log.line,
                                text: log.text.clone(),
                            });
                        }
                        origins.push(own.clone());
                        here.push(Piece {
                            m,
                            origins,
                            name: rule.name.clone().or_else(|| p.name.clone()),
                            excluded: p.excluded.clone(),
                        });
                    }
                    Err(why) => {
                        self.diags.unsupported(
                            &self.file.name,
                            rule.line,
                            &rule.text,
                            format!(
                                "reached through {}, this rule cannot be written for fw: {why} (hint: move the limit to the rules it should count; {SKIP_HINT})",
                                via(stack)
                            ),
                        );
                        return None;
                    }
                }
            }
        }
        for ret in returns {
            let mut next = Vec::new();
            for p in here {
                let mut left = vec![p.m.clone()];
                for alt in &ret.alts {
                    let mut after = Vec::new();
                    for m in left {
                        // Checked when the RETURN was read.
                        after.extend(matches::subtract(&m, alt).unwrap_or_default());
                    }
                    left = after;
                }
                let changed = left.len() != 1 || left[0] != p.m;
                for m in left {
                    let mut q = p.clone();
                    q.m = m;
                    if changed {
                        q.excluded.push(Origin {
                            line: ret.line,
                            text: ret.text.clone(),
                        });
                    }
                    next.push(q);
                }
            }
            here = next;
            if here.len() > MAX_PIECES {
                break;
            }
        }
        if here.len() > MAX_PIECES {
            self.diags.unsupported(
                &self.file.name,
                rule.line,
                &rule.text,
                format!(
                    "reached through {}, this rule becomes {} fw rules (hint: simplify the RETURN rules before it; {SKIP_HINT})",
                    via(stack),
                    here.len()
                ),
            );
            return None;
        }
        Some(here)
    }

    /// Can the rules after the RETURN at `index` leave its packets out?
    /// Reported if not (the RETURN is then left out).
    fn return_expressible(
        &mut self,
        chain: &Chain,
        index: usize,
        pieces: &[Piece],
        ret: &Rule,
        returns: &[&Rule],
    ) -> bool {
        for later in chain.rules[index + 1..].iter().filter(|r| r.ok) {
            for p in pieces {
                for alt in &later.alts {
                    let Ok(Some(m)) = matches::conj(&p.m, alt) else {
                        continue;
                    };
                    let mut left = vec![m];
                    for r in returns.iter().copied().chain([ret]) {
                        for ralt in &r.alts {
                            let mut after = Vec::new();
                            self.steps += left.len();
                            if left.len() > MAX_PIECES || self.steps > MAX_STEPS {
                                // Too big to check here: `reaching` reports it.
                                return true;
                            }
                            for m in &left {
                                match matches::subtract(m, ralt) {
                                    Ok(v) => after.extend(v),
                                    Err(what) => {
                                        self.diags.unsupported(
                                            &self.file.name,
                                            ret.line,
                                            &ret.text,
                                            format!(
                                                "this RETURN cannot be expressed: the rule at line {} after it would have to leave out the returned packets, which takes negating {what}; fw can negate one address set, port set, state, ICMP type or TCP flags (hint: make the RETURN match only addresses, e.g. `-s 192.0.2.0/24 -j RETURN`, or test the protocol in the rule that jumps to `{}`; {SKIP_HINT})",
                                                later.line, chain.name
                                            ),
                                        );
                                        return false;
                                    }
                                }
                            }
                            left = after;
                        }
                    }
                }
            }
        }
        true
    }

    /// Append the rule for packets `p` of `rule` to fw's chain `ch`.
    fn emit(&mut self, ch: usize, p: Piece, rule: &Rule, action: Action, out: &mut Vec<FlatRule>) {
        let mut m = p.m;
        let (iface, wrong_side) = match ch {
            OUTPUT => (m.out_if.take(), m.in_if.take()),
            _ => (m.in_if.take(), m.out_if.take()),
        };
        if let Some(o) = wrong_side {
            if ch == FORWARD {
                self.diags.unsupported(
                    &self.file.name,
                    rule.line,
                    &rule.text,
                    format!(
                        "`-o {o}` in FORWARD: fw's forward rules match the interface a packet arrives on, not the one it leaves by (hint: match the destination network with `-d` instead; {SKIP_HINT})"
                    ),
                );
            }
            // In INPUT a packet has no output interface (in OUTPUT no input
            // one), so the rule never matches there.
            return;
        }
        let origin = Origin {
            line: rule.line,
            text: rule.text.clone(),
        };
        if iface.as_deref() == Some("lo") {
            match action {
                Action::Accept => {}
                Action::Log => self.diags.warn(
                    &self.file.name,
                    rule.line,
                    "this rule logs loopback traffic, which fw never sees (it never filters `lo`), so it is left out",
                ),
                Action::Drop | Action::Reject(_) => self.diags.unsupported(
                    &self.file.name,
                    rule.line,
                    &rule.text,
                    format!(
                        "the rule filters loopback traffic (`lo`), which fw never filters (hint: remove the rule; {SKIP_HINT})"
                    ),
                ),
            }
            return;
        }
        let loopback = |a: &Addr| match a {
            Addr::In(nets) => nets.iter().all(matches::is_loopback_net),
            _ => false,
        };
        if loopback(&m.src) || loopback(&m.dst) {
            if action == Action::Accept {
                self.diags.warn(
                    &self.file.name,
                    rule.line,
                    "the rule accepts loopback addresses (127.0.0.0/8, ::1) on every interface, not only `lo`: a forged loopback source from outside passes it (hint: add `-i lo`); fw accepts loopback traffic on `lo` and drops these addresses on other interfaces before the rules, so the rule is left out",
                );
            } else {
                self.notes.push((
                    origin,
                    "fw drops loopback addresses arriving on (or leaving by) other interfaces than `lo` before the rules".into(),
                ));
            }
            return;
        }
        if action == Action::Accept {
            self.warn_holes(&m, rule);
        }
        out.push(FlatRule {
            m,
            iface,
            action,
            log: rule.log.clone(),
            name: p.name,
            origins: p.origins,
            excluded: p.excluded,
            flags_care: None,
        });
    }
}

impl Inliner<'_> {
    /// The classic holes of stateless rulesets, in an accepting rule.
    fn warn_holes(&mut self, m: &Match, rule: &Rule) {
        let new = m.state.is_none_or(|s| s & matches::NEW != 0);
        let ack_only =
            matches::bits_where(|f| f & (tf::SYN | tf::RST | tf::ACK | tf::FIN) == tf::ACK);
        if new
            && m.proto == Some(ipproto::TCP)
            && m.tcp_flags.is_some_and(|b| {
                matches::bits_subset(&ack_only, &b) && !matches::bits_has(&b, tf::SYN)
            })
        {
            self.diags.warn(
                &self.file.name,
                rule.line,
                "the rule accepts TCP segments with ACK set whatever their connection state: an ACK scan or a forged segment passes it (hint: accept replies with `-m conntrack --ctstate ESTABLISHED` instead)",
            );
        }
        if new
            && m.proto == Some(ipproto::UDP)
            && m.sport
                .as_ref()
                .is_some_and(|p| p.iter().any(|(a, b)| (*a..=*b).contains(&53)))
        {
            self.diags.warn(
                &self.file.name,
                rule.line,
                "the rule accepts UDP from source port 53 whatever the connection: anyone can reach the host's UDP ports by sending from port 53 (hint: DNS replies are ESTABLISHED; accept them by state)",
            );
        }
    }
}

/// "the jump at line N" for messages.
fn via(stack: &[String]) -> String {
    if stack.len() <= 1 {
        format!("`{}`", stack.first().map_or("", String::as_str))
    } else {
        format!("`{}`", stack.join(" -> "))
    }
}

/// fw's limit belongs to one rule; iptables' to one line of the ruleset.
/// A line whose limit ends up in several fw rules (it is reached through
/// several jumps, or its match takes several fw rules) cannot keep its
/// single rate: for a LOG rule only the number of log lines changes, which
/// is a warning; for a verdict it is unsupported, and those rules are left
/// out.
fn check_limits(file: &SourceFile, chains: &mut [Vec<FlatRule>; 3], diags: &mut Diags) {
    let mut count: Vec<(usize, usize, bool)> = Vec::new();
    for rule in chains.iter().flatten() {
        if let Some(l) = rule.m.limit {
            match count.iter_mut().find(|(line, _, _)| *line == l.origin) {
                Some(c) => {
                    c.1 += 1;
                    c.2 &= rule.action == Action::Log;
                }
                None => count.push((l.origin, 1, rule.action == Action::Log)),
            }
        }
    }
    for (line, n, only_log) in count {
        if n < 2 {
            continue;
        }
        let text = file
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .find(|r| r.line == line)
            .map_or_else(String::new, |r| r.text.clone());
        if only_log {
            diags.warn(
                &file.name,
                line,
                format!(
                    "this limit applies to {n} fw rules, each with a rate of its own: up to {n} times as many packets may be logged"
                ),
            );
        } else {
            diags.unsupported(
                &file.name,
                line,
                &text,
                format!(
                    "`-m limit` here ends up in {n} fw rules, each of which would have its own rate (hint: put the limit on a rule that fw keeps whole, e.g. not on a jump to a chain of several rules; {SKIP_HINT})",
                ),
            );
            for chain in chains.iter_mut() {
                chain.retain(|r| r.m.limit.is_none_or(|l| l.origin != line));
            }
        }
    }
}

/// A one-line summary of a chain name for messages.
pub(super) fn chain_name(ch: usize) -> &'static str {
    BUILTIN[ch]
}
