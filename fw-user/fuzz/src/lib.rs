//! What the policy fuzz targets share: how an input becomes a policy text
//! and a set file, the reader that serves that file instead of the disk,
//! and the properties every error and every parsed policy must have.

use std::path::Path;

use fw_user::{
    error::PolicyError,
    policy::{Policy, parse_with_set_files},
};

/// How the targets name the policy in messages.
pub const POLICY_NAME: &str = "fuzz.toml";
/// The one set file the targets serve (`{ file = "set.txt" }`).
pub const SET_FILE: &str = "set.txt";
/// `set.txt` when the input carries none.
const DEFAULT_SET: &str = "192.0.2.0/24\n2001:db8::/48 # docs\n";

/// A fuzz input: the policy text, then optionally a NUL byte and the text
/// of `set.txt`.
pub struct Input<'a> {
    pub policy: &'a str,
    pub set_file: &'a str,
}

impl<'a> Input<'a> {
    /// `None` for bytes that are not UTF-8: a policy file is text, and
    /// `fw-user` refuses other bytes before the parser sees them.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let (policy, set_file) = text.split_once('\0').unwrap_or((text, DEFAULT_SET));
        Some(Self { policy, set_file })
    }

    /// Parse the policy; `set.txt` is served from the input, and no other
    /// file exists: the targets must not read the machine's files
    /// (`/dev/zero` never ends, `/proc` and `/sys` have side effects).
    ///
    /// # Errors
    /// What the parser rejects.
    pub fn parse(&self) -> Result<Policy, PolicyError> {
        let read = |path: &Path| {
            if path == Path::new(SET_FILE) {
                Ok(self.set_file.to_string())
            } else {
                Err("no such file (the fuzz targets serve only `set.txt`)".to_string())
            }
        };
        parse_with_set_files(self.policy, POLICY_NAME, &read)
    }
}

/// An error must say where and what: a line and column inside `text` (one
/// past the last line for "missing" errors at the end), a message and a
/// hint, and a `file:line:column: ` prefix on its display.
pub fn check_error(e: &PolicyError, text: &str) {
    let lines = text.matches('\n').count() + 1;
    assert!(
        (1..=lines + 1).contains(&e.line),
        "line {} outside 1..={}: {e}",
        e.line,
        lines + 1
    );
    assert!(e.column >= 1, "column 0: {e}");
    assert_eq!(e.file, POLICY_NAME, "{e}");
    assert!(!e.message.trim().is_empty(), "an empty message: {e:?}");
    assert!(!e.hint.trim().is_empty(), "an empty hint: {e:?}");
    let shown = e.to_string();
    let prefix = format!("{POLICY_NAME}:{}:{}: ", e.line, e.column);
    assert!(shown.starts_with(&prefix), "no location prefix: {shown}");
}

/// A parsed policy must describe itself without panicking (`status` and
/// the compiler print every rule), and every rule's line is in the text.
pub fn check_policy(p: &Policy, text: &str) {
    assert_eq!(p.hash, fw_user::policy::fingerprint(text));
    let lines = text.matches('\n').count() + 1;
    for rule in p.input.iter().chain(&p.output).chain(&p.forward) {
        assert!((1..=lines).contains(&rule.line), "rule line {}", rule.line);
        assert!(!rule.to_string().is_empty());
        for l in rule.limit.iter().chain(&rule.log_rate) {
            assert!(l.interval_ns > 0, "a rate of zero interval: {rule}");
        }
    }
    assert!(p.log.rate.interval_ns > 0, "[log] rate has a zero interval");
}
