//! A request trace to replay (`arrival = "trace"`): JSONL in the Mooncake format, one
//! request per line, `{"timestamp": ms, "input_length": tokens, "output_length": tokens,
//! "hash_ids": [block ids]}` (`hash_ids` optional; other keys ignored).
//!
//! The file is read line by line through [`Reader`], never whole: memory stays at one
//! line (at most [`MAX_LINE_BYTES`]) whatever the file's size, and reading stops at the
//! first bad line or at [`MAX_REQUESTS`] without reading on. The same reader validates
//! the file when the experiment is loaded (its digest enters the measure key) and feeds
//! the replay, so the two cannot disagree on what a line means.
//!
//! What a request's prompt is, is defined here ([`token_ids`]): token ids that are a
//! function of the seed and the hash id for each 512-token block the line names, and of
//! the seed and the line's request index for the rest. Requests sharing a hash id share
//! that block's ids, so a server's prefix cache sees what it saw in production.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::limits::{Limit, count};

/// Most requests one trace may hold: a day of a busy production trace (Mooncake's
/// published ones hold 23,608 requests), and within what a measure step records in
/// memory. Reading stops at the next one, unread.
pub const MAX_REQUESTS: usize = 1_000_000;
/// Tokens of one prompt: past any context window served today.
pub const INPUT_TOKENS: Limit = Limit::int(1, 1_000_000, "prompt tokens");
/// Tokens of one answer (sent as `max_tokens`, with `ignore_eos`).
pub const OUTPUT_TOKENS: Limit = Limit::int(1, 1_000_000, "tokens per answer");
/// Tokens per hash id: Mooncake's block.
pub const BLOCK_TOKENS: u32 = 512;
/// Most hash ids one request may name: one per block of the longest prompt.
pub const MAX_HASH_IDS: usize = 1_000_000usize.div_ceil(BLOCK_TOKENS as usize);
/// The longest line read: the most hash ids, written as 20-digit numbers, take about
/// 41 kB; a longer line is not a request (or is a whole file without line breaks).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The latest timestamp, in ms: a week, as for imported results. A later one is
/// corrupt (a Unix time in ms, a clock of another epoch) and would idle for ages.
pub const TIMESTAMP_MS: Limit = Limit::num(0.0, 7.0 * 86_400_000.0, "milliseconds from the start");
/// `trace-speedup`: the trace's times are divided by it.
pub const SPEEDUP: Limit = Limit::num(0.001, 1000.0, "times the trace's pace");
/// Token ids of the prompts lie in `[VOCAB_LO, VOCAB_HI)`: inside the ordinary text
/// tokens of every common tokenizer (Llama's 32,000, Qwen's 151,643, …), away from
/// their special tokens (at the start, or at the end of large vocabularies).
pub const VOCAB_LO: u32 = 1000;
pub const VOCAB_HI: u32 = 30_000;

/// One request of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The line it came from (1-based).
    pub line: usize,
    pub timestamp_ms: f64,
    pub input_length: u32,
    pub output_length: u32,
    pub hash_ids: Vec<u64>,
}

/// A trace file as the experiment names it, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    /// As the experiment file writes it (relative to the project root, or absolute).
    pub written: String,
    /// Resolved.
    pub path: PathBuf,
    /// blake3 of its bytes.
    pub digest: String,
    pub requests: usize,
    /// The last request's timestamp, in ms.
    pub last_ms: f64,
}

