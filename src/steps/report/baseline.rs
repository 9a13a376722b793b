//! This run against a baseline report: per curve and metric, the change of the
//! across-seeds mean, its interval from both runs' 95% intervals, and a verdict that
//! calls a change only when the whole interval lies outside the noise band (the test
//! is [`crate::stats::compare`]'s).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::charts::{f64s, strs};
use super::labels_of;
use super::table::{metric_name, sig3};
use crate::error::WithHint;
use crate::export;
use crate::stats::compare::{Estimate, Verdict, change};
use crate::steps::aggregate::seeds::LATENCY_METRICS;

/// This run against a baseline: the report's section, and `comparison.json` beside
/// the report, which `--fail-on` reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub dir: String,
    /// Why nothing could be compared, when nothing could.
    pub note: Option<String>,
    pub noise: f64,
    pub rows: Vec<Row>,
    /// This run's curves and metrics with no counterpart in the baseline
    /// (`curve: metric`): shown as not compared, and never a failure by themselves.
    #[serde(default)]
    pub not_compared: Vec<String>,
}

/// One curve and metric, as shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub curve: String,
    /// The metric's column in `seeds` (`e2e_mean_ms`), and as the report names it.
    pub metric_key: String,
    pub metric: String,
    pub before: String,
    pub after: String,
    pub change: String,
    pub interval: String,
    pub verdict: Verdict,
}

/// Whether `what` may be a `fail-on` value: `worse` (any metric), or a metric of the
/// `seeds` table; otherwise the choices, the closest first.
pub fn fail_on_value(what: &str) -> Result<(), String> {
    use crate::steps::aggregate::seeds::THROUGHPUT_METRICS;
    let choices: Vec<&str> = ["worse", "quality"].into_iter().chain(LATENCY_METRICS).chain(THROUGHPUT_METRICS).collect();
    if choices.contains(&what) {
        return Ok(());
    }
    Err(match crate::config::closest(what, choices.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (one of: {})", choices.join(", ")),
        None => format!("one of: {}", choices.join(", ")),
    })
}

/// The rows that fail a `fail-on` gate: worse than the baseline, on a watched metric.
pub fn regressions<'a>(c: &'a Comparison, fail_on: &[String]) -> Vec<&'a Row> {
    let any = fail_on.iter().any(|f| f == "worse");
    c.rows.iter().filter(|r| r.verdict == Verdict::Worse && (any || fail_on.contains(&r.metric_key))).collect()
}

