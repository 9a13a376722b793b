//! Before a cell: keep it from the server caches that other cells filled.
//!
//! Two cells of one experiment share a server (as they should), and the same seed
//! gives byte-identical prompts: without isolation, the second cell's first turns read
//! the first cell's images from the prefix cache and are measured warm by accident.
//! What each cell got is recorded in its `meta.json` and shown in the report.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Serialize;

use super::Endpoint;
use crate::client::{self, Api};
use crate::config::CacheIsolation;
use crate::error::WithHint;

/// vLLM's routes that empty its caches (served with `VLLM_SERVER_DEV_MODE=1`). The
/// prefix cache's is the one that matters; the others came in later versions.
pub const RESET_ROUTES: [&str; 3] = ["/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"];

/// What was done for a cell, as `meta.json` records it.
#[derive(Debug, Clone, Serialize)]
pub struct Isolated {
    /// What the experiment asked for (`auto` when it did not say).
    pub asked: &'static str,
    /// What was done: `reset`, `salt` or `none`.
    pub done: &'static str,
    /// The `cache_salt` every request of the cell carries, under `salt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Under `salt`: the nonce every image's bytes carry (a JPEG comment, a PNG text
    /// chunk; the pixels are the same), so that caches keyed by an image's bytes miss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_nonce: Option<String>,
    /// Whether the cell is isolated from every cache that could hold its prompts.
    pub complete: bool,
    /// Why it is not, or what was done instead of what was asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl From<Isolated> for crate::records::Isolation {
    fn from(i: Isolated) -> Self {
        crate::records::Isolation {
            asked: i.asked.into(),
            done: i.done.into(),
            salt: i.salt,
            image_nonce: i.image_nonce,
            complete: Some(i.complete),
            notes: i.notes,
        }
    }
}

/// Isolate the next cell on `endpoint`. `salt` is unique to this execution of the
/// cell, so a salted cell misses even on a server that measured it before. A reset
/// route gets as long as a request (`timeout`, at most 30 s).
pub async fn isolate(endpoint: &Endpoint, backend: &str, asked: CacheIsolation, salt: &str, timeout: Duration) -> Result<Isolated> {
    let mut out = Isolated { asked: asked.name(), done: "none", salt: None, image_nonce: None, complete: false, notes: Vec::new() };
    let hosted = matches!(backend, "openai" | "anthropic") || endpoint.api != Api::OpenAiChat;
    match asked {
        CacheIsolation::None => {
            out.notes.push("cache-isolation = \"none\": caches are as earlier cells left them, on purpose".into());
            return Ok(out);
        }
        _ if hosted => {
            let why = format!("a hosted API (`{backend}`) offers no way to empty or salt its caches");
            if asked != CacheIsolation::Auto {
                return Err(anyhow!("cache-isolation = \"{}\" is not possible: {why}", asked.name()))
                    .hint("set cache-isolation = \"none\" for this model");
            }
            out.notes.push(format!("not isolated: {why}; its numbers may include cache hits from other cells"));
            return Ok(out);
        }
        CacheIsolation::Restart if matches!(backend, "vllm" | "sim" | "command") => {
            // The run stopped the server before this cell (`Services::restart`).
            out.done = "restart";
            out.complete = true;
            return Ok(out);
        }
        CacheIsolation::Restart => {
            return Err(anyhow!(
                "cache-isolation = \"restart\" needs a server pipeline launches, and `{backend}` is started by someone else"
            ))
            .hint("set cache-isolation = \"reset\" or \"salt\"");
        }
        CacheIsolation::Salt => {}
        CacheIsolation::Auto if endpoint.resets_hang.load(Ordering::Relaxed) => out.notes.push(format!(
            "POST {} did not answer an earlier cell in time, so it was not asked again; the prefix cache is salted instead",
            RESET_ROUTES[0]
        )),
        CacheIsolation::Reset if endpoint.resets_hang.load(Ordering::Relaxed) => {
            return Err(anyhow!("cache-isolation = \"reset\", but POST {} did not answer an earlier cell in time", RESET_ROUTES[0]))
                .hint("set cache-isolation = \"salt\" for a server whose reset routes hang");
        }
        CacheIsolation::Auto | CacheIsolation::Reset => {
            let refused = reset(endpoint, timeout.min(Duration::from_secs(30))).await;
            match refused.first() {
                None => {
                    out.done = "reset";
                    out.complete = true;
                    return Ok(out);
                }
                Some((route, _)) if *route != RESET_ROUTES[0] => {
                    // An older server: the prefix cache is empty, the rest may not be.
                    out.done = "reset";
                    out.notes.extend(refused.iter().map(|(route, why)| format!("POST {route} failed ({why}); that cache was not emptied")));
                    return Ok(out);
                }
                Some((route, why)) if asked == CacheIsolation::Reset => {
                    return Err(anyhow!("cache-isolation = \"reset\", but the server refused POST {route} ({why})")).hint(
                        "vLLM serves the reset routes when started with VLLM_SERVER_DEV_MODE=1 (pipeline sets it for `vllm` models); or set cache-isolation = \"salt\" or \"none\"",
                    );
                }
                Some((route, why)) => out.notes.push(format!(
                    "the server refused POST {route} ({why}; vLLM serves it with VLLM_SERVER_DEV_MODE=1), so the prefix cache is salted instead"
                )),
            }
        }
    }
    out.done = "salt";
    out.salt = Some(salt.to_string());
    Ok(out)
}

