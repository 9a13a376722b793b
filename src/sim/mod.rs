//! `pipeline sim-server`: a real HTTP server that speaks vLLM's OpenAI-compatible API
//! (and, for testing hosted-API measurements, Anthropic's Messages API).
//!
//! Endpoints: `GET /health`, `GET /version`, `GET /v1/models`,
//! `POST /v1/chat/completions` (streaming SSE with `stream_options.include_usage`, and
//! non-streaming), `POST /v1/completions` (a prompt of token ids, with `ignore_eos` and
//! block-level prefix caching: [`completions`], [`prefix`]), `POST /v1/messages` (Anthropic's events, `x-api-key` and
//! `anthropic-version` required), and `GET /sim/truth`, which returns, per finished request, when the
//! server handed each chunk to the connection. Latencies follow the documented model in
//! [`model`]. Chunks are emitted by one timer thread on absolute deadlines (deadline
//! n+1 = deadline n + inter-token time, never "now + delay"), so a late wake-up does not
//! shift later tokens; tokio's millisecond timer wheel is not used for emission.
//!
//! Given `--otlp-traces-endpoint`, it exports one `llm_request` span per answered
//! request that carried a W3C `traceparent`, with vLLM's name, attributes and
//! transport (OTLP/HTTP protobuf, batched every `OTEL_BSP_SCHEDULE_DELAY` ms), built
//! from its truth: no queue, preprocessing from arrival to the start of prefill,
//! prefill to the first token's chunk, decode from there to the last.
//!
//! The stream looks like vLLM's: a first chunk with only the role and empty content,
//! one chunk per token, `finish_reason` on the last token, then a usage chunk with
//! `choices: []`, then `data: [DONE]`.

mod completions;
pub mod model;
pub mod prefix;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::clock::monotonic_ns;
use crate::config::SimParams;
use crate::otlp::{ServerSpan, TraceId};

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub served_name: String,
    pub params: SimParams,
    pub seed: u64,
    /// Refuse the first N chat requests with 429 (`Retry-After: 0`).
    pub reject_first: u64,
    /// Refuse requests with more images than this (0: no limit), as vLLM does past
    /// `--limit-mm-per-prompt`.
    pub limit_images: u64,
    /// Exit the process when this chat request arrives (0: never).
    pub crash_at: u64,
    /// Where to post OTLP spans (`--otlp-traces-endpoint`), as vLLM does.
    pub otlp_traces_endpoint: Option<String>,
}

/// What identifies a request: its `x-request-id` and its `traceparent`'s trace id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ids {
    pub request: Option<String>,
    pub trace: Option<TraceId>,
}

