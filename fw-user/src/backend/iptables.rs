//! The fallback backend: the same policy as iptables/ip6tables rules, for
//! hosts where the eBPF datapath cannot run (old kernel, no `CAP_BPF`,
//! lockdown, an interface that refuses XDP).
//!
//! fw owns its chains (`FW-INPUT`, `FW-OUTPUT`, `FW-FORWARD` and their
//! helpers) in the filter table and adds one jump per guarded interface to
//! the builtin chains, so rules of other tools stay. A load writes each
//! family's chains with one `iptables-restore --noflush` (a restore is one
//! transaction: the old rules stay in force until the new ones are
//! complete), then adds missing jumps and removes the jumps of interfaces
//! no longer guarded. LOG rules become NFLOG rules (group `NFLOG_GROUP`),
//! which work in every network namespace and which `fw-user events` reads.
//!
//! What is loaded is recorded in a state file under `/run/fw/`, named
//! after the pin path, so `status` and `unload` know the backend in force.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    iptables::{IpFamily, export},
    pin::PinLayout,
    policy::Policy,
};

/// NFLOG group of the events of this backend.
pub const NFLOG_GROUP: u16 = 16;

/// Where the state of the iptables backend of the firewall at `layout`
/// lives.
#[must_use]
pub fn state_path(layout: &PinLayout) -> PathBuf {
    PathBuf::from("/run/fw").join(format!("iptables{}.json", layout.file_name()))
}

/// What a load put in place.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub policy_name: String,
    /// `Policy::hash`, shown by `status`.
    pub policy_hash: u64,
    /// Guarded interfaces; `None`: every interface but lo.
    pub ifaces: Option<Vec<String>>,
    /// The jumps added to builtin chains: (family, chain, rule spec).
    pub hooks: Vec<Hook>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hook {
    pub family: String,
    pub chain: String,
    pub spec: Vec<String>,
}

/// Is the iptables backend in force for `layout`?
#[must_use]
pub fn is_active(layout: &PinLayout) -> bool {
    state_path(layout).exists()
}

/// The recorded state, if the backend is in force.
///
/// # Errors
/// The state file exists but cannot be read.
pub fn state(layout: &PinLayout) -> Result<Option<State>> {
    let path = state_path(layout);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::io(
                format!(
                    "cannot read `{}` (hint: remove it if no fw iptables rules are loaded)",
                    path.display()
                ),
                std::io::Error::other(e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    }
}

fn families() -> [IpFamily; 2] {
    [IpFamily::V4, IpFamily::V6]
}

fn iptables_command(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "iptables",
        IpFamily::V6 => "ip6tables",
    }
}

/// Can this host run the backend? (`iptables-restore` is installed.)
///
/// # Errors
/// A message saying what is missing.
pub fn available() -> std::result::Result<(), String> {
    for f in families() {
        let ok = Command::new(f.restore_command())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "`{}` is not installed (apt-get install iptables)",
                f.restore_command()
            ));
        }
    }
    Ok(())
}

