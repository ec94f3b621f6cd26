//! A communicator on its own thread, so that a gradient all-reduce runs while the training thread goes on
//! with the backward pass.
//!
//! Every collective, whether started ([`Communicator::start_all_reduce_sum`]) or called and waited for, is a
//! job in one first-in-first-out queue that a single thread works through with the wrapped backend. So the
//! collectives take effect in the order the training thread issued them, which is the order every rank issues
//! them in: the same contract as a dedicated communication stream on a GPU.

use std::sync::mpsc;
use std::thread::JoinHandle;

use candle_core::Tensor;

use crate::comm::{Communicator, PendingTensor};
use crate::error::DistError;

type Job = Box<dyn FnOnce(&dyn Communicator) + Send>;

/// A [`Communicator`] whose collectives run on a background thread, in call order. Blocking calls wait for
/// their own result (and so for everything queued before them); [`Communicator::start_all_reduce_sum`]
/// returns at once.
pub struct BackgroundComm {
    rank: usize,
    world_size: usize,
    backend: &'static str,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl BackgroundComm {
    /// Move `inner` onto a new thread that runs its collectives. Meant for backends that
    /// [`Communicator::blocks_while_communicating`]; [`BackgroundComm::wrap_if_blocking`] checks.
    pub fn spawn(inner: Box<dyn Communicator>) -> Result<Self, DistError> {
        let (rank, world_size, backend) = (inner.rank(), inner.world_size(), inner.backend());
        let (jobs, queue) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name(format!("coca-comm-{rank}"))
            .spawn(move || {
                for job in queue {
                    job(inner.as_ref());
                }
            })
            .map_err(|e| DistError::Usage(format!("cannot start the communication thread: {e}")))?;
        Ok(Self {
            rank,
            world_size,
            backend,
            jobs: Some(jobs),
            worker: Some(worker),
        })
    }

    /// `comm` on a background thread when its collectives block the caller; otherwise `comm` itself.
    pub fn wrap_if_blocking(
        comm: Box<dyn Communicator>,
    ) -> Result<Box<dyn Communicator>, DistError> {
        if comm.blocks_while_communicating() {
            Ok(Box::new(Self::spawn(comm)?))
        } else {
            Ok(comm)
        }
    }

    /// Queue `op` and return the channel its result will arrive on.
    fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Communicator) -> Result<T, DistError> + Send + 'static,
    ) -> Result<mpsc::Receiver<Result<T, DistError>>, DistError> {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |comm| {
            // The receiver may be gone (its caller failed meanwhile); the collective still ran, in order.
            let _ = reply.send(op(comm));
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(stopped)?;
        Ok(result)
    }

    /// Queue `op` and wait for its result.
    fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Communicator) -> Result<T, DistError> + Send + 'static,
    ) -> Result<T, DistError> {
        self.submit(op)?.recv().map_err(|_| stopped())?
    }
}

fn stopped() -> DistError {
    DistError::Usage("the communication thread has stopped".into())
}

impl Drop for BackgroundComm {
    fn drop(&mut self) {
        // Closing the queue ends the worker's loop once it has run what was queued.
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Communicator for BackgroundComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    fn blocks_while_communicating(&self) -> bool {
        // Its callers no longer wait for the data to move.
        false
    }

    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let mut owned = data.to_vec();
        let summed = self.call(move |comm| {
            comm.all_reduce_sum_f32(&mut owned)?;
            Ok(owned)
        })?;
        data.copy_from_slice(&summed);
        Ok(())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        let owned = local.to_vec();
        self.call(move |comm| comm.all_gather_f32(&owned))
    }

    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let mut owned = data.to_vec();
        let from0 = self.call(move |comm| {
            comm.broadcast_f32(&mut owned)?;
            Ok(owned)
        })?;
        data.copy_from_slice(&from0);
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.call(|comm| comm.barrier())
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let owned = local.to_vec();
        self.call(move |comm| comm.all_gather_bytes(&owned))
    }

    // The tensor collectives go to the wrapped backend's own tensor methods, so a device backend keeps its
    // tensors on the device.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let t = t.clone();
        self.call(move |comm| comm.all_reduce_sum(&t))
    }

    fn start_all_reduce_sum(&self, t: &Tensor) -> Result<PendingTensor, DistError> {
        let t = t.clone();
        Ok(PendingTensor::running(
            self.submit(move |comm| comm.all_reduce_sum(&t))?,
        ))
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let t = t.clone();
        self.call(move |comm| comm.all_gather(&t))
    }

    fn broadcast(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let t = t.clone();
        self.call(move |comm| comm.broadcast(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalComm;
    use candle_core::Device;

    /// Started all-reduces and blocking collectives interleave on every rank exactly as issued, and their
    /// results equal those of the wrapped backend.
    #[test]
    fn keeps_the_order_and_results_of_the_wrapped_backend() {
        let handles: Vec<_> = LocalComm::group(3)
            .into_iter()
            .map(|local| {
                std::thread::spawn(move || {
                    let comm = BackgroundComm::spawn(Box::new(local)).unwrap();
                    let r = comm.rank() as f32;
                    let a = Tensor::new(&[r, 1.0], &Device::Cpu).unwrap();
                    let b = Tensor::new(&[10.0 * r], &Device::Cpu).unwrap();
                    let first = comm.start_all_reduce_sum(&a).unwrap();
                    let second = comm.start_all_reduce_sum(&b).unwrap();
                    let gathered = comm.all_gather_f32(&[r]).unwrap();
                    let mut summed = [r + 1.0];
                    comm.all_reduce_sum_f32(&mut summed).unwrap();
                    (
                        first.wait().unwrap().to_vec1::<f32>().unwrap(),
                        second.wait().unwrap().to_vec1::<f32>().unwrap(),
                        gathered,
                        summed[0],
                    )
                })
            })
            .collect();
        for h in handles {
            let (first, second, gathered, summed) = h.join().unwrap();
            assert_eq!(first, vec![3.0, 3.0]);
            assert_eq!(second, vec![30.0]);
            assert_eq!(gathered, vec![0.0, 1.0, 2.0]);
            assert_eq!(summed, 6.0);
        }
    }

    /// A failing collective reports the backend's error to the caller that waits for it.
    #[test]
    fn reports_the_backends_errors() {
        let comm = BackgroundComm::spawn(Box::new(crate::Single)).unwrap();
        // The host path of the wrapped backend moves f32 only.
        let bf16 = Tensor::new(&[1f32], &Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::BF16)
            .unwrap();
        let err = comm
            .start_all_reduce_sum(&bf16)
            .unwrap()
            .wait()
            .unwrap_err();
        assert!(err.to_string().contains("f32"), "{err}");
        // The queue goes on after a failure.
        let one = Tensor::new(&[2f32], &Device::Cpu).unwrap();
        assert_eq!(
            comm.all_reduce_sum(&one).unwrap().to_vec1::<f32>().unwrap(),
            vec![2.0]
        );
    }

    /// Host backends get the thread; a backend that does not block (one process, a GPU stream) is kept.
    #[test]
    fn wraps_only_blocking_backends() {
        let local = LocalComm::group(1).pop().unwrap();
        assert!(local.blocks_while_communicating());
        let wrapped = BackgroundComm::wrap_if_blocking(Box::new(local)).unwrap();
        assert!(!wrapped.blocks_while_communicating());
        assert_eq!(wrapped.backend(), "local");
        let single = BackgroundComm::wrap_if_blocking(Box::new(crate::Single)).unwrap();
        assert_eq!(single.backend(), "single");
    }
}
