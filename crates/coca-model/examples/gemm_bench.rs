//! GFLOP/s of the training path's products: the `gemm` crate (its default AVX2/FMA kernels) against
//! `coca_model::nn::raw_kernels::gemm512`, on 1 thread and on rayon's pool.
//!
//! `cargo run --release -p coca-model --example gemm_bench [-- SECONDS_PER_CASE]`

use std::time::{Duration, Instant};

use coca_model::nn::raw_kernels::gemm512::{self, Parallelism};

/// How an operand is stored: row-major, or the transpose of a row-major matrix (`x·Wᵀ`'s `Wᵀ`), with the
/// leading dimension (elements between consecutive rows, or columns).
#[derive(Clone, Copy)]
enum Stored {
    Rows(usize),
    Cols(usize),
}

impl Stored {
    /// (column stride, row stride), in the argument order of `gemm`.
    fn strides(self) -> (isize, isize) {
        match self {
            Stored::Rows(ld) => (1, ld as isize),
            Stored::Cols(ld) => (ld as isize, 1),
        }
    }
}

/// One product `dst (m × n) (+)= lhs (m × k) · rhs (k × n)`: name, m, n, k, lhs, rhs, whether `dst` is read,
/// and whether it always runs single-threaded (as the attention node's per-head products do).
type Case = (
    &'static str,
    usize,
    usize,
    usize,
    Stored,
    Stored,
    bool,
    bool,
);

const V: usize = 49_408;

/// The demo's training products (`assets/demo/coca_scenes-tiny.json`, batch 64), then the linear layers of
/// `coca_ViT-B-32` embedding a batch of 8 (image: 8 × 50 tokens, width 768; text: 8 × 77 tokens, width 512).
const CASES: [Case; 18] = {
    use Stored::{Cols, Rows};
    [
        (
            "lm-head logits H·W",
            128,
            V,
            64,
            Rows(64),
            Rows(V),
            false,
            false,
        ),
        (
            "lm-head dH = G·Wᵀ",
            128,
            64,
            V,
            Rows(V),
            Cols(V),
            false,
            false,
        ),
        (
            "lm-head dW += Hᵀ·G",
            64,
            V,
            128,
            Cols(64),
            Rows(V),
            true,
            false,
        ),
        (
            "linear 4160×96·(288×96)ᵀ",
            4160,
            288,
            96,
            Rows(96),
            Cols(96),
            true,
            false,
        ),
        (
            "linear 4160×96·(384×96)ᵀ",
            4160,
            384,
            96,
            Rows(96),
            Cols(96),
            true,
            false,
        ),
        (
            "linear 4160×384·(96×384)ᵀ",
            4160,
            96,
            384,
            Rows(384),
            Cols(384),
            true,
            false,
        ),
        (
            "linear dx 4160×288·288×96",
            4160,
            96,
            288,
            Rows(288),
            Rows(96),
            false,
            false,
        ),
        (
            "linear dW (4160×288)ᵀ·4160×96",
            288,
            96,
            4160,
            Cols(288),
            Rows(96),
            false,
            false,
        ),
        (
            "linear 704×64·(256×64)ᵀ",
            704,
            256,
            64,
            Rows(64),
            Cols(64),
            true,
            false,
        ),
        (
            "2080×256·256×1024",
            2080,
            1024,
            256,
            Rows(256),
            Rows(1024),
            false,
            false,
        ),
        (
            "B-32 image qkv 400×768·(2304×768)ᵀ",
            400,
            2304,
            768,
            Rows(768),
            Cols(768),
            true,
            false,
        ),
        (
            "B-32 image c_fc 400×768·(3072×768)ᵀ",
            400,
            3072,
            768,
            Rows(768),
            Cols(768),
            true,
            false,
        ),
        (
            "B-32 image c_proj 400×3072·(768×3072)ᵀ",
            400,
            768,
            3072,
            Rows(3072),
            Cols(3072),
            true,
            false,
        ),
        (
            "B-32 text qkv 616×512·(1536×512)ᵀ",
            616,
            1536,
            512,
            Rows(512),
            Cols(512),
            true,
            false,
        ),
        (
            "B-32 text c_fc 616×512·(2048×512)ᵀ",
            616,
            2048,
            512,
            Rows(512),
            Cols(512),
            true,
            false,
        ),
        (
            "B-32 text c_proj 616×2048·(512×2048)ᵀ",
            616,
            512,
            2048,
            Rows(2048),
            Cols(2048),
            true,
            false,
        ),
        (
            "attn scores 65×32·32×65",
            65,
            65,
            32,
            Rows(288),
            Cols(288),
            false,
            true,
        ),
        (
            "attn P·V 65×65·65×32",
            65,
            32,
            65,
            Rows(65),
            Rows(288),
            false,
            true,
        ),
    ]
};

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 23) as f32
                - 1.0
        })
        .collect()
}

/// Best GFLOP/s over repeated calls of `f` for about `budget`.
fn measure(flops: f64, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    let budget = Duration::from_secs_f64(seconds);
    let pool = rayon::current_num_threads();
    println!("AVX-512 kernel in use: {}", gemm512::available());
    println!("| product | threads | gemm crate GFLOP/s | gemm512 GFLOP/s | speed-up |");
    println!("|---|---:|---:|---:|---:|");
    for (name, m, n, k, lhs_at, rhs_at, read_dst, single) in CASES {
        let (lhs_s, rhs_s) = (lhs_at.strides(), rhs_at.strides());
        // The last element an operand addresses, plus one.
        let span = |(cs, rs): (isize, isize), rows: usize, cols: usize| {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        };
        let lhs = values(span(lhs_s, m, k), 1);
        let rhs = values(span(rhs_s, k, n), 2);
        let mut dst = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let threads: &[usize] = if single { &[1] } else { &[1, pool] };
        for &t in threads {
            let par = if t > 1 {
                Parallelism::Rayon(t)
            } else {
                Parallelism::None
            };
            let (d, l, r) = (dst.as_mut_ptr(), lhs.as_ptr(), rhs.as_ptr());
            let ld = n as isize;
            // SAFETY: `span` sized each operand for its strides; `dst` is a distinct m × n row-major buffer.
            let theirs = measure(flops, budget, || unsafe {
                let (lc, lr, rc, rr) = (lhs_s.0, lhs_s.1, rhs_s.0, rhs_s.1);
                gemm::gemm(
                    m, n, k, d, 1, ld, read_dst, l, lc, lr, r, rc, rr, 1.0, 1.0, false, false,
                    false, par,
                )
            });
            // SAFETY: as above.
            let ours = measure(flops, budget, || unsafe {
                let (lc, lr, rc, rr) = (lhs_s.0, lhs_s.1, rhs_s.0, rhs_s.1);
                gemm512::gemm(
                    m, n, k, d, 1, ld, read_dst, l, lc, lr, r, rc, rr, 1.0, 1.0, par,
                )
            });
            println!(
                "| {name} | {t} | {theirs:.1} | {ours:.1} | {:.2}× |",
                ours / theirs
            );
        }
    }
}
