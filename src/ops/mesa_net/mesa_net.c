/* MesaNet on the CPU, one group of tokens at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, gamma_t = exp(g_t), the states and the solve of reference.py:
       H_t = gamma_t H_{t-1} + beta_t k_t k_t^T,   G_t = gamma_t G_{t-1} + beta_t k_t v_t^T,
       x_t = (H_t + diag(lambda))^-1 q_t,          o_t = G_t^T x_t
   `steps` >= 0: fla's conjugate gradient from 0 (cg.py's iteration, its eps 1e-5 in both
   denominators), on a group of n <= GROUP tokens in lockstep whose systems share the state S
   before the group: the state after its token j (j = 0 .. n - 1) is
       H_j = c_j S + sum_{i <= j} w_ji k_i k_i^T,   c_j = prod_{l <= j} gamma_l,
       w_ji = beta_i prod_{i < l <= j} gamma_l   (G_j alike with k_i v_i^T)
   so a CG step's products A_j p_j = c_j S p_j + sum_i w_ji (k_i . p_j) k_i + lambda * p_j read S's
   rows once for all n systems (a row load feeds n multiply-adds; a loop that formed every
   token's state, one before this, was bound by its products' loads), the read is
   o_j = c_j S_G^T x_j + sum_i w_ji (k_i . x_j) v_i, and the state moves on once a group, a rank-n
   update in one pass. steps < 0: exact, by a Cholesky factorisation of the upper triangle of the
   state formed at every token (the states are symmetric: a non-symmetric initial state is refused
   in cpu.py). The loop keeps H transposed (Ht = H^T, row i the column i of H), so that H p is a
   sum of Ht's rows scaled by p (one vectorised pass over the 16 KB state, in L1 at K 64), as
   reference.py's A @ p; and the symmetric update of Ht is H's.
   Layouts as the op's: q, k (B, T, H, K), v, o (B, T, H, V), g, beta (B, T, H), lamb (H, K), states
   H (B, H, K, K), G (B, H, K, V); a call does heads [h0, h1) of the B H heads (threads take disjoint
   ranges). The products are ../_cpu/blocked.h's gemm: the n systems' p_j are the rows of its A,
   so each row of the state it loads feeds all n of them. The forward saves x_t (B, T, H, K) and
   the states before tokens 0, C, 2C, ... (ckH (B, H, ceil(T / C), K, K) as Ht, ckG alike; no
   group crosses one of them) when the backward will need them.

   The backward walks the segments of C tokens from the last: it recomputes the segment's states
   from its checkpoint into a scratch of C + 1 states and then, against time (groups of tokens
   solved as the forward's), with D and E the gradients of Ht_t and G_t (from the final states'
   gradients, transposed for Ht):
       E += x_t do_t^T;   w = A_t^-1 (G_t do_t)  (the same solve: fla's implicit gradient for CG);
       dq_t = w;   dlambda -= w * x_t;   D -= x_t w^T   (dL/dA_t = -w x_t^T, transposed);
       u = (D + D^T) k_t,  e = E v_t:   dk_t = beta_t (u + e),  dbeta_t = k_t . (D k_t + e),
       dv_t = beta_t E^T k_t,   dg_t = gamma_t (<D, Ht_{t-1}> + <E, G_{t-1}>);   D, E *= gamma_t
   and the initial states' gradients are D^T and E at the start. The decay by gamma_t is applied in
   the passes of token t - 1, which read and write D and E anyway (one pass over each a token).
   dlamb (B, H, K) per batch row (summed over B in cpu.py). ../_cpu/dtypes.h compiles it once per
   dtype. */

#ifndef T
#define SOURCE "../mesa_net/mesa_net.c"
#define PREFIX mesa_net
#include "../_cpu/dtypes.h"

#else

#include "../_cpu/blocked.h"

#define GROUP 4 /* tokens solved in lockstep on one state: gemm's block of 4 rows */

/* y (n) = a x + sum_{i < m} f_i z_i (+ lam * d where lam is not NULL; x may be y): a vector of y at
   a time, summed in a register; returns y . d, or 0 where d is NULL */
