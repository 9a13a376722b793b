//! Tables as the report shows them: display text with three significant figures,
//! numbers aligned right, label columns marked (the HTML keeps them in view while the
//! rest scrolls), and columns that never vary named once instead of repeated.

use std::collections::HashMap;

use anyhow::Result;
use polars::prelude::*;

use super::charts::{f64s, strs};

/// A table as display text: headers, each column's Markdown alignment (numbers to
/// the right), rows, how many leading columns label a row, and what every row has in
/// common when that was taken out.
#[derive(Debug, Default, serde::Serialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub align: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub lead: usize,
    pub same: String,
}

/// How a numeric column is written.
#[derive(Debug, Clone, Copy)]
pub enum Digits {
    /// A count: no decimals.
    Whole,
    /// A measurement: three significant figures ([`sig3`]).
    Three,
}

/// One column of a table: its name in the data frame, its header, and its digits.
pub type Col<'a> = (&'a str, &'a str, Digits);

/// The columns `labels` (headers from their names) then `cols` of `df`, as display
/// text; a column the frame lacks is left out. Booleans are ✓, missing values –.
pub fn display(df: &DataFrame, labels: &[String], cols: &[Col]) -> Result<Table> {
    let label_cols = labels.iter().map(|c| (c.as_str(), c.replace('_', " "), Digits::Whole));
    let all: Vec<(&str, String, Digits)> = label_cols.chain(cols.iter().map(|(c, h, d)| (*c, h.to_string(), *d))).collect();
    let mut t = Table::default();
    let mut data: Vec<Vec<String>> = Vec::new();
    for (i, (name, header, digits)) in all.into_iter().enumerate() {
        let Ok(c) = df.column(name) else { continue };
        t.columns.push(header);
        t.align.push(if c.dtype().is_primitive_numeric() { "---:" } else { "---" });
        t.lead += usize::from(i < labels.len());
        data.push((0..df.height()).map(|r| Ok(cell_text(&c.get(r)?, digits))).collect::<Result<_>>()?);
    }
    t.rows = (0..df.height()).map(|r| data.iter().map(|c| c[r].clone()).collect()).collect();
    Ok(t)
}

/// `table` without the columns that hold one value in every row (of two or more),
/// which it names once instead, in `same` ("frames 1, errors 0").
pub fn varying(table: Table) -> Table {
    let constant = |c: usize| table.rows.len() > 1 && table.rows.iter().all(|r| r[c] == table.rows[0][c]);
    let keep: Vec<usize> = (0..table.columns.len()).filter(|&c| !constant(c)).collect();
    let same: Vec<String> =
        (0..table.columns.len()).filter(|&c| constant(c)).map(|c| format!("{} {}", table.columns[c], table.rows[0][c])).collect();
    let pick = |v: &[String]| keep.iter().map(|&c| v[c].clone()).collect::<Vec<_>>();
    Table {
        columns: pick(&table.columns),
        align: keep.iter().map(|&c| table.align[c]).collect(),
        rows: table.rows.iter().map(|r| pick(r)).collect(),
        lead: keep.iter().filter(|&&c| c < table.lead).count(),
        same: same.join(", "),
    }
}

fn cell_text(v: &AnyValue, digits: Digits) -> String {
    let number = |x: f64| match digits {
        Digits::Whole => format!("{x:.0}"),
        Digits::Three => sig3(x),
    };
    match v {
        AnyValue::Null => "–".into(),
        AnyValue::Float64(x) => number(*x),
        AnyValue::Float32(x) => number(f64::from(*x)),
        AnyValue::Boolean(b) => if *b { "✓" } else { "" }.into(),
        AnyValue::String(s) => s.to_string(),
        other => other.to_string().trim_matches('"').to_string(),
    }
}

/// Three significant figures, as a reader compares them; never fewer digits than the
/// whole part has (1234.5 is "1234", not "1230").
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

/// "TTFT mean (ms)" for `ttft_mean_ms`.
pub fn metric_name(metric: &str) -> String {
    let (base, unit) = match metric.rsplit_once('_') {
        Some((b, "ms")) => (b, "ms"),
        _ => (metric, ""),
    };
    let pretty = base
        .replace("ttft_mean", "TTFT mean")
        .replace("tpot_mean", "TPOT mean")
        .replace("e2e_mean", "E2E mean")
        .replace("output_tok_per_s", "output tokens/s")
        .replace("requests_per_s", "requests/s")
        .replace("goodput_req_per_s", "goodput (req/s)");
    if unit.is_empty() { pretty } else { format!("{pretty} ({unit})") }
}

