//! SVG charts (plotters' SVG backend). Every chart has a white background, so it reads
//! the same in a light or a dark page, and units on both axes.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;
use serde::Serialize;

#[derive(Serialize)]
pub struct Chart {
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// One point: x, y, and the band or bar around y (min, max).
#[derive(Clone, Copy)]
struct Pt {
    x: f64,
    y: f64,
    lo: f64,
    hi: f64,
}

/// Series label → points in x order.
type Series = BTreeMap<String, Vec<Pt>>;

fn e<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing a chart: {err:?}")
}

pub fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().collect())
}

pub fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

fn bools(df: &DataFrame, name: &str) -> Result<Vec<bool>> {
    Ok(df.column(name)?.bool()?.iter().map(|v| v.unwrap_or(false)).collect())
}

/// Row labels from columns: "qwen-3b (awq), frames=2"; model and variant first.
pub fn labels(df: &DataFrame, cols: &[&str]) -> Result<Vec<String>> {
    let vals: Vec<(String, Vec<String>)> = cols.iter().map(|c| Ok((c.replace('_', "-"), strs(df, c)?))).collect::<Result<_>>()?;
    Ok((0..df.height())
        .map(|r| {
            let mut parts = Vec::new();
            let get = |n: &str| vals.iter().find(|(c, _)| c == n).map(|(_, v)| v[r].clone());
            if let (Some(m), Some(v)) = (get("model"), get("variant")) {
                parts.push(format!("{m} ({v})"));
            }
            parts.extend(vals.iter().filter(|(c, _)| c != "model" && c != "variant").map(|(c, v)| format!("{c}={}", v[r])));
            parts.join(", ")
        })
        .collect())
}

/// One chart per (batch size, frames, custom axes): per-turn end-to-end latency of
/// each model and variant, the median across seeds with a min–max band.
pub fn per_turn(df: &DataFrame) -> Result<Vec<Chart>> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let group_cols: Vec<&str> =
        names.iter().take_while(|n| *n != "turn").map(String::as_str).filter(|n| *n != "model" && *n != "variant").collect();
    let series_label = labels(df, &["model", "variant"])?;
    let group_label = labels(df, &group_cols)?;
    let turn = f64s(df, "turn")?;
    let (med, lo, hi) = (f64s(df, "e2e_median_ms")?, f64s(df, "e2e_min_ms")?, f64s(df, "e2e_max_ms")?);
    let mut groups: BTreeMap<&str, Series> = BTreeMap::new();
    for r in 0..df.height() {
        if let (Some(t), Some(y), Some(lo), Some(hi)) = (turn[r], med[r], lo[r], hi[r]) {
            groups.entry(&group_label[r]).or_default().entry(series_label[r].clone()).or_default().push(Pt { x: t + 1.0, y, lo, hi });
        }
    }
    // One y axis for every panel, so that they compare by eye.
    let shared = groups.values().flat_map(|s| s.values().flatten()).map(|p| p.hi).fold(1.0, f64::max) * 1.1;
    let mut charts = Vec::new();
    for (i, (label, series)) in groups.iter().enumerate() {
        let title = format!("End-to-end latency per turn, {label}");
        let svg = draw(&title, (800, 440), |root| {
            panel(
                root,
                "",
                "turn",
                "end-to-end latency, median across seeds (ms)",
                series,
                Style::Band,
                Frame { y_max: Some(shared), legend: true },
            )
        })?;
        charts.push(Chart { file: format!("per_turn_{}.svg", i + 1), title, svg });
    }
    Ok(charts)
}

