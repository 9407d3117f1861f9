"""spectral_norm's passes on the CUDA extension (csrc/spectral_norm/spectral_norm_cuda.cu): thin wrappers."""
import functools

from ganfast.ops.spectral_norm.cpu import matvec_gram_on_extension, matvec_t_on_extension

matvec_t = functools.partial(matvec_t_on_extension, "cuda")
matvec_gram = functools.partial(matvec_gram_on_extension, "cuda")
