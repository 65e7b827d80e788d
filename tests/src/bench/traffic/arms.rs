//! The filters a flood meets, one per arm, each installed in the server
//! namespace of a fresh bed, and how each one's own counter shows that it
//! dropped the flood.

use std::{fmt::Write as _, path::PathBuf};

use super::{Flood, bed::Bed};
use crate::bench::policies::{self, DENIED_PORT, LISTED};

/// Which arm, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    None,
    XdpDrop,
    Fw,
    XdpFilter,
    IptablesRaw,
    Iptables,
    IptablesIpset,
    Nft,
    NftSet,
}

impl Arm {
    pub const ALL: [Self; 9] = [
        Self::None,
        Self::XdpDrop,
        Self::Fw,
        Self::XdpFilter,
        Self::IptablesRaw,
        Self::Iptables,
        Self::IptablesIpset,
        Self::Nft,
        Self::NftSet,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::XdpDrop => "xdp-drop",
            Self::Fw => "fw",
            Self::XdpFilter => "xdp-filter",
            Self::IptablesRaw => "iptables-raw",
            Self::Iptables => "iptables",
            Self::IptablesIpset => "iptables+ipset",
            Self::Nft => "nft",
            Self::NftSet => "nft-set",
        }
    }

    /// Does the flood pass through the arm's XDP program, before the stack?
    #[must_use]
    pub const fn is_xdp(self) -> bool {
        matches!(self, Self::XdpDrop | Self::Fw | Self::XdpFilter)
    }
}

/// Which workload an arm runs a flood with: none (one fixed rule), `n`
/// rules, or a blocklist of `n` prefixes.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    Fixed,
    Rules(u64),
    Set(u64),
}

/// How to read the counter that proves the arm dropped the flood.
pub enum Counter {
    /// No counter of its own (no filter, or the bare `XDP_DROP`: the stack's
    /// counters show what got through).
    None,
    /// fw's rule `name` in the input chain, or its default (`None`).
    Fw { pin: String, rule: Option<String> },
    /// xdp-filter's aggregate `XDP_DROP` count.
    XdpFilter,
    /// Packets of rule `index` (1-based; 0: the last) of iptables chain.
    Iptables {
        table: &'static str,
        chain: &'static str,
        index: usize,
    },
    /// A named nftables counter in table `inet fwbench`.
    Nft(&'static str),
}

/// An installed filter.
pub struct Filter {
    pub counter: Counter,
    /// What the arm ran, for the note.
    pub what: String,
    /// For fw: unload before the namespace goes.
    fw_pin: Option<String>,
}

/// Path of fw-user: `$FW_USER_BIN`, or beside this binary (target/release/
/// for fw-bench), or one level up (test binaries live in deps/).
fn fw_user_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FW_USER_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let dir = exe.parent().ok_or("no directory for the current exe")?;
    [dir.join("fw-user"), dir.join("../fw-user")]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no fw-user beside {}: build it (`cargo build -p fw-user --release`) or set FW_USER_BIN",
                exe.display()
            )
        })
}

/// `fw-user ARGS` in the server namespace.
pub fn fw_user(bed: &Bed, args: &[&str]) -> Result<String, String> {
    let bin = fw_user_bin()?;
    let mut cmd = vec![bin.to_str().ok_or("fw-user path is not UTF-8")?];
    cmd.extend_from_slice(args);
    bed.srv_exec(&cmd)
}