impl Ids {
    fn of(req: &Request<Incoming>) -> Ids {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        Ids { request: header("x-request-id").map(String::from), trace: header("traceparent").and_then(trace_id) }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(header: &str) -> Option<TraceId> {
    let mut parts = header.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    if id.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (bytes != [0; 16]).then_some(TraceId(bytes))
}

struct Shared {
    opts: SimOptions,
    in_flight: AtomicUsize,
    seq: AtomicU64,
    /// Chat requests received, refused ones included.
    received: AtomicU64,
    timer: std::sync::mpsc::Sender<Emission>,
    truth: Mutex<Vec<Truth>>,
    prefixes: Mutex<HashSet<[u8; 32]>>,
    /// vLLM's prefix-cache counters, in tokens: looked up, and found.
    prefix_queries: AtomicU64,
    prefix_hits: AtomicU64,
    /// Chat requests answered in full, and prompt and generated tokens, as vLLM counts.
    finished: AtomicU64,
    prompt_tokens: AtomicU64,
    /// Tokens held by requests in flight (prompt and answer, reserved at arrival).
    kv_tokens: AtomicU64,
    /// Time to first token and time queued, in seconds, as vLLM's histograms.
    ttft: Mutex<Histogram>,
    queue: Mutex<Histogram>,
    /// Images sent with a uuid: their width and height.
    images_by_uuid: Mutex<HashMap<String, (u32, u32)>>,
    /// `Authorization: Bearer KEY` that every `/v1` route wants, as vLLM started with
    /// `VLLM_API_KEY` does (read once, at start).
    bearer: Option<String>,
    /// `--references`: each question's recorded answer, by the question's text.
    references: HashMap<String, String>,
    /// Finished requests' spans, to the exporter (with `--otlp-traces-endpoint`).
    spans: Option<mpsc::UnboundedSender<ServerSpan>>,
}

/// What really happened to one request, on the machine's monotonic clock (ns).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    pub request_id: String,
    pub received_ns: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub in_flight_at_start: usize,
    /// Planned deadline of each token.
    pub planned_ns: Vec<u64>,
    /// When each token's chunk was handed to the connection.
    pub sent_ns: Vec<u64>,
    /// The trace id of the request's `traceparent`, 32 hex digits.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// When prefill started: the request was read and parsed, its timing drawn.
    #[serde(default)]
    pub prefill_start_ns: u64,
}

impl Truth {
    /// The `llm_request` span vLLM would export for this request: nothing queues
    /// here; the request starts at arrival, prefill at `prefill_start_ns`, the first
    /// token is its chunk handed to the connection. None before its last chunk.
    fn span(&self, trace: TraceId) -> Option<ServerSpan> {
        let (first, last) = (*self.sent_ns.first()?, *self.sent_ns.last()?);
        let s = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
        let wall = |t: u64| crate::clock::unix_ns_of(t);
        Some(ServerSpan {
            trace_id: Some(trace),
            name: crate::otlp::REQUEST_SPAN.into(),
            start_unix_ns: wall(self.received_ns),
            end_unix_ns: wall(last),
            request_id: Some(self.request_id.clone()),
            queue_s: Some(0.0),
            prefill_s: Some(s(self.prefill_start_ns, first)),
            decode_s: Some(s(first, last)),
            inference_s: Some(s(self.prefill_start_ns, last)),
            ttft_s: Some(s(self.received_ns, first)),
            e2e_s: Some(s(self.received_ns, last)),
            prompt_tokens: Some(self.prompt_tokens),
            completion_tokens: Some(self.completion_tokens),
        })
    }
}

/// The recorded answers of a conversations file, by their question's text (its text
/// parts joined by newlines); a question asked twice keeps its first answer.
fn references(path: &str) -> anyhow::Result<HashMap<String, String>> {
    use crate::conversations::{ConversationFile, Part as FilePart};
    let file = ConversationFile::scan(std::path::Path::new(path), path, None).map_err(|e| anyhow::anyhow!("--references {path}: {e}"))?;
    let all = file.read(&(0..file.at.len() as u64).collect()).map_err(|e| anyhow::anyhow!("--references {path}: {e}"))?;
    let mut map = HashMap::new();
    for turn in all.values().flat_map(|c| &c.turns) {
        let question: Vec<&str> =
            turn.parts.iter().filter_map(|p| if let FilePart::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        if let Some(answer) = &turn.answer {
            map.entry(question.join("\n")).or_insert_with(|| answer.clone());
        }
    }
    Ok(map)
}

/// The text of a message (its text parts joined by newlines), as [`references`] keys it.
fn message_text(m: &Message) -> String {
    match &m.content {
        Content::Text(t) => t.clone(),
        Content::Parts(parts) => {
            parts.iter().filter_map(|p| if let Part::Text { text } = p { Some(text.as_str()) } else { None }).collect::<Vec<_>>().join("\n")
        }
    }
}

/// Run the server until the process is stopped.
pub async fn serve(addr: SocketAddr, opts: SimOptions) -> anyhow::Result<()> {
    let references = match &opts.params.references {
        Some(path) => references(path)?,
        None => HashMap::new(),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The exporter's client is built before the first request (building one takes
    // tens of milliseconds, which would otherwise land in a request's timing).
    let spans = match opts.otlp_traces_endpoint.clone() {
        Some(url) => {
            let client = crate::client::builder().timeout(Duration::from_secs(10)).build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(export_spans(client, url, rx));
            Some(tx)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        spans,
        opts,
        in_flight: AtomicUsize::new(0),
        seq: AtomicU64::new(0),
        received: AtomicU64::new(0),
        timer: tx,
        truth: Mutex::new(Vec::new()),
        prefixes: Mutex::new(HashSet::new()),
        prefix_queries: AtomicU64::new(0),
        prefix_hits: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        prompt_tokens: AtomicU64::new(0),
        kv_tokens: AtomicU64::new(0),
        ttft: Mutex::new(Histogram::default()),
        queue: Mutex::new(Histogram::default()),
        images_by_uuid: Mutex::new(HashMap::new()),
        bearer: std::env::var("VLLM_API_KEY").ok().filter(|k| !k.is_empty()).map(|k| format!("Bearer {k}")),
        references,
    });
    let timer_shared = shared.clone();
    std::thread::Builder::new().name("sim-timer".into()).spawn(move || timer_loop(rx, timer_shared))?;
    println!("pipeline sim-server listening on http://{local}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

type SimBody = http_body_util::Either<Full<Bytes>, TimedBody>;

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<SimBody> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(value.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
    r
}

fn error(status: StatusCode, message: String) -> Response<SimBody> {
    json_response(status, json!({"object": "error", "message": message, "type": "BadRequestError", "code": status.as_u16()}))
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<SimBody>, Infallible> {
    let received_ns = monotonic_ns();
    // As vLLM does when started with `--api-key` or `VLLM_API_KEY`: every `/v1` route
    // wants `Authorization: Bearer KEY` (Anthropic's route keeps its own header).
    if let Some(bearer) = &shared.bearer
        && req.uri().path().starts_with("/v1/")
        && req.uri().path() != "/v1/messages"
        && req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str())
    {
        return Ok(json_response(StatusCode::UNAUTHORIZED, json!({"error": "Unauthorized"})));
    }
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => json_response(StatusCode::OK, json!({})),
        (&Method::GET, "/version") => {
            json_response(StatusCode::OK, json!({"version": format!("pipeline-sim {}", env!("CARGO_PKG_VERSION"))}))
        }
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": shared.opts.served_name, "object": "model", "owned_by": "pipeline-sim"}]}),
        ),
        (&Method::GET, "/metrics") => metrics(&shared),
        // vLLM's cache resets (it serves them with VLLM_SERVER_DEV_MODE=1). The
        // simulator's only cache is the prefix cache; the others have nothing to empty.
        (&Method::POST, "/reset_prefix_cache") => {
            shared.prefixes.lock().unwrap_or_else(|e| e.into_inner()).clear();
            json_response(StatusCode::OK, json!({}))
        }
        (&Method::POST, "/reset_mm_cache" | "/reset_encoder_cache") => json_response(StatusCode::OK, json!({})),
        (&Method::GET, "/sim/truth") => {
            let truth = shared.truth.lock().map(|t| t.clone()).unwrap_or_default();
            json_response(StatusCode::OK, serde_json::to_value(truth).unwrap_or_default())
        }
        (&Method::POST, "/v1/completions") => {
            let ids = Ids::of(&req);
            match req.into_body().collect().await {
                Ok(body) => completions::complete(&body.to_bytes(), ids, received_ns, &shared),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
            }
        }
        (&Method::POST, path @ ("/v1/chat/completions" | "/v1/messages")) => {
            let wire = if path == "/v1/messages" { Wire::Anthropic } else { Wire::OpenAi };
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
            let ids = Ids::of(&req);
            // The Messages API refuses requests without these two headers; so do we.
            if wire == Wire::Anthropic && header("x-api-key").is_none() {
                return Ok(wire_error(wire, StatusCode::UNAUTHORIZED, "x-api-key header is required".into()));
            }
            if wire == Wire::Anthropic && header("anthropic-version").is_none() {
                return Ok(wire_error(wire, StatusCode::BAD_REQUEST, "anthropic-version: header is required".into()));
            }
            // This request's number among chat requests (1-based), refused ones included.
            let n = shared.received.fetch_add(1, Ordering::SeqCst) + 1;
            if shared.opts.crash_at > 0 && n >= shared.opts.crash_at {
                eprintln!("pipeline sim-server: crashing at chat request {n} (--crash-at)");
                std::process::exit(crate::error::Outcome::Crashed.code());
            }
            match req.into_body().collect().await {
                // Read the body first, as a real server does, then refuse.
                Ok(_) if n <= shared.opts.reject_first => {
                    let mut r = wire_error(wire, StatusCode::TOO_MANY_REQUESTS, "rate limited (sim-server --reject-first)".into());
                    r.headers_mut().insert("retry-after", "0".parse().expect("static header"));
                    r
                }
                Ok(body) => chat(wire, &body.to_bytes(), ids, received_ns, &shared),
                Err(e) => wire_error(wire, StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found".into()),
    })
}

/// Which API a request came in on; errors and streams take its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// vLLM's OpenAI-compatible `/v1/chat/completions`.
    OpenAi,
    /// Anthropic's `/v1/messages`.
    Anthropic,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    /// vLLM's per-request prefix-cache salt: only requests with the same salt share
    /// cached blocks.
    #[serde(default)]
    cache_salt: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)] // the wire format itself is untagged: a string or a list of parts
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text {
        text: String,
    },
    /// OpenAI: `{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}`;
    /// vLLM also takes a `uuid`, and then `"image_url": null` for an image sent before.
    ImageUrl {
        image_url: Option<ImageUrl>,
        #[serde(default)]
        uuid: Option<String>,
    },
    /// vLLM: `{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,F1,F2,..."}}`,
    /// JPEG frames joined by commas.
    VideoUrl {
        video_url: ImageUrl,
    },
    /// Anthropic: `{"type": "image", "source": {"type": "base64", "media_type": ..., "data": ...}}`.
    Image {
        source: ImageSource,
    },
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct ImageSource {
    data: String,
}

/// Prompt tokens of each message, and a digest of each message for prefix caching.
/// `by_uuid` remembers the size of every image sent with a uuid, as vLLM's cache does,
/// so a later `"image_url": null` with that uuid counts the same tokens.
fn count_prompt(messages: &[Message], by_uuid: &Mutex<HashMap<String, (u32, u32)>>) -> Result<Vec<(u64, [u8; 32])>, String> {
    let mut out = Vec::with_capacity(messages.len());
    let mut h = blake3::Hasher::new();
    for m in messages {
        let mut tokens = model::TOKENS_PER_MESSAGE + model::text_tokens(&m.role);
        h.update(m.role.as_bytes());
        match &m.content {
            Content::Text(t) => {
                tokens += model::text_tokens(t);
                h.update(t.as_bytes());
            }
            Content::Parts(parts) => {
                for p in parts {
                    let (data, uuid) = match p {
                        Part::Text { text } => {
                            tokens += model::text_tokens(text);
                            h.update(text.as_bytes());
                            continue;
                        }
                        Part::ImageUrl { image_url: Some(u), uuid } => (data_url(&u.url)?, uuid.as_ref()),
                        Part::ImageUrl { image_url: None, uuid: Some(id) } => {
                            let known = by_uuid.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied();
                            let (w, hgt) = known.ok_or_else(|| format!("image uuid `{id}` was never sent with its data"))?;
                            tokens += model::image_tokens(w, hgt);
                            h.update(id.as_bytes());
                            continue;
                        }
                        Part::ImageUrl { image_url: None, uuid: None } => return Err("image_url is null and there is no uuid".into()),
                        Part::Image { source } => (source.data.as_str(), None),
                        Part::VideoUrl { video_url } => {
                            let data = data_url(&video_url.url)?;
                            let frames: Vec<&str> = data.split(',').collect();
                            let (w, hgt) = image_size(frames[0])?;
                            tokens += model::video_tokens(w, hgt, frames.len() as u64);
                            h.update(data.as_bytes());
                            continue;
                        }
                    };
                    let (w, hgt) = image_size(data)?;
                    tokens += model::image_tokens(w, hgt);
                    match uuid {
                        // The id stands for the image in the prefix, sent or referenced.
                        Some(id) => {
                            by_uuid.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (w, hgt));
                            h.update(id.as_bytes());
                        }
                        None => {
                            h.update(data.as_bytes());
                        }
                    }
                }
            }
        }
        out.push((tokens, *h.clone().finalize().as_bytes()));
    }
    Ok(out)
}

/// The base64 payload of a data URL.
fn data_url(url: &str) -> Result<&str, String> {
    url.strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
        .map(|(_, d)| d)
        .ok_or_else(|| "only base64 data URLs are supported by the simulator".to_string())
}

/// Width and height of a base64 image, reading only its header when possible.
fn image_size(data: &str) -> Result<(u32, u32), String> {
    let probe = |bytes: &[u8]| image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok();
    let head = &data[..data.len().min(8192) / 4 * 4];
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(dim) = engine.decode(head).ok().as_deref().and_then(probe) {
        return Ok(dim);
    }
    let full = engine.decode(data).map_err(|e| format!("invalid base64 image: {e}"))?;
    probe(&full).ok_or_else(|| "cannot read image dimensions".to_string())
}

fn wire_error(wire: Wire, status: StatusCode, message: String) -> Response<SimBody> {
    match wire {
        Wire::OpenAi => error(status, message),
        Wire::Anthropic => {
            let kind = match status {
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::NOT_FOUND => "not_found_error",
                StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                _ => "invalid_request_error",
            };
            json_response(status, json!({"type": "error", "error": {"type": kind, "message": message}}))
        }
    }
}

/// What one request will produce, whatever the wire format.
struct Answer {
    id: String,
    model: String,
    words: Vec<String>,
    max_tokens: u32,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Answer {
    fn finish(&self) -> &'static str {
        if self.words.len() as u32 >= self.max_tokens { "length" } else { "stop" }
    }

    /// Anthropic's name for why the answer ended.
    fn anthropic_stop_reason(&self) -> &'static str {
        if self.finish() == "length" { "max_tokens" } else { "end_turn" }
    }

    fn completion(&self) -> u64 {
        self.words.len() as u64
    }

    /// vLLM's stream: the role chunk and the first token leave together; usage and
    /// `[DONE]` go with the last token, as vLLM sends them right after it.
    fn openai_chunks(&self) -> Vec<Bytes> {
        let usage = self.openai_usage();
        let chunk = |delta: serde_json::Value, finish_reason: serde_json::Value| -> String {
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]});
            format!("data: {c}\n\n")
        };
        let n = self.words.len();
        let finish_at = |i: usize| if i == n { self.finish().into() } else { serde_json::Value::Null };
        let mut chunks: Vec<String> = self.words.iter().enumerate().map(|(i, w)| chunk(json!({"content": w}), finish_at(i + 1))).collect();
        chunks[0].insert_str(0, &chunk(json!({"role": "assistant", "content": ""}), serde_json::Value::Null));
        let tail =
            json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model, "choices": [], "usage": usage});
        chunks[n - 1].push_str(&format!("data: {tail}\n\ndata: [DONE]\n\n"));
        chunks.into_iter().map(Bytes::from).collect()
    }

    fn openai_usage(&self) -> serde_json::Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion(), "total_tokens": self.prompt_tokens + self.completion(), "prompt_tokens_details": {"cached_tokens": self.cached_tokens}})
    }

    fn openai_body(&self) -> String {
        json!({"id": self.id, "object": "chat.completion", "created": 0, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.words.concat()}, "finish_reason": self.finish()}], "usage": self.openai_usage()})
        .to_string()
    }

    /// Anthropic's stream: `message_start`, `content_block_start` and `ping` precede
    /// the first text delta (all at the first-token deadline here); the block stop,
    /// `message_delta` with the output tokens and `message_stop` follow the last.
    fn anthropic_chunks(&self) -> Vec<Bytes> {
        let event = |data: serde_json::Value| format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap_or_default());
        let stop_reason = self.anthropic_stop_reason();
        let mut chunks: Vec<String> = self
            .words
            .iter()
            .map(|w| event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})))
            .collect();
        let start = [
            event(json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_tokens - self.cached_tokens, "cache_read_input_tokens": self.cached_tokens, "cache_creation_input_tokens": 0, "output_tokens": 1}}})),
            event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            event(json!({"type": "ping"})),
        ]
        .concat();
        chunks[0].insert_str(0, &start);
        let end = [
            event(json!({"type": "content_block_stop", "index": 0})),
            event(json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": self.completion()}})),
            event(json!({"type": "message_stop"})),
        ]
        .concat();
        chunks.last_mut().expect("at least one word").push_str(&end);
        chunks.into_iter().map(Bytes::from).collect()
    }

    fn anthropic_body(&self) -> String {
        let stop_reason = self.anthropic_stop_reason();
        json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [{"type": "text", "text": self.words.concat()}],
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": self.prompt_tokens - self.cached_tokens, "cache_read_input_tokens": self.cached_tokens, "output_tokens": self.completion()}})
        .to_string()
    }
}

