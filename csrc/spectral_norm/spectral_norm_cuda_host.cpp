// spectral_norm's torch side of the CUDA passes (checks, outputs, workspace, stream); kernels: spectral_norm_cuda.cu.
#include "common/cuda_host.h"
#include "spectral_norm/spectral_norm.h"
#include "spectral_norm/spectral_norm_cuda_launch.h"

#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"

namespace ganfast {
namespace {

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

void check_sizes(const SpectralNormParams& p, const char* op) {
  TORCH_CHECK(p.O <= std::numeric_limits<int>::max() && p.k <= kSpectralNormCudaMaxK, "ganfast: ", op,
              " on cuda needs O below 2^31 and k at most ", kSpectralNormCudaMaxK, ", got O = ", p.O, ", k = ", p.k);
}

void check_dtype(const at::Tensor& w, const char* op) {
  const at::ScalarType st = w.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, "ganfast: ", op,
              " w has an unsupported dtype ", st);  // checked before
}

// The partials buffer [parts, k, K] of a launch (parts from the launch header; 0: none).
float* partials_buffer(int64_t parts, const SpectralNormParams& p, const at::Tensor& w, at::Tensor* holder) {
  if (parts == 0) return nullptr;
  *holder = at::empty({parts, p.k, p.K}, w.options().dtype(at::kFloat));
  return holder->data_ptr<float>();
}

}  // namespace

at::Tensor sn_matvec_t_cuda(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(w, at::kCUDA, "sn_matvec_t w");
  const c10::cuda::CUDAGuard device_guard(w.device());
  at::Tensor s;
  const SpectralNormParams p = make_matvec_t_params(w, u, out, /*allow_double=*/false, &s);
  if (p.O == 0 || p.K == 0) return s.zero_();
  check_sizes(p, "sn_matvec_t");
  check_dtype(w, "sn_matvec_t");
  const DType dtype = to_dtype(w.scalar_type());
  const int sms = sm_count();
  at::Tensor partials;
  float* partial = partials_buffer(spectral_norm_t_partials(p, dtype, sms), p, w, &partials);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  GANFAST_CHECK_LAUNCH(launch_spectral_norm_matvec_t(p, dtype, partial, sms, stream));
  return s;
}

std::tuple<at::Tensor, c10::optional<at::Tensor>> sn_matvec_gram_cuda(const at::Tensor& w, const at::Tensor& v, bool gram,
                                                                      const c10::optional<at::Tensor>& t_out,
                                                                      const c10::optional<at::Tensor>& s_out) {
  GANFAST_CHECK_DEVICE(w, at::kCUDA, "sn_matvec_gram w");
  const c10::cuda::CUDAGuard device_guard(w.device());
  at::Tensor t, s;
  const SpectralNormParams p = make_matvec_gram_params(w, v, gram, t_out, s_out, /*allow_double=*/false, &t, &s);
  if (p.O == 0 || p.K == 0) {
    t.zero_();
    if (gram) s.zero_();
  } else {
    check_sizes(p, "sn_matvec_gram");
    check_dtype(w, "sn_matvec_gram");
    const DType dtype = to_dtype(w.scalar_type());
    const int sms = sm_count();
    at::Tensor partials;
    float* partial = partials_buffer(spectral_norm_gram_partials(p, sms), p, w, &partials);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    GANFAST_CHECK_LAUNCH(launch_spectral_norm_matvec_gram(p, dtype, partial, sms, stream));
  }
  return {t, gram ? c10::optional<at::Tensor>(s) : c10::nullopt};
}

}  // namespace ganfast
