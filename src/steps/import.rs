//! The import step: results another tool recorded, read from a file into the request
//! rows a measure writes (`requests`, `chunks`, `meta.json`), so that the aggregate,
//! the report, baselines and charts take them like any measurement.
//!
//! What a format does not record is left empty, never made up: the reference study's
//! CSV has no timestamps, token counts or per-chunk times, so an imported curve from it
//! has no throughput, TPOT or ITL, and `meta.json`'s `import.lacks` says so (the report
//! repeats it). Each format's mapping is in docs/experiment-file.md.
//!
//! A file is checked as it is read: a wrong format, a missing column, a value that is
//! not a number, or a time no request can take (more than [`MAX_SECONDS`]: a file in
//! milliseconds read as seconds, say) fails the step, naming the file and line.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ImportFormat;
use crate::error::WithHint;
use crate::export;

/// Bump when written files would change.
pub const VERSION: u32 = 1;

/// The longest time a request is believed to take, in seconds: one hour.
pub const MAX_SECONDS: f64 = 3600.0;

/// Everything an import step depends on: its key's `params` are exactly this. The
/// file enters by its content digest, so an edited file is read again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    pub cell: Vec<(String, String)>,
    pub format: ImportFormat,
    /// The file as the experiment names it, relative to the project root.
    pub file: String,
    pub digest: String,
}

/// One request as the file has it; what the format lacks is `None`.
#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    conversation: u32,
    turn: u32,
    warmup: bool,
    sent_ns: Option<u64>,
    first_token_ns: Option<u64>,
    end_ns: Option<u64>,
    ttft_ms: Option<f64>,
    e2e_ms: Option<f64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// Gaps between content chunks, in ms (the first chunk's own time is the TTFT).
    gaps_ms: Vec<f64>,
    status: Option<u32>,
    /// `none`, or the class of failure (`http_4xx`, `http_429`, `http_5xx`, `failed`).
    error: String,
    error_detail: String,
    answer: String,
}

/// What a file holds: its rows, and what its format does not record.
struct Read {
    rows: Vec<Row>,
    lacks: Vec<&'static str>,
}

/// Read `path` (named `p.file` in messages) in `p.format`, and write the rows to `out`.
pub fn run(p: &Params, path: &Path, out: &Path) -> Result<()> {
    let file = &p.file;
    let bytes = std::fs::read(path).with_context(|| format!("reading `{file}`"))?;
    if blake3::hash(&bytes).to_hex().as_str() != p.digest {
        return Err(anyhow!("`{file}` changed after the plan was made").hint("run the command again"));
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("`{file}` is not UTF-8 text").hint(format_hint(p.format)))?;
    let read = match p.format {
        ImportFormat::StudyCsv => study_csv(&text),
        ImportFormat::Aiperf => aiperf(&text),
        ImportFormat::VllmBench => vllm_bench(&text),
    }
    .map_err(|(line, message)| anyhow!("{file}:{line}: {message}").hint(format_hint(p.format)))?;
    if read.rows.iter().all(|r| r.warmup) {
        bail!("`{file}` holds no measured request");
    }
    write(p, &read, out)
}

fn format_hint(format: ImportFormat) -> String {
    let what = match format {
        ImportFormat::StudyCsv => {
            "a CSV with a header holding `times_to_first_token` and `times_to_completion` (seconds), one row per turn"
        }
        ImportFormat::Aiperf => "AIPerf's `profile_export.jsonl`, one JSON record per line",
        ImportFormat::VllmBench => "the JSON of `vllm bench serve --save-result --save-detailed`",
    };
    format!("format `{}` reads {what}; see docs/experiment-file.md", format.name())
}

/// A problem at a line of the file (1-based).
type Bad = (usize, String);

