//! API keys: read from the environment, sent only where they belong, and never
//! written down.
//!
//! A key's value is known only to the HTTP client that sends it. Everything a server
//! says back (error messages, answers, version strings) is untrusted and may repeat it:
//! OpenAI's 401 says "Incorrect API key provided: sk-…". [`Secrets::redact`] replaces
//! every value of every variable an experiment names in `api-key-env` before any of it
//! is recorded, so no key reaches the cache, a log line or a committed report.
//!
//! Keys belong in the environment, never in the experiment file: a file's text enters
//! step keys, plans and reports. [`key_shaped`] finds what looks like a key (validation
//! refuses it wherever it is written), and [`LiteralSecrets`] takes the values of the
//! flags that carry one (`--api-key x` in `extra-args`) out of the file's text: what is
//! hashed, shown and stored says `[redacted N]`, and only the launcher puts the value
//! back, in the argv it starts.

use std::borrow::Cow;

/// The values of the variables named by `api-key-env`, with their names.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (label, value), longest value first, so that a key containing another is
    /// replaced whole.
    known: Vec<(String, String)>,
}

impl Secrets {
    /// The current values of `names` (unset or empty variables are skipped).
    pub fn from_env<'a>(names: impl IntoIterator<Item = &'a str>) -> Secrets {
        Secrets::new(names.into_iter().filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v))))
    }

    /// Environment variables' values, labelled `$NAME` where they are redacted.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        let mut s = Secrets::default();
        s.add(pairs.into_iter().map(|(n, v)| (format!("${n}"), v)));
        s
    }

    /// The file's own secret values too ([`LiteralSecrets`]), labelled by number.
    pub fn with_literals(mut self, literals: &LiteralSecrets) -> Secrets {
        self.add(literals.values.iter().enumerate().map(|(i, v)| ((i + 1).to_string(), v.clone())));
        self
    }

    fn add(&mut self, pairs: impl Iterator<Item = (String, String)>) {
        self.known.extend(pairs.filter(|(_, v)| !v.is_empty()));
        self.known.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        self.known.dedup_by(|a, b| a.1 == b.1);
    }

    /// `text` with every known value replaced by `[redacted $NAME]` (or `[redacted N]`
    /// for a value written in the file).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (label, value) in &self.known {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), &format!("[redacted {label}]")));
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

    /// Redact every string value of a JSON value, leaving the keys of objects as they
    /// are: for documents whose keys are our own field names.
    pub fn scrub_json_values(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json_values(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.scrub_json_values(v)),
            _ => {}
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

/// How API keys and tokens begin (OpenAI, Anthropic, Hugging Face, Groq, xAI, GitHub,
/// GitLab, AWS, Google, Slack, and an HTTP `Authorization` value). Longer prefixes first.
pub const KEY_PREFIXES: [&str; 15] =
    ["sk-ant-", "sk-proj-", "sk-", "sk_", "hf_", "gsk_", "xai-", "ghp_", "gho_", "github_pat_", "glpat-", "AKIA", "AIza", "xox", "Bearer "];

/// Characters past a prefix that make a key: real keys carry 16 to 160 of them; a
/// model name that merely starts with `sk-` (`sk-tiny`) is shorter.
const KEY_TAIL: usize = 12;

/// The first thing in `text` that looks like an API key, shown as its prefix and
/// two characters (`sk-ab…`), so that the message naming it does not repeat it.
pub fn key_shaped(text: &str) -> Option<String> {
    let (start, prefix, _) = key_spans(text).next()?;
    let shown: String = text[start + prefix.len()..].chars().take(2).collect();
    Some(format!("{}{shown}…", prefix.trim_end()))
}

/// `text` with every key-shaped value ([`key_shaped`]) but its prefix replaced by
/// `[redacted]` (`sk-[redacted]`, which says what kind of key it was): for
/// untrusted text (a server's metric labels) that may carry a key nobody told us of.
pub fn mask_key_shaped(text: &str) -> Cow<'_, str> {
    let mut spans = key_spans(text).peekable();
    if spans.peek().is_none() {
        return Cow::Borrowed(text);
    }
    let (mut out, mut at) = (String::with_capacity(text.len()), 0);
    for (start, prefix, end) in spans {
        out.push_str(&text[at..start]);
        out.push_str(prefix.trim_end());
        out.push_str(if prefix.ends_with(' ') { " [redacted]" } else { "[redacted]" });
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Each key-shaped value in `text`: where it starts, its prefix, and where it ends.
fn key_spans(text: &str) -> impl Iterator<Item = (usize, &'static str, usize)> + '_ {
    let mut next = 0;
    text.char_indices().filter_map(move |(i, _)| {
        // A key starts a word; a path segment or an extension does not start a key
        // (`/data/hf_models/…`, `model.sk_x`).
        let word_start = text[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.')));
        if i < next || !word_start {
            return None;
        }
        let rest = &text[i..];
        for prefix in KEY_PREFIXES {
            let Some(tail) = rest.strip_prefix(prefix) else { continue };
            // A bearer token may be a JWT (dots) or base64; other keys are one word.
            let token = prefix == "Bearer ";
            let n: usize = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_') || (token && matches!(c, '.' | '~' | '+' | '/' | '=')))
                .map(char::len_utf8)
                .sum();
            // Real keys are random: long, and mixing at least two of lower case, upper
            // case and digits (a word or a name rarely does).
            let body = &tail[..n];
            let classes = [char::is_ascii_lowercase, char::is_ascii_uppercase, char::is_ascii_digit]
                .iter()
                .filter(|class| body.chars().any(|c| class(&c)))
                .count();
            if body.chars().count() >= KEY_TAIL && classes >= 2 {
                next = i + prefix.len() + n;
                return Some((i, prefix, next));
            }
        }
        None
    })
}

/// Command-line flags whose value is a secret (vLLM's `--api-key`, Hugging Face's
/// `--hf-token`; an HTTP header written as `Authorization: …`).
pub const SECRET_FLAGS: [&str; 3] = ["--api-key", "--hf-token", "--token"];

/// The values of secret-bearing flags found in an experiment file's command lines,
/// each replaced there by `[redacted N]`. Not serialized: the values live in memory
/// only, and [`LiteralSecrets::restore`] is called by the launcher alone.
#[derive(Debug, Clone, Default)]
pub struct LiteralSecrets {
    values: Vec<String>,
}

impl LiteralSecrets {
    /// `args` with every secret flag's value replaced by its placeholder. The value
    /// is the next argument (`--api-key x`), follows `=` (`--api-key=x`), or, inside
    /// one argument that is a shell script, the next word (`sh -c "… --api-key x"`).
    pub fn take(&mut self, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut value_next = false;
        for arg in args {
            if value_next {
                value_next = false;
                out.push(self.placeholder(arg));
                continue;
            }
            value_next = SECRET_FLAGS.contains(&arg.as_str());
            out.push(if value_next { arg.clone() } else { self.take_within(arg) });
        }
        out
    }

    /// The secrets inside one argument: `FLAG=value`, `FLAG value` and
    /// `Authorization: value` (to the end of its line).
    fn take_within(&mut self, arg: &str) -> String {
        let mut text = arg.to_string();
        let mut from = 0;
        while let Some((start, end)) = next_secret(&text, from) {
            let placeholder = self.placeholder(&text[start..end]);
            text.replace_range(start..end, &placeholder);
            from = start + placeholder.len();
        }
        text
    }

    fn placeholder(&mut self, value: &str) -> String {
        let n = match self.values.iter().position(|v| v == value) {
            Some(i) => i + 1,
            None => {
                self.values.push(value.to_string());
                self.values.len()
            }
        };
        format!("[redacted {n}]")
    }

    /// `arg` with every placeholder replaced by its value: for the argv that starts a
    /// server, and nothing else.
    pub fn restore(&self, arg: &str) -> String {
        let mut out = arg.to_string();
        for (i, value) in self.values.iter().enumerate().rev() {
            out = out.replace(&format!("[redacted {}]", i + 1), value);
        }
        out
    }
}

/// The byte range of the next secret value in `text` at or after `from`.
fn next_secret(text: &str, from: usize) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let mut best: Option<(usize, usize)> = None;
    for flag in SECRET_FLAGS.iter().copied().chain(["authorization:"]) {
        let mut at = from;
        while let Some(found) = lower[at..].find(flag).map(|i| i + at) {
            at = found + flag.len();
            let after = &text[at..];
            // `--api-key=x`, `--api-key x`; not `--api-key-file`.
            let sep = after.len() - after.trim_start_matches(['=', ' ', '\t']).len();
            if sep == 0 && flag != "authorization:" {
                continue;
            }
            let start = at + sep;
            let stop = if flag == "authorization:" { ['\n', '"', '\''].as_slice() } else { [' ', '\t', '\n', '"', '\''].as_slice() };
            let end = text[start..].find(stop).map_or(text.len(), |i| i + start);
            // An empty value (`--api-key "$KEY"`) or one already taken: look further.
            if end == start || text[start..end].starts_with("[redacted ") {
                continue;
            }
            if best.is_none_or(|(s, _)| start < s) {
                best = Some((start, end));
            }
            break;
        }
    }
    best
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

    #[test]
    fn key_shaped_words_are_masked_in_untrusted_text() {
        assert_eq!(mask_key_shaped("api_key=sk-canary0123456789abcdef,port=8000"), "api_key=sk-[redacted],port=8000");
        assert_eq!(mask_key_shaped("Authorization: Bearer eyJhbGci0iJIUzI1.eyJzdWIi0i.SflKxwRJ"), "Authorization: Bearer [redacted]");
        for path in ["/data/hf_models/Qwen2-VL-7B-Instruct", "/scratch/hf_cache_directory_2024/x", "sk-tiny-model", "hf_cache_directory"] {
            assert_eq!(key_shaped(path), None, "{path}");
        }
        assert!(matches!(mask_key_shaped("model=sk-tiny"), Cow::Borrowed(_)), "a short sk- name is not a key");
        assert!(!mask_key_shaped("x hf_aBcdefghijklmnopqrst y").contains("hf_aBc"));
    }

    #[test]
    fn key_shaped_values_are_found_and_not_repeated() {
        for key in [
            "sk-canary0123456789abcdef",
            "sk-ant-api03-abcdefghijklmnop",
            "hf_aBcdEfghIjklmnOpqrStu",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghij",
        ] {
            let found = key_shaped(&format!("--api-key={key}")).unwrap_or_else(|| panic!("{key}"));
            assert!(
                key.starts_with(found.trim_end_matches('…')) && found.chars().count() < 14 && found.chars().count() < key.len() - 8,
                "{found}"
            );
        }
        assert!(key_shaped("Authorization: Bearer abcdefgh1jklmnopq").is_some());
        for fine in
            ["sk-tiny", "qwen-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "task-0123456789abcdefgh", "http://h:8000/v1", "mask-abcdefghijklmnopqr"]
        {
            assert_eq!(key_shaped(fine), None, "{fine}");
        }
    }

    #[test]
    fn secret_flags_are_taken_out_and_only_the_launcher_puts_them_back() {
        let mut s = LiteralSecrets::default();
        let args: Vec<String> = ["--api-key", "hunter2", "--api-key-file", "f", "--hf-token=abc", "--port", "1"].map(String::from).to_vec();
        let shown = s.take(&args);
        assert_eq!(shown, ["--api-key", "[redacted 1]", "--api-key-file", "f", "--hf-token=[redacted 2]", "--port", "1"]);
        let script =
            s.take(&["sh".into(), "-c".into(), "vllm serve m --api-key hunter2 --port 9 && curl -H 'Authorization: Basic xyz'".into()]);
        assert_eq!(script[2], "vllm serve m --api-key [redacted 1] --port 9 && curl -H 'Authorization: [redacted 3]'");
        let back: Vec<String> = shown.iter().map(|a| s.restore(a)).collect();
        assert_eq!(back, args);
        assert_eq!(s.restore(&script[2]), "vllm serve m --api-key hunter2 --port 9 && curl -H 'Authorization: Basic xyz'");
        // An empty value first does not hide the real one after it.
        let two = s.take(&["sh".into(), "-c".into(), "a --api-key \"$K\"; b --api-key hunter3".into()]);
        assert_eq!(two[2], "a --api-key \"$K\"; b --api-key [redacted 4]");
        let all = Secrets::new([("K".into(), "sk-x".into())]).with_literals(&s);
        assert_eq!(all.redact("key hunter2, sk-x"), "key [redacted 1], [redacted $K]");
    }
}
