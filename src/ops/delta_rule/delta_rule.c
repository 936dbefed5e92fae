/* The delta rule on the CPU, one token at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, state S (K, V), N delta steps a token (N = 1: the delta rule; N > 1: DeltaProduct),
   D_t = diag(exp(g_t)) with g_t per key (GK = 1, KDA) or per head (GK = 0; 1 without g),
   q~_t = scale q_t:
       S <- D_t S;  for j < N: w = S^T k_{t,j},  u_j = beta_{t,j} (v_{t,j} - w),  S <- S + k_{t,j} u_j^T
       o_t = S^T q~_t
   (as reference.py). Layouts: q, o (B, L, H, K or V) and g (B, L, H[, K]) by token; k, v, beta
   (B, L N, H, ...) by step, token t's steps at t N .. t N + N - 1; states (B, H, K, V). A call does
   heads [h0, h1) of the B H heads (threads take disjoint ranges).

   The forward steps the heads of a batch row together (their inputs are then read in order). A
   head's state is kept as S = diag(c) X: the decays go into the row scales c (one multiply per
   key, not per state element); when a row's scale falls below TINY every row is folded back
   (X <- diag(c) X, c = 1: one pass every so often rather than a branch per row every token), so
   that k_i / c_i stays below 2^60 |k_i| (a reset, c_i = 0, folds to X_i = 0). With
   kc_j = c * k_j, kx_j = k_j / c, cq = c * q~, a token is two passes over X:
       w'_j = X^T kc_j (= S^T k_j)                                   (N multiply-adds an element)
       w_j = w'_j + sum_{i<j} (k_i . k_j) u_i,  u_j = beta_j (v_j - w_j)   (S^T k_j after the steps i < j)
       X <- X + sum_j kx_j u_j^T,  o = X^T cq                          (N + 1 multiply-adds)
   column block by column block: each block of X's columns (64 bytes a row) is walked by both
   passes while it sits in L1, its w_j, u_j and o in registers (block, for N <= NMAX); a tail of V
   that is not a multiple of the vector width, or N > NMAX, goes column by column (column).
   exp: ../_cpu/exp_float.h in float32, libm in float64. The file includes itself once per dtype. */

#ifndef T
#include <math.h>
#define NMAX 4 /* the most steps a token that go block by block */
#define TC 16  /* tokens a head steps before the next head's turn: its state stays in L1 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_cpu/exp_float.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define T float
#define EXP exp_float
#define NAME(x) CAT(delta_rule_float32_, x)
#include "delta_rule.c"
#undef T
#undef EXP
#undef NAME

#define T double
#define EXP exp
#define NAME(x) CAT(delta_rule_float64_, x)
#include "delta_rule.c"

#else

#define TINY ((T)8.673617379884035e-19) /* 2^-60 */
typedef T NAME(vec) __attribute__((vector_size(64), aligned(sizeof(T))));

/* One token on the columns [c0, c0 + LANES) of X (K, V), in registers; kc, kx (N, K), cq (K),
   kk (N, N) the keys' dot products, vt / bt the first step's values / beta (strides sv, sb).
   Rows go four at a time into four partial sums, so that the sums' multiply-adds do not wait on
   each other; N <= NMAX, a constant where it is inlined (the arrays then live in registers). */
