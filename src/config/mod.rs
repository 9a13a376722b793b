//! Read and validate an experiment file (TOML, or YAML for `.yaml`/`.yml`).
//!
//! Three passes, as in nextest: parse into [`raw`] structs that mirror the file, then
//! validate into the typed [`Experiment`] while collecting *every* problem, then (in
//! `matrix` and `plan`) expand. Every user error names the file, line, column and key
//! path, and says how to fix it. Defaults are filled in here, so that writing a default
//! explicitly produces the same `Experiment` (and therefore the same step hashes).

mod locate;
pub mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use locate::{KeyPath, LineCol, closest, line_col};

/// The demo experiment, embedded so `pipeline run` works with no file at all.
pub const DEMO_TOML: &str = include_str!("../../experiments/demo.toml");

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    /// Folder of the experiment file: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    pub models: BTreeMap<String, Model>,
    pub server: ServerSettings,
    pub workload: Workload,
    pub matrix: Matrix,
    pub report: ReportSettings,
    /// Where steps run: here, or as Slurm jobs (`--executor` overrides it).
    pub executor: ExecutorKind,
    pub slurm: SlurmSettings,
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
}

impl Backend {
    const ALL: [(&'static str, Backend); 6] = [
        ("sim", Backend::Sim),
        ("vllm", Backend::Vllm),
        ("command", Backend::Command),
        ("endpoint", Backend::Endpoint),
        ("openai", Backend::Openai),
        ("anthropic", Backend::Anthropic),
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
    /// GPUs one server holds, when set (`gpus = N`); otherwise the tensor-parallel
    /// size for launched GPU servers and none for the simulator.
    pub gpus: Option<u32>,
    /// Always holds `base`.
    pub variants: BTreeMap<String, Variant>,
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

/// The simulator's latency model; documented in `sim::model`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimParams {
    pub ttft_base_ms: f64,
    pub prefill_us_per_token: f64,
    pub itl_base_ms: f64,
    pub itl_us_per_inflight: f64,
    pub jitter: f64,
    pub prefix_caching: bool,
    pub answer_tokens: u32,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            ttft_base_ms: 15.0,
            prefill_us_per_token: 2.0,
            itl_base_ms: 5.0,
            itl_us_per_inflight: 50.0,
            jitter: 0.05,
            prefix_caching: false,
            answer_tokens: 24,
        }
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
        }
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
    /// Send a turn's frames as one `video_url` (vLLM's `data:video/jpeg` frame
    /// sequence) instead of one image part per frame.
    pub frames_as_video: bool,
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
pub const WORKLOAD_AXES: [&str; 5] = ["max-tokens", "request-rate", "temperature", "turns", "warmup-requests"];

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
    /// Where the experiment file came from (git commit), set by the command that loads it.
    pub provenance: String,
}

/// A service-level objective: a request is *good* when it meets every threshold set;
/// a cell meets the SLO when at least `attainment_pct` of its requests are good.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub attainment_pct: f64,
}

impl Default for Slo {
    /// Without `[report.slo]`: TTFT ≤ 500 ms and TPOT ≤ 50 ms for 90% of requests.
    fn default() -> Self {
        Slo { ttft_ms: Some(500.0), tpot_ms: Some(50.0), e2e_ms: None, attainment_pct: 90.0 }
    }
}

impl Slo {
    /// "TTFT ≤ 500 ms, TPOT ≤ 50 ms", for reports.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("end-to-end", self.e2e_ms)]
            .iter()
            .filter_map(|(n, v)| v.map(|v| format!("{n} ≤ {v} ms")))
            .collect();
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
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // Experiment files live in `experiments/`; paths inside them (image folders,
        // templates, the report dir) are relative to the project root, one level up.
        let base_dir = if base_dir.file_name().is_some_and(|n| n == "experiments") {
            base_dir.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            base_dir
        };
        Ok(Source { display: path.display().to_string(), text, yaml, base_dir })
    }

    pub fn demo() -> Source {
        Source { display: "experiments/demo.toml (embedded)".into(), text: DEMO_TOML.into(), yaml: false, base_dir: PathBuf::new() }
    }
}

