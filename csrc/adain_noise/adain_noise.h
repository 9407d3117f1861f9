// adain_noise: the torch-side declarations shared by the CPU and CUDA extensions. The op's
// definition, the params struct (and its memory view) and the per-element math are in
// adain_noise_params.h, which has no torch header so that the CUDA kernels can include it too.
#pragma once
#include <cstdint>
#include <vector>
#include <torch/extension.h>

#include "adain_noise/adain_noise_params.h"

namespace ganfast {

// Host code shared by both extensions (adain_noise_common.cpp): argument checks with clear
// messages, and the params. `backward` selects which tensors are required.
AdainNoiseParams make_adain_noise_params(
    const at::Tensor& x, const c10::optional<at::Tensor>& g, const at::Tensor& s,
    const c10::optional<at::Tensor>& t, const c10::optional<at::Tensor>& noise,
    const c10::optional<at::Tensor>& ns, const c10::optional<at::Tensor>& b,
    const at::Tensor& stats, int64_t act, double alpha, double gain, double eps, int64_t seed);

// Forward: returns {out, stats}. out: optional preallocated output with x's layout (the tests
// pass a NaN-filled one so an unwritten element fails).
std::vector<at::Tensor> adain_noise_forward_cpu(
    const at::Tensor& x, const at::Tensor& s, const at::Tensor& t,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, int64_t act, double alpha, double gain, double eps,
    int64_t seed, const c10::optional<at::Tensor>& out = c10::nullopt);
// Backward: returns {dx, ds, dt, sdz, sdzn}.
std::vector<at::Tensor> adain_noise_backward_cpu(
    const at::Tensor& g, const at::Tensor& x, const at::Tensor& s,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, const at::Tensor& stats, int64_t act, double alpha,
    double gain, double eps, int64_t seed, const c10::optional<at::Tensor>& out = c10::nullopt);
#ifdef GANFAST_WITH_CUDA
std::vector<at::Tensor> adain_noise_forward_cuda(
    const at::Tensor& x, const at::Tensor& s, const at::Tensor& t,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, int64_t act, double alpha, double gain, double eps,
    int64_t seed, const c10::optional<at::Tensor>& out = c10::nullopt);
std::vector<at::Tensor> adain_noise_backward_cuda(
    const at::Tensor& g, const at::Tensor& x, const at::Tensor& s,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, const at::Tensor& stats, int64_t act, double alpha,
    double gain, double eps, int64_t seed, const c10::optional<at::Tensor>& out = c10::nullopt);
#endif

// Allocation of the outputs, shared by both extensions.
at::Tensor adain_noise_like_x(const at::Tensor& x, const c10::optional<at::Tensor>& out);

}  // namespace ganfast
