//! bf16 mixed precision (autocast-style, f32 master weights) against the f32 step on the tiny open_clip fixture:
//! the loss and the gradients agree within what bf16's 8 significant bits allow, and every gradient arrives in
//! f32 on the f32 variables.

mod common;

use candle_core::{DType, Tensor};
use coca_model::weights::mixed_precision_view;
use coca_model::CocaLossConfig;
use coca_train::step::step_gradients;
use coca_train::MicroBatch;
use common::{batch, params, tiny, tiny_config};

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn bf16_step_matches_the_f32_step_within_half_precision() {
    let model = tiny();
    let params = params(&model);
    let micro = batch(&[3, 5, 1, 4, 6, 2], 1);
    let cfg = CocaLossConfig::default();
    let (want, want_grads) = step_gradients(
        &model.model,
        &params,
        std::slice::from_ref(&micro),
        &cfg,
        false,
    )
    .unwrap();

    let view = mixed_precision_view(&tiny_config(), &model.vars, DType::BF16).unwrap();
    let half = MicroBatch {
        images: micro.images.to_dtype(DType::BF16).unwrap(),
        ids: micro.ids.clone(),
    };
    let (got, got_grads) = step_gradients(&view, &params, &[half], &cfg, false).unwrap();

    let rel = ((got.total - want.total) / want.total).abs();
    assert!(
        rel < 2e-2,
        "loss {} vs f32 {} ({rel:.2e})",
        got.total,
        want.total
    );
    assert!(rel > 0.0, "the bf16 step should not be the f32 step");
    assert_eq!(got_grads.len(), want_grads.len());
    let (mut diff, mut total) = (0f32, 0f32);
    for (name, want) in &want_grads {
        let got = &got_grads[name];
        assert_eq!(got.dtype(), DType::F32, "{name}");
        diff += norm(&(got - want).unwrap()).powi(2);
        total += norm(want).powi(2);
    }
    let rel_grad = (diff / total).sqrt();
    assert!(
        rel_grad < 5e-2,
        "gradients differ by {rel_grad:.2e} relative norm"
    );
}
