// Python bindings of ganfast's extensions. Compiled into ganfast._C (CPU kernels) and, with
// GANFAST_WITH_CUDA, into ganfast._C_cuda (CUDA kernels). The public API, autograd and the torch
// custom-op registration live in Python (ganfast/ops/<op>/__init__.py); these are raw kernels.
#include <torch/extension.h>

#include "adain_noise/adain_noise.h"
#include "bias_act/bias_act.h"
#include "conditional_batch_norm/conditional_batch_norm.h"
#include "modulated_conv2d/modulated_conv2d.h"
#include "spectral_norm/spectral_norm.h"
#include "upfirdn2d/upfirdn2d.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ganfast raw kernels (see ganfast.ops for the public API)";
#ifdef GANFAST_WITH_CUDA
  m.def("bias_act", &ganfast::bias_act_cuda,
#else
  m.def("bias_act", &ganfast::bias_act_cpu,
#endif
        "bias_act kernel: returns [out, db]; order 0 forward, 1 gradient, 2 second-order term; "
        "out: optional preallocated output with x's layout",
        py::arg("x"), py::arg("b"), py::arg("g"), py::arg("gg"), py::arg("order"), py::arg("dim"),
        py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("want_db"), py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("adain_noise_forward", &ganfast::adain_noise_forward_cuda,
#else
  m.def("adain_noise_forward", &ganfast::adain_noise_forward_cpu,
#endif
        "adain_noise forward: returns [out, stats]; seed < 0: no seeded noise",
        py::arg("x"), py::arg("s"), py::arg("t"), py::arg("noise"), py::arg("ns"), py::arg("b"),
        py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("eps"), py::arg("seed"),
        py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("adain_noise_backward", &ganfast::adain_noise_backward_cuda,
#else
  m.def("adain_noise_backward", &ganfast::adain_noise_backward_cpu,
#endif
        "adain_noise backward: returns [dx, ds, dt, sdz, sdzn]",
        py::arg("g"), py::arg("x"), py::arg("s"), py::arg("noise"), py::arg("ns"), py::arg("b"),
        py::arg("stats"), py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("eps"),
        py::arg("seed"), py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("upfirdn2d", &ganfast::upfirdn2d_cuda,
#else
  m.def("upfirdn2d", &ganfast::upfirdn2d_cpu,
#endif
        "upfirdn2d kernel: returns [N, C, out_h, out_w]; f is the 2-D [fh, fw] filter in the accumulation dtype",
        py::arg("x"), py::arg("f"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"),
        py::arg("px0"), py::arg("px1"), py::arg("py0"), py::arg("py1"), py::arg("flip_filter"), py::arg("gain"),
        py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("modconv_epilogue_forward", &ganfast::modconv_epilogue_forward_cuda,
#else
  m.def("modconv_epilogue_forward", &ganfast::modconv_epilogue_forward_cpu,
#endif
        "modulated_conv2d epilogue forward: returns out; noise expanded to a's shape (any strides); "
        "clamp < 0: none; out: optional preallocated output like a",
        py::arg("a"), py::arg("dcoef"), py::arg("noise"), py::arg("bias"), py::arg("act"), py::arg("alpha"),
        py::arg("gain"), py::arg("clamp"), py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("modconv_epilogue_backward", &ganfast::modconv_epilogue_backward_cuda,
#else
  m.def("modconv_epilogue_backward", &ganfast::modconv_epilogue_backward_cpu,
#endif
        "modulated_conv2d epilogue backward: returns [da, sums], sums [N, C, 2] = (sum dz, sum dz * a)",
        py::arg("g"), py::arg("a"), py::arg("dcoef"), py::arg("noise"), py::arg("bias"), py::arg("act"),
        py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("modconv_demod", &ganfast::modconv_demod_cuda,
#else
  m.def("modconv_demod", &ganfast::modconv_demod_cpu,
#endif
        "modulated_conv2d demodulation coefficients [N, Cout] of weight [Cout, Cin, kh, kw], styles [N, Cin]",
        py::arg("weight"), py::arg("styles"));
#ifdef GANFAST_WITH_CUDA
  m.def("sn_matvec_t", &ganfast::sn_matvec_t_cuda,
#else
  m.def("sn_matvec_t", &ganfast::sn_matvec_t_cpu,
#endif
        "spectral_norm pass s = u W: w [O, K], u [k, O] in the accumulation dtype; returns s [k, K]; "
        "out: optional preallocated s",
        py::arg("w"), py::arg("u"), py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("sn_matvec_gram", &ganfast::sn_matvec_gram_cuda,
#else
  m.def("sn_matvec_gram", &ganfast::sn_matvec_gram_cpu,
#endif
        "spectral_norm pass t = v W^T and, when gram, s = t W, reading W once: w [O, K], v [k, K] in the "
        "accumulation dtype; returns (t [k, O], s [k, K] or None); t_out, s_out: optional preallocated outputs",
        py::arg("w"), py::arg("v"), py::arg("gram"), py::arg("t_out") = py::none(), py::arg("s_out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("cbn_channel_stats", &ganfast::cbn_channel_stats_cuda,
#else
  m.def("cbn_channel_stats", &ganfast::cbn_channel_stats_cpu,
#endif
        "conditional_batch_norm channel_stats: [C, 2] (mean, M2) of x over (N, H, W)", py::arg("x"));
#ifdef GANFAST_WITH_CUDA
  m.def("cbn_forward_apply", &ganfast::cbn_forward_apply_cuda,
#else
  m.def("cbn_forward_apply", &ganfast::cbn_forward_apply_cpu,
#endif
        "conditional_batch_norm forward_apply: y = relu?((x - mean) * rstd * gain + bias); "
        "out: optional preallocated output like x",
        py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("gain"), py::arg("bias"), py::arg("relu"),
        py::arg("out") = py::none());
#ifdef GANFAST_WITH_CUDA
  m.def("cbn_backward_sums", &ganfast::cbn_backward_sums_cuda,
#else
  m.def("cbn_backward_sums", &ganfast::cbn_backward_sums_cpu,
#endif
        "conditional_batch_norm backward_sums: [N, C, 2] (sum dz, sum dz * xhat) per plane",
        py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("gain"), py::arg("bias"),
        py::arg("relu"));
#ifdef GANFAST_WITH_CUDA
  m.def("cbn_backward_dx", &ganfast::cbn_backward_dx_cuda,
#else
  m.def("cbn_backward_dx", &ganfast::cbn_backward_dx_cpu,
#endif
        "conditional_batch_norm backward_dx: dx = rstd * (gain * dz - c1 - xhat * c2); "
        "out: optional preallocated output like x",
        py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("gain"), py::arg("bias"),
        py::arg("relu"), py::arg("c1"), py::arg("c2"), py::arg("out") = py::none());
  m.def("sn_power_iteration", &ganfast::sn_power_iteration,
        "spectral_norm: n_iters power iterations for one direction (u [1, O], v [1, K] updated in place); "
        "returns sigma [1]",
        py::arg("w"), py::arg("u"), py::arg("v"), py::arg("n_iters"), py::arg("eps"), py::arg("u_first"));
  m.def("cbn_forward_step", &ganfast::cbn_forward_step,
        "conditional_batch_norm's forward in one call: (y, mean, var) from the batch (training) or running "
        "statistics; training updates running_mean / running_var in place. gain, bias: [N, C] per sample or "
        "[C] per channel",
        py::arg("x"), py::arg("gain"), py::arg("bias"), py::arg("running_mean"), py::arg("running_var"),
        py::arg("training"), py::arg("momentum"), py::arg("eps"), py::arg("relu"));
  m.def("cbn_backward_step", &ganfast::cbn_backward_step,
        "conditional_batch_norm's backward in one call: (dx, dgain, dbias) from dy and the forward's mean, var; "
        "dgain, dbias shaped as gain, bias ([C]: summed over the batch)",
        py::arg("dy"), py::arg("x"), py::arg("gain"), py::arg("bias"), py::arg("mean"), py::arg("var"),
        py::arg("training"), py::arg("eps"), py::arg("relu"));
}