/// The share of each turn's prompt tokens the server read from its cache, one line
/// per curve, median across seeds with a min–max band: what the cache buys as the
/// history grows. None when no server reported cached tokens.
pub fn cached_share(df: &DataFrame) -> Result<Option<Chart>> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let curve: Vec<&str> = names.iter().take_while(|n| *n != "turn").map(String::as_str).collect();
    let label = labels(df, &curve)?;
    let turn = f64s(df, "turn")?;
    let (med, lo, hi) = (f64s(df, "cached_share_median")?, f64s(df, "cached_share_min")?, f64s(df, "cached_share_max")?);
    let mut series = Series::new();
    for r in 0..df.height() {
        if let (Some(t), Some(y), Some(lo), Some(hi)) = (turn[r], med[r], lo[r], hi[r]) {
            series.entry(label[r].clone()).or_default().push(Pt { x: t + 1.0, y: y * 100.0, lo: lo * 100.0, hi: hi * 100.0 });
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let title = "Share of prompt tokens served from the server's cache, per turn".to_string();
    let svg = draw(&title, (800, 440), |root| {
        panel(
            root,
            "",
            "turn",
            "cached prompt tokens, median across seeds (%)",
            &series,
            Style::Band,
            Frame { y_max: Some(100.0), legend: true },
        )
    })?;
    Ok(Some(Chart { file: "cached_share.svg".into(), title, svg }))
}

/// One curve's stacked bars: per turn (from 1), the parts' heights in ms.
type Stacks = Vec<(f64, Vec<f64>)>;

/// Most curves the time-breakdown chart draws, a panel each (the table has them all).
pub const BREAKDOWN_PANELS: usize = 4;

/// Where each turn's time went, one panel per curve (at most [`BREAKDOWN_PANELS`]):
/// per turn, a bar of the median queue, preprocessing, prefill, decode and
/// outside-the-server times stacked (the aggregate's `breakdown_per_turn`). The
/// medians of the parts, stacked, are not the median of the whole; the y axis says
/// so. None when no request joined a span.
pub fn breakdown(df: &DataFrame) -> Result<Option<Chart>> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let curve: Vec<&str> = names.iter().take_while(|n| *n != "turn").map(String::as_str).collect();
    let label = labels(df, &curve)?;
    let turn = f64s(df, "turn")?;
    let parts: Vec<Vec<Option<f64>>> =
        crate::steps::aggregate::breakdown::COMPONENTS.iter().map(|(_, c)| f64s(df, c)).collect::<Result<_>>()?;
    // Curve → (turn, the parts' heights).
    let mut bars: BTreeMap<&str, Stacks> = BTreeMap::new();
    for r in 0..df.height() {
        let Some(t) = turn[r] else { continue };
        // A part the server did not give (or a negative remainder) draws as nothing.
        let heights = parts.iter().map(|p| p[r].filter(|v| v.is_finite()).unwrap_or(0.0).max(0.0)).collect();
        bars.entry(&label[r]).or_default().push((t + 1.0, heights));
    }
    if bars.is_empty() {
        return Ok(None);
    }
    let shown: Vec<(&str, Stacks)> = bars.into_iter().take(BREAKDOWN_PANELS).collect();
    let top = shown.iter().flat_map(|(_, b)| b.iter().map(|(_, h)| h.iter().sum::<f64>())).fold(1.0, f64::max) * 1.1;
    let (_, top) = axis_range(0.0, top, 1.0);
    let legend_names = ["queue", "preprocessing", "prefill", "decode", "outside the server"];
    let title = "Where the time went: each part's median per turn".to_string();
    let svg = draw(&title, (900, 60 + 300 * shown.len() as u32), |root| {
        // The key first, above the panels: a reader of the first panel sees it.
        let (key, plots) = root.split_vertically(40);
        for ((name, turns), area) in shown.iter().zip(plots.split_evenly((shown.len(), 1))) {
            let last = turns.iter().map(|(t, _)| *t).fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(&area)
                .margin(12)
                .caption(*name, ("sans-serif", 15))
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.5..last + 0.5, 0.0..top)
                .map_err(e)?;
            let fmt_int = |x: &f64| format!("{x:.0}");
            chart
                .configure_mesh()
                .x_desc("turn")
                .y_desc("median of each part (ms)")
                .x_labels((last as usize).min(12))
                .x_label_formatter(&fmt_int)
                .label_style(("sans-serif", LABEL_PX))
                .axis_desc_style(("sans-serif", LABEL_PX))
                .light_line_style(RGBColor(236, 236, 236))
                .draw()
                .map_err(e)?;
            for (t, heights) in turns {
                let mut bottom = 0.0;
                for (i, h) in heights.iter().enumerate() {
                    let upper = (bottom + h).min(top);
                    chart
                        .draw_series(std::iter::once(Rectangle::new([(t - 0.35, bottom), (t + 0.35, upper)], colour(i).filled())))
                        .map_err(e)?;
                    bottom = upper;
                }
            }
        }
        let font = ("sans-serif", LABEL_PX).into_font().color(&BLACK);
        let mut x = 80;
        for (i, name) in legend_names.iter().enumerate() {
            key.draw(&Rectangle::new([(x, 12), (x + 14, 26)], colour(i).filled())).map_err(e)?;
            key.draw(&Text::new(name.to_string(), (x + 20, 12), font.clone())).map_err(e)?;
            x += 40 + name.len() as i32 * 8;
        }
        Ok(())
    })?;
    Ok(Some(Chart { file: "breakdown.svg".into(), title, svg }))
}

