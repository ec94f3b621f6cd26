//! Captions equal open_clip 3.3.0's `CoCa.generate` token for token, on the committed tiny models
//! (references: fixtures/generation/*.json, from scripts/parity/make_generation_fixtures.py).

mod common;

use coca_generate::{
    generate_from_tokens, BeamConfig, BeamScoring, GenerationConfig, SpecialTokens, Strategy,
};
use serde_json::Value;

fn config_for(case: &Value, sot: u32, pad: u32) -> GenerationConfig {
    let int = |k: &str| case[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    let strategy = match case["strategy"].as_str().unwrap() {
        "greedy" => Strategy::Greedy,
        "beam" => Strategy::Beam(BeamConfig {
            num_beams: int("num_beams"),
            num_beam_groups: int("num_beam_groups"),
            length_penalty: 1.0,
            scoring: BeamScoring::RawLogits,
        }),
        other => panic!("unknown strategy {other}"),
    };
    // open_clip prompts include the start token; ours start after it.
    let prompt = case["prompt"]
        .as_array()
        .map(|p| p[1..].iter().map(|t| t.as_u64().unwrap() as u32).collect())
        .unwrap_or_default();
    GenerationConfig {
        strategy,
        max_tokens: int("seq_len"),
        min_tokens_before_eos: int("min_seq_len"),
        repetition_penalty: case["repetition_penalty"].as_f64().unwrap() as f32,
        prompt,
        special: SpecialTokens {
            sot,
            eos: int("eos") as u32,
            pad,
        },
        seed: 0,
        pad_ends_caption: true,
    }
}

#[test]
fn greedy_and_beam_search_match_open_clip_on_every_tiny_model() {
    let mut checked = 0;
    for name in common::MODELS {
        let (model, images) = common::model_and_images(name);
        let refs = common::references(name);
        let sot = refs["sot"].as_u64().unwrap() as u32;
        let pad = refs["pad"].as_u64().unwrap() as u32;
        let encoding = model.encode_image(&images).unwrap();
        for case in refs["cases"].as_array().unwrap() {
            let case_name = case["name"].as_str().unwrap();
            let cfg = config_for(case, sot, pad);
            let n = case["n_images"].as_u64().unwrap() as usize;
            let tokens = encoding.tokens.narrow(0, 0, n).unwrap();
            let captions = generate_from_tokens(&model, &tokens, &cfg)
                .unwrap_or_else(|e| panic!("{name}/{case_name}: {e}"));
            let expected = case["output"].as_array().unwrap();
            assert_eq!(captions.len(), expected.len(), "{name}/{case_name}");
            for (i, (cap, row)) in captions.iter().zip(expected).enumerate() {
                let row: Vec<u32> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect();
                // open_clip pads the rows of a batch to one length; the padding is not part of a caption.
                let (head, tail) = row.split_at(cap.tokens.len().min(row.len()));
                assert!(
                    head == cap.tokens.as_slice() && tail.iter().all(|&t| t == pad),
                    "{name}/{case_name} image {i}:\n coca      {:?}\n open_clip {:?}",
                    cap.tokens,
                    row
                );
                assert!(cap.log_prob.is_finite() && cap.log_prob < 0.0);
                checked += 1;
            }
        }
    }
    assert!(checked >= 4 * 13 * 3, "only {checked} captions compared");
}

#[test]
fn open_clip_groups_equal_one_group_of_their_size() {
    // 6 beams in 3 groups (no diversity penalty) is 3 copies of a 2-beam search.
    let (model, images) = common::model_and_images("tiny_legacy");
    let tokens = model.encode_image(&images).unwrap().tokens;
    let vocab = model.text().vocab_size();
    let grouped = GenerationConfig::open_clip(vocab);
    let mut single = grouped.clone();
    single.strategy = Strategy::Beam(BeamConfig {
        num_beams: 2,
        num_beam_groups: 1,
        length_penalty: 1.0,
        scoring: BeamScoring::RawLogits,
    });
    let a = generate_from_tokens(&model, &tokens, &grouped).unwrap();
    let b = generate_from_tokens(&model, &tokens, &single).unwrap();
    assert_eq!(a, b);
}
