"""ganfast fused ops. Each op: reference (the spec), cpu / triton / cuda fast paths, one public function."""
from ganfast.ops.bias_act import bias_act, BIAS_ACT_ACTIVATIONS

__all__ = ["bias_act", "BIAS_ACT_ACTIVATIONS"]
