//! What runs and what is kept: reruns, invalidation, selection, explanations, the cache lock and garbage collection.

use super::*;

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
fn the_cache_lock_stops_a_second_run() {
    let p = Project::with_base("lock");
    std::fs::create_dir_all(p.path().join("cache")).unwrap();
    let f = std::fs::File::options().create(true).truncate(false).write(true).open(p.path().join("cache/.lock")).unwrap();
    f.try_lock().unwrap();
    p.pipeline(&["run", "experiments/t.toml"])
        .status(3)
        .stderr_has("error: cannot lock the cache\n  caused by: another `pipeline run` is using the cache")
        .stderr_has("\nhint: wait for the other run to finish");
    drop(f);
    p.run_ok();
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
    p.pipeline(&["status", "experiments/t.toml"]).status(0).stdout_has("measure    0/4 up to date");
    p.pipeline(&["--help"]).status(0).stdout_has("Examples:");
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

/// The run record's digest (`runs/<name>.sum`) vouches only for the record it was
/// written with: a record deleted (or rewritten by an older binary) while the digest
/// stays is written again by the next no-op run, so `cache gc` keeps its entries; and
/// a record that cannot be read stops gc rather than let it keep nothing.
#[test]
fn a_run_record_gone_from_under_its_digest_is_written_again() {
    let p = Project::with_base("gcsum");
    p.run_ok();
    let runs = p.path().join("cache/runs");
    let record = std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).find(|f| f.extension().is_some_and(|x| x == "json")).unwrap();
    std::fs::remove_file(&record).unwrap();
    p.pipeline(&["run", "experiments/t.toml"]).status(0).stderr_has("0 ran");
    assert!(record.exists(), "the no-op run writes the record again");
    p.pipeline(&["cache", "gc"]).status(0).stderr_has("removed 0 cache entries");
    std::fs::write(&record, "{").unwrap();
    let out = p.pipeline(&["cache", "gc"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("cannot be read") && out.stderr.contains("run that experiment again"), "{}", out.stderr);
    assert!(p.plan_json().iter().all(|s| s["state"] == "fresh"), "gc removed nothing");
}
