/* The sLSTM cell on the CPU, one token at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head (d units), r = x_t + bias + h_{t-1} R (x_t (4, d) the input's gate preactivations,
   R (d, 4 d) the head's recurrent block, gates [i, f, z, o]), then per unit
       L = logsigmoid(r_f) + m_{t-1},  m_t = max(L, r_i),  i = exp(r_i - m_t),  f = exp(L - m_t)
       c_t = f c_{t-1} + i tanh(r_z),  n_t = f n_{t-1} + i,  h_t = sigmoid(r_o) c_t / n_t
   (as reference.py). Layouts: x (B, T, 4, H, d), the bias (4, H, d), R (H, d, 4, d), states
   (B, H, d), outputs and the saved c, n, m (B, T, H, d), the saved r (B, T, 4, H, d). A call does
   heads [h0, h1) (threads take disjoint ranges); a head steps its B batch rows together: the
   matvec r_b += h_b R (d x 4 d multiply-adds a row and step) goes four rows at a time, a block of
   R's columns (64 bytes) at a time, the four rows' partial sums in registers while R's d rows
   stream past once for the four; then the pointwise gates, vectorised over the units.

   The backward walks the steps back from the saved r, c, n, m (no recomputation but the gates'
   pointwise functions): per unit the chain rule through the lines above (a tie r_i = L splits the
   gradient of the max in halves, as torch's maximum does), then dh_{t-1}[k] = R[k, :] . dr and
   dR[k, :] += h_{t-1}[k] dr, row b by row b. exp: ../_cpu/exp_float.h in float32, and
   log1p and tanh from it (below); libm in float64. The file includes itself once per dtype. */

#ifndef T
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_cpu/exp_float.h"

/* log(1 + u) for u in [0, 1] in float32, branch-free (the loops over it vectorise): with
   s = u / (2 + u) in [0, 1/3], log(1 + u) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^13/13), truncated
   below 1e-8 relative; no cancellation at small u. */
static inline float log1p_unit_float(float u) {
    const float s = u / (2.0f + u), s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return 2.0f * s * p;
}

/* tanh(x) in float32 from exp_float, branch-free: sign(x) (1 - e) / (1 + e), e = exp(-2 |x|)
   (absolute error ~1e-7 near 0, where 1 - e cancels). */
static inline float tanh_float(float x) {
    const float e = exp_float(-2.0f * (x < 0 ? -x : x)), t = (1.0f - e) / (1.0f + e);
    return x < 0 ? -t : t;
}

static inline double log1p_unit_double(double u) { return log1p(u); }

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define T float
#define EXP exp_float
#define LOG1P log1p_unit_float
#define TANH tanh_float
#define NAME(x) CAT(slstm_float32_, x)
#include "slstm.c"
#undef T
#undef EXP
#undef LOG1P
#undef TANH
#undef NAME

#define T double
#define EXP exp
#define LOG1P log1p_unit_double
#define TANH tanh
#define NAME(x) CAT(slstm_float64_, x)
#include "slstm.c"

#else

static inline T NAME(sigmoid)(T x) { return (T)1 / ((T)1 + EXP(-x)); }

static inline T NAME(logsigmoid)(T x) { return (x < 0 ? x : (T)0) - LOG1P(EXP(x < 0 ? x : -x)); }

/* r[b] (4 d) = x[b, t, :, head, :] + bias[:, head, :] for the rows b < B (x_t (4, H, d) with stride
   `sb` between rows; bias (4, H, d)) */
static void NAME(inputs)(int64_t B, int64_t H, int64_t d, int64_t sb, const T *xt, const T *bias, T *r) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < 4; g++)
            for (int64_t j = 0; j < d; j++) r[(b * 4 + g) * d + j] = xt[b * sb + g * H * d + j] + bias[g * H * d + j];
}

#define LANES (64 / (int64_t)sizeof(T))
typedef T NAME(vec) __attribute__((vector_size(64), aligned(sizeof(T))));

