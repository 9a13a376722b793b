//! How fast is aggregation and rendering at study scale?
//!
//! Writes 1,000 cells of made-up measure outputs (4 models × 2 variants × 5 seeds ×
//! 5 batch sizes × 5 frame counts), 1,000 request rows each (one million rows), with 32
//! content chunks per request (the reference study's max_tokens) and GPU samples every
//! 100 ms for one cell in ten. Then, in a fresh process so that memory is the step's
//! own: the aggregate step (all tables, the bootstrap) and the report step (charts,
//! Markdown, HTML), timed apart, with the process's peak resident memory.
//!
//! Run: `cargo bench --bench report` (release build). `REPORT_BENCH_CELLS=100` for a
//! smaller run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS_PER_CELL: usize = 1000;
const CHUNKS: usize = 32;

fn experiment(seeds: usize) -> String {
    let seeds: Vec<String> = (1..=seeds).map(|s| s.to_string()).collect();
    let models: String =
        (0..4).map(|m| format!("[models.m{m}]\nbackend = \"sim\"\nvariants.awq = {{ quantization = \"awq\" }}\n")).collect();
    format!(
        r#"name = "bench"
{models}[workload]
turns = 60
[matrix]
model = ["m0", "m1", "m2", "m3"]
variant = ["base", "awq"]
seed = [{}]
batch-size = [1, 2, 4, 8, 16]
frames = [1, 2, 4, 8, 16]
"#,
        seeds.join(", ")
    )
}

fn plan(dir: &Path, seeds: usize) -> pipeline::plan::Plan {
    use pipeline::config::{self, Source};
    let source = Source { display: "bench.toml".into(), text: experiment(seeds), yaml: false, base_dir: dir.into(), path: None };
    let exp = config::load(&source).unwrap();
    let cells = pipeline::matrix::expand(&exp, &source).unwrap();
    pipeline::plan::Plan::build(exp, cells, "bench".into()).unwrap()
}

fn write(df: &mut DataFrame, path: PathBuf) {
    ParquetWriter::new(std::fs::File::create(path).unwrap()).finish(df).unwrap();
}

