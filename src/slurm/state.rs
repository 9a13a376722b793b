//! A Slurm job's state, as `squeue` and `sacct` report it, and what each end means
//! for the user.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Submitted;
use crate::config::SlurmSettings;
use crate::error::{self, Outcome, Said};

/// Slurm's job states (`squeue -O State`), with the two this module adds: `Vanished`
/// for a job neither squeue nor sacct knows any more, and `Other` for the transient
/// states a job passes through (CONFIGURING, COMPLETING, SUSPENDED, REQUEUED, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobState {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    Revoked,
    SpecialExit,
    Vanished,
    Other(String),
}

/// Each named state and Slurm's spelling of it.
const NAMES: [(JobState, &str); 14] = [
    (JobState::Pending, "PENDING"),
    (JobState::Running, "RUNNING"),
    (JobState::Completed, "COMPLETED"),
    (JobState::Failed, "FAILED"),
    (JobState::Cancelled, "CANCELLED"),
    (JobState::Timeout, "TIMEOUT"),
    (JobState::OutOfMemory, "OUT_OF_MEMORY"),
    (JobState::NodeFail, "NODE_FAIL"),
    (JobState::Preempted, "PREEMPTED"),
    (JobState::BootFail, "BOOT_FAIL"),
    (JobState::Deadline, "DEADLINE"),
    (JobState::Revoked, "REVOKED"),
    (JobState::SpecialExit, "SPECIAL_EXIT"),
    (JobState::Vanished, "VANISHED"),
];

impl JobState {
    /// Slurm's word, as squeue prints it; sacct's "CANCELLED by 0" reads as CANCELLED.
    pub fn parse(text: &str) -> JobState {
        let word = text.split_whitespace().next().unwrap_or_default();
        NAMES.iter().find(|(_, name)| *name == word).map(|(s, _)| s.clone()).unwrap_or_else(|| JobState::Other(word.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobState::Other(word) => word,
            named => NAMES.iter().find(|(s, _)| s == named).map(|(_, name)| *name).unwrap_or_default(),
        }
    }

    /// Whether a job in this state is over.
    pub fn is_end(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running | JobState::Other(_))
    }
}

impl From<String> for JobState {
    fn from(text: String) -> JobState {
        JobState::parse(&text)
    }
}

impl From<JobState> for String {
    fn from(state: JobState) -> String {
        state.as_str().to_string()
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The last known state of one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub state: JobState,
    pub reason: String,
    /// The batch script's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub node: String,
}

impl JobInfo {
    /// Whether the job has ended. A job that waits on a dependency that can never be
    /// satisfied has ended too, in effect (the caller cancels it).
    pub fn ended(&self) -> bool {
        self.state.is_end() || self.never_runs()
    }

    pub(super) fn never_runs(&self) -> bool {
        self.state == JobState::Pending && self.reason == "DependencyNeverSatisfied"
    }

