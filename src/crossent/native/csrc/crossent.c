/* The native kernels as one translation unit, compiled once per instruction-set level. */
#include "cross_entropy.c"
#include "elementwise.c"
#include "nll_loss.c"
#include "softmax.c"

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

/* The vector math and the half-precision conversions on arrays, for the tests that check them:
 * 0 exp, 1 log, 2 log1p, 3 float16 round trip, 4 bfloat16 round trip, 5 tanh. */
EXPORT void crossent_vector_math(int fn, const float *x, float *y, int64_t n) {
    if (fn == 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_exp(x[i]);
    } else if (fn == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_log(x[i]);
    } else if (fn == 2) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_log1p(x[i]);
    } else if (fn == 5) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fast_tanh(x[i]);
    } else if (fn == 3) { /* float32 -> float16 -> float32 */
        for (int64_t i = 0; i < n; i++) y[i] = from_f16(to_f16(x[i]));
    } else { /* float32 -> bfloat16 -> float32 */
        for (int64_t i = 0; i < n; i++) y[i] = from_bf16(to_bf16(x[i]));
    }
}
