//! The distributed CoCa loss against single-process references over the global batch, on the real tiny
//! open_clip fixture model: `W` ranks are threads, each holding one rank of an in-process communicator, each
//! computing its step on its share of the batch; the averaged gradients are compared with gradients computed
//! in one process.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use coca_dist::{BackgroundComm, Communicator, DistError, LocalComm, PendingTensor};
use coca_model::loss::contrastive_loss;
use coca_model::nn::ops::log_softmax_last_dim;
use coca_model::weights::TrainableCoca;
use coca_model::{coca_loss_fused, CocaLossConfig, TrainOutput};
use coca_train::distributed::{mean_losses, step_gradients_distributed};
use coca_train::{DistOptions, MicroBatch, StepLosses};

mod common;
use common::{batch, params, tiny};

type Grads = BTreeMap<String, Tensor>;

/// Rows `start..start + n` of a batch.
fn rows(b: &MicroBatch, start: usize, n: usize) -> MicroBatch {
    MicroBatch {
        images: b.images.narrow(0, start, n).unwrap(),
        ids: b.ids.narrow(0, start, n).unwrap(),
    }
}

/// Run a distributed step on `world` ranks, rank `r` taking `micro[r]`, with each rank's collectives on a
/// background thread as the trainer runs them; every rank's mean losses and averaged gradients.
fn distributed(
    model: &TrainableCoca,
    micro: &[Vec<MicroBatch>],
    options: DistOptions,
) -> Vec<(StepLosses, Grads)> {
    distributed_on(model, micro, options, false, |local| {
        Box::new(BackgroundComm::spawn(Box::new(local)).unwrap())
    })
}

