//! The second pass: parse the file into the [`raw`] structs, then validate them into
//! a typed [`Experiment`], collecting *every* problem (with its key path, located in
//! the file) before failing. Defaults are filled in here, so that writing a default
//! explicitly produces the same `Experiment`, and every number is checked against
//! its [`limits`] entry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::conversations::{ConversationFile, Format};
use std::sync::Arc;

/// Parse the file, read what it points to, and validate both.
pub fn load(source: &Source) -> Result<Experiment, ConfigError> {
    let raw = parse(source)?;
    let inputs = inputs::read(source, &raw);
    let mut v =
        Validator { source, issues: inputs.issues, results: inputs.results, literals: Default::default(), receivers: BTreeMap::new() };
    v.no_keys();
    let written = trace::Written::of(&raw);
    let mut experiment = v.experiment(raw, inputs.questions, inputs.images, inputs.conversations);
    v.trace(&mut experiment, written, inputs.trace);
    experiment.literal_secrets = std::mem::take(&mut v.literals);
    if v.issues.is_empty() { Ok(experiment) } else { Err(ConfigError::invalid(source, v.issues)) }
}

fn parse(source: &Source) -> Result<raw::RawExperiment, ConfigError> {
    let invalid = |issue| ConfigError::invalid(source, vec![issue]);
    if source.yaml {
        serde_saphyr::from_str(&source.text).map_err(|e| {
            let at = e.location().map(|l| LineCol { line: l.line() as usize, column: l.column() as usize });
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            // "error: line 5 column 5: unknown field …": the location is shown already.
            let first = match first.strip_prefix("error: line ").and_then(|r| r.split_once(": ")) {
                Some((_, rest)) => rest.to_string(),
                None => first.to_string(),
            };
            // A parser quotes the value it choked on: a key written there is not repeated.
            let first = crate::secrets::mask_key_shaped(&first).into_owned();
            let (message, hint) = yaml_message(&first);
            invalid(Issue { at, hint: hint.or_else(|| parse_hint(&message)), message, ..Default::default() })
        })
    } else {
        toml::from_str(&source.text).map_err(|e| {
            let at = e.span().map(|s| line_col(&source.text, s.start));
            let message = crate::secrets::mask_key_shaped(e.message().trim()).into_owned();
            invalid(Issue { at, hint: parse_hint(&message), message, ..Default::default() })
        })
    }
}

/// serde-saphyr's messages that speak of its own API or types, in the file's terms.
fn yaml_message(message: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set DuplicateKeyPolicy").next().unwrap_or(rest);
        return (
            format!("key {} is written twice in one table", quoted(key)),
            Some("keep one of them: a later value would silently replace the earlier".into()),
        );
    }
    if message.starts_with("budget breached") {
        return (
            format!(
                "the YAML expands past {} nodes through its aliases (`*name`): nested aliases that multiply, refused before they fill memory",
                YAML_NODES
            ),
            Some("write the values out, or reuse fewer anchors; an experiment file needs no deeply nested aliases".into()),
        );
    }
    (message.to_string(), None)
}

/// The most nodes serde-saphyr builds from one document (its default budget).
const YAML_NODES: u32 = 250_000;

/// A fix for serde's own messages: did-you-mean for unknown keys, the shape for missing ones.
fn parse_hint(message: &str) -> Option<String> {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        let (field, expected) = rest.split_once('`')?;
        // toml writes "expected one of `a`, `b`", serde-saphyr "expected one of a, b".
        let list = expected.split_once("expected").map_or("", |(_, l)| l);
        let list = list.trim_start().strip_prefix("one of").unwrap_or(list);
        let candidates: Vec<&str> = list.split(',').map(|c| c.trim().trim_matches('`')).filter(|c| !c.is_empty()).collect();
        return Some(match closest(field, candidates.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (unknown keys are errors, not ignored)"),
            None => format!("remove `{field}`; this table accepts: {}", candidates.join(", ")),
        });
    }
    if let Some(rest) = message.split("missing field `").nth(1) {
        let field = rest.split('`').next()?;
        return Some(format!("add `{field}`; see docs/experiment-file.md for its meaning"));
    }
    if message.contains("invalid type") {
        return Some("check the value's type against docs/experiment-file.md".into());
    }
    None
}

/// The key paths (as [`KeyPath`] prints them) of the strings and keys in `value`
/// that hold something key-shaped, with how it is shown.
fn key_shaped_paths(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) => out.extend(crate::secrets::key_shaped(s).map(|k| (path, k))),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                key_shaped_paths(v, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if let Some(shown) = crate::secrets::key_shaped(k) {
                    out.push((at.clone(), shown));
                }
                key_shaped_paths(v, at, out);
            }
        }
        _ => {}
    }
}

/// The choices for `cache-isolation`, the closest first.
fn isolation_hint(text: &str) -> String {
    let names = CacheIsolation::CHOICES.map(|(name, _)| name);
    match closest(text, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (one of: {})", names.join(", ")),
        None => format!("one of: {}", names.join(", ")),
    }
}

struct Validator<'a> {
    source: &'a Source,
    issues: Vec<Issue>,
    /// The digests of the `import` models' files ([`inputs::read`]).
    results: BTreeMap<(String, String), String>,
    /// The values of secret flags in command lines, taken out of the text.
    literals: crate::secrets::LiteralSecrets,
    /// Each `otlp-receiver` address and the model that gave it first.
    receivers: BTreeMap<std::net::SocketAddr, String>,
}

