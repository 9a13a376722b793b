//! The commands behind the CLI: load, plan, execute, print. Each ends in an
//! [`Outcome`] or a [`Failure`] whose kind is chosen here; [`crate::error`] turns
//! either into the exit code.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;

use crate::cache::{Cache, CacheError};
use crate::cli::{CacheCommand, Cli, Command, DagFormat, SimArgs, Target};
use crate::config::{self, Source};
pub use crate::error::Failure;
use crate::error::{Kind, Outcome, WithHint};
use crate::exec::{self, RunOptions};
use crate::matrix::Cell;
use crate::plan::{Plan, Selection, State, StepKind, StepStatus};
use crate::{matrix, sim, steps};

mod init;
mod search;
mod slurm;

fn fail(kind: Kind) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { error, kind }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure { error: e.into(), kind: Kind::User }
    }
}

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        let error = match &e {
            CacheError::Locked(_) => anyhow::Error::from(e)
                .context("cannot lock the cache")
                .hint("wait for the other run to finish, or point one of them at another --cache"),
            CacheError::BadRecord { .. } => anyhow::Error::from(e)
                .hint("run that experiment again (its record is rewritten), or delete the record if the experiment is gone, then gc"),
            CacheError::Io { .. } => anyhow::Error::from(e),
        };
        Failure { error, kind: Kind::Environment }
    }
}

pub fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    let cache = Cache::new(&cli.cache);
    // Commands that start servers or may run long stop within seconds of a signal.
    if !matches!(cli.command, Command::SimServer(_) | Command::Guard { .. } | Command::Schema | Command::Completions { .. }) {
        crate::interrupt::install();
    }
    // The engine runs without transparent huge pages; a server, the simulator too,
    // keeps the machine's setting.
    if !matches!(cli.command, Command::SimServer(_)) {
        exec::process::huge_pages_off();
    }
    match cli.command {
        Command::Run { target, jobs, keep_going } => run(&cache, &target, jobs, keep_going),
        Command::Plan { target, json } => plan_cmd(&cache, &target, json),
        Command::Status { file, executor } => status(&cache, file.as_deref(), executor),
        Command::Report { file, baseline, noise_pct, fail_on, executor } => {
            report(&cache, file.as_deref(), baseline.as_deref(), noise_pct, fail_on, executor)
        }
        Command::Templates { dir } => templates(&dir),
        Command::Init(args) => init::init(&args),
        Command::Schema => out(&format!("{}\n", init::schema())).map(|_| Outcome::Done),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "pipeline", &mut std::io::stdout());
            Ok(Outcome::Done)
        }
        Command::Dag { file, format } => dag(file.as_deref(), format),
        Command::Cache { command: CacheCommand::Gc } => gc(&cache),
        Command::SimServer(args) => sim_server(args),
        Command::SlurmJob { spec } => slurm::job(&cache, &spec),
        Command::Guard { pgid } => exec::process::guard(pgid),
    }
}

fn load(file: Option<&Path>) -> Result<(Source, Plan), Failure> {
    load_with(file, |_| Ok(()))
}

/// Load `run`'s and `plan`'s target, with `--executor` applied.
fn load_target(target: &Target) -> Result<(Source, Plan), Failure> {
    load_with(target.file.as_deref(), |experiment| {
        set_executor(experiment, target.executor);
        Ok(())
    })
}

/// `--executor`, when given, over the file's `executor`.
fn set_executor(experiment: &mut config::Experiment, kind: Option<config::ExecutorKind>) {
    if let Some(kind) = kind {
        experiment.executor = kind;
    }
}

/// Load and plan, letting `adjust` change the experiment first (command-line overrides).
fn load_with(file: Option<&Path>, adjust: impl FnOnce(&mut config::Experiment) -> Result<(), Failure>) -> Result<(Source, Plan), Failure> {
    let source = match file {
        Some(f) => Source::read(f)?,
        None => Source::demo(),
    };
    let mut experiment = config::load(&source)?;
    check_fail_on(&source, &experiment.report.fail_on)?;
    experiment.report.provenance = steps::report::provenance(file, &source.display);
    adjust(&mut experiment)?;
    let cells = matrix::expand(&experiment, &source)?;
    let hardware = match experiment.executor {
        config::ExecutorKind::Local => crate::gpu::hardware_identity(),
        config::ExecutorKind::Slurm => experiment.slurm.hardware(),
    };
    let plan = Plan::build(experiment, cells, hardware).map_err(|e| fail(Kind::User)(e.into()))?;
    Ok((source, plan))
}

