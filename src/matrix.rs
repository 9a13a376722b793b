//! Expand an experiment's axes into cells: the cartesian product, minus `exclude`
//! rules, plus `include` rules (applied in that order, as in GitHub Actions).
//!
//! A cell is one measurement configuration. Cells are sorted and unique; a rule that
//! changes nothing is an error, because it almost always hides a typo.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::{self, ConfigError, Experiment, Issue, Rule, Source, limits};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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
        // A string as written, unescaped (`a"b`, not `a\"b`); other values as JSON.
        out.extend(self.custom.iter().map(|(n, v)| (n.clone(), shown(v).into_owned())));
        out
    }

    fn matches(&self, rule: &Rule) -> bool {
        rule.conditions.iter().all(|(axis, accepted)| self.value(axis).is_some_and(|v| accepted.iter().any(|a| json_eq(a, &v))))
    }
}

/// `model=…,variant=…,seed=…,batch-size=…,frames=…` and the custom axes: [`Cell::coords`]
/// as `axis=value` pairs, written without building them (every step id is one).
impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model={},variant={},seed={},batch-size={},frames={}",
            self.model, self.variant, self.seed, self.batch_size, self.frames
        )?;
        for (name, value) in &self.custom {
            write!(f, ",{name}={}", shown(value))?;
        }
        Ok(())
    }
}

/// A custom axis's value as users write it: a string unescaped (`a"b`, not `a\"b`),
/// other values as their JSON text.
fn shown(json: &str) -> std::borrow::Cow<'_, str> {
    serde_json::from_str::<String>(json).map_or(std::borrow::Cow::Borrowed(json), std::borrow::Cow::Owned)
}

/// Numbers compare by value (`1` matches `1.0`); everything else structurally.
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The experiment's cells, or every problem with its rules. The full product (and
/// each include rule's) is counted before anything is built and refused past
/// [`limits::MAX_CELLS`]; cells are then generated one at a time and only those kept
/// are stored, so memory follows the cells planned.
pub fn expand(exp: &Experiment, source: &Source) -> Result<Vec<Cell>, ConfigError> {
    let m = &exp.matrix;
    let axis_names: Vec<String> =
        config::BUILTIN_AXES.iter().map(|s| s.to_string()).chain(m.custom.iter().map(|c| c.name.clone())).collect();
    let all = axis_values(m, &axis_names);
    if let Some(issue) = too_big(source, &axis_names, "matrix", &all) {
        return Err(ConfigError::invalid(source, vec![issue]));
    }
    let mut cells: BTreeSet<Cell> = BTreeSet::new();
    let mut issues = excluded(exp, source, &axis_names, &all, &mut cells);
    issues.extend(included(exp, source, &axis_names, &all, &mut cells));
    if cells.len() as u64 > limits::MAX_CELLS {
        issues.push(config::issue_at(
            source,
            "matrix.include",
            format!(
                "the rules bring the matrix to {} cells; at most {} are planned",
                cells.len(),
                limits::count(limits::MAX_CELLS as u128)
            ),
            Some("split the study into several experiments".into()),
        ));
    }
    if cells.is_empty() && issues.is_empty() {
        issues.push(config::issue_at(
            source,
            "matrix",
            "the matrix has no cells".into(),
            Some("the exclude rules remove every cell".into()),
        ));
    }
    issues.extend(imported(exp, source, &cells));
    if !issues.is_empty() {
        return Err(ConfigError::invalid(source, issues));
    }
    Ok(cells.into_iter().collect())
}

/// Each axis's values, in `names` order.
fn axis_values(m: &config::Matrix, names: &[String]) -> Vec<Vec<serde_json::Value>> {
    names
        .iter()
        .map(|axis| match axis.as_str() {
            "model" => m.models.iter().map(|s| s.clone().into()).collect(),
            "variant" => m.variants.iter().map(|s| s.clone().into()).collect(),
            "seed" => m.seeds.iter().map(|&s| s.into()).collect(),
            "batch-size" => m.batch_sizes.iter().map(|&s| s.into()).collect(),
            "frames" => m.frames.iter().map(|&s| s.into()).collect(),
            other => m.custom.iter().find(|c| c.name == other).map(|c| c.values.clone()).unwrap_or_default(),
        })
        .collect()
}

