//! The aggregate step: raw rows of every measure → the tables a report is made of.
//!
//! Percentiles are the crate's one method ([`crate::stats`]: linear interpolation
//! between closest ranks, polars' `QuantileMethod::Linear`), over successful,
//! non-warm-up requests; SLO attainment and goodput are [`crate::stats::slo`]'s.
//! Outputs (Parquet, and CSV for the small ones):
//! * `requests.parquet`: every request row of every cell, for recomputing anything;
//! * `summary`: one row per cell: counts, reached concurrency, throughput, goodput
//!   under the SLO, TTFT / inter-token / TPOT / end-to-end latency (mean, p50, p90, p95,
//!   p99, max) and, where GPUs were sampled, power, energy and temperature;
//! * `errors`: failed requests per cell and error class;
//! * `per_turn`: per curve (cell less seed) and turn, the median across seeds of each
//!   seed's median latency, with min and max (the reference study's picture);
//! * `seeds` and `points`: statistics across seeds and operating points ([`seeds`]);
//! * `telemetry`: GPU samples of every cell on one time axis per cell ([`gpu`]);
//! * `server`: per cell, how it was isolated from other cells' caches and what the
//!   server's own `/metrics` said, its TTFT beside the client's; `server_series`: KV
//!   cache use and queues over time in the cell with the most requests ([`server`]);
//! * `breakdown` and `breakdown_per_turn`: where the time went (queue, preprocessing,
//!   prefill, decode, outside the server), from the server's own spans ([`breakdown`]);
//! * `quality` and `quality_per_turn`: with `[quality]`, each curve's scores per
//!   method, with intervals ([`quality`]); `judge.json`, with a `[quality] judge`,
//!   what the judge cost over every cell;
//! * `runs.json`: which servers ran (command line, version, Slurm job and node) and what
//!   NVML said.

pub mod breakdown;
mod gpu;
mod quality;
pub mod seeds;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;

use crate::config::Slo;
use crate::export;
use crate::records::{self, Meta};
use crate::stats;

/// Bump when the tables would change.
/// 5: `server` and `server_series` tables; `per_turn`'s cached share.
/// 6: `breakdown` and `breakdown_per_turn`, from the server's spans.
pub const VERSION: u32 = 6;

/// Start-up spans of a server that `runs.json` keeps, the longest first.
const STARTUP_SHOWN: usize = 4;

/// Latency metrics with full statistics in `summary` (`{metric}_{stat}_ms`).
pub const LATENCIES: [&str; 4] = ["ttft", "itl", "tpot", "e2e"];
/// The statistics of each latency metric, with their quantile (None: not a quantile).
pub const STATS: [(&str, Option<f64>); 6] =
    [("mean", None), ("p50", Some(0.5)), ("p90", Some(0.9)), ("p95", Some(0.95)), ("p99", Some(0.99)), ("max", None)];

/// Everything the aggregate step depends on besides its inputs' contents: its key's
/// `params` are exactly this, serialized.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// How percentiles are computed ([`stats::METHOD`]); a name, so a change of method is a
    /// change of key.
    pub percentile_method: String,
    pub slo: Slo,
    pub bootstrap_resamples: usize,
}

impl Params {
    pub fn new(slo: Slo) -> Params {
        Params { percentile_method: stats::METHOD.into(), slo, bootstrap_resamples: stats::bootstrap::RESAMPLES }
    }
}

/// Aggregate the measures `inputs` (step id, output folder) into `out`.
pub fn run(p: &Params, inputs: &[(String, PathBuf)], out: &Path) -> Result<()> {
    // A pool of our own, with room on its stacks, on which the cells' files are read
    // in parallel (each file on the thread that reads it: export::read_parquet says
    // why; before that, 90,000 cells overflowed even these stacks).
    let pool = rayon::ThreadPoolBuilder::new().stack_size(32 << 20).build()?;
    pool.install(|| run_in_pool(inputs, &p.slo, out))
}

