//! Issue 26: the server's own spans joined to every request. On the simulator, whose
//! spans are built from what it really did (`/sim/truth`), the joined breakdown is
//! checked against that truth; the bad-input list (no spans at all, a receiver port
//! that is taken) is run end to end. Malformed, oversized and unknown-trace bodies are
//! unit tests of `src/otlp.rs`, which drive the receiver directly.

use std::collections::BTreeMap;

use super::*;

/// `GET path` from `base` (`http://127.0.0.1:PORT`), the body as JSON.
fn get_json(base: &str, path: &str) -> Value {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap()
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An experiment of one `endpoint` model `e` served by `sim` as `served`, with
/// `extra` keys in its table: three turns of a 64×48 image, seed 1, two in flight.
fn endpoint_experiment(name: &str, sim: &Sim, served: &str, extra: &[String]) -> String {
    let mut lines = vec!["backend = \"endpoint\"".to_string(), format!("url = \"{}\"", sim.base), format!("served-name = \"{served}\"")];
    lines.extend(extra.iter().cloned());
    let mut exp =
        Exp::new(name).workload("turns", "3").workload("resolution", "\"64x48\"").matrix("seed", "[1]").matrix("batch-size", "[2]");
    exp.models.push(("e".into(), lines));
    exp.text()
}

fn number(row: &Row, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("`{column}` is `{}` in {row:?}", row[column]))
}

/// Every request's joined breakdown is what the simulator did, within 1 ms: its
/// spans, sent over OTLP/HTTP to the receiver of an `endpoint` model, carry the trace
/// id of the request's `traceparent`. What is outside the server is non-negative and
/// small on loopback, and a cached rerun measures nothing.
#[test]
fn the_simulators_breakdown_is_its_truth() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let sim = start_sim(&["--served-model-name", "spans-truth", "--prefill-us-per-token", "20", "--otlp-traces-endpoint", &endpoint]);
    let p = Project::new();
    p.write("experiments/t.toml", &endpoint_experiment("spans", &sim, "spans-truth", &[format!("otlp-receiver = \"127.0.0.1:{port}\"")]));
    p.run_ok();

    let truth = get_json(&sim.base, "/sim/truth");
    let truth: BTreeMap<String, &Value> =
        truth.as_array().unwrap().iter().filter_map(|t| Some((t["trace_id"].as_str()?.to_string(), t))).collect();
    let tables = p.requests_tables("measure");
    assert_eq!(tables.len(), 1);
    let rows = &tables[0];
    assert_eq!(rows.len(), 6, "2 conversations × 3 turns");
    for row in rows {
        assert_eq!(row["span_missing"], "", "{row:?}");
        let t = truth.get(&row["trace_id"]).unwrap_or_else(|| panic!("no truth for trace {}", row["trace_id"]));
        let ns = |k: &str| t[k].as_u64().unwrap() as f64;
        let sent: Vec<f64> = t["sent_ns"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as f64).collect();
        let (received, start, first, last) = (ns("received_ns"), ns("prefill_start_ns"), sent[0], sent[sent.len() - 1]);
        let expected = [
            ("server_queue_ms", 0.0),
            ("server_prefill_ms", (first - start) / 1e6),
            ("server_decode_ms", (last - first) / 1e6),
            ("server_ttft_ms", (first - received) / 1e6),
            ("server_e2e_ms", (last - received) / 1e6),
            ("server_preprocess_ms", (start - received) / 1e6),
        ];
        for (column, want) in expected {
            let got = number(row, column);
            assert!((got - want).abs() < 1.0, "{column}: joined {got} ms, the simulator's truth {want} ms");
        }
        let outside = number(row, "outside_server_ms");
        assert!((0.0..50.0).contains(&outside), "outside the server: {outside} ms on loopback");
        let sum: f64 =
            ["server_queue_ms", "server_prefill_ms", "server_decode_ms", "server_preprocess_ms"].iter().map(|c| number(row, c)).sum();
        assert!((sum - number(row, "server_e2e_ms")).abs() < 1e-6);
    }
    // The spans are among the measure's outputs, and meta.json says all joined.
    let (path, meta) = p.measure_metas().pop().unwrap();
    let spans_csv = std::fs::read_to_string(path.with_file_name("spans.csv")).unwrap();
    assert_eq!(csv_rows(&spans_csv).len(), 6);
    assert_eq!((meta["spans"]["sent"].as_u64(), meta["spans"]["joined"].as_u64()), (Some(6), Some(6)), "{meta}");
    assert_eq!(meta["spans"]["counts"]["unknown_trace"], 0);

    let again = p.run_ok();
    assert!(!again.ran().iter().any(|id| id.starts_with("measure")), "a cached rerun measured: {:?}", again.ran());
}

