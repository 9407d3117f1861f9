"""modulated_conv2d on the Triton backend: the kernel contracts at the end of
ganfast/ops/modulated_conv2d/reference.py (modconv_forward, epilogue_forward, epilogue_backward,
demod_coefficients).

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every output is held to the accuracy
    rule against the contract function in float64: error at most 2x that of the contract function
    run in the same dtype, plus a floor. Outputs are poisoned (every allocation of the launchers
    filled with NaN), so an unwritten element fails. The interpreter computes bf16 dots wrongly,
    so there the bf16 convolution upcasts its dot operands (after rounding them to bf16); it also
    truncates fp32 -> bf16 casts, so there the kernels round them to nearest explicitly.
(b) Ahead of time: each launch configuration compiles for sm_80 and sm_90 without spills and
    within shared memory; the fp16, bf16 and TF32 convolutions on tensor cores (mma.sync on sm_80,
    wgmma on sm_90); 128-bit global accesses in the epilogue kernels (slow: one compile subprocess).
"""
from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.modulated_conv2d import reference as ref  # noqa: E402
from ganfast.ops.modulated_conv2d import triton as mc_triton  # noqa: E402
from ganfast.testing import assert_rounded_to_nearest, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every tensor the launchers allocate starts as NaN."""
    def alloc(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(mc_triton, "_alloc", alloc)


@pytest.fixture
def small_tiles(monkeypatch):
    """16-wide tiles everywhere, so small problems span several pixel tiles, channel tiles and
    Cin chunks (the last of each partial), and epilogue tiles loop over several pixel blocks."""
    monkeypatch.setattr(mc_triton, "GEMM_TILES", {16: (16, 16, 4), 64: (32, 16, 4)})
    monkeypatch.setattr(mc_triton, "GEMM_BLOCK_K", {2: 16, 4: 16})
    monkeypatch.setattr(mc_triton, "FMA_TILES", {16: (16, 16, 4), 64: (32, 16, 4)})
    monkeypatch.setattr(mc_triton, "FMA_BLOCK_K", 16)
    monkeypatch.setattr(mc_triton, "EPILOGUE_BLOCK", 64)
    monkeypatch.setattr(mc_triton, "EPILOGUE_BWD_TILE", 16)
    monkeypatch.setattr(mc_triton, "DEMOD_BLOCKS", dict(BLOCK_O=16, BLOCK_I=16, max_n=16))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise(kind: str, shape: tuple, dtype: torch.dtype, seed: int) -> torch.Tensor | None:
    """Noise of the contract (dtype, expanded to shape) on DEVICE: 'none', 'plane' ([N, 1, H, W]
    expanded: StyleGAN2's), 'shared' ([1, 1, H, W]: sample stride 0), 'full' ([N, C, H, W]) or
    'strided' (full, stored transposed: no unit stride along W)."""
    n_, c_, h_, w_ = shape
    g = _gen(seed)
    if kind == "none":
        return None
    if kind == "plane":
        t = torch.randn(n_, 1, h_, w_, generator=g)
    elif kind == "shared":
        t = torch.randn(1, 1, h_, w_, generator=g)
    elif kind == "full":
        t = torch.randn(n_, c_, h_, w_, generator=g)
    else:
        t = torch.randn(n_, c_, w_, h_, generator=g).transpose(2, 3)
    return t.to(dtype).to(DEVICE).expand(shape)


def _to(args: dict, dtype: torch.dtype, device="cpu") -> dict:
    """args with every floating tensor in dtype on device (float32 ones stay float32 unless dtype
    is float64: the contract's small tensors are float32, float64 in the oracle)."""
    def conv(v):
        if not isinstance(v, torch.Tensor):
            return v
        want = dtype if (v.dtype != torch.float32 or dtype == torch.float64) else torch.float32
        return v.to(device=device, dtype=want)
    return {k: conv(v) for k, v in args.items()}


def _check_new(got: torch.Tensor, shape: tuple, dtype: torch.dtype, inputs: dict, name: str) -> None:
    assert tuple(got.shape) == tuple(shape) and got.dtype == dtype and got.is_contiguous(), \
        (name, tuple(got.shape), got.dtype, got.stride())
    assert got.device.type == torch.device(DEVICE).type, (name, got.device)
    ptrs = {v.data_ptr() for v in inputs.values() if isinstance(v, torch.Tensor)}
    assert got.data_ptr() not in ptrs, f"{name} aliases an input"
    assert torch.isfinite(got).all(), f"{name} has non-finite elements (unwritten?)"


# ---- (a) semantics: the fused convolution ----

def _check_forward(dtype, n, cin, cout, hw, k, padding, *, flip=True, demod=True, noise="plane", bias=True,
                   act="lrelu", clamp=-1.0, want_a=True, seed=0, oracle_dtype=None):
    """Triton's forward against the contract in float64 under the accuracy rule (of oracle_dtype:
    default dtype); returns (out, a)."""
    (h_, w_), (kh, kw) = hw, k
    px0, px1, py0, py1 = padding
    ho, wo = h_ + py0 + py1 - kh + 1, w_ + px0 + px1 - kw + 1
    g = _gen(seed)
    x = torch.randn(n, cin, h_, w_, generator=g).to(dtype)
    weight = torch.randn(cout, cin, kh, kw, generator=g).to(dtype)
    styles = torch.randn(n, cin, generator=g) * 0.5 + 1.0   # around 1, as StyleGAN2's affine gives
    dcoef = ref.demod_coefficients(weight.float(), styles) if demod else None
    b = torch.randn(cout, generator=g) if bias else None
    args = dict(x=x, weight=weight, styles=styles, dcoef=dcoef, bias=b)
    args = _to(args, dtype, DEVICE)
    args["noise"] = _noise(noise, (n, cout, ho, wo), dtype, seed + 1)
    scalars = dict(padding=padding, flip_weight=flip, act=act, alpha=0.2, gain=2 ** 0.5, clamp=clamp, want_a=want_a)
    out, a = mc_triton.forward(**args, **scalars)
    oracle = ref.modconv_forward(**_to(args, torch.float64), **scalars)
    same = ref.modconv_forward(**_to(args, dtype), **scalars)
    what = f"{dtype} N={n} {cin}->{cout} {hw} k={k} pad={padding} flip={flip} {act}"
    _check_new(out, (n, cout, ho, wo), dtype, args, f"out ({what})")
    assert_matches_oracle(out, oracle[0], same[0], dtype=oracle_dtype or dtype, name=f"out ({what})")
    if want_a:
        _check_new(a, (n, cout, ho, wo), dtype, args, f"a ({what})")
        assert_matches_oracle(a, oracle[1], same[1], dtype=oracle_dtype or dtype, name=f"a ({what})")
    else:
        assert a is None
    return out, a


# (N, Cin, Cout, (H, W), (kh, kw), padding (x0, x1, y0, y1), keyword options): one comment per case.
FORWARD_CASES = [
    # StyleGAN2's conv: 3x3, padding 1, demod, [N, 1, H, W] noise, bias, lrelu; odd C and odd map
    pytest.param(2, 5, 19, (7, 9), (3, 3), (1, 1, 1, 1), {}, id="conv3x3-C5-C19-7x9"),
    # ToRGB: 1x1, Cout = 3, no demod, no noise, linear, a not kept; Cin = 33 spans two K chunks
    pytest.param(2, 33, 3, (5, 6), (1, 1), (0, 0, 0, 0),
                 dict(demod=False, noise="none", act="linear", want_a=False), id="torgb-1x1-C33-C3"),
    # swish with the clamp on, no bias, no noise
    pytest.param(2, 5, 19, (7, 9), (3, 3), (1, 1, 1, 1),
                 dict(noise="none", bias=False, act="swish", clamp=0.5), id="swish-clamp-no-bias"),
    # true convolution (flip_weight False), asymmetric padding, a non-square kernel, no demod
    pytest.param(2, 5, 19, (7, 9), (3, 2), (2, 0, 1, 0), dict(flip=False, demod=False), id="flip-asym-3x2"),
    # batch 1 on a 4x4 map (StyleGAN2's first layer), lrelu clamped, noise shared by the batch
    pytest.param(1, 33, 33, (4, 4), (3, 3), (1, 1, 1, 1), dict(clamp=0.3, noise="shared"), id="batch1-4x4"),
    # two 64-channel tiles, the second with 3 channels; noise [N, C, H, W] stored transposed
    pytest.param(2, 5, 67, (3, 5), (3, 3), (1, 1, 1, 1), dict(noise="strided"), id="Cout67-strided-noise"),
    # padding 0 ("valid") with a 3x3 kernel: the map shrinks, no mask at the borders; linear, want_a
    pytest.param(2, 5, 19, (7, 9), (3, 3), (0, 0, 0, 0), dict(act="linear", noise="full"), id="valid-3x3"),
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,cin,cout,hw,k,padding,opts", FORWARD_CASES)
def test_forward_matches_reference(n, cin, cout, hw, k, padding, opts, dtype):
    _check_forward(dtype, n, cin, cout, hw, k, padding, **opts)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_on_small_tiles(small_tiles, dtype):
    # 63 pixels over 32-pixel tiles (2, last partial), 19 channels over 16-wide tiles (2, last
    # partial), Cin 20 over 16-wide chunks (2, last partial) times 9 taps: every tile edge and the
    # prefetch past the last step; then a 3-channel ToRGB over 16-pixel tiles, and a 1x1 map with
    # padding 1 (every tap but the centre in the padding).
    _check_forward(dtype, 2, 20, 19, (7, 9), (3, 3), (1, 1, 1, 1), noise="plane")
    _check_forward(dtype, 1, 20, 3, (7, 9), (1, 1), (0, 0, 0, 0), demod=False, noise="none", act="linear",
                   want_a=False)
    _check_forward(dtype, 2, 19, 40, (1, 1), (3, 3), (1, 1, 1, 1), act="swish")


@pytest.fixture
def allow_tf32():
    # a property of torch.backends.cuda.matmul (monkeypatch cannot delete it on undo)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@needs_device
def test_forward_tf32_path(allow_tf32):
    # torch's allow_tf32 switches fp32 to TF32 dots on the tensor-core tiles; held to fp16's floor
    # (TF32 keeps fp16's 10 mantissa bits; the interpreter computes it in fp32).
    assert mc_triton.dot_precision(torch.float32) == "tf32"
    assert mc_triton.gemm_config(torch.float32, 512, "tf32")["BLOCK_K"] == mc_triton.GEMM_BLOCK_K[4]
    _check_forward(torch.float32, 2, 5, 19, (7, 9), (3, 3), (1, 1, 1, 1), oracle_dtype=torch.float16)


def test_dot_precision_and_upcast():
    # fp32 is IEEE unless torch allows TF32; only bf16 under the interpreter upcasts its dot.
    assert not torch.backends.cuda.matmul.allow_tf32
    assert mc_triton.dot_precision(torch.float32) == "ieee"
    assert mc_triton.upcast_dot(torch.bfloat16) == backends.triton_interpret()
    assert not mc_triton.upcast_dot(torch.float16) and not mc_triton.upcast_dot(torch.float32)
    # and only bf16 under the interpreter rounds its casts explicitly (the compiled cast rounds)
    assert mc_triton.rounds_bf16(torch.bfloat16) == backends.triton_interpret()
    assert not mc_triton.rounds_bf16(torch.float16) and not mc_triton.rounds_bf16(torch.float32)



@needs_device
def test_bf16_writes_round_to_nearest():
    # issue 26: the kernels' fp32 -> bf16 casts round to nearest even, as the compiled cast does.
    # The Triton 3.9 interpreter truncates them, so there the kernels round explicitly
    # (ganfast.ops._triton.round_bf16); before that, the saved pre-activation a was up to an ulp
    # off toward zero and a selu second-order gradient of styles came out 2.6% off
    # (tests/ops/test_fuzz_found.py).
    # Exact expectations: the modulated weights rounded to bf16 (the dot's operands), the sums in
    # float64; then a and a linear out are that sum rounded, and the epilogue's out = a * dcoef
    # and da = g * dcoef are their float64 products rounded.
    g = _gen(26)
    x = torch.randn(2, 5, 6, 7, generator=g).bfloat16()
    weight = torch.randn(19, 5, 3, 3, generator=g).bfloat16()
    styles = torch.rand(2, 5, generator=g) + 0.5
    args = dict(dcoef=None, noise=None, bias=None, padding=(1, 1, 1, 1), flip_weight=True, act="linear", alpha=0.0,
                gain=1.0, clamp=-1.0, want_a=True)
    out, a = mc_triton.forward(x.to(DEVICE), weight.to(DEVICE), styles.to(DEVICE), **args)
    w_mod = (weight.float()[None] * styles[:, None, :, None, None]).bfloat16().double()   # [N, Cout, Cin, 3, 3]
    def conv(x_, w_):
        return torch.cat([torch.nn.functional.conv2d(x_[i:i + 1], w_[i], padding=1) for i in range(2)])
    exact = conv(x.double(), w_mod)
    magnitude = conv(x.double().abs(), w_mod.abs())   # the dot sums 45 terms in fp32, in its own order
    assert_rounded_to_nearest(a, exact, "forward's a", magnitude)
    assert_rounded_to_nearest(out, exact, "forward's out (linear)", magnitude)
    dcoef = torch.rand(2, 19, generator=g) + 0.5
    scalars = dict(noise=None, bias=None, act="linear", alpha=0.0, gain=1.0, clamp=-1.0)
    y = mc_triton.epilogue_forward(a, dcoef.to(DEVICE), **scalars)
    assert_rounded_to_nearest(y, a.cpu().double() * dcoef.double()[:, :, None, None], "epilogue's out")
    da, _ = mc_triton.epilogue_backward(out, a, dcoef.to(DEVICE), **scalars)
    assert_rounded_to_nearest(da, out.cpu().double() * dcoef.double()[:, :, None, None], "epilogue backward's da")


@needs_device
def test_forward_empty_batch():
    x = torch.randn(0, 4, 5, 5, device=DEVICE)
    w = torch.randn(6, 4, 3, 3, device=DEVICE)
    s = torch.ones(0, 4, device=DEVICE)
    out, a = mc_triton.forward(x, w, s, None, None, None, (1, 1, 1, 1), True, "lrelu", 0.2, 1.0, -1.0, True)
    assert out.shape == (0, 6, 5, 5) and a.shape == (0, 6, 5, 5)


def test_forward_rejects_bad_arguments():
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    w = torch.randn(6, 4, 3, 3, device=DEVICE)
    s = torch.ones(2, 4, device=DEVICE)
    pad = (1, 1, 1, 1)
    fwd = mc_triton.forward
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        fwd(x.double(), w.double(), s, None, None, None, pad, True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="x must be a contiguous"):
        fwd(x.transpose(2, 3), w, s, None, None, None, pad, True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="weight must be"):
        fwd(x, w.half(), s, None, None, None, pad, True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="padding must be"):
        fwd(x, w, s, None, None, None, (1, 1, -1, 1), True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        fwd(x[:, :, :1, :1].contiguous(), w, s, None, None, None, (0, 0, 0, 0), True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="styles must be"):
        fwd(x, w, s.half(), None, None, None, pad, True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="noise must be"):
        fwd(x, w, s, None, torch.randn(2, 6, 4, 5, device=DEVICE), None, pad, True, "lrelu", 0.2, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="act must be"):
        fwd(x, w, s, None, None, None, pad, True, "gelu", 0.2, 1.0, -1.0, False)


# ---- (a) semantics: demodulation coefficients ----

@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,cout,cin,k", [
    pytest.param(5, 19, 33, 3, id="3x3-C33-C19"),   # StyleGAN2's conv: 9 taps padded to 16, Cin past one block
    pytest.param(1, 3, 5, 1, id="1x1-torgb"),       # one tap, batch 1, Cout 3
    pytest.param(40, 70, 7, 3, id="N40-C70"),       # several sample blocks and output-channel blocks
])
def test_demod_coefficients(n, cout, cin, k, dtype):
    g = _gen(3)
    weight = torch.randn(cout, cin, k, k, generator=g).to(dtype).to(DEVICE)
    styles = (torch.randn(n, cin, generator=g) * 0.5 + 1.0).to(DEVICE)
    got = mc_triton.demod_coefficients(weight, styles)
    _check_new(got, (n, cout), torch.float32, dict(w=weight, s=styles), "dcoef")
    oracle = ref.demod_coefficients(weight.cpu().double(), styles.cpu().double())
    same = ref.demod_coefficients(weight.cpu().float(), styles.cpu())   # the contract: fp32 math
    assert_matches_oracle(got, oracle, same, dtype=torch.float32, name=f"dcoef ({dtype})")


@needs_device
def test_demod_coefficients_on_small_blocks(small_tiles):
    # 16-wide blocks: 3 sample blocks, 3 channel blocks, 3 Cin chunks, each last one partial.
    test_demod_coefficients(40, 35, 33, 3, torch.float16)


# ---- (a) semantics: the epilogue alone ----

def _epilogue_args(dtype, shape, demod, noise, bias, seed=0) -> dict:
    g = _gen(seed)
    n_, c_ = shape[:2]
    a = (torch.randn(shape, generator=g) * 3).to(dtype).to(DEVICE)
    dcoef = (torch.rand(n_, c_, generator=g) + 0.2).to(DEVICE) if demod else None
    b = torch.randn(c_, generator=g).to(DEVICE) if bias else None
    return dict(a=a, dcoef=dcoef, noise=_noise(noise, shape, dtype, seed + 1), bias=b)


def _check_epilogue(dtype, shape, act, clamp, demod=True, noise="plane", bias=True, seed=0):
    """epilogue_forward and epilogue_backward against the contract in float64."""
    args = _epilogue_args(dtype, shape, demod, noise, bias, seed)
    g = (torch.randn(shape, generator=_gen(seed + 2))).to(dtype).to(DEVICE)
    scalars = dict(act=act, alpha=0.2, gain=2 ** 0.5, clamp=clamp)
    what = f"{dtype} {shape} {act} clamp={clamp} demod={demod} noise={noise} bias={bias}"

    out = mc_triton.epilogue_forward(**args, **scalars)
    _check_new(out, shape, dtype, args, f"out ({what})")
    assert_matches_oracle(out, ref.epilogue_forward(**_to(args, torch.float64), **scalars),
                          ref.epilogue_forward(**_to(args, dtype), **scalars), name=f"out ({what})")

    da, sums = mc_triton.epilogue_backward(g, **args, **scalars)
    _check_new(da, shape, dtype, args, f"da ({what})")
    _check_new(sums, (*shape[:2], 2), torch.float32, args, f"sums ({what})")
    oracle = ref.epilogue_backward(g.cpu().double(), **_to(args, torch.float64), **scalars)
    same = ref.epilogue_backward(g.cpu(), **_to(args, dtype), **scalars)
    assert_matches_oracle(da, oracle[0], same[0], name=f"da ({what})")
    assert_matches_oracle(sums, oracle[1], same[1], dtype=torch.float32, name=f"sums ({what})")


# (shape, act, clamp, options): one comment per case.
EPILOGUE_CASES = [
    # StyleGAN2's conv epilogue on an odd map, past one 1024-element block (full blocks + masked tail)
    pytest.param((2, 19, 7, 9), "lrelu", -1.0, {}, id="lrelu-7x9"),
    # clamped lrelu (StyleGAN2's conv_clamp) with noise shared by the batch
    pytest.param((2, 5, 7, 9), "lrelu", 0.5, dict(noise="shared"), id="lrelu-clamp"),
    # ToRGB: linear, no demod, no noise, bias alone
    pytest.param((2, 3, 4, 4), "linear", -1.0, dict(demod=False, noise="none"), id="torgb-linear"),
    # swish clamped, no bias, noise [N, C, H, W] stored transposed
    pytest.param((1, 5, 4, 4), "swish", 0.7, dict(bias=False, noise="strided"), id="swish-clamp-batch1"),
    # 1x1 maps: one pixel a plane, many planes a program; full noise, demod, no bias
    pytest.param((3, 19, 1, 1), "lrelu", -1.0, dict(noise="full", bias=False), id="1x1-map"),
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,act,clamp,opts", EPILOGUE_CASES)
def test_epilogue_matches_reference(shape, act, clamp, opts, dtype):
    _check_epilogue(dtype, shape, act, clamp, **opts)


@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_epilogue_on_small_tiles(small_tiles, dtype):
    # 64-element forward blocks (full ones unmasked, a masked tail); the backward over 16-pixel
    # blocks of a 63-pixel plane (4, the last partial) and over 16 planes of a 1-pixel map.
    _check_epilogue(dtype, (2, 5, 7, 9), "swish", 0.8)
    _check_epilogue(dtype, (3, 19, 1, 1), "lrelu", -1.0, noise="shared")


@needs_device
def test_epilogue_int64_offsets(monkeypatch):
    # Tensors of 2**31 elements and more take int64 offsets; lower the limit to reach them.
    monkeypatch.setattr(mc_triton, "INDEX_32_LIMIT", 0)
    _check_epilogue(torch.float16, (2, 5, 7, 9), "lrelu", 0.5)


@needs_device
def test_epilogue_empty():
    a = torch.randn(2, 3, 0, 4, device=DEVICE)
    out = mc_triton.epilogue_forward(a, None, None, None, "lrelu", 0.2, 1.0, -1.0)
    da, sums = mc_triton.epilogue_backward(a, a, None, None, None, "lrelu", 0.2, 1.0, -1.0)
    assert out.shape == a.shape and da.shape == a.shape
    assert sums.shape == (2, 3, 2) and not sums.any()


def test_epilogue_rejects_bad_arguments():
    a = torch.randn(2, 3, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="dcoef must be"):
        mc_triton.epilogue_forward(a, torch.ones(2, 3, device=DEVICE).double(), None, None, "lrelu", 0.2, 1.0, -1.0)
    with pytest.raises(ValueError, match="bias must be"):
        mc_triton.epilogue_forward(a, None, None, torch.ones(4, device=DEVICE), "lrelu", 0.2, 1.0, -1.0)
    with pytest.raises(ValueError, match="noise must be"):
        mc_triton.epilogue_forward(a, None, a[:, :1], None, "lrelu", 0.2, 1.0, -1.0)
    with pytest.raises(ValueError, match="g must be"):
        mc_triton.epilogue_backward(a.half(), a, None, None, None, "lrelu", 0.2, 1.0, -1.0)


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = mc_triton.aot_specs()
# The tensor-core instruction each architecture must use (triton_aot.has_mma accepts any).
TENSOR_CORE_OP = {80: re.compile(r"\bmma\.sync\b"), 90: re.compile(r"\bwgmma\.mma_async\b")}


@pytest.fixture(scope="module")
def aot_results():
    from ganfast.testing.triton_aot import compile_by_name
    return compile_by_name(AOT_SPECS, AOT_ARCHS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOT_ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("spec", AOT_SPECS, ids=spec_id)
def test_aot_compiles_within_resources(aot_results, spec, arch, record_property):
    from ganfast.testing.triton_aot import has_mma
    result = reported(aot_results[(spec["name"], arch)], record_property)
    assert result.problems(vector_io=spec["vector_io"]) == [], result.row()
    if spec["tensor_cores"]:
        assert has_mma(result.ptx) and TENSOR_CORE_OP[arch].search(result.ptx), f"no tensor cores: {result.row()}"


def test_aot_specs_cover_every_gemm_config():
    # Every tile gemm_config can pick, per dtype and dot precision, is compiled above.
    compiled = {(s["signature"]["x_ptr"], s["constexprs"]["DOT_PRECISION"], s["constexprs"]["BLOCK_M"],
                 s["constexprs"]["BLOCK_N"], s["constexprs"]["BLOCK_K"], s["options"]["num_warps"])
                for s in AOT_SPECS if s["gemm"]}
    names = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}
    for dtype, precision in ((torch.float16, "ieee"), (torch.bfloat16, "ieee"), (torch.float32, "ieee"),
                             (torch.float32, "tf32")):
        for cout in (1, 3, 16, 17, 64, 512):
            c = mc_triton.gemm_config(dtype, cout, precision)
            key = (names[dtype], precision, c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["num_warps"])
            assert key in compiled, (dtype, precision, cout, c)
