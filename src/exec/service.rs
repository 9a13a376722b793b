//! Servers as services: started when the first measure that needs one runs, shared by
//! every measure using it, health-checked before use, and stopped (the whole process
//! group: SIGTERM, then SIGKILL after a grace period) when the last of them is done,
//! when a run fails, and on Ctrl-C. A server is never a cached output. What keeps
//! a server's processes from outliving the run is in [`super::process`].
//!
//! A server is launched from two things only: its [`ServerSpec`] (the plan's typed
//! [`crate::plan::ServerConfig`], which is also what its measures' keys hold) and the
//! run's [`LaunchContext`] (where logs go, which GPUs, how long to wait, what is
//! secret), built once from the experiment; the launcher never reads the experiment.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::sync::Mutex;

use super::process::ServerProcess;

use crate::client::{self, Api};
use crate::config::{Backend, Experiment};
use crate::error::{Said, WithHint};
use crate::gpu;
use crate::plan::{Launch, ServerSpec};
use crate::records;
use crate::secrets::LiteralSecrets;
use crate::secrets::Secrets;
use crate::steps::measure::Endpoint;

pub struct Services {
    specs: Vec<ServerSpec>,
    launch: LaunchContext,
    slots: Vec<Mutex<Slot>>,
}

/// What launching a server takes besides its configuration: the run's circumstances,
/// none of which is hashed (a server on GPU 1 serves as one on GPU 0 does).
pub struct LaunchContext {
    /// Server logs go here, one file per server.
    pub logs: PathBuf,
    /// The `pipeline` binary that runs `sim-server` and each server's guard.
    pub sim_bin: PathBuf,
    /// How long a server may take to answer `/health` (`[server] startup-timeout`).
    pub startup_timeout: Duration,
    /// `[server] gpus`: the GPUs servers run on, in order; none: the first ones.
    pub gpus: Option<Vec<u32>>,
    /// Inside a Slurm job: servers use the GPUs Slurm allocated (its
    /// `CUDA_VISIBLE_DEVICES`), not `[server] gpus`.
    pub in_job: bool,
    /// The values of every `api-key-env` of the experiment and the file's literal
    /// secrets, redacted from what is recorded or shown (a server log's tail too).
    pub secrets: Secrets,
    /// The file's literal secret values (`--api-key x`), shown redacted in command
    /// lines and put back only in the process that is spawned.
    pub literals: LiteralSecrets,
}

impl LaunchContext {
    pub fn new(experiment: &Experiment, logs: PathBuf, sim_bin: PathBuf, in_job: bool) -> LaunchContext {
        // The judge's key too (`[quality] judge`), which is no model of the matrix.
        let judge = experiment.quality.as_ref().and_then(|q| q.judge.as_ref());
        let secrets = Secrets::from_env(experiment.models.values().chain(judge).filter_map(|m| m.api_key_env.as_deref()))
            .with_literals(&experiment.literal_secrets);
        LaunchContext {
            logs,
            sim_bin,
            startup_timeout: experiment.server.startup_timeout,
            gpus: experiment.server.gpus.clone(),
            in_job,
            secrets,
            literals: experiment.literal_secrets.clone(),
        }
    }

    /// The log file of server `id`. Names hold only letters, digits, `-`, `_` and `.`:
    /// keeping all of those (and `=`) keeps two servers' logs apart (`a.b` and `a_b`
    /// once shared one).
    fn log_path(&self, id: &str) -> PathBuf {
        let keep = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '=' | '.' | '_');
        let name: String = id.chars().map(|c| if keep(c) { c } else { '_' }).collect();
        self.logs.join(format!("{name}.log"))
    }

    /// The `n` GPUs a server runs on, as NVML numbers them: in a Slurm job the ones it
    /// allocated (`SLURM_JOB_GPUS`); otherwise the first of `[server] gpus`, or of all.
    fn gpus(&self, n: u32) -> Vec<u32> {
        let n = n as usize;
        if self.in_job
            && let Ok(list) = std::env::var("SLURM_JOB_GPUS")
        {
            return list.split(',').filter_map(|g| g.trim().parse().ok()).take(n).collect();
        }
        match &self.gpus {
            Some(list) => list.iter().take(n).copied().collect(),
            None => (0..n as u32).collect(),
        }
    }

    /// `CUDA_VISIBLE_DEVICES` for a server on `n` GPUs: Slurm's own inside a job (it
    /// may number devices within the job's cgroup), otherwise its GPUs.
    fn visible_devices(&self, n: u32) -> String {
        if self.in_job
            && let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES")
        {
            return v;
        }
        self.gpus(n).iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",")
    }
}

