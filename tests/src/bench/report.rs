//! The report: a text table of every figure beside its ratio to the
//! baseline measured in the same run, the targets judged from the
//! figures present, and (`plot`) an SVG of cost over rule count.
//!
//! The report only reads `Measurement`s; the names it looks for in the
//! targets are those the sections write: arms `fw`, `xdp-pass`, `xdp-drop`,
//! `xdp-filter`, `iptables-raw`, `iptables`; kernel cases `established`,
//! `blocklisted…`, `new-syn…`; control case `load`. A target whose figures
//! are absent is NOT MEASURED, never guessed.

pub mod plot;

use std::fmt::Write as _;

use super::{Measurement, Section, Unit};

/// The text table, every figure beside its ratio to its baseline, then the
/// targets.
#[must_use]
pub fn table(m: &[Measurement]) -> String {
    let mut t = String::new();
    if m.is_empty() {
        t.push_str("no figures: every arm failed or was skipped (see the messages above)\n");
    }
    for section in [Section::Kernel, Section::Traffic, Section::Control] {
        let rows: Vec<&Measurement> = m.iter().filter(|x| x.section == section).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(t, "== {} ==", section_title(section));
        for case in in_order(rows.iter().map(|x| x.case.as_str())) {
            let _ = writeln!(t, "\n-- {case} --");
            let mut of_case: Vec<&Measurement> =
                rows.iter().copied().filter(|x| x.case == case).collect();
            let arms = in_order(of_case.iter().map(|x| x.arm.as_str()));
            let arm_rank = |a: &str| arms.iter().position(|x| *x == a).unwrap_or(usize::MAX);
            // Same size side by side: set size, then rule count, then arm.
            of_case.sort_by_key(|x| (x.set_size, x.rules, arm_rank(&x.arm)));
            let mut notes: Vec<&str> = Vec::new();
            let mut lines = vec![[
                "arm".to_string(),
                "rules".into(),
                "set".into(),
                "value".into(),
                "ratio".into(),
                "note".into(),
            ]];
            for x in &of_case {
                let note = x.note.as_deref().map_or(String::new(), |n| {
                    let i = notes.iter().position(|k| *k == n).unwrap_or_else(|| {
                        notes.push(n);
                        notes.len() - 1
                    });
                    format!("[{}]", i + 1)
                });
                lines.push([
                    x.arm.clone(),
                    x.rules.map_or("-".into(), count),
                    x.set_size.map_or("-".into(), count),
                    human(x.value, x.unit),
                    ratio_text(x, m).unwrap_or_default(),
                    note,
                ]);
            }
            let widths: Vec<usize> = (0..6)
                .map(|c| {
                    lines
                        .iter()
                        .map(|l| l[c].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for l in &lines {
                let _ = writeln!(
                    t,
                    "  {:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
                    l[0],
                    l[1],
                    l[2],
                    l[3],
                    l[4],
                    l[5],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3],
                    w4 = widths[4],
                );
            }
            for (i, n) in notes.iter().enumerate() {
                let _ = writeln!(t, "  [{}] {n}", i + 1);
            }
        }
        t.push('\n');
    }
    t.push_str("== targets (issue 8; benchmark targets, not assertions) ==\n");
    for target in targets(m) {
        let _ = writeln!(
            t,
            "  {:<13} {}: {}",
            target.status.label(),
            target.name,
            target.detail
        );
    }
    t
}

fn section_title(s: Section) -> &'static str {
    match s {
        Section::Kernel => "kernel: cost per packet in BPF_PROG_TEST_RUN",
        Section::Traffic => "traffic: floods over veth",
        Section::Control => "control plane: compile, load, reload, memory",
    }
}

/// Distinct values in first-seen order.
fn in_order<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// 1k, 100k, 1M for round sizes; the number otherwise.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// `value` in the unit a reader expects at its size.
#[must_use]
pub fn human(value: f64, unit: Unit) -> String {
    match unit {
        Unit::NsPerPacket if value >= 1_000.0 => format!("{:.2} µs/pkt", value / 1_000.0),
        Unit::NsPerPacket => format!("{value:.1} ns/pkt"),
        Unit::Pps if value >= 1e6 => format!("{:.2} Mpps", value / 1e6),
        Unit::Pps if value >= 1e3 => format!("{:.1} kpps", value / 1e3),
        Unit::Pps => format!("{value:.0} pps"),
        Unit::Seconds if value >= 1.0 => format!("{value:.2} s"),
        Unit::Seconds if value >= 1e-3 => format!("{:.1} ms", value * 1e3),
        Unit::Seconds => format!("{:.0} µs", value * 1e6),
        Unit::Bytes if value >= 1_048_576.0 => format!("{:.1} MiB", value / 1_048_576.0),
        Unit::Bytes if value >= 1_024.0 => format!("{:.1} KiB", value / 1_024.0),
        Unit::Bytes => format!("{value:.0} B"),
    }
}

/// The figure of `arm` that `row` compares with: same section, case and
/// unit; the same `rules`/`set_size` where that arm's figure has them (a
/// baseline measured once, without sizes, serves every size); else, when
/// the arm has one figure for the case, that one.
#[must_use]
pub fn counterpart<'a>(
    row: &Measurement,
    arm: &str,
    all: &'a [Measurement],
) -> Option<&'a Measurement> {
    let candidates: Vec<&Measurement> = all
        .iter()
        .filter(|b| {
            b.section == row.section && b.case == row.case && b.unit == row.unit && b.arm == arm
        })
        .collect();
    if let Some(exact) = candidates
        .iter()
        .find(|b| b.rules == row.rules && b.set_size == row.set_size)
    {
        return Some(exact);
    }
    let fits = |b: Option<u64>, r: Option<u64>| b.is_none() || b == r;
    let compatible: Vec<&Measurement> = candidates
        .iter()
        .copied()
        .filter(|b| fits(b.rules, row.rules) && fits(b.set_size, row.set_size))
        .collect();
    match (compatible.as_slice(), candidates.as_slice()) {
        ([one], _) | ([], [one]) => Some(one),
        _ => None,
    }
}

