//! What the report step depends on, and all it shows about the experiment.
//!
//! The report renders the methodology (workload, seeds, machine, SLO), the models with
//! their effective settings and the servers as configured. All of it is in [`Params`],
//! the serialization of which is the report key's `params`: a setting the report
//! prints cannot change without the report being rendered again. The planner builds
//! it from the experiment ([`Params::new`]); the step sees nothing else of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Arrival, Backend, Experiment, Feeds, Slo};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    pub title: String,
    /// Template name → blake3 of its source; the sources are the step's other input.
    pub templates: BTreeMap<String, String>,
    /// Where the experiment file came from (its git commit).
    pub source: String,
    pub slo: Slo,
    /// blake3 of the baseline's `seeds.parquet` (or why it is unreadable).
    pub baseline: Option<String>,
    pub noise_pct: f64,
    /// Everything else the templates show.
    pub shown: Shown,
    /// `[search]`: each curve's path and what it found (absent without a search, so
    /// that other reports keep their keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::search::Summary>,
}

/// The experiment as the report describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Shown {
    pub name: String,
    /// The hardware identity the measures ran under.
    pub hardware: String,
    pub cells: usize,
    pub seeds: Vec<u64>,
    pub batch_sizes: Vec<u32>,
    pub frames: Vec<u32>,
    pub turns: u32,
    pub resolution: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub warmup_requests: u32,
    /// `closed`, or `poisson`/`constant` with the rate, or `trace` with the speedup.
    pub arrival: String,
    /// Conversations from a file (absent for synthetic ones, so that their reports
    /// keep their keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<ShownConversations>,
    /// A trace replay: what was replayed ("the 24 requests of FILE, 2.9 s of trace time").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub models: Vec<ShownModel>,
    pub servers: Vec<ShownServer>,
}

/// The conversations file, as the methodology states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShownConversations {
    pub file: String,
    pub format: String,
    /// Conversations the file holds.
    pub count: usize,
    /// `live` or `recorded`.
    pub history: String,
    /// Images at their own size (`source`) or resized (`WxH`).
    pub resolution: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShownModel {
    pub name: String,
    pub backend: String,
    pub served_name: String,
    pub variants: Vec<ShownVariant>,
}

/// A variant with its effective settings: a dtype set under `[server]` shows where the
/// variant sets none, for the backends that pass it to their server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShownVariant {
    pub name: String,
    pub model: String,
    pub quantization: Option<String>,
    pub dtype: Option<String>,
}

/// A server configuration, as it enters the keys of its measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShownServer {
    pub id: String,
    pub config: serde_json::Value,
}

impl Params {
    /// The report of `exp`, with `cells` cells measured on `hardware` by `servers`
    /// (id, configuration).
    pub fn new(exp: &Experiment, cells: usize, hardware: &str, servers: Vec<ShownServer>) -> Params {
        let r = &exp.report;
        let w = &exp.workload;
        let models = exp
            .models
            .values()
            .filter(|m| exp.matrix.models.contains(&m.name))
            .map(|m| ShownModel {
                name: m.name.clone(),
                backend: m.backend.name().to_string(),
                served_name: m.served_name.clone(),
                variants: m
                    .variants
                    .iter()
                    .filter(|(v, _)| exp.matrix.variants.contains(v))
                    .map(|(v, var)| ShownVariant {
                        name: v.clone(),
                        model: var.model.clone(),
                        quantization: var.quantization.clone(),
                        dtype: var.dtype.clone().or_else(|| passes_dtype(m.backend).then(|| exp.server.dtype.clone())),
                    })
                    .collect(),
            })
            .collect();
        Params {
            title: r.title.clone(),
            templates: template_digests(r.templates.as_deref()),
            source: r.provenance.clone(),
            slo: r.slo.clone(),
            baseline: baseline_digest(r.baseline.as_deref()),
            noise_pct: r.noise_pct,
            shown: Shown {
                name: exp.name.clone(),
                hardware: hardware.to_string(),
                cells,
                seeds: exp.matrix.seeds.clone(),
                batch_sizes: exp.matrix.batch_sizes.clone(),
                frames: exp.matrix.frames.clone(),
                turns: w.turns,
                resolution: format!("{}x{}", w.width, w.height),
                max_tokens: w.max_tokens,
                temperature: w.temperature,
                warmup_requests: w.warmup_requests,
                arrival: match w.arrival {
                    Arrival::Closed => "closed".into(),
                    Arrival::Constant { rate } => format!("constant at {rate} requests/s"),
                    Arrival::Poisson { rate } => format!("poisson at {rate} requests/s"),
                    Arrival::Trace { speedup } => {
                        match exp.matrix.custom.iter().find(|a| a.feeds == Feeds::Workload("trace-speedup".into())) {
                            Some(axis) => format!("trace at each cell's speedup (the {} axis)", axis.name),
                            None => format!("trace at speedup {speedup}"),
                        }
                    }
                },
                conversations: w.conversations.as_ref().map(|f| ShownConversations {
                    file: f.written.clone(),
                    format: f.format.name().to_string(),
                    count: f.at.len(),
                    history: w.history.name().to_string(),
                    resolution: if w.source_size { "source".into() } else { format!("{}x{}", w.width, w.height) },
                }),
                trace: w.trace.as_ref().map(crate::steps::measure::replay::describe),
                models,
                servers,
            },
            search: None,
        }
    }
}

/// Whether a backend's server gets `--dtype` from `[server]` (what `pipeline` launches
/// on GPUs); the simulator and remote APIs have no dtype of ours.
fn passes_dtype(backend: Backend) -> bool {
    backend.uses_gpus()
}

/// Each template's source: the user's file in `dir` where one exists, else the
/// embedded one.
pub fn template_sources(dir: Option<&Path>) -> Vec<(String, String)> {
    super::TEMPLATES
        .iter()
        .map(|(name, embedded)| {
            let user = dir.and_then(|d| std::fs::read_to_string(d.join(name)).ok());
            (name.to_string(), user.unwrap_or_else(|| embedded.to_string()))
        })
        .collect()
}

/// Template name → blake3 of its source.
fn template_digests(dir: Option<&Path>) -> BTreeMap<String, String> {
    template_sources(dir).into_iter().map(|(n, s)| (n, blake3::hash(s.as_bytes()).to_hex().to_string())).collect()
}

/// blake3 of the baseline's `seeds.parquet` (and `quality.parquet`, where it has one), or
/// why there is none.
fn baseline_digest(dir: Option<&Path>) -> Option<String> {
    let dir = dir?;
    let seeds = match std::fs::read(dir.join("seeds.parquet")) {
        Ok(bytes) => blake3::hash(&bytes).to_hex().to_string(),
        Err(e) => format!("unreadable: {e}"),
    };
    // The baseline's quality figures, where it has them: compared too. (Absent, the
    // digest is the one reports had before quality existed.)
    Some(match std::fs::read(dir.join("quality.parquet")) {
        Ok(bytes) => format!("{seeds}+{}", blake3::hash(&bytes).to_hex()),
        Err(_) => seeds,
    })
}
