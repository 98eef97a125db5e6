//! `wgattn bench --plot REPORT.json -o bench.svg`: a report's prefill throughput (dense
//! GFLOP/s, log axis) against the sequence length (log axis), one line per path and dtype, as
//! a self-contained SVG written by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};

use super::report::Report;
use crate::cli::result_file;

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 520.0;
/// The plotting area: left, top, right, bottom edges.
const AREA: (f64, f64, f64, f64) = (80.0, 70.0, 620.0, 450.0);

/// The order of the dtypes in the legend (f32 solid, the others dashed).
const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// The order of the paths in the legend, and their colors.
const PATHS: [(&str, &str); 3] = [
    ("fused", "#1f77b4"),
    ("staged", "#d62728"),
    ("reference", "#2ca02c"),
];

pub fn plot(report_path: &Path, mask: &str, out: &Path) -> Result<()> {
    check_extension(out)?;
    result_file::check_output_dir(out)?;
    let report = Report::load(report_path)?;
    let svg = svg(&report, mask).map_err(|e| e.context(report_path.display().to_string()))?;
    result_file::write_atomically(out, svg.as_bytes())?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn check_extension(out: &Path) -> Result<()> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("svg") => Ok(()),
        Some("png") => bail!(
            "cannot write {}: PNG is not built in; write an SVG (`-o bench.svg`) and convert it \
             (e.g. `rsvg-convert bench.svg -o bench.png`)",
            out.display()
        ),
        _ => bail!(
            "cannot write {}: the figure is SVG, name it *.svg",
            out.display()
        ),
    }
}

/// One line of the figure: (sequence length, GFLOP/s) points, by length.
struct Series {
    path: String,
    dtype: String,
    points: Vec<(f64, f64)>,
}

/// The prefill cases with `mask` that ran, grouped by path and dtype, in legend order.
fn series(report: &Report, mask: &str) -> Vec<Series> {
    // Keyed by (path rank, dtype rank, path, dtype), so the map iterates in legend order.
    type Key = (usize, usize, String, String);
    let mut by_key: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    for case in &report.cases {
        let r = &case.request;
        let Some(f) = case.ran() else { continue };
        if case.group != "prefill" || r.mask != mask || !f.gflops.is_finite() || f.gflops <= 0.0 {
            continue;
        }
        let path_order = PATHS
            .iter()
            .position(|(p, _)| *p == r.path)
            .unwrap_or(PATHS.len());
        let dtype_order = DTYPES
            .iter()
            .position(|d| *d == r.dtype)
            .unwrap_or(DTYPES.len());
        by_key
            .entry((path_order, dtype_order, r.path.clone(), r.dtype.clone()))
            .or_default()
            .push((r.q_len as f64, f.gflops));
    }
    by_key
        .into_iter()
        .map(|((_, _, path, dtype), mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                path,
                dtype,
                points,
            }
        })
        .collect()
}