/// A time in seconds, checked to be one a request can take.
fn seconds(v: f64, what: &str, line: usize) -> Result<f64, Bad> {
    if !v.is_finite() || v < 0.0 {
        return Err((line, format!("{what} is {v}; a time is a number of seconds, 0 or more")));
    }
    if v > MAX_SECONDS {
        return Err((
            line,
            format!("{what} is {v} s, longer than any request takes (at most {MAX_SECONDS} s): is the file in another unit?"),
        ));
    }
    Ok(v)
}

/// The reference study's CSV: a header naming `times_to_first_token` and
/// `times_to_completion` (seconds; other columns are ignored), then one row per turn of
/// one conversation.
fn study_csv(text: &str) -> Result<Read, Bad> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or((1, "the file is empty".to_string()))?;
    let names: Vec<&str> = header.split(',').map(|c| c.trim().trim_matches('"')).collect();
    let column = |name: &str| {
        names.iter().position(|c| *c == name).ok_or((1, format!("no column `{name}` in the header (it has: {})", names.join(", "))))
    };
    let (ttft_at, total_at) = (column("times_to_first_token")?, column("times_to_completion")?);
    let mut rows = Vec::new();
    for (turn, (i, line)) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let number = |at: usize, what: &str| -> Result<f64, Bad> {
            let text = fields.get(at).ok_or((i + 1, format!("the row has {} field(s); `{what}` is field {}", fields.len(), at + 1)))?;
            let v = text.trim_matches('"').parse::<f64>().map_err(|_| (i + 1, format!("`{what}` is `{text}`, not a number of seconds")))?;
            seconds(v, what, i + 1)
        };
        let (ttft, total) = (number(ttft_at, "times_to_first_token")?, number(total_at, "times_to_completion")?);
        if ttft > total {
            return Err((i + 1, format!("the first token ({ttft} s) comes after the completion ({total} s)")));
        }
        rows.push(Row { turn: turn as u32, ttft_ms: Some(ttft * 1e3), e2e_ms: Some(total * 1e3), error: "none".into(), ..Row::default() });
    }
    let lacks = vec![
        "request timestamps (so no throughput or concurrency)",
        "token counts (so no TPOT)",
        "per-chunk times (so no inter-token latency)",
        "answers",
    ];
    Ok(Read { rows, lacks })
}

/// A metric's values in milliseconds, as AIPerf writes them: `{"value": 12.5, "unit":
/// "ms"}`, or a list of values (`inter_chunk_latency`); none when the metric is absent.
fn aiperf_ms_all(v: &Value, what: &str, line: usize) -> Result<Vec<f64>, Bad> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let scale = match v["unit"].as_str() {
        Some("ms") => 1.0,
        Some("s" | "sec") => 1e3,
        Some("us") => 1e-3,
        Some("ns") => 1e-6,
        other => return Err((line, format!("{what} has unit {other:?}; expected ms, s, us or ns"))),
    };
    let values = match &v["value"] {
        Value::Array(list) => list.iter().collect(),
        x => vec![x],
    };
    values
        .into_iter()
        .map(|x| {
            let x = x.as_f64().ok_or((line, format!("{what} is not a number")))?;
            Ok(seconds(x * scale / 1e3, what, line)? * 1e3)
        })
        .collect()
}

/// One metric value in milliseconds.
fn aiperf_ms(v: &Value, what: &str, line: usize) -> Result<Option<f64>, Bad> {
    if v["value"].is_array() {
        return Err((line, format!("{what} is a list, not one value")));
    }
    Ok(aiperf_ms_all(v, what, line)?.first().copied())
}

