//! The AVX-512 path against a naive triple loop, over odd shapes and every stride layout the callers use.

use std::arch::x86_64::*;

use super::driver::{self, Dst, Problem};
use super::kernel::transpose16;
use super::pack::Src;
use super::Parallelism;
use crate::nn::kernels::cpu::Avx512;
use crate::nn::kernels::tests::values;
use crate::test_support::avx512_or_skip;

/// How a matrix sits in its buffer.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major with rows padded to `cols + 3` (row stride ≠ width).
    RowMajor,
    /// Column-major with columns padded to `rows + 2` (a transposed row-major matrix).
    ColMajor,
    /// Neither stride is 1: every element two apart along rows, rows `2·cols + 5` apart.
    Strided,
}

const LAYOUTS: [Layout; 3] = [Layout::RowMajor, Layout::ColMajor, Layout::Strided];

/// A `rows × cols` matrix in `layout`, with its buffer; (row stride, column stride).
struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Matrix {
    fn new(rows: usize, cols: usize, layout: Layout, seed: u64) -> Self {
        let (rs, cs) = match layout {
            Layout::RowMajor => (cols + 3, 1),
            Layout::ColMajor => (1, rows + 2),
            Layout::Strided => (2 * cols + 5, 2),
        };
        let len = rows.max(1) * rs + cols.max(1) * cs;
        Self {
            data: values(len, seed),
            rows,
            cols,
            rs,
            cs,
        }
    }

    fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    fn src(&self) -> Src {
        Src {
            ptr: self.data.as_ptr(),
            rs: self.rs as isize,
            cs: self.cs as isize,
        }
    }
}

/// Run `dst := alpha·dst + beta·lhs·rhs` through the AVX-512 driver on `threads` threads.
fn product(
    cpu: Avx512,
    dst: &mut Matrix,
    read: bool,
    lhs: &Matrix,
    rhs: &Matrix,
    (alpha, beta): (f32, f32),
    threads: usize,
) {
    assert_eq!(
        (lhs.cols, dst.rows, dst.cols),
        (rhs.rows, lhs.rows, rhs.cols)
    );
    let problem = Problem {
        m: dst.rows,
        n: dst.cols,
        k: lhs.cols,
        dst: Dst {
            ptr: dst.data.as_mut_ptr(),
            rs: dst.rs as isize,
            cs: dst.cs as isize,
        },
        lhs: lhs.src(),
        rhs: rhs.src(),
        read_dst: read,
        alpha,
        beta,
    };
    // SAFETY: the matrices' buffers cover every element their strides address; `dst` is a distinct buffer.
    unsafe { driver::run(cpu, &problem, threads) };
}

/// Check one case: every element within a bound scaled by the magnitudes that went into it, and the padding
/// between `dst`'s elements untouched.
#[allow(clippy::too_many_arguments)]
fn check(
    cpu: Avx512,
    m: usize,
    n: usize,
    k: usize,
    layouts: [Layout; 3],
    read: bool,
    ab: (f32, f32),
    threads: usize,
) {
    let lhs = Matrix::new(m, k, layouts[0], 1);
    let rhs = Matrix::new(k, n, layouts[1], 2);
    let mut dst = Matrix::new(m, n, layouts[2], 3);
    let before = dst.data.clone();
    product(cpu, &mut dst, read, &lhs, &rhs, ab, threads);
    let (alpha, beta) = ab;
    let mut touched = vec![false; dst.data.len()];
    for i in 0..m {
        for j in 0..n {
            let at = i * dst.rs + j * dst.cs;
            touched[at] = true;
            let (mut sum, mut mag) = (0f64, 0f64);
            for p in 0..k {
                let t = lhs.get(i, p) as f64 * rhs.get(p, j) as f64;
                sum += t;
                mag += t.abs();
            }
            let old = if read {
                alpha as f64 * before[at] as f64
            } else {
                0.0
            };
            let want = old + beta as f64 * sum;
            let bound = 1e-6 * (old.abs() + (beta as f64).abs() * mag) + 1e-30;
            let got = dst.data[at] as f64;
            assert!(
                (got - want).abs() <= bound,
                "({m}×{k})·({k}×{n}) {layouts:?} read={read} ab={ab:?} threads={threads}: \
                 element ({i}, {j}) is {got}, want {want}"
            );
        }
    }
    for (at, (&now, &was)) in dst.data.iter().zip(&before).enumerate() {
        assert!(
            touched[at] || now.to_bits() == was.to_bits(),
            "padding element {at} was written"
        );
    }
}

