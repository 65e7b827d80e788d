//! Building, running and testing the workspace with cargo.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args(args);
    cmd
}

fn check(cmd: &mut Command) -> Result<()> {
    eprintln!("[xtask] {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn fw_user_path(release: bool) -> PathBuf {
    root().join("target").join(if release { "release" } else { "debug" }).join("fw-user")
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
    let status = Command::new(&bin).args(args).status().with_context(|| format!("cannot start {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn require_root(what: &str) -> Result<()> {
    if !crate::setup::is_root() {
        bail!("{what} needs root (BPF programs, network namespaces): run `sudo -E cargo xtask {what}`");
    }
    Ok(())
}

pub fn test(extra: &[String]) -> Result<()> {
    require_root("test")?;
    build(false)?;
    // Default members: everything but fw-ebpf, which only builds for BPF (fw-user
    // builds it through aya-build and the verdict tests load it).
    let mut cmd = cargo(&["test"]);
    cmd.args(extra).env("FW_USER_BIN", fw_user_path(false));
    check(&mut cmd)
}

pub fn demo() -> Result<()> {
    require_root("demo")?;
    build(false)?;
    let mut cmd = cargo(&["run", "--quiet", "--package", "fw-tests", "--bin", "fw-demo"]);
    cmd.env("FW_USER_BIN", fw_user_path(false));
    check(&mut cmd)
}
