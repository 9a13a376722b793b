//! API keys: read from the environment, sent only where they belong, and never
//! written down.
//!
//! A key's value is known only to the HTTP client that sends it. Everything a server
//! says back (error messages, answers, version strings) is untrusted and may repeat it:
//! OpenAI's 401 says "Incorrect API key provided: sk-…". [`Secrets::redact`] replaces
//! every value of every variable an experiment names in `api-key-env` before any of it
//! is recorded, so no key reaches the cache, a log line or a committed report.

use std::borrow::Cow;

/// The values of the variables named by `api-key-env`, with their names.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (variable name, value), longest value first, so that a key containing another
    /// is replaced whole.
    known: Vec<(String, String)>,
}

impl Secrets {
    /// The current values of `names` (unset or empty variables are skipped).
    pub fn from_env<'a>(names: impl IntoIterator<Item = &'a str>) -> Secrets {
        Secrets::new(names.into_iter().filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v))))
    }

    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        let mut known: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        known.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        known.dedup_by(|a, b| a.1 == b.1);
        Secrets { known }
    }

    /// `text` with every known value replaced by `[redacted $NAME]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (name, value) in &self.known {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), &format!("[redacted ${name}]")));
            }
        }
        out
    }

    /// Redact in place.
    pub fn scrub(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }

    /// Redact every string (keys of objects included) of a JSON value.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries {
                    self.scrub(&mut k);
                    self.scrub_json(&mut v);
                    map.insert(k, v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_value_is_replaced() {
        let s = Secrets::new([("A_KEY".into(), "sk-abc".into()), ("B_KEY".into(), "sk-abcdef".into()), ("EMPTY".into(), String::new())]);
        assert_eq!(s.redact("bad key sk-abcdef, and sk-abc"), "bad key [redacted $B_KEY], and [redacted $A_KEY]");
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"detail": ["sk-abc"], "sk-abc": 1});
        s.scrub_json(&mut v);
        assert_eq!(v.to_string(), r#"{"[redacted $A_KEY]":1,"detail":["[redacted $A_KEY]"]}"#);
    }
}
