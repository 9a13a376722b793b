//! The walks: from the results known so far to the next probes, or to the answer.
//! Pure functions of their lookups, so that a rerun walks the same path.

use super::{MAX_PROBES, Observed, Probe};
use crate::config::{Objective, SearchSpec};

/// A curve's walk so far: the probes in the order walked, the cells it needs measured
/// next (empty when it is done), and the value found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walk {
    pub probes: Vec<Probe>,
    pub need: Vec<(f64, u64)>,
    pub done: bool,
    /// The largest value that met the SLO; none when even `min` did not.
    pub found: Option<f64>,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Meets,
    Misses,
    Split,
}

fn judge(results: &[(u64, f64)], threshold: f64) -> Verdict {
    if results.iter().all(|(_, a)| *a >= threshold) {
        Verdict::Meets
    } else if results.iter().all(|(_, a)| *a < threshold) {
        Verdict::Misses
    } else {
        Verdict::Split
    }
}

/// The median of each seed's value ([`crate::stats::median`]); NaN when there are no
/// seeds, which a probe always has.
pub fn median(results: &[(u64, f64)]) -> f64 {
    let v: Vec<f64> = results.iter().map(|(_, a)| *a).collect();
    crate::stats::median(&v).unwrap_or(f64::NAN)
}

/// The extra seeds a split probe is measured with: after the largest base seed.
pub fn extra_seed(seeds: &[u64], k: u32) -> u64 {
    seeds.iter().max().copied().unwrap_or(0).saturating_add(k as u64)
}

/// Replay a curve's walk from the results `lookup` knows (what the cell at `value` and
/// `seed` measured, or `None` when it is not measured), stopping at the first probe
/// with cells to measure.
pub fn walk(spec: &SearchSpec, threshold: f64, seeds: &[u64], mut lookup: impl FnMut(f64, u64) -> Option<Observed>) -> Walk {
    match spec.objective {
        Objective::Slo => walk_slo(spec, threshold, seeds, |v, s| lookup(v, s).map(|o| o.attainment)),
        Objective::Goodput => walk_peak(spec, seeds, |v, s| lookup(v, s).map(|o| o.goodput)),
    }
}

/// The largest value whose cells meet the SLO: double, then bisect.
fn walk_slo(spec: &SearchSpec, threshold: f64, seeds: &[u64], mut lookup: impl FnMut(f64, u64) -> Option<f64>) -> Walk {
    let mut w = Walk::default();
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut v = spec.min;
    loop {
        // A probe already on the path would be judged as before, and so on forever.
        if w.probes.len() >= MAX_PROBES || w.probes.iter().any(|p| p.value == v) {
            return finish(w, lo);
        }
        let mut results = Vec::new();
        for &s in seeds {
            match lookup(v, s) {
                Some(a) => results.push((s, a)),
                None => w.need.push((v, s)),
            }
        }
        if !w.need.is_empty() {
            return w;
        }
        let mut extra = 0;
        while judge(&results, threshold) == Verdict::Split && extra < spec.extra_seeds {
            extra += 1;
            let s = extra_seed(seeds, extra);
            match lookup(v, s) {
                Some(a) => results.push((s, a)),
                None => {
                    w.need.push((v, s));
                    return w;
                }
            }
        }
        let (meets, uncertain) = match judge(&results, threshold) {
            Verdict::Meets => (true, false),
            Verdict::Misses => (false, false),
            Verdict::Split => (median(&results) >= threshold, true),
        };
        w.probes.push(Probe { value: v, seeds: results, meets, uncertain });
        if meets {
            lo = Some(v);
        } else {
            hi = Some(v);
        }
        v = match (lo, hi) {
            (Some(l), None) if l >= spec.max => return finish(w, Some(l)),
            (Some(l), None) => grow(spec, l),
            (Some(l), Some(h)) => {
                let close = if spec.integer { h - l <= 1.0 } else { (h - l) / l <= spec.tolerance };
                let m = mid(spec, l, h);
                // Adjacent floats have no value between them: the midpoint is an end.
                if close || m <= l || m >= h {
                    return finish(w, Some(l));
                }
                m
            }
            (None, _) => return finish(w, None),
        };
    }
}

