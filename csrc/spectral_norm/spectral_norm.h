// spectral_norm: the two passes over W of the power iteration (the kernel contract of
// ganfast/ops/spectral_norm/reference.py, the spec), shared by the CPU and CUDA kernels.
//
// W is [O, K] contiguous in W's dtype; k >= 1 singular directions; A is the accumulation type
// (float for fp16 / bf16 / fp32 W, double for fp64 W, CPU only):
//   matvec_t:    s[j, c] = sum_r u[j, r] * W[r, c]         u [k, O] -> s [k, K]
//   matvec_gram: t[j, r] = sum_c v[j, c] * W[r, c]         v [k, K] -> t [k, O]
//                s[j, c] = sum_r t[j, r] * W[r, c]         (when gram) -> s [k, K]
// Each reads W once: matvec_gram uses each block of rows for t and then, while it is still in
// cache (on chip), for s. s is a sum over rows: the rows are split into parts, each part sums its
// rows in order into its own partial [k, K], and the partials are added in part order
// (deterministic, no atomics).
#pragma once
#include <cstdint>
#include <tuple>
#include <torch/extension.h>

#include "common/host_device.h"
#include "spectral_norm/spectral_norm_params.h"  // SpectralNormParams

namespace ganfast {

// First index of part p when n items are split into `parts` near-equal contiguous ranges, each
// boundary rounded down to a multiple of `align` (part p is [part_begin(p), part_begin(p + 1))).
GANFAST_HD int64_t part_begin(int64_t p, int64_t parts, int64_t n, int64_t align) {
  if (p >= parts) return n;
  const int64_t b = n / parts * p + n % parts * p / parts;  // floor(n * p / parts) without overflow
  return b / align * align;
}

// Host code shared by both extensions (spectral_norm_common.cpp). Check every argument with a
// message naming it (allow_double: whether float64 W is supported here); return the params with
// the outputs set: `out`, `t_out`, `s_out` when given (checked: shape, accumulation dtype, W's
// device, contiguous; the tests pass NaN-filled ones so an unwritten element fails), else new.
SpectralNormParams make_matvec_t_params(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out,
                                        bool allow_double, at::Tensor* s);
SpectralNormParams make_matvec_gram_params(const at::Tensor& w, const at::Tensor& v, bool gram,
                                           const c10::optional<at::Tensor>& t_out,
                                           const c10::optional<at::Tensor>& s_out, bool allow_double, at::Tensor* t,
                                           at::Tensor* s);

// n_iters power iterations for one direction (reference.py's _power_iteration_single, the same
// values), on this extension's passes: w [O, K] contiguous, u [1, O] and v [1, K] in the
// accumulation dtype, updated in place. Returns sigma [1] (acc dtype).
at::Tensor sn_power_iteration(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v, int64_t n_iters, double eps,
                              bool u_first);

at::Tensor sn_matvec_t_cpu(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out = c10::nullopt);
std::tuple<at::Tensor, c10::optional<at::Tensor>> sn_matvec_gram_cpu(
    const at::Tensor& w, const at::Tensor& v, bool gram, const c10::optional<at::Tensor>& t_out = c10::nullopt,
    const c10::optional<at::Tensor>& s_out = c10::nullopt);
#ifdef GANFAST_WITH_CUDA
at::Tensor sn_matvec_t_cuda(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out = c10::nullopt);
std::tuple<at::Tensor, c10::optional<at::Tensor>> sn_matvec_gram_cuda(
    const at::Tensor& w, const at::Tensor& v, bool gram, const c10::optional<at::Tensor>& t_out = c10::nullopt,
    const c10::optional<at::Tensor>& s_out = c10::nullopt);
#endif

}  // namespace ganfast
