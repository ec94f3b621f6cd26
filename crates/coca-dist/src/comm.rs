//! The [`Communicator`] trait: the collectives data-parallel training needs, on host slices and on tensors.

use candle_core::{DType, Tensor};

use crate::error::DistError;

/// Collectives among the `world_size` processes (ranks) of a run.
///
/// Every rank must call the same collectives in the same order with buffers of the same size (all-gather: the
/// same size per rank); a backend reports a rank that is out of step as [`DistError::Mismatch`] where it can.
/// Results are **bit-identical on every rank**: sums are taken in one fixed order (rank 0, 1, 2, ...), so
/// ranks that apply the same update to the same weights stay in lockstep.
///
/// Backends implement the four slice operations; the tensor methods have a default that copies through
/// host memory as f32, which a device backend (NCCL over device buffers) overrides to stay on the device.
pub trait Communicator: Send {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// A short name of the backend for messages (`single`, `tcp`, `local`).
    fn backend(&self) -> &'static str;

    /// Whether a collective holds the calling thread while the data moves (the host backends), so that
    /// running the collectives on a [`crate::BackgroundComm`] thread frees the caller to compute meanwhile.
    /// A backend that only enqueues work on a GPU stream says `false`: it must be called from the thread
    /// whose stream computes, or its reads would race with the kernels that write the gradients.
    fn blocks_while_communicating(&self) -> bool {
        true
    }

    /// Replace `data` on every rank by the element-wise sum over ranks (same length everywhere).
    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError>;

    /// The ranks' `local` slices concatenated in rank order (every rank passes the same length).
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError>;

    /// Overwrite `data` on every rank with rank 0's (same length everywhere).
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError>;

    /// Return once every rank has called it.
    fn barrier(&self) -> Result<(), DistError>;

    /// Every rank's bytes, in rank order; lengths may differ. For small objects (a data position, a
    /// fingerprint of the settings); the default sends the lengths, then each byte as an f32.
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let too_long = || {
            DistError::Usage(format!(
                "all_gather_bytes: {} bytes, more than 2^24",
                local.len()
            ))
        };
        if local.len() > 1 << 24 {
            return Err(too_long());
        }
        // Lengths up to 2^24 are exact in f32.
        let lengths = self.all_gather_f32(&[local.len() as f32])?;
        let longest = lengths.iter().fold(0f32, |a, &b| a.max(b)) as usize;
        let mut padded: Vec<f32> = local.iter().map(|&b| b as f32).collect();
        padded.resize(longest, 0.0);
        let all = self.all_gather_f32(&padded)?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(r, &len)| {
                all[r * longest..r * longest + len as usize]
                    .iter()
                    .map(|&v| v as u8)
                    .collect()
            })
            .collect())
    }

    /// [`Communicator::all_reduce_sum_f32`] of an f32 tensor; the result has its shape and device.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let (mut host, dims) = to_host(t, "all_reduce_sum")?;
        self.all_reduce_sum_f32(&mut host)?;
        from_host(host, &dims, t, "all_reduce_sum")
    }

    /// Start [`Communicator::all_reduce_sum`] of `t` and return before it completes where the backend can
    /// ([`crate::BackgroundComm`] runs it on its own thread), so the caller computes meanwhile; the default
    /// runs it to completion first. Collectives still take effect in the order they were called.
    fn start_all_reduce_sum(&self, t: &Tensor) -> Result<PendingTensor, DistError> {
        self.all_reduce_sum(t).map(PendingTensor::ready)
    }

    /// [`Communicator::all_gather_f32`] of an f32 tensor: the ranks' tensors concatenated along dim 0 (every
    /// rank passes the same shape).
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let (host, mut dims) = to_host(t, "all_gather")?;
        let all = self.all_gather_f32(&host)?;
        match dims.first_mut() {
            Some(first) => *first *= self.world_size(),
            None => {
                return Err(DistError::Usage(
                    "all_gather: a scalar has no dim 0 to concatenate along".into(),
                ))
            }
        }
        from_host(all, &dims, t, "all_gather")
    }

    /// [`Communicator::broadcast_f32`] of an f32 tensor: rank 0's values everywhere.
    fn broadcast(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let (mut host, dims) = to_host(t, "broadcast")?;
        self.broadcast_f32(&mut host)?;
        from_host(host, &dims, t, "broadcast")
    }
}

/// The result of a collective that may still be running: [`PendingTensor::wait`] blocks until it is there.
#[derive(Debug)]
pub struct PendingTensor(Pending);

#[derive(Debug)]
enum Pending {
    Ready(Result<Tensor, DistError>),
    Running(std::sync::mpsc::Receiver<Result<Tensor, DistError>>),
}

impl PendingTensor {
    /// A result that is already complete.
    pub fn ready(t: Tensor) -> Self {
        Self(Pending::Ready(Ok(t)))
    }

    /// A result that arrives on `receiver`; a closed channel means the sender stopped without answering.
    pub(crate) fn running(receiver: std::sync::mpsc::Receiver<Result<Tensor, DistError>>) -> Self {
        Self(Pending::Running(receiver))
    }

    /// The tensor, once the collective has completed on this rank.
    pub fn wait(self) -> Result<Tensor, DistError> {
        match self.0 {
            Pending::Ready(result) => result,
            Pending::Running(receiver) => receiver.recv().unwrap_or_else(|_| {
                Err(DistError::Usage(
                    "the communication thread stopped before finishing a collective".into(),
                ))
            }),
        }
    }
}

fn tensor_error(op: &str) -> impl Fn(candle_core::Error) -> DistError + '_ {
    move |source| DistError::Tensor {
        op: op.to_string(),
        source,
    }
}

/// The values of an f32 tensor in host memory, with its shape.
fn to_host(t: &Tensor, op: &str) -> Result<(Vec<f32>, Vec<usize>), DistError> {
    if t.dtype() != DType::F32 {
        return Err(DistError::Usage(format!(
            "{op}: the host path moves f32 tensors only, got {:?}",
            t.dtype()
        )));
    }
    let values = t
        .flatten_all()
        .and_then(|f| f.to_vec1::<f32>())
        .map_err(tensor_error(op))?;
    Ok((values, t.dims().to_vec()))
}

/// Host values back into a tensor of `dims` on `like`'s device.
fn from_host(
    values: Vec<f32>,
    dims: &[usize],
    like: &Tensor,
    op: &str,
) -> Result<Tensor, DistError> {
    Tensor::from_vec(values, dims, like.device()).map_err(tensor_error(op))
}
