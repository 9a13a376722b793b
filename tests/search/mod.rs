//! `[search]`: the largest batch size within the SLO, found by probes that are ordinary
//! cached cells.

use super::*;

/// The simulator's inter-token time is `itl-base-ms + itl-us-per-inflight × requests in
/// flight`: 4 ms + 8 ms per conversation here, so TPOT is about 4 + 8B ms at batch size
/// B (one turn each, all in flight together), and an SLO of TPOT ≤ 48 ms breaks
/// between 5 (44 ms) and 6 (52 ms). Answers of 32 tokens average out a loaded machine's
/// stalls (one of 120 ms moves a TPOT by 4 ms). The search lands on 5; a rerun measures
/// nothing; a tighter SLO (32 ms: 3) walks again and measures no cell it has measured
/// before, only new ones (3, and extra seeds where seeds disagree). Asking for peak
/// goodput instead finds 5 from the same probes. `pipeline plan` shows the probes known
/// so far.
#[test]
fn the_search_finds_the_simulators_breaking_point_and_remembers_its_probes() {
    let p = Project::new();
    p.write("experiments/t.toml", &search_on_sim("search", "1, 2", 64));
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(0)
        .stdout_has("measure[model=a,variant=base,seed=1,batch-size=1,frames=1]")
        .stdout_has("search: 1 curve(s) go on after the probes above");
    let first = p.run_ok();
    let measured = |out: &Output| -> BTreeSet<String> { out.ran().into_iter().filter(|id| id.starts_with("measure[")).collect() };
    let batches = |ids: &BTreeSet<String>| -> BTreeSet<u32> {
        ids.iter().map(|id| id.split("batch-size=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()).collect()
    };
    // 1, 2, 4 meet; 8 misses; then 6 misses and 5 meets: two seeds each.
    assert_eq!(batches(&measured(&first)), BTreeSet::from([1, 2, 4, 8, 6, 5]), "{}", first.stderr);
    assert!(measured(&first).len() >= 12, "two seeds each, and extra ones where they disagree");
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("- Search: the largest batch-size within the SLO, per curve: a (base), frames=1: 5."), "{readme}");
    assert!(readme.contains("batch-size = 5 meets the SLO") && readme.contains("; 6 misses it (probes 1, 2, 4, 8, 6, 5)"), "{readme}");
    assert!(readme.contains("| 4 | 8 | 2 | 0 [0–0] | misses |"), "{readme}");
    assert!(readme.contains("](search.svg)") && p.path().join("reports/t/search.svg").exists(), "the probes' chart");
    assert_eq!(readme.matches("](per_turn_").count(), 1, "one per-turn panel, at the value found:\n{readme}");

    let again = p.run_ok();
    assert!(measured(&again).is_empty(), "a rerun walks the same path from the cache:\n{}", again.stderr);
    // `status` and `report` see the probes too, not just the matrix's cell.
    let status = p.pipeline(&["status", "experiments/t.toml"]);
    let line = status.stdout.lines().find(|l| l.trim_start().starts_with("measure")).unwrap_or_default().to_string();
    let (fresh, all) = line.split_whitespace().nth(1).and_then(|f| f.split_once('/')).unwrap_or_default();
    assert!(fresh == all && all.parse::<usize>().unwrap_or(0) >= 12, "{}", status.stdout);
    let report = p.pipeline(&["report", "experiments/t.toml"]);
    report.status(0);
    assert!(measured(&report).is_empty(), "{}", report.stderr);
    p.pipeline(&["plan", "experiments/t.toml"]).status(0).stdout_has("0 to run").stdout_lacks("go on after");

    // Peak goodput instead: goodput grows with the batch size until the SLO breaks, so
    // its peak is 5 too, and the walk visits only probes it has already measured.
    p.edit("max = 64", "max = 64\nobjective = \"goodput\"");
    let peak = p.run_ok();
    assert!(measured(&peak).is_empty(), "the same probes, from the cache:\n{}", peak.stderr);
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("- Search: the batch-size of peak goodput, per curve: a (base), frames=1: 5"), "{readme}");
    assert!(readme.contains("batch-size = 5 gives the peak goodput"), "{readme}");
    p.edit("\nobjective = \"goodput\"", "");

    p.edit("tpot-ms = 48.0", "tpot-ms = 32.0");
    let tighter = p.run_ok();
    let again: BTreeSet<String> = measured(&tighter);
    assert!(again.is_disjoint(&measured(&first)), "no cell is measured twice:\n{}", tighter.stderr);
    assert!(batches(&again).contains(&3), "the new probe:\n{}", tighter.stderr);
    assert!(
        again.iter().all(|id| id.contains("batch-size=3,") || !id.contains("seed=1,") && !id.contains("seed=2,")),
        "besides 3, only extra seeds:\n{}",
        tighter.stderr
    );
    assert!(p.read("reports/t/README.md").contains("per curve: a (base), frames=1: 3."));
}

