/* TTT-MLP on the CPU, a mini-batch at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, a mini-batch of m tokens (rows t, s) from the inner MLP W1 (D, F), c1 (F), W2 (F, D),
   c2 (D) at its start, chunked.py's dual form, with gelu the tanh form and Mk_ts = -eta_t for
   s <= t (else 0):
       Z1 = K W1 + c1,  X2 = gelu(Z1),  Z2 = X2 W2 + c2,  g2 = LNG(Z2; k, v),  g1 = (g2 W2^T) * gelu'(Z1)
       G1 = diag(lr) g1,  G2 = diag(lr) g2
       Zq = Q W1 + c1 + A1 G1,  A1 = (Q K^T + 1) * Mk;   Q2 = gelu(Zq)
       out = Q2 W2 + c2 + A2 G2,  A2 = (Q2 X2^T + 1) * Mk
       whole: W1 -= eta_m K^T G1, c1 -= eta_m sum G1, W2 -= eta_m X2^T G2, c2 -= eta_m sum G2;
       partial last: the sums (K^T G1, sum G1, X2^T G2, sum G2)
   with LNG the inner layer norm's gradient (../_cpu/ln_l2_grad.h).

   The backward walks the mini-batches from the last with the gradients of the weights at the
   next one's start (the final state's; a partial last one's are the sums'), rebuilding each
   mini-batch's start weights from the next's (W2 += eta_m X2^T G2, then g1 from it, then
   W1^T += eta_m G1^T K) from the Z1, Z2, Zq the forward saved. With s = -eta_m (partial: 1):
       X = K dW1,  dG1 = s (X + dc1),  dK = s G1 dW1^T;  Xb = X2 dW2,  dG2 = s (Xb + dc2),  dX2 = s G2 dW2^T,
       deta_m -= sum (X + dc1) . G1 + (Xb + dc2) . G2;   then the readout, layer 2 and layer 1 alike:
       dQ2 = dout W2^T + dP2 X2,  dX2 += dP2^T Q2,  dW2 += Q2^T dout,  dA2 = dout G2^T,  dG2 += A2^T dout,
       dZq = dQ2 * gelu'(Zq),  dQ = dZq W1^T + dP1 K,  dK += dP1^T Q,  dW1 += Q^T dZq,  dA1 = dZq G1^T,
       dG1 += A1^T dZq,  deta_t -= sum_s dA_ts (P_ts + 1),  dP_ts = -eta_t dA_ts (each layer's);
       and the inner gradients: dlr = dG1 . g1 + dG2 . g2,  dg = lr dG,  dY = dg1 * gelu'(Z1),
       dg2 += dY W2,  dW2 += dY^T g2,  dZ2 through LNG,  dX2 += dZ2 W2^T,  dW2 += X2^T dZ2,
       dZ1 = dX2 * gelu'(Z1) + dg1 * Y * gelu''(Z1),  dK += dZ1 W1^T,  dW1 += K^T dZ1,
       the biases' gradients the rows' sums of their terms' (dout, dZq, dZ2, dZ1).

   Every product is ../_cpu/blocked.h's gemm (the weights, 64 KB each at D 64 and F 256, in L2).
   The forward saves, when the backward will need them, Z1s, Zqs (B, H, T, F), Z2s (B, H, T, D)
   and P1s, P2s (B, H, ceil(T / M), M, M), rows m apart. Layouts as the op's: q, k, v, out (B, T,
   H, D), eta, lr (B, T, H), w, b (H, D), W1 (B, H, D, F), c1 (B, H, F), W2 (B, H, F, D), c2 (B, H,
   D); a call does heads [h0, h1) of the B H. dw, db (B, H, D) per batch row (summed over B in
   cpu.py). ../_cpu/dtypes.h compiles it once per dtype. */

#ifndef T
#define SOURCE "../ttt/ttt_mlp.c"
#define PREFIX ttt_mlp
#include "../_cpu/dtypes.h"

#else

#include "../_cpu/blocked.h"
#include "../_cpu/ln_l2_grad.h"
#include "../_cpu/dual_form.h"

/* gelu's tanh form from one sigmoid (chunked._Gelu): u = c (x + a x^3), s = sigmoid(u), gelu = x s,
   gelu' = s + x s (1 - s) u', gelu'' = s (1 - s) (u' (2 + x (1 - 2 s) u') + 6 c a x^2); of n values,
   each output where its pointer is not NULL */
