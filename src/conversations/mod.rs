//! The user's own conversations (`[workload] conversations = "FILE"`), in two formats
//! told apart by their first character: OpenAI chat JSONL (one `{"messages": […]}` per
//! line) and the LLaVA / ShareGPT4V JSON array ([`formats`]).
//!
//! A file may be large (LLaVA's instruction set is about 1 GB), so it is never loaded:
//! [`ConversationFile::scan`] streams it once when the experiment is read (every record
//! checked, its digest taken, where each conversation starts kept: 8 bytes each), and
//! [`ConversationFile::read`] streams it again for just the conversations a cell
//! replays, which [`draw`] picks per seed. Memory stays bounded by the largest record
//! ([`MAX_RECORD_BYTES`]) and the number of conversations ([`MAX_CONVERSATIONS`]).
//! Images are read only for drawn conversations ([`image_bytes`]), never downloaded.

pub mod formats;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

/// Conversations per file: the index of where each starts is 8 bytes a conversation.
pub const MAX_CONVERSATIONS: u64 = 1_000_000;
/// One record (a JSONL line, an element of the array): images inlined as `data:` URIs
/// make records large, but a record past this is a broken file, not a conversation.
/// Parsed, a record takes up to about 30 times its text (serde_json's `Value`), so this
/// also bounds the memory one record can take (about 500 MB).
pub const MAX_RECORD_BYTES: u64 = 16 << 20;
/// One image file.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// The file's two shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI chat JSONL.
    OpenAi,
    /// The LLaVA / ShareGPT4V JSON array.
    Llava,
}

impl Format {
    pub const CHOICES: [(&str, Format); 2] = [("openai", Format::OpenAi), ("llava", Format::Llava)];

    pub fn parse(text: &str) -> Option<Format> {
        Self::CHOICES.iter().find(|(n, _)| *n == text).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Llava => "llava",
        }
    }

    /// How a place in the file is called: a line of JSONL, a record of the array.
    fn unit(self) -> &'static str {
        match self {
            Format::OpenAi => "line",
            Format::Llava => "record",
        }
    }
}

/// One conversation as the file gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: Option<String>,
    pub system: Option<String>,
    pub turns: Vec<Turn>,
}

/// A user message and the assistant's recorded answer to it, if the file has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub parts: Vec<Part>,
    pub answer: Option<String>,
}

/// Text and images in the order the message gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(ImageRef),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A path as written, relative to the conversations file's folder.
    File(String),
    /// A whole `data:…;base64,…` URI.
    Data(String),
}

/// What went wrong, and where in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    /// `line 12`, `record 3 (id `x`)`; none for the file as a whole.
    pub at: Option<String>,
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FileError {}

fn whole(message: impl Into<String>, hint: impl Into<String>) -> FileError {
    FileError { at: None, message: message.into(), hint: hint.into() }
}

/// A checked conversations file: what the experiment's keys and draws need, without
/// its contents.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationFile {
    /// As the experiment file writes it.
    pub written: String,
    /// Resolved against the project; absolute paths and `..` are allowed.
    pub path: PathBuf,
    pub format: Format,
    /// blake3 of the file's bytes.
    pub digest: String,
    /// Where each conversation is (its line, or its record in the array), 1-based.
    pub at: Vec<u64>,
    /// The most images one conversation holds (vLLM's `--limit-mm-per-prompt`).
    pub max_images: u64,
}

