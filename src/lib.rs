//! `pipeline`: a declarative experiment pipeline engine for benchmarking
//! vision-language-model inference.
//!
//! The data flow is the map of the code:
//! [`config`] (read and validate the experiment file) → [`matrix`] (expand axes into
//! cells) → [`plan`] (cells into a DAG of steps) → [`hash`] + [`cache`] (what is up to
//! date, and why not) → [`exec`] (schedule and run steps, own server processes, or hand
//! server groups to [`slurm`] as jobs) →
//! [`steps`] (datagen, measure, aggregate, report) → files in `cache/` and `reports/`.
//! With `[search]`, [`search`] walks each curve's searched axis to the largest value
//! that meets the SLO (or peak goodput) instead of sweeping it: its walks choose the
//! probe cells that `plan` then plans (the rounds are in `commands::search`), and the
//! report draws its summary. [`sim`] is the built-in simulator server used by the demo
//! and the tests.
//!
//! Beside the stages, what several of them use: [`client`] (one timed chat request
//! over HTTP), [`gpu`] (NVML identity and telemetry), [`clock`] (the timestamps'
//! clock), [`secrets`] (API keys, redacted), [`processes`] (what still runs),
//! [`interrupt`] (signals: a clean stop, then a watchdog), [`untrusted`] (the one
//! escaping function for text from outside), [`otlp`] (trace context sent with each
//! request, and the receiver of the server's own spans), [`records`] (one type per result table,
//! with the one writer and reader of each), [`stats`] (every statistic defined once:
//! quantiles, bootstrap intervals, Pareto fronts, the baseline's significance test,
//! SLO attainment and goodput) and [`export`] (tables as Parquet and CSV).

pub mod cache;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod conversations;
pub mod error;
pub mod exec;
pub mod export;
pub mod gpu;
pub mod hash;
pub mod interrupt;
pub mod matrix;
pub mod otlp;
pub mod plan;
pub mod processes;
pub mod quality;
pub mod records;
pub mod search;
pub mod secrets;
pub mod sim;
pub mod slurm;
pub mod stats;
pub mod steps;
pub mod trace;
pub mod untrusted;

/// Parse arguments, run the command, return the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    use clap::Parser;
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are done; anything else clap says is a user error.
            return if e.use_stderr() { error::Kind::User.code() } else { error::Outcome::Done.code() };
        }
    };
    let result = commands::dispatch(cli);
    if let Err(e) = &result {
        eprintln!("error: {}", error::render(&e.error));
    }
    error::exit_code(&result)
}