/// An issue at `path` when the product of `axes` is past [`limits::MAX_CELLS`].
fn too_big(source: &Source, names: &[String], path: &str, axes: &[Vec<serde_json::Value>]) -> Option<Issue> {
    let sizes: Vec<u128> = axes.iter().map(|a| a.len() as u128).collect();
    let total = sizes.iter().try_fold(1u128, |acc, &n| acc.checked_mul(n)).unwrap_or(u128::MAX);
    (total > limits::MAX_CELLS as u128).then(|| {
        let factors: Vec<String> = names.iter().zip(&sizes).map(|(a, &n)| format!("{} {a}", limits::count(n))).collect();
        config::issue_at(
            source,
            path,
            format!(
                "would expand to {} cells ({}, before include/exclude rules); at most {} are planned",
                limits::count(total),
                factors.join(" × "),
                limits::count(limits::MAX_CELLS as u128)
            ),
            Some("split the study into several experiments, or use fewer values per axis".into()),
        )
    })
}

/// Into `cells`, the product of the axes less what the exclude rules remove; an issue
/// for each rule that removes nothing.
fn excluded(exp: &Experiment, source: &Source, names: &[String], all: &[Vec<serde_json::Value>], cells: &mut BTreeSet<Cell>) -> Vec<Issue> {
    let rules = &exp.matrix.exclude;
    let mut excluded = vec![0usize; rules.len()];
    for_each_cell(exp, names, all, |cell| {
        // Rules apply in order: a cell counts for the first exclude rule it matches.
        match rules.iter().position(|rule| cell.matches(rule)) {
            Some(r) => excluded[r] += 1,
            None => {
                cells.insert(cell);
            }
        }
    });
    let mut issues = Vec::new();
    for (rule, n) in rules.iter().zip(&excluded) {
        if *n == 0 {
            issues.push(config::issue_at(
                source,
                &rule.key_path.to_string(),
                "exclude rule matches no cell".into(),
                Some("check its axis values against the matrix; a rule that removes nothing usually hides a typo".into()),
            ));
        }
    }
    issues
}

/// Into `cells`, what each include rule adds; an issue for each rule that adds nothing
/// or would expand past the limit.
fn included(exp: &Experiment, source: &Source, names: &[String], all: &[Vec<serde_json::Value>], cells: &mut BTreeSet<Cell>) -> Vec<Issue> {
    let mut issues = Vec::new();
    for rule in &exp.matrix.include {
        let chosen: Vec<Vec<serde_json::Value>> =
            names.iter().zip(all).map(|(axis, values)| rule.conditions.get(axis).cloned().unwrap_or_else(|| values.clone())).collect();
        if let Some(issue) = too_big(source, names, &rule.key_path.to_string(), &chosen) {
            issues.push(issue);
            continue;
        }
        let before = cells.len();
        for_each_cell(exp, names, &chosen, |cell| {
            cells.insert(cell);
        });
        if cells.len() == before {
            issues.push(config::issue_at(
                source,
                &rule.key_path.to_string(),
                "include rule adds no cell".into(),
                Some("every cell it names is already in the matrix, or names a model/variant that is not defined".into()),
            ));
        }
    }
    issues
}

/// An imported model's cells: each seed needs its file, and a file is one cell (its
/// batch size and frames are what that run used, not axes to sweep).
fn imported(exp: &Experiment, source: &Source, cells: &BTreeSet<Cell>) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut seen: BTreeSet<(&str, u64)> = BTreeSet::new();
    for cell in cells {
        let Some(import) = &exp.models[&cell.model].import else { continue };
        let at = format!("models.{}.results", cell.model);
        let first = seen.insert((cell.model.as_str(), cell.seed));
        if !import.files.contains_key(&cell.seed) {
            if first {
                issues.push(config::issue_at(
                    source,
                    &at,
                    format!("no file for seed {} of the matrix", cell.seed),
                    Some(format!(
                        "add {} = \"path/to/its/results\", or leave the seed out for this model: [[matrix.exclude]] model = \"{}\", seed = {}",
                        cell.seed, cell.model, cell.seed
                    )),
                ));
            }
        } else if !first {
            issues.push(config::issue_at(
                source,
                &at,
                format!("the matrix gives seed {} of `{}` more than one cell ({cell}, …)", cell.seed, cell.model),
                Some(format!(
                    "one file is one run: keep one batch size and frame count for it with [[matrix.exclude]] rules on model = \"{}\"",
                    cell.model
                )),
            ));
        }
    }
    issues
}

