//! The import step: results another tool recorded, read from a file into the request
//! rows a measure writes (`requests`, `chunks`, `meta.json`), so that the aggregate,
//! the report, baselines and charts take them like any measurement.
//!
//! What a format does not record is left empty, never made up: the reference study's
//! CSV has no timestamps, token counts or per-chunk times, so an imported curve from it
//! has no throughput, TPOT or ITL, and `meta.json`'s `import.lacks` says so (the report
//! repeats it). Each format's mapping is in docs/experiment-file.md.
//!
//! Every format goes through its own parser: the `csv` crate for CSV (RFC 4180 quoting,
//! multi-line fields, CRLF), `serde_json` for JSON and JSON lines; a UTF-8 byte-order
//! mark is dropped first. A file is checked as it is read: a wrong format, a missing
//! column, a value that is not a number, a time no request can take (more than
//! [`MAX_SECONDS`]: a file in milliseconds read as seconds, say), a first token after
//! the completion, an end before its start, or timestamps further apart than
//! [`limits::MAX_IMPORT_SPAN_S`] fail the step, naming the file and the line where the
//! record starts. A file is read only if it is a regular file of at most
//! [`limits::MAX_IMPORT_BYTES`] holding at most [`limits::MAX_IMPORT_ROWS`] requests.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ImportFormat, limits};
use crate::error::WithHint;
use crate::records::{self, Available, ChunkRow, Import, Isolation, Meta, RequestRow, Server};

/// Bump when written files would change.
/// 2: study-csv through the `csv` crate: `assistant_responses` is the `answer`, the
/// time to first token optional; `meta.json`'s `import` names the model.
/// 3: `requests` gains `trace_id` and the server-span columns (empty for an import).
pub const VERSION: u32 = 3;

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

/// What a file holds: its rows, the line where each starts (1-based), and what its
/// format does not record.
struct Read {
    rows: Vec<Row>,
    lines: Vec<usize>,
    lacks: Vec<&'static str>,
}

/// Read `path` (named `p.file` in messages) in `p.format`, and write the rows to `out`.
pub fn run(p: &Params, path: &Path, out: &Path) -> Result<()> {
    let file = &p.file;
    let bytes = crate::config::read_results(path).map_err(|(message, hint)| anyhow!("cannot read `{file}`: {message}").hint(hint))?;
    if blake3::hash(&bytes).to_hex().as_str() != p.digest {
        return Err(anyhow!("`{file}` changed after the plan was made").hint("run the command again"));
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("`{file}` is not UTF-8 text").hint(format_hint(p.format)))?;
    // A byte-order mark is no part of the first column's name or the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let read = match p.format {
        ImportFormat::StudyCsv => study_csv(text),
        ImportFormat::Aiperf => aiperf(text),
        ImportFormat::VllmBench => vllm_bench(text),
    }
    .and_then(check_span)
    .map_err(|(line, message)| anyhow!("{file}:{line}: {message}").hint(format_hint(p.format)))?;
    if read.rows.iter().all(|r| r.warmup) {
        bail!("`{file}` holds no measured request");
    }
    write(p, &read, out)
}

