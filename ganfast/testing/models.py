"""Whole-model checks: a model on a fused backend against the same weights on the reference.

Forward values and derivatives are held to different standards, because only the values are
continuous in the arithmetic:

- **Forward values** (images, logits, floating buffers such as running statistics and power
  iteration vectors) of the fused path in float32 must meet the accuracy rule against the float64
  oracle (ganfast.testing.accuracy), with the reference in float32 setting the budget.
- **Derivatives** (every parameter gradient, and what the caller marks as derivative: input
  gradients, R1 / path-length gradients) are compared in float64: the fused path run in float64
  against the reference in float64. They are not compared in float32 because a derivative jumps
  at every kink of ReLU, leaky ReLU and clamp: when a pre-activation lies within float32 rounding
  of a kink, a fused float32 path and the float64 oracle may take different branches, and every
  gradient upstream of that one element moves by O(1) (seen on sagan-32's G: one of 98,304
  pre-activations of its last batch norm at -8.3e-7 in float64 and +1.5e-7 on the fused path,
  shared.weight's gradient off by 0.11; a different summation order in torch's own kernels, such
  as another ATEN_CPU_CAPABILITY, moves such an element across). Both sides are right for their
  own forward; the float32 comparison would be a coin toss on machine details. In float64 the
  same flip needs a pre-activation within ~1e-15 of a kink, and a wrong gradient stands out by ten
  orders of magnitude. The float32 precision of every op's gradients is tested op by op
  (tests/ops), where inputs are drawn away from kinks.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Union

import torch
from torch import nn

from ganfast.testing.accuracy import assert_matches_oracle

F32, F64 = torch.float32, torch.float64

__all__ = ["assert_fast_matches_reference", "model_results"]


def model_results(model: nn.Module, run: Callable[[nn.Module, torch.dtype], dict], dtype: torch.dtype) -> dict:
    """run(model, dtype) plus every trainable parameter's gradient ('grad <name>'; zeros where
    autograd left None: a parameter the loss does not reach on one backend's graph may get an
    explicit zero on another) and every floating buffer ('buffer <name>'), as float64 copies."""
    out = {name: t for name, t in dict(run(model, dtype)).items()}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[f"grad {name}"] = p.grad if p.grad is not None else torch.zeros_like(p)
    out.update({f"buffer {name}": b for name, b in model.named_buffers() if b.is_floating_point()})
    return {k: v.detach().to(F64).clone() for k, v in out.items()}


def assert_fast_matches_reference(module: nn.Module, run: Callable[[nn.Module, torch.dtype], dict],
                                  values: Union[Iterable[str], Callable[[str], bool]] = (),
                                  backend: str = "cpu") -> dict:
    """`module` on `backend` against the reference (see the module docstring for the rule).

    Four deep copies are taken before any forward (so spectral norms start from the same
    vectors): `backend` in float32 and float64, the reference in float32 and float64 (the oracle).
    run(copy, dtype) runs a forward and backward on fixed inputs cast to dtype and returns named
    tensors; `values` names those that are forward values (checked in float32 and float64; a
    predicate on the name also works), the rest are derivatives (checked in float64), as are the
    parameter gradients. Floating buffers count as values. Returns the oracle's results (float64 tensors by name).
    """
    from ganfast.models import set_backend

    is_value = values if callable(values) else set(values).__contains__
    copies = {
        "fast32": set_backend(copy.deepcopy(module), backend).float(),
        "fast64": set_backend(copy.deepcopy(module), backend).double(),
        "ref32": set_backend(copy.deepcopy(module), "reference").float(),
        "oracle": set_backend(copy.deepcopy(module), "reference").double(),
    }
    res = {key: model_results(m, run, F64 if key in ("fast64", "oracle") else F32) for key, m in copies.items()}
    oracle = res["oracle"]
    assert res["fast64"].keys() == oracle.keys(), sorted(set(res["fast64"]) ^ set(oracle))
    if not callable(values):
        missing = set(values) - oracle.keys()
        assert not missing, f"values {sorted(missing)} are not among run's outputs {sorted(oracle)}"
    for name, expected in oracle.items():
        assert_matches_oracle(res["fast64"][name], expected, dtype=F64, name=f"{name} [{backend}, float64]")
        if name.startswith("buffer ") or (not name.startswith("grad ") and is_value(name)):
            assert_matches_oracle(res["fast32"][name], expected, res["ref32"][name], dtype=F32,
                                  name=f"{name} [{backend}, float32]")
    return oracle
