//! CUDA forward and backward of [`super::super::layer_norm()`] (kernels in `kernels/layer_norm.cu`).
//!
//! Activations are f32 or bf16, gain and bias f32 (the wrapper casts them), so bf16 mixed precision, which keeps
//! LayerNorm parameters in f32, needs no extra casts of the activations. The CPU backward packs `[dx; dw; db]`
//! into one f32 tensor; here `dx` has the activations' dtype and the parameter gradients are f32, so the backward
//! is two ops: [`LayerNormInputGrad`] and [`LayerNormParamGrads`].

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{
    alloc_out, by_activation_dtype, kernel, operand, rows_config, view, width_arg, LAYER_NORM,
};

const FORWARD: &str = "coca-layer-norm (cuda)";
const INPUT_GRAD: &str = "coca-layer-norm-input-grad (cuda)";
const PARAM_GRADS: &str = "coca-layer-norm-param-grads (cuda)";

/// Threads along the rows in a block of the parameter-gradient kernel (`PARAM_ROWS` in the kernel), each
/// striding over its chunk of rows.
const PARAM_ROWS: usize = 8;

/// Blocks the parameter-gradient kernel aims for: a few waves over an H100's 132 SMs.
const PARAM_TARGET_BLOCKS: usize = 1024;

/// `(x − mean) · rstd · w + b` over rows of `w.len()`; `x` f32 or bf16, `w` and `b` f32, all contiguous.
pub(in crate::nn::kernels) fn forward(
    eps: f32,
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    b: &CudaStorage,
    lb: &Layout,
) -> Result<(CudaStorage, Shape)> {
    by_activation_dtype!(x, FORWARD, forward_as(x, lx, w, lw, b, lb, eps))
}

#[allow(clippy::too_many_arguments)] // the three operands with their layouts, as candle hands them over
fn forward_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let (rows, width) = rows_and_width(lx, lw, FORWARD)?;
    let x = view(x, lx, FORWARD)?;
    let w = operand::<f32>(w, lw, FORWARD)?;
    let b = operand::<f32>(b, lb, FORWARD)?;
    let mut y = alloc_out::<T>(dev, rows * width)?;
    if rows > 0 {
        let func = kernel(dev, &LAYER_NORM, "ln_fwd", suffix)?;
        let stream = dev.cuda_stream();
        let width = width_arg(width, FORWARD)?;
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&x)
            .arg(&w)
            .arg(&b)
            .arg(&mut y)
            .arg(&rows)
            .arg(&width)
            .arg(&eps);
        // SAFETY: the arguments match `ln_fwd_*`; `x` and `y` hold rows × width elements, `w` and `b` width.
        unsafe { launch.launch(rows_config(rows)?) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        lx.shape().clone(),
    ))
}

/// Rows and width of `x` for a gain of layout `lw`, checked (width > 0, rows × width = x's elements).
fn rows_and_width(lx: &Layout, lw: &Layout, op: &str) -> Result<(usize, usize)> {
    let width = lw.shape().elem_count();
    let n = lx.shape().elem_count();
    if width == 0 || lx.dims().last() != Some(&width) {
        candle_core::bail!(
            "{op}: input {:?} does not have rows of the gain's width {width}",
            lx.dims()
        );
    }
    Ok((n / width, width))
}

/// The three gradients of LayerNorm on CUDA: `dx` (the activations' dtype), `dweight` and `dbias` (f32).
pub(in crate::nn::kernels) fn backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let dx = x.apply_op3_no_bwd(weight, &grad, &LayerNormInputGrad { eps })?;
    let params = x.apply_op2_no_bwd(&grad, &LayerNormParamGrads { eps })?;
    Ok((dx, params.get(0)?, params.get(1)?))
}

/// `rstd · (g·w − mean(g·w) − x̂ · mean(g·w·x̂))` row by row; inputs `x`, `weight` (f32), `grad` (x's dtype).
struct LayerNormInputGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormInputGrad {
    fn name(&self) -> &'static str {
        "coca-layer-norm-input-grad"
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
        candle_core::bail!(
            "{}: CUDA only (the CPU backward packs all three gradients)",
            self.name()
        )
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        w: &CudaStorage,
        lw: &Layout,
        g: &CudaStorage,
        lg: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, INPUT_GRAD, input_grad_as(x, lx, w, lw, g, lg, self.eps))
    }
}