fn grow(spec: &SearchSpec, v: f64) -> f64 {
    let grown = if spec.integer { (2.0 * v).max(v + 1.0) } else { 2.0 * v };
    grown.min(spec.max)
}

fn mid(spec: &SearchSpec, a: f64, b: f64) -> f64 {
    if spec.integer { ((a + b) / 2.0).floor() } else { (a + b) / 2.0 }
}

/// The value of peak goodput, for a curve that rises and then falls: double while
/// goodput (the median across seeds) grows; then narrow the bracket around the best
/// value so far, probing the middle of its wider side, down to neighbours or
/// `tolerance`. The found probe is marked uncertain when its seeds' range overlaps a
/// neighbouring probe's (the peak is within noise of it).
fn walk_peak(spec: &SearchSpec, seeds: &[u64], mut lookup: impl FnMut(f64, u64) -> Option<f64>) -> Walk {
    let mut w = Walk::default();
    // A probe's median goodput; `None` (with the cells to measure in `w.need`) when
    // it is not measured yet.
    let mut g = |w: &mut Walk, v: f64| -> Option<f64> {
        if let Some(p) = w.probes.iter().find(|p| p.value == v) {
            return Some(median(&p.seeds));
        }
        let results: Vec<(u64, Option<f64>)> = seeds.iter().map(|&s| (s, lookup(v, s))).collect();
        w.need.extend(results.iter().filter(|(_, r)| r.is_none()).map(|(s, _)| (v, *s)));
        if !w.need.is_empty() {
            return None;
        }
        let results: Vec<(u64, f64)> = results.into_iter().map(|(s, r)| (s, r.unwrap_or_default())).collect();
        let m = median(&results);
        w.probes.push(Probe { value: v, seeds: results, meets: false, uncertain: false });
        Some(m)
    };
    let Some(mut g_best) = g(&mut w, spec.min) else { return w };
    let (mut a, mut best) = (spec.min, spec.min);
    let b = loop {
        if best >= spec.max || w.probes.len() >= MAX_PROBES {
            return peak(w, best);
        }
        let next = grow(spec, best);
        let Some(g_next) = g(&mut w, next) else { return w };
        if g_next > g_best {
            (a, best, g_best) = (best, next, g_next);
        } else {
            break next;
        }
    };
    let mut b = b;
    loop {
        let close = if spec.integer { best - a <= 1.0 && b - best <= 1.0 } else { (b - a) / best <= spec.tolerance };
        let x = if best - a > b - best { mid(spec, a, best) } else { mid(spec, best, b) };
        if close || x <= a || x >= b || x == best || w.probes.len() >= MAX_PROBES {
            return peak(w, best);
        }
        let Some(g_x) = g(&mut w, x) else { return w };
        if g_x > g_best {
            if x < best {
                b = best;
            } else {
                a = best;
            }
            (best, g_best) = (x, g_x);
        } else if x < best {
            a = x;
        } else {
            b = x;
        }
    }
}

/// Finish a peak search at `best`: mark its probe, and whether a neighbour's seeds
/// reach as high as its own lowest.
fn peak(mut w: Walk, best: f64) -> Walk {
    let range = |p: &Probe| {
        let (_, lo, hi) = p.spread();
        (lo, hi)
    };
    let below = w.probes.iter().filter(|p| p.value < best).max_by(|a, b| a.value.total_cmp(&b.value)).map(range);
    let above = w.probes.iter().filter(|p| p.value > best).min_by(|a, b| a.value.total_cmp(&b.value)).map(range);
    if let Some(p) = w.probes.iter_mut().find(|p| p.value == best) {
        let (lo, _) = range(p);
        p.meets = true;
        p.uncertain = [below, above].into_iter().flatten().any(|(_, hi)| hi >= lo);
    }
    finish(w, Some(best))
}

