// bias_act host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument checks and
// the [outer, C, inner] split. setup.py compiles this file into both.
#include "bias_act/bias_act.h"

#include "common/checks.h"

namespace ganfast {

void check_bias_act_args(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                         const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& gg,
                         int64_t order, int64_t dim, int64_t act) {
  TORCH_CHECK(order >= 0 && order <= 2, "ganfast: bias_act order must be 0, 1 or 2, got ", order);
  TORCH_CHECK(act >= 0 && act < kNumActs, "ganfast: bias_act act code must be in [0, ", kNumActs,
              "), got ", act);
  TORCH_CHECK(x.dim() >= 1, "ganfast: bias_act x must have at least one dimension");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "ganfast: bias_act dim must be in [0, ", x.dim(),
              ") after wrapping, got ", dim);
  GANFAST_CHECK_DENSE(x, "x");
  if (b.has_value()) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(dim), "ganfast: b must have shape [",
                x.size(dim), "] (x.shape[dim]), got ", b->sizes());
    TORCH_CHECK(b->is_contiguous(), "ganfast: b must be contiguous");
    GANFAST_CHECK_SAME_DTYPE(*b, x, "b");
    TORCH_CHECK(b->device() == x.device(), "ganfast: b must be on ", x.device(), ", got ", b->device());
  }
  if (order >= 1) {
    TORCH_CHECK(g.has_value(), "ganfast: bias_act order ", order, " needs g");
    GANFAST_CHECK_SAME_LAYOUT(*g, x, "g");
    GANFAST_CHECK_SAME_DTYPE(*g, x, "g");
    TORCH_CHECK(g->device() == x.device(), "ganfast: g must be on ", x.device());
  }
  if (order == 2) {
    TORCH_CHECK(gg.has_value(), "ganfast: bias_act order 2 needs gg");
    GANFAST_CHECK_SAME_LAYOUT(*gg, x, "gg");
    GANFAST_CHECK_SAME_DTYPE(*gg, x, "gg");
    TORCH_CHECK(gg->device() == x.device(), "ganfast: gg must be on ", x.device());
  }
}

BiasActParams make_bias_act_params(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                   const c10::optional<at::Tensor>& g,
                                   const c10::optional<at::Tensor>& gg, const at::Tensor& out,
                                   int64_t order, int64_t dim, int64_t act, double alpha,
                                   double gain, double clamp) {
  BiasActParams p;
  p.x = x.data_ptr();
  p.b = b.has_value() ? b->data_ptr() : nullptr;
  p.g = order >= 1 ? g->data_ptr() : nullptr;
  p.gg = order == 2 ? gg->data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.numel = x.numel();
  p.channels = x.size(dim);
  // A size-1 dim may carry any stride; its bias index is always 0, so any inner works.
  p.inner = p.channels == 1 ? 1 : x.stride(dim);
  p.outer = p.numel / (p.channels * p.inner);
  p.act = static_cast<int>(act);
  p.order = static_cast<int>(order);
  p.s = BiasActScalars{alpha, gain, host_clamp(clamp)};
  return p;
}

at::Tensor bias_act_output(const at::Tensor& x, const c10::optional<at::Tensor>& out) { return output_like(x, out); }

}  // namespace ganfast
