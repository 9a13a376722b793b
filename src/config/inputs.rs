//! Between parsing and validation: read what the experiment file points to (the
//! questions file, the image folder, the files an `import` model reads), so that
//! validation itself touches no file.
//! Problems are [`Issue`]s located in the file like every other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{ImageFolder, Issue, Source, issue_at, raw, read_capped, read_results};
use crate::conversations::{ConversationFile, Format};

/// What the file's paths hold.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The questions file's lines, blank ones dropped.
    pub questions: Vec<String>,
    pub images: Option<ImageFolder>,
    /// `workload.conversations`, scanned.
    pub conversations: Option<ConversationFile>,
    /// Each `import` model's files, by (model, seed as written): their digests.
    pub results: BTreeMap<(String, String), String>,
    /// `workload.trace`, read through and checked.
    pub trace: Option<crate::trace::TraceFile>,
    pub issues: Vec<Issue>,
}

/// Read `workload.questions-file`, `workload.images-dir`, `workload.conversations`,
/// `workload.trace` and each model's `results`, relative to the project.
pub fn read(source: &Source, raw: &raw::RawExperiment) -> Inputs {
    let w = &raw.workload;
    let mut inputs = Inputs::default();
    let error = |path: &str, message: String, hint: &str| issue_at(source, path, message, Some(hint.to_string()));
    if let Some(file) = &w.questions_file {
        match read_capped(&source.base_dir.join(file)) {
            Ok(text) => inputs.questions = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            Err(e) => inputs.issues.push(error(
                "workload.questions-file",
                format!("cannot read `{file}`: {e}"),
                "paths are relative to the project root",
            )),
        }
    }
    if let Some(dir) = &w.images_dir {
        match image_folder(source.base_dir.join(dir)) {
            Ok(folder) => inputs.images = Some(folder),
            Err((message, hint)) => inputs.issues.push(error("workload.images-dir", format!("`{dir}`: {message}"), hint)),
        }
    }
    if let Some(file) = &w.conversations {
        // An unknown format is the validator's to refuse.
        let format = w.conversations_format.as_deref().map(Format::parse);
        if format != Some(None) {
            match ConversationFile::scan(&source.base_dir.join(file), file, format.flatten()) {
                Ok(scanned) => inputs.conversations = Some(scanned),
                Err(e) => inputs.issues.push(issue_at(
                    source,
                    "workload.conversations",
                    match &e.at {
                        Some(at) => format!("`{}` {at}: {}", crate::untrusted::escaped(file, 200), e.message),
                        None => format!("`{}`: {}", crate::untrusted::escaped(file, 200), e.message),
                    },
                    Some(e.hint.clone()),
                )),
            }
        }
    }
    if let Some(file) = &w.trace {
        match crate::trace::validate(file, &source.base_dir.join(file)) {
            Ok(trace) => inputs.trace = Some(trace),
            Err(e) => inputs.issues.push(error("workload.trace", format!("`{file}` {e}"), &e.hint)),
        }
    }
    for (name, m) in &raw.models {
        for (seed, file) in m.results.iter().flatten() {
            match read_results(&source.base_dir.join(file)) {
                Ok(bytes) => {
                    inputs.results.insert((name.clone(), seed.clone()), blake3::hash(&bytes).to_hex().to_string());
                }
                Err((message, hint)) => inputs.issues.push(issue_at(
                    source,
                    &format!("models.{name}.results.{seed}"),
                    format!("cannot read `{file}`: {message}"),
                    Some(hint),
                )),
            }
        }
    }
    inputs
}

/// The folder's image files, sorted, and one digest over their contents: the datagen
/// key holds it, so changing an image regenerates the data.
fn image_folder(path: PathBuf) -> Result<ImageFolder, (String, &'static str)> {
    let entries =
        std::fs::read_dir(&path).map_err(|e| (format!("cannot read the folder: {e}"), "paths are relative to the project root"))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    let mut hasher = blake3::Hasher::new_derive_key("pipeline image folder v1");
    let mut bad = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(bytes) if image::guess_format(&bytes).is_ok() => {
                hasher.update(blake3::hash(&bytes).as_bytes());
            }
            _ => bad.push(f.file_name().unwrap_or_default().to_string_lossy().into_owned()),
        }
    }
    if !bad.is_empty() {
        return Err((format!("holds files that are not images: {}", bad.join(", ")), "keep only JPEG or PNG files in the folder"));
    }
    if files.is_empty() {
        return Err(("holds no images".to_string(), "add JPEG or PNG files, or remove images-dir to use synthetic images"));
    }
    Ok(ImageFolder { path, files, digest: hasher.finalize().to_hex().to_string() })
}