#[test]
fn transpose16_swaps_rows_and_columns() {
    let Some(_avx512) = avx512_or_skip() else {
        return;
    };
    let x: Vec<f32> = (0..256).map(|v| v as f32).collect();
    // SAFETY: the `Avx512` token proves AVX-512F; every load and store stays inside the 256-element buffers.
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(x.as_ptr().add(16 * i));
        }
        transpose16(&mut r);
        let mut out = vec![0f32; 256];
        for (i, v) in r.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), *v);
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * i + j], x[16 * j + i]);
            }
        }
    }
}

#[test]
fn every_layout_matches_the_naive_product_on_odd_shapes() {
    let Some(cpu) = avx512_or_skip() else {
        return;
    };
    for (m, n, k) in [
        (13, 33, 17),
        (12, 32, 16),
        (25, 47, 3),
        (1, 70, 29),
        (40, 1, 18),
    ] {
        for l in LAYOUTS {
            for r in LAYOUTS {
                for d in LAYOUTS {
                    check(cpu, m, n, k, [l, r, d], false, (1.0, 1.0), 1);
                    check(cpu, m, n, k, [l, r, d], true, (0.5, -1.5), 1);
                }
            }
        }
    }
}

#[test]
fn degenerate_sizes() {
    let Some(cpu) = avx512_or_skip() else {
        return;
    };
    let layouts = [Layout::RowMajor, Layout::ColMajor, Layout::RowMajor];
    for (m, n, k) in [
        (1, 1, 1),
        (0, 5, 3),
        (5, 0, 3),
        (0, 0, 0),
        (1, 1, 300),
        (2, 3, 1),
    ] {
        for read in [false, true] {
            check(cpu, m, n, k, layouts, read, (1.0, 1.0), 1);
            check(cpu, m, n, k, layouts, read, (0.0, 2.0), 2);
        }
    }
    // k = 0: dst becomes alpha·dst, or zero when it is not read.
    for (read, alpha) in [(false, 1.0), (true, 1.0), (true, 0.25), (true, 0.0)] {
        check(cpu, 4, 3, 0, layouts, read, (alpha, 1.0), 1);
    }
}

#[test]
fn large_and_blocked_shapes_match_on_several_threads() {
    let Some(cpu) = avx512_or_skip() else {
        return;
    };
    // k beyond one packed slice, m beyond one row block, n beyond one column block, and a long k.
    let cases = [
        (150, 40, 600, Layout::RowMajor, Layout::ColMajor),
        (30, 1100, 40, Layout::RowMajor, Layout::RowMajor),
        (20, 70, 3000, Layout::ColMajor, Layout::RowMajor),
        (160, 64, 700, Layout::RowMajor, Layout::ColMajor),
    ];
    for (m, n, k, l, r) in cases {
        for threads in [1, 2, 3] {
            check(
                cpu,
                m,
                n,
                k,
                [l, r, Layout::RowMajor],
                true,
                (1.0, 1.0),
                threads,
            );
        }
        check(cpu, m, n, k, [l, r, Layout::ColMajor], false, (1.0, 0.5), 2);
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let Some(cpu) = avx512_or_skip() else {
        return;
    };
    // 1000 rows: one stripe on one thread, five (several per thread) on two.
    let lhs = Matrix::new(1000, 517, Layout::RowMajor, 4);
    let rhs = Matrix::new(517, 190, Layout::ColMajor, 5);
    let run = |threads| {
        let mut dst = Matrix::new(1000, 190, Layout::RowMajor, 6);
        product(cpu, &mut dst, true, &lhs, &rhs, (1.0, 1.0), threads);
        dst.data
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        let many = run(threads);
        assert!(one
            .iter()
            .zip(&many)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn public_entry_point_matches_the_gemm_crate() {
    // Through `gemm512::gemm` (whichever path this CPU takes) against `gemm::gemm`, with the LM head's strides.
    let (m, n, k) = (37, 45, 130);
    let lhs = values(k * m, 7); // stored transposed: element (i, p) at p·m + i
    let rhs = values(k * n, 8); // row-major
    let mut ours = values(m * n, 9);
    let mut theirs = ours.clone();
    // SAFETY: each buffer holds exactly the elements its strides address; the destinations are distinct.
    unsafe {
        super::gemm(
            m,
            n,
            k,
            ours.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            m as isize,
            1,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            Parallelism::Rayon(2),
        );
        gemm::gemm(
            m,
            n,
            k,
            theirs.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            m as isize,
            1,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
    }
}
