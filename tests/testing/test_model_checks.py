"""ganfast.testing.models: the whole-model fast-vs-reference rule.

The case that made the rule what it is, forced on any machine: a pre-activation within float32
rounding of ReLU's kink. Two float32 paths that differ only in a valid summation order land on
opposite sides of the kink, so their gradients differ by O(1) while both are right for their own
forward (this happened on sagan-32's G, where another ATEN_CPU_CAPABILITY reordered a sum in
torch's kernels). A float32 gradient comparison calls that a failure; the rule compares
derivatives in float64 and still catches a wrong gradient or value.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganfast.models import set_backend
from ganfast.testing import assert_matches_oracle
from ganfast.testing.models import assert_fast_matches_reference

F32, F64 = torch.float32, torch.float64


class _ScaledGrad(torch.autograd.Function):
    """Identity forward, gradient times `scale`: a planted backward bug."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


class _Kink(nn.Module):
    """y = relu(s + b) * u with s = w0 + w1 + w2 summed (w0 + w1) + w2 on the 'cpu' backend and
    w0 + (w1 + w2) on the reference: two valid float32 orders, as a fused kernel and torch may
    take. `bug` plants a wrong gradient (scale) or value (shift) on the cpu backend only."""

    def __init__(self, b: float, bug: str = ""):
        super().__init__()
        # w1 = 1.25 ulp(1)/2: 1 + w1 rounds up to 1 + 2^-23 in float32, w1 - 1 rounds to -(1 - 2^-24)
        self.w = nn.Parameter(torch.tensor([1.0, 1.25 * 2.0 ** -24, -1.0]))
        self.b = nn.Parameter(torch.tensor(b))
        self.backend, self.bug = None, bug

    def pre_activation(self) -> torch.Tensor:
        w = self.w
        s = (w[0] + w[1]) + w[2] if self.backend == "cpu" else w[0] + (w[1] + w[2])
        if self.backend == "cpu" and self.bug == "grad":
            s = _ScaledGrad.apply(s, 1.001)
        if self.backend == "cpu" and self.bug == "value":
            s = s + 1e-3
        return s + self.b

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activation()) * u


U = torch.linspace(0.5, 2.0, 5, dtype=F64)


def _run(model, dtype):
    y = model(U.to(dtype))
    y.sum().backward()
    return {"y": y}


def test_premise_the_float32_orders_straddle_the_kink():
    net = _Kink(b=-1e-7)
    fast, ref, oracle = set_backend(copy.deepcopy(net), "cpu"), set_backend(copy.deepcopy(net), "reference"), \
        set_backend(copy.deepcopy(net), "reference").double()
    assert fast.pre_activation() > 0 >= ref.pre_activation()
    assert oracle.pre_activation() < 0 and set_backend(copy.deepcopy(net), "cpu").double().pre_activation() < 0


def test_float32_gradient_comparison_fails_at_a_kink():
    """The old model-level rule (float32 gradients against the oracle, the float32 reference's
    error as budget) rejects two correct paths: this is the failure the rule was changed for."""
    net = _Kink(b=-1e-7)
    grads = {}
    for key, m, dtype in (("fast", set_backend(copy.deepcopy(net), "cpu"), F32),
                          ("ref32", set_backend(copy.deepcopy(net), "reference"), F32),
                          ("oracle", set_backend(copy.deepcopy(net), "reference").double(), F64)):
        _run(m, dtype)
        grads[key] = m.w.grad
    with pytest.raises(AssertionError, match="grad w"):
        assert_matches_oracle(grads["fast"], grads["oracle"], grads["ref32"], name="grad w", factor=4.0)


def test_rule_accepts_correct_paths_across_a_kink():
    oracle = assert_fast_matches_reference(_Kink(b=-1e-7), _run, values=("y",))
    assert oracle["grad w"].abs().max() == 0     # inactive in float64: the case is at the kink


@pytest.mark.parametrize("b", [-1e-7, 0.5])
def test_rule_catches_a_wrong_value(b):
    with pytest.raises(AssertionError, match=r"y \[cpu, float64\]"):
        assert_fast_matches_reference(_Kink(b=b, bug="value"), _run, values=("y",))


def test_rule_catches_a_wrong_gradient():
    # b = 0.5: the ReLU is active, so the planted 1.001x gradient reaches w and b
    with pytest.raises(AssertionError, match=r"grad (w|b) \[cpu, float64\]"):
        assert_fast_matches_reference(_Kink(b=0.5, bug="grad"), _run, values=("y",))
    assert_fast_matches_reference(_Kink(b=0.5), _run, values=("y",))    # and the same net without the bug passes


def test_values_must_name_outputs():
    with pytest.raises(AssertionError, match="not among run's outputs"):
        assert_fast_matches_reference(_Kink(b=0.5), _run, values=("img",))
