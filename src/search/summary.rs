//! What the walks found, as a report shows it and the plan keeps it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Walk, curve_of, median, probe_cell};
use crate::config::{Objective, SearchSpec};
use crate::matrix::Cell;

/// One probe on a curve's path: its value, each seed's attainment (percent of turns
/// within the SLO), and what was concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub value: f64,
    pub seeds: Vec<(u64, f64)>,
    pub meets: bool,
    /// The seeds disagreed even with the extra ones: the median seed decided.
    pub uncertain: bool,
}

impl Probe {
    /// The median, lowest and highest of its seeds' values.
    pub fn spread(&self) -> (f64, f64, f64) {
        let lo = self.seeds.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
        let hi = self.seeds.iter().map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max);
        (median(&self.seeds), lo, hi)
    }
}

/// What a curve's walk found, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveResult {
    pub curve: String,
    pub probes: Vec<Probe>,
    pub found: Option<f64>,
    /// Whether the found value is `max`: the limit may lie higher.
    pub at_max: bool,
}

/// The search as the report's key holds it: the spec, the SLO it judged by, and each
/// curve's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub axis: String,
    pub objective: Objective,
    pub min: f64,
    pub max: f64,
    pub attainment_pct: f64,
    pub curves: Vec<CurveResult>,
}

/// Every curve walked as far as the cache allows.
///
/// `cells` and `need` are apart: a run measures `need`, a plan shows both.
pub struct Walked {
    /// The probe cells walked (measured), sorted.
    pub cells: Vec<Cell>,
    /// The cells the walks need measured before they can go on.
    pub need: Vec<Cell>,
    pub summary: Summary,
}

/// The cells walked and needed, and each curve's path.
pub fn conclude(spec: &SearchSpec, attainment_pct: f64, walks: &[(&Cell, Walk)]) -> Walked {
    let mut cells = Vec::new();
    let mut need = Vec::new();
    let mut curves = Vec::new();
    for (curve, w) in walks {
        for p in &w.probes {
            cells.extend(p.seeds.iter().map(|(s, _)| probe_cell(spec, curve, p.value, *s)));
        }
        need.extend(w.need.iter().map(|(v, s)| probe_cell(spec, curve, *v, *s)));
        curves.push(CurveResult {
            curve: label(curve, &spec.axis),
            probes: w.probes.clone(),
            found: w.found,
            at_max: w.found == Some(spec.max),
        });
    }
    cells.sort();
    cells.dedup();
    let summary = Summary { axis: spec.axis.clone(), objective: spec.objective, min: spec.min, max: spec.max, attainment_pct, curves };
    Walked { cells, need, summary }
}

/// "qwen-3b (awq), frames=1": the curve's coordinates less its seed and the searched axis.
fn label(curve: &Cell, axis: &str) -> String {
    let mut parts = vec![format!("{} ({})", curve.model, curve.variant)];
    parts.extend(curve.coords().into_iter().skip(2).filter(|(k, _)| k != "seed" && k != axis).map(|(k, v)| format!("{k}={v}")));
    parts.join(", ")
}

/// The curves still searching, for messages.
pub fn searching(w: &Walked) -> usize {
    w.need.iter().map(|c| curve_of(c, &w.summary.axis)).collect::<BTreeSet<_>>().len()
}
