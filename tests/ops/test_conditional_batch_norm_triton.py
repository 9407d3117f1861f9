"""conditional_batch_norm on the Triton backend: the kernel contract (channel_stats, forward_apply,
backward_sums, backward_dx) of ganfast/ops/conditional_batch_norm/reference.py.

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every result is held to the accuracy
    rule against the reference in float64 on the same rounded inputs: error at most 2x the error
    of the reference run in the same dtype. Statistics are checked on a channel offset by 1000
    sigma (a sum of squares would lose every digit) and on a constant one; channel_stats' segments
    and the combine's blocks are forced small to reach several programs per channel.
(b) Ahead of time: every launch configuration compiles for sm_80 and sm_90 without spills, within
    shared memory, with 128-bit global accesses where planes allow them (slow: one compile
    subprocess).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.conditional_batch_norm import reference as ref  # noqa: E402
from ganfast.ops.conditional_batch_norm import triton as cbn_triton  # noqa: E402
from ganfast.testing import assert_rounded_to_nearest, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"
EPS = 1e-5
OFFSET_CHANNEL = 1      # x[:, 1] = 1000 + N(0, 1) where asked (the channel exists in every shape below)
CONSTANT_CHANNEL = 0    # x[:, 0] = 3.5 where asked
CONSTANT = 3.5

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")

# [N, C, H, W]: one comment per case.
SHAPES = [
    pytest.param((2, 3, 1, 1), id="1x1"),                # one pixel a plane: 16-lane rows, 15 lanes masked
    pytest.param((4, 5, 4, 4), id="4x4-odd-c"),          # BigGAN's first block: many planes a program, odd C
    pytest.param((1, 3, 7, 9), id="batch1-63px"),        # batch 1; 63 pixels: a 64-lane row, one masked
    pytest.param((3, 7, 6, 5), id="odd-c-30px"),         # odd C and a plane size no block divides
    pytest.param((2, 2, 50, 41), id="2050px"),           # planes past MAX_BLOCK_P: 2 tiles a plane, the last
                                                         # nearly empty; 4 segments a channel
]


def _inputs(shape, dtype, seed=0, offset=False, constant=False) -> dict:
    """The contract's arguments: x and dy in dtype, mean and rstd x's batch statistics (the
    forward's) and gain, bias, c1, c2 random, all fp32 and on DEVICE."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    x = r(*shape) * 2 + 0.5
    if offset:
        x[:, OFFSET_CHANNEL] = 1000 + r(n, h, w)
    if constant:
        x[:, CONSTANT_CHANNEL] = CONSTANT
    x = x.to(dtype)
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    small = dict(mean=mean, rstd=torch.rsqrt(var + EPS), gain=1 + 0.3 * r(n, c), bias=0.3 * r(n, c),
                 c1=0.2 * r(c), c2=0.2 * r(c))
    return dict(x=x.to(DEVICE), dy=r(*shape).to(dtype).to(DEVICE),
                **{k: v.to(device=DEVICE, dtype=torch.float32) for k, v in small.items()})


def _f64(args: dict) -> dict:
    return {k: v.to(device="cpu", dtype=torch.float64) for k, v in args.items()}


def _cpu(args: dict) -> dict:
    return {k: v.cpu() for k, v in args.items()}


_ARGS = {"channel_stats": ("x",), "forward_apply": ("x", "mean", "rstd", "gain", "bias"),
         "backward_sums": ("dy", "x", "mean", "rstd", "gain", "bias"),
         "backward_dx": ("dy", "x", "mean", "rstd", "gain", "bias", "c1", "c2")}


def _call(module, fn: str, args: dict, relu: bool):
    a = [args[k] for k in _ARGS[fn]]
    if fn == "channel_stats":
        return module.channel_stats(*a)
    if fn == "backward_dx":
        return module.backward_dx(*a[:6], relu, *a[6:])
    return getattr(module, fn)(*a, relu)


def _check(fn: str, args: dict, relu: bool = False, what: str = "") -> torch.Tensor:
    """Triton's fn against the float64 reference on the same inputs, under the accuracy rule
    (channel_stats: the mean and M2 columns each on their own scale); returns Triton's result."""
    got = _call(cbn_triton, fn, args, relu)
    oracle = _call(ref, fn, _f64(args), relu)
    same = _call(ref, fn, _cpu(args), relu)
    assert got.dtype == same.dtype and got.is_contiguous() and got.device.type == torch.device(DEVICE).type
    assert got.shape == oracle.shape, (tuple(got.shape), tuple(oracle.shape))
    name = f"{fn} {tuple(args['x'].shape)} {args['x'].dtype} relu={relu} {what}"
    if fn == "channel_stats":
        for col, label in ((0, "mean"), (1, "M2")):
            assert_matches_oracle(got[:, col], oracle[:, col], same[:, col], name=f"{name} {label}")
    else:
        assert_matches_oracle(got, oracle, same, name=name)   # also: every element finite
    return got


# ---- (a) semantics under the interpreter (or on a GPU) ----

@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_channel_stats(shape, dtype):
    _check("channel_stats", _inputs(shape, dtype))


@needs_device
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("fn", ["forward_apply", "backward_sums", "backward_dx"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_plane_passes(shape, dtype, fn, relu):
    _check(fn, _inputs(shape, dtype, seed=1), relu)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channel_stats_offset_and_constant_channels(dtype):
    # Channel 1 sits 1000 sigma from 0 (sums of x and x^2 would leave nothing of M2 in fp32) and
    # channel 0 is constant: M2 exactly 0 and the mean exact, whatever the pivot.
    args = _inputs((3, 4, 5, 6), dtype, seed=2, offset=True, constant=True)
    got = _check("channel_stats", args, what="offset+constant")
    assert got[CONSTANT_CHANNEL].tolist() == [CONSTANT, 0.0]
    var = got[OFFSET_CHANNEL, 1] / (3 * 5 * 6)
    assert 0.05 < float(var) < 20, f"variance of the offset channel: {float(var)}"


@needs_device
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("fn", ["forward_apply", "backward_sums", "backward_dx"])
def test_plane_passes_offset_and_constant_channels(fn, relu):
    # The normalization subtracts a mean of 1000 from x before scaling (x * s + t would not); on
    # the constant channel xhat is 0 everywhere (rstd = 1 / sqrt(eps)).
    _check(fn, _inputs((3, 4, 5, 6), torch.float32, seed=3, offset=True, constant=True), relu, "offset+constant")


@needs_device
def test_relu_keeps_nan():
    # relu(NaN) is NaN, as torch.relu (a max(z, 0) would return 0 on the GPU); the rest unharmed.
    args = _inputs((2, 3, 4, 4), torch.float32, seed=7)
    args["x"][1, 2, 3, 1] = float("nan")
    y = cbn_triton.forward_apply(args["x"], args["mean"], args["rstd"], args["gain"], args["bias"], True)
    expected = _call(ref, "forward_apply", _f64(args), True)
    assert torch.equal(y.isnan().cpu(), expected.isnan()) and y.isnan().sum() == 1
    finite = ~expected.isnan()
    torch.testing.assert_close(y.cpu()[finite], expected[finite].float(), rtol=1e-5, atol=1e-5)



@needs_device
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_bf16_writes_round_to_nearest(relu):
    # issue 26: y and dx are fp32 values cast to bf16, which compiled Triton rounds to nearest
    # even; the 3.9 interpreter truncates, so there the kernels round explicitly (round_bf16).
    # Exact expectations: the formulas in float64 on the same bf16 x, dy and fp32 parameters.
    args = _inputs((4, 5, 4, 4), torch.bfloat16, seed=26)
    a = _f64(args)
    xhat = (a["x"] - a["mean"][:, None, None]) * a["rstd"][:, None, None]
    scaled = xhat * a["gain"][:, :, None, None]
    z = scaled + a["bias"][:, :, None, None]
    y = z.clamp(min=0) if relu else z
    y_got = cbn_triton.forward_apply(*(args[k] for k in _ARGS["forward_apply"][:5]), relu)
    assert_rounded_to_nearest(y_got, y, "forward_apply's y", scaled.abs() + a["bias"].abs()[:, :, None, None])
    dz = a["dy"] * (z > 0) if relu else a["dy"]
    rstd = a["rstd"][:, None, None]
    terms = (rstd * a["gain"][:, :, None, None] * dz, rstd * a["c1"][:, None, None],
             xhat * rstd * a["c2"][:, None, None])
    dx_got = cbn_triton.backward_dx(*(args[k] for k in _ARGS["backward_dx"][:6]), relu, args["c1"], args["c2"])
    assert_rounded_to_nearest(dx_got, terms[0] - terms[1] - terms[2], "backward_dx's dx",
                              sum(t.abs() for t in terms))


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiny tiles: 16-pixel blocks (several a plane), 64-element tiles (4 channels a stats tile),
    segments for 8 stats programs, and combine blocks of 2 segments (several blocks to merge)."""
    monkeypatch.setattr(cbn_triton, "TILE", 64)
    monkeypatch.setattr(cbn_triton, "MAX_BLOCK_P", 16)
    monkeypatch.setattr(cbn_triton, "TARGET_PROGRAMS", 8)
    monkeypatch.setattr(cbn_triton, "COMBINE_BLOCK_C", 4)
    monkeypatch.setattr(cbn_triton, "COMBINE_BLOCK_S", 2)


# (shape, (pixel tiles a plane, tiles a segment, segments)) under small_tiles: one comment per case.
SMALL_TILE_SHAPES = [
    pytest.param((3, 6, 7, 5), (3, 3, 3), id="35px"),    # a segment a plane (the last tile 3 of 16
                                                         # pixels); 2 channel blocks; the last combine block half full
    pytest.param((5, 6, 5, 5), (2, 3, 4), id="25px"),    # segments start mid-plane; the last holds one tile
    pytest.param((5, 3, 4, 4), (1, 1, 5), id="4x4"),     # one tile a plane: a segment a sample, 3 combine blocks
    pytest.param((1, 5, 9, 9), (6, 2, 3), id="batch1"),  # batch 1: the segments split one plane
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,split", SMALL_TILE_SHAPES)
def test_channel_stats_several_segments(small_tiles, shape, split, dtype):
    n, c, h, w = shape
    cfg = cbn_triton.segments(n, c, h * w)
    assert (cfg["num_pt"], cfg["iters"], cfg["num_segments"]) == split, cfg
    _check("channel_stats", _inputs(shape, dtype, seed=4, offset=True, constant=True), what="small tiles")


@needs_device
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("fn", ["forward_apply", "backward_sums", "backward_dx"])
def test_plane_passes_several_tiles_a_plane(small_tiles, fn, relu):
    _check(fn, _inputs((3, 6, 7, 5), torch.float16, seed=5, offset=True), relu, "small tiles")


@needs_device
@pytest.mark.parametrize("fn", list(_ARGS))
def test_int64_offsets(monkeypatch, fn):
    # Tensors near 2**31 elements take the int64-offset kernels; lower the limit to reach them.
    monkeypatch.setattr(cbn_triton, "INDEX_32_LIMIT", 0)
    monkeypatch.setattr(cbn_triton, "MAX_BLOCK_P", 16)   # several tiles a plane, several segments
    assert cbn_triton.segments(2, 3, 35)["INDEX_64"]
    _check(fn, _inputs((2, 3, 7, 5), torch.bfloat16, seed=6, offset=True), relu=True, what="int64")


@needs_device
def test_empty_inputs():
    def args(shape):
        n, c = shape[:2]
        z = lambda *s: torch.zeros(*s, device=DEVICE)  # noqa: E731
        return dict(x=z(*shape), dy=z(*shape), mean=z(c), rstd=z(c), gain=z(n, c), bias=z(n, c), c1=z(c), c2=z(c))

    a = args((0, 3, 4, 4))                                       # no samples
    assert cbn_triton.channel_stats(a["x"]).isnan().all() and cbn_triton.channel_stats(a["x"]).shape == (3, 2)
    assert _call(cbn_triton, "forward_apply", a, True).shape == (0, 3, 4, 4)
    assert _call(cbn_triton, "backward_sums", a, True).shape == (0, 3, 2)
    assert _call(cbn_triton, "backward_dx", a, True).shape == (0, 3, 4, 4)
    a = args((2, 3, 0, 4))                                       # no pixels: sums of nothing are 0
    assert cbn_triton.channel_stats(a["x"]).isnan().all()
    sums = _call(cbn_triton, "backward_sums", a, False)
    assert sums.shape == (2, 3, 2) and not sums.any()
    assert cbn_triton.channel_stats(args((2, 0, 4, 4))["x"]).shape == (0, 2)   # no channels


def test_launcher_rejects_bad_arguments():
    a = _inputs((2, 3, 4, 4), torch.float32)
    t = cbn_triton
    with pytest.raises(ValueError, match="x must be a contiguous"):
        t.channel_stats(a["x"].transpose(2, 3))
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        t.channel_stats(a["x"].double())
    with pytest.raises(ValueError, match="mean must be a contiguous \\[3\\] float32"):
        t.forward_apply(a["x"], a["mean"].double(), a["rstd"], a["gain"], a["bias"], False)
    with pytest.raises(ValueError, match="gain must be a contiguous \\[2, 3\\] float32"):
        t.forward_apply(a["x"], a["mean"], a["rstd"], a["gain"].t(), a["bias"], False)
    with pytest.raises(ValueError, match="dy must be like x"):
        t.backward_sums(a["dy"].half(), a["x"], a["mean"], a["rstd"], a["gain"], a["bias"], True)
    with pytest.raises(ValueError, match="c2 must be"):
        t.backward_dx(a["dy"], a["x"], a["mean"], a["rstd"], a["gain"], a["bias"], True, a["c1"], a["c2"][:2])


@pytest.mark.parametrize("shape", [(32, 192, 64, 64), (256, 64, 128, 128), (32, 1024, 4, 4), (8, 16, 4, 4),
                                   (1, 3, 300, 300)], ids=lambda s: "x".join(map(str, s)))
def test_stats_segments_cover_every_tile(shape):
    # Segments hold whole tiles, none empty, together every tile once; programs reach
    # TARGET_PROGRAMS (an H100 wave) when there are tiles enough.
    n, c, h, w = shape
    cfg = cbn_triton.segments(n, c, h * w)
    s, iters, tiles = cfg["num_segments"], cfg["iters"], cfg["num_tiles"]
    assert (s - 1) * iters < tiles <= s * iters, cfg
    programs = cfg["num_cb"] * s
    assert programs >= min(cbn_triton.TARGET_PROGRAMS // 2, cfg["num_cb"] * min(tiles, cbn_triton.MAX_SEGMENTS)), cfg


def test_every_tile_shape_is_compiled_ahead_of_time():
    # aot_specs claims every tile shape the launchers can pick; plan depends on the plane size only.
    picked = {cbn_triton.plan(hw) for hw in range(1, 4 * cbn_triton.MAX_BLOCK_P + 1)}
    for kernel in ("_stats_partials_kernel", "_forward_kernel", "_backward_sums_kernel", "_backward_dx_kernel"):
        for dtype in ("fp16", "bf16", "fp32"):
            compiled = {(s["constexprs"].get("BLOCK_R", s["constexprs"].get("BLOCK_C")), s["constexprs"]["BLOCK_P"])
                        for s in AOT_SPECS if s["kernel"].endswith(kernel) and f" {dtype} " in s["name"]}
            assert picked <= compiled, (kernel, dtype, picked - compiled)


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = cbn_triton.aot_specs()


@pytest.fixture(scope="module")
def aot_results():
    from ganfast.testing.triton_aot import compile_by_name
    return compile_by_name(AOT_SPECS, AOT_ARCHS)


def test_aot_spec_names_are_unique():
    names = [s["name"] for s in AOT_SPECS]
    assert len(names) == len(set(names))


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOT_ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("spec", AOT_SPECS, ids=spec_id)
def test_aot_compiles_within_resources(aot_results, spec, arch, record_property):
    result = reported(aot_results[(spec["name"], arch)], record_property)
    assert result.problems() == [], result.row()
    if spec["vector_loads"]:
        assert triton_aot.has_vector_loads(result.ptx), f"no 128-bit loads: {result.row()}"
    if spec["vector_stores"]:
        assert triton_aot.has_vector_stores(result.ptx), f"no 128-bit stores: {result.row()}"
