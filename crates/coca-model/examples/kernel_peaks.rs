//! What this CPU's multiply-add instructions reach, and what the existing f32, bf16 and int8 kernels reach at
//! `coca_ViT-B-32`'s shapes: the measured ground for choosing low-precision CPU kernels.
//!
//! `cargo run --release -p coca-model --example kernel_peaks [-- SECONDS_PER_CASE [--amx | --avx512-lowp]]`
//!
//! `--amx` measures only what concerns the AMX kernels: the instruction peaks, then coca's f32 and AMX int8 and
//! bf16 products at the towers' shapes (tables 1 and 3, nothing else). `--avx512-lowp` measures the AVX-512
//! int8/bf16 kernels and the thin weight-only kernel beside coca's f32 kernels.
//!
//! Prints markdown tables:
//! 1. the per-core peak of f32 FMA (zmm and ymm), bf16 dot (`vdpbf16ps`), int8 dot (`vpdpbusd` zmm, and the
//!    AVX-VNNI ymm form) and the AMX tile products (`tdpbf16ps`, `tdpbssd`), each from independent accumulators,
//!    timed by the thread's CPU time (the machine may be shared), on one core and on two cores at once; an
//!    instruction the CPU lacks is reported as skipped;
//! 2. read bandwidth from an array sum, of an array that fits this CPU's last-level cache and of one larger than
//!    any (wall time: CPU time says nothing about memory);
//! 3. GOP/s of coca's f32 kernels (`ops::linear` / `ops::project`: the fused GEMM or the thin mat-vec kernel),
//!    coca's AMX int8 and bf16 kernels (at the towers' shapes, where the CPU has AMX), candle's f32 and bf16
//!    matmul and candle's quantized `QMatMul` (Q8_0, Q4_0, Q4K) on the towers' and the
//!    decoder's products, by process CPU time per thread and by wall time, on 1 and 2 threads (each thread count
//!    runs in a child process, because candle sizes its quantized worker pool once per process);
//! 4. each low-precision output against coca's f32 output on the same operands;
//! 5. the weight bytes a batch-1 decoding step streams, and the token rate that bandwidth allows.
//!
//! `--avx512-lowp` prints only coca's AVX-512 low-precision kernels (`vpdpbusd` int8, `vdpbf16ps` bf16, and the
//! thin weight-only kernel of decoding steps) next to coca's f32 kernels, at the towers' shapes and the decoder's.

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use coca_model::nn::ops;
use coca_model::nn::raw_kernels::lowp::{self, PackedWeight};
use coca_model::CocaConfig;

type Res<T> = std::result::Result<T, Box<dyn Error>>;

/// The model whose shapes are measured.
const MODEL: &str = "coca_ViT-B-32";

/// Seconds of the clock `clock` (`CLOCK_THREAD_CPUTIME_ID`, `CLOCK_PROCESS_CPUTIME_ID`).
fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Instruction peaks: each kernel runs `iters` rounds of [`ACCUMULATORS`] independent instructions and returns a
/// value derived from every accumulator, so that nothing is optimised away.
#[cfg(target_arch = "x86_64")]
mod peaks {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulators: more than latency × throughput of any of these instructions.
    pub const ACCUMULATORS: usize = 12;

    /// One instruction's peak kernel.
    pub struct Peak {
        /// Row label.
        pub name: &'static str,
        /// Multiply-adds per instruction, counted as 2 ops each.
        pub ops_per_instruction: f64,
        /// The kernel, or the CPU feature that this CPU lacks for it.
        pub kernel: Result<fn(u64) -> f32, &'static str>,
    }

