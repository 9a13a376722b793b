//! The report step: aggregate tables → Markdown and HTML (minijinja) with SVG charts.
//!
//! Templates are embedded in the binary (`pipeline templates DIR` copies them out);
//! `[report] templates = "dir"` overrides any of them by file name, and their content
//! enters the step key, so editing a template re-renders the report and nothing else.
//! HTML is auto-escaped: model names and answers are untrusted text. Output is
//! deterministic (no clock, no absolute paths, no random ids), so an unchanged
//! experiment gives byte-identical files.

pub mod baseline;
mod breakdown;
mod charts;
mod glance;
mod markdown;
mod params;
mod search;
mod server;
mod table;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{Environment, Value as JValue};
use polars::prelude::*;

use crate::export;
use crate::stats::bootstrap::RESAMPLES;
use charts::{f64s, strs};
pub use params::{Params, ShownServer};
use table::{Digits, Table, display, varying};

/// Bump when rendered files would change.
/// 3: every value in the Markdown goes through the `md`/`mdcode` filters.
/// 4: the Server section, cache isolation in the methodology, the cached share per turn.
/// 5: results at a glance first; `comparison.json` beside a baseline comparison.
/// 6: per-curve tables first, per-seed rows folded; three significant figures; contents.
/// 7: the methodology names the conversations file a workload replays.
/// 8: "Where the time went", from the server's spans.
/// 9: the breakdown chart's key above its panels; "median queue time"; "No spans arrived".
pub const VERSION: u32 = 9;

pub const TEMPLATES: [(&str, &str); 2] = [
    ("README.md.j2", include_str!("../../../templates/README.md.j2")),
    ("index.html.j2", include_str!("../../../templates/index.html.j2")),
];

/// Cells whose GPU samples the telemetry chart draws.
const TELEMETRY_CELLS: usize = 8;
/// Metrics of `seeds.csv` the report's table shows (the file has them all).
const SEEDS_SHOWN: [&str; 3] = ["ttft_mean_ms", "e2e_mean_ms", "output_tok_per_s"];
/// Answers shown per model and variant.
const ANSWER_TURNS: u32 = 3;

/// Where the experiment file came from, for the methodology: its git commit when it
/// is committed (and whether it has changed since).
pub fn provenance(file: Option<&Path>, display: &str) -> String {
    let Some(file) = file else { return format!("the demo embedded in pipeline {}", env!("CARGO_PKG_VERSION")) };
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = file.file_name().unwrap_or_default();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .arg("--")
            .arg(name)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["log", "-1", "--format=%H"]).filter(|h| !h.is_empty()) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            format!("{display} at git commit {}{}", &hash[..12.min(hash.len())], if dirty { ", with uncommitted changes" } else { "" })
        }
        None => format!("{display} (not committed to git)"),
    }
}

/// The aggregate's tables, as the report reads them.
struct Tables {
    summary: DataFrame,
    per_turn: DataFrame,
    seeds: DataFrame,
    points: DataFrame,
    errors: DataFrame,
    telemetry: Option<DataFrame>,
    /// The server's view per cell, and over time in the busiest cell.
    server: DataFrame,
    server_series: Option<DataFrame>,
    /// Where the time went, per cell and per curve and turn (the server's spans).
    breakdown: DataFrame,
    breakdown_per_turn: DataFrame,
    /// Each curve's scores per method (`[quality]`).
    quality: Option<DataFrame>,
    /// What the judge cost (`judge.json`, with a `[quality] judge`).
    judge: Option<JValue>,
    /// Each server as run (`runs.json`).
    runs: Vec<serde_json::Value>,
    /// The cell's columns, in order, and those of a curve (the cell less its seed).
    cell: Vec<String>,
    group: Vec<String>,
}

/// The charts, and which of them go where.
struct Charts {
    all: Vec<charts::Chart>,
    per_turn: Vec<usize>,
    sweeps: Vec<usize>,
    tradeoff: Option<usize>,
    /// Speed against quality (`[quality]`).
    quality: Option<usize>,
    gpu: Option<usize>,
    cached_share: Option<usize>,
    server: Option<usize>,
    search: Option<usize>,
    breakdown: Option<usize>,
}

