//! Step keys: blake3 over one canonical, reviewed preimage.
//!
//! [`StepKey`] is the only thing that decides whether a step is up to date. It holds
//! the key-schema version, the step kind and its implementation version, normalized
//! parameters (defaults filled in), the content digests of upstream outputs, the
//! server configuration a measurement talks to, the hardware it runs on, and an
//! explicit allow-list of environment variables. It never holds the wall clock, paths
//! of the checkout, other environment variables or secrets.
//!
//! Any change to the preimage's shape bumps [`KEY_SCHEMA`] in the same commit; the
//! golden-hash tests below fail otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Version of the preimage layout. Bumping it invalidates every cached step.
/// 2: a secret flag's value in a server's command line (`--api-key x`) enters keys as
/// `[redacted N]`; keys written before held the value itself, and no entry of theirs
/// should be found (or kept by `cache gc`) again.
pub const KEY_SCHEMA: u32 = 2;

/// Environment variables that change what a measurement means (server behaviour),
/// and so enter the key of the steps that talk to a server when they are set.
pub const ENV_ALLOW_LIST: [&str; 3] = ["VLLM_ATTENTION_BACKEND", "VLLM_USE_V1", "VLLM_ENABLE_V1_MULTIPROCESSING"];

/// A 256-bit blake3 digest, shown as 64 hex characters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn parse(hex: &str) -> Option<Digest> {
        blake3::Hash::from_hex(hex).ok().map(|h| Digest(*h.as_bytes()))
    }

    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The preimage of a step's cache key.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
///
/// Fields are declared in sorted order and every map is sorted, so serializing the
/// struct directly gives the canonical text (`golden_hash_is_pinned` checks this).
pub struct StepKey {
    pub env: BTreeMap<String, String>,
    pub hardware: Option<String>,
    /// Upstream step id → hex digest of its outputs.
    pub inputs: BTreeMap<String, String>,
    pub kind: String,
    pub params: Canonical,
    pub schema: u32,
    pub server: Option<Canonical>,
    pub version: u32,
}

impl StepKey {
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new_derive_key("pipeline step key");
        // Through a buffer: many tiny hash updates cost more than the bytes, and the
        // text of an aggregate (every measure's id and digest, megabytes at 100,000
        // cells) need not exist whole. Writing into the hasher cannot fail.
        let mut out = io::BufWriter::with_capacity(8 * 1024, &mut hasher);
        self.write_canonical(&mut out);
        let _ = out.flush();
        drop(out);
        Digest(*hasher.finalize().as_bytes())
    }

    /// The canonical text: what [`StepKey::digest`] hashes.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.params.as_str().len() + 100 * self.inputs.len());
        self.write_canonical(&mut out);
        out
    }

    /// The canonical text, written field by field in the struct's (sorted) order, with
    /// the parameters and server copied as the text they already are: the same bytes
    /// as serializing the struct (`canonical_text_is_the_serialization` checks this),
    /// without re-serializing a tree per step.
    fn write_canonical(&self, mut out: impl io::Write) {
        let server = self.server.as_ref().map_or("null", Canonical::as_str);
        // Strings, numbers and maps of strings serialize without error; the writers
        // here (a Vec, a buffered hasher) never fail.
        let _ = (|| -> io::Result<()> {
            out.write_all(b"{\"env\":")?;
            serde_json::to_writer(&mut out, &self.env)?;
            out.write_all(b",\"hardware\":")?;
            serde_json::to_writer(&mut out, &self.hardware)?;
            out.write_all(b",\"inputs\":")?;
            serde_json::to_writer(&mut out, &self.inputs)?;
            out.write_all(b",\"kind\":")?;
            serde_json::to_writer(&mut out, &self.kind)?;
            out.write_all(b",\"params\":")?;
            out.write_all(self.params.as_str().as_bytes())?;
            out.write_all(b",\"schema\":")?;
            serde_json::to_writer(&mut out, &self.schema)?;
            out.write_all(b",\"server\":")?;
            out.write_all(server.as_bytes())?;
            out.write_all(b",\"version\":")?;
            serde_json::to_writer(&mut out, &self.version)?;
            out.write_all(b"}")
        })();
    }
}

/// JSON kept as its canonical text (sorted keys, no whitespace): a step's parameters
/// and a server's configuration, which every command hashes for every step. As text
/// they cost a few hundred bytes each; as parsed trees, ten thousand of them were half
/// of a plan's memory (benches/noop.sh).
#[derive(Clone, PartialEq, Eq)]
pub struct Canonical(Arc<str>);

