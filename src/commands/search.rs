//! `[search]` in `pipeline run` and `pipeline plan`: walk every curve over the results
//! the cache holds ([`search::walk`]), measure the probes the walks ask for, and walk
//! again, until every curve has its answer; then plan the experiment over the probes
//! walked, with the paths in the report's parameters.
//!
//! The rounds live here, not in `search`: each plans the probe cells and reads the
//! cache, and the plan holds a search's [`search::Summary`], so `search` importing
//! `plan` would close a circle.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Result, bail};

use crate::cache::Cache;
use crate::config::Experiment;
use crate::matrix::Cell;
use crate::plan::{Plan, Selection, State, StepKind};
use crate::search::{self, Walked};

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
                    let cell = search::probe_cell(spec, curve, v, s);
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
            return Ok(search::conclude(spec, threshold, &walks));
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