/* r_b[q] += sum_k h_b[k] R[k, q] on the columns [q0, q0 + LANES) for four rows b (h_b at h + b sh,
   r_b at r + b 4 d), their partial sums in registers over the d rows of R */
static inline void NAME(block4)(int64_t d, int64_t q0, const T *R, const T *h, int64_t sh, T *r) {
    const int64_t D4 = 4 * d;
    NAME(vec) a0 = *(const NAME(vec) *)(r + q0), a1 = *(const NAME(vec) *)(r + D4 + q0);
    NAME(vec) a2 = *(const NAME(vec) *)(r + 2 * D4 + q0), a3 = *(const NAME(vec) *)(r + 3 * D4 + q0);
    for (int64_t k = 0; k < d; k++) {
        const NAME(vec) Rk = *(const NAME(vec) *)(R + k * D4 + q0);
        a0 += h[k] * Rk;
        a1 += h[sh + k] * Rk;
        a2 += h[2 * sh + k] * Rk;
        a3 += h[3 * sh + k] * Rk;
    }
    *(NAME(vec) *)(r + q0) = a0;
    *(NAME(vec) *)(r + D4 + q0) = a1;
    *(NAME(vec) *)(r + 2 * D4 + q0) = a2;
    *(NAME(vec) *)(r + 3 * D4 + q0) = a3;
}

/* the same for one row */
static inline void NAME(block1)(int64_t d, int64_t q0, const T *R, const T *h, T *r) {
    NAME(vec) a = *(const NAME(vec) *)(r + q0);
    for (int64_t k = 0; k < d; k++) a += h[k] * *(const NAME(vec) *)(R + k * 4 * d + q0);
    *(NAME(vec) *)(r + q0) = a;
}

/* r_b += h_b R (R (d, 4 d)) for the rows b < B: four rows at a time (then one), column block by
   column block in registers (each R row read once for the four), the columns past the last full
   block one by one */
static void NAME(matvec)(int64_t B, int64_t d, const T *R, const T *h, int64_t sh, T *r) {
    const int64_t D4 = 4 * d, full = D4 - D4 % LANES;
    int64_t b = 0;
    for (; b + 4 <= B; b += 4)
        for (int64_t q = 0; q < full; q += LANES) NAME(block4)(d, q, R, h + b * sh, sh, r + b * D4);
    for (; b < B; b++)
        for (int64_t q = 0; q < full; q += LANES) NAME(block1)(d, q, R, h + b * sh, r + b * D4);
    for (b = 0; b < B; b++)
        for (int64_t q = full; q < D4; q++) {
            T acc = r[b * D4 + q];
            for (int64_t k = 0; k < d; k++) acc += h[b * sh + k] * R[k * D4 + q];
            r[b * D4 + q] = acc;
        }
}

