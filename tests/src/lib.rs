//! Shared machinery of fw's privileged test suites.
//!
//! - `packet`: frames built with etherparse (valid checksums), plus the
//!   deliberately broken ones the datapath must drop;
//! - `datapath`: the kernel programs loaded with private maps and driven
//!   with `BPF_PROG_TEST_RUN`, reporting which counter each packet hit;
//! - `netns`: network namespaces and veth pairs the tests create (and always
//!   delete), with documentation-range addresses; nothing here touches the
//!   root namespace's interfaces;
//! - `fwcli`: the real `fw-user` binary run inside a namespace;
//! - `diff`: the differential harness, fw's datapath beside iptables with
//!   the same policy and the same probes;
//! - `lab`: multi-host networks of namespaces joined by bridges;
//! - `scenario`: scenario suites as data (`tests/scenarios/*.toml`): hosts,
//!   networks, policies, services and a reachability matrix, run on a lab.
//!
//! Tests panic on failure (no `Result`) so backtraces point at the cause.

pub mod bench;
pub mod datapath;
pub mod diff;
pub mod fwcli;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod scenario;

/// A name no other test of any concurrent run uses: pid plus a counter.
#[must_use]
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Skip (by returning true) when not root: every test here needs
/// `CAP_BPF` and `CAP_NET_ADMIN`. `cargo xtask test` runs them as root.
#[must_use]
pub fn lacks_privileges() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipped: needs root (run `cargo xtask test` as root)");
    true
}
