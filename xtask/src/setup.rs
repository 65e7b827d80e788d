//! Idempotent installation of what building, testing and fuzzing fw needs. Each step
//! says what it checks and what it does; where it cannot act (not root, not
//! Debian) it prints the exact commands to run instead.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: LLVM 22 for bpf-linker (it must match nightly's LLVM),
/// and the tools the tests drive.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iptables",
    "nftables",
    "iputils-ping",
    "procps",
    "util-linux",
    // The test VM: QEMU, busybox for its init, kmod for depmod and the
    // guest's modprobe, xz for Debian's compressed modules.
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    // `cargo xtask bench`'s peers and traffic: xdp-filter (and xdp-bench,
    // xdp-trafficgen), ipset, trafgen.
    "xdp-tools",
    "ipset",
    "netsniff-ng",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn say(msg: &str) {
    eprintln!("[setup] {msg}");
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    say(&format!("{what}: {cmd:?}"));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); run it by hand to see why: {cmd:?}");
    }
    Ok(())
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).trim() == "0"
}

fn apt_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .contains("install ok installed")
}

pub fn run() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    let linker_ok = quiet_ok(Command::new("bpf-linker").arg("--version"));
    let nightly_ok = output(Command::new("rustup").args(["toolchain", "list"]))
        .lines()
        .any(|l| l.starts_with("nightly"));
    let rust_src_ok = nightly_ok
        && output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))
        .lines()
        .any(|l| l.starts_with("rust-src"));
    let fuzz_ok = cargo_fuzz_present();
    if missing.is_empty() && linker_ok && rust_src_ok && fuzz_ok {
        say("prerequisites present (Debian packages, nightly + rust-src, bpf-linker, cargo-fuzz)");
        return Ok(());
    }

    let debian = Path::new("/etc/debian_version").exists();
    if missing.is_empty() {
        say("Debian packages present");
    } else {
        if !debian || !is_root() {
            let why = if debian { "not root" } else { "not Debian" };
            say(&format!(
                "cannot install packages here ({why}); run as root on Debian 12:"
            ));
            eprintln!(
                "    apt-get update && apt-get install -y {}",
                missing.join(" ")
            );
            bail!("missing packages: {}", missing.join(" "));
        }
        say(&format!(
            "installing Debian packages: {}",
            missing.join(" ")
        ));
        run_step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-q"]),
        )?;
        run_step(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    if nightly_ok {
        say("nightly toolchain present");
    } else {
        run_step(
            "installing the nightly toolchain (kernel programs need -Z build-std)",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    if rust_src_ok {
        say("rust-src for nightly present");
    } else {
        run_step(
            "adding rust-src to nightly",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }

    install_cargo_tools(linker_ok, fuzz_ok)
}

/// What `cargo install` brings: bpf-linker (built against Debian's LLVM)
/// and cargo-fuzz.
fn install_cargo_tools(linker_ok: bool, fuzz_ok: bool) -> Result<()> {
    if linker_ok {
        say("bpf-linker present");
    } else {
        say("building bpf-linker against Debian's LLVM 22 (about a minute)");
        run_step(
            "cargo install bpf-linker",
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }

    if fuzz_ok {
        say("cargo-fuzz present");
    } else {
        run_step(
            "installing cargo-fuzz for the fuzz targets in fw-user/fuzz (about two minutes)",
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    Ok(())
}

/// Is `cargo fuzz` (the cargo-fuzz subcommand) installed?
fn cargo_fuzz_present() -> bool {
    quiet_ok(Command::new("cargo").args(["fuzz", "--version"]))
}
