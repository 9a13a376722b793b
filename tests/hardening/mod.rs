//! What a hostile or broken world does to a run: servers that redirect, echo keys,
//! stream without end or say nothing; server processes that die and leave children;
//! a run killed by SIGHUP or SIGKILL; experiment files and command lines that try to
//! overflow, and report folders that are not ours. Processes are checked by process
//! group and parent, never by name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::fake::{self, FakeServer, Reply};
use super::*;

/// (pid, parent, process group) of every process that is alive (zombies excluded).
fn processes() -> Vec<(i32, i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" {
            out.push((pid, fields[1].parse().unwrap_or(0), fields[2].parse().unwrap_or(0)));
        }
    }
    out
}

/// Live processes in any of `groups`, waiting up to `secs` for them to go.
fn left_in_groups(groups: &BTreeSet<i32>, secs: u64) -> Vec<(i32, i32, i32)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left: Vec<_> = processes().into_iter().filter(|(_, _, g)| groups.contains(g)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (up to 20 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every request row under `cache/<under>/` (`measure` or `failed`), read from the
/// Parquet tables (CSV cannot be split naively: details hold commas), values as text.
pub(super) fn rows_under(p: &Project, under: &str) -> Vec<BTreeMap<String, String>> {
    use polars::prelude::*;
    let dir = p.path().join("cache").join(under);
    let mut rows = Vec::new();
    for (path, _) in p.all_files().into_iter().filter(|(path, _)| path.starts_with(&dir) && path.ends_with("requests.parquet")) {
        let df = pipeline::export::read_parquet(&path).unwrap();
        let cols: Vec<(String, Vec<String>)> = df
            .columns()
            .iter()
            .map(|c| {
                let s = c.cast(&DataType::String).unwrap();
                (c.name().to_string(), s.str().unwrap().iter().map(|v| v.unwrap_or("").to_string()).collect())
            })
            .collect();
        for r in 0..df.height() {
            rows.push(cols.iter().map(|(n, v)| (n.clone(), v[r].clone())).collect());
        }
    }
    rows
}

/// `[models.NAME]` for an OpenAI-compatible server someone else started, at `base`.
pub(super) fn endpoint_model(name: &str, base: &str, extra: &str) -> String {
    format!("[models.{name}]\nbackend = \"endpoint\"\nurl = \"{base}\"\nserved-name = \"m\"\n{extra}\n")
}

/// An experiment of `models` (TOML tables), two turns of one small image, seed 1.
pub(super) fn experiment(name: &str, models: &[String], workload: &str) -> String {
    let names: Vec<String> = models.iter().map(|m| format!("{:?}", m.split(['.', ']']).nth(1).unwrap())).collect();
    format!(
        "name = \"{name}\"\n{}\n[workload]\nturns = 2\nresolution = \"64x48\"\nmax-tokens = 4\nwarmup-requests = 0\n{workload}\n[matrix]\nmodel = [{}]\nseed = [1]\n",
        models.join("\n"),
        names.join(", ")
    )
}

/// An OpenAI-style event stream answering `text`, with usage and `[DONE]`.
pub(super) fn stream_of(text: &str) -> String {
    let content = serde_json::Value::String(text.to_string());
    format!(
        "data: {{\"choices\":[{{\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]}}\n\n\
         data: {{\"choices\":[{{\"delta\":{{\"content\":{content}}}}}]}}\n\n\
         data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":3}}}}\n\n\
         data: [DONE]\n\n"
    )
}

