//! The ops every tower computes with, and the one place that chooses how each runs: one of coca's kernels
//! (`nn/kernels/`, private to this crate) or candle's ops. The layers, the towers and the loss call only these
//! functions, so a new precision or kernel changes this module and its kernels, nothing else.
//!
//! # Paths
//!
//! Each op looks at its operands (device, dtype, whether a gradient is recorded, shape) and takes one of:
//!
//! - **coca CPU**: every operand f32 on the CPU. coca's single-node kernels, forward and backward in one pass
//!   each, for training and inference alike. Off with `COCA_FUSED=0`, or on one thread inside
//!   [`with_composed_ops`], so that the candle path (what CUDA and half precision run) can be measured and held to
//!   open_clip on the CPU too.
//! - **coca CUDA**: built with the `cuda` feature, `COCA_CUDA_KERNELS=1`, every operand f32 or bf16 on a CUDA
//!   device. coca's CUDA kernels for LayerNorm, GELU (with the MLP's bias folded in) and the attention softmax.
//!   Opt-in until their GPU tests (`tests/cuda_kernels.rs`) have passed on the card in use.
//! - **candle**: everything else (CUDA by default, bf16/f16 on either device, the CPU with the switch above off):
//!   candle's own kernels where they exist and no gradient is needed (they have no backward, which would be
//!   dropped silently), otherwise compositions of differentiable candle primitives.
//!
//! Independently of these, a product whose weight is packed to int8 or bf16 ([`LinearWeight::Packed`], CPU
//! inference only: [`crate::Coca::pack_weights`]) runs a low-precision kernel of `kernels/lowp`, whatever the
//! path of its activations, chosen in one function (`packed_product`): for one activation row (a greedy
//! decoding step) the weight-only kernel (f32 activations, the weight widened in registers), for more rows AMX
//! tiles, else AVX512-VNNI (int8) or AVX512-BF16, else the portable reference; a recorded gradient through it is
//! refused.
//!
//! Independently of these, products with at most `thin_matmul::MAX_ROWS` (8) activation rows, f32 on the CPU,
//! without a gradient and with a contiguous weight (decoding steps) take the thin mat-vec kernel: candle's GEMM
//! packs the weight on every call, which costs as much as the product at that shape. It is not part of the coca
//! CPU path and so also runs inside [`with_composed_ops`].
//!
//! | op | coca CPU | coca CUDA | candle |
//! |---|---|---|---|
//! | [`linear`] (dense weight) | thin if it fits, else the fused linear node (bias as the GEMM's accumulator) | candle matmul + bias | thin if it fits, else candle matmul + bias |
//! | [`linear`] (packed weight) | weight-only kernel for one row, else AMX / VNNI / BF16 / reference | refused (CPU only) | as on the coca CPU path (f32 activations) |
//! | [`project`] | thin if it fits, else candle matmul | candle matmul | thin if it fits, else candle matmul |
//! | [`add`] | kernel (on rayon's threads, not candle's second pool) | candle's sum | candle's sum |
//! | [`layer_norm`] | kernel | candle's kernel without a gradient and one dtype, else coca's kernel | candle's kernel without a gradient and one dtype, else composed in f32 |
//! | [`gelu`] | kernel (vectorised; candle's erf is scalar) | coca's kernel with a gradient, else candle's | candle's `gelu_erf` |
//! | [`linear_activation`] | [`linear`], then the activation (GELU after a packed product: in place on its output) | GELU: linear without bias, then one bias + GELU kernel | [`linear`], then the activation |
//! | [`attention`] | one fused node from the projections to the merged heads | composed over split heads, softmax by [`attention_softmax`] | composed over split heads |
//! | [`attention_softmax`] | kernel with a gradient, else candle's softmax | kernel with a gradient, else candle's softmax | scale, mask, [`softmax_last_dim`] |
//! | [`softmax_last_dim`] | candle's kernel without a gradient, else composed | same | same |
//! | [`cross_entropy`] | kernel (one pass over the logits each way) | composed log-softmax and gather | composed log-softmax and gather |
//! | [`lm_head_nll_sum`] | kernel, logits never stored | logits in chunks of rows (`chunked_lm_head`) | logits in chunks of rows |
//!
//! Where the ops run: [`on_kernel_threads`] moves a whole inference forward (`Coca::encode_image`,
//! `Coca::encode_text` and the other `Coca::encode_*`, `Coca::forward_cached`) onto one of rayon's threads on the
//! coca CPU path, so that its ops split their work from inside the pool.
//!
//! The rest ([`log_softmax_last_dim`], [`quick_gelu`], [`l2_normalize`], [`split_heads`]) are the same candle
//! compositions everywhere. The parity tests against open_clip run the coca CPU path and, inside
//! [`with_composed_ops`], the candle path, both with gradients.

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor, D};

use super::kernels::{self, chunked_lm_head, lowp, thin_matmul};
use super::layers::Activation;

pub use super::kernels::lowp::{Format as PackedFormat, PackedWeight};
pub use super::kernels::Projections;

