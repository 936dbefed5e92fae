/* Gated linear attention on the CPU, one step at a time, forward and backward, compiled by
   cpu.py (src/ops/_cpu's `library`).

   Per head, state S (K, V), d_t = exp(g_t) per key (gmode 2), per head (gmode 1) or 1 (gmode 0),
   negated where the optional mask neg (g's layout, bytes 0 / 1) is 1 (signed decays), q~_t = scale q_t:
       S_t = diag(d_t) S_{t-1} + k_t v_t^T,     o_t = S_t^T q~_t
       with u (RWKV-6):  o_t = S_{t-1}^T q~_t + (q~_t . (u * k_t)) v_t.
   Layouts as the op's: q, k, g (B, T, H, K), g per head (B, T, H), v, o (B, T, H, V), u (H, K),
   states (B, H, K, V); a call does heads [h0, h1) of the B H heads (threads take disjoint ranges).
   The forward advances the heads of a batch row together (their inputs are then read in order),
   their (K, V) states in L2, the one being stepped in L1; a step is one vectorised pass over it, four
   rows at a time (the output row is loaded and stored once per four rows), the update fused with
   the output; without u the decays live in per-row scales (see forward) and steps go 8 at a time
   where V is a multiple of the vector width (see block). exp:
   ../_cpu/exp_float.h in float32, libm in float64; exp(-inf) = 0 (a reset). With signed decays every
   formula holds as written with the signed d_t (the row scales P may be negative: their tests are on
   |P|), dg_t included, since d(+-exp(g))/dg = +-exp(g) = d_t.

   The forward also writes the state before steps 0, C, 2C, ... to `ckpt` (B, H, ceil(T / C), K, V)
   when given. The backward walks the segments of C steps from the last: it recomputes the
   segment's states from its checkpoint into a scratch of C + 1 states and then, against time,
   with G = dLoss/dS_t (G_T = the final state's gradient),
       no u:  G += q~_t do_t^T;  dq_t = scale S_t do_t;  dk_t = G v_t;  dv_t = G^T k_t
       u:     dq_t = scale (S_{t-1} do_t + (v_t . do_t) u * k_t);  dk_t = G v_t + (v_t . do_t) u * q~_t
              dv_t = G^T k_t + (q~_t . (u * k_t)) do_t;  du += (v_t . do_t) q~_t * k_t (per head)
       both:  dg_t = d_t * rowsum(G * S_{t-1}) (summed over keys for gmode 1);  G <- diag(d_t) G
              (then + q~_t do_t^T, with u);  dS_0 = G at the start.
   The file includes itself once per dtype (T, EXP, ABS, NAME set before each pass). */

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
#define ABS fabsf
#define NAME(x) CAT(gla_float32_, x)
#include "gla.c"
#undef T
#undef EXP
#undef ABS
#undef NAME

#define T double
#define EXP exp
#define ABS fabs
#define NAME(x) CAT(gla_float64_, x)
#include "gla.c"

#else

#include "../_cpu/rank1.h"

/* the decays d (K), signed where neg is given, and the scaled query qs (K) of one step */
static inline void NAME(prepare)(int64_t K, int gmode, T scale, const T *q, const T *g, const uint8_t *neg,
                                 int64_t qk, int64_t hd, T *d, T *qs) {
    if (gmode == 2) {
#pragma omp simd
        for (int64_t i = 0; i < K; i++) d[i] = EXP(g[qk + i]);
        if (neg)
#pragma omp simd
            for (int64_t i = 0; i < K; i++) d[i] = neg[qk + i] ? -d[i] : d[i];
    } else {
        const T dh = gmode == 1 ? (neg && neg[hd] ? -EXP(g[hd]) : EXP(g[hd])) : (T)1;
        for (int64_t i = 0; i < K; i++) d[i] = dh;
    }
    for (int64_t i = 0; i < K; i++) qs[i] = scale * q[qk + i];
}

/* one step of the state S (K, V) in place, with the values vt (V) and keys kt (K); o_out (V)
   gets the output unless NULL; bonus = q~ . (u * k) where u is given. Row by row, each row one
   vectorised pass (the output accumulates in o, in L1). */