/// A logarithmic axis from `lo` to `hi` (both > 0) onto pixels `from` to `to`.
struct LogAxis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl LogAxis {
    fn at(&self, v: f64) -> f64 {
        let t = (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        self.from + t * (self.to - self.from)
    }
}

/// `s` with XML's special characters escaped.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A tick label: `0.01`, `2`, `100`.
fn number(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn svg(report: &Report, mask: &str) -> Result<String> {
    let series = series(report, mask);
    if series.is_empty() {
        let mut masks: Vec<&str> = report
            .cases
            .iter()
            .filter(|c| c.group == "prefill" && c.ran().is_some())
            .map(|c| c.request.mask.as_str())
            .collect();
        masks.sort();
        masks.dedup();
        bail!(
            "no prefill case with mask {mask:?} ran (masks of prefill cases that ran: {})",
            if masks.is_empty() {
                "none at all".to_string()
            } else {
                masks.join(", ")
            }
        );
    }
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    // Half a step of room on each side of the lengths; whole decades of throughput.
    let (x_lo, x_hi) = if x_lo == x_hi {
        (x_lo / 2.0, x_hi * 2.0)
    } else {
        let pad = (x_hi / x_lo).powf(0.06);
        (x_lo / pad, x_hi * pad)
    };
    let decade_lo = y_lo.log10().floor() as i32;
    let decade_hi = (y_hi.log10().ceil() as i32).max(decade_lo + 1);
    let (left, top, right, bottom) = AREA;
    let x = LogAxis {
        lo: x_lo,
        hi: x_hi,
        from: left,
        to: right,
    };
    let y = LogAxis {
        lo: 10f64.powi(decade_lo),
        hi: 10f64.powi(decade_hi),
        from: bottom,
        to: top,
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">
<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>
<text x="{}" y="50" text-anchor="middle" fill="#444">{}</text>"##,
        WIDTH / 2.0,
        xml(&format!(
            "wgattn {} prefill throughput, mask {mask} (suite {})",
            report.wgattn_version, report.suite
        )),
        WIDTH / 2.0,
        xml(&format!(
            "{}, driver {} {}",
            report.adapter_line(),
            report.adapter.driver,
            report.adapter.driver_info
        )),
    );

    // Grid lines and ticks: one per length, one per decade (and 2, 5 within a single decade).
    let mut lengths: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    lengths.sort_by(f64::total_cmp);
    lengths.dedup();
    for &l in &lengths {
        let px = x.at(l);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#ddd"/>
<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 18.0,
            number(l)
        );
    }
    let single_decade = decade_hi - decade_lo == 1;
    for k in decade_lo..=decade_hi {
        let steps: &[f64] = if single_decade && k < decade_hi {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        for &m in steps {
            let v = m * 10f64.powi(k);
            let py = y.at(v);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#ddd"/>
<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left - 6.0,
                py + 4.0,
                number(v)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">sequence length L (Lq = Lt, log scale)</text>
<text x="22" y="{}" text-anchor="middle" transform="rotate(-90 22 {})">dense GFLOP/s (log scale)</text>"##,
        right - left,
        bottom - top,
        (left + right) / 2.0,
        bottom + 42.0,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
    );

    // The series, then the legend.
    for (i, line) in series.iter().enumerate() {
        let (color, dash) = style(line);
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(l, g)| format!("{:.1},{:.1}", x.at(l), y.at(g)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="series" data-path="{}" data-dtype="{}" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            xml(&line.path),
            xml(&line.dtype),
            pts.join(" ")
        );
        for &(l, g) in &line.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{} {} L={}: {:.3} GFLOP/s</title></circle>"#,
                x.at(l),
                y.at(g),
                xml(&line.path),
                xml(&line.dtype),
                number(l),
                g
            );
        }
        let ly = top + 10.0 + 22.0 * i as f64;
        let lx = right + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>
<text x="{}" y="{}">{} {}</text>"#,
            lx + 30.0,
            lx + 38.0,
            ly + 4.0,
            xml(&line.path),
            xml(&line.dtype)
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// A path's color, and a dash pattern per dtype (f32 solid).
fn style(line: &Series) -> (&'static str, &'static str) {
    let color = PATHS
        .iter()
        .find(|(p, _)| *p == line.path)
        .map_or("#7f7f7f", |(_, c)| c);
    let dash = match line.dtype.as_str() {
        "f32" => "",
        "f16" => r#" stroke-dasharray="7 4""#,
        _ => r#" stroke-dasharray="2 3""#,
    };
    (color, dash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(number(0.01), "0.01");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(4096.0), "4096");
    }

    #[test]
    fn log_axis_maps_ends_to_ends() {
        let a = LogAxis {
            lo: 1.0,
            hi: 100.0,
            from: 0.0,
            to: 200.0,
        };
        assert_eq!(a.at(1.0), 0.0);
        assert!((a.at(10.0) - 100.0).abs() < 1e-9);
        assert!((a.at(100.0) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn only_svg_is_written() {
        assert!(check_extension(Path::new("a/bench.svg")).is_ok());
        assert!(check_extension(Path::new("bench.SVG")).is_ok());
        let e = check_extension(Path::new("bench.png")).unwrap_err();
        assert!(e.to_string().contains("PNG is not built in"), "{e}");
        assert!(check_extension(Path::new("bench")).is_err());
    }
}
