/* MesaNet on the CPU, one token at a time, forward and backward, compiled by cpu.py (src/ops/_cpu's
   `library`).

   Per head, gamma_t = exp(g_t), the states and the solve of reference.py:
       H_t = gamma_t H_{t-1} + beta_t k_t k_t^T,   G_t = gamma_t G_{t-1} + beta_t k_t v_t^T,
       x_t = (H_t + diag(lambda))^-1 q_t,          o_t = G_t^T x_t
   with the (K, K) state formed at every token and the solve on it: `steps` >= 0, fla's conjugate
   gradient from 0 (cg.py's iteration, its eps 1e-5 in both denominators); steps < 0, exact, by a
   Cholesky factorisation of the upper triangle (the states are symmetric: a non-symmetric initial
   state is refused in cpu.py). The loop keeps H transposed (Ht = H^T, row i the column i of H), so
   that A p = H p + lambda * p is a sum of Ht's rows scaled by p (one vectorised pass over the 16 KB
   state, in L1 at K 64), as reference.py's A @ p; and the symmetric update of Ht is H's.
   Layouts as the op's: q, k (B, T, H, K), v, o (B, T, H, V), g, beta (B, T, H), lamb (H, K), states
   H (B, H, K, K), G (B, H, K, V); a call does heads [h0, h1) of the B H heads (threads take disjoint
   ranges). With CG, tokens are solved in pairs (t, t + 1; both states formed first), the two
   systems' steps in lockstep: a step of one is a chain of dependent reductions and divisions,
   whose waits the other's fill. Where K is a multiple of 4 vectors (64 floats, 32 doubles) a
   matvec keeps 4 vectors of each result in registers through all rows of the state. The forward
   saves x_t (B, T, H, K) and the states before tokens 0, C, 2C, ... (ckH (B, H, ceil(T / C), K, K)
   as Ht, ckG alike) when the backward will need them.

   The backward walks the segments of C tokens from the last: it recomputes the segment's states
   from its checkpoint into a scratch of C + 1 states and then, against time (two tokens' solves at
   a time, as the forward's), with D and E the gradients of Ht_t and G_t (from the final states'
   gradients, transposed for Ht):
       E += x_t do_t^T;   w = A_t^-1 (G_t do_t)  (the same solve: fla's implicit gradient for CG);
       dq_t = w;   dlambda -= w * x_t;   D -= x_t w^T   (dL/dA_t = -w x_t^T, transposed);
       u = (D + D^T) k_t,  e = E v_t:   dk_t = beta_t (u + e),  dbeta_t = k_t . (D k_t + e),
       dv_t = beta_t E^T k_t,   dg_t = gamma_t (<D, Ht_{t-1}> + <E, G_{t-1}>);   D, E *= gamma_t
   and the initial states' gradients are D^T and E at the start. The decay by gamma_t is applied in
   the passes of token t - 1, which read and write D and E anyway (one pass over each a token).
   dlamb (B, H, K) per batch row (summed over B in cpu.py). The file includes itself once per dtype
   (T, EXP, SQRT, NAME set before each pass). */

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
#define SQRT sqrtf
#define NAME(x) CAT(mesa_net_float32_, x)
#include "mesa_net.c"
#undef T
#undef EXP
#undef SQRT
#undef NAME
#undef LANES

#define T double
#define EXP exp
#define SQRT sqrt
#define NAME(x) CAT(mesa_net_float64_, x)
#include "mesa_net.c"

#else

#include "../_cpu/vec.h"
#define LANES ((int64_t)(64 / sizeof(T)))

/* the matvec of two systems where K is a multiple of 4 vectors: 4 vectors of each result held in
   registers while every row of Ht adds into them (no loads and stores of the result between rows,
   the loop's cost in the row-pass form below) */
static inline void NAME(matvec_blocks)(int64_t K, const T *const Hs[2], const T *restrict lam, const T *const ps[2],
                                       T *const Aps[2]) {
    for (int64_t i0 = 0; i0 < K; i0 += 4 * LANES) {
        NAME(vec) acc[2][4];
        for (int64_t s = 0; s < 2; s++)
            for (int64_t u = 0; u < 4; u++)
                acc[s][u] = NAME(load)(lam + i0 + u * LANES) * NAME(load)(ps[s] + i0 + u * LANES);
        for (int64_t j = 0; j < K; j++)
            for (int64_t s = 0; s < 2; s++) {
                const T *row = Hs[s] + j * K + i0;
                const T pj = ps[s][j];
                for (int64_t u = 0; u < 4; u++) acc[s][u] += pj * NAME(load)(row + u * LANES);
            }
        for (int64_t s = 0; s < 2; s++)
            for (int64_t u = 0; u < 4; u++) memcpy(Aps[s] + i0 + u * LANES, &acc[s][u], sizeof acc[s][u]);
    }
}

