//! `[search]` in `pipeline run` and `pipeline plan`: walk every curve over the results
//! the cache holds ([`search::walk`]), measure the probes the walks ask for, and walk
//! again, until every curve has its answer; then plan the experiment over the probes
//! walked, with the paths in the report's parameters.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Result, bail};

use crate::cache::Cache;
use crate::config::{Experiment, SearchSpec};
use crate::matrix::Cell;
use crate::plan::{Plan, Selection, State, StepKind};
use crate::search::{self, CurveResult, Summary};

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

/// Walk every curve of `base` (the matrix's cells) over what `cache` holds.
pub fn walk_all(cache: &Cache, exp: &Experiment, base: &[Cell], hardware: &str) -> Result<Walked> {
    let spec = exp.search.as_ref().expect("walk_all is called for a search");
    let curves = search::curves(base, &spec.axis);
    let threshold = exp.report.slo.attainment_pct;
    let mut known: HashMap<Cell, Option<search::Observed>> = HashMap::new();
    // Each round learns every cell it asks about, and a walk asks about at most
    // MAX_PROBES probes of its seeds and extra seeds: the rounds are bounded.
    for _ in 0..search::max_rounds(spec) {
        let mut asked: BTreeSet<Cell> = BTreeSet::new();
        let walks: Vec<(&Cell, search::Walk)> = curves
            .iter()
            .map(|(curve, seeds)| {
                let w = search::walk(spec, threshold, seeds, |v, s| {
                    let cell = probe_cell(spec, curve, v, s);
                    match known.get(&cell) {
                        Some(a) => *a,
                        None => {
                            asked.insert(cell);
                            None
                        }
                    }
                });
                (curve, w)
            })
            .collect();
        if asked.is_empty() {
            return Ok(conclude(exp, &walks));
        }
        // What the cache holds for the cells asked about: their attainment under the
        // current SLO, or nothing when they are not measured.
        let plan = Plan::build(exp.clone(), asked.iter().cloned().collect(), hardware.to_string())?;
        let statuses = plan.status(cache, &Selection { kinds: vec![StepKind::Measure], ..Selection::default() });
        for (step, st) in plan.steps.iter().zip(&statuses) {
            let Some(ci) = step.cell.filter(|_| step.kind == StepKind::Measure) else { continue };
            let result = match (st.state, st.key) {
                (State::Fresh, Some(key)) => Some(search::observe(&cache.entry_dir("measure", &key), &exp.report.slo)?),
                _ => None,
            };
            known.insert(plan.cells[ci].clone(), result);
        }
        // A cell without a measure step (validation refuses the models that have
        // none) would be asked about again in every round.
        if let Some(cell) = asked.iter().find(|c| !known.contains_key(*c)) {
            bail!("search: probe cell {cell} has no measure step to measure it");
        }
    }
    bail!("search: the walks did not end within {} rounds", search::max_rounds(spec))
}

/// The cell of `curve` at `value` of the searched axis, with `seed`.
fn probe_cell(spec: &SearchSpec, curve: &Cell, value: f64, seed: u64) -> Cell {
    let mut c = search::at(curve, &spec.axis, value, spec.integer);
    c.seed = seed;
    c
}

/// The cells walked and needed, and each curve's path.
fn conclude(exp: &Experiment, walks: &[(&Cell, search::Walk)]) -> Walked {
    let spec = exp.search.as_ref().expect("a search");
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
    let summary = Summary {
        axis: spec.axis.clone(),
        objective: spec.objective,
        min: spec.min,
        max: spec.max,
        attainment_pct: exp.report.slo.attainment_pct,
        curves,
    };
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
    w.need.iter().map(|c| search::curve_of(c, &w.summary.axis)).collect::<BTreeSet<_>>().len()
}
