//! GPU checks of coca's CUDA kernels (LayerNorm, exact GELU, the scaled masked attention softmax): forward
//! outputs and every input gradient, through candle's autograd, against the CPU fused kernels on the same
//! inputs. Shapes cover rows of one, odd widths, widths above a warp and up to 4096, non-contiguous inputs,
//! broadcast masks and fully masked rows.
//!
//! Built only with `--features cuda` (`scripts/gpu/build-kernel-tests.sh` prints the executable); CI never
//! builds it. Without a CUDA device every test prints "skipped: no CUDA device" and passes.
//!
//! Tolerances, as `max |gpu − cpu| ≤ rel · max |cpu|`: f32 1e-5 for outputs and 2e-5 for gradients (the GPU
//! sums in a different order); bf16 activations 1e-2 (one bf16 rounding of each output, 2⁻⁹ relative, plus the
//! backward reading the bf16-rounded forward output), while the f32 LayerNorm parameter gradients stay at 2e-5.
//! The CPU reference sees the same bf16-rounded inputs, in f32.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use coca_model::nn::raw_kernels;

/// Output and gradient tolerances of f32 activations.
const F32_OUT: f32 = 1e-5;
const F32_GRAD: f32 = 2e-5;
/// Tolerance of bf16 activations and their gradients.
const BF16: f32 = 1e-2;

/// The first CUDA device, or `None` after saying the test is skipped.
fn gpu(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            println!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

/// Deterministic normal samples (splitmix64 + Box–Muller), so a failure reproduces.
fn randn(seed: u64, dims: &[usize], mean: f32, std: f32) -> Tensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            mean + std * z as f32
        })
        .collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

/// `t` as the kernels under test will see it: rounded through `dtype` (a no-op for f32), in f32 on the CPU.
fn as_seen(t: &Tensor, dtype: DType) -> Tensor {
    t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap()
}

/// Fail unless `max |got − want| ≤ rel · max |want|`, naming `what`.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let got = got
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let d = (g - w).abs();
        // NaN anywhere is a failure (`d > worst` is false for NaN).
        assert!(
            !d.is_nan(),
            "{what}: element {i} is {g} on the GPU, {w} on the CPU"
        );
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= rel * scale,
        "{what}: max |gpu − cpu| = {worst:e} at element {at} ({} vs {}) exceeds {rel:e} × {scale:e}",
        got[at],
        want[at]
    );
}

/// Gradients of `Σ y ∘ target` (in f32) with respect to each of `vars`.
fn grads_of(y: &Tensor, target: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let loss = (y.to_dtype(DType::F32).unwrap() * target)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    vars.iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("gradient reaches the variable")
                .clone()
        })
        .collect()
}

/// Output and activation-gradient tolerances of `dtype`.
fn tolerances(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::BF16 => (BF16, BF16),
        _ => (F32_OUT, F32_GRAD),
    }
}

