//! The simulator's latency model and token counting.
//!
//! * Prompt tokens: text counts one token per 4 characters (rounded up) plus 4 per
//!   message for the chat template; each image counts the way Qwen2.5-VL's processor
//!   does: both sides rounded to a multiple of 28 within [min, max] pixels
//!   ("smart resize"), one token per 28×28 patch, plus 2 markers. A 1280×720 image is
//!   1,198 tokens, and every image in a resent history counts again.
//! * Time to first token: `ttft-base-ms + prefill-us-per-token × uncached prompt
//!   tokens`, where with `prefix-caching` the longest message prefix seen before is
//!   cached, as vLLM's automatic prefix caching would.
//! * Inter-token time: `itl-base-ms + itl-us-per-inflight × requests in flight`,
//!   sampled at every token, so load slows every stream down.
//! * Jitter: each duration is scaled by `1 + jitter × u`, u uniform in [-1, 1] from a
//!   ChaCha stream seeded by the request's sequence number.

use crate::config::SimParams;

/// Qwen2.5-VL image processor limits: 28 = 14-pixel patches merged 2×2.
const FACTOR: f64 = 28.0;
const MIN_PIXELS: f64 = 56.0 * 56.0;
const MAX_PIXELS: f64 = 28.0 * 28.0 * 16384.0;

/// Python's `round`: half to even, which the HF processor uses.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }
}

/// The resized (height, width) Qwen2.5-VL feeds to its vision tower.
pub fn smart_resize(height: u32, width: u32) -> (u32, u32) {
    let (h, w) = (height as f64, width as f64);
    let mut hb = FACTOR.max(round_half_even(h / FACTOR) * FACTOR);
    let mut wb = FACTOR.max(round_half_even(w / FACTOR) * FACTOR);
    if hb * wb > MAX_PIXELS {
        let beta = (h * w / MAX_PIXELS).sqrt();
        hb = ((h / beta / FACTOR).floor() * FACTOR).max(FACTOR);
        wb = ((w / beta / FACTOR).floor() * FACTOR).max(FACTOR);
    } else if hb * wb < MIN_PIXELS {
        let beta = (MIN_PIXELS / (h * w)).sqrt();
        hb = (h * beta / FACTOR).ceil() * FACTOR;
        wb = (w * beta / FACTOR).ceil() * FACTOR;
    }
    (hb as u32, wb as u32)
}

/// Prompt tokens one image costs, markers included.
pub fn image_tokens(width: u32, height: u32) -> u64 {
    let (h, w) = smart_resize(height, width);
    (h as u64 / 28) * (w as u64 / 28) + 2
}

/// A video of `frames` frames, as Qwen2.5-VL counts it in this model: frames merged in
/// pairs (temporal patch size 2), each pair one grid of 28×28 patches at the frame's
/// resized size, plus 2 markers. (The real processor also caps video pixels; the
/// simulator does not.)
pub fn video_tokens(width: u32, height: u32, frames: u64) -> u64 {
    let (h, w) = smart_resize(height, width);
    frames.div_ceil(2) * (h as u64 / 28) * (w as u64 / 28) + 2
}

pub fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

pub const TOKENS_PER_MESSAGE: u64 = 4;

/// Durations for one request, in seconds.
pub struct Timing {
    pub params: SimParams,
    pub rng: rand_chacha::ChaCha8Rng,
}

impl Timing {
    fn jitter(&mut self) -> f64 {
        use rand_chacha::rand_core::RngCore;
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        1.0 + self.params.jitter * u
    }

    pub fn ttft(&mut self, uncached_prompt_tokens: u64) -> f64 {
        let ms = self.params.ttft_base_ms + self.params.prefill_us_per_token * uncached_prompt_tokens as f64 / 1000.0;
        ms * self.jitter() / 1000.0
    }

    pub fn itl(&mut self, in_flight: usize) -> f64 {
        let ms = self.params.itl_base_ms + self.params.itl_us_per_inflight * in_flight as f64 / 1000.0;
        ms * self.jitter() / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_counts_720p_as_1198_tokens() {
        assert_eq!(smart_resize(720, 1280), (728, 1288));
        assert_eq!(image_tokens(1280, 720), 1198);
    }

    #[test]
    fn tiny_and_huge_images_are_clamped() {
        let (h, w) = smart_resize(10, 10);
        assert!(h as f64 * w as f64 >= MIN_PIXELS);
        let (h, w) = smart_resize(8000, 8000);
        assert!(h as f64 * w as f64 <= MAX_PIXELS);
        assert_eq!(h % 28, 0);
    }
}
