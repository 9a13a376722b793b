//! Data generation: the images and questions of every conversation of a cell.
//!
//! Deterministic from its parameters: each image draws from its own ChaCha stream,
//! seeded by blake3 of (seed, conversation, turn, frame), so the same parameters give
//! byte-identical files on any machine, whatever the thread order. Synthetic images are
//! not flat colour: gradients, shapes and pixel noise give JPEGs of realistic size
//! (about 100 kB at 720p, quality 75), because payload size changes upload and
//! decode time. With `images-dir`, the user's images are reused as a pool, shuffled
//! per seed and reshuffled on every pass. With `conversations`, the conversations
//! are the user's own, drawn from a file ([`file`]).

use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::ImageFolder;

pub mod file;

/// Bump when generated files would change.
pub const VERSION: u32 = 2;
/// The JPEG quality of synthetic images (the planner puts it in every datagen key).
pub const JPEG_QUALITY: u8 = 75;

/// Everything a datagen step depends on: its key's `params` are exactly this,
/// serialized. The two kinds are told apart by their fields (`deny_unknown_fields`
/// on each); the keys of synthetic data are what they were before files came.
/// (`untagged` is kept out of configuration types for its error messages; these are
/// written by the planner only.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Params {
    Synthetic(Synthetic),
    File(file::Params),
}

/// Synthetic conversations: generated images (or a pool of the user's) and questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Synthetic {
    pub seed: u64,
    pub conversations: u32,
    pub turns: u32,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub questions: Vec<String>,
    /// The content digest of the user's image folder (`images-dir`); none: synthetic
    /// images. The folder itself is the step's other input.
    pub images_dir: Option<String>,
    pub jpeg_quality: u8,
}

/// `conversations.json`: what the measure step sends, turn by turn. What only
/// conversations from a file have is left out of synthetic data's file, which stays
/// byte for byte what it was.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub conversations: Vec<Conversation>,
    /// The warm-up request: its own images, so it primes no cache the measurement uses.
    pub warmup: Turn,
    /// Where the conversations come from, for `meta.json`: none for synthetic ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::records::Dataset>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    /// The system prompt, sent before the first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Turn {
    pub question: String,
    /// Paths relative to the datagen output folder.
    pub images: Vec<String>,
    /// Text and images in the file's order (`images` lists the same images, and
    /// `question` is empty). Empty for synthetic turns: images first, then the question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// The file's recorded assistant answer to this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// One piece of a user message: `{"text": …}` or `{"image": "images/…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Text(String),
    Image(String),
}

/// Where one image comes from.
enum Origin {
    Synthetic { conversation: u32, turn: u32, frame: u32 },
    Pool(usize),
}

/// Generate the dataset of `p` into `out`: synthetic conversations (`folder` is the
/// image folder whose digest `p.images_dir` holds), or those drawn from `file`.
pub fn run(p: &Params, folder: Option<&ImageFolder>, file: Option<&crate::conversations::ConversationFile>, out: &Path) -> Result<()> {
    match p {
        Params::Synthetic(p) => synthetic(p, folder, out),
        Params::File(p) => file::run(p, file.context("conversations from a file, but the experiment names none")?, out),
    }
}

fn synthetic(p: &Synthetic, folder: Option<&ImageFolder>, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out.join("images"))?;
    let mut jobs: Vec<(String, Origin)> = Vec::new();
    let mut pool = PoolCursor::new(p.seed, folder.map_or(0, |f| f.files.len()));
    let mut pick = |conversation: u32, turn: u32, frame: u32, name: String| -> (String, Origin) {
        match folder {
            Some(f) => {
                let i = pool.next();
                let ext = f.files[i].extension().and_then(|e| e.to_str()).unwrap_or("jpg").to_lowercase();
                (format!("{name}.{ext}"), Origin::Pool(i))
            }
            None => (format!("{name}.jpg"), Origin::Synthetic { conversation, turn, frame }),
        }
    };
    let mut conversations = Vec::new();
    for c in 0..p.conversations {
        let mut turns = Vec::new();
        for t in 0..p.turns {
            let mut images = Vec::new();
            for f in 0..p.frames {
                let (path, origin) = pick(c, t, f, format!("images/c{c:03}-t{t:03}-f{f:03}"));
                images.push(path.clone());
                jobs.push((path, origin));
            }
            let q = stream(p.seed, c, t, u32::MAX).next_u64() as usize % p.questions.len().max(1);
            turns.push(Turn { question: p.questions.get(q).cloned().unwrap_or_default(), images, parts: Vec::new(), answer: None });
        }
        conversations.push(Conversation { turns, system: None });
    }
    let mut warmup_images = Vec::new();
    for f in 0..p.frames {
        let (path, origin) = pick(u32::MAX, 0, f, format!("images/warmup-f{f:03}"));
        warmup_images.push(path.clone());
        jobs.push((path, origin));
    }
    let warmup =
        Turn { question: p.questions.first().cloned().unwrap_or_default(), images: warmup_images, parts: Vec::new(), answer: None };

    jobs.par_iter().try_for_each(|(path, origin)| -> Result<()> {
        let dest = out.join(path);
        match origin {
            Origin::Synthetic { conversation, turn, frame } => {
                synthetic_jpeg(p.width, p.height, p.jpeg_quality, &mut stream(p.seed, *conversation, *turn, *frame), &dest)
            }
            Origin::Pool(i) => std::fs::copy(&folder.expect("pool implies folder").files[*i], &dest).map(|_| ()).map_err(Into::into),
        }
        .with_context(|| format!("writing {path}"))
    })?;
    let dataset = Dataset { conversations, warmup, source: None };
    std::fs::write(out.join("conversations.json"), serde_json::to_vec_pretty(&dataset)?).context("writing conversations.json")?;
    Ok(())
}