void NAME(forward)(int64_t B, int64_t Tn, int64_t H, int64_t d, int64_t h0, int64_t h1, const T *x, const T *bias,
                   const T *R, const T *sh, const T *sc, const T *sn, const T *sm, T *y, T *cs, T *ns, T *ms, T *rs,
                   T *hT, T *cT, T *nT, T *mT) {
    const int64_t D4 = 4 * d, sb = Tn * 4 * H * d;         /* x's row stride */
    T *work = malloc(sizeof(T) * B * (D4 + 4 * d));         /* per row: r (4 d), h, c, n, m (d each) */
    for (int64_t head = h0; head < h1; head++) {
        const T *Rh = R + head * d * D4;
        for (int64_t b = 0; b < B; b++) {
            T *s = work + B * D4 + b * 4 * d; /* h, c, n, m of row b */
            const int64_t o = (b * H + head) * d;
            for (int64_t j = 0; j < d; j++) {
                s[j] = sh ? sh[o + j] : 0;
                s[d + j] = sc ? sc[o + j] : 0;
                s[2 * d + j] = sn ? sn[o + j] : 0;
                s[3 * d + j] = sm ? sm[o + j] : -INFINITY;
            }
        }
        for (int64_t t = 0; t < Tn; t++) {
            NAME(inputs)(B, H, d, sb, x + t * 4 * H * d + head * d, bias + head * d, work);
            NAME(matvec)(B, d, Rh, work + B * D4, 4 * d, work);
            for (int64_t b = 0; b < B; b++) {
                const T *r = work + b * D4;
                T *h = work + B * D4 + b * 4 * d, *c = h + d, *n = c + d, *m = n + d;
                const int64_t o = ((b * Tn + t) * H + head) * d; /* (B, T, H, d) */
#pragma omp simd
                for (int64_t j = 0; j < d; j++) {
                    const T ri = r[j], L = NAME(logsigmoid)(r[d + j]) + m[j];
                    const T mt = L > ri ? L : ri;
                    const T ig = EXP(ri - mt), fg = EXP(L - mt);
                    c[j] = fg * c[j] + ig * TANH(r[2 * d + j]);
                    n[j] = fg * n[j] + ig;
                    m[j] = mt;
                    h[j] = NAME(sigmoid)(r[3 * d + j]) * c[j] / n[j];
                    y[o + j] = h[j];
                }
                if (rs) { /* saved for the backward */
                    memcpy(cs + o, c, d * sizeof(T));
                    memcpy(ns + o, n, d * sizeof(T));
                    memcpy(ms + o, m, d * sizeof(T));
                    for (int64_t g = 0; g < 4; g++)
                        memcpy(rs + b * sb + t * 4 * H * d + g * H * d + head * d, r + g * d, d * sizeof(T));
                }
            }
        }
        for (int64_t b = 0; b < B; b++) {
            const T *s = work + B * D4 + b * 4 * d;
            const int64_t o = (b * H + head) * d;
            memcpy(hT + o, s, d * sizeof(T));
            memcpy(cT + o, s + d, d * sizeof(T));
            memcpy(nT + o, s + 2 * d, d * sizeof(T));
            memcpy(mT + o, s + 3 * d, d * sizeof(T));
        }
    }
    free(work);
}

/* The saved (B, T, H, d) tensor `s` at (b, t - 1, head), or the initial state `s0` at t = 0
   (NULL: `none`); written into `out` (d). */
static inline void NAME(previous)(const T *s, const T *s0, T none, int64_t Tn, int64_t H, int64_t d, int64_t b,
                                  int64_t t, int64_t head, T *out) {
    if (t > 0) {
        memcpy(out, s + ((b * Tn + t - 1) * H + head) * d, d * sizeof(T));
    } else if (s0) {
        memcpy(out, s0 + (b * H + head) * d, d * sizeof(T));
    } else {
        for (int64_t j = 0; j < d; j++) out[j] = none;
    }
}

