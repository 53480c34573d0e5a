/* Element-wise losses and their gradients, in float32 over chunks of CHUNK elements:
 *
 *   BCE:               l = -w [y max(log x, -100) + (1 - y) max(log(1 - x), -100)]
 *                      dl/dx = w (x - y) / max(x (1 - x), 1e-12)     dl/dy = w (log(1 - x) - log x)
 *   BCE with logits:   l = w [(1 - y) x - (1 + (pw - 1) y) log_sigmoid(x)]
 *                      dl/dx = w [(1 + (pw - 1) y) sigmoid(x) - pw y]
 *                      dl/dy = w [log_sigmoid(-x) - pw log_sigmoid(x)]  (w (-x) without pw)
 *   KL:                l = t log t - t x  (0 where t = 0)        dl/dx = -t    dl/dt = log t + t / t - x
 *   KL, log target:    l = exp(t) (t - x)                       dl/dx = -exp(t)   dl/dt = exp(t) (t - x + 1)
 *
 * w and pw repeat with a period (the trailing dims they broadcast over). A sum is formed per chunk
 * and the chunk sums are added in chunk order in float64: the same total for any thread count.
 */
#include "common.h"

#define CHUNK 4096

enum { BCE = 0, BCE_WITH_LOGITS = 1, KL_DIV = 2 };

struct ew_args {
    int op, dtype, log_target;
    int64_t numel;
    const void *x, *y;
    const float *w, *pw; /* NULL, or repeating with these periods */
    int64_t w_period, pw_period;
    const void *g; /* the upstream gradient per element (in dtype), or NULL: g_scalar */
    float g_scalar;
    void *out;        /* 'none': the loss per element */
    double *partials; /* else: per chunk sums */
    char *flags;      /* BCE: per chunk, 1 when an input is outside [0, 1], 2 when a target is */
    void *gx, *gy;    /* a backward: the wanted gradients */
    int failed; /* set when a thread cannot allocate its scratch memory */
};

/* the chunk's part of a tensor that repeats every `period` elements (contiguous runs, copied) */
static void fill_periodic(const float *src, int64_t period, int64_t start, int64_t len, float *dst) {
    int64_t j = start % period, o = 0;
    while (o < len) {
        int64_t run = period - j < len - o ? period - j : len - o;
        memcpy(dst + o, src + j, (size_t)run * sizeof(float));
        o += run;
        j = 0;
    }
}

static inline float log_sigmoid_of(float x, float u) { return (x < 0.0f ? x : 0.0f) - fast_log1p(u); }

/* Every operand is a full chunk here: a missing weight is ones, a scalar upstream gradient is
 * repeated, an unwanted gradient goes to a scratch chunk; so each loop is one vector loop. */
static void loss_chunk(const struct ew_args *a, int64_t len, const float *x, const float *y, const float *w,
                       const float *pw, float *l) {
    if (a->op == BCE) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) {
            float lx = fast_log(x[i]), l1 = fast_log1p(-x[i]);
            lx = lx > -100.0f ? lx : -100.0f;
            l1 = l1 > -100.0f ? l1 : -100.0f;
            l[i] = -(y[i] * lx + (1.0f - y[i]) * l1) * w[i];
        }
    } else if (a->op == BCE_WITH_LOGITS && pw) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) {
            float ls = log_sigmoid_of(x[i], fast_exp(-fabsf(x[i]))) * ((pw[i] - 1.0f) * y[i] + 1.0f);
            l[i] = ((1.0f - y[i]) * x[i] - ls) * w[i];
        }
    } else if (a->op == BCE_WITH_LOGITS) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++)
            l[i] = ((1.0f - y[i]) * x[i] - log_sigmoid_of(x[i], fast_exp(-fabsf(x[i])))) * w[i];
    } else if (a->log_target) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) l[i] = fast_exp(y[i]) * (y[i] - x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) l[i] = (y[i] == 0.0f ? 0.0f : y[i] * fast_log(y[i])) - y[i] * x[i];
    }
}

