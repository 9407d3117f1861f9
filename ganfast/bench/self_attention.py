"""self_attention benchmark spec: SAGAN / BigGAN's attention block at the issue's layer shapes.

The reference is the eager formulation (three 1x1 convolutions, max-pool, the [N, M] softmax,
the output convolution, the residual): ganfast.ops.self_attention.reference.self_attention2d_ref.
Every input receives a gradient: x, the four weights and gamma.

Shape set "issue" (batch b, default 8): BigGAN-128's attention at 64x64 with C = 192 (batch b)
and SAGAN's at 32x32 with C = 256 (batch 2b: the issue's 16).
"""
from __future__ import annotations

import torch

from ganfast.bench.spec import BenchCase, BenchSpec
from ganfast.ops.self_attention import self_attention2d, self_attention2d_ref

POOL = 2


def _issue(batch: int) -> list[BenchCase]:
    return [BenchCase("issue", "biggan-c192-res64", (batch, 192, 64, 64), dict(pool=POOL)),
            BenchCase("issue", "sagan-c256-res32", (2 * batch, 256, 32, 32), dict(pool=POOL))]


SHAPE_SETS = {"issue": _issue}
QUICK_LABELS = {"issue": ("biggan-c192-res64", "sagan-c256-res32")}


def _widths(case: BenchCase):
    b, c, h, w = case.shape
    p = case.params.get("pool", POOL)
    return b, c, c // 8, c // 2, h * w, (h // p) * (w // p)


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    b, c, cq, cv, _, _ = _widths(case)
    r = lambda *s: torch.randn(*s, generator=gen, device=device, dtype=dtype)
    x = r(*case.shape)                                            # [B, C, H, W]
    w_theta, w_phi = r(cq, c, 1, 1) * (2 / c ** 0.5), r(cq, c, 1, 1) * (2 / c ** 0.5)   # sigma ~ 1, as SN keeps them
    w_g, w_o = r(cv, c, 1, 1) / c ** 0.5, r(c, cv, 1, 1) / cv ** 0.5
    gamma = torch.full((), 0.5, device=device, dtype=dtype)
    return x, w_theta, w_phi, w_g, w_o, gamma


def reference(case: BenchCase):
    pool = case.params.get("pool", POOL)

    def self_attention_eager(x, wt, wp, wg, wo, gamma):
        return self_attention2d_ref(x, wt, wp, wg, wo, gamma, pool)
    return self_attention_eager


def ganfast_fn(case: BenchCase, backend: str):
    pool = case.params.get("pool", POOL)

    def self_attention_ganfast(x, wt, wp, wg, wo, gamma):
        return self_attention2d(x, wt, wp, wg, wo, gamma, pool=pool, backend=backend)
    return self_attention_ganfast


def backends_for(device: torch.device) -> tuple[str, ...]:
    return {"cpu": ("cpu",), "cuda": ("triton",)}.get(device.type, ())


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype):
    """Flash minimum: forward reads x twice (projection GEMM, residual), writes y, and writes then
    reads the projections (2Cq + Cv channels at N), the pooled keys/values and o once; never the
    [N, M] matrix. Backward moves about twice that (gradients of each, plus x and y's gradient)."""
    b, c, cq, cv, n, m = _widths(case)
    e = torch.empty((), dtype=dtype).element_size()
    fwd = e * b * (3 * c * n + 2 * (2 * cq + cv) * n + 2 * (cq + cv) * m + 2 * cv * n)
    return {"forward": fwd, "backward": 2 * fwd, "forward+backward": 3 * fwd, "double-backward": None}[mode]


def flops(case: BenchCase, mode: str):
    """Model FLOPs (2 per multiply-add): projections 2BNC(2Cq+Cv), scores 2BNMCq, values 2BNMCv,
    output 2BNCvC; backward counts 2x forward (a flash backward also recomputes the scores)."""
    b, c, cq, cv, n, m = _widths(case)
    fwd = 2 * b * (n * c * (2 * cq + cv) + n * m * (cq + cv) + n * cv * c)
    return {"forward": fwd, "backward": 2 * fwd, "forward+backward": 3 * fwd, "double-backward": None}[mode]


SPEC = BenchSpec(
    op="self_attention",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=backends_for,
    bytes_moved=bytes_moved,
    default_shape_set="issue",
    default_batch=8,
    bytes_model="flash minimum: x twice, y, projections, pooled k/v and o once each; bwd 2x fwd; never [N, M]",
    flops=flops,
)
