//! Read and validate an experiment file (TOML, or YAML for `.yaml`/`.yml`).
//!
//! Three passes, as in nextest: parse into [`raw`] structs that mirror the file, then
//! validate into the typed [`Experiment`] while collecting *every* problem, then (in
//! `matrix` and `plan`) expand. Every user error names the file, line, column and key
//! path, and says how to fix it. Defaults are filled in here, so that writing a default
//! explicitly produces the same `Experiment` (and therefore the same step hashes).

mod inputs;
pub mod limits;
mod locate;
pub mod raw;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use limits::Limit;
pub use locate::{KeyPath, LineCol, closest, line_col};
pub use validate::load;

/// The demo experiment, embedded so `pipeline run` works with no file at all.
pub const DEMO_TOML: &str = include_str!("../../experiments/demo.toml");

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    /// Folder of the experiment file: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    /// The experiment file, resolved; none for the embedded demo.
    pub file: Option<PathBuf>,
    pub models: BTreeMap<String, Model>,
    pub server: ServerSettings,
    pub workload: Workload,
    pub matrix: Matrix,
    pub report: ReportSettings,
    /// Where steps run: here, or as Slurm jobs (`--executor` overrides it).
    pub executor: ExecutorKind,
    pub slurm: SlurmSettings,
    /// `[search]`: one axis searched per curve instead of swept (see `crate::search`).
    pub search: Option<SearchSpec>,
    /// `[quality]`: how each cell's answers are scored (a `quality` step per cell).
    pub quality: Option<QualitySpec>,
    /// The values of secret flags written in command lines (`--api-key x`), which the
    /// text of `command` and `extra-args` shows as `[redacted N]`: for the launcher.
    pub literal_secrets: crate::secrets::LiteralSecrets,
}

/// `[quality]`, validated.
#[derive(Debug, Clone)]
pub struct QualitySpec {
    pub scorers: Vec<crate::quality::Scorer>,
    /// The variant every variant's answers are compared with.
    pub agreement: Option<String>,
    pub number_tolerance: f64,
    /// `judge`: a model (not measured) that scores each answer against its reference;
    /// its one variant is `base`.
    pub judge: Option<Model>,
}

/// What a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The largest value whose cells meet the SLO.
    Slo,
    /// The value of peak goodput (requests within the SLO per second).
    Goodput,
}

/// `[search]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SearchSpec {
    pub axis: String,
    pub objective: Objective,
    /// Whole values only (batch sizes): stop at neighbours.
    pub integer: bool,
    pub min: f64,
    pub max: f64,
    pub tolerance: f64,
    pub extra_seeds: u32,
}

impl SearchSpec {
    /// Most doublings from `min` to `max` a search may need (`max / min` at most 2^40):
    /// batch sizes 1 to 10,000 need 14, request rates 0.001 to 100,000 need 27. The
    /// walk's own bound (`search::MAX_PROBES`) rests on it.
    pub const MAX_DOUBLINGS: i32 = 40;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Every step on this machine.
    #[default]
    Local,
    /// One Slurm job per server group; the other steps where `[slurm] cpu-steps` says.
    Slurm,
}

/// `[slurm]`: what each job asks for. Nothing here enters a step's key except through
/// [`SlurmSettings::hardware`], which names the hardware a measure ran on.
#[derive(Debug, Clone, Default)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--time` as Slurm writes it ("30", "02:00:00", "1-00:00:00").
    pub time: Option<String>,
    /// GRES type: `--gres=gpu:TYPE:N` instead of `--gres=gpu:N`.
    pub gpu_type: Option<String>,
    pub mem: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// `pipeline` as the nodes see it (default: this binary's path, which must then be
    /// on a shared filesystem).
    pub binary: Option<PathBuf>,
    pub sbatch_args: Vec<String>,
    /// Run datagen, aggregate and report as small CPU jobs instead of here.
    pub cpu_steps_on_slurm: bool,
}

