// upfirdn2d on CUDA, torch side (g++): checks, allocation and the stream around launch_upfirdn2d.
#include "upfirdn2d/upfirdn2d.h"

#include <c10/cuda/CUDAGuard.h>

#include "common/checks.h"
#include "common/cuda_host.h"
#include "upfirdn2d/upfirdn2d_cuda_launch.h"

namespace ganfast {

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                          double gain, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCUDA, "upfirdn2d x");
  Upfirdn2dParams p = make_upfirdn2d_params(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain,
                                            /*allow_double=*/false);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor y = upfirdn2d_output(x, p, out);
  p.out = y.data_ptr();
  if (p.planes == 0) return y;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // launch_upfirdn2d has float32, float16 and bfloat16 kernels.
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              "ganfast: upfirdn2d x has an unsupported dtype ", x.scalar_type());  // checked above
  GANFAST_CHECK_LAUNCH(launch_upfirdn2d(p, to_dtype(x.scalar_type()), stream));
  return y;
}

}  // namespace ganfast
