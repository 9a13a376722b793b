//! Conversations from the user's own files: both formats run end to end (the shipped
//! examples), recorded history sends every model the same messages, the datagen key
//! follows exactly the images of the drawn conversations, and bad files are refused
//! with their line and the fix.

use super::fake::{self, FakeServer, Reply};
use super::hardening::stream_of;
use super::*;
use std::collections::BTreeMap;

/// The repository's example `name` (its experiment and the shared data folder).
fn example(name: &str) -> Project {
    let p = Project::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write(&format!("experiments/{name}.toml"), &std::fs::read_to_string(root.join(format!("experiments/{name}.toml"))).unwrap());
    for entry in walk(&root.join("experiments/data/conversations")) {
        let rel = entry.strip_prefix(root).unwrap();
        std::fs::create_dir_all(p.path().join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, p.path().join(rel)).unwrap();
    }
    p
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A small PNG whose pixels depend on `shade`.
fn png(p: &Project, rel: &str, shade: u8) {
    let path = p.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([shade, (x * 8) as u8, (y * 10) as u8])).save(path).unwrap();
}

/// A chat JSONL line: `turns` user turns, each with one image of `images` and an answer.
fn chat_line(id: &str, images: &[&str]) -> String {
    let mut messages = vec![serde_json::json!({"role": "system", "content": "be brief"})];
    for (t, image) in images.iter().enumerate() {
        messages.push(serde_json::json!({"role": "user", "content": [
            {"type": "text", "text": format!("question {t} of {id}")},
            {"type": "image_url", "image_url": {"url": image}}
        ]}));
        messages.push(serde_json::json!({"role": "assistant", "content": format!("recorded answer {t} of {id}")}));
    }
    serde_json::json!({"id": id, "messages": messages}).to_string()
}

#[test]
fn both_example_formats_run_on_the_simulator() {
    // Turns per conversation in the example files, by id (at most 3 are replayed).
    let turns: BTreeMap<&str, u64> = [
        ("kitchen", 3),
        ("street", 2),
        ("chart", 2),
        ("greeting", 2),
        ("000000001", 2),
        ("000000002", 2),
        ("000000003", 1),
        ("000000004", 2),
    ]
    .into();
    for (name, format, resolution) in [("conversations_chat", "openai", "source"), ("conversations_llava", "llava", "640x360")] {
        let p = example(name);
        p.pipeline(&["run", &format!("experiments/{name}.toml")]).status(0);
        let metas = p.measure_metas();
        assert_eq!(metas.len(), 4, "2 variants × 2 seeds");
        for (_, meta) in metas {
            let d = &meta["dataset"];
            assert_eq!(
                (d["format"].as_str(), d["resolution"].as_str(), d["history"].as_str()),
                (Some(format), Some(resolution), Some("recorded"))
            );
            assert!(Path::new(d["path"].as_str().unwrap()).is_absolute(), "{d}");
            let drawn = d["conversations"].as_array().unwrap();
            assert_eq!(drawn.len(), 2, "batch-size 2: {d}");
            let expected: u64 = drawn.iter().map(|c| turns[c["id"].as_str().unwrap()]).sum();
            assert_eq!(meta["requests"], expected, "{name}: every replayed turn is a request: {d}");
            assert_eq!(meta["errors"], 0);
        }
        // Images keep their bytes at the source size, or are resized to the resolution.
        let images: Vec<(PathBuf, Vec<u8>)> = p
            .all_files()
            .into_iter()
            .filter(|(path, _)| path.to_string_lossy().contains("/datagen/") && path.to_string_lossy().contains("/c000-t000-i000"))
            .collect();
        assert!(!images.is_empty());
        for (path, bytes) in images {
            let img = image::load_from_memory(&bytes).unwrap();
            match resolution {
                "source" => {
                    let originals: Vec<Vec<u8>> =
                        walk(&p.path().join("experiments/data/conversations/images")).iter().map(|f| std::fs::read(f).unwrap()).collect();
                    assert!(originals.contains(&bytes), "{} is not a copy of a source image", path.display());
                }
                _ => assert_eq!((img.width(), img.height()), (640, 360), "{}", path.display()),
            }
        }
        assert!(p.path().join(format!("reports/{name}/README.md")).exists());
    }
}

