//! Zero-shot classification metrics as CLIP_benchmark computes them (`metrics/zeroshot_classification.py`):
//!
//! * **acc1 / acc5**: top-k accuracy over the logits (`100 · image · classifier`): a sample counts when its
//!   true class is among the k highest logits. CLIP_benchmark reports acc5 only with at least 5 classes
//!   (NaN otherwise); here it is `None` then.
//! * **mean_per_class_recall**: scikit-learn's `balanced_accuracy_score(target, argmax(logits))`: the
//!   recall of each class that occurs among the targets, averaged with equal weight per class. Classes that
//!   are predicted but never the target do not count (scikit-learn drops their 0/0 recall).
//!
//! Ties are resolved by class index (the lower index ranks first), as a stable sort and `argmax` do;
//! `torch.topk` leaves the order of ties unspecified, so only tied logits could ever differ.

use serde::Serialize;

use crate::metric_error::MetricError;
use crate::ranking::{argmax, fraction_below, rank_in_row};

/// The numbers CLIP_benchmark reports for a single-label dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    /// Top-1 accuracy.
    pub acc1: f64,
    /// Top-5 accuracy; `None` with fewer than 5 classes (CLIP_benchmark's NaN).
    pub acc5: Option<f64>,
    /// Balanced accuracy: mean over the classes present of the per-class recall.
    pub mean_per_class_recall: f64,
}

/// A validated `(samples, classes)` logit matrix with one target class per sample.
struct Labelled<'a> {
    logits: &'a [f32],
    classes: usize,
    targets: &'a [usize],
}

impl<'a> Labelled<'a> {
    fn new(logits: &'a [f32], classes: usize, targets: &'a [usize]) -> Result<Self, MetricError> {
        if targets.is_empty() {
            return Err(MetricError::Empty { what: "samples" });
        }
        if classes == 0 || logits.len() != targets.len() * classes {
            return Err(MetricError::Shape {
                what: "logits",
                len: logits.len(),
                rows: targets.len(),
                cols: classes,
            });
        }
        for (index, &label) in targets.iter().enumerate() {
            if label >= classes {
                return Err(MetricError::Label {
                    what: "sample",
                    index,
                    label,
                    count: classes,
                });
            }
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(MetricError::NotANumber {
                what: "sample",
                index: i / classes,
            });
        }
        Ok(Self {
            logits,
            classes,
            targets,
        })
    }

    fn rows(&self) -> impl Iterator<Item = &'a [f32]> {
        self.logits.chunks_exact(self.classes)
    }

    /// The rank of each sample's true class within its row (0 = predicted).
    fn target_ranks(&self) -> Vec<usize> {
        self.rows()
            .zip(self.targets)
            .map(|(row, &t)| rank_in_row(row, t))
            .collect()
    }
}

/// Fraction of samples whose target class is among the `k` highest logits. `logits` is row-major
/// `(targets.len(), classes)`.
pub fn top_k_accuracy(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    k: usize,
) -> Result<f64, MetricError> {
    let data = Labelled::new(logits, classes, targets)?;
    Ok(fraction_below(&data.target_ranks(), k))
}

/// Balanced accuracy of predicted classes (scikit-learn's `balanced_accuracy_score`): for every class that
/// occurs in `targets`, the fraction of its samples predicted as it; the mean of those recalls.
pub fn mean_per_class_recall(predictions: &[usize], targets: &[usize]) -> Result<f64, MetricError> {
    if targets.is_empty() {
        return Err(MetricError::Empty { what: "samples" });
    }
    if predictions.len() != targets.len() {
        return Err(MetricError::Shape {
            what: "predictions",
            len: predictions.len(),
            rows: targets.len(),
            cols: 1,
        });
    }
    let classes = targets.iter().max().map_or(0, |m| m + 1);
    let mut support = vec![0usize; classes];
    let mut hits = vec![0usize; classes];
    for (&p, &t) in predictions.iter().zip(targets) {
        support[t] += 1;
        hits[t] += usize::from(p == t);
    }
    let recalls: Vec<f64> = support
        .iter()
        .zip(&hits)
        .filter(|(&n, _)| n > 0)
        .map(|(&n, &h)| h as f64 / n as f64)
        .collect();
    Ok(recalls.iter().sum::<f64>() / recalls.len() as f64)
}

