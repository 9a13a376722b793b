//! A judge model (`[quality] judge`): the simulator as a judge knows the truth (it
//! scores 1 exactly when the `exact` scorer would), its cost is recorded and shown, a
//! judge that answers words leaves turns unscored without failing (one that is down
//! fails its steps, to be asked again), a changed judge
//! re-judges without measuring, its key reaches nothing written, and bad judges are
//! refused with the fix.

use super::*;

/// `[quality]` with the `exact` scorer and a simulated judge (`judge_sim`: its `sim`
/// table's keys, if any).
fn with_judge(tag: &str, judge_sim: &str) -> String {
    format!(
        "[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"sim\"\nserved-name = \"judge-{tag}\"\nsim = {{ ttft-base-ms = 1.0, itl-base-ms = 0.2, jitter = 0.0{judge_sim} }}\n"
    )
}

/// The report's `quality.csv` rows of one method, as (variant, column) → text.
fn quality_rows(p: &Project, method: &str) -> BTreeMap<(String, String), String> {
    let text = p.read("reports/q/quality.csv");
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let mut out = BTreeMap::new();
    for r in rows.records() {
        let r = r.unwrap();
        let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
        if &r[at("method")] != method {
            continue;
        }
        for (i, h) in headers.iter().enumerate() {
            out.insert((r[at("variant")].to_string(), h.to_string()), r[i].to_string());
        }
    }
    out
}

