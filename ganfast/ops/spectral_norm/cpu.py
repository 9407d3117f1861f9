"""spectral_norm's passes on the CPU extension (csrc/spectral_norm/spectral_norm_cpu.cpp): thin wrappers."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ganfast import _ext


def matvec_t_on_extension(kind: str, w: torch.Tensor, u: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kernel contract reference.matvec_t on extension `kind` ("cpu" or "cuda"): s [k, K] = u W.

    out: optional preallocated s (the tests pass a NaN-filled one)."""
    return _ext.extension(kind).sn_matvec_t(w, u, out)


def matvec_gram_on_extension(kind: str, w: torch.Tensor, v: torch.Tensor, gram: bool,
                             t_out: Optional[torch.Tensor] = None, s_out: Optional[torch.Tensor] = None
                             ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The kernel contract reference.matvec_gram on extension `kind`: t [k, O] = v W^T and, when
    gram, s [k, K] = t W (else None), reading W once.

    t_out, s_out: optional preallocated outputs (s_out only with gram)."""
    t, s = _ext.extension(kind).sn_matvec_gram(w, v, gram, t_out, s_out)
    return t, s


matvec_t = functools.partial(matvec_t_on_extension, "cpu")
matvec_gram = functools.partial(matvec_gram_on_extension, "cpu")
