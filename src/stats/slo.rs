//! SLO attainment and goodput over request rows, as polars expressions: the one
//! definition the aggregate's summary and a search's probes share.
//!
//! The rows are a cell's measured (non-warm-up) requests with the request table's
//! columns (`error`, `ttft_ms`, `tpot_ms`, `e2e_ms`, `conversation`, `turn`,
//! `sent_ns`, `end_ns`; see docs/results.md).

use polars::prelude::*;

use crate::config::Slo;

/// The seconds from a cell's first request sent to its last answered.
pub fn span_s() -> Expr {
    (col("end_ns").max() - col("sent_ns").min()).cast(DataType::Float64) / lit(1e9)
}

/// `goodput_req_per_s` and `slo_met_pct` over a cell's measured (non-warm-up) rows. A
/// request is good when it succeeded within every threshold of `slo`; a turn counts
/// once however often it was retried (at most one attempt succeeds).
pub fn figures(slo: &Slo) -> [Expr; 2] {
    let within = |c: &str, limit: Option<f64>| limit.map(|l| col(c).lt_eq(lit(l)));
    let mut good = col("error").eq(lit("none"));
    for cond in [within("ttft_ms", slo.ttft_ms), within("e2e_ms", slo.e2e_ms)].into_iter().flatten() {
        good = good.and(cond);
    }
    if let Some(c) = within("tpot_ms", slo.tpot_ms) {
        // TPOT is undefined for a one-token answer; such a request does not fail on it.
        good = good.and(col("tpot_ms").is_null().or(c));
    }
    let turns = (col("conversation").cast(DataType::UInt64) * lit(1u64 << 32) + col("turn").cast(DataType::UInt64)).n_unique();
    [
        (good.clone().sum().cast(DataType::Float64) / span_s()).alias("goodput_req_per_s"),
        (lit(100.0) * good.sum().cast(DataType::Float64) / turns.cast(DataType::Float64)).alias("slo_met_pct"),
    ]
}
