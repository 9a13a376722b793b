//! The server's own spans: a W3C trace context sent with every request, and an OTLP
//! receiver for what the server says it did with it.
//!
//! Every request to a server that accepts one carries `traceparent:
//! 00-<trace id>-<span id>-01` with a fresh random trace id ([`TraceId`]), recorded
//! in its row as `trace_id`. vLLM (and the simulator) then export one `llm_request`
//! span per request, carrying that trace id, to the [`Receiver`]: OTLP over HTTP with
//! protobuf bodies (`POST /v1/traces`), decoded with `opentelemetry-proto`'s generated
//! types and prost. A measure [`Receiver::expect`]s each trace id before it sends the
//! request and [`Receiver::collect`]s the spans at the cell's end, waiting a bounded
//! time ([`SPAN_WAIT`]) for the last batch.
//!
//! What a server sends is untrusted: a body is read up to [`MAX_BODY`] bytes, a batch
//! holds at most [`MAX_SPANS_PER_BODY`] spans and the receiver keeps at most
//! [`MAX_SPANS`]; anything malformed or oversized is answered 400 and counted, never a
//! crash. A request span whose trace id no request carried is ignored and counted; one
//! that comes after its cell was collected is counted as late. Spans that belong to
//! no request (vLLM's start-up: `Overall Loading`, `Allocate KV cache`, …) are kept,
//! at most [`MAX_STARTUP_SPANS`], for the `meta.json` of the measures the server
//! served.
//!
//! Invariants: a trace id is never reused within a process (a counter is part of what
//! is hashed); this module never panics on what a server sends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::untrusted::escaped;

