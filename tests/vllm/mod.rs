//! A real `vllm serve`: vLLM's CPU build and a tiny random-weight Qwen2.5-VL that
//! counts image tokens as the real model does, both installed once per machine by
//! `scripts/vllm/install.sh` (under `~/.cache/pipeline/vllm`). One server, started by
//! `pipeline` itself, serves every cell of the test. The conversations come from a
//! chat JSONL file of our own (small generated images resized to 720p, one question,
//! recorded answers), and `[quality]` scores the tiny model's answers against those
//! recorded answers: random weights score about nothing, and the test checks the
//! arithmetic against the request rows, not the model.
//!
//! `PIPELINE_SKIP_VLLM=1` skips it (say, on a laptop without the 6 GB install).

use std::path::PathBuf;

use super::{Project, processes_with};

/// Prompt tokens of one 1280×720 image in Qwen2.5-VL: each side rounded to a multiple
/// of 28 (1288 × 728), one token per 28×28 patch (46 × 26), plus vision start and end.
const IMAGE_TOKENS: i64 = 46 * 26 + 2;
/// The one question of every turn.
const QUESTION: &str = "What is in this image?";
/// The recorded answers of the file's two conversations, turn by turn (the
/// references `[quality]` scores against).
const RECORDED: [[&str; 3]; 2] = [["a red square", "a blue circle", "two squares"], ["a gradient", "nothing new", "the same gradient"]];

/// `data/chat.jsonl`: two conversations of three turns, each an image (64×36, which
/// the data step resizes to 1280×720) and [`QUESTION`], with [`RECORDED`] answers.
fn write_conversations(p: &Project) {
    let mut lines = Vec::new();
    for (c, answers) in RECORDED.iter().enumerate() {
        let mut messages = Vec::new();
        for (t, answer) in answers.iter().enumerate() {
            let rel = format!("data/c{c}-t{t}.png");
            std::fs::create_dir_all(p.path().join("data")).unwrap();
            image::RgbImage::from_fn(64, 36, |x, y| image::Rgb([(x * 4) as u8, (y * 7) as u8, (c * 90 + t * 40) as u8]))
                .save(p.path().join(&rel))
                .unwrap();
            messages.push(serde_json::json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("c{c}-t{t}.png")}},
                {"type": "text", "text": QUESTION}
            ]}));
            messages.push(serde_json::json!({"role": "assistant", "content": answer}));
        }
        lines.push(serde_json::json!({"id": format!("c{c}"), "messages": messages}).to_string());
    }
    p.write("data/chat.jsonl", &lines.join("\n"));
}

