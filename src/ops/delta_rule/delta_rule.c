/* The delta rule on the CPU, one step at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, state S (K, V), d_t = exp(g_t) (1 without g), q~_t = scale q_t:
       w_t = S_{t-1}^T k_t,   u_t = beta_t (v_t - d_t w_t),   S_t = d_t S_{t-1} + k_t u_t^T,
       o_t = S_t^T q~_t
   (S <- d S, then u = beta (v - S^T k), S <- S + k u^T, as reference.py); with a per-key decay
   (KDA, GK = 1) d_t is the vector exp(g_t) and d_t S scales the rows. Layouts as the op's:
   q, k (B, T, H, K), v, o (B, T, H, V), beta (B, T, H), g (B, T, H) or (B, T, H, K) (GK),
   states (B, H, K, V); a call does heads
   [h0, h1) of the B H heads (threads take disjoint ranges). The forward steps the heads of a
   batch row together (their inputs are then read in order); a head's (K, V) state is kept as
   S = c X, the decays in the scalar c (see forward); a step is two vectorised passes over X (w,
   then the update fused with the output), four rows at a time so that w and o are loaded and
   stored once per four rows. A per-key decay has no scalar to fold: its step scales the rows of
   S while it reads w (step_per_key).
   exp: ../_cpu/exp_float.h in float32, libm in float64. The file includes itself once per dtype. */

#ifndef T
#include <math.h>
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

#include "../_cpu/rank1.h"

/* one step of X (K, V) in place, the state S = c X with c > 0: w = X^T kt, u = beta (vt - c w),
   X += kt (u / c)^T, o_out = X^T (c qs) = S^T qs; kt, qs (K), vt (V) */