static void NAME(gelu)(int64_t n, const T *restrict x, T *restrict y, T *restrict d, T *restrict dd) {
    const T c = 1.5957691216057308, ca = c * 0.044715;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const T xi = x[i], u = xi * (c + ca * xi * xi), s = 1 / (1 + EXP(-u)), ds = s * (1 - s);
        const T du = c + 3 * ca * xi * xi;
        if (y) y[i] = xi * s;
        if (d) d[i] = s + xi * ds * du;
        if (dd) dd[i] = ds * (du * (2 + xi * (1 - 2 * s) * du) + 6 * ca * xi * xi);
    }
}

void NAME(forward)(int64_t TT, int64_t H, int64_t D, int64_t F, int64_t M, int64_t h0, int64_t h1,
                   double eps_, const T *q, const T *k, const T *v, const T *eta, const T *lr, const T *w,
                   const T *b, const T *W10, const T *c10, const T *W20, const T *c20, T *out, T *W1f, T *c1f,
                   T *W2f, T *c2f, T *GW1, T *Gc1, T *GW2, T *Gc2, T *Z1s, T *Z2s, T *Zqs, T *P1s, T *P2s) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + M - 1) / M;
    T *buf = malloc(sizeof(T) * (D * F + 6 * M * F + F * M + 5 * M * D + D * M + 4 * M * M + 2 * M + D));
    T *W2T = buf, *Z1 = W2T + D * F, *X2 = Z1 + M * F, *Dg = X2 + M * F, *G1 = Dg + M * F, *Zq = G1 + M * F;
    T *Q2 = Zq + M * F, *X2T = Q2 + M * F, *Z2 = X2T + F * M, *zh = Z2 + M * D, *h = zh + M * D, *g2 = h + M * D;
    T *G2 = g2 + M * D, *KT = G2 + M * D, *P1 = KT + D * M, *P2 = P1 + M * M, *A1 = P2 + M * M, *A2 = A1 + M * M;
    T *a = A2 + M * M, *inv = a + M, *w2 = inv + M;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *W1 = W1f + bh * D * F, *c1 = c1f + bh * F, *W2 = W2f + bh * F * D, *c2 = c2f + bh * D;
        memcpy(W1, W10 + bh * D * F, sizeof(T) * D * F);
        memcpy(c1, c10 + bh * F, sizeof(T) * F);
        memcpy(W2, W20 + bh * F * D, sizeof(T) * F * D);
        memcpy(c2, c20 + bh * D, sizeof(T) * D);
        memset(GW1 + bh * D * F, 0, sizeof(T) * D * F);
        memset(Gc1 + bh * F, 0, sizeof(T) * F);
        memset(GW2 + bh * F * D, 0, sizeof(T) * F * D);
        memset(Gc2 + bh * D, 0, sizeof(T) * D);
        for (int64_t n = 0; n < N; n++) {
            const int64_t t0 = n * M, m = TT - t0 < M ? TT - t0 : M, row = (bi * TT + t0) * SD + hi * D;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *etan = eta + row / D, *lrn = lr + row / D;
            T *outn = out + row, *P1n = P1s ? P1s + (bh * N + n) * M * M : P1;
            T *P2n = P2s ? P2s + (bh * N + n) * M * M : P2;
            /* the inner gradients */
            NAME(rows)(m, F, c1, Z1, F);
            NAME(gemm)(m, F, D, 1, kn, SD, 1, W1, F, Z1, F, 1);
            NAME(gelu)(m * F, Z1, X2, Dg, NULL);
            NAME(rows)(m, D, c2, Z2, D);
            NAME(gemm)(m, D, F, 1, X2, F, 1, W2, D, Z2, D, 1);
            for (int64_t s = 0; s < m; s++) {
                inv[s] = NAME(lng)(D, eps, Z2 + s * D, kn + s * SD, vn + s * SD, wh, bb, w2, zh + s * D, h + s * D,
                                   g2 + s * D, a + s);
#pragma omp simd
                for (int64_t j = 0; j < D; j++) G2[s * D + j] = lrn[s * H] * g2[s * D + j];
            }
            NAME(transpose)(F, D, W2, D, W2T);
            NAME(gemm)(m, F, D, 1, g2, D, 1, W2T, F, G1, F, 0);  /* g2 W2^T, then * gelu'(Z1) lr */
            for (int64_t s = 0; s < m; s++)
#pragma omp simd
                for (int64_t j = 0; j < F; j++) G1[s * F + j] *= lrn[s * H] * Dg[s * F + j];
            /* the readouts */
            NAME(readout)(m, D, F, qn, SD, kn, SD, W1, c1, G1, etan, H, KT, P1n, A1, Zq, F);
            NAME(gelu)(m * F, Zq, Q2, NULL, NULL);
            NAME(readout)(m, F, D, Q2, F, X2, F, W2, c2, G2, etan, H, X2T, P2n, A2, outn, SD);
            if (Z1s) {
                memcpy(Z1s + (bh * TT + t0) * F, Z1, sizeof(T) * m * F);
                memcpy(Zqs + (bh * TT + t0) * F, Zq, sizeof(T) * m * F);
                memcpy(Z2s + (bh * TT + t0) * D, Z2, sizeof(T) * m * D);
            }
            /* the step */
            const int64_t whole = m == M;
            const T scale = whole ? -etan[(m - 1) * H] : 1;
            T *dW1 = whole ? W1 : GW1 + bh * D * F, *dc1 = whole ? c1 : Gc1 + bh * F;
            T *dW2 = whole ? W2 : GW2 + bh * F * D, *dc2 = whole ? c2 : Gc2 + bh * D;
            NAME(gemm)(D, F, m, scale, kn, 1, SD, G1, F, dW1, F, 1);  /* K^T G1 */
            NAME(add_rows)(m, F, scale, G1, F, dc1);
            NAME(gemm)(F, D, m, scale, X2, 1, F, G2, D, dW2, D, 1);  /* X2^T G2 */
            NAME(add_rows)(m, D, scale, G2, D, dc2);
        }
    }
    free(buf);
}