/* Ap = H p + lambda * p for two systems at once, with the transposed states Ht (K, K): the rows of
   Ht scaled by p, four rows a pass (Ap is loaded and stored once per four rows), A's rows and B's in
   one loop (two independent chains of loads and stores, where one system's wait on each other) */
static inline void NAME(matvec2)(int64_t K, const T *restrict Ha, const T *restrict Hb, const T *restrict lam,
                                 const T *restrict pa, const T *restrict pb, T *restrict Aa, T *restrict Ab) {
    if (K % (4 * LANES) == 0) {
        NAME(matvec_blocks)(K, (const T *[]){Ha, Hb}, lam, (const T *[]){pa, pb}, (T *[]){Aa, Ab});
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < K; i++) {
        Aa[i] = lam[i] * pa[i];
        Ab[i] = lam[i] * pb[i];
    }
    int64_t j = 0;
    for (; j + 4 <= K; j += 4) {
        const T *restrict a = Ha + j * K, *restrict b = Hb + j * K, *qa = pa + j, *qb = pb + j;
#pragma omp simd
        for (int64_t i = 0; i < K; i++) {
            Aa[i] += (qa[0] * a[i] + qa[1] * a[K + i]) + (qa[2] * a[2 * K + i] + qa[3] * a[3 * K + i]);
            Ab[i] += (qb[0] * b[i] + qb[1] * b[K + i]) + (qb[2] * b[2 * K + i] + qb[3] * b[3 * K + i]);
        }
    }
    for (; j < K; j++) {
        const T qa = pa[j], qb = pb[j];
#pragma omp simd
        for (int64_t i = 0; i < K; i++) {
            Aa[i] += qa * Ha[j * K + i];
            Ab[i] += qb * Hb[j * K + i];
        }
    }
}

/* `steps` CG steps on two systems in lockstep, each as solve's (the same operations in the same
   order): one system's step is a chain of dependent reductions and divisions that leaves the core
   idle, which the other's fills; work: 6 K */
static void NAME(cg2)(int64_t K, int64_t steps, const T *restrict Ha, const T *restrict Hb, const T *restrict lam,
                      const T *restrict ba, const T *restrict bb, T *restrict xa, T *restrict xb, T *restrict work) {
    const T eps = (T)1e-5;
    T *restrict ra = work, *restrict pa = ra + K, *restrict Aa = pa + K, *restrict rb = Aa + K, *restrict pb = rb + K,
      *restrict Ab = pb + K;
    for (int64_t i = 0; i < K; i++) {
        xa[i] = xb[i] = 0;
        ra[i] = pa[i] = ba[i];
        rb[i] = pb[i] = bb[i];
    }
    T da = NAME(dot)(K, ra, ra), db = NAME(dot)(K, rb, rb);
    for (int64_t s = 0; s < steps; s++) {
        NAME(matvec2)(K, Ha, Hb, lam, pa, pb, Aa, Ab);
        const T alpha_a = da / (NAME(dot)(K, pa, Aa) + eps), alpha_b = db / (NAME(dot)(K, pb, Ab) + eps);
        T na = 0, nb = 0; /* r . r, in the pass that updates r */
#pragma omp simd reduction(+ : na, nb)
        for (int64_t i = 0; i < K; i++) {
            xa[i] += alpha_a * pa[i];
            ra[i] -= alpha_a * Aa[i];
            xb[i] += alpha_b * pb[i];
            rb[i] -= alpha_b * Ab[i];
            na += ra[i] * ra[i];
            nb += rb[i] * rb[i];
        }
        const T ratio_a = na / (da + eps), ratio_b = nb / (db + eps);
#pragma omp simd
        for (int64_t i = 0; i < K; i++) {
            pa[i] = ra[i] + ratio_a * pa[i];
            pb[i] = rb[i] + ratio_b * pb[i];
        }
        da = na;
        db = nb;
    }
}

/* x = (H + diag(lam))^-1 b: `steps` CG steps from 0 (cg.py), or exact (steps < 0) by Cholesky into
   L (K, K); work: 7 K scratch */
