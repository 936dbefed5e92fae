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
   chains overlap: 64, 128 or 256 contiguous rows time-major (one vector instruction covers
   several; 256 rows were 1.3-2x 64 at (B, L, D) = (8, 512, 128), (4, 2048, 256)), 2 rows
   time-last (more rows 16 KB apart alias in the L1 cache). A real time-last row is instead
   scanned a vector of W steps at a time where GCC's vector extensions are there (rows_scan):
   within the vector, log2 W steps of Hillis-Steele doubling on the pairs (A, B) of the affine
   maps h -> A h + B,
       (A_t, B_t) <- (A_t A_{t-d}, A_t B_{t-d} + B_t)    for d = 1, 2, 4, ..., W/2
   (lanes t < d keep theirs), leave B_t the scan from a zero state and A_t the product of the
   gates since the vector's start; then h = A h_in + B and the carry h_in is the last lane. The
   chain from vector to vector is one multiply-add per W steps, not per step (1.7-1.8x the
   2-row loop at L 512-2048, float32). A call does rows [r0, r1) of every batch: threads take
   disjoint row ranges. */

#include <complex.h>
#include <stdint.h>

#define GROUP 64      /* time-major rows a group has (cpu.py splits rows at its multiples) ... */
#define MAX_GROUP 256 /* ... or 2 or 4 times that in the forward, where that many are left */

#define real_conj(x) (x)

