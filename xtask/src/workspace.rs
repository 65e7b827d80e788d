//! Building, running and testing the workspace with cargo.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR` (relative to the
/// workspace root, as cargo takes it) or `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root().join("target"), |d| root().join(d))
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args(args);
    cmd
}

fn check(cmd: &mut Command) -> Result<()> {
    eprintln!("[xtask] {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn fw_user_path(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("fw-user")
}

pub fn build(release: bool) -> Result<()> {
    let mut args = vec!["build", "--package", "fw-user", "--bins"];
    if release {
        args.push("--release");
    }
    check(&mut cargo(&args))
}

pub fn run_fw_user(release: bool, args: &[String]) -> Result<()> {
    let bin = fw_user_path(release);
    eprintln!("[xtask] {} {}", bin.display(), args.join(" "));
    let status = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn require_root(what: &str) -> Result<()> {
    if !crate::setup::is_root() {
        bail!(
            "{what} needs root (BPF programs, network namespaces): run `sudo -E cargo xtask {what}`"
        );
    }
    Ok(())
}

/// What `cargo xtask test` was asked for.
pub struct TestPlan {
    /// Where the privileged suite runs; `None` for this machine.
    pub kernels: Vec<crate::kernels::Spec>,
    /// fw-tests suites to run (all when empty); naming any skips the host
    /// unit tests.
    pub suites: Vec<String>,
    pub vm_timeout: std::time::Duration,
    /// What the VMs run: everything, or the `VM_COMPAT` selection.
    pub vm_suite: VmSuite,
    /// Seconds each fuzz target runs after the host unit tests; `None`:
    /// no fuzzing.
    pub fuzz_secs: Option<u64>,
    /// Passed to every test binary (name filters, `--nocapture` …).
    pub harness_args: Vec<String>,
}

/// What runs inside the VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VmSuite {
    /// The whole privileged suite when KVM works, `compat` under TCG.
    Auto,
    /// The whole privileged suite.
    All,
    /// `VM_COMPAT`: what depends on the kernel, and every scenario.
    Compat,
}

/// The tests a VM runs without KVM. Emulated (TCG), the verifier needs
/// about 50 s for each load of the datapath, twenty times the native
/// time, so the whole suite (about 120 loads) would take hours per kernel.
/// This selection still loads every program (what differs most between
/// kernels is what their verifiers accept) and reaches every hook, attach
/// path and kernel helper fw uses: each verdict stage (rules with
/// `bpf_loop`, REJECT on both hooks, conntrack, RELATED, fragments, the
/// `limit` limiter with `BPF_CMPXCHG`, ring-buffer events), real traffic through XDP and TC
/// (netlink clsact before 6.6, tcx after), adoption, routing, and every
/// scenario. Suite name and test-name filters (none: the whole suite).
const VM_COMPAT: &[(&str, &[&str])] = &[
    ("verdict_policy", &["ranges_at_their_edges_and_first_match"]),
    (
        "verdict_reject",
        &[
            "udp_v6_gets_port_unreachable_quoting_the_whole_packet",
            "output_reject_answers_the_local_stack",
        ],
    ),
    ("verdict_conntrack", &["inbound_handshake_data_and_close"]),
    (
        "verdict_related",
        &["errors_about_the_hosts_flows_are_related_on_ingress"],
    ),
    (
        "verdict_fragments",
        &["an_accepted_first_fragment_lets_its_datagram_through_both_ways"],
    ),
    (
        "verdict_match_fields",
        &["limit_matches_only_under_the_rate"],
    ),
    (
        "verdict_observability",
        &["the_log_rate_passes_the_burst_then_the_rate"],
    ),
    (
        "netns_traffic",
        &[
            "ipv4_allowed_denied_ack_probe_and_outbound",
            "connections_open_before_the_first_load_are_adopted",
        ],
    ),
    ("netns_interfaces", &["bulk_transfer_through_both_hooks"]),
    ("netns_forward", &[]),
    ("scenarios", &[]),
];

/// One kernel's results, for the closing table.
struct KernelResult {
    label: String,
    totals: Totals,
    /// Why it did not complete, if it did not.
    broke: Option<String>,
}

pub fn test(plan: &TestPlan) -> Result<()> {
    require_root("test")?;
    build(false)?;
    let mut results = Vec::new();
    if plan.suites.is_empty() {
        eprintln!("[xtask] host unit tests (everything but the privileged suite)");
        let mut totals = Totals::default();
        let ok = run_tests(
            // fw-ebpf builds only for BPF (fw-user builds it through
            // aya-build); fw-tests is the privileged suite.
            &[
                "--workspace",
                "--exclude",
                "fw-tests",
                "--exclude",
                "fw-ebpf",
            ],
            &plan.harness_args,
            None,
            &mut totals,
        )?;
        results.push(KernelResult {
            label: "unit tests (host)".into(),
            broke: (!ok && totals.failed == 0).then(|| "cargo test failed".into()),
            totals,
        });
    }
    if let Some(secs) = plan.fuzz_secs {
        eprintln!(
            "[xtask] fuzzing: {} targets for {secs} s each (`--no-fuzz` skips, `--fuzz-time` sets the time)",
            crate::fuzz::target_count()
        );
        results.push(fuzz_result(crate::fuzz::run(&root(), secs, &[]), secs));
    }
    // Fetch every kernel before the long runs, so a download problem shows
    // at once.
    let mut targets = Vec::new();
    for spec in &plan.kernels {
        targets.push((spec, crate::kernels::resolve(spec)?));
    }
    let mut binaries = None;
    for (spec, kernel) in targets {
        let result = match kernel {
            None => host_suite(plan)?,
            Some(kernel) => {
                if binaries.is_none() {
                    binaries = Some(test_binaries(&plan.suites)?);
                }
                vm_suite(&kernel, binaries.as_deref().unwrap_or_default(), plan)
            }
        };
        eprintln!(
            "[xtask] {spec}: {} passed, {} failed, {} skipped{}",
            result.totals.passed,
            result.totals.failed,
            result.totals.ignored,
            result
                .broke
                .as_deref()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default()
        );
        results.push(result);
    }
    report(&results)
}

/// A bounded fuzzing run as a row of the closing table: a target that
/// found nothing passed.
fn fuzz_result(run: Result<crate::fuzz::Outcome>, secs: u64) -> KernelResult {
    let mut result = KernelResult {
        label: format!("fuzz targets ({secs} s each)"),
        totals: Totals::default(),
        broke: None,
    };
    match run {
        Err(e) => result.broke = Some(format!("{e:#}")),
        Ok(outcome) => {
            result.totals.passed = outcome.clean.len() as u64;
            result.totals.failed = outcome.findings.len() as u64;
            for (target, found) in &outcome.findings {
                eprintln!("[xtask] fuzz target {target} found a problem: {found}");
            }
        }
    }
    result
}

/// `cargo xtask fuzz`: every target (or `only`) for `secs` seconds each.
pub fn fuzz(secs: u64, only: &[String]) -> Result<()> {
    let outcome = crate::fuzz::run(&root(), secs, only)?;
    for target in &outcome.clean {
        println!("fuzz {target}: nothing found in {secs} s");
    }
    for (target, found) in &outcome.findings {
        println!("fuzz {target}: FOUND: {found}");
    }
    println!(
        "fuzz: {} passed, {} failed",
        outcome.clean.len(),
        outcome.findings.len()
    );
    if !outcome.findings.is_empty() {
        bail!(
            "fuzzing found problems in {} target(s)",
            outcome.findings.len()
        );
    }
    Ok(())
}

/// The closing table: every kernel's totals together, failures named by
/// kernel, and one last line for the whole run.
fn report(results: &[KernelResult]) -> Result<()> {
    println!();
    println!(
        "{:<40} {:>7} {:>7} {:>7}",
        "where", "passed", "failed", "skipped"
    );
    let mut all = Totals::default();
    let mut bad = Vec::new();
    for r in results {
        println!(
            "{:<40} {:>7} {:>7} {:>7}{}",
            r.label,
            r.totals.passed,
            r.totals.failed,
            r.totals.ignored,
            r.broke
                .as_deref()
                .map(|b| format!("  {b}"))
                .unwrap_or_default()
        );
        all.passed += r.totals.passed;
        all.failed += r.totals.failed;
        all.ignored += r.totals.ignored;
        if r.totals.failed > 0 || r.broke.is_some() {
            bad.push(r.label.as_str());
        }
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        all.passed, all.failed, all.ignored
    );
    if !bad.is_empty() {
        bail!("tests failed on: {}", bad.join(", "));
    }
    if all.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The privileged suite on this machine's kernel, in namespaces.
fn host_suite(plan: &TestPlan) -> Result<KernelResult> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!("[xtask] privileged suite on this machine's kernel {release}, in namespaces");
    let mut totals = Totals::default();
    let mut args = vec!["-p", "fw-tests"];
    for s in &plan.suites {
        args.extend(["--test", s.as_str()]);
    }
    let mut ok = run_tests(&args, &plan.harness_args, None, &mut totals)?;
    if wants_iptables_rerun(&plan.suites) {
        // The iptables backend must pass the same behaviour tests as the
        // eBPF datapath: the example policies on real traffic, again.
        eprintln!("[xtask] the example policies again, with --backend iptables");
        ok &= run_tests(
            &["-p", "fw-tests", "--test", "netns_examples"],
            &plan.harness_args,
            Some("iptables"),
            &mut totals,
        )?;
    }
    Ok(KernelResult {
        label: format!("host {release}"),
        broke: (!ok && totals.failed == 0).then(|| "cargo test failed".into()),
        totals,
    })
}

fn wants_iptables_rerun(suites: &[String]) -> bool {
    suites.is_empty() || suites.iter().any(|s| s == "netns_examples")
}

/// Builds fw-tests' test binaries and names them: (target name, path).
fn test_binaries(suites: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo(&[
        "test",
        "-p",
        "fw-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for s in suites {
        cmd.args(["--test", s]);
    }
    eprintln!("[xtask] {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if msg["profile"]["test"].as_bool() == Some(true) && !is_bin {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if bins.is_empty() {
        bail!("cargo built no test binaries for fw-tests");
    }
    Ok(bins)
}

/// The privileged suite inside a VM on `kernel`.
fn vm_suite(
    kernel: &crate::kernels::Kernel,
    bins: &[(String, PathBuf)],
    plan: &TestPlan,
) -> KernelResult {
    let fw_user = fw_user_path(false).display().to_string();
    let compat = match plan.vm_suite {
        VmSuite::All => false,
        VmSuite::Compat => true,
        VmSuite::Auto => !crate::vm::kvm_works(kernel),
    };
    let mut runs: Vec<crate::vm::TestRun> = bins
        .iter()
        .filter_map(|(name, exe)| {
            let mut args = plan.harness_args.clone();
            let mut weight = 10;
            if compat {
                let (_, filters) = VM_COMPAT.iter().find(|(suite, _)| suite == name)?;
                args.extend(filters.iter().map(|f| (*f).to_string()));
                if !filters.is_empty() {
                    weight = u32::try_from(filters.len()).unwrap_or(1);
                }
            }
            Some(crate::vm::TestRun {
                name: name.clone(),
                exe: exe.clone(),
                args,
                env: vec![("FW_USER_BIN".into(), fw_user.clone())],
                weight,
            })
        })
        .collect();
    if compat {
        eprintln!(
            "[xtask] {}: KVM does not work here, so the VM runs the kernel-dependent selection \
             (VM_COMPAT in xtask/src/workspace.rs, {} suites; `--vm-suite all` for everything)",
            kernel.label,
            runs.len()
        );
    }
    if !compat
        && wants_iptables_rerun(&plan.suites)
        && let Some((_, exe)) = bins.iter().find(|(n, _)| n == "netns_examples")
    {
        runs.push(crate::vm::TestRun {
            name: "netns_examples-iptables".into(),
            exe: exe.clone(),
            args: plan.harness_args.clone(),
            env: vec![
                ("FW_USER_BIN".into(), fw_user.clone()),
                ("FW_TEST_BACKEND".into(), "iptables".into()),
            ],
            weight: 10,
        });
    }
    let cpus = std::thread::available_parallelism()
        .map_or(2, |n| u32::try_from(n.get()).unwrap_or(2).min(4));
    let opts = crate::vm::Options {
        cpus,
        memory_mib: 4096,
        timeout: plan.vm_timeout,
        cwd: root().join("tests"),
        workdir: target_dir().join("vm"),
    };
    let mut result = KernelResult {
        label: kernel.label.clone(),
        totals: Totals::default(),
        broke: None,
    };
    match crate::vm::run(kernel, &runs, &opts) {
        Err(e) => result.broke = Some(format!("{e:#}")),
        Ok(outcome) => {
            let mut missing = Vec::new();
            for (name, log, rc) in &outcome.logs {
                let before = result.totals.failed;
                for line in log.lines() {
                    result.totals.add(line);
                }
                match rc {
                    None => missing.push(format!("{name} did not finish")),
                    Some(0) => {}
                    Some(code) if result.totals.failed == before => {
                        missing.push(format!("{name} exited with {code}"));
                    }
                    Some(_) => {}
                }
            }
            if !missing.is_empty() {
                result.broke = Some(missing.join("; "));
            }
        }
    }
    result
}

/// `cargo test ARGS EXTRA`, its output passed through and counted; with
/// `backend`, the netns tests load through `--backend BACKEND`.
fn run_tests(
    args: &[&str],
    extra: &[String],
    backend: Option<&str>,
    totals: &mut Totals,
) -> Result<bool> {
    // --no-fail-fast: one failing suite must not hide the results of the
    // others.
    let mut cmd = cargo(&["test", "--no-fail-fast"]);
    cmd.args(args)
        .args(extra)
        .env("FW_USER_BIN", fw_user_path(false));
    if let Some(b) = backend {
        cmd.env("FW_TEST_BACKEND", b);
    }
    eprintln!("[xtask] {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add(&line);
    }
    Ok(child.wait()?.success())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Add a `test result: ok. 8 passed; 0 failed; 1 ignored; …` line.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn demo() -> Result<()> {
    require_root("demo")?;
    build(false)?;
    let mut cmd = cargo(&[
        "run",
        "--quiet",
        "--package",
        "fw-tests",
        "--bin",
        "fw-demo",
    ]);
    cmd.env("FW_USER_BIN", fw_user_path(false));
    check(&mut cmd)
}