static inline void NAME(step)(int64_t K, int64_t V, const T *restrict d, const T *restrict qs,
                              const T *restrict kt, const T *restrict vt, int with_u, T bonus,
                              T *restrict S, T *restrict o_out) {
    T o[V];
    for (int64_t j = 0; j < V; j++) o[j] = bonus * vt[j];
    int64_t i = 0;
    if (o_out && !with_u)
        for (; i + 4 <= K; i += 4) { /* four rows a pass: o is loaded and stored once per four */
            T *restrict r0 = S + i * V, *restrict r1 = r0 + V, *restrict r2 = r1 + V, *restrict r3 = r2 + V;
#pragma omp simd
            for (int64_t j = 0; j < V; j++) {
                r0[j] = d[i] * r0[j] + kt[i] * vt[j];
                r1[j] = d[i + 1] * r1[j] + kt[i + 1] * vt[j];
                r2[j] = d[i + 2] * r2[j] + kt[i + 2] * vt[j];
                r3[j] = d[i + 3] * r3[j] + kt[i + 3] * vt[j];
                o[j] += qs[i] * r0[j] + qs[i + 1] * r1[j] + qs[i + 2] * r2[j] + qs[i + 3] * r3[j];
            }
        }
    for (; i < K; i++) {
        T *restrict row = S + i * V;
        const T di = d[i], ki = kt[i], qi = qs[i];
        if (!o_out) {
#pragma omp simd
            for (int64_t j = 0; j < V; j++) row[j] = di * row[j] + ki * vt[j];
        } else if (with_u) {
#pragma omp simd
            for (int64_t j = 0; j < V; j++) {
                o[j] += qi * row[j];
                row[j] = di * row[j] + ki * vt[j];
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < V; j++) {
                row[j] = di * row[j] + ki * vt[j];
                o[j] += qi * row[j];
            }
        }
    }
    if (o_out) memcpy(o_out, o, V * sizeof(T));
}

static inline T NAME(bonus)(int64_t K, const T *qs, const T *u, const T *kt) {
    T bonus = 0;
    for (int64_t i = 0; i < K; i++) bonus += qs[i] * u[i] * kt[i];
    return bonus;
}

/* NB steps at once without u, for V a multiple of the vector width: for each 64-byte column
   block of X, the block's values and outputs of the NB steps stay in registers while the rows
   stream by, each row loaded and stored once per NB steps (instead of once a step). The row
   scales of the NB steps, Pt, are P times the decays so far; if one would fall below TINY in size by the
   block's end even after folding, the block is left to the step-by-step loop (returns 0). */
#define TINY ((T)8.673617379884035e-19) /* 2^-60 */
#define NB 8
typedef T NAME(vec) __attribute__((vector_size(64), aligned(sizeof(T))));
static int NAME(block)(int64_t K, int64_t V, int gmode, T scale, const T *q, const T *k, const T *v, const T *g,
                       const uint8_t *neg, int64_t hd0, int64_t H, T *restrict P, T *restrict X, T *restrict o) {
    typedef NAME(vec) vec;
    enum { LANES = 64 / sizeof(T) };
    T dd[NB * K], kk[NB * K], qq[NB * K], Pt[NB * K];
    for (int64_t j = 0; j < NB; j++) {
        const int64_t hd = hd0 + j * H;
        NAME(prepare)(K, gmode, scale, q, g, neg, hd * K, hd, dd + j * K, qq + j * K);
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int weak = 0;
        for (int64_t j = 0; j < NB; j++) {
            const T *restrict prev = j ? Pt + (j - 1) * K : P;
#pragma omp simd
            for (int64_t i = 0; i < K; i++) Pt[j * K + i] = prev[i] * dd[j * K + i];
        }
#pragma omp simd reduction(| : weak)
        for (int64_t i = 0; i < K; i++) weak |= !(ABS(Pt[(NB - 1) * K + i]) >= TINY);
        if (!weak) break;
        if (attempt) return 0;
        for (int64_t i = 0; i < K; i++) /* fold the rows that would fall low, then try again */
            if (!(ABS(Pt[(NB - 1) * K + i]) >= TINY) && P[i] != 1) {
                for (int64_t c = 0; c < V; c++) X[i * V + c] *= P[i];
                P[i] = 1;
            }
    }
    for (int64_t j = 0; j < NB; j++) {
        const T *kt = k + (hd0 + j * H) * K;
#pragma omp simd
        for (int64_t i = 0; i < K; i++) {
            kk[j * K + i] = kt[i] / Pt[j * K + i];
            qq[j * K + i] *= Pt[j * K + i];
        }
    }
    for (int64_t c0 = 0; c0 < V; c0 += LANES) {
        vec vv[NB], acc[NB];
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) {
            vv[j] = *(const vec *)(v + (hd0 + j * H) * V + c0);
            acc[j] = vv[j] * (T)0;
        }
        for (int64_t i = 0; i < K; i++) {
            vec *row = (vec *)(X + i * V + c0), x = *row;
#pragma GCC unroll 8
            for (int j = 0; j < NB; j++) {
                x += kk[j * K + i] * vv[j];
                acc[j] += qq[j * K + i] * x;
            }
            *row = x;
        }
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) *(vec *)(o + (hd0 + j * H) * V + c0) = acc[j];
    }
    memcpy(P, Pt + (NB - 1) * K, K * sizeof(T));
    return 1;
}

