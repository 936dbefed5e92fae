/* The Stack-RNN and the Tape-RNN on the CPU, one token at a time, forward and backward, compiled
   by cpu.py (src/ops/_cpu's `library`).

   Per batch row and step (as reference.py): h_t = relu(u_t + W_h h_{t-1} + W_r M_{t-1}[0]); the
   write value v_t = f(h_t) through `nl` Linear layers of widths dims[0] = H .. dims[nl] = C, relu
   between them; p_t = softmax(W_a h_t + b_a); then the memory M (K cells of C):
       stack (kind 0, A = 3):  M_t[i] = p_0 P[i] + p_1 Q[i] + p_2 M_{t-1}[i],
                               P = (v_t, M_{t-1}[0 .. K-2]) (push), Q = (M_{t-1}[1 .. K-1], 0) (pop)
       tape (kind 1):          M_t[i] = sum_a p_a W[(i - s_a) mod K],  W = M_{t-1} with W[0] = v_t
   Layouts: u, y (B, T, H); states h (B, H), M (B, K, C). Every weight comes in both layouts, (out,
   in) and its transpose (in, out), row-major: W_h, W_r (H, C), W_a (A, H), and the write layers
   packed one after another (each (dims[l+1], dims[l]), biases in `wb`). A call does rows [b0, b1)
   (threads take disjoint ranges), stepping them together: each product of the rows' vectors with a
   weight goes four rows at a time, the four rows' partial sums in registers over a 64-byte block
   of outputs while the weight's rows stream past once for the four (outputs fewer than a block:
   dot products over the other layout).

   The forward saves each step's memory M_t (B, T, K, C), p_t (B, T, A) and the write layers'
   outputs z_t (B, T, Z), Z = dims[1] + .. + dims[nl] (the hidden ones after relu, then v_t). The
   backward walks the steps back (backprop through time, nothing recomputed); with the carried
   gradients dh of h_t (through W_h from step t + 1) and dM of M_t, per step
       memory:   dp_a = <dM, the action's term>,  dv and dM_{t-1} from the transposed shifts
       softmax:  dl_a = p_a (dp_a - sum_b p_b dp_b);   dh += dl W_a + (f's backward of dv)
       relu:     da = dh [h_t > 0];  du_t = da;  dh <- da W_h;  dM_{t-1}[0] += da W_r
   It writes du, dl (B, T, A) and the write layers' output gradients g (B, T, Z); the weights'
   gradients are sums of their outer products with the saved inputs over (B, T), which cpu.py
   takes as matrix products. libm's exp. The file includes itself once per dtype. */

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

#define LANES (64 / (int64_t)sizeof(T))
typedef T NAME(vec) __attribute__((vector_size(64), aligned(sizeof(T))));

/* out_b[q0 .. q0 + LANES) += sum_k x_b[k] Wt[k, q0 ..] for four rows b (x_b at x + b sx, out_b at
   out + b so), Wt (m, n) */
static inline void NAME(block4)(int64_t m, int64_t n, int64_t q0, const T *x, int64_t sx, const T *Wt, T *out,
                                int64_t so) {
    NAME(vec) a0 = *(const NAME(vec) *)(out + q0), a1 = *(const NAME(vec) *)(out + so + q0);
    NAME(vec) a2 = *(const NAME(vec) *)(out + 2 * so + q0), a3 = *(const NAME(vec) *)(out + 3 * so + q0);
    for (int64_t k = 0; k < m; k++) {
        const NAME(vec) w = *(const NAME(vec) *)(Wt + k * n + q0);
        a0 += x[k] * w;
        a1 += x[sx + k] * w;
        a2 += x[2 * sx + k] * w;
        a3 += x[3 * sx + k] * w;
    }
    *(NAME(vec) *)(out + q0) = a0;
    *(NAME(vec) *)(out + so + q0) = a1;
    *(NAME(vec) *)(out + 2 * so + q0) = a2;
    *(NAME(vec) *)(out + 3 * so + q0) = a3;
}

/* the same for one row */
static inline void NAME(block1)(int64_t m, int64_t n, int64_t q0, const T *x, const T *Wt, T *out) {
    NAME(vec) a = *(const NAME(vec) *)(out + q0);
    for (int64_t k = 0; k < m; k++) a += x[k] * *(const NAME(vec) *)(Wt + k * n + q0);
    *(NAME(vec) *)(out + q0) = a;
}

