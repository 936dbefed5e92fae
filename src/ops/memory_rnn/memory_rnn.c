/* The Stack-RNN and the Tape-RNN on the CPU, one token at a time, forward and backward, compiled
   by cpu.py (src/ops/_cpu's `library`).

   Per batch row and step (as reference.py): h_t = relu(u_t + W_h h_{t-1} + W_r M_{t-1}[0]); the
   write value v_t = f(h_t) through `nl` Linear layers of widths dims[0] = H .. dims[nl] = C, relu
   between them; p_t = softmax(W_a h_t + b_a); then the memory M (K cells of C):
       stack (kind 0, A = 3):  M_t[i] = p_0 P[i] + p_1 Q[i] + p_2 M_{t-1}[i],
                               P = (v_t, M_{t-1}[0 .. K-2]) (push), Q = (M_{t-1}[1 .. K-1], 0) (pop)
       tape (kind 1):          M_t[i] = sum_a p_a W[(i - s_a) mod K],  W = M_{t-1} with W[0] = v_t
   Layouts: u, y (B, T, H); W_h (H, H), W_r (H, C), W_a (A, H) row-major (out, in); the write
   layers' weights packed one after another in `wW` (each (dims[l+1], dims[l])), their biases in
   `wb`; states h (B, H), M (B, K, C). The rows are independent: a call does rows [b0, b1)
   (threads take disjoint ranges). The forward saves for the backward each step's memory M_t
   (B, T, K, C), p_t (B, T, A) and the write layers' outputs z_t (B, T, Z), Z = dims[1] + .. +
   dims[nl] (the hidden ones after relu, then v_t).

   The backward walks the steps back (backprop through time, nothing recomputed): with the carried
   gradients dh of h_t (through W_h from step t + 1) and dM of M_t, per step
       memory:   dp_a = <dM, the action's term>,  dv and dM_{t-1} from the transposed shifts
       softmax:  dl_a = p_a (dp_a - sum_b p_b dp_b);   dh += W_a^T dl + (f's backward of dv)
       relu:     da = dh [h_t > 0];  du_t = da;  dh <- W_h^T da;  dM_{t-1}[0] += W_r^T da
   and the weights' gradients summed over the steps into this call's own buffers (the caller sums
   the threads'). libm's exp in both dtypes. The file includes itself once per dtype. */

#ifndef T
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define T float
#define EXP expf
#define NAME(x) CAT(memory_rnn_float32_, x)
#include "memory_rnn.c"
#undef T
#undef EXP
#undef NAME

#define T double
#define EXP exp
#define NAME(x) CAT(memory_rnn_float64_, x)
#include "memory_rnn.c"

#else

/* out[i] (+)= sum_k W[i, k] x[k] (+ b[i]) for i < n, W (n, m) row-major; `add`: onto out */
static inline void NAME(matvec)(int64_t n, int64_t m, const T *W, const T *x, const T *b, int add, T *out) {
    for (int64_t i = 0; i < n; i++) {
        const T *Wi = W + i * m;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < m; k++) s += Wi[k] * x[k];
        out[i] = (add ? out[i] : 0) + (b ? b[i] : 0) + s;
    }
}

/* out[k] += sum_i W[i, k] g[i] (W (n, m)): the transposed product */
static inline void NAME(matvec_t)(int64_t n, int64_t m, const T *W, const T *g, T *out) {
    for (int64_t i = 0; i < n; i++) {
        const T *Wi = W + i * m, gi = g[i];
#pragma omp simd
        for (int64_t k = 0; k < m; k++) out[k] += gi * Wi[k];
    }
}

/* dW[i, k] += g[i] x[k] (dW (n, m)) */
static inline void NAME(outer)(int64_t n, int64_t m, const T *g, const T *x, T *dW) {
    for (int64_t i = 0; i < n; i++) {
        T *dWi = dW + i * m;
        const T gi = g[i];
#pragma omp simd
        for (int64_t k = 0; k < m; k++) dWi[k] += gi * x[k];
    }
}

/* The source cell of action a at cell i (-1: zero), for a stack (push, pop, no-op; cell -1 of the
   old memory is v) or a tape (offs[a] = -s_a mod K) */
static inline int64_t NAME(source)(int64_t kind, int64_t K, const int64_t *offs, int64_t a, int64_t i) {
    if (kind == 0) return a == 0 ? i - 1 : (a == 1 ? (i + 1 < K ? i + 1 : -2) : i);
    const int64_t j = i + offs[a];
    return j >= K ? j - K : j;
}

/* The memory update: Mn = the actions' mix of Mo (with v in cell 0 for the tape, above the top for
   the stack push); cell index -1 reads v, -2 reads zero */
static void NAME(update)(int64_t kind, int64_t K, int64_t C, int64_t A, const int64_t *offs, const T *Mo,
                         const T *v, const T *p, T *Mn) {
    memset(Mn, 0, K * C * sizeof(T));
    for (int64_t a = 0; a < A; a++)
        for (int64_t i = 0; i < K; i++) {
            int64_t j = NAME(source)(kind, K, offs, a, i);
            if (kind == 1 && j == 0) j = -1; /* the tape writes v under the head first */
            if (j == -2) continue;
            const T *src = j == -1 ? v : Mo + j * C;
            for (int64_t c = 0; c < C; c++) Mn[i * C + c] += p[a] * src[c];
        }
}