    /// `vfmadd231ps zmm`: 16 f32 multiply-adds.
    #[target_feature(enable = "avx512f")]
    fn fma_zmm(iters: u64) -> f32 {
        let (a, b) = (
            black_box(_mm512_set1_ps(1.0)),
            black_box(_mm512_set1_ps(1e-9)),
        );
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_fmadd_ps(a, b, *c);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    /// `vfmadd231ps ymm` (AVX2/FMA, what the `gemm` crate's default kernels run): 8 f32 multiply-adds.
    #[target_feature(enable = "avx2,fma")]
    fn fma_ymm(iters: u64) -> f32 {
        let (a, b) = (
            black_box(_mm256_set1_ps(1.0)),
            black_box(_mm256_set1_ps(1e-9)),
        );
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm256_fmadd_ps(a, b, *c);
            }
        }
        let mut lanes = [0f32; 8];
        let mut total = 0.0;
        for c in acc {
            // SAFETY: `lanes` holds the 8 f32 of a ymm store.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), c) };
            total += lanes.iter().sum::<f32>();
        }
        total
    }

    /// `vdpbf16ps zmm`: 32 bf16 products summed pairwise into 16 f32 lanes.
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dpbf16_zmm(iters: u64) -> f32 {
        let a = black_box(_mm512_cvtne2ps_pbh(
            _mm512_set1_ps(1.0),
            _mm512_set1_ps(1.0),
        ));
        let b = black_box(_mm512_cvtne2ps_pbh(
            _mm512_set1_ps(1e-9),
            _mm512_set1_ps(1e-9),
        ));
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    /// `vpdpbusd zmm` (AVX512-VNNI): 64 u8 × i8 products summed four at a time into 16 i32 lanes.
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn dpbusd_zmm(iters: u64) -> f32 {
        let (a, b) = (
            black_box(_mm512_set1_epi8(1)),
            black_box(_mm512_set1_epi8(1)),
        );
        let mut acc = [_mm512_setzero_si512(); ACCUMULATORS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_epi32(c) as f32).sum()
    }

    /// `vpdpbusd ymm` (AVX-VNNI, the VEX form of CPUs without AVX-512): 32 u8 × i8 products.
    #[target_feature(enable = "avx2,avxvnni")]
    fn dpbusd_ymm(iters: u64) -> f32 {
        let (a, b) = (
            black_box(_mm256_set1_epi8(1)),
            black_box(_mm256_set1_epi8(1)),
        );
        let mut acc = [_mm256_setzero_si256(); ACCUMULATORS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm256_dpbusd_avx_epi32(*c, a, b);
            }
        }
        let mut lanes = [0i32; 8];
        let mut total = 0.0;
        for c in acc {
            // SAFETY: `lanes` holds the 8 i32 of a ymm store.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), c) };
            total += lanes.iter().map(|&v| v as f32).sum::<f32>();
        }
        total
    }

    /// The operand of `ldtilecfg`: palette 1, all 8 tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    /// 16 rows × 64 bytes of source tile data.
    #[repr(C, align(64))]
    struct TileData([u8; 1024]);

    /// Emit one AMX peak kernel: 4 accumulator tiles (`tmm0`–`tmm3`) fed by two A and two B tiles,
    /// [`ACCUMULATORS`] tile products per round.
    macro_rules! amx_peak {
        ($name:ident, $dp:literal, $byte:expr) => {
            /// `iters` rounds of [`ACCUMULATORS`] independent-by-fours tile products.
            ///
            /// # Safety
            /// The CPU must run AMX and Linux must let this process use the tiles.
            unsafe fn $name(iters: u64) -> f32 {
                if iters == 0 {
                    return 0.0;
                }
                let mut config = TileConfig([0; 64]);
                config.0[0] = 1;
                for tile in 0..8 {
                    config.0[16 + 2 * tile] = 64;
                    config.0[48 + tile] = 16;
                }
                let data = black_box(TileData([$byte; 1024]));
                // SAFETY: AMX is usable (this function's contract); the loads read the 1 KiB of `data`, and
                // `iters > 0`, so the loop counter reaches zero.
                unsafe {
                    std::arch::asm!(
                        "ldtilecfg [{config}]",
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        "tileloadd tmm4, [{data} + {stride}*1]",
                        "tileloadd tmm5, [{data} + {stride}*1]",
                        "tileloadd tmm6, [{data} + {stride}*1]",
                        "tileloadd tmm7, [{data} + {stride}*1]",
                        "2:",
                        concat!($dp, " tmm0, tmm4, tmm6"),
                        concat!($dp, " tmm1, tmm4, tmm7"),
                        concat!($dp, " tmm2, tmm5, tmm6"),
                        concat!($dp, " tmm3, tmm5, tmm7"),
                        concat!($dp, " tmm0, tmm4, tmm6"),
                        concat!($dp, " tmm1, tmm4, tmm7"),
                        concat!($dp, " tmm2, tmm5, tmm6"),
                        concat!($dp, " tmm3, tmm5, tmm7"),
                        concat!($dp, " tmm0, tmm4, tmm6"),
                        concat!($dp, " tmm1, tmm4, tmm7"),
                        concat!($dp, " tmm2, tmm5, tmm6"),
                        concat!($dp, " tmm3, tmm5, tmm7"),
                        "dec {iters}",
                        "jnz 2b",
                        "tilerelease",
                        config = in(reg) config.0.as_ptr(),
                        data = in(reg) data.0.as_ptr(),
                        stride = in(reg) 64usize,
                        iters = inout(reg) iters => _,
                        options(nostack),
                    );
                }
                0.0
            }
        };
    }
    const _: () = assert!(
        ACCUMULATORS == 12,
        "the AMX peak kernels issue 12 tile products per round"
    );
    amx_peak!(tdpbssd, "tdpbssd", 1);
    // Bytes 0x3c make the bf16 value 0x3c3c (about 0.011): finite, so the sums stay ordinary numbers.
    amx_peak!(tdpbf16ps, "tdpbf16ps", 0x3c);

    /// The safe entry points: each calls its kernel only after detecting the features it was compiled for.
    fn run_fma_zmm(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when avx512f was detected.
        unsafe { fma_zmm(iters) }
    }
    fn run_fma_ymm(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when avx2 and fma were detected.
        unsafe { fma_ymm(iters) }
    }
    fn run_dpbf16_zmm(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when avx512f and avx512bf16 were detected.
        unsafe { dpbf16_zmm(iters) }
    }
    fn run_dpbusd_zmm(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when avx512f and avx512vnni were detected.
        unsafe { dpbusd_zmm(iters) }
    }
    fn run_dpbusd_ymm(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when avx2 and avxvnni were detected.
        unsafe { dpbusd_ymm(iters) }
    }
    fn run_tdpbssd(iters: u64) -> f32 {
        // SAFETY: `all` hands this out only when `lowp::amx::available()`: AMX present and permitted.
        unsafe { tdpbssd(iters) }
    }
    fn run_tdpbf16ps(iters: u64) -> f32 {
        // SAFETY: as for `run_tdpbssd`.
        unsafe { tdpbf16ps(iters) }
    }

    /// Every instruction measured, with its kernel where the CPU has it (the AMX ones last, at [`AMX_BF16`] and
    /// [`AMX_INT8`]).
    pub fn all() -> Vec<Peak> {
        let amx = super::lowp::amx::available();
        let pick = |present: bool, f: fn(u64) -> f32, missing: &'static str| {
            if present {
                Ok(f)
            } else {
                Err(missing)
            }
        };
        vec![
            Peak {
                name: "f32 FMA `vfmadd231ps` zmm (AVX-512F)",
                ops_per_instruction: 32.0,
                kernel: pick(is_x86_feature_detected!("avx512f"), run_fma_zmm, "avx512f"),
            },
            Peak {
                name: "f32 FMA `vfmadd231ps` ymm (AVX2/FMA)",
                ops_per_instruction: 16.0,
                kernel: pick(
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                    run_fma_ymm,
                    "avx2+fma",
                ),
            },
            Peak {
                name: "bf16 dot `vdpbf16ps` zmm (AVX512-BF16)",
                ops_per_instruction: 64.0,
                kernel: pick(
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16"),
                    run_dpbf16_zmm,
                    "avx512bf16",
                ),
            },
            Peak {
                name: "int8 dot `vpdpbusd` zmm (AVX512-VNNI)",
                ops_per_instruction: 128.0,
                kernel: pick(
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"),
                    run_dpbusd_zmm,
                    "avx512vnni",
                ),
            },
            Peak {
                name: "int8 dot `vpdpbusd` ymm (AVX-VNNI)",
                ops_per_instruction: 64.0,
                kernel: pick(
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni"),
                    run_dpbusd_ymm,
                    "avxvnni",
                ),
            },
            Peak {
                name: "bf16 tile product `tdpbf16ps` (AMX-BF16, 16×16×32)",
                ops_per_instruction: 2.0 * 16.0 * 16.0 * 32.0,
                kernel: pick(amx, run_tdpbf16ps, AMX_MISSING),
            },
            Peak {
                name: "int8 tile product `tdpbssd` (AMX-INT8, 16×16×64)",
                ops_per_instruction: 2.0 * 16.0 * 16.0 * 64.0,
                kernel: pick(amx, run_tdpbssd, AMX_MISSING),
            },
        ]
    }

    /// Index of the AMX bf16 peak in [`all`].
    pub const AMX_BF16: usize = 5;
    /// Index of the AMX int8 peak in [`all`].
    pub const AMX_INT8: usize = 6;
    /// What a CPU without usable AMX lacks.
    const AMX_MISSING: &str = "usable AMX (or COCA_AMX=0)";
}

