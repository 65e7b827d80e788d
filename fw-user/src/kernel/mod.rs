//! Can this kernel run the eBPF datapath? The requirements are the list in
//! `fw_common::kernel`; this module weighs the running release and what
//! the probes (`probe`) found against it.
//!
//! Distribution kernels backport BPF features to older version numbers
//! (RHEL 9 reports 5.14), so a probe that finds a feature wins over the
//! version. A probe that finds it missing wins too: the version alone
//! cannot see a kernel built without a feature or a JIT that lacks it.
//! Where the probe cannot tell (no privileges, or no cheap probe exists)
//! the version decides.

mod probe;
#[cfg(test)]
mod tests;

use fw_common::kernel::{Feature, MIN_KERNEL, REQUIREMENTS, Requirement, Version};

use crate::error::{Error, Result};

/// What probing one feature found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probed {
    /// The kernel accepted what uses the feature.
    Present,
    /// The kernel refused it in a way that means it lacks the feature.
    Missing,
    /// The probe could not tell (no privileges, an unexpected error), or
    /// there is no cheap probe for this feature.
    Unknown,
}

impl Probed {
    /// Both probes of a feature that needs both.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Missing, _) | (_, Self::Missing) => Self::Missing,
            (Self::Present, Self::Present) => Self::Present,
            _ => Self::Unknown,
        }
    }
}

/// Why a requirement is not met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// The release predates the feature, and no probe found it backported.
    TooOld,
    /// The release should have it, but the kernel refused it.
    Refused,
}

/// A requirement this kernel does not meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub requirement: &'static Requirement,
    pub shortfall: Shortfall,
}

/// `(major, minor)` of a release as `uname -r` prints it, whatever
/// follows: `6.1.0-56-amd64`, `6.12.117+deb12-amd64`,
/// `5.14.0-427.el9.x86_64`, `6.8`. `None` if it does not start with two
/// numbers.
#[must_use]
pub fn parse_release(release: &str) -> Option<Version> {
    let mut parts = release.trim().splitn(3, '.');
    let major = leading_number(parts.next()?)?;
    let minor = leading_number(parts.next()?)?;
    Some((major, minor))
}

fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The requirements a kernel of `version` (`None`: unknown) does not meet,
/// given what `probed` found for each feature.
pub fn unmet(version: Option<Version>, probed: impl Fn(Feature) -> Probed) -> Vec<Unmet> {
    let older = |r: &Requirement| version.is_some_and(|v| v < r.since);
    REQUIREMENTS
        .iter()
        .filter_map(|r| {
            let shortfall = match probed(r.feature) {
                Probed::Present => return None,
                Probed::Missing if older(r) => Shortfall::TooOld,
                Probed::Missing => Shortfall::Refused,
                Probed::Unknown if older(r) => Shortfall::TooOld,
                Probed::Unknown => return None,
            };
            Some(Unmet {
                requirement: r,
                shortfall,
            })
        })
        .collect()
}

/// Whether a kernel whose `uname -r` is `release` can run the datapath,
/// given what `probed` found for each feature.
///
/// # Errors
/// `UnsupportedKernel`, naming every requirement not met.
pub fn assess(release: &str, probed: impl Fn(Feature) -> Probed) -> Result<()> {
    let unmet = unmet(parse_release(release), probed);
    if unmet.is_empty() {
        return Ok(());
    }
    let missing = unmet
        .iter()
        .map(|u| {
            let r = u.requirement;
            let (major, minor) = r.since;
            match u.shortfall {
                Shortfall::TooOld => {
                    format!("{} (Linux {major}.{minor}+, for {})", r.name, r.used_for)
                }
                Shortfall::Refused => format!(
                    "{} (refused, although Linux {major}.{minor}+ has it; for {})",
                    r.name, r.used_for
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (major, minor) = MIN_KERNEL;
    let hint = if unmet.iter().all(|u| u.shortfall == Shortfall::Refused) {
        "the kernel may be built without what is missing, or its BPF JIT may be off (`sysctl net.core.bpf_jit_enable`) or not support it; `fw-user load --backend iptables` loads the same policy into iptables".to_string()
    } else {
        format!(
            "fw's eBPF datapath needs Linux {major}.{minor} or later: boot a newer kernel, or load the same policy into iptables with `fw-user load --backend iptables`"
        )
    };
    Err(Error::UnsupportedKernel {
        release: release.to_string(),
        missing,
        hint,
    })
}

/// The running kernel's release (`uname -r`).
#[must_use]
pub fn running_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| String::from("unknown"),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

/// Check the running kernel: its release, and a probe of every feature
/// that has one. Probes load a few instructions or create a small map and
/// close them at once; nothing is attached.
///
/// # Errors
/// `UnsupportedKernel`, naming every requirement not met.
pub fn check_running() -> Result<()> {
    check(&running_release())
}

/// `check_running` for a kernel whose `uname -r` is `release`.
///
/// # Errors
/// `UnsupportedKernel`, naming every requirement not met.
pub fn check(release: &str) -> Result<()> {
    assess(release, probe::probe)
}
