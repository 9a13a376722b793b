//! Probe cells: a curve's cells at one value of the searched axis, and what such a
//! cell measured, as the walks judge it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use polars::prelude::*;

use crate::config::{SearchSpec, Slo};
use crate::matrix::Cell;

/// A curve's template: `cell` with its seed and searched value cleared, so that the
/// cells of one curve share it.
pub fn curve_of(cell: &Cell, axis: &str) -> Cell {
    let mut c = at(cell, axis, 0.0, false);
    c.seed = 0;
    c
}

/// `cell` with `axis` at `value` (batch size, or a custom axis's number). On an axis of
/// whole numbers (`integer`) the value is written as one: a server flag gets
/// `--max-num-seqs 4`, not `4.0`, which vLLM refuses, and a workload key such as
/// `max-tokens` reads it (a `4.0` is not a whole number to it).
pub fn at(cell: &Cell, axis: &str, value: f64, integer: bool) -> Cell {
    let mut c = cell.clone();
    if axis == "batch-size" {
        c.batch_size = value as u32;
    } else if let Some(slot) = c.custom.iter_mut().find(|(n, _)| n == axis) {
        slot.1 = match integer && value.fract() == 0.0 && value.abs() < 2f64.powi(53) {
            true => (value as i64).to_string(),
            false => serde_json::Number::from_f64(value).map_or_else(|| value.to_string(), |n| n.to_string()),
        };
    }
    c
}

/// What a probe cell measured, as the walks judge it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Percent of the cell's turns within the SLO (the aggregate's `slo_met_pct`).
    pub attainment: f64,
    /// Requests within the SLO per second of the cell (`goodput_req_per_s`).
    pub goodput: f64,
}

/// A cell's attainment and goodput under `slo`, from its `requests.parquet`, as the
/// aggregate counts them ([`crate::stats::slo::figures`], the one definition).
pub fn observe(measure_dir: &Path, slo: &Slo) -> Result<Observed> {
    let cols = ["conversation", "turn", "warmup", "error", "ttft_ms", "tpot_ms", "e2e_ms", "sent_ns", "end_ns"];
    let df = crate::records::read_requests(measure_dir, Some(&cols))?;
    let figures = df.lazy().filter(col("warmup").not()).select(crate::stats::slo::figures(slo)).collect()?;
    let get = |c: &str| -> Result<f64> { Ok(figures.column(c)?.f64()?.get(0).filter(|v| v.is_finite()).unwrap_or(0.0)) };
    Ok(Observed { attainment: get("slo_met_pct")?, goodput: get("goodput_req_per_s")? })
}

/// The curves of `cells` (the matrix's cells, whose values of the searched axis are
/// replaced) with their seeds, in order.
pub fn curves(cells: &[Cell], axis: &str) -> BTreeMap<Cell, Vec<u64>> {
    let mut out: BTreeMap<Cell, Vec<u64>> = BTreeMap::new();
    for c in cells {
        let seeds = out.entry(curve_of(c, axis)).or_default();
        if !seeds.contains(&c.seed) {
            seeds.push(c.seed);
        }
    }
    out
}

/// The cell of `curve` at `value` of the searched axis, with `seed`.
pub fn probe_cell(spec: &SearchSpec, curve: &Cell, value: f64, seed: u64) -> Cell {
    let mut c = at(curve, &spec.axis, value, spec.integer);
    c.seed = seed;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_sets_the_searched_axis_of_its_curve() {
        let cell = Cell {
            model: "m".into(),
            variant: "base".into(),
            seed: 7,
            batch_size: 16,
            frames: 1,
            custom: vec![("rate".into(), "1.0".into())],
        };
        assert_eq!(at(&cell, "rate", 12.5, false).value("rate"), Some(serde_json::json!(12.5)));
        assert_eq!(at(&cell, "batch-size", 4.0, true).batch_size, 4);
        let (a, b) = (curve_of(&at(&cell, "rate", 3.0, false), "rate"), curve_of(&Cell { seed: 8, ..cell.clone() }, "rate"));
        assert_eq!(a, b, "one curve whatever the seed and the searched value");
        let curves = curves(&[cell.clone(), Cell { seed: 8, ..cell }], "rate");
        assert_eq!(curves.values().collect::<Vec<_>>(), [&vec![7, 8]]);
    }
}
