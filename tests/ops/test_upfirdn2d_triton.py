"""upfirdn2d on the Triton backend: the kernel contract (run) of ganfast/ops/upfirdn2d/reference.py.

(a) Semantics: the kernel runs on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every output is held to the accuracy
    rule against the float64 reference: error at most 2x the reference's own error in the dtype.
(b) Ahead of time: every tile shape the launcher picks, and StyleGAN2's filters and factors,
    compile for sm_80 and sm_90 without spills, within shared memory, with vector stores where
    rows allow them (slow: one compile subprocess).
"""
from __future__ import annotations

import random
import re

import pytest
import torch

pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.upfirdn2d import triton as ufd_triton  # noqa: E402
from ganfast.ops.upfirdn2d.reference import output_size, setup_filter, upfirdn2d_ref  # noqa: E402
from ganfast.testing import assert_rounded_to_nearest, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")

STYLEGAN_FILTER = [1, 3, 3, 1]   # setup_filter makes it the normalized 4x4 outer product


def _check(shape, f, up=(1, 1), down=(1, 1), padding=(0, 0, 0, 0), flip_filter=False, gain=1.0,
           dtype=torch.float32, seed=0) -> torch.Tensor:
    """Triton's run on x of `shape` (random, seeded) and filter f (a [fh, fw] float32 tensor, or a
    shape to draw one), against the float64 reference under the accuracy rule; returns the output."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    if not isinstance(f, torch.Tensor):
        f = torch.randn(f, generator=gen, dtype=torch.float64).to(torch.float32)
    (upx, upy), (downx, downy) = up, down
    got = ufd_triton.run(x.to(DEVICE), f.to(DEVICE), upx, upy, downx, downy, *padding, flip_filter, gain)
    oracle = upfirdn2d_ref(x.double(), f.double(), list(up), list(down), list(padding), flip_filter, gain)
    same = upfirdn2d_ref(x, f, list(up), list(down), list(padding), flip_filter, gain)
    expected_shape = (*shape[:2], *output_size(shape[2], shape[3], f, list(up), list(down), list(padding)))
    assert tuple(got.shape) == expected_shape == tuple(oracle.shape), (tuple(got.shape), expected_shape)
    assert got.dtype == dtype and got.is_contiguous() and got.device.type == torch.device(DEVICE).type
    what = (f"{tuple(shape)} f{list(f.shape)} up {list(up)} down {list(down)} pad {list(padding)} "
            f"flip={flip_filter} gain={gain}")
    assert_matches_oracle(got, oracle, same, name=what)   # also: every element finite
    return got


# ---- (a) semantics under the interpreter (or on a GPU) ----

# (x shape, filter, up, down, padding [x0, x1, y0, y1], gain): one comment per case.
CASES = [
    pytest.param((2, 3, 8, 8), setup_filter(STYLEGAN_FILTER), (2, 2), (1, 1), (2, 1, 2, 1), 4.0,
                 id="stylegan2-up2"),        # upsample2d: 4x4 filter, 2 phases a row and a column
    pytest.param((2, 3, 8, 8), setup_filter(STYLEGAN_FILTER), (1, 1), (2, 2), (1, 1, 1, 1), 1.0,
                 id="stylegan2-down2"),      # downsample2d: every phase the same
    pytest.param((2, 3, 9, 9), setup_filter(STYLEGAN_FILTER), (1, 1), (1, 1), (1, 1, 1, 1), 4.0,
                 id="stylegan2-blur"),       # conv2d_resample's blur after a transposed conv
    pytest.param((1, 2, 5, 7), (3, 5), (3, 2), (2, 3), (2, 1, -1, 3), 1.3,
                 id="up-and-down"),          # up and down together, per axis, a cropped edge
    pytest.param((2, 2, 6, 5), (4, 3), (2, 1), (1, 2), (1, 2, 0, 1), 1.0,
                 id="per-axis-2x1"),         # x upsampled, y downsampled
    pytest.param((2, 1, 6, 5), (3, 2), (1, 1), (1, 1), (-1, -2, 0, -1), 1.0,
                 id="crop"),                 # negative padding crops
    pytest.param((1, 1, 2, 3), (2, 2), (1, 1), (1, 1), (-3, 5, 1, 1), 1.0,
                 id="crop-past-the-edge"),   # a crop wider than the image cuts into padding
    pytest.param((2, 3, 5, 7), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 0.5,
                 id="1-tap"),                # a 1x1 filter: a scale
    pytest.param((2, 3, 5, 7), (1, 1), (2, 3), (1, 1), (1, 0, 0, 2), 1.0,
                 id="1-tap-up"),             # zero insertion alone (taps past the filter masked)
    pytest.param((2, 2, 6, 7), (2, 5), (1, 1), (1, 1), (2, 2, 1, 0), 1.0,
                 id="non-square"),           # fh != fw
    pytest.param((3, 2, 1, 1), setup_filter(STYLEGAN_FILTER), (2, 2), (1, 1), (2, 1, 2, 1), 4.0,
                 id="1x1-map-up2"),          # a one-pixel input
    pytest.param((2, 3, 4, 4), setup_filter(STYLEGAN_FILTER), (2, 2), (1, 1), (2, 1, 2, 1), 4.0,
                 id="4x4-map-up2"),          # StyleGAN's first block
    pytest.param((2, 3, 2, 2), setup_filter(STYLEGAN_FILTER), (1, 1), (2, 2), (1, 1, 1, 1), 1.0,
                 id="1x1-output"),           # down to one pixel: the 1-column tile
    pytest.param((1, 2, 3, 3), (7, 7), (1, 1), (1, 1), (5, 5, 5, 5), 1.0,
                 id="filter-larger-than-image"),  # every output's taps hang over the image edges
    pytest.param((2, 3, 13, 11), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1.0,
                 id="odd-13x11"),            # sizes no block divides
    pytest.param((1, 2, 3, 65), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1), 1.0,
                 id="130-wide"),             # two column blocks, the second nearly empty
    pytest.param((3, 7, 5, 5), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1), 1.0,
                 id="planes-straddle-tiles"),  # 21 planes of 5 rows a phase over 64-row tiles
    pytest.param((1, 1, 6, 9), (4, 6), (4, 3), (1, 1), (3, 2, 1, 3), 1.0,
                 id="batch1-up4x3"),         # batch 1, factors past 2, taps past the filter
    pytest.param((1, 1, 4, 4), (12, 12), (2, 2), (1, 1), (6, 5, 6, 5), 1.0,
                 id="12x12-up2"),            # a StyleGAN3-sized filter
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,f,up,down,padding,gain", CASES)
def test_matches_reference(shape, f, up, down, padding, gain, dtype):
    _check(shape, f, up, down, padding, False, gain, dtype)




@needs_device
def test_bf16_writes_round_to_nearest():
    # issue 26: a bf16 output is the fp32 sum rounded to nearest even, as the compiled cast does;
    # the Triton 3.9 interpreter truncates, so there the kernel rounds explicitly (round_bf16).
    # Exact expectations: the float64 reference on the same bf16 x (and bf16 dy for the backward,
    # itself an upfirdn2d launch), with a random filter so that the sums need rounding.
    from ganfast.ops.upfirdn2d import upfirdn2d
    gen = torch.Generator().manual_seed(26)
    x = torch.randn(2, 3, 8, 7, generator=gen).bfloat16()
    f = torch.rand(4, 3, generator=gen) + 0.1
    dy = torch.randn(2, 3, 16, 15, generator=gen).bfloat16()
    up, pad, gain = [2, 2], [1, 2, 2, 1], 1.7
    xd = x.to(DEVICE).requires_grad_()
    y = upfirdn2d(xd, f.to(DEVICE), up=up, padding=pad, gain=gain, backend="triton")
    (dx,) = torch.autograd.grad(y, xd, dy.to(DEVICE))
    assert y.dtype == dx.dtype == torch.bfloat16 and y.shape == dy.shape

    def ref64(t, filt):
        return upfirdn2d_ref(t, filt.double(), up, [1, 1], pad, False, gain)

    x64 = x.double().requires_grad_()
    exact = ref64(x64, f)
    (exact_dx,) = torch.autograd.grad(exact, x64, dy.double())
    xa = x.double().abs().requires_grad_()
    magnitude = ref64(xa, f.abs())
    (magnitude_dx,) = torch.autograd.grad(magnitude, xa, dy.double().abs())
    assert_rounded_to_nearest(y, exact, "forward", magnitude)
    assert_rounded_to_nearest(dx, exact_dx, "backward's dx", magnitude_dx)

@needs_device
@pytest.mark.parametrize("flip_filter", [False, True])
def test_flip_filter(flip_filter):
    # An asymmetric filter tells convolution from correlation: both against the reference, and
    # flip_filter=True with f equals flip_filter=False with f flipped.
    f = torch.arange(1.0, 13.0).reshape(3, 4) / 78
    got = _check((2, 3, 7, 6), f, (2, 1), (1, 2), (2, 1, 0, 2), flip_filter)
    twin = ufd_triton.run(torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(0),
                                      dtype=torch.float64).float().to(DEVICE),
                          f.flip([0, 1]).contiguous().to(DEVICE), 2, 1, 1, 2, 2, 1, 0, 2, not flip_filter, 1.0)
    torch.testing.assert_close(got, twin, rtol=1e-6, atol=1e-6)


def _random_config(seed: int) -> dict:
    """A random upfirdn2d with a non-empty output: small maps, any factors 1-4, 1-7 taps, paddings
    from crops to wide margins."""
    rng = random.Random(seed)
    while True:
        shape = (rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 12), rng.randint(1, 12))
        fh, fw = rng.randint(1, 7), rng.randint(1, 7)
        up = (rng.randint(1, 4), rng.randint(1, 4))
        down = (rng.randint(1, 4), rng.randint(1, 4))
        padding = tuple(rng.randint(-3, 6) for _ in range(4))
        out_h, out_w = output_size(shape[2], shape[3], torch.empty(fh, fw), list(up), list(down), list(padding))
        if out_h >= 1 and out_w >= 1:
            return dict(shape=shape, f=(fh, fw), up=up, down=down, padding=padding, flip_filter=rng.random() < 0.5,
                        gain=rng.choice([1.0, 0.5, 4.0]), dtype=DTYPES[seed % 3], seed=seed)


@needs_device
@pytest.mark.parametrize("seed", range(30))
def test_random_configurations(seed):
    _check(**_random_config(seed))


@needs_device
def test_int64_offsets(monkeypatch):
    # Tensors near 2**31 elements take the int64-offset kernel; lower the limit to reach it.
    monkeypatch.setattr(ufd_triton, "INDEX_32_LIMIT", 0)
    _check((2, 3, 5, 6), setup_filter(STYLEGAN_FILTER), (2, 2), (1, 1), (2, 1, 2, 1), gain=4.0, dtype=torch.float16)
    _check((1, 2, 7, 5), (3, 2), (1, 3), (2, 1), (-1, 2, 3, 0), flip_filter=True)


@needs_device
def test_empty_inputs():
    f = setup_filter(STYLEGAN_FILTER).to(DEVICE)
    out = ufd_triton.run(torch.empty(0, 3, 4, 4, device=DEVICE), f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    assert out.shape == (0, 3, 8, 8)
    # no pixels, only padding: every output is 0
    out = ufd_triton.run(torch.empty(2, 3, 0, 4, device=DEVICE), f, 1, 1, 1, 1, 2, 2, 3, 3, False, 1.0)
    assert out.shape == (2, 3, 3, 5) and not out.any()


def test_launcher_rejects_bad_arguments():
    x = torch.randn(2, 3, 4, 4, device=DEVICE)
    f = setup_filter(STYLEGAN_FILTER).to(DEVICE)
    run = ufd_triton.run
    with pytest.raises(ValueError, match="contiguous"):
        run(x.transpose(2, 3), f, 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        run(x.double(), f, 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="float32"):
        run(x, f.double(), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match=r"\[fh, fw\]"):
        run(x, f[0], 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="factors"):
        run(x, f, 0, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="empty"):
        run(x, f, 1, 1, 1, 1, -4, 0, 0, 0, False, 1.0)


def test_every_tile_shape_is_compiled_ahead_of_time():
    # aot_specs claims every tile shape the launcher can pick; plan depends on the output width only.
    picked = {ufd_triton.plan(w) for w in range(1, 4 * ufd_triton.MAX_BLOCK_W + 1)}
    compiled = {(s["constexprs"]["BLOCK_R"], s["constexprs"]["BLOCK_W"]) for s in ufd_triton.aot_specs()}
    assert picked <= compiled, picked - compiled


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = ufd_triton.aot_specs()
# A store of at least this many bytes, in PTX: v2.b32 is 8, v4.b32 and v2.b64 are 16.
_STORE_OF = {8: re.compile(r"\bst\.global(?:\.[\w:]+)*\.(?:v2\.b32|v4\.b16|v4\.b32|v2\.b64)\b"),
             16: re.compile(r"\bst\.global(?:\.[\w:]+)*\.(?:v4\.b32|v2\.b64)\b")}


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
    want = spec["store_bytes"]
    if want:
        assert _STORE_OF[want].search(result.ptx), f"no {want}-byte vector stores: {result.row()}"