/// A launched simulator traces by default: every request of every cell joins its span,
/// and the report says where the time went, in a chart that reads in Chromium.
#[test]
fn a_launched_simulator_traces() {
    let p = Project::with_base("spans-launched");
    p.run_ok();
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("## Where the time went") && readme.contains("(breakdown.svg)"), "{readme}");
    assert!(readme.contains("dominates the slowest turn") && readme.contains("median outside the server"), "{readme}");
    assert!(!readme.contains("No spans"), "{readme}");
    assert!(p.path().join("reports/t/breakdown.csv").exists() && p.path().join("reports/t/breakdown_per_turn.csv").exists());
    let measure = r#"
  var h = [...d.querySelectorAll('h2')].find(e => e.textContent == 'Where the time went');
  var fig = h; while (fig && fig.tagName != 'FIGURE') fig = fig.nextElementSibling;
  var svg = fig.querySelector('svg'), r = svg.getBoundingClientRect();
  var texts = [...svg.querySelectorAll('text')].map(t => t.textContent.trim());
  return { width: Math.round(r.width), height: Math.round(r.height), bars: svg.querySelectorAll('rect').length,
           legend: ['queue', 'preprocessing', 'prefill', 'decode', 'outside the server'].every(n => texts.includes(n)),
           scroll: d.documentElement.scrollWidth, page: d.documentElement.clientWidth };"#;
    if let Some(m) = super::reports::in_chromium(&p.path().join("reports/t/index.html"), measure) {
        for view in ["wide", "phone"] {
            let v = &m[view];
            let at = |k: &str| v[k].as_i64().unwrap();
            assert!(at("width") > 300 && at("height") > 200 && at("width") <= at("page"), "{view}: the chart's size: {v}");
            // Two curves × two turns × five parts, beside the frame and the legend's keys.
            assert!(at("bars") >= 20 && v["legend"] == true, "{view}: the bars and their legend: {v}");
            assert!(at("scroll") <= at("page"), "{view}: the page scrolls sideways: {v}");
        }
    }
    let tables = p.requests_tables("measure");
    assert_eq!(tables.len(), 4);
    for row in tables.iter().flatten() {
        assert_eq!((row["span_missing"].as_str(), row["trace_id"].len()), ("", 32), "{row:?}");
        assert!(number(row, "server_ttft_ms") <= number(row, "ttft_ms"), "{row:?}");
    }
    for (_, meta) in p.measure_metas() {
        let command = meta["server"]["command"].to_string();
        assert!(command.contains("--otlp-traces-endpoint"), "{command}");
    }
}

/// A server that sends no spans: every row says why, and so does meta.json, whether
/// the model does not trace or its server was not told where to send them.
#[test]
fn a_server_without_spans_is_said() {
    let p = Project::with_base("spans-off");
    p.edit("backend = \"sim\"\nserved-name = \"a-spans-off\"", "backend = \"sim\"\nserved-name = \"a-spans-off\"\ntraces = false");
    p.run_ok();
    let metas = p.measure_metas();
    let off: Vec<&Value> = metas.iter().map(|(_, m)| m).filter(|m| m["cell"][0][1] == "a").collect();
    assert_eq!(off.len(), 2);
    for meta in off {
        assert_eq!(meta["spans"], serde_json::json!({"available": false, "reason": "server does not trace"}));
        assert!(!meta["server"]["command"].to_string().contains("otlp"), "{}", meta["server"]["command"]);
    }
    let rows: Vec<Row> = p.requests_tables("measure").into_iter().flatten().filter(|r| r["model"] == "a").collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["span_missing"] == "server does not trace" && r["server_e2e_ms"].is_empty()));
    p.pipeline(&["report", "experiments/t.toml"]).status(0);
    let readme = p.read("reports/t/README.md");
    assert!(readme.contains("2 of 4 cell(s) have no spans (server does not trace)"), "{readme}");
    // No model traces: said once, with the flags to add, and no chart.
    p.edit("backend = \"sim\"\nserved-name = \"b-spans-off\"", "backend = \"sim\"\nserved-name = \"b-spans-off\"\ntraces = false");
    p.run_ok();
    let readme = p.read("reports/t/README.md");
    assert_eq!(readme.matches("No spans: tracing not enabled on the server").count(), 1, "{readme}");
    assert!(readme.contains("--otlp-traces-endpoint") && !readme.contains("breakdown.svg"), "{readme}");

    // Told nothing, the server sends nothing: each request waited for in vain, briefly.
    let sim = start_sim(&["--served-model-name", "spans-silent"]);
    let q = Project::new();
    let port = free_port();
    q.write("experiments/t.toml", &endpoint_experiment("silent", &sim, "spans-silent", &[format!("otlp-receiver = \"127.0.0.1:{port}\"")]));
    q.run_ok();
    let rows: Vec<Row> = q.requests_tables("measure").into_iter().flatten().collect();
    assert!(rows.iter().all(|r| r["span_missing"] == "no span received"), "{rows:?}");
    let (_, meta) = q.measure_metas().pop().unwrap();
    assert_eq!(meta["spans"]["joined"], 0);
}

