// bias_act: the launch function of bias_act_cuda.cu, called by bias_act_cuda_host.cpp; no torch
// header (see common/cuda_launch.h).
#pragma once
#include <cuda_runtime_api.h>

#include "bias_act/bias_act_params.h"
#include "common/cuda_launch.h"

namespace ganfast {

// One elementwise pass over p (every pointer on the current device, p.numel > 0, p.act and
// p.order valid) on `stream`, with elements of type `dtype`. Returns the launch's error (from
// cudaGetLastError), or cudaErrorInvalidValue for a bad dtype, act or order.
cudaError_t launch_bias_act(const BiasActParams& p, DType dtype, cudaStream_t stream);

}  // namespace ganfast
