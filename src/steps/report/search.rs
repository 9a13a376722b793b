//! The report's "Search" section: each curve's probes in the order walked (value,
//! seeds, attainment across seeds, verdict) and the value found, with its throughput
//! and latency from the `points` table; and the sentence "Results at a glance" gives it.

use anyhow::Result;
use polars::prelude::*;
use serde::Serialize;

use super::charts::{f64s, labels};
use super::table::{Table, sig3};
use crate::config::Objective;
use crate::search::{CurveResult, Summary};

#[derive(Debug, Serialize)]
pub struct Section {
    pub axis: String,
    /// How the walk went, in words.
    pub intro: String,
    pub curves: Vec<ShownCurve>,
}

#[derive(Debug, Serialize)]
pub struct ShownCurve {
    pub curve: String,
    /// What was found, in a sentence.
    pub answer: String,
    pub table: Table,
}

/// The section, and the sentence for the glance.
pub fn section(s: &Summary, points: &DataFrame, group: &[String]) -> Result<(Section, String)> {
    let column = s.axis.replace('-', "_");
    let others: Vec<&str> = group.iter().map(String::as_str).filter(|c| *c != column).collect();
    let curve_of = labels(points, &others)?;
    let value = f64s(points, &column)?;
    let (tput, e2e) = (f64s(points, "output_tok_per_s")?, f64s(points, "e2e_p50_ms")?);
    let at = |curve: &str, v: f64| (0..points.height()).find(|&r| curve_of[r] == curve && value[r] == Some(v));
    let mut curves = Vec::new();
    let mut short = Vec::new();
    for c in &s.curves {
        let found = c.found.map(|v| {
            let shown = at(&c.curve, v).map(|r| {
                let n = |x: Option<f64>| x.map(sig3).unwrap_or_else(|| "–".into());
                format!(": {} output tokens/s at {} ms end-to-end p50", n(tput[r]), n(e2e[r]))
            });
            (v, shown.unwrap_or_default())
        });
        let answer = answer(s, c, found.as_ref());
        short.push(format!("{}: {}", c.curve, c.found.map_or_else(|| "none".to_string(), |v| bound(c, v))));
        curves.push(ShownCurve { curve: c.curve.clone(), answer, table: probes(s, c) });
    }
    let uncertain = s.curves.iter().any(|c| c.probes.iter().any(|p| p.uncertain));
    let (what, doubt, intro) = match s.objective {
        Objective::Slo => (
            format!("the largest {} within the SLO", s.axis),
            " (uncertain where seeds disagreed; see Search)",
            format!(
                "Per curve, the largest {} whose cells meet the SLO (at least {}% of turns within it, for every seed), probed in this order: doubling while it holds, then halving the gap. Seeds that disagree get extra seeds; if they still disagree the median seed decides.",
                s.axis, s.attainment_pct
            ),
        ),
        Objective::Goodput => (
            format!("the {} of peak goodput", s.axis),
            " (within noise of a neighbouring probe; see Search)",
            format!(
                "Per curve, the {} of peak goodput (requests within the SLO per second, the median across seeds), probed in this order: doubling while goodput grows, then narrowing the bracket around the best value so far.",
                s.axis
            ),
        ),
    };
    let glance = format!("Search: {what}, per curve: {}{}.", short.join("; "), if uncertain { doubt } else { "" });
    Ok((Section { axis: s.axis.clone(), intro, curves }, glance))
}

/// "5", or "at least 64" when the largest value probed still met the SLO.
fn bound(c: &CurveResult, v: f64) -> String {
    if c.at_max { format!("at least {} (the largest probed)", num(v)) } else { num(v) }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { sig3(v) }
}

fn answer(s: &Summary, c: &CurveResult, found: Option<&(f64, String)>) -> String {
    let path: Vec<String> = c.probes.iter().map(|p| num(p.value)).collect();
    let walked = format!("probes {}", path.join(", "));
    match (s.objective, found) {
        (_, None) => format!("Even {} = {} misses the SLO ({walked}).", s.axis, num(s.min)),
        (Objective::Slo, Some((v, at))) => {
            let next = c.probes.iter().filter(|p| !p.meets && p.value > *v).map(|p| p.value).reduce(f64::min);
            let above = next.map(|n| format!("; {} misses it", num(n))).unwrap_or_default();
            format!("{} = {} meets the SLO{at}{above} ({walked}).", s.axis, bound(c, *v))
        }
        (Objective::Goodput, Some((v, at))) => {
            let p = c.probes.iter().find(|p| p.value == *v);
            let g = p.map(|p| sig3(p.spread().0)).unwrap_or_default();
            let rising = if c.at_max { ", still rising at the largest value probed" } else { "" };
            format!("{} = {} gives the peak goodput, {g} requests/s within the SLO{rising}{at} ({walked}).", s.axis, num(*v))
        }
    }
}

fn probes(s: &Summary, c: &CurveResult) -> Table {
    let rows = c
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (mid, lo, hi) = p.spread();
            let verdict = match (s.objective, p.meets, p.uncertain) {
                (Objective::Slo, true, false) => "meets",
                (Objective::Slo, false, false) => "misses",
                (Objective::Slo, true, true) => "meets (seeds disagree: the median decides)",
                (Objective::Slo, false, true) => "misses (seeds disagree: the median decides)",
                (Objective::Goodput, true, false) => "peak",
                (Objective::Goodput, true, true) => "peak (within noise of a neighbour)",
                (Objective::Goodput, false, _) => "",
            };
            vec![
                (i + 1).to_string(),
                num(p.value),
                p.seeds.len().to_string(),
                format!("{} [{}–{}]", sig3(mid), sig3(lo), sig3(hi)),
                verdict.to_string(),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "probe".into(),
            s.axis.clone(),
            "seeds".into(),
            "SLO met (%), median [min–max] across seeds".into(),
            "verdict".into(),
        ],
        align: vec!["---:", "---:", "---:", "---:", "---"],
        rows,
        lead: 0,
        same: String::new(),
    }
}
