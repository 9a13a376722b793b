//! The significance test of a comparison with a baseline: a change is called only when
//! the whole interval of the ratio of two estimates lies outside a noise band.

use serde::{Deserialize, Serialize};

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "better")]
    Better,
    #[serde(rename = "worse")]
    Worse,
    #[serde(rename = "within noise")]
    WithinNoise,
}

/// A mean with its 95% interval.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// The change from `before` to `now` in percent, with its interval, and the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub pct: f64,
    pub low_pct: f64,
    pub high_pct: f64,
    pub verdict: Verdict,
}

/// How `now` compares with `before`: the interval of the ratio runs from the lowest
/// now over the highest before to the highest now over the lowest before, and the
/// change is better or worse only when that whole interval lies beyond `noise_pct`
/// either way. None when the baseline is not positive (no ratio to speak of).
pub fn change(before: Estimate, now: Estimate, lower_is_better: bool, noise_pct: f64) -> Option<Change> {
    if before.mean <= 0.0 || before.low <= 0.0 {
        return None;
    }
    let pct = (now.mean / before.mean - 1.0) * 100.0;
    let (low_pct, high_pct) = ((now.low / before.high - 1.0) * 100.0, (now.high / before.low - 1.0) * 100.0);
    let verdict = if low_pct > noise_pct || high_pct < -noise_pct {
        if (pct < 0.0) == lower_is_better { Verdict::Better } else { Verdict::Worse }
    } else {
        Verdict::WithinNoise
    };
    Some(Change { pct, low_pct, high_pct, verdict })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mean: f64, half_width: f64) -> Estimate {
        Estimate { mean, low: mean - half_width, high: mean + half_width }
    }

    #[test]
    fn a_change_is_called_only_when_its_whole_interval_leaves_the_noise_band() {
        // Latency 100 → 80 ms, tight intervals: 20% faster, clearly better.
        let c = change(est(100.0, 2.0), est(80.0, 2.0), true, 2.0).unwrap();
        assert_eq!(c.verdict, Verdict::Better);
        assert!((c.pct + 20.0).abs() < 1e-9);
        assert!(c.low_pct < c.pct && c.pct < c.high_pct, "{c:?}");
        // The same numbers for throughput are a loss.
        assert_eq!(change(est(100.0, 2.0), est(80.0, 2.0), false, 2.0).unwrap().verdict, Verdict::Worse);
        // 3% slower with intervals that overlap: within noise, though the mean moved.
        assert_eq!(change(est(100.0, 4.0), est(103.0, 4.0), true, 2.0).unwrap().verdict, Verdict::WithinNoise);
        // A real 10% slowdown inside a 15% noise band is not called either.
        assert_eq!(change(est(100.0, 1.0), est(110.0, 1.0), true, 15.0).unwrap().verdict, Verdict::WithinNoise);
        assert!(change(est(0.0, 0.0), est(1.0, 0.1), true, 2.0).is_none(), "no ratio to a zero baseline");
    }

    #[test]
    fn identical_runs_are_always_within_noise() {
        for (mean, hw) in [(1.0, 0.0), (50.0, 5.0), (1e6, 1e3)] {
            for lower in [true, false] {
                assert_eq!(change(est(mean, hw), est(mean, hw), lower, 0.0).unwrap().verdict, Verdict::WithinNoise);
            }
        }
    }
}
