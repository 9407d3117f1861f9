"""Conditional DCGANs: cGAN, ACGAN and InfoGAN, each a subclass of the DCGAN G / D in
ganfast.models.dcgan (same layers, channel plan, fused ops and N(0, 0.02) init).

cGAN (Mirza & Osindero 2014), label concatenation on both sides:
    G(z, c) = DCGAN-G(cat(z, onehot(c)))                                   [N, z_dim + c_dim] in
    D(img, c) = DCGAN-D(cat(img, onehot(c) broadcast to [N, c_dim, R, R]))  [N, C + c_dim, R, R] in
ACGAN (Odena, Olah & Shlens 2017):
    G as cGAN's: the label's one-hot concatenated to z (not the class-embedding product some
    reimplementations use).
    D(img) is unconditional; its trunk feeds two 4x4 valid-conv heads: the real/fake logit and
    a classifier over c_dim classes (forward_aux). D.c_dim is that class count; D accepts c, as
    every D does, and checks it, but never reads it: the classifier must work from the image alone.
InfoGAN (Chen et al. 2016), unsupervised (c_dim = 0):
    G(z, codes) = DCGAN-G(cat(z, onehot(codes['cat']), codes['cont'])), a categorical code with
    n_cat values and n_cont continuous codes uniform on [-1, 1]; codes=None draws them from
    torch's global RNG (sample_codes), so the training loop that needs the codes for the
    mutual-information term should draw them itself with G.sample_codes and pass them in.
    D's trunk also feeds the Q head, a 4x4 valid conv to n_cat logits and a Gaussian (mean,
    log-variance) per continuous code; info_loss is the loss on them.
The auxiliary heads have biases (the DCGAN convolutions have none because a batch norm follows;
these produce logits and log-variances whose offset must be learnable); the real/fake head has
none, so D's real/fake path is the DCGAN D exactly.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models.common import check_latent, labels_to_onehot
from ganfast.models.dcgan import (DCGANDiscriminator, DCGANGenerator, check_positive_int, init_dcgan_weights,
                                  logit_head)
from ganfast.models.registry import register_preset

__all__ = ["ConditionalGenerator", "CGANDiscriminator", "ACGANDiscriminator", "InfoGANGenerator",
           "InfoGANDiscriminator", "info_loss", "build_cgan", "build_acgan", "build_infogan"]


def _check_num_classes(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"{who}: {name} must be an int >= 2 (the number of classes), got {value!r}")
    return value


def _check_n_cont(who: str, n_cont) -> int:
    if isinstance(n_cont, bool) or not isinstance(n_cont, int) or n_cont < 0:
        raise ValueError(f"{who}: n_cont must be an int >= 0 (the number of continuous codes), got {n_cont!r}")
    return n_cont


class ConditionalGenerator(DCGANGenerator):
    """cGAN's and ACGAN's G: G(z [N, z_dim], c) -> [N, img_channels, R, R], the DCGAN G reading
    cat(z, onehot(c)) [N, z_dim + c_dim]. c: int64 [N] or float [N, c_dim]; required."""

    def __init__(self, c_dim: int, z_dim: int = 100, img_resolution: int = 32, img_channels: int = 1,
                 ngf: int = 64):
        _check_num_classes(type(self).__name__, "c_dim", c_dim)
        super().__init__(z_dim, img_resolution, img_channels, ngf, appended_dim=c_dim)
        self.c_dim = c_dim

    def latent_input(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        onehot = labels_to_onehot(type(self).__name__, c, self.c_dim, z.shape[0], z.dtype)   # [N, c_dim]
        return torch.cat([z, onehot], dim=1)


class CGANDiscriminator(DCGANDiscriminator):
    """cGAN's D: D(img [N, C, R, R], c) -> logits [N], the DCGAN D reading the image with the
    one-hot label broadcast as c_dim extra channels. c required."""

    def __init__(self, c_dim: int, img_resolution: int = 32, img_channels: int = 1, ndf: int = 64):
        _check_num_classes(type(self).__name__, "c_dim", c_dim)
        super().__init__(img_resolution, img_channels, ndf, appended_channels=c_dim)
        self.c_dim = c_dim

    def trunk_input(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        n, _, h, w = img.shape
        onehot = labels_to_onehot(type(self).__name__, c, self.c_dim, n, img.dtype)           # [N, c_dim]
        return torch.cat([img, onehot[:, :, None, None].expand(n, self.c_dim, h, w)], dim=1)


class ACGANDiscriminator(DCGANDiscriminator):
    """ACGAN's D: D(img, c=None) -> logits [N]; forward_aux(img, c=None) -> (logits [N],
    {"class_logits": [N, c_dim]}). c is checked when given but never read (see the module doc)."""

    def __init__(self, c_dim: int, img_resolution: int = 32, img_channels: int = 1, ndf: int = 64):
        _check_num_classes(type(self).__name__, "c_dim", c_dim)
        super().__init__(img_resolution, img_channels, ndf)
        self.c_dim = c_dim
        self.classifier = init_dcgan_weights(logit_head(self.trunk_channels, c_dim, bias=True))

    def trunk_input(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if c is not None:   # a malformed label batch still fails here, though D does not read it
            labels_to_onehot(type(self).__name__, c, self.c_dim, img.shape[0], img.dtype)
        return img

    def forward_aux(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        features = self.features(img, c)                                  # [N, C4, 4, 4]
        return self.real_fake_logits(features), {"class_logits": self.classifier(features)[:, :, 0, 0]}


class InfoGANGenerator(DCGANGenerator):
    """InfoGAN's G: G(z [N, z_dim], c=None, codes=None) -> [N, img_channels, R, R], the DCGAN G
    reading cat(z, onehot(codes['cat']), codes['cont']) [N, z_dim + n_cat + n_cont].

    codes: {'cat': int64 [N] in [0, n_cat) (or float [N, n_cat], e.g. to blend categories),
    'cont': float [N, n_cont]}; None: drawn by sample_codes from torch's global RNG.
    Unsupervised: c_dim = 0, and labels c are refused.
    """

    def __init__(self, n_cat: int = 10, n_cont: int = 2, z_dim: int = 62, img_resolution: int = 32,
                 img_channels: int = 1, ngf: int = 64):
        who = type(self).__name__
        _check_num_classes(who, "n_cat", n_cat)
        _check_n_cont(who, n_cont)
        super().__init__(z_dim, img_resolution, img_channels, ngf, appended_dim=n_cat + n_cont)
        self.n_cat, self.n_cont = n_cat, n_cont

    def sample_codes(self, n: int, device=None, dtype: torch.dtype = torch.float32,
                     generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """{'cat': int64 [n] uniform over the n_cat values, 'cont': [n, n_cont] uniform on [-1, 1]},
        from `generator` (default: torch's global RNG, so torch.manual_seed makes it reproducible)."""
        check_positive_int(type(self).__name__, "n", n)
        cat = torch.randint(self.n_cat, (n,), device=device, generator=generator)
        cont = torch.rand(n, self.n_cont, device=device, dtype=dtype, generator=generator) * 2 - 1
        return {"cat": cat, "cont": cont}

    def code_vector(self, codes, n: int, dtype: torch.dtype) -> torch.Tensor:
        """codes as [n, n_cat + n_cont]: the one-hot categorical code, then the continuous codes."""
        who = type(self).__name__
        if not isinstance(codes, dict) or set(codes) != {"cat", "cont"}:
            got = sorted(codes) if isinstance(codes, dict) else type(codes).__name__
            raise ValueError(f"{who}: codes must be a dict with keys 'cat' (int64 [N]) and 'cont' (float [N, "
                             f"{self.n_cont}]), got {got}")
        cat = labels_to_onehot(f"{who} codes['cat']", codes["cat"], self.n_cat, n, dtype)     # [N, n_cat]
        cont = codes["cont"]
        if not isinstance(cont, torch.Tensor) or not cont.is_floating_point() or tuple(cont.shape) != (n, self.n_cont):
            got = list(cont.shape) if isinstance(cont, torch.Tensor) else type(cont).__name__
            raise ValueError(f"{who}: codes['cont'] must be a floating [{n}, {self.n_cont}] tensor, got {got}")
        return torch.cat([cat, cont.to(dtype)], dim=1)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None,
                codes: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        who = type(self).__name__
        check_latent(who, z, self.z_dim)
        n = z.shape[0]
        labels_to_onehot(who, c, self.c_dim, n, z.dtype)   # c_dim = 0: refuses labels
        if codes is None:
            codes = self.sample_codes(n, z.device, z.dtype)
        return self.synthesize(torch.cat([z, self.code_vector(codes, n, z.dtype)], dim=1))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_cat={self.n_cat}, n_cont={self.n_cont}"


class InfoGANDiscriminator(DCGANDiscriminator):
    """InfoGAN's D and Q: D(img, c=None) -> logits [N]; forward_aux(img, c=None) -> (logits [N],
    {"cat_logits": [N, n_cat], "cont_mean": [N, n_cont], "cont_logvar": [N, n_cont]}), the Q head
    sharing D's trunk. Unsupervised: c_dim = 0, and labels c are refused."""

    def __init__(self, n_cat: int = 10, n_cont: int = 2, img_resolution: int = 32, img_channels: int = 1,
                 ndf: int = 64):
        who = type(self).__name__
        _check_num_classes(who, "n_cat", n_cat)
        _check_n_cont(who, n_cont)
        super().__init__(img_resolution, img_channels, ndf)
        self.n_cat, self.n_cont = n_cat, n_cont
        self.q_head = init_dcgan_weights(logit_head(self.trunk_channels, n_cat + 2 * n_cont, bias=True))

    def forward_aux(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        features = self.features(img, c)                                   # [N, C4, 4, 4]
        q = self.q_head(features)[:, :, 0, 0]                              # [N, n_cat + 2 n_cont]
        cat_logits, cont_mean, cont_logvar = q.split([self.n_cat, self.n_cont, self.n_cont], dim=1)
        return self.real_fake_logits(features), {"cat_logits": cat_logits, "cont_mean": cont_mean,
                                                 "cont_logvar": cont_logvar}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_cat={self.n_cat}, n_cont={self.n_cont}"


def info_loss(aux: dict[str, torch.Tensor], codes: dict[str, torch.Tensor], cont_weight: float = 1.0) -> torch.Tensor:
    """InfoGAN's mutual-information term (to minimize; the lower bound on I(codes; G(z, codes)) up to
    the codes' constant entropy), as a scalar:

        CE(cat_logits, cat)
          + cont_weight * mean_N sum_j 0.5 * (log(2 pi) + logvar_j + (cont_j - mean_j)^2 / exp(logvar_j))

    i.e. the negative log-likelihood of the codes under Q: the categorical one averaged over
    the batch, plus the factored Gaussian one of the continuous codes (summed over the n_cont
    codes, averaged over the batch; the full NLL, log(2 pi) included).

    aux: D.forward_aux's dict {"cat_logits": [N, n_cat], "cont_mean": [N, n_cont], "cont_logvar": [N, n_cont]}.
    codes: the codes G was given {"cat": int64 [N] (or float [N, n_cat] class probabilities), "cont": [N, n_cont]}.
    """
    for d, name, keys in ((aux, "aux", ("cat_logits", "cont_mean", "cont_logvar")), (codes, "codes", ("cat", "cont"))):
        if not isinstance(d, dict) or any(k not in d for k in keys):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"info_loss: {name} must be a dict with keys {list(keys)}, got {got}")
    cat_logits, mean, logvar, cont = aux["cat_logits"], aux["cont_mean"], aux["cont_logvar"], codes["cont"]
    if (cat_logits.ndim != 2 or mean.ndim != 2 or mean.shape != logvar.shape or mean.shape != cont.shape
            or mean.shape[0] != cat_logits.shape[0]):
        raise ValueError(f"info_loss: expected aux cat_logits [N, n_cat] and cont_mean, cont_logvar, codes['cont'] "
                         f"[N, n_cont], got {list(cat_logits.shape)}, {list(mean.shape)}, {list(logvar.shape)}, "
                         f"{list(cont.shape)}")
    cat_nll = F.cross_entropy(cat_logits, codes["cat"])
    cont_nll = 0.5 * (math.log(2 * math.pi) + logvar + (cont - mean).square() * torch.exp(-logvar))   # [N, n_cont]
    return cat_nll + cont_weight * cont_nll.sum(dim=1).mean()


def build_cgan(resolution: int = 32, img_channels: int = 1, z_dim: int = 100, ngf: int = 64, ndf: int = 64,
               c_dim: int = 10) -> tuple[nn.Module, nn.Module]:
    return (ConditionalGenerator(c_dim, z_dim, resolution, img_channels, ngf),
            CGANDiscriminator(c_dim, resolution, img_channels, ndf))


def build_acgan(resolution: int = 32, img_channels: int = 1, z_dim: int = 100, ngf: int = 64, ndf: int = 64,
                c_dim: int = 10) -> tuple[nn.Module, nn.Module]:
    return (ConditionalGenerator(c_dim, z_dim, resolution, img_channels, ngf),
            ACGANDiscriminator(c_dim, resolution, img_channels, ndf))


def build_infogan(resolution: int = 32, img_channels: int = 1, z_dim: int = 62, ngf: int = 64, ndf: int = 64,
                  n_cat: int = 10, n_cont: int = 2) -> tuple[nn.Module, nn.Module]:
    return (InfoGANGenerator(n_cat, n_cont, z_dim, resolution, img_channels, ngf),
            InfoGANDiscriminator(n_cat, n_cont, resolution, img_channels, ndf))


_NO_PUBLISHED_32 = "no published totals for a DCGAN-32 layout; "

register_preset(
    "cgan-32", "cgan", build_cgan,
    description="cGAN on the DCGAN-32 layout (32x32 grayscale, 10 classes; img_channels=3 for CIFAR-10): "
                "one-hot label concatenated to z (G) and broadcast as 10 extra input channels (D); "
                "G 1,107,840, D 671,488 parameters",
    published=_NO_PUBLISHED_32 + "Mirza & Osindero 2014 used MLP (maxout) networks on MNIST and give no "
              "parameter totals",
    resolution=32, img_channels=1, z_dim=100, ngf=64, ndf=64, c_dim=10)

register_preset(
    "acgan-32", "acgan", build_acgan,
    description="ACGAN on the DCGAN-32 layout (32x32 grayscale, 10 classes; img_channels=3 for CIFAR-10): "
                "G reads cat(z, onehot(c)); D has a real/fake head and a 10-way classifier head on one trunk; "
                "G 1,107,840, D 702,218 parameters",
    published=_NO_PUBLISHED_32 + "Odena et al. 2017 give layer tables (appendix) but no parameter totals",
    resolution=32, img_channels=1, z_dim=100, ngf=64, ndf=64, c_dim=10)

register_preset(
    "infogan-32", "infogan", build_infogan,
    description="InfoGAN on the DCGAN-32 layout (32x32 grayscale): 62 noise dims + a 10-way categorical "
                "code + 2 continuous codes, as the paper's MNIST model; D with a Q head on its trunk; "
                "G 960,384, D 718,606 parameters",
    published=_NO_PUBLISHED_32 + "Chen et al. 2016's MNIST model (28x28) mixes fully connected and 4x4 "
              "(transposed) conv layers and the paper gives no parameter totals",
    resolution=32, img_channels=1, z_dim=62, ngf=64, ndf=64, n_cat=10, n_cont=2)
