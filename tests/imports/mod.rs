//! Results from other tools: the reference study's CSVs, AIPerf's `profile_export.jsonl`
//! and `vllm bench serve`'s detailed JSON, read into the same rows as a measurement.

use super::*;

/// The study's CSV parsed independently of the importer: (TTFT, completion, answer)
/// per turn, TTFT `None` where the file has no such column.
fn study_turns(text: &str) -> Vec<(Option<f64>, f64, String)> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let at = |name: &str| header.iter().position(|h| h == name);
    let (ttft, total, answer) = (at("times_to_first_token"), at("times_to_completion").unwrap(), at("assistant_responses").unwrap());
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (ttft.map(|i| r[i].parse::<f64>().unwrap()), r[total].parse::<f64>().unwrap(), r[answer].to_string())
        })
        .collect()
}

/// The shipped example, as a user runs it (the simulator's conversation shortened to
/// keep the test quick): each imported turn's median and min–max across seeds is the
/// fixtures' own, a model with one run and no TTFT column imports with its TTFT empty
/// and the report says which curves lack it, the answers are shown, the simulator's
/// text-only curve sits beside its image curve, a rerun reads nothing again, and an
/// edited file is read again alone.
#[test]
fn the_study_example_imports_its_runs_beside_the_simulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = Project::new();
    let example = std::fs::read_to_string(root.join("experiments/study_import.toml")).unwrap();
    p.write("experiments/t.toml", &example.replace("turns = 60", "turns = 2"));
    for e in std::fs::read_dir(root.join("experiments/study")).unwrap().flatten() {
        p.write(&format!("experiments/study/{}", e.file_name().to_string_lossy()), &std::fs::read_to_string(e.path()).unwrap());
    }
    let first = p.run_ok();
    let imports: BTreeSet<String> = first.ran().into_iter().filter(|id| id.starts_with("import[")).collect();
    assert_eq!(imports.len(), 7, "two models with three seeds, one with one: {imports:?}");

    // Turn 7 of qwen-32b, from the three files by hand.
    let turns = |file: &str| study_turns(&p.read(&format!("experiments/study/{file}")));
    let mut at7: Vec<f64> = (1..=3).map(|run| turns(&format!("qwen2.5-vl-32b_run_{run}.csv"))[7].1 * 1e3).collect();
    at7.sort_by(f64::total_cmp);
    let per_turn = csv_rows(&p.read("reports/study/per_turn.csv"));
    let row = per_turn.iter().find(|r| r["model"] == "qwen-32b" && r["turn"] == "7").expect("turn 7 of qwen-32b");
    let got = |r: &Row, c: &str| r[c].parse::<f64>().unwrap();
    assert!((got(row, "e2e_median_ms") - at7[1]).abs() < 1e-6, "{row:?} vs {at7:?}");
    assert!((got(row, "e2e_min_ms") - at7[0]).abs() < 1e-6 && (got(row, "e2e_max_ms") - at7[2]).abs() < 1e-6, "{row:?}");
    assert_eq!(per_turn.iter().filter(|r| r["model"] == "qwen-32b").count(), 60, "all 60 turns of the files");

    // The text-only model: one run, no TTFT column, so its TTFT is empty.
    let text_only = turns("qwen2.5-vl-7b-text-only_run_1.csv");
    let row = per_turn.iter().find(|r| r["model"] == "qwen-7b-text" && r["turn"] == "3").expect("turn 3 of qwen-7b-text");
    assert_eq!((row["seeds"].as_str(), row["frames"].as_str(), row["ttft_median_ms"].as_str()), ("1", "0", ""), "{row:?}");
    assert!((got(row, "e2e_median_ms") - text_only[3].1 * 1e3).abs() < 1e-6, "{row:?}");
    // The simulator at one image and at none: two curves of one model.
    let sim: BTreeSet<&str> = per_turn.iter().filter(|r| r["model"] == "sim-32b").map(|r| r["frames"].as_str()).collect();
    assert_eq!(sim, BTreeSet::from(["0", "1"]));

    let summary = csv_rows(&p.read("reports/study/summary.csv"));
    let imported = summary.iter().find(|r| r["model"] == "claude-sonnet").unwrap();
    assert_eq!((imported["output_tok_per_s"].as_str(), imported["tpot_p50_ms"].as_str()), ("", ""), "nothing the files lack is made up");
    let readme = p.read("reports/study/README.md");
    assert!(
        readme.contains("6 cell(s) of claude-sonnet, qwen-32b were imported from study-csv files, which do not record request timestamps"),
        "{readme}"
    );
    assert!(
        readme.contains("1 cell(s) of qwen-7b-text were imported from study-csv files, which do not record time to first token (no times_to_first_token column), request timestamps"),
        "{readme}"
    );
    // The answers as the files have them (one run's first turns), on one line of the
    // Markdown table, with their length in characters (the files record no tokens).
    let shown = |run: u32| {
        let answer = &turns(&format!("claude-sonnet_run_{run}.csv"))[0].2;
        let line: String = answer.chars().take(40).map(|c| if c == '\n' { ' ' } else { c }).collect();
        format!("| 1 | {} | {}", answer.chars().count(), line.replace('*', "\\*").replace('#', "\\#").replace('`', "\\`"))
    };
    assert!((1..=3).any(|run| readme.contains(&shown(run))), "{:?} not in the README's sample answers", shown(2));

    assert!(p.run_ok().ran().is_empty(), "a rerun reads nothing again");
    let file = "experiments/study/claude-sonnet_run_2.csv";
    let text = p.read(file);
    p.write(file, &text.replacen("\n", "\n0.5,0.9,\"an answer, added\"\n", 1));
    let again = p.run_ok().ran();
    assert_eq!(again.len(), 3, "the edited file's import, the aggregate and the report: {again:?}");
    assert!(again.iter().any(|id| id.starts_with("import[model=claude-sonnet,variant=base,seed=66")), "{again:?}");
}

