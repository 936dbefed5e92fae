/* Diagonal linear scan on the CPU, one sequential pass over the data, compiled by cpu.py.

   Forward, along each row of L steps (t runs backwards when `reverse`):
       h_t = a_t h_{t-1} + b_t,        h_{-1} = h0 (or 0)
   Backward, against the scan, with g_t = dLoss/dh_t + conj(a_{t+1}) g_{t+1}:
       dLoss/db_t = g_t,   dLoss/da_t = g_t conj(h_{t-1}),   dLoss/dh0 = conj(a_0) g_0

   Every array is (batch, R rows, L steps) in one of two layouts, element (n, r, t) at
       time-last   n R L + r L + t      (rows of contiguous steps: (batch, R, L) contiguous)
       time-major  n R L + t R + r      (steps of contiguous rows: (batch, L, R) contiguous)
   and is read and written once in its own layout: no transposes, no temporaries, a pass at
   memory speed. One row is a chain of dependent multiply-adds, so rows advance in groups whose
   chains overlap: 2 rows time-last (more rows 16 KB apart alias in the L1 cache), 64
   contiguous rows time-major (one vector instruction covers several). A call does rows
   [r0, r1) of every batch: threads take disjoint row ranges. */

#include <complex.h>
#include <stdint.h>

#define MAX_GROUP 64

#define real_conj(x) (x)

#define DEFINE_SCAN(NAME, T, CONJ)                                                                \
    /* n rows from the pointers on, row stride sr, time stride st (negative in reverse) */        \
    static inline void NAME##_forward_group(int64_t n, int64_t L, int64_t sr, int64_t st,         \
                                            const T *a, const T *b, const T *h0, T *h) {          \
        T s[MAX_GROUP];                                                                           \
        for (int64_t j = 0; j < n; j++) s[j] = h0 ? h0[j] : 0;                                    \
        for (int64_t k = 0; k < L; k++)                                                           \
            for (int64_t j = 0; j < n; j++) {                                                     \
                const int64_t i = j * sr + k * st;                                                \
                s[j] = a[i] * s[j] + b[i];                                                        \
                h[i] = s[j];                                                                      \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static inline void NAME##_backward_group(int64_t n, int64_t L, int64_t sr, int64_t st,        \
                                             const T *a, const T *h, const T *h0, const T *gh,    \
                                             T *ga, T *gb, T *gh0) {                              \
        T g[MAX_GROUP], a_next[MAX_GROUP]; /* a_next: conj(a_{t+1}), 0 after the end */           \
        for (int64_t j = 0; j < n; j++) g[j] = a_next[j] = 0;                                     \
        for (int64_t k = L - 1; k >= 0; k--)                                                      \
            for (int64_t j = 0; j < n; j++) {                                                     \
                const int64_t i = j * sr + k * st;                                                \
                g[j] = gh[i] + a_next[j] * g[j];                                                  \
                gb[i] = g[j];                                                                     \
                if (ga) ga[i] = g[j] * CONJ(k > 0 ? h[i - st] : (h0 ? h0[j] : 0));                \
                a_next[j] = CONJ(a[i]);                                                           \
            }                                                                                     \
        if (gh0)                                                                                  \
            for (int64_t j = 0; j < n; j++) gh0[j] = a_next[j] * g[j];                            \
    }                                                                                             \
                                                                                                  \
    /* a, b, h: (batch, R, L) in `time_major` or time-last layout; h0: (batch, R) or NULL */      \
    void NAME##_forward(int64_t batch, int64_t R, int64_t L, int64_t r0, int64_t r1,              \
                        int time_major, const T *a, const T *b, const T *h0, T *h, int reverse) { \
        const int64_t sr = time_major ? 1 : L, st = (time_major ? R : 1) * (reverse ? -1 : 1);    \
        const int64_t group = time_major ? MAX_GROUP : 2;                                         \
        for (int64_t n = 0; n < batch; n++)                                                       \
            for (int64_t r = r0; r < r1; r += group) {                                            \
                const int64_t o = n * R * L + r * sr + (reverse ? (L - 1) * -st : 0);             \
                const T *h0r = h0 ? h0 + n * R + r : 0;                                           \
                if (r1 - r < group) /* the last, partial group */                                 \
                    NAME##_forward_group(r1 - r, L, sr, st, a + o, b + o, h0r, h + o);            \
                else if (time_major)                                                              \
                    NAME##_forward_group(MAX_GROUP, L, 1, st, a + o, b + o, h0r, h + o);          \
                else                                                                              \
                    NAME##_forward_group(2, L, L, st, a + o, b + o, h0r, h + o);                  \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    /* a, h, grad_h, grad_b, grad_a (or NULL): as in _forward; h0, grad_h0: (batch, R) or NULL */ \
    void NAME##_backward(int64_t batch, int64_t R, int64_t L, int64_t r0, int64_t r1,             \
                         int time_major, const T *a, const T *h, const T *h0, const T *grad_h,    \
                         T *grad_a, T *grad_b, T *grad_h0, int reverse) {                         \
        const int64_t sr = time_major ? 1 : L, st = (time_major ? R : 1) * (reverse ? -1 : 1);    \
        const int64_t group = time_major ? MAX_GROUP : 2;                                         \
        for (int64_t n = 0; n < batch; n++)                                                       \
            for (int64_t r = r0; r < r1; r += group) {                                            \
                const int64_t o = n * R * L + r * sr + (reverse ? (L - 1) * -st : 0);             \
                const int64_t s = n * R + r;                                                      \
                NAME##_backward_group(r1 - r < group ? r1 - r : group, L, sr, st, a + o, h + o,   \
                                      h0 ? h0 + s : 0, grad_h + o, grad_a ? grad_a + o : 0,       \
                                      grad_b + o, grad_h0 ? grad_h0 + s : 0);                     \
            }                                                                                     \
    }

DEFINE_SCAN(scan_float32, float, real_conj)
DEFINE_SCAN(scan_float64, double, real_conj)
DEFINE_SCAN(scan_complex64, float complex, conjf)
DEFINE_SCAN(scan_complex128, double complex, conj)
