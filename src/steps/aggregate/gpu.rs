//! GPU telemetry per cell, from each measure's `telemetry.parquet` (absent where no
//! GPU was sampled: then every column here is empty for that cell).
//!
//! * `power_mean_w`: the sum over the server's GPUs of each GPU's mean draw;
//! * `power_peak_w`: the highest single reading of any of its GPUs;
//! * `energy_j`: Σ over GPUs of ∫ power dt (trapezoids between samples), over the
//!   sampled window: warm-up to the last answer;
//! * `energy_per_token_j`: `energy_j` / completion tokens of every request in that
//!   window, warm-up included;
//! * `temperature_peak_c`; `throttle_seen`: every reason NVML gave for holding clocks
//!   down, but `GPU_IDLE`, `|`-joined (empty: none).

use std::path::PathBuf;

use anyhow::{Context, Result};
use polars::prelude::*;
use rayon::prelude::*;

pub const SUMMARY_COLUMNS: [&str; 6] =
    ["power_mean_w", "power_peak_w", "energy_j", "energy_per_token_j", "temperature_peak_c", "throttle_seen"];

pub struct Telemetry {
    /// `cell_index` and [`SUMMARY_COLUMNS`], one row per cell.
    pub summary: DataFrame,
    /// Every sample: `cell_index`, `t_s` (since the cell's first sample), `gpu`,
    /// `power_w`, `temperature_c`, `sm_clock_mhz`; `None` where no cell has any.
    pub series: Option<DataFrame>,
}

#[derive(Default)]
struct Cell {
    figures: [Option<f64>; 5],
    throttle: Option<String>,
    series: Option<DataFrame>,
}

/// `tokens[i]`: completion tokens of every request of cell `i`, warm-up included.
pub fn per_cell(inputs: &[(String, PathBuf)], tokens: &[f64]) -> Result<Telemetry> {
    let cells: Vec<Cell> = inputs
        .par_iter()
        .zip(tokens)
        .map(|((id, dir), &tokens)| one(dir, tokens).with_context(|| format!("telemetry of {id}")))
        .collect::<Result<_>>()?;
    let mut cols = vec![Column::new("cell_index".into(), (0..inputs.len() as u32).collect::<Vec<u32>>())];
    for (k, name) in SUMMARY_COLUMNS[..5].iter().enumerate() {
        cols.push(Column::new((*name).into(), cells.iter().map(|c| c.figures[k]).collect::<Vec<Option<f64>>>()));
    }
    cols.push(Column::new("throttle_seen".into(), cells.iter().map(|c| c.throttle.clone()).collect::<Vec<Option<String>>>()));
    let summary = DataFrame::new(inputs.len(), cols)?;
    let mut parts = Vec::new();
    for (i, c) in cells.into_iter().enumerate() {
        if let Some(s) = c.series {
            parts.push(s.lazy().with_column(lit(i as u32).cast(DataType::UInt32).alias("cell_index")));
        }
    }
    let series = if parts.is_empty() {
        None
    } else {
        let df = concat(&parts, UnionArgs::default())?.collect()?;
        Some(df.select(["cell_index", "t_s", "gpu", "power_w", "temperature_c", "sm_clock_mhz"])?)
    };
    Ok(Telemetry { summary, series })
}

fn one(dir: &std::path::Path, tokens: f64) -> Result<Cell> {
    let path = dir.join("telemetry.parquet");
    if !path.exists() {
        return Ok(Cell::default());
    }
    let df = crate::export::read_parquet(&path)?;
    if df.height() == 0 {
        return Ok(Cell::default());
    }
    let t: Vec<u64> = df.column("t_ns")?.u64()?.iter().map(|v| v.unwrap_or(0)).collect();
    let gpu: Vec<u32> = df.column("gpu")?.u32()?.iter().map(|v| v.unwrap_or(0)).collect();
    let power: Vec<Option<f64>> = df.column("power_w")?.f64()?.iter().collect();
    let temp: Vec<Option<u32>> = df.column("temperature_c")?.u32()?.iter().collect();
    let throttle: Vec<Option<&str>> = df.column("throttle")?.str()?.iter().collect();

    // Per GPU, in time order: mean and ∫ power dt.
    let mut gpus: Vec<u32> = gpu.clone();
    gpus.sort_unstable();
    gpus.dedup();
    let (mut mean_sum, mut energy, mut any_power) = (0.0, 0.0, false);
    for g in &gpus {
        let mut pts: Vec<(u64, f64)> = (0..t.len()).filter(|&i| gpu[i] == *g).filter_map(|i| Some((t[i], power[i]?))).collect();
        pts.sort_by_key(|p| p.0);
        if pts.is_empty() {
            continue;
        }
        any_power = true;
        mean_sum += pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
        energy += pts.windows(2).map(|w| (w[1].0 - w[0].0) as f64 / 1e9 * (w[0].1 + w[1].1) / 2.0).sum::<f64>();
    }
    let peak = power.iter().flatten().copied().reduce(f64::max);
    let mut reasons: Vec<&str> =
        throttle.iter().flatten().flat_map(|s| s.split('|')).filter(|r| !r.is_empty() && *r != "GPU_IDLE").collect();
    reasons.sort_unstable();
    reasons.dedup();
    let throttle_seen = reasons.join("|");
    let t0 = t.iter().copied().min().unwrap_or(0);
    let series = df
        .clone()
        .lazy()
        .select([
            ((col("t_ns") - lit(t0)).cast(DataType::Float64) / lit(1e9)).alias("t_s"),
            col("gpu"),
            col("power_w"),
            col("temperature_c"),
            col("sm_clock_mhz"),
        ])
        .collect()?;
    Ok(Cell {
        figures: [
            any_power.then_some(mean_sum),
            peak,
            any_power.then_some(energy),
            (any_power && tokens > 0.0).then(|| energy / tokens),
            temp.iter().flatten().max().map(|&c| c as f64),
        ],
        throttle: Some(throttle_seen),
        series: Some(series),
    })
}