/// Call `f` with every cell of the product of `axes` (one list of values per axis, in
/// `names` order), skipping combinations that are not cells (a model without the
/// variant). An odometer over value indices: nothing but the current cell is built.
fn for_each_cell(exp: &Experiment, names: &[String], axes: &[Vec<serde_json::Value>], mut f: impl FnMut(Cell)) {
    if axes.iter().any(Vec::is_empty) {
        return;
    }
    let mut idx = vec![0usize; axes.len()];
    loop {
        let vals: Vec<&serde_json::Value> = idx.iter().zip(axes).map(|(&i, values)| &values[i]).collect();
        if let Some(cell) = to_cell(exp, names, &vals) {
            f(cell);
        }
        // Advance the last axis fastest, as the nested loops of a product would.
        let mut a = axes.len();
        loop {
            if a == 0 {
                return;
            }
            a -= 1;
            idx[a] += 1;
            if idx[a] < axes[a].len() {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// A cell from one value per axis; `None` where the model lacks the variant.
fn to_cell(exp: &Experiment, names: &[String], vals: &[&serde_json::Value]) -> Option<Cell> {
    let model = vals[0].as_str()?.to_string();
    let variant = vals[1].as_str()?.to_string();
    if !exp.models.get(&model)?.variants.contains_key(&variant) {
        return None;
    }
    Some(Cell {
        model,
        variant,
        seed: vals[2].as_u64()?,
        batch_size: u32::try_from(vals[3].as_u64()?).ok()?,
        frames: u32::try_from(vals[4].as_u64()?).ok()?,
        custom: names[5..].iter().cloned().zip(vals[5..].iter().map(|v| v.to_string())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cells(matrix: &str) -> Result<Vec<String>, String> {
        let text = format!(
            "name = \"t\"\n[models.a]\nbackend = \"sim\"\nvariants.q = {{}}\n[models.b]\nbackend = \"sim\"\n[matrix]\nmodel = [\"a\", \"b\"]\nvariant = [\"base\", \"q\"]\n{matrix}"
        );
        let source = Source { display: "t.toml".into(), text, yaml: false, base_dir: Default::default(), path: None };
        let exp = config::load(&source).map_err(|e| e.to_string())?;
        expand(&exp, &source).map(|c| c.iter().map(|c| c.to_string()).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_model_without_a_variant_skips_it() {
        let c = cells("").unwrap();
        assert_eq!(
            c,
            [
                "model=a,variant=base,seed=0,batch-size=1,frames=1",
                "model=a,variant=q,seed=0,batch-size=1,frames=1",
                "model=b,variant=base,seed=0,batch-size=1,frames=1"
            ]
        );
    }

    #[test]
    fn excludes_apply_before_includes_and_each_must_act() {
        let c = cells("seed = [1, 2]\nexclude = [{ model = \"a\", seed = 2 }]\ninclude = [{ model = \"b\", seed = 7 }]").unwrap();
        assert_eq!(c.len(), 3 * 2 - 2 + 1, "{c:?}");
        assert!(c.iter().all(|c| !c.starts_with("model=a") || c.contains("seed=1")));
        assert!(c.contains(&"model=b,variant=base,seed=7,batch-size=1,frames=1".to_string()));
        // A second exclude rule that only matches what the first removed counts as no-op.
        let e = cells("seed = [1, 2]\nexclude = [{ seed = 2 }, { model = \"a\", seed = 2 }]").unwrap_err();
        assert!(e.contains("matrix.exclude[1]: exclude rule matches no cell"), "{e}");
        let e = cells("include = [{ model = \"a\" }]").unwrap_err();
        assert!(e.contains("matrix.include[0]: include rule adds no cell"), "{e}");
    }

    #[test]
    fn the_product_is_counted_before_it_is_built() {
        let seeds: Vec<String> = (0..400).map(|s| s.to_string()).collect();
        let batches: Vec<String> = (1..=300).map(|s| s.to_string()).collect();
        let e = cells(&format!("seed = [{}]\nbatch-size = [{}]", seeds.join(","), batches.join(","))).unwrap_err();
        assert!(e.contains("would expand to 480,000 cells (2 model × 2 variant × 400 seed × 300 batch-size × 1 frames"), "{e}");
        let ok = cells(&format!("seed = [{}]\nbatch-size = [{}]", seeds.join(","), batches[..40].join(","))).unwrap();
        assert_eq!(ok.len(), 3 * 400 * 40);
    }

    #[test]
    fn a_cell_is_written_as_its_coordinates() {
        let cell = Cell {
            model: "a".into(),
            variant: "q".into(),
            seed: 7,
            batch_size: 2,
            frames: 3,
            custom: vec![("tag".into(), r#""x\"y""#.into()), ("rate".into(), "1.5".into())],
        };
        let joined: Vec<String> = cell.coords().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(cell.to_string(), joined.join(","));
        assert_eq!(cell.to_string(), r#"model=a,variant=q,seed=7,batch-size=2,frames=3,tag=x"y,rate=1.5"#);
    }
}
