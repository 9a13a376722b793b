//! End-to-end tests: the `pipeline` binary against real simulator servers on 127.0.0.1.
//!
//! One integration binary (builds are expensive). `Project` is a throw-away project
//! folder with an experiment file and its own cache; tests write files, run commands
//! and read what the binary printed and wrote.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

mod backends;
mod config_errors;
mod datasets;
mod fake;
mod first_minutes;
mod hardening;
mod imports;
mod isolation;
mod lifecycle;
mod planning;
mod quality;
mod reports;
mod search;
mod slurm;
mod spans;
mod trace;
mod vllm;

struct Project {
    dir: tempfile::TempDir,
}

/// A tiny experiment: 2 sim models × 2 seeds, 2 turns of one 64×48 image.
/// `{tag}` makes the served names unique, so a test can find its own servers.
const BASE: &str = r#"
name = "t"
title = "Test"

[models.a]
backend = "sim"
served-name = "a-{tag}"
sim = { ttft-base-ms = 1.0, prefill-us-per-token = 0.0, itl-base-ms = 0.5, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 4 }

[models.b]
backend = "sim"
served-name = "b-{tag}"
sim = { ttft-base-ms = 1.0, prefill-us-per-token = 0.0, itl-base-ms = 0.5, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 4 }

[workload]
turns = 2
resolution = "64x48"
max-tokens = 4
warmup-requests = 0
questions = ["What is this?", "And now?"]

[matrix]
model = ["a", "b"]
seed = [1, 2]

[report]
dir = "reports/t"
"#;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Assertions that read as data: `p.pipeline(..).status(2).stderr_has("t.toml:3:11")`.
/// `what` names the case in a failure's message.
impl Output {
    fn status(&self, code: i32) -> &Output {
        assert_eq!(self.code, code, "exit status; stderr:\n{}", self.stderr);
        self
    }

    fn stderr_has(&self, text: &str) -> &Output {
        assert!(self.stderr.contains(text), "expected `{text}` in stderr:\n{}", self.stderr);
        self
    }

    fn stderr_lacks(&self, text: &str) -> &Output {
        assert!(!self.stderr.contains(text), "`{text}` should not be in stderr:\n{}", self.stderr);
        self
    }

    fn stdout_has(&self, text: &str) -> &Output {
        assert!(self.stdout.contains(text), "expected `{text}` in stdout:\n{}", self.stdout);
        self
    }

    fn stdout_lacks(&self, text: &str) -> &Output {
        assert!(!self.stdout.contains(text), "`{text}` should not be in stdout:\n{}", self.stdout);
        self
    }

    /// Ids of the steps the run executed (its `run    <id>` lines).
    fn ran(&self) -> BTreeSet<String> {
        self.stderr.lines().filter_map(|l| l.strip_prefix("run    ")).map(|l| l.split(" (").next().unwrap_or(l).to_string()).collect()
    }
}

