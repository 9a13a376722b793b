//! The measure step: B multi-turn conversations in flight against one server.
//!
//! Each conversation resends its whole history every turn (all earlier images and
//! the server's real answers), as chat clients do. Request bodies are assembled from
//! pre-encoded image parts before the request's clock starts, so JSON and base64 work
//! never lands inside a measured interval. Warm-up requests run first, use their own
//! images, and are kept but flagged. Failed requests are data; the step fails only when
//! their share passes `max-error-share`. A request refused with 429 (rate limited, as
//! hosted APIs do) is retried after the `Retry-After` it names, up to [`MAX_ATTEMPTS`];
//! every attempt is a row.
//!
//! Bodies are built for the server's wire format ([`Api`]): OpenAI chat completions
//! (`image_url` parts with data URLs) or Anthropic's Messages API (`image` blocks with
//! a base64 `source`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::client::{self, Api, ErrorClass, Exchange, Target};
use crate::clock::monotonic_ns;
use crate::config::CacheIsolation;
use crate::gpu;
use crate::records::{self, Available, ChunkRow, Meta, RequestRow};
use crate::steps::datagen::{Dataset, Part, Turn};

pub mod isolation;
pub mod replay;
pub mod scrape;
pub mod spans;

/// Bump when recorded files would change.
/// 5: `retry_after_s`; keys redacted; redirects, oversized answers and non-event-stream
/// answers classified.
/// 6: cells isolated from each other's server caches (`cache-isolation`); the server's
/// `/metrics` scraped beside the requests.
/// 7: under `salt`, images carry the cell's nonce; non-finite `/metrics` samples
/// dropped and counted; label values redacted.
/// 8: a W3C `traceparent` per request (`trace_id`); the server's spans received and
/// joined (`spans.parquet`, `server_*_ms`, `meta.json`'s `spans`).
pub const VERSION: u32 = 8;

/// Attempts per turn when the server answers 429.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` we honour; a longer one fails the turn.
const MAX_RETRY_WAIT_S: f64 = 120.0;

/// Everything a measure step depends on besides its server (whose configuration and
/// hardware are the key's other fields): its key's `params` are exactly this,
/// serialized. The optional keys came later and are left out when unset, so that
/// experiments not using them keep the keys (and the measurements) they had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// The cell's coordinates as pairs, so the axes keep their order in result tables.
    pub cell: Vec<(String, String)>,
    pub backend: String,
    pub served_name: String,
    pub batch_size: u32,
    pub frames: u32,
    pub turns: u32,
    pub max_tokens: u32,
    pub temperature: f64,
    pub warmup_requests: u32,
    pub request_timeout_s: f64,
    pub max_error_share: f64,
    /// `poisson`, `constant` or `trace` for open-loop arrival; absent: closed loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
    /// `uuid`: send each image once with a stable id, then refer to it by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reuse: Option<String>,
    /// `video`: a turn's frames go as one `video_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_as: Option<String>,
    /// How the cell is kept from caches other cells filled (see [`isolation`]).
    pub cache_isolation: CacheIsolation,
    /// Seconds between scrapes of the server's `/metrics` (see [`scrape`]); 0: at the
    /// start and end of the cell only.
    pub metrics_interval_s: f64,
    /// Conversations from a file: `live` resends the server's answers, `recorded` the
    /// file's. Absent for synthetic conversations (live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// `arrival = "trace"`: the trace replayed instead of conversations ([`replay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<replay::Trace>,
}

/// Where to send requests, and what to write down about the server.
pub struct Endpoint {
    pub base_url: String,
    pub api: Api,
    pub api_key: Option<String>,
    /// Every key this experiment's variables hold: redacted from what is recorded.
    pub secrets: crate::secrets::Secrets,
    pub server_meta: crate::records::Server,
    /// NVML indices of the GPUs the server runs on (empty: not this machine's GPUs),
    /// sampled during the measurement.
    pub gpus: Vec<u32>,
    /// Set once a cache-reset route of this server did not answer in time: its later
    /// cells are salted at once rather than wait for it again (one per server, shared
    /// by every cell that measures on it).
    pub resets_hang: Arc<std::sync::atomic::AtomicBool>,
    /// Requests carry a W3C `traceparent` (`send-traceparent`).
    pub traceparent: bool,
    /// The receiver of the server's spans, for as long as the server is in use (none:
    /// the server does not trace).
    pub spans: Option<Arc<crate::otlp::Receiver>>,
}

