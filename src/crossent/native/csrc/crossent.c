/* The native kernels as one translation unit, compiled once per instruction-set level. */
#include "cross_entropy.c"
#include "elementwise.c"
#include "softmax.c"

/* zeros over `bytes` at p: huge pages where the kernel allows, both threads writing */
struct zero_args {
    char *p;
    int64_t bytes;
};

static void zero_range(void *ctx, int64_t begin, int64_t end) {
    const struct zero_args *z = (const struct zero_args *)ctx;
    const int64_t step = (int64_t)1 << 20;
    for (int64_t i = begin; i < end; i++) {
        int64_t at = i * step, len = z->bytes - at < step ? z->bytes - at : step;
        memset(z->p + at, 0, (size_t)len);
    }
}

EXPORT int crossent_zero(void *p, int64_t bytes, int threads) {
    struct zero_args z = {(char *)p, bytes};
    advise_huge(p, (size_t)bytes);
    parallel_for((bytes + ((int64_t)1 << 20) - 1) >> 20, GRAIN_ELEMENTS >> 18, threads, zero_range, &z);
    return 0;
}

/* which level this build was compiled for (checked by the loader) */
EXPORT const char *crossent_isa(void) { return CROSSENT_ISA; }

/* 3: AVX-512 (F, BW, DQ, VL), 2: AVX2 with FMA and F16C, 0: baseline x86-64; as the CPU and OS allow */
EXPORT int crossent_cpu_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
#endif
    return 0;
}

/* The vector math on arrays, for the tests that bound its error against float64. */
EXPORT void crossent_vector_math(int fn, const float *x, float *y, int64_t n) {
    if (fn == 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_exp(x[i]);
    } else if (fn == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_log(x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_log1p(x[i]);
    }
}
