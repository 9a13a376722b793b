//! Servers and runs that fail or are stopped: errors explained, nothing left behind, every finished step kept.

use super::*;

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

#[test]
fn ctrl_c_keeps_completed_steps_and_leaves_no_server() {
    // Slow answers, so the run is still going when it is interrupted.
    let p = Project::slow("sigint-7f3a");
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
        &Exp::new("dies")
            .command_sim("dies", &["--crash-at", "3"])
            .sim("fine", QUICK_SIM)
            .served_as("fine-mid-measure")
            .workload("turns", "4")
            .workload("resolution", "\"64x48\"")
            .matrix("seed", "[1]")
            .text(),
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

/// `experiments/NAME.toml`: one turn against model NAME, served by the shell script
/// `bin/NAME.sh`, whose lines before it hands over to the simulator (on port `$1`)
/// are `prelude`.
fn scripted_server(p: &Project, name: &str, prelude: &str) -> String {
    let bin = assert_cmd::cargo::cargo_bin!("pipeline").display().to_string();
    let script = p.path().join(format!("bin/{name}.sh"));
    p.write(
        &format!("bin/{name}.sh"),
        &format!(
            "#!/bin/sh
{prelude}exec \"{bin}\" sim-server --port \"$1\" --served-model-name {name} --ttft-base-ms 1 --answer-tokens 2\n"
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = format!("experiments/{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[models.{name}]\nbackend = \"command\"\ncommand = [\"{}\", \"{{port}}\"]\n[workload]\nturns = 1\nresolution = \"64x48\"\nwarmup-requests = 0\n[matrix]\nmodel = [\"{name}\"]\n",
            script.display()
        ),
    );
    file
}

/// The free port picked for a server can be taken by another process before the
/// server binds it (tests running side by side do this): the server then exits with
/// "Address already in use", and a new port is tried.
#[test]
fn a_port_taken_in_the_meantime_is_picked_again() {
    let p = Project::new();
    // The first start loses the race for its port; the second serves.
    let file = scripted_server(
        &p,
        "racy",
        "if [ ! -e \"$(dirname \"$0\")/tried\" ]; then touch \"$(dirname \"$0\")/tried\"; echo 'error: Address already in use (os error 98)' >&2; exit 3; fi\n",
    );
    p.pipeline(&["run", &file]).status(0).stderr_has("4 ran, 0 cached, 0 skipped, 0 failed").stderr_lacks("FAILED");
    assert!(p.path().join("bin/tried").exists(), "the first start did lose its port");
}

/// The binary turns transparent huge pages off for itself (its allocator's 2 MiB pages
/// were a third of a no-op run's memory), and a server it starts has them as the
/// machine gives them: the kernel's flag is inherited, so each server gets it back.
#[test]
fn a_server_has_the_huge_pages_the_run_turned_off() {
    let thp = |status: &str| status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_string());
    let ours = thp(&std::fs::read_to_string("/proc/self/status").unwrap()).expect("Linux 5.0 and later say THP_enabled");
    let p = Project::new();
    // The server's shell writes its own flag and its parent's (the run's).
    let file = scripted_server(
        &p,
        "s",
        "grep THP_enabled /proc/self/status > \"$(dirname \"$0\")/server.txt\"\ngrep THP_enabled /proc/$PPID/status > \"$(dirname \"$0\")/run.txt\"\n",
    );
    p.pipeline(&["run", &file]).status(0);
    assert_eq!(thp(&p.read("bin/run.txt")).as_deref(), Some("0"), "the run has them off");
    assert_eq!(thp(&p.read("bin/server.txt")), Some(ours.clone()), "the server has them as this test does");

    // The simulator, a server too, leaves them as it found them: read once it serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sim = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pipeline"))
        .args(["sim-server", "--port", &port.to_string(), "--served-model-name", "s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", sim.id())).unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(thp(&status), Some(ours), "the simulator has them as this test does");
}
