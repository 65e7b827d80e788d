//! `cargo xtask fuzz`: the cargo-fuzz targets in fw-user/fuzz, each for a
//! bounded time, from its seeds. A finding fails the run and names the
//! reproducer.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// A fuzz target and where its seeds are, relative to the workspace root.
struct Target {
    name: &'static str,
    seeds: &'static [&'static str],
    /// Its input is a policy: it also gets `docs_seeds` and the
    /// dictionary of policy words, `POLICY_DICT`.
    policy: bool,
}

/// libFuzzer dictionary of policy.toml words, in the fuzz crate.
const POLICY_DICT: &str = "policy.dict";

/// Every target, in the order they run. The policy targets start from the
/// example policies and the malformed corpus (plus the built-in policy and
/// docs/policy.md's examples, written out by `docs_seeds`), so the first
/// seconds already reach every section of the parser.
const TARGETS: &[Target] = &[
    Target {
        name: "parse_policy",
        seeds: &["examples", "fw-user/src/policy/testdata/malformed"],
        policy: true,
    },
    Target {
        name: "compile_policy",
        seeds: &["examples", "fw-user/src/policy/testdata/malformed"],
        policy: true,
    },
    Target {
        name: "import",
        seeds: &["fw-user/fuzz/seeds/import"],
        policy: false,
    },
];

/// `cargo fuzz` build options, the same for `build` and `run` so that
/// `run` finds the binaries built. No sanitizer: the parsers and the
/// compiler are safe Rust, where `AddressSanitizer` finds nothing and halves
/// the executions; overflow checks and debug assertions stay on (cargo
/// fuzz's default). 16 codegen units build the instrumented fw-user in
/// half the time of one, on CI's two cores.
const BUILD_ARGS: &[&str] = &["--sanitizer", "none", "--codegen-units", "16"];

/// What a bounded run found.
pub struct Outcome {
    /// Targets that ran clean.
    pub clean: Vec<&'static str>,
    /// (target, what it found and where the reproducer is).
    pub findings: Vec<(&'static str, String)>,
}

fn fuzz_dir(root: &Path) -> PathBuf {
    root.join("fw-user").join("fuzz")
}

/// `cargo +nightly fuzz ARGS` in the fuzz crate: cargo-fuzz needs
/// nightly for the instrumentation flags.
fn cargo_fuzz(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir(root))
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        // Set by `cargo run` for the xtask's own (stable) toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    cmd
}

/// Run `only` (every target when empty) for `secs` seconds each.
pub fn run(root: &Path, secs: u64, only: &[String]) -> Result<Outcome> {
    for name in only {
        if !TARGETS.iter().any(|t| t.name == name) {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!("no fuzz target `{name}` (targets: {})", names.join(", "));
        }
    }
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|n| n == t.name))
        .collect();
    let started = Instant::now();
    let mut build = cargo_fuzz(root, &["build"]);
    build.args(BUILD_ARGS);
    // `cargo fuzz build` takes one target name, or none for all of them.
    if let [t] = targets.as_slice() {
        build.arg(t.name);
    }
    eprintln!("[fuzz] building the fuzz targets (nightly, instrumented): {build:?}");
    let status = build
        .status()
        .with_context(|| format!("cannot start {build:?}"))?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status}): {build:?}");
    }
    eprintln!("[fuzz] built in {:.0} s", started.elapsed().as_secs_f64());
    let docs = docs_seeds(root)?;
    let mut outcome = Outcome {
        clean: Vec::new(),
        findings: Vec::new(),
    };
    for t in targets {
        match run_target(root, t, secs, &docs)? {
            None => outcome.clean.push(t.name),
            Some(finding) => outcome.findings.push((t.name, finding)),
        }
    }
    Ok(outcome)
}

/// One target for `secs` seconds: `None` when it found nothing, otherwise
/// what it found and how to reproduce it.
fn run_target(root: &Path, t: &Target, secs: u64, docs: &Path) -> Result<Option<String>> {
    let dir = fuzz_dir(root);
    // libFuzzer adds what it finds to the first directory; the others
    // are only read.
    let corpus = dir.join("corpus").join(t.name);
    let artifacts = dir.join("artifacts").join(t.name);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;
    let before = list_files(&artifacts);
    let mut cmd = cargo_fuzz(root, &["run"]);
    cmd.args(BUILD_ARGS).arg(t.name).arg(&corpus);
    for s in t.seeds {
        cmd.arg(root.join(s));
    }
    if t.policy {
        cmd.arg(docs);
    }
    cmd.arg("--").arg(format!("-max_total_time={secs}"));
    // One input taking over 10 s is pathological slowness: a finding.
    cmd.args(["-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1"]);
    if t.policy {
        cmd.arg(format!("-dict={}", dir.join(POLICY_DICT).display()));
    }
    eprintln!("[fuzz] {} for {secs} s: {cmd:?}", t.name);
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let took = started.elapsed();
    if status.success() {
        eprintln!(
            "[fuzz] {}: nothing found in {:.0} s",
            t.name,
            took.as_secs_f64()
        );
        return Ok(None);
    }
    let new: Vec<PathBuf> = list_files(&artifacts)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    let found = if new.is_empty() {
        format!(
            "`cargo fuzz run` failed ({status}) after {:.0} s without writing a reproducer; its output above says why",
            took.as_secs_f64()
        )
    } else {
        let shown: Vec<String> = new.iter().map(|f| f.display().to_string()).collect();
        format!(
            "reproducer {} (hint: `cd fw-user/fuzz && cargo +nightly fuzz run {} {} {}` replays it; add it as a regression test, then fix)",
            shown.join(", "),
            BUILD_ARGS.join(" "),
            t.name,
            shown[0],
        )
    };
    eprintln!("[fuzz] {}: FOUND: {found}", t.name);
    Ok(Some(found))
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Seeds the policy targets take from the sources: the built-in policy
/// and every TOML code block of docs/policy.md, written to one directory
/// (under the ignored corpus/) so they never drift from the docs.
fn docs_seeds(root: &Path) -> Result<PathBuf> {
    let out = fuzz_dir(root).join("corpus").join("policy-docs");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let default = root.join("fw-user/src/policy/default.toml");
    std::fs::copy(&default, out.join("default.toml"))
        .with_context(|| format!("cannot copy {}", default.display()))?;
    let doc = root.join("docs/policy.md");
    let text =
        std::fs::read_to_string(&doc).with_context(|| format!("cannot read {}", doc.display()))?;
    let mut block: Option<String> = None;
    let mut n = 0;
    for line in text.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(b), "```") => {
                n += 1;
                std::fs::write(out.join(format!("policy-md-{n:02}.toml")), b.as_bytes())?;
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    Ok(out)
}

/// How many targets a full run fuzzes.
pub fn target_count() -> usize {
    TARGETS.len()
}