fn format_hint(format: ImportFormat) -> String {
    let what = match format {
        ImportFormat::StudyCsv => {
            "a CSV with a header holding `times_to_completion` (seconds) and optionally `times_to_first_token` and `assistant_responses`, one record per turn"
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

/// Another request would pass [`limits::MAX_IMPORT_ROWS`].
fn row_cap(rows: &[Row], line: usize) -> Result<(), Bad> {
    if rows.len() >= limits::MAX_IMPORT_ROWS {
        return Err((line, format!("more than {} requests in one file", limits::count(limits::MAX_IMPORT_ROWS as u128))));
    }
    Ok(())
}

/// A request's own times, in the order they happen: its first token comes no later
/// than its completion, and it ends no earlier than it starts.
fn check_order(row: &Row, line: usize) -> Result<(), Bad> {
    if let (Some(ttft), Some(e2e)) = (row.ttft_ms, row.e2e_ms)
        && ttft > e2e
    {
        return Err((line, format!("the first token ({} s) comes after the completion ({} s)", ttft / 1e3, e2e / 1e3)));
    }
    if let (Some(sent), Some(end)) = (row.sent_ns, row.end_ns)
        && end < sent
    {
        return Err((line, format!("the request ends (at {end} ns) before it starts (at {sent} ns)")));
    }
    Ok(())
}

/// All the file's timestamps lie within [`limits::MAX_IMPORT_SPAN_S`] of each other:
/// one corrupt value (near 2⁶⁴, say) would otherwise stretch the run and make its
/// throughput almost nothing. The record blamed is the one with the latest timestamp.
fn check_span(read: Read) -> Result<Read, Bad> {
    let stamped = read
        .rows
        .iter()
        .zip(&read.lines)
        .flat_map(|(r, l)| [r.sent_ns, r.first_token_ns, r.end_ns].into_iter().flatten().map(move |t| (t, *l)));
    let (Some(first), Some(last)) = (stamped.clone().min(), stamped.max()) else {
        return Ok(read);
    };
    let span_s = (last.0 - first.0) as f64 / 1e9;
    if span_s > limits::MAX_IMPORT_SPAN_S {
        return Err((
            last.1,
            format!(
                "a timestamp of {} ns lies {span_s:.3e} s after the file's first ({} ns, line {}); one run spans at most a week",
                last.0, first.0, first.1
            ),
        ));
    }
    Ok(read)
}

/// The line a CSV record starts on, from the byte where the reader says it starts.
/// (The reader's own line count lags by one after a CRLF: it ends a record at the `\r`,
/// so the next one "starts" at the `\n` of the line before.) Records come in order, so
/// the count moves forward only.
struct LineOf<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
}

impl LineOf<'_> {
    fn record_at(&mut self, mut byte: usize) -> usize {
        while matches!(self.text.get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        let to = byte.min(self.text.len()).max(self.at);
        self.line += self.text[self.at..to].iter().filter(|&&b| b == b'\n').count();
        self.at = to;
        self.line
    }
}

/// The reference study's CSV, as pandas' `to_csv` wrote it: a header naming
/// `times_to_completion` and, in most files, `times_to_first_token` (seconds) and
/// `assistant_responses` (the answer, quoted and often several lines long), then one
/// record per turn of one conversation. Other columns are ignored. A file without
/// `times_to_first_token` leaves the TTFT empty and says so in `lacks`.
fn study_csv(text: &str) -> Result<Read, Bad> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::Headers).from_reader(text.as_bytes());
    // An error is rare: its line is counted from the start.
    let line =
        |pos: Option<&csv::Position>| LineOf { text: text.as_bytes(), at: 0, line: 1 }.record_at(pos.map_or(0, |p| p.byte() as usize));
    let bad_csv = |e: &csv::Error| match e.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
            (line(pos.as_ref()), format!("the record has {len} field(s) and the header {expected_len}"))
        }
        csv::ErrorKind::Utf8 { pos, .. } => (line(pos.as_ref()), "a field is not UTF-8 text".into()),
        _ => (line(e.position()), format!("not CSV: {e}")),
    };
    let names: Vec<String> = reader.headers().map_err(|e| bad_csv(&e))?.iter().map(String::from).collect();
    if names.iter().all(|n| n.is_empty()) {
        return Err((1, "the file is empty".into()));
    }
    let at = |name: &str| names.iter().position(|c| c == name);
    let total_at = at("times_to_completion").ok_or_else(|| {
        (
            1,
            format!(
                "no column `times_to_completion` in the header (it has: {})",
                names.iter().map(|n| format!("`{}`", n.escape_debug())).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let (ttft_at, answer_at) = (at("times_to_first_token"), at("assistant_responses"));
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    let mut line_of = LineOf { text: text.as_bytes(), at: 0, line: 1 };
    for record in reader.records() {
        let record = record.map_err(|e| bad_csv(&e))?;
        let line = line_of.record_at(record.position().map_or(0, |p| p.byte() as usize));
        row_cap(&rows, line)?;
        let number = |at: usize, what: &str| -> Result<f64, Bad> {
            let text = record.get(at).unwrap_or_default().trim();
            let v = text.parse::<f64>().map_err(|_| (line, format!("`{what}` is `{text}`, not a number of seconds")))?;
            seconds(v, what, line)
        };
        let ttft = ttft_at.map(|at| number(at, "times_to_first_token")).transpose()?;
        let total = number(total_at, "times_to_completion")?;
        let row = Row {
            turn: rows.len() as u32,
            ttft_ms: ttft.map(|t| t * 1e3),
            e2e_ms: Some(total * 1e3),
            answer: answer_at.and_then(|at| record.get(at)).unwrap_or_default().to_string(),
            error: "none".into(),
            ..Row::default()
        };
        check_order(&row, line)?;
        rows.push(row);
        lines.push(line);
    }
    let mut lacks = vec![];
    if ttft_at.is_none() {
        lacks.push("time to first token (no times_to_first_token column)");
    }
    lacks.extend([
        "request timestamps (so no throughput or concurrency)",
        "token counts (so no TPOT)",
        "per-chunk times (so no inter-token latency)",
    ]);
    if answer_at.is_none() {
        lacks.push("answers");
    }
    Ok(Read { rows, lines, lacks })
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
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        row_cap(&rows, n)?;
        let r: Value = serde_json::from_str(line).map_err(|e| (n, format!("not a JSON record: {e}")))?;
        let (meta, metrics) = (&r["metadata"], &r["metrics"]);
        if !meta.is_object() {
            return Err((n, "a record without `metadata`: is this AIPerf's profile_export.jsonl?".into()));
        }
        // A field that is there holds a whole number of its range, or the record is refused.
        let int = |v: &Value, what: &str| -> Result<Option<u64>, Bad> {
            match v {
                Value::Null => Ok(None),
                // `550.0` is a whole number too.
                v => v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && (0.0..1.8e19).contains(x)).map(|x| x as u64))
                    .map(Some)
                    .ok_or((n, format!("`{what}` is `{v}`, not a whole number 0 or more"))),
            }
        };
        let small = |v: &Value, what: &str| -> Result<u32, Bad> {
            int(v, what)?.map_or(Ok(0), |x| u32::try_from(x).map_err(|_| (n, format!("`{what}` is {x}, more than {}", u32::MAX))))
        };
        let mut row = Row {
            conversation: small(&meta["session_num"], "metadata.session_num")?,
            turn: small(&meta["turn_index"], "metadata.turn_index")?,
            warmup: meta["benchmark_phase"].as_str() == Some("warmup"),
            sent_ns: int(&meta["request_start_ns"], "metadata.request_start_ns")?,
            end_ns: int(&meta["request_end_ns"], "metadata.request_end_ns")?,
            ttft_ms: aiperf_ms(&metrics["time_to_first_token"], "time_to_first_token", n)?,
            e2e_ms: aiperf_ms(&metrics["request_latency"], "request_latency", n)?,
            prompt_tokens: int(&metrics["input_sequence_length"]["value"], "metrics.input_sequence_length")?,
            completion_tokens: match int(&metrics["output_sequence_length"]["value"], "metrics.output_sequence_length")? {
                Some(x) => Some(x),
                None => int(&metrics["output_token_count"]["value"], "metrics.output_token_count")?,
            },
            error: "none".into(),
            ..Row::default()
        };
        row.gaps_ms = aiperf_ms_all(&metrics["inter_chunk_latency"], "inter_chunk_latency", n)?;
        if let (Some(sent), Some(ttft)) = (row.sent_ns, row.ttft_ms) {
            // At most MAX_SECONDS after `sent`: no overflow short of 2⁶⁴, which the span check refuses.
            row.first_token_ns = Some(sent.saturating_add((ttft * 1e6) as u64));
        }
        if r["error"].is_object() {
            let code = r["error"]["code"].as_u64().and_then(|c| u32::try_from(c).ok());
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
        check_order(&row, n)?;
        rows.push(row);
        lines.push(n);
    }
    let lacks = vec!["cached prompt tokens", "answers"];
    Ok(Read { rows, lines, lacks })
}

/// `vllm bench serve --save-result --save-detailed`: one JSON object with a list per
/// field, one entry per request (`ttfts`, `latencies`, `itls` in seconds;
/// `start_times` from the client's monotonic clock; `input_lens`, `output_lens`,
/// `generated_texts`, `errors`). The file is one JSON object, so a problem with a
/// request is at line 1 and names the request's index in the lists.
fn vllm_bench(text: &str) -> Result<Read, Bad> {
    let json: Value = serde_json::from_str(text).map_err(|e| (e.line(), format!("not JSON: {e}")))?;
    let list = |name: &str| json[name].as_array();
    let ttfts = list("ttfts").ok_or((1, "no `ttfts` list: was the benchmark saved with --save-detailed?".to_string()))?;
    let n = ttfts.len();
    if n > limits::MAX_IMPORT_ROWS {
        return Err((
            1,
            format!("{} requests; one file holds at most {}", limits::count(n as u128), limits::count(limits::MAX_IMPORT_ROWS as u128)),
        ));
    }
    for name in ["latencies", "itls", "start_times", "input_lens", "output_lens", "errors", "generated_texts"] {
        if let Some(l) = list(name).filter(|l| l.len() != n) {
            return Err((1, format!("`{name}` has {} entries and `ttfts` {n}", l.len())));
        }
    }
    let at = |name: &str, i: usize| list(name).map_or(&Value::Null, |l| &l[i]);
    let starts: Vec<Option<f64>> = (0..n).map(|i| at("start_times", i).as_f64()).collect();
    let start0 = starts.iter().flatten().copied().reduce(f64::min);
    let mut rows = Vec::new();
    for i in 0..n {
        let what = |name: &str| format!("request {i}'s {name}");
        let secs = |v: &Value, name: &str| v.as_f64().map(|x| seconds(x, &what(name), 1)).transpose();
        let error = at("errors", i).as_str().unwrap_or_default();
        let ttft = secs(at("ttfts", i), "TTFT")?;
        let latency = secs(at("latencies", i), "latency")?;
        let start = match (starts[i], start0) {
            (Some(s), Some(s0)) => {
                let from_first = s - s0;
                if !s.is_finite() || from_first > limits::MAX_IMPORT_SPAN_S {
                    return Err((
                        1,
                        format!(
                            "request {i}'s start time is {s}, {from_first:.3e} s after the first request's; one run spans at most a week"
                        ),
                    ));
                }
                Some((from_first * 1e9) as u64)
            }
            _ => None,
        };
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
            row.gaps_ms.extend(secs(g, "inter-token latency")?.map(|s| s * 1e3));
        }
        if !error.is_empty() {
            (row.ttft_ms, row.e2e_ms) = (None, None);
        }
        check_order(&row, 1).map_err(|(l, m)| (l, format!("request {i}: {m}")))?;
        rows.push(row);
    }
    let mut lacks = vec!["multi-turn conversations (every request is its own)", "cached prompt tokens"];
    if list("latencies").is_none() {
        lacks.push("end-to-end latency (no `latencies`: an older vLLM)");
    }
    let lines = vec![1; rows.len()];
    Ok(Read { rows, lines, lacks })
}

