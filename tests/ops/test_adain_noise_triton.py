"""adain_noise on the Triton backend: the kernel contract (forward, backward) of
ganfast/ops/adain_noise/reference.py.

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every output is held to the accuracy
    rule: error against the float64 reference at most 2x the reference's own error in the dtype.
    Both paths are reached: planes fused in one program, and planes split over programs (forced on
    small planes by lowering the module's thresholds, and taken naturally by 64x80 planes).
(b) Ahead of time: each kernel compiles for sm_80 and sm_90 without spills, within shared memory,
    and with 128-bit global accesses where rows allow them (slow: one compile subprocess).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.adain_noise import reference as ref  # noqa: E402
from ganfast.ops.adain_noise import triton as adain_triton  # noqa: E402
from ganfast.ops.bias_act.reference import ACTIVATIONS  # noqa: E402
from ganfast.testing import assert_rounded_to_nearest, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle, poison_like  # noqa: E402

from .adain_noise_cases import check_backend_against_oracle, make_inputs, rounded  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"
EPS = 1e-8

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")


@pytest.fixture
def force_split(monkeypatch):
    """Send every plane past 16 pixels down the split path, with tiny tiles: several splits per
    plane, several tiles per split (the last one partial) and several blocks of partials to combine."""
    monkeypatch.setattr(adain_triton, "FUSED_MAX_TILE", 16)
    monkeypatch.setattr(adain_triton, "SPLIT_TILE", 64)
    monkeypatch.setattr(adain_triton, "SPLIT_MIN_TILES", 2)
    monkeypatch.setattr(adain_triton, "COMBINE_TILE", 4)


def _contract_inputs(inp: dict, dtype: torch.dtype, device=DEVICE) -> dict:
    """The contract's arguments from make_inputs' float64 dict: x and noise in dtype, the small
    tensors in float32 (the accumulation type), seed -1 without one."""
    def small(v):
        return None if v is None else v.detach().to(device=device, dtype=torch.float32)

    def big(v):
        return None if v is None else v.detach().to(device=device, dtype=dtype)

    return dict(x=big(inp["x"]), s=small(inp["style_scale"]), t=small(inp["style_bias"]), noise=big(inp["noise"]),
                ns=small(inp["noise_strength"]), b=small(inp["bias"]),
                seed=-1 if inp["seed"] is None else inp["seed"])


def _as_f64(args: dict) -> dict:
    return {k: (v.to(device="cpu", dtype=torch.float64) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def _run_contract(impl, args: dict, g: torch.Tensor, act: str, alpha: float, gain: float, poison: bool = False):
    """{out, stats, dx, ds, dt, sdz, sdzn} of impl.forward then impl.backward (the backward takes
    the forward's stats, as the autograd does)."""
    a = args
    fw_kw = dict(out=poison_like(a["x"])) if poison else {}
    out, stats = impl.forward(a["x"], a["s"], a["t"], a["noise"], a["ns"], a["b"], act, alpha, gain, EPS, a["seed"],
                              **fw_kw)
    if poison:
        assert out is fw_kw["out"]
    bw_kw = dict(out=poison_like(a["x"])) if poison else {}
    grads = impl.backward(g, a["x"], a["s"], a["noise"], a["ns"], a["b"], stats, act, alpha, gain, EPS, a["seed"],
                          **bw_kw)
    if poison:
        assert grads[0] is bw_kw["out"]
    return dict(zip(("out", "stats", "dx", "ds", "dt", "sdz", "sdzn"), (out, stats, *grads)))


def _check(shape, layout, dtype, act="lrelu", noise_kind="tensor", with_bias=True, with_strength=True,
           seed=None, data_seed=0, alpha=None, gain=None, x_offset=0.0):
    """Triton's forward and backward, into poisoned outputs, against the float64 reference under
    the accuracy rule; returns Triton's results."""
    inp = make_inputs(shape, layout, noise_kind, with_bias, with_strength, seed=data_seed)
    if seed is not None:
        inp["seed"] = seed
    inp["x"] = inp["x"] + x_offset
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    args = _contract_inputs(inp, dtype)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(data_seed + 7), dtype=torch.float64)
    g = g.to(dtype).to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    got = _run_contract(adain_triton, args, g.to(DEVICE), act, alpha, gain, poison=True)
    oracle = _run_contract(ref, _as_f64(_contract_inputs(rounded(inp, dtype), torch.float64, "cpu")),
                           g.double(), act, alpha, gain)
    same = _run_contract(ref, _contract_inputs(inp, dtype, "cpu"), g, act, alpha, gain)
    what = f"{act} {noise_kind} seed={args['seed']} {dtype} {tuple(shape)} {layout}"
    for k, v in got.items():
        want_dtype = dtype if k in ("out", "dx") else torch.float32
        assert v.dtype == want_dtype and v.device.type == torch.device(DEVICE).type, (k, v.dtype, v.device)
        if k in ("out", "dx"):
            assert v.stride() == args["x"].stride(), (k, v.stride(), args["x"].stride())
        assert_matches_oracle(v, oracle[k], same[k], name=f"{k} ({what})")
    return got