/// One request as recorded.
struct Record {
    conversation: u32,
    turn: u32,
    attempt: u32,
    warmup: bool,
    scheduled_ns: u64,
    ex: Exchange,
}

/// How one cell's requests go out: the client, the target, the request header (model,
/// limits, salt) and the pre-encoded image parts.
struct Wire {
    client: reqwest::Client,
    target: Arc<Target>,
    header: Arc<String>,
    parts: Arc<BTreeMap<String, ImagePart>>,
    run_id: String,
    video: bool,
    by_id: bool,
}

/// Measure the cell of `p` against `endpoint` with the dataset in `dataset_dir`: keep
/// it from other cells' caches, warm up, run the conversations with GPU telemetry and
/// the server's `/metrics` alongside, and write down everything.
pub async fn run(p: &Params, dataset_dir: &Path, endpoint: &Endpoint, hardware: &str, out: &Path) -> Result<()> {
    let (by_id, video) = (p.image_reuse.as_deref() == Some("uuid"), p.frames_as.as_deref() == Some("video"));
    let run_id = blake3::hash(format!("{}{}", monotonic_ns(), std::process::id()).as_bytes()).to_hex()[..8].to_string();
    let timeout = Duration::try_from_secs_f64(p.request_timeout_s).context("request-timeout-s")?;
    let mut isolated = isolation::isolate(endpoint, &p.backend, p.cache_isolation, &format!("pipeline-{run_id}"), timeout).await?;
    // Under a salt, the images carry it too, or vLLM's multimodal caches (keyed by
    // the image's bytes) hand this cell what an earlier one processed.
    let nonce = isolated.salt.clone();
    let (dataset, parts) = load(p, dataset_dir, endpoint.api, by_id, video, nonce.as_deref()).await?;
    if let Some(nonce) = nonce {
        isolated.images_salted(&nonce, parts.values().filter(|part| !part.salted).count());
    }
    let target = Arc::new(Target {
        url: format!("{}{}", endpoint.base_url.trim_end_matches('/'), endpoint.api.path()),
        api: endpoint.api,
        api_key: endpoint.api_key.clone(),
        timeout,
        secrets: endpoint.secrets.clone(),
        traceparent: endpoint.traceparent,
        spans: endpoint.spans.clone(),
    });
    let wire = Wire {
        client: client::http_client(p.batch_size as usize + 1)?,
        header: Arc::new(request_header(p, endpoint.api, isolated.salt.as_deref())),
        target,
        parts: Arc::new(parts),
        run_id,
        video,
        by_id,
    };

    let sampler = start_sampler(endpoint);
    let mut records = warm_up(p, &dataset.warmup, &wire).await;
    // The server's own numbers, for the measured requests (warm-up done).
    let interval = (p.metrics_interval_s > 0.0).then(|| Duration::from_secs_f64(p.metrics_interval_s));
    let scraper =
        scrape::Scraper::start(&endpoint.base_url, endpoint.api_key.clone(), endpoint.secrets.clone(), interval, wire.target.timeout).await;
    // Conversations from a file may be shorter than `turns`.
    let planned: u64 = dataset.conversations.iter().take(p.batch_size as usize).map(|c| c.turns.len().min(p.turns as usize) as u64).sum();
    let mut source = dataset.source.clone();
    let budget = Arc::new(FailureBudget::new(p.max_error_share, planned));
    records.extend(converse(p, dataset.conversations, &wire, &budget).await?);
    let written = write_down(p, endpoint, hardware, records, sampler, (scraper, interval), isolated, out).await?;
    let meta = Meta { dataset: source.take().map(|d| records::Dataset { history: p.history.clone(), ..d }), ..written.meta.clone() };
    records::write_meta(&meta, &endpoint.secrets, out)?;
    check_failures(p, &written.measured(), &written.failed(), &budget, planned)
}