impl Project {
    fn new() -> Project {
        let p = Project { dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(p.path().join("experiments")).unwrap();
        p
    }

    fn with_base(tag: &str) -> Project {
        let p = Project::new();
        p.write("experiments/t.toml", &BASE.replace("{tag}", tag));
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Replace text in the experiment file; the text must be there.
    fn edit(&self, from: &str, to: &str) {
        let text = self.read("experiments/t.toml");
        assert!(text.contains(from), "`{from}` not in the experiment");
        self.write("experiments/t.toml", &text.replacen(from, to, 1));
    }

    /// `text` with this project's folder, which changes from run to run, as `[PROJECT]`.
    fn redact(&self, text: &str) -> String {
        let real = std::fs::canonicalize(self.path()).unwrap_or_else(|_| self.path().to_path_buf());
        text.replace(&real.display().to_string(), "[PROJECT]").replace(&self.path().display().to_string(), "[PROJECT]")
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        let out = cargo_bin_cmd!("pipeline").current_dir(self.path()).env_remove("PIPELINE_CACHE").args(args).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    fn pipeline_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = cargo_bin_cmd!("pipeline");
        cmd.current_dir(self.path()).env_remove("PIPELINE_CACHE").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Every file under the project, as (path, bytes).
    /// [`Project::with_base`] with three turns streamed slowly (60 ms a token): a run
    /// that is still measuring when a test interrupts or kills something.
    fn slow(tag: &str) -> Project {
        let p = Project::with_base(tag);
        p.edit("turns = 2", "turns = 3");
        let text = p.read("experiments/t.toml").replace("itl-base-ms = 0.5", "itl-base-ms = 60.0");
        p.write("experiments/t.toml", &text);
        p
    }

    /// Every measure's `meta.json` in the cache, with its path.
    fn measure_metas(&self) -> Vec<(PathBuf, serde_json::Value)> {
        self.all_files()
            .into_iter()
            .filter(|(path, _)| path.ends_with("meta.json") && path.to_string_lossy().contains("/measure/"))
            .map(|(path, bytes)| (path, serde_json::from_slice(&bytes).unwrap()))
            .collect()
    }

    fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }

    /// Every `requests.csv` under `cache/<under>/` (`measure` or `failed`), parsed,
    /// oldest first.
    fn requests_tables(&self, under: &str) -> Vec<Vec<Row>> {
        let dir = self.path().join("cache").join(under);
        let mut found: Vec<(std::time::SystemTime, Vec<Row>)> = self
            .all_files()
            .into_iter()
            .filter(|(path, _)| path.starts_with(&dir) && path.ends_with("requests.csv"))
            .map(|(path, bytes)| (std::fs::metadata(&path).unwrap().modified().unwrap(), csv_rows(std::str::from_utf8(&bytes).unwrap())))
            .collect();
        found.sort_by_key(|(t, _)| *t);
        found.into_iter().map(|(_, rows)| rows).collect()
    }

    fn run_ok(&self) -> Output {
        let out = self.pipeline(&["run", "experiments/t.toml"]);
        assert_eq!(out.code, 0, "run failed:\n{}", out.stderr);
        out
    }

    fn plan_json(&self) -> Vec<Value> {
        let out = self.pipeline(&["plan", "experiments/t.toml", "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Compare `text` with the snapshot `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1`
/// rewrites it instead (review the diff). Redact what varies before calling.
fn snapshot(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let pinned = std::fs::read_to_string(&path).unwrap_or_default();
    if pinned != text {
        let first = pinned.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(pinned.lines().count().min(text.lines().count()));
        panic!(
            "{name} differs from its snapshot at line {}:\n  pinned: {:?}\n  now:    {:?}\nrerun with UPDATE_SNAPSHOTS=1 if that is intended",
            first + 1,
            pinned.lines().nth(first).unwrap_or(""),
            text.lines().nth(first).unwrap_or("")
        );
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn m(model: &str, seed: u32) -> String {
    format!("measure[model={model},variant=base,seed={seed},batch-size=1,frames=1]")
}

fn d(seed: u32) -> String {
    format!("datagen[seed={seed},batch-size=1,frames=1]")
}

fn ids(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

/// Processes whose command line mentions `needle` and that are still alive.
/// Processes (not zombies) whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if cmdline.contains(needle) && !zombie {
            found.push(cmdline);
        }
    }
    found
}

fn live_processes(needle: &str) -> Vec<String> {
    processes_with(needle).into_iter().filter(|c| c.contains("sim-server")).collect()
}

/// A `pipeline` run in the background, read until a stderr line starts with `prefix`.
struct Background {
    child: std::process::Child,
    /// stderr lines so far.
    seen: Vec<String>,
    /// Reads the rest, so the child's stderr stays open until it exits.
    rest: std::thread::JoinHandle<Vec<String>>,
}

impl Background {
    /// Start `pipeline ARGS` in a process group of its own (as a shell starts a job),
    /// and read its stderr up to a line starting with `prefix`.
    fn start(p: &Project, args: &[&str], prefix: &str) -> Background {
        Background::start_nth(p, args, prefix, 1)
    }

    /// Like [`Background::start`], reading up to the `n`th line starting with `prefix`.
    fn start_nth(p: &Project, args: &[&str], prefix: &str, n: usize) -> Background {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("pipeline"))
            .current_dir(p.path())
            .env_remove("PIPELINE_CACHE")
            .args(args)
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let mut found = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push(line.clone());
            found += usize::from(line.starts_with(prefix));
            if found == n {
                break;
            }
        }
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
        Background { child, seen, rest }
    }

    /// Ctrl-C: the exit code and every stderr line.
    fn interrupt(self) -> (Option<i32>, Vec<String>) {
        let (status, seen) = self.signal(rustix::process::Signal::INT);
        (status.code(), seen)
    }

    /// Wait for the run to end by itself: the exit status and every stderr line.
    fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.rest.join().unwrap());
        (status, self.seen)
    }

    /// Send `signal`; the exit status and every stderr line.
    fn signal(mut self, signal: rustix::process::Signal) -> (std::process::ExitStatus, Vec<String>) {
        rustix::process::kill_process(rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(), signal).unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.rest.join().unwrap());
        (status, self.seen)
    }
}

/// A simulator on a free port, stopped when dropped (also when a test panics).
struct Sim {
    child: std::process::Child,
    base: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a simulator with these extra arguments.
fn start_sim(args: &[&str]) -> Sim {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("pipeline"))
        .args(["sim-server", "--port", "0", "--itl-base-ms", "1", "--ttft-base-ms", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    Sim { child, base }
}

/// An experiment file for a test, built fluently (like just's `Test`): the models,
/// `[workload]` and `[matrix]` keys and further tables that a test is about, written in
/// one shape. It starts with two-token answers and no warm-up; a key set again keeps
/// its last value; `[matrix] model` lists every model added unless set.
#[derive(Clone)]
struct Exp {
    name: String,
    models: Vec<(String, Vec<String>)>,
    workload: Vec<(String, String)>,
    matrix: Vec<(String, String)>,
    tables: Vec<String>,
}

/// A quick simulator: 1 ms to the first token, 0.5 ms per token, two-token answers.
const QUICK_SIM: &str = "ttft-base-ms = 1.0, itl-base-ms = 0.5, answer-tokens = 2";

impl Exp {
    fn new(name: &str) -> Exp {
        let workload = [("max-tokens", "2"), ("warmup-requests", "0")].map(|(k, v)| (k.to_string(), v.to_string())).to_vec();
        Exp { name: name.into(), models: Vec::new(), workload, matrix: Vec::new(), tables: Vec::new() }
    }

    /// `[models.NAME]` on the built-in simulator, with `sim` (the inside of its inline
    /// table, e.g. [`QUICK_SIM`]).
    fn sim(mut self, name: &str, sim: &str) -> Exp {
        self.models.push((name.into(), vec!["backend = \"sim\"".into(), format!("sim = {{ {sim} }}")]));
        self
    }

    /// `[models.NAME]` whose server is this build's simulator launched as a `command`
    /// (with `{port}` and `{served_name}` filled in by pipeline), plus `flags`; served
    /// as `NAME-command`.
    fn command_sim(mut self, name: &str, flags: &[&str]) -> Exp {
        let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
        let argv: Vec<String> =
            [bin.as_str(), "sim-server", "--port", "{port}", "--served-model-name", "{served_name}", "--ttft-base-ms", "1"]
                .iter()
                .chain(flags)
                .map(|a| format!("{a:?}"))
                .collect();
        let lines =
            vec!["backend = \"command\"".into(), format!("served-name = \"{name}-command\""), format!("command = [{}]", argv.join(", "))];
        self.models.push((name.into(), lines));
        self
    }

    /// The last model added is served as `served` (tests find their servers by it).
    fn served_as(mut self, served: &str) -> Exp {
        if let Some((_, lines)) = self.models.last_mut() {
            lines.insert(1, format!("served-name = \"{served}\""));
        }
        self
    }

    /// `[workload] KEY = VALUE` (`value` as TOML: `"64x48"` with its quotes).
    fn workload(mut self, key: &str, value: &str) -> Exp {
        Self::set(&mut self.workload, key, value);
        self
    }

    /// `[matrix] KEY = VALUE` (`value` as TOML).
    fn matrix(mut self, key: &str, value: &str) -> Exp {
        Self::set(&mut self.matrix, key, value);
        self
    }

    /// An `[[axis]]` named `name` with `values` (TOML) that `feeds` (`workload =
    /// "request-rate"`, `server-flag = "--max-num-seqs"`).
    fn axis(self, name: &str, values: &str, feeds: &str) -> Exp {
        self.table(&format!("[[axis]]\nname = \"{name}\"\nvalues = {values}\n{feeds}"))
    }

    /// A table after the matrix, as written (`[search]`, `[report]`).
    fn table(mut self, text: &str) -> Exp {
        self.tables.push(text.trim_end().into());
        self
    }

    fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
        match list.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.into(),
            None => list.push((key.into(), value.into())),
        }
    }

