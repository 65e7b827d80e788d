//! The control plane: how long it takes to turn a policy into a working
//! firewall, to swap it for another atomically, and how much kernel memory
//! the result holds; fw beside `iptables-restore`, `nft -f` and
//! `ipset restore` on the same workloads (`policies::write`).
//!
//! Methods (each figure's `note` repeats the one that applies):
//! - `compile`: `fw_user::policy::parse_file` + `compile` in this process,
//!   what `fw-user check` does (reading the set file included);
//! - `load`: wall time of `ip netns exec NS fw-user load POLICY --iface IF
//!   --backend xdp --detach` in a fresh namespace with a veth, with pins on
//!   a private bpffs: parse, compile, verify and load the programs, fill the
//!   maps, attach. The peers likewise through `ip netns exec` in a fresh
//!   namespace each: `iptables-restore` of `fw-user export` (a set becomes
//!   one rule per prefix), `nft -f` of a generated ruleset of the same
//!   stages (`nft`: the set as one rule per prefix; `nft-set`: as an
//!   interval set), `ipset restore` of the blocklist as a `hash:net` set;
//! - `reload`: the same command again while loaded, with a policy that has
//!   one rule more: fw replaces its maps' contents under the running
//!   programs, iptables-restore and `nft -f` (starting with `flush ruleset`)
//!   replace the table in one transaction, ipset restores a second set and
//!   `swap`s it in;
//! - `map-memory`: the sum of `memlock` in `/proc/self/fdinfo` of every map
//!   fw pinned (opened from the pins with `BPF_OBJ_GET`): the kernel's own
//!   account of the maps' memory (`map_mem_usage`), mostly the preallocated
//!   connection tables; `prefix-memory`: the same for the prefix tries
//!   alone, where a blocklist lives, beside the "Size in memory" of ipset's
//!   set (`ipset list -t`).
//!
//! Everything runs in namespaces created here and deleted on drop; the
//! root namespace's firewall is never touched.