/// Items 1 and 2: a key never follows a redirect to another address, and a key a
/// server says back is written nowhere: not in the cache, the report, a log or the
/// terminal.
#[test]
fn keys_never_leave_for_another_origin_nor_land_on_disk() {
    const KEY_A: &str = "sk-ant-echoed-0123456789abcdef";
    const KEY_B: &str = "sk-ant-redirected-9876543210fedcba";
    let keys = [("PIPELINE_TEST_KEY_A", KEY_A), ("PIPELINE_TEST_KEY_B", KEY_B)];
    // Where a redirect would carry the key: it must never be asked anything.
    let elsewhere = FakeServer::start(|_| fake::response("200 OK", &[], "{}"));
    let to = format!("{}/v1/messages", elsewhere.base);
    let redirecting = FakeServer::start(move |_| fake::response("307 Temporary Redirect", &[("location", &to)], ""));
    // An OpenAI-compatible server that refuses the first request, repeating both keys
    // in its error; answers the second with both keys in the text; and names both in
    // its version string (with Markdown in it).
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let echoing = FakeServer::start(move |req| match req.path.as_str() {
        "/v1/models" => fake::models("m"),
        "/version" => Reply::Ok("application/json", format!(r#"{{"version":"1.0|{KEY_A}`\n# {KEY_B}"}}"#)),
        "/v1/chat/completions" if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => fake::response(
            "401 Unauthorized",
            &[("content-type", "application/json")],
            &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY_A}; also seen: {KEY_B}"}}}}"#),
        ),
        _ => Reply::Ok("text/event-stream", stream_of(&format!("your keys are {KEY_A} and {KEY_B}"))),
    });
    let p = Project::new();
    let redirect_model = format!(
        "[models.claude]\nbackend = \"anthropic\"\nurl = \"{}\"\nserved-name = \"c\"\napi-key-env = \"PIPELINE_TEST_KEY_B\"\n",
        redirecting.base
    );
    p.write("experiments/r.toml", &experiment("redirected", &[redirect_model], ""));
    let echo_model = endpoint_model("echo", &echoing.base, "api-key-env = \"PIPELINE_TEST_KEY_A\"");
    // Model `other` is not measured; its key is redacted all the same.
    let other = "[models.other]\nbackend = \"openai\"\napi-key-env = \"PIPELINE_TEST_KEY_B\"\n".to_string();
    p.write("experiments/e.toml", &experiment("echoed", &[echo_model, other], "max-error-share = 0.5").replace(", \"other\"", ""));

    let redirected = p.pipeline_env(&["run", "experiments/r.toml"], &keys);
    assert_eq!(redirected.code, 1, "{}", redirected.stderr);
    assert!(elsewhere.requests().is_empty(), "the redirect was followed: {:?}", elsewhere.requests());
    let rows = rows_under(&p, "failed");
    assert_eq!(rows[0]["error"], "redirect", "{rows:?}");
    assert!(rows[0]["error_detail"].contains(&format!("redirecting to `{}/v1/messages`", elsewhere.base)), "{rows:?}");
    assert!(redirected.stderr.contains("hint: set `url` to the address the server redirects to"), "{}", redirected.stderr);

    let echoed = p.pipeline_env(&["run", "experiments/e.toml"], &keys);
    assert_eq!(echoed.code, 0, "{}", echoed.stderr);
    let rows = rows_under(&p, "measure");
    assert_eq!(
        rows[0]["error_detail"],
        "{\"error\":{\"message\":\"Incorrect API key provided: [redacted $PIPELINE_TEST_KEY_A]; also seen: [redacted $PIPELINE_TEST_KEY_B]\"}}"
    );
    assert_eq!(rows[1]["answer"], "your keys are [redacted $PIPELINE_TEST_KEY_A] and [redacted $PIPELINE_TEST_KEY_B]");
    // The server's version string reaches the report as one literal code span.
    let readme = p.read("reports/echoed/README.md");
    // Its newline is shown escaped, as everything a server says is (`untrusted`).
    assert!(readme.contains("``1.0|[redacted $PIPELINE_TEST_KEY_A]`\\n# [redacted $PIPELINE_TEST_KEY_B]``"), "{readme}");

    for (path, bytes) in p.all_files() {
        for (_, key) in keys {
            // Parquet pages may be compressed: look in the decoded rows too (below).
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "{key} was written to {}", path.display());
        }
    }
    for row in rows_under(&p, "measure").iter().chain(&rows_under(&p, "failed")) {
        for (_, key) in keys {
            assert!(row.values().all(|v| !v.contains(key)), "{key} in a request row: {row:?}");
        }
    }
    let published = pipeline::export::read_parquet(&p.path().join("reports/echoed/requests.parquet")).unwrap();
    assert!(!format!("{published:?}").contains("sk-ant-"), "{published:?}");
    for out in [&redirected, &echoed] {
        assert!(keys.iter().all(|(_, k)| !out.stderr.contains(k) && !out.stdout.contains(k)), "{}", out.stderr);
    }
}

