/* Log-linear attention with Mamba-2 inside on the CPU, a head at a time, forward and backward,
   compiled by cpu.py (src/ops/_cpu's `library`): chunked.py's dense form from position 0.

   Within a chunk of m <= C rows (b the cumulative log decay from the chunk's start, lambda the
   query's weights per level, level(i, j) = bit_length(i xor j)):
       M_ij = exp(b_i - b_j) lambda_i[level(i, j)]  (j <= i, else 0),   P = Q K^T,   A = P * M,   O = A V,
   each row's levels a run of columns: j = i at level 0, and at each l where bit l - 1 of i is
   set, the 2^(l - 1) columns below i >> (l - 1) << (l - 1). Products over the triangle only, by
   blocks of ROWS rows. Above the chunk, a Fenwick tree of chunk states: F_0[c] = K_c^T diag(w) V_c,
   w_s = exp(b_last - b_s) (chunk c's state at its end), and level j's blocks of 2^j chunks
       F_j[u] = f F_{j-1}[2u] + F_{j-1}[2u + 1],   f = exp(the log decay over the second half)
   (only the blocks that end before the last chunk: no others are read). At level j = 1 .. J (J = bit_length(N - 1),
   N chunks) the rows S of a block's second half read its first half's state:
       o_t += R_t F_{j-1}[2u]^T q_t   (t in S)
   with R_t = lambda_t[log2 C + j] exp(b_t - b_{end of the first half}) (b cumulative from position
   0) computed by cpu.py in torch (R (J, T) a head, zero outside the second halves), so autograd
   takes its gradients on.

   Backward, with dO:
       dA = dO V^T,  dV = A^T dO,  dM = dA * P,  dP = dA * M,  dQ = dP K,  dK = dP^T Q,
       dlambda_i[l] = sum over row i's run at l of dM_ij exp(b_i - b_j),
       G = dM * M:  db_i = sum_j G_ij - sum_j G_ji;
   then the levels from J down, each after the merges above it:
       Z = dO_S U^T (U = F_{j-1}[2u]):  dR_t = q_t . Z_t,  dq_t += R_t Z_t,  dF_{j-1}[2u] += Q_S^T diag(R) dO_S;
       dF_{j-1}[2u] += f dF_j[u],  dF_{j-1}[2u + 1] += dF_j[u],  and f <dF_j[u], F_{j-1}[2u]> to the
       last b of each chunk of the second half (d log f);
   and the chunks' states: Z' = V_c dF_0[c]^T:  dw_s = k_s . Z'_s,  dk_s += w_s Z'_s,
       dv_s += w_s (K_c dF_0[c])_s,  db_s -= dw_s w_s,  db_last += sum_s dw_s w_s.

   Every product is ../_cpu/blocked.h's gemm. Layouts: q, k, dq, dk (B, T, H, K), v, o, dO, dv
   (B, T, H, V), lambda, dlambda (B, T, H, n_levels) (dlambda written at levels <= log2 C, zero
   above), b, db (B, H, N, C) (the chunk's cumulative log decay; a partial last chunk's continues
   flat past its rows), R, dR (B, H, J, T); the forward saves P (B, H, N, C, C), rows C apart, and
   the tree's nodes F (B, H, NT, K, V), levels 0 .. J - 1, level j's (N - 1) >> j from offset(j).
   Every gradient is written whole. A call does heads [h0, h1) of the B H. ../_cpu/dtypes.h
   compiles it once per dtype. */

#ifndef T
#define SOURCE "../log_linear/log_linear.c"
#define PREFIX log_linear
#include "../_cpu/dtypes.h"

#else

#include "../_cpu/blocked.h"

#define ROWS 16 /* the triangular products' row blocks */

/* the rows y_s (ldy apart) += c[s] x_s (m, D), x rows D apart (scaled's, added) */
static void NAME(add_scaled)(int64_t m, int64_t D, const T *c, const T *x, T *y, int64_t ldy) {
    for (int64_t s = 0; s < m; s++)
#pragma omp simd
        for (int64_t j = 0; j < D; j++) y[s * ldy + j] += c[s] * x[s * D + j];
}

