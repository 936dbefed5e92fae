// Vandermonde kernel K[b, l] = sum_n v[b, n] exp(x[b, n] l) and its gradients.
// Forward: one thread per (b, l), looping over n in shared-memory tiles of (v, x).
// Backward: one thread per (b, n), looping over l in tiles of the incoming gradient gK:
//   T0 = sum_l conj(gK[l]) exp(x l),  T1 = sum_l conj(gK[l]) l exp(x l),
//   grad_v = conj(T0),  grad_x = conj(v T1).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "common.cuh"

template <typename T>
__global__ void vandermonde_forward_kernel(const c10::complex<T>* __restrict__ v,
                                           const c10::complex<T>* __restrict__ x,
                                           c10::complex<T>* __restrict__ K, int N, int L) {
  __shared__ c10::complex<T> sv[kThreads], sx[kThreads];
  const int b = blockIdx.y;
  const int l = blockIdx.x * blockDim.x + threadIdx.x;
  c10::complex<T> acc(0, 0);
  for (int n0 = 0; n0 < N; n0 += kThreads) {
    const int n = n0 + threadIdx.x;
    if (n < N) {
      sv[threadIdx.x] = v[static_cast<int64_t>(b) * N + n];
      sx[threadIdx.x] = x[static_cast<int64_t>(b) * N + n];
    }
    __syncthreads();
    const int m = min(kThreads, N - n0);
    if (l < L)
      for (int j = 0; j < m; ++j) acc += sv[j] * exp_at(sx[j], l);
    __syncthreads();
  }
  if (l < L) K[static_cast<int64_t>(b) * L + l] = acc;
}

template <typename T>
__global__ void vandermonde_backward_kernel(const c10::complex<T>* __restrict__ v,
                                            const c10::complex<T>* __restrict__ x,
                                            const c10::complex<T>* __restrict__ gK,
                                            c10::complex<T>* __restrict__ grad_v,
                                            c10::complex<T>* __restrict__ grad_x, int N, int L) {
  __shared__ c10::complex<T> sg[kThreads];
  const int b = blockIdx.y;
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const c10::complex<T> xn = n < N ? x[static_cast<int64_t>(b) * N + n] : c10::complex<T>(0, 0);
  c10::complex<T> t0(0, 0), t1(0, 0);
  for (int l0 = 0; l0 < L; l0 += kThreads) {
    const int l = l0 + threadIdx.x;
    if (l < L) sg[threadIdx.x] = std::conj(gK[static_cast<int64_t>(b) * L + l]);
    __syncthreads();
    const int m = min(kThreads, L - l0);
    if (n < N)
      for (int j = 0; j < m; ++j) {
        const c10::complex<T> term = sg[j] * exp_at(xn, l0 + j);
        t0 += term;
        t1 += term * static_cast<T>(l0 + j);
      }
    __syncthreads();
  }
  if (n < N) {
    const int64_t i = static_cast<int64_t>(b) * N + n;
    grad_v[i] = std::conj(t0);
    grad_x[i] = std::conj(v[i] * t1);
  }
}

torch::Tensor vandermonde_forward_cuda(torch::Tensor v, torch::Tensor x, int64_t L) {
  const c10::cuda::CUDAGuard guard(v.device());
  const int B = v.size(0), N = v.size(1);
  auto K = torch::empty({B, L}, v.options());
  const dim3 grid((L + kThreads - 1) / kThreads, B);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(v.scalar_type()), "vandermonde_forward", [&] {
    vandermonde_forward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        v.data_ptr<c10::complex<scalar_t>>(), x.data_ptr<c10::complex<scalar_t>>(),
        K.data_ptr<c10::complex<scalar_t>>(), N, static_cast<int>(L));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return K;
}

std::vector<torch::Tensor> vandermonde_backward_cuda(torch::Tensor v, torch::Tensor x, torch::Tensor gK) {
  const c10::cuda::CUDAGuard guard(v.device());
  const int B = v.size(0), N = v.size(1), L = gK.size(1);
  auto grad_v = torch::empty_like(v), grad_x = torch::empty_like(x);
  const dim3 grid((N + kThreads - 1) / kThreads, B);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(v.scalar_type()), "vandermonde_backward", [&] {
    vandermonde_backward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        v.data_ptr<c10::complex<scalar_t>>(), x.data_ptr<c10::complex<scalar_t>>(),
        gK.data_ptr<c10::complex<scalar_t>>(), grad_v.data_ptr<c10::complex<scalar_t>>(),
        grad_x.data_ptr<c10::complex<scalar_t>>(), N, L);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_v, grad_x};
}