/// Tokens of the prompt that the prefix cache holds: leading messages seen before,
/// under the same salt.
fn cached_prefix(shared: &Shared, per_message: &[(u64, [u8; 32])], salt: Option<&str>) -> u64 {
    if !shared.opts.params.prefix_caching {
        return 0;
    }
    let mut seen = shared.prefixes.lock().unwrap_or_else(|e| e.into_inner());
    let mut cached = 0;
    let mut hit = true;
    for (tokens, digest) in per_message {
        let digest = &match salt {
            Some(salt) => *blake3::Hasher::new().update(salt.as_bytes()).update(digest).finalize().as_bytes(),
            None => *digest,
        };
        hit = hit && seen.contains(digest);
        if hit {
            cached += tokens;
        }
        seen.insert(*digest);
    }
    cached
}

fn chat(wire: Wire, body: &[u8], ids: Ids, received_ns: u64, shared: &Arc<Shared>) -> Response<SimBody> {
    let req: ChatRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return wire_error(wire, StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    if req.model != shared.opts.served_name {
        return wire_error(wire, StatusCode::NOT_FOUND, format!("The model `{}` does not exist.", req.model));
    }
    let max_tokens = match (wire, req.max_completion_tokens.or(req.max_tokens)) {
        (Wire::Anthropic, None) => return wire_error(wire, StatusCode::BAD_REQUEST, "max_tokens: Field required".into()),
        (_, n) => n.unwrap_or(16),
    };
    let per_message = match count_prompt(&req.messages, &shared.images_by_uuid) {
        Ok(c) => c,
        Err(e) => return wire_error(wire, StatusCode::BAD_REQUEST, e),
    };
    let images = req
        .messages
        .iter()
        .map(|m| {
            if let Content::Parts(parts) = &m.content { parts.iter().filter(|p| !matches!(p, Part::Text { .. })).count() as u64 } else { 0 }
        })
        .sum::<u64>();
    if shared.opts.limit_images > 0 && images > shared.opts.limit_images {
        // vLLM's words for a request past `--limit-mm-per-prompt`.
        return wire_error(
            wire,
            StatusCode::BAD_REQUEST,
            format!("At most {} image(s) may be provided in one request.", shared.opts.limit_images),
        );
    }
    let prompt_tokens: u64 = per_message.iter().map(|(t, _)| t).sum();
    let cached_tokens = cached_prefix(shared, &per_message, req.cache_salt.as_deref());
    let completion = max_tokens.min(shared.opts.params.answer_tokens).max(1) as usize;
    let reply = Reply {
        format: Format::Chat(wire),
        model: req.model,
        stream: req.stream,
        max_tokens,
        completion,
        prompt_tokens,
        cached_tokens,
        prompt_key: per_message.last().map(|(_, digest)| *digest),
        reference: req.messages.iter().rev().find(|m| m.role == "user").and_then(|m| shared.references.get(&message_text(m))).cloned(),
        verdict: req.messages.last().filter(|m| m.role == "user").and_then(|m| judge_verdict(&message_text(m), &shared.opts.params)),
    };
    respond(reply, ids, received_ns, shared)
}

/// What a request asked for and what it gets, whatever its route.
struct Reply {
    format: Format,
    model: String,
    stream: bool,
    max_tokens: u32,
    /// Tokens of the answer.
    completion: usize,
    prompt_tokens: u64,
    cached_tokens: u64,
    /// The whole prompt's digest, which a `quality` simulator answers by.
    prompt_key: Option<[u8; 32]>,
    /// The recorded answer to the prompt's last question (`--references`).
    reference: Option<String>,
    /// The answer to a judge prompt ([`judge_verdict`]), which replaces any other.
    verdict: Option<String>,
}

/// The simulator as a judge: a prompt that is the judge prompt of this version
/// (`quality::judge`) gets `1` when the graded answer equals the reference after
/// normalisation (exactly what the `exact` scorer finds), else `0`; with
/// `--judge-words`, a sentence instead, which is no score. Any other prompt: None.
fn judge_verdict(text: &str, params: &SimParams) -> Option<String> {
    let (reference, answer) = crate::quality::judge::recognise(text)?;
    Some(match params.judge_words {
        true => "I would rather not say.".to_string(),
        false => {
            let same = crate::quality::normalised(reference) == crate::quality::normalised(answer);
            (if same { "1" } else { "0" }).to_string()
        }
    })
}

/// The shape of an answer: a chat completion (in either wire format), or a text
/// completion (`/v1/completions`, see [`completions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Chat(Wire),
    Completion,
}