/// Run `cmd args` with `input` on stdin; an error carries its stderr.
fn run(cmd: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::io(
                format!("cannot run `{cmd}` (hint: apt-get install iptables)"),
                e,
            )
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::io(format!("cannot feed `{cmd}`"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("`{cmd}` did not finish"), e))?;
    if !out.status.success() {
        return Err(Error::io(
            format!(
                "`{cmd} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::Error::other("iptables refused the rules"),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `export::chains` with LOG rules turned into NFLOG rules for the event
/// reader (kernel LOG output is off in network namespaces other than the
/// first, and syslog parsing would be guesswork).
#[must_use]
pub fn backend_chains(policy: &Policy, family: IpFamily) -> String {
    export::chains(policy, family)
        .lines()
        .map(|line| {
            if !line.contains("-j LOG") {
                return line.to_string();
            }
            let mut out = Vec::new();
            let mut words = shell_words(line).into_iter();
            while let Some(w) = words.next() {
                match w.as_str() {
                    "LOG" if out.last().is_some_and(|l: &String| l == "-j") => {
                        out.push("NFLOG".into());
                        out.push("--nflog-group".into());
                        out.push(NFLOG_GROUP.to_string());
                    }
                    "--log-prefix" => {
                        out.push("--nflog-prefix".into());
                        if let Some(p) = words.next() {
                            out.push(p);
                        }
                    }
                    "--log-level" => {
                        let _ = words.next();
                    }
                    "--log-tcp-sequence" | "--log-tcp-options" | "--log-ip-options"
                    | "--log-uid" => {}
                    _ => out.push(w),
                }
            }
            out.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Split an iptables-restore line into words, honouring double quotes
/// and backslash escapes inside them (as iptables-restore reads them).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

fn quote(w: &str) -> String {
    if w.is_empty() || w.contains(char::is_whitespace) || w.contains(['"', '\\']) {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w.to_string()
    }
}

/// What a load did.
#[derive(Debug)]
pub struct Report {
    pub fresh: bool,
    pub hooked: Vec<String>,
    pub unhooked: Vec<String>,
}

/// Put `policy` in place for `ifaces` (`None`: every interface but lo).
///
/// # Errors
/// iptables refused the rules; what was in force before stays (each
/// family's restore is one transaction; a failure in the second family
/// restores the first).
pub fn load(
    layout: &PinLayout,
    policy: &Policy,
    policy_name: &str,
    ifaces: Option<&[String]>,
) -> Result<Report> {
    available().map_err(|m| Error::Usage {
        message: format!("the iptables backend cannot run: {m}"),
        hint: "install iptables, or use --backend xdp".into(),
    })?;
    let previous = state(layout)?;
    // Keep what is in force, to put it back if the second family fails.
    let mut saved = Vec::new();
    for f in families() {
        saved.push(own_chains_snapshot(f)?);
    }
    for (i, f) in families().into_iter().enumerate() {
        if let Err(e) = run(
            f.restore_command(),
            &["--noflush", "--wait"],
            Some(&backend_chains(policy, f)),
        ) {
            for (g, snap) in families().into_iter().zip(&saved).take(i) {
                let _ = run(g.restore_command(), &["--noflush", "--wait"], Some(snap));
            }
            return Err(e);
        }
    }
    for f in families() {
        remove_stale_chains(f, &backend_chains(policy, f))?;
    }
    let wanted: Vec<Hook> = families()
        .into_iter()
        .flat_map(|f| {
            export::hooks(&export::Target {
                ifaces: ifaces.map(<[String]>::to_vec),
            })
            .into_iter()
            .map(move |(chain, spec)| Hook {
                family: f.name().to_string(),
                chain: chain.to_string(),
                spec,
            })
        })
        .collect();
    let mut hooked = Vec::new();
    for h in &wanted {
        if !hook_present(h) {
            hook_insert(h)?;
            hooked.push(describe(h));
        }
    }
    let mut unhooked = Vec::new();
    if let Some(prev) = &previous {
        for h in prev.hooks.iter().filter(|h| !wanted.contains(h)) {
            if hook_present(h) {
                hook_delete(h)?;
                unhooked.push(describe(h));
            }
        }
    }
    write_state(
        layout,
        &State {
            policy_name: policy_name.to_string(),
            policy_hash: policy.hash,
            ifaces: ifaces.map(<[String]>::to_vec),
            hooks: wanted,
        },
    )?;
    Ok(Report {
        fresh: previous.is_none(),
        hooked,
        unhooked,
    })
}

/// The interface a jump is for, as `unload` reports it.
fn hook_iface(h: &Hook) -> String {
    match h.spec.as_slice() {
        [neg, _, lo, ..] if neg == "!" => format!("every interface but {lo}"),
        [_, name, ..] => name.clone(),
        _ => h.spec.join(" "),
    }
}

fn describe(h: &Hook) -> String {
    format!("{} {} {}", h.family, h.chain, h.spec.join(" "))
}

fn family_of(h: &Hook) -> IpFamily {
    if h.family == "ipv6" {
        IpFamily::V6
    } else {
        IpFamily::V4
    }
}

fn hook_args<'a>(op: &'a str, h: &'a Hook) -> Vec<&'a str> {
    let mut args = vec!["-w", op, h.chain.as_str()];
    args.extend(h.spec.iter().map(String::as_str));
    args
}

fn hook_present(h: &Hook) -> bool {
    run(iptables_command(family_of(h)), &hook_args("-C", h), None).is_ok()
}

fn hook_insert(h: &Hook) -> Result<()> {
    let mut args = vec!["-w", "-I", h.chain.as_str(), "1"];
    args.extend(h.spec.iter().map(String::as_str));
    run(iptables_command(family_of(h)), &args, None).map(|_| ())
}

fn hook_delete(h: &Hook) -> Result<()> {
    run(iptables_command(family_of(h)), &hook_args("-D", h), None).map(|_| ())
}

fn write_state(layout: &PinLayout, s: &State) -> Result<()> {
    let path = state_path(layout);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    }
    let text = serde_json::to_string_pretty(s).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))
}

/// fw's chains as `iptables-save` shows them (a restore input that
/// recreates them), or an empty table section when there are none.
fn own_chains_snapshot(f: IpFamily) -> Result<String> {
    let save = match f {
        IpFamily::V4 => "iptables-save",
        IpFamily::V6 => "ip6tables-save",
    };
    let text = run(save, &["-t", "filter"], None)?;
    let mut out = String::from("*filter\n");
    for line in text.lines() {
        let own_decl = line.starts_with(":FW-");
        let own_rule = line.starts_with("-A FW-");
        if own_decl || own_rule {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    Ok(out)
}

/// Delete fw's helper chains the policy just restored no longer declares
/// (nothing refers to them any more).
fn remove_stale_chains(f: IpFamily, restored: &str) -> Result<()> {
    let declared: Vec<&str> = restored
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let present = own_chains_snapshot(f)?;
    let stale: Vec<&str> = present
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| !declared.contains(c))
        .collect();
    for op in ["-F", "-X"] {
        for c in &stale {
            run(iptables_command(f), &["-w", op, c], None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{quote, shell_words};

    #[test]
    fn words_round_trip_through_quotes_and_escapes() {
        let line = r#"-A FW-LOG -j LOG --log-prefix "say \"hi\" \\ now: ""#;
        let words = shell_words(line);
        assert_eq!(
            words.last().map(String::as_str),
            Some(r#"say "hi" \ now: "#)
        );
        let again: Vec<String> = words.iter().map(|w| quote(w)).collect();
        assert_eq!(shell_words(&again.join(" ")), words);
    }
}

/// Remove fw's rules: the jumps, then every `FW-` chain.
///
/// # Errors
/// Nothing of the iptables backend is loaded, or iptables refused.
pub fn unload(layout: &PinLayout) -> Result<Vec<String>> {
    let Some(s) = state(layout)? else {
        return Err(Error::NotLoaded(layout.root.clone()));
    };
    let mut freed = Vec::new();
    for h in &s.hooks {
        if hook_present(h) {
            hook_delete(h)?;
        }
        freed.push(hook_iface(h));
    }
    for f in families() {
        let text = own_chains_snapshot(f)?;
        let chains: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for op in ["-F", "-X"] {
            for c in &chains {
                run(iptables_command(f), &["-w", op, c], None)?;
            }
        }
    }
    fs::remove_file(state_path(layout))
        .map_err(|e| Error::io("cannot remove the iptables backend's state file", e))?;
    freed.sort();
    freed.dedup();
    Ok(freed)
}

/// One rule of fw's chains with its counters, as `iptables-save -c` reads.
#[derive(Debug, Serialize)]
pub struct RuleCounter {
    pub family: &'static str,
    pub chain: String,
    pub packets: u64,
    pub bytes: u64,
    pub rule: String,
}

/// The counters of every rule in fw's chains.
///
/// # Errors
/// iptables-save failed.
pub fn counters() -> Result<Vec<RuleCounter>> {
    let mut out = Vec::new();
    for f in families() {
        let save = match f {
            IpFamily::V4 => "iptables-save",
            IpFamily::V6 => "ip6tables-save",
        };
        let text = run(save, &["-c", "-t", "filter"], None)?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix('[') else {
                continue;
            };
            let Some((nums, rule)) = rest.split_once("] ") else {
                continue;
            };
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            let Some((chain, _)) = spec.split_once(' ') else {
                continue;
            };
            if !chain.starts_with("FW-") {
                continue;
            }
            let (p, b) = nums.split_once(':').unwrap_or(("0", "0"));
            out.push(RuleCounter {
                family: f.name(),
                chain: chain.to_string(),
                packets: p.parse().unwrap_or(0),
                bytes: b.parse().unwrap_or(0),
                rule: rule.to_string(),
            });
        }
    }
    Ok(out)
}

/// Connections in the kernel's conntrack table (this namespace).
#[must_use]
pub fn conntrack_count() -> Option<u64> {
    fs::read_to_string(Path::new("/proc/sys/net/netfilter/nf_conntrack_count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}
