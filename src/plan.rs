//! Turn cells into a DAG of steps, and decide which steps are up to date and why.
//!
//! Each cell becomes one **measure** step. Measures share a **datagen** step per
//! distinct data configuration and a **server** per distinct server configuration;
//! one **aggregate** and one **report** step close the experiment. Identical steps are
//! merged by their parameters. A server is a service, not a cached output: it has no
//! key of its own, but its configuration enters the key of every measure using it.
//!
//! [`Plan::status`] walks the DAG in topological order: a step whose inputs are all up
//! to date gets its key and a cache lookup; a step below one that must run waits for
//! it, because its key depends on the *content* of that upstream output.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cache::{Cache, Lookup, StepRecord};
use crate::config::{Arrival, Backend, Experiment, Feeds};
use crate::hash::{self, Digest, KEY_SCHEMA, StepKey};
use crate::matrix::Cell;
use crate::steps;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Datagen,
    Measure,
    Aggregate,
    Report,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Datagen => "datagen",
            StepKind::Measure => "measure",
            StepKind::Aggregate => "aggregate",
            StepKind::Report => "report",
        }
    }

    /// Implementation version: bump it when the step's *outputs* would change.
    pub fn version(self) -> u32 {
        match self {
            StepKind::Datagen => steps::datagen::VERSION,
            StepKind::Measure => steps::measure::VERSION,
            StepKind::Aggregate => steps::aggregate::VERSION,
            StepKind::Report => steps::report::VERSION,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub coords: Vec<(String, String)>,
    pub params: Arc<Value>,
    pub deps: Vec<usize>,
    /// The server a measure talks to (index into [`Plan::servers`]).
    pub server: Option<usize>,
    /// The cell a measure measures.
    pub cell: Option<usize>,
}

/// One distinct server configuration.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub id: String,
    pub model: String,
    pub variant: String,
    pub backend: Backend,
    /// What enters the key of every measure using this server.
    pub config: Arc<Value>,
    pub extra_args: Vec<String>,
    pub gpus_needed: u32,
}

#[derive(Debug)]
pub struct Plan {
    pub experiment: Experiment,
    pub cells: Vec<Cell>,
    pub steps: Vec<Step>,
    pub servers: Vec<ServerSpec>,
    /// Step indices in an order where every step comes after its inputs.
    pub order: Vec<usize>,
    pub hardware: String,
    /// The allow-listed environment ([`hash::ENV_ALLOW_LIST`]), read once.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the step graph has a cycle through `{0}`")]
    Cycle(String),
    #[error("step `{step}` depends on `{missing}`, which is not a step")]
    Dangling { step: String, missing: String },
}

impl Plan {
    pub fn build(experiment: Experiment, cells: Vec<Cell>, hardware: String) -> Result<Plan, PlanError> {
        let mut b =
            Builder { steps: Vec::new(), by_id: HashMap::new(), servers: Vec::new(), server_by_id: HashMap::new(), dep_ids: Vec::new() };
        // What each measure is does not depend on the others: build those in parallel.
        // (id, coordinates, parameters) of each cell's measure.
        type Described = (String, Vec<(String, String)>, Value);
        let described: Vec<Described> =
            cells.par_iter().map(|cell| (format!("measure[{cell}]"), cell.coords(), measure_params(&experiment, cell))).collect();
        let mut measures = Vec::new();
        for (ci, (cell, (id, coords, params))) in cells.iter().zip(described).enumerate() {
            let server = b.server(&experiment, cell);
            let datagen = b.datagen(&experiment, cell);
            measures.push(b.add(StepKind::Measure, id, coords, params, vec![datagen], Some(server), Some(ci)));
        }
        let measure_ids: Vec<String> = measures.iter().map(|&i| b.steps[i].id.clone()).collect();
        let aggregate_params = to_params(&steps::aggregate::Params::new(experiment.report.slo.clone()));
        let aggregate = b.add(StepKind::Aggregate, "aggregate".into(), vec![], aggregate_params, measure_ids, None, None);
        let servers = b.servers.iter().map(|s| steps::report::ShownServer { id: s.id.clone(), config: (*s.config).clone() }).collect();
        let report_params = steps::report::Params::new(&experiment, cells.len(), &hardware, servers);
        let agg_id = b.steps[aggregate].id.clone();
        b.add(StepKind::Report, "report".into(), vec![], to_params(&report_params), vec![agg_id], None, None);
        let (steps, order) = b.finish()?;
        Ok(Plan { experiment, cells, steps, servers: b.servers, order, hardware, env: hash::allowed_env() })
    }