/// open_clip's LayerNorm epsilon.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Which family of kernels an op runs on its operands (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// coca's CPU kernels: every operand f32 on the CPU, the switch on.
    CocaCpu,
    /// coca's CUDA kernels: the `cuda` feature, `COCA_CUDA_KERNELS=1`, every operand f32 or bf16 on CUDA.
    CocaCuda,
    /// candle's kernels and compositions.
    Candle,
}

/// The path of an op over all of `ts`.
fn path(ts: &[&Tensor]) -> Path {
    let all = |f: fn(&Tensor) -> bool| ts.iter().all(|t| f(t));
    if coca_cpu_enabled() && all(|t| t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu)) {
        Path::CocaCpu
    } else if cfg!(feature = "cuda")
        && coca_cuda_enabled()
        && all(|t| t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16))
    {
        Path::CocaCuda
    } else {
        Path::Candle
    }
}

/// `true` when any tensor records its graph, i.e. a backward pass may run through this op.
fn any_tracks(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// The coca CPU path is on: not `COCA_FUSED=0`, and not inside [`with_composed_ops`] on this thread.
fn coca_cpu_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !COMPOSED_ONLY.with(std::cell::Cell::get)
        && *ENABLED.get_or_init(|| std::env::var("COCA_FUSED").map_or(true, |v| v != "0"))
}

/// `COCA_CUDA_KERNELS=1` (read once per process).
fn coca_cuda_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("COCA_CUDA_KERNELS").is_ok_and(|v| v == "1"))
}

thread_local! {
    static COMPOSED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run a whole forward `f` on one of rayon's threads when the coca CPU path is on for `device` (the CPU), so
/// that each op inside it splits its work with the pool's other threads by work-stealing from there. Called
/// from outside the pool, every parallel op would instead hand its work to the pool and put the caller to
/// sleep until it is done: two thread switches per op, which cost more than many of a batch-1 forward's ops.
/// Inside [`with_composed_ops`] (a flag of the calling thread), on other devices and on the pool's own threads
/// `f` runs where it is called.
pub fn on_kernel_threads<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    let here = !matches!(device, Device::Cpu)
        || !coca_cpu_enabled()
        || rayon::current_thread_index().is_some();
    if here {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// Run `f` with the coca CPU path off on the calling thread, so that the models inside it take candle's ops: the
/// path of CUDA (without `COCA_CUDA_KERNELS`) and of half precision. Lets the parity tests hold that path to
/// open_clip on the CPU as well. The choice is made per op on the calling thread, so the kernels' own worker
/// threads need no flag.
pub fn with_composed_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSED_ONLY.with(|c| c.replace(true)));
    f()
}

/// `x`'s leading dimensions folded into rows: (rows, last), and the shape of a result whose last dimension is
/// `out`.
fn fold_rows(x: &Tensor, out: usize) -> Result<(Tensor, Vec<usize>)> {
    let dims = x.dims();
    let (lead, last) = dims.split_at(dims.len() - 1);
    let flat = x.reshape((lead.iter().product::<usize>(), last[0]))?;
    let mut out_shape = lead.to_vec();
    out_shape.push(out);
    Ok((flat, out_shape))
}

/// The weight matrix of a product, in the layout it was loaded in or packed for the low-precision CPU kernels.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// (out, in), as `nn.Linear` stores it: the product is `x·Wᵀ`.
    Dense(Tensor),
    /// (in, out), as open_clip stores its bare projection matrices: the product is `x·P` ([`project`]).
    Matrix(Tensor),
    /// Packed int8 or bf16 (out, in) (for a projection matrix, its transpose): CPU inference only.
    Packed(PackedWeight),
}

impl LinearWeight {
    /// Output channels of the product.
    pub fn out_dim(&self) -> Result<usize> {
        match self {
            Self::Dense(w) => w.dim(0),
            Self::Matrix(p) => p.dim(1),
            Self::Packed(w) => Ok(w.n()),
        }
    }

    /// Input width of the product.
    pub fn in_dim(&self) -> Result<usize> {
        match self {
            Self::Dense(w) => w.dim(1),
            Self::Matrix(p) => p.dim(0),
            Self::Packed(w) => Ok(w.k()),
        }
    }

    /// The output channels `start .. start + len` (a part of a packed attention projection): a view for a dense
    /// weight and for whole panels of a packed one, else a copy of those channels.
    pub fn narrow_out(&self, start: usize, len: usize) -> Result<Self> {
        Ok(match self {
            Self::Dense(w) => Self::Dense(w.narrow(0, start, len)?),
            Self::Matrix(p) => Self::Matrix(p.narrow(1, start, len)?),
            Self::Packed(w) => Self::Packed(
                w.narrow_channels(start, len)
                    .or_else(|_| copy_channels(w, start, len))?,
            ),
        })
    }

