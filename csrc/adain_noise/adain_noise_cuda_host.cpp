// adain_noise on CUDA, torch side (g++): checks, allocation (outputs, stats, the split path's
// workspace) and the stream around the launch functions of adain_noise_cuda.cu.
#include "adain_noise/adain_noise.h"

#include <c10/cuda/CUDAGuard.h>

#include <limits>
#include <vector>

#include "adain_noise/adain_noise_cuda_launch.h"
#include "common/checks.h"
#include "common/cuda_host.h"

namespace ganfast {
namespace {

at::ScalarType acc_scalar_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Checks only the CUDA entry points add to make_adain_noise_params's.
void check_cuda_args(const at::Tensor& x, int64_t seed) {
  GANFAST_CHECK_DEVICE(x, at::kCUDA, "x");
  // noise_keys / noise_at take 32-bit sample and pixel indices.
  TORCH_CHECK(seed < 0 || (x.size(0) <= (int64_t(1) << 32) && x.size(2) * x.size(3) <= (int64_t(1) << 32)),
              "ganfast: adain_noise seeded noise needs N and H * W below 2^32, got shape ", x.sizes());
}

// The split path's per-chunk partials [N * C, S, 2] in the accumulation dtype (an undefined
// tensor on the fused path), after checking that the launch fits the grid.
at::Tensor launch_workspace(const AdainNoiseParams& p, DType dtype, const at::Tensor& x) {
  AdainNoiseLaunchInfo info{};
  GANFAST_CHECK_LAUNCH(adain_noise_launch_info(p, dtype, &info));
  TORCH_CHECK(info.blocks <= std::numeric_limits<int>::max(),
              "ganfast: adain_noise on CUDA: tensor too large for one launch (", info.blocks, " blocks)");
  if (info.workspace_elems == 0) return at::Tensor();
  return at::empty({info.workspace_elems}, x.options().dtype(acc_scalar_type(x)));
}

void* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

std::vector<at::Tensor> adain_noise_forward_cuda(
    const at::Tensor& x, const at::Tensor& s, const at::Tensor& t,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, int64_t act, double alpha, double gain, double eps,
    int64_t seed, const c10::optional<at::Tensor>& out) {
  check_cuda_args(x, seed);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor stats = at::empty({x.size(0), x.size(1), 2}, x.options().dtype(acc_scalar_type(x)));
  AdainNoiseParams p = make_adain_noise_params(x, c10::nullopt, s, t, noise, ns, b, stats, act, alpha,
                                               gain, eps, seed);
  at::Tensor y = adain_noise_like_x(x, out);
  p.out = y.data_ptr();
  if (x.numel() == 0) {
    stats.fill_(std::numeric_limits<double>::quiet_NaN());  // statistics of empty planes
    return {y, stats};
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const DType dtype = to_dtype(x.scalar_type());
  // Freed after the launches are queued: the caching allocator reuses it in stream order.
  const at::Tensor ws = launch_workspace(p, dtype, x);
  GANFAST_CHECK_LAUNCH(launch_adain_noise_forward(p, dtype, data_or_null(ws), stream));
  return {y, stats};
}

std::vector<at::Tensor> adain_noise_backward_cuda(
    const at::Tensor& g, const at::Tensor& x, const at::Tensor& s,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, const at::Tensor& stats, int64_t act, double alpha,
    double gain, double eps, int64_t seed, const c10::optional<at::Tensor>& out) {
  check_cuda_args(x, seed);
  const c10::cuda::CUDAGuard device_guard(x.device());
  AdainNoiseParams p = make_adain_noise_params(x, g, s, c10::nullopt, noise, ns, b, stats, act, alpha,
                                               gain, eps, seed);
  at::Tensor dx = adain_noise_like_x(x, out);
  at::Tensor ds = at::empty_like(s), dt = at::empty_like(s), sdz = at::empty_like(s), sdzn = at::empty_like(s);
  p.out = dx.data_ptr();
  p.ds = ds.data_ptr();
  p.dt = dt.data_ptr();
  p.sdz = sdz.data_ptr();
  p.sdzn = sdzn.data_ptr();
  if (x.numel() == 0) {
    for (at::Tensor* v : {&ds, &dt, &sdz, &sdzn}) v->zero_();
    return {dx, ds, dt, sdz, sdzn};
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const DType dtype = to_dtype(x.scalar_type());
  // Freed after the launches are queued: the caching allocator reuses it in stream order.
  const at::Tensor ws = launch_workspace(p, dtype, x);
  GANFAST_CHECK_LAUNCH(launch_adain_noise_backward(p, dtype, data_or_null(ws), stream));
  return {dx, ds, dt, sdz, sdzn};
}

}  // namespace ganfast