static inline void NAME(block)(int64_t K, int64_t V, int64_t N, int64_t c0, const T *restrict kc,
                               const T *restrict kx, const T *restrict cq, const T *restrict kk,
                               const T *restrict vt, int64_t sv, const T *restrict bt, int64_t sb,
                               T *restrict X, T *restrict o) {
    typedef NAME(vec) vec;
    const vec zero = {0};
    vec part[NMAX][4], u[NMAX], acc[4] = {zero, zero, zero, zero};
    for (int64_t j = 0; j < N; j++)
        for (int r = 0; r < 4; r++) part[j][r] = zero;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4)
        for (int r = 0; r < 4; r++) {
            const vec x = *(const vec *)(X + (i + r) * V + c0);
            for (int64_t j = 0; j < N; j++) part[j][r] += kc[j * K + i + r] * x;
        }
    for (; i < K; i++) {
        const vec x = *(const vec *)(X + i * V + c0);
        for (int64_t j = 0; j < N; j++) part[j][0] += kc[j * K + i] * x;
    }
    for (int64_t j = 0; j < N; j++) {
        vec w = (part[j][0] + part[j][1]) + (part[j][2] + part[j][3]);
        for (int64_t jj = 0; jj < j; jj++) w += kk[jj * N + j] * u[jj];
        u[j] = bt[j * sb] * (*(const vec *)(vt + j * sv + c0) - w);
    }
    for (i = 0; i + 4 <= K; i += 4)
        for (int r = 0; r < 4; r++) {
            vec *row = (vec *)(X + (i + r) * V + c0), x = *row;
            for (int64_t j = 0; j < N; j++) x += kx[j * K + i + r] * u[j];
            *row = x;
            acc[r] += cq[i + r] * x;
        }
    for (; i < K; i++) {
        vec *row = (vec *)(X + i * V + c0), x = *row;
        for (int64_t j = 0; j < N; j++) x += kx[j * K + i] * u[j];
        *row = x;
        acc[0] += cq[i] * x;
    }
    *(vec *)(o + c0) = (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* The same on one column c (the tail of V). */
static inline void NAME(column)(int64_t K, int64_t V, int64_t N, int64_t c, const T *restrict kc,
                                const T *restrict kx, const T *restrict cq, const T *restrict kk,
                                const T *restrict vt, int64_t sv, const T *restrict bt, int64_t sb,
                                T *restrict X, T *restrict o) {
    T u[N], acc = 0;
    for (int64_t j = 0; j < N; j++) u[j] = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < N; j++) u[j] += kc[j * K + i] * X[i * V + c];
    for (int64_t j = 0; j < N; j++) {
        T w = u[j];
        for (int64_t i = 0; i < j; i++) w += kk[i * N + j] * u[i];
        u[j] = bt[j * sb] * (vt[j * sv + c] - w);
    }
    for (int64_t i = 0; i < K; i++) {
        T x = X[i * V + c];
        for (int64_t j = 0; j < N; j++) x += kx[j * K + i] * u[j];
        X[i * V + c] = x;
        acc += cq[i] * x;
    }
    o[c] = acc;
}

/* One token of one head: the row scales c (K) take the decay (folding rows that fall low), then
   the two passes, block by block. kt, vt, bt: the token's first step (strides sk, sv, sb). */
static inline void NAME(token)(int64_t K, int64_t V, int64_t N, int64_t GK, T scale, const T *qt, const T *gt,
                               const T *kt, int64_t sk, const T *vt, int64_t sv, const T *bt, int64_t sb,
                               T *restrict c, T *restrict X, T *restrict o) {
    enum { LANES = 64 / sizeof(T) };
    T kc[N * K], kx[N * K], cq[K], kk[N * N];
    if (gt) {
        int fold = 0;
        if (GK) {
#pragma omp simd reduction(| : fold)
            for (int64_t i = 0; i < K; i++) {
                c[i] *= EXP(gt[i]);
                fold |= !(c[i] >= TINY);
            }
        } else {
            const T d = EXP(gt[0]);
#pragma omp simd reduction(| : fold)
            for (int64_t i = 0; i < K; i++) {
                c[i] *= d;
                fold |= !(c[i] >= TINY);
            }
        }
        if (fold) /* every row at once: one pass every so often, no per-row branches a token */
            for (int64_t i = 0; i < K; i++) {
                const T ci = c[i];
#pragma omp simd
                for (int64_t jj = 0; jj < V; jj++) X[i * V + jj] *= ci;
                c[i] = 1;
            }
    }
#pragma omp simd
    for (int64_t i = 0; i < K; i++) {
        const T ci = c[i], ri = 1 / ci;
        cq[i] = ci * scale * qt[i];
        for (int64_t j = 0; j < N; j++) {
            kc[j * K + i] = ci * kt[j * sk + i];
            kx[j * K + i] = kt[j * sk + i] * ri;
        }
    }
    for (int64_t j = 0; j < N; j++) {
        const T *k = kt + j * sk;
        for (int64_t jj = j + 1; jj < N; jj++) {
            T dot = 0;
            for (int64_t i = 0; i < K; i++) dot += k[i] * kt[jj * sk + i];
            kk[j * N + jj] = dot;
        }
    }
    int64_t c0 = 0;
#define BLOCKS(n) \
    for (; c0 + LANES <= V; c0 += LANES) NAME(block)(K, V, n, c0, kc, kx, cq, kk, vt, sv, bt, sb, X, o)
    switch (N) { /* a constant N for each case (more than NMAX steps go column by column) */
    case 1: BLOCKS(1); break;
    case 2: BLOCKS(2); break;
    case 3: BLOCKS(3); break;
    case 4: BLOCKS(4); break;
    }
#undef BLOCKS
    for (; c0 < V; c0++) NAME(column)(K, V, N, c0, kc, kx, cq, kk, vt, sv, bt, sb, X, o);
}

