//! One streaming chat request, timed.
//!
//! Timestamps are raw CLOCK_MONOTONIC nanoseconds (the simulator uses the same clock,
//! so its truth lines up with ours). The first token is the first chunk with non-empty
//! content: vLLM's first chunk carries only the role. Token counts come from the final
//! usage chunk, not from counting chunks, because one chunk can hold several tokens.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::sse::SseParser;
use crate::monotonic_ns;

/// Why a request failed; counted by variant, never by message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
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
    /// An event that is not the JSON we expect.
    Malformed,
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
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
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
    pub answer: String,
    /// (arrival ns, content bytes) of every chunk with content.
    pub chunks: Vec<(u64, u32)>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
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

pub struct Target {
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// Send `body` and read the stream to its end.
pub async fn exchange(client: &reqwest::Client, target: &Target, request_id: &str, body: String) -> Exchange {
    let mut ex = Exchange::default();
    let mut req = client.post(&target.url).header("content-type", "application/json").header("x-request-id", request_id).body(body);
    if let Some(key) = &target.api_key {
        req = req.bearer_auth(key);
    }
    ex.sent_ns = monotonic_ns();
    let result = tokio::time::timeout(target.timeout, read(req, &mut ex)).await;
    ex.end_ns = monotonic_ns();
    if result.is_err() {
        ex.error = ErrorClass::Timeout;
        ex.error_detail = format!("no complete answer within {:?}", target.timeout);
    }
    ex
}

async fn read(req: reqwest::RequestBuilder, ex: &mut Exchange) {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            ex.error = if e.is_timeout() { ErrorClass::Timeout } else { ErrorClass::Connect };
            ex.error_detail = error_chain(&e);
            return;
        }
    };
    ex.headers_ns = Some(monotonic_ns());
    ex.status = resp.status().as_u16();
    if !resp.status().is_success() {
        ex.error = match ex.status {
            429 => ErrorClass::Http429,
            400..=499 => ErrorClass::Http4xx,
            _ => ErrorClass::Http5xx,
        };
        ex.error_detail = resp.text().await.unwrap_or_default().chars().take(500).collect();
        return;
    }
    let mut parser = SseParser::default();
    let mut done = false;
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
        parser.push(&bytes, |data| {
            if data == "[DONE]" {
                done = true;
                return;
            }
            match serde_json::from_str::<Chunk>(data) {
                Ok(chunk) => {
                    for c in &chunk.choices {
                        if let Some(text) = c.delta.as_ref().and_then(|d| d.content.as_deref()).filter(|t| !t.is_empty()) {
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
                Err(e) if ex.error == ErrorClass::None => {
                    ex.error = ErrorClass::Malformed;
                    ex.error_detail = format!("{e}: {}", data.chars().take(200).collect::<String>());
                }
                Err(_) => {}
            }
        });
    }
    if !done && ex.error == ErrorClass::None {
        ex.error = ErrorClass::StreamCut;
        ex.error_detail = "the stream ended before `data: [DONE]`".into();
    }
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