/// The study's files as its tools wrote them, and as editors save them: a byte-order
/// mark (refused before with "no column `times_to_first_token` in the header (it has:
/// times_to_first_token, …)"), CRLF line ends, no final newline, answers quoted over
/// several lines with commas and doubled quotes. Each turn is one record; the answers
/// land in the `answer` column; a bad number names the line its record starts on.
#[test]
fn study_csv_files_as_written_import_record_by_record() {
    let p = Project::new();
    let file = "\u{feff}times_to_first_token,times_to_completion,assistant_responses\r\n\
                0.25,1.5,\"### Key Elements\r\n\r\n1. a \"\"chart\"\", with axes\r\n2. a legend\"\r\n\
                0.5,1.25,plain\r\n\
                0.125,0.75,\"last, no newline\"";
    p.write("r/run_1.csv", file);
    p.write("r/run_2.csv", "times_to_completion,assistant_responses\n2.0,\"x\ny\"\n2.5,z\n3.0,w\n");
    p.write(
        "experiments/t.toml",
        "name = \"s\"\n[models.a]\nbackend = \"import\"\nformat = \"study-csv\"\nresults = { 1 = \"r/run_1.csv\", 2 = \"r/run_2.csv\" }\n[matrix]\nmodel = [\"a\"]\nseed = [1, 2]\n[report]\ndir = \"reports/s\"\n",
    );
    p.run_ok();
    let tables = p.requests_tables("import");
    let by_seed = |seed: &str| tables.iter().find(|t| t[0]["seed"] == seed).unwrap_or_else(|| panic!("seed {seed}: {tables:?}"));
    let one = by_seed("1");
    assert_eq!(one.len(), 3, "three records, not six lines: {one:?}");
    assert_eq!(one[0]["answer"], "### Key Elements\r\n\r\n1. a \"chart\", with axes\r\n2. a legend");
    assert_eq!((one[0]["ttft_ms"].as_str(), one[0]["e2e_ms"].as_str()), ("250.0", "1500.0"));
    assert_eq!((one[2]["turn"].as_str(), one[2]["e2e_ms"].as_str(), one[2]["answer"].as_str()), ("2", "750.0", "last, no newline"));
    let two = by_seed("2");
    assert_eq!((two[0]["ttft_ms"].as_str(), two[0]["e2e_ms"].as_str(), two[0]["answer"].as_str()), ("", "2000.0", "x\ny"));

    // A bad number in the record after a multi-line answer: the line the record starts on.
    p.write("r/run_2.csv", "times_to_completion,assistant_responses\n2.0,\"x\ny\nz\"\n2..5,\"p\nq\"\n");
    p.pipeline(&["run", "experiments/t.toml"])
        .status(1)
        .stderr_has("r/run_2.csv:5: `times_to_completion` is `2..5`, not a number of seconds")
        .stderr_has("format `study-csv` reads a CSV with a header holding `times_to_completion`");
}

