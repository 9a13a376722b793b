//! The commands behind the CLI: load, plan, execute, print. Errors are classified here
//! into the exit codes of [`crate::exit`].

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;

use crate::cache::{Cache, CacheError};
use crate::cli::{CacheCommand, Cli, Command, DagFormat, SimArgs, Target};
use crate::config::{self, Source};
use crate::exec::{self, RunOptions};
use crate::plan::{Plan, Selection, State, StepStatus};
use crate::{exit, matrix, sim, steps};

/// An error with the exit code it earns.
pub struct Failure {
    pub error: anyhow::Error,
    pub code: i32,
}

fn fail(code: i32) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { error, code }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure { error: e.into(), code: exit::USER }
    }
}

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        let hint = matches!(e, CacheError::Locked(_));
        let error = anyhow::Error::from(e);
        let error = if hint {
            error.context("cannot lock the cache\nhint: wait for the other run to finish, or point one of them at another --cache")
        } else {
            error
        };
        Failure { error, code: exit::ENVIRONMENT }
    }
}

pub fn dispatch(cli: Cli) -> Result<i32, Failure> {
    let cache = Cache::new(&cli.cache);
    match cli.command {
        Command::Run { target, jobs, keep_going } => run(&cache, &target, jobs, keep_going),
        Command::Plan { target, json } => plan_cmd(&cache, &target, json),
        Command::Status { file, executor } => status(&cache, file.as_deref(), executor),
        Command::Report { file, baseline, noise_pct, executor } => {
            report(&cache, file.as_deref(), baseline.as_deref(), noise_pct, executor)
        }
        Command::Templates { dir } => templates(&dir),
        Command::Dag { file, format } => dag(file.as_deref(), format),
        Command::Cache { command: CacheCommand::Gc } => gc(&cache),
        Command::SimServer(args) => sim_server(args),
        Command::SlurmJob { spec } => slurm_job(&cache, &spec),
    }
}

fn load(file: Option<&Path>) -> Result<(Source, Plan), Failure> {
    load_with(file, |_| Ok(()))
}

/// Load `run`'s and `plan`'s target, with `--executor` applied.
fn load_target(target: &Target) -> Result<(Source, Plan), Failure> {
    load_with(target.file.as_deref(), |experiment| {
        if let Some(kind) = target.executor {
            experiment.executor = kind;
        }
        Ok(())
    })
}

/// Load and plan, letting `adjust` change the experiment first (command-line overrides).
fn load_with(file: Option<&Path>, adjust: impl FnOnce(&mut config::Experiment) -> Result<(), Failure>) -> Result<(Source, Plan), Failure> {
    let source = match file {
        Some(f) => Source::read(f)?,
        None => Source::demo(),
    };
    let mut experiment = config::load(&source)?;
    experiment.report.provenance = steps::report::provenance(file, &source.display);
    adjust(&mut experiment)?;
    let cells = matrix::expand(&experiment, &source)?;
    let hardware = match experiment.executor {
        config::ExecutorKind::Local => steps::telemetry::hardware_identity(),
        config::ExecutorKind::Slurm => experiment.slurm.hardware(),
    };
    let plan = Plan::build(experiment, cells, hardware).map_err(|e| fail(exit::USER)(e.into()))?;
    Ok((source, plan))
}

fn selection(target: &Target, plan: &Plan) -> Result<Selection, Failure> {
    let axes: Vec<String> =
        config::BUILTIN_AXES.iter().map(|s| s.to_string()).chain(plan.experiment.matrix.custom.iter().map(|c| c.name.clone())).collect();
    for (axis, _) in &target.only {
        if !axes.contains(axis) {
            let hint = config::closest(axis, axes.iter().map(String::as_str))
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| format!("axes: {}", axes.join(", ")));
            return Err(Failure { error: anyhow!("--only: `{axis}` is not an axis\nhint: {hint}"), code: exit::USER });
        }
    }
    Ok(Selection { only: target.only.clone(), kinds: target.kind.clone(), force: target.force })
}

