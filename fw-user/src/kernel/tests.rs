use fw_common::kernel::{Feature, MIN_KERNEL, REQUIREMENTS};

use super::{Probed, Shortfall, assess, parse_release, unmet};
use crate::error::Error;

#[test]
fn releases_parse_whatever_follows_the_version() {
    for (release, want) in [
        ("6.1.0-56-amd64", (6, 1)),
        ("6.12.117+deb12-amd64", (6, 12)),
        ("5.14.0-427.el9.x86_64", (5, 14)),
        ("5.15.0-1051-aws", (5, 15)),
        ("6.18.44-fc-v657", (6, 18)),
        ("6.8", (6, 8)),
        ("6.10-rc3", (6, 10)),
        ("4.19.0+", (4, 19)),
        ("5.4.0-generic\n", (5, 4)),
    ] {
        assert_eq!(parse_release(release), Some(want), "{release}");
    }
    for release in ["", "linux", "6", "6.", ".1", "x6.1", "6.x1"] {
        assert_eq!(parse_release(release), None, "{release:?}");
    }
}

/// Every probe answers the same.
fn all(p: Probed) -> impl Fn(Feature) -> Probed {
    move |_| p
}

/// `p` for `feature`, Unknown for the rest.
fn only(feature: Feature, p: Probed) -> impl Fn(Feature) -> Probed {
    move |f| if f == feature { p } else { Probed::Unknown }
}

fn missing_features(
    release: &str,
    probed: impl Fn(Feature) -> Probed,
) -> Vec<(Feature, Shortfall)> {
    unmet(parse_release(release), probed)
        .iter()
        .map(|u| (u.requirement.feature, u.shortfall))
        .collect()
}

#[test]
fn a_new_enough_kernel_passes_without_probes() {
    let (major, minor) = MIN_KERNEL;
    for release in [
        format!("{major}.{minor}.0"),
        "6.1.0-56-amd64".to_string(),
        "6.12.117+deb12-amd64".to_string(),
    ] {
        assert!(assess(&release, all(Probed::Unknown)).is_ok(), "{release}");
        assert!(assess(&release, all(Probed::Present)).is_ok(), "{release}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_version_too_old_names_what_came_later() {
    // Debian 11: 5.10 has neither the compare-and-swap, bpf_loop nor
    // bpf_xdp_load_bytes.
    assert_eq!(
        missing_features("5.10.0-28-amd64", all(Probed::Unknown)),
        [
            (Feature::AtomicCmpxchg, Shortfall::TooOld),
            (Feature::Loop, Shortfall::TooOld),
            (Feature::XdpLoadBytes, Shortfall::TooOld)
        ]
    );
    // A probe that fails confirms it.
    assert_eq!(
        missing_features("5.17.15", only(Feature::XdpLoadBytes, Probed::Missing)),
        [(Feature::XdpLoadBytes, Shortfall::TooOld)]
    );
    // Ubuntu 22.04: bpf_loop and bpf_xdp_load_bytes came after 5.15.
    assert_eq!(
        missing_features("5.15.0-91-generic", all(Probed::Unknown)),
        [
            (Feature::Loop, Shortfall::TooOld),
            (Feature::XdpLoadBytes, Shortfall::TooOld)
        ]
    );
}

#[test]
fn a_backport_found_by_the_probe_beats_the_version() {
    // RHEL 9 reports 5.14 but carries a much newer BPF.
    let rhel = "5.14.0-427.el9.x86_64";
    assert!(assess(rhel, all(Probed::Unknown)).is_err());
    assert!(assess(rhel, all(Probed::Present)).is_ok());
    // Only the features newer than 5.14 need the probe.
    let newer: Vec<Feature> = REQUIREMENTS
        .iter()
        .filter(|r| r.since > (5, 14))
        .map(|r| r.feature)
        .collect();
    let probed = |f: Feature| {
        if newer.contains(&f) {
            Probed::Present
        } else {
            Probed::Unknown
        }
    };
    assert!(assess(rhel, probed).is_ok());
}

#[test]
fn a_missing_probe_beats_a_new_enough_version() {
    // A kernel whose JIT lacks the compare-and-swap, or runs without JIT.
    assert_eq!(
        missing_features(
            "6.1.0-56-amd64",
            only(Feature::AtomicCmpxchg, Probed::Missing)
        ),
        [(Feature::AtomicCmpxchg, Shortfall::Refused)]
    );
    let Err(Error::UnsupportedKernel { hint, .. }) = assess(
        "6.1.0-56-amd64",
        only(Feature::TailCallsWithCalls, Probed::Missing),
    ) else {
        panic!("a refused feature must be an error");
    };
    assert!(hint.contains("bpf_jit_enable"), "{hint}");
}

#[test]
fn an_unreadable_release_leaves_it_to_the_probes() {
    assert!(assess("unknown", all(Probed::Unknown)).is_ok());
    assert!(assess("unknown", all(Probed::Present)).is_ok());
    assert_eq!(
        missing_features("unknown", only(Feature::RingBuf, Probed::Missing)),
        [(Feature::RingBuf, Shortfall::Refused)]
    );
}

#[test]
fn the_error_says_what_is_missing_since_when_what_runs_and_what_to_do() {
    let Err(e) = assess("5.4.0-150-generic", all(Probed::Unknown)) else {
        panic!("5.4 cannot run the datapath");
    };
    let text = e.to_string();
    let (major, minor) = MIN_KERNEL;
    for want in [
        "Linux 5.4.0-150-generic",
        "BPF ring buffer (Linux 5.8+, for log events)",
        "`bpf_xdp_load_bytes` (Linux 5.18+, for",
        &format!("needs Linux {major}.{minor} or later"),
        "--backend iptables",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    assert!(!text.contains('\n'), "one line: {text}");
    // Features 5.4 has are not listed.
    assert!(!text.contains("LRU"), "{text}");
}

#[test]
fn the_datapath_falls_back_to_iptables_on_an_unsupported_kernel() {
    let e = assess("4.19.0-26-amd64", all(Probed::Unknown)).unwrap_err();
    assert!(crate::commands::load::ebpf_unavailable(&e));
}