static void NAME(solve)(int64_t K, int64_t steps, const T *restrict Ht, const T *restrict lam, const T *restrict b,
                        T *restrict x, T *restrict L, T *restrict work) {
    if (steps < 0) { /* A = U^T U, U upper (K, K) in L: row j of U is column j of the factor, formed
                        by axpys over the trailing rows (no reductions); A's upper triangle is Ht's.
                        The axpys start at the vector boundary at or below column j + 1, not at the
                        diagonal: whole vectors, no remainders; what they write left of a row's
                        diagonal (Ht's lower triangle, copied) is never read as U */
        memcpy(L, Ht, sizeof(T) * K * K);
        for (int64_t i = 0; i < K; i++) L[i * K + i] += lam[i];
        for (int64_t j = 0; j < K; j++) {
            T *restrict Uj = L + j * K;
            Uj[j] = SQRT(Uj[j]);
            const T inv = 1 / Uj[j];
#pragma omp simd
            for (int64_t m = j + 1; m < K; m++) Uj[m] *= inv;
            const int64_t m0 = (j + 1) / LANES * LANES;
            if (K % LANES == 0) /* a vector of row j at a time, down the trailing rows */
                for (int64_t m = m0; m < K; m += LANES) {
                    const NAME(vec) uj = NAME(load)(Uj + m);
                    for (int64_t i = j + 1; i < K; i++) {
                        const NAME(vec) ui = NAME(load)(L + i * K + m) - Uj[i] * uj;
                        memcpy(L + i * K + m, &ui, sizeof ui);
                    }
                }
            else
                for (int64_t i = j + 1; i < K; i++) {
                    T *restrict Ui = L + i * K;
                    const T u = Uj[i];
#pragma omp simd
                    for (int64_t m = m0; m < K; m++) Ui[m] -= u * Uj[m];
                }
        }
        memcpy(x, b, sizeof(T) * K);
        for (int64_t i = 0; i < K; i++) { /* U^T y = b: y_i final, then taken out of the rows below */
            x[i] /= L[i * K + i];
            const T yi = x[i];
            const T *restrict Ui = L + i * K;
#pragma omp simd
            for (int64_t m = i + 1; m < K; m++) x[m] -= yi * Ui[m];
        }
        for (int64_t i = K - 1; i >= 0; i--) /* U x = y */
            x[i] = (x[i] - NAME(dot)(K - i - 1, L + i * K + i + 1, x + i + 1)) / L[i * K + i];
        return;
    }
    NAME(cg2)(K, steps, Ht, Ht, lam, b, b, x, work + 6 * K, work); /* one system: cg2's first of two */
}

/* one token's states from the previous ones (in place where they are the same): Ht = gamma Ht' +
   beta k k^T (as H's: (beta k_j) k_i at Ht_ij = H_ji), G = gamma G' + beta k v^T */
static inline void NAME(update)(int64_t K, int64_t V, T gamma, T beta, const T *restrict kt, const T *restrict vt,
                                const T *Hp, const T *Gp, T *Ht, T *G, T *restrict kb) {
    for (int64_t i = 0; i < K; i++) kb[i] = beta * kt[i];
    for (int64_t i = 0; i < K; i++) {
        const T ki = kt[i];
#pragma omp simd
        for (int64_t j = 0; j < K; j++) Ht[i * K + j] = gamma * Hp[i * K + j] + kb[j] * ki;
    }
    for (int64_t i = 0; i < K; i++) {
        const T ki = kb[i];
#pragma omp simd
        for (int64_t j = 0; j < V; j++) G[i * V + j] = gamma * Gp[i * V + j] + ki * vt[j];
    }
}

/* o_t = G^T x (V) */
static inline void NAME(read)(int64_t K, int64_t V, const T *restrict G, const T *restrict x, T *restrict ot) {
    for (int64_t j = 0; j < V; j++) ot[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        const T xi = x[i];
        const T *restrict row = G + i * V;
#pragma omp simd
        for (int64_t j = 0; j < V; j++) ot[j] += xi * row[j];
    }
}