/// `row`'s value over its baseline's, when it has one and it was measured.
#[must_use]
pub fn ratio(row: &Measurement, all: &[Measurement]) -> Option<(f64, String)> {
    let arm = row.baseline.as_deref()?;
    if arm == row.arm {
        return None;
    }
    let base = counterpart(row, arm, all)?;
    (base.value > 0.0).then(|| (row.value / base.value, arm.to_string()))
}

fn ratio_text(row: &Measurement, all: &[Measurement]) -> Option<String> {
    let (r, arm) = ratio(row, all)?;
    Some(if row.unit.higher_is_better() {
        format!("{r:.2}× of {arm}")
    } else {
        format!("{r:.2}× {arm}")
    })
}

/// How a target came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    NotMeasured,
    /// Not a target, something to show (iptables' linear cost).
    Info,
}

impl Status {
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Met => "MET ✓",
            Self::Missed => "MISSED ✗",
            Self::NotMeasured => "NOT MEASURED",
            Self::Info => "INFO",
        }
    }
}

/// One of the targets, judged.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

fn where_(x: &Measurement) -> String {
    let mut parts = vec![x.case.clone()];
    if let Some(r) = x.rules {
        parts.push(format!("{} rules", count(r)));
    }
    if let Some(s) = x.set_size {
        parts.push(format!("set {}", count(s)));
    }
    parts.join(", ")
}

