//! The cached, one-position-at-a-time decoder gives the same logits as the full `Coca::forward`.

mod common;

use candle_core::{DType, Device, Tensor};
use coca_generate::DecodeSession;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Step through `rows` (one per image) and compare every step's logits with teacher-forced `forward`.
fn check_model(name: &str, rows: &[Vec<u32>], prefill: usize) -> f32 {
    let (model, images) = common::model_and_images(name);
    let n = rows.len();
    let images = images.narrow(0, 0, n).unwrap();
    let enc = model.encode_image(&images).unwrap();
    let len = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (n, len), &Device::Cpu).unwrap();
    // forward's logits[:, i] predict token i + 1 from tokens 0..=i.
    let full = model.forward_with_image(&enc, &ids).unwrap().logits;
    let mut session = DecodeSession::new(&model, &enc.tokens, 1).unwrap();
    let mut worst = 0f32;
    let first: Vec<Vec<u32>> = rows.iter().map(|r| r[..prefill].to_vec()).collect();
    let mut logits = session.extend(&first).unwrap();
    for pos in prefill - 1..len - 1 {
        let expected = full
            .narrow(1, pos, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let got = logits.to_vec2::<f32>().unwrap();
        for (g, e) in got.iter().zip(&expected) {
            worst = worst.max(max_abs_diff(g, e));
        }
        if pos + 1 < len - 1 {
            let next: Vec<Vec<u32>> = rows.iter().map(|r| vec![r[pos + 1]]).collect();
            logits = session.extend(&next).unwrap();
        }
    }
    assert_eq!(session.len(), len - 1);
    worst
}

/// Rows with the pad id 0 inside (the legacy mask hides the key after it) and without.
fn rows_for(vocab: u32) -> Vec<Vec<u32>> {
    let sot = vocab - 2;
    vec![
        vec![sot, 5, 9, 13, 2, 7, 1, 3, 8, 21, 4, 6],
        vec![sot, 5, 0, 13, 0, 0, 1, 3, 0, 21, 4, 6],
        vec![sot, 0, 9, 13, 2, 7, 1, 3, 8, 21, 0, 6],
        vec![sot, 17, 9, 1, 2, 0, 1, 3, 8, 21, 4, 0],
    ]
}

#[test]
fn cached_step_logits_match_forward_within_1e_4() {
    for name in common::MODELS {
        let (model, _) = common::model_and_images(name);
        let vocab = model.text().vocab_size() as u32;
        for prefill in [1, 4] {
            let worst = check_model(name, &rows_for(vocab), prefill);
            eprintln!("{name} prefill {prefill}: worst |Δlogit| = {worst:.2e}");
            assert!(worst <= 1e-4, "{name}: cached logits differ by {worst}");
        }
    }
}

#[test]
fn rows_leaving_and_reordering_keep_each_rows_cache() {
    let (model, images) = common::model_and_images("tiny_cascade");
    let vocab = model.text().vocab_size() as u32;
    let rows = rows_for(vocab);
    let enc = model.encode_image(&images).unwrap();
    let mut session = DecodeSession::new(&model, &enc.tokens, 1).unwrap();
    let first: Vec<Vec<u32>> = rows.iter().map(|r| r[..3].to_vec()).collect();
    session.extend(&first).unwrap();
    // Keep images 3 and 1, in that order, then take one more step.
    session.select(&[3, 1], &[3, 1]).unwrap();
    let got = session
        .extend(&[vec![rows[3][3]], vec![rows[1][3]]])
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ids: Vec<u32> = [&rows[3][..5], &rows[1][..5]].concat();
    let ids = Tensor::from_vec(ids, (2, 5), &Device::Cpu).unwrap();
    let idx = Tensor::new(&[3u32, 1], &Device::Cpu).unwrap();
    let sub = coca_model::ImageEncoding {
        embedding: enc.embedding.index_select(&idx, 0).unwrap(),
        tokens: enc.tokens.index_select(&idx, 0).unwrap(),
    };
    let full = model.forward_with_image(&sub, &ids).unwrap().logits;
    let expected = full.narrow(1, 3, 1).unwrap().squeeze(1).unwrap();
    let expected = expected.to_vec2::<f32>().unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!(max_abs_diff(g, e) <= 1e-4);
    }
    assert_eq!(session.history()[0], rows[3][..4].to_vec());
}