void NAME(forward)(int64_t TT, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t steps,
                   int64_t C, const T *q, const T *k, const T *v, const T *g, const T *beta, const T *lamb,
                   const T *H0, const T *G0, T *o, T *Hf, T *Gf, T *xs, T *ckH, T *ckG) {
    const int64_t N = (TT + C - 1) / C, S = K * K + K * V; /* a state: Ht then G */
    T *buf = malloc(sizeof(T) * (2 * S + K * K + 10 * K));
    T *L = buf + 2 * S, *x = L + K * K, *x1 = x + K, *kb = x1 + K, *work = kb + K;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const T *lam = lamb + h * K;
        T *cur = buf, *next = buf + S; /* the states after the last token done, and a scratch */
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) cur[i * K + j] = H0 ? H0[bh * K * K + j * K + i] : 0;
        for (int64_t i = 0; i < K * V; i++) cur[K * K + i] = G0 ? G0[bh * K * V + i] : 0;
        for (int64_t t = 0; t < TT;) {
            const int64_t at = (b * TT + t) * H + h, at1 = at + H; /* tokens t and t + 1 */
            if (ckH && t % C == 0) { /* the state before t */
                memcpy(ckH + (bh * N + t / C) * K * K, cur, sizeof(T) * K * K);
                memcpy(ckG + (bh * N + t / C) * K * V, cur + K * K, sizeof(T) * K * V);
            }
            NAME(update)(K, V, EXP(g[at]), beta[at], k + at * K, v + at * V, cur, cur + K * K, cur, cur + K * K, kb);
            if (t + 1 < TT && steps >= 0) { /* two tokens' solves in lockstep: H_t in cur, H_{t+1} in next */
                if (ckH && (t + 1) % C == 0) {
                    memcpy(ckH + (bh * N + (t + 1) / C) * K * K, cur, sizeof(T) * K * K);
                    memcpy(ckG + (bh * N + (t + 1) / C) * K * V, cur + K * K, sizeof(T) * K * V);
                }
                NAME(update)(K, V, EXP(g[at1]), beta[at1], k + at1 * K, v + at1 * V, cur, cur + K * K, next,
                             next + K * K, kb);
                NAME(cg2)(K, steps, cur, next, lam, q + at * K, q + at1 * K, x, x1, work);
                NAME(read)(K, V, cur + K * K, x, o + at * V);
                NAME(read)(K, V, next + K * K, x1, o + at1 * V);
                if (xs) {
                    memcpy(xs + at * K, x, sizeof(T) * K);
                    memcpy(xs + at1 * K, x1, sizeof(T) * K);
                }
                T *done = next;
                next = cur;
                cur = done;
                t += 2;
            } else {
                NAME(solve)(K, steps, cur, lam, q + at * K, x, L, work);
                NAME(read)(K, V, cur + K * K, x, o + at * V);
                if (xs) memcpy(xs + at * K, x, sizeof(T) * K);
                t += 1;
            }
        }
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) Hf[bh * K * K + j * K + i] = cur[i * K + j];
        memcpy(Gf + bh * K * V, cur + K * K, sizeof(T) * K * V);
    }
    free(buf);
}

/* one token's gradients, with w = A_t^-1 (G_t do_t) solved (see the top): E = later E + x do^T, then
   e = E v, E^T k, <E, G_{t-1}>; D = later D - x w^T, then u = D k + D^T k, <D, Ht_{t-1}>; `later`
   becomes gamma_t; u, e: K scratch each */
static inline void NAME(token_back)(int64_t K, int64_t V, const T *restrict x, const T *restrict w,
                                    const T *restrict dy, const T *restrict kt, const T *restrict vt, T gamma, T bt,
                                    const T *restrict Hp, const T *restrict Gp, T *restrict D, T *restrict E,
                                    T *later, T *restrict dl, T *restrict dk, T *restrict dvt, T *dbeta, T *dg,
                                    T *restrict u, T *restrict e) {
    const T l = *later;
    T dgamma = 0, dbt = 0;
    for (int64_t j = 0; j < V; j++) dvt[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        T *restrict Ei = E + i * V;
        const T *restrict Gpi = Gp + i * V;
        const T xi = x[i], ki = kt[i];
        T row = 0, inner = 0;
#pragma omp simd reduction(+ : row, inner)
        for (int64_t j = 0; j < V; j++) {
            Ei[j] = l * Ei[j] + xi * dy[j];
            row += Ei[j] * vt[j];
            inner += Ei[j] * Gpi[j];
            dvt[j] += ki * Ei[j];
        }
        e[i] = row;
        dbt += ki * row;
        dgamma += inner;
    }
    for (int64_t j = 0; j < K; j++) u[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        T *restrict Di = D + i * K;
        const T *restrict Hpi = Hp + i * K;
        const T xi = x[i], ki = kt[i];
        dl[i] -= w[i] * xi;
        T row = 0, inner = 0;
#pragma omp simd reduction(+ : row, inner)
        for (int64_t j = 0; j < K; j++) {
            Di[j] = l * Di[j] - xi * w[j];
            row += Di[j] * kt[j];
            inner += Di[j] * Hpi[j];
            u[j] += ki * Di[j];
        }
        u[i] += row;
        dbt += ki * row;
        dgamma += inner;
    }
    for (int64_t j = 0; j < V; j++) dvt[j] *= bt;
    for (int64_t i = 0; i < K; i++) dk[i] = bt * (u[i] + e[i]);
    *dbeta = dbt;
    *dg = gamma * dgamma;
    *later = gamma; /* D, E *= gamma_t: in the next (earlier) token's passes */
}

