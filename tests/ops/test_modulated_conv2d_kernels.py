"""modulated_conv2d's fused-backend kernels on the CPU extension (ganfast.ops.modulated_conv2d.cpu):
epilogue_forward, epilogue_backward and demod_coefficients against their contracts in
reference.py run in float64 (the oracle), under the accuracy rule, with NaN-poisoned outputs.

The helpers here (make_case, check_epilogue, check_demod, ...) take the contract module and the
device, so tests/ops/test_modulated_conv2d_gpu.py runs the same checks on the CUDA kernels.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import pytest
import torch

import ganfast
from ganfast.ops.bias_act.reference import ACTIVATIONS, activation
from ganfast.ops.modulated_conv2d import reference
from ganfast.testing import assert_matches_oracle, poison_like

F64 = torch.float64
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
ACTS = list(ACTIVATIONS)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return F64 if dtype == F64 else torch.float32


def extension_or_skip(kind: str):
    """The loaded extension `kind`; skips when it is not built, fails when it predates these kernels."""
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    mod = ganfast._ext.extension(kind)
    if not hasattr(mod, "modconv_epilogue_forward"):
        pytest.fail(f"the built {kind} extension has no modulated_conv2d kernels (built before they existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return mod


def contract_module(kind: str):
    """ganfast.ops.modulated_conv2d.cpu or .cuda, once its extension is known to load."""
    extension_or_skip(kind)
    if kind == "cpu":
        from ganfast.ops.modulated_conv2d import cpu as mod
    else:
        from ganfast.ops.modulated_conv2d import cuda as mod
    return mod


# ---------------------------------------------------------------- inputs

# Noise views the epilogue takes, each [N, C, H, W]: (shape of the tensor drawn, view of it).
NOISE_KINDS: dict[str, Optional[tuple[Callable, Callable]]] = {
    "none": None,
    # StyleGAN2's per-sample noise [N, 1, H, W] broadcast over channels: strides (HW, 0, W, 1).
    "per_sample": (lambda n, c, h, w: (n, 1, h, w), lambda t, s: t.expand(s)),
    # One plane shared by the batch ([1, 1, H, W], const noise): strides (0, 0, W, 1).
    "shared": (lambda n, c, h, w: (1, 1, h, w), lambda t, s: t.expand(s)),
    # A full contiguous [N, C, H, W] tensor.
    "full": (lambda n, c, h, w: (n, c, h, w), lambda t, s: t),
    # H and W swapped in memory: planes are not contiguous rows (gathered / divmod path).
    "transposed": (lambda n, c, h, w: (n, c, w, h), lambda t, s: t.transpose(2, 3)),
    # One value per channel ([1, C, 1, 1] expanded): stride 0 along H and W.
    "per_channel": (lambda n, c, h, w: (1, c, 1, 1), lambda t, s: t.expand(s)),
    # Every other column of a wider tensor: W stride 2.
    "every_other_column": (lambda n, c, h, w: (n, c, h, 2 * w), lambda t, s: t[..., ::2]),
    # [N, 1, H, W] one element into its storage: flat planes, not 16-byte aligned.
    "offset_per_sample": (lambda n, c, h, w: (n * h * w + 1,),
                          lambda t, s: t[1:].view(s[0], 1, s[2], s[3]).expand(s)),
}


def _clamp_for(act: str) -> float:
    # Bounds that clamp a good share of the outputs (tanh and sigmoid stay within (-1, 1)).
    return 0.6 if act in ("tanh", "sigmoid") else 1.5


@dataclasses.dataclass
class Case:
    """Float64 inputs of the epilogue contracts, already rounded to what the kernel sees: a, g and
    the noise to the data dtype, dcoef and bias to the accumulation dtype."""
    a: torch.Tensor
    g: torch.Tensor
    dcoef: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    noise_base: Optional[torch.Tensor]
    noise_view: Optional[Callable]
    act: str
    alpha: float
    gain: float
    clamp: float

    def inputs(self, dtype: torch.dtype, device="cpu") -> dict:
        """a, g, dcoef, noise, bias in dtype (the small ones in its accumulation dtype) on device."""
        data = lambda t: t.to(device=device, dtype=dtype)
        small = lambda t: None if t is None else t.to(device=device, dtype=acc_dtype(dtype))
        noise = None
        if self.noise_base is not None:
            noise = self.noise_view(data(self.noise_base), self.a.shape)
        return dict(a=data(self.a), g=data(self.g), dcoef=small(self.dcoef), noise=noise, bias=small(self.bias))

    @property
    def hyper(self) -> tuple:
        return self.act, self.alpha, self.gain, self.clamp


def make_case(shape, dtype, act="lrelu", clamp: Optional[float] = None, with_dcoef=True, noise_kind="per_sample",
              with_bias=True, seed=0) -> Case:
    """Random inputs with every z off the activation kinks and every gain * f(z) off the clamp bound
    by a margin: the kernel computes z in float32, the oracle in float64, and a z rounding moves
    across a kink (or a y across the bound) flips a whole gradient element. The kinks themselves
    are pinned by test_epilogue_kinks_follow_bias_act. clamp None: the activation's usual bound;
    -1: none."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)
    rnd = lambda t, dt: t.to(dt).to(F64)
    acc = acc_dtype(dtype)
    spec = ACTIVATIONS[act]
    clamp = _clamp_for(act) if clamp is None else float(clamp)
    a = rnd(r(*shape) * 2, dtype)
    dcoef = rnd(torch.rand(n, c, generator=gen, dtype=F64) + 0.5, acc) if with_dcoef else None
    bias = rnd(r(c) * 0.5, acc) if with_bias else None
    noise_base = noise_view = None
    if NOISE_KINDS[noise_kind] is not None:
        base_shape, noise_view = NOISE_KINDS[noise_kind]
        noise_base = rnd(r(*base_shape(n, c, h, w)), dtype)
    g = rnd(r(*shape), dtype)
    case = Case(a, g, dcoef, bias, noise_base, noise_view, act, spec.def_alpha, spec.def_gain, clamp)
    for _ in range(10):
        z = case.a * (1 if dcoef is None else dcoef[:, :, None, None])
        if noise_base is not None:
            z = z + noise_view(noise_base, z.shape)
        if bias is not None:
            z = z + bias[:, None, None]
        bad = z.abs() < 0.02
        if clamp >= 0:
            y = activation(z, act, case.alpha) * case.gain
            bad |= (y.abs() - clamp).abs() < 0.02 * max(1.0, clamp)
        if not bad.any():
            return case
        case.a = torch.where(bad, rnd(case.a + 0.3, dtype), case.a)
    raise AssertionError("make_case: could not move the inputs off the kinks")


