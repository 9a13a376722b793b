//! "Results at a glance": what the run found, in sentences computed from the tables
//! (never written by hand), and what makes its numbers doubtful.
//!
//! The headline metric is the end-to-end latency, each seed's mean, with the across-
//! seeds bootstrap interval of the `seeds` table.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use polars::prelude::*;
use serde::Serialize;

use super::charts::{f64s, labels, strs};
use super::table::sig3;

/// The findings, then the warnings.
#[derive(Debug, Default, Serialize)]
pub struct Glance {
    pub findings: Vec<String>,
    pub warnings: Vec<String>,
}

/// The tables the sentences come from.
pub struct Tables<'a> {
    pub seeds: &'a DataFrame,
    pub points: &'a DataFrame,
    pub per_turn: &'a DataFrame,
    pub summary: &'a DataFrame,
    pub server: &'a DataFrame,
    /// Each curve's scores per method (`[quality]`).
    pub quality: Option<&'a DataFrame>,
    /// The columns of a curve: the cell less its seed.
    pub group: &'a [String],
}

pub fn glance(t: &Tables, slo: &str) -> Result<Glance> {
    let mut g = Glance::default();
    let e2e = headline(t)?;
    if let Some(f) = fastest(&e2e) {
        g.findings.push(f);
    }
    // The best point first, then how variants compare, then what qualifies the best
    // point (an SLO that never binds) and how latency grows over turns.
    let mut best = best_point(t.points, t.group, slo)?.into_iter();
    g.findings.extend(best.next());
    // How fast each variant is, joined with how its answers agree with the base's
    // where they were scored: one verdict for "is it worth it?".
    let mut scores = match t.quality {
        Some(q) => {
            g.warnings.extend(truncated(q)?);
            quality(q)?
        }
        None => Vec::new(),
    };
    for ((model, variant), sentence) in variants(&e2e) {
        let joined = scores
            .iter()
            .position(|((m, v, method, against), _)| (m, v) == (&model, &variant) && method == "agreement" && against == "base");
        match joined {
            Some(k) => {
                let (_, clause) = scores.remove(k);
                g.findings.push(format!("{}, and {clause}.", sentence.trim_end_matches('.')));
            }
            None => g.findings.push(sentence),
        }
    }
    g.findings.extend(scores.into_iter().map(|((model, variant, _, _), clause)| format!("{model} {variant} {clause}.")));
    g.findings.extend(best);
    g.findings.extend(growth(t.per_turn)?);
    g.warnings.splice(0..0, warnings(t)?);
    Ok(g)
}

/// One curve's headline: its axes and the end-to-end mean with its interval.
#[derive(Debug, Clone)]
struct Curve {
    axes: BTreeMap<String, String>,
    label: String,
    mean: f64,
    low: f64,
    high: f64,
}

fn headline(t: &Tables) -> Result<Vec<Curve>> {
    let s = t.seeds;
    let metric = strs(s, "metric")?;
    let label = labels(s, &t.group.iter().map(String::as_str).collect::<Vec<_>>())?;
    let cols: Vec<Vec<String>> = t.group.iter().map(|c| strs(s, c)).collect::<Result<_>>()?;
    let (mean, low, high) = (f64s(s, "mean")?, f64s(s, "ci_low")?, f64s(s, "ci_high")?);
    Ok((0..s.height())
        .filter(|&r| metric[r] == "e2e_mean_ms")
        .filter_map(|r| {
            let axes = t.group.iter().zip(&cols).map(|(c, v)| (c.clone(), v[r].clone())).collect();
            Some(Curve { axes, label: label[r].clone(), mean: mean[r]?, low: low[r]?, high: high[r]? })
        })
        .collect())
}

fn fastest(curves: &[Curve]) -> Option<String> {
    let best = curves.iter().min_by(|a, b| a.mean.total_cmp(&b.mean))?;
    Some(format!(
        "Fastest: {} at {} ms end to end (mean over seeds; 95% interval {}–{} ms).",
        best.label,
        sig3(best.mean),
        sig3(best.low),
        sig3(best.high)
    ))
}

