"""adain_noise on the CUDA extension (csrc/adain_noise/adain_noise_cuda.cu): thin wrapper."""
import functools

from ganfast.ops.adain_noise.cpu import backward_on_extension, forward_on_extension

forward = functools.partial(forward_on_extension, "cuda")
backward = functools.partial(backward_on_extension, "cuda")