impl ConversationFile {
    /// Stream the file once: every record must be a conversation.
    pub fn scan(path: &Path, written: &str, format: Option<Format>) -> Result<ConversationFile, FileError> {
        let (mut at, mut max_images) = (Vec::new(), 0u64);
        let (format, digest) = each_record(path, format, &|_| true, &mut |place, format, record| {
            let c = interpret(format, record).map_err(|m| located(format, place, record, m))?;
            if at.len() as u64 == MAX_CONVERSATIONS {
                return Err(FileError {
                    at: Some(format!("{} {place}", format.unit())),
                    message: format!("the file holds more than {MAX_CONVERSATIONS} conversations"),
                    hint: "split it, or keep the conversations you want to measure (a cell replays batch-size of them)".into(),
                });
            }
            at.push(place);
            let images = c.turns.iter().flat_map(|t| &t.parts).filter(|p| matches!(p, Part::Image(_))).count();
            max_images = max_images.max(images as u64);
            Ok(Flow::Go)
        })?;
        if at.is_empty() {
            return Err(whole("the file holds no conversation", "add at least one conversation with a user message"));
        }
        // Resolved, for meta.json: where the file was, whatever the experiment wrote.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(ConversationFile { written: written.to_string(), path, format, digest, at, max_images })
    }

    /// The conversations numbered in `wanted` (0-based, in file order), streamed again.
    pub fn read(&self, wanted: &BTreeSet<u64>) -> Result<BTreeMap<u64, Conversation>, FileError> {
        let places: BTreeMap<u64, u64> = wanted.iter().filter_map(|&i| Some((*self.at.get(i as usize)?, i))).collect();
        let mut found = BTreeMap::new();
        let want = |place: u64| places.contains_key(&place);
        let (_, digest) = each_record(&self.path, Some(self.format), &want, &mut |place, format, record| {
            if let Some(&i) = places.get(&place) {
                found.insert(i, interpret(format, record).map_err(|m| located(format, place, record, m))?);
            }
            Ok(if found.len() == places.len() { Flow::Stop } else { Flow::Go })
        })?;
        // What the plan keyed is what is read, or nothing.
        if found.len() != wanted.len() || digest != self.digest {
            return Err(whole(
                format!("`{}` changed since the experiment was read", crate::untrusted::escaped(&self.written, 200)),
                "run again once nothing writes to the file: the plan then keys it as it is",
            ));
        }
        Ok(found)
    }

    /// Where conversation `i` is, as messages say it.
    pub fn place(&self, i: u64) -> String {
        format!("{} {}", self.format.unit(), self.at.get(i as usize).copied().unwrap_or_default())
    }

