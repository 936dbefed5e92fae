/* C loops for the Chomsky-hierarchy tasks of chomsky.py with a `LOOP` (the strings, the stack, the
   missing bit, the binary operations, compute_sqrt): a batch's examples from the random draws the
   torch path makes, written straight into its layout. Same draws, same batch: the torch path is the
   oracle, compared id for id in tests/test_chomsky_tasks.py.

   Row b of x, y (B, width), width = L + O: x = the n_b input ids, o_b <blank>s, <pad> to the end;
   y = -100, except the o_b outputs on the blanks (an output may itself be -100). The draws: the
   symbols as fields or digits of 62-bit words, or one id each, as chomsky.uniform_draw draws them.

   One pass a row and every id written once: the torch path makes ~5-25 passes over (B, L) int64
   tensors (index tensors, gathers, masks, the layout), each ~20-90 us at L 500. */

#include <stdint.h>
#include <stdlib.h>

#define IGNORE (-100)
#define WORD 62

/* x: <blank> over the o outputs, then <pad>; y: -100 on the inputs and the pads. */
static void frame(int64_t *x, int64_t *y, int64_t n, int64_t o, int64_t width, int64_t blank, int64_t pad) {
    for (int64_t t = 0; t < n; t++) y[t] = IGNORE;
    for (int64_t t = n; t < n + o; t++) x[t] = blank;
    for (int64_t t = n + o; t < width; t++) x[t] = pad, y[t] = IGNORE;
}

/* x[0..n): the row's first n ids 0..V-1, from its words w (per ids a word, chomsky.per_word: b-bit
   fields for V = 2^b, else the base-V digits of floor(w V^per / 2^62)) or its ids (per = 0). */
static void symbols(int64_t *x, const int64_t *draw, int64_t per, int64_t V, int64_t n) {
    if (!per) {
        for (int64_t t = 0; t < n; t++) x[t] = draw[t];
        return;
    }
    int64_t bits = (V & (V - 1)) ? 0 : __builtin_ctzll((uint64_t)V), power[WORD + 1];
    /* digits (per <= 13 for V >= 3): floor(u / V^i) as (u r_i) >> 64, r_i = floor(2^64 / V^i) + 1, exact
       for u < V^per <= 2^22 (u V^i < 2^64); digit i = floor(u / V^i) - V floor(u / V^(i+1)), each
       independent of the others (a division chain would serialise them) */
    uint64_t reciprocal[WORD + 1];
    power[0] = 1;
    for (int64_t i = 1; !bits && i <= per; i++) power[i] = power[i - 1] * V, reciprocal[i] = UINT64_MAX / power[i] + 1;
    for (int64_t w = 0; w * per < n; w++) {
        int64_t *out = x + w * per, stop = n - w * per < per ? n - w * per : per;
        if (bits) {
            int64_t word = draw[w];
            for (int64_t i = 0; i < stop; i++, word >>= bits) out[i] = word & (V - 1);
        } else {
            uint64_t u = (uint64_t)(((unsigned __int128)(uint64_t)draw[w] * power[per]) >> WORD), q[WORD + 1];
            q[0] = u;
            for (int64_t i = 1; i <= stop; i++) q[i] = (uint64_t)(((unsigned __int128)u * reciprocal[i]) >> 64);
            for (int64_t i = 0; i < stop; i++) out[i] = (int64_t)(q[i] - (uint64_t)V * q[i + 1]);
        }
    }
}

/* task 0 reverse_string: out_j = x_{n-1-j}; 1 duplicate_string: x_{j mod n}, j < 2n; 2 odds_first:
   x_1, x_3, .., then x_0, x_2, ..; 3 bucket_sort: x sorted (V symbols). draw: (B, stride). */
