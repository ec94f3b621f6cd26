//! Multi-head scaled dot-product attention, `softmax(scale · Q·Kᵀ + mask)·V` per head, as one autograd node that
//! reads the heads straight out of the projections and writes them merged.
//!
//! Composed from candle ops, attention costs three head-splitting copies of the projections (each with a
//! zero-padded `narrow` backward), a head-merging copy of the output, two batched matmuls and a softmax, each a
//! graph node whose backward allocates and zero-fills its inputs' gradients. Here every (batch, head) pair is one
//! task on rayon's pool: the GEMM reads Q, K and V through their strides inside the projection tensors, the
//! probabilities are kept for the backward, and the output lands at its head's columns. The backward writes
//! each gradient element exactly once, in the layout of its input:
//!
//! * `dV = Pᵀ·dO`, `dP = dO·Vᵀ`;
//! * `dS = scale · P ∘ (dP − Σ_keys dP ∘ P)` (the softmax backward, with the score scale folded in);
//! * `dQ = dS·K`, `dK = dSᵀ·Q`.
//!
//! Fully masked rows give zero outputs and zero gradients, as [`super::scaled_masked_softmax`] does. Each task
//! runs its products single-threaded, so results do not depend on the thread count.

use std::sync::{Arc, OnceLock};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::gemm512::{self, Parallelism};
use super::softmax::MaskRows;
use super::{f32_slice, vexp};

/// Where the queries, keys and values come from; every tensor is (batch, tokens, columns).
#[derive(Debug, Clone, Copy)]
pub enum Projections<'a> {
    /// Self-attention over one packed projection (batch, tokens, 3E): queries, keys, values side by side.
    Packed(&'a Tensor),
    /// Cross-attention: queries (batch, queries, E) and packed keys and values (batch, keys, 2E).
    QueryKeyValue(&'a Tensor, &'a Tensor),
    /// Separate queries (batch, queries, E), keys and values (batch, keys, E each).
    Separate(&'a Tensor, &'a Tensor, &'a Tensor),
}

/// Multi-head attention over projected queries, keys and values: (batch, queries, E) with the heads merged
/// (head `h` in columns `h·E/heads..`). `mask` is additive (−∞ = blocked) and broadcasts to
/// (batch, heads, queries, keys) except along the keys. f32 on the CPU only; differentiable in the projections.
pub fn multi_head_attention(
    projections: Projections,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (inputs, roles) = match projections {
        Projections::Packed(qkv) => {
            let e = packed_width(qkv, 3)?;
            (vec![qkv], [(0, 0), (0, e), (0, 2 * e)])
        }
        Projections::QueryKeyValue(q, kv) => {
            let e = packed_width(kv, 2)?;
            (vec![q, kv], [(0, 0), (1, 0), (1, e)])
        }
        Projections::Separate(q, k, v) => (vec![q, k, v], [(0, 0), (1, 0), (2, 0)]),
    };
    let mut dims = Vec::with_capacity(inputs.len());
    for t in &inputs {
        dims.push(t.dims3()?);
    }
    let (batch, queries, q_cols) = dims[roles[0].0];
    let (k_batch, keys, _) = dims[roles[1].0];
    let width = if inputs.len() == 1 {
        q_cols / 3
    } else {
        q_cols
    };
    let consistent = heads > 0
        && width % heads == 0
        && k_batch == batch
        && dims[roles[2].0].0 == batch
        && dims[roles[2].0].1 == keys
        && match projections {
            Projections::Packed(_) => true,
            Projections::QueryKeyValue(..) => dims[1].2 == 2 * width,
            Projections::Separate(..) => dims[1].2 == width && dims[2].2 == width,
        };
    if !consistent {
        candle_core::bail!(
            "attention: projections {:?} do not fit {heads} heads",
            inputs.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>()
        );
    }
    let mask = match mask {
        Some(m) => Some(Arc::new(MaskRows::new(m, &[batch, heads, queries, keys])?)),
        None => None,
    };
    let op = MultiHeadAttention {
        geometry: Geometry {
            batch,
            heads,
            head_dim: width / heads,
            queries,
            keys,
            widths: dims.iter().map(|d| d.2).collect(),
            lens: [queries, keys, keys],
            roles,
        },
        mask,
        probs: OnceLock::new(),
    };
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<_>>()?;
    match inputs.as_slice() {
        [qkv] => qkv.apply_op1(op),
        [q, kv] => q.apply_op2(kv, op),
        [q, k, v] => q.apply_op3(k, v, op),
        _ => unreachable!("one to three projection tensors"),
    }
}

/// `E` for a tensor holding `parts` packed projections of width `E` in its last dimension.
fn packed_width(t: &Tensor, parts: usize) -> Result<usize> {
    let (_, _, cols) = t.dims3()?;
    if cols % parts != 0 {
        candle_core::bail!(
            "attention: {parts} packed projections cannot share {cols} columns ({:?})",
            t.dims()
        );
    }
    Ok(cols / parts)
}

/// Shapes, and where each of Q, K and V lives: `roles[r] = (input index, first column)`.
#[derive(Debug, Clone)]
struct Geometry {
    batch: usize,
    heads: usize,
    head_dim: usize,
    queries: usize,
    keys: usize,
    /// Columns of each input tensor.
    widths: Vec<usize>,
    /// Rows per batch item of the tensor holding Q, K and V.
    lens: [usize; 3],
    roles: [(usize, usize); 3],
}

impl Geometry {
    fn tasks(&self) -> usize {
        self.batch * self.heads
    }

    fn probs_per_task(&self) -> usize {
        self.queries * self.keys
    }

    /// Offset of role `r`'s head `h` of batch item `b` in its input, and that input's row stride.
    fn at(&self, role: usize, b: usize, h: usize) -> (usize, usize) {
        let (input, column) = self.roles[role];
        let w = self.widths[input];
        (b * self.lens[role] * w + column + h * self.head_dim, w)
    }

    fn output_width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// A raw base pointer shared by the tasks, each of which touches a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: tasks write disjoint elements (distinct batch items or head columns); see the callers.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: the tasks sharing the pointer never touch the same element.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst = beta · lhs·rhs`, single-threaded, with every operand given by a base pointer and its (row, column)
/// strides.
///
/// # Safety
/// The pointers and strides must address valid `m × k`, `k × n` and `m × n` matrices; `dst` must not alias the
/// operands.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the matrices are valid and `dst` aliases neither operand (this function's contract), which is
    // `gemm512::gemm`'s.
    unsafe {
        gemm512::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            false,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            0.0,
            beta,
            Parallelism::None,
        )
    };
}

