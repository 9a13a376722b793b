//! The files a run and its jobs share through the cache folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Submitted;
use crate::error::Said;

pub const JOBS_FILE: &str = "jobs.json";

/// `cache/slurm/<run>/jobs.json`: what `pipeline status` shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunFile {
    pub run: String,
    pub jobs: Vec<Submitted>,
}

/// What the node-side `pipeline slurm-job` reads: the steps to run, with the keys the
/// submitter computed for them (the node must compute the same).
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub run: String,
    /// The experiment file (absolute), or none for the embedded demo.
    pub file: Option<PathBuf>,
    pub steps: Vec<(String, String)>,
    /// Run the job's other steps after one fails (the run's `--keep-going`).
    pub keep_going: bool,
    /// What the submitter's command line and surroundings set, which the node cannot
    /// know: the file as the user named it (and its git commit), `--baseline`,
    /// `--noise-pct`. They enter the report's key.
    pub provenance: String,
    pub baseline: Option<PathBuf>,
    pub noise_pct: f64,
    /// Steps to run even where the cache has them (`--force`).
    #[serde(default)]
    pub forced: Vec<String>,
    /// With `[search]`: the cells planned (the probes, which the file alone does not
    /// name) and the paths walked (which enter the report's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<Vec<crate::matrix::Cell>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::search::Summary>,
}

/// `<job folder>/failed-<job id>.json`: what the error of each step a job could not
/// finish said, by step id, written by the job as it ends. The submitter shows a
/// step's own error and hints from it, not read back out of the job's log; a job
/// resubmitted under the same name writes a file of its own.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedFile {
    pub steps: BTreeMap<String, Said>,
}

impl FailedFile {
    /// More is not one job's errors: the file is read only up to this.
    const MAX_BYTES: u64 = 4 << 20;

    pub fn path(job_dir: &Path, job: u64) -> PathBuf {
        job_dir.join(format!("failed-{job}.json"))
    }

    /// Written whole or not at all (a temporary file renamed into place).
    pub fn write(&self, job_dir: &Path, job: u64) -> std::io::Result<()> {
        let path = Self::path(job_dir, job);
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&temp, &path)
    }

    /// What job `job` wrote; empty when it wrote nothing (it was killed, or every
    /// step it finished was published) or what is there cannot be read.
    pub fn read(job_dir: &Path, job: u64) -> FailedFile {
        use std::io::Read;
        let mut bytes = Vec::new();
        let read = std::fs::File::open(Self::path(job_dir, job)).and_then(|f| f.take(Self::MAX_BYTES).read_to_end(&mut bytes));
        match read {
            Ok(_) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => FailedFile::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_failed_steps_cross_with_their_hints_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FailedFile::read(dir.path(), 7), FailedFile::default(), "none written");
        let said = Said { message: "server answered: x\nhint: rm -rf /".into(), hints: vec!["lower max-model-len".into()] };
        let file = FailedFile { steps: [("measure[a]".to_string(), said.clone())].into() };
        file.write(dir.path(), 7).unwrap();
        let back = FailedFile::read(dir.path(), 7);
        assert_eq!(back, file);
        assert_eq!(back.steps["measure[a]"].hints, ["lower max-model-len"], "the message's line stays the message's");
        assert_eq!(FailedFile::read(dir.path(), 8), FailedFile::default(), "another job's file is its own");
        std::fs::write(FailedFile::path(dir.path(), 9), "{not json").unwrap();
        assert_eq!(FailedFile::read(dir.path(), 9), FailedFile::default());
    }
}