/// Count the request, time it with the latency model, and hand its chunks to the
/// timer thread: the part every route shares.
fn respond(reply: Reply, ids: Ids, received_ns: u64, shared: &Arc<Shared>) -> Response<SimBody> {
    let Ids { request: request_id, trace } = ids;
    let Reply { format, model, stream, max_tokens, completion, prompt_tokens, cached_tokens, prompt_key, reference, verdict } = reply;
    // A `quality` simulator's answer depends on the prompt: worked out first, since its
    // length is the completion's. A judge's verdict is its answer whatever the quality.
    let by_prompt = match verdict {
        Some(v) => Some(v.split_inclusive(' ').map(String::from).collect()),
        None => shared.opts.params.quality.zip(prompt_key).map(|(q, key)| match reference {
            Some(r) if right(&key, q) => r.split_inclusive(' ').take(completion.max(1)).map(String::from).collect(),
            _ => canonical(&key, q, completion),
        }),
    };
    let completion = by_prompt.as_ref().map_or(completion, Vec::len).max(1);
    if shared.opts.params.prefix_caching {
        shared.prefix_queries.fetch_add(prompt_tokens, Ordering::Relaxed);
        shared.prefix_hits.fetch_add(cached_tokens, Ordering::Relaxed);
    }
    shared.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let request_id = request_id.unwrap_or_else(|| format!("sim-{seq}"));
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let mut timing = model::Timing {
        params: shared.opts.params.clone(),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(shared.opts.seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    };
    let ttft = timing.ttft(prompt_tokens - cached_tokens);
    // From arrival: reading and parsing the body came first. Nothing queues here.
    let parsed_s = monotonic_ns().saturating_sub(received_ns) as f64 / 1e9;
    shared.ttft.lock().unwrap_or_else(|e| e.into_inner()).observe(parsed_s + ttft);
    shared.queue.lock().unwrap_or_else(|e| e.into_inner()).observe(0.0);
    let kv = prompt_tokens + completion as u64;
    shared.kv_tokens.fetch_add(kv, Ordering::SeqCst);
    let mut truth = Truth {
        request_id: request_id.clone(),
        received_ns,
        prompt_tokens,
        cached_tokens,
        completion_tokens: completion as u64,
        in_flight_at_start: in_flight,
        trace_id: trace.map(|t| t.hex()),
        ..Default::default()
    };
    let id = match format {
        Format::Chat(Wire::OpenAi) => format!("chatcmpl-{request_id}"),
        Format::Chat(Wire::Anthropic) => format!("msg_{request_id}"),
        Format::Completion => format!("cmpl-{request_id}"),
    };
    let words = by_prompt.unwrap_or_else(|| answer(seq, completion));
    let answer = Answer { id, model, words, max_tokens, prompt_tokens, cached_tokens };
    let start = Instant::now();
    truth.prefill_start_ns = crate::clock::instant_to_ns(start);
    let (tx, rx) = mpsc::unbounded_channel();
    if !stream {
        let mut total = ttft;
        for _ in 1..completion {
            total += timing.itl(in_flight);
        }
        let body = match format {
            Format::Chat(Wire::OpenAi) => answer.openai_body(),
            Format::Chat(Wire::Anthropic) => answer.anthropic_body(),
            Format::Completion => answer.completion_body(),
        };
        let _ = shared.timer.send(Emission {
            deadline: start + Duration::from_secs_f64(total),
            chunks: vec![Bytes::from(body)],
            timing: None,
            tx,
            kv,
        });
        return stream_response(rx, truth, shared.clone(), "application/json");
    }
    let chunks = match format {
        Format::Chat(Wire::OpenAi) => answer.openai_chunks(),
        Format::Chat(Wire::Anthropic) => answer.anthropic_chunks(),
        Format::Completion => answer.completion_chunks(),
    };
    let _ = shared.timer.send(Emission { deadline: start + Duration::from_secs_f64(ttft), chunks, timing: Some(timing), tx, kv });
    stream_response(rx, truth, shared.clone(), "text/event-stream")
}

/// A deterministic answer of `n` tokens (one word each).
fn answer(seq: u64, n: usize) -> Vec<String> {
    const WORDS: [&str; 12] = ["the", "image", "shows", "a", "red", "square", "near", "blue", "circle", "on", "gradient", "background"];
    (0..n).map(|i| format!("{} ", WORDS[(seq as usize + i) % WORDS.len()])).collect()
}

/// With `quality = q`: the canonical answer to the last message (its words drawn from
/// the message's digest, so every server gives the same one) when a number drawn from
/// the same digest falls below `q`, and otherwise the canonical answer with every word
/// moved one along the list, which no scorer takes for it.
fn canonical(last_message: &[u8; 32], q: f64, n: usize) -> Vec<String> {
    const WORDS: [&str; 12] = ["the", "image", "shows", "a", "red", "square", "near", "blue", "circle", "on", "gradient", "background"];
    let h = blake3::Hasher::new_derive_key("pipeline sim canonical answer v1").update(last_message).finalize();
    let shift = usize::from(!right(last_message, q));
    (0..n).map(|i| format!("{} ", WORDS[(h.as_bytes()[8 + i % 24] as usize + shift) % WORDS.len()])).collect()
}

/// Whether a `quality = q` simulator answers the prompt of this digest right: a number
/// drawn from the digest falls below `q`.
fn right(prompt: &[u8; 32], q: f64) -> bool {
    let h = blake3::Hasher::new_derive_key("pipeline sim canonical answer v1").update(prompt).finalize();
    let draw = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default()) as f64 / 2f64.powi(64);
    draw < q
}

