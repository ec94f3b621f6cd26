#!/usr/bin/env bash
# Build `coca` with the `cuda` feature.
#
#   scripts/cuda-build.sh [extra cargo args]       # e.g. --features nccl
#
# With a CUDA toolkit on the machine (nvcc on PATH, or CUDA_HOME set) this is a plain
# `cargo build --release -p coca-cli --features cuda`. Without one, it assembles a toolkit from NVIDIA's
# CUDA 13.0 wheels on PyPI (nvcc, nvvm, crt headers, runtime, cuBLAS, cuRAND, NVRTC, CCCL, NCCL; ~1.3 GB,
# downloaded once into $COCA_CUDA_HOME, default ~/.cache/coca/cuda-13.0) and builds against it. No GPU is needed
# to build; the binary needs an NVIDIA driver >= 580 (CUDA 13) where it runs.
#
# Environment:
#   COCA_CUDA_HOME     where the wheel toolkit lives (default ~/.cache/coca/cuda-13.0)
#   CUDA_COMPUTE_CAP   GPU architecture of the kernels (default 90: H100/H200)
#   CARGO_TARGET_DIR   default target/cuda, so the CPU build's artefacts stay as they are
#   PYTHON             the Python used for `pip install` (default python3)
#
# The binary ends up in $CARGO_TARGET_DIR/release/coca. At run time it loads the driver's libcuda.so.1 and the
# CUDA 13 libraries (libcublas.so.13, libcurand.so.10, libnvrtc.so.13, and libnccl.so.2 with --features nccl):
# put their folder on LD_LIBRARY_PATH if the loader does not find them (`ldd target/cuda/release/coca`).
#
# The GPU tests of coca's own CUDA kernels build with the same toolkit: scripts/gpu/build-kernel-tests.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda}"

build() {
    cd "$repo"
    cargo build --release --locked -p coca-cli --features cuda "$@"
    echo "built $CARGO_TARGET_DIR/release/coca (sm_$CUDA_COMPUTE_CAP)"
}

if command -v nvcc >/dev/null 2>&1 || [[ -n "${CUDA_HOME:-}" && -x "${CUDA_HOME}/bin/nvcc" ]]; then
    echo "using the CUDA toolkit at $(dirname "$(dirname "$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")")")"
    build "$@"
    exit 0
fi

home="${COCA_CUDA_HOME:-$HOME/.cache/coca/cuda-13.0}"
wheels="$home/wheels"
root="$home/root"
python="${PYTHON:-python3}"

# 13.0.x throughout: a driver accepts PTX only from a toolkit no newer than itself (580 = CUDA 13.0).
packages=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cublas==13.1.0.3
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
    'nvidia-cuda-cccl==13.0.*'
    'nvidia-nccl-cu13==2.28.*'
)

if [[ ! -f "$wheels/.complete" ]]; then
    echo "installing the CUDA 13.0 toolkit wheels into $wheels (once; about 1.3 GB)"
    rm -rf "$wheels"
    # One target folder for all of them: nvcc finds nvvm and the crt headers relative to its own path.
    "$python" -m pip install --quiet --no-deps --target "$wheels" "${packages[@]}"
    touch "$wheels/.complete"
fi

cu13="$wheels/nvidia/cu13"
if [[ ! -x "$cu13/bin/nvcc" ]]; then
    echo "error: $cu13/bin/nvcc is missing; delete $wheels and run again" >&2
    exit 1
fi

# A toolkit-shaped root: bin/include/nvvm from the wheels, lib64 with the unversioned names the linker wants.
rm -rf "$root"
mkdir -p "$root/lib64" "$root/stubs"
for d in bin include nvvm; do ln -s "$cu13/$d" "$root/$d"; done
find "$cu13/lib" -maxdepth 1 -name 'lib*.so*' -exec ln -sf {} "$root/lib64/" \;
nccl_lib="$(find "$wheels/nvidia" -path '*nccl*' -name 'libnccl.so.2' | head -n1)"
[[ -n "$nccl_lib" ]] && ln -sf "$nccl_lib" "$root/lib64/libnccl.so.2"
for lib in "$root"/lib64/lib*.so.*; do
    name="$(basename "$lib")"
    ln -sf "$name" "$root/lib64/${name%%.so.*}.so"
done

# The driver library (libcuda.so) comes with the driver, not with any wheel. cudarc links against it, so link
# against a stub that defines every driver entry point cudarc declares; at run time the real libcuda.so.1 loads.
cudarc_src="$(cargo metadata --format-version 1 --manifest-path "$repo/Cargo.toml" --features coca-cli/cuda 2>/dev/null |
    "$python" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')"
grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys/mod.rs" |
    sed -E 's/.*fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$root/stubs/libcuda.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/stubs/libcuda.so" "$root/stubs/libcuda.c"

export PATH="$root/bin:$PATH"
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export LIBRARY_PATH="$root/lib64:$root/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export NCCL_ROOT="$root" NCCL_INCLUDE_DIR="$root/include" NCCL_LIB_DIR="$root/lib64"
build "$@"
