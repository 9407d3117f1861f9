"""ganfast: fused GAN kernels (Triton, CUDA, C++) behind one PyTorch API.

Importing ganfast never fails because an extension or Triton is missing; `ganfast info` says what
is usable here and why anything is not.
"""
__version__ = "0.1.0"

from ganfast.backends import BackendNotSupported, use_backend  # noqa: E402
from ganfast import ops, nn  # noqa: E402

__all__ = ["ops", "nn", "use_backend", "BackendNotSupported", "__version__"]
