// spectral_norm host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument checks,
// outputs and the parameter struct. setup.py compiles this file into both.
#include "spectral_norm/spectral_norm.h"

#include "common/checks.h"
#include "common/this_extension.h"

namespace ganfast {

namespace {

// W [O, K]: 2-D, contiguous, a supported dtype. Returns the accumulation dtype.
at::ScalarType check_w(const at::Tensor& w, const char* op, bool allow_double) {
  TORCH_CHECK(w.dim() == 2, "ganfast: ", op, " w must be a 2-D [O, K] matrix (the weight as [out, -1]), got shape ",
              w.sizes());
  const at::ScalarType st = w.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || (allow_double && st == at::kDouble),
              "ganfast: ", op, " w must be float16, bfloat16, float32", allow_double ? " or float64" : "", " on ",
              w.device().type(), ", got ", st);
  TORCH_CHECK(w.is_contiguous(), "ganfast: ", op, " w must be contiguous, got strides ", w.strides());
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

// u [k, O] or v [k, K] (n = O or K): k >= 1 rows, the accumulation dtype, contiguous, on w's device.
void check_vectors(const at::Tensor& x, const at::Tensor& w, int64_t n, at::ScalarType acc, const char* op,
                   const char* name, const char* n_name) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) >= 1 && x.size(1) == n, "ganfast: ", op, " ", name, " must be [k, ", n_name,
              "] = [k, ", n, "] with k >= 1 for w of shape ", w.sizes(), ", got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == acc, "ganfast: ", op, " ", name, " must have dtype ", acc,
              " (the accumulation dtype for w of dtype ", w.scalar_type(), "), got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "ganfast: ", op, " ", name, " must be contiguous, got strides ", x.strides());
  TORCH_CHECK(x.device() == w.device(), "ganfast: ", op, " ", name, " must be on w's device ", w.device(), ", got ",
              x.device());
}

// An output [rows, cols] in acc on w's device: `given` when there is one (checked), else new.
at::Tensor output(const c10::optional<at::Tensor>& given, const at::Tensor& w, int64_t rows, int64_t cols,
                  at::ScalarType acc, const char* op, const char* name) {
  const std::vector<int64_t> shape{rows, cols};
  if (!given.has_value()) return at::empty(shape, w.options().dtype(acc));
  const at::Tensor& o = *given;
  TORCH_CHECK(o.sizes() == at::IntArrayRef(shape), "ganfast: ", op, " ", name, " must have shape ",
              at::IntArrayRef(shape), ", got ", o.sizes());
  TORCH_CHECK(o.scalar_type() == acc, "ganfast: ", op, " ", name, " must have dtype ", acc, ", got ", o.scalar_type());
  TORCH_CHECK(o.device() == w.device(), "ganfast: ", op, " ", name, " must be on w's device ", w.device(), ", got ",
              o.device());
  TORCH_CHECK(o.is_contiguous(), "ganfast: ", op, " ", name, " must be contiguous, got strides ", o.strides());
  return o;
}

}  // namespace

SpectralNormParams make_matvec_t_params(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out,
                                        bool allow_double, at::Tensor* s) {
  const char* op = "sn_matvec_t";
  const at::ScalarType acc = check_w(w, op, allow_double);
  check_vectors(u, w, w.size(0), acc, op, "u", "O");
  *s = output(out, w, u.size(0), w.size(1), acc, op, "out");
  SpectralNormParams p{};
  p.w = w.data_ptr();
  p.x = u.data_ptr();
  p.t = nullptr;
  p.s = s->data_ptr();
  p.O = w.size(0);
  p.K = w.size(1);
  p.k = u.size(0);
  return p;
}

SpectralNormParams make_matvec_gram_params(const at::Tensor& w, const at::Tensor& v, bool gram,
                                           const c10::optional<at::Tensor>& t_out,
                                           const c10::optional<at::Tensor>& s_out, bool allow_double, at::Tensor* t,
                                           at::Tensor* s) {
  const char* op = "sn_matvec_gram";
  const at::ScalarType acc = check_w(w, op, allow_double);
  check_vectors(v, w, w.size(1), acc, op, "v", "K");
  TORCH_CHECK(gram || !s_out.has_value(), "ganfast: sn_matvec_gram s_out was given with gram=False (no s is computed)");
  *t = output(t_out, w, v.size(0), w.size(0), acc, op, "t_out");
  if (gram) *s = output(s_out, w, v.size(0), w.size(1), acc, op, "s_out");
  SpectralNormParams p{};
  p.w = w.data_ptr();
  p.x = v.data_ptr();
  p.t = t->data_ptr();
  p.s = gram ? s->data_ptr() : nullptr;
  p.O = w.size(0);
  p.K = w.size(1);
  p.k = v.size(0);
  return p;
}

// ---- n power iterations for one singular direction, in one call ----
// reference.py's _power_iteration_single step for step (the same passes and ATen ops in the same
// order, so the same values), then u and v written in place: one call from Python instead of a
// dozen small ops per spectrally normalized layer and step.

at::Tensor sn_power_iteration(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v, int64_t n_iters, double eps,
                              bool u_first) {
  TORCH_CHECK(n_iters >= 1, "ganfast: sn_power_iteration n_iters must be >= 1, got ", n_iters);
  TORCH_CHECK(u.dim() == 2 && u.size(0) == 1 && v.dim() == 2 && v.size(0) == 1,
              "ganfast: sn_power_iteration takes one direction: u [1, O] and v [1, K], got shapes ", u.sizes(),
              " and ", v.sizes());
  at::NoGradGuard no_grad;
  at::Tensor un, vn, sigma;
  if (u_first) {
    at::Tensor vk = v.contiguous();
    for (int64_t i = 0; i < n_iters; ++i) {
      auto [t, s_opt] = GANFAST_PASS(sn_matvec_gram)(w, vk, /*gram=*/true);
      const at::Tensor tn = at::linalg_vector_norm(t, 2, {1}, /*keepdim=*/true).clamp_min(eps);
      un = t / tn;
      const at::Tensor s = *s_opt / tn;  // W^T u
      const at::Tensor sn = at::linalg_vector_norm(s, 2, {1}, /*keepdim=*/true);
      vk = s / sn.clamp_min(eps);
      sigma = (sn * sn / sn.clamp_min(eps)).squeeze(1);  // u^T W v = s . v
    }
    vn = vk;
  } else {
    at::Tensor s = GANFAST_PASS(sn_matvec_t)(w, u.contiguous());  // W^T u
    at::Tensor tn;
    for (int64_t i = 0; i < n_iters; ++i) {
      vn = s / at::linalg_vector_norm(s, 2, {1}, /*keepdim=*/true).clamp_min(eps);
      auto [t, s_opt] = GANFAST_PASS(sn_matvec_gram)(w, vn, i + 1 < n_iters);
      tn = at::linalg_vector_norm(t, 2, {1}, /*keepdim=*/true);
      un = t / tn.clamp_min(eps);
      if (s_opt.has_value()) s = *s_opt / tn.clamp_min(eps);
    }
    sigma = (tn * tn / tn.clamp_min(eps)).squeeze(1);  // u^T W v = t . u
  }
  u.copy_(un);
  v.copy_(vn);
  return sigma;
}

}  // namespace ganfast
