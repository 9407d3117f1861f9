"""power_iteration benchmark spec (defined with the spectral-norm specs in ganfast.bench.spectral_norm)."""
from ganfast.bench.spectral_norm import POWER_ITERATION_SPEC as SPEC

__all__ = ["SPEC"]
