//! The experiment file exactly as written: serde structs that mirror the TOML/YAML.
//!
//! Nothing here is validated beyond types; `config::validate` turns these into the
//! typed [`crate::config::Experiment`]. Every struct denies unknown keys, and no struct
//! uses `untagged` or `flatten`, which would swallow the parsers' line/column errors.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawExperiment {
    pub name: String,
    pub title: Option<String>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub workload: RawWorkload,
    pub matrix: RawMatrix,
    #[serde(default)]
    pub axis: Vec<RawAxis>,
    #[serde(default)]
    pub report: RawReport,
    pub executor: Option<String>,
    pub slurm: Option<RawSlurm>,
}

/// `[slurm]`: how jobs are submitted when `executor = "slurm"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSlurm {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
    pub gpu_type: Option<String>,
    pub mem: Option<String>,
    pub cpus_per_task: Option<i64>,
    pub binary: Option<String>,
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    pub cpu_steps: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawModel {
    pub backend: String,
    pub model: Option<String>,
    pub served_name: Option<String>,
    pub url: Option<String>,
    pub api_key_env: Option<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<u16>,
    pub gpus: Option<i64>,
    pub sim: Option<RawSim>,
    #[serde(default)]
    pub variants: BTreeMap<String, RawVariant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawVariant {
    pub model: Option<String>,
    pub quantization: Option<String>,
    pub dtype: Option<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    pub sim: Option<RawSim>,
}

/// Latency-model overrides for the built-in simulator (see `sim::LatencyModel`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSim {
    pub ttft_base_ms: Option<f64>,
    pub prefill_us_per_token: Option<f64>,
    pub itl_base_ms: Option<f64>,
    pub itl_us_per_inflight: Option<f64>,
    pub jitter: Option<f64>,
    pub prefix_caching: Option<bool>,
    pub answer_tokens: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawServer {
    pub tensor_parallel_size: Option<i64>,
    pub dtype: Option<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    pub gpus: Option<Vec<u32>>,
    pub startup_timeout_s: Option<f64>,
    pub max_model_len: Option<i64>,
    pub prefix_caching: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWorkload {
    pub turns: Option<i64>,
    pub resolution: Option<String>,
    pub questions: Option<Vec<String>>,
    pub questions_file: Option<String>,
    pub images_dir: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub warmup_requests: Option<i64>,
    pub request_timeout_s: Option<f64>,
    pub max_error_share: Option<f64>,
    pub arrival: Option<String>,
    pub request_rate: Option<f64>,
    pub image_reuse: Option<String>,
    pub cache_isolation: Option<String>,
    pub metrics_interval_s: Option<f64>,
    pub frames_as: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMatrix {
    pub model: Vec<String>,
    pub variant: Option<Vec<String>>,
    pub seed: Option<Vec<i64>>,
    pub batch_size: Option<Vec<i64>>,
    pub frames: Option<Vec<i64>>,
    #[serde(default)]
    pub exclude: Vec<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub include: Vec<BTreeMap<String, serde_json::Value>>,
}

/// A user-named axis: its values feed either a server flag or a workload parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAxis {
    pub name: String,
    pub values: Vec<serde_json::Value>,
    pub server_flag: Option<String>,
    pub workload: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawReport {
    pub dir: Option<String>,
    pub title: Option<String>,
    pub templates: Option<String>,
    pub slo: Option<RawSlo>,
    pub baseline: Option<String>,
    pub noise_pct: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSlo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub attainment_pct: Option<f64>,
}
