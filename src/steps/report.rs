//! The report step: aggregate tables → Markdown and HTML (minijinja) with SVG charts.
//!
//! Templates are embedded in the binary; `[report] templates = "dir"` overrides any of
//! them by file name, and their content enters the step key, so editing a template
//! re-renders the report and nothing else. Output is deterministic: no clock, no
//! paths, no random ids, so an unchanged experiment gives byte-identical files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{Environment, Value as JValue};
use plotters::prelude::*;
use polars::prelude::*;
use serde::Serialize;

use crate::config::Experiment;
use crate::export;
use crate::plan::Plan;

/// Bump when rendered files would change.
pub const VERSION: u32 = 1;

pub const TEMPLATES: [(&str, &str); 2] =
    [("README.md.j2", include_str!("../../templates/README.md.j2")), ("index.html.j2", include_str!("../../templates/index.html.j2"))];

/// Each template's source: the user's file where one exists, else the embedded one.
fn template_sources(exp: &Experiment) -> Vec<(String, String)> {
    TEMPLATES
        .iter()
        .map(|(name, embedded)| {
            let user = exp.report.templates.as_ref().and_then(|d| std::fs::read_to_string(d.join(name)).ok());
            (name.to_string(), user.unwrap_or_else(|| embedded.to_string()))
        })
        .collect()
}

/// Template name → blake3 of its source (for the step key).
pub fn template_digests(exp: &Experiment) -> BTreeMap<String, String> {
    template_sources(exp).into_iter().map(|(n, s)| (n, blake3::hash(s.as_bytes()).to_hex().to_string())).collect()
}

#[derive(Serialize)]
struct Chart {
    file: String,
    title: String,
    svg: String,
}

pub fn run(plan: &Plan, aggregate: &Path, out: &Path) -> Result<()> {
    let summary = export::read_parquet(&aggregate.join("summary.parquet"))?;
    let per_turn = export::read_parquet(&aggregate.join("per_turn.parquet"))?;
    for name in ["summary", "per_turn"] {
        for ext in ["csv", "parquet"] {
            std::fs::copy(aggregate.join(format!("{name}.{ext}")), out.join(format!("{name}.{ext}")))?;
        }
    }
    let charts = per_turn_charts(&per_turn)?;
    for c in &charts {
        std::fs::write(out.join(&c.file), &c.svg)?;
    }
    let exp = &plan.experiment;
    let models: Vec<JValue> = exp
        .models
        .values()
        .filter(|m| exp.matrix.models.contains(&m.name))
        .map(|m| {
            let variants: Vec<JValue> = m.variants.iter().filter(|(v, _)| exp.matrix.variants.contains(v)).map(|(v, var)| minijinja::context! { name => v.clone(), model => var.model.clone(), quantization => var.quantization.clone(), dtype => var.dtype.clone() }).collect();
            minijinja::context! { name => m.name.clone(), backend => m.backend.name(), served_name => m.served_name.clone(), variants => variants }
        })
        .collect();
    let servers: Vec<JValue> = plan
        .servers
        .iter()
        .map(|s| minijinja::context! { id => s.id.clone(), config => JValue::from(minijinja::value::Serde(&s.config)) })
        .collect();
    let ctx = minijinja::context! {
        title => exp.report.title.clone(),
        name => exp.name.clone(),
        tool => format!("pipeline {}", env!("CARGO_PKG_VERSION")),
        hardware => plan.hardware.clone(),
        models => models,
        servers => servers,
        cells => plan.cells.len(),
        seeds => exp.matrix.seeds.clone(),
        batch_sizes => exp.matrix.batch_sizes.clone(),
        frames => exp.matrix.frames.clone(),
        turns => exp.workload.turns,
        resolution => format!("{}x{}", exp.workload.width, exp.workload.height),
        max_tokens => exp.workload.max_tokens,
        temperature => exp.workload.temperature,
        warmup => exp.workload.warmup_requests,
        summary => table(&summary)?,
        per_turn => table(&per_turn)?,
        charts => JValue::from(minijinja::value::Serde(&charts)),
    };
    let mut env = Environment::new();
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build()?);
    for (name, source) in template_sources(exp) {
        env.add_template_owned(name.clone(), source).with_context(|| format!("template `{name}`"))?;
    }
    for (name, _) in TEMPLATES {
        let rendered = env.get_template(name)?.render(&ctx).with_context(|| format!("rendering `{name}`"))?;
        std::fs::write(out.join(name.trim_end_matches(".j2")), rendered)?;
    }
    Ok(())
}

