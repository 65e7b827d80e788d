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
    root()
        .join("target")
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

pub fn test(extra: &[String]) -> Result<()> {
    require_root("test")?;
    build(false)?;
    // Default members: everything but fw-ebpf, which only builds for BPF (fw-user
    // builds it through aya-build and the verdict tests load it).
    let mut totals = Totals::default();
    let mut ok = run_tests(&[], extra, None, &mut totals)?;
    if extra.is_empty() {
        // The iptables backend must pass the same behaviour tests as the
        // eBPF datapath: the example policies on real traffic, again.
        eprintln!("[xtask] the example policies again, with --backend iptables");
        ok &= run_tests(
            &["-p", "fw-tests", "--test", "netns_examples"],
            &[],
            Some("iptables"),
            &mut totals,
        )?;
    }
    // One closing line for the whole suite: cargo's own last line is the
    // result of whichever test binary ran last.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !ok || totals.failed > 0 {
        bail!("tests failed");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `cargo test ARGS EXTRA`, its output passed through and counted; with
/// `backend`, the netns tests load through `--backend BACKEND`.
fn run_tests(
    args: &[&str],
    extra: &[String],
    backend: Option<&str>,
    totals: &mut Totals,
) -> Result<bool> {
    let mut cmd = cargo(&["test"]);
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
