//! Where each request's time went, from the server's own spans joined to the request
//! rows (`server_queue_ms`, …; see `steps::measure::spans`): the median of each
//! component per cell (`breakdown`) and, per curve and turn, the median across seeds
//! of each seed's median (`breakdown_per_turn`, as `per_turn` is made).
//!
//! Medians of components do not add up to the median of their sum; the tables and the
//! report say "median" of each, never that they sum.

use anyhow::Result;
use polars::prelude::*;

/// The components of a request's time, as (column of `requests`, name here), in the
/// order a stacked chart draws them (the client's first, the server's from its start).
pub const COMPONENTS: [(&str, &str); 5] = [
    ("server_queue_ms", "queue_ms"),
    ("server_preprocess_ms", "preprocess_ms"),
    ("server_prefill_ms", "prefill_ms"),
    ("server_decode_ms", "decode_ms"),
    ("outside_server_ms", "outside_server_ms"),
];

/// `breakdown` (one row per cell: requests joined to a span, why the others were not,
/// each component's median, and the server's end-to-end median) and
/// `breakdown_per_turn` (per curve and turn). `measured`: the successful and failed
/// non-warm-up rows with `cell_index`; `cells`: `cell_index` and the cell's columns.
pub fn tables(mut measured: LazyFrame, cells: &DataFrame, cell: &[String]) -> Result<(DataFrame, DataFrame)> {
    // Rows written without the span columns (a table another program made) have no
    // spans: the columns, empty.
    let schema = measured.collect_schema()?;
    for (name, dtype) in COMPONENTS
        .iter()
        .map(|(c, _)| (*c, DataType::Float64))
        .chain([("server_e2e_ms", DataType::Float64), ("span_missing", DataType::String)])
    {
        if schema.get(name).is_none() {
            measured = measured.with_column(lit(NULL).cast(dtype).alias(name));
        }
    }
    let ok = measured.filter(col("error").eq(lit("none")));
    let medians = || -> Vec<Expr> {
        let mut m: Vec<Expr> = COMPONENTS.iter().map(|(from, to)| col(*from).median().alias(*to)).collect();
        m.push(col("server_e2e_ms").median().alias("server_e2e_ms"));
        m
    };
    let mut per_cell_aggs = vec![
        len().cast(DataType::UInt32).alias("requests"),
        col("server_e2e_ms").count().cast(DataType::UInt32).alias("joined"),
        // The first reason a request has no span (one per cell in practice).
        col("span_missing").drop_nulls().first().alias("span_missing"),
    ];
    per_cell_aggs.extend(medians());
    let per_cell = cells
        .clone()
        .lazy()
        .join(
            ok.clone().group_by([col("cell_index")]).agg(per_cell_aggs),
            [col("cell_index")],
            [col("cell_index")],
            JoinArgs::new(JoinType::Inner),
        )
        .sort(["cell_index"], SortMultipleOptions::default())
        .collect()?
        .drop("cell_index")?;

    let curve: Vec<String> = cell.iter().filter(|c| *c != "seed").cloned().collect();
    let mut with_turn = curve.clone();
    with_turn.push("turn".into());
    let keys: Vec<Expr> = with_turn.iter().map(|k| col(k.as_str())).collect();
    let mut across = vec![len().cast(DataType::UInt32).alias("seeds")];
    across.extend(COMPONENTS.iter().map(|(_, name)| col(*name).median()));
    across.push(col("server_e2e_ms").median());
    let per_turn = ok
        .filter(col("server_e2e_ms").is_not_null())
        .group_by([col("cell_index"), col("turn")])
        .agg(medians())
        .join(cells.clone().lazy(), [col("cell_index")], [col("cell_index")], JoinArgs::new(JoinType::Inner))
        .group_by(keys)
        .agg(across)
        .sort(with_turn, SortMultipleOptions::default())
        .collect()?;
    Ok((per_cell, per_turn))
}