/// Rounds of accumulators per timed run of a peak kernel: long enough to dwarf the clock's resolution.
#[cfg(target_arch = "x86_64")]
const PEAK_ITERS: u64 = 8_000_000;
/// Timed runs per peak; the best counts.
#[cfg(target_arch = "x86_64")]
const PEAK_RUNS: usize = 7;

/// Best GOP/s of `kernel` on the calling thread, by its CPU time.
#[cfg(target_arch = "x86_64")]
fn peak_on_thread(kernel: fn(u64) -> f32, ops_per_round: f64) -> f64 {
    let mut best = f64::INFINITY;
    std::hint::black_box(kernel(PEAK_ITERS / 8));
    for _ in 0..PEAK_RUNS {
        let t = clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID);
        std::hint::black_box(kernel(PEAK_ITERS));
        best = best.min(clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID) - t);
    }
    ops_per_round * PEAK_ITERS as f64 / best / 1e9
}

/// Per-core peak (GOP/s) of each instruction, in the order of `peaks::all`, `None` where skipped or not in
/// `only` (indices into `peaks::all`, all when `None`); prints the table.
#[cfg(target_arch = "x86_64")]
fn instruction_peaks(only: Option<&[usize]>) -> Vec<Option<f64>> {
    println!("## Instruction peaks (thread CPU time, best of {PEAK_RUNS})\n");
    println!("| instruction | ops / instruction | GOP/s, 1 core | GOP/s, 2 cores at once |");
    println!("|---|---:|---:|---:|");
    let mut out = Vec::new();
    for (i, peak) in peaks::all().into_iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            out.push(None);
            continue;
        }
        let per_round = peak.ops_per_instruction * peaks::ACCUMULATORS as f64;
        let kernel = match peak.kernel {
            Ok(k) => k,
            Err(missing) => {
                println!(
                    "| {} | {} | skipped: no {missing} | |",
                    peak.name, peak.ops_per_instruction
                );
                out.push(None);
                continue;
            }
        };
        let one = peak_on_thread(kernel, per_round);
        let two: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| s.spawn(move || peak_on_thread(kernel, per_round)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        println!(
            "| {} | {} | {one:.1} | {two:.1} |",
            peak.name, peak.ops_per_instruction
        );
        out.push(Some(one));
    }
    println!();
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn instruction_peaks(_: Option<&[usize]>) -> Vec<Option<f64>> {
    println!("## Instruction peaks\n\nskipped: not an x86_64 CPU\n");
    vec![None; 7]
}