    /// The preimage of `step`'s key, given the output digests of its inputs.
    pub fn key_for(&self, step: &Step, inputs: BTreeMap<String, String>) -> StepKey {
        let (server, hardware, env) = match step.server {
            Some(s) => (Some(self.servers[s].config.clone()), Some(self.hardware.clone()), self.env.clone()),
            None => (None, None, BTreeMap::new()),
        };
        StepKey {
            schema: KEY_SCHEMA,
            kind: step.kind.name().into(),
            version: step.kind.version(),
            params: step.params.clone(),
            inputs,
            server,
            hardware,
            env,
        }
    }

    /// Decide, for every step, whether it is up to date and why not.
    pub fn status(&self, cache: &Cache, opts: &Selection) -> Vec<StepStatus> {
        // The last run is read only if some step needs explaining (not on a no-op).
        let history = std::sync::OnceLock::new();
        let selected = self.selected(opts);
        // `--force` applies to the steps chosen by `--only`/`--kind`, not to the
        // inputs they pull in.
        let forced: Vec<bool> = selected.iter().map(|s| opts.force && *s == Selected::Chosen).collect();
        let mut out: Vec<StepStatus> = (0..self.steps.len()).map(|_| StepStatus::default()).collect();
        // Steps of one depth depend only on shallower ones: each level is decided in
        // parallel (hashing and cache lookups dominate), levels in order.
        for level in self.levels() {
            let decided: Vec<StepStatus> = level
                .par_iter()
                .map(|&i| match selected[i] {
                    Selected::No => {
                        StepStatus { state: State::Skip, reasons: vec!["not selected (--only/--kind)".into()], ..Default::default() }
                    }
                    _ => self.decide(i, &out, cache, forced[i], &history),
                })
                .collect();
            for (&i, status) in level.iter().zip(decided) {
                out[i] = status;
            }
        }
        out
    }

    /// Steps grouped by depth (longest path from a step without inputs), in order.
    fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.steps.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for &i in &self.order {
            depth[i] = self.steps[i].deps.iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
            if levels.len() <= depth[i] {
                levels.resize_with(depth[i] + 1, Vec::new);
            }
            levels[depth[i]].push(i);
        }
        levels
    }

    /// Whether step `i` is up to date, given the decisions about its inputs.
    fn decide(&self, i: usize, out: &[StepStatus], cache: &Cache, forced: bool, history: &std::sync::OnceLock<History>) -> StepStatus {
        let step = &self.steps[i];
        let waiting: Vec<&str> = step.deps.iter().filter(|&&d| out[d].state != State::Fresh).map(|&d| self.steps[d].id.as_str()).collect();
        if !waiting.is_empty() {
            let reasons = forced
                .then(|| "forced".to_string())
                .into_iter()
                .chain(waiting.iter().take(3).map(|d| format!("input changed: {d} runs first")))
                .chain((waiting.len() > 3).then(|| format!("and {} more inputs", waiting.len() - 3)))
                .collect();
            let state = if step.deps.iter().any(|&d| out[d].state == State::Skip) { State::Skip } else { State::Wait };
            return StepStatus { state, reasons, forced, ..Default::default() };
        }
        let inputs = step.deps.iter().map(|&d| (self.steps[d].id.clone(), out[d].output.clone().unwrap_or_default())).collect();
        let key = self.key_for(step, inputs);
        let digest = key.digest();
        let mut status = StepStatus { key: Some(digest), forced, ..Default::default() };
        match cache.lookup(step.kind.name(), &digest) {
            Lookup::Hit { output_digest } if !forced => {
                status.state = State::Fresh;
                status.output = Some(output_digest);
            }
            lookup => {
                status.state = State::Run;
                status.reasons = if forced {
                    vec!["forced".into()]
                } else {
                    let (previous, near) = history.get_or_init(|| {
                        // Records from before they were named by file are named by experiment.
                        let mut previous = cache.last_run(&cache.record_name(&self.experiment));
                        if previous.is_empty() {
                            previous = cache.last_run(&self.experiment.name);
                        }
                        // Only steps that left the plan can have been *replaced* by a new one.
                        let ids: std::collections::HashSet<&str> = self.steps.iter().map(|s| s.id.as_str()).collect();
                        let near = NearIndex::new(previous.values().filter(|r| !ids.contains(r.id.as_str())));
                        (previous, near)
                    });
                    explain(cache, step, &key, previous, near, &lookup)
                };
            }
        }
        status
    }

    fn selected(&self, opts: &Selection) -> Vec<Selected> {
        // A step is chosen by its own coordinates (an axis it does not have does not
        // exclude it) and kind; everything a chosen step reads is chosen too.
        let chosen = |step: &Step| {
            let kind_ok = opts.kinds.is_empty() || opts.kinds.contains(&step.kind);
            let only_ok = opts.only.is_empty()
                || (!step.coords.is_empty()
                    && opts.only.iter().all(|(axis, value)| step.coords.iter().find(|(k, _)| k == axis).is_none_or(|(_, v)| v == value)));
            kind_ok && only_ok
        };
        let mut sel = vec![Selected::No; self.steps.len()];
        for &i in self.order.iter().rev() {
            let step = &self.steps[i];
            if chosen(step) {
                sel[i] = Selected::Chosen;
            }
            if sel[i] != Selected::No {
                for &d in &step.deps {
                    if sel[d] == Selected::No {
                        sel[d] = Selected::Input;
                    }
                }
            }
        }
        sel
    }
}