impl SlurmSettings {
    /// The hardware identity measures get under Slurm: what the job asks for, since
    /// the node is known only once the job runs (the node's GPUs are recorded in
    /// each measure's outputs).
    pub fn hardware(&self) -> String {
        format!(
            "slurm: partition={}, gpu={}",
            self.partition.as_deref().unwrap_or("(default)"),
            self.gpu_type.as_deref().unwrap_or("(any)")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The built-in simulator, launched as `pipeline sim-server`.
    Sim,
    /// `vllm serve`, launched.
    Vllm,
    /// Any OpenAI-compatible server, launched from a command template.
    Command,
    /// An OpenAI-compatible server someone else started.
    Endpoint,
    /// OpenAI's hosted API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Results another tool recorded, read from files instead of measured ([`Import`]).
    Import,
}

impl Backend {
    const ALL: [(&'static str, Backend); 7] = [
        ("sim", Backend::Sim),
        ("vllm", Backend::Vllm),
        ("command", Backend::Command),
        ("endpoint", Backend::Endpoint),
        ("openai", Backend::Openai),
        ("anthropic", Backend::Anthropic),
        ("import", Backend::Import),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, b)| *b == self).map_or("?", |(n, _)| n)
    }

    /// Whether `pipeline` starts (and stops) a server process for this backend.
    pub fn launches(self) -> bool {
        matches!(self, Backend::Sim | Backend::Vllm | Backend::Command)
    }

    /// Whether the server runs on this machine's GPUs.
    pub fn uses_gpus(self) -> bool {
        matches!(self, Backend::Vllm | Backend::Command)
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub backend: Backend,
    pub served_name: String,
    pub url: Option<String>,
    /// Name of the environment variable holding the API key; never the key.
    pub api_key_env: Option<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<u16>,
    /// Receive the server's OpenTelemetry spans (`traces`, default resolved).
    pub traces: bool,
    /// `otlp-receiver`: where the receiver of an `endpoint` server listens.
    pub otlp_receiver: Option<std::net::SocketAddr>,
    /// Requests carry a W3C `traceparent` (always, but to a hosted API only when
    /// `send-traceparent = true`).
    pub send_traceparent: bool,
    /// GPUs one server holds, when set (`gpus = N`); otherwise the tensor-parallel
    /// size for launched GPU servers and none for the simulator.
    pub gpus: Option<u32>,
    /// Always holds `base`.
    pub variants: BTreeMap<String, Variant>,
    /// Backend `import`: the files its results come from.
    pub import: Option<Import>,
}

/// Results recorded by another tool, one file per seed (`backend = "import"`).
#[derive(Debug, Clone)]
pub struct Import {
    pub format: ImportFormat,
    /// By seed: the file as written in the experiment file, resolved, and its digest.
    pub files: BTreeMap<u64, ImportFile>,
}

#[derive(Debug, Clone)]
pub struct ImportFile {
    pub written: String,
    pub path: PathBuf,
    pub digest: String,
}

/// The formats `import` reads; the mapping of each to our columns is in
/// `steps::import` and docs/experiment-file.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportFormat {
    /// The reference study's per-run CSV: `times_to_first_token,times_to_completion`
    /// in seconds, one row per turn of one conversation.
    StudyCsv,
    /// AIPerf's `profile_export.jsonl`: one JSON record per request.
    Aiperf,
    /// `vllm bench serve --save-result --save-detailed`: one JSON object.
    VllmBench,
}

impl ImportFormat {
    pub const CHOICES: [(&'static str, ImportFormat); 3] =
        [("study-csv", ImportFormat::StudyCsv), ("aiperf", ImportFormat::Aiperf), ("vllm-bench", ImportFormat::VllmBench)];

    pub fn name(self) -> &'static str {
        Self::CHOICES.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Variant {
    pub model: String,
    pub quantization: Option<String>,
    pub dtype: Option<String>,
    pub extra_args: Vec<String>,
    pub sim: SimParams,
}

/// The simulator's latency model, documented in `sim::model`: one struct for the
/// experiment file's `sim = { … }` (same kebab-case names), the server's key, and
/// `pipeline sim-server`'s flags (clap flattens it; `--ttft-base-ms` and so on), with
/// its defaults in [`SimParams::DEFAULT`] only. The ranges are in `limits`.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[serde(rename_all = "kebab-case")]
pub struct SimParams {
    // Negative numbers parse, so that the range check (not clap's "unexpected
    // argument '-1'") says what is accepted.
    /// Time to first token at an empty prompt (ms).
    #[arg(long, default_value_t = SimParams::DEFAULT.ttft_base_ms, allow_negative_numbers = true)]
    pub ttft_base_ms: f64,
    /// Prefill time per uncached prompt token (µs).
    #[arg(long, default_value_t = SimParams::DEFAULT.prefill_us_per_token, allow_negative_numbers = true)]
    pub prefill_us_per_token: f64,
    /// Time between tokens with nothing else in flight (ms).
    #[arg(long, default_value_t = SimParams::DEFAULT.itl_base_ms, allow_negative_numbers = true)]
    pub itl_base_ms: f64,
    /// Extra time between tokens per request in flight (µs).
    #[arg(long, default_value_t = SimParams::DEFAULT.itl_us_per_inflight, allow_negative_numbers = true)]
    pub itl_us_per_inflight: f64,
    /// Relative jitter: each duration is scaled by 1 ± this (at least 0, below 1).
    #[arg(long, default_value_t = SimParams::DEFAULT.jitter, allow_negative_numbers = true)]
    pub jitter: f64,
    /// Reuse the longest message prefix seen before, as vLLM's prefix caching would.
    #[arg(long)]
    pub prefix_caching: bool,
    /// Tokens per answer (capped by the request's max_tokens).
    #[arg(long, default_value_t = SimParams::DEFAULT.answer_tokens)]
    pub answer_tokens: u32,
    /// Answers that depend on the prompt, for scoring tests: the canonical answer to the
    /// last message (the same on every server) with this probability, decided per
    /// prompt, and another one otherwise. Unset: answers follow the request count.
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    /// With `quality`: a conversations file whose recorded answers are the reference
    /// answers, by their turn's question text; a prompt whose last question is there
    /// gets its reference (with the probability `quality`) instead of a canonical
    /// answer. Set by the planner from `[workload] conversations`, never from the
    /// experiment file, and read by no real server.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// As a judge (a request whose prompt is the judge prompt): reply with words
    /// instead of a score. A judge prompt is otherwise answered with `1` when the
    /// graded answer equals the reference after normalisation, else `0`.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub judge_words: bool,
}

impl SimParams {
    pub const DEFAULT: SimParams = SimParams {
        ttft_base_ms: 15.0,
        prefill_us_per_token: 2.0,
        itl_base_ms: 5.0,
        itl_us_per_inflight: 50.0,
        jitter: 0.05,
        prefix_caching: false,
        answer_tokens: 24,
        quality: None,
        references: None,
        judge_words: false,
    };
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams::DEFAULT
    }
}

impl SimParams {
    fn merged(&self, raw: Option<&raw::RawSim>) -> SimParams {
        let Some(r) = raw else { return self.clone() };
        SimParams {
            ttft_base_ms: r.ttft_base_ms.unwrap_or(self.ttft_base_ms),
            prefill_us_per_token: r.prefill_us_per_token.unwrap_or(self.prefill_us_per_token),
            itl_base_ms: r.itl_base_ms.unwrap_or(self.itl_base_ms),
            itl_us_per_inflight: r.itl_us_per_inflight.unwrap_or(self.itl_us_per_inflight),
            jitter: r.jitter.unwrap_or(self.jitter),
            prefix_caching: r.prefix_caching.unwrap_or(self.prefix_caching),
            answer_tokens: r.answer_tokens.unwrap_or(self.answer_tokens),
            quality: r.quality.or(self.quality),
            references: self.references.clone(),
            judge_words: r.judge_words.unwrap_or(self.judge_words),
        }
    }

    /// Every number with its key (which is also its `sim-server` flag) and accepted
    /// range.
    pub fn numbers(&self) -> [(&'static str, f64, Limit); 6] {
        [
            ("ttft-base-ms", self.ttft_base_ms, limits::SIM_BASE_MS),
            ("prefill-us-per-token", self.prefill_us_per_token, limits::SIM_US_PER),
            ("itl-base-ms", self.itl_base_ms, limits::SIM_BASE_MS),
            ("itl-us-per-inflight", self.itl_us_per_inflight, limits::SIM_US_PER),
            ("jitter", self.jitter, limits::SIM_JITTER),
            ("answer-tokens", self.answer_tokens as f64, limits::SIM_ANSWER_TOKENS),
        ]
    }

    /// What is out of range, as (key, message); empty when the model is usable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let quality = self.quality.map(|q| ("quality", q, limits::SIM_QUALITY));
        self.numbers().into_iter().chain(quality).filter_map(|(key, v, limit)| limit.check(v).err().map(|m| (key, m))).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerSettings {
    pub tensor_parallel_size: u32,
    pub dtype: String,
    pub extra_args: Vec<String>,
    /// vLLM's `--max-model-len`; unset: the model's own.
    pub max_model_len: Option<u32>,
    /// `--enable-prefix-caching` / `--no-enable-prefix-caching`; unset: vLLM's default.
    pub prefix_caching: Option<bool>,
    /// GPUs servers may use; `None` means every GPU NVML reports.
    #[serde(skip)]
    pub gpus: Option<Vec<u32>>,
    #[serde(skip)]
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub turns: u32,
    pub width: u32,
    pub height: u32,
    pub questions: Vec<String>,
    /// A user folder of images reused as a shuffled pool, with its content digest.
    pub images_dir: Option<ImageFolder>,
    pub max_tokens: u32,
    pub temperature: f64,
    pub warmup_requests: u32,
    pub request_timeout: Duration,
    pub max_error_share: f64,
    pub arrival: Arrival,
    /// Send each image once with a stable id and refer to it afterwards (vLLM's
    /// multimodal UUIDs), instead of resending every image every turn.
    pub images_by_id: bool,
    /// How each cell is kept from the server caches other cells filled.
    pub cache_isolation: CacheIsolation,
    /// Seconds between scrapes of the server's `/metrics`; 0: at the start and end only.
    pub metrics_interval_s: f64,
    /// Send a turn's frames as one `video_url` (vLLM's `data:video/jpeg` frame
    /// sequence) instead of one image part per frame.
    pub frames_as_video: bool,
    /// The user's own conversations (`conversations`), replacing the synthetic ones.
    pub conversations: Option<std::sync::Arc<crate::conversations::ConversationFile>>,
    /// What the history resent with each turn holds (conversations from a file only).
    pub history: History,
    /// `resolution = "source"`: a file's images keep their own size (`width` and
    /// `height` then mean nothing).
    pub source_size: bool,
    /// `arrival = "trace"`: the trace replayed, read and checked (see `crate::trace`).
    pub trace: Option<crate::trace::TraceFile>,
}

/// The earlier turns' answers resent with each turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum History {
    /// The server's own answers, as a chat product resends them.
    #[default]
    Live,
    /// The conversations file's assistant turns: every model receives the same messages.
    Recorded,
}

impl History {
    pub fn name(self) -> &'static str {
        match self {
            History::Live => "live",
            History::Recorded => "recorded",
        }
    }
}

/// When requests are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Each conversation sends its next turn as soon as the last is answered.
    Closed,
    /// Open loop: send times drawn in advance at `rate` requests per second, either
    /// evenly spaced or as a Poisson process (exponential gaps, seeded by the cell).
    Constant {
        rate: f64,
    },
    Poisson {
        rate: f64,
    },
    /// Open loop from a trace file (`workload.trace`): each request at its timestamp
    /// divided by `speedup`.
    Trace {
        speedup: f64,
    },
}

#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct Matrix {
    pub models: Vec<String>,
    pub variants: Vec<String>,
    pub seeds: Vec<u64>,
    pub batch_sizes: Vec<u32>,
    pub frames: Vec<u32>,
    pub custom: Vec<CustomAxis>,
    pub exclude: Vec<Rule>,
    pub include: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct CustomAxis {
    pub name: String,
    pub values: Vec<serde_json::Value>,
    pub feeds: Feeds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feeds {
    /// Appended to the server command as `FLAG VALUE`.
    ServerFlag(String),
    /// Overrides one workload parameter (see [`WORKLOAD_AXES`]).
    Workload(String),
}

/// Workload parameters a custom axis may override.
pub const WORKLOAD_AXES: [&str; 7] =
    ["cache-isolation", "max-tokens", "request-rate", "temperature", "trace-speedup", "turns", "warmup-requests"];

/// How a measure step keeps its cell from the server caches that other cells filled
/// (`[workload] cache-isolation`). Within a cell, a conversation's own history may hit
/// the cache: that is what a chat does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheIsolation {
    /// The strongest the backend supports: `reset`, else `salt` when the server has no
    /// reset routes, else (a hosted API) nothing, said in the report.
    #[default]
    Auto,
    /// Empty the server's prefix, multimodal and encoder caches before the cell (vLLM's
    /// `POST /reset_prefix_cache`, `/reset_mm_cache`, `/reset_encoder_cache`).
    Reset,
    /// A new `cache_salt` per cell: isolates vLLM's prefix cache, not its multimodal
    /// processor cache (keyed by image content).
    Salt,
    /// Stop the server and start it afresh before the cell (servers `pipeline`
    /// launches): every cache is empty, at the cost of a server start per cell.
    Restart,
    /// Nothing: measure caches as earlier cells left them, on purpose.
    None,
}

impl CacheIsolation {
    pub const CHOICES: [(&str, CacheIsolation); 5] =
        [("auto", Self::Auto), ("reset", Self::Reset), ("salt", Self::Salt), ("restart", Self::Restart), ("none", Self::None)];