/// Render the report of `p` from the aggregate in `aggregate` into `out`. Its other
/// inputs: the folder of the user's templates (`p.templates` holds their digests) and
/// the baseline report (`p.baseline` holds its digest).
pub fn run(p: &Params, aggregate: &Path, templates: Option<&Path>, baseline: Option<&Path>, out: &Path) -> Result<()> {
    let tables = load(aggregate, out)?;
    let charts = draw(&tables, p.search.as_ref(), p.shown.trace.is_some())?;
    for c in &charts.all {
        std::fs::write(out.join(&c.file), &c.svg).with_context(|| format!("writing {}", c.file))?;
    }
    let page = context(p, &tables, &charts, baseline, &aggregate.join("requests.parquet"))?;
    if let Some(c) = &page.baseline {
        std::fs::write(out.join(baseline::FILE), serde_json::to_vec_pretty(c)?).with_context(|| format!("writing {}", baseline::FILE))?;
    }
    render(&page, templates, out)
}

/// Read the aggregate's tables, and copy the files a report folder carries into `out`.
fn load(aggregate: &Path, out: &Path) -> Result<Tables> {
    let read = |name: &str| export::read_parquet(&aggregate.join(format!("{name}.parquet")));
    let (summary, per_turn, seeds, points, errors) =
        (read("summary")?, read("per_turn")?, read("seeds")?, read("points")?, read("errors")?);
    let telemetry = if aggregate.join("telemetry.parquet").exists() { Some(read("telemetry")?) } else { None };
    let server = read("server")?;
    let (breakdown, breakdown_per_turn) = (read("breakdown")?, read("breakdown_per_turn")?);
    let server_series = if aggregate.join("server_series.parquet").exists() { Some(read("server_series")?) } else { None };
    let mut files: Vec<String> = ["summary", "per_turn", "seeds", "points", "errors", "server", "breakdown", "breakdown_per_turn"]
        .iter()
        .flat_map(|n| [format!("{n}.csv"), format!("{n}.parquet")])
        .collect();
    files.extend(["requests.parquet".to_string(), "runs.json".to_string()]);
    if telemetry.is_some() {
        files.push("telemetry.parquet".into());
    }
    if server_series.is_some() {
        files.extend(["server_series.csv".to_string(), "server_series.parquet".to_string()]);
    }
    let quality = if aggregate.join("quality.parquet").exists() { Some(read("quality")?) } else { None };
    if quality.is_some() {
        files.extend(["quality", "quality_per_turn"].iter().flat_map(|n| [format!("{n}.csv"), format!("{n}.parquet")]));
    }
    let judge_file = aggregate.join(crate::steps::quality::judge::FILE);
    let judge: Option<JValue> = match judge_file.exists() {
        true => Some(serde_json::from_slice(&std::fs::read(&judge_file)?).context("reading the judge's cost")?),
        false => None,
    };
    if judge.is_some() {
        files.push(crate::steps::quality::judge::FILE.into());
    }
    for f in &files {
        std::fs::copy(aggregate.join(f), out.join(f)).with_context(|| format!("copying {f}"))?;
    }
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(aggregate.join("runs.json"))?)?;
    let names: Vec<String> = summary.get_column_names().iter().map(|s| s.to_string()).collect();
    let cell: Vec<String> = names.iter().take_while(|n| *n != "requests").cloned().collect();
    let group: Vec<String> = cell.iter().filter(|c| *c != "seed").cloned().collect();
    Ok(Tables {
        summary,
        per_turn,
        seeds,
        points,
        errors,
        telemetry,
        server,
        server_series,
        breakdown,
        breakdown_per_turn,
        quality,
        judge,
        runs,
        cell,
        group,
    })
}