/// What vLLM should count as each turn's prompt tokens, by the arithmetic: the chat
/// template's tokens (the tiny model's own tokenizer, run in the venv), where each
/// image is `<|vision_start|><|image_pad|><|vision_end|>`, plus the 1,196 − 1 tokens
/// each `<|image_pad|>` stands for. `conversations`: each one's answers, in turn order.
fn expected_prompt_tokens(home: &std::path::Path, conversations: &[Vec<String>]) -> Vec<Vec<i64>> {
    const SCRIPT: &str = r#"
import json, sys
from transformers import AutoTokenizer
req = json.load(sys.stdin)
tok = AutoTokenizer.from_pretrained(req["model"])
out = []
for answers in req["conversations"]:
    msgs, counts = [], []
    for t, answer in enumerate(answers):
        msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": req["question"]}]})
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        counts.append(len(ids) + (req["patches"] - 1) * (t + 1))
        msgs.append({"role": "assistant", "content": answer})
    out.append(counts)
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = std::process::Command::new(home.join("venv/bin/python"))
        .args(["-c", SCRIPT])
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    let request = serde_json::json!({
        "model": home.join("tiny-qwen2.5-vl"), "conversations": conversations, "question": QUESTION, "patches": IMAGE_TOKENS - 2,
    });
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn install() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vllm/install.sh");
    let out = std::process::Command::new("bash").arg(script).output().expect("bash runs");
    assert!(out.status.success(), "scripts/vllm/install.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_real_vllm_is_measured_with_cells_isolated_and_its_metrics_beside() {
    if std::env::var_os("PIPELINE_SKIP_VLLM").is_some() {
        eprintln!("skipped: PIPELINE_SKIP_VLLM is set");
        return;
    }
    let home = install();
    let model = home.join("tiny-qwen2.5-vl");
    let p = Project::new();
    write_conversations(&p);
    p.write(
        "experiments/v.toml",
        &format!(
            r#"
name = "real-vllm"

[models.tiny]
backend = "vllm"
model = "{}"
served-name = "tiny"

[server]
dtype = "bfloat16"
max-model-len = 16384
startup-timeout-s = 1200

[workload]
turns = 3
max-tokens = 4
warmup-requests = 0
request-timeout-s = 300
metrics-interval-s = 0.1
conversations = "data/chat.jsonl"
resolution = "1280x720"

[matrix]
model = ["tiny"]
seed = [1337]
batch-size = [1, 2]

[[axis]]
name = "isolation"
workload = "cache-isolation"
values = ["reset", "none", "salt"]

[report]
dir = "reports/v"

[quality]
score = ["exact", "contains"]
"#,
            model.display()
        ),
    );
    let path = format!("{}:{}", home.join("venv/bin").display(), std::env::var("PATH").unwrap_or_default());
    let env = [
        ("PATH", path.as_str()),
        // vLLM's CPU build: 1 GiB of KV cache is plenty; no network, no telemetry.
        ("VLLM_CPU_KVCACHE_SPACE", "1"),
        ("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        ("HF_HUB_OFFLINE", "1"),
        ("VLLM_NO_USAGE_STATS", "1"),
    ];
    let out = p.pipeline_env(&["run", "experiments/v.toml"], &env);
    let log = std::fs::read_dir(p.path().join("cache/logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert_eq!(out.code, 0, "{}\nserver log ends:\n{tail}", out.stderr);
    assert!(processes_with("vllm serve").iter().all(|c| !c.contains(&model.display().to_string())), "a vLLM is left behind");

    let cells = super::isolation::rows_by_cell(&p);
    assert_eq!(cells.len(), 6, "{:?}", cells.keys());
    // What was measured, for the log: per request, the cached share and the TTFT.
    for ((batch, isolation), rows) in &cells {
        for r in rows {
            eprintln!(
                "batch {batch} {isolation:<5} conversation {} turn {}: {} prompt tokens, {} cached, ttft {} ms",
                r["conversation"], r["turn"], r["prompt_tokens"], r["cached_tokens"], r["ttft_ms"]
            );
        }
    }
    for ((batch, isolation), rows) in &cells {
        assert_eq!(rows.len(), 3 * batch.parse::<usize>().unwrap(), "{batch}/{isolation}");
        for r in rows {
            assert_eq!(r["error"], "none", "{r:?}");
            assert!(!r["cached_tokens"].is_empty(), "cached tokens are recorded: {r:?}");
        }
        // Every turn adds one image, the question and the last answer to the resent
        // history; vLLM counts exactly what the arithmetic says.
        let conversations: Vec<Vec<String>> = rows.chunks(3).map(|c| c.iter().map(|r| r["answer"].clone()).collect()).collect();
        let expected = expected_prompt_tokens(&home, &conversations);
        for (conv, expected) in rows.chunks(3).zip(expected) {
            let tokens: Vec<i64> = conv.iter().map(|r| r["prompt_tokens"].parse().unwrap()).collect();
            assert_eq!(tokens, expected, "prompt tokens per turn, {batch}/{isolation}");
            // A conversation's own history is cached: that is what a chat does.
            assert!(conv[1]["cached_tokens"].parse::<i64>().unwrap() >= IMAGE_TOKENS - 64, "{conv:?}");
        }
    }
    // Conversation 0 of the batch-2 cell sends what the batch-1 cell sent first.
    let first = |batch: &str, iso: &str| -> i64 { cells[&(batch.into(), iso.into())][0]["cached_tokens"].parse().unwrap() };
    assert_eq!(first("2", "reset"), 0, "isolated: the second cell's first request is cold");
    assert_eq!(first("1", "salt"), 0, "salted: cold as well");
    assert_eq!(first("2", "salt"), 0, "salted: cold as well");
    assert!(first("2", "none") >= IMAGE_TOKENS - 64, "not isolated: it reads what an earlier cell cached");

    let mut salted = 0;
    for (path, meta) in p.measure_metas() {
        let iso = &meta["isolation"];
        assert!(iso["done"] == iso["asked"], "{iso}");
        if iso["done"] == "salt" {
            salted += 1;
            // vLLM's multimodal cache is keyed by an image's bytes: with the nonce in
            // them, no first turn reads an image an earlier cell sent.
            assert_eq!(mm_hits_in_first_turns(path.parent().unwrap()), 0.0, "{}", path.display());
            assert!(iso["image_nonce"].is_string() && iso["complete"] == true, "{iso}");
        }
        let m = &meta["server_metrics"];
        assert_eq!(m["available"], true, "{m}");
        assert!(m["prefix_cache_queries"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["server_ttft_ms_mean"].as_f64().unwrap() > 0.0, "{m}");
        assert!(meta["server"]["command"].as_array().unwrap().iter().any(|a| a == "bfloat16"), "{meta}");
    }
    assert_eq!(salted, 2);
    spans_explain_every_request(&p, &cells);
    quality_is_the_request_rows_arithmetic(&p, &cells);
    let report = p.read("reports/v/README.md");
    let models = report.lines().find(|l| l.starts_with("| tiny | vllm |")).unwrap_or_default();
    assert!(models.contains("bfloat16"), "the report shows the dtype the server ran with: {models}");
}

/// Issue 26 on the real server: every measured request joined its `llm_request` span
/// (sent without `--collect-detailed-traces`), every part is non-negative and they
/// add up to the server's end-to-end time, the server's TTFT is within the client's,
/// and its end-to-end time is within the client's too and of its order (which pins
/// the unit: vLLM 0.32 sends seconds). The report names the dominant part.
fn spans_explain_every_request(p: &Project, cells: &std::collections::BTreeMap<(String, String), Vec<super::Row>>) {
    let number = |r: &super::Row, c: &str| -> f64 { r[c].parse().unwrap_or_else(|_| panic!("`{c}` is `{}`: {r:?}", r[c])) };
    for r in cells.values().flatten() {
        assert_eq!(r["span_missing"], "", "{r:?}");
        let parts = ["server_queue_ms", "server_preprocess_ms", "server_prefill_ms", "server_decode_ms"];
        for c in parts {
            assert!(number(r, c) >= 0.0, "{c} < 0: {r:?}");
        }
        let sum: f64 = parts.iter().map(|c| number(r, c)).sum();
        assert!((sum - number(r, "server_e2e_ms")).abs() < 1e-6, "{r:?}");
        assert!(number(r, "server_ttft_ms") <= number(r, "ttft_ms"), "{r:?}");
        let (server, client) = (number(r, "server_e2e_ms"), number(r, "e2e_ms"));
        assert!(server <= client && server > client / 10.0, "server e2e {server} ms against the client's {client} ms: {r:?}");
        eprintln!(
            "spans: turn {} queue {} preprocess {} prefill {} decode {} outside {} ms",
            r["turn"],
            r["server_queue_ms"],
            r["server_preprocess_ms"],
            r["server_prefill_ms"],
            r["server_decode_ms"],
            r["outside_server_ms"]
        );
    }
    for (_, meta) in p.measure_metas() {
        let spans = &meta["spans"];
        assert_eq!(spans["sent"], spans["joined"], "{spans}");
        assert!(!meta["server"]["command"].to_string().contains("collect-detailed-traces"));
        eprintln!("spans: waited {} ms, start-up {}", spans["waited_ms"], spans["startup"]);
    }
    let report = p.read("reports/v/README.md");
    assert!(report.contains("dominates the slowest turn"), "{report}");
    // Where its start went, by the server's own start-up spans.
    assert!(report.contains("its start, by its own spans: ") && report.contains("Overall Loading"), "{report}");
}

/// `[quality]` on the real server's answers: each curve's `exact` share in the report
/// is what the request rows give against the recorded answers, the rows' `truncated`
/// count is their answers of `max-tokens` tokens, and no turn goes unscored.
fn quality_is_the_request_rows_arithmetic(
    p: &Project,
    cells: &std::collections::BTreeMap<(String, String), Vec<std::collections::BTreeMap<String, String>>>,
) {
    let normalised = |s: &str| -> String {
        let kept: String = s.chars().flat_map(char::to_lowercase).filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
        kept.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let text = p.read("reports/v/quality.csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut checked = 0;
    for r in reader.records() {
        let r = r.unwrap();
        if &r[at("method")] != "exact" {
            continue;
        }
        let rows = &cells[&(r[at("batch_size")].to_string(), r[at("isolation")].to_string())];
        // Both files hold the conversations in the same order: batch 1 replays the
        // first drawn, batch 2 both (a draw of 2 starts with the draw of 1).
        let metas: Vec<serde_json::Value> = p
            .measure_metas()
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m["cell"].to_string().contains(&format!("[\"isolation\",\"{}\"]", &r[at("isolation")])))
            .filter(|m| m["cell"].to_string().contains(&format!("[\"batch-size\",\"{}\"]", &r[at("batch_size")])))
            .collect();
        assert_eq!(metas.len(), 1, "one cell per curve (one seed)");
        let ids: Vec<String> =
            metas[0]["dataset"]["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
        let (mut right, mut cut) = (0, 0);
        for row in rows {
            let c: usize = row["conversation"].parse().unwrap();
            let t: usize = row["turn"].parse().unwrap();
            let file_c: usize = ids[c].trim_start_matches('c').parse().unwrap();
            if normalised(&row["answer"]) == normalised(RECORDED[file_c][t]) {
                right += 1;
            }
            if row["completion_tokens"] == "4" {
                cut += 1;
            }
        }
        let mean: f64 = r[at("mean")].parse().unwrap();
        assert!((mean - right as f64 / rows.len() as f64).abs() < 1e-12, "{:?}: {mean} against {right}/{}", r, rows.len());
        assert_eq!(r[at("scored")].parse::<usize>().unwrap(), rows.len(), "every turn scored");
        assert_eq!(r[at("unscored")].parse::<usize>().unwrap(), 0);
        assert_eq!(r[at("truncated")].parse::<usize>().unwrap(), cut, "answers of max-tokens tokens are marked cut");
        checked += 1;
    }
    assert_eq!(checked, 6, "one row per curve");
}

/// How much `vllm:mm_cache_hits_total` grew in a cell before any of its second turns
/// was sent: the scrapes (every 0.1 s) and the requests share one monotonic clock.
fn mm_hits_in_first_turns(cell: &std::path::Path) -> f64 {
    use polars::prelude::*;
    let requests = pipeline::export::read_parquet(&cell.join("requests.parquet")).unwrap();
    let turns = requests.column("turn").unwrap().cast(&DataType::Int64).unwrap();
    let sent = requests.column("sent_ns").unwrap().cast(&DataType::Int64).unwrap();
    let second_turn =
        turns.i64().unwrap().iter().zip(sent.i64().unwrap().iter()).filter(|(t, _)| *t == Some(1)).filter_map(|(_, s)| s).min().unwrap();
    let metrics = pipeline::export::read_parquet(&cell.join("metrics.parquet")).unwrap();
    let (t, name, value) = (
        metrics.column("t_ns").unwrap().cast(&DataType::Int64).unwrap(),
        metrics.column("metric").unwrap().clone(),
        metrics.column("value").unwrap().clone(),
    );
    let mut by_scrape: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
    for ((t, n), v) in t.i64().unwrap().iter().zip(name.str().unwrap().iter()).zip(value.f64().unwrap().iter()) {
        if n == Some("vllm:mm_cache_hits_total") {
            *by_scrape.entry(t.unwrap()).or_default() += v.unwrap();
        }
    }
    assert!(by_scrape.len() >= 2, "the server exports vllm:mm_cache_hits_total, scraped more than once: {by_scrape:?}");
    let start = *by_scrape.values().next().unwrap();
    assert!(by_scrape.range(..second_turn).count() >= 2, "a scrape during the first turns: {by_scrape:?}");
    let before_second = by_scrape.range(..second_turn).next_back().map(|(_, v)| *v).unwrap();
    // The counter works: later turns resend the cell's own images, and those hit.
    assert!(by_scrape.values().next_back().unwrap() - start > 0.0, "{by_scrape:?}");
    before_second - start
}
