//! Expand an experiment's axes into cells: the cartesian product, minus `exclude`
//! rules, plus `include` rules (applied in that order, as in GitHub Actions).
//!
//! A cell is one measurement configuration. Cells are sorted and unique; a rule that
//! changes nothing is an error, because it almost always hides a typo.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::{self, ConfigError, Experiment, Issue, Rule, Source};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub model: String,
    pub variant: String,
    pub seed: u64,
    pub batch_size: u32,
    pub frames: u32,
    /// Custom axes in declaration order: (name, value as JSON text).
    pub custom: Vec<(String, String)>,
}

impl Cell {
    /// The value of `axis` as JSON, for matching rules and `--only`.
    pub fn value(&self, axis: &str) -> Option<serde_json::Value> {
        Some(match axis {
            "model" => self.model.clone().into(),
            "variant" => self.variant.clone().into(),
            "seed" => self.seed.into(),
            "batch-size" => self.batch_size.into(),
            "frames" => self.frames.into(),
            other => {
                let (_, v) = self.custom.iter().find(|(n, _)| n == other)?;
                serde_json::from_str(v).ok()?
            }
        })
    }

    /// `(axis, value)` pairs in canonical order, values as users write them.
    pub fn coords(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("model".to_string(), self.model.clone()),
            ("variant".to_string(), self.variant.clone()),
            ("seed".to_string(), self.seed.to_string()),
            ("batch-size".to_string(), self.batch_size.to_string()),
            ("frames".to_string(), self.frames.to_string()),
        ];
        out.extend(self.custom.iter().map(|(n, v)| (n.clone(), v.trim_matches('"').to_string())));
        out
    }

    fn matches(&self, rule: &Rule) -> bool {
        rule.conditions.iter().all(|(axis, accepted)| self.value(axis).is_some_and(|v| accepted.iter().any(|a| json_eq(a, &v))))
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.coords().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Numbers compare by value (`1` matches `1.0`); everything else structurally.
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub fn expand(exp: &Experiment, source: &Source) -> Result<Vec<Cell>, ConfigError> {
    let m = &exp.matrix;
    let all = |axis: &str| -> Vec<serde_json::Value> {
        match axis {
            "model" => m.models.iter().map(|s| s.clone().into()).collect(),
            "variant" => m.variants.iter().map(|s| s.clone().into()).collect(),
            "seed" => m.seeds.iter().map(|&s| s.into()).collect(),
            "batch-size" => m.batch_sizes.iter().map(|&s| s.into()).collect(),
            "frames" => m.frames.iter().map(|&s| s.into()).collect(),
            other => m.custom.iter().find(|c| c.name == other).map(|c| c.values.clone()).unwrap_or_default(),
        }
    };
    let axis_names: Vec<String> =
        config::BUILTIN_AXES.iter().map(|s| s.to_string()).chain(m.custom.iter().map(|c| c.name.clone())).collect();
    let product = |choose: &dyn Fn(&str) -> Vec<serde_json::Value>| -> Vec<Cell> {
        let mut cells = vec![Vec::<serde_json::Value>::new()];
        for axis in &axis_names {
            let values = choose(axis);
            cells = cells
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut p = prefix.clone();
                        p.push(v.clone());
                        p
                    })
                })
                .collect();
        }
        cells.into_iter().filter_map(|vals| to_cell(exp, &axis_names, vals)).collect()
    };

    let mut cells: BTreeSet<Cell> = product(&all).into_iter().collect();
    let mut issues: Vec<Issue> = Vec::new();
    for rule in &m.exclude {
        let before = cells.len();
        cells.retain(|c| !c.matches(rule));
        if cells.len() == before {
            issues.push(config::issue_at(
                source,
                &rule.key_path.to_string(),
                "exclude rule matches no cell".into(),
                Some("check its axis values against the matrix; a rule that removes nothing usually hides a typo".into()),
            ));
        }
    }
    for rule in &m.include {
        let chosen = product(&|axis: &str| rule.conditions.get(axis).cloned().unwrap_or_else(|| all(axis)));
        let before = cells.len();
        cells.extend(chosen);
        if cells.len() == before {
            issues.push(config::issue_at(
                source,
                &rule.key_path.to_string(),
                "include rule adds no cell".into(),
                Some("every cell it names is already in the matrix, or names a model/variant that is not defined".into()),
            ));
        }
    }
    if cells.is_empty() && issues.is_empty() {
        issues.push(config::issue_at(
            source,
            "matrix",
            "the matrix has no cells".into(),
            Some("the exclude rules remove every cell".into()),
        ));
    }
    if !issues.is_empty() {
        return Err(ConfigError::Invalid { file: source.display.clone(), issues });
    }
    Ok(cells.into_iter().collect())
}

/// A cell from one value per axis; `None` where the model lacks the variant.
fn to_cell(exp: &Experiment, names: &[String], vals: Vec<serde_json::Value>) -> Option<Cell> {
    let model = vals[0].as_str()?.to_string();
    let variant = vals[1].as_str()?.to_string();
    if !exp.models.get(&model)?.variants.contains_key(&variant) {
        return None;
    }
    Some(Cell {
        model,
        variant,
        seed: vals[2].as_u64()?,
        batch_size: vals[3].as_u64()? as u32,
        frames: vals[4].as_u64()? as u32,
        custom: names[5..].iter().cloned().zip(vals[5..].iter().map(|v| v.to_string())).collect(),
    })
}