/// The rows as a measure writes them: `requests` (and `chunks`) with the same columns,
/// and a `meta.json` that says where they came from and what they lack.
fn write(p: &Params, read: &Read, out: &Path) -> Result<()> {
    let rows = &read.rows;
    let tpot = |r: &Row| {
        let (ttft, e2e, n) = (r.ttft_ms?, r.e2e_ms?, r.completion_tokens?);
        (n > 1).then(|| (e2e - ttft) / (n - 1) as f64)
    };
    let requests: Vec<RequestRow> = rows
        .iter()
        .map(|r| RequestRow {
            conversation: r.conversation,
            turn: r.turn,
            attempt: 0,
            warmup: r.warmup,
            request_bytes: None,
            scheduled_ns: r.sent_ns,
            sent_ns: r.sent_ns,
            headers_ns: None,
            first_byte_ns: None,
            first_token_ns: r.first_token_ns,
            end_ns: r.end_ns,
            ttft_ms: r.ttft_ms,
            e2e_ms: r.e2e_ms,
            tpot_ms: tpot(r),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: None,
            chunks: if r.gaps_ms.is_empty() { 0 } else { r.gaps_ms.len() as u32 + 1 },
            status: r.status.or((r.error == "none").then_some(200)),
            retry_after_s: None,
            error: r.error.clone(),
            error_detail: r.error_detail.clone(),
            answer: r.answer.clone(),
            ..RequestRow::default()
        })
        .collect();
    records::write_requests(&p.cell, &requests, out)?;

    // Chunks: the gaps as recorded; the arrival times follow from the first token.
    let mut chunks = Vec::new();
    for r in rows.iter().filter(|r| !r.warmup && !r.gaps_ms.is_empty()) {
        let mut t = r.first_token_ns;
        for (i, g) in std::iter::once(None).chain(r.gaps_ms.iter().map(|g| Some(*g))).enumerate() {
            t = t.zip(g).map(|(t, g)| t + (g * 1e6) as u64).or(t);
            chunks.push(ChunkRow {
                conversation: r.conversation,
                turn: r.turn,
                attempt: 0,
                chunk: i as u32,
                arrival_ns: t,
                gap_ms: g,
                content_bytes: None,
            });
        }
    }
    records::write_chunks(&chunks, out)?;

    let measured: Vec<&Row> = rows.iter().filter(|r| !r.warmup).collect();
    let why = "imported results record none";
    let model = p.cell.iter().find(|(k, _)| k == "model").map_or("", |(_, v)| v.as_str());
    let meta = Meta {
        tool: format!("pipeline {}", env!("CARGO_PKG_VERSION")),
        cell: p.cell.clone(),
        server: Server {
            backend: "import".into(),
            url: Some(None),
            version: Some(None),
            import: Some(Import {
                format: p.format.name().into(),
                model: model.into(),
                file: p.file.clone(),
                lacks: read.lacks.iter().map(|l| l.to_string()).collect(),
            }),
            ..Server::default()
        },
        hardware: "not recorded (imported)".into(),
        nvml: Available::no(why),
        telemetry: Available::no(why),
        isolation: Isolation {
            asked: "none".into(),
            done: "imported".into(),
            salt: None,
            image_nonce: None,
            complete: None,
            notes: vec!["imported results: how that run kept its cells apart is not recorded".into()],
        },
        server_metrics: Available::no(why),
        requests: measured.len(),
        errors: measured.iter().filter(|r| r.error != "none").count(),
        dataset: None,
        trace: None,
        spans: None,
    };
    records::write_meta(&meta, &crate::secrets::Secrets::default(), out)
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
        assert!(read.lacks.contains(&"answers"));
        let bad = |text: &str| study_csv(text).err().unwrap();
        assert_eq!(bad("ttft,total\n1,2\n"), (1, "no column `times_to_completion` in the header (it has: `ttft`, `total`)".into()));
        assert_eq!(
            bad("times_to_first_token,times_to_completion\n0.2,1\n1000000,2\n"),
            (3, "times_to_first_token is 1000000 s, longer than any request takes (at most 3600 s): is the file in another unit?".into())
        );
        assert!(bad("times_to_first_token,times_to_completion\n0.2,abc\n").1.contains("`times_to_completion` is `abc`"));
        assert!(bad("times_to_first_token,times_to_completion\n2,1\n").1.contains("comes after the completion"));
        assert_eq!(bad("times_to_completion\n1\n2,3\n"), (3, "the record has 2 field(s) and the header 1".into()));
    }

    /// The study's files as pandas wrote them: answers quoted per RFC 4180 (commas,
    /// doubled quotes, Markdown, newlines), CRLF line ends, no final newline; a record
    /// is one turn however many lines it spans, and a bad one is named by the line it
    /// starts on.
    #[test]
    fn the_study_csv_reads_quoted_multi_line_answers() {
        let text = "times_to_first_token,times_to_completion,assistant_responses\r\n\
                    0.5,1.25,\"### Key Elements\r\n- a \"\"quoted\"\" word, and a comma\r\n\r\n**bold**\"\r\n\
                    0.25,0.75,plain answer\r\n\
                    0.125,0.5,\"last, without a newline\"";
        let read = study_csv(text).unwrap();
        assert_eq!(read.rows.len(), 3, "three turns, not seven lines");
        assert_eq!(read.rows[0].answer, "### Key Elements\r\n- a \"quoted\" word, and a comma\r\n\r\n**bold**");
        assert_eq!((read.rows[1].turn, read.rows[1].ttft_ms, read.rows[1].e2e_ms), (1, Some(250.0), Some(750.0)));
        assert_eq!((read.rows[2].answer.as_str(), read.rows[2].e2e_ms), ("last, without a newline", Some(500.0)));
        assert_eq!(read.lines, vec![2, 6, 7], "where each record starts");
        assert!(!read.lacks.contains(&"answers"));

        // Without `times_to_first_token` the TTFT stays empty, and `lacks` says so.
        let read = study_csv("times_to_completion,assistant_responses\n1.5,\"a,\nb\"\n2.5,c\n").unwrap();
        assert_eq!((read.rows[1].ttft_ms, read.rows[1].e2e_ms, read.rows[0].answer.as_str()), (None, Some(2500.0), "a,\nb"));
        assert!(read.lacks[0].starts_with("time to first token"), "{:?}", read.lacks);

        // A bad number in the record after a three-line answer: the line it starts on.
        let bad = study_csv("times_to_first_token,times_to_completion,assistant_responses\n0.1,0.2,\"x\ny\nz\"\n0.1,oops,\"p\nq\"\n");
        assert_eq!(bad.err().unwrap(), (5, "`times_to_completion` is `oops`, not a number of seconds".into()));
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

    /// Issue 21, item 5: what no request can do is refused at the record that does it.
    #[test]
    fn impossible_records_are_refused_at_their_line() {
        let record = |start: &str, end: &str, ttft_ms: f64, e2e_ms: f64| {
            format!(
                r#"{{"metadata":{{"session_num":0,"turn_index":0,"request_start_ns":{start},"request_end_ns":{end}}},"metrics":{{"time_to_first_token":{{"value":{ttft_ms},"unit":"ms"}},"request_latency":{{"value":{e2e_ms},"unit":"ms"}}}},"error":null}}"#
            )
        };
        let ok = record("1000000000", "1300000000", 100.0, 300.0);
        let read = |lines: &[String]| aiperf(&lines.join("\n")).and_then(check_span);
        assert!(read(&[ok.clone(), ok.clone()]).is_ok());
        // A first token after the completion (a negative TPOT).
        let late = read(&[ok.clone(), record("1000000000", "1300000000", 400.0, 300.0)]).err().unwrap();
        assert_eq!(late, (2, "the first token (0.4 s) comes after the completion (0.3 s)".into()));
        // An end before its start.
        let early = read(&[ok.clone(), ok.clone(), record("1300000000", "1000000000", 100.0, 300.0)]).err().unwrap();
        assert_eq!(early, (3, "the request ends (at 1000000000 ns) before it starts (at 1300000000 ns)".into()));
        // A timestamp near 2⁶⁴ beside real ones: refused, not a throughput of nothing.
        let far = read(&[ok.clone(), record("18446744073709551000", "18446744073709551000", 100.0, 300.0)]).err().unwrap();
        assert_eq!(far.0, 2);
        assert!(far.1.contains("after the file's first (1000000000 ns, line 1); one run spans at most a week"), "{}", far.1);
        // A negative or fractional timestamp is not a time.
        let negative = read(&[record("-5", "1300000000", 100.0, 300.0)]).err().unwrap();
        assert_eq!(negative, (1, "`metadata.request_start_ns` is `-5`, not a whole number 0 or more".into()));

        let bench = |ttfts: &str, latencies: &str, starts: &str| {
            vllm_bench(&format!(r#"{{"ttfts":{ttfts},"latencies":{latencies},"start_times":{starts},"errors":["",""]}}"#))
                .and_then(check_span)
        };
        assert!(bench("[0.1,0.1]", "[0.2,0.3]", "[10.0,10.5]").is_ok());
        assert_eq!(
            bench("[0.1,0.5]", "[0.2,0.3]", "[10.0,10.5]").err().unwrap().1,
            "request 1: the first token (0.5 s) comes after the completion (0.3 s)"
        );
        assert_eq!(
            bench("[0.1,-0.5]", "[0.2,0.3]", "[10.0,10.5]").err().unwrap().1,
            "request 1's TTFT is -0.5; a time is a number of seconds, 0 or more"
        );
        let far = bench("[0.1,0.1]", "[0.2,0.3]", "[10.0,1.8e19]").err().unwrap().1;
        assert!(far.starts_with("request 1's start time is 18000000000000000000, 1.800e19 s after the first request's"), "{far}");
    }

    #[test]
    fn a_file_holds_at_most_the_row_cap() {
        let rows = "0.1,0.2\n".repeat(limits::MAX_IMPORT_ROWS);
        let full = format!("times_to_first_token,times_to_completion\n{rows}");
        assert_eq!(study_csv(&full).unwrap().rows.len(), limits::MAX_IMPORT_ROWS);
        let over = study_csv(&format!("{full}0.1,0.2\n")).err().unwrap();
        assert_eq!(over, (limits::MAX_IMPORT_ROWS + 2, "more than 1,000,000 requests in one file".into()));
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
