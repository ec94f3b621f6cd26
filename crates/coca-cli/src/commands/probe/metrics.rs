//! Classification metrics of a probe: top-1, top-5, mean per-class recall, confusion matrix.

use serde::Serialize;

/// The scores of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Top-1 accuracy.
    pub acc1: f64,
    /// Top-5 accuracy (only with at least 5 classes).
    pub acc5: Option<f64>,
    /// Mean over the classes present in the evaluation set of each class's recall (CLIP_benchmark's
    /// `mean_per_class_recall`).
    pub mean_per_class_recall: f64,
    /// Each class's recall; `None` for classes without evaluation items.
    pub per_class_recall: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Score `logits` (one row per item) against `labels`, for `classes` classes.
pub fn evaluate(logits: &[Vec<f32>], labels: &[usize], classes: usize) -> Evaluation {
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in logits.iter().zip(labels) {
        let ranked = ranking(row);
        confusion[label][ranked[0]] += 1;
        top1 += usize::from(ranked[0] == label);
        top5 += usize::from(ranked.iter().take(5).any(|&c| c == label));
    }
    let n = labels.len().max(1) as f64;
    let per_class_recall: Vec<Option<f64>> = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row[c] as f64 / total as f64)
        })
        .collect();
    let present: Vec<f64> = per_class_recall.iter().flatten().copied().collect();
    Evaluation {
        acc1: top1 as f64 / n,
        acc5: (classes >= 5).then_some(top5 as f64 / n),
        mean_per_class_recall: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class_recall,
        confusion,
    }
}

/// Class indices by descending score (ties: lower index first).
pub fn ranking(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
}

/// Softmax of one row of logits.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_top5_recall_and_confusion() {
        // 6 classes; items of classes 0, 0, 1, 2 predicted 0, 1, 1, 5 (class 2's label ranked 6th).
        let row = |best: usize, second: usize| {
            let mut r = vec![0.0f32; 6];
            r[best] = 2.0;
            r[second] = 1.0;
            r
        };
        let logits = vec![row(0, 1), row(1, 0), row(1, 2), row(5, 4)];
        let labels = vec![0, 0, 1, 2];
        let e = evaluate(&logits, &labels, 6);
        assert_eq!(e.acc1, 0.5);
        // Class 2 is tied at 0 with classes 0, 1, 3: ranked after 5, 4, then 0, 1, 2 → 5th.
        assert_eq!(e.acc5, Some(1.0));
        assert_eq!(e.per_class_recall[0], Some(0.5));
        assert_eq!(e.per_class_recall[1], Some(1.0));
        assert_eq!(e.per_class_recall[2], Some(0.0));
        assert_eq!(e.per_class_recall[3], None);
        assert!((e.mean_per_class_recall - 0.5).abs() < 1e-12);
        assert_eq!(e.confusion[0], vec![1, 1, 0, 0, 0, 0]);
        assert_eq!(e.confusion[2][5], 1);
        assert_eq!(evaluate(&logits[..1], &labels[..1], 4).acc5, None);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