/// Every chart the tables call for.
/// `trace`: a trace replay, whose requests are a turn each: no chart along turns.
fn draw(t: &Tables, search: Option<&crate::search::Summary>, trace: bool) -> Result<Charts> {
    let group = &t.group;
    let load = if group.iter().any(|c| c == "request_rate") { "request_rate" } else { "batch_size" };
    // A search probes many values; the per-turn panels show the ones it found.
    let per_turn_rows = match search {
        Some(s) => found_only(&t.per_turn, s, group)?,
        None => t.per_turn.clone(),
    };
    let mut all = if trace { Vec::new() } else { charts::per_turn(&per_turn_rows)? };
    let per_turn = (0..all.len()).collect();
    let mut sweeps = Vec::new();
    for (axis, file) in [("batch_size", "batch_size.svg"), ("frames", "frames.svg"), ("request_rate", "request_rate.svg")] {
        if group.iter().any(|c| c == axis)
            && let Some(c) = charts::sweep(&t.points, axis, group, file)?
        {
            sweeps.push(all.len());
            all.push(c);
        }
    }
    let mut tradeoff = None;
    if group.iter().any(|c| c == load)
        && let Some(c) = charts::throughput_latency(&t.points, group, load)?
    {
        tradeoff = Some(all.len());
        all.push(c);
    }
    let mut quality = None;
    if let Some(q) = &t.quality
        && let Some(c) = charts::speed_quality(&t.points, q, group)?
    {
        quality = Some(all.len());
        all.push(c);
    }
    let mut gpu = None;
    if let Some(telemetry) = &t.telemetry {
        gpu = Some(all.len());
        all.push(charts::telemetry(telemetry, &t.cell, TELEMETRY_CELLS)?);
    }
    let mut cached_share = None;
    if !trace && let Some(c) = charts::cached_share(&t.per_turn)? {
        cached_share = Some(all.len());
        all.push(c);
    }
    let mut server = None;
    if let Some(series) = &t.server_series {
        server = Some(all.len());
        all.push(charts::server_over_time(series, &t.cell)?);
    }
    let mut breakdown = None;
    if let Some(c) = charts::breakdown(&t.breakdown_per_turn)? {
        breakdown = Some(all.len());
        all.push(c);
    }
    let search = match search {
        Some(s) => {
            all.push(charts::search(s, "search.svg")?);
            Some(all.len() - 1)
        }
        None => None,
    };
    Ok(Charts { all, per_turn, sweeps, tradeoff, quality, gpu, cached_share, server, search, breakdown })
}

/// The rows of `df` (a table with the curve's columns) at the value each curve's search
/// found; all rows when no curve found one.
fn found_only(df: &DataFrame, s: &crate::search::Summary, group: &[String]) -> Result<DataFrame> {
    let column = s.axis.replace('-', "_");
    let others: Vec<&str> = group.iter().map(String::as_str).filter(|c| *c != column).collect();
    let (curve, value) = (charts::labels(df, &others)?, f64s(df, &column)?);
    let keep: Vec<bool> =
        (0..df.height()).map(|r| s.curves.iter().any(|c| c.curve == curve[r] && c.found.is_some() && c.found == value[r])).collect();
    if !keep.contains(&true) {
        return Ok(df.clone());
    }
    Ok(df.filter(&BooleanChunked::new("keep".into(), keep))?)
}

