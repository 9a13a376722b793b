//! `pipeline init`: a commented experiment file to start from, and the JSON Schema
//! that lets an editor complete and check it (`pipeline schema` prints the same).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;

use super::{Failure, fail};
use crate::cli::InitArgs;
use crate::config::{self, Source, raw::RawExperiment};
use crate::error::{Kind, Outcome, WithHint};

/// The file name of the schema that `init` writes beside an experiment file.
pub const SCHEMA_FILE: &str = "experiment.schema.json";

/// The experiment file's JSON Schema, from the types the loader reads it into.
pub fn schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(RawExperiment)).unwrap_or_default()
}

/// One model, and how it is reached, as the file's `[models.KEY]` table.
struct Model {
    key: String,
    table: String,
    /// Said after the file is written: what to check before running.
    note: Option<String>,
}

pub fn init(args: &InitArgs) -> Result<Outcome, Failure> {
    let user = |e: anyhow::Error| Failure { error: e, kind: Kind::User };
    if args.name.is_empty() || args.name.len() > 64 || !args.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        let e = anyhow!("--name {}: not a valid experiment name", config::quoted(&args.name));
        return Err(user(e.hint("use letters, digits, `-` and `_` (at most 64)")));
    }
    let file = args.file.clone().unwrap_or_else(|| PathBuf::from(format!("experiments/{}.toml", args.name)));
    if file.exists() {
        return Err(user(anyhow!("{} exists; not overwriting it", file.display()).hint("pass another FILE, or another --name")));
    }
    let model = model(args).map_err(user)?;
    let text = experiment(args, &model);
    // What init writes must plan: check it as `pipeline plan` would read it.
    let source = Source { display: file.display().to_string(), text: text.clone(), yaml: false, base_dir: PathBuf::from("."), path: None };
    if let Err(e) = config::load(&source) {
        return Err(fail(Kind::User)(anyhow!("the file init would write does not load: {e}")));
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let env = |e: std::io::Error| fail(Kind::Environment)(anyhow::Error::from(e).context(format!("writing {}", file.display())));
    std::fs::create_dir_all(dir).map_err(env)?;
    // Create, never replace: a file made meanwhile by someone else is kept.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(env)?;
    let schema_path = dir.join(SCHEMA_FILE);
    let schema_note = match std::fs::OpenOptions::new().write(true).create_new(true).open(&schema_path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, schema().as_bytes()).map_err(env)?;
            format!(" and {} (for editors)", schema_path.display())
        }
        Err(_) => String::new(),
    };
    eprintln!("wrote {}{schema_note}", file.display());
    if let Some(note) = &model.note {
        eprintln!("note: {note}");
    }
    let shown = file.display();
    eprintln!(
        "next:\n  pipeline plan {shown}    what will run, and why\n  pipeline run {shown}     measure, then read reports/{}/README.md",
        args.name
    );
    Ok(Outcome::Done)
}

/// A model key from a model's name: what is not a letter, digit, `.`, `-` or `_`
/// becomes `-`, and it starts with a letter or digit.
fn key_of(name: &str) -> String {
    let last = name.rsplit('/').find(|s| !s.is_empty()).unwrap_or(name);
    let key: String = last.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(64).collect();
    let key = key.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if key.is_empty() { "model".to_string() } else { key }
}

/// `key` as a TOML key: bare when it can be, quoted otherwise (a `.` would nest).
fn toml_key(key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') { key.to_string() } else { toml_str(key) }
}