    /// The file's folder: image paths are relative to it.
    pub fn folder(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

fn interpret(format: Format, record: &Value) -> Result<Conversation, String> {
    match format {
        Format::OpenAi => formats::openai(record),
        Format::Llava => formats::llava(record),
    }
}

/// A record's problem at its place, with the record's id where it has one.
fn located(format: Format, place: u64, record: &Value, message: String) -> FileError {
    let id = record.get("id").map(|v| match v {
        Value::String(s) => crate::untrusted::quoted(s),
        other => format!("`{other}`"),
    });
    let at = match id {
        Some(id) if format == Format::Llava => format!("record {place} (id {id})"),
        _ => format!("{} {place}", format.unit()),
    };
    let hint = match format {
        Format::OpenAi => {
            "each line is {\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": …}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"a.jpg\"}}]}, {\"role\": \"assistant\", \"content\": …}]}; see docs/experiment-file.md"
        }
        Format::Llava => {
            "each record is {\"id\": …, \"image\": \"a.jpg\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\n…\"}, {\"from\": \"gpt\", \"value\": …}]}; see docs/experiment-file.md"
        }
    };
    FileError { at: Some(at), message: message.to_string(), hint: hint.into() }
}

enum Flow {
    Go,
    Stop,
}

type Visit<'a> = dyn FnMut(u64, Format, &Value) -> Result<Flow, FileError> + 'a;
/// Which places (lines, records) to parse and visit; the others are skipped unparsed
/// (JSONL) or parsed without being kept (the array).
type Want<'a> = dyn Fn(u64) -> bool + 'a;

/// Every record of the file in order, with its place (line or record number), until
/// `visit` stops; the format is `format` or told by the first character. The digest is
/// the whole file's (only meaningful when nothing stopped early).
fn each_record(path: &Path, format: Option<Format>, want: &Want, visit: &mut Visit) -> Result<(Format, String), FileError> {
    let io = |e: std::io::Error| whole(format!("cannot read it: {e}"), "paths are relative to the project root");
    // A FIFO or a device would block or never end: neither is opened.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(whole("it is not a regular file (a device, a pipe or a folder)", "name the conversations file itself"));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let budget = Rc::new(Cell::new(MAX_RECORD_BYTES));
    let mut reader = BufReader::with_capacity(1 << 16, Hashing { inner: file, hasher: blake3::Hasher::new(), budget: budget.clone() });
    // A byte-order mark (files written on Windows) is not content.
    if reader.fill_buf().map_err(io)?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    let (first, blank_lines) = peek_past_whitespace(&mut reader).map_err(io)?;
    let format = match (format, first) {
        (Some(f), _) => f,
        (None, Some(b'[')) => Format::Llava,
        (None, Some(b'{')) => Format::OpenAi,
        (None, None) => return Err(whole("the file is empty", "add at least one conversation")),
        (None, Some(_)) => {
            return Err(whole(
                "it is neither a JSON array (the LLaVA format) nor JSON lines (the OpenAI chat format)",
                "see docs/experiment-file.md for both shapes, or set conversations-format",
            ));
        }
    };
    match format {
        Format::OpenAi => json_lines(&mut reader, blank_lines, &budget, want, visit)?,
        Format::Llava => json_array(&mut reader, &budget, want, visit)?,
    }
    // Whatever the parser left (the rest of the file when a visit stopped early: the
    // digest covers all of it), with no record budget: it is not parsed.
    budget.set(u64::MAX);
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(io)?;
    Ok((format, reader.into_inner().hasher.finalize().to_hex().to_string()))
}

/// The first character that is not whitespace, and the lines of whitespace read
/// past to find it (whole buffers of it only; a line is never split).
fn peek_past_whitespace<R: BufRead>(reader: &mut R) -> std::io::Result<(Option<u8>, u64)> {
    let mut newlines = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((None, newlines));
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(k) => return Ok((Some(buf[k]), newlines)),
            None => {
                newlines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// OpenAI JSONL: one record per non-blank line.
fn json_lines<R: BufRead>(reader: &mut R, skipped: u64, budget: &Rc<Cell<u64>>, want: &Want, visit: &mut Visit) -> Result<(), FileError> {
    // Lines are capped by `take` below; the reader's own budget is for the array.
    budget.set(u64::MAX);
    let mut line = Vec::new();
    for number in skipped + 1.. {
        line.clear();
        let at = |message: String, hint: &str| FileError { at: Some(format!("line {number}")), message, hint: hint.into() };
        let n = reader.by_ref().take(MAX_RECORD_BYTES + 1).read_until(b'\n', &mut line).map_err(|e| at(format!("{e}"), ""))?;
        if n == 0 {
            return Ok(());
        }
        if line.len() as u64 > MAX_RECORD_BYTES {
            return Err(at(
                format!("the line is longer than {} MiB", MAX_RECORD_BYTES >> 20),
                "one conversation per line; images as paths rather than data: URIs keep lines small",
            ));
        }
        if line.iter().all(u8::is_ascii_whitespace) || !want(number) {
            continue;
        }
        let record: Value = serde_json::from_slice(&line)
            .map_err(|e| at(format!("not JSON: {}", without_location(&e)), "each line is one JSON object: {\"messages\": [...]}"))?;
        if let Flow::Stop = visit(number, Format::OpenAi, &record)? {
            return Ok(());
        }
    }
    Ok(())
}

/// serde_json's message without its " at line 1 column 7" (the line is ours to say).
fn without_location(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(k) => text[..k].to_string(),
        None => text,
    }
}

/// The LLaVA array, one element at a time.
fn json_array<R: Read>(reader: &mut R, budget: &Rc<Cell<u64>>, want: &Want, visit: &mut Visit) -> Result<(), FileError> {
    let mut stopped: Option<Result<(), FileError>> = None;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let outcome = Elements { visit, want, budget: budget.clone(), stopped: &mut stopped }.deserialize(&mut de).and_then(|()| de.end());
    match (stopped, outcome) {
        (Some(result), _) => result,
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => {
            let message = if e.is_io() && e.to_string().contains("larger than") {
                format!("a record is larger than {} MiB", MAX_RECORD_BYTES >> 20)
            } else {
                format!("not a JSON array of conversations: {e}")
            };
            Err(whole(message, "the LLaVA format is one JSON array: [{\"id\": …, \"image\": …, \"conversations\": [...]}, …]"))
        }
    }
}

/// A `Visitor` that hands each element of the array to `visit` as it is parsed.
struct Elements<'a, 'b> {
    visit: &'a mut Visit<'b>,
    want: &'a Want<'b>,
    budget: Rc<Cell<u64>>,
    stopped: &'a mut Option<Result<(), FileError>>,
}

impl<'de> DeserializeSeed<'de> for Elements<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of conversations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        for number in 1u64.. {
            self.budget.set(MAX_RECORD_BYTES);
            if !(self.want)(number) {
                if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                continue;
            }
            let Some(record) = seq.next_element::<Value>()? else { return Ok(()) };
            match (self.visit)(number, Format::Llava, &record) {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => {
                    *self.stopped = Some(Ok(()));
                    return Err(A::Error::custom("stopped"));
                }
                Err(e) => {
                    *self.stopped = Some(Err(e));
                    return Err(A::Error::custom("stopped"));
                }
            }
        }
        Ok(())
    }
}

