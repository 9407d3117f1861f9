// conditional_batch_norm's torch side of the CUDA passes (checks, outputs, workspace, stream); kernels in the .cu.
#include "common/cuda_host.h"
#include "conditional_batch_norm/conditional_batch_norm.h"
#include "conditional_batch_norm/conditional_batch_norm_cuda_launch.h"

#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"

namespace ganfast {
namespace {

void check_cuda_dtype(at::ScalarType st) {
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
              "ganfast: conditional_batch_norm x must be float16, bfloat16 or float32 on cuda, got ", st);
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

CbnParams cuda_params(const at::Tensor& x, const c10::optional<at::Tensor>& dy, const c10::optional<at::Tensor>& mean,
                      const c10::optional<at::Tensor>& rstd, const c10::optional<at::Tensor>& gain,
                      const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& c1,
                      const c10::optional<at::Tensor>& c2, bool relu) {
  GANFAST_CHECK_DEVICE(x, at::kCUDA, "x");
  return make_cbn_params(x, dy, mean, rstd, gain, bias, c1, c2, relu, /*allow_double=*/false);
}

}  // namespace

at::Tensor cbn_channel_stats_cuda(const at::Tensor& x) {
  CbnParams p = cuda_params(x, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt,
                            c10::nullopt, false);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor stats = at::empty({p.C, 2}, x.options().dtype(at::kFloat));
  p.sums = stats.data_ptr();
  if (p.N * p.M == 0) return stats.fill_(std::numeric_limits<double>::quiet_NaN());  // as torch.var_mean
  if (p.C == 0) return stats;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_cuda_dtype(x.scalar_type());
  const DType dtype = to_dtype(x.scalar_type());
  const int sms = sm_count();
  const int64_t splits = conditional_batch_norm_stats_splits(p, dtype, sms);
  TORCH_CHECK(p.C * splits <= std::numeric_limits<int>::max(),
              "ganfast: conditional_batch_norm channel_stats on CUDA: too many channels (", p.C, ")");
  const at::Tensor ws = at::empty({p.C * splits * 2}, x.options().dtype(at::kDouble));
  GANFAST_CHECK_LAUNCH(launch_cbn_channel_stats(p, dtype, ws.data_ptr<double>(), sms, stream));
  return stats;
}

at::Tensor cbn_forward_apply_cuda(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                                  const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                  const c10::optional<at::Tensor>& out) {
  CbnParams p = cuda_params(x, c10::nullopt, mean, rstd, gain, bias, c10::nullopt, c10::nullopt, relu);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor y = output_like(x, out);
  p.out = y.data_ptr();
  if (x.numel() == 0) return y;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_cuda_dtype(x.scalar_type());
  GANFAST_CHECK_LAUNCH(launch_cbn_forward_apply(p, to_dtype(x.scalar_type()), sm_count(), stream));
  return y;
}

at::Tensor cbn_backward_sums_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu) {
  CbnParams p = cuda_params(x, dy, mean, rstd, gain, bias, c10::nullopt, c10::nullopt, relu);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor sums = at::empty({p.N, p.C, 2}, x.options().dtype(at::kFloat));
  p.sums = sums.data_ptr();
  if (x.numel() == 0) return sums.zero_();  // sums over empty planes
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_cuda_dtype(x.scalar_type());
  const DType dtype = to_dtype(x.scalar_type());
  TORCH_CHECK(conditional_batch_norm_sums_blocks(p, dtype) <= std::numeric_limits<int>::max(),
              "ganfast: conditional_batch_norm backward_sums on CUDA: too many planes (", p.N * p.C, ")");
  GANFAST_CHECK_LAUNCH(launch_cbn_backward_sums(p, dtype, stream));
  return sums;
}

at::Tensor cbn_backward_dx_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                const at::Tensor& c1, const at::Tensor& c2, const c10::optional<at::Tensor>& out) {
  CbnParams p = cuda_params(x, dy, mean, rstd, gain, bias, c1, c2, relu);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor dx = output_like(x, out);
  p.out = dx.data_ptr();
  if (x.numel() == 0) return dx;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_cuda_dtype(x.scalar_type());
  GANFAST_CHECK_LAUNCH(launch_cbn_backward_dx(p, to_dtype(x.scalar_type()), sm_count(), stream));
  return dx;
}

}  // namespace ganfast