/// Read bandwidth (GB/s) of summing `data` on `threads` threads, best of 5 by wall time.
fn read_bandwidth(data: &[u32], threads: usize) -> f64 {
    fn sum(chunk: &[u32]) -> u32 {
        let mut acc = [0u32; 16];
        for block in chunk.chunks_exact(16) {
            for (a, v) in acc.iter_mut().zip(block) {
                *a = a.wrapping_add(*v);
            }
        }
        acc.iter().fold(0, |a, &b| a.wrapping_add(b))
    }
    let part = data.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = data.chunks(part).map(|c| s.spawn(move || sum(c))).collect();
            handles
                .into_iter()
                .fold(0u32, |a, h| a.wrapping_add(h.join().unwrap_or(0)))
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::mem::size_of_val(data) as f64 / best / 1e9
}

/// One product `x (m × k) · Wᵀ`, `W` (n × k).
struct Shape {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    /// The weight is a bare (k, n) projection (the LM head), which coca multiplies through `ops::project`.
    projection: bool,
}

/// The products of `coca_ViT-B-32`'s towers (batch 1 and 8) and of one batch-1 decoding step.
fn shapes(cfg: &CocaConfig) -> Vec<Shape> {
    let v = &cfg.vision_cfg;
    let (gh, gw) = v.grid();
    let image_tokens = gh * gw + 1;
    let t = &cfg.text_cfg;
    let text_tokens = t.context_length + usize::from(t.embed_cls);
    let d = &cfg.multimodal_cfg;
    let s = |name: String, m, k, n| Shape {
        name,
        m,
        k,
        n,
        projection: false,
    };
    let mut out = vec![
        s(
            format!("image qkv {image_tokens}×{}→{}", v.width, 3 * v.width),
            image_tokens,
            v.width,
            3 * v.width,
        ),
        s(
            format!("image c_fc {image_tokens}×{}→{}", v.width, v.mlp_width()),
            image_tokens,
            v.width,
            v.mlp_width(),
        ),
        s(
            format!("image c_proj {image_tokens}×{}→{}", v.mlp_width(), v.width),
            image_tokens,
            v.mlp_width(),
            v.width,
        ),
        s(
            format!(
                "image c_fc batch 8: {}×{}→{}",
                8 * image_tokens,
                v.width,
                v.mlp_width()
            ),
            8 * image_tokens,
            v.width,
            v.mlp_width(),
        ),
        s(
            format!("text c_fc {text_tokens}×{}→{}", t.width, t.mlp_width()),
            text_tokens,
            t.width,
            t.mlp_width(),
        ),
        s(
            format!(
                "text c_fc batch 8: {}×{}→{}",
                8 * text_tokens,
                t.width,
                t.mlp_width()
            ),
            8 * text_tokens,
            t.width,
            t.mlp_width(),
        ),
        s(
            format!("decode c_fc 1×{}→{}", d.width, d.mlp_width()),
            1,
            d.width,
            d.mlp_width(),
        ),
        s(
            format!("decode c_proj 1×{}→{}", d.mlp_width(), d.width),
            1,
            d.mlp_width(),
            d.width,
        ),
        s(
            format!("1 row {}→{}", v.width, v.mlp_width()),
            1,
            v.width,
            v.mlp_width(),
        ),
    ];
    for rows in [1, 6] {
        out.push(Shape {
            name: format!("LM head {rows}×{}→{}", d.width, d.vocab_size),
            m: rows,
            k: d.width,
            n: d.vocab_size,
            projection: true,
        });
    }
    out
}

/// Deterministic N(0, std²) values (SplitMix64 and Box–Muller).
fn normal(len: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32 * std
        })
        .collect()
}

