//! The cancel check of `generate_from_tokens_until`: asked once per decoding step, it ends a search early
//! with `GenerateError::Cancelled`, and a check that never fires changes nothing.

mod common;

use std::cell::Cell;

use coca_generate::{
    generate_from_tokens, generate_from_tokens_until, GenerateError, GenerationConfig,
};

#[test]
fn cancel_stops_every_strategy_at_a_step_and_never_changes_results() {
    let (model, images) = common::model_and_images("tiny_legacy");
    let tokens = model.encode_image(&images).unwrap().tokens;
    let vocab = model.text().vocab_size();
    for cfg in [
        GenerationConfig::open_clip(vocab),
        GenerationConfig::greedy(vocab),
    ] {
        let asked = Cell::new(0usize);
        let err = generate_from_tokens_until(&model, &tokens, &cfg, &|| {
            asked.set(asked.get() + 1);
            true
        })
        .unwrap_err();
        assert!(matches!(err, GenerateError::Cancelled), "{err}");
        assert_eq!(asked.get(), 1, "stopped at the first step");

        let free = generate_from_tokens(&model, &tokens, &cfg).unwrap();
        let steps = Cell::new(0usize);
        let never = generate_from_tokens_until(&model, &tokens, &cfg, &|| {
            steps.set(steps.get() + 1);
            false
        })
        .unwrap();
        let longest = free
            .iter()
            .map(|c| c.tokens.len() - c.prompt_len)
            .max()
            .unwrap();
        assert!(
            steps.get() + 1 >= longest,
            "asked once per step ({} asks, {longest} tokens)",
            steps.get()
        );
        let toks =
            |c: &[coca_generate::Caption]| c.iter().map(|c| c.tokens.clone()).collect::<Vec<_>>();
        assert_eq!(toks(&free), toks(&never));
    }
}
