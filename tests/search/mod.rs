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