/// Whether a command applies to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    No,
    /// Chosen by `--only` and `--kind` (everything, without them).
    Chosen,
    /// Read by a chosen step.
    Input,
}

/// The last run's records, and an index of them for steps whose coordinates changed.
type History = (BTreeMap<String, StepRecord>, NearIndex);

/// Which steps a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--only axis=value` filters (all must match).
    pub only: Vec<(String, String)>,
    /// `--kind` filters: only steps of these kinds (and what they read).
    pub kinds: Vec<StepKind>,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Cached and intact.
    Fresh,
    /// Must run; its key is known.
    Run,
    /// Runs after its inputs; its key depends on what they produce.
    #[default]
    Wait,
    /// Not selected.
    Skip,
}

#[derive(Debug, Clone, Default)]
pub struct StepStatus {
    pub state: State,
    pub key: Option<Digest>,
    /// Output digest of a fresh step.
    pub output: Option<String>,
    pub reasons: Vec<String>,
    /// Runs even if its key is cached (`--force` on a step it chose).
    pub forced: bool,
}

impl Step {
    /// This step's parameters as its kind's `Params` (`steps::measure::Params`, …),
    /// exactly as its key holds them.
    pub fn typed<P: serde::de::DeserializeOwned>(&self) -> Result<P, serde_json::Error> {
        serde_json::from_value((*self.params).clone())
    }

    /// What the runs file remembers of this step, done under `key`.
    pub fn record(&self, key: &Digest) -> StepRecord {
        StepRecord { id: self.id.clone(), kind: self.kind.name().into(), key: key.hex(), coords: self.coords.clone() }
    }
}

/// Previous steps by (kind, coordinates with one axis left out), so a step whose
/// coordinates changed in one axis can still be compared with its predecessor.
struct NearIndex {
    by_partial: HashMap<(String, String), StepRecord>,
}

impl NearIndex {
    fn new<'a>(previous: impl Iterator<Item = &'a StepRecord>) -> Self {
        let mut by_partial = HashMap::new();
        for rec in previous {
            for skip in 0..rec.coords.len() {
                by_partial.entry((rec.kind.clone(), partial(&rec.coords, skip))).or_insert_with(|| rec.clone());
            }
        }
        NearIndex { by_partial }
    }

    fn find(&self, kind: &str, coords: &[(String, String)]) -> Option<&StepRecord> {
        (0..coords.len()).find_map(|skip| self.by_partial.get(&(kind.to_string(), partial(coords, skip))))
    }
}

fn partial(coords: &[(String, String)], skip: usize) -> String {
    coords.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, (k, v))| format!("{k}={v};")).collect()
}

/// Why a step whose key is not in the cache must run.
fn explain(
    cache: &Cache,
    step: &Step,
    key: &StepKey,
    previous: &BTreeMap<String, StepRecord>,
    near: &NearIndex,
    lookup: &Lookup,
) -> Vec<String> {
    let prev = previous.get(&step.id).or_else(|| near.find(step.kind.name(), &step.coords));
    let Some(prev) = prev else { return vec!["new".into()] };
    let Some(old) = prev.preimage(cache) else { return vec!["new (the previous version's entry is gone)".into()] };
    let mut reasons = diff(&old, key);
    if reasons.is_empty() {
        reasons.push(match lookup {
            Lookup::Damaged(why) => why.clone(),
            _ => "output missing".into(),
        });
    }
    reasons
}

