"""GAN models built only from ganfast.nn / ganfast.ops, and the preset registry.

    gan = ganfast.models.create("stylegan2-256")      # .G, .D; list_presets() for the names
    img = gan.G(z, c)                                  # see ganfast.models.common for the interface
    ganfast.models.set_backend(gan, "reference")       # the same model in plain PyTorch
"""
from ganfast.models.common import count_parameters, labels_to_index, labels_to_onehot, set_backend
from ganfast.models.registry import GAN, Preset, create, get_preset, list_presets, register_preset
from ganfast.models import biggan, cdcgan, conditional, convert, cyclegan, dcgan, pix2pix, progan, sngan, srgan, stylegan, stylegan2, unit  # noqa: F401  (registers presets)

__all__ = ["GAN", "Preset", "create", "get_preset", "list_presets", "register_preset", "set_backend",
           "count_parameters", "labels_to_onehot", "labels_to_index", "convert"]