/// The operands of one shape and every kernel's prepared weight.
struct Operands {
    x: Tensor,
    w: Tensor,
    w_proj: Tensor,
    x_bf16: Tensor,
    w_bf16: Tensor,
    quantized: Vec<(GgmlDType, QMatMul)>,
    /// coca's packed int8 and bf16 weights, where the AMX kernels run and the shape is theirs.
    packed: Vec<PackedWeight>,
    /// The activations as a slice, for the low-precision kernels.
    x_values: Vec<f32>,
}

/// The quantized formats measured: GGML's 8-bit and 4-bit blocks of 32, and the 4-bit k-quant.
const QUANTS: [GgmlDType; 3] = [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4K];

impl Operands {
    /// N(0, 1) activations (as after a LayerNorm) and N(0, 1/k) weights (outputs of unit scale, as a trained
    /// layer keeps them). Only coca's kernels are prepared when `coca_only`.
    fn new(s: &Shape, coca_only: bool) -> Res<Self> {
        let dev = Device::Cpu;
        let x_values = normal(s.m * s.k, 1.0, 1);
        let x = Tensor::from_vec(x_values.clone(), (s.m, s.k), &dev)?;
        let w_values = normal(s.n * s.k, (s.k as f32).powf(-0.5), 2);
        let w = Tensor::from_vec(w_values.clone(), (s.n, s.k), &dev)?;
        let mut quantized = Vec::new();
        if !coca_only {
            for q in QUANTS {
                quantized.push((q, QMatMul::from_qtensor(QTensor::quantize(&w, q)?)?));
            }
        }
        let mut packed = Vec::new();
        if amx_shape(s) {
            packed.push(PackedWeight::quantize_int8(&w_values, s.n, s.k)?);
            packed.push(PackedWeight::from_f32_as_bf16(&w_values, s.n, s.k)?);
        }
        Ok(Self {
            packed,
            x_values,
            w_proj: w.t()?.contiguous()?,
            x_bf16: x.to_dtype(DType::BF16)?,
            w_bf16: w.to_dtype(DType::BF16)?,
            x,
            w,
            quantized,
        })
    }

    /// coca's f32 product on the path the model takes.
    fn coca_f32(&self, s: &Shape) -> candle_core::Result<Tensor> {
        if s.projection {
            ops::project(&self.x, &self.w_proj)
        } else {
            ops::linear(&self.x, &ops::LinearWeight::Dense(self.w.clone()), None)
        }
    }

    fn candle_f32(&self) -> candle_core::Result<Tensor> {
        self.x.matmul(&self.w.t()?)
    }

    fn candle_bf16(&self) -> candle_core::Result<Tensor> {
        self.x_bf16.matmul(&self.w_bf16.t()?)
    }
}

/// Whether the AMX kernels are measured at `s`: a tower's product (more than a few rows, a `Linear` weight) on a
/// CPU with usable AMX. Products of a few rows are the thin kernels' job.
fn amx_shape(s: &Shape) -> bool {
    s.m > 8 && !s.projection && lowp::amx::available()
}

/// Which of coca's kernels `ops` picks for `s`.
fn coca_kernel_name(s: &Shape) -> &'static str {
    if s.m <= 8 {
        "coca f32 thin mat-vec"
    } else {
        "coca f32 gemm512"
    }
}

/// Best (process CPU seconds per thread, wall seconds) of repeated calls of `f` for about `budget`.
fn time_kernel(
    threads: usize,
    budget: Duration,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> Res<(f64, f64)> {
    std::hint::black_box(f()?);
    let start = Instant::now();
    let (mut cpu, mut wall) = (f64::INFINITY, f64::INFINITY);
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let (c0, w0) = (
            clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID),
            Instant::now(),
        );
        std::hint::black_box(f()?);
        wall = wall.min(w0.elapsed().as_secs_f64());
        cpu = cpu.min((clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID) - c0) / threads as f64);
        runs += 1;
    }
    Ok((cpu, wall))
}

/// Per-core GOP/s of the instructions each kernel is held against (0 where not measured).
#[derive(Clone, Copy, Debug)]
struct KernelPeaks {
    f32_fma: f64,
    bf16_dot: f64,
    int8_dot: f64,
    amx_bf16: f64,
    amx_int8: f64,
}

