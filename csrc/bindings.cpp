// Python bindings of ganfast's extensions. Compiled into ganfast._C (CPU kernels) and, with
// GANFAST_WITH_CUDA, into ganfast._C_cuda (CUDA kernels). The public API, autograd and the torch
// custom-op registration live in Python (ganfast/ops/<op>/__init__.py); these are raw kernels.
#include <torch/extension.h>

#include "adain_noise/adain_noise.h"
#include "bias_act/bias_act.h"

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
}
