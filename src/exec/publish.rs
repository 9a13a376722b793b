//! Publish a report entry into the experiment's report folder.
//!
//! The folder belongs to `pipeline`: it holds a marker file, [`MARKER`], naming the
//! experiment, and `pipeline` writes into no folder that holds files it did not write
//! (`[report] dir = "."` would otherwise replace the project's own README.md). Only
//! files whose bytes changed are rewritten, each through a temporary file and a
//! rename, so an unchanged report leaves git and file times alone and a full disk
//! leaves every file either old or new. Report files an earlier run wrote and this one
//! does not are removed, so that nothing stale reads as current.

use std::path::{Path, PathBuf};

/// The marker file of a report folder.
pub const MARKER: &str = ".pipeline-report";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "report folder `{}` holds files that pipeline did not write ({}); a report is published only into a folder of its own",
        .dir.display(), .foreign.join(", ")
    )]
    NotOurs { dir: PathBuf, foreign: Vec<String>, experiment: String },
    #[error(
        "report folder `{}` holds the report of experiment `{other}`, not `{experiment}`",
        .dir.display()
    )]
    OtherExperiment { dir: PathBuf, other: String, experiment: String },
    #[error("failed to write the report file `{}`", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PublishError {
    /// The experiment file must change, or else the disk or permissions.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            PublishError::Io { .. } => crate::error::Kind::Environment,
            _ => crate::error::Kind::User,
        }
    }

    /// What to do about it, shown after the error by `crate::error::render`.
    pub fn hint(&self) -> Option<String> {
        match self {
            PublishError::NotOurs { experiment, .. } => Some(format!(
                "set `dir` under [report] to a new folder, such as `reports/{experiment}`; or, if the folder holds only an earlier report of this experiment, create an empty `{MARKER}` file in it"
            )),
            PublishError::OtherExperiment { .. } => Some("give this experiment its own `dir` under [report]".into()),
            PublishError::Io { .. } => None,
        }
    }

    /// The error with its hint beside it, and its kind.
    pub fn into_failure(self) -> (crate::error::Kind, anyhow::Error) {
        let (kind, hint) = (self.kind(), self.hint());
        let error = anyhow::Error::from(self);
        (
            kind,
            match hint {
                Some(h) => crate::error::WithHint::hint(error, h),
                None => error,
            },
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io { path: path.to_path_buf(), source }
}

/// Copy the report files of `entry` into `dest`, rewriting only those that changed;
/// returns the files written (and removed).
///
/// Two runs publishing into one folder at once take turns on a lock of its marker, so
/// the folder ends as one run's report, not a mix. Files the marker lists as written
/// by an earlier publish and that this report no longer has are removed (a chart of a
/// batch size no longer swept would read as current); anything else in the folder is
/// the user's and stays.
pub fn publish_report(entry: &Path, dest: &Path, experiment: &str) -> Result<Vec<PathBuf>, PublishError> {
    use std::io::{Read, Seek, Write};
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(entry).map_err(io(entry))? {
        let e = e.map_err(io(entry))?;
        let name = e.file_name();
        if name != crate::cache::MANIFEST && name != crate::cache::PREIMAGE && e.path().is_file() {
            files.push((name.to_string_lossy().into_owned(), e.path()));
        }
    }
    files.sort();
    claim(dest, experiment, &files)?;
    // The marker is the lock, and is rewritten in place under it: a rename would give
    // the next run a new file to lock while this one still holds the old.
    let marker_path = dest.join(MARKER);
    let mut marker = std::fs::OpenOptions::new().read(true).write(true).open(&marker_path).map_err(io(&marker_path))?;
    marker.lock().map_err(io(&marker_path))?;
    let mut before = String::new();
    marker.read_to_string(&mut before).map_err(io(&marker_path))?;
    let earlier = listed(&before);
    let mut written = Vec::new();
    for (name, source) in &files {
        let target = dest.join(name);
        if !same_bytes(source, &target).map_err(io(source))? {
            copy_atomically(source, &target)?;
            written.push(target);
        }
    }
    for name in earlier.iter().filter(|n| !files.iter().any(|(f, _)| f == *n)) {
        let path = dest.join(name);
        if path.is_file() {
            std::fs::remove_file(&path).map_err(io(&path))?;
            written.push(path);
        }
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let text = marker_text(experiment, &names);
    if before != text {
        // Overwritten from the start, then cut to length: at no moment is the marker
        // empty or without its `experiment:` line (a full disk or a kill mid-way
        // leaves the new text, or the new text followed by the old tail's names,
        // which were ours too).
        let rewrite = |m: &mut std::fs::File| {
            m.rewind()?;
            m.write_all(text.as_bytes())?;
            m.set_len(text.len() as u64)
        };
        rewrite(&mut marker).map_err(io(&marker_path))?;
    }
    Ok(written)
}

/// Whether `target` holds the bytes of `source`: sizes first, then both read side by
/// side a block at a time (a 100,000-cell report is hundreds of MB, and a no-op run
/// compares all of it). A missing or unreadable `target` differs; an unreadable
/// `source` is an error.
fn same_bytes(source: &Path, target: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut a = std::fs::File::open(source)?;
    let Ok(mut b) = std::fs::File::open(target) else { return Ok(false) };
    let (Ok(meta_a), Ok(meta_b)) = (a.metadata(), b.metadata()) else { return Ok(false) };
    if meta_a.len() != meta_b.len() || !meta_b.is_file() {
        return Ok(false);
    }
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut buf_a)?;
        if n == 0 {
            // The source ended: the target must end here too (it may have grown).
            return Ok(matches!(b.read(&mut buf_b[..1]), Ok(0)));
        }
        if b.read_exact(&mut buf_b[..n]).is_err() || buf_a[..n] != buf_b[..n] {
            return Ok(false);
        }
    }
}