/// AIPerf's `profile_export.jsonl`: one record per line with `metadata` (session,
/// turn, phase, epoch timestamps) and `metrics` (values with units), or an `error`.
fn aiperf(text: &str) -> Result<Read, Bad> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let r: Value = serde_json::from_str(line).map_err(|e| (n, format!("not a JSON record: {e}")))?;
        let (meta, metrics) = (&r["metadata"], &r["metrics"]);
        if !meta.is_object() {
            return Err((n, "a record without `metadata`: is this AIPerf's profile_export.jsonl?".into()));
        }
        let int = |v: &Value| v.as_u64();
        let mut row = Row {
            conversation: int(&meta["session_num"]).unwrap_or(0) as u32,
            turn: int(&meta["turn_index"]).unwrap_or(0) as u32,
            warmup: meta["benchmark_phase"].as_str() == Some("warmup"),
            sent_ns: int(&meta["request_start_ns"]),
            end_ns: int(&meta["request_end_ns"]),
            ttft_ms: aiperf_ms(&metrics["time_to_first_token"], "time_to_first_token", n)?,
            e2e_ms: aiperf_ms(&metrics["request_latency"], "request_latency", n)?,
            prompt_tokens: int(&metrics["input_sequence_length"]["value"]),
            completion_tokens: int(&metrics["output_sequence_length"]["value"]).or(int(&metrics["output_token_count"]["value"])),
            error: "none".into(),
            ..Row::default()
        };
        row.gaps_ms = aiperf_ms_all(&metrics["inter_chunk_latency"], "inter_chunk_latency", n)?;
        if let (Some(sent), Some(ttft)) = (row.sent_ns, row.ttft_ms) {
            row.first_token_ns = Some(sent + (ttft * 1e6) as u64);
        }
        if r["error"].is_object() {
            let code = int(&r["error"]["code"]).map(|c| c as u32);
            row.status = code;
            row.error = match code {
                Some(429) => "http_429",
                Some(400..=499) => "http_4xx",
                Some(500..=599) => "http_5xx",
                _ => "failed",
            }
            .into();
            row.error_detail =
                format!("{}: {}", r["error"]["type"].as_str().unwrap_or("error"), r["error"]["message"].as_str().unwrap_or(""));
            row.e2e_ms = None;
        } else if row.ttft_ms.is_none() || row.e2e_ms.is_none() {
            return Err((n, "a successful record without `time_to_first_token` or `request_latency`".into()));
        }
        rows.push(row);
    }
    let lacks = vec!["cached prompt tokens", "answers"];
    Ok(Read { rows, lacks })
}

/// `vllm bench serve --save-result --save-detailed`: one JSON object with a list per
/// field, one entry per request (`ttfts`, `latencies`, `itls` in seconds;
/// `start_times` from the client's monotonic clock; `input_lens`, `output_lens`,
/// `generated_texts`, `errors`).
fn vllm_bench(text: &str) -> Result<Read, Bad> {
    let json: Value = serde_json::from_str(text).map_err(|e| (e.line(), format!("not JSON: {e}")))?;
    let list = |name: &str| json[name].as_array();
    let ttfts = list("ttfts").ok_or((1, "no `ttfts` list: was the benchmark saved with --save-detailed?".to_string()))?;
    let n = ttfts.len();
    for name in ["latencies", "itls", "start_times", "input_lens", "output_lens", "errors", "generated_texts"] {
        if let Some(l) = list(name).filter(|l| l.len() != n) {
            return Err((1, format!("`{name}` has {} entries and `ttfts` {n}", l.len())));
        }
    }
    let at = |name: &str, i: usize| list(name).map_or(&Value::Null, |l| &l[i]);
    let secs = |v: &Value, what: &str| v.as_f64().map(|x| seconds(x, what, 1)).transpose();
    let start0 = list("start_times").and_then(|l| l.iter().filter_map(Value::as_f64).reduce(f64::min));
    let mut rows = Vec::new();
    for i in 0..n {
        let error = at("errors", i).as_str().unwrap_or_default();
        let ttft = secs(at("ttfts", i), "a TTFT")?;
        let latency = secs(at("latencies", i), "a latency")?;
        let start = at("start_times", i).as_f64().zip(start0).map(|(s, s0)| ((s - s0) * 1e9) as u64);
        let mut row = Row {
            conversation: i as u32,
            sent_ns: start,
            ttft_ms: ttft.map(|t| t * 1e3),
            e2e_ms: latency.map(|t| t * 1e3),
            first_token_ns: start.zip(ttft).map(|(s, t)| s + (t * 1e9) as u64),
            end_ns: start.zip(latency).map(|(s, t)| s + (t * 1e9) as u64),
            prompt_tokens: at("input_lens", i).as_u64(),
            completion_tokens: at("output_lens", i).as_u64(),
            answer: at("generated_texts", i).as_str().unwrap_or_default().to_string(),
            error: if error.is_empty() { "none" } else { "failed" }.into(),
            error_detail: error.chars().take(500).collect(),
            ..Row::default()
        };
        for g in at("itls", i).as_array().into_iter().flatten() {
            row.gaps_ms.extend(secs(g, "an inter-token latency")?.map(|s| s * 1e3));
        }
        if !error.is_empty() {
            (row.ttft_ms, row.e2e_ms) = (None, None);
        }
        rows.push(row);
    }
    let mut lacks = vec!["multi-turn conversations (every request is its own)", "cached prompt tokens"];
    if list("latencies").is_none() {
        lacks.push("end-to-end latency (no `latencies`: an older vLLM)");
    }
    Ok(Read { rows, lacks })
}

