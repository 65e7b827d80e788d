//! The real `fw-user` binary, run inside a test namespace.

use std::{path::PathBuf, process::Command};

use crate::netns::Netns;

/// Path of the `fw-user` binary built alongside the tests:
/// `$FW_USER_BIN`, or `target/<profile>/fw-user` next to the test binary.
#[must_use]
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FW_USER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/fw-user
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("fw-user"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not built: run the suite with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Where fw-user run by the tests keeps its state (`FW_STATE_DIR`): not
/// the host's /var/lib/fw. Each firewall's directory is named after its
/// pin path, unique per test.
#[must_use]
pub fn state_base() -> PathBuf {
    std::env::temp_dir().join("fw-test-state")
}

/// The state directory fw-user uses for the firewall pinned at `pin`
/// (`fw_user::state::StateDir::for_layout` under `state_base()`).
#[must_use]
pub fn state_dir(pin: &str) -> PathBuf {
    state_base().join(fw_user::pin::PinLayout::new(pin).file_name())
}

/// `fw-user` as the tests run it: with `FW_STATE_DIR` set.
#[must_use]
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env("FW_STATE_DIR", state_base());
    cmd
}

/// `ip netns exec NS fw-user`, with the tests' `FW_STATE_DIR`.
#[must_use]
pub fn in_netns(ns: &Netns) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(binary())
        .env("FW_STATE_DIR", state_base());
    cmd
}

/// Output of one `fw-user` run.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `fw-user ARGS` inside `ns` via `ip netns exec`, as an operator would.
#[must_use]
pub fn fw_user(ns: &Netns, args: &[&str]) -> Run {
    let out = in_netns(ns)
        .args(args)
        .output()
        .expect("run ip netns exec fw-user");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like `fw_user`, panicking with the output when it fails.
#[expect(
    clippy::must_use_candidate,
    reason = "callers often want only the side effect"
)]
pub fn fw_user_ok(ns: &Netns, args: &[&str]) -> String {
    let r = fw_user(ns, args);
    assert!(
        r.ok,
        "fw-user {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// `--backend B` when the suite runs with `FW_TEST_BACKEND=B` (`cargo xtask
/// test` runs the example policies once more with the iptables backend);
/// `--backend xdp` otherwise: with the default, `auto`, a datapath the
/// kernel refuses would fall back to iptables and every traffic test would
/// still pass, hiding it (as on 6.1 before the rule search used `bpf_loop`).
#[must_use]
pub fn backend_args() -> Vec<String> {
    let backend = std::env::var("FW_TEST_BACKEND").unwrap_or_else(|_| "xdp".into());
    vec!["--backend".to_string(), backend]
}
