/* TTT-Linear on the CPU, a mini-batch at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, a mini-batch of m tokens (rows t, s; m = M but for a partial last one) from the inner
   weights W (D, D), c (D) at its start, chunked.py's dual form:
       Z = K W + c,   chat_s = (b + k_s - v_s) w,   g_s = LNG(Z_s, chat_s),   G = diag(lr) g
       P = Q K^T,     A_ts = -eta_t (P_ts + 1) for s <= t (else 0)
       out = Q W + c + A G
       whole: W <- W - eta_m K^T G, c <- c - eta_m sum_s G_s;  partial last: (GW, Gc) = (K^T G, sum_s G_s)
   with LNG the layer norm's inner gradient: for x = Z - mean Z, inv = (mean x^2 + eps)^-1/2,
   zh = x inv, h = zh w^2 + chat, a = mean(h zh):  LNG = (h - mean h - zh a) inv.

   The backward walks the mini-batches from the last with dW, dc the gradients of the weights at
   the next one's start (from the final state's, which for a partial last one are GW's, Gc's
   instead). Whole: X = K dW,  dG = -eta_m (X + dc),  dK = -eta_m G dW^T,  deta_m -= sum_s (X_s + dc) . G_s;
   partial: dG = K dGW + dGc,  dK = G dGW^T. Then
       dQ = dout W^T + dP K,   dK += dP^T Q + dZ W^T,   dW += Q^T dout + K^T dZ,   dc += sum (dout + dZ)
       dA = dout G^T,  dG += A^T dout,  deta_t -= sum_{s <= t} dA_ts (P_ts + 1),  dP_ts = -eta_t dA_ts
       dlr_s = dG_s . g_s,   dg_s = lr_s dG_s,   and through LNG (e = dg inv, e' = mean(e zh)):
       dh = e - mean e - zh e',  dzh = dh w^2 - a e - e' h,  dinv = sum dg (h - mean h - zh a) + sum dzh x,
       dx = inv dzh - dinv inv^2 zh / D,  dZ = dx - mean dx,  dchat = dh,  dw += 2 w sum_s dh zh
   and chat's: db += w dchat, dk += w dchat, dv -= w dchat, dw += (b + k - v) dchat.

   Every product is gemm: C (+)= alpha A B, A's elements broadcast (any strides, so a transposed A
   costs nothing), 4 rows by 4 vectors of C held in registers through the sum. The transposed B's
   (W^T, dW^T, K^T, G^T) are copied once a mini-batch, by (LANES, LANES) tiles in registers. Layouts as the op's: q, k, v, out (B, T, H,
   D), eta, lr (B, T, H), w, b (H, D), W (B, H, D, D), c (B, H, D); a call does heads [h0, h1) of
   the B H. The forward saves, when the backward will need them, each mini-batch's start W (Ws
   (B, H, ceil(T / M), D, D)), Z (Zs (B, H, T, D)) and P (Ps (B, H, ceil(T / M), M, M), rows m apart). dw, db (B, H, D) per batch row (summed over
   B in cpu.py). The file includes itself once per dtype (T, SQRT, NAME set before each pass). */

#ifndef T
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

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
#define MASK8(F, w, o) F(o, w), F(o + 1, w), F(o + 2, w), F(o + 3, w), F(o + 4, w), F(o + 5, w), F(o + 6, w), F(o + 7, w)

#define T float
#define IT int32_t
#define LANES_N 16
#define MASK(F, w) {MASK8(F, w, 0), MASK8(F, w, 8)}
#define SQRT sqrtf
#define NAME(x) CAT(ttt_linear_float32_, x)
#include "ttt_linear.c"
#undef T
#undef IT
#undef LANES_N
#undef MASK
#undef SQRT
#undef NAME
#undef LANES

#define T double
#define IT int64_t
#define LANES_N 8
#define MASK(F, w) {MASK8(F, w, 0)}
#define SQRT sqrt
#define NAME(x) CAT(ttt_linear_float64_, x)
#include "ttt_linear.c"

#else

typedef T NAME(vec) __attribute__((vector_size(64))); /* 16 floats or 8 doubles */
#define LANES ((int64_t)(64 / sizeof(T)))

static inline NAME(vec) NAME(load)(const T *p) {
    NAME(vec) x;
    memcpy(&x, p, sizeof x);
    return x;
}

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
            row[u] = NAME(load)(Bm + x * ldb + u * LANES);
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
            if (add) c += NAME(load)(C + r * ldc + u * LANES);
            memcpy(C + r * ldc + u * LANES, &c, sizeof c);
        }
}

