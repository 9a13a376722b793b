//! Pareto fronts of operating points, as (throughput, latency): more throughput and
//! less latency are better.

/// One curve's points as (throughput, latency): which are on the Pareto front (no
/// other point has at least the throughput and at most the latency, and better in one),
/// and the best under the SLO (the highest throughput among points that meet it, the
/// lower latency on a tie). Points without a value are on neither.
pub fn front_and_best(points: &[Option<(f64, f64)>], meets: &[bool]) -> (Vec<bool>, Option<usize>) {
    let front = points.iter().map(|p| p.is_some_and(|pi| !points.iter().flatten().any(|&pj| dominates(pj, pi)))).collect();
    let best = (0..points.len()).filter(|&k| meets.get(k) == Some(&true) && points[k].is_some()).max_by(|&a, &b| {
        let (pa, pb) = (points[a].unwrap_or_default(), points[b].unwrap_or_default());
        pa.0.total_cmp(&pb.0).then(pb.1.total_cmp(&pa.1))
    });
    (front, best)
}

/// Whether point `a` dominates point `b`: at least `b`'s throughput and at most its
/// latency, and better in one.
pub fn dominates((ta, la): (f64, f64), (tb, lb): (f64, f64)) -> bool {
    ta >= tb && la <= lb && (ta > tb || la < lb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn curve() -> impl Strategy<Value = (Vec<Option<(f64, f64)>>, Vec<bool>)> {
        proptest::collection::vec((proptest::option::weighted(0.9, (0u8..20, 0u8..20)), any::<bool>()), 0..12).prop_map(|v| {
            // Small integer grids, so that ties (equal throughput or latency) are common.
            let points = v.iter().map(|(p, _)| p.map(|(t, l)| (t as f64, l as f64))).collect();
            (points, v.iter().map(|(_, m)| *m).collect())
        })
    }

    proptest! {
        #[test]
        fn the_front_is_exactly_the_non_dominated_points((points, meets) in curve()) {
            let (front, _) = front_and_best(&points, &meets);
            for (i, p) in points.iter().enumerate() {
                let Some((ti, li)) = *p else { prop_assert!(!front[i]); continue };
                let dominated = points.iter().flatten().any(|&(tj, lj)| tj >= ti && lj <= li && (tj > ti || lj < li));
                prop_assert_eq!(front[i], !dominated);
            }
            // A curve with any point has a front.
            prop_assert_eq!(front.iter().any(|&f| f), points.iter().any(Option::is_some));
        }

        #[test]
        fn the_best_point_meets_the_slo_with_the_most_throughput((points, meets) in curve()) {
            let (_, best) = front_and_best(&points, &meets);
            let meeting: Vec<(f64, f64)> = points.iter().zip(&meets).filter(|(_, m)| **m).filter_map(|(p, _)| *p).collect();
            match best {
                None => prop_assert!(meeting.is_empty()),
                Some(k) => {
                    prop_assert!(meets[k]);
                    let (t, l) = points[k].unwrap();
                    prop_assert!(meeting.iter().all(|&(tj, lj)| tj < t || (tj == t && lj >= l)));
                    // The best among the points that meet the SLO need not be on the whole
                    // front, but nothing meeting the SLO dominates it.
                    prop_assert!(meeting.iter().all(|&(tj, lj)| !(tj >= t && lj <= l && (tj > t || lj < l))));
                }
            }
        }
    }
}