static inline void NAME(step)(int64_t K, int64_t V, T c, T beta, const T *restrict kt, const T *restrict qs,
                              const T *restrict vt, T *restrict X, T *restrict o_out) {
    T w[V];
    int64_t i = 0;
    for (int64_t j = 0; j < V; j++) w[j] = 0;
    for (; i + 4 <= K; i += 4) {
        const T *restrict r0 = X + i * V, *restrict r1 = r0 + V, *restrict r2 = r1 + V, *restrict r3 = r2 + V;
#pragma omp simd
        for (int64_t j = 0; j < V; j++) w[j] += kt[i] * r0[j] + kt[i + 1] * r1[j] + kt[i + 2] * r2[j] + kt[i + 3] * r3[j];
    }
    for (; i < K; i++) {
        const T *restrict row = X + i * V;
#pragma omp simd
        for (int64_t j = 0; j < V; j++) w[j] += kt[i] * row[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < V; j++) w[j] = beta * (vt[j] - c * w[j]) / c; /* now u_t / c */
    NAME(rank1_update_read)(K, V, c, kt, w, qs, X, o_out);
}

/* one step of S (K, V) in place with a per-key decay d (K): S <- diag(d) S, w = S^T kt (one pass),
   u = beta (vt - w), S += kt u^T, o_out = S^T qs (the second pass) */
static inline void NAME(step_per_key)(int64_t K, int64_t V, const T *restrict d, T beta, const T *restrict kt,
                                      const T *restrict qs, const T *restrict vt, T *restrict S,
                                      T *restrict o_out) {
    T w[V];
    for (int64_t j = 0; j < V; j++) w[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        T *restrict row = S + i * V;
        const T di = d[i], ki = kt[i];
#pragma omp simd
        for (int64_t j = 0; j < V; j++) {
            row[j] *= di;
            w[j] += ki * row[j];
        }
    }
#pragma omp simd
    for (int64_t j = 0; j < V; j++) w[j] = beta * (vt[j] - w[j]);
    NAME(rank1_update_read)(K, V, 1, kt, w, qs, S, o_out);
}

/* The decays go into the scale c (S = c X): a step is three multiply-adds per state element
   instead of four. When c falls below TINY it is folded back (X <- c X, c = 1) before the
   step, so u / c stays below 2^60 |u| (a reset, c = 0, folds to X = 0). */
#define TINY ((T)8.673617379884035e-19) /* 2^-60 */
void NAME(forward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t C,
                   int64_t GK, T scale, const T *q, const T *k, const T *v, const T *beta, const T *g,
                   const T *S0, T *o, T *S_end, T *ckpt) {
    const int64_t nseg = (L + C - 1) / C;
    T qs[K], d[K], *c = malloc(H * sizeof(T));
    for (int64_t b = h0 / H; b * H < h1; b++) { /* the heads of a batch row step together (../gla/gla.c) */
        const int64_t lo = h0 > b * H ? h0 : b * H, hi = h1 < (b + 1) * H ? h1 : (b + 1) * H;
        for (int64_t bh = lo; bh < hi; bh++) {
            if (S0) memcpy(S_end + bh * K * V, S0 + bh * K * V, K * V * sizeof(T));
            else memset(S_end + bh * K * V, 0, K * V * sizeof(T));
            c[bh - lo] = 1;
        }
        for (int64_t t = 0; t < L; t++)
            for (int64_t bh = lo; bh < hi; bh++) {
                const int64_t hd = (b * L + t) * H + bh % H;
                T *X = S_end + bh * K * V, *ch = c + (bh - lo);
                if (ckpt && t % C == 0)
                    for (int64_t i = 0; i < K * V; i++) ckpt[(bh * nseg + t / C) * K * V + i] = *ch * X[i];
                for (int64_t i = 0; i < K; i++) qs[i] = scale * q[hd * K + i];
                if (GK) { /* c stays 1 */
                    for (int64_t i = 0; i < K; i++) d[i] = EXP(g[hd * K + i]);
                    NAME(step_per_key)(K, V, d, beta[hd], k + hd * K, qs, v + hd * V, X, o + hd * V);
                    continue;
                }
                if (g) {
                    *ch *= EXP(g[hd]);
                    if (!(*ch >= TINY)) {
                        for (int64_t i = 0; i < K * V; i++) X[i] *= *ch;
                        *ch = 1;
                    }
                }
                if (K == 64 && V == 64) /* constant sizes: w and o stay in registers */
                    NAME(step)(64, 64, *ch, beta[hd], k + hd * K, qs, v + hd * V, X, o + hd * V);
                else
                    NAME(step)(K, V, *ch, beta[hd], k + hd * K, qs, v + hd * V, X, o + hd * V);
            }
        for (int64_t bh = lo; bh < hi; bh++)
            for (int64_t i = 0; i < K * V; i++) S_end[bh * K * V + i] *= c[bh - lo];
    }
    free(c);
}

/* The backward, per head, against time in segments of C steps: the segment's states S_{t-1}
   are recomputed from its checkpoint (the direct step, into C + 1 states of scratch) with
   r_t = v_t - w_t, w_t = A_t^T k_t, A_t = d_t S_{t-1}, u_t = beta_t r_t. Then, with
   G = dLoss/dS_t:
       G += q~ do^T;  dq = scale S_t do;  du = G^T k;  dk = G u
       dbeta = du . r;  dv = beta du;  dw = -beta du
       dA = G + k dw^T;  dk += A dw;  dg = d sum(dA * S_{t-1});  G <- d dA
   and dS_0 = G at the start. With a per-key decay, d_i scales row i and dg_i = d_i (dA_i . S_{t-1,i}). */
void NAME(backward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t C,
                    int64_t GK, T scale, const T *q, const T *k, const T *v, const T *beta, const T *g, const T *ckpt,
                    const T *dO, const T *dS_end, T *dq, T *dk, T *dv, T *dbeta, T *dg, T *dS0) {
    const int64_t nseg = (L + C - 1) / C, KV = K * V;
    T *scratch = malloc(((C + 2) * KV + C * V) * sizeof(T)), *G = scratch + (C + 1) * KV, *R = G + KV;
    T du[V], dw[V], u[V], d[K];
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        if (dS_end) memcpy(G, dS_end + bh * KV, KV * sizeof(T));
        else memset(G, 0, KV * sizeof(T));
        for (int64_t s = nseg - 1; s >= 0; s--) {
            const int64_t t0 = s * C, n = L - t0 < C ? L - t0 : C;
            memcpy(scratch, ckpt + (bh * nseg + s) * KV, KV * sizeof(T));
            for (int64_t j = 0; j < n; j++) { /* scratch[j + 1] = S_{t0 + j}, R[j] = r_{t0 + j} */
                const int64_t hd = (b * L + t0 + j) * H + h;
                const T *kt = k + hd * K, *vt = v + hd * V;
                T *prev = scratch + j * KV, *cur = prev + KV, *r = R + j * V;
                for (int64_t i = 0; i < K; i++) d[i] = !g ? (T)1 : EXP(g[GK ? hd * K + i : hd]);
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
                    u[jj] = beta[hd] * r[jj];
                }
                for (int64_t i = 0; i < K; i++) {
#pragma omp simd
                    for (int64_t jj = 0; jj < V; jj++) cur[i * V + jj] += kt[i] * u[jj];
                }
            }
            for (int64_t j = n - 1; j >= 0; j--) {
                const int64_t hd = (b * L + t0 + j) * H + h, qk = hd * K;
                const T bt = beta[hd], *kt = k + qk, *dot = dO + hd * V;
                const T *prev = scratch + j * KV, *cur = prev + KV, *r = R + j * V;
                T db = 0, dd = 0;
                for (int64_t i = 0; i < K; i++) d[i] = !g ? (T)1 : EXP(g[GK ? hd * K + i : hd]);
#pragma omp simd
                for (int64_t jj = 0; jj < V; jj++) {
                    u[jj] = bt * r[jj];
                    du[jj] = 0;
                }
                for (int64_t i = 0; i < K; i++) {
                    T *restrict Gi = G + i * V;
                    const T *restrict Si = cur + i * V, qi = scale * q[qk + i], ki = kt[i];
                    T sq = 0, gu = 0;
#pragma omp simd reduction(+ : sq, gu)
                    for (int64_t jj = 0; jj < V; jj++) {
                        Gi[jj] += qi * dot[jj];
                        sq += Si[jj] * dot[jj];
                        du[jj] += ki * Gi[jj];
                        gu += Gi[jj] * u[jj];
                    }
                    dq[qk + i] = scale * sq;
                    dk[qk + i] = gu;
                }
#pragma omp simd reduction(+ : db)
                for (int64_t jj = 0; jj < V; jj++) {
                    db += du[jj] * r[jj];
                    dv[hd * V + jj] = bt * du[jj];
                    dw[jj] = -bt * du[jj];
                }
                dbeta[hd] = db;
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
                    dk[qk + i] += di * pw;
                    if (dg && GK) dg[hd * K + i] = di * gp;
                    dd += di * gp;
                }
                if (dg && !GK) dg[hd] = dd;
            }
        }
        if (dS0) memcpy(dS0 + bh * KV, G, KV * sizeof(T));
    }
    free(scratch);
}
#undef TINY

#endif
