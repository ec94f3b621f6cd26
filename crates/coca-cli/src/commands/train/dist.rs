//! The distributed side of `coca train`: which collectives backend, joining the other ranks, and the silent
//! hooks of ranks other than 0.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use coca_dist::{Communicator, DistEnv, TcpComm, TcpOptions};
use coca_model::Coca;
use coca_train::{StepReport, TrainError, TrainHooks};

/// `--dist-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistBackend {
    /// Collectives over TCP sockets through rank 0 (CPU training; any number of machines).
    Tcp,
    /// NVIDIA's NCCL over GPU memory (builds with the `cuda` feature).
    Nccl,
}

/// Refuse a backend this build does not have, before any work starts.
pub fn check_backend(backend: DistBackend) -> Result<()> {
    if backend == DistBackend::Nccl {
        if cfg!(feature = "cuda") {
            bail!(
                "--dist-backend nccl is not implemented in this build yet; use --dist-backend tcp"
            );
        }
        bail!(
            "--dist-backend nccl needs coca built with `--features cuda` (NVIDIA GPUs); this build has \
             --dist-backend tcp"
        );
    }
    Ok(())
}

/// Join the run `env` describes: `None` for a single process.
pub fn connect(
    env: &DistEnv,
    backend: DistBackend,
    timeout_s: u64,
) -> Result<Option<Box<dyn Communicator>>> {
    check_backend(backend)?;
    if !env.is_distributed() {
        return Ok(None);
    }
    let timeout = Duration::from_secs(timeout_s.max(1));
    let options = TcpOptions {
        timeout,
        connect_timeout: timeout,
    };
    tracing::info!(
        "rank {} of {}: joining rank 0 at {}",
        env.rank,
        env.world_size,
        env.master()
    );
    Ok(Some(Box::new(TcpComm::connect_with(env, options)?)))
}

/// The hooks of ranks other than 0: no output, no files.
pub struct QuietHooks;

impl TrainHooks for QuietHooks {
    fn on_step(&mut self, _report: &StepReport) -> Result<(), TrainError> {
        Ok(())
    }

    fn validate(&mut self, _model: &Coca, _step: u64) -> Result<BTreeMap<String, f64>, TrainError> {
        Ok(BTreeMap::new())
    }
}