/// Each variant against its model's `base` on the same other axes: the ratio of the
/// means, as a range over curves, and in how many curves the intervals do not overlap.
fn variants(curves: &[Curve]) -> Vec<((String, String), String)> {
    let others = |c: &Curve| -> Vec<(String, String)> {
        c.axes.iter().filter(|(k, _)| *k != "variant").map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut by_variant: BTreeMap<(String, String), Vec<(f64, bool)>> = BTreeMap::new();
    for c in curves {
        let variant = c.axes.get("variant").cloned().unwrap_or_default();
        if variant == "base" || variant.is_empty() {
            continue;
        }
        let Some(base) = curves.iter().find(|b| b.axes.get("variant").map(String::as_str) == Some("base") && others(b) == others(c)) else {
            continue;
        };
        let model = c.axes.get("model").cloned().unwrap_or_default();
        let apart = c.high < base.low || c.low > base.high;
        by_variant.entry((model, variant)).or_default().push((base.mean / c.mean, apart));
    }
    by_variant
        .into_iter()
        .map(|((model, variant), ratios)| {
            let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(a, b), (r, _)| (a.min(*r), b.max(*r)));
            let apart = ratios.iter().filter(|(_, a)| *a).count();
            let range = if (hi - lo).abs() < 0.005 { format!("{lo:.2}×") } else { format!("{lo:.2}–{hi:.2}×") };
            let sentence = format!(
                "{model} {variant} is {range} as fast as {model} base end to end ({} curve(s); in {apart} of them the intervals do not overlap).",
                ratios.len()
            );
            ((model, variant), sentence)
        })
        .collect()
}

/// What each variant's answers are worth, beside its speed: its agreement with the
/// reference variant and its scores against reference answers, per model and variant
/// (a range over its curves where there are several): per (model, variant, method,
/// against), what follows "MODEL VARIANT" in a sentence.
fn quality(q: &DataFrame) -> Result<Vec<((String, String, String, String), String)>> {
    let (model, variant) = (strs(q, "model")?, strs(q, "variant")?);
    let (method, against) = (strs(q, "method")?, strs(q, "against")?);
    let (mean, lo, hi) = (f64s(q, "mean")?, f64s(q, "mean_lo")?, f64s(q, "mean_hi")?);
    // (model, variant, method, against) → (mean, low, high) of each curve.
    let mut by: BTreeMap<(String, String, String, String), Vec<(f64, f64, f64)>> = BTreeMap::new();
    for i in 0..q.height() {
        if method[i] == "chrf" || variant[i] == against[i] {
            continue;
        }
        if let (Some(m), Some(l), Some(h)) = (mean[i], lo[i], hi[i]) {
            by.entry((model[i].clone(), variant[i].clone(), method[i].clone(), against[i].clone())).or_default().push((m, l, h));
        }
    }
    let pct = |v: f64| format!("{:.0}", v * 100.0);
    Ok(by
        .into_iter()
        .map(|((model, variant, method, against), curves)| {
            let key = (model.clone(), variant.clone(), method.clone(), against.clone());
            let share = match curves.as_slice() {
                [(m, l, h)] => format!("{}% [{}–{}]", pct(*m), pct(*l), pct(*h)),
                many => {
                    let (a, b) = many.iter().fold((f64::MAX, f64::MIN), |(a, b), (m, _, _)| (a.min(*m), b.max(*m)));
                    format!("{}–{}% over {} curves", pct(a), pct(b), many.len())
                }
            };
            let clause = match method.as_str() {
                "agreement" => format!("gives the same answer as {model} {against} on {share} of answers (after normalisation)"),
                scorer => format!("matches the reference answer on {share} of answers (scored by {scorer})"),
            };
            (key, clause)
        })
        .collect())
}

/// Answers cut at `max-tokens` are scored as they are: say so.
fn truncated(q: &DataFrame) -> Result<Vec<String>> {
    let (cut, scored) = (f64s(q, "truncated")?, f64s(q, "scored")?);
    let (cut, scored): (f64, f64) = (cut.iter().flatten().sum(), scored.iter().flatten().sum());
    Ok((cut > 0.0)
        .then(|| {
            format!(
                "{:.0}% of the scored answers were cut at max-tokens: their scores judge a truncated answer; raise max-tokens to score whole answers.",
                cut / scored.max(1.0) * 100.0
            )
        })
        .into_iter()
        .collect())
}

