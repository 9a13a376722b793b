//! The validator, case by case: each edits one line of a minimal valid file and
//! names the location and message it must produce.

use super::*;

/// A minimal valid experiment; each case edits one line of it.
const BASE: &str = "name = \"t\"\n[models.a]\nbackend = \"sim\"\n[workload]\nturns = 2\n[matrix]\nmodel = [\"a\"]\n";

fn problems(text: &str) -> Vec<String> {
    let source = Source { display: "t.toml".into(), text: text.into(), yaml: false, base_dir: PathBuf::new(), path: None };
    match load(&source) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { issues, .. }) => issues
            .iter()
            .map(|i| {
                let at = i.at.map(|p| format!("{}:{}", p.line, p.column)).unwrap_or_default();
                format!("{at} {}: {}", i.path, i.message)
            })
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

/// (what, replace this, with this, the first problem as `line:col path: message`).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "zero turns",
        "turns = 2",
        "turns = 0",
        "5:9 workload.turns: must be a whole number from 1 to 10,000 (turns per conversation), found `0`",
    ),
    (
        "turns past u32",
        "turns = 2",
        "turns = 4294967297",
        "5:9 workload.turns: must be a whole number from 1 to 10,000 (turns per conversation), found `4,294,967,297`",
    ),
    (
        "a day-long timeout and more",
        "turns = 2",
        "turns = 2\nrequest-timeout-s = 1e9",
        "6:21 workload.request-timeout-s: must be a number above 0 and at most 86,400 (seconds), found `1,000,000,000`",
    ),
    (
        "temperature",
        "turns = 2",
        "turns = 2\ntemperature = 2.5",
        "6:15 workload.temperature: must be a number from 0 to 2 (sampling temperature), found `2.5`",
    ),
    (
        "a rate too low for any schedule",
        "turns = 2",
        "turns = 2\narrival = \"poisson\"\nrequest-rate = 1e-300",
        "7:16 workload.request-rate: must be a number from 0.001 to 100,000 (requests per second), found `1e-300`",
    ),
    (
        "negative warm-up",
        "turns = 2",
        "turns = 2\nwarmup-requests = -1",
        "6:19 workload.warmup-requests: must be a whole number from 0 to 10,000 (requests), found `-1`",
    ),
    (
        "sim jitter of 1",
        "backend = \"sim\"",
        "backend = \"sim\"\nsim = { jitter = 1.0 }",
        "4:18 models.a.sim.jitter: must be a number at least 0 and below 1 (relative jitter), found `1`",
    ),
    (
        "zero answer tokens",
        "backend = \"sim\"",
        "backend = \"sim\"\nsim = { answer-tokens = 0 }",
        "4:25 models.a.sim.answer-tokens: must be a whole number from 1 to 1,000,000 (tokens per answer), found `0`",
    ),
    (
        "a variant name with a space",
        "backend = \"sim\"",
        "backend = \"sim\"\nvariants.\"a b\" = {}",
        "4:10 models.a.variants.a b: `a b` is not a valid variant name",
    ),
    (
        "a newline in a served name",
        "backend = \"sim\"",
        "backend = \"sim\"\nserved-name = \"x\\ny\"",
        "4:15 models.a.served-name: `x\\ny` holds a line break or another control character",
    ),
    (
        "a URL that is not one",
        "backend = \"sim\"",
        "backend = \"endpoint\"\nurl = \"gpu-node:8000\"",
        "4:7 models.a.url: `gpu-node:8000` is not an http:// or https:// address",
    ),
    (
        "a key for a name",
        "backend = \"sim\"",
        "backend = \"openai\"\napi-key-env = \"sk-proj-abcdefghijklmnopqrstuvwxyz\"",
        "4:15 models.a.api-key-env: must be the *name* of an environment variable, not the key itself",
    ),
    (
        "tensor parallel of 0",
        "turns = 2",
        "turns = 2\n[server]\ntensor-parallel-size = 0",
        "7:24 server.tensor-parallel-size: must be a whole number from 1 to 64 (GPUs), found `0`",
    ),
    (
        "an include of frames 1025",
        "model = [\"a\"]",
        "model = [\"a\"]\ninclude = [{ frames = 1025 }]",
        "8:23 matrix.include[0].frames[0]: must be a whole number from 0 to 1,024 (images per turn), found `1,025`",
    ),
    (
        "an axis setting max-tokens to 0.5",
        "model = [\"a\"]",
        "model = [\"a\"]\n[[axis]]\nname = \"m\"\nvalues = [0.5]\nworkload = \"max-tokens\"",
        "10:11 axis[0].values[0]: must be a whole number from 1 to 1,000,000 (tokens per answer), found `0.5` (not a whole number)",
    ),
    (
        "a search from 0, which doubles to 0",
        "model = [\"a\"]",
        "model = [\"a\"]\n[[axis]]\nname = \"w\"\nvalues = [1]\nworkload = \"warmup-requests\"\n[search]\naxis = \"w\"\nmin = 0\nmax = 8",
        "14:7 search.min: must be above 0: the walk starts at min and doubles it",
    ),
    (
        "a search of a whole-number server flag from 1.5",
        "model = [\"a\"]",
        "model = [\"a\"]\n[[axis]]\nname = \"n\"\nvalues = [4]\nserver-flag = \"--max-num-seqs\"\n[search]\naxis = \"n\"\nmin = 1.5\nmax = 8",
        "14:7 search.min: must be a whole number from 1 to 1,000,000,000,000 (value of the axis), found `1.5`",
    ),
    (
        "an SLO of 0 ms",
        "turns = 2",
        "turns = 2\n[report]\nslo = { e2e-ms = 0 }",
        "7:18 report.slo.e2e-ms: must be a number above 0 and at most 86,400,000 (milliseconds), found `0`",
    ),
];

#[test]
fn every_case_is_located_and_explained() {
    assert_eq!(problems(BASE), Vec::<String>::new(), "the base is valid");
    let mut wrong = Vec::new();
    for (what, from, to, expected) in CASES {
        assert!(BASE.contains(from), "{what}: `{from}` is not in the base");
        let found = problems(&BASE.replacen(from, to, 1));
        if found.first().map(String::as_str) != Some(*expected) {
            wrong.push(format!("{what}:\n  expected {expected}\n  found    {found:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn defaults_written_out_change_nothing() {
    let explicit =
        BASE.replace("turns = 2", "turns = 2\nmax-tokens = 32\ntemperature = 0.0\nwarmup-requests = 1\nrequest-timeout-s = 120.0");
    let source = |text: &str| Source { display: "t.toml".into(), text: text.into(), yaml: false, base_dir: PathBuf::new(), path: None };
    let (a, b) = (load(&source(BASE)).unwrap(), load(&source(&explicit)).unwrap());
    assert_eq!(format!("{:?}", a.workload), format!("{:?}", b.workload));
}
