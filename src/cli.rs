//! Command-line interface: what each command does and how to use it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A declarative experiment pipeline engine for benchmarking vision-language-model
/// inference.
///
/// An experiment file (TOML, or YAML for .yaml/.yml) names models, a matrix of axes
/// (model, variant, seed, batch size, frames, and your own), and a workload. `pipeline`
/// expands it into a DAG of content-hashed steps (datagen, measure, aggregate, report),
/// starts servers as needed, runs only what changed, and writes a report to reports/.
///
/// Without FILE, commands use the embedded demo experiment (experiments/demo.toml),
/// which measures the built-in simulator and needs no GPU.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  pipeline run                               run the embedded demo\n  pipeline plan experiments/qwen_sweep.toml  what would run, and why\n  pipeline run experiments/qwen_sweep.toml --only model=qwen-7b -j 4\n  pipeline run experiments/qwen_sweep.toml --executor slurm\n  pipeline dag experiments/demo.toml --format mermaid\n  pipeline report --baseline old-report/      compare with an earlier report\n  pipeline init --endpoint http://gpu-node:8000  start your own experiment"
)]
pub struct Cli {
    /// Cache folder for step outputs.
    #[arg(long, global = true, env = "PIPELINE_CACHE", default_value = "cache")]
    pub cache: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every step that is not up to date, then publish the report.
    ///
    /// Each step that runs is printed with the reason it runs. Completed steps are kept
    /// in the cache even when a later step fails or the run is interrupted (Ctrl-C);
    /// the next run resumes where this one stopped.
    Run {
        #[command(flatten)]
        target: Target,
        /// Steps that need no GPU run up to N at a time.
        #[arg(short = 'j', long = "jobs", default_value_t = 2)]
        jobs: usize,
        /// Keep running independent steps after a step fails.
        #[arg(short = 'k', long)]
        keep_going: bool,
    },
    /// Dry run: every step with its state and why it would run.
    Plan {
        #[command(flatten)]
        target: Target,
        /// One JSON object per line: id, kind, coords, key, state, reasons.
        #[arg(long)]
        json: bool,
    },
    /// Re-render the report from cached results, without measuring anything.
    ///
    /// Aggregation and rendering run again where their inputs changed (a template, the
    /// SLO, a baseline); every measure step must already be cached (`pipeline run`).
    /// With --baseline, the report adds the change of each across-seeds mean against
    /// an earlier report, and calls it significant only when its interval lies wholly
    /// outside the noise band.
    Report {
        /// Experiment file (default: the embedded demo).
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: Option<PathBuf>,
        /// An earlier report folder (holding seeds.parquet) to compare against.
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// Changes within ± this many percent are noise [default: 5, or [report] noise-pct].
        #[arg(long, value_name = "PCT", value_parser = parse_pct)]
        noise_pct: Option<f64>,
        /// Exit with code 4 when a metric is significantly worse than the baseline's:
        /// `worse` for any metric, or a metric to watch (repeatable), e.g.
        /// e2e_mean_ms, output_tok_per_s [default: [report] fail-on].
        #[arg(long, value_name = "WHAT", value_parser = parse_fail_on)]
        fail_on: Vec<String>,
        /// The executor the measures ran under (it names their hardware).
        #[arg(long, value_enum, value_name = "EXECUTOR")]
        executor: Option<crate::config::ExecutorKind>,
    },
    /// Write a commented experiment file to start from, for one model: served by vLLM
    /// (launched by pipeline), by an OpenAI-compatible server already running, by
    /// OpenAI's or Anthropic's API, or the built-in simulator (the default). Beside it,
    /// the experiment file's JSON Schema, for editors. Nothing is overwritten.
    Init(InitArgs),
    /// Print the JSON Schema of the experiment file, for editors that complete keys
    /// and flag typos (taplo's `#:schema` in TOML, `# yaml-language-server: $schema=`).
    Schema,
    /// Print a completion script for your shell, e.g.
    /// `pipeline completions bash > ~/.local/share/bash-completion/completions/pipeline`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Copy the embedded report templates into DIR, to edit; then set
    /// `templates = "DIR"` under [report] in the experiment file.
    Templates {
        /// Folder to write README.md.j2 and index.html.j2 into.
        dir: PathBuf,
    },
    /// How many steps of each kind are up to date, where the report is, and the Slurm
    /// jobs of the last `--executor slurm` run (live while it is going).
    Status {
        /// Experiment file (default: the embedded demo).
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: Option<PathBuf>,
        /// The executor the steps ran under (it names the measures' hardware).
        #[arg(long, value_enum, value_name = "EXECUTOR")]
        executor: Option<crate::config::ExecutorKind>,
    },
    /// Print the step graph, servers included.
    Dag {
        /// Experiment file (default: the embedded demo).
        #[arg(value_hint = clap::ValueHint::FilePath)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DagFormat::Dot)]
        format: DagFormat,
    },
    /// Manage the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Serve the built-in simulator: vLLM's OpenAI-compatible API with a modelled latency.
    SimServer(SimArgs),
    /// Run the steps a Slurm job was given (what `--executor slurm` submits; not for
    /// direct use).
    #[command(hide = true)]
    SlurmJob {
        /// The job's spec.json, written by the submitting run.
        spec: PathBuf,
    },
    /// Stop process group PGID once stdin closes: started beside every server, so that
    /// the server ends with the run however the run ends (not for direct use).
    #[command(hide = true)]
    Guard { pgid: i32 },
}

