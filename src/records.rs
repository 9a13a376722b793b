//! One record type per result table, and the one writer and reader of each.
//!
//! A measure step and an import step both produce a cell's `requests` and `chunks`
//! tables and its `meta.json`; a measure also writes `metrics` (the server's
//! `/metrics`) and `telemetry` (GPU samples). They write them through the functions
//! here, from [`RequestRow`], [`ChunkRow`], [`MetricRow`], [`TelemetryRow`] and
//! [`Meta`]; the aggregate step and search read them back through [`read_meta`] and
//! [`read_requests`]. A new column is a new field here, and nowhere else.
//!
//! Invariants: the columns come in the order of the fields (docs/results.md lists
//! them, and a test below holds the two equal); `meta.json` is written with its keys
//! sorted at every level, as it always has been, and read into [`Meta`], never indexed
//! by string. This module knows nothing of how the rows were obtained.

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::export;

/// One request (one attempt of one turn): a row of `requests`, after the cell's
/// columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRow {
    /// 0-based index of the conversation.
    pub conversation: u32,
    /// 0-based index of the turn within its conversation.
    pub turn: u32,
    /// 0 for the first try of a turn; a turn answered 429 is retried, each attempt a row.
    pub attempt: u32,
    /// Warm-up requests are recorded but excluded from statistics.
    pub warmup: bool,
    /// Size of the request body, bytes.
    pub request_bytes: Option<u64>,
    /// When the client meant to send (ns): in open loop the drawn send time, in closed
    /// loop just before sending.
    pub scheduled_ns: Option<u64>,
    /// Just before the request was handed to the HTTP client (ns).
    pub sent_ns: Option<u64>,
    /// Response headers received (ns).
    pub headers_ns: Option<u64>,
    /// First body bytes received (ns).
    pub first_byte_ns: Option<u64>,
    /// First chunk with non-empty content (ns).
    pub first_token_ns: Option<u64>,
    /// Stream finished, or failed (ns).
    pub end_ns: Option<u64>,
    /// `first_token_ns − sent_ns`, ms.
    pub ttft_ms: Option<f64>,
    /// `end_ns − sent_ns`, successful requests only, ms.
    pub e2e_ms: Option<f64>,
    /// `(end_ns − first_token_ns) / (completion_tokens − 1)`, ms.
    pub tpot_ms: Option<f64>,
    /// Prompt tokens, from the server's usage report.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, from the server's usage report.
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the server read from its cache.
    pub cached_tokens: Option<u64>,
    /// Content chunks received.
    pub chunks: u32,
    /// HTTP status (0 when none).
    pub status: Option<u32>,
    /// What a refusal asked for in `Retry-After`, seconds.
    pub retry_after_s: Option<f64>,
    /// `none`, or the class of the failure (`connect`, `timeout`, `http_4xx`, …).
    pub error: String,
    /// The server's message or the transport error, API keys redacted.
    pub error_detail: String,
    /// The model's answer as streamed, API keys redacted.
    pub answer: String,
    /// The trace id the request's W3C `traceparent` carried, 32 hex digits (none:
    /// no `traceparent` was sent).
    pub trace_id: Option<String>,
    /// The server's span (matched by trace id): `gen_ai.latency.time_in_queue`, ms.
    pub server_queue_ms: Option<f64>,
    /// `gen_ai.latency.time_in_model_prefill`, ms.
    pub server_prefill_ms: Option<f64>,
    /// `gen_ai.latency.time_in_model_decode`, ms.
    pub server_decode_ms: Option<f64>,
    /// `gen_ai.latency.time_to_first_token`, ms.
    pub server_ttft_ms: Option<f64>,
    /// `gen_ai.latency.e2e`, ms.
    pub server_e2e_ms: Option<f64>,
    /// `server_e2e_ms − (server_queue_ms + server_prefill_ms + server_decode_ms)`:
    /// rendering the request, decoding and processing its images, ms.
    pub server_preprocess_ms: Option<f64>,
    /// `ttft_ms − server_ttft_ms`: the wire, HTTP and JSON on both sides, ms.
    pub outside_server_ms: Option<f64>,
    /// Why the row has no span: `no span received`, `server does not trace`.
    pub span_missing: Option<String>,
}

