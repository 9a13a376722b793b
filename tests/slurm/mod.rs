//! `--executor slurm` against a real single-node Slurm cluster on this machine.
//!
//! `scripts/slurm/start.sh` installs (Debian's Slurm 22.05, once) and starts it, with
//! two fake GPUs as GRES, so `--gres=gpu:1` scheduling and `CUDA_VISIBLE_DEVICES` are
//! Slurm's own. A cluster that already answers `scontrol ping` is used as it is and
//! left running. The scenarios run in parallel threads of one test: the time limit
//! alone takes Slurm about 70 s to enforce, and the rest fits in that time.

use super::*;

/// The cluster for this test; stopped (and purged) at the end if the test started it.
struct Cluster {
    started_here: bool,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm").join(name)
}

impl Cluster {
    /// `None` only when the user opted out with PIPELINE_SKIP_SLURM=1.
    fn up() -> Option<Cluster> {
        if std::env::var("PIPELINE_SKIP_SLURM").is_ok_and(|v| v == "1") {
            eprintln!("PIPELINE_SKIP_SLURM=1: the Slurm tests are skipped");
            return None;
        }
        let answers = Command::new("scontrol").arg("ping").output().is_ok_and(|o| o.status.success());
        if answers {
            return Some(Cluster { started_here: false });
        }
        assert!(
            rustix::process::geteuid().is_root(),
            "the Slurm tests start a local cluster (scripts/slurm/start.sh), which needs root; \
             run them as root, start a cluster yourself, or set PIPELINE_SKIP_SLURM=1 to skip them"
        );
        // cgroups, so that Slurm enforces `--mem` (the OUT_OF_MEMORY scenario).
        let start = |cgroup: &str| Command::new("bash").arg(script("start.sh")).env("LOCAL_SLURM_CGROUP", cgroup).output().unwrap();
        let mut out = start("1");
        if !out.status.success() {
            eprintln!(
                "scripts/slurm/start.sh with cgroups failed; starting without them (no OUT_OF_MEMORY scenario):\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            out = start("0");
        }
        assert!(
            out.status.success(),
            "scripts/slurm/start.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Cluster { started_here: true })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new("bash").arg(script("stop.sh")).arg("--purge").output();
        }
    }
}

/// `squeue`'s view of jobs: id → state.
fn squeue(args: &[&str]) -> Vec<(u64, String)> {
    let out = Command::new("squeue").args(["-h", "-t", "all", "-O", "JobID:|,State:|"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some((f.next()?.trim().parse().ok()?, f.next()?.trim().to_string()))
        })
        .collect()
}

fn wait_until_gone(needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_with(needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    processes_with(needle)
}

/// An experiment under Slurm with one model, `hang`, of backend lines `model`, one cell,
/// and `slurm` as its [slurm] table.
fn on_slurm(name: &str, model: &str, slurm: &str) -> String {
    format!(
        r#"
name = "{name}"
executor = "slurm"

[slurm]
{slurm}

[models.hang]
{model}

[server]
startup-timeout-s = 600

[workload]
turns = 1
resolution = "64x48"

[matrix]
model = ["hang"]

[report]
dir = "reports/t"
"#
    )
}

/// A server that runs `script` (sh) and holds no GPU, so it does not wait for the fake ones.
fn server(script: &str) -> String {
    format!("backend = \"command\"\ngpus = 0\ncommand = [\"sh\", \"-c\", {script:?}]")
}

/// A server that never becomes healthy: `sleep <marker>`, so a test can look for leftovers.
fn sleeping(marker: &str) -> String {
    server(&format!("exec sleep {marker}"))
}

const SIM: &str = "backend = \"sim\"";

/// A wrapper for Slurm's `tool` in `bin`, ahead of the real one (`$REAL` in `body`);
/// the PATH that puts it first.
fn wrapper(bin: &Path, tool: &str, body: &str) -> String {
    let real = String::from_utf8(Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().stdout).unwrap();
    std::fs::create_dir_all(bin).unwrap();
    std::fs::write(bin.join(tool), format!("#!/bin/sh\nREAL={}\n{body}\n", real.trim())).unwrap();
    Command::new("chmod").arg("+x").arg(bin.join(tool)).status().unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

#[test]
fn slurm_runs_the_demo_and_explains_how_jobs_end() {
    let Some(_cluster) = Cluster::up() else { return };
    std::thread::scope(|s| {
        s.spawn(demo_runs_through_slurm_and_reruns_cached);
        s.spawn(a_job_past_its_time_limit_is_explained);
        s.spawn(ctrl_c_cancels_the_jobs);
        s.spawn(failing_jobs_and_refused_requests_are_explained);
        s.spawn(a_cache_the_node_cannot_see_is_detected);
        s.spawn(an_unreachable_controller_is_explained);
        s.spawn(a_job_out_of_memory_is_explained);
        s.spawn(a_submission_that_timed_out_is_not_repeated);
        s.spawn(cpu_steps_as_jobs_and_jobs_slurm_forgot);
        s.spawn(force_measures_again_on_the_node);
        s.spawn(a_search_walks_through_slurm_jobs);
    });
}

/// The demo, each simulator asking for one (fake) GPU: four server-group jobs on two
/// GPUs, the report as a local run writes it, and a rerun that submits nothing.
fn demo_runs_through_slurm_and_reruns_cached() {
    let p = Project::new();
    let demo = include_str!("../../experiments/demo.toml").replace("backend = \"sim\"", "backend = \"sim\"\ngpus = 1");
    p.write("experiments/t.toml", &format!("executor = \"slurm\"\n{demo}"));
    let plan = p.pipeline(&["plan", "experiments/t.toml"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    for group in ["qwen-3b.base", "qwen-3b.awq", "qwen-7b.base", "qwen-7b.awq"] {
        let line =
            plan.stdout.lines().find(|l| l.contains(&format!("pipeline.demo.{group} "))).unwrap_or_else(|| panic!("{}", plan.stdout));
        assert!(line.contains("sbatch --gres=gpu:1") && line.contains("measure step(s)"), "{line}");
    }
    let json = p.plan_json();
    let measures: Vec<&Value> = json.iter().filter(|o| o["kind"] == "measure").collect();
    assert_eq!(measures.len(), 42);
    assert!(measures.iter().all(|o| o["job"].as_str().is_some_and(|j| j.starts_with("pipeline.demo.qwen-"))), "{measures:?}");
    let out = p.run_ok();
    let submitted: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("submit pipeline.demo.")).collect();
    assert_eq!(submitted.len(), 4, "{}", out.stderr);
    assert_eq!(p.read("reports/demo/summary.csv").lines().count(), 1 + 42);
    let readme = p.read("reports/demo/README.md");
    assert_eq!(readme.matches(", Slurm job ").count(), 4, "servers as run name their jobs:\n{readme}");
    // Every measure ran inside a Slurm job, on a GPU Slurm chose.
    let mut jobs = BTreeSet::new();
    for (path, bytes) in p.all_files() {
        if path.starts_with(p.path().join("cache/measure")) && path.ends_with("meta.json") {
            let meta: Value = serde_json::from_slice(&bytes).unwrap();
            let server = &meta["server"];
            let gpu = server["cuda_visible_devices"].as_str().unwrap_or_default();
            assert!(gpu == "0" || gpu == "1", "CUDA_VISIBLE_DEVICES from Slurm, found {server}");
            jobs.insert(server["slurm"]["job_id"].as_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(jobs.len(), 4, "one job per server group: {jobs:?}");
    let ids: Vec<String> = jobs.iter().map(u64::to_string).collect();
    let states = squeue(&["-j", &ids.join(",")]);
    assert!(states.iter().all(|(_, s)| s == "COMPLETED"), "{states:?}");
    let status = p.pipeline(&["status", "experiments/t.toml"]);
    assert_eq!(status.stdout.matches("COMPLETED").count(), 4, "{}", status.stdout);
    assert!(status.stdout.contains("measure    42/42 up to date"), "{}", status.stdout);
    let again = p.run_ok();
    assert!(again.ran().is_empty() && !again.stderr.contains("submit "), "{}", again.stderr);
}

/// `[search]` under Slurm: each round's probes go to the node as a job, which plans
/// the cells it is sent (they are not in the file's matrix); the search lands where it
/// does locally (see tests/search), and a rerun submits nothing.
fn a_search_walks_through_slurm_jobs() {
    let p = Project::new();
    p.write("experiments/t.toml", &format!("executor = \"slurm\"\n{}", search_on_sim("slurm-search", "1", 8)));
    let out = p.run_ok();
    let submitted = out.stderr.lines().filter(|l| l.starts_with("submit pipeline.slurm-search.a.base")).count();
    assert_eq!(submitted, 6, "one job per round (1, 2, 4, 8, 6, 5):\n{}", out.stderr);
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("per curve: a (base), frames=1: 5."), "{readme}");
    let again = p.run_ok();
    assert!(again.ran().is_empty() && !again.stderr.contains("submit "), "{}", again.stderr);
}

fn a_job_past_its_time_limit_is_explained() {
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("late", &sleeping("4711"), "time = \"1\""));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in ["ended TIMEOUT", "time limit (--time=1)", "raise `time` under [slurm]", "/slurm-"] {
        assert!(out.stderr.contains(needle), "`{needle}` missing:\n{}", out.stderr);
    }
    // The job caught Slurm's SIGTERM and stopped its server.
    assert!(out.stderr.contains("interrupted (cancelled, or the time limit)"), "{}", out.stderr);
    assert_eq!(wait_until_gone("sleep 4711"), Vec::<String>::new());
}

fn ctrl_c_cancels_the_jobs() {
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("stopped", &sleeping("4712"), "time = \"10\""));
    let run = Background::start(&p, &["run", "experiments/t.toml"], "start  pipeline.stopped");
    let id: u64 = run.seen.iter().find_map(|l| l.split("Slurm job ").nth(1)?.split(',').next()?.parse().ok()).expect("a job id");
    let live = p.pipeline(&["status", "experiments/t.toml"]);
    assert!(live.stdout.contains("(going)") && live.stdout.contains("RUNNING"), "{}", live.stdout);
    let (code, seen) = run.interrupt();
    assert_eq!(code, Some(130), "{seen:?}");
    assert!(seen.iter().any(|l| l == &format!("cancelled Slurm job(s) {id}")), "{seen:?}");
    // The job signals its processes and is COMPLETING for a moment (up to KillWait).
    let deadline = Instant::now() + Duration::from_secs(15);
    while squeue(&["-j", &id.to_string()]).first().is_some_and(|(_, s)| s == "COMPLETING") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(squeue(&["-j", &id.to_string()]), vec![(id, "CANCELLED".to_string())]);
    assert_eq!(wait_until_gone("sleep 4712"), Vec::<String>::new());
}

fn failing_jobs_and_refused_requests_are_explained() {
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("broken", &server("echo no model here >&2; exit 3"), ""));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let id = out.stderr.split("Slurm job ").nth(1).and_then(|r| r.split(',').next()).expect("a job id").to_string();
    for needle in [
        format!("Slurm job {id} (pipeline.broken.hang.base) on "),
        "ended FAILED (reason NonZeroExitCode): exit code 1".into(),
        format!("slurm-{id}.log` ends with"),
    ] {
        assert!(out.stderr.contains(&needle), "`{needle}` missing:\n{}", out.stderr);
    }
    // The job's own error, from its log: the server's exit and its log's tail.
    assert!(
        out.stderr.contains("exited (exit status: 3) before it became healthy") && out.stderr.contains("no model here"),
        "{}",
        out.stderr
    );

    // `pipeline` is not where the job looks for it on the node.
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("nobinary", SIM, "binary = \"/nonexistent/pipeline\""));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("exit code 127") && out.stderr.contains("set `binary` under [slurm]"), "{}", out.stderr);

    // Requests Slurm refuses are refused before anything is submitted, in its words.
    for (slurm, name, message) in [
        ("partition = \"no-such-partition\"", "refused1", "Invalid partition name specified"),
        ("gpu-type = \"h100\"", "refused2", "Requested node configuration is not available"),
    ] {
        let p = Project::new();
        p.write("experiments/t.toml", &on_slurm(name, &format!("{SIM}\ngpus = 1"), slurm));
        let out = p.pipeline(&["run", "experiments/t.toml"]);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("Slurm refuses the job") && out.stderr.contains(message), "{}", out.stderr);
        assert!(squeue(&["-n", &format!("pipeline.{name}.hang.base")]).is_empty(), "nothing may be submitted");
    }

