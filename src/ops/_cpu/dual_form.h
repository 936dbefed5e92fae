/* The readout of TTT's dual form (Sun et al. 2024) for a layer of the inner model, a mini-batch of
   m tokens: y = X W + c + A G with A_ts = -eta_t (P_ts + 1) for s <= t (else 0), P = X Kx^T (X the
   layer's inputs at the queries, Kx at the keys, G their gradients scaled by lr), its backward and
   the backward of the inner layer Z = X W + c.
   ttt_linear.c and ttt_mlp.c include it once per dtype (T, NAME set; after blocked.h), so it has
   no include guard. The three steps are inlined: as calls they made ttt_linear measurably slower. */

/* A from P */
static void NAME(mixing)(int64_t m, const T *P, const T *eta, int64_t SH, T *A) {
    for (int64_t t = 0; t < m; t++)
        for (int64_t s = 0; s < m; s++) A[t * m + s] = s <= t ? -eta[t * SH] * (P[t * m + s] + 1) : 0;
}

/* c (n) += alpha sum of the rows (m, n) lds apart */
static void NAME(add_rows)(int64_t m, int64_t n, T alpha, const T *x, int64_t lds, T *c) {
    for (int64_t s = 0; s < m; s++)
#pragma omp simd
        for (int64_t j = 0; j < n; j++) c[j] += alpha * x[s * lds + j];
}

/* rows (m, n) lds apart = the vector c (n) each */
static void NAME(rows)(int64_t m, int64_t n, const T *c, T *x, int64_t lds) {
    for (int64_t s = 0; s < m; s++) memcpy(x + s * lds, c, sizeof(T) * n);
}

/* y (m, p) rows ldy apart = the readout, X (m, n) rows ldx apart, Kx alike (ldk), W (n, p), c (p),
   G (m, p); P and A (m, m) kept, KT (n, m) scratch */
static inline __attribute__((always_inline)) void NAME(readout)(int64_t m, int64_t n, int64_t p, const T *X,
                                                               int64_t ldx, const T *Kx, int64_t ldk, const T *W,
                                                               const T *c, const T *G, const T *eta, int64_t SH,
                                                               T *KT, T *P, T *A, T *y, int64_t ldy) {
    NAME(transpose)(m, n, Kx, ldk, KT);
    NAME(gemm)(m, m, n, 1, X, ldx, 1, KT, m, P, m, 0);
    NAME(mixing)(m, P, eta, SH, A);
    NAME(rows)(m, p, c, y, ldy);
    NAME(gemm)(m, p, n, 1, X, ldx, 1, W, p, y, ldy, 1);
    NAME(gemm)(m, p, m, 1, A, m, 1, G, p, y, ldy, 1);
}

/* the backward of a layer Z = X W + c of the inner model (X (m, n) rows ldx apart, W given as WT
   (p, n)): dX += dZ W^T, dW += X^T dZ, dc += sum_s dZ_s, from dZ (m, p) rows ldz apart */
static inline __attribute__((always_inline)) void NAME(layer_backward)(int64_t m, int64_t n, int64_t p,
                                                                      const T *dZ, int64_t ldz, const T *X,
                                                                      int64_t ldx, const T *WT, T *dX, int64_t lddx,
                                                                      T *dW, T *dc) {
    NAME(gemm)(m, n, p, 1, dZ, ldz, 1, WT, n, dX, lddx, 1);
    NAME(gemm)(n, p, m, 1, X, 1, ldx, dZ, ldz, dW, p, 1);
    NAME(add_rows)(m, p, 1, dZ, ldz, dc);
}

/* the readout's backward, X (m, n) rows ldx apart, Kx alike (ldk), W (n, p) given as WT (p, n), G
   (m, p): from dy (m, p) rows ldy apart,
       dX = dy W^T + dP Kx,  dKx (+)= dP^T X  (add 0: =),  dW += X^T dy,  dc += sum_t dy_t,  dG += A^T dy,
       deta_t -= sum_{s <= t} dA_ts (P_ts + 1),  dP_ts = -eta_t dA_ts,  dA = dy G^T
   with the scratch GT (p, m), dA, dP (m, m) */
static inline __attribute__((always_inline)) void NAME(readout_backward)(
    int64_t m, int64_t n, int64_t p, const T *dy, int64_t ldy, const T *X, int64_t ldx, const T *Kx, int64_t ldk,
    const T *WT, const T *G, const T *A, const T *P, const T *eta, int64_t SH, T *dX, int64_t lddx, T *dKx,
    int64_t lddk, int64_t add, T *dW, T *dc, T *dG, T *deta, T *GT, T *dA, T *dP) {
    NAME(gemm)(m, n, p, 1, dy, ldy, 1, WT, n, dX, lddx, 0);
    NAME(gemm)(n, p, m, 1, X, 1, ldx, dy, ldy, dW, p, 1);
    NAME(add_rows)(m, p, 1, dy, ldy, dc);
    NAME(transpose)(m, p, G, p, GT);
    NAME(gemm)(m, m, p, 1, dy, ldy, 1, GT, m, dA, m, 0);
    NAME(gemm)(m, p, m, 1, A, 1, m, dy, ldy, dG, p, 1);
    for (int64_t t = 0; t < m; t++) {
        T e = 0;
        for (int64_t s = 0; s < m; s++) {
            e -= s <= t ? dA[t * m + s] * (P[t * m + s] + 1) : 0;
            dP[t * m + s] = s <= t ? -eta[t * SH] * dA[t * m + s] : 0;
        }
        deta[t * SH] += e;
    }
    NAME(gemm)(m, n, m, 1, dP, m, 1, Kx, ldk, dX, lddx, 1);
    NAME(gemm)(m, n, m, 1, dP, 1, m, X, ldx, dKx, lddk, add);
}