/* Steps [t, t + n) of head (b, h), state S = diag(P) X (see forward): one block of NB steps
   where n = NB and it can, else step by step; the state before steps 0, C, 2C, ... into ckpt. */
static void NAME(advance)(int64_t b, int64_t h, int64_t t, int64_t n, int64_t L, int64_t H, int64_t K,
                          int64_t V, int gmode, int64_t C, T scale, const T *q, const T *k, const T *v,
                          const T *g, const uint8_t *neg, const T *uh, T *o, T *S, T *P, T *ckpt_head) {
    T d[K], qs[K], kk[K];
    if (ckpt_head && t % C == 0)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) ckpt_head[t / C * K * V + i * V + j] = P[i] * S[i * V + j];
    if (n == NB && NAME(block)(K, V, gmode, scale, q, k, v, g, neg, (b * L + t) * H + h, H, P, S, o)) return;
    for (int64_t s = t; s < t + n; s++) {
        const int64_t hd = (b * L + s) * H + h, qk = hd * K;
        if (ckpt_head && s % C == 0 && s != t)
            for (int64_t i = 0; i < K; i++)
                for (int64_t j = 0; j < V; j++) ckpt_head[s / C * K * V + i * V + j] = P[i] * S[i * V + j];
        NAME(prepare)(K, gmode, scale, q, g, neg, qk, hd, d, qs);
        if (uh) {
            const T bonus = NAME(bonus)(K, qs, uh, k + qk);
            if (K == 64 && V == 64) /* constant sizes: the output row stays in registers */
                NAME(step)(64, 64, d, qs, k + qk, v + hd * V, 1, bonus, S, o + hd * V);
            else
                NAME(step)(K, V, d, qs, k + qk, v + hd * V, 1, bonus, S, o + hd * V);
            continue;
        }
        int fold = 0;
#pragma omp simd reduction(| : fold)
        for (int64_t i = 0; i < K; i++) {
            P[i] *= d[i];
            fold |= !(ABS(P[i]) >= TINY);
        }
        if (fold)
            for (int64_t i = 0; i < K; i++)
                if (!(ABS(P[i]) >= TINY)) {
                    for (int64_t j = 0; j < V; j++) S[i * V + j] *= P[i];
                    P[i] = 1;
                }
#pragma omp simd
        for (int64_t i = 0; i < K; i++) {
            kk[i] = k[qk + i] / P[i];
            qs[i] *= P[i];
        }
        if (K == 64 && V == 64)
            NAME(rank1_update_read)(64, 64, 1, kk, v + hd * V, qs, S, o + hd * V);
        else
            NAME(rank1_update_read)(K, V, 1, kk, v + hd * V, qs, S, o + hd * V);
    }
}

/* The forward without u keeps S = diag(P) X: the decays go into the row scales P (K), and a step
   is X += (k / P) v^T, o = X^T (q~ * P), two multiply-adds per element instead of three. A row
   whose |P| falls below TINY is folded back (X_i <- P_i X_i, P_i = 1) before the step, so k / P
   stays below 2^60 |k| (no overflow; a reset, P = 0, folds to X_i = 0). With u, the direct step.
   The heads of one batch row advance together, a block (or a step) each in turn: the inputs of a
   step are then one contiguous (H, K) stretch per tensor, read in order, where one head at a time
   would read K values every H K (a stride the hardware prefetcher loses at page ends: the loop
   then waited on its loads for ~40% of its time). Their states, H K V values, stay in L2. */
void NAME(forward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1,
                   int gmode, int64_t C, T scale, const T *q, const T *k, const T *v, const T *g,
                   const uint8_t *neg, const T *u, const T *S0, T *o, T *S_end, T *ckpt) {
    const int64_t nseg = (L + C - 1) / C, KV = K * V;
    const int blocks = !u && V % (64 / sizeof(T)) == 0 && (!ckpt || C % NB == 0);
    T *P = malloc(H * K * sizeof(T));
    for (int64_t b = h0 / H; b * H < h1; b++) {
        const int64_t lo = h0 > b * H ? h0 : b * H, hi = h1 < (b + 1) * H ? h1 : (b + 1) * H;
        for (int64_t bh = lo; bh < hi; bh++) {
            if (S0) memcpy(S_end + bh * KV, S0 + bh * KV, KV * sizeof(T));
            else memset(S_end + bh * KV, 0, KV * sizeof(T));
            for (int64_t i = 0; i < K; i++) P[(bh - lo) * K + i] = 1;
        }
        for (int64_t t = 0, n; t < L; t += n) {
            n = blocks && t % NB == 0 && t + NB <= L ? NB : 1;
            for (int64_t bh = lo; bh < hi; bh++)
                NAME(advance)(b, bh % H, t, n, L, H, K, V, gmode, C, scale, q, k, v, g, neg, u ? u + bh % H * K : NULL,
                              o, S_end + bh * KV, P + (bh - lo) * K, ckpt ? ckpt + bh * nseg * KV : NULL);
        }
        for (int64_t bh = lo; bh < hi; bh++)
            for (int64_t i = 0; i < K; i++)
                for (int64_t j = 0; j < V; j++) S_end[bh * KV + i * V + j] *= P[(bh - lo) * K + i];
    }
    free(P);
}
#undef TINY
#undef NB