/// The across-seeds table, one row per curve (the `seeds` frame has one per curve and
/// metric): for each of `metrics`, the median across seeds with its 95% interval in
/// brackets.
pub fn across_seeds(seeds: &DataFrame, group: &[String], metrics: &[&str]) -> Result<Table> {
    let labels: Vec<Vec<String>> = group.iter().map(|c| strs(seeds, c)).collect::<Result<_>>()?;
    let (metric, n) = (strs(seeds, "metric")?, strs(seeds, "seeds")?);
    let (median, low, high) = (f64s(seeds, "median")?, f64s(seeds, "ci_low")?, f64s(seeds, "ci_high")?);
    let s = |v: Option<f64>| v.map(sig3).unwrap_or_else(|| "–".into());
    let mut t = Table { lead: group.len(), ..Table::default() };
    t.columns = group.iter().map(|c| c.replace('_', " ")).chain(["seeds".to_string()]).collect();
    t.columns.extend(metrics.iter().map(|m| metric_name(m)));
    t.align = group.iter().map(|c| if seeds.column(c).is_ok_and(|c| c.dtype().is_primitive_numeric()) { "---:" } else { "---" }).collect();
    t.align.extend(std::iter::repeat_n("---:", 1 + metrics.len()));
    let mut row_of: HashMap<Vec<String>, usize> = HashMap::new();
    for r in 0..seeds.height() {
        let Some(k) = metrics.iter().position(|m| *m == metric[r]) else { continue };
        let key: Vec<String> = labels.iter().map(|l| l[r].clone()).collect();
        let i = *row_of.entry(key.clone()).or_insert_with(|| {
            t.rows.push(key.into_iter().chain([n[r].clone()]).chain(std::iter::repeat_n("–".to_string(), metrics.len())).collect());
            t.rows.len() - 1
        });
        if median[r].is_some() {
            t.rows[i][group.len() + 1 + k] = format!("{} [{}–{}]", s(median[r]), s(low[r]), s(high[r]));
        }
    }
    Ok(varying(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_at_three_significant_figures() {
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(1234.5), "1234");
        assert_eq!(sig3(66.44), "66.4");
        assert_eq!(sig3(473.92), "474");
        assert_eq!(sig3(3.0574), "3.06");
    }

    #[test]
    fn constant_columns_are_named_once_and_labels_stay_marked() {
        let df = df!("model" => ["a", "a"], "batch_size" => [1u32, 2], "errors" => [0u32, 0], "e2e" => [66.44, 1234.5]).unwrap();
        let t = varying(
            display(&df, &["model".into(), "batch_size".into()], &[("errors", "errors", Digits::Whole), ("e2e", "E2E", Digits::Three)])
                .unwrap(),
        );
        assert_eq!(t.columns, ["batch size", "E2E"]);
        assert_eq!(t.lead, 1, "model is constant, batch size still labels the row");
        assert_eq!(t.same, "model a, errors 0");
        assert_eq!(t.rows, [["1", "66.4"], ["2", "1234"]]);
        assert_eq!(t.align, ["---:", "---:"]);
    }

    #[test]
    fn across_seeds_has_one_row_per_curve() {
        let df = df!(
            "model" => ["a", "a", "b"],
            "metric" => ["e2e_mean_ms", "ttft_mean_ms", "e2e_mean_ms"],
            "seeds" => [3u32, 3, 3],
            "median" => [66.44, 20.0, 80.0],
            "ci_low" => [64.9, 19.0, 78.0],
            "ci_high" => [68.9, 23.35, 82.0],
        )
        .unwrap();
        let t = across_seeds(&df, &["model".into()], &["ttft_mean_ms", "e2e_mean_ms"]).unwrap();
        assert_eq!(t.columns, ["model", "TTFT mean (ms)", "E2E mean (ms)"]);
        assert_eq!(t.rows, [["a", "20.0 [19.0–23.4]", "66.4 [64.9–68.9]"], ["b", "–", "80.0 [78.0–82.0]"]]);
        assert_eq!(t.same, "seeds 3");
    }
}