fn run_in_pool(inputs: &[(String, PathBuf)], slo: &Slo, out: &Path) -> Result<()> {
    use rayon::prelude::*;
    // The quality steps' scores (`[quality]`) come beside the measures.
    let (scores, inputs): (Vec<(String, PathBuf)>, Vec<(String, PathBuf)>) =
        inputs.iter().cloned().partition(|(id, _)| id.starts_with("quality["));
    let inputs = inputs.as_slice();
    let quality = quality::write(&scores, out)?;
    quality::judge_cost(&scores, out)?;
    let frames: Vec<LazyFrame> = inputs
        .par_iter()
        .enumerate()
        .map(|(i, (id, dir))| -> Result<LazyFrame> {
            let df = records::read_requests(dir, None).with_context(|| format!("results of {id}"))?;
            Ok(df.lazy().with_column(lit(i as u32).cast(DataType::UInt32).alias("cell_index")))
        })
        .collect::<Result<_>>()?;
    let all = concat(&frames, UnionArgs::default())?.collect()?;
    drop(frames);
    let names: Vec<String> = all.get_column_names().iter().map(|s| s.to_string()).collect();
    let cell: Vec<String> = names.iter().take_while(|n| *n != "conversation").cloned().collect();

    let mut summary = summary(all.clone().lazy(), &cell, slo)?;
    let itl = itl_stats(inputs)?;
    // Completion tokens of every row (warm-up included: the GPU window covers it).
    let mut tokens = vec![0.0; inputs.len()];
    let sums = all
        .clone()
        .lazy()
        .group_by([col("cell_index")])
        .agg([col("completion_tokens").sum().cast(DataType::Float64).alias("tokens")])
        .collect()?;
    for (i, t) in sums.column("cell_index")?.u32()?.iter().zip(sums.column("tokens")?.f64()?.iter()) {
        if let (Some(i), Some(t)) = (i, t) {
            tokens[i as usize] = t;
        }
    }
    let telemetry = gpu::per_cell(inputs, &tokens)?;
    summary = summary.lazy().join(itl.lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Left)).collect()?;
    summary =
        summary.lazy().join(telemetry.summary.lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Left)).collect()?;
    let summary = summary.select(summary_order(&cell))?;

    let measured = all.clone().lazy().filter(col("warmup").not());
    let keys = |names: &[String]| names.iter().map(|k| col(k.as_str())).collect::<Vec<Expr>>();
    let mut errors = measured
        .clone()
        .filter(col("error").neq(lit("none")))
        .group_by(keys(&[cell.clone(), vec!["error".to_string()]].concat()))
        .agg([len().cast(DataType::UInt32).alias("count"), col("status").max().alias("last_status")])
        .sort([cell.clone(), vec!["error".to_string()]].concat(), SortMultipleOptions::default())
        .collect()?;
    export::write_table(&mut errors, out, "errors")?;

    let cells = summary.select(["cell_index".to_string()].into_iter().chain(cell.iter().cloned()))?;
    let mut per_turn = per_turn(measured.clone(), &cells, &cell)?;
    export::write_table(&mut per_turn, out, "per_turn")?;
    let (mut by_cell, mut by_turn) = breakdown::tables(measured.clone(), &cells, &cell)?;
    export::write_table(&mut by_cell, out, "breakdown")?;
    export::write_table(&mut by_turn, out, "breakdown_per_turn")?;
    // Each measure's meta.json, read once: the server table and runs.json come from it.
    let metas: Vec<Meta> =
        inputs.iter().map(|(id, dir)| records::read_meta(dir).with_context(|| format!("metadata of {id}"))).collect::<Result<_>>()?;
    server::write(inputs, &metas, &summary, &cells, out)?;

    let conversations = measured
        .filter(col("error").eq(lit("none")))
        .group_by([col("cell_index"), col("conversation")])
        .agg(
            ["ttft_ms", "tpot_ms", "e2e_ms"]
                .iter()
                .flat_map(|m| [col(*m).sum().alias(format!("{m}_sum")), col(*m).count().alias(format!("{m}_n"))])
                .collect::<Vec<_>>(),
        )
        .sort(["cell_index", "conversation"], SortMultipleOptions::default())
        .collect()?;
    let (mut across, mut points) = seeds::tables(&summary, &conversations, &cell, slo, &quality)?;
    export::write_table(&mut across, out, "seeds")?;
    export::write_table(&mut points, out, "points")?;

    if let Some(series) = telemetry.series {
        let mut series =
            cells.lazy().join(series.lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Inner)).collect()?;
        series = series.drop("cell_index")?;
        export::write_table(&mut series, out, "telemetry")?;
    }
    let mut summary = summary.drop("cell_index")?;
    export::write_table(&mut summary, out, "summary")?;
    let mut requests = all.drop("cell_index")?;
    export::write_parquet(&mut requests, &out.join("requests.parquet"))?;
    std::fs::write(out.join("runs.json"), serde_json::to_vec_pretty(&runs(&metas))?).context("writing runs.json")?;
    Ok(())
}

