//! `wgattn bench --compare A.json B.json`: two reports, case by case, as a Markdown table on
//! stdout. Cases are matched by id; B/A is the ratio of median times (above 1: B is slower).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::record::RequestFields;
use super::report::{CaseRecord, Report};
use super::suite::cell_text;

pub fn compare(a_path: &Path, b_path: &Path) -> Result<()> {
    let a = Report::load(a_path)?;
    let b = Report::load(b_path)?;
    print!(
        "{}",
        table(
            &a,
            &a_path.display().to_string(),
            &b,
            &b_path.display().to_string()
        )
    );
    Ok(())
}

/// One row's cells after the id: A median, B median, B/A, A GFLOP/s, B GFLOP/s, note.
fn row(a: Option<&CaseRecord>, b: Option<&CaseRecord>) -> ([String; 5], String, Option<f64>) {
    let median = |c: Option<&CaseRecord>| match c {
        None => "-".to_string(),
        Some(c) => match c.ran() {
            Some(f) => format!("{:.3}", f.median_ms),
            None => c.status.name().to_string(),
        },
    };
    let gflops = |c: Option<&CaseRecord>| {
        c.and_then(CaseRecord::ran)
            .map_or("-".to_string(), |f| format!("{:.3}", f.gflops))
    };
    let ratio = match (a.and_then(CaseRecord::ran), b.and_then(CaseRecord::ran)) {
        (Some(fa), Some(fb)) if fa.median_ms > 0.0 => Some(fb.median_ms / fa.median_ms),
        _ => None,
    };
    let note = match (a, b) {
        (Some(_), None) => "only in A".to_string(),
        (None, Some(_)) => "only in B".to_string(),
        (Some(a), Some(b)) => {
            let mut notes = Vec::new();
            if a.ran().is_none() && b.ran().is_none() && a.outcome() == b.outcome() {
                notes.push(format!("both {}", a.outcome()));
            } else {
                for (side, c) in [("A", a), ("B", b)] {
                    if c.ran().is_none() {
                        notes.push(format!("{side} {}", c.outcome()));
                    }
                }
            }
            if !same_work(&a.request, &b.request) {
                notes.push("the requests differ".into());
            }
            notes.join("; ")
        }
        (None, None) => String::new(),
    };
    (
        [
            median(a),
            median(b),
            ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
            gflops(a),
            gflops(b),
        ],
        note,
        ratio,
    )
}

/// Whether two requests time the same work (the number of calls may differ).
fn same_work(a: &RequestFields, b: &RequestFields) -> bool {
    let work = |r: &RequestFields| RequestFields {
        iters: 0,
        warmup: 0,
        ..r.clone()
    };
    work(a) == work(b)
}

fn table(a: &Report, a_name: &str, b: &Report, b_name: &str) -> String {
    let in_b: HashMap<&str, &CaseRecord> = b.cases.iter().map(|c| (c.id.as_str(), c)).collect();
    let in_a: HashMap<&str, &CaseRecord> = a.cases.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut out = String::from("## wgattn bench --compare\n\n");
    for (side, name, r) in [("A", a_name, a), ("B", b_name, b)] {
        out.push_str(&format!(
            "- {side}: `{}`: {}, driver {} {}, wgattn {}, suite `{}`, {} cases\n",
            cell_text(name),
            cell_text(&r.adapter_line()),
            cell_text(&r.adapter.driver),
            cell_text(&r.adapter.driver_info),
            r.wgattn_version,
            r.suite,
            r.cases.len()
        ));
    }
    out.push_str(
        "\nB/A is B's median time over A's: above 1, B is slower.\n\n\
         | case | A median ms | B median ms | B/A | A GFLOP/s | B GFLOP/s | note |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut ratios = Vec::new();
    let (mut only_a, mut only_b) = (0, 0);
    let ids = a.cases.iter().map(|c| c.id.as_str()).chain(
        b.cases
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| !in_a.contains_key(id)),
    );
    for id in ids {
        let (ca, cb) = (in_a.get(id).copied(), in_b.get(id).copied());
        only_a += usize::from(cb.is_none());
        only_b += usize::from(ca.is_none());
        let (cells, note, ratio) = row(ca, cb);
        ratios.extend(ratio);
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell_text(id),
            cells.join(" | "),
            cell_text(&note)
        ));
    }
    out.push('\n');
    if ratios.is_empty() {
        out.push_str("No case ran in both reports.");
    } else {
        let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        out.push_str(&format!(
            "{} cases ran in both: B/A geometric mean {geomean:.2}.",
            ratios.len()
        ));
    }
    out.push_str(&format!(" {only_a} only in A, {only_b} only in B.\n"));
    out
}
