//! How exact is the simulator, and how exact is our client reading it?
//!
//! Starts `pipeline sim-server` (a real process) with a scripted truth — TTFT 50 ms,
//! then one token every 10 ms, 64 tokens, no jitter, no load effect — and keeps B
//! streams in flight (closed loop) for a few seconds, for B in 1, 16, 64, 128, 256. Reports:
//! * server lag: when the simulator handed each chunk to the connection, minus its
//!   planned deadline (the simulator's own accuracy);
//! * request delivery: when the server received a request, minus when our client sent
//!   it (connection reuse, request write, server accept and parse);
//! * first-token delivery: when our client saw the first token, minus when the server
//!   handed it to the connection (the client's own reading delay);
//! * TTFT error: measured TTFT minus the scripted 50 ms (all of the above together);
//! * inter-token gap error: measured gap minus the scripted 10 ms (per gap);
//! * reached concurrency and the served rate against the ideal;
//! * the client's CPU time (user + system, this whole process) per streamed token.
//!
//! Then it times building the request body of turn 60 of a 720p image conversation
//! (about 16 MB of JSON), which the measure step does before a request's clock starts.
//!
//! Each stream's first request (opening its connection) is a warm-up and not counted.
//!
//! Last, the floor under the CPU figure: one stream read over a bare TcpStream.
//!
//! Run: `cargo bench --bench sim` (release build). `SIM_BENCH_STREAMS=1,16` runs only
//! those rows, `SIM_BENCH_SECONDS` sets the window, `RT=current` or `RT=<workers>` picks
//! the tokio runtime (default: multi-thread, one worker per core, as `pipeline run`).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::client::{self, Api, ErrorClass, Target};
use pipeline::sim::Truth;

