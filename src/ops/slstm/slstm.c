/* The sLSTM cell on the CPU, one token at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head (d units), r = x_t + h_{t-1} R (x_t (4, d) the input's gate preactivations with the
   bias added, R (d, 4 d) the head's recurrent block, gates [i, f, z, o]), then per unit
       L = logsigmoid(r_f) + m_{t-1},  m_t = max(L, r_i),  i = exp(r_i - m_t),  f = exp(L - m_t)
       c_t = f c_{t-1} + i tanh(r_z),  n_t = f n_{t-1} + i,  h_t = sigmoid(r_o) c_t / n_t
   (as reference.py). Layouts: x (B, T, 4, H, d), R (H, d, 4, d), states (B, H, d), outputs and
   the saved c, n, m (B, T, H, d), the saved r (B, T, 4, H, d). A call does heads [h0, h1) (threads
   take disjoint ranges); a head steps its B batch rows together, so that each row of R (4 d
   values) is read once a step for all of them: r_b += h_b[k] R[k, :] for k < d (the matvec),
   d x 4 d multiply-adds a row and step, then the pointwise gates.

   The backward walks the steps back from the saved r, c, n, m (no recomputation but the gates'
   pointwise functions): per unit the chain rule through the lines above (a tie r_i = L splits the
   gradient of the max in halves, as torch's maximum does), then dh_{t-1}[k] = R[k, :] . dr and
   dR[k, :] += h_{t-1}[k] dr, for all rows b at once. exp: ../_cpu/exp_float.h in float32, libm
   in float64. The file includes itself once per dtype. */

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
#define LOG1P log1pf
#define TANH tanhf
#define NAME(x) CAT(slstm_float32_, x)
#include "slstm.c"
#undef T
#undef EXP
#undef LOG1P
#undef TANH
#undef NAME

#define T double
#define EXP exp
#define LOG1P log1p
#define TANH tanh
#define NAME(x) CAT(slstm_float64_, x)
#include "slstm.c"

#else

static inline T NAME(sigmoid)(T x) { return (T)1 / ((T)1 + EXP(-x)); }

static inline T NAME(logsigmoid)(T x) { return (x < 0 ? x : (T)0) - LOG1P(EXP(x < 0 ? x : -x)); }

/* r[b] (4 d) = x[b, t, :, head, :] for the rows b < B (x_t (4, H, d) with stride `sb` between rows) */
static void NAME(inputs)(int64_t B, int64_t H, int64_t d, int64_t sb, const T *xt, T *r) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < 4; g++)
            memcpy(r + (b * 4 + g) * d, xt + b * sb + g * H * d, d * sizeof(T));
}

void NAME(forward)(int64_t B, int64_t Tn, int64_t H, int64_t d, int64_t h0, int64_t h1, const T *x, const T *R,
                   const T *sh, const T *sc, const T *sn, const T *sm, T *y, T *cs, T *ns, T *ms, T *rs, T *hT,
                   T *cT, T *nT, T *mT) {
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
            NAME(inputs)(B, H, d, sb, x + t * 4 * H * d + head * d, work);
            for (int64_t k = 0; k < d; k++) { /* r_b += h_b[k] R[k, :] */
                const T *Rk = Rh + k * D4;
                for (int64_t b = 0; b < B; b++) {
                    T *r = work + b * D4;
                    const T hk = work[B * D4 + b * 4 * d + k];
#pragma omp simd
                    for (int64_t q = 0; q < D4; q++) r[q] += hk * Rk[q];
                }
            }
            for (int64_t b = 0; b < B; b++) {
                const T *r = work + b * D4;
                T *h = work + B * D4 + b * 4 * d, *c = h + d, *n = c + d, *m = n + d;
                const int64_t o = ((b * Tn + t) * H + head) * d; /* (B, T, H, d) */
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
                for (int64_t j = 0; j < d; j++) {
                    const T ri = r[j], rf = r[H * d + j], rz = r[2 * H * d + j], ro = r[3 * H * d + j];
                    const T c = cs[o + j], n = ns[o + j], mt = ms[o + j];
                    const T og = NAME(sigmoid)(ro), zt = TANH(rz), L = NAME(logsigmoid)(rf) + mp[j];
                    const T ig = EXP(ri - mt), fg = EXP(L - mt);
                    const T dH = dy[o + j] + dh[j];
                    const T dC = dc[j] + dH * og / n, dN = dn[j] - dH * og * c / (n * n);
                    const T dfg = dC * cp[j] + dN * np[j], dig = dC * zt + dN;
                    const T dM = dm[j] - dig * ig - dfg * fg;
                    T dri = dig * ig, dL = dfg * fg;
                    if (ri > L) {
                        dri += dM;
                    } else if (ri < L) {
                        dL += dM;
                    } else {
                        dri += dM / 2;
                        dL += dM / 2;
                    }
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
