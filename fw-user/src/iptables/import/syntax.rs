//! The structure of an `iptables-save` file: tables, chains with their
//! policies, rule lines (`-A`, `-I`), `COMMIT`. The filter table's rules
//! are parsed (`rule::parse`); the other tables' rules are reported, since
//! fw only filters.

use super::{Diags, SKIP_HINT, rule};
use crate::iptables::IpFamily;

/// A builtin chain's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Policy {
    Accept,
    Drop,
}

/// One chain of the filter table, rules in iptables' order.
pub(super) struct Chain {
    pub name: String,
    /// Where it was declared (0: a builtin chain never declared).
    pub line: usize,
    /// `Some` for builtin chains.
    pub policy: Option<Policy>,
    pub rules: Vec<rule::Rule>,
}

/// A file, its filter table parsed.
pub(super) struct SourceFile {
    pub name: String,
    pub family: IpFamily,
    /// The filter table's chains, the builtin ones first.
    pub chains: Vec<Chain>,
    /// The line of `*filter`, or 1 without one.
    pub filter_line: usize,
}

impl SourceFile {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

pub(super) const BUILTIN: [&str; 3] = ["INPUT", "OUTPUT", "FORWARD"];

/// A rule line before its options are read.
struct RawRule {
    line: usize,
    text: String,
    chain: String,
    args: Vec<String>,
    /// `-I`: the 1-based position; `None` for `-A`.
    insert_at: Option<usize>,
}

struct Table {
    name: String,
    line: usize,
    /// (name, line, policy as written)
    chains: Vec<(String, usize, Option<String>)>,
    rules: Vec<RawRule>,
}

/// Read `text`, reporting problems into `diags`.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind of line, in the order a file has them"
)]
pub(super) fn parse_file(
    name: &str,
    text: &str,
    family: IpFamily,
    diags: &mut Diags,
) -> SourceFile {
    let mut file = SourceFile {
        name: name.to_string(),
        family,
        chains: BUILTIN
            .iter()
            .map(|b| Chain {
                name: (*b).to_string(),
                line: 0,
                policy: Some(Policy::Accept),
                rules: Vec::new(),
            })
            .collect(),
        filter_line: 1,
    };
    let mut current: Option<Table> = None;
    let mut seen: Vec<String> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let s = raw.trim();
        if s.is_empty() || s.starts_with('#') {
            continue;
        }
        if let Some(table) = s.strip_prefix('*') {
            let table = table.trim().to_string();
            if let Some(open) = current.take() {
                diags.error(
                    name,
                    line,
                    format!(
                        "table `{table}` starts before `COMMIT` ended table `{}` (line {}) (hint: end each table with a line `COMMIT`)",
                        open.name, open.line
                    ),
                );
            }
            if seen.contains(&table) {
                diags.error(
                    name,
                    line,
                    format!("table `{table}` appears twice (hint: keep one `*{table}` section)"),
                );
            }
            if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                diags.error(
                    name,
                    line,
                    format!("`*{table}` is not a table name (hint: iptables has `*filter`, `*nat`, `*mangle`, `*raw` and `*security`)"),
                );
            }
            seen.push(table.clone());
            current = Some(Table {
                name: table,
                line,
                chains: Vec::new(),
                rules: Vec::new(),
            });
            continue;
        }
        if s == "COMMIT" {
            match current.take() {
                Some(table) => finish_table(table, &mut file, diags),
                None => diags.error(
                    name,
                    line,
                    "`COMMIT` outside a table (hint: a table starts with a line like `*filter`)",
                ),
            }
            continue;
        }
        let Some(table) = current.as_mut() else {
            diags.error(
                name,
                line,
                format!("`{}` is outside a table (hint: iptables-save files start each table with a line like `*filter` and end it with `COMMIT`)", shorten(s)),
            );
            continue;
        };
        if let Some(decl) = s.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let chain = words.next().unwrap_or("").to_string();
            let policy = words.next().map(str::to_string);
            if chain.is_empty() {
                diags.error(
                    name,
                    line,
                    "a chain declaration without a name (hint: write `:NAME POLICY [0:0]`, with `-` as the policy of a chain of your own)",
                );
                continue;
            }
            table.chains.push((chain, line, policy));
            continue;
        }
        // `[packets:bytes]` before a rule (`iptables-save -c`).
        let body = strip_counters(s);
        let args = match split_words(body) {
            Ok(args) => args,
            Err(msg) => {
                diags.error(name, line, msg);
                continue;
            }
        };
        let text = body.to_string();
        let command = args.first().map_or("", String::as_str);
        match command {
            "-A" | "--append" | "-I" | "--insert" => {
                let Some(chain) = args.get(1) else {
                    diags.error(name, line, format!("`{command}` without a chain name"));
                    continue;
                };
                let mut rest = 2;
                let mut insert_at = None;
                if matches!(command, "-I" | "--insert") {
                    insert_at = Some(1);
                    if let Some(n) = args.get(2).and_then(|a| a.parse::<usize>().ok()) {
                        insert_at = Some(n);
                        rest = 3;
                    }
                }
                table.rules.push(RawRule {
                    line,
                    text,
                    chain: chain.clone(),
                    args: args[rest..].to_vec(),
                    insert_at,
                });
            }
            "-N" | "--new-chain" => match args.get(1) {
                Some(chain) if args.len() == 2 => table.chains.push((chain.clone(), line, None)),
                _ => diags.error(name, line, "`-N` takes one chain name"),
            },
            "-P" | "--policy" => match (args.get(1), args.get(2)) {
                (Some(chain), Some(policy)) if args.len() == 3 => {
                    table
                        .chains
                        .push((chain.clone(), line, Some(policy.clone())));
                }
                _ => diags.error(name, line, "`-P` takes a chain and a policy"),
            },
            _ => diags.error(
                name,
                line,
                format!(
                    "`{}` is not a line `iptables-restore` reads here (hint: rules start with `-A CHAIN` or `-I CHAIN`)",
                    shorten(s)
                ),
            ),
        }
    }
    if let Some(open) = current {
        diags.error(
            name,
            open.line,
            format!(
                "table `{}` is not ended by `COMMIT`, so iptables-restore would apply none of it (hint: add a line `COMMIT`)",
                open.name
            ),
        );
    }
    file
}