    // A dependency that can never be met (here: on a job that failed) is cancelled.
    let failed = Command::new("sbatch").args(["--parsable", "-o", "/dev/null", "--wrap", "exit 1"]).output().unwrap();
    let failed = String::from_utf8_lossy(&failed.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while squeue(&["-j", &failed]).first().is_none_or(|(_, s)| s != "FAILED") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = Project::new();
    let name = format!("orphan{}", std::process::id());
    p.write("experiments/t.toml", &on_slurm(&name, SIM, &format!("sbatch-args = [\"--dependency=afterok:{failed}\"]")));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("DependencyNeverSatisfied"), "{}", out.stderr);
    let states = squeue(&["-n", &format!("pipeline.{name}.hang.base")]);
    assert!(states.iter().all(|(_, s)| s == "CANCELLED") && !states.is_empty(), "{states:?}");

    // No Slurm here at all.
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PATH", "/nonexistent")]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("`sbatch` is not on PATH") && out.stderr.contains("--executor local"), "{}", out.stderr);
}

/// The submitting machine writes the cache where the node cannot see it: a tmpfs
/// mounted in a private mount namespace, as a login node's /tmp is to a compute node.
fn a_cache_the_node_cannot_see_is_detected() {
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("private");
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    let experiment = outside.path().join("t.toml");
    std::fs::write(&experiment, on_slurm("unshared", SIM, "")).unwrap();
    let bin = assert_cmd::cargo::cargo_bin!("pipeline");
    let inner = format!(
        "mount -t tmpfs tmpfs {d} && mkdir {d}/experiments && cp {e} {d}/experiments/t.toml && cd {d} && {bin} run experiments/t.toml",
        d = dir.display(),
        e = experiment.display(),
        bin = bin.display()
    );
    let out = Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &inner]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not start") && stderr.contains("filesystem the compute nodes share"), "{stderr}");
}

