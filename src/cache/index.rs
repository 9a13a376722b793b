//! The cache's index: what each entry's manifest said, with what its files looked like
//! when last seen intact, in one file read once per command.
//!
//! Without it a lookup opens the entry's folder and parses its `manifest.json`; at
//! 10,000 steps that was most of a no-op run. With it, a lookup whose key is indexed
//! stats the manifest and each output (one `stat` per file, as make stats each target)
//! and, when every size and modification time is the one recorded, answers with the
//! recorded output digest. Anything else (not indexed, a file gone, a size or an mtime
//! changed) goes the manifest's way, as without an index. So the index makes a lookup
//! faster and never changes its answer: the files it vouches for are the ones the
//! manifest described when they were checked.
//!
//! Only a run that holds `cache/.lock` writes it: at its end (a search: at each
//! round's end), whole (written beside, then renamed), only when a lookup or a publish
//! added or dropped an entry since, and only over the file it read (read before the
//! lock, it may have been replaced or removed meanwhile; that one stands). Entries that Slurm jobs publish join it the next time a run looks them up. A
//! torn, truncated or foreign file (its blake3 trailer disagrees) is ignored.
//!
//! Layout: [`MAGIC`]; the table of file paths (u16 count, then per path: u16 length,
//! bytes); one record per entry; blake3 of all that. A record: key (32 bytes), output
//! digest (32), kind (u8 length, bytes), file count (u16), then per file: its path's
//! number in the table (u16), size (u64), mtime in ns (u64); little-endian. The
//! manifest is the first file. Entries share a few dozen file names (`manifest.json`,
//! `requests.parquet`, `images/0001.jpg`, …), so a file costs 18 bytes, not its name:
//! at 100,000 entries the file is about half what it was with names in every record.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

const MAGIC: &[u8; 16] = b"pipeline-index\x00\x02";

/// The file's name under the cache root.
pub const FILE: &str = "index";

/// A file of an entry as seen: its path in the entry, size and mtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
}

/// What the index remembers of one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: [u8; 32],
    pub output: [u8; 32],
    pub kind: String,
    /// The manifest first, then the outputs.
    pub files: Vec<Seen>,
}

/// What the index says of an entry.
#[derive(Debug, PartialEq)]
pub enum Check {
    NotIndexed,
    /// Indexed, but a file is gone or its size or mtime changed: ask the manifest.
    Stale,
    /// Every file is as recorded: the entry's output digest.
    Fresh([u8; 32]),
}

/// The index as read, and what this command learned since.
#[derive(Default)]
pub struct Index {
    bytes: Vec<u8>,
    /// The file's path table.
    paths: Vec<String>,
    at: HashMap<[u8; 32], Range<usize>>,
    /// What lookups and publishes taught this command, for [`Index::save`].
    learned: Mutex<Learned>,
}

/// What this command learned, kept whole across its saves (a search saves once a
/// round), and which file on disk holds it.
#[derive(Default)]
struct Learned {
    /// Key → the record to write (`None`: drop it).
    changes: HashMap<[u8; 32], Option<Record>>,
    /// A change since the last save.
    unsaved: bool,
    /// The file read, or last written, as `stamp` saw it (`None`: there was none).
    on_disk: Option<Stamp>,
}

/// A file's device, inode, size and mtime (ns): which file, as it was.
type Stamp = (u64, u64, u64, u128);

fn stamp(meta: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino(), meta.size(), super::mtime_ns(meta))
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({} entries)", self.at.len())
    }
}