/// The forward: returns the merged output (batch · queries × E) and the probabilities (batch, heads, queries,
/// keys).
fn forward(
    g: &Geometry,
    inputs: &[&[f32]],
    mask: Option<&MaskRows>,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (d, lq, lk) = (g.head_dim, g.queries, g.keys);
    let e = g.output_width();
    if lq == 0 || lk == 0 {
        // No scores: no task below would run, and the output (attention over no keys) is zero.
        return (vec![0f32; g.batch * lq * e], Vec::new());
    }
    // Both written by the tasks below without being zeroed first (a pass over memory on one thread).
    let mut out: Vec<f32> = Vec::with_capacity(g.batch * lq * e);
    let mut probs: Vec<f32> = Vec::with_capacity(g.tasks() * g.probs_per_task());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let input = |role: usize| inputs[g.roles[role].0].as_ptr();
    probs.spare_capacity_mut()[..g.tasks() * g.probs_per_task()]
        .par_chunks_mut(g.probs_per_task().max(1))
        .enumerate()
        .for_each(|(task, p)| {
            let (b, h) = (task / g.heads, task % g.heads);
            let (q_at, q_rs) = g.at(0, b, h);
            let (k_at, k_rs) = g.at(1, b, h);
            let (v_at, v_rs) = g.at(2, b, h);
            // SAFETY: Q, K and V of (b, h) lie inside their inputs (the geometry was checked against the
            // shapes); `p` is this task's own block, read as values only after the scores product has written
            // all of it (`MaybeUninit<f32>` has the layout of `f32`); the output block of (b, h) — rows of item
            // b, columns of head h — is written by this task only, inside the capacity of `out`.
            unsafe {
                let (q, k, v) = (input(0).add(q_at), input(1).add(k_at), input(2).add(v_at));
                // Scores: Q (lq × d) · Kᵀ (d × lk), the scale folded into the product, which writes every one of
                // the lq · lk values of `p` (its destination is not read).
                product(
                    (lq, lk, d),
                    (p.as_mut_ptr().cast::<f32>(), lk, 1),
                    (q, q_rs, 1),
                    (k, 1, k_rs),
                    scale,
                );
                let p = &mut *(p as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]);
                for (i, row) in p.chunks_exact_mut(lk.max(1)).enumerate() {
                    if let Some(m) = mask {
                        let at = m.offsets[task * lq + i];
                        row.iter_mut()
                            .zip(&m.data[at..at + lk])
                            .for_each(|(s, mv)| *s += mv);
                    }
                    let max = vexp::max(row);
                    if max == f32::NEG_INFINITY {
                        row.fill(0.0);
                        continue;
                    }
                    let inv = 1.0 / vexp::exp_shifted_sum(row, max);
                    row.iter_mut().for_each(|v| *v *= inv);
                }
                let o = out_ptr.get().add(b * lq * e + h * d);
                product(
                    (lq, d, lk),
                    (o, e, 1),
                    (p.as_ptr(), lk, 1),
                    (v, v_rs, 1),
                    1.0,
                );
            }
        });
    // SAFETY: every task wrote all lq · lk values of its block of `probs` (the scores product, whose destination
    // is not read) and its (b, h) block of `out` (lq rows × head h's d columns, by the second product, whose
    // destination is not read either); the batch · heads tasks cover every block of both.
    unsafe {
        out.set_len(g.batch * lq * e);
        probs.set_len(g.tasks() * g.probs_per_task());
    }
    (out, probs)
}

