"""Shared cases for the adain_noise tests of every backend: inputs, the oracle, the comparison."""
from __future__ import annotations

import torch

from ganfast.ops import adain_noise
from ganfast.testing import assert_matches_oracle

# (name, shape [N, C, H, W], layout) -- each a case that bites reductions over H*W.
SHAPES = [
    ("4x4_odd_c", (2, 5, 4, 4), "contiguous"),            # StyleGAN's first block, odd C
    ("1x1", (3, 4, 1, 1), "contiguous"),                  # one pixel: variance 0, out = t
    ("batch1_odd_hw", (1, 3, 7, 9), "contiguous"),        # batch 1, a plane that divides no block
    ("channels_last", (2, 6, 5, 3), "channels_last"),     # reduction over a strided plane
    ("channels_last_c70", (2, 70, 4, 4), "channels_last"),  # more channels than one CPU block (64)
    ("permuted", (2, 3, 6, 5), "permuted"),               # neither layout: copied to contiguous
    ("many_channels", (2, 67, 4, 4), "contiguous"),       # many small planes per work item
    ("big_plane", (1, 2, 150, 130), "contiguous"),        # planes longer than the sub-block sums
]

NOISE_KINDS = ["tensor", "shared_plane", "seed", "none"]
TOLERANT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTS = ["lrelu", "linear", "tanh", "swish"]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if layout == "permuted":  # H and W swapped in memory: dense but neither NCHW nor NHWC
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x


def make_inputs(shape, layout="contiguous", noise_kind="tensor", with_bias=True, with_strength=True, seed=0):
    """Float64 inputs: dict of x, style_scale, style_bias, noise, noise_strength, bias, seed."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    inp = dict(x=_layout(r(*shape) * 2, layout), style_scale=r(n, c) + 1.0, style_bias=r(n, c),
               noise=None, noise_strength=r(c) if with_strength else None,
               bias=r(c) * 0.5 if with_bias else None, seed=None)
    if noise_kind == "tensor":
        inp["noise"] = r(n, 1, h, w)
    elif noise_kind == "shared_plane":
        inp["noise"] = r(1, 1, h, w)
    elif noise_kind == "seed":
        inp["seed"] = 1234 + seed
    return inp


DIFFERENTIABLE = ("x", "style_scale", "style_bias", "noise", "noise_strength", "bias")


def cast(inp: dict, dtype: torch.dtype, device="cpu") -> dict:
    """inp with x and noise in dtype (the parameters stay float32, as a layer keeps them)."""
    out = dict(inp)
    for k in DIFFERENTIABLE:
        v = inp[k]
        if v is None:
            continue
        dt = dtype if k in ("x", "noise") or dtype == torch.float64 else torch.float32
        out[k] = v.to(device=device, dtype=dt).detach().requires_grad_()
    return out


def rounded(inp: dict, dtype: torch.dtype) -> dict:
    """The float64 inputs the oracle sees: x and noise rounded to dtype first."""
    out = dict(inp)
    for k in ("x", "noise"):
        if inp[k] is not None:
            out[k] = inp[k].to(dtype).to(torch.float64)
    return out


def run_all(inp: dict, backend: str, act: str, g: torch.Tensor, r: dict, double: bool = True, **kw) -> dict:
    """Forward, first gradients (cotangent g) and a path-length-style double backward.

    The double backward differentiates sum(dL/dx * r_x) + sum(dL/ds * r_s) with respect to every
    differentiable input (r: fixed random tensors): what R1 / path-length regularization take.
    """
    tensors = {k: inp[k] for k in DIFFERENTIABLE if inp[k] is not None}
    if inp["noise"] is None and inp["seed"] is None:
        tensors.pop("noise_strength", None)  # ignored without noise: no gradient
    out = adain_noise(inp["x"], inp["style_scale"], inp["style_bias"], noise=inp["noise"],
                      noise_strength=inp["noise_strength"], bias=inp["bias"], act=act,
                      seed=inp["seed"], backend=backend, **kw)
    res = {"out": out}
    names = list(tensors)
    grads = torch.autograd.grad(out, [tensors[k] for k in names], g.to(out.dtype), create_graph=double)
    res.update({f"d_{k}": v for k, v in zip(names, grads)})
    if double:
        gd = dict(zip(names, grads))
        loss = (gd["x"].double() * r["x"]).sum() + (gd["style_scale"].double() * r["style_scale"]).sum()
        gg = torch.autograd.grad(loss, [tensors[k] for k in names], allow_unused=True)
        res.update({f"dd_{k}": v for k, v in zip(names, gg) if v is not None})
    return res


def check_backend_against_oracle(backend: str, shape, layout, dtype, act="lrelu", noise_kind="tensor",
                                 with_bias=True, with_strength=True, double=True, device="cpu", seed=0, **kw):
    """Every output of `backend` in `dtype` against the float64 reference, under the accuracy rule."""
    inp = make_inputs(shape, layout, noise_kind, with_bias, with_strength, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    r = {"x": torch.randn(shape, generator=gen, dtype=torch.float64),
         "style_scale": torch.randn(shape[:2], generator=gen, dtype=torch.float64)}
    oracle = run_all(cast(rounded(inp, dtype), torch.float64), "reference", act, g, r, double, **kw)
    same = run_all(cast(inp, dtype), "reference", act, g, r, double, **kw) if dtype != torch.float64 else None
    rd = {k: v.to(device) for k, v in r.items()}
    got = run_all(cast(inp, dtype, device), backend, act, g.to(device), rd, double, **kw)
    assert set(got) == set(oracle), (sorted(got), sorted(oracle))
    for k in oracle:
        assert_matches_oracle(got[k].cpu(), oracle[k], same[k] if same else None, dtype=dtype,
                              name=f"{k} [{backend} {act} {noise_kind} {layout} {tuple(shape)}]")
    if layout == "channels_last" and shape[2] * shape[3] > 1:
        assert got["out"].is_contiguous(memory_format=torch.channels_last)
    return got
