//! The experiment file exactly as written: serde structs that mirror the TOML/YAML.
//!
//! Nothing here is validated beyond types; `config::validate` turns these into the
//! typed [`crate::config::Experiment`]. Every struct denies unknown keys, and no struct
//! uses `untagged` or `flatten`, which would swallow the parsers' line/column errors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// An experiment file (see docs/experiment-file.md).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "pipeline experiment")]
pub struct RawExperiment {
    /// experiment name: letters, digits, `-`, `_`, at most 64; names the run record `cache/runs/NAME.HASH.json` (HASH: where the file is, so two files of one name keep separate records) and the default report folder (required)
    pub name: String,
    /// report title (overridden by `report.title`) (default: `name`)
    pub title: Option<String>,
    /// `[models.NAME]`: the models to measure, each with a backend and its variants.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// `[server]`: how launched servers (vLLM, a command) are started.
    #[serde(default)]
    pub server: RawServer,
    /// `[workload]`: the conversations every cell sends.
    #[serde(default)]
    pub workload: RawWorkload,
    /// `[matrix]`: the axes whose product is the set of cells.
    pub matrix: RawMatrix,
    /// `[[axis]]`: your own axes, each feeding a server flag or a workload parameter.
    #[serde(default)]
    pub axis: Vec<RawAxis>,
    /// `[report]`: where the report goes and what it judges by.
    #[serde(default)]
    pub report: RawReport,
    /// where steps run: `local`, or `slurm` (one Slurm job per server group; see [`[slurm]`](#slurm) and docs/slurm.md). `--executor` overrides it (default: `local`)
    pub executor: Option<String>,
    /// `[slurm]`: how jobs are submitted when `executor = "slurm"`.
    pub slurm: Option<RawSlurm>,
    /// `[search]`: find the largest value of one axis that meets the SLO, per curve, instead of sweeping a grid.
    pub search: Option<RawSearch>,
    /// `[quality]`: score every measured answer beside its latency.
    pub quality: Option<RawQuality>,
}

/// `[quality]`: how answers are scored (a `quality` step per cell).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQuality {
    /// scorers against each turn's reference answer, the conversations file's recorded assistant turn: `exact` (normalised: case, punctuation, whitespace), `contains`, `choice` (the multiple-choice letter A–J, parsed as MMMU does), `number` (first number, within `number-tolerance`) (default: `[]`)
    pub score: Option<Vec<String>>,
    /// a variant name: each variant's answers are compared with this variant's answers to the same turn of the same model, seed and cell (exact match after normalisation, and chrF); needs temperature 0
    pub agreement: Option<String>,
    /// `number`: the relative tolerance (default: 0.01)
    pub number_tolerance: Option<f64>,
    /// a judge model that scores each answer against its reference from 0 to 1 with a fixed, versioned prompt (method `judge`): a table like a model's (`backend`, `model`, `url`, `api-key-env`, `sim`, …), not measured. Off by default
    pub judge: Option<Box<RawModel>>,
}

/// `[search]`: the axis to search, its range, and how close the answer must be.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSearch {
    /// `batch-size`, or a numeric `[[axis]]` of your own (a request rate, say) (required)
    pub axis: String,
    /// `slo`: the largest value whose cells meet the SLO; `goodput`: the value of peak goodput (requests within the SLO per second) (default: `slo`)
    pub objective: Option<String>,
    /// the first value probed (required)
    pub min: f64,
    /// the largest value probed (required)
    pub max: f64,
    /// for a numeric axis: stop when the interval between the largest passing and the smallest failing value is at most this share of the passing one, from 0.0001 to 1; axes of whole numbers stop at neighbours (default: 0.1)
    pub tolerance: Option<f64>,
    /// extra seeds a probe is measured with when its seeds disagree (some meet the SLO, some do not), before the median seed decides and the answer is marked uncertain (default: 2)
    pub extra_seeds: Option<i64>,
}