void NAME(backward)(int64_t TT, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t steps,
                    int64_t C, const T *k, const T *v, const T *g, const T *beta, const T *lamb,
                    const T *xs, const T *ckH, const T *ckG, const T *dout, const T *dHf, const T *dGf, T *dq, T *dk,
                    T *dv, T *dg, T *dbeta, T *dlamb, T *dH0, T *dG0) {
    const int64_t N = (TT + C - 1) / C, S = K * K + K * V; /* a scratch state: Ht then G */
    T *states = malloc(sizeof(T) * ((C + 1) * S + K * K + K * K + K * V + 11 * K));
    T *L = states + (C + 1) * S, *D = L + K * K, *E = D + K * K, *dx = E + K * V, *dx1 = dx + K, *u = dx1 + K,
      *e = u + K, *work = e + K;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const T *lam = lamb + h * K;
        T *dl = dlamb + bh * K;
        for (int64_t i = 0; i < K; i++) dl[i] = 0;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) D[i * K + j] = dHf ? dHf[bh * K * K + j * K + i] : 0;
        for (int64_t i = 0; i < K * V; i++) E[i] = dGf ? dGf[bh * K * V + i] : 0;
        T later = 1; /* the decay of the token after, not yet applied to D and E */
        for (int64_t c = N - 1; c >= 0; c--) {
            const int64_t t0 = c * C, n = (TT - t0 < C) ? TT - t0 : C;
            memcpy(states, ckH + (bh * N + c) * K * K, sizeof(T) * K * K);
            memcpy(states + K * K, ckG + (bh * N + c) * K * V, sizeof(T) * K * V);
            for (int64_t m = 0; m < n; m++) { /* states[m + 1]: after token t0 + m */
                const int64_t at = (b * TT + t0 + m) * H + h;
                T *prev = states + m * S, *next = prev + S;
                NAME(update)(K, V, EXP(g[at]), beta[at], k + at * K, v + at * V, prev, prev + K * K, next,
                             next + K * K, u);
            }
            for (int64_t m = n - 1; m >= 0;) { /* tokens m and m - 1 solved together where CG */
                const int64_t pair = (m >= 1 && steps >= 0) ? 2 : 1;
                for (int64_t p = 0; p < pair; p++) { /* dx = G_t do_t */
                    const T *G = states + (m - p + 1) * S + K * K, *dy = dout + ((b * TT + t0 + m - p) * H + h) * V;
                    for (int64_t i = 0; i < K; i++) (p ? dx1 : dx)[i] = NAME(dot)(V, G + i * V, dy);
                }
                const int64_t at = (b * TT + t0 + m) * H + h, at1 = at - H;
                if (pair == 2)
                    NAME(cg2)(K, steps, states + (m + 1) * S, states + m * S, lam, dx, dx1, dq + at * K, dq + at1 * K,
                              work);
                else
                    NAME(solve)(K, steps, states + (m + 1) * S, lam, dx, dq + at * K, L, work);
                for (int64_t p = 0; p < pair; p++) {
                    const int64_t a = at - p * H;
                    const T *Hp = states + (m - p) * S;
                    NAME(token_back)(K, V, xs + a * K, dq + a * K, dout + a * V, k + a * K, v + a * V, EXP(g[a]),
                                     beta[a], Hp, Hp + K * K, D, E, &later, dl, dk + a * K, dv + a * V, dbeta + a,
                                     dg + a, u, e);
                }
                m -= pair;
            }
        }
#pragma omp simd
        for (int64_t i = 0; i < K * K; i++) D[i] *= later;
#pragma omp simd
        for (int64_t i = 0; i < K * V; i++) E[i] *= later;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) dH0[bh * K * K + j * K + i] = D[i * K + j];
        memcpy(dG0 + bh * K * V, E, sizeof(T) * K * V);
    }
    free(states);
}

#endif
