//! From records to the curves of each chart: grouping by metric, smoothing, thinning.

use std::collections::BTreeMap;

use crate::metrics::{Record, Split};

/// One metric of one split over the steps: `(step, value)` sorted by step, one point per step (the last
/// one logged wins, should a log hold a step twice), non-finite values left out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub split: Split,
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// `train/loss`-style name, as in TensorBoard.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.split, self.name)
    }
}

/// Every (split, metric) pair in the records, sorted by split then name.
pub(crate) fn collect(records: &[Record]) -> Vec<Series> {
    let mut by_metric: BTreeMap<(Split, &str), BTreeMap<u64, f64>> = BTreeMap::new();
    for r in records {
        for (name, &value) in &r.values {
            let steps = by_metric.entry((r.split, name.as_str())).or_default();
            if value.is_finite() {
                steps.insert(r.step, value);
            } else {
                steps.remove(&r.step);
            }
        }
    }
    by_metric
        .into_iter()
        .map(|((split, name), steps)| Series {
            split,
            name: name.to_owned(),
            points: steps.into_iter().map(|(s, v)| (s as f64, v)).collect(),
        })
        .collect()
}

/// TensorBoard's smoothing: an exponential moving average with weight `w` on the past, debiased so the first
/// points are not pulled towards zero.
pub(crate) fn smooth(points: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut avg = 0.0;
    let mut weight = 0.0;
    points
        .iter()
        .map(|&(x, y)| {
            avg = avg * w + (1.0 - w) * y;
            weight = weight * w + (1.0 - w);
            (x, avg / weight)
        })
        .collect()
}

/// At most about `2 * buckets` points that keep the curve's envelope: for each of `buckets` runs of
/// consecutive points, its lowest and highest point, in step order. Spikes stay visible; files stay small.
pub(crate) fn thin(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    let buckets = buckets.max(1);
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets + 1);
    for chunk in points.chunks(size) {
        let lo = chunk
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("non-empty");
        let hi = chunk
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("non-empty");
        let (first, second) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
        out.push(*first);
        if second != first {
            out.push(*second);
        }
    }
    // Keep the true end point so the curve reaches the last step.
    if let (Some(last), Some(end)) = (points.last(), out.last()) {
        if last != end {
            out.push(*last);
        }
    }
    out
}

/// At most `buckets` points: the mean step and value of each run of consecutive points. For curves that are
/// already smoothed, where the mean of a run is what the eye would read from it anyway.
pub(crate) fn average(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    let buckets = buckets.max(1);
    if points.len() <= buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    points
        .chunks(size)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let (sx, sy) = chunk
                .iter()
                .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
            (sx / n, sy / n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, split: Split, values: &[(&str, f64)]) -> Record {
        let mut r = Record::new(step, split);
        for &(k, v) in values {
            r = r.with(k, v);
        }
        r
    }

    #[test]
    fn collect_groups_sorts_and_keeps_the_last_duplicate() {
        let records = [
            record(2, Split::Train, &[("loss", 3.0)]),
            record(1, Split::Train, &[("loss", 4.0), ("lr", 0.1)]),
            record(2, Split::Val, &[("zeroshot_top1", 0.5)]),
            record(2, Split::Train, &[("loss", 2.5)]),
            record(3, Split::Train, &[("loss", f64::NAN)]),
        ];
        let series = collect(&records);
        let names: Vec<String> = series.iter().map(Series::qualified).collect();
        assert_eq!(names, ["train/loss", "train/lr", "val/zeroshot_top1"]);
        assert_eq!(series[0].points, [(1.0, 4.0), (2.0, 2.5)]);
    }

    #[test]
    fn smoothing_is_debiased_and_zero_weight_is_identity() {
        let pts = [(0.0, 10.0), (1.0, 10.0), (2.0, 0.0)];
        let s = smooth(&pts, 0.5);
        assert_eq!(s[0], (0.0, 10.0)); // not 5.0: debiased
        assert_eq!(s[1], (1.0, 10.0));
        assert!((s[2].1 - 10.0 * 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(smooth(&pts, 0.0), pts);
    }

    #[test]
    fn averaging_reduces_to_bucket_means() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 2) as f64)).collect();
        assert_eq!(average(&pts, 20), pts);
        assert_eq!(
            average(&pts, 5),
            [(0.5, 0.5), (2.5, 0.5), (4.5, 0.5), (6.5, 0.5), (8.5, 0.5)]
        );
    }

    #[test]
    fn thinning_keeps_extremes_and_ends() {
        let mut pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 1.0)).collect();
        pts[500].1 = 50.0; // a spike
        pts[999].1 = 0.5;
        let t = thin(&pts, 10);
        assert!(t.len() <= 21, "{}", t.len());
        assert!(t.contains(&(500.0, 50.0)));
        assert_eq!(t.first(), Some(&(0.0, 1.0)));
        assert_eq!(t.last(), Some(&(999.0, 0.5)));
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