use std::{
    fmt::Write as _,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{Depth, Measurement, Section, Unit, policies, rule_counts, set_sizes};
use crate::netns::{Bpffs, Netns};

/// Rules beside the blocklist in the set-size sweep: a small host policy
/// with a large blocklist, so the curve shows the set's cost.
const SET_RULES: u64 = 10;
/// The guarded interface in every namespace here.
const IFACE: &str = "fwb0";

/// Measure this section at `depth`.
#[must_use]
pub fn run(depth: Depth) -> Vec<Measurement> {
    let limit = match depth {
        Depth::Quick => Duration::from_secs(30),
        Depth::Full => Duration::from_mins(3),
    };
    let root = std::env::temp_dir().join(crate::unique("fw-bench-control-"));
    let mut out = Vec::new();
    let mut workloads: Vec<(u64, u64)> = rule_counts(depth).iter().map(|&n| (n, 0)).collect();
    workloads.extend(set_sizes(depth).iter().map(|&s| (SET_RULES, s)));
    if depth == Depth::Full {
        // The headline: the largest policy with the largest set.
        let rules = rule_counts(depth).iter().copied().max().unwrap_or(1);
        let set = set_sizes(depth).iter().copied().max().unwrap_or(0);
        workloads.push((rules, set));
    }
    for (rules, set_size) in workloads {
        let dir = root.join(format!("r{rules}-s{set_size}"));
        eprintln!("[bench control] {rules} rules, blocklist of {set_size} prefixes");
        match Workload::write(&dir, rules, set_size) {
            Ok(w) => out.extend(w.measure(limit)),
            Err(e) => eprintln!(
                "[bench control] cannot write the workload in {}: {e}",
                dir.display()
            ),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
    out
}

/// One workload on disk: the policy, its reload variant, and the peers'
/// rulesets for both.
struct Workload {
    dir: PathBuf,
    rules: u64,
    set_size: u64,
    policy: PathBuf,
    variant: PathBuf,
}

impl Workload {
    fn write(dir: &Path, rules: u64, set_size: u64) -> std::io::Result<Self> {
        let w = policies::write(dir, rules, set_size)?;
        // The reload: the same policy with one rule more (a new service),
        // so every table is rewritten, not skipped as unchanged.
        let variant = dir.join("reload.toml");
        let mut text = policies::policy_text(rules, set_size);
        text.push_str(RELOAD_RULE_TOML);
        std::fs::write(&variant, text)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            rules,
            set_size,
            policy: w.policy,
            variant,
        })
    }

    /// `rules`/`set_size` of a figure: the sweep over rule counts has no set.
    fn dims(&self) -> (Option<u64>, Option<u64>) {
        (
            Some(self.rules),
            (self.set_size > 0).then_some(self.set_size),
        )
    }

    fn figure(&self, arm: &str, case: &str, value: f64, unit: Unit, note: &str) -> Measurement {
        let (rules, set_size) = self.dims();
        let baseline = match (arm, case) {
            (_, "compile") | ("iptables", _) => None,
            ("ipset", _) => None,
            ("fw", "prefix-memory") => (self.set_size > 0).then(|| "ipset".to_string()),
            (_, "map-memory" | "prefix-memory") => None,
            _ => Some("iptables".to_string()),
        };
        Measurement {
            section: Section::Control,
            arm: arm.into(),
            case: case.into(),
            rules: if arm == "ipset" { None } else { rules },
            set_size,
            value,
            unit,
            baseline,
            note: (!note.is_empty()).then(|| note.to_string()),
        }
    }

    fn what(&self) -> String {
        format!("{} rules, set of {}", self.rules, self.set_size)
    }

    fn measure(&self, limit: Duration) -> Vec<Measurement> {
        let mut out = Vec::new();
        self.fw(&mut out);
        self.iptables(&mut out, limit);
        self.nft(&mut out, limit, false);
        if self.set_size > 0 {
            self.nft(&mut out, limit, true);
            self.ipset(&mut out, limit);
        }
        out
    }

    fn fw(&self, out: &mut Vec<Measurement>) {
        match compile_time(&self.policy) {
            Ok(secs) => out.push(self.figure(
                "fw",
                "compile",
                secs,
                Unit::Seconds,
                "parse + compile in process (what `fw-user check` does)",
            )),
            Err(e) => {
                // The classifier's limits are not the bench's to work
                // around: say so and measure the peers anyway.
                eprintln!("fw: {}: {e}", self.what());
                return;
            }
        }
        let ns = Netns::new("fwb-ctl-");
        ns.ip(&["link", "add", IFACE, "type", "veth", "peer", "name", "fwb1"]);
        ns.ip(&["link", "set", IFACE, "up"]);
        ns.ip(&["link", "set", "fwb1", "up"]);
        let bpffs = Bpffs::new();
        let pin = bpffs.dir.join("fw");
        let pin_s = pin.display().to_string();
        let load = |policy: &Path| {
            let policy = policy.display().to_string();
            let args = [
                "load",
                policy.as_str(),
                "--iface",
                IFACE,
                "--backend",
                "xdp",
                "--pin-path",
                pin_s.as_str(),
                "--detach",
            ];
            let t = Instant::now();
            let r = crate::fwcli::fw_user(&ns, &args);
            (t.elapsed().as_secs_f64(), r)
        };
        let (secs, r) = load(&self.policy);
        if !r.ok {
            eprintln!(
                "fw: {}: fw-user load failed: {}",
                self.what(),
                r.stderr.trim()
            );
            return;
        }
        out.push(self.figure(
            "fw",
            "load",
            secs,
            Unit::Seconds,
            "ip netns exec fw-user load --backend xdp --detach: parse, compile, verify, fill maps, attach",
        ));
        match map_memory(&pin.join("maps")) {
            Ok(maps) => self.memory_figures(&maps, out),
            Err(e) => eprintln!("fw: {}: cannot read map memory: {e}", self.what()),
        }
        let (secs, r) = load(&self.variant);
        if r.ok {
            out.push(self.figure(
                "fw",
                "reload",
                secs,
                Unit::Seconds,
                "second fw-user load while loaded (one rule more): maps rewritten under the running programs",
            ));
        } else {
            eprintln!("fw: {}: reload failed: {}", self.what(), r.stderr.trim());
        }
        let r = crate::fwcli::fw_user(&ns, &["unload", "--pin-path", &pin_s]);
        if !r.ok {
            eprintln!("fw: unload failed: {}", r.stderr.trim());
        }
    }

    /// `map-memory`: every map fw pinned, the largest named in the note;
    /// `prefix-memory`: the prefix tries alone (where a blocklist lives),
    /// beside ipset's set.
    fn memory_figures(&self, maps: &[(String, u64)], out: &mut Vec<Measurement>) {
        let total: u64 = maps.iter().map(|m| m.1).sum();
        let mut largest: Vec<&(String, u64)> = maps.iter().collect();
        largest.sort_by_key(|m| std::cmp::Reverse(m.1));
        let top: Vec<String> = largest
            .iter()
            .take(3)
            .map(|(n, b)| format!("{n} {}", super::report::human(bytes(*b), Unit::Bytes)))
            .collect();
        out.push(self.figure(
            "fw",
            "map-memory",
            bytes(total),
            Unit::Bytes,
            &format!(
                "memlock (/proc/self/fdinfo) of the {} pinned maps; largest: {}",
                maps.len(),
                top.join(", ")
            ),
        ));
        let tries: Vec<&(String, u64)> = maps
            .iter()
            .filter(|(n, _)| n == fw_common::maps::SRC || n == fw_common::maps::DST)
            .collect();
        if !tries.is_empty() {
            out.push(self.figure(
                "fw",
                "prefix-memory",
                bytes(tries.iter().map(|m| m.1).sum()),
                Unit::Bytes,
                "memlock of the source and destination prefix tries (FW_SRC, FW_DST)",
            ));
        }
    }

    fn iptables(&self, out: &mut Vec<Measurement>, limit: Duration) {
        let files = [
            (&self.policy, self.dir.join("rules.v4")),
            (&self.variant, self.dir.join("reload.v4")),
        ];
        for (policy, file) in &files {
            let o = Command::new(crate::fwcli::binary())
                .arg("export")
                .arg(policy)
                .args(["--iface", IFACE])
                .output()
                .expect("run fw-user export");
            if !o.status.success() {
                eprintln!(
                    "iptables: {}: fw-user export failed: {}",
                    self.what(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
            std::fs::write(file, &o.stdout).expect("write the exported ruleset");
        }
        let ns = Netns::new("fwb-ipt-");
        let note = "ip netns exec iptables-restore of `fw-user export` (iptables-nft; a set is one rule per prefix)";
        let arm = "iptables";
        let Some(secs) = self.timed(
            &ns,
            arm,
            "load",
            &["iptables-restore", &path(&files[0].1)],
            limit,
        ) else {
            return;
        };
        out.push(self.figure(arm, "load", secs, Unit::Seconds, note));
        if let Some(secs) = self.timed(
            &ns,
            arm,
            "reload",
            &["iptables-restore", &path(&files[1].1)],
            limit,
        ) {
            out.push(self.figure(arm, "reload", secs, Unit::Seconds, note));
        }
    }

    fn nft(&self, out: &mut Vec<Measurement>, limit: Duration, with_set: bool) {
        let arm = if with_set { "nft-set" } else { "nft" };
        let first = self.dir.join(format!("{arm}.nft"));
        let second = self.dir.join(format!("{arm}-reload.nft"));
        let blocklist = policies::blocklist(self.set_size);
        std::fs::write(&first, nft_ruleset(self.rules, &blocklist, with_set, false))
            .expect("write the nft ruleset");
        std::fs::write(&second, nft_ruleset(self.rules, &blocklist, with_set, true))
            .expect("write the nft ruleset");
        let ns = Netns::new("fwb-nft-");
        let note = if with_set {
            "ip netns exec nft -f: the same stages, the blocklist as an interval set"
        } else {
            "ip netns exec nft -f: the same stages, a set as one rule per prefix"
        };
        let Some(secs) = self.timed(&ns, arm, "load", &["nft", "-f", &path(&first)], limit) else {
            return;
        };
        out.push(self.figure(arm, "load", secs, Unit::Seconds, note));
        if let Some(secs) = self.timed(&ns, arm, "reload", &["nft", "-f", &path(&second)], limit) {
            out.push(self.figure(arm, "reload", secs, Unit::Seconds, note));
        }
    }

    fn ipset(&self, out: &mut Vec<Measurement>, limit: Duration) {
        let arm = "ipset";
        let blocklist = policies::blocklist(self.set_size);
        let first = self.dir.join("ipset.restore");
        let second = self.dir.join("ipset-reload.restore");
        std::fs::write(&first, ipset_restore(&blocklist, "fwbl", None)).expect("write ipset file");
        std::fs::write(&second, ipset_restore(&blocklist, "fwbl-new", Some("fwbl")))
            .expect("write ipset file");
        let ns = Netns::new("fwb-ips-");
        let Some(secs) = self.timed(
            &ns,
            arm,
            "load",
            &["ipset", "-exist", "restore", "-f", &path(&first)],
            limit,
        ) else {
            return;
        };
        out.push(self.figure(
            arm,
            "load",
            secs,
            Unit::Seconds,
            "ip netns exec ipset restore: the blocklist alone, as hash:net",
        ));
        let o = ns.exec(&["ipset", "list", "-t", "fwbl"]);
        let listing = String::from_utf8_lossy(&o.stdout);
        match listing
            .lines()
            .find_map(|l| l.strip_prefix("Size in memory:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            Some(bytes) => out.push(self.figure(
                arm,
                "prefix-memory",
                f64::from(bytes),
                Unit::Bytes,
                "`ipset list -t`: Size in memory",
            )),
            None => eprintln!("ipset: no size in `ipset list -t`: {listing}"),
        }
        if let Some(secs) = self.timed(
            &ns,
            arm,
            "reload",
            &["ipset", "-exist", "restore", "-f", &path(&second)],
            limit,
        ) {
            out.push(self.figure(
                arm,
                "reload",
                secs,
                Unit::Seconds,
                "ipset restore of a second set, then swap and destroy the old",
            ));
        }
    }

    /// Wall time of `cmd` run in `ns`, or `None` (said on stderr) when it
    /// failed or ran past `limit`.
    fn timed(
        &self,
        ns: &Netns,
        arm: &str,
        case: &str,
        cmd: &[&str],
        limit: Duration,
    ) -> Option<f64> {
        match timed(ns, cmd, limit) {
            Ok(secs) => Some(secs),
            Err(e) => {
                eprintln!("{arm}: {}: {case}: {e}", self.what());
                None
            }
        }
    }
}

/// The reload variant's extra rule, in the policy and in the peers'
/// rulesets.
const RELOAD_RULE_TOML: &str =
    "[[input]]\nname = \"reload\"\nproto = \"udp\"\ndport = 9\naction = \"accept\"\n";
const RELOAD_RULE_NFT: &str = "udp dport 9 accept";

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Seconds to parse and compile the policy at `file`, as `fw-user check`.
fn compile_time(file: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let policy = fw_user::policy::parse_file(&text, file).map_err(|e| e.to_string())?;
    let name = file.display().to_string();
    let _ = fw_user::policy::compile(&policy, &name, &|_| Some(1)).map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

/// Run `cmd` inside `ns` (`ip netns exec`) and time it; kill it past
/// `limit`.
fn timed(ns: &Netns, cmd: &[&str], limit: Duration) -> Result<f64, String> {
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd[0]))?;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let secs = t.elapsed().as_secs_f64();
            if status.success() {
                return Ok(secs);
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let err: String = err.chars().take(400).collect();
            return Err(format!(
                "{} failed ({status}): {}",
                cmd.join(" "),
                err.trim()
            ));
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not finish within {} s: no figure",
                cmd[0],
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `memlock` of every map pinned in `dir`, by pin name.
fn map_memory(dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut maps = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let data = aya::maps::MapData::from_pin(entry.path())
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let fd = data.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .map_err(|e| e.to_string())?;
        let bytes = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no memlock in fdinfo of {}", entry.path().display()))?;
        maps.push((entry.file_name().to_string_lossy().into_owned(), bytes));
    }
    Ok(maps)
}

#[expect(clippy::cast_precision_loss, reason = "bytes well below 2^52")]
fn bytes(n: u64) -> f64 {
    n as f64
}

/// An nftables ruleset with the stages `fw-user export` writes for
/// iptables (spoofed loopback, conntrack state, SYN-only, the blocklist,
/// the rules, the default drop) on the guarded interface; `reload` adds the
/// reload variant's rule. Starts with `flush ruleset`, so `nft -f` replaces
/// everything in one transaction.
fn nft_ruleset(rules: u64, blocklist: &[ipnet::IpNet], with_set: bool, reload: bool) -> String {
    let mut t = String::with_capacity(
        256 + blocklist.len() * 40 + usize::try_from(rules).unwrap_or(0) * 64,
    );
    t.push_str("flush ruleset\ntable ip fwbench {\n");
    if with_set {
        // Overlapping prefixes (the generated ones nest) need auto-merge.
        t.push_str(
            "  set blocklist {\n    type ipv4_addr\n    flags interval\n    auto-merge\n  }\n",
        );
    }
    let _ = writeln!(
        t,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname != \"{IFACE}\" accept\n    ip saddr 127.0.0.0/8 drop\n    ip daddr 127.0.0.0/8 drop\n    \
         ct state established accept\n    ct state related accept\n    ct state invalid drop\n    \
         tcp flags & (fin|syn|rst|ack) != syn ct state new drop"
    );
    if with_set {
        t.push_str("    ip saddr @blocklist drop\n");
    } else {
        for n in blocklist {
            let _ = writeln!(t, "    ip saddr {n} drop");
        }
    }
    for i in 0..rules {
        let _ = writeln!(
            t,
            "    ip saddr {} tcp dport {} accept",
            policies::rule_source(i),
            policies::rule_port(i)
        );
    }
    if reload {
        let _ = writeln!(t, "    {RELOAD_RULE_NFT}");
    }
    t.push_str("    drop\n  }\n}\n");
    if with_set && !blocklist.is_empty() {
        // In chunks: one `add element` of a million is slower to parse.
        for chunk in blocklist.chunks(10_000) {
            t.push_str("add element ip fwbench blocklist {\n");
            for n in chunk {
                let _ = writeln!(t, "  {n},");
            }
            t.push_str("}\n");
        }
    }
    t
}

/// `ipset restore` input creating `name` with the blocklist; with
/// `swap_into`, then swapping it with that set and destroying the old one.
fn ipset_restore(blocklist: &[ipnet::IpNet], name: &str, swap_into: Option<&str>) -> String {
    let mut t = String::with_capacity(128 + blocklist.len() * 28);
    let _ = writeln!(
        t,
        "create {name} hash:net family inet hashsize 1024 maxelem {}",
        blocklist.len().max(65_536)
    );
    for n in blocklist {
        let _ = writeln!(t, "add {name} {n}");
    }
    if let Some(old) = swap_into {
        let _ = writeln!(t, "swap {name} {old}\ndestroy {name}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nft_ruleset_holds_every_rule_and_prefix() {
        let bl = policies::blocklist(5);
        let linear = nft_ruleset(3, &bl, false, false);
        assert_eq!(linear.matches("tcp dport").count(), 3);
        // 4 stage drops, one per prefix, the default.
        assert_eq!(linear.matches(" drop\n").count(), 4 + 5 + 1);
        let set = nft_ruleset(3, &bl, true, true);
        assert!(set.contains("ip saddr @blocklist drop"));
        assert!(set.contains(RELOAD_RULE_NFT));
        assert_eq!(set.matches('/').count() - 2, 5, "{set}");
    }

    #[test]
    fn the_ipset_reload_swaps() {
        let bl = policies::blocklist(3);
        let t = ipset_restore(&bl, "b", Some("a"));
        assert_eq!(t.matches("add b ").count(), 3);
        assert!(t.ends_with("swap b a\ndestroy b\n"));
    }
}
