/* Titans' neural memory on the CPU, a chunk at a time, forward and backward, compiled by cpu.py
   (src/ops/_cpu's `library`).

   Per head, a chunk of m tokens (rows t, s; m = K but for a partial last one) from the state M, S
   (D, D) at its start and M0 (the state's M0 for the first chunk, else M), chunked.py's form with
   its gate coefficients (computed by cpu.py, in torch, with the squared loss's 2 in N): b_t, f_t
   (bf), PN (m, m) lower triangular, the last rows l0_s = PN_ms, l1_s = N_ms (last) and
   mix = [[b_m, f_m], [0, m_m]]:
       Z = K M0,   g_s = LNG(Z_s; k_s, v_s)  (../_cpu/ln_l2_grad.h),   P = Q K^T,   A = PN * P
       z_t = b_t q_t M + f_t q_t S - sum_s A_ts g_s
       M <- mix_00 M + mix_01 S - sum_s l0_s k_s^T g_s,   S <- mix_10 M + mix_11 S - sum_s l1_s k_s^T g_s

   The backward walks the chunks from the last with dM, dS the gradients of the state at the
   chunk's end (from the final state's; the final M0's joins dM where T ends a chunk, else the last
   chunk's M0):
       dmix_ij = <dX_i, X_j> (X = M, S),  X0 = K dM,  X1 = K dS,  dl0_s = -X0_s . g_s,  dl1_s = -X1_s . g_s,
       dg_s = -(l0_s X0_s + l1_s X1_s),  dK = -(l0 g) dM^T - (l1 g) dS^T,
       dM <- mix_00 dM + mix_10 dS + (b q)^T dz,   dS <- mix_01 dM + mix_11 dS + (f q)^T dz,
       dq_t = b_t dz_t M^T + f_t dz_t S^T,  db_t = q_t . (dz_t M^T),  df_t = q_t . (dz_t S^T),
       dA = -dz g^T,  dg -= A^T dz,  dPN = dA * P,  dP = dA * PN,  dq += dP K,  dK += dP^T Q,
   then through LNG dZ (and k's, v's, w's, b's parts), dK += dZ M0^T, dM0 = K^T dZ, which joins dM
   but in the first chunk (the state's M0).

   Every product is ../_cpu/blocked.h's gemm. The forward saves, when the backward will need them,
   the state at each chunk's start (MSs (B, H, N, 2, D, D)), Z (Zs (B, H, T, D)) and P (Ps (B, H,
   N, K, K), rows m apart), N = ceil(T / K). Layouts as the op's: q, k, v, z (B, T, H, D), w, b
   (H, D), states (B, H, D, D); the coefficients (B, H, N, K, 2) (bf, last), (B, H, N, K, K) (PN),
   (B, H, N, 2, 2) (mix), a partial last chunk's zero past its m rows, as their gradients. A call
   does heads [h0, h1) of the B H. dw, db (B, H, D) per batch row (summed over B in cpu.py).
   ../_cpu/dtypes.h compiles it once per dtype. */

#ifndef T
#define SOURCE "../titans/titans.c"
#define PREFIX titans
#include "../_cpu/dtypes.h"

#else

#include "../_cpu/blocked.h"
#include "../_cpu/ln_l2_grad.h"

/* dst (n) = a x + b y */
static void NAME(mix2)(int64_t n, T a, const T *restrict x, T b, const T *restrict y, T *restrict dst) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = a * x[i] + b * y[i];
}

/* the chunk's g (and LNG's zh, h, a, inv a row) from Z */
static void NAME(gradients)(int64_t m, int64_t D, int64_t SD, T eps, const T *k, const T *v, const T *w,
                            const T *b, const T *w2, const T *Z, T *zh, T *h, T *a, T *inv, T *g) {
    for (int64_t s = 0; s < m; s++)
        inv[s] = NAME(lng)(D, eps, Z + s * D, k + s * SD, v + s * SD, w, b, w2, zh + s * D, h + s * D, g + s * D,
                           a + s);
}

