//! Quality beside speed: the simulator's known answer quality comes back as measured
//! agreement, a changed scorer re-scores without measuring, and bad `[quality]` tables
//! are refused with the fix.

use std::collections::BTreeMap;

use super::*;

mod judge;

/// An experiment of two simulated variants over a chat file of `n` two-turn
/// conversations (text only, recorded answers), with `quality` appended.
fn project(tag: &str, n: usize, awq_quality: f64, quality: &str) -> Project {
    let p = Project::new();
    let lines: Vec<String> = (0..n)
        .map(|k| {
            serde_json::json!({"id": format!("c{k}"), "messages": [
                {"role": "user", "content": format!("question {k}: what is {k} + 1?")},
                {"role": "assistant", "content": format!("{}", k + 1)},
                {"role": "user", "content": format!("and {k} + 2?")},
                {"role": "assistant", "content": format!("{}", k + 2)}
            ]})
            .to_string()
        })
        .collect();
    p.write("data/chat.jsonl", &lines.join("\n"));
    let sim =
        "ttft-base-ms = 1.0, prefill-us-per-token = 0.0, itl-base-ms = 0.2, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 4";
    p.write(
        "experiments/q.toml",
        &format!(
            r#"name = "q"
[models.m]
backend = "sim"
served-name = "m-{tag}"
sim = {{ {sim}, quality = 1.0 }}
[models.m.variants.awq]
sim = {{ quality = {awq_quality} }}
[workload]
conversations = "data/chat.jsonl"
history = "recorded"
turns = 2
max-tokens = 8
warmup-requests = 0
[matrix]
model = ["m"]
variant = ["base", "awq"]
seed = [1, 2]
batch-size = [{n}]
[report]
dir = "reports/q"
{quality}"#
        ),
    );
    p
}

/// The report's `quality.csv`, as (variant, method) → (mean, low, high).
fn scores(p: &Project) -> BTreeMap<(String, String), (f64, f64, f64)> {
    read_scores(&p.read("reports/q/quality.csv"))
}

fn read_scores(text: &str) -> BTreeMap<(String, String), (f64, f64, f64)> {
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    rows.records()
        .map(|r| {
            let r = r.unwrap();
            let num = |name: &str| r[at(name)].parse::<f64>().unwrap();
            ((r[at("variant")].to_string(), r[at("method")].to_string()), (num("mean"), num("mean_lo"), num("mean_hi")))
        })
        .collect()
}

/// (variant, seed, conversation, turn, answer) of every measured request.
fn answers(p: &Project) -> BTreeMap<(String, String, u32, u32), String> {
    use polars::prelude::*;
    let df = ParquetReader::new(std::fs::File::open(p.path().join("reports/q/requests.parquet")).unwrap()).finish().unwrap();
    let df = df.lazy().filter(col("warmup").not()).collect().unwrap();
    let text = |name: &str| df.column(name).unwrap().cast(&DataType::String).unwrap().str().unwrap().clone();
    let (variant, seed, answer) = (text("variant"), text("seed"), text("answer"));
    let (conv, turn) = (df.column("conversation").unwrap().u32().unwrap().clone(), df.column("turn").unwrap().u32().unwrap().clone());
    (0..df.height())
        .map(|i| {
            let key = (variant.get(i).unwrap().to_string(), seed.get(i).unwrap().to_string(), conv.get(i).unwrap(), turn.get(i).unwrap());
            (key, answer.get(i).unwrap().to_string())
        })
        .collect()
}