/// `fw-user export` of `policy`: the iptables-restore text of the same policy.
fn export(policy: &std::path::Path) -> Result<String, String> {
    let bin = fw_user_bin()?;
    let out = std::process::Command::new(bin)
        .arg("export")
        .arg(policy)
        .output()
        .map_err(|e| format!("fw-user export: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fw-user export {}: {}",
            policy.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("fw-user export: {e}"))
}

fn write(bed: &Bed, name: &str, text: &str) -> Result<PathBuf, String> {
    let p = bed.workdir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The L4 protocol and destination port of a flood, for the one-rule arms.
const fn l4(flood: Flood) -> (&'static str, u16) {
    match flood {
        Flood::Udp => ("udp", DENIED_PORT),
        Flood::Syn | Flood::Listed => ("tcp", DENIED_PORT),
    }
}

/// Install `arm` at `size` for `flood` in `bed`'s server namespace.
///
/// # Errors
/// The arm could not be installed (the message says why; for fw, a policy
/// it refuses).
#[expect(
    clippy::too_many_lines,
    reason = "one match arm per filter, each a few commands: clearer side by side"
)]
pub fn install(bed: &mut Bed, arm: Arm, size: Size, flood: Flood) -> Result<Filter, String> {
    let (proto, port) = l4(flood);
    let fixed = |counter, what: String| Filter {
        counter,
        what,
        fw_pin: None,
    };
    match (arm, size) {
        (Arm::None, _) => Ok(fixed(
            Counter::None,
            "no filter: the stack drops the flood at a closed port".into(),
        )),
        (Arm::XdpDrop, _) => {
            bed.attach_drop()?;
            Ok(fixed(
                Counter::None,
                "bare XDP program `r0 = XDP_DROP; exit`, native mode".into(),
            ))
        }
        (Arm::Fw, Size::Rules(n) | Size::Set(n)) => {
            let (rules, set) = match size {
                Size::Set(_) => (0, n),
                _ => (n, 0),
            };
            let w = policies::write(&bed.workdir, rules, set)
                .map_err(|e| format!("writing the workload: {e}"))?;
            let pin = bed.bpffs.dir.join("fw").display().to_string();
            let policy = w.policy.display().to_string();
            fw_user(
                bed,
                &[
                    "load",
                    &policy,
                    "--iface",
                    &bed.srv_if,
                    "--pin-path",
                    &pin,
                    "--detach",
                    "--backend",
                    "xdp",
                ],
            )?;
            let rule = (set > 0).then(|| "blocklist".to_string());
            Ok(Filter {
                counter: Counter::Fw {
                    pin: pin.clone(),
                    rule,
                },
                what: format!(
                    "fw-user load --backend xdp (XDP native), {rules} rules, blocklist of {set}"
                ),
                fw_pin: Some(pin),
            })
        }
        (Arm::XdpFilter, _) => {
            let (features, add) = match flood {
                Flood::Listed => ("ipv4", format!("xdp-filter ip {LISTED} --mode src")),
                _ => (
                    proto,
                    format!("xdp-filter port {port} --proto {proto} --mode dst"),
                ),
            };
            bed.srv_sh_bpffs(&format!(
                "xdp-filter load {} --mode native --policy allow --features {features} && {add}",
                bed.srv_if
            ))?;
            Ok(fixed(
                Counter::XdpFilter,
                format!("xdp-filter (native, features {features}, deny list): {add}"),
            ))
        }
        (Arm::IptablesRaw, _) => {
            let rule = match flood {
                Flood::Listed => format!("-s {LISTED} -j DROP"),
                _ => format!("-p {proto} --dport {port} -j DROP"),
            };
            let args: Vec<&str> = ["iptables", "-t", "raw", "-A", "PREROUTING"]
                .into_iter()
                .chain(rule.split(' '))
                .collect();
            bed.srv_exec(&args)?;
            Ok(fixed(
                Counter::Iptables {
                    table: "raw",
                    chain: "PREROUTING",
                    index: 1,
                },
                format!("iptables -t raw -A PREROUTING {rule} (conntrack never sees it)"),
            ))
        }
        (Arm::Iptables, Size::Rules(n)) => {
            let w = policies::write(&bed.workdir, n, 0)
                .map_err(|e| format!("writing the workload: {e}"))?;
            let rules = export(&w.policy)?;
            let file = write(bed, "rules.v4", &rules)?;
            bed.srv_exec(&["iptables-restore", &file.display().to_string()])?;
            Ok(fixed(
                Counter::Iptables {
                    table: "filter",
                    chain: "FW-INPUT",
                    index: 0,
                },
                format!("iptables-restore of `fw-user export` ({n} rules, conntrack)"),
            ))
        }
        (Arm::IptablesIpset, Size::Set(n)) => {
            let mut set = format!(
                "create fwbench hash:net family inet hashsize {} maxelem {}\n",
                (n / 2).next_power_of_two().max(1024),
                n.max(65_536) * 2
            );
            for p in policies::blocklist(n) {
                let _ = writeln!(set, "add fwbench {p}");
            }
            let set_file = write(bed, "ipset.restore", &set)?;
            bed.srv_exec_input(&["ipset", "restore"], &set_file)?;
            // The workload's policy without the set, and the set as one
            // `-m set` rule where fw puts the blocklist rule: after the
            // state rules, before the default.
            let w = policies::write(&bed.workdir, 0, 0)
                .map_err(|e| format!("writing the workload: {e}"))?;
            let exported = export(&w.policy)?;
            let marker = "# input default: drop";
            if !exported.contains(marker) {
                return Err(format!("fw-user export printed no {marker:?} line"));
            }
            let rules = exported.replacen(
                marker,
                &format!("-A FW-INPUT -m set --match-set fwbench src -j DROP\n{marker}"),
                1,
            );
            let file = write(bed, "rules.v4", &rules)?;
            bed.srv_exec(&["iptables-restore", &file.display().to_string()])?;
            let index = rule_index(bed, "filter", "FW-INPUT", "match-set")?;
            Ok(fixed(
                Counter::Iptables {
                    table: "filter",
                    chain: "FW-INPUT",
                    index,
                },
                format!("ipset hash:net of {n} prefixes, one -m set rule in the exported policy"),
            ))
        }
        (Arm::Nft | Arm::NftSet, _) => {
            let (rules, set) = match size {
                Size::Rules(n) => (n, 0),
                Size::Set(n) => (0, n),
                Size::Fixed => (0, 0),
            };
            let text = nft_ruleset(rules, set);
            let file = write(bed, "ruleset.nft", &text)?;
            bed.srv_exec(&["nft", "-f", &file.display().to_string()])?;
            let counter = if set > 0 {
                "fwbench_set"
            } else {
                "fwbench_drop"
            };
            Ok(fixed(
                Counter::Nft(counter),
                format!("nftables inet input hook, {rules} rules, interval set of {set}"),
            ))
        }
        (arm, size) => Err(format!("{} does not run at {size:?}", arm.name())),
    }
}

