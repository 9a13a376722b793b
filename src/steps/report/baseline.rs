//! This run against a baseline report: per curve and metric, the change of the
//! across-seeds mean, its interval from both runs' 95% intervals, and a verdict that
//! calls a change only when the whole interval lies outside the noise band.

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
use crate::steps::aggregate::seeds::LATENCY_METRICS;

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "better")]
    Better,
    #[serde(rename = "worse")]
    Worse,
    #[serde(rename = "within noise")]
    WithinNoise,
}

/// A mean with its 95% interval.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// The change from `before` to `now` in percent, with its interval, and the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub pct: f64,
    pub low_pct: f64,
    pub high_pct: f64,
    pub verdict: Verdict,
}

/// How `now` compares with `before`: the interval of the ratio runs from the lowest
/// now over the highest before to the highest now over the lowest before. None when
/// the baseline is not positive (no ratio to speak of).
pub fn change(before: Estimate, now: Estimate, lower_is_better: bool, noise_pct: f64) -> Option<Change> {
    if before.mean <= 0.0 || before.low <= 0.0 {
        return None;
    }
    let pct = (now.mean / before.mean - 1.0) * 100.0;
    let (low_pct, high_pct) = ((now.low / before.high - 1.0) * 100.0, (now.high / before.low - 1.0) * 100.0);
    let verdict = if low_pct > noise_pct || high_pct < -noise_pct {
        if (pct < 0.0) == lower_is_better { Verdict::Better } else { Verdict::Worse }
    } else {
        Verdict::WithinNoise
    };
    Some(Change { pct, low_pct, high_pct, verdict })
}

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
    let choices: Vec<&str> = ["worse"].into_iter().chain(LATENCY_METRICS).chain(THROUGHPUT_METRICS).collect();
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

/// The file the comparison is kept in, in the report folder.
pub const FILE: &str = "comparison.json";

/// This run's across-seeds means (`seeds`) against the baseline report in `dir`.
pub fn compare(seeds: &DataFrame, dir: &Path, group: &[String], noise_pct: f64) -> Result<Comparison> {
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
    // Another experiment's report, or one whose curves all changed name: the axes
    // match but no curve does, so nothing was compared and a gate must not pass.
    let note = rows.is_empty().then(|| "no curve of this run has a counterpart in the baseline; nothing to compare".to_string());
    Ok(Comparison { dir: dir.display().to_string(), note, noise: noise_pct, rows, not_compared })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mean: f64, half_width: f64) -> Estimate {
        Estimate { mean, low: mean - half_width, high: mean + half_width }
    }

    #[test]
    fn a_change_is_called_only_when_its_whole_interval_leaves_the_noise_band() {
        // Latency 100 → 80 ms, tight intervals: 20% faster, clearly better.
        let c = change(est(100.0, 2.0), est(80.0, 2.0), true, 2.0).unwrap();
        assert_eq!(c.verdict, Verdict::Better);
        assert!((c.pct + 20.0).abs() < 1e-9);
        assert!(c.low_pct < c.pct && c.pct < c.high_pct, "{c:?}");
        // The same numbers for throughput are a loss.
        assert_eq!(change(est(100.0, 2.0), est(80.0, 2.0), false, 2.0).unwrap().verdict, Verdict::Worse);
        // 3% slower with intervals that overlap: within noise, though the mean moved.
        assert_eq!(change(est(100.0, 4.0), est(103.0, 4.0), true, 2.0).unwrap().verdict, Verdict::WithinNoise);
        // A real 10% slowdown inside a 15% noise band is not called either.
        assert_eq!(change(est(100.0, 1.0), est(110.0, 1.0), true, 15.0).unwrap().verdict, Verdict::WithinNoise);
        assert!(change(est(0.0, 0.0), est(1.0, 0.1), true, 2.0).is_none(), "no ratio to a zero baseline");
    }

    #[test]
    fn identical_runs_are_always_within_noise() {
        for (mean, hw) in [(1.0, 0.0), (50.0, 5.0), (1e6, 1e3)] {
            for lower in [true, false] {
                assert_eq!(change(est(mean, hw), est(mean, hw), lower, 0.0).unwrap().verdict, Verdict::WithinNoise);
            }
        }
    }
}
