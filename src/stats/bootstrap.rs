//! Percentile bootstrap intervals: resample with replacement [`RESAMPLES`] times,
//! estimate each resample, and take the 2.5% and 97.5% quantiles of the estimates (by
//! the crate's one percentile method, [`super::quantile_sorted`]) as the 95% interval.
//!
//! The caller passes the generator: seeded, the same values give the same interval.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;

/// Resamples per interval (the aggregate step's key records it): with 1000, the 2.5%
/// and 97.5% quantiles fall between the 25th and 26th and the 975th and 976th sorted
/// estimates.
pub const RESAMPLES: usize = 1000;

/// A uniform index below `n` (Lemire's multiply-shift; the bias is below 2⁻⁴⁰ here).
fn pick(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// The 95% interval of `estimates`: their 2.5% and 97.5% quantiles.
fn interval(mut estimates: Vec<f64>) -> Option<(f64, f64)> {
    estimates.sort_unstable_by(f64::total_cmp);
    Some((super::quantile_sorted(&estimates, 0.025)?, super::quantile_sorted(&estimates, 0.975)?))
}

/// The pooled mean's interval, resampling units given as (sum, count), such as a
/// conversation's summed latency and its number of turns, with replacement, as many as
/// there are. None when there are none.
pub fn pooled_mean(pool: &[(f64, u32)], rng: &mut ChaCha8Rng) -> Option<(f64, f64)> {
    if pool.is_empty() {
        return None;
    }
    let mut estimates = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let (mut sum, mut n) = (0.0, 0u64);
        for _ in 0..pool.len() {
            let (a, b) = pool[pick(rng, pool.len())];
            sum += a;
            n += b as u64;
        }
        if n > 0 {
            estimates.push(sum / n as f64);
        }
    }
    interval(estimates)
}

/// The mean's interval, resampling the values `v` with replacement. None when there
/// are none.
pub fn mean(v: &[f64], rng: &mut ChaCha8Rng) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let estimates = (0..RESAMPLES).map(|_| (0..v.len()).map(|_| v[pick(rng, v.len())]).sum::<f64>() / v.len() as f64).collect();
    interval(estimates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn nothing_to_resample_gives_no_interval() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(pooled_mean(&[], &mut rng), None);
        assert_eq!(mean(&[], &mut rng), None);
        // Units that hold no turns estimate nothing.
        assert_eq!(pooled_mean(&[(0.0, 0), (0.0, 0)], &mut rng), None);
    }

    #[test]
    fn one_value_or_equal_values_give_a_point() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(mean(&[5.0], &mut rng), Some((5.0, 5.0)));
        // Units whose means are both 5 pool to 5 however they are resampled.
        assert_eq!(pooled_mean(&[(10.0, 2), (15.0, 3)], &mut rng), Some((5.0, 5.0)));
    }

    proptest! {
        /// The interval is ordered, lies within the values' range, and is the same for
        /// the same seed.
        #[test]
        fn the_interval_lies_within_the_values(v in proptest::collection::vec(0.0f64..1e4, 1..20), seed in any::<u64>()) {
            let (lo, hi) = mean(&v, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            let (min, max) = (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            prop_assert!(min - 1e-9 <= lo && lo <= hi && hi <= max + 1e-9, "[{}, {}] outside [{}, {}]", lo, hi, min, max);
            prop_assert_eq!(mean(&v, &mut ChaCha8Rng::seed_from_u64(seed)), Some((lo, hi)));
        }

        #[test]
        fn the_pooled_interval_lies_within_the_units_means(pool in proptest::collection::vec((0.0f64..1e4, 1u32..10), 1..20), seed in any::<u64>()) {
            let (lo, hi) = pooled_mean(&pool, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            let means: Vec<f64> = pool.iter().map(|(s, n)| s / *n as f64).collect();
            let (min, max) = (means.iter().copied().fold(f64::INFINITY, f64::min), means.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            prop_assert!(min - 1e-9 <= lo && lo <= hi && hi <= max + 1e-9, "[{}, {}] outside [{}, {}]", lo, hi, min, max);
        }
    }
}