/// The backward: gradients of the inputs (same shapes and layouts) from the upstream gradient of the output.
fn backward(
    g: &Geometry,
    inputs: &[&[f32]],
    probs: &[f32],
    grad: &[f32],
    scale: f32,
) -> Vec<Vec<f32>> {
    let (d, lq, lk) = (g.head_dim, g.queries, g.keys);
    let e = g.output_width();
    let mut grads: Vec<Vec<f32>> = inputs.iter().map(|x| vec![0f32; x.len()]).collect();
    let grad_ptrs: Vec<SharedMut> = grads
        .iter_mut()
        .map(|x| SharedMut(x.as_mut_ptr()))
        .collect();
    let input = |role: usize| inputs[g.roles[role].0].as_ptr();
    let grad_of = |role: usize| grad_ptrs[g.roles[role].0].get();
    probs
        .par_chunks(g.probs_per_task().max(1))
        .enumerate()
        .for_each_init(Vec::new, |ds, (task, p)| {
            let (b, h) = (task / g.heads, task % g.heads);
            let (q_at, q_rs) = g.at(0, b, h);
            let (k_at, k_rs) = g.at(1, b, h);
            let (v_at, v_rs) = g.at(2, b, h);
            ds.clear();
            ds.resize(lq * lk, 0f32);
            // SAFETY: as in the forward; each gradient block of (b, h) has the layout of its input block and is
            // written by this task only.
            unsafe {
                let (v, dv) = (input(2).add(v_at), grad_of(2).add(v_at));
                let d_out = grad.as_ptr().add(b * lq * e + h * d);
                // dV = Pᵀ (lk × lq) · dO (lq × d).
                product(
                    (lk, d, lq),
                    (dv, v_rs, 1),
                    (p.as_ptr(), 1, lk),
                    (d_out, e, 1),
                    1.0,
                );
                // dP = dO (lq × d) · Vᵀ (d × lk).
                product(
                    (lq, lk, d),
                    (ds.as_mut_ptr(), lk, 1),
                    (d_out, e, 1),
                    (v, 1, v_rs),
                    1.0,
                );
            }
            for (dp, p) in ds
                .chunks_exact_mut(lk.max(1))
                .zip(p.chunks_exact(lk.max(1)))
            {
                let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                dp.iter_mut()
                    .zip(p)
                    .for_each(|(g, &p)| *g = scale * p * (*g - dot));
            }
            // SAFETY: as above.
            unsafe {
                let (q, k) = (input(0).add(q_at), input(1).add(k_at));
                let (dq, dk) = (grad_of(0).add(q_at), grad_of(1).add(k_at));
                // dQ = dS (lq × lk) · K (lk × d); dK = dSᵀ (lk × lq) · Q (lq × d).
                product(
                    (lq, d, lk),
                    (dq, q_rs, 1),
                    (ds.as_ptr(), lk, 1),
                    (k, k_rs, 1),
                    1.0,
                );
                product(
                    (lk, d, lq),
                    (dk, k_rs, 1),
                    (ds.as_ptr(), 1, lk),
                    (q, q_rs, 1),
                    1.0,
                );
            }
        });
    grads
}