    pub fn parse(text: &str) -> Option<CacheIsolation> {
        Self::CHOICES.iter().find(|(name, _)| *name == text).map(|(_, c)| *c)
    }

    pub fn name(self) -> &'static str {
        Self::CHOICES.iter().find(|(_, c)| *c == self).map_or("auto", |(name, _)| name)
    }
}

/// An `include` or `exclude` entry: axis name → accepted values.
#[derive(Debug, Clone)]
pub struct Rule {
    pub key_path: KeyPath,
    pub conditions: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub dir: PathBuf,
    pub title: String,
    pub templates: Option<PathBuf>,
    pub slo: Slo,
    /// An earlier report folder to compare against (`--baseline` overrides it).
    pub baseline: Option<PathBuf>,
    /// A change smaller than this (percent, either way) is noise.
    pub noise_pct: f64,
    /// Metrics that fail the command when worse than the baseline's (`worse`: any);
    /// empty: no gate. Not in the report's key: it judges the report, it does not
    /// change it.
    pub fail_on: Vec<String>,
    /// Where the experiment file came from (git commit), set by the command that loads it.
    pub provenance: String,
}

/// A service-level objective: a request is *good* when it meets every threshold set;
/// a cell meets the SLO when at least `attainment_pct` of its requests are good.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub attainment_pct: f64,
    /// The lowest `[quality]` score a curve may have and still meet the SLO (each of its
    /// scores: agreement and every scorer; chrF aside). A curve's figure, not a
    /// request's: it judges operating points, and does not steer `[search]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
}

