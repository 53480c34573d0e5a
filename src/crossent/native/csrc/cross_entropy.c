/* Cross-entropy rows: statistics, loss and gradient of logits rows (N, C), one row at a time while
 * it is in cache. The math is crossent._engine's (same statistics, same shift), on the row z of the
 * logits x as the loss sees them (the language-model options; without them z = x, and nothing is
 * formed or copied for them):
 *
 *   z = cap tanh(x / cap) / T            dz/dx = (1 - t)(1 + t) / T,  t = tanh(x / cap)
 *   (without a softcap cap: z = x / T, dz/dx = 1 / T)
 *
 *   k = max(max_c z_c, lowest finite)      S = sum_c exp(z_c - k)
 *   class index y (m = [y != ignore], eps = smoothing over V classes, Z = sum_c w_c (z_c - k)):
 *     l = m [(1 - eps) w_y ((k - z_y) + log S) + (eps / V) (log S sum_c w_c - Z)]
 *     dl/dz_c = m [(1 - eps) w_y (p_c - [c = y]) + (eps / V) (p_c sum_c w_c - w_c)],  p = exp(z - k) / S
 *   probabilities t (q = (1 - eps) t + eps / V, A = sum_c w_c q_c (z_c - k), B = sum_c w_c q_c):
 *     l = B log S - A                       dl/dz_c = p_c B - w_c q_c
 *
 * The gradient is written as coef_n * dl/dx (coef: d output / d l_n), plus the side terms of the
 * row's lse = k + log S and entropy H = log S - E / S (E = sum_c exp(z_c - k) (z_c - k)):
 *   d lse / dz_c = p_c        dH / dz_c = -p_c ((z_c - k) - log S + H)
 * so that every gradient is e_c (P + Q (z_c - k)) - (the target terms), e_c = exp(z_c - k), times
 * dz/dx: P = coef B / S (or its class-index form) + (lse_coef + ent_coef E / S) / S, Q = -ent_coef / S.
 * A forward's z-loss z_loss lse^2 enters as lse_coef = 2 z_loss lse (times the row's z coefficient).
 * The loss row is the cross-entropy alone.
 *
 * A row's exponentials are kept in the gradient row (float32 output) or in a float32 scratch row
 * (half output) between the sum and the gradient, so each element takes one exp. With the options,
 * z (and dz/dx) are formed in scratch rows of their own first, except in a backward with a
 * temperature alone, which forms z = x / T in its one gradient loop.
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
    /* the language-model options */
    int transform;               /* a softcap or a temperature (the rows of z: see ce_range) */
    float inv_cap;               /* 1 / softcap, 0 without one */
    float z_mul;                 /* z = z_mul tanh(x inv_cap) with a softcap (cap / T), else x z_mul (1 / T) */
    float inv_temp;              /* 1 / T */
    float z_loss;                /* forward: the z-loss factor (0: none) */
    float z_coef_scale;          /* forward: coef_scale of the z-loss (a 'mean' divides by the kept rows) */
    float *entropy, *correct;    /* forward: E and [first argmax = y] per row, or NULL */
    const float *lse_coef;       /* backward: d output / d lse_n (N,), or NULL */
    const float *ent_coef;       /* backward: d output / d H_n (N,), or NULL (then ent_sum is E, (N,)) */
    const float *ent_sum;
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

/* z of the row x into z, dz/dx into d (when not NULL); returns max_c z_c (-inf for a row of -inf;
 * NaN elements are skipped, as in row_max) */
static float row_transform(const struct ce_args *a, const float *x, float *z, float *d, int64_t c) {
    const float ic = a->inv_cap, zm = a->z_mul, it = a->inv_temp;
    float m = -INFINITY;
    if (ic == 0.0f) {
#pragma omp simd reduction(max : m)
        for (int64_t i = 0; i < c; i++) {
            float v = x[i] * zm;
            z[i] = v;
            m = v > m ? v : m;
        }
    } else if (d) {
#pragma omp simd reduction(max : m)
        for (int64_t i = 0; i < c; i++) {
            float t = fast_tanh(x[i] * ic);
            float v = t * zm;
            z[i] = v;
            d[i] = (1.0f - t) * (1.0f + t) * it; /* 1 - t is exact where tanh saturates */
            m = v > m ? v : m;
        }
    } else {
#pragma omp simd reduction(max : m)
        for (int64_t i = 0; i < c; i++) {
            float v = fast_tanh(x[i] * ic) * zm;
            z[i] = v;
            m = v > m ? v : m;
        }
    }
    return m;
}

