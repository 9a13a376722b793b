//! `[search]`: per curve (model × variant × other axes), find the largest value of one
//! axis whose cells meet the SLO, instead of sweeping a grid.
//!
//! The walk is deterministic for given results: probe `min`, double while the probe
//! meets the SLO (up to `max`), then bisect between the largest value that met it and
//! the smallest that did not, down to neighbours (batch sizes) or `tolerance` (a
//! numeric axis). A probe is the curve's cells at that value, one per seed: ordinary
//! measure cells with their own keys, so a rerun walks the same path without
//! measuring, and a changed SLO walks again and measures only the probes it has not
//! seen (attainment is computed from the cached requests under the current SLO).
//!
//! Noise is part of the answer. A probe meets the SLO when every seed's attainment
//! does (the interval across seeds clears the threshold) and misses it when none does;
//! when the seeds disagree, it is measured again with extra seeds (`extra-seeds`), and
//! if they still disagree the median seed decides and the answer is marked uncertain.
//!
//! The plan cannot know every probe in advance: [`walk()`] replays the path from the
//! results known so far and stops at the first probe that is not measured; the command
//! measures those and walks again, as Snakemake re-evaluates the DAG after a checkpoint.
//! Those rounds are `commands::search`'s: each plans the probe cells and reads the
//! cache, and `search` must not import `plan`, which holds a search's [`Summary`].
//!
//! Every walk ends: it stops when the next probe would repeat one already on its path
//! (a midpoint that rounds to an end, as adjacent floats do), and after [`MAX_PROBES`]
//! probes whatever happens. Validation keeps real searches far below that bound
//! ([`SearchSpec::MAX_DOUBLINGS`], a `tolerance` of at least 1e-4).
//!
//! The parts: [`walk()`] (the walks, pure functions of the results), the probe
//! cells and what they measured ([`at`], [`curves`], [`observe`]), and the
//! [`Summary`] a report shows. Statistics come from [`crate::stats`]; `search` sits
//! below `steps::report` (which draws its summary) and imports no step.

mod probe;
mod summary;
mod walk;

pub use probe::{Observed, at, curve_of, curves, observe, probe_cell};
pub use summary::{CurveResult, Probe, Summary, Walked, conclude, searching};
pub use walk::{Walk, extra_seed, median, walk};

use crate::config::SearchSpec;

/// Most probes one curve's walk takes. Validation bounds a walk well below it: at most
/// [`SearchSpec::MAX_DOUBLINGS`] doublings from `min` to `max`, then a bisection of the
/// last doubling, which halves a gap of 100% of the value down to a tolerance of 1e-4
/// in 14 steps, or a gap of whole numbers below 2^40 down to neighbours in 40. The
/// bound only keeps a walk finite if those ever change.
pub const MAX_PROBES: usize = 128;

/// Most rounds of measuring a run of `spec` may take: every round measures at least
/// one cell of each walk still going (a probe's seed or an extra seed).
pub fn max_rounds(spec: &SearchSpec) -> usize {
    MAX_PROBES * (1 + spec.extra_seeds as usize) + 1
}