    /// This weight packed to `format` (a packed weight is returned as it is if it already has that format).
    /// Reads the dense values once; the dense tensor is freed when the caller drops it.
    pub fn pack(&self, format: PackedFormat) -> Result<Self> {
        let dense = match self {
            Self::Packed(w) if w.format() == format => return Ok(self.clone()),
            Self::Packed(w) => candle_core::bail!(
                "a weight packed as {:?} cannot be repacked as {format:?}",
                w.format()
            ),
            Self::Dense(w) => w.clone(),
            Self::Matrix(p) => p.t()?,
        };
        if dense.track_op() {
            candle_core::bail!(
                "trainable weights cannot be packed to {format:?}: training runs the f32 model"
            );
        }
        let (n, k) = dense.dims2()?;
        let values = dense
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::Packed(match format {
            PackedFormat::Int8 => PackedWeight::quantize_int8(&values, n, k)?,
            PackedFormat::Bf16 => PackedWeight::from_f32_as_bf16(&values, n, k)?,
        }))
    }

    /// The packed weight, if this one is packed.
    pub fn packed(&self) -> Option<&PackedWeight> {
        match self {
            Self::Packed(w) => Some(w),
            Self::Dense(_) | Self::Matrix(_) => None,
        }
    }

    /// The dense tensor in its stored layout, or an error for a packed weight (training and gradient-based code
    /// need the f32 model).
    pub fn dense(&self) -> Result<&Tensor> {
        match self {
            Self::Dense(t) | Self::Matrix(t) => Ok(t),
            Self::Packed(w) => candle_core::bail!(
                "this weight is packed as {:?} for inference; training and gradients need the f32 model",
                w.format()
            ),
        }
    }
}

/// Channels `start .. start + len` of a packed weight copied into a weight of their own (bit for bit).
fn copy_channels(w: &PackedWeight, start: usize, len: usize) -> Result<PackedWeight> {
    let k = w.k();
    let rows = start * k..(start + len) * k;
    match w.format() {
        PackedFormat::Int8 => {
            let (values, scales) = w.int8_rows()?;
            PackedWeight::from_int8(&values[rows], &scales[start..start + len], len, k)
        }
        PackedFormat::Bf16 => PackedWeight::from_bf16_bits(&w.bf16_rows()?[rows], len, k),
    }
}

/// `x·Wᵀ (+ b)` over the last dimension of `x`, for any [`LinearWeight`]. Leading dimensions are folded so that
/// one large GEMM runs instead of a batch of small ones.
pub fn linear(x: &Tensor, weight: &LinearWeight, bias: Option<&Tensor>) -> Result<Tensor> {
    match weight {
        LinearWeight::Dense(w) => dense_linear(x, w, bias),
        LinearWeight::Matrix(p) => match bias {
            Some(b) => project(x, p)?.broadcast_add(b),
            None => project(x, p),
        },
        LinearWeight::Packed(w) => packed_linear(x, w, bias, |_| {}),
    }
}

/// `x·Wᵀ (+ b)` with a packed weight: the activations as f32 rows on the CPU, the low-precision product,
/// `then` applied to the f32 result in place (an activation), the result in the activations' dtype. The one
/// place that runs a packed weight.
fn packed_linear(
    x: &Tensor,
    weight: &PackedWeight,
    bias: Option<&Tensor>,
    then: impl FnOnce(&mut [f32]),
) -> Result<Tensor> {
    if any_tracks(&[x]) {
        candle_core::bail!(
            "no gradient flows through a weight packed as {:?}: training and backward passes need the f32 model",
            weight.format()
        );
    }
    if !matches!(x.device(), Device::Cpu) {
        candle_core::bail!(
            "weights packed as {:?} run on the CPU only, not on {:?}",
            weight.format(),
            x.device()
        );
    }
    let (flat, out_shape) = fold_rows(x, weight.n())?;
    let rows = flat.dim(0)?;
    let flat = flat.to_dtype(DType::F32)?.contiguous()?;
    let bias = bias
        .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
        .transpose()?;
    // The activations are read where they lie (a copy of them would cost a pass over memory per product).
    let (storage, layout) = flat.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("packed product: f32 CPU activations expected");
    };
    let product = |slots: &mut [std::mem::MaybeUninit<f32>]| {
        packed_product(&data[start..end], rows, weight, bias.as_deref(), slots)
    };
    // SAFETY: when `packed_product` returns Ok it has initialised every value of the output it was given (its
    // contract).
    let mut out = unsafe { kernels::filled(rows * weight.n(), product) }?;
    drop(storage);
    then(&mut out);
    Tensor::from_vec(out, out_shape, x.device())?.to_dtype(x.dtype())
}

/// Packed products of at most this many activation rows run weight-only (f32 activations). One row (a greedy
/// decoding step at batch 1) is bound by the bytes of the weight, which both kinds of kernel read once; from two
/// rows on (beam search, batches) the widening of the weight in registers makes the weight-only kernel
/// FMA-bound, and the integer dot products with per-row quantised activations are several times faster.
const WEIGHT_ONLY_MAX_ROWS: usize = 1;

