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
//!
//! [`classification_report`] adds what a probe reports besides: the [`confusion_matrix`] of the argmax
//! predictions and each class's recall ([`per_class_recall`]), from which the mean per-class recall is
//! computed — one definition for zero-shot evaluation and probes. [`ranked_classes`] orders one row of
//! logits by the same rule, for showing the top classes of a single prediction.

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
    // Classes that are only predicted get a column of the matrix but no recall.
    let classes = targets.iter().chain(predictions).max().map_or(0, |m| m + 1);
    let confusion = confusion_matrix(predictions, targets, classes)?;
    Ok(mean_of_present(&per_class_recall(&confusion)))
}

/// `confusion[target][predicted]`: how many samples of each class were predicted as each class, for
/// `classes` classes (scikit-learn's `confusion_matrix` with `labels=range(classes)`).
pub fn confusion_matrix(
    predictions: &[usize],
    targets: &[usize],
    classes: usize,
) -> Result<Vec<Vec<u64>>, MetricError> {
    if predictions.len() != targets.len() {
        return Err(MetricError::Shape {
            what: "predictions",
            len: predictions.len(),
            rows: targets.len(),
            cols: 1,
        });
    }
    let mut confusion = vec![vec![0u64; classes]; classes];
    for (index, (&p, &t)) in predictions.iter().zip(targets).enumerate() {
        for (what, label) in [("sample", t), ("prediction", p)] {
            if label >= classes {
                return Err(MetricError::Label {
                    what,
                    index,
                    label,
                    count: classes,
                });
            }
        }
        confusion[t][p] += 1;
    }
    Ok(confusion)
}

/// Each class's recall from a confusion matrix (rows: true class): the diagonal count over the row's total,
/// `None` for a class with no samples (scikit-learn leaves such classes out of the balanced accuracy).
pub fn per_class_recall(confusion: &[Vec<u64>]) -> Vec<Option<f64>> {
    confusion
        .iter()
        .enumerate()
        .map(|(class, row)| {
            let support: u64 = row.iter().sum();
            (support > 0).then(|| row.get(class).copied().unwrap_or(0) as f64 / support as f64)
        })
        .collect()
}

/// Mean of the recalls of the classes that have samples.
fn mean_of_present(recalls: &[Option<f64>]) -> f64 {
    let present: Vec<f64> = recalls.iter().flatten().copied().collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

/// Every class of one row of logits, best first; equal logits in class order (the rule the metrics rank
/// by). NaN logits sort as the largest values (`f32::total_cmp`); the metrics reject them instead.
pub fn ranked_classes(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
}

/// acc1, acc5 (with at least 5 classes) and mean per-class recall of `(samples, classes)` logits.
pub fn classification_metrics(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
) -> Result<ClassificationMetrics, MetricError> {
    Ok(classification_report(logits, classes, targets)?.metrics)
}

/// The metrics of a classifier together with their details, as a probe reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// acc1, acc5 and mean per-class recall, as [`classification_metrics`] computes them.
    pub metrics: ClassificationMetrics,
    /// Each class's recall; `None` for classes without samples.
    pub per_class_recall: Vec<Option<f64>>,
    /// `confusion[target][predicted]` counts of the argmax predictions.
    pub confusion: Vec<Vec<u64>>,
}

/// [`ClassificationMetrics`] of `(samples, classes)` logits, with the confusion matrix of the argmax
/// predictions and the per-class recalls the mean per-class recall is made of.
pub fn classification_report(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
) -> Result<ClassificationReport, MetricError> {
    let data = Labelled::new(logits, classes, targets)?;
    let ranks = data.target_ranks();
    let predictions: Vec<usize> = data
        .rows()
        .map(|row| argmax(row).unwrap_or_default())
        .collect();
    let confusion = confusion_matrix(&predictions, targets, classes)?;
    let per_class_recall = per_class_recall(&confusion);
    Ok(ClassificationReport {
        metrics: ClassificationMetrics {
            acc1: fraction_below(&ranks, 1),
            acc5: (classes >= 5).then(|| fraction_below(&ranks, 5)),
            mean_per_class_recall: mean_of_present(&per_class_recall),
        },
        per_class_recall,
        confusion,
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
    fn report_has_the_confusion_matrix_and_recalls_of_the_argmax() {
        let (logits, targets) = six_by_six();
        let r = classification_report(&logits, 6, &targets).unwrap();
        assert_eq!(
            r.metrics,
            classification_metrics(&logits, 6, &targets).unwrap()
        );
        // argmax 0, 0, 5, 3, 0, 0 for targets 0, 2, 0, 3, 1, 4.
        assert_eq!(r.confusion[0], vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(r.confusion[1], vec![1, 0, 0, 0, 0, 0]);
        assert_eq!(r.confusion[2], vec![1, 0, 0, 0, 0, 0]);
        assert_eq!(r.confusion[3], vec![0, 0, 0, 1, 0, 0]);
        assert_eq!(r.confusion[5], vec![0; 6]);
        assert_eq!(
            r.per_class_recall,
            vec![Some(0.5), Some(0.0), Some(0.0), Some(1.0), Some(0.0), None]
        );
        let total: u64 = r.confusion.iter().flatten().sum();
        assert_eq!(total, 6);
    }

    #[test]
    fn confusion_matrix_checks_labels_and_lengths() {
        let m = confusion_matrix(&[1, 1, 0], &[0, 1, 0], 3).unwrap();
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 0, 0]]);
        assert_eq!(per_class_recall(&m), vec![Some(0.5), Some(1.0), None]);
        assert_eq!(
            confusion_matrix(&[0, 3], &[0, 1], 3),
            Err(MetricError::Label {
                what: "prediction",
                index: 1,
                label: 3,
                count: 3
            })
        );
        assert!(matches!(
            confusion_matrix(&[0], &[0, 1], 3),
            Err(MetricError::Shape { .. })
        ));
    }

    #[test]
    fn ranked_classes_put_ties_in_class_order() {
        assert_eq!(
            ranked_classes(&[0.5, 0.9, 0.5, -1.0, 0.7]),
            vec![1, 4, 0, 2, 3]
        );
        // The same order rank_in_row counts for each class.
        let row = [0.5, 0.9, 0.5, -1.0, 0.7];
        for (position, class) in ranked_classes(&row).into_iter().enumerate() {
            assert_eq!(rank_in_row(&row, class), position);
        }
        assert!(ranked_classes(&[]).is_empty());
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