fn check_layer_norm(dev: &Device, dims: &[usize], dtype: DType, transpose: bool, seed: u64) {
    let what = format!(
        "layer norm {dims:?} {dtype:?}{}",
        if transpose { " transposed" } else { "" }
    );
    // Means away from zero exercise the two-pass variance.
    let x = as_seen(&randn(seed, dims, 0.5, 2.0), dtype);
    let xs = |t: &Tensor| {
        if transpose {
            t.transpose(0, 1).unwrap()
        } else {
            t.clone()
        }
    };
    let out_dims = xs(&x).dims().to_vec();
    let width = *out_dims.last().unwrap();
    let w = randn(seed + 1, &[width], 1.0, 0.3);
    let b = randn(seed + 2, &[width], 0.0, 0.3);
    let target = as_seen(&randn(seed + 3, &out_dims, 0.0, 1.0), dtype);

    let (xc, wc, bc) = (
        Var::from_tensor(&x).unwrap(),
        Var::from_tensor(&w).unwrap(),
        Var::from_tensor(&b).unwrap(),
    );
    let want =
        raw_kernels::layer_norm(&xs(xc.as_tensor()), wc.as_tensor(), bc.as_tensor(), 1e-5).unwrap();
    let want_grads = grads_of(&want, &target, &[&xc, &wc, &bc]);

    let to_gpu = |t: &Tensor, dt: DType| {
        Var::from_tensor(&t.to_dtype(dt).unwrap().to_device(dev).unwrap()).unwrap()
    };
    let (xg, wg, bg) = (
        to_gpu(&x, dtype),
        to_gpu(&w, DType::F32),
        to_gpu(&b, DType::F32),
    );
    let got =
        raw_kernels::layer_norm(&xs(xg.as_tensor()), wg.as_tensor(), bg.as_tensor(), 1e-5).unwrap();
    assert_eq!(got.dtype(), dtype, "{what}: output dtype");
    let got_grads = grads_of(&got, &target.to_device(dev).unwrap(), &[&xg, &wg, &bg]);
    assert_eq!(got_grads[0].dtype(), dtype, "{what}: dx dtype");
    assert_eq!(got_grads[1].dtype(), DType::F32, "{what}: dweight dtype");

    let (out_tol, grad_tol) = tolerances(dtype);
    assert_close(&format!("{what}: output"), &got, &want, out_tol);
    assert_close(
        &format!("{what}: dx"),
        &got_grads[0],
        &want_grads[0],
        grad_tol,
    );
    // The parameter gradients are f32 sums of the same (rounded) inputs on both sides.
    assert_close(
        &format!("{what}: dweight"),
        &got_grads[1],
        &want_grads[1],
        F32_GRAD,
    );
    assert_close(
        &format!("{what}: dbias"),
        &got_grads[2],
        &want_grads[2],
        F32_GRAD,
    );
    println!("{what}: ok");
}

#[test]
fn layer_norm_matches_the_cpu_kernel() {
    let Some(dev) = gpu("layer_norm_matches_the_cpu_kernel") else {
        return;
    };
    let shapes: &[&[usize]] = &[
        &[1, 768],   // one row
        &[7, 37],    // odd width, above a warp
        &[5, 3],     // narrower than a warp
        &[4, 1],     // width 1: x̂ = 0
        &[301, 257], // many rows, odd width
        &[3, 5, 1000],
        &[5, 4096],  // the widest rows asked for
        &[3000, 96], // many chunks in the parameter gradient, the last one short
    ];
    for (i, dims) in shapes.iter().enumerate() {
        for dtype in [DType::F32, DType::BF16] {
            check_layer_norm(&dev, dims, dtype, false, 10 * i as u64);
        }
    }
    for dtype in [DType::F32, DType::BF16] {
        check_layer_norm(&dev, &[37, 6, 50], dtype, true, 99);
    }
}

