"""upfirdn2d on the CUDA extension (csrc/upfirdn2d/upfirdn2d_cuda.cu): thin wrapper."""
import functools

from ganfast.ops.upfirdn2d.cpu import run_on_extension

run = functools.partial(run_on_extension, "cuda")
