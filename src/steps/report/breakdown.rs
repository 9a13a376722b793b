//! The report's "Where the time went" section: from the server's own spans joined to
//! each request (the aggregate's `breakdown` and `breakdown_per_turn`), what each part
//! of a request's time was per cell, the stacked per-turn chart, and one sentence for
//! the glance naming the part that dominates the slowest turns and how it grows.

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value as JValue;
use polars::prelude::*;

use super::charts::{f64s, labels, strs};
use super::table::{Digits, display, sig3, varying};

/// The parts, as the per-turn table names them, and as a sentence says them.
const PARTS: [(&str, &str); 5] = [
    ("queue_ms", "queue time"),
    ("preprocess_ms", "preprocessing"),
    ("prefill_ms", "prefill"),
    ("decode_ms", "decode"),
    ("outside_server_ms", "time outside the server"),
];

/// What the section shows: whether there are spans at all (`none`: the templates say
/// "No spans" once, with the flags to add), which cells lack them, and the per-cell
/// table.
pub fn section(by_cell: &DataFrame, cell: &[String]) -> Result<JValue> {
    let joined = f64s(by_cell, "joined")?;
    let reasons = strs(by_cell, "span_missing")?;
    let n = by_cell.height();
    let without: Vec<usize> = (0..n).filter(|&r| joined[r].unwrap_or(0.0) == 0.0).collect();
    let none = n > 0 && without.len() == n;
    // With no spans at all: whether no server traced, or servers that did sent none
    // (an `otlp-receiver` address taken, a server not told where to send them).
    let mut none_why: Vec<&str> = reasons.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    none_why.sort_unstable();
    none_why.dedup();
    let none_untraced = none_why.iter().all(|w| *w == crate::steps::measure::spans::NOT_TRACED);
    let mut missing = None;
    if !none && !without.is_empty() {
        let mut why: Vec<&str> = without.iter().map(|&r| reasons[r].as_str()).filter(|s| !s.is_empty()).collect();
        why.sort_unstable();
        why.dedup();
        missing = Some(format!("{} of {n} cell(s) have no spans ({}).", without.len(), why.join("; ")));
    }
    use Digits::{Three, Whole};
    let cols = [
        ("requests", "requests", Whole),
        ("joined", "with a span", Whole),
        ("queue_ms", "queue (ms)", Three),
        ("preprocess_ms", "preprocessing (ms)", Three),
        ("prefill_ms", "prefill (ms)", Three),
        ("decode_ms", "decode (ms)", Three),
        ("outside_server_ms", "outside the server (ms)", Three),
        ("server_e2e_ms", "server end-to-end (ms)", Three),
    ];
    Ok(minijinja::context! {
        none => none,
        none_untraced => none_untraced,
        none_why => none_why.join("; "),
        missing => missing,
        table => (!none).then(|| display(by_cell, cell, &cols).map(varying)).transpose()?.map(super::ser),
    })
}

/// The glance's sentence: for the curve whose last turn takes longest in the server,
/// the part that dominates that turn and how it grew from the first, the most time
/// any turn queued, and the median time outside the server. None without spans.
pub fn sentence(per_turn: &DataFrame) -> Result<Option<String>> {
    let names: Vec<String> = per_turn.get_column_names().iter().map(|s| s.to_string()).collect();
    let curve: Vec<&str> = names.iter().take_while(|n| *n != "turn").map(String::as_str).collect();
    let label = labels(per_turn, &curve)?;
    let turn = f64s(per_turn, "turn")?;
    let e2e = f64s(per_turn, "server_e2e_ms")?;
    let parts: Vec<Vec<Option<f64>>> = PARTS.iter().map(|(c, _)| f64s(per_turn, c)).collect::<Result<_>>()?;
    // Curve → its rows, in turn order (the table is sorted).
    let mut rows: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in (0..per_turn.height()).filter(|&r| turn[r].is_some() && e2e[r].is_some()) {
        rows.entry(&label[r]).or_default().push(r);
    }
    // The curve with the slowest turn in the server, and that turn.
    let slowest = rows
        .iter()
        .filter_map(|(name, rs)| {
            let r = *rs.iter().max_by(|a, b| e2e[**a].unwrap_or(0.0).total_cmp(&e2e[**b].unwrap_or(0.0)))?;
            Some((*name, rs, r, e2e[r]?))
        })
        .max_by(|a, b| a.3.total_cmp(&b.3));
    let Some((name, rs, last, _)) = slowest else { return Ok(None) };
    let first = rs[0];
    let part = |p: usize, r: usize| parts[p][r].unwrap_or(0.0);
    let Some(top) = (0..PARTS.len()).max_by(|&a, &b| part(a, last).total_cmp(&part(b, last))) else { return Ok(None) };
    let at = |r: usize| turn[r].unwrap_or(0.0) + 1.0;
    let mut clauses = vec![format!("{} dominates the slowest turn ({} ms at turn {:.0})", PARTS[top].1, short(part(top, last)), at(last))];
    if last != first && part(top, first) > 0.0 {
        let ratio = part(top, last) / part(top, first);
        let change = if ratio >= 1.0 { format!("grows {}×", short(ratio)) } else { format!("falls to {}×", short(ratio)) };
        clauses[0] = format!("{} dominates the slowest turns and {change} from turn {:.0} to {:.0}", PARTS[top].1, at(first), at(last));
    }
    // Only what the spans said: a curve whose spans gave no queue time gets no clause.
    let queued: Vec<f64> = rs.iter().filter_map(|&r| parts[0][r]).collect();
    if queued.len() == rs.len() {
        clauses.push(format!("median queue time stays under {} ms", next_up(queued.iter().copied().fold(0.0, f64::max))));
    }
    let outside: Vec<f64> = rs.iter().filter_map(|&r| parts[4][r]).collect();
    if let Some(m) = crate::stats::median(&outside) {
        clauses.push(format!("{} ms median outside the server", short(m)));
    }
    Ok(Some(format!("Where the time went ({name}, the server's own spans): {}.", clauses.join("; "))))
}

/// Three significant figures without trailing zeros: "38", "6", "0.25".
fn short(x: f64) -> String {
    let text = sig3(x);
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// A round bound just above `x` (1, 2 or 5 times a power of ten): "under 2 ms".
fn next_up(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let base = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * base).find(|b| *b > x).unwrap_or(10.0 * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentence_names_the_dominant_part_and_its_growth() {
        let df = df!(
            "model" => ["m", "m", "m"],
            "variant" => ["base", "base", "base"],
            "turn" => [0u32, 1, 59],
            "seeds" => [1u32, 1, 1],
            "queue_ms" => [0.5, 1.2, 1.5],
            "preprocess_ms" => [3.0, 4.0, 20.0],
            "prefill_ms" => [20.0, 60.0, 760.0],
            "decode_ms" => [100.0, 100.0, 110.0],
            "outside_server_ms" => [6.0, 5.0, 7.0],
            "server_e2e_ms" => [124.0, 166.0, 892.0]
        )
        .unwrap();
        let s = sentence(&df).unwrap().unwrap();
        assert!(s.contains("prefill dominates the slowest turns and grows 38× from turn 1 to 60"), "{s}");
        assert!(s.contains("queue time stays under 2 ms") && s.contains("6 ms median outside the server"), "{s}");
        assert_eq!(next_up(0.3), 0.5);
    }
}
