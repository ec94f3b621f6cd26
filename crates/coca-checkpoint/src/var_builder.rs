//! Plugging a [`Checkpoint`] into `candle_nn::VarBuilder`.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::Checkpoint;

/// Lets `VarBuilder::from_backend(Box::new(checkpoint), dtype, device)` pull weights
/// by name. `get` checks the shape before reading any data.
impl SimpleBackend for Checkpoint {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(info) = self.info(name) {
            if info.shape.as_slice() != shape.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("tensor '{name}' in '{}'", self.path().display()),
                    expected: shape,
                    got: info.shape.clone().into(),
                }
                .bt());
            }
        }
        self.get_unchecked(name, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        Checkpoint::get(self, name, dtype, device).map_err(candle_core::Error::wrap)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl Checkpoint {
    /// A `VarBuilder` reading from this checkpoint, converting to `dtype` on `device`.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}
