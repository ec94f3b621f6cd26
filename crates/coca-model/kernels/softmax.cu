// Attention's `softmax(scale · scores + mask)` over rows of `width` (f32 or bf16 scores, f32 arithmetic) and its
// gradient `scale · y ∘ (dy − Σ dy ∘ y)`. One warp per row.
//
// The additive f32 mask (−∞ = blocked) broadcasts to the scores except along the last dimension: row r of the
// scores, r = Σ idx[d] · Π dims[d+1..] over the `nlead` leading dims, adds mask[Σ idx[d] · strides[d] + col]
// (stride 0 on broadcast dims). A row whose every entry is −∞ gives zeros, as the CPU kernel.
#include "common.cuh"

#define MAX_LEAD 8

// Passed by value; the Rust side hands over `[u64; MAX_LEAD]` arrays with the same layout.
struct Lead {
    unsigned long long v[MAX_LEAD];
};

__device__ __forceinline__ size_t mask_offset(size_t row, int nlead, const Lead &dims, const Lead &strides) {
    size_t off = 0;
    for (int d = nlead - 1; d >= 0; --d) {
        const size_t n = dims.v[d];
        off += (row % n) * strides.v[d];
        row /= n;
    }
    return off;
}

template <typename T>
__device__ void softmax_fwd(const T *x, const float *mask, T *y, size_t rows, int width, float scale, int nlead,
                            Lead dims, Lead strides) {
    const size_t row = warp_row();
    if (row >= rows) return;
    x += row * width;
    y += row * width;
    const float *m = mask ? mask + mask_offset(row, nlead, dims, strides) : nullptr;
    float mx = -INFINITY;
    for (int i = lane(); i < width; i += WARP) {
        const float v = load_f32(x, i) * scale + (m ? m[i] : 0.0f);
        mx = fmaxf(mx, v);
    }
    mx = warp_max(mx);
    if (mx == -INFINITY) {
        for (int i = lane(); i < width; i += WARP) store_f32(y, i, 0.0f);
        return;
    }
    float sum = 0.0f;
    for (int i = lane(); i < width; i += WARP) {
        sum += expf(load_f32(x, i) * scale + (m ? m[i] : 0.0f) - mx);
    }
    const float inv = 1.0f / warp_sum(sum);
    for (int i = lane(); i < width; i += WARP) {
        store_f32(y, i, expf(load_f32(x, i) * scale + (m ? m[i] : 0.0f) - mx) * inv);
    }
}

template <typename T>
__device__ void softmax_bwd(const T *y, const T *g, T *dx, size_t rows, int width, float scale) {
    const size_t row = warp_row();
    if (row >= rows) return;
    y += row * width;
    g += row * width;
    dx += row * width;
    float dot = 0.0f;
    for (int i = lane(); i < width; i += WARP) dot += load_f32(y, i) * load_f32(g, i);
    dot = warp_sum(dot);
    for (int i = lane(); i < width; i += WARP) {
        store_f32(dx, i, scale * load_f32(y, i) * (load_f32(g, i) - dot));
    }
}

#define SOFTMAX_KERNELS(T, SUFFIX)                                                                            \
    extern "C" __global__ void softmax_fwd_##SUFFIX(const T *x, const float *mask, T *y, size_t rows,        \
                                                    int width, float scale, int nlead, Lead dims,             \
                                                    Lead strides) {                                           \
        softmax_fwd(x, mask, y, rows, width, scale, nlead, dims, strides);                                    \
    }                                                                                                         \
    extern "C" __global__ void softmax_bwd_##SUFFIX(const T *y, const T *g, T *dx, size_t rows, int width,   \
                                                    float scale) {                                            \
        softmax_bwd(y, g, dx, rows, width, scale);                                                            \
    }

SOFTMAX_KERNELS(float, f32)
SOFTMAX_KERNELS(__nv_bfloat16, bf16)
