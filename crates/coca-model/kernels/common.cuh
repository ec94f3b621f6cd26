// Shared helpers of coca's CUDA kernels: dtype conversion (activations are f32 or bf16, arithmetic is always
// f32) and warp reductions. Row kernels give each row to one warp: attention rows are short (≤ 257 keys) and
// LayerNorm rows are ≤ 4096 wide, so a warp per row keeps every reduction in registers (no shared memory, no
// block barriers) while a block still holds several rows for occupancy.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#define WARP 32

__device__ __forceinline__ float load_f32(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }

// Round-to-nearest-even, as candle's `to_dtype(BF16)` on both backends.
__device__ __forceinline__ void store_f32(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// The row a warp owns (blocks are `rows per block` warps wide along x), and the lane within the warp.
__device__ __forceinline__ size_t warp_row() {
    return (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
}
__device__ __forceinline__ unsigned lane() { return threadIdx.x % WARP; }
