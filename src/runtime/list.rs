//! `list`: every container under the root.

use super::error::Result;
use super::ps::Format;
use super::state::{oci_state, Root};

/// Renders the list as runc does: a table, JSON states, or ids only.
pub fn list(root: &Root, format: Format, quiet: bool) -> Result<String> {
    let mut states = Vec::new();
    for id in root.ids()? {
        // A container deleted while we list is simply not listed.
        if let Ok(c) = root.load(&id) {
            states.push(oci_state(&c, &root.read_meta(&id)));
        }
    }
    if quiet {
        return Ok(states
            .iter()
            .filter_map(|s| s["id"].as_str())
            .map(|id| format!("{id}\n"))
            .collect());
    }
    if format == Format::Json {
        return Ok(format!("{}\n", serde_json::Value::Array(states)));
    }
    let rows: Vec<[String; 6]> = states
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            [
                text("id"),
                s["pid"].as_i64().unwrap_or(0).to_string(),
                text("status"),
                text("bundle"),
                text("created"),
                "root".to_string(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    Ok(out)
}
