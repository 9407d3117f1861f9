// spectral_norm's parameter struct, without torch headers: shared by spectral_norm.h (CPU and
// host code) and spectral_norm_cuda_launch.h (the torch-free CUDA launch functions).
#pragma once
#include <cstdint>

namespace ganfast {

struct SpectralNormParams {
  const void* w;  // [O, K] contiguous, W's dtype
  const void* x;  // u [k, O] (matvec_t) or v [k, K] (matvec_gram), contiguous, A
  void* t;        // [k, O] contiguous, A (matvec_gram), else nullptr
  void* s;        // [k, K] contiguous, A; nullptr for matvec_gram without gram
  int64_t O, K;
  int64_t k;
};

}  // namespace ganfast