/* d[s] = x_s . y_s: x rows ldx apart, y rows D apart */
static void NAME(dots)(int64_t m, int64_t D, const T *x, int64_t ldx, const T *y, T *d) {
    for (int64_t s = 0; s < m; s++) {
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < D; j++) acc += x[s * ldx + j] * y[s * D + j];
        d[s] = acc;
    }
}

/* C (m, m) rows C apart, its lower triangle by row blocks (the upper one of a diagonal block too)
   = X Y^T: X rows lx apart, YT = Y^T (D, m) rows m apart */
static void NAME(lower)(int64_t m, int64_t D, int64_t C, const T *X, int64_t lx, const T *YT, T *out) {
    for (int64_t r = 0; r < m; r += ROWS) {
        const int64_t e = r + ROWS < m ? r + ROWS : m;
        NAME(gemm)(e - r, e, D, 1, X + r * lx, lx, 1, YT, m, out + r * C, C, 0);
    }
}

/* Y (m, D) rows ly apart = L X for L (m, m) lower triangular (rows C apart), or with `transposed`
   = L^T X; X rows lx apart */
static void NAME(triangle)(int64_t m, int64_t D, int64_t C, const T *L, int64_t transposed, const T *X,
                           int64_t lx, T *Y, int64_t ly) {
    for (int64_t r = 0; r < m; r += ROWS) {
        const int64_t e = r + ROWS < m ? r + ROWS : m;
        if (transposed) /* rows r..e of L^T: columns r..e of L, nonzero from row r on */
            NAME(gemm)(e - r, D, m - r, 1, L + r * C + r, 1, C, X + r * lx, lx, Y + r * ly, ly, 0);
        else
            NAME(gemm)(e - r, D, e, 1, L + r * C, C, 1, X, lx, Y + r * ly, ly, 0);
    }
}

static int64_t NAME(levels)(int64_t N) { /* J = bit_length(N - 1) */
    int64_t J = 0;
    while ((int64_t)1 << J < N) J++;
    return J;
}

/* the tree's nodes: level j (0 .. J - 1) holds the blocks u of 2^j chunks that end before the last
   chunk, (u + 1) 2^j < N, the only ones read (a block holding the last chunk has no chunk after
   it to read it, nor has any block it merges into): (N - 1) >> j of them, from node offset(j) on;
   NT = offset(J) */
static int64_t NAME(offset)(int64_t N, int64_t j) {
    int64_t at = 0;
    for (int64_t i = 0; i < j; i++) at += (N - 1) >> i;
    return at;
}

/* the log decay over chunks [lo, hi) (e: each chunk's, b at its last row) */
static T NAME(span)(const T *e, int64_t lo, int64_t hi) {
    T s = 0;
    for (int64_t c = lo; c < hi; c++) s += e[c];
    return s;
}

/* A = P * M of a chunk (m rows, C apart; zero above the diagonal up to its row block's end), M
   from b and lambda (rows ll apart) */
static void NAME(weigh)(int64_t m, int64_t C, const T *b, const T *lam, int64_t ll, const T *P, T *A) {
    for (int64_t i = 0; i < m; i++) {
        const T *li = lam + i * ll;
        const int64_t end = (i / ROWS + 1) * ROWS < m ? (i / ROWS + 1) * ROWS : m;
        for (int64_t l = 1; (int64_t)1 << (l - 1) <= i; l++) {
            if (!((i >> (l - 1)) & 1)) continue;
            const int64_t hi = i >> (l - 1) << (l - 1), lo = hi - ((int64_t)1 << (l - 1));
#pragma omp simd
            for (int64_t j = lo; j < hi; j++) A[i * C + j] = P[i * C + j] * EXP(b[i] - b[j]) * li[l];
        }
        A[i * C + i] = P[i * C + i] * li[0];
        for (int64_t j = i + 1; j < end; j++) A[i * C + j] = 0;
    }
}

