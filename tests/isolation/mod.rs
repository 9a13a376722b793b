//! Cells do not read each other's server caches, and the server's own `/metrics`
//! agrees with the requests: checked against the simulator, whose prefix cache and
//! counters behave as vLLM's do (`cache_salt`, the reset routes, `/metrics`).

use std::collections::BTreeMap;

use super::{Exp, Project};

/// Every request row of the measure steps, by (batch size, isolation), in the order
/// the measure wrote them (conversation, turn).
pub(super) fn rows_by_cell(p: &Project) -> BTreeMap<(String, String), Vec<BTreeMap<String, String>>> {
    let mut cells: BTreeMap<(String, String), Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for row in super::hardening::rows_under(p, "measure") {
        cells.entry((row["batch_size"].clone(), row["isolation"].clone())).or_default().push(row);
    }
    cells
}

#[test]
fn cells_start_from_clean_caches_and_the_servers_metrics_agree_with_the_requests() {
    let p = Project::new();
    p.write(
        "experiments/i.toml",
        &Exp::new("iso")
            .sim("m", "ttft-base-ms = 1.0, itl-base-ms = 0.5, jitter = 0.0, answer-tokens = 4, prefix-caching = true")
            .served_as("iso-sim")
            .workload("turns", "3")
            .workload("resolution", "\"64x48\"")
            .workload("max-tokens", "4")
            .workload("metrics-interval-s", "0")
            .matrix("seed", "[1]")
            .matrix("batch-size", "[1, 2]")
            .axis("isolation", "[\"reset\", \"salt\", \"restart\", \"none\"]", "workload = \"cache-isolation\"")
            .text(),
    );
    let out = p.pipeline(&["run", "experiments/i.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cells = rows_by_cell(&p);
    let num = |r: &BTreeMap<String, String>, k: &str| r[k].parse::<f64>().unwrap();
    // Conversation 0 of the batch-2 cells sends what the batch-1 cells sent first.
    let first = |iso: &str| num(&cells[&("2".to_string(), iso.to_string())][0], "cached_tokens");
    assert_eq!(first("reset"), 0.0, "reset: the cell's first request is cold");
    assert_eq!(first("salt"), 0.0, "salted: the cell's first request is cold");
    assert_eq!(first("restart"), 0.0, "on a restarted server the cell's first request is cold");
    assert!(first("none") > 0.0, "none: it reads what an earlier cell cached");
    for rows in cells.values() {
        // Within a cell, a conversation's own history is cached.
        assert!(num(&rows[1], "cached_tokens") > 0.0, "{rows:?}");
    }

    let metas: Vec<serde_json::Value> = p.measure_metas().into_iter().map(|(_, meta)| meta).collect();
    assert_eq!(metas.len(), 8);
    for meta in &metas {
        let cell: BTreeMap<String, String> =
            serde_json::from_value::<Vec<(String, String)>>(meta["cell"].clone()).unwrap().into_iter().collect();
        let (batch, iso) = (cell["batch-size"].clone(), cell["isolation"].clone());
        assert_eq!(meta["isolation"]["done"], iso.as_str(), "{}", meta["isolation"]);
        let rows = &cells[&(batch.clone(), iso.clone())];
        let (cached, prompt): (f64, f64) =
            rows.iter().map(|r| (num(r, "cached_tokens"), num(r, "prompt_tokens"))).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let m = &meta["server_metrics"];
        assert_eq!(m["available"], true, "{m}");
        assert_eq!(m["scrapes"], 2, "at the start and the end: {m}");
        assert_eq!(m["prefix_cache_queries"].as_f64(), Some(prompt), "{batch}/{iso}: {m}");
        // Equal up to JSON's float round trip.
        assert!((m["prefix_cache_hit_rate"].as_f64().unwrap() - cached / prompt).abs() < 1e-12, "{batch}/{iso}: {m}");
        assert_eq!(m["mm_cache_hit_rate"], serde_json::Value::Null, "the simulator has no such cache: {m}");
    }
    let metrics = p.all_files().into_iter().filter(|(path, _)| path.ends_with("metrics.csv")).count();
    assert_eq!(metrics, 8, "every cell keeps its scrapes");
}

/// A server without vLLM's reset routes (and without `/metrics`): asked for `reset`
/// explicitly, the step fails and names the fix; by default the cell is salted
/// instead, says so, and the missing `/metrics` is recorded, not fatal.
#[test]
fn a_server_without_reset_routes_is_salted_or_refused_with_the_fix() {
    use super::fake::{self, FakeServer, Reply};
    use super::hardening::{endpoint_model, experiment, stream_of};
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => fake::models("m"),
        "/v1/chat/completions" => Reply::Ok("text/event-stream", stream_of("fine")),
        _ => fake::response("404 Not Found", &[], "{\"detail\":\"Not Found\"}"),
    });
    let p = Project::new();
    let model = endpoint_model("plain", &server.base, "");
    p.write("experiments/a.toml", &experiment("auto", std::slice::from_ref(&model), ""));
    let out = p.pipeline(&["run", "experiments/a.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, meta) = p.measure_metas().pop().unwrap();
    assert_eq!(meta["isolation"]["done"], "salt", "{meta}");
    assert!(meta["isolation"]["notes"][0].as_str().unwrap().contains("refused POST /reset_prefix_cache (HTTP 404"), "{meta}");
    assert!(meta["isolation"]["salt"].as_str().unwrap().starts_with("pipeline-"), "{meta}");
    assert_eq!(meta["server_metrics"], serde_json::json!({"available": false, "reason": "GET /metrics answered HTTP 404"}));

    p.write("experiments/r.toml", &experiment("reset", &[model], "cache-isolation = \"reset\""));
    let out = p.pipeline(&["run", "experiments/r.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cache-isolation = \"reset\", but the server refused POST /reset_prefix_cache (HTTP 404)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("VLLM_SERVER_DEV_MODE=1"), "{}", out.stderr);
}