/// AIPerf's records and vLLM's benchmark JSON: latencies, token counts, per-chunk gaps
/// (the inter-token latency), warm-up and failed requests land where a measurement
/// puts them.
#[test]
fn aiperf_and_vllm_bench_results_join_the_tables() {
    let p = Project::new();
    let record = |session: u32, turn: u32, phase: &str, ttft_ms: f64, e2e_ms: f64| {
        format!(
            r#"{{"metadata":{{"session_num":{session},"turn_index":{turn},"request_start_ns":{start},"request_end_ns":{end},"benchmark_phase":"{phase}"}},"metrics":{{"time_to_first_token":{{"value":{ttft_ms},"unit":"ms"}},"request_latency":{{"value":{e2e_ms},"unit":"ms"}},"input_sequence_length":{{"value":500,"unit":"tokens"}},"output_sequence_length":{{"value":5,"unit":"tokens"}},"inter_chunk_latency":{{"value":[10.0,10.0,10.0,30.0],"unit":"ms"}}}},"error":null}}"#,
            start = 1_000_000_000u64 * (session as u64 * 2 + turn as u64 + 1),
            end = 1_000_000_000u64 * (session as u64 * 2 + turn as u64 + 1) + (e2e_ms * 1e6) as u64,
        )
    };
    let failed = r#"{"metadata":{"session_num":2,"turn_index":0,"request_start_ns":9000000000,"request_end_ns":9000100000,"benchmark_phase":"profiling"},"metrics":{},"error":{"code":429,"type":"RateLimited","message":"slow down"}}"#;
    let lines = [
        record(0, 0, "warmup", 900.0, 990.0),
        record(0, 0, "profiling", 100.0, 160.0),
        record(0, 1, "profiling", 120.0, 180.0),
        record(1, 0, "profiling", 110.0, 170.0),
        record(1, 1, "profiling", 130.0, 190.0),
        failed.to_string(),
    ];
    p.write("runs/aiperf.jsonl", &lines.join("\n"));
    p.write(
        "runs/bench.json",
        r#"{"backend":"openai-chat","ttfts":[0.05,0.07,0.0],"latencies":[0.25,0.27,0.0],"itls":[[0.05,0.05],[0.1,0.1],[]],
            "start_times":[100.0,100.1,100.2],"input_lens":[200,200,200],"output_lens":[3,3,0],"generated_texts":["a b c","d e f",""],
            "errors":["","","Bad Request"]}"#,
    );
    p.write(
        "experiments/t.toml",
        r#"
name = "imports"
[models.a]
backend = "import"
format = "aiperf"
results = { 1 = "runs/aiperf.jsonl" }
[models.b]
backend = "import"
format = "vllm-bench"
results = { 1 = "runs/bench.json" }
[matrix]
model = ["a", "b"]
seed = [1]
[report]
dir = "reports/t"
"#,
    );
    p.run_ok();
    let summary = csv_rows(&p.read("reports/t/summary.csv"));
    let (a, b) = (&summary[0], &summary[1]);
    let num = |r: &Row, c: &str| r[c].parse::<f64>().unwrap_or_else(|_| panic!("{c} of {r:?}"));
    // AIPerf: the warm-up left out, the 429 counted, TTFT p50 of 100/110/120/130.
    assert_eq!((a["requests"].as_str(), a["errors"].as_str()), ("5", "1"), "{a:?}");
    assert_eq!(num(a, "ttft_p50_ms"), 115.0);
    assert_eq!(num(a, "e2e_max_ms"), 190.0);
    // (e2e − ttft) / (tokens − 1) = 60 / 4.
    assert_eq!(num(a, "tpot_p50_ms"), 15.0);
    // Every gap pooled: three of 10 ms and one of 30 ms per request.
    assert_eq!((num(a, "itl_p50_ms"), num(a, "itl_max_ms")), (10.0, 30.0));
    // vLLM's bench: seconds to ms, the failed request counted, its gaps kept.
    assert_eq!((b["requests"].as_str(), b["errors"].as_str()), ("3", "1"), "{b:?}");
    assert_eq!((num(b, "ttft_p50_ms"), num(b, "e2e_p50_ms")), (60.0, 260.0));
    assert_eq!((num(b, "itl_p50_ms"), num(b, "itl_max_ms")), (75.0, 100.0));
    let errors = csv_rows(&p.read("reports/t/errors.csv"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|r| r["model"] == "a" && r["error"] == "http_429" && r["last_status"] == "429"), "{errors:?}");
    assert!(errors.iter().any(|r| r["model"] == "b" && r["error"] == "failed"), "{errors:?}");
}

