/* The C loops' 64-byte vector (16 floats or 8 doubles, GCC's vector extension: one AVX-512
   register, two AVX2 or four NEON ones), its unaligned load, and a dot product. Included once per
   dtype with T and NAME set (no include guard); blocked.h includes it. */

typedef T NAME(vec) __attribute__((vector_size(64)));

static inline NAME(vec) NAME(load)(const T *p) {
    NAME(vec) x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline T NAME(dot)(int64_t n, const T *restrict a, const T *restrict b) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