fn an_unreachable_controller_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // This cluster's configuration, with the controller on a port nobody listens on.
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| "/etc/slurm/slurm.conf".into());
    let text = std::fs::read_to_string(&conf).unwrap();
    let text: String = text.lines().filter(|l| !l.starts_with("SlurmctldPort")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("slurm.conf"), format!("SlurmctldPort=9\n{text}")).unwrap();
    if let Ok(gres) = std::fs::read(Path::new(&conf).with_file_name("gres.conf")) {
        std::fs::write(dir.path().join("gres.conf"), gres).unwrap();
    }
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("nowhere", SIM, ""));
    let conf = dir.path().join("slurm.conf");
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("SLURM_CONF", conf.to_str().unwrap())]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach the Slurm controller") && out.stderr.contains("--executor local"), "{}", out.stderr);
}

/// The node-side command on its own: a spec it cannot read means the cache is not
/// shared, and it says so with its own exit code (no cluster needed).
#[test]
fn a_slurm_job_without_its_spec_says_the_cache_is_not_shared() {
    let p = Project::new();
    let out = p.pipeline(&["--cache", "elsewhere", "slurm-job", "elsewhere/slurm/run/job/spec.json"]);
    assert_eq!(out.code, 66, "{}", out.stderr);
    assert!(out.stderr.contains("is not visible on") && out.stderr.contains("filesystem the compute nodes share"), "{}", out.stderr);
}

