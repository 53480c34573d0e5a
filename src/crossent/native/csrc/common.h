/* Shared by every native kernel: element types, vector-friendly exp and log, and the row threads.
 *
 * The same source is compiled once per instruction-set level (see ../_build.py); the loops are
 * written so that GCC vectorizes them at each level's width. Every function here is branch-free on
 * element values, so a loop calling it becomes one vector loop.
 */
#ifndef CROSSENT_COMMON_H
#define CROSSENT_COMMON_H

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define EXPORT __attribute__((visibility("default")))

/* element types, numbered as in ../_library.py */
enum { F32 = 0, BF16 = 1, F16 = 2 };

static inline float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float from_bf16(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

/* round to nearest even, as torch's BFloat16; a NaN stays a (quiet) NaN */
static inline uint16_t to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return f != f ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)rounded;
}

/* float16 <-> float32 in integer arithmetic, so that the loops vectorize at every level (GCC
 * converts _Float16 one element at a time without AVX512-FP16). Exact one way, and round to
 * nearest even the other, as torch's Half; NaN stays NaN, infinities stay infinite. */
static inline float from_f16(uint16_t h) {
    uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    float normal = bits_to_float(em) * 5.192296858534828e+33f; /* 2^112 moves the exponent bias, subnormals too */
    float special = bits_to_float(em | 0x7f800000u);           /* inf and NaN */
    float magnitude = em >= (0x7c00u << 13) ? special : normal;
    return bits_to_float(float_to_bits(magnitude) | (uint32_t)(h & 0x8000u) << 16);
}

static inline uint16_t to_f16(float f) {
    uint32_t u = float_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    /* overflow to inf, NaN to a quiet NaN */
    uint32_t big = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    /* results below the smallest normal half: adding 0.5 (2^-1) rounds the value to the 2^-24 grid */
    float sub = bits_to_float(u) + 0.5f;
    uint32_t small = float_to_bits(sub) - 0x3f000000u;
    /* normal results: rebias the exponent and round the 13 dropped bits to nearest even */
    uint32_t normal = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;
    uint32_t h = u >= 0x47800000u ? big : u < 0x38800000u ? small : normal;
    return (uint16_t)(h | sign);
}

/* n elements of type `dtype` at `src` (+ offset) into float32 */
static inline void load_row(int dtype, const void *src, int64_t offset, float *dst, int64_t n) {
    if (dtype == BF16) {
        const uint16_t *s = (const uint16_t *)src + offset;
        for (int64_t i = 0; i < n; i++) dst[i] = from_bf16(s[i]);
    } else {
        const uint16_t *s = (const uint16_t *)src + offset;
        for (int64_t i = 0; i < n; i++) dst[i] = from_f16(s[i]);
    }
}

/* n float32 values into type `dtype` at `dst` (+ offset), rounding to nearest even */
static inline void store_row(int dtype, const float *src, void *dst, int64_t offset, int64_t n) {
    uint16_t *d = (uint16_t *)dst + offset;
    if (dtype == BF16) {
        for (int64_t i = 0; i < n; i++) d[i] = to_bf16(src[i]);
    } else {
        for (int64_t i = 0; i < n; i++) d[i] = to_f16(src[i]);
    }
}

static inline size_t dtype_size(int dtype) { return dtype == F32 ? 4 : 2; }

/* exp(x) within 2 ulp (tests check it against float64): Cody-Waite reduction x = n ln2 + r with
 * |r| <= ln2/2, a degree-7 Taylor polynomial for e^r (truncation below 0.05 ulp), and 2^n applied
 * as two factors so that results down to the smallest subnormal are formed without overflow.
 * -inf gives 0, +inf gives inf, NaN stays NaN (the clamps compare false for it). */
static inline float fast_exp(float x) {
    const float ln2_hi = 0.693145751953125f;  /* 16 significant bits: n * ln2_hi is exact */
    const float ln2_lo = 1.428606765330187e-06f;
    float c = x < -104.0f ? -104.0f : x;
    c = c > 89.0f ? 89.0f : c;
    float n = c * 1.44269504088896341f + 12582912.0f;  /* adding 1.5 * 2^23 rounds to an integer */
    n -= 12582912.0f;
    float r = c - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t half = ni >> 1;
    float s1 = bits_to_float((uint32_t)(half + 127) << 23);
    float s2 = bits_to_float((uint32_t)(ni - half + 127) << 23);
    return p * s1 * s2;
}

