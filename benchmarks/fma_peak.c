/* The core's float32 multiply-add peak, for benchmarks/roofline.py: 12 independent chains of
 * 64-byte vector multiply-adds (a = a * x + y, contracted to FMAs under -O3 -march=native: one
 * 512-bit FMA a cycle on Zen 4, or two 256-bit ones where vectors are 32 bytes; the same flops),
 * `steps` rounds: 12 * 16 * 2 * steps flops. 12 chains cover the FMA latency (4 cycles) times the
 * issue width with room. The sums go to out[16] so the chains are kept. */

typedef float v16 __attribute__((vector_size(64)));

void fma_chains(long steps, float *out) {
    v16 a[12], x, y;
    for (int j = 0; j < 16; j++) {
        x[j] = 0.999999f;
        y[j] = 1e-7f;
    }
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 16; j++)
            a[i][j] = (float)i;
    for (long s = 0; s < steps; s++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = a[i] * x + y;
    }
    for (int j = 0; j < 16; j++) {
        float sum = 0;
        for (int i = 0; i < 12; i++)
            sum += a[i][j];
        out[j] = sum;
    }
}