/// Item 4: a server whose leader dies, mid-measure or before it is healthy, takes the
/// rest of its process group along (here a `sleep` its shell left behind).
#[test]
fn a_server_whose_leader_dies_takes_its_whole_group() {
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let cases = [
        (
            "killed mid-measure",
            format!(
                "echo $$ > leader.pid; sleep 1001 & exec {bin} sim-server --port {{port}} --served-model-name {{served_name}} --ttft-base-ms 1 --itl-base-ms 300 --answer-tokens 8"
            ),
        ),
        ("exits before it is healthy", "echo $$ > leader.pid; sleep 1001 & sleep 0.5; exit 3".to_string()),
    ];
    for (what, script) in cases {
        let p = Project::new();
        let model = format!("[models.g]\nbackend = \"command\"\nserved-name = \"g\"\ncommand = [\"sh\", \"-c\", {script:?}]\n");
        p.write("experiments/t.toml", &experiment("leader", &[model], "").replace("turns = 2", "turns = 3"));
        let run = Background::start(&p, &["run", "experiments/t.toml"], "run    measure");
        eventually("the leader's pid", || p.path().join("leader.pid").exists() && !p.read("leader.pid").trim().is_empty());
        let leader: i32 = p.read("leader.pid").trim().parse().unwrap();
        let group = BTreeSet::from([leader]);
        eventually("the shell's background sleep", || processes().iter().any(|(pid, _, g)| *g == leader && *pid != leader));
        if what == "killed mid-measure" {
            rustix::process::kill_process(rustix::process::Pid::from_raw(leader).unwrap(), Signal::KILL).unwrap();
        }
        let mut child = run.child;
        let status = child.wait().unwrap();
        let stderr: String = run.rest.join().unwrap().join("\n");
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(left_in_groups(&group, 15), vec![], "{what}: the server's group outlived its leader\n{stderr}");
    }
}

/// Item 5: SIGHUP (a closed terminal) stops a run as Ctrl-C does; SIGKILL (the OOM
/// killer) cannot be caught, and the servers' guards stop them; the next run removes
/// the staging folder the killed run left.
#[test]
fn a_hung_up_or_killed_run_leaves_no_server() {
    for (signal, tag) in [(Signal::HUP, "hup-51c2"), (Signal::KILL, "kill-9d4e")] {
        let p = Project::slow(tag);
        let run = Background::start(&p, &["run", "experiments/t.toml"], "done   measure");
        let run_pid = run.child.id() as i32;
        // The servers and their guards: the run's children, each in a group of its own.
        let children: Vec<(i32, i32, i32)> = processes().into_iter().filter(|(_, parent, _)| *parent == run_pid).collect();
        assert!(children.len() >= 2, "a server and its guard should be running: {children:?}");
        let mut groups: BTreeSet<i32> = children.iter().map(|(_, _, g)| *g).collect();
        groups.insert(run_pid);
        // Kill while a step is staged (a measure takes about a second here).
        let staged = || std::fs::read_dir(p.path().join("cache/tmp")).map(|d| d.count()).unwrap_or(0);
        eventually("a staged step", || staged() > 0);
        let (status, seen) = run.signal(signal);
        if signal == Signal::HUP {
            assert_eq!(status.code(), Some(129), "{seen:?}");
            assert!(seen.iter().any(|l| l.starts_with("interrupted: completed steps are kept")), "{seen:?}");
        } else {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9));
        }
        assert_eq!(left_in_groups(&groups, 15), vec![], "{tag}: processes outlived the run");
        if signal == Signal::KILL {
            assert!(staged() > 0, "SIGKILL leaves the step in flight staged");
            p.run_ok();
        }
        let staging: Vec<_> = std::fs::read_dir(p.path().join("cache/tmp")).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(staging.is_empty(), "{tag}: staging folders left: {staging:?}");
    }
}