impl Index {
    /// The index under `root`; empty when there is none or it does not check out.
    pub fn read(root: &Path) -> Index {
        let read = || -> io::Result<(Stamp, Vec<u8>)> {
            let mut file = fs::File::open(root.join(FILE))?;
            let seen = stamp(&file.metadata()?);
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes)?;
            Ok((seen, bytes))
        };
        let Ok((seen, bytes)) = read() else { return Index::default() };
        let index = Index::parse(bytes).unwrap_or_default();
        index.learned().on_disk = Some(seen);
        index
    }

    fn parse(bytes: Vec<u8>) -> Option<Index> {
        let body_len = bytes.len().checked_sub(32)?;
        let (body, trailer) = bytes.split_at(body_len);
        if !body.starts_with(MAGIC) || blake3::hash(body).as_bytes() != trailer {
            return None;
        }
        let mut r = Reader { bytes: body, pos: MAGIC.len() };
        let paths = (0..r.u16()?).map(|_| r.str16().map(str::to_string)).collect::<Option<Vec<_>>>()?;
        let mut at = HashMap::new();
        while r.pos < body.len() {
            let start = r.pos;
            let key: [u8; 32] = r.take(32)?.try_into().ok()?;
            r.skip_record_after_key(paths.len())?;
            at.insert(key, start..r.pos);
        }
        Some(Index { bytes, paths, at, learned: Mutex::default() })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The record of `key`, as read from the file.
    #[cfg(test)]
    pub fn get(&self, key: &[u8; 32]) -> Option<Record> {
        let range = self.at.get(key)?.clone();
        Reader { bytes: &self.bytes[..range.end], pos: range.start }.record(&self.paths)
    }

    /// Whether `key`'s entry, as indexed, still holds: `fresh` is asked about the
    /// manifest and every output (path, size, mtime) and must say yes to each.
    pub fn check(&self, kind: &str, key: &[u8; 32], mut fresh: impl FnMut(&str, u64, u128) -> bool) -> Check {
        let Some(range) = self.at.get(key) else { return Check::NotIndexed };
        let mut r = Reader { bytes: &self.bytes[..range.end], pos: range.start + 32 };
        let checked = (|| {
            let output: [u8; 32] = r.take(32)?.try_into().ok()?;
            let kind_len = r.u8()? as usize;
            if r.take(kind_len)? != kind.as_bytes() {
                return None;
            }
            let n = r.u16()?;
            for _ in 0..n {
                let (path, size, mtime) = r.file()?;
                // 0 is every mtime before 1970: it vouches for nothing (put never writes it).
                if mtime == 0 || !fresh(&self.paths[path], size, u128::from(mtime)) {
                    return None;
                }
            }
            (n > 0).then_some(output)
        })();
        checked.map_or(Check::Stale, Check::Fresh)
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember `record` (a publish, or a lookup that checked the manifest). An entry
    /// the index cannot hold whole (more files than its count holds, a path longer than
    /// its length holds, an mtime past 2554) or whose mtimes it could not tell apart
    /// (any before 1970 reads as 0) is left to its manifest, and forgotten if it was
    /// indexed.
    pub fn put(&self, record: Record) {
        let fits = record.files.len() <= u16::MAX as usize
            && record.files.iter().all(|f| f.path.len() <= u16::MAX as usize && f.mtime_ns > 0 && u64::try_from(f.mtime_ns).is_ok());
        if !fits {
            return self.drop_key(&record.key);
        }
        let mut learned = self.learned();
        learned.changes.insert(record.key, Some(record));
        learned.unsaved = true;
    }

    /// Forget `key` (its files no longer match).
    pub fn drop_key(&self, key: &[u8; 32]) {
        if self.at.contains_key(key) {
            let mut learned = self.learned();
            learned.changes.insert(*key, None);
            learned.unsaved = true;
        }
    }

    /// Write the index with this command's changes, if there are new ones. The caller holds
    /// the cache's lock. Every record is written anew, with a path table of the names
    /// still in use; an entry whose names would overflow the table is left out (its
    /// manifest decides).
    pub fn save(&self, root: &Path) -> io::Result<()> {
        let mut learned = self.learned();
        if !learned.unsaved {
            return Ok(());
        }
        // Read before the lock was taken (`Cache::read_index_ahead`), the index may
        // have been saved by another run since, or removed by `cache gc`: that one
        // stands, and what this command learned is learned again by the next.
        let path = root.join(FILE);
        if fs::metadata(&path).ok().map(|m| stamp(&m)) != learned.on_disk {
            return Ok(());
        }
        let changes = &learned.changes;
        let mut table = Table::default();
        let mut records = Vec::with_capacity(self.bytes.len() + changes.len() * 256);
        // The newest first: should the table fill, older entries go to their manifests.
        for record in changes.values().flatten() {
            let names: Vec<&str> = record.files.iter().map(|f| f.path.as_str()).collect();
            if let Some(ids) = table.numbers(&names) {
                write_record(&mut records, record, &ids);
            }
        }
        // The rest as read, each file with its name's new number (`parse` checked
        // every record's layout and every number against the old table).
        let mut names = Vec::new();
        for (key, range) in &self.at {
            if changes.contains_key(key) {
                continue;
            }
            let bytes = &self.bytes[range.clone()];
            let head = 32 + 32 + 1 + bytes[64] as usize + 2;
            let files = bytes[head..].chunks_exact(FILE_LEN);
            names.clear();
            names.extend(files.clone().map(|f| self.paths[u16::from_le_bytes([f[0], f[1]]) as usize].as_str()));
            let Some(ids) = table.numbers(&names) else { continue };
            records.extend_from_slice(&bytes[..head]);
            for (file, id) in files.zip(ids) {
                records.extend_from_slice(&id.to_le_bytes());
                records.extend_from_slice(&file[2..]);
            }
        }
        let mut out = Vec::with_capacity(records.len() + table.bytes.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(table.ids.len() as u16).to_le_bytes());
        out.extend_from_slice(&table.bytes);
        out.extend_from_slice(&records);
        let trailer = blake3::hash(&out);
        out.extend_from_slice(trailer.as_bytes());
        // Written in `tmp/`, where a run killed mid-write leaves it for `cache gc`.
        let tmp = root.join("tmp").join(format!("{FILE}-{}", std::process::id()));
        if let Err(e) = fs::create_dir_all(root.join("tmp")).and_then(|()| fs::write(&tmp, &out)).and_then(|()| fs::rename(&tmp, &path)) {
            // A full disk leaves the old index whole: it is a hint, so nothing is lost.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        learned.unsaved = false;
        learned.on_disk = fs::metadata(&path).ok().map(|m| stamp(&m));
        Ok(())
    }
}

/// The path table being written: each name's number, and the table's bytes.
#[derive(Default)]
struct Table {
    ids: HashMap<String, u16>,
    bytes: Vec<u8>,
}

impl Table {
    /// The numbers of `paths`, the new ones added; `None`, adding none, when they would
    /// not all fit (the count is a u16).
    fn numbers(&mut self, paths: &[&str]) -> Option<Vec<u16>> {
        let new: std::collections::HashSet<&str> = paths.iter().copied().filter(|p| !self.ids.contains_key(*p)).collect();
        if self.ids.len() + new.len() > u16::MAX as usize {
            return None;
        }
        let ids = paths
            .iter()
            .map(|&path| match self.ids.get(path) {
                Some(&id) => id,
                None => {
                    let id = self.ids.len() as u16;
                    self.bytes.extend_from_slice(&(path.len() as u16).to_le_bytes());
                    self.bytes.extend_from_slice(path.as_bytes());
                    self.ids.insert(path.to_string(), id);
                    id
                }
            })
            .collect();
        Some(ids)
    }
}

/// A file's bytes in a record: its name's number, size, mtime.
const FILE_LEN: usize = 2 + 8 + 8;

/// Append `r` to `out`, its files named by `ids`. `put` admits only records whose
/// counts, lengths and mtimes fit their fields.
fn write_record(out: &mut Vec<u8>, r: &Record, ids: &[u16]) {
    out.extend_from_slice(&r.key);
    out.extend_from_slice(&r.output);
    let kind = &r.kind.as_bytes()[..r.kind.len().min(255)];
    out.push(kind.len() as u8);
    out.extend_from_slice(kind);
    out.extend_from_slice(&(r.files.len() as u16).to_le_bytes());
    for (f, id) in r.files.iter().zip(ids) {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&f.size.to_le_bytes());
        out.extend_from_slice(&(f.mtime_ns as u64).to_le_bytes());
    }
}

/// Bounds-checked reading: a damaged index gives `None`, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str16(&mut self) -> Option<&'a str> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    /// A file: its path's number in the table, size, mtime.
    fn file(&mut self) -> Option<(usize, u64, u64)> {
        Some((self.u16()? as usize, self.u64()?, self.u64()?))
    }
    /// Past a record's fields after its key, checking that each path number is in a
    /// table of `paths` names (so that `check` may index the table).
    fn skip_record_after_key(&mut self, paths: usize) -> Option<()> {
        self.take(32)?;
        let kind_len = self.u8()? as usize;
        std::str::from_utf8(self.take(kind_len)?).ok()?;
        for _ in 0..self.u16()? {
            let (path, _, _) = self.file()?;
            (path < paths).then_some(())?;
        }
        Some(())
    }
    #[cfg(test)]
    fn record(&mut self, paths: &[String]) -> Option<Record> {
        let key = self.take(32)?.try_into().ok()?;
        let output = self.take(32)?.try_into().ok()?;
        let kind_len = self.u8()? as usize;
        let kind = std::str::from_utf8(self.take(kind_len)?).ok()?.to_string();
        let n = self.u16()?;
        let files = (0..n)
            .map(|_| {
                let (path, size, mtime) = self.file()?;
                Some(Seen { path: paths.get(path)?.clone(), size, mtime_ns: u128::from(mtime) })
            })
            .collect::<Option<_>>()?;
        Some(Record { key, output, kind, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(k: u8) -> Record {
        Record {
            key: [k; 32],
            output: [k + 1; 32],
            kind: "measure".into(),
            files: vec![
                Seen { path: "manifest.json".into(), size: 10, mtime_ns: 1 },
                Seen { path: "images/0001.jpg".into(), size: u64::MAX, mtime_ns: u64::MAX.into() },
            ],
        }
    }

    #[test]
    fn what_is_saved_reads_back_and_a_damaged_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::read(dir.path());
        assert!(index.is_empty());
        index.put(record(1));
        index.put(record(2));
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        assert_eq!((index.len(), index.get(&[1; 32])), (2, Some(record(1))));
        let mut seen = Vec::new();
        let check = index.check("measure", &[2; 32], |p, s, m| {
            seen.push((p.to_string(), s, m));
            true
        });
        assert_eq!(check, Check::Fresh([3; 32]));
        assert_eq!(seen[1], ("images/0001.jpg".into(), u64::MAX, u64::MAX.into()));
        assert_eq!(index.check("measure", &[2; 32], |p, _, _| p != "images/0001.jpg"), Check::Stale);
        assert_eq!(index.check("datagen", &[2; 32], |_, _, _| true), Check::Stale, "another kind's entry");
        assert_eq!(index.check("measure", &[9; 32], |_, _, _| true), Check::NotIndexed);

        // A dropped key is gone after the next save, and so are the names only it used;
        // the others stay.
        let mut own = record(3);
        own.files.push(Seen { path: "only/mine.txt".into(), size: 1, mtime_ns: 1 });
        index.put(own.clone());
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        assert_eq!((index.get(&[3; 32]), index.paths.len()), (Some(own), 3));
        index.drop_key(&[1; 32]);
        index.drop_key(&[3; 32]);
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        assert_eq!((index.len(), index.get(&[1; 32]), index.get(&[2; 32])), (1, None, Some(record(2))));
        assert_eq!(index.paths, ["manifest.json", "images/0001.jpg"]);

        // Every way of cutting the file short, and a flipped byte, read as no index.
        let bytes = fs::read(dir.path().join(FILE)).unwrap();
        for cut in 0..bytes.len() {
            assert!(Index::parse(bytes[..cut].to_vec()).is_none(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(Index::parse(flipped).is_none());
    }

    /// An entry with more files than the count field holds, or a file from before 1970
    /// (whose mtime reads as 0, so two such mtimes look alike), is not indexed, and is
    /// forgotten if it was: its manifest decides, which checks every file.
    #[test]
    fn entries_the_index_cannot_hold_whole_are_left_to_their_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::read(dir.path());
        index.put(record(1));
        index.put(record(2));
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        let mut many = record(1);
        many.files = (0..=u16::MAX as usize).map(|i| Seen { path: format!("images/{i}.jpg"), size: 1, mtime_ns: 1 }).collect();
        index.put(many);
        let mut old = record(2);
        old.files[1].mtime_ns = 0;
        index.put(old);
        let mut new = record(3);
        new.files[0].mtime_ns = 0;
        index.put(new);
        let mut far = record(5);
        far.files[1].mtime_ns = u128::from(u64::MAX) + 1;
        index.put(far);
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        assert_eq!((index.len(), index.get(&[1; 32]), index.get(&[2; 32]), index.get(&[3; 32])), (0, None, None, None));
        assert_eq!(index.get(&[5; 32]), None, "an mtime past what 64 bits of ns hold");
        // A foreign index that holds an mtime of 0 vouches for nothing.
        let mut zero = record(4);
        zero.files[0].mtime_ns = 0;
        let (mut table, mut record) = (Table::default(), Vec::new());
        let ids = table.numbers(&zero.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>()).unwrap();
        write_record(&mut record, &zero, &ids);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(table.ids.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&table.bytes);
        bytes.extend_from_slice(&record);
        let trailer = blake3::hash(&bytes);
        bytes.extend_from_slice(trailer.as_bytes());
        let index = Index::parse(bytes.clone()).unwrap();
        assert_eq!(index.check("measure", &[4; 32], |_, _, _| true), Check::Stale);
        // A path number past the table's end makes the whole file foreign.
        let body = bytes.len() - 32;
        bytes.truncate(body);
        let last_file = body - 18;
        bytes[last_file..last_file + 2].copy_from_slice(&7u16.to_le_bytes());
        let trailer = blake3::hash(&bytes);
        bytes.extend_from_slice(trailer.as_bytes());
        assert!(Index::parse(bytes).is_none());
    }

    /// Names past what the table numbers leave a whole entry to its manifest, and add
    /// none of its names.
    #[test]
    fn an_entry_whose_names_overflow_the_table_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::read(dir.path());
        let named = |k: u8, n: usize| Record {
            files: (0..n).map(|i| Seen { path: format!("{k}/{i}"), size: 1, mtime_ns: 1 }).collect(),
            ..record(k)
        };
        index.put(named(1, 40_000));
        index.put(named(2, 30_000));
        index.save(dir.path()).unwrap();
        let index = Index::read(dir.path());
        let kept: Vec<u8> = [1, 2].into_iter().filter(|&k| index.get(&[k; 32]).is_some()).collect();
        assert_eq!(kept.len(), 1, "one of the two fits");
        assert_eq!(index.paths.len(), if kept == [1] { 40_000 } else { 30_000 });
    }

    /// The file is written in `tmp/` and renamed: a run killed mid-write leaves it
    /// where `cache gc` clears, not beside the index for good.
    #[test]
    fn the_index_is_written_through_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::read(dir.path());
        index.put(record(1));
        index.save(dir.path()).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with(FILE)).collect::<Vec<_>>(), [FILE], "{names:?}");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_save_without_changes_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        Index::read(dir.path()).save(dir.path()).unwrap();
        assert!(!dir.path().join(FILE).exists());
    }

    /// An index read before the lock (`Cache::read_index_ahead`) is not written over
    /// one that another run saved meanwhile, nor over `cache gc` removing it; and what
    /// a command learns stays in each of its saves (a search saves once a round).
    #[test]
    fn a_save_keeps_what_came_after_the_read_and_every_earlier_save() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let read_early = Index::read(root);
        let other = Index::read(root);
        other.put(record(1));
        other.save(root).unwrap();
        read_early.put(record(2));
        read_early.save(root).unwrap();
        let now = Index::read(root);
        assert_eq!((now.get(&[1; 32]).is_some(), now.get(&[2; 32]).is_some()), (true, false), "the other run's index stands");

        let before_gc = Index::read(root);
        fs::remove_file(root.join(FILE)).unwrap();
        before_gc.put(record(3));
        before_gc.save(root).unwrap();
        assert!(!root.join(FILE).exists(), "what gc removed stays removed");

        let index = Index::read(root);
        index.put(record(4));
        index.save(root).unwrap();
        let written = fs::metadata(root.join(FILE)).unwrap().modified().unwrap();
        index.save(root).unwrap();
        assert_eq!(fs::metadata(root.join(FILE)).unwrap().modified().unwrap(), written, "nothing new: not written again");
        index.put(record(5));
        index.save(root).unwrap();
        let now = Index::read(root);
        assert!(now.get(&[4; 32]).is_some() && now.get(&[5; 32]).is_some(), "the first save's record is in the second");
    }
}
