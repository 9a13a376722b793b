//! The report's "Server" section: how cells were kept from each other's caches, and
//! the server's own numbers per cell beside the client's (the aggregate's `server`).

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value as JValue;
use polars::prelude::*;

use super::charts::{f64s, strs};
use super::table::{Digits, display, varying};

/// What the section shows: sentences on isolation and scraping, and the table.
pub fn section(server: &DataFrame, cell: &[String]) -> Result<JValue> {
    let isolation = strs(server, "isolation")?;
    let notes = strs(server, "isolation_note")?;
    let complete: Vec<bool> = server.column("isolation_complete")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &isolation {
        *done.entry(if d.is_empty() { "unknown" } else { d }).or_default() += 1;
    }
    let n = server.height();
    let describe = |(how, k): (&&str, &usize)| -> String {
        let what = match *how {
            "reset" => "emptied the server's caches before",
            "salt" => "salted the prefix cache of",
            "restart" => "restarted the server before",
            "none" => "left the caches as earlier cells left them for",
            _ => "recorded nothing for",
        };
        format!("{what} {k} of {n} cell(s)")
    };
    let mut summary: Vec<String> = vec![format!("{}.", done.iter().map(describe).collect::<Vec<_>>().join("; "))];
    let incomplete = complete.iter().filter(|c| !**c).count();
    if incomplete > 0 {
        summary.push(format!(
            "{incomplete} cell(s) may have read another cell's cached prompts, so their first turns may look faster than a fresh server's."
        ));
    }
    let mut seen_notes: Vec<String> = notes.into_iter().filter(|s| !s.is_empty()).collect();
    seen_notes.sort_unstable();
    seen_notes.dedup();

    let available: Vec<bool> = server.column("metrics")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
    let reasons = strs(server, "metrics_reason")?;
    let missing: Vec<&str> = (0..n).filter(|&r| !available[r]).map(|r| reasons[r].as_str()).collect();
    let mut metrics_note = None;
    if !missing.is_empty() {
        let mut why = missing.clone();
        why.sort_unstable();
        why.dedup();
        metrics_note = Some(format!("The server's /metrics was not scraped for {} of {n} cell(s): {}.", missing.len(), why.join("; ")));
    }
    // Shares as percentages for reading; the CSV keeps the shares.
    let pct = |c: &str| -> Result<Column> {
        Ok(Column::new(format!("{c}_pct").into(), f64s(server, c)?.iter().map(|v| v.map(|x| x * 100.0)).collect::<Vec<_>>()))
    };
    let mut shown = server.clone();
    for c in ["prefix_cache_hit_rate", "mm_cache_hit_rate", "kv_cache_usage_peak"] {
        shown.with_column(pct(c)?)?;
    }
    use Digits::{Three, Whole};
    let cols = [
        ("isolation", "isolation", Whole),
        ("prefix_cache_hit_rate_pct", "prefix cache hits (%)", Three),
        ("mm_cache_hit_rate_pct", "multimodal cache hits (%)", Three),
        ("kv_cache_usage_peak_pct", "KV cache peak (%)", Three),
        ("running_peak", "running peak", Whole),
        ("waiting_peak", "waiting peak", Whole),
        ("preemptions", "preemptions", Whole),
        ("server_ttft_ms_mean", "server TTFT mean (ms)", Three),
        ("client_ttft_ms_mean", "client TTFT mean (ms)", Three),
        ("client_overhead_ms", "client overhead (ms)", Three),
        ("server_queue_ms_mean", "queue mean (ms)", Three),
    ];
    Ok(minijinja::context! {
        summary => summary,
        notes => seen_notes,
        metrics_note => metrics_note,
        table => super::ser(varying(display(&shown, cell, &cols)?)),
    })
}