fn stream_response(rx: mpsc::UnboundedReceiver<(Bytes, u64)>, truth: Truth, shared: Arc<Shared>, content_type: &str) -> Response<SimBody> {
    let body = TimedBody { rx, truth: Some(truth), shared };
    let mut r = Response::new(http_body_util::Either::Right(body));
    r.headers_mut().insert("content-type", content_type.parse().expect("static header"));
    r
}

/// A response whose chunks are due at deadlines; owned by the timer thread.
struct Emission {
    deadline: Instant,
    /// Chunks still to send, in reverse order of sending.
    chunks: Vec<Bytes>,
    timing: Option<model::Timing>,
    tx: mpsc::UnboundedSender<(Bytes, u64)>,
    /// KV-cache tokens it holds until its last chunk.
    kv: u64,
}

fn timer_loop(rx: std::sync::mpsc::Receiver<Emission>, shared: Arc<Shared>) {
    // Linux lets a sleeping thread wake up to 50 µs late by default (timer slack), to
    // merge wake-ups; this thread exists to be on time.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    let mut heap: BinaryHeap<(Reverse<Instant>, Reverse<u64>)> = BinaryHeap::new();
    let mut slots: std::collections::HashMap<u64, Emission> = std::collections::HashMap::new();
    let mut next_id = 0u64;
    let mut add = |mut e: Emission, heap: &mut BinaryHeap<_>, slots: &mut std::collections::HashMap<u64, Emission>| {
        e.chunks.reverse();
        heap.push((Reverse(e.deadline), Reverse(next_id)));
        slots.insert(next_id, e);
        next_id += 1;
    };
    loop {
        // Take new work; sleep until the earliest deadline otherwise.
        let wait = heap.peek().map(|(Reverse(d), _)| d.saturating_duration_since(Instant::now()));
        let incoming = match wait {
            None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
            Some(w) if w.is_zero() => rx.try_recv().map_err(|e| match e {
                std::sync::mpsc::TryRecvError::Empty => std::sync::mpsc::RecvTimeoutError::Timeout,
                std::sync::mpsc::TryRecvError::Disconnected => std::sync::mpsc::RecvTimeoutError::Disconnected,
            }),
            Some(w) => rx.recv_timeout(w),
        };
        match incoming {
            Ok(e) => {
                add(e, &mut heap, &mut slots);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) if heap.is_empty() => return,
            Err(_) => {}
        }
        let now = Instant::now();
        while let Some(&(Reverse(deadline), Reverse(id))) = heap.peek() {
            if deadline > now {
                break;
            }
            heap.pop();
            let Some(mut e) = slots.remove(&id) else { continue };
            let Some(chunk) = e.chunks.pop() else { continue };
            let planned = crate::clock::instant_to_ns(deadline);
            let done = e.chunks.is_empty();
            if e.tx.send((chunk, planned)).is_err() || done {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                shared.kv_tokens.fetch_sub(e.kv, Ordering::SeqCst);
                if done {
                    shared.finished.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let in_flight = shared.in_flight.load(Ordering::SeqCst);
            let itl = e.timing.as_mut().map_or(0.0, |t| t.itl(in_flight));
            // Absolute schedule: the next deadline follows this one, not `now`.
            e.deadline = deadline + Duration::from_secs_f64(itl);
            heap.push((Reverse(e.deadline), Reverse(id)));
            slots.insert(id, e);
        }
    }
}

/// The response body: hands each chunk to hyper when it arrives, and records when.
struct TimedBody {
    rx: mpsc::UnboundedReceiver<(Bytes, u64)>,
    truth: Option<Truth>,
    shared: Arc<Shared>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((bytes, planned))) => {
                let now = monotonic_ns();
                if let Some(t) = self.truth.as_mut() {
                    t.planned_ns.push(planned);
                    t.sent_ns.push(now);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(None) => {
                if let Some(t) = self.truth.take() {
                    // Answered in full: its span, when it carried a trace context.
                    let trace = t.trace_id.as_deref().and_then(|hex| trace_id(&format!("00-{hex}-")));
                    if let (Some(spans), Some(span)) = (&self.shared.spans, trace.and_then(|id| t.span(id))) {
                        let _ = spans.send(span);
                    }
                    if let Ok(mut all) = self.shared.truth.lock() {
                        all.push(t);
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        // A client that hung up early: the request still happened.
        if let Some(t) = self.truth.take()
            && let Ok(mut all) = self.shared.truth.lock()
        {
            all.push(t);
        }
    }
}

/// Post finished requests' spans to `url` as vLLM's batch exporter does: a batch every
/// `OTEL_BSP_SCHEDULE_DELAY` ms (default 100) while there are any. A receiver that
/// fails or refuses loses the batch, as with vLLM.
async fn export_spans(client: reqwest::Client, url: String, mut rx: mpsc::UnboundedReceiver<ServerSpan>) {
    let delay = std::env::var("OTEL_BSP_SCHEDULE_DELAY").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(100);
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut batch = vec![first];
        while let Ok(span) = rx.try_recv() {
            batch.push(span);
        }
        let body = crate::otlp::encode(&batch);
        let _ = client.post(&url).header("content-type", "application/x-protobuf").body(body).send().await;
    }
}

/// `GET /metrics`: vLLM's names for what the simulator knows, in Prometheus's text
/// format, so that scraping and what is derived from it can be checked against truth.
fn metrics(shared: &Shared) -> Response<SimBody> {
    let labels = format!("{{engine=\"0\",model_name=\"{}\"}}", shared.opts.served_name.replace(['"', '\\', '\n'], "_"));
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let lines = [
        ("counter", "vllm:prefix_cache_queries_total", load(&shared.prefix_queries) as f64),
        ("counter", "vllm:prefix_cache_hits_total", load(&shared.prefix_hits) as f64),
        ("counter", "vllm:prompt_tokens_total", load(&shared.prompt_tokens) as f64),
        ("counter", "vllm:request_success_total", load(&shared.finished) as f64),
        ("gauge", "vllm:num_requests_running", shared.in_flight.load(Ordering::SeqCst) as f64),
        // The simulator queues nothing: every request is served at once.
        ("gauge", "vllm:num_requests_waiting", 0.0),
        ("gauge", "vllm:kv_cache_usage_perc", load(&shared.kv_tokens) as f64 / KV_CACHE_TOKENS as f64),
    ];
    let mut text = String::new();
    for (kind, name, value) in lines {
        let family = name.strip_suffix("_total").unwrap_or(name);
        text.push_str(&format!("# TYPE {family} {kind}\n{name}{labels} {value:?}\n"));
    }
    for (name, h) in [("vllm:time_to_first_token_seconds", &shared.ttft), ("vllm:request_queue_time_seconds", &shared.queue)] {
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        text.push_str(&format!("# TYPE {name} histogram\n"));
        // A bucket's labels are the series' with `le` added.
        let inner = labels.trim_end_matches('}');
        let mut cumulative = 0;
        for (bound, n) in HISTOGRAM_BOUNDS.iter().zip(&h.counts) {
            cumulative += n;
            text.push_str(&format!("{name}_bucket{inner},le=\"{bound:?}\"}} {cumulative}\n"));
        }
        text.push_str(&format!("{name}_bucket{inner},le=\"+Inf\"}} {}\n", h.count));
        text.push_str(&format!("{name}_count{labels} {}\n{name}_sum{labels} {:?}\n", h.count, h.sum));
    }
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(text))));
    r.headers_mut().insert("content-type", "text/plain; version=0.0.4; charset=utf-8".parse().expect("static header"));
    r
}

/// The simulator's KV cache, in tokens: a nominal size for `vllm:kv_cache_usage_perc`
/// (it never runs out, so nothing is ever preempted).
pub const KV_CACHE_TOKENS: u64 = 131_072;

/// vLLM's bucket bounds for its time-to-first-token histogram (seconds).
const HISTOGRAM_BOUNDS: [f64; 22] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0];

/// A Prometheus histogram: counts per bucket (not cumulative; the last is above every
/// bound), their sum and count.
#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; HISTOGRAM_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        let i = HISTOGRAM_BOUNDS.iter().position(|b| v <= *b).unwrap_or(HISTOGRAM_BOUNDS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}
