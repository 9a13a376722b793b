//! Why a step must run again: the difference between its key's preimage and the one
//! of its last run (or, when its coordinates changed in one axis, of the step it
//! replaced), as `max-tokens changed 32 → 64`, `input changed: datagen[…] reran`,
//! `output missing`.

use std::collections::{BTreeMap, HashMap};

use super::Step;
use crate::cache::{Cache, Lookup, StepRecord};
use crate::hash::{self, StepKey};

/// Previous steps by (kind, coordinates with one axis left out), so a step whose
/// coordinates changed in one axis can still be compared with its predecessor.
pub(super) struct NearIndex {
    by_partial: HashMap<(String, String), StepRecord>,
}

impl NearIndex {
    pub(super) fn new<'a>(previous: impl Iterator<Item = &'a StepRecord>) -> Self {
        let mut by_partial = HashMap::new();
        for rec in previous {
            for skip in 0..rec.coords.len() {
                by_partial.entry((rec.kind.clone(), partial(&rec.coords, skip))).or_insert_with(|| rec.clone());
            }
        }
        NearIndex { by_partial }
    }

    fn find(&self, kind: &str, coords: &[(String, String)]) -> Option<&StepRecord> {
        (0..coords.len()).find_map(|skip| self.by_partial.get(&(kind.to_string(), partial(coords, skip))))
    }
}

fn partial(coords: &[(String, String)], skip: usize) -> String {
    coords.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, (k, v))| format!("{k}={v};")).collect()
}

/// Why a step whose key is not in the cache must run.
pub(super) fn explain(
    cache: &Cache,
    step: &Step,
    coords: &[(String, String)],
    key: &StepKey,
    previous: &BTreeMap<String, StepRecord>,
    near: &NearIndex,
    lookup: &Lookup,
) -> Vec<String> {
    let prev = previous.get(&step.id).or_else(|| near.find(step.kind.name(), coords));
    let Some(prev) = prev else { return vec!["new".into()] };
    let Some(old) = prev.preimage(cache) else { return vec!["new (the previous version's entry is gone)".into()] };
    let mut reasons = diff(&old, key);
    if reasons.is_empty() {
        reasons.push(match lookup {
            Lookup::Damaged(why) => why.clone(),
            _ => "output missing".into(),
        });
    }
    reasons
}

fn diff(old: &StepKey, new: &StepKey) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    hash::flatten(&serde_json::to_value(old).unwrap_or_default(), "", &mut a);
    hash::flatten(&serde_json::to_value(new).unwrap_or_default(), "", &mut b);
    let mut reasons = Vec::new();
    let mut changed_inputs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        // The cell's coordinates repeat what the other parameters say, less readably.
        if k.starts_with("params.cell") {
            continue;
        }
        if let Some(input) = k.strip_prefix("inputs.") {
            changed_inputs.push(input.to_string());
            continue;
        }
        let name = k.strip_prefix("params.").unwrap_or(k);
        let show = |v: Option<&String>| v.map_or("(unset)".to_string(), |s| s.trim_matches('"').to_string());
        reasons.push(match (x, y) {
            (Some(_), Some(_)) => format!("{name} changed {} → {}", show(x), show(y)),
            (None, Some(_)) => format!("{name} added: {}", show(y)),
            _ => format!("{name} removed (was {})", show(x)),
        });
    }
    match changed_inputs.len() {
        0 => {}
        1..=3 => reasons.extend(changed_inputs.into_iter().map(|i| format!("input changed: {i} reran"))),
        n => reasons.push(format!("input changed: {n} upstream steps reran")),
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(params: serde_json::Value, inputs: &[(&str, &str)]) -> StepKey {
        StepKey {
            schema: hash::KEY_SCHEMA,
            kind: "measure".into(),
            version: 1,
            params: hash::Canonical::from_value(&params),
            inputs: inputs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            server: None,
            hardware: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn a_change_is_named_by_its_key_and_values() {
        let old = key(serde_json::json!({"max-tokens": 32, "cell": [["seed", "1"]], "turns": 60}), &[("datagen[seed=1]", "aa")]);
        let new = key(serde_json::json!({"max-tokens": 64, "cell": [["seed", "2"]], "frames-as": "video"}), &[("datagen[seed=1]", "bb")]);
        assert_eq!(
            diff(&old, &new),
            ["frames-as added: video", "max-tokens changed 32 → 64", "turns removed (was 60)", "input changed: datagen[seed=1] reran"]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn many_changed_inputs_are_counted() {
        let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
        let with = |digest: &'static str| key(serde_json::json!({}), &names.iter().map(|n| (n.as_str(), digest)).collect::<Vec<_>>());
        assert_eq!(diff(&with("a"), &with("b")), ["input changed: 5 upstream steps reran"]);
    }
}