/// One span a server sent about a request of the cell: a row of `spans`, its
/// latencies converted from the server's seconds once, here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRow {
    /// The trace id, 32 hex digits, as in `requests`.
    pub trace_id: String,
    /// The span's name (`llm_request`).
    pub name: String,
    /// Start and end on the server's wall clock (ns since the Unix epoch).
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// `gen_ai.request.id`.
    pub request_id: Option<String>,
    /// `gen_ai.latency.time_in_queue`, ms.
    pub queue_ms: Option<f64>,
    /// `gen_ai.latency.time_in_model_prefill`, ms.
    pub prefill_ms: Option<f64>,
    /// `gen_ai.latency.time_in_model_decode`, ms.
    pub decode_ms: Option<f64>,
    /// `gen_ai.latency.time_in_model_inference`, ms.
    pub inference_ms: Option<f64>,
    /// `gen_ai.latency.time_to_first_token`, ms.
    pub ttft_ms: Option<f64>,
    /// `gen_ai.latency.e2e`, ms.
    pub e2e_ms: Option<f64>,
    /// `gen_ai.usage.prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `gen_ai.usage.completion_tokens`.
    pub completion_tokens: Option<u64>,
}

impl SpanRow {
    /// `span` as a row: seconds to ms.
    pub fn of(span: &crate::otlp::ServerSpan) -> SpanRow {
        let ms = |s: Option<f64>| s.map(|s| s * 1e3);
        SpanRow {
            trace_id: span.trace_id.map(|t| t.hex()).unwrap_or_default(),
            name: span.name.clone(),
            start_unix_ns: span.start_unix_ns,
            end_unix_ns: span.end_unix_ns,
            request_id: span.request_id.clone(),
            queue_ms: ms(span.queue_s),
            prefill_ms: ms(span.prefill_s),
            decode_ms: ms(span.decode_s),
            inference_ms: ms(span.inference_s),
            ttft_ms: ms(span.ttft_s),
            e2e_ms: ms(span.e2e_s),
            prompt_tokens: span.prompt_tokens,
            completion_tokens: span.completion_tokens,
        }
    }
}

/// One row of `quality`: a measured turn scored by one method.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRow {
    /// As in `requests`.
    pub conversation: u32,
    /// As in `requests`.
    pub turn: u32,
    /// The conversation's number in the conversations file (none for synthetic ones):
    /// seeds that draw the same conversation score the same questions.
    pub item: Option<u64>,
    /// A scorer against the reference answer (`exact`, `contains`, `choice`, `number`),
    /// or against the reference variant's answer (`agreement`, `chrf`).
    pub method: String,
    /// What the answer is compared with: `reference` (the recorded answer), or the
    /// reference variant's name.
    pub against: String,
    /// 0–1; none when the turn failed or has no reference or counterpart.
    pub score: Option<f64>,
    /// The answer is `max-tokens` long: cut there.
    pub truncated: bool,
}

/// One content chunk of a request: a row of `chunks`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkRow {
    /// The request's conversation.
    pub conversation: u32,
    /// The request's turn.
    pub turn: u32,
    /// The request's attempt.
    pub attempt: u32,
    /// 0-based index of the chunk within its request.
    pub chunk: u32,
    /// When the chunk arrived (ns).
    pub arrival_ns: Option<u64>,
    /// Since the previous chunk (ms); empty for the first.
    pub gap_ms: Option<f64>,
    /// Content bytes in the chunk.
    pub content_bytes: Option<u32>,
}

/// One value of one series at one scrape of the server's `/metrics`: a row of `metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// `CLOCK_MONOTONIC` when the scrape's answer arrived (ns).
    pub t_ns: u64,
    /// The series' name as the server writes it (`vllm:prefix_cache_hits_total`, …).
    pub metric: String,
    /// `name="value"` pairs sorted by name, comma-separated; a histogram bucket's bound
    /// is its `le`.
    pub labels: String,
    /// The sample's value, in the metric's unit.
    pub value: f64,
}

/// One reading of one GPU: a row of `telemetry`. Every reading is optional: NVML
/// reports what the GPU supports.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRow {
    /// `CLOCK_MONOTONIC`, comparable with the request timestamps (ns).
    pub t_ns: u64,
    /// NVML index.
    pub gpu: u32,
    /// Board power draw, W.
    pub power_w: Option<f64>,
    /// GPU core temperature, °C.
    pub temperature_c: Option<u32>,
    /// Current SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Current memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// NVML's utilization over its last sample period, %.
    pub gpu_util_pct: Option<u32>,
    /// Device memory in use, MiB.
    pub mem_used_mib: Option<f64>,
    /// Why clocks are held down, NVML's names joined by `|` (e.g.
    /// `SW_POWER_CAP|HW_THERMAL_SLOWDOWN`); empty when nothing holds them.
    pub throttle: Option<String>,
}