/// Summary columns in reading order: the cell, how much was served at what
/// concurrency, then each latency metric's statistics, then GPU figures.
fn summary_order(cell: &[String]) -> Vec<String> {
    let mut order: Vec<String> = ["cell_index"].iter().map(|s| s.to_string()).chain(cell.iter().cloned()).collect();
    order.extend(
        ["requests", "errors", "in_flight_mean", "requests_per_s", "output_tok_per_s", "goodput_req_per_s", "slo_met_pct"]
            .map(String::from),
    );
    for m in LATENCIES {
        order.extend(STATS.iter().map(|(s, _)| format!("{m}_{s}_ms")));
    }
    order.extend(gpu::SUMMARY_COLUMNS.iter().map(|s| s.to_string()));
    order
}

fn summary(all: LazyFrame, cell: &[String], slo: &Slo) -> Result<DataFrame> {
    let measured = all.filter(col("warmup").not());
    let ok = col("error").eq(lit("none"));
    let span_s = stats::slo::span_s();
    // Requests in flight on average over the span (busy time / span), to read next to
    // the batch size: a client or server that fell behind shows here.
    let busy_s = (col("end_ns") - col("sent_ns")).cast(DataType::Float64).sum() / lit(1e9);
    let mut aggs: Vec<Expr> = cell.iter().map(|c| col(c.as_str()).first()).collect();
    aggs.extend([
        len().cast(DataType::UInt32).alias("requests"),
        col("error").neq(lit("none")).sum().cast(DataType::UInt32).alias("errors"),
        (busy_s / span_s.clone()).alias("in_flight_mean"),
        (len().cast(DataType::Float64) / span_s.clone()).alias("requests_per_s"),
        (col("completion_tokens").filter(ok.clone()).sum().cast(DataType::Float64) / span_s).alias("output_tok_per_s"),
    ]);
    aggs.extend(stats::slo::figures(slo));
    for m in ["ttft", "tpot", "e2e"] {
        let c = format!("{m}_ms");
        for (s, q) in STATS {
            let v = col(c.as_str()).filter(ok.clone());
            let e = match (s, q) {
                ("mean", _) => v.mean(),
                ("max", _) => v.max(),
                (_, Some(q)) => v.quantile(lit(q), stats::POLARS_METHOD),
                _ => unreachable!(),
            };
            aggs.push(e.alias(format!("{m}_{s}_ms")));
        }
    }
    Ok(measured.group_by([col("cell_index")]).agg(aggs).sort(cell.to_vec(), SortMultipleOptions::default()).collect()?)
}