/* 1 when y is the first index of the row's maximum m (as torch.argmax, which takes the first NaN
 * when there is one), else 0. S is NaN where the row holds a NaN (or +inf): only then is the row
 * searched for a NaN; otherwise only [0, y) is, and only when z_y = m. */
static float row_first_max_is(const float *z, int64_t c, int64_t y, float m, float s) {
    if (s != s) {
        for (int64_t i = 0; i < c; i++)
            if (z[i] != z[i]) return i == y ? 1.0f : 0.0f;
    }
    if (!(z[y] == m)) return 0.0f;
    float before = 0.0f;
#pragma omp simd reduction(max : before)
    for (int64_t i = 0; i < y; i++) {
        float hit = z[i] == m ? 1.0f : 0.0f;
        before = hit > before ? hit : before;
    }
    return 1.0f - before;
}

/* ---- the gradient loop --------------------------------------------------------------------------
 * g_c = [e_c P + Q e_c (z_c - k) - (the spread term)] (dz/dx)_c with e_c = exp(z_c - k): read from g
 * (a forward's sum left it there), or recomputed (a backward) from z, which is given or (MAP_SCALE,
 * a temperature alone) formed from x in the loop as x z_mul; dz/dx from d (a softcap), else 1 (or
 * 1 / T, folded into the coefficients). The flags are constants at each call, so each variant
 * compiles to its own vector loop with only the work it needs. (A backward with a softcap forms z
 * and dz/dx in rows of their own first: tanh and exp in one loop run slower than in two.) */
enum { SPREAD_ONE = 0, SPREAD_WEIGHT = 1, SPREAD_PROB = 2 };
enum { MAP_NONE = 0, MAP_SCALE = 1 };

struct grad_terms {
    float k, p, q;
    float spread;                  /* class indices: spread (times w_c with SPREAD_WEIGHT) */
    float coef, keep, prob_spread; /* probabilities: coef (t_c keep + prob_spread) (times w_c) */
    float z_mul;                   /* MAP_SCALE: z = x z_mul */
};

/* the product v rounded to float, as a forward's z row holds it: GCC fuses a product into a later
 * subtraction (z - k) when every use of it can take one, which would make the largest z_c - k the
 * product's rounding error (exp of 1e31 at |z| = 1e38) instead of 0. A select on v is a use that
 * cannot, and changes nothing: `nan` must be NaN where v is. */
static inline float unfused(float v, float nan) { return v == v ? v : nan; }

static inline __attribute__((always_inline)) void grad_loop(float *g, const float *x, const float *w, const float *t,
                                                            const float *d, int64_t c, struct grad_terms m,
                                                            const int recompute, const int map, const int entropic,
                                                            const int spread_kind, const int sloped) {
    const float k = m.k, p = m.p, q = m.q, spread = m.spread, coef = m.coef, keep = m.keep, ps = m.prob_spread;
    const float zm = m.z_mul;
#pragma omp simd
    for (int64_t i = 0; i < c; i++) {
        const float z = map == MAP_SCALE ? unfused(x[i] * zm, x[i]) : x[i];
        float e = recompute ? fast_exp(z - k) : g[i];
        float v = e * p;
        if (entropic) {
            float h = z - k;
            h = h < -FLT_MAX ? -FLT_MAX : h; /* e (z - k) is 0, not NaN, at a -inf element */
            v += q * (e * h);
        }
        if (spread_kind == SPREAD_ONE) v -= spread;
        else if (spread_kind == SPREAD_WEIGHT) v -= spread * w[i];
        else v -= coef * (t[i] * keep + ps) * (w ? w[i] : 1.0f); /* as it always was: same roundings */
        if (sloped) v *= d[i];
        g[i] = v;
    }
}