impl Default for Slo {
    /// Without `[report.slo]`: TTFT ≤ 500 ms and TPOT ≤ 50 ms for 90% of requests.
    fn default() -> Self {
        Slo { ttft_ms: Some(500.0), tpot_ms: Some(50.0), e2e_ms: None, attainment_pct: 90.0, quality: None }
    }
}

impl Slo {
    /// "TTFT ≤ 500 ms, TPOT ≤ 50 ms", for reports.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = [("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("end-to-end", self.e2e_ms)]
            .iter()
            .filter_map(|(n, v)| v.map(|v| format!("{n} ≤ {v} ms")))
            .collect();
        parts.extend(self.quality.map(|q| format!("quality ≥ {q}")));
        if parts.is_empty() { "no thresholds".into() } else { parts.join(", ") }
    }
}

/// Where an experiment came from: a file, or the embedded demo.
#[derive(Debug, Clone)]
pub struct Source {
    pub display: String,
    pub text: String,
    pub yaml: bool,
    pub base_dir: PathBuf,
    /// The file, resolved (none for the embedded demo): what tells two experiments of
    /// one name apart.
    pub path: Option<PathBuf>,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = read_capped(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // Experiment files live in `experiments/`; paths inside them (image folders,
        // templates, the report dir) are relative to the project root, one level up.
        let base_dir = if base_dir.file_name().is_some_and(|n| n == "experiments") {
            base_dir.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            base_dir
        };
        let resolved = std::fs::canonicalize(path).ok().or_else(|| std::path::absolute(path).ok());
        Ok(Source { display: path.display().to_string(), text, yaml, base_dir, path: resolved })
    }

