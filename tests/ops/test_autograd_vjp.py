"""ganfast.ops._autograd.vjp (the double backwards' vjp, by autograd) against torch.func.vjp:
values, zeros for an unused primal, gradients through the pullback (higher orders), and the
fallback to functorch where autograd records nothing."""
from __future__ import annotations

import torch

from ganfast.ops._autograd import vjp

F64 = torch.float64


def _fn(x, y, unused):
    return (x.sin() * y).sum(dim=1), torch.tanh(x * y.exp())


def _inputs(requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(3, 4, generator=g, dtype=F64).requires_grad_(requires_grad) for _ in range(3))


@torch.no_grad()
def test_matches_functorch_and_zeros_for_unused():
    """Grad mode off (a double backward without create_graph): the autograd path."""
    x, y, u = _inputs(True)
    cot = (torch.randn(3, dtype=F64), torch.randn(3, 4, dtype=F64))
    real = torch.func.vjp
    outs, pull = vjp(_fn, x, y, u)
    want_outs, want_pull = torch.func.vjp(_fn, x, y, u)
    for a, b in zip(outs, want_outs):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)
    got, want = pull(cot), want_pull(cot)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    assert got[2].abs().max() == 0
    # a missing cotangent counts as zero (a pullback is called once: its graph is freed)
    torch.testing.assert_close(vjp(_fn, x, y, u)[1]((cot[0], None))[0],
                               want_pull((cot[0], torch.zeros(3, 4, dtype=F64)))[0])
    assert torch.func.vjp is real and not any(t.requires_grad for t in got)   # no graph was kept


def test_differentiable_to_higher_orders():
    """Grad mode on (a graph of the result is built): functorch, any order."""
    x, y, u = _inputs(True)
    cot = torch.randn(3, dtype=F64, requires_grad=True)

    def second(fn_vjp):
        gx, gy, _ = fn_vjp(lambda *a: _fn(*a)[0], x, y, u)[1](cot)
        return (gx.square().sum() + (gx * gy).sum())

    got = torch.autograd.grad(second(vjp), (x, y, cot), create_graph=True)
    want = torch.autograd.grad(second(torch.func.vjp), (x, y, cot), create_graph=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and one order more
    got3 = torch.autograd.grad(got[0].sum(), (x, y))
    want3 = torch.autograd.grad(want[0].sum(), (x, y))
    for a, b in zip(got3, want3):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_falls_back_to_functorch_where_autograd_records_nothing(monkeypatch):
    # stands in for a custom op's kernel (below the autograd keys): fn's results never require grad
    calls = []
    real = torch.func.vjp
    monkeypatch.setattr(torch.func, "vjp", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(3, dtype=F64)
    vjp(lambda t: t.detach() * 2, x)
    assert calls == [1]