# ---------------------------------------------------------------- checks

def check_epilogue(mod, case: Case, dtype: torch.dtype, device="cpu", name=""):
    """Forward and backward of contract module `mod` on `device` in `dtype` against the float64
    reference contract, under the accuracy rule; the reference run on the same (dtype) inputs sets
    the budget. Outputs are handed in filled with NaN (an unwritten element fails), and a second
    call with fresh outputs must give the same bits (a fixed order of the sums: deterministic)."""
    x = case.inputs(dtype, device)
    x64 = case.inputs(F64)
    tag = f"{name} [{case.act} clamp={case.clamp} {tuple(case.a.shape)} {dtype} {device}]"
    fwd = lambda m, i, **kw: m.epilogue_forward(i["a"], i["dcoef"], i["noise"], i["bias"], *case.hyper, **kw)
    bwd = lambda m, i, **kw: m.epilogue_backward(i["g"], i["a"], i["dcoef"], i["noise"], i["bias"], *case.hyper, **kw)

    poisoned = poison_like(x["a"])
    out = fwd(mod, x, out=poisoned)
    assert out.data_ptr() == poisoned.data_ptr(), f"{tag}: the kernel must write into the given out"
    assert out.dtype == dtype and out.shape == x["a"].shape and out.is_contiguous() and out.device == x["a"].device
    same = fwd(reference, x) if dtype != F64 else None
    assert_matches_oracle(out, fwd(reference, x64), same, dtype=dtype, name=f"out {tag}")
    assert torch.equal(fwd(mod, x), out), f"{tag}: out differs from a run with a fresh output"

    poisoned = poison_like(x["a"])
    da, sums = bwd(mod, x, out=poisoned)
    assert da.data_ptr() == poisoned.data_ptr(), f"{tag}: the kernel must write into the given out"
    acc = acc_dtype(dtype)
    n, c = case.a.shape[:2]
    assert da.dtype == dtype and da.shape == x["a"].shape and da.is_contiguous()
    assert sums.dtype == acc and sums.shape == (n, c, 2) and sums.device == x["a"].device
    da64, sums64 = bwd(reference, x64)
    da_same, sums_same = bwd(reference, x) if dtype != F64 else (None, None)
    assert_matches_oracle(da, da64, da_same, dtype=dtype, name=f"da {tag}")
    assert_matches_oracle(sums, sums64, sums_same, dtype=acc, name=f"sums {tag}")
    da2, sums2 = bwd(mod, x)
    assert torch.equal(da2, da) and torch.equal(sums2, sums), f"{tag}: backward differs between two calls"


