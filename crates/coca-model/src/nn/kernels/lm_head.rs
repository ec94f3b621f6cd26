//! The caption loss straight from the decoder's hidden states: `mean_r (logsumexp(h_r·W) − (h_r·W)[label_r])` over
//! the rows whose label is not padding, as one autograd node that never holds the (rows × vocab) logits.
//!
//! With CLIP's 49,408-word vocabulary the logits of a training batch are the largest tensor of a CoCa step
//! (64 captions × 11 positions: 139 MB, and as much again for their gradient), and writing them costs page
//! faults and memsets on top of the arithmetic. Here the non-padding rows are processed in chunks of
//! `CHUNK_ROWS`: a chunk's logits are computed into one reused buffer, turned into `exp(z − max)` in place (one
//! vectorised `exp` per logit, see [`super::vexp`]), and — when a gradient will be asked for — consumed right away
//! by the two gradient products while they are still in the last-level cache:
//!
//! * `G = scale · (softmax(Z) − onehot) = c ∘ (E − s ∘ onehot)` with `E = exp(Z − max)`, `s = Σ E` per row and
//!   `c = scale / s`, so the row normalisation is folded into the small operands instead of a pass over `E`;
//! * `dH = G·Wᵀ` (chunk rows × width) and `dW += Hᵀ·G` (width × vocab), on [`super::gemm512`] with raw strides.
//!
//! The gradients are therefore computed during the forward (one logits product instead of two) and only scaled
//! by the upstream gradient in the backward. They are skipped when neither input records a gradient (evaluation,
//! or losses of rows held constant). Padding rows cost nothing and get a zero gradient.
//!
//! Reproducibility: each logit, row statistic and gradient element is reduced in a fixed order (rows are never
//! split across threads for a reduction; the GEMM splits only the output), and chunks are accumulated in order, so
//! identical inputs give bit-identical outputs.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm512::{self, Parallelism};
use super::{f32_slice, vexp};

/// Non-padding rows per chunk: enough rows to amortise each pass over the LM head (whose packing the GEMM redoes
/// per product), few enough that a chunk's logits (128 × 49,408: 25 MB) stay in the last-level cache from the
/// logits product to the two gradient products. Measured against 64 and 256 on the demo shapes.
const CHUNK_ROWS: usize = 128;

/// Mean cross-entropy of `labels` under `softmax(hidden · lm_head)` over the rows whose label is not `pad_id`:
/// `hidden` (rows, width), `lm_head` (width, vocab), one label per row. A scalar, differentiable with respect to
/// both `hidden` and `lm_head`. Equals `caption_loss(hidden.matmul(lm_head), labels, pad_id)` without the logits
/// tensor. Fails when every label is padding. f32 on the CPU only. The form the tests hold to the caption loss over
/// materialised logits; the model calls [`lm_head_cross_entropy_sum`] (through `ops::lm_head_nll_sum`).
#[cfg(test)]
pub fn lm_head_cross_entropy(
    hidden: &Tensor,
    lm_head: &Tensor,
    labels: &[u32],
    pad_id: u32,
) -> Result<Tensor> {
    let count = labels.iter().filter(|&&l| l != pad_id).count();
    if count == 0 {
        candle_core::bail!("caption loss: every label is padding");
    }
    lm_head_cross_entropy_sum(hidden, lm_head, labels, pad_id, 1.0 / count as f64)
}

/// `scale · Σ_r NLL_r` over the rows whose label is not `pad_id` (0 when there are none), with the shapes of
/// `lm_head_cross_entropy`. For losses whose normaliser spans more rows than `hidden` holds (the other
/// micro-batches of an accumulated step).
pub fn lm_head_cross_entropy_sum(
    hidden: &Tensor,
    lm_head: &Tensor,
    labels: &[u32],
    pad_id: u32,
    scale: f64,
) -> Result<Tensor> {
    let (rows, width) = hidden.dims2()?;
    let (w_width, vocab) = lm_head.dims2()?;
    if w_width != width {
        candle_core::bail!(
            "lm-head cross entropy: hidden states {:?} do not fit the LM head {:?}",
            hidden.dims(),
            lm_head.dims()
        );
    }
    if width == 0 || vocab == 0 {
        candle_core::bail!("lm-head cross entropy: empty LM head {:?}", lm_head.dims());
    }
    if labels.len() != rows {
        candle_core::bail!(
            "lm-head cross entropy: {} labels for {rows} rows",
            labels.len()
        );
    }
    let mut active = Vec::with_capacity(rows);
    for (r, &label) in labels.iter().enumerate() {
        if label == pad_id {
            continue;
        }
        if label as usize >= vocab {
            candle_core::bail!(
                "lm-head cross entropy: label {label} (row {r}) out of range for a vocabulary of {vocab}"
            );
        }
        active.push(ActiveRow {
            row: r,
            label: label as usize,
        });
    }
    let op = LmHeadCrossEntropy {
        active: Arc::new(active),
        scale: scale as f32,
        need_hidden: hidden.track_op(),
        need_head: lm_head.track_op(),
        grads: OnceLock::new(),
    };
    hidden.contiguous()?.apply_op2(&lm_head.contiguous()?, op)
}

