//! Statistics, defined once: quantiles (of values, and of a server's histograms), mean
//! and sample standard deviation, bootstrap intervals ([`bootstrap`]), Pareto fronts
//! ([`pareto`]), the significance test of a comparison with a baseline ([`compare`]),
//! and SLO attainment and goodput over request rows ([`slo`]).
//!
//! **Percentile method.** Every quantile in `pipeline` is linear interpolation between
//! closest ranks: of `n` sorted values `x[0] ≤ … ≤ x[n-1]`, the p-quantile lies at rank
//! `h = (n - 1) · p` and is `x[⌊h⌋] + (h - ⌊h⌋) · (x[⌊h⌋ + 1] - x[⌊h⌋])`. This is
//! numpy's and pandas' default (`linear`), Hyndman and Fan's type 7, and polars'
//! `QuantileMethod::Linear` ([`POLARS_METHOD`]), which the aggregate's summary uses for
//! the columns it computes in polars; [`METHOD`] names it in the aggregate step's key. The median is
//! the 0.5-quantile. Values are ordered by `f64::total_cmp`.
//!
//! The functions here are pure (data in, numbers out) and know nothing of steps,
//! tables or reports: `steps::aggregate`, `search` and `steps::report` call them, and
//! this module imports none of them.

pub mod bootstrap;
pub mod compare;
pub mod pareto;
pub mod slo;

/// The percentile method's name, as the aggregate step's key records it.
pub const METHOD: &str = "linear-interpolation";

/// The same method for quantiles computed in polars expressions.
pub const POLARS_METHOD: polars::prelude::QuantileMethod = polars::prelude::QuantileMethod::Linear;

/// Where the p-quantile of `n` values lies: the index of the closest rank below it and
/// how far it is from there to the next (`h - ⌊h⌋`); none when there are no values or
/// `p` is outside `[0, 1]`.
fn rank(n: usize, p: f64) -> Option<(usize, f64)> {
    if n == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let h = (n - 1) as f64 * p;
    let lo = h.floor() as usize;
    Some((lo, h - lo as f64))
}

/// The p-quantile of `sorted` (ascending), by the method above; none when it is empty
/// or `p` is outside `[0, 1]`.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    let (lo, frac) = rank(sorted.len(), p)?;
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}

/// The p-quantile of `v`, by the method above, found by selection rather than a full
/// sort (a cell can have a million inter-token gaps); reorders `v`. Equal to
/// [`quantile_sorted`] of the sorted values.
pub fn quantile_select(v: &mut [f64], p: f64) -> Option<f64> {
    let (lo, frac) = rank(v.len(), p)?;
    let (_, &mut below, above) = v.select_nth_unstable_by(lo, f64::total_cmp);
    Some(match above.iter().copied().reduce(f64::min) {
        Some(next) if frac > 0.0 => below + frac * (next - below),
        _ => below,
    })
}

/// The median (the 0.5-quantile) of `v`, in any order; none when it is empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    quantile_sorted(&s, 0.5)
}

/// The p-quantile of what a histogram counted, as Prometheus's `histogram_quantile`
/// estimates it: `buckets` are (upper bound, cumulative count) in ascending order of
/// bound, the last being `+Inf` with the total. The quantile's rank `p · total` falls
/// in the first bucket whose count reaches it and is interpolated linearly within that
/// bucket (from the bound below it, 0 for the first); in the `+Inf` bucket it is the
/// highest finite bound. None when the histogram counted nothing. This is the one
/// estimate made from buckets rather than values: a server's histograms are all it
/// exports.
pub fn histogram_quantile(buckets: &[(f64, f64)], p: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = p * total;
    let mut lower = (0.0, 0.0); // (bound, cumulative count) below this bucket
    for &(upper, count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (upper - lower.0) * within.clamp(0.0, 1.0));
        }
        lower = (upper, count);
    }
    None
}

