// modulated_conv2d's CUDA launch functions (defined in modulated_conv2d_cuda.cu), without torch
// headers; modulated_conv2d_cuda_host.cpp checks the arguments, allocates and calls them.
#pragma once
#include <cstdint>

#include "common/cuda_launch.h"
#include "modulated_conv2d/modulated_conv2d_params.h"

namespace ganfast {

// What the grids are sized by: cudaDeviceProp's multiProcessorCount and maxThreadsPerMultiProcessor
// of the launch's device.
struct ModconvDevice {
  int sm_count;
  int max_threads_per_sm;
};

// The epilogue backward's grid for these params (a's dtype; needs a non-empty a): `blocks` must
// stay below 2^31; when splits > 1 the launch needs a workspace of N * C * splits * 2 elements of
// the accumulation type (float, double for float64).
struct ModconvBackwardGrid {
  int64_t blocks;
  int64_t splits;
};
ModconvBackwardGrid modulated_conv2d_backward_grid(const ModconvEpilogueParams& p, DType dtype, ModconvDevice dev);

// The kernels of modulated_conv2d.h on `stream`, with the outputs (p.out, p.sums; dcoef) set and
// non-empty tensors. dtype is a's (weight's for demod): float32, float16, bfloat16 or float64; the
// small tensors are of the accumulation type. p.act: a ganfast::Act. workspace: as above (nullptr
// when splits == 1). demod needs Cout below 2^31. Return the launches' error (cudaSuccess when
// they were queued); cudaErrorInvalidValue for values out of range.
cudaError_t launch_modconv_epilogue_forward(const ModconvEpilogueParams& p, DType dtype, ModconvDevice dev,
                                            cudaStream_t stream);
cudaError_t launch_modconv_epilogue_backward(const ModconvEpilogueParams& p, DType dtype, void* workspace,
                                             ModconvDevice dev, cudaStream_t stream);
cudaError_t launch_modconv_demod(const ModconvDemodParams& p, DType dtype, cudaStream_t stream);

}  // namespace ganfast