#define GRAD_SPREADS(R, M, E, S)                                                                       \
    do {                                                                                               \
        if (spread_kind == SPREAD_ONE) grad_loop(g, x, w, t, d, c, m, R, M, E, SPREAD_ONE, S);         \
        else if (spread_kind == SPREAD_WEIGHT) grad_loop(g, x, w, t, d, c, m, R, M, E, SPREAD_WEIGHT, S); \
        else grad_loop(g, x, w, t, d, c, m, R, M, E, SPREAD_PROB, S);                                  \
    } while (0)

/* a forward (recompute 0: the exponentials are in g) or a backward (recompute 1: x is z, or with
 * MAP_SCALE the logits row) */
static void grad_row(float *g, const float *x, const float *w, const float *t, const float *d, int64_t c,
                     struct grad_terms m, int recompute, int map, int entropic, int spread_kind) {
    if (!recompute) {
        if (d) GRAD_SPREADS(0, MAP_NONE, 0, 1);
        else GRAD_SPREADS(0, MAP_NONE, 0, 0);
    } else if (map == MAP_SCALE) {
        if (entropic) GRAD_SPREADS(1, MAP_SCALE, 1, 0);
        else GRAD_SPREADS(1, MAP_SCALE, 0, 0);
    } else if (d) {
        if (entropic) GRAD_SPREADS(1, MAP_NONE, 1, 1);
        else GRAD_SPREADS(1, MAP_NONE, 0, 1);
    } else {
        if (entropic) GRAD_SPREADS(1, MAP_NONE, 1, 0);
        else GRAD_SPREADS(1, MAP_NONE, 0, 0);
    }
}

/* The side terms' part of P (before the slope), and Q into *q: a forward's z-loss, a backward's
 * lse and entropy factors. */
static inline float side_p(const struct ce_args *a, int64_t n, float k, float s, float log_s, float ent, float *q) {
    float side = 0.0f;
    *q = 0.0f;
    if (a->have_stats) {
        if (a->lse_coef) side = a->lse_coef[n];
        if (a->ent_coef) {
            const float h = a->ent_coef[n];
            side += h * ent / s;
            *q = -h / s;
        }
    } else if (a->z_loss != 0.0f) {
        const float zc = (a->coef ? a->coef[n * a->coef_stride] : 1.0f) * a->z_coef_scale;
        side = 2.0f * a->z_loss * zc * (k + log_s);
    }
    return side / s;
}

/* one row: x (float32 z; the logits in a backward with a temperature alone, which forms z in its
 * gradient loop), t (float32 probabilities, or NULL), g (the gradient row, float32, or NULL), d
 * (dz/dx with a softcap, else NULL), m (a forward's max_c z_c) */