fn diff(old: &StepKey, new: &StepKey) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    hash::flatten(&serde_json::to_value(old).unwrap_or_default(), "", &mut a);
    hash::flatten(&serde_json::to_value(new).unwrap_or_default(), "", &mut b);
    let mut reasons = Vec::new();
    let mut changed_inputs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        // The cell's coordinates repeat what the other parameters say, less readably.
        if k.starts_with("params.cell") {
            continue;
        }
        if let Some(input) = k.strip_prefix("inputs.") {
            changed_inputs.push(input.to_string());
            continue;
        }
        let name = k.strip_prefix("params.").unwrap_or(k);
        let show = |v: Option<&String>| v.map_or("(unset)".to_string(), |s| s.trim_matches('"').to_string());
        reasons.push(match (x, y) {
            (Some(_), Some(_)) => format!("{name} changed {} → {}", show(x), show(y)),
            (None, Some(_)) => format!("{name} added: {}", show(y)),
            _ => format!("{name} removed (was {})", show(x)),
        });
    }
    match changed_inputs.len() {
        0 => {}
        1..=3 => reasons.extend(changed_inputs.into_iter().map(|i| format!("input changed: {i} reran"))),
        n => reasons.push(format!("input changed: {n} upstream steps reran")),
    }
    reasons
}

