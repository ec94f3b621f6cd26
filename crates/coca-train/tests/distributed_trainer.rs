//! The Trainer on two ranks (threads with an in-process communicator) against one process with the doubled
//! batch: same losses and weights after several AdamW steps with `--gather-with-grad`, rank 0 alone writes
//! checkpoints, ranks start from rank 0's weights, and ranks with different settings refuse to start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use coca_checkpoint::Checkpoint;
use coca_dist::LocalComm;
use coca_model::{Coca, CocaConfig};
use coca_train::checkpoint::MODEL_FILE;
use coca_train::distributed::rank_positions;
use coca_train::{
    AdamWConfig, DistOptions, Locks, MicroBatch, Schedule, ScheduleKind, Start, StepReport,
    TrainData, TrainError, TrainHooks, TrainOptions, Trainer,
};

const STEPS: u64 = 3;

fn config() -> CocaConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/tiny_legacy");
    CocaConfig::from_file(&dir.join("config.json")).unwrap()
}

fn options(seed: u64, steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        accum_freq: 1,
        schedule: Schedule {
            kind: ScheduleKind::Const,
            base_lr: 1e-3,
            warmup: 0,
            total: steps,
            cooldown_steps: 0,
        },
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.1,
        },
        grad_clip_norm: Some(1.0),
        caption_loss_weight: 2.0,
        contrastive_loss_weight: 1.0,
        locks: Locks::default(),
        save_every: 0,
        keep_checkpoints: 0,
        val_every: 0,
        seed,
        precision: Default::default(),
        grad_checkpointing: false,
    }
}

/// Global batch `step` of 4 samples; rows 0–1 and 2–3 have the same number of caption tokens.
fn global_batch(step: usize) -> MicroBatch {
    let n = 4;
    let pixels: Vec<f32> = (0..n * 3 * 48 * 48)
        .map(|i| ((i * 7919 + step * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect();
    let words = [2usize, 5, 5, 2];
    let len = 10;
    let ids: Vec<u32> = (0..n)
        .flat_map(|b| {
            let w = words[b];
            (0..len).map(move |i| match i {
                0 => 254,
                i if i <= w => ((i * 31 + b * 17 + step * 7) % 250 + 1) as u32,
                i if i == w + 1 => 255,
                _ => 0,
            })
        })
        .collect();
    MicroBatch {
        images: Tensor::from_vec(pixels, (n, 3, 48, 48), &Device::Cpu).unwrap(),
        ids: Tensor::from_vec(ids, (n, len), &Device::Cpu).unwrap(),
    }
}

/// Rows `rows` of every global batch.
struct Share {
    rows: std::ops::Range<usize>,
    next: usize,
}

impl TrainData for Share {
    fn next_micro_batch(&mut self) -> Result<MicroBatch, TrainError> {
        let b = global_batch(self.next);
        self.next += 1;
        let n = self.rows.len();
        Ok(MicroBatch {
            images: b.images.narrow(0, self.rows.start, n)?,
            ids: b.ids.narrow(0, self.rows.start, n)?,
        })
    }
    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "next": self.next, "first_row": self.rows.start })
    }
}

#[derive(Default)]
struct Losses(Vec<f64>);

impl TrainHooks for Losses {
    fn on_step(&mut self, report: &StepReport) -> Result<(), TrainError> {
        self.0.push(report.losses.total);
        Ok(())
    }
    fn validate(&mut self, _: &Coca, _: u64) -> Result<BTreeMap<String, f64>, TrainError> {
        Ok(BTreeMap::new())
    }
}

fn final_weights(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let path = run
        .join(format!("checkpoints/step_{STEPS:08}"))
        .join(MODEL_FILE);
    let ckpt = Checkpoint::open(&path).unwrap();
    ckpt.names()
        .map(|n| {
            let t = ckpt.get(n, DType::F32, &Device::Cpu).unwrap();
            (
                n.to_string(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

fn run_single(dir: &Path) -> Vec<f64> {
    let mut trainer = Trainer::new(
        &config(),
        Start::Scratch,
        dir,
        options(0, STEPS),
        &Device::Cpu,
    )
    .unwrap();
    let mut hooks = Losses::default();
    trainer
        .train(
            &mut Share {
                rows: 0..4,
                next: 0,
            },
            &mut hooks,
        )
        .unwrap();
    hooks.0
}

/// Two ranks; rank `r` starts from seed `r` (rank 0's weights must win) and writes into `dirs[r]`.
fn run_two(dirs: &[PathBuf; 2], steps: [u64; 2]) -> Vec<Result<Vec<f64>, TrainError>> {
    let options_for = |rank: usize| options(rank as u64, steps[rank]);
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalComm::group(2)
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                let (dir, opts) = (&dirs[rank], options_for(rank));
                s.spawn(move || {
                    let dist = DistOptions {
                        gather_with_grad: true,
                        ..DistOptions::default()
                    };
                    let mut trainer =
                        Trainer::new(&config(), Start::Scratch, dir, opts, &Device::Cpu)?
                            .distributed(Box::new(comm), dist)?;
                    assert_eq!((trainer.rank(), trainer.world_size()), (rank, 2));
                    let mut hooks = Losses::default();
                    let mut data = Share {
                        rows: 2 * rank..2 * rank + 2,
                        next: 0,
                    };
                    trainer.train(&mut data, &mut hooks)?;
                    Ok(hooks.0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_ranks_train_like_one_process_with_the_doubled_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let single_dir = tmp.path().join("single");
    let single = run_single(&single_dir);
    let dirs = [tmp.path().join("rank0"), tmp.path().join("rank1")];
    let results = run_two(&dirs, [STEPS, STEPS]);
    let ranks: Vec<Vec<f64>> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(ranks[0], ranks[1], "ranks report the same (mean) losses");
    assert_eq!(ranks[0].len(), STEPS as usize);
    for (d, s) in ranks[0].iter().zip(&single) {
        assert!((d - s).abs() < 1e-5 * s, "distributed {d} vs single {s}");
    }
    // Rank 0 alone wrote a checkpoint.
    assert!(!dirs[1].join("checkpoints").exists());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dirs[0].join(format!("checkpoints/step_{STEPS:08}/state.json")))
            .unwrap(),
    )
    .unwrap();
    let (world, positions) = rank_positions(&state["data"]).expect("per-rank positions");
    assert_eq!(world, 2);
    assert_eq!(
        positions[1],
        serde_json::json!({"next": STEPS, "first_row": 2})
    );
    // The weights after three AdamW steps match those of one process (rank 1 started from other weights,
    // so this also shows rank 0's were broadcast).
    let (a, b) = (final_weights(&dirs[0]), final_weights(&single_dir));
    let mut worst = 0f32;
    for (name, x) in &a {
        for (u, v) in x.iter().zip(&b[name]) {
            worst = worst.max((u - v).abs());
        }
    }
    // Adam normalises each update to about lr = 1e-3; rounding in the gradients moves weights far less.
    assert!(worst < 1e-6, "largest weight difference {worst}");
}

#[test]
fn ranks_with_different_settings_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    for result in run_two(&dirs, [STEPS, STEPS + 1]) {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("rank 1 does not match rank 0: steps is 4 there but 3 on rank 0"),
            "{err}"
        );
    }
}
