//! One streaming chat request, timed, in either of two wire formats: OpenAI's chat
//! completions (vLLM, OpenAI, any compatible server) and Anthropic's Messages API.
//! OpenAI's stream is also read for `/v1/completions` (trace replays), whose chunks
//! carry `text` where chat chunks carry `delta.content`.
//!
//! Timestamps are raw CLOCK_MONOTONIC nanoseconds (the simulator uses the same clock,
//! so its truth lines up with ours). The first token is the first chunk with non-empty
//! content: vLLM's first chunk carries only the role, and Anthropic's stream opens with
//! `message_start` before any text. Token counts come from the usage the server
//! reports, not from counting chunks, because one chunk can hold several tokens.
//!
//! Servers are not trusted. Redirects are refused, not followed (a key must not travel
//! to another address); what a server sends is capped (an event stream at
//! [`MAX_STREAM_BYTES`], its lines by the SSE parser, an error body at
//! [`MAX_ERROR_BODY_BYTES`]); and every text recorded from an answer has the keys
//! redacted ([`Secrets`]) before anything else sees it.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

pub mod sse;

use crate::clock::monotonic_ns;
use crate::otlp::TraceId;
use crate::secrets::Secrets;
use crate::untrusted::escaped;
use sse::SseParser;

/// Most bytes one answer's event stream may carry: about a million tokens of vLLM
/// chunks. A server streaming past it is broken or hostile; the request fails.
pub const MAX_STREAM_BYTES: u64 = 256 << 20;
/// Most bytes of an error answer (or a small JSON answer) read; the rest is dropped.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Characters of an error answer kept in `error_detail`.
const DETAIL_CHARS: usize = 500;

/// Why a request failed; counted by variant, never by message text. [`ErrorClass::name`]
/// is the one spelling, in the `error` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorClass {
    #[default]
    None,
    Connect,
    Timeout,
    Http4xx,
    Http429,
    Http5xx,
    /// The stream ended before `[DONE]`.
    StreamCut,
    /// An event that is not the JSON we expect, or an answer that is not an event stream.
    Malformed,
    /// The server answered with a redirect, which is not followed.
    Redirect,
    /// The answer passed a size cap (a line, an event or the whole stream).
    TooLarge,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::None => "none",
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http429 => "http_429",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::StreamCut => "stream_cut",
            ErrorClass::Malformed => "malformed",
            ErrorClass::Redirect => "redirect",
            ErrorClass::TooLarge => "too_large",
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Size of the request body.
    pub request_bytes: u64,
    pub sent_ns: u64,
    pub headers_ns: Option<u64>,
    pub first_byte_ns: Option<u64>,
    pub first_token_ns: Option<u64>,
    pub end_ns: u64,
    pub status: u16,
    pub error: ErrorClass,
    pub error_detail: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    /// What a 429 (or 503/529) asked for in `Retry-After`, in seconds.
    pub retry_after_s: Option<f64>,
    pub answer: String,
    /// (arrival ns, content bytes) of every chunk with content.
    pub chunks: Vec<(u64, u32)>,
    /// The trace id the request's `traceparent` carried.
    pub trace_id: Option<TraceId>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

/// A chat chunk's choice carries `delta.content`; a completions chunk's (`/v1/completions`,
/// which trace replays use) carries `text`.
#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

/// Which wire format a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`, `data: [DONE]` at the end, bearer auth.
    OpenAiChat,
    /// `POST /v1/messages`, typed events ending with `message_stop`, `x-api-key` auth.
    AnthropicMessages,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::OpenAiChat => "/v1/chat/completions",
            Api::AnthropicMessages => "/v1/messages",
        }
    }
}

/// The Messages API version we speak (sent as `anthropic-version`).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Target {
    pub url: String,
    pub api: Api,
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Every key value to redact from what the server says.
    pub secrets: Secrets,
    /// Each request carries a W3C `traceparent` with a fresh trace id.
    pub traceparent: bool,
    /// The receiver of the server's spans, told each trace id before its request goes.
    pub spans: Option<std::sync::Arc<crate::otlp::Receiver>>,
}

/// A client for measurements: no proxy (a stray `HTTP_PROXY` must not sit between us
/// and a local server), TLS through rustls with the ring provider for hosted APIs.
pub fn http_client(pool: usize) -> reqwest::Result<reqwest::Client> {
    builder().pool_max_idle_per_host(pool).build()
}

/// The base of every HTTP client here (measurements, health checks): no proxy, and
/// no redirects followed. A benchmark client has no reason to follow one on the
/// measured path, and following it would carry `x-api-key` (which reqwest does not
/// strip, unlike `Authorization`) to whatever address the server names.
pub fn builder() -> reqwest::ClientBuilder {
    // Installing twice is harmless: the second call reports that one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none())
}