void NAME(forward)(int64_t TT, int64_t H, int64_t K, int64_t V, int64_t C, int64_t nl, int64_t h0,
                   int64_t h1, const T *q, const T *k, const T *v, const T *b, const T *lam, const T *R,
                   T *o, T *P, T *F) {
    const int64_t N = (TT + C - 1) / C, J = NAME(levels)(N), NT = NAME(offset)(N, J), SK = H * K, SV = H * V;
    const int64_t half_max = J ? (C << (J - 1)) : 0;
    T *buf = malloc(sizeof(T) * (K * C + C * C + C * V + half_max * V + C + N + 1));
    T *KT = buf, *A = KT + K * C, *X = A + C * C, *Y = X + C * V, *w = Y + half_max * V, *e = w + C;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H;
        const T *qh = q + bi * TT * SK + hi * K, *kh = k + bi * TT * SK + hi * K, *vh = v + bi * TT * SV + hi * V;
        const T *lh = lam + (bi * TT * H + hi) * nl;
        T *oh = o + bi * TT * SV + hi * V;
        for (int64_t n = 0; n < N; n++) {
            const int64_t t0 = n * C, m = TT - t0 < C ? TT - t0 : C;
            T *Pn = P + (bh * N + n) * C * C;
            NAME(transpose)(m, K, kh + t0 * SK, SK, KT);
            NAME(lower)(m, K, C, qh + t0 * SK, SK, KT, Pn); /* P = Q K^T */
            NAME(weigh)(m, C, b + (bh * N + n) * C, lh + t0 * H * nl, H * nl, Pn, A);
            NAME(triangle)(m, V, C, A, 0, vh + t0 * SV, SV, oh + t0 * SV, SV); /* O = A V */
        }
        if (!J) continue;
        const T *bh_ = b + bh * N * C;
        T *Fh = F + bh * NT * K * V;
        for (int64_t n = 0; n + 1 < N; n++) { /* F_0: each chunk's state at its end (all full chunks) */
            for (int64_t s = 0; s < C; s++) w[s] = EXP(bh_[n * C + C - 1] - bh_[n * C + s]);
            NAME(scaled)(C, V, vh + n * C * SV, SV, w, 1, X);
            NAME(gemm)(K, V, C, 1, kh + n * C * SK, 1, SK, X, V, Fh + n * K * V, V, 0); /* K^T diag(w) V */
        }
        for (int64_t n = 0; n < N; n++) e[n] = bh_[n * C + C - 1];
        for (int64_t j = 1; j < J; j++) { /* F_j: a block's first half decayed over its second, plus the second */
            const T *Fa = Fh + NAME(offset)(N, j - 1) * K * V;
            T *Fb = Fh + NAME(offset)(N, j) * K * V;
            for (int64_t u = 0; (u + 1) << j < N; u++) {
                const T f = EXP(NAME(span)(e, (2 * u + 1) << (j - 1), (2 * u + 2) << (j - 1)));
                const T *x = Fa + 2 * u * K * V, *y = x + K * V;
                T *z = Fb + u * K * V;
#pragma omp simd
                for (int64_t i = 0; i < K * V; i++) z[i] = f * x[i] + y[i];
            }
        }
        for (int64_t j = 1; j <= J; j++) { /* reads: a block's second half, the state of its first */
            const int64_t half = C << (j - 1);
            const T *Rj = R + (bh * J + j - 1) * TT, *Fj = Fh + NAME(offset)(N, j - 1) * K * V;
            for (int64_t a0 = 0, u = 0; a0 < TT; a0 += 2 * half, u += 2) {
                const int64_t s1 = a0 + half, mr = TT - s1 < half ? TT - s1 : half;
                if (mr <= 0) continue;
                NAME(gemm)(mr, V, K, 1, qh + s1 * SK, SK, 1, Fj + u * K * V, V, Y, V, 0); /* Q_S U */
                NAME(add_scaled)(mr, V, Rj + s1, Y, oh + s1 * SV, SV);
            }
        }
    }
    free(buf);
}

/* the weights' backward in a chunk: from dA (m rows, C apart) and P, A = P * M and, in place, dP =
   dA * M (both zero above the diagonal up to the row block's end); db (C), dlambda's rows (ll apart,
   levels <= log2 C) */