    fn text(&self) -> String {
        let mut out = format!("name = \"{}\"\n", self.name);
        for (name, lines) in &self.models {
            out.push_str(&format!("[models.{name}]\n{}\n", lines.join("\n")));
        }
        out.push_str("[workload]\n");
        for (k, v) in &self.workload {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str("[matrix]\n");
        if !self.matrix.iter().any(|(k, _)| k == "model") {
            let names: Vec<String> = self.models.iter().map(|(n, _)| format!("{n:?}")).collect();
            out.push_str(&format!("model = [{}]\n", names.join(", ")));
        }
        for (k, v) in &self.matrix {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for table in &self.tables {
            out.push_str(&format!("{table}\n"));
        }
        out
    }
}

/// An experiment of one model `g`, the simulator launched as a `command` server with
/// `flags`: two turns of a 64×48 image, seed 1.
fn one_command_model(name: &str, flags: &[&str]) -> String {
    Exp::new(name).command_sim("g", flags).workload("turns", "2").workload("resolution", "\"64x48\"").matrix("seed", "[1]").text()
}

/// One CSV row: column name → text.
type Row = std::collections::BTreeMap<String, String>;

/// Rows of a CSV file, through a real parser: answers and error details hold commas,
/// quotes and newlines.
fn csv_rows(text: &str) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(String::from)).collect()).collect()
}