/// `pipeline init`: which model, served how, and where to write the file.
#[derive(Debug, clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("backend").multiple(false)))]
pub struct InitArgs {
    /// File to write [default: experiments/NAME.toml].
    #[arg(value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,
    /// The experiment's name (letters, digits, `-`, `_`).
    #[arg(long, default_value = "first")]
    pub name: String,
    /// A model for vLLM to serve (a Hugging Face id or a local path), e.g.
    /// Qwen/Qwen2.5-VL-7B-Instruct.
    #[arg(long, value_name = "MODEL", group = "backend")]
    pub vllm: Option<String>,
    /// GPUs per vLLM server (`--tensor-parallel-size`).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "vllm")]
    pub tensor_parallel_size: u32,
    /// An OpenAI-compatible server already running, e.g. http://gpu-node:8000; its
    /// model's name is read from its /v1/models.
    #[arg(long, value_name = "URL", group = "backend")]
    pub endpoint: Option<String>,
    /// OpenAI's API, with this model.
    #[arg(long, value_name = "MODEL", group = "backend")]
    pub openai: Option<String>,
    /// Anthropic's Messages API, with this model.
    #[arg(long, value_name = "MODEL", group = "backend")]
    pub anthropic: Option<String>,
    /// The environment variable that holds the API key (its name, never the key)
    /// [default: OPENAI_API_KEY, ANTHROPIC_API_KEY].
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// Experiment file (default: the embedded demo).
    #[arg(value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,
    /// Only cells whose AXIS has VALUE (repeatable; all must match), e.g. --only seed=66.
    #[arg(long, value_name = "AXIS=VALUE", value_parser = parse_only)]
    pub only: Vec<(String, String)>,
    /// Only steps of this kind, and the steps they read (repeatable), e.g. --kind datagen.
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Vec<crate::plan::StepKind>,
    /// Run the selected steps even if they are cached.
    #[arg(long)]
    pub force: bool,
    /// Where steps run: `local`, or `slurm` (one job per server group, settings from
    /// [slurm] in the file) [default: the file's `executor`, else local].
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<crate::config::ExecutorKind>,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..100.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100")),
    }
}

fn parse_fail_on(s: &str) -> Result<String, String> {
    crate::steps::report::baseline::fail_on_value(s)
        .map(|_| s.to_string())
        .map_err(|hint| format!("`{s}` is neither `worse` nor a metric; {hint}"))
}

fn parse_only(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(a, v)| (a.trim().to_string(), v.trim().to_string())).ok_or_else(|| format!("expected AXIS=VALUE, found `{s}`"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DagFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove entries that no experiment's last run refers to.
    Gc,
}

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on start-up).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value = "sim")]
    pub served_model_name: String,
    #[command(flatten)]
    pub params: crate::config::SimParams,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Answer the first N chat requests with 429 and `Retry-After: 0`, as a rate-limited
    /// hosted API would (to exercise clients' retries).
    #[arg(long, default_value_t = 0)]
    pub reject_first: u64,
    /// Refuse requests with more images than this, with vLLM's 400 for
    /// `--limit-mm-per-prompt` (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit_images: u64,
    /// Crash (exit with status 1, connections dropped) when the Nth chat request
    /// arrives (0: never), to exercise a server dying mid-measurement.
    #[arg(long, default_value_t = 0)]
    pub crash_at: u64,
    /// Export an `llm_request` span per request that carried a `traceparent`, as OTLP
    /// over HTTP with protobuf, to this URL (vLLM's flag of the same name).
    #[arg(long)]
    pub otlp_traces_endpoint: Option<String>,
}
