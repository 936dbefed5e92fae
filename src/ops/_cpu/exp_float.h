/* A branch-free float32 exponential for the C loops (selective_scan.c, gla.c, delta_rule.c, wkv.c). */

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) in float32: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^7
   (truncation < 6e-9 relative, below float32 rounding), 2^k put into the exponent bits. Within
   7.2e-8 = 0.6 x 2^-23 relative, as measured (the test allows 2.5 x 2^-23); 0 below -86.5, inf
   above 88.7, NaN kept. Branch-free, so that loops over it vectorise. */
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
