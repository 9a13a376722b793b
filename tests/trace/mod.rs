//! Trace replay (issue 24, item 4): requests leave at the trace's times, shared
//! `hash_ids` give the cached tokens vLLM's block cache would, a bad trace is refused
//! with its file, line and fix, and editing the trace reruns its measures.

use super::*;

/// An experiment replaying `trace` on one simulator with prefix caching, no jitter.
fn experiment(tag: &str, trace: &str, extra: &str) -> String {
    format!(
        r#"
name = "t"
[models.a]
backend = "sim"
served-name = "a-{tag}"
sim = {{ ttft-base-ms = 1.0, prefill-us-per-token = 0.0, itl-base-ms = 1.0, itl-us-per-inflight = 0.0, jitter = 0.0, prefix-caching = true }}

[workload]
arrival = "trace"
trace = "{trace}"
warmup-requests = 1
{extra}
[matrix]
model = ["a"]
seed = [1]

[report]
dir = "reports/t"
"#
    )
}

/// A Mooncake-style line.
fn line(ms: u64, input: u32, output: u32, hash_ids: &[u64]) -> String {
    serde_json::json!({"timestamp": ms, "input_length": input, "output_length": output, "hash_ids": hash_ids}).to_string()
}

/// (timestamp ms, input, output, hash ids) of the test trace: three sessions sharing
/// a system block (hash id 0), each turn resending its session's earlier blocks, the
/// last block of a prompt partial; and one request sharing nothing.
fn requests() -> Vec<(u64, u32, u32, Vec<u64>)> {
    vec![
        (0, 700, 3, vec![0, 10]),
        (60, 900, 2, vec![0, 20]),
        (120, 1300, 4, vec![0, 10, 11]),
        (180, 300, 2, vec![]),
        (240, 1500, 3, vec![0, 20, 21]),
        (300, 1100, 2, vec![0, 10, 11]),
        (360, 520, 2, vec![99, 98]),
        (420, 2000, 5, vec![0, 10, 11, 12]),
    ]
}

fn trace_text(requests: &[(u64, u32, u32, Vec<u64>)]) -> String {
    requests.iter().map(|(t, i, o, h)| line(*t, *i, *o, h) + "\n").collect()
}

/// The cached tokens vLLM's block cache (16-token blocks, the last prompt token always
/// computed) reports for request `r`, from the trace alone: requests sharing their
/// first k hash ids share their first 512·k tokens (as far as both prompts go), and an
/// earlier prompt left its full 16-token blocks in the cache.
fn expected_cached(all: &[(u64, u32, u32, Vec<u64>)], r: usize) -> u64 {
    let (_, len, _, ids) = &all[r];
    let usable = (*len as u64 - 1) / 16;
    let shared = all[..r]
        .iter()
        .map(|(_, q_len, _, q_ids)| {
            let k = ids.iter().zip(q_ids).take_while(|(a, b)| a == b).count() as u64;
            (512 * k).min(*len as u64).min(*q_len as u64) / 16
        })
        .max()
        .unwrap_or(0);
    shared.min(usable) * 16
}

fn num(row: &Row, key: &str) -> u64 {
    row[key].parse().unwrap_or_else(|_| panic!("{key} = {:?}", row[key]))
}