/// Write to stdout; a closed pipe (`pipeline plan | head`) ends quietly.
fn out(text: &str) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(exit::OK),
        r => r.map_err(|e| fail(exit::ENVIRONMENT)(e.into())),
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Fresh => "fresh",
        State::Run => "run",
        State::Wait => "wait",
        State::Skip => "skip",
    }
}

fn plan_cmd(cache: &Cache, target: &Target, json: bool) -> Result<i32, Failure> {
    let (source, plan) = load_target(target)?;
    let sel = selection(target, &plan)?;
    let statuses = plan.status(cache, &sel);
    let text = plan_text(&source, &plan, &statuses, json);
    // The process ends right after this; freeing a 100k-step plan only costs time.
    std::mem::forget((plan, statuses));
    out(&text).map(|_| exit::OK)
}

fn plan_text(source: &Source, plan: &Plan, statuses: &[StepStatus], json: bool) -> String {
    let mut text = String::new();
    if json {
        for &i in &plan.order {
            let (step, st) = (&plan.steps[i], &statuses[i]);
            let coords: serde_json::Map<String, serde_json::Value> =
                step.coords.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let mut obj = serde_json::json!({"id": step.id, "kind": step.kind.name(), "coords": coords, "key": st.key.map(|k| k.hex()), "state": state_name(st.state), "reasons": st.reasons, "server": step.server.map(|s| plan.servers[s].id.clone())});
            if plan.experiment.executor == config::ExecutorKind::Slurm
                && let Some(s) = step.server
                && plan.servers[s].backend.launches()
            {
                obj["job"] = exec::group_job_name(plan, s).into();
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
        text.push_str(&format!("  {:<6} {}{why}\n", state_name(st.state), step.id));
    }
    let needed = server_needs(plan, statuses);
    if plan.experiment.executor == config::ExecutorKind::Slurm {
        text.push_str(&slurm_plan(plan, &needed));
    } else {
        for (s, spec) in plan.servers.iter().enumerate() {
            let note = if needed[s] == 0 { "not needed".to_string() } else { format!("starts for {} measure step(s)", needed[s]) };
            text.push_str(&format!("  {:<6} {}  ({note})\n", "svc", spec.id));
        }
    }
    text.push_str(&counts_line(statuses));
    text.push('\n');
    text
}

/// Under `--executor slurm`: the job each server group becomes, with what it asks for.
fn slurm_plan(plan: &Plan, needed: &[usize]) -> String {
    let slurm = &plan.experiment.slurm;
    let mut text = String::new();
    for (s, spec) in plan.servers.iter().enumerate() {
        if !spec.backend.launches() {
            let note = format!("{} measure step(s) to run, from here: a remote API needs no node", needed[s]);
            text.push_str(&format!("  {:<6} {}  ({note})\n", "here", spec.id));
            continue;
        }
        let name = exec::group_job_name(plan, s);
        let args = crate::slurm::resource_args(slurm, spec.gpus_needed).join(" ");
        let gpus = match spec.gpus_needed {
            0 => "no GPU".to_string(),
            n => format!("{n} GPU(s)"),
        };
        let note = match needed[s] {
            0 => "not needed: every measure is cached".to_string(),
            n => format!("{n} measure step(s) of {}, {gpus}", spec.id),
        };
        text.push_str(&format!("  {:<6} {name}  sbatch {args}  ({note})\n", "job"));
    }
    let cpu = if slurm.cpu_steps_on_slurm { "one small Slurm job each" } else { "here" };
    text.push_str(&format!("  {:<6} datagen, aggregate and report run {cpu} ([slurm] cpu-steps)\n", "job"));
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

fn run(cache: &Cache, target: &Target, jobs: usize, keep_going: bool) -> Result<i32, Failure> {
    let (source, plan) = load_target(target)?;
    let sel = selection(target, &plan)?;
    let _lock = cache.lock()?;
    let statuses = plan.status(cache, &sel);
    execute(cache, source, target.file.as_deref(), plan, statuses, jobs, keep_going)
}

/// Re-render the report from cached measurements: aggregate and report run if they
/// must, nothing is measured.
fn report(
    cache: &Cache,
    file: Option<&Path>,
    baseline: Option<&Path>,
    noise_pct: Option<f64>,
    executor: Option<config::ExecutorKind>,
) -> Result<i32, Failure> {
    let (source, plan) = load_with(file, |experiment| {
        if let Some(kind) = executor {
            experiment.executor = kind;
        }
        if let Some(dir) = baseline {
            if !dir.join("seeds.parquet").is_file() {
                return Err(Failure {
                    error: anyhow!(
                        "--baseline {}: no seeds.parquet there\nhint: pass an earlier report folder, e.g. a copy of {}",
                        dir.display(),
                        experiment.report.dir.display()
                    ),
                    code: exit::USER,
                });
            }
            experiment.report.baseline = Some(dir.to_path_buf());
        }
        if let Some(n) = noise_pct {
            experiment.report.noise_pct = n;
        }
        Ok(())
    })?;
    let _lock = cache.lock()?;
    let sel = Selection { kinds: vec![crate::plan::StepKind::Report], ..Selection::default() };
    let statuses = plan.status(cache, &sel);
    let missing: Vec<&str> = plan
        .steps
        .iter()
        .zip(&statuses)
        .filter(|(s, st)| matches!(s.kind, crate::plan::StepKind::Measure | crate::plan::StepKind::Datagen) && st.state != State::Fresh)
        .map(|(s, _)| s.id.as_str())
        .collect();
    if let Some(first) = missing.first() {
        return Err(Failure {
            error: anyhow!(
                "{} step(s) have no cached results, e.g. {first}; `pipeline report` renders only what is measured\nhint: run `pipeline run{}` first",
                missing.len(),
                file.map(|f| format!(" {}", f.display())).unwrap_or_default()
            ),
            code: exit::USER,
        });
    }
    execute(cache, source, file, plan, statuses, 2, false)
}

/// `pipeline templates DIR`: the embedded report templates, to edit and point
/// `[report] templates` at.
fn templates(dir: &Path) -> Result<i32, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    for (name, text) in steps::report::TEMPLATES {
        let path = dir.join(name);
        if path.exists() {
            return Err(Failure {
                error: anyhow!("{} exists; not overwriting it\nhint: pick an empty folder", path.display()),
                code: exit::USER,
            });
        }
        std::fs::write(&path, text).map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("next: set `templates = \"{}\"` under [report] in your experiment file", dir.display());
    Ok(exit::OK)
}

fn execute(
    cache: &Cache,
    source: Source,
    file: Option<&Path>,
    plan: Plan,
    statuses: Vec<StepStatus>,
    jobs: usize,
    keep_going: bool,
) -> Result<i32, Failure> {
    eprintln!("pipeline: {} ({} cells, {} steps): {}", source.display, plan.cells.len(), plan.steps.len(), counts_line(&statuses));
    let report_dest = plan.experiment.base_dir.join(&plan.experiment.report.dir);
    let sim_bin = std::env::current_exe().map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    let slurm = match plan.experiment.executor {
        config::ExecutorKind::Slurm => Some(rt.block_on(slurm_setup(cache, file, &plan, &statuses, &sim_bin))?),
        config::ExecutorKind::Local => None,
    };
    let plan = Arc::new(plan);
    let opts = RunOptions { jobs, keep_going, sim_bin, slurm: slurm.clone(), in_job: false };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = exec::execute(plan.clone(), cache.clone(), statuses, opts) => Some(r),
            _ = interrupted() => None,
        }
    });
    // Dropping the runtime drops every task: staging folders are removed and servers'
    // process groups are killed before we return.
    rt.shutdown_timeout(std::time::Duration::from_secs(15));
    let Some(summary) = outcome else {
        if let Some(sx) = &slurm {
            let ids = sx.tracker.cancel_all();
            if !ids.is_empty() {
                eprintln!("cancelled Slurm job(s) {}", ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
            }
        }
        eprintln!("interrupted: completed steps are kept in the cache; run the same command again to resume");
        return Ok(exit::INTERRUPTED);
    };
    let summary = summary.map_err(fail(exit::ENVIRONMENT))?;
    if let Some(dir) = &summary.report_dir {
        let written = exec::publish_report(dir, &report_dest).map_err(fail(exit::ENVIRONMENT))?;
        eprintln!("report: {} ({} file(s) updated)", report_dest.join("README.md").display(), written.len());
    }
    eprintln!("{} ran, {} cached, {} skipped, {} failed", summary.ran, summary.cached, summary.skipped, summary.failed.len());
    // The process ends right after this; freeing a 100k-step plan only costs time.
    std::mem::forget(plan);
    if summary.failed.is_empty() {
        Ok(exit::OK)
    } else {
        for (id, e) in &summary.failed {
            eprintln!("failed: {id}: {}", e.lines().next().unwrap_or_default());
        }
        if !keep_going {
            eprintln!("hint: --keep-going runs the independent steps too");
        }
        Ok(exit::STEP_FAILED)
    }
}

/// Ctrl-C, or SIGTERM (`kill`, or Slurm ending a job): both stop a run cleanly.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Check that Slurm would take this run's jobs, before any is submitted, and set up
/// the run's job folder `cache/slurm/<run id>/`.
async fn slurm_setup(
    cache: &Cache,
    file: Option<&Path>,
    plan: &Plan,
    statuses: &[StepStatus],
    this_binary: &Path,
) -> Result<Arc<exec::SlurmExec>, Failure> {
    let settings = plan.experiment.slurm.clone();
    let mut gpu_counts = std::collections::BTreeSet::new();
    for (step, st) in plan.steps.iter().zip(statuses) {
        if matches!(st.state, State::Run | State::Wait) {
            match step.server {
                Some(s) if plan.servers[s].backend.launches() => gpu_counts.insert(plan.servers[s].gpus_needed),
                Some(_) => false,
                None if settings.cpu_steps_on_slurm => gpu_counts.insert(0),
                None => false,
            };
        }
    }
    let env = |e: std::io::Error| fail(exit::ENVIRONMENT)(e.into());
    let root = std::path::absolute(&cache.root).map_err(env)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let run_id = format!("{}-{stamp}-{}", plan.experiment.name, std::process::id());
    let dir = root.join("slurm").join(&run_id);
    let tracker = Arc::new(crate::slurm::Tracker::new(settings.clone(), run_id.clone(), dir));
    if !gpu_counts.is_empty() {
        tracker.preflight(&gpu_counts).await.map_err(|e| {
            let code = if matches!(e, crate::slurm::SlurmError::Rejected { .. }) { exit::USER } else { exit::ENVIRONMENT };
            Failure { error: e.into(), code }
        })?;
        // `pipeline status` finds the run's jobs through this.
        std::fs::create_dir_all(root.join("slurm")).map_err(env)?;
        std::fs::write(root.join("slurm").join(format!("{}.latest", plan.experiment.name)), &run_id).map_err(env)?;
    }
    let file = file.map(std::path::absolute).transpose().map_err(env)?;
    let binary = settings.binary.clone().unwrap_or_else(|| this_binary.to_path_buf());
    Ok(Arc::new(exec::SlurmExec { tracker, binary, cache: root, file }))
}

/// `pipeline slurm-job SPEC`, on a node: run the steps the submitter listed, against
/// the shared cache, and publish each one. Exits 66 when the cache (its spec, or the
/// steps' inputs) is not here: the cache is not on a filesystem this node shares.
fn slurm_job(cache: &Cache, spec_path: &Path) -> Result<i32, Failure> {
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| "this node".into());
    let no_input = |what: String| {
        eprintln!(
            "error: {what} is not visible on {node}\nhint: the cache folder must be on a filesystem the compute nodes share with the submitting machine"
        );
        Ok(crate::slurm::EXIT_NO_INPUT)
    };
    let spec: crate::slurm::JobSpec = match std::fs::read(spec_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?,
        Err(_) => return no_input(format!("the job spec {}", spec_path.display())),
    };
    let (source, plan) = load_with(spec.file.as_deref(), |experiment| {
        experiment.executor = config::ExecutorKind::Slurm;
        experiment.report.provenance = spec.provenance.clone();
        experiment.report.baseline = spec.baseline.clone();
        experiment.report.noise_pct = spec.noise_pct;
        Ok(())
    })?;
    let statuses = plan.status(cache, &Selection::default());
    let wanted: std::collections::HashMap<&str, &str> = spec.steps.iter().map(|(id, key)| (id.as_str(), key.as_str())).collect();
    let mut job_statuses = Vec::with_capacity(statuses.len());
    for (step, st) in plan.steps.iter().zip(&statuses) {
        let Some(&expected) = wanted.get(step.id.as_str()) else {
            job_statuses.push(match st.state {
                State::Fresh => st.clone(),
                _ => StepStatus { state: State::Skip, ..Default::default() },
            });
            continue;
        };
        if st.state == State::Fresh {
            job_statuses.push(st.clone());
            continue;
        }
        let mut inputs = std::collections::BTreeMap::new();
        for &d in &step.deps {
            match (&statuses[d].state, &statuses[d].output) {
                (State::Fresh, Some(out)) => inputs.insert(plan.steps[d].id.clone(), out.clone()),
                _ => return no_input(format!("input `{}` of step `{}` (in cache {})", plan.steps[d].id, step.id, cache.root.display())),
            };
        }
        let key = plan.key_for(step, inputs).digest().hex();
        if key != expected {
            return Err(Failure {
                error: anyhow!(
                    "step `{}` has key {key} on {node}, but {expected} where it was submitted\nhint: the experiment file, the `pipeline` binary or the environment differs between the two; use the same ones",
                    step.id
                ),
                code: exit::USER,
            });
        }
        job_statuses.push(StepStatus { state: State::Run, key: None, output: None, reasons: vec![format!("Slurm run {}", spec.run)] });
    }
    eprintln!("pipeline slurm-job on {node}: {} ({} step(s))", source.display, spec.steps.len());
    let sim_bin = std::env::current_exe().map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    let opts = RunOptions { jobs: 2, keep_going: spec.keep_going, sim_bin, slurm: None, in_job: true };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = exec::execute(Arc::new(plan), cache.clone(), job_statuses, opts) => Some(r),
            _ = interrupted() => None,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(15));
    let Some(summary) = outcome else {
        eprintln!("interrupted (cancelled, or the time limit): every published step is kept");
        return Ok(exit::INTERRUPTED);
    };
    let summary = summary.map_err(fail(exit::ENVIRONMENT))?;
    eprintln!("{} of {} step(s) published, {} failed", summary.ran, spec.steps.len(), summary.failed.len());
    Ok(if summary.failed.is_empty() { exit::OK } else { exit::STEP_FAILED })
}