/// GPU telemetry for the cell, where the server runs on this machine's GPUs (started
/// before the warm-up: the window covers it).
fn start_sampler(endpoint: &Endpoint) -> Result<gpu::Sampler, String> {
    match endpoint.gpus.is_empty() {
        true => Err("the server does not run on this machine's GPUs".to_string()),
        false => gpu::Sampler::start(&endpoint.gpus, gpu::INTERVAL),
    }
}

/// A cell's requests as written down, and its `meta.json` before the workload's own
/// part (`dataset`, `trace`) is added.
struct Written {
    records: Vec<Record>,
    meta: Meta,
}

impl Written {
    /// Each turn once, by its last attempt (the retried attempts stay as rows).
    fn measured(&self) -> Vec<&Record> {
        let mut last: BTreeMap<(u32, u32), &Record> = BTreeMap::new();
        for r in self.records.iter().filter(|r| !r.warmup) {
            last.insert((r.conversation, r.turn), r); // sorted by attempt: the last one stays
        }
        last.into_values().collect()
    }

    fn failed(&self) -> Vec<&Record> {
        self.measured().into_iter().filter(|r| r.ex.error != ErrorClass::None).collect()
    }
}

/// Everything a cell leaves beside its requests, the same for conversations and
/// trace replays: stop the `/metrics` scraper and the GPU sampler and write what they
/// saw, write the request and chunk rows, and fill `meta.json` but for the workload's
/// part.
#[allow(clippy::too_many_arguments)]
async fn write_down(
    p: &Params,
    endpoint: &Endpoint,
    hardware: &str,
    mut records: Vec<Record>,
    sampler: Result<gpu::Sampler, String>,
    (scraper, interval): (scrape::Scraper, Option<Duration>),
    isolated: isolation::Isolated,
    out: &Path,
) -> Result<Written> {
    records.sort_by_key(|r| (!r.warmup, r.conversation, r.turn, r.attempt));
    let scraped = scraper.finish().await;
    let server_metrics = scrape::summarize(&scraped, interval);
    records::write_metrics(&scraped.rows, out)?;
    let telemetry = match sampler {
        Ok(s) => {
            let samples = s.stop();
            records::write_telemetry(&samples, out)?;
            Available::Yes(records::Sampled {
                gpus: endpoint.gpus.clone(),
                interval_ms: gpu::INTERVAL.as_millis() as u64,
                samples: samples.len(),
            })
        }
        Err(reason) => Available::No { reason },
    };
    let (joined, spans) = spans::join(endpoint, &records, out).await?;
    write_records(p, &records, &joined, out)?;
    let mut written = Written {
        meta: Meta {
            tool: format!("pipeline {}", env!("CARGO_PKG_VERSION")),
            cell: p.cell.clone(),
            server: endpoint.server_meta.clone(),
            hardware: hardware.to_string(),
            nvml: gpu::availability(),
            telemetry,
            isolation: isolated.into(),
            server_metrics,
            requests: 0,
            errors: 0,
            dataset: None,
            trace: None,
            spans: Some(spans),
        },
        records,
    };
    (written.meta.requests, written.meta.errors) = (written.measured().len(), written.failed().len());
    Ok(written)
}

/// The dataset and its images as request parts, once the options that constrain them
/// (`by_id`: images sent once and then referred to; `video`: a turn's frames as one
/// video) are known to fit the server.
/// With `nonce`, every image's bytes carry it (pixels unchanged).
async fn load(
    p: &Params,
    dataset_dir: &Path,
    api: Api,
    by_id: bool,
    video: bool,
    nonce: Option<&str>,
) -> Result<(Dataset, BTreeMap<String, ImagePart>)> {
    if by_id && api != Api::OpenAiChat {
        bail!("image-reuse = \"uuid\" needs a vLLM-compatible server (multimodal UUIDs); `{}` does not take them", p.backend);
    }
    if video && (api != Api::OpenAiChat || by_id) {
        bail!("frames-as = \"video\" needs a vLLM-compatible server and image-reuse = \"resend\"");
    }
    let dir = dataset_dir.to_path_buf();
    let nonce = nonce.map(str::to_string);
    let (dataset, parts) = tokio::task::spawn_blocking(move || load_dataset(&dir, api, by_id, nonce.as_deref())).await??;
    if video && let Some((name, _)) = parts.iter().find(|(_, p)| !p.jpeg) {
        bail!("frames-as = \"video\" sends frames as `data:video/jpeg`, but `{name}` is not a JPEG");
    }
    Ok((dataset, parts))
}