/// A real `vllm bench serve --save-result --save-detailed` file (vLLM 0.32.0's CPU
/// build and the tiny model of `tests/vllm`, 20 random prompts at concurrency 2; the
/// tokenizer's local path replaced by its name): imported, its per-request lists give
/// exactly the summary vLLM wrote beside them in the same file.
#[test]
fn a_real_vllm_bench_file_agrees_with_vllms_own_summary() {
    let p = Project::new();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm-bench-tiny.json")).unwrap();
    p.write("runs/bench.json", &text);
    p.write(
        "experiments/t.toml",
        "name = \"vb\"\n[models.tiny]\nbackend = \"import\"\nformat = \"vllm-bench\"\nresults = { 1 = \"runs/bench.json\" }\n[matrix]\nmodel = [\"tiny\"]\nseed = [1]\nbatch-size = [2]\n[report]\ndir = \"reports/t\"\n",
    );
    p.run_ok();
    let theirs: Value = serde_json::from_str(&text).unwrap();
    let ours = &csv_rows(&p.read("reports/t/summary.csv"))[0];
    assert_eq!(ours["requests"], theirs["completed"].to_string());
    for metric in ["ttft", "tpot", "itl"] {
        for (stat, vllm) in [("mean", "mean"), ("p50", "median"), ("p99", "p99")] {
            let mine: f64 = ours[&format!("{metric}_{stat}_ms")].parse().unwrap();
            let vllm = theirs[format!("{vllm}_{metric}_ms")].as_f64().unwrap();
            assert!((mine - vllm).abs() < 1e-9 * vllm.max(1.0), "{metric} {stat}: ours {mine}, vLLM's {vllm}");
        }
    }
}