fn status(cache: &Cache, file: Option<&Path>, executor: Option<config::ExecutorKind>) -> Result<i32, Failure> {
    let (source, plan) = load_with(file, |experiment| {
        if let Some(kind) = executor {
            experiment.executor = kind;
        }
        Ok(())
    })?;
    let statuses = plan.status(cache, &Selection::default());
    let mut text = format!("{}:\n", source.display);
    for kind in ["datagen", "measure", "aggregate", "report"] {
        let of_kind: Vec<&StepStatus> = plan.steps.iter().zip(&statuses).filter(|(s, _)| s.kind.name() == kind).map(|(_, st)| st).collect();
        let fresh = of_kind.iter().filter(|s| s.state == State::Fresh).count();
        text.push_str(&format!("  {kind:<10} {fresh}/{} up to date\n", of_kind.len()));
    }
    let report = plan.experiment.base_dir.join(&plan.experiment.report.dir).join("README.md");
    text.push_str(&format!("  report     {}\n", if report.exists() { report.display().to_string() } else { "not written yet".into() }));
    text.push_str(&slurm_jobs(cache, &plan.experiment.name));
    out(&text).map(|_| exit::OK)
}

/// The jobs of the experiment's last Slurm run; while that run is going (it holds the
/// cache lock), their states come fresh from one `squeue` call.
fn slurm_jobs(cache: &Cache, experiment: &str) -> String {
    let slurm = cache.root.join("slurm");
    let Ok(run) = std::fs::read_to_string(slurm.join(format!("{experiment}.latest"))) else { return String::new() };
    let Some(mut file) = std::fs::read(slurm.join(run.trim()).join(crate::slurm::JOBS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::slurm::RunFile>(&b).ok())
    else {
        return String::new();
    };
    let going = cache.lock().is_err();
    if going {
        let ids: Vec<u64> = file.jobs.iter().map(|j| j.id).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(Ok(found)) = rt.map(|rt| rt.block_on(crate::slurm::query(&ids))) {
            for job in &mut file.jobs {
                if let Some(info) = found.get(&job.id) {
                    job.info = info.clone();
                }
            }
        }
    }
    let mut text = format!("  slurm      run {} ({}), {} job(s):\n", file.run, if going { "going" } else { "finished" }, file.jobs.len());
    for job in &file.jobs {
        let i = &job.info;
        let why = match (i.state.as_str(), i.reason.as_str()) {
            (_, "" | "None") => String::new(),
            (_, reason) => format!(" ({reason})"),
        };
        let node = if i.node.is_empty() || i.node == "(null)" { String::new() } else { format!(" on {}", i.node) };
        text.push_str(&format!(
            "    {:>8}  {:<10} {}  {} step(s){node}{why}\n      log {}\n",
            job.id,
            i.state,
            job.name,
            job.steps.len(),
            job.log.display()
        ));
    }
    text
}

fn dag(file: Option<&Path>, format: DagFormat) -> Result<i32, Failure> {
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
            text.push_str("flowchart LR\n");
            for (i, s) in plan.servers.iter().enumerate() {
                text.push_str(&format!("  s{i}([{}])\n", quote(&s.id)));
            }
            for (i, step) in plan.steps.iter().enumerate() {
                text.push_str(&format!("  n{i}[{}]\n", quote(&step.id)));
                for &d in &step.deps {
                    text.push_str(&format!("  n{d} --> n{i}\n"));
                }
                if let Some(s) = step.server {
                    text.push_str(&format!("  s{s} -.-> n{i}\n"));
                }
            }
        }
    }
    out(&text).map(|_| exit::OK)
}