struct MultiHeadAttention {
    geometry: Geometry,
    mask: Option<Arc<MaskRows>>,
    /// The probabilities of the forward, kept for the backward.
    probs: OnceLock<Vec<f32>>,
}

impl MultiHeadAttention {
    fn scale(&self) -> f32 {
        1.0 / (self.geometry.head_dim as f32).sqrt()
    }

    fn run_forward(&self, inputs: &[&[f32]]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (out, probs) = forward(g, inputs, self.mask.as_deref(), self.scale());
        // A second forward of the same op (never done by candle) would keep the first probabilities.
        let _ = self.probs.set(probs);
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, g.queries, g.output_width())),
        ))
    }

    fn run_backward(&self, inputs: &[&Tensor], grad: &Tensor) -> Result<Vec<Tensor>> {
        let Some(probs) = self.probs.get() else {
            candle_core::bail!("attention: backward before forward");
        };
        let grad = grad.contiguous()?;
        let (grad_storage, grad_layout) = grad.storage_and_layout();
        let candle_core::Storage::Cpu(grad_storage) = &*grad_storage else {
            candle_core::bail!("attention: gradient is not on the CPU");
        };
        let grad_slice = f32_slice(grad_storage, grad_layout, "attention backward")?;
        let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
        let mut slices = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            let candle_core::Storage::Cpu(storage) = &**storage else {
                candle_core::bail!("attention: input is not on the CPU");
            };
            slices.push(f32_slice(storage, layout, "attention backward")?);
        }
        let grads = backward(&self.geometry, &slices, probs, grad_slice, self.scale());
        grads
            .into_iter()
            .zip(inputs)
            .map(|(g, t)| Tensor::from_vec(g, t.shape(), &Device::Cpu))
            .collect()
    }
}

impl CustomOp1 for MultiHeadAttention {
    fn name(&self) -> &'static str {
        "coca-self-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run_forward(&[f32_slice(s1, l1, CustomOp1::name(self))?])
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut grads = self.run_backward(&[qkv], grad)?;
        Ok(grads.pop())
    }
}

impl CustomOp2 for MultiHeadAttention {
    fn name(&self) -> &'static str {
        "coca-cross-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp2::name(self);
        self.run_forward(&[f32_slice(s1, l1, name)?, f32_slice(s2, l2, name)?])
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.run_backward(&[q, kv], grad)?.into_iter();
        Ok((grads.next(), grads.next()))
    }
}

impl CustomOp3 for MultiHeadAttention {
    fn name(&self) -> &'static str {
        "coca-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp3::name(self);
        self.run_forward(&[
            f32_slice(s1, l1, name)?,
            f32_slice(s2, l2, name)?,
            f32_slice(s3, l3, name)?,
        ])
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.run_backward(&[q, k, v], grad)?.into_iter();
        Ok((grads.next(), grads.next(), grads.next()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{assert_close, composed_softmax, grads_of};
    use candle_core::{Device, Var};

    /// (b, l, E) → (b, heads, l, E/heads).
    fn split(x: &Tensor, heads: usize) -> Tensor {
        let (b, l, e) = x.dims3().unwrap();
        x.reshape((b, l, heads, e / heads))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    /// Attention from candle's differentiable primitives.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Tensor {
        let (b, lq, e) = q.dims3().unwrap();
        let (q, k, v) = (split(q, heads), split(k, heads), split(v, heads));
        let scale = 1.0 / ((e / heads) as f64).sqrt();
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        if let Some(m) = mask {
            s = s.broadcast_add(m).unwrap();
        }
        let p = composed_softmax(&s);
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, lq, e))
            .unwrap()
    }

