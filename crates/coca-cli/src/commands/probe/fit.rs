//! Training a probe head: softmax cross-entropy, AdamW with warmup + cosine (coca-train's), seeded shuffles.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use coca_train::{AdamW, AdamWConfig, Schedule, ScheduleKind};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::head::ProbeHead;

/// Optimisation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Items per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (weights only).
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up.
    pub warmup_fraction: f64,
    /// Seed of the shuffles.
    pub seed: u64,
}

/// What training did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// Optimiser steps.
    pub steps: u64,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Train `head` on `inputs` (N, ...) with class `labels`.
pub fn fit(
    head: &ProbeHead,
    inputs: &Tensor,
    labels: &[usize],
    opts: &FitOptions,
) -> Result<FitReport> {
    let n = labels.len();
    if n == 0 {
        bail!("no training items");
    }
    if opts.epochs == 0 || opts.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    let started = Instant::now();
    let per_epoch = n.div_ceil(opts.batch_size) as u64;
    let total = per_epoch * opts.epochs as u64;
    let schedule = Schedule {
        kind: ScheduleKind::Cosine,
        base_lr: opts.lr,
        warmup: ((total as f64 * opts.warmup_fraction).round() as u64).min(total.saturating_sub(1)),
        total,
        cooldown_steps: 0,
    };
    let params = head.params();
    let mut optim = AdamW::new(
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: opts.weight_decay,
        },
        params.clone(),
    )?;
    let targets: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut step = 0u64;
    let mut final_loss = f64::NAN;
    for _ in 0..opts.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut count) = (0f64, 0usize);
        for batch in order.chunks(opts.batch_size) {
            let idx = Tensor::from_slice(batch, batch.len(), &Device::Cpu)?;
            let x = inputs.index_select(&idx, 0)?;
            let y: Vec<u32> = batch.iter().map(|&i| targets[i as usize]).collect();
            let y = Tensor::from_vec(y, batch.len(), &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&head.logits(&x)?, &y)?;
            let store = loss.backward()?;
            let grads: BTreeMap<String, Tensor> = params
                .iter()
                .filter_map(|(name, var, _)| {
                    store
                        .get(var.as_tensor())
                        .map(|g| (name.clone(), g.clone()))
                })
                .collect();
            optim.step(&grads, schedule.lr(step))?;
            step += 1;
            sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            count += batch.len();
        }
        final_loss = sum / count as f64;
        if !final_loss.is_finite() {
            bail!("the probe's training loss became {final_loss}; lower --lr");
        }
    }
    Ok(FitReport {
        steps: step,
        final_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Logits of `inputs` in batches, as rows of f32.
pub fn predict(head: &ProbeHead, inputs: &Tensor, batch_size: usize) -> Result<Vec<Vec<f32>>> {
    let n = inputs.dim(0)?;
    let mut rows = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = batch_size.max(1).min(n - start);
        rows.extend(
            head.logits(&inputs.narrow(0, start, len)?)?
                .to_vec2::<f32>()?,
        );
        start += len;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe::head::{standardisation, ProbeKind};
    use rand::Rng;

    /// Top-1 accuracy of `(items, classes)` logit rows, by coca-eval's definition.
    fn accuracy(logits: &[Vec<f32>], labels: &[usize], classes: usize) -> f64 {
        coca_eval::classification::top_k_accuracy(&logits.concat(), classes, labels, 1).unwrap()
    }

    /// `n` items of `classes` classes: tokens (n, 6, 8) of noise where one token per item carries its class's
    /// direction — separable only by attending to that token, at a random position.
    fn synthetic(n: usize, classes: usize, seed: u64) -> (Tensor, Tensor, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = move |rng: &mut ChaCha8Rng| rng.random_range(-0.5f32..0.5);
        let (t, w) = (6, 8);
        let mut tokens = vec![0f32; n * t * w];
        let mut emb = vec![0f32; n * w];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            labels.push(c);
            for v in tokens[i * t * w..(i + 1) * t * w].iter_mut() {
                *v = noise(&mut rng);
            }
            let pos = (i * 7 + 3) % t;
            tokens[i * t * w + pos * w + c] += 6.0;
            for (d, v) in emb[i * w..(i + 1) * w].iter_mut().enumerate() {
                *v = noise(&mut rng) + if d == c { 2.0 } else { 0.0 };
            }
        }
        (
            Tensor::from_vec(tokens, (n, t, w), &Device::Cpu).unwrap(),
            Tensor::from_vec(emb, (n, w), &Device::Cpu).unwrap(),
            labels,
        )
    }

    fn opts(lr: f64) -> FitOptions {
        FitOptions {
            epochs: 30,
            batch_size: 16,
            lr,
            weight_decay: 0.01,
            warmup_fraction: 0.05,
            seed: 1,
        }
    }

    #[test]
    fn the_attentional_probe_learns_separable_tokens() {
        let (tokens, _, labels) = synthetic(240, 4, 0);
        let (test_tokens, _, test_labels) = synthetic(60, 4, 1);
        let kind = ProbeKind::Attentional {
            queries: 1,
            heads: 2,
        };
        let head = ProbeHead::new(kind, 8, 4, None, 3).unwrap();
        let before = accuracy(&predict(&head, &test_tokens, 32).unwrap(), &test_labels, 4);
        let report = fit(&head, &tokens, &labels, &opts(2e-2)).unwrap();
        assert_eq!(report.steps, 30 * 15);
        let after = accuracy(&predict(&head, &test_tokens, 32).unwrap(), &test_labels, 4);
        let train_acc = accuracy(&predict(&head, &tokens, 32).unwrap(), &labels, 4);
        assert!(train_acc > 0.99, "train accuracy {train_acc}");
        assert!(
            after > 0.9 && before < 0.5,
            "accuracy {after} (before {before}, train {train_acc}, loss {})",
            report.final_loss
        );
        assert!(report.final_loss < 0.3, "loss {}", report.final_loss);
    }

    #[test]
    fn the_linear_probe_learns_separable_embeddings_and_is_seeded() {
        let (_, emb, labels) = synthetic(120, 4, 0);
        let (_, test_emb, test_labels) = synthetic(60, 4, 1);
        let run = || {
            let head = ProbeHead::new(
                ProbeKind::Linear,
                8,
                4,
                Some(standardisation(&emb).unwrap()),
                3,
            )
            .unwrap();
            let report = fit(&head, &emb, &labels, &opts(1e-2)).unwrap();
            (report.final_loss, predict(&head, &test_emb, 7).unwrap())
        };
        let (loss, logits) = run();
        let acc = accuracy(&logits, &test_labels, 4);
        assert!(acc > 0.95, "accuracy {acc}");
        assert_eq!(run().0, loss, "same seed, same run");
    }

    #[test]
    fn a_saved_probe_predicts_the_same() {
        let (tokens, _, labels) = synthetic(40, 3, 0);
        let kind = ProbeKind::Attentional {
            queries: 2,
            heads: 4,
        };
        let head = ProbeHead::new(kind, 8, 3, None, 3).unwrap();
        let mut o = opts(5e-3);
        o.epochs = 2;
        fit(&head, &tokens, &labels, &o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.safetensors");
        head.save(&path, &BTreeMap::new()).unwrap();
        let loaded = ProbeHead::load(&path, kind, 8, 3).unwrap();
        assert_eq!(
            predict(&head, &tokens, 8).unwrap(),
            predict(&loaded, &tokens, 8).unwrap()
        );
        assert!(
            ProbeHead::load(&path, kind, 8, 4).is_err(),
            "other class count"
        );
        let err = ProbeHead::new(
            ProbeKind::Attentional {
                queries: 1,
                heads: 3,
            },
            8,
            3,
            None,
            0,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("must divide the token width 8"),
            "{err}"
        );
    }
}
