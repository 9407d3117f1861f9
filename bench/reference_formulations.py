"""Reference formulations: each op's plain-PyTorch reference against the other ways to write the
same computation in plain PyTorch, at the layer sizes of the models.

The reference (ganfast/ops/<op>/reference.py) is the specification and the baseline every
"x faster than eager" is measured against (issue 28), so it has to be the fastest plain-PyTorch
formulation that computes the same thing. This script is the evidence: for each op in REGISTRY,
each case (a real layer: BigGAN-32, SAGAN-32, SNGAN, StyleGAN2-32, StyleGAN at 32-64 px, batch 32)
and each pass, it times every formulation side by side, the one the reference runs marked
"chosen": true. Formulations:
  ganfast-reference     the reference as it is now (ganfast.ops.<op>.reference), the chosen one
  ganfast-reference-v0  the reference before issue 28's rewrite (tests/ops/reference_v0.py, which
                        the tests pin equal to the new one), where it was rewritten
  the others            what a PyTorch user writes (NVIDIA's, BigGAN's, StyleGAN's, torch's own
                        formulations; bench/overhead.py's eager composites) and the runners-up
Before any timing, every formulation is checked against the chosen one in float64 (output and
the gradients of every floating input) on the op's check case: a formulation that computes
something else raises, and no row is written.

Passes: forward (no autograd graph) and forward+backward (the gradients of every floating input),
as ganfast.bench.harness.make_step runs them. Method: float32 on the CPU, torch.set_num_threads
(--threads, default 2), --warmup untimed rounds, then --repeats rounds; a round runs each
formulation once, in turn (each round starting one formulation later), so a load spike on this
shared machine and the cost of going first hit them alike. Rows (JSONL)
are appended to bench/results/reference_formulations.jsonl: median, min, p20, p80 (seconds),
ratio_vs_chosen (this median / the chosen median: > 1 is slower), machine, versions, git SHA.

    python bench/reference_formulations.py                       # every op, every case
    python bench/reference_formulations.py --quick --ops bias_act
    python bench/reference_formulations.py --list

Adding an op: a REGISTRY entry, OpFormulations(cases, quick, make_inputs, formulations, chosen,
check_case): formulations is a list of (name, builder), builder(case) -> fn(*inputs) -> tensor.
"""

import argparse
import dataclasses
import datetime
import importlib.util
import math
import os
import statistics
import sys
import time
import uuid
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from ganfast.bench.environment import environment, load_average  # noqa: E402
from ganfast.bench.harness import make_step  # noqa: E402
from ganfast.bench.results import append_rows  # noqa: E402
from ganfast.ops.adain_noise.reference import adain_noise_ref  # noqa: E402
from ganfast.ops.bias_act.reference import activation, bias_act_ref, bias_shape  # noqa: E402
from ganfast.ops.conditional_batch_norm.reference import conditional_batch_norm_ref  # noqa: E402
from ganfast.ops.modulated_conv2d.reference import modulated_conv2d_ref, prefer_grouped  # noqa: E402
from ganfast.ops.self_attention.reference import self_attention2d_ref  # noqa: E402
from ganfast.ops.spectral_norm import reference as sn_reference  # noqa: E402
from ganfast.ops.upfirdn2d.reference import setup_filter, upfirdn2d_ref  # noqa: E402

DEFAULT_OUT = os.path.join(_ROOT, "bench", "results", "reference_formulations.jsonl")
PASSES = ("forward", "forward+backward")
REFERENCE, REFERENCE_V0 = "ganfast-reference", "ganfast-reference-v0"
SQRT2 = math.sqrt(2)


