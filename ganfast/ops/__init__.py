"""ganfast fused ops. Each op: reference (the spec), cpu / triton / cuda fast paths, one public function."""
from ganfast.ops.bias_act import bias_act, BIAS_ACT_ACTIVATIONS
from ganfast.ops.adain_noise import adain_noise, draw_noise
from ganfast.ops.upfirdn2d import setup_filter, upfirdn2d
from ganfast.ops.modulated_conv2d import conv2d_resample, modulated_conv2d
from ganfast.ops.spectral_norm import power_iteration, sigma_estimate, spectral_sigma
from ganfast.ops.conditional_batch_norm import conditional_batch_norm
from ganfast.ops.self_attention import self_attention2d

__all__ = ["bias_act", "BIAS_ACT_ACTIVATIONS", "adain_noise", "draw_noise", "upfirdn2d", "setup_filter",
           "modulated_conv2d", "conv2d_resample", "power_iteration", "sigma_estimate", "spectral_sigma", "conditional_batch_norm",
           "self_attention2d"]