/// The span vLLM records per request; the simulator names its own the same.
pub const REQUEST_SPAN: &str = "llm_request";
/// The route OTLP/HTTP exporters post traces to.
pub const ROUTE: &str = "/v1/traces";
/// The largest OTLP body read: vLLM's batches (512 spans at most, by the default
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`) are a few hundred kB.
pub const MAX_BODY: usize = 16 << 20;
/// Spans one body may hold; a larger batch is refused whole.
pub const MAX_SPANS_PER_BODY: usize = 10_000;
/// Attributes, events and links one body's spans may hold together (vLLM's request
/// span has about 15 attributes): counted on the wire before anything is decoded, so
/// a small body of millions of empty spans or attributes costs no memory.
pub const MAX_ITEMS_PER_BODY: usize = 200_000;
/// The longest latency read from a span, in seconds (a day): anything longer is not a
/// request's, and in milliseconds it stays a finite number.
pub const MAX_LATENCY_S: f64 = 86_400.0;
/// Request spans one receiver keeps (a server's whole use); past it they are counted.
pub const MAX_SPANS: usize = 1_000_000;
/// Spans with no request (start-up) one receiver keeps.
pub const MAX_STARTUP_SPANS: usize = 200;
/// The longest a cell waits at its end for the spans of its requests: vLLM exports a
/// batch every `OTEL_BSP_SCHEDULE_DELAY` (100 ms as `pipeline` launches it), so the
/// wait is normally a fraction of a second; a server that stopped tracing costs this.
pub const SPAN_WAIT: Duration = Duration::from_secs(3);
/// The export delay launched servers are given (`OTEL_BSP_SCHEDULE_DELAY`, ms).
pub const EXPORT_DELAY_MS: u64 = 100;
/// Characters of a span's name and request id kept.
const TEXT_CHARS: usize = 200;

use std::sync::atomic::{AtomicU64, Ordering};

/// A W3C trace id: 16 random bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// Trace ids made by this process; hashed into each so no two are alike.
static MINTED: AtomicU64 = AtomicU64::new(0);

impl TraceId {
    /// A new trace id: blake3 of the process, the clock and a counter. Not secret,
    /// only unique (W3C asks for randomness so that ids do not collide across
    /// processes and machines, which the process id and clock give).
    pub fn random() -> TraceId {
        let n = MINTED.fetch_add(1, Ordering::Relaxed);
        let mut hasher = blake3::Hasher::new_derive_key("pipeline traceparent v1");
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&crate::clock::monotonic_ns().to_le_bytes());
        hasher.update(&std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos().to_le_bytes());
        hasher.update(&n.to_le_bytes());
        let bytes = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes.as_bytes()[..16]);
        // All zero is the invalid trace id; a hash is never that in practice, but
        // the header must not be invalid even then.
        if id == [0; 16] {
            id[15] = 1;
        }
        TraceId(id)
    }

    /// The id as 32 lowercase hex digits, as in `traceparent` and the `trace_id` column.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `traceparent` header of a request under this trace: version 00, a parent
    /// span id derived from the trace id (never zero), sampled.
    pub fn traceparent(&self) -> String {
        let mut span = [0u8; 8];
        span.copy_from_slice(&blake3::hash(&self.0).as_bytes()[..8]);
        if span == [0; 8] {
            span[7] = 1;
        }
        let span: String = span.iter().map(|b| format!("{b:02x}")).collect();
        format!("00-{}-{span}-01", self.hex())
    }

    /// A trace id from a span's raw bytes (16 of them, else none).
    pub fn from_bytes(bytes: &[u8]) -> Option<TraceId> {
        Some(TraceId(bytes.try_into().ok()?))
    }
}

/// One span as received, its times and the latency attributes vLLM gives an
/// `llm_request` span, still in the server's units (seconds), converted to ms once,
/// when written ([`crate::records::SpanRow`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSpan {
    pub trace_id: Option<TraceId>,
    pub name: String,
    /// Wall-clock start and end, as the server's clock says (ns since the epoch).
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// `gen_ai.request.id`.
    pub request_id: Option<String>,
    /// `gen_ai.latency.time_in_queue`, s.
    pub queue_s: Option<f64>,
    /// `gen_ai.latency.time_in_model_prefill`, s.
    pub prefill_s: Option<f64>,
    /// `gen_ai.latency.time_in_model_decode`, s.
    pub decode_s: Option<f64>,
    /// `gen_ai.latency.time_in_model_inference`, s.
    pub inference_s: Option<f64>,
    /// `gen_ai.latency.time_to_first_token`, s.
    pub ttft_s: Option<f64>,
    /// `gen_ai.latency.e2e`, s.
    pub e2e_s: Option<f64>,
    /// `gen_ai.usage.prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `gen_ai.usage.completion_tokens`.
    pub completion_tokens: Option<u64>,
}

/// The attribute names of an `llm_request` span (vLLM 0.32's).
pub mod attr {
    pub const QUEUE: &str = "gen_ai.latency.time_in_queue";
    pub const PREFILL: &str = "gen_ai.latency.time_in_model_prefill";
    pub const DECODE: &str = "gen_ai.latency.time_in_model_decode";
    pub const INFERENCE: &str = "gen_ai.latency.time_in_model_inference";
    pub const TTFT: &str = "gen_ai.latency.time_to_first_token";
    pub const E2E: &str = "gen_ai.latency.e2e";
    pub const PROMPT_TOKENS: &str = "gen_ai.usage.prompt_tokens";
    pub const COMPLETION_TOKENS: &str = "gen_ai.usage.completion_tokens";
    pub const REQUEST_ID: &str = "gen_ai.request.id";
}

/// What went wrong with what servers sent, counted over a receiver's life; a cell
/// records its share ([`Receiver::collect`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// OTLP bodies accepted.
    pub batches: u64,
    /// Bodies refused with 400: not OTLP protobuf, or not `POST /v1/traces`.
    pub malformed: u64,
    /// Bodies refused with 400 for their size or their number of spans.
    pub oversized: u64,
    /// Request spans whose trace id no request carried: ignored.
    pub unknown_trace: u64,
    /// Request spans that came after their cell had collected its spans.
    pub late: u64,
    /// Spans dropped because the receiver held its most.
    pub over_cap: u64,
    /// Request spans for a trace id that already had one: the first is kept.
    #[serde(default)]
    pub duplicate: u64,
}

