/* NLL on log-probability rows (N, C): l_n = -m_n w_{y_n} z_{n, y_n}, m_n = [y_n != ignore_index].
 * The gradient has one nonzero per kept row, dl_n/dz_{n, y_n} = -m_n w_{y_n}: the rows are zeros
 * (in huge pages where the OS allows) but for that value. */
#include "common.h"

static inline float element(int dtype, const void *z, int64_t at) {
    if (dtype == BF16) return from_bf16(((const uint16_t *)z)[at]);
    if (dtype == F16) return from_f16(((const uint16_t *)z)[at]);
    return ((const float *)z)[at];
}

/* The loss of every row and the total target weight; 1 with *bad for a kept target outside [0, C). */
EXPORT int crossent_nll_loss(int dtype, const void *z, int64_t rows, int64_t classes, const int64_t *target,
                             int64_t ignore_index, const float *weight, float *loss, float *total_weight,
                             int64_t *bad) {
    double total = 0.0;
    for (int64_t n = 0; n < rows; n++) {
        const int64_t y = target[n];
        if (y == ignore_index) {
            loss[n] = 0.0f; /* exactly 0, whatever z holds there */
            continue;
        }
        if (y < 0 || y >= classes) {
            *bad = y;
            return 1;
        }
        const float w = weight ? weight[y] : 1.0f;
        loss[n] = -w * element(dtype, z, n * classes + y);
        total += w;
    }
    *total_weight = (float)total;
    return 0;
}

struct nll_grad_args {
    int dtype;
    void *out;
    int64_t classes;
    const int64_t *target;
    int64_t ignore_index;
    const float *weight;
    const float *coef; /* per row (stride 1) or one value (stride 0) */
    int64_t coef_stride;
};

static void nll_grad_range(void *ctx, int64_t begin, int64_t end) {
    const struct nll_grad_args *a = (const struct nll_grad_args *)ctx;
    const size_t size = dtype_size(a->dtype);
    memset((char *)a->out + (size_t)(begin * a->classes) * size, 0, (size_t)((end - begin) * a->classes) * size);
    for (int64_t n = begin; n < end; n++) {
        const int64_t y = a->target[n];
        if (y == a->ignore_index) continue;
        const float g = -a->coef[n * a->coef_stride] * (a->weight ? a->weight[y] : 1.0f);
        const int64_t at = n * a->classes + y;
        if (a->dtype == BF16) ((uint16_t *)a->out)[at] = to_bf16(g);
        else if (a->dtype == F16) ((uint16_t *)a->out)[at] = to_f16(g);
        else ((float *)a->out)[at] = g;
    }
}

/* d output / dz for coef_n = d output / d l_n (the targets were checked by the forward) */
EXPORT int crossent_nll_loss_grad(int dtype, void *out, int64_t rows, int64_t classes, const int64_t *target,
                                  int64_t ignore_index, const float *weight, const float *coef, int64_t coef_stride,
                                  int threads) {
    struct nll_grad_args a = {dtype, out, classes, target, ignore_index, weight, coef, coef_stride};
    advise_huge(out, (size_t)(rows * classes) * dtype_size(dtype));
    parallel_for(rows, rows_grain(classes), threads, nll_grad_range, &a);
    return 0;
}