    pub fn demo() -> Source {
        Source {
            display: "experiments/demo.toml (embedded)".into(),
            text: DEMO_TOML.into(),
            yaml: false,
            base_dir: PathBuf::new(),
            path: None,
        }
    }
}

/// One problem in an experiment file.
#[derive(Debug, Clone, Default)]
pub struct Issue {
    pub at: Option<LineCol>,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// The file's line at `at`, shown with a caret under the problem.
    pub line: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read experiment file `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_issues(.file, .issues))]
    Invalid { file: String, issues: Vec<Issue> },
}

impl ConfigError {
    /// The `issues` of `source`, each with the line it points at.
    pub fn invalid(source: &Source, mut issues: Vec<Issue>) -> ConfigError {
        // In the file's order; problems found nowhere in it (none here) last.
        issues.sort_by_key(|i| i.at.map_or((usize::MAX, 0), |at| (at.line, at.column)));
        for issue in &mut issues {
            issue.line = issue.at.and_then(|at| source.text.lines().nth(at.line.checked_sub(1)?)).map(String::from);
        }
        ConfigError::Invalid { file: source.display.clone(), issues }
    }
}

fn render_issues(file: &str, issues: &[Issue]) -> String {
    // Paths, messages and hints may quote the file (a key with a control character in
    // it, a parser's message): shown escaped, one line each.
    let shown = |text: &str| crate::untrusted::escaped(text, 2000);
    let file = &shown(file);
    let mut out = format!("invalid experiment file `{file}` ({} problem{})", issues.len(), if issues.len() == 1 { "" } else { "s" });
    for issue in issues {
        let at = issue.at.map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default();
        let path = if issue.path.is_empty() { String::new() } else { format!("{}: ", shown(&issue.path)) };
        out.push_str(&format!("\n  --> {file}{at}: {path}{}", shown(&issue.message)));
        if let (Some(at), Some(line)) = (issue.at, &issue.line) {
            out.push_str(&caret(at, line));
        }
        if let Some(hint) = &issue.hint {
            out.push_str(&format!("\n      hint: {}", shown(hint)));
        }
    }
    out
}

/// The line, numbered, with carets under the value that starts at `at`'s column: a
/// quoted string to its closing quote, anything else to the next space, comma or
/// bracket. A quoted value that looks like an API key, or a URL with a user name or
/// password, is shown as `"…"` (a message never repeats one), control characters as
/// `?`, and a long line is cut.
fn caret(at: LineCol, line: &str) -> String {
    let (chars, start) = masked(line, at.column.saturating_sub(1));
    let start = start.min(chars.len());
    let rest = &chars[start..];
    let len = match rest.first() {
        Some('"') => rest.iter().skip(1).position(|c| *c == '"').map_or(rest.len(), |end| end + 2),
        Some(_) => rest.iter().position(|c| c.is_whitespace() || ",]}".contains(*c)).unwrap_or(rest.len()).max(1),
        None => 1,
    };
    const WIDTH: usize = 120;
    let shown: String = chars.iter().take(WIDTH).map(|c| if is_unsafe_char(*c) { '?' } else { *c }).collect();
    let pad = " ".repeat(at.line.to_string().len());
    let (start, len) = (start.min(WIDTH), len.min(WIDTH.saturating_sub(start)).max(1));
    format!("\n   {pad} |\n   {} | {shown}\n   {pad} | {}{}", at.line, " ".repeat(start), "^".repeat(len))
}

/// `line` with every quoted string that holds a secret replaced by `"…"`, and where
/// the character at `start` moved to.
fn masked(line: &str, start: usize) -> (Vec<char>, usize) {
    let chars: Vec<char> = line.chars().collect();
    let (mut out, mut moved, mut i) = (Vec::with_capacity(chars.len()), start, 0);
    while i < chars.len() {
        if chars[i] == '"'
            && let Some(len) = chars[i + 1..].iter().position(|c| *c == '"')
        {
            let inner: String = chars[i + 1..i + 1 + len].iter().collect();
            if i == start {
                moved = out.len();
            }
            let credentials = reqwest::Url::parse(&inner).is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
            if limits::looks_like_secret(&inner) || credentials || crate::secrets::key_shaped(&inner).is_some() {
                out.extend(['"', '…', '"']);
            } else {
                out.extend(&chars[i..i + len + 2]);
            }
            i += len + 2;
            continue;
        }
        if i == start {
            moved = out.len();
        }
        out.push(chars[i]);
        i += 1;
    }
    mask_bare_keys(out, moved)
}

/// A key written without quotes (YAML's plain scalars): each word that holds one
/// becomes `…`, and the caret's character moves with what is left.
fn mask_bare_keys(chars: Vec<char>, start: usize) -> (Vec<char>, usize) {
    let boundary = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']' | '{' | '}');
    let (mut out, mut moved, mut i) = (Vec::with_capacity(chars.len()), start, 0);
    while i < chars.len() {
        let end = (i..chars.len()).find(|&j| boundary(chars[j])).unwrap_or(chars.len()).max(i + 1);
        let word: String = chars[i..end].iter().collect();
        if start >= i && start < end {
            moved = out.len() + if crate::secrets::key_shaped(&word).is_some() { 0 } else { start - i };
        }
        if crate::secrets::key_shaped(&word).is_some() {
            out.push('…');
        } else {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    if start >= chars.len() {
        moved = out.len();
    }
    (out, moved)
}

/// Axis names every experiment has, in canonical order.
pub const BUILTIN_AXES: [&str; 5] = ["model", "variant", "seed", "batch-size", "frames"];

/// Short questions about an image, used when the experiment gives none.
pub const DEFAULT_QUESTIONS: [&str; 8] = [
    "What is in this image?",
    "Describe the dominant colours.",
    "How many distinct shapes do you see?",
    "What changed since the previous image?",
    "Is there any text in the image?",
    "Which object is closest to the centre?",
    "Describe the scene in one sentence.",
    "What is in the top-left corner?",
];

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Slurm time limit in minutes ("M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S"), or
/// `None` if Slurm would not read it. "infinite" and "unlimited" are 0 here.
pub fn slurm_minutes(text: &str) -> Option<u64> {
    if matches!(text.to_ascii_lowercase().as_str(), "infinite" | "unlimited") {
        return Some(0);
    }
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(d.parse::<u64>().ok()?), rest),
        None => (None, text),
    };
    let parts: Vec<u64> = rest.split(':').map(|p| p.parse::<u64>().ok()).collect::<Option<_>>()?;
    let (h, m, s) = match (days, parts.as_slice()) {
        (None, [m]) => (0, *m, 0),
        (None, [m, s]) => (0, *m, *s),
        (None, [h, m, s]) | (Some(_), [h, m, s]) => (*h, *m, *s),
        (Some(_), [h]) => (*h, 0, 0),
        (Some(_), [h, m]) => (*h, *m, 0),
        _ => return None,
    };
    Some(days.unwrap_or(0) * 1440 + h * 60 + m + s.div_ceil(60))
}

pub use crate::untrusted::{is_unsafe_char, quoted};

/// A text file of at most [`limits::MAX_FILE_BYTES`], whatever the path points at.
pub fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limits::MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {} MiB; experiment and question files are a few kB",
            limits::MAX_FILE_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A results file an `import` model names, whole: a regular file (a FIFO or a device
/// such as `/dev/zero` would block or never end, so neither is opened) of at most
/// [`limits::MAX_IMPORT_BYTES`], read through a `take` so a file that grows while read
/// stops there too. The error is a message and a hint.
pub fn read_results(path: &Path) -> Result<Vec<u8>, (String, String)> {
    use std::io::Read;
    let io = |e: std::io::Error| (e.to_string(), "paths are relative to the project root".to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err((
            "it is not a regular file (a device, a pipe or a folder)".into(),
            "name the results file itself; a pipe or a device is not read".into(),
        ));
    }
    let too_big = || {
        (
            format!("it is larger than {} MiB", limits::MAX_IMPORT_BYTES >> 20),
            "split the run into several files, one per seed, or check that this is the results file".to_string(),
        )
    };
    if meta.len() > limits::MAX_IMPORT_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path).map_err(io)?.take(limits::MAX_IMPORT_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limits::MAX_IMPORT_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// An [`Issue`] at `path`, located in `source` (for errors found after validation).
pub fn issue_at(source: &Source, path: &str, message: String, hint: Option<String>) -> Issue {
    let at = locate::locate(&source.text, source.yaml, &KeyPath::parse(path));
    Issue { at, path: path.to_string(), message, hint, line: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caret_points_at_the_value_and_never_shows_a_secret() {
        let at = |column| LineCol { line: 7, column };
        assert_eq!(caret(at(11), r#"backend = "vlm""#), "\n     |\n   7 | backend = \"vlm\"\n     |           ^^^^^");
        assert_eq!(caret(at(9), "turns = -3, x = 1"), "\n     |\n   7 | turns = -3, x = 1\n     |         ^^");
        // A key before the value moves it; the caret follows.
        let line = r#"a = { api-key-env = "sk-proj-Abcdefghijklmnop1234", turns = "x" }"#;
        let shown = caret(at(line.find("\"x\"").unwrap() + 1), line);
        assert!(!shown.contains("sk-proj"), "{shown}");
        assert!(shown.ends_with(&format!("{}^^^", " ".repeat(r#"a = { api-key-env = "…", turns = "#.chars().count()))), "{shown}");
        assert!(!caret(at(7), r#"url = "http://user:pw@host:9""#).contains("pw@"));
    }
}
