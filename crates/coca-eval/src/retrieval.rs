//! Image–text retrieval recall@K with several captions per image, as CLIP_benchmark computes it
//! (`metrics/zeroshot_retrieval.py`).
//!
//! The scores are `texts · imagesᵀ`: a `(texts, images)` matrix, and each text belongs to exactly one
//! image (`text_image[t]`); an image may have any number of texts, at least one.
//! * **image_retrieval_recall@K** (text → image): for each text, rank the images by score; a hit when its
//!   own image is among the first K. Averaged over texts.
//! * **text_retrieval_recall@K** (image → text): for each image, rank all texts; a hit when *any* of its
//!   captions is among the first K (CLIP_benchmark's recall > 0). Averaged over images.
//!
//! Ties are resolved by index (the lower index ranks first), as a stable sort does; `torch.topk` leaves
//! their order unspecified. A K larger than the number of candidates counts every query as a hit (where
//! `torch.topk` would raise).

use serde::Serialize;

use crate::metric_error::MetricError;
use crate::ranking::{fraction_below, rank_in_row};

/// Recall at one K in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecallAtK {
    /// The K.
    pub k: usize,
    /// Text → image: fraction of texts whose image is in the top K.
    pub image_retrieval: f64,
    /// Image → text: fraction of images with at least one caption in the top K.
    pub text_retrieval: f64,
}

/// A validated `(texts, images)` score matrix with the image of each text.
struct Pairs<'a> {
    scores: &'a [f32],
    images: usize,
    text_image: &'a [usize],
}

impl<'a> Pairs<'a> {
    fn new(scores: &'a [f32], images: usize, text_image: &'a [usize]) -> Result<Self, MetricError> {
        if text_image.is_empty() {
            return Err(MetricError::Empty { what: "texts" });
        }
        if images == 0 {
            return Err(MetricError::Empty { what: "images" });
        }
        if scores.len() != text_image.len() * images {
            return Err(MetricError::Shape {
                what: "scores",
                len: scores.len(),
                rows: text_image.len(),
                cols: images,
            });
        }
        let mut captioned = vec![false; images];
        for (index, &label) in text_image.iter().enumerate() {
            if label >= images {
                return Err(MetricError::Label {
                    what: "text",
                    index,
                    label,
                    count: images,
                });
            }
            captioned[label] = true;
        }
        if let Some(index) = captioned.iter().position(|c| !c) {
            return Err(MetricError::NoCaption { index });
        }
        if let Some(i) = scores.iter().position(|x| x.is_nan()) {
            return Err(MetricError::NotANumber {
                what: "text",
                index: i / images,
            });
        }
        Ok(Self {
            scores,
            images,
            text_image,
        })
    }

    fn score(&self, text: usize, image: usize) -> f32 {
        self.scores[text * self.images + image]
    }

    /// Text → image: the rank of each text's own image in its row.
    fn image_ranks(&self) -> Vec<usize> {
        self.scores
            .chunks_exact(self.images)
            .zip(self.text_image)
            .map(|(row, &image)| rank_in_row(row, image))
            .collect()
    }

    /// Image → text: the best rank, among all texts, of any caption of each image. Ranks grow as the score
    /// falls (ties by index), so the best-ranked caption is the highest-scoring one, the first among equals;
    /// only its rank needs counting.
    fn text_ranks(&self) -> Vec<usize> {
        let mut best: Vec<Option<usize>> = vec![None; self.images];
        for (text, &image) in self.text_image.iter().enumerate() {
            let slot = &mut best[image];
            if slot.is_none_or(|b| self.score(text, image) > self.score(b, image)) {
                *slot = Some(text);
            }
        }
        best.iter()
            .enumerate()
            .map(|(image, caption)| {
                // Every image has a caption (checked in `new`).
                let caption = caption.unwrap_or_default();
                let s = self.score(caption, image);
                (0..self.text_image.len())
                    .filter(|&t| {
                        let o = self.score(t, image);
                        o > s || (o == s && t < caption)
                    })
                    .count()
            })
            .collect()
    }
}

/// For each text (row of the `(texts, images)` `scores`), the rank of its own image among all images.
pub fn image_retrieval_ranks(
    scores: &[f32],
    images: usize,
    text_image: &[usize],
) -> Result<Vec<usize>, MetricError> {
    Ok(Pairs::new(scores, images, text_image)?.image_ranks())
}

/// For each image, the best rank among all texts of any of its captions.
pub fn text_retrieval_ranks(
    scores: &[f32],
    images: usize,
    text_image: &[usize],
) -> Result<Vec<usize>, MetricError> {
    Ok(Pairs::new(scores, images, text_image)?.text_ranks())
}