/// A row that enters the loss and its target.
#[derive(Debug, Clone, Copy)]
struct ActiveRow {
    row: usize,
    label: usize,
}

struct LmHeadCrossEntropy {
    active: Arc<Vec<ActiveRow>>,
    scale: f32,
    need_hidden: bool,
    need_head: bool,
    /// d loss / d hidden and d loss / d lm_head, computed by the forward when the inputs record gradients.
    grads: OnceLock<(Option<Tensor>, Option<Tensor>)>,
}

impl CustomOp2 for LmHeadCrossEntropy {
    fn name(&self) -> &'static str {
        "coca-lm-head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let (rows, width) = l1.shape().dims2()?;
        let vocab = l2.dims()[1];
        let out = run(
            &Problem {
                hidden: h,
                head: w,
                rows,
                width,
                vocab,
                active: &self.active,
                scale: self.scale,
            },
            self.need_hidden,
            self.need_head,
        );
        let dh = out
            .d_hidden
            .map(|g| Tensor::from_vec(g, (rows, width), &Device::Cpu))
            .transpose()?;
        let dw = out
            .d_head
            .map(|g| Tensor::from_vec(g, (width, vocab), &Device::Cpu))
            .transpose()?;
        // The op is built for one forward, so the cell is empty here.
        let _ = self.grads.set((dh, dw));
        Ok((CpuStorage::F32(vec![out.loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        _hidden: &Tensor,
        _head: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some((dh, dw)) = self.grads.get() else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let scale = |g: &Option<Tensor>| g.as_ref().map(|g| g.broadcast_mul(grad)).transpose();
        Ok((scale(dh)?, scale(dw)?))
    }
}

/// The operands of one evaluation, as row-major slices.
struct Problem<'a> {
    hidden: &'a [f32],
    head: &'a [f32],
    rows: usize,
    width: usize,
    vocab: usize,
    active: &'a [ActiveRow],
    scale: f32,
}

/// The scaled loss and, when asked for, its gradients.
struct Outcome {
    loss: f64,
    d_hidden: Option<Vec<f32>>,
    d_head: Option<Vec<f32>>,
}

/// Max, `Σ exp(z − max)` and the target's logit of one row.
#[derive(Debug, Clone, Copy)]
struct RowStats {
    max: f32,
    sum: f32,
    picked: f32,
}

fn run(p: &Problem, need_hidden: bool, need_head: bool) -> Outcome {
    let (d, v) = (p.width, p.vocab);
    let need_grad = need_hidden || need_head;
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let mut d_hidden = need_hidden.then(|| vec![0f32; p.rows * d]);
    let mut d_head = need_head.then(|| vec![0f32; d * v]);
    let cap = CHUNK_ROWS.min(p.active.len());
    let mut logits = vec![0f32; cap * v];
    let mut h_chunk = vec![0f32; cap * d];
    let mut dh_chunk = vec![0f32; if need_hidden { cap * d } else { 0 }];
    let mut loss = 0f64;
    let head = View::row_major(p.head, d, v);
    for (index, chunk) in p.active.chunks(CHUNK_ROWS).enumerate() {
        let c = chunk.len();
        let h_chunk = &mut h_chunk[..c * d];
        for (dst, a) in h_chunk.chunks_exact_mut(d).zip(chunk) {
            dst.copy_from_slice(&p.hidden[a.row * d..(a.row + 1) * d]);
        }
        let z = &mut logits[..c * v];
        // Z = H_c · W.
        matmul(z, false, View::row_major(h_chunk, c, d), head, parallelism);
        // Each row in place: E = exp(Z − max), and E[label] −= Σ E so that G = (scale / Σ E) · E.
        let stats: Vec<RowStats> = z
            .par_chunks_mut(v)
            .zip(chunk.par_iter())
            .map(|(row, a)| {
                let picked = row[a.label];
                let max = vexp::max(row);
                let sum = vexp::exp_shifted_sum(row, max);
                if need_grad {
                    row[a.label] -= sum;
                }
                RowStats { max, sum, picked }
            })
            .collect();
        loss += stats
            .iter()
            .map(|s| s.max as f64 + (s.sum as f64).ln() - s.picked as f64)
            .sum::<f64>();
        if !need_grad {
            continue;
        }
        let row_scale: Vec<f32> = stats.iter().map(|s| p.scale / s.sum).collect();
        if let Some(d_hidden) = d_hidden.as_mut() {
            // dH_c = c ∘ (E · Wᵀ), scattered to the chunk's rows.
            let dh_chunk = &mut dh_chunk[..c * d];
            matmul(
                dh_chunk,
                false,
                View::row_major(z, c, v),
                head.t(),
                parallelism,
            );
            for ((src, a), &k) in dh_chunk.chunks_exact(d).zip(chunk).zip(&row_scale) {
                let dst = &mut d_hidden[a.row * d..(a.row + 1) * d];
                dst.iter_mut().zip(src).for_each(|(o, &g)| *o = g * k);
            }
        }
        if let Some(d_head) = d_head.as_mut() {
            // dW += (c ∘ H_c)ᵀ · E, accumulated chunk after chunk.
            for (h, &k) in h_chunk.chunks_exact_mut(d).zip(&row_scale) {
                h.iter_mut().for_each(|x| *x *= k);
            }
            matmul(
                d_head,
                index > 0,
                View::row_major(h_chunk, c, d).t(),
                View::row_major(z, c, v),
                parallelism,
            );
        }
    }
    Outcome {
        loss: loss * p.scale as f64,
        d_hidden,
        d_head,
    }
}

/// A strided matrix over a slice: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst (+)= lhs · rhs` for a row-major `dst` (lhs.rows × rhs.cols); accumulates when `accumulate`.
fn matmul(dst: &mut [f32], accumulate: bool, lhs: View, rhs: View, parallelism: Parallelism) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // Internal invariants (the shapes were validated by the caller): a failure here is a bug, not bad input.
    assert!(rhs.rows == k && dst.len() == m * n && lhs.in_bounds() && rhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every element the GEMM touches inside the slices; `dst` is a unique borrow so
    // it does not alias the inputs.
    unsafe {
        gemm512::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::caption_loss;
    use crate::nn::kernels::tests::assert_close;
    use candle_core::{DType, Var};

    /// The composed reference: materialised logits and the existing caption loss.
    fn reference(hidden: &Tensor, head: &Tensor, labels: &[u32], pad: u32) -> Result<Tensor> {
        let n = labels.len();
        let logits = hidden.matmul(head)?.reshape((1, n, head.dim(1)?))?;
        let labels = Tensor::new(labels, &Device::Cpu)?.reshape((1, n))?;
        caption_loss(&logits, &labels, pad)
    }

    /// Loss and both gradients of the fused op against the reference, with the upstream gradient 1.7.
    fn check(n: usize, d: usize, v: usize, labels: &[u32], pad: u32, transposed: bool) {
        let dev = Device::Cpu;
        let h_shape = if transposed { (d, n) } else { (n, d) };
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, h_shape, &dev).unwrap()).unwrap();
        let w_shape = if transposed { (v, d) } else { (d, v) };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.5, w_shape, &dev).unwrap()).unwrap();
        let (hv, wv) = if transposed {
            (h.as_tensor().t().unwrap(), w.as_tensor().t().unwrap())
        } else {
            (h.as_tensor().clone(), w.as_tensor().clone())
        };
        let fused = lm_head_cross_entropy(&hv, &wv, labels, pad).unwrap();
        let want = reference(&hv, &wv, labels, pad).unwrap();
        assert_eq!(fused.dims(), &[] as &[usize]);
        assert_close(&fused, &want, 1e-5);
        let gf = (fused * 1.7).unwrap().backward().unwrap();
        let gr = (want * 1.7).unwrap().backward().unwrap();
        for var in [&h, &w] {
            assert_close(
                gf.get(var.as_tensor()).unwrap(),
                gr.get(var.as_tensor()).unwrap(),
                1e-5,
            );
        }
    }

    fn labels(n: usize, v: usize, pad: u32, pad_every: usize) -> Vec<u32> {
        (0..n)
            .map(|i| {
                if pad_every > 0 && i % pad_every == 1 {
                    pad
                } else {
                    ((i * 7919 + 3) % v) as u32
                }
            })
            .collect()
    }

    #[test]
    fn matches_composed_loss_on_odd_shapes() {
        // More rows than one chunk and not a multiple of it, a vocabulary that is not a multiple of any vector
        // width, some padding rows (label 0 also appears as a real label when the pad id differs).
        let (n, d, v) = (CHUNK_ROWS * 2 + 9, 19, 1037);
        check(n, d, v, &labels(n, v, 0, 3), 0, false);
        check(n, d, v, &labels(n, v, 5, 4), 5, false);
        check(7, 5, 33, &labels(7, 33, 0, 0), 0, false);
    }

    #[test]
    fn all_but_one_row_padding() {
        let mut l = vec![0u32; 23];
        l[17] = 12;
        check(23, 8, 301, &l, 0, false);
    }

    #[test]
    fn non_contiguous_inputs() {
        let (n, d, v) = (45, 16, 517);
        check(n, d, v, &labels(n, v, 0, 5), 0, true);
    }

    #[test]
    fn gradient_only_where_recorded_and_sum_form() {
        let dev = Device::Cpu;
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (11, 6), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (6, 97), &dev).unwrap();
        let l = labels(11, 97, 0, 4);
        let count = l.iter().filter(|&&x| x != 0).count() as f64;
        let sum = lm_head_cross_entropy_sum(h.as_tensor(), &w, &l, 0, 1.0).unwrap();
        let mean = lm_head_cross_entropy(h.as_tensor(), &w, &l, 0).unwrap();
        let (s, m) = (
            sum.to_scalar::<f32>().unwrap() as f64,
            mean.to_scalar::<f32>().unwrap() as f64,
        );
        assert!(
            (s / count - m).abs() < 1e-6 * m.abs(),
            "{s} / {count} vs {m}"
        );
        let grads = mean.backward().unwrap();
        assert!(grads.get(h.as_tensor()).is_some());
        // Padding rows get exactly zero gradient.
        let gh = grads.get(h.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(gh[1].iter().all(|&g| g == 0.0) && gh[0].iter().any(|&g| g != 0.0));
        // Nothing recorded: a plain value, no gradient work.
        let plain = lm_head_cross_entropy(&h.as_tensor().detach(), &w, &l, 0).unwrap();
        assert!(!plain.track_op());
        assert_eq!(plain.to_scalar::<f32>().unwrap(), m as f32);
        // No active row: the sum is 0.
        let none = lm_head_cross_entropy_sum(h.as_tensor(), &w, &[0; 11], 0, 1.0).unwrap();
        assert_eq!(none.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn identical_inputs_give_identical_bits() {
        let dev = Device::Cpu;
        let (n, d, v) = (CHUNK_ROWS + 21, 32, 4099);
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (d, v), &dev).unwrap()).unwrap();
        let l = labels(n, v, 0, 6);
        let run = || {
            let loss = lm_head_cross_entropy(h.as_tensor(), w.as_tensor(), &l, 0).unwrap();
            let g = loss.backward().unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            (
                loss.to_scalar::<f32>().unwrap().to_bits(),
                bits(g.get(h.as_tensor()).unwrap()),
                bits(g.get(w.as_tensor()).unwrap()),
            )
        };
        let first = run();
        for _ in 0..3 {
            assert!(run() == first, "a rerun changed the result");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let dev = Device::Cpu;
        let h = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 10), DType::F32, &dev).unwrap();
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(msg(lm_head_cross_entropy(&h, &w, &[1, 2, 3], 0)).contains("3 labels for 4 rows"));
        assert!(msg(lm_head_cross_entropy(&h, &w, &[1, 2, 10, 0], 0))
            .contains("label 10 (row 2) out of range"));
        assert!(msg(lm_head_cross_entropy(&h, &w, &[0; 4], 0)).contains("every label is padding"));
        let w_bad = Tensor::zeros((5, 10), DType::F32, &dev).unwrap();
        assert!(msg(lm_head_cross_entropy(&h, &w_bad, &[1; 4], 0)).contains("do not fit"));
        // A padding id outside the vocabulary is fine: its rows are skipped.
        assert!(lm_head_cross_entropy(&h, &w, &[1, 99, 2, 99], 99).is_ok());
    }
}