#[derive(Default)]
struct Slot {
    /// Measures that may still need this server.
    remaining: usize,
    running: Option<Running>,
    failed: Option<Said>,
    /// The server's reset routes hung once ([`Endpoint::resets_hang`]).
    resets_hang: Arc<std::sync::atomic::AtomicBool>,
}

struct Running {
    process: ServerProcess,
    endpoint: Arc<Endpoint>,
    /// Memory in use on the server's GPUs before it started (empty without NVML).
    gpu_baseline: Vec<(u32, f64)>,
}

/// How long a stopped server's GPU memory may take to come back.
const MEMORY_RELEASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Memory above the pre-start level that still counts as released (MiB).
const MEMORY_RELEASE_SLACK_MIB: f64 = 512.0;

/// Stop a server, then wait until its GPUs' memory is back near where it was before it
/// started, so the next server does not start into memory that is still being freed.
async fn stop_running(r: Running, id: &str) {
    r.process.stop().await;
    if r.gpu_baseline.is_empty() {
        return;
    }
    let gpus: Vec<u32> = r.gpu_baseline.iter().map(|(g, _)| *g).collect();
    let deadline = Instant::now() + MEMORY_RELEASE_TIMEOUT;
    loop {
        let now = gpu::memory_used_mib(&gpus);
        let released = now.iter().zip(&r.gpu_baseline).all(|((_, used), (_, before))| *used <= before + MEMORY_RELEASE_SLACK_MIB);
        if released {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("warning: GPU memory of `{id}` not released after {MEMORY_RELEASE_TIMEOUT:?} ({now:?} MiB in use); going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Services {
    /// `remaining[i]`: how many measures need server `i`.
    pub fn new(specs: Vec<ServerSpec>, launch: LaunchContext, remaining: Vec<usize>) -> Services {
        let slots = remaining.into_iter().map(|n| Mutex::new(Slot { remaining: n, ..Default::default() })).collect();
        Services { specs, launch, slots }
    }

    /// The server's endpoint, starting it if it is not running.
    pub async fn endpoint(&self, i: usize) -> Result<Arc<Endpoint>> {
        let mut slot = self.slots[i].lock().await;
        if let Some(r) = &slot.running {
            return Ok(r.endpoint.clone());
        }
        if let Some(said) = &slot.failed {
            return Err(said.clone().into_error());
        }
        let spec = &self.specs[i];
        let gpu_baseline = gpu::memory_used_mib(&self.launch.gpus(spec.gpus_needed));
        match start(spec, &self.launch, slot.resets_hang.clone()).await {
            Ok((process, endpoint)) => {
                let endpoint = Arc::new(endpoint);
                if let Some(process) = process {
                    slot.running = Some(Running { process, endpoint: endpoint.clone(), gpu_baseline });
                }
                Ok(endpoint)
            }
            Err(e) => {
                slot.failed = Some(Said::of(&e));
                Err(e)
            }
        }
    }

    /// If server `i` was running and its leader has exited, stop what is left of its
    /// process group (a crashed API server's engine and workers hold GPUs) and say so
    /// with its log's tail; the next measure starts it again.
    pub async fn exited(&self, i: usize) -> Option<Said> {
        let mut slot = self.slots[i].lock().await;
        let status = slot.running.as_mut()?.process.try_wait()?;
        if let Some(r) = slot.running.take() {
            r.process.stop().await;
        }
        let why = Said::new(format!("server `{}` exited ({status}) during the measurement", self.specs[i].id))
            .then(explain_log(&self.launch.log_path(&self.specs[i].id)));
        Some(why.map(|text| self.launch.secrets.redact(text).into_owned()))
    }

    /// Stop server `i` if it runs, so that the next measure starts it afresh
    /// (`cache-isolation = "restart"`).
    pub async fn restart(&self, i: usize) {
        let mut slot = self.slots[i].lock().await;
        if let Some(r) = slot.running.take() {
            stop_running(r, &self.specs[i].id).await;
        }
    }

    /// A measure that needed server `i` is finished (ran, failed or was cached).
    pub async fn done(&self, i: usize) {
        let mut slot = self.slots[i].lock().await;
        slot.remaining = slot.remaining.saturating_sub(1);
        if slot.remaining == 0
            && let Some(r) = slot.running.take()
        {
            stop_running(r, &self.specs[i].id).await;
        }
    }

    pub async fn stop_all(&self) {
        for (slot, spec) in self.slots.iter().zip(&self.specs) {
            if let Some(r) = slot.lock().await.running.take() {
                stop_running(r, &spec.id).await;
            }
        }
    }
}

/// Start server `spec` (or reach it, for a server someone else runs) and wait until it
/// is healthy and serves its model: the running process, if one was started, and the
/// endpoint measures use.
async fn start(
    spec: &ServerSpec,
    launch: &LaunchContext,
    resets_hang: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(Option<ServerProcess>, Endpoint)> {
    let config = &spec.config;
    let url = match &config.launch {
        Launch::Remote { url } => url.clone(),
        _ => None,
    };
    let api_key = match &config.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            anyhow!("environment variable `{var}` is not set").hint(format!("export {var}=... with the API key of model `{}`", spec.model))
        })?),
        None => None,
    };
    let api = if spec.backend == Backend::Anthropic { Api::AnthropicMessages } else { Api::OpenAiChat };
    let secrets = launch.secrets.clone();
    // Up before the server, which is told its address.
    let spans = match config.traces {
        true => {
            let addr = config.otlp_receiver.map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
            let receiver = crate::otlp::Receiver::start(config.otlp_receiver)
                .await
                .with_context(|| format!("starting the OTLP receiver on {addr}"))?;
            // Said now, not only in meta.json: the server's spans will not arrive.
            if let Some(note) = &receiver.note {
                eprintln!("warning: `{}`: {note}", spec.id);
            }
            Some(Arc::new(receiver))
        }
        false => None,
    };
    let remote = |url: &str| Endpoint {
        base_url: url.trim_end_matches('/').to_string(),
        api,
        api_key: api_key.clone(),
        secrets: secrets.clone(),
        server_meta: records::Server {
            backend: spec.backend.name().into(),
            url: Some(Some(url.to_string())),
            api: Some(api.path().to_string()),
            ..records::Server::default()
        },
        gpus: Vec::new(),
        resets_hang: resets_hang.clone(),
        traceparent: config.send_traceparent,
        spans: spans.clone(),
    };
    match spec.backend {
        Backend::Endpoint => {
            let url = url.unwrap_or_default();
            let client = http_client()?;
            check_models(&client, &url, &config.served_name, api_key.as_deref()).await?;
            let mut ep = remote(&url);
            ep.server_meta.version = Some(server_version(&client, &url).await);
            return Ok((None, ep));
        }
        // Hosted APIs: nothing to launch or health-check; a wrong key or model name
        // shows as the first request's error (with the server's own message).
        Backend::Openai => return Ok((None, remote(url.as_deref().unwrap_or("https://api.openai.com")))),
        Backend::Anthropic => return Ok((None, remote(url.as_deref().unwrap_or("https://api.anthropic.com")))),
        // The plan gives an imported model's cells no server.
        Backend::Import => anyhow::bail!("an imported model has no server"),
        Backend::Sim | Backend::Vllm | Backend::Command => {}
    }
    let log_path = launch.log_path(&spec.id);
    let client = http_client()?;
    let otlp = spans.as_ref().map(|r| r.url());
    let (child, argv, base_url) = launch_healthy(spec, launch, &client, api_key.as_deref(), &log_path, otlp.as_deref()).await?;
    let version = server_version(&client, &base_url).await;
    let var = |k: &str| std::env::var(k).ok();
    let meta = records::Server {
        backend: spec.backend.name().into(),
        command: Some(argv),
        version: Some(version),
        log: Some(log_path.display().to_string()),
        cuda_visible_devices: (spec.gpus_needed > 0).then(|| launch.visible_devices(spec.gpus_needed)),
        slurm: launch.in_job.then(|| records::Slurm {
            job_id: var("SLURM_JOB_ID"),
            node: var("SLURMD_NODENAME"),
            partition: var("SLURM_JOB_PARTITION"),
        }),
        ..records::Server::default()
    };
    let gpus = launch.gpus(spec.gpus_needed);
    Ok((
        Some(child),
        Endpoint { base_url, api, api_key, secrets, server_meta: meta, gpus, resets_hang, traceparent: config.send_traceparent, spans },
    ))
}