#if defined(__GNUC__) && !defined(__clang__) /* __builtin_shuffle with masks made at run time */
#ifdef __AVX512F__
#define VECTOR_BYTES 64
#else
#define VECTOR_BYTES 32
#endif
#define DEFINE_ROW_SCAN(NAME, T, I)                                                               \
    typedef T NAME##_vec __attribute__((vector_size(VECTOR_BYTES)));                              \
    typedef I NAME##_idx __attribute__((vector_size(VECTOR_BYTES)));                              \
    enum { NAME##_W = VECTOR_BYTES / sizeof(T) };                                                 \
                                                                                                  \
    /* `rows` contiguous rows of L steps, each from its h0 (or 0), backwards when `reverse`. */   \
    static void NAME##_rows_scan(int64_t rows, int64_t L, int reverse, const T *a, const T *b,    \
                                 const T *h0, T *h) {                                             \
        enum { W = NAME##_W };                                                                    \
        NAME##_idx shift[8]; /* lane t takes lane t - d (t + d in reverse), or the fill's lane */ \
        int levels = 0;                                                                           \
        for (int d = 1; d < W; d *= 2, levels++)                                                  \
            for (int t = 0; t < W; t++) {                                                         \
                const int from = reverse ? t + d : t - d;                                         \
                shift[levels][t] = from >= 0 && from < W ? from : W + t;                          \
            }                                                                                     \
        const NAME##_vec zero = {0}, one = zero + 1;                                              \
        const int64_t blocks = L / W, rest = L - blocks * W, last = reverse ? 0 : W - 1;          \
        for (int64_t r = 0; r < rows; r++, a += L, b += L, h += L) {                              \
            T s = h0 ? h0[r] : 0;                                                                 \
            for (int64_t v = 0; v < blocks; v++) { /* reverse: the last W steps first */          \
                const int64_t k = reverse ? L - (v + 1) * W : v * W;                              \
                NAME##_vec A, B;                                                                  \
                __builtin_memcpy(&A, a + k, sizeof A);                                            \
                __builtin_memcpy(&B, b + k, sizeof B);                                            \
                for (int l = 0; l < levels; l++) {                                                \
                    B = A * __builtin_shuffle(B, zero, shift[l]) + B;                             \
                    A = A * __builtin_shuffle(A, one, shift[l]);                                  \
                }                                                                                 \
                B = A * s + B;                                                                    \
                __builtin_memcpy(h + k, &B, sizeof B);                                            \
                s = B[last];                                                                      \
            }                                                                                     \
            for (int64_t j = 0; j < rest; j++) { /* the steps no whole vector covers */           \
                const int64_t i = reverse ? rest - 1 - j : blocks * W + j;                        \
                s = a[i] * s + b[i];                                                              \
                h[i] = s;                                                                         \
            }                                                                                     \
        }                                                                                         \
    }
DEFINE_ROW_SCAN(scan_float32, float, int32_t)
DEFINE_ROW_SCAN(scan_float64, double, int64_t)
/* in _forward: real time-last rows of at least a vector of steps are scanned a vector at a time */
#define ROWS_BY_VECTOR(NAME)                                                                      \
    if (!time_major && L >= NAME##_W) {                                                           \
        for (int64_t n = 0; n < batch; n++) {                                                     \
            const int64_t o = (n * R + r0) * L;                                                   \
            NAME##_rows_scan(r1 - r0, L, reverse, a + o, b + o, h0 ? h0 + n * R + r0 : 0, h + o); \
        }                                                                                         \
        return;                                                                                   \
    }
#else
#define ROWS_BY_VECTOR(NAME)
#endif
#define ROWS_BY_GROUP(NAME) /* complex types: every row through the groups below */

#define DEFINE_SCAN(NAME, T, CONJ, ROWS)                                                          \
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
        ROWS(NAME)                                                                                \
        const int64_t sr = time_major ? 1 : L, st = (time_major ? R : 1) * (reverse ? -1 : 1);    \
        for (int64_t n = 0; n < batch; n++)                                                       \
            for (int64_t r = r0, step; r < r1; r += step) {                                       \
                const int64_t o = n * R * L + r * sr + (reverse ? (L - 1) * -st : 0);             \
                const int64_t left = r1 - r;                                                      \
                const int64_t wide = left >= 4 * GROUP ? 4 : left >= 2 * GROUP ? 2 : 1;           \
                const T *h0r = h0 ? h0 + n * R + r : 0;                                           \
                step = time_major ? wide * GROUP : 2;                                             \
                if (left < step) /* the last, partial group */                                    \
                    NAME##_forward_group(left, L, sr, st, a + o, b + o, h0r, h + o);              \
                else if (!time_major)                                                             \
                    NAME##_forward_group(2, L, L, st, a + o, b + o, h0r, h + o);                  \
                else if (step == 4 * GROUP) /* a constant group: the compiler unrolls it */       \
                    NAME##_forward_group(4 * GROUP, L, 1, st, a + o, b + o, h0r, h + o);          \
                else if (step == 2 * GROUP)                                                       \
                    NAME##_forward_group(2 * GROUP, L, 1, st, a + o, b + o, h0r, h + o);          \
                else                                                                              \
                    NAME##_forward_group(GROUP, L, 1, st, a + o, b + o, h0r, h + o);              \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    /* a, h, grad_h, grad_b, grad_a (or NULL): as in _forward; h0, grad_h0: (batch, R) or NULL */ \
    void NAME##_backward(int64_t batch, int64_t R, int64_t L, int64_t r0, int64_t r1,             \
                         int time_major, const T *a, const T *h, const T *h0, const T *grad_h,    \
                         T *grad_a, T *grad_b, T *grad_h0, int reverse) {                         \
        const int64_t sr = time_major ? 1 : L, st = (time_major ? R : 1) * (reverse ? -1 : 1);    \
        const int64_t group = time_major ? GROUP : 2;                                             \
        for (int64_t n = 0; n < batch; n++)                                                       \
            for (int64_t r = r0; r < r1; r += group) {                                            \
                const int64_t o = n * R * L + r * sr + (reverse ? (L - 1) * -st : 0);             \
                const int64_t s = n * R + r;                                                      \
                NAME##_backward_group(r1 - r < group ? r1 - r : group, L, sr, st, a + o, h + o,   \
                                      h0 ? h0 + s : 0, grad_h + o, grad_a ? grad_a + o : 0,       \
                                      grad_b + o, grad_h0 ? grad_h0 + s : 0);                     \
            }                                                                                     \
    }

DEFINE_SCAN(scan_float32, float, real_conj, ROWS_BY_VECTOR)
DEFINE_SCAN(scan_float64, double, real_conj, ROWS_BY_VECTOR)
DEFINE_SCAN(scan_complex64, float complex, conjf, ROWS_BY_GROUP)
DEFINE_SCAN(scan_complex128, double complex, conj, ROWS_BY_GROUP)