/// The fw figures of `section` whose case passes `case`, each with its
/// ratio to `arm`'s counterpart; the worst one (largest for costs, smallest
/// for rates) with how many were compared.
fn worst_ratio(
    all: &[Measurement],
    section: Section,
    case: &dyn Fn(&str) -> bool,
    filter: &dyn Fn(&Measurement) -> bool,
    arm: &str,
) -> Option<(f64, &'static str, String, usize)> {
    let mut worst: Option<(f64, String, bool)> = None;
    let mut n = 0;
    for x in all
        .iter()
        .filter(|x| x.section == section && x.arm == "fw" && case(&x.case) && filter(x))
    {
        let Some(b) = counterpart(x, arm, all).filter(|b| b.value > 0.0) else {
            continue;
        };
        let r = x.value / b.value;
        let hib = x.unit.higher_is_better();
        n += 1;
        let replaces = worst
            .as_ref()
            .is_none_or(|(w, _, _)| if hib { r < *w } else { r > *w });
        if replaces {
            worst = Some((r, where_(x), hib));
        }
    }
    worst.map(|(r, w, hib)| (r, if hib { "lowest" } else { "highest" }, w, n))
}

/// A "fw within/at least `bound`× of `arm`" target.
fn ratio_target(
    name: &'static str,
    all: &[Measurement],
    section: Section,
    case: &dyn Fn(&str) -> bool,
    filter: &dyn Fn(&Measurement) -> bool,
    arm: &str,
    bound: f64,
) -> Target {
    match worst_ratio(all, section, case, filter, arm) {
        None => Target {
            name,
            status: Status::NotMeasured,
            detail: format!("needs fw and {arm} figures of the same case"),
        },
        Some((r, which, at, n)) => {
            let met = if which == "lowest" {
                r >= bound
            } else {
                r <= bound
            };
            Target {
                name,
                status: if met { Status::Met } else { Status::Missed },
                detail: format!("{which} {r:.2}× {arm} ({at}; {n} compared)"),
            }
        }
    }
}

/// The benchmark targets, judged from the figures present.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one block per target, in the issue's order"
)]
pub fn targets(all: &[Measurement]) -> Vec<Target> {
    let any = |_: &Measurement| true;
    let mut out = vec![
        ratio_target(
            "established-flow verdict within 2× of the empty program",
            all,
            Section::Kernel,
            &|c| c == "established",
            &any,
            "xdp-pass",
            2.0,
        ),
        ratio_target(
            "blocklisted-source verdict within 2× of the empty program",
            all,
            Section::Kernel,
            &|c| c.starts_with("blocklist"),
            &any,
            "xdp-pass",
            2.0,
        ),
    ];
    let big = |x: &Measurement| x.rules == Some(10_000) && x.set_size == Some(1_000_000);
    let mut t = ratio_target(
        "new flow with 10k rules and a 1M set within 4× of the empty program",
        all,
        Section::Kernel,
        &|c| c.starts_with("new-syn"),
        &big,
        "xdp-pass",
        4.0,
    );
    if t.status == Status::NotMeasured {
        let largest = all
            .iter()
            .filter(|x| {
                x.section == Section::Kernel && x.arm == "fw" && x.case.starts_with("new-syn")
            })
            .max_by_key(|x| (x.rules, x.set_size));
        t.detail = largest.map_or_else(
            || "no fw new-syn figures".to_string(),
            |x| {
                format!(
                    "no fw figure at 10k rules with a 1M set (largest: {})",
                    where_(x)
                )
            },
        );
    }
    out.push(t);
    out.push(flat_target(all));
    out.push(iptables_linear(all));
    let pps = |x: &Measurement| x.unit == Unit::Pps;
    out.push(ratio_target(
        "veth drop rate at least 90% of the bare XDP_DROP ceiling",
        all,
        Section::Traffic,
        &|_| true,
        &pps,
        "xdp-drop",
        0.9,
    ));
    out.push(ratio_target(
        "veth drop rate at least 3× iptables raw",
        all,
        Section::Traffic,
        &|_| true,
        &pps,
        "iptables-raw",
        3.0,
    ));
    out.push(ratio_target(
        "veth drop rate at least xdp-filter's",
        all,
        Section::Traffic,
        &|_| true,
        &pps,
        "xdp-filter",
        1.0,
    ));
    let loads: Vec<&Measurement> = all
        .iter()
        .filter(|x| x.section == Section::Control && x.arm == "fw" && x.case == "load")
        .collect();
    let million = loads
        .iter()
        .filter(|x| x.set_size == Some(1_000_000))
        .min_by_key(|x| x.rules);
    out.push(match million {
        Some(x) => Target {
            name: "1M-prefix blocklist loads in under 2 s",
            status: if x.value < 2.0 {
                Status::Met
            } else {
                Status::Missed
            },
            detail: format!("{} ({})", human(x.value, x.unit), where_(x)),
        },
        None => Target {
            name: "1M-prefix blocklist loads in under 2 s",
            status: Status::NotMeasured,
            detail: loads
                .iter()
                .filter(|x| x.set_size.is_some())
                .max_by_key(|x| x.set_size)
                .map_or_else(
                    || "no fw load with a blocklist".into(),
                    |x| {
                        format!(
                            "largest set loaded: {} in {}",
                            where_(x),
                            human(x.value, x.unit)
                        )
                    },
                ),
        },
    });
    out
}

