/* The selective scan of S6 (Mamba) on the CPU, forward and backward, compiled by cpu.py.

   For each batch b and channel d, a state h of N values runs along the L steps:
       h_t[n] = a_t[n] h_{t-1}[n] + delta_t u_t B_t[n],     h_{-1} = h0 (or 0)
       y_t    = sum_n C_t[n] h_t[n]
   with the transition a_t[n] = e = exp(delta_t A[d, n]), or with neg (Grazzi et al. 2024's
   signed transition) a_t[n] = 2 e - 1 in (-1, 1], whose derivative in delta_t A is 2 e.
   The last state is returned. delta is taken as given (bias and softplus are applied by the
   caller, as are D u and the z gate). The forward keeps one channel's N states in L1: nothing
   of size (batch, D, N, L) is ever written, so the cost is the B D N L exponentials. The backward
   recomputes one channel's states into an (L, N) scratch that stays in cache, then runs
   against the scan, as mamba-ssm's kernel does in SRAM. The float32 loops use their own
   exponential (below), which the compiler vectorises over n; float64 uses libm.

   u, delta, y: (batch, D, L) contiguous; A: (D, N); h0, last: (batch, D, N) contiguous (h0 may
   be NULL). B and C: element (b, g, t, n) at b sb + g sg + t st + n, channel d reading group
   g = d / per_group (strides of 0 broadcast). A call does channels [d0, d1) of every batch.
   The loops over one channel take N and neg as constants where they can (the SIZED calls):
   mamba's default N = 16 unrolls and keeps h in registers, and with a constant neg the unsigned
   loop does the arithmetic it did before the option (the same results, bit for bit). */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../_cpu/exp_float.h"

/* f(N, neg, args...) with N = 16 and neg = 0 or 1 as constants where they are. The backward's f
   is always inlined, one copy per call site: left to itself the compiler shared one copy between
   two of them, neg a variable, and the unsigned backward ran ~5% slower than before the option. */
#define INLINE __attribute__((always_inline))
#define SIZED(f, N, neg, ...)                                                                     \
    do {                                                                                          \
        if ((N) == 16 && !(neg))                                                                  \
            f(16, 0, __VA_ARGS__);                                                                \
        else if ((N) == 16)                                                                       \
            f(16, 1, __VA_ARGS__);                                                                \
        else if (!(neg))                                                                          \
            f(N, 0, __VA_ARGS__);                                                                 \
        else                                                                                      \
            f(N, 1, __VA_ARGS__);                                                                 \
    } while (0)