/// A table as column names and rows of display strings (numbers to 2 decimals).
fn table(df: &DataFrame) -> Result<JValue> {
    let columns: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = Vec::with_capacity(df.height());
    for r in 0..df.height() {
        let mut row = Vec::with_capacity(columns.len());
        for c in df.columns() {
            row.push(match c.get(r)? {
                AnyValue::Null => "–".to_string(),
                AnyValue::Float64(x) => format!("{x:.2}"),
                AnyValue::Float32(x) => format!("{x:.2}"),
                AnyValue::String(s) => s.to_string(),
                other => other.to_string().trim_matches('"').to_string(),
            });
        }
        rows.push(row);
    }
    Ok(minijinja::context! { columns => columns, rows => rows })
}

fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    (0..c.len()).map(|i| Ok(c.get(i)?.extract::<f64>())).collect()
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    (0..c.len()).map(|i| Ok(c.get(i)?.get_str().unwrap_or_default().to_string())).collect()
}

/// One chart per (batch size, frames, custom axes): per-turn end-to-end latency of
/// each model and variant, the median across seeds with a min–max band.
fn per_turn_charts(df: &DataFrame) -> Result<Vec<Chart>> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let group_cols: Vec<&String> = names.iter().take_while(|n| *n != "turn").filter(|n| *n != "model" && *n != "variant").collect();
    let (model, variant) = (strs(df, "model")?, strs(df, "variant")?);
    let turn = f64s(df, "turn")?;
    let (med, lo, hi) = (f64s(df, "e2e_median_ms")?, f64s(df, "e2e_min_ms")?, f64s(df, "e2e_max_ms")?);
    let group_vals: Vec<Vec<String>> = group_cols.iter().map(|c| strs(df, c)).collect::<Result<_>>()?;
    // group label → series label → points (turn, median, min, max)
    type Series = BTreeMap<String, Vec<(f64, f64, f64, f64)>>;
    let mut groups: BTreeMap<String, Series> = BTreeMap::new();
    for r in 0..df.height() {
        let label =
            group_cols.iter().zip(&group_vals).map(|(c, v)| format!("{}={}", c.replace('_', "-"), v[r])).collect::<Vec<_>>().join(", ");
        if let (Some(t), Some(m), Some(a), Some(b)) = (turn[r], med[r], lo[r], hi[r]) {
            groups.entry(label).or_default().entry(format!("{} ({})", model[r], variant[r])).or_default().push((t + 1.0, m, a, b));
        }
    }
    let mut charts = Vec::new();
    for (i, (label, series)) in groups.iter().enumerate() {
        let title = format!("End-to-end latency per turn, {label}");
        let svg = draw_curves(&title, series)?;
        charts.push(Chart { file: format!("per_turn_{}.svg", i + 1), title, svg });
    }
    Ok(charts)
}

fn draw_curves(title: &str, series: &BTreeMap<String, Vec<(f64, f64, f64, f64)>>) -> Result<String> {
    let mut svg = String::new();
    {
        let pts = series.values().flatten();
        let max_t = pts.clone().map(|p| p.0).fold(1.0, f64::max);
        let max_y = pts.map(|p| p.3).fold(1.0, f64::max) * 1.1;
        let root = SVGBackend::with_string(&mut svg, (800, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(1.0..max_t.max(2.0), 0.0..max_y)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("turn")
            .y_desc("end-to-end latency (ms)")
            .x_labels(max_t as usize)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(RGBColor(236, 236, 236))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let mut band: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
            band.extend(points.iter().rev().map(|p| (p.0, p.3)));
            chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.2).filled()))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), colour.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(svg)
}