/// Recall@K in both directions for every K of `ks` (CLIP_benchmark uses 1, 5 and 10).
pub fn retrieval_recall(
    scores: &[f32],
    images: usize,
    text_image: &[usize],
    ks: &[usize],
) -> Result<Vec<RecallAtK>, MetricError> {
    let pairs = Pairs::new(scores, images, text_image)?;
    let (image_ranks, text_ranks) = (pairs.image_ranks(), pairs.text_ranks());
    Ok(ks
        .iter()
        .map(|&k| RecallAtK {
            k,
            image_retrieval: fraction_below(&image_ranks, k),
            text_retrieval: fraction_below(&text_ranks, k),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 images; texts 0, 1 describe image 0, text 2 image 1, texts 3, 4 image 2.
    fn fixture() -> (Vec<f32>, Vec<usize>) {
        #[rustfmt::skip]
        let scores = vec![
            // img0 img1 img2
            0.9, 0.1, 0.2, // text 0 (image 0): rank 0
            0.1, 0.5, 0.6, // text 1 (image 0): rank 2
            0.3, 0.2, 0.1, // text 2 (image 1): rank 1
            0.4, 0.4, 0.4, // text 3 (image 2): all tied, image 2 comes last: rank 2
            0.0, 0.3, 0.8, // text 4 (image 2): rank 0
        ];
        (scores, vec![0, 0, 1, 2, 2])
    }

    #[test]
    fn text_to_image_ranks_by_row() {
        let (scores, pairs) = fixture();
        assert_eq!(
            image_retrieval_ranks(&scores, 3, &pairs).unwrap(),
            vec![0, 2, 1, 2, 0]
        );
    }

    #[test]
    fn image_to_text_takes_the_best_caption() {
        let (scores, pairs) = fixture();
        // Image 0's column: 0.9 0.1 0.3 0.4 0.0; its captions are texts 0 (rank 0) and 1 (rank 3): 0.
        // Image 1's column: 0.1 0.5 0.2 0.4 0.3; text 2 scores 0.2, below 0.5, 0.4 and 0.3: rank 3.
        // Image 2's column: 0.2 0.6 0.1 0.4 0.8; texts 3 (rank 2) and 4 (rank 0): 0.
        assert_eq!(
            text_retrieval_ranks(&scores, 3, &pairs).unwrap(),
            vec![0, 3, 0]
        );
    }

    #[test]
    fn recall_at_k_in_both_directions() {
        let (scores, pairs) = fixture();
        let r = retrieval_recall(&scores, 3, &pairs, &[1, 2, 3, 10]).unwrap();
        let got: Vec<(usize, f64, f64)> = r
            .iter()
            .map(|r| (r.k, r.image_retrieval, r.text_retrieval))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2.0 / 5.0, 2.0 / 3.0),
                (2, 3.0 / 5.0, 2.0 / 3.0),
                (3, 1.0, 2.0 / 3.0),
                (10, 1.0, 1.0),
            ]
        );
    }

    #[test]
    fn ties_between_captions_keep_the_first() {
        // One image, its two captions tie with an unrelated text 0 of another image.
        let scores = [0.5, 0.9, /**/ 0.5, 0.1, /**/ 0.5, 0.2];
        let ranks = text_retrieval_ranks(&scores, 2, &[1, 0, 0]).unwrap();
        // Image 0's column is 0.5 0.5 0.5: text 1 is its best caption, behind text 0 on the tie.
        assert_eq!(ranks, vec![1, 0]);
    }

    #[test]
    fn bad_inputs_are_named() {
        assert_eq!(
            retrieval_recall(&[0.1, 0.2], 2, &[0], &[1]).map(|_| ()),
            Err(MetricError::NoCaption { index: 1 })
        );
        assert_eq!(
            retrieval_recall(&[0.1, 0.2, 0.3], 2, &[0, 1], &[1]).map(|_| ()),
            Err(MetricError::Shape {
                what: "scores",
                len: 3,
                rows: 2,
                cols: 2
            })
        );
        assert_eq!(
            retrieval_recall(&[0.1, 0.2, 0.3, 0.4], 2, &[0, 5], &[1]).map(|_| ()),
            Err(MetricError::Label {
                what: "text",
                index: 1,
                label: 5,
                count: 2
            })
        );
        assert_eq!(
            retrieval_recall(&[], 2, &[], &[1]).map(|_| ()),
            Err(MetricError::Empty { what: "texts" })
        );
    }
}