/* out_b[j] += sum_k x_b[k] Wt[k, j] for the rows b < nb and j < n, the matrix given as Wt (m, n)
   and as its transpose W (n, m): blocks of LANES outputs through Wt, the rest as dot products
   with W's rows */
static void NAME(times)(int64_t nb, int64_t m, int64_t n, const T *x, int64_t sx, const T *W, const T *Wt, T *out,
                        int64_t so) {
    const int64_t full = n - n % LANES;
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4)
        for (int64_t q = 0; q < full; q += LANES) NAME(block4)(m, n, q, x + b * sx, sx, Wt, out + b * so, so);
    for (; b < nb; b++)
        for (int64_t q = 0; q < full; q += LANES) NAME(block1)(m, n, q, x + b * sx, Wt, out + b * so);
    for (b = 0; b < nb; b++)
        for (int64_t j = full; j < n; j++) {
            const T *Wj = W + j * m, *xb = x + b * sx;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t k = 0; k < m; k++) s += Wj[k] * xb[k];
            out[b * so + j] += s;
        }
}

/* The source cell of action a at cell i of the old memory: -1 reads v, -2 zero. Stack (push, pop,
   no-op; v above the top), tape (offs[a] = -s_a mod K; v written into cell 0) */
static inline int64_t NAME(source)(int64_t kind, int64_t K, const int64_t *offs, int64_t a, int64_t i) {
    if (kind == 0) return a == 0 ? i - 1 : (a == 1 ? (i + 1 < K ? i + 1 : -2) : i);
    const int64_t j = i + offs[a] >= K ? i + offs[a] - K : i + offs[a];
    return j == 0 ? -1 : j;
}

/* Mn (K, C) = the actions' mix of Mo, v */
static void NAME(update)(int64_t kind, int64_t K, int64_t C, int64_t A, const int64_t *offs, const T *Mo,
                         const T *v, const T *p, T *Mn) {
    memset(Mn, 0, K * C * sizeof(T));
    for (int64_t a = 0; a < A; a++)
        for (int64_t i = 0; i < K; i++) {
            const int64_t j = NAME(source)(kind, K, offs, a, i);
            if (j == -2) continue;
            const T *src = j == -1 ? v : Mo + j * C;
            for (int64_t c = 0; c < C; c++) Mn[i * C + c] += p[a] * src[c];
        }
}