#[test]
fn layer_norm_parameter_gradients_are_deterministic() {
    let Some(dev) = gpu("layer_norm_parameter_gradients_are_deterministic") else {
        return;
    };
    let x = Var::from_tensor(&randn(7, &[2048, 768], 0.0, 1.0).to_device(&dev).unwrap()).unwrap();
    let w = Var::from_tensor(&randn(8, &[768], 1.0, 0.3).to_device(&dev).unwrap()).unwrap();
    let b = Var::from_tensor(&randn(9, &[768], 0.0, 0.3).to_device(&dev).unwrap()).unwrap();
    let target = randn(10, &[2048, 768], 0.0, 1.0).to_device(&dev).unwrap();
    let run = || {
        let y = raw_kernels::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        grads_of(&y, &target, &[&w, &b])
            .iter()
            .map(|g| g.to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run(), "two identical backward passes differ");
}

fn check_gelu(dev: &Device, x: &Tensor, dtype: DType, transpose: bool, what: &str) {
    let what = format!("gelu {what} {:?} {dtype:?}", x.dims());
    let x = as_seen(x, dtype);
    let xs = |t: &Tensor| {
        if transpose {
            t.transpose(0, 1).unwrap()
        } else {
            t.clone()
        }
    };
    let out_dims = xs(&x).dims().to_vec();
    let target = as_seen(&randn(5, &out_dims, 0.0, 1.0), dtype);

    let xc = Var::from_tensor(&x).unwrap();
    let want = raw_kernels::gelu_erf(&xs(xc.as_tensor())).unwrap();
    let want_grad = grads_of(&want, &target, &[&xc]);

    let xg = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap();
    let got = raw_kernels::gelu_erf(&xs(xg.as_tensor())).unwrap();
    assert_eq!(got.dtype(), dtype, "{what}: output dtype");
    let got_grad = grads_of(&got, &target.to_device(dev).unwrap(), &[&xg]);
    assert_eq!(got_grad[0].dtype(), dtype, "{what}: dx dtype");

    let (out_tol, grad_tol) = tolerances(dtype);
    assert_close(&format!("{what}: output"), &got, &want, out_tol);
    assert_close(
        &format!("{what}: dx"),
        &got_grad[0],
        &want_grad[0],
        grad_tol,
    );
    println!("{what}: ok");
}

#[test]
fn gelu_matches_the_cpu_kernel() {
    let Some(dev) = gpu("gelu_matches_the_cpu_kernel") else {
        return;
    };
    // Points in both tails and around zero, where Φ and φ change fastest.
    let pts: Vec<f32> = (-1200..=1200).map(|i| i as f32 * 0.01).collect();
    let grid = Tensor::from_vec(pts, 2401, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        check_gelu(
            &dev,
            &Tensor::new(&[0.7f32], &Device::Cpu).unwrap(),
            dtype,
            false,
            "one element",
        );
        check_gelu(&dev, &grid, dtype, false, "grid −12..12");
        check_gelu(
            &dev,
            &randn(1, &[1031], 0.0, 3.0),
            dtype,
            false,
            "odd length",
        );
        check_gelu(
            &dev,
            &randn(2, &[9, 4, 1031], 0.0, 3.0),
            dtype,
            true,
            "transposed",
        );
        // More elements than one grid-stride pass covers (16 384 blocks of 256 threads).
        check_gelu(
            &dev,
            &randn(3, &[64, 3072 * 26], 0.0, 1.0),
            dtype,
            false,
            "large",
        );
    }
}

fn check_bias_gelu(dev: &Device, dims: &[usize], dtype: DType, seed: u64) {
    let what = format!("bias gelu {dims:?} {dtype:?}");
    let width = *dims.last().unwrap();
    let x = as_seen(&randn(seed, dims, 0.0, 2.0), dtype);
    // bf16 mixed precision keeps c_fc's bias in bf16.
    let b = as_seen(&randn(seed + 1, &[width], 0.0, 1.0), dtype);
    let target = as_seen(&randn(seed + 2, dims, 0.0, 1.0), dtype);

    let (xc, bc) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&b).unwrap());
    let want =
        raw_kernels::gelu_erf(&xc.as_tensor().broadcast_add(bc.as_tensor()).unwrap()).unwrap();
    let want_grads = grads_of(&want, &target, &[&xc, &bc]);

    let to_gpu =
        |t: &Tensor| Var::from_tensor(&t.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap();
    let (xg, bg) = (to_gpu(&x), to_gpu(&b));
    let got = raw_kernels::bias_gelu_erf(xg.as_tensor(), bg.as_tensor()).unwrap();
    assert_eq!(got.dtype(), dtype, "{what}: output dtype");
    let got_grads = grads_of(&got, &target.to_device(dev).unwrap(), &[&xg, &bg]);
    assert_eq!(got_grads[0].dtype(), dtype, "{what}: dx dtype");
    assert_eq!(got_grads[1].dtype(), dtype, "{what}: dbias dtype");

    let (out_tol, grad_tol) = tolerances(dtype);
    assert_close(&format!("{what}: output"), &got, &want, out_tol);
    assert_close(
        &format!("{what}: dx"),
        &got_grads[0],
        &want_grads[0],
        grad_tol,
    );
    assert_close(
        &format!("{what}: dbias"),
        &got_grads[1],
        &want_grads[1],
        grad_tol,
    );
    println!("{what}: ok");
}

#[test]
fn bias_gelu_matches_the_cpu_composition() {
    let Some(dev) = gpu("bias_gelu_matches_the_cpu_composition") else {
        return;
    };
    for dtype in [DType::F32, DType::BF16] {
        check_bias_gelu(&dev, &[1, 3072], dtype, 1);
        check_bias_gelu(&dev, &[7, 37], dtype, 2);
        check_bias_gelu(&dev, &[4, 50, 3072], dtype, 3);
        // More elements than one grid-stride pass covers.
        check_bias_gelu(&dev, &[2000, 2500], dtype, 4);
    }
}

