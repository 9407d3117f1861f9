// adain_noise: the launch functions of adain_noise_cuda.cu, called by adain_noise_cuda_host.cpp;
// no torch header (see common/cuda_launch.h).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "adain_noise/adain_noise_params.h"
#include "common/cuda_launch.h"

namespace ganfast {

// What the host needs before a launch of p (the plan the launch functions make again, for the
// current device).
struct AdainNoiseLaunchInfo {
  int64_t blocks;           // blocks of the main kernels; a launch needs at most INT_MAX
  int64_t workspace_elems;  // split path: the per-chunk partials [N * C, S, 2], in elements of the
                            // accumulation type (float, double for float64 x); 0: fused path
};

// Fills info for p (made by make_adain_noise_params, x not empty) with elements of type dtype.
cudaError_t adain_noise_launch_info(const AdainNoiseParams& p, DType dtype, AdainNoiseLaunchInfo* info);

// Forward (out, stats) and backward (dx, ds, dt, sdz, sdzn) of p on `stream`; every pointer on
// the current device. workspace: info.workspace_elems elements of the accumulation type, or
// nullptr when that is 0. Return the first launch error (from cudaGetLastError), or
// cudaErrorInvalidValue for a bad dtype, act, empty x, a missing workspace or too many blocks.
cudaError_t launch_adain_noise_forward(const AdainNoiseParams& p, DType dtype, void* workspace,
                                       cudaStream_t stream);
cudaError_t launch_adain_noise_backward(const AdainNoiseParams& p, DType dtype, void* workspace,
                                        cudaStream_t stream);

}  // namespace ganfast
