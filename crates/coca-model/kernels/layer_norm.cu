// LayerNorm over the last dimension: `y = (x − mean) · rstd · w + b`, the statistics in f32 over rows of `width`
// activations (f32 or bf16); gain and bias are f32 (bf16 mixed precision keeps LayerNorm parameters in f32).
//
// Forward and the input gradient give each row to one warp. The parameter gradients are column sums over all
// rows: a first kernel sums fixed chunks of rows per column, a second adds the chunks in order, so the result
// does not depend on scheduling (no atomics) and two identical runs agree bit for bit.
#include "common.cuh"

// Mean and 1/std of one row, two passes as the CPU kernel (the centred variance stays accurate for large means).
template <typename T>
__device__ __forceinline__ void row_stats(const T *x, int width, float eps, float *mean, float *rstd) {
    float s = 0.0f;
    for (int i = lane(); i < width; i += WARP) s += load_f32(x, i);
    const float m = warp_sum(s) / (float)width;
    float v = 0.0f;
    for (int i = lane(); i < width; i += WARP) {
        const float d = load_f32(x, i) - m;
        v += d * d;
    }
    *mean = m;
    *rstd = 1.0f / sqrtf(warp_sum(v) / (float)width + eps);
}

template <typename T>
__device__ void ln_fwd(const T *x, const float *w, const float *b, T *y, size_t rows, int width, float eps) {
    const size_t row = warp_row();
    if (row >= rows) return;
    x += row * width;
    y += row * width;
    float mean, rstd;
    row_stats(x, width, eps, &mean, &rstd);
    for (int i = lane(); i < width; i += WARP) {
        store_f32(y, i, (load_f32(x, i) - mean) * rstd * w[i] + b[i]);
    }
}

// dx = rstd · (g·w − mean(g·w) − x̂ · mean(g·w·x̂)), x̂ the normalised input.
template <typename T>
__device__ void ln_bwd_dx(const T *x, const float *w, const T *g, T *dx, size_t rows, int width, float eps) {
    const size_t row = warp_row();
    if (row >= rows) return;
    x += row * width;
    g += row * width;
    dx += row * width;
    float mean, rstd;
    row_stats(x, width, eps, &mean, &rstd);
    float m1 = 0.0f, m2 = 0.0f;
    for (int i = lane(); i < width; i += WARP) {
        const float xhat = (load_f32(x, i) - mean) * rstd;
        const float dxhat = load_f32(g, i) * w[i];
        m1 += dxhat;
        m2 += dxhat * xhat;
    }
    m1 = warp_sum(m1) / (float)width;
    m2 = warp_sum(m2) / (float)width;
    for (int i = lane(); i < width; i += WARP) {
        const float xhat = (load_f32(x, i) - mean) * rstd;
        store_f32(dx, i, rstd * (load_f32(g, i) * w[i] - m1 - xhat * m2));
    }
}

// stats[2·row] = mean, stats[2·row + 1] = rstd.
template <typename T>
__device__ void ln_stats(const T *x, float *stats, size_t rows, int width, float eps) {
    const size_t row = warp_row();
    if (row >= rows) return;
    float mean, rstd;
    row_stats(x + row * width, width, eps, &mean, &rstd);
    if (lane() == 0) {
        stats[2 * row] = mean;
        stats[2 * row + 1] = rstd;
    }
}

// Block (32, PARAM_ROWS): 32 consecutive columns (coalesced loads), PARAM_ROWS threads striding over the rows of
// chunk blockIdx.y. partial[(chunk·2 + 0)·width + col] = Σ g·x̂, partial[(chunk·2 + 1)·width + col] = Σ g.
#define PARAM_ROWS 8
template <typename T>
__device__ void ln_bwd_params_partial(const T *x, const T *g, const float *stats, float *partial, size_t rows,
                                      int width, size_t rows_per_chunk) {
    __shared__ float sdw[PARAM_ROWS][WARP + 1];
    __shared__ float sdb[PARAM_ROWS][WARP + 1];
    const int col = blockIdx.x * WARP + threadIdx.x;
    const size_t chunk = blockIdx.y;
    const size_t r0 = chunk * rows_per_chunk;
    const size_t r1 = min(rows, r0 + rows_per_chunk);
    float dw = 0.0f, db = 0.0f;
    if (col < width) {
        for (size_t r = r0 + threadIdx.y; r < r1; r += PARAM_ROWS) {
            const size_t i = r * width + col;
            const float gv = load_f32(g, i);
            const float xhat = (load_f32(x, i) - stats[2 * r]) * stats[2 * r + 1];
            dw += gv * xhat;
            db += gv;
        }
    }
    sdw[threadIdx.y][threadIdx.x] = dw;
    sdb[threadIdx.y][threadIdx.x] = db;
    __syncthreads();
    if (threadIdx.y == 0 && col < width) {
        for (int k = 1; k < PARAM_ROWS; ++k) {
            dw += sdw[k][threadIdx.x];
            db += sdb[k][threadIdx.x];
        }
        partial[(chunk * 2) * width + col] = dw;
        partial[(chunk * 2 + 1) * width + col] = db;
    }
}

// out[j] = Σ_chunk partial[chunk · n + j], chunks in order; n = 2 · width.
extern "C" __global__ void ln_bwd_params_sum_f32(const float *partial, float *out, size_t chunks, size_t n) {
    const size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float s = 0.0f;
    for (size_t c = 0; c < chunks; ++c) s += partial[c * n + j];
    out[j] = s;
}

#define LN_KERNELS(T, SUFFIX)                                                                                  \
    extern "C" __global__ void ln_fwd_##SUFFIX(const T *x, const float *w, const float *b, T *y, size_t rows,   \
                                               int width, float eps) {                                          \
        ln_fwd(x, w, b, y, rows, width, eps);                                                                   \
    }                                                                                                           \
    extern "C" __global__ void ln_bwd_dx_##SUFFIX(const T *x, const float *w, const T *g, T *dx, size_t rows,  \
                                                  int width, float eps) {                                       \
        ln_bwd_dx(x, w, g, dx, rows, width, eps);                                                               \
    }                                                                                                           \
    extern "C" __global__ void ln_stats_##SUFFIX(const T *x, float *stats, size_t rows, int width, float eps) { \
        ln_stats(x, stats, rows, width, eps);                                                                   \
    }                                                                                                           \
    extern "C" __global__ void ln_bwd_params_partial_##SUFFIX(const T *x, const T *g, const float *stats,       \
                                                              float *partial, size_t rows, int width,           \
                                                              size_t rows_per_chunk) {                          \
        ln_bwd_params_partial(x, g, stats, partial, rows, width, rows_per_chunk);                               \
    }

LN_KERNELS(float, f32)
LN_KERNELS(__nv_bfloat16, bf16)
