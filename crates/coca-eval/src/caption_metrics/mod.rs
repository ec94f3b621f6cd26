//! Corpus captioning metrics as pycocoevalcap 1.2 reports them: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.
//!
//! Each image has one generated caption and one or more reference captions. As in pycocoevalcap's
//! `COCOEvalCap.evaluate`, the references of all images and the candidates of all images are tokenised
//! as two separate sets ([`crate::ptb::tokenize_captions`]), then every scorer sees the tokenised strings:
//! * **BLEU-n** (`bleu_scorer.py`, option "closest"): clipped n-gram counts summed over the corpus; the
//!   brevity penalty uses, per image, the reference length closest to the candidate's (the shorter on
//!   a tie); 1e-15 is added to matched counts and 1e-9 to candidate counts and lengths, so an empty
//!   candidate scores ~0 instead of failing. Per image: the same formula on that image's counts.
//! * **ROUGE-L** (`rouge.py`): per image, precision and recall of the longest common subsequence,
//!   each maximised over the references, combined as an F-measure with beta 1.2; corpus = mean.
//! * **CIDEr-D** (`cider_scorer.py`): 1..4-gram TF-IDF with document frequencies from the evaluated
//!   set's own references (so the score depends on the whole set), candidate weights clipped at the
//!   reference's, length penalty exp(-Δ²/2σ²) with σ = 6 where length counts bigram occurrences, mean
//!   over orders and references, ×10; corpus = mean over images.
//! * **METEOR**: through `meteor-1.5.jar` when a [`MeteorJar`] is given (see [`meteor`]); `None` otherwise.
//!
//! SPICE is not computed: it needs Stanford CoreNLP 3.6 models (a ~1 GB download, Java) for
//! dependency parsing and scene-graph extraction, which is out of proportion for this crate.

mod bleu;
mod cider;
pub mod meteor;
mod ngrams;
mod rouge;

use std::path::PathBuf;

use serde::Serialize;

pub use meteor::MeteorJar;

use crate::ptb::tokenize_captions;

/// Errors of caption evaluation; each names the offending input.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// No images were given.
    #[error("caption evaluation needs at least one image, got none")]
    NoImages,
    /// An image has no reference captions.
    #[error("image {index} has no reference captions (every image needs at least one)")]
    NoReferences {
        /// Position of the image in the input.
        index: usize,
    },
    /// The METEOR jar could not be started.
    #[error("could not start METEOR: `{} -jar {}`: {source}", java.display(), jar.display())]
    MeteorSpawn {
        /// The Java executable tried.
        java: PathBuf,
        /// The jar tried.
        jar: PathBuf,
        /// Why the start failed.
        source: std::io::Error,
    },
    /// The METEOR jar answered something unexpected.
    #[error("METEOR jar {}: {message}", jar.display())]
    MeteorProtocol {
        /// The jar.
        jar: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScores {
    /// BLEU-1..4 of this image alone.
    pub bleu: [f64; 4],
    /// METEOR of this image, when computed.
    pub meteor: Option<f64>,
    /// ROUGE-L of this image.
    pub rouge_l: f64,
    /// CIDEr-D of this image (depends on the whole set through document frequencies).
    pub cider_d: f64,
}

/// Corpus-level scores (pycocoevalcap's `Bleu_1`..`Bleu_4`, `METEOR`, `ROUGE_L`, `CIDEr`) and the
/// per-image scores, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    /// Corpus BLEU-1..4.
    pub bleu: [f64; 4],
    /// Corpus METEOR, when computed.
    pub meteor: Option<f64>,
    /// Mean ROUGE-L.
    pub rouge_l: f64,
    /// Mean CIDEr-D.
    pub cider_d: f64,
    /// Scores of each image.
    pub per_image: Vec<ImageScores>,
}

/// Computes captioning metrics; configure METEOR with [`CaptionMetrics::with_meteor`].
#[derive(Debug, Clone, Default)]
pub struct CaptionMetrics {
    meteor: Option<MeteorJar>,
}

impl CaptionMetrics {
    /// Metrics without METEOR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also computes METEOR with the given jar.
    pub fn with_meteor(mut self, jar: MeteorJar) -> Self {
        self.meteor = Some(jar);
        self
    }

    /// Tokenises (as pycocoevalcap does) and scores `(candidate, references)` pairs, one per image.
    pub fn compute<C: AsRef<str>, R: AsRef<str>>(
        &self,
        images: &[(C, Vec<R>)],
    ) -> Result<Scores, EvalError> {
        validate(images.iter().map(|(_, r)| r.len()))?;
        let refs: Vec<&str> = images
            .iter()
            .flat_map(|(_, r)| r.iter().map(AsRef::as_ref))
            .collect();
        let cands: Vec<&str> = images.iter().map(|(c, _)| c.as_ref()).collect();
        let mut ref_tok = tokenize_captions(&refs).into_iter();
        let cand_tok = tokenize_captions(&cands);
        let tokenised: Vec<(String, Vec<String>)> = images
            .iter()
            .zip(cand_tok)
            .map(|((_, r), c)| (c, ref_tok.by_ref().take(r.len()).collect()))
            .collect();
        self.compute_tokenized(&tokenised)
    }

    /// Scores captions that are already tokenised (space-separated tokens, as pycocoevalcap's
    /// tokenizer returns them).
    pub fn compute_tokenized<C: AsRef<str>, R: AsRef<str>>(
        &self,
        images: &[(C, Vec<R>)],
    ) -> Result<Scores, EvalError> {
        validate(images.iter().map(|(_, r)| r.len()))?;
        let owned: Vec<(&str, Vec<String>)> = images
            .iter()
            .map(|(c, r)| {
                (
                    c.as_ref(),
                    r.iter().map(|s| s.as_ref().to_string()).collect(),
                )
            })
            .collect();
        let pairs: Vec<(&str, &[String])> = owned.iter().map(|(c, r)| (*c, r.as_slice())).collect();

        let (bleu, bleu_images) = bleu::bleu(&pairs);
        let rouge_images: Vec<f64> = pairs.iter().map(|(c, r)| rouge::rouge_l(c, r)).collect();
        let rouge_l = rouge_images.iter().sum::<f64>() / rouge_images.len() as f64;
        let (cider_d, cider_images) = cider::cider_d(&pairs);
        let (meteor, meteor_images) = match &self.meteor {
            Some(jar) => {
                let (corpus, per) = jar.score(&pairs)?;
                (Some(corpus), per.into_iter().map(Some).collect())
            }
            None => (None, vec![None; pairs.len()]),
        };
        let per_image = (0..pairs.len())
            .map(|i| ImageScores {
                bleu: bleu_images[i],
                meteor: meteor_images[i],
                rouge_l: rouge_images[i],
                cider_d: cider_images[i],
            })
            .collect();
        Ok(Scores {
            bleu,
            meteor,
            rouge_l,
            cider_d,
            per_image,
        })
    }
}

fn validate(reference_counts: impl ExactSizeIterator<Item = usize>) -> Result<(), EvalError> {
    if reference_counts.len() == 0 {
        return Err(EvalError::NoImages);
    }
    for (index, n) in reference_counts.enumerate() {
        if n == 0 {
            return Err(EvalError::NoReferences { index });
        }
    }
    Ok(())
}
