//! One line per row of issue 23's table, so `make bench` can end with the
//! whole table (hack/bench-summary.py): each bench appends the rows it
//! measured, with their baseline from the same run, to the JSON-lines file
//! named by `BENCH_SUMMARY` (hack/bench.sh sets and empties it). Without
//! the variable nothing is written.

// Each bench uses the part it needs.
#![allow(dead_code)]

use std::io::Write;

/// Whether a row's target asks for at least or at most `target`.
#[derive(Clone, Copy)]
pub enum Goal {
    AtLeast,
    AtMost,
}

/// One measured row: `value` against `baseline` (both in `unit`), judged
/// by `ratio` (value / baseline, or the value itself when the target is
/// absolute) against `target`.
pub struct Row<'a> {
    pub what: &'a str,
    pub value: f64,
    pub baseline: Option<(&'a str, f64)>,
    pub unit: &'a str,
    /// The figure the target is about: a ratio to the baseline, or the
    /// value itself (`relative: false`).
    pub relative: bool,
    pub goal: Goal,
    pub target: f64,
}

impl Row<'_> {
    fn judged(&self) -> Option<f64> {
        match (self.relative, self.baseline) {
            (false, _) => Some(self.value),
            (true, Some((_, b))) if b > 0.0 => Some(self.value / b),
            (true, _) => None,
        }
    }
}

/// Appends `row` to `$BENCH_SUMMARY`; a bench never fails over its summary.
pub fn record(row: &Row) {
    record_with_floor(row, None)
}

/// As [`record`], with a second reference measured in the same run: the
/// least the row's path can cost (`floor`, e.g. a bare relay beside the
/// proxy), shown beside the baseline; the target is still judged against
/// the baseline.
pub fn record_with_floor(row: &Row, floor: Option<(&str, f64)>) {
    let Some(path) = std::env::var_os("BENCH_SUMMARY") else {
        return;
    };
    let judged = row.judged();
    let met = judged.map(|j| match row.goal {
        Goal::AtLeast => j >= row.target,
        Goal::AtMost => j <= row.target,
    });
    let line = serde_json::json!({
        "what": row.what,
        "value": row.value,
        "unit": row.unit,
        "baseline": row.baseline.map(|(name, v)| serde_json::json!({"name": name, "value": v})),
        "floor": floor.map(|(name, v)| serde_json::json!({"name": name, "value": v})),
        "relative": row.relative,
        "judged": judged,
        "goal": match row.goal { Goal::AtLeast => ">=", Goal::AtMost => "<=" },
        "target": row.target,
        "met": met,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!(
            "bench summary: {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}
