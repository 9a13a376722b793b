//! Steps as Slurm jobs, the run's [`Remote`]: one job per server group (and, with
//! `cpu-steps = "slurm"`, one per other step). A job task waits for its steps' inputs like a local step does,
//! submits the steps that are not cached, and counts each step done as soon as its
//! entry appears in the shared cache, so a job that dies keeps what it finished.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};

use futures_util::future::BoxFuture;

use super::FailedFile;
use super::state::JobState;
use super::tracker::{JobRequest, Tracker};
use crate::cache::Lookup;
use crate::error::Said;
use crate::exec::{Ctx, Group, Remote, finish, prepare, skip};
use crate::hash::StepKey;
use crate::plan::{Plan, ServerSpec, StepKind, StepStatus};

/// What a run needs to hand steps to Slurm.
pub struct SlurmExec {
    pub tracker: Arc<Tracker>,
    /// `pipeline` as the nodes see it.
    pub binary: PathBuf,
    /// The cache folder, absolute: the nodes use the same path.
    pub cache: PathBuf,
    /// The experiment file, absolute (none: the embedded demo).
    pub file: Option<PathBuf>,
}

impl Remote for SlurmExec {
    fn takes_server(&self, spec: &ServerSpec) -> bool {
        needs_node(spec)
    }

    fn takes_cpu_steps(&self) -> bool {
        self.tracker.settings().cpu_steps_on_slurm
    }

    fn follow(&self) -> BoxFuture<'static, ()> {
        let tracker = self.tracker.clone();
        Box::pin(async move { tracker.poll_forever().await })
    }

    fn run<'a>(&'a self, ctx: &'a Ctx, group: Group, statuses: &'a [StepStatus]) -> BoxFuture<'a, ()> {
        let (name, gpus, members) = match group {
            Group::Server { server, steps } => (group_job_name(&ctx.plan, server), ctx.plan.servers[server].gpus_needed, steps),
            Group::Step(i) => (step_job_name(&ctx.plan, i), 0, vec![i]),
        };
        Box::pin(job_task(ctx, self, name, gpus, members, statuses))
    }
}

/// The Slurm job name of server `s`'s group: `pipeline.<experiment>.<model>.<variant>`,
/// with the server's index when one model variant has several server configurations.
pub fn group_job_name(plan: &Plan, s: usize) -> String {
    let spec = &plan.servers[s];
    let clean = |t: &str| t.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>();
    let twins = plan.servers.iter().filter(|o| o.model == spec.model && o.variant == spec.variant).count();
    let mut name = format!("pipeline.{}.{}.{}", clean(&plan.experiment.name), clean(&spec.model), clean(&spec.variant));
    if twins > 1 {
        name.push_str(&format!(".{s}"));
    }
    name
}

/// Whether a server's measures go to a node: a server `pipeline` launches does; a
/// remote API needs none, so its measures run here (where the network usually is).
pub fn needs_node(spec: &ServerSpec) -> bool {
    spec.backend.launches()
}

/// The job name of a datagen, import, aggregate or report step sent to Slurm on its own.
fn step_job_name(plan: &Plan, i: usize) -> String {
    match plan.steps[i].kind {
        StepKind::Datagen | StepKind::Import => format!("pipeline.{}.{}.{i}", plan.experiment.name, plan.steps[i].kind.name()),
        kind => format!("pipeline.{}.{}", plan.experiment.name, kind.name()),
    }
}

