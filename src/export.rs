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

/// Read a Parquet file on the calling thread. Handing its columns to polars' thread
/// pool would block this thread, and a rayon thread (the aggregate reads its cells'
/// files in parallel) runs its pool's next job while it waits, whose read blocks again:
/// the stack grew with the number of files, and 90,000 cells overflowed it. Our files
/// are one cell's each; the parallelism is across them.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    read_parquet_columns(path, None)
}

/// [`read_parquet`], of `columns` only (all when None).
pub fn read_parquet_columns(path: &Path, columns: Option<Vec<String>>) -> Result<DataFrame> {
    ParquetReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
        .with_columns(columns)
        .read_parallel(ParallelStrategy::None)
        .finish()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading many files from a rayon pool other than polars' own: a read that hands
    /// its columns to polars' pool blocks its thread, which meanwhile runs the next
    /// file's read from its own pool, which blocks again: the stack grows with the
    /// number of files (an aggregate of 90,000 cells overflowed 32 MiB). Each file is
    /// read on the calling thread, so a small stack reads thousands.
    #[test]
    fn many_files_read_from_another_pool_do_not_nest() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3000;
        let mut df = df!("a" => (0..64).collect::<Vec<u32>>(), "b" => (0..64).map(|i| i as f64).collect::<Vec<f64>>(),
            "c" => (0..64).map(|i| format!("row {i}")).collect::<Vec<String>>())
        .unwrap();
        for i in 0..n {
            write_parquet(&mut df, &dir.path().join(format!("{i}.parquet"))).unwrap();
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).stack_size(256 << 10).build().unwrap();
        let rows: usize = pool.install(|| {
            use rayon::prelude::*;
            (0..n).into_par_iter().map(|i| read_parquet(&dir.path().join(format!("{i}.parquet"))).unwrap().height()).sum()
        });
        assert_eq!(rows, 64 * n);
    }
}
