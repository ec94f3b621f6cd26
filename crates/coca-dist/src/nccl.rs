//! NCCL over the GPUs' own memory (cargo feature `nccl`, which implies candle's CUDA backend).
//!
//! The ranks first meet over a host [`Communicator`] (the TCP backend at `MASTER_ADDR:MASTER_PORT`): rank 0
//! creates NCCL's unique id and every rank receives it that way; NCCL then connects the GPUs itself (NVLink,
//! InfiniBand or sockets, as it chooses). Tensor collectives run on the tensors' device buffers in candle's
//! stream, so gradients never leave the GPU; the host-slice operations of the trait copy through the GPU.
//!
//! NCCL hands every rank the same bits for an all-reduce (each chunk is reduced once and then forwarded), but
//! not in rank order: results match [`crate::TcpComm`]'s up to the rounding of a different summation order.
//!
//! This backend compiles in the `cuda` build and is exercised only on machines with NVIDIA GPUs; the logic
//! above it (gathered losses, gradient averaging, sharding) is tested with the CPU backends.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Storage, Tensor};
use std::sync::Arc;

use crate::comm::Communicator;
use crate::error::DistError;

/// A communicator of NCCL ranks, one GPU each.
pub struct NcclComm {
    comm: OwnedComm,
    device: CudaDevice,
    rank: usize,
    world_size: usize,
}

/// NCCL's communicator handle. It is a plain pointer that NCCL lets any thread use, one call at a time; coca
/// owns it exclusively and [`Communicator`] is `Send` but not `Sync`, so calls never overlap.
struct OwnedComm(Comm);

// SAFETY: see `OwnedComm`: moved between threads, never shared.
unsafe impl Send for OwnedComm {}

fn nccl_error(op: &str, e: impl std::fmt::Debug) -> DistError {
    DistError::Usage(format!("nccl {op}: {e:?}"))
}

impl NcclComm {
    /// Connect the ranks of `bootstrap` (same ranks, same world size) over NCCL, each on its `device`
    /// (`cuda:LOCAL_RANK` under a launcher).
    pub fn connect(device: &Device, bootstrap: &dyn Communicator) -> Result<Self, DistError> {
        let Device::Cuda(cuda) = device else {
            return Err(DistError::Usage(format!(
                "the nccl backend needs a CUDA device, got {device:?}"
            )));
        };
        let (rank, world_size) = (bootstrap.rank(), bootstrap.world_size());
        let local = if rank == 0 {
            let id = Id::new().map_err(|e| nccl_error("unique id", e))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        let shared = bootstrap.all_gather_bytes(&local)?;
        let bytes = &shared[0];
        let mut internal = [0 as std::ffi::c_char; 128];
        if bytes.len() != internal.len() {
            return Err(DistError::Usage(format!(
                "nccl: rank 0 sent a unique id of {} bytes, expected {}",
                bytes.len(),
                internal.len()
            )));
        }
        for (dst, &b) in internal.iter_mut().zip(bytes) {
            *dst = b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world_size, Id::uninit(internal))
            .map_err(|e| nccl_error("init", e))?;
        Ok(Self {
            comm: OwnedComm(comm),
            device: cuda.clone(),
            rank,
            world_size,
        })
    }

    fn stream(&self) -> Arc<CudaStream> {
        self.device.cuda_stream()
    }

    /// A contiguous f32 copy of `t` on this communicator's GPU, as a device buffer.
    fn device_buffer(&self, t: &Tensor, op: &str) -> Result<CudaSlice<f32>, DistError> {
        if t.dtype() != DType::F32 {
            return Err(DistError::Usage(format!(
                "nccl {op}: f32 tensors only, got {:?}",
                t.dtype()
            )));
        }
        let t = t
            .to_device(&Device::Cuda(self.device.clone()))
            .and_then(|t| t.contiguous())
            .map_err(|source| DistError::Tensor {
                op: op.to_string(),
                source,
            })?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            return Err(DistError::Usage(format!(
                "nccl {op}: tensor is not on the GPU"
            )));
        };
        let slice = cuda
            .as_cuda_slice::<f32>()
            .map_err(|source| DistError::Tensor {
                op: op.to_string(),
                source,
            })?;
        let start = layout.start_offset();
        let view = slice.slice(start..start + t.elem_count());
        self.stream()
            .clone_dtod(&view)
            .map_err(|e| nccl_error(op, e))
    }

