// Cauchy kernel K[b, l] = sum_n v[b, n] / (z[l] - w[b, n])^p (p = 1, or 2 for dK/dz) and the
// gradients in v and w: with r = 1 / (z_l - w_n),
//   grad_v[b, n] = sum_l gK[b, l] conj(r),   grad_w[b, n] = sum_l gK[b, l] conj(v r^2).
// Forward: one thread per (b, l) over tiles of (v, w); backward: one thread per (b, n) over
// tiles of (gK, z).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "common.cuh"

template <typename T>
__global__ void cauchy_forward_kernel(const c10::complex<T>* __restrict__ v, const c10::complex<T>* __restrict__ z,
                                      const c10::complex<T>* __restrict__ w, c10::complex<T>* __restrict__ K,
                                      int N, int L, int power) {
  __shared__ c10::complex<T> sv[kThreads], sw[kThreads];
  const int b = blockIdx.y;
  const int l = blockIdx.x * blockDim.x + threadIdx.x;
  const c10::complex<T> zl = l < L ? z[l] : c10::complex<T>(0, 0);
  c10::complex<T> acc(0, 0);
  for (int n0 = 0; n0 < N; n0 += kThreads) {
    const int n = n0 + threadIdx.x;
    if (n < N) {
      sv[threadIdx.x] = v[static_cast<int64_t>(b) * N + n];
      sw[threadIdx.x] = w[static_cast<int64_t>(b) * N + n];
    }
    __syncthreads();
    const int m = min(kThreads, N - n0);
    if (l < L)
      for (int j = 0; j < m; ++j) {
        const c10::complex<T> r = c10::complex<T>(1, 0) / (zl - sw[j]);
        acc += power == 1 ? sv[j] * r : sv[j] * r * r;
      }
    __syncthreads();
  }
  if (l < L) K[static_cast<int64_t>(b) * L + l] = acc;
}

template <typename T>
__global__ void cauchy_backward_kernel(const c10::complex<T>* __restrict__ v, const c10::complex<T>* __restrict__ z,
                                       const c10::complex<T>* __restrict__ w, const c10::complex<T>* __restrict__ gK,
                                       c10::complex<T>* __restrict__ grad_v, c10::complex<T>* __restrict__ grad_w,
                                       int N, int L) {
  __shared__ c10::complex<T> sg[kThreads], sz[kThreads];
  const int b = blockIdx.y;
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t i = static_cast<int64_t>(b) * N + n;
  const c10::complex<T> wn = n < N ? w[i] : c10::complex<T>(0, 0);
  c10::complex<T> gv(0, 0), gr2(0, 0);  // sum_l gK conj(r), sum_l gK conj(r^2)
  for (int l0 = 0; l0 < L; l0 += kThreads) {
    const int l = l0 + threadIdx.x;
    if (l < L) {
      sg[threadIdx.x] = gK[static_cast<int64_t>(b) * L + l];
      sz[threadIdx.x] = z[l];
    }
    __syncthreads();
    const int m = min(kThreads, L - l0);
    if (n < N)
      for (int j = 0; j < m; ++j) {
        const c10::complex<T> r = std::conj(c10::complex<T>(1, 0) / (sz[j] - wn));
        gv += sg[j] * r;
        gr2 += sg[j] * r * r;
      }
    __syncthreads();
  }
  if (n < N) {
    grad_v[i] = gv;
    grad_w[i] = gr2 * std::conj(v[i]);
  }
}

torch::Tensor cauchy_forward_cuda(torch::Tensor v, torch::Tensor z, torch::Tensor w, int64_t power) {
  const c10::cuda::CUDAGuard guard(v.device());
  const int B = v.size(0), N = v.size(1), L = z.size(0);
  auto K = torch::empty({B, L}, v.options());
  const dim3 grid((L + kThreads - 1) / kThreads, B);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(v.scalar_type()), "cauchy_forward", [&] {
    cauchy_forward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        v.data_ptr<c10::complex<scalar_t>>(), z.data_ptr<c10::complex<scalar_t>>(),
        w.data_ptr<c10::complex<scalar_t>>(), K.data_ptr<c10::complex<scalar_t>>(), N, L, static_cast<int>(power));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return K;
}

std::vector<torch::Tensor> cauchy_backward_cuda(torch::Tensor v, torch::Tensor z, torch::Tensor w, torch::Tensor gK) {
  const c10::cuda::CUDAGuard guard(v.device());
  const int B = v.size(0), N = v.size(1), L = z.size(0);
  auto grad_v = torch::empty_like(v), grad_w = torch::empty_like(w);
  const dim3 grid((N + kThreads - 1) / kThreads, B);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(v.scalar_type()), "cauchy_backward", [&] {
    cauchy_backward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        v.data_ptr<c10::complex<scalar_t>>(), z.data_ptr<c10::complex<scalar_t>>(),
        w.data_ptr<c10::complex<scalar_t>>(), gK.data_ptr<c10::complex<scalar_t>>(),
        grad_v.data_ptr<c10::complex<scalar_t>>(), grad_w.data_ptr<c10::complex<scalar_t>>(), N, L);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_v, grad_w};
}
