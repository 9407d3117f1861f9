"""bias_act on the CUDA extension (csrc/bias_act/bias_act_cuda.cu): thin wrapper."""
import functools

from ganfast.ops.bias_act.cpu import run_on_extension

run = functools.partial(run_on_extension, "cuda")
