//! Tables for people: every table is written as Parquet and as a CSV mirror, so that
//! pandas, polars and a spreadsheet read the same numbers. Column names are snake_case
//! with their unit as a suffix (`ttft_ms`, `sent_ns`); docs/results.md lists them.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

pub fn write_table(df: &mut DataFrame, dir: &Path, name: &str) -> Result<()> {
    write_parquet(df, &dir.join(format!("{name}.parquet")))?;
    let csv = dir.join(format!("{name}.csv"));
    CsvWriter::new(File::create(&csv)?).finish(df).map_err(anyhow::Error::from).with_context(|| format!("writing {}", csv.display()))?;
    Ok(())
}

/// Parquet only: for tables too big to mirror as CSV (all request rows of a study).
/// Snappy-compressed, pyarrow's default: fast to write, and every reader has it.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    ParquetWriter::new(File::create(path)?)
        .with_compression(ParquetCompression::Snappy)
        .finish(df)
        .map(|_| ())
        .map_err(anyhow::Error::from)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    ParquetReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
        .finish()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("reading {}", path.display()))
}