/// The start of every request body, up to its messages: the model, streaming, limits,
/// and the cell's `cache_salt` when it is salted.
fn request_header(p: &Params, api: Api, salt: Option<&str>) -> String {
    let model = serde_json::Value::String(p.served_name.clone());
    let salt = salt.map(|s| format!(r#""cache_salt":{},"#, serde_json::Value::String(s.to_string()))).unwrap_or_default();
    match api {
        // OpenAI's own API wants `max_completion_tokens`; vLLM and most compatible
        // servers take `max_tokens`.
        Api::OpenAiChat => format!(
            r#"{{{salt}"model":{model},"stream":true,"stream_options":{{"include_usage":true}},"{}":{},"temperature":{},"messages":["#,
            if p.backend == "openai" { "max_completion_tokens" } else { "max_tokens" },
            p.max_tokens,
            p.temperature
        ),
        Api::AnthropicMessages => {
            format!(r#"{{"model":{model},"stream":true,"max_tokens":{},"temperature":{},"messages":["#, p.max_tokens, p.temperature)
        }
    }
}

/// The warm-up requests, one turn each with their own images, kept but flagged.
async fn warm_up(p: &Params, warmup: &Turn, wire: &Wire) -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..p.warmup_requests {
        let message = user_message(warmup, &wire.parts, false, wire.video);
        let body = request_body(&wire.header, &[message]).into();
        let scheduled_ns = monotonic_ns();
        let ex = client::exchange(&wire.client, &wire.target, &format!("{}-warmup-{i}", wire.run_id), body).await;
        records.push(Record { conversation: 0, turn: i, attempt: 0, warmup: true, scheduled_ns, ex });
    }
    records
}

/// The cell's conversations, each in its own task: every turn resends the history, on
/// the open-loop schedule when there is one, retried after a 429; given up together
/// when `budget` says no later answer can make the step pass.
async fn converse(
    p: &Params,
    conversations: Vec<crate::steps::datagen::Conversation>,
    wire: &Wire,
    budget: &Arc<FailureBudget>,
) -> Result<Vec<Record>> {
    // Open-loop slots go to the turns that will be sent, turn by turn across the
    // conversations: conversations from a file differ in length, and a slot kept for a
    // turn a conversation does not have would offer less than `request-rate`.
    let (turns, batch) = (p.turns as usize, p.batch_size as usize);
    let lengths: Vec<usize> = conversations.iter().take(batch).map(|c| c.turns.len().min(turns)).collect();
    let mut slots: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for t in 0..turns {
        for (c, _) in lengths.iter().enumerate().filter(|(_, n)| **n > t) {
            let next = slots.len();
            slots.insert((t, c), next);
        }
    }
    let schedule = Arc::new(open_loop_schedule(p, slots.len()));
    let slots = Arc::new(slots);
    let (video, by_id) = (wire.video, wire.by_id);
    let recorded = p.history.as_deref() == Some("recorded");
    let mut tasks = tokio::task::JoinSet::new();
    for (c, conv) in conversations.into_iter().enumerate().take(p.batch_size as usize) {
        let (client, target, parts, run_id) = (wire.client.clone(), wire.target.clone(), wire.parts.clone(), wire.run_id.clone());
        let (schedule, slots, budget) = (schedule.clone(), slots.clone(), budget.clone());
        // A system prompt is the first message (OpenAI) or a field beside them (Anthropic).
        let (header, mut history) = match (&conv.system, target.api) {
            (None, _) => (wire.header.clone(), Vec::new()),
            (Some(system), Api::OpenAiChat) => {
                (wire.header.clone(), vec![format!(r#"{{"role":"system","content":{}}}"#, serde_json::Value::String(system.clone()))])
            }
            (Some(system), Api::AnthropicMessages) => (Arc::new(with_system(&wire.header, system)), Vec::new()),
        };
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut stop = budget.stop.subscribe();
            for (t, turn) in conv.turns.iter().enumerate().take(turns) {
                if *stop.borrow() {
                    break;
                }
                history.push(user_message(turn, &parts, false, video));
                let body: bytes::Bytes = request_body(&header, &history).into();
                // Later turns refer to this turn's images by id, when that is the mode.
                if by_id && let Some(last) = history.last_mut() {
                    *last = user_message(turn, &parts, true, video);
                }
                // Open loop: this turn's send time was drawn in advance; if the previous
                // answer comes later, the request goes out late and `sent_ns` shows it.
                let slot = schedule.as_ref().as_ref().zip(slots.get(&(t, c))).map(|(s, &i)| s.slot(i));
                if let Some((at, _)) = slot
                    && until_stopped(&mut stop, tokio::time::sleep_until(at.into())).await.is_none()
                {
                    break;
                }
                let mut attempt = 0;
                let answer = loop {
                    let scheduled_ns = match slot {
                        Some((_, at_ns)) if attempt == 0 => at_ns,
                        _ => monotonic_ns(),
                    };
                    let request_id = format!("{run_id}-c{c}-t{t}-a{attempt}");
                    // A request in flight when the step is given up is dropped, not recorded.
                    let Some(ex) = until_stopped(&mut stop, client::exchange(&client, &target, &request_id, body.clone())).await else {
                        return out;
                    };
                    let wait = retry_wait(&ex, attempt);
                    let answer = ex.answer.clone();
                    if wait.is_none() && ex.error != ErrorClass::None {
                        budget.failed();
                    }
                    out.push(Record { conversation: c as u32, turn: t as u32, attempt, warmup: false, scheduled_ns, ex });
                    match wait {
                        Some(w) => {
                            if until_stopped(&mut stop, tokio::time::sleep(w)).await.is_none() {
                                return out;
                            }
                        }
                        None => break answer,
                    }
                    attempt += 1;
                };
                // Recorded history resends the file's answer (the planner checked that
                // every replayed turn but the last has one), live the server's.
                let said = match (recorded, &turn.answer) {
                    (true, Some(recorded)) => recorded.clone(),
                    _ => answer,
                };
                history.push(format!(r#"{{"role":"assistant","content":{}}}"#, serde_json::Value::String(said)));
            }
            out
        });
    }
    let mut records = Vec::new();
    while let Some(done) = tasks.join_next().await {
        records.extend(done.context("a conversation task panicked")?);
    }
    Ok(records)
}

/// Fail the step when more of its turns failed than `max-error-share` allows, with the
/// first failure and what it most likely means.
fn check_failures(p: &Params, measured: &[&Record], failed: &[&Record], budget: &FailureBudget, planned: u64) -> Result<()> {
    let share = failed.len() as f64 / measured.len().max(1) as f64;
    if share > p.max_error_share {
        let first = failed.first().map(|r| format!("{}: {}", r.ex.error.name(), r.ex.error_detail)).unwrap_or_default();
        let hint = failed.first().and_then(|r| hint(r));
        let early = match budget.stopped() {
            true => format!(
                "; stopped early, as no later answer could bring the share back under the limit ({} of {planned} turns not measured)",
                planned - measured.len() as u64
            ),
            false => String::new(),
        };
        let error = anyhow::anyhow!(
            "{} of {} requests failed ({:.0}% > max-error-share {:.0}%){early}; first: {first}",
            failed.len(),
            measured.len(),
            share * 100.0,
            p.max_error_share * 100.0
        );
        // The hint travels beside the message (crate::error::render puts it last), so
        // that text from the server in `first` can never read as one.
        return Err(match hint {
            Some(h) => crate::error::WithHint::hint(error, h),
            None => error,
        });
    }
    Ok(())
}

/// Counts turns that failed for good, and gives the step up as soon as more have
/// failed than `max-error-share` of the planned turns allows: no answer still to come
/// could make the step pass, and against a hung server every remaining turn would
/// otherwise wait out its timeout.
struct FailureBudget {
    /// Failures allowed: `max-error-share × planned turns`.
    allowed: f64,
    failed: std::sync::atomic::AtomicU64,
    stop: tokio::sync::watch::Sender<bool>,
}

impl FailureBudget {
    fn new(max_error_share: f64, planned: u64) -> FailureBudget {
        FailureBudget { allowed: max_error_share * planned as f64, failed: Default::default(), stop: tokio::sync::watch::channel(false).0 }
    }

    /// A turn failed for good (its last attempt).
    fn failed(&self) {
        let n = self.failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n as f64 > self.allowed {
            self.stop.send_replace(true);
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// `work`'s output, or `None` if the step is given up first.
async fn until_stopped<T>(stop: &mut tokio::sync::watch::Receiver<bool>, work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        // The sender lives as long as the step, so an error cannot come before the end.
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// What a failed request most likely means, when we can tell.
fn hint(r: &Record) -> Option<String> {
    let ex = &r.ex;
    let detail = ex.error_detail.as_str();
    if detail.contains("image(s) may be provided") || detail.contains("limit-mm-per-prompt") {
        return Some(
            "the server takes fewer images per request than the resent history holds (turns × frames); \
             `vllm` models get --limit-mm-per-prompt from pipeline, a `command` or `endpoint` server must be started with \
             --limit-mm-per-prompt '{\"image\": K}'"
                .into(),
        );
    }
    match (ex.error, ex.status) {
        (ErrorClass::Http4xx, 401 | 403) => Some("the server refused the API key: check the variable named by `api-key-env`".into()),
        (ErrorClass::Http4xx, 404) => Some("the server does not know this model: check `served-name` (or `model`)".into()),
        (ErrorClass::Http429, _) => Some(match ex.retry_after_s {
            Some(s) if s > MAX_RETRY_WAIT_S => {
                format!("rate limited: the server asked to wait {s} s (Retry-After), longer than the {MAX_RETRY_WAIT_S} s pipeline waits")
            }
            _ => format!("rate limited on all {} attempts: lower batch-size or request-rate", r.attempt + 1),
        }),
        (ErrorClass::Redirect, _) => Some("set `url` to the address the server redirects to, if you trust it".into()),
        (ErrorClass::Connect, _) => Some("nothing answers at that address: is the server up, and the URL right?".into()),
        _ => None,
    }
}

/// Open-loop send times: one offset from `start` per (turn, conversation) slot.
struct Schedule {
    start: std::time::Instant,
    /// `start` on the monotonic clock, converted once, so recorded times keep the
    /// offsets exactly.
    start_ns: u64,
    offsets: Vec<Duration>,
}

impl Schedule {
    /// When slot `i` is due, as an instant to sleep until and in nanoseconds to record.
    fn slot(&self, i: usize) -> (std::time::Instant, u64) {
        (self.start + self.offsets[i], self.start_ns + self.offsets[i].as_nanos() as u64)
    }
}

/// The open-loop schedule: slot `turn × batch + conversation`, at `request-rate` per
/// second in total, evenly spaced or with exponential gaps (a Poisson process) from a
/// ChaCha stream seeded by the cell's seed. `None` for closed loop.
fn open_loop_schedule(p: &Params, slots: usize) -> Option<Schedule> {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let (kind, rate) = (p.arrival.as_deref()?, p.request_rate?);
    let seed = p.cell.iter().find(|(k, _)| k == "seed").and_then(|(_, v)| v.parse::<u64>().ok()).unwrap_or(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6f70_656e_6c6f_6f70);
    let mut at = 0.0;
    let offsets = (0..slots)
        .map(|_| {
            let here = Duration::from_secs_f64(at);
            at += match kind {
                "constant" => 1.0 / rate,
                // Inverse transform of a uniform in [0, 1) with 53 random bits.
                _ => -(1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64).ln() / rate,
            };
            here
        })
        .collect();
    let start = std::time::Instant::now() + Duration::from_millis(5);
    Some(Schedule { start, start_ns: crate::clock::instant_to_ns(start), offsets })
}

/// How long to wait before retrying a turn, or `None` to move on: only a 429 is
/// retried, after its `Retry-After` (or 1, 2, 4 s without one).
pub(crate) fn retry_wait(ex: &Exchange, attempt: u32) -> Option<Duration> {
    if ex.error != ErrorClass::Http429 || attempt + 1 >= MAX_ATTEMPTS {
        return None;
    }
    let wait = ex.retry_after_s.unwrap_or(2f64.powi(attempt as i32));
    (wait <= MAX_RETRY_WAIT_S).then(|| Duration::from_secs_f64(wait.max(0.0)))
}

/// An image as JSON content parts: with its data, and (in `uuid` mode) by id only.
#[derive(Debug, Clone)]
struct ImagePart {
    full: String,
    by_id: Option<String>,
    /// The bare base64 of a JPEG (for frames sent as one video), else empty.
    jpeg_b64: String,
    jpeg: bool,
    /// Its bytes carry the cell's nonce.
    salted: bool,
}

/// The dataset, and every image as ready-made JSON content parts for `api`; with
/// `by_id`, parts carry a stable id (vLLM's multimodal UUIDs) derived from the bytes;
/// with `nonce`, the bytes carry it ([`isolation::with_nonce`]).
fn load_dataset(dir: &Path, api: Api, by_id: bool, nonce: Option<&str>) -> Result<(Dataset, BTreeMap<String, ImagePart>)> {
    let dataset: Dataset = serde_json::from_slice(&std::fs::read(dir.join("conversations.json"))?)?;
    let mut parts = BTreeMap::new();
    let all = dataset.conversations.iter().flat_map(|c| c.turns.iter()).chain([&dataset.warmup]);
    for turn in all {
        for img in &turn.images {
            if parts.contains_key(img) {
                continue;
            }
            let mut bytes = std::fs::read(dir.join(img)).with_context(|| format!("reading {img}"))?;
            let salted = match nonce.map(|n| isolation::with_nonce(&bytes, n)) {
                Some(Some(changed)) => {
                    bytes = changed;
                    true
                }
                _ => false,
            };
            let mime = match image::guess_format(&bytes) {
                Ok(image::ImageFormat::Png) => "image/png",
                _ => "image/jpeg",
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let uuid = format!("img-{}", &blake3::hash(&bytes).to_hex()[..32]);
            let part = match (api, by_id) {
                (Api::OpenAiChat, false) => format!(r#"{{"type":"image_url","image_url":{{"url":"data:{mime};base64,{b64}"}}}}"#),
                (Api::OpenAiChat, true) => {
                    format!(r#"{{"type":"image_url","image_url":{{"url":"data:{mime};base64,{b64}"}},"uuid":"{uuid}"}}"#)
                }
                (Api::AnthropicMessages, _) => {
                    format!(r#"{{"type":"image","source":{{"type":"base64","media_type":"{mime}","data":"{b64}"}}}}"#)
                }
            };
            let by_id = by_id.then(|| format!(r#"{{"type":"image_url","image_url":null,"uuid":"{uuid}"}}"#));
            let jpeg = mime == "image/jpeg";
            parts.insert(img.clone(), ImagePart { full: part, by_id, jpeg_b64: if jpeg { b64 } else { String::new() }, jpeg, salted });
        }
    }
    Ok((dataset, parts))
}

/// The request body: `header` (everything up to `"messages":[`), the messages, and
/// the closing brackets, in one allocation. At turn 60 of a 720p conversation this is
/// about 16 MB; it is built before the request's clock starts (`cargo bench --bench sim`
/// times it).
pub fn request_body(header: &str, messages: &[String]) -> String {
    let mut body = String::with_capacity(header.len() + messages.iter().map(|m| m.len() + 1).sum::<usize>() + 2);
    body.push_str(header);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(m);
    }
    body.push_str("]}");
    body
}

/// The header with an Anthropic `system` field before its messages.
fn with_system(header: &str, system: &str) -> String {
    let field = format!(r#""system":{},"messages":["#, serde_json::Value::String(system.to_string()));
    match header.strip_suffix(r#""messages":["#) {
        Some(start) => format!("{start}{field}"),
        None => header.to_string(),
    }
}

/// A user turn; `referenced`: its images by id where they have one (already sent);
/// `video`: its frames as one `video_url` of JPEG frames (vLLM's `data:video/jpeg`:
/// the frames' base64 joined by commas). A turn from a file keeps its parts' order;
/// a synthetic one is its images, then its question.
fn user_message(turn: &Turn, parts: &BTreeMap<String, ImagePart>, referenced: bool, video: bool) -> String {
    fn text(t: &str) -> String {
        format!(r#"{{"type":"text","text":{}}}"#, serde_json::Value::String(t.to_string()))
    }
    fn part(p: &ImagePart, referenced: bool) -> &str {
        match (&p.by_id, referenced) {
            (Some(id), true) => id,
            _ => &p.full,
        }
    }
    if !turn.parts.is_empty() {
        let content: Vec<String> = turn
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(text(t)),
                Part::Image(i) => parts.get(i).map(|p| part(p, referenced).to_string()),
            })
            .collect();
        return format!(r#"{{"role":"user","content":[{}]}}"#, content.join(","));
    }
    let (question, images) = (&turn.question, &turn.images);
    let text = text(question);
    if video && !images.is_empty() {
        let frames: Vec<&str> = images.iter().filter_map(|i| parts.get(i).map(|p| p.jpeg_b64.as_str())).collect();
        let clip = format!(r#"{{"type":"video_url","video_url":{{"url":"data:video/jpeg;base64,{}"}}}}"#, frames.join(","));
        return format!(r#"{{"role":"user","content":[{clip},{text}]}}"#);
    }
    let mut content: Vec<&str> = images.iter().filter_map(|i| parts.get(i).map(|p| part(p, referenced))).collect();
    content.push(&text);
    format!(r#"{{"role":"user","content":[{}]}}"#, content.join(","))
}

fn ms(from: u64, to: Option<u64>) -> Option<f64> {
    to.filter(|&t| t >= from).map(|t| (t - from) as f64 / 1e6)
}

/// The cell's `requests` and `chunks` (those of measured requests only).
fn write_records(p: &Params, records: &[Record], joined: &[spans::Joined], out: &Path) -> Result<()> {
    let rows: Vec<RequestRow> = records.iter().zip(joined).map(|(r, j)| j.fill(request_row(r))).collect();
    records::write_requests(&p.cell, &rows, out)?;
    let mut chunks = Vec::new();
    for r in records.iter().filter(|r| !r.warmup) {
        let mut prev = r.ex.sent_ns;
        for (i, &(at, len)) in r.ex.chunks.iter().enumerate() {
            chunks.push(ChunkRow {
                conversation: r.conversation,
                turn: r.turn,
                attempt: r.attempt,
                chunk: i as u32,
                arrival_ns: Some(at),
                gap_ms: (i > 0).then(|| (at - prev) as f64 / 1e6),
                content_bytes: Some(len),
            });
            prev = at;
        }
    }
    records::write_chunks(&chunks, out)
}

/// A request as its row: durations derived from the timestamps (TPOT and end-to-end
/// latency of successful requests only).
fn request_row(r: &Record) -> RequestRow {
    let ex = &r.ex;
    let ok = ex.error == ErrorClass::None;
    RequestRow {
        conversation: r.conversation,
        turn: r.turn,
        attempt: r.attempt,
        warmup: r.warmup,
        request_bytes: Some(ex.request_bytes),
        scheduled_ns: Some(r.scheduled_ns),
        sent_ns: Some(ex.sent_ns),
        headers_ns: ex.headers_ns,
        first_byte_ns: ex.first_byte_ns,
        first_token_ns: ex.first_token_ns,
        end_ns: Some(ex.end_ns),
        ttft_ms: ms(ex.sent_ns, ex.first_token_ns),
        e2e_ms: ok.then(|| (ex.end_ns - ex.sent_ns) as f64 / 1e6),
        tpot_ms: ex
            .first_token_ns
            .zip(ex.completion_tokens)
            .and_then(|(first, n)| (n > 1 && ok).then(|| (ex.end_ns - first) as f64 / 1e6 / (n - 1) as f64)),
        prompt_tokens: ex.prompt_tokens,
        completion_tokens: ex.completion_tokens,
        cached_tokens: ex.cached_tokens,
        chunks: ex.chunks.len() as u32,
        status: Some(ex.status as u32),
        retry_after_s: ex.retry_after_s,
        error: ex.error.name().to_string(),
        error_detail: ex.error_detail.clone(),
        answer: ex.answer.clone(),
        trace_id: ex.trace_id.map(|id| id.hex()),
        // Filled from the server's span, if one came ([`spans::Joined::fill`]).
        ..RequestRow::default()
    }
}