/// The simulator answers its canonical answer with the probability its `quality`
/// says: measured agreement with a base at 1.0 must find about that share, base
/// against itself exactly 1, and the glance says so beside the speed.
#[test]
fn measured_agreement_finds_the_simulators_quality() {
    let p = project("agree", 40, 0.8, "[quality]\nagreement = \"base\"\n");
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let s = scores(&p);
    assert_eq!(s[&("base".into(), "agreement".into())], (1.0, 1.0, 1.0), "{s:?}");
    let (mean, lo, hi) = s[&("awq".into(), "agreement".into())];
    assert!(lo <= 0.8 && 0.8 <= hi && lo < mean && mean < hi, "awq agreement {mean} [{lo}, {hi}] should contain 0.8");
    let (chrf, _, _) = s[&("awq".into(), "chrf".into())];
    // Equal answers score chrF 1, so the mean chrF is at least the agreement.
    assert!(chrf >= mean && chrf < 1.0, "chrF {chrf} against agreement {mean}");
    let readme = p.read("reports/q/README.md");
    let pct = format!("{:.0}%", mean * 100.0);
    // Speed and quality in one verdict.
    let verdict = readme.lines().find(|l| l.starts_with("- m awq is ")).unwrap_or_else(|| panic!("{readme}"));
    assert!(verdict.contains(&format!("as fast as m base end to end (")), "{verdict}");
    assert!(verdict.contains(&format!("), and gives the same answer as m base on {pct} [")), "{verdict}");
    assert!(readme.contains("## Quality"), "{readme}");

    // Recomputed from the request rows: the share of turns whose answers are equal.
    let answers = answers(&p);
    let pairs: Vec<bool> = answers
        .iter()
        .filter(|((v, ..), _)| v == "awq")
        .map(|((_, s, c, t), a)| answers[&("base".to_string(), s.clone(), *c, *t)].trim() == a.trim())
        .collect();
    assert_eq!(pairs.len(), 160, "40 conversations × 2 turns × 2 seeds");
    let share = pairs.iter().filter(|&&x| x).count() as f64 / pairs.len() as f64;
    assert!((share - mean).abs() < 1e-12, "report {mean}, recomputed {share}");
}

/// Scoring is its own step: a changed scorer re-scores, aggregates and reports, and
/// measures nothing; `plan` says why.
#[test]
fn a_changed_scorer_rescores_without_measuring() {
    let p = project("rescore", 4, 0.5, "[quality]\nscore = [\"exact\"]\n");
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    assert!(scores(&p).contains_key(&("awq".to_string(), "exact".to_string())));
    p.write("experiments/q.toml", &p.read("experiments/q.toml").replace("score = [\"exact\"]", "score = [\"number\"]"));
    p.pipeline(&["plan", "experiments/q.toml"]).status(0).stdout_has("quality[").stdout_has("scorers changed");
    let ran = p.pipeline(&["run", "experiments/q.toml"]).status(0).ran();
    assert!(ran.iter().all(|id| id.starts_with("quality[") || id == "aggregate" || id == "report"), "{ran:?}");
    assert_eq!(ran.iter().filter(|id| id.starts_with("quality[")).count(), 4, "{ran:?}");
    assert!(scores(&p).contains_key(&("awq".to_string(), "number".to_string())));
}

#[test]
fn bad_quality_tables_name_the_fix() {
    let p = project("bad", 2, 0.5, "");
    let base = p.read("experiments/q.toml");
    for (quality, message) in [
        ("[quality]\nscore = [\"exakt\"]\n", "quality.score[0]: unknown scorer `exakt`"),
        ("[quality]\nscore = [\"exakt\"]\n", "did you mean `exact`?"),
        ("[quality]\nagreement = \"fp8\"\n", "quality.agreement: variant `fp8` is not in the matrix"),
        ("[quality]\nnumber-tolerance = 2.0\n", "quality.number-tolerance: must be a number from 0 to 1"),
        ("[quality]\n", "quality: scores nothing"),
        (
            "[[axis]]\nname = \"t\"\nworkload = \"temperature\"\nvalues = [0.0, 0.9]\n[quality]\nagreement = \"base\"\n",
            "only means something at temperature 0",
        ),
        (
            "[search]\naxis = \"batch-size\"\nmin = 1\nmax = 8\n[quality]\nagreement = \"base\"\n",
            "but `[search]` probes each curve at values of its own",
        ),
    ] {
        p.write("experiments/q.toml", &format!("{base}{quality}"));
        p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has(message);
    }
    let warm = base.replace("warmup-requests = 0", "warmup-requests = 0\ntemperature = 0.7");
    p.write("experiments/q.toml", &format!("{warm}[quality]\nagreement = \"base\"\n"));
    p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has("only means something at temperature 0");
    let synthetic = base.replace("conversations = \"data/chat.jsonl\"\nhistory = \"recorded\"\n", "");
    p.write("experiments/q.toml", &format!("{synthetic}[quality]\nscore = [\"exact\"]\n"));
    p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has("synthetic conversations have none");
}

