// conditional_batch_norm host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument
// checks and the parameter struct. setup.py compiles this file into both.
#include "conditional_batch_norm/conditional_batch_norm.h"

#include "common/checks.h"

namespace ganfast {

namespace {

// mean, rstd, c1, c2 [C] or gain, bias [N, C]: the accumulation dtype, contiguous, on x's device.
void check_small(const at::Tensor& v, at::IntArrayRef shape, at::ScalarType acc, const at::Tensor& x,
                 const char* name) {
  TORCH_CHECK(v.sizes() == shape, "ganfast: conditional_batch_norm ", name, " must have shape ", shape, ", got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == acc, "ganfast: conditional_batch_norm ", name, " must have dtype ", acc,
              " (the accumulation dtype for x of dtype ", x.scalar_type(), "), got ", v.scalar_type());
  TORCH_CHECK(v.is_contiguous(), "ganfast: conditional_batch_norm ", name, " must be contiguous, got strides ",
              v.strides());
  TORCH_CHECK(v.device() == x.device(), "ganfast: conditional_batch_norm ", name, " must be on x's device ",
              x.device(), ", got ", v.device());
}

}  // namespace

at::ScalarType cbn_acc_dtype(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

CbnParams make_cbn_params(const at::Tensor& x, const c10::optional<at::Tensor>& dy,
                          const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& rstd,
                          const c10::optional<at::Tensor>& gain, const c10::optional<at::Tensor>& bias,
                          const c10::optional<at::Tensor>& c1, const c10::optional<at::Tensor>& c2, bool relu,
                          bool allow_double) {
  TORCH_CHECK(x.dim() == 4, "ganfast: conditional_batch_norm x must be [N, C, H, W], got shape ", x.sizes());
  const at::ScalarType st = x.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || (allow_double && st == at::kDouble),
              "ganfast: conditional_batch_norm x must be float16, bfloat16, float32",
              allow_double ? " or float64" : "", " on ", x.device().type(), ", got ", st);
  TORCH_CHECK(x.is_contiguous(), "ganfast: conditional_batch_norm x must be contiguous (NCHW), got strides ",
              x.strides());
  const int64_t N = x.size(0), C = x.size(1);
  const at::ScalarType acc = cbn_acc_dtype(x);
  if (dy.has_value()) {
    TORCH_CHECK(dy->sizes() == x.sizes(), "ganfast: conditional_batch_norm dy must have x's shape ", x.sizes(),
                ", got ", dy->sizes());
    GANFAST_CHECK_SAME_DTYPE(*dy, x, "conditional_batch_norm dy");
    TORCH_CHECK(dy->is_contiguous(), "ganfast: conditional_batch_norm dy must be contiguous (NCHW), got strides ",
                dy->strides());
    TORCH_CHECK(dy->device() == x.device(), "ganfast: conditional_batch_norm dy must be on x's device ", x.device(),
                ", got ", dy->device());
  }
  if (mean.has_value()) check_small(*mean, {C}, acc, x, "mean");
  if (rstd.has_value()) check_small(*rstd, {C}, acc, x, "rstd");
  if (gain.has_value()) check_small(*gain, {N, C}, acc, x, "gain");
  if (bias.has_value()) check_small(*bias, {N, C}, acc, x, "bias");
  if (c1.has_value()) check_small(*c1, {C}, acc, x, "c1");
  if (c2.has_value()) check_small(*c2, {C}, acc, x, "c2");
  CbnParams p{};
  p.x = x.data_ptr();
  p.dy = dy.has_value() ? dy->data_ptr() : nullptr;
  p.mean = mean.has_value() ? mean->data_ptr() : nullptr;
  p.rstd = rstd.has_value() ? rstd->data_ptr() : nullptr;
  p.gain = gain.has_value() ? gain->data_ptr() : nullptr;
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.c1 = c1.has_value() ? c1->data_ptr() : nullptr;
  p.c2 = c2.has_value() ? c2->data_ptr() : nullptr;
  p.N = N;
  p.C = C;
  p.M = x.size(2) * x.size(3);
  p.relu = relu;
  return p;
}

}  // namespace ganfast