/// Copy through a temporary file and a rename: a full disk leaves the old file.
fn copy_atomically(source: &Path, target: &Path) -> Result<(), PublishError> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.tmp"));
    if let Err(e) = std::fs::copy(source, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(PublishError::Io { path: target.to_path_buf(), source: e });
    }
    std::fs::rename(&tmp, target).map_err(io(target))
}

/// The marker: who owns the folder, and the files the last publish wrote (the only
/// ones a later publish may remove).
fn marker_text(experiment: &str, files: &[&str]) -> String {
    let mut text = format!(
        "This folder is the report of experiment `{experiment}`, written by `pipeline`: each run rewrites the files listed here.\nexperiment: {experiment}\n"
    );
    for f in files {
        text.push_str(&format!("file: {f}\n"));
    }
    text
}

/// The files a marker lists. Only plain names: a marker edited to name `../x` or a
/// path elsewhere removes nothing outside the folder.
fn listed(marker: &str) -> Vec<String> {
    marker
        .lines()
        .filter_map(|l| l.strip_prefix("file: "))
        .filter(|n| !n.is_empty() && !n.contains(['/', '\\']) && *n != "." && *n != ".." && *n != MARKER)
        .map(str::to_string)
        .collect()
}

/// Make sure `dest` is this experiment's report folder, creating it (with its marker)
/// if need be. A folder from before markers existed is taken over when it holds only
/// report files and its README.md says `pipeline` generated it.
/// Whether a report of `experiment` may be published into `dest`, checked before a
/// run measures anything (`dir = "."` is refused before an hour of measuring, not
/// after), and again when it publishes.
pub fn check(dest: &Path, experiment: &str) -> Result<(), PublishError> {
    check_with(dest, experiment, &[]).map(|_| ())
}