/// With `history = "recorded"`, two models that answer differently still receive the
/// same messages, turn by turn (the file's answers); with `live`, they do not.
#[test]
fn recorded_history_sends_every_model_the_same_messages() {
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => Reply::Ok("application/json", r#"{"object":"list","data":[{"id":"ma"},{"id":"mb"}]}"#.into()),
        "/v1/chat/completions" => {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            Reply::Ok("text/event-stream", stream_of(&format!("live answer of {}", body["model"].as_str().unwrap_or("?"))))
        }
        _ => fake::response("404 Not Found", &[], "{}"),
    });
    let p = Project::new();
    for k in 0..4 {
        png(&p, &format!("data/img/{k}.png"), k * 50);
    }
    let lines = [chat_line("one", &["img/0.png", "img/1.png", "img/2.png"]), chat_line("two", &["img/3.png", "img/0.png", "img/1.png"])];
    p.write("data/chat.jsonl", &lines.join("\n"));
    let model = |name: &str, served: &str| {
        format!("[models.{name}]\nbackend = \"endpoint\"\nurl = \"{}\"\nserved-name = \"{served}\"\n", server.base)
    };
    let experiment = format!(
        "name = \"h\"\n{}{}[workload]\nconversations = \"data/chat.jsonl\"\nhistory = \"recorded\"\ncache-isolation = \"none\"\nturns = 3\nmax-tokens = 4\nwarmup-requests = 0\n[matrix]\nmodel = [\"a\", \"b\"]\nseed = [1]\nbatch-size = [2]\n",
        model("a", "ma"),
        model("b", "mb")
    );
    p.write("experiments/h.toml", &experiment);

    // Each model's request bodies without `model`, sorted.
    let bodies = |skip: usize| -> BTreeMap<String, Vec<String>> {
        let mut by_model: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for seen in server.requests().into_iter().skip(skip).filter(|s| s.path == "/v1/chat/completions") {
            let mut body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
            let model = body["model"].as_str().unwrap().to_string();
            let object = body.as_object_mut().unwrap();
            object.remove("model");
            object.remove("cache_salt");
            by_model.entry(model).or_default().push(body.to_string());
        }
        by_model.values_mut().for_each(|v| v.sort());
        by_model
    };
    p.pipeline(&["run", "experiments/h.toml"]).status(0);
    let recorded = bodies(0);
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded["ma"].len(), 6, "2 conversations × 3 turns");
    assert_eq!(recorded["ma"], recorded["mb"], "recorded history: identical messages");
    let last = recorded["ma"].iter().find(|b| b.contains("question 2 of one")).unwrap();
    assert!(last.contains("recorded answer 1 of one") && !last.contains("live answer"), "{last}");
    assert!(last.contains(r#"{"content":"be brief","role":"system"}"#), "the system prompt goes first: {last}");

    let seen = server.requests().len();
    p.write("experiments/h.toml", &experiment.replace("history = \"recorded\"", "history = \"live\""));
    let out = p.pipeline(&["run", "experiments/h.toml"]);
    out.status(0);
    assert!(out.ran().iter().all(|id| !id.starts_with("datagen")), "history is the measure's: {:?}", out.ran());
    let live = bodies(seen);
    assert_ne!(live["ma"], live["mb"], "live history resends each model's own answers");
    assert!(live["mb"].iter().any(|b| b.contains("live answer of mb")));
}

/// The datagen key holds the file's digest and the images of the drawn conversations
/// only: editing an image no cell replays reruns nothing; editing a replayed one
/// reruns its data and measures, and `plan` says why.
#[test]
fn only_the_images_of_drawn_conversations_are_in_the_key() {
    let p = Project::with_base("drawn");
    for k in 0..6 {
        png(&p, &format!("data/img/{k}.png"), k * 40);
    }
    let lines: Vec<String> = (0..6).map(|k| chat_line(&format!("c{k}"), &[&format!("img/{k}.png")])).collect();
    p.write("data/chat.jsonl", &lines.join("\n"));
    let text =
        p.read("experiments/t.toml").replace("questions = [\"What is this?\", \"And now?\"]\n", "conversations = \"data/chat.jsonl\"\n");
    p.write("experiments/t.toml", &text.replace("seed = [1, 2]", "seed = [1]\nbatch-size = [2]"));
    p.pipeline(&["run", "experiments/t.toml"]).status(0);
    let (_, meta) = p.measure_metas().pop().unwrap();
    let drawn: Vec<u64> = meta["dataset"]["conversations"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(drawn.len(), 2);
    let undrawn = (0..6).find(|k| !drawn.contains(k)).unwrap();

    png(&p, &format!("data/img/{undrawn}.png"), 255);
    p.pipeline(&["plan", "experiments/t.toml"]).status(0).stdout_has("0 to run");
    assert!(p.pipeline(&["run", "experiments/t.toml"]).status(0).ran().is_empty());

    png(&p, &format!("data/img/{}.png", drawn[0]), 255);
    p.pipeline(&["plan", "experiments/t.toml"]).status(0).stdout_has("(images changed ");
    let ran = p.pipeline(&["run", "experiments/t.toml"]).status(0).ran();
    assert!(ran.iter().any(|id| id.starts_with("datagen[")), "{ran:?}");
    assert_eq!(ran.iter().filter(|id| id.starts_with("measure[")).count(), 2, "{ran:?}");
}

/// Every bad file from the issue's list: an experiment error naming the file, the line
/// or record, and the fix; never a hang.
#[test]
fn bad_conversation_files_name_the_line_and_the_fix() {
    let p = Project::with_base("bad");
    png(&p, "data/ok.png", 10);
    p.write("data/not-an-image.png", "hello");
    std::fs::write(p.path().join("data/truncated.png"), &std::fs::read(p.path().join("data/ok.png")).unwrap()[..20]).unwrap();
    std::os::unix::fs::symlink("loop-b.png", p.path().join("data/loop-a.png")).unwrap();
    std::os::unix::fs::symlink("loop-a.png", p.path().join("data/loop-b.png")).unwrap();
    std::os::unix::fs::symlink("self.jsonl", p.path().join("data/self.jsonl")).unwrap();
    let good = chat_line("good", &["ok.png"]);
    let user = |content: &str| {
        format!(r#"{{"messages": [{{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "{content}"}}}}]}}]}}"#)
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("a.jsonl", "this is not json".into(), "`data/a.jsonl`: it is neither a JSON array", "see docs/experiment-file.md"),
        ("b.jsonl", format!("{good}\n{{\"foo\": 1}}\n"), "`data/b.jsonl` line 2: has no `messages`", "each line is {\"messages\""),
        ("c.jsonl", format!("{good}\n{{\"messages\": [\n"), "`data/c.jsonl` line 2: not JSON", "each line is one JSON object"),
        (
            "d.jsonl",
            user("missing.png"),
            "`data/d.jsonl` line 1: image `missing.png`: No such file or directory",
            "relative to the conversations file's folder",
        ),
        ("e.jsonl", user("not-an-image.png"), "line 1: image `not-an-image.png` is not an image", "pipeline sends JPEG and PNG"),
        ("f.jsonl", user("truncated.png"), "line 1: image `truncated.png` does not decode", "pipeline sends JPEG and PNG"),
        (
            "g.jsonl",
            r#"{"messages": [{"role": "system", "content": "x"}]}"#.into(),
            "`data/g.jsonl` line 1: has no user message",
            "see docs/experiment-file.md",
        ),
        (
            "h.jsonl",
            user("loop-a.png"),
            "image `loop-a.png`: Too many levels of symbolic links",
            "relative to the conversations file's folder",
        ),
        (
            "self.jsonl",
            String::new(),
            "`data/self.jsonl`: cannot read it: Too many levels of symbolic links",
            "relative to the project root",
        ),
        (
            "i.json",
            r#"[{"id": "x1", "image": "ok.png", "conversations": [{"from": "gpt", "value": "hi"}]}]"#.into(),
            "`data/i.json` record 1 (id `x1`): turn 1: an assistant message before any user message",
            "each record is {\"id\"",
        ),
        (
            "j.json",
            r#"[{"image": "ok.png", "conversations": [{"from": "human", "value": "<image>"}]}, {"conversations": "#.into(),
            "`data/j.json`: not a JSON array of conversations: EOF while parsing",
            "the LLaVA format is one JSON array",
        ),
    ];
    for (name, text, message, hint) in cases {
        if !text.is_empty() {
            p.write(&format!("data/{name}"), &text);
        }
        let base = p.read("experiments/t.toml");
        let edited = base.replace("questions = [\"What is this?\", \"And now?\"]\n", &format!("conversations = \"data/{name}\"\n"));
        p.write("experiments/c.toml", &edited);
        p.pipeline(&["plan", "experiments/c.toml"]).status(2).stderr_has(message).stderr_has(hint);
    }

    // Keys that describe synthetic conversations, and what only a file makes sense of.
    let with_file =
        p.read("experiments/t.toml").replace("questions = [\"What is this?\", \"And now?\"]\n", "conversations = \"data/ok.jsonl\"\n");
    p.write("data/ok.jsonl", &good);
    for (edit, message) in [
        ("turns = 2", "workload.questions: describes synthetic conversations, but `conversations` names a file"),
        ("[matrix]", "matrix.frames: sets images per turn of synthetic conversations"),
        ("turns = 2", "workload.history: unknown value `recent`"),
    ] {
        let text = match message {
            m if m.starts_with("workload.questions") => with_file.replace(edit, "turns = 2\nquestions = [\"x\"]"),
            m if m.starts_with("matrix.frames") => with_file.replace(edit, "[matrix]\nframes = [2]"),
            _ => with_file.replace(edit, "turns = 2\nhistory = \"recent\""),
        };
        p.write("experiments/c.toml", &text);
        p.pipeline(&["plan", "experiments/c.toml"]).status(2).stderr_has(message);
    }
    p.write("experiments/c.toml", &p.read("experiments/t.toml").replace("turns = 2", "turns = 2\nhistory = \"recorded\""));
    p.pipeline(&["plan", "experiments/c.toml"]).status(2).stderr_has("workload.history: only applies to conversations from a file");
    // Recorded history needs the answers it resends; an empty one is none.
    for unanswered in [
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}"#,
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}]}"#,
    ] {
        p.write("data/unanswered.jsonl", unanswered);
        let text = with_file.replace("data/ok.jsonl", "data/unanswered.jsonl").replace("turns = 2", "turns = 2\nhistory = \"recorded\"");
        p.write("experiments/c.toml", &text);
        p.pipeline(&["plan", "experiments/c.toml"])
            .status(2)
            .stderr_has("line 1: turn 1 has no assistant answer")
            .stderr_has("history = \"live\"");
    }
}