/// A cell's `meta.json`: where its rows came from and what else is known of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// `pipeline` and its version.
    pub tool: String,
    /// The cell's coordinates as (axis, value) pairs, in the order of its columns.
    pub cell: Vec<(String, String)>,
    /// The server that answered, or the file the rows were imported from.
    pub server: Server,
    /// The hardware identity of the measuring machine.
    pub hardware: String,
    /// NVML's driver and CUDA versions and GPU names, or why NVML is not there.
    pub nvml: Available<Nvml>,
    /// The GPUs sampled, or why nothing was sampled.
    pub telemetry: Available<Sampled>,
    /// How the cell was kept from the server caches other cells filled.
    pub isolation: Isolation,
    /// What the cell's scrapes of `/metrics` say, or why there are none.
    pub server_metrics: Available<ServerMetrics>,
    /// Turns measured (each counted once, by its last attempt; warm-up excluded).
    pub requests: usize,
    /// Of those, the failed ones.
    pub errors: usize,
    /// Conversations from a file (`[workload] conversations`): which, and how replayed.
    /// Absent for synthetic conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    /// A trace replay (`arrival = "trace"`): the trace that was replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceMeta>,
    /// The server's own spans (OTLP), or why there are none; absent for an import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<Available<Spans>>,
}

/// What a cell received of the server's spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spans {
    /// Where the receiver listened (`http://IP:PORT/v1/traces`).
    pub receiver: String,
    /// Requests that carried a `traceparent` (warm-up included).
    pub sent: usize,
    /// Of those, joined to their span.
    pub joined: usize,
    /// How long the cell waited at its end for its last spans, ms.
    pub waited_ms: f64,
    /// What the receiver counted since the previous cell on the server collected.
    pub counts: crate::otlp::Counts,
    /// The server's spans that belong to no request (vLLM's start-up: `Overall
    /// Loading`, `Allocate KV cache`, …), since it started.
    pub startup: Vec<StartupSpan>,
    /// What did not go as asked (the receiver's address was taken).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A span of the server's own work, not of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupSpan {
    pub name: String,
    /// Its length, ms.
    pub ms: f64,
}

/// The conversations file a cell replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The file as the experiment names it.
    pub file: String,
    /// The file resolved (absolute paths and `..` are allowed).
    pub path: String,
    /// `openai` or `llava`.
    pub format: String,
    /// blake3 of the file.
    pub digest: String,
    /// `source` (images kept at their size) or `WxH` (resized to it).
    pub resolution: String,
    /// `live` (the server's own answers resent) or `recorded` (the file's); set by the
    /// measure step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// The conversations replayed, in the order of the `conversation` column.
    pub conversations: Vec<DrawnConversation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawnConversation {
    /// Its number in the file, from 0.
    pub index: u64,
    /// Its `id`, where the file gives one.
    pub id: Option<String>,
    /// `line 12` (JSONL) or `record 3` (the LLaVA array).
    pub at: String,
}

/// The trace a cell replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceMeta {
    /// The file as the experiment file writes it (relative to the project root, or
    /// absolute; `..` allowed).
    pub file: String,
    /// The file, resolved: where it was read from.
    pub path: String,
    /// blake3 of its bytes (as in the measure's key).
    pub digest: String,
    /// Requests in the trace.
    pub requests: usize,
    /// `trace-speedup`: the trace's times were divided by it.
    pub speedup: f64,
}

/// The server behind a cell. Which fields are present depends on how it was run: a
/// launched server has `command` and `log`, an endpoint `url` and `api`, an import
/// `import` (and `url` and `version` written as null).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `sim`, `vllm`, `command`, `endpoint`, `openai`, `anthropic` or `import`.
    pub backend: String,
    /// The full command line of a launched server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The address of a server started by someone else (null for an import).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub url: Option<Option<String>>,
    /// The route requests went to (`/v1/chat/completions`, `/v1/messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// What the server's `/version` said (null: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub version: Option<Option<String>>,
    /// The server's log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// `CUDA_VISIBLE_DEVICES` as the server was given it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_visible_devices: Option<String>,
    /// The Slurm job the server ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<Slurm>,
    /// The imported file, its format and what it does not record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<Import>,
}

/// A Slurm job, as its environment named it (null where a variable was not set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    pub job_id: Option<String>,
    pub node: Option<String>,
    pub partition: Option<String>,
}

/// Where imported rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    /// `study-csv`, `aiperf` or `vllm-bench`.
    pub format: String,
    /// The model the rows are filed under.
    pub model: String,
    /// The file as the experiment names it.
    pub file: String,
    /// What the format does not record.
    pub lacks: Vec<String>,
}

/// Something that is there, or `available: false` and the `reason` why not. On disk:
/// `{"available": true, …the fields of T}` or `{"available": false, "reason": …}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Available<T> {
    Yes(T),
    No { reason: String },
}

impl<T> Available<T> {
    pub fn no(reason: impl Into<String>) -> Self {
        Available::No { reason: reason.into() }
    }

    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Available::Yes(t) => Some(t),
            Available::No { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Available::Yes(_) => None,
            Available::No { reason } => Some(reason),
        }
    }
}

