//! Incremental Server-Sent Events parsing.
//!
//! Bytes arrive in arbitrary pieces; events end at a blank line; `data:` lines of one
//! event are joined with `\n`; `\r\n` and `\n` both end lines; other fields (`event:`,
//! `id:`, comments) are ignored, since OpenAI-style streams carry everything in `data`.
//! The parser yields the same events however the stream is split (property-tested).

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; call `on_event` with the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                if let Some(data) = self.data.take() {
                    on_event(&data);
                }
            } else if let Some(rest) = self.line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                let text = String::from_utf8_lossy(rest);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&text);
                    }
                    None => self.data = Some(text.into_owned()),
                }
            }
            self.line.clear();
        }
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
            p.push(piece, |e| out.push(e.to_string()));
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
        p.push(b"data: {\"a\"", |_| panic!("no event yet"));
        assert!(p.has_partial());
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