/// KV-cache use and running and waiting requests over one cell's measurement, from
/// the server's own `/metrics` (the aggregate's `server_series`).
pub fn server_over_time(series: &DataFrame, cell: &[String]) -> Result<Chart> {
    let label = labels(series, &cell.iter().map(String::as_str).collect::<Vec<_>>())?.into_iter().next().unwrap_or_default();
    let t = f64s(series, "t_s")?;
    let line = |name: &str, scale: f64| -> Result<Vec<Pt>> {
        let v = f64s(series, name)?;
        Ok((0..series.height()).filter_map(|r| Some((t[r]?, v[r]? * scale))).map(|(x, y)| Pt { x, y, lo: y, hi: y }).collect())
    };
    let kv: Series = [("KV cache used".to_string(), line("kv_cache_usage", 100.0)?)].into_iter().collect();
    let queues: Series =
        [("running".to_string(), line("running", 1.0)?), ("waiting".to_string(), line("waiting", 1.0)?)].into_iter().collect();
    let title = format!("The server during the cell with the most requests ({label}), from its /metrics");
    let svg = draw(&title, (1000, 440), |root| {
        let halves = root.split_evenly((1, 2));
        panel(&halves[0], "KV cache", "time since the cell's first scrape (s)", "KV cache used (%)", &kv, Style::Line, Frame::OWN)?;
        panel(&halves[1], "requests", "time since the cell's first scrape (s)", "requests", &queues, Style::Line, Frame::OWN)
    })?;
    Ok(Chart { file: "server.svg".into(), title, svg })
}

/// TTFT and end-to-end p50 against one load axis (`batch_size`, `frames`), one line per
/// curve (every other axis), median across seeds with min–max bars. None when the
/// axis has fewer than two values.
pub fn sweep(points: &DataFrame, axis: &str, group: &[String], file: &str) -> Result<Option<Chart>> {
    let x = f64s(points, axis)?;
    let mut distinct: Vec<u64> = x.iter().flatten().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Ok(None);
    }
    let others: Vec<&str> = group.iter().map(String::as_str).filter(|c| *c != axis).collect();
    let label = labels(points, &others)?;
    let collect = |metric: &str| -> Result<Series> {
        let (y, lo, hi) = (f64s(points, metric)?, f64s(points, &format!("{metric}_min"))?, f64s(points, &format!("{metric}_max"))?);
        let mut s = Series::new();
        for r in 0..points.height() {
            if let (Some(x), Some(y), Some(lo), Some(hi)) = (x[r], y[r], lo[r], hi[r]) {
                s.entry(label[r].clone()).or_default().push(Pt { x, y, lo, hi });
            }
        }
        for v in s.values_mut() {
            v.sort_by(|a, b| a.x.total_cmp(&b.x));
        }
        Ok(s)
    };
    let (ttft, e2e) = (collect("ttft_p50_ms")?, collect("e2e_p50_ms")?);
    let name = axis.replace('_', " ");
    let title = format!("Latency against {name} (p50, median across seeds; bars: min–max)");
    let svg = draw(&title, (1000, 440), |root| {
        let halves = root.split_evenly((1, 2));
        panel(&halves[0], "TTFT", &name, "TTFT p50 (ms)", &ttft, Style::Bars, Frame::NO_LEGEND)?;
        panel(&halves[1], "end-to-end", &name, "end-to-end p50 (ms)", &e2e, Style::Bars, Frame::OWN)
    })?;
    Ok(Some(Chart { file: file.into(), title, svg }))
}

