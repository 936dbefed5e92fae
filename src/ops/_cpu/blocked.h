/* Products and transposes of small matrices in L1 for the C loops, on 64-byte vectors (16 floats,
   8 doubles): gemm, C (M, N) = add C + alpha A B, by 4-row by 4-vector blocks of C held in
   registers through the sum (A's elements broadcast, so a transposed A is only its strides), and
   transpose, by (LANES_N, LANES_N) tiles in registers; rows scaled; and prefetch. Included once
   per dtype with T, IT (the integer of T's width), LANES_N (64 / sizeof(T)) and NAME set (so its
   functions have no include guard; its macros have one). ttt_linear.c, ttt_mlp.c, titans.c,
   log_linear.c and mesa_net.c include it. */

#ifndef BLOCKED_H_MACROS
#define BLOCKED_H_MACROS
/* keeps a loaded vector in a register: gcc otherwise folds the load into each multiply-add that
   reads it (4 loads of each row of B a step of the 4-by-4 block instead of 1, which kept the
   block well short of the FMA peak that it reaches pinned, on a (16, 64) x (64, 64) product in L1) */
#if defined(__x86_64__) || defined(__i386__)
#define PIN(x) __asm__("" : "+v"(x))
#else
#define PIN(x) (void)0
#endif

#define LO(e, w) ((e) & (w) ? LANES_N + (e) - (w) : (e)) /* the shuffles' masks of tile() */
#define HI(e, w) ((e) & (w) ? LANES_N + (e) : (e) + (w))
#define MASK8(F, w, o) \
    F(o, w), F(o + 1, w), F(o + 2, w), F(o + 3, w), F(o + 4, w), F(o + 5, w), F(o + 6, w), F(o + 7, w)
#endif

#if LANES_N == 16
#define MASK(F, w) MASK8(F, w, 0), MASK8(F, w, 8)
#else
#define MASK(F, w) MASK8(F, w, 0)
#endif
/* the shuffle of tile(): clang's and gcc >= 12's builtin takes the mask's elements, older gcc's a mask vector */
#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE(a, b, F, w) __builtin_shufflevector(a, b, MASK(F, w))
#else
#define SHUFFLE(a, b, F, w) __builtin_shuffle(a, b, (NAME(ivec)){MASK(F, w)})
#endif

#include "vec.h"

/* C (R, U vectors) = add C + alpha A B over Kd: R U accumulators in registers (R, U constants
   where inlined) */
static inline __attribute__((always_inline)) void NAME(block)(int64_t R, int64_t U, int64_t Kd, T alpha,
                                                             const T *A, int64_t ar, int64_t ac, const T *Bm,
                                                             int64_t ldb, T *C, int64_t ldc, int64_t add) {
    const NAME(vec) zero = {0};
    NAME(vec) acc[4][4];
    for (int64_t r = 0; r < R; r++)
        for (int64_t u = 0; u < U; u++) acc[r][u] = zero;
    for (int64_t x = 0; x < Kd; x++) {
        NAME(vec) row[4];
        for (int64_t u = 0; u < U; u++) {
            row[u] = NAME(load)(Bm + x * ldb + u * LANES_N);
            if (U > 1) PIN(row[u]);  /* with one vector a row (one load a step either way) folded was faster */
        }
        for (int64_t r = 0; r < R; r++) {
            const T a = A[r * ar + x * ac];
            for (int64_t u = 0; u < U; u++) acc[r][u] += a * row[u];
        }
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t u = 0; u < U; u++) {
            NAME(vec) c = alpha * acc[r][u];
            if (add) c += NAME(load)(C + r * ldc + u * LANES_N);
            memcpy(C + r * ldc + u * LANES_N, &c, sizeof c);
        }
}

/* C (M, N) = add C + alpha A B (add 0 or 1): A's element (i, x) at A[i ar + x ac], B (Kd, N)
   rows ldb apart, C rows ldc apart */