static inline T NAME(combine)(int64_t n, T a, const T *x, int64_t m, const T *f, const T *const *z, const T *lam,
                              const T *d, T *y) {
    NAME(vec) yd = {0};
    int64_t e = 0;
    for (; e + LANES_N <= n; e += LANES_N) {
        NAME(vec) acc = a * NAME(load)(x + e);
        for (int64_t i = 0; i < m; i++) acc += f[i] * NAME(load)(z[i] + e);
        if (lam) acc += NAME(load)(lam + e) * NAME(load)(d + e);
        memcpy(y + e, &acc, sizeof acc);
        if (d) yd += acc * NAME(load)(d + e);
    }
    T dot = d ? NAME(hsum)(yd) : 0;
    for (; e < n; e++) {
        T acc = a * x[e];
        for (int64_t i = 0; i < m; i++) acc += f[i] * z[i][e];
        if (lam) acc += lam[e] * d[e];
        y[e] = acc;
        if (d) dot += acc * d[e];
    }
    return dot;
}

/* x += alpha p, r -= alpha Ap (n); returns r . r */
static inline T NAME(step)(int64_t n, T alpha, const T *restrict p, const T *restrict Ap, T *restrict x,
                           T *restrict r) {
    NAME(vec) rr = {0};
    int64_t e = 0;
    for (; e + LANES_N <= n; e += LANES_N) {
        const NAME(vec) xe = NAME(load)(x + e) + alpha * NAME(load)(p + e);
        const NAME(vec) re = NAME(load)(r + e) - alpha * NAME(load)(Ap + e);
        memcpy(x + e, &xe, sizeof xe);
        memcpy(r + e, &re, sizeof re);
        rr += re * re;
    }
    T dot = NAME(hsum)(rr);
    for (; e < n; e++) {
        x[e] += alpha * p[e];
        r[e] -= alpha * Ap[e];
        dot += r[e] * r[e];
    }
    return dot;
}

/* the coefficients of the states after each of a group's n tokens on the state before it (the top):
   g, beta the group's first rows (its tokens `stride` apart) */
static void NAME(coefficients)(int64_t n, const T *g, const T *beta, int64_t stride, T c[GROUP],
                               T w[GROUP][GROUP]) {
    for (int64_t j = 0; j < n; j++) {
        const T gamma = EXP(g[j * stride]);
        c[j] = j ? gamma * c[j - 1] : gamma;
        for (int64_t i = 0; i < j; i++) w[j][i] = gamma * w[j - 1][i];
        w[j][j] = beta[j * stride];
    }
}

/* the states after a group's token j (coefficients c = c_j, w = w_j) from the ones before it, Hp
   and Gp (in place where the same): Ht = c Ht' + sum_i w_i k_i k_i^T, G = c G' + sum_i (w_i k_i) v_i^T;
   kw: (GROUP, K) scratch */
static inline void NAME(advance)(int64_t K, int64_t V, int64_t n, T c, const T *w, const T *const *ks,
                                 const T *const *vs, const T *Hp, const T *Gp, T *Ht, T *G, T *restrict kw) {
    const T *kws[GROUP];
    for (int64_t i = 0; i < n; i++) {
        kws[i] = kw + i * K;
        for (int64_t r = 0; r < K; r++) kw[i * K + r] = w[i] * ks[i][r];
    }
    for (int64_t r = 0; r < K; r++) {
        T kr[GROUP], kwr[GROUP];
        for (int64_t i = 0; i < n; i++) kr[i] = ks[i][r], kwr[i] = kw[i * K + r];
        NAME(combine)(K, c, Hp + r * K, n, kr, kws, NULL, NULL, Ht + r * K);
        NAME(combine)(V, c, Gp + r * V, n, kwr, vs, NULL, NULL, G + r * V);
    }
}

/* `steps` CG steps from 0 on a group's n systems A_j = c_j S + sum_{i <= j} w_ji k_i k_i^T +
   diag(lam), right-hand sides b_j, into x_j (cg.py's iteration). A step's vector work is phases
   (the dots k_i . p_j; A p_j and p_j . A p_j; x_j, r_j and r_j . r_j; p_j), each over all systems
   before the next: a system's step is a chain of dependent reductions and divisions, and the
   other systems' links fill its waits (system after system, the forward took 1.10x as long at
   T 1024); work: 3 GROUP K, the rows of p_j (and of A p_j) 3 K apart, as gemm's A (and C) */
