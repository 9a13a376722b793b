//! Cells into steps: one measure per cell, a datagen per distinct data configuration,
//! a server per distinct server configuration, one aggregate and one report. Each
//! step's parameters are built here as its kind's typed `Params`; what the key holds is
//! their serialization.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use anyhow::Context;
use foldhash::{HashMap, HashMapExt};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde_json::Value;

use rayon::prelude::*;

use super::{Launch, Plan, PlanError, Process, ServerConfig, ServerSpec, Step, StepKind};
use crate::config::{Arrival, Backend, CacheIsolation, Experiment, Feeds, Import};
use crate::hash::{self, Canonical};
use crate::matrix::Cell;
use crate::steps;

impl Plan {
    /// The plan of `cells`. Fails on a cycle (a bug) or, with conversations from a
    /// file, on a drawn conversation whose images cannot be read.
    pub fn build(experiment: Experiment, cells: Vec<Cell>, hardware: String) -> anyhow::Result<Plan> {
        let drawn = match &experiment.workload.conversations {
            Some(file) => {
                let draws: Vec<(u64, u32, u32)> = cells
                    .iter()
                    .filter(|c| experiment.models[&c.model].import.is_none())
                    .map(|c| (c.seed, c.batch_size, cell_turns(&experiment, c)))
                    .collect();
                Some(super::drawn::Drawn::read(&experiment, file, &draws)?)
            }
            None => None,
        };
        // Per cell a measure, at most one datagen and, with [quality], a quality step;
        // then an aggregate and a report: reserved once, not grown (and copied) a
        // doubling at a time.
        let expected = cells.len() * if experiment.quality.is_some() { 3 } else { 2 } + 2;
        let mut b = Builder {
            steps: Vec::with_capacity(expected),
            by_id: HashMap::with_capacity(expected),
            datagen_by: HashMap::new(),
            servers: Vec::new(),
            server_by_id: HashMap::new(),
            drawn,
        };
        // What each measure is does not depend on the others: build those in parallel,
        // each straight to its canonical text (a tree per cell, all alive at once, was
        // most of a large plan's memory).
        // (id, parameters) of each cell's measure.
        let described: Vec<(String, Canonical)> =
            cells.par_iter().map(|cell| (format!("measure[{cell}]"), measure_params(&experiment, cell))).collect();
        let mut measures = Vec::new();
        let mut datagens = Vec::new();
        for (ci, (cell, (id, params))) in cells.iter().zip(described).enumerate() {
            // Imported results: read from files, with no data and no server.
            if let Some(import) = &experiment.models[&cell.model].import {
                let params = import_params(import, cell);
                measures.push(b.add(StepKind::Import, id.replacen("measure", "import", 1), vec![], params, vec![], None, Some(ci)));
                datagens.push(None);
                continue;
            }
            let server = b.server(&experiment, cell);
            // A trace replay's prompts come from the trace: no generated data.
            let datagen = match experiment.workload.trace {
                Some(_) => None,
                None => Some(b.datagen(&experiment, cell)),
            };
            measures.push(b.add(StepKind::Measure, id, vec![], params, datagen.into_iter().collect(), Some(server), Some(ci)));
            datagens.push(datagen);
        }
        let mut aggregated = measures.clone();
        if let Some(q) = &experiment.quality {
            let judge = match &q.judge {
                Some(judge) => Some(b.judge_server(&experiment, judge)?),
                None => None,
            };
            let qualities = b.quality(&experiment, q, &cells, &measures, &datagens, judge)?;
            aggregated.extend(qualities);
        }
        let aggregate_params = Canonical::of(&steps::aggregate::Params::new(experiment.report.slo.clone()));
        let aggregate = b.add(StepKind::Aggregate, "aggregate".into(), vec![], aggregate_params, aggregated, None, None);
        let servers = b.servers.iter().map(|s| steps::report::ShownServer { id: s.id.clone(), config: s.key.to_value() }).collect();
        let report_params = steps::report::Params::new(&experiment, cells.len(), &hardware, servers);
        b.add(StepKind::Report, "report".into(), vec![], Canonical::of(&report_params), vec![aggregate], None, None);
        let (steps, order) = b.finish()?;
        Ok(Plan { experiment, cells, steps, servers: b.servers, order, hardware, env: hash::allowed_env() })
    }
}