/// How a capped read of a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The server ended the body.
    Complete,
    /// The body ran past the cap; the rest was not read.
    TooLong,
    /// The connection failed or timed out before the body ended: what was read is a
    /// fragment, not the answer.
    Broken,
}

/// Up to `limit` bytes of a response body, and how reading it ended.
pub async fn read_capped(resp: reqwest::Response, limit: usize) -> (Vec<u8>, BodyEnd) {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let Ok(piece) = piece else { return (body, BodyEnd::Broken) };
        let room = limit - body.len();
        if piece.len() > room {
            body.extend_from_slice(&piece[..room]);
            return (body, BodyEnd::TooLong);
        }
        body.extend_from_slice(&piece);
    }
    (body, BodyEnd::Complete)
}

/// One event of Anthropic's Messages stream (the ones that carry what we record).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicEvent {
    MessageStart {
        message: AnthropicMessage,
    },
    ContentBlockDelta {
        delta: AnthropicDelta,
    },
    MessageDelta {
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Error {
        error: AnthropicError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicDelta {
    text: Option<String>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// Send `body` and read the stream to its end.
pub async fn exchange(client: &reqwest::Client, target: &Target, request_id: &str, body: bytes::Bytes) -> Exchange {
    let mut ex = Exchange { request_bytes: body.len() as u64, ..Default::default() };
    let mut req = client.post(&target.url).header("content-type", "application/json").header("x-request-id", request_id).body(body);
    if target.traceparent {
        let id = TraceId::random();
        if let Some(receiver) = &target.spans {
            receiver.expect(id);
        }
        req = req.header("traceparent", id.traceparent());
        ex.trace_id = Some(id);
    }
    req = match (target.api, &target.api_key) {
        (Api::OpenAiChat, Some(key)) => req.bearer_auth(key),
        (Api::OpenAiChat, None) => req,
        (Api::AnthropicMessages, key) => {
            let req = req.header("anthropic-version", ANTHROPIC_VERSION);
            match key {
                Some(k) => req.header("x-api-key", k),
                None => req,
            }
        }
    };
    ex.sent_ns = monotonic_ns();
    let result = tokio::time::timeout(target.timeout, read(req, target.api, &mut ex)).await;
    ex.end_ns = monotonic_ns();
    if result.is_err() {
        ex.error = ErrorClass::Timeout;
        ex.error_detail = format!("no complete answer within {:?}", target.timeout);
    }
    // Before anything records, prints or resends it.
    target.secrets.scrub(&mut ex.error_detail);
    target.secrets.scrub(&mut ex.answer);
    ex
}

async fn read(req: reqwest::RequestBuilder, api: Api, ex: &mut Exchange) {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            ex.error = if e.is_timeout() { ErrorClass::Timeout } else { ErrorClass::Connect };
            ex.error_detail = why(&e);
            return;
        }
    };
    ex.headers_ns = Some(monotonic_ns());
    ex.status = resp.status().as_u16();
    if resp.status().is_redirection() {
        let to = resp.headers().get("location").map(|v| escaped(&String::from_utf8_lossy(v.as_bytes()), 200));
        ex.error = ErrorClass::Redirect;
        ex.error_detail = format!(
            "answered {} redirecting to `{}`; redirects are not followed, so that no key travels to another address",
            ex.status,
            to.as_deref().unwrap_or("(no Location)")
        );
        return;
    }
    if !resp.status().is_success() {
        // RFC 9110 also allows an HTTP date; only seconds are honoured.
        ex.retry_after_s = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0);
        ex.error = match ex.status {
            429 => ErrorClass::Http429,
            400..=499 => ErrorClass::Http4xx,
            _ => ErrorClass::Http5xx,
        };
        let (body, _) = read_capped(resp, MAX_ERROR_BODY_BYTES).await;
        ex.error_detail = escaped(&String::from_utf8_lossy(&body), DETAIL_CHARS);
        return;
    }
    let content_type = resp.headers().get("content-type").map(|v| escaped(&String::from_utf8_lossy(v.as_bytes()), 100));
    let mut parser = SseParser::default();
    let mut done = false;
    let mut events = 0usize;
    // The first bytes, to say what arrived when it was not an event stream.
    let mut head: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let now = monotonic_ns();
        let bytes = match piece {
            Ok(b) => b,
            Err(e) => {
                ex.error = ErrorClass::StreamCut;
                ex.error_detail = error_chain(&e);
                return;
            }
        };
        ex.first_byte_ns.get_or_insert(now);
        total += bytes.len() as u64;
        if head.len() < 200 {
            head.extend_from_slice(&bytes[..bytes.len().min(200 - head.len())]);
        }
        let pushed = parser.push(&bytes, |data| {
            events += 1;
            match api {
                Api::OpenAiChat => openai_event(data, now, ex, &mut done),
                Api::AnthropicMessages => anthropic_event(data, now, ex, &mut done),
            }
        });
        let too_large = match pushed {
            Err(e) => Some(e.to_string()),
            Ok(()) if total > MAX_STREAM_BYTES => Some(format!("the event stream passed {} MiB", MAX_STREAM_BYTES >> 20)),
            Ok(()) => None,
        };
        if let Some(why) = too_large {
            ex.error = ErrorClass::TooLarge;
            ex.error_detail = why;
            return;
        }
    }
    if !done && ex.error == ErrorClass::None {
        if events == 0 && total > 0 {
            // Not an event stream at all: an HTML page from a proxy, or plain JSON.
            ex.error = ErrorClass::Malformed;
            ex.error_detail = format!(
                "expected an event stream (text/event-stream), got {} starting with `{}`",
                content_type.map_or("no content-type".to_string(), |t| format!("`{t}`")),
                escaped(&String::from_utf8_lossy(&head), 200)
            );
            return;
        }
        ex.error = ErrorClass::StreamCut;
        ex.error_detail = match api {
            Api::OpenAiChat => "the stream ended before `data: [DONE]`",
            Api::AnthropicMessages => "the stream ended before `message_stop`",
        }
        .into();
    }
}

