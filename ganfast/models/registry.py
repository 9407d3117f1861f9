"""The preset registry: `ganfast.models.create("stylegan2-256")` builds a named (G, D) pair.

Each family module registers its presets at import with `register_preset`. A preset is a
builder plus keyword arguments; `create(name, **overrides)` lets a caller change any of them
(e.g. c_dim=10 for a conditional variant), and `backend=` points every layer at one backend.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
from torch import nn

from ganfast.models.common import count_parameters, set_backend


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    family: str
    builder: Callable[..., tuple[nn.Module, nn.Module]]   # (**kwargs) -> (G, D)
    kwargs: dict
    description: str = ""
    published: str = ""    # the published parameter counts and where they come from
    # (builder kwargs after overrides, world size) -> TrainingConfig fields that replace the family's
    # recipe (presets that reproduce one reference configuration, e.g. stylegan2-ada-pytorch's --cfg)
    recipe: Optional[Callable[[dict, int], dict]] = None


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, family: str, builder: Callable[..., tuple[nn.Module, nn.Module]],
                    description: str = "", published: str = "",
                    recipe: Optional[Callable[[dict, int], dict]] = None, **kwargs) -> None:
    if name in _PRESETS:
        raise ValueError(f"register_preset: preset {name!r} is already registered")
    _PRESETS[name] = Preset(name, family, builder, dict(kwargs), description, published, recipe)


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    if not isinstance(name, str) or name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(list_presets())}")
    return _PRESETS[name]


class GAN(nn.Module):
    """A generator/discriminator pair built from a preset: .G, .D, .preset (name), .config (kwargs)."""

    def __init__(self, G: nn.Module, D: nn.Module, preset: str, config: dict):
        super().__init__()
        self.G, self.D = G, D
        self.preset, self.config = preset, dict(config)

    @property
    def z_dim(self) -> int:
        return self.G.z_dim

    @property
    def c_dim(self) -> int:
        return self.G.c_dim

    @property
    def img_resolution(self) -> int:
        return self.G.img_resolution

    @property
    def img_channels(self) -> int:
        return self.G.img_channels

    def parameter_counts(self) -> dict[str, int]:
        return {"G": count_parameters(self.G), "D": count_parameters(self.D)}

    def forward(self, *args, **kwargs):
        raise RuntimeError("GAN: call .G(z, c) or .D(img, c), not the pair")

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}"


def create(name: str, backend: Optional[str] = None, seed: Optional[int] = None, **overrides) -> GAN:
    """Build preset `name` (see list_presets()) as a GAN (.G, .D).

    overrides: any of the preset's keyword arguments (resolution, c_dim, channel counts, ...).
    backend: point every ganfast layer at this backend ('reference': plain PyTorch).
    seed: initialize the weights from torch.manual_seed(seed) without touching the global RNG.
    """
    preset = get_preset(name)
    kwargs = {**preset.kwargs, **overrides}
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G, D = preset.builder(**kwargs)
    else:
        G, D = preset.builder(**kwargs)
    gan = GAN(G, D, name, kwargs)
    if backend is not None:
        set_backend(gan, backend)
    return gan