/// `--fail-on quality`: against a baseline whose variant agreed fully, a run whose
/// simulated quality was lowered fails the gate; an unchanged rerun passes; and a
/// baseline without quality figures lists them as not compared.
#[test]
fn fail_on_quality_gates_a_lowered_quality() {
    let p = project("gate", 30, 1.0, "[quality]\nagreement = \"base\"\n");
    let keep = |to: &str| {
        std::fs::create_dir_all(p.path().join(to)).unwrap();
        for e in std::fs::read_dir(p.path().join("reports/q")).unwrap().flatten() {
            std::fs::copy(e.path(), p.path().join(to).join(e.file_name())).unwrap();
        }
    };
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    keep("good");
    let report = |fail_on: &str| p.pipeline(&["report", "experiments/q.toml", "--baseline", "good", "--fail-on", fail_on]);
    report("quality").status(0).stderr_has("nothing is worse than good");
    let text = p.read("experiments/q.toml");
    let lowered = text.replace("[models.m.variants.awq]\nsim = { quality = 1 }", "[models.m.variants.awq]\nsim = { quality = 0.5 }");
    assert_ne!(lowered, text);
    p.write("experiments/q.toml", &lowered);
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    report("quality").status(4).stderr_has("m (awq), batch-size=30, frames=1  quality: agreement against base: ");
    // A baseline from before [quality]: its figures are not compared, nothing fails.
    std::fs::remove_file(p.path().join("good/quality.parquet")).unwrap();
    report("quality").stderr_has("not compared").stderr_has("quality: agreement against base");
}

