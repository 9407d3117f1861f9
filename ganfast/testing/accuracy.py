"""The accuracy rule every fast path is held to.

Oracle: the reference computed in float64. A fast result in dtype D passes when its max error
against the oracle is at most 2x the max error of the reference itself run in dtype D, plus a
per-dtype floor scaled by the oracle's magnitude (the rule of flash-attention's tests). The floors
live in one table, here.

The reference's error is one sample of a random quantity: on outputs that are sums with
cancellation (the parameter gradient of a whole plane) a fast path's error, from another summation
order, is another sample of the same size, and one sample exceeds twice the other now and then
with nothing wrong. So a caller may pass further samples of the reference's error
(`other_ref_errors`: the reference in dtype against float64 on inputs nudged by about an ulp,
tests/fuzz/harness.py) and the budget is 2x the largest.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

# Absolute floor per dtype, multiplied by max(1, max|oracle|).
FLOORS = {
    torch.float64: 1e-10,
    torch.float32: 2e-6,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def poison_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor like t filled with NaN: hand it to a kernel as its output so unwritten elements fail."""
    return torch.full_like(t, float("nan"))


def first_mismatches(got: torch.Tensor, expected: torch.Tensor, tol: float, k: int = 5) -> str:
    """The first k elements where |got - expected| > tol (or got is not finite), as text."""
    g = got.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    bad = ((g - e).abs() > tol) | ~torch.isfinite(g)
    bad &= torch.isfinite(e) | ~torch.isfinite(g)
    idx = bad.nonzero()[:k]
    lines = [f"  at {tuple(i.tolist())}: got {g[tuple(i)].item():.9g}, expected {e[tuple(i)].item():.9g}" for i in idx]
    return f"{int(bad.sum())} of {g.numel()} elements off by more than {tol:.3g}; first:\n" + "\n".join(lines)


def assert_matches_oracle(got: torch.Tensor, oracle: torch.Tensor, ref_same_dtype: Optional[torch.Tensor] = None,
                          dtype: Optional[torch.dtype] = None, name: str = "output", factor: float = 2.0,
                          other_ref_errors: Sequence[float] = ()) -> None:
    """Assert `got` (a fast result) is within the accuracy rule of `oracle` (float64 reference).

    ref_same_dtype: the reference run in got's dtype; its error sets the budget. When None the
    budget is the floor alone (use for float64 comparisons). other_ref_errors: more samples of the
    reference-in-dtype max error (of twin cases); the budget takes the largest sample.
    """
    dtype = dtype or got.dtype
    assert got.shape == oracle.shape, f"{name}: shape {tuple(got.shape)} != expected {tuple(oracle.shape)}"
    o = oracle.detach().to(torch.float64).cpu()
    g = got.detach().to(torch.float64).cpu()
    scale = max(1.0, float(o.abs().max())) if o.numel() else 1.0
    floor = FLOORS[dtype] * scale
    ref_err = 0.0
    if ref_same_dtype is not None and o.numel():
        ref_err = float((ref_same_dtype.detach().to(torch.float64).cpu() - o).abs().max())
    samples = [e for e in other_ref_errors if math.isfinite(e)]
    ref_err = max([ref_err] + samples)
    tol = factor * ref_err + floor
    err = float((g - o).abs().max()) if o.numel() else 0.0
    finite = bool(torch.isfinite(g).all()) if g.numel() else True
    if not finite or err > tol:
        raise AssertionError(f"{name} ({dtype}): max error {err:.3g} > budget {tol:.3g} "
                             f"({factor:g} x reference-in-dtype error {ref_err:.3g}"
                             f"{f', the largest of {len(samples) + 1} samples' if samples else ''} + floor {floor:.3g})\n"
                             + first_mismatches(g, o, tol))


def assert_rounded_to_nearest(got: torch.Tensor, exact: torch.Tensor, name: str = "output",
                              magnitude: Optional[torch.Tensor] = None) -> None:
    """Assert `got` (bfloat16) is `exact` (a more precise value of the same shape) rounded to the
    nearest bfloat16: within half a bf16 ulp of it, plus slack for the kernel's fp32 arithmetic,
    2**-16 of `magnitude` (the sum of the absolute terms of a sum or dot; default |exact|: 1/128 of
    an ulp without cancellation). A truncating cast (the Triton 3.9 interpreter's) is up to a whole
    ulp off toward zero and misses this on about half the elements."""
    exact = exact.detach().to(torch.float64).cpu()
    magnitude = exact.abs() if magnitude is None else magnitude.detach().to(torch.float64).cpu()
    g = got.detach().to(torch.float64).cpu()
    err = (g - exact).abs()
    half_ulp = torch.ldexp(torch.ones_like(exact), torch.frexp(exact)[1] - 9)   # bf16: 8 significant bits
    bad = err > half_ulp + magnitude * 2 ** -16
    idx = bad.nonzero()[:5].tolist()
    assert not bad.any(), (f"{name}: {int(bad.sum())} of {bad.numel()} elements not rounded to nearest; first: "
                           + ", ".join(f"{tuple(i)} got {g[tuple(i)].item():.6g} exact {exact[tuple(i)].item():.6g}"
                                       for i in idx))