/// Bad files and bad settings: each message names the file and line, and the fix.
#[test]
fn bad_imports_name_the_file_and_line() {
    let p = Project::new();
    let experiment = |format: &str, files: &str, seeds: &str| {
        format!(
            "name = \"bad\"\n[models.a]\nbackend = \"import\"\nformat = \"{format}\"\nresults = {{ {files} }}\n[matrix]\nmodel = [\"a\"]\nseed = [{seeds}]\n"
        )
    };
    p.write("r/ok.csv", "times_to_first_token,times_to_completion\n0.2,1.0\n");
    p.write("r/units.csv", "times_to_first_token,times_to_completion\n0.2,1.0\n1000000,1000001\n");
    p.write("r/bench.json", r#"{"ttfts":[0.1],"latencies":[0.2]}"#);

    // A seed without a file: a config error at the line of `results`.
    p.write("experiments/t.toml", &experiment("study-csv", "1 = \"r/ok.csv\"", "1, 2"));
    p.pipeline(&["run", "experiments/t.toml"])
        .status(2)
        .stderr_has("experiments/t.toml:5:")
        .stderr_has("no file for seed 2 of the matrix")
        .stderr_has("[[matrix.exclude]] model = \"a\", seed = 2");
    // A misspelt format, and a file that is not there.
    p.write("experiments/t.toml", &experiment("study_csv", "1 = \"r/missing.csv\"", "1"));
    p.pipeline(&["run", "experiments/t.toml"])
        .status(2)
        .stderr_has("unknown format `study_csv`")
        .stderr_has("did you mean `study-csv`?")
        .stderr_has("cannot read `r/missing.csv`");
    // A time in the wrong unit: the file and its line.
    p.write("experiments/t.toml", &experiment("study-csv", "1 = \"r/units.csv\"", "1"));
    p.pipeline(&["run", "experiments/t.toml"])
        .status(1)
        .stderr_has("r/units.csv:3: times_to_first_token is 1000000 s, longer than any request takes")
        .stderr_has("format `study-csv` reads a CSV");
    // A file of another format.
    p.write("experiments/t.toml", &experiment("study-csv", "1 = \"r/bench.json\"", "1"));
    p.pipeline(&["run", "experiments/t.toml"]).status(1).stderr_has("r/bench.json:1: no column `times_to_completion` in the header");
}

/// Issue 21, item 5: AIPerf and vLLM-bench files with what no request does (a first
/// token after the completion, an end before the start, a timestamp near 2⁶⁴) were
/// imported with exit 0 and a garbage throughput; a device, a pipe or an oversized
/// file was read until memory or patience ran out. Each is refused, naming the file
/// and the record, with the fix.
#[test]
fn impossible_and_endless_files_are_refused() {
    let p = Project::new();
    let experiment = |format: &str, file: &str| {
        format!(
            "name = \"bad\"\n[models.a]\nbackend = \"import\"\nformat = \"{format}\"\nresults = {{ 1 = \"{file}\" }}\n[matrix]\nmodel = [\"a\"]\nseed = [1]\n"
        )
    };
    let record = |start: u64, end: u64, ttft_ms: f64, e2e_ms: f64| {
        format!(
            r#"{{"metadata":{{"session_num":0,"turn_index":0,"request_start_ns":{start},"request_end_ns":{end},"benchmark_phase":"profiling"}},"metrics":{{"time_to_first_token":{{"value":{ttft_ms},"unit":"ms"}},"request_latency":{{"value":{e2e_ms},"unit":"ms"}}}},"error":null}}"#
        )
    };
    let ok = record(1_000_000_000, 1_300_000_000, 100.0, 300.0);
    let cases = [
        (
            "late.jsonl",
            record(2_000_000_000, 2_300_000_000, 500.0, 300.0),
            "late.jsonl:2: the first token (0.5 s) comes after the completion (0.3 s)",
        ),
        (
            "early.jsonl",
            record(2_300_000_000, 2_000_000_000, 100.0, 300.0),
            "early.jsonl:2: the request ends (at 2000000000 ns) before it starts",
        ),
        (
            "far.jsonl",
            record(18_446_744_073_000_000_000, 18_446_744_073_300_000_000, 100.0, 300.0),
            "far.jsonl:2: a timestamp of 18446744073300000000 ns lies 1.845e10 s after the file's first (1000000000 ns, line 1)",
        ),
    ];
    for (name, bad, expected) in cases {
        p.write(&format!("r/{name}"), &format!("{ok}\n{bad}\n"));
        p.write("experiments/t.toml", &experiment("aiperf", &format!("r/{name}")));
        p.pipeline(&["run", "experiments/t.toml"]).status(1).stderr_has(expected).stderr_has("format `aiperf` reads AIPerf's");
    }
    p.write("r/bench.json", r#"{"ttfts":[0.1,0.4],"latencies":[0.2,0.3],"start_times":[5.0,5.5],"errors":["",""]}"#);
    p.write("experiments/t.toml", &experiment("vllm-bench", "r/bench.json"));
    p.pipeline(&["run", "experiments/t.toml"])
        .status(1)
        .stderr_has("bench.json:1: request 1: the first token (0.4 s) comes after the completion (0.3 s)");

    // Neither a device nor a pipe is opened; a file past the size cap is not read.
    let fifo = p.path().join("r/fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = std::fs::File::create(p.path().join("r/big.csv")).unwrap();
    big.set_len((256 << 20) + 1).unwrap();
    for (file, expected) in [
        ("/dev/zero", "cannot read `/dev/zero`: it is not a regular file"),
        ("/dev/urandom", "cannot read `/dev/urandom`: it is not a regular file"),
        ("r/fifo", "cannot read `r/fifo`: it is not a regular file"),
        ("r/big.csv", "cannot read `r/big.csv`: it is larger than 256 MiB"),
    ] {
        p.write("experiments/t.toml", &experiment("study-csv", file));
        // Killed after 20 s, so a read that never ends fails the test instead of hanging it.
        let out = cargo_bin_cmd!("pipeline")
            .current_dir(p.path())
            .env_remove("PIPELINE_CACHE")
            .args(["run", "experiments/t.toml"])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains("experiments/t.toml:5:") && stderr.contains(expected) && stderr.contains("hint:"), "{file}: {stderr}");
    }
}

/// Text-only turns (`frames = 0`, refused before as "must be a whole number from 1 to
/// 1,024"): each turn is its question alone, resent with the history like any turn, and
/// the report shows the text-only curve beside the image curve of the same model.
#[test]
fn text_only_turns_run_on_the_simulator_beside_image_turns() {
    let p = Project::new();
    p.write(
        "experiments/t.toml",
        &Exp::new("text")
            .sim("s", QUICK_SIM)
            .served_as("m")
            .workload("turns", "3")
            .workload("resolution", "\"64x48\"")
            .workload("questions", "[\"A passage of text, then: what is it about?\"]")
            .matrix("seed", "[1]")
            .matrix("frames", "[0, 1]")
            .table("[report]\ndir = \"reports/t\"")
            .text(),
    );
    p.run_ok();
    let requests = p.requests_tables("measure");
    assert_eq!(requests.len(), 2, "one cell per frame count");
    let tokens = |frames: &str| -> Vec<u64> {
        let table = requests.iter().find(|t| t[0]["frames"] == frames).unwrap_or_else(|| panic!("frames = {frames}"));
        table.iter().map(|r| r["prompt_tokens"].parse().unwrap()).collect()
    };
    let (text, image) = (tokens("0"), tokens("1"));
    // The simulator counts an image's tokens as Qwen2.5-VL does: without images the
    // prompts are shorter, and they still grow with the resent history.
    assert!(text.iter().zip(&image).all(|(t, i)| t < i), "{text:?} vs {image:?}");
    assert!(text.windows(2).all(|w| w[0] < w[1]), "{text:?}");
    let datagen = p.all_files().into_iter().filter(|(path, _)| path.ends_with("conversations.json")).collect::<Vec<_>>();
    let no_image = datagen.iter().any(|(_, bytes)| {
        let d: Value = serde_json::from_slice(bytes).unwrap();
        d["conversations"][0]["turns"].as_array().unwrap().iter().all(|t| t["images"].as_array().unwrap().is_empty())
    });
    assert!(no_image, "a dataset without images");
    let per_turn = csv_rows(&p.read("reports/t/per_turn.csv"));
    let curves: BTreeSet<&str> = per_turn.iter().map(|r| r["frames"].as_str()).collect();
    assert_eq!(curves, BTreeSet::from(["0", "1"]), "a text-only curve beside the image curve");
    assert!(p.read("reports/t/README.md").contains("frames=0"), "the report names the text-only curve");
}

/// The experiment docs/experiment-file.md gives for the study's 18 configurations, run
/// as written on files of the study's shape (the study's own are not committed; they
/// were checked by hand against pandas): 50 files, one import each, 18 curves, the
/// text-only ones at frames = 0, and the configurations without a TTFT column named.
#[test]
fn the_documented_study_experiment_imports_all_50_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/experiment-file.md")).unwrap();
    let section = &docs[docs.find("### The reference study's 18 configurations").expect("the section")..];
    let start = section.find("```toml\n").unwrap() + 8;
    let toml = &section[start..start + section[start..].find("```\n").unwrap()];
    let p = Project::new();
    p.write("experiments/t.toml", toml);
    let experiment: toml::Value = toml::from_str(toml).unwrap();
    let mut files = 0;
    for (name, model) in experiment["models"].as_table().unwrap() {
        // As the study has them: TTFT in the base, AWQ and Claude image runs only.
        let ttft =
            ["qwen-3b", "qwen-3b-awq", "qwen-7b", "qwen-7b-awq", "qwen-32b", "qwen-32b-awq", "claude-sonnet"].contains(&name.as_str());
        for (run, file) in model["results"].as_table().unwrap() {
            let turns: String = (0..60)
                .map(|t| {
                    let total = 1.0 + t as f64 / 100.0 + run.parse::<f64>().unwrap() / 1000.0;
                    if ttft { format!("{},{total},\"turn {t}, answered\"\n", total / 2.0) } else { format!("{total},\"turn {t}\"\n") }
                })
                .collect();
            let header = if ttft {
                "times_to_first_token,times_to_completion,assistant_responses\n"
            } else {
                "times_to_completion,assistant_responses\n"
            };
            p.write(file.as_str().unwrap(), &format!("{header}{turns}"));
            files += 1;
        }
    }
    assert_eq!(files, 50, "the study's 50 files");
    let ran = p.run_ok().ran();
    assert_eq!(ran.iter().filter(|id| id.starts_with("import[")).count(), 50, "{ran:?}");
    let per_turn = csv_rows(&p.read("reports/vlm-latency-bench/per_turn.csv"));
    let curves: BTreeSet<(&str, &str)> = per_turn.iter().map(|r| (r["model"].as_str(), r["frames"].as_str())).collect();
    assert_eq!(curves.len(), 18, "{curves:?}");
    assert_eq!(curves.iter().filter(|(_, frames)| *frames == "0").count(), 5, "five text-only configurations");
    let readme = p.read("reports/vlm-latency-bench/README.md");
    assert!(readme.contains("29 cell(s) of claude-sonnet-text, qwen-32b-4gpu, "), "{readme}");
}
