/* The selective scan of S6 (Mamba) on the CPU, forward only, compiled by cpu.py.

   For each batch b and channel d, a state h of N values runs along the L steps:
       h_t[n] = exp(delta_t A[d, n]) h_{t-1}[n] + delta_t u_t B_t[n],     h_{-1} = h0 (or 0)
       y_t    = sum_n C_t[n] h_t[n]
   and the last state is returned. delta is taken as given (bias and softplus are applied by the
   caller, as are D u and the z gate). The state stays in registers: nothing of size
   (batch, D, N, L) is ever written, so the cost is the B D N L exponentials. The float32 loop
   uses its own exponential (below), which the compiler vectorises over n; float64 uses libm.

   u, delta, y: (batch, D, L) contiguous; A: (D, N); h0, last: (batch, D, N) contiguous (h0 may
   be NULL). B and C: element (b, g, t, n) at b sb + g sg + t st + n, channel d reading group
   g = d / per_group (strides of 0 broadcast). A call does channels [d0, d1) of every batch. */

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) in float32: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^7
   (truncation < 5e-9 relative, below float32 rounding), 2^k put into the exponent bits. Within
   ~2 ulp of expf; 0 below -86.5 (where expf < 3e-38), inf above 88.7, NaN kept. Branch-free,
   so that loops over it vectorise. */
static inline float exp_float(float x) {
    const float lo = -86.5f, hi = 88.7f;
    const float xc = x < lo ? lo : (x > hi ? hi : x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float k = (xc * 1.44269504f + shifter) - shifter;
    const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f; /* ln2 in two parts */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 126) << 23; /* 2^(k-1): stays finite at k = 128 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float v = p * scale * 2.0f;
    return x != x ? x : (x < lo ? 0.0f : (x > hi ? INFINITY : v));
}

#define DEFINE_SELECTIVE_SCAN(NAME, T, EXP)                                                       \
    void NAME##_forward(int64_t batch, int64_t D, int64_t N, int64_t L, int64_t d0, int64_t d1,  \
                        const T *u, const T *delta, const T *A,                                   \
                        const T *B, int64_t Bsb, int64_t Bsg, int64_t Bst, int64_t B_per_group,   \
                        const T *C, int64_t Csb, int64_t Csg, int64_t Cst, int64_t C_per_group,   \
                        const T *h0, T *y, T *last) {                                             \
        T h[N], dA[N];                                                                            \
        for (int64_t b = 0; b < batch; b++)                                                       \
            for (int64_t d = d0; d < d1; d++) {                                                   \
                const int64_t row = b * D + d;                                                    \
                const T *ur = u + row * L, *dr = delta + row * L, *Ad = A + d * N;                \
                const T *Bp = B + b * Bsb + (d / B_per_group) * Bsg;                              \
                const T *Cp = C + b * Csb + (d / C_per_group) * Csg;                              \
                T *yr = y + row * L;                                                              \
                for (int64_t n = 0; n < N; n++) h[n] = h0 ? h0[row * N + n] : 0;                  \
                for (int64_t t = 0; t < L; t++) {                                                 \
                    const T dt = dr[t], x = dt * ur[t];                                           \
                    const T *Bt = Bp + t * Bst, *Ct = Cp + t * Cst;                               \
                    T acc = 0;                                                                    \
                    _Pragma("omp simd")                                                           \
                    for (int64_t n = 0; n < N; n++) dA[n] = EXP(dt * Ad[n]);                      \
                    _Pragma("omp simd reduction(+ : acc)")                                        \
                    for (int64_t n = 0; n < N; n++) {                                             \
                        h[n] = dA[n] * h[n] + x * Bt[n];                                          \
                        acc += Ct[n] * h[n];                                                      \
                    }                                                                             \
                    yr[t] = acc;                                                                  \
                }                                                                                 \
                for (int64_t n = 0; n < N; n++) last[row * N + n] = h[n];                         \
            }                                                                                     \
    }

DEFINE_SELECTIVE_SCAN(selective_scan_float32, float, exp_float)
DEFINE_SELECTIVE_SCAN(selective_scan_float64, double, exp)