/// The best point under the SLO, or why there is none worth the name.
fn best_point(points: &DataFrame, group: &[String], slo: &str) -> Result<Vec<String>> {
    if points.height() == 0 {
        return Ok(Vec::new());
    }
    let label = labels(points, &group.iter().map(String::as_str).collect::<Vec<_>>())?;
    let met: Vec<bool> = points.column("meets_slo")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
    let best: Vec<bool> = points.column("best")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
    let (tput, e2e, pct) = (f64s(points, "output_tok_per_s")?, f64s(points, "e2e_p50_ms")?, f64s(points, "slo_met_pct")?);
    if !met.iter().any(|m| *m) {
        // The first of the highest attainments.
        let top = (0..points.height()).fold(None, |best: Option<usize>, r| match best {
            Some(b) if pct[b].unwrap_or(0.0) >= pct[r].unwrap_or(0.0) => Some(b),
            _ => Some(r),
        });
        return Ok(vec![format!(
            "No point meets the SLO ({slo}); the closest is {} with {}% of requests within it.",
            top.map(|r| label[r].clone()).unwrap_or_default(),
            top.and_then(|r| pct[r]).map(sig3).unwrap_or_default()
        )]);
    }
    let mut out = Vec::new();
    // The overall best: the highest throughput among the curves' best points.
    if let Some(r) = (0..points.height()).filter(|&r| best[r]).max_by(|&a, &b| tput[a].unwrap_or(0.0).total_cmp(&tput[b].unwrap_or(0.0))) {
        out.push(format!(
            "Best under the SLO: {} at {} output tokens/s with {} ms end-to-end p50.",
            label[r],
            tput[r].map(sig3).unwrap_or_default(),
            e2e[r].map(sig3).unwrap_or_default()
        ));
    }
    if met.iter().all(|m| *m) {
        out.push(format!(
            "The SLO ({slo}) never binds: every point meets it, so the best point is simply the highest throughput; tighten it to find a limit."
        ));
    }
    Ok(out)
}

/// How end-to-end latency grows from the first turn to the last (the reference
/// study's question), as a range over curves.
fn growth(per_turn: &DataFrame) -> Result<Vec<String>> {
    let names: Vec<String> = per_turn.get_column_names().iter().map(|s| s.to_string()).collect();
    let curve: Vec<&str> = names.iter().take_while(|n| *n != "turn").map(String::as_str).collect();
    let label = labels(per_turn, &curve)?;
    let (turn, e2e) = (f64s(per_turn, "turn")?, f64s(per_turn, "e2e_median_ms")?);
    // Per curve: (turn, e2e) at its first turn, and at its last.
    type Ends = ((f64, f64), (f64, f64));
    let mut ends: BTreeMap<&str, Ends> = BTreeMap::new();
    for r in 0..per_turn.height() {
        let (Some(t), Some(y)) = (turn[r], e2e[r]) else { continue };
        let e = ends.entry(&label[r]).or_insert(((t, y), (t, y)));
        if t < e.0.0 {
            e.0 = (t, y);
        }
        if t > e.1.0 {
            e.1 = (t, y);
        }
    }
    let ratios: Vec<(f64, f64)> = ends.values().filter(|(a, b)| b.0 > a.0 && a.1 > 0.0).map(|(a, b)| (b.1 / a.1, b.0 + 1.0)).collect();
    if ratios.is_empty() {
        return Ok(Vec::new());
    }
    let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(a, b), (r, _)| (a.min(*r), b.max(*r)));
    let last = ratios.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    Ok(vec![format!(
        "From the first turn to turn {last:.0}, end-to-end latency changes {}× (median across seeds, over {} curve(s)).",
        if (hi - lo).abs() < 0.005 { format!("{lo:.2}") } else { format!("{lo:.2}–{hi:.2}") },
        ratios.len()
    )])
}

/// The comparison with a baseline, counted; each worse metric is a warning.
pub fn against_baseline(g: &mut Glance, c: &super::baseline::Comparison) {
    use crate::stats::compare::Verdict;
    if let Some(note) = &c.note {
        g.warnings.push(format!("Against the baseline {}: {note}.", c.dir));
        return;
    }
    let count = |v: Verdict| c.rows.iter().filter(|r| r.verdict == v).count();
    g.findings.push(format!(
        "Against the baseline {}: {} worse, {} better, {} within ±{}% noise.",
        c.dir,
        count(Verdict::Worse),
        count(Verdict::Better),
        count(Verdict::WithinNoise),
        c.noise
    ));
    for r in c.rows.iter().filter(|r| r.verdict == Verdict::Worse) {
        g.warnings.push(format!(
            "Worse than the baseline: {} {} {} → {} ({}, interval {}).",
            r.curve, r.metric, r.before, r.after, r.change, r.interval
        ));
    }
}

/// What imported results do not record (`runs.json`'s `import` entries), once per
/// format and set of missing measures, naming the models (curves) concerned: the
/// numbers that depend on it are missing from those curves.
pub fn imported(g: &mut Glance, runs: &[serde_json::Value]) {
    let mut by_lack: BTreeMap<(String, Vec<String>), (u64, BTreeSet<String>)> = BTreeMap::new();
    for r in runs.iter().filter(|r| r["import"].is_object()) {
        let lacks: Vec<String> =
            r["import"]["lacks"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(String::from)).collect();
        let format = r["import"]["format"].as_str().unwrap_or("?").to_string();
        let slot = by_lack.entry((format, lacks)).or_default();
        slot.0 += r["cells"].as_u64().unwrap_or(0);
        slot.1.extend(r["import"]["model"].as_str().map(String::from));
    }
    for ((format, lacks), (cells, models)) in by_lack {
        let of = if models.is_empty() { String::new() } else { format!(" of {}", models.into_iter().collect::<Vec<_>>().join(", ")) };
        g.warnings.push(format!(
            "{cells} cell(s){of} were imported from {format} files, which do not record {}: those numbers are missing from their curves.",
            lacks.join(", ")
        ));
    }
}