/// What is wrong with a trace: where, what, and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceError {
    /// The line (1-based), when the problem is in one.
    pub line: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(n) => write!(f, "line {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

const SHAPE: &str = r#"each line is one JSON object: {"timestamp": 0, "input_length": 1024, "output_length": 64, "hash_ids": [0, 1]} (see docs/experiment-file.md)"#;

/// The requests of a trace, in order, each line checked: JSON, a request, lengths and
/// timestamp in range, timestamps never going backwards, at most [`MAX_REQUESTS`].
/// After the last request, [`Reader::digest`] is the digest of every byte read.
pub struct Reader<R> {
    inner: R,
    line: usize,
    requests: usize,
    last_ms: f64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    /// Set after an error or the end: nothing more is read.
    done: bool,
}

impl Reader<std::io::BufReader<std::fs::File>> {
    /// Open `path`: a regular file (a FIFO or a device such as `/dev/zero` would block
    /// or never end, so neither is opened).
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let fail = |message: String, hint: &str| TraceError { line: None, message, hint: hint.into() };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot be read: {e}"), "paths are relative to the project root"))?;
        if !meta.is_file() {
            return Err(fail(
                "cannot be read: it is not a regular file (a device, a pipe or a folder)".into(),
                "name the trace file itself; a pipe or a device is not read",
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot be read: {e}"), "check the file's permissions"))?;
        Ok(Reader::new(std::io::BufReader::new(file)))
    }
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, line: 0, requests: 0, last_ms: 0.0, hasher: blake3::Hasher::new(), buf: Vec::new(), done: false }
    }

    /// blake3 of the bytes read so far (the whole file once `next` returned `None`).
    pub fn digest(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests
    }

    fn fail(&mut self, message: String, hint: impl Into<String>) -> Option<Result<Request, TraceError>> {
        self.done = true;
        Some(Err(TraceError { line: Some(self.line), message, hint: hint.into() }))
    }

    /// The next line, at most [`MAX_LINE_BYTES`] (and its line break) read.
    fn read_line(&mut self) -> std::io::Result<usize> {
        use std::io::Read;
        self.buf.clear();
        let n = self.inner.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut self.buf)?;
        self.hasher.update(&self.buf);
        Ok(n)
    }

    fn parse(&mut self) -> Option<Result<Request, TraceError>> {
        let line = self.line;
        // A byte-order mark (a file written on Windows) is not content; the digest
        // still covers it.
        if line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        // serde reads a struct from a list too (`[0, 10, 2]`): only an object is a request.
        let first = self.buf.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(&self.buf).is_ok() {
            return self.fail("is not a trace request: a JSON value that is not an object".into(), SHAPE);
        }
        let raw: RawRequest = match serde_json::from_slice(&self.buf) {
            Ok(r) => r,
            Err(e) => {
                let at = format!(" at line {} column {}", e.line(), e.column());
                let what = e.to_string();
                let what = what.strip_suffix(&at).unwrap_or(&what);
                let message = match e.classify() {
                    serde_json::error::Category::Data => format!("is not a trace request: {what} (column {})", e.column()),
                    _ => format!("is not JSON: {what} (column {})", e.column()),
                };
                return self.fail(message, SHAPE);
            }
        };
        let checked = |limit: Limit, key: &str, v: f64| limit.check(v).map_err(|m| format!("`{key}` {m}"));
        let (input, output, at) = match (
            checked(INPUT_TOKENS, "input_length", raw.input_length),
            checked(OUTPUT_TOKENS, "output_length", raw.output_length),
            checked(TIMESTAMP_MS, "timestamp", raw.timestamp),
        ) {
            (Ok(i), Ok(o), Ok(t)) => (i as u32, o as u32, t),
            (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => {
                return self.fail(m, "lengths count tokens (whole numbers from 1); timestamps are milliseconds from the trace's start");
            }
        };
        if at < self.last_ms {
            let message = format!("timestamps go backwards: `{at}` comes after `{}`", self.last_ms);
            return self.fail(message, "sort the trace by timestamp, e.g. jq -c -s 'sort_by(.timestamp)[]' trace.jsonl");
        }
        let blocks = input.div_ceil(BLOCK_TOKENS) as usize;
        if raw.hash_ids.len() > blocks {
            let message = format!(
                "names {} hash ids, but its `input_length` of {} tokens has {} blocks of {BLOCK_TOKENS}",
                raw.hash_ids.len(),
                count(input.into()),
                count(blocks as u128)
            );
            return self.fail(message, "each hash id stands for one 512-token block of the prompt, from its start");
        }
        self.last_ms = at;
        self.requests += 1;
        Some(Ok(Request { line, timestamp_ms: at, input_length: input, output_length: output, hash_ids: raw.hash_ids }))
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            self.line += 1;
            let n = match self.read_line() {
                Ok(n) => n,
                Err(e) => return self.fail(format!("cannot be read: {e}"), "check the file"),
            };
            if n == 0 {
                self.done = true;
                if self.requests == 0 {
                    return Some(Err(TraceError { line: None, message: "holds no requests".into(), hint: SHAPE.into() }));
                }
                return None;
            }
            if n > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                let message = format!("is longer than {} MiB", MAX_LINE_BYTES >> 20);
                let hint = format!(
                    "a request line is a few hundred bytes, at most {} hash ids (about 41 kB); is this a JSONL trace, one request per line?",
                    count(MAX_HASH_IDS as u128)
                );
                return self.fail(message, hint);
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.requests == MAX_REQUESTS {
                let message = format!("is past the {} requests a trace may hold; nothing after it was read", count(MAX_REQUESTS as u128));
                return self.fail(message, "replay a part of it: cut the trace into several files (e.g. `split -l 1000000`)");
            }
            return self.parse();
        }
    }
}

/// One line as written. Lengths are read as numbers and checked against their
/// [`Limit`]s, so `-5` and `2.5` get a message that says what is accepted.
#[derive(Deserialize)]
#[serde(expecting = "an object with `timestamp`, `input_length` and `output_length`")]
struct RawRequest {
    timestamp: f64,
    input_length: f64,
    output_length: f64,
    #[serde(default, deserialize_with = "hash_ids")]
    hash_ids: Vec<u64>,
}

