//! `POST /v1/completions` as vLLM serves it for a prompt of token ids (what trace
//! replays send): `prompt` as a list of ids (or a string, counted as the chat path
//! counts text, and not cached), `max_tokens` (default 16, as vLLM's), `ignore_eos`
//! (the answer is then exactly `max_tokens` long, not capped by the latency model's
//! `answer-tokens`), `cache_salt`, and streaming with usage. With prefix caching on,
//! cached tokens come from the block cache over the ids ([`super::prefix`]).
//!
//! The stream looks like vLLM's: one `text_completion` chunk per token with `text`,
//! `finish_reason` on the last, then a usage chunk with `choices: []`, then
//! `data: [DONE]`. Timing is the chat path's ([`super::respond`]).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, Format, Reply, Shared, SimBody, error, model, prefix, respond};

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Prompt,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    cache_salt: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)] // the wire format itself is untagged: token ids or a string
enum Prompt {
    Ids(Vec<u32>),
    Text(String),
}

pub(super) fn complete(body: &[u8], ids: super::Ids, received_ns: u64, shared: &Arc<Shared>) -> Response<SimBody> {
    let req: CompletionRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    if req.model != shared.opts.served_name {
        return error(StatusCode::NOT_FOUND, format!("The model `{}` does not exist.", req.model));
    }
    let (prompt_tokens, cached_tokens) = match &req.prompt {
        Prompt::Ids(ids) if ids.is_empty() => return error(StatusCode::BAD_REQUEST, "the prompt is empty".into()),
        Prompt::Ids(ids) => {
            let cached = match shared.opts.params.prefix_caching {
                true => prefix::lookup(&mut shared.prefixes.lock().unwrap_or_else(|e| e.into_inner()), ids, req.cache_salt.as_deref()),
                false => 0,
            };
            (ids.len() as u64, cached)
        }
        Prompt::Text(text) => (model::text_tokens(text).max(1), 0),
    };
    let max_tokens = req.max_tokens.unwrap_or(16).max(1);
    let completion = match req.ignore_eos {
        true => max_tokens,
        false => max_tokens.min(shared.opts.params.answer_tokens),
    } as usize;
    let reply = Reply {
        format: Format::Completion,
        model: req.model,
        stream: req.stream,
        max_tokens,
        completion,
        prompt_tokens,
        cached_tokens,
        // The prompt's digest: a `quality` simulator answers by it, as on the chat route.
        prompt_key: Some(
            *match &req.prompt {
                Prompt::Ids(ids) => blake3::hash(&ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()),
                Prompt::Text(text) => blake3::hash(text.as_bytes()),
            }
            .as_bytes(),
        ),
        reference: None,
        verdict: None,
    };
    respond(reply, ids, received_ns, shared)
}

impl Answer {
    /// vLLM's `/v1/completions` stream: a chunk per token; usage and `[DONE]` go with
    /// the last.
    pub(super) fn completion_chunks(&self) -> Vec<Bytes> {
        let n = self.words.len();
        let mut chunks: Vec<String> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let finish = if i + 1 == n { json!(self.finish()) } else { serde_json::Value::Null };
                let c = json!({"id": self.id, "object": "text_completion", "created": 0, "model": self.model,
                    "choices": [{"index": 0, "text": w, "logprobs": null, "finish_reason": finish, "stop_reason": null}], "usage": null});
                format!("data: {c}\n\n")
            })
            .collect();
        let tail = json!({"id": self.id, "object": "text_completion", "created": 0, "model": self.model, "choices": [], "usage": self.openai_usage()});
        chunks[n - 1].push_str(&format!("data: {tail}\n\ndata: [DONE]\n\n"));
        chunks.into_iter().map(Bytes::from).collect()
    }

    pub(super) fn completion_body(&self) -> String {
        json!({"id": self.id, "object": "text_completion", "created": 0, "model": self.model,
            "choices": [{"index": 0, "text": self.words.concat(), "logprobs": null, "finish_reason": self.finish()}], "usage": self.openai_usage()})
        .to_string()
    }
}