/// [`distributed`] with each rank's communicator made from its in-process rank by `wrap`.
fn distributed_on(
    model: &TrainableCoca,
    micro: &[Vec<MicroBatch>],
    options: DistOptions,
    grad_checkpointing: bool,
    wrap: impl Fn(LocalComm) -> Box<dyn Communicator> + Sync,
) -> Vec<(StepLosses, Grads)> {
    let params = params(model);
    let cfg = CocaLossConfig::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalComm::group(micro.len())
            .into_iter()
            .map(|local| {
                let (params, cfg, wrap) = (&params, &cfg, &wrap);
                s.spawn(move || {
                    let comm = wrap(local);
                    let mine = &micro[comm.rank()];
                    let (losses, grads) = step_gradients_distributed(
                        &model.model,
                        params,
                        mine,
                        cfg,
                        grad_checkpointing,
                        comm.as_ref(),
                        &options,
                    )
                    .unwrap();
                    (mean_losses(comm.as_ref(), losses).unwrap(), grads)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn gradients(model: &TrainableCoca, loss: &Tensor) -> Grads {
    let store = loss.backward().unwrap();
    params(model)
        .into_iter()
        .filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n, g.clone())))
        .collect()
}

/// `f(name, a, b)` for every gradient of `a` or `b`; a missing one counts as zeros.
fn combine(a: &Grads, b: &Grads, f: impl Fn(&str, &Tensor, &Tensor) -> Tensor) -> Grads {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .map(|n| {
            let like = a.get(n).or(b.get(n)).unwrap();
            let zero = like.zeros_like().unwrap();
            (
                n.clone(),
                f(n, a.get(n).unwrap_or(&zero), b.get(n).unwrap_or(&zero)),
            )
        })
        .collect()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Every gradient within `tol` of the reference, relative to the largest entry of that reference tensor.
fn assert_grads_close(got: &Grads, want: &Grads, tol: f32) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let mut worst = (0f32, String::new());
    for (name, w) in want {
        let diff = max_abs(&(&got[name] - w).unwrap()) / max_abs(w).max(1e-3);
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    assert!(
        worst.0 <= tol,
        "largest relative difference {} in {}",
        worst.0,
        worst.1
    );
}

/// All ranks hold bit-identical averaged gradients and losses: they stay in lockstep.
fn assert_ranks_identical(results: &[(StepLosses, Grads)]) {
    for (losses, grads) in &results[1..] {
        assert_eq!(losses, &results[0].0);
        for (name, g) in grads {
            let a = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = results[0].1[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name} differs between ranks"
            );
        }
    }
}

fn forward(model: &TrainableCoca, b: &MicroBatch) -> TrainOutput {
    model
        .model
        .forward_for_loss(&b.images, &b.ids, &coca_model::AllAtOnce)
        .unwrap()
}

/// `λ_cap · mean over ranks of each rank's caption loss`, open_clip's distributed caption objective.
fn mean_caption_loss(model: &TrainableCoca, shares: &[MicroBatch]) -> Tensor {
    let cfg = CocaLossConfig {
        contrastive_weight: 0.0,
        ..CocaLossConfig::default()
    };
    let parts: Vec<Tensor> = shares
        .iter()
        .map(|b| coca_loss_fused(&forward(model, b), &cfg).unwrap().caption)
        .collect();
    (Tensor::stack(&parts, 0).unwrap().sum_all().unwrap() / shares.len() as f64).unwrap()
}

/// `λ_con · L_con` over the whole batch.
fn global_contrastive(model: &TrainableCoca, global: &MicroBatch) -> Tensor {
    let out = forward(model, global);
    contrastive_loss(&out.image_features, &out.text_features, &out.logit_scale).unwrap()
}

const GWG: DistOptions = DistOptions {
    local_loss: false,
    gather_with_grad: true,
    bucket_bytes: 4096,
};

#[test]
fn gather_with_grad_equals_the_global_batch() {
    let model = tiny();
    // Equal caption tokens per rank (3 + 6 and 6 + 3 words), so the mean of the ranks' caption means is
    // the global caption mean.
    let global = batch(&[2, 5, 5, 2], 0);
    let reference = coca_loss_fused(&forward(&model, &global), &CocaLossConfig::default()).unwrap();
    let want = gradients(&model, &reference.total);
    let shares = [vec![rows(&global, 0, 2)], vec![rows(&global, 2, 2)]];
    for local_loss in [false, true] {
        let results = distributed(&model, &shares, DistOptions { local_loss, ..GWG });
        assert_ranks_identical(&results);
        let (losses, grads) = &results[0];
        let total = reference.total.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (losses.total - total).abs() < 1e-5 * total,
            "local_loss {local_loss}: {} vs {total}",
            losses.total
        );
        let contrastive = reference.contrastive.to_scalar::<f32>().unwrap() as f64;
        assert!((losses.contrastive - contrastive).abs() < 1e-5 * contrastive);
        assert_grads_close(grads, &want, 1e-5);
    }
}

#[test]
fn gather_with_grad_with_three_ranks_and_accumulation_equals_the_global_batch() {
    let model = tiny();
    // Three ranks, two micro-batches of two each; every rank has 3 + 5 + 4 + 6 = 18 caption tokens.
    let global = batch(&[2, 4, 3, 5, 4, 2, 5, 3, 3, 3, 4, 4], 1);
    let reference = coca_loss_fused(&forward(&model, &global), &CocaLossConfig::default()).unwrap();
    let want = gradients(&model, &reference.total);
    let shares: Vec<Vec<MicroBatch>> = (0..3)
        .map(|r| vec![rows(&global, 4 * r, 2), rows(&global, 4 * r + 2, 2)])
        .collect();
    let results = distributed(&model, &shares, GWG);
    assert_ranks_identical(&results);
    // open_clip's accumulation recomputes the temperature with every micro-batch, so its gradient is summed
    // `--accum-freq` times (single-process accumulation does the same); every other weight matches the
    // global batch.
    let want = combine(&BTreeMap::new(), &want, |name, _, g| {
        if name == "logit_scale" {
            (g * 2.0).unwrap()
        } else {
            g.clone()
        }
    });
    assert_grads_close(&results[0].1, &want, 1e-5);
}

#[test]
fn caption_loss_is_the_mean_of_the_ranks_means() {
    let model = tiny();
    // Rank 0 has 4 caption tokens, rank 1 has 12: the global token mean is not what open_clip optimises.
    let global = batch(&[1, 1, 5, 5], 2);
    let shares = [rows(&global, 0, 2), rows(&global, 2, 2)];
    let objective =
        (global_contrastive(&model, &global) + mean_caption_loss(&model, &shares)).unwrap();
    let want = gradients(&model, &objective);
    let results = distributed(
        &model,
        &[vec![shares[0].clone()], vec![shares[1].clone()]],
        GWG,
    );
    let value = objective.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (results[0].0.total - value).abs() < 1e-5 * value,
        "{} vs {value}",
        results[0].0.total
    );
    assert_grads_close(&results[0].1, &want, 1e-5);
    // And that differs from the global token mean.
    let global_mean =
        coca_loss_fused(&forward(&model, &global), &CocaLossConfig::default()).unwrap();
    assert!((global_mean.total.to_scalar::<f32>().unwrap() as f64 - value).abs() > 1e-3);
}