/// `[report] fail-on` names the aggregate's metrics, so it is checked here, with
/// them, located in the file like every other problem.
fn check_fail_on(source: &Source, fail_on: &[String]) -> Result<(), Failure> {
    let issues: Vec<config::Issue> = fail_on
        .iter()
        .enumerate()
        .filter_map(|(i, what)| {
            let hint = steps::report::baseline::fail_on_value(what).err()?;
            let message = format!("{} is neither `worse` nor a metric", config::quoted(what));
            Some(config::issue_at(source, &format!("report.fail-on[{i}]"), message, Some(hint)))
        })
        .collect();
    if issues.is_empty() { Ok(()) } else { Err(config::ConfigError::invalid(source, issues).into()) }
}

fn selection(target: &Target, plan: &Plan) -> Result<Selection, Failure> {
    let axes: Vec<String> =
        config::BUILTIN_AXES.iter().map(|s| s.to_string()).chain(plan.experiment.matrix.custom.iter().map(|c| c.name.clone())).collect();
    for (axis, _) in &target.only {
        if !axes.contains(axis) {
            let hint = config::closest(axis, axes.iter().map(String::as_str))
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| format!("axes: {}", axes.join(", ")));
            return Err(Failure { error: anyhow!("--only: `{axis}` is not an axis").hint(hint), kind: Kind::User });
        }
    }
    // A value no cell has selects nothing: say so rather than run nothing and exit 0.
    for (axis, value) in &target.only {
        let mut values: Vec<String> =
            plan.cells.iter().filter_map(|c| c.coords().into_iter().find(|(k, _)| k == axis).map(|(_, v)| v)).collect();
        values.sort();
        values.dedup();
        if !values.contains(value) {
            let hint = match values.is_empty() {
                true => "no cell has this axis; run `pipeline plan` to see the cells".to_string(),
                false => format!("{axis} takes: {}", values.join(", ")),
            };
            return Err(Failure {
                error: anyhow!("--only: no cell has {axis}={}", config::quoted(value).trim_matches('`')).hint(hint),
                kind: Kind::User,
            });
        }
    }
    Ok(Selection { only: target.only.clone(), kinds: target.kind.clone(), force: target.force })
}

/// Write to stdout; a closed pipe (`pipeline plan | head`) ends quietly.
fn out(text: &str) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(Outcome::Done.code()),
        r => r.map_err(|e| fail(Kind::Environment)(e.into())),
    }
}

fn plan_cmd(cache: &Cache, target: &Target, json: bool) -> Result<Outcome, Failure> {
    cache.read_index_ahead();
    let (source, plan) = load_target(target)?;
    check_search_only(target, &plan)?;
    // A search shows the probes known so far, and says that it goes on after them.
    let (plan, continues) = searched(cache, plan, &target.only)?;
    let sel = selection(target, &plan)?;
    let statuses = plan.status(cache, &sel);
    let mut text = plan_text(&source, &plan, &statuses, json);
    if continues > 0 && !json {
        text.push_str(&format!("search: {continues} curve(s) go on after the probes above; which come next depends on their results\n"));
    }
    // The process ends right after this; freeing a 100k-step plan only costs time.
    std::mem::forget((plan, statuses));
    out(&text).map(|_| Outcome::Done)
}