struct Builder {
    steps: Vec<Step>,
    /// Step ids are built from exactly the coordinates that make steps differ, so
    /// steps with equal ids are identical and merged.
    by_id: HashMap<String, usize>,
    /// (seed, batch size, frames, turns) → the datagen step: what sets datagens apart.
    datagen_by: HashMap<(u64, u32, u32, u32), usize>,
    servers: Vec<ServerSpec>,
    server_by_id: HashMap<String, usize>,
    /// The conversations the cells draw from a file, with their images' digests.
    drawn: Option<super::drawn::Drawn>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        kind: StepKind,
        id: String,
        coords: Vec<(String, String)>,
        params: Canonical,
        deps: Vec<usize>,
        server: Option<usize>,
        cell: Option<usize>,
    ) -> usize {
        debug_assert!(cell.is_none() || coords.is_empty(), "a cell's step has its cell's coordinates (Plan::coords)");
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        self.by_id.insert(id.clone(), self.steps.len());
        self.steps.push(Step { id, kind, coords, params, deps, server, cell });
        self.steps.len() - 1
    }

    fn datagen(&mut self, exp: &Experiment, cell: &Cell) -> usize {
        let w = &exp.workload;
        let turns = cell_turns(exp, cell);
        if let Some(&i) = self.datagen_by.get(&(cell.seed, cell.batch_size, cell.frames, turns)) {
            return i;
        }
        let mut coords = vec![
            ("seed".to_string(), cell.seed.to_string()),
            ("batch-size".into(), cell.batch_size.to_string()),
            ("frames".into(), cell.frames.to_string()),
        ];
        if turns != w.turns {
            coords.push(("turns".into(), turns.to_string()));
        }
        let id = format!("datagen[{}]", coords.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        let params = match &self.drawn {
            Some(drawn) => steps::datagen::Params::File(drawn.params(exp, cell.seed, cell.batch_size, turns)),
            None => steps::datagen::Params::Synthetic(self.synthetic(exp, cell, turns)),
        };
        let i = self.add(StepKind::Datagen, id, coords, Canonical::of(&params), vec![], None, None);
        self.datagen_by.insert((cell.seed, cell.batch_size, cell.frames, turns), i);
        i
    }

    /// One quality step per cell: its inputs are the cell's measure, its data (the
    /// reference answers) and the measure of the same cell in the reference variant.
    /// Their ids.
    fn quality(
        &mut self,
        exp: &Experiment,
        q: &crate::config::QualitySpec,
        cells: &[Cell],
        measures: &[usize],
        datagens: &[Option<usize>],
        judge: Option<usize>,
    ) -> anyhow::Result<Vec<usize>> {
        let mut added = Vec::new();
        for (ci, cell) in cells.iter().enumerate() {
            let mut deps = vec![measures[ci]];
            // The data: its recorded answers are the references, and it says which of
            // the file's conversations each one is.
            if let Some(d) = datagens[ci] {
                deps.push(d);
            }
            if let Some(variant) = q.agreement.as_ref().filter(|v| **v != cell.variant) {
                let other = Cell { variant: variant.clone(), ..cell.clone() };
                let counterpart =
                    [format!("measure[{other}]"), format!("import[{other}]")].into_iter().find_map(|id| self.by_id.get(&id).copied());
                let Some(counterpart) = counterpart else {
                    let error =
                        anyhow::anyhow!("quality.agreement: cell `{cell}` has no counterpart in variant `{variant}` to compare with");
                    return Err(crate::error::WithHint::hint(error, format!("measure `{other}` too: check the matrix's exclude rules")));
                };
                deps.push(counterpart);
            }
            let params = steps::quality::Params {
                cell: cell.coords(),
                scorers: q.scorers.clone(),
                number_tolerance: q.number_tolerance,
                agreement: q.agreement.clone(),
                // A trace's answers are exactly their `output_length` long (ignore_eos):
                // none is cut.
                max_tokens: match exp.workload.trace {
                    Some(_) => u32::MAX,
                    None => {
                        let measured = self.steps[measures[ci]].params.to_value().get("max-tokens").and_then(Value::as_u64);
                        measured.unwrap_or(exp.workload.max_tokens as u64) as u32
                    }
                },
                judge: judge.map(|s| {
                    let spec = &self.servers[s];
                    steps::quality::Judge {
                        prompt_version: crate::quality::judge::JUDGE_PROMPT_VERSION,
                        backend: spec.backend.name().to_string(),
                        served_name: spec.config.served_name.clone(),
                        server: spec.key.to_value(),
                    }
                }),
            };
            added.push(self.add(StepKind::Quality, format!("quality[{cell}]"), vec![], Canonical::of(&params), deps, judge, Some(ci)));
        }
        Ok(added)
    }

    fn synthetic(&self, exp: &Experiment, cell: &Cell, turns: u32) -> steps::datagen::Synthetic {
        let w = &exp.workload;
        steps::datagen::Synthetic {
            seed: cell.seed,
            conversations: cell.batch_size,
            turns,
            frames: cell.frames,
            width: w.width,
            height: w.height,
            questions: w.questions.clone(),
            images_dir: w.images_dir.as_ref().map(|d| d.digest.clone()),
            jpeg_quality: steps::datagen::JPEG_QUALITY,
        }
    }

    fn server(&mut self, exp: &Experiment, cell: &Cell) -> usize {
        let model = &exp.models[&cell.model];
        let variant = &model.variants[&cell.variant];
        let s = &exp.server;
        let turns = workload_override(exp, cell, "turns").and_then(|v| v.as_u64()).unwrap_or(exp.workload.turns as u64);
        // Every image of the resent history is in one request: turns × frames, or the
        // most a conversation of the file holds.
        let images = match &exp.workload.conversations {
            Some(file) => file.max_images,
            None => turns * cell.frames as u64,
        };
        let limit_mm = model.backend.uses_gpus().then_some(images);
        let mut flags = Vec::new();
        for axis in &exp.matrix.custom {
            if let Feeds::ServerFlag(flag) = &axis.feeds
                && let Some(v) = cell.value(&axis.name)
            {
                flags.push((axis.name.as_str(), flag.clone(), v.as_str().map_or_else(|| v.to_string(), String::from)));
            }
        }
        // The id names exactly what sets servers of one model variant apart.
        let mut id = format!("server[model={},variant={}", cell.model, cell.variant);
        if let Some(k) = limit_mm {
            let _ = write!(id, ",max-images={k}");
        }
        for (name, _, value) in &flags {
            let _ = write!(id, ",{name}={value}");
        }
        id.push(']');
        if let Some(&i) = self.server_by_id.get(&id) {
            return i;
        }
        let mut extra_args = s.extra_args.clone();
        extra_args.extend(variant.extra_args.iter().cloned());
        extra_args.extend(flags.into_iter().flat_map(|(_, flag, value)| [flag, value]));
        let launch = match model.backend {
            Backend::Sim => {
                // A simulator with a quality answers the file's recorded answers, which
                // it reads from the file itself (see `SimParams::references`).
                let mut sim = variant.sim.clone();
                if sim.quality.is_some()
                    && let Some(file) = &exp.workload.conversations
                {
                    sim.references = Some(file.path.display().to_string());
                }
                Launch::Sim { sim }
            }
            Backend::Vllm | Backend::Command => {
                // Frames as video: one video per turn, every frame kept (vLLM samples
                // 32 by default); as images: one per frame.
                let one = |k: &str, v: Option<u64>| BTreeMap::from([(k.to_string(), v)]);
                let (limit_mm_per_prompt, media_io_kwargs) = match exp.workload.frames_as_video {
                    true => {
                        (one("video", Some(turns)), Some(BTreeMap::from([("video".into(), BTreeMap::from([("num_frames".into(), -1)]))])))
                    }
                    false => (one("image", limit_mm), None),
                };
                Launch::Process(Process {
                    tensor_parallel_size: s.tensor_parallel_size,
                    dtype: variant.dtype.clone().unwrap_or_else(|| s.dtype.clone()),
                    quantization: variant.quantization.clone(),
                    extra_args: extra_args.clone(),
                    limit_mm_per_prompt,
                    media_io_kwargs,
                    max_model_len: s.max_model_len,
                    prefix_caching: s.prefix_caching,
                    command: model.command.clone(),
                })
            }
            Backend::Endpoint | Backend::Openai | Backend::Anthropic | Backend::Import => Launch::Remote { url: model.url.clone() },
        };
        let config = ServerConfig {
            backend: model.backend,
            model: variant.model.clone(),
            served_name: model.served_name.clone(),
            gpus: model.gpus,
            launch,
            port: model.port,
            api_key_env: model.api_key_env.clone(),
            traces: model.traces,
            send_traceparent: model.send_traceparent,
            otlp_receiver: model.otlp_receiver,
        };
        self.servers.push(ServerSpec {
            id: id.clone(),
            model: cell.model.clone(),
            variant: cell.variant.clone(),
            backend: model.backend,
            key: Canonical::from_value(&config.key()),
            config: Arc::new(config),
            extra_args,
            gpus_needed: model.gpus.unwrap_or(if model.backend.uses_gpus() { s.tensor_parallel_size } else { 0 }),
        });
        self.server_by_id.insert(id, self.servers.len() - 1);
        self.servers.len() - 1
    }

    /// The judge's server (`[quality] judge`): started for the quality steps, which
    /// are its only users, and stopped after the last of them, as a measured server
    /// is after its last measure. A launched judge under Slurm is refused: it would
    /// need a job of its own (the file's `executor` is refused at validation; this is
    /// `--executor slurm`).
    fn judge_server(&mut self, exp: &Experiment, judge: &crate::config::Model) -> anyhow::Result<usize> {
        if exp.executor == crate::config::ExecutorKind::Slurm && judge.backend.launches() {
            let error = anyhow::anyhow!(
                "quality.judge: a judge that `pipeline` launches (backend `{}`) cannot run under the Slurm executor",
                judge.backend.name()
            );
            return Err(crate::error::WithHint::hint(
                error,
                "judge with a hosted API (`openai`, `anthropic`) or a server someone else runs (`endpoint`), or run without --executor slurm",
            ));
        }
        let base = judge.variants.get("base").context("a judge without its base variant")?;
        let s = &exp.server;
        let launch = match judge.backend {
            Backend::Sim => Launch::Sim { sim: base.sim.clone() },
            // A text-only prompt: no images, so no multimodal limits.
            Backend::Vllm | Backend::Command => Launch::Process(Process {
                tensor_parallel_size: s.tensor_parallel_size,
                dtype: base.dtype.clone().unwrap_or_else(|| s.dtype.clone()),
                quantization: base.quantization.clone(),
                extra_args: base.extra_args.clone(),
                limit_mm_per_prompt: BTreeMap::new(),
                media_io_kwargs: None,
                max_model_len: None,
                prefix_caching: None,
                command: judge.command.clone(),
            }),
            Backend::Endpoint | Backend::Openai | Backend::Anthropic | Backend::Import => Launch::Remote { url: judge.url.clone() },
        };
        let config = ServerConfig {
            backend: judge.backend,
            model: base.model.clone(),
            served_name: judge.served_name.clone(),
            gpus: judge.gpus,
            launch,
            port: judge.port,
            api_key_env: judge.api_key_env.clone(),
            // A judge's time is not what is measured: no spans, no trace context.
            traces: false,
            send_traceparent: false,
            otlp_receiver: None,
        };
        let id = "server[judge]".to_string();
        self.servers.push(ServerSpec {
            id: id.clone(),
            model: "judge".into(),
            variant: "base".into(),
            backend: judge.backend,
            key: Canonical::from_value(&config.key()),
            config: Arc::new(config),
            extra_args: base.extra_args.clone(),
            gpus_needed: judge.gpus.unwrap_or(if judge.backend.uses_gpus() { s.tensor_parallel_size } else { 0 }),
        });
        self.server_by_id.insert(id, self.servers.len() - 1);
        Ok(self.servers.len() - 1)
    }

    fn finish(&mut self) -> Result<(Vec<Step>, Vec<usize>), PlanError> {
        let mut graph: StableDiGraph<usize, ()> = StableDiGraph::with_capacity(self.steps.len(), self.steps.len() * 2);
        let nodes: Vec<NodeIndex> = (0..self.steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, step) in self.steps.iter().enumerate() {
            for &j in &step.deps {
                graph.add_edge(nodes[j], nodes[i], ());
            }
        }
        let order = petgraph::algo::toposort(&graph, None).map_err(|c| PlanError::Cycle(self.steps[graph[c.node_id()]].id.clone()))?;
        Ok((std::mem::take(&mut self.steps), order.into_iter().map(|n| graph[n]).collect()))
    }
}