/// The 1-based position of the first rule of `chain` whose
/// `iptables -S` line contains `needle`.
fn rule_index(bed: &Bed, table: &str, chain: &str, needle: &str) -> Result<usize, String> {
    let out = bed.srv_exec(&["iptables", "-t", table, "-S", chain])?;
    out.lines()
        .filter(|l| l.starts_with("-A "))
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .ok_or_else(|| format!("no rule with {needle:?} in {table}/{chain}:\n{out}"))
}

/// The workload in nftables: the exported policy's input chain (loopback
/// spoofing, state, the rules in order, the default), with the blocklist
/// as an interval set.
#[must_use]
pub fn nft_ruleset(rules: u64, set: u64) -> String {
    let mut t = String::with_capacity(256 + usize::try_from(rules + set).unwrap_or(0) * 48);
    t.push_str("table inet fwbench {\n  counter fwbench_drop { }\n  counter fwbench_set { }\n");
    if set > 0 {
        t.push_str("  set blocklist {\n    type ipv4_addr\n    flags interval\n    auto-merge\n    elements = { ");
        for (i, p) in policies::blocklist(set).iter().enumerate() {
            if i > 0 {
                t.push_str(", ");
            }
            let _ = write!(t, "{p}");
        }
        t.push_str(" }\n  }\n");
    }
    t.push_str(
        "  chain input {\n    type filter hook input priority filter; policy accept;\n    \
         iif \"lo\" accept\n    ip saddr 127.0.0.0/8 drop\n    ip daddr 127.0.0.0/8 drop\n    \
         ct state established accept\n    ct state related accept\n    ct state invalid drop\n    \
         tcp flags & (fin|syn|rst|ack) != syn ct state new drop\n",
    );
    if set > 0 {
        t.push_str("    ip saddr @blocklist counter name \"fwbench_set\" drop\n");
    }
    for i in 0..rules {
        let _ = writeln!(
            t,
            "    ip saddr {} tcp dport {} accept",
            policies::rule_source(i),
            policies::rule_port(i)
        );
    }
    t.push_str("    counter name \"fwbench_drop\" drop\n  }\n}\n");
    t
}

impl Filter {
    /// The arm's own count of the packets it dropped, cumulative; `None`
    /// for arms without one.
    ///
    /// # Errors
    /// The counter could not be read.
    pub fn count(&self, bed: &Bed) -> Result<Option<u64>, String> {
        match &self.counter {
            Counter::None => Ok(None),
            Counter::Fw { pin, rule } => {
                let out = fw_user(bed, &["status", "--json", "--pin-path", pin])?;
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| format!("fw status --json: {e}"))?;
                let input = v["chains"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["name"] == "input"))
                    .ok_or("fw status --json has no input chain")?;
                let n = match rule {
                    None => input["packets"].as_u64(),
                    Some(name) => input["rules"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["name"] == name.as_str()))
                        .and_then(|r| r["packets"].as_u64()),
                };
                n.map(Some)
                    .ok_or_else(|| format!("no packet count for {rule:?} in fw status"))
            }
            Counter::XdpFilter => {
                // `xdp-filter status` exits non-zero even when it prints.
                let out = bed
                    .srv_sh_bpffs("xdp-filter status; true")
                    .unwrap_or_default();
                out.lines()
                    .find(|l| l.trim_start().starts_with("XDP_DROP"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
                    .map(Some)
                    .ok_or_else(|| format!("no XDP_DROP line in xdp-filter status:\n{out}"))
            }
            Counter::Iptables {
                table,
                chain,
                index,
            } => {
                let out = bed.srv_exec(&["iptables", "-t", table, "-vnxL", chain])?;
                let rows: Vec<&str> = out.lines().skip(2).filter(|l| !l.is_empty()).collect();
                let row = if *index == 0 {
                    rows.last()
                } else {
                    rows.get(index - 1)
                };
                row.and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .map(Some)
                    .ok_or_else(|| {
                        format!("no rule {index} in iptables -t {table} -vnxL {chain}:\n{out}")
                    })
            }
            Counter::Nft(name) => {
                let out = bed.srv_exec(&["nft", "list", "counter", "inet", "fwbench", name])?;
                let mut words = out.split_whitespace();
                words
                    .by_ref()
                    .find(|w| *w == "packets")
                    .and(words.next())
                    .and_then(|n| n.parse().ok())
                    .map(Some)
                    .ok_or_else(|| format!("no packet count in nft list counter {name}:\n{out}"))
            }
        }
    }

    /// Take the filter out (fw's pins would otherwise outlive the bed's
    /// namespace until the bpffs goes).
    pub fn remove(&self, bed: &Bed) {
        if let Some(pin) = &self.fw_pin
            && let Err(e) = fw_user(bed, &["unload", "--pin-path", pin])
        {
            eprintln!("traffic: fw-user unload: {e}");
        }
    }
}