fn plan_text(source: &Source, plan: &Plan, statuses: &[StepStatus], json: bool) -> String {
    let mut text = String::new();
    if json {
        for &i in &plan.order {
            let (step, st) = (&plan.steps[i], &statuses[i]);
            let coords: serde_json::Map<String, serde_json::Value> =
                plan.coords(step).iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let mut obj = serde_json::json!({"id": step.id, "kind": step.kind.name(), "coords": coords, "key": st.key.map(|k| k.hex()), "state": st.state.name(), "reasons": st.reasons, "server": step.server.map(|s| plan.servers[s].id.clone())});
            if plan.experiment.executor == config::ExecutorKind::Slurm
                && let Some(s) = step.server
                && crate::slurm::needs_node(&plan.servers[s])
            {
                obj["job"] = crate::slurm::group_job_name(plan, s).into();
            }
            text.push_str(&obj.to_string());
            text.push('\n');
        }
        return text;
    }
    text.push_str(&format!(
        "plan for {}: {} cells, {} steps, {} servers\n",
        source.display,
        plan.cells.len(),
        plan.steps.len(),
        plan.servers.len()
    ));
    for &i in &plan.order {
        let (step, st) = (&plan.steps[i], &statuses[i]);
        let why = if st.reasons.is_empty() { String::new() } else { format!("  ({})", st.reasons.join("; ")) };
        text.push_str(&format!("  {:<6} {}{why}\n", st.state.name(), step.id));
    }
    let needed = server_needs(plan, statuses);
    if plan.experiment.executor == config::ExecutorKind::Slurm {
        text.push_str(&slurm::plan_jobs(plan, &needed));
    } else {
        for (s, spec) in plan.servers.iter().enumerate() {
            // The judge's server (`[quality] judge`) serves quality steps.
            let what = if spec.id == "server[judge]" { "quality" } else { "measure" };
            let note = if needed[s] == 0 { "not needed".to_string() } else { format!("starts for {} {what} step(s)", needed[s]) };
            text.push_str(&format!("  {:<6} {}  ({note})\n", "svc", spec.id));
        }
    }
    text.push_str(&counts_line(statuses));
    text.push('\n');
    text
}

fn server_needs(plan: &Plan, statuses: &[StepStatus]) -> Vec<usize> {
    let mut n = vec![0; plan.servers.len()];
    for (step, st) in plan.steps.iter().zip(statuses) {
        if let Some(s) = step.server
            && matches!(st.state, State::Run | State::Wait)
        {
            n[s] += 1;
        }
    }
    n
}

fn counts_line(statuses: &[StepStatus]) -> String {
    let count = |s: State| statuses.iter().filter(|x| x.state == s).count();
    format!(
        "{} fresh, {} to run, {} waiting on inputs, {} not selected",
        count(State::Fresh),
        count(State::Run),
        count(State::Wait),
        count(State::Skip)
    )
}

