// modulated_conv2d's epilogue and demodulation coefficients on the CPU.
//
// Epilogue: one work item per (n, c) plane, one pass over it: the forward reads a (and the noise)
// once and writes out once; the backward reads g and a once, writes da and adds up the plane's
// two sums in blocks of kSubBlock elements, carried in double (deterministic: a fixed order for
// a given build and shape). The act, the clamp and the presence of noise are template
// parameters, so the inner loops have no branches and vectorize (math in float, double for
// double a).
//
// Demodulation: one work item per output channel o; weight[o]^2 summed over the taps per input
// channel, then one dot product with styles^2 per sample. The sums are taken in double (cheap
// here: Cout * Cin * (K + N) terms) and the result rounded to float.
//
// Noise: a flat noise plane ([N, 1, H, W] or [1, 1, H, W] expanded, contiguous [N, C, H, W]) is
// read in place. Any other view is gathered plane by plane into a per-thread buffer (kept while
// consecutive planes share their noise plane, as they do for [1, C, 1, 1]-style expansions).
#include "modulated_conv2d/modulated_conv2d.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kMinWork = 16384;  // elements per parallel work item, at least
constexpr int64_t kSubBlock = 256;   // elements per short (acc_t) partial sum in the backward

// Each plane's noise as M contiguous raw elements.
template <typename S>
class NoisePlanes {
 public:
  using raw_t = typename S::raw;
  explicit NoisePlanes(const ModconvEpilogueParams& p) : p_(p), noise_(static_cast<const raw_t*>(p.noise)) {
    if (noise_ != nullptr && !p.noise_flat) buf_.resize(static_cast<size_t>(p.M));
  }
  const raw_t* plane(int64_t n, int64_t c) {
    const int64_t base = n * p_.nsN + c * p_.nsC;
    if (p_.noise_flat) return noise_ + base;
    if (!has_gathered_ || base != gathered_) gather(base);
    return buf_.data();
  }

 private:
  // Out of line: one copy per dtype instead of one per kernel instantiation.
  __attribute__((noinline)) void gather(int64_t base) {
    raw_t* dst = buf_.data();
    for (int64_t h = 0; h < p_.H; ++h) {
      const raw_t* row = noise_ + base + h * p_.nsH;
      for (int64_t w = 0; w < p_.W; ++w) dst[h * p_.W + w] = row[w * p_.nsW];
    }
    gathered_ = base;
    has_gathered_ = true;
  }

  const ModconvEpilogueParams& p_;
  const raw_t* noise_;
  std::vector<raw_t> buf_;
  int64_t gathered_ = 0;  // storage offset (from noise_) of the plane in buf_
  bool has_gathered_ = false;
};

// One plane of the forward. The scalars are parameters (by value): read through the parallel
// lambda's references, GCC cannot tell them from the stored outputs and re-gathers them per vector.
template <Act A, bool kClamp, bool kNoise, typename S, typename raw_t = typename S::raw,
          typename acc_t = typename S::acc>
inline void forward_plane(const raw_t* __restrict ap, const raw_t* __restrict np, raw_t* __restrict op, int64_t M,
                          acc_t d, acc_t b, acc_t alpha, acc_t gain, acc_t clamp) {
#pragma omp simd
  for (int64_t j = 0; j < M; ++j) {
    const acc_t nv = kNoise ? S::load(np[j]) : acc_t(0);
    op[j] = S::store(modconv_y<A, kClamp>(modconv_z(S::load(ap[j]), d, nv, b), alpha, gain, clamp));
  }
}

// One plane of the backward: writes da, returns {sum dz, sum dz * a}. Short sums in acc_t (the
// vector lanes' partial sums), carried in double: dz * a cancels (either sign), and the sums
// become dbias and ddcoef, added up further over the batch.
template <Act A, bool kClamp, bool kNoise, typename S, typename raw_t = typename S::raw,
          typename acc_t = typename S::acc>
