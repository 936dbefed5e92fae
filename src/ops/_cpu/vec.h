/* The C loops' 64-byte vector (16 floats or 8 doubles, GCC's vector extension: one AVX-512
   register, two AVX2 or four NEON ones), its unaligned load, the sum of its lanes and a dot
   product. Included once per dtype with T, IT, LANES_N and NAME set (no include guard, but for its
   macros'); blocked.h includes it. */

typedef T NAME(vec) __attribute__((vector_size(64)));

static inline NAME(vec) NAME(load)(const T *p) {
    NAME(vec) x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* the sum of x's lanes: log2(LANES_N) rounds of adding x's lanes i ^ w to its lanes i, all in
   registers (gcc sums an `omp simd` reduction's lanes one at a time, in order, and halves copied
   out by memcpy went through the stack) */
#ifndef XOR8
#define XOR8(w, o) (o) ^ (w), (o + 1) ^ (w), (o + 2) ^ (w), (o + 3) ^ (w), (o + 4) ^ (w), (o + 5) ^ (w), \
                   (o + 6) ^ (w), (o + 7) ^ (w)
#if defined(__clang__) || __GNUC__ >= 12
#define XOR_SHUFFLE(x, ...) __builtin_shufflevector(x, x, __VA_ARGS__)
#else
#define XOR_SHUFFLE(x, ...) __builtin_shuffle(x, (IT __attribute__((vector_size(64)))){__VA_ARGS__})
#endif
#endif
static inline T NAME(hsum)(NAME(vec) x) {
#if LANES_N == 16
    x += XOR_SHUFFLE(x, XOR8(8, 0), XOR8(8, 8));
    x += XOR_SHUFFLE(x, XOR8(4, 0), XOR8(4, 8));
    x += XOR_SHUFFLE(x, XOR8(2, 0), XOR8(2, 8));
    x += XOR_SHUFFLE(x, XOR8(1, 0), XOR8(1, 8));
#else
    x += XOR_SHUFFLE(x, XOR8(4, 0));
    x += XOR_SHUFFLE(x, XOR8(2, 0));
    x += XOR_SHUFFLE(x, XOR8(1, 0));
#endif
    return x[0];
}

/* a . b (n): the whole vectors into two accumulators, their lanes summed once, the rest by four
   scalar chains (an `omp simd` reduction sums its lanes one at a time, in order, after the loop:
   a chain of 16 adds, which mesa_net's dots of 8 floats spent most of their time in) */
static inline T NAME(dot)(int64_t n, const T *restrict a, const T *restrict b) {
    NAME(vec) v0 = {0}, v1 = {0};
    int64_t i = 0;
    for (; i + 2 * LANES_N <= n; i += 2 * LANES_N) {
        v0 += NAME(load)(a + i) * NAME(load)(b + i);
        v1 += NAME(load)(a + i + LANES_N) * NAME(load)(b + i + LANES_N);
    }
    if (i + LANES_N <= n) {
        v0 += NAME(load)(a + i) * NAME(load)(b + i);
        i += LANES_N;
    }
    T s[4] = {i ? NAME(hsum)(v0 + v1) : 0, 0, 0, 0};
    for (; i + 4 <= n; i += 4)
        for (int64_t l = 0; l < 4; l++) s[l] += a[i + l] * b[i + l];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}