void strings(int64_t task, const int64_t *draw, int64_t stride, int64_t per, int64_t V, const int64_t *n,
             int64_t B, int64_t width, int64_t blank, int64_t pad, int64_t *x, int64_t *y) {
    int64_t *count = task == 3 ? malloc(V * sizeof(int64_t)) : NULL;
    for (int64_t b = 0; b < B; b++) {
        int64_t *xb = x + b * width, *yb = y + b * width, m = n[b], *out = yb + m;
        symbols(xb, draw + b * stride, per, V, m);
        frame(xb, yb, m, task == 1 ? 2 * m : m, width, blank, pad);
        if (task == 0) {
            for (int64_t j = 0; j < m; j++) out[j] = xb[m - 1 - j];
        } else if (task == 1) {
            for (int64_t j = 0; j < m; j++) out[j] = out[m + j] = xb[j];
        } else if (task == 2) {
            int64_t odd = m / 2;
            for (int64_t j = 0; j < odd; j++) out[j] = xb[2 * j + 1];
            for (int64_t j = odd; j < m; j++) out[j] = xb[2 * (j - odd)];
        } else {
            for (int64_t c = 0; c < V; c++) count[c] = 0;
            for (int64_t t = 0; t < m; t++) count[xb[t]]++;
            for (int64_t c = 0, j = 0; c < V; c++)
                for (int64_t i = 0; i < count[c]; i++) out[j++] = c;
        }
    }
    free(count);
}

/* missing_duplicate_string: a string of half = n / 2 bits twice (then 3 at odd n), position i_b
   set to 2 and its bit the output; n = 1: x = 1, output 1. words: (B, stride) bits. */
void missing_duplicate(const int64_t *words, int64_t stride, const int64_t *missing, const int64_t *n, int64_t B,
                       int64_t width, int64_t blank, int64_t pad, int64_t *x, int64_t *y) {
    for (int64_t b = 0; b < B; b++) {
        int64_t *xb = x + b * width, *yb = y + b * width, m = n[b], half = m / 2, i = missing[b];
        symbols(xb, words + b * stride, WORD, 2, half);
        for (int64_t t = half; t < 2 * half; t++) xb[t] = xb[t - half];
        if (m & 1) xb[m - 1] = 3;
        frame(xb, yb, m, 1, width, blank, pad);
        yb[m] = m == 1 ? 1 : xb[i];
        xb[i] = m == 1 ? 1 : 2;
    }
}

/* stack_manipulation: raw (B, stride) ids 0..5; t < k_b: the initial stack, bit raw mod 2 (pushed);
   then action 2 + raw mod 3 (2 pop, held at an empty stack; 3, 4 push 0, 1). Outputs: the final
   stack from the top, then 2 (the end), then -100 up to n + 1. */
void stack_manipulation(const int64_t *raw, int64_t stride, const int64_t *k, const int64_t *n, int64_t B,
                        int64_t width, int64_t blank, int64_t pad, int64_t *x, int64_t *y) {
    int64_t *stack = malloc(stride * sizeof(int64_t));  /* n <= stride = L */
    for (int64_t b = 0; b < B; b++) {
        int64_t *xb = x + b * width, *yb = y + b * width, m = n[b], h = 0, *out = yb + m;
        const int64_t *r = raw + b * stride;
        for (int64_t t = 0; t < m; t++) {
            int64_t token = t < k[b] ? r[t] % 2 : 2 + r[t] % 3;
            xb[t] = token;
            if (t < k[b]) stack[h++] = token;
            else if (token > 2) stack[h++] = token - 3;
            else if (h > 0) h--;
        }
        frame(xb, yb, m, m + 1, width, blank, pad);
        for (int64_t j = 0; j < h; j++) out[j] = stack[h - 1 - j];
        out[h] = 2;
        for (int64_t j = h + 1; j <= m; j++) out[j] = IGNORE;
    }
    free(stack);
}

/* bit i of a number in 16-bit limbs (bigint.py) */
static inline int64_t limb_bit(const int64_t *v, int64_t i) { return (v[i >> 4] >> (i & 15)) & 1; }

/* binary_addition (multiply 0) and binary_multiplication (1): a (its a_length bits), 2, m (the rest
   of the n - 1 bits), a and m as (B, k) 16-bit limbs; outputs the result's bits, least significant
   first, up to `size` (addition: its length, at least 1; multiplication: its length, n - 1 at
   n <= 2), then 2, then -100 (n + 1 outputs for addition, n for multiplication). */