#[test]
fn without_gather_with_grad_features_get_only_their_own_rank_contribution() {
    let model = tiny();
    let world = 2.0;
    let global = batch(&[2, 5, 5, 2], 3);
    let shares = [rows(&global, 0, 2), rows(&global, 2, 2)];
    let caption = gradients(&model, &mean_caption_loss(&model, &shares));

    // Full gathered loss: contrastive gradients of every weight are 1/W of the global ones, except the
    // temperature's, which every rank computes in full.
    let contrastive = gradients(&model, &global_contrastive(&model, &global));
    let want = combine(&caption, &contrastive, |name, cap, con| {
        let scale = if name == "logit_scale" {
            1.0
        } else {
            1.0 / world
        };
        (cap + (con * scale).unwrap()).unwrap()
    });
    let results = distributed(
        &model,
        &[vec![shares[0].clone()], vec![shares[1].clone()]],
        DistOptions::default(),
    );
    assert_ranks_identical(&results);
    assert_grads_close(&results[0].1, &want, 1e-5);

    // Local loss: the gradient of the global loss with the other side of each logit held constant.
    let out = forward(&model, &global);
    let (img, txt, s) = (&out.image_features, &out.text_features, &out.logit_scale);
    let diagonal_ce = |logits: Tensor| {
        let n = logits.dim(0).unwrap();
        let eye = Tensor::eye(n, DType::F32, &Device::Cpu).unwrap();
        (log_softmax_last_dim(&logits).unwrap() * eye)
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(-1.0 / n as f64, 0.0)
            .unwrap()
    };
    let per_image = img
        .matmul(&txt.detach().t().unwrap())
        .unwrap()
        .broadcast_mul(s)
        .unwrap();
    let per_text = txt
        .matmul(&img.detach().t().unwrap())
        .unwrap()
        .broadcast_mul(s)
        .unwrap();
    let rows_only = ((diagonal_ce(per_image) + diagonal_ce(per_text)).unwrap() * 0.5).unwrap();
    let want = combine(&caption, &gradients(&model, &rows_only), |_, cap, con| {
        (cap + con).unwrap()
    });
    let options = DistOptions {
        local_loss: true,
        ..DistOptions::default()
    };
    let results = distributed(
        &model,
        &[vec![shares[0].clone()], vec![shares[1].clone()]],
        options,
    );
    assert_ranks_identical(&results);
    assert_grads_close(&results[0].1, &want, 1e-5);
}

#[test]
fn one_rank_is_the_single_process_step() {
    let model = tiny();
    let global = batch(&[2, 5, 3], 4);
    let single = coca_train::step::step_gradients(
        &model.model,
        &params(&model),
        std::slice::from_ref(&global),
        &CocaLossConfig::default(),
        false,
    )
    .unwrap();
    for options in [
        DistOptions::default(),
        GWG,
        DistOptions {
            local_loss: true,
            ..GWG
        },
    ] {
        let results = distributed(&model, &[vec![global.clone()]], options);
        assert!((results[0].0.total - single.0.total).abs() < 1e-6 * single.0.total);
        assert_grads_close(&results[0].1, &single.1, 1e-5);
    }
}

/// The gradients a step returns are plain values: a gradient that still recorded its graph would keep every
/// activation of the step alive for as long as it (or an optimiser moment computed from it) lives. On a GPU that
/// leaked a step's activations per step.
#[test]
fn step_gradients_hold_no_graph() {
    let model = tiny();
    let params = params(&model);
    let b = batch(&[3, 5, 1, 4], 0);
    for micro in [vec![b.clone()], vec![rows(&b, 0, 2), rows(&b, 2, 2)]] {
        let (_, grads) = coca_train::step::step_gradients(
            &model.model,
            &params,
            &micro,
            &CocaLossConfig::default(),
            false,
        )
        .unwrap();
        assert!(!grads.is_empty());
        for (name, g) in &grads {
            assert!(!g.track_op(), "the gradient of {name} records a graph");
        }
    }
}

/// A rank that records the size of every all-reduce the training thread starts, in order.
struct Recording {
    inner: Box<dyn Communicator>,
    started: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Communicator for Recording {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn backend(&self) -> &'static str {
        "recording"
    }
    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        self.inner.all_reduce_sum_f32(data)
    }
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        self.inner.all_gather_f32(local)
    }
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        self.inner.broadcast_f32(data)
    }
    fn barrier(&self) -> Result<(), DistError> {
        self.inner.barrier()
    }
    fn start_all_reduce_sum(&self, t: &Tensor) -> Result<PendingTensor, DistError> {
        self.started.lock().unwrap().push(t.elem_count());
        self.inner.start_all_reduce_sum(t)
    }
}