/// A list of at most [`MAX_HASH_IDS`] ids; refused at the next one, unread.
fn hash_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Ids;
    impl<'de> serde::de::Visitor<'de> for Ids {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of hash ids (whole numbers from 0)")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<u64>()? {
                if ids.len() == MAX_HASH_IDS {
                    return Err(serde::de::Error::custom(format!(
                        "`hash_ids` holds more than {} ids (one per 512-token block of a prompt of at most {} tokens)",
                        count(MAX_HASH_IDS as u128),
                        count(INPUT_TOKENS.hi as u128)
                    )));
                }
                ids.push(id);
            }
            Ok(ids)
        }
    }
    d.deserialize_seq(Ids)
}

/// Read and check the whole trace at `path` (`written` as the experiment names it).
pub fn validate(written: &str, path: &Path) -> Result<TraceFile, TraceError> {
    let mut reader = Reader::open(path)?;
    let mut last_ms = 0.0;
    for request in reader.by_ref() {
        last_ms = request?.timestamp_ms;
    }
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(TraceFile { written: written.to_string(), path, digest: reader.digest(), requests: reader.requests(), last_ms })
}

/// The prompt of `request` (the `index`th of the trace, from 0) as token ids, exactly
/// `input_length` of them: block `j` of the prompt (tokens `512j` to `512j + 511`) is
/// drawn from a ChaCha stream keyed by the seed and `hash_ids[j]` when the line names
/// one, and from a stream keyed by the seed and `index` otherwise. Ids lie in
/// `[VOCAB_LO, VOCAB_HI)`.
pub fn token_ids(seed: u64, index: u64, request: &Request) -> Vec<u32> {
    let len = request.input_length as usize;
    let mut ids = Vec::with_capacity(len);
    let draw = |rng: &mut rand_chacha::ChaCha8Rng| VOCAB_LO + rng.next_u32() % (VOCAB_HI - VOCAB_LO);
    for &id in &request.hash_ids {
        let mut rng = stream(b"pipeline trace block v1", seed, id);
        let n = (len - ids.len()).min(BLOCK_TOKENS as usize);
        ids.extend((0..n).map(|_| draw(&mut rng)));
    }
    let mut rng = stream(b"pipeline trace request v1", seed, index);
    while ids.len() < len {
        ids.push(draw(&mut rng));
    }
    ids
}

