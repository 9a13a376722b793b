//! Asking the judge: one request per measured turn that has an answer and a reference,
//! with the fixed prompt of [`crate::quality::judge`] at temperature 0, a few at a
//! time; a 429 is retried after its `Retry-After`, as a measure's request is. The
//! reply is read strictly ([`crate::quality::judge::score`]); a reply that is not a
//! score leaves the turn unscored and is counted. A request that failed (connection,
//! HTTP error, timeout) fails the step, so that an outage is asked again on the next
//! run rather than cached as unscored turns. An empty answer scores 0 without asking (as every scorer gives it).
//!
//! What the judge cost (requests, prompt and completion tokens as the judge's API
//! reports them, failures, unscored replies with a few examples) is [`Cost`], written as
//! `judge.json` beside the scores. Replies are redacted of every key the experiment
//! names before they are kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::error::WithHint;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Judge;
use crate::client::{self, Api, ErrorClass, Target};
use crate::quality::judge::{self as prompt, Unscored};
use crate::steps::measure::Endpoint;

/// The file in a quality step's (and the aggregate's) output that holds [`Cost`].
pub const FILE: &str = "judge.json";

/// Judge requests in flight at once: enough to keep a hosted API busy, few enough to
/// stay under its rate limits.
const IN_FLIGHT: usize = 4;
/// Unscored replies kept as examples.
const EXAMPLES: usize = 5;
/// Characters of a reply kept in an example.
const EXAMPLE_CHARS: usize = 200;

/// What the judge was asked and what that cost, for one quality step (or, summed,
/// for the aggregate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The judge's backend and model name as requests give it.
    pub backend: String,
    pub model: String,
    pub prompt_version: u32,
    /// Requests sent, failed ones included.
    pub requests: u64,
    /// Requests that failed (connection, HTTP error, timeout): their turns are unscored.
    pub failed: u64,
    /// Replies that were not a score (not one number from 0 to 1): unscored.
    pub unscored: u64,
    /// Tokens as the judge's API reports them (usage), over every request.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// A few of the turns left unscored, with why and what the judge said.
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The cell, as `axis=value` pairs joined by commas.
    pub cell: String,
    pub conversation: u32,
    pub turn: u32,
    /// `request-failed`, `not-a-number` or `out-of-range`.
    pub reason: String,
    /// The reply (or, for a failed request, the error), cut to 200 characters.
    pub reply: String,
}

impl Cost {
    /// `other`'s counts added to these (examples kept up to the limit).
    pub fn add(&mut self, other: &Cost) {
        if self.model.is_empty() {
            (self.backend, self.model, self.prompt_version) = (other.backend.clone(), other.model.clone(), other.prompt_version);
        }
        self.requests += other.requests;
        self.failed += other.failed;
        self.unscored += other.unscored;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        let room = EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.iter().take(room).cloned());
    }
}

/// The judge's scores by (conversation, turn): None for a turn it could not score.
/// Turns it was not asked about (failed, no reference) are absent.
pub struct Judged {
    pub scores: BTreeMap<(u32, u32), Option<f64>>,
    pub cost: Cost,
}