/// Item 11 and the smaller ones: answers a server should never give are capped and
/// classified by what arrived, and a step that cannot pass any more stops early.
#[test]
fn hostile_answers_are_capped_and_classified() {
    let ok = |req: &fake::Seen| match req.path.as_str() {
        "/v1/models" => Some(fake::models("m")),
        "/version" => Some(Reply::Ok("application/json", r#"{"version":"fake"}"#.into())),
        _ => None,
    };
    let servers = [
        (
            "noline",
            FakeServer::start(move |r| {
                ok(r).unwrap_or(Reply::Endless { status: "200 OK", content_type: "text/event-stream", piece: vec![b'x'; 1 << 16] })
            }),
        ),
        (
            "errbody",
            FakeServer::start(move |r| {
                ok(r).unwrap_or(Reply::Endless {
                    status: "500 Internal Server Error",
                    content_type: "text/plain",
                    piece: vec![b'y'; 1 << 16],
                })
            }),
        ),
        ("html", FakeServer::start(move |r| ok(r).unwrap_or(Reply::Ok("text/html", "<html><body>Please log in</body></html>".into())))),
        ("silent", FakeServer::start(move |r| ok(r).unwrap_or(Reply::Silence))),
        (
            "limited",
            FakeServer::start(move |r| ok(r).unwrap_or(fake::response("429 Too Many Requests", &[("retry-after", "999")], "slow down"))),
        ),
    ];
    let models: Vec<String> = servers.iter().map(|(name, s)| endpoint_model(name, &s.base, "")).collect();
    let p = Project::new();
    p.write("experiments/t.toml", &experiment("hostile", &models, "request-timeout-s = 2").replace("turns = 2", "turns = 5"));
    let started = Instant::now();
    let out = p.pipeline(&["run", "experiments/t.toml", "--keep-going"]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = rows_under(&p, "failed");
    let of = |model: &str| -> Vec<&BTreeMap<String, String>> { rows.iter().filter(|r| r["model"] == model).collect() };
    // The first failure of five turns is past max-error-share (5%): one row each.
    for (name, _) in &servers {
        assert_eq!(of(name).len(), 1, "{name}: {rows:?}");
    }
    assert_eq!(of("noline")[0]["error"], "too_large");
    assert!(of("noline")[0]["error_detail"].contains("passed 1 MiB without a line break"), "{rows:?}");
    assert_eq!(of("errbody")[0]["error"], "http_5xx");
    assert_eq!(of("errbody")[0]["error_detail"], format!("{}…", "y".repeat(500)));
    assert_eq!(of("html")[0]["error"], "malformed");
    assert!(of("html")[0]["error_detail"].contains("got `text/html` starting with `<html><body>Please log in"), "{rows:?}");
    assert_eq!(of("silent")[0]["error"], "timeout");
    assert_eq!(of("limited")[0]["error"], "http_429");
    assert_eq!(of("limited")[0]["retry_after_s"], "999.0");
    assert!(out.stderr.contains("the server asked to wait 999 s (Retry-After), longer than the 120 s pipeline waits"), "{}", out.stderr);
    assert!(out.stderr.contains("stopped early"), "{}", out.stderr);
    // Five turns of a silent server would take 5 × 2 s; it is given up after one.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// Item 12: `[report] dir = "."` does not replace the project's README.md. Item 13: two
/// experiments of one name in different folders keep their own run records, so one's
/// `cache gc` keeps the other's results. Item 14: `--force` with `--kind` forces only
/// that kind.
#[test]
fn reports_and_run_records_lose_nothing() {
    let p = Project::with_base("own");
    p.write("README.md", "# My project\n");
    p.edit("dir = \"reports/t\"", "dir = \".\"");
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("holds files that pipeline did not write (README.md, cache/, experiments/)"), "{}", out.stderr);
    assert_eq!(p.read("README.md"), "# My project\n");

    // The same name in two folders, one cache.
    p.write("a/t.toml", &BASE.replace("{tag}", "same-a"));
    p.write("b/t.toml", &BASE.replace("{tag}", "same-b").replace("seed = [1, 2]", "seed = [3]"));
    for f in ["a/t.toml", "b/t.toml"] {
        let out = p.pipeline(&["run", f]);
        assert_eq!(out.code, 0, "{f}: {}", out.stderr);
    }
    let gc = p.pipeline(&["cache", "gc"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    for f in ["a/t.toml", "b/t.toml"] {
        let plan = p.pipeline(&["plan", f]);
        assert!(plan.stdout.contains(" 0 to run, 0 waiting"), "{f} lost results to the other's gc:\n{}", plan.stdout);
    }

    // --force with --kind: the aggregate again, nothing it reads.
    let forced = p.pipeline(&["run", "a/t.toml", "--kind", "aggregate", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(forced.ran(), set(&["aggregate"]), "{}", forced.stderr);
}

/// Bad command lines and files that are not experiment files: clear errors, no hang.
#[test]
fn hostile_command_lines_are_explained() {
    let p = Project::with_base("cli");
    let out = p.pipeline(&["plan", "/dev/zero"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("failed to read experiment file `/dev/zero`") && out.stderr.contains("larger than 4 MiB"),
        "{}",
        out.stderr
    );

    let only = p.pipeline(&["run", "experiments/t.toml", "--only", "seed=99"]);
    assert_eq!(only.code, 2, "{}", only.stderr);
    assert!(only.stderr.contains("--only: no cell has seed=99") && only.stderr.contains("seed takes: 1, 2"), "{}", only.stderr);

    for (flag, value, expected) in [
        ("--jitter", "50", "--jitter must be a number at least 0 and below 1"),
        ("--ttft-base-ms", "-1", "--ttft-base-ms must be a number from 0"),
    ] {
        let out = p.pipeline(&["sim-server", "--port", "0", flag, value]);
        assert_eq!(out.code, 2, "{flag}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{flag}: {}", out.stderr);
    }

    p.write("experiments/y.yaml", "name: y\nmodels:\n  a:\n    bakend: sim\nmatrix:\n  model: [a]\n");
    let out = p.pipeline(&["plan", "experiments/y.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("y.yaml:4:5: unknown field `bakend`") && out.stderr.contains("did you mean `backend`?"), "{}", out.stderr);
}

/// A full disk while saving the run record leaves no `.tmp` file and says so once;
/// a report file that cannot be written is named.
#[test]
fn write_failures_name_their_file_and_leave_nothing_half_written() {
    let p = Project::with_base("disk");
    p.run_ok();
    let runs = p.path().join("cache/runs");
    let record =
        std::fs::read_dir(&runs).unwrap().flatten().map(|e| e.path()).find(|f| f.extension().is_some_and(|e| e == "json")).unwrap();
    // Writes to /dev/full fail with ENOSPC, as on a full disk.
    let tmp = record.with_extension("json.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    p.edit("seed = [1, 2]", "seed = [1]");
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("failed to access the cache at `{}`", Path::new("cache/runs").join(tmp.file_name().unwrap()).display())),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("No space left on device").count(), 1, "{}", out.stderr);
    assert!(!tmp.exists() && std::fs::symlink_metadata(&tmp).is_err(), "the .tmp file is left");

    // A report file that cannot be replaced (here its temporary name is a folder).
    std::fs::create_dir_all(p.path().join("reports/t/.README.md.tmp")).unwrap();
    p.edit("seed = [1]", "seed = [2]");
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("failed to write the report file `reports/t/README.md`"), "{}", out.stderr);
}

/// Second round, item 7: a key written into the experiment file is refused wherever it
/// is written (the message does not repeat it), and nothing of it reaches the cache,
/// a report or the terminal; a secret flag's value that is not key-shaped is shown as
/// `[redacted N]` everywhere and put back only in the argv that starts the server.
/// Item 14: a served name goes into a shell script quoted.
#[test]
fn keys_written_into_the_file_are_refused_or_redacted() {
    const CANARY: &str = "sk-proj-canary0123456789abcdef";
    let p = Project::with_base("keys-in-file");
    let base = p.read("experiments/t.toml");
    let places: [(&str, String); 6] = [
        (
            "models.a.url",
            base.replace(
                "backend = \"sim\"\nserved-name = \"a-",
                &format!("backend = \"endpoint\"\nurl = \"http://127.0.0.1:9/v1?x={CANARY}\"\nserved-name = \"a-"),
            ),
        ),
        (
            "models.b.command[1]",
            base.replace(
                "[models.b]\nbackend = \"sim\"",
                &format!("[models.b]\nbackend = \"command\"\ncommand = [\"srv\", \"--api-key={CANARY}\"]"),
            ),
        ),
        (
            "server.extra-args[1]",
            base.replace("[workload]", &format!("[server]\nextra-args = [\"--api-key\", \"{CANARY}\"]\n\n[workload]")),
        ),
        ("models.a.served-name", base.replace("served-name = \"a-", &format!("served-name = \"{CANARY}-"))),
        ("axis[0].values[1]", format!("{base}\n[[axis]]\nname = \"k\"\nvalues = [\"x\", \"{CANARY}\"]\nserver-flag = \"--k\"\n")),
        ("title", base.replace("title = \"Test\"", &format!("title = \"Bearer {CANARY}\""))),
    ];
    for (path, text) in places {
        p.write("experiments/t.toml", &text);
        for command in ["plan", "run"] {
            let out = p.pipeline(&[command, "experiments/t.toml"]);
            out.status(2).stderr_has(&format!("{path}: holds what looks like an API key (`")).stderr_has("api-key-env");
            assert!(!out.stderr.contains(CANARY) && !out.stdout.contains(CANARY), "{path}: {}", out.stderr);
        }
    }
    for (path, bytes) in p.all_files().iter().filter(|(path, _)| !path.ends_with("experiments/t.toml")) {
        assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "the key was written to {}", path.display());
    }

    // A secret flag's value that looks like no key: redacted in keys, plans, logs and
    // reports, real in the server's argv. The server is a shell script that writes its
    // arguments outside the cache, then runs the simulator under a name that would be
    // shell syntax if it went in raw.
    const SECRET: &str = "hunter2-literal-secret";
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let server = format!(
        "[models.b]\nbackend = \"command\"\nserved-name = \"b; touch pwned\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$@\\\" > argv.txt; exec {bin} sim-server --port {{port}} --served-model-name {{served_name}}\", \"sh\", \"--api-key\", \"{SECRET}\"]"
    );
    let text = base.replace(&base[base.find("[models.b]").unwrap()..base.find("[workload]").unwrap()], &format!("{server}\n\n"));
    p.write("experiments/t.toml", &text);
    let plan = p.pipeline(&["plan", "experiments/t.toml", "--json"]);
    let run = p.pipeline(&["run", "experiments/t.toml"]);
    run.status(0);
    assert!(p.read("argv.txt").contains(&format!("--api-key {SECRET}")), "the server got the real value: {}", p.read("argv.txt"));
    assert!(!p.path().join("pwned").exists(), "the served name ran as shell syntax");
    assert!(p.read("reports/t/README.md").contains("--api-key [redacted 1]"), "the report shows the placeholder");
    for out in [&plan, &run] {
        assert!(!out.stderr.contains(SECRET) && !out.stdout.contains(SECRET), "{}{}", out.stdout, out.stderr);
    }
    for (path, bytes) in p.all_files() {
        if path.file_name().is_some_and(|n| n == "argv.txt" || n == "t.toml") {
            continue;
        }
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret was written to {}", path.display());
    }
}

/// Interrupts, generally: whatever the run is doing, the first Ctrl-C or SIGTERM ends
/// it within two seconds with no process left, and a second one at once. Here during
/// a measure whose server streams slowly, and while planning 100,000 cells (a loop
/// that checks for nothing).
#[test]
fn an_interrupt_ends_any_run_within_two_seconds() {
    for (signal, code, tag) in [(Signal::INT, 130, "int-40aa"), (Signal::TERM, 143, "term-73bb")] {
        let p = Project::slow(tag);
        let run = Background::start(&p, &["run", "experiments/t.toml"], "done   measure");
        let run_pid = run.child.id() as i32;
        let mut groups: BTreeSet<i32> = processes().into_iter().filter(|(_, parent, _)| *parent == run_pid).map(|(_, _, g)| g).collect();
        groups.insert(run_pid);
        let sent = Instant::now();
        let (status, seen) = run.signal(signal);
        let took = sent.elapsed();
        assert_eq!(status.code(), Some(code), "{seen:?}");
        assert!(took < Duration::from_secs(2), "{tag}: the run took {took:?} to stop");
        assert_eq!(left_in_groups(&groups, 5), vec![], "{tag}: processes outlived the run");
    }

    let p = Project::new();
    let models: String = (0..10)
        .map(|m| {
            format!(
                "[models.m{m}]\nbackend = \"sim\"\nsim = {{ ttft-base-ms = 0.0, itl-base-ms = 0.0, jitter = 0.0, answer-tokens = 1 }}\n"
            )
        })
        .collect();
    let seeds: Vec<String> = (1..=10_000).map(|s| s.to_string()).collect();
    let names: Vec<String> = (0..10).map(|m| format!("\"m{m}\"")).collect();
    p.write(
        "experiments/big.toml",
        &format!(
            "name = \"big\"\n{models}[workload]\nturns = 1\nresolution = \"28x28\"\nmax-tokens = 1\n[matrix]\nmodel = [{}]\nseed = [{}]\n",
            names.join(","),
            seeds.join(",")
        ),
    );
    for (signal, code) in [(Signal::INT, 130), (Signal::TERM, 143)] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pipeline"))
            .current_dir(p.path())
            .env_remove("PIPELINE_CACHE")
            .args(["plan", "experiments/big.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Planning 100,000 cells takes seconds in a debug build; stop it midway.
        std::thread::sleep(Duration::from_millis(700));
        assert!(child.try_wait().unwrap().is_none(), "the plan ended before it could be interrupted");
        let sent = Instant::now();
        rustix::process::kill_process(rustix::process::Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
        let status = child.wait().unwrap();
        let took = sent.elapsed();
        assert_eq!(status.code(), Some(code));
        assert!(took < Duration::from_secs(2), "planning took {took:?} to stop");
    }
}

/// Items 2, 8 and the reset minor: a server we did not start sends `+Inf` and 1e308
/// in its `/metrics`, a key in a label, and never answers its reset route. The run
/// ends, the report draws, the key is stored nowhere, and the hanging route costs
/// one timeout per server, not one per cell.
#[test]
fn what_a_foreign_server_says_is_bounded() {
    const CANARY: &str = "sk-metricscanary0123456789";
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => fake::models("m"),
        "/version" => Reply::Ok("application/json", r#"{"version":"fake"}"#.into()),
        "/metrics" => Reply::Ok(
            "text/plain",
            format!(
                "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\",api_key=\"{CANARY}\"}} +Inf\n\
                 # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\"}} 1e308\n\
                 # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{engine=\"0\",api_key=\"{CANARY}\"}} 0.5\n"
            ),
        ),
        "/reset_prefix_cache" => Reply::Silence,
        _ => Reply::Ok("text/event-stream", stream_of("ok")),
    });
    let p = Project::new();
    let model = endpoint_model("far", &server.base, "");
    p.write(
        "experiments/t.toml",
        &experiment("foreign", &[model], "request-timeout-s = 2\nmetrics-interval-s = 0.2").replace("seed = [1]", "seed = [1, 2, 3]"),
    );
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("sign:"), "the parser's stray line: {}", out.stderr);
    let resets = server.requests().iter().filter(|r| r.path == "/reset_prefix_cache").count();
    assert_eq!(resets, 1, "the hanging route is asked once for three cells");
    let metas: Vec<serde_json::Value> = p.measure_metas().into_iter().map(|(_, meta)| meta).collect();
    assert_eq!(metas.len(), 3);
    for meta in &metas {
        assert_eq!(meta["isolation"]["done"], "salt", "{meta}");
        assert!(meta["server_metrics"]["non_finite_dropped"].as_u64().unwrap() >= 2, "{}", meta["server_metrics"]);
    }
    let not_asked = metas.iter().filter(|m| m["isolation"]["notes"].to_string().contains("did not answer an earlier cell in time")).count();
    assert_eq!(not_asked, 2, "{metas:?}");
    // The report drew the server chart with 1e308 in it, and draws it again.
    assert!(p.read("reports/foreign/README.md").contains("/metrics"));
    p.pipeline(&["report", "experiments/t.toml"]).status(0);
    for (path, bytes) in p.all_files() {
        assert!(!String::from_utf8_lossy(&bytes).contains(CANARY), "the label's key is in {}", path.display());
    }
}

/// A server's guard killed by hand: the run says so at once and stops that server,
/// which nothing would stop any more if the run died.
#[test]
fn a_killed_guard_is_noticed_and_its_server_stopped() {
    let p = Project::slow("guard-5e1d");
    let run = Background::start(&p, &["run", "experiments/t.toml"], "done   measure");
    let run_pid = run.child.id() as i32;
    let cmdline = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
    let children: Vec<(i32, i32, i32)> = processes().into_iter().filter(|(_, parent, _)| *parent == run_pid).collect();
    let guard = children.iter().find(|(pid, _, _)| cmdline(*pid).contains(" guard ")).expect("a guard runs").0;
    let server_group = children.iter().find(|(pid, _, _)| cmdline(*pid).contains("sim-server")).expect("a server runs").2;
    rustix::process::kill_process(rustix::process::Pid::from_raw(guard).unwrap(), Signal::KILL).unwrap();
    assert_eq!(left_in_groups(&BTreeSet::from([server_group]), 5), vec![], "the unguarded server was left running");
    let (_, seen) = run.wait();
    assert!(seen.iter().any(|l| l.starts_with("warning: the guard of server") && l.contains("stopping the server now")), "{seen:?}");
    assert_eq!(left_in_groups(&BTreeSet::from([run_pid]), 5), vec![]);
}

/// `init` checks what it is given before it sends or writes anything.
#[test]
fn init_refuses_before_it_sends_or_writes() {
    let server = FakeServer::start(|_| fake::models("m"));
    let p = Project::new();
    let with_key = server.base.replace("http://", "http://user:sk-initcanary0123456789@");
    p.pipeline(&["init", "--name", "x", "--endpoint", &with_key])
        .status(2)
        .stderr_has("holds a user name or password")
        .stderr_lacks("sk-initcanary");
    let with_query = format!("{}/?api_key=sk-initcanary0123456789", server.base);
    p.pipeline(&["init", "--name", "x", "--endpoint", &with_query]).status(2).stderr_has("query string").stderr_lacks("sk-initcanary");
    assert!(server.requests().is_empty(), "nothing is sent to a refused URL: {:?}", server.requests());
    p.pipeline(&["init", "--name", "x", "--vllm", "Qwen/Q\n[models.evil]\nbackend = \"sim\""]).status(2).stderr_has("not a model name");
    assert!(!p.path().join("experiments/x.toml").exists());
    // A good URL is then asked for its models, and the file plans.
    p.pipeline(&["init", "--name", "x", "--endpoint", &server.base]).status(0);
    p.pipeline(&["plan", "experiments/x.toml"]).status(0);
}

/// `dir = "."` (a folder with the user's own README.md) is refused before anything is
/// measured, not after.
#[test]
fn a_report_folder_that_is_not_ours_is_refused_before_measuring() {
    let p = Project::with_base("dot-19ac");
    p.write("README.md", "# my project\n");
    p.edit("dir = \"reports/t\"", "dir = \".\"");
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    out.status(2).stderr_has("holds files that pipeline did not write");
    assert!(out.ran().is_empty(), "nothing ran: {}", out.stderr);
    assert!(!p.path().join("cache/measure").exists());
    assert_eq!(p.read("README.md"), "# my project\n");
}

/// A `/metrics` body that never ends (whole lines, dripping) is a failed scrape when
/// the scrape's time is up, not an exposition cut short and read as complete.
#[test]
fn a_metrics_body_that_never_ends_is_not_read_as_whole() {
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => fake::models("m"),
        "/metrics" => Reply::Drip("text/plain", b"vllm:num_requests_running{engine=\"0\"} 1\n".to_vec()),
        _ => Reply::Ok("text/event-stream", stream_of("ok")),
    });
    let p = Project::new();
    p.write(
        "experiments/t.toml",
        &experiment("drip", &[endpoint_model("d", &server.base, "")], "request-timeout-s = 1\ncache-isolation = \"none\""),
    );
    p.run_ok();
    let (_, meta) = p.measure_metas().pop().unwrap();
    let m = &meta["server_metrics"];
    assert_eq!(m["available"], false, "{m}");
    assert!(m["reason"].as_str().unwrap().contains("broke off"), "{m}");
}

/// A server that checks a key (vLLM with `VLLM_API_KEY`, which `pipeline` now sets
/// for the `vllm` servers it launches) is asked for its models with that key: without
/// it, every launch ended in "does not serve model" after the model had loaded.
#[test]
fn a_server_that_wants_a_key_is_asked_with_it() {
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let model = format!(
        "[models.k]\nbackend = \"command\"\nserved-name = \"k\"\napi-key-env = \"PIPELINE_TEST_SIM_KEY\"\ncommand = [\"sh\", \"-c\", \"VLLM_API_KEY=\\\"$PIPELINE_TEST_SIM_KEY\\\" exec {bin} sim-server --port {{port}} --served-model-name k --ttft-base-ms 1 --answer-tokens 3\"]\n"
    );
    let p = Project::new();
    p.write("experiments/t.toml", &experiment("keyed", &[model], ""));
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PIPELINE_TEST_SIM_KEY", "local-test-key-4821")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = rows_under(&p, "measure");
    assert!(!rows.is_empty() && rows.iter().all(|r| r["error"] == "none"), "{rows:?}");
}