/// Inter-token latency per cell: every gap between consecutive content chunks of the
/// cell's non-warm-up requests (a stream cut midway still timed its gaps), pooled.
fn itl_stats(inputs: &[(String, PathBuf)]) -> Result<DataFrame> {
    use rayon::prelude::*;
    let stats: Vec<Vec<Option<f64>>> = inputs
        .par_iter()
        .map(|(id, dir)| -> Result<Vec<Option<f64>>> {
            let df = records::read_chunks(dir, Some(&["gap_ms"])).with_context(|| format!("chunks of {id}"))?;
            let mut gaps: Vec<f64> = df.column("gap_ms")?.f64()?.iter().flatten().collect();
            Ok(STATS
                .iter()
                .map(|(s, q)| match (s, q) {
                    _ if gaps.is_empty() => None,
                    (&"mean", _) => Some(gaps.iter().sum::<f64>() / gaps.len() as f64),
                    (&"max", _) => gaps.iter().copied().reduce(f64::max),
                    (_, Some(q)) => stats::quantile_select(&mut gaps, *q),
                    _ => unreachable!(),
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut cols = vec![Column::new("cell_index".into(), (0..inputs.len() as u32).collect::<Vec<u32>>())];
    for (k, (s, _)) in STATS.iter().enumerate() {
        cols.push(Column::new(format!("itl_{s}_ms").into(), stats.iter().map(|v| v[k]).collect::<Vec<Option<f64>>>()));
    }
    Ok(DataFrame::new(inputs.len(), cols)?)
}

/// Per curve (cell less seed) and turn: each seed's median over its conversations,
/// then the median, min and max of those across seeds. `cells` maps `cell_index` to
/// the cell's axes (grouping by the index first keeps the big pass on integers).
fn per_turn(measured: LazyFrame, cells: &DataFrame, cell: &[String]) -> Result<DataFrame> {
    let keys = |names: &[String]| names.iter().map(|k| col(k.as_str())).collect::<Vec<Expr>>();
    let curve: Vec<String> = cell.iter().filter(|c| *c != "seed").cloned().collect();
    let mut with_turn = curve.clone();
    with_turn.push("turn".into());
    Ok(measured
        .filter(col("error").eq(lit("none")))
        .group_by([col("cell_index"), col("turn")])
        .agg([
            col("e2e_ms").median().alias("e2e_ms"),
            col("ttft_ms").median().alias("ttft_ms"),
            // The share of the turn's prompt tokens the server read from its cache; none
            // where the server does not say (a hosted API without usage details).
            when(col("cached_tokens").count().gt(lit(0)))
                .then(col("cached_tokens").sum().cast(DataType::Float64) / col("prompt_tokens").sum().cast(DataType::Float64))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("cached_share"),
        ])
        .join(cells.clone().lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Inner))
        .group_by(keys(&with_turn))
        .agg([
            len().cast(DataType::UInt32).alias("seeds"),
            col("e2e_ms").median().alias("e2e_median_ms"),
            col("e2e_ms").min().alias("e2e_min_ms"),
            col("e2e_ms").max().alias("e2e_max_ms"),
            col("ttft_ms").median().alias("ttft_median_ms"),
            col("ttft_ms").min().alias("ttft_min_ms"),
            col("ttft_ms").max().alias("ttft_max_ms"),
            col("cached_share").median().alias("cached_share_median"),
            col("cached_share").min().alias("cached_share_min"),
            col("cached_share").max().alias("cached_share_max"),
        ])
        .sort(with_turn, SortMultipleOptions::default())
        .collect()?)
}

/// The servers behind the measurements, once each: backend, command line (the port
/// and the binary's folder left out, so that a report does not change with them),
/// version, and what NVML said on the measuring machine.
fn runs(metas: &[Meta]) -> Vec<serde_json::Value> {
    let mut seen: BTreeMap<String, (usize, serde_json::Value)> = BTreeMap::new();
    for meta in metas {
        let server = &meta.server;
        let mut command: Vec<String> = server.command.clone().unwrap_or_default();
        if let Some(first) = command.first_mut() {
            *first = Path::new(first.as_str()).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        }
        if let Some(p) = command.iter().position(|a| a == "--port")
            && p + 1 < command.len()
        {
            command[p + 1] = "PORT".into();
        }
        // The receiver's port, too (a free one, picked per server start).
        if let Some(p) = command.iter().position(|a| a == "--otlp-traces-endpoint")
            && p + 1 < command.len()
        {
            command[p + 1] = format!("http://127.0.0.1:PORT{}", crate::otlp::ROUTE);
        }
        let mut entry = serde_json::json!({
            "backend": server.backend,
            "command": if command.is_empty() { serde_json::Value::Null } else { command.join(" ").into() },
            "url": server.url.clone().flatten(),
            "version": server.version.clone().flatten(),
            "nvml": meta.nvml,
            "telemetry": match meta.telemetry.reason() {
                Some(reason) => serde_json::json!({"available": false, "reason": reason}),
                None => serde_json::json!({"available": true}),
            },
        });
        // Imported results: the file, its format and what it does not record.
        if let Some(import) = &server.import {
            entry["import"] = serde_json::json!(import);
        }
        // Where a slow start went: the server's own longest start-up spans.
        if let Some(spans) = meta.spans.as_ref().and_then(|s| s.as_ref()).filter(|s| !s.startup.is_empty()) {
            let mut longest = spans.startup.clone();
            longest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
            longest.truncate(STARTUP_SHOWN);
            entry["startup"] = serde_json::json!(longest);
        }
        // Under Slurm: the job and node (only then, so local reports do not change).
        if let Some(slurm) = &server.slurm {
            entry["slurm"] = serde_json::json!({"job_id": slurm.job_id, "node": slurm.node});
        }
        let n = seen.len();
        let slot = seen.entry(entry.to_string()).or_insert((n, entry));
        slot.1["cells"] = (slot.1["cells"].as_u64().unwrap_or(0) + 1).into();
    }
    let mut v: Vec<(usize, serde_json::Value)> = seen.into_values().collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, e)| e).collect()
}
