//! The `quality` and `quality_per_turn` tables: each curve's scores per method, from
//! the quality steps' rows.
//!
//! A curve is a cell less its seed. Its score per method is the mean over every scored
//! turn of every seed's conversations, with a 95% bootstrap interval that resamples
//! whole conversations (a conversation's turns are not independent): the units are
//! (seed, conversation), or for conversations from a file the file's conversation
//! (seeds that draw it again ask the same questions), each its sum of scores and count
//! of scored turns ([`stats::bootstrap::pooled_mean`]). All scores equal give an
//! interval of zero width: the sample holds no variation, which is not certainty. Unscored turns (failed, or without a reference)
//! and answers cut at `max-tokens` are counted beside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use rand_chacha::rand_core::SeedableRng;

use crate::export;
use crate::records;
use crate::stats;

/// Per curve, method and what it compares with: (seed, conversation) → (sum, scored),
/// with the unscored and truncated counts; and per turn: (sum, scored).
#[derive(Default)]
struct Tally {
    units: BTreeMap<(String, u64), (f64, u32)>,
    unscored: u32,
    truncated: u32,
    turns: BTreeMap<u32, (f64, u32)>,
}

/// Write both tables into `out` from the quality steps' outputs (nothing without any),
/// and return each curve's lowest mean score (chrF aside), by its axes' values joined
/// with U+001F in the curve's column order: what `[report] slo.quality` judges.
pub fn write(inputs: &[(String, PathBuf)], out: &Path) -> Result<BTreeMap<String, f64>> {
    let mut lowest: BTreeMap<String, f64> = BTreeMap::new();
    if inputs.is_empty() {
        return Ok(lowest);
    }
    // Rows but no curve would write tables without columns: nothing is written instead.
    // (curve columns as (name, value)…, method, against) → tally.
    let mut tallies: BTreeMap<(Vec<(String, String)>, String, String), Tally> = BTreeMap::new();
    for (id, dir) in inputs {
        let df = records::read_quality(dir).with_context(|| format!("scores of {id}"))?;
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        let cell: Vec<&String> = names.iter().take_while(|n| *n != "conversation").collect();
        let text = |name: &str, i: usize| -> Result<String> {
            let v = df.column(name)?.get(i)?;
            Ok(v.get_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        };
        let (conv, turn) = (df.column("conversation")?.u32()?, df.column("turn")?.u32()?);
        let item = df.column("item")?.u64()?;
        let (method, against) = (df.column("method")?.str()?, df.column("against")?.str()?);
        let (score, truncated) = (df.column("score")?.f64()?, df.column("truncated")?.bool()?);
        for i in 0..df.height() {
            let curve: Vec<(String, String)> =
                cell.iter().filter(|n| n.as_str() != "seed").map(|n| Ok(((*n).clone(), text(n, i)?))).collect::<Result<_>>()?;
            let seed = if cell.iter().any(|n| n.as_str() == "seed") { text("seed", i)? } else { String::new() };
            let key = (curve, method.get(i).unwrap_or_default().to_string(), against.get(i).unwrap_or_default().to_string());
            let t = tallies.entry(key).or_default();
            match score.get(i) {
                Some(s) => {
                    // Cut answers among the scored ones: the scores that judge them.
                    if truncated.get(i) == Some(true) {
                        t.truncated += 1;
                    }
                    // A conversation from a file is one unit however many seeds drew
                    // it: its turns are the same questions.
                    let unit = match item.get(i) {
                        Some(k) => t.units.entry(("file".into(), k)).or_default(),
                        None => t.units.entry((seed.clone(), u64::from(conv.get(i).unwrap_or_default()))).or_default(),
                    };
                    unit.0 += s;
                    unit.1 += 1;
                    let per_turn = t.turns.entry(turn.get(i).unwrap_or_default()).or_default();
                    per_turn.0 += s;
                    per_turn.1 += 1;
                }
                None => t.unscored += 1,
            }
        }
    }
    if tallies.is_empty() {
        return Ok(lowest);
    }
    let curve_names: Vec<String> = tallies.keys().next().map(|(c, _, _)| c.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
    let mut rows: Vec<Vec<AnyValue>> = Vec::new();
    let mut turn_rows: Vec<Vec<AnyValue>> = Vec::new();
    for ((curve, method, against), t) in &tallies {
        let pool: Vec<(f64, u32)> = t.units.values().copied().collect();
        let (sum, n) = pool.iter().fold((0.0, 0u32), |(s, k), (a, b)| (s + a, k + b));
        // Seeded by the curve and method: the same scores give the same interval.
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(*blake3::hash(format!("{curve:?}{method}{against}").as_bytes()).as_bytes());
        let interval = stats::bootstrap::pooled_mean(&pool, &mut rng);
        if method != "chrf" && n > 0 {
            let key = curve.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("\u{1f}");
            let score = sum / n as f64;
            lowest.entry(key).and_modify(|s| *s = s.min(score)).or_insert(score);
        }
        let mut row: Vec<AnyValue> = curve.iter().map(|(_, v)| AnyValue::StringOwned(v.into())).collect();
        row.extend([
            AnyValue::StringOwned(method.into()),
            AnyValue::StringOwned(against.into()),
            AnyValue::UInt32(n),
            AnyValue::UInt32(t.unscored),
            AnyValue::UInt32(t.truncated),
            if n > 0 { AnyValue::Float64(sum / n as f64) } else { AnyValue::Null },
            interval.map_or(AnyValue::Null, |(lo, _)| AnyValue::Float64(lo)),
            interval.map_or(AnyValue::Null, |(_, hi)| AnyValue::Float64(hi)),
        ]);
        rows.push(row);
        for (turn, (s, k)) in &t.turns {
            let mut row: Vec<AnyValue> = curve.iter().map(|(_, v)| AnyValue::StringOwned(v.into())).collect();
            row.extend([
                AnyValue::StringOwned(method.into()),
                AnyValue::StringOwned(against.into()),
                AnyValue::UInt32(*turn),
                AnyValue::UInt32(*k),
                AnyValue::Float64(s / *k as f64),
            ]);
            turn_rows.push(row);
        }
    }
    let columns = |extra: &[&str]| {
        curve_names
            .iter()
            .map(String::as_str)
            .chain(["method", "against"])
            .chain(extra.iter().copied())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let mut quality = frame(&columns(&["scored", "unscored", "truncated", "mean", "mean_lo", "mean_hi"]), &rows)?;
    export::write_table(&mut quality, out, "quality")?;
    let mut per_turn = frame(&columns(&["turn", "scored", "mean"]), &turn_rows)?;
    export::write_table(&mut per_turn, out, "quality_per_turn")?;
    Ok(lowest)
}

/// A frame of `rows` (one `AnyValue` per column, in order) under `names`.
fn frame(names: &[String], rows: &[Vec<AnyValue>]) -> Result<DataFrame> {
    let columns: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values: Vec<AnyValue> = rows.iter().map(|r| r[k].clone()).collect();
            Series::from_any_values(name.as_str().into(), &values, false).map(Column::from)
        })
        .collect::<PolarsResult<_>>()?;
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// What the judge cost over every cell (`judge.json`, the sum of the quality steps'
/// own), written only when a quality step asked a judge.
pub fn judge_cost(inputs: &[(String, PathBuf)], out: &Path) -> Result<()> {
    use crate::steps::quality::judge::{Cost, FILE};
    let mut total: Option<Cost> = None;
    for (id, dir) in inputs {
        let path = dir.join(FILE);
        if !path.exists() {
            continue;
        }
        let cost: Cost = serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("the judge's cost in {id}"))?;
        total.get_or_insert_with(Cost::default).add(&cost);
    }
    if let Some(total) = total {
        std::fs::write(out.join(FILE), serde_json::to_vec_pretty(&total)?).with_context(|| format!("writing {FILE}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{QualityRow, write_quality};

    fn cell(seed: &str) -> Vec<(String, String)> {
        [("model", "m"), ("variant", "awq"), ("seed", seed)].map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    }

    fn row(conversation: u32, item: Option<u64>, score: Option<f64>, truncated: bool) -> QualityRow {
        QualityRow { conversation, turn: 0, item, method: "exact".into(), against: "reference".into(), score, truncated }
    }

    /// Cut answers are counted among the scored only (a failed turn is unscored, not
    /// cut), and two seeds that drew the same conversations of a file resample them as
    /// one unit each: the interval is that of the file's conversations, not of copies.
    #[test]
    fn units_are_the_files_conversations_and_cuts_are_among_the_scored() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for seed in ["1", "2"] {
            let d = dir.path().join(seed);
            std::fs::create_dir_all(&d).unwrap();
            let rows: Vec<QualityRow> = (0..5)
                .map(|k| row(k, Some(4 - k as u64), Some(if k % 2 == 0 { 1.0 } else { 0.0 }), k == 0))
                .chain([row(5, Some(9), None, true)])
                .collect();
            write_quality(&cell(seed), &rows, &d).unwrap();
            inputs.push((format!("quality[seed={seed}]"), d));
        }
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let lowest = write(&inputs, &out).unwrap();
        let q = crate::export::read_parquet(&out.join("quality.parquet")).unwrap();
        let get = |c: &str| q.column(c).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().get(0).unwrap();
        assert_eq!((get("scored"), get("unscored"), get("truncated")), (10.0, 2.0, 2.0));
        assert_eq!(get("mean"), 0.6);
        assert_eq!(lowest.values().copied().collect::<Vec<_>>(), vec![0.6]);
        // The interval of five units (each file conversation, twice), as the bootstrap
        // gives it for them with the curve's seed.
        let pool: Vec<(f64, u32)> = [0.0, 2.0, 0.0, 2.0, 2.0].iter().map(|&s| (s, 2)).collect();
        let curve = vec![("model".to_string(), "m".to_string()), ("variant".to_string(), "awq".to_string())];
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(*blake3::hash(format!("{curve:?}exactreference").as_bytes()).as_bytes());
        let (lo, hi) = stats::bootstrap::pooled_mean(&pool, &mut rng).unwrap();
        assert_eq!((get("mean_lo"), get("mean_hi")), (lo, hi));
    }
}