def _load(path: str, name: str):
    """A module from a file of this checkout (the bench scripts and tests/ are not installed)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_v0 = _load("tests/ops/reference_v0.py", "reference_v0")
_composites = _load("bench/overhead.py", "bench_overhead")   # the eager composites a user writes


@dataclasses.dataclass(frozen=True)
class Case:
    label: str                        # the layer, e.g. "stylegan2-32 synthesis 32x32"
    shape: tuple                      # x's shape [N, C, H, W] (W's [O, K] for the power iteration)
    params: dict = dataclasses.field(default_factory=dict)   # the op's arguments, recorded in rows


Builder = Callable[[Case], Callable[..., torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class OpFormulations:
    cases: tuple                      # Case, ...
    quick: tuple                      # labels --quick runs
    make_inputs: Callable[[Case, torch.dtype, torch.Generator], tuple]   # positional inputs of every formulation
    formulations: tuple               # (name, builder), ...; builder(case) -> fn(*inputs) -> tensor
    chosen: str                       # the formulation the reference runs
    check_case: Case                  # the float64 equality check's case (small)
    passes: tuple = PASSES


def _randn(gen, *shape, dtype, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).mul_(scale).add_(shift).to(dtype)


# ---- bias_act: a conv's bias + activation (StyleGAN2's lrelu, gain sqrt 2, conv_clamp 256) ----

def _bias_act_inputs(case, dtype, gen):
    return _randn(gen, *case.shape, dtype=dtype), _randn(gen, case.shape[1], dtype=dtype, scale=0.5)


def _bias_act_args(case):
    p = case.params
    return 1, p["act"], p["alpha"], p["gain"], -1.0 if p["clamp"] is None else p["clamp"]


def _bias_act_reference(case):
    args = _bias_act_args(case)
    return lambda x, b: bias_act_ref(x, b, *args)


def _bias_act_v0(case):
    args = _bias_act_args(case)
    return lambda x, b: _v0.bias_act_ref_v0(x, b, *args)


def _bias_act_gain_in_add(case):
    # the gain folded into the bias add (gain b + gain x in one pass): one pass fewer than the
    # reference, but x == -b no longer gives z == 0 exactly (an FMA leaves the rounding of gain b),
    # so the activation's kink moves; not chosen
    dim, act, alpha, gain, clamp = _bias_act_args(case)

    def bias_act_gain_in_add(x, b):
        z = torch.add((b * gain).reshape(bias_shape(x, dim)), x, alpha=gain)
        y = activation(z, act, alpha, inplace=True)
        return y.clamp(-clamp, clamp) if clamp >= 0 else y
    return bias_act_gain_in_add


def _bias_act_gain_after(case):
    # NVIDIA's order bit for bit (act, then * gain), the gain in place on the activation's output
    # (lrelu's backward reads its input): one temporary more than the reference when it clamps
    dim, act, alpha, gain, clamp = _bias_act_args(case)

    def bias_act_gain_after(x, b):
        y = activation(x + b.reshape(bias_shape(x, dim)), act, alpha).mul_(gain)
        return y.clamp(-clamp, clamp) if clamp >= 0 else y
    return bias_act_gain_after


_STYLEGAN2 = {"act": "lrelu", "alpha": 0.2, "gain": SQRT2, "clamp": 256.0}
_FMNIST = {"act": "lrelu", "alpha": 0.2, "gain": SQRT2, "clamp": None}

BIAS_ACT = OpFormulations(
    cases=tuple([Case(f"stylegan2-32 conv {r}x{r}", (32, 512, r, r), _STYLEGAN2) for r in (32, 16, 8, 4)]
                + [Case("stylegan2-32-fmnist conv 32x32", (32, 64, 32, 32), _FMNIST),
                   Case("stylegan2-32 mapping fc", (32, 512), _FMNIST)]),
    quick=("stylegan2-32 conv 8x8", "stylegan2-32-fmnist conv 32x32"),
    make_inputs=_bias_act_inputs,
    formulations=((REFERENCE, _bias_act_reference), (REFERENCE_V0, _bias_act_v0),
                  ("gain-in-add", _bias_act_gain_in_add), ("gain-after-act-in-place", _bias_act_gain_after)),
    chosen=REFERENCE,
    check_case=Case("check", (2, 7, 5, 3), _STYLEGAN2 | {"clamp": 1.5}),
)


# ---- adain_noise: StyleGAN (v1)'s layer epilogue: noise, bias, lrelu, instance norm, style ----

def _adain_inputs(case, dtype, gen):
    n, c, h, w = case.shape
    return (_randn(gen, n, c, h, w, dtype=dtype), _randn(gen, n, c, dtype=dtype, scale=0.2, shift=1.0),
            _randn(gen, n, c, dtype=dtype), _randn(gen, c, dtype=dtype, scale=0.1), _randn(gen, c, dtype=dtype, scale=0.1),
            _randn(gen, n, 1, h, w, dtype=dtype))


def _adain_reference(case):
    return lambda x, s, t, ns, b, noise: adain_noise_ref(x, s, t, noise, ns, b, "lrelu", 0.2, 1.0, 1e-8)


def _adain_v0(case):
    return lambda x, s, t, ns, b, noise: _v0.adain_noise_ref_v0(x, s, t, noise, ns, b, "lrelu", 0.2, 1.0, 1e-8)


def _adain_instance_norm(case):
    # StyleGAN's epilogue written with F.instance_norm (bench/overhead.py's composite)
    return lambda x, s, t, ns, b, noise: _composites.adain_composite(x, noise, ns, b, s, t)


def _adain_batch_norm(case):
    # AdaIN as MUNIT writes it: F.batch_norm over [1, N*C, H, W] with the styles as its affine.
    # The fastest, but it computes y * k + (t - mean * k): a constant plane (rstd = 1/sqrt(eps) =
    # 1e4) comes out ~1e4 ulps off style_bias instead of exactly on it; not chosen
    def adain_batch_norm(x, s, t, ns, b, noise):
        n, c, h, w = x.shape
        y = F.leaky_relu(torch.addcmul(x, noise, ns.view(1, c, 1, 1)).add_(b.view(1, c, 1, 1)), 0.2, inplace=True)
        out = F.batch_norm(y.reshape(1, n * c, h, w), None, None, s.reshape(-1), t.reshape(-1), True, 0.0, 1e-8)
        return out.view(n, c, h, w)
    return adain_batch_norm


ADAIN_NOISE = OpFormulations(
    cases=tuple([Case(f"stylegan-32 synthesis {r}x{r}", (32, 512, r, r)) for r in (32, 16, 8, 4)]
                + [Case("stylegan-256 synthesis 64x64", (8, 256, 64, 64))]),
    quick=("stylegan-32 synthesis 8x8", "stylegan-32 synthesis 16x16"),
    make_inputs=_adain_inputs,
    formulations=((REFERENCE, _adain_reference), (REFERENCE_V0, _adain_v0), ("stylegan-instance-norm", _adain_instance_norm),
                  ("munit-batch-norm", _adain_batch_norm)),
    chosen=REFERENCE,
    check_case=Case("check", (2, 5, 7, 3)),
)


# ---- conditional_batch_norm: BigGAN's ccbn + ReLU, training (running statistics updated) ----

def _cbn_inputs(case, dtype, gen):
    n, c = case.shape[:2]
    return (_randn(gen, *case.shape, dtype=dtype, scale=2.0, shift=0.5), _randn(gen, n, c, dtype=dtype, scale=0.3, shift=1.0),
            _randn(gen, n, c, dtype=dtype, scale=0.3))


def _cbn_with_stats(fn):
    def builder(case):
        stats = {}

        def ccbn(x, gain, bias):
            if not stats:   # the layer's running statistics, in x's dtype as the module keeps them
                stats["m"], stats["v"] = x.new_zeros(x.shape[1]), x.new_ones(x.shape[1])
            return fn(x, gain, bias, stats["m"], stats["v"])
        return ccbn
    return builder


CONDITIONAL_BATCH_NORM = OpFormulations(
    cases=tuple([Case(f"biggan-32 G block {r}x{r}", (32, 256, r, r), {"act": "relu"}) for r in (32, 16, 8, 4)]
                + [Case("biggan-128 G block 64x64", (32, 192, 64, 64), {"act": "relu"})]),
    quick=("biggan-32 G block 8x8", "biggan-32 G block 16x16"),
    make_inputs=_cbn_inputs,
    formulations=(
        (REFERENCE, _cbn_with_stats(lambda x, g, b, rm, rv: conditional_batch_norm_ref(x, g, b, rm, rv, True, 0.1, 1e-5, "relu"))),
        (REFERENCE_V0, _cbn_with_stats(lambda x, g, b, rm, rv: _v0.conditional_batch_norm_ref_v0(x, g, b, rm, rv, True, 0.1, 1e-5, "relu"))),
        ("biggan-ccbn", _cbn_with_stats(lambda x, g, b, rm, rv: _composites.cbn_composite(x, g, b, rm, rv, True))),
    ),
    chosen=REFERENCE,
    check_case=Case("check", (3, 5, 4, 3), {"act": "relu"}),
)


# ---- spectral_norm: one power iteration (u first, as torch's spectral_norm), no gradient ----

def _pi_inputs(case, dtype, gen):
    o, k = case.shape
    return (_randn(gen, o, k, dtype=dtype), F.normalize(_randn(gen, o, dtype=dtype), dim=0),
            F.normalize(_randn(gen, k, dtype=dtype), dim=0))


def _pi_reference(case):
    # what backend='reference' runs: the iteration of every backend on the reference's passes
    return lambda w, u, v: sn_reference.power_iteration_step(sn_reference, w, u.view(1, -1), v.view(1, -1), 1,
                                                              1e-12, True)[0][0]


def _pi_torch(case):
    # torch.nn.utils.parametrizations.spectral_norm's _power_method and sigma (bench/overhead.py's);
    # it updates u and v in place: each call gets copies
    return lambda w, u, v: _composites.power_iteration_composite(w, u.clone(), v.clone())


def _pi_definition(case):
    # power_iteration_ref: the definition step by step (Gram-Schmidt rows, sigma = u^T W v again)
    return lambda w, u, v: sn_reference.power_iteration_ref(w, u.view(1, -1), v.view(1, -1), 1, 1e-12, True)[0][0]


SPECTRAL_NORM = OpFormulations(
    cases=(Case("biggan-32 3x3 conv 256->256", (256, 2304)), Case("sngan-32 3x3 conv 128->128", (128, 1152)),
           Case("biggan-32 1x1 conv / linear 256", (256, 256)), Case("biggan-32 G linear z->4x4x256", (4096, 32)),
           Case("biggan-32 class embedding 10x256", (10, 256)), Case("biggan-128 3x3 conv 1536", (1536, 13824))),
    quick=("biggan-32 3x3 conv 256->256", "biggan-32 1x1 conv / linear 256"),
    make_inputs=_pi_inputs,
    formulations=((REFERENCE, _pi_reference), ("torch-spectral-norm", _pi_torch), ("definition", _pi_definition)),
    chosen=REFERENCE,
    check_case=Case("check", (7, 30)),
    passes=("forward",),
)


# ---- self_attention: SAGAN / BigGAN's attention block (keys and values max-pooled by 2) ----

def _sa_inputs(case, dtype, gen):
    b, c, h, w = case.shape
    cq, cv = c // 8, c // 2
    return (_randn(gen, b, c, h, w, dtype=dtype), _randn(gen, cq, c, 1, 1, dtype=dtype, scale=2 / c ** 0.5),
            _randn(gen, cq, c, 1, 1, dtype=dtype, scale=2 / c ** 0.5), _randn(gen, cv, c, 1, 1, dtype=dtype, scale=c ** -0.5),
            _randn(gen, c, cv, 1, 1, dtype=dtype, scale=cv ** -0.5), torch.full((), 0.5, dtype=dtype))


def _sa_biggan_gamma_folded(case):
    # BigGAN's Attention.forward (bmm with the values first: o comes out [B, Cv, N], no transpose),
    # gamma folded into w_o as the reference folds it
    def attention_biggan_gamma_folded(x, w_theta, w_phi, w_g, w_o, gamma):
        n, c, h, w = x.shape
        theta = F.conv2d(x, w_theta).flatten(2)
        phi = F.max_pool2d(F.conv2d(x, w_phi), 2).flatten(2)
        g = F.max_pool2d(F.conv2d(x, w_g), 2).flatten(2)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        return x + F.conv2d(torch.bmm(g, beta.transpose(1, 2)).view(n, -1, h, w), w_o * gamma)
    return attention_biggan_gamma_folded


SELF_ATTENTION = OpFormulations(
    cases=(Case("biggan-32 attention 16x16", (32, 256, 16, 16)), Case("sagan-32 D attention 16x16", (32, 128, 16, 16)),
           Case("biggan-128 attention 64x64", (8, 192, 64, 64))),
    quick=("sagan-32 D attention 16x16",),
    make_inputs=_sa_inputs,
    formulations=((REFERENCE, lambda case: lambda *a: self_attention2d_ref(*a, pool=2)),
                  (REFERENCE_V0, lambda case: lambda *a: _v0.self_attention2d_ref_v0(*a, pool=2)),
                  ("biggan-attention", lambda case: _composites.attention_composite),
                  ("biggan-attention-gamma-folded", _sa_biggan_gamma_folded)),
    chosen=REFERENCE,
    check_case=Case("check", (2, 32, 6, 6)),
)


# ---- upfirdn2d: StyleGAN2's resampling with the [1, 3, 3, 1] filter (separable, as setup_filter) ----

def _up_inputs(case, dtype, gen):
    return (_randn(gen, *case.shape, dtype=dtype),)


def _up_args(case):
    p = case.params
    return (p["up"], p["up"]), (p["down"], p["down"]), tuple(p["pad"]), p["gain"]


def _up_filter(dtype):
    return setup_filter([1, 3, 3, 1], separable=True).to(dtype)


def _up_reference(case):
    up, down, pad, gain = _up_args(case)
    return lambda x: upfirdn2d_ref(x, _up_filter(x.dtype), up, down, pad, False, gain)


def _up_v0(case):
    up, down, pad, gain = _up_args(case)
    return lambda x: _v0.upfirdn2d_v0(x, _up_filter(x.dtype), up, down, pad, False, gain)


def _up_zero_insert_depthwise(case):
    # NVIDIA's formulation: insert zeros, pad, one depthwise (groups = C) convolution with the
    # 2-D outer-product filter, keep every down-th pixel
    (upx, upy), (downx, downy), (px0, px1, py0, py1), gain = _up_args(case)

    def zero_insert_depthwise(x):
        n, c, h, w = x.shape
        f2 = setup_filter([1, 3, 3, 1], separable=False).to(x.dtype) * gain      # 2-D [4, 4], symmetric: no flip needed
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, upx - 1, 0, 0, 0, upy - 1]).reshape(n, c, h * upy, w * upx)
        x = F.pad(x, [px0, px1, py0, py1])
        return F.conv2d(x, f2[None, None].repeat(c, 1, 1, 1), groups=c)[:, :, ::downy, ::downx]
    return zero_insert_depthwise


def _up_case(label, shape, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    return Case(label, shape, {"up": up, "down": down, "pad": list(pad), "gain": gain})


UPFIRDN2D = OpFormulations(
    cases=(_up_case("stylegan2-32-fmnist G skip up2 16->32", (32, 1, 16, 16), up=2, pad=(2, 1, 2, 1), gain=4.0),
           _up_case("stylegan2-32-fmnist G blur after up conv 33x33", (32, 64, 33, 33), pad=(1, 1, 1, 1), gain=4.0),
           _up_case("stylegan2-32-fmnist D blur before down conv 32x32", (32, 64, 32, 32), pad=(2, 2, 2, 2)),
           _up_case("stylegan2-32-fmnist D skip down2 32->16", (32, 64, 32, 32), down=2, pad=(1, 1, 1, 1)),
           _up_case("stylegan2-256 G up2 64->128", (4, 256, 64, 64), up=2, pad=(2, 1, 2, 1), gain=4.0),
           _up_case("stylegan2-256 D down2 64->32", (4, 256, 64, 64), down=2, pad=(1, 1, 1, 1))),
    quick=("stylegan2-32-fmnist D blur before down conv 32x32", "stylegan2-32-fmnist D skip down2 32->16"),
    make_inputs=_up_inputs,
    formulations=((REFERENCE, _up_reference), (REFERENCE_V0, _up_v0),
                  ("zero-insert+depthwise (NVIDIA-style)", _up_zero_insert_depthwise)),
    chosen=REFERENCE,
    check_case=_up_case("check", (2, 3, 7, 5), up=2, pad=(2, 1, 2, 1), gain=4.0),
)


# ---- modulated_conv2d: a StyleGAN2 layer (modulate, 3x3 conv, demodulate, noise, bias, lrelu) ----

def _mc_inputs(case, dtype, gen):
    n, cin, h, w = case.shape
    cout, k = case.params["cout"], case.params["k"]
    return (_randn(gen, n, cin, h, w, dtype=dtype), _randn(gen, cout, cin, k, k, dtype=dtype),
            _randn(gen, n, cin, dtype=dtype, scale=0.2, shift=1.0), _randn(gen, cout, dtype=dtype, scale=0.1),
            _randn(gen, n, 1, h, w, dtype=dtype))


def _mc_builder(fused):
    def builder(case):
        p = case.params

        def modconv(x, weight, styles, bias, noise):
            return modulated_conv2d_ref(x, weight, styles, noise, padding=p["k"] // 2, demodulate=p["demodulate"],
                                        fused_modconv=fused, bias=bias, act=p["act"], alpha=0.2,
                                        gain=SQRT2 if p["act"] == "lrelu" else 1.0, clamp=256.0)
        return modconv
    return builder


def _mc_case(label, shape, cout, k=3, demodulate=True, act="lrelu"):
    return Case(label, shape, {"cout": cout, "k": k, "demodulate": demodulate, "act": act})


MODULATED_CONV2D = OpFormulations(
    cases=(_mc_case("stylegan2-32-fmnist G conv 32x32", (32, 64, 32, 32), 64),
           _mc_case("stylegan2-32-fmnist G conv 8x8", (32, 64, 8, 8), 64),
           _mc_case("stylegan2-32-fmnist ToRGB 32x32", (32, 64, 32, 32), 1, k=1, demodulate=False, act="linear"),
           _mc_case("stylegan2-256 G conv 64x64", (4, 256, 64, 64), 256),
           _mc_case("stylegan2-256 ToRGB 64x64", (4, 256, 64, 64), 3, k=1, demodulate=False, act="linear")),
    quick=("stylegan2-32-fmnist G conv 8x8", "stylegan2-32-fmnist ToRGB 32x32"),
    make_inputs=_mc_inputs,
    formulations=((REFERENCE, _mc_builder(None)), ("grouped (fused_modconv=True)", _mc_builder(True)),
                  ("scaled (fused_modconv=False)", _mc_builder(False))),
    chosen=REFERENCE,
    check_case=_mc_case("check", (2, 3, 6, 5), 4),
)


REGISTRY: dict[str, OpFormulations] = {
    "bias_act": BIAS_ACT,
    "adain_noise": ADAIN_NOISE,
    "conditional_batch_norm": CONDITIONAL_BATCH_NORM,
    "spectral_norm": SPECTRAL_NORM,
    "self_attention": SELF_ATTENTION,
    "upfirdn2d": UPFIRDN2D,
    "modulated_conv2d": MODULATED_CONV2D,
}


# ---- the check: every formulation computes what the chosen one computes ----

def _outputs_and_grads(fn, inputs, passes, grad_out: Optional[torch.Tensor]):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point() and "forward+backward" in passes) for t in inputs]
    out = fn(*leaves)
    got = [out.detach()]
    if "forward+backward" in passes:
        wrt = [t for t in leaves if t.requires_grad]
        got += [g.detach() for g in torch.autograd.grad(out, wrt, grad_out)]
    return got


def check_formulations(op: str, entry: OpFormulations, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    """Each formulation against the chosen one in float64 on entry.check_case: output and the
    gradients of the floating inputs. Raises AssertionError naming the first mismatch."""
    gen = torch.Generator().manual_seed(0)
    inputs = entry.make_inputs(entry.check_case, torch.float64, gen)
    builders = dict(entry.formulations)
    with torch.no_grad():
        out = builders[entry.chosen](entry.check_case)(*inputs)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    expected = _outputs_and_grads(builders[entry.chosen](entry.check_case), inputs, entry.passes, grad_out)
    for name, build in entry.formulations:
        got = _outputs_and_grads(build(entry.check_case), inputs, entry.passes, grad_out)
        for i, (g, e) in enumerate(zip(got, expected)):
            if not torch.allclose(g, e, rtol=rtol, atol=atol):
                what = "output" if i == 0 else f"gradient of floating input {i - 1}"
                raise AssertionError(f"{op}: formulation {name!r} differs from {entry.chosen!r} in its {what} "
                                     f"(max abs difference {float((g - e).abs().max()):.3g})")


# ---- timing ----

def _grad_out(fn, inputs, gen) -> torch.Tensor:
    with torch.no_grad():
        out = fn(*inputs)
    return torch.randn(out.shape, generator=gen, dtype=out.dtype)


def time_case(entry: OpFormulations, case: Case, passes, warmup: int, repeats: int) -> dict:
    """{(pass, formulation): [seconds, ...]}: rounds of one call of each formulation in turn."""
    gen = torch.Generator().manual_seed(1)
    inputs = entry.make_inputs(case, torch.float32, gen)
    fns = {name: build(case) for name, build in entry.formulations}
    grad_out = _grad_out(fns[entry.chosen], inputs, gen)
    samples = {}
    for p in passes:
        steps = {name: make_step(p, fn, inputs, grad_out) for name, fn in fns.items()}
        order = list(steps.items())
        for r in range(warmup + repeats):
            # each round starts with another formulation: whatever the first call of a round pays
            # (the previous round's frees, page faults) is shared out rather than always the chosen's
            for name, (setup, run) in order[r % len(order):] + order[:r % len(order)]:
                state = setup()
                start = time.perf_counter()
                run(state)
                elapsed = time.perf_counter() - start
                del state
                if r >= warmup:
                    samples.setdefault((p, name), []).append(elapsed)
    return samples


def _sig(v: float, digits: int = 5) -> float:
    return float(f"{v:.{digits}g}")


def rows_for(op: str, entry: OpFormulations, case: Case, samples: dict, warmup: int) -> list[dict]:
    rows = []
    for (p, name), ts in samples.items():
        p20, median, p80 = np.percentile(np.asarray(ts), [20, 50, 80])
        chosen_median = statistics.median(samples[(p, entry.chosen)])
        rows.append({
            "bench": "reference_formulations", "op": op, "shape_label": case.label, "shape": list(case.shape),
            "params": dict(case.params), "pass": p, "formulation": name, "chosen": name == entry.chosen,
            "median_s": _sig(median), "min_s": _sig(min(ts)), "p20_s": _sig(p20), "p80_s": _sig(p80),
            "ratio_vs_chosen": _sig(median / chosen_median, 4), "repeats": len(ts), "warmup": warmup,
            "dtype": "float32", "device": "cpu", "torch_threads": torch.get_num_threads(),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("op", "case", "pass", "formulation", "median ms", "min ms", "x chosen")
    lines = [(r["op"], r["shape_label"], r["pass"], r["formulation"] + (" *" if r["chosen"] else ""),
              f"{r['median_s'] * 1e3:.3f}", f"{r['min_s'] * 1e3:.3f}", f"{r['ratio_vs_chosen']:.2f}") for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head)] + [fmt(line) for line in lines])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", nargs="+", default=None, metavar="OP", help=f"a subset of: {', '.join(REGISTRY)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="each op's quick cases, --repeats 5 unless given")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; 5 with --quick)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSONL file the rows are appended to (default %(default)s)")
    ap.add_argument("--label", default=None, help="a note stored in every row (what this run measures)")
    ap.add_argument("--list", action="store_true", help="print the ops, cases and formulations, time nothing")
    args = ap.parse_args(argv)
    unknown = [n for n in args.ops or () if n not in REGISTRY]
    if unknown:
        ap.error(f"unknown --ops {unknown}; known: {', '.join(REGISTRY)}")
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 15)
    if repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    ops = {n: REGISTRY[n] for n in (args.ops or REGISTRY)}
    if args.list:
        for op, entry in ops.items():
            print(f"{op}: {', '.join(n + (' (chosen)' if n == entry.chosen else '') for n, _ in entry.formulations)}")
            for case in entry.cases:
                print(f"  {case.label:40s} {list(case.shape)}{' quick' if case.label in entry.quick else ''}")
        return 0
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    try:
        for op, entry in ops.items():
            check_formulations(op, entry)
        env = environment(torch.device("cpu"))
        run_id = uuid.uuid4().hex[:8]
        for op, entry in ops.items():
            for case in entry.cases:
                if args.quick and case.label not in entry.quick:
                    continue
                samples = time_case(entry, case, entry.passes, args.warmup, repeats)
                stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                case_rows = rows_for(op, entry, case, samples, args.warmup)
                for r in case_rows:
                    r.update({"label": args.label, "load_avg": load_average(), "timestamp": stamp, "run_id": run_id, **env})
                rows.extend(case_rows)
                print(format_table(case_rows), flush=True)
    finally:
        torch.set_num_threads(threads)
    append_rows(args.out, rows)
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