/// The receiver's fixed address is taken: it listens elsewhere, says so, and the
/// cell is measured all the same (its spans, sent to the taken port, never come).
#[test]
fn a_taken_receiver_port_is_recorded() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let sim = start_sim(&["--served-model-name", "spans-taken"]);
    let p = Project::new();
    p.write("experiments/t.toml", &endpoint_experiment("taken", &sim, "spans-taken", &[format!("otlp-receiver = \"127.0.0.1:{port}\"")]));
    p.pipeline(&["run", "experiments/t.toml"]).status(0).stderr_has("warning: `").stderr_has(&format!("127.0.0.1:{port} was taken"));
    let (_, meta) = p.measure_metas().pop().unwrap();
    let notes = meta["spans"]["notes"].to_string();
    assert!(notes.contains(&format!("127.0.0.1:{port} was taken")), "{notes}");
    drop(taken);
}

/// Bad keys are refused with where and what to do.
#[test]
fn tracing_keys_are_checked() {
    let p = Project::new();
    let text = Exp::new("bad")
        .sim("s", QUICK_SIM)
        .table("")
        .text()
        .replace("backend = \"sim\"", "backend = \"sim\"\notlp-receiver = \"localhost:x\"");
    p.write("experiments/t.toml", &text);
    p.pipeline(&["plan", "experiments/t.toml"]).status(2).stderr_has("models.s.otlp-receiver").stderr_has("is not an IP address and port");
    // Two endpoint models cannot share one receiver address.
    let two = "name = \"two\"\n[models.a]\nbackend = \"endpoint\"\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"a\"\notlp-receiver = \"127.0.0.1:4318\"\n\
               [models.b]\nbackend = \"endpoint\"\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"b\"\notlp-receiver = \"127.0.0.1:4318\"\n\
               [matrix]\nmodel = [\"a\", \"b\"]\n";
    p.write("experiments/t.toml", two);
    p.pipeline(&["plan", "experiments/t.toml"])
        .status(2)
        .stderr_has("models.b.otlp-receiver")
        .stderr_has("`127.0.0.1:4318` is already the otlp-receiver of `models.a`");
}

/// A hosted API gets no `traceparent` unless the model asks (`send-traceparent =
/// true`); then each request carries its own, as recorded in `trace_id`. Either way
/// no span can come: the rows say the server does not trace.
#[test]
fn a_hosted_api_gets_a_traceparent_only_when_asked() {
    use super::fake::{FakeServer, Reply};
    let api = FakeServer::start(|_| Reply::Ok("text/event-stream", super::hardening::stream_of("an answer")));
    let p = Project::new();
    let model = |extra: &str| {
        format!(
            "[models.o]\nbackend = \"openai\"\nurl = \"{}\"\nserved-name = \"gpt\"\napi-key-env = \"PIPELINE_TEST_SPANS_KEY\"\n{extra}\n",
            api.base
        )
    };
    let env = [("PIPELINE_TEST_SPANS_KEY", "k-test")];
    p.write("experiments/t.toml", &super::hardening::experiment("hosted", &[model("")], ""));
    assert_eq!(p.pipeline_env(&["run", "experiments/t.toml"], &env).code, 0);
    let chats: Vec<_> = api.requests().into_iter().filter(|s| s.path.ends_with("/chat/completions")).collect();
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|s| s.header("traceparent").is_none()), "{chats:?}");
    let rows: Vec<Row> = p.requests_tables("measure").into_iter().flatten().collect();
    assert!(rows.iter().all(|r| r["trace_id"].is_empty() && r["span_missing"] == "server does not trace"), "{rows:?}");

    p.write("experiments/t.toml", &super::hardening::experiment("hosted", &[model("send-traceparent = true")], ""));
    assert_eq!(p.pipeline_env(&["run", "experiments/t.toml"], &env).code, 0);
    let sent: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|s| s.path.ends_with("/chat/completions"))
        .filter_map(|s| s.header("traceparent").map(String::from))
        .collect();
    assert_eq!(sent.len(), 2, "a traceparent per request");
    let rows = p.requests_tables("measure").pop().unwrap();
    for r in &rows {
        assert!(sent.iter().any(|h| h.split('-').nth(1) == Some(r["trace_id"].as_str())), "{} not sent: {sent:?}", r["trace_id"]);
    }
}