/// 10k rules within 1.3× of 10 rules, per kernel case, worst case.
fn flat_target(all: &[Measurement]) -> Target {
    let name = "cost flat with rule count: 10k rules within 1.3× of 10 rules";
    let sweep = |x: &Measurement, n: u64| {
        x.section == Section::Kernel
            && x.arm == "fw"
            && x.rules == Some(n)
            && x.set_size.unwrap_or(0) == 0
    };
    let mut worst: Option<(f64, String)> = None;
    for big in all.iter().filter(|x| sweep(x, 10_000)) {
        let Some(small) = all
            .iter()
            .find(|x| sweep(x, 10) && x.case == big.case && x.unit == big.unit)
        else {
            continue;
        };
        if small.value <= 0.0 {
            continue;
        }
        let r = big.value / small.value;
        if worst.as_ref().is_none_or(|(w, _)| r > *w) {
            worst = Some((r, big.case.clone()));
        }
    }
    if let Some((r, case)) = worst {
        Target {
            name,
            status: if r <= 1.3 {
                Status::Met
            } else {
                Status::Missed
            },
            detail: format!("highest 10k/10 ratio {r:.2}× ({case})"),
        }
    } else {
        let largest = all
            .iter()
            .filter(|x| {
                x.section == Section::Kernel && x.arm == "fw" && x.set_size.unwrap_or(0) == 0
            })
            .filter_map(|x| x.rules)
            .max();
        Target {
            name,
            status: Status::NotMeasured,
            detail: largest.map_or_else(
                || "no fw kernel figures over rule counts".into(),
                |n| {
                    format!(
                        "needs fw kernel figures at 10 and 10k rules (largest: {})",
                        count(n)
                    )
                },
            ),
        }
    }
}

