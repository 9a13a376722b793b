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

mod fake;
mod hardening;
mod isolation;
mod slurm;
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

impl Output {
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

#[test]
fn run_then_rerun_is_a_no_op_and_the_report_is_written() {
    let p = Project::with_base("noop");
    let first = p.run_ok();
    assert_eq!(first.ran().len(), 8, "{}", first.stderr);
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("# Test"));
    assert!(readme.contains("| a | sim | base |"), "{readme}");
    let report_before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(p.path().join("reports/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    let second = p.run_ok();
    assert!(second.ran().is_empty(), "{}", second.stderr);
    assert!(second.stderr.contains("0 ran, 8 cached"), "{}", second.stderr);
    // Byte-identical report: committing it shows no noise.
    for (f, bytes) in report_before {
        assert_eq!(std::fs::read(&f).unwrap(), bytes, "{} changed", f.display());
    }
    // The per-request table has one row per turn and model and seed, with real timings.
    let csv = p.read("reports/t/summary.csv");
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    // One conversation per cell (batch size 1): close to, and never above, one in flight.
    for row in csv_rows(&csv) {
        let in_flight: f64 = row["in_flight_mean"].parse().unwrap();
        assert!((0.5..=1.0).contains(&in_flight), "{row:?}");
    }
}

/// One test per key ingredient: changing it reruns exactly what depends on it.
/// The report shows what its key covers: a setting it prints (a variant's dtype) that
/// changes no measurement still re-renders it, and only it.
#[test]
fn the_report_never_shows_a_setting_its_key_does_not_cover() {
    let p = Project::with_base("shown");
    p.edit("[models.b]", "variants.awq = { quantization = \"awq\", dtype = \"half\" }\n\n[models.b]");
    p.edit("seed = [1, 2]", "seed = [1]\nvariant = [\"base\", \"awq\"]");
    p.run_ok();
    assert!(p.read("reports/t/README.md").contains("| a | sim | awq | `a` | awq | half |"), "{}", p.read("reports/t/README.md"));
    p.edit("dtype = \"half\"", "dtype = \"bfloat16\"");
    let out = p.run_ok();
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("| a | sim | awq | `a` | awq | bfloat16 |") && !readme.contains("half"), "{readme}");
    assert_eq!(out.ran(), set(&["report"]), "{}", out.stderr);
}

#[test]
fn invalidation_matrix() {
    let p = Project::with_base("inval");
    p.run_ok();
    let agg_report = ["aggregate".to_string(), "report".to_string()];
    let all_measures = [m("a", 1), m("a", 2), m("b", 1), m("b", 2)];
    let case = |what: &str, from: &str, to: &str, expect: Vec<String>| {
        p.edit(from, to);
        let out = p.run_ok();
        assert_eq!(out.ran(), ids(&expect), "changing {what}:\n{}", out.stderr);
    };
    case("a seed", "seed = [1, 2]", "seed = [1, 3]", vec![d(3), m("a", 3), m("b", 3), agg_report[0].clone(), agg_report[1].clone()]);
    case(
        "max-tokens",
        "max-tokens = 4",
        "max-tokens = 3",
        [vec![m("a", 1), m("a", 3), m("b", 1), m("b", 3)], agg_report.to_vec()].concat(),
    );
    case(
        "one model's server",
        "served-name = \"a-inval\"\nsim = { ttft-base-ms = 1.0",
        "served-name = \"a-inval\"\nsim = { ttft-base-ms = 2.0",
        [vec![m("a", 1), m("a", 3)], agg_report.to_vec()].concat(),
    );
    case("the report title", "title = \"Test\"", "title = \"Test 2\"", vec!["report".into()]);
    case(
        "the questions",
        "\"And now?\"",
        "\"And then?\"",
        [vec![d(1), d(3)], vec![m("a", 1), m("a", 3), m("b", 1), m("b", 3)], agg_report.to_vec()].concat(),
    );
    case(
        "the resolution",
        "64x48",
        "56x56",
        [vec![d(1), d(3)], vec![m("a", 1), m("a", 3), m("b", 1), m("b", 3)], agg_report.to_vec()].concat(),
    );
    // Writing a default explicitly changes no key.
    case("an explicit default", "[workload]", "[workload]\ntemperature = 0.0\nrequest-timeout-s = 120", vec![]);
    let _ = all_measures;

    // A template enters the report's key by content: editing it re-renders only the report.
    p.edit("[report]", "[report]\ntemplates = \"my-templates\"");
    p.write("my-templates/README.md.j2", "# {{ title }} (custom)\n");
    let out = p.run_ok();
    assert_eq!(out.ran(), set(&["report"]), "{}", out.stderr);
    assert_eq!(p.read("reports/t/README.md"), "# Test 2 (custom)\n");
    p.write("my-templates/README.md.j2", "# {{ title }} (edited)\n");
    assert_eq!(p.run_ok().ran(), set(&["report"]));

    // An allow-listed environment variable changes what a server does: measures rerun.
    let out =
        cargo_bin_cmd!("pipeline").current_dir(p.path()).env("VLLM_USE_V1", "0").args(["run", "experiments/t.toml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("run    {}", m("a", 1))), "{stderr}");
    assert!(!stderr.contains("run    datagen"), "{stderr}");
}

#[test]
fn plan_explains_why() {
    let p = Project::with_base("why");
    let plan = p.plan_json();
    assert_eq!(plan.len(), 8);
    let by_id = |plan: &[Value], id: &str| plan.iter().find(|s| s["id"] == id).cloned().unwrap_or_else(|| panic!("no step {id}"));
    assert_eq!(by_id(&plan, &d(1))["state"], "run");
    assert_eq!(by_id(&plan, &d(1))["reasons"][0], "new");
    assert_eq!(by_id(&plan, &m("a", 1))["state"], "wait");
    assert_eq!(by_id(&plan, &m("a", 1))["coords"]["seed"], "1");
    p.run_ok();
    assert!(p.plan_json().iter().all(|s| s["state"] == "fresh"));

    p.edit("seed = [1, 2]", "seed = [1, 2]\nbatch-size = [2]");
    let plan = p.plan_json();
    let dg = by_id(&plan, "datagen[seed=1,batch-size=2,frames=1]");
    assert_eq!(dg["reasons"][0], "conversations changed 1 → 2", "{dg}");
    p.edit("seed = [1, 2]\nbatch-size = [2]", "seed = [1, 2]");

    // A damaged output is noticed and only that step (and what reads it) reruns.
    let entry = by_id(&p.plan_json(), &m("b", 2))["key"].as_str().unwrap().to_string();
    let file = p.path().join("cache/measure").join(&entry[..2]).join(&entry).join("requests.csv");
    std::fs::remove_file(&file).unwrap();
    let plan = p.plan_json();
    assert_eq!(by_id(&plan, &m("b", 2))["reasons"][0], "output `requests.csv` is missing");
    let text = p.pipeline(&["plan", "experiments/t.toml"]);
    assert!(
        text.stdout.contains("run    measure[model=b,variant=base,seed=2,batch-size=1,frames=1]  (output `requests.csv` is missing)"),
        "{}",
        text.stdout
    );
    assert_eq!(p.run_ok().ran(), set(&[&m("b", 2), "aggregate", "report"]));
}

#[test]
fn force_and_only_select_cells() {
    let p = Project::with_base("only");
    let out = p.pipeline(&["run", "experiments/t.toml", "--only", "model=a", "--only", "seed=2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.ran(), set(&[&d(2), &m("a", 2)]));
    let out = p.pipeline(&["run", "experiments/t.toml", "--only", "model=a", "--only", "seed=2", "--force"]);
    assert_eq!(out.ran(), set(&[&d(2), &m("a", 2)]), "{}", out.stderr);
    assert!(out.stderr.contains("(forced)"));
    let out = p.pipeline(&["run", "experiments/t.toml", "--kind", "datagen"]);
    assert_eq!(out.ran(), set(&[&d(1)]), "{}", out.stderr);
    let out = p.pipeline(&["run", "experiments/t.toml", "--only", "modle=a"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `model`?"), "{}", out.stderr);
}

#[test]
fn yaml_and_toml_plan_the_same_keys() {
    let p = Project::with_base("yaml");
    p.write(
        "experiments/t.yaml",
        r#"
name: t
title: Test
models:
  a:
    backend: sim
    served-name: a-yaml
    sim: { ttft-base-ms: 1.0, prefill-us-per-token: 0.0, itl-base-ms: 0.5, itl-us-per-inflight: 0.0, jitter: 0.0, answer-tokens: 4 }
  b:
    backend: sim
    served-name: b-yaml
    sim: { ttft-base-ms: 1.0, prefill-us-per-token: 0.0, itl-base-ms: 0.5, itl-us-per-inflight: 0.0, jitter: 0.0, answer-tokens: 4 }
workload:
  turns: 2
  resolution: 64x48
  max-tokens: 4
  warmup-requests: 0
  questions: ["What is this?", "And now?"]
matrix:
  model: [a, b]
  seed: [1, 2]
report:
  dir: reports/t
"#,
    );
    let toml = p.plan_json();
    let out = p.pipeline(&["plan", "experiments/t.yaml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let yaml: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys = |v: &[Value]| v.iter().map(|s| (s["id"].clone(), s["key"].clone())).collect::<Vec<_>>();
    assert_eq!(keys(&toml), keys(&yaml));
}

/// Each bad input: a clear message with file:line:column (or the step), a non-zero exit.
#[test]
fn bad_experiment_files_are_explained() {
    let p = Project::with_base("bad");
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("malformed TOML", "[matrix]", "[matrix", &["t.toml:22:8", "unclosed table"]),
        ("unknown key", "turns = 2", "turns = 2\nturn = 3", &["t.toml:17:1", "unknown field `turn`", "did you mean `turns`?"]),
        ("wrong type", "turns = 2", "turns = \"two\"", &["t.toml:16:9", "invalid type"]),
        ("empty axis", "seed = [1, 2]", "seed = []", &["t.toml:24:8", "matrix.seed: axis is empty"]),
        (
            "undefined model",
            "model = [\"a\", \"b\"]",
            "model = [\"a\", \"c\"]",
            &["t.toml:23:15", "matrix.model[1]: model `c` is not defined"],
        ),
        (
            "zero batch size",
            "seed = [1, 2]",
            "seed = [1, 2]\nbatch-size = [2, 0]",
            &["t.toml:25:18", "matrix.batch-size[1]: must be a whole number from 1 to 10,000 (concurrent conversations), found `0`"],
        ),
        (
            "exclude matching nothing",
            "seed = [1, 2]",
            "seed = [1, 2]\nexclude = [{ model = \"a\", seed = 9 }]",
            &["t.toml:25:", "exclude rule matches no cell"],
        ),
        ("unknown backend", "backend = \"sim\"", "backend = \"vlm\"", &["t.toml:6:11", "unknown backend `vlm`", "did you mean `vllm`?"]),
        (
            "open loop without a rate",
            "turns = 2",
            "turns = 2\narrival = \"poisson\"",
            &["t.toml:17:11", "workload.arrival: open-loop arrival needs `request-rate`", "request-rate = 4.0"],
        ),
        ("a rate in closed loop", "turns = 2", "turns = 2\nrequest-rate = 3.0", &["t.toml:17:16", "only applies to open-loop arrival"]),
        (
            "a missing image folder",
            "turns = 2",
            "turns = 2\nimages-dir = \"nope\"",
            &[
                "t.toml:17:14",
                "workload.images-dir: `nope`: cannot read the folder",
                "\n   17 | images-dir = \"nope\"\n      |              ^^^^^^\n",
                "relative to the project root",
            ],
        ),
        (
            "a folder of other files",
            "turns = 2",
            "turns = 2\nimages-dir = \"notes\"",
            &["t.toml:17:14", "holds files that are not images: a.txt", "keep only JPEG or PNG"],
        ),
        (
            "a missing questions file",
            "turns = 2",
            "turns = 2\nquestions-file = \"q.txt\"",
            &["t.toml:17:18", "workload.questions-file: cannot read `q.txt`"],
        ),
        (
            "a negative SLO",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\nslo = { ttft-ms = -1.0 }",
            &["t.toml:28:19", "report.slo.ttft-ms: must be a number above 0 and at most 86,400,000 (milliseconds), found `-1`"],
        ),
        (
            "an unknown SLO key",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\nslo = { ttft = 500 }",
            &["t.toml:28:", "unknown field `ttft`", "did you mean `ttft-ms`?"],
        ),
        (
            "an unknown executor",
            "title = \"Test\"",
            "title = \"Test\"\nexecutor = \"slurmm\"",
            &["t.toml:4:12", "unknown executor `slurmm`", "local (default), slurm"],
        ),
        (
            "a Slurm time limit Slurm would not read",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n[slurm]\ntime = \"2 hours\"",
            &["t.toml:29:8", "slurm.time: `2 hours` is not a Slurm time limit", "HH:MM:SS"],
        ),
        (
            "an unknown Slurm key",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n[slurm]\npartiton = \"gpu\"",
            &["t.toml:29:1", "did you mean `partition`?"],
        ),
        // Numbers out of range: each a clear error, not a panic or a silent truncation.
        (
            "an infinite request timeout",
            "turns = 2",
            "turns = 2\nrequest-timeout-s = inf",
            &["t.toml:17:21", "workload.request-timeout-s: must be a number above 0 and at most 86,400 (seconds), found `inf`"],
        ),
        (
            "a startup timeout of 1e20 s",
            "[workload]",
            "[server]\nstartup-timeout-s = 1e20\n\n[workload]",
            &["t.toml:16:21", "server.startup-timeout-s: must be a number above 0 and at most 86,400 (seconds), found `1e20`"],
        ),
        (
            "batch sizes and frames past u32",
            "seed = [1, 2]",
            "seed = [1, 2]\nbatch-size = [4294967297]\nframes = [4294967296]",
            &[
                "t.toml:25:15",
                "matrix.batch-size[0]: must be a whole number from 1 to 10,000 (concurrent conversations), found `4,294,967,297`",
                "matrix.frames[0]: must be a whole number from 1 to 1,024 (images per turn), found `4,294,967,296`",
            ],
        ),
        (
            "axis values a workload key would refuse",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n\n[[axis]]\nname = \"t\"\nvalues = [-3, \"abc\", 2.5, 0]\nworkload = \"turns\"\n\n[[axis]]\nname = \"temp\"\nvalues = [9.5]\nworkload = \"temperature\"\n\n[[axis]]\nname = \"mt\"\nvalues = [0]\nworkload = \"max-tokens\"",
            &[
                "t.toml:31:11: axis[0].values[0]: must be a whole number from 1 to 10,000 (turns per conversation), found `-3`",
                "axis[0].values[1]: must be a whole number from 1 to 10,000 (turns per conversation), found `\"abc\"` (not a number)",
                "axis[0].values[2]: must be a whole number from 1 to 10,000 (turns per conversation), found `2.5` (not a whole number)",
                "axis[0].values[3]: must be a whole number from 1 to 10,000 (turns per conversation), found `0`",
                "hint: the values set `turns`, and take what `turns` takes",
                "axis[1].values[0]: must be a number from 0 to 2 (sampling temperature), found `9.5`",
                "axis[2].values[0]: must be a whole number from 1 to 1,000,000 (tokens per answer), found `0`",
            ],
        ),
        (
            "simulator parameters that would panic its timer",
            "jitter = 0.0",
            "jitter = 50.0",
            &["t.toml:8:112", "models.a.sim.jitter: must be a number at least 0 and below 1 (relative jitter), found `50`"],
        ),
        (
            "an infinite simulated TTFT",
            "ttft-base-ms = 1.0",
            "ttft-base-ms = inf",
            &["t.toml:8:24", "models.a.sim.ttft-base-ms: must be a number from 0 to 600,000 (milliseconds), found `inf`"],
        ),
        (
            "a key where its variable's name belongs",
            "backend = \"sim\"",
            "backend = \"sim\"\napi-key-env = \"sk_proj_Abc123def456ghi789jkl012mno345\"",
            &["t.toml:7:15", "models.a.api-key-env: looks like an API key", "!sk_proj_Abc123"],
        ),
        (
            "a name that would break tables and step ids",
            "[models.b]",
            "[models.\"b|x\"]",
            &["models.b|x: `b|x` is not a valid model name", "letters, digits, `-`, `_` and `.`"],
        ),
        (
            "credentials in a URL",
            "[models.b]\nbackend = \"sim\"",
            "[models.b]\nbackend = \"endpoint\"\nurl = \"http://user:secret@localhost:9\"",
            &["t.toml:12:7", "models.b.url: holds a user name or password", "!secret"],
        ),
        (
            "a matrix of a billion cells",
            "seed = [1, 2]",
            "seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999]\nbatch-size = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999, 1000]\nframes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999, 1000]",
            &[
                "matrix: would expand to 2,000,000,000 cells (2 model × 1 variant × 1,000 seed × 1,000 batch-size × 1,000 frames",
                "at most 100,000",
            ],
        ),
    ];
    let original = p.read("experiments/t.toml");
    p.write("notes/a.txt", "not an image");
    std::fs::create_dir_all(p.path().join("cache")).unwrap();
    std::fs::write(p.path().join("cache/keep-me"), "x").unwrap();
    for (what, from, to, expected) in cases {
        p.write("experiments/t.toml", &original);
        p.edit(from, to);
        for cmd in ["plan", "run"] {
            let out = p.pipeline(&[cmd, "experiments/t.toml"]);
            assert_eq!(out.code, 2, "{what} ({cmd}): {}", out.stderr);
            for e in *expected {
                match e.strip_prefix('!') {
                    Some(absent) => assert!(!out.stderr.contains(absent), "{what} ({cmd}): `{absent}` repeated in:\n{}", out.stderr),
                    None => assert!(out.stderr.contains(e), "{what} ({cmd}): expected `{e}` in:\n{}", out.stderr),
                }
            }
        }
    }
    assert!(p.path().join("cache/keep-me").exists(), "nothing cached is lost");
}

#[test]
fn the_cache_lock_stops_a_second_run() {
    let p = Project::with_base("lock");
    std::fs::create_dir_all(p.path().join("cache")).unwrap();
    let f = std::fs::File::options().create(true).truncate(false).write(true).open(p.path().join("cache/.lock")).unwrap();
    f.try_lock().unwrap();
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("another `pipeline run` is using the cache"), "{}", out.stderr);
    drop(f);
    p.run_ok();
}

/// Servers that cannot start fail their measure steps with the reason, and `-k` keeps
/// the independent steps going.
#[test]
fn broken_servers_are_explained() {
    let p = Project::with_base("broken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "command not found",
            r#"command = ["definitely-not-a-server-xyz", "--port", "{port}"]"#.into(),
            "server command `definitely-not-a-server-xyz` not found",
        ),
        (
            "port in use",
            format!(
                r#"command = ["sleep", "30"]
port = {port}"#
            ),
            &format!("port {port} is in use"),
        ),
        ("exits", r#"command = ["sh", "-c", "echo boom-from-server; exit 3"]"#.into(), "boom-from-server"),
        ("never healthy", r#"command = ["sleep", "30"]"#.into(), "did not become healthy within"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a, b, c.to_string()))
    .map(|(a, b, c)| (a, b, Box::leak(c.into_boxed_str()) as &str))
    .collect();
    let original = p.read("experiments/t.toml");
    for (what, command, expected) in cases {
        p.write("experiments/t.toml", &original);
        p.edit("[models.b]\nbackend = \"sim\"", &format!("[models.b]\nbackend = \"command\"\n{command}"));
        p.edit("[workload]", "[server]\nstartup-timeout-s = 1.5\n\n[workload]");
        let out = p.pipeline(&["run", "experiments/t.toml", "--keep-going"]);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{what}: expected `{expected}` in:\n{}", out.stderr);
        // Model a's measures are independent and ran (or were cached from before).
        assert!(!out.stderr.contains(&format!("failed: {}", m("a", 1))), "{what}: {}", out.stderr);
    }
    drop(taken);
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
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push(line.clone());
            if line.starts_with(prefix) {
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

    /// Send `signal`; the exit status and every stderr line.
    fn signal(mut self, signal: rustix::process::Signal) -> (std::process::ExitStatus, Vec<String>) {
        rustix::process::kill_process(rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(), signal).unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.rest.join().unwrap());
        (status, self.seen)
    }
}

#[test]
fn ctrl_c_keeps_completed_steps_and_leaves_no_server() {
    let p = Project::with_base("sigint-7f3a");
    // Slow answers, so the run is still going when it is interrupted.
    p.edit("turns = 2", "turns = 3");
    let text = p.read("experiments/t.toml").replace("itl-base-ms = 0.5", "itl-base-ms = 60.0");
    p.write("experiments/t.toml", &text);
    let run = Background::start(&p, &["run", "experiments/t.toml"], "done   measure");
    assert!(!live_processes("sigint-7f3a").is_empty(), "a server should be running mid-run");
    let (code, seen) = run.interrupt();
    assert_eq!(code, Some(130), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("interrupted: completed steps are kept")), "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_processes("sigint-7f3a").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(live_processes("sigint-7f3a"), Vec::<String>::new(), "orphaned servers");
    let staging: Vec<_> = std::fs::read_dir(p.path().join("cache/tmp")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(staging.is_empty(), "half-written entries left: {staging:?}");
    let finished: Vec<String> =
        seen.iter().filter_map(|l| l.strip_prefix("done   ")).map(|l| l.split(" in ").next().unwrap().to_string()).collect();
    assert!(finished.iter().any(|f| f.starts_with("measure")));
    let resumed = p.run_ok();
    for id in &finished {
        assert!(!resumed.ran().contains(id), "{id} ran again:\n{}", resumed.stderr);
    }
    assert!(!resumed.ran().is_empty());
}

#[test]
fn the_embedded_demo_runs_end_to_end() {
    let p = Project::new();
    let out = p.pipeline(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let readme = p.read("reports/demo/README.md");
    assert!(readme.contains("![End-to-end latency per turn"), "{readme}");
    let summary = p.read("reports/demo/summary.csv");
    // 2 models × 2 variants × 3 seeds × 2 batch sizes × 2 frame counts, minus the 6 excluded.
    assert_eq!(summary.lines().count(), 1 + 42);
    let html = p.read("reports/demo/index.html");
    assert!(html.contains("<svg"), "charts are inline");
    let again = p.pipeline(&["run"]);
    assert!(again.ran().is_empty(), "{}", again.stderr);
}

#[test]
fn dag_and_status_describe_the_plan() {
    let p = Project::with_base("dag");
    let dot = p.pipeline(&["dag", "experiments/t.toml"]);
    assert!(dot.stdout.starts_with("digraph pipeline {"));
    assert!(dot.stdout.contains(&format!("\"{}\" -> \"{}\"", d(1), m("a", 1))));
    assert!(dot.stdout.contains("\"server[model=a,variant=base]\" -> "));
    let mermaid = p.pipeline(&["dag", "experiments/t.toml", "--format", "mermaid"]);
    assert!(mermaid.stdout.starts_with("flowchart LR"));
    // A quote in a label is Mermaid's entity, not a backslash escape it cannot read.
    p.edit("[report]", "[[axis]]\nname = \"q\"\nvalues = [\"a\\\"b\"]\nserver-flag = \"--q\"\n\n[report]");
    let mermaid = p.pipeline(&["dag", "experiments/t.toml", "--format", "mermaid"]);
    assert!(mermaid.stdout.contains("q=a#quot;b") && !mermaid.stdout.contains("\\\""), "{}", mermaid.stdout);
    let status = p.pipeline(&["status", "experiments/t.toml"]);
    assert!(status.stdout.contains("measure    0/4 up to date"), "{}", status.stdout);
    let help = p.pipeline(&["--help"]);
    assert!(help.stdout.contains("Examples:"));
}

#[test]
fn shipped_experiments_are_valid() {
    let cache = tempfile::tempdir().unwrap();
    for file in ["experiments/demo.toml", "experiments/qwen_sweep.toml"] {
        let out = cargo_bin_cmd!("pipeline")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["plan", file, "--cache"])
            .arg(cache.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("measure[model="), "{stdout}");
    }
    // The embedded demo is the shipped file.
    assert_eq!(
        pipeline::config::DEMO_TOML,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/demo.toml")).unwrap()
    );
}

/// The datagen and measure keys of the shipped experiments, pinned: a change of how
/// parameters are built (or serialized) that moves any of them would throw away every
/// cached measurement, GPU hours included. Measures get a fixed input digest, hardware
/// and environment, so the keys depend on the experiment and the code alone.
#[test]
fn datagen_and_measure_keys_of_the_shipped_experiments_are_pinned() {
    use pipeline::config::{self, Source};
    use pipeline::plan::{Plan, StepKind};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    for file in ["experiments/demo.toml", "experiments/qwen_sweep.toml"] {
        let source = Source::read(&root.join(file)).unwrap();
        let experiment = config::load(&source).unwrap();
        let cells = pipeline::matrix::expand(&experiment, &source).unwrap();
        let mut plan = Plan::build(experiment, cells, "pinned hardware".into()).unwrap();
        plan.env.clear();
        for step in plan.steps.iter().filter(|s| matches!(s.kind, StepKind::Datagen | StepKind::Measure)) {
            let inputs = step.deps.iter().map(|&d| (plan.steps[d].id.clone(), "0".repeat(64))).collect();
            text.push_str(&format!("{file} {} {}\n", step.id, plan.key_for(step, inputs).digest().hex()));
        }
    }
    let snapshot = root.join("tests/snapshots/step-keys.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &text).unwrap();
    }
    let pinned = std::fs::read_to_string(&snapshot).unwrap_or_default();
    let changed: Vec<&str> = text.lines().filter(|l| !pinned.lines().any(|p| p == *l)).take(5).collect();
    assert!(
        changed.is_empty() && pinned.lines().count() == text.lines().count(),
        "keys moved (first: {changed:?}); cached results would be lost. If that is intended, bump the step's VERSION, rerun with UPDATE_SNAPSHOTS=1 and say why in the commit"
    );
}

#[test]
fn cache_gc_drops_only_unreferenced_entries() {
    let p = Project::with_base("gc");
    p.run_ok();
    p.edit("seed = [1, 2]", "seed = [1]");
    p.run_ok();
    let out = p.pipeline(&["cache", "gc"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // seed 2's datagen and two measures, and the first aggregate and report.
    assert!(out.stderr.contains("removed 5 cache entries"), "{}", out.stderr);
    assert!(p.plan_json().iter().all(|s| s["state"] == "fresh"));
}

#[test]
fn include_rules_add_cells_and_must_add_something() {
    let p = Project::with_base("incl");
    p.edit("seed = [1, 2]", "seed = [1, 2]\ninclude = [{ model = \"a\", seed = 3 }]");
    let plan = p.plan_json();
    assert!(plan.iter().any(|s| s["id"] == m("a", 3)));
    assert!(!plan.iter().any(|s| s["id"] == m("b", 3)));
    p.edit("seed = 3 }", "seed = 2 }");
    let out = p.pipeline(&["plan", "experiments/t.toml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("matrix.include[0]: include rule adds no cell"), "{}", out.stderr);
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

/// A `[models.NAME]` table whose server is this build's simulator launched as a
/// `command` (with `{port}` and `{served_name}` filled in by pipeline), plus `flags`.
fn sim_command_model(name: &str, flags: &[&str]) -> String {
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let argv: Vec<String> = [bin.as_str(), "sim-server", "--port", "{port}", "--served-model-name", "{served_name}", "--ttft-base-ms", "1"]
        .iter()
        .chain(flags)
        .map(|a| format!("{a:?}"))
        .collect();
    format!("[models.{name}]\nbackend = \"command\"\nserved-name = \"{name}-command\"\ncommand = [{}]\n", argv.join(", "))
}

/// An experiment of one model `g`, the simulator launched as a `command` server with
/// `flags`: two turns, seed 1.
fn one_command_model(name: &str, flags: &[&str]) -> String {
    format!(
        "name = \"{name}\"\n{}\n[workload]\nturns = 2\nresolution = \"64x48\"\nmax-tokens = 2\nwarmup-requests = 0\n[matrix]\nmodel = [\"g\"]\nseed = [1]\n",
        sim_command_model("g", flags)
    )
}

/// One CSV row: column name → text.
type Row = std::collections::BTreeMap<String, String>;

/// Rows of a CSV file (our tables quote nothing we read here).
fn csv_rows(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(String::from)).collect()).collect()
}

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
        "--gpu-memory-utilization",
        "0.9",
    ];
    assert_eq!(argv, expected);
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
        r#"
name = "open"
[models.s]
backend = "sim"
served-name = "s-open-loop"
sim = { ttft-base-ms = 120.0, prefill-us-per-token = 0.0, itl-base-ms = 1.0, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 2 }
[workload]
turns = 3
resolution = "64x48"
max-tokens = 2
warmup-requests = 0
arrival = "constant"
request-rate = 20.0
[matrix]
model = ["s"]
seed = [1]
batch-size = [2]
[[axis]]
name = "rate"
values = [20.0, 4.0]
workload = "request-rate"
"#,
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
    // 120 ms to answer: its later turns go out late. At 4/s (500 ms apart) none does.
    let late = |rows: &Vec<Row>| rows.iter().filter(|r| ns(r, "sent_ns") - ns(r, "scheduled_ns") > 10_000_000).count();
    assert_eq!((rate_of(&tables[0]), rate_of(&tables[1])), (4.0, 20.0));
    assert!(late(&tables[1]) >= 2, "{:?}", tables[1]);
    assert_eq!(late(&tables[0]), 0, "{:?}", tables[0]);
}

/// A server that takes fewer images than the resent history holds answers 400 (vLLM's
/// words); the step fails, keeps its rows, and says which flag fixes it.
#[test]
fn too_many_images_for_the_server_is_explained() {
    let p = Project::new();
    p.write("experiments/t.toml", &one_command_model("limit", &["--limit-images", "1"]));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for expected in [
        "1 of 2 requests failed",
        "http_4xx",
        "At most 1 image(s) may be provided in one request.",
        "hint: the server takes fewer images",
        "--limit-mm-per-prompt",
    ] {
        assert!(out.stderr.contains(expected), "expected `{expected}` in:\n{}", out.stderr);
    }
}

/// A server that dies mid-measurement: the requests answered before are kept (outside
/// the cache), the step fails and says so, and with --keep-going the other model's
/// measure still runs and is cached.
#[test]
fn a_server_dying_mid_measure_keeps_its_rows() {
    let p = Project::new();
    p.write(
        "experiments/t.toml",
        &format!(
            r#"
name = "dies"
{}
[models.fine]
backend = "sim"
served-name = "fine-mid-measure"
sim = {{ ttft-base-ms = 1.0, itl-base-ms = 0.5, answer-tokens = 2 }}
[workload]
turns = 4
resolution = "64x48"
max-tokens = 2
warmup-requests = 0
[matrix]
model = ["dies", "fine"]
seed = [1]
"#,
            sim_command_model("dies", &["--crash-at", "3"])
        ),
    );
    let out = p.pipeline(&["run", "experiments/t.toml", "--keep-going"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("failed: measure[model=dies"), "{}", out.stderr);
    assert!(out.stderr.contains("what it recorded is kept in"), "{}", out.stderr);
    assert!(out.stderr.contains("exited (exit status: 1) during the measurement"), "{}", out.stderr);
    assert!(out.stderr.contains("crashing at chat request 3"), "the server log's tail is shown: {}", out.stderr);
    assert!(out.stderr.contains("done   measure[model=fine"), "{}", out.stderr);
    let rows = p.requests_tables("failed").pop().unwrap();
    let errors: Vec<&str> = rows.iter().map(|r| r["error"].as_str()).collect();
    // The third turn fails; one failure of four planned turns is past max-error-share
    // (5%), so the fourth is not sent: nothing could make the step pass.
    assert_eq!(errors, ["none", "none", "connect"], "the two answered turns are kept");
    assert!(out.stderr.contains("stopped early") && out.stderr.contains("(1 of 4 turns not measured)"), "{}", out.stderr);
    // The healthy model's measure is cached: a rerun does not measure it again.
    let again = p.pipeline(&["plan", "experiments/t.toml"]);
    assert!(again.stdout.contains("fresh  measure[model=fine"), "{}", again.stdout);
}

/// An experiment with one quick simulated model `s` (served as `served`), two-token
/// answers and no warm-up, plus the given `[workload]` and `[matrix]` lines.
fn one_sim_model(name: &str, served: &str, workload: &str, matrix: &str) -> String {
    format!(
        r#"
name = "{name}"
[models.s]
backend = "sim"
served-name = "{served}"
sim = {{ ttft-base-ms = 1.0, itl-base-ms = 0.5, answer-tokens = 2 }}
[workload]
max-tokens = 2
warmup-requests = 0
{workload}
[matrix]
model = ["s"]
{matrix}
"#
    )
}

/// Image reuse by id (vLLM's multimodal UUIDs): each image goes out once with its id,
/// later turns refer to it with `"image_url": null` (the simulator, like vLLM, refuses a
/// reference it has not seen), so request bodies stop growing by an image per turn while
/// the prompt still counts every image.
#[test]
fn images_can_be_sent_once_and_referenced_by_id() {
    let p = Project::new();
    let file = |reuse: &str| {
        one_sim_model("reuse", "s-image-reuse", &format!("turns = 3\nresolution = \"320x240\"\nimage-reuse = \"{reuse}\""), "")
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
        one_sim_model("video", "s-video", &format!("turns = 1\nresolution = \"64x48\"\nframes-as = \"{frames_as}\""), "frames = [4]")
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
                        "<script>alert(1)</script> a red square".to_string()
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
    let meta = serde_json::json!({
        "server": {"backend": "sim", "command": ["/somewhere/bin/pipeline", "sim-server", "--port", "41234"], "version": "pipeline-sim test"},
        "nvml": if gpu { serde_json::json!({"available": true, "driver": "550.54", "cuda": 12040, "gpus": ["Test GPU"]}) } else { serde_json::json!({"available": false, "reason": "no driver here"}) },
        "telemetry": if gpu { serde_json::json!({"available": true}) } else { serde_json::json!({"available": false, "reason": "no driver here"}) },
        "isolation": if seed == 2 {
            serde_json::json!({"asked": "auto", "done": "salt", "complete": false, "notes": ["the server refused POST /reset_prefix_cache (HTTP 404)"]})
        } else {
            serde_json::json!({"asked": "auto", "done": "reset", "complete": true})
        },
        "server_metrics": if batch == 2 {
            serde_json::json!({"available": true, "prefix_cache_hit_rate": 0.5, "kv_cache_usage_peak": 0.25, "running_peak": 2.0, "waiting_peak": 0.0, "server_ttft_ms_mean": 12.0})
        } else {
            serde_json::json!({"available": false, "reason": "GET /metrics answered HTTP 404"})
        },
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
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

/// Aggregate and render fixed measure outputs (no servers): the Markdown is pinned by
/// a snapshot (`UPDATE_SNAPSHOTS=1 cargo test` rewrites it; review the diff), rendering
/// twice gives byte-identical files, HTML escapes a model's answer, and the GPU figures
/// follow from the samples.
#[test]
fn report_from_fixed_inputs_matches_its_snapshot() {
    use pipeline::config::{self, Source};
    let tmp = tempfile::tempdir().unwrap();
    let source =
        Source { display: "experiments/fixed.toml".into(), text: FIXED.into(), yaml: false, base_dir: tmp.path().into(), path: None };
    let mut exp = config::load(&source).unwrap();
    exp.report.provenance = "experiments/fixed.toml (not committed to git)".into();
    let cells = pipeline::matrix::expand(&exp, &source).unwrap();
    let plan = pipeline::plan::Plan::build(exp, cells, "test machine".into()).unwrap();
    let mut inputs = Vec::new();
    for (i, cell) in plan.cells.iter().enumerate() {
        let dir = tmp.path().join(format!("measure{i}"));
        fixed_measure(&dir, &cell.coords(), i == 0);
        inputs.push((format!("measure[{cell}]"), dir));
    }
    let agg = tmp.path().join("aggregate");
    std::fs::create_dir_all(&agg).unwrap();
    let of = |kind| plan.steps.iter().find(|s| s.kind == kind).unwrap();
    let aggregate: pipeline::steps::aggregate::Params = of(pipeline::plan::StepKind::Aggregate).typed().unwrap();
    pipeline::steps::aggregate::run(&aggregate, &inputs, &agg).unwrap();
    let report: pipeline::steps::report::Params = of(pipeline::plan::StepKind::Report).typed().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    for out in [&one, &two] {
        std::fs::create_dir_all(out).unwrap();
        pipeline::steps::report::run(&report, &agg, None, None, out).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&one).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for f in &names {
        assert_eq!(std::fs::read(one.join(f)).unwrap(), std::fs::read(two.join(f)).unwrap(), "{f} differs between two renders");
    }
    for f in [
        "README.md",
        "index.html",
        "summary.csv",
        "seeds.csv",
        "points.csv",
        "per_turn.csv",
        "errors.csv",
        "requests.parquet",
        "telemetry.parquet",
        "batch_size.svg",
        "throughput_latency.svg",
        "telemetry.svg",
        "per_turn_1.svg",
    ] {
        assert!(names.contains(&f.to_string()), "{f} missing from {names:?}");
    }

    let html = std::fs::read_to_string(one.join("index.html")).unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "the answer is escaped");
    assert!(!html.contains("<script>"), "no script tag gets through");
    let readme = std::fs::read_to_string(one.join("README.md")).unwrap();
    assert!(readme.contains("\\<script\\>alert(1)\\</script\\> a red square") && !readme.contains("<script>"), "{readme}");

    let summary = csv_rows(&std::fs::read_to_string(one.join("summary.csv")).unwrap());
    let gpu_cell = &summary.iter().find(|r| r["seed"] == "1" && r["batch_size"] == "1").unwrap();
    assert_eq!(gpu_cell["energy_j"].parse::<f64>().unwrap(), 80.0);
    assert_eq!(gpu_cell["power_peak_w"], "300.0");
    assert_eq!(gpu_cell["throttle_seen"], "SW_POWER_CAP", "GPU_IDLE is not throttling");
    // 4 requests (warm-up included) × 8 tokens in the sampled window.
    assert_eq!(gpu_cell["energy_per_token_j"].parse::<f64>().unwrap(), 80.0 / 32.0);
    // ITL pools every gap: 6 of 2.0 ms and 1 of 2.5 ms per request.
    assert_eq!(gpu_cell["itl_max_ms"], "2.5");
    assert_eq!(gpu_cell["itl_p50_ms"], "2.0");
    let failed = summary.iter().find(|r| r["seed"] == "2" && r["batch_size"] == "2").unwrap();
    assert_eq!(failed["errors"], "1");
    // SLO: TTFT ≤ 30 ms. Seed 2, batch 2: TTFT = 10 + 5·turn + 2 + 3·conversation + 2,
    // at most 24 ms, so the five answered turns are good and the failed one is not.
    assert_eq!(failed["slo_met_pct"].parse::<f64>().unwrap(), 500.0 / 6.0);

    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/fixed-report.md");
    let readme = std::fs::read_to_string(one.join("README.md")).unwrap();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &readme).unwrap();
    }
    let pinned = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        pinned == readme,
        "README.md differs from {}; if the change is intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff",
        snapshot.display()
    );
}

/// Linear interpolation between closest ranks, written out here independently of
/// the aggregate step.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let h = (values.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    values[lo] + (h - h.floor()) * (values[hi] - values[lo])
}

/// A real run on the simulator; then every p99 and every per-turn median in the report
/// is recomputed from the report's own `requests.parquet`. `pipeline report` re-renders
/// (a changed SLO) without measuring, and compares against a baseline.
#[test]
fn report_numbers_recompute_from_the_raw_rows() {
    use polars::prelude::*;
    let p = Project::with_base("recompute");
    p.edit("turns = 2", "turns = 3");
    p.edit("seed = [1, 2]", "seed = [1, 2, 3]\nbatch-size = [2]");
    p.run_ok();
    let req = ParquetReader::new(std::fs::File::open(p.path().join("reports/t/requests.parquet")).unwrap()).finish().unwrap();
    let col_str = |c: &str| -> Vec<String> {
        req.column(c).unwrap().cast(&DataType::String).unwrap().str().unwrap().iter().map(|v| v.unwrap_or("").to_string()).collect()
    };
    let col_f64 = |c: &str| -> Vec<Option<f64>> { req.column(c).unwrap().f64().unwrap().iter().collect() };
    let (model, seed, turn, error) = (col_str("model"), col_str("seed"), col_str("turn"), col_str("error"));
    let warmup: Vec<bool> = req.column("warmup").unwrap().bool().unwrap().iter().map(|v| v.unwrap()).collect();
    let (ttft, e2e) = (col_f64("ttft_ms"), col_f64("e2e_ms"));
    let ok = |i: usize| !warmup[i] && error[i] == "none";

    let summary = csv_rows(&p.read("reports/t/summary.csv"));
    assert_eq!(summary.len(), 6);
    for row in &summary {
        let mut v: Vec<f64> =
            (0..req.height()).filter(|&i| ok(i) && model[i] == row["model"] && seed[i] == row["seed"]).map(|i| ttft[i].unwrap()).collect();
        assert_eq!(v.len(), 6, "2 conversations × 3 turns");
        let mine = percentile(&mut v, 0.99);
        let theirs: f64 = row["ttft_p99_ms"].parse().unwrap();
        assert!((mine - theirs).abs() < 1e-9, "ttft p99 of {row:?}: {mine} vs {theirs}");
    }
    let per_turn = csv_rows(&p.read("reports/t/per_turn.csv"));
    assert_eq!(per_turn.len(), 2 * 3);
    for row in &per_turn {
        let mut seed_medians: Vec<f64> = ["1", "2", "3"]
            .iter()
            .map(|s| {
                let mut v: Vec<f64> = (0..req.height())
                    .filter(|&i| ok(i) && model[i] == row["model"] && turn[i] == row["turn"] && seed[i] == *s)
                    .map(|i| e2e[i].unwrap())
                    .collect();
                percentile(&mut v, 0.5)
            })
            .collect();
        let mine = percentile(&mut seed_medians, 0.5);
        let theirs: f64 = row["e2e_median_ms"].parse().unwrap();
        assert!((mine - theirs).abs() < 1e-9, "per-turn median of {row:?}: {mine} vs {theirs}");
    }

    // A new SLO: aggregate and report run again, nothing is measured.
    std::fs::create_dir_all(p.path().join("baseline")).unwrap();
    for e in std::fs::read_dir(p.path().join("reports/t")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), p.path().join("baseline").join(e.file_name())).unwrap();
    }
    p.edit("dir = \"reports/t\"", "dir = \"reports/t\"\nslo = { e2e-ms = 0.001 }");
    let out = p.pipeline(&["report", "experiments/t.toml", "--baseline", "baseline"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.ran(), set(&["aggregate", "report"]), "{}", out.stderr);
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("end-to-end ≤ 0.001 ms"), "{readme}");
    assert!(readme.contains("- none: no cell meets the SLO"), "{readme}");
    let compared: Vec<&str> = readme.lines().filter(|l| l.contains(" | E2E mean (ms) | ")).collect();
    assert_eq!(compared.len(), 2 + 2, "two curves in the seeds table and two in the comparison:\n{readme}");
    assert!(compared.iter().filter(|l| l.ends_with("| within noise |")).count() == 2, "the same rows never differ:\n{readme}");

    // Nothing cached: nothing to render from.
    let fresh = Project::with_base("recompute-empty");
    let out = fresh.pipeline(&["report", "experiments/t.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("have no cached results") && out.stderr.contains("pipeline run experiments/t.toml"), "{}", out.stderr);
}
