//! The world of one process: every collective returns its input.

use crate::comm::Communicator;
use crate::error::DistError;

/// World size 1: collectives are no-ops, so code written for several ranks runs unchanged on one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn backend(&self) -> &'static str {
        "single"
    }

    fn blocks_while_communicating(&self) -> bool {
        false
    }

    fn all_reduce_sum_f32(&self, _data: &mut [f32]) -> Result<(), DistError> {
        Ok(())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        Ok(local.to_vec())
    }

    fn broadcast_f32(&self, _data: &mut [f32]) -> Result<(), DistError> {
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
}