/* C (M, N) = add C + alpha A B (add 0 or 1): A's element (i, x) at A[i ar + x ac], B (Kd, N)
   rows ldb apart, C rows ldc apart */
static void NAME(gemm)(int64_t M, int64_t N, int64_t Kd, T alpha, const T *A, int64_t ar, int64_t ac,
                       const T *Bm, int64_t ldb, T *C, int64_t ldc, int64_t add) {
    int64_t j = 0, i;
    for (; j + 4 * LANES <= N; j += 4 * LANES) {
        for (i = 0; i + 4 <= M; i += 4) NAME(block)(4, 4, Kd, alpha, A + i * ar, ar, ac, Bm + j, ldb, C + i * ldc + j, ldc, add);
        for (; i < M; i++) NAME(block)(1, 4, Kd, alpha, A + i * ar, ar, ac, Bm + j, ldb, C + i * ldc + j, ldc, add);
    }
    for (; j + LANES <= N; j += LANES) {
        for (i = 0; i + 4 <= M; i += 4) NAME(block)(4, 1, Kd, alpha, A + i * ar, ar, ac, Bm + j, ldb, C + i * ldc + j, ldc, add);
        for (; i < M; i++) NAME(block)(1, 1, Kd, alpha, A + i * ar, ar, ac, Bm + j, ldb, C + i * ldc + j, ldc, add);
    }
    for (; j < N; j++)
        for (i = 0; i < M; i++) {
            T s = 0;
            for (int64_t x = 0; x < Kd; x++) s += A[i * ar + x * ac] * Bm[x * ldb + j];
            C[i * ldc + j] = (add ? C[i * ldc + j] : 0) + alpha * s;
        }
}

typedef IT NAME(ivec) __attribute__((vector_size(64)));

/* dst (LANES, LANES) rows ldd apart = src^T, src rows lds apart: log2(LANES) rounds, the one of
   width w swapping the off-diagonal (w, w) blocks of every (2w, 2w) block, two shuffles a pair of
   rows (element e of a shuffle's mask: e < LANES row i's, LANES + e row i + w's) */
static inline void NAME(tile)(const T *restrict src, int64_t lds, T *restrict dst, int64_t ldd) {
    NAME(vec) r[LANES_N];
    for (int64_t i = 0; i < LANES_N; i++) r[i] = NAME(load)(src + i * lds);
#define ROUND(w)                                                                                   \
    {                                                                                              \
        const NAME(ivec) lo = MASK(LO, w), hi = MASK(HI, w);                                       \
        for (int64_t i = 0; i < LANES_N; i++)                                                      \
            if (!(i & (w))) {                                                                      \
                const NAME(vec) a = __builtin_shuffle(r[i], r[i + (w)], lo);                       \
                r[i + (w)] = __builtin_shuffle(r[i], r[i + (w)], hi);                              \
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

/* dst (n, m) = src^T, src (m, n) rows lds apart: by (LANES, LANES) tiles, the edges element-wise */
static void NAME(transpose)(int64_t m, int64_t n, const T *restrict src, int64_t lds, T *restrict dst) {
    const int64_t mt = m - m % LANES, nt = n - n % LANES;
    for (int64_t i = 0; i < mt; i += LANES)
        for (int64_t j = 0; j < nt; j += LANES) NAME(tile)(src + i * lds + j, lds, dst + j * m + i, m);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = i < mt ? nt : 0; j < n; j++) dst[j * m + i] = src[i * lds + j];
}

/* one row's LNG: zh, h (D) and g = LNG (D) from Z's, k's and v's rows; returns inv, sets *a = mean(h zh) */
static T NAME(lng)(int64_t D, T eps, const T *restrict z, const T *restrict k, const T *restrict v,
                   const T *restrict w, const T *restrict b, const T *restrict w2, T *restrict zh, T *restrict h,
                   T *restrict g, T *a) {
    T mean = 0, var = 0, hm = 0, hz = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t j = 0; j < D; j++) mean += z[j];
    mean /= D;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < D; j++) var += (z[j] - mean) * (z[j] - mean);
    const T inv = 1 / SQRT(var / D + eps);
#pragma omp simd reduction(+ : hm, hz)
    for (int64_t j = 0; j < D; j++) {
        zh[j] = (z[j] - mean) * inv;
        h[j] = zh[j] * w2[j] + (b[j] + k[j] - v[j]) * w[j];  /* chat = (b + k - v) w */
        hm += h[j];
        hz += h[j] * zh[j];
    }
    hm /= D;
    *a = hz / D;
#pragma omp simd
    for (int64_t j = 0; j < D; j++) g[j] = (h[j] - hm - zh[j] * *a) * inv;
    return inv;
}