/// Issue 24: each request leaves at `timestamp / speedup` from the cell's start
/// (`scheduled_ns`, exact), is sent on time (lateness recorded, and small), has
/// exactly its prompt and answer lengths, and gets from the simulator the cached
/// tokens its `hash_ids` imply. meta.json names the trace; the report renders.
#[test]
fn requests_leave_at_the_traces_times_and_shared_blocks_hit_the_cache() {
    let p = Project::new();
    let all = requests();
    p.write("data/t.jsonl", &trace_text(&all));
    p.write("experiments/t.toml", &experiment("trace-times", "data/t.jsonl", "trace-speedup = 2.0\n"));
    p.run_ok();
    let tables = p.requests_tables("measure");
    assert_eq!(tables.len(), 1);
    let rows: Vec<&Row> = tables[0].iter().filter(|r| r["warmup"] == "false").collect();
    assert_eq!(rows.len(), all.len());
    let start = num(rows[0], "scheduled_ns");
    for (r, row) in rows.iter().enumerate() {
        let (ms, input, output, _) = &all[r];
        assert_eq!((num(row, "conversation"), num(row, "turn"), row["error"].as_str()), (r as u64, 0, "none"), "{row:?}");
        let offset_ns = num(row, "scheduled_ns") - start;
        let due_ns = ms * 1_000_000 / 2;
        assert!(offset_ns.abs_diff(due_ns) < 1_000, "request {r} scheduled {offset_ns} ns after the first, due {due_ns}");
        let late_ms = (num(row, "sent_ns") as f64 - num(row, "scheduled_ns") as f64) / 1e6;
        assert!((0.0..25.0).contains(&late_ms), "request {r} left {late_ms} ms late");
        assert_eq!(num(row, "prompt_tokens"), u64::from(*input), "request {r}: exactly input_length");
        assert_eq!(num(row, "completion_tokens"), u64::from(*output), "request {r}: exactly output_length (ignore_eos)");
        assert_eq!(num(row, "cached_tokens"), expected_cached(&all, r), "request {r}: {:?}", all[r]);
        assert!(num(row, "first_token_ns") > num(row, "sent_ns"), "completion chunks carry text");
    }
    // Not vacuous: the trace has hits, partial ones, and misses.
    let cached: Vec<u64> = (0..all.len()).map(|r| expected_cached(&all, r)).collect();
    assert_eq!(cached, [0, 512, 688, 0, 896, 1088, 0, 1296]);

    let metas = p.measure_metas();
    let trace = &metas[0].1["trace"];
    assert_eq!(trace["file"], "data/t.jsonl");
    let resolved = std::fs::canonicalize(p.path().join("data/t.jsonl")).unwrap();
    assert_eq!(trace["path"], resolved.display().to_string());
    assert_eq!(trace["digest"], blake3::hash(trace_text(&all).as_bytes()).to_hex().to_string());
    assert_eq!((trace["requests"].as_u64(), trace["speedup"].as_f64()), (Some(8), Some(2.0)));
    assert_eq!(metas[0].1["server"]["api"], Value::Null, "a launched server names its command, not a route");
    let report = p.read("reports/t/README.md");
    assert!(report.contains("- **Workload:** a trace replay of the 8 requests of data/t.jsonl, 0.4 s of trace time: "), "{report}");
    assert!(report.contains("- **Load:** trace at speedup 2: open loop"), "{report}");
    assert!(!report.contains("turns per conversation"), "{report}");
}

/// Under `cache-isolation = "salt"`, every request of a cell carries the cell's
/// `cache_salt` to `/v1/completions`: the second cell's first request finds nothing of
/// the first cell's identical prompts in the cache, while requests within a cell still
/// share their blocks; meta.json calls the isolation complete (no images to salt).
#[test]
fn a_salted_replay_shares_blocks_within_its_cell_only() {
    let p = Project::new();
    let all = requests();
    p.write("data/t.jsonl", &trace_text(&all));
    let axis = "cache-isolation = \"salt\"\n[[axis]]\nname = \"speedup\"\nworkload = \"trace-speedup\"\nvalues = [4, 8]\n";
    p.write("experiments/t.toml", &experiment("trace-salt", "data/t.jsonl", axis));
    p.run_ok();
    let tables = p.requests_tables("measure");
    assert_eq!(tables.len(), 2);
    for rows in &tables {
        let cached: Vec<u64> = rows.iter().filter(|r| r["warmup"] == "false").map(|r| num(r, "cached_tokens")).collect();
        assert_eq!(cached, (0..all.len()).map(|r| expected_cached(&all, r)).collect::<Vec<_>>());
    }
    for (_, meta) in p.measure_metas() {
        assert_eq!((meta["isolation"]["done"].as_str(), meta["isolation"]["complete"].as_bool()), (Some("salt"), Some(true)), "{meta}");
    }
}

/// Issue 24: the trace's digest is in every measure's key, so editing the trace (here
/// one answer length, in a file outside the project named by its absolute path)
/// reruns the measures and `pipeline plan` says why; rewriting it byte for byte does
/// not.
#[test]
fn editing_the_trace_reruns_its_measures() {
    let p = Project::new();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("trace.jsonl");
    let mut all = requests();
    all.truncate(3);
    std::fs::write(&file, trace_text(&all)).unwrap();
    p.write("experiments/t.toml", &experiment("trace-edit", &file.display().to_string(), ""));
    p.run_ok();
    p.pipeline(&["plan", "experiments/t.toml"]).status(0).stdout_has("0 to run");
    std::fs::write(&file, trace_text(&all)).unwrap();
    p.pipeline(&["plan", "experiments/t.toml"]).status(0).stdout_has("0 to run");

    all[1].2 = 7;
    std::fs::write(&file, trace_text(&all)).unwrap();
    let plan = p.pipeline(&["plan", "experiments/t.toml"]);
    plan.status(0).stdout_has("trace.digest changed");
    let ran = p.run_ok().ran();
    assert_eq!(ran, set(&["measure[model=a,variant=base,seed=1,batch-size=1,frames=1]", "aggregate", "report"]));
    let rows = p.requests_tables("measure").pop().unwrap();
    assert_eq!(rows.iter().filter(|r| r["warmup"] == "false" && r["completion_tokens"] == "7").count(), 1);
}