/// What the templates see, by the names they use (see `templates/README.md.j2`): the
/// experiment as its parameters describe it, the tables as display text, the charts,
/// the baseline comparison and sample answers.
#[derive(serde::Serialize)]
struct Page<'a> {
    /// What the run found, and what makes it doubtful ([`glance`]).
    glance: glance::Glance,
    /// The sections, in order, as both renderings head them.
    toc: Vec<Section>,
    title: &'a str,
    name: &'a str,
    tool: String,
    source: &'a str,
    hardware: &'a str,
    /// What NVML said on each measuring machine, once each.
    gpus: Vec<String>,
    models: &'a [params::ShownModel],
    servers: &'a [ShownServer],
    /// Each server as run (`runs.json`).
    runs: &'a [serde_json::Value],
    cells: usize,
    seeds: &'a [u64],
    batch_sizes: &'a [u32],
    frames: &'a [u32],
    turns: u32,
    resolution: &'a str,
    conversations: Option<&'a params::ShownConversations>,
    max_tokens: u32,
    temperature: f64,
    warmup: u32,
    arrival: &'a str,
    /// A trace replay: what was replayed.
    trace: Option<&'a str>,
    slo: String,
    attainment: f64,
    resamples: usize,
    throughput: Table,
    latency: Table,
    seeds_table: Table,
    points: Table,
    best: Vec<String>,
    /// Why there is no GPU table, when there is none.
    gpu_reason: Option<String>,
    errors: Option<Table>,
    /// The Quality section (`[quality]`): each curve's score per method.
    quality: Option<Table>,
    /// What the judge cost, when a judge scored (`judge.json`).
    judge: Option<&'a JValue>,
    gpu_table: Option<Table>,
    baseline: Option<baseline::Comparison>,
    answers: Vec<JValue>,
    /// The Server section ([`server::section`]).
    server: JValue,
    /// "Where the time went" ([`breakdown::section`]), and its chart.
    breakdown: JValue,
    breakdown_chart: Option<&'a charts::Chart>,
    /// The Search section, with `[search]` ([`search::section`]), and its chart.
    search: Option<search::Section>,
    search_chart: Option<&'a charts::Chart>,
    per_turn_charts: Vec<&'a charts::Chart>,
    cached_share_chart: Option<&'a charts::Chart>,
    sweep_charts: Vec<&'a charts::Chart>,
    tradeoff_chart: Option<&'a charts::Chart>,
    quality_chart: Option<&'a charts::Chart>,
    gpu_chart: Option<&'a charts::Chart>,
    server_chart: Option<&'a charts::Chart>,
}

fn context<'a>(p: &'a Params, t: &'a Tables, charts: &'a Charts, baseline: Option<&Path>, requests: &Path) -> Result<Page<'a>> {
    let (seeds, points, runs, cell, group) = (&t.seeds, &t.points, &t.runs, &t.cell, &t.group);
    let pick = |idx: &[usize]| idx.iter().map(|&i| &charts.all[i]).collect::<Vec<_>>();
    let one = |i: Option<usize>| i.map(|i| &charts.all[i]);
    let shown = &p.shown;
    let tables = display_tables(t)?;
    let baseline = match baseline {
        Some(dir) => Some(baseline::compare(seeds, t.quality.as_ref(), dir, group, p.noise_pct)?),
        None => None,
    };
    let gpus: Vec<String> = runs.iter().map(|r| describe_nvml(&r["nvml"])).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let at_a_glance =
        glance::Tables { seeds, points, per_turn: &t.per_turn, summary: &t.summary, server: &t.server, quality: t.quality.as_ref(), group };
    let mut glance = glance::glance(&at_a_glance, &p.slo.describe())?;
    if let Some(c) = &baseline {
        glance::against_baseline(&mut glance, c);
    }
    glance::imported(&mut glance, runs);
    glance.findings.extend(breakdown::sentence(&t.breakdown_per_turn)?);
    let search = match &p.search {
        Some(s) => {
            let (section, sentence) = search::section(s, points, group)?;
            glance.findings.insert(0, sentence);
            Some(section)
        }
        None => None,
    };
    let toc = sections(!charts.sweeps.is_empty() || charts.tradeoff.is_some(), search.is_some(), t.quality.is_some(), baseline.is_some());
    Ok(Page {
        glance,
        toc,
        title: &p.title,
        name: &shown.name,
        tool: format!("pipeline {}", env!("CARGO_PKG_VERSION")),
        source: &p.source,
        hardware: &shown.hardware,
        gpus,
        models: &shown.models,
        servers: &shown.servers,
        runs,
        cells: shown.cells,
        seeds: &shown.seeds,
        batch_sizes: &shown.batch_sizes,
        frames: &shown.frames,
        turns: shown.turns,
        resolution: &shown.resolution,
        conversations: shown.conversations.as_ref(),
        max_tokens: shown.max_tokens,
        temperature: shown.temperature,
        warmup: shown.warmup_requests,
        arrival: &shown.arrival,
        trace: shown.trace.as_deref(),
        slo: p.slo.describe(),
        attainment: p.slo.attainment_pct,
        resamples: RESAMPLES,
        throughput: tables.throughput,
        latency: tables.latency,
        seeds_table: table::across_seeds(seeds, group, &SEEDS_SHOWN)?,
        points: tables.points,
        best: best_points(points, group)?,
        gpu_reason: if tables.gpu.is_some() { None } else { Some(telemetry_reason(runs)) },
        errors: tables.errors,
        quality: tables.quality,
        judge: t.judge.as_ref(),
        gpu_table: tables.gpu,
        baseline,
        answers: answers(requests, cell)?,
        server: server::section(&t.server, cell)?,
        breakdown: breakdown::section(&t.breakdown, cell)?,
        breakdown_chart: one(charts.breakdown),
        search,
        search_chart: one(charts.search),
        per_turn_charts: pick(&charts.per_turn),
        cached_share_chart: one(charts.cached_share),
        sweep_charts: pick(&charts.sweeps),
        tradeoff_chart: one(charts.tradeoff),
        quality_chart: one(charts.quality),
        gpu_chart: one(charts.gpu),
        server_chart: one(charts.server),
    })
}

