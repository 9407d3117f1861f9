"""Spectral-norm benchmark specs: a spectrally normalized convolution step, and the power iteration alone.

`spectral_norm` (SNConv2d): a training step of a 3x3 convolution whose weight is spectrally
normalized with one power iteration, at BigGAN-128 shapes. The reference is what
torch.nn.utils.parametrizations.spectral_norm computes (u = normalize(W v), v = normalize(W^T u)
under no_grad, sigma = u . W v, then conv2d(x, W / sigma, b)); ganfast runs
ganfast.nn.SNConv2d's forward (one fused pass over W for the power iteration and sigma, the
convolution on the raw W, 1 / sigma and the bias folded into one pass over the output).
Inputs receiving gradients: x, weight, bias; u and v are state inside each function.

`power_iteration`: the power iteration alone (no gradient; time it in the forward mode), W as
[out, in * k * k]: torch's formulation (two matrix-vector products, a third for sigma) against
ganfast.ops.power_iteration (u-first order, one pass over W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ganfast.bench.spec import BenchCase, BenchSpec, fused_backends
from ganfast.nn.spectral_norm import _scale_bias
from ganfast.ops.spectral_norm import power_iteration, spectral_sigma
from ganfast.ops.spectral_norm.reference import acc_dtype

EPS = 1e-12


def _state(shape: tuple, device, dtype=torch.float32):
    """Fixed, normalized u [O] and v [K] for a W of `shape` (made per function instance)."""
    gen = torch.Generator(device=device).manual_seed(3)
    o, k = shape[0], int(torch.tensor(shape[1:]).prod())
    u = F.normalize(torch.randn(o, generator=gen, device=device, dtype=dtype), dim=0, eps=EPS)
    v = F.normalize(torch.randn(k, generator=gen, device=device, dtype=dtype), dim=0, eps=EPS)
    return u, v


def _torch_sigma(w_mat: torch.Tensor, state: dict) -> torch.Tensor:
    """torch's spectral_norm parametrization: one power iteration under no_grad, then sigma."""
    with torch.no_grad():
        u = F.normalize(torch.mv(w_mat, state["v"]), dim=0, eps=EPS)
        v = F.normalize(torch.mv(w_mat.t(), u), dim=0, eps=EPS)
        state["u"].copy_(u)
        state["v"].copy_(v)
    return torch.vdot(state["u"].clone(), torch.mv(w_mat, state["v"].clone()))


# ---- SNConv2d step ----

def _snconv_cases(name: str, layers):
    def cases(batch: int) -> list[BenchCase]:
        return [BenchCase(name, f"c{cin}to{cout}-res{r}", (batch, cin, r, r), dict(cout=cout, kernel=3))
                for cin, cout, r in layers]
    return cases


# BigGAN-128 (ch = 96): G's 16ch block conv at 8x8 (1536 -> 1536) and the 4ch -> 2ch conv at 64x64.
SNCONV_SETS = {"biggan-128": _snconv_cases("biggan-128", [(1536, 1536, 8), (384, 192, 64)])}
SNCONV_QUICK = {"biggan-128": ("c1536to1536-res8",)}


def snconv_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    n, cin, h, w = case.shape
    cout, k = case.params["cout"], case.params["kernel"]
    x = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)                   # [N, Cin, H, W]
    weight = torch.randn(cout, cin, k, k, generator=gen, device=device, dtype=dtype) * 0.02  # [Cout, Cin, k, k]
    bias = torch.zeros(cout, device=device, dtype=dtype)                                     # [Cout]
    return x, weight, bias


