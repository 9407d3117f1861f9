// upfirdn2d: the launch function of upfirdn2d_cuda.cu, called by upfirdn2d_cuda_host.cpp; no torch
// header (see common/cuda_launch.h).
#pragma once
#include <cuda_runtime_api.h>

#include "common/cuda_launch.h"
#include "upfirdn2d/upfirdn2d_params.h"

namespace ganfast {

// Runs upfirdn2d for p (checked by make_upfirdn2d_params, p.out set, p.planes > 0, every pointer
// on the current device) on `stream`. dtype: float32, float16 or bfloat16 (f is float32). Returns
// the launch's error (from cudaGetLastError), or cudaErrorInvalidValue for another dtype.
cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, cudaStream_t stream);

}  // namespace ganfast
