/* The C loops' 64-byte vector (16 floats or 8 doubles, GCC's vector extension: one AVX-512
   register, two AVX2 or four NEON ones), its unaligned load, the sum of its lanes, a dot product,
   and PIN. Included once per dtype with T, IT, LANES_N and NAME set (no include guard, but for its
   macros'); blocked.h and mesa_net.c include it. */

#ifndef PIN
/* keeps a loaded vector in a register: gcc otherwise folds the load into each multiply-add that
   reads it (blocked.h's 4-by-4 block loaded each row of B 4 times a step instead of once, which
   kept it well short of the FMA peak that it reaches pinned, on a (16, 64) x (64, 64) product in L1) */
#if defined(__x86_64__) || defined(__i386__)
#define PIN(x) __asm__("" : "+v"(x))
#else
#define PIN(x) (void)0
#endif
#endif

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

/* a . b (n): by vectors, two accumulators, where n is a multiple of two vectors */
static inline T NAME(dot)(int64_t n, const T *restrict a, const T *restrict b) {
    if (n % (2 * LANES_N) == 0) {
        NAME(vec) s0 = {0}, s1 = {0};
        for (int64_t i = 0; i < n; i += 2 * LANES_N) {
            s0 += NAME(load)(a + i) * NAME(load)(b + i);
            s1 += NAME(load)(a + i + LANES_N) * NAME(load)(b + i + LANES_N);
        }
        return NAME(hsum)(s0 + s1);
    }
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