/// One cell's files; numbers follow the cell so that the tables are not trivial.
fn cell(dir: &Path, coords: &[(String, String)], k: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let n = ROWS_PER_CELL;
    let num = |name: &str| coords.iter().find(|(c, _)| c == name).unwrap().1.parse::<u64>().unwrap();
    let batch = num("batch-size");
    let noise = |i: usize| ((i * 2_654_435_761 + k * 97) % 1000) as f64 / 100.0;
    let ttft: Vec<f64> = (0..n).map(|i| 20.0 + (i as u64 / batch) as f64 * 0.5 + batch as f64 * 2.0 + noise(i)).collect();
    let sent: Vec<u64> = (0..n).map(|i| i as u64 * 50_000_000 / batch).collect();
    // Through the measure's own writer, so that the bench's rows have every column.
    let rows: Vec<pipeline::records::RequestRow> = (0..n)
        .map(|i| pipeline::records::RequestRow {
            conversation: (i as u64 % batch) as u32,
            turn: (i as u64 / batch) as u32,
            attempt: 0,
            warmup: i == 0,
            request_bytes: Some(300_000),
            scheduled_ns: Some(sent[i]),
            sent_ns: Some(sent[i]),
            first_token_ns: Some(sent[i] + (ttft[i] * 1e6) as u64),
            end_ns: Some(sent[i] + ((ttft[i] + 62.0) * 1e6) as u64),
            ttft_ms: Some(ttft[i]),
            e2e_ms: Some(ttft[i] + 62.0),
            tpot_ms: Some(2.0),
            prompt_tokens: Some(1000 + i as u64),
            completion_tokens: Some(CHUNKS as u64),
            chunks: CHUNKS as u32,
            status: Some(200),
            error: "none".into(),
            answer: "The image shows a red square to the left of a blue circle.".into(),
            ..Default::default()
        })
        .collect();
    pipeline::records::write_requests(coords, &rows, dir).unwrap();
    let gaps: Vec<Option<f64>> = (0..n * CHUNKS).map(|j| (j % CHUNKS != 0).then(|| 2.0 + noise(j) / 10.0)).collect();
    write(&mut DataFrame::new(gaps.len(), vec![Column::new("gap_ms".into(), gaps)]).unwrap(), dir.join("chunks.parquet"));
    let gpu = k.is_multiple_of(10);
    use pipeline::records::{Available, Isolation, Meta, Nvml, Sampled, Server};
    let meta = Meta {
        tool: "pipeline bench".into(),
        cell: coords.to_vec(),
        server: Server {
            backend: "vllm".into(),
            command: Some(["vllm", "serve", "m", "--port", "8000"].map(String::from).to_vec()),
            version: Some(Some("0.11.0".into())),
            ..Server::default()
        },
        hardware: "bench".into(),
        nvml: Available::Yes(Nvml { driver: Some("550.54".into()), cuda: Some(12040), gpus: vec!["NVIDIA H100 80GB HBM3".into()] }),
        telemetry: if gpu {
            Available::Yes(Sampled { gpus: vec![0], interval_ms: 100, samples: (sent[n - 1] / 100_000_000) as usize })
        } else {
            Available::no("sampled in one cell of ten")
        },
        isolation: Isolation {
            asked: "auto".into(),
            done: "reset".into(),
            salt: None,
            image_nonce: None,
            complete: Some(true),
            notes: Vec::new(),
        },
        server_metrics: Available::no("not scraped in the bench"),
        requests: n - 1,
        errors: 0,
        dataset: None,
        trace: None,
        spans: None,
    };
    pipeline::records::write_meta(&meta, &pipeline::secrets::Secrets::default(), dir).unwrap();
    if gpu {
        let samples = (sent[n - 1] / 100_000_000) as usize;
        let mut t = DataFrame::new(
            samples,
            vec![
                Column::new("t_ns".into(), (0..samples as u64).map(|i| i * 100_000_000).collect::<Vec<u64>>()),
                Column::new("gpu".into(), vec![0u32; samples]),
                Column::new("power_w".into(), (0..samples).map(|i| Some(350.0 + noise(i) * 20.0)).collect::<Vec<Option<f64>>>()),
                Column::new("temperature_c".into(), (0..samples).map(|i| Some(50 + (i / 100) as u32)).collect::<Vec<Option<u32>>>()),
                Column::new("sm_clock_mhz".into(), vec![Some(1980u32); samples]),
                Column::new("throttle".into(), vec![None::<&str>; samples]),
            ],
        )
        .unwrap();
        write(&mut t, dir.join("telemetry.parquet"));
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cells: usize = std::env::var("REPORT_BENCH_CELLS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let seeds = (cells / 200).max(1);
    if let Some(p) = args.iter().position(|a| a == "--measure") {
        let dir = PathBuf::from(&args[p + 1]);
        let plan = plan(&dir, seeds);
        let inputs: Vec<(String, PathBuf)> = (0..plan.cells.len()).map(|i| (format!("cell{i}"), dir.join(format!("m{i}")))).collect();
        let (agg, out) = (dir.join("aggregate"), dir.join("report"));
        let _ = std::fs::remove_dir_all(&agg);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&agg).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let of = |kind| plan.steps.iter().find(|s| s.kind == kind).unwrap();
        let aggregate: pipeline::steps::aggregate::Params = of(pipeline::plan::StepKind::Aggregate).typed().unwrap();
        let report: pipeline::steps::report::Params = of(pipeline::plan::StepKind::Report).typed().unwrap();
        let start = Instant::now();
        pipeline::steps::aggregate::run(&aggregate, &inputs, &agg).unwrap();
        let aggregate_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        pipeline::steps::report::run(&report, &agg, None, None, &out).unwrap();
        let report_s = start.elapsed().as_secs_f64();
        println!(
            "{} cells, {} request rows, {} chunk rows: aggregate {aggregate_s:.2} s, report {report_s:.2} s, total {:.2} s, peak memory {:.0} MiB",
            inputs.len(),
            inputs.len() * ROWS_PER_CELL,
            inputs.len() * ROWS_PER_CELL * CHUNKS,
            aggregate_s + report_s,
            peak_rss_mib()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("pipeline-report-bench-{cells}"));
    let plan = plan(&dir, seeds);
    let n = plan.cells.len();
    // Written again when missing, or written by an older version (its meta.json unreadable now).
    if pipeline::records::read_meta(&dir.join(format!("m{}", n - 1))).is_err() {
        eprintln!("writing {n} cells of made-up results under {} …", dir.display());
        for (i, c) in plan.cells.iter().enumerate() {
            cell(&dir.join(format!("m{i}")), &c.coords(), i);
        }
    }
    for _ in 0..3 {
        let status =
            std::process::Command::new(std::env::current_exe().unwrap()).args(["--measure", dir.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
    }
}