/* The forward; ckpt (B H, ceil(L / C), K, V) gets the state before tokens 0, C, 2C, ... */
void NAME(forward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t C,
                   int64_t N, int64_t GK, T scale, const T *q, const T *k, const T *v, const T *beta, const T *g,
                   const T *S0, T *o, T *S_end, T *ckpt) {
    const int64_t nseg = (L + C - 1) / C;
    T *c = malloc(H * K * sizeof(T));
    for (int64_t b = h0 / H; b * H < h1; b++) { /* the heads of a batch row step together (../gla/gla.c) */
        const int64_t lo = h0 > b * H ? h0 : b * H, hi = h1 < (b + 1) * H ? h1 : (b + 1) * H;
        for (int64_t bh = lo; bh < hi; bh++) {
            if (S0) memcpy(S_end + bh * K * V, S0 + bh * K * V, K * V * sizeof(T));
            else memset(S_end + bh * K * V, 0, K * V * sizeof(T));
            for (int64_t i = 0; i < K; i++) c[(bh - lo) * K + i] = 1;
        }
        for (int64_t t0 = 0; t0 < L; t0 += TC)
            for (int64_t bh = lo; bh < hi; bh++)
                for (int64_t t = t0; t < t0 + TC && t < L; t++) {
                const int64_t hd = (b * L + t) * H + bh % H, sd = (b * L + t) * N * H + bh % H;
                T *X = S_end + bh * K * V, *ch = c + (bh - lo) * K;
                if (ckpt && t % C == 0)
                    for (int64_t i = 0; i < K; i++)
                        for (int64_t jj = 0; jj < V; jj++)
                            ckpt[(bh * nseg + t / C) * K * V + i * V + jj] = ch[i] * X[i * V + jj];
                const T *gt = g ? g + (GK ? hd * K : hd) : NULL;
#define TOKEN(n) \
    NAME(token)(K, V, n, GK, scale, q + hd * K, gt, k + sd * K, H * K, v + sd * V, H * V, beta + sd, H, ch, X, o + hd * V)
                if (N == 1) /* a constant N: the per-token loops over the steps unroll */
                    TOKEN(1);
                else if (N == 2)
                    TOKEN(2);
                else
                    TOKEN(N);
#undef TOKEN
            }
        for (int64_t bh = lo; bh < hi; bh++)
            for (int64_t i = 0; i < K; i++)
                for (int64_t jj = 0; jj < V; jj++) S_end[bh * K * V + i * V + jj] *= c[(bh - lo) * K + i];
    }
    free(c);
}

/* The backward, per head, against time in segments of C tokens (C N steps): the segment's states
   S before each step are recomputed from its checkpoint (the direct step, into C N + 1 states of
   scratch) with r = v - w, w = A^T k, A = d S_prev (d = D_t at a token's first step, else 1),
   u = beta r. Then, step by step from the last, with G = dLoss/dS after the step:
       at a token's last step:  G += q~ do^T;  dq = scale S do
       du = G^T k;  dk = G u;  dbeta = du . r;  dv = beta du;  dw = -beta du
       dA = G + k dw^T;  dk += A dw;  G <- d dA
       at a token's first step:  dg_i = d_i (dA_i . S_prev,i) (per key; summed over i per head)
   and dS_0 = G at the start. */
