// GANFAST_HD marks per-element math shared by the CPU (g++) and CUDA (nvcc) kernels, so the CPU
// test suite exercises exactly the arithmetic the GPU runs.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define GANFAST_HD __host__ __device__ __forceinline__
#else
#define GANFAST_HD inline
#endif

namespace ganfast {

// Accumulation / compute type: float for fp16/bf16/fp32 storage, double for fp64.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };

template <typename T> GANFAST_HD T gf_exp(T v) { return std::exp(v); }
template <typename T> GANFAST_HD T gf_log1p(T v) { return std::log1p(v); }
template <typename T> GANFAST_HD T gf_tanh(T v) { return std::tanh(v); }
#if defined(__CUDA_ARCH__)
template <> __device__ __forceinline__ float gf_exp<float>(float v) { return __expf(v); }
template <> __device__ __forceinline__ float gf_log1p<float>(float v) { return log1pf(v); }
template <> __device__ __forceinline__ float gf_tanh<float>(float v) { return tanhf(v); }
#endif

}  // namespace ganfast