/// A search's probes: per curve, the percent of turns within the SLO (or the goodput)
/// at each value probed (median across seeds; bars: min–max); the SLO's threshold as a
/// flat line.
pub fn search(s: &crate::search::Summary, file: &str) -> Result<Chart> {
    let mut series = Series::new();
    for c in &s.curves {
        let pts = series.entry(c.curve.clone()).or_default();
        for p in &c.probes {
            let (y, lo, hi) = p.spread();
            pts.push(Pt { x: p.value, y, lo, hi });
        }
        pts.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    let name = s.axis.replace('-', " ");
    let y_desc = match s.objective {
        crate::config::Objective::Slo => {
            let (lo, hi) = series.values().flatten().fold((s.min, s.min), |(lo, hi), p| (lo.min(p.x), hi.max(p.x)));
            let t = s.attainment_pct;
            series.insert(format!("SLO: {t}% of turns"), vec![Pt { x: lo, y: t, lo: t, hi: t }, Pt { x: hi, y: t, lo: t, hi: t }]);
            "turns within the SLO (%)"
        }
        crate::config::Objective::Goodput => "goodput (requests/s within the SLO)",
    };
    let title = format!("Search: {y_desc} against {name}, each probe (median across seeds; bars: min–max)");
    let svg = draw(&title, (1000, 440), |root| panel(root, "", &name, y_desc, &series, Style::Bars, Frame::OWN))?;
    Ok(Chart { file: file.into(), title, svg })
}

/// Output throughput against end-to-end p50 latency, one line per curve along its
/// batch sizes; Pareto-optimal points filled, the best point under the SLO ringed.
pub fn throughput_latency(points: &DataFrame, group: &[String], load: &str) -> Result<Option<Chart>> {
    if points.height() == 0 {
        return Ok(None);
    }
    let others: Vec<&str> = group.iter().map(String::as_str).filter(|c| *c != load).collect();
    let label = labels(points, &others)?;
    let (lat, tput, x) = (f64s(points, "e2e_p50_ms")?, f64s(points, "output_tok_per_s")?, f64s(points, load)?);
    let (pareto, best) = (bools(points, "pareto")?, bools(points, "best")?);
    // label → (load, latency, throughput, on the front, best)
    type Points = BTreeMap<String, Vec<(f64, f64, f64, bool, bool)>>;
    let mut s = Points::new();
    for r in 0..points.height() {
        // A throughput over a zero span is infinite: not a point anyone can draw.
        if let (Some(l), Some(t), Some(b)) = (lat[r], tput[r], x[r])
            && [l, t, b].iter().all(|v| v.is_finite())
        {
            s.entry(label[r].clone()).or_default().push((b, l, t, pareto[r], best[r]));
        }
    }
    for v in s.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let (_, max_x) = axis_range(0.0, s.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1, 1.0);
    let (_, max_y) = axis_range(0.0, s.values().flatten().map(|p| p.2).fold(1.0, f64::max) * 1.15, 1.0);
    // Beyond the axes' limit, on their edge (as `panel` draws).
    for p in s.values_mut().flatten() {
        (p.1, p.2) = (p.1.clamp(0.0, max_x), p.2.clamp(0.0, max_y));
    }
    let title = format!("Throughput against latency along {} (filled: Pareto front; ringed: best under the SLO)", load.replace('_', " "));
    // The same looks and legend as the other charts: a series per label.
    let as_series: Series = s.keys().map(|k| (k.clone(), Vec::new())).collect();
    let looks = looks(&as_series);
    let svg = draw(&title, (1000, 500), |root| {
        let (root, legend_area) = root.split_horizontally(1000u32.saturating_sub(legend_px(s.keys(), 1000)));
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("end-to-end latency p50 (ms)")
            .y_desc("output throughput (tokens/s)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", LABEL_PX))
            .axis_desc_style(("sans-serif", LABEL_PX))
            .light_line_style(RGBColor(236, 236, 236))
            .draw()
            .map_err(e)?;
        for (pts, look) in s.values().zip(&looks) {
            let colour = look.colour;
            line(&mut chart, pts.iter().map(|p| (p.1, p.2)), look)?;
            for &(b, l, t, on_front, is_best) in pts {
                let style = if on_front { colour.filled() } else { colour.stroke_width(2) };
                chart.draw_series(std::iter::once(Circle::new((l, t), 5, style))).map_err(e)?;
                if is_best {
                    chart.draw_series(std::iter::once(Circle::new((l, t), 10, BLACK.stroke_width(2)))).map_err(e)?;
                }
                chart
                    .draw_series(std::iter::once(Text::new(format!("{b}"), (l, t), ("sans-serif", 12).into_font().color(&BLACK))))
                    .map_err(e)?;
            }
        }
        legend(&legend_area, &as_series, &looks)
    })?;
    Ok(Some(Chart { file: "throughput_latency.svg".into(), title, svg }))
}

