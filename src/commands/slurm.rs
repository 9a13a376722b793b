//! The Slurm side of the commands: what `plan` says each job asks for, the checks and
//! job folder a `run` sets up before submitting, the jobs `status` shows, and
//! `pipeline slurm-job`, which a job runs on its node.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;

use super::{Failure, fail, load_with};
use crate::cache::Cache;
use crate::config;
use crate::error::{Kind, Outcome, WithHint};
use crate::exec::{self, RunOptions};
use crate::plan::{Plan, Selection, State, StepStatus};
use crate::slurm;

/// Under `--executor slurm`: the job each server group becomes, with what it asks for.
pub(super) fn plan_jobs(plan: &Plan, needed: &[usize]) -> String {
    let settings = &plan.experiment.slurm;
    let mut text = String::new();
    for (s, spec) in plan.servers.iter().enumerate() {
        if !slurm::needs_node(spec) {
            // The judge's server (`[quality] judge`) serves quality steps.
            let what = if spec.id == "server[judge]" { "quality" } else { "measure" };
            let note = format!("{} {what} step(s) to run, from here: a remote API needs no node", needed[s]);
            text.push_str(&format!("  {:<6} {}  ({note})\n", "here", spec.id));
            continue;
        }
        let name = slurm::group_job_name(plan, s);
        let args = slurm::resource_args(settings, spec.gpus_needed).join(" ");
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
    let cpu = if settings.cpu_steps_on_slurm { "one small Slurm job each" } else { "here" };
    text.push_str(&format!("  {:<6} datagen, aggregate and report run {cpu} ([slurm] cpu-steps)\n", "job"));
    text
}

/// Check that Slurm would take this run's jobs, before any is submitted, and set up
/// the run's job folder `cache/slurm/<run id>/`.
pub(super) async fn setup(
    cache: &Cache,
    file: Option<&Path>,
    plan: &Plan,
    statuses: &[StepStatus],
    this_binary: &Path,
) -> Result<Arc<slurm::SlurmExec>, Failure> {
    let settings = plan.experiment.slurm.clone();
    let mut gpu_counts = std::collections::BTreeSet::new();
    for (step, st) in plan.steps.iter().zip(statuses) {
        if matches!(st.state, State::Run | State::Wait) {
            match step.server {
                Some(s) if slurm::needs_node(&plan.servers[s]) => gpu_counts.insert(plan.servers[s].gpus_needed),
                Some(_) => false,
                None if settings.cpu_steps_on_slurm => gpu_counts.insert(0),
                None => false,
            };
        }
    }
    let env = |e: std::io::Error| fail(Kind::Environment)(e.into());
    let root = std::path::absolute(&cache.root).map_err(env)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let run_id = format!("{}-{stamp}-{}", plan.experiment.name, std::process::id());
    let dir = root.join("slurm").join(&run_id);
    let tracker = Arc::new(slurm::Tracker::new(settings.clone(), run_id.clone(), dir));
    if !gpu_counts.is_empty() {
        tracker.preflight(&gpu_counts).await?;
        // `pipeline status` finds the run's jobs through this.
        std::fs::create_dir_all(root.join("slurm")).map_err(env)?;
        std::fs::write(root.join("slurm").join(format!("{}.latest", cache.record_name(&plan.experiment))), &run_id).map_err(env)?;
    }
    let file = file.map(std::path::absolute).transpose().map_err(env)?;
    let binary = settings.binary.clone().unwrap_or_else(|| this_binary.to_path_buf());
    Ok(Arc::new(slurm::SlurmExec { tracker, binary, cache: root, file }))
}

/// `pipeline slurm-job SPEC`, on a node: run the steps the submitter listed, against
/// the shared cache, and publish each one. Exits 66 when the cache (its spec, or the
/// steps' inputs) is not here: the cache is not on a filesystem this node shares.
pub(super) fn job(cache: &Cache, spec_path: &Path) -> Result<Outcome, Failure> {
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| "this node".into());
    let no_input = |what: String| {
        let error = anyhow!("{what} is not visible on {node}")
            .hint("the cache folder must be on a filesystem the compute nodes share with the submitting machine");
        eprintln!("error: {}", crate::error::render(&error));
        Ok(Outcome::NoInput)
    };
    let spec: slurm::JobSpec = match std::fs::read(spec_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| fail(Kind::Environment)(e.into()))?,
        Err(_) => return no_input(format!("the job spec {}", spec_path.display())),
    };
    let (source, plan) = load_with(spec.file.as_deref(), |experiment| {
        experiment.executor = config::ExecutorKind::Slurm;
        experiment.report.provenance = spec.provenance.clone();
        experiment.report.baseline = spec.baseline.clone();
        experiment.report.noise_pct = spec.noise_pct;
        Ok(())
    })?;
    // A search's probes are not in the file's matrix: plan the cells the submitter did.
    let plan = match spec.cells.clone() {
        Some(cells) => {
            let mut p = Plan::build(plan.experiment, cells, plan.hardware).map_err(|e| fail(Kind::User)(e.into()))?;
            if let Some(s) = spec.search.clone() {
                p.set_search(s);
            }
            p
        }
        None => plan,
    };
    let statuses = plan.status(cache, &Selection::default());
    let wanted: std::collections::HashMap<&str, &str> = spec.steps.iter().map(|(id, key)| (id.as_str(), key.as_str())).collect();
    let forced: std::collections::HashSet<&str> = spec.forced.iter().map(String::as_str).collect();
    let mut job_statuses = Vec::with_capacity(statuses.len());
    for (step, st) in plan.steps.iter().zip(&statuses) {
        let Some(&expected) = wanted.get(step.id.as_str()) else {
            job_statuses.push(match st.state {
                State::Fresh => st.clone(),
                _ => StepStatus { state: State::Skip, ..Default::default() },
            });
            continue;
        };
        let forced = forced.contains(step.id.as_str());
        if st.state == State::Fresh && !forced {
            job_statuses.push(st.clone());
            continue;
        }
        let mut inputs = std::collections::BTreeMap::new();
        for &d in &step.deps {
            match (&statuses[d].state, &statuses[d].output) {
                (State::Fresh, Some(out)) => inputs.insert(plan.steps[d].id.clone(), out.hex()),
                _ => return no_input(format!("input `{}` of step `{}` (in cache {})", plan.steps[d].id, step.id, cache.root.display())),
            };
        }
        let key = plan.key_for(step, inputs).digest().hex();
        if key != expected {
            return Err(Failure {
                error: anyhow!("step `{}` has key {key} on {node}, but {expected} where it was submitted", step.id)
                    .hint("the experiment file, the `pipeline` binary or the environment differs between the two; use the same ones"),
                kind: Kind::User,
            });
        }
        job_statuses.push(StepStatus { state: State::Run, reasons: vec![format!("Slurm run {}", spec.run)], forced, ..Default::default() });
    }
    eprintln!("pipeline slurm-job on {node}: {} ({} step(s))", source.display, spec.steps.len());
    let sim_bin = std::env::current_exe().map_err(|e| fail(Kind::Environment)(e.into()))?;
    let opts = RunOptions { jobs: 2, keep_going: spec.keep_going, sim_bin, remote: None, in_job: true };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(Kind::Environment)(e.into()))?;
    let outcome = rt.block_on(exec::execute(Arc::new(plan), cache.clone(), job_statuses, opts));
    if let Ok(exec::RunSummary { interrupted: Some(signal), .. }) = outcome {
        // Said before the runtime is dropped: the watchdog ends the process soon.
        eprintln!("interrupted (cancelled, or the time limit): every published step is kept");
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        return Ok(Outcome::Interrupted(signal));
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(15));
    let summary = outcome.map_err(fail(Kind::Environment))?;
    eprintln!("{} of {} step(s) published, {} failed", summary.ran, spec.steps.len(), summary.failed.len());
    // The submitter shows each failed step's own error and hints from this file.
    let job_id = std::env::var("SLURM_JOB_ID").ok().and_then(|id| id.parse().ok());
    if let (Some(id), Some(dir), false) = (job_id, spec_path.parent(), summary.failed.is_empty()) {
        let failed = slurm::FailedFile { steps: summary.failed.iter().cloned().collect() };
        if let Err(e) = failed.write(dir, id) {
            eprintln!(
                "warning: cannot write {}: {e} (the log above says why the steps failed)",
                slurm::FailedFile::path(dir, id).display()
            );
        }
    }
    Ok(if summary.failed.is_empty() { Outcome::Done } else { Outcome::StepsFailed })
}

/// The jobs of the experiment's last Slurm run; while that run is going (it holds the
/// cache lock), their states come fresh from one `squeue` call.
pub(super) fn jobs(cache: &Cache, experiment: &str) -> String {
    let folder = cache.root.join("slurm");
    let Ok(run) = std::fs::read_to_string(folder.join(format!("{experiment}.latest"))) else { return String::new() };
    let Some(mut file) =
        std::fs::read(folder.join(run.trim()).join(slurm::JOBS_FILE)).ok().and_then(|b| serde_json::from_slice::<slurm::RunFile>(&b).ok())
    else {
        return String::new();
    };
    let going = cache.lock().is_err();
    if going {
        let ids: Vec<u64> = file.jobs.iter().map(|j| j.id).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(Ok(found)) = rt.map(|rt| rt.block_on(slurm::query(&ids))) {
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
