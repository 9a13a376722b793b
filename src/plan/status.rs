//! What is up to date: every selected step's key, its cache lookup, and why it runs.
//! Steps of one depth depend only on shallower ones, so each level is decided in
//! parallel (hashing and lookups dominate), levels in order.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::explain::{NearIndex, explain};
use super::{Plan, Selection, State, Step, StepStatus};
use crate::cache::{Cache, Lookup, StepRecord};

impl Plan {
    /// Decide, for every step, whether it is up to date and why not.
    pub fn status(&self, cache: &Cache, opts: &Selection) -> Vec<StepStatus> {
        // The last run is read only if some step needs explaining (not on a no-op).
        let history = std::sync::OnceLock::new();
        let selected = self.selected(opts);
        // `--force` applies to the steps chosen by `--only`/`--kind`, not to the
        // inputs they pull in.
        let forced: Vec<bool> = selected.iter().map(|s| opts.force && *s == Selected::Chosen).collect();
        let mut out: Vec<StepStatus> = (0..self.steps.len()).map(|_| StepStatus::default()).collect();
        // Steps of one depth depend only on shallower ones: each level is decided in
        // parallel (hashing and cache lookups dominate), levels in order.
        for level in self.levels() {
            let decided: Vec<StepStatus> = level
                .par_iter()
                .map(|&i| match selected[i] {
                    Selected::No => {
                        StepStatus { state: State::Skip, reasons: vec!["not selected (--only/--kind)".into()], ..Default::default() }
                    }
                    _ => self.decide(i, &out, cache, forced[i], &history),
                })
                .collect();
            for (&i, status) in level.iter().zip(decided) {
                out[i] = status;
            }
        }
        out
    }

    /// Steps grouped by depth (longest path from a step without inputs), in order.
    fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.steps.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for &i in &self.order {
            depth[i] = self.steps[i].deps.iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
            if levels.len() <= depth[i] {
                levels.resize_with(depth[i] + 1, Vec::new);
            }
            levels[depth[i]].push(i);
        }
        levels
    }

    /// Whether step `i` is up to date, given the decisions about its inputs.
    fn decide(&self, i: usize, out: &[StepStatus], cache: &Cache, forced: bool, history: &std::sync::OnceLock<History>) -> StepStatus {
        let step = &self.steps[i];
        let waiting: Vec<&str> = step.deps.iter().filter(|&&d| out[d].state != State::Fresh).map(|&d| self.steps[d].id.as_str()).collect();
        if !waiting.is_empty() {
            let reasons = forced
                .then(|| "forced".to_string())
                .into_iter()
                .chain(waiting.iter().take(3).map(|d| format!("input changed: {d} runs first")))
                .chain((waiting.len() > 3).then(|| format!("and {} more inputs", waiting.len() - 3)))
                .collect();
            let state = if step.deps.iter().any(|&d| out[d].state == State::Skip) { State::Skip } else { State::Wait };
            return StepStatus { state, reasons, forced, ..Default::default() };
        }
        let inputs = step.deps.iter().map(|&d| (self.steps[d].id.clone(), out[d].output.map(|o| o.hex()).unwrap_or_default())).collect();
        let key = self.key_for(step, inputs);
        let digest = key.digest();
        let mut status = StepStatus { key: Some(digest), forced, ..Default::default() };
        match cache.lookup(step.kind.name(), &digest) {
            Lookup::Hit { output_digest } if !forced => {
                status.state = State::Fresh;
                status.output = Some(output_digest);
            }
            lookup => {
                status.state = State::Run;
                status.reasons = if forced {
                    vec!["forced".into()]
                } else {
                    let (previous, near) = history.get_or_init(|| {
                        // Records from before they were named by file are named by experiment.
                        let mut previous = cache.last_run(&cache.record_name(&self.experiment));
                        if previous.is_empty() {
                            previous = cache.last_run(&self.experiment.name);
                        }
                        // Only steps that left the plan can have been *replaced* by a new one.
                        let ids: std::collections::HashSet<&str> = self.steps.iter().map(|s| s.id.as_str()).collect();
                        let near = NearIndex::new(previous.values().filter(|r| !ids.contains(r.id.as_str())));
                        (previous, near)
                    });
                    explain(cache, step, &self.coords(step), &key, previous, near, &lookup)
                };
            }
        }
        status
    }

    fn selected(&self, opts: &Selection) -> Vec<Selected> {
        // A step is chosen by its own coordinates (an axis it does not have does not
        // exclude it) and kind; everything a chosen step reads is chosen too.
        let chosen = |step: &Step| {
            let kind_ok = opts.kinds.is_empty() || opts.kinds.contains(&step.kind);
            let only_ok = opts.only.is_empty() || {
                let coords = self.coords(step);
                !coords.is_empty()
                    && opts.only.iter().all(|(axis, value)| coords.iter().find(|(k, _)| k == axis).is_none_or(|(_, v)| v == value))
            };
            kind_ok && only_ok
        };
        let mut sel = vec![Selected::No; self.steps.len()];
        for &i in self.order.iter().rev() {
            let step = &self.steps[i];
            if chosen(step) {
                sel[i] = Selected::Chosen;
            }
            if sel[i] != Selected::No {
                for &d in &step.deps {
                    if sel[d] == Selected::No {
                        sel[d] = Selected::Input;
                    }
                }
            }
        }
        sel
    }
}