/// The speed table for `threads` threads (run in a child process); only coca's f32 and AMX kernels at the towers'
/// shapes when `amx_only`.
fn kernel_table(threads: usize, budget: Duration, peaks: KernelPeaks, amx_only: bool) -> Res<()> {
    let cfg = CocaConfig::builtin(MODEL)?;
    println!("### {threads} thread(s)\n");
    println!("| product | kernel | GOP/s by CPU time | GOP/s by wall time | % of the matching instruction peak ({threads} core(s), CPU time) |");
    println!("|---|---|---:|---:|---:|");
    for s in shapes(&cfg) {
        if amx_only && !amx_shape(&s) {
            continue;
        }
        let ops = Operands::new(&s, amx_only)?;
        let flops = 2.0 * (s.m * s.n * s.k) as f64;
        let row =
            |kernel: &str, peak: f64, f: &mut dyn FnMut() -> candle_core::Result<()>| -> Res<()> {
                let (cpu, wall) = time_kernel(threads, budget, f)?;
                let (by_cpu, by_wall) = (flops / cpu / 1e9, flops / wall / 1e9);
                let pct = if peak > 0.0 {
                    format!("{:.1}%", 100.0 * by_cpu / (peak * threads as f64))
                } else {
                    "n/a".into()
                };
                println!(
                    "| {} | {kernel} | {by_cpu:.1} | {by_wall:.1} | {pct} |",
                    s.name
                );
                Ok(())
            };
        row(coca_kernel_name(&s), peaks.f32_fma, &mut || {
            ops.coca_f32(&s).map(drop)
        })?;
        let mut out = vec![0f32; s.m * s.n];
        for weight in &ops.packed {
            let (name, peak) = match weight.format() {
                lowp::Format::Int8 => ("coca AMX int8 (tdpbssd)", peaks.amx_int8),
                lowp::Format::Bf16 => ("coca AMX bf16 (tdpbf16ps)", peaks.amx_bf16),
            };
            row(name, peak, &mut || {
                lowp::amx::matmul_on_amx(&ops.x_values, s.m, weight, None, &mut out)
            })?;
        }
        if amx_only {
            continue;
        }
        row("candle f32 matmul", peaks.f32_fma, &mut || {
            ops.candle_f32().map(drop)
        })?;
        row("candle bf16 matmul", peaks.bf16_dot, &mut || {
            ops.candle_bf16().map(drop)
        })?;
        for (q, qm) in &ops.quantized {
            row(
                &format!("candle QMatMul {q:?}"),
                peaks.int8_dot,
                &mut || qm.forward(&ops.x).map(drop),
            )?;
        }
    }
    println!();
    Ok(())
}