    /// Wrap a device buffer as a tensor of `dims` on this GPU.
    fn tensor(&self, buffer: CudaSlice<f32>, dims: &[usize]) -> Tensor {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(buffer, self.device.clone()));
        Tensor::from_storage(storage, dims, BackpropOp::none(), false)
    }

    fn upload(&self, data: &[f32], op: &str) -> Result<CudaSlice<f32>, DistError> {
        self.stream()
            .clone_htod(data)
            .map_err(|e| nccl_error(op, e))
    }

    fn download(
        &self,
        buffer: &CudaSlice<f32>,
        out: &mut [f32],
        op: &str,
    ) -> Result<(), DistError> {
        self.stream()
            .memcpy_dtoh(buffer, out)
            .map_err(|e| nccl_error(op, e))
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    /// NCCL enqueues on the stream of the calling thread (candle computes on each thread's per-thread
    /// stream): from another thread it would read gradients before the backward's kernels wrote them.
    fn blocks_while_communicating(&self) -> bool {
        false
    }

    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let mut buffer = self.upload(data, "all_reduce")?;
        self.comm
            .0
            .all_reduce_in_place(&mut buffer, &ReduceOp::Sum)
            .map_err(|e| nccl_error("all_reduce", e))?;
        self.download(&buffer, data, "all_reduce")
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        let send = self.upload(local, "all_gather")?;
        let mut recv = self
            .stream()
            .alloc_zeros::<f32>(local.len() * self.world_size)
            .map_err(|e| nccl_error("all_gather", e))?;
        self.comm
            .0
            .all_gather(&send, &mut recv)
            .map_err(|e| nccl_error("all_gather", e))?;
        let mut out = vec![0f32; local.len() * self.world_size];
        self.download(&recv, &mut out, "all_gather")?;
        Ok(out)
    }

    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let mut buffer = self.upload(data, "broadcast")?;
        self.comm
            .0
            .broadcast_in_place(&mut buffer, 0)
            .map_err(|e| nccl_error("broadcast", e))?;
        self.download(&buffer, data, "broadcast")
    }

    fn barrier(&self) -> Result<(), DistError> {
        // An all-reduce of one value returns only once every rank has joined it.
        self.all_reduce_sum_f32(&mut [0.0])
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let mut buffer = self.device_buffer(t, "all_reduce")?;
        self.comm
            .0
            .all_reduce_in_place(&mut buffer, &ReduceOp::Sum)
            .map_err(|e| nccl_error("all_reduce", e))?;
        Ok(self.tensor(buffer, t.dims()))
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let Some((&first, rest)) = t.dims().split_first() else {
            return Err(DistError::Usage(
                "all_gather: a scalar has no dim 0 to concatenate along".into(),
            ));
        };
        let send = self.device_buffer(t, "all_gather")?;
        let mut recv = self
            .stream()
            .alloc_zeros::<f32>(t.elem_count() * self.world_size)
            .map_err(|e| nccl_error("all_gather", e))?;
        self.comm
            .0
            .all_gather(&send, &mut recv)
            .map_err(|e| nccl_error("all_gather", e))?;
        let mut dims = vec![first * self.world_size];
        dims.extend_from_slice(rest);
        Ok(self.tensor(recv, &dims))
    }

    fn broadcast(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let mut buffer = self.device_buffer(t, "broadcast")?;
        self.comm
            .0
            .broadcast_in_place(&mut buffer, 0)
            .map_err(|e| nccl_error("broadcast", e))?;
        Ok(self.tensor(buffer, t.dims()))
    }
}
