//! CUDA forward and backward of [`super::super::scaled_masked_softmax`] (kernels in `kernels/softmax.cu`).
//!
//! The CPU op indexes its mask on the host; here the mask is a second, f32 device operand and the kernel finds
//! each score row's mask row from the leading dims and the mask's broadcast strides, passed by value.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor,
};

use super::super::softmax::{mask_strides, SoftmaxBackward};
use super::{
    alloc_out, by_activation_dtype, kernel, operand, rows_config, view, width_arg, SOFTMAX,
};

const FORWARD: &str = "coca-scaled-masked-softmax (cuda)";
const BACKWARD: &str = "coca-softmax-backward (cuda)";

/// Leading dimensions the kernel can index a mask over (`MAX_LEAD` in the kernel).
const MAX_LEAD: usize = 8;

/// Where each score row finds its mask row: the scores' leading dims and the mask's strides along them.
#[derive(Clone, Copy)]
struct Lead {
    count: i32,
    dims: [u64; MAX_LEAD],
    strides: [u64; MAX_LEAD],
}

/// `softmax(scale · scores + mask)` over the last dimension of CUDA `scores` (f32 or bf16, any layout); `mask`
/// additive, any float dtype, broadcastable to `scores` except along the last dimension. The result has the
/// scores' dtype.
pub(in crate::nn::kernels) fn scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let dims = scores.dims();
    let scores = scores.contiguous()?;
    let scale = scale as f32;
    let Some(mask) = mask else {
        return scores.apply_op1(CudaSoftmax { scale, lead: None });
    };
    let strides = mask_strides(mask.dims(), dims)?;
    let count = dims.len().saturating_sub(1);
    if count > MAX_LEAD {
        candle_core::bail!("{FORWARD}: scores {dims:?} have more than {MAX_LEAD} leading dims");
    }
    let mut lead = Lead {
        count: count as i32,
        dims: [1; MAX_LEAD],
        strides: [0; MAX_LEAD],
    };
    for d in 0..count {
        lead.dims[d] = dims[d] as u64;
        lead.strides[d] = strides[d] as u64;
    }
    let mask = mask.to_dtype(DType::F32)?.contiguous()?;
    scores.apply_op2(
        &mask,
        CudaSoftmax {
            scale,
            lead: Some(lead),
        },
    )
}

/// The forward op: one input (no mask) or two (scores, mask; `lead` set).
struct CudaSoftmax {
    scale: f32,
    lead: Option<Lead>,
}

impl CudaSoftmax {
    fn backward(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })
    }
}

impl CustomOp1 for CudaSoftmax {
    fn name(&self) -> &'static str {
        "coca-scaled-masked-softmax-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", CustomOp1::name(self))
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, FORWARD, forward_as(x, lx, None, self))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.backward(res, grad)?))
    }
}

impl CustomOp2 for CudaSoftmax {
    fn name(&self) -> &'static str {
        "coca-scaled-masked-softmax-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", CustomOp2::name(self))
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        m: &CudaStorage,
        lm: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, FORWARD, forward_as(x, lx, Some((m, lm)), self))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is a constant: no gradient.
        Ok((Some(self.backward(res, grad)?), None))
    }
}

fn forward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    mask: Option<(&CudaStorage, &Layout)>,
    op: &CudaSoftmax,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let n = lx.shape().elem_count();
    let width = lx.dims().last().copied().unwrap_or(1);
    let x = view(x, lx, FORWARD)?;
    let mut y = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let rows = n / width;
        let width = width_arg(width, FORWARD)?;
        let func = kernel(dev, &SOFTMAX, "softmax_fwd", suffix)?;
        let stream = dev.cuda_stream();
        let mask = match mask {
            Some((m, lm)) => Some(operand::<f32>(m, lm, FORWARD)?),
            None => None,
        };
        let lead = op.lead.unwrap_or(Lead {
            count: 0,
            dims: [1; MAX_LEAD],
            strides: [0; MAX_LEAD],
        });
        // A null pointer tells the kernel there is no mask.
        let null: u64 = 0;
        let mut launch = stream.launch_builder(&func);
        launch.arg(&x);
        match &mask {
            Some(m) => launch.arg(m),
            None => launch.arg(&null),
        };
        launch
            .arg(&mut y)
            .arg(&rows)
            .arg(&width)
            .arg(&op.scale)
            .arg(&lead.count)
            .arg(&lead.dims)
            .arg(&lead.strides);
        // SAFETY: the arguments match `softmax_fwd_*` (`Lead` is a struct of MAX_LEAD u64, as `[u64; MAX_LEAD]`);
        // `x` and `y` hold rows × width elements; every mask row the kernel indexes lies inside the mask, whose
        // strides come from its own dims (`mask_strides`).
        unsafe { launch.launch(rows_config(rows)?) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        lx.shape().clone(),
    ))
}

/// `scale · y ∘ (dy − Σ dy ∘ y)` row by row; `y` and `dy` contiguous, of one dtype (f32 or bf16).
pub(in crate::nn::kernels) fn backward(
    scale: f32,
    y: &CudaStorage,
    ly: &Layout,
    g: &CudaStorage,
    lg: &Layout,
) -> Result<(CudaStorage, Shape)> {
    by_activation_dtype!(y, BACKWARD, backward_as(y, ly, g, lg, scale))
}

fn backward_as<T: CudaDType + DeviceRepr>(
    y: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    ly: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    scale: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    if lg.shape() != ly.shape() {
        candle_core::bail!(
            "{BACKWARD}: gradient {:?} does not match output {:?}",
            lg.dims(),
            ly.dims()
        );
    }
    let n = ly.shape().elem_count();
    let width = ly.dims().last().copied().unwrap_or(1);
    let y = view(y, ly, BACKWARD)?;
    let g = operand::<T>(g, lg, BACKWARD)?;
    let mut dx = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let rows = n / width;
        let width = width_arg(width, BACKWARD)?;
        let func = kernel(dev, &SOFTMAX, "softmax_bwd", suffix)?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&y)
            .arg(&g)
            .arg(&mut dx)
            .arg(&rows)
            .arg(&width)
            .arg(&scale);
        // SAFETY: the arguments match `softmax_bwd_*`; all buffers hold rows × width elements.
        unsafe { launch.launch(rows_config(rows)?) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(dx, dev.clone()),
        ly.shape().clone(),
    ))
}
