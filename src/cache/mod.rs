//! The content-addressed step cache under `cache/`.
//!
//! Layout: `cache/<kind>/<key[..2]>/<key>/` holds a step's output files and
//! `manifest.json` (files, sizes, digests) and `preimage.json` (the key's preimage). An entry is built in `cache/tmp/` and renamed into place only
//! when complete, so a crash, a failed step or Ctrl-C never leaves a half entry.
//! A hit checks that every listed file is there with its recorded size, and rehashes
//! a file whose modification time changed. One `pipeline run` at a time holds
//! `cache/.lock`; a second gets a clear error instead of corrupting entries.
//!
//! `cache/index` holds what every entry's manifest said, read once per command, so that
//! a lookup is a `stat` per file ([`index`]).
//!
//! `cache/runs/<experiment>.json` remembers the key of every step of the last run
//! of each experiment, so `plan` can say *why* a step must run again.

mod index;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::hash::{Digest, StepKey};
use index::{Check, Index, Seen};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("another `pipeline run` is using the cache `{}`", .0.display())]
    Locked(PathBuf),
    #[error("failed to access the cache at `{}`", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the run record `{}` cannot be read ({reason}): `cache gc` keeps what each experiment's last run used, and cannot tell that for this one", .path.display())]
    BadRecord { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub blake3: String,
    pub mtime_ns: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub step: String,
    pub kind: String,
    pub files: Vec<FileEntry>,
    /// blake3 over the sorted (path, file digest) list: what downstream keys use.
    pub output_digest: String,
}

/// Bookkeeping files of an entry, beside the step's outputs.
pub const MANIFEST: &str = "manifest.json";
/// The key's preimage, kept to explain later changes; read only when explaining.
pub const PREIMAGE: &str = "preimage.json";

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Present and intact; downstream keys use its output digest.
    Hit {
        output_digest: Digest,
    },
    Missing,
    /// The entry is there but an output is gone or altered.
    Damaged(String),
}

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
    /// Read at the first lookup; clones share it, and what they learn.
    index: Arc<OnceLock<Index>>,
    /// The root, opened once: indexed lookups stat relative to it.
    root_fd: Arc<OnceLock<Option<rustix::fd::OwnedFd>>>,
}