/// Launch server `spec` and wait until it is healthy and serves its model: the process,
/// its command line and its base URL. A free port is picked here and bound by the
/// server a moment later; another process may take it in between (tests running side
/// by side do). The server then exits with "Address already in use", and a new port is
/// tried.
async fn launch_healthy(
    spec: &ServerSpec,
    launch: &LaunchContext,
    client: &reqwest::Client,
    api_key: Option<&str>,
    log_path: &Path,
    otlp: Option<&str>,
) -> Result<(ServerProcess, Vec<String>, String)> {
    let config = &spec.config;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = match config.port {
            Some(p) => {
                std::net::TcpListener::bind(("127.0.0.1", p)).map_err(|e| {
                    anyhow!("port {p} is in use ({e})")
                        .hint(format!("stop whatever listens there, or remove `port` from [models.{}] to pick a free one", spec.model))
                })?;
                p
            }
            None => free_port()?,
        };
        let argv = command_line(spec, &launch.sim_bin, port, otlp);
        let mut child = spawn(spec, launch, &argv, log_path)?;
        let base_url = format!("http://127.0.0.1:{port}");
        let ready = async {
            wait_healthy(&mut child, client, &base_url, &spec.id, launch.startup_timeout, log_path).await?;
            check_models(client, &base_url, &config.served_name, api_key).await
        };
        match ready.await {
            Ok(()) => return Ok((child, argv, base_url)),
            Err(e) => {
                child.stop().await;
                let taken = std::fs::read_to_string(log_path).is_ok_and(|l| l.to_lowercase().contains("address already in use"));
                if config.port.is_none() && taken && attempt < 3 {
                    continue;
                }
                return Err(Said::of(&e).map(|text| launch.secrets.redact(text).into_owned()).into_error());
            }
        }
    }
}