/// A search for the largest batch size within TPOT ≤ 48 ms on a simulator whose TPOT is
/// about 4 + 8B ms at batch size B (one turn each, all in flight together): it breaks
/// between 5 (44 ms) and 6 (52 ms). Seeds and the largest value probed as given.
fn search_on_sim(name: &str, seeds: &str, max: u32) -> String {
    Exp::new(name)
        .sim("a", "ttft-base-ms = 1.0, prefill-us-per-token = 0.5, itl-base-ms = 4.0, itl-us-per-inflight = 8000.0, jitter = 0.0, answer-tokens = 32")
        .workload("turns", "1")
        .workload("max-tokens", "32")
        .workload("resolution", "\"64x48\"")
        .matrix("seed", &format!("[{seeds}]"))
        .table(&format!("[search]\naxis = \"batch-size\"\nmin = 1\nmax = {max}"))
        .table("[report]\ndir = \"reports/t\"\nslo = { tpot-ms = 48.0 }")
        .text()
}

/// An experiment for the report tests: model `a` on the simulator, 3 turns,
/// seeds 1 and 2, batch sizes 1 and 2.
const FIXED: &str = r#"
name = "fixed"
title = "Fixed inputs"

[models.a]
backend = "sim"

[workload]
turns = 3
resolution = "64x48"
max-tokens = 8

[matrix]
model = ["a"]
seed = [1, 2]
batch-size = [1, 2]

[report.slo]
ttft-ms = 30.0
"#;