/* -off mod K per tape action */
static void NAME(offsets)(int64_t kind, int64_t K, int64_t A, const int64_t *shifts, int64_t *offs) {
    for (int64_t a = 0; a < A; a++) offs[a] = kind == 1 ? (((-shifts[a]) % K) + K) % K : 0;
}

/* h (H), the write layers' outputs z (Z; v is the last C) and p (A) of one step from a = the preactivation */
static void NAME(heads)(int64_t H, int64_t A, int64_t nl, const int64_t *dims, const T *wW, const T *wb, const T *Wa,
                        const T *ba, const T *h, T *z, T *p) {
    const T *x = h, *W = wW, *b = wb;
    T *out = z;
    for (int64_t l = 0; l < nl; l++) {
        NAME(matvec)(dims[l + 1], dims[l], W, x, b, 0, out);
        if (l + 1 < nl)
            for (int64_t i = 0; i < dims[l + 1]; i++) out[i] = out[i] > 0 ? out[i] : 0;
        W += dims[l + 1] * dims[l];
        b += dims[l + 1];
        x = out;
        out += dims[l + 1];
    }
    NAME(matvec)(A, H, Wa, h, ba, 0, p);
    T mx = p[0], s = 0;
    for (int64_t a = 1; a < A; a++) mx = p[a] > mx ? p[a] : mx;
    for (int64_t a = 0; a < A; a++) s += (p[a] = EXP(p[a] - mx));
    for (int64_t a = 0; a < A; a++) p[a] /= s;
}

void NAME(forward)(int64_t B, int64_t Tn, int64_t H, int64_t C, int64_t K, int64_t A, int64_t nl, const int64_t *dims,
                   int64_t kind, const int64_t *shifts, int64_t b0, int64_t b1, const T *u, const T *Wh, const T *Wr,
                   const T *wW, const T *wb, const T *Wa, const T *ba, const T *h0, const T *M0, T *y, T *Ms, T *ps,
                   T *zs, T *hT, T *MT) {
    int64_t Z = 0, offs[A];
    for (int64_t l = 1; l <= nl; l++) Z += dims[l];
    NAME(offsets)(kind, K, A, shifts, offs);
    T *work = malloc(sizeof(T) * (2 * H + 2 * K * C + Z + A)); /* h, a, M, the new M, z, p */
    T *h = work, *pre = h + H, *M = pre + H, *Mn = M + K * C, *z = Mn + K * C, *p = z + Z;
    for (int64_t b = b0; b < b1; b++) {
        if (h0) memcpy(h, h0 + b * H, H * sizeof(T)); else memset(h, 0, H * sizeof(T));
        if (M0) memcpy(M, M0 + b * K * C, K * C * sizeof(T)); else memset(M, 0, K * C * sizeof(T));
        for (int64_t t = 0; t < Tn; t++) {
            const int64_t bt = b * Tn + t;
            memcpy(pre, u + bt * H, H * sizeof(T));
            NAME(matvec)(H, H, Wh, h, NULL, 1, pre);
            NAME(matvec)(H, C, Wr, M, NULL, 1, pre);
            for (int64_t i = 0; i < H; i++) h[i] = pre[i] > 0 ? pre[i] : 0;
            memcpy(y + bt * H, h, H * sizeof(T));
            NAME(heads)(H, A, nl, dims, wW, wb, Wa, ba, h, z, p);
            NAME(update)(kind, K, C, A, offs, M, z + Z - C, p, Mn);
            memcpy(M, Mn, K * C * sizeof(T));
            if (Ms) { /* saved for the backward */
                memcpy(Ms + bt * K * C, M, K * C * sizeof(T));
                memcpy(ps + bt * A, p, A * sizeof(T));
                memcpy(zs + bt * Z, z, Z * sizeof(T));
            }
        }
        memcpy(hT + b * H, h, H * sizeof(T));
        memcpy(MT + b * K * C, M, K * C * sizeof(T));
    }
    free(work);
}

/* The memory update's backward at one step: dM (K, C) of M_t -> dp (A), dv (C) and dMo (K, C) of
   M_{t-1} (overwritten), from Mo = M_{t-1}, v, p */
static void NAME(update_backward)(int64_t kind, int64_t K, int64_t C, int64_t A, const int64_t *offs, const T *Mo,
                                  const T *v, const T *p, const T *dM, T *dp, T *dv, T *dMo) {
    memset(dMo, 0, K * C * sizeof(T));
    memset(dv, 0, C * sizeof(T));
    for (int64_t a = 0; a < A; a++) {
        T s = 0;
        for (int64_t i = 0; i < K; i++) {
            int64_t j = NAME(source)(kind, K, offs, a, i);
            if (kind == 1 && j == 0) j = -1;
            if (j == -2) continue;
            const T *src = j == -1 ? v : Mo + j * C, *g = dM + i * C;
            T *dsrc = j == -1 ? dv : dMo + j * C;
            for (int64_t c = 0; c < C; c++) {
                s += g[c] * src[c];
                dsrc[c] += p[a] * g[c];
            }
        }
        dp[a] = s;
    }
}