/// iptables' cost at its largest rule count over its smallest, per case of
/// any section where it has several: the linear growth the issue expects.
fn iptables_linear(all: &[Measurement]) -> Target {
    let name = "iptables grows with rule count (expected linear)";
    let mut shown = Vec::new();
    for section in [Section::Kernel, Section::Traffic] {
        let rows: Vec<&Measurement> = all
            .iter()
            .filter(|x| x.section == section && x.arm == "iptables" && x.set_size.unwrap_or(0) == 0)
            .collect();
        for case in in_order(rows.iter().map(|x| x.case.as_str())) {
            let of: Vec<&&Measurement> = rows
                .iter()
                .filter(|x| x.case == case && x.rules.is_some())
                .collect();
            let (Some(lo), Some(hi)) = (
                of.iter().min_by_key(|x| x.rules),
                of.iter().max_by_key(|x| x.rules),
            ) else {
                continue;
            };
            if lo.rules == hi.rules || lo.value <= 0.0 {
                continue;
            }
            shown.push(format!(
                "{case}: {} at {} rules vs {} at {} ({:.2}×)",
                human(hi.value, hi.unit),
                count(hi.rules.unwrap_or(0)),
                human(lo.value, lo.unit),
                count(lo.rules.unwrap_or(0)),
                hi.value / lo.value
            ));
        }
    }
    if shown.is_empty() {
        Target {
            name,
            status: Status::NotMeasured,
            detail: "needs iptables figures at several rule counts".into(),
        }
    } else {
        Target {
            name,
            status: Status::Info,
            detail: shown.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::too_many_arguments, reason = "one argument per field")]
    fn m(
        section: Section,
        arm: &str,
        case: &str,
        rules: Option<u64>,
        set: Option<u64>,
        value: f64,
        unit: Unit,
        base: Option<&str>,
    ) -> Measurement {
        Measurement {
            section,
            arm: arm.into(),
            case: case.into(),
            rules,
            set_size: set,
            value,
            unit,
            baseline: base.map(Into::into),
            note: None,
        }
    }

    fn kernel(arm: &str, case: &str, rules: Option<u64>, set: Option<u64>, ns: f64) -> Measurement {
        m(
            Section::Kernel,
            arm,
            case,
            rules,
            set,
            ns,
            Unit::NsPerPacket,
            Some("xdp-pass"),
        )
    }

    fn status(ts: &[Target], prefix: &str) -> Status {
        ts.iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
            .status
    }

    #[test]
    fn the_ratio_takes_the_same_size_or_the_only_figure() {
        let all = vec![
            m(
                Section::Control,
                "iptables",
                "load",
                Some(10),
                None,
                0.2,
                Unit::Seconds,
                None,
            ),
            m(
                Section::Control,
                "iptables",
                "load",
                Some(100),
                None,
                0.4,
                Unit::Seconds,
                None,
            ),
            m(
                Section::Control,
                "fw",
                "load",
                Some(100),
                None,
                0.1,
                Unit::Seconds,
                Some("iptables"),
            ),
            m(
                Section::Control,
                "fw",
                "load",
                Some(1000),
                None,
                0.1,
                Unit::Seconds,
                Some("iptables"),
            ),
            kernel("xdp-pass", "established", None, None, 10.0),
            kernel("fw", "established", Some(100), None, 17.0),
        ];
        let (r, arm) = ratio(&all[2], &all).unwrap();
        assert!((r - 0.25).abs() < 1e-9, "{r}");
        assert_eq!(arm, "iptables");
        // No iptables figure at 1000 and several others: no ratio.
        assert!(ratio(&all[3], &all).is_none());
        // A baseline measured once without sizes serves every size.
        let (r, _) = ratio(&all[5], &all).unwrap();
        assert!((r - 1.7).abs() < 1e-9);
        // A baseline is not its own ratio.
        assert!(ratio(&all[0], &all).is_none());
    }

    #[test]
    fn rates_read_as_a_share_of_the_ceiling() {
        let all = vec![
            m(
                Section::Traffic,
                "xdp-drop",
                "udp-flood",
                None,
                None,
                10e6,
                Unit::Pps,
                None,
            ),
            m(
                Section::Traffic,
                "fw",
                "udp-flood",
                Some(10),
                None,
                9.3e6,
                Unit::Pps,
                Some("xdp-drop"),
            ),
        ];
        assert_eq!(ratio_text(&all[1], &all).unwrap(), "0.93× of xdp-drop");
        assert_eq!(human(9.3e6, Unit::Pps), "9.30 Mpps");
        let t = table(&all);
        assert!(t.contains("0.93× of xdp-drop"), "{t}");
        assert!(t.contains("== traffic"), "{t}");
    }

    #[test]
    fn units_read_at_their_size() {
        assert_eq!(human(0.3, Unit::Seconds), "300.0 ms");
        assert_eq!(human(2.5, Unit::Seconds), "2.50 s");
        assert_eq!(human(3.0 * 1_048_576.0, Unit::Bytes), "3.0 MiB");
        assert_eq!(human(42.0, Unit::NsPerPacket), "42.0 ns/pkt");
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(100_000), "100k");
        assert_eq!(count(250), "250");
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of synthetic figures")]
    fn targets_met_missed_and_not_measured() {
        let mut all = vec![
            kernel("xdp-pass", "established", None, None, 10.0),
            kernel("fw", "established", Some(10), None, 15.0),
            kernel("fw", "established", Some(10_000), None, 19.0),
            kernel("xdp-pass", "blocklisted", None, None, 10.0),
            kernel("fw", "blocklisted", Some(10), Some(1_000), 25.0),
            kernel("fw", "new-syn-denied", Some(10), None, 100.0),
            kernel("fw", "new-syn-denied", Some(10_000), None, 120.0),
        ];
        let ts = targets(&all);
        assert_eq!(status(&ts, "established"), Status::Met);
        assert_eq!(status(&ts, "blocklisted"), Status::Missed);
        assert_eq!(status(&ts, "new flow"), Status::NotMeasured);
        // 120/100 and 19/15 (1.27): both within 1.3.
        assert_eq!(status(&ts, "cost flat"), Status::Met);
        assert_eq!(
            status(&ts, "veth drop rate at least 90%"),
            Status::NotMeasured
        );
        assert_eq!(status(&ts, "1M-prefix"), Status::NotMeasured);
        assert_eq!(status(&ts, "iptables grows"), Status::NotMeasured);

        all.push(kernel("fw", "new-syn-denied", Some(10), None, 100.0));
        all.extend([
            m(
                Section::Traffic,
                "xdp-drop",
                "udp-flood",
                None,
                None,
                10e6,
                Unit::Pps,
                None,
            ),
            m(
                Section::Traffic,
                "iptables-raw",
                "udp-flood",
                None,
                None,
                2e6,
                Unit::Pps,
                None,
            ),
            m(
                Section::Traffic,
                "xdp-filter",
                "udp-flood",
                None,
                None,
                8e6,
                Unit::Pps,
                None,
            ),
            m(
                Section::Traffic,
                "fw",
                "udp-flood",
                Some(1),
                None,
                9.5e6,
                Unit::Pps,
                Some("xdp-drop"),
            ),
            m(
                Section::Traffic,
                "fw",
                "udp-flood",
                Some(100),
                None,
                8.5e6,
                Unit::Pps,
                Some("xdp-drop"),
            ),
            m(
                Section::Traffic,
                "iptables",
                "udp-flood",
                Some(1),
                None,
                3e6,
                Unit::Pps,
                Some("xdp-drop"),
            ),
            m(
                Section::Traffic,
                "iptables",
                "udp-flood",
                Some(100),
                None,
                1e6,
                Unit::Pps,
                Some("xdp-drop"),
            ),
            m(
                Section::Control,
                "fw",
                "load",
                Some(10),
                Some(1_000_000),
                1.5,
                Unit::Seconds,
                Some("iptables"),
            ),
            m(
                Section::Control,
                "fw",
                "load",
                Some(10_000),
                Some(1_000_000),
                2.5,
                Unit::Seconds,
                Some("iptables"),
            ),
        ]);
        let ts = targets(&all);
        // The worst of 0.95 and 0.85.
        assert_eq!(status(&ts, "veth drop rate at least 90%"), Status::Missed);
        assert_eq!(status(&ts, "veth drop rate at least 3×"), Status::Met);
        assert_eq!(status(&ts, "veth drop rate at least xdp"), Status::Met);
        // The smallest policy carrying the 1M set.
        assert_eq!(status(&ts, "1M-prefix"), Status::Met);
        assert_eq!(status(&ts, "iptables grows"), Status::Info);
        let t = table(&all);
        assert!(
            t.lines()
                .any(|l| l.contains("MISSED") && l.contains("at least 90%")),
            "{t}"
        );
    }
}