/// Each curve's quality scores (mean and interval per method) against the baseline's
/// `quality` table: rows whose `metric_key` is `quality` (what `--fail-on quality`
/// watches). Scores are shares, so they are compared by their difference in points, not
/// as a ratio (which means little near 0): the interval runs from the lowest now less
/// the highest before to the highest now less the lowest before, and a change is worse
/// or better only when all of it lies beyond `noise-pct` points. A baseline without
/// quality figures lists them as not compared.
fn compare_quality(
    q: &DataFrame,
    dir: &Path,
    group: &[String],
    noise_pct: f64,
    rows: &mut Vec<Row>,
    not_compared: &mut Vec<String>,
) -> Result<()> {
    let key = |df: &DataFrame| -> Result<Vec<String>> {
        let mut cols: Vec<Vec<String>> = group.iter().map(|c| strs(df, c)).collect::<Result<_>>()?;
        cols.push(strs(df, "method")?);
        cols.push(strs(df, "against")?);
        Ok((0..df.height()).map(|r| cols.iter().map(|c| c[r].as_str()).collect::<Vec<_>>().join("\u{1f}")).collect())
    };
    let estimates = |df: &DataFrame| -> Result<Vec<Option<Estimate>>> {
        let (m, lo, hi) = (f64s(df, "mean")?, f64s(df, "mean_lo")?, f64s(df, "mean_hi")?);
        Ok((0..df.height()).map(|r| Some(Estimate { mean: m[r]?, low: lo[r]?, high: hi[r]? })).collect())
    };
    let path = dir.join("quality.parquet");
    let before: HashMap<String, Option<Estimate>> = match path.exists() {
        true => {
            let base = export::read_parquet(&path).with_context(|| format!("reading the baseline {}", path.display()))?;
            let cols: Vec<String> = base.get_column_names().iter().map(|s| s.to_string()).collect();
            match group.iter().all(|c| cols.contains(c)) {
                true => key(&base)?.into_iter().zip(estimates(&base)?).collect(),
                false => HashMap::new(),
            }
        }
        false => HashMap::new(),
    };
    let (keys, now, label) = (key(q)?, estimates(q)?, labels_of(q, group)?);
    let (method, against) = (strs(q, "method")?, strs(q, "against")?);
    for r in 0..q.height() {
        let name = format!("quality: {} against {}", method[r], against[r]);
        let Some(m) = now[r] else {
            // A score the baseline had and this run could not give (every turn
            // unscored) is not a pass: it is listed, as a missing counterpart is.
            if before.get(&keys[r]).copied().flatten().is_some() {
                not_compared.push(format!("{}: {name} (no score in this run)", label[r]));
            }
            continue;
        };
        let Some(b) = before.get(&keys[r]).copied().flatten() else {
            not_compared.push(format!("{}: {name}", label[r]));
            continue;
        };
        let (diff, low, high, band) = (m.mean - b.mean, m.low - b.high, m.high - b.low, noise_pct / 100.0);
        let verdict = if high < -band {
            Verdict::Worse
        } else if low > band {
            Verdict::Better
        } else {
            Verdict::WithinNoise
        };
        rows.push(Row {
            curve: label[r].clone(),
            metric_key: "quality".into(),
            metric: name,
            before: sig3(b.mean),
            after: sig3(m.mean),
            change: format!("{:+.1} pts", diff * 100.0),
            interval: format!("{:+.1} … {:+.1} pts", low * 100.0, high * 100.0),
            verdict,
        });
    }
    Ok(())
}

/// The file the comparison is kept in, in the report folder.
pub const FILE: &str = "comparison.json";

