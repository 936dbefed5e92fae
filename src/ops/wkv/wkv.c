/* The wkv recurrence of RWKV-4 on the CPU, forward and backward, compiled by cpu.py.

   k, v, y, gy, gk, gv, logd: (batch, L, D) contiguous; w, u: (D,); gw, gu: (batch, D), one row
   per batch (the caller sums them). A call does channels [d0, d1) of every batch, the time loop
   outside and the channel loop inside (contiguous in memory, vectorised: float32 uses
   ../_cpu/exp_float.h, float64 libm). A max and the two exponentials it scales,
   e^{x - max(x, y)} and e^{y - max(x, y)}, cost one exponential: one of them is 1. The running-max form of
   reference.py throughout: every exponential is of a number <= 0.

   Forward: the state (a, b, p) as in reference.py.
   Backward: with D_t the denominator of wkv_t (logd_t = log D_t, kept from the first pass) and
   gy = dLoss/dwkv, a first pass forward gives
       du = sum_t gy_t e^{u+k_t} (v_t - wkv_t) / D_t
       dw = sum_t gy_t (N'_t - wkv_t S'_t) / D_t,   S'_t = sum_{i<t} (t-1-i) e^{(t-1-i) w + k_i}
   (N'_t the same with v_i; both in the scale e^p of a and b: S'_{t+1} = e^w (S'_t + S_t));
   a second pass backward, with the reverse sums R_i = sum_{t>i} gy_t e^{(t-1-i) w} / D_t and
   Q_i (the same with gy_t wkv_t), each in its own running-max scale P, gives
       dv_i = gy_i e^{u+k_i} / D_i + e^{k_i} R_i
       dk_i = gy_i e^{u+k_i} (v_i - wkv_i) / D_i + e^{k_i} (v_i R_i - Q_i)
   where k_i + P <= 0 since D_t >= e^{(t-1-i) w + k_i}. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../_cpu/exp_float.h"

/* m = max(x, y), *ex = e^{x-m}, *ey = e^{y-m}, with one exponential (x = -inf gives 0, 1). */
#define PAIR(T, EXP, x, y, m, ex, ey)                                                              \
    do {                                                                                           \
        const T diff_ = (x) - (y), e_ = EXP(diff_ < 0 ? diff_ : -diff_);                           \
        m = diff_ >= 0 ? (x) : (y); ex = diff_ >= 0 ? 1 : e_; ey = diff_ >= 0 ? e_ : 1;            \
    } while (0)

#define DEFINE_WKV(NAME, T, EXP, LOG)                                                              \
void NAME##_forward(int64_t batch, int64_t L, int64_t D, int64_t d0, int64_t d1, const T *w,     \
                    const T *u, const T *k, const T *v, T *y) {                                   \
    const int64_t n = d1 - d0;                                                                     \
    T *a = malloc(3 * n * sizeof(T)), *b = a + n, *p = b + n;                                      \
    const T *wd = w + d0, *ud = u + d0;                                                            \
    for (int64_t bi = 0; bi < batch; bi++) {                                                       \
        for (int64_t d = 0; d < n; d++) { a[d] = 0; b[d] = 0; p[d] = -INFINITY; }                   \
        for (int64_t t = 0; t < L; t++) {                                                          \
            const int64_t row = (bi * L + t) * D + d0;                                             \
            const T *kt = k + row, *vt = v + row;                                                  \
            T *yt = y + row;                                                                       \
            _Pragma("omp simd")                                                                    \
            for (int64_t d = 0; d < n; d++) {                                                      \
                T q, e1, e2;                                                                       \
                PAIR(T, EXP, p[d], ud[d] + kt[d], q, e1, e2);                                      \
                yt[d] = (e1 * a[d] + e2 * vt[d]) / (e1 * b[d] + e2);                               \
                PAIR(T, EXP, p[d] + wd[d], kt[d], q, e1, e2);                                      \
                a[d] = e1 * a[d] + e2 * vt[d]; b[d] = e1 * b[d] + e2; p[d] = q;                    \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    free(a);                                                                                       \
}                                                                                                  \
                                                                                                   \
void NAME##_backward(int64_t batch, int64_t L, int64_t D, int64_t d0, int64_t d1, const T *w,    \
                     const T *u, const T *k, const T *v, const T *y, const T *gy, T *logd,        \
                     T *gw, T *gu, T *gk, T *gv) {                                                 \
    const int64_t n = d1 - d0;                                                                     \
    T *a = malloc(5 * n * sizeof(T)), *b = a + n, *p = b + n, *na = p + n, *nb = na + n;           \
    const T *wd = w + d0, *ud = u + d0;                                                            \
    for (int64_t bi = 0; bi < batch; bi++) {                                                       \
        T *gwb = gw + bi * D + d0, *gub = gu + bi * D + d0;                                        \
        for (int64_t d = 0; d < n; d++) {                                                          \
            a[d] = b[d] = na[d] = nb[d] = 0; p[d] = -INFINITY; gwb[d] = gub[d] = 0;                \
        }                                                                                          \
        for (int64_t t = 0; t < L; t++) { /* first pass: du, dw, log D_t */                        \
            const int64_t row = (bi * L + t) * D + d0;                                             \
            for (int64_t d = 0; d < n; d++) {                                                      \
                const T kk = k[row + d], vv = v[row + d], yy = y[row + d];                          \
                T q, e1, e2;                                                                       \
                PAIR(T, EXP, p[d], ud[d] + kk, q, e1, e2);                                         \
                const T den = e1 * b[d] + e2, g = gy[row + d] / den;                               \
                gub[d] += g * e2 * (vv - yy);                                                      \
                gwb[d] += g * e1 * (na[d] - yy * nb[d]);                                           \
                logd[row + d] = q + LOG(den);                                                      \
                PAIR(T, EXP, p[d] + wd[d], kk, q, e1, e2);                                         \
                na[d] = e1 * (na[d] + a[d]); nb[d] = e1 * (nb[d] + b[d]);                          \
                a[d] = e1 * a[d] + e2 * vv; b[d] = e1 * b[d] + e2; p[d] = q;                       \
            }                                                                                      \
        }                                                                                          \
        for (int64_t d = 0; d < n; d++) { a[d] = b[d] = 0; p[d] = -INFINITY; } /* R, Q, P */        \
        for (int64_t t = L - 1; t >= 0; t--) { /* second pass: dk, dv */                           \
            const int64_t row = (bi * L + t) * D + d0;                                             \
            _Pragma("omp simd")                                                                    \
            for (int64_t d = 0; d < n; d++) {                                                      \
                const T kk = k[row + d], vv = v[row + d], yy = y[row + d], gg = gy[row + d];        \
                const T ld = logd[row + d];                                                        \
                const T e = gg * EXP(ud[d] + kk - ld), E = EXP(kk + p[d]);                         \
                gv[row + d] = e + E * a[d];                                                        \
                gk[row + d] = e * (vv - yy) + E * (vv * a[d] - b[d]);                              \
                T q, f1, f2;                                                                       \
                PAIR(T, EXP, p[d] + wd[d], -ld, q, f1, f2);                                        \
                a[d] = f1 * a[d] + f2 * gg; b[d] = f1 * b[d] + f2 * gg * yy; p[d] = q;             \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    free(a);                                                                                       \
}

DEFINE_WKV(wkv_float32, float, exp_float, logf)
DEFINE_WKV(wkv_float64, double, exp, log)
