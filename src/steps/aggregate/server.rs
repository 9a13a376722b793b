//! The server's view of each cell, beside the client's: how the cell was isolated
//! from other cells' caches and what the server's own `/metrics` said (each measure's
//! `meta.json`), and, for the cell with the most requests, KV-cache use and queues
//! over time (its `metrics.parquet`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;

use crate::export;
use crate::records::{Meta, ServerMetrics};

/// `meta.json`'s `server_metrics` fields that become `server` columns, as numbers.
const FIELDS: [(&str, fn(&ServerMetrics) -> Option<f64>); 11] = [
    ("prefix_cache_hit_rate", |m| m.prefix_cache_hit_rate),
    ("mm_cache_hit_rate", |m| m.mm_cache_hit_rate),
    ("kv_cache_usage_mean", |m| m.kv_cache_usage_mean),
    ("kv_cache_usage_peak", |m| m.kv_cache_usage_peak),
    ("running_mean", |m| m.running_mean),
    ("running_peak", |m| m.running_peak),
    ("waiting_mean", |m| m.waiting_mean),
    ("waiting_peak", |m| m.waiting_peak),
    ("preemptions", |m| m.preemptions),
    ("server_ttft_ms_mean", |m| m.server_ttft_ms_mean),
    ("server_queue_ms_mean", |m| m.server_queue_ms_mean),
];

/// Write `server` (one row per cell) and, for the cell with the most requests (the
/// first of equals), `server_series`. `summary` has `cell_index`, `requests` and
/// `ttft_mean_ms`; `cells` maps `cell_index` to the cell's axes.
/// `metas`: each input's `meta.json`, in input order.
pub fn write(inputs: &[(String, PathBuf)], metas: &[Meta], summary: &DataFrame, cells: &DataFrame, out: &Path) -> Result<()> {
    let with_cell = |df: DataFrame| -> Result<DataFrame> {
        let joined = cells.clone().lazy().join(df.lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Inner));
        Ok(joined.collect()?.drop("cell_index")?)
    };
    export::write_table(&mut with_cell(per_cell(metas, summary)?)?, out, "server")?;
    let requests: Vec<u32> = summary.column("requests")?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let index: Vec<u32> = summary.column("cell_index")?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let Some(busiest) = (0..requests.len()).max_by_key(|&r| (requests[r], std::cmp::Reverse(r))).map(|r| index[r]) else {
        return Ok(());
    };
    if let Some(series) = series(inputs, busiest as usize)? {
        let cell_index = Column::new("cell_index".into(), vec![busiest; series.height()]);
        export::write_table(&mut with_cell(series.hstack(&[cell_index])?)?, out, "server_series")?;
    }
    Ok(())
}

/// One row per cell (by `cell_index`): isolation, the server's numbers, and its TTFT
/// beside the client's mean from `client_ttft` (`cell_index`, `ttft_mean_ms`).
fn per_cell(metas: &[Meta], client_ttft: &DataFrame) -> Result<DataFrame> {
    let text = |f: &dyn Fn(&Meta) -> Option<String>| metas.iter().map(f).collect::<Vec<Option<String>>>();
    let scraped = |f: fn(&ServerMetrics) -> Option<f64>| metas.iter().map(|m| m.server_metrics.as_ref().and_then(f)).collect::<Vec<_>>();
    let mut cols = vec![
        Column::new("cell_index".into(), (0..metas.len() as u32).collect::<Vec<u32>>()),
        Column::new("isolation".into(), text(&|m| Some(m.isolation.done.clone()))),
        Column::new("isolation_complete".into(), metas.iter().map(|m| m.isolation.complete).collect::<Vec<_>>()),
        Column::new("isolation_note".into(), text(&|m| m.isolation.notes.first().cloned())),
        Column::new("metrics".into(), metas.iter().map(|m| Some(m.server_metrics.as_ref().is_some())).collect::<Vec<_>>()),
        Column::new("metrics_reason".into(), text(&|m| m.server_metrics.reason().map(String::from))),
    ];
    for (name, f) in FIELDS {
        cols.push(Column::new(name.into(), scraped(f)));
    }
    cols.push(Column::new("server_ttft_p50_ms".into(), scraped(|m| m.server_ttft_ms.p50)));
    let table = DataFrame::new(metas.len(), cols)?;
    let client = client_ttft.select(["cell_index", "ttft_mean_ms"])?.lazy().rename(["ttft_mean_ms"], ["client_ttft_ms_mean"], true);
    Ok(table
        .lazy()
        .join(client, [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Left))
        // What the client adds to the server's own time to first token: the network,
        // HTTP and SSE framing, the tokenizer's detokenizing, and the client itself.
        .with_column((col("client_ttft_ms_mean") - col("server_ttft_ms_mean")).alias("client_overhead_ms"))
        .collect()?)
}

/// KV-cache use and running and waiting requests over time for cell `cell`: `t_s`
/// since its first scrape, `kv_cache_usage` (the largest of its label sets),
/// `running` and `waiting` (summed). None when the cell has no scrapes of them.
fn series(inputs: &[(String, PathBuf)], cell: usize) -> Result<Option<DataFrame>> {
    let path = inputs[cell].1.join("metrics.parquet");
    if !path.exists() {
        return Ok(None);
    }
    let wanted = [
        ("vllm:kv_cache_usage_perc", "kv_cache_usage"),
        ("vllm:num_requests_running", "running"),
        ("vllm:num_requests_waiting", "waiting"),
    ];
    let wanted_metric = wanted.iter().map(|(m, _)| col("metric").eq(lit(*m))).reduce(|a, b| a.or(b)).expect("three metrics");
    let rows = export::read_parquet(&path)?.lazy().filter(wanted_metric);
    let t0 = col("t_ns").min();
    let wide = rows
        .group_by([col("t_ns")])
        .agg(
            wanted
                .iter()
                .map(|(metric, name)| {
                    let v = col("value").filter(col("metric").eq(lit(*metric)));
                    if *name == "kv_cache_usage" { v.max() } else { v.sum() }.alias(*name)
                })
                .collect::<Vec<_>>(),
        )
        .with_column(((col("t_ns") - t0).cast(DataType::Float64) / lit(1e9)).alias("t_s"))
        .sort(["t_ns"], SortMultipleOptions::default())
        .select([col("t_s"), col("kv_cache_usage"), col("running"), col("waiting")])
        .collect()?;
    Ok((wide.height() > 0).then_some(wide))
}