/// The rows as a measure writes them: `requests` (and `chunks`) with the same columns,
/// and a `meta.json` that says where they came from and what they lack.
fn write(p: &Params, read: &Read, out: &Path) -> Result<()> {
    let rows = &read.rows;
    let n = rows.len();
    let mut cols = super::measure::cell_columns(&p.cell, n);
    let u32s = |f: &dyn Fn(&Row) -> u32| rows.iter().map(f).collect::<Vec<u32>>();
    let opt = |f: &dyn Fn(&Row) -> Option<u64>| rows.iter().map(f).collect::<Vec<Option<u64>>>();
    let optf = |f: &dyn Fn(&Row) -> Option<f64>| rows.iter().map(f).collect::<Vec<Option<f64>>>();
    let strs = |f: &dyn Fn(&Row) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let tpot = |r: &Row| {
        let (ttft, e2e, n) = (r.ttft_ms?, r.e2e_ms?, r.completion_tokens?);
        (n > 1).then(|| (e2e - ttft) / (n - 1) as f64)
    };
    cols.extend([
        Column::new("conversation".into(), u32s(&|r| r.conversation)),
        Column::new("turn".into(), u32s(&|r| r.turn)),
        Column::new("attempt".into(), vec![0u32; n]),
        Column::new("warmup".into(), rows.iter().map(|r| r.warmup).collect::<Vec<bool>>()),
        Column::new("request_bytes".into(), vec![None::<u64>; n]),
        Column::new("scheduled_ns".into(), opt(&|r| r.sent_ns)),
        Column::new("sent_ns".into(), opt(&|r| r.sent_ns)),
        Column::new("headers_ns".into(), vec![None::<u64>; n]),
        Column::new("first_byte_ns".into(), vec![None::<u64>; n]),
        Column::new("first_token_ns".into(), opt(&|r| r.first_token_ns)),
        Column::new("end_ns".into(), opt(&|r| r.end_ns)),
        Column::new("ttft_ms".into(), optf(&|r| r.ttft_ms)),
        Column::new("e2e_ms".into(), optf(&|r| r.e2e_ms)),
        Column::new("tpot_ms".into(), optf(&tpot)),
        Column::new("prompt_tokens".into(), opt(&|r| r.prompt_tokens)),
        Column::new("completion_tokens".into(), opt(&|r| r.completion_tokens)),
        Column::new("cached_tokens".into(), vec![None::<u64>; n]),
        Column::new("chunks".into(), u32s(&|r| if r.gaps_ms.is_empty() { 0 } else { r.gaps_ms.len() as u32 + 1 })),
        Column::new("status".into(), rows.iter().map(|r| r.status.or((r.error == "none").then_some(200))).collect::<Vec<Option<u32>>>()),
        Column::new("retry_after_s".into(), vec![None::<f64>; n]),
        Column::new("error".into(), strs(&|r| r.error.as_str())),
        Column::new("error_detail".into(), strs(&|r| r.error_detail.as_str())),
        Column::new("answer".into(), strs(&|r| r.answer.as_str())),
    ]);
    export::write_table(&mut DataFrame::new(n, cols)?, out, "requests")?;

    // Chunks: the gaps as recorded; the arrival times follow from the first token.
    let (mut conv, mut turn, mut idx, mut at, mut gap) = (vec![], vec![], vec![], vec![], vec![]);
    for r in rows.iter().filter(|r| !r.warmup && !r.gaps_ms.is_empty()) {
        let mut t = r.first_token_ns;
        for (i, g) in std::iter::once(None).chain(r.gaps_ms.iter().map(|g| Some(*g))).enumerate() {
            t = t.zip(g).map(|(t, g)| t + (g * 1e6) as u64).or(t);
            conv.push(r.conversation);
            turn.push(r.turn);
            idx.push(i as u32);
            at.push(t);
            gap.push(g);
        }
    }
    let m = conv.len();
    let mut chunks = DataFrame::new(
        m,
        vec![
            Column::new("conversation".into(), conv),
            Column::new("turn".into(), turn),
            Column::new("attempt".into(), vec![0u32; m]),
            Column::new("chunk".into(), idx),
            Column::new("arrival_ns".into(), at),
            Column::new("gap_ms".into(), gap),
            Column::new("content_bytes".into(), vec![None::<u64>; m]),
        ],
    )?;
    export::write_table(&mut chunks, out, "chunks")?;

    let measured: Vec<&Row> = rows.iter().filter(|r| !r.warmup).collect();
    let why = "imported results record none";
    let meta = serde_json::json!({
        "tool": format!("pipeline {}", env!("CARGO_PKG_VERSION")),
        "cell": p.cell,
        "server": {"backend": "import", "url": Value::Null, "version": Value::Null,
                   "import": {"format": p.format.name(), "file": p.file, "lacks": read.lacks}},
        "hardware": "not recorded (imported)",
        "nvml": {"available": false, "reason": why},
        "telemetry": {"available": false, "reason": why},
        "isolation": {"asked": "none", "done": "imported", "complete": Value::Null,
                      "notes": ["imported results: how that run kept its cells apart is not recorded"]},
        "server_metrics": {"available": false, "reason": why},
        "requests": measured.len(),
        "errors": measured.iter().filter(|r| r.error != "none").count(),
    });
    std::fs::write(out.join("meta.json"), serde_json::to_vec_pretty(&meta)?).context("writing meta.json")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_study_csv_maps_seconds_to_turns() {
        let read = study_csv(",times_to_first_token,times_to_completion\n0,0.25,1.5\n1,0.3,1.75\n").unwrap();
        assert_eq!(read.rows.len(), 2);
        assert_eq!((read.rows[1].turn, read.rows[1].ttft_ms, read.rows[1].e2e_ms), (1, Some(300.0), Some(1750.0)));
        assert_eq!(read.rows[0].sent_ns, None, "no timestamps are made up");
        let bad = |text: &str| study_csv(text).err().unwrap();
        assert_eq!(bad("ttft,total\n1,2\n").0, 1);
        assert!(bad("ttft,total\n1,2\n").1.contains("no column `times_to_first_token`"));
        assert_eq!(
            bad("times_to_first_token,times_to_completion\n0.2,1\n1000000,2\n"),
            (3, "times_to_first_token is 1000000 s, longer than any request takes (at most 3600 s): is the file in another unit?".into())
        );
        assert!(bad("times_to_first_token,times_to_completion\n0.2,abc\n").1.contains("`times_to_completion` is `abc`"));
        assert!(bad("times_to_first_token,times_to_completion\n2,1\n").1.contains("comes after the completion"));
    }

    #[test]
    fn aiperf_records_keep_units_phases_and_errors() {
        let ok = r#"{"metadata":{"session_num":3,"turn_index":1,"request_start_ns":1000000000,"request_end_ns":1300000000,"benchmark_phase":"profiling"},"metrics":{"time_to_first_token":{"value":0.1,"unit":"s"},"request_latency":{"value":300.0,"unit":"ms"},"input_sequence_length":{"value":550,"unit":"tokens"},"output_sequence_length":{"value":3,"unit":"tokens"},"inter_chunk_latency":{"value":[90.0,110.0],"unit":"ms"}},"error":null}"#;
        let warm = r#"{"metadata":{"session_num":0,"turn_index":0,"benchmark_phase":"warmup"},"metrics":{"time_to_first_token":{"value":5,"unit":"ms"},"request_latency":{"value":9,"unit":"ms"}},"error":null}"#;
        let failed = r#"{"metadata":{"session_num":4,"turn_index":0,"request_start_ns":5,"request_end_ns":9},"metrics":{"error_isl":{"value":550,"unit":"tokens"}},"error":{"code":503,"type":"ServerError","message":"overloaded"}}"#;
        let read = aiperf(&format!("{ok}\n{warm}\n\n{failed}\n")).unwrap();
        let r = &read.rows[0];
        assert_eq!((r.conversation, r.turn, r.ttft_ms, r.e2e_ms, r.completion_tokens), (3, 1, Some(100.0), Some(300.0), Some(3)));
        assert_eq!((r.gaps_ms.clone(), r.first_token_ns), (vec![90.0, 110.0], Some(1_100_000_000)));
        assert!(read.rows[1].warmup);
        assert_eq!((read.rows[2].error.as_str(), read.rows[2].status, read.rows[2].e2e_ms), ("http_5xx", Some(503), None));
        assert_eq!(read.rows[2].error_detail, "ServerError: overloaded");
        let bad = aiperf(&format!("{ok}\nnot json\n")).err().unwrap();
        assert_eq!(bad.0, 2);
        assert!(aiperf(r#"{"metrics":{}}"#).err().unwrap().1.contains("without `metadata`"));
        let unit = r#"{"metadata":{},"metrics":{"time_to_first_token":{"value":1,"unit":"fortnights"}},"error":null}"#;
        assert!(aiperf(unit).err().unwrap().1.contains("unit Some(\"fortnights\")"));
    }

    #[test]
    fn vllm_bench_lists_become_requests() {
        let json = r#"{"ttfts":[0.05,0.0],"latencies":[0.2,0.0],"itls":[[0.05,0.1],[]],"start_times":[10.0,10.5],
            "input_lens":[100,100],"output_lens":[3,0],"generated_texts":["hi",""],"errors":["","Bad Request"]}"#;
        let read = vllm_bench(json).unwrap();
        let r = &read.rows[0];
        assert_eq!((r.ttft_ms, r.e2e_ms, r.sent_ns, r.end_ns), (Some(50.0), Some(200.0), Some(0), Some(200_000_000)));
        assert_eq!((r.gaps_ms.clone(), r.answer.as_str()), (vec![50.0, 100.0], "hi"));
        let f = &read.rows[1];
        assert_eq!((f.error.as_str(), f.error_detail.as_str(), f.e2e_ms, f.sent_ns), ("failed", "Bad Request", None, Some(500_000_000)));
        assert!(vllm_bench(r#"{"duration": 10}"#).err().unwrap().1.contains("--save-detailed"));
        assert!(vllm_bench(r#"{"ttfts":[0.1],"latencies":[]}"#).err().unwrap().1.contains("`latencies` has 0 entries"));
    }
}