/// A trace edited after the run was planned (here while the warm-up runs) is not
/// replayed under the old trace's key: the step fails and says why.
#[test]
fn a_trace_edited_while_running_fails_its_step() {
    let p = Project::new();
    let all = requests();
    p.write("data/t.jsonl", &trace_text(&all));
    let text = experiment("trace-race", "data/t.jsonl", "")
        .replace("warmup-requests = 1", "warmup-requests = 4")
        .replace("ttft-base-ms = 1.0", "ttft-base-ms = 400.0");
    p.write("experiments/t.toml", &text);
    let run = Background::start(&p, &["run", "experiments/t.toml"], "run    measure[");
    p.write("data/t.jsonl", &trace_text(&all[..4]));
    let (status, lines) = run.wait();
    let stderr = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the trace `data/t.jsonl` changed after the run was planned; run again to replay what it holds now"),
        "{stderr}"
    );
}

/// Issue 24's bad-input list for traces: each is an experiment-file error at the
/// `trace` key that names the trace file, its line and the fix.
#[test]
fn a_bad_trace_is_refused_with_its_file_line_and_fix() {
    let p = Project::new();
    p.write("experiments/t.toml", &experiment("trace-bad", "data/t.jsonl", ""));
    let ok = line(0, 10, 2, &[]);
    let ids: Vec<String> = (0..1_000_000).map(|i| i.to_string()).collect();
    let flood = format!(r#"{{"timestamp": 5, "input_length": 10, "output_length": 2, "hash_ids": [{}]}}"#, ids.join(","));
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{ok}\nthis is not json\n"), "`data/t.jsonl` line 2: is not JSON", "each line is one JSON object"),
        (
            format!("{ok}\n{{\"time\": 5}}\n"),
            "`data/t.jsonl` line 2: is not a trace request: missing field `timestamp`",
            "each line is one JSON object",
        ),
        (
            format!("{}\n{}\n", line(50, 10, 2, &[]), line(20, 10, 2, &[])),
            "`data/t.jsonl` line 2: timestamps go backwards: `20` comes after `50`",
            "sort the trace by timestamp",
        ),
        (
            r#"{"timestamp": 0, "input_length": -3, "output_length": 2}"#.into(),
            "`data/t.jsonl` line 1: `input_length` must be a whole number from 1 to 1,000,000 (prompt tokens), found `-3`",
            "lengths count tokens",
        ),
        (
            r#"{"timestamp": 0, "input_length": 3, "output_length": 1e15}"#.into(),
            "`data/t.jsonl` line 1: `output_length` must be a whole number from 1 to 1,000,000",
            "lengths count tokens",
        ),
        (format!("{ok}\n{flood}\n"), "`data/t.jsonl` line 2: is longer than 1 MiB", "1,954 hash ids"),
        ("\n".into(), "`data/t.jsonl` holds no requests", "each line is one JSON object"),
    ];
    for (text, message, hint) in cases {
        p.write("data/t.jsonl", &text);
        p.pipeline(&["plan", "experiments/t.toml"])
            .status(2)
            .stderr_has("t.toml:10:9: workload.trace: ")
            .stderr_has(message)
            .stderr_has(hint);
    }
    std::fs::remove_file(p.path().join("data/t.jsonl")).unwrap();
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("`data/t.jsonl` cannot be read: ")
        .stderr_has("relative to the project root");
    p.write("experiments/t.toml", &experiment("trace-bad", "/dev/zero", ""));
    p.pipeline(&["plan", "experiments/t.toml"]).status(2).stderr_has("`/dev/zero` cannot be read: it is not a regular file");
}

/// Issue 24: a trace past the most requests one may hold is refused at the first line
/// past the cap (the unit test `trace::tests::reading_stops_at_the_cap` shows that an
/// endless one is too, reading nothing after it).
#[test]
fn a_trace_past_a_million_requests_is_refused_at_the_cap() {
    let p = Project::new();
    p.write("experiments/t.toml", &experiment("trace-cap", "data/t.jsonl", ""));
    let one = r#"{"timestamp":0,"input_length":1,"output_length":1}
"#;
    p.write("data/t.jsonl", &one.repeat(1_000_001));
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has(
            "workload.trace: `data/t.jsonl` line 1000001: is past the 1,000,000 requests a trace may hold; nothing after it was read",
        )
        .stderr_has("hint: replay a part of it: cut the trace into several files");
}

