//! Before a cell: keep it from the server caches that other cells filled.
//!
//! Two cells of one experiment share a server (as they should), and the same seed
//! gives byte-identical prompts: without isolation, the second cell's first turns read
//! the first cell's images from the prefix cache and are measured warm by accident.
//! What each cell got is recorded in its `meta.json` and shown in the report.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Serialize;

use super::Endpoint;
use crate::client::{self, Api};
use crate::config::CacheIsolation;
use crate::error::WithHint;

/// vLLM's routes that empty its caches (served with `VLLM_SERVER_DEV_MODE=1`). The
/// prefix cache's is the one that matters; the others came in later versions.
pub const RESET_ROUTES: [&str; 3] = ["/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"];

/// What was done for a cell, as `meta.json` records it.
#[derive(Debug, Clone, Serialize)]
pub struct Isolated {
    /// What the experiment asked for (`auto` when it did not say).
    pub asked: &'static str,
    /// What was done: `reset`, `salt` or `none`.
    pub done: &'static str,
    /// The `cache_salt` every request of the cell carries, under `salt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Whether the cell is isolated from every cache that could hold its prompts.
    pub complete: bool,
    /// Why it is not, or what was done instead of what was asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Isolate the next cell on `endpoint`. `salt` is unique to this execution of the
/// cell, so a salted cell misses even on a server that measured it before. A reset
/// route gets as long as a request (`timeout`, at most 30 s).
pub async fn isolate(endpoint: &Endpoint, backend: &str, asked: CacheIsolation, salt: &str, timeout: Duration) -> Result<Isolated> {
    let mut out = Isolated { asked: asked.name(), done: "none", salt: None, complete: false, notes: Vec::new() };
    let hosted = matches!(backend, "openai" | "anthropic") || endpoint.api != Api::OpenAiChat;
    match asked {
        CacheIsolation::None => {
            out.notes.push("cache-isolation = \"none\": caches are as earlier cells left them, on purpose".into());
            return Ok(out);
        }
        _ if hosted => {
            let why = format!("a hosted API (`{backend}`) offers no way to empty or salt its caches");
            if asked != CacheIsolation::Auto {
                return Err(anyhow!("cache-isolation = \"{}\" is not possible: {why}", asked.name()))
                    .hint("set cache-isolation = \"none\" for this model");
            }
            out.notes.push(format!("not isolated: {why}; its numbers may include cache hits from other cells"));
            return Ok(out);
        }
        CacheIsolation::Restart if matches!(backend, "vllm" | "sim" | "command") => {
            // The run stopped the server before this cell (`Services::restart`).
            out.done = "restart";
            out.complete = true;
            return Ok(out);
        }
        CacheIsolation::Restart => {
            return Err(anyhow!(
                "cache-isolation = \"restart\" needs a server pipeline launches, and `{backend}` is started by someone else"
            ))
            .hint("set cache-isolation = \"reset\" or \"salt\"");
        }
        CacheIsolation::Salt => {}
        CacheIsolation::Auto | CacheIsolation::Reset => {
            let refused = reset(endpoint, timeout.min(Duration::from_secs(30))).await;
            match refused.first() {
                None => {
                    out.done = "reset";
                    out.complete = true;
                    return Ok(out);
                }
                Some((route, _)) if *route != RESET_ROUTES[0] => {
                    // An older server: the prefix cache is empty, the rest may not be.
                    out.done = "reset";
                    out.notes.extend(refused.iter().map(|(route, why)| format!("POST {route} failed ({why}); that cache was not emptied")));
                    return Ok(out);
                }
                Some((route, why)) if asked == CacheIsolation::Reset => {
                    return Err(anyhow!("cache-isolation = \"reset\", but the server refused POST {route} ({why})")).hint(
                        "vLLM serves the reset routes when started with VLLM_SERVER_DEV_MODE=1 (pipeline sets it for `vllm` models); or set cache-isolation = \"salt\" or \"none\"",
                    );
                }
                Some((route, why)) => out.notes.push(format!(
                    "the server refused POST {route} ({why}; vLLM serves it with VLLM_SERVER_DEV_MODE=1), so the prefix cache is salted instead"
                )),
            }
        }
    }
    out.done = "salt";
    out.salt = Some(salt.to_string());
    out.notes.push("a salt isolates the prefix cache, not vLLM's multimodal processor cache, which is keyed by image content".into());
    Ok(out)
}

/// POST every reset route; the ones that failed, with why.
async fn reset(endpoint: &Endpoint, timeout: Duration) -> Vec<(&'static str, String)> {
    let client = match client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return vec![(RESET_ROUTES[0], e.to_string())],
    };
    let mut refused = Vec::new();
    for route in RESET_ROUTES {
        let mut req = client.post(format!("{}{route}", endpoint.base_url));
        if let Some(key) = &endpoint.api_key {
            req = req.bearer_auth(key);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => refused.push((route, format!("HTTP {}", resp.status().as_u16()))),
            Err(e) => refused.push((route, endpoint.secrets.redact(&format!("{e}")).into_owned())),
        }
        // Without the prefix cache's route, the others are not worth waiting for.
        if refused.first().is_some_and(|(r, _)| *r == RESET_ROUTES[0]) {
            break;
        }
    }
    refused
}
