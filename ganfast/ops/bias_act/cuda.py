"""bias_act on the CUDA extension (csrc/bias_act/bias_act_cuda.cu): thin wrapper."""
from ganfast.ops.bias_act.cpu import runner

run = runner("cuda")