# ---- (a) semantics under the interpreter (or on a GPU) ----

# (shape, layout, act, noise kind): one comment per case.
CASES = [
    pytest.param((2, 5, 4, 4), "contiguous", "lrelu", "tensor", id="4x4-C5"),           # StyleGAN's first block, odd C
    pytest.param((3, 4, 1, 1), "contiguous", "linear", "seed", id="1x1"),               # one pixel: var 0, out = t
    pytest.param((1, 3, 5, 7), "channels_last", "tanh", "shared_plane", id="batch1-5x7-cl"),  # batch 1, odd map, Nn=1
    pytest.param((2, 3, 13, 11), "contiguous", "swish", "seed", id="13x11"),            # a plane no block divides
    pytest.param((2, 70, 8, 8), "channels_last", "lrelu", "seed", id="C70-cl"),         # 3 channel blocks, last partial
    pytest.param((2, 3, 64, 80), "contiguous", "lrelu", "tensor", id="split-64x80"),    # past 4096 pixels: 2 splits
    pytest.param((1, 5, 64, 80), "channels_last", "swish", "seed", id="split-64x80-cl"),  # 5 splits of 4 tiles
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout,act,noise_kind", CASES)
def test_matches_reference(shape, layout, act, noise_kind, dtype):
    _check(shape, layout, dtype, act, noise_kind)


@needs_device
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_activation(act):
    # Both paths, fp32 and bf16, given and seeded noise; alpha 0.3 reaches lrelu's and elu's slope.
    _check((2, 3, 5, 7), "contiguous", torch.float32, act, "tensor", alpha=0.3)
    _check((1, 6, 4, 5), "channels_last", torch.bfloat16, act, "seed", alpha=0.3)


@needs_device
@pytest.mark.parametrize("layout,dtype", [("contiguous", torch.float32), ("contiguous", torch.bfloat16),
                                          ("channels_last", torch.float32), ("channels_last", torch.float16)],
                         ids=str)
def test_split_path_on_small_planes(force_split, layout, dtype):
    # 9x7 = 63 pixels over 16-pixel tiles (NCHW: 2 splits of 2 tiles) or 8-pixel tiles
    # (channels_last: 4 splits); the last tile partial, the partials combined one or two splits
    # at a time; C = 5 leaves a partial channel block.
    cfg = adain_triton.plan(5, 63, layout == "channels_last")
    assert not cfg["fused"] and cfg["num_splits"] >= 2 and cfg["iters"] == 2, cfg
    assert cfg["BLOCK_S"] < cfg["num_splits"] and cfg["BLOCK_C"] < 2 * 5, cfg
    _check((2, 5, 9, 7), layout, dtype, "swish", "tensor")
    _check((2, 5, 9, 7), layout, dtype, "lrelu", "seed", data_seed=1)


@needs_device
@pytest.mark.parametrize("split", [False, True], ids=["fused", "split"])
def test_variance_stable_under_a_large_offset(split, request):
    # y around 1000 with a spread of ~2: E[y^2] - E[y]^2 in fp32 would lose ~1% of the variance;
    # the fused kernels subtract the mean first, the split ones combine (mean, M2) partials.
    if split:
        request.getfixturevalue("force_split")
    _check((2, 3, 9, 7), "contiguous", torch.float32, "linear", "tensor", x_offset=1000.0)
    _check((2, 3, 9, 7), "channels_last", torch.float16, "linear", "seed", x_offset=300.0)


@needs_device
@pytest.mark.parametrize("split", [False, True], ids=["fused", "split"])
@pytest.mark.parametrize("noise_kind,with_strength,with_bias", [
    ("none", True, True),            # no noise: sdzn is zeros, ns unused
    ("tensor", False, True),         # noise at strength 1
    ("shared_plane", True, False),   # one noise plane for the batch, no bias
    ("seed", False, False),          # seeded noise alone
])
def test_noise_strength_and_bias_flags(noise_kind, with_strength, with_bias, split, request):
    if split:
        request.getfixturevalue("force_split")
    got = _check((2, 3, 6, 5), "contiguous", torch.float16, "lrelu", noise_kind, with_bias, with_strength)
    if noise_kind == "none":
        assert not got["sdzn"].any()


@needs_device
@pytest.mark.parametrize("split", [False, True], ids=["fused", "split"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_seeded_noise_is_draw_noise(layout, split, request):
    # x = 0, linear, strength 1, no bias, s = 1, t = 0: out = (noise - mean) * rstd in every
    # channel, so the kernels' noise comes back as out / rstd + mean, to be draw_noise's, the
    # same in every channel; seeds with high bits set included.
    if split:
        request.getfixturevalue("force_split")
    n_, c_, h_, w_ = 2, 3, 9, 7
    for seed in (0, 2**32 + 5, 2**63 - 1):
        x = torch.zeros(n_, c_, h_, w_, device=DEVICE)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        s, t = torch.ones(n_, c_, device=DEVICE), torch.zeros(n_, c_, device=DEVICE)
        out, stats = adain_triton.forward(x, s, t, None, None, None, "linear", 0.0, 1.0, EPS, seed)
        mean, rstd = (stats.cpu().double()[..., i, None, None] for i in (0, 1))
        drawn = out.cpu().double() / rstd + mean
        expected = ref.draw_noise(seed, n_, h_, w_, dtype=torch.float64).expand(n_, c_, h_, w_)
        torch.testing.assert_close(drawn, expected, rtol=0, atol=2e-5, msg=lambda m: f"seed {seed}: {m}")
        assert (out == out[:, :1]).all(), "every channel must see the same noise"


@needs_device
def test_seed_determines_the_noise():
    # The same seed twice: identical bits, forward and backward (the backward draws the noise
    # again); another seed: other noise. Both paths.
    inp = make_inputs((2, 4, 6, 6), "contiguous", "seed")
    args = _contract_inputs(inp, torch.float32)
    g = torch.randn(2, 4, 6, 6, device=DEVICE)
    a = _run_contract(adain_triton, args, g, "lrelu", 0.2, 1.0)
    b = _run_contract(adain_triton, args, g, "lrelu", 0.2, 1.0)
    c = _run_contract(adain_triton, dict(args, seed=args["seed"] + 1), g, "lrelu", 0.2, 1.0)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.allclose(a["out"], c["out"]) and not torch.allclose(a["sdzn"], c["sdzn"])


@needs_device
def test_int64_offsets(monkeypatch, force_split):
    # Tensors near 2**31 elements take the int64-offset kernels; lower the limit to reach them.
    monkeypatch.setattr(adain_triton, "INDEX_32_LIMIT", 0)
    _check((2, 3, 2, 3), "channels_last", torch.float16, "tanh", "tensor")   # fused (6 pixels)
    _check((2, 3, 5, 7), "contiguous", torch.float16, "lrelu", "seed")       # split


@needs_device
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 5)], ids=["N0", "C0", "H0"])
def test_empty(shape):
    x = torch.randn(shape, device=DEVICE)
    s = torch.ones(shape[:2], device=DEVICE)
    out, stats = adain_triton.forward(x, s, s, None, None, None, "lrelu", 0.2, 1.0, EPS, 3)
    assert out.shape == x.shape and stats.shape == (*shape[:2], 2)
    dx, *sums = adain_triton.backward(x, x, s, None, None, None, stats, "lrelu", 0.2, 1.0, EPS, 3)
    assert dx.shape == x.shape
    for v in sums:
        assert v.shape == shape[:2] and not v.any()