    fn var(shape: (usize, usize, usize)) -> Var {
        Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn check_against_composed(fused: &Tensor, reference: &Tensor, vars: &[&Tensor]) {
        assert_close(fused, reference, 1e-5);
        let target = Tensor::randn(0f32, 1.0, fused.dims(), &Device::Cpu).unwrap();
        for (f, r) in grads_of(fused, &target, vars)
            .iter()
            .zip(&grads_of(reference, &target, vars))
        {
            assert_close(f, r, 2e-5);
        }
    }

    #[test]
    fn packed_self_attention_with_a_causal_mask() {
        let (b, l, e, heads) = (3, 7, 12, 3);
        let qkv = var((b, l, 3 * e));
        let mask = crate::nn::AttentionMask::causal(0, l, &Device::Cpu)
            .unwrap()
            .0;
        let fused =
            multi_head_attention(Projections::Packed(qkv.as_tensor()), heads, Some(&mask)).unwrap();
        let t = qkv.as_tensor();
        let part = |i: usize| t.narrow(2, i * e, e).unwrap();
        let reference = composed(&part(0), &part(1), &part(2), heads, Some(&mask));
        check_against_composed(&fused, &reference, &[t]);
    }

    #[test]
    fn per_batch_masks_and_fully_masked_rows() {
        let (b, l, e, heads) = (2, 5, 8, 2);
        let qkv = var((b, l, 3 * e));
        // The text tower's CLS mask (broadcast over heads): padding keys are blocked for the last query.
        let ids = vec![vec![5u32, 6, 0, 0], vec![5, 6, 7, 8]];
        let cls = crate::text::legacy_cls_mask(&ids, 0, 0, 5, &Device::Cpu).unwrap();
        let t = qkv.as_tensor();
        let part = |i: usize| t.narrow(2, i * e, e).unwrap();
        let fused = multi_head_attention(Projections::Packed(t), heads, Some(&cls)).unwrap();
        let reference = composed(&part(0), &part(1), &part(2), heads, Some(&cls));
        check_against_composed(&fused, &reference, &[t]);
        // A row that sees no key at all: zero output, zero gradient.
        let mut blocked = vec![0f32; l * l];
        blocked[..l].fill(f32::NEG_INFINITY);
        let blocked = Tensor::from_vec(blocked, (l, l), &Device::Cpu).unwrap();
        let y = multi_head_attention(Projections::Packed(t), heads, Some(&blocked)).unwrap();
        let first = y.narrow(1, 0, 1).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(first.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn cross_attention_with_packed_and_separate_keys() {
        let (b, lq, lk, e, heads) = (2, 3, 6, 8, 4);
        let q = var((b, lq, e));
        let kv = var((b, lk, 2 * e));
        let (qt, kvt) = (q.as_tensor(), kv.as_tensor());
        let fused = multi_head_attention(Projections::QueryKeyValue(qt, kvt), heads, None).unwrap();
        let reference = composed(
            qt,
            &kvt.narrow(2, 0, e).unwrap(),
            &kvt.narrow(2, e, e).unwrap(),
            heads,
            None,
        );
        check_against_composed(&fused, &reference, &[qt, kvt]);

        let (k, v) = (var((b, lk, e)), var((b, lk, e)));
        let (kt, vt) = (k.as_tensor(), v.as_tensor());
        let fused = multi_head_attention(Projections::Separate(qt, kt, vt), heads, None).unwrap();
        let reference = composed(qt, kt, vt, heads, None);
        check_against_composed(&fused, &reference, &[qt, kt, vt]);
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused() {
        let q = var((2, 3, 8));
        let kv = var((2, 5, 12));
        let err = multi_head_attention(
            Projections::QueryKeyValue(q.as_tensor(), kv.as_tensor()),
            2,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let qkv = var((2, 3, 10));
        assert!(multi_head_attention(Projections::Packed(qkv.as_tensor()), 2, None).is_err());
    }
}
