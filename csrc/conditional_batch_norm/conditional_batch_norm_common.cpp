// conditional_batch_norm host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument
// checks and the parameter struct. setup.py compiles this file into both.
#include "conditional_batch_norm/conditional_batch_norm.h"

#include <algorithm>

#include <ATen/ExpandUtils.h>

#include "common/checks.h"
#include "common/this_extension.h"

namespace ganfast {

namespace {

// mean, rstd, c1, c2 [C] or gain, bias [N, C]: the accumulation dtype, contiguous (expanded: the
// batch stride is 0 and each row contiguous), on x's device.
void check_small(const at::Tensor& v, at::IntArrayRef shape, at::ScalarType acc, const at::Tensor& x,
                 const char* name, bool expanded = false) {
  TORCH_CHECK(v.sizes() == shape, "ganfast: conditional_batch_norm ", name, " must have shape ", shape, ", got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == acc, "ganfast: conditional_batch_norm ", name, " must have dtype ", acc,
              " (the accumulation dtype for x of dtype ", x.scalar_type(), "), got ", v.scalar_type());
  TORCH_CHECK(expanded ? v.size(1) == 1 || v.stride(1) == 1 : v.is_contiguous(), "ganfast: conditional_batch_norm ",
              name, " must be contiguous", expanded ? " over C" : "", ", got strides ", v.strides());
  TORCH_CHECK(v.device() == x.device(), "ganfast: conditional_batch_norm ", name, " must be on x's device ",
              x.device(), ", got ", v.device());
}

// gain, bias [N, C]: as check_small, but the batch stride may also be 0 (a [C] tensor expanded over
// N: one value per channel, not copied); returns the batch stride the kernels use (C or 0).
int64_t check_affine(const at::Tensor& v, int64_t N, int64_t C, at::ScalarType acc, const at::Tensor& x,
                     const char* name) {
  const bool expanded = v.dim() == 2 && N > 1 && v.stride(0) == 0;
  check_small(v, {N, C}, acc, x, name, expanded);
  return expanded ? 0 : C;
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
  const int64_t gain_sn = gain.has_value() ? check_affine(*gain, N, C, acc, x, "gain") : C;
  const int64_t bias_sn = bias.has_value() ? check_affine(*bias, N, C, acc, x, "bias") : C;
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
  p.gain_sn = gain_sn;
  p.bias_sn = bias_sn;
  p.relu = relu;
  return p;
}


// ---- the whole forward and backward in one call (the eager path without a process group) ----
// The same passes and the same [C]-sized ATen ops, in the same order, as the Python composition
// in ganfast/ops/conditional_batch_norm/__init__.py (_forward, _backward, update_running_stats):
// one call from Python instead of a dozen, which is what a small layer's time is made of.

namespace {

// gain or bias of a step as the passes take it: [N, C] as given (the passes check it), or [C], one
// value per channel (torch BatchNorm's weight and bias), expanded over N here (a view: the kernels
// read it with batch stride 0) rather than expanded and copied by the caller.
at::Tensor per_sample(const at::Tensor& v, const at::Tensor& x, at::ScalarType acc, const char* name) {
  const int64_t N = x.size(0), C = x.size(1);
  if (v.dim() == 2) return v;
  TORCH_CHECK(v.dim() == 1 && v.size(0) == C, "ganfast: conditional_batch_norm ", name, " must be [N, C] = [", N,
              ", ", C, "] (per sample) or [C] = [", C, "] (per channel), got shape ", v.sizes());
  TORCH_CHECK(v.scalar_type() == acc, "ganfast: conditional_batch_norm ", name, " must have dtype ", acc,
              " (the accumulation dtype for x of dtype ", x.scalar_type(), "), got ", v.scalar_type());
  TORCH_CHECK(v.device() == x.device(), "ganfast: conditional_batch_norm ", name, " must be on x's device ",
              x.device(), ", got ", v.device());
  return v.contiguous().expand({N, C});
}

// v as a 0-dim CPU tensor of dtype acc, for an op with a [C] tensor of that dtype. Given a C++ double
// instead, ATen wraps it in a float64 tensor and, on the CPU, copies that to acc before the op:
// the same value (v rounded to acc), one allocation and copy more.
at::Tensor acc_scalar(double v, at::ScalarType acc) { return at::scalar_tensor(v, at::TensorOptions().dtype(acc)); }

// running_mean / running_var: [C] floating tensors on x's device (or absent).
void check_running(const c10::optional<at::Tensor>& r, const at::Tensor& x, const char* name) {
  if (!r.has_value()) return;
  TORCH_CHECK(r->dim() == 1 && r->size(0) == x.size(1), "ganfast: conditional_batch_norm ", name,
              " must be [C] = [", x.size(1), "], got shape ", r->sizes());
  TORCH_CHECK(r->is_floating_point(), "ganfast: conditional_batch_norm ", name, " must be floating, got ",
              r->scalar_type());
  TORCH_CHECK(r->device() == x.device(), "ganfast: conditional_batch_norm ", name, " must be on x's device ",
              x.device(), ", got ", r->device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> cbn_forward_step(const at::Tensor& x, const at::Tensor& gain,
                                                                const at::Tensor& bias,
                                                                const c10::optional<at::Tensor>& running_mean,
                                                                const c10::optional<at::Tensor>& running_var,
                                                                bool training, double momentum, double eps, bool relu) {
  TORCH_CHECK(x.dim() == 4, "ganfast: conditional_batch_norm x must be [N, C, H, W], got shape ", x.sizes());
  const at::ScalarType acc = cbn_acc_dtype(x);
  const at::Tensor g = per_sample(gain, x, acc, "gain"), b = per_sample(bias, x, acc, "bias");
  check_running(running_mean, x, "running_mean");
  check_running(running_var, x, "running_var");
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, "ganfast: conditional_batch_norm momentum must be a number in "
              "[0, 1], got ", momentum);
  TORCH_CHECK(eps > 0.0, "ganfast: conditional_batch_norm eps must be > 0, got ", eps);
  const double count = static_cast<double>(x.size(0) * x.size(2) * x.size(3));
  TORCH_CHECK(!training || count >= 2.0 || !running_var.has_value(), "ganfast: conditional_batch_norm expected "
              "more than 1 value per channel when training, got x of shape ", x.sizes());
  at::Tensor mean, var;
  if (training) {
    const at::Tensor st = GANFAST_PASS(cbn_channel_stats)(x);  // [C, 2] (mean, M2)
    mean = st.select(1, 0).contiguous();
    var = st.select(1, 1).div(acc_scalar(count, acc));  // a new contiguous [C]: no copy of the column first
  } else {
    TORCH_CHECK(running_mean.has_value() && running_var.has_value(),
                "ganfast: conditional_batch_norm training=False normalizes with the running statistics: "
                "running_mean and running_var must be given");
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true);  // outputs never alias inputs
    var = running_var->to(acc, /*non_blocking=*/false, /*copy=*/true);
  }
  const at::Tensor rstd = at::rsqrt(var + acc_scalar(eps, acc));
  at::Tensor y = GANFAST_PASS(cbn_forward_apply)(x, mean, rstd, g, b, relu);
  if (training) {  // torch BatchNorm's rule: r <- (1 - momentum) r + momentum * batch (unbiased var)
    at::NoGradGuard no_grad;
    if (running_mean.has_value()) running_mean->lerp_(mean.to(running_mean->scalar_type()), momentum);
    if (running_var.has_value()) {
      const double unbias = count / std::max(count - 1.0, 1.0);
      running_var->lerp_((var * acc_scalar(unbias, acc)).to(running_var->scalar_type()), momentum);
    }
  }
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cbn_backward_step(const at::Tensor& dy, const at::Tensor& x,
                                                                 const at::Tensor& gain, const at::Tensor& bias,
                                                                 const at::Tensor& mean, const at::Tensor& var,
                                                                 bool training, double eps, bool relu) {
  TORCH_CHECK(x.dim() == 4, "ganfast: conditional_batch_norm x must be [N, C, H, W], got shape ", x.sizes());
  const at::ScalarType acc = cbn_acc_dtype(x);
  const at::Tensor gn = per_sample(gain, x, acc, "gain"), bn = per_sample(bias, x, acc, "bias");
  const at::Tensor g = dy.contiguous();
  const at::Tensor rstd = at::rsqrt(var + acc_scalar(eps, acc));
  const at::Tensor sums = GANFAST_PASS(cbn_backward_sums)(g, x, mean, rstd, gn, bn, relu);  // [N, C, 2]
  at::Tensor dbias = sums.select(2, 0).contiguous(), dgain = sums.select(2, 1).contiguous();
  at::Tensor c1, c2;
  if (training) {
    const double count = static_cast<double>(x.size(0) * x.size(2) * x.size(3));
    const at::Tensor cnt = acc_scalar(count, acc);
    c1 = (gn * dbias).sum(0).div(cnt);
    c2 = (gn * dgain).sum(0).div(cnt);
  } else {
    c1 = at::zeros_like(mean);
    c2 = c1;
  }
  at::Tensor dx = GANFAST_PASS(cbn_backward_dx)(g, x, mean, rstd, gn, bn, relu, c1, c2);
  // [C] gain / bias: the per-sample gradients summed over N by at::sum_to, as autograd's backward
  // of expand does (bit for bit what a caller passing weight.expand(N, -1) gets)
  if (gain.dim() == 1) dgain = at::sum_to(dgain, gain.sizes());
  if (bias.dim() == 1) dbias = at::sum_to(dbias, bias.sizes());
  return {dx, dgain, dbias};
}

}  // namespace ganfast