void NAME(backward)(int64_t B, int64_t Tn, int64_t H, int64_t d, int64_t h0, int64_t h1, const T *R, const T *sh,
                    const T *sc, const T *sn, const T *sm, const T *y, const T *cs, const T *ns, const T *ms,
                    const T *rs, const T *dy, const T *dhT, const T *dcT, const T *dnT, const T *dmT, T *dx, T *dR,
                    T *dh0, T *dc0, T *dn0, T *dm0) {
    const int64_t D4 = 4 * d, sb = Tn * 4 * H * d;
    /* per row: dr (4 d); the carried dh, dc, dn, dm (d each); h_{t-1}, c_{t-1}, n_{t-1}, m_{t-1} (d each) */
    T *work = malloc(sizeof(T) * B * (D4 + 8 * d));
    for (int64_t head = h0; head < h1; head++) {
        T *dRh = dR + head * d * D4;
        const T *Rh = R + head * d * D4;
        memset(dRh, 0, d * D4 * sizeof(T));
        for (int64_t b = 0; b < B; b++) {
            T *g = work + B * D4 + b * 8 * d;
            const int64_t o = (b * H + head) * d;
            for (int64_t j = 0; j < d; j++) {
                g[j] = dhT[o + j];
                g[d + j] = dcT[o + j];
                g[2 * d + j] = dnT[o + j];
                g[3 * d + j] = dmT[o + j];
            }
        }
        for (int64_t t = Tn - 1; t >= 0; t--) {
            for (int64_t b = 0; b < B; b++) {
                T *dr = work + b * D4, *dh = work + B * D4 + b * 8 * d, *dc = dh + d, *dn = dc + d, *dm = dn + d;
                T *hp = dm + d, *cp = hp + d, *np = cp + d, *mp = np + d;
                NAME(previous)(y, sh, 0, Tn, H, d, b, t, head, hp);
                NAME(previous)(cs, sc, 0, Tn, H, d, b, t, head, cp);
                NAME(previous)(ns, sn, 0, Tn, H, d, b, t, head, np);
                NAME(previous)(ms, sm, -INFINITY, Tn, H, d, b, t, head, mp);
                const int64_t o = ((b * Tn + t) * H + head) * d;
                const T *r = rs + b * sb + t * 4 * H * d + head * d; /* gate g at r[g H d + j] */
                T *dxt = dx + b * sb + t * 4 * H * d + head * d;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) {
                    const T ri = r[j], rf = r[H * d + j], rz = r[2 * H * d + j], ro = r[3 * H * d + j];
                    const T c = cs[o + j], n = ns[o + j], mt = ms[o + j];
                    const T og = NAME(sigmoid)(ro), zt = TANH(rz), L = NAME(logsigmoid)(rf) + mp[j];
                    const T ig = EXP(ri - mt), fg = EXP(L - mt);
                    const T dH = dy[o + j] + dh[j];
                    const T dC = dc[j] + dH * og / n, dN = dn[j] - dH * og * c / (n * n);
                    const T dfg = dC * cp[j] + dN * np[j], dig = dC * zt + dN;
                    const T dM = dm[j] - dig * ig - dfg * fg;
                    const T wi = ri > L ? (T)1 : (ri < L ? (T)0 : (T)0.5); /* the max's gradient to r_i */
                    const T dri = dig * ig + wi * dM, dL = dfg * fg + ((T)1 - wi) * dM;
                    dr[j] = dri;
                    dr[d + j] = dL * NAME(sigmoid)(-rf);
                    dr[2 * d + j] = dC * ig * (1 - zt * zt);
                    dr[3 * d + j] = dH * c / n * og * (1 - og);
                    dc[j] = dC * fg;
                    dn[j] = dN * fg;
                    dm[j] = dL;
                }
                for (int64_t g = 0; g < 4; g++) memcpy(dxt + g * H * d, dr + g * d, d * sizeof(T));
            }
            for (int64_t k = 0; k < d; k++) { /* dh_b[k] = R[k, :] . dr_b;  dR[k, :] += h_b[k] dr_b */
                const T *Rk = Rh + k * D4;
                T *dRk = dRh + k * D4;
                for (int64_t b = 0; b < B; b++) {
                    const T *dr = work + b * D4;
                    T *dh = work + B * D4 + b * 8 * d;
                    const T hk = dh[4 * d + k];
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t q = 0; q < D4; q++) {
                        s += Rk[q] * dr[q];
                        dRk[q] += hk * dr[q];
                    }
                    dh[k] = s;
                }
            }
        }
        for (int64_t b = 0; b < B; b++) {
            const T *g = work + B * D4 + b * 8 * d;
            const int64_t o = (b * H + head) * d;
            if (dh0) {
                memcpy(dh0 + o, g, d * sizeof(T));
                memcpy(dc0 + o, g + d, d * sizeof(T));
                memcpy(dn0 + o, g + 2 * d, d * sizeof(T));
                memcpy(dm0 + o, g + 3 * d, d * sizeof(T));
            }
        }
    }
    free(work);
}

#endif
