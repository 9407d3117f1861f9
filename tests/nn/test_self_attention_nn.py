"""ganfast.nn.SelfAttention2d: the block over ganfast.ops.self_attention2d with SN 1x1 convolutions."""
from __future__ import annotations

import pytest
import torch

from ganfast.nn import SelfAttention2d, SNConv2d
from ganfast.ops.self_attention.reference import self_attention2d_ref


def test_fresh_block_is_the_identity_and_trains_gamma():
    m = SelfAttention2d(64)
    x = torch.randn(2, 64, 8, 8)
    y = m(x)
    assert torch.equal(y, x)                     # gamma starts at 0
    y.square().sum().backward()
    assert m.gamma.grad is not None and m.gamma.grad.abs() > 0


@pytest.mark.parametrize("sn", [True, False])
def test_matches_the_reference_with_its_own_weights(sn):
    torch.manual_seed(0)
    m = SelfAttention2d(32, sn=sn).eval()       # eval: SN uses the stored u, v (no update between calls)
    with torch.no_grad():
        m.gamma.fill_(0.8)
    x = torch.randn(2, 32, 6, 6)
    ws = [layer.weight for layer in (m.theta, m.phi, m.g, m.o)]
    expected = self_attention2d_ref(x, *ws, m.gamma, pool=2)
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


def test_sn_layers_and_widths():
    m = SelfAttention2d(64, qk_ratio=8, v_ratio=2)
    assert all(isinstance(layer, SNConv2d) for layer in (m.theta, m.phi, m.g, m.o))
    assert [tuple(l.weight.shape) for l in (m.theta, m.phi, m.g, m.o)] == [(8, 64, 1, 1), (8, 64, 1, 1), (32, 64, 1, 1), (64, 32, 1, 1)]
    assert all(l.bias is None for l in (m.theta, m.phi, m.g, m.o))
    plain = SelfAttention2d(64, sn=False)
    assert not any(isinstance(l, SNConv2d) for l in (plain.theta, plain.phi, plain.g, plain.o))
    assert "channels=64, qk_ratio=8, v_ratio=2, pool=2, sn=True" in repr(m)


def test_training_steps_update_the_power_iteration_and_normalize():
    m = SelfAttention2d(32).train()
    u0 = m.theta.parametrizations.weight[0]._u.clone()
    x = torch.randn(2, 32, 4, 4)
    for _ in range(20):
        m(x)
    assert not torch.equal(u0, m.theta.parametrizations.weight[0]._u)
    # after the iterations, W / sigma has spectral norm ~1
    w = m.g.weight.detach().flatten(1)
    assert abs(torch.linalg.matrix_norm(w, ord=2).item() - 1.0) < 1e-2


def test_state_dict_round_trip():
    a, b = SelfAttention2d(32), SelfAttention2d(32)
    with torch.no_grad():
        a.gamma.fill_(0.3)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("kw, match", [
    (dict(channels=0), r"channels must be an int >= 1"),
    (dict(channels=30), r"divisible by qk_ratio"),
    (dict(channels=32, pool=0), r"pool must be an int >= 1"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SelfAttention2d(**kw)