/// Held while a run may write to the cache.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into(), index: Arc::default(), root_fd: Arc::default() }
    }

    /// Take the cache for this run, and remove the staging folders that runs on this
    /// machine left when they were killed (SIGKILL, the OOM killer, a power cut).
    pub fn lock(&self) -> Result<CacheLock, CacheError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let path = self.root.join(".lock");
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {
                self.remove_stale_stages();
                Ok(CacheLock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => Err(CacheError::Locked(self.root.clone())),
            Err(fs::TryLockError::Error(e)) => Err(CacheError::Io { path, source: e }),
        }
    }

    /// `stage-HOST-PID-…` folders of this host whose process is gone. Stages of other
    /// hosts (Slurm jobs writing to a shared cache) are left alone: their owners may be
    /// running, and nothing here can tell.
    fn remove_stale_stages(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else { return };
        let mine = format!("stage-{}-", host());
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&mine).and_then(|rest| rest.split('-').next()?.parse::<i32>().ok()) else { continue };
            if !crate::processes::alive(pid) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    pub fn entry_dir(&self, kind: &str, key: &Digest) -> PathBuf {
        let hex = key.hex();
        self.root.join(kind).join(&hex[..2]).join(hex)
    }

    pub fn lookup(&self, kind: &str, key: &Digest) -> Lookup {
        match self.lookup_indexed(kind, key) {
            Check::Fresh(output) => Lookup::Hit { output_digest: Digest(output) },
            check => {
                let (lookup, seen) = self.lookup_manifest(kind, key);
                match (&lookup, seen) {
                    (Lookup::Hit { output_digest }, Some(files)) => {
                        self.index().put(index::Record { key: key.0, output: output_digest.0, kind: kind.to_string(), files });
                    }
                    _ if check == Check::Stale => self.index().drop_key(&key.0),
                    _ => {}
                }
                lookup
            }
        }
    }

    /// Read the index on another thread while the caller builds its plan (at 100,000
    /// entries, 24 MB to read and hash); the first lookup waits for it. Read before
    /// the lock, it may miss what a run that held the lock meanwhile learned, which
    /// costs only those entries' manifests (every answer it gives is checked); and
    /// should that run have saved the index, or `cache gc` removed it, this command
    /// leaves it so ([`Index::save`]).
    pub fn read_index_ahead(&self) {
        let cache = self.clone();
        // Without a thread, the first lookup reads it.
        let _ = std::thread::Builder::new().name("index".into()).spawn(move || {
            cache.index();
        });
    }

    fn root_fd(&self) -> Option<&rustix::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        let open = || rustix::fs::open(&self.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok();
        self.root_fd.get_or_init(open).as_ref()
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| Index::read(&self.root))
    }

    /// Write what this command's lookups and publishes taught the index. Only a run
    /// that holds the lock calls this (never a step inside a Slurm job).
    pub fn save_index(&self) -> Result<(), CacheError> {
        let Some(index) = self.index.get() else { return Ok(()) };
        index.save(&self.root).map_err(io_err(&self.root.join(index::FILE)))
    }

    /// The index's answer: one `stat` per file, relative to the root, no manifest read.
    /// (Relative to the entry's folder, opened once, is no faster: benches/noop.sh's
    /// floor of the same stats measures both.)
    fn lookup_indexed(&self, kind: &str, key: &Digest) -> Check {
        use rustix::fs::{AtFlags, statat};
        use std::fmt::Write;
        let Some(root_fd) = self.root_fd() else { return Check::NotIndexed };
        let hex = key.hex();
        let mut path = String::with_capacity(kind.len() + hex.len() + 40);
        self.index().check(kind, &key.0, |file, size, mtime_ns| {
            path.clear();
            let _ = write!(path, "{kind}/{}/{hex}/{file}", &hex[..2]);
            statat(root_fd, path.as_str(), AtFlags::empty()).is_ok_and(|st| st.st_size as u64 == size && stat_mtime(&st) == mtime_ns)
        })
    }

    /// The manifest's answer, and on a hit what the files looked like (for the index).
    fn lookup_manifest(&self, kind: &str, key: &Digest) -> (Lookup, Option<Vec<Seen>>) {
        let dir = self.entry_dir(kind, key);
        // Paths are resolved relative to the entry's folder: walking the full path once
        // per file is most of a lookup's cost.
        use rustix::fs::{AtFlags, Mode, OFlags, openat, statat};
        let Ok(dir_fd) = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) else {
            return (Lookup::Missing, None);
        };
        let Ok(manifest_fd) = openat(&dir_fd, MANIFEST, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
            return (Lookup::Missing, None);
        };
        let Ok(manifest_st) = rustix::fs::fstat(&manifest_fd) else { return (Lookup::Damaged("manifest.json is unreadable".into()), None) };
        let mut bytes = Vec::with_capacity(4096);
        if io::Read::read_to_end(&mut File::from(manifest_fd), &mut bytes).is_err() {
            return (Lookup::Damaged("manifest.json is unreadable".into()), None);
        }
        // Borrowed fields: no allocation per field.
        #[derive(Deserialize)]
        struct FileRef<'a> {
            path: &'a str,
            size: u64,
            blake3: &'a str,
            mtime_ns: u128,
        }
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            files: Vec<FileRef<'a>>,
            output_digest: &'a str,
        }
        let Ok(manifest) = serde_json::from_slice::<Head>(&bytes) else {
            return (Lookup::Damaged("manifest.json is unreadable".into()), None);
        };
        let mut seen = Vec::with_capacity(manifest.files.len() + 1);
        seen.push(Seen { path: MANIFEST.into(), size: manifest_st.st_size as u64, mtime_ns: stat_mtime(&manifest_st) });
        for f in &manifest.files {
            let Ok(st) = statat(&dir_fd, f.path, AtFlags::empty()) else {
                return (Lookup::Damaged(format!("output `{}` is missing", f.path)), None);
            };
            if st.st_size as u64 != f.size {
                return (Lookup::Damaged(format!("output `{}` changed size", f.path)), None);
            }
            let mtime = stat_mtime(&st);
            if mtime != f.mtime_ns && hash_file(&dir.join(f.path)).ok().as_deref() != Some(f.blake3) {
                return (Lookup::Damaged(format!("output `{}` was modified", f.path)), None);
            }
            // Rehashed and unchanged (a copy that kept no mtimes): the index keeps the
            // mtime seen, so the next lookup need not hash it again.
            seen.push(Seen { path: f.path.to_string(), size: f.size, mtime_ns: mtime });
        }
        match Digest::parse(manifest.output_digest) {
            Some(output_digest) => (Lookup::Hit { output_digest }, Some(seen)),
            None => (Lookup::Damaged("manifest.json is unreadable".into()), None),
        }
    }

    /// A fresh staging folder for a step's outputs, removed on drop unless published.
    pub fn stage(&self) -> Result<tempfile::TempDir, CacheError> {
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        // Named by host and process, so that the next run can tell a dead run's stages.
        let prefix = format!("stage-{}-{}-", host(), std::process::id());
        tempfile::Builder::new().prefix(&prefix).tempdir_in(&tmp).map_err(io_err(&tmp))
    }

    /// Keep what a failed step wrote (for a measure: the requests so far) under
    /// `failed/<kind>/<key>/`, outside the cache proper: it is never a hit. Returns the
    /// folder, or `None` when the step wrote nothing.
    pub fn keep_failed(&self, staged: tempfile::TempDir, kind: &str, key: &Digest) -> Option<PathBuf> {
        fs::read_dir(staged.path()).ok()?.next()?.ok()?;
        let dest = self.root.join("failed").join(kind).join(key.hex());
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir_all(dest.parent()?).ok()?;
        fs::rename(staged.keep(), &dest).ok()?;
        Some(dest)
    }

    /// Hash the staged outputs, write the manifest, and rename the entry into place;
    /// the manifest and the output digest it holds.
    pub fn publish(&self, staged: tempfile::TempDir, step: &str, preimage: StepKey) -> Result<(Manifest, Digest), CacheError> {
        let key = preimage.digest();
        let mut files = Vec::new();
        collect_files(staged.path(), staged.path(), &mut files).map_err(io_err(staged.path()))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = blake3::Hasher::new_derive_key("pipeline step outputs");
        for f in &files {
            h.update(f.path.as_bytes()).update(&[0]).update(f.blake3.as_bytes()).update(&[0]);
        }
        let output = Digest(*h.finalize().as_bytes());
        let manifest = Manifest { key: key.hex(), step: step.to_string(), kind: preimage.kind.clone(), files, output_digest: output.hex() };
        let preimage_path = staged.path().join(PREIMAGE);
        fs::write(&preimage_path, serde_json::to_vec_pretty(&preimage).unwrap_or_default()).map_err(io_err(&preimage_path))?;
        // The manifest is written last; the rename below publishes the whole entry.
        let manifest_path = staged.path().join(MANIFEST);
        fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap_or_default()).map_err(io_err(&manifest_path))?;
        let manifest_meta = fs::metadata(&manifest_path).map_err(io_err(&manifest_path))?;
        let dest = self.entry_dir(&manifest.kind, &key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if dest.exists() {
            // A damaged entry of the same key: replace it.
            fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        let staged_path = staged.keep();
        fs::rename(&staged_path, &dest).map_err(io_err(&dest))?;
        let manifest_seen = Seen { path: MANIFEST.into(), size: manifest_meta.len(), mtime_ns: mtime_ns(&manifest_meta) };
        let outputs = manifest.files.iter().map(|f| Seen { path: f.path.clone(), size: f.size, mtime_ns: f.mtime_ns });
        self.index().put(index::Record {
            key: key.0,
            output: output.0,
            kind: manifest.kind.clone(),
            files: std::iter::once(manifest_seen).chain(outputs).collect(),
        });
        // An earlier failure of this step is history now.
        let _ = fs::remove_dir_all(self.root.join("failed").join(&manifest.kind).join(key.hex()));
        Ok((manifest, output))
    }

    /// The name of `experiment`'s run record: its name, and for a file a digest of
    /// where the file is (relative to the folder that holds the cache, so that moving a
    /// project keeps it). Two files of one name in different folders keep separate
    /// records, so neither's `cache gc` removes the other's results.
    pub fn record_name(&self, experiment: &crate::config::Experiment) -> String {
        let Some(file) = &experiment.file else { return experiment.name.clone() };
        let root = fs::canonicalize(&self.root).or_else(|_| std::path::absolute(&self.root)).unwrap_or_else(|_| self.root.clone());
        let rel = root.parent().and_then(|p| file.strip_prefix(p).ok()).unwrap_or(file);
        let digest = blake3::hash(rel.to_string_lossy().as_bytes()).to_hex();
        format!("{}.{}", experiment.name, &digest[..8])
    }

    fn runs_path(&self, experiment: &str) -> PathBuf {
        self.root.join("runs").join(format!("{experiment}.json"))
    }

    /// The steps of the last run of `experiment`, by step id.
    pub fn last_run(&self, experiment: &str) -> BTreeMap<String, StepRecord> {
        fs::read(self.runs_path(experiment)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// The digest of a run record's (step id, key) pairs, with the size and mtime the
    /// record had when it was written, kept beside the record so that a no-op run can
    /// tell it has nothing to save without parsing the record. The record's size and
    /// mtime tie the digest to the record it describes: a record deleted, replaced or
    /// edited since (by hand, or by an older `pipeline` that wrote no digest) is parsed.
    fn sum_path(&self, experiment: &str) -> PathBuf {
        self.root.join("runs").join(format!("{experiment}.sum"))
    }

    fn pairs_digest<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
        let mut h = blake3::Hasher::new_derive_key("pipeline run record");
        for (id, key) in pairs {
            h.update(id.as_bytes()).update(&[0]).update(key.as_bytes()).update(&[0]);
        }
        h.finalize().to_hex().to_string()
    }

    /// Whether the last run of `experiment` already records `done`'s keys, and nothing
    /// outside `ids` (the plan's steps). When every step is done (a no-op run), the
    /// record's digest answers; otherwise the record is parsed, borrowed.
    pub fn run_matches<'a>(&self, experiment: &str, ids: &HashSet<&str>, done: impl Iterator<Item = (&'a str, &'a Digest)>) -> bool {
        let done: Vec<(&str, String)> = done.map(|(id, key)| (id, key.hex())).collect();
        if done.len() == ids.len() {
            let mut sorted: Vec<(&str, &str)> = done.iter().map(|(id, key)| (*id, key.as_str())).collect();
            sorted.sort_unstable();
            sorted.dedup_by_key(|(id, _)| *id);
            if sorted.len() == ids.len()
                && let Ok(sum) = fs::read_to_string(self.sum_path(experiment))
                && let Ok(meta) = fs::metadata(self.runs_path(experiment))
                && sum == Self::sum_text(&Self::pairs_digest(sorted.into_iter()), &meta)
            {
                return true;
            }
        }
        #[derive(Deserialize)]
        struct KeyOnly<'a> {
            #[serde(borrow)]
            key: Cow<'a, str>,
        }
        let Ok(bytes) = fs::read(self.runs_path(experiment)) else { return false };
        let Ok(saved) = serde_json::from_slice::<HashMap<Cow<str>, KeyOnly>>(&bytes) else { return false };
        saved.keys().all(|id| ids.contains(id.as_ref()))
            && done.iter().all(|(id, key)| saved.get(*id).is_some_and(|r| r.key == key.as_str()))
    }

    pub fn save_run(&self, experiment: &str, records: &BTreeMap<String, StepRecord>) -> Result<(), CacheError> {
        let path = self.runs_path(experiment);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        // The digest goes first and comes back last: a crash between leaves a record
        // without one (parsed next time), never a digest of another record.
        let sum = self.sum_path(experiment);
        match fs::remove_file(&sum) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CacheError::Io { path: sum, source: e }),
            _ => {}
        }
        write_whole(&path, &serde_json::to_vec(records).unwrap_or_default())?;
        // A full disk here costs the next no-op run a parse, nothing more.
        if let Ok(meta) = fs::metadata(&path) {
            let pairs = Self::pairs_digest(records.iter().map(|(id, r)| (id.as_str(), r.key.as_str())));
            let _ = write_whole(&sum, Self::sum_text(&pairs, &meta).as_bytes());
        }
        Ok(())
    }

    /// What the digest file holds: the pairs' digest, and the record's size and mtime.
    fn sum_text(pairs: &str, record: &fs::Metadata) -> String {
        format!("{pairs} {} {}\n", record.len(), mtime_ns(record))
    }

    /// Every experiment's last-run records (for `cache gc`). A record that cannot be
    /// read is an error: `gc` would otherwise keep nothing of that experiment.
    pub fn all_runs(&self) -> Result<Vec<(String, BTreeMap<String, StepRecord>)>, CacheError> {
        let Ok(dir) = fs::read_dir(self.root.join("runs")) else { return Ok(Vec::new()) };
        let mut runs = Vec::new();
        for entry in dir.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let records =
                serde_json::from_slice(&bytes).map_err(|e| CacheError::BadRecord { path: path.clone(), reason: e.to_string() })?;
            runs.push((name, records));
        }
        Ok(runs)
    }

    /// Remove entries no record references; returns (entries removed, bytes freed).
    pub fn gc(&self, keep: &std::collections::HashSet<String>) -> Result<(usize, u64), CacheError> {
        let mut removed = (0, 0);
        let Ok(kinds) = fs::read_dir(&self.root) else { return Ok(removed) };
        for kind in kinds.filter_map(|e| e.ok()) {
            let name = kind.file_name().to_string_lossy().into_owned();
            if matches!(name.as_str(), "runs" | "tmp" | "logs" | "failed") || !kind.path().is_dir() {
                continue;
            }
            for shard in fs::read_dir(kind.path()).map_err(io_err(&kind.path()))?.filter_map(|e| e.ok()) {
                for entry in fs::read_dir(shard.path()).map_err(io_err(&shard.path()))?.filter_map(|e| e.ok()) {
                    let key = entry.file_name().to_string_lossy().into_owned();
                    if !keep.contains(&key) {
                        let mut files = Vec::new();
                        let _ = collect_files(&entry.path(), &entry.path(), &mut files);
                        removed.1 += files.iter().map(|f| f.size).sum::<u64>();
                        fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                        removed.0 += 1;
                    }
                }
            }
        }
        // What failed steps left: kept for a look while their step is in the plan,
        // removed with the entries once it is not.
        let failed = self.root.join("failed");
        for kind in fs::read_dir(&failed).into_iter().flatten().filter_map(|e| e.ok()) {
            for entry in fs::read_dir(kind.path()).into_iter().flatten().filter_map(|e| e.ok()) {
                if !keep.contains(entry.file_name().to_string_lossy().as_ref()) {
                    let mut files = Vec::new();
                    let _ = collect_files(&entry.path(), &entry.path(), &mut files);
                    removed.1 += files.iter().map(|f| f.size).sum::<u64>();
                    fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                    removed.0 += 1;
                }
            }
        }
        let _ = fs::remove_dir_all(self.root.join("tmp"));
        if removed.0 > 0 {
            // Its records of removed entries would only fail their stats.
            let _ = fs::remove_file(self.root.join(index::FILE));
        }
        Ok(removed)
    }
}

