//! Submitting, following and cancelling one run's jobs, through Slurm's own tools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::{Notify, watch};

use super::state::{JobInfo, JobState, parse_sacct, parse_squeue};
use super::{JOBS_FILE, RunFile};
use crate::config::SlurmSettings;
use crate::error::WithHint;

/// One job this run submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub id: u64,
    pub name: String,
    pub log: PathBuf,
    pub steps: Vec<String>,
    pub gpus: u32,
    pub info: JobInfo,
}

/// A job to submit: its name, the GPUs it holds, its folder and the command it runs.
pub struct JobRequest {
    pub name: String,
    pub gpus: u32,
    pub dir: PathBuf,
    pub command: Vec<String>,
    pub steps: Vec<String>,
}

/// Why Slurm cannot take a run's jobs; the exit code depends on which ([`SlurmError::kind`]),
/// and so does the hint ([`SlurmError::hint`]). Slurm's own words stay in the message.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`sbatch` is not on PATH: this machine is not a Slurm submit host")]
    Missing,
    #[error("cannot reach the Slurm controller: {0}")]
    Unreachable(String),
    #[error("Slurm refuses the job `sbatch {args}`: {message}")]
    Rejected { args: String, message: String },
    #[error("sbatch failed: {0}")]
    Other(String),
}

impl SlurmError {
    /// A job Slurm refuses needs a change to the experiment file; the rest, to the machine.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            SlurmError::Rejected { .. } => crate::error::Kind::User,
            _ => crate::error::Kind::Environment,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SlurmError::Missing => Some("run on the cluster's login node, or here with --executor local"),
            SlurmError::Unreachable(_) => Some("`scontrol ping` says whether slurmctld is up; or run here with --executor local"),
            SlurmError::Rejected { .. } => {
                Some("`sinfo -o \"%P %G %l\"` lists the partitions, GRES and time limits; fix [slurm] in the experiment file")
            }
            SlurmError::Other(_) => None,
        }
    }

    /// The error with its hint beside it.
    pub fn into_error(self) -> anyhow::Error {
        let hint = self.hint();
        let error = anyhow::Error::from(self);
        match hint {
            Some(hint) => error.hint(hint),
            None => error,
        }
    }
}

impl From<SlurmError> for crate::error::Failure {
    fn from(e: SlurmError) -> Self {
        crate::error::Failure { kind: e.kind(), error: e.into_error() }
    }
}

/// A submitted job, when it was submitted, and where its state is announced.
struct Tracked {
    job: Submitted,
    since: Instant,
    tx: watch::Sender<JobInfo>,
}

/// Submits, follows and cancels the jobs of one run.
pub struct Tracker {
    settings: SlurmSettings,
    pub run_id: String,
    /// `cache/slurm/<run id>/`: job folders and `jobs.json`.
    pub dir: PathBuf,
    jobs: Mutex<BTreeMap<u64, Tracked>>,
    wake: Notify,
    accounting: Mutex<Option<bool>>,
}

impl Tracker {
    pub fn new(settings: SlurmSettings, run_id: String, dir: PathBuf) -> Tracker {
        Tracker { settings, run_id, dir, jobs: Mutex::new(BTreeMap::new()), wake: Notify::new(), accounting: Mutex::new(None) }
    }

    fn comment(&self) -> String {
        format!("pipeline-run={}", self.run_id)
    }

    pub fn resource_args(&self, gpus: u32) -> Vec<String> {
        resource_args(&self.settings, gpus)
    }

    /// Before anything is submitted: is there a Slurm, and would it take each kind of
    /// job (`sbatch --test-only`)? Slurm's own message is shown when it would not.
    pub async fn preflight(&self, gpu_counts: &BTreeSet<u32>) -> Result<(), SlurmError> {
        for &gpus in gpu_counts {
            let args = self.resource_args(gpus);
            let out = sbatch(args.iter().map(String::as_str).chain(["--test-only", "--wrap", "true"])).await?;
            if !out.status.success() {
                let message = slurm_message(&out.stderr);
                return Err(classify(&args.join(" "), message));
            }
        }
        Ok(())
    }

