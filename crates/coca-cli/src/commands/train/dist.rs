//! The distributed side of `coca train`: which collectives backend, joining the other ranks, and the silent
//! hooks of ranks other than 0.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use coca_dist::{Communicator, DistEnv, TcpComm, TcpOptions};
use coca_model::Coca;
use coca_pipeline::DeviceSpec;
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
    if backend == DistBackend::Nccl && !cfg!(feature = "nccl") {
        bail!(
            "--dist-backend nccl needs coca built with `--features nccl` (NVIDIA GPUs; \
             scripts/cuda-build.sh --features nccl); this build has --dist-backend tcp"
        );
    }
    Ok(())
}

/// `--device` of `coca train`: a device, or a bare `cuda`, which in a distributed run means `cuda:LOCAL_RANK`
/// (one GPU per rank, as torchrun's scripts do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainDevice {
    /// `cpu` or `cuda:N`, the same on every rank.
    Fixed(DeviceSpec),
    /// A bare `cuda`: the GPU of the rank's LOCAL_RANK (the first GPU outside a distributed run).
    RankGpu,
}

impl TrainDevice {
    /// The device of this rank.
    pub fn for_rank(self, env: &DistEnv) -> DeviceSpec {
        match self {
            Self::Fixed(device) => device,
            Self::RankGpu if env.is_distributed() => DeviceSpec::Cuda(env.local_rank),
            Self::RankGpu => DeviceSpec::Cuda(0),
        }
    }
}

impl std::str::FromStr for TrainDevice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "cuda" {
            Ok(Self::RankGpu)
        } else {
            s.parse().map(Self::Fixed)
        }
    }
}

/// Join the run `env` describes: `None` for a single process. NCCL ranks first meet over TCP at
/// `MASTER_ADDR:MASTER_PORT` to share NCCL's unique id.
pub fn connect(
    env: &DistEnv,
    backend: DistBackend,
    timeout_s: u64,
    device: &candle_core::Device,
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
    let tcp = TcpComm::connect_with(env, options)?;
    match backend {
        DistBackend::Tcp => Ok(Some(Box::new(tcp))),
        DistBackend::Nccl => nccl(device, &tcp),
    }
}

#[cfg(feature = "nccl")]
fn nccl(
    device: &candle_core::Device,
    bootstrap: &TcpComm,
) -> Result<Option<Box<dyn Communicator>>> {
    Ok(Some(Box::new(coca_dist::NcclComm::connect(
        device, bootstrap,
    )?)))
}

#[cfg(not(feature = "nccl"))]
fn nccl(
    _device: &candle_core::Device,
    _bootstrap: &TcpComm,
) -> Result<Option<Box<dyn Communicator>>> {
    // check_backend refused it already.
    bail!("this build has no NCCL backend")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cuda_is_the_gpu_of_the_local_rank() {
        let ranked = DistEnv {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            ..DistEnv::single()
        };
        let device = |text: &str, env: &DistEnv| text.parse::<TrainDevice>().unwrap().for_rank(env);
        assert_eq!(device("cuda", &ranked), DeviceSpec::Cuda(1));
        assert_eq!(device("cuda", &DistEnv::single()), DeviceSpec::Cuda(0));
        assert_eq!(device("cuda:2", &ranked), DeviceSpec::Cuda(2));
        assert_eq!(device("cpu", &ranked), DeviceSpec::Cpu);
        let err = "tpu".parse::<TrainDevice>().unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
    }
}