/// The simulator judges by the `exact` scorer's rule, so on the same run the judge's
/// mean and counts must be the exact scorer's (the intervals are resampled with a seed
/// per method, so they may differ); each scored turn cost one request, and the report
/// says what the judge cost.
#[test]
fn a_judge_scores_what_the_exact_scorer_finds() {
    let p = project("judge", 10, 0.5, &with_judge("truth", ""));
    p.pipeline(&["plan", "experiments/q.toml"]).status(0).stdout_has("server[judge]  (starts for 4 quality step(s))");
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let s = scores(&p);
    let (exact, judge) = (quality_rows(&p, "exact"), quality_rows(&p, "judge"));
    for variant in ["base", "awq"] {
        for column in ["mean", "scored", "unscored"] {
            let key = (variant.to_string(), column.to_string());
            assert_eq!(judge[&key], exact[&key], "{variant} {column}: judge {judge:?}, exact {exact:?}");
        }
    }
    let (awq, _, _) = s[&("awq".to_string(), "judge".to_string())];
    assert!(0.0 < awq && awq < 1.0, "the AWQ simulator is right on some turns only: {awq}");
    assert_eq!(s[&("base".to_string(), "judge".to_string())].0, 1.0, "the base simulator knows every reference");

    // One request per measured turn: 10 conversations × 2 turns × 2 seeds × 2 variants,
    // each answered with one token ("1" or "0").
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!(cost["requests"], 80, "{cost}");
    assert_eq!((cost["failed"].as_u64(), cost["unscored"].as_u64()), (Some(0), Some(0)), "{cost}");
    assert_eq!(cost["completion_tokens"], 80, "{cost}");
    let prompt_tokens = cost["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 80 * 20, "the prompt's instructions alone are dozens of tokens: {prompt_tokens}");
    assert_eq!((cost["model"].as_str(), cost["prompt_version"].as_u64()), (Some("judge-truth"), Some(1)), "{cost}");
    let readme = p.read("reports/q/README.md");
    assert!(
        readme.contains(&format!("cost\n80 requests, {prompt_tokens} prompt tokens and 80 completion tokens")),
        "the Quality section shows the judge's cost:\n{readme}"
    );
    assert!(p.read("reports/q/index.html").contains(&format!("80 requests, {prompt_tokens} prompt tokens")));
}

/// A judge whose replies are no score: every judged turn is unscored and counted, the
/// reason and an example are kept, and nothing fails.
#[test]
fn a_judge_that_answers_words_leaves_turns_unscored() {
    let p = project("words", 3, 0.5, &with_judge("words", ", judge-words = true"));
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let rows = quality_rows(&p, "judge");
    for variant in ["base", "awq"] {
        let get = |c: &str| rows[&(variant.to_string(), c.to_string())].clone();
        // 3 conversations × 2 turns × 2 seeds.
        assert_eq!((get("scored"), get("unscored"), get("mean")), ("0".into(), "12".into(), String::new()), "{variant}: {rows:?}");
    }
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!((cost["requests"].as_u64(), cost["unscored"].as_u64(), cost["failed"].as_u64()), (Some(24), Some(24), Some(0)), "{cost}");
    assert_eq!(cost["examples"][0]["reason"], "not-a-number", "{cost}");
    assert_eq!(cost["examples"][0]["reply"], "I would rather not say.", "{cost}");
    assert!(p.read("reports/q/README.md").contains("replies that were not a score: 24"));
    // The exact scorer beside it is untouched.
    assert_eq!(quality_rows(&p, "exact")[&("base".to_string(), "mean".to_string())], "1.0");
}

/// The judge is part of the quality step's key: another judge model re-judges,
/// aggregates and reports, measures nothing, and `plan` says why.
#[test]
fn a_changed_judge_rejudges_without_measuring() {
    let p = project("rejudge", 2, 0.5, &with_judge("one", ""));
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    p.write("experiments/q.toml", &p.read("experiments/q.toml").replace("served-name = \"judge-one\"", "served-name = \"judge-two\""));
    p.pipeline(&["plan", "experiments/q.toml"]).status(0).stdout_has("judge.served-name changed judge-one → judge-two");
    let ran = p.pipeline(&["run", "experiments/q.toml"]).status(0).ran();
    assert!(ran.iter().all(|id| id.starts_with("quality[") || id == "aggregate" || id == "report"), "{ran:?}");
    assert_eq!(ran.iter().filter(|id| id.starts_with("quality[")).count(), 4, "{ran:?}");
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!(cost["model"], "judge-two");
    // Without a judge, the quality steps are those of before judges existed: the
    // judge's absence is not a parameter.
    let text = p.read("experiments/q.toml");
    let cut = text.find("[quality.judge]").unwrap();
    p.write("experiments/q.toml", &text[..cut]);
    p.pipeline(&["run", "experiments/q.toml"]).status(0).stderr_lacks("run    measure[");
    assert!(!p.path().join("reports/q/judge.json").exists(), "no judge, no cost");
}

/// A hosted judge (Anthropic's Messages API, here the simulator, which refuses a
/// request without `x-api-key`): its key comes from the environment, goes out with
/// every request (the turns are scored), and is written nowhere.
#[test]
fn a_hosted_judges_key_reaches_nothing_written() {
    let sim = start_sim(&["--served-model-name", "judge-hosted"]);
    let base = &sim.base;
    let judge = format!(
        "[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"anthropic\"\nurl = \"{base}\"\nserved-name = \"judge-hosted\"\napi-key-env = \"PIPELINE_TEST_JUDGE_KEY\"\n"
    );
    let p = project("hosted", 2, 0.5, &judge);
    let missing = p.pipeline_env(&["run", "experiments/q.toml"], &[]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("environment variable `PIPELINE_TEST_JUDGE_KEY` is not set"), "{}", missing.stderr);
    let secret = "sk-ant-judge-0123456789-do-not-leak";
    let out = p.pipeline_env(&["run", "experiments/q.toml"], &[("PIPELINE_TEST_JUDGE_KEY", secret)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = scores(&p);
    assert_eq!(s[&("awq".to_string(), "judge".to_string())].0, s[&("awq".to_string(), "exact".to_string())].0);
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!((cost["requests"].as_u64(), cost["backend"].as_str()), (Some(16), Some("anthropic")), "{cost}");
    for (path, bytes) in &p.all_files() {
        assert!(!String::from_utf8_lossy(bytes).contains(secret), "the judge's key leaked into {}", path.display());
    }
    assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
}

#[test]
fn bad_judges_name_the_fix() {
    let p = project("badjudge", 2, 0.5, "");
    let base = p.read("experiments/q.toml");
    let judge = |keys: &str| format!("{base}[quality]\nscore = [\"exact\"]\n[quality.judge]\n{keys}\n");
    for (text, message) in [
        (
            judge("backend = \"import\"\nformat = \"aiperf\"\nresults = { 1 = \"x.jsonl\" }"),
            "quality.judge.backend: a judge must answer prompts",
        ),
        (judge("backend = \"sim\"\n[quality.judge.variants.awq]\n"), "quality.judge.variants: a judge has no variants"),
        (judge("backend = \"openai\""), "quality.judge: backend `openai` needs `api-key-env`"),
        (judge("backend = \"sim\"\nsim = { judge-wrods = true }"), "judge-words"),
        (judge("backend = \"sim\"\nsim = { jitter = 2.0 }"), "quality.judge.sim.jitter"),
        (format!("executor = \"slurm\"\n{}", judge("backend = \"sim\"")), "cannot run under `executor = \"slurm\"`"),
    ] {
        p.write("experiments/q.toml", &text);
        p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has(message);
    }
    // Where it is: the file, line and column of the judge's backend.
    p.write("experiments/q.toml", &judge("backend = \"import\""));
    let line = judge("backend = \"import\"").lines().position(|l| l == "backend = \"import\"").unwrap() + 1;
    p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has(&format!("q.toml:{line}:11"));
    // `--executor slurm` on the command line, past validation: the plan refuses.
    p.write("experiments/q.toml", &judge("backend = \"sim\""));
    p.pipeline(&["plan", "experiments/q.toml", "--executor", "slurm"])
        .status(2)
        .stderr_has("a judge that `pipeline` launches (backend `sim`) cannot run under the Slurm executor");
    // A judge grades against references: synthetic conversations have none.
    let synthetic = base.replace("conversations = \"data/chat.jsonl\"\nhistory = \"recorded\"\n", "");
    p.write("experiments/q.toml", &format!("{synthetic}[quality]\n[quality.judge]\nbackend = \"sim\"\n"));
    p.pipeline(&["plan", "experiments/q.toml"]).status(2).stderr_has("quality.judge: a judge grades answers against reference answers");
}

/// `--fail-on quality` covers the judge as the other scorers: a run whose simulated
/// quality was lowered fails the gate on the judge's figure too.
#[test]
fn fail_on_quality_covers_the_judge() {
    let p = project("judgegate", 30, 1.0, &with_judge("gate", ""));
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    std::fs::create_dir_all(p.path().join("good")).unwrap();
    for e in std::fs::read_dir(p.path().join("reports/q")).unwrap().flatten() {
        std::fs::copy(e.path(), p.path().join("good").join(e.file_name())).unwrap();
    }
    let report = || p.pipeline(&["report", "experiments/q.toml", "--baseline", "good", "--fail-on", "quality"]);
    report().status(0);
    let text = p.read("experiments/q.toml");
    let lowered = text.replace("[models.m.variants.awq]\nsim = { quality = 1 }", "[models.m.variants.awq]\nsim = { quality = 0.5 }");
    assert_ne!(lowered, text);
    p.write("experiments/q.toml", &lowered);
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    report().status(4).stderr_has("quality: judge against reference: ");
}

/// A judge that says the key back (a reply that echoes it, as a hostile or broken
/// server may): the reply is no score, is kept as an example, and is kept redacted, so
/// the key is still written nowhere. This is the judge's own key being redacted: the
/// experiment's measured models name no key at all.
#[test]
fn a_judge_that_echoes_its_key_has_it_redacted() {
    use super::super::fake::{FakeServer, Reply};
    let server = FakeServer::start(|req| {
        let key = req.header("authorization").unwrap_or_default().trim_start_matches("Bearer ").to_string();
        Reply::Ok("text/event-stream", super::super::hardening::stream_of(&format!("your key is {key}")))
    });
    let judge = format!(
        "[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"openai\"\nurl = \"{}\"\nmodel = \"gpt-judge\"\napi-key-env = \"PIPELINE_TEST_ECHO_KEY\"\n",
        server.base
    );
    let p = project("echo", 1, 1.0, &judge);
    let secret = "sk-proj-judge-echo-0123456789-do-not-leak";
    let out = p.pipeline_env(&["run", "experiments/q.toml"], &[("PIPELINE_TEST_ECHO_KEY", secret)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seen = server.seen.lock().unwrap();
    assert!(seen.iter().any(|s| s.header("authorization") == Some(&format!("Bearer {secret}"))), "the key went out");
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!((body["temperature"].as_f64(), body["max_completion_tokens"].as_u64()), (Some(0.0), Some(16)), "{body}");
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!((cost["requests"].as_u64(), cost["unscored"].as_u64()), (Some(8), Some(8)), "{cost}");
    assert_eq!(cost["examples"][0]["reply"], "your key is [redacted $PIPELINE_TEST_ECHO_KEY]", "{cost}");
    assert!(cost["examples"][0]["cell"].as_str().unwrap().contains(",variant="), "an example names its cell: {cost}");
    for (path, bytes) in &p.all_files() {
        assert!(!String::from_utf8_lossy(bytes).contains(secret), "the judge's key leaked into {}", path.display());
    }
    assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
}

/// One conversation of the base variant, one seed, judged by the `endpoint` judge at
/// `base` (a fake server).
fn judged_at(tag: &str, base: &str) -> Project {
    let judge = format!("[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"endpoint\"\nurl = \"{base}\"\nmodel = \"judge\"\n");
    let p = project(tag, 1, 1.0, &judge);
    p.write(
        "experiments/q.toml",
        &p.read("experiments/q.toml").replace("seed = [1, 2]", "seed = [1]").replace("\"base\", \"awq\"", "\"base\""),
    );
    p
}

/// A rate-limited judge (a 429 with `Retry-After`, as hosted APIs send) is asked again,
/// as a measure's request would be: the turn is scored, and both requests are counted.
#[test]
fn a_rate_limited_judge_is_asked_again() {
    use super::super::fake::{self, FakeServer, Reply};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = AtomicUsize::new(0);
    let server = FakeServer::start(move |req| match req.path.as_str() {
        "/v1/models" => fake::models("judge"),
        "/version" => Reply::Ok("application/json", r#"{"version":"fake"}"#.into()),
        _ => match calls.fetch_add(1, Ordering::SeqCst) {
            0 => fake::response("429 Too Many Requests", &[("retry-after", "0")], r#"{"error": "slow down"}"#),
            _ => Reply::Ok("text/event-stream", super::super::hardening::stream_of("1")),
        },
    });
    let p = judged_at("limited", &server.base);
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    // Two turns: the first asked twice (429, then 1), the second once.
    assert_eq!((cost["requests"].as_u64(), cost["failed"].as_u64(), cost["unscored"].as_u64()), (Some(3), Some(0), Some(0)), "{cost}");
    assert_eq!(quality_rows(&p, "judge")[&("base".to_string(), "scored".to_string())], "2");
}

/// A judge that is down (500 on every request) fails the quality step, rather than
/// cache its turns as unscored for good: the run exits with the step-failure code and
/// names the judge, and once the judge answers, the next run judges again and
/// measures nothing.
#[test]
fn a_judge_outage_is_asked_again_on_the_next_run() {
    use super::super::fake::{self, FakeServer, Reply};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let server = FakeServer::start(move |req| match req.path.as_str() {
        "/v1/models" => fake::models("judge"),
        "/version" => Reply::Ok("application/json", r#"{"version":"fake"}"#.into()),
        _ if flag.load(Ordering::SeqCst) => fake::response("500 Internal Server Error", &[], r#"{"error": "down"}"#),
        _ => Reply::Ok("text/event-stream", super::super::hardening::stream_of("1")),
    });
    let p = judged_at("outage", &server.base);
    p.pipeline(&["run", "experiments/q.toml"]).status(1).stderr_has("the judge `judge` failed 2 of 2 requests");
    assert!(!p.path().join("reports/q/judge.json").exists(), "no report from a failed judge");
    down.store(false, Ordering::SeqCst);
    let ran = p.pipeline(&["run", "experiments/q.toml"]).status(0).ran();
    assert!(ran.iter().any(|id| id.starts_with("quality[")), "the quality step runs again: {ran:?}");
    assert!(!ran.iter().any(|id| id.starts_with("measure[")), "nothing is measured again: {ran:?}");
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!((cost["requests"].as_u64(), cost["failed"].as_u64()), (Some(2), Some(0)), "{cost}");
    assert_eq!(quality_rows(&p, "judge")[&("base".to_string(), "scored".to_string())], "2");
}

/// A launched judge lives as long as the quality steps need it: running between them,
/// gone after the run, and gone after Ctrl-C mid-judging, with the judged steps kept.
#[test]
fn a_launched_judge_is_never_orphaned() {
    let judge = "[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"sim\"\nserved-name = \"judge-orphan-5c1e\"\nsim = { ttft-base-ms = 150.0, jitter = 0.0 }\n";
    let p = project("orphan", 8, 0.5, judge);
    let run = Background::start(&p, &["run", "experiments/q.toml"], "done   quality[");
    assert!(!live_processes("judge-orphan-5c1e").is_empty(), "the judge runs while quality steps remain");
    let (code, seen) = run.interrupt();
    assert_eq!(code, Some(130), "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_processes("judge-orphan-5c1e").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(live_processes("judge-orphan-5c1e"), Vec::<String>::new(), "an orphaned judge");
    let judged: Vec<&String> = seen.iter().filter(|l| l.starts_with("done   quality[")).collect();
    assert!(!judged.is_empty(), "{seen:?}");
    // Resumed: what was judged is kept, the rest is judged, and the judge stops with the run.
    let resumed = p.pipeline(&["run", "experiments/q.toml"]);
    resumed.status(0);
    let rejudged = resumed.ran().iter().filter(|id| id.starts_with("quality[")).count();
    assert_eq!(rejudged + judged.len(), 4, "{seen:?}\n{}", resumed.stderr);
    assert_eq!(live_processes("judge-orphan-5c1e"), Vec::<String>::new(), "the judge stops with the run");
}

/// A judge from a `command` template (any OpenAI-compatible server `pipeline`
/// launches; here the simulator behind it) is started for the quality steps and
/// judges as the simulator does.
#[test]
fn a_judge_launched_from_a_command_template_judges() {
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let judge = format!(
        "[quality]\nscore = [\"exact\"]\n[quality.judge]\nbackend = \"command\"\ngpus = 0\nserved-name = \"judge-cmd-9d2b\"\ncommand = [\"{bin}\", \"sim-server\", \"--port\", \"{{port}}\", \"--served-model-name\", \"{{served_name}}\", \"--ttft-base-ms\", \"1\"]\n"
    );
    let p = project("cmd", 4, 0.5, &judge);
    p.pipeline(&["run", "experiments/q.toml"]).status(0);
    let s = scores(&p);
    assert_eq!(s[&("awq".to_string(), "judge".to_string())].0, s[&("awq".to_string(), "exact".to_string())].0);
    let cost: Value = serde_json::from_str(&p.read("reports/q/judge.json")).unwrap();
    assert_eq!((cost["requests"].as_u64(), cost["backend"].as_str()), (Some(32), Some("command")), "{cost}");
    assert_eq!(live_processes("judge-cmd-9d2b"), Vec::<String>::new(), "the judge stops with the run");
}