/// Speed against quality: one point per curve at its end-to-end p50 (`points`) and its
/// mean score (`quality`, by `agreement` where there is one, else the first method),
/// the score's 95% interval as a bar; filled points are on the Pareto front (no other
/// curve is both faster and better). None when no curve has both figures.
pub fn speed_quality(points: &DataFrame, quality: &DataFrame, group: &[String]) -> Result<Option<Chart>> {
    let methods = strs(quality, "method")?;
    let Some(method) = methods.iter().find(|m| *m == "agreement").or(methods.first()).cloned() else { return Ok(None) };
    let cols: Vec<&str> = group.iter().map(String::as_str).collect();
    let key = |df: &DataFrame| -> Result<Vec<String>> {
        let columns: Vec<Vec<String>> = cols.iter().map(|c| strs(df, c)).collect::<Result<_>>()?;
        Ok((0..df.height()).map(|r| columns.iter().map(|c| c[r].as_str()).collect::<Vec<_>>().join("\u{1f}")).collect())
    };
    let e2e: BTreeMap<String, f64> =
        key(points)?.into_iter().zip(f64s(points, "e2e_p50_ms")?).filter_map(|(k, v)| Some((k, v.filter(|v| v.is_finite())?))).collect();
    let (label, at) = (labels(quality, &cols)?, key(quality)?);
    let (mean, lo, hi) = (f64s(quality, "mean")?, f64s(quality, "mean_lo")?, f64s(quality, "mean_hi")?);
    // label → (latency, score, low, high)
    let mut pts: Vec<(String, f64, f64, f64, f64)> = Vec::new();
    for r in 0..quality.height() {
        if methods[r] != method {
            continue;
        }
        if let (Some(&l), Some(m)) = (e2e.get(&at[r]), mean[r].filter(|v| v.is_finite())) {
            pts.push((label[r].clone(), l, m, lo[r].unwrap_or(m), hi[r].unwrap_or(m)));
        }
    }
    if pts.is_empty() {
        return Ok(None);
    }
    let scored: Vec<Option<(f64, f64)>> = pts.iter().map(|p| Some((p.2, p.1))).collect();
    let (front, _) = crate::stats::pareto::front_and_best(&scored, &[]);
    let (_, max_x) = axis_range(0.0, pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1, 1.0);
    for p in &mut pts {
        p.1 = p.1.clamp(0.0, max_x);
        (p.2, p.3, p.4) = (p.2.clamp(0.0, 1.0), p.3.clamp(0.0, 1.0), p.4.clamp(0.0, 1.0));
    }
    let title = format!("Speed against quality ({method}; bars: 95% interval; filled: no other curve is both faster and better)");
    let as_series: Series = pts.iter().map(|p| (p.0.clone(), Vec::new())).collect();
    // One colour per point, solid: a point has no line for a dash to tell it apart.
    let looks: Vec<Look> = (0..as_series.len()).map(|i| Look { colour: colour(i), dash: 0 }).collect();
    let svg = draw(&title, (1000, 500), |root| {
        let (root, legend_area) = root.split_horizontally(1000u32.saturating_sub(legend_px(as_series.keys(), 1000)));
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..max_x, -0.05..1.05)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("end-to-end latency p50 (ms)")
            .y_desc(format!("{method} (mean score)"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(("sans-serif", LABEL_PX))
            .axis_desc_style(("sans-serif", LABEL_PX))
            .light_line_style(RGBColor(236, 236, 236))
            .draw()
            .map_err(e)?;
        for ((name, _), look) in as_series.iter().zip(&looks) {
            for (k, p) in pts.iter().enumerate().filter(|(_, p)| &p.0 == name) {
                let colour = look.colour;
                chart.draw_series(std::iter::once(PathElement::new(vec![(p.1, p.3), (p.1, p.4)], colour.stroke_width(2)))).map_err(e)?;
                let style = if front[k] { colour.filled() } else { colour.stroke_width(2) };
                chart.draw_series(std::iter::once(Circle::new((p.1, p.2), 6, style))).map_err(e)?;
            }
        }
        legend(&legend_area, &as_series, &looks)
    })?;
    Ok(Some(Chart { file: "speed_quality.svg".into(), title, svg }))
}

/// GPU power and temperature over each cell's measurement, one line per cell and GPU
/// (the first `limit` cells).
pub fn telemetry(series: &DataFrame, cell: &[String], limit: usize) -> Result<Chart> {
    let label = labels(series, &cell.iter().map(String::as_str).collect::<Vec<_>>())?;
    let gpu = strs(series, "gpu")?;
    let (t, power, temp) = (f64s(series, "t_s")?, f64s(series, "power_w")?, f64s(series, "temperature_c")?);
    let mut order: Vec<&String> = Vec::new();
    for l in &label {
        if !order.contains(&l) {
            order.push(l);
        }
    }
    let shown: Vec<&String> = order.iter().take(limit).copied().collect();
    let (mut p, mut c) = (Series::new(), Series::new());
    for r in 0..series.height() {
        if !shown.contains(&&label[r]) {
            continue;
        }
        let name = format!("{}, gpu {}", label[r], gpu[r]);
        if let (Some(x), Some(y)) = (t[r], power[r]) {
            p.entry(name.clone()).or_default().push(Pt { x, y, lo: y, hi: y });
        }
        if let (Some(x), Some(y)) = (t[r], temp[r]) {
            c.entry(name).or_default().push(Pt { x, y, lo: y, hi: y });
        }
    }
    let more = if order.len() > limit { format!(", the first {limit} of {} cells", order.len()) } else { String::new() };
    let title = format!("GPU power and temperature during each measurement{more}");
    let svg = draw(&title, (1000, 460), |root| {
        let halves = root.split_evenly((1, 2));
        panel(&halves[0], "power", "time since the cell's first sample (s)", "board power (W)", &p, Style::Line, Frame::NO_LEGEND)?;
        panel(&halves[1], "temperature", "time since the cell's first sample (s)", "GPU temperature (°C)", &c, Style::Line, Frame::OWN)
    })?;
    Ok(Chart { file: "telemetry.svg".into(), title, svg })
}

/// Okabe and Ito's colours, which readers with any common colour-vision deficiency
/// tell apart (their yellow, too light on white, left out), then grey and black.
fn colour(i: usize) -> RGBAColor {
    const OKABE_ITO: [(u8, u8, u8); 8] =
        [(0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0), (86, 180, 233), (204, 121, 167), (120, 120, 120), (0, 0, 0)];
    let (r, g, b) = OKABE_ITO[i % OKABE_ITO.len()];
    RGBColor(r, g, b).to_rgba()
}

/// Axis and legend text: at least 12 px at the chart's own size.
const LABEL_PX: u32 = 13;

#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// Line with a shaded min–max band.
    Band,
    /// Line with markers and min–max bars.
    Bars,
    Line,
}