fn run(cache: &Cache, target: &Target, jobs: usize, keep_going: bool) -> Result<Outcome, Failure> {
    cache.read_index_ahead();
    let (source, mut plan) = load_target(target)?;
    check_search_only(target, &plan)?;
    let _lock = cache.lock()?;
    if plan.experiment.search.is_some() {
        plan = match search_rounds(cache, &source, target, plan, jobs, keep_going)? {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
    }
    let sel = selection(target, &plan)?;
    let statuses = plan.status(cache, &sel);
    execute(cache, source, target.file.as_deref(), plan, statuses, jobs, keep_going)
}

/// With `[search]`: the plan over the probes the cache lets the walks reach and the
/// next ones to measure, and how many curves go on after them (what follows depends on
/// their results). Without: `plan` as it is.
fn searched(cache: &Cache, plan: Plan, only: &[(String, String)]) -> Result<(Plan, usize), Failure> {
    if plan.experiment.search.is_none() {
        return Ok((plan, 0));
    }
    let base = narrowed(&plan, only);
    let walked = search::walk_all(cache, &plan.experiment, &base, &plan.hardware).map_err(fail(Kind::Environment))?;
    let continues = crate::search::searching(&walked);
    let mut cells: Vec<Cell> = walked.cells.into_iter().chain(walked.need).collect();
    cells.sort();
    let mut plan = Plan::build(plan.experiment, cells, plan.hardware).map_err(|e| fail(Kind::User)(e.into()))?;
    plan.set_search(walked.summary);
    Ok((plan, continues))
}

/// `[search]`: measure the probes the walks ask for, round by round, until every curve
/// has its answer (or a round measures nothing new: probes that failed to measure);
/// then the plan over every probe walked, or the outcome of a round that did not end
/// done.
///
/// Each round's plan holds every probe walked so far besides the new ones (cached, so
/// only the new ones run): the run record then names every probe of the walk, and a
/// `cache gc` after an interrupted search keeps what it measured.
fn search_rounds(
    cache: &Cache,
    source: &Source,
    target: &Target,
    plan: Plan,
    jobs: usize,
    keep_going: bool,
) -> Result<Result<Plan, Outcome>, Failure> {
    let (exp, hardware) = (plan.experiment.clone(), plan.hardware.clone());
    let base = narrowed(&plan, &target.only);
    drop(plan);
    let mut last_need = None;
    let spec = exp.search.as_ref().expect("search_rounds is called for a search");
    for _ in 0..crate::search::max_rounds(spec) {
        let walked = search::walk_all(cache, &exp, &base, &hardware).map_err(fail(Kind::Environment))?;
        if walked.need.is_empty() || last_need.as_ref() == Some(&walked.need) {
            if !walked.need.is_empty() {
                eprintln!("search: {} curve(s) stop at probes that were not measured", crate::search::searching(&walked));
            }
            let mut plan = Plan::build(exp, walked.cells, hardware).map_err(|e| fail(Kind::User)(e.into()))?;
            plan.set_search(walked.summary);
            return Ok(Ok(plan));
        }
        eprintln!("search: {} probe cell(s) to measure on {} curve(s)", walked.need.len(), crate::search::searching(&walked));
        let mut cells: Vec<Cell> = walked.cells.into_iter().chain(walked.need.iter().cloned()).collect();
        cells.sort();
        cells.dedup();
        let plan = Plan::build(exp.clone(), cells, hardware.clone()).map_err(|e| fail(Kind::User)(e.into()))?;
        let sel = Selection { kinds: vec![StepKind::Datagen, StepKind::Measure], only: target.only.clone(), force: false };
        let statuses = plan.status(cache, &sel);
        let outcome = execute(cache, source.clone(), target.file.as_deref(), plan, statuses, jobs, keep_going)?;
        if outcome != Outcome::Done {
            return Ok(Err(outcome));
        }
        last_need = Some(walked.need);
    }
    let error = anyhow!("search: the walks did not end within {} rounds", crate::search::max_rounds(spec));
    Err(fail(Kind::Environment)(error))
}

/// The matrix's cells that `--only` selects: a search walks only their curves, with
/// only their seeds.
fn narrowed(plan: &Plan, only: &[(String, String)]) -> Vec<Cell> {
    let selected = |c: &Cell| {
        let coords = c.coords();
        only.iter().all(|(axis, value)| coords.iter().find(|(k, _)| k == axis).is_none_or(|(_, v)| v == value))
    };
    plan.cells.iter().filter(|c| selected(c)).cloned().collect()
}

/// `--only` on a search, checked against the matrix before any walk: a value no cell
/// has is an error that lists the values, and the searched axis cannot be narrowed
/// (the walk chooses its values).
fn check_search_only(target: &Target, plan: &Plan) -> Result<(), Failure> {
    let Some(spec) = &plan.experiment.search else { return Ok(()) };
    if target.only.iter().any(|(axis, _)| *axis == spec.axis) {
        return Err(Failure {
            error: anyhow!("--only: `{}` is the searched axis; the walk chooses its values", spec.axis)
                .hint("narrow the search by the other axes (model, variant, seed, …), or set `min` and `max` under [search]"),
            kind: Kind::User,
        });
    }
    selection(target, plan).map(|_| ())
}

/// Re-render the report from cached measurements: aggregate and report run if they
/// must, nothing is measured.
fn report(
    cache: &Cache,
    file: Option<&Path>,
    baseline: Option<&Path>,
    noise_pct: Option<f64>,
    fail_on: Vec<String>,
    executor: Option<config::ExecutorKind>,
) -> Result<Outcome, Failure> {
    let (source, plan) = load_with(file, |experiment| {
        set_executor(experiment, executor);
        if let Some(dir) = baseline {
            if !dir.join("seeds.parquet").is_file() {
                return Err(Failure {
                    error: anyhow!("--baseline {}: no seeds.parquet there", dir.display())
                        .hint(format!("pass an earlier report folder, e.g. a copy of {}", experiment.report.dir.display())),
                    kind: Kind::User,
                });
            }
            experiment.report.baseline = Some(dir.to_path_buf());
        }
        if let Some(n) = noise_pct {
            experiment.report.noise_pct = n;
        }
        if !fail_on.is_empty() {
            experiment.report.fail_on = fail_on;
        }
        Ok(())
    })?;
    let _lock = cache.lock()?;
    let (plan, _) = searched(cache, plan, &[])?;
    let sel = Selection { kinds: vec![crate::plan::StepKind::Report], ..Selection::default() };
    let statuses = plan.status(cache, &sel);
    let missing: Vec<&str> = plan
        .steps
        .iter()
        .zip(&statuses)
        .filter(|(s, st)| {
            matches!(s.kind, crate::plan::StepKind::Measure | crate::plan::StepKind::Import | crate::plan::StepKind::Datagen)
                && st.state != State::Fresh
        })
        .map(|(s, _)| s.id.as_str())
        .collect();
    if let Some(first) = missing.first() {
        return Err(Failure {
            error: anyhow!(
                "{} step(s) have no cached results, e.g. {first}; `pipeline report` renders only what is measured",
                missing.len()
            )
            .hint(format!("run `pipeline run{}` first", file.map(|f| format!(" {}", f.display())).unwrap_or_default())),
            kind: Kind::User,
        });
    }
    execute(cache, source, file, plan, statuses, 2, false)
}

/// `pipeline templates DIR`: the embedded report templates, to edit and point
/// `[report] templates` at.
fn templates(dir: &Path) -> Result<Outcome, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| fail(Kind::Environment)(e.into()))?;
    for (name, text) in steps::report::TEMPLATES {
        let path = dir.join(name);
        if path.exists() {
            return Err(Failure {
                error: anyhow!("{} exists; not overwriting it", path.display()).hint("pick an empty folder"),
                kind: Kind::User,
            });
        }
        std::fs::write(&path, text).map_err(|e| fail(Kind::Environment)(e.into()))?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("next: set `templates = \"{}\"` under [report] in your experiment file", dir.display());
    Ok(Outcome::Done)
}

