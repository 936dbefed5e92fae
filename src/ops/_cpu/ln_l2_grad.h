/* The gradient of the inner loss of TTT's and Titans' inner layer norm, a row at a time:
   d/dz 1/2 || LN_{w,b}(z) - (v - k) ||^2 = LNG, for x = z - mean z, inv = (mean x^2 + eps)^-1/2,
   zh = x inv, h = zh w^2 + (b + k - v) w, a = mean(h zh):  LNG = (h - mean h - zh a) inv,
   and its backward: from dg, with e = dg inv and e' = mean(e zh),
       dh = e - mean e - zh e',  dzh = dh w^2 - a e - e' h,  dinv = sum dg (h - mean h - zh a) + sum dzh x,
       dx = inv dzh - dinv inv^2 zh / D,  dz = dx - mean dx,
       dk += w dh,  dv = -w dh,  db += w dh,  dw += (b + k - v) dh + 2 w (dh zh)  (the last summed by the caller).
   Included once per dtype with T, SQRT and NAME set (no include guard). */

/* one row's LNG: zh, h (D) and g = LNG (D) from Z's, k's and v's rows; returns inv, sets *a = mean(h zh) */
static T NAME(lng)(int64_t D, T eps, const T *restrict z, const T *restrict k, const T *restrict v,
                   const T *restrict w, const T *restrict b, const T *restrict w2, T *restrict zh, T *restrict h,
                   T *restrict g, T *a) {
    T mean = 0, var = 0, hm = 0, hz = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t j = 0; j < D; j++) mean += z[j];
    mean /= D;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < D; j++) var += (z[j] - mean) * (z[j] - mean);
    const T inv = 1 / SQRT(var / D + eps);
#pragma omp simd reduction(+ : hm, hz)
    for (int64_t j = 0; j < D; j++) {
        zh[j] = (z[j] - mean) * inv;
        h[j] = zh[j] * w2[j] + (b[j] + k[j] - v[j]) * w[j];  /* chat = (b + k - v) w */
        hm += h[j];
        hz += h[j] * zh[j];
    }
    hm /= D;
    *a = hz / D;
#pragma omp simd
    for (int64_t j = 0; j < D; j++) g[j] = (h[j] - hm - zh[j] * *a) * inv;
    return inv;
}

/* LNG's backward for one row (lng's zh, h, a, inv): dz (D) from dg, and the target's and the layer
   norm's gradients: dk += w dh, dv = -w dh, dw += (b + k - v) dh, db += w dh, dw2 += dh zh (the
   caller adds 2 w dw2 to dw once, after its rows) */
static inline void NAME(lng_backward)(int64_t D, const T *restrict zh, const T *restrict h, T a, T inv,
                                      const T *restrict dg, const T *restrict k, const T *restrict v,
                                      const T *restrict w, const T *restrict b, const T *restrict w2, T *restrict dz,
                                      T *restrict dk, T *restrict dv, T *restrict dw, T *restrict db,
                                      T *restrict dw2) {
    T em = 0, ez = 0, hm = 0;
#pragma omp simd reduction(+ : em, ez, hm)
    for (int64_t j = 0; j < D; j++) {
        em += dg[j] * inv;
        ez += dg[j] * inv * zh[j];
        hm += h[j];
    }
    em /= D, ez /= D, hm /= D;
    T dinv = 0, dzx = 0;
#pragma omp simd reduction(+ : dinv, dzx)
    for (int64_t j = 0; j < D; j++) {
        const T e = dg[j] * inv, dh = e - em - zh[j] * ez;
        const T dzh = dh * w2[j] - a * e - ez * h[j];
        dinv += e * (h[j] - hm - zh[j] * a);
        dzx += dzh * zh[j];
        dw2[j] += dh * zh[j];
        dw[j] += dh * (b[j] + k[j] - v[j]);
        db[j] += dh * w[j];
        dk[j] += dh * w[j];
        dv[j] = -dh * w[j];
        dz[j] = dzh;
    }
    dinv = (dinv + dzx) / inv; /* sum dg (g / inv) + sum dzh x: dg = e / inv, x = zh / inv */
    T mean = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t j = 0; j < D; j++) {
        dz[j] = inv * dz[j] - dinv * inv * inv * zh[j] / D;
        mean += dz[j];
    }
    mean /= D;
#pragma omp simd
    for (int64_t j = 0; j < D; j++) dz[j] -= mean;
}