fn finish(mut w: Walk, found: Option<f64>) -> Walk {
    w.done = true;
    w.found = found;
    w
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::matrix::Cell;
    use crate::search::at;

    fn spec(integer: bool, min: f64, max: f64) -> SearchSpec {
        SearchSpec { axis: "batch-size".into(), objective: Objective::Slo, integer, min, max, tolerance: 0.1, extra_seeds: 2 }
    }

    /// A server that meets the SLO up to `limit`, every seed alike.
    fn up_to(limit: f64) -> impl FnMut(f64, u64) -> Option<f64> {
        move |v, _| Some(if v <= limit { 100.0 } else { 0.0 })
    }

    #[test]
    fn doubles_then_bisects_to_neighbours() {
        let w = walk_slo(&spec(true, 1.0, 64.0), 90.0, &[1, 2], up_to(5.0));
        let path: Vec<f64> = w.probes.iter().map(|p| p.value).collect();
        assert_eq!(path, [1.0, 2.0, 4.0, 8.0, 6.0, 5.0]);
        assert_eq!((w.done, w.found), (true, Some(5.0)));
    }

    #[test]
    fn stops_at_max_and_at_a_failing_min() {
        let w = walk_slo(&spec(true, 1.0, 12.0), 90.0, &[1], up_to(100.0));
        assert_eq!(w.probes.iter().map(|p| p.value).collect::<Vec<_>>(), [1.0, 2.0, 4.0, 8.0, 12.0]);
        assert_eq!(w.found, Some(12.0));
        let w = walk_slo(&spec(true, 1.0, 12.0), 90.0, &[1], up_to(0.5));
        assert_eq!((w.probes.len(), w.found, w.done), (1, None, true));
    }

    #[test]
    fn a_numeric_axis_stops_within_its_tolerance() {
        let w = walk_slo(&spec(false, 1.0, 100.0), 90.0, &[1], up_to(13.3));
        let found = w.found.unwrap();
        assert!(found <= 13.3 && (13.3 - found) / found <= 0.1, "{found} {:?}", w.probes);
    }

    /// A lookup that fails the test once a walk has asked for more than `limit`
    /// results: a walk that does not end asks forever.
    fn bounded(limit: usize, mut f: impl FnMut(f64, u64) -> Option<f64>) -> impl FnMut(f64, u64) -> Option<f64> {
        let mut asked = 0;
        move |v, s| {
            asked += 1;
            assert!(asked <= limit, "the walk does not end: {asked} lookups, now at {v}");
            f(v, s)
        }
    }

    #[test]
    fn a_walk_ends_when_no_value_lies_between_its_bounds() {
        // A tolerance no float gap can meet: the bisection reaches adjacent floats,
        // whose midpoint is one of them, and stops there rather than probe it again.
        let tiny = SearchSpec { axis: "rate".into(), tolerance: 1e-300, ..spec(false, 1.0, 100.0) };
        let w = walk_slo(&tiny, 90.0, &[1], bounded(10_000, up_to(13.3)));
        assert!(w.done && w.probes.len() <= MAX_PROBES, "{} probes", w.probes.len());
        let found = w.found.unwrap();
        assert!(found <= 13.3 && 13.3 - found < 1e-12, "{found}");
        let values: BTreeSet<u64> = w.probes.iter().map(|p| p.value.to_bits()).collect();
        assert_eq!(values.len(), w.probes.len(), "no value is probed twice");
        // Peak goodput too.
        let tiny = SearchSpec { objective: Objective::Goodput, ..tiny };
        let w = walk_peak(&tiny, &[1], bounded(10_000, |v, _| Some(if v <= 12.0 { v } else { 24.0 - v })));
        assert!(w.done && w.probes.len() <= MAX_PROBES, "{} probes", w.probes.len());
    }

    #[test]
    fn a_walk_stops_at_its_bound_whatever_the_results() {
        // A range past what validation accepts (2^200 doublings away): the walk stops
        // at MAX_PROBES with the best value so far instead of doubling on.
        let wide = spec(false, 1e-300, 1e300);
        let w = walk_slo(&wide, 90.0, &[1], bounded(10_000, up_to(1e299)));
        assert!(w.done && w.probes.len() == MAX_PROBES, "{} probes", w.probes.len());
        let w = walk_peak(&wide, &[1], bounded(10_000, |v, _| Some(v)));
        assert!(w.done && w.probes.len() <= MAX_PROBES + 1, "{} probes", w.probes.len());
    }

    #[test]
    fn probes_of_an_axis_of_whole_numbers_are_whole_numbers() {
        let cell = Cell {
            model: "m".into(),
            variant: "base".into(),
            seed: 7,
            batch_size: 16,
            frames: 1,
            custom: vec![("seqs".into(), "64".into())],
        };
        assert_eq!(at(&cell, "seqs", 4.0, true).custom[0].1, "4", "not `4.0`");
        assert_eq!(at(&cell, "seqs", 4.0, true).value("seqs").and_then(|v| v.as_u64()), Some(4));
        assert_eq!(at(&cell, "seqs", 4.0, false).custom[0].1, "4.0", "a numeric axis keeps its floats");
        // Every probe of a walk over whole numbers is one, within min and max.
        let whole = SearchSpec { axis: "seqs".into(), ..spec(true, 3.0, 1000.0) };
        for limit in [2.0, 3.0, 17.0, 500.0, 999.0, 2000.0] {
            let w = walk_slo(&whole, 90.0, &[1, 2], up_to(limit));
            assert!(w.probes.iter().all(|p| p.value.fract() == 0.0 && (3.0..=1000.0).contains(&p.value)), "{:?}", w.probes);
        }
    }

    #[test]
    fn stops_where_results_are_missing_and_resumes_from_them() {
        let mut known: BTreeMap<(u64, u64), f64> = BTreeMap::new();
        let mut measured = 0;
        loop {
            let w = walk_slo(&spec(true, 1.0, 64.0), 90.0, &[7], |v, s| known.get(&(v as u64, s)).copied());
            if w.done {
                assert_eq!(w.found, Some(5.0));
                break;
            }
            assert_eq!(w.need.len(), 1, "one seed, one cell at a time");
            for (v, s) in w.need {
                known.insert((v as u64, s), if v <= 5.0 { 95.0 } else { 50.0 });
                measured += 1;
            }
        }
        assert_eq!(measured, 6);
    }

    #[test]
    fn goodput_rises_then_falls_and_the_peak_is_found() {
        let g = |v: f64, _: u64| Some(if v <= 12.0 { v } else { 24.0 - v });
        let w = walk_peak(&spec(true, 1.0, 64.0), &[1, 2], g);
        let path: Vec<f64> = w.probes.iter().map(|p| p.value).collect();
        assert_eq!(path, [1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 14.0, 10.0, 13.0, 11.0]);
        assert_eq!((w.done, w.found), (true, Some(12.0)));
        let top = w.probes.iter().find(|p| p.value == 12.0).unwrap();
        assert!(top.meets && !top.uncertain, "11 and 13 stay below 12 on every seed");
        // Still rising at max: the answer is max.
        let w = walk_peak(&spec(true, 1.0, 6.0), &[1], |v, _| Some(v));
        assert_eq!(w.found, Some(6.0));
        // A flat curve: within noise everywhere, so uncertain.
        let w = walk_peak(&spec(true, 1.0, 64.0), &[1, 2], |_, s| Some(10.0 + s as f64));
        assert_eq!(w.found, Some(1.0));
        assert!(w.probes[0].uncertain);
    }

    #[test]
    fn disagreeing_seeds_get_extra_seeds_then_the_median_decides() {
        // Seed 1 meets, seed 2 misses; extra seeds 3 and 4 (after the largest, 2) too.
        let attain = |v: f64, s: u64| Some(if v <= 2.0 || (v <= 4.0 && s % 2 == 1) { 100.0 } else { 0.0 });
        let w = walk_slo(&spec(true, 1.0, 8.0), 90.0, &[1, 2], attain);
        let four = w.probes.iter().find(|p| p.value == 4.0).unwrap();
        assert_eq!(four.seeds.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(four.uncertain);
        // A median of 50% is below 90%: it misses; so does 3, and 2 is the answer.
        assert!(!four.meets);
        assert_eq!(w.probes.iter().map(|p| p.value).collect::<Vec<_>>(), [1.0, 2.0, 4.0, 3.0]);
        assert_eq!(w.found, Some(2.0));
    }
}