/// A table is complete: the filter table's rules are read, the other
/// tables' are reported.
#[expect(
    clippy::too_many_lines,
    reason = "policies, chains, then rules, as iptables-restore applies them"
)]
fn finish_table(table: Table, file: &mut SourceFile, diags: &mut Diags) {
    let name = file.name.clone();
    if table.name != "filter" {
        for (chain, line, policy) in &table.chains {
            if let Some(p) = policy
                && p != "ACCEPT"
                && p != "-"
            {
                diags.unsupported(
                    &name,
                    *line,
                    &format!(":{chain} {p}"),
                    format!(
                        "the policy of `{chain}` in the `{}` table is {p}: fw filters only in its input, output and forward chains (hint: set the policy to ACCEPT and filter in the filter table; {SKIP_HINT})",
                        table.name
                    ),
                );
            }
        }
        for r in &table.rules {
            diags.unsupported(
                &name,
                r.line,
                &r.text,
                format!(
                    "the `{}` table is not translated: fw filters, it does not {} (hint: keep this rule in iptables or nftables, or remove it; {SKIP_HINT})",
                    table.name,
                    match table.name.as_str() {
                        "nat" => "rewrite addresses or ports",
                        "raw" => "exempt packets from connection tracking",
                        _ => "mark or rewrite packets",
                    }
                ),
            );
        }
        return;
    }
    file.filter_line = table.line;
    // Chains: builtin policies, chains of the ruleset's own.
    for (chain, line, policy) in &table.chains {
        let builtin = BUILTIN.contains(&chain.as_str());
        if builtin {
            let p = match policy.as_deref() {
                Some("ACCEPT") => Policy::Accept,
                Some("DROP") => Policy::Drop,
                other => {
                    diags.error(
                        &name,
                        *line,
                        format!(
                            "the policy of `{chain}` is `{}`: a builtin chain's policy is ACCEPT or DROP",
                            other.unwrap_or("")
                        ),
                    );
                    continue;
                }
            };
            if let Some(c) = file.chains.iter_mut().find(|c| &c.name == chain) {
                c.policy = Some(p);
                c.line = *line;
            }
            continue;
        }
        if policy.as_deref().is_some_and(|p| p != "-") {
            diags.error(
                &name,
                *line,
                format!(
                    "`{chain}` is not a builtin chain of the filter table, so it cannot have a policy (hint: declare it as `:{chain} - [0:0]`)"
                ),
            );
            continue;
        }
        if !valid_chain_name(chain) {
            diags.error(
                &name,
                *line,
                format!("`{}` is not a valid chain name (hint: at most 28 characters, no spaces, not starting with `-` or `!`)", shorten(chain)),
            );
            continue;
        }
        if file.chains.iter().any(|c| &c.name == chain) {
            diags.error(&name, *line, format!("chain `{chain}` is declared twice"));
            continue;
        }
        file.chains.push(Chain {
            name: chain.clone(),
            line: *line,
            policy: None,
            rules: Vec::new(),
        });
    }
    let chain_names: Vec<String> = file.chains.iter().map(|c| c.name.clone()).collect();
    for raw in table.rules {
        let Some(index) = file.chains.iter().position(|c| c.name == raw.chain) else {
            diags.error(
                &name,
                raw.line,
                format!(
                    "chain `{}` is not declared (hint: declare it at the top of the table as `:{} - [0:0]`)",
                    shorten(&raw.chain),
                    shorten(&raw.chain)
                ),
            );
            continue;
        };
        let ctx = rule::Context {
            file: &name,
            family: file.family,
            chains: &chain_names,
            line: raw.line,
            text: &raw.text,
        };
        let parsed = rule::parse(&raw.args, &ctx, diags);
        let rules = &mut file.chains[index].rules;
        match raw.insert_at {
            None => rules.push(parsed),
            Some(at) if at >= 1 && at <= rules.len() + 1 => rules.insert(at - 1, parsed),
            Some(at) => diags.error(
                &name,
                raw.line,
                format!(
                    "`-I {} {at}`: the chain has {} rules at this point, so there is no position {at} (hint: iptables numbers rules from 1)",
                    raw.chain,
                    rules.len()
                ),
            ),
        }
    }
    for chain in &mut file.chains {
        rule::fold_log_pairs(&mut chain.rules);
    }
}

fn valid_chain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 28
        && !name.starts_with(['-', '!'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A rule line without its `[packets:bytes]` prefix.
fn strip_counters(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        let counters = &rest[..end];
        if counters
            .split_once(':')
            .is_some_and(|(p, b)| is_number(p) && is_number(b))
        {
            return rest[end + 1..].trim_start();
        }
    }
    s
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Split a line into words as iptables-restore does: whitespace separates,
/// double (or single) quotes group, a backslash escapes the next character.
pub(super) fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => word.push(c),
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (w, None) if w.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, None) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed (hint: end the quoted text with `\"`)".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A text for a message: at most 60 characters.
pub(super) fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        let head: String = s.chars().take(57).collect();
        format!("{head}...")
    }
}
