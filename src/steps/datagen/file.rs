//! The data of conversations drawn from the user's file: each drawn conversation's
//! turns (text and images in the file's order, the recorded answers, the system
//! prompt), its images copied at their own size or resized to the experiment's
//! resolution, and a warm-up turn of synthetic images.
//!
//! The planner drew the conversations and put the digest of their images in the key;
//! the images are read again here, and a digest that no longer matches (an image
//! edited since the plan) fails the step rather than write data its key does not
//! describe.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Conversation, Dataset, Part, Turn, stream, synthetic_jpeg};
use crate::conversations::{self, ConversationFile};
use crate::error::WithHint;
use crate::records::{self, DrawnConversation};

/// A datagen step's parameters for conversations from a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    pub seed: u64,
    pub conversations: u32,
    /// At most this many turns of each conversation are replayed.
    pub turns: u32,
    /// `openai` or `llava`.
    pub format: String,
    /// blake3 of the conversations file.
    pub digest: String,
    /// The conversations replayed, by their number in the file, in order.
    pub drawn: Vec<u64>,
    /// One digest over the images of the replayed turns of the drawn conversations:
    /// an image no drawn conversation replays is not in the key.
    pub images: String,
    /// `source`, or `WxH` to resize to.
    pub resolution: String,
    pub jpeg_quality: u8,
}

/// Write the drawn conversations of `file` into `out`.
pub fn run(p: &Params, file: &ConversationFile, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out.join("images"))?;
    let size = match p.resolution.split_once('x') {
        Some((w, h)) => Some((w.parse::<u32>().context("resolution")?, h.parse::<u32>().context("resolution")?)),
        None => None,
    };
    let wanted: BTreeSet<u64> = p.drawn.iter().copied().collect();
    let written = crate::untrusted::escaped(&file.written, 200);
    let read = file.read(&wanted).map_err(|e| anyhow::anyhow!("`{written}` {e}"))?;
    let (mut conversations, mut digests, mut drawn) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_sizes = Vec::new();
    for (c, &index) in p.drawn.iter().enumerate() {
        // A conversation drawn twice (a file smaller than the batch) is written twice.
        let source = read.get(&index).cloned().context("a drawn conversation was not read")?;
        let at = file.place(index);
        let mut turns = Vec::new();
        for (t, turn) in source.turns.iter().take(p.turns as usize).enumerate() {
            let (mut parts, mut images) = (Vec::new(), Vec::new());
            for part in &turn.parts {
                match part {
                    conversations::Part::Text(text) => parts.push(Part::Text(text.clone())),
                    conversations::Part::Image(image) => {
                        let fail = |e: String| anyhow::anyhow!("`{written}` {at}: {e}");
                        let bytes = conversations::image_bytes(file.folder(), image).map_err(fail)?;
                        let (format, dims) = conversations::check_image(&bytes).map_err(|e| fail(format!("{} {e}", image.name())))?;
                        digests.push(blake3::hash(&bytes));
                        if c == 0 && t == 0 {
                            first_sizes.push(dims);
                        }
                        let name = format!("images/c{c:03}-t{t:03}-i{:03}", images.len());
                        let path = match size {
                            None => {
                                let path = format!("{name}.{}", if format == image::ImageFormat::Png { "png" } else { "jpg" });
                                std::fs::write(out.join(&path), &bytes).with_context(|| format!("writing {path}"))?;
                                path
                            }
                            Some((w, h)) => {
                                let path = format!("{name}.jpg");
                                resized(&bytes, w, h, p.jpeg_quality, &out.join(&path))
                                    .map_err(|e| fail(format!("{} does not decode: {e}", image.name())))?;
                                path
                            }
                        };
                        images.push(path.clone());
                        parts.push(Part::Image(path));
                    }
                }
            }
            turns.push(Turn { question: String::new(), images, parts, answer: turn.answer.clone() });
        }
        drawn.push(DrawnConversation { index, id: source.id.clone(), at });
        conversations.push(Conversation { turns, system: source.system.clone() });
    }
    if conversations::drawn_digest(&digests) != p.images {
        let error = anyhow::anyhow!("the images of the drawn conversations of `{written}` changed since the plan was made");
        return Err(error.hint("run again: the plan then keys the images as they are now"));
    }
    let warmup = warm_up(p, &first_sizes, size, out)?;
    let source = records::Dataset {
        file: file.written.clone(),
        path: file.path.display().to_string(),
        format: p.format.clone(),
        digest: p.digest.clone(),
        resolution: p.resolution.clone(),
        history: None,
        conversations: drawn,
    };
    let dataset = Dataset { conversations, warmup, source: Some(source) };
    std::fs::write(out.join("conversations.json"), serde_json::to_vec_pretty(&dataset)?).context("writing conversations.json")?;
    Ok(())
}

/// The warm-up turn: as many synthetic images as the first drawn turn has, of the size
/// the measured images have, so the server warms up on the same shapes without
/// caching anything the measurement sends.
fn warm_up(p: &Params, first_sizes: &[(u32, u32)], size: Option<(u32, u32)>, out: &Path) -> Result<Turn> {
    let mut images = Vec::new();
    for (f, &(w, h)) in first_sizes.iter().enumerate() {
        let (w, h) = size.unwrap_or((w, h));
        let path = format!("images/warmup-f{f:03}.jpg");
        synthetic_jpeg(w.min(8192), h.min(8192), p.jpeg_quality, &mut stream(p.seed, u32::MAX, 0, f as u32), &out.join(&path))
            .with_context(|| format!("writing {path}"))?;
        images.push(path);
    }
    let question = if images.is_empty() { "Say hello." } else { "Describe the image." };
    Ok(Turn { question: question.into(), images, parts: Vec::new(), answer: None })
}

/// An image resized to exactly `w`×`h` (every image then costs the same vision
/// tokens, as the synthetic ones do) and written as a JPEG.
fn resized(bytes: &[u8], w: u32, h: u32, quality: u8, dest: &Path) -> Result<()> {
    let img = image::load_from_memory(bytes)?;
    let img = image::imageops::resize(&img.to_rgb8(), w, h, image::imageops::FilterType::Triangle);
    let (w16, h16) = (u16::try_from(w)?, u16::try_from(h)?);
    jpeg_encoder::Encoder::new_file(dest, quality)?.encode(img.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)?;
    Ok(())
}
