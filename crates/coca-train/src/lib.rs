//! Training CoCa: open_clip's objective, optimiser, schedules and gradient accumulation, with checkpoints that
//! resume exactly.
//!
//! - [`init`]: from-scratch initial values, tensor by tensor as open_clip initialises them;
//! - [`params`]: open_clip's weight-decay exclusion and tower locking;
//! - [`optim`]: AdamW as PyTorch computes it, gradient-norm clipping;
//! - [`schedule`]: warmup + cosine / constant / const-cooldown / linear learning rates;
//! - [`step`]: gradients of one step, with `--accum-freq` semantics;
//! - [`checkpoint`]: atomic checkpoint directories and `--resume latest`;
//! - [`trainer`]: the loop tying them together, with hooks for progress, metrics and validation;
//! - [`distributed`]: data parallelism over a [`coca_dist::Communicator`]: open_clip's gathered contrastive
//!   loss (`--local-loss`, `--gather-with-grad`) and averaged gradients.

pub mod checkpoint;
pub mod distributed;
pub mod error;
pub mod init;
pub mod optim;
pub mod params;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use distributed::DistOptions;
pub use error::TrainError;
pub use optim::{AdamW, AdamWConfig};
pub use params::Locks;
pub use schedule::{Schedule, ScheduleKind};
pub use step::{MicroBatch, StepLosses};
pub use trainer::{
    Start, StepReport, TrainData, TrainHooks, TrainOptions, TrainPrecision, Trainer,
};