const TTFT_MS: f64 = 50.0;
const ITL_MS: f64 = 10.0;
const TOKENS: u32 = 64;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let seconds: f64 = std::env::var("SIM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let rt = match std::env::var("RT").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        Ok(n) if n.parse::<usize>().is_ok() => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(n.parse().unwrap()).enable_all().build().unwrap()
        }
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap(),
    };
    println!(
        "| streams | server lag p50 / p99 / max (ms) | request delivery p50 / p99 (ms) | first-token delivery p50 / p99 (ms) | TTFT error p50 / p99 (ms) | gap error p50 / p99 (ms) | in flight at server, mean (max) | served / ideal rate | client CPU per token (µs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // SIM_BENCH_STREAMS=1,16 runs only those rows.
    let rows: Vec<usize> = match std::env::var("SIM_BENCH_STREAMS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("SIM_BENCH_STREAMS: numbers, comma-separated")).collect(),
        Err(_) => vec![1, 16, 64, 128, 256],
    };
    for streams in rows {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["sim-server", "--port", &port.to_string(), "--served-model-name", "bench"])
            .args([
                "--ttft-base-ms",
                "50",
                "--prefill-us-per-token",
                "0",
                "--itl-base-ms",
                "10",
                "--itl-us-per-inflight",
                "0",
                "--jitter",
                "0",
            ])
            .args(["--answer-tokens", &TOKENS.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let row = rt.block_on(async {
            let http = client::http_client(streams + 4).unwrap();
            while http.get(format!("{base}/health")).send().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let target = Arc::new(Target { url: format!("{base}/v1/chat/completions"), api: Api::OpenAiChat, api_key: None, traceparent: false, spans: None, timeout: Duration::from_secs(30), secrets: Default::default() });
            let body = bytes::Bytes::from(format!(
                r#"{{"model":"bench","stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{TOKENS},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ));
            // CPU from here to the last answer: the streaming, not start-up or the truth fetch.
            let cpu_before = cpu_seconds();
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let mut tasks = tokio::task::JoinSet::new();
            for s in 0..streams {
                let (http, target, body) = (http.clone(), target.clone(), body.clone());
                tasks.spawn(async move {
                    // One warm-up request per stream opens its connection; not counted.
                    let _ = client::exchange(&http, &target, &format!("warmup-s{s}"), body.clone()).await;
                    let mut out = Vec::new();
                    let mut n = 0;
                    while Instant::now() < end {
                        let id = format!("s{s}-r{n}");
                        out.push((id.clone(), client::exchange(&http, &target, &id, body.clone()).await));
                        n += 1;
                    }
                    out
                });
            }
            let mut exchanges = HashMap::new();
            while let Some(r) = tasks.join_next().await {
                exchanges.extend(r.unwrap());
            }
            let cpu = cpu_seconds() - cpu_before;
            let truth: Vec<Truth> = http.get(format!("{base}/sim/truth")).send().await.unwrap().json().await.unwrap();
            (exchanges, truth, cpu)
        });
        let _ = server.kill();
        let _ = server.wait();
        let (exchanges, mut truth, cpu) = row;
        truth.retain(|t| !t.request_id.starts_with("warmup-"));
        let mut lag: Vec<f64> =
            truth.iter().flat_map(|t| t.sent_ns.iter().zip(&t.planned_ns).map(|(s, p)| (*s as f64 - *p as f64) / 1e6)).collect();
        let truth_by_id: HashMap<&str, &Truth> = truth.iter().map(|t| (t.request_id.as_str(), t)).collect();
        let (mut request_delivery, mut token_delivery) = (Vec::new(), Vec::new());
        let mut ttft_err = Vec::new();
        let mut gap_err = Vec::new();
        let mut tokens = 0u64;
        let mut errors = 0;
        for (id, ex) in &exchanges {
            if ex.error != ErrorClass::None {
                errors += 1;
                continue;
            }
            if let Some(t) = truth_by_id.get(id.as_str()) {
                request_delivery.push((t.received_ns as f64 - ex.sent_ns as f64) / 1e6);
                if let (Some(first), Some(sent)) = (ex.first_token_ns, t.sent_ns.first()) {
                    token_delivery.push((first as f64 - *sent as f64) / 1e6);
                }
            }
            if let Some(first) = ex.first_token_ns {
                ttft_err.push((first - ex.sent_ns) as f64 / 1e6 - TTFT_MS);
            }
            for w in ex.chunks.windows(2) {
                gap_err.push((w[1].0 - w[0].0) as f64 / 1e6 - ITL_MS);
            }
            tokens += ex.completion_tokens.unwrap_or(0);
        }
        let in_flight = truth.iter().map(|t| t.in_flight_at_start as f64).sum::<f64>() / truth.len().max(1) as f64;
        let max_in_flight = truth.iter().map(|t| t.in_flight_at_start).max().unwrap_or(0);
        // One stream serves TOKENS tokens per (TTFT + (TOKENS-1) × ITL), over the wall
        // span from the first send to the last end.
        let first = exchanges.values().map(|e| e.sent_ns).min().unwrap_or(0);
        let last = exchanges.values().map(|e| e.end_ns).max().unwrap_or(0);
        let span_s = (last - first) as f64 / 1e9;
        let ideal = streams as f64 * span_s * TOKENS as f64 / ((TTFT_MS + (TOKENS - 1) as f64 * ITL_MS) / 1000.0);
        println!(
            "| {streams} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:+.3} / {:+.3} | {in_flight:.1} (max {max_in_flight}) | {:.1}% ({tokens} tokens, {errors} errors) | {:.1} |",
            pct(&mut lag, 0.5),
            pct(&mut lag, 0.99),
            lag.iter().cloned().fold(f64::NAN, f64::max),
            pct(&mut request_delivery, 0.5),
            pct(&mut request_delivery, 0.99),
            pct(&mut token_delivery, 0.5),
            pct(&mut token_delivery, 0.99),
            pct(&mut ttft_err, 0.5),
            pct(&mut ttft_err, 0.99),
            pct(&mut gap_err, 0.5),
            pct(&mut gap_err, 0.99),
            100.0 * tokens as f64 / ideal,
            // The CPU window includes each stream's warm-up request.
            cpu * 1e6 / (tokens + streams as u64 * TOKENS as u64) as f64,
        );
    }
    floor(&rt, seconds);
    body_build();
}

/// The floor under the client's CPU per token: one stream read with a bare tokio
/// TcpStream (hand-written HTTP/1.1, keep-alive, no parsing beyond finding `[DONE]`),
/// the same simulator, the same scripted truth. One chunk is one token, and each costs
/// at least one wake-up (epoll, read, schedule); at one stream nothing amortises that.
fn floor(rt: &tokio::runtime::Runtime, seconds: f64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["sim-server", "--port", &port.to_string(), "--served-model-name", "bench"])
        .args(["--ttft-base-ms", "50", "--prefill-us-per-token", "0", "--itl-base-ms", "10", "--itl-us-per-inflight", "0", "--jitter", "0"])
        .args(["--answer-tokens", &TOKENS.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (chunks, cpu) = rt.block_on(async {
        let mut stream = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        stream.set_nodelay(true).unwrap();
        let body = format!(
            r#"{{"model":"bench","stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{TOKENS},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut buf = vec![0u8; 64 * 1024];
        let (mut reads, mut cpu_before) = (0u64, 0.0);
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut first = true;
        while Instant::now() < end {
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut tail = Vec::new();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "simulator closed the connection");
                reads += 1;
                tail.extend_from_slice(&buf[..n]);
                if tail.windows(6).any(|w| w == b"[DONE]") {
                    break;
                }
                let keep = tail.len().saturating_sub(8);
                tail.drain(..keep);
            }
            // The first request opens the connection: a warm-up, not counted.
            if first {
                first = false;
                reads = 0;
                cpu_before = cpu_seconds();
            }
        }
        (reads, cpu_seconds() - cpu_before)
    });
    let _ = server.kill();
    let _ = server.wait();
    println!();
    println!("floor, one stream over a bare TcpStream: {:.1} µs of CPU per read ({chunks} reads)", cpu * 1e6 / chunks.max(1) as f64);
}

/// User + system CPU seconds of this process so far (all threads), to the nanosecond
/// (/proc's utime and stime count 10 ms ticks, too coarse for a one-stream row).
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Time the turn-60 request body: 60 user messages with one 720p JPEG each (200 kB,
/// so 270 kB of base64) and 59 short answers, as the measure step assembles them.
fn body_build() {
    use base64::Engine;
    let jpeg: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let mut history = Vec::new();
    for t in 0..60 {
        history.push(format!(
            r#"{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/jpeg;base64,{b64}"}}}},{{"type":"text","text":"What changed in turn {t}?"}}]}}"#
        ));
        if t < 59 {
            history.push(r#"{"role":"assistant","content":"A red square moved to the left of the blue circle."}"#.to_string());
        }
    }
    let header = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":32,"temperature":0,"messages":["#;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..21 {
        let start = Instant::now();
        let body = pipeline::steps::measure::request_body(header, &history);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        size = body.len();
        drop(body);
    }
    println!();
    println!(
        "request body of turn 60 ({:.1} MB): median {:.2} ms, max {:.2} ms over 21 builds",
        size as f64 / 1e6,
        pct(&mut times, 0.5),
        pct(&mut times, 1.0)
    );
}