impl Counts {
    fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            batches: self.batches - earlier.batches,
            malformed: self.malformed - earlier.malformed,
            oversized: self.oversized - earlier.oversized,
            unknown_trace: self.unknown_trace - earlier.unknown_trace,
            late: self.late - earlier.late,
            over_cap: self.over_cap - earlier.over_cap,
            duplicate: self.duplicate - earlier.duplicate,
        }
    }
}

#[derive(Default)]
struct State {
    /// Trace ids sent and not yet collected.
    expected: HashSet<TraceId>,
    /// Trace ids whose cell has collected its spans.
    closed: HashSet<TraceId>,
    /// Request spans received for expected ids.
    spans: HashMap<TraceId, ServerSpan>,
    /// Spans with no request, in arrival order.
    startup: Vec<ServerSpan>,
    counts: Counts,
    /// `counts` when the last cell collected.
    collected: Counts,
}

/// What a cell collects at its end.
#[derive(Debug, Default)]
pub struct Collected {
    /// The spans of the cell's requests, by trace id.
    pub spans: BTreeMap<TraceId, ServerSpan>,
    /// Spans that belong to no request, since the server started.
    pub startup: Vec<ServerSpan>,
    /// What went wrong since the previous cell collected.
    pub counts: Counts,
    /// How long the cell waited for its last spans.
    pub waited: Duration,
}