/// The argv that launches server `spec` on `port`, exporting its spans to `otlp` (an
/// OTLP/HTTP traces URL) when given; `sim_bin` runs the simulator.
fn command_line(spec: &ServerSpec, sim_bin: &Path, port: u16, otlp: Option<&str>) -> Vec<String> {
    let config = &spec.config;
    let port = port.to_string();
    let mut argv: Vec<String> = match (&config.launch, spec.backend) {
        (Launch::Sim { sim }, _) => {
            let mut a: Vec<String> = [sim_bin.display().to_string()].into_iter().collect();
            a.extend(["sim-server", "--host", "127.0.0.1", "--port", &port, "--served-model-name", &config.served_name].map(String::from));
            // The flags are the experiment file's keys.
            for (key, v, _) in sim.numbers() {
                a.extend([format!("--{key}"), v.to_string()]);
            }
            if sim.prefix_caching {
                a.push("--prefix-caching".into());
            }
            if let Some(q) = sim.quality {
                a.extend(["--quality".into(), q.to_string()]);
            }
            if let Some(r) = &sim.references {
                a.extend(["--references".into(), r.clone()]);
            }
            if sim.judge_words {
                a.push("--judge-words".into());
            }
            if let Some(url) = otlp {
                a.extend(["--otlp-traces-endpoint".into(), url.to_string()]);
            }
            return a;
        }
        (Launch::Process(p), Backend::Vllm) => {
            let mut a: Vec<String> =
                ["vllm", "serve", &config.model, "--host", "127.0.0.1", "--port", &port, "--served-model-name", &config.served_name]
                    .map(String::from)
                    .to_vec();
            a.extend(["--tensor-parallel-size".into(), p.tensor_parallel_size.to_string()]);
            a.extend(["--dtype".into(), p.dtype.clone()]);
            if let Some(q) = p.quantization.as_deref().filter(|q| *q != "none") {
                a.extend(["--quantization".into(), q.to_string()]);
            }
            // vLLM's own JSON, as the plan wrote it; none for a judge (text only).
            if !p.limit_mm_per_prompt.is_empty() {
                a.extend(["--limit-mm-per-prompt".into(), serde_json::to_string(&p.limit_mm_per_prompt).unwrap_or_default()]);
            }
            // Cached tokens per request (`usage.prompt_tokens_details`).
            a.push("--enable-prompt-tokens-details".into());
            if let Some(media) = &p.media_io_kwargs {
                a.extend(["--media-io-kwargs".into(), serde_json::to_string(media).unwrap_or_default()]);
            }
            if let Some(n) = p.max_model_len {
                a.extend(["--max-model-len".into(), n.to_string()]);
            }
            match p.prefix_caching {
                Some(true) => a.push("--enable-prefix-caching".into()),
                Some(false) => a.push("--no-enable-prefix-caching".into()),
                None => {}
            }
            // The `llm_request` span's latency attributes come without
            // `--collect-detailed-traces` (checked on vLLM 0.32), which vLLM warns
            // may cost performance: not asked for.
            if let Some(url) = otlp {
                a.extend(["--otlp-traces-endpoint".into(), url.to_string()]);
            }
            a
        }
        (Launch::Process(p), _) => {
            // In a shell script (`sh -c "…"`), a value goes in quoted: a model name
            // is text from the file, not shell syntax.
            let script = p.command.iter().flatten().any(|a| a == "-c");
            let value = |v: &str| if script { shell_quote(v) } else { v.to_string() };
            let fill = |s: &String| {
                s.replace("{port}", &port)
                    .replace("{host}", "127.0.0.1")
                    .replace("{model}", &value(&config.model))
                    .replace("{served_name}", &value(&config.served_name))
                    .replace("{tp}", &p.tensor_parallel_size.to_string())
            };
            p.command.iter().flatten().map(fill).collect()
        }
        // The plan gives servers someone else runs no launch.
        (Launch::Remote { .. }, _) => Vec::new(),
    };
    argv.extend(spec.extra_args.iter().cloned());
    argv
}