#[allow(clippy::too_many_arguments)] // the three operands with their layouts, as candle hands them over
fn input_grad_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let (rows, width) = rows_and_width(lx, lw, INPUT_GRAD)?;
    if lg.shape() != lx.shape() {
        candle_core::bail!(
            "{INPUT_GRAD}: gradient {:?} does not match input {:?}",
            lg.dims(),
            lx.dims()
        );
    }
    let x = view(x, lx, INPUT_GRAD)?;
    let w = operand::<f32>(w, lw, INPUT_GRAD)?;
    let g = operand::<T>(g, lg, INPUT_GRAD)?;
    let mut dx = alloc_out::<T>(dev, rows * width)?;
    if rows > 0 {
        let func = kernel(dev, &LAYER_NORM, "ln_bwd_dx", suffix)?;
        let stream = dev.cuda_stream();
        let width = width_arg(width, INPUT_GRAD)?;
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&x)
            .arg(&w)
            .arg(&g)
            .arg(&mut dx)
            .arg(&rows)
            .arg(&width)
            .arg(&eps);
        // SAFETY: the arguments match `ln_bwd_dx_*`; `x`, `g`, `dx` hold rows × width elements, `w` width.
        unsafe { launch.launch(rows_config(rows)?) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(dx, dev.clone()),
        lx.shape().clone(),
    ))
}

/// `[Σ_rows g·x̂; Σ_rows g]`, (2, width) f32; inputs `x` and `grad` (one dtype, f32 or bf16).
struct LayerNormParamGrads {
    eps: f32,
}

impl CustomOp2 for LayerNormParamGrads {
    fn name(&self) -> &'static str {
        "coca-layer-norm-param-grads"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: CUDA only (the CPU backward packs all three gradients)",
            self.name()
        )
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        g: &CudaStorage,
        lg: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        by_activation_dtype!(x, PARAM_GRADS, param_grads_as(x, lx, g, lg, self.eps))
    }
}

fn param_grads_as<T: CudaDType + DeviceRepr>(
    x: &CudaSlice<T>,
    suffix: &str,
    storage: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = &storage.device;
    let width = lx.dims().last().copied().unwrap_or(0);
    if width == 0 || lg.shape() != lx.shape() {
        candle_core::bail!(
            "{PARAM_GRADS}: input {:?} and gradient {:?} must match, with rows of positive width",
            lx.dims(),
            lg.dims()
        );
    }
    let rows = lx.shape().elem_count() / width;
    let x = view(x, lx, PARAM_GRADS)?;
    let g = operand::<T>(g, lg, PARAM_GRADS)?;
    if rows == 0 {
        // No rows: both sums are zero.
        let out = dev.alloc_zeros::<f32>(2 * width)?;
        return Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((2, width)),
        ));
    }
    let mut out = alloc_out::<f32>(dev, 2 * width)?;
    let stream = dev.cuda_stream();
    let width_i = width_arg(width, PARAM_GRADS)?;

    // 1. Per-row mean and rstd.
    let mut stats = alloc_out::<f32>(dev, 2 * rows)?;
    let func = kernel(dev, &LAYER_NORM, "ln_stats", suffix)?;
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&x)
        .arg(&mut stats)
        .arg(&rows)
        .arg(&width_i)
        .arg(&eps);
    // SAFETY: the arguments match `ln_stats_*`; `stats` holds 2 × rows floats.
    unsafe { launch.launch(rows_config(rows)?) }.w()?;

    // 2. Column sums over fixed chunks of rows, 32 columns per block.
    let col_tiles = width.div_ceil(32);
    let chunks = (PARAM_TARGET_BLOCKS / col_tiles).clamp(1, rows.div_ceil(PARAM_ROWS));
    let rows_per_chunk = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(rows_per_chunk);
    let mut partial = alloc_out::<f32>(dev, chunks * 2 * width)?;
    let func = kernel(dev, &LAYER_NORM, "ln_bwd_params_partial", suffix)?;
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&x)
        .arg(&g)
        .arg(&stats)
        .arg(&mut partial)
        .arg(&rows)
        .arg(&width_i)
        .arg(&rows_per_chunk);
    let cfg = LaunchConfig {
        grid_dim: (col_tiles as u32, chunks as u32, 1),
        block_dim: (32, PARAM_ROWS as u32, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match `ln_bwd_params_partial_*`; `partial` holds chunks × 2 × width floats and
    // every (chunk, column) pair writes its two entries.
    unsafe { launch.launch(cfg) }.w()?;

    // 3. The chunks added in order.
    let n = 2 * width;
    let func = kernel(dev, &LAYER_NORM, "ln_bwd_params_sum", "f32")?;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&partial).arg(&mut out).arg(&chunks).arg(&n);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match `ln_bwd_params_sum_f32`; `out` holds 2 × width floats.
    unsafe { launch.launch(cfg) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        Shape::from((2, width)),
    ))
}