/// A mask of `dims` with −∞ where `blocked(index)` holds, else small finite offsets.
fn mask(dims: &[usize], blocked: impl Fn(&[usize]) -> bool) -> Tensor {
    let n: usize = dims.iter().product();
    let mut index = vec![0usize; dims.len()];
    let mut data = Vec::with_capacity(n);
    for k in 0..n {
        data.push(if blocked(&index) {
            f32::NEG_INFINITY
        } else {
            (k % 7) as f32 * 0.25 - 0.5
        });
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

fn check_softmax(
    dev: &Device,
    dims: &[usize],
    m: Option<&Tensor>,
    dtype: DType,
    transpose: bool,
    seed: u64,
) {
    let what = format!(
        "softmax {dims:?} mask {:?} {dtype:?}{}",
        m.map(|m| m.dims().to_vec()),
        if transpose { " transposed" } else { "" }
    );
    let scale = 0.37;
    let x = as_seen(&randn(seed, dims, 0.0, 2.0), dtype);
    let xs = |t: &Tensor| {
        if transpose {
            t.transpose(0, 1).unwrap()
        } else {
            t.clone()
        }
    };
    let out_dims = xs(&x).dims().to_vec();
    let target = as_seen(&randn(seed + 1, &out_dims, 0.0, 1.0), dtype);

    let xc = Var::from_tensor(&x).unwrap();
    let want = raw_kernels::scaled_masked_softmax(&xs(xc.as_tensor()), scale, m).unwrap();
    let want_grad = grads_of(&want, &target, &[&xc]);

    let xg = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap();
    // The mask in the activations' dtype, as the attention layers hand it over (−∞ and the offsets are exact).
    let mg = m.map(|m| m.to_dtype(dtype).unwrap().to_device(dev).unwrap());
    let got = raw_kernels::scaled_masked_softmax(&xs(xg.as_tensor()), scale, mg.as_ref()).unwrap();
    assert_eq!(got.dtype(), dtype, "{what}: output dtype");
    let got_grad = grads_of(&got, &target.to_device(dev).unwrap(), &[&xg]);
    assert_eq!(got_grad[0].dtype(), dtype, "{what}: dx dtype");

    let (out_tol, grad_tol) = tolerances(dtype);
    assert_close(&format!("{what}: output"), &got, &want, out_tol);
    assert_close(
        &format!("{what}: dx"),
        &got_grad[0],
        &want_grad[0],
        grad_tol,
    );
    println!("{what}: ok");
}

#[test]
fn softmax_matches_the_cpu_kernel() {
    let Some(dev) = gpu("softmax_matches_the_cpu_kernel") else {
        return;
    };
    let causal = mask(&[9, 9], |i| i[1] > i[0]);
    // Padding keys per batch item, broadcast over heads and queries (the text tower's shape).
    let padding = mask(&[2, 1, 1, 6], |i| i[0] == 0 && i[3] >= 4);
    // Per-batch, per-query rows, with query 1 of batch 1 fully masked (its probabilities are zeros).
    let full = mask(&[2, 1, 4, 6], |i| i[0] == 1 && i[2] == 1);
    // ViT-B/32 attention rows (50 keys) with a mask over queries and keys shared by every batch item and head.
    let vit = mask(&[50, 50], |i| (i[0] + i[1]) % 11 == 0 && i[1] != i[0]);
    for dtype in [DType::F32, DType::BF16] {
        check_softmax(&dev, &[1, 77], None, dtype, false, 1);
        check_softmax(&dev, &[3, 2, 5, 11], None, dtype, false, 2);
        check_softmax(&dev, &[7, 3, 13], None, dtype, true, 3);
        check_softmax(&dev, &[2, 1000], None, dtype, false, 4);
        check_softmax(&dev, &[1, 1, 3, 257], None, dtype, false, 5);
        check_softmax(&dev, &[2, 3, 9, 9], Some(&causal), dtype, false, 6);
        check_softmax(&dev, &[2, 3, 4, 6], Some(&padding), dtype, false, 7);
        check_softmax(&dev, &[2, 3, 4, 6], Some(&full), dtype, false, 8);
        check_softmax(&dev, &[4, 12, 50, 50], Some(&vit), dtype, false, 9);
    }
}