/// Whether a command applies to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    No,
    /// Chosen by `--only` and `--kind` (everything, without them).
    Chosen,
    /// Read by a chosen step.
    Input,
}

/// The last run's records, and an index of them for steps whose coordinates changed.
type History = (BTreeMap<String, StepRecord>, NearIndex);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Source};
    use crate::plan::StepKind;

    /// A plan of 2 models × 2 seeds, and a cache in which every step is published.
    fn cached_plan() -> (Plan, Cache, tempfile::TempDir) {
        let text =
            "name = \"t\"\n[models.a]\nbackend = \"sim\"\n[models.b]\nbackend = \"sim\"\n[matrix]\nmodel = [\"a\", \"b\"]\nseed = [1, 2]\n";
        let source = Source { display: "t.toml".into(), text: text.into(), yaml: false, base_dir: Default::default(), path: None };
        let exp = config::load(&source).unwrap();
        let cells = crate::matrix::expand(&exp, &source).unwrap();
        let mut plan = Plan::build(exp, cells, "test".into()).unwrap();
        plan.env.clear();
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        // Publish each step in order, an empty output of its own name, under its key.
        for _ in 0..plan.steps.len() {
            let statuses = plan.status(&cache, &Selection::default());
            let Some(i) = plan.order.iter().copied().find(|&i| statuses[i].state == State::Run) else { break };
            let staged = cache.stage().unwrap();
            std::fs::write(staged.path().join("out"), &plan.steps[i].id).unwrap();
            let inputs = plan.steps[i].deps.iter().map(|&d| (plan.steps[d].id.clone(), statuses[d].output.unwrap().hex())).collect();
            cache.publish(staged, &plan.steps[i].id, plan.key_for(&plan.steps[i], inputs)).unwrap();
        }
        (plan, cache, dir)
    }

    fn states(plan: &Plan, cache: &Cache, sel: Selection) -> Vec<(String, &'static str, bool)> {
        let st = plan.status(cache, &sel);
        plan.order.iter().map(|&i| (plan.steps[i].id.clone(), st[i].state.name(), st[i].forced)).collect()
    }

    #[test]
    fn everything_published_is_fresh() {
        let (plan, cache, _dir) = cached_plan();
        assert!(states(&plan, &cache, Selection::default()).iter().all(|(_, s, _)| *s == "fresh"));
    }

    #[test]
    fn force_applies_to_what_only_and_kind_choose() {
        let (plan, cache, _dir) = cached_plan();
        let by_kind = |kinds: Vec<StepKind>, only: Vec<(String, String)>| {
            let all = states(&plan, &cache, Selection { kinds, only, force: true });
            let mut shown: Vec<String> = all
                .into_iter()
                .filter(|(_, s, _)| *s != "fresh")
                .map(|(id, s, f)| format!("{s}{} {id}", if f { "!" } else { "" }))
                .collect();
            shown.sort();
            shown
        };
        // The aggregate alone: its measures are read from the cache, not forced.
        assert_eq!(by_kind(vec![StepKind::Aggregate], vec![]), ["run! aggregate", "skip report"]);
        // One seed's measures; their datagen is read (fresh), the rest is not chosen.
        let seed1 = by_kind(vec![StepKind::Measure], vec![("seed".into(), "1".into())]);
        assert_eq!(
            seed1,
            [
                "run! measure[model=a,variant=base,seed=1,batch-size=1,frames=1]",
                "run! measure[model=b,variant=base,seed=1,batch-size=1,frames=1]",
                "skip aggregate",
                "skip datagen[seed=2,batch-size=1,frames=1]",
                "skip measure[model=a,variant=base,seed=2,batch-size=1,frames=1]",
                "skip measure[model=b,variant=base,seed=2,batch-size=1,frames=1]",
                "skip report",
            ]
        );
    }

    #[test]
    fn without_force_a_selection_runs_nothing_cached() {
        let (plan, cache, _dir) = cached_plan();
        let sel = Selection { kinds: vec![StepKind::Datagen], only: vec![("seed".into(), "2".into())], force: false };
        let all = states(&plan, &cache, sel);
        assert!(all.iter().all(|(id, s, _)| *s == "fresh" || (*s == "skip" && !id.starts_with("datagen[seed=2"))), "{all:?}");
    }
}