impl<T: Serialize> Serialize for Available<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        match self {
            Available::No { reason } => serde_json::json!({"available": false, "reason": reason}).serialize(s),
            Available::Yes(t) => match serde_json::to_value(t).map_err(S::Error::custom)? {
                serde_json::Value::Object(mut fields) => {
                    fields.insert("available".into(), true.into());
                    fields.serialize(s)
                }
                _ => Err(S::Error::custom("an available record must be a struct")),
            },
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Available<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        match fields.remove("available") {
            Some(serde_json::Value::Bool(true)) => {
                T::deserialize(serde_json::Value::Object(fields)).map(Available::Yes).map_err(D::Error::custom)
            }
            Some(serde_json::Value::Bool(false)) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct No {
                    reason: String,
                }
                let no = No::deserialize(serde_json::Value::Object(fields)).map_err(D::Error::custom)?;
                Ok(Available::No { reason: no.reason })
            }
            _ => Err(D::Error::custom("expected `available`: true or false")),
        }
    }
}

/// What NVML said on the measuring machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nvml {
    /// The driver's version (null: NVML did not say).
    pub driver: Option<String>,
    /// The CUDA driver's version as NVML encodes it (null: NVML did not say).
    pub cuda: Option<i32>,
    /// The names of the machine's GPUs.
    pub gpus: Vec<String>,
}

/// GPU sampling during a measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampled {
    /// NVML indices of the GPUs sampled.
    pub gpus: Vec<u32>,
    /// Sampling interval, ms.
    pub interval_ms: u64,
    /// Samples taken.
    pub samples: usize,
}

/// How a cell was kept from the server caches other cells filled (`cache-isolation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolation {
    /// What the experiment asked for (`auto` when it did not say).
    pub asked: String,
    /// What was done: `reset`, `salt`, `restart`, `none` (or `imported`).
    pub done: String,
    /// The `cache_salt` every request of the cell carries, under `salt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Under `salt`: the nonce every image's bytes carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_nonce: Option<String>,
    /// Whether every cache that could hold the cell's prompts was emptied (null:
    /// not recorded, as for an import).
    pub complete: Option<bool>,
    /// What was done instead of what was asked, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What a cell's scrapes of the server's `/metrics` say. Counters are read as
/// Prometheus's `increase()` reads them, summed over label sets; a field is null when
/// the server does not export its metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMetrics {
    /// Scrapes that answered.
    pub scrapes: u64,
    /// Seconds between scrapes (null: only at the start and the end).
    pub interval_s: Option<f64>,
    /// Scrapes that failed.
    pub failures: u64,
    /// Why the first failed scrape failed.
    pub first_failure: Option<String>,
    /// Scraping stopped at its row cap.
    pub truncated: bool,
    /// Samples dropped because their value was not a finite number.
    pub non_finite_dropped: u64,
    /// Counter values below the last (the server restarted).
    pub counter_resets: u64,
    /// Growth of `vllm:prefix_cache_queries_total`, tokens.
    pub prefix_cache_queries: Option<f64>,
    /// Growth of `vllm:prefix_cache_hits_total` over that of the queries, share.
    pub prefix_cache_hit_rate: Option<f64>,
    /// Growth of `vllm:mm_cache_queries_total`, items.
    pub mm_cache_queries: Option<f64>,
    /// Growth of `vllm:mm_cache_hits_total` over that of the queries, share.
    pub mm_cache_hit_rate: Option<f64>,
    /// Mean of `vllm:kv_cache_usage_perc` over the scrapes, share (0–1).
    pub kv_cache_usage_mean: Option<f64>,
    /// Peak of the same, share (0–1).
    pub kv_cache_usage_peak: Option<f64>,
    /// Mean of `vllm:num_requests_running`, requests.
    pub running_mean: Option<f64>,
    /// Peak of the same, requests.
    pub running_peak: Option<f64>,
    /// Mean of `vllm:num_requests_waiting`, requests.
    pub waiting_mean: Option<f64>,
    /// Peak of the same, requests.
    pub waiting_peak: Option<f64>,
    /// Growth of `vllm:num_preemptions_total`.
    pub preemptions: Option<f64>,
    /// The server's own mean time to first token, ms.
    pub server_ttft_ms_mean: Option<f64>,
    /// Quantiles of the server's time to first token, ms.
    pub server_ttft_ms: Quantiles,
    /// The server's mean time queued, ms.
    pub server_queue_ms_mean: Option<f64>,
    /// Quantiles of the server's time queued, ms.
    pub server_queue_ms: Quantiles,
}