/* Each wanted gradient has its own loop, so an unwanted one costs nothing. */
static void grad_chunk(const struct ew_args *a, int64_t len, const float *x, const float *y, const float *w,
                       const float *pw, const float *g, float *gx, float *gy) {
    const float eps = 9.999999960041972e-13f; /* torch's 1e-12 as a float32 */
    if (a->op == BCE) {
        if (gx) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) {
                float d = x[i] * (1.0f - x[i]);
                gx[i] = g[i] * w[i] * (x[i] - y[i]) / (d > eps ? d : eps);
            }
        }
        if (gy) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gy[i] = g[i] * w[i] * (fast_log1p(-x[i]) - fast_log(x[i]));
        }
    } else if (a->op == BCE_WITH_LOGITS) {
        if (gx) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) {
                float u = fast_exp(-fabsf(x[i]));
                float sig = (x[i] >= 0.0f ? 1.0f : u) / (1.0f + u);
                gx[i] = g[i] * w[i] * (((pw[i] - 1.0f) * y[i] + 1.0f) * sig - pw[i] * y[i]);
            }
        }
        if (gy && a->pw) {
            /* log_sigmoid(-x) - pw log_sigmoid(x): finite terms of one sign where x is infinite */
#pragma omp simd
            for (int64_t i = 0; i < len; i++) {
                float u = fast_exp(-fabsf(x[i])), l = fast_log1p(u);
                float ls = (x[i] < 0.0f ? x[i] : 0.0f) - l, ls_neg = (x[i] > 0.0f ? -x[i] : 0.0f) - l;
                gy[i] = g[i] * w[i] * (ls_neg - pw[i] * ls);
            }
        } else if (gy) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gy[i] = -g[i] * w[i] * x[i];
        }
    } else if (a->log_target) {
        if (gx) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gx[i] = -g[i] * fast_exp(y[i]);
        }
        if (gy) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gy[i] = g[i] * fast_exp(y[i]) * (y[i] - x[i] + 1.0f);
        }
    } else {
        if (gx) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gx[i] = -g[i] * y[i];
        }
        if (gy) {
#pragma omp simd
            for (int64_t i = 0; i < len; i++) gy[i] = g[i] * (fast_log(y[i]) + y[i] / y[i] - x[i]);
        }
    }
}

/* BCE's inputs and targets must lie in [0, 1] (NaN fails): 1 where the chunk has one that does not */
static int outside_unit(const float *v, int64_t len) {
    int bad = 0;
#pragma omp simd reduction(| : bad)
    for (int64_t i = 0; i < len; i++) bad |= !(v[i] >= 0.0f && v[i] <= 1.0f);
    return bad;
}