void NAME(backward)(int64_t TT, int64_t H, int64_t D, int64_t F, int64_t M, int64_t h0, int64_t h1,
                    double eps_, const T *q, const T *k, const T *v, const T *eta, const T *lr, const T *w,
                    const T *b, const T *W1f, const T *W2f, const T *Z1s, const T *Z2s, const T *Zqs, const T *P1s,
                    const T *P2s, const T *dout, const T *dW1f, const T *dc1f, const T *dW2f, const T *dc2f,
                    const T *dGW1, const T *dGc1, const T *dGW2, const T *dGc2, T *dq, T *dk, T *dv, T *deta,
                    T *dlr, T *dw, T *db, T *dW10, T *dc10, T *dW20, T *dc20) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + M - 1) / M, DF = D * F;
    T *buf = malloc(sizeof(T) * (5 * DF + 14 * M * F + F * M + 6 * M * D + D * M + 6 * M * M + 2 * M + 2 * D + F));
    T *W1T = buf, *W2 = W1T + DF, *W2T = W2 + DF, *dW1T = W2T + DF, *dW2T = dW1T + DF, *X2 = dW2T + DF;
    T *Dg = X2 + M * F, *DDg = Dg + M * F, *Y = DDg + M * F, *g1 = Y + M * F, *G1 = g1 + M * F, *Q2 = G1 + M * F;
    T *Dq = Q2 + M * F, *X1 = Dq + M * F, *dG1 = X1 + M * F, *dX2 = dG1 + M * F, *dQ2 = dX2 + M * F;
    T *dY = dQ2 + M * F, *dZ1 = dY + M * F, *G1T = dZ1 + M * F, *zh = G1T + F * M, *h = zh + M * D, *g2 = h + M * D;
    T *G2 = g2 + M * D, *dG2 = G2 + M * D, *dZ2 = dG2 + M * D, *G2T = dZ2 + M * D, *A1 = G2T + D * M;
    T *A2 = A1 + M * M, *dA1 = A2 + M * M, *dA2 = dA1 + M * M, *dP1 = dA2 + M * M, *dP2 = dP1 + M * M;
    T *a = dP2 + M * M, *inv = a + M, *w2 = inv + M, *dw2 = w2 + D, *zeros = dw2 + D;  /* zeros: F */
    memset(zeros, 0, sizeof(T) * F);
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *dW1 = dW10 + bh * DF, *dc1 = dc10 + bh * F, *dW2 = dW20 + bh * DF, *dc2 = dc20 + bh * D;
        T *dwh = dw + bh * D, *dbh = db + bh * D;
        if (dW1f) memcpy(dW1, dW1f + bh * DF, sizeof(T) * DF); else memset(dW1, 0, sizeof(T) * DF);
        if (dc1f) memcpy(dc1, dc1f + bh * F, sizeof(T) * F); else memset(dc1, 0, sizeof(T) * F);
        if (dW2f) memcpy(dW2, dW2f + bh * DF, sizeof(T) * DF); else memset(dW2, 0, sizeof(T) * DF);
        if (dc2f) memcpy(dc2, dc2f + bh * D, sizeof(T) * D); else memset(dc2, 0, sizeof(T) * D);
        memset(dwh, 0, sizeof(T) * D);
        memset(dbh, 0, sizeof(T) * D);
        memset(dw2, 0, sizeof(T) * D);
        NAME(transpose)(D, F, W1f + bh * DF, F, W1T);  /* the final weights: the last mini-batch's start */
        memcpy(W2, W2f + bh * DF, sizeof(T) * DF);
        for (int64_t n = N - 1; n >= 0; n--) {
            const int64_t t0 = n * M, m = TT - t0 < M ? TT - t0 : M, row = (bi * TT + t0) * SD + hi * D;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *etan = eta + row / D, *lrn = lr + row / D;
            const T *dn = dout + row, *P1 = P1s + (bh * N + n) * M * M, *P2 = P2s + (bh * N + n) * M * M;
            const T *Z1 = Z1s + (bh * TT + t0) * F, *Zq = Zqs + (bh * TT + t0) * F, *Z2 = Z2s + (bh * TT + t0) * D;
            T *dqn = dq + row, *dkn = dk + row, *dvn = dv + row, *detan = deta + row / D, *dlrh = dlr + row / D;
            const int64_t whole = m == M;
            const T scale = whole ? -etan[(m - 1) * H] : 1;
            if (n)
                NAME(prefetch)(4, (const T *[]){qn - M * SD, kn - M * SD, vn - M * SD, dn - M * SD}, M, D, SD);
            /* the inner gradients, and the weights at the mini-batch's start */
            NAME(gelu)(m * F, Z1, X2, Dg, DDg);
            for (int64_t s = 0; s < m; s++) {
                inv[s] = NAME(lng)(D, eps, Z2 + s * D, kn + s * SD, vn + s * SD, wh, bb, w2, zh + s * D, h + s * D,
                                   g2 + s * D, a + s);
#pragma omp simd
                for (int64_t j = 0; j < D; j++) G2[s * D + j] = lrn[s * H] * g2[s * D + j];
            }
            if (whole) NAME(gemm)(F, D, m, -scale, X2, 1, F, G2, D, W2, D, 1);
            NAME(transpose)(F, D, W2, D, W2T);
            NAME(gemm)(m, F, D, 1, g2, D, 1, W2T, F, Y, F, 0);
            for (int64_t s = 0; s < m; s++)
#pragma omp simd
                for (int64_t j = 0; j < F; j++) {
                    g1[s * F + j] = Y[s * F + j] * Dg[s * F + j];
                    G1[s * F + j] = lrn[s * H] * g1[s * F + j];
                }
            if (whole) NAME(gemm)(F, D, m, -scale, G1, 1, F, kn, SD, W1T, D, 1);  /* W1^T += eta_m G1^T K */
            NAME(gelu)(m * F, Zq, Q2, Dq, NULL);
            NAME(mixing)(m, P1, etan, H, A1);
            NAME(mixing)(m, P2, etan, H, A2);
            /* the step */
            const T *dW1n = whole ? dW1 : dGW1 ? dGW1 + bh * DF : NULL;
            const T *dW2n = whole ? dW2 : dGW2 ? dGW2 + bh * DF : NULL;
            const T *dc1n = whole ? dc1 : dGc1 ? dGc1 + bh * F : zeros;
            const T *dc2n = whole ? dc2 : dGc2 ? dGc2 + bh * D : zeros;
            T deta_last = 0;
            if (dW1n) {
                NAME(gemm)(m, F, D, 1, kn, SD, 1, dW1n, F, X1, F, 0);
                NAME(transpose)(D, F, dW1n, F, dW1T);
                NAME(gemm)(m, D, F, scale, G1, F, 1, dW1T, D, dkn, SD, 0);
            } else
                memset(X1, 0, sizeof(T) * m * F);
            if (dW2n) {
                NAME(gemm)(m, D, F, 1, X2, F, 1, dW2n, D, dG2, D, 0);
                NAME(transpose)(F, D, dW2n, D, dW2T);
                NAME(gemm)(m, F, D, scale, G2, D, 1, dW2T, F, dX2, F, 0);
            } else {
                memset(dG2, 0, sizeof(T) * m * D);
                memset(dX2, 0, sizeof(T) * m * F);
            }
            for (int64_t s = 0; s < m; s++) {
#pragma omp simd reduction(+ : deta_last)
                for (int64_t j = 0; j < F; j++) {
                    dG1[s * F + j] = scale * (X1[s * F + j] + dc1n[j]);
                    deta_last -= (X1[s * F + j] + dc1n[j]) * G1[s * F + j];
                }
#pragma omp simd reduction(+ : deta_last)
                for (int64_t j = 0; j < D; j++) {
                    deta_last -= (dG2[s * D + j] + dc2n[j]) * G2[s * D + j];
                    dG2[s * D + j] = scale * (dG2[s * D + j] + dc2n[j]);
                }
            }
            for (int64_t t = 0; t < m; t++) detan[t * H] = whole && t == m - 1 ? deta_last : 0;
            /* the readouts, out = Q2 W2 + c2 + A2 G2 and Zq = Q W1 + c1 + A1 G1 (dQ2 is dZq after gelu') */
            NAME(readout_backward)(m, F, D, dn, SD, Q2, F, X2, F, W2T, G2, A2, P2, etan, H, dQ2, F, dX2, F, 1, dW2,
                                   dc2, dG2, detan, G2T, dA2, dP2);
            for (int64_t i = 0; i < m * F; i++) dQ2[i] *= Dq[i];
            NAME(readout_backward)(m, D, F, dQ2, F, qn, SD, kn, SD, W1T, G1, A1, P1, etan, H, dqn, SD, dkn, SD,
                                   dW1n != NULL, dW1, dc1, dG1, detan, G1T, dA1, dP1);
            /* the inner gradients: G = diag(lr) g, g1 = (g2 W2^T) * gelu'(Z1), g2 = LNG(X2 W2 + c2) */
            for (int64_t s = 0; s < m; s++) {
                const T lrs = lrn[s * H];
                T dl = 0;
#pragma omp simd reduction(+ : dl)
                for (int64_t j = 0; j < F; j++) {
                    dl += dG1[s * F + j] * g1[s * F + j];
                    dY[s * F + j] = lrs * dG1[s * F + j] * Dg[s * F + j];
                    dZ1[s * F + j] = lrs * dG1[s * F + j] * Y[s * F + j] * DDg[s * F + j];  /* the gelu'' term */
                }
#pragma omp simd reduction(+ : dl)
                for (int64_t j = 0; j < D; j++) {
                    dl += dG2[s * D + j] * g2[s * D + j];
                    dG2[s * D + j] *= lrs;  /* dg2 from here */
                }
                dlrh[s * H] = dl;
            }
            NAME(gemm)(m, D, F, 1, dY, F, 1, W2, D, dG2, D, 1);
            NAME(gemm)(F, D, m, 1, dY, 1, F, g2, D, dW2, D, 1);
            for (int64_t s = 0; s < m; s++)
                NAME(lng_backward)(D, zh + s * D, h + s * D, a[s], inv[s], dG2 + s * D, kn + s * SD, vn + s * SD, wh,
                                   bb, w2, dZ2 + s * D, dkn + s * SD, dvn + s * SD, dwh, dbh, dw2);
            NAME(layer_backward)(m, F, D, dZ2, D, X2, F, W2T, dX2, F, dW2, dc2);
            for (int64_t i = 0; i < m * F; i++) dZ1[i] += dX2[i] * Dg[i];
            NAME(layer_backward)(m, D, F, dZ1, F, kn, SD, W1T, dkn, SD, dW1, dc1);
        }
        for (int64_t j = 0; j < D; j++) dwh[j] += 2 * wh[j] * dw2[j];
    }
    free(buf);
}

#endif
