//! The workloads every arm is measured on: one shape of policy at every
//! size, so that cost curves compare like with like.
//!
//! A policy of `n` rules guards the server 192.0.2.1 (`packet::SERVER4`):
//! an optional blocklist rule first (`src = "@blocklist"`, drop), then `n`
//! rules `accept tcp from 203.0.113.H to port 20000 + i` (H cycles over
//! 1..=250, so both the source and the port differ from rule to rule), and
//! the default drops. The last rule is the one the allowed probe hits, so
//! a linear classifier walks every rule for it, and for the denied probe
//! (port 19999) before the default decides.
//!
//! Blocklists are drawn deterministically (splitmix64, fixed seed) from
//! 10.0.0.0/8 and 100.64.0.0/10 with lengths 16..=32; the listed probe
//! source 198.51.100.66 is always included, and 203.0.113.0/24 never is.
//! The prefixes are data in a trie, never addresses on a wire.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ipnet::IpNet;

use crate::scenario::spec::{Generated, RandomPrefixes};

/// Port of rule `i` (0-based).
#[must_use]
pub const fn rule_port(i: u64) -> u16 {
    #[expect(clippy::cast_possible_truncation, reason = "n <= 10k rules")]
    let p = 20_000 + i as u16;
    p
}

/// Source host of rule `i`: 203.0.113.(1 + i % 250).
#[must_use]
pub const fn rule_source(i: u64) -> Ipv4Addr {
    let h = 1 + (i % 250) as u8;
    Ipv4Addr::new(203, 0, 113, h)
}

/// A destination port no rule names: the denied probe's.
pub const DENIED_PORT: u16 = 19_999;
/// A blocklisted source (always in the set).
pub const LISTED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
/// The server every policy guards.
pub const SERVER: Ipv4Addr = crate::packet::SERVER4;

/// The probe that the last rule of an `n`-rule policy accepts: (source,
/// destination port).
#[must_use]
pub const fn allowed_probe(n: u64) -> (Ipv4Addr, u16) {
    let last = if n == 0 { 0 } else { n - 1 };
    (rule_source(last), rule_port(last))
}

/// The blocklist's prefixes: `LISTED` first, then `size - 1` random ones.
#[must_use]
pub fn blocklist(size: u64) -> Vec<IpNet> {
    let size = usize::try_from(size).expect("a set size fits usize");
    let rest = size.saturating_sub(1);
    let g = Generated {
        file: "blocklist.txt".into(),
        seed: 20_261_122,
        include: vec![IpNet::new(IpAddr::V4(LISTED), 32).expect("a /32")],
        random: vec![
            RandomPrefixes {
                within: "10.0.0.0/8".parse().expect("a prefix"),
                count: rest / 2,
                lengths: 16..33,
            },
            RandomPrefixes {
                within: "100.64.0.0/10".parse().expect("a prefix"),
                count: rest - rest / 2,
                lengths: 16..33,
            },
        ],
    };
    crate::scenario::generate::prefixes(&g)
}

/// A policy on disk, with its set file beside it.
pub struct Workload {
    pub policy: PathBuf,
    pub rules: u64,
    pub set_size: u64,
}

/// The policy text for `rules` rules and a blocklist of `set_size`
/// prefixes (0: no blocklist rule), reading the set from `blocklist.txt`.
#[must_use]
pub fn policy_text(rules: u64, set_size: u64) -> String {
    let mut t = String::with_capacity(64 + usize::try_from(rules).unwrap_or(0) * 96);
    let _ = writeln!(
        t,
        "# fw bench workload: {rules} rules, blocklist of {set_size} prefixes\n\
         [defaults]\ninput = \"drop\"\noutput = \"accept\"\n"
    );
    if set_size > 0 {
        t.push_str("[sets]\nblocklist = { file = \"blocklist.txt\" }\n\n");
        t.push_str("[[input]]\nname = \"blocklist\"\nsrc = \"@blocklist\"\naction = \"drop\"\n\n");
    }
    for i in 0..rules {
        let _ = writeln!(
            t,
            "[[input]]\nname = \"r{i}\"\nproto = \"tcp\"\nsrc = \"{}\"\ndport = {}\naction = \"accept\"\n",
            rule_source(i),
            rule_port(i)
        );
    }
    t
}

/// Write the workload into `dir` (created if missing): `policy.toml` and,
/// with a blocklist, `blocklist.txt`.
///
/// # Errors
/// Writing the files failed.
pub fn write(dir: &Path, rules: u64, set_size: u64) -> std::io::Result<Workload> {
    std::fs::create_dir_all(dir)?;
    if set_size > 0 {
        let mut text = String::with_capacity(usize::try_from(set_size).unwrap_or(0) * 18);
        for n in blocklist(set_size) {
            let _ = writeln!(text, "{n}");
        }
        std::fs::write(dir.join("blocklist.txt"), text)?;
    }
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_text(rules, set_size))?;
    Ok(Workload {
        policy,
        rules,
        set_size,
    })
}