/// [`check`], knowing the report's own file names; whether the folder has a marker.
fn check_with(dest: &Path, experiment: &str, files: &[(String, PathBuf)]) -> Result<bool, PublishError> {
    if let Ok(text) = std::fs::read_to_string(dest.join(MARKER)) {
        return match text.lines().find_map(|l| l.strip_prefix("experiment: ")) {
            Some(other) if other != experiment => {
                Err(PublishError::OtherExperiment { dir: dest.to_path_buf(), other: other.to_string(), experiment: experiment.to_string() })
            }
            _ => Ok(true),
        };
    }
    let mut foreign = Vec::new();
    if dest.exists() {
        let report_names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let generated = std::fs::read_to_string(dest.join("README.md")).is_ok_and(|t| t.contains("Generated by `pipeline "));
        for e in std::fs::read_dir(dest).map_err(io(dest))? {
            let e = e.map_err(io(dest))?;
            let name = e.file_name();
            let ours =
                e.path().is_file() && generated && (report_names.contains(&name.to_string_lossy().as_ref()) || is_report_file(&name));
            if !ours {
                let shown = name.to_string_lossy().into_owned();
                foreign.push(if e.path().is_dir() { format!("{shown}/") } else { shown });
            }
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let more = foreign.len().saturating_sub(5);
        foreign.truncate(5);
        if more > 0 {
            foreign.push(format!("and {more} more"));
        }
        return Err(PublishError::NotOurs { dir: dest.to_path_buf(), foreign, experiment: experiment.to_string() });
    }
    Ok(false)
}

fn claim(dest: &Path, experiment: &str, files: &[(String, PathBuf)]) -> Result<(), PublishError> {
    if check_with(dest, experiment, files)? {
        return Ok(());
    }
    let marker = dest.join(MARKER);
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    // No file is listed yet: a folder taken over from before markers keeps its files
    // until the report writes over them.
    std::fs::write(&marker, marker_text(experiment, &[])).map_err(io(&marker))
}

/// A file name an earlier version of the report may have written (before markers
/// listed them): enough to take such a folder over, never to delete.
fn is_report_file(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    ["README.md", "index.html", "runs.json"].contains(&name.as_ref())
        || [".svg", ".csv", ".parquet"].iter().any(|ext| name.ends_with(ext)) && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path) -> PathBuf {
        let e = dir.join("entry");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("README.md"), "# T\n\nGenerated by `pipeline 0.1.0` from x.\n").unwrap();
        std::fs::write(e.join("summary.csv"), "a\n1\n").unwrap();
        e
    }

    #[test]
    fn a_folder_of_other_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("README.md"), "# My project\n").unwrap();
        let err = publish_report(&entry(dir.path()), &project, "t").unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::User);
        assert!(err.to_string().contains("holds files that pipeline did not write (README.md, src/)"), "{err}");
        assert_eq!(std::fs::read_to_string(project.join("README.md")).unwrap(), "# My project\n");
        assert!(!project.join("summary.csv").exists());
    }

    #[test]
    fn new_and_earlier_report_folders_are_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path());
        let fresh = dir.path().join("reports/t");
        assert_eq!(publish_report(&e, &fresh, "t").unwrap().len(), 2);
        assert!(fresh.join(MARKER).exists());
        assert!(publish_report(&e, &fresh, "t").unwrap().is_empty(), "nothing changed, nothing written");
        // A chart an earlier report wrote and the new one no longer draws goes; the
        // user's own files (of the same extensions) and the marker stay.
        std::fs::write(e.join("per_turn_9.svg"), "<svg/>").unwrap();
        publish_report(&e, &fresh, "t").unwrap();
        std::fs::remove_file(e.join("per_turn_9.svg")).unwrap();
        for mine in ["notes.csv", "figure.svg", "data.parquet"] {
            std::fs::write(fresh.join(mine), "mine").unwrap();
        }
        assert_eq!(publish_report(&e, &fresh, "t").unwrap(), [fresh.join("per_turn_9.svg")]);
        assert!(!fresh.join("per_turn_9.svg").exists() && fresh.join(MARKER).exists());
        for mine in ["notes.csv", "figure.svg", "data.parquet"] {
            assert_eq!(std::fs::read_to_string(fresh.join(mine)).unwrap(), "mine", "{mine} is the user's");
        }
        // A marker edited to list a path outside the folder removes nothing there.
        std::fs::write(dir.path().join("outside.csv"), "x").unwrap();
        let marker = std::fs::read_to_string(fresh.join(MARKER)).unwrap();
        std::fs::write(fresh.join(MARKER), format!("{marker}file: ../../outside.csv\n")).unwrap();
        publish_report(&e, &fresh, "t").unwrap();
        assert!(dir.path().join("outside.csv").exists());
        let err = publish_report(&e, &fresh, "u").unwrap_err();
        assert!(err.to_string().contains("holds the report of experiment `t`, not `u`"), "{err}");
        // A report written before the marker existed (an older chart name included).
        let old = dir.path().join("reports/old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::copy(e.join("README.md"), old.join("README.md")).unwrap();
        std::fs::write(old.join("gone_chart.svg"), "<svg/>").unwrap();
        publish_report(&e, &old, "t").unwrap();
        assert!(old.join(MARKER).exists());
    }

    #[test]
    fn two_publishes_at_once_leave_one_whole_report() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<PathBuf> = ["one", "two"]
            .iter()
            .map(|who| {
                let e = dir.path().join(who);
                std::fs::create_dir_all(&e).unwrap();
                std::fs::write(e.join("README.md"), format!("Generated by `pipeline 0.1.0` for {who}\n")).unwrap();
                for i in 0..40 {
                    std::fs::write(e.join(format!("t{i}.csv")), format!("{who}\n")).unwrap();
                }
                e
            })
            .collect();
        let dest = dir.path().join("reports/t");
        for _ in 0..5 {
            std::thread::scope(|s| {
                for e in &entries {
                    s.spawn(|| publish_report(e, &dest, "t").unwrap());
                }
            });
            let readme = std::fs::read_to_string(dest.join("README.md")).unwrap();
            let who = if readme.contains("for one") { "one" } else { "two" };
            for i in 0..40 {
                assert_eq!(std::fs::read_to_string(dest.join(format!("t{i}.csv"))).unwrap(), format!("{who}\n"), "t{i}.csv");
            }
        }
    }

    #[test]
    fn same_bytes_compares_every_byte_and_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        // More than one block, so that a difference in the second block counts.
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(path("a"), &body).unwrap();
        std::fs::write(path("same"), &body).unwrap();
        let mut late = body.clone();
        late[150_000] ^= 1;
        std::fs::write(path("late"), &late).unwrap();
        std::fs::write(path("short"), &body[..body.len() - 1]).unwrap();
        assert!(same_bytes(&path("a"), &path("same")).unwrap());
        assert!(!same_bytes(&path("a"), &path("late")).unwrap());
        assert!(!same_bytes(&path("a"), &path("short")).unwrap());
        assert!(!same_bytes(&path("a"), &path("missing")).unwrap());
        assert!(same_bytes(&path("missing"), &path("a")).is_err());
    }
}