def make_demod_inputs(cout, cin, k, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=F64)
    styles = torch.randn(n, cin, generator=gen, dtype=F64) * 0.5 + 1.0
    return weight, styles


def check_demod(mod, weight: torch.Tensor, styles: torch.Tensor, w_dtype, s_dtype, device="cpu", name=""):
    """demod_coefficients of `mod` on weight in w_dtype and styles in s_dtype against the float64
    reference on the same rounded inputs; the budget is the reference's error in the result's
    dtype (float32, float64 for float64 weight) on those inputs."""
    w, s = weight.to(device=device, dtype=w_dtype), styles.to(device=device, dtype=s_dtype)
    acc = acc_dtype(w_dtype)
    got = mod.demod_coefficients(w, s)
    assert got.dtype == acc and got.shape == (s.shape[0], w.shape[0]) and got.device == w.device
    oracle = reference.demod_coefficients(w.to(F64), s.to(F64))
    same = reference.demod_coefficients(w.to(acc), s.to(acc)) if acc != F64 else None
    assert_matches_oracle(got, oracle, same, dtype=acc, name=f"dcoef {name} [{tuple(w.shape)} {w_dtype}/{s_dtype}]")


# ---------------------------------------------------------------- epilogue

# (name, shape [N, C, H, W]) -- each a case that bites per-plane kernels.
SHAPES = [
    ("1x1", (3, 7, 1, 1)),                # one pixel per plane: every plane a work item of its own
    ("4x4_odd_c", (2, 5, 4, 4)),          # StyleGAN's first block, odd channel count
    ("odd_7x9", (2, 3, 7, 9)),            # a plane that divides no vector or block
    ("batch1", (1, 6, 5, 11)),            # batch 1 (noise batch stride unused)
    ("many_small_planes", (2, 67, 4, 4)),  # many planes per parallel work item
    ("64x64", (1, 8, 64, 64)),            # a StyleGAN2 256px layer's plane
    ("big_plane", (1, 2, 150, 130)),      # planes longer than a parallel work item's minimum
]


@pytest.fixture(scope="module")
def cpu():
    return contract_module("cpu")


