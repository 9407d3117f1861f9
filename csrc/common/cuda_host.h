// Torch side of a CUDA launch (see common/cuda_launch.h): the dtype mapping and the check of a
// launch function's cudaError_t. Included by csrc/<op>/<op>_cuda_host.cpp only.
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "common/cuda_launch.h"

namespace ganfast {

inline DType to_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return DType::kFloat32;
    case c10::ScalarType::Half: return DType::kFloat16;
    case c10::ScalarType::BFloat16: return DType::kBFloat16;
    case c10::ScalarType::Double: return DType::kFloat64;
    default: TORCH_CHECK(false, "ganfast: CUDA kernels take float32, float16, bfloat16 or float64, got ", t);
  }
  return DType::kFloat32;  // unreachable
}

}  // namespace ganfast

// Raises with the CUDA error's name and the launch that returned it.
#define GANFAST_CHECK_LAUNCH(call)                                                           \
  do {                                                                                       \
    const cudaError_t ganfast_err_ = (call);                                                 \
    TORCH_CHECK(ganfast_err_ == cudaSuccess, "ganfast: ", #call, " failed: ",                 \
                cudaGetErrorName(ganfast_err_), " (", cudaGetErrorString(ganfast_err_), ")"); \
  } while (0)
