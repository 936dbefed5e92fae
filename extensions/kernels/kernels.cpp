// Python bindings of the Vandermonde and Cauchy CUDA kernels (vandermonde.cu, cauchy.cu).
// Every tensor is complex64 or complex128, on one CUDA device, contiguous; rows are independent.
//   vandermonde_forward(v (B, N), x (B, N), L)      -> K (B, L),  K[b, l] = sum_n v exp(x l)
//   vandermonde_backward(v, x, gK (B, L))           -> (grad_v (B, N), grad_x (B, N))
//   cauchy_forward(v (B, N), z (L,), w (B, N), p)   -> (B, L),    sum_n v / (z_l - w_n)^p, p = 1, 2
//   cauchy_backward(v, z, w, gK (B, L))             -> (grad_v (B, N), grad_w (B, N))
// Gradients follow torch's convention for complex inputs: grad = sum conj(dK/dinput) gK.
#include <torch/extension.h>

torch::Tensor vandermonde_forward_cuda(torch::Tensor v, torch::Tensor x, int64_t L);
std::vector<torch::Tensor> vandermonde_backward_cuda(torch::Tensor v, torch::Tensor x, torch::Tensor gK);
torch::Tensor cauchy_forward_cuda(torch::Tensor v, torch::Tensor z, torch::Tensor w, int64_t power);
std::vector<torch::Tensor> cauchy_backward_cuda(torch::Tensor v, torch::Tensor z, torch::Tensor w, torch::Tensor gK);

static void check(const torch::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_complex(), name, " must be complex");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions");
}

torch::Tensor vandermonde_forward(torch::Tensor v, torch::Tensor x, int64_t L) {
  check(v, "v", 2); check(x, "x", 2);
  TORCH_CHECK(v.sizes() == x.sizes() && v.dtype() == x.dtype(), "v and x must have one shape and dtype");
  TORCH_CHECK(L >= 1 && L < (int64_t(1) << 31), "L must be in [1, 2^31)");
  return vandermonde_forward_cuda(v, x, L);
}

std::vector<torch::Tensor> vandermonde_backward(torch::Tensor v, torch::Tensor x, torch::Tensor gK) {
  check(v, "v", 2); check(x, "x", 2); check(gK, "grad", 2);
  TORCH_CHECK(v.sizes() == x.sizes() && gK.size(0) == v.size(0), "shapes of v, x and grad do not match");
  return vandermonde_backward_cuda(v, x, gK);
}

torch::Tensor cauchy_forward(torch::Tensor v, torch::Tensor z, torch::Tensor w, int64_t power) {
  check(v, "v", 2); check(z, "z", 1); check(w, "w", 2);
  TORCH_CHECK(v.sizes() == w.sizes() && v.dtype() == w.dtype() && z.dtype() == v.dtype(),
              "v, w must have one shape, and v, z, w one dtype");
  TORCH_CHECK(power == 1 || power == 2, "power must be 1 or 2");
  return cauchy_forward_cuda(v, z, w, power);
}

std::vector<torch::Tensor> cauchy_backward(torch::Tensor v, torch::Tensor z, torch::Tensor w, torch::Tensor gK) {
  check(v, "v", 2); check(z, "z", 1); check(w, "w", 2); check(gK, "grad", 2);
  TORCH_CHECK(gK.size(0) == v.size(0) && gK.size(1) == z.size(0), "shapes of v, z and grad do not match");
  return cauchy_backward_cuda(v, z, w, gK);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("vandermonde_forward", &vandermonde_forward, "K[b, l] = sum_n v[b, n] exp(x[b, n] l)");
  m.def("vandermonde_backward", &vandermonde_backward, "(grad_v, grad_x) of vandermonde_forward");
  m.def("cauchy_forward", &cauchy_forward, "K[b, l] = sum_n v[b, n] / (z[l] - w[b, n])^power");
  m.def("cauchy_backward", &cauchy_backward, "(grad_v, grad_w) of cauchy_forward (power 1)");
}