#define DEFINE_SELECTIVE_SCAN(NAME, T, EXP)                                                       \
    /* One channel forward from h (N,), in place; y and/or the states hs (L, N) if not NULL. */   \
    static inline void NAME##_channel(int64_t N, int neg, int64_t L, const T *u,           \
                                             const T *delta, const T *A, const T *B, int64_t Bst, \
                                             const T *C, int64_t Cst, T *h, T *y, T *hs) {        \
        T dA[N];                                                                                  \
        for (int64_t t = 0; t < L; t++) {                                                         \
            const T dt = delta[t], x = dt * u[t];                                                 \
            const T *Bt = B + t * Bst, *Ct = C + t * Cst;                                         \
            T acc = 0;                                                                            \
            _Pragma("omp simd")                                                                   \
            for (int64_t n = 0; n < N; n++) {                                                     \
                const T e = EXP(dt * A[n]);                                                       \
                dA[n] = neg ? 2 * e - 1 : e;                                                      \
            }                                                                                     \
            _Pragma("omp simd reduction(+ : acc)")                                                \
            for (int64_t n = 0; n < N; n++) {                                                     \
                h[n] = dA[n] * h[n] + x * Bt[n];                                                  \
                acc += Ct[n] * h[n];                                                              \
            }                                                                                     \
            if (y) y[t] = acc;                                                                    \
            if (hs)                                                                               \
                for (int64_t n = 0; n < N; n++) hs[t * N + n] = h[n];                             \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    void NAME##_forward(int64_t batch, int64_t D, int64_t N, int64_t L, int64_t d0, int64_t d1,   \
                        int64_t neg, const T *u, const T *delta, const T *A,                      \
                        const T *B, int64_t Bsb, int64_t Bsg, int64_t Bst, int64_t B_per_group,   \
                        const T *C, int64_t Csb, int64_t Csg, int64_t Cst, int64_t C_per_group,   \
                        const T *h0, T *y, T *last) {                                             \
        for (int64_t b = 0; b < batch; b++)                                                       \
            for (int64_t d = d0; d < d1; d++) {                                                   \
                const int64_t row = b * D + d;                                                    \
                T *h = last + row * N;                                                            \
                for (int64_t n = 0; n < N; n++) h[n] = h0 ? h0[row * N + n] : 0;                  \
                const T *Bd = B + b * Bsb + (d / B_per_group) * Bsg;                              \
                const T *Cd = C + b * Csb + (d / C_per_group) * Csg;                              \
                SIZED(NAME##_channel, N, neg, L, u + row * L, delta + row * L, A + d * N, Bd,     \
                      Bst, Cd, Cst, h, y + row * L, 0);                                           \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    /* One channel against the scan, from its states recomputed into hs (L, N), with              \
       g = dLoss/dh_t = gy_t C_t + a_{t+1} g_{t+1} (+ grad_last at the end), e = exp(dt_t A):     \
           dC_t += gy_t h_t,  dB_t += g x_t,  dx_t = g . B_t,  du_t = dx_t dt_t,                  \
           ddt_t = dx_t u_t + sum_n g h_{t-1} a' A,  dA += g h_{t-1} a' dt_t,  dh0 = a_0 g_0,     \
       a' = da/d(dt A) = e (2 e with neg).                                                        \
       h0 (N,); g (N,) = grad_last on entry, dLoss/dh0 on return; gA (N,) and the B, C gradients  \
       accumulate; du, ddt (L,) are written; hs: (L, N) scratch. */                               \
    static inline INLINE void NAME##_channel_backward(int64_t N, int neg, int64_t L,              \
                                                      const T *u, const T *delta, const T *A,     \
                                                      const T *B, int64_t Bst, const T *C,        \
                                                      int64_t Cst, const T *h0, const T *gy, T *g,\
                                                      T *gA, T *gB, T *gC, T *du, T *ddt, T *hs) {\
        T h[N], dA[N];                                                                            \
        for (int64_t n = 0; n < N; n++) h[n] = h0[n];                                             \
        NAME##_channel(N, neg, L, u, delta, A, B, Bst, C, Cst, h, 0, hs);                         \
        for (int64_t t = L - 1; t >= 0; t--) {                                                    \
            const T dt = delta[t], x = dt * u[t];                                                 \
            const T *Bt = B + t * Bst, *Ct = C + t * Cst, *ht = hs + t * N;                       \
            const T *hp = t > 0 ? hs + (t - 1) * N : h0; /* h_{t-1} */                            \
            T *gBt = gB + t * Bst, *gCt = gC + t * Cst;                                           \
            T gx = 0, gdt = 0;                                                                    \
            _Pragma("omp simd")                                                                   \
            for (int64_t n = 0; n < N; n++) dA[n] = EXP(dt * A[n]);                               \
            _Pragma("omp simd reduction(+ : gx, gdt)")                                            \
            for (int64_t n = 0; n < N; n++) {                                                     \
                const T e = dA[n];                                                                \
                g[n] += gy[t] * Ct[n];                                                            \
                gCt[n] += gy[t] * ht[n];                                                          \
                gBt[n] += g[n] * x;                                                               \
                gx += g[n] * Bt[n];                                                               \
                const T gdA = g[n] * hp[n] * (neg ? 2 * e : e);                                   \
                gdt += gdA * A[n];                                                                \
                gA[n] += gdA * dt;                                                                \
                g[n] *= neg ? 2 * e - 1 : e;                                                      \
            }                                                                                     \
            du[t] = gx * dt;                                                                      \
            ddt[t] = gx * u[t] + gdt;                                                             \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* grad_B, grad_C: this call's own zeroed buffers in B's and C's layouts (channels of other   \
       calls share them); grad_A rows [d0, d1) are this call's; grad_last, grad_h0 may be NULL.   \
       hs: (L, N) scratch. */                                                                     \
    void NAME##_backward(int64_t batch, int64_t D, int64_t N, int64_t L, int64_t d0, int64_t d1,  \
                         int64_t neg, const T *u, const T *delta, const T *A,                     \
                         const T *B, int64_t Bsb, int64_t Bsg, int64_t Bst, int64_t B_per_group,  \
                         const T *C, int64_t Csb, int64_t Csg, int64_t Cst, int64_t C_per_group,  \
                         const T *h0, const T *grad_y, const T *grad_last, T *grad_u,             \
                         T *grad_delta, T *grad_A, T *grad_B, T *grad_C, T *grad_h0, T *hs) {     \
        T g[N], gA[N], zeros[N];                                                                  \
        for (int64_t n = 0; n < N; n++) zeros[n] = 0;                                             \
        for (int64_t d = d0; d < d1; d++) {                                                       \
            for (int64_t n = 0; n < N; n++) gA[n] = 0;                                            \
            for (int64_t b = 0; b < batch; b++) {                                                 \
                const int64_t row = b * D + d;                                                    \
                const int64_t Bo = b * Bsb + (d / B_per_group) * Bsg;                             \
                const int64_t Co = b * Csb + (d / C_per_group) * Csg;                             \
                const T *h0r = h0 ? h0 + row * N : zeros;                                         \
                for (int64_t n = 0; n < N; n++) g[n] = grad_last ? grad_last[row * N + n] : 0;    \
                SIZED(NAME##_channel_backward, N, neg, L, u + row * L, delta + row * L,           \
                      A + d * N, B + Bo, Bst, C + Co, Cst, h0r, grad_y + row * L, g, gA,          \
                      grad_B + Bo, grad_C + Co, grad_u + row * L, grad_delta + row * L,           \
                      hs);                                                                        \
                if (grad_h0)                                                                      \
                    for (int64_t n = 0; n < N; n++) grad_h0[row * N + n] = g[n];                  \
            }                                                                                     \
            for (int64_t n = 0; n < N; n++) grad_A[d * N + n] = gA[n];                            \
        }                                                                                         \
    }

DEFINE_SELECTIVE_SCAN(selective_scan_float32, float, exp_float)
DEFINE_SELECTIVE_SCAN(selective_scan_float64, double, exp)
