//! Statistics across seeds, and each curve's operating points.
//!
//! `seeds`: one row per curve (a cell less its seed) and metric. A latency metric's
//! per-seed value is that seed's mean (`e2e_mean_ms`, …); a throughput metric's is the
//! seed's own figure. Across seeds: `median`, `min`, `max`, `mean` and `std` (sample
//! standard deviation) of the per-seed values, and `ci_low`/`ci_high`, a 95% percentile
//! bootstrap interval of the pooled value ([`crate::stats::bootstrap`]). For latency the
//! resampled unit is the conversation, drawn from all seeds' conversations together:
//! turns of one conversation are not independent (each resends the history), and with
//! batch size 1 each seed holds a single conversation. Throughput exists once per seed,
//! so the seeds are resampled; with three seeds that interval lies close to min–max.
//! The resampling is seeded: the same rows give the same interval.
//!
//! `points`: per curve, the medians across seeds of throughput, latency and SLO
//! attainment (and the latencies' min and max across seeds). Along the batch-size (or request-rate) axis, `pareto` marks the points no
//! other point of the same model, variant and frame count beats on both output
//! throughput and end-to-end p50 latency, and `best` the highest throughput whose
//! attainment meets the SLO.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use polars::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;

use crate::config::Slo;
use crate::stats::{self, bootstrap, median, pareto};
/// Latency metrics, bootstrapped over conversations.
pub const LATENCY_METRICS: [&str; 3] = ["ttft_mean_ms", "tpot_mean_ms", "e2e_mean_ms"];
/// Throughput metrics, bootstrapped over seeds.
pub const THROUGHPUT_METRICS: [&str; 3] = ["output_tok_per_s", "requests_per_s", "goodput_req_per_s"];
/// Axes along which a curve's operating points lie.
const LOAD_AXES: [&str; 2] = ["batch_size", "request_rate"];

/// `(seeds, points)` from the summary (with `cell_index`) and per-conversation sums.
/// `quality`: each curve's lowest `[quality]` score, by its axes' values (see
/// `aggregate::quality::write`), which `slo.quality` judges.
pub fn tables(
    summary: &DataFrame,
    conversations: &DataFrame,
    cell: &[String],
    slo: &Slo,
    quality: &BTreeMap<String, f64>,
) -> Result<(DataFrame, DataFrame)> {
    let group: Vec<String> = cell.iter().filter(|c| *c != "seed").cloned().collect();
    let curves = Curves::of(summary, &group)?;
    let across = across_seeds(summary, conversations, &curves, &group)?;
    let points = operating_points(summary, &curves, group, slo, quality)?;
    Ok((across, points))
}

/// The summary's rows grouped by curve (every cell column but the seed), sorted.
struct Curves {
    /// One row per curve: its cell columns (and the row lists, unused after).
    frame: DataFrame,
    /// Each curve's rows of the summary, one per seed.
    rows_of: Vec<Vec<usize>>,
}

