/* Cross-entropy rows: statistics, loss and gradient of logits rows (N, C), one row at a time while
 * it is in cache. The math is crossent._engine's (same statistics, same shift):
 *
 *   k = max(max_c x_c, lowest finite)      S = sum_c exp(x_c - k)
 *   class index y (m = [y != ignore], eps = smoothing over V classes, Z = sum_c w_c (x_c - k)):
 *     l = m [(1 - eps) w_y ((k - x_y) + log S) + (eps / V) (log S sum_c w_c - Z)]
 *     dl/dx_c = m [(1 - eps) w_y (p_c - [c = y]) + (eps / V) (p_c sum_c w_c - w_c)],  p = exp(x - k) / S
 *   probabilities t (q = (1 - eps) t + eps / V, A = sum_c w_c q_c (x_c - k), B = sum_c w_c q_c):
 *     l = B log S - A                       dl/dx_c = p_c B - w_c q_c
 *
 * The gradient is written as coef_n * dl/dx (coef: d output / d l_n). A row's exponentials are kept
 * in the gradient row (float32 output) or in a float32 scratch row (half output) between the sum
 * and the gradient, so each element takes one exp.
 */
#include "common.h"

struct ce_args {
    int dtype;
    const void *x;
    int64_t rows, classes;
    int probability;
    const int64_t *target; /* class indices (N,), or NULL with probabilities */
    const void *prob;      /* probabilities (N, C) in `dtype` */
    int64_t ignore_index;
    const float *weight; /* (C,) or NULL */
    float eps, inv_classes, weight_sum;
    const float *coef; /* per row (coef_stride 1) or one value (0); NULL: 1 */
    int64_t coef_stride;
    float coef_scale; /* multiplies coef (and divides it by the total target weight for a 'mean') */
    int have_stats;   /* shift and sum_exp are given (a backward): the gradient pass only */
    float *loss, *shift, *sum_exp, *mass;
    void *grad;
    int failed; /* set when a thread cannot allocate its scratch memory */
};

/* sum_c w_c (x_c - k), w = 1 when NULL */
static inline float row_weighted_shift(const float *x, int64_t c, float k, const float *w) {
    float z = 0.0f;
    if (w) {
#pragma omp simd reduction(+ : z)
        for (int64_t i = 0; i < c; i++) z += w[i] * (x[i] - k);
    } else {
#pragma omp simd reduction(+ : z)
        for (int64_t i = 0; i < c; i++) z += x[i] - k;
    }
    return z;
}

/* one row: x (float32), q (float32 probabilities, or NULL), out (the gradient row, float32, or NULL) */
static void ce_row(const struct ce_args *a, int64_t n, const float *x, const float *t, float *g, const void *next) {
    const int64_t c = a->classes;
    const float *w = a->weight;
    float k, s;
    if (a->have_stats) {
        k = a->shift[n];
        s = a->sum_exp[n];
    } else {
        k = row_max(x, c);
        k = k > -FLT_MAX ? k : -FLT_MAX; /* a row of -inf: x - k is -inf, not NaN */
        s = row_sum_exp(x, c, k, g, next, c * (int64_t)dtype_size(a->dtype));
        if (a->shift) a->shift[n] = k;
        if (a->sum_exp) a->sum_exp[n] = s;
    }
    float log_s = logf(s);
    float coef = (a->coef ? a->coef[n * a->coef_stride] : 1.0f) * a->coef_scale;
    if (a->probability) {
        const float keep = 1.0f - a->eps, spread = a->eps * a->inv_classes;
        float wq_shift = 0.0f, b = 0.0f;
        if (!a->have_stats || a->mass == NULL) {
            /* 0 * (-inf) = NaN where a -inf logit has no target mass, as in torch */
            if (w) {
#pragma omp simd reduction(+ : wq_shift, b)
                for (int64_t i = 0; i < c; i++) {
                    float wq = (t[i] * keep + spread) * w[i];
                    wq_shift += wq * (x[i] - k);
                    b += wq;
                }
            } else {
#pragma omp simd reduction(+ : wq_shift, b)
                for (int64_t i = 0; i < c; i++) {
                    float q = t[i] * keep + spread;
                    wq_shift += q * (x[i] - k);
                    b += q;
                }
            }
            if (a->mass) a->mass[n] = b;
        } else {
            b = a->mass[n];
        }
        if (a->loss) a->loss[n] = c == 0 ? -0.0f : b * log_s - wq_shift;
        if (!g) return;
        /* dl/dx_c = p_c B - w_c q_c */
        const float pb = coef * b / s;
        if (a->have_stats) {
#pragma omp simd
            for (int64_t i = 0; i < c; i++)
                g[i] = fast_exp(x[i] - k) * pb - coef * (t[i] * keep + spread) * (w ? w[i] : 1.0f);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < c; i++) g[i] = g[i] * pb - coef * (t[i] * keep + spread) * (w ? w[i] : 1.0f);
        }
        return;
    }
    const int64_t y = a->target[n];
    const int kept = y != a->ignore_index;
    const float wy = kept && w ? w[y] : 1.0f;
    const float smooth_sum = a->eps > 0.0f && kept ? row_weighted_shift(x, c, k, w) : 0.0f;
    if (a->loss) {
        float l = 0.0f;
        if (kept) {
            l = ((k - x[y]) + log_s) * wy;
            if (a->eps > 0.0f)
                l = (1.0f - a->eps) * l + a->eps * a->inv_classes * (log_s * a->weight_sum - smooth_sum);
        }
        a->loss[n] = l;
    }
    if (!g) return;
    if (!kept) {
        /* 0 times the softmax: NaN throughout where the softmax is (a NaN or +inf logit, or only -inf) */
        if (s > 0.0f) memset(g, 0, (size_t)c * sizeof(float));
        else
            for (int64_t i = 0; i < c; i++) g[i] = NAN;
        return;
    }
    /* coef [(1-eps) w_y (p_c - [c=y]) + (eps/V)(p_c W - w_c)] = P e_c - T [c=y] - Q w_c */
    const float target = coef * wy * (1.0f - a->eps);
    const float spread = coef * a->eps * a->inv_classes;
    const float p = (target + spread * a->weight_sum) / s;
    if (a->have_stats) {
        if (w && spread != 0.0f) {
#pragma omp simd
            for (int64_t i = 0; i < c; i++) g[i] = fast_exp(x[i] - k) * p - spread * w[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < c; i++) g[i] = fast_exp(x[i] - k) * p - spread;
        }
    } else {
        if (w && spread != 0.0f) {
#pragma omp simd
            for (int64_t i = 0; i < c; i++) g[i] = g[i] * p - spread * w[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < c; i++) g[i] = g[i] * p - spread;
        }
    }
    g[y] -= target;
}