/// Start `argv` in its own process group, with its guard, output to `log_path`, on
/// its GPUs.
fn spawn(spec: &ServerSpec, launch: &LaunchContext, argv: &[String], log_path: &Path) -> Result<ServerProcess> {
    std::fs::create_dir_all(&launch.logs)?;
    let log = std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // `argv` is what keys, logs and reports show; only here do the file's secret
    // values (`--api-key x`, shown as `[redacted N]`) go back in.
    let literals = &launch.literals;
    let mut cmd = tokio::process::Command::new(literals.restore(&argv[0]));
    cmd.args(argv[1..].iter().map(|a| literals.restore(a))).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    if spec.gpus_needed > 0 {
        cmd.env("CUDA_VISIBLE_DEVICES", launch.visible_devices(spec.gpus_needed));
    }
    if spec.backend == Backend::Vllm {
        // The cache reset routes that isolate cells (`cache-isolation`); the server
        // listens on 127.0.0.1 only.
        cmd.env("VLLM_SERVER_DEV_MODE", "1");
        // The key the client sends is the one the server checks, and vLLM does
        // not print its environment as it prints its arguments.
        if let Some(key) = spec.config.api_key_env.as_deref().and_then(|var| std::env::var(var).ok()) {
            cmd.env("VLLM_API_KEY", key);
        }
    }
    if spec.config.traces {
        // vLLM's exporter speaks gRPC unless told otherwise; the receiver speaks
        // OTLP/HTTP with protobuf. A short batch delay lets a cell's last spans come
        // well within a second (the simulator reads the same variable).
        cmd.env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf");
        cmd.env("OTEL_BSP_SCHEDULE_DELAY", crate::otlp::EXPORT_DELAY_MS.to_string());
    }
    ServerProcess::spawn(cmd, &launch.sim_bin, &spec.id).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("server command `{}` not found", argv[0])
                .hint(format!("install it (for vLLM: pip install vllm) or fix `command` in [models.{}]", spec.model))
        } else {
            anyhow!("cannot start `{}`: {e}", argv[0])
        }
    })
}

