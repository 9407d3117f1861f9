// bias_act on CUDA, torch side (g++): checks, allocation, stream and the db reduction around launch_bias_act.
#include "bias_act/bias_act.h"

#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "bias_act/bias_act_cuda_launch.h"
#include "common/checks.h"
#include "common/cuda_host.h"

namespace ganfast {

std::vector<at::Tensor> bias_act_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                      const c10::optional<at::Tensor>& g,
                                      const c10::optional<at::Tensor>& gg, int64_t order,
                                      int64_t dim, int64_t act, double alpha, double gain,
                                      double clamp, bool want_db,
                                     const c10::optional<at::Tensor>& out_opt) {
  GANFAST_CHECK_DEVICE(x, at::kCUDA, "x");
  check_bias_act_args(x, b, g, gg, order, dim, act);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor out = bias_act_output(x, out_opt);  // x's dense strides
  const bool with_db = want_db && b.has_value();
  at::Tensor db;
  if (x.numel() == 0) {
    if (with_db) db = at::zeros({x.size(dim)}, x.options());
    return {out, db};
  }
  const BiasActParams p = make_bias_act_params(x, b, g, gg, out, order, dim, act, alpha, gain, clamp);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  GANFAST_CHECK_LAUNCH(launch_bias_act(p, to_dtype(x.scalar_type()), stream));
  if (with_db) {
    // Sum of what was stored (as bias_act_cpu does), accumulated in fp32 (fp64 for double) by
    // ATen's reduction on the same stream.
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != dim) dims.push_back(d);
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    // An empty dim list would make sum reduce everything: for 1-D x, db is out itself.
    db = dims.empty() ? out.clone() : out.sum(dims, /*keepdim=*/false, acc).to(x.scalar_type());
  }
  return {out, db};
}

}  // namespace ganfast