/* log(x) within 2 ulp: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f), and
 * log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with R the series of log((1+s)/(1-s)) past 2s.
 * log(0) = -inf, log(inf) = inf, negative or NaN input gives NaN. */
static inline float fast_log(float x) {
    const float ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.428606765330187e-06f;
    /* every select is between floats, so that each becomes one vector blend */
    float xs = x < FLT_MIN ? x * 8388608.0f : x; /* subnormals: scale by 2^23 first */
    uint32_t u = float_to_bits(xs);
    float fe = (float)((int32_t)((u >> 23) & 0xffu) - 127) - (x < FLT_MIN ? 23.0f : 0.0f);
    float m = bits_to_float((u & 0x7fffffu) | 0x3f800000u);
    fe += m > 1.41421356f ? 1.0f : 0.0f;
    m = m > 1.41421356f ? m * 0.5f : m;
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float R = 2.0f / 13.0f;
    R = R * z + 2.0f / 11.0f;
    R = R * z + 2.0f / 9.0f;
    R = R * z + 2.0f / 7.0f;
    R = R * z + 2.0f / 5.0f;
    R = R * z + 2.0f / 3.0f;
    R = R * z;
    float hfsq = 0.5f * f * f;
    float y = fe * ln2_hi - ((hfsq - (s * (hfsq + R) + fe * ln2_lo)) - f);
    y = x == INFINITY ? INFINITY : y;
    y = x == 0.0f ? -INFINITY : y;
    y = x < 0.0f ? NAN : y;
    return x != x ? x : y;
}

/* log(1 + u) for u >= -1 within 2 ulp, tiny u included: w = 1 + u rounded, then log(w) corrected
 * by the rounding error of w, (w - 1 - u) / w (for |u| below half an ulp of 1 that gives u itself). */
static inline float fast_log1p(float u) {
    float w = 1.0f + u;
    float rounding = ((w - 1.0f) - u) / w;
    rounding = w == 0.0f ? 0.0f : rounding;      /* log1p(-1) = -inf */
    rounding = w == INFINITY ? 0.0f : rounding;  /* log1p(inf) = inf */
    float y = fast_log(w) - rounding;
    return u == 0.0f ? u : y; /* log1p(-0) = -0 */
}

/* tanh(u) within 1.5 ulp (1.37 at most over every float32; tests check it against float64), from
 * a = |u| with the sign put back:
 *   a < 0.625:  a + a^3 P(a^2), P a degree-5 fit of (tanh(a) - a) / a^3 (error below 0.01 ulp);
 *               tiny a gives a itself (a^3 underflows), -0 stays -0
 *   a >= 0.625: 1 - 2 / (exp(2a) + 1), where tanh(a) > 0.55 and the subtracted part is below 0.45,
 *               so exp's error reaches the result halved (1 from a = 9.02 on, inf included)
 * Both are computed and one selected (branch-free); inf gives 1, NaN stays NaN. */
static inline float fast_tanh(float u) {
    uint32_t bits = float_to_bits(u);
    float a = bits_to_float(bits & 0x7fffffffu);
    float s = a * a;
    float p = 2.1429495e-03f;
    p = p * s - 8.177384e-03f;
    p = p * s + 2.1700697e-02f;
    p = p * s - 5.3946763e-02f;
    p = p * s + 1.3333206e-01f;
    p = p * s - 3.333333e-01f;
    float small = a + a * (s * p);
    float big = 1.0f - 2.0f / (fast_exp(2.0f * a) + 1.0f);
    float r = a < 0.625f ? small : big; /* NaN: big, which is NaN */
    return bits_to_float(float_to_bits(r) | (bits & 0x80000000u));
}

/* Read the row after this one into the cache while this one is computed (from cache): `part` of
 * `parts` of its `bytes`, so that the fetches spread over a pass instead of queueing at once. */
static inline void prefetch_part(const void *next, int64_t bytes, int64_t part, int64_t parts) {
    if (!next) return;
    const char *p = (const char *)next;
    for (int64_t at = bytes * part / parts; at < bytes * (part + 1) / parts; at += 64) __builtin_prefetch(p + at, 0, 2);
}

/* The loops that compute the most (one exp per element) run in blocks of PREFETCH_BLOCK elements
 * and fetch the next row in step. */
#define PREFETCH_BLOCK 1024

/* ---- one row's reductions ------------------------------------------------------------------ */