fn execute(
    cache: &Cache,
    source: Source,
    file: Option<&Path>,
    plan: Plan,
    statuses: Vec<StepStatus>,
    jobs: usize,
    keep_going: bool,
) -> Result<Outcome, Failure> {
    let watched = &plan.experiment.report.fail_on;
    if !watched.is_empty() && plan.experiment.report.baseline.is_none() {
        return Err(Failure {
            error: anyhow!("fail-on {} needs a baseline to compare with", watched.join(", "))
                .hint("pass --baseline DIR (an earlier report folder), or set `baseline` under [report]"),
            kind: Kind::User,
        });
    }
    // A signal from here on gets the watchdog's grace: the run records what completed,
    // and a report being published is written whole.
    let _listening = crate::interrupt::listen();
    let report_dest = plan.experiment.base_dir.join(&plan.experiment.report.dir);
    // A folder the report cannot go into is refused before anything is measured.
    exec::check_report_dir(&report_dest, &plan.experiment.name).map_err(publish_failure)?;
    eprintln!("pipeline: {} ({} cells, {} steps): {}", source.display, plan.cells.len(), plan.steps.len(), counts_line(&statuses));
    let sim_bin = std::env::current_exe().map_err(|e| fail(Kind::Environment)(e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(Kind::Environment)(e.into()))?;
    let slurm = match plan.experiment.executor {
        config::ExecutorKind::Slurm => Some(rt.block_on(slurm::setup(cache, file, &plan, &statuses, &sim_bin))?),
        config::ExecutorKind::Local => None,
    };
    let plan = Arc::new(plan);
    let remote = slurm.clone().map(|sx| sx as Arc<dyn exec::Remote>);
    let opts = RunOptions { jobs, keep_going, sim_bin, remote, in_job: false };
    // A signal ends `execute` early (`interrupted`), with what completed recorded.
    let outcome = rt.block_on(exec::execute(plan.clone(), cache.clone(), statuses, opts));
    if let Ok(exec::RunSummary { interrupted: Some(signal), .. }) = outcome {
        // The watchdog ends the process 1.5 s after the signal, so the Slurm jobs are
        // cancelled first; dropping the runtime then drops every task, which removes
        // staging folders and kills servers' process groups.
        let stopped = stopped(slurm.as_deref(), signal);
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        return Ok(stopped);
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(15));
    let summary = outcome.map_err(fail(Kind::Environment))?;
    if let Some(dir) = &summary.report_dir {
        let written = exec::publish_report(dir, &report_dest, &plan.experiment.name).map_err(publish_failure)?;
        eprintln!("report: {} ({} file(s) updated)", report_dest.join("README.md").display(), written.len());
    }
    if let Some(signal) = crate::interrupt::pending() {
        return Ok(stopped(slurm.as_deref(), signal));
    }
    eprintln!("{} ran, {} cached, {} skipped, {} failed", summary.ran, summary.cached, summary.skipped, summary.failed.len());
    let regressed = match (&summary.report_dir, plan.experiment.report.fail_on.is_empty()) {
        (Some(dir), false) => gate(dir, &plan.experiment.report.fail_on)?,
        _ => false,
    };
    // The process ends right after this; freeing a 100k-step plan only costs time.
    std::mem::forget(plan);
    if summary.failed.is_empty() {
        Ok(if regressed { Outcome::Regressed } else { Outcome::Done })
    } else {
        for (id, e) in &summary.failed {
            eprintln!("failed: {id}: {}", e.message.lines().next().unwrap_or_default());
        }
        if !keep_going {
            eprintln!("hint: --keep-going runs the independent steps too");
        }
        Ok(Outcome::StepsFailed)
    }
}

/// `fail-on`: whether the report in `dir` holds a watched metric that is worse than
/// the baseline's; each such row is printed.
fn gate(dir: &Path, fail_on: &[String]) -> Result<bool, Failure> {
    use steps::report::baseline::{self, Comparison};
    let path = dir.join(baseline::FILE);
    let comparison: Comparison = std::fs::read(&path)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
        .map_err(|e| fail(Kind::Environment)(e.context(format!("reading {}", path.display()))))?;
    if let Some(note) = &comparison.note {
        // A gate that compared nothing would pass every change: refuse it.
        let error = anyhow::anyhow!("fail-on: nothing was compared with `{}`: {note}", comparison.dir)
            .hint("--baseline takes an earlier report of this experiment (same axes, same models and variants)");
        return Err(fail(Kind::User)(error));
    }
    if !comparison.not_compared.is_empty() {
        let n = comparison.not_compared.len();
        let shown: Vec<&str> = comparison.not_compared.iter().take(5).map(String::as_str).collect();
        let more = if n > shown.len() { format!(" and {} more", n - shown.len()) } else { String::new() };
        eprintln!(
            "fail-on: {n} curve metric(s) have no counterpart in {} and are not compared: {}{more}",
            comparison.dir,
            shown.join("; ")
        );
    }
    let worse = baseline::regressions(&comparison, fail_on);
    if worse.is_empty() {
        eprintln!("fail-on {}: nothing is worse than {} beyond ±{}% noise", fail_on.join(", "), comparison.dir, comparison.noise);
        return Ok(false);
    }
    eprintln!(
        "regression: {} metric(s) worse than {} beyond ±{}% noise (fail-on {}):",
        worse.len(),
        comparison.dir,
        comparison.noise,
        fail_on.join(", ")
    );
    for r in worse {
        eprintln!("  {}  {}: {} → {} ({}, interval {})", r.curve, r.metric, r.before, r.after, r.change, r.interval);
    }
    Ok(true)
}

fn publish_failure(e: exec::PublishError) -> Failure {
    let (kind, error) = e.into_failure();
    Failure { kind, error }
}

/// After a signal stopped the run (servers are stopped, staging folders removed):
/// cancel its Slurm jobs, say what is kept, and end as interrupted.
fn stopped(slurm: Option<&crate::slurm::SlurmExec>, signal: crate::interrupt::Signal) -> Outcome {
    if let Some(sx) = slurm {
        let ids = sx.tracker.cancel_all();
        if !ids.is_empty() {
            eprintln!("cancelled Slurm job(s) {}", ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
        }
    }
    eprintln!("interrupted: completed steps are kept in the cache; run the same command again to resume");
    Outcome::Interrupted(signal)
}

fn status(cache: &Cache, file: Option<&Path>, executor: Option<config::ExecutorKind>) -> Result<Outcome, Failure> {
    let (source, plan) = load_with(file, |experiment| {
        set_executor(experiment, executor);
        Ok(())
    })?;
    let (plan, _) = searched(cache, plan, &[])?;
    let statuses = plan.status(cache, &Selection::default());
    let mut text = format!("{}:\n", source.display);
    for kind in ["datagen", "measure", "import", "aggregate", "report"] {
        let of_kind: Vec<&StepStatus> = plan.steps.iter().zip(&statuses).filter(|(s, _)| s.kind.name() == kind).map(|(_, st)| st).collect();
        if of_kind.is_empty() && kind == "import" {
            continue;
        }
        let fresh = of_kind.iter().filter(|s| s.state == State::Fresh).count();
        text.push_str(&format!("  {kind:<10} {fresh}/{} up to date\n", of_kind.len()));
    }
    let report = plan.experiment.base_dir.join(&plan.experiment.report.dir).join("README.md");
    text.push_str(&format!("  report     {}\n", if report.exists() { report.display().to_string() } else { "not written yet".into() }));
    text.push_str(&slurm::jobs(cache, &cache.record_name(&plan.experiment)));
    out(&text).map(|_| Outcome::Done)
}

fn dag(file: Option<&Path>, format: DagFormat) -> Result<Outcome, Failure> {
    let (_, plan) = load(file)?;
    let mut text = String::new();
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    match format {
        DagFormat::Dot => {
            text.push_str("digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n");
            for s in &plan.servers {
                text.push_str(&format!("  {} [style=dashed];\n", quote(&s.id)));
            }
            for step in &plan.steps {
                text.push_str(&format!("  {};\n", quote(&step.id)));
                for &d in &step.deps {
                    text.push_str(&format!("  {} -> {};\n", quote(&plan.steps[d].id), quote(&step.id)));
                }
                if let Some(s) = step.server {
                    text.push_str(&format!("  {} -> {} [style=dashed];\n", quote(&plan.servers[s].id), quote(&step.id)));
                }
            }
            text.push_str("}\n");
        }
        DagFormat::Mermaid => {
            // Mermaid labels take no backslash escapes: a quote is the entity `#quot;`.
            let label = |s: &str| format!("\"{}\"", s.replace('"', "#quot;"));
            text.push_str("flowchart LR\n");
            for (i, s) in plan.servers.iter().enumerate() {
                text.push_str(&format!("  s{i}([{}])\n", label(&s.id)));
            }
            for (i, step) in plan.steps.iter().enumerate() {
                text.push_str(&format!("  n{i}[{}]\n", label(&step.id)));
                for &d in &step.deps {
                    text.push_str(&format!("  n{d} --> n{i}\n"));
                }
                if let Some(s) = step.server {
                    text.push_str(&format!("  s{s} -.-> n{i}\n"));
                }
            }
        }
    }
    out(&text).map(|_| Outcome::Done)
}

fn gc(cache: &Cache) -> Result<Outcome, Failure> {
    let _lock = cache.lock()?;
    let keep: HashSet<String> = cache.all_runs()?.into_iter().flat_map(|(_, records)| records.into_values().map(|r| r.key)).collect();
    let (n, bytes) = cache.gc(&keep)?;
    eprintln!(
        "removed {n} cache entries ({:.1} MB); kept {} referenced by the last run of each experiment",
        bytes as f64 / 1e6,
        keep.len()
    );
    Ok(Outcome::Done)
}

fn sim_server(a: SimArgs) -> Result<Outcome, Failure> {
    let params = a.params;
    if let Some((key, message)) = params.problems().into_iter().next() {
        return Err(Failure { error: anyhow!("--{key} {message}"), kind: Kind::User });
    }
    let addr: std::net::SocketAddr =
        format!("{}:{}", a.host, a.port).parse().map_err(|e: std::net::AddrParseError| fail(Kind::User)(e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(Kind::Environment)(e.into()))?;
    let opts = sim::SimOptions {
        served_name: a.served_model_name,
        params,
        seed: a.seed,
        reject_first: a.reject_first,
        limit_images: a.limit_images,
        crash_at: a.crash_at,
        otlp_traces_endpoint: a.otlp_traces_endpoint,
    };
    rt.block_on(async {
        tokio::select! {
            r = sim::serve(addr, opts) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
    .map_err(fail(Kind::Environment))?;
    Ok(Outcome::Done)
}