    /// Submit a job. A transient error ("Socket timed out") is retried, but only after
    /// checking that the failed attempt did not in fact create the job.
    pub async fn submit(&self, req: JobRequest) -> Result<u64> {
        std::fs::create_dir_all(&req.dir)?;
        let script = req.dir.join("job.sh");
        let quoted: Vec<String> = req.command.iter().map(|a| shell_quote(a)).collect();
        std::fs::write(
            &script,
            format!("#!/bin/sh\n# pipeline run {}: {} step(s)\nexec {}\n", self.run_id, req.steps.len(), quoted.join(" ")),
        )?;
        let log = req.dir.join("slurm-%j.log");
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", req.name),
            format!("--comment={}", self.comment()),
            format!("--output={}", log.display()),
        ];
        args.extend(self.resource_args(req.gpus));
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            let out = sbatch(args.iter().map(String::as_str).chain([script.to_str().unwrap_or_default()]))
                .await
                .map_err(SlurmError::into_error)?;
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                break parse_parsable(&text).ok_or_else(|| anyhow!("sbatch printed `{}`, not a job id", text.trim()))?;
            }
            let message = slurm_message(&out.stderr);
            if !transient(&message) || attempt >= 5 {
                return Err(classify(&self.resource_args(req.gpus).join(" "), message).into_error());
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            if let Some(id) = self.find_submitted(&req.name).await {
                break id;
            }
        };
        let log = req.dir.join(format!("slurm-{id}.log"));
        let job = Submitted {
            id,
            name: req.name,
            log,
            steps: req.steps,
            gpus: req.gpus,
            info: JobInfo { state: JobState::Pending, ..Default::default() },
        };
        let (tx, _) = watch::channel(job.info.clone());
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Tracked { job, since: Instant::now(), tx });
        self.save();
        self.wake.notify_one();
        Ok(id)
    }

    /// A job of this run named `name`, if one exists (a submission that timed out may
    /// have gone through).
    async fn find_submitted(&self, name: &str) -> Option<u64> {
        let out = Command::new("squeue").args(["-h", "-t", "all", "-n", name, "-O", "JobID:|,Comment:|"]).output().await.ok()?;
        let comment = self.comment();
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split('|');
            let id = f.next()?.trim().parse().ok()?;
            (f.next()?.trim() == comment).then_some(id)
        })
    }

    /// A receiver that sees the job's state after every poll.
    pub fn watch(&self, id: u64) -> Option<watch::Receiver<JobInfo>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|t| t.tx.subscribe())
    }

    pub fn job(&self, id: u64) -> Option<Submitted> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|t| t.job.clone())
    }

    pub fn settings(&self) -> &SlurmSettings {
        &self.settings
    }

    /// Follow every job until the task is dropped: one squeue call per interval, the
    /// interval a tenth of the age of the youngest job not yet ended (0.25 s to 15 s).
    pub async fn poll_forever(&self) {
        let mut complained = false;
        loop {
            let active: Vec<(u64, Instant)> = {
                let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                jobs.iter().filter(|(_, t)| !t.job.info.ended()).map(|(id, t)| (*id, t.since)).collect()
            };
            if active.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let ids: Vec<u64> = active.iter().map(|(id, _)| *id).collect();
            match query(&ids).await {
                Ok(mut found) => {
                    complained = false;
                    let missing: Vec<u64> = ids.iter().copied().filter(|id| !found.contains_key(id)).collect();
                    if !missing.is_empty() {
                        found.extend(self.forgotten(&missing).await);
                    }
                    let (mut never, mut changed) = (Vec::new(), false);
                    {
                        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                        for (id, info) in found {
                            if let Some(t) = jobs.get_mut(&id) {
                                if info.never_runs() {
                                    never.push(id);
                                }
                                changed |= t.job.info != info;
                                t.job.info = info.clone();
                                t.tx.send_replace(info);
                            }
                        }
                    }
                    if !never.is_empty() {
                        let _ = Command::new("scancel").args(never.iter().map(u64::to_string)).status().await;
                    }
                    // jobs.json lives on the shared filesystem: rewrite it only on news.
                    if changed {
                        self.save();
                    }
                }
                Err(e) if !complained => {
                    complained = true;
                    eprintln!("warning: cannot ask Slurm about jobs {ids:?} ({e:#}); will keep trying");
                }
                Err(_) => {}
            }
            let youngest = active.iter().map(|(_, t)| t.elapsed()).min().unwrap_or_default();
            let interval = (youngest / 10).clamp(Duration::from_millis(250), Duration::from_secs(15));
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Jobs squeue no longer lists: ask sacct where the cluster keeps accounting;
    /// otherwise they are gone without a word.
    async fn forgotten(&self, ids: &[u64]) -> BTreeMap<u64, JobInfo> {
        let have = *self.accounting.lock().unwrap_or_else(|e| e.into_inner());
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut found = BTreeMap::new();
        if have != Some(false) {
            let out = Command::new("sacct").args(["-X", "-n", "-P", "-j", &list, "-o", "JobID,State,ExitCode,NodeList"]).output().await;
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            *self.accounting.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok);
            if let Ok(out) = out.as_ref()
                && out.status.success()
            {
                found = parse_sacct(&String::from_utf8_lossy(&out.stdout));
            }
        }
        for id in ids {
            found.entry(*id).or_insert_with(|| JobInfo { state: JobState::Vanished, ..Default::default() });
        }
        found
    }

    /// `scancel` every job of this run that has not ended; returns their ids. Besides
    /// the tracked jobs, any of the user's jobs with this run's comment: an `sbatch`
    /// interrupted mid-call may have submitted one whose id never came back.
    pub fn cancel_all(&self) -> Vec<u64> {
        let mut ids: BTreeSet<u64> = {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.values().filter(|t| !t.job.info.ended()).map(|t| t.job.id).collect()
        };
        let scancel = |ids: &BTreeSet<u64>| {
            if !ids.is_empty() {
                let _ = std::process::Command::new("scancel")
                    .args(ids.iter().map(u64::to_string))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        };
        // The tracked jobs first: after a signal the watchdog gives this 1.5 s, and a
        // busy controller may take longer than that to answer `squeue`.
        scancel(&ids);
        let tracked = ids.clone();
        let comment = self.comment();
        if let Ok(out) = std::process::Command::new("squeue").args(["-h", "--me", "-O", "JobID:|,Comment:|"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut f = line.split('|');
                if let (Some(Ok(id)), Some(c)) = (f.next().map(|i| i.trim().parse::<u64>()), f.next())
                    && c.trim() == comment
                {
                    ids.insert(id);
                }
            }
        }
        scancel(&ids.difference(&tracked).copied().collect());
        let ids: Vec<u64> = ids.into_iter().collect();
        if !ids.is_empty() {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                if let Some(t) = jobs.get_mut(id) {
                    t.job.info.state = JobState::Cancelled;
                    t.job.info.reason = "run interrupted".into();
                }
            }
        }
        self.save();
        ids
    }

    /// Write `jobs.json` for `pipeline status` (atomically: it may be read meanwhile).
    fn save(&self) {
        let jobs: Vec<Submitted> = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).values().map(|t| t.job.clone()).collect();
        let file = RunFile { run: self.run_id.clone(), jobs };
        let path = self.dir.join(JOBS_FILE);
        let tmp = self.dir.join(".jobs.json.tmp");
        if std::fs::create_dir_all(&self.dir).is_ok() && std::fs::write(&tmp, serde_json::to_vec_pretty(&file).unwrap_or_default()).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// `--partition`, `--gres` and the rest, for a job holding `gpus` GPUs.
pub fn resource_args(s: &SlurmSettings, gpus: u32) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in [("partition", &s.partition), ("account", &s.account), ("time", &s.time), ("mem", &s.mem)] {
        if let Some(v) = value {
            args.push(format!("--{flag}={v}"));
        }
    }
    if let Some(n) = s.cpus_per_task {
        args.push(format!("--cpus-per-task={n}"));
    }
    if gpus > 0 {
        args.push(match &s.gpu_type {
            Some(t) => format!("--gres=gpu:{t}:{gpus}"),
            None => format!("--gres=gpu:{gpus}"),
        });
    }
    args.extend(s.sbatch_args.iter().cloned());
    args
}