/// The low-precision kernel of a packed product of `m` activation rows: the weight-only kernel for at most
/// [`WEIGHT_ONLY_MAX_ROWS`] rows; more rows on AMX tiles where the CPU has them (int8 and bf16), else `vpdpbusd`
/// (int8) or `vdpbf16ps` (bf16) on AVX-512, else the portable reference products. When it returns Ok, every
/// value of `out` is initialised: the AMX kernel writes all of them, the others get a zeroed output to write.
fn packed_product(
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [std::mem::MaybeUninit<f32>],
) -> Result<()> {
    let thin = m <= WEIGHT_ONLY_MAX_ROWS;
    #[cfg(target_arch = "x86_64")]
    if !thin {
        if let Some(cpu) = super::kernels::cpu::amx() {
            return lowp::amx::matmul(cpu, x, m, weight, bias, out);
        }
    }
    let out = lowp::zeroed(out);
    #[cfg(target_arch = "x86_64")]
    {
        use super::kernels::cpu;
        if thin {
            if let Some(cpu) = cpu::avx512() {
                return lowp::avx512::thin_matmul(cpu, x, m, weight, bias, out);
            }
        } else {
            match (weight.format(), cpu::avx512_vnni(), cpu::avx512_bf16()) {
                (PackedFormat::Int8, Some(cpu), _) => {
                    return lowp::avx512::matmul_int8_vnni(cpu, x, m, weight, bias, out)
                }
                (PackedFormat::Bf16, _, Some(cpu)) => {
                    return lowp::avx512::matmul_bf16(cpu, x, m, weight, bias, out)
                }
                _ => {}
            }
        }
    }
    if thin {
        lowp::thin_matmul_reference(x, m, weight, bias, out)
    } else {
        lowp::matmul_reference(x, m, weight, bias, out)
    }
}

/// `x·Wᵀ (+ b)` with a dense `weight` (out, in), as `nn.Linear` stores it.
fn dense_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (flat, out_shape) = fold_rows(x, weight.dim(0)?)?;
    let mut operands = vec![&flat, weight];
    operands.extend(bias);
    let y = match (thin_matmul::fits(&flat, weight, 1), path(&operands)) {
        (true, _) => thin_matmul::thin_matmul_transposed(&flat, weight)?,
        // The bias is the fused GEMM's initial accumulator.
        (false, Path::CocaCpu) => return kernels::linear(&flat, weight, bias)?.reshape(out_shape),
        (false, Path::CocaCuda | Path::Candle) => flat.matmul(&weight.t()?)?,
    };
    match bias {
        Some(b) => y.broadcast_add(b)?.reshape(out_shape),
        None => y.reshape(out_shape),
    }
}

/// The rows of the table `table` (vocabulary, width) for `ids` (u32, any shape): (ids…, width). A dense table
/// is indexed by candle (differentiable); a packed one (CPU inference, [`crate::Coca::pack_weights`]) has each
/// row dequantised as it is read, so the table stays in its int8 or bf16 bytes.
pub fn embedding(ids: &Tensor, table: &LinearWeight) -> Result<Tensor> {
    let mut shape = ids.dims().to_vec();
    shape.push(table.in_dim()?);
    let flat = ids.flatten_all()?;
    match table {
        LinearWeight::Dense(t) => t.index_select(&flat, 0)?.reshape(shape),
        LinearWeight::Matrix(_) => {
            candle_core::bail!(
                "an embedding table is stored (vocabulary, width), not as a projection"
            )
        }
        LinearWeight::Packed(w) => {
            let device = flat.device().clone();
            let ids = flat.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            let k = w.k();
            let mut rows = vec![0f32; ids.len() * k];
            for (&id, row) in ids.iter().zip(rows.chunks_exact_mut(k)) {
                if id as usize >= w.n() {
                    candle_core::bail!("token id {id} is outside the vocabulary of {}", w.n());
                }
                w.dequantize_channel(id as usize, row)?;
            }
            Tensor::from_vec(rows, shape, &device)
        }
    }
}

/// `x @ P` for open_clip's bare projection matrices stored as (in, out), over the last dimension of `x`.
pub fn project(x: &Tensor, proj: &Tensor) -> Result<Tensor> {
    let (flat, out_shape) = fold_rows(x, proj.dim(1)?)?;
    let y = match thin_matmul::fits(&flat, proj, 0) {
        true => thin_matmul::thin_matmul(&flat, proj)?,
        false => flat.matmul(proj)?,
    };
    y.reshape(out_shape)
}

/// `x + y` for operands of one shape, the residual stream's sums.
pub fn add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    match path(&[x, y]) {
        Path::CocaCpu if x.shape() == y.shape() => kernels::add(x, y),
        _ => x + y,
    }
}

/// LayerNorm over the last dimension, computed in f32 whatever the input dtype (as open_clip's `LayerNormFp32`
/// does for half-precision weights), result cast back to the input dtype.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    // candle's kernel accumulates in f32 whatever the storage dtype, as LayerNormFp32 does, but has no backward
    // and takes one dtype.
    let candle_kernel =
        !any_tracks(&[x, weight, bias]) && weight.dtype() == dtype && bias.dtype() == dtype;
    match (path(&[x, weight, bias]), candle_kernel) {
        (Path::CocaCpu, _) | (Path::CocaCuda, false) => kernels::layer_norm(x, weight, bias, eps),
        (Path::CocaCuda | Path::Candle, true) => {
            candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32)
        }
        (Path::Candle, false) => {
            let xf = x.to_dtype(DType::F32)?;
            let mean = xf.mean_keepdim(D::Minus1)?;
            let centered = xf.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
            let w = weight.to_dtype(DType::F32)?;
            let b = bias.to_dtype(DType::F32)?;
            normed.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(dtype)
        }
    }
}