static void ce_row(const struct ce_args *a, int64_t n, const float *x, const float *t, float *g, const float *d,
                   float m, const void *next) {
    const int64_t c = a->classes;
    const float *w = a->weight;
    float k, s, ent = 0.0f;
    if (a->have_stats) {
        k = a->shift[n];
        s = a->sum_exp[n];
        if (a->ent_coef) ent = a->ent_sum[n];
    } else {
        k = m > -FLT_MAX ? m : -FLT_MAX; /* a row of -inf: x - k is -inf, not NaN */
        const int64_t next_bytes = c * (int64_t)dtype_size(a->dtype);
        s = row_sum_exp(x, c, k, g, a->entropy ? &ent : NULL, next, next_bytes);
        if (a->entropy) a->entropy[n] = ent;
        if (a->shift) a->shift[n] = k;
        if (a->sum_exp) a->sum_exp[n] = s;
    }
    float log_s = logf(s);
    float coef = (a->coef ? a->coef[n * a->coef_stride] : 1.0f) * a->coef_scale;
    /* the side terms, and a temperature alone: dz/dx = 1 / T multiplies every coefficient */
    const int sided = a->have_stats ? (a->lse_coef || a->ent_coef) : a->z_loss != 0.0f;
    const int entropic = a->have_stats && a->ent_coef;
    const int capped = a->transform && a->inv_cap != 0.0f;
    const float slope = a->transform && !capped ? a->inv_temp : 1.0f;
    const int map = a->have_stats && a->transform && !capped ? MAP_SCALE : MAP_NONE;
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
        if (a->correct) a->correct[n] = 0.0f; /* a probability target names no class */
        if (!g) return;
        /* dl/dz_c = p_c B - w_c q_c */
        coef *= slope;
        struct grad_terms terms = {
            .k = k, .p = coef * b / s, .coef = coef, .keep = keep, .prob_spread = spread, .z_mul = a->z_mul};
        if (sided) {
            terms.p += side_p(a, n, k, s, log_s, ent, &terms.q) * slope;
            terms.q *= slope;
        }
        grad_row(g, x, w, t, d, c, terms, a->have_stats, map, entropic, SPREAD_PROB);
        return;
    }
    const int64_t y = a->target[n];
    const int kept = y != a->ignore_index;
    const float wy = kept && w ? w[y] : 1.0f;
    const float smooth_sum = a->eps > 0.0f && kept && a->loss ? row_weighted_shift(x, c, k, w) : 0.0f;
    if (a->loss) {
        float l = 0.0f;
        if (kept) {
            l = ((k - x[y]) + log_s) * wy;
            if (a->eps > 0.0f)
                l = (1.0f - a->eps) * l + a->eps * a->inv_classes * (log_s * a->weight_sum - smooth_sum);
        }
        a->loss[n] = l;
    }
    if (a->correct) a->correct[n] = kept ? row_first_max_is(x, c, y, m, s) : 0.0f;
    if (!g) return;
    if (!kept) {
        /* 0 times the softmax: NaN throughout where the softmax is (a NaN or +inf logit, or only -inf) */
        if (s > 0.0f) memset(g, 0, (size_t)c * sizeof(float));
        else
            for (int64_t i = 0; i < c; i++) g[i] = NAN;
        return;
    }
    /* coef [(1-eps) w_y (p_c - [c=y]) + (eps/V)(p_c W - w_c)] = P e_c - T [c=y] - Q w_c */
    coef *= slope;
    const float target = coef * wy * (1.0f - a->eps);
    const float spread = coef * a->eps * a->inv_classes;
    struct grad_terms terms = {.k = k, .p = (target + spread * a->weight_sum) / s, .spread = spread, .z_mul = a->z_mul};
    if (sided) {
        terms.p += side_p(a, n, k, s, log_s, ent, &terms.q) * slope;
        terms.q *= slope;
    }
    grad_row(g, x, w, NULL, d, c, terms, a->have_stats, map, entropic,
             w && spread != 0.0f ? SPREAD_WEIGHT : SPREAD_ONE);
    g[y] -= d ? target * d[y] : target;
}