/// An OTLP/HTTP receiver on its own task, for as long as a server is in use; dropped,
/// it stops listening.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    /// Said once: the address asked for was taken, and another was used.
    pub note: Option<String>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listen at `at` (an `endpoint` server's `otlp-receiver`), or on a free port of
    /// 127.0.0.1. When `at` is taken, on a free port of the same address instead,
    /// with a note saying so.
    pub async fn start(at: Option<SocketAddr>) -> std::io::Result<Receiver> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listener, note) = match at {
            None => (tokio::net::TcpListener::bind(loopback).await?, None),
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => (l, None),
                Err(e) => {
                    let l = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?;
                    let now = l.local_addr()?;
                    let note = format!(
                        "otlp-receiver {addr} was taken ({e}); listened on {now} instead, where the server does not send its spans unless told"
                    );
                    (l, Some(note))
                }
            },
        };
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Receiver { addr, state, task, note })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a server exports to: `http://ADDR/v1/traces`.
    pub fn url(&self) -> String {
        format!("http://{}{ROUTE}", self.addr)
    }

    /// A request carrying `id` is about to go out: its span is to be kept.
    pub fn expect(&self, id: TraceId) {
        self.lock().expected.insert(id);
    }

    /// The spans of `ids` (the cell's requests), waiting until those of `awaited` (its
    /// answered requests) are all in, or [`SPAN_WAIT`] has passed. Every id of `ids`
    /// is then closed: a span for it that comes later is counted as late.
    pub async fn collect(&self, ids: &[TraceId], awaited: &[TraceId]) -> Collected {
        let start = std::time::Instant::now();
        while start.elapsed() < SPAN_WAIT {
            if awaited.iter().all(|id| self.lock().spans.contains_key(id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = start.elapsed();
        let mut state = self.lock();
        let mut spans = BTreeMap::new();
        for id in ids {
            state.expected.remove(id);
            state.closed.insert(*id);
            if let Some(span) = state.spans.remove(id) {
                spans.insert(*id, span);
            }
        }
        let counts = state.counts.since(&state.collected);
        state.collected = state.counts;
        Collected { spans, startup: state.startup.clone(), counts, waited }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    let kind = if status == StatusCode::OK { "application/x-protobuf" } else { "text/plain" };
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(kind));
    r
}

/// Why a body was refused.
enum Refused {
    Malformed(&'static str),
    Oversized(&'static str),
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let outcome = receive(req).await;
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match outcome {
        Ok(spans) => {
            state.counts.batches += 1;
            for span in spans {
                file(&mut state, span);
            }
            // An empty ExportTraceServiceResponse: no partial success to report.
            reply(StatusCode::OK, "")
        }
        Err(Refused::Malformed(why)) => {
            state.counts.malformed += 1;
            reply(StatusCode::BAD_REQUEST, why)
        }
        Err(Refused::Oversized(why)) => {
            state.counts.oversized += 1;
            reply(StatusCode::BAD_REQUEST, why)
        }
    })
}

/// The spans of one OTLP body, or why it is refused.
async fn receive(req: Request<Incoming>) -> Result<Vec<ServerSpan>, Refused> {
    if req.method() != Method::POST || req.uri().path() != ROUTE {
        return Err(Refused::Malformed("only POST /v1/traces is served"));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    if header("content-encoding").is_some_and(|e| e != "identity") {
        return Err(Refused::Malformed("compressed bodies are not accepted; export without compression"));
    }
    if header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(Refused::Malformed("OTLP/JSON is not accepted; export with http/protobuf"));
    }
    let declared = header("content-length").and_then(|n| n.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Refused::Oversized("body too large"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(Refused::Oversized("body too large")),
        Err(_) => return Err(Refused::Malformed("the body broke off")),
    };
    let (spans, items) = census(&body).ok_or(Refused::Malformed("not an OTLP ExportTraceServiceRequest"))?;
    if spans > MAX_SPANS_PER_BODY || items > MAX_ITEMS_PER_BODY {
        return Err(Refused::Oversized("too many spans, attributes, events or links in one body"));
    }
    // Bounded by the census; decoding ten thousand spans takes milliseconds.
    let export = ExportTraceServiceRequest::decode(body).map_err(|_| Refused::Malformed("not an OTLP ExportTraceServiceRequest"))?;
    Ok(export.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans).map(server_span).collect())
}

/// How many spans, and attributes, events and links among them, an OTLP body holds,
/// read from the protobuf wire format without decoding it (`None`: not protobuf).
/// ExportTraceServiceRequest: resource_spans = 1; ResourceSpans: scope_spans = 2;
/// ScopeSpans: spans = 2; Span: attributes = 9, events = 11, links = 13.
fn census(body: &[u8]) -> Option<(usize, usize)> {
    let (mut spans, mut items) = (0, 0);
    for_fields(body, |field, resource| {
        if field != 1 {
            return Some(());
        }
        for_fields(resource, |field, scope| {
            if field != 2 {
                return Some(());
            }
            for_fields(scope, |field, span| {
                if field != 2 {
                    return Some(());
                }
                spans += 1;
                for_fields(span, |field, _| {
                    items += usize::from(matches!(field, 9 | 11 | 13));
                    Some(())
                })
            })
        })
    })?;
    Some((spans, items))
}

/// Call `f` with each length-delimited field of the protobuf message `buf` (its number
/// and bytes); skip the others. `None` when `buf` is not well-formed protobuf.
fn for_fields(mut buf: &[u8], mut f: impl FnMut(u64, &[u8]) -> Option<()>) -> Option<()> {
    use prost::encoding::decode_varint;
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok()?;
        let (field, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => {
                decode_varint(&mut buf).ok()?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let payload = buf.get(..len)?;
                f(field, payload)?;
                len
            }
            _ => return None,
        };
        buf = buf.get(skip..)?;
    }
    Some(())
}

/// Keep `span` where it belongs, or count why not. A span of a request's trace that
/// is not the request's own (an HTTP server span, say) is neither the request's nor
/// start-up: it is ignored.
fn file(state: &mut State, span: ServerSpan) {
    let known = |id: &TraceId| state.expected.contains(id) || state.closed.contains(id);
    if span.name != REQUEST_SPAN && span.trace_id.as_ref().is_some_and(known) {
        return;
    }
    let Some(id) = span.trace_id.filter(|_| span.name == REQUEST_SPAN) else {
        match state.startup.len() < MAX_STARTUP_SPANS {
            true => state.startup.push(span),
            false => state.counts.over_cap += 1,
        }
        return;
    };
    if state.expected.contains(&id) {
        if state.spans.contains_key(&id) {
            state.counts.duplicate += 1;
            return;
        }
        match state.spans.len() < MAX_SPANS {
            true => {
                state.spans.insert(id, span);
            }
            false => state.counts.over_cap += 1,
        }
    } else if state.closed.contains(&id) {
        state.counts.late += 1;
    } else {
        state.counts.unknown_trace += 1;
    }
}

/// A span's times and the attributes we read (others are ignored). A latency that is
/// not a number from 0 to a day is left out, as is a count that is negative.
fn server_span(span: opentelemetry_proto::tonic::trace::v1::Span) -> ServerSpan {
    let mut out = ServerSpan {
        trace_id: TraceId::from_bytes(&span.trace_id).filter(|id| id.0 != [0; 16]),
        name: escaped(&span.name, TEXT_CHARS),
        start_unix_ns: span.start_time_unix_nano,
        end_unix_ns: span.end_time_unix_nano,
        ..ServerSpan::default()
    };
    for KeyValue { key, value, .. } in &span.attributes {
        let value = value.as_ref().and_then(|v| v.value.as_ref());
        let seconds = || number(value).filter(|s| s.is_finite() && (0.0..=MAX_LATENCY_S).contains(s));
        let count = || number(value).filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u64);
        match key.as_str() {
            attr::QUEUE => out.queue_s = seconds(),
            attr::PREFILL => out.prefill_s = seconds(),
            attr::DECODE => out.decode_s = seconds(),
            attr::INFERENCE => out.inference_s = seconds(),
            attr::TTFT => out.ttft_s = seconds(),
            attr::E2E => out.e2e_s = seconds(),
            attr::PROMPT_TOKENS => out.prompt_tokens = count(),
            attr::COMPLETION_TOKENS => out.completion_tokens = count(),
            attr::REQUEST_ID => {
                if let Some(any_value::Value::StringValue(s)) = value {
                    out.request_id = Some(escaped(s, TEXT_CHARS));
                }
            }
            _ => {}
        }
    }
    out
}

/// A number attribute as a double (vLLM sends latencies as doubles and counts as ints).
fn number(value: Option<&any_value::Value>) -> Option<f64> {
    match value? {
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::IntValue(i) => Some(*i as f64),
        _ => None,
    }
}

/// An OTLP body holding `spans`, as a server exports them (the simulator's, and
/// tests'): one resource, one scope, every attribute that is set.
pub fn encode(spans: &[ServerSpan]) -> Vec<u8> {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let double = |key: &str, v: Option<f64>| {
        v.map(|v| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(v)) }),
            ..Default::default()
        })
    };
    let int = |key: &str, v: Option<u64>| {
        v.map(|v| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(v as i64)) }),
            ..Default::default()
        })
    };
    let spans = spans
        .iter()
        .map(|s| {
            let mut attributes: Vec<KeyValue> = [
                double(attr::QUEUE, s.queue_s),
                double(attr::PREFILL, s.prefill_s),
                double(attr::DECODE, s.decode_s),
                double(attr::INFERENCE, s.inference_s),
                double(attr::TTFT, s.ttft_s),
                double(attr::E2E, s.e2e_s),
                int(attr::PROMPT_TOKENS, s.prompt_tokens),
                int(attr::COMPLETION_TOKENS, s.completion_tokens),
            ]
            .into_iter()
            .flatten()
            .collect();
            if let Some(id) = &s.request_id {
                attributes.push(KeyValue {
                    key: attr::REQUEST_ID.into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(id.clone())) }),
                    ..Default::default()
                });
            }
            let trace_id = s.trace_id.map(|t| t.0.to_vec()).unwrap_or_default();
            let span_id = blake3::hash(&trace_id).as_bytes()[8..16].to_vec();
            Span {
                trace_id,
                span_id,
                name: s.name.clone(),
                start_time_unix_nano: s.start_unix_ns,
                end_time_unix_nano: s.end_unix_ns,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    let export = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    };
    export.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_well_formed_and_ids_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert_ne!(a, b);
        let header = a.traceparent();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", a.hex().as_str(), "01"));
        assert_eq!(parts[2].len(), 16);
        assert!(header.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{header}");
        assert_eq!(TraceId::from_bytes(&a.0), Some(a));
        assert_eq!(TraceId::from_bytes(&a.0[..8]), None);
    }

    fn request_span(id: TraceId) -> ServerSpan {
        ServerSpan {
            trace_id: Some(id),
            name: REQUEST_SPAN.into(),
            start_unix_ns: 1,
            end_unix_ns: 2,
            request_id: Some("r".into()),
            queue_s: Some(0.001),
            prefill_s: Some(0.25),
            decode_s: Some(0.5),
            inference_s: Some(0.75),
            ttft_s: Some(0.3),
            e2e_s: Some(0.8),
            prompt_tokens: Some(100),
            completion_tokens: Some(8),
        }
    }

    async fn post(receiver: &Receiver, body: Vec<u8>, content_type: &str) -> u16 {
        let client = crate::client::builder().build().unwrap();
        let resp = client.post(receiver.url()).header("content-type", content_type).body(body).send().await.unwrap();
        resp.status().as_u16()
    }

    /// What vLLM sends is read back as sent; the span of an id no request carried,
    /// and one that comes after its cell collected, are counted, not kept.
    #[tokio::test]
    async fn spans_are_joined_by_trace_id_and_strangers_counted() {
        let receiver = Receiver::start(None).await.unwrap();
        let (mine, stranger) = (TraceId::random(), TraceId::random());
        receiver.expect(mine);
        let startup = ServerSpan { name: "Overall Loading".into(), start_unix_ns: 5, end_unix_ns: 60_600_000_005, ..ServerSpan::default() };
        let body = encode(&[request_span(mine), request_span(stranger), startup.clone()]);
        assert_eq!(post(&receiver, body, "application/x-protobuf").await, 200);
        let got = receiver.collect(&[mine], &[mine]).await;
        assert_eq!(got.spans.get(&mine), Some(&request_span(mine)));
        assert_eq!(got.startup, vec![startup]);
        assert_eq!((got.counts.batches, got.counts.unknown_trace, got.counts.late), (1, 1, 0));
        assert!(got.waited < SPAN_WAIT);
        // Too late: its cell is done.
        assert_eq!(post(&receiver, encode(&[request_span(mine)]), "application/x-protobuf").await, 200);
        let next = receiver.collect(&[], &[]).await;
        assert_eq!((next.counts.late, next.counts.unknown_trace, next.counts.batches), (1, 0, 1));
    }

    /// Garbage, JSON, oversized bodies and too many spans are answered 400 and
    /// counted; the receiver goes on serving.
    #[tokio::test]
    async fn bad_bodies_are_refused_and_counted() {
        let receiver = Receiver::start(None).await.unwrap();
        assert_eq!(post(&receiver, vec![0xff; 64], "application/x-protobuf").await, 400);
        assert_eq!(post(&receiver, b"{}".to_vec(), "application/json").await, 400);
        assert_eq!(post(&receiver, vec![0; MAX_BODY + 1], "application/x-protobuf").await, 400);
        let many: Vec<ServerSpan> = (0..=MAX_SPANS_PER_BODY).map(|_| request_span(TraceId::random())).collect();
        assert_eq!(post(&receiver, encode(&many), "application/x-protobuf").await, 400);
        let id = TraceId::random();
        receiver.expect(id);
        assert_eq!(post(&receiver, encode(&[request_span(id)]), "application/x-protobuf").await, 200);
        let got = receiver.collect(&[id], &[id]).await;
        assert_eq!((got.counts.malformed, got.counts.oversized, got.counts.batches), (2, 2, 1));
        assert_eq!(got.spans.len(), 1);
    }

    /// A latency that is not a number from 0 to a day is left out, not joined (in
    /// milliseconds, 1e308 s would be infinite).
    #[test]
    fn impossible_latencies_are_left_out() {
        let id = TraceId::random();
        let sent = ServerSpan {
            queue_s: Some(-1.0),
            prefill_s: Some(f64::NAN),
            decode_s: Some(f64::INFINITY),
            e2e_s: Some(1e308),
            ..request_span(id)
        };
        let export = ExportTraceServiceRequest::decode(Bytes::from(encode(&[sent]))).unwrap();
        let span = server_span(export.resource_spans[0].scope_spans[0].spans[0].clone());
        assert_eq!((span.queue_s, span.prefill_s, span.decode_s, span.e2e_s), (None, None, None, None), "1e308 s is no latency");
        assert_eq!((span.ttft_s, span.prompt_tokens), (Some(0.3), Some(100)));
    }

    /// A small body of a great many empty spans or attributes (millions fit in 16
    /// MiB) is counted on the wire and refused before it is decoded; the census agrees
    /// with the decoder on what vLLM-shaped bodies hold.
    #[tokio::test]
    async fn bodies_of_too_many_items_are_refused_before_decoding() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let body = |spans: Vec<Span>| {
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
            }
            .encode_to_vec()
        };
        let empties = body(vec![Span::default(); MAX_SPANS_PER_BODY + 1]);
        assert_eq!(census(&empties), Some((MAX_SPANS_PER_BODY + 1, 0)));
        let attributes = body(vec![Span { attributes: vec![KeyValue::default(); MAX_ITEMS_PER_BODY + 1], ..Default::default() }]);
        assert_eq!(census(&attributes), Some((1, MAX_ITEMS_PER_BODY + 1)));
        let sent = [request_span(TraceId::random()), request_span(TraceId::random())];
        let decoded = ExportTraceServiceRequest::decode(Bytes::from(encode(&sent))).unwrap();
        let attrs: usize = decoded.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.attributes.len()).sum();
        assert_eq!(census(&encode(&sent)), Some((2, attrs)));
        assert_eq!(census(&[0xff; 8]), None);
        let receiver = Receiver::start(None).await.unwrap();
        assert_eq!(post(&receiver, empties, "application/x-protobuf").await, 400);
        assert_eq!(post(&receiver, attributes, "application/x-protobuf").await, 400);
        assert_eq!(receiver.collect(&[], &[]).await.counts.oversized, 2);
    }

    /// A second span for one request is counted and the first kept; a span of a
    /// request's trace that is not the request's own is neither it nor start-up.
    #[tokio::test]
    async fn a_requests_trace_gives_one_span() {
        let receiver = Receiver::start(None).await.unwrap();
        let id = TraceId::random();
        receiver.expect(id);
        let other = ServerSpan { queue_s: Some(9.0), ..request_span(id) };
        let http = ServerSpan { name: "POST /v1/chat/completions".into(), ..request_span(id) };
        assert_eq!(post(&receiver, encode(&[request_span(id), other, http]), "application/x-protobuf").await, 200);
        let got = receiver.collect(&[id], &[id]).await;
        assert_eq!(got.spans.get(&id), Some(&request_span(id)));
        assert_eq!((got.counts.duplicate, got.startup.len()), (1, 0));
    }

    /// A fixed receiver address that is taken: another port, said in a note.
    #[tokio::test]
    async fn a_taken_port_gives_another_with_a_note() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = taken.local_addr().unwrap();
        let receiver = Receiver::start(Some(at)).await.unwrap();
        assert_ne!(receiver.addr(), at);
        let note = receiver.note.clone().unwrap();
        assert!(note.contains(&at.to_string()) && note.contains(&receiver.addr().to_string()), "{note}");
    }
}