/// Quantiles of a server histogram's growth, interpolated within buckets as
/// `histogram_quantile` does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// A field that is written even when null: present (`Some`) whatever its value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The cell's coordinates as `n` rows of leading columns (numbers for the numeric
/// axes), as every request table starts.
fn cell_columns(cell: &[(String, String)], n: usize) -> Vec<Column> {
    cell.iter()
        .map(|(k, v)| {
            let name = k.replace('-', "_");
            match k.as_str() {
                "seed" | "batch-size" | "frames" => Column::new(name.into(), vec![v.parse::<u64>().unwrap_or_default(); n]),
                _ => Column::new(name.into(), vec![v.clone(); n]),
            }
        })
        .collect()
}

/// A column of `rows` named `name`, each row giving its value through `f`.
macro_rules! column {
    ($rows:expr, $name:literal, $f:expr) => {
        Column::new($name.into(), $rows.iter().map($f).collect::<Vec<_>>())
    };
}

/// `requests` (Parquet and CSV) in `out`: the cell's columns, then one per field of
/// [`RequestRow`].
pub fn write_requests(cell: &[(String, String)], rows: &[RequestRow], out: &Path) -> Result<()> {
    let mut cols = cell_columns(cell, rows.len());
    cols.extend([
        column!(rows, "conversation", |r| r.conversation),
        column!(rows, "turn", |r| r.turn),
        column!(rows, "attempt", |r| r.attempt),
        column!(rows, "warmup", |r| r.warmup),
        column!(rows, "request_bytes", |r| r.request_bytes),
        column!(rows, "scheduled_ns", |r| r.scheduled_ns),
        column!(rows, "sent_ns", |r| r.sent_ns),
        column!(rows, "headers_ns", |r| r.headers_ns),
        column!(rows, "first_byte_ns", |r| r.first_byte_ns),
        column!(rows, "first_token_ns", |r| r.first_token_ns),
        column!(rows, "end_ns", |r| r.end_ns),
        column!(rows, "ttft_ms", |r| r.ttft_ms),
        column!(rows, "e2e_ms", |r| r.e2e_ms),
        column!(rows, "tpot_ms", |r| r.tpot_ms),
        column!(rows, "prompt_tokens", |r| r.prompt_tokens),
        column!(rows, "completion_tokens", |r| r.completion_tokens),
        column!(rows, "cached_tokens", |r| r.cached_tokens),
        column!(rows, "chunks", |r| r.chunks),
        column!(rows, "status", |r| r.status),
        column!(rows, "retry_after_s", |r| r.retry_after_s),
        column!(rows, "error", |r| r.error.as_str()),
        column!(rows, "error_detail", |r| r.error_detail.as_str()),
        column!(rows, "answer", |r| r.answer.as_str()),
        column!(rows, "trace_id", |r| r.trace_id.clone()),
        column!(rows, "server_queue_ms", |r| r.server_queue_ms),
        column!(rows, "server_prefill_ms", |r| r.server_prefill_ms),
        column!(rows, "server_decode_ms", |r| r.server_decode_ms),
        column!(rows, "server_ttft_ms", |r| r.server_ttft_ms),
        column!(rows, "server_e2e_ms", |r| r.server_e2e_ms),
        column!(rows, "server_preprocess_ms", |r| r.server_preprocess_ms),
        column!(rows, "outside_server_ms", |r| r.outside_server_ms),
        column!(rows, "span_missing", |r| r.span_missing.clone()),
    ]);
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "requests")
}

/// `chunks` (Parquet and CSV) in `out`, one column per field of [`ChunkRow`].
pub fn write_chunks(rows: &[ChunkRow], out: &Path) -> Result<()> {
    let cols = vec![
        column!(rows, "conversation", |r| r.conversation),
        column!(rows, "turn", |r| r.turn),
        column!(rows, "attempt", |r| r.attempt),
        column!(rows, "chunk", |r| r.chunk),
        column!(rows, "arrival_ns", |r| r.arrival_ns),
        column!(rows, "gap_ms", |r| r.gap_ms),
        column!(rows, "content_bytes", |r| r.content_bytes),
    ];
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "chunks")
}

/// `quality` (Parquet and CSV) in `out`: the cell's columns, then one row per scored
/// turn and method.
pub fn write_quality(cell: &[(String, String)], rows: &[QualityRow], out: &Path) -> Result<()> {
    let mut cols = cell_columns(cell, rows.len());
    cols.extend([
        column!(rows, "conversation", |r| r.conversation),
        column!(rows, "turn", |r| r.turn),
        column!(rows, "item", |r| r.item),
        column!(rows, "method", |r| r.method.as_str()),
        column!(rows, "against", |r| r.against.as_str()),
        column!(rows, "score", |r| r.score),
        column!(rows, "truncated", |r| r.truncated),
    ]);
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "quality")
}