void NAME(backward)(int64_t B, int64_t Tn, int64_t H, int64_t C, int64_t K, int64_t A, int64_t nl, const int64_t *dims,
                    int64_t kind, const int64_t *shifts, int64_t b0, int64_t b1, const T *Wh, const T *Wr,
                    const T *wW, const T *Wa, const T *h0, const T *M0, const T *y, const T *Ms, const T *ps,
                    const T *zs, const T *dy, const T *dhT, const T *dMT, T *du, T *dWh, T *dWr, T *dwW, T *dwb,
                    T *dWa, T *dba, T *dh0, T *dM0) {
    int64_t Z = 0, maxw = H, offs[A];
    for (int64_t l = 1; l <= nl; l++) {
        Z += dims[l];
        maxw = dims[l] > maxw ? dims[l] : maxw;
    }
    NAME(offsets)(kind, K, A, shifts, offs);
    /* dh (carried), dH (this step's), da, dM (of M_t), dMo (of M_{t-1}), a zero memory, dp, dl, two layer buffers */
    T *work = calloc(3 * H + 3 * K * C + 2 * A + 2 * maxw, sizeof(T));
    T *dh = work, *dH = dh + H, *da = dH + H, *dM = da + H, *dMo = dM + K * C, *M00 = dMo + K * C, *dp = M00 + K * C;
    T *dl = dp + A, *g0 = dl + A, *g1 = g0 + maxw;
    for (int64_t b = b0; b < b1; b++) {
        memcpy(dh, dhT + b * H, H * sizeof(T));
        memcpy(dM, dMT + b * K * C, K * C * sizeof(T));
        for (int64_t t = Tn - 1; t >= 0; t--) {
            const int64_t bt = b * Tn + t;
            const T *h = y + bt * H, *z = zs + bt * Z, *p = ps + bt * A, *v = z + Z - C;
            const T *hp = t > 0 ? y + (bt - 1) * H : (h0 ? h0 + b * H : NULL);      /* NULL: zeros */
            const T *Mo = t > 0 ? Ms + (bt - 1) * K * C : (M0 ? M0 + b * K * C : M00);
            NAME(update_backward)(kind, K, C, A, offs, Mo, v, p, dM, dp, g0, dMo); /* dp, dv (g0), dM_{t-1} */
            /* the softmax, then the action logits' Linear */
            T pd = 0;
            for (int64_t a = 0; a < A; a++) pd += p[a] * dp[a];
            for (int64_t a = 0; a < A; a++) dl[a] = p[a] * (dp[a] - pd);
            for (int64_t i = 0; i < H; i++) dH[i] = dy[bt * H + i] + dh[i];
            NAME(matvec_t)(A, H, Wa, dl, dH);
            NAME(outer)(A, H, dl, h, dWa);
            for (int64_t a = 0; a < A; a++) dba[a] += dl[a];
            /* the write layers, last first: g0 holds the gradient of layer l's output */
            int64_t wofs = 0, bofs = 0, zofs = Z;
            for (int64_t l = 0; l < nl; l++) {
                wofs += dims[l + 1] * dims[l];
                bofs += dims[l + 1];
            }
            for (int64_t l = nl - 1; l >= 0; l--) {
                const int64_t n = dims[l + 1], m = dims[l];
                wofs -= n * m;
                bofs -= n;
                zofs -= n;
                const T *out = z + zofs, *in = l > 0 ? z + zofs - m : h;
                if (l + 1 < nl)
                    for (int64_t i = 0; i < n; i++) g0[i] = out[i] > 0 ? g0[i] : 0; /* relu */
                NAME(outer)(n, m, g0, in, dwW + wofs);
                for (int64_t i = 0; i < n; i++) dwb[bofs + i] += g0[i];
                memset(g1, 0, m * sizeof(T));
                NAME(matvec_t)(n, m, wW + wofs, g0, g1);
                memcpy(g0, g1, m * sizeof(T));
            }
            for (int64_t i = 0; i < H; i++) da[i] = h[i] > 0 ? dH[i] + g0[i] : 0;
            memcpy(du + bt * H, da, H * sizeof(T));
            if (hp) NAME(outer)(H, H, da, hp, dWh);
            NAME(outer)(H, C, da, Mo, dWr);
            memset(dh, 0, H * sizeof(T));
            NAME(matvec_t)(H, H, Wh, da, dh);
            NAME(matvec_t)(H, C, Wr, da, dMo);
            memcpy(dM, dMo, K * C * sizeof(T));
        }
        if (dh0) {
            memcpy(dh0 + b * H, dh, H * sizeof(T));
            memcpy(dM0 + b * K * C, dM, K * C * sizeof(T));
        }
    }
    free(work);
}

#endif