impl Validator<'_> {
    /// Refuse what looks like an API key wherever the file writes it: a file's text
    /// enters step keys, plans, logs and reports, and keys come from the environment.
    fn no_keys(&mut self) {
        let doc: Option<serde_json::Value> =
            if self.source.yaml { serde_saphyr::from_str(&self.source.text).ok() } else { toml::from_str(&self.source.text).ok() };
        let mut found = Vec::new();
        if let Some(doc) = &doc {
            key_shaped_paths(doc, String::new(), &mut found);
        }
        for (path, shown) in found {
            // `api-key-env` says it its own way.
            if !path.ends_with("api-key-env") {
                self.error(
                    path,
                    format!("holds what looks like an API key (`{shown}`); the file's text is written into step keys, plans and reports"),
                    Some("export the key in your shell and name its variable with `api-key-env` (for a launched vLLM that also sets VLLM_API_KEY)".into()),
                );
            }
        }
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<String>) {
        let path = path.into();
        let at = locate::locate(&self.source.text, self.source.yaml, &KeyPath::parse(&path));
        self.issues.push(Issue { at, path, message: message.into(), hint, line: None });
    }

    /// A whole number within `limit`, or `default` when absent (and after an error).
    fn int(&mut self, path: &str, value: Option<i64>, default: u32, limit: Limit) -> u32 {
        match value {
            None => default,
            Some(v) => match limit.check(v as f64) {
                // Every integer limit lies within u32 (but the seed's, read elsewhere).
                Ok(_) => u32::try_from(v).unwrap_or(default),
                Err(message) => {
                    self.error(path, message, None);
                    default
                }
            },
        }
    }

    /// A number within `limit`, or `default` when absent (and after an error).
    fn num(&mut self, path: &str, value: Option<f64>, default: f64, limit: Limit) -> f64 {
        match value.map(|v| limit.check(v)) {
            None => default,
            Some(Ok(v)) => v,
            Some(Err(message)) => {
                self.error(path, message, None);
                default
            }
        }
    }

    /// A name that becomes part of step ids, file names, `--only` and report tables.
    fn name(&mut self, path: &str, what: &str, name: &str) {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.error(
                path,
                format!("{} is not a valid {what} name", quoted(name)),
                Some("start with a letter or digit, then use letters, digits, `-`, `_` and `.` (at most 64)".into()),
            );
        }
    }

    /// `[search]`: a known axis, a range of positive values, and how close to stop.
    /// Probes take the axis's type: whole numbers for batch sizes, a workload key that
    /// counts (`max-tokens`, `turns`, `warmup-requests`) and a server flag whose values
    /// are all whole numbers.
    fn search(&mut self, raw: raw::RawSearch, matrix: &Matrix, models: &BTreeMap<String, Model>) -> SearchSpec {
        let custom = matrix.custom.iter().find(|a| a.name == raw.axis);
        if raw.axis != "batch-size" && custom.is_none_or(|a| !a.values.iter().all(|v| v.is_number())) {
            let names: Vec<&str> = ["batch-size"]
                .into_iter()
                .chain(matrix.custom.iter().filter(|a| a.values.iter().all(|v| v.is_number())).map(|a| a.name.as_str()))
                .collect();
            let hint = closest(&raw.axis, names.iter().copied())
                .map(|b| format!("did you mean `{b}`?"))
                .unwrap_or_else(|| format!("one of: {}", names.join(", ")));
            self.error("search.axis", format!("`{}` is not an axis with numbers to search", raw.axis), Some(hint));
        }
        // The range is what the axis accepts: a batch size, or the workload key it feeds.
        let whole = |a: &CustomAxis| a.values.iter().all(|v| v.is_i64() || v.is_u64());
        let limit = match custom.map(|a| (&a.feeds, a)) {
            _ if raw.axis == "batch-size" => limits::BATCH_SIZE,
            Some((Feeds::Workload(key), _)) => limits::workload(key).unwrap_or(limits::SEARCH_VALUE),
            Some((Feeds::ServerFlag(_), a)) if whole(a) => limits::SEARCH_WHOLE_VALUE,
            _ => limits::SEARCH_VALUE,
        };
        let integer = limit.integer;
        let min = self.num("search.min", Some(raw.min), 1.0, limit);
        let max = self.num("search.max", Some(raw.max), min, limit);
        if max <= min {
            self.error("search.max", format!("must be above min ({min})"), None);
        } else if min <= 0.0 {
            // A workload key may take 0 (`warmup-requests`, `temperature`); twice 0 is 0.
            self.error(
                "search.min",
                "must be above 0: the walk starts at min and doubles it",
                Some(format!("for example min = {}", if integer { "1" } else { "0.1" })),
            );
        } else if (max / min).log2() > f64::from(SearchSpec::MAX_DOUBLINGS) {
            let most = SearchSpec::MAX_DOUBLINGS;
            self.error(
                "search.min",
                format!("min to max spans {:.0} doublings (at most {most}); the walk starts at min and doubles", (max / min).log2().ceil()),
                Some(format!("raise min to at least `{:.2e}` (max / 2^{most}), or lower max", max / 2f64.powi(most))),
            );
        }
        let objective = match raw.objective.as_deref() {
            None | Some("slo") => Objective::Slo,
            Some("goodput") => Objective::Goodput,
            Some(other) => {
                self.error(
                    "search.objective",
                    format!("unknown objective `{other}`"),
                    Some("one of: slo (the largest value within the SLO), goodput (the value of peak goodput)".into()),
                );
                Objective::Slo
            }
        };
        let tolerance = match raw.tolerance.map(|t| limits::SEARCH_TOLERANCE.check(t)) {
            None => 0.1,
            Some(Ok(t)) => t,
            Some(Err(message)) => {
                let hint = "the walk stops when the largest passing and the smallest failing value are this share apart: 0.01 is 1%; a finer answer is within the noise of the measurement";
                self.error("search.tolerance", message, Some(hint.into()));
                0.1
            }
        };
        self.search_models(matrix, models);
        SearchSpec {
            axis: raw.axis,
            objective,
            integer,
            min,
            max,
            tolerance,
            extra_seeds: self.int("search.extra-seeds", raw.extra_seeds, 2, limits::SEARCH_EXTRA_SEEDS),
        }
    }

    /// A search measures new probes; an `import` model's results are fixed files, so
    /// its walk could never go on.
    fn search_models(&mut self, matrix: &Matrix, models: &BTreeMap<String, Model>) {
        let included = matrix.include.iter().flat_map(|r| r.conditions.get("model").into_iter().flatten()).filter_map(|v| v.as_str());
        let mut used: Vec<&str> = matrix.models.iter().map(String::as_str).chain(included).collect();
        used.sort();
        used.dedup();
        for name in used {
            if models.get(name).is_some_and(|m| m.backend == Backend::Import) {
                self.error(
                    "search",
                    format!("model `{name}` is imported (`backend = \"import\"`): its results are fixed files, and a search measures new probes"),
                    Some(format!("search the models that run (launched, endpoint or hosted), and compare `{name}` in an experiment of its own without [search]")),
                );
            }
        }
    }

    fn slo(&mut self, raw: Option<raw::RawSlo>) -> Slo {
        let Some(raw) = raw else { return Slo::default() };
        let mut ms = |key: &str, v: Option<f64>| {
            let v = v?;
            let checked = self.num(&format!("report.slo.{key}"), Some(v), f64::NAN, limits::SLO_MS);
            (!checked.is_nan()).then_some(checked)
        };
        let slo = Slo {
            ttft_ms: ms("ttft-ms", raw.ttft_ms),
            tpot_ms: ms("tpot-ms", raw.tpot_ms),
            e2e_ms: ms("e2e-ms", raw.e2e_ms),
            attainment_pct: self.num("report.slo.attainment-pct", raw.attainment_pct, 90.0, limits::ATTAINMENT_PCT),
            quality: raw.quality.map(|q| self.num("report.slo.quality", Some(q), 0.0, limits::SLO_QUALITY)),
        };
        // A threshold that was given but refused has been reported already.
        let given = raw.ttft_ms.is_some() || raw.tpot_ms.is_some() || raw.e2e_ms.is_some() || raw.quality.is_some();
        if !given {
            self.error("report.slo", "sets no threshold", Some("set at least one of ttft-ms, tpot-ms, e2e-ms, quality".into()));
        }
        slo
    }

    /// `questions` and `images`: what the file's paths hold ([`inputs::read`]).
    fn experiment(
        &mut self,
        raw: raw::RawExperiment,
        questions: Vec<String>,
        images: Option<ImageFolder>,
        conversations: Option<ConversationFile>,
    ) -> Experiment {
        if raw.name.is_empty() || raw.name.len() > 64 || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.error(
                "name",
                format!("{} is not a valid experiment name", quoted(&raw.name)),
                Some("use letters, digits, `-` and `_` (at most 64)".into()),
            );
        }
        let models: BTreeMap<String, Model> = raw.models.into_iter().map(|(name, m)| (name.clone(), self.model(name, m))).collect();
        if models.is_empty() {
            self.error("models", "no models are defined", Some("add a table such as [models.qwen-3b] with backend = \"sim\"".into()));
        }
        let server = self.server(raw.server);
        if raw.workload.conversations.is_some() && raw.matrix.frames.is_some() {
            self.error(
                "matrix.frames",
                "sets images per turn of synthetic conversations, but `conversations` names a file",
                Some("remove frames: each turn of the file has its own images".into()),
            );
        }
        let workload = self.workload(raw.workload, questions, images, conversations);
        let matrix = self.matrix(raw.matrix, raw.axis, &models);
        if workload.arrival == Arrival::Closed
            && let Some(i) = matrix.custom.iter().position(|a| a.feeds == Feeds::Workload("request-rate".into()))
        {
            self.error(
                format!("axis[{i}].workload"),
                "sweeps `request-rate`, but arrival is closed-loop",
                Some("set arrival = \"poisson\" (or \"constant\") in [workload]".into()),
            );
        }
        let title = raw.report.title.clone().or(raw.title).unwrap_or_else(|| raw.name.clone());
        let slo = self.slo(raw.report.slo);
        let noise_pct = self.num("report.noise-pct", raw.report.noise_pct, 5.0, limits::NOISE_PCT);
        // Its values are the aggregate's metric names, checked with them (`commands`).
        let fail_on = raw.report.fail_on.unwrap_or_default();
        let report = ReportSettings {
            dir: PathBuf::from(raw.report.dir.unwrap_or_else(|| format!("reports/{}", raw.name))),
            title,
            templates: raw.report.templates.map(|t| self.source.base_dir.join(t)),
            slo,
            baseline: raw.report.baseline.map(|b| self.source.base_dir.join(b)),
            noise_pct,
            fail_on,
            provenance: String::new(),
        };
        let executor = match raw.executor.as_deref() {
            None | Some("local") => ExecutorKind::Local,
            Some("slurm") => ExecutorKind::Slurm,
            Some(other) => {
                self.error("executor", format!("unknown executor `{other}`"), Some("one of: local (default), slurm".into()));
                ExecutorKind::Local
            }
        };
        let slurm = self.slurm(raw.slurm.unwrap_or_default());
        let search = raw.search.map(|s| self.search(s, &matrix, &models));
        let quality = raw.quality.map(|q| self.quality(q, &workload, &matrix, executor));
        if let (Some(q), Some(_)) = (&quality, &search)
            && q.agreement.is_some()
        {
            self.error(
                "quality.agreement",
                "compares each variant with another's answers to the same cells, but `[search]` probes each curve at values of its own",
                Some("score against references (`score`) under a search, or sweep the axis instead of searching it".into()),
            );
        }
        if report.slo.quality.is_some() && quality.is_none() {
            self.error("report.slo.quality", "asks for a minimum quality, but nothing is scored", Some("add a [quality] table".into()));
        }
        Experiment {
            quality,
            literal_secrets: Default::default(),
            search,
            executor,
            slurm,
            name: raw.name,
            title: report.title.clone(),
            base_dir: self.source.base_dir.clone(),
            file: self.source.path.clone(),
            models,
            server,
            workload,
            matrix,
            report,
        }
    }

    /// An `import` model's `format` and `results` (seed → file; the files were read,
    /// and their digests taken, by [`inputs::read`]).
    fn import(&mut self, at: &str, name: &str, format: Option<&str>, results: BTreeMap<String, String>) -> Import {
        let names = ImportFormat::CHOICES.map(|(n, _)| n);
        let format = match format {
            None => {
                self.error(at, "backend `import` needs a `format`", Some(format!("one of: {}", names.join(", "))));
                ImportFormat::StudyCsv
            }
            Some(f) => match ImportFormat::CHOICES.iter().find(|(n, _)| *n == f) {
                Some((_, format)) => *format,
                None => {
                    let hint = closest(f, names.iter().copied()).map(|b| format!("did you mean `{b}`? (one of: {})", names.join(", ")));
                    self.error(
                        format!("{at}.format"),
                        format!("unknown format `{f}`"),
                        hint.or(Some(format!("one of: {}", names.join(", ")))),
                    );
                    ImportFormat::StudyCsv
                }
            },
        };
        if results.is_empty() {
            self.error(
                at,
                "backend `import` needs `results`, one file per seed",
                Some("for example results = { 1337 = \"results/run_1.csv\", 66 = \"results/run_2.csv\" }".into()),
            );
        }
        let mut files = BTreeMap::new();
        for (seed, written) in results {
            let Ok(n) = seed.parse::<u64>() else {
                self.error(
                    format!("{at}.results.{seed}"),
                    format!("`{seed}` is not a seed"),
                    Some("key each file by its seed, a whole number".into()),
                );
                continue;
            };
            // A file that could not be read is reported already.
            if let Some(digest) = self.results.get(&(name.to_string(), seed.clone())) {
                let path = self.source.base_dir.join(&written);
                files.insert(n, ImportFile { written, path, digest: digest.clone() });
            }
        }
        Import { format, files }
    }

    fn model(&mut self, name: String, m: raw::RawModel) -> Model {
        let at = format!("models.{name}");
        self.name(&at, "model", &name);
        self.model_at(&at, name, m)
    }

    /// The model of the table at `at` (a `[models]` entry, or `[quality] judge`).
    fn model_at(&mut self, at: &str, name: String, m: raw::RawModel) -> Model {
        let at = at.to_string();
        let backend = self.backend(&at, &m.backend);
        let model_id = m.model.clone().unwrap_or_else(|| name.clone());
        self.backend_needs(&at, backend, &m);
        if let Some(env) = &m.api_key_env {
            self.api_key_env(&at, backend, env);
        }
        if let Some(url) = &m.url {
            self.url(&format!("{at}.url"), url);
        }
        if let Some(s) = &m.served_name {
            self.text(&format!("{at}.served-name"), s);
        }
        let gpus = match m.gpus {
            None => None,
            Some(_) if !backend.launches() => {
                self.error(
                    format!("{at}.gpus"),
                    format!("backend `{}` runs elsewhere and holds no GPUs here", backend.name()),
                    Some("remove `gpus`".into()),
                );
                None
            }
            Some(n) => Some(self.int(&format!("{at}.gpus"), Some(n), 0, limits::GPUS)),
        };
        let (traces, otlp_receiver, send_traceparent) = self.tracing(&at, backend, &m);
        let variants = self.variants(&at, &model_id, m.sim.as_ref(), m.variants);
        if backend != Backend::Import && (m.format.is_some() || m.results.is_some()) {
            self.error(&at, "`format` and `results` are for backend `import`", Some("remove them, or set backend = \"import\"".into()));
        }
        let import = (backend == Backend::Import).then(|| self.import(&at, &name, m.format.as_deref(), m.results.unwrap_or_default()));
        if backend == Backend::Import && variants.len() > 1 {
            self.error(
                format!("{at}.variants"),
                "an imported model has no variants",
                Some("import each variant's results as a model of its own".into()),
            );
        }
        Model {
            traces,
            otlp_receiver,
            send_traceparent,
            import,
            served_name: m.served_name.unwrap_or_else(|| model_id.clone()),
            name,
            backend,
            url: m.url,
            api_key_env: m.api_key_env,
            command: m.command.map(|c| self.literals.take(&c)),
            port: m.port,
            gpus,
            variants,
        }
    }

    /// `traces`, `otlp-receiver` and `send-traceparent`, with their defaults filled in:
    /// the servers `pipeline` launches and can tell where to send spans (`vllm`, `sim`)
    /// trace; an `endpoint` server only towards a fixed `otlp-receiver` address; a
    /// hosted API gets a `traceparent` only when asked.
    fn tracing(&mut self, at: &str, backend: Backend, m: &raw::RawModel) -> (bool, Option<std::net::SocketAddr>, bool) {
        let receiver = m.otlp_receiver.as_deref().and_then(|text| {
            let addr = text.parse::<std::net::SocketAddr>().ok().filter(|a| a.port() != 0);
            if addr.is_none() {
                self.error(
                    format!("{at}.otlp-receiver"),
                    format!("`{}` is not an IP address and port", crate::untrusted::escaped(text, 80)),
                    Some("for example otlp-receiver = \"127.0.0.1:4318\" (the server is then started with --otlp-traces-endpoint http://127.0.0.1:4318/v1/traces)".into()),
                );
            }
            addr
        });
        if let Some(addr) = receiver {
            // Two models' servers measured at once cannot share one receiver: the
            // second could not listen there, and its spans would go to the first.
            if let Some(first) = self.receivers.get(&addr).cloned() {
                self.error(
                    format!("{at}.otlp-receiver"),
                    format!("`{addr}` is already the otlp-receiver of `{first}`"),
                    Some("give each endpoint model its own address (and start its server with --otlp-traces-endpoint to it)".into()),
                );
            } else {
                self.receivers.insert(addr, at.to_string());
            }
        }
        if receiver.is_some() && backend != Backend::Endpoint {
            self.error(
                format!("{at}.otlp-receiver"),
                format!("`otlp-receiver` is for backend `endpoint`; `{}` servers get a receiver on a free port", backend.name()),
                Some("remove `otlp-receiver`".into()),
            );
        }
        let traces = match (backend, m.traces) {
            (Backend::Sim | Backend::Vllm, t) => t.unwrap_or(true),
            (Backend::Endpoint, None) => receiver.is_some(),
            (Backend::Endpoint, Some(true)) if receiver.is_none() => {
                self.error(
                    format!("{at}.traces"),
                    "an `endpoint` server sends its spans to an address it was started with",
                    Some(
                        "set otlp-receiver = \"IP:PORT\" and start the server with --otlp-traces-endpoint http://IP:PORT/v1/traces".into(),
                    ),
                );
                false
            }
            (Backend::Endpoint, Some(t)) => t,
            (_, Some(true)) => {
                self.error(
                    format!("{at}.traces"),
                    format!("`pipeline` cannot tell a `{}` server where to send spans", backend.name()),
                    Some("traces are for `vllm`, `sim` and `endpoint` (with `otlp-receiver`) servers; remove `traces`".into()),
                );
                false
            }
            (_, _) => false,
        };
        let hosted = matches!(backend, Backend::Openai | Backend::Anthropic);
        let send_traceparent = match m.send_traceparent {
            Some(false) if !hosted => {
                self.error(
                    format!("{at}.send-traceparent"),
                    format!("a `{}` server always gets a `traceparent`", backend.name()),
                    Some("`send-traceparent` is for hosted APIs (`openai`, `anthropic`); remove it".into()),
                );
                true
            }
            Some(send) => send,
            None => !hosted,
        };
        (traces, receiver, send_traceparent && backend != Backend::Import)
    }

    /// The model's `backend` (the simulator, after an error, when it names none).
    fn backend(&mut self, at: &str, name: &str) -> Backend {
        match Backend::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, b)) => *b,
            None => {
                let names: Vec<&str> = Backend::ALL.iter().map(|(n, _)| *n).collect();
                let hint = closest(name, names.iter().copied())
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("one of: {}", names.join(", ")));
                self.error(format!("{at}.backend"), format!("unknown backend `{name}`"), Some(hint));
                Backend::Sim
            }
        }
    }

    /// The key each backend cannot do without.
    fn backend_needs(&mut self, at: &str, backend: Backend, m: &raw::RawModel) {
        match backend {
            Backend::Command if m.command.as_ref().is_none_or(|c| c.is_empty()) => self.error(
                at,
                "backend `command` needs a `command` template",
                Some("for example command = [\"my-server\", \"--port\", \"{port}\", \"--model\", \"{model}\"]".into()),
            ),
            Backend::Endpoint if m.url.is_none() => {
                self.error(at, "backend `endpoint` needs a `url`", Some("for example url = \"http://gpu-node:8000\"".into()))
            }
            Backend::Openai | Backend::Anthropic if m.api_key_env.is_none() => self.error(
                at,
                format!("backend `{}` needs `api-key-env`, the name of the variable holding the key", backend.name()),
                Some(format!("for example api-key-env = \"{}_API_KEY\"", backend.name().to_uppercase())),
            ),
            _ => {}
        }
    }

    /// `api-key-env` is the name of a variable, not the key. Neither message repeats
    /// the value: it may be the key itself.
    fn api_key_env(&mut self, at: &str, backend: Backend, env: &str) {
        let not_a_name = env.is_empty() || env.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let why = if not_a_name {
            "must be the *name* of an environment variable, not the key itself"
        } else if limits::looks_like_secret(env) {
            "looks like an API key, not the name of the variable that holds one (the value is not repeated here)"
        } else {
            return;
        };
        // The variable each API's own tools read.
        let var = match backend {
            Backend::Anthropic => "ANTHROPIC_API_KEY",
            Backend::Openai => "OPENAI_API_KEY",
            _ => "VLLM_API_KEY",
        };
        self.error(
            format!("{at}.api-key-env"),
            why,
            Some(format!("export the key in your shell (export {var}=...) and write its name: api-key-env = \"{var}\"")),
        );
    }

    /// `base` (the model's own settings) and each variant of the model at `at`.
    fn variants(
        &mut self,
        at: &str,
        model_id: &str,
        sim: Option<&raw::RawSim>,
        raw: BTreeMap<String, raw::RawVariant>,
    ) -> BTreeMap<String, Variant> {
        let sim = self.sim(&format!("{at}.sim"), &SimParams::default(), sim);
        let mut variants = BTreeMap::new();
        variants.insert(
            "base".to_string(),
            Variant { model: model_id.to_string(), quantization: None, dtype: None, extra_args: Vec::new(), sim: sim.clone() },
        );
        for (vname, v) in raw {
            let vat = format!("{at}.variants.{vname}");
            self.name(&vat, "variant", &vname);
            let sim = self.sim(&format!("{vat}.sim"), &sim, v.sim.as_ref());
            variants.insert(
                vname,
                Variant {
                    model: v.model.unwrap_or_else(|| model_id.to_string()),
                    quantization: v.quantization,
                    dtype: v.dtype,
                    extra_args: self.literals.take(&v.extra_args),
                    sim,
                },
            );
        }
        variants
    }

    /// `base` with the overrides of `raw` (at `path`), each checked where it differs.
    fn sim(&mut self, path: &str, base: &SimParams, raw: Option<&raw::RawSim>) -> SimParams {
        let merged = base.merged(raw);
        for ((key, v, limit), (_, was, _)) in merged.numbers().into_iter().zip(base.numbers()) {
            if v.to_bits() != was.to_bits()
                && let Err(message) = limit.check(v)
            {
                self.error(format!("{path}.{key}"), message, None);
            }
        }
        if let Some(q) = merged.quality
            && let Err(message) = limits::SIM_QUALITY.check(q)
        {
            self.error(format!("{path}.quality"), message, None);
        }
        merged
    }

    /// An `http://` or `https://` base URL without credentials in it ([`url_problem`]).
    fn url(&mut self, path: &str, text: &str) {
        if let Some((message, hint)) = url_problem(text) {
            self.error(path, message, Some(hint.into()));
        }
    }

    /// Free text that ends up in step ids or reports: one line, no control characters
    /// (newlines, or bidirectional overrides that make a report show what it does not say).
    fn text(&mut self, path: &str, text: &str) {
        if text.chars().any(is_unsafe_char) {
            self.error(path, format!("{} holds a line break or another control character", quoted(text)), None);
        }
    }

    fn slurm(&mut self, s: raw::RawSlurm) -> SlurmSettings {
        if let Some(t) = &s.time
            && slurm_minutes(t).is_none()
        {
            self.error(
                "slurm.time",
                format!("`{t}` is not a Slurm time limit"),
                Some("write minutes, HH:MM:SS or D-HH:MM:SS, e.g. time = \"02:00:00\" (2 hours)".into()),
            );
        }
        let cpu_steps_on_slurm =
            self.either("slurm.cpu-steps", s.cpu_steps.as_deref(), ("local", "on this machine"), ("slurm", "as small CPU jobs"));
        for (key, value) in [("partition", &s.partition), ("account", &s.account), ("gpu-type", &s.gpu_type), ("mem", &s.mem)] {
            if let Some(v) = value
                && (v.is_empty() || v.contains(char::is_whitespace))
            {
                self.error(format!("slurm.{key}"), format!("`{v}` is empty or has spaces"), None);
            }
        }
        SlurmSettings {
            partition: s.partition,
            account: s.account,
            time: s.time,
            gpu_type: s.gpu_type,
            mem: s.mem,
            cpus_per_task: s.cpus_per_task.map(|n| self.int("slurm.cpus-per-task", Some(n), 1, limits::CPUS_PER_TASK)),
            binary: s.binary.map(|b| self.source.base_dir.join(b)),
            sbatch_args: s.sbatch_args,
            cpu_steps_on_slurm,
        }
    }

    fn server(&mut self, s: raw::RawServer) -> ServerSettings {
        let startup = self.num("server.startup-timeout-s", s.startup_timeout_s, 600.0, limits::STARTUP_TIMEOUT_S);
        ServerSettings {
            tensor_parallel_size: self.int("server.tensor-parallel-size", s.tensor_parallel_size, 1, limits::TENSOR_PARALLEL),
            dtype: s.dtype.unwrap_or_else(|| "auto".into()),
            extra_args: self.literals.take(&s.extra_args),
            max_model_len: s.max_model_len.map(|n| self.int("server.max-model-len", Some(n), 1, limits::MAX_MODEL_LEN)),
            prefix_caching: s.prefix_caching,
            gpus: s.gpus,
            // In range, so it converts.
            startup_timeout: Duration::try_from_secs_f64(startup).unwrap_or(Duration::from_secs(600)),
        }
    }

    fn arrival(&mut self, arrival: Option<&str>, rate: Option<f64>) -> Arrival {
        let rate_ok = |r: f64| limits::REQUEST_RATE.contains(r);
        match (arrival.unwrap_or("closed"), rate) {
            ("closed", None) => Arrival::Closed,
            ("closed", Some(_)) => {
                self.error(
                    "workload.request-rate",
                    "only applies to open-loop arrival",
                    Some("add arrival = \"poisson\" (or \"constant\"), or remove request-rate".into()),
                );
                Arrival::Closed
            }
            (kind @ ("poisson" | "constant"), Some(rate)) if rate_ok(rate) => match kind {
                "poisson" => Arrival::Poisson { rate },
                _ => Arrival::Constant { rate },
            },
            ("poisson" | "constant", Some(rate)) => {
                self.num("workload.request-rate", Some(rate), 1.0, limits::REQUEST_RATE);
                Arrival::Closed
            }
            ("poisson" | "constant", None) => {
                self.error(
                    "workload.arrival",
                    "open-loop arrival needs `request-rate` (requests per second)",
                    Some("for example request-rate = 4.0".into()),
                );
                Arrival::Closed
            }
            // `trace`'s own keys are checked in [`trace`].
            ("trace", _) => Arrival::Trace { speedup: 1.0 },
            (other, _) => {
                self.error(
                    "workload.arrival",
                    format!("unknown arrival `{other}`"),
                    Some("one of: closed (default), poisson, constant, trace".into()),
                );
                Arrival::Closed
            }
        }
    }

    /// A key with two values, `default` (absent too) or `other`: whether it is `other`.
    fn either(&mut self, path: &str, value: Option<&str>, default: (&str, &str), other: (&str, &str)) -> bool {
        match value {
            None => false,
            Some(v) if v == default.0 => false,
            Some(v) if v == other.0 => true,
            Some(v) => {
                let hint = format!("one of: {} (default: {}), {} ({})", default.0, default.1, other.0, other.1);
                self.error(path, format!("unknown value `{v}`"), Some(hint));
                false
            }
        }
    }

    fn workload(
        &mut self,
        w: raw::RawWorkload,
        from_file: Vec<String>,
        images_dir: Option<ImageFolder>,
        conversations: Option<ConversationFile>,
    ) -> Workload {
        let (history, source_size) = self.conversations(&w);
        // With `source`, width and height mean nothing (refused without a file).
        let resolution = match w.resolution.as_deref() {
            None | Some("source") => "1280x720",
            Some(other) => other,
        };
        let (width, height) = match resolution.split_once('x') {
            Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                (Ok(a), Ok(b)) if a > 0 && b > 0 && a <= 8192 && b <= 8192 => (a, b),
                _ => {
                    self.error(
                        "workload.resolution",
                        "must be WIDTHxHEIGHT with sides from 1 to 8192",
                        Some("for example resolution = \"1280x720\"".into()),
                    );
                    (1280, 720)
                }
            },
            None => {
                self.error("workload.resolution", "must be WIDTHxHEIGHT", Some("for example resolution = \"1280x720\"".into()));
                (1280, 720)
            }
        };
        let mut questions = w.questions.unwrap_or_default();
        questions.extend(from_file);
        if questions.is_empty() {
            questions = DEFAULT_QUESTIONS.iter().map(|q| q.to_string()).collect();
        }
        let temperature = self.num("workload.temperature", w.temperature, 0.0, limits::TEMPERATURE);
        let share = self.num("workload.max-error-share", w.max_error_share, 0.05, limits::MAX_ERROR_SHARE);
        let arrival = self.arrival(w.arrival.as_deref(), w.request_rate);
        let frames_as_video = self.either(
            "workload.frames-as",
            w.frames_as.as_deref(),
            ("images", "one image part per frame"),
            ("video", "one video_url per turn"),
        );
        let images_by_id = self.either(
            "workload.image-reuse",
            w.image_reuse.as_deref(),
            ("resend", "every image every turn"),
            ("uuid", "each image once, then by id"),
        );
        let cache_isolation = match w.cache_isolation.as_deref() {
            None => CacheIsolation::Auto,
            Some(text) => CacheIsolation::parse(text).unwrap_or_else(|| {
                self.error("workload.cache-isolation", format!("unknown cache isolation {}", quoted(text)), Some(isolation_hint(text)));
                CacheIsolation::Auto
            }),
        };
        let timeout = self.num("workload.request-timeout-s", w.request_timeout_s, 120.0, limits::REQUEST_TIMEOUT_S);
        Workload {
            turns: self.int("workload.turns", w.turns, 60, limits::TURNS),
            width,
            height,
            questions,
            images_dir,
            max_tokens: self.int("workload.max-tokens", w.max_tokens, 32, limits::MAX_TOKENS),
            temperature,
            warmup_requests: self.int("workload.warmup-requests", w.warmup_requests, 1, limits::WARMUP_REQUESTS),
            // In range, so it converts.
            request_timeout: Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(120)),
            max_error_share: share,
            arrival,
            images_by_id,
            cache_isolation,
            metrics_interval_s: self.num("workload.metrics-interval-s", w.metrics_interval_s, 1.0, limits::METRICS_INTERVAL_S),
            frames_as_video,
            conversations: conversations.map(Arc::new),
            history,
            source_size,
            trace: None,
        }
    }

    /// `[quality]`: scorers by name, a reference variant that is in the matrix, and
    /// what each needs (references, temperature 0).
    fn quality(&mut self, q: raw::RawQuality, workload: &Workload, matrix: &Matrix, executor: ExecutorKind) -> QualitySpec {
        use crate::quality::Scorer;
        let mut scorers = Vec::new();
        for (i, name) in q.score.unwrap_or_default().iter().enumerate() {
            match Scorer::parse(name) {
                Some(s) => scorers.push(s),
                None => {
                    let names = Scorer::CHOICES.map(|(n, _)| n);
                    let near = names.iter().find(|n| strsim::jaro_winkler(n, name) > 0.8);
                    let hint = match near {
                        Some(n) => format!("did you mean `{n}`? (one of: {})", names.join(", ")),
                        None => format!("one of: {}", names.join(", ")),
                    };
                    self.error(format!("quality.score[{i}]"), format!("unknown scorer {}", quoted(name)), Some(hint));
                }
            }
        }
        let judge = q.judge.map(|j| self.judge(*j, executor));
        if judge.is_some() && workload.conversations.is_none() {
            self.error(
                "quality.judge",
                "a judge grades answers against reference answers, and synthetic conversations have none",
                Some("name a conversations file with assistant turns (`[workload] conversations`), or remove the judge".into()),
            );
        }
        if !scorers.is_empty() && workload.conversations.is_none() {
            self.error(
                "quality.score",
                "scorers compare answers with reference answers, and synthetic conversations have none",
                Some("name a conversations file with assistant turns (`[workload] conversations`), or use `agreement`".into()),
            );
        }
        if scorers.is_empty() && q.agreement.is_none() && judge.is_none() {
            self.error(
                "quality",
                "scores nothing",
                Some("name scorers (`score = [\"exact\"]`) against the recorded answers, a variant to agree with (`agreement = \"base\"`), or a judge".into()),
            );
        }
        if let Some(v) = &q.agreement {
            if !matrix.variants.contains(v) {
                let hint = format!("a variant of the matrix: {}", matrix.variants.join(", "));
                self.error("quality.agreement", format!("variant {} is not in the matrix", quoted(v)), Some(hint));
            }
            // The temperature of the file, or of an axis that sweeps it.
            let swept = matrix.custom.iter().filter(|a| a.feeds == Feeds::Workload("temperature".into())).flat_map(|a| &a.values);
            if workload.temperature != 0.0 || swept.filter_map(|v| v.as_f64()).any(|t| t != 0.0) {
                self.error(
                    "quality.agreement",
                    "compares answers to the same turn, which only means something at temperature 0",
                    Some("set [workload] temperature = 0 (and sweep no other temperature)".into()),
                );
            }
        }
        let number_tolerance = self.num("quality.number-tolerance", q.number_tolerance, 0.01, limits::NUMBER_TOLERANCE);
        QualitySpec { scorers, agreement: q.agreement, number_tolerance, judge }
    }

    /// `[quality] judge`: a model table of its own, whose one server answers the judge
    /// prompts. Not an import (it must answer), no variants (there is one judge), and not
    /// launched by a Slurm run (a launched judge would need a job of its own).
    fn judge(&mut self, m: raw::RawModel, executor: ExecutorKind) -> Model {
        let at = "quality.judge";
        let has_variants = !m.variants.is_empty();
        let judge = self.model_at(at, "judge".into(), m);
        if judge.backend == Backend::Import {
            self.error(
                format!("{at}.backend"),
                "a judge must answer prompts, and backend `import` reads recorded results",
                Some("use a backend that answers: `openai`, `anthropic`, `endpoint`, `vllm`, `command` or `sim`".into()),
            );
        }
        if has_variants {
            self.error(
                format!("{at}.variants"),
                "a judge has no variants",
                Some("remove `variants`: one model judges every answer".into()),
            );
        }
        if executor == ExecutorKind::Slurm && judge.backend.launches() {
            self.error(
                format!("{at}.backend"),
                format!("a judge that `pipeline` launches (backend `{}`) cannot run under `executor = \"slurm\"`", judge.backend.name()),
                Some("judge with a hosted API (`openai`, `anthropic`) or a server someone else runs (`endpoint`), or run locally".into()),
            );
        }
        judge
    }

    /// What `conversations` rules out (the keys that describe synthetic conversations)
    /// and brings (`history`, `resolution = "source"`, its default then): the history
    /// mode and whether images keep their size.
    fn conversations(&mut self, w: &raw::RawWorkload) -> (History, bool) {
        if let Some(format) = &w.conversations_format
            && Format::parse(format).is_none()
        {
            self.error(
                "workload.conversations-format",
                format!("unknown format {}", quoted(format)),
                Some("one of: openai (JSON lines of {\"messages\": …}), llava (a JSON array of {\"conversations\": …})".into()),
            );
        }
        let history = match w.history.as_deref() {
            None | Some("live") => History::Live,
            Some("recorded") => History::Recorded,
            Some(other) => {
                let hint = "one of: live (default: the server's own answers), recorded (the file's assistant turns)";
                self.error("workload.history", format!("unknown value {}", quoted(other)), Some(hint.into()));
                History::Live
            }
        };
        let source = w.resolution.as_deref() == Some("source");
        if w.conversations.is_none() {
            if w.history.is_some() || w.conversations_format.is_some() {
                let key = if w.history.is_some() { "workload.history" } else { "workload.conversations-format" };
                self.error(key, "only applies to conversations from a file", Some("add conversations = \"FILE\", or remove it".into()));
            }
            if source {
                let hint = "resolution = \"source\" keeps the size of a conversations file's images; synthetic images need WIDTHxHEIGHT";
                self.error("workload.resolution", "`source` needs conversations from a file", Some(hint.into()));
            }
            return (History::Live, false);
        }
        let synthetic = [
            ("workload.questions", w.questions.is_some()),
            ("workload.questions-file", w.questions_file.is_some()),
            ("workload.images-dir", w.images_dir.is_some()),
            ("workload.frames-as", w.frames_as.is_some()),
        ];
        for (key, set) in synthetic {
            if set {
                self.error(
                    key,
                    "describes synthetic conversations, but `conversations` names a file",
                    Some("remove it: the file gives each turn's text and images".into()),
                );
            }
        }
        (history, source || w.resolution.is_none())
    }

    fn matrix(&mut self, m: raw::RawMatrix, axes: Vec<raw::RawAxis>, models: &BTreeMap<String, Model>) -> Matrix {
        let variants = self.models_and_variants(&m.model, m.variant, models);
        let seeds = self.int_axis("seed", m.seed, 0, limits::SEED);
        // Within their limits, so they fit a u32.
        let small = |values: Vec<u64>| values.into_iter().filter_map(|x| u32::try_from(x).ok()).collect();
        let batch_sizes = small(self.int_axis("batch-size", m.batch_size, 1, limits::BATCH_SIZE));
        let frames = small(self.int_axis("frames", m.frames, 1, limits::FRAMES));
        let mut custom: Vec<CustomAxis> = Vec::new();
        for (i, a) in axes.into_iter().enumerate() {
            let axis = self.custom_axis(&format!("axis[{i}]"), a, &custom);
            custom.push(axis);
        }
        let exclude = self.rules("exclude", m.exclude, &custom, models);
        let include = self.rules("include", m.include, &custom, models);
        Matrix { models: m.model, variants, seeds, batch_sizes, frames, custom, exclude, include }
    }

    /// `matrix.model` names defined models and `matrix.variant` variants one of them
    /// defines; the variants (`base` when the key is left out).
    fn models_and_variants(&mut self, names: &[String], variants: Option<Vec<String>>, models: &BTreeMap<String, Model>) -> Vec<String> {
        if names.is_empty() {
            self.error("matrix.model", "axis is empty", Some("list at least one model defined under [models]".into()));
        }
        for (i, name) in names.iter().enumerate() {
            if !models.contains_key(name) {
                let hint = match closest(name, models.keys().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("define [models.{name}], or use one of: {}", models.keys().cloned().collect::<Vec<_>>().join(", ")),
                };
                self.error(format!("matrix.model[{i}]"), format!("model `{name}` is not defined"), Some(hint));
            }
        }
        self.no_repeats("matrix.model", names);
        let variants = variants.unwrap_or_else(|| vec!["base".into()]);
        self.no_repeats("matrix.variant", &variants);
        if variants.is_empty() {
            self.error("matrix.variant", "axis is empty", Some("remove it to use only `base`".into()));
        }
        for (i, v) in variants.iter().enumerate() {
            let defined = names.iter().filter_map(|n| models.get(n)).any(|model| model.variants.contains_key(v));
            if !defined {
                let all = names.iter().filter_map(|n| models.get(n)).flat_map(|model| model.variants.keys().map(String::as_str));
                let hint = match closest(v, all) {
                    Some(c) => format!("did you mean `{c}`? (or add [models.NAME.variants.{v}])"),
                    None => format!("add [models.NAME.variants.{v}]"),
                };
                self.error(format!("matrix.variant[{i}]"), format!("no model in the matrix defines variant `{v}`"), Some(hint));
            }
        }
        variants
    }

    /// A numeric axis (`matrix.seed`, `batch-size`, `frames`): the values in range, an
    /// error for each one that is not.
    fn int_axis(&mut self, key: &str, values: Option<Vec<i64>>, default: i64, limit: Limit) -> Vec<u64> {
        let values = values.unwrap_or_else(|| vec![default]);
        if values.is_empty() {
            self.error(
                format!("matrix.{key}"),
                "axis is empty",
                Some(format!("list at least one value, or remove the key for the default [{default}]")),
            );
        }
        self.no_repeats(&format!("matrix.{key}"), &values);
        let mut ok = Vec::new();
        for (i, x) in values.into_iter().enumerate() {
            match (limit.check(x as f64), u64::try_from(x)) {
                (Ok(_), Ok(x)) => ok.push(x),
                (Err(message), _) => self.error(format!("matrix.{key}[{i}]"), message, None),
                (Ok(_), Err(_)) => self.error(format!("matrix.{key}[{i}]"), format!("must be {limit}, found `{x}`"), None),
            }
        }
        ok
    }

    /// One `[[axis]]` table at `at`, given the ones before it.
    fn custom_axis(&mut self, at: &str, a: raw::RawAxis, before: &[CustomAxis]) -> CustomAxis {
        self.name(&format!("{at}.name"), "axis", &a.name);
        if BUILTIN_AXES.contains(&a.name.as_str()) || before.iter().any(|c| c.name == a.name) {
            self.error(format!("{at}.name"), format!("axis `{}` is already defined", a.name), None);
        }
        if a.values.is_empty() {
            self.error(format!("{at}.values"), "axis is empty", None);
        }
        for (j, v) in a.values.iter().enumerate() {
            self.custom_value(&format!("{at}.values[{j}]"), a.workload.as_deref(), v);
        }
        self.no_repeats(&format!("{at}.values"), &a.values);
        if let Some(flag) = a.server_flag.as_deref().filter(|f| crate::secrets::SECRET_FLAGS.contains(f)) {
            self.error(
                format!("{at}.server-flag"),
                format!("`{flag}` carries a secret, and an axis's values are written into step ids, plans and reports"),
                Some("put the key in an environment variable and name it with `api-key-env`".into()),
            );
        }
        let feeds = match (a.server_flag, a.workload) {
            (Some(flag), None) => Feeds::ServerFlag(flag),
            (None, Some(key)) if WORKLOAD_AXES.contains(&key.as_str()) => Feeds::Workload(key),
            (None, Some(key)) => {
                self.error(
                    format!("{at}.workload"),
                    format!("`{key}` is not a workload parameter an axis can set"),
                    Some(format!("one of: {}", WORKLOAD_AXES.join(", "))),
                );
                Feeds::Workload(key)
            }
            _ => {
                self.error(
                    at,
                    "an axis feeds exactly one of `server-flag` or `workload`",
                    Some("for example server-flag = \"--max-num-seqs\"".into()),
                );
                Feeds::ServerFlag(String::new())
            }
        };
        CustomAxis { name: a.name, values: a.values, feeds }
    }

    /// `matrix.exclude` or `matrix.include` (`kind`): each rule names axes, and values
    /// each axis could take.
    fn rules(
        &mut self,
        kind: &str,
        raw: Vec<BTreeMap<String, serde_json::Value>>,
        custom: &[CustomAxis],
        models: &BTreeMap<String, Model>,
    ) -> Vec<Rule> {
        let axis_names: Vec<String> = BUILTIN_AXES.iter().map(|s| s.to_string()).chain(custom.iter().map(|c| c.name.clone())).collect();
        let mut rules = Vec::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let key_path = KeyPath::parse(&format!("matrix.{kind}[{i}]"));
            if entry.is_empty() {
                self.error(
                    key_path.to_string(),
                    format!("an empty {kind} rule matches every cell"),
                    Some("name at least one axis, e.g. { model = \"claude\", frames = 128 }".into()),
                );
            }
            let mut conditions = BTreeMap::new();
            for (axis, value) in entry {
                if !axis_names.contains(&axis) {
                    let hint = closest(&axis, axis_names.iter().map(String::as_str))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| format!("axes: {}", axis_names.join(", ")));
                    self.error(format!("{key_path}.{axis}"), format!("`{axis}` is not an axis"), Some(hint));
                }
                let values = match value {
                    serde_json::Value::Array(a) => a,
                    other => vec![other],
                };
                for (j, value) in values.iter().enumerate() {
                    self.rule_value(&format!("{key_path}.{axis}[{j}]"), &axis, value, custom, models);
                }
                conditions.insert(axis, values);
            }
            rules.push(Rule { key_path, conditions });
        }
        rules
    }

    /// A value a rule gives `axis`. An include rule can add values the axis does not
    /// list: each passes the same check as the axis's own.
    fn rule_value(&mut self, path: &str, axis: &str, value: &serde_json::Value, custom: &[CustomAxis], models: &BTreeMap<String, Model>) {
        match axis {
            "seed" => self.limited(path, limits::SEED, value),
            "batch-size" => self.limited(path, limits::BATCH_SIZE, value),
            "frames" => self.limited(path, limits::FRAMES, value),
            "model" | "variant" => self.rule_name(path, axis, value, models),
            _ => {
                if let Some(c) = custom.iter().find(|c| c.name == axis) {
                    let workload = match &c.feeds {
                        Feeds::Workload(key) => Some(key.as_str()),
                        Feeds::ServerFlag(_) => None,
                    };
                    self.custom_value(path, workload, value);
                }
            }
        }
    }

    /// One value of a custom axis (or of an include rule for it): what the workload key
    /// it feeds takes, else any one-line string, number or boolean.
    fn custom_value(&mut self, path: &str, workload: Option<&str>, v: &serde_json::Value) {
        match (v, workload) {
            (serde_json::Value::Array(_) | serde_json::Value::Object(_) | serde_json::Value::Null, _) => {
                self.error(path, "values must be strings, numbers or booleans", None)
            }
            (_, Some("cache-isolation")) => {
                let text = v.as_str().unwrap_or_default();
                if CacheIsolation::parse(text).is_none() {
                    self.error(path, format!("unknown cache isolation {}", quoted(text)), Some(isolation_hint(text)));
                }
            }
            (_, Some(key)) => {
                if let Some(Err(message)) = limits::workload(key).map(|l| l.check_json(v)) {
                    self.error(path, message, Some(format!("the values set `{key}`, and take what `{key}` takes")));
                }
            }
            (serde_json::Value::String(text), None) => self.text(path, text),
            _ => {}
        }
    }

    /// A seed, batch size or frame count written in a rule.
    fn limited(&mut self, path: &str, limit: Limit, v: &serde_json::Value) {
        if let Err(message) = limit.check_json(v) {
            self.error(path, message, None);
        }
    }

    /// A model or variant named in a rule: one the experiment defines.
    fn rule_name(&mut self, path: &str, axis: &str, v: &serde_json::Value, models: &BTreeMap<String, Model>) {
        let name = v.as_str().unwrap_or_default();
        let known: Vec<&str> = if axis == "model" {
            models.keys().map(String::as_str).collect()
        } else {
            let mut all: Vec<&str> = models.values().flat_map(|m| m.variants.keys().map(String::as_str)).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        if !known.contains(&name) {
            let hint = closest(name, known.iter().copied())
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| format!("one of: {}", known.join(", ")));
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            self.error(path, format!("{axis} {} is not defined", quoted(&shown)), Some(hint));
        }
    }

    /// A value listed twice would be merged into one cell without a word.
    ///
    /// Values are told apart by their JSON text (a list can hold as many values as a
    /// 4 MB file: comparing each with every earlier one took 15 s for 400,000 seeds).
    fn no_repeats<T: Serialize>(&mut self, path: &str, values: &[T]) {
        let mut seen = std::collections::HashSet::with_capacity(values.len());
        for (j, x) in values.iter().enumerate() {
            let shown = serde_json::to_string(x).unwrap_or_default();
            if seen.contains(&shown) {
                self.error(format!("{path}[{j}]"), format!("{} is listed twice", quoted(&shown)), Some("remove the repeat".into()));
            } else {
                seen.insert(shown);
            }
        }
    }
}

/// What is wrong with `text` as a server's base URL (the message and a hint), if
/// anything: it must be `http://` or `https://` with a host, and hold no credentials,
/// query string or fragment, since a URL is written into step keys, logs and reports.
pub fn url_problem(text: &str) -> Option<(String, &'static str)> {
    match reqwest::Url::parse(text) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => Some((
            "holds a user name or password; they would be written into step keys, logs and reports".into(),
            "remove them from the URL and put the key in the variable named by `api-key-env`",
        )),
        Ok(url) if url.query().is_some() || url.fragment().is_some() => Some((
            "holds a query string or fragment; a base URL takes neither (request paths are appended to it), and a `key=` or `token=` there would be written into step keys, logs and reports".into(),
            "remove everything from `?` on; put a key in the variable named by `api-key-env`",
        )),
        Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
            Some((format!("{} is not an http:// or https:// address", quoted(text)), "for example url = \"http://gpu-node:8000\""))
        }
        Ok(_) => None,
        Err(e) => Some((format!("is not a URL ({e})"), "for example url = \"http://gpu-node:8000\"")),
    }
}

mod trace;

#[cfg(test)]
mod tests;
