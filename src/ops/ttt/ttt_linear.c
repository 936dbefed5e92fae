/* TTT-Linear on the CPU, a mini-batch at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, a mini-batch of m tokens (rows t, s; m = M but for a partial last one) from the inner
   weights W (D, D), c (D) at its start, chunked.py's dual form:
       Z = K W + c,   chat_s = (b + k_s - v_s) w,   g_s = LNG(Z_s, chat_s),   G = diag(lr) g
       P = Q K^T,     A_ts = -eta_t (P_ts + 1) for s <= t (else 0)
       out = Q W + c + A G
       whole: W <- W - eta_m K^T G, c <- c - eta_m sum_s G_s;  partial last: (GW, Gc) = (K^T G, sum_s G_s)
   with LNG the inner layer norm's gradient (../_cpu/ln_l2_grad.h).

   The backward walks the mini-batches from the last with dW, dc the gradients of the weights at
   the next one's start (from the final state's, which for a partial last one are GW's, Gc's
   instead). Whole: X = K dW,  dG = -eta_m (X + dc),  dK = -eta_m G dW^T,  deta_m -= sum_s (X_s + dc) . G_s;
   partial: dG = K dGW + dGc,  dK = G dGW^T. Then
       dQ = dout W^T + dP K,   dK += dP^T Q + dZ W^T,   dW += Q^T dout + K^T dZ,   dc += sum (dout + dZ)
       dA = dout G^T,  dG += A^T dout,  deta_t -= sum_{s <= t} dA_ts (P_ts + 1),  dP_ts = -eta_t dA_ts
       dlr_s = dG_s . g_s,   dg_s = lr_s dG_s,   and dZ and chat's gradients (w, b, k, v) through LNG.

   Every product is ../_cpu/blocked.h's gemm; the transposed B's (W^T, dW^T, K^T, G^T) are
   copied once a mini-batch. The backward needs of the forward only Z and P (saved when it will
   run: Zs (B, H, T, D), Ps (B, H, ceil(T / M), M, M), rows m apart): it rebuilds each
   mini-batch's start weights, transposed, from the next's, W^T <- W^T + eta_m G^T K (from the final
   W; a partial last mini-batch leaves W as it was). Layouts as the op's: q, k, v, out (B, T, H, D),
   eta, lr (B, T, H), w, b (H, D), W (B, H, D, D), c (B, H, D); a call does heads [h0, h1) of the
   B H. dw, db (B, H, D) per batch row (summed over B in cpu.py). ../_cpu/dtypes.h compiles it
   once per dtype. */

#ifndef T
#define SOURCE "../ttt/ttt_linear.c"
#define PREFIX ttt_linear
#include "../_cpu/dtypes.h"

#else

#include "../_cpu/blocked.h"
#include "../_cpu/ln_l2_grad.h"
#include "../_cpu/dual_form.h"

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

void NAME(forward)(int64_t TT, int64_t H, int64_t D, int64_t M, int64_t h0, int64_t h1, double eps_,
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
            NAME(rows)(m, D, c, Z, D);
            NAME(gemm)(m, D, D, 1, kn, SD, 1, W, D, Z, D, 1);
            if (Zs) memcpy(Zs + (bh * TT + t0) * D, Z, sizeof(T) * m * D);
            NAME(gradients)(m, D, SD, eps, kn, vn, lrn, H, wh, bb, w2, Z, zh, h, a, inv, g, G);
            NAME(readout)(m, D, D, qn, SD, kn, SD, W, c, G, etan, H, KT, Pn, A, outn, SD);
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

void NAME(backward)(int64_t TT, int64_t H, int64_t D, int64_t M, int64_t h0, int64_t h1, double eps_,
                    const T *q, const T *k, const T *v, const T *eta, const T *lr, const T *w, const T *b,
                    const T *Wf, const T *Zs, const T *Ps, const T *dout, const T *dWf, const T *dcf,
                    const T *dGW, const T *dGc, T *dq, T *dk, T *dv, T *deta, T *dlr, T *dw, T *db, T *dW0,
                    T *dc0) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + M - 1) / M;
    T *buf = malloc(sizeof(T) * (7 * M * D + D * M + 2 * D * D + 3 * M * M + 2 * M + 3 * D));
    T *zh = buf, *h = zh + M * D, *g = h + M * D, *G = g + M * D, *dG = G + M * D, *X = dG + M * D, *dZ = X + M * D;
    T *GT = dZ + M * D, *WT = GT + D * M, *dWT = WT + D * D, *A = dWT + D * D, *dA = A + M * M, *dP = dA + M * M;
    T *a = dP + M * M, *inv = a + M, *w2 = inv + M, *dw2 = w2 + D, *zeros = dw2 + D;
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
            for (int64_t t = 0; t < m; t++) detan[t * H] = whole && t == m - 1 ? deta_last : 0;
            NAME(mixing)(m, P, etan, H, A);
            NAME(readout_backward)(m, D, D, dn, SD, qn, SD, kn, SD, WT, G, A, P, etan, H, dqn, SD, dkn, SD,
                                   dWn != NULL, dW, dc, dG, detan, GT, dA, dP);
            /* G = diag(lr) g, g = LNG(Z, chat) */
            for (int64_t s = 0; s < m; s++) {
                const T *gs = g + s * D;
                T *dGs = dG + s * D, *dZs = dZ + s * D;
                const T lrs = lrn[s * H];
                T dl = 0;
#pragma omp simd reduction(+ : dl)
                for (int64_t j = 0; j < D; j++) {
                    dl += dGs[j] * gs[j];
                    dGs[j] *= lrs;  /* dg from here */
                }
                dlrh[s * H] = dl;
                NAME(lng_backward)(D, zh + s * D, h + s * D, a[s], inv[s], dGs, kn + s * SD, vn + s * SD, wh, bb, w2,
                                   dZs, dkn + s * SD, dvn + s * SD, dwh, dbh, dw2);
            }
            NAME(layer_backward)(m, D, D, dZ, D, kn, SD, WT, dkn, SD, dW, dc);
        }
        for (int64_t j = 0; j < D; j++) dwh[j] += 2 * wh[j] * dw2[j];
    }
    free(buf);
}

#endif
