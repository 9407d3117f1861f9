"""modulated_conv2d's epilogue and demodulation on the CUDA extension
(csrc/modulated_conv2d/modulated_conv2d_cuda.cu): thin wrappers (see cpu.py)."""
import functools

from ganfast.ops.modulated_conv2d.cpu import (demod_coefficients_on_extension, epilogue_backward_on_extension,
                                              epilogue_forward_on_extension)

epilogue_forward = functools.partial(epilogue_forward_on_extension, "cuda")
epilogue_backward = functools.partial(epilogue_backward_on_extension, "cuda")
demod_coefficients = functools.partial(demod_coefficients_on_extension, "cuda")
