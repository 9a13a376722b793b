//! Conversations from a file, as the planner needs them: which conversations each
//! cell replays ([`conversations::draw`]), and the digests of their images, which go in
//! the datagen keys. The drawn conversations are read in one pass over the file and
//! their images once, for all cells; an image no cell replays is never read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;

use crate::config::{Experiment, History};
use crate::conversations::{self, Conversation, ConversationFile};
use crate::error::WithHint;
use crate::steps::datagen::{JPEG_QUALITY, file};

pub struct Drawn {
    file: Arc<ConversationFile>,
    /// Per drawn conversation: images per turn, and the digest of each image of the
    /// turns any cell replays.
    images: BTreeMap<u64, (Vec<usize>, Vec<blake3::Hash>)>,
}

impl Drawn {
    /// Read what the cells `(seed, batch size, turns)` replay.
    pub fn read(exp: &Experiment, file: &Arc<ConversationFile>, cells: &[(u64, u32, u32)]) -> Result<Drawn> {
        let count = file.at.len() as u64;
        let wanted: BTreeSet<u64> = cells.iter().flat_map(|&(seed, batch, _)| conversations::draw(seed, batch, count)).collect();
        let turns = cells.iter().map(|&(_, _, t)| t as usize).max().unwrap_or(0);
        let named = |e: String| anyhow::anyhow!("`{}` {e}", crate::untrusted::escaped(&file.written, 200));
        let read = file.read(&wanted).map_err(|e| named(e.to_string()).hint(e.hint.clone()))?;
        if exp.workload.history == History::Recorded {
            recorded_answers(file, &read, turns).map_err(|e| named(e).hint(
                "history = \"recorded\" resends the file's assistant turns: give every replayed turn but the last its answer, lower `turns`, or use history = \"live\"",
            ))?;
        }
        let folder = file.folder();
        let images = read
            .par_iter()
            .map(|(&i, c)| {
                let per_turn = c.turns.iter().map(|t| c_images(t)).collect();
                let digests = conversations::image_digests(c, turns, folder).map_err(|e| format!("{}: {e}", file.place(i)))?;
                Ok((i, (per_turn, digests)))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()
            .map_err(|e| {
                named(e).hint(format!(
                    "image paths are relative to the conversations file's folder ({}); pipeline sends JPEG and PNG",
                    crate::untrusted::quoted(&folder.display().to_string())
                ))
            })?;
        Ok(Drawn { file: file.clone(), images })
    }

    /// The datagen parameters of a cell that replays `turns` turns of `batch`
    /// conversations drawn for `seed`.
    pub fn params(&self, exp: &Experiment, seed: u64, batch: u32, turns: u32) -> file::Params {
        let drawn = conversations::draw(seed, batch, self.file.at.len() as u64);
        let digests = drawn.iter().filter_map(|i| self.images.get(i)).flat_map(|(per_turn, digests)| {
            let replayed: usize = per_turn.iter().take(turns as usize).sum();
            &digests[..replayed.min(digests.len())]
        });
        let w = &exp.workload;
        file::Params {
            seed,
            conversations: batch,
            turns,
            format: self.file.format.name().to_string(),
            digest: self.file.digest.clone(),
            images: conversations::drawn_digest(digests),
            drawn,
            resolution: if w.source_size { "source".into() } else { format!("{}x{}", w.width, w.height) },
            jpeg_quality: JPEG_QUALITY,
        }
    }
}

fn c_images(t: &conversations::Turn) -> usize {
    t.parts.iter().filter(|p| matches!(p, conversations::Part::Image(_))).count()
}

/// Under recorded history, every replayed turn but the last needs its answer.
fn recorded_answers(file: &ConversationFile, read: &BTreeMap<u64, Conversation>, turns: usize) -> Result<(), String> {
    for (&i, c) in read {
        let replayed = c.turns.len().min(turns);
        if let Some(t) = c.turns[..replayed.saturating_sub(1)].iter().position(|t| t.answer.is_none()) {
            return Err(format!("{}: turn {} has no assistant answer", file.place(i), t + 1));
        }
    }
    Ok(())
}