fn draw(title: &str, size: (u32, u32), body: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let root = root.titled(title, ("sans-serif", 17)).map_err(e)?;
        body(&root)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// One plot of `series`, its legend beside it; `frame.y_max`: the top of the y axis,
/// shared between panels that are compared by eye.
fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &Series,
    style: Style,
    frame: Frame,
) -> Result<()> {
    let Frame { y_max, legend: with_legend } = frame;
    let pts = series.values().flatten();
    let (min_x, max_x) = pts.clone().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let (min_x, max_x) = if min_x > max_x { (0.0, 1.0) } else { axis_range(min_x, max_x, 1.0) };
    let max_y = y_max.unwrap_or_else(|| pts.map(|p| p.hi).fold(1.0, f64::max) * 1.1);
    let (_, max_y) = axis_range(0.0, max_y, 1.0);
    // The legend goes beside the plot, where it hides nothing.
    let looks = looks(series);
    let width = area.dim_in_pixel().0;
    let beside = if with_legend { legend_px(series.keys(), width) } else { 0 };
    let (area, legend_area) = area.split_horizontally(width.saturating_sub(beside));
    let mut builder = ChartBuilder::on(&area);
    builder.margin(12).x_label_area_size(40).y_label_area_size(64);
    if !caption.is_empty() {
        builder.caption(caption, ("sans-serif", 15));
    }
    // A little room at both ends, so that no marker sits on an axis.
    let pad = (max_x - min_x) * 0.04;
    let mut chart = builder.build_cartesian_2d(min_x - pad..max_x + pad, 0.0..max_y).map_err(e)?;
    // What lies outside the axes (beyond AXIS_LIMIT) is drawn on their edge: a
    // point mapped far off the canvas overflows the backend's pixel arithmetic.
    let (x_range, y_range) = ((min_x - pad, max_x + pad), (0.0, max_y));
    let on_axes = |p: &Pt| Pt {
        x: p.x.clamp(x_range.0, x_range.1),
        y: p.y.clamp(y_range.0, y_range.1),
        lo: p.lo.clamp(y_range.0, y_range.1),
        hi: p.hi.clamp(y_range.0, y_range.1),
    };
    let finite = |p: &&Pt| [p.x, p.y, p.lo, p.hi].iter().all(|v| v.is_finite());
    let clamped: Series = series.iter().map(|(k, pts)| (k.clone(), pts.iter().filter(finite).map(on_axes).collect())).collect();
    let series = &clamped;
    let integer_x = series.values().flatten().all(|p| p.x.fract() == 0.0);
    let mut mesh = chart.configure_mesh();
    // Small ranges (a few requests in flight) need a decimal, or ticks repeat.
    let fine = max_y < 8.0;
    let fmt_y = move |y: &f64| if fine { format!("{y:.1}") } else { format!("{y:.0}") };
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&fmt_y)
        .label_style(("sans-serif", LABEL_PX))
        .axis_desc_style(("sans-serif", LABEL_PX))
        .light_line_style(RGBColor(236, 236, 236));
    let fmt_int = |x: &f64| format!("{x:.0}");
    let fmt_real = |x: &f64| format!("{x:.1}");
    if integer_x {
        mesh.x_labels(((max_x - min_x) as usize).saturating_add(1).min(12)).x_label_formatter(&fmt_int);
    } else {
        mesh.x_label_formatter(&fmt_real);
    }
    mesh.draw().map_err(e)?;
    for (points, look) in series.values().zip(&looks) {
        let colour = look.colour;
        match style {
            Style::Band => {
                let mut band: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.lo)).collect();
                band.extend(points.iter().rev().map(|p| (p.x, p.hi)));
                chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.2).filled()))).map_err(e)?;
            }
            Style::Bars => {
                chart
                    .draw_series(points.iter().map(|p| PathElement::new(vec![(p.x, p.lo), (p.x, p.hi)], colour.stroke_width(2))))
                    .map_err(e)?;
                chart.draw_series(points.iter().map(|p| Circle::new((p.x, p.y), 4, colour.filled()))).map_err(e)?;
            }
            Style::Line => {}
        }
        line(&mut chart, points.iter().map(|p| (p.x, p.y)), look)?;
    }
    if with_legend { legend(&legend_area, series, &looks) } else { Ok(()) }
}

