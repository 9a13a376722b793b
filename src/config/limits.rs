//! The accepted range of every number an experiment file can set, defined once.
//!
//! A value outside its range is a user error with file, line and column, never a
//! panic or a silent truncation (`4294967297 as u32` is 1). The bounds are wide enough
//! for any real study and narrow enough that nothing downstream overflows: durations
//! fit a `Duration`, counts fit a `u32`, and the data a step generates fits a disk.
//! The same [`Limit`] checks a key in `[workload]` and an `[[axis]]` value that sets
//! it, so the two cannot disagree. docs/experiment-file.md lists every bound.

use std::fmt;

/// Most cells one experiment may expand to. Planning 100,000 cached cells takes about
/// 2 s and 350 MB (README, "Speed of the engine"); a study bigger than that is several
/// experiments.
pub const MAX_CELLS: u64 = 100_000;

/// Largest experiment (or questions) file read. Real ones are a few kB; the cap keeps
/// `/dev/zero` or a mistyped path to a dataset from reading until memory runs out.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Largest results file an `import` model reads (it is read whole). An AIPerf export of
/// 100,000 requests with their chunk gaps is about 150 MB; more than this is another
/// file (`/dev/urandom`, a dataset) or a run to split into seeds.
pub const MAX_IMPORT_BYTES: u64 = 256 << 20;

/// Most requests one results file may hold: ten times the biggest real run we know of,
/// and within what the aggregate handles in seconds.
pub const MAX_IMPORT_ROWS: usize = 1_000_000;

/// The longest a run recorded in one results file may span, first request sent to last
/// answer, in seconds: a week. Timestamps further apart are corrupt (a value near
/// 2⁶⁴, a clock of another epoch), and would give a throughput of almost nothing.
pub const MAX_IMPORT_SPAN_S: f64 = 7.0 * 86_400.0;

/// A closed range of accepted numbers, optionally whole numbers only, optionally with
/// an open lower end (strictly above `lo`) or upper end (strictly below `hi`).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub lo: f64,
    pub hi: f64,
    pub integer: bool,
    pub lo_open: bool,
    pub hi_open: bool,
    /// What the number counts or measures, for messages ("seconds").
    pub unit: &'static str,
}

impl Limit {
    pub const fn int(lo: i64, hi: i64, unit: &'static str) -> Limit {
        Limit { lo: lo as f64, hi: hi as f64, integer: true, lo_open: false, hi_open: false, unit }
    }

    pub const fn num(lo: f64, hi: f64, unit: &'static str) -> Limit {
        Limit { lo, hi, integer: false, lo_open: false, hi_open: false, unit }
    }

    /// Strictly above `lo` (a duration or a rate that must be positive).
    pub const fn above(self) -> Limit {
        Limit { lo_open: true, ..self }
    }

    /// Strictly below `hi` (jitter must stay below 1).
    pub const fn below(self) -> Limit {
        Limit { hi_open: true, ..self }
    }

    pub fn contains(&self, v: f64) -> bool {
        let lo_ok = if self.lo_open { v > self.lo } else { v >= self.lo };
        let hi_ok = if self.hi_open { v < self.hi } else { v <= self.hi };
        v.is_finite() && lo_ok && hi_ok && (!self.integer || v.fract() == 0.0)
    }

    /// `Ok(v)` when `v` is in range, else the message ("must be … , found `x`").
    pub fn check(&self, v: f64) -> Result<f64, String> {
        if self.contains(v) { Ok(v) } else { Err(format!("must be {self}, found `{}`", show(v))) }
    }

    /// A JSON value (an `[[axis]]` value): a number in range, whole where it must be.
    pub fn check_json(&self, v: &serde_json::Value) -> Result<f64, String> {
        let x = match v {
            serde_json::Value::Number(n) if self.integer && !(n.is_i64() || n.is_u64()) => {
                return Err(format!("must be {self}, found `{n}` (not a whole number)"));
            }
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => return Err(format!("must be {self}, found `{other}` (not a number)")),
        };
        self.check(x)
    }
}