/// One problem in an experiment file.
#[derive(Debug, Clone)]
pub struct Issue {
    pub at: Option<LineCol>,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
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

fn render_issues(file: &str, issues: &[Issue]) -> String {
    let mut out = format!("invalid experiment file `{file}` ({} problem{})", issues.len(), if issues.len() == 1 { "" } else { "s" });
    for issue in issues {
        let at = issue.at.map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default();
        let path = if issue.path.is_empty() { String::new() } else { format!("{}: ", issue.path) };
        out.push_str(&format!("\n  --> {file}{at}: {path}{}", issue.message));
        if let Some(hint) = &issue.hint {
            out.push_str(&format!("\n      hint: {hint}"));
        }
    }
    out
}

/// Parse and validate an experiment.
pub fn load(source: &Source) -> Result<Experiment, ConfigError> {
    let raw = parse(source)?;
    let mut v = Validator { source, issues: Vec::new() };
    let experiment = v.experiment(raw);
    if v.issues.is_empty() { Ok(experiment) } else { Err(ConfigError::Invalid { file: source.display.clone(), issues: v.issues }) }
}

fn parse(source: &Source) -> Result<raw::RawExperiment, ConfigError> {
    let invalid = |issue| ConfigError::Invalid { file: source.display.clone(), issues: vec![issue] };
    if source.yaml {
        serde_saphyr::from_str(&source.text).map_err(|e| {
            let at = e.location().map(|l| LineCol { line: l.line() as usize, column: l.column() as usize });
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default().to_string();
            invalid(Issue { at, path: String::new(), hint: parse_hint(&first), message: first })
        })
    } else {
        toml::from_str(&source.text).map_err(|e| {
            let at = e.span().map(|s| line_col(&source.text, s.start));
            let message = e.message().trim().to_string();
            invalid(Issue { at, path: String::new(), hint: parse_hint(&message), message })
        })
    }
}

/// A fix for serde's own messages: did-you-mean for unknown keys, the shape for missing ones.
fn parse_hint(message: &str) -> Option<String> {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        let (field, expected) = rest.split_once('`')?;
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return Some(match closest(field, candidates.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (unknown keys are errors, not ignored)"),
            None => format!("remove `{field}`; this table accepts: {}", candidates.join(", ")),
        });
    }
    if let Some(rest) = message.split("missing field `").nth(1) {
        let field = rest.split('`').next()?;
        return Some(format!("add `{field}`; see docs/experiment-file.md for its meaning"));
    }
    if message.contains("invalid type") {
        return Some("check the value's type against docs/experiment-file.md".into());
    }
    None
}

struct Validator<'a> {
    source: &'a Source,
    issues: Vec<Issue>,
}

