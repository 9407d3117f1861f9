"""ganfast.nn.EqualizedLinear / EqualizedConv2d / MinibatchStd / normalize_2nd_moment against their
formulas, fast vs reference with double backward, and bad arguments."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ganfast.models import set_backend
from ganfast.nn import EqualizedConv2d, EqualizedLinear, MinibatchStd, normalize_2nd_moment
from ganfast.testing.accuracy import assert_matches_oracle


def test_equalized_linear_is_the_scaled_formula():
    m = EqualizedLinear(7, 5, act="lrelu", lr_multiplier=0.01, bias_init=0.5)
    torch.testing.assert_close(m.bias * 0.01, torch.full([5], 0.5))      # effective initial bias
    assert abs(float(m.weight.detach().std()) * 0.01 - 1) < 0.5                     # stored N(0, 1 / lr)
    x = torch.randn(3, 7)
    w = m.weight * (0.01 / math.sqrt(7))
    expected = F.leaky_relu(x @ w.t() + m.bias * 0.01, 0.2) * math.sqrt(2)
    torch.testing.assert_close(m(x), expected)
    lin = EqualizedLinear(7, 5)
    torch.testing.assert_close(lin(x), x @ (lin.weight / math.sqrt(7)).t() + lin.bias)


@pytest.mark.parametrize("up,down,k", [(1, 1, 3), (2, 1, 3), (1, 2, 3), (1, 2, 1), (1, 1, 1)])
def test_equalized_conv_fast_matches_reference_to_second_order(up, down, k):
    torch.manual_seed(up * 10 + down + k)
    m = EqualizedConv2d(5, 6, k, act="lrelu", up=up, down=down, conv_clamp=2.0)
    m.bias.data.normal_()
    oracle = set_backend(copy.deepcopy(m), "reference").double()
    ref32 = set_backend(copy.deepcopy(m), "reference")
    x = torch.randn(2, 5, 9, 7)              # odd sizes

    def run(model, dtype):
        xi = x.to(dtype).requires_grad_(True)
        y = model(xi, gain=0.7)
        g, = torch.autograd.grad((y * y.detach().sin()).sum(), xi, create_graph=True)
        (g.square().sum() + y.sum()).backward()     # + y: d(bias) is nonzero (lrelu's second derivative is 0)
        return y, g, model.weight.grad, model.bias.grad

    for got, exp, r, name in zip(run(m, torch.float32), run(oracle, torch.float64), run(ref32, torch.float32),
                                 ("y", "dx", "d2 weight", "d2 bias")):
        assert_matches_oracle(got, exp, r, name=name)
    assert run(m, torch.float32)[0].shape == (2, 6, 9 * up // down, 7 * up // down)


def test_equalized_conv_weight_gain_and_clamp():
    m = EqualizedConv2d(4, 3, 3, act="linear", conv_clamp=0.1)
    x = torch.randn(2, 4, 5, 5) * 10
    y = m(x)
    assert float(y.abs().max()) <= 0.1 + 1e-7
    m.conv_clamp = None
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight / math.sqrt(4 * 9), m.bias, padding=1))


def test_minibatch_std_matches_a_loop():
    x = torch.randn(8, 6, 3, 3)
    y = MinibatchStd(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 3, 3)
    torch.testing.assert_close(y[:, :6], x)
    m = 8 // 4
    for n in range(8):
        members = x[n % m::m]                                           # samples sharing n's group slot
        for f in range(2):
            sub = members[:, f * 3:(f + 1) * 3]
            std = (sub.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(y[n, 6 + f], std.expand(3, 3))
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStd(4)(torch.randn(6, 4, 2, 2))
    assert MinibatchStd(4)(torch.randn(2, 4, 2, 2)).shape == (2, 5, 2, 2)   # group = min(4, N)


def test_normalize_2nd_moment():
    z = torch.randn(4, 9) * 3
    y = normalize_2nd_moment(z)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(4), rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_features"):
        EqualizedLinear(0, 3)
    with pytest.raises(ValueError, match="act"):
        EqualizedLinear(3, 3, act="gelu2")
    with pytest.raises(ValueError, match="lr_multiplier"):
        EqualizedLinear(3, 3, lr_multiplier=0)
    with pytest.raises(ValueError, match="down"):
        EqualizedConv2d(3, 3, 3, down=0)
    with pytest.raises(ValueError, match="conv_clamp"):
        EqualizedConv2d(3, 3, 3, conv_clamp=-1)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\]"):
        EqualizedLinear(3, 2)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3, H, W\]"):
        EqualizedConv2d(3, 2, 1)(torch.randn(2, 4, 3, 3))
