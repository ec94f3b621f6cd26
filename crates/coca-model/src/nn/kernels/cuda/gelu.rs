//! CUDA forward and backward of [`super::super::gelu_erf`] and [`super::super::bias_gelu_erf`] (kernels in
//! `kernels/gelu.cu`).

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};

use super::{alloc_out, by_activation_dtype, elementwise_config, kernel, operand, view, GELU};

const FORWARD: &str = "coca-gelu-erf (cuda)";
const BACKWARD: &str = "coca-gelu-erf-backward (cuda)";

/// `x · Φ(x)` elementwise; `x` contiguous, f32 or bf16; the result has `x`'s dtype.
pub(in crate::nn::kernels) fn forward(
    x: &CudaStorage,
    lx: &Layout,
) -> Result<(CudaStorage, Shape)> {
    by_activation_dtype!(x, FORWARD, forward_as(x, lx))
}

fn forward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let x = view(x, lx, FORWARD)?;
    let n = lx.shape().elem_count();
    let mut y = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let func = kernel(dev, &GELU, "gelu_fwd", suffix)?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch.arg(&x).arg(&mut y).arg(&n);
        // SAFETY: the arguments match `gelu_fwd_*`'s signature; both buffers hold `n` elements.
        unsafe { launch.launch(elementwise_config(n)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        lx.shape().clone(),
    ))
}

/// `dy · (Φ(x) + x·φ(x))`; `x` and `dy` contiguous, of one dtype (f32 or bf16).
pub(in crate::nn::kernels) fn backward(
    x: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
) -> Result<(CudaStorage, Shape)> {
    by_activation_dtype!(x, BACKWARD, backward_as(x, lx, g, lg))
}

fn backward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let n = lx.shape().elem_count();
    if lg.shape().elem_count() != n {
        candle_core::bail!(
            "{BACKWARD}: gradient {:?} does not match input {:?}",
            lg.dims(),
            lx.dims()
        );
    }
    let x = view(x, lx, BACKWARD)?;
    let g = operand::<T>(g, lg, BACKWARD)?;
    let mut dx = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let func = kernel(dev, &GELU, "gelu_bwd", suffix)?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch.arg(&x).arg(&g).arg(&mut dx).arg(&n);
        // SAFETY: the arguments match `gelu_bwd_*`'s signature; all buffers hold `n` elements.
        unsafe { launch.launch(elementwise_config(n)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(dx, dev.clone()),
        lx.shape().clone(),
    ))
}

const BIAS_FORWARD: &str = "coca-bias-gelu-erf (cuda)";
const BIAS_BACKWARD: &str = "coca-bias-gelu-erf-backward (cuda)";

/// `gelu(x + bias)` on CUDA, `bias` (width,) broadcast over the last dimension of `x` (f32 or bf16); the result
/// has `x`'s dtype. The bias is added in f32 inside the kernel (cast here; autograd casts its gradient back).
pub(in crate::nn::kernels) fn bias_gelu_erf(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    if bias.dims() != [width] {
        candle_core::bail!(
            "{BIAS_FORWARD}: bias {:?} must be ({width},) for input {:?}",
            bias.dims(),
            x.dims()
        );
    }
    x.contiguous()?
        .apply_op2(&bias.to_dtype(DType::F32)?.contiguous()?, BiasGelu)
}

/// The forward op; inputs `x` and the f32 bias.
struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "coca-bias-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: CUDA only (the CPU composes gelu_erf(x + b))",
            self.name()
        )
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        b: &CudaStorage,
        lb: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, BIAS_FORWARD, bias_forward_as(x, lx, b, lb))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The gradient of the biased pre-activation is that of both `x` and (summed over rows) the bias.
        let dx = x.apply_op3_no_bwd(bias, &grad.contiguous()?, &BiasGeluBackward)?;
        let width = bias.elem_count();
        let db = dx
            .to_dtype(DType::F32)?
            .reshape((dx.elem_count() / width, width))?
            .sum(0)?;
        Ok((Some(dx), Some(db)))
    }
}

fn bias_forward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    b: &CudaStorage,
    lb: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let n = lx.shape().elem_count();
    let width = lb.shape().elem_count();
    if width == 0 || lx.dims().last() != Some(&width) {
        candle_core::bail!(
            "{BIAS_FORWARD}: input {:?} does not have rows of the bias' width {width}",
            lx.dims()
        );
    }
    let x = view(x, lx, BIAS_FORWARD)?;
    let b = operand::<f32>(b, lb, BIAS_FORWARD)?;
    let mut y = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let func = kernel(dev, &GELU, "bias_gelu_fwd", suffix)?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch.arg(&x).arg(&b).arg(&mut y).arg(&n).arg(&width);
        // SAFETY: the arguments match `bias_gelu_fwd_*`; `x` and `y` hold `n` elements, `b` the row width.
        unsafe { launch.launch(elementwise_config(n)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        lx.shape().clone(),
    ))
}

/// `dy · gelu'(x + b)`; inputs `x`, the f32 bias and `dy` (x's dtype).
struct BiasGeluBackward;

impl CustomOp3 for BiasGeluBackward {
    fn name(&self) -> &'static str {
        "coca-bias-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        b: &CudaStorage,
        lb: &Layout,
        g: &CudaStorage,
        lg: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, BIAS_BACKWARD, bias_backward_as(x, lx, b, lb, g, lg))
    }
}

#[allow(clippy::too_many_arguments)] // the three operands with their layouts, as candle hands them over
fn bias_backward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    g: &CudaStorage,
    lg: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let n = lx.shape().elem_count();
    let width = lb.shape().elem_count();
    if width == 0 || lx.dims().last() != Some(&width) || lg.shape() != lx.shape() {
        candle_core::bail!(
            "{BIAS_BACKWARD}: input {:?}, bias ({width},) and gradient {:?} do not match",
            lx.dims(),
            lg.dims()
        );
    }
    let x = view(x, lx, BIAS_BACKWARD)?;
    let b = operand::<f32>(b, lb, BIAS_BACKWARD)?;
    let g = operand::<T>(g, lg, BIAS_BACKWARD)?;
    let mut dx = alloc_out::<T>(dev, n)?;
    if n > 0 {
        let func = kernel(dev, &GELU, "bias_gelu_bwd", suffix)?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&x)
            .arg(&b)
            .arg(&g)
            .arg(&mut dx)
            .arg(&n)
            .arg(&width);
        // SAFETY: the arguments match `bias_gelu_bwd_*`; `x`, `g`, `dx` hold `n` elements, `b` the row width.
        unsafe { launch.launch(elementwise_config(n)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(dx, dev.clone()),
        lx.shape().clone(),
    ))
}
