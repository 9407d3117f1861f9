// adain_noise host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument checks
// and the parameter struct. setup.py compiles this file into both.
#include "adain_noise/adain_noise.h"

#include "common/checks.h"

namespace ganfast {

namespace {

void check_small(const at::Tensor& v, at::IntArrayRef shape, at::ScalarType acc, const at::Tensor& x,
                 const char* name) {
  TORCH_CHECK(v.sizes() == shape, "ganfast: adain_noise ", name, " must have shape ", shape,
              ", got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == acc, "ganfast: adain_noise ", name, " must have dtype ", acc,
              " (the accumulation dtype for x of dtype ", x.scalar_type(), "), got ", v.scalar_type());
  TORCH_CHECK(v.is_contiguous(), "ganfast: adain_noise ", name, " must be contiguous");
  TORCH_CHECK(v.device() == x.device(), "ganfast: adain_noise ", name, " must be on ", x.device(),
              ", got ", v.device());
}

}  // namespace

AdainNoiseParams make_adain_noise_params(
    const at::Tensor& x, const c10::optional<at::Tensor>& g, const at::Tensor& s,
    const c10::optional<at::Tensor>& t, const c10::optional<at::Tensor>& noise,
    const c10::optional<at::Tensor>& ns, const c10::optional<at::Tensor>& b,
    const at::Tensor& stats, int64_t act, double alpha, double gain, double eps, int64_t seed) {
  TORCH_CHECK(x.dim() == 4, "ganfast: adain_noise x must be [N, C, H, W], got shape ", x.sizes());
  TORCH_CHECK(act >= 0 && act < kNumActs, "ganfast: adain_noise act code must be in [0, ",
              kNumActs, "), got ", act);
  TORCH_CHECK(eps > 0, "ganfast: adain_noise eps must be > 0, got ", eps);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool nchw = x.is_contiguous();
  TORCH_CHECK(nchw || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "ganfast: adain_noise x must be contiguous or channels_last, got strides ", x.strides());
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_small(s, {N, C}, acc, x, "s (style scale)");
  if (t.has_value()) check_small(*t, {N, C}, acc, x, "t (style bias)");
  if (ns.has_value()) check_small(*ns, {C}, acc, x, "ns (noise strength)");
  if (b.has_value()) check_small(*b, {C}, acc, x, "b (bias)");
  check_small(stats, {N, C, 2}, acc, x, "stats");
  int64_t noise_sN = 0;
  if (noise.has_value()) {
    TORCH_CHECK(seed < 0, "ganfast: adain_noise takes noise or a seed, not both");
    const at::Tensor& nz = *noise;
    TORCH_CHECK(nz.dim() == 4 && (nz.size(0) == N || nz.size(0) == 1) && nz.size(1) == 1 &&
                    nz.size(2) == H && nz.size(3) == W,
                "ganfast: adain_noise noise must have shape [", N, " or 1, 1, ", H, ", ", W, "], got ",
                nz.sizes());
    TORCH_CHECK(nz.is_contiguous(), "ganfast: adain_noise noise must be contiguous");
    GANFAST_CHECK_SAME_DTYPE(nz, x, "noise");
    TORCH_CHECK(nz.device() == x.device(), "ganfast: adain_noise noise must be on ", x.device());
    noise_sN = nz.size(0) == 1 ? 0 : H * W;
  }
  if (g.has_value()) {
    GANFAST_CHECK_SAME_LAYOUT(*g, x, "g");
    GANFAST_CHECK_SAME_DTYPE(*g, x, "g");
    TORCH_CHECK(g->device() == x.device(), "ganfast: adain_noise g must be on ", x.device());
  }
  AdainNoiseParams p{};
  p.x = x.data_ptr();
  p.g = g.has_value() ? g->data_ptr() : nullptr;
  p.s = s.data_ptr();
  p.t = t.has_value() ? t->data_ptr() : nullptr;
  p.noise = noise.has_value() ? noise->data_ptr() : nullptr;
  p.noise_sN = noise_sN;
  p.ns = ns.has_value() ? ns->data_ptr() : nullptr;
  p.b = b.has_value() ? b->data_ptr() : nullptr;
  p.stats = stats.data_ptr();
  p.N = N;
  p.C = C;
  p.M = H * W;
  p.sN = C * H * W;
  p.sC = nchw ? H * W : 1;
  p.sP = nchw ? 1 : C;
  p.act = static_cast<int>(act);
  p.alpha = alpha;
  p.gain = gain;
  p.eps = eps;
  p.seed = seed;
  return p;
}

at::Tensor adain_noise_like_x(const at::Tensor& x, const c10::optional<at::Tensor>& out) { return output_like(x, out); }

}  // namespace ganfast
