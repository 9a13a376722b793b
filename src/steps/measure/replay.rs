//! A measure step that replays a trace (`arrival = "trace"`): an open loop in which
//! request `i` of the trace goes out at its `timestamp / trace-speedup` after the
//! cell's start, whatever happened to the others.
//!
//! Prompts are exact: `input_length` token ids ([`crate::trace::token_ids`]) sent as
//! `prompt` to `/v1/completions`, with `max_tokens = output_length` and `ignore_eos`,
//! streamed with usage. Each request is one row (`conversation` = its index in the
//! trace, `turn` = 0), in the same tables as every other measure, so aggregate and
//! report read it as they read the others; lateness against the trace is
//! `sent_ns − scheduled_ns`, as for the other open-loop arrivals.
//!
//! The trace is streamed, never held: a reader thread reads a line, builds its body
//! and hands it over through a channel of [`AHEAD`] bodies, so memory is bounded
//! whatever the trace's length, and no body is built inside a measured interval. The
//! digest of what was read must be the one in the step's key (the file did not change
//! after planning), or the step fails rather than record a trace it is not keyed by.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    Endpoint, FailureBudget, Params, Record, check_failures, isolation, retry_wait, scrape, start_sampler, until_stopped, write_down,
};
use crate::client::{self, Api, ErrorClass, Target};
use crate::clock::monotonic_ns;
use crate::records::{self, Meta, TraceMeta};
use crate::trace::{self, Reader, Request};

/// Request bodies built ahead of their send time, at most.
const AHEAD: usize = 16;
/// The route trace prompts go to.
pub const ROUTE: &str = "/v1/completions";

/// The trace a measure replays, as its key holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Trace {
    /// As the experiment file writes it: relative to the project root, or absolute.
    pub file: String,
    /// blake3 of its bytes: editing the trace reruns its measures.
    pub digest: String,
    /// Its requests (known from the digest; kept for the failure budget).
    pub requests: usize,
    /// Its times are divided by this.
    pub speedup: f64,
}

/// The report's words for a trace: "the 24 requests of FILE, 2.9 s of trace time".
pub fn describe(t: &crate::trace::TraceFile) -> String {
    format!("the {} requests of {}, {:.1} s of trace time", t.requests, t.written, t.last_ms / 1000.0)
}

/// One request, ready to go.
struct Prepared {
    index: u64,
    /// When it is due, from the cell's start.
    offset: Duration,
    body: bytes::Bytes,
}

/// Replay `trace` (at `path`) against `endpoint`, as the cell of `p`: isolate, warm
/// up, send every request at its time with telemetry and `/metrics` alongside, and
/// write down everything as [`super::run`] does.
pub async fn run(p: &Params, trace: &Trace, path: &Path, endpoint: &Endpoint, hardware: &str, out: &Path) -> Result<()> {
    if endpoint.api != Api::OpenAiChat {
        bail!("a trace replay sends token ids to `{ROUTE}`, which `{}` does not serve", p.backend);
    }
    let run_id = blake3::hash(format!("{}{}", monotonic_ns(), std::process::id()).as_bytes()).to_hex()[..8].to_string();
    let timeout = Duration::try_from_secs_f64(p.request_timeout_s).context("request-timeout-s")?;
    let mut isolated = isolation::isolate(endpoint, &p.backend, p.cache_isolation, &format!("pipeline-{run_id}"), timeout).await?;
    // Trace prompts hold no images: the salt keeps the cell from every cache that could
    // hold its prompts (the multimodal caches have nothing of it).
    if isolated.salt.is_some() {
        isolated.complete = true;
    }
    let seed = p.cell.iter().find(|(k, _)| k == "seed").and_then(|(_, v)| v.parse::<u64>().ok()).unwrap_or(0);
    let header = Arc::new(header(p, isolated.salt.as_deref()));
    let target = Arc::new(Target {
        url: format!("{}{ROUTE}", endpoint.base_url.trim_end_matches('/')),
        api: Api::OpenAiChat,
        api_key: endpoint.api_key.clone(),
        timeout,
        secrets: endpoint.secrets.clone(),
        traceparent: endpoint.traceparent,
        spans: endpoint.spans.clone(),
    });
    let client = client::http_client(64)?;

    let sampler = start_sampler(endpoint);
    let mut records = warm_up(p, path, seed, &header, &client, &target, &run_id).await?;
    let interval = (p.metrics_interval_s > 0.0).then(|| Duration::from_secs_f64(p.metrics_interval_s));
    let scraper = scrape::Scraper::start(&endpoint.base_url, endpoint.api_key.clone(), endpoint.secrets.clone(), interval, timeout).await;
    let budget = Arc::new(FailureBudget::new(p.max_error_share, trace.requests as u64));
    records.extend(replay(trace, path, seed, header, &client, &target, &run_id, &budget).await?);
    let written = write_down(p, endpoint, hardware, records, sampler, (scraper, interval), isolated, out).await?;
    let mut server = written.meta.server.clone();
    if server.api.is_some() {
        server.api = Some(ROUTE.into());
    }
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let meta = Meta {
        server,
        trace: Some(TraceMeta {
            file: trace.file.clone(),
            path: resolved.display().to_string(),
            digest: trace.digest.clone(),
            requests: trace.requests,
            speedup: trace.speedup,
        }),
        ..written.meta.clone()
    };
    records::write_meta(&meta, &endpoint.secrets, out)?;
    check_failures(p, &written.measured(), &written.failed(), &budget, trace.requests as u64)
}

