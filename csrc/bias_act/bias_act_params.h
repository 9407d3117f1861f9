// bias_act: the params struct and the (act, order) dispatch shared by the CPU kernels, the CUDA
// host file and the CUDA kernels; no torch header, so the kernel .cu can include it.
//
// Memory view. x (and g, gg, out, which share x's shape and strides) is non-overlapping and
// dense, so its storage is [outer, C, inner] where C = x.size(dim) and inner = x.stride(dim):
// the element at storage offset i has bias index (i / inner) % C. Contiguous NCHW with dim=1
// gives inner = H*W; channels_last gives inner = 1.
#pragma once
#include <cstdint>
#include <type_traits>

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