/// Run `members` (a server group, or one step) as one Slurm job: wait for their
/// inputs, submit the steps not cached, and follow the job. Each step is done as soon
/// as its entry appears in the shared cache (the job publishes one step at a time), so
/// a job that dies keeps every step it finished.
async fn job_task(ctx: &Ctx, sx: &SlurmExec, name: String, gpus: u32, members: Vec<usize>, statuses: &[StepStatus]) {
    let mut todo: Vec<(usize, StepKey)> = Vec::new();
    // A forced step's entry may already be there: it is done when a new one replaces it
    // (publishing renames a new folder into place), not when the old one is found.
    let mut replaces: std::collections::HashMap<usize, Option<EntryId>> = std::collections::HashMap::new();
    for i in members {
        if let Some((key, _)) = prepare(ctx, i, statuses[i].forced).await {
            if statuses[i].forced {
                replaces.insert(i, entry_id(ctx, i, &key));
            }
            todo.push((i, key));
        }
    }
    if todo.is_empty() {
        return;
    }
    if ctx.stopping.load(Ordering::SeqCst) {
        todo.iter().for_each(|(i, _)| skip(ctx, *i));
        return;
    }
    let forced: Vec<usize> = replaces.keys().copied().collect();
    let id = match submit(ctx, sx, &name, gpus, &todo, &forced).await {
        Ok(id) => id,
        Err(e) => {
            let (first, rest) = todo.split_first().expect("todo is not empty");
            finish(ctx, first.0, Err(e.context(format!("submitting Slurm job `{name}`"))), first.1.digest(), true);
            rest.iter().for_each(|(i, _)| skip(ctx, *i));
            return;
        }
    };
    let run = &sx.tracker;
    let gres = if gpus > 0 { format!(", {gpus} GPU(s)") } else { String::new() };
    ctx.progress.line(&format!("submit {name}: Slurm job {id}, {} step(s){gres}", todo.len()));
    let started = Instant::now();
    let mut rx = run.watch(id).expect("a submitted job is tracked");
    let mut pending = todo;
    let (mut announced, mut waiting_for) = (false, String::new());
    loop {
        let info = rx.borrow_and_update().clone();
        // Say why a job waits (Resources, Priority, ...) each time that changes.
        if info.state == JobState::Pending && info.reason != waiting_for && !matches!(info.reason.as_str(), "" | "None") {
            waiting_for = info.reason.clone();
            ctx.progress.line(&format!("wait   {name} (job {id}): {waiting_for}"));
        }
        if info.state == JobState::Running && !announced {
            announced = true;
            ctx.progress.line(&format!("start  {name} (job {id}) on {}", info.node));
        }
        // Steps the job has published so far are done.
        pending.retain(|(i, key)| {
            let digest = key.digest();
            let old = replaces.get(i).copied().flatten();
            match ctx.cache.lookup(ctx.plan.steps[*i].kind.name(), &digest) {
                Lookup::Hit { .. } if old.is_some() && entry_id(ctx, *i, key) == old => true,
                Lookup::Hit { output_digest } => {
                    ctx.progress.finished(&ctx.plan.steps[*i].id, "done", started.elapsed());
                    finish(ctx, *i, Ok(output_digest), digest, true);
                    false
                }
                _ => true,
            }
        });
        if info.ended() {
            // Without --keep-going the job stopped at its first failure and the rest
            // never ran; with it, every step still missing failed.
            let failed_n = if ctx.keep_going { pending.len() } else { pending.len().min(1) };
            let failed = match run.job(id) {
                Some(job) => FailedFile::read(job.log.parent().unwrap_or(&run.dir), id),
                None => FailedFile::default(),
            };
            for (n, (i, key)) in pending.iter().enumerate() {
                if n >= failed_n {
                    skip(ctx, *i);
                    continue;
                }
                let job = run.job(id).expect("a submitted job is tracked");
                let why = match info.state {
                    JobState::Completed => {
                        Said::new(format!("Slurm job {id} ({name}) completed but did not publish this step\nlog: {}", job.log.display()))
                            .hint("the job ran on a node that sees another cache folder; pass --cache with a path on a shared filesystem")
                    }
                    // The step's own error, as the job wrote it, then how the job ended.
                    _ => match failed.steps.get(&ctx.plan.steps[*i].id) {
                        Some(own) => own.clone().then(info.explain(&job, run.settings())),
                        None => info.explain(&job, run.settings()),
                    },
                };
                ctx.progress.finished(&ctx.plan.steps[*i].id, "FAILED", started.elapsed());
                finish(ctx, *i, Err(why.into_error()), key.digest(), true);
            }
            return;
        }
        // Wake on the next poll, and look at the cache at least every 2 s.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.changed()).await;
    }
}

/// Which folder a cache entry is: its device and inode, new each time it is published.
type EntryId = (u64, u64);

fn entry_id(ctx: &Ctx, i: usize, key: &StepKey) -> Option<EntryId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(ctx.cache.entry_dir(ctx.plan.steps[i].kind.name(), &key.digest())).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Write the job's spec and submit it; the job id. `forced`: steps the node runs even
/// where the cache has them.
async fn submit(ctx: &Ctx, sx: &SlurmExec, name: &str, gpus: u32, todo: &[(usize, StepKey)], forced: &[usize]) -> Result<u64> {
    let run = &sx.tracker;
    let steps: Vec<(String, String)> = todo.iter().map(|(i, key)| (ctx.plan.steps[*i].id.clone(), key.digest().hex())).collect();
    let dir = run.dir.join(name);
    let report = &ctx.plan.experiment.report;
    let spec = super::JobSpec {
        run: run.run_id.clone(),
        file: sx.file.clone(),
        steps,
        keep_going: ctx.keep_going,
        provenance: report.provenance.clone(),
        baseline: report.baseline.as_ref().map(|b| std::path::absolute(b).unwrap_or_else(|_| b.clone())),
        noise_pct: report.noise_pct,
        forced: forced.iter().map(|&i| ctx.plan.steps[i].id.clone()).collect(),
        cells: ctx.plan.experiment.search.is_some().then(|| ctx.plan.cells.clone()),
        search: ctx.plan.search_summary(),
    };
    let request = JobRequest {
        name: name.to_string(),
        gpus,
        command: vec![
            sx.binary.display().to_string(),
            "--cache".into(),
            sx.cache.display().to_string(),
            "slurm-job".into(),
            dir.join("spec.json").display().to_string(),
        ],
        steps: spec.steps.iter().map(|(id, _)| id.clone()).collect(),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("spec.json"), serde_json::to_vec_pretty(&spec).unwrap_or_default()))
        .with_context(|| format!("cannot write the job's spec into {}", dir.display()))?;
    run.submit(request).await
}
