//! Tables for people: every table is written as Parquet and as a CSV mirror, so that
//! pandas, polars and a spreadsheet read the same numbers. Column names are snake_case
//! with their unit as a suffix (`ttft_ms`, `sent_ns`); docs/results.md lists them.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

pub fn write_table(df: &mut DataFrame, dir: &Path, name: &str) -> Result<()> {
    let parquet = dir.join(format!("{name}.parquet"));
    ParquetWriter::new(File::create(&parquet)?)
        .finish(df)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("writing {}", parquet.display()))?;
    let csv = dir.join(format!("{name}.csv"));
    CsvWriter::new(File::create(&csv)?).finish(df).map_err(anyhow::Error::from).with_context(|| format!("writing {}", csv.display()))?;
    Ok(())
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    ParquetReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
        .finish()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("reading {}", path.display()))
}
