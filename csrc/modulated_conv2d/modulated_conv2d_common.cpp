// modulated_conv2d host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument checks
// and the parameter structs. setup.py compiles this file into both.
#include "modulated_conv2d/modulated_conv2d.h"

#include "common/checks.h"

namespace ganfast {

namespace {

bool is_data_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// dcoef and bias: small tensors of the accumulation dtype.
void check_small(const at::Tensor& v, at::IntArrayRef shape, const char* shape_name, const at::Tensor& a,
                 const char* name) {
  const at::ScalarType acc = modconv_acc_dtype(a.scalar_type());
  TORCH_CHECK(v.sizes() == shape, "ganfast: modconv epilogue ", name, " must have shape ", shape_name, " = ",
              shape, ", got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == acc, "ganfast: modconv epilogue ", name, " must have dtype ", acc,
              " (the accumulation dtype for a of dtype ", a.scalar_type(), "), got ", v.scalar_type());
  TORCH_CHECK(v.is_contiguous(), "ganfast: modconv epilogue ", name, " must be contiguous, got strides ",
              v.strides());
  TORCH_CHECK(v.device() == a.device(), "ganfast: modconv epilogue ", name, " must be on ", a.device(),
              " (a's device), got ", v.device());
}

// Whether each [H, W] plane of a view with strides (sH, sW) is H * W contiguous elements.
bool plane_is_flat(int64_t H, int64_t W, int64_t sH, int64_t sW) {
  return (W == 1 || sW == 1) && (H == 1 || sH == W);
}

}  // namespace

at::ScalarType modconv_acc_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

ModconvEpilogueParams make_modconv_epilogue_params(
    const at::Tensor& a, const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act,
    double alpha, double gain, double clamp) {
  TORCH_CHECK(a.dim() == 4, "ganfast: modconv epilogue a must be [N, C, H, W], got shape ", a.sizes());
  TORCH_CHECK(is_data_dtype(a.scalar_type()),
              "ganfast: modconv epilogue a must be float16, bfloat16, float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(a.is_contiguous(), "ganfast: modconv epilogue a must be contiguous (NCHW), got strides ",
              a.strides());
  TORCH_CHECK(act >= 0 && act < kNumActs, "ganfast: modconv epilogue act code must be in [0, ", kNumActs,
              "), got ", act);
  const int64_t N = a.size(0), C = a.size(1), H = a.size(2), W = a.size(3);
  if (dcoef.has_value()) check_small(*dcoef, {N, C}, "[N, C]", a, "dcoef");
  if (bias.has_value()) check_small(*bias, {C}, "[C]", a, "bias");
  ModconvEpilogueParams p{};
  if (noise.has_value()) {
    const at::Tensor& nz = *noise;
    TORCH_CHECK(nz.sizes() == a.sizes(), "ganfast: modconv epilogue noise must be expanded to a's shape [N, C, H, W] = ",
                a.sizes(), " (e.g. noise.expand_as(a); any strides), got ", nz.sizes());
    TORCH_CHECK(nz.scalar_type() == a.scalar_type(), "ganfast: modconv epilogue noise must have a's dtype ",
                a.scalar_type(), ", got ", nz.scalar_type());
    TORCH_CHECK(nz.device() == a.device(), "ganfast: modconv epilogue noise must be on ", a.device(),
                " (a's device), got ", nz.device());
    p.noise = nz.data_ptr();
    // A size-1 dim may carry any stride; it is never stepped along, so 0 stands for it.
    p.nsN = N == 1 ? 0 : nz.stride(0);
    p.nsC = C == 1 ? 0 : nz.stride(1);
    p.nsH = H == 1 ? 0 : nz.stride(2);
    p.nsW = W == 1 ? 0 : nz.stride(3);
    p.noise_flat = plane_is_flat(H, W, nz.stride(2), nz.stride(3));
  }
  if (g.has_value()) {
    TORCH_CHECK(g->sizes() == a.sizes(), "ganfast: modconv epilogue g must have a's shape ", a.sizes(), ", got ",
                g->sizes());
    TORCH_CHECK(g->is_contiguous(), "ganfast: modconv epilogue g must be contiguous (NCHW, like a), got strides ",
                g->strides());
    TORCH_CHECK(g->scalar_type() == a.scalar_type(), "ganfast: modconv epilogue g must have a's dtype ",
                a.scalar_type(), ", got ", g->scalar_type());
    TORCH_CHECK(g->device() == a.device(), "ganfast: modconv epilogue g must be on ", a.device(),
                " (a's device), got ", g->device());
  }
  p.a = a.data_ptr();
  p.g = g.has_value() ? g->data_ptr() : nullptr;
  p.dcoef = dcoef.has_value() ? dcoef->data_ptr() : nullptr;
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.N = N;
  p.C = C;
  p.H = H;
  p.W = W;
  p.M = H * W;
  p.act = static_cast<int>(act);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = host_clamp(clamp);
  p.has_clamp = clamp >= 0;
  return p;
}

ModconvDemodParams make_modconv_demod_params(const at::Tensor& weight, const at::Tensor& styles,
                                             at::Tensor* styles_acc) {
  TORCH_CHECK(weight.dim() == 4, "ganfast: modconv demod weight must be [Cout, Cin, kh, kw], got shape ",
              weight.sizes());
  TORCH_CHECK(is_data_dtype(weight.scalar_type()),
              "ganfast: modconv demod weight must be float16, bfloat16, float32 or float64, got ",
              weight.scalar_type());
  TORCH_CHECK(weight.is_contiguous(), "ganfast: modconv demod weight must be contiguous, got strides ",
              weight.strides());
  const at::ScalarType acc = modconv_acc_dtype(weight.scalar_type());
  TORCH_CHECK(styles.dim() == 2 && styles.size(1) == weight.size(1),
              "ganfast: modconv demod styles must be [N, Cin] with Cin = weight.shape[1] = ", weight.size(1),
              ", got shape ", styles.sizes());
  TORCH_CHECK(styles.scalar_type() == weight.scalar_type() || styles.scalar_type() == acc,
              "ganfast: modconv demod styles must have weight's dtype ", weight.scalar_type(), " or ", acc,
              ", got ", styles.scalar_type());
  TORCH_CHECK(styles.device() == weight.device(), "ganfast: modconv demod styles must be on ", weight.device(),
              " (weight's device), got ", styles.device());
  *styles_acc = styles.to(acc).contiguous();  // [N, Cin]: small
  ModconvDemodParams p{};
  p.weight = weight.data_ptr();
  p.styles = styles_acc->data_ptr();
  p.N = styles.size(0);
  p.Cout = weight.size(0);
  p.Cin = weight.size(1);
  p.K = weight.size(2) * weight.size(3);
  return p;
}

}  // namespace ganfast
