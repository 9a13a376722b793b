//! The server's own account of each request of a cell: its `llm_request` span,
//! collected from the server's OTLP receiver at the cell's end and joined to the
//! request rows by trace id (`server_queue_ms`, `server_prefill_ms`, …), with the
//! spans themselves written as `spans.parquet` and what the receiver saw in
//! `meta.json`'s `spans`.
//!
//! The decomposition is defined here, once: the server's end-to-end time is queue +
//! prefill + decode + preprocessing, where preprocessing is what is left (in vLLM
//! 0.32 a request's start is taken when rendering begins, so it is rendering the
//! prompt and decoding and processing its images), and `outside_server_ms` is the
//! client's time to first token less the server's (the wire, HTTP, JSON and base64
//! on both sides, SSE parsing).

use std::path::Path;

use anyhow::Result;

use super::{Endpoint, Record};
use crate::client::ErrorClass;
use crate::otlp::ServerSpan;
use crate::records::{self, Available, RequestRow, SpanRow, Spans, StartupSpan};

/// Why a row has no span.
pub const NO_SPAN: &str = "no span received";
/// Why no row has one.
pub const NOT_TRACED: &str = "server does not trace";

/// One request's span, or why it has none.
pub enum Joined {
    Span(ServerSpan),
    Missing(&'static str),
}

impl Joined {
    /// `row` with the server's columns filled from the span.
    pub fn fill(&self, mut row: RequestRow) -> RequestRow {
        let span = match self {
            Joined::Span(span) => span,
            Joined::Missing(why) => {
                row.span_missing = Some(why.to_string());
                return row;
            }
        };
        let ms = |s: Option<f64>| s.map(|s| s * 1e3);
        row.server_queue_ms = ms(span.queue_s);
        row.server_prefill_ms = ms(span.prefill_s);
        row.server_decode_ms = ms(span.decode_s);
        row.server_ttft_ms = ms(span.ttft_s);
        row.server_e2e_ms = ms(span.e2e_s);
        row.server_preprocess_ms = match (row.server_e2e_ms, row.server_queue_ms, row.server_prefill_ms, row.server_decode_ms) {
            // Parts that add up to more than the whole (beyond rounding) are not vLLM's
            // arithmetic: no preprocessing is made up from them.
            (Some(e2e), Some(queue), Some(prefill), Some(decode)) => Some(e2e - queue - prefill - decode).filter(|p| *p >= -1.0),
            _ => None,
        };
        row.outside_server_ms = row.ttft_ms.zip(row.server_ttft_ms).map(|(client, server)| client - server);
        row
    }
}

/// Collect the spans of `records` from the endpoint's receiver (waiting a bounded
/// time for those of the answered requests), write them to `out` as `spans`, and say
/// for each record what it joined, in order, and what `meta.json` records.
pub(super) async fn join(endpoint: &Endpoint, records: &[Record], out: &Path) -> Result<(Vec<Joined>, Available<Spans>)> {
    let Some(receiver) = &endpoint.spans else {
        return Ok((records.iter().map(|_| Joined::Missing(NOT_TRACED)).collect(), Available::no(NOT_TRACED)));
    };
    let ids: Vec<_> = records.iter().filter_map(|r| r.ex.trace_id).collect();
    let awaited: Vec<_> = records.iter().filter(|r| r.ex.error == ErrorClass::None).filter_map(|r| r.ex.trace_id).collect();
    let mut collected = receiver.collect(&ids, &awaited).await;
    let joined: Vec<Joined> = records
        .iter()
        .map(|r| match r.ex.trace_id {
            None => Joined::Missing(NOT_TRACED),
            Some(id) => match collected.spans.remove(&id) {
                Some(span) => Joined::Span(span),
                None => Joined::Missing(NO_SPAN),
            },
        })
        .collect();
    let rows: Vec<SpanRow> = joined
        .iter()
        .filter_map(|j| match j {
            Joined::Span(s) => Some(SpanRow::of(s)),
            Joined::Missing(_) => None,
        })
        .collect();
    records::write_spans(&rows, out)?;
    let startup = collected
        .startup
        .iter()
        .map(|s| StartupSpan { name: s.name.clone(), ms: s.end_unix_ns.saturating_sub(s.start_unix_ns) as f64 / 1e6 })
        .collect();
    let spans = Spans {
        receiver: receiver.url(),
        sent: ids.len(),
        joined: rows.len(),
        waited_ms: collected.waited.as_secs_f64() * 1e3,
        counts: collected.counts,
        startup,
        notes: receiver.note.iter().cloned().collect(),
    };
    Ok((joined, Available::Yes(spans)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The components add up to the server's end-to-end time, and what is outside the
    /// server is the client's TTFT less the server's, in ms from the span's seconds.
    #[test]
    fn a_span_decomposes_the_request() {
        let span = ServerSpan {
            queue_s: Some(0.002),
            prefill_s: Some(0.5),
            decode_s: Some(1.0),
            ttft_s: Some(0.55),
            e2e_s: Some(1.6),
            ..ServerSpan::default()
        };
        let row = Joined::Span(span).fill(RequestRow { ttft_ms: Some(556.0), ..RequestRow::default() });
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(row.server_queue_ms, 2.0) && close(row.server_prefill_ms, 500.0) && close(row.server_decode_ms, 1000.0));
        assert!(close(row.server_preprocess_ms, 98.0), "{:?}", row.server_preprocess_ms);
        assert!(close(row.outside_server_ms, 6.0), "{:?}", row.outside_server_ms);
        assert_eq!(row.span_missing, None);
        let missing = Joined::Missing(NO_SPAN).fill(RequestRow::default());
        assert_eq!((missing.span_missing.as_deref(), missing.server_e2e_ms), (Some(NO_SPAN), None));
    }
}