/// Write one measure's outputs with made-up, fixed numbers: `requests.parquet`,
/// `chunks.parquet`, `meta.json`, and GPU samples when `gpu` is set. The answer of
/// conversation 0, turn 0 carries a script tag, as an untrusted model might.
fn fixed_measure(dir: &Path, coords: &[(String, String)], gpu: bool) {
    use polars::prelude::*;
    std::fs::create_dir_all(dir).unwrap();
    let get = |k: &str| coords.iter().find(|(c, _)| c == k).map(|(_, v)| v.parse::<u64>().unwrap()).unwrap();
    let (seed, batch) = (get("seed"), get("batch-size"));
    let mut rows: Vec<(u32, u32, u32, bool, &str)> = Vec::new(); // conversation, turn, attempt, warmup, error
    rows.push((0, 0, 0, true, "none"));
    for c in 0..batch as u32 {
        for t in 0..3 {
            rows.push((c, t, 0, false, if seed == 2 && batch == 2 && c == 1 && t == 2 { "http_5xx" } else { "none" }));
        }
    }
    let n = rows.len();
    let mut cols: Vec<Column> = coords
        .iter()
        .map(|(k, v)| match k.as_str() {
            "seed" | "batch-size" | "frames" => Column::new(k.replace('-', "_").into(), vec![v.parse::<u64>().unwrap(); n]),
            _ => Column::new(k.replace('-', "_").into(), vec![v.clone(); n]),
        })
        .collect();
    let ok = |r: &(u32, u32, u32, bool, &str)| r.4 == "none";
    let ttft = |r: &(u32, u32, u32, bool, &str)| 10.0 + 5.0 * r.1 as f64 + seed as f64 + 3.0 * r.0 as f64 + batch as f64;
    let sent = |i: usize| 1_000_000_000u64 + i as u64 * 40_000_000 / batch;
    cols.extend([
        Column::new("conversation".into(), rows.iter().map(|r| r.0).collect::<Vec<u32>>()),
        Column::new("turn".into(), rows.iter().map(|r| r.1).collect::<Vec<u32>>()),
        Column::new("attempt".into(), rows.iter().map(|r| r.2).collect::<Vec<u32>>()),
        Column::new("warmup".into(), rows.iter().map(|r| r.3).collect::<Vec<bool>>()),
        Column::new("sent_ns".into(), (0..n).map(sent).collect::<Vec<u64>>()),
        Column::new("end_ns".into(), (0..n).map(|i| sent(i) + ((ttft(&rows[i]) + 21.0) * 1e6) as u64).collect::<Vec<u64>>()),
        Column::new("ttft_ms".into(), rows.iter().map(|r| ok(r).then(|| ttft(r))).collect::<Vec<Option<f64>>>()),
        Column::new("e2e_ms".into(), rows.iter().map(|r| ok(r).then(|| ttft(r) + 21.0)).collect::<Vec<Option<f64>>>()),
        Column::new("tpot_ms".into(), rows.iter().map(|r| ok(r).then_some(3.0)).collect::<Vec<Option<f64>>>()),
        Column::new("completion_tokens".into(), rows.iter().map(|r| ok(r).then_some(8u64)).collect::<Vec<Option<u64>>>()),
        // Each turn adds 1,000 prompt tokens; the server had the earlier turns cached.
        Column::new("prompt_tokens".into(), rows.iter().map(|r| ok(r).then_some(1000 * (r.1 as u64 + 1))).collect::<Vec<Option<u64>>>()),
        Column::new("cached_tokens".into(), rows.iter().map(|r| ok(r).then_some(1000 * r.1 as u64)).collect::<Vec<Option<u64>>>()),
        Column::new("status".into(), rows.iter().map(|r| if ok(r) { 200u32 } else { 503 }).collect::<Vec<u32>>()),
        Column::new("error".into(), rows.iter().map(|r| r.4).collect::<Vec<&str>>()),
        Column::new(
            "answer".into(),
            rows.iter()
                .map(|r| {
                    if r.0 == 0 && r.1 == 0 {
                        "<script>alert(1)</script> a red\u{202E} square".to_string()
                    } else {
                        format!("answer to turn {}", r.1 + 1)
                    }
                })
                .collect::<Vec<String>>(),
        ),
    ]);
    let mut df = DataFrame::new(n, cols).unwrap();
    ParquetWriter::new(std::fs::File::create(dir.join("requests.parquet")).unwrap()).finish(&mut df).unwrap();
    // 7 gaps per successful request: 2.0 ms, then 2.5 on the last.
    let gaps: Vec<Option<f64>> = rows
        .iter()
        .filter(|r| !r.3 && ok(r))
        .flat_map(|_| std::iter::once(None).chain((1..8).map(|i| Some(if i == 7 { 2.5 } else { 2.0 }))))
        .collect();
    let mut chunks = DataFrame::new(gaps.len(), vec![Column::new("gap_ms".into(), gaps)]).unwrap();
    ParquetWriter::new(std::fs::File::create(dir.join("chunks.parquet")).unwrap()).finish(&mut chunks).unwrap();
    use pipeline::records::{Available, Isolation, Meta, Nvml, Sampled, Server, ServerMetrics};
    let no_driver = "no driver here";
    let meta = Meta {
        tool: "pipeline test".into(),
        cell: coords.to_vec(),
        server: Server {
            backend: "sim".into(),
            command: Some(["/somewhere/bin/pipeline", "sim-server", "--port", "41234"].map(String::from).to_vec()),
            version: Some(Some("pipeline-sim test".into())),
            ..Server::default()
        },
        hardware: "test machine".into(),
        nvml: if gpu {
            Available::Yes(Nvml { driver: Some("550.54".into()), cuda: Some(12040), gpus: vec!["Test GPU".into()] })
        } else {
            Available::no(no_driver)
        },
        telemetry: if gpu { Available::Yes(Sampled { gpus: vec![0], interval_ms: 100, samples: 5 }) } else { Available::no(no_driver) },
        isolation: Isolation {
            asked: "auto".into(),
            done: if seed == 2 { "salt" } else { "reset" }.into(),
            salt: None,
            image_nonce: None,
            complete: Some(seed != 2),
            notes: if seed == 2 { vec!["the server refused POST /reset_prefix_cache (HTTP 404)".into()] } else { vec![] },
        },
        server_metrics: if batch == 2 {
            Available::Yes(ServerMetrics {
                prefix_cache_hit_rate: Some(0.5),
                kv_cache_usage_peak: Some(0.25),
                running_peak: Some(2.0),
                waiting_peak: Some(0.0),
                server_ttft_ms_mean: Some(12.0),
                ..ServerMetrics::default()
            })
        } else {
            Available::no("GET /metrics answered HTTP 404")
        },
        requests: rows.iter().filter(|r| !r.3).count(),
        errors: rows.iter().filter(|r| !r.3 && !ok(r)).count(),
        dataset: None,
        trace: None,
        spans: None,
    };
    pipeline::records::write_meta(&meta, &pipeline::secrets::Secrets::default(), dir).unwrap();
    if gpu {
        // One GPU, five samples 100 ms apart: 100, 200, 300, 200, 100 W → 80 J.
        let mut t = DataFrame::new(
            5,
            vec![
                Column::new("t_ns".into(), (0..5u64).map(|i| 900_000_000 + i * 100_000_000).collect::<Vec<u64>>()),
                Column::new("gpu".into(), vec![0u32; 5]),
                Column::new("power_w".into(), vec![Some(100.0), Some(200.0), Some(300.0), Some(200.0), Some(100.0)]),
                Column::new("temperature_c".into(), vec![Some(40u32), Some(45), Some(51), Some(48), Some(44)]),
                Column::new("sm_clock_mhz".into(), vec![Some(1980u32); 5]),
                Column::new("throttle".into(), vec![Some("GPU_IDLE"), None, Some("SW_POWER_CAP"), Some("SW_POWER_CAP|GPU_IDLE"), None]),
            ],
        )
        .unwrap();
        ParquetWriter::new(std::fs::File::create(dir.join("telemetry.parquet")).unwrap()).finish(&mut t).unwrap();
    }
}

/// Linear interpolation between closest ranks, written out here independently of
/// the aggregate step.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let h = (values.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    values[lo] + (h - h.floor()) * (values[hi] - values[lo])
}