/* its backward: dM (K, C) of Mn -> dp (A), dv (C) and dMo (K, C) (all overwritten) */
static void NAME(update_backward)(int64_t kind, int64_t K, int64_t C, int64_t A, const int64_t *offs, const T *Mo,
                                  const T *v, const T *p, const T *dM, T *dp, T *dv, T *dMo) {
    memset(dMo, 0, K * C * sizeof(T));
    memset(dv, 0, C * sizeof(T));
    for (int64_t a = 0; a < A; a++) {
        T s = 0;
        for (int64_t i = 0; i < K; i++) {
            const int64_t j = NAME(source)(kind, K, offs, a, i);
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

/* -s_a mod K per tape action; Z, the widest write layer */
static void NAME(setup)(int64_t kind, int64_t K, int64_t A, const int64_t *shifts, int64_t nl, const int64_t *dims,
                        int64_t *offs, int64_t *Z, int64_t *widest) {
    for (int64_t a = 0; a < A; a++) offs[a] = kind == 1 ? (((-shifts[a]) % K) + K) % K : 0;
    *Z = 0;
    *widest = dims[0];
    for (int64_t l = 1; l <= nl; l++) {
        *Z += dims[l];
        *widest = dims[l] > *widest ? dims[l] : *widest;
    }
}

void NAME(forward)(int64_t B, int64_t Tn, int64_t H, int64_t C, int64_t K, int64_t A, int64_t nl, const int64_t *dims,
                   int64_t kind, const int64_t *shifts, int64_t b0, int64_t b1, const T *u, const T *Wh,
                   const T *Wht, const T *Wr, const T *Wrt, const T *wW, const T *wWt, const T *wb, const T *Wa,
                   const T *Wat, const T *ba, const T *h0, const T *M0, T *y, T *Ms, T *ps, T *zs, T *hT, T *MT) {
    int64_t offs[A], Z, widest;
    NAME(setup)(kind, K, A, shifts, nl, dims, offs, &Z, &widest);
    const int64_t nb = b1 - b0, KC = K * C;
    T *work = malloc(sizeof(T) * (nb * (2 * H + KC + Z + A) + KC)); /* h, pre, M, z, logits (rows); new M */
    T *h = work, *pre = h + nb * H, *M = pre + nb * H, *z = M + nb * KC, *lg = z + nb * Z, *Mn = lg + nb * A;
    for (int64_t b = 0; b < nb; b++) {
        if (h0) memcpy(h + b * H, h0 + (b0 + b) * H, H * sizeof(T)); else memset(h + b * H, 0, H * sizeof(T));
        if (M0) memcpy(M + b * KC, M0 + (b0 + b) * KC, KC * sizeof(T)); else memset(M + b * KC, 0, KC * sizeof(T));
    }
    for (int64_t t = 0; t < Tn; t++) {
        for (int64_t b = 0; b < nb; b++) memcpy(pre + b * H, u + ((b0 + b) * Tn + t) * H, H * sizeof(T));
        NAME(times)(nb, H, H, h, H, Wh, Wht, pre, H);   /* += W_h h */
        NAME(times)(nb, C, H, M, KC, Wr, Wrt, pre, H);  /* += W_r M[0] */
        for (int64_t i = 0; i < nb * H; i++) h[i] = pre[i] > 0 ? pre[i] : 0;
        const T *in = h, *W = wW, *Wt = wWt, *bias = wb;
        int64_t sin = H, zo = 0;
        for (int64_t l = 0; l < nl; l++) { /* the write layers */
            const int64_t m = dims[l], n = dims[l + 1];
            for (int64_t b = 0; b < nb; b++) memcpy(z + b * Z + zo, bias, n * sizeof(T));
            NAME(times)(nb, m, n, in, sin, W, Wt, z + zo, Z);
            if (l + 1 < nl)
                for (int64_t b = 0; b < nb; b++)
                    for (int64_t j = 0; j < n; j++) z[b * Z + zo + j] = z[b * Z + zo + j] > 0 ? z[b * Z + zo + j] : 0;
            in = z + zo;
            sin = Z;
            W += n * m;
            Wt += n * m;
            bias += n;
            zo += n;
        }
        for (int64_t b = 0; b < nb; b++) memcpy(lg + b * A, ba, A * sizeof(T));
        NAME(times)(nb, H, A, h, H, Wa, Wat, lg, A);
        for (int64_t b = 0; b < nb; b++) {
            T *p = lg + b * A, mx = p[0], s = 0;
            for (int64_t a = 1; a < A; a++) mx = p[a] > mx ? p[a] : mx;
            for (int64_t a = 0; a < A; a++) s += (p[a] = EXP(p[a] - mx));
            for (int64_t a = 0; a < A; a++) p[a] /= s;
            NAME(update)(kind, K, C, A, offs, M + b * KC, z + b * Z + Z - C, p, Mn);
            memcpy(M + b * KC, Mn, KC * sizeof(T));
            const int64_t bt = (b0 + b) * Tn + t;
            memcpy(y + bt * H, h + b * H, H * sizeof(T));
            if (Ms) { /* saved for the backward */
                memcpy(Ms + bt * KC, M + b * KC, KC * sizeof(T));
                memcpy(ps + bt * A, p, A * sizeof(T));
                memcpy(zs + bt * Z, z + b * Z, Z * sizeof(T));
            }
        }
    }
    memcpy(hT + b0 * H, h, nb * H * sizeof(T));
    memcpy(MT + b0 * KC, M, nb * KC * sizeof(T));
    free(work);
}

void NAME(backward)(int64_t B, int64_t Tn, int64_t H, int64_t C, int64_t K, int64_t A, int64_t nl, const int64_t *dims,
                    int64_t kind, const int64_t *shifts, int64_t b0, int64_t b1, const T *Wh, const T *Wht,
                    const T *Wr, const T *Wrt, const T *wW, const T *wWt, const T *Wa, const T *Wat, const T *M0,
                    const T *y, const T *Ms, const T *ps, const T *zs, const T *dy, const T *dhT, const T *dMT, T *du,
                    T *dls, T *gs, T *dh0, T *dM0) {
    int64_t offs[A], Z, widest;
    NAME(setup)(kind, K, A, shifts, nl, dims, offs, &Z, &widest);
    const int64_t nb = b1 - b0, KC = K * C;
    /* rows: dh (carried), dH (this step's), dM (of M_t), dMo (of M_{t-1}), dl, two layer gradients;
       one zero memory, dp */
    T *work = calloc(nb * (2 * H + 2 * KC + A + 2 * widest) + KC + A, sizeof(T));
    T *dh = work, *dH = dh + nb * H, *dM = dH + nb * H, *dMo = dM + nb * KC, *dl = dMo + nb * KC;
    T *g0 = dl + nb * A, *g1 = g0 + nb * widest, *M00 = g1 + nb * widest, *dp = M00 + KC;
    memcpy(dh, dhT + b0 * H, nb * H * sizeof(T));
    memcpy(dM, dMT + b0 * KC, nb * KC * sizeof(T));
    int64_t wtotal = 0;
    for (int64_t l = 0; l < nl; l++) wtotal += dims[l + 1] * dims[l];
    for (int64_t t = Tn - 1; t >= 0; t--) {
        for (int64_t b = 0; b < nb; b++) { /* the memory update, then the softmax */
            const int64_t bt = (b0 + b) * Tn + t;
            const T *p = ps + bt * A, *v = zs + bt * Z + Z - C;
            const T *Mo = t > 0 ? Ms + (bt - 1) * KC : (M0 ? M0 + (b0 + b) * KC : M00);
            NAME(update_backward)(kind, K, C, A, offs, Mo, v, p, dM + b * KC, dp, g0 + b * widest, dMo + b * KC);
            T pd = 0, *dlb = dl + b * A;
            for (int64_t a = 0; a < A; a++) pd += p[a] * dp[a];
            for (int64_t a = 0; a < A; a++) dlb[a] = p[a] * (dp[a] - pd);
            memcpy(dls + bt * A, dlb, A * sizeof(T));
            for (int64_t i = 0; i < H; i++) dH[b * H + i] = dy[bt * H + i] + dh[b * H + i];
        }
        NAME(times)(nb, A, H, dl, A, Wat, Wa, dH, H); /* += dl W_a */
        /* the write layers, last first: g0 holds each row's gradient of layer l's output */
        int64_t wo = wtotal, zo = Z;
        for (int64_t l = nl - 1; l >= 0; l--) {
            const int64_t n = dims[l + 1], m = dims[l];
            wo -= n * m;
            zo -= n;
            for (int64_t b = 0; b < nb; b++) {
                const int64_t bt = (b0 + b) * Tn + t;
                T *g = g0 + b * widest;
                if (l + 1 < nl)
                    for (int64_t j = 0; j < n; j++) g[j] = zs[bt * Z + zo + j] > 0 ? g[j] : 0; /* relu */
                memcpy(gs + bt * Z + zo, g, n * sizeof(T));
            }
            T *into = l > 0 ? g1 : dH; /* layer 0's input is h */
            if (l > 0) memset(g1, 0, nb * widest * sizeof(T));
            NAME(times)(nb, n, m, g0, widest, wWt + wo, wW + wo, into, l > 0 ? widest : H);
            if (l > 0) memcpy(g0, g1, nb * widest * sizeof(T));
        }
        for (int64_t b = 0; b < nb; b++) { /* relu */
            const int64_t bt = (b0 + b) * Tn + t;
            for (int64_t i = 0; i < H; i++) {
                const T d = y[bt * H + i] > 0 ? dH[b * H + i] : 0;
                dH[b * H + i] = d;
                du[bt * H + i] = d;
            }
        }
        memset(dh, 0, nb * H * sizeof(T));
        NAME(times)(nb, H, H, dH, H, Wht, Wh, dh, H);     /* dh = da W_h */
        NAME(times)(nb, H, C, dH, H, Wrt, Wr, dMo, KC);   /* dM_{t-1}[0] += da W_r */
        memcpy(dM, dMo, nb * KC * sizeof(T));
    }
    if (dh0) {
        memcpy(dh0 + b0 * H, dh, nb * H * sizeof(T));
        memcpy(dM0 + b0 * KC, dM, nb * KC * sizeof(T));
    }
    free(work);
}

#endif
