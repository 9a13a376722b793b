//! Source positions for semantic errors.
//!
//! Parsers report line and column for syntax and type errors themselves; errors found
//! later (an undefined model, an empty axis) carry a key path such as
//! `matrix.batch-size[2]`, and this module finds where that path is written.
//! It re-reads the text into a position tree only when there is an error to report.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path into the experiment file, printed as `matrix.batch-size[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn parse(dotted: &str) -> KeyPath {
        let mut segs = Vec::new();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    segs.push(Seg::Index(i));
                }
            }
        }
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

pub fn line_col(text: &str, byte_offset: usize) -> LineCol {
    let before = &text[..byte_offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    LineCol { line, column }
}

/// Where `path` is written, or the nearest ancestor that is.
pub fn locate(text: &str, yaml: bool, path: &KeyPath) -> Option<LineCol> {
    if yaml { locate_yaml(text, path) } else { locate_toml(text, path) }
}

fn locate_toml(text: &str, path: &KeyPath) -> Option<LineCol> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table = root.get_ref();
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    for seg in &path.0 {
        let next = match (seg, value.map(|v| v.get_ref())) {
            (Seg::Key(k), None) => table.iter().find(|(key, _)| key.get_ref().as_ref() == k),
            (Seg::Key(k), Some(DeValue::Table(t))) => t.iter().find(|(key, _)| key.get_ref().as_ref() == k),
            (Seg::Index(i), Some(DeValue::Array(a))) => {
                let v = a.get(*i)?;
                best = Some(v.span().start);
                value = Some(v);
                continue;
            }
            _ => None,
        };
        let Some((key, v)) = next else { break };
        // Point at a leaf's value (what is wrong), at a table's key otherwise.
        best = Some(if matches!(v.get_ref(), DeValue::Table(_)) { key.span().start } else { v.span().start });
        if let DeValue::Table(t) = v.get_ref() {
            table = t;
        }
        value = Some(v);
    }
    best.map(|off| line_col(text, off))
}

/// A YAML document as a tree of positions (serde-saphyr's `Spanned` on every node).
enum YNode {
    Map(Vec<(String, serde_saphyr::Spanned<YNode>)>),
    Seq(Vec<serde_saphyr::Spanned<YNode>>),
    Leaf,
}

impl<'de> Deserialize<'de> for YNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = YNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<YNode, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<serde_json::Value>()? {
                    let key = match k {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.push((key, m.next_value()?));
                }
                Ok(YNode::Map(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<YNode, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element()? {
                    out.push(v);
                }
                Ok(YNode::Seq(out))
            }
            fn visit_bool<E>(self, _: bool) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_unit<E>(self) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
            fn visit_none<E>(self) -> Result<YNode, E> {
                Ok(YNode::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

fn locate_yaml(text: &str, path: &KeyPath) -> Option<LineCol> {
    let root: serde_saphyr::Spanned<YNode> = serde_saphyr::from_str(text).ok()?;
    let mut node = &root;
    let mut best = None;
    for seg in &path.0 {
        let next = match (seg, &node.value) {
            (Seg::Key(k), YNode::Map(entries)) => entries.iter().find(|(key, _)| key == k).map(|(_, v)| v),
            (Seg::Index(i), YNode::Seq(items)) => items.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        node = next;
        best = Some(LineCol { line: node.referenced.line() as usize, column: node.referenced.column() as usize });
    }
    best
}

/// The candidate closest to `word`, if any is close enough for a did-you-mean hint.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_paths_are_found() {
        let text = "name = \"x\"\n[matrix]\nmodel = [\"a\"]\nbatch-size = [1, 0, 4]\n";
        let at = locate(text, false, &KeyPath::parse("matrix.batch-size[1]")).unwrap();
        assert_eq!(at, LineCol { line: 4, column: 18 });
        let at = locate(text, false, &KeyPath::parse("matrix.model")).unwrap();
        assert_eq!(at, LineCol { line: 3, column: 9 });
    }

    #[test]
    fn yaml_paths_are_found() {
        let text = "name: x\nmatrix:\n  model: [a]\n  batch-size:\n    - 1\n    - 0\n";
        let at = locate(text, true, &KeyPath::parse("matrix.batch-size[1]")).unwrap();
        assert_eq!(at.line, 6);
        let at = locate(text, true, &KeyPath::parse("matrix.model")).unwrap();
        assert_eq!(at.line, 3);
    }

    #[test]
    fn key_paths_round_trip() {
        assert_eq!(KeyPath::parse("matrix.exclude[0].frames").to_string(), "matrix.exclude[0].frames");
    }
}