/// Max abs error and cosine of `got` against `want`.
fn compare(want: &Tensor, got: &Tensor) -> Res<(f64, f64)> {
    let a = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let b = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (mut max, mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(&b) {
        let (x, y) = (f64::from(x), f64::from(y));
        max = max.max((x - y).abs());
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    Ok((max, dot / (aa.sqrt() * bb.sqrt())))
}

/// Every low-precision output against coca's f32 output on the same operands.
fn accuracy_table(cfg: &CocaConfig) -> Res<()> {
    println!("## Accuracy against coca's f32 output (outputs have unit scale)\n");
    print!("| product |");
    let kernels: Vec<String> = std::iter::once("bf16".to_string())
        .chain(QUANTS.iter().map(|q| format!("{q:?}")))
        .collect();
    for k in &kernels {
        print!(" {k} max abs err | {k} cosine |");
    }
    println!();
    println!("|---|{}", "---:|---:|".repeat(kernels.len()));
    for s in shapes(cfg) {
        let ops = Operands::new(&s, false)?;
        let reference = ops.coca_f32(&s)?;
        print!("| {} |", s.name);
        let mut outputs = vec![ops.candle_bf16()?];
        for (_, qm) in &ops.quantized {
            outputs.push(qm.forward(&ops.x)?);
        }
        for out in outputs {
            let (max, cos) = compare(&reference, &out)?;
            print!(" {max:.2e} | {cos:.6} |");
        }
        println!();
    }
    println!();
    Ok(())
}

/// Weight parameters a cached batch-1 decoding step reads, and the ones it does not (token embeddings beyond the
/// row looked up, the cross-attention key/value projections, applied once per image).
fn decode_step_params(cfg: &CocaConfig) -> (usize, usize) {
    let block = |w: usize, mlp: usize| 4 * w * w + 2 * w * mlp;
    let t = &cfg.text_cfg;
    let d = &cfg.multimodal_cfg;
    let text = t.layers * block(t.width, t.mlp_width());
    // Each decoder layer: a self-attention block, then a cross-attention block whose keys and values are cached.
    let decoder = d.layers
        * (block(d.width, d.mlp_width()) + 2 * d.width * d.width + 2 * d.width * d.mlp_width());
    let lm_head = d.width * d.vocab_size;
    let not_read = t.vocab_size * t.width + d.layers * 2 * d.width * d.width;
    (text + decoder + lm_head, not_read)
}

fn model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() -> Res<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let amx_only = args.iter().any(|a| a == "--amx");
    args.retain(|a| a != "--amx");
    let seconds: f64 = match args.first().map(|a| a.parse()) {
        Some(Ok(s)) if s > 0.0 => s,
        Some(_) => {
            return Err(format!(
                "expected SECONDS_PER_CASE (a positive number), got {:?}",
                args[0]
            )
            .into())
        }
        None => 0.3,
    };
    let budget = Duration::from_secs_f64(seconds);
    // The child for one thread count: `SECONDS --kernels THREADS F32 BF16 INT8 AMX_BF16 AMX_INT8 [--amx]`.
    if args.get(1).map(String::as_str) == Some("--kernels") {
        let num =
            |i: usize| -> Res<f64> { Ok(args.get(i).ok_or("missing argument")?.parse::<f64>()?) };
        let peaks = KernelPeaks {
            f32_fma: num(3)?,
            bf16_dot: num(4)?,
            int8_dot: num(5)?,
            amx_bf16: num(6)?,
            amx_int8: num(7)?,
        };
        return kernel_table(num(2)? as usize, budget, peaks, amx_only);
    }

    match args.get(1).map(String::as_str) {
        Some("--avx512-lowp") => return avx512_lowp::tables(seconds),
        Some("--avx512-lowp-child") => {
            let threads = args.get(2).ok_or("missing thread count")?.parse()?;
            return avx512_lowp::table(threads, budget);
        }
        _ => {}
    }

    let cfg = CocaConfig::builtin(MODEL)?;
    println!("# Low-precision CPU kernels on {}\n", model_name());
    #[cfg(target_arch = "x86_64")]
    let (amx_bf16, amx_int8) = (peaks::AMX_BF16, peaks::AMX_INT8);
    #[cfg(not(target_arch = "x86_64"))]
    let (amx_bf16, amx_int8) = (5, 6);
    let only = [0, amx_bf16, amx_int8];
    let peaks = instruction_peaks(amx_only.then_some(&only[..]));
    let peak = |i: usize| peaks.get(i).copied().flatten().unwrap_or(0.0);
    let kernel_run = |threads: usize| -> Res<()> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(&exe);
        child
            .args([
                format!("{seconds}"),
                "--kernels".into(),
                threads.to_string(),
                peak(0).to_string(),
                peak(2).to_string(),
                peak(3).to_string(),
                peak(amx_bf16).to_string(),
                peak(amx_int8).to_string(),
            ])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("CANDLE_NUM_THREADS", threads.to_string());
        if amx_only {
            child.arg("--amx");
        }
        let status = child.status()?;
        if !status.success() {
            return Err(format!("the {threads}-thread kernel run failed: {status}").into());
        }
        Ok(())
    };
    if amx_only {
        println!("## GOP/s of coca's f32 and AMX kernels at {MODEL}'s towers' shapes (best over {seconds} s per case)\n");
        for threads in [1usize, 2] {
            kernel_run(threads)?;
        }
        return Ok(());
    }

    println!("## Read bandwidth (array sum, wall time, best of 5)\n");
    println!("| array | threads | GB/s |\n|---:|---:|---:|");
    let mut dram = 0f64;
    for mib in [64usize, 1024] {
        let data: Vec<u32> = (0..(mib << 20) / 4).map(|i| i as u32).collect();
        for threads in [1, 2] {
            let gbs = read_bandwidth(&data, threads);
            println!("| {mib} MiB | {threads} | {gbs:.1} |");
            if mib == 1024 {
                dram = dram.max(gbs);
            }
        }
    }
    println!();

    println!(
        "## GOP/s of the existing kernels at {MODEL}'s shapes (best over {seconds} s per case)\n"
    );
    for threads in [1usize, 2] {
        kernel_run(threads)?;
    }

    accuracy_table(&cfg)?;

    let (params, not_read) = decode_step_params(&cfg);
    let bw = dram;
    println!(
        "## Batch-1 decoding: weight bytes per token, and the floor at the 1 GiB array's bandwidth ({bw:.1} GB/s)\n"
    );
    println!(
        "{:.1} M weights read per token (text tower + decoder + LM head; a further {:.1} M, the token embedding \
         table and the cross-attention key/value projections, are not read by a cached step).\n",
        params as f64 / 1e6,
        not_read as f64 / 1e6
    );
    println!("| weights | bytes / weight | MB / token | floor ms / token | ceiling tokens/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, bytes) in [
        ("f32", 4.0),
        ("bf16", 2.0),
        ("int8 (per-channel scales)", 1.0),
        ("Q8_0", 34.0 / 32.0),
        ("Q4_0", 18.0 / 32.0),
    ] {
        let mb = params as f64 * bytes / 1e6;
        let ms = mb / 1e3 / bw * 1e3;
        println!(
            "| {name} | {bytes:.3} | {mb:.0} | {ms:.2} | {:.0} |",
            1e3 / ms
        );
    }
    Ok(())
}

/// coca's AVX-512 low-precision kernels (`lowp::avx512`) against coca's f32 kernels on the same operands.
#[cfg(target_arch = "x86_64")]
mod avx512_lowp {
    use super::*;
    use coca_model::nn::raw_kernels::lowp::avx512::Kernel;
    use coca_model::nn::raw_kernels::lowp::PackedWeight;

    /// Activation rows up to which a product runs the thin weight-only kernel (the thin f32 kernel's limit).
    const THIN_ROWS: usize = 8;