static void NAME(cg_group)(int64_t K, int64_t steps, int64_t n, const T *restrict Ht, const T *restrict lam,
                           const T *const *ks, const T c[GROUP], const T w[GROUP][GROUP], const T *const *b,
                           T *const *x, T *restrict work) {
    const T eps = (T)1e-5;
    T *r[GROUP], *p[GROUP], *Ap[GROUP], d[GROUP];
    for (int64_t s = 0; s < n; s++) {
        r[s] = work + 3 * s * K, p[s] = r[s] + K, Ap[s] = p[s] + K;
        for (int64_t i = 0; i < K; i++) {
            x[s][i] = 0;
            r[s][i] = p[s][i] = b[s][i];
        }
        d[s] = NAME(dot)(K, r[s], r[s]);
    }
    for (int64_t step = 0; step < steps; step++) {
        NAME(gemm)(n, K, K, 1, p[0], 3 * K, 1, Ht, K, Ap[0], 3 * K, 0); /* Ap_s = S p_s (S^T = Ht) */
        T kp[GROUP][GROUP], alpha[GROUP], nr[GROUP];
        for (int64_t s = 0; s < n; s++)
            for (int64_t i = 0; i <= s; i++) kp[s][i] = w[s][i] * NAME(dot)(K, ks[i], p[s]);
        for (int64_t s = 0; s < n; s++)
            alpha[s] = d[s] / (NAME(combine)(K, c[s], Ap[s], s + 1, kp[s], ks, lam, p[s], Ap[s]) + eps);
        for (int64_t s = 0; s < n; s++) nr[s] = NAME(step)(K, alpha[s], p[s], Ap[s], x[s], r[s]);
        for (int64_t s = 0; s < n; s++) {
            T *restrict rs = r[s], *restrict ps = p[s];
            const T ratio = nr[s] / (d[s] + eps);
#pragma omp simd
            for (int64_t e = 0; e < K; e++) ps[e] = rs[e] + ratio * ps[e];
            d[s] = nr[s];
        }
    }
}

/* x = (Ht + diag(lam))^-1 b exactly, Ht a formed state: A = U^T U, U upper (K, K) in L: row j of U
   is column j of the factor, formed by axpys over the trailing rows (no reductions); A's upper
   triangle is Ht's. The axpys start at the vector boundary at or below column j + 1, not at the
   diagonal: whole vectors, no remainders; what they write left of a row's diagonal (Ht's lower
   triangle, copied) is never read as U */
