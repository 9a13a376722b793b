//! Incremental Server-Sent Events parsing.
//!
//! Bytes arrive in arbitrary pieces; events end at a blank line; `data:` lines of one
//! event are joined with `\n`; `\r\n` and `\n` both end lines; other fields (`event:`,
//! `id:`, comments) are ignored, since OpenAI-style streams carry everything in `data`.
//! The parser yields the same events however the stream is split (property-tested).
//!
//! The server is not trusted: a line or an event longer than [`MAX_LINE_BYTES`] is an
//! error, not a buffer that grows until memory runs out.

/// The longest line, and the longest event, the parser holds. Real events are a few
/// hundred bytes (a token and its metadata); a megabyte leaves room for logprobs.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("a line of the event stream passed {} MiB without a line break", MAX_LINE_BYTES >> 20)]
    LineTooLong,
    #[error("an event of the event stream passed {} MiB", MAX_LINE_BYTES >> 20)]
    EventTooLarge,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; call `on_event` with the data of every event they complete. After an
    /// error the parser's state is undefined: stop reading.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) -> Result<(), SseError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len() + rest.len() > MAX_LINE_BYTES {
                    return Err(SseError::LineTooLong);
                }
                self.line.extend_from_slice(rest);
                return Ok(());
            };
            if self.line.len() + end > MAX_LINE_BYTES {
                return Err(SseError::LineTooLong);
            }
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                if let Some(data) = self.data.take() {
                    on_event(&data);
                }
            } else if let Some(value) = self.line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                let text = String::from_utf8_lossy(value);
                match &mut self.data {
                    Some(d) if d.len() + 1 + text.len() > MAX_LINE_BYTES => return Err(SseError::EventTooLarge),
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&text);
                    }
                    None => self.data = Some(text.into_owned()),
                }
            }
            self.line.clear();
        }
        Ok(())
    }

    /// Whether bytes of an unfinished event are pending (a cut stream).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, |e| out.push(e.to_string())).unwrap();
        }
        out
    }

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: comment\ndata: x\r\ndata: y\r\n\r\nevent: ping\ndata: [DONE]\n\n";

    #[test]
    fn events_and_multiline_data() {
        assert_eq!(parse_all(&[STREAM]), vec!["{\"a\":1}", "x\ny", "[DONE]"]);
    }

    #[test]
    fn a_cut_event_is_partial() {
        let mut p = SseParser::default();
        p.push(b"data: {\"a\"", |_| panic!("no event yet")).unwrap();
        assert!(p.has_partial());
    }

    #[test]
    fn lines_and_events_are_capped() {
        // A stream without line breaks, fed in pieces, fails once past the cap.
        let mut p = SseParser::default();
        let piece = vec![b'x'; 64 << 10];
        let results: Vec<_> = (0..17).map(|_| p.push(&piece, |_| {})).collect();
        assert!(results[..16].iter().all(Result::is_ok));
        assert_eq!(results[16], Err(SseError::LineTooLong));
        // Many short data lines of one event: the event is capped too.
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(1000));
        let err = (0..2000).map(|_| p.push(line.as_bytes(), |_| {})).find(Result::is_err);
        assert_eq!(err, Some(Err(SseError::EventTooLarge)));
    }

    proptest! {
        #[test]
        fn splitting_does_not_matter(cuts in proptest::collection::vec(0..STREAM.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&STREAM[last..c]);
                last = c;
            }
            pieces.push(&STREAM[last..]);
            prop_assert_eq!(parse_all(&pieces), parse_all(&[STREAM]));
        }
    }
}