static void NAME(weigh_backward)(int64_t m, int64_t C, const T *b, const T *lam, int64_t ll, const T *P, T *A,
                                 T *dA, T *db, T *dlam) {
    for (int64_t i = 0; i < C; i++) db[i] = 0;
    for (int64_t i = 0; i < m; i++) {
        const T *li = lam + i * ll;
        T *dli = dlam + i * ll, rowsum = 0;
        const int64_t end = (i / ROWS + 1) * ROWS < m ? (i / ROWS + 1) * ROWS : m;
        for (int64_t l = 1; (int64_t)1 << (l - 1) <= i; l++) {
            if (!((i >> (l - 1)) & 1)) continue;
            const int64_t hi = i >> (l - 1) << (l - 1), lo = hi - ((int64_t)1 << (l - 1));
            T dl = 0;
#pragma omp simd reduction(+ : dl, rowsum)
            for (int64_t j = lo; j < hi; j++) {
                const T d = EXP(b[i] - b[j]), dm = dA[i * C + j] * P[i * C + j], g = dm * d * li[l];
                A[i * C + j] = P[i * C + j] * d * li[l];
                dA[i * C + j] *= d * li[l];
                dl += dm * d;
                rowsum += g;
                db[j] -= g;
            }
            dli[l] = dl;
        }
        dli[0] = dA[i * C + i] * P[i * C + i];
        A[i * C + i] = P[i * C + i] * li[0];
        dA[i * C + i] *= li[0];
        db[i] += rowsum; /* the diagonal's G = dM M has b_i - b_i: no part in db */
        for (int64_t j = i + 1; j < end; j++) A[i * C + j] = dA[i * C + j] = 0;
    }
}

