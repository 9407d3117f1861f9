// conditional_batch_norm's CUDA launch functions (defined in conditional_batch_norm_cuda.cu),
// without torch headers; conditional_batch_norm_cuda_host.cpp checks the arguments, allocates and
// calls them.
#pragma once
#include <cstdint>

#include "common/cuda_launch.h"
#include "conditional_batch_norm/conditional_batch_norm_params.h"

namespace ganfast {

// channel_stats's blocks per channel for these params (x's dtype, a device of sm_count SMs; needs
// N * M > 0): the launch's workspace is [C, splits, 2] doubles, and C * splits must stay below 2^31.
int64_t conditional_batch_norm_stats_splits(const CbnParams& p, DType dtype, int sm_count);
// backward_sums's blocks for these params (needs N * C * M > 0); must stay below 2^31.
int64_t conditional_batch_norm_sums_blocks(const CbnParams& p, DType dtype);

// The passes of conditional_batch_norm.h on `stream`, with the outputs (p.sums, p.out) set and
// every tensor non-empty (channel_stats: N * M > 0 and C > 0). dtype is x's: float32, float16 or
// bfloat16 (else cudaErrorInvalidValue); the small tensors are float. workspace: [C, splits, 2]
// doubles, splits as above. Return the launches' error (cudaSuccess when they were queued).
cudaError_t launch_cbn_channel_stats(const CbnParams& p, DType dtype, double* workspace, int sm_count,
                                     cudaStream_t stream);
cudaError_t launch_cbn_forward_apply(const CbnParams& p, DType dtype, int sm_count, cudaStream_t stream);
cudaError_t launch_cbn_backward_sums(const CbnParams& p, DType dtype, cudaStream_t stream);
cudaError_t launch_cbn_backward_dx(const CbnParams& p, DType dtype, int sm_count, cudaStream_t stream);

}  // namespace ganfast