struct Builder {
    steps: Vec<Step>,
    /// Step ids are built from exactly the coordinates that make steps differ, so
    /// steps with equal ids are identical and merged.
    by_id: HashMap<String, usize>,
    servers: Vec<ServerSpec>,
    server_by_id: HashMap<String, usize>,
    dep_ids: Vec<Vec<String>>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        kind: StepKind,
        id: String,
        coords: Vec<(String, String)>,
        params: Value,
        deps: Vec<String>,
        server: Option<usize>,
        cell: Option<usize>,
    ) -> usize {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        self.by_id.insert(id.clone(), self.steps.len());
        self.steps.push(Step { id, kind, coords, params: Arc::new(params), deps: Vec::new(), server, cell });
        self.dep_ids.push(deps);
        self.steps.len() - 1
    }

    fn datagen(&mut self, exp: &Experiment, cell: &Cell) -> String {
        let w = &exp.workload;
        let turns = workload_override(exp, cell, "turns").and_then(|v| v.as_u64()).map_or(w.turns, |t| t as u32);
        let mut coords = vec![
            ("seed".to_string(), cell.seed.to_string()),
            ("batch-size".into(), cell.batch_size.to_string()),
            ("frames".into(), cell.frames.to_string()),
        ];
        if turns != w.turns {
            coords.push(("turns".into(), turns.to_string()));
        }
        let id = format!("datagen[{}]", coords.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        if self.by_id.contains_key(&id) {
            return id;
        }
        let params = steps::datagen::Params {
            seed: cell.seed,
            conversations: cell.batch_size,
            turns,
            frames: cell.frames,
            width: w.width,
            height: w.height,
            questions: w.questions.clone(),
            images_dir: w.images_dir.as_ref().map(|d| d.digest.clone()),
            jpeg_quality: steps::datagen::JPEG_QUALITY,
        };
        let i = self.add(StepKind::Datagen, id, coords, to_params(&params), vec![], None, None);
        self.steps[i].id.clone()
    }

    fn server(&mut self, exp: &Experiment, cell: &Cell) -> usize {
        let model = &exp.models[&cell.model];
        let variant = &model.variants[&cell.variant];
        let s = &exp.server;
        let turns = workload_override(exp, cell, "turns").and_then(|v| v.as_u64()).unwrap_or(exp.workload.turns as u64);
        // Every image of the resent history is in one request.
        let limit_mm = model.backend.uses_gpus().then_some(turns * cell.frames as u64);
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
            id.push_str(&format!(",max-images={k}"));
        }
        for (name, _, value) in &flags {
            id.push_str(&format!(",{name}={value}"));
        }
        id.push(']');
        if let Some(&i) = self.server_by_id.get(&id) {
            return i;
        }
        let mut extra_args = s.extra_args.clone();
        extra_args.extend(variant.extra_args.iter().cloned());
        extra_args.extend(flags.into_iter().flat_map(|(_, flag, value)| [flag, value]));
        let mut config = json!({
            "backend": model.backend.name(),
            "model": variant.model,
            "served-name": model.served_name,
        });
        let obj = config.as_object_mut().expect("json! object");
        // Only when set, so files without it keep their keys.
        if let Some(n) = model.gpus {
            obj.insert("gpus".into(), n.into());
        }
        match model.backend {
            Backend::Sim => {
                obj.insert("sim".into(), serde_json::to_value(&variant.sim).unwrap_or_default());
            }
            Backend::Vllm | Backend::Command => {
                obj.insert("tensor-parallel-size".into(), s.tensor_parallel_size.into());
                obj.insert("dtype".into(), variant.dtype.clone().unwrap_or_else(|| s.dtype.clone()).into());
                obj.insert("quantization".into(), variant.quantization.clone().into());
                obj.insert("extra-args".into(), extra_args.clone().into());
                // Frames as video: one video per turn, every frame kept (vLLM samples
                // 32 by default); as images: one per frame.
                match exp.workload.frames_as_video {
                    true => {
                        obj.insert("limit-mm-per-prompt".into(), json!({"video": turns}));
                        obj.insert("media-io-kwargs".into(), json!({"video": {"num_frames": -1}}));
                    }
                    false => {
                        obj.insert("limit-mm-per-prompt".into(), json!({"image": limit_mm}));
                    }
                }
                // Only when set, so files that do not use them keep their keys.
                if let Some(n) = s.max_model_len {
                    obj.insert("max-model-len".into(), n.into());
                }
                if let Some(on) = s.prefix_caching {
                    obj.insert("prefix-caching".into(), on.into());
                }
                if let Some(cmd) = &model.command {
                    obj.insert("command".into(), cmd.clone().into());
                }
            }
            Backend::Endpoint | Backend::Openai | Backend::Anthropic => {
                obj.insert("url".into(), model.url.clone().into());
            }
        }
        self.servers.push(ServerSpec {
            id: id.clone(),
            model: cell.model.clone(),
            variant: cell.variant.clone(),
            backend: model.backend,
            config: Arc::new(config),
            extra_args,
            gpus_needed: model.gpus.unwrap_or(if model.backend.uses_gpus() { s.tensor_parallel_size } else { 0 }),
        });
        self.server_by_id.insert(id, self.servers.len() - 1);
        self.servers.len() - 1
    }

    fn finish(&mut self) -> Result<(Vec<Step>, Vec<usize>), PlanError> {
        let index = &self.by_id;
        let mut graph: StableDiGraph<usize, ()> = StableDiGraph::new();
        let nodes: Vec<NodeIndex> = (0..self.steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, deps) in self.dep_ids.iter().enumerate() {
            for d in deps {
                let &j = index.get(d).ok_or_else(|| PlanError::Dangling { step: self.steps[i].id.clone(), missing: d.clone() })?;
                graph.add_edge(nodes[j], nodes[i], ());
                self.steps[i].deps.push(j);
            }
        }
        let order = petgraph::algo::toposort(&graph, None).map_err(|c| PlanError::Cycle(self.steps[graph[c.node_id()]].id.clone()))?;
        Ok((std::mem::take(&mut self.steps), order.into_iter().map(|n| graph[n]).collect()))
    }
}

fn workload_override(exp: &Experiment, cell: &Cell, key: &str) -> Option<Value> {
    exp.matrix.custom.iter().find(|a| a.feeds == Feeds::Workload(key.into())).and_then(|a| cell.value(&a.name))
}

fn measure_params(exp: &Experiment, cell: &Cell) -> Value {
    let w = &exp.workload;
    let get_u = |key: &str, default: u32| workload_override(exp, cell, key).and_then(|v| v.as_u64()).map_or(default, |v| v as u32);
    let model = &exp.models[&cell.model];
    let rate = |r: f64| workload_override(exp, cell, "request-rate").and_then(|v| v.as_f64()).unwrap_or(r);
    let (arrival, request_rate) = match w.arrival {
        Arrival::Closed => (None, None),
        Arrival::Constant { rate: r } => (Some("constant".to_string()), Some(rate(r))),
        Arrival::Poisson { rate: r } => (Some("poisson".to_string()), Some(rate(r))),
    };
    to_params(&steps::measure::Params {
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
    })
}

/// A step's parameters as its key holds them: the serialization of its kind's `Params`.
fn to_params<P: Serialize>(params: &P) -> Value {
    // These structs hold strings, numbers and lists: serializing them cannot fail.
    serde_json::to_value(params).unwrap_or_default()
}