impl Canonical {
    /// `value` serialized canonically: through a [`Value`], whose maps are sorted (a
    /// struct serializes its fields in declaration order).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Canonical {
        // Strings, numbers, lists and maps: serializing them cannot fail.
        Canonical::from_value(&serde_json::to_value(value).unwrap_or_default())
    }

    pub fn from_value(value: &Value) -> Canonical {
        // Into a buffer, not through `Display` (which passes each token through a
        // `fmt::Formatter`): the same bytes, in a third less time at 100,000 steps.
        Canonical(serde_json::to_string(value).unwrap_or_default().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tree, for reading one field or explaining a change.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Canonical {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Canonical {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Canonical::from_value(&v))
    }
}

/// The allow-listed environment as it is now.
pub fn allowed_env() -> BTreeMap<String, String> {
    ENV_ALLOW_LIST.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect()
}

/// Flatten a JSON value into `path → scalar text`, for explaining what changed.
pub fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(v, &p, out);
            }
        }
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{prefix}[{i}]"), out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The canonical text: serde_json's compact output, whose `Map` is a `BTreeMap`
    /// while the `preserve_order` feature is off (`key_order_does_not_matter` fails
    /// if that ever changes).
    fn canonical(value: &Value, out: &mut String) {
        let mut buf = std::mem::take(out).into_bytes();
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, value);
        *out = String::from_utf8(buf).unwrap_or_default();
    }

    fn key(params: Value) -> StepKey {
        let params = Canonical::from_value(&params);
        StepKey {
            schema: KEY_SCHEMA,
            kind: "datagen".into(),
            version: 1,
            params,
            inputs: BTreeMap::new(),
            server: None,
            hardware: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn golden_hash_is_pinned() {
        // If this fails, the preimage changed: bump KEY_SCHEMA and update the value.
        // The value was checked independently with Python's `blake3` package:
        // blake3(canonical_text, derive_key_context="pipeline step key").
        let k = key(json!({"seed": 66, "turns": 60, "resolution": [1280, 720]}));
        let text = serde_json::to_string(&k).unwrap();
        let mut sorted = String::new();
        canonical(&serde_json::to_value(&k).unwrap(), &mut sorted);
        assert_eq!(text, sorted, "the struct's own serialization is canonical");
        assert_eq!(
            text,
            r#"{"env":{},"hardware":null,"inputs":{},"kind":"datagen","params":{"resolution":[1280,720],"seed":66,"turns":60},"schema":2,"server":null,"version":1}"#
        );
        assert_eq!(k.digest().hex(), "9223f18dc049ed285cb9a33c86a5ddbd1d5801c6258a1438d49dcabaaa1fcdea");
    }

    /// The digest's hand-written canonical text is exactly the struct's serialization,
    /// for keys with every field set (strings that need escaping included), so the
    /// faster path changed no key.
    #[test]
    fn canonical_text_is_the_serialization() {
        let mut k = key(json!({"cell": [["model", "m\"1"]], "rate": 0.1, "list": [1, 2.5, null], "z": {"b": true, "a": "é"}}));
        k.inputs.insert("datagen[seed=1]".into(), "ab".into());
        k.inputs.insert("datagen[seed=2]".into(), "cd\u{1}".into());
        k.server = Some(Canonical::from_value(&json!({"args": ["--x", "1"], "backend": "vllm", "url": null})));
        k.hardware = Some("NVIDIA H100 80GB HBM3 ×2".into());
        k.env.insert("VLLM_USE_V1".into(), "1".into());
        for k in [key(json!({})), key(json!({"seed": 66, "turns": 60, "resolution": [1280, 720]})), k] {
            assert_eq!(String::from_utf8(k.canonical()).unwrap(), serde_json::to_string(&k).unwrap());
        }
    }

    /// The digest hashes the canonical text, through a buffer smaller than a large key's
    /// text (an aggregate's names every measure).
    #[test]
    fn a_large_key_hashes_its_whole_text() {
        let mut k = key(json!({"seed": 1}));
        for i in 0..2_000 {
            k.inputs.insert(format!("measure[model=a,seed={i}]"), format!("{i:064x}"));
        }
        assert!(k.canonical().len() > 100_000);
        let whole = blake3::Hasher::new_derive_key("pipeline step key").update(&k.canonical()).finalize();
        assert_eq!(k.digest().0, *whole.as_bytes());
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": 3, "y": 2}, "b": 1}"#).unwrap();
        let mut text = String::new();
        canonical(&a, &mut text);
        assert_eq!(text, r#"{"a":{"x":3,"y":2},"b":1}"#);
        assert_eq!(key(a).digest(), key(b).digest());
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = key(json!({"seed": 1}));
        let mut variants = vec![];
        let mut k = base.clone();
        k.schema += 1;
        variants.push(k);
        let mut k = base.clone();
        k.kind = "measure".into();
        variants.push(k);
        let mut k = base.clone();
        k.version += 1;
        variants.push(k);
        let mut k = base.clone();
        k.params = Canonical::from_value(&json!({"seed": 2}));
        variants.push(k);
        let mut k = base.clone();
        k.inputs.insert("datagen[seed=1]".into(), "ab".into());
        variants.push(k);
        let mut k = base.clone();
        k.server = Some(Canonical::from_value(&json!({"tp": 2})));
        variants.push(k);
        let mut k = base.clone();
        k.hardware = Some("NVIDIA H100".into());
        variants.push(k);
        let mut k = base.clone();
        k.env.insert("VLLM_USE_V1".into(), "1".into());
        variants.push(k);
        for v in variants {
            assert_ne!(v.digest(), base.digest(), "{v:?}");
        }
    }
}