/// The `quality` table of a quality step's output `dir`.
pub fn read_quality(dir: &Path) -> Result<DataFrame> {
    read_table(dir, "quality", None)
}

/// `metrics` (Parquet and CSV) in `out`; nothing when nothing was scraped.
pub fn write_metrics(rows: &[MetricRow], out: &Path) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cols = vec![
        column!(rows, "t_ns", |r| r.t_ns),
        column!(rows, "metric", |r| r.metric.as_str()),
        column!(rows, "labels", |r| r.labels.as_str()),
        column!(rows, "value", |r| r.value),
    ];
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "metrics")
}

/// `spans` (Parquet and CSV) in `out`, one row per span joined to a request.
pub fn write_spans(rows: &[SpanRow], out: &Path) -> Result<()> {
    let cols = vec![
        column!(rows, "trace_id", |r| r.trace_id.as_str()),
        column!(rows, "name", |r| r.name.as_str()),
        column!(rows, "start_unix_ns", |r| r.start_unix_ns),
        column!(rows, "end_unix_ns", |r| r.end_unix_ns),
        column!(rows, "request_id", |r| r.request_id.clone()),
        column!(rows, "queue_ms", |r| r.queue_ms),
        column!(rows, "prefill_ms", |r| r.prefill_ms),
        column!(rows, "decode_ms", |r| r.decode_ms),
        column!(rows, "inference_ms", |r| r.inference_ms),
        column!(rows, "ttft_ms", |r| r.ttft_ms),
        column!(rows, "e2e_ms", |r| r.e2e_ms),
        column!(rows, "prompt_tokens", |r| r.prompt_tokens),
        column!(rows, "completion_tokens", |r| r.completion_tokens),
    ];
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "spans")
}

/// `telemetry` (Parquet and CSV) in `out`, one row per GPU per sample.
pub fn write_telemetry(rows: &[TelemetryRow], out: &Path) -> Result<()> {
    let cols = vec![
        column!(rows, "t_ns", |r| r.t_ns),
        column!(rows, "gpu", |r| r.gpu),
        column!(rows, "power_w", |r| r.power_w),
        column!(rows, "temperature_c", |r| r.temperature_c),
        column!(rows, "sm_clock_mhz", |r| r.sm_clock_mhz),
        column!(rows, "mem_clock_mhz", |r| r.mem_clock_mhz),
        column!(rows, "gpu_util_pct", |r| r.gpu_util_pct),
        column!(rows, "mem_used_mib", |r| r.mem_used_mib),
        column!(rows, "throttle", |r| r.throttle.clone()),
    ];
    export::write_table(&mut DataFrame::new(rows.len(), cols)?, out, "telemetry")
}

/// `meta.json` in `out`, keys sorted at every level, with every key in `secrets`
/// redacted (the server's own words, its version say, are recorded there too).
pub fn write_meta(meta: &Meta, secrets: &crate::secrets::Secrets, out: &Path) -> Result<()> {
    // Through a `Value`, whose maps sort their keys: the order meta.json has always had.
    let mut json = serde_json::to_value(meta)?;
    // Values only: the keys are Meta's own field names (a short key such as `k` must
    // not turn `backend` into something no reader knows).
    secrets.scrub_json_values(&mut json);
    std::fs::write(out.join("meta.json"), serde_json::to_vec_pretty(&json)?).context("writing meta.json")
}

/// The `meta.json` of the step whose output is `dir`.
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join("meta.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
}

/// The `requests` table of the step whose output is `dir`: every column, or only
/// `columns`.
pub fn read_requests(dir: &Path, columns: Option<&[&str]>) -> Result<DataFrame> {
    read_table(dir, "requests", columns)
}

/// The `chunks` table of the step whose output is `dir`: every column, or only
/// `columns`.
pub fn read_chunks(dir: &Path, columns: Option<&[&str]>) -> Result<DataFrame> {
    read_table(dir, "chunks", columns)
}