/// What `cache/runs/` remembers of one step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub id: String,
    pub kind: String,
    pub key: String,
    pub coords: Vec<(String, String)>,
}

impl StepRecord {
    /// The preimage this step had, read back from its cache entry.
    pub fn preimage(&self, cache: &Cache) -> Option<StepKey> {
        let key = Digest::parse(&self.key)?;
        let bytes = fs::read(cache.entry_dir(&self.kind, &key).join(PREIMAGE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Write `bytes` to `path` through a file beside it, renamed into place: the old file
/// stays whole if writing fails (a full disk), and no half-written one is left.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|x| x.to_str()).unwrap_or("")));
    if let Err(e) = fs::write(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(CacheError::Io { path: tmp, source: e });
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// This machine's name, as stage folders carry it (`-` and `/` replaced).
fn host() -> String {
    let name = rustix::system::uname();
    name.nodename().to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// A stat's mtime in ns since the epoch, as [`mtime_ns`] gives it for the same file.
fn stat_mtime(st: &rustix::fs::Stat) -> u128 {
    (st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128).max(0) as u128
}

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else if path.file_name().is_some_and(|n| n != MANIFEST && n != PREIMAGE) {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push(FileEntry { path: rel, size: meta.len(), blake3: hash_file(&path)?, mtime_ns: mtime_ns(&meta) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, key: &Digest) -> StepRecord {
        StepRecord { id: id.into(), kind: "datagen".into(), key: key.hex(), coords: vec![("seed".into(), "1".into())] }
    }

    #[test]
    fn run_matches_only_when_saving_would_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (a, b, c) = (Digest([1; 32]), Digest([2; 32]), Digest([3; 32]));
        let ids: HashSet<&str> = ["s1", "s2"].into_iter().collect();
        assert!(!cache.run_matches("exp", &ids, [("s1", &a)].into_iter()), "no runs file yet");
        let saved: BTreeMap<String, StepRecord> = [("s1".to_string(), record("s1", &a)), ("s2".to_string(), record("s2", &b))].into();
        cache.save_run("exp", &saved).unwrap();
        assert!(cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()));
        // A step that did not run (not selected) keeps its old record: still no change.
        assert!(cache.run_matches("exp", &ids, [("s1", &a)].into_iter()));
        assert!(!cache.run_matches("exp", &ids, [("s1", &a), ("s2", &c)].into_iter()), "a key changed");
        let fewer: HashSet<&str> = ["s1"].into_iter().collect();
        assert!(!cache.run_matches("exp", &fewer, [("s1", &a)].into_iter()), "s2 left the plan and must be dropped");
        let more: HashSet<&str> = ["s1", "s2", "s3"].into_iter().collect();
        assert!(!cache.run_matches("exp", &more, [("s3", &c)].into_iter()), "a new step has no record yet");

        // With every step done, the digest beside the record answers (the record is
        // not parsed), and a key change still shows.
        let record_file = cache.runs_path("exp");
        let mut garbled = fs::read(&record_file).unwrap();
        garbled[0] = b'#';
        let old = fs::File::open(&record_file).unwrap().metadata().unwrap().modified().unwrap();
        fs::write(&record_file, &garbled).unwrap();
        fs::File::options().write(true).open(&record_file).unwrap().set_modified(old).unwrap();
        assert!(cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()), "same size and mtime: not parsed");
        assert!(!cache.run_matches("exp", &ids, [("s1", &a), ("s2", &c)].into_iter()));
        // A record replaced, edited or deleted since the digest was written is parsed:
        // an older binary may have rewritten it, and a run must then rewrite it again.
        fs::write(&record_file, "garbled").unwrap();
        assert!(!cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()), "the digest is not the record's");
        fs::remove_file(&record_file).unwrap();
        assert!(!cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()), "no record, only its digest");
        // Without the digest (a crash between the two writes), the record is parsed.
        cache.save_run("exp", &saved).unwrap();
        fs::remove_file(cache.sum_path("exp")).unwrap();
        assert!(cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()), "parsed, and it matches");
        fs::write(&record_file, "garbled").unwrap();
        assert!(!cache.run_matches("exp", &ids, [("s1", &a), ("s2", &b)].into_iter()), "garbled record");
        cache.save_run("exp", &saved).unwrap();
        assert_eq!(cache.all_runs().unwrap().len(), 1, "the digest file is not a run record");
        fs::write(&record_file, "garbled").unwrap();
        let err = cache.all_runs().unwrap_err().to_string();
        assert!(err.contains("exp.json"), "{err}");
    }

    fn publish_one(cache: &Cache, content: &str) -> Digest {
        let staged = cache.stage().unwrap();
        fs::write(staged.path().join("requests.csv"), content).unwrap();
        let preimage = StepKey {
            env: BTreeMap::new(),
            hardware: None,
            inputs: BTreeMap::new(),
            kind: "measure".into(),
            params: crate::hash::Canonical::from_value(&serde_json::json!({ "content": content })),
            schema: 1,
            server: None,
            version: 1,
        };
        let key = preimage.digest();
        cache.publish(staged, "measure[seed=1]", preimage).unwrap();
        key
    }

    /// A fresh command's view of the cache (the index read anew).
    fn reopened(cache: &Cache) -> Cache {
        cache.save_index().unwrap();
        Cache::new(&cache.root)
    }

    #[test]
    fn the_index_answers_as_the_manifest_would_and_learns_what_it_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = publish_one(&cache, "turn\n0\n");
        let entry = cache.entry_dir("measure", &key);
        let cache = reopened(&cache);
        let Lookup::Hit { output_digest } = cache.lookup("measure", &key) else { panic!("published entry missed") };
        assert_eq!(cache.index().check("measure", &key.0, |_, _, _| true), Check::Fresh(output_digest.0));

        // The index is what answers: a manifest garbled in place, with its size and
        // mtime kept, is not read (the same trust in mtimes as for every output).
        let manifest = entry.join(MANIFEST);
        let mtime = fs::metadata(&manifest).unwrap().modified().unwrap();
        let garbled = vec![b'x'; fs::metadata(&manifest).unwrap().len() as usize];
        fs::write(&manifest, &garbled).unwrap();
        File::options().write(true).open(&manifest).unwrap().set_modified(mtime).unwrap();
        assert!(matches!(Cache::new(dir.path()).lookup("measure", &key), Lookup::Hit { .. }));
        // ... and without the index, the manifest would have been read.
        fs::remove_file(dir.path().join(index::FILE)).unwrap();
        assert!(matches!(Cache::new(dir.path()).lookup("measure", &key), Lookup::Damaged(_)));

        // An output touched but unchanged is rehashed once; the index keeps the new mtime.
        let cache = Cache::new(dir.path());
        let key = publish_one(&cache, "turn\n1\n");
        let output = cache.entry_dir("measure", &key).join("requests.csv");
        let cache = reopened(&cache);
        File::options().write(true).open(&output).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
        assert_eq!(
            cache.index().check("measure", &key.0, |_, _, _| true),
            Check::Fresh(match cache.lookup("measure", &key) {
                Lookup::Hit { output_digest } => output_digest.0,
                other => panic!("{other:?}"),
            })
        );
        let cache = reopened(&cache);
        let mut stats = 0;
        let root_fd = rustix::fs::open(dir.path(), rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let hex = key.hex();
        let check = cache.index().check("measure", &key.0, |file, size, mtime| {
            stats += 1;
            let st =
                rustix::fs::statat(&root_fd, format!("measure/{}/{hex}/{file}", &hex[..2]).as_str(), rustix::fs::AtFlags::empty()).unwrap();
            st.st_size as u64 == size && stat_mtime(&st) == mtime
        });
        assert!(matches!(check, Check::Fresh(_)) && stats == 2, "{check:?} after {stats} stats: the touched mtime was not learned");

        // An output changed in size: damaged, and dropped from the index.
        fs::write(&output, "turn\n1\n2\n").unwrap();
        assert!(matches!(cache.lookup("measure", &key), Lookup::Damaged(_)));
        let cache = reopened(&cache);
        assert_eq!(cache.index().check("measure", &key.0, |_, _, _| true), Check::NotIndexed);
        // A removed entry is missing, as without an index.
        fs::remove_dir_all(cache.entry_dir("measure", &key)).unwrap();
        assert!(matches!(cache.lookup("measure", &key), Lookup::Missing));
    }

    #[test]
    fn what_failed_is_kept_while_its_step_is_planned_and_then_collected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (planned, gone) = (Digest([4; 32]), Digest([5; 32]));
        for key in [&planned, &gone] {
            let staged = cache.stage().unwrap();
            fs::write(staged.path().join("requests.csv"), "turn\n0\n").unwrap();
            assert!(cache.keep_failed(staged, "measure", key).is_some());
        }
        let keep: HashSet<String> = [planned.hex()].into_iter().collect();
        let (removed, _) = cache.gc(&keep).unwrap();
        assert_eq!(removed, 1);
        assert!(dir.path().join("failed/measure").join(planned.hex()).exists());
        assert!(!dir.path().join("failed/measure").join(gone.hex()).exists(), "cache/failed/ was never cleaned");
    }
}