/// Poll `/health` until it answers 200, the process exits, or `timeout` passes.
async fn wait_healthy(
    child: &mut ServerProcess,
    client: &reqwest::Client,
    base_url: &str,
    id: &str,
    timeout: Duration,
    log_path: &Path,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait() {
            let why = Said::new(format!("server `{id}` exited ({status}) before it became healthy")).then(explain_log(log_path));
            return Err(why.into_error());
        }
        if Instant::now() > deadline {
            let why = Said::new(format!("server `{id}` did not become healthy within {timeout:?}")).then(explain_log(log_path));
            return Err(why.into_error());
        }
        if client.get(format!("{base_url}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_client() -> Result<reqwest::Client> {
    Ok(client::builder().timeout(Duration::from_secs(10)).build()?)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The model names an OpenAI-compatible server lists at `GET /v1/models`.
/// `api_key`: the key the server checks (vLLM started with `--api-key` or
/// `VLLM_API_KEY` guards every `/v1` route).
pub async fn served_names(client: &reqwest::Client, base_url: &str, api_key: Option<&str>) -> Result<Vec<String>> {
    let url = format!("{}/v1/models", base_url.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach `{url}`: {}", client::why(&e)).hint("is the server running and the URL right?"))?;
    if resp.status().is_redirection() {
        return Err(anyhow!("`{url}` answered {} (a redirect), which pipeline does not follow", resp.status())
            .hint("set the model's `url` to the server's own address"));
    }
    if matches!(resp.status().as_u16(), 401 | 403) {
        return Err(anyhow!(
            "`{url}` answered HTTP {}: the server wants an API key{}",
            resp.status().as_u16(),
            match api_key {
                Some(_) => ", and refused the one sent",
                None => "",
            }
        )
        .hint("name the variable that holds its key with `api-key-env` in the model's table"));
    }
    let body: serde_json::Value = small_json(resp).await.unwrap_or_default();
    Ok(body["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(String::from)).collect())
}

async fn check_models(client: &reqwest::Client, base_url: &str, served: &str, api_key: Option<&str>) -> Result<()> {
    let ids = served_names(client, base_url, api_key).await?;
    if !ids.iter().any(|id| id == served) {
        return Err(anyhow!(
            "the server at `{base_url}` does not serve model `{served}` (it lists: {})",
            crate::untrusted::escaped(&ids.join(", "), 500)
        )
        .hint("set `served-name` to one of those"));
    }
    Ok(())
}

async fn server_version(client: &reqwest::Client, base_url: &str) -> Option<String> {
    let v = small_json(client.get(format!("{base_url}/version")).send().await.ok()?).await?;
    v["version"].as_str().map(|s| crate::untrusted::escaped(s, 200))
}

/// A small JSON answer (`/v1/models`, `/version`): at most 1 MiB is read.
async fn small_json(resp: reqwest::Response) -> Option<serde_json::Value> {
    match client::read_capped(resp, 1 << 20).await {
        (body, client::BodyEnd::Complete) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// The tail of a server log, with what it probably means as the hint.
fn explain_log(path: &Path) -> Said {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // A server's own text: shown escaped, a line at a time.
    let tail: Vec<String> = lines[lines.len().saturating_sub(15)..].iter().map(|l| crate::untrusted::escaped(l, 300)).collect();
    let tail = tail.join("\n    ");
    let lower = text.to_lowercase();
    let hint = if lower.contains("opentelemetry") && (lower.contains("not available") || lower.contains("no module named")) {
        // A launched vLLM traces by default (`traces`), and needs its OpenTelemetry
        // packages for `--otlp-traces-endpoint`.
        "this vLLM cannot trace without its OpenTelemetry packages: install them (pip install opentelemetry-sdk \
         opentelemetry-api opentelemetry-exporter-otlp opentelemetry-semantic-conventions-ai), or set `traces = false` on the model"
    } else if lower.contains("out of memory") {
        "the GPU ran out of memory: lower --max-model-len or --gpu-memory-utilization, or use more GPUs"
    } else if lower.contains("address already in use") {
        "the port is in use: another server is running there"
    } else if lower.contains("does not exist") || lower.contains("not found") || lower.contains("repository not found") {
        "the model was not found: check the model path or name"
    } else {
        "read the full log for the cause"
    };
    Said::new(format!("log `{}` ends with:\n    {tail}", path.display())).hint(hint)
}

/// `text` as one word for `sh`: in single quotes, each `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '+' | '=')) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM without its OpenTelemetry packages refuses `--otlp-traces-endpoint`
    /// (which a launched vLLM gets by default): the hint says what to install or set.
    #[test]
    fn a_vllm_that_cannot_trace_is_told_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        std::fs::write(&log, "INFO starting\nValueError: OpenTelemetry is not available. Unable to configure 'otlp_traces_endpoint'. Ensure OpenTelemetry packages are installed.\n").unwrap();
        let said = explain_log(&log);
        assert!(said.message.contains("OpenTelemetry is not available"), "{}", said.message);
        assert!(said.hints.iter().any(|h| h.contains("traces = false") && h.contains("opentelemetry-sdk")), "{:?}", said.hints);
    }

    fn context(gpus: Option<Vec<u32>>) -> LaunchContext {
        LaunchContext {
            logs: PathBuf::from("cache/logs"),
            sim_bin: PathBuf::from("pipeline"),
            startup_timeout: Duration::from_secs(1),
            gpus,
            in_job: false,
            secrets: Secrets::default(),
            literals: LiteralSecrets::default(),
        }
    }

    #[test]
    fn a_server_runs_on_the_first_gpus_the_context_gives() {
        assert_eq!(context(None).gpus(2), [0, 1]);
        assert_eq!(context(Some(vec![3, 1, 2])).gpus(2), [3, 1], "`[server] gpus`, in its order");
        assert_eq!(context(Some(vec![3, 1, 2])).visible_devices(2), "3,1");
        assert!(context(None).gpus(0).is_empty());
    }

    #[test]
    fn two_servers_never_share_a_log() {
        let ctx = context(None);
        assert_ne!(ctx.log_path("svc[m=a.b]"), ctx.log_path("svc[m=a_b]"));
        assert_eq!(ctx.log_path("svc[m=x/y]"), PathBuf::from("cache/logs/svc_m=x_y_.log"), "no path separator survives");
    }
}
