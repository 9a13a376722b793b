//! `arrival = "trace"`: the keys a trace replay takes (`trace`, `trace-speedup`) and
//! the ones it refuses. A trace fixes every request's time, prompt length and answer
//! length, and its prompts are token ids without text or images, so the options that
//! shape the synthetic conversation, its load (`batch-size`, `request-rate`) or its
//! answers (`max-tokens`) would be silently ignored: each is an error naming the fix.
//! Hosted APIs take no token ids (and no `ignore_eos`), so they are refused rather
//! than sent an approximate prompt.

use super::*;

/// The workload keys a trace replay refuses, and why each does not apply.
const REFUSED: [(&str, &str); 12] = [
    ("request-rate", "the trace's timestamps set when requests go out (`trace-speedup` scales them)"),
    ("turns", "each line of the trace is one request, sent without history"),
    ("max-tokens", "each request's `output_length` is its `max_tokens`"),
    ("questions", "trace prompts are token ids, without text or images"),
    ("questions-file", "trace prompts are token ids, without text or images"),
    ("images-dir", "trace prompts are token ids, without text or images"),
    ("resolution", "trace prompts are token ids, without text or images"),
    ("image-reuse", "trace prompts are token ids, without text or images"),
    ("frames-as", "trace prompts are token ids, without text or images"),
    ("conversations", "a trace replays requests, not conversations: use one or the other"),
    ("conversations-format", "a trace replays requests, not conversations: use one or the other"),
    ("history", "each line of the trace is one request, sent without history"),
];

/// What the file wrote that a trace replay looks at, taken before validation
/// consumes the raw structs.
pub(super) struct Written {
    trace: Option<String>,
    speedup: Option<f64>,
    /// `[workload]` keys of [`REFUSED`] that the file sets.
    refused: Vec<&'static str>,
    /// Whether `matrix.batch-size` and `matrix.frames` are written (not defaulted).
    batch_size: bool,
    frames: bool,
    /// `(kind, index, axis)` of every include/exclude rule naming `batch-size` or `frames`.
    rules: Vec<(&'static str, usize, String)>,
}

impl Written {
    pub(super) fn of(raw: &raw::RawExperiment) -> Written {
        let w = &raw.workload;
        let set = [
            w.request_rate.is_some(),
            w.turns.is_some(),
            w.max_tokens.is_some(),
            w.questions.is_some(),
            w.questions_file.is_some(),
            w.images_dir.is_some(),
            w.resolution.is_some(),
            w.image_reuse.is_some(),
            w.frames_as.is_some(),
            w.conversations.is_some(),
            w.conversations_format.is_some(),
            w.history.is_some(),
        ];
        let refused = REFUSED.iter().zip(set).filter(|(_, set)| *set).map(|((key, _), _)| *key).collect();
        let mut rules = Vec::new();
        for (kind, list) in [("include", &raw.matrix.include), ("exclude", &raw.matrix.exclude)] {
            for (i, rule) in list.iter().enumerate() {
                rules.extend(rule.keys().filter(|k| *k == "batch-size" || *k == "frames").map(|k| (kind, i, k.clone())));
            }
        }
        Written {
            trace: w.trace.clone(),
            speedup: w.trace_speedup,
            refused,
            batch_size: raw.matrix.batch_size.is_some(),
            frames: raw.matrix.frames.is_some(),
            rules,
        }
    }
}

impl Validator<'_> {
    /// Check the trace keys against `arrival`, refuse what does not apply, and set the
    /// workload's trace (`file`: read by [`inputs::read`], `None` if it could not be).
    pub(super) fn trace(&mut self, exp: &mut Experiment, written: Written, file: Option<crate::trace::TraceFile>) {
        let tracing = matches!(exp.workload.arrival, Arrival::Trace { .. });
        let swept = |key: &str| exp.matrix.custom.iter().position(|a| a.feeds == Feeds::Workload(key.into()));
        if !tracing {
            let hint = || Some("add arrival = \"trace\" to [workload], or remove it".to_string());
            if written.trace.is_some() {
                self.error("workload.trace", "only applies to arrival = \"trace\"", hint());
            }
            if written.speedup.is_some() {
                self.error("workload.trace-speedup", "only applies to arrival = \"trace\"", hint());
            }
            if let Some(i) = swept("trace-speedup") {
                self.error(format!("axis[{i}].workload"), "sweeps `trace-speedup`, but arrival is not `trace`", hint());
            }
            return;
        }
        if written.trace.is_none() {
            self.error(
                "workload.arrival",
                "`trace` arrival needs `trace`, the file to replay",
                Some("for example trace = \"experiments/data/trace.jsonl\" (relative to the project root)".into()),
            );
        }
        let speedup = self.num("workload.trace-speedup", written.speedup, 1.0, crate::trace::SPEEDUP);
        for key in written.refused {
            let why = REFUSED.iter().find(|(k, _)| *k == key).map_or("", |(_, why)| why);
            self.error(format!("workload.{key}"), format!("does not apply to a trace replay: {why}"), Some(format!("remove `{key}`")));
        }
        let load = "the trace sets how many requests are in flight (`trace-speedup` scales its pace)";
        if written.batch_size {
            self.error("matrix.batch-size", format!("does not apply to a trace replay: {load}"), Some("remove `batch-size`".into()));
        }
        if written.frames {
            self.error(
                "matrix.frames",
                "does not apply to a trace replay: trace prompts are token ids, without images",
                Some("remove `frames`".into()),
            );
        }
        for (kind, i, axis) in written.rules {
            self.error(
                format!("matrix.{kind}[{i}].{axis}"),
                format!("`{axis}` does not apply to a trace replay"),
                Some(format!("remove `{axis}` from the rule")),
            );
        }
        for key in ["request-rate", "turns", "max-tokens"] {
            if let Some(i) = swept(key) {
                let why = REFUSED.iter().find(|(k, _)| *k == key).map_or("", |(_, why)| why);
                self.error(
                    format!("axis[{i}].workload"),
                    format!("sweeps `{key}`, which does not apply to a trace replay: {why}"),
                    Some("sweep `trace-speedup` instead, or remove the axis".into()),
                );
            }
        }
        if exp.search.as_ref().is_some_and(|s| s.axis == "batch-size") {
            self.error(
                "search.axis",
                format!("`batch-size` does not apply to a trace replay: {load}"),
                Some("search an [[axis]] with workload = \"trace-speedup\" instead".into()),
            );
        }
        let mut hosted: Vec<(&String, Backend)> = exp
            .matrix
            .models
            .iter()
            .filter_map(|name| exp.models.get(name).map(|m| (name, m.backend)))
            .filter(|(_, b)| matches!(b, Backend::Openai | Backend::Anthropic))
            .collect();
        hosted.dedup();
        for (name, backend) in hosted {
            self.error(
                format!("models.{name}.backend"),
                format!(
                    "a trace replay sends exact prompts as token ids to `/v1/completions` with `ignore_eos`, which the hosted `{backend}` API does not take"
                ),
                Some("replay traces on vllm, sim, command or endpoint servers; measure hosted APIs with arrival = \"poisson\"".into()),
            );
        }
        exp.workload.arrival = Arrival::Trace { speedup };
        exp.workload.trace = file;
    }
}