/// A search needs an axis with numbers and a range.
#[test]
fn a_search_without_an_axis_or_a_range_is_refused() {
    let p = Project::with_base("bad-search");
    let text = p.read("experiments/t.toml");
    p.write("experiments/t.toml", &format!("{text}\n[search]\naxis = \"batch_size\"\nmin = 4\nmax = 2\n"));
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("`batch_size` is not an axis with numbers to search")
        .stderr_has("did you mean `batch-size`?")
        .stderr_has("search.max")
        .stderr_has("must be above min (4)");
    // A range the axis cannot take is named in the axis's own terms.
    p.write("experiments/t.toml", &format!("{text}\n[search]\naxis = \"batch-size\"\nmin = 0\nmax = 8\n"));
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("search.min: must be a whole number from 1")
        .stderr_has("concurrent conversations");
}

/// `pipeline ARGS` that must end within `secs`; one that spins is killed and fails the
/// test rather than hang it.
fn pipeline_within(p: &Project, args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("pipeline"))
        .current_dir(p.path())
        .env_remove("PIPELINE_CACHE")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`pipeline {}` did not end within {secs} s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// An imported model has fixed results: a search over it could never measure its next
/// probe. Every command refuses it at once (they used to spin at full CPU).
#[test]
fn a_search_over_an_imported_model_is_refused() {
    let p = Project::new();
    p.write("runs/ok.csv", "times_to_first_token,times_to_completion\n0.2,1.0\n");
    p.write(
        "experiments/t.toml",
        "name = \"imp\"\n[models.a]\nbackend = \"import\"\nformat = \"study-csv\"\nresults = { 1 = \"runs/ok.csv\" }\n[matrix]\nmodel = [\"a\"]\nseed = [1]\n[search]\naxis = \"batch-size\"\nmin = 1\nmax = 8\n[report]\ndir = \"reports/t\"\nslo = { e2e-ms = 500.0 }\n",
    );
    for cmd in ["plan", "run", "status", "report"] {
        pipeline_within(&p, &[cmd, "experiments/t.toml"], 30)
            .status(2)
            .stderr_has("t.toml:9:")
            .stderr_has("search: model `a` is imported")
            .stderr_has("hint: search the models that run");
    }
}

/// A probe takes its axis's type: on a server flag of whole numbers it is sent as `1`
/// (the simulator, like vLLM, refuses `--answer-tokens 1.0`), and on `max-tokens` it is
/// what the requests ask for (it used to be dropped for the file's own value). Each
/// measured cell's requests show the probed value.
#[test]
fn probes_of_whole_number_axes_reach_the_server_and_the_workload() {
    let p = Project::new();
    // One turn of 16 tokens at most; `n` searched from 1 to 4 within a loose SLO.
    let searched = |exp: Exp, feeds: &str| {
        exp.workload("turns", "1")
            .workload("resolution", "\"64x48\"")
            .workload("max-tokens", "16")
            .matrix("seed", "[1]")
            .axis("n", "[8]", feeds)
            .table("[search]\naxis = \"n\"\nmin = 1\nmax = 4")
            .table("[report]\ndir = \"reports/t\"\nslo = { e2e-ms = 60000.0 }")
            .text()
    };
    let flag = searched(Exp::new("flag").command_sim("g", &["--itl-base-ms", "1"]), "server-flag = \"--answer-tokens\"");
    let key = searched(Exp::new("key").sim("s", "ttft-base-ms = 1.0, itl-base-ms = 1.0, answer-tokens = 32"), "workload = \"max-tokens\"");
    for (what, text) in [("server flag", flag), ("max-tokens", key)] {
        p.write("experiments/t.toml", &text);
        let out = p.run_ok();
        let measured: BTreeSet<String> = out.ran().into_iter().filter(|id| id.starts_with("measure[")).collect();
        let values: BTreeSet<String> =
            measured.iter().filter_map(|id| id.split(",n=").nth(1)).map(|v| v.trim_end_matches(']').to_string()).collect();
        assert_eq!(values, set(&["1", "2", "4"]), "{what}: whole numbers, not `1.0`:\n{}", out.stderr);
        let tables = p.requests_tables("measure");
        let probed: Vec<&Vec<Row>> = tables.iter().filter(|rows| rows.first().is_some_and(|r| values.contains(&r["n"]))).collect();
        assert!(probed.len() >= 3, "{what}: {} tables", probed.len());
        for rows in probed {
            for r in rows {
                assert_eq!(r["completion_tokens"], r["n"], "{what}: the answer is as long as the probe says: {r:?}");
            }
        }
        for dir in ["cache", "reports"] {
            std::fs::remove_dir_all(p.path().join(dir)).unwrap();
        }
    }
}

