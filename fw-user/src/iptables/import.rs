//! `iptables-save` → policy: what `fw-user import rules.v4 [--ipv6
//! rules.v6]` prints.
//!
//! The import is exact or it says why not: every construct fw cannot
//! express is reported with its file and line (and the import fails,
//! unless the caller asked to leave such rules out), nothing is guessed
//! silently. The pipeline, one submodule each:
//!
//! 1. `syntax`: the file's structure (`*table`, `:CHAIN POLICY`, `-A`,
//!    `-I`, `COMMIT`) and each line's words, quotes undone;
//! 2. `rule`: one rule's options → its match (`matches::Match`, or a few
//!    disjoint ones where iptables' match is a disjunction, such as
//!    `--ports`) and its target;
//! 3. `flatten`: custom chains inlined into INPUT, OUTPUT and FORWARD, the
//!    jump's matches added to each inlined rule and what a RETURN took
//!    away subtracted from the rules after it;
//! 4. `stages`: which `[stateful]` stages reproduce the ruleset exactly,
//!    and the rules they make redundant;
//! 5. `emit`: IPv4 and IPv6 merged, the TOML written.
//!
//! Choices worth knowing (the generated file repeats those that apply):
//!
//! * A file not given is the empty ruleset of a host where only the other
//!   file was restored: that family is accepted, as before, and a warning
//!   says so.
//! * A `[stateful]` stage keeps fw's default only where that is exactly
//!   what every chain does with the state's packets before any other rule
//!   sees them; otherwise it is `"rules"` and the ruleset's own state rules
//!   are kept in order. So a ruleset without an ESTABLISHED accept imports
//!   with `established = "rules"`: fw's default would accept more.
//! * Netfilter's TCP pick-up (`nf_conntrack_tcp_loose`) makes a lone ACK
//!   NEW; fw does the same with `tcp_syn_only = false`, but also takes
//!   SYN/ACK and FIN/ACK for NEW, which netfilter finds INVALID. Where that
//!   difference could change a verdict, rules at the top of the chain give
//!   those segments the INVALID treatment of the original ruleset.
//! * The host's own packets are practically never INVALID (netfilter marks
//!   them so only in corner cases, e.g. after its connection entry
//!   expired), so OUTPUT does not stop `invalid = "drop"` or
//!   `tcp_syn_only = true` unless its rules look at INVALID or TCP flags.
//!   Likewise a FORWARD chain that accepts nothing can have no established
//!   or related packets, so it does not stop those stages.
//! * iptables' `-m limit` is one rate per line of the ruleset, fw's `limit`
//!   one per rule: a limit that would end up in several fw rules (a jump
//!   with a limit to a chain of several rules) is unsupported, unless only
//!   LOG rules share it (then only the number of log lines changes: a
//!   warning).
//! * fw's ports start at 1: a negated port match (`! --dport 22`, or what a
//!   RETURN leaves) does not match port 0 in fw, with a warning.

mod emit;
mod flatten;
mod matches;
mod rule;
mod stages;
mod syntax;

use std::fmt;

use super::IpFamily;

/// How `import` treats constructs fw cannot express.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Leave such rules out (listed in `Imported::skipped` and as
    /// comments in the TOML) instead of failing.
    pub skip_unsupported: bool,
}

/// A message about one line of an imported file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A successful import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The policy, with a header saying where it came from and each rule's
    /// source lines as comments.
    pub toml: String,
    /// Rules that are imported faithfully but are classic holes, and
    /// choices the reader should know of.
    pub warnings: Vec<Diagnostic>,
    /// Rules left out under `skip_unsupported`, each with the reason.
    pub skipped: Vec<Diagnostic>,
}

/// Why nothing was imported: every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportError {}

/// Turn `iptables-save` output into a policy: `v4` and `v6` are (file
/// name, text) of the IPv4 and IPv6 rulesets; at least one is needed.
///
/// # Errors
/// Every unsupported construct (unless `opts.skip_unsupported`) and every
/// error in the files, each with its file and line.
pub fn import(
    v4: Option<(&str, &str)>,
    v6: Option<(&str, &str)>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut diags = Diags::default();
    if v4.is_none() && v6.is_none() {
        return Err(ImportError {
            diagnostics: vec![Diagnostic {
                file: "<none>".into(),
                line: 0,
                message: "no ruleset to import (hint: name the `iptables-save` file, and the `ip6tables-save` one with --ipv6)".into(),
            }],
        });
    }
    let mut families = Vec::new();
    for (family, given) in [(IpFamily::V4, v4), (IpFamily::V6, v6)] {
        if let Some((name, text)) = given {
            let file = syntax::parse_file(name, text, family, &mut diags);
            families.push(flatten::flatten(&file, &mut diags));
        }
    }
    let toml = if diags.errors.is_empty() {
        let plan = stages::plan(families, &mut diags);
        emit::write(&plan, &mut diags)
    } else {
        String::new()
    };
    let Diags {
        errors,
        unsupported,
        warnings,
        ..
    } = diags;
    if !errors.is_empty() || (!opts.skip_unsupported && !unsupported.is_empty()) {
        let mut diagnostics = errors;
        diagnostics.extend(unsupported);
        diagnostics.sort_by(|a, b| file_order(a, b, v4).then(a.line.cmp(&b.line)));
        diagnostics.dedup();
        return Err(ImportError { diagnostics });
    }
    let mut skipped = unsupported;
    skipped.sort_by(|a, b| file_order(a, b, v4).then(a.line.cmp(&b.line)));
    Ok(Imported {
        toml,
        warnings,
        skipped,
    })
}

/// The IPv4 file's diagnostics first.
fn file_order(a: &Diagnostic, b: &Diagnostic, v4: Option<(&str, &str)>) -> std::cmp::Ordering {
    let rank = |d: &Diagnostic| u8::from(v4.is_none_or(|(name, _)| d.file != name));
    rank(a).cmp(&rank(b))
}

/// What the stages found, by kind. Each list is free of duplicates (a rule
/// inlined in several places is reported once).
#[derive(Default)]
struct Diags {
    /// The files are not valid iptables input, or cannot be imported at
    /// all: never skipped.
    errors: Vec<Diagnostic>,
    /// Constructs fw cannot express: fail, or leave the rule out.
    unsupported: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// The text of each rule in `unsupported`, for the TOML's comments.
    skipped_text: Vec<String>,
}

impl Diags {
    fn error(&mut self, file: &str, line: usize, message: impl Into<String>) {
        push_new(&mut self.errors, file, line, message.into());
    }

    fn unsupported(&mut self, file: &str, line: usize, text: &str, message: impl Into<String>) {
        if push_new(&mut self.unsupported, file, line, message.into()) {
            self.skipped_text.push(text.to_string());
        }
    }

    fn warn(&mut self, file: &str, line: usize, message: impl Into<String>) {
        push_new(&mut self.warnings, file, line, message.into());
    }
}

fn push_new(list: &mut Vec<Diagnostic>, file: &str, line: usize, message: String) -> bool {
    let d = Diagnostic {
        file: file.to_string(),
        line,
        message,
    };
    if list.contains(&d) {
        false
    } else {
        list.push(d);
        true
    }
}

/// The hint every unsupported construct ends with.
const SKIP_HINT: &str = "or import with --skip-unsupported to leave the rule out";

#[cfg(test)]
mod tests;

#[cfg(test)]
mod robustness_tests;