fn read_table(dir: &Path, name: &str, columns: Option<&[&str]>) -> Result<DataFrame> {
    let columns = columns.map(|c| c.iter().map(|c| (*c).into()).collect());
    export::read_parquet_columns(&dir.join(format!("{name}.parquet")), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/results.md, for checking the record types against what it documents.
    fn docs() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.md")).unwrap()
    }

    /// The text of the section whose heading starts with `heading`, up to the next one.
    fn section<'a>(docs: &'a str, heading: &str) -> &'a str {
        let start = docs.find(&format!("\n{heading}")).unwrap_or_else(|| panic!("no section `{heading}` in docs/results.md"));
        let body = &docs[start + 1..];
        let body = &body[body.find('\n').unwrap_or(body.len())..];
        &body[..body.find("\n## ").unwrap_or(body.len())]
    }

    /// Every `name` in backticks in `text`, in order.
    fn quoted(text: &str) -> Vec<String> {
        text.split('`').skip(1).step_by(2).map(String::from).collect()
    }

    /// The names in backticks in the first column of the table that follows the line
    /// starting with `after` (or the section's first table, with `after` empty).
    fn table_keys(section: &str, after: &str) -> Vec<String> {
        let from = section.find(after).unwrap_or_else(|| panic!("no `{after}` in the section"));
        let rows = section[from..].lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|'));
        // The header and the |---| line are not keys.
        rows.skip(2).flat_map(|row| quoted(row.split('|').nth(1).unwrap_or(""))).collect()
    }

    fn written_columns(dir: &Path, name: &str) -> Vec<String> {
        let df = read_table(dir, name, None).unwrap();
        df.get_column_names().iter().map(|c| c.to_string()).collect()
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    fn example_meta() -> Meta {
        Meta {
            tool: "pipeline 0".into(),
            cell: vec![("model".into(), "m".into()), ("seed".into(), "1".into())],
            server: Server {
                backend: "import".into(),
                url: Some(None),
                version: Some(None),
                import: Some(Import { format: "aiperf".into(), model: "m".into(), file: "f".into(), lacks: vec!["answers".into()] }),
                ..Server::default()
            },
            hardware: "cpu".into(),
            nvml: Available::No { reason: "no driver".into() },
            telemetry: Available::Yes(Sampled { gpus: vec![0, 1], interval_ms: 100, samples: 7 }),
            isolation: Isolation {
                asked: "auto".into(),
                done: "salt".into(),
                salt: Some("s".into()),
                image_nonce: Some("n".into()),
                complete: None,
                notes: vec!["a note".into()],
            },
            server_metrics: Available::Yes(ServerMetrics { scrapes: 3, interval_s: Some(1.0), ..ServerMetrics::default() }),
            requests: 4,
            errors: 1,
            dataset: Some(Dataset {
                file: "chat.jsonl".into(),
                path: "/p/chat.jsonl".into(),
                format: "openai".into(),
                digest: "d".into(),
                resolution: "source".into(),
                history: Some("live".into()),
                conversations: vec![DrawnConversation { index: 3, id: Some("x".into()), at: "line 4".into() }],
            }),
            trace: Some(TraceMeta { file: "t.jsonl".into(), path: "/p/t.jsonl".into(), digest: "d".into(), requests: 4, speedup: 1.0 }),
            spans: Some(Available::Yes(Spans {
                receiver: "http://127.0.0.1:1/v1/traces".into(),
                sent: 4,
                joined: 3,
                waited_ms: 120.0,
                counts: crate::otlp::Counts { batches: 2, unknown_trace: 1, ..Default::default() },
                startup: vec![StartupSpan { name: "Overall Loading".into(), ms: 60_600.0 }],
                notes: vec!["a note".into()],
            })),
        }
    }

    /// Issue 23: the columns docs/results.md documents for each table are the columns
    /// written, in the same order.
    #[test]
    fn the_documented_columns_are_the_written_ones() {
        let docs = docs();
        let dir = tempfile::tempdir().unwrap();
        let cell: Vec<(String, String)> = [("model", "m"), ("variant", "base"), ("seed", "1"), ("batch-size", "2"), ("frames", "1")]
            .map(|(k, v)| (k.into(), v.into()))
            .to_vec();
        write_requests(&cell, &[RequestRow::default()], dir.path()).unwrap();
        write_chunks(&[ChunkRow::default()], dir.path()).unwrap();
        write_metrics(&[MetricRow { t_ns: 1, metric: "m".into(), labels: String::new(), value: 1.0 }], dir.path()).unwrap();
        let gpu = TelemetryRow {
            t_ns: 1,
            gpu: 0,
            power_w: None,
            temperature_c: None,
            sm_clock_mhz: None,
            mem_clock_mhz: None,
            gpu_util_pct: None,
            mem_used_mib: None,
            throttle: None,
        };
        write_telemetry(&[gpu], dir.path()).unwrap();
        write_spans(&[SpanRow::default()], dir.path()).unwrap();
        assert_eq!(table_keys(section(&docs, "## `spans`"), ""), written_columns(dir.path(), "spans"));

        assert_eq!(table_keys(section(&docs, "## `requests`"), ""), written_columns(dir.path(), "requests"));
        // The chunks table is documented as one sentence of names.
        let chunks = section(&docs, "## `chunks`");
        assert_eq!(quoted(chunks.trim().split("\n\n").next().unwrap()), written_columns(dir.path(), "chunks"));
        assert_eq!(table_keys(section(&docs, "## `metrics`"), ""), written_columns(dir.path(), "metrics"));
        assert_eq!(table_keys(section(&docs, "## `telemetry` (one row per GPU"), ""), written_columns(dir.path(), "telemetry"));
        let row = QualityRow {
            conversation: 0,
            turn: 0,
            item: None,
            method: "exact".into(),
            against: "reference".into(),
            score: None,
            truncated: false,
        };
        write_quality(&cell, &[row], dir.path()).unwrap();
        let mut documented: Vec<String> = cell.iter().map(|(k, _)| k.replace('-', "_")).collect();
        documented.extend(table_keys(section(&docs, "## `quality` (one row per scored turn"), ""));
        assert_eq!(documented, written_columns(dir.path(), "quality"));
    }

    /// Issue 23: every key of meta.json that docs/results.md documents is a field of
    /// [`Meta`] (and the other way round), at the top, in `isolation` and in
    /// `server_metrics`.
    #[test]
    fn every_documented_meta_key_is_a_field() {
        let docs = docs();
        let meta = section(&docs, "## `meta.json`");
        let json = serde_json::to_value(example_meta()).unwrap();
        assert_eq!(sorted(table_keys(meta, "| key |")), keys(&json));
        let isolation = table_keys(meta, "`isolation`: how");
        assert_eq!(sorted(table_keys(meta, "`trace`: the trace")), keys(&json["trace"]));
        assert_eq!(sorted(isolation), keys(&json["isolation"]), "every field of Isolation, when all are set");
        let mut metrics = table_keys(meta, "`server_metrics`: what");
        metrics.push("available".into());
        assert_eq!(sorted(metrics), keys(&json["server_metrics"]));
        assert_eq!(sorted(table_keys(meta, "`dataset`: the")), keys(&json["dataset"]), "every field of Dataset, when all are set");
        let mut spans = table_keys(meta, "`spans`: what the cell received");
        spans.push("available".into());
        assert_eq!(sorted(spans), keys(&json["spans"]), "every field of Spans, when all are set");
        assert_eq!(sorted(table_keys(meta, "`spans.counts`:")), keys(&json["spans"]["counts"]));
    }

    /// A secret is redacted from meta.json's values, never from its keys: a one-letter
    /// key must not rename `backend` to something no reader knows.
    #[test]
    fn a_short_secret_leaves_the_field_names_alone() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = crate::secrets::Secrets::new([("K".to_string(), "k".to_string())]);
        write_meta(&example_meta(), &secrets, dir.path()).unwrap();
        let back = read_meta(dir.path()).unwrap();
        assert_eq!(back.server.backend, "import");
        assert_eq!(back.server.import.map(|i| i.lacks), Some(vec!["answers".to_string()]));
    }

    /// What `write_meta` writes, `read_meta` reads back as it was: a null `url` stays
    /// written as null (an import's) and an absent one stays absent (a launched
    /// server's); keys are sorted at every level.
    #[test]
    fn meta_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let meta = example_meta();
        write_meta(&meta, &crate::secrets::Secrets::default(), dir.path()).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), meta);
        let text = std::fs::read_to_string(dir.path().join("meta.json")).unwrap();
        assert!(text.contains(r#""url": null"#) && text.contains(r#""version": null"#), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(keys(&json), sorted(keys(&json)));
        assert_eq!(keys(&json["isolation"]), ["asked", "complete", "done", "image_nonce", "notes", "salt"]);
        assert_eq!(json["nvml"], serde_json::json!({"available": false, "reason": "no driver"}));

        let launched = Meta {
            server: Server { backend: "sim".into(), command: Some(vec!["sim".into()]), version: Some(None), ..Server::default() },
            ..meta
        };
        write_meta(&launched, &crate::secrets::Secrets::default(), dir.path()).unwrap();
        let back = read_meta(dir.path()).unwrap();
        assert_eq!((back.server.url, back.server.version), (None, Some(None)));
    }

    /// A meta.json with a key no field holds is refused, naming it, rather than read
    /// with the key silently dropped.
    #[test]
    fn an_unknown_meta_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(example_meta()).unwrap();
        json["server_metrics"]["spans"] = 1.into();
        std::fs::write(dir.path().join("meta.json"), json.to_string()).unwrap();
        let err = format!("{:#}", read_meta(dir.path()).unwrap_err());
        assert!(err.contains("unknown field `spans`"), "{err}");
        json["server_metrics"] = serde_json::json!({"reason": "x"});
        std::fs::write(dir.path().join("meta.json"), json.to_string()).unwrap();
        let err = format!("{:#}", read_meta(dir.path()).unwrap_err());
        assert!(err.contains("expected `available`: true or false"), "{err}");
    }
}
