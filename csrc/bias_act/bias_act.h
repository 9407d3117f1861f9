// bias_act: the torch-side declarations shared by the CPU and CUDA extensions. The params struct
// (and its memory view) and the (act, order) dispatch are in bias_act_params.h, which has no
// torch header so that the CUDA kernels can include it too.
#pragma once
#include <cstdint>
#include <vector>
#include <torch/extension.h>
#include "bias_act/bias_act_params.h"

namespace ganfast {

// Fills p from the tensors after the binding checked them. Returns the [outer, C, inner] split.
BiasActParams make_bias_act_params(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                   const c10::optional<at::Tensor>& g,
                                   const c10::optional<at::Tensor>& gg, const at::Tensor& out,
                                   int64_t order, int64_t dim, int64_t act, double alpha,
                                   double gain, double clamp);

// Validates every argument with a clear message (device is checked by the caller).
void check_bias_act_args(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                         const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& gg,
                         int64_t order, int64_t dim, int64_t act);

// The output tensor: `out` when given (checked to have x's shape, strides, dtype and device; the
// tests pass a NaN-filled one so an unwritten element fails), else a new tensor like x.
at::Tensor bias_act_output(const at::Tensor& x, const c10::optional<at::Tensor>& out);

// Returns {out, db}; db (the sum of out over every dim but `dim`, in b's dtype) is an undefined
// tensor unless want_db and b is given.
std::vector<at::Tensor> bias_act_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                     const c10::optional<at::Tensor>& g,
                                     const c10::optional<at::Tensor>& gg, int64_t order,
                                     int64_t dim, int64_t act, double alpha, double gain,
                                     double clamp, bool want_db,
                                     const c10::optional<at::Tensor>& out = c10::nullopt);
#ifdef GANFAST_WITH_CUDA
std::vector<at::Tensor> bias_act_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                      const c10::optional<at::Tensor>& g,
                                      const c10::optional<at::Tensor>& gg, int64_t order,
                                      int64_t dim, int64_t act, double alpha, double gain,
                                      double clamp, bool want_db,
                                     const c10::optional<at::Tensor>& out = c10::nullopt);
#endif

}  // namespace ganfast