fn toml_str(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn model(args: &InitArgs) -> anyhow::Result<Model> {
    // A name goes into the file as a TOML string (and into a comment): one line of
    // printable text, or it could write keys of its own.
    for (flag, name) in
        [("--vllm", &args.vllm), ("--openai", &args.openai), ("--anthropic", &args.anthropic), ("--api-key-env", &args.api_key_env)]
    {
        if let Some(name) = name
            && (name.is_empty() || name.chars().any(crate::untrusted::is_unsafe_char))
        {
            return Err(anyhow!("{flag} {}: not a model name", config::quoted(name)).hint("a name is one line of printable text"));
        }
    }
    if let Some(name) = &args.vllm {
        let key = key_of(name);
        let header = toml_key(&key);
        let table = format!(
            "[models.{header}]\n\
             # pipeline starts `vllm serve` for each cell's server and stops it after the last one.\n\
             backend = \"vllm\"\n\
             model = {}\n\
             # Another configuration of the same model, measured beside it (add \"awq\" to\n\
             # [matrix] variant):\n\
             # [models.{header}.variants.awq]\n\
             # model = {}\n\
             # quantization = \"awq\"\n\n\
             [server]\n\
             tensor-parallel-size = {}\n\
             # The resent history of a long conversation needs a long context: 60 turns of\n\
             # one 720p image are about 72k tokens.\n\
             max-model-len = 32768\n",
            toml_str(name),
            toml_str(&format!("{name}-AWQ")),
            args.tensor_parallel_size
        );
        return Ok(Model { key, table, note: Some("`vllm` must be on PATH where the run happens (pip install vllm)".into()) });
    }
    if let Some(url) = &args.endpoint {
        let url = url.trim_end_matches('/');
        // Checked before anything is sent: a URL with a key in it is refused, not used.
        if let Some((message, hint)) = config::validate::url_problem(url) {
            return Err(anyhow!("--endpoint: {message}").hint(hint));
        }
        let (served, note) = match served_models(url) {
            Ok(names) if !names.is_empty() => {
                let note = (names.len() > 1).then(|| format!("the server serves {}; the file measures the first", names.join(", ")));
                (names[0].clone(), note)
            }
            Ok(_) => ("CHANGE-ME".to_string(), Some(format!("{url}/v1/models lists no model: set served-name in the file"))),
            Err(e) => {
                let why = crate::error::render(&e).replace('\n', "; ");
                ("CHANGE-ME".to_string(), Some(format!("{why}; set served-name in the file")))
            }
        };
        let key = key_of(&served);
        let table = format!(
            "[models.{}]\n\
             # A server someone else started: pipeline measures it and leaves it running.\n\
             backend = \"endpoint\"\n\
             url = {}\n\
             served-name = {}\n\
             # Start vLLM with --limit-mm-per-prompt '{{\"image\": TURNS}}': every turn resends\n\
             # all earlier images. With VLLM_SERVER_DEV_MODE=1 set, each cell starts from\n\
             # empty caches (see cache-isolation in docs/experiment-file.md).\n",
            toml_key(&key),
            toml_str(url),
            toml_str(&served)
        );
        return Ok(Model { key, table, note });
    }
    for (backend, name, var) in [("openai", &args.openai, "OPENAI_API_KEY"), ("anthropic", &args.anthropic, "ANTHROPIC_API_KEY")] {
        let Some(name) = name else { continue };
        let var = args.api_key_env.clone().unwrap_or_else(|| var.to_string());
        let key = key_of(name);
        let table = format!(
            "[models.{}]\n\
             # A hosted API: every request is billed. The key is read from the variable named\n\
             # here and is written nowhere.\n\
             backend = \"{backend}\"\n\
             served-name = {}\n\
             api-key-env = {}\n",
            toml_key(&key),
            toml_str(name),
            toml_str(&var)
        );
        return Ok(Model { key, table, note: Some(format!("export {var}=... before `pipeline run`")) });
    }
    Ok(Model {
        key: "sim".into(),
        table: "[models.sim]\n\
                # The built-in simulator: vLLM's API with a modelled latency, no GPU needed.\n\
                # Replace it with your server (see `pipeline init --help`).\n\
                backend = \"sim\"\n\
                sim = { prefix-caching = true }\n"
            .into(),
        note: None,
    })
}

/// The names a running OpenAI-compatible server serves (`GET /v1/models`).
fn served_models(url: &str) -> anyhow::Result<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = crate::client::builder().timeout(Duration::from_secs(5)).build()?;
        crate::exec::service::served_names(&client, url, None).await
    })
}

fn experiment(args: &InitArgs, model: &Model) -> String {
    let name = &args.name;
    let key = &model.key;
    format!(
        "#:schema ./{SCHEMA_FILE}\n\
         # A pipeline experiment: every key is described in docs/experiment-file.md, and an\n\
         # editor that reads the schema above completes and checks them as you type.\n\
         # `pipeline plan FILE` says what will run; `pipeline run FILE` runs it.\n\n\
         name = \"{name}\"\n\
         title = \"{name}: multi-turn VLM latency\"\n\n\
         {}\n\
         [workload]\n\
         # Each turn adds one image and a short question; the whole history is resent every\n\
         # turn. The reference study ran 60 turns of 1280x720 images with seeds 1337, 66\n\
         # and 88; start small, then grow turns and seeds.\n\
         turns = 10\n\
         resolution = \"1280x720\"\n\
         max-tokens = 32\n\
         temperature = 0.0\n\
         warmup-requests = 1\n\n\
         [matrix]\n\
         model = [\"{key}\"]\n\
         seed = [1337]\n\
         # Concurrent conversations; each value is one cell, e.g. [1, 2, 4, 8].\n\
         batch-size = [1]\n\
         # Images per turn, e.g. [1, 2, 4].\n\
         frames = [1]\n\n\
         [report]\n\
         dir = \"reports/{name}\"\n\
         # A request is good when it meets every threshold; the report's best operating\n\
         # point is the highest throughput that keeps 90% of requests good.\n\
         slo = {{ ttft-ms = 500, tpot-ms = 50 }}\n",
        model.table
    )
}
