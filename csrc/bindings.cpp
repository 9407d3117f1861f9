// Python bindings of ganfast's extensions. Compiled into ganfast._C (CPU kernels) and, with
// GANFAST_WITH_CUDA, into ganfast._C_cuda (CUDA kernels). The public API, autograd and the torch
// custom-op registration live in Python (ganfast/ops/<op>/__init__.py); these are raw kernels.
#include <torch/extension.h>

#include "adain_noise/adain_noise.h"
#include "bias_act/bias_act.h"
#include "modulated_conv2d/modulated_conv2d.h"
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
}