/// A section of the report: its heading, and the anchor GitHub gives that heading
/// (the HTML uses the same, so a link works in both).
#[derive(serde::Serialize)]
struct Section {
    title: &'static str,
    id: String,
}

fn sections(sweeps: bool, search: bool, quality: bool, baseline: bool) -> Vec<Section> {
    let titles = [
        ("Results at a glance", true),
        ("Per-turn latency", true),
        ("Where the time went", true),
        ("Sweeps and operating points", sweeps),
        ("Search", search),
        ("Across seeds", true),
        ("Quality", quality),
        ("Per cell", true),
        ("Server", true),
        ("Errors", true),
        ("GPU telemetry", true),
        ("Against the baseline", baseline),
        ("Methodology", true),
        ("Sample answers", true),
        ("Recompute any number", true),
    ];
    titles.into_iter().filter(|(_, shown)| *shown).map(|(title, _)| Section { title, id: anchor(title) }).collect()
}

/// GitHub's anchor for a heading: lower case, spaces as hyphens, punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| if c == ' ' { Some('-') } else { (c.is_alphanumeric() || c == '-' || c == '_').then_some(c) })
        .collect()
}

/// The summary, GPU, operating-point and error tables as display text.
struct DisplayTables {
    /// Per cell: how much was served at what concurrency, and the latencies.
    throughput: Table,
    latency: Table,
    gpu: Option<Table>,
    points: Table,
    errors: Option<Table>,
    quality: Option<Table>,
}