static void NAME(gemm)(int64_t M, int64_t N, int64_t Kd, T alpha, const T *A, int64_t ar, int64_t ac,
                       const T *Bm, int64_t ldb, T *C, int64_t ldc, int64_t add) {
#define BLOCK(R, U) NAME(block)(R, U, Kd, alpha, A + i * ar, ar, ac, Bm + j, ldb, C + i * ldc + j, ldc, add)
    int64_t j = 0, i;
    for (; j + 4 * LANES_N <= N; j += 4 * LANES_N) {
        for (i = 0; i + 4 <= M; i += 4) BLOCK(4, 4);
        for (; i < M; i++) BLOCK(1, 4);
    }
    for (; j + LANES_N <= N; j += LANES_N) {
        for (i = 0; i + 4 <= M; i += 4) BLOCK(4, 1);
        for (; i < M; i++) BLOCK(1, 1);
    }
#undef BLOCK
    const int64_t w = N - j; /* the last N mod LANES_N columns: rows of B scaled into a row of sums */
    for (i = 0; i < M && w; i++) {
        T acc[LANES_N] = {0}, *restrict c = C + i * ldc + j;
        for (int64_t x = 0; x < Kd; x++) {
            const T a = A[i * ar + x * ac], *restrict b = Bm + x * ldb + j;
#pragma omp simd
            for (int64_t e = 0; e < w; e++) acc[e] += a * b[e];
        }
        for (int64_t e = 0; e < w; e++) c[e] = (add ? c[e] : 0) + alpha * acc[e];
    }
}

typedef IT NAME(ivec) __attribute__((vector_size(64)));

/* dst (LANES_N, LANES_N) rows ldd apart = src^T, src rows lds apart: log2(LANES_N) rounds, the one of
   width w swapping the off-diagonal (w, w) blocks of every (2w, 2w) block, two shuffles a pair of
   rows (element e of a shuffle's mask: e < LANES_N row i's, LANES_N + e row i + w's) */
static inline void NAME(tile)(const T *restrict src, int64_t lds, T *restrict dst, int64_t ldd) {
    NAME(vec) r[LANES_N];
    for (int64_t i = 0; i < LANES_N; i++) r[i] = NAME(load)(src + i * lds);
#define ROUND(w)                                                                                   \
    {                                                                                              \
        for (int64_t i = 0; i < LANES_N; i++)                                                      \
            if (!(i & (w))) {                                                                      \
                const NAME(vec) a = SHUFFLE(r[i], r[i + (w)], LO, w);                              \
                r[i + (w)] = SHUFFLE(r[i], r[i + (w)], HI, w);                                     \
                r[i] = a;                                                                          \
            }                                                                                      \
    }
    ROUND(1) ROUND(2) ROUND(4)
#if LANES_N == 16
    ROUND(8)
#endif
#undef ROUND
    for (int64_t i = 0; i < LANES_N; i++) memcpy(dst + i * ldd, &r[i], sizeof r[i]);
}

/* dst (n, m) = src^T, src (m, n) rows lds apart: by (LANES_N, LANES_N) tiles, the edges element-wise */
static inline void NAME(transpose)(int64_t m, int64_t n, const T *restrict src, int64_t lds, T *restrict dst) {
    const int64_t mt = m - m % LANES_N, nt = n - n % LANES_N;
    for (int64_t i = 0; i < mt; i += LANES_N)
        for (int64_t j = 0; j < nt; j += LANES_N) NAME(tile)(src + i * lds + j, lds, dst + j * m + i, m);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = i < mt ? nt : 0; j < n; j++) dst[j * m + i] = src[i * lds + j];
}

/* dst (m, D) = the rows x_s (lds apart) scaled by c[s stride] */
static inline void NAME(scaled)(int64_t m, int64_t D, const T *x, int64_t lds, const T *c, int64_t stride,
                                T *dst) {
    for (int64_t s = 0; s < m; s++)
#pragma omp simd
        for (int64_t j = 0; j < D; j++) dst[s * D + j] = c[s * stride] * x[s * lds + j];
}

/* the rows (m, D) lds apart of each of the n arrays xs brought towards L1: the loops' backwards
   fetch the next chunk's while this one computes (a few percent of ttt_linear's backward; its
   forward, which reads half as many rows, gained nothing) */
static inline void NAME(prefetch)(int64_t n, const T *const *xs, int64_t m, int64_t D, int64_t lds) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t s = 0; s < m; s++)
            for (int64_t j = 0; j < D; j += 64 / sizeof(T)) __builtin_prefetch(xs[i] + s * lds + j);
}

#undef MASK
#undef SHUFFLE
