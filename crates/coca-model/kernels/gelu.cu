// Exact (erf) GELU `y = x · Φ(x)` and its gradient `dy · (Φ(x) + x · φ(x))`, elementwise in f32 on f32 or bf16
// activations. Φ(x) = erfc(−x/√2)/2 keeps its relative accuracy in the left tail, as the CPU kernel's form does.
// The bias variants compute `gelu(x + b)` for the MLP, `b` an f32 vector broadcast over rows of `width`, so the
// biased pre-activation is never stored.
#include "common.cuh"

#define INV_SQRT_2PI 0.3989422804014327f
#define FRAC_1_SQRT_2 0.7071067811865476f

__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * erfcf(-x * FRAC_1_SQRT_2); }

template <typename T>
__device__ void gelu_fwd(const T *x, T *y, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = load_f32(x, i);
        store_f32(y, i, v * normal_cdf(v));
    }
}

template <typename T>
__device__ void gelu_bwd(const T *x, const T *g, T *dx, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = load_f32(x, i);
        const float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
        store_f32(dx, i, load_f32(g, i) * (normal_cdf(v) + v * pdf));
    }
}

template <typename T>
__device__ void bias_gelu_fwd(const T *x, const float *b, T *y, size_t n, size_t width) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = load_f32(x, i) + b[i % width];
        store_f32(y, i, v * normal_cdf(v));
    }
}

template <typename T>
__device__ void bias_gelu_bwd(const T *x, const float *b, const T *g, T *dx, size_t n, size_t width) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = load_f32(x, i) + b[i % width];
        const float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
        store_f32(dx, i, load_f32(g, i) * (normal_cdf(v) + v * pdf));
    }
}

#define GELU_KERNELS(T, SUFFIX)                                                                     \
    extern "C" __global__ void gelu_fwd_##SUFFIX(const T *x, T *y, size_t n) { gelu_fwd(x, y, n); } \
    extern "C" __global__ void gelu_bwd_##SUFFIX(const T *x, const T *g, T *dx, size_t n) {         \
        gelu_bwd(x, g, dx, n);                                                                      \
    }                                                                                               \
    extern "C" __global__ void bias_gelu_fwd_##SUFFIX(const T *x, const float *b, T *y, size_t n,   \
                                                      size_t width) {                               \
        bias_gelu_fwd(x, b, y, n, width);                                                           \
    }                                                                                               \
    extern "C" __global__ void bias_gelu_bwd_##SUFFIX(const T *x, const float *b, const T *g, T *dx, \
                                                      size_t n, size_t width) {                     \
        bias_gelu_bwd(x, b, g, dx, n, width);                                                       \
    }

GELU_KERNELS(float, f32)
GELU_KERNELS(__nv_bfloat16, bf16)
