// bias_act: parameters shared by the CPU and CUDA kernels.
//
// Memory view. x (and g, gg, out, which share x's shape and strides) is non-overlapping and
// dense, so its storage is [outer, C, inner] where C = x.size(dim) and inner = x.stride(dim):
// the element at storage offset i has bias index (i / inner) % C. Contiguous NCHW with dim=1
// gives inner = H*W; channels_last gives inner = 1.
#pragma once
#include <cstdint>
#include <vector>
#include <torch/extension.h>
#include "common/bias_act_math.h"

namespace ganfast {

struct BiasActParams {
  const void* x;    // [outer, C, inner] storage of x
  const void* b;    // [C] or nullptr
  const void* g;    // like x; order >= 1 (dL/dy)
  const void* gg;   // like x; order == 2 (gradient w.r.t. the order-1 output)
  void* out;        // like x
  int64_t numel, outer, channels, inner;
  int act;          // ganfast::Act
  int order;        // 0 forward, 1 gradient, 2 gradient of the gradient w.r.t. x
  BiasActScalars s;
};

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

// Dispatches a runtime (act, order) pair to a functor templated on both.
template <typename F>
void dispatch_act_order(int act, int order, F&& fn) {
#define GANFAST_ORDER_CASES(A)                                         \
  switch (order) {                                                     \
    case 0: fn(std::integral_constant<Act, A>{}, std::integral_constant<int, 0>{}); break; \
    case 1: fn(std::integral_constant<Act, A>{}, std::integral_constant<int, 1>{}); break; \
    default: fn(std::integral_constant<Act, A>{}, std::integral_constant<int, 2>{}); break; \
  }
  switch (static_cast<Act>(act)) {
    case Act::Linear: GANFAST_ORDER_CASES(Act::Linear) break;
    case Act::Relu: GANFAST_ORDER_CASES(Act::Relu) break;
    case Act::Lrelu: GANFAST_ORDER_CASES(Act::Lrelu) break;
    case Act::Tanh: GANFAST_ORDER_CASES(Act::Tanh) break;
    case Act::Sigmoid: GANFAST_ORDER_CASES(Act::Sigmoid) break;
    case Act::Elu: GANFAST_ORDER_CASES(Act::Elu) break;
    case Act::Selu: GANFAST_ORDER_CASES(Act::Selu) break;
    case Act::Softplus: GANFAST_ORDER_CASES(Act::Softplus) break;
    case Act::Swish: GANFAST_ORDER_CASES(Act::Swish) break;
  }
#undef GANFAST_ORDER_CASES
}

}  // namespace ganfast
