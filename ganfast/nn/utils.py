"""torch.nn.utils-style helpers: ganfast.nn.utils.spectral_norm mirrors torch.nn.utils.parametrizations.spectral_norm."""
from ganfast.nn.spectral_norm import reconverge_spectral_norms, remove_spectral_norm, sigma_of, spectral_norm

__all__ = ["spectral_norm", "remove_spectral_norm", "sigma_of", "reconverge_spectral_norms"]