void NAME(backward)(int64_t TT, int64_t H, int64_t K, int64_t V, int64_t C, int64_t nl, int64_t h0,
                    int64_t h1, const T *q, const T *k, const T *v, const T *b, const T *lam, const T *R,
                    const T *P, const T *F, const T *dO, T *dq, T *dk, T *dv, T *db, T *dlam, T *dR) {
    const int64_t N = (TT + C - 1) / C, J = NAME(levels)(N), NT = NAME(offset)(N, J), SK = H * K, SV = H * V;
    const int64_t half_max = J ? (C << (J - 1)) : 0, KV = K > V ? K : V;
    T *buf = malloc(sizeof(T) * (KV * C + 2 * C * C + K * V + 2 * half_max * KV + NT * K * V + 2 * C + 2 * N + 1));
    T *XT = buf, *A = XT + KV * C, *dA = A + C * C, *UT = dA + C * C, *X = UT + K * V, *Y = X + half_max * KV;
    T *dF = Y + half_max * KV, *w = dF + NT * K * V, *dw = w + C, *e = dw + C, *de = e + N;
    for (int64_t bh = h0; bh < h1; bh++) {
        const int64_t bi = bh / H, hi = bh % H, rk = bi * TT * SK + hi * K, rv = bi * TT * SV + hi * V;
        const int64_t rl = (bi * TT * H + hi) * nl;
        const T *qh = q + rk, *kh = k + rk, *vh = v + rv, *dOh = dO + rv, *bh_ = b + bh * N * C;
        T *dqh = dq + rk, *dkh = dk + rk, *dvh = dv + rv, *dbh = db + bh * N * C;
        for (int64_t t = 0; t < TT; t++) memset(dlam + rl + t * H * nl, 0, sizeof(T) * nl);
        memset(dR + bh * J * TT, 0, sizeof(T) * J * TT);
        for (int64_t n = 0; n < N; n++) {
            const int64_t t0 = n * C, m = TT - t0 < C ? TT - t0 : C, c = (bh * N + n) * C;
            NAME(transpose)(m, V, vh + t0 * SV, SV, XT);
            NAME(lower)(m, V, C, dOh + t0 * SV, SV, XT, dA); /* dA = dO V^T */
            NAME(weigh_backward)(m, C, b + c, lam + rl + t0 * H * nl, H * nl, P + c * C, A, dA, db + c,
                                 dlam + rl + t0 * H * nl);
            NAME(triangle)(m, V, C, A, 1, dOh + t0 * SV, SV, dvh + t0 * SV, SV);  /* dV = A^T dO */
            NAME(triangle)(m, K, C, dA, 0, kh + t0 * SK, SK, dqh + t0 * SK, SK); /* dQ = dP K */
            NAME(triangle)(m, K, C, dA, 1, qh + t0 * SK, SK, dkh + t0 * SK, SK); /* dK = dP^T Q */
        }
        if (!J) continue;
        const T *Fh = F + bh * NT * K * V;
        memset(dF, 0, sizeof(T) * NT * K * V);
        for (int64_t n = 0; n < N; n++) e[n] = bh_[n * C + C - 1], de[n] = 0;
        for (int64_t j = J; j >= 1; j--) {
            const int64_t half = C << (j - 1), r = (bh * J + j - 1) * TT, at = NAME(offset)(N, j - 1) * K * V;
            const T *Rj = R + r;
            T *dRj = dR + r;
            for (int64_t a0 = 0, u = 0; a0 < TT; a0 += 2 * half, u += 2) { /* the reads of level j */
                const int64_t s1 = a0 + half, mr = TT - s1 < half ? TT - s1 : half;
                if (mr <= 0) continue;
                NAME(transpose)(K, V, Fh + at + u * K * V, V, UT);
                NAME(gemm)(mr, K, V, 1, dOh + s1 * SV, SV, 1, UT, K, X, K, 0); /* Z = dO_S U^T */
                NAME(dots)(mr, K, qh + s1 * SK, SK, X, dRj + s1);
                NAME(add_scaled)(mr, K, Rj + s1, X, dqh + s1 * SK, SK);
                NAME(scaled)(mr, V, dOh + s1 * SV, SV, Rj + s1, 1, Y);
                NAME(gemm)(K, V, mr, 1, qh + s1 * SK, 1, SK, Y, V, dF + at + u * K * V, V, 1); /* Q_S^T diag(R) dO_S */
            }
            if (j == J) continue;
            /* the merge into level j's blocks, backwards: dF to the halves, the decay's gradient to e */
            const int64_t up = NAME(offset)(N, j) * K * V;
            for (int64_t u = 0; (u + 1) << j < N; u++) {
                const T *g = dF + up + u * K * V, *x = Fh + at + 2 * u * K * V;
                T *dx = dF + at + 2 * u * K * V;
                const int64_t lo = (2 * u + 1) << (j - 1), hi = (2 * u + 2) << (j - 1);
                const T f = EXP(NAME(span)(e, lo, hi));
                T dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int64_t i = 0; i < K * V; i++) {
                    dot += g[i] * x[i];
                    dx[i] += f * g[i];
                    dx[K * V + i] += g[i];
                }
                for (int64_t c = lo; c < hi; c++) de[c] += f * dot;
            }
        }
        for (int64_t n = 0; n + 1 < N; n++) { /* F_0's backward: each chunk's state to k, v and b */
            const int64_t t0 = n * C;
            const T *dS = dF + n * K * V;
            T sum = de[n];
            for (int64_t s = 0; s < C; s++) w[s] = EXP(bh_[n * C + C - 1] - bh_[n * C + s]);
            NAME(transpose)(K, V, dS, V, UT);
            NAME(gemm)(C, K, V, 1, vh + t0 * SV, SV, 1, UT, K, X, K, 0); /* Z' = V dS^T */
            NAME(dots)(C, K, kh + t0 * SK, SK, X, dw);
            NAME(add_scaled)(C, K, w, X, dkh + t0 * SK, SK);
            NAME(gemm)(C, V, K, 1, kh + t0 * SK, SK, 1, dS, V, Y, V, 0); /* K dS */
            NAME(add_scaled)(C, V, w, Y, dvh + t0 * SV, SV);
            for (int64_t s = 0; s < C; s++) {
                dbh[n * C + s] -= dw[s] * w[s];
                sum += dw[s] * w[s];
            }
            dbh[n * C + C - 1] += sum;
        }
    }
    free(buf);
}

#undef ROWS

#endif
