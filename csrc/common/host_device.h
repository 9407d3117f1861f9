// GANFAST_HD marks per-element math shared by the CPU (g++) and CUDA (nvcc) kernels, so the CPU
// test suite exercises exactly the arithmetic the GPU runs.
#pragma once
#include <cmath>
#include <math.h>  // INFINITY

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
template <typename T> GANFAST_HD T gf_tanh(T v) { return std::tanh(v); }
// log(1 + u) for u in [0, 1] (the only range the kernels use it on).
template <typename T> GANFAST_HD T gf_log1p_unit(T u) { return std::log1p(u); }

#if defined(__CUDA_ARCH__)
template <> __device__ __forceinline__ float gf_exp<float>(float v) { return __expf(v); }
// Not tanhf: under --use_fast_math it becomes the tanh.approx instruction (relative error up to
// 2^-11, past fp32's accuracy budget). The host's formula, absolute error ~1e-7.
template <> __device__ __forceinline__ float gf_tanh<float>(float v) {
  const float t = 1.0f - 2.0f / (__expf(2.0f * fabsf(v)) + 1.0f);
  return copysignf(t, v);
}
template <> __device__ __forceinline__ float gf_log1p_unit<float>(float u) { return log1pf(u); }
#else
// Host float versions written so GCC vectorizes them inside `#pragma omp simd` loops (calls to
// libm's expf/tanhf/log1pf stay scalar). Max relative error about 2e-7 (exp) over the clamped
// range; tanh and log1p inherit it. Double keeps libm.
template <> inline float gf_exp<float>(float v) {
  v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);    // keeps 2^k a normal float
  const float k = std::floor(v * 1.44269504088896341f + 0.5f);
  float r = v - k * 0.693359375f;                        // Cody-Waite: ln2 split in two parts
  r = r - k * -2.12194440e-4f;                           // |r| <= ln2 / 2
  float p = 1.0f / 5040.0f;                              // Taylor to r^7: error < r^8 / 8! ~ 2e-9
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int ki = static_cast<int>(k);
  union { unsigned int u; float f; } scale;
  scale.u = static_cast<unsigned int>(ki + 127) << 23;   // 2^k
  return p * scale.f;
}
template <> inline float gf_tanh<float>(float v) {
  const float a = v < 0.0f ? -v : v;
  const float t = 1.0f - 2.0f / (gf_exp<float>(2.0f * a) + 1.0f);  // absolute error ~1e-7
  return v < 0.0f ? -t : t;
}
template <> inline float gf_log1p_unit<float>(float u) {
  // log(1 + u) = 2 atanh(s), s = u / (2 + u) in [0, 1/3]; odd series to s^13 (error < 1e-8).
  const float s = u / (2.0f + u), s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}
#endif

}  // namespace ganfast