fn malformed(ex: &mut Exchange, e: serde_json::Error, data: &str) {
    if ex.error == ErrorClass::None {
        ex.error = ErrorClass::Malformed;
        ex.error_detail = format!("{e}: {}", data.chars().take(200).collect::<String>());
    }
}

fn openai_event(data: &str, now: u64, ex: &mut Exchange, done: &mut bool) {
    if data == "[DONE]" {
        *done = true;
        return;
    }
    match serde_json::from_str::<Chunk>(data) {
        Ok(chunk) => {
            for c in &chunk.choices {
                let text = c.delta.as_ref().and_then(|d| d.content.as_deref()).or(c.text.as_deref());
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    ex.first_token_ns.get_or_insert(now);
                    ex.chunks.push((now, text.len() as u32));
                    ex.answer.push_str(text);
                }
            }
            if let Some(u) = chunk.usage {
                ex.prompt_tokens = u.prompt_tokens;
                ex.completion_tokens = u.completion_tokens;
                ex.cached_tokens = u.prompt_tokens_details.and_then(|d| d.cached_tokens);
            }
        }
        Err(e) => malformed(ex, e, data),
    }
}

fn anthropic_event(data: &str, now: u64, ex: &mut Exchange, done: &mut bool) {
    match serde_json::from_str::<AnthropicEvent>(data) {
        Ok(AnthropicEvent::MessageStart { message }) => {
            if let Some(u) = message.usage {
                // `input_tokens` counts only what was not read from or written to the
                // prompt cache; the prompt is all three.
                let (cached, created) = (u.cache_read_input_tokens.unwrap_or(0), u.cache_creation_input_tokens.unwrap_or(0));
                ex.prompt_tokens = u.input_tokens.map(|n| n + cached + created);
                ex.cached_tokens = Some(cached);
            }
        }
        Ok(AnthropicEvent::ContentBlockDelta { delta }) => {
            if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                ex.first_token_ns.get_or_insert(now);
                ex.chunks.push((now, text.len() as u32));
                ex.answer.push_str(&text);
            }
        }
        Ok(AnthropicEvent::MessageDelta { usage }) => {
            if let Some(n) = usage.and_then(|u| u.output_tokens) {
                ex.completion_tokens = Some(n);
            }
        }
        Ok(AnthropicEvent::MessageStop) => *done = true,
        Ok(AnthropicEvent::Error { error }) => {
            // An error event mid-stream (e.g. `overloaded_error`): the answer is incomplete.
            ex.error = if error.kind == "overloaded_error" || error.kind == "rate_limit_error" {
                ErrorClass::Http429
            } else {
                ErrorClass::Http5xx
            };
            ex.error_detail = format!("{}: {}", error.kind, error.message);
        }
        Ok(AnthropicEvent::Other) => {}
        Err(e) => malformed(ex, e, data),
    }
}

/// Why a request got no answer, cause first: reqwest says "error sending request"
/// for a timeout and a refused connection alike, and only its sources tell which.
pub fn why(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    format!("{what} ({})", error_chain(e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
