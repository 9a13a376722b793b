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

#[cfg(test)]
mod tests {
    use super::*;

    fn figures_of(slo: &Slo, df: DataFrame) -> (f64, f64) {
        let out = df.lazy().select(figures(slo)).collect().unwrap();
        let get = |c: &str| out.column(c).unwrap().f64().unwrap().get(0).unwrap();
        (get("goodput_req_per_s"), get("slo_met_pct"))
    }

    #[test]
    fn a_turn_is_good_once_within_every_threshold() {
        let slo = Slo { ttft_ms: Some(30.0), tpot_ms: Some(5.0), e2e_ms: None, attainment_pct: 90.0, quality: None };
        // Conversation 0: turn 1 good; turn 2 fails once, then succeeds with a
        // one-token answer (no TPOT, so not failed on it). Conversation 1: too slow a
        // first token. Three turns, two good, over 4 s.
        let df = df!(
            "conversation" => [0u32, 0, 0, 1],
            "turn" => [1u32, 2, 2, 1],
            "error" => ["none", "timeout", "none", "none"],
            "ttft_ms" => [Some(10.0), None, Some(20.0), Some(40.0)],
            "tpot_ms" => [Some(2.0), None, None, Some(1.0)],
            "e2e_ms" => [Some(100.0), None, Some(50.0), Some(100.0)],
            "sent_ns" => [0i64, 1_000_000_000, 2_000_000_000, 0],
            "end_ns" => [1_000_000_000i64, 2_000_000_000, 3_000_000_000, 4_000_000_000],
        )
        .unwrap();
        let (goodput, met) = figures_of(&slo, df.clone());
        assert_eq!(goodput, 2.0 / 4.0);
        assert_eq!(met, 100.0 * 2.0 / 3.0);
        // Without a TTFT threshold the slow first token is good too; an end-to-end
        // threshold of 60 ms then fails all but the retried turn.
        let (_, met) = figures_of(&Slo { ttft_ms: None, ..slo.clone() }, df.clone());
        assert_eq!(met, 100.0);
        let (_, met) = figures_of(&Slo { ttft_ms: None, tpot_ms: None, e2e_ms: Some(60.0), ..slo }, df);
        assert_eq!(met, 100.0 / 3.0);
    }
}