    /// What happened to a job that did not complete, with its log's tail, and what to
    /// do about it as the hint.
    pub fn explain(&self, job: &Submitted, settings: &SlurmSettings) -> Said {
        let node = if self.node.is_empty() || self.node == "(null)" { String::new() } else { format!(" on {}", self.node) };
        let state = match self.reason.as_str() {
            _ if self.never_runs() => "CANCELLED (it was PENDING: DependencyNeverSatisfied)".to_string(),
            "" | "None" => self.state.to_string(),
            reason => format!("{} (reason {reason})", self.state),
        };
        let head = format!("Slurm job {} ({}){node} ended {state}", job.id, job.name);
        let time = settings.time.as_deref().unwrap_or("the partition's default");
        let (what, hint) = match &self.state {
            JobState::Failed if self.reason == "JobLaunchFailure" => (
                format!("it could not start: Slurm could not open its log {} on the node", job.log.display()),
                "the cache folder must be on a filesystem the compute nodes share (NFS, Lustre, GPFS), not /tmp or a local disk; \
                 pass --cache /shared/path, or run here with --executor local"
                    .to_string(),
            ),
            JobState::Failed if self.exit_code == Some(Outcome::NoInput.code()) => (
                "the job could not find its inputs in the cache".to_string(),
                "the cache folder must be on a filesystem the compute nodes share (NFS, Lustre, GPFS), not /tmp or a local disk; \
                 pass --cache /shared/path, or run here with --executor local"
                    .to_string(),
            ),
            // sh's "command not found" (126: found but not executable).
            JobState::Failed if self.exit_code.is_some_and(error::shell_could_not_run) => (
                format!("exit code {}: the node could not run `pipeline` at the path the job gives", self.exit_code.unwrap_or_default()),
                "put `pipeline` on a filesystem the nodes share, or set `binary` under [slurm] to its path on the nodes".to_string(),
            ),
            JobState::Failed => (
                match (self.exit_code, self.signal) {
                    (_, Some(sig)) if sig > 0 => format!("killed by signal {sig}"),
                    (Some(code), _) => format!("exit code {code}"),
                    _ => "no exit code".to_string(),
                },
                "the log says why; fix it and run again (finished steps are kept)".to_string(),
            ),
            JobState::Timeout => (
                format!("it hit its time limit (--time={time})"),
                "raise `time` under [slurm], or split the sweep with --only; finished steps are kept".to_string(),
            ),
            JobState::OutOfMemory => (
                format!("it was killed for using more memory than it asked for ({})", settings.mem.as_deref().unwrap_or("the default")),
                "raise `mem` under [slurm]; finished steps are kept".to_string(),
            ),
            JobState::Cancelled => ("it was cancelled (scancel, or an administrator)".to_string(), "run again to resume".to_string()),
            JobState::NodeFail | JobState::BootFail => {
                ("its node failed".to_string(), "run again to resume on another node; finished steps are kept".to_string())
            }
            JobState::Preempted => {
                ("a higher-priority job preempted it".to_string(), "run again to resume; finished steps are kept".to_string())
            }
            JobState::Deadline => {
                ("it could not finish before its deadline".to_string(), "remove the --deadline from sbatch-args".to_string())
            }
            JobState::Pending => (
                "it waited on a dependency that can never be satisfied".to_string(),
                "check the --dependency in [slurm] sbatch-args".to_string(),
            ),
            JobState::Vanished => (
                "Slurm no longer knows it (it ended longer ago than MinJobAge, and the cluster keeps no accounting)".to_string(),
                "the log says how it ended".to_string(),
            ),
            _ => (format!("reason {}", self.reason), "see the log".to_string()),
        };
        Said::new(format!("{head}: {what}\n{}", log_tail(&job.log))).hint(hint)
    }
}

/// The last lines of a job's log, or why there is none.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
            format!("log `{}` ends with:\n    {tail}", path.display())
        }
        Err(_) => format!("log `{}` does not exist here", path.display()),
    }
}

/// `squeue -h -O JobID:|,State:|,Reason:|,exit_code:|,NodeList:|` lines, by job id.
pub(super) fn parse_squeue(text: &str) -> BTreeMap<u64, JobInfo> {
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(id) = f.first().and_then(|s| s.parse::<u64>().ok()) else { continue };
        let status = f.get(3).and_then(|s| s.parse::<i32>().ok());
        let state = JobState::parse(f.get(1).copied().unwrap_or_default());
        // squeue reports the raw wait status: exit code in the high byte, signal low.
        let ended = state.is_end();
        found.insert(
            id,
            JobInfo {
                state,
                reason: f.get(2).copied().unwrap_or_default().to_string(),
                exit_code: status.filter(|_| ended).map(|s| (s >> 8) & 0xff),
                signal: status.filter(|_| ended).map(|s| s & 0x7f).filter(|&s| s != 0),
                node: f.get(4).copied().unwrap_or_default().to_string(),
            },
        );
    }
    found
}