/* the mini-batch's inner gradients: for its rows s, LNG's zh_s, h_s, a_s, inv_s, g_s, and G_s = lr_s g_s */
static void NAME(gradients)(int64_t m, int64_t D, int64_t SD, T eps, const T *k, const T *v, const T *lr,
                            int64_t SH, const T *w, const T *b, const T *w2, const T *Z, T *zh, T *h, T *a,
                            T *inv, T *g, T *G) {
    for (int64_t s = 0; s < m; s++) {
        T *gs = g + s * D;
        inv[s] = NAME(lng)(D, eps, Z + s * D, k + s * SD, v + s * SD, w, b, w2, zh + s * D, h + s * D, gs, a + s);
#pragma omp simd
        for (int64_t j = 0; j < D; j++) G[s * D + j] = lr[s * SH] * gs[j];
    }
}

/* the rows (m, D) lds apart of each of the n arrays xs brought towards L1: the backward's next
   mini-batch's, while this one computes (a few percent of the backward; the forward, which
   touches half as many rows, gained nothing) */
static void NAME(prefetch)(int64_t n, const T *const *xs, int64_t m, int64_t D, int64_t lds) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t s = 0; s < m; s++)
            for (int64_t j = 0; j < D; j += 64 / sizeof(T)) __builtin_prefetch(xs[i] + s * lds + j);
}

/* A_ts = -eta_t (P_ts + 1) for s <= t, else 0 */
static void NAME(mixing)(int64_t m, const T *P, const T *eta, int64_t SH, T *A) {
    for (int64_t t = 0; t < m; t++)
        for (int64_t s = 0; s < m; s++) A[t * m + s] = s <= t ? -eta[t * SH] * (P[t * m + s] + 1) : 0;
}

void NAME(forward)(int64_t B, int64_t TT, int64_t H, int64_t D, int64_t M, int64_t h0, int64_t h1, double eps_,
                   const T *q, const T *k, const T *v, const T *eta, const T *lr, const T *w, const T *b,
                   const T *W0, const T *c0, T *out, T *Wf, T *cf, T *GW, T *Gc, T *Zs, T *Ps) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + M - 1) / M;
    T *buf = malloc(sizeof(T) * (5 * M * D + D * M + 2 * M * M + 2 * M + D));
    T *Z = buf, *zh = Z + M * D, *h = zh + M * D, *g = h + M * D, *G = g + M * D, *KT = G + M * D;
    T *P = KT + D * M, *A = P + M * M, *a = A + M * M, *inv = a + M, *w2 = inv + M;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *W = Wf + bh * D * D, *c = cf + bh * D;
        memcpy(W, W0 + bh * D * D, sizeof(T) * D * D);
        memcpy(c, c0 + bh * D, sizeof(T) * D);
        memset(GW + bh * D * D, 0, sizeof(T) * D * D);
        memset(Gc + bh * D, 0, sizeof(T) * D);
        for (int64_t n = 0; n < N; n++) {
            const int64_t t0 = n * M, m = TT - t0 < M ? TT - t0 : M, row = (bi * TT + t0) * SD + hi * D;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *etan = eta + row / D, *lrn = lr + row / D;
            T *outn = out + row, *Pn = Ps ? Ps + (bh * N + n) * M * M : P;
            for (int64_t s = 0; s < m; s++) memcpy(Z + s * D, c, sizeof(T) * D);
            NAME(gemm)(m, D, D, 1, kn, SD, 1, W, D, Z, D, 1);
            if (Zs) memcpy(Zs + (bh * TT + t0) * D, Z, sizeof(T) * m * D);
            NAME(gradients)(m, D, SD, eps, kn, vn, lrn, H, wh, bb, w2, Z, zh, h, a, inv, g, G);
            NAME(transpose)(m, D, kn, SD, KT);
            NAME(gemm)(m, m, D, 1, qn, SD, 1, KT, m, Pn, m, 0);  /* P = Q K^T */
            NAME(mixing)(m, Pn, etan, H, A);
            for (int64_t t = 0; t < m; t++) memcpy(outn + t * SD, c, sizeof(T) * D);
            NAME(gemm)(m, D, D, 1, qn, SD, 1, W, D, outn, SD, 1);
            NAME(gemm)(m, D, m, 1, A, m, 1, G, D, outn, SD, 1);
            const int64_t whole = m == M;
            const T scale = whole ? -etan[(m - 1) * H] : 1;
            T *dstW = whole ? W : GW + bh * D * D, *dstc = whole ? c : Gc + bh * D;
            NAME(gemm)(D, D, m, scale, kn, 1, SD, G, D, dstW, D, 1);  /* K^T G: K's element (i, s) at k[s SD + i] */
            for (int64_t s = 0; s < m; s++)
#pragma omp simd
                for (int64_t j = 0; j < D; j++) dstc[j] += scale * G[s * D + j];
        }
    }
    free(buf);
}