/// Open loop over conversations of different lengths: one slot per turn that is sent,
/// so the rate offered is the rate asked (a slot kept for a turn a short conversation
/// does not have would leave a gap).
#[test]
fn open_loop_offers_the_asked_rate_over_conversations_of_different_lengths() {
    use polars::prelude::*;
    let p = Project::with_base("rate");
    png(&p, "data/a.png", 10);
    let lines = [chat_line("short", &["a.png"]), chat_line("long", &["a.png", "a.png", "a.png", "a.png"])];
    p.write("data/chat.jsonl", &lines.join("\n"));
    let text = p
        .read("experiments/t.toml")
        .replace(
            "questions = [\"What is this?\", \"And now?\"]\n",
            "conversations = \"data/chat.jsonl\"\narrival = \"constant\"\nrequest-rate = 20.0\n",
        )
        .replace("turns = 2", "turns = 4")
        .replace("model = [\"a\", \"b\"]\nseed = [1, 2]", "model = [\"a\"]\nseed = [1]\nbatch-size = [2]");
    p.write("experiments/t.toml", &text);
    p.pipeline(&["run", "experiments/t.toml"]).status(0);
    let df = ParquetReader::new(std::fs::File::open(p.path().join("reports/t/requests.parquet")).unwrap()).finish().unwrap();
    let df = df.lazy().filter(col("warmup").not()).sort(["scheduled_ns"], SortMultipleOptions::default()).collect().unwrap();
    let at: Vec<u64> = df.column("scheduled_ns").unwrap().u64().unwrap().into_no_null_iter().collect();
    assert_eq!(at.len(), 5, "1 + 4 turns");
    for w in at.windows(2) {
        let gap_ms = (w[1] - w[0]) as f64 / 1e6;
        assert!((gap_ms - 50.0).abs() < 0.01, "slots 50 ms apart at 20 requests/s, found {gap_ms} ms: {at:?}");
    }
}

/// More conversations than the index holds: refused at the cap, read no further.
#[test]
fn a_file_past_the_conversation_cap_is_refused_at_its_line() {
    let p = Project::with_base("cap");
    let line = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\n";
    let mut text = String::with_capacity(line.len() * 1_000_002);
    for _ in 0..1_000_002 {
        text.push_str(line);
    }
    p.write("data/many.jsonl", &text);
    p.write(
        "experiments/t.toml",
        &p.read("experiments/t.toml").replace("questions = [\"What is this?\", \"And now?\"]\n", "conversations = \"data/many.jsonl\"\n"),
    );
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("`data/many.jsonl` line 1000001: the file holds more than 1000000 conversations");
}
