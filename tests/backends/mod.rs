//! Each way to reach a server: the simulator's wire formats, vLLM's command line, Anthropic, open loop, images by id, video.

use super::*;

/// A hosted API through Anthropic's Messages API, end to end: the key comes from the
/// environment and goes out as `x-api-key` (the simulator refuses requests without it)
/// but is written nowhere; a 429 is retried after its `Retry-After` and kept as a row;
/// each turn resends the history.
#[test]
fn anthropic_backend_measures_through_the_messages_api() {
    let sim = start_sim(&["--served-model-name", "claude-test", "--answer-tokens", "4", "--reject-first", "1"]);
    let base = &sim.base;
    let p = Project::new();
    p.write(
        "experiments/t.toml",
        &format!(
            r#"
name = "hosted"
[models.claude]
backend = "anthropic"
url = "{base}"
served-name = "claude-test"
api-key-env = "PIPELINE_TEST_ANTHROPIC_KEY"
[workload]
turns = 2
resolution = "64x48"
max-tokens = 4
warmup-requests = 0
[matrix]
model = ["claude"]
seed = [1]
[report]
dir = "reports/hosted"
"#
        ),
    );
    let missing = p.pipeline_env(&["run", "experiments/t.toml"], &[]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("environment variable `PIPELINE_TEST_ANTHROPIC_KEY` is not set"), "{}", missing.stderr);

    let secret = "sk-ant-test-0123456789-do-not-leak";
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PIPELINE_TEST_ANTHROPIC_KEY", secret)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.requests_tables("measure").pop().unwrap();
    let shape: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r["turn"].as_str(), r["attempt"].as_str(), r["error"].as_str())).collect();
    assert_eq!(shape, [("0", "0", "http_429"), ("0", "1", "none"), ("1", "0", "none")]);
    assert_eq!(rows[0]["status"], "429");
    assert_eq!(rows[1]["completion_tokens"], "4");
    let prompt = |i: usize| rows[i]["prompt_tokens"].parse::<u64>().unwrap();
    assert!(prompt(2) > prompt(1) + 4, "turn 1 resends turn 0 and its answer: {} vs {}", prompt(2), prompt(1));
    for (path, bytes) in &p.all_files() {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(secret), "the API key leaked into {}", path.display());
    }
    assert!(!out.stderr.contains(secret));

    // https goes through TLS: against this plain-HTTP server the handshake fails, and
    // that is a classified connect error on every request, not a crash.
    let tls = Project::new();
    tls.write(
        "experiments/t.toml",
        &p.read("experiments/t.toml")
            .replace("http://", "https://")
            .replace("anthropic\"", "openai\"")
            .replace("name = \"hosted\"", "name = \"tls\""),
    );
    let out = tls.pipeline_env(&["run", "experiments/t.toml"], &[("PIPELINE_TEST_ANTHROPIC_KEY", secret)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // The first failure already fails the step (max-error-share 5% of 2 turns): the
    // second turn is not sent.
    assert!(out.stderr.contains("1 of 1 requests failed") && out.stderr.contains("connect:"), "{}", out.stderr);
    // The failed measure's rows are kept, outside the cache proper.
    assert!(out.stderr.contains("what it recorded is kept in"), "{}", out.stderr);
    assert!(tls.requests_tables("measure").is_empty(), "a failed measure is not in the cache");
    let rows = tls.requests_tables("failed").pop().expect("requests.csv of the failed measure");
    assert!(rows.iter().all(|r| r["error"] == "connect") && rows.len() == 1);
}

/// The simulator speaks vLLM's wire format, as a client sees it on the socket.
#[test]
fn sim_server_speaks_the_vllm_stream_format() {
    let sim = start_sim(&["--served-model-name", "m", "--answer-tokens", "3"]);
    let base = &sim.base;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (stream, plain, missing, models) = rt.block_on(async {
        let http = pipeline::client::http_client(2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i.jpg");
        image::RgbImage::from_pixel(1280, 720, image::Rgb([90, 120, 200])).save(&img).unwrap();
        use base64::Engine;
        let url = format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(std::fs::read(&img).unwrap()));
        let body = |stream: bool, model: &str| {
            serde_json::json!({"model": model, "stream": stream, "stream_options": {"include_usage": true}, "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]}]})
        };
        let url = format!("{base}/v1/chat/completions");
        let stream = http.post(&url).json(&body(true, "m")).send().await.unwrap().text().await.unwrap();
        let plain: Value = http.post(&url).json(&body(false, "m")).send().await.unwrap().json().await.unwrap();
        let missing = http.post(&url).json(&body(true, "other")).send().await.unwrap().status().as_u16();
        let models: Value = http.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
        (stream, plain, missing, models)
    });
    drop(sim);
    let events: Vec<&str> = stream.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], serde_json::json!({"role": "assistant", "content": ""}), "role-only first chunk");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    // 1,198 image tokens for 1280×720, plus the text and chat-template tokens.
    let prompt = usage["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((1198..1198 + 12).contains(&prompt), "{prompt}");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content.split_whitespace().count(), 3);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(plain["usage"]["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(plain["choices"][0]["message"]["content"].as_str().unwrap().split_whitespace().count(), 3);
    assert_eq!(missing, 404);
    assert_eq!(models["data"][0]["id"], "m");
}

/// The simulator's Messages API stream has the event sequence Anthropic documents,
/// and refuses requests without `x-api-key`, as the real API does.
#[test]
fn sim_server_speaks_the_messages_api() {
    let sim = start_sim(&["--served-model-name", "c", "--answer-tokens", "3"]);
    let base = &sim.base;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (stream, unauthorized) = rt.block_on(async {
        let http = pipeline::client::http_client(2).unwrap();
        let body = serde_json::json!({"model": "c", "stream": true, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}]});
        let url = format!("{base}/v1/messages");
        let send = |key: bool| {
            let req = http.post(&url).json(&body).header("anthropic-version", "2023-06-01");
            if key { req.header("x-api-key", "k") } else { req }
        };
        let stream = send(true).send().await.unwrap().text().await.unwrap();
        let unauthorized = send(false).send().await.unwrap();
        (stream, (unauthorized.status().as_u16(), unauthorized.json::<Value>().await.unwrap()))
    });
    drop(sim);
    let events: Vec<(String, Value)> = stream
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (name.strip_prefix("event: ").unwrap().to_string(), serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap())
        })
        .collect();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "the event line names the data's type");
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(events[0].1["message"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(events[3].1["delta"]["type"], "text_delta");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(unauthorized.0, 401);
    assert_eq!(unauthorized.1["error"]["type"], "authentication_error");
}

/// A server launched from a command template on this machine's GPUs gets
/// `CUDA_VISIBLE_DEVICES` and GPU telemetry during its measurement: samples where NVML
/// is present, a recorded reason where it is not (this test passes either way, checking
/// the matching half).
#[test]
fn command_servers_on_gpus_get_telemetry_or_a_reason() {
    let p = Project::new();
    p.write("experiments/t.toml", &one_command_model("gpu", &["--itl-base-ms", "1", "--answer-tokens", "2"]));
    p.run_ok();
    let files = p.all_files();
    let meta = files.iter().find(|(path, _)| path.ends_with("meta.json") && path.to_string_lossy().contains("measure")).unwrap();
    let meta: Value = serde_json::from_slice(&meta.1).unwrap();
    assert_eq!(meta["server"]["command"][1], "sim-server", "the full command line is recorded: {meta}");
    assert!(meta["server"]["version"].as_str().unwrap().starts_with("pipeline-sim"), "{meta}");
    let telemetry = files.iter().find(|(path, _)| path.ends_with("telemetry.csv"));
    if meta["nvml"]["available"] == true {
        assert_eq!(meta["telemetry"]["available"], true, "{meta}");
        let rows = csv_rows(std::str::from_utf8(&telemetry.expect("telemetry.csv").1).unwrap());
        assert!(rows.len() >= 2 && rows.iter().all(|r| r["gpu"] == "0"), "{rows:?}");
    } else {
        assert_eq!(meta["telemetry"]["available"], false);
        assert_eq!(meta["telemetry"]["reason"], meta["nvml"]["reason"], "{meta}");
        assert!(telemetry.is_none());
    }
}

/// The vLLM command line, as a `vllm` on PATH receives it: flags from the model, its
/// variant and `[server]`, the GPUs in `CUDA_VISIBLE_DEVICES`. The stand-in `vllm`
/// writes down its argv and environment, then serves as the simulator.
#[test]
fn vllm_gets_the_documented_command_line() {
    let p = Project::new();
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let fake = p.path().join("bin/vllm");
    p.write(
        "bin/vllm",
        &format!(
            r#"#!/bin/sh
printf '%s\n' "$@" > "$(dirname "$0")/argv.txt"
echo "$CUDA_VISIBLE_DEVICES" > "$(dirname "$0")/gpus.txt"
echo "$VLLM_SERVER_DEV_MODE" > "$(dirname "$0")/dev-mode.txt"
echo "$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL $OTEL_BSP_SCHEDULE_DELAY" > "$(dirname "$0")/otel.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2 ;;
    --served-model-name) name=$2 ;;
  esac
  shift
done
exec "{bin}" sim-server --port "$port" --served-model-name "$name" --ttft-base-ms 1 --itl-base-ms 1 --answer-tokens 2
"#
        ),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.write(
        "experiments/t.toml",
        r#"
name = "vllm"
[models.q]
backend = "vllm"
model = "Qwen/Qwen2.5-VL-3B-Instruct"
served-name = "qwen-fake-vllm"
variants.awq = { model = "Qwen/Qwen2.5-VL-3B-Instruct-AWQ", quantization = "awq", dtype = "half" }
[server]
tensor-parallel-size = 2
gpus = [3, 1, 0]
dtype = "bfloat16"
max-model-len = 32768
prefix-caching = false
extra-args = ["--gpu-memory-utilization", "0.9"]
[workload]
turns = 3
resolution = "64x48"
max-tokens = 2
warmup-requests = 0
[matrix]
model = ["q"]
variant = ["awq"]
seed = [1]
frames = [2]
"#,
    );
    let path = format!("{}:{}", p.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PATH", &path)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let argv: Vec<String> = p.read("bin/argv.txt").lines().map(String::from).collect();
    let port = argv.iter().position(|a| a == "--port").map(|i| argv[i + 1].clone()).unwrap();
    // The server's spans go to pipeline's own receiver, on a free port of its own.
    let otlp = argv.iter().position(|a| a == "--otlp-traces-endpoint").map(|i| argv[i + 1].clone()).unwrap_or_default();
    let receiver_port = otlp.strip_prefix("http://127.0.0.1:").and_then(|r| r.strip_suffix("/v1/traces")).unwrap_or_default();
    assert!(receiver_port.parse::<u16>().is_ok(), "{otlp}");
    let expected = [
        "serve",
        "Qwen/Qwen2.5-VL-3B-Instruct-AWQ",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--served-model-name",
        "qwen-fake-vllm",
        "--tensor-parallel-size",
        "2",
        "--dtype",
        "half",
        "--quantization",
        "awq",
        "--limit-mm-per-prompt",
        r#"{"image":6}"#,
        "--enable-prompt-tokens-details",
        "--max-model-len",
        "32768",
        "--no-enable-prefix-caching",
        "--otlp-traces-endpoint",
        &otlp,
        "--gpu-memory-utilization",
        "0.9",
    ];
    assert_eq!(argv, expected);
    assert_eq!(p.read("bin/otel.txt").trim(), "http/protobuf 100", "OTLP over HTTP with protobuf, a batch every 100 ms");
    assert_eq!(p.read("bin/dev-mode.txt").trim(), "1", "the cache reset routes that isolate cells");
    assert_eq!(p.read("bin/gpus.txt").trim(), "3,1", "the first tensor-parallel-size GPUs of [server] gpus");

    // Frames as video: one video per turn is the limit, and vLLM keeps every frame.
    p.edit("warmup-requests = 0", "warmup-requests = 0\nframes-as = \"video\"");
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PATH", &path)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let argv = p.read("bin/argv.txt");
    assert!(argv.contains("--limit-mm-per-prompt\n{\"video\":3}\n"), "{argv}");
    assert!(argv.contains("--media-io-kwargs\n{\"video\":{\"num_frames\":-1}}\n"), "{argv}");
}

/// Open-loop arrival: send times are drawn in advance (here evenly, 20 per second), a
/// turn whose previous answer is late goes out late, and both times are recorded, so
/// queueing shows instead of being hidden (coordinated omission). A `request-rate` axis
/// sweeps the rate.
#[test]
fn open_loop_arrival_records_the_schedule() {
    let p = Project::new();
    p.write(
        "experiments/t.toml",
        &Exp::new("open")
            .sim("s", "ttft-base-ms = 120.0, prefill-us-per-token = 0.0, itl-base-ms = 1.0, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 2")
            .served_as("s-open-loop")
            .workload("turns", "3")
            .workload("resolution", "\"64x48\"")
            .workload("arrival", "\"constant\"")
            .workload("request-rate", "20.0")
            .matrix("seed", "[1]")
            .matrix("batch-size", "[2]")
            .axis("rate", "[20.0, 4.0]", "workload = \"request-rate\"")
            .text(),
    );
    p.run_ok();
    let mut tables = p.requests_tables("measure");
    let rate_of = |rows: &Vec<Row>| rows[0]["rate"].parse::<f64>().unwrap();
    tables.sort_by(|a, b| rate_of(a).total_cmp(&rate_of(b)));
    let ns = |r: &Row, k: &str| r[k].parse::<i64>().unwrap();
    for rows in &tables {
        let rate = rate_of(rows);
        let mut scheduled: Vec<i64> = rows.iter().map(|r| ns(r, "scheduled_ns")).collect();
        scheduled.sort();
        for w in scheduled.windows(2) {
            let gap_ms = (w[1] - w[0]) as f64 / 1e6;
            assert!((gap_ms - 1000.0 / rate).abs() < 0.01, "rate {rate}: gap {gap_ms} ms");
        }
        for r in rows {
            assert!(ns(r, "sent_ns") >= ns(r, "scheduled_ns") - 100_000, "never sent early: {r:?}");
        }
    }
    // At 20/s a conversation's turn is due 100 ms after its previous one, which takes
    // 120 ms to answer: its later turns go out at least 20 ms late. At 4/s (500 ms
    // apart) no answer holds a turn back; what lateness there is is the client's own
    // wake-up on a loaded machine (10.8 ms seen in CI beside the vLLM test), far below
    // the 120 ms an answer holding it back would add.
    let late = |rows: &Vec<Row>, ms: i64| rows.iter().filter(|r| ns(r, "sent_ns") - ns(r, "scheduled_ns") > ms * 1_000_000).count();
    assert_eq!((rate_of(&tables[0]), rate_of(&tables[1])), (4.0, 20.0));
    assert!(late(&tables[1], 15) >= 2, "{:?}", tables[1]);
    assert_eq!(late(&tables[0], 60), 0, "{:?}", tables[0]);
}

/// Image reuse by id (vLLM's multimodal UUIDs): each image goes out once with its id,
/// later turns refer to it with `"image_url": null` (the simulator, like vLLM, refuses a
/// reference it has not seen), so request bodies stop growing by an image per turn while
/// the prompt still counts every image.
#[test]
fn images_can_be_sent_once_and_referenced_by_id() {
    let p = Project::new();
    let file = |reuse: &str| {
        Exp::new("reuse")
            .sim("s", QUICK_SIM)
            .served_as("s-image-reuse")
            .workload("turns", "3")
            .workload("resolution", "\"320x240\"")
            .workload("image-reuse", &format!("{reuse:?}"))
            .text()
    };
    let rows_of = |p: &Project| p.requests_tables("measure").pop().unwrap();
    let num = |r: &Row, k: &str| r[k].parse::<f64>().unwrap();
    p.write("experiments/t.toml", &file("uuid"));
    p.run_ok();
    let by_id = rows_of(&p);
    assert!(by_id.iter().all(|r| r["error"] == "none"), "{by_id:?}");
    p.write("experiments/t.toml", &file("resend"));
    let out = p.run_ok();
    assert!(out.ran().iter().any(|s| s.starts_with("measure[")), "the reuse mode is part of the measure's key");
    let resent = rows_of(&p);
    // The same prompt either way (every image counts), very different bodies.
    for (a, b) in by_id.iter().zip(&resent) {
        assert_eq!(a["prompt_tokens"], b["prompt_tokens"]);
    }
    let growth = |rows: &[Row]| num(&rows[2], "request_bytes") / num(&rows[0], "request_bytes");
    assert!(growth(&by_id) < 1.5, "by id: turn 3 carries one image: {}", growth(&by_id));
    assert!(growth(&resent) > 2.5, "resent: turn 3 carries three images: {}", growth(&resent));
}

/// Frames as one video per turn (`data:video/jpeg`, JPEG frames joined by commas, as
/// vLLM reads it): the simulator counts the clip as video tokens (frames merged in
/// pairs), so four 64×48 frames cost 2 × 4 + 2 = 10 prompt tokens instead of 4 × 6.
#[test]
fn frames_can_go_as_one_video() {
    let p = Project::new();
    let file = |frames_as: &str| {
        Exp::new("video")
            .sim("s", QUICK_SIM)
            .served_as("s-video")
            .workload("turns", "1")
            .workload("resolution", "\"64x48\"")
            .workload("frames-as", &format!("{frames_as:?}"))
            .matrix("frames", "[4]")
            .text()
    };
    let prompt_tokens = |p: &Project| {
        let rows = p.requests_tables("measure").pop().unwrap();
        assert_eq!(rows[0]["error"], "none", "{rows:?}");
        rows[0]["prompt_tokens"].parse::<i64>().unwrap()
    };
    p.write("experiments/t.toml", &file("video"));
    p.run_ok();
    let video = prompt_tokens(&p);
    p.write("experiments/t.toml", &file("images"));
    p.run_ok();
    let images = prompt_tokens(&p);
    assert_eq!(images - video, 4 * 6 - 10, "images {images}, video {video}");
}