void NAME(backward)(int64_t B, int64_t TT, int64_t H, int64_t D, int64_t M, int64_t h0, int64_t h1, double eps_,
                    const T *q, const T *k, const T *v, const T *eta, const T *lr, const T *w, const T *b,
                    const T *Wf, const T *Zs, const T *Ps, const T *dout, const T *dWf, const T *dcf,
                    const T *dGW, const T *dGc, T *dq, T *dk, T *dv, T *deta, T *dlr, T *dw, T *db, T *dW0,
                    T *dc0) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + M - 1) / M;
    T *buf = malloc(sizeof(T) * (7 * M * D + D * M + 2 * D * D + 3 * M * M + 2 * M + 4 * D));
    T *zh = buf, *h = zh + M * D, *g = h + M * D, *G = g + M * D, *dG = G + M * D, *X = dG + M * D, *dZ = X + M * D;
    T *GT = dZ + M * D, *WT = GT + D * M, *dWT = WT + D * D, *A = dWT + D * D, *dA = A + M * M, *dP = dA + M * M;
    T *a = dP + M * M, *inv = a + M, *w2 = inv + M, *dw2 = w2 + D, *dsum = dw2 + D, *zeros = dsum + D;
    memset(zeros, 0, sizeof(T) * D);
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *dW = dW0 + bh * D * D, *dc = dc0 + bh * D, *dwh = dw + bh * D, *dbh = db + bh * D;
        NAME(transpose)(D, D, Wf + bh * D * D, D, WT);  /* the last mini-batch's start W: the final one */
        if (dWf) memcpy(dW, dWf + bh * D * D, sizeof(T) * D * D); else memset(dW, 0, sizeof(T) * D * D);
        if (dcf) memcpy(dc, dcf + bh * D, sizeof(T) * D); else memset(dc, 0, sizeof(T) * D);
        memset(dwh, 0, sizeof(T) * D);
        memset(dbh, 0, sizeof(T) * D);
        memset(dw2, 0, sizeof(T) * D);
        for (int64_t n = N - 1; n >= 0; n--) {
            const int64_t t0 = n * M, m = TT - t0 < M ? TT - t0 : M, row = (bi * TT + t0) * SD + hi * D;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *etan = eta + row / D, *lrn = lr + row / D;
            const T *dn = dout + row, *P = Ps + (bh * N + n) * M * M;
            T *dqn = dq + row, *dkn = dk + row, *dvn = dv + row, *detan = deta + row / D, *dlrh = dlr + row / D;
            if (n)
                NAME(prefetch)(7, (const T *[]){qn - M * SD, kn - M * SD, vn - M * SD, dn - M * SD, dqn - M * SD,
                                                dkn - M * SD, dvn - M * SD}, M, D, SD);
            NAME(gradients)(m, D, SD, eps, kn, vn, lrn, H, wh, bb, w2, Zs + (bh * TT + t0) * D, zh, h, a, inv, g, G);
            /* the weights' update: whole, (W, c) -= eta_m (K^T G, sum G); partial, (GW, Gc) = (K^T G, sum G) */
            const int64_t whole = m == M;
            const T *dWn = whole ? dW : dGW ? dGW + bh * D * D : NULL;
            const T *dcn = whole ? dc : dGc ? dGc + bh * D : zeros;
            const T scale = whole ? -etan[(m - 1) * H] : 1;
            if (whole)  /* W_n^T = W_n+1^T + eta_m G^T K: G^T's element (i, s) at G[s D + i] */
                NAME(gemm)(D, D, m, -scale, G, 1, D, kn, SD, WT, D, 1);
            if (dWn) {
                NAME(gemm)(m, D, D, 1, kn, SD, 1, dWn, D, X, D, 0);
                NAME(transpose)(D, D, dWn, D, dWT);
                NAME(gemm)(m, D, D, scale, G, D, 1, dWT, D, dkn, SD, 0);
            } else
                memset(X, 0, sizeof(T) * m * D);
            T deta_last = 0;
            for (int64_t s = 0; s < m; s++) {
                const T *Xs = X + s * D, *Gs = G + s * D;
                T *dGs = dG + s * D;
#pragma omp simd reduction(+ : deta_last)
                for (int64_t j = 0; j < D; j++) {
                    dGs[j] = scale * (Xs[j] + dcn[j]);
                    deta_last -= (Xs[j] + dcn[j]) * Gs[j];
                }
            }
            /* out = Q W + c + A G */
            NAME(gemm)(m, D, D, 1, dn, SD, 1, WT, D, dqn, SD, 0);
            NAME(gemm)(D, D, m, 1, qn, 1, SD, dn, SD, dW, D, 1);
            NAME(transpose)(m, D, G, D, GT);
            NAME(gemm)(m, m, D, 1, dn, SD, 1, GT, m, dA, m, 0);
            NAME(mixing)(m, P, etan, H, A);
            NAME(gemm)(m, D, m, 1, A, 1, m, dn, SD, dG, D, 1);
            for (int64_t t = 0; t < m; t++) {
                T e = whole && t == m - 1 ? deta_last : 0;
                for (int64_t s = 0; s < m; s++) {
                    e -= s <= t ? dA[t * m + s] * (P[t * m + s] + 1) : 0;
                    dP[t * m + s] = s <= t ? -etan[t * H] * dA[t * m + s] : 0;
                }
                detan[t * H] = e;
            }
            NAME(gemm)(m, D, m, 1, dP, m, 1, kn, SD, dqn, SD, 1);
            NAME(gemm)(m, D, m, 1, dP, 1, m, qn, SD, dkn, SD, dWn != NULL);
            /* G = diag(lr) g, g = LNG(Z, chat) */
            memset(dsum, 0, sizeof(T) * D);
            for (int64_t s = 0; s < m; s++) {
                const T *zs = zh + s * D, *hs = h + s * D, *gs = g + s * D, *ks = kn + s * SD, *vs = vn + s * SD;
                T *dGs = dG + s * D, *dZs = dZ + s * D, *dks = dkn + s * SD, *dvs = dvn + s * SD;
                const T lrs = lrn[s * H], is = inv[s];
                T dl = 0, em = 0, ez = 0, hm = 0;
#pragma omp simd reduction(+ : dl, em, ez, hm)
                for (int64_t j = 0; j < D; j++) {
                    dl += dGs[j] * gs[j];
                    const T e = lrs * dGs[j] * is;
                    dGs[j] = e;  /* e = dg inv from here */
                    em += e;
                    ez += e * zs[j];
                    hm += hs[j];
                }
                dlrh[s * H] = dl;
                em /= D, ez /= D, hm /= D;
                T dinv = 0, dzx = 0;
#pragma omp simd reduction(+ : dinv, dzx)
                for (int64_t j = 0; j < D; j++) {
                    const T e = dGs[j], dh = e - em - zs[j] * ez;
                    const T dz = dh * w2[j] - a[s] * e - ez * hs[j];
                    dinv += e * (hs[j] - hm - zs[j] * a[s]);
                    dzx += dz * zs[j];
                    dw2[j] += dh * zs[j];
                    dwh[j] += dh * (bb[j] + ks[j] - vs[j]);
                    dbh[j] += dh * wh[j];
                    dks[j] += dh * wh[j];
                    dvs[j] = -dh * wh[j];
                    dZs[j] = dz;
                }
                dinv = (dinv + dzx) / is;  /* sum dg (g / inv) + sum dzh x: dg = e / inv, x = zh / inv */
                T mean = 0;
#pragma omp simd reduction(+ : mean)
                for (int64_t j = 0; j < D; j++) {
                    dZs[j] = is * dZs[j] - dinv * is * is * zs[j] / D;
                    mean += dZs[j];
                }
                mean /= D;
#pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    dZs[j] -= mean;
                    dsum[j] += dZs[j];
                }
            }
            NAME(gemm)(m, D, D, 1, dZ, D, 1, WT, D, dkn, SD, 1);
            NAME(gemm)(D, D, m, 1, kn, 1, SD, dZ, D, dW, D, 1);
            for (int64_t t = 0; t < m; t++)
                for (int64_t j = 0; j < D; j++) dc[j] += dn[t * SD + j];
            for (int64_t j = 0; j < D; j++) dc[j] += dsum[j];
        }
        for (int64_t j = 0; j < D; j++) dwh[j] += 2 * wh[j] * dw2[j];
    }
    free(buf);
}

#endif
