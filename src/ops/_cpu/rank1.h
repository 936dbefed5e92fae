/* X (K, V) += kt w^T, then o_out (V) = X^T (s qs): two multiply-adds per state element, four
   rows a pass so that the output row is loaded and stored once per four rows. The gla C loop's
   step (s = 1), which includes this file once per dtype with T and NAME set (so it has no
   include guard). */
static inline void NAME(rank1_update_read)(int64_t K, int64_t V, T s, const T *restrict kt, const T *restrict w,
                                           const T *restrict qs, T *restrict X, T *restrict o_out) {
    T o[V];
    for (int64_t j = 0; j < V; j++) o[j] = 0;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) {
        T *restrict r0 = X + i * V, *restrict r1 = r0 + V, *restrict r2 = r1 + V, *restrict r3 = r2 + V;
        const T q0 = s * qs[i], q1 = s * qs[i + 1], q2 = s * qs[i + 2], q3 = s * qs[i + 3];
#pragma omp simd
        for (int64_t j = 0; j < V; j++) {
            r0[j] += kt[i] * w[j];
            r1[j] += kt[i + 1] * w[j];
            r2[j] += kt[i + 2] * w[j];
            r3[j] += kt[i + 3] * w[j];
            o[j] += q0 * r0[j] + q1 * r1[j] + q2 * r2[j] + q3 * r3[j];
        }
    }
    for (; i < K; i++) {
        T *restrict row = X + i * V;
        const T qi = s * qs[i];
#pragma omp simd
        for (int64_t j = 0; j < V; j++) {
            row[j] += kt[i] * w[j];
            o[j] += qi * row[j];
        }
    }
    memcpy(o_out, o, V * sizeof(T));
}