/// `[slurm]`: how jobs are submitted when `executor = "slurm"`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSlurm {
    /// `--partition`
    pub partition: Option<String>,
    /// `--account`
    pub account: Option<String>,
    /// `--time` of every job, as Slurm writes it: minutes, `HH:MM:SS` or `D-HH:MM:SS`
    pub time: Option<String>,
    /// GRES type: `--gres=gpu:TYPE:N` instead of `--gres=gpu:N`
    pub gpu_type: Option<String>,
    /// `--mem` (e.g. `"64G"`)
    pub mem: Option<String>,
    /// `--cpus-per-task`
    pub cpus_per_task: Option<i64>,
    /// `pipeline` as the nodes see it (default: this binary's own path, which must then be on a shared filesystem)
    pub binary: Option<String>,
    /// more `sbatch` arguments, e.g. `["--qos=high", "--constraint=h100"]`
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// `local` (default): datagen, aggregate and report run on the submitting machine; `slurm`: each runs as a small CPU job
    pub cpu_steps: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawModel {
    /// `vllm`, `sim` (built-in simulator), `command` (any OpenAI-compatible server from a command template), `endpoint` (a server someone else started), `openai`, `anthropic`, `import` (results another tool recorded, read from files) (required)
    pub backend: String,
    /// model path or id passed to the server (`vllm serve MODEL`) (default: `NAME`)
    pub model: Option<String>,
    /// the name requests use (`--served-model-name`) (default: `model`)
    pub served_name: Option<String>,
    /// base URL for `endpoint`, `openai` (default `https://api.openai.com`), `anthropic` (default `https://api.anthropic.com`); `http://` or `https://` (through rustls), without a user name or password in it. Redirects are not followed
    pub url: Option<String>,
    /// the **name** of the environment variable holding the API key (never the key: a value that looks like one is refused and not repeated). The key is redacted from everything recorded; see [security.md](security.md)
    pub api_key_env: Option<String>,
    /// for `command`: argv with `{port}`, `{host}`, `{model}`, `{served_name}`, `{tp}` placeholders
    pub command: Option<Vec<String>>,
    /// for `command`: a fixed port (checked to be free before start) (default: a free port)
    pub port: Option<u16>,
    /// GPUs one server holds: what a Slurm job asks for (`--gres=gpu:N`) and, locally, whether the server waits for the GPU lane. Enters the server's key only when set. Not for remote backends (default: `tensor-parallel-size` (`vllm`, `command`); 0 (`sim`))
    pub gpus: Option<i64>,
    /// simulator latency model (default: see below)
    pub sim: Option<RawSim>,
    /// receive the server's own OpenTelemetry spans (OTLP over HTTP) and join them to every request: `server_queue_ms`, `server_prefill_ms`, … in `requests` (see docs/results.md). `vllm` and `sim` servers are started with an OTLP endpoint; an `endpoint` server needs `otlp-receiver`. A server setting: it enters the measure's key (default: true for `vllm` and `sim`, true for `endpoint` when `otlp-receiver` is set, false otherwise)
    pub traces: Option<bool>,
    /// for `endpoint` with `traces`: the fixed `IP:PORT` the OTLP receiver listens on, which the server someone else started sends its spans to (`--otlp-traces-endpoint http://IP:PORT/v1/traces`) (default: none)
    pub otlp_receiver: Option<String>,
    /// send a W3C `traceparent` header (a new trace id per request, recorded as `trace_id`) to a hosted API (`openai`, `anthropic`); every other backend gets one always (default: false)
    pub send_traceparent: Option<bool>,
    /// for `import`: the results' format: `study-csv` (the reference study's per-run CSVs), `aiperf` (AIPerf's `profile_export.jsonl`), `vllm-bench` (`vllm bench serve --save-result --save-detailed`)
    pub format: Option<String>,
    /// for `import`: one file per seed, `{ 1337 = "results/run_1.csv", … }`, relative to the project root; every seed of the matrix needs one. Their contents are the step's key
    pub results: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub variants: BTreeMap<String, RawVariant>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
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
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSim {
    pub ttft_base_ms: Option<f64>,
    pub prefill_us_per_token: Option<f64>,
    pub itl_base_ms: Option<f64>,
    pub itl_us_per_inflight: Option<f64>,
    pub jitter: Option<f64>,
    pub prefix_caching: Option<bool>,
    pub answer_tokens: Option<u32>,
    /// answers that depend on the prompt: the canonical answer with this probability (0–1), for scoring tests
    pub quality: Option<f64>,
    /// as a `[quality] judge`: reply with words instead of a score, for testing unscored replies (default: false)
    pub judge_words: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawServer {
    /// `--tensor-parallel-size`; also how many GPUs a server takes (default: 1)
    pub tensor_parallel_size: Option<i64>,
    /// `--dtype` (a variant's `dtype` wins) (default: `auto`)
    pub dtype: Option<String>,
    /// appended to every server command (default: `[]`)
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// GPU indices servers may use (`CUDA_VISIBLE_DEVICES`) (default: all)
    pub gpus: Option<Vec<u32>>,
    /// how long a server may take to answer `/health` (default: 600)
    pub startup_timeout_s: Option<f64>,
    /// `--max-model-len` (a 60-turn 720p conversation needs about 72k tokens) (default: the model's)
    pub max_model_len: Option<i64>,
    /// `true`: `--enable-prefix-caching`, `false`: `--no-enable-prefix-caching` (default: vLLM's default (on in V1))
    pub prefix_caching: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWorkload {
    /// turns per conversation; the history is resent every turn (default: 60)
    pub turns: Option<i64>,
    /// synthetic image size (default: `"1280x720"`)
    pub resolution: Option<String>,
    pub questions: Option<Vec<String>>,
    pub questions_file: Option<String>,
    /// use your own JPEG/PNG images as a pool, reshuffled per seed
    pub images_dir: Option<String>,
    /// your own conversations instead of synthetic ones: an OpenAI chat JSONL file or a LLaVA / ShareGPT4V JSON array, relative to the project (see "Conversations from a file")
    pub conversations: Option<String>,
    /// `openai` or `llava` (default: told by the file's first character, `{` or `[`)
    pub conversations_format: Option<String>,
    /// with `conversations`: `live` resends the server's own earlier answers (what a chat product does); `recorded` resends the file's assistant turns, so every model receives the same messages (default: `"live"`)
    pub history: Option<String>,
    /// per request (default: 32)
    pub max_tokens: Option<i64>,
    /// per request (default: 0)
    pub temperature: Option<f64>,
    /// per measure step, excluded from statistics (default: 1)
    pub warmup_requests: Option<i64>,
    /// per request (default: 120)
    pub request_timeout_s: Option<f64>,
    /// a measure step fails when more of its requests fail (default: 0.05)
    pub max_error_share: Option<f64>,
    /// `closed`: each conversation sends its next turn as soon as the last is answered (B in flight). `poisson` or `constant`: open loop, see below. `trace`: replay the requests of `trace` at its times (default: `"closed"`)
    pub arrival: Option<String>,
    /// open loop only: requests per second over all conversations (an `[[axis]]` with `workload = "request-rate"` sweeps it)
    pub request_rate: Option<f64>,
    /// `resend`: every image of the history goes out again every turn (what chat clients do; servers' caches hide part of its cost). `uuid`: each image goes out once with a stable id (`img-` + blake3 of its bytes) and is referred to afterwards as `{"type": "image_url", "image_url": null, "uuid": …}`, vLLM's multimodal UUIDs (vLLM needs its processor cache or prefix caching on). OpenAI-compatible servers only (default: `"resend"`)
    pub image_reuse: Option<String>,
    /// how each cell is kept from the server caches that other cells filled (a conversation's own history may still hit the cache within its cell). `reset`: empty the server's prefix, multimodal and encoder caches before the cell (vLLM's `POST /reset_prefix_cache`, `/reset_mm_cache`, `/reset_encoder_cache`, served with `VLLM_SERVER_DEV_MODE=1`, which `pipeline` sets for the `vllm` servers it launches). `salt`: a new `cache_salt` for every request of the cell: isolates vLLM's prefix cache, not its multimodal processor cache, which is keyed by image content. `restart`: stop the server and start it afresh before each cell (servers `pipeline` launches; every cache is empty, at the cost of a server start per cell, minutes for a large vLLM model). `none`: measure the caches as earlier cells left them, on purpose. Unset: `reset`; where a server refuses the reset route, `salt`, with a note; a hosted API (`openai`, `anthropic`) cannot be isolated, which the report says. Asking for `reset` or `salt` where it cannot be done is an error that names the fix. What each cell got is in its `meta.json`. An `[[axis]]` with `workload = "cache-isolation"` sweeps it (default: strongest the backend supports)
    pub cache_isolation: Option<String>,
    /// seconds between scrapes of the server's Prometheus `/metrics` during a cell (0: only at its start and end); see docs/results.md (default: 1)
    pub metrics_interval_s: Option<f64>,
    /// `images`: a turn's F frames go as F image parts. `video`: as one `video_url` of JPEG frames (`data:video/jpeg;base64,F1,F2,…`, which vLLM reads as a frame sequence); vLLM servers then get `--limit-mm-per-prompt '{"video": turns}'` and `--media-io-kwargs '{"video": {"num_frames": -1}}'` so no frame is dropped. OpenAI-compatible servers, JPEG frames, `image-reuse = "resend"` only (default: `"images"`)
    pub frames_as: Option<String>,
    /// with `arrival = "trace"`: the JSONL trace to replay (Mooncake's format: one request per line, `timestamp` in ms from the start, `input_length`, `output_length`, optional `hash_ids`), relative to the project root; absolute paths and `..` are allowed. Its digest is part of every measure's key
    pub trace: Option<String>,
    /// with `arrival = "trace"`: the trace's times are divided by this (2: twice as fast), from 0.001 to 1000 (default: 1)
    pub trace_speedup: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMatrix {
    /// models to measure (required)
    pub model: Vec<String>,
    /// variants; a model without a listed variant skips it (default: `["base"]`)
    pub variant: Option<Vec<String>>,
    /// seeds for data generation (default: `[0]`)
    pub seed: Option<Vec<i64>>,
    /// concurrent conversations (closed loop) (default: `[1]`)
    pub batch_size: Option<Vec<i64>>,
    /// images per turn; 0: text-only turns, each its question (or passage) alone (default: `[1]`)
    pub frames: Option<Vec<i64>>,
    /// list of `{ axis = value or [values] }`: remove matching cells (default: `[]`)
    #[serde(default)]
    pub exclude: Vec<BTreeMap<String, serde_json::Value>>,
    /// list of `{ axis = value or [values] }`: add cells (unnamed axes take all values) (default: `[]`)
    #[serde(default)]
    pub include: Vec<BTreeMap<String, serde_json::Value>>,
}

/// A user-named axis: its values feed either a server flag or a workload parameter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAxis {
    pub name: String,
    pub values: Vec<serde_json::Value>,
    pub server_flag: Option<String>,
    pub workload: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawReport {
    /// where the report is published: a folder `pipeline` owns (marked by `.pipeline-report`); one holding other files, or another experiment's report, is refused (default: `reports/NAME`)
    pub dir: Option<String>,
    /// report title (default: top-level `title`)
    pub title: Option<String>,
    /// a folder whose `README.md.j2` / `index.html.j2` replace the embedded templates (`pipeline templates DIR` copies them out to start from) (default: embedded)
    pub templates: Option<String>,
    /// the service-level objective: `ttft-ms`, `tpot-ms`, `e2e-ms` (each optional; a request is *good* when it meets every one set) and `attainment-pct` (default 90: a cell meets the SLO when that share of its requests is good). Drives `goodput_req_per_s`, `slo_met_pct` and the best operating point (default: `{ ttft-ms = 500, tpot-ms = 50 }`)
    pub slo: Option<RawSlo>,
    /// an earlier report folder to compare against (as `pipeline report --baseline DIR`) (default: none)
    pub baseline: Option<String>,
    /// a change against the baseline counts only when its interval lies wholly outside ± this (default: 5)
    pub noise_pct: Option<f64>,
    /// fail `pipeline run` and `pipeline report` (exit code 4) when a metric is significantly worse than the baseline's: `["worse"]` for any metric, or the metrics to watch, e.g. `["e2e_mean_ms", "output_tok_per_s"]` (default: none)
    pub fail_on: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSlo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub attainment_pct: Option<f64>,
    /// the lowest `[quality]` score (0–1) a curve may have and meet the SLO (each of its scores, chrF aside); judges operating points, does not steer `[search]`
    pub quality: Option<f64>,
}
