//! The aggregate step: raw request rows of every measure → summary tables (polars, lazy).
//!
//! Percentiles use linear interpolation between closest ranks (numpy's and pandas'
//! default, polars' `QuantileMethod::Linear`), over successful, non-warm-up requests.
//! Outputs, each as Parquet and CSV:
//! * `requests`: all request rows of all cells, concatenated (for recomputation);
//! * `summary`: one row per cell with request and error counts, the concurrency reached,
//!   TTFT, end-to-end and TPOT statistics and throughput;
//! * `per_turn`: per model/variant/batch/frames and turn, the median end-to-end latency
//!   and TTFT across seeds with min and max (each seed's value is the median over its
//!   conversations).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;

use crate::export;

/// Bump when the tables would change.
pub const VERSION: u32 = 2;

pub fn run(inputs: &[(String, PathBuf)], out: &Path) -> Result<()> {
    let mut frames = Vec::new();
    for (id, dir) in inputs {
        frames.push(export::read_parquet(&dir.join("requests.parquet")).with_context(|| format!("results of {id}"))?.lazy());
    }
    let all = concat(&frames, UnionArgs::default())?.collect()?;
    let names: Vec<String> = all.get_column_names().iter().map(|s| s.to_string()).collect();
    let cell: Vec<String> = names.iter().take_while(|n| *n != "conversation").cloned().collect();
    let mut requests = all.clone();
    export::write_table(&mut requests, out, "requests")?;

    let measured = all.lazy().filter(col("warmup").not());
    let ok = col("error").eq(lit("none"));
    let q = |c: &str, p: f64| col(c).filter(ok.clone()).quantile(lit(p), QuantileMethod::Linear);
    let keys = |names: &[String]| names.iter().map(|k| col(k.as_str())).collect::<Vec<Expr>>();
    let span_s = (col("end_ns").max() - col("sent_ns").min()).cast(DataType::Float64) / lit(1e9);
    // Requests in flight on average over the span (busy time / span), to read next to
    // the batch size: a client or server that fell behind shows here.
    let busy_s = (col("end_ns") - col("sent_ns")).cast(DataType::Float64).sum() / lit(1e9);
    let mut summary = measured
        .clone()
        .group_by(keys(&cell))
        .agg([
            len().alias("requests"),
            col("error").neq(lit("none")).sum().cast(DataType::UInt32).alias("errors"),
            (busy_s / span_s.clone()).alias("in_flight_mean"),
            col("ttft_ms").filter(ok.clone()).mean().alias("ttft_mean_ms"),
            q("ttft_ms", 0.5).alias("ttft_p50_ms"),
            q("ttft_ms", 0.95).alias("ttft_p95_ms"),
            q("ttft_ms", 0.99).alias("ttft_p99_ms"),
            col("e2e_ms").filter(ok.clone()).mean().alias("e2e_mean_ms"),
            q("e2e_ms", 0.5).alias("e2e_p50_ms"),
            q("e2e_ms", 0.95).alias("e2e_p95_ms"),
            q("e2e_ms", 0.99).alias("e2e_p99_ms"),
            q("tpot_ms", 0.5).alias("tpot_p50_ms"),
            (col("completion_tokens").filter(ok.clone()).sum().cast(DataType::Float64) / span_s.clone()).alias("output_tok_per_s"),
            (len().cast(DataType::Float64) / span_s).alias("requests_per_s"),
        ])
        .sort(cell.clone(), SortMultipleOptions::default())
        .collect()?;
    export::write_table(&mut summary, out, "summary")?;

    let curve: Vec<String> = cell.iter().filter(|c| *c != "seed").cloned().collect();
    let mut with_seed = curve.clone();
    with_seed.extend(["seed".to_string(), "turn".to_string()]);
    let mut with_turn = curve.clone();
    with_turn.push("turn".into());
    let mut per_turn = measured
        .filter(ok)
        .group_by(keys(&with_seed))
        .agg([col("e2e_ms").median().alias("e2e_ms"), col("ttft_ms").median().alias("ttft_ms")])
        .group_by(keys(&with_turn))
        .agg([
            len().alias("seeds"),
            col("e2e_ms").median().alias("e2e_median_ms"),
            col("e2e_ms").min().alias("e2e_min_ms"),
            col("e2e_ms").max().alias("e2e_max_ms"),
            col("ttft_ms").median().alias("ttft_median_ms"),
            col("ttft_ms").min().alias("ttft_min_ms"),
            col("ttft_ms").max().alias("ttft_max_ms"),
        ])
        .sort(with_turn, SortMultipleOptions::default())
        .collect()?;
    export::write_table(&mut per_turn, out, "per_turn")?;
    Ok(())
}
