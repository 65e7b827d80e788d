//! `cargo xtask bench`: build fw-user and fw-bench in release and run the
//! bench (fw-tests' `bench` module) as root, in namespaces it creates.
//! Debug builds would measure the wrong thing: the control-plane figures
//! are fw-user's own time.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// What `cargo xtask bench` was asked for.
pub struct Options {
    pub quick: bool,
    /// Sections to run (`kernel`, `traffic`, `control`); all when empty.
    pub only: Vec<String>,
    /// Where the report goes; `target/bench` by default.
    pub out: Option<PathBuf>,
    /// Print the JSON on stdout (the table goes to stderr).
    pub json: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn run(opts: &Options) -> Result<()> {
    if !crate::setup::is_root() {
        bail!(
            "bench needs root (it loads BPF programs and creates network namespaces, \
             iptables/nftables/ipset rulesets inside them): run `sudo -E cargo xtask bench`"
        );
    }
    let root = root();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "fw-user",
        "-p",
        "fw-tests",
        "--bin",
        "fw-user",
        "--bin",
        "fw-bench",
    ]);
    eprintln!("[xtask] {build:?}");
    let status = build
        .status()
        .with_context(|| format!("cannot start {build:?}"))?;
    if !status.success() {
        bail!("building fw-user and fw-bench failed ({status})");
    }
    let release = crate::workspace::target_dir().join("release");
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| crate::workspace::target_dir().join("bench"));
    let mut bench = Command::new(release.join("fw-bench"));
    bench
        .current_dir(&root)
        // The fw-user the control plane times: this release build, not
        // whatever the tests' lookup would find.
        .env("FW_USER_BIN", release.join("fw-user"))
        .arg("--out")
        .arg(&out);
    if opts.quick {
        bench.arg("--quick");
    }
    if opts.json {
        bench.arg("--json");
    }
    for s in &opts.only {
        bench.args(["--only", s]);
    }
    eprintln!("[xtask] {bench:?}");
    let status = bench
        .status()
        .with_context(|| format!("cannot start {bench:?}"))?;
    if !status.success() {
        bail!("fw-bench failed ({status}); its messages above say which arm and why");
    }
    eprintln!("[xtask] bench report: {}", out.join("report.txt").display());
    eprintln!(
        "[xtask] every figure:  {}",
        out.join("report.json").display()
    );
    let svg = out.join("report.svg");
    if svg.exists() {
        eprintln!("[xtask] cost over rule count: {}", svg.display());
    }
    Ok(())
}