void NAME(forward)(int64_t TT, int64_t H, int64_t D, int64_t K, int64_t h0, int64_t h1, double eps_,
                   const T *q, const T *k, const T *v, const T *w, const T *b, const T *M0, const T *S0,
                   const T *MZ0, const T *bf, const T *PN, const T *last, const T *mix, T *out, T *Mf, T *Sf,
                   T *M0f, T *MSs, T *Zs, T *Ps) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + K - 1) / K, DD = D * D;
    T *buf = malloc(sizeof(T) * (4 * DD + 9 * K * D + 2 * K * K + 2 * K + D));
    T *Ma = buf, *Mb = Ma + DD, *Sa = Mb + DD, *Sb = Sa + DD, *Z = Sb + DD, *zh = Z + K * D, *h = zh + K * D;
    T *g = h + K * D, *KT = g + K * D, *Qb = KT + K * D, *Qf = Qb + K * D, *K0 = Qf + K * D, *K1 = K0 + K * D;
    T *P = K1 + K * D, *A = P + K * K, *a = A + K * K, *inv = a + K, *w2 = inv + K;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *Mc = Ma, *Mn = Mb, *Sc = Sa, *Sn = Sb;
        memcpy(Mc, M0 + bh * DD, sizeof(T) * DD);
        memcpy(Sc, S0 + bh * DD, sizeof(T) * DD);
        for (int64_t n = 0; n < N; n++) {
            const int64_t t0 = n * K, m = TT - t0 < K ? TT - t0 : K, row = (bi * TT + t0) * SD + hi * D;
            const int64_t c = bh * N + n;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *M0c = n ? Mc : MZ0 + bh * DD;
            const T *bfn = bf + c * K * 2, *PNn = PN + c * K * K, *lastn = last + c * K * 2, *mixn = mix + c * 4;
            T *outn = out + row, *Pn = Ps ? Ps + c * K * K : P;
            NAME(gemm)(m, D, D, 1, kn, SD, 1, M0c, D, Z, D, 0);
            if (MSs) {
                memcpy(Zs + (bh * TT + t0) * D, Z, sizeof(T) * m * D);
                memcpy(MSs + c * 2 * DD, Mc, sizeof(T) * DD);
                memcpy(MSs + c * 2 * DD + DD, Sc, sizeof(T) * DD);
            }
            if (n == N - 1 && m < K) memcpy(M0f + bh * DD, M0c, sizeof(T) * DD);  /* the partial chunk's M0 */
            NAME(gradients)(m, D, SD, eps, kn, vn, wh, bb, w2, Z, zh, h, a, inv, g);
            NAME(transpose)(m, D, kn, SD, KT);
            NAME(gemm)(m, m, D, 1, qn, SD, 1, KT, m, Pn, m, 0); /* P = Q K^T */
            for (int64_t t = 0; t < m; t++)
                for (int64_t s = 0; s < m; s++) A[t * m + s] = s <= t ? PNn[t * K + s] * Pn[t * m + s] : 0;
            NAME(scaled)(m, D, qn, SD, bfn, 2, Qb);
            NAME(scaled)(m, D, qn, SD, bfn + 1, 2, Qf);
            NAME(gemm)(m, D, D, 1, Qb, D, 1, Mc, D, outn, SD, 0);
            NAME(gemm)(m, D, D, 1, Qf, D, 1, Sc, D, outn, SD, 1);
            NAME(gemm)(m, D, m, -1, A, m, 1, g, D, outn, SD, 1);
            NAME(scaled)(m, D, kn, SD, lastn, 2, K0);
            NAME(scaled)(m, D, kn, SD, lastn + 1, 2, K1);
            NAME(mix2)(DD, mixn[0], Mc, mixn[1], Sc, Mn);
            NAME(mix2)(DD, mixn[2], Mc, mixn[3], Sc, Sn);
            NAME(gemm)(D, D, m, -1, K0, 1, D, g, D, Mn, D, 1); /* (l0 K)^T g: its element (i, s) at K0[s D + i] */
            NAME(gemm)(D, D, m, -1, K1, 1, D, g, D, Sn, D, 1);
            T *x = Mc;
            Mc = Mn, Mn = x, x = Sc, Sc = Sn, Sn = x;
        }
        memcpy(Mf + bh * DD, Mc, sizeof(T) * DD);
        memcpy(Sf + bh * DD, Sc, sizeof(T) * DD);
        if (TT % K == 0) memcpy(M0f + bh * DD, Mc, sizeof(T) * DD);
    }
    free(buf);
}