/// Hashes what is read, and refuses to read more than `budget` bytes more: a record
/// of the array that does not end is stopped there, not loaded.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        let left = self.budget.get();
        if n as u64 > left {
            return Err(std::io::Error::other(format!("a record larger than {} MiB", MAX_RECORD_BYTES >> 20)));
        }
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

/// Which conversations of a file of `count` a cell of `n` replays, in order: drawn
/// without replacement (a seeded Fisher–Yates, visiting only what it draws), and with
/// a fresh shuffle for every pass when `n` is more than the file holds. The first `k`
/// of a larger draw are the draw of `k`, so a batch-size sweep adds conversations
/// rather than changing them.
pub fn draw(seed: u64, n: u32, count: u64) -> Vec<u64> {
    let mut h = blake3::Hasher::new_derive_key("pipeline conversation draw v1");
    h.update(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(*h.finalize().as_bytes());
    let mut out = Vec::with_capacity(n as usize);
    let mut moved: std::collections::HashMap<u64, u64> = Default::default();
    for i in 0..n as u64 {
        let k = i % count.max(1);
        if k == 0 {
            moved.clear();
        }
        let j = k + rng.next_u64() % (count - k).max(1);
        let (at_j, at_k) = (*moved.get(&j).unwrap_or(&j), *moved.get(&k).unwrap_or(&k));
        moved.insert(j, at_k);
        out.push(at_j);
    }
    out
}

/// An image's bytes: a file relative to `folder` (a regular file, capped) or a `data:`
/// URI decoded. The error is a message for the turn that names the image.
pub fn image_bytes(folder: &Path, image: &ImageRef) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match image {
        ImageRef::Data(uri) => {
            let data = uri.split_once(',').map(|(_, d)| d).unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| format!("a `data:` URI whose base64 does not decode: {e}"))
        }
        ImageRef::File(written) => {
            let path = folder.join(written);
            let name = crate::untrusted::quoted(written);
            let meta = std::fs::metadata(&path).map_err(|e| format!("image {name}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("image {name} is not a regular file"));
            }
            if meta.len() > MAX_IMAGE_BYTES {
                return Err(format!("image {name} is larger than {} MiB", MAX_IMAGE_BYTES >> 20));
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_IMAGE_BYTES + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("image {name}: {e}"))?;
            Ok(bytes)
        }
    }
}