fn display_tables(t: &Tables) -> Result<DisplayTables> {
    use Digits::{Three, Whole};
    let (summary, points, errors, cell, group) = (&t.summary, &t.points, &t.errors, &t.cell, &t.group);
    let throughput = varying(display(
        summary,
        cell,
        &[
            ("requests", "requests", Whole),
            ("errors", "errors", Whole),
            ("in_flight_mean", "in flight (mean)", Three),
            ("requests_per_s", "requests/s", Three),
            ("output_tok_per_s", "output tokens/s", Three),
            ("goodput_req_per_s", "goodput (req/s)", Three),
            ("slo_met_pct", "SLO met (%)", Three),
        ],
    )?);
    let latency = varying(display(
        summary,
        cell,
        &[
            ("ttft_p50_ms", "TTFT p50 (ms)", Three),
            ("ttft_p95_ms", "TTFT p95 (ms)", Three),
            ("ttft_p99_ms", "TTFT p99 (ms)", Three),
            ("itl_p50_ms", "ITL p50 (ms)", Three),
            ("itl_p99_ms", "ITL p99 (ms)", Three),
            ("tpot_p50_ms", "TPOT p50 (ms)", Three),
            ("e2e_p50_ms", "E2E p50 (ms)", Three),
            ("e2e_p95_ms", "E2E p95 (ms)", Three),
            ("e2e_p99_ms", "E2E p99 (ms)", Three),
        ],
    )?);
    let has_gpu = summary.column("power_mean_w")?.null_count() < summary.height();
    let gpu_table = if has_gpu {
        Some(display(
            summary,
            cell,
            &[
                ("power_mean_w", "power mean (W)", Three),
                ("power_peak_w", "power peak (W)", Three),
                ("energy_per_token_j", "energy per output token (J)", Three),
                ("temperature_peak_c", "temperature peak (°C)", Whole),
                ("throttle_seen", "clocks held down by", Whole),
            ],
        )?)
    } else {
        None
    };
    let points_table = varying(display(
        points,
        group,
        &[
            ("output_tok_per_s", "output tokens/s", Three),
            ("ttft_p50_ms", "TTFT p50 (ms)", Three),
            ("e2e_p50_ms", "E2E p50 (ms)", Three),
            ("slo_met_pct", "SLO met (%)", Three),
            ("pareto", "Pareto front", Whole),
            ("best", "best under SLO", Whole),
        ],
    )?);
    let errors_table = (errors.height() > 0)
        .then(|| display(errors, cell, &[("error", "error", Whole), ("count", "requests", Whole), ("last_status", "HTTP status", Whole)]))
        .transpose()?;
    let quality = match &t.quality {
        Some(q) => {
            let labels: Vec<String> = group.iter().cloned().chain(["method".to_string(), "against".to_string()]).collect();
            Some(varying(display(
                q,
                &labels,
                &[
                    ("mean", "mean", Three),
                    ("mean_lo", "95% low", Three),
                    ("mean_hi", "95% high", Three),
                    ("scored", "scored turns", Whole),
                    ("unscored", "unscored", Whole),
                    ("truncated", "cut at max-tokens", Whole),
                ],
            )?))
        }
        None => None,
    };
    Ok(DisplayTables { throughput, latency, gpu: gpu_table, points: points_table, errors: errors_table, quality })
}