void NAME(backward)(int64_t TT, int64_t H, int64_t D, int64_t K, int64_t h0, int64_t h1, double eps_,
                    const T *q, const T *k, const T *v, const T *w, const T *b, const T *MZ0, const T *bf,
                    const T *PN, const T *last, const T *mix, const T *MSs, const T *Zs, const T *Ps,
                    const T *dout, const T *dMf, const T *dSf, const T *dM0f, T *dq, T *dk, T *dv, T *dw, T *db,
                    T *dM, T *dS, T *dMZ0, T *dbf, T *dPN, T *dlast, T *dmix) {
    const T eps = eps_;
    const int64_t SD = H * D, N = (TT + K - 1) / K, DD = D * D;
    T *buf = malloc(sizeof(T) * (10 * DD + 12 * K * D + 3 * K * K + 2 * K + 2 * D));
    T *dMa = buf, *dMb = dMa + DD, *dSa = dMb + DD, *dSb = dSa + DD, *dM0n = dSb + DD, *MT = dM0n + DD;
    T *ST = MT + DD, *dMT = ST + DD, *dST = dMT + DD, *M0T = dST + DD, *zh = M0T + DD, *h = zh + K * D;
    T *g = h + K * D, *GT = g + K * D, *Qb = GT + K * D, *Qf = Qb + K * D, *X0 = Qf + K * D;
    T *X1 = X0 + K * D, *dG = X1 + K * D, *G0 = dG + K * D, *G1 = G0 + K * D, *dZ = G1 + K * D;
    T *A = dZ + K * D, *dA = A + K * K, *dP = dA + K * K, *a = dP + K * K, *inv = a + K, *w2 = inv + K;
    T *dw2 = w2 + D;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *wh = w + hi * D, *bb = b + hi * D;
        for (int64_t j = 0; j < D; j++) w2[j] = wh[j] * wh[j];
        T *dwh = dw + bh * D, *dbh = db + bh * D, *dMc = dMa, *dMs = dMb, *dSc = dSa, *dSs = dSb;
        memset(dwh, 0, sizeof(T) * D);
        memset(dbh, 0, sizeof(T) * D);
        memset(dw2, 0, sizeof(T) * D);
        if (dMf) memcpy(dMc, dMf + bh * DD, sizeof(T) * DD); else memset(dMc, 0, sizeof(T) * DD);
        if (dSf) memcpy(dSc, dSf + bh * DD, sizeof(T) * DD); else memset(dSc, 0, sizeof(T) * DD);
        memset(dM0n, 0, sizeof(T) * DD);
        if (dM0f) {  /* the final M0: the final M where T ends a chunk, else the last chunk's M0 */
            T *to = TT % K == 0 ? dMc : dM0n;
            for (int64_t i = 0; i < DD; i++) to[i] += dM0f[bh * DD + i];
        }
        for (int64_t n = N - 1; n >= 0; n--) {
            const int64_t t0 = n * K, m = TT - t0 < K ? TT - t0 : K, row = (bi * TT + t0) * SD + hi * D;
            const int64_t c = bh * N + n;
            const T *qn = q + row, *kn = k + row, *vn = v + row, *dn = dout + row, *Mst = MSs + c * 2 * DD;
            const T *Sst = Mst + DD, *bfn = bf + c * K * 2, *PNn = PN + c * K * K, *lastn = last + c * K * 2;
            const T *mixn = mix + c * 4, *P = Ps + c * K * K;
            T *dqn = dq + row, *dkn = dk + row, *dvn = dv + row, *dbfn = dbf + c * K * 2, *dPNn = dPN + c * K * K;
            T *dlastn = dlast + c * K * 2, *dmixn = dmix + c * 4;
            if (n)
                NAME(prefetch)(4, (const T *[]){qn - K * SD, kn - K * SD, vn - K * SD, dn - K * SD}, K, D, SD);
            memset(dbfn, 0, sizeof(T) * K * 2);
            memset(dPNn, 0, sizeof(T) * K * K);
            memset(dlastn, 0, sizeof(T) * K * 2);
            NAME(gradients)(m, D, SD, eps, kn, vn, wh, bb, w2, Zs + (bh * TT + t0) * D, zh, h, a, inv, g);
            /* the state's update */
            dmixn[0] = NAME(dot)(DD, dMc, Mst);
            dmixn[1] = NAME(dot)(DD, dMc, Sst);
            dmixn[2] = NAME(dot)(DD, dSc, Mst);
            dmixn[3] = NAME(dot)(DD, dSc, Sst);
            NAME(gemm)(m, D, D, 1, kn, SD, 1, dMc, D, X0, D, 0);
            NAME(gemm)(m, D, D, 1, kn, SD, 1, dSc, D, X1, D, 0);
            for (int64_t s = 0; s < m; s++) {
                const T l0 = lastn[2 * s], l1 = lastn[2 * s + 1], *gs = g + s * D;
                dlastn[2 * s] = -NAME(dot)(D, X0 + s * D, gs);
                dlastn[2 * s + 1] = -NAME(dot)(D, X1 + s * D, gs);
#pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    dG[s * D + j] = -(l0 * X0[s * D + j] + l1 * X1[s * D + j]);
                    G0[s * D + j] = -l0 * gs[j];
                    G1[s * D + j] = -l1 * gs[j];
                }
            }
            NAME(transpose)(D, D, dMc, D, dMT);
            NAME(transpose)(D, D, dSc, D, dST);
            NAME(gemm)(m, D, D, 1, G0, D, 1, dMT, D, dkn, SD, 0);
            NAME(gemm)(m, D, D, 1, G1, D, 1, dST, D, dkn, SD, 1);
            NAME(mix2)(DD, mixn[0], dMc, mixn[2], dSc, dMs);
            NAME(mix2)(DD, mixn[1], dMc, mixn[3], dSc, dSs);
            /* z = (b Q) M + (f Q) S - A g */
            NAME(transpose)(D, D, Mst, D, MT);
            NAME(transpose)(D, D, Sst, D, ST);
            NAME(gemm)(m, D, D, 1, dn, SD, 1, MT, D, X0, D, 0);  /* dz M^T */
            NAME(gemm)(m, D, D, 1, dn, SD, 1, ST, D, X1, D, 0);  /* dz S^T */
            for (int64_t t = 0; t < m; t++) {
                const T *qt = qn + t * SD, bt = bfn[2 * t], ft = bfn[2 * t + 1];
                dbfn[2 * t] = NAME(dot)(D, X0 + t * D, qt);
                dbfn[2 * t + 1] = NAME(dot)(D, X1 + t * D, qt);
#pragma omp simd
                for (int64_t j = 0; j < D; j++) dqn[t * SD + j] = bt * X0[t * D + j] + ft * X1[t * D + j];
            }
            NAME(scaled)(m, D, qn, SD, bfn, 2, Qb);
            NAME(scaled)(m, D, qn, SD, bfn + 1, 2, Qf);
            NAME(gemm)(D, D, m, 1, Qb, 1, D, dn, SD, dMs, D, 1);
            NAME(gemm)(D, D, m, 1, Qf, 1, D, dn, SD, dSs, D, 1);
            NAME(transpose)(m, D, g, D, GT);
            NAME(gemm)(m, m, D, -1, dn, SD, 1, GT, m, dA, m, 0);  /* dA = -dz g^T */
            for (int64_t t = 0; t < m; t++)
                for (int64_t s = 0; s < m; s++) A[t * m + s] = s <= t ? PNn[t * K + s] * P[t * m + s] : 0;
            NAME(gemm)(m, D, m, -1, A, 1, m, dn, SD, dG, D, 1);
            for (int64_t t = 0; t < m; t++)
                for (int64_t s = 0; s < m; s++) {
                    dPNn[t * K + s] = s <= t ? dA[t * m + s] * P[t * m + s] : 0;
                    dP[t * m + s] = s <= t ? dA[t * m + s] * PNn[t * K + s] : 0;
                }
            NAME(gemm)(m, D, m, 1, dP, m, 1, kn, SD, dqn, SD, 1);
            NAME(gemm)(m, D, m, 1, dP, 1, m, qn, SD, dkn, SD, 1);
            /* g = LNG(K M0) */
            for (int64_t s = 0; s < m; s++)
                NAME(lng_backward)(D, zh + s * D, h + s * D, a[s], inv[s], dG + s * D, kn + s * SD, vn + s * SD, wh,
                                   bb, w2, dZ + s * D, dkn + s * SD, dvn + s * SD, dwh, dbh, dw2);
            if (!n) NAME(transpose)(D, D, MZ0 + bh * DD, D, M0T);
            NAME(gemm)(m, D, D, 1, dZ, D, 1, n ? MT : M0T, D, dkn, SD, 1);
            NAME(gemm)(D, D, m, 1, kn, 1, SD, dZ, D, dM0n, D, 1);
            if (n) {  /* M0 is the chunk's start M */
                for (int64_t i = 0; i < DD; i++) dMs[i] += dM0n[i];
                memset(dM0n, 0, sizeof(T) * DD);
            }
            T *x = dMc;
            dMc = dMs, dMs = x, x = dSc, dSc = dSs, dSs = x;
        }
        memcpy(dM + bh * DD, dMc, sizeof(T) * DD);
        memcpy(dS + bh * DD, dSc, sizeof(T) * DD);
        memcpy(dMZ0 + bh * DD, dM0n, sizeof(T) * DD);
        for (int64_t j = 0; j < D; j++) dwh[j] += 2 * wh[j] * dw2[j];
    }
    free(buf);
}

#endif
