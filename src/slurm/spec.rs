//! The files a run and its jobs share through the cache folder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Submitted;

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