impl Isolated {
    /// Record that the cell's images carry `nonce`, but for `unsalted` of them (not a
    /// JPEG or PNG): the salt is complete when every image does.
    pub fn images_salted(&mut self, nonce: &str, unsalted: usize) {
        self.image_nonce = Some(nonce.to_string());
        self.complete = unsalted == 0;
        if unsalted > 0 {
            self.notes.push(format!(
                "{unsalted} image(s) are neither JPEG nor PNG and could not carry the nonce: vLLM's multimodal caches, keyed by an image's bytes, may hold them from an earlier cell"
            ));
        }
    }
}

/// `image` with `nonce` written into it where decoders skip it: a comment segment
/// after a JPEG's start-of-image marker, a `tEXt` chunk after a PNG's header. The
/// pixels decode the same; the bytes (and every hash of them) differ. None for
/// anything else.
pub fn with_nonce(image: &[u8], nonce: &str) -> Option<Vec<u8>> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    let text = format!("pipeline-nonce {nonce}");
    if image.starts_with(&[0xFF, 0xD8]) {
        // After the APPn segments that lead (JFIF's APP0 and Exif's APP1 must come
        // first, and readers look for them there), each FF En plus a length that
        // counts itself.
        let mut at = 2;
        while image.len() >= at + 4 && image[at] == 0xFF && (0xE0..=0xEF).contains(&image[at + 1]) {
            at += 2 + usize::from(u16::from_be_bytes([image[at + 2], image[at + 3]]));
        }
        let at = at.min(image.len());
        // COM segment: FF FE, then a big-endian length counting itself.
        let len = u16::try_from(text.len() + 2).ok()?;
        let mut out = Vec::with_capacity(image.len() + text.len() + 4);
        out.extend_from_slice(&image[..at]);
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&image[at..]);
        return Some(out);
    }
    // A PNG's first chunk is IHDR: 8 bytes of signature, then 4 + 4 + 13 + 4.
    const IHDR_END: usize = 8 + 25;
    if image.starts_with(PNG) && image.len() >= IHDR_END && &image[12..16] == b"IHDR" {
        let data = [b"Comment\0".as_slice(), text.as_bytes()].concat();
        let mut chunk = Vec::with_capacity(data.len() + 12);
        chunk.extend_from_slice(&u32::try_from(data.len()).ok()?.to_be_bytes());
        chunk.extend_from_slice(b"tEXt");
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
        return Some([&image[..IHDR_END], &chunk, &image[IHDR_END..]].concat());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<u8> {
        image::load_from_memory(bytes).unwrap().to_rgb8().into_raw()
    }

    #[test]
    fn a_nonce_changes_an_images_bytes_not_its_pixels() {
        let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 15, y as u8 * 30, 7]));
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
            let a = with_nonce(&bytes, "pipeline-1a2b3c4d").unwrap();
            let b = with_nonce(&bytes, "pipeline-5e6f7a8b").unwrap();
            assert!(a != bytes && a != b, "{format:?}: the bytes differ per nonce");
            assert_eq!(decoded(&a), decoded(&bytes), "{format:?}: the pixels do not");
            assert_eq!(decoded(&b), decoded(&bytes));
            assert_eq!(image::guess_format(&a).unwrap(), format);
            // A JFIF header stays where readers look for it.
            assert_eq!(&a[6..10] == b"JFIF", &bytes[6..10] == b"JFIF", "{format:?}");
        }
        assert_eq!(with_nonce(b"GIF89a....", "n"), None);
    }
}

/// POST every reset route; the ones that failed, with why.
async fn reset(endpoint: &Endpoint, timeout: Duration) -> Vec<(&'static str, String)> {
    let client = match client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return vec![(RESET_ROUTES[0], e.to_string())],
    };
    let mut refused = Vec::new();
    for route in RESET_ROUTES {
        let mut req = client.post(format!("{}{route}", endpoint.base_url));
        if let Some(key) = &endpoint.api_key {
            req = req.bearer_auth(key);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => refused.push((route, format!("HTTP {}", resp.status().as_u16()))),
            Err(e) => {
                if e.is_timeout() && route == RESET_ROUTES[0] {
                    // Hanging once, it would hang for every cell: give up on this server.
                    endpoint.resets_hang.store(true, Ordering::Relaxed);
                }
                refused.push((route, endpoint.secrets.redact(&crate::client::why(&e)).into_owned()))
            }
        }
        // Without the prefix cache's route, the others are not worth waiting for.
        if refused.first().is_some_and(|(r, _)| *r == RESET_ROUTES[0]) {
            break;
        }
    }
    refused
}