/// Render README.md and index.html from `page`, with the user's templates in
/// `templates` where there are any.
fn render(page: &Page, templates: Option<&Path>, out: &Path) -> Result<()> {
    let mut env = Environment::new();
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build()?);
    env.add_filter("md", |v: JValue| markdown::md(&v.to_string()));
    env.add_filter("mdalt", |v: JValue| markdown::mdalt(&v.to_string()));
    env.add_filter("mdcode", |v: JValue, table: Option<bool>| markdown::mdcode(&v.to_string(), table));
    env.add_filter("anchor", |v: JValue| anchor(&v.to_string()));
    // Every string printed, in either file: no control, zero-width or bidirectional-
    // formatting character (an answer with U+202E would read backwards), then escaped
    // as the file's type needs (HTML auto-escaped; Markdown by the filters above).
    env.set_formatter(|out, state, value| {
        let shown = |c: &char| !crate::untrusted::is_unsafe_char(*c) || matches!(c, '\n' | '\t');
        match value.as_str() {
            Some(text) if !text.chars().all(|c| shown(&c)) => {
                let clean: String = text.chars().filter(shown).collect();
                let clean = if value.is_safe() { JValue::from_safe_string(clean) } else { JValue::from(clean) };
                minijinja::escape_formatter(out, state, &clean)
            }
            _ => minijinja::escape_formatter(out, state, value),
        }
    });
    for (name, source) in params::template_sources(templates) {
        env.add_template_owned(name.clone(), source).with_context(|| format!("template `{name}`"))?;
    }
    for (name, _) in TEMPLATES {
        let rendered = env.get_template(name)?.render(ser(page)).with_context(|| format!("rendering `{name}`"))?;
        let file = name.trim_end_matches(".j2");
        std::fs::write(out.join(file), rendered).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

fn ser<T: serde::Serialize>(v: T) -> JValue {
    JValue::from(minijinja::value::Serde(v))
}

/// "qwen-3b (awq), batch-size=2, frames=1" per row.
fn labels_of(df: &DataFrame, cols: &[String]) -> Result<Vec<String>> {
    charts::labels(df, &cols.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One line per curve that has a best operating point under the SLO.
fn best_points(points: &DataFrame, group: &[String]) -> Result<Vec<String>> {
    let label = labels_of(points, group)?;
    let best: Vec<bool> = points.column("best")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
    let (tput, e2e, met) = (f64s(points, "output_tok_per_s")?, f64s(points, "e2e_p50_ms")?, f64s(points, "slo_met_pct")?);
    Ok((0..points.height())
        .filter(|&r| best[r])
        .map(|r| {
            let s = |v: Option<f64>| v.map(table::sig3).unwrap_or_else(|| "–".into());
            format!(
                "{}: {} output tokens/s at an end-to-end p50 of {} ms ({}% of requests within the SLO)",
                label[r],
                s(tput[r]),
                s(e2e[r]),
                s(met[r])
            )
        })
        .collect())
}

fn describe_nvml(nvml: &serde_json::Value) -> String {
    if nvml["available"].as_bool() == Some(true) {
        let gpus: Vec<&str> = nvml["gpus"].as_array().map(|a| a.iter().filter_map(|g| g.as_str()).collect()).unwrap_or_default();
        format!(
            "{} GPU(s): {}; driver {}, CUDA {}",
            gpus.len(),
            gpus.join(", "),
            nvml["driver"].as_str().unwrap_or("unknown"),
            nvml["cuda"].as_i64().map(|v| format!("{}.{}", v / 1000, v % 1000 / 10)).unwrap_or_else(|| "unknown".into())
        )
    } else {
        format!("no NVML on the measuring machine ({})", nvml["reason"].as_str().unwrap_or("no reason given"))
    }
}

fn telemetry_reason(runs: &[serde_json::Value]) -> String {
    let mut reasons: Vec<&str> = runs.iter().filter_map(|r| r["telemetry"]["reason"].as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    if reasons.is_empty() { "no samples were recorded".into() } else { reasons.join("; ") }
}

/// The first turns of one conversation per model and variant (its first cell in
/// table order), as answered (the first 300 characters) with the answer's length in
/// characters: untrusted text, escaped by the HTML template.
fn answers(requests: &Path, cell: &[String]) -> Result<Vec<JValue>> {
    let columns = cell.iter().cloned().chain(["conversation", "turn", "warmup", "error", "answer"].map(String::from)).collect();
    let mut df = export::read_parquet_columns(requests, Some(columns))?
        .lazy()
        .filter(
            col("warmup")
                .not()
                .and(col("error").eq(lit("none")))
                .and(col("conversation").eq(lit(0u32)))
                .and(col("turn").lt(lit(ANSWER_TURNS))),
        )
        .collect()?;
    df = df.sort(cell.iter().map(String::as_str).chain(["turn"]).collect::<Vec<_>>(), SortMultipleOptions::default())?;
    let label = labels_of(&df, cell)?;
    let (model, variant) = (strs(&df, "model")?, strs(&df, "variant")?);
    let (turn, answer) = (strs(&df, "turn")?, strs(&df, "answer")?);
    let mut chosen: HashMap<(String, String), String> = HashMap::new();
    let mut out = Vec::new();
    for r in 0..df.height() {
        let which = chosen.entry((model[r].clone(), variant[r].clone())).or_insert_with(|| label[r].clone());
        if *which != label[r] {
            continue;
        }
        let text: String = answer[r].chars().take(300).collect();
        let cut = if text.len() < answer[r].len() { "…" } else { "" };
        let t = turn[r].parse::<u32>().unwrap_or(0) + 1;
        // The whole answer's length: the only measure of an answer's size where token
        // counts were not recorded (imported study files), and the shown text may be cut.
        let chars = answer[r].chars().count();
        out.push(minijinja::context! { cell => label[r].clone(), turn => t, chars => chars, answer => format!("{text}{cut}") });
    }
    Ok(out)
}
