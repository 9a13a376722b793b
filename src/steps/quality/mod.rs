//! The quality step: one cell's answers scored, beside (not inside) its measurement, so
//! that a changed scoring rule re-scores without measuring again.
//!
//! Each measured turn (its last attempt, warm-up excluded) gets one row per method:
//! each `[quality] score` scorer against the turn's reference answer (the conversations
//! file's recorded assistant turn), and with `agreement`, `agreement` (exact match after
//! normalisation) and `chrf` against the reference variant's answer to the same turn of
//! the same model, seed and cell. A turn that failed, or has no reference or
//! counterpart, has a row with no score (counted, never silently dropped); a successful
//! but empty answer scores 0.
//!
//! With a judge (`[quality] judge`), each turn also gets a `judge` row: the judge
//! model's score of the answer against the reference ([`judge`]), asked before the rows
//! are written; what the judge cost is written beside them (`judge.json`).

pub mod judge;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::quality::{self, Scorer};
use crate::records::{self, QualityRow};
use crate::steps::datagen::{Dataset, Part};

/// Bump when the scores would change.
pub const VERSION: u32 = 1;

/// Everything a quality step depends on besides its inputs' contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    pub cell: Vec<(String, String)>,
    /// Against each turn's reference answer (its inputs then include the cell's data).
    pub scorers: Vec<Scorer>,
    pub number_tolerance: f64,
    /// The variant whose answers this cell's are compared with: its measure is an
    /// input (none when this cell is that variant: it agrees with itself).
    pub agreement: Option<String>,
    /// An answer of this many tokens was cut there (`truncated`).
    pub max_tokens: u32,
    /// The judge that scores each answer (`[quality] judge`); left out of the key when
    /// there is none, so that quality steps without one keep their keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,
}

/// What a judge's scores depend on: the prompt's version and the judge's model
/// identity (its server's configuration as a measure's key holds it: backend, model,
/// URL; never the key to its API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Judge {
    pub prompt_version: u32,
    pub backend: String,
    /// The model name requests ask for.
    pub served_name: String,
    pub server: serde_json::Value,
}

/// What a cell answered, per (conversation, turn): the answer and its completion
/// tokens, or None when the turn failed.
type Answers = BTreeMap<(u32, u32), Option<(String, Option<u64>)>>;

/// Each turn's question text and recorded answer, by (conversation, turn), and each
/// conversation's number in its file, from a datagen's output `data`.
type References = (BTreeMap<(u32, u32), (String, String)>, Vec<u64>);

fn references(data: Option<&Path>) -> Result<References> {
    let Some(dir) = data else { return Ok((BTreeMap::new(), Vec::new())) };
    let dataset: Dataset = serde_json::from_slice(&std::fs::read(dir.join("conversations.json"))?).context("reading conversations.json")?;
    let items = dataset.source.as_ref().map(|s| s.conversations.iter().map(|c| c.index).collect()).unwrap_or_default();
    let mut refs = BTreeMap::new();
    for (c, conv) in dataset.conversations.iter().enumerate() {
        for (t, turn) in conv.turns.iter().enumerate() {
            if let Some(a) = &turn.answer {
                // A file's turn keeps its text in `parts`; a synthetic one in `question`.
                let texts: Vec<&str> =
                    turn.parts.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect();
                let question = if texts.is_empty() { turn.question.clone() } else { texts.join("\n") };
                refs.insert((c as u32, t as u32), (question, a.clone()));
            }
        }
    }
    Ok((refs, items))
}