fn gc(cache: &Cache) -> Result<i32, Failure> {
    let _lock = cache.lock()?;
    let keep: HashSet<String> = cache.all_runs().into_iter().flat_map(|(_, records)| records.into_values().map(|r| r.key)).collect();
    let (n, bytes) = cache.gc(&keep)?;
    eprintln!(
        "removed {n} cache entries ({:.1} MB); kept {} referenced by the last run of each experiment",
        bytes as f64 / 1e6,
        keep.len()
    );
    Ok(exit::OK)
}

fn sim_server(a: SimArgs) -> Result<i32, Failure> {
    let params = config::SimParams {
        ttft_base_ms: a.ttft_base_ms,
        prefill_us_per_token: a.prefill_us_per_token,
        itl_base_ms: a.itl_base_ms,
        itl_us_per_inflight: a.itl_us_per_inflight,
        jitter: a.jitter,
        prefix_caching: a.prefix_caching,
        answer_tokens: a.answer_tokens,
    };
    let addr: std::net::SocketAddr =
        format!("{}:{}", a.host, a.port).parse().map_err(|e: std::net::AddrParseError| fail(exit::USER)(e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(exit::ENVIRONMENT)(e.into()))?;
    let opts = sim::SimOptions {
        served_name: a.served_model_name,
        params,
        seed: a.seed,
        reject_first: a.reject_first,
        limit_images: a.limit_images,
        crash_at: a.crash_at,
    };
    rt.block_on(async {
        tokio::select! {
            r = sim::serve(addr, opts) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
    .map_err(fail(exit::ENVIRONMENT))?;
    Ok(exit::OK)
}