fn warnings(t: &Tables) -> Result<Vec<String>> {
    let s = t.summary;
    let mut out = Vec::new();
    let errors: f64 = f64s(s, "errors")?.iter().flatten().sum();
    if errors > 0.0 {
        out.push(format!("{errors:.0} request(s) failed; see Errors."));
    }
    if s.column("batch_size").is_ok() && s.column("request_rate").is_err() {
        let (batch, inflight) = (f64s(s, "batch_size")?, f64s(s, "in_flight_mean")?);
        let short = (0..s.height()).filter(|&r| matches!((batch[r], inflight[r]), (Some(b), Some(i)) if b > 1.0 && i < 0.8 * b)).count();
        if short > 0 {
            out.push(format!("{short} cell(s) reached less than 80% of the concurrency asked for (in flight against batch size): the client or the server fell behind."));
        }
    }
    if let Ok(throttle) = strs(s, "throttle_seen") {
        let held = throttle.iter().filter(|t| !t.is_empty()).count();
        if held > 0 {
            out.push(format!("GPU clocks were held down in {held} cell(s) (see GPU telemetry)."));
        }
    }
    if let Ok(complete) = t.server.column("isolation_complete").and_then(|c| c.bool().cloned()) {
        let open = complete.iter().filter(|c| *c == Some(false)).count();
        if open > 0 {
            out.push(format!("{open} cell(s) were not isolated from other cells' server caches (see Server)."));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(model: &str, variant: &str, batch: &str, mean: f64, hw: f64) -> Curve {
        let axes = [("model", model), ("variant", variant), ("batch_size", batch)].map(|(k, v)| (k.to_string(), v.to_string())).into();
        Curve { axes, label: format!("{model} ({variant}), batch-size={batch}"), mean, low: mean - hw, high: mean + hw }
    }

    fn points(met: &[bool], best: &[bool], tput: &[f64]) -> DataFrame {
        let n = met.len();
        df!(
            "model" => vec!["m"; n],
            "variant" => vec!["base"; n],
            "batch_size" => (1..=n as u32).collect::<Vec<_>>(),
            "output_tok_per_s" => tput,
            "e2e_p50_ms" => vec![100.0; n],
            "slo_met_pct" => met.iter().map(|m| if *m { 95.0 } else { 40.0 }).collect::<Vec<f64>>(),
            "meets_slo" => met,
            "best" => best,
        )
        .unwrap()
    }

    #[test]
    fn the_verdict_sentences_from_fixed_numbers() {
        let curves = [
            curve("q", "base", "1", 100.0, 2.0),
            curve("q", "awq", "1", 80.0, 2.0),
            curve("q", "base", "2", 120.0, 2.0),
            curve("q", "awq", "2", 100.0, 30.0),
        ];
        assert_eq!(
            fastest(&curves).unwrap(),
            "Fastest: q (awq), batch-size=1 at 80.0 ms end to end (mean over seeds; 95% interval 78.0–82.0 ms)."
        );
        assert_eq!(
            variants(&curves).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
            ["q awq is 1.20–1.25× as fast as q base end to end (2 curve(s); in 1 of them the intervals do not overlap)."]
        );
    }

    #[test]
    fn the_slo_binds_never_or_always() {
        let group = ["model".to_string(), "variant".to_string(), "batch_size".to_string()];
        // It binds: batch 3 misses, and the best is batch 2.
        let binds = best_point(&points(&[true, true, false], &[false, true, false], &[10.0, 20.0, 30.0]), &group, "TTFT ≤ 500 ms").unwrap();
        assert_eq!(binds, ["Best under the SLO: m (base), batch-size=2 at 20.0 output tokens/s with 100 ms end-to-end p50."]);
        // It never binds: said in words.
        let never = best_point(&points(&[true, true], &[false, true], &[10.0, 20.0]), &group, "TTFT ≤ 500 ms").unwrap();
        assert!(never[1].starts_with("The SLO (TTFT ≤ 500 ms) never binds"), "{never:?}");
        // Nothing meets it: the closest is named.
        let none = best_point(&points(&[false, false], &[false, false], &[10.0, 20.0]), &group, "TTFT ≤ 5 ms").unwrap();
        assert_eq!(none, ["No point meets the SLO (TTFT ≤ 5 ms); the closest is m (base), batch-size=1 with 40.0% of requests within it."]);
    }
}
