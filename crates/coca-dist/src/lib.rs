//! Collectives for coca's distributed data-parallel training.
//!
//! - [`Communicator`]: rank, world size, all-reduce (sum), all-gather (concatenate along dim 0), broadcast
//!   from rank 0 and barrier, on host `f32` slices and on [`candle_core::Tensor`]s (a default path through
//!   host memory that a device backend such as NCCL overrides);
//! - [`BackgroundComm`]: any backend on its own thread, so that gradient all-reduces started with
//!   [`Communicator::start_all_reduce_sum`] overlap with the backward pass;
//! - [`Single`]: one process, every collective a no-op;
//! - [`TcpComm`]: processes on one or many machines over TCP (`std::net`), rendezvous at
//!   `MASTER_ADDR:MASTER_PORT`, a deterministic star all-reduce (see [`tcp`] for the design and its cost);
//! - [`LocalComm`]: ranks as threads of one process, for tests;
//! - `NcclComm` (feature `nccl`): NVIDIA's NCCL over the GPUs' memory, bootstrapped over TCP;
//! - [`DistEnv`]: this process's rank and the master address from torchrun's or Slurm's variables.
//!
//! Every backend sums in rank order and hands every rank the same bytes, so ranks that start from the same
//! weights and apply the same averaged gradients stay bit-identical.

pub mod background;
pub mod comm;
pub mod env;
pub mod error;
pub mod local;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod single;
pub mod tcp;

pub use background::BackgroundComm;
pub use comm::{Communicator, PendingTensor};
pub use env::{DistEnv, Launcher};
pub use error::DistError;
pub use local::LocalComm;
#[cfg(feature = "nccl")]
pub use nccl::NcclComm;
pub use single::Single;
pub use tcp::{TcpComm, TcpOptions};
