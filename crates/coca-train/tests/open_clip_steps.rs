//! coca's optimiser steps against open_clip_train's own `train_one_epoch` (fixtures/train, written by
//! scripts/parity/make_train_fixtures.py): same loss parts at every step and the same weights afterwards, with
//! weight decay groups, warmup + cosine, gradient clipping, the logit-scale clamp and `--accum-freq 2`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use coca_checkpoint::Checkpoint;
use coca_model::{Coca, CocaConfig};
use coca_train::checkpoint::MODEL_FILE;
use coca_train::{
    AdamWConfig, Locks, MicroBatch, Schedule, ScheduleKind, Start, StepReport, TrainData,
    TrainError, TrainHooks, TrainOptions, Trainer,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Fixed {
    batches: Vec<MicroBatch>,
    next: usize,
}

impl TrainData for Fixed {
    fn next_micro_batch(&mut self) -> Result<MicroBatch, TrainError> {
        let b = self.batches[self.next].clone();
        self.next += 1;
        Ok(b)
    }
    fn position(&self) -> serde_json::Value {
        serde_json::json!(self.next)
    }
}

#[derive(Default)]
struct Record(Vec<StepReport>);

impl TrainHooks for Record {
    fn on_step(&mut self, report: &StepReport) -> Result<(), TrainError> {
        self.0.push(*report);
        Ok(())
    }
    fn validate(&mut self, _: &Coca, _: u64) -> Result<BTreeMap<String, f64>, TrainError> {
        Ok(BTreeMap::new())
    }
}

fn options(meta: &serde_json::Value, accum: usize) -> TrainOptions {
    let h = &meta["hparams"];
    let f = |k: &str| h[k].as_f64().unwrap();
    TrainOptions {
        steps: meta["steps"].as_u64().unwrap(),
        accum_freq: accum,
        schedule: Schedule {
            kind: ScheduleKind::Cosine,
            base_lr: f("lr"),
            warmup: f("warmup") as u64,
            total: meta["steps"].as_u64().unwrap(),
            cooldown_steps: 0,
        },
        adamw: AdamWConfig {
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
            weight_decay: f("wd"),
        },
        grad_clip_norm: Some(f("grad_clip_norm")),
        caption_loss_weight: f("caption_loss_weight"),
        contrastive_loss_weight: f("contrastive_loss_weight"),
        locks: Locks::default(),
        save_every: 0,
        keep_checkpoints: 1,
        val_every: 0,
        seed: 0,
        precision: Default::default(),
    }
}

fn run_case(case: &str) {
    let dir = root().join("fixtures/train");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("steps.json")).unwrap()).unwrap();
    let case_meta = &meta["cases"][case];
    let accum = case_meta["accum_freq"].as_u64().unwrap() as usize;
    let micro = case_meta["micro_batch"].as_u64().unwrap() as usize;
    let model_dir = root().join("fixtures/parity/tiny_legacy");
    let (cfg, _) = CocaConfig::resolve(model_dir.join("config.json").to_str().unwrap()).unwrap();
    let io = Checkpoint::open(dir.join("steps.safetensors")).unwrap();
    let dev = Device::Cpu;
    let images = io.get("images", DType::F32, &dev).unwrap();
    let texts = io
        .get("texts", DType::I64, &dev)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    let n = images.dim(0).unwrap();
    let batches = (0..n / micro)
        .map(|i| MicroBatch {
            images: images.narrow(0, i * micro, micro).unwrap(),
            ids: texts.narrow(0, i * micro, micro).unwrap(),
        })
        .collect();
    let run = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(
        &cfg,
        Start::Pretrained(&model_dir.join("open_clip_model.safetensors")),
        run.path(),
        options(&meta, accum),
        &dev,
    )
    .unwrap();
    let mut hooks = Record::default();
    trainer
        .train(&mut Fixed { batches, next: 0 }, &mut hooks)
        .unwrap();

    let expected = case_meta["losses"].as_array().unwrap();
    assert_eq!(hooks.0.len(), expected.len());
    for (got, want) in hooks.0.iter().zip(expected) {
        let con = want["contrastive_loss"].as_f64().unwrap();
        let cap = want["caption_loss"].as_f64().unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
        assert!(
            rel(got.losses.contrastive, con) < 1e-5,
            "step {} contrastive {} vs {con}",
            got.step,
            got.losses.contrastive
        );
        assert!(
            rel(got.losses.caption, cap) < 1e-5,
            "step {} caption {} vs {cap}",
            got.step,
            got.losses.caption
        );
    }

    // The saved final weights equal open_clip's after the same steps.
    let saved = Checkpoint::open(
        coca_train::checkpoint::latest_checkpoint(run.path())
            .unwrap()
            .unwrap()
            .join(MODEL_FILE),
    )
    .unwrap();
    let start = Checkpoint::open(model_dir.join("open_clip_model.safetensors")).unwrap();
    let (mut worst, mut worst_name, mut moved) = (0f32, String::new(), 0f32);
    for name in saved.names() {
        let got = saved.get(name, DType::F32, &dev).unwrap();
        let want = io.get(&format!("{case}.{name}"), DType::F32, &dev).unwrap();
        let init = start.get(name, DType::F32, &dev).unwrap();
        let diff = max_abs(&got, &want);
        moved = moved.max(max_abs(&want, &init));
        if diff > worst {
            worst = diff;
            worst_name = name.to_string();
        }
    }
    eprintln!("{case}: worst weight difference {worst:e} ({worst_name}); largest update {moved:e}");
    assert!(moved > 1e-3, "the reference must actually move the weights");
    assert!(worst < 2e-5, "{case}: {worst_name} differs by {worst}");
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn plain_steps_equal_open_clip_train_one_epoch() {
    run_case("plain");
}

#[test]
fn accumulated_steps_equal_open_clip_accum_freq() {
    run_case("accum2");
}