/// Ask the judge at `endpoint` to score each answer in `measured` (the measure of
/// `cell`) against the references in `data`.
pub async fn ask(
    judge: &Judge,
    cell: &[(String, String)],
    measured: &Path,
    data: Option<&Path>,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Judged> {
    let cell_name = cell.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let (m, d) = (measured.to_path_buf(), data.map(Path::to_path_buf));
    let (answers, (references, _)) =
        tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((super::answers(&m)?, super::references(d.as_deref())?))).await??;
    let mut scores = BTreeMap::new();
    let mut asks = Vec::new();
    for (&turn, answer) in &answers {
        let (Some((text, _)), Some((question, reference))) = (answer, references.get(&turn)) else { continue };
        if text.trim().is_empty() {
            scores.insert(turn, Some(0.0));
        } else {
            asks.push((turn, prompt::prompt(question, reference, text)));
        }
    }
    let target = Target {
        url: format!("{}{}", endpoint.base_url.trim_end_matches('/'), endpoint.api.path()),
        api: endpoint.api,
        api_key: endpoint.api_key.clone(),
        timeout,
        secrets: endpoint.secrets.clone(),
        // The judge's requests are not measured: no trace context.
        traceparent: false,
        spans: None,
    };
    let http = client::http_client(IN_FLIGHT)?;
    let (target, http) = (&target, &http);
    let mut cost =
        Cost { backend: judge.backend.clone(), model: judge.served_name.clone(), prompt_version: judge.prompt_version, ..Cost::default() };
    // Each turn's exchanges: a 429 is retried as a measure's is (after its
    // `Retry-After`, a few times); every attempt is a request the judge counted.
    let mut replies = futures_util::stream::iter(asks.into_iter().map(|((c, t), text)| async move {
        let body: bytes::Bytes = body(judge, target.api, &text).into();
        let mut tries = Vec::new();
        for attempt in 0.. {
            let ex = client::exchange(http, target, &format!("judge-{c}-{t}-{attempt}"), body.clone()).await;
            let wait = crate::steps::measure::retry_wait(&ex, attempt);
            tries.push(ex);
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
        ((c, t), tries)
    }))
    .buffered(IN_FLIGHT);
    while let Some(((c, t), mut tries)) = replies.next().await {
        cost.requests += tries.len() as u64;
        cost.prompt_tokens += tries.iter().filter_map(|ex| ex.prompt_tokens).sum::<u64>();
        cost.completion_tokens += tries.iter().filter_map(|ex| ex.completion_tokens).sum::<u64>();
        let Some(ex) = tries.pop() else { continue };
        let read = match ex.error {
            ErrorClass::None => prompt::score(&ex.answer).map_err(|why| (why, ex.answer.clone())),
            class => Err((Unscored::RequestFailed, format!("{}: {}", class.name(), ex.error_detail))),
        };
        match read {
            Ok(score) => {
                scores.insert((c, t), Some(score));
            }
            Err((why, said)) => {
                if why == Unscored::RequestFailed {
                    cost.failed += 1;
                } else {
                    cost.unscored += 1;
                }
                if cost.examples.len() < EXAMPLES {
                    let reply = endpoint.secrets.redact(&said).chars().take(EXAMPLE_CHARS).collect();
                    cost.examples.push(Example { cell: cell_name.clone(), conversation: c, turn: t, reason: why.name().into(), reply });
                }
                scores.insert((c, t), None);
            }
        }
    }
    if cost.failed > 0 {
        // A failed request says nothing about the answer: kept as a finished step, its
        // turn would stay unscored on every later run. The step fails instead, so the
        // next run asks again (what did score is asked again too: requests are cheap
        // beside a cached score that hides an outage).
        let first = cost.examples.iter().find(|e| e.reason == Unscored::RequestFailed.name());
        let first = first.map(|e| format!(" (first: conversation {} turn {}: {})", e.conversation, e.turn, e.reply)).unwrap_or_default();
        return Err(anyhow::anyhow!(
            "the judge `{}` failed {} of {} requests{first}; no scores are kept for this cell",
            judge.served_name,
            cost.failed,
            cost.requests
        )
        .hint("check that the judge's server answers (its log, its URL and key), then run again: only the steps that did not finish run"));
    }
    Ok(Judged { scores, cost })
}

/// The request body: the prompt as the only user message, temperature 0, a short
/// answer, streamed with usage (as measures are, so one client reads both).
fn body(judge: &Judge, api: Api, prompt: &str) -> String {
    let messages = serde_json::json!([{"role": "user", "content": prompt}]);
    let max = crate::quality::judge::JUDGE_MAX_TOKENS;
    let value = match api {
        // OpenAI's own API wants `max_completion_tokens`; others take `max_tokens`.
        Api::OpenAiChat => {
            let limit = if judge.backend == "openai" { "max_completion_tokens" } else { "max_tokens" };
            let mut v = serde_json::json!({"model": judge.served_name, "stream": true, "stream_options": {"include_usage": true},
                "temperature": 0, "messages": messages});
            v[limit] = max.into();
            v
        }
        Api::AnthropicMessages => {
            serde_json::json!({"model": judge.served_name, "stream": true, "max_tokens": max, "temperature": 0, "messages": messages})
        }
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/results.md lists exactly the keys `judge.json` has.
    #[test]
    fn judge_json_is_documented() {
        let docs = include_str!("../../../docs/results.md");
        let section = docs.split("## `judge.json`").nth(1).expect("a judge.json section").split("\n## ").next().unwrap_or_default();
        let mut documented: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| {
                l.split('|').nth(1).unwrap_or_default().split(',').map(|k| k.trim().trim_matches('`').to_string()).collect::<Vec<_>>()
            })
            .collect();
        documented.sort();
        let value = serde_json::to_value(Cost::default()).unwrap_or_default();
        let mut written: Vec<String> = value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        written.sort();
        assert_eq!(documented, written);
    }

    #[test]
    fn costs_add_up() {
        let one =
            Cost { model: "j".into(), requests: 3, failed: 1, unscored: 1, prompt_tokens: 30, completion_tokens: 3, ..Cost::default() };
        let mut total = Cost::default();
        total.add(&one);
        total.add(&one);
        assert_eq!((total.model.as_str(), total.requests, total.failed, total.unscored), ("j", 6, 2, 2));
        assert_eq!((total.prompt_tokens, total.completion_tokens), (60, 6));
    }
}