impl Curves {
    fn of(summary: &DataFrame, group: &[String]) -> Result<Curves> {
        let frame = summary
            .clone()
            .lazy()
            .with_row_index("row", None)
            .group_by(group.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            .agg([col("row")])
            .sort(group.to_vec(), SortMultipleOptions::default())
            .collect()?;
        let list = frame.column("row")?.list()?;
        let rows_of = (0..frame.height())
            .map(|g| {
                Ok(list
                    .get_as_series(g)
                    .map(|s| s.idx().map(|c| c.iter().flatten().map(|i| i as usize).collect()))
                    .transpose()?
                    .unwrap_or_default())
            })
            .collect::<Result<_>>()?;
        Ok(Curves { frame, rows_of })
    }

    fn len(&self) -> usize {
        self.frame.height()
    }
}

/// A summary column as floats, one per row.
fn values(summary: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(summary.column(name)?.cast(&DataType::Float64)?.f64()?.iter().collect())
}

/// Each cell's conversations (by `cell_index`) as (sum of a metric's values, count).
type CellSums = HashMap<u32, Vec<(f64, u32)>>;

/// Per latency metric: each cell's conversations' sums.
fn conversation_sums(conversations: &DataFrame) -> Result<Vec<CellSums>> {
    let conv_cell: Vec<u32> = conversations.column("cell_index")?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let mut sums = Vec::new();
    for m in LATENCY_METRICS {
        let base = m.trim_end_matches("_mean_ms");
        let s: Vec<f64> = conversations.column(&format!("{base}_ms_sum"))?.f64()?.iter().map(|v| v.unwrap_or(0.0)).collect();
        let n: Vec<u32> =
            conversations.column(&format!("{base}_ms_n"))?.cast(&DataType::UInt32)?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
        let mut by_cell = CellSums::new();
        for i in 0..conv_cell.len() {
            if n[i] > 0 {
                by_cell.entry(conv_cell[i]).or_default().push((s[i], n[i]));
            }
        }
        sums.push(by_cell);
    }
    Ok(sums)
}

/// `seeds`: per curve and metric, the statistics across seeds and the interval.
fn across_seeds(summary: &DataFrame, conversations: &DataFrame, curves: &Curves, group: &[String]) -> Result<DataFrame> {
    let cell_index: Vec<u32> = summary.column("cell_index")?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let sums = conversation_sums(conversations)?;
    let metrics: Vec<&str> = LATENCY_METRICS.iter().chain(THROUGHPUT_METRICS.iter()).copied().collect();
    let values: Vec<Vec<Option<f64>>> = metrics.iter().map(|m| values(summary, m)).collect::<Result<_>>()?;
    // (curve, metric) → [median, min, max, mean, std, ci_low, ci_high] and seed count.
    let jobs: Vec<(usize, usize)> = (0..curves.len()).flat_map(|g| (0..metrics.len()).map(move |k| (g, k))).collect();
    let stats: Vec<(u32, [Option<f64>; 7])> = jobs
        .par_iter()
        .map(|&(g, k)| {
            let rows = &curves.rows_of[g];
            let per_seed: Vec<f64> = rows.iter().filter_map(|&r| values[k][r]).collect();
            let mut rng = ChaCha8Rng::seed_from_u64((g * metrics.len() + k) as u64);
            let ci = if k < LATENCY_METRICS.len() {
                let pool: Vec<(f64, u32)> = rows.iter().filter_map(|&r| sums[k].get(&cell_index[r])).flatten().copied().collect();
                bootstrap::pooled_mean(&pool, &mut rng)
            } else {
                bootstrap::mean(&per_seed, &mut rng)
            };
            (per_seed.len() as u32, describe(&per_seed, ci))
        })
        .collect();
    let take: Vec<IdxSize> = jobs.iter().map(|&(g, _)| g as IdxSize).collect();
    let across = curves.frame.select(group.to_vec())?.take(&IdxCa::from_vec("idx".into(), take))?;
    let mut cols = vec![
        Column::new("metric".into(), jobs.iter().map(|&(_, k)| metrics[k]).collect::<Vec<&str>>()),
        Column::new("seeds".into(), stats.iter().map(|s| s.0).collect::<Vec<u32>>()),
    ];
    for (j, name) in ["median", "min", "max", "mean", "std", "ci_low", "ci_high"].iter().enumerate() {
        cols.push(Column::new((*name).into(), stats.iter().map(|s| s.1[j]).collect::<Vec<Option<f64>>>()));
    }
    cols.push(Column::new(
        "ci_resampled".into(),
        jobs.iter().map(|&(_, k)| if k < LATENCY_METRICS.len() { "conversations" } else { "seeds" }).collect::<Vec<&str>>(),
    ));
    Ok(across.hstack(&cols)?)
}

/// `points`: per curve, the medians across seeds, the latencies' spread, and which
/// points meet the SLO, are on the Pareto front, and are the best.
fn operating_points(
    summary: &DataFrame,
    curves: &Curves,
    group: Vec<String>,
    slo: &Slo,
    quality: &BTreeMap<String, f64>,
) -> Result<DataFrame> {
    let point_metrics = ["output_tok_per_s", "requests_per_s", "ttft_p50_ms", "e2e_p50_ms", "slo_met_pct"];
    let point_values: Vec<Vec<Option<f64>>> = point_metrics.iter().map(|m| values(summary, m)).collect::<Result<_>>()?;
    let medians: Vec<Vec<Option<f64>>> = point_values
        .iter()
        .map(|v| curves.rows_of.iter().map(|rows| median(&rows.iter().filter_map(|&r| v[r]).collect::<Vec<f64>>())).collect())
        .collect();
    let (tput, lat, met) = (&medians[0], &medians[3], &medians[4]);
    let mut meets: Vec<bool> = met.iter().map(|m| m.is_some_and(|m| m >= slo.attainment_pct)).collect();
    // A minimum quality: a curve meets the SLO only with every score at least that
    // (a curve without scores does not).
    if let Some(min) = slo.quality {
        let texts: Vec<Vec<String>> = group
            .iter()
            .map(|c| {
                Ok(curves
                    .frame
                    .column(c.as_str())?
                    .cast(&DataType::String)?
                    .str()?
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect())
            })
            .collect::<Result<_>>()?;
        for (g, m) in meets.iter_mut().enumerate() {
            let key = texts.iter().map(|t| t[g].as_str()).collect::<Vec<_>>().join("\u{1f}");
            *m = *m && quality.get(&key).is_some_and(|q| *q >= min);
        }
    }
    let (pareto, best) = fronts(curves, &group, tput, lat, &meets);
    let mut points = curves.frame.select(group)?;
    let mut cols = vec![Column::new("seeds".into(), curves.rows_of.iter().map(|r| r.len() as u32).collect::<Vec<u32>>())];
    for (name, v) in point_metrics.iter().zip(&medians) {
        cols.push(Column::new((*name).into(), v.clone()));
    }
    // The spread across seeds of the two latencies that the sweep charts draw.
    for k in [2, 3] {
        for (suffix, pick) in [("min", f64::min as fn(f64, f64) -> f64), ("max", f64::max)] {
            let v: Vec<Option<f64>> =
                curves.rows_of.iter().map(|rows| rows.iter().filter_map(|&r| point_values[k][r]).reduce(pick)).collect();
            cols.push(Column::new(format!("{}_{suffix}", point_metrics[k]).into(), v));
        }
    }
    cols.push(Column::new("meets_slo".into(), meets));
    cols.push(Column::new("pareto".into(), pareto));
    cols.push(Column::new("best".into(), best));
    points = points.hstack(&cols)?;
    Ok(points)
}

/// Per curve point: whether it is on its front (model, variant, frames…: every group
/// column but the load axes), and whether it is that front's best that meets the SLO.
fn fronts(curves: &Curves, group: &[String], tput: &[Option<f64>], lat: &[Option<f64>], meets: &[bool]) -> (Vec<bool>, Vec<bool>) {
    let front_cols: Vec<&String> = group.iter().filter(|c| !LOAD_AXES.contains(&c.as_str())).collect();
    let front_key: Vec<String> = (0..curves.len())
        .map(|g| {
            front_cols
                .iter()
                .map(|c| curves.frame.column(c.as_str()).and_then(|s| s.get(g)).map(|v| v.to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect();
    let mut pareto = vec![false; curves.len()];
    let mut best = vec![false; curves.len()];
    let mut by_front: HashMap<&str, Vec<usize>> = HashMap::new();
    for (g, k) in front_key.iter().enumerate() {
        by_front.entry(k.as_str()).or_default().push(g);
    }
    for members in by_front.values() {
        let points: Vec<Option<(f64, f64)>> = members.iter().map(|&g| Some((tput[g]?, lat[g]?))).collect();
        let curve_meets: Vec<bool> = members.iter().map(|&g| meets[g]).collect();
        let (front, top) = pareto::front_and_best(&points, &curve_meets);
        for (k, &g) in members.iter().enumerate() {
            pareto[g] = front[k];
        }
        if let Some(k) = top {
            best[members[k]] = true;
        }
    }
    (pareto, best)
}

/// median, min, max, mean, std of the per-seed values, then the interval.
fn describe(v: &[f64], ci: Option<(f64, f64)>) -> [Option<f64>; 7] {
    if v.is_empty() {
        return [None; 7];
    }
    let min_max = (v.iter().copied().reduce(f64::min), v.iter().copied().reduce(f64::max));
    [median(v), min_max.0, min_max.1, stats::mean(v), stats::sample_std(v), ci.map(|c| c.0), ci.map(|c| c.1)]
}
