//! Slurm through its own command-line tools, as a user would drive it.
//!
//! A run submits with `sbatch --parsable` (job names `pipeline.<experiment>.<group>`,
//! the run id in `--comment`, logs beside each job's spec with `%j`) and follows every
//! job it owns with **one** `squeue -t all -j <ids>` call per poll; the interval is
//! short while jobs are young and backs off for long benchmarks. `sacct` is asked only
//! about ids squeue has forgotten, and only where accounting exists. Every end state
//! is mapped to a message that says what happened and what to do ([`JobInfo::explain`]).
//! Ctrl-C cancels the run's jobs with `scancel` ([`Tracker::cancel_all`]).
//!
//! What a job *runs* is `pipeline slurm-job SPEC` on the node (`pipeline slurm-job`, in `commands/slurm.rs`),
//! which executes the listed steps against the shared cache and publishes each one
//! atomically, exactly as a local run does.
//!
//! - [`state`]: a job's state, typed, and what each end means for the user;
//! - [`tracker`]: `sbatch`, `squeue`, `sacct` and `scancel` for one run's jobs;
//! - [`spec`]: the files the submitter and the node share (`spec.json`, `jobs.json`);
//! - [`executor`]: how a run hands server groups to Slurm ([`crate::exec::Remote`]).

mod executor;
mod spec;
mod state;
mod tracker;

pub use executor::{SlurmExec, group_job_name, needs_node};
pub use spec::{FailedFile, JOBS_FILE, JobSpec, RunFile};
pub use state::{JobInfo, JobState};
pub use tracker::{JobRequest, SlurmError, Submitted, Tracker, query, resource_args};