def snconv_reference(case: BenchCase):
    state: dict = {}

    def snconv2d_torch_parametrization(x, weight, bias):
        if not state:
            # torch's parametrization keeps u and v in W's dtype (bf16 W: bf16 u, v).
            state["u"], state["v"] = _state(tuple(weight.shape), weight.device, weight.dtype)
        sigma = _torch_sigma(weight.flatten(1), state)
        return F.conv2d(x, weight / sigma, bias, padding=case.params["kernel"] // 2)
    return snconv2d_torch_parametrization


def snconv_ganfast(case: BenchCase, backend: str):
    state: dict = {}

    def snconv2d_ganfast(x, weight, bias):
        if not state:
            state["u"], state["v"] = _state(tuple(weight.shape), weight.device, acc_dtype(weight))
        w_mat = weight.flatten(1)
        sigma = power_iteration(w_mat.detach(), state["u"], state["v"], 1, EPS, u_first=True, backend=backend)
        sigma = spectral_sigma(w_mat, state["u"].clone(), state["v"].clone(), sigma)
        y = F.conv2d(x, weight, None, padding=case.params["kernel"] // 2)
        return _scale_bias(y, 1.0 / sigma, bias, 1)
    return snconv2d_ganfast


def snconv_bytes(case: BenchCase, mode: str, dtype: torch.dtype):
    """Minimum traffic: fwd reads x and W (twice: power iteration, convolution) and writes y; bwd
    reads dy, x and W, writes dx and dW."""
    n, cin, h, w = case.shape
    cout, k = case.params["cout"], case.params["kernel"]
    e = torch.empty((), dtype=dtype).element_size()
    xs, ys, ws = n * cin * h * w, n * cout * h * w, cout * cin * k * k
    forward = (xs + ys + 2 * ws) * e
    backward = (ys + xs + ws + xs + ws) * e
    return {"forward": forward, "backward": backward, "forward+backward": forward + backward,
            "double-backward": None}[mode]


SPEC = BenchSpec(
    op="spectral_norm",
    shape_sets=SNCONV_SETS,
    quick_labels=SNCONV_QUICK,
    make_inputs=snconv_inputs,
    reference=snconv_reference,
    ganfast=snconv_ganfast,
    backends=fused_backends,
    bytes_moved=snconv_bytes,
    default_shape_set="biggan-128",
    default_batch=16,
    bytes_model="fwd: x, W for the power iteration, W for the conv, y; bwd: dy, x, W, dx, dW",
)


# ---- the power iteration alone ----

def _pi_cases(name: str, mats):
    def cases(batch: int) -> list[BenchCase]:
        return [BenchCase(name, label, (o, k), {}) for label, o, k in mats]
    return cases


PI_SETS = {"biggan-128": _pi_cases("biggan-128", [("c1536-3x3", 1536, 1536 * 9), ("c384to192-3x3", 192, 384 * 9),
                                                  ("c768-1x1", 768, 768), ("embed1000x128", 1000, 128)])}
PI_QUICK = {"biggan-128": ("c1536-3x3",)}


def pi_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    return (torch.randn(case.shape, generator=gen, device=device, dtype=dtype),)   # W [O, K]


def pi_reference(case: BenchCase):
    state: dict = {}

    def power_iteration_torch(w_mat):
        if not state:
            state["u"], state["v"] = _state(tuple(w_mat.shape), w_mat.device, w_mat.dtype)  # as torch's
        return _torch_sigma(w_mat, state)
    return power_iteration_torch


def pi_ganfast(case: BenchCase, backend: str):
    state: dict = {}

    def power_iteration_ganfast(w_mat):
        if not state:
            state["u"], state["v"] = _state(tuple(w_mat.shape), w_mat.device, acc_dtype(w_mat))
        return power_iteration(w_mat, state["u"], state["v"], 1, EPS, u_first=True, backend=backend)
    return power_iteration_ganfast


def pi_bytes(case: BenchCase, mode: str, dtype: torch.dtype):
    """The bytes of W one iteration must read (once); vectors are negligible."""
    o, k = case.shape
    return o * k * torch.empty((), dtype=dtype).element_size() if mode == "forward" else None


POWER_ITERATION_SPEC = BenchSpec(
    op="power_iteration",
    shape_sets=PI_SETS,
    quick_labels=PI_QUICK,
    make_inputs=pi_inputs,
    reference=pi_reference,
    ganfast=pi_ganfast,
    backends=fused_backends,
    bytes_moved=pi_bytes,
    default_shape_set="biggan-128",
    default_batch=1,
    bytes_model="W read once per iteration (the fused pass); torch's formulation reads it three times",
)