/// One `squeue` call for all `ids`: the state of each job it still knows.
pub async fn query(ids: &[u64]) -> Result<BTreeMap<u64, JobInfo>> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", &list, "-O", "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|"])
        .output()
        .await?;
    let stderr = slurm_message(&out.stderr);
    if !out.status.success() {
        // All ids unknown (aged out): not an error, just nothing known.
        if stderr.contains("Invalid job id") {
            return Ok(BTreeMap::new());
        }
        bail!("squeue: {stderr}");
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// `sbatch --parsable` prints `id`, or `id;cluster` on a federation or multi-cluster.
fn parse_parsable(text: &str) -> Option<u64> {
    text.lines().next()?.split(';').next()?.trim().parse().ok()
}

async fn sbatch<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<std::process::Output, SlurmError> {
    // Killed if the run is interrupted mid-call; `Tracker::cancel_all` then finds any
    // job it submitted by the run's comment.
    Command::new("sbatch").args(args).stdin(Stdio::null()).kill_on_drop(true).output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SlurmError::Missing,
        _ => SlurmError::Other(e.to_string()),
    })
}

/// Slurm's message without the "sbatch: error:" prefixes, on one line.
fn slurm_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim().trim_start_matches("sbatch: error: ").trim_start_matches("sbatch: "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// Errors worth another try: the controller was busy, not absent.
fn transient(message: &str) -> bool {
    ["Socket timed out", "temporarily unable", "Resource temporarily unavailable", "Zero Bytes were transmitted"]
        .iter()
        .any(|p| message.contains(p))
}

fn classify(args: &str, message: String) -> SlurmError {
    if message.contains("Unable to contact slurm controller") || message.contains("Connection refused") {
        SlurmError::Unreachable(message)
    } else {
        SlurmError::Rejected { args: args.to_string(), message }
    }
}

/// `text` in single quotes for sh.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_controllers_are_retried() {
        assert!(transient("Batch job submission failed: Socket timed out on send/recv operation"));
        assert!(!transient("Batch job submission failed: Invalid partition name specified"));
        assert!(matches!(classify("", "Unable to contact slurm controller (connect failure)".into()), SlurmError::Unreachable(_)));
        assert!(matches!(classify("", "invalid partition specified: x".into()), SlurmError::Rejected { .. }));
    }

    #[test]
    fn time_limits_read_as_slurm_reads_them() {
        use crate::config::slurm_minutes;
        assert_eq!(slurm_minutes("30"), Some(30));
        assert_eq!(slurm_minutes("30:30"), Some(31), "minutes:seconds, rounded up");
        assert_eq!(slurm_minutes("02:00:00"), Some(120));
        assert_eq!(slurm_minutes("1-00"), Some(1440));
        assert_eq!(slurm_minutes("1-02:30"), Some(1590));
        assert_eq!(slurm_minutes("UNLIMITED"), Some(0));
        assert_eq!(slurm_minutes("2 hours"), None);
        assert_eq!(slurm_minutes("1:2:3:4"), None);
    }

    #[test]
    fn parsable_replies_with_and_without_a_cluster() {
        assert_eq!(parse_parsable("4242\n"), Some(4242));
        assert_eq!(parse_parsable("4242;gpu-cluster\n"), Some(4242));
        assert_eq!(parse_parsable("Submitted batch job 4242\n"), None);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
    }
}