/// The largest magnitude an axis shows; values beyond it sit on its edge. Far past
/// any latency, count or share, and small enough that a width and a margin of it stay
/// finite.
const AXIS_LIMIT: f64 = 1e300;

/// The range an axis shows for values from `lo` to `hi`: finite, at least `min_width`
/// wide, and wide enough for its magnitude that a tick a hundredth of the way along
/// is a different number (the tick loop steps by such a share, and a step lost in
/// rounding, as 1 is against 1e308, would never end it). Non-finite bounds sit on
/// the edge ([`AXIS_LIMIT`]), NaN at 0.
fn axis_range(lo: f64, hi: f64, min_width: f64) -> (f64, f64) {
    let clamp = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(-AXIS_LIMIT, AXIS_LIMIT) };
    let (lo, hi) = (clamp(lo).min(clamp(hi)), clamp(lo).max(clamp(hi)));
    let width = (hi - lo).max(min_width).max(lo.abs().max(hi.abs()) * 1e-6);
    if hi - lo >= width { (lo, hi) } else { (lo, lo + width) }
}

/// A panel's y axis top (none: its own) and whether it carries the legend (of two
/// panels side by side, only the right one does).
#[derive(Clone, Copy)]
struct Frame {
    y_max: Option<f64>,
    legend: bool,
}

impl Frame {
    const OWN: Frame = Frame { y_max: None, legend: true };
    const NO_LEGEND: Frame = Frame { y_max: None, legend: false };
}

/// How a series is drawn: one colour per model, one dash per variant (solid for the
/// first, `base` as a rule); series that are not "model (variant)" get a colour each.
struct Look {
    colour: RGBAColor,
    dash: u32,
}

fn looks(series: &Series) -> Vec<Look> {
    // "qwen-3b (awq), frames=2" → ("qwen-3b, frames=2", "awq"): the colour follows all
    // but the variant, so a variant is paired with its base by colour.
    let split = |name: &str| -> Option<(String, String)> {
        let (model, rest) = name.split_once(" (")?;
        let (variant, tail) = rest.split_once(')')?;
        Some((format!("{model}{tail}"), variant.to_string()))
    };
    let parts: Vec<Option<(String, String)>> = series.keys().map(|k| split(k)).collect();
    if parts.iter().any(Option::is_none) {
        return (0..series.len()).map(|i| Look { colour: colour(i), dash: 0 }).collect();
    }
    let (mut keys, mut variants): (Vec<String>, Vec<String>) = (Vec::new(), vec!["base".to_string()]);
    for (k, v) in parts.iter().flatten() {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
        if !variants.contains(v) {
            variants.push(v.clone());
        }
    }
    parts
        .iter()
        .flatten()
        .map(|(k, v)| Look {
            colour: colour(keys.iter().position(|x| x == k).unwrap_or(0)),
            dash: variants.iter().position(|x| x == v).unwrap_or(0) as u32,
        })
        .collect()
}

type Plot<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A series' line, solid or dashed as its look says.
fn line<I>(chart: &mut Plot<'_, '_>, points: I, look: &Look) -> Result<()>
where
    I: Iterator<Item = (f64, f64)> + Clone,
{
    let stroke = look.colour.stroke_width(2);
    match look.dash {
        0 => chart.draw_series(LineSeries::new(points, stroke)).map(|_| ()),
        d => chart.draw_series(DashedLineSeries::new(points, 4 + 3 * d, 4, stroke)).map(|_| ()),
    }
    .map_err(e)
}

