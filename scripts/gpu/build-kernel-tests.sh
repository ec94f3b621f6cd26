#!/usr/bin/env bash
# Build the GPU tests of coca's CUDA kernels (crates/coca-model/tests/cuda_kernels.rs: LayerNorm, GELU and the
# attention softmax, forward and gradients, f32 and bf16, against the CPU kernels) and print the executable's path.
#
#   scripts/gpu/build-kernel-tests.sh            # prints target/cuda/cuda_kernel_tests
#
# Uses the CUDA toolkit as scripts/cuda-build.sh does: nvcc on PATH or CUDA_HOME, else the toolkit that script
# assembles from NVIDIA's PyPI wheels in $COCA_CUDA_HOME (default ~/.cache/coca/cuda-13.0; run scripts/cuda-build.sh
# once first). No GPU is needed to build. On the GPU machine, run it through the device checks:
#
#   KERNEL_TESTS=target/cuda/cuda_kernel_tests scripts/gpu/device_checks.sh
#
# or alone (with the CUDA 13 libraries on LD_LIBRARY_PATH): target/cuda/cuda_kernel_tests --test-threads=1
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda}"

if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x "${CUDA_HOME:-/nonexistent}/bin/nvcc" ]]; then
    root="${COCA_CUDA_HOME:-$HOME/.cache/coca/cuda-13.0}/root"
    if [[ ! -x "$root/bin/nvcc" || ! -f "$root/stubs/libcuda.so" ]]; then
        echo "error: no CUDA toolkit (nvcc) found; run scripts/cuda-build.sh once to assemble one in $root" >&2
        exit 1
    fi
    # The environment scripts/cuda-build.sh builds with; the stub stands in for the driver's libcuda.so at link time.
    export PATH="$root/bin:$PATH"
    export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
    export LIBRARY_PATH="$root/lib64:$root/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi

cd "$repo"
# Release, like the `coca` binary of scripts/cuda-build.sh: the CPU reference kernels are then fast too.
exe="$(cargo test --release --locked -p coca-model --features cuda --test cuda_kernels --no-run \
    --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_kernels" and m.get("executable"):
        print(m["executable"])')"
if [[ -z "$exe" ]]; then
    echo "error: cargo built no cuda_kernels test executable" >&2
    exit 1
fi
# A stable name, so the device machine's command line does not depend on cargo's hash; stripped (115 → 51 MB,
# ~6 MB with xz) because it travels to the GPU machine.
dest="$CARGO_TARGET_DIR/cuda_kernel_tests"
if command -v strip >/dev/null 2>&1; then
    strip -o "$dest" "$exe"
else
    cp "$exe" "$dest"
fi
echo "$dest"