/// Numbers as people write them: 10000 as 10,000; no exponent below 1e15.
fn show(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = count(v.abs() as u128);
        if v < 0.0 { format!("-{digits}") } else { digits }
    } else if v.is_finite() && v != 0.0 && !(1e-4..1e15).contains(&v.abs()) {
        // 1e20 and 1e-300, not twenty digits or three hundred zeros.
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A count with thousands separators: 1,000,000.
pub fn count(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Limit {
    /// "a whole number from 1 to 10,000 (turns)", "a number above 0 and at most 86,400 (seconds)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.integer { "a whole number" } else { "a number" };
        let (lo, hi) = (show(self.lo), show(self.hi));
        let range = match (self.lo_open, self.hi_open) {
            (false, false) => format!("from {lo} to {hi}"),
            (true, false) => format!("above {lo} and at most {hi}"),
            (false, true) => format!("at least {lo} and below {hi}"),
            (true, true) => format!("above {lo} and below {hi}"),
        };
        write!(f, "{kind} {range} ({})", self.unit)
    }
}

pub const SEED: Limit = Limit::int(0, i64::MAX, "seed");
pub const BATCH_SIZE: Limit = Limit::int(1, 10_000, "concurrent conversations");
/// A searched value of an axis that feeds a server flag: any positive number.
pub const SEARCH_VALUE: Limit = Limit::num(0.0, 1e12, "value of the axis").above();
/// A searched value of a server flag whose values are whole numbers (`--max-num-seqs`).
pub const SEARCH_WHOLE_VALUE: Limit = Limit::int(1, 1_000_000_000_000, "value of the axis");
/// From 1e-4: the walk bisects down to it, and a finer gap is below any measurement's
/// noise (and, at 1e-300, below the gap between adjacent floats: the walk never ended).
pub const SEARCH_TOLERANCE: Limit = Limit::num(1e-4, 1.0, "share of the value");
pub const SEARCH_EXTRA_SEEDS: Limit = Limit::int(0, 16, "seeds");
/// 0: text-only turns, a turn is its question (or passage) alone.
pub const FRAMES: Limit = Limit::int(0, 1_024, "images per turn");
pub const TURNS: Limit = Limit::int(1, 10_000, "turns per conversation");
pub const MAX_TOKENS: Limit = Limit::int(1, 1_000_000, "tokens per answer");
pub const WARMUP_REQUESTS: Limit = Limit::int(0, 10_000, "requests");
pub const TEMPERATURE: Limit = Limit::num(0.0, 2.0, "sampling temperature");
/// From one request every 1,000 s; the whole open-loop schedule must fit a `Duration`.
pub const REQUEST_RATE: Limit = Limit::num(0.001, 100_000.0, "requests per second");
pub const MAX_ERROR_SHARE: Limit = Limit::num(0.0, 1.0, "share of requests");
/// A day: any longer and the run is stuck, not slow.
pub const REQUEST_TIMEOUT_S: Limit = Limit::num(0.0, 86_400.0, "seconds").above();
pub const STARTUP_TIMEOUT_S: Limit = Limit::num(0.0, 86_400.0, "seconds").above();
pub const TENSOR_PARALLEL: Limit = Limit::int(1, 64, "GPUs");
pub const GPUS: Limit = Limit::int(0, 64, "GPUs");
pub const MAX_MODEL_LEN: Limit = Limit::int(1, 100_000_000, "tokens");
pub const CPUS_PER_TASK: Limit = Limit::int(1, 100_000, "CPUs");
pub const NOISE_PCT: Limit = Limit::num(0.0, 100.0, "percent").below();
pub const SLO_MS: Limit = Limit::num(0.0, 86_400_000.0, "milliseconds").above();
pub const ATTAINMENT_PCT: Limit = Limit::num(0.0, 100.0, "percent of requests").above();

/// The simulator's latency model (`sim = { … }`, and `pipeline sim-server`'s flags).
/// 0: scrape `/metrics` at a cell's start and end only.
pub const METRICS_INTERVAL_S: Limit = Limit::num(0.0, 3600.0, "seconds");
pub const SIM_BASE_MS: Limit = Limit::num(0.0, 600_000.0, "milliseconds");
pub const SIM_US_PER: Limit = Limit::num(0.0, 1_000_000.0, "microseconds");
/// Each duration is scaled by `1 ± jitter`; at 1 or more it could reach zero or below.
pub const SIM_JITTER: Limit = Limit::num(0.0, 1.0, "relative jitter").below();
pub const SLO_QUALITY: Limit = Limit::num(0.0, 1.0, "score");
pub const NUMBER_TOLERANCE: Limit = Limit::num(0.0, 1.0, "relative tolerance");
pub const SIM_QUALITY: Limit = Limit::num(0.0, 1.0, "probability of the canonical answer");
pub const SIM_ANSWER_TOKENS: Limit = Limit::int(1, 1_000_000, "tokens per answer");

/// The limit of a workload parameter an `[[axis]]` may set (see `WORKLOAD_AXES`).
pub fn workload(key: &str) -> Option<Limit> {
    Some(match key {
        "turns" => TURNS,
        "max-tokens" => MAX_TOKENS,
        "warmup-requests" => WARMUP_REQUESTS,
        "temperature" => TEMPERATURE,
        "request-rate" => REQUEST_RATE,
        "trace-speedup" => crate::trace::SPEEDUP,
        _ => return None,
    })
}

/// Whether `text` looks like an API key rather than the name of the variable holding
/// one: a known key prefix on a long value, or a long mix of lower case, upper case
/// and digits (variable names are conventionally upper case). Such a value is refused
/// and never repeated in a message.
pub fn looks_like_secret(text: &str) -> bool {
    const PREFIXES: [&str; 12] = ["sk-", "sk_", "hf_", "gsk_", "xai-", "ghp_", "gho_", "github_pat_", "glpat-", "xoxb-", "AKIA", "AIza"];
    let long = text.len() >= 20;
    let has = |f: fn(&char) -> bool| text.chars().any(|c| f(&c));
    let mixed = has(char::is_ascii_lowercase) && has(char::is_ascii_uppercase) && has(char::is_ascii_digit);
    (long && PREFIXES.iter().any(|p| text.starts_with(p))) || (text.len() >= 24 && mixed) || text.len() > 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_say_what_they_accept() {
        assert_eq!(TURNS.to_string(), "a whole number from 1 to 10,000 (turns per conversation)");
        assert_eq!(REQUEST_TIMEOUT_S.to_string(), "a number above 0 and at most 86,400 (seconds)");
        assert_eq!(SIM_JITTER.to_string(), "a number at least 0 and below 1 (relative jitter)");
        assert_eq!(TURNS.check(0.0).unwrap_err(), "must be a whole number from 1 to 10,000 (turns per conversation), found `0`");
    }

    #[test]
    fn nothing_unrepresentable_passes() {
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e300, -1.0] {
            assert!(REQUEST_TIMEOUT_S.check(v).is_err(), "{v}");
            assert!(REQUEST_RATE.check(v).is_err(), "{v}");
        }
        assert!(BATCH_SIZE.check(4_294_967_297.0).is_err());
        assert!(TURNS.check(2.5).is_err());
        assert!(SIM_JITTER.check(1.0).is_err());
        assert!(SIM_JITTER.check(0.99).is_ok());
        // Every duration the limits accept converts.
        for l in [REQUEST_TIMEOUT_S, STARTUP_TIMEOUT_S] {
            assert!(std::time::Duration::try_from_secs_f64(l.hi).is_ok());
        }
    }

    #[test]
    fn axis_values_are_checked_like_keys() {
        assert_eq!(TURNS.check_json(&json!(3)).unwrap(), 3.0);
        for bad in [json!(-3), json!("abc"), json!(2.5), json!(0), json!(true)] {
            assert!(TURNS.check_json(&bad).is_err(), "{bad}");
        }
        assert!(TEMPERATURE.check_json(&json!(9.5)).is_err());
        assert!(TEMPERATURE.check_json(&json!(1)).is_ok());
        assert!(MAX_TOKENS.check_json(&json!(0)).is_err());
    }

    #[test]
    fn keys_are_told_from_variable_names() {
        for name in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MY_ORG_OPENAI_KEY_2", "HF_TOKEN", "hf_token", "GROQ_API_KEY"] {
            assert!(!looks_like_secret(name), "{name}");
        }
        for key in [
            "sk_proj_abcdefghijklmnopqrstuvwx",
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
            "gsk_abcdefghijklmnopqrstuvwxyz",
            "Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9",
            "AIzaSyA1234567890abcdefghijklmnopq",
        ] {
            assert!(looks_like_secret(key), "{key}");
        }
    }
}