@pytest.mark.parametrize("clamped", [False, True], ids=["no_clamp", "clamp"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_epilogue_every_activation(cpu, act, clamped, dtype):
    # Every act, with its usual clamp bound and without (clamp < 0: the unclamped instantiation).
    case = make_case((2, 5, 6, 7), dtype, act, clamp=None if clamped else -1.0)
    check_epilogue(cpu, case, dtype)


@pytest.mark.parametrize("noise_kind", list(NOISE_KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue_noise_views(cpu, noise_kind, dtype):
    # Every noise view (see NOISE_KINDS) in every dtype: flat planes read in place, others gathered.
    case = make_case((2, 6, 5, 8), dtype, "lrelu", noise_kind=noise_kind)
    check_epilogue(cpu, case, dtype)


@pytest.mark.parametrize("with_dcoef,with_bias,noise_kind", [
    (False, True, "per_sample"),   # no demodulation (dcoef None)
    (True, False, "per_sample"),   # no bias
    (False, False, "none"),        # none of the three: a plain activation of a
], ids=["no_dcoef", "no_bias", "nothing"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_epilogue_optional_inputs(cpu, with_dcoef, with_bias, noise_kind, dtype):
    case = make_case((2, 4, 6, 6), dtype, "swish", with_dcoef=with_dcoef, with_bias=with_bias, noise_kind=noise_kind)
    check_epilogue(cpu, case, dtype)


@pytest.mark.parametrize("case", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_epilogue_shapes(cpu, case, dtype):
    check_epilogue(cpu, make_case(case[1], dtype, "lrelu", seed=1), dtype, name=case[0])


def test_epilogue_stylegan2_layer_float32(cpu):
    # The benchmark's layer at batch 1: lrelu, clamp 256, gain sqrt(2), [N, 1, H, W] noise, 512
    # channels of 32x32 (planes spread over every thread).
    case = make_case((1, 512, 32, 32), torch.float32, "lrelu", clamp=256.0)
    check_epilogue(cpu, case, torch.float32)


def test_epilogue_kinks_follow_bias_act(cpu):
    # z exactly at 0 and gain * f(z) exactly at +-clamp, in float64: the values the reference
    # contract (PyTorch autograd, bias_act's conventions) gives there: relu'(0) = 0,
    # lrelu'(0) = alpha, elu/selu take the negative branch at 0, the clamp passes on the closed
    # interval.
    a = torch.tensor([0.0, 0.5, -0.5, 0.25, 2.0, -2.0], dtype=F64).reshape(1, 1, 2, 3)
    g = torch.tensor([1.0, 2.0, -3.0, 0.5, 1.5, -1.0], dtype=F64).reshape(1, 1, 2, 3)
    for act in ("linear", "relu", "lrelu", "elu", "selu"):
        spec = ACTIVATIONS[act]
        y_half = float(activation(torch.tensor(0.5, dtype=F64), act, spec.def_alpha)) * spec.def_gain
        for clamp in (-1.0, y_half):  # y_half: 0.5 lands exactly on the bound
            hyper = (act, spec.def_alpha, spec.def_gain, clamp)
            torch.testing.assert_close(cpu.epilogue_forward(a, None, None, None, *hyper),
                                       reference.epilogue_forward(a, None, None, None, *hyper), rtol=1e-14, atol=1e-14)
            got, want = cpu.epilogue_backward(g, a, None, None, None, *hyper), \
                reference.epilogue_backward(g, a, None, None, None, *hyper)
            for k, gv, wv in zip(("da", "sums"), got, want):
                torch.testing.assert_close(gv, wv, rtol=1e-14, atol=1e-14, msg=lambda m: f"{act} clamp={clamp} {k}: {m}")


def test_epilogue_empty(cpu):
    # No pixels: sums are zeros. No planes: empty sums.
    for shape in ((2, 3, 0, 4), (0, 3, 4, 4)):
        a = torch.randn(shape)
        out = cpu.epilogue_forward(a, None, None, None, "lrelu", 0.2, 2 ** 0.5, 256.0)
        da, sums = cpu.epilogue_backward(a, a, None, None, None, "lrelu", 0.2, 2 ** 0.5, 256.0)
        assert out.shape == da.shape == shape
        assert sums.shape == (*shape[:2], 2) and not sums.any()


# ---------------------------------------------------------------- argument errors

def _valid_args(dtype=torch.float32, device="cpu"):
    """Valid arguments of both epilogue contracts: dict of g, a, dcoef, noise, bias."""
    return make_case((2, 3, 4, 5), dtype, "lrelu").inputs(dtype, device)


def _run_epilogue(mod, args: dict, backward: bool, **kw):
    hyper = ("lrelu", 0.2, 2 ** 0.5, 256.0)
    if backward:
        return mod.epilogue_backward(args["g"], args["a"], args["dcoef"], args["noise"], args["bias"], *hyper, **kw)
    return mod.epilogue_forward(args["a"], args["dcoef"], args["noise"], args["bias"], *hyper, **kw)


# (id, change to the valid arguments, which pass breaks (None: both), message naming the argument)
EPILOGUE_ERRORS = [
    ("a_3d", lambda d: d.update(a=d["a"][0], g=d["g"][0]), None, r"a must be \[N, C, H, W\]"),
    ("a_int", lambda d: d.update(a=d["a"].int()), None, "a must be float16, bfloat16, float32 or float64"),
    ("a_channels_last", lambda d: d.update(a=d["a"].contiguous(memory_format=torch.channels_last)), None,
     "a must be contiguous"),
    ("dcoef_shape", lambda d: d.update(dcoef=d["dcoef"][0]), None, r"dcoef must have shape \[N, C\]"),
    ("dcoef_dtype", lambda d: d.update(dcoef=d["dcoef"].double()), None, "dcoef must have dtype"),
    ("dcoef_strided", lambda d: d.update(dcoef=d["dcoef"].t().contiguous().t()), None, "dcoef must be contiguous"),
    ("bias_shape", lambda d: d.update(bias=d["bias"][:2]), None, r"bias must have shape \[C\]"),
    ("bias_dtype", lambda d: d.update(bias=d["bias"].half()), None, "bias must have dtype"),
    ("noise_not_expanded", lambda d: d.update(noise=d["noise"][:, :1]), None, "noise must be expanded to a's shape"),
    ("noise_dtype", lambda d: d.update(noise=d["noise"].double()), None, "noise must have a's dtype"),
    ("g_shape", lambda d: d.update(g=d["g"][:1]), True, "g must have a's shape"),
    ("g_strided", lambda d: d.update(g=d["g"].transpose(2, 3).contiguous().transpose(2, 3)), True,
     "g must be contiguous"),
    ("g_dtype", lambda d: d.update(g=d["g"].half()), True, "g must have a's dtype"),
    ("dcoef_device", lambda d: d.update(dcoef=torch.empty(d["dcoef"].shape, device="meta")), None,
     "dcoef must be on cpu"),
    ("a_device", lambda d: d.update(a=torch.empty(d["a"].shape, device="meta")), None, "a must be on cpu"),
]


# Each error through each pass it concerns.
EPILOGUE_ERROR_RUNS = [(e, backward) for e in EPILOGUE_ERRORS for backward in (False, True)
                       if e[2] is None or e[2] == backward]


@pytest.mark.parametrize("err,backward", EPILOGUE_ERROR_RUNS,
                         ids=[f"{e[0]}-{'backward' if b else 'forward'}" for e, b in EPILOGUE_ERROR_RUNS])
def test_epilogue_argument_errors_name_the_argument(cpu, err, backward):
    _, change, _, match = err
    args = _valid_args()
    change(args)
    with pytest.raises(RuntimeError, match=match):
        _run_epilogue(cpu, args, backward)


def test_epilogue_out_and_act_errors(cpu):
    args = _valid_args()
    with pytest.raises(RuntimeError, match="out must have dtype"):
        _run_epilogue(cpu, args, False, out=torch.empty_like(args["a"], dtype=F64))
    with pytest.raises(RuntimeError, match="out must match x in shape and strides"):
        _run_epilogue(cpu, args, True, out=torch.empty_like(args["a"])[:1])
    ext = extension_or_skip("cpu")
    with pytest.raises(RuntimeError, match=r"act code must be in \[0, 9\)"):
        ext.modconv_epilogue_forward(args["a"], None, None, None, 9, 0.0, 1.0, -1.0)


# ---------------------------------------------------------------- demodulation coefficients

# (name, Cout, Cin, k, N)
DEMOD_SHAPES = [
    ("3x3", 8, 5, 3, 3),
    ("1x1_torgb", 3, 16, 1, 2),           # toRGB: 1x1 kernel
    ("4x4_batch1", 4, 6, 4, 1),           # batch 1, an even kernel
    ("wide_cin", 5, 1500, 1, 3),          # more input channels than the CUDA kernel holds at once
    ("many_samples", 6, 40, 3, 21),       # more samples than the CUDA block's warps
    ("stylegan_512", 32, 512, 3, 4),      # a StyleGAN2 layer's Cin
]


@pytest.mark.parametrize("case", DEMOD_SHAPES, ids=[s[0] for s in DEMOD_SHAPES])
@pytest.mark.parametrize("w_dtype,s_dtype", [
    (torch.float64, torch.float64), (torch.float32, torch.float32), (torch.float16, torch.float16),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float32),   # fp16 weights with fp32 styles, as a fp16 layer calls it
], ids=["f64", "f32", "f16", "bf16", "f16_w_f32_styles"])
def test_demod_matches_oracle(cpu, case, w_dtype, s_dtype):
    name, cout, cin, k, n = case
    weight, styles = make_demod_inputs(cout, cin, k, n)
    check_demod(cpu, weight, styles, w_dtype, s_dtype, name=name)


def test_demod_zero_styles_and_edges(cpu):
    # A sample with zero styles gets rsqrt(1e-8) = 1e4 (the epsilon alone); no samples or no
    # output channels give an empty result; no input channels the epsilon alone too.
    weight, styles = make_demod_inputs(4, 6, 3, 2)
    styles[1] = 0
    got = cpu.demod_coefficients(weight.float(), styles.float())
    torch.testing.assert_close(got[1], torch.full((4,), 1e4), rtol=1e-6, atol=0)
    assert cpu.demod_coefficients(weight.float(), styles[:0].float()).shape == (0, 4)
    assert cpu.demod_coefficients(weight[:0].float(), styles.float()).shape == (2, 0)
    torch.testing.assert_close(cpu.demod_coefficients(weight[:, :0].float(), styles[:, :0].float()),
                               torch.full((2, 4), 1e4), rtol=1e-6, atol=0)


DEMOD_ERRORS = [
    ("weight_3d", lambda w, s: (w[0], s), r"weight must be \[Cout, Cin, kh, kw\]"),
    ("weight_int", lambda w, s: (w.int(), s), "weight must be float16, bfloat16, float32 or float64"),
    ("weight_strided", lambda w, s: (w.transpose(2, 3), s), "weight must be contiguous"),
    ("styles_cin", lambda w, s: (w, s[:, :2]), r"styles must be \[N, Cin\] with Cin = weight.shape\[1\]"),
    ("styles_dtype", lambda w, s: (w, s.double()), "styles must have weight's dtype"),
    ("styles_device", lambda w, s: (w, torch.empty(s.shape, device="meta")), "styles must be on cpu"),
    ("weight_device", lambda w, s: (torch.empty(w.shape, device="meta"), s), "weight must be on cpu"),
]


@pytest.mark.parametrize("err", DEMOD_ERRORS, ids=[e[0] for e in DEMOD_ERRORS])
def test_demod_argument_errors_name_the_argument(cpu, err):
    _, change, match = err
    weight, styles = make_demod_inputs(4, 6, 3, 2)
    with pytest.raises(RuntimeError, match=match):
        cpu.demod_coefficients(*change(weight.float(), styles.float()))