static void ce_range(void *ctx, int64_t begin, int64_t end) {
    struct ce_args *a = (struct ce_args *)ctx;
    const int64_t c = a->classes;
    const int half = a->dtype != F32;
    /* rows of z (and with a softcap and a gradient, dz/dx): the options' but a backward's with a
     * temperature alone */
    const int formed = a->transform && (!a->have_stats || a->inv_cap != 0.0f);
    const int sloped = formed && a->inv_cap != 0.0f && a->grad != NULL;
    /* x and t (half inputs), the gradient row (half outputs, or written over x), z and dz/dx */
    const int64_t scratch_rows = formed ? (sloped ? 5 : 4) : 3;
    float *scratch = (float *)malloc((size_t)(scratch_rows * c + 1) * sizeof(float));
    if (!scratch) {
        a->failed = 1;
        return;
    }
    float *z = scratch + 3 * c, *d = sloped ? scratch + 4 * c : NULL;
    /* a float32 gradient is formed in place, unless it replaces x and the loops read x as they write
     * (rather than z) */
    const int direct = !half && (a->grad != a->x || formed);
    for (int64_t n = begin; n < end; n++) {
        const float *x, *t = NULL;
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
        float m = 0.0f;
        if (formed) {
            m = row_transform(a, x, z, d, c);
            x = z;
        } else if (!a->have_stats) {
            m = row_max(x, c);
        }
        const void *next = n + 1 < end ? (const char *)a->x + (n + 1) * c * (int64_t)dtype_size(a->dtype) : NULL;
        ce_row(a, n, x, t, g, d, m, next);
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
 *
 * The language-model options: softcap (0: none) and temperature (1: none) transform the logits first;
 * z_loss (0: none) adds the gradient of z_loss lse_n^2 at kept rows to a forward's, for coef_n *
 * coef_scale (mean_over_weight: divided by the number of kept rows instead); entropy and correct
 * (forward, or NULL) receive E and [the first argmax of z is y] per row; lse_coef and ent_coef (a
 * backward, (N,) each, or NULL) add the gradients of lse_n and H_n for those factors, H from ent_sum
 * (the forward's E, (N,); needed with ent_coef).
 * Returns 0, or 1 with *bad set to the first kept target outside [0, C). */
EXPORT int crossent_cross_entropy(int dtype, const void *x, int64_t rows, int64_t classes, const int64_t *target,
                                  const void *prob, int64_t ignore_index, const float *weight, float eps,
                                  const float *coef, int64_t coef_stride, float coef_scale, int mean_over_weight,
                                  int have_stats,
                                  float *loss, float *shift, float *sum_exp, float *mass, float *total_weight,
                                  void *grad, int threads, int64_t *bad, float softcap, float temperature,
                                  float z_loss, float *entropy, float *correct, const float *lse_coef,
                                  const float *ent_coef, const float *ent_sum) {
    double total = 0.0, count = (double)rows, weight_sum = (double)classes;
    if (target) {
        count = 0.0;
        for (int64_t n = 0; n < rows; n++) {
            int64_t y = target[n];
            if (y == ignore_index) continue;
            if (y < 0 || y >= classes) {
                *bad = y;
                return 1;
            }
            total += weight ? (double)weight[y] : 1.0;
            count += 1.0;
        }
    }
    if (weight) {
        weight_sum = 0.0;
        for (int64_t c = 0; c < classes; c++) weight_sum += weight[c];
    }
    if (total_weight) *total_weight = (float)total;
    const int transform = softcap != 0.0f || temperature != 1.0f;
    struct ce_args a = {
        .dtype = dtype, .x = x, .rows = rows, .classes = classes, .probability = prob != NULL, .target = target,
        .prob = prob, .ignore_index = ignore_index, .weight = weight, .eps = eps,
        .inv_classes = (float)(1.0 / (double)classes), .weight_sum = (float)weight_sum, .coef = coef,
        .coef_stride = coef_stride, .coef_scale = mean_over_weight ? (float)(coef_scale / total) : coef_scale,
        .have_stats = have_stats, .loss = loss, .shift = shift, .sum_exp = sum_exp, .mass = mass, .grad = grad,
        .transform = transform, .inv_cap = softcap != 0.0f ? 1.0f / softcap : 0.0f,
        .z_mul = softcap != 0.0f ? softcap / temperature : 1.0f / temperature, .inv_temp = 1.0f / temperature,
        .z_loss = have_stats || !grad ? 0.0f : z_loss,
        .z_coef_scale = mean_over_weight ? (float)(coef_scale / count) : coef_scale,
        .entropy = have_stats ? NULL : entropy, .correct = have_stats ? NULL : correct,
        .lse_coef = have_stats ? lse_coef : NULL, .ent_coef = have_stats && ent_sum ? ent_coef : NULL,
        .ent_sum = ent_sum};
    if (grad && !have_stats) advise_huge(grad, (size_t)(rows * classes) * dtype_size(dtype));
    parallel_for(rows, rows_grain(classes), threads, ce_range, &a);
    return a.failed ? -1 : 0;
}