fn a_job_out_of_memory_is_explained() {
    let config = Command::new("scontrol").args(["show", "config"]).output().unwrap();
    if !String::from_utf8_lossy(&config.stdout).contains("task/cgroup") {
        eprintln!("this cluster does not enforce --mem (no task/cgroup): the OUT_OF_MEMORY scenario is skipped");
        return;
    }
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("hog", &server("head -c 1000M /dev/zero | tail"), "mem = \"200M\""));
    let out = p.pipeline(&["run", "experiments/t.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in ["ended OUT_OF_MEMORY", "more memory than it asked for (200M)", "raise `mem` under [slurm]", "oom-kill"] {
        assert!(out.stderr.contains(needle), "`{needle}` missing:\n{}", out.stderr);
    }
}

/// `sbatch` answers "Socket timed out" although the job went in (a busy controller):
/// the retry finds that job by name and run id instead of submitting it again.
fn a_submission_that_timed_out_is_not_repeated() {
    let p = Project::new();
    let bin = p.path().join("bin");
    let flag = bin.join("failed-once");
    let path = wrapper(
        &bin,
        "sbatch",
        &format!(
            "# the first real submission goes in, and its reply is lost\ncase \"$*\" in *--parsable*) if [ ! -e {flag} ]; then touch {flag}; $REAL \"$@\" >/dev/null; echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2; exit 1; fi;; esac\nexec $REAL \"$@\"",
            flag = flag.display()
        ),
    );
    // Finished jobs stay in squeue for an hour: a name of this test run's own.
    let name = format!("retried{}", std::process::id());
    p.write("experiments/t.toml", &on_slurm(&name, SIM, ""));
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PATH", &path)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(flag.exists(), "the fake sbatch was not used");
    assert_eq!(squeue(&["-n", &format!("pipeline.{name}.hang.base")]).len(), 1, "submitted twice");
}