impl Validator<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<String>) {
        let path = path.into();
        let at = locate::locate(&self.source.text, self.source.yaml, &KeyPath::parse(&path));
        self.issues.push(Issue { at, path, message: message.into(), hint });
    }

    fn positive(&mut self, path: &str, value: Option<i64>, default: u32) -> u32 {
        match value {
            None => default,
            Some(v) if v > 0 && v <= u32::MAX as i64 => v as u32,
            Some(v) => {
                self.error(
                    path,
                    format!("must be a positive integer, found `{v}`"),
                    Some(format!("use a value of at least 1 (default {default})")),
                );
                default
            }
        }
    }

    fn slo(&mut self, raw: Option<raw::RawSlo>) -> Slo {
        let Some(raw) = raw else { return Slo::default() };
        let mut ms = |key: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                self.error(format!("report.slo.{key}"), format!("must be a positive number of milliseconds, found `{v}`"), None);
                None
            }
            v => v,
        };
        let slo = Slo {
            ttft_ms: ms("ttft-ms", raw.ttft_ms),
            tpot_ms: ms("tpot-ms", raw.tpot_ms),
            e2e_ms: ms("e2e-ms", raw.e2e_ms),
            attainment_pct: raw.attainment_pct.unwrap_or(90.0),
        };
        if !(slo.attainment_pct > 0.0 && slo.attainment_pct <= 100.0) {
            self.error(
                "report.slo.attainment-pct",
                format!("must be above 0 and at most 100 (percent of requests), found `{}`", slo.attainment_pct),
                Some("the default is 90".into()),
            );
        }
        if slo.ttft_ms.is_none() && slo.tpot_ms.is_none() && slo.e2e_ms.is_none() {
            self.error("report.slo", "sets no threshold", Some("set at least one of ttft-ms, tpot-ms, e2e-ms".into()));
        }
        slo
    }

    fn experiment(&mut self, raw: raw::RawExperiment) -> Experiment {
        if raw.name.is_empty() || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.error("name", format!("`{}` is not a valid experiment name", raw.name), Some("use letters, digits, `-` and `_`".into()));
        }
        let models: BTreeMap<String, Model> = raw.models.into_iter().map(|(name, m)| (name.clone(), self.model(name, m))).collect();
        if models.is_empty() {
            self.error("models", "no models are defined", Some("add a table such as [models.qwen-3b] with backend = \"sim\"".into()));
        }
        let server = self.server(raw.server);
        let workload = self.workload(raw.workload);
        let matrix = self.matrix(raw.matrix, raw.axis, &models);
        if workload.arrival == Arrival::Closed
            && let Some(i) = matrix.custom.iter().position(|a| a.feeds == Feeds::Workload("request-rate".into()))
        {
            self.error(
                format!("axis[{i}].workload"),
                "sweeps `request-rate`, but arrival is closed-loop",
                Some("set arrival = \"poisson\" (or \"constant\") in [workload]".into()),
            );
        }
        let title = raw.report.title.clone().or(raw.title).unwrap_or_else(|| raw.name.clone());
        let slo = self.slo(raw.report.slo);
        let noise_pct = match raw.report.noise_pct {
            None => 5.0,
            Some(v) if v.is_finite() && (0.0..100.0).contains(&v) => v,
            Some(v) => {
                self.error("report.noise-pct", format!("must be from 0 to 100 (percent), found `{v}`"), Some("the default is 5".into()));
                5.0
            }
        };
        let report = ReportSettings {
            dir: PathBuf::from(raw.report.dir.unwrap_or_else(|| format!("reports/{}", raw.name))),
            title,
            templates: raw.report.templates.map(|t| self.source.base_dir.join(t)),
            slo,
            baseline: raw.report.baseline.map(|b| self.source.base_dir.join(b)),
            noise_pct,
            provenance: String::new(),
        };
        let executor = match raw.executor.as_deref() {
            None | Some("local") => ExecutorKind::Local,
            Some("slurm") => ExecutorKind::Slurm,
            Some(other) => {
                self.error("executor", format!("unknown executor `{other}`"), Some("one of: local (default), slurm".into()));
                ExecutorKind::Local
            }
        };
        let slurm = self.slurm(raw.slurm.unwrap_or_default());
        Experiment {
            executor,
            slurm,
            name: raw.name,
            title: report.title.clone(),
            base_dir: self.source.base_dir.clone(),
            models,
            server,
            workload,
            matrix,
            report,
        }
    }

    fn model(&mut self, name: String, m: raw::RawModel) -> Model {
        let at = format!("models.{name}");
        let backend = match Backend::ALL.iter().find(|(n, _)| *n == m.backend) {
            Some((_, b)) => *b,
            None => {
                let names: Vec<&str> = Backend::ALL.iter().map(|(n, _)| *n).collect();
                let hint = closest(&m.backend, names.iter().copied())
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("one of: {}", names.join(", ")));
                self.error(format!("{at}.backend"), format!("unknown backend `{}`", m.backend), Some(hint));
                Backend::Sim
            }
        };
        let model_id = m.model.clone().unwrap_or_else(|| name.clone());
        match backend {
            Backend::Command if m.command.as_ref().is_none_or(|c| c.is_empty()) => self.error(
                &at,
                "backend `command` needs a `command` template",
                Some("for example command = [\"my-server\", \"--port\", \"{port}\", \"--model\", \"{model}\"]".into()),
            ),
            Backend::Endpoint if m.url.is_none() => {
                self.error(&at, "backend `endpoint` needs a `url`", Some("for example url = \"http://gpu-node:8000\"".into()))
            }
            Backend::Openai | Backend::Anthropic if m.api_key_env.is_none() => self.error(
                &at,
                format!("backend `{}` needs `api-key-env`, the name of the variable holding the key", backend.name()),
                Some(format!("for example api-key-env = \"{}_API_KEY\"", backend.name().to_uppercase())),
            ),
            _ => {}
        }
        if let Some(env) = &m.api_key_env
            && (env.is_empty() || env.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        {
            self.error(
                format!("{at}.api-key-env"),
                "must be the *name* of an environment variable, not the key itself",
                Some("for example api-key-env = \"ANTHROPIC_API_KEY\"; export the key in your shell".into()),
            );
        }
        let gpus = match m.gpus {
            None => None,
            Some(_) if !backend.launches() => {
                self.error(
                    format!("{at}.gpus"),
                    format!("backend `{}` runs elsewhere and holds no GPUs here", backend.name()),
                    Some("remove `gpus`".into()),
                );
                None
            }
            Some(n) if (0..=64).contains(&n) => Some(n as u32),
            Some(n) => {
                self.error(format!("{at}.gpus"), format!("must be from 0 to 64, found `{n}`"), None);
                None
            }
        };
        let sim = SimParams::default().merged(m.sim.as_ref());
        let mut variants = BTreeMap::new();
        variants.insert(
            "base".to_string(),
            Variant { model: model_id.clone(), quantization: None, dtype: None, extra_args: Vec::new(), sim: sim.clone() },
        );
        for (vname, v) in m.variants {
            variants.insert(
                vname,
                Variant {
                    model: v.model.unwrap_or_else(|| model_id.clone()),
                    quantization: v.quantization,
                    dtype: v.dtype,
                    extra_args: v.extra_args,
                    sim: sim.merged(v.sim.as_ref()),
                },
            );
        }
        Model {
            served_name: m.served_name.unwrap_or_else(|| model_id.clone()),
            name,
            backend,
            url: m.url,
            api_key_env: m.api_key_env,
            command: m.command,
            port: m.port,
            gpus,
            variants,
        }
    }

    fn slurm(&mut self, s: raw::RawSlurm) -> SlurmSettings {
        if let Some(t) = &s.time
            && slurm_minutes(t).is_none()
        {
            self.error(
                "slurm.time",
                format!("`{t}` is not a Slurm time limit"),
                Some("write minutes, HH:MM:SS or D-HH:MM:SS, e.g. time = \"02:00:00\" (2 hours)".into()),
            );
        }
        let cpu_steps_on_slurm =
            self.either("slurm.cpu-steps", s.cpu_steps.as_deref(), ("local", "on this machine"), ("slurm", "as small CPU jobs"));
        for (key, value) in [("partition", &s.partition), ("account", &s.account), ("gpu-type", &s.gpu_type), ("mem", &s.mem)] {
            if let Some(v) = value
                && (v.is_empty() || v.contains(char::is_whitespace))
            {
                self.error(format!("slurm.{key}"), format!("`{v}` is empty or has spaces"), None);
            }
        }
        SlurmSettings {
            partition: s.partition,
            account: s.account,
            time: s.time,
            gpu_type: s.gpu_type,
            mem: s.mem,
            cpus_per_task: s.cpus_per_task.map(|_| self.positive("slurm.cpus-per-task", s.cpus_per_task, 1)),
            binary: s.binary.map(|b| self.source.base_dir.join(b)),
            sbatch_args: s.sbatch_args,
            cpu_steps_on_slurm,
        }
    }

    fn server(&mut self, s: raw::RawServer) -> ServerSettings {
        let startup = s.startup_timeout_s.unwrap_or(600.0);
        if startup.is_nan() || startup <= 0.0 {
            self.error("server.startup-timeout-s", "must be a positive number of seconds", None);
        }
        ServerSettings {
            tensor_parallel_size: self.positive("server.tensor-parallel-size", s.tensor_parallel_size, 1),
            dtype: s.dtype.unwrap_or_else(|| "auto".into()),
            extra_args: s.extra_args,
            max_model_len: s.max_model_len.map(|_| self.positive("server.max-model-len", s.max_model_len, 1)),
            prefix_caching: s.prefix_caching,
            gpus: s.gpus,
            startup_timeout: Duration::from_secs_f64(startup.max(0.001)),
        }
    }

    fn arrival(&mut self, arrival: Option<&str>, rate: Option<f64>) -> Arrival {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0;
        match (arrival.unwrap_or("closed"), rate) {
            ("closed", None) => Arrival::Closed,
            ("closed", Some(_)) => {
                self.error(
                    "workload.request-rate",
                    "only applies to open-loop arrival",
                    Some("add arrival = \"poisson\" (or \"constant\"), or remove request-rate".into()),
                );
                Arrival::Closed
            }
            (kind @ ("poisson" | "constant"), Some(rate)) if rate_ok(rate) => match kind {
                "poisson" => Arrival::Poisson { rate },
                _ => Arrival::Constant { rate },
            },
            ("poisson" | "constant", Some(rate)) => {
                self.error("workload.request-rate", format!("must be a positive number of requests per second, found `{rate}`"), None);
                Arrival::Closed
            }
            ("poisson" | "constant", None) => {
                self.error(
                    "workload.arrival",
                    "open-loop arrival needs `request-rate` (requests per second)",
                    Some("for example request-rate = 4.0".into()),
                );
                Arrival::Closed
            }
            (other, _) => {
                self.error(
                    "workload.arrival",
                    format!("unknown arrival `{other}`"),
                    Some("one of: closed (default), poisson, constant".into()),
                );
                Arrival::Closed
            }
        }
    }

    /// A key with two values, `default` (absent too) or `other`: whether it is `other`.
    fn either(&mut self, path: &str, value: Option<&str>, default: (&str, &str), other: (&str, &str)) -> bool {
        match value {
            None => false,
            Some(v) if v == default.0 => false,
            Some(v) if v == other.0 => true,
            Some(v) => {
                let hint = format!("one of: {} (default: {}), {} ({})", default.0, default.1, other.0, other.1);
                self.error(path, format!("unknown value `{v}`"), Some(hint));
                false
            }
        }
    }

    fn workload(&mut self, w: raw::RawWorkload) -> Workload {
        let (width, height) = match w.resolution.as_deref().unwrap_or("1280x720").split_once('x') {
            Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                (Ok(a), Ok(b)) if a > 0 && b > 0 && a <= 8192 && b <= 8192 => (a, b),
                _ => {
                    self.error(
                        "workload.resolution",
                        "must be WIDTHxHEIGHT with sides from 1 to 8192",
                        Some("for example resolution = \"1280x720\"".into()),
                    );
                    (1280, 720)
                }
            },
            None => {
                self.error("workload.resolution", "must be WIDTHxHEIGHT", Some("for example resolution = \"1280x720\"".into()));
                (1280, 720)
            }
        };
        let mut questions = w.questions.unwrap_or_default();
        if let Some(file) = &w.questions_file {
            match std::fs::read_to_string(self.source.base_dir.join(file)) {
                Ok(text) => questions.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from)),
                Err(e) => self.error(
                    "workload.questions-file",
                    format!("cannot read `{file}`: {e}"),
                    Some("paths are relative to the project root".into()),
                ),
            }
        }
        if questions.is_empty() {
            questions = DEFAULT_QUESTIONS.iter().map(|q| q.to_string()).collect();
        }
        let images_dir = w.images_dir.as_ref().and_then(|dir| self.image_folder(dir));
        let temperature = w.temperature.unwrap_or(0.0);
        if !(0.0..=2.0).contains(&temperature) {
            self.error("workload.temperature", format!("must lie in [0, 2], found `{temperature}`"), None);
        }
        let share = w.max_error_share.unwrap_or(0.05);
        if !(0.0..=1.0).contains(&share) {
            self.error("workload.max-error-share", format!("must lie in [0, 1], found `{share}`"), None);
        }
        let arrival = self.arrival(w.arrival.as_deref(), w.request_rate);
        let frames_as_video = self.either(
            "workload.frames-as",
            w.frames_as.as_deref(),
            ("images", "one image part per frame"),
            ("video", "one video_url per turn"),
        );
        let images_by_id = self.either(
            "workload.image-reuse",
            w.image_reuse.as_deref(),
            ("resend", "every image every turn"),
            ("uuid", "each image once, then by id"),
        );
        let timeout = w.request_timeout_s.unwrap_or(120.0);
        if timeout.is_nan() || timeout <= 0.0 {
            self.error("workload.request-timeout-s", "must be a positive number of seconds", None);
        }
        Workload {
            turns: self.positive("workload.turns", w.turns, 60),
            width,
            height,
            questions,
            images_dir,
            max_tokens: self.positive("workload.max-tokens", w.max_tokens, 32),
            temperature,
            warmup_requests: match w.warmup_requests {
                Some(n) if n < 0 => {
                    self.error("workload.warmup-requests", "must be 0 or more", None);
                    0
                }
                n => n.unwrap_or(1) as u32,
            },
            request_timeout: Duration::from_secs_f64(timeout.max(0.001)),
            max_error_share: share,
            arrival,
            images_by_id,
            frames_as_video,
        }
    }

    fn image_folder(&mut self, dir: &str) -> Option<ImageFolder> {
        let path = self.source.base_dir.join(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) => {
                self.error(
                    "workload.images-dir",
                    format!("cannot read folder `{dir}`: {e}"),
                    Some("paths are relative to the project root".into()),
                );
                return None;
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        files.sort();
        let mut hasher = blake3::Hasher::new_derive_key("pipeline image folder v1");
        let mut bad = Vec::new();
        for f in &files {
            match std::fs::read(f) {
                Ok(bytes) if image::guess_format(&bytes).is_ok() => {
                    hasher.update(blake3::hash(&bytes).as_bytes());
                }
                _ => bad.push(f.file_name().unwrap_or_default().to_string_lossy().into_owned()),
            }
        }
        if !bad.is_empty() {
            self.error(
                "workload.images-dir",
                format!("`{dir}` holds files that are not images: {}", bad.join(", ")),
                Some("keep only JPEG or PNG files in the folder".into()),
            );
            return None;
        }
        if files.is_empty() {
            self.error(
                "workload.images-dir",
                format!("folder `{dir}` holds no images"),
                Some("add JPEG or PNG files, or remove images-dir to use synthetic images".into()),
            );
            return None;
        }
        Some(ImageFolder { path, files, digest: hasher.finalize().to_hex().to_string() })
    }

    fn matrix(&mut self, m: raw::RawMatrix, axes: Vec<raw::RawAxis>, models: &BTreeMap<String, Model>) -> Matrix {
        if m.model.is_empty() {
            self.error("matrix.model", "axis is empty", Some("list at least one model defined under [models]".into()));
        }
        for (i, name) in m.model.iter().enumerate() {
            if !models.contains_key(name) {
                let hint = match closest(name, models.keys().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("define [models.{name}], or use one of: {}", models.keys().cloned().collect::<Vec<_>>().join(", ")),
                };
                self.error(format!("matrix.model[{i}]"), format!("model `{name}` is not defined"), Some(hint));
            }
        }
        let variants = m.variant.unwrap_or_else(|| vec!["base".into()]);
        if variants.is_empty() {
            self.error("matrix.variant", "axis is empty", Some("remove it to use only `base`".into()));
        }
        for (i, v) in variants.iter().enumerate() {
            let defined = m.model.iter().filter_map(|n| models.get(n)).any(|model| model.variants.contains_key(v));
            if !defined {
                self.error(
                    format!("matrix.variant[{i}]"),
                    format!("no model in the matrix defines variant `{v}`"),
                    Some(format!("add [models.NAME.variants.{v}]")),
                );
            }
        }
        let ints = |v: &mut Self, key: &str, values: Option<Vec<i64>>, default: i64, allow_zero: bool| -> Vec<i64> {
            let values = values.unwrap_or_else(|| vec![default]);
            if values.is_empty() {
                v.error(
                    format!("matrix.{key}"),
                    "axis is empty",
                    Some(format!("list at least one value, or remove the key for the default [{default}]")),
                );
            }
            for (i, x) in values.iter().enumerate() {
                if *x < 0 || (*x == 0 && !allow_zero) {
                    v.error(
                        format!("matrix.{key}[{i}]"),
                        format!("must be {}, found `{x}`", if allow_zero { "0 or more" } else { "a positive integer" }),
                        Some(format!("{key} counts {}", if key == "batch-size" { "concurrent conversations" } else { "images per turn" })),
                    );
                }
            }
            values
        };
        let seeds = ints(self, "seed", m.seed, 0, true).into_iter().map(|s| s.max(0) as u64).collect();
        let batch_sizes = ints(self, "batch-size", m.batch_size, 1, false).into_iter().map(|s| s.max(1) as u32).collect();
        let frames = ints(self, "frames", m.frames, 1, false).into_iter().map(|s| s.max(1) as u32).collect();
        let mut custom = Vec::new();
        for (i, a) in axes.into_iter().enumerate() {
            let at = format!("axis[{i}]");
            if BUILTIN_AXES.contains(&a.name.as_str()) || custom.iter().any(|c: &CustomAxis| c.name == a.name) {
                self.error(format!("{at}.name"), format!("axis `{}` is already defined", a.name), None);
            }
            if a.values.is_empty() {
                self.error(format!("{at}.values"), "axis is empty", None);
            }
            if a.values.iter().any(|v| v.is_array() || v.is_object() || v.is_null()) {
                self.error(format!("{at}.values"), "values must be strings, numbers or booleans", None);
            }
            let feeds = match (a.server_flag, a.workload) {
                (Some(flag), None) => Feeds::ServerFlag(flag),
                (None, Some(key)) if WORKLOAD_AXES.contains(&key.as_str()) => Feeds::Workload(key),
                (None, Some(key)) => {
                    self.error(
                        format!("{at}.workload"),
                        format!("`{key}` is not a workload parameter an axis can set"),
                        Some(format!("one of: {}", WORKLOAD_AXES.join(", "))),
                    );
                    Feeds::Workload(key)
                }
                _ => {
                    self.error(
                        &at,
                        "an axis feeds exactly one of `server-flag` or `workload`",
                        Some("for example server-flag = \"--max-num-seqs\"".into()),
                    );
                    Feeds::ServerFlag(String::new())
                }
            };
            custom.push(CustomAxis { name: a.name, values: a.values, feeds });
        }
        let axis_names: Vec<String> = BUILTIN_AXES.iter().map(|s| s.to_string()).chain(custom.iter().map(|c| c.name.clone())).collect();
        let rules = |v: &mut Self, kind: &str, raw: Vec<BTreeMap<String, serde_json::Value>>| -> Vec<Rule> {
            raw.into_iter()
                .enumerate()
                .map(|(i, entry)| {
                    let key_path = KeyPath::parse(&format!("matrix.{kind}[{i}]"));
                    if entry.is_empty() {
                        v.error(
                            key_path.to_string(),
                            format!("an empty {kind} rule matches every cell"),
                            Some("name at least one axis, e.g. { model = \"claude\", frames = 128 }".into()),
                        );
                    }
                    let mut conditions = BTreeMap::new();
                    for (axis, value) in entry {
                        if !axis_names.contains(&axis) {
                            let hint = closest(&axis, axis_names.iter().map(String::as_str))
                                .map(|c| format!("did you mean `{c}`?"))
                                .unwrap_or_else(|| format!("axes: {}", axis_names.join(", ")));
                            v.error(format!("{key_path}.{axis}"), format!("`{axis}` is not an axis"), Some(hint));
                        }
                        let values = match value {
                            serde_json::Value::Array(a) => a,
                            other => vec![other],
                        };
                        conditions.insert(axis, values);
                    }
                    Rule { key_path, conditions }
                })
                .collect()
        };
        let exclude = rules(self, "exclude", m.exclude);
        let include = rules(self, "include", m.include);
        Matrix { models: m.model, variants, seeds, batch_sizes, frames, custom, exclude, include }
    }
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

/// An [`Issue`] at `path`, located in `source` (for errors found after validation).
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

pub fn issue_at(source: &Source, path: &str, message: String, hint: Option<String>) -> Issue {
    let at = locate::locate(&source.text, source.yaml, &KeyPath::parse(path));
    Issue { at, path: path.to_string(), message, hint }
}