    /// The towers' products of [`shapes`] with more than [`THIN_ROWS`] rows, and a decoding step's products (the
    /// decoder's attention in-projection, MLP and LM head) for 1 row and for 6 (a 6-beam search).
    fn lowp_shapes(cfg: &CocaConfig) -> Vec<Shape> {
        let mut out: Vec<Shape> = shapes(cfg)
            .into_iter()
            .filter(|s| s.m > THIN_ROWS)
            .collect();
        let d = &cfg.multimodal_cfg;
        for m in [1, 6] {
            for (what, k, n, projection) in [
                ("in_proj", d.width, 3 * d.width, false),
                ("c_fc", d.width, d.mlp_width(), false),
                ("c_proj", d.mlp_width(), d.width, false),
                ("LM head", d.width, d.vocab_size, true),
            ] {
                out.push(Shape {
                    name: format!("decode {what} {m}×{k}→{n}"),
                    m,
                    k,
                    n,
                    projection,
                });
            }
        }
        out
    }

    /// Run the table once per thread count, each in a child process (as the main tables do).
    pub fn tables(seconds: f64) -> Res<()> {
        println!(
            "# coca's AVX-512 low-precision kernels on {}\n",
            model_name()
        );
        let exe = std::env::current_exe()?;
        for threads in [1usize, 2] {
            let status = Command::new(&exe)
                .args([
                    format!("{seconds}"),
                    "--avx512-lowp-child".into(),
                    threads.to_string(),
                ])
                .env("RAYON_NUM_THREADS", threads.to_string())
                .status()?;
            if !status.success() {
                return Err(format!("the {threads}-thread run failed: {status}").into());
            }
        }
        Ok(())
    }

    /// The table for `threads` threads: GOP/s, ms per call and cosine to coca's f32 output of each kernel.
    pub fn table(threads: usize, budget: Duration) -> Res<()> {
        let cfg = CocaConfig::builtin(MODEL)?;
        println!("### {threads} thread(s)\n");
        println!("| product | kernel | GOP/s by CPU time | GOP/s by wall time | ms per call (wall) | cosine to f32 |");
        println!("|---|---|---:|---:|---:|---:|");
        for s in lowp_shapes(&cfg) {
            let dev = Device::Cpu;
            let xs = normal(s.m * s.k, 1.0, 1);
            let ws = normal(s.n * s.k, (s.k as f32).powf(-0.5), 2);
            let x = Tensor::from_vec(xs.clone(), (s.m, s.k), &dev)?;
            let w = Tensor::from_vec(ws.clone(), (s.n, s.k), &dev)?;
            let w_proj = w.t()?.contiguous()?;
            let dense = ops::LinearWeight::Dense(w);
            let f32_out = || {
                if s.projection {
                    ops::project(&x, &w_proj)
                } else {
                    ops::linear(&x, &dense, None)
                }
            };
            let reference = f32_out()?;
            let flops = 2.0 * (s.m * s.n * s.k) as f64;
            let row =
                |kernel: &str, f: &mut dyn FnMut() -> candle_core::Result<Tensor>| -> Res<()> {
                    let cos = compare(&reference, &f()?)?.1;
                    let (cpu, wall) = time_kernel(threads, budget, || f().map(drop))?;
                    println!(
                        "| {} | {kernel} | {:.1} | {:.1} | {:.3} | {cos:.6} |",
                        s.name,
                        flops / cpu / 1e9,
                        flops / wall / 1e9,
                        wall * 1e3
                    );
                    Ok(())
                };
            row(coca_kernel_name(&s), &mut || f32_out())?;
            let int8 = PackedWeight::quantize_int8(&ws, s.n, s.k)?;
            let bf16 = PackedWeight::from_f32_as_bf16(&ws, s.n, s.k)?;
            let mut runs = vec![("int8 vpdpbusd", Kernel::Int8Vnni, &int8)];
            if s.m <= THIN_ROWS {
                runs.push(("int8 weight-only thin", Kernel::Thin, &int8));
                runs.push(("bf16 weight-only thin", Kernel::Thin, &bf16));
            } else {
                runs.push(("bf16 vdpbf16ps", Kernel::Bf16, &bf16));
            }
            for (name, kernel, weight) in runs {
                row(name, &mut || {
                    let mut out = vec![0f32; s.m * s.n];
                    kernel.run(&xs, s.m, weight, None, &mut out)?;
                    Tensor::from_vec(out, (s.m, s.n), &Device::Cpu)
                })?;
            }
        }
        println!();
        Ok(())
    }
}

/// The AVX-512 kernels exist on x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
mod avx512_lowp {
    use super::*;

    pub fn tables(_: f64) -> Res<()> {
        println!("skipped: the AVX-512 low-precision kernels need an x86-64 CPU");
        Ok(())
    }

    pub fn table(_: usize, _: Duration) -> Res<()> {
        tables(0.0)
    }
}