/// Softmax over the last dimension (computed in f32 for half-precision inputs).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !any_tracks(&[x]) {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    let xf = x.to_dtype(DType::F32)?;
    // The max only stabilises the exponent; it carries no gradient (softmax is shift-invariant).
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let num = xf.broadcast_sub(&max)?.exp()?;
    let den = num.sum_keepdim(D::Minus1)?;
    num.broadcast_div(&den)?.to_dtype(x.dtype())
}

/// Attention probabilities `softmax(scale · scores + mask)` over the last dimension (`mask` additive,
/// broadcastable to `scores`).
pub fn attention_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut operands = vec![scores];
    operands.extend(mask);
    match (path(&operands), any_tracks(&[scores])) {
        (Path::CocaCpu | Path::CocaCuda, true) => {
            kernels::scaled_masked_softmax(scores, scale, mask)
        }
        _ => {
            let mut scores = (scores * scale)?;
            if let Some(mask) = mask {
                scores = scores.broadcast_add(mask)?;
            }
            softmax_last_dim(&scores)
        }
    }
}

/// (batch, len, E) → (batch, heads, len, E / heads), contiguous.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, e) = x.dims3()?;
    x.reshape((b, l, heads, e / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Multi-head scaled dot-product attention `softmax(Q·Kᵀ/√d + mask)·V` over projected queries, keys and values,
/// with the heads merged: (batch, queries, E). `mask` is additive (−∞ = blocked), broadcastable to
/// (batch, heads, queries, keys) except along the keys.
pub fn attention(projections: Projections, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut operands = match projections {
        Projections::Packed(qkv) => vec![qkv],
        Projections::QueryKeyValue(q, kv) => vec![q, kv],
        Projections::Separate(q, k, v) => vec![q, k, v],
    };
    operands.extend(mask);
    match path(&operands) {
        Path::CocaCpu => kernels::multi_head_attention(projections, heads, mask),
        Path::CocaCuda | Path::Candle => {
            let (q, k, v) = match projections {
                Projections::Packed(qkv) => {
                    let e = qkv.dim(2)? / 3;
                    let part = |i| qkv.narrow(2, i * e, e);
                    (part(0)?, part(1)?, part(2)?)
                }
                Projections::QueryKeyValue(q, kv) => {
                    let e = kv.dim(2)? / 2;
                    (q.clone(), kv.narrow(2, 0, e)?, kv.narrow(2, e, e)?)
                }
                Projections::Separate(q, k, v) => (q.clone(), k.clone(), v.clone()),
            };
            let [q, k, v] = [q, k, v].map(|t| split_heads(&t, heads));
            attention_heads(&q?, &k?, &v?, mask)
        }
    }
}

/// [`attention`] over heads already split: `q` (batch, heads, queries, d), `k` and `v` (batch, heads, keys, d),
/// result (batch, queries, heads·d). Composed on every path (no kernel reads this layout, which the decoding
/// cache keeps); the softmax is [`attention_softmax`]'s choice.
pub fn attention_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, h, lq, d) = q.dims4()?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = q.matmul(&k.t()?)?;
    let probs = attention_softmax(&scores, scale, mask)?;
    let out = probs.matmul(v)?; // (b, h, lq, d)
    out.transpose(1, 2)?.reshape((b, lq, h * d))
}

/// Log-softmax over the last dimension, in f32.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let shifted = xf.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// The negative log-likelihood of each row's label under the softmax of that row of `logits` (rows, classes):
/// `labels` (rows,) u32, result (rows,) in f32.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    match path(&[logits]) {
        Path::CocaCpu => {
            let host = labels
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<u32>()?;
            kernels::cross_entropy_rows(logits, &host)
        }
        Path::CocaCuda | Path::Candle => log_softmax_last_dim(logits)?
            .gather(&labels.reshape(((), 1))?, D::Minus1)?
            .squeeze(1)?
            .neg(),
    }
}

/// `scale · Σ NLL` of `labels` (on the host, one per row) under `softmax(hidden · head)`, over the rows whose
/// label is not `pad_id`, without keeping the (rows × vocabulary) logits: `hidden` (rows, width), `head`
/// (width, vocabulary). A scalar, differentiable in `hidden` and `head`.
pub fn lm_head_nll_sum(
    hidden: &Tensor,
    head: &Tensor,
    labels: &[u32],
    pad_id: u32,
    scale: f64,
) -> Result<Tensor> {
    match path(&[hidden, head]) {
        Path::CocaCpu => kernels::lm_head_cross_entropy_sum(hidden, head, labels, pad_id, scale),
        // Nothing to add: no pass over the head, and no zero gradients.
        Path::CocaCuda | Path::Candle if labels.iter().all(|&l| l == pad_id) => {
            Tensor::zeros((), DType::F32, hidden.device())
        }
        Path::CocaCuda | Path::Candle => {
            chunked_lm_head::lm_head_nll_sum(hidden, head, labels, pad_id, scale)
        }
    }
}