/// The image's format and size, read from its header: a JPEG or a PNG, or refused; and
/// whole, as far as its end marker tells (a JPEG's EOI in its last kilobyte, a PNG's
/// IEND chunk): a file cut short is refused here rather than by the server on every
/// turn. The pixel data themselves are not decoded (that is the server's work).
pub fn check_image(bytes: &[u8]) -> Result<(image::ImageFormat, (u32, u32)), String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let format = match reader.format() {
        Some(f @ (image::ImageFormat::Jpeg | image::ImageFormat::Png)) => f,
        Some(other) => {
            return Err(format!("is {}, and pipeline sends JPEG and PNG", other.extensions_str().first().unwrap_or(&"another format")));
        }
        None => return Err("is not an image".into()),
    };
    let size = reader.into_dimensions().map_err(|e| format!("does not decode: {e}"))?;
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    let whole = match format {
        image::ImageFormat::Png => tail.windows(4).any(|w| w == b"IEND"),
        _ => tail.windows(2).any(|w| w == [0xFF, 0xD9]),
    };
    if !whole {
        return Err("does not decode: it is cut short (no end marker)".into());
    }
    Ok((format, size))
}

/// The digest of each image of the first `turns` turns of `c`, each read and checked
/// ([`check_image`]): what a datagen key holds of them.
pub fn image_digests(c: &Conversation, turns: usize, folder: &Path) -> Result<Vec<blake3::Hash>, String> {
    c.images(turns)
        .map(|image| {
            let bytes = image_bytes(folder, image)?;
            check_image(&bytes).map_err(|e| format!("{} {e}", image.name()))?;
            Ok(blake3::hash(&bytes))
        })
        .collect()
}

