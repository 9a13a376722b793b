//! A newcomer's first ten minutes: `pipeline init` to one's own first report, the
//! experiment file's JSON Schema, shell completions.

use super::*;

/// From an empty folder: init against a running server, then run what it wrote.
#[test]
fn init_against_a_running_server_then_run_gives_a_report() {
    let sim = start_sim(&["--served-model-name", "my-vlm"]);
    let p = Project::new();
    p.pipeline(&["init", "--endpoint", &sim.base])
        .status(0)
        .stderr_has("wrote experiments/first.toml and experiments/experiment.schema.json (for editors)")
        .stderr_has("pipeline run experiments/first.toml");
    let file = p.read("experiments/first.toml");
    assert!(file.starts_with("#:schema ./experiment.schema.json\n"), "{file}");
    assert!(file.contains("served-name = \"my-vlm\""), "the model's name comes from the server: {file}");
    // Never overwritten.
    p.pipeline(&["init", "--endpoint", &sim.base]).status(2).stderr_has("exists; not overwriting it");
    assert_eq!(p.read("experiments/first.toml"), file);
    // Kept small so that a first run is quick: a 720p image per turn, 10 turns.
    p.pipeline(&["run", "experiments/first.toml"]).status(0).stderr_has("report: reports/first/README.md");
    assert!(p.read("reports/first/README.md").contains("my-vlm"));
}

/// Every kind of file init writes plans without an error, and says what to do next.
#[test]
fn every_init_plans() {
    let p = Project::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "s"], "backend = \"sim\""),
        (&["--name", "v", "--vllm", "Qwen/Qwen2.5-VL-7B-Instruct", "--tensor-parallel-size", "2"], "tensor-parallel-size = 2"),
        (&["--name", "o", "--openai", "gpt-4.1-mini"], "api-key-env = \"OPENAI_API_KEY\""),
        (&["--name", "a", "--anthropic", "claude-sonnet-4-5", "--api-key-env", "MY_KEY"], "api-key-env = \"MY_KEY\""),
        // A server that is not there yet: the file says what to fill in.
        (&["--name", "e", "--endpoint", "http://127.0.0.1:9"], "served-name = \"CHANGE-ME\""),
    ];
    for (args, expected) in cases {
        let name = args[1];
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        p.pipeline(&all).status(0).stderr_has(&format!("pipeline plan experiments/{name}.toml"));
        assert!(p.read(&format!("experiments/{name}.toml")).contains(expected), "{args:?}");
        p.pipeline(&["plan", &format!("experiments/{name}.toml")]).status(0);
    }
    p.pipeline(&["init", "--openai", "x", "--anthropic", "y"]).status(2).stderr_has("cannot be used with");
    p.pipeline(&["init", "--name", "no spaces"]).status(2).stderr_has("not a valid experiment name");
}

/// The schema is generated from the loader's types, so it is the committed one; every
/// shipped experiment (and every file init writes) validates against it, and what the
/// loader refuses for its shape (an unknown key, a wrong type), the schema refuses too.
#[test]
fn the_schema_is_the_loaders_and_the_shipped_experiments_meet_it() {
    let p = Project::new();
    let out = p.pipeline(&["schema"]);
    out.status(0);
    snapshot("../../docs/experiment.schema.json", &out.stdout);
    let schema: Value = serde_json::from_str(&out.stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.pipeline(&["init", "--name", "mine", "--vllm", "org/model"]).status(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "yaml"))
        .collect();
    files.push(p.path().join("experiments/mine.toml"));
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.starts_with("#:schema "), "{} declares the schema for editors", file.display());
        let value: Value = toml::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
    let demo: Value = toml::from_str(&std::fs::read_to_string(root.join("experiments/demo.toml")).unwrap()).unwrap();
    let mut typo = demo.clone();
    typo["workload"]["turn"] = 3.into();
    assert!(!validator.is_valid(&typo), "an unknown key fails validation, as it fails loading");
    let mut wrong = demo.clone();
    wrong["workload"]["turns"] = "two".into();
    assert!(!validator.is_valid(&wrong), "a wrong type fails validation");
    let mut no_matrix = demo;
    no_matrix.as_object_mut().unwrap().remove("matrix");
    assert!(!validator.is_valid(&no_matrix), "a missing required table fails validation");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        p.pipeline(&["completions", shell]).status(0).stdout_has("init").stdout_has("--only");
    }
    p.pipeline(&["completions", "tcsh"]).status(2);
}

/// The README's second command builds on the first: every crate the run build compiles
/// is resolved with the same features when the tests' dev-dependencies join, so
/// `cargo test` after `cargo run` compiles only this crate and the dev-dependencies
/// (a dev-dependency that switches on a feature of a shared crate recompiles it and
/// everything above it: polars twice, minutes on two cores). `cargo tree` resolves
/// both builds without compiling.
#[test]
fn the_test_build_compiles_no_crate_of_the_run_build_again() {
    use std::collections::{BTreeMap, BTreeSet};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let resolve = |edges: &str| -> BTreeMap<String, BTreeSet<String>> {
        let out = std::process::Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tree", "--locked", "--offline", "-e", edges, "--prefix", "none", "-f", "{p}|{f}"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree -e {edges}: {}", String::from_utf8_lossy(&out.stderr));
        let mut crates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((package, features)) = line.split_once('|') else { continue };
            // `name vX.Y.Z`, then perhaps a path, `(proc-macro)` or `(*)`: the first two words name it.
            let name: Vec<&str> = package.split_whitespace().take(2).collect();
            crates.entry(name.join(" ")).or_default().insert(features.trim_end_matches(" (*)").to_string());
        }
        crates
    };
    let (run, test) = (resolve("normal,build"), resolve("normal,build,dev"));
    assert!(run.len() > 100 && test.len() > run.len(), "{} crates to run, {} to test", run.len(), test.len());
    let twice: Vec<String> = run
        .iter()
        .filter(|(name, features)| test.get(*name) != Some(*features))
        .map(|(name, features)| format!("{name}: {features:?} to run, {:?} to test", test.get(name)))
        .collect();
    assert!(twice.is_empty(), "the test build resolves these with other features (align them in Cargo.toml):\n{}", twice.join("\n"));
}