/// Exact (erf) GELU, as `nn.GELU()`; differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    match (path(&[x]), any_tracks(&[x])) {
        // On the CPU coca's vectorised kernel is faster than candle's scalar erf, with or without a gradient.
        (Path::CocaCpu, _) | (Path::CocaCuda, true) => kernels::gelu_erf(x),
        (Path::CocaCuda, false) | (Path::Candle, _) => x.gelu_erf(),
    }
}

/// QuickGELU `x·σ(1.702x)`, for configs with `quick_gelu: true`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
}

/// `act(x·Wᵀ + b)`: the first half of the MLP.
pub fn linear_activation(
    x: &Tensor,
    weight: &LinearWeight,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    match (act, bias, weight) {
        // On the coca CPU path GELU runs in place on a packed product's output, which needs no second buffer.
        (Activation::Gelu, _, LinearWeight::Packed(w)) if path(&[x]) == Path::CocaCpu => {
            packed_linear(x, w, bias, kernels::gelu_erf_in_place)
        }
        // With coca's CUDA kernels the bias joins the GELU kernel instead of taking a pass of its own.
        (Activation::Gelu, Some(b), LinearWeight::Dense(w))
            if path(&[x, w, b]) == Path::CocaCuda =>
        {
            kernels::bias_gelu_erf(&linear(x, weight, None)?, b)
        }
        (Activation::Gelu, _, _) => gelu(&linear(x, weight, bias)?),
        (Activation::QuickGelu, _, _) => quick_gelu(&linear(x, weight, bias)?),
    }
}

