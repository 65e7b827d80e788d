//! `report.svg`: cost against rule count, one panel per kind of figure
//! (kernel ns/pkt of a denied and an established packet, traffic rates per
//! flood, control-plane load time), one line per arm that has figures at
//! several rule counts, and a flat line for each baseline measured once
//! (empty programs, bare drops). Both axes are logarithmic: rule counts
//! span four decades, and iptables' linear cost beside fw's flat one would
//! squash fw's line to the floor of a linear axis.

use plotters::prelude::*;

use super::super::{Measurement, Section, Unit};

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    unit: Unit,
    lines: Vec<Series>,
    /// Baselines without a rule count: drawn flat across.
    flat: Vec<(String, f64)>,
}

/// The panels worth drawing: those with at least one arm at several rule
/// counts. Figures with a blocklist are left out (another axis).
fn panels(all: &[Measurement]) -> Vec<Panel> {
    let mut kinds: Vec<(Section, String, Unit, String)> = Vec::new();
    for case in ["new-syn-denied", "established"] {
        kinds.push((
            Section::Kernel,
            case.into(),
            Unit::NsPerPacket,
            format!("kernel: {case}, ns per packet (BPF_PROG_TEST_RUN)"),
        ));
    }
    let mut traffic: Vec<&str> = Vec::new();
    for x in all.iter().filter(|x| x.section == Section::Traffic) {
        if !traffic.contains(&x.case.as_str()) {
            traffic.push(&x.case);
        }
    }
    for case in traffic {
        for (unit, what) in [
            (Unit::Pps, "packets per second"),
            (Unit::NsPerPacket, "CPU ns per packet"),
        ] {
            kinds.push((
                Section::Traffic,
                case.into(),
                unit,
                format!("traffic over veth: {case}, {what}"),
            ));
        }
    }
    kinds.push((
        Section::Control,
        "load".into(),
        Unit::Seconds,
        "control plane: load time of the policy".into(),
    ));
    let mut out = Vec::new();
    for (section, case, unit, title) in kinds {
        let rows: Vec<&Measurement> = all
            .iter()
            .filter(|x| x.section == section && x.case == case && x.unit == unit)
            .filter(|x| x.set_size.unwrap_or(0) == 0)
            .filter(|x| x.value > 0.0)
            .collect();
        let mut arms: Vec<&str> = Vec::new();
        for x in &rows {
            if !arms.contains(&x.arm.as_str()) {
                arms.push(&x.arm);
            }
        }
        let mut lines = Vec::new();
        let mut flat = Vec::new();
        for arm in arms {
            #[expect(clippy::cast_precision_loss, reason = "rule counts are small")]
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|x| x.arm == arm)
                .filter_map(|x| Some((x.rules? as f64, x.value)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points.dedup_by(|a, b| a.0.total_cmp(&b.0).is_eq());
            if points.len() >= 2 {
                lines.push(Series {
                    label: arm.to_string(),
                    points,
                });
            } else if let Some(x) = rows.iter().find(|x| x.arm == arm && x.rules.is_none()) {
                flat.push((arm.to_string(), x.value));
            }
        }
        if !lines.is_empty() {
            out.push(Panel {
                title,
                unit,
                lines,
                flat,
            });
        }
    }
    out
}

/// The SVG text, or `None` when no arm has figures at several rule counts.
///
/// # Errors
/// Drawing failed (plotters' error, as text).
pub fn svg(all: &[Measurement]) -> Result<Option<String>, String> {
    let panels = panels(all);
    if panels.is_empty() {
        return Ok(None);
    }
    let mut buf = String::new();
    {
        let height = 460 * u32::try_from(panels.len()).unwrap_or(1);
        let root = SVGBackend::with_string(&mut buf, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((panels.len(), 1));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw(panel, area).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(Some(buf))
}

fn draw<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xs = panel
        .lines
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = panel
        .lines
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(panel.flat.iter().map(|f| f.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = (x0 / 1.5, x1 * 1.5);
    let (y0, y1) = (y0 / 1.6, y1 * 1.6);
    let unit = panel.unit;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("rules in the policy (log scale)")
        .y_desc(format!("{} (log scale)", unit.label()))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| super::human(*y, unit))
        .draw()?;
    for (i, s) in panel.lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    for (j, (arm, v)) in panel.flat.iter().enumerate() {
        let color = Palette99::pick(panel.lines.len() + j).to_rgba();
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, *v), (x1, *v)],
                6,
                4,
                color.stroke_width(1),
            ))?
            .label(format!("{arm} (no rules)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(arm: &str, rules: Option<u64>, value: f64) -> Measurement {
        Measurement {
            section: Section::Kernel,
            arm: arm.into(),
            case: "new-syn-denied".into(),
            rules,
            set_size: None,
            value,
            unit: Unit::NsPerPacket,
            baseline: None,
            note: None,
        }
    }

    #[test]
    fn arms_over_rule_counts_become_lines_and_baselines_flat() {
        let all = vec![
            m("xdp-pass", None, 10.0),
            m("fw", Some(1), 40.0),
            m("fw", Some(100), 45.0),
            m("xdp-filter", Some(1), 30.0),
        ];
        let p = panels(&all);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].lines.len(), 1);
        assert_eq!(p[0].flat, vec![("xdp-pass".to_string(), 10.0)]);
        let svg = svg(&all).unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("rules in the policy"), "{svg}");
        // The legend names the arm (plotters puts text on its own line).
        assert!(svg.lines().any(|l| l.trim() == "fw"), "{svg}");
    }

    #[test]
    fn nothing_to_plot_without_a_curve() {
        assert!(svg(&[m("fw", Some(1), 40.0)]).unwrap().is_none());
    }
}