/// A ChaCha stream for (`domain`, `seed`, `n`).
fn stream(domain: &[u8], seed: u64, n: u64) -> rand_chacha::ChaCha8Rng {
    let key = blake3::Hasher::new().update(domain).update(&seed.to_le_bytes()).update(&n.to_le_bytes()).finalize();
    rand_chacha::ChaCha8Rng::from_seed(*key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Request>, TraceError> {
        Reader::new(text.as_bytes()).collect()
    }

    fn error(text: &str) -> TraceError {
        read(text).unwrap_err()
    }

    #[test]
    fn a_mooncake_trace_reads_as_written() {
        let text = "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 3, \"hash_ids\": [7, 8]}\n\n{\"timestamp\": 27.5, \"input_length\": 10, \"output_length\": 1, \"session\": \"x\"}\r\n";
        let got = read(text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].line, got[0].input_length, got[0].output_length, got[0].hash_ids.clone()), (1, 600, 3, vec![7, 8]));
        assert_eq!((got[1].line, got[1].timestamp_ms, got[1].hash_ids.len()), (3, 27.5, 0));
        let mut r = Reader::new(text.as_bytes());
        r.by_ref().for_each(drop);
        assert_eq!(r.digest(), blake3::hash(text.as_bytes()).to_hex().to_string(), "the digest covers every byte");
    }

    #[test]
    fn a_byte_order_mark_is_not_content() {
        let text = "\u{feff}{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 3}\n";
        assert_eq!(read(text).unwrap().len(), 1);
        let mut r = Reader::new(text.as_bytes());
        r.by_ref().for_each(drop);
        assert_eq!(r.digest(), blake3::hash(text.as_bytes()).to_hex().to_string(), "the digest still covers it");
    }

    #[test]
    fn each_bad_line_is_named_with_its_fix() {
        let ok = r#"{"timestamp": 5, "input_length": 10, "output_length": 2}"#;
        let cases = [
            (format!("{ok}\n@oops\n"), 2, "is not JSON: expected value (column 1)"),
            (format!("{ok}\n[5, 10, 2]\n"), 2, "is not a trace request: a JSON value that is not an object"),
            (
                format!("{ok}\n{{\"timestamp\": \"5\", \"input_length\": 10, \"output_length\": 2}}\n"),
                2,
                "is not a trace request: invalid type: string \"5\", expected f64",
            ),
            (format!("{ok}\n{{\"timestamp\": 1}}\n"), 2, "is not a trace request: missing field `input_length`"),
            (
                format!("{ok}\n{{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 2}}\n"),
                2,
                "timestamps go backwards: `4` comes after `5`",
            ),
            (
                r#"{"timestamp": 0, "input_length": -5, "output_length": 2}"#.into(),
                1,
                "`input_length` must be a whole number from 1 to 1,000,000 (prompt tokens), found `-5`",
            ),
            (
                r#"{"timestamp": 0, "input_length": 5, "output_length": 1e12}"#.into(),
                1,
                "`output_length` must be a whole number from 1 to 1,000,000 (tokens per answer), found `1,000,000,000,000`",
            ),
            (
                r#"{"timestamp": 0, "input_length": 2.5, "output_length": 1}"#.into(),
                1,
                "`input_length` must be a whole number from 1 to 1,000,000 (prompt tokens), found `2.5`",
            ),
            (r#"{"timestamp": -1, "input_length": 5, "output_length": 1}"#.into(), 1, "`timestamp` must be a number from 0 to 604,800,000"),
            (
                r#"{"timestamp": 0, "input_length": 513, "output_length": 1, "hash_ids": [1, 2, 3]}"#.into(),
                1,
                "names 3 hash ids, but its `input_length` of 513 tokens has 2 blocks of 512",
            ),
            (
                r#"{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [-1]}"#.into(),
                1,
                "is not a trace request: invalid value: integer `-1`",
            ),
        ];
        for (text, line, message) in cases {
            let e = error(&text);
            assert_eq!(e.line, Some(line), "{text}");
            assert!(e.message.starts_with(message), "{text}: {}", e.message);
            assert!(!e.hint.is_empty());
        }
        assert_eq!(error("\n\n").message, "holds no requests");
    }

    /// Issue 24: 10⁶ hash ids in a line are refused, without holding them; so is a
    /// line past the most a request takes.
    #[test]
    fn a_flood_of_hash_ids_is_refused() {
        let many = |n: usize| {
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!(r#"{{"timestamp": 0, "input_length": 1000000, "output_length": 1, "hash_ids": [{}]}}"#, ids.join(","))
        };
        let e = error(&many(MAX_HASH_IDS + 1));
        assert!(e.message.contains("`hash_ids` holds more than 1,954 ids"), "{}", e.message);
        assert!(read(&many(MAX_HASH_IDS)).is_ok(), "the most a prompt has is accepted");
        let e = error(&many(1_000_000));
        assert_eq!((e.line, e.message.as_str()), (Some(1), "is longer than 1 MiB"));
        assert!(e.hint.contains("1,954 hash ids"), "{}", e.hint);
    }

    /// Issue 24: a trace of endless lines is refused at the cap, having read nothing
    /// after it (the source would never end otherwise).
    #[test]
    fn reading_stops_at_the_cap() {
        struct Endless(&'static [u8], usize);
        impl std::io::Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len() - self.1);
                out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 = (self.1 + n) % self.0.len();
                Ok(n)
            }
        }
        let line: &'static [u8] = b"{\"timestamp\":0,\"input_length\":1,\"output_length\":1}\n";
        let mut reader = Reader::new(std::io::BufReader::new(Endless(line, 0)));
        let mut n = 0;
        let last = loop {
            match reader.next() {
                Some(Ok(_)) => n += 1,
                Some(Err(e)) => break e,
                None => panic!("an endless trace ended"),
            }
        };
        assert_eq!(n, MAX_REQUESTS);
        assert_eq!(last.line, Some(MAX_REQUESTS + 1));
        assert!(last.message.contains("past the 1,000,000 requests"), "{}", last.message);
        assert!(reader.next().is_none(), "nothing is read after the refusal");
    }

    #[test]
    fn prompts_share_exactly_their_shared_blocks() {
        let req = |hash_ids: Vec<u64>, input_length| Request { line: 1, timestamp_ms: 0.0, input_length, output_length: 1, hash_ids };
        let a = token_ids(3, 0, &req(vec![1, 2], 1100));
        let b = token_ids(3, 1, &req(vec![1, 9, 4], 1100));
        let c = token_ids(3, 2, &req(vec![], 1100));
        assert_eq!((a.len(), b.len()), (1100, 1100));
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert_eq!(common, 512, "one shared block");
        assert_ne!(a[..16], c[..16], "no hash ids: nothing shared");
        assert_eq!(token_ids(3, 0, &req(vec![1, 2], 1100)), a, "deterministic");
        assert_ne!(token_ids(4, 0, &req(vec![1, 2], 1100))[..16], a[..16], "the seed changes the blocks");
        assert!(a.iter().all(|t| (VOCAB_LO..VOCAB_HI).contains(t)));
        // A partial last block is the start of the full one.
        assert_eq!(token_ids(3, 5, &req(vec![1, 2], 700))[..700], a[..700]);
    }
}