/// This run's across-seeds means (`seeds`), and its quality scores (`quality`, with
/// `[quality]`), against the baseline report in `dir`.
pub fn compare(seeds: &DataFrame, quality: Option<&DataFrame>, dir: &Path, group: &[String], noise_pct: f64) -> Result<Comparison> {
    let path = dir.join("seeds.parquet");
    let base = export::read_parquet(&path)
        .with_context(|| format!("reading the baseline {}", path.display()))
        .hint("--baseline takes an earlier report folder (one with seeds.parquet)")?;
    let base_cols: Vec<String> = base.get_column_names().iter().map(|s| s.to_string()).collect();
    if !group.iter().all(|c| base_cols.contains(c)) {
        return Ok(Comparison {
            dir: dir.display().to_string(),
            note: Some("the baseline's axes differ from this experiment's; nothing to compare".into()),
            noise: noise_pct,
            rows: Vec::new(),
            not_compared: Vec::new(),
        });
    }
    let key = |df: &DataFrame| -> Result<Vec<String>> {
        let mut cols: Vec<Vec<String>> = group.iter().map(|c| strs(df, c)).collect::<Result<_>>()?;
        cols.push(strs(df, "metric")?);
        Ok((0..df.height()).map(|r| cols.iter().map(|c| c[r].as_str()).collect::<Vec<_>>().join("\u{1f}")).collect())
    };
    let estimates = |df: &DataFrame| -> Result<Vec<Option<Estimate>>> {
        let (m, lo, hi) = (f64s(df, "mean")?, f64s(df, "ci_low")?, f64s(df, "ci_high")?);
        Ok((0..df.height()).map(|r| Some(Estimate { mean: m[r]?, low: lo[r]?, high: hi[r]? })).collect())
    };
    let before: HashMap<String, Option<Estimate>> = key(&base)?.into_iter().zip(estimates(&base)?).collect();
    let (keys, now, label, metric) = (key(seeds)?, estimates(seeds)?, labels_of(seeds, group)?, strs(seeds, "metric")?);
    let (mut rows, mut not_compared) = (Vec::new(), Vec::new());
    for r in 0..seeds.height() {
        let Some(m) = now[r] else { continue };
        let compared = before
            .get(&keys[r])
            .copied()
            .flatten()
            .and_then(|b| Some((b, change(b, m, LATENCY_METRICS.contains(&metric[r].as_str()), noise_pct)?)));
        let Some((b, c)) = compared else {
            not_compared.push(format!("{}: {}", label[r], metric_name(&metric[r])));
            continue;
        };
        rows.push(Row {
            curve: label[r].clone(),
            metric_key: metric[r].clone(),
            metric: metric_name(&metric[r]),
            before: sig3(b.mean),
            after: sig3(m.mean),
            change: format!("{:+.1}%", c.pct),
            interval: format!("{:+.1}% … {:+.1}%", c.low_pct, c.high_pct),
            verdict: c.verdict,
        });
    }
    if let Some(q) = quality {
        compare_quality(q, dir, group, noise_pct, &mut rows, &mut not_compared)?;
    }
    // Another experiment's report, or one whose curves all changed name: the axes
    // match but no curve does, so nothing was compared and a gate must not pass.
    let note = rows.is_empty().then(|| "no curve of this run has a counterpart in the baseline; nothing to compare".to_string());
    Ok(Comparison { dir: dir.display().to_string(), note, noise: noise_pct, rows, not_compared })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(mean: f64, lo: f64, hi: f64) -> DataFrame {
        df!("model" => ["m"], "variant" => ["awq"], "method" => ["choice"], "against" => ["reference"], "mean" => [mean], "mean_lo" => [lo], "mean_hi" => [hi])
            .unwrap()
    }

    /// Scores are shares: a baseline of 0 is compared (a ratio would have nothing to
    /// divide by and let the score escape the gate), by the difference in points.
    #[test]
    fn quality_is_compared_in_points_even_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let group = ["model".to_string(), "variant".to_string()];
        let compare = |before: DataFrame, now: DataFrame| {
            export::write_table(&mut before.clone(), dir.path(), "quality").unwrap();
            let (mut rows, mut not_compared) = (Vec::new(), Vec::new());
            compare_quality(&now, dir.path(), &group, 5.0, &mut rows, &mut not_compared).unwrap();
            assert!(not_compared.is_empty(), "{not_compared:?}");
            rows.pop().unwrap()
        };
        let up = compare(scores(0.0, 0.0, 0.0), scores(0.5, 0.4, 0.6));
        assert_eq!((up.verdict, up.change.as_str(), up.interval.as_str()), (Verdict::Better, "+50.0 pts", "+40.0 … +60.0 pts"));
        let down = compare(scores(0.9, 0.85, 0.95), scores(0.0, 0.0, 0.0));
        assert_eq!(down.verdict, Verdict::Worse);
        let same = compare(scores(0.9, 0.85, 0.95), scores(0.92, 0.87, 0.97));
        assert_eq!(same.verdict, Verdict::WithinNoise);
    }

    /// A method the baseline scored and this run left without a score (a judge whose
    /// every reply was unscored) is listed as not compared, never silently passed.
    #[test]
    fn a_score_missing_now_is_not_compared() {
        let dir = tempfile::tempdir().unwrap();
        let group = ["model".to_string(), "variant".to_string()];
        export::write_table(&mut scores(0.9, 0.85, 0.95), dir.path(), "quality").unwrap();
        let none: Option<f64> = None;
        let now = df!("model" => ["m"], "variant" => ["awq"], "method" => ["choice"], "against" => ["reference"],
            "mean" => [none], "mean_lo" => [none], "mean_hi" => [none])
        .unwrap();
        let (mut rows, mut not_compared) = (Vec::new(), Vec::new());
        compare_quality(&now, dir.path(), &group, 5.0, &mut rows, &mut not_compared).unwrap();
        assert!(rows.is_empty(), "{}", rows.len());
        assert_eq!(not_compared.len(), 1, "{not_compared:?}");
        assert!(not_compared[0].contains("choice against reference (no score in this run)"), "{not_compared:?}");
    }
}