@needs_device
@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("noise_kind, layout", [("seed", "channels_last"), ("tensor", "contiguous")])
def test_public_api_through_autograd_and_double_backward(dtype, noise_kind, layout):
    # The whole path a user takes: the public function on backend='triton', its custom autograd,
    # the parameter-gradient reductions and the math-path double backward, against the oracle.
    check_backend_against_oracle("triton", (2, 5, 6, 7), layout, dtype, "lrelu", noise_kind, device=DEVICE)
    # 1x1 maps: constant planes, rstd = 1/sqrt(eps); out must be exactly style_bias
    check_backend_against_oracle("triton", (3, 70, 1, 1), layout, dtype, "lrelu", noise_kind, device=DEVICE)



@needs_device
@pytest.mark.parametrize("split,layout", [(False, "contiguous"), (True, "channels_last")], ids=["fused", "split"])
def test_bf16_writes_round_to_nearest(split, layout, request):
    # issue 26: out and dx are fp32 values cast to bf16, which compiled Triton rounds to nearest
    # even; the 3.9 interpreter truncates, so there the kernels round explicitly (round_bf16).
    # The kernels compute in fp32 whatever the dtype, so the expectation is the same kernel run in
    # fp32 on the same (bf16-valued) inputs, rounded by torch (to nearest).
    if split:
        request.getfixturevalue("force_split")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(26)
    n, c, h, w = 2, 5, 8, 8
    x = (torch.randn(n, c, h, w, generator=gen) * 2 + 0.5).bfloat16().to(DEVICE, memory_format=fmt)
    g = torch.randn(n, c, h, w, generator=gen).bfloat16().to(DEVICE, memory_format=fmt)
    noise = torch.randn(n, 1, h, w, generator=gen).bfloat16().to(DEVICE)
    s, t = (torch.randn(n, c, generator=gen).to(DEVICE) for _ in range(2))
    ns, b = (torch.randn(c, generator=gen).to(DEVICE) for _ in range(2))
    scalars = dict(act="lrelu", alpha=0.2, gain=1.4, eps=EPS, seed=-1)
    assert adain_triton.plan(c, h * w, layout == "channels_last")["fused"] != split
    out, stats = adain_triton.forward(x, s, t, noise, ns, b, **scalars)
    out32, stats32 = adain_triton.forward(x.float(), s, t, noise.float(), ns, b, **scalars)
    assert out.dtype == torch.bfloat16 and torch.equal(stats, stats32)
    assert_rounded_to_nearest(out, out32, "forward's out")
    dx = adain_triton.backward(g, x, s, noise, ns, b, stats, **scalars)[0]
    dx32 = adain_triton.backward(g.float(), x.float(), s, noise.float(), ns, b, stats, **scalars)[0]
    assert dx.dtype == torch.bfloat16
    assert_rounded_to_nearest(dx, dx32, "backward's dx")