/// How wide a legend of these names is, at most half of `width`.
fn legend_px<'a>(names: impl Iterator<Item = &'a String>, width: u32) -> u32 {
    let widest = names.map(|k| k.chars().count()).max().unwrap_or(0) as u32;
    (widest * LABEL_PX * 6 / 10 + 48).min(width / 2)
}

/// The series' names, each beside a stroke of its line, in a column.
fn legend(area: &DrawingArea<SVGBackend, Shift>, series: &Series, looks: &[Look]) -> Result<()> {
    let font = ("sans-serif", LABEL_PX).into_font().color(&BLACK);
    for (i, (name, look)) in series.keys().zip(looks).enumerate() {
        let y = 24 + i as i32 * (LABEL_PX as i32 + 8);
        let stroke = look.colour.stroke_width(2);
        if look.dash == 0 {
            area.draw(&PathElement::new(vec![(4, y), (30, y)], stroke)).map_err(e)?;
        } else {
            for x in (4..30).step_by((4 + 3 * look.dash + 4) as usize) {
                area.draw(&PathElement::new(vec![(x, y), ((x + 4 + 3 * look.dash as i32).min(30), y)], stroke)).map_err(e)?;
            }
        }
        area.draw(&Text::new(name.clone(), (36, y - LABEL_PX as i32 / 2), font.clone())).map_err(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any f64 a server or a file can produce, the edges first.
    fn any_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(1e308),
            Just(-1e308),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(f64::INFINITY),
            Just(f64::NAN),
            -1e6f64..1e6,
            proptest::num::f64::ANY,
        ]
    }

    proptest! {
        #[test]
        fn an_axis_range_is_finite_wide_and_resolvable(a in any_value(), b in any_value(), w in 0.0f64..10.0) {
            let (lo, hi) = axis_range(a, b, w);
            prop_assert!(lo.is_finite() && hi.is_finite(), "{lo} {hi}");
            prop_assert!(hi - lo >= w && (hi - lo).is_finite());
            // A tick a hundredth of the way along is another number, and so is the
            // margin a panel adds.
            prop_assert!(lo + (hi - lo) / 100.0 > lo && hi - (hi - lo) / 100.0 < hi);
            prop_assert!((hi + (hi - lo) * 0.04).is_finite());
        }

        #[test]
        fn a_panel_draws_whatever_the_values(xs in proptest::collection::vec((any_value(), any_value()), 1..4)) {
            let series: Series =
                [("s".to_string(), xs.iter().map(|&(x, y)| Pt { x, y, lo: y, hi: y }).collect())].into_iter().collect();
            for style in [Style::Band, Style::Bars, Style::Line] {
                let svg = draw("t", (400, 300), |root| panel(root, "", "x", "y", &series, style, Frame::OWN));
                prop_assert!(svg.is_ok_and(|s| s.contains("<svg")));
            }
        }
    }

    #[test]
    fn a_throughput_over_no_time_does_not_hang_the_tradeoff_chart() {
        // An import whose request starts and ends at one instant: tokens / 0 s.
        let df = df!(
            "model" => ["m", "m", "m"],
            "batch_size" => [1.0, 2.0, 4.0],
            "e2e_p50_ms" => [100.0, 1e308, 120.0],
            "output_tok_per_s" => [f64::INFINITY, 50.0, 1e308],
            "pareto" => [true, false, true],
            "best" => [false, false, true],
        )
        .unwrap();
        let chart = throughput_latency(&df, &["model".to_string(), "batch_size".to_string()], "batch_size").unwrap().unwrap();
        assert!(chart.svg.contains("<svg"));
    }

    #[test]
    fn huge_values_from_a_server_draw_in_a_chart() {
        // One gauge of 1e308 (as a server sent it) hung every report: the tick loop
        // stepped by less than the value's precision.
        let series: Series =
            [("running".to_string(), vec![Pt { x: 0.0, y: 1.0, lo: 1.0, hi: 1.0 }, Pt { x: 1.0, y: 1e308, lo: 1e308, hi: 1e308 }])]
                .into_iter()
                .collect();
        let svg = draw("t", (400, 300), |root| panel(root, "", "x", "y", &series, Style::Line, Frame::OWN)).unwrap();
        assert!(svg.contains("<svg"));
        let at_one: Series = [("x".to_string(), vec![Pt { x: 1e308, y: 1.0, lo: 1.0, hi: 1.0 }])].into_iter().collect();
        assert!(draw("t", (400, 300), |root| panel(root, "", "x", "y", &at_one, Style::Bars, Frame::OWN)).is_ok());
    }
}
