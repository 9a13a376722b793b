//! Reports: what they show follows from their keys, fixed inputs render to a snapshot, numbers recompute from the rows.

use super::*;

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
    assert!(!html.contains('\u{202E}') && html.contains("a red square"), "a bidirectional override is dropped from answers");
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

    let readme = std::fs::read_to_string(one.join("README.md")).unwrap();
    snapshot("fixed-report.md", &readme);
    // One content, two renderings: the same sections, in the same order.
    let html = std::fs::read_to_string(one.join("index.html")).unwrap();
    let md_headings: Vec<&str> = readme.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    let html_headings: Vec<&str> =
        html.split("<h2 id=\"").skip(1).filter_map(|h| h.split("</h2>").next()?.split_once("\">")).map(|(_, t)| t).collect();
    assert_eq!(md_headings, html_headings);
    assert!(md_headings.first() == Some(&"Results at a glance"), "the verdict comes first: {md_headings:?}");
    // Both list their sections, with the anchors GitHub gives the Markdown's headings.
    let contents = readme.lines().find_map(|l| l.strip_prefix("Contents: ")).expect("a table of contents");
    let links: Vec<&str> = contents.split(" · ").collect();
    assert_eq!(links.len(), md_headings.len(), "{contents}");
    for (link, heading) in links.iter().zip(&md_headings) {
        let id = heading.to_lowercase().replace(' ', "-");
        assert_eq!(*link, format!("[{heading}](#{id})"));
        assert!(html.contains(&format!("<h2 id=\"{id}\">{heading}</h2>")) && html.contains(&format!("<a href=\"#{id}\">")), "{id}");
    }
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
    let compared: Vec<&str> = readme.lines().filter(|l| l.contains(" (base), ") && l.contains(" | E2E mean (ms) | ")).collect();
    assert_eq!(compared.len(), 2, "two curves in the comparison:\n{readme}");
    assert!(compared.iter().filter(|l| l.ends_with("| within noise |")).count() == 2, "the same rows never differ:\n{readme}");

    // Nothing cached: nothing to render from.
    let fresh = Project::with_base("recompute-empty");
    let out = fresh.pipeline(&["report", "experiments/t.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("have no cached results") && out.stderr.contains("pipeline run experiments/t.toml"), "{}", out.stderr);
}

/// The regression gate: against a faster baseline `--fail-on worse` exits 4 and names
/// the rows; against a slower one, or the same numbers, the command passes; watching
/// one metric ignores the others; and the report says the same at a glance.
#[test]
fn fail_on_worse_gates_on_the_baseline() {
    let p = Project::with_base("gate");
    let keep = |to: &str| {
        std::fs::create_dir_all(p.path().join(to)).unwrap();
        for e in std::fs::read_dir(p.path().join("reports/t")).unwrap().flatten() {
            std::fs::copy(e.path(), p.path().join(to).join(e.file_name())).unwrap();
        }
    };
    p.run_ok();
    keep("fast");
    // Every first token 40 ms later (no jitter): TTFT and end-to-end are worse.
    let text = p.read("experiments/t.toml");
    p.write("experiments/t.toml", &text.replace("ttft-base-ms = 1.0", "ttft-base-ms = 40.0"));
    p.run_ok();
    keep("slow");
    let report =
        |baseline: &str, fail_on: &str| p.pipeline(&["report", "experiments/t.toml", "--baseline", baseline, "--fail-on", fail_on]);
    report("fast", "worse")
        .status(4)
        .stderr_has("regression: ")
        .stderr_has("metric(s) worse than fast beyond ±5% noise (fail-on worse):")
        .stderr_has("a (base), batch-size=1, frames=1  E2E mean (ms): ");
    assert!(p.read("reports/t/README.md").contains("> **Warning:** Worse than the baseline: a (base)"), "at a glance too");
    // Watching one metric: only its rows count, and only they are printed.
    let watched = report("fast", "e2e_mean_ms");
    watched.status(4).stderr_has("E2E mean (ms)").stderr_lacks("TTFT mean (ms)");
    // The same numbers: within noise.
    report("slow", "worse").status(0).stderr_has("nothing is worse than slow");
    // Faster than the baseline: better, and it passes. (Sub-millisecond metrics such
    // as TPOT here move by more than the noise band from run to run, so the gate
    // watches end-to-end latency.)
    p.write("experiments/t.toml", &text);
    report("slow", "e2e_mean_ms").status(0).stderr_has("nothing is worse than slow");
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("Against the baseline slow: ") && readme.contains("| better |"), "{readme}");
    // A gate needs something to compare with; a misspelt metric is named.
    p.pipeline(&["report", "experiments/t.toml", "--fail-on", "worse"]).status(2).stderr_has("needs a baseline");
    p.pipeline(&["report", "experiments/t.toml", "--baseline", "slow", "--fail-on", "e2e_mean"])
        .status(2)
        .stderr_has("did you mean `e2e_mean_ms`?");
    // A curve without a counterpart is listed as not compared and fails nothing by
    // itself; a baseline with no counterpart at all (another experiment's models) is
    // no gate: it exits 2 and says why, instead of passing what it never compared.
    p.write("experiments/t.toml", &text.replace("[models.b]", "[models.c]").replace(r#"model = ["a", "b"]"#, r#"model = ["a", "c"]"#));
    p.run_ok();
    report("fast", "e2e_mean_ms").status(0).stderr_has("are not compared: c (base), batch-size=1, frames=1: ");
    assert!(p.read("reports/t/README.md").contains("Not compared (no counterpart in the baseline): c (base)"));
    p.write(
        "experiments/t.toml",
        &text
            .replace("[models.a]", "[models.y]")
            .replace("[models.b]", "[models.z]")
            .replace(r#"model = ["a", "b"]"#, r#"model = ["y", "z"]"#),
    );
    p.run_ok();
    report("fast", "worse")
        .status(2)
        .stderr_has("fail-on: nothing was compared with `fast`: no curve of this run has a counterpart in the baseline")
        .stderr_has("hint: --baseline takes an earlier report of this experiment");
}

/// The committed demo report as a person reads it, in headless Chromium (installed by
/// `scripts/chromium/install.sh` where missing): at 1440 px, and in a 390 px frame as on
/// a phone (headless Chromium lays a window out no narrower than 500 px), the verdict
/// and the first chart are on the first screen, and the page does not scroll sideways.
#[test]
fn the_demo_report_reads_on_a_laptop_and_a_phone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let measure = r#"
  var glance = [...d.querySelectorAll('h2')].find(e => e.textContent == 'Results at a glance');
  var list = glance.nextElementSibling.getBoundingClientRect();
  return { glance: Math.round(glance.getBoundingClientRect().top), glance_end: Math.round(list.bottom),
           chart: Math.round(d.querySelector('figure').getBoundingClientRect().top),
           scroll: d.documentElement.scrollWidth, width: d.documentElement.clientWidth };"#;
    let Some(m) = in_chromium(&root.join("reports/demo/index.html"), measure) else { return };
    for (view, height) in [("wide", 900), ("phone", 844)] {
        let v = &m[view];
        let at = |k: &str| v[k].as_i64().unwrap();
        assert!(at("glance_end") < height && at("chart") < height, "{view}: the verdict and the first chart on the first screen: {v}");
        assert!(at("scroll") <= at("width"), "{view}: the page scrolls sideways: {v}");
    }
}

/// `report` (an index.html) in headless Chromium, in a 1440 × 900 frame (`wide`) and a
/// 390 × 844 one (`phone`): what the JavaScript body `measure` returns for each, given
/// the frame's document as `d`. None (the test skipped) where Chromium cannot be
/// installed outside CI.
pub(super) fn in_chromium(report: &Path, measure: &str) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let install = Command::new("bash").arg(root.join("scripts/chromium/install.sh")).output().unwrap();
    if !install.status.success() {
        assert!(std::env::var_os("PIPELINE_CI").is_none(), "CI needs Chromium: {}", String::from_utf8_lossy(&install.stderr));
        eprintln!("skipped: no Chromium ({})", String::from_utf8_lossy(&install.stderr).trim());
        return None;
    }
    let chromium = String::from_utf8_lossy(&install.stdout).trim().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let report = format!("file://{}", report.display());
    let probe = tmp.path().join("probe.html");
    std::fs::write(
        &probe,
        format!(
            r#"<!doctype html><html><body style="margin:0">
<iframe id="wide" src="{report}" style="width:1440px;height:900px;border:0"></iframe>
<iframe id="phone" src="{report}" style="width:390px;height:844px;border:0"></iframe>
<pre id="out"></pre>
<script>
function measure(id) {{
  var d = document.getElementById(id).contentDocument;
  {measure}
}}
window.onload = () => document.getElementById('out').textContent = JSON.stringify({{ wide: measure('wide'), phone: measure('phone') }});
</script></body></html>"#
        ),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", &chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--allow-file-access-from-files", "--window-size=1900,1000"])
        .arg(format!("--user-data-dir={}", tmp.path().join("profile").display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &format!("file://{}", probe.display())])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom.split("<pre id=\"out\">").nth(1).and_then(|r| r.split('<').next()).unwrap_or_default();
    Some(serde_json::from_str(json).unwrap_or_else(|e| panic!("no measurement ({e}): {dom}")))
}