/// An independent random stream per image (or per question when `frame` is MAX).
pub(crate) fn stream(seed: u64, conversation: u32, turn: u32, frame: u32) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new_derive_key("pipeline datagen stream v1");
    h.update(&seed.to_le_bytes()).update(&conversation.to_le_bytes()).update(&turn.to_le_bytes()).update(&frame.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// Visits a pool of `n` images in a seeded order, reshuffling on every pass.
struct PoolCursor {
    rng: ChaCha8Rng,
    order: Vec<usize>,
    pos: usize,
}

impl PoolCursor {
    fn new(seed: u64, n: usize) -> Self {
        let mut c = PoolCursor { rng: stream(seed, u32::MAX, u32::MAX, u32::MAX), order: (0..n).collect(), pos: n };
        c.pos = c.order.len();
        c
    }

    fn next(&mut self) -> usize {
        if self.pos >= self.order.len() {
            // Fisher–Yates with the seeded stream: portable, unlike a library shuffle
            // whose algorithm may change between versions.
            for i in (1..self.order.len()).rev() {
                let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
            self.pos = 0;
        }
        self.pos += 1;
        self.order[self.pos - 1]
    }
}

/// A deterministic picture: a two-colour gradient, a few rectangles and discs, and
/// pixel noise (which is what gives the JPEG a realistic size). It is drawn at a
/// quarter of the resolution and scaled up by repeating pixels, which keeps generation
/// cheap even in a debug build; the noise then forms 4×4 blocks.
pub fn synthetic_jpeg(width: u32, height: u32, quality: u8, rng: &mut ChaCha8Rng, path: &Path) -> Result<()> {
    const SCALE: u32 = 4;
    let (w, h) = (width.div_ceil(SCALE), height.div_ceil(SCALE));
    let colour = |rng: &mut ChaCha8Rng| [0, 8, 16].map(|shift| ((rng.next_u32() >> shift) & 0xff) as i32);
    let (a, b) = (colour(rng), colour(rng));
    let mut shapes = Vec::new();
    for _ in 0..6 {
        let colour = colour(rng);
        let (x, y) = (rng.next_u32() % w, rng.next_u32() % h);
        let (sw, sh) = (rng.next_u32() % (w / 3).max(1) + 2, rng.next_u32() % (h / 3).max(1) + 2);
        shapes.push((colour, [x as i64, y as i64, sw as i64, sh as i64], rng.next_u32().is_multiple_of(2)));
    }
    let mut noise = rng.next_u64() | 1;
    let mut img = RgbImage::new(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let t = (x + y) as i32 * 256 / (w + h).max(1) as i32;
        let mut c = [0i32; 3];
        for k in 0..3 {
            c[k] = (a[k] * (256 - t) + b[k] * t) >> 8;
        }
        for (sc, [sx, sy, sw, sh], disc) in &shapes {
            let (dx, dy) = (x as i64 - sx, y as i64 - sy);
            let inside =
                if *disc { dx * dx * sh * sh + dy * dy * sw * sw <= sw * sw * sh * sh } else { dx >= 0 && dy >= 0 && dx < *sw && dy < *sh };
            if inside {
                c = *sc;
            }
        }
        // xorshift64: cheap, deterministic noise of ±16 levels per channel.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        for (k, ch) in c.iter().enumerate() {
            let n = ((noise >> (k * 8)) & 0x1f) as i32 - 16;
            px.0[k] = (ch + n).clamp(0, 255) as u8;
        }
    }
    // Scale up by repeating each pixel SCALE times across and each row SCALE times down
    // (whole-row copies; the `image` crate's resize costs more than the JPEG encoding).
    let (src, row) = (img.as_raw(), w as usize * 3);
    let mut full = Vec::with_capacity(width as usize * height as usize * 3);
    let mut line = Vec::with_capacity(width as usize * 3);
    for y in 0..height as usize {
        if y % SCALE as usize == 0 {
            line.clear();
            let src_row = &src[(y / SCALE as usize) * row..][..row];
            for x in 0..width as usize {
                let i = (x / SCALE as usize) * 3;
                line.extend_from_slice(&src_row[i..i + 3]);
            }
        }
        full.extend_from_slice(&line);
    }
    // jpeg-encoder (SIMD DCT, optimised in debug builds too, see Cargo.toml) encodes a
    // 720p frame several times faster than the `image` crate's encoder.
    let (w16, h16) = (u16::try_from(width).context("image width")?, u16::try_from(height).context("image height")?);
    jpeg_encoder::Encoder::new_file(path, quality).and_then(|e| e.encode(&full, w16, h16, jpeg_encoder::ColorType::Rgb)).map_err(|e| {
        match e {
            // Its message is the I/O error's, which it also gives as its source: keep
            // one, or a full disk says "No space left on device" twice.
            jpeg_encoder::EncodingError::IoError(io) => anyhow::Error::from(io),
            other => anyhow::anyhow!("{other}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_realistic() {
        let dir = tempfile::tempdir().unwrap();
        let make = |turn: u32, name: &str| {
            let path = dir.path().join(name);
            synthetic_jpeg(320, 180, JPEG_QUALITY, &mut stream(66, 0, turn, 0), &path).unwrap();
            std::fs::read(path).unwrap()
        };
        let (a, b, c) = (make(1, "a.jpg"), make(1, "b.jpg"), make(2, "c.jpg"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Noise keeps a JPEG far from the few kB a flat image would take.
        assert!(a.len() > 8_000, "{} bytes", a.len());
    }

    #[test]
    fn pool_visits_every_image_once_per_pass() {
        let mut cursor = PoolCursor::new(7, 5);
        let mut first: Vec<usize> = (0..5).map(|_| cursor.next()).collect();
        first.sort();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
    }
}