void binary(int64_t multiply, const int64_t *a, const int64_t *m, int64_t k, const int64_t *a_length,
            const int64_t *n, int64_t B, int64_t width, int64_t blank, int64_t pad, int64_t *x, int64_t *y) {
    int64_t *r = malloc(2 * k * sizeof(int64_t));
    for (int64_t b = 0; b < B; b++) {
        int64_t *xb = x + b * width, *yb = y + b * width, nb = n[b], la = a_length[b], o = multiply ? nb : nb + 1;
        const int64_t *ab = a + b * k, *mb = m + b * k;
        for (int64_t t = 0; t < nb; t++) xb[t] = t < la ? limb_bit(ab, t) : t == la ? 2 : limb_bit(mb, t - la - 1);
        frame(xb, yb, nb, o, width, blank, pad);
        for (int64_t j = 0; j < 2 * k; j++) r[j] = 0;
        if (multiply) {  /* terms < 2^32, k of them a limb: no overflow below k = 2^31 */
            for (int64_t i = 0; i < k; i++)
                for (int64_t j = 0; j < k; j++) r[i + j] += ab[i] * mb[j];
        } else {
            for (int64_t j = 0; j < k; j++) r[j] = ab[j] + mb[j];
        }
        int64_t carry = 0, bits = 0;
        for (int64_t j = 0; j < 2 * k; j++) {
            int64_t v = r[j] + carry;
            r[j] = v & 0xFFFF, carry = v >> 16;
            if (r[j]) bits = 16 * j + 64 - __builtin_clzll((uint64_t)r[j]);
        }
        int64_t size = multiply ? (nb <= 2 ? nb - 1 : bits) : (bits > 1 ? bits : 1), *out = yb + nb;
        for (int64_t j = 0; j < o; j++) out[j] = j < size ? limb_bit(r, j) : j == size ? 2 : IGNORE;
    }
    free(r);
}

/* compute_sqrt: N = s^2 + 2q + c in n big-endian bits; s = isqrt(N) in ceil(n / 2) big-endian bits.
   s, q: (B, k) 16-bit limbs, c: (B,) bits. */
void compute_sqrt(const int64_t *s, const int64_t *q, const int64_t *c, int64_t k, const int64_t *n, int64_t B,
                  int64_t width, int64_t blank, int64_t pad, int64_t *x, int64_t *y) {
    int64_t *N = malloc(2 * k * sizeof(int64_t));
    for (int64_t b = 0; b < B; b++) {
        int64_t *xb = x + b * width, *yb = y + b * width, nb = n[b], h = (nb + 1) / 2, carry = 0;
        const int64_t *sb = s + b * k, *qb = q + b * k;
        for (int64_t j = 0; j < 2 * k; j++) N[j] = j < k ? 2 * qb[j] : 0;
        N[0] += c[b];
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) N[i + j] += sb[i] * sb[j];
        for (int64_t j = 0; j < 2 * k; j++) {
            int64_t v = N[j] + carry;
            N[j] = v & 0xFFFF, carry = v >> 16;
        }
        for (int64_t t = 0; t < nb; t++) xb[t] = limb_bit(N, nb - 1 - t);
        frame(xb, yb, nb, h, width, blank, pad);
        for (int64_t j = 0; j < h; j++) yb[nb + j] = limb_bit(sb, h - 1 - j);
    }
    free(N);
}

/* sign of a - b for k limbs (the highest differing limb's) */
static int64_t compare(const int64_t *a, const int64_t *b, int64_t k) {
    for (int64_t j = k - 1; j >= 0; j--)
        if (a[j] != b[j]) return a[j] < b[j] ? -1 : 1;
    return 0;
}

/* compute_sqrt's rejection test (chomsky.py, ComputeSqrt.draws) for m drawn (s, r = 2q + c):
   accepted = s >= 1, r <= 2s and s^2 + r < 2^n, the last as s < S_n or s = S_n and r <= R_n
   (S_n = isqrt(2^n - 1), R_n = 2^n - 1 - S_n^2 = 2 half_R_n + odd_R_n; tables (n_max + 1, k)). */
void sqrt_accepted(const int64_t *s, const int64_t *q, const int64_t *c, const int64_t *n, int64_t m, int64_t k,
                   const int64_t *S, const int64_t *half_R, const int64_t *odd_R, int64_t *accepted) {
    for (int64_t i = 0; i < m; i++) {
        const int64_t *si = s + i * k, *qi = q + i * k, ni = n[i];
        int64_t nonzero = 0, within = compare(qi, si, k), fits = compare(si, S + ni * k, k);
        for (int64_t j = 0; j < k; j++) nonzero |= si[j] != 0;
        if (fits == 0) {
            int64_t rest = compare(qi, half_R + ni * k, k);
            fits = rest < 0 || (rest == 0 && c[i] <= odd_R[ni]) ? -1 : 1;
        }
        accepted[i] = nonzero && (within < 0 || (within == 0 && c[i] == 0)) && fits < 0;
    }
}