/// acc1, acc5 (with at least 5 classes) and mean per-class recall of `(samples, classes)` logits.
pub fn classification_metrics(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
) -> Result<ClassificationMetrics, MetricError> {
    let data = Labelled::new(logits, classes, targets)?;
    let ranks = data.target_ranks();
    let predictions: Vec<usize> = data
        .rows()
        .map(|row| argmax(row).unwrap_or_default())
        .collect();
    Ok(ClassificationMetrics {
        acc1: fraction_below(&ranks, 1),
        acc5: (classes >= 5).then(|| fraction_below(&ranks, 5)),
        mean_per_class_recall: mean_per_class_recall(&predictions, targets)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6 samples × 6 classes, by hand: true-class ranks 0, 2, 5, 0, 1, 4.
    fn six_by_six() -> (Vec<f32>, Vec<usize>) {
        #[rustfmt::skip]
        let logits = vec![
            9.0, 1.0, 2.0, 3.0, 4.0, 5.0, // target 0: rank 0
            9.0, 8.0, 7.0, 1.0, 1.0, 1.0, // target 2: rank 2
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, // target 0: rank 5
            1.0, 2.0, 3.0, 9.0, 4.0, 5.0, // target 3: rank 0
            5.0, 5.0, 1.0, 1.0, 1.0, 1.0, // target 1: tied with class 0, which comes first: rank 1
            7.0, 6.0, 6.0, 6.0, 6.0, 0.0, // target 4: one higher, three ties before it: rank 4
        ];
        (logits, vec![0, 2, 0, 3, 1, 4])
    }

    #[test]
    fn top_k_counts_the_target_rank() {
        let (logits, targets) = six_by_six();
        let acc = |k| top_k_accuracy(&logits, 6, &targets, k).unwrap();
        assert_eq!(acc(1), 2.0 / 6.0);
        assert_eq!(acc(2), 3.0 / 6.0);
        assert_eq!(acc(3), 4.0 / 6.0);
        assert_eq!(acc(5), 5.0 / 6.0);
        assert_eq!(acc(6), 1.0);
    }

    #[test]
    fn balanced_accuracy_weights_classes_equally() {
        // Class 0: 2 of 3 right; class 1: 0 of 1; class 2: 1 of 1. Class 3 is only predicted: ignored.
        let predictions = [0, 0, 3, 0, 2];
        let targets = [0, 0, 0, 1, 2];
        let expected = (2.0 / 3.0 + 0.0 + 1.0) / 3.0;
        assert!((mean_per_class_recall(&predictions, &targets).unwrap() - expected).abs() < 1e-15);
        // Plain accuracy would be 3/5: balanced accuracy differs on imbalanced classes.
        assert!((expected - 0.6).abs() > 0.01);
    }

    #[test]
    fn all_three_metrics_together() {
        let (logits, targets) = six_by_six();
        let m = classification_metrics(&logits, 6, &targets).unwrap();
        assert_eq!(m.acc1, 2.0 / 6.0);
        assert_eq!(m.acc5, Some(5.0 / 6.0));
        // argmax: 0, 0, 5, 3, 0 (first of the tie), 0. Class 0: 1 of 2; 1: 0 of 1; 2: 0 of 1; 3: 1 of 1;
        // 4: 0 of 1.
        let expected = (0.5 + 0.0 + 0.0 + 1.0 + 0.0) / 5.0;
        assert!((m.mean_per_class_recall - expected).abs() < 1e-15);
    }

    #[test]
    fn acc5_needs_five_classes() {
        let logits = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7];
        let m = classification_metrics(&logits, 3, &[1, 2]).unwrap();
        assert_eq!(m.acc5, None);
        assert_eq!(m.acc1, 0.5);
    }

    #[test]
    fn bad_inputs_are_named() {
        assert_eq!(
            top_k_accuracy(&[1.0, 2.0, 3.0], 2, &[0, 1], 1),
            Err(MetricError::Shape {
                what: "logits",
                len: 3,
                rows: 2,
                cols: 2
            })
        );
        assert_eq!(
            top_k_accuracy(&[1.0, 2.0], 2, &[2], 1),
            Err(MetricError::Label {
                what: "sample",
                index: 0,
                label: 2,
                count: 2
            })
        );
        assert_eq!(
            top_k_accuracy(&[1.0, 2.0, f32::NAN, 0.0], 2, &[0, 1], 1),
            Err(MetricError::NotANumber {
                what: "sample",
                index: 1
            })
        );
        assert_eq!(
            classification_metrics(&[], 3, &[]),
            Err(MetricError::Empty { what: "samples" })
        );
    }
}
