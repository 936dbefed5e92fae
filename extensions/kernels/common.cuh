// Shared helpers of the CUDA kernels: float/double overloads and the tile size.
#pragma once
#include <c10/util/complex.h>

constexpr int kThreads = 256;  // threads per block = tile length in shared memory
constexpr double kTwoPi = 6.283185307179586476925286766559;

__device__ __forceinline__ float exp_(float a) { return expf(a); }
__device__ __forceinline__ double exp_(double a) { return exp(a); }
__device__ __forceinline__ void sincos_(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sincos_(double a, double* s, double* c) { sincos(a, s, c); }

// exp(x l) with the phase Im(x) l reduced modulo 2 pi in double (float32 Im(x) l is off by
// ~0.05 rad at l ~ 1e6).
template <typename T>
__device__ __forceinline__ c10::complex<T> exp_at(c10::complex<T> x, int64_t l) {
  T magnitude = exp_(x.real() * static_cast<T>(l));
  double phase = fmod(static_cast<double>(x.imag()) * static_cast<double>(l), kTwoPi);
  T s, c;
  sincos_(static_cast<T>(phase), &s, &c);
  return c10::complex<T>(magnitude * c, magnitude * s);
}