/// `--force` under Slurm measures again: the node is told, and the submitter waits for
/// the new entry instead of counting the old one as done.
fn force_measures_again_on_the_node() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new();
    p.write("experiments/t.toml", &on_slurm("forced", SIM, ""));
    p.run_ok();
    let entry = || -> (PathBuf, u64) {
        let dir = std::fs::read_dir(p.path().join("cache/measure")).unwrap().flatten().next().unwrap().path();
        let entry = std::fs::read_dir(&dir).unwrap().flatten().next().unwrap().path();
        let ino = std::fs::metadata(&entry).unwrap().ino();
        (entry, ino)
    };
    let (path, before) = entry();
    let out = p.pipeline(&["run", "experiments/t.toml", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("submit pipeline.forced.hang.base"), "{}", out.stderr);
    let (again, after) = entry();
    assert_eq!(path, again, "same key");
    assert_ne!(before, after, "the measure entry was not published again:\n{}", out.stderr);
}

/// `cpu-steps = "slurm"`: datagen, aggregate and report as CPU jobs too. And a squeue
/// that forgets jobs as soon as they complete (as Slurm does after MinJobAge): sacct is
/// asked; without accounting it cannot say how they ended, and the cache decides.
fn cpu_steps_as_jobs_and_jobs_slurm_forgot() {
    let p = Project::new();
    let path =
        wrapper(&p.path().join("bin"), "squeue", "out=$($REAL \"$@\"); rc=$?\nprintf '%s\\n' \"$out\" | grep -v '|COMPLETED|'\nexit $rc");
    p.write("experiments/t.toml", &on_slurm("cpujobs", SIM, "cpu-steps = \"slurm\""));
    let out = p.pipeline_env(&["run", "experiments/t.toml"], &[("PATH", &path)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for job in ["datagen.0", "hang.base", "aggregate", "report"] {
        assert!(out.stderr.contains(&format!("submit pipeline.cpujobs.{job}: Slurm job")), "no {job} job:\n{}", out.stderr);
    }
    assert!(p.path().join("reports/t/README.md").exists());
    // With accounting (LOCAL_SLURM_ACCOUNTING=1), sacct says how they ended.
    let accounting = Command::new("sacct").args(["-n", "-X"]).output().is_ok_and(|o| o.status.success());
    let status = p.pipeline_env(&["status", "experiments/t.toml"], &[("PATH", &path)]);
    let expected = if accounting { "COMPLETED" } else { "VANISHED" };
    assert_eq!(status.stdout.matches(expected).count(), 4, "{}", status.stdout);
}
