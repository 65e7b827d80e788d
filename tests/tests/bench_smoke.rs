//! `cargo xtask bench --quick`'s kernel section, as a test: every arm
//! loads and every packet class gets the verdict it must (the bench panics
//! on a wrong one), so the bench cannot rot between runs. Figures are not
//! judged here: speed targets live in the bench's report, not in tests.

use std::collections::BTreeSet;

use fw_tests::{
    bench::{Depth, Section, report, testrun},
    lacks_privileges,
};

#[test]
fn kernel_section_measures_every_arm_and_class() {
    if lacks_privileges() {
        return;
    }
    let m = testrun::run(Depth::Quick);
    let arms: BTreeSet<&str> = m.iter().map(|x| x.arm.as_str()).collect();
    for arm in ["fw", "xdp-pass", "xdp-drop", "xdp-filter"] {
        assert!(arms.contains(arm), "no figure for {arm}: {arms:?}");
    }
    let fw_cases: BTreeSet<&str> = m
        .iter()
        .filter(|x| x.arm == "fw")
        .map(|x| x.case.as_str())
        .collect();
    for case in [
        "established",
        "new-syn-allowed",
        "new-syn-denied",
        "blocklisted",
        "ack-no-state",
        "ipv6-ext-headers",
    ] {
        assert!(
            fw_cases.contains(case),
            "fw has no {case} figure: {fw_cases:?}"
        );
    }
    assert!(
        m.iter()
            .all(|x| x.section == Section::Kernel && x.value.is_finite() && x.value > 0.0),
        "every figure is a positive time"
    );
    let table = report::table(&m);
    assert!(
        table.contains("× xdp-pass"),
        "ratios in the table:\n{table}"
    );
}
