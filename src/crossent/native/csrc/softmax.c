/* softmax and log_softmax over contiguous rows (N, C), forward and backward, in float32:
 *
 *   log_softmax: y_c = (x_c - k) - log S            backward: dx_c = g_c - exp(y_c) sum_j g_j
 *   softmax:     y_c = exp(x_c - k) / S             backward: dx_c = y_c (g_c - sum_j y_j g_j)
 *
 * with k the row max and S = sum_c exp(x_c - k); a row with +inf, NaN or only -inf is all NaN.
 */
#include "common.h"

struct softmax_args {
    int dtype, log, backward;
    const void *a, *b; /* forward: x; backward: g, y */
    void *out;
    int64_t rows, classes;
    int failed; /* set when a thread cannot allocate its scratch memory */
};

static void softmax_row(const struct softmax_args *s, const float *x, float *out, const void *next) {
    const int64_t c = s->classes, next_bytes = c * (int64_t)dtype_size(s->dtype);
    const float m = row_max(x, c);
    /* log_softmax needs only the sum; softmax keeps the exponentials in its output */
    const float sum = row_sum_exp(x, c, m, s->log ? NULL : out, NULL, next, next_bytes);
    if (s->log) {
        const float log_s = logf(sum);
#pragma omp simd
        for (int64_t i = 0; i < c; i++) out[i] = (x[i] - m) - log_s;
    } else {
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t i = 0; i < c; i++) out[i] *= inv;
    }
}

/* `next`: the next row's upstream gradient and output, fetched during the exp pass */
static void softmax_backward_row(const struct softmax_args *s, const float *g, const float *y, float *out,
                                 const void *next_g, const void *next_y) {
    const int64_t c = s->classes, bytes = c * (int64_t)dtype_size(s->dtype);
    float dot = 0.0f;
    if (s->log) {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < c; i++) dot += g[i];
        const int64_t parts = (c + PREFETCH_BLOCK - 1) / PREFETCH_BLOCK;
        for (int64_t b = 0; b < parts; b++) {
            const int64_t lo = b * PREFETCH_BLOCK, hi = lo + PREFETCH_BLOCK < c ? lo + PREFETCH_BLOCK : c;
            prefetch_part(next_g, bytes, b, parts);
            prefetch_part(next_y, bytes, b, parts);
#pragma omp simd
            for (int64_t i = lo; i < hi; i++) out[i] = g[i] - fast_exp(y[i]) * dot;
        }
    } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < c; i++) dot += y[i] * g[i];
#pragma omp simd
        for (int64_t i = 0; i < c; i++) out[i] = (g[i] - dot) * y[i];
    }
}

static void softmax_range(void *ctx, int64_t begin, int64_t end) {
    struct softmax_args *s = (struct softmax_args *)ctx;
    const int64_t c = s->classes;
    const int half = s->dtype != F32;
    float *scratch = (float *)malloc((size_t)(3 * c + 1) * sizeof(float));
    if (!scratch) {
        s->failed = 1;
        return;
    }
    for (int64_t n = begin; n < end; n++) {
        const int64_t at = n * c;
        float *out = half ? scratch + 2 * c : (float *)s->out + at;
        const float *a = (const float *)s->a + at, *b = (const float *)s->b + at;
        if (half) {
            load_row(s->dtype, s->a, at, scratch, c);
            a = scratch;
            if (s->backward) {
                load_row(s->dtype, s->b, at, scratch + c, c);
                b = scratch + c;
            }
        }
        const size_t next = (size_t)(at + c) * dtype_size(s->dtype);
        const int last = n + 1 == end;
        if (s->backward)
            softmax_backward_row(s, a, b, out, last ? NULL : (const char *)s->a + next,
                                 last ? NULL : (const char *)s->b + next);
        else softmax_row(s, a, out, last ? NULL : (const char *)s->a + next);
        if (half) store_row(s->dtype, out, s->out, at, c);
    }
    free(scratch);
}

/* forward: a = x (b unused); backward: a = grad_output, b = the forward's output */
EXPORT int crossent_softmax(int dtype, int log, int backward, const void *a, const void *b, void *out, int64_t rows,
                            int64_t classes, int threads) {
    const size_t bytes = (size_t)(rows * classes) * dtype_size(dtype);
    struct softmax_args s = {dtype, log, backward, a, b, out, rows, classes, 0};
    advise_huge(out, bytes);
    parallel_for(rows, rows_grain(classes), threads, softmax_range, &s);
    return s.failed ? -1 : 0;
}