/* max_c x_c: -inf for a row of -inf (NaN elements are skipped; they make the sums below NaN) */
static inline float row_max(const float *x, int64_t c) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < c; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* S = sum exp(x - k), storing the exponentials in e when it is not NULL, and fetching `next_bytes`
 * of the next row (`next`) meanwhile. With ent, also E = sum exp(x - k) (x - k) into *ent, in the same
 * loop: x - k is raised to the lowest finite value there, so that a -inf element adds 0 (not
 * 0 * -inf); every term is <= 0. */
static inline float row_sum_exp(const float *x, int64_t c, float k, float *e, float *ent, const void *next,
                                int64_t next_bytes) {
    const int64_t parts = (c + PREFETCH_BLOCK - 1) / PREFETCH_BLOCK;
    float s = 0.0f, h = 0.0f;
    for (int64_t b = 0; b < parts; b++) {
        const int64_t lo = b * PREFETCH_BLOCK, hi = lo + PREFETCH_BLOCK < c ? lo + PREFETCH_BLOCK : c;
        prefetch_part(next, next_bytes, b, parts);
        float part = 0.0f, hpart = 0.0f;
        if (ent && e) {
#pragma omp simd reduction(+ : part, hpart)
            for (int64_t i = lo; i < hi; i++) {
                float d = x[i] - k;
                float v = fast_exp(d);
                d = d < -FLT_MAX ? -FLT_MAX : d;
                e[i] = v;
                part += v;
                hpart += v * d;
            }
        } else if (ent) {
#pragma omp simd reduction(+ : part, hpart)
            for (int64_t i = lo; i < hi; i++) {
                float d = x[i] - k;
                float v = fast_exp(d);
                d = d < -FLT_MAX ? -FLT_MAX : d;
                part += v;
                hpart += v * d;
            }
        } else if (e) {
#pragma omp simd reduction(+ : part)
            for (int64_t i = lo; i < hi; i++) {
                float v = fast_exp(x[i] - k);
                e[i] = v;
                part += v;
            }
        } else {
#pragma omp simd reduction(+ : part)
            for (int64_t i = lo; i < hi; i++) part += fast_exp(x[i] - k);
        }
        s += part;
        h += hpart;
    }
    if (ent) *ent = h;
    return s;
}

/* ---- rows over threads ------------------------------------------------------------------------
 * parallel_for splits [0, n) into at most `threads` contiguous ranges of at least `grain` items and
 * runs fn on each, the first on the calling thread. Every result depends only on its own items, so
 * it is the same for any thread count. */
typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);

struct range_task {
    range_fn fn;
    void *ctx;
    int64_t begin, end;
};

static void *run_range(void *arg) {
    struct range_task *t = (struct range_task *)arg;
    t->fn(t->ctx, t->begin, t->end);
    return NULL;
}

#define MAX_THREADS 256

static void parallel_for(int64_t n, int64_t grain, int threads, range_fn fn, void *ctx) {
    if (n <= 0) return;
    int64_t parts = grain > 0 ? (n + grain - 1) / grain : n;
    if (parts > threads) parts = threads;
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1) {
        fn(ctx, 0, n);
        return;
    }
    struct range_task tasks[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t p = 0; p < parts; p++) {
        tasks[p].fn = fn;
        tasks[p].ctx = ctx;
        tasks[p].begin = n * p / parts;
        tasks[p].end = n * (p + 1) / parts;
    }
    for (int64_t p = 1; p < parts; p++) started[p] = pthread_create(&ids[p], NULL, run_range, &tasks[p]) == 0;
    run_range(&tasks[0]);
    for (int64_t p = 1; p < parts; p++) {
        if (started[p]) pthread_join(ids[p], NULL);
        else run_range(&tasks[p]); /* no thread to be had: run it here */
    }
}

/* Work per thread worth a thread's start (about 10 microseconds): elements of the slowest loops. */
#define GRAIN_ELEMENTS (1 << 16)

static inline int64_t rows_grain(int64_t columns) {
    int64_t g = GRAIN_ELEMENTS / (columns > 0 ? columns : 1);
    return g > 0 ? g : 1;
}

/* A fresh output buffer of many pages is faulted in 2 MiB pages rather than 4 KiB ones where the
 * kernel allows it (transparent huge pages in "madvise" mode): a fault per page is most of the cost
 * of a first write. Advice only; the contents are not touched. */
static inline void advise_huge(void *p, size_t bytes) {
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (bytes < 8 * huge) return;
    uintptr_t begin = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)p + bytes) & ~(huge - 1);
#ifdef MADV_HUGEPAGE
    if (end > begin) madvise((void *)begin, end - begin, MADV_HUGEPAGE);
#endif
}

#endif