inline std::pair<double, double> backward_plane(const raw_t* __restrict ap, const raw_t* __restrict gp,
                                                const raw_t* __restrict np, raw_t* __restrict dp, int64_t M,
                                                acc_t d, acc_t b, acc_t alpha, acc_t gain, acc_t clamp) {
  double t_dz = 0, t_dza = 0;
  for (int64_t j0 = 0; j0 < M; j0 += kSubBlock) {
    const int64_t j1 = std::min(M, j0 + kSubBlock);
    acc_t s_dz = 0, s_dza = 0;
#pragma omp simd reduction(+ : s_dz, s_dza)
    for (int64_t j = j0; j < j1; ++j) {
      const acc_t av = S::load(ap[j]);
      const acc_t nv = kNoise ? S::load(np[j]) : acc_t(0);
      const acc_t dz = modconv_dz<A, kClamp>(modconv_z(av, d, nv, b), S::load(gp[j]), alpha, gain, clamp);
      dp[j] = S::store(dz * d);
      s_dz += dz;
      s_dza += dz * av;
    }
    t_dz += static_cast<double>(s_dz);
    t_dza += static_cast<double>(s_dza);
  }
  return {t_dz, t_dza};
}

template <Act A, bool kClamp, bool kNoise, typename S, typename acc_t = typename S::acc>
void epilogue_forward_planes(const ModconvEpilogueParams& p) {
  using raw_t = typename S::raw;
  const auto* a = static_cast<const raw_t*>(p.a);
  auto* out = static_cast<raw_t*>(p.out);
  const auto* dcoef = static_cast<const acc_t*>(p.dcoef);
  const auto* bias = static_cast<const acc_t*>(p.bias);
  const int64_t M = p.M, C = p.C;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain),
              clamp = static_cast<acc_t>(p.clamp);
  const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(M, 1));
  at::parallel_for(0, p.N * C, grain, [&](int64_t begin, int64_t end) {
    NoisePlanes<S> noise(p);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      forward_plane<A, kClamp, kNoise, S>(a + plane * M, kNoise ? noise.plane(n, c) : nullptr, out + plane * M, M,
                                          dcoef ? dcoef[plane] : acc_t(1), bias ? bias[c] : acc_t(0), alpha, gain,
                                          clamp);
    }
  });
}

template <Act A, bool kClamp, bool kNoise, typename S, typename acc_t = typename S::acc>
void epilogue_backward_planes(const ModconvEpilogueParams& p) {
  using raw_t = typename S::raw;
  const auto* a = static_cast<const raw_t*>(p.a);
  const auto* g = static_cast<const raw_t*>(p.g);
  auto* da = static_cast<raw_t*>(p.out);
  const auto* dcoef = static_cast<const acc_t*>(p.dcoef);
  const auto* bias = static_cast<const acc_t*>(p.bias);
  auto* sums = static_cast<acc_t*>(p.sums);
  const int64_t M = p.M, C = p.C;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain),
              clamp = static_cast<acc_t>(p.clamp);
  const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(M, 1));
  at::parallel_for(0, p.N * C, grain, [&](int64_t begin, int64_t end) {
    NoisePlanes<S> noise(p);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      const auto [s_dz, s_dza] = backward_plane<A, kClamp, kNoise, S>(
          a + plane * M, g + plane * M, kNoise ? noise.plane(n, c) : nullptr, da + plane * M, M,
          dcoef ? dcoef[plane] : acc_t(1), bias ? bias[c] : acc_t(0), alpha, gain, clamp);
      sums[2 * plane] = static_cast<acc_t>(s_dz);
      sums[2 * plane + 1] = static_cast<acc_t>(s_dza);
    }
  });
}

template <typename F>
void dispatch_cpu_dtype(at::ScalarType st, F&& fn) {
  switch (st) {
    case at::kFloat: fn(CpuStorage<float>{}); break;
    case at::kDouble: fn(CpuStorage<double>{}); break;
    case at::kHalf: fn(CpuStorage<c10::Half>{}); break;
    case at::kBFloat16: fn(CpuStorage<c10::BFloat16>{}); break;
    default: TORCH_CHECK(false, "ganfast: modulated_conv2d: unsupported dtype ", st);
  }
}

// Calls fn(storage, act, clamp, noise) with compile-time constants for the params' dtype, act,
// whether it clamps and whether it has noise.
template <typename F>
void dispatch_epilogue(const ModconvEpilogueParams& p, at::ScalarType dtype, F&& fn) {
  using T_ = std::true_type;
  using F_ = std::false_type;
  dispatch_cpu_dtype(dtype, [&](auto storage) {
    dispatch_act(p.act, [&](auto act) {
      if (p.has_clamp) {
        if (p.noise) fn(storage, act, T_{}, T_{});
        else fn(storage, act, T_{}, F_{});
      } else {
        if (p.noise) fn(storage, act, F_{}, T_{});
        else fn(storage, act, F_{}, F_{});
      }
    });
  });
}

}  // namespace

