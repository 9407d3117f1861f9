// What a kernel .cu (csrc/<op>/<op>_cuda.cu) and its torch-side host file
// (csrc/<op>/<op>_cuda_host.cpp) share, without any torch header.
//
// Why the split: a .cu that includes torch's headers spends minutes in nvcc on them (a trivial
// kernel under <torch/extension.h> took 176 s for one architecture here; under this header about
// 5 s). So the .cu holds the kernels and plain launch functions (raw pointers, sizes, a DType,
// cudaStream_t); argument checks, allocation, the current stream and the dtype mapping live in the
// _cuda_host.cpp, which g++ compiles once. c10's Half and BFloat16 are header-only value types
// (a second or two of nvcc), so kernels keep the element types they had under AT_DISPATCH.
#pragma once
#include <cuda_runtime_api.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace ganfast {

// Element type of a launch; the host file maps at::ScalarType to it (common/cuda_host.h).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
  }
  return "unknown";
}

}  // namespace ganfast

// GANFAST_DISPATCH_DTYPE(dtype, scalar_t, ...): runs the statements with scalar_t bound to the
// element type (float, c10::Half, c10::BFloat16, double), as AT_DISPATCH_FLOATING_TYPES_AND2 did.
// An unknown value returns cudaErrorInvalidValue from the enclosing launch function.
#define GANFAST_DISPATCH_DTYPE(dtype, scalar_t, ...)                                   \
  switch (dtype) {                                                                   \
    case ::ganfast::DType::kFloat32: { using scalar_t = float; __VA_ARGS__; } break;   \
    case ::ganfast::DType::kFloat16: { using scalar_t = c10::Half; __VA_ARGS__; } break; \
    case ::ganfast::DType::kBFloat16: { using scalar_t = c10::BFloat16; __VA_ARGS__; } break; \
    case ::ganfast::DType::kFloat64: { using scalar_t = double; __VA_ARGS__; } break;  \
    default: return cudaErrorInvalidValue;                                            \
  }
