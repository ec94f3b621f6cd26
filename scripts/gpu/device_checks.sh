#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU (driver >= 580), from the repository root:
#
#   scripts/gpu/device_checks.sh [COCA_BIN]        # default target/cuda/release/coca (scripts/cuda-build.sh)
#   KERNEL_TESTS=target/cuda/cuda_kernel_tests scripts/gpu/device_checks.sh    # (scripts/gpu/build-kernel-tests.sh)
#
# 1. parity on the GPU: every committed open_clip fixture (fixtures/parity/tiny_*) in fp32 — embeddings, logits,
#    losses and every parameter's gradient, through the training path's GPU ops — and in bf16 (inference);
# 1b. with KERNEL_TESTS (the executable of crates/coca-model/tests/cuda_kernels.rs): coca's CUDA kernels against
#    the CPU kernels, then the parity of 1 again with those kernels on (COCA_CUDA_KERNELS=1);
# 2. scripts/bench/bench_gpu.py: coca beside open_clip on the same card (image embedding, captions, train step in
#    fp32, amp_bf16 and amp_bf16 with --grad-checkpointing), with coca's kernels on if 1b passed.
# Results go to $OUT (default gpu-out/). Needs python3 with torch (CUDA) and open_clip; wheels placed in .whl/
# (open_clip_torch, ftfy, wcwidth) are installed first, for machines without a package index.
set -uo pipefail

bin="${1:-target/cuda/release/coca}"
out="${OUT:-gpu-out}"
mkdir -p "$out"
status=0

# CUDA 13 libraries: the toolkit's, then those of the NVIDIA wheels next to torch (cuBLAS, NVRTC, NCCL).
libs=/usr/local/cuda/lib64
for d in $(python3 -c 'import glob, os, nvidia; print(" ".join(sorted({os.path.dirname(p) for b in nvidia.__path__ for p in glob.glob(b + "/**/lib*.so*", recursive=True)})))' 2>/dev/null); do
    libs="$libs:$d"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    ldd "$bin" | grep -E "cuda|cublas|curand|nvrtc|nccl|not found"
} 2>&1 | tee "$out/machine.txt"

echo "== parity fp32 (with gradients) on cuda:0"
"$bin" parity --device cuda:0 fixtures/parity/tiny_* 2>&1 | tee "$out/parity.txt" || status=1
echo "== parity bf16 (inference) on cuda:0"
"$bin" parity --device cuda:0 --precision bf16 fixtures/parity/tiny_* 2>&1 | tee -a "$out/parity.txt" || status=1

kernels=0
if [[ -n "${KERNEL_TESTS:-}" ]]; then
    kernels=1
    echo "== coca's CUDA kernels against the CPU kernels ($KERNEL_TESTS)"
    "$KERNEL_TESTS" --test-threads=1 --nocapture 2>&1 | tee "$out/kernel_tests.txt" || { status=1; kernels=0; }
    echo "== parity fp32 (with gradients) on cuda:0, COCA_CUDA_KERNELS=1"
    COCA_CUDA_KERNELS=1 "$bin" parity --device cuda:0 fixtures/parity/tiny_* 2>&1 |
        tee "$out/parity_kernels.txt" || { status=1; kernels=0; }
    echo "== parity bf16 (inference) on cuda:0, COCA_CUDA_KERNELS=1"
    COCA_CUDA_KERNELS=1 "$bin" parity --device cuda:0 --precision bf16 fixtures/parity/tiny_* 2>&1 |
        tee -a "$out/parity_kernels.txt" || { status=1; kernels=0; }
fi

# The benchmarks use coca's kernels only when all their checks above passed on this card.
echo "== benchmarks (COCA_CUDA_KERNELS=$kernels)"
COCA_CUDA_KERNELS=$kernels PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-420}" \
    python3 scripts/bench/bench_gpu.py --coca-bin "$bin" --out "$out" ${BENCH_ARGS:-} 2>&1 |
    tee "$out/bench.log" || status=1
exit $status