static void ce_range(void *ctx, int64_t begin, int64_t end) {
    struct ce_args *a = (struct ce_args *)ctx;
    const int64_t c = a->classes;
    const int half = a->dtype != F32;
    /* x and t (half inputs) and the gradient row (half outputs, or written over x) */
    float *scratch = (float *)malloc((size_t)(3 * c + 1) * sizeof(float));
    if (!scratch) {
        a->failed = 1;
        return;
    }
    for (int64_t n = begin; n < end; n++) {
        const float *x, *t = NULL;
        /* a float32 gradient is formed in place, unless it replaces x (the loops read x as they write) */
        const int direct = !half && a->grad != a->x;
        float *g = a->grad ? (direct ? (float *)a->grad + n * c : scratch + 2 * c) : NULL;
        if (half) {
            load_row(a->dtype, a->x, n * c, scratch, c);
            x = scratch;
            if (a->probability) {
                load_row(a->dtype, a->prob, n * c, scratch + c, c);
                t = scratch + c;
            }
        } else {
            x = (const float *)a->x + n * c;
            if (a->probability) t = (const float *)a->prob + n * c;
        }
        ce_row(a, n, x, t, g, n + 1 < end ? (const char *)a->x + (n + 1) * c * (int64_t)dtype_size(a->dtype) : NULL);
        if (g && !direct) {
            if (half) store_row(a->dtype, g, a->grad, n * c, c);
            else memcpy((float *)a->grad + n * c, g, (size_t)c * sizeof(float));
        }
    }
    free(scratch);
}

/* The statistics, loss and (with grad) gradient of every row. Class indices come as `target`,
 * probabilities (in `dtype`) as `prob`. The gradient is for coef_n * coef_scale (coef NULL: 1),
 * and mean_over_weight divides it by the total target weight
 * sum_n m_n w_{y_n}, which is written to *total_weight. With have_stats, shift and sum_exp (and mass
 * for probabilities) are inputs and only the gradient is formed; grad may then be x itself.
 * Returns 0, or 1 with *bad set to the first kept target outside [0, C). */
EXPORT int crossent_cross_entropy(int dtype, const void *x, int64_t rows, int64_t classes, const int64_t *target,
                                  const void *prob, int64_t ignore_index, const float *weight, float eps,
                                  const float *coef, int64_t coef_stride, float coef_scale, int mean_over_weight,
                                  int have_stats,
                                  float *loss, float *shift, float *sum_exp, float *mass, float *total_weight,
                                  void *grad, int threads, int64_t *bad) {
    double total = 0.0, weight_sum = (double)classes;
    if (target) {
        for (int64_t n = 0; n < rows; n++) {
            int64_t y = target[n];
            if (y == ignore_index) continue;
            if (y < 0 || y >= classes) {
                *bad = y;
                return 1;
            }
            total += weight ? (double)weight[y] : 1.0;
        }
    }
    if (weight) {
        weight_sum = 0.0;
        for (int64_t c = 0; c < classes; c++) weight_sum += weight[c];
    }
    if (total_weight) *total_weight = (float)total;
    struct ce_args a = {
        .dtype = dtype, .x = x, .rows = rows, .classes = classes, .probability = prob != NULL, .target = target,
        .prob = prob, .ignore_index = ignore_index, .weight = weight, .eps = eps,
        .inv_classes = (float)(1.0 / (double)classes), .weight_sum = (float)weight_sum, .coef = coef,
        .coef_stride = coef_stride, .coef_scale = mean_over_weight ? (float)(coef_scale / total) : coef_scale,
        .have_stats = have_stats, .loss = loss, .shift = shift, .sum_exp = sum_exp, .mass = mass, .grad = grad};
    if (grad && !have_stats) advise_huge(grad, (size_t)(rows * classes) * dtype_size(dtype));
    parallel_for(rows, rows_grain(classes), threads, ce_range, &a);
    return a.failed ? -1 : 0;
}