/// What a trace fixes (the load, the lengths, the prompts) cannot also be set: each
/// such key is refused where it is written, with the fix; so is a hosted API, and the
/// trace keys without `arrival = "trace"` (and the reverse).
#[test]
fn options_a_trace_fixes_are_refused() {
    let p = Project::new();
    p.write("data/t.jsonl", &trace_text(&requests()));
    let text = experiment(
        "trace-conflicts",
        "data/t.jsonl",
        "request-rate = 2.0\nturns = 3\nmax-tokens = 8\nquestions = [\"x\"]\ntrace-speedup = 0\n",
    )
    .replace("model = [\"a\"]", "model = [\"a\", \"o\"]\nbatch-size = [1, 2]\nframes = [0]")
    .replace("[workload]", "[models.o]\nbackend = \"openai\"\napi-key-env = \"OPENAI_API_KEY\"\n\n[workload]");
    p.write("experiments/t.toml", &text);
    let out = p.pipeline(&["plan", "experiments/t.toml"]);
    out.status(2)
        .stderr_has("workload.request-rate: does not apply to a trace replay: the trace's timestamps set when requests go out")
        .stderr_has("workload.turns: does not apply to a trace replay: each line of the trace is one request")
        .stderr_has("workload.max-tokens: does not apply to a trace replay: each request's `output_length` is its `max_tokens`")
        .stderr_has("workload.questions: does not apply to a trace replay: trace prompts are token ids")
        .stderr_has("workload.trace-speedup: must be a number from 0.001 to 1,000")
        .stderr_has("matrix.batch-size: does not apply to a trace replay")
        .stderr_has("matrix.frames: does not apply to a trace replay")
        .stderr_has("models.o.backend: a trace replay sends exact prompts as token ids")
        .stderr_has("hint: remove `batch-size`");

    let plain = experiment("trace-conflicts", "data/t.jsonl", "trace-speedup = 2.0\n").replace("arrival = \"trace\"\n", "");
    p.write("experiments/t.toml", &plain);
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("workload.trace: only applies to arrival = \"trace\"")
        .stderr_has("workload.trace-speedup: only applies to arrival = \"trace\"");
    let bare = experiment("trace-conflicts", "data/t.jsonl", "").replace("trace = \"data/t.jsonl\"\n", "");
    p.write("experiments/t.toml", &bare);
    p.pipeline(&["plan", "experiments/t.toml"]).status(2).stderr_has("workload.arrival: `trace` arrival needs `trace`, the file to replay");
}

/// The shipped example, as a user runs it: both cells replay every request of the
/// fixture with its lengths, the shared system block and each session's history hit
/// the simulator's cache, twice the speed spans half the time, and the report renders.
#[test]
fn the_shipped_trace_example_replays_on_the_simulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = Project::new();
    p.write("experiments/t.toml", &std::fs::read_to_string(root.join("experiments/trace_replay.toml")).unwrap());
    let fixture = std::fs::read_to_string(root.join("experiments/data/trace_small.jsonl")).unwrap();
    p.write("experiments/data/trace_small.jsonl", &fixture);
    p.run_ok();
    let lines: Vec<Value> = fixture.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tables = p.requests_tables("measure");
    assert_eq!(tables.len(), 2, "speedup 1 and 2");
    let mut spans = Vec::new();
    for rows in &tables {
        let rows: Vec<&Row> = rows.iter().filter(|r| r["warmup"] == "false" && r["error"] == "none").collect();
        assert_eq!(rows.len(), lines.len());
        for (row, line) in rows.iter().zip(&lines) {
            assert_eq!(num(row, "prompt_tokens"), line["input_length"].as_u64().unwrap());
            assert_eq!(num(row, "completion_tokens"), line["output_length"].as_u64().unwrap());
        }
        // Every request after the first shares at least the system block (512 tokens).
        assert!(rows.iter().skip(1).all(|r| num(r, "cached_tokens") >= 512), "{rows:?}");
        spans.push(num(rows.last().unwrap(), "scheduled_ns") - num(rows[0], "scheduled_ns"));
    }
    spans.sort();
    let last_ms = lines.last().unwrap()["timestamp"].as_u64().unwrap();
    let due = [last_ms * 500_000, last_ms * 1_000_000];
    assert!(spans.iter().zip(due).all(|(s, d)| s.abs_diff(d) < 1_000), "{spans:?} vs {due:?} ns");
    let report = p.read("reports/trace_replay/README.md");
    assert!(report.contains("a trace replay of the 24 requests of experiments/data/trace_small.jsonl"), "{report}");
    // One turn per request: no per-turn chart that would draw a single point.
    assert!(report.contains("Every request is a turn of its own (a trace replay)"), "{report}");
    assert!(
        !p.path().join("reports/trace_replay/per_turn_1.svg").exists() && !p.path().join("reports/trace_replay/cached_share.svg").exists()
    );
}