/// The arithmetic mean of `v`; none when it is empty.
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The sample standard deviation of `v` (Bessel's correction: divided by `n - 1`); none
/// with fewer than two values.
pub fn sample_std(v: &[f64]) -> Option<f64> {
    let m = mean(v).filter(|_| v.len() > 1)?;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(v: &[f64]) -> Vec<f64> {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    }

    #[test]
    fn quantiles_interpolate_between_closest_ranks() {
        // numpy.quantile([1, 2, 4, 8], [0, 0.25, 0.5, 0.9, 1]) = [1, 1.75, 3, 6.8, 8]
        let v = [1.0, 2.0, 4.0, 8.0];
        let got: Vec<f64> = [0.0, 0.25, 0.5, 0.9, 1.0].iter().map(|&p| quantile_sorted(&v, p).unwrap()).collect();
        let want = [1.0, 1.75, 3.0, 6.8, 8.0];
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12), "{got:?}");
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0), "one value is every quantile");
    }

    #[test]
    fn mean_and_sample_standard_deviation() {
        // numpy: mean([2, 4, 4, 4, 5, 5, 7, 9]) = 5, std(..., ddof=1) = sqrt(32 / 7)
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&v), Some(5.0));
        assert_eq!(sample_std(&v), Some((32.0f64 / 7.0).sqrt()));
        assert_eq!((mean(&[]), sample_std(&[]), sample_std(&[3.0])), (None, None, None));
    }

    #[test]
    fn a_histogram_quantile_interpolates_within_its_bucket() {
        // 10 below 0.1 s, 30 below 0.5 s, 40 in all: the median (rank 20) lies half way
        // through the second bucket; the 0.9-quantile (rank 36) is in +Inf, so 0.5.
        // The 0.1-quantile (rank 4) is 4/10 of the way through the first, from 0.
        let b = [(0.1, 10.0), (0.5, 30.0), (f64::INFINITY, 40.0)];
        let close = |p: f64, want: f64| (histogram_quantile(&b, p).unwrap() - want).abs() < 1e-12;
        assert!(close(0.5, 0.3) && close(0.9, 0.5) && close(0.1, 0.04) && close(1.0, 0.5));
        assert_eq!(histogram_quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None, "nothing counted");
        assert_eq!(histogram_quantile(&[], 0.5), None);
    }

    #[test]
    fn no_values_or_no_probability_give_no_quantile() {
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_select(&mut [], 0.5), None);
        assert_eq!(median(&[]), None);
        for p in [-0.1, 1.1, f64::NAN] {
            assert_eq!(quantile_sorted(&[1.0, 2.0], p), None, "p = {p}");
            assert_eq!(quantile_select(&mut [1.0, 2.0], p), None, "p = {p}");
        }
    }

    proptest! {
        /// Selection gives what sorting gives, for every quantile the summary uses.
        #[test]
        fn selection_matches_the_sorted_definition(mut v in proptest::collection::vec(-1e6f64..1e6, 1..300), p in 0.0f64..=1.0) {
            let s = sorted(&v);
            prop_assert_eq!(quantile_select(&mut v, p), quantile_sorted(&s, p));
        }

        #[test]
        fn a_quantile_lies_within_min_and_max(v in proptest::collection::vec(-1e6f64..1e6, 1..100), p in 0.0f64..=1.0) {
            let s = sorted(&v);
            let q = quantile_sorted(&s, p).unwrap();
            prop_assert!(s[0] <= q && q <= s[s.len() - 1], "{} not in [{}, {}]", q, s[0], s[s.len() - 1]);
            prop_assert_eq!(quantile_sorted(&s, 0.0), Some(s[0]));
            prop_assert_eq!(quantile_sorted(&s, 1.0), Some(s[s.len() - 1]));
        }

        #[test]
        fn a_quantile_is_monotone_in_p(v in proptest::collection::vec(-1e6f64..1e6, 1..100), p in 0.0f64..=1.0, q in 0.0f64..=1.0) {
            let s = sorted(&v);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            prop_assert!(quantile_sorted(&s, lo).unwrap() <= quantile_sorted(&s, hi).unwrap());
        }

        /// From buckets: within [0, the highest finite bound] and monotone in p.
        #[test]
        fn a_histogram_quantile_is_bounded_and_monotone(
            steps in proptest::collection::vec((0.001f64..10.0, 0u32..50), 1..10),
            p in 0.0f64..=1.0,
            q in 0.0f64..=1.0,
        ) {
            let (mut bound, mut count) = (0.0, 0.0);
            let mut buckets: Vec<(f64, f64)> = steps.iter().map(|&(width, n)| {
                bound += width;
                count += f64::from(n);
                (bound, count)
            }).collect();
            buckets.push((f64::INFINITY, count + 1.0));
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let (a, b) = (histogram_quantile(&buckets, lo).unwrap(), histogram_quantile(&buckets, hi).unwrap());
            prop_assert!(0.0 <= a && a <= b && b <= bound, "{} {} {}", a, b, bound);
        }

        #[test]
        fn the_median_does_not_depend_on_order(v in proptest::collection::vec(-1e6f64..1e6, 1..50)) {
            let mut reversed = v.clone();
            reversed.reverse();
            prop_assert_eq!(median(&v), median(&reversed));
            prop_assert_eq!(median(&v), quantile_sorted(&sorted(&v), 0.5));
        }
    }
}