/// The turns a cell replays: `turns`, or its value on a `turns` axis.
fn cell_turns(exp: &Experiment, cell: &Cell) -> u32 {
    workload_override(exp, cell, "turns").and_then(|v| v.as_u64()).map_or(exp.workload.turns, |t| t as u32)
}

fn workload_override(exp: &Experiment, cell: &Cell, key: &str) -> Option<Value> {
    exp.matrix.custom.iter().find(|a| a.feeds == Feeds::Workload(key.into())).and_then(|a| cell.value(&a.name))
}

fn measure_params(exp: &Experiment, cell: &Cell) -> Canonical {
    let w = &exp.workload;
    let get_u = |key: &str, default: u32| workload_override(exp, cell, key).and_then(|v| v.as_u64()).map_or(default, |v| v as u32);
    let model = &exp.models[&cell.model];
    let rate = |r: f64| workload_override(exp, cell, "request-rate").and_then(|v| v.as_f64()).unwrap_or(r);
    let (arrival, request_rate) = match w.arrival {
        Arrival::Closed => (None, None),
        Arrival::Constant { rate: r } => (Some("constant".to_string()), Some(rate(r))),
        Arrival::Poisson { rate: r } => (Some("poisson".to_string()), Some(rate(r))),
        Arrival::Trace { .. } => (Some("trace".to_string()), None),
    };
    let trace = match (w.arrival, &w.trace) {
        (Arrival::Trace { speedup }, Some(t)) => Some(steps::measure::replay::Trace {
            file: t.written.clone(),
            digest: t.digest.clone(),
            requests: t.requests,
            speedup: workload_override(exp, cell, "trace-speedup").and_then(|v| v.as_f64()).unwrap_or(speedup),
        }),
        _ => None,
    };
    Canonical::of(&steps::measure::Params {
        cell: cell.coords(),
        backend: model.backend.name().to_string(),
        served_name: model.served_name.clone(),
        batch_size: cell.batch_size,
        frames: cell.frames,
        turns: get_u("turns", w.turns),
        max_tokens: get_u("max-tokens", w.max_tokens),
        temperature: workload_override(exp, cell, "temperature").and_then(|v| v.as_f64()).unwrap_or(w.temperature),
        warmup_requests: get_u("warmup-requests", w.warmup_requests),
        request_timeout_s: w.request_timeout.as_secs_f64(),
        max_error_share: w.max_error_share,
        arrival,
        request_rate,
        image_reuse: w.images_by_id.then(|| "uuid".to_string()),
        frames_as: w.frames_as_video.then(|| "video".to_string()),
        cache_isolation: workload_override(exp, cell, "cache-isolation")
            .and_then(|v| v.as_str().and_then(CacheIsolation::parse))
            .unwrap_or(w.cache_isolation),
        metrics_interval_s: w.metrics_interval_s,
        history: w.conversations.as_ref().map(|_| w.history.name().to_string()),
        trace,
    })
}

/// An imported cell's parameters: its format and its file's digest (a file matrix
/// expansion checked is there).
fn import_params(import: &Import, cell: &Cell) -> Canonical {
    let file = import.files.get(&cell.seed);
    Canonical::of(&steps::import::Params {
        cell: cell.coords(),
        format: import.format,
        file: file.map(|f| f.written.clone()).unwrap_or_default(),
        digest: file.map(|f| f.digest.clone()).unwrap_or_default(),
    })
}