static void NAME(cholesky)(int64_t K, const T *restrict Ht, const T *restrict lam, const T *restrict b,
                           T *restrict x, T *restrict L) {
    memcpy(L, Ht, sizeof(T) * K * K);
    for (int64_t i = 0; i < K; i++) L[i * K + i] += lam[i];
    for (int64_t j = 0; j < K; j++) {
        T *restrict Uj = L + j * K;
        Uj[j] = SQRT(Uj[j]);
        const T inv = 1 / Uj[j];
#pragma omp simd
        for (int64_t m = j + 1; m < K; m++) Uj[m] *= inv;
        const int64_t m0 = (j + 1) / LANES_N * LANES_N;
        if (K % LANES_N == 0) /* a vector of row j at a time, down the trailing rows */
            for (int64_t m = m0; m < K; m += LANES_N) {
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
}

/* o_j = G_j^T x_j for a group's n tokens (the top) from the state S_G (K, V) before it; x_j, o_j
   rows ldx, ldo apart */
static void NAME(read)(int64_t K, int64_t V, int64_t n, const T *G, const T *const *ks, const T *const *vs,
                       const T c[GROUP], const T w[GROUP][GROUP], const T *x, int64_t ldx, T *o, int64_t ldo) {
    NAME(gemm)(n, V, K, 1, x, ldx, 1, G, V, o, ldo, 0);
    for (int64_t s = 0; s < n; s++) {
        T kx[GROUP];
        for (int64_t i = 0; i <= s; i++) kx[i] = w[s][i] * NAME(dot)(K, ks[i], x + s * ldx);
        NAME(combine)(V, c[s], o + s * ldo, s + 1, kx, vs, NULL, NULL, o + s * ldo);
    }
}

void NAME(forward)(int64_t TT, int64_t H, int64_t K, int64_t V, int64_t h0, int64_t h1, int64_t steps,
                   int64_t C, const T *q, const T *k, const T *v, const T *g, const T *beta, const T *lamb,
                   const T *H0, const T *G0, T *o, T *Hf, T *Gf, T *xs, T *ckH, T *ckG) {
    const int64_t N = (TT + C - 1) / C, S = K * K + K * V; /* a state: Ht then G */
    T *buf = malloc(sizeof(T) * (S + K * K + 5 * GROUP * K));
    T *L = buf + S, *xb = L + K * K, *kw = xb + GROUP * K, *work = kw + GROUP * K;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const T *lam = lamb + h * K;
        T *Ht = buf, *G = buf + K * K; /* the states before the next token */
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) Ht[i * K + j] = H0 ? H0[bh * K * K + j * K + i] : 0;
        for (int64_t i = 0; i < K * V; i++) G[i] = G0 ? G0[bh * K * V + i] : 0;
        for (int64_t t = 0; t < TT;) {
            const int64_t at = (b * TT + t) * H + h; /* the group's first token */
            if (ckH && t % C == 0) { /* the states before t */
                memcpy(ckH + (bh * N + t / C) * K * K, Ht, sizeof(T) * K * K);
                memcpy(ckG + (bh * N + t / C) * K * V, G, sizeof(T) * K * V);
            }
            const int64_t n = steps < 0 ? 1 : GROUP < TT - t && GROUP < C - t % C ? GROUP
                              : TT - t < C - t % C                               ? TT - t
                                                                                 : C - t % C;
            T c[GROUP], w[GROUP][GROUP];
            const T *ks[GROUP], *vs[GROUP], *qs[GROUP];
            T *x[GROUP];
            const int64_t ldx = xs ? H * K : K; /* the solutions' rows: xs's, or the scratch's */
            NAME(coefficients)(n, g + at, beta + at, H, c, w);
            for (int64_t i = 0; i < n; i++) {
                ks[i] = k + (at + i * H) * K, vs[i] = v + (at + i * H) * V, qs[i] = q + (at + i * H) * K;
                x[i] = (xs ? xs + at * K : xb) + i * ldx;
            }
            if (steps >= 0) {
                NAME(cg_group)(K, steps, n, Ht, lam, ks, c, w, qs, x, work);
                NAME(read)(K, V, n, G, ks, vs, c, w, x[0], ldx, o + at * V, H * V);
                NAME(advance)(K, V, n, c[n - 1], w[n - 1], ks, vs, Ht, G, Ht, G, kw);
            } else { /* the token's states formed, then solved and read (no terms on them) */
                NAME(advance)(K, V, 1, c[0], w[0], ks, vs, Ht, G, Ht, G, kw);
                NAME(cholesky)(K, Ht, lam, qs[0], x[0], L);
                const T formed[GROUP] = {1}, none[GROUP][GROUP] = {{0}};
                NAME(read)(K, V, 1, G, ks, vs, formed, none, x[0], ldx, o + at * V, H * V);
            }
            t += n;
        }
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) Hf[bh * K * K + j * K + i] = Ht[i * K + j];
        memcpy(Gf + bh * K * V, G, sizeof(T) * K * V);
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
    T *states = malloc(sizeof(T) * ((C + 1) * S + 2 * K * K + K * V + (4 * GROUP + 2) * K));
    T *L = states + (C + 1) * S, *D = L + K * K, *E = D + K * K, *dx = E + K * V, *u = dx + GROUP * K, *e = u + K,
      *work = e + K;
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
                const T *km = k + at * K, *vm = v + at * V;
                T *prev = states + m * S;
                const T gamma = EXP(g[at]), bt = beta[at];
                NAME(advance)(K, V, 1, gamma, &bt, &km, &vm, prev, prev + K * K, prev + S, prev + S + K * K, u);
            }
            for (int64_t m = n - 1; m >= 0;) { /* the group of tokens m - size + 1 .. m */
                const int64_t size = steps < 0 ? 1 : m + 1 < GROUP ? m + 1 : GROUP, m0 = m - size + 1;
                const int64_t a0 = (b * TT + t0 + m0) * H + h;
                const T *ks[GROUP], *bs[GROUP];
                T *x[GROUP];
                for (int64_t j = 0; j < size; j++) { /* dx = G_t do_t */
                    const int64_t a = a0 + j * H;
                    const T *G = states + (m0 + j + 1) * S + K * K, *dy = dout + a * V;
                    for (int64_t i = 0; i < K; i++) dx[j * K + i] = NAME(dot)(V, G + i * V, dy);
                    ks[j] = k + a * K, bs[j] = dx + j * K, x[j] = dq + a * K;
                }
                if (steps >= 0) {
                    T cs[GROUP], w[GROUP][GROUP];
                    NAME(coefficients)(size, g + a0, beta + a0, H, cs, w);
                    NAME(cg_group)(K, steps, size, states + m0 * S, lam, ks, cs, w, bs, x, work);
                } else
                    NAME(cholesky)(K, states + (m + 1) * S, lam, dx, dq + a0 * K, L);
                for (int64_t j = size - 1; j >= 0; j--) {
                    const int64_t a = a0 + j * H;
                    const T *Hp = states + (m0 + j) * S;
                    NAME(token_back)(K, V, xs + a * K, dq + a * K, dout + a * V, k + a * K, v + a * V, EXP(g[a]),
                                     beta[a], Hp, Hp + K * K, D, E, &later, dl, dk + a * K, dv + a * V, dbeta + a,
                                     dg + a, u, e);
                }
                m -= size;
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