/// One digest over the images of a draw's conversations, in order.
pub fn drawn_digest<'a>(images: impl IntoIterator<Item = &'a blake3::Hash>) -> String {
    let mut h = blake3::Hasher::new_derive_key("pipeline drawn images v1");
    for image in images {
        h.update(image.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

impl ImageRef {
    /// How a message names it: the path, or the start of the URI.
    pub fn name(&self) -> String {
        match self {
            ImageRef::File(path) => format!("image {}", crate::untrusted::quoted(path)),
            ImageRef::Data(uri) => format!("image {}", crate::untrusted::quoted(&uri.chars().take(30).collect::<String>())),
        }
    }
}

impl Conversation {
    /// The images of its first `turns` turns, in order.
    pub fn images(&self, turns: usize) -> impl Iterator<Item = &ImageRef> {
        self.turns.iter().take(turns).flat_map(|t| &t.parts).filter_map(|p| match p {
            Part::Image(i) => Some(i),
            Part::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.data");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn formats_are_told_by_content_and_every_record_is_placed() {
        let (_d, path) = file(
            "\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n",
        );
        let f = ConversationFile::scan(&path, "c.jsonl", None).unwrap();
        assert_eq!((f.format, f.at.clone()), (Format::OpenAi, vec![2, 4]));
        assert_eq!(f.digest, blake3::hash(&std::fs::read(&path).unwrap()).to_hex().to_string());
        let got = f.read(&BTreeSet::from([1])).unwrap();
        assert_eq!(got[&1].turns[0].parts, vec![Part::Text("yo".into())]);

        let (_d, path) =
            file("\u{feff} [{\"id\": 1, \"image\": \"a.jpg\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nq\"}]}]");
        let f = ConversationFile::scan(&path, "c.json", None).unwrap();
        assert_eq!((f.format, f.at.clone(), f.max_images), (Format::Llava, vec![1], 1));
    }

    #[test]
    fn bad_records_name_their_place() {
        let (_d, path) = file("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"messages\": [}\n");
        let e = ConversationFile::scan(&path, "c.jsonl", None).unwrap_err();
        assert_eq!(e.to_string(), "line 2: not JSON: expected value");
        let (_d, path) = file("[{\"id\": \"a\", \"conversations\": []}]");
        let e = ConversationFile::scan(&path, "c.json", None).unwrap_err();
        assert_eq!(e.to_string(), "record 1 (id `a`): has no user message");
        let (_d, path) = file("hello");
        assert!(ConversationFile::scan(&path, "c", None).unwrap_err().message.starts_with("it is neither a JSON array"));
        let (_d, path) = file("[{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}]}, {\"conversations\": ");
        let e = ConversationFile::scan(&path, "c.json", None).unwrap_err();
        assert!(e.message.starts_with("not a JSON array of conversations: EOF while parsing"), "{e}");
    }

    #[test]
    fn a_record_that_never_ends_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let mut text = String::from("[{\"conversations\": [{\"from\": \"human\", \"value\": \"");
        text.push_str(&"x".repeat(MAX_RECORD_BYTES as usize + (1 << 20)));
        std::fs::write(&path, text).unwrap();
        let e = ConversationFile::scan(&path, "big.json", None).unwrap_err();
        assert_eq!(e.message, format!("a record is larger than {} MiB", MAX_RECORD_BYTES >> 20));
    }

    /// Reading a drawn record reads the rest of the file for its digest only: records
    /// after it are not held to the record limit, and an edit since the scan is refused.
    #[test]
    fn reading_checks_the_whole_file_and_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let record = |n: usize| format!("{{\"conversations\": [{{\"from\": \"human\", \"value\": \"{}\"}}]}}", "x".repeat(n));
        let big = (MAX_RECORD_BYTES as usize * 2) / 3;
        std::fs::write(&path, format!("[{}, {}, {}]", record(10), record(big), record(big))).unwrap();
        let f = ConversationFile::scan(&path, "big.json", None).unwrap();
        let got = f.read(&BTreeSet::from([0])).unwrap();
        assert_eq!(got[&0].turns[0].parts, vec![Part::Text("x".repeat(10))]);

        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").unwrap();
        let f = ConversationFile::scan(&jsonl, "c.jsonl", None).unwrap();
        std::fs::write(&jsonl, "{\"messages\": [{\"role\": \"user\", \"content\": \"ho\"}]}\n").unwrap();
        let e = f.read(&BTreeSet::from([0])).unwrap_err();
        assert_eq!(e.message, "`c.jsonl` changed since the experiment was read");
    }

    #[test]
    fn an_image_cut_short_is_refused() {
        let mut png = Vec::new();
        image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, 0]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(check_image(&png).unwrap(), (image::ImageFormat::Png, (8, 8)));
        assert_eq!(check_image(&png[..png.len() - 12]).unwrap_err(), "does not decode: it is cut short (no end marker)");
        let mut jpeg = Vec::new();
        image::RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(check_image(&jpeg).is_ok());
        assert_eq!(check_image(&jpeg[..jpeg.len() * 4 / 5]).unwrap_err(), "does not decode: it is cut short (no end marker)");
    }

    #[test]
    fn draws_are_seeded_prefixes_without_replacement() {
        let d = draw(66, 10, 1000);
        let mut unique = d.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        assert!(d.iter().all(|&i| i < 1000));
        assert_eq!(draw(66, 4, 1000), d[..4]);
        assert_ne!(draw(1337, 10, 1000), d);
        // More than the file holds: every conversation once per pass.
        let d = draw(7, 6, 3);
        let (mut a, mut b) = (d[..3].to_vec(), d[3..].to_vec());
        a.sort();
        b.sort();
        assert_eq!((a, b), (vec![0, 1, 2], vec![0, 1, 2]));
    }
}