static void ew_range(void *ctx, int64_t begin, int64_t end) {
    struct ew_args *a = (struct ew_args *)ctx;
    const int half = a->dtype != F32;
    float *buf = (float *)malloc(9 * CHUNK * sizeof(float));
    if (!buf) {
        a->failed = 1;
        return;
    }
    float *xb = buf, *yb = buf + CHUNK, *wb = buf + 2 * CHUNK, *pwb = buf + 3 * CHUNK, *gb = buf + 4 * CHUNK;
    float *o1 = buf + 5 * CHUNK, *o2 = buf + 6 * CHUNK, *ones = buf + 7 * CHUNK, *scalar = buf + 8 * CHUNK;
    for (int64_t i = 0; i < CHUNK; i++) ones[i] = 1.0f, scalar[i] = a->g_scalar;
    const int backward = a->gx || a->gy;
    for (int64_t chunk = begin; chunk < end; chunk++) {
        const int64_t at = chunk * CHUNK;
        const int64_t len = a->numel - at < CHUNK ? a->numel - at : CHUNK;
        const float *x = (const float *)a->x + at, *y = (const float *)a->y + at;
        if (half) {
            load_row(a->dtype, a->x, at, xb, len);
            load_row(a->dtype, a->y, at, yb, len);
            x = xb;
            y = yb;
        }
        const float *w = ones, *pw = a->op == BCE_WITH_LOGITS && backward ? ones : NULL;
        if (a->w && a->w_period == a->numel) w = a->w + at;
        else if (a->w) fill_periodic(a->w, a->w_period, at, len, wb), w = wb;
        if (a->pw && a->pw_period == a->numel) pw = a->pw + at;
        else if (a->pw) fill_periodic(a->pw, a->pw_period, at, len, pwb), pw = pwb;
        if (backward) {
            const float *g = scalar;
            if (a->g && half) load_row(a->dtype, a->g, at, gb, len), g = gb;
            else if (a->g) g = (const float *)a->g + at;
            float *gx = a->gx ? (half ? o1 : (float *)a->gx + at) : NULL;
            float *gy = a->gy ? (half ? o2 : (float *)a->gy + at) : NULL;
            grad_chunk(a, len, x, y, w, pw, g, gx, gy);
            if (half && gx) store_row(a->dtype, gx, a->gx, at, len);
            if (half && gy) store_row(a->dtype, gy, a->gy, at, len);
            continue;
        }
        if (a->op == BCE) a->flags[chunk] = (char)(outside_unit(x, len) | outside_unit(y, len) << 1);
        float *l = a->out && !half ? (float *)a->out + at : o1;
        loss_chunk(a, len, x, y, w, pw, l);
        if (a->out) {
            if (half) store_row(a->dtype, l, a->out, at, len);
        } else {
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < len; i++) s += l[i];
            a->partials[chunk] = s;
        }
    }
    free(buf);
}

/* op: BCE, BCE_WITH_LOGITS or KL_DIV. Forward (gx, gy NULL): the loss per element into `out`, or
 * (out NULL) its sum into *total. Backward: the gradients into gx and/or gy. Returns 0; -1 when
 * memory runs out; for a BCE forward, 2 when an input lies outside [0, 1] and 3 when a target does. */
EXPORT int crossent_elementwise(int op, int dtype, int64_t numel, const void *x, const void *y, const float *w,
                                int64_t w_period, const float *pw, int64_t pw_period, int log_target, const void *g,
                                float g_scalar, void *out, float *total, void *gx, void *gy, int threads) {
    if (numel <= 0) { /* nothing to read or write: an empty sum is 0 */
        if (!out && !gx && !gy && total) *total = 0.0f;
        return 0;
    }
    const int64_t chunks = (numel + CHUNK - 1) / CHUNK;
    struct ew_args a = {op, dtype, log_target, numel, x, y, w, pw, w_period, pw_period, g, g_scalar, out, NULL, NULL,
                        gx, gy, 0};
    const int reduce = !out && !gx && !gy, check = op == BCE && !gx && !gy;
    if (reduce && !(a.partials = (double *)calloc((size_t)(chunks + 1), sizeof(double)))) return -1;
    if (check && !(a.flags = (char *)calloc((size_t)(chunks + 1), 1))) {
        free(a.partials);
        return -1;
    }
    if (out) advise_huge(out, (size_t)numel * dtype_size(dtype));
    if (gx) advise_huge(gx, (size_t)numel * dtype_size(dtype));
    if (gy) advise_huge(gy, (size_t)numel * dtype_size(dtype));
    parallel_for(chunks, GRAIN_ELEMENTS / CHUNK, threads, ew_range, &a);
    if (reduce) {
        double s = 0.0;
        for (int64_t c = 0; c < chunks; c++) s += a.partials[c];
        *total = (float)s;
        free(a.partials);
    }
    int status = a.failed ? -1 : 0;
    if (check && !a.failed) {
        char any = 0;
        for (int64_t c = 0; c < chunks; c++) any |= a.flags[c];
        status = any & 1 ? 2 : any & 2 ? 3 : 0;
        free(a.flags);
    }
    return status;
}