void NAME(backward)(int64_t B, int64_t L, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1,
                    int gmode, int64_t C, T scale, const T *q, const T *k, const T *v, const T *g,
                    const uint8_t *neg, const T *u, const T *ckpt, const T *dO, const T *dS_end, T *dq, T *dk, T *dv,
                    T *dg, T *du, T *dS0) {
    const int64_t nseg = (L + C - 1) / C, KV = K * V;
    T *scratch = malloc((C + 1) * KV * sizeof(T)), *G = malloc(KV * sizeof(T));
    T d[K], qs[K], dvt[V];
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const T *uh = u ? u + h * K : NULL;
        if (dS_end) memcpy(G, dS_end + bh * KV, KV * sizeof(T));
        else memset(G, 0, KV * sizeof(T));
        if (du) memset(du + bh * K, 0, K * sizeof(T));
        for (int64_t s = nseg - 1; s >= 0; s--) {
            const int64_t t0 = s * C, n = L - t0 < C ? L - t0 : C;
            memcpy(scratch, ckpt + (bh * nseg + s) * KV, KV * sizeof(T));
            for (int64_t j = 0; j < n; j++) { /* scratch[j] = the state before step t0 + j */
                const int64_t hd = (b * L + t0 + j) * H + h, qk = hd * K;
                memcpy(scratch + (j + 1) * KV, scratch + j * KV, KV * sizeof(T));
                NAME(prepare)(K, gmode, scale, q, g, neg, qk, hd, d, qs);
                NAME(step)(K, V, d, qs, k + qk, v + hd * V, 0, 0, scratch + (j + 1) * KV, NULL);
            }
            for (int64_t j = n - 1; j >= 0; j--) {
                const int64_t hd = (b * L + t0 + j) * H + h, qk = hd * K;
                const T *prev = scratch + j * KV, *cur = prev + KV, *dot = dO + hd * V, *vt = v + hd * V;
                T vdo = 0, bonus = 0, dgh = 0;
                NAME(prepare)(K, gmode, scale, q, g, neg, qk, hd, d, qs);
                if (uh) {
                    for (int64_t jj = 0; jj < V; jj++) vdo += vt[jj] * dot[jj];
                    bonus = NAME(bonus)(K, qs, uh, k + qk);
                }
                for (int64_t jj = 0; jj < V; jj++) dvt[jj] = bonus * dot[jj];
                for (int64_t i = 0; i < K; i++) {
                    const T di = d[i], ki = k[qk + i], qi = qs[i];
                    T *restrict Gi = G + i * V;
                    const T *restrict Si = (uh ? prev : cur) + i * V, *restrict Pi = prev + i * V;
                    T sq = 0, gv = 0, gs = 0;
                    if (!uh) {
#pragma omp simd
                        for (int64_t jj = 0; jj < V; jj++) Gi[jj] += qi * dot[jj];
                    }
#pragma omp simd reduction(+ : sq, gv, gs)
                    for (int64_t jj = 0; jj < V; jj++) {
                        sq += Si[jj] * dot[jj];
                        gv += Gi[jj] * vt[jj];
                        gs += Gi[jj] * Pi[jj];
                        dvt[jj] += Gi[jj] * ki;
                        Gi[jj] *= di;
                    }
                    if (uh) {
#pragma omp simd
                        for (int64_t jj = 0; jj < V; jj++) Gi[jj] += qi * dot[jj];
                        sq += vdo * uh[i] * ki;
                        gv += vdo * uh[i] * qi;
                        if (du) du[bh * K + i] += vdo * qi * ki;
                    }
                    dq[qk + i] = scale * sq;
                    dk[qk + i] = gv;
                    if (gmode == 2 && dg) dg[qk + i] = di * gs;
                    dgh += di * gs;
                }
                if (gmode == 1 && dg) dg[hd] = dgh;
                memcpy(dv + hd * V, dvt, V * sizeof(T));
            }
        }
        if (dS0) memcpy(dS0 + bh * KV, G, KV * sizeof(T));
    }
    free(scratch);
    free(G);
}

#endif
