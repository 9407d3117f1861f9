// spectral_norm's CUDA launch functions (defined in spectral_norm_cuda.cu), without torch headers;
// spectral_norm_cuda_host.cpp checks the arguments, allocates and calls them.
#pragma once
#include <cstdint>

#include "common/cuda_launch.h"
#include "spectral_norm/spectral_norm_params.h"

namespace ganfast {

// The launches need O below 2^31 and k at most this (gridDim.z's limit times the 4 directions a
// block takes per sweep).
constexpr int64_t kSpectralNormCudaMaxK = int64_t(65535) * 4;

// How many partial sums [parts, k, K] (float) a launch with these params on a device of sm_count
// SMs needs as its workspace; 0: none (it writes s directly). matvec_t's grid depends on W's dtype
// (the columns per thread).
int64_t spectral_norm_gram_partials(const SpectralNormParams& p, int sm_count);
int64_t spectral_norm_t_partials(const SpectralNormParams& p, DType dtype, int sm_count);

// The passes of spectral_norm.h on `stream`. dtype is W's: float32, float16 or bfloat16 (else
// cudaErrorInvalidValue). partials: a [parts, k, K] float workspace, parts as returned above
// (nullptr when 0). Returns the launches' error (cudaSuccess when they were queued).
cudaError_t launch_spectral_norm_matvec_gram(const SpectralNormParams& p, DType dtype, float* partials, int sm_count,
                                             cudaStream_t stream);
cudaError_t launch_spectral_norm_matvec_t(const SpectralNormParams& p, DType dtype, float* partials, int sm_count,
                                          cudaStream_t stream);

}  // namespace ganfast
