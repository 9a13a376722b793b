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
//!
//! Here: the plan's types and its keys. [`build`] turns cells into steps (and each
//! step kind's parameters), [`server`] is a server's one typed configuration (its
//! measures' key part and the launcher's input), [`status`] decides what is up to
//! date, [`explain`] says why a step runs again.

mod build;
mod drawn;
mod explain;
pub mod server;
mod status;

pub use server::{Launch, Process, ServerConfig};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::cache::StepRecord;
use crate::config::{Backend, Experiment};
use crate::hash::{Canonical, Digest, KEY_SCHEMA, StepKey};
use crate::matrix::Cell;
use crate::steps;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Datagen,
    Measure,
    /// Results another tool recorded, read from a file in place of a measure.
    Import,
    /// One cell's answers scored (`[quality]`).
    Quality,
    Aggregate,
    Report,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Datagen => "datagen",
            StepKind::Measure => "measure",
            StepKind::Import => "import",
            StepKind::Quality => "quality",
            StepKind::Aggregate => "aggregate",
            StepKind::Report => "report",
        }
    }

    /// Implementation version: bump it when the step's *outputs* would change.
    pub fn version(self) -> u32 {
        match self {
            StepKind::Datagen => steps::datagen::VERSION,
            StepKind::Measure => steps::measure::VERSION,
            StepKind::Import => steps::import::VERSION,
            StepKind::Quality => steps::quality::VERSION,
            StepKind::Aggregate => steps::aggregate::VERSION,
            StepKind::Report => steps::report::VERSION,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    /// The coordinates of a step without a cell (a datagen's seed, batch size, …); a
    /// step of a cell has its cell's, which [`Plan::coords`] gives (kept once per cell,
    /// not once more per step: at 100,000 cells a copy was about 22 MB).
    pub coords: Vec<(String, String)>,
    pub params: Canonical,
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
    /// The server's configuration: the launcher's only description of it.
    pub config: Arc<ServerConfig>,
    /// `config` serialized: what enters the key of every measure using this server.
    pub key: Canonical,
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
}

impl Plan {
    /// The preimage of `step`'s key, given the output digests of its inputs.
    pub fn key_for(&self, step: &Step, inputs: BTreeMap<String, String>) -> StepKey {
        // A measure's server, hardware and environment are what it measured; a quality
        // step's judge server is named in its parameters (its identity and prompt
        // version), and the machine it was asked from changes nothing.
        let (server, hardware, env) = match step.server.filter(|_| step.kind == StepKind::Measure) {
            Some(s) => (Some(self.servers[s].key.clone()), Some(self.hardware.clone()), self.env.clone()),
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
}

impl Plan {
    /// The search's paths the report's parameters hold, if any.
    pub fn search_summary(&self) -> Option<crate::search::Summary> {
        self.steps.iter().find(|s| s.kind == StepKind::Report).and_then(|s| s.typed::<steps::report::Params>().ok()).and_then(|p| p.search)
    }

    /// Put a search's paths into the report's parameters (and so its key).
    pub fn set_search(&mut self, summary: crate::search::Summary) {
        for step in self.steps.iter_mut().filter(|s| s.kind == StepKind::Report) {
            if let Ok(mut p) = step.typed::<steps::report::Params>() {
                p.search = Some(summary.clone());
                step.params = Canonical::of(&p);
            }
        }
    }
}

/// Which steps a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--only axis=value` filters (all must match).
    pub only: Vec<(String, String)>,
    /// `--kind` filters: only steps of these kinds (and what they read).
    pub kinds: Vec<StepKind>,
    pub force: bool,
}

/// Where a step stands; [`State::name`] is how `plan` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    pub output: Option<Digest>,
    pub reasons: Vec<String>,
    /// Runs even if its key is cached (`--force` on a step it chose).
    pub forced: bool,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Run => "run",
            State::Wait => "wait",
            State::Skip => "skip",
        }
    }
}

impl Plan {
    /// `step`'s coordinates: its cell's, or its own.
    pub fn coords<'a>(&'a self, step: &'a Step) -> std::borrow::Cow<'a, [(String, String)]> {
        match step.cell {
            Some(c) => std::borrow::Cow::Owned(self.cells[c].coords()),
            None => std::borrow::Cow::Borrowed(&step.coords),
        }
    }

    /// What the runs file remembers of `step`, done under `key`.
    pub fn record(&self, step: &Step, key: &Digest) -> StepRecord {
        StepRecord { id: step.id.clone(), kind: step.kind.name().into(), key: key.hex(), coords: self.coords(step).into_owned() }
    }
}

impl Step {
    /// This step's parameters as its kind's `Params` (`steps::measure::Params`, …),
    /// exactly as its key holds them.
    pub fn typed<P: serde::de::DeserializeOwned>(&self) -> Result<P, serde_json::Error> {
        self.params.typed()
    }
}