void NAME(backward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t C,
                    int64_t N, int64_t GK, T scale, const T *q, const T *k, const T *v, const T *beta, const T *g,
                    const T *ckpt, const T *dO, const T *dS_end, T *dq, T *dk, T *dv, T *dbeta, T *dg, T *dS0) {
    const int64_t nseg = (L + C - 1) / C, KV = K * V, CN = C * N;
    T *scratch = malloc(((CN + 2) * KV + CN * V) * sizeof(T)), *G = scratch + (CN + 1) * KV, *R = G + KV;
    T du[V], dw[V], u[V], d[K];
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        if (dS_end) memcpy(G, dS_end + bh * KV, KV * sizeof(T));
        else memset(G, 0, KV * sizeof(T));
        for (int64_t s = nseg - 1; s >= 0; s--) {
            const int64_t t0 = s * C, n = (L - t0 < C ? L - t0 : C) * N;
            memcpy(scratch, ckpt + (bh * nseg + s) * KV, KV * sizeof(T));
            for (int64_t p = 0; p < n; p++) { /* scratch[p + 1] = S after step p, R[p] = r_p */
                const int64_t t = t0 + p / N, hd = (b * L + t) * H + h, sd = ((b * L + t) * N + p % N) * H + h;
                const T *kt = k + sd * K, *vt = v + sd * V;
                T *prev = scratch + p * KV, *cur = prev + KV, *r = R + p * V;
                for (int64_t i = 0; i < K; i++) d[i] = !g || p % N ? (T)1 : EXP(g[GK ? hd * K + i : hd]);
                for (int64_t jj = 0; jj < V; jj++) r[jj] = 0;
                for (int64_t i = 0; i < K; i++) {
                    const T di = d[i];
#pragma omp simd
                    for (int64_t jj = 0; jj < V; jj++) {
                        cur[i * V + jj] = di * prev[i * V + jj];
                        r[jj] += kt[i] * cur[i * V + jj];
                    }
                }
#pragma omp simd
                for (int64_t jj = 0; jj < V; jj++) {
                    r[jj] = vt[jj] - r[jj];
                    u[jj] = beta[sd] * r[jj];
                }
                for (int64_t i = 0; i < K; i++) {
#pragma omp simd
                    for (int64_t jj = 0; jj < V; jj++) cur[i * V + jj] += kt[i] * u[jj];
                }
            }
            for (int64_t p = n - 1; p >= 0; p--) {
                const int64_t t = t0 + p / N, hd = (b * L + t) * H + h, sd = ((b * L + t) * N + p % N) * H + h;
                const int read = p % N == N - 1, first = p % N == 0;
                const T bt = beta[sd], *kt = k + sd * K, *dot = dO + hd * V;
                const T *prev = scratch + p * KV, *cur = prev + KV, *r = R + p * V;
                T db = 0, dd = 0;
                for (int64_t i = 0; i < K; i++) d[i] = !g || !first ? (T)1 : EXP(g[GK ? hd * K + i : hd]);
#pragma omp simd
                for (int64_t jj = 0; jj < V; jj++) {
                    u[jj] = bt * r[jj];
                    du[jj] = 0;
                }
                for (int64_t i = 0; i < K; i++) {
                    T *restrict Gi = G + i * V;
                    const T *restrict Si = cur + i * V, qi = read ? scale * q[hd * K + i] : 0, ki = kt[i];
                    T sq = 0, gu = 0;
                    if (read) {
#pragma omp simd reduction(+ : sq)
                        for (int64_t jj = 0; jj < V; jj++) {
                            Gi[jj] += qi * dot[jj];
                            sq += Si[jj] * dot[jj];
                        }
                        dq[hd * K + i] = scale * sq;
                    }
#pragma omp simd reduction(+ : gu)
                    for (int64_t jj = 0; jj < V; jj++) {
                        du[jj] += ki * Gi[jj];
                        gu += Gi[jj] * u[jj];
                    }
                    dk[sd * K + i] = gu;
                }
#pragma omp simd reduction(+ : db)
                for (int64_t jj = 0; jj < V; jj++) {
                    db += du[jj] * r[jj];
                    dv[sd * V + jj] = bt * du[jj];
                    dw[jj] = -bt * du[jj];
                }
                dbeta[sd] = db;
                for (int64_t i = 0; i < K; i++) {
                    T *restrict Gi = G + i * V;
                    const T *restrict Pi = prev + i * V, ki = kt[i], di = d[i];
                    T pw = 0, gp = 0;
#pragma omp simd reduction(+ : pw, gp)
                    for (int64_t jj = 0; jj < V; jj++) {
                        const T dA = Gi[jj] + ki * dw[jj];
                        pw += Pi[jj] * dw[jj];
                        gp += dA * Pi[jj];
                        Gi[jj] = di * dA;
                    }
                    dk[sd * K + i] += di * pw;
                    if (dg && first && GK) dg[hd * K + i] = di * gp;
                    dd += di * gp;
                }
                if (dg && first && !GK) dg[hd] = dd;
            }
        }
        if (dS0) memcpy(dS0 + bh * KV, G, KV * sizeof(T));
    }
    free(scratch);
}
#undef TINY

#endif