def test_launcher_rejects_bad_arguments():
    x = torch.randn(2, 4, 3, 3, device=DEVICE)
    s = torch.ones(2, 4, device=DEVICE)
    noise = torch.randn(2, 1, 3, 3, device=DEVICE)
    fwd = adain_triton.forward
    with pytest.raises(ValueError, match="contiguous or channels_last"):
        fwd(x.transpose(2, 3), s, s, None, None, None, "lrelu", 0.2, 1.0, EPS, -1)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        fwd(x.double(), s, s, None, None, None, "lrelu", 0.2, 1.0, EPS, -1)
    with pytest.raises(ValueError, match="noise or a seed"):
        fwd(x, s, s, noise, None, None, "lrelu", 0.2, 1.0, EPS, 5)
    with pytest.raises(ValueError, match="noise must be"):
        fwd(x, s, s, noise[:, :, :2], None, None, "lrelu", 0.2, 1.0, EPS, -1)
    with pytest.raises(ValueError, match="ns must be"):
        fwd(x, s, s, noise, torch.ones(4, device=DEVICE, dtype=torch.float16), None, "lrelu", 0.2, 1.0, EPS, -1)
    with pytest.raises(ValueError, match="out must have x's shape"):
        fwd(x, s, s, None, None, None, "lrelu", 0.2, 1.0, EPS, -1,
            out=torch.empty_like(x, memory_format=torch.channels_last))
    _, stats = fwd(x, s, s, None, None, None, "lrelu", 0.2, 1.0, EPS, -1)
    with pytest.raises(ValueError, match="g must have x's shape"):
        adain_triton.backward(x.half(), x, s, None, None, None, stats, "lrelu", 0.2, 1.0, EPS, -1)


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = adain_triton.aot_specs()


@pytest.fixture(scope="module")
def aot_results():
    from ganfast.testing.triton_aot import compile_by_name
    return compile_by_name(AOT_SPECS, AOT_ARCHS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOT_ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("spec", AOT_SPECS, ids=spec_id)
def test_aot_compiles_within_resources(aot_results, spec, arch, record_property):
    result = reported(aot_results[(spec["name"], arch)], record_property)
    assert result.problems(vector_io=spec["vector_io"]) == [], result.row()
