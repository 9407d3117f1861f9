"""Shared oracle checks of modulated_conv2d's fused paths (cpu, triton, cuda): the public op on a
backend against the float64 reference, for the output, every gradient and an R1-style double
backward, under the accuracy rule (ganfast.testing.accuracy)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ganfast.ops.modulated_conv2d import modulated_conv2d
from ganfast.ops.upfirdn2d import setup_filter
from ganfast.testing import assert_matches_oracle

F64 = torch.float64

# name -> layer configuration; one comment each.
CASES = {
    # StyleGAN2's synthesis layer: 3x3, demodulated, noise [N, 1, H, W] * strength, lrelu, clamp biting
    "layer": dict(n=2, cin=5, cout=7, h=8, w=8, k=3, up=1, down=1, padding=1, demodulate=True, noise="plane",
                  act="lrelu", clamp=0.6, flip_weight=True),
    # the up layer: up 2 through the [1, 3, 3, 1] filter, a true convolution (flip_weight=False)
    "up2": dict(n=2, cin=4, cout=6, h=5, w=4, k=3, up=2, down=1, padding=1, demodulate=True, noise="plane",
                act="lrelu", clamp=None, flip_weight=False),
    # a down layer (not in StyleGAN2's generator, but the op allows it): filter then every 2nd pixel
    "down2": dict(n=2, cin=3, cout=5, h=9, w=8, k=3, up=1, down=2, padding=1, demodulate=True, noise=None,
                  act="swish", clamp=None, flip_weight=True),
    # ToRGB: 1x1, no demodulation, no noise, linear, 3 output channels
    "torgb": dict(n=3, cin=6, cout=3, h=7, w=5, k=1, up=1, down=1, padding=0, demodulate=False, noise=None,
                  act="linear", clamp=None, flip_weight=True),
    # batch 1, a 4x4 map, odd channel counts, constant noise [1, 1, H, W], no bias, asymmetric padding
    "odd": dict(n=1, cin=7, cout=9, h=4, w=4, k=3, up=1, down=1, padding=[1, 1, 2, 0], demodulate=True,
                noise="const", act="tanh", clamp=None, flip_weight=True, bias=False),
}


def make_inputs(case: dict, seed: int = 0) -> dict:
    """float64 inputs for a case (x, weight, styles, bias, strength) and the fixed noise."""
    g = torch.Generator().manual_seed(seed)
    n, cin, cout, h, w, k = (case[key] for key in ("n", "cin", "cout", "h", "w", "k"))
    up, down = case["up"], case["down"]
    inp = {"x": torch.randn(n, cin, h, w, generator=g, dtype=F64),
           "weight": torch.randn(cout, cin, k, k, generator=g, dtype=F64) / math.sqrt(cin * k * k),
           "styles": 1 + 0.5 * torch.randn(n, cin, generator=g, dtype=F64)}
    if case.get("bias", True):
        inp["bias"] = 0.2 * torch.randn(cout, generator=g, dtype=F64)
    oh, ow = out_size(case)
    if case["noise"] is not None:
        inp["strength"] = torch.tensor(0.3, dtype=F64)
        shape = (n, 1, oh, ow) if case["noise"] == "plane" else (1, 1, oh, ow)
        inp["noise"] = torch.randn(shape, generator=g, dtype=F64)
    return inp


def out_size(case: dict) -> tuple[int, int]:
    """The output's (H', W'), from the reference on a zero input (the sizes' definition)."""
    x = torch.zeros(1, 1, case["h"], case["w"], dtype=F64)
    w = torch.zeros(1, 1, case["k"], case["k"], dtype=F64)
    y = modulated_conv2d(x, w, torch.ones(1, 1, dtype=F64), up=case["up"], down=case["down"], padding=case["padding"],
                         resample_filter=setup_filter([1, 3, 3, 1]).to(F64), demodulate=False, backend="reference")
    return y.shape[2], y.shape[3]


def _forward(inp: dict, case: dict, backend: str, fused_modconv: bool = False) -> torch.Tensor:
    f = setup_filter([1, 3, 3, 1], device=inp["x"].device)
    noise = inp["noise"] * inp["strength"] if "noise" in inp else None
    return modulated_conv2d(inp["x"], inp["weight"], inp["styles"], noise, up=case["up"], down=case["down"],
                            padding=case["padding"], resample_filter=f, demodulate=case["demodulate"],
                            flip_weight=case["flip_weight"], fused_modconv=fused_modconv, bias=inp.get("bias"),
                            act=case["act"], gain=math.sqrt(2), clamp=case["clamp"], backend=backend)


GRAD_KEYS = ("x", "weight", "styles", "bias", "strength")


def run_all(inp: dict, case: dict, backend: str, g: torch.Tensor, double: bool) -> dict:
    """out, the gradient of <out, g> w.r.t. every input, and (double) the gradient of the squared
    norm of dx (R1's penalty) w.r.t. weight and styles."""
    leaves = {k: v.detach().clone().requires_grad_(k in GRAD_KEYS) for k, v in inp.items()}
    out = _forward(leaves, case, backend)
    keys = [k for k in GRAD_KEYS if k in leaves]
    grads = torch.autograd.grad((out * g.to(out.dtype)).sum(), [leaves[k] for k in keys], create_graph=double)
    res = {"out": out.detach()}
    res.update({f"d{k}": v.detach() for k, v in zip(keys, grads)})
    if double:
        r1 = grads[0].float().square().sum() if grads[0].dtype != F64 else grads[0].square().sum()
        second = torch.autograd.grad(r1, [leaves["weight"], leaves["styles"]])
        res.update({"r1_dweight": second[0], "r1_dstyles": second[1]})
    return res


HALF = (torch.float16, torch.bfloat16)


def check_backend_against_oracle(backend: str, case_name: str, dtype: torch.dtype, device: str = "cpu",
                                 double: bool = True, seed: int = 0) -> dict:
    """Every output of `backend` in `dtype` against the float64 reference, under the accuracy rule.

    Inputs are rounded to `dtype` first, so oracle and fast path see the same values. In fp16 /
    bf16 a clamp is checked on the output only, and the gradients without it: a pre-clamp value
    within rounding of the clamp takes a different side of the mask in the fast path and in the
    oracle, and one such pixel moves dstyles by O(1). fp32 / fp64 check the clamp's gradient."""
    case = CASES[case_name]
    if dtype in HALF and case["clamp"] is not None:
        _check(backend, case_name, dict(case), dtype, device, double, seed, keys=("out",))
        return _check(backend, case_name, dict(case, clamp=None), dtype, device, double, seed, keys=None)
    return _check(backend, case_name, case, dtype, device, double, seed, keys=None)


def _check(backend, case_name, case, dtype, device, double, seed, keys):
    inp = {k: v.to(dtype).to(F64) for k, v in make_inputs(case, seed).items()}
    oh, ow = out_size(case)
    g = torch.randn(case["n"], case["cout"], oh, ow, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    oracle = run_all(inp, case, "reference", g, double)
    same = run_all({k: v.to(dtype) for k, v in inp.items()}, case, "reference", g, double) if dtype != F64 else None
    got = run_all({k: v.to(dtype).to(device) for k, v in inp.items()}, case, backend, g.to(device), double)
    assert set(got) == set(oracle), (sorted(got), sorted(oracle))
    for k in keys or oracle:
        assert_matches_oracle(got[k].cpu(), oracle[k], same[k] if same else None, dtype=dtype,
                              name=f"{k} [{backend} {case_name}]")
    return got