/// `--only seed=2` on a search of seeds 1 and 2 walks seed 2's curve alone, to its
/// end (it used to measure one probe, then exit 2 with "no cell has seed=2"). A value
/// no cell has, and the searched axis itself, are refused before anything runs.
#[test]
fn only_narrows_a_search_to_the_selected_seeds() {
    let p = Project::new();
    p.write("experiments/t.toml", &search_on_sim("only", "1, 2", 64));
    let out = p.pipeline(&["run", "experiments/t.toml", "--only", "seed=2"]);
    out.status(0);
    let measured: BTreeSet<String> = out.ran().into_iter().filter(|id| id.starts_with("measure[")).collect();
    assert!(!measured.is_empty() && measured.iter().all(|id| id.contains(",seed=2,")), "{}", out.stderr);
    let batches: BTreeSet<u32> =
        measured.iter().map(|id| id.split("batch-size=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(batches, BTreeSet::from([1, 2, 4, 8, 6, 5]), "the whole walk:\n{}", out.stderr);
    p.pipeline(&["run", "experiments/t.toml", "--only", "seed=9"])
        .status(2)
        .stderr_has("--only: no cell has seed=9")
        .stderr_has("hint: seed takes: 1, 2");
    p.pipeline(&["plan", "experiments/t.toml", "--only", "batch-size=4"])
        .status(2)
        .stderr_has("`batch-size` is the searched axis")
        .stderr_has("hint: narrow the search by the other axes");
    // `plan` walks the same narrowed curve: seed 2's probes are all measured.
    p.pipeline(&["plan", "experiments/t.toml", "--only", "seed=2"]).status(0).stdout_lacks("go on after").stdout_lacks("seed=1,");
}

/// The run record names every probe a search has measured, not only its last round's:
/// `cache gc` after a search interrupted in its third round keeps the first two
/// rounds' probes (it used to delete them), and the next run does not measure them again.
#[test]
fn cache_gc_after_an_interrupted_search_keeps_its_probes() {
    let p = Project::new();
    p.write("experiments/t.toml", &search_on_sim("gc", "1, 2", 64));
    // Two measures a round (seeds 1 and 2): the fifth done is the third round's first,
    // so the run is stopped with that round half measured.
    let run = Background::start_nth(&p, &["run", "experiments/t.toml"], "done   measure[", 5);
    let (code, lines) = run.interrupt();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    // Every step that completed, in earlier rounds and in the interrupted one.
    let first: BTreeSet<String> =
        lines.iter().filter_map(|l| l.strip_prefix("done   ")).map(|l| l.split(" in ").next().unwrap_or(l).to_string()).collect();
    assert!(first.iter().filter(|id| id.starts_with("measure[")).count() >= 5, "{}", lines.join("\n"));
    p.pipeline(&["cache", "gc"]).status(0);
    let again = p.run_ok();
    let remeasured: Vec<String> = again.ran().into_iter().filter(|id| first.contains(id)).collect();
    assert!(remeasured.is_empty(), "measured again after gc: {remeasured:?}\n{}", again.stderr);
}
