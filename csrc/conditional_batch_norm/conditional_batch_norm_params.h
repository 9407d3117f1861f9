// conditional_batch_norm's parameter struct, without torch headers: shared by
// conditional_batch_norm.h (CPU and host code) and conditional_batch_norm_cuda_launch.h (the
// torch-free CUDA launch functions). The layouts and types are described in conditional_batch_norm.h.
#pragma once
#include <cstdint>

namespace ganfast {

struct CbnParams {
  const void* x;      // [N, C, M] contiguous, dtype D
  const void* dy;     // like x (backward)
  void* out;          // like x: y (forward_apply) or dx (backward_dx)
  const void* mean;   // [C] A
  const void* rstd;   // [C] A
  const void* gain;   // [N, C] A, element (n, c) at n * gain_sn + c
  const void* bias;   // [N, C] A, element (n, c) at n * bias_sn + c
  const void* c1;     // [C] A (backward_dx)
  const void* c2;     // [C] A (backward_dx)
  void* sums;         // [C, 2] A (channel_stats) or [N, C, 2] A (backward_sums)
  int64_t N, C, M;
  int64_t gain_sn, bias_sn;  // C, or 0: one value per channel, expanded over the batch
  bool relu;
};

}  // namespace ganfast