at::Tensor modconv_epilogue_forward_cpu(const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
                                        const c10::optional<at::Tensor>& noise,
                                        const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
                                        double gain, double clamp, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(a, at::kCPU, "a");
  ModconvEpilogueParams p = make_modconv_epilogue_params(a, c10::nullopt, dcoef, noise, bias, act, alpha, gain, clamp);
  at::Tensor y = output_like(a, out);
  p.out = y.data_ptr();
  if (a.numel() == 0) return y;
  dispatch_epilogue(p, a.scalar_type(), [&](auto storage, auto act_c, auto clamp_c, auto noise_c) {
    epilogue_forward_planes<decltype(act_c)::value, decltype(clamp_c)::value, decltype(noise_c)::value,
                            decltype(storage)>(p);
  });
  return y;
}

std::vector<at::Tensor> modconv_epilogue_backward_cpu(
    const at::Tensor& g, const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
    double gain, double clamp, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(a, at::kCPU, "a");
  ModconvEpilogueParams p = make_modconv_epilogue_params(a, g, dcoef, noise, bias, act, alpha, gain, clamp);
  at::Tensor da = output_like(a, out);
  at::Tensor sums = at::empty({p.N, p.C, 2}, a.options().dtype(modconv_acc_dtype(a.scalar_type())));
  p.out = da.data_ptr();
  p.sums = sums.data_ptr();
  if (a.numel() == 0) return {da, sums.zero_()};
  dispatch_epilogue(p, a.scalar_type(), [&](auto storage, auto act_c, auto clamp_c, auto noise_c) {
    epilogue_backward_planes<decltype(act_c)::value, decltype(clamp_c)::value, decltype(noise_c)::value,
                             decltype(storage)>(p);
  });
  return {da, sums};
}

at::Tensor modconv_demod_cpu(const at::Tensor& weight, const at::Tensor& styles) {
  GANFAST_CHECK_DEVICE(weight, at::kCPU, "weight");
  at::Tensor styles_acc;
  ModconvDemodParams p = make_modconv_demod_params(weight, styles, &styles_acc);
  at::Tensor dcoef = at::empty({p.N, p.Cout}, styles_acc.options());
  if (dcoef.numel() == 0) return dcoef;
  p.dcoef = dcoef.data_ptr();
  dispatch_cpu_dtype(weight.scalar_type(), [&](auto storage) {
    using S = decltype(storage);
    using raw_t = typename S::raw;
    using acc_t = typename S::acc;
    const auto* w = static_cast<const raw_t*>(p.weight);
    const auto* st = static_cast<const acc_t*>(p.styles);
    auto* out = static_cast<acc_t*>(p.dcoef);
    const int64_t N = p.N, Cout = p.Cout, Cin = p.Cin, K = p.K;
    // styles^2 [N, Cin]
    std::vector<double> s2(static_cast<size_t>(N * Cin));
    for (int64_t i = 0; i < N * Cin; ++i) s2[i] = static_cast<double>(st[i]) * static_cast<double>(st[i]);
    const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(Cin * (K + N), 1));
    at::parallel_for(0, Cout, grain, [&](int64_t begin, int64_t end) {
      std::vector<double> wsq(static_cast<size_t>(Cin));  // [Cin]: weight[o]^2 summed over the taps
      for (int64_t o = begin; o < end; ++o) {
        const raw_t* wo = w + o * Cin * K;
        for (int64_t i = 0; i < Cin; ++i) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double v = static_cast<double>(S::load(wo[i * K + k]));
            s += v * v;
          }
          wsq[i] = s;
        }
        for (int64_t n = 0; n < N; ++n) {
          const double* sn = s2.data() + n * Cin;
          double s = 0;
#pragma omp simd reduction(+ : s)
          for (int64_t i = 0; i < Cin; ++i) s += sn[i] * wsq[i];
          out[n * Cout + o] = static_cast<acc_t>(demod_coefficient(s));
        }
      }
    });
  });
  return dcoef;
}

}  // namespace ganfast
