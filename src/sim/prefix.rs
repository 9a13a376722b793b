//! The simulator's block-level prefix cache over token ids, as vLLM's automatic prefix
//! caching works: a prompt is cut into blocks of [`BLOCK`] tokens; a full block is
//! known by a digest of its tokens chained to the digest of the block before (and,
//! first, the request's `cache_salt`), so a block hits only when everything before it
//! matched too. A request's cached tokens are its leading full blocks seen before, and
//! never the whole prompt: as vLLM does, the last prompt token is always computed, so a
//! hit stops at the last full block before it.
//!
//! The digests live in the simulator's one prefix set (beside the chat path's message
//! digests, under a domain of their own), so `POST /reset_prefix_cache` empties both.

use std::collections::HashSet;

/// vLLM's default block size, in tokens.
pub const BLOCK: usize = 16;

/// The digest of each full block of `ids`, chained from the start under `salt`.
pub fn block_digests(ids: &[u32], salt: Option<&str>) -> Vec<[u8; 32]> {
    let mut prev = *blake3::Hasher::new_derive_key("pipeline sim token blocks v1")
        .update(salt.unwrap_or_default().as_bytes())
        .update(&[u8::from(salt.is_some())])
        .finalize()
        .as_bytes();
    ids.chunks_exact(BLOCK)
        .map(|block| {
            let mut h = blake3::Hasher::new();
            h.update(&prev);
            for id in block {
                h.update(&id.to_le_bytes());
            }
            prev = *h.finalize().as_bytes();
            prev
        })
        .collect()
}

/// Tokens of `ids` found in `seen` (leading full blocks, the last prompt token never
/// counted), having added every full block of `ids` to `seen`.
pub fn lookup(seen: &mut HashSet<[u8; 32]>, ids: &[u32], salt: Option<&str>) -> u64 {
    let blocks = block_digests(ids, salt);
    // A prompt of exactly k blocks can reuse k - 1 of them: its last token is computed.
    let usable = ids.len().saturating_sub(1) / BLOCK;
    let hits = blocks.iter().take(usable).take_while(|d| seen.contains(*d)).count();
    seen.extend(blocks);
    (hits * BLOCK) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_leading_blocks_hit_and_nothing_after_a_miss() {
        let mut seen = HashSet::new();
        let a: Vec<u32> = (0..100).collect();
        assert_eq!(lookup(&mut seen, &a, None), 0, "a cold cache");
        // Same first 40 tokens: two full blocks (32 tokens) hit.
        let b: Vec<u32> = (0..40).chain(1000..1060).collect();
        assert_eq!(lookup(&mut seen, &b, None), 32);
        // Block 0 differs: nothing after it hits, though blocks 1.. match `a`.
        let c: Vec<u32> = [7].into_iter().chain(1..100).collect();
        assert_eq!(lookup(&mut seen, &c, None), 0);
        // Another salt shares nothing.
        assert_eq!(lookup(&mut seen, &a, Some("s")), 0);
        assert_eq!(lookup(&mut seen, &a, Some("s")), 96, "all six full blocks");
    }

    #[test]
    fn the_last_prompt_token_is_always_computed() {
        let mut seen = HashSet::new();
        let a: Vec<u32> = (0..32).collect();
        lookup(&mut seen, &a, None);
        assert_eq!(lookup(&mut seen, &a, None), 16, "of two full blocks, one is reused");
        let longer: Vec<u32> = (0..33).collect();
        assert_eq!(lookup(&mut seen, &longer, None), 32);
    }
}