/// Every body's start: the model, streaming with usage, `ignore_eos` (the answer is
/// exactly `max_tokens` long), the temperature and the cell's `cache_salt`.
fn header(p: &Params, salt: Option<&str>) -> String {
    let model = serde_json::Value::String(p.served_name.clone());
    let salt = salt.map(|s| format!(r#""cache_salt":{},"#, serde_json::Value::String(s.to_string()))).unwrap_or_default();
    format!(
        r#"{{{salt}"model":{model},"stream":true,"stream_options":{{"include_usage":true}},"ignore_eos":true,"temperature":{},"#,
        p.temperature
    )
}

/// The body of one request: `header`, its `max_tokens` and its prompt as token ids.
fn body(header: &str, request: &Request, ids: &[u32]) -> bytes::Bytes {
    let mut s = String::with_capacity(header.len() + ids.len() * 6 + 40);
    s.push_str(header);
    let _ = write!(s, r#""max_tokens":{},"prompt":["#, request.output_length);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push_str("]}");
    s.into()
}

/// The warm-up requests: the first request's lengths, with prompts of their own (no
/// hash blocks, so they leave nothing in the prefix cache that the trace reads).
#[allow(clippy::too_many_arguments)]
async fn warm_up(
    p: &Params,
    path: &Path,
    seed: u64,
    header: &str,
    client: &reqwest::Client,
    target: &Target,
    run_id: &str,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    if p.warmup_requests == 0 {
        return Ok(records);
    }
    let first = {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || Reader::open(&owned).and_then(|mut r| r.next().unwrap_or_else(|| Err(no_requests()))))
            .await?
            .map_err(|e| anyhow::anyhow!("the trace `{}` {e}", path.display()))?
    };
    let shape = Request { hash_ids: Vec::new(), ..first };
    for i in 0..p.warmup_requests {
        let body = body(header, &shape, &trace::token_ids(seed, u64::MAX - u64::from(i), &shape));
        let scheduled_ns = monotonic_ns();
        let ex = client::exchange(client, target, &format!("{run_id}-warmup-{i}"), body).await;
        records.push(Record { conversation: 0, turn: i, attempt: 0, warmup: true, scheduled_ns, ex });
    }
    Ok(records)
}

fn no_requests() -> trace::TraceError {
    trace::TraceError { line: None, message: "holds no requests".into(), hint: String::new() }
}

/// Send every request of the trace at its time; each in a task of its own, retried
/// after a 429, given up together when `budget` says the step cannot pass.
#[allow(clippy::too_many_arguments)]
async fn replay(
    trace: &Trace,
    path: &Path,
    seed: u64,
    header: Arc<String>,
    client: &reqwest::Client,
    target: &Arc<Target>,
    run_id: &str,
    budget: &Arc<FailureBudget>,
) -> Result<Vec<Record>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Prepared>(AHEAD);
    let (path_owned, speedup) = (path.to_path_buf(), trace.speedup);
    // The reader: every line checked again, its body built ahead of its time.
    let reader = tokio::task::spawn_blocking(move || -> Result<String, trace::TraceError> {
        let mut reader = Reader::open(&path_owned)?;
        for (index, request) in reader.by_ref().enumerate() {
            let request = request?;
            let ids = trace::token_ids(seed, index as u64, &request);
            let offset = Duration::from_secs_f64(request.timestamp_ms / 1000.0 / speedup);
            let prepared = Prepared { index: index as u64, offset, body: body(&header, &request, &ids) };
            if tx.blocking_send(prepared).is_err() {
                break; // the replay was given up
            }
        }
        Ok(reader.digest())
    });
    let start = Instant::now() + Duration::from_millis(5);
    let start_ns = crate::clock::instant_to_ns(start);
    let mut stop = budget.stop.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    let mut records = Vec::new();
    while let Some(next) = rx.recv().await {
        while let Some(done) = tasks.try_join_next() {
            records.extend(done.context("a request task panicked")?);
        }
        if until_stopped(&mut stop, tokio::time::sleep_until((start + next.offset).into())).await.is_none() {
            break;
        }
        let (client, target, budget) = (client.clone(), target.clone(), budget.clone());
        let request_id = format!("{run_id}-r{}", next.index);
        let scheduled_ns = start_ns + next.offset.as_nanos() as u64;
        tasks.spawn(async move { send(next, scheduled_ns, &request_id, &client, &target, &budget).await });
    }
    drop(rx);
    while let Some(done) = tasks.join_next().await {
        records.extend(done.context("a request task panicked")?);
    }
    let read = reader.await.context("the trace reader panicked")?;
    if !budget.stopped() {
        let digest = read.map_err(|e| anyhow::anyhow!("the trace `{}` {e}", trace.file))?;
        if digest != trace.digest {
            bail!("the trace `{}` changed after the run was planned; run again to replay what it holds now", trace.file);
        }
    }
    Ok(records)
}

/// One request of the trace and its retries after a 429, each attempt a record.
async fn send(
    next: Prepared,
    scheduled_ns: u64,
    request_id: &str,
    client: &reqwest::Client,
    target: &Target,
    budget: &FailureBudget,
) -> Vec<Record> {
    let mut stop = budget.stop.subscribe();
    let mut out = Vec::new();
    for attempt in 0.. {
        let scheduled_ns = if attempt == 0 { scheduled_ns } else { monotonic_ns() };
        let id = format!("{request_id}-a{attempt}");
        let Some(ex) = until_stopped(&mut stop, client::exchange(client, target, &id, next.body.clone())).await else { break };
        let wait = retry_wait(&ex, attempt);
        if wait.is_none() && ex.error != ErrorClass::None {
            budget.failed();
        }
        out.push(Record { conversation: next.index as u32, turn: 0, attempt, warmup: false, scheduled_ns, ex });
        match wait {
            Some(w) if until_stopped(&mut stop, tokio::time::sleep(w)).await.is_some() => {}
            _ => break,
        }
    }
    out
}