/// `sacct -X -n -P -o JobID,State,ExitCode,NodeList` lines, by job id.
pub(super) fn parse_sacct(text: &str) -> BTreeMap<u64, JobInfo> {
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let (Some(id), Some(state)) = (f.first().and_then(|s| s.parse().ok()), f.get(1)) else { continue };
        let (code, sig) = f.get(2).and_then(|c| c.split_once(':')).unwrap_or(("", ""));
        let info = JobInfo {
            state: JobState::parse(state),
            reason: String::new(),
            exit_code: code.parse().ok(),
            signal: sig.parse().ok(),
            node: f.get(3).unwrap_or(&"").to_string(),
        };
        found.insert(id, info);
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn squeue_lines_become_states_with_exit_codes() {
        let text =
            "4|FAILED|NonZeroExitCode|768|vm|\n5|RUNNING|None|0|vm|\n7|PENDING|DependencyNeverSatisfied|0||\n9|CANCELLED|None|15|vm|\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs[&4].exit_code, Some(3));
        assert_eq!(jobs[&4].signal, None);
        assert!(jobs[&4].ended());
        assert!(!jobs[&5].ended());
        assert_eq!(jobs[&5].exit_code, None, "a running job has no exit code yet");
        assert!(jobs[&7].ended(), "a dependency that can never be met ends the job");
        assert_eq!(jobs[&9].signal, Some(15));
    }

    #[test]
    fn every_end_state_is_explained_with_what_to_do() {
        let job = Submitted {
            id: 42,
            name: "pipeline.x.m.base".into(),
            log: PathBuf::from("/nonexistent/slurm-42.log"),
            steps: vec![],
            gpus: 1,
            info: JobInfo::default(),
        };
        let settings = SlurmSettings { time: Some("30".into()), mem: Some("8G".into()), ..Default::default() };
        let cases = [
            ("FAILED", "NonZeroExitCode", Some(3), "exit code 3"),
            ("FAILED", "JobLaunchFailure", None, "filesystem the compute nodes share"),
            ("FAILED", "NonZeroExitCode", Some(Outcome::NoInput.code()), "could not find its inputs"),
            ("FAILED", "NonZeroExitCode", Some(127), "set `binary` under [slurm]"),
            ("TIMEOUT", "TimeLimit", None, "time limit (--time=30)"),
            ("OUT_OF_MEMORY", "OutOfMemory", None, "more memory than it asked for (8G)"),
            ("CANCELLED", "None", None, "cancelled"),
            ("NODE_FAIL", "None", None, "its node failed"),
            ("BOOT_FAIL", "None", None, "its node failed"),
            ("PREEMPTED", "None", None, "preempted"),
            ("DEADLINE", "None", None, "deadline"),
            ("PENDING", "DependencyNeverSatisfied", None, "can never be satisfied"),
            ("VANISHED", "", None, "no longer knows it"),
        ];
        for (state, reason, exit_code, expected) in cases {
            let info = JobInfo { state: JobState::parse(state), reason: reason.into(), exit_code, signal: None, node: "n1".into() };
            assert!(info.ended(), "{state} ends a job");
            let said = info.explain(&job, &settings);
            assert_eq!(said.hints.len(), 1, "one hint beside the message: {said:?}");
            let text = said.to_string();
            assert!(text.contains(expected), "{state}/{reason}: `{expected}` not in {text}");
            assert!(text.contains("Slurm job 42 (pipeline.x.m.base) on n1"), "{text}");
            assert!(text.contains("/nonexistent/slurm-42.log"), "the log's path: {text}");
        }
        for state in ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"] {
            assert!(!JobInfo { state: JobState::parse(state), ..Default::default() }.ended(), "{state} is not an end");
        }
    }

    #[test]
    fn sacct_lines_and_states_read_as_slurm_writes_them() {
        let jobs = parse_sacct("11|CANCELLED by 0|0:15|vm\n12|COMPLETED|0:0|vm\n13|REQUEUED|0:0|\n");
        assert_eq!(jobs[&11].state, JobState::Cancelled);
        assert_eq!(jobs[&11].signal, Some(15));
        assert!(jobs[&12].ended() && !jobs[&13].ended());
        for (state, name) in NAMES {
            assert_eq!(JobState::parse(name), state);
            assert_eq!(state.as_str(), name);
        }
        assert_eq!(JobState::parse("SUSPENDED"), JobState::Other("SUSPENDED".into()));
        let json = serde_json::to_string(&JobInfo { state: JobState::OutOfMemory, ..Default::default() }).unwrap();
        assert!(json.contains(r#""state":"OUT_OF_MEMORY""#), "jobs.json keeps Slurm's words: {json}");
        assert_eq!(format!("{:<9}|", JobState::Failed), "FAILED   |");
    }
}