/// The shipped multiple-choice example: `choice` scoring gives exactly the accuracy a
/// hand count of the request rows against the file's letters gives, and the
/// simulator's reference-knowing base scores 1.
#[test]
fn choice_accuracy_is_the_hand_count() {
    use polars::prelude::*;
    let p = Project::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write("experiments/quality_mmmu.toml", &std::fs::read_to_string(root.join("experiments/quality_mmmu.toml")).unwrap());
    p.write("experiments/data/mmmu/questions.jsonl", &std::fs::read_to_string(root.join("experiments/data/mmmu/questions.jsonl")).unwrap());
    for n in 1..=10 {
        let rel = format!("experiments/data/mmmu/images/q-{n}.png");
        std::fs::create_dir_all(p.path().join(&rel).parent().unwrap()).unwrap();
        std::fs::copy(root.join(&rel), p.path().join(&rel)).unwrap();
    }
    p.pipeline(&["run", "experiments/quality_mmmu.toml"]).status(0);
    // The file's letters, by conversation id.
    let letters: BTreeMap<String, String> = p
        .read("experiments/data/mmmu/questions.jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v["messages"][1]["content"].as_str().unwrap().to_string())
        })
        .collect();
    // Per variant: (answers equal to their letter, answers).
    let mut count: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for (dir, meta) in p.measure_metas() {
        let variant = meta["cell"].as_array().unwrap().iter().find(|kv| kv[0] == "variant").unwrap()[1].as_str().unwrap().to_string();
        let ids: Vec<String> =
            meta["dataset"]["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().into()).collect();
        let df = ParquetReader::new(std::fs::File::open(dir.parent().unwrap().join("requests.parquet")).unwrap()).finish().unwrap();
        let df = df.lazy().filter(col("warmup").not()).collect().unwrap();
        let (conv, answer) =
            (df.column("conversation").unwrap().u32().unwrap().clone(), df.column("answer").unwrap().str().unwrap().clone());
        for i in 0..df.height() {
            let c = &mut count.entry(variant.clone()).or_default();
            c.1 += 1;
            if answer.get(i).unwrap().trim() == letters[&ids[conv.get(i).unwrap() as usize]] {
                c.0 += 1;
            }
        }
    }
    let s = read_scores(&p.read("reports/quality_mmmu/quality.csv"));
    for (variant, (right, all)) in &count {
        assert_eq!(*all, 30, "10 questions × 3 seeds");
        let (mean, _, _) = s[&(variant.clone(), "choice".to_string())];
        assert!((mean - *right as f64 / *all as f64).abs() < 1e-12, "{variant}: report {mean}, hand count {right}/{all}");
    }
    assert_eq!(count["base"].0, 30, "the base simulator knows every reference");
    assert!(count["awq"].0 < 30, "the AWQ simulator misses some: {count:?}");

    // The speed × quality chart, read in Chromium at desktop and phone widths: drawn,
    // with a point per variant, inside the page, which does not scroll sideways.
    let measure = r#"
  var svg = d.querySelector('a[href="speed_quality.svg"] svg');
  if (!svg) return { missing: true };
  var r = svg.getBoundingClientRect();
  var colours = new Set([...svg.querySelectorAll('circle')].map(c => c.getAttribute('fill') + c.getAttribute('stroke')));
  return { shown: Math.round(r.width), right: Math.round(r.right), points: svg.querySelectorAll('circle').length, colours: colours.size,
           scroll: d.documentElement.scrollWidth, width: d.documentElement.clientWidth };"#;
    let Some(m) = super::reports::in_chromium(&p.path().join("reports/quality_mmmu/index.html"), measure) else { return };
    for view in ["wide", "phone"] {
        let v = &m[view];
        assert!(v["missing"].is_null(), "{view}: the chart is in the Quality section: {v}");
        let at = |k: &str| v[k].as_i64().unwrap();
        assert!(at("shown") > 200 && at("right") <= at("width"), "{view}: the chart fits the page: {v}");
        assert!(at("points") >= 2, "{view}: a point per variant: {v}");
        assert!(at("colours") >= 2, "{view}: each point its own colour: {v}");
        assert!(at("scroll") <= at("width"), "{view}: the page scrolls sideways: {v}");
    }
}

/// A minimum quality in the SLO: a variant whose answers agree too rarely does not
/// meet it however fast it is, and the best point is the one that does.
#[test]
fn a_minimum_quality_in_the_slo_decides_the_best_point() {
    let p = project("slo", 20, 0.5, "slo = { ttft-ms = 500.0, quality = 0.9 }\n[quality]\nagreement = \"base\"\n");
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let points = p.read("reports/q/points.csv");
    let mut rows = csv::Reader::from_reader(points.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let got: BTreeMap<String, (String, String)> = rows
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[at("variant")].to_string(), (r[at("meets_slo")].to_string(), r[at("best")].to_string()))
        })
        .collect();
    assert_eq!(got["awq"], ("false".to_string(), "false".to_string()), "{points}");
    assert_eq!(got["base"], ("true".to_string(), "true".to_string()), "{points}");
    assert!(p.read("reports/q/README.md").contains("quality ≥ 0.9"), "the SLO says so");
    // Nothing scored, nothing to judge by.
    let text = p.read("experiments/q.toml").replace("[quality]\nagreement = \"base\"\n", "");
    p.write("experiments/q.toml", &text);
    p.pipeline(&["plan", "experiments/q.toml"])
        .status(2)
        .stderr_has("report.slo.quality: asks for a minimum quality, but nothing is scored");
}