/// `F.normalize(x, dim=-1)`: divide by the L2 norm, clamped below at 1e-12.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Var;

    /// Largest absolute elementwise difference (shared by the kernel tests of this module tree).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_layer_norm_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 16, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 16, &dev).unwrap();
        let fused = layer_norm(&x, &w, &b, LAYER_NORM_EPS).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let slow = layer_norm(xv.as_tensor(), &w, &b, LAYER_NORM_EPS).unwrap();
        assert!(max_abs_diff(&fused, &slow) < 1e-5);
    }

    #[test]
    fn layer_norm_gradient_reaches_weights() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let w = Var::ones(8, DType::F32, &dev).unwrap();
        let b = Var::zeros(8, DType::F32, &dev).unwrap();
        let y = layer_norm(&x, w.as_tensor(), b.as_tensor(), LAYER_NORM_EPS).unwrap();
        let loss = (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let grads = loss.backward().unwrap();
        let gw = grads.get(w.as_tensor()).expect("weight gradient");
        // d/dw of 0.5·Σ(w·n + b)² at w=1, b=0 is Σ n², which is 4 per feature for unit-variance rows.
        let gw = gw.to_vec1::<f32>().unwrap();
        assert!(gw.iter().all(|g| g.abs() > 0.1), "{gw:?}");
        assert!(grads.get(b.as_tensor()).is_some());
    }

    #[test]
    fn softmax_paths_agree_and_differentiate() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 7), &dev).unwrap();
        let fused = softmax_last_dim(&x).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let slow = softmax_last_dim(xv.as_tensor()).unwrap();
        assert!(max_abs_diff(&fused, &slow) < 1e-6);
        let target = Tensor::randn(0f32, 1.0, (2, 7), &dev).unwrap();
        let loss = (slow * target).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(xv.as_tensor()).expect("input gradient");
        // Softmax gradients sum to zero along the normalised axis.
        let row_sums = g.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(row_sums.iter().all(|s| s.abs() < 1e-5), "{row_sums:?}");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1e-3
        );
    }

    #[test]
    fn composed_ops_are_chosen_only_inside_the_scope_and_after_a_panic_in_it() {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let default = path(&[&x]);
        with_composed_ops(|| {
            assert_eq!(path(&[&x]), Path::Candle);
            // Nested scopes keep it off until the outermost ends.
            with_composed_ops(|| assert_eq!(path(&[&x]), Path::Candle));
            assert_eq!(path(&[&x]), Path::Candle);
        });
        assert_eq!(path(&[&x]), default);
        let caught = std::panic::catch_unwind(|| with_composed_ops(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(path(&[&x]), default);
        // Other threads are not affected.
        with_composed_ops(|| {
            let elsewhere = std::thread::scope(|s| s.spawn(|| path(&[&x])).join().unwrap());
            assert_eq!(elsewhere, default);
        });
    }

    #[test]
    fn the_coca_cpu_path_needs_every_operand_f32_on_the_cpu() {
        if !coca_cpu_enabled() {
            println!("skipped: COCA_FUSED=0 turns the coca CPU path off");
            return;
        }
        let f32s = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let bf16 = f32s.to_dtype(DType::BF16).unwrap();
        assert_eq!(path(&[&f32s, &f32s]), Path::CocaCpu);
        assert_eq!(path(&[&f32s, &bf16]), Path::Candle);
        assert_eq!(path(&[&bf16]), Path::Candle);
    }

    #[test]
    fn linear_takes_the_thin_kernel_for_few_rows_and_agrees_with_the_other_paths() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (40, 24), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 40, &dev).unwrap();
        for rows in [1, thin_matmul::MAX_ROWS, thin_matmul::MAX_ROWS + 1] {
            let x = Tensor::randn(0f32, 1.0, (2, rows, 24), &dev).unwrap();
            let flat = x.reshape((2 * rows, 24)).unwrap();
            assert_eq!(
                thin_matmul::fits(&flat, &w, 1),
                2 * rows <= thin_matmul::MAX_ROWS
            );
            let reference = x
                .broadcast_matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let got = linear(&x, &LinearWeight::Dense(w.clone()), Some(&b)).unwrap();
            assert_eq!(got.dims(), &[2, rows, 40]);
            assert!(max_abs_diff(&got, &reference) < 1e-5, "{rows} rows");
            let composed = with_composed_ops(|| {
                linear(&x, &LinearWeight::Dense(w.clone()), Some(&b)).unwrap()
            });
            assert!(
                max_abs_diff(&composed, &reference) < 1e-5,
                "{rows} rows, composed"
            );
        }
        // A recorded gradient never takes the thin kernel, whose result is outside the graph.
        let wv = Var::from_tensor(&w).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 24), &dev).unwrap();
        assert!(!thin_matmul::fits(&x, wv.as_tensor(), 1));
        let y = linear(&x, &LinearWeight::Dense(wv.as_tensor().clone()), None).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(wv.as_tensor()).is_some());
    }

    #[test]
    fn forwards_move_onto_the_pool_except_under_composed_ops() {
        let cpu = Device::Cpu;
        // From a thread outside the pool (a test thread): onto one of rayon's threads.
        let outside =
            std::thread::spawn(move || on_kernel_threads(&cpu, rayon::current_thread_index))
                .join()
                .unwrap();
        assert!(outside.is_some());
        // Already on the pool: where it is.
        let inside = rayon::scope(|_| {
            let here = rayon::current_thread_index();
            (
                here,
                on_kernel_threads(&Device::Cpu, rayon::current_thread_index),
            )
        });
        assert_eq!(inside.0, inside.1);
        // Inside `with_composed_ops` (a flag of this thread): on this thread, which keeps the flag.
        let composed = std::thread::spawn(|| {
            with_composed_ops(|| {
                on_kernel_threads(&Device::Cpu, || {
                    (rayon::current_thread_index(), coca_cpu_enabled())
                })
            })
        })
        .join()
        .unwrap();
        assert_eq!(composed, (None, false));
    }

    #[test]
    fn packed_embedding_rows_are_the_dequantised_table_rows() {
        let dev = Device::Cpu;
        let (vocab, width) = (37, 24);
        let table = Tensor::randn(0f32, 0.1, (vocab, width), &dev).unwrap();
        let ids = Tensor::new(&[[3u32, 0, 36], [5, 5, 17]], &dev).unwrap();
        let dense = embedding(&ids, &LinearWeight::Dense(table.clone())).unwrap();
        assert_eq!(dense.dims(), &[2, 3, width]);
        let want_dense = table
            .index_select(&ids.flatten_all().unwrap(), 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            dense.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want_dense
        );
        for format in [PackedFormat::Int8, PackedFormat::Bf16] {
            let packed = LinearWeight::Dense(table.clone()).pack(format).unwrap();
            let got = embedding(&ids, &packed).unwrap();
            assert_eq!(got.dims(), &[2, 3, width]);
            let all = packed.packed().unwrap().dequantize().unwrap();
            let want: Vec<f32> = [3usize, 0, 36, 5, 5, 17]
                .iter()
                .flat_map(|&id| all[id * width..(id + 1) * width].to_vec())
                .collect();
            assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
            // Rounded, but close to the f32 rows.
            let worst = want
                .iter()
                .zip(&want_dense)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(worst < 0.01, "{format:?}: {worst}");
            let outside = Tensor::new(&[37u32], &dev).unwrap();
            let err = embedding(&outside, &packed).unwrap_err().to_string();
            assert!(
                err.contains("token id 37 is outside the vocabulary of 37"),
                "{err}"
            );
        }
    }

    #[test]
    fn packed_products_follow_the_reference_and_narrowing_keeps_their_bits() {
        let dev = Device::Cpu;
        let (n, k) = (40, 24);
        let w = Tensor::randn(0f32, 0.1, (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, n, &dev).unwrap();
        // 10 rows: the integer (or bf16) dot-product kernels.
        let x = Tensor::randn(0f32, 1.0, (2, 5, k), &dev).unwrap();
        for format in [PackedFormat::Int8, PackedFormat::Bf16] {
            let packed = LinearWeight::Dense(w.clone()).pack(format).unwrap();
            let got = linear(&x, &packed, Some(&b)).unwrap();
            assert_eq!(got.dims(), &[2, 5, n]);
            // GELU in place on the packed output: the bits of GELU as a separate op.
            let fused = linear_activation(&x, &packed, Some(&b), Activation::Gelu).unwrap();
            let apart = gelu(&got).unwrap();
            assert_eq!(
                fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                apart.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            // The same product through the reference directly: int8 to the bit, bf16 up to the order of sums.
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut want = vec![0f32; 10 * n];
            let bias = b.to_vec1::<f32>().unwrap();
            lowp::matmul_reference(&xs, 10, packed.packed().unwrap(), Some(&bias), &mut want)
                .unwrap();
            let got_values = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            match format {
                PackedFormat::Int8 => assert_eq!(got_values, want),
                PackedFormat::Bf16 => {
                    let worst = got_values
                        .iter()
                        .zip(&want)
                        .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
                    assert!(worst < 1e-5, "bf16 differs from the reference by {worst}");
                }
            }
            // A decoding step's single row takes the weight-only product.
            let row = x.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap();
            let one = linear(&row, &packed, Some(&b)).unwrap();
            let mut want_one = vec![0f32; n];
            lowp::thin_matmul_reference(
                &xs[..k],
                1,
                packed.packed().unwrap(),
                Some(&bias),
                &mut want_one,
            )
            .unwrap();
            let one = one.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let worst = one
                .iter()
                .zip(&want_one)
                .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
            assert!(
                worst < 1e-5,
                "{format:?} thin product differs from its reference by {worst}"
            );
            // Close to f32.
            let dense = linear(&x, &LinearWeight::Dense(w.clone()), Some(&b)).unwrap();
            assert!(max_abs_diff(&got, &dense) < 0.05, "{format:?}");
            // A view of whole panels and a copy of a range that is not: the same bits as those columns.
            for (start, len) in [(16, 24), (8, 20)] {
                let part = packed.narrow_out(start, len).unwrap();
                let y = linear(&x, &part, Some(&b.narrow(0, start, len).unwrap())).unwrap();
                let cols = got.narrow(2, start, len).unwrap();
                assert_eq!(max_abs_diff(&y, &cols), 0.0, "{format:?} {start}+{len}");
            }
            // A projection matrix (in, out) packs as its transpose.
            let matrix = LinearWeight::Matrix(w.t().unwrap()).pack(format).unwrap();
            assert_eq!(
                max_abs_diff(&linear(&x, &matrix, Some(&b)).unwrap(), &got),
                0.0
            );
        }
    }

    #[test]
    fn packed_weights_refuse_gradients() {
        let dev = Device::Cpu;
        let w = Var::randn(0f32, 0.1, (16, 8), &dev).unwrap();
        let err = LinearWeight::Dense(w.as_tensor().clone())
            .pack(PackedFormat::Int8)
            .unwrap_err();
        assert!(
            err.to_string().contains("training runs the f32 model"),
            "{err}"
        );
        let packed = LinearWeight::Dense(w.as_tensor().detach())
            .pack(PackedFormat::Bf16)
            .unwrap();
        let x = Var::randn(0f32, 1.0, (2, 8), &dev).unwrap();
        let err = linear(x.as_tensor(), &packed, None).unwrap_err();
        assert!(err.to_string().contains("no gradient flows"), "{err}");
        assert!(packed.dense().is_err());
    }

    #[test]
    fn attention_paths_agree_for_every_projection_layout() {
        let dev = Device::Cpu;
        let (b, lq, lk, e, heads) = (2, 3, 5, 8, 2);
        let qkv = Tensor::randn(0f32, 1.0, (b, lq, 3 * e), &dev).unwrap();
        let q = Tensor::randn(0f32, 1.0, (b, lq, e), &dev).unwrap();
        let kv = Tensor::randn(0f32, 1.0, (b, lk, 2 * e), &dev).unwrap();
        let (k, v) = (kv.narrow(2, 0, e).unwrap(), kv.narrow(2, e, e).unwrap());
        let mask = crate::nn::AttentionMask::causal(0, lq, &dev).unwrap().0;
        let cases = [
            (Projections::Packed(&qkv), Some(&mask)),
            (Projections::QueryKeyValue(&q, &kv), None),
            (Projections::Separate(&q, &k, &v), None),
        ];
        for (projections, mask) in cases {
            let fused = attention(projections, heads, mask).unwrap();
            let composed = with_composed_ops(|| attention(projections, heads, mask).unwrap());
            assert!(max_abs_diff(&fused, &composed) < 1e-5, "{projections:?}");
        }
    }

    #[test]
    fn lm_head_loss_paths_agree_and_all_padding_adds_nothing() {
        let dev = Device::Cpu;
        let h = Tensor::randn(0f32, 1.0, (6, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.5, (8, 11), &dev).unwrap();
        let labels = [3, 0, 10, 1, 0, 7];
        let fused = lm_head_nll_sum(&h, &w, &labels, 0, 0.5).unwrap();
        let chunked = with_composed_ops(|| lm_head_nll_sum(&h, &w, &labels, 0, 0.5).unwrap());
        assert!(max_abs_diff(&fused, &chunked) < 1e-5);
        let pads = [0; 6];
        for sum in [
            lm_head_nll_sum(&h, &w, &pads, 0, 0.5).unwrap(),
            with_composed_ops(|| lm_head_nll_sum(&h, &w, &pads, 0, 0.5).unwrap()),
        ] {
            assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let x = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let n = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n[0], vec![0.6, 0.8]);
        assert_eq!(n[1], vec![0.0, 0.0]);
    }
}