/// Score the answers in `measured` (a measure's output) against the references in
/// `data` (a datagen's output) and the answers in `counterpart` (the reference
/// variant's measure; `measured` itself when this cell is that variant), with the
/// judge's scores in `judged` when there is a judge.
pub fn run(
    p: &Params,
    measured: &Path,
    data: Option<&Path>,
    counterpart: Option<&Path>,
    judged: Option<&judge::Judged>,
    out: &Path,
) -> Result<()> {
    let mine = answers(measured)?;
    let (references, items) = references(data)?;
    let other = match (&p.agreement, counterpart) {
        (Some(_), Some(dir)) => Some(answers(dir)?),
        (Some(_), None) => Some(mine.clone()),
        (None, _) => None,
    };
    let mut rows = Vec::new();
    for (&(conversation, turn), answer) in &mine {
        let truncated = answer.as_ref().and_then(|(_, n)| *n).is_some_and(|n| n >= p.max_tokens as u64);
        let text = answer.as_ref().map(|(a, _)| a.as_str());
        let row = |method: &str, against: &str, score: Option<f64>| QualityRow {
            conversation,
            turn,
            item: items.get(conversation as usize).copied(),
            method: method.into(),
            against: against.into(),
            score,
            truncated,
        };
        for scorer in &p.scorers {
            let reference = references.get(&(conversation, turn)).map(|(_, r)| r);
            rows.push(row(scorer.name(), "reference", text.zip(reference).and_then(|(a, r)| scorer.score(a, r, p.number_tolerance))));
        }
        if let (Some(other), Some(variant)) = (&other, &p.agreement) {
            let theirs = other.get(&(conversation, turn)).and_then(|a| a.as_ref()).map(|(a, _)| a.as_str());
            let pair = text.zip(theirs);
            let same = |(a, b): (&str, &str)| if quality::normalised(a) == quality::normalised(b) { 1.0 } else { 0.0 };
            rows.push(row("agreement", variant, pair.map(same)));
            rows.push(row("chrf", variant, pair.map(|(a, b)| quality::chrf(a, b))));
        }
        if let Some(j) = judged {
            rows.push(row("judge", "reference", j.scores.get(&(conversation, turn)).copied().flatten()));
        }
    }
    if let Some(j) = judged {
        std::fs::write(out.join(judge::FILE), serde_json::to_vec_pretty(&j.cost)?).with_context(|| format!("writing {}", judge::FILE))?;
    }
    records::write_quality(&p.cell, &rows, out)
}

/// Each measured turn's last attempt: its answer, or None when it failed.
pub(crate) fn answers(dir: &Path) -> Result<Answers> {
    let df = records::read_requests(dir, Some(&["conversation", "turn", "attempt", "warmup", "error", "answer", "completion_tokens"]))?;
    let df = df.lazy().filter(col("warmup").not()).sort(["conversation", "turn", "attempt"], SortMultipleOptions::default()).collect()?;
    let (conv, turn) = (df.column("conversation")?.u32()?, df.column("turn")?.u32()?);
    let (error, answer) = (df.column("error")?.str()?, df.column("answer")?.str()?);
    let tokens = df.column("completion_tokens")?.u64()?;
    let mut out = Answers::new();
    for i in 0..df.height() {
        let (Some(c), Some(t)) = (conv.get(i), turn.get(i)) else { continue };
        let ok = error.get(i) == Some("none");
        // Sorted by attempt: the last attempt stays.
        out.insert((c, t), ok.then(|| (answer.get(i).unwrap_or_default().to_string(), tokens.get(i))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(judge: Option<Judge>) -> serde_json::Value {
        let p = Params { cell: vec![], scorers: vec![Scorer::Exact], number_tolerance: 0.01, agreement: None, max_tokens: 8, judge };
        serde_json::to_value(&p).unwrap_or_default()
    }

    /// The judge's prompt version and model identity are in the step's parameters (and
    /// so its key); without a judge there is no `judge` key at all, so quality steps
    /// keep the keys they had before judges existed.
    #[test]
    fn the_judge_is_in_the_key_only_when_there_is_one() {
        assert!(params(None).get("judge").is_none(), "{}", params(None));
        let judge = Judge {
            prompt_version: crate::quality::judge::JUDGE_PROMPT_VERSION,
            backend: "openai".into(),
            served_name: "gpt-judge".into(),
            server: serde_json::json!({"backend": "openai", "model": "gpt-judge", "url": null}),
        };
        let with = params(Some(judge.clone()));
        assert_eq!(with["judge"]["prompt-version"], crate::quality::judge::JUDGE_PROMPT_VERSION);
        assert_eq!(with["judge"]["server"]["model"], "gpt-judge");
        let later = params(Some(Judge { prompt_version: judge.prompt_version + 1, ..judge }));
        assert_ne!(with, later, "a new prompt version is a new key");
        // What the key holds reads back as the parameters the step gets.
        let back: Params = serde_json::from_value(with.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_value(&back).unwrap_or_default(), with);
    }
}