/// During the last micro-batch's backward, gradients become final segment by segment from the top of the
/// model down: the decoder's before the text tower's, the text tower's before the vision tower's, and within a
/// tower the upper blocks first; with grad checkpointing too. Each name comes once.
#[test]
fn gradients_become_final_from_the_top_down() {
    let model = tiny();
    let params = params(&model);
    let b = batch(&[3, 5, 1, 4], 6);
    let micro = [rows(&b, 0, 2), rows(&b, 2, 2)];
    let cfg = CocaLossConfig::default();
    for checkpointing in [false, true] {
        let mut order: Vec<String> = Vec::new();
        let (_, grads) = coca_train::step::step_gradients_with(
            &model.model,
            &params,
            &micro,
            cfg.pad_id,
            checkpointing,
            &mut |out, held| {
                let loss = coca_model::coca_loss_fused_with(out, held, &cfg)?;
                Ok::<_, candle_core::Error>((StepLosses::default(), loss.total))
            },
            Some(&mut |done: &[(String, Tensor)]| {
                order.extend(done.iter().map(|(n, _)| n.clone()));
                Ok(())
            }),
        )
        .unwrap();
        assert_eq!(order.len(), grads.len());
        let position = |name: &str| order.iter().position(|n| n == name).unwrap();
        let last = |prefix: &str| {
            order
                .iter()
                .rposition(|n| n.starts_with(prefix))
                .unwrap_or_else(|| panic!("nothing under {prefix}"))
        };
        let first = |prefix: &str| order.iter().position(|n| n.starts_with(prefix)).unwrap();
        assert!(last("text_decoder.") < first("text."), "{order:?}");
        assert!(last("text.") < first("visual."), "{order:?}");
        assert!(
            last("visual.transformer.resblocks.1.") < first("visual.transformer.resblocks.0."),
            "{order:?}"
        );
        assert!(last("visual.transformer.resblocks.0.") < position("visual.conv1.weight"));
        assert!(last("text_decoder.cross_attn.1.") < first("text_decoder.resblocks.1."));
    }
}

/// Buckets are started as they fill during the backward (several here, each at least the bucket size but
/// the last) and every gradient is in exactly one; the averaged gradients equal those of the synchronous
/// backend bit for bit, with and without grad checkpointing.
#[test]
fn buckets_start_during_the_backward_and_average_exactly() {
    let model = tiny();
    let global = batch(&[2, 5, 5, 2, 3, 4, 1, 6], 5);
    let shares: Vec<Vec<MicroBatch>> = (0..2)
        .map(|r| vec![rows(&global, 4 * r, 2), rows(&global, 4 * r + 2, 2)])
        .collect();
    let options = DistOptions {
        bucket_bytes: 64 << 10,
        ..GWG
    };
    let synchronous = distributed_on(&model, &shares, options, false, |local| Box::new(local));
    for checkpointing in [false, true] {
        let logs: Vec<_> = (0..2)
            .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Vec::new())))
            .collect();
        let overlapped = distributed_on(&model, &shares, options, checkpointing, |local| {
            let started = std::sync::Arc::clone(&logs[local.rank()]);
            let inner = Box::new(BackgroundComm::spawn(Box::new(local)).unwrap());
            Box::new(Recording { inner, started })
        });
        let total: usize = overlapped[0].1.values().map(|g| g.elem_count()).sum();
        for log in &logs {
            let sizes = log.lock().unwrap().clone();
            assert!(sizes.len() > 2, "{sizes:?}");
            assert_eq!(sizes.iter().sum::<usize>(), total);
            let limit = options.bucket_bytes / 4;
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&n| n >= limit),
                "{sizes:?}"
            );
        }
        for (a, b) in overlapped.iter().zip(&synchronous) {
            assert_eq!(a.0, b.0);
            assert_eq!(
                a.1.keys().collect::<Vec<_>>(),
                b.1.keys().collect::<Vec<_>>()
            );
            for (name, g) in &a.1 {
                let (x, y) = (g.flatten_all().unwrap(), b.1[name].flatten_all().unwrap());
                assert_eq!(
                    x.to_vec1::<f32>().unwrap(),
                    y.to_vec1::<f32>().unwrap(),
                    "checkpointing {checkpointing}: {name}"
                );
            }
        }
    }
}
