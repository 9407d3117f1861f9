"""upfirdn2d's CPU kernel (ganfast.ops.upfirdn2d.cpu.kernel, csrc/upfirdn2d/) against the float64
reference on the same (rounded) inputs, under the accuracy rule (ganfast/testing/accuracy.py), with
NaN-poisoned outputs so an unwritten element fails; and its argument checks.

The CPU kernel runs the per-pixel tap loop the CUDA kernels run (common/upfirdn2d_math.h) on its
border pixels and the same tap arithmetic everywhere, so these cases also check the CUDA math.
tests/ops/test_upfirdn2d_gpu.py runs the same cases on the CUDA kernel.
"""
from __future__ import annotations

import importlib
import random
from typing import Callable, Sequence

import pytest
import torch

import ganfast
from ganfast.ops.upfirdn2d.reference import setup_filter, upfirdn2d_ref
from ganfast.testing import assert_matches_oracle, poison_like

# (name, x shape [N, C, H, W], up [x, y], down [x, y], padding [x0, x1, y0, y1], filter, gain).
# filter: "fir4" = setup_filter([1, 3, 3, 1]) (StyleGAN2's 4x4), else a random [fh, fw] shape.
CASES = [
    # StyleGAN2 upsample2d: the 4x4 [1, 3, 3, 1] filter, padding [2, 1, 2, 1], gain up^2 = 4
    ("stylegan_up2", (2, 3, 8, 8), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # StyleGAN2 downsample2d: the 4x4 filter, padding [1, 1, 1, 1]
    ("stylegan_down2", (2, 3, 8, 8), (1, 1), (2, 2), (1, 1, 1, 1), "fir4", 1.0),
    # StyleGAN2's blur before a strided conv (conv2d_resample's down path): filter only
    ("stylegan_blur", (2, 3, 9, 8), (1, 1), (1, 1), (2, 2, 2, 2), "fir4", 1.0),
    # up and down in one call (a rational resampling), non-square filter
    ("up3_down2", (1, 2, 7, 9), (3, 3), (2, 2), (2, 2, 1, 3), (5, 4), 1.5),
    # per-axis factors: x and y differ in up, down, padding and taps
    ("per_axis", (1, 2, 5, 7), (2, 3), (3, 1), (1, 2, 0, 3), (3, 2), 1.0),
    # negative padding crops before filtering
    ("negative_padding", (2, 1, 6, 5), (1, 1), (1, 1), (-1, -2, 0, -1), (3, 2), 1.0),
    # a crop wider than the image on one side: cuts into the padding of the other
    ("crop_past_edge", (1, 2, 2, 3), (1, 1), (1, 1), (-3, 5, 1, 1), (2, 2), 1.0),
    # negative padding with upsampling: the first output lands between input pixels
    ("crop_upsampled", (1, 2, 6, 6), (2, 2), (1, 1), (-3, -1, -1, -2), (4, 4), 2.0),
    # 1-tap filter: a scale (with gain)
    ("one_tap", (2, 3, 5, 4), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2.5),
    # 1-tap filter with down 2: keeps every other pixel
    ("one_tap_down2", (2, 3, 9, 8), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1.0),
    # 1-tap filter with up 2: zero insertion only (half the outputs read no pixel)
    ("one_tap_up2", (1, 2, 3, 4), (2, 2), (1, 1), (0, 1, 0, 1), (1, 1), 1.0),
    # non-square filter, taps not a multiple of up
    ("non_square_filter", (2, 2, 6, 5), (2, 2), (1, 1), (1, 2, 2, 1), (3, 5), 1.0),
    # 1x1 input upsampled: every output is a border output
    ("input_1x1", (2, 4, 1, 1), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # 1x1 output: the filter covers the whole image
    ("output_1x1", (2, 3, 4, 4), (1, 1), (1, 1), (0, 0, 0, 0), (4, 4), 1.0),
    # StyleGAN's 4x4 first block, many channels
    ("input_4x4", (2, 64, 4, 4), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # odd sizes that divide nothing, odd channel count
    ("odd_sizes", (3, 5, 7, 11), (1, 1), (2, 2), (1, 2, 0, 1), (3, 3), 1.0),
    # batch 1, one channel
    ("batch1", (1, 1, 9, 6), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # a filter larger than the image (padded to keep outputs)
    ("filter_larger_than_image", (1, 2, 3, 2), (1, 1), (1, 1), (5, 5, 6, 6), (7, 6), 1.0),
    # factors beyond the kernels' specialised 1 and 2 (the runtime-stride paths)
    ("large_factors", (1, 2, 6, 7), (4, 3), (3, 4), (3, 2, 4, 1), (6, 5), 1.0),
    # a row too narrow for an interior: every output of a row reads past an edge
    ("no_interior", (1, 2, 5, 2), (1, 1), (1, 1), (3, 3, 1, 1), (3, 6), 1.0),
    # long rows: the vectorized interior loop runs many iterations, the border few
    ("long_rows", (1, 2, 5, 300), (1, 1), (1, 1), (1, 2, 1, 2), "fir4", 1.0),
    # one plane, tall: one plane is split into several row blocks over the threads
    ("tall_single_plane", (1, 1, 257, 33), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
]
# The cases run in every dtype (the rest run in float64, plus float32 in the random loop).
DTYPE_CASES = ["stylegan_up2", "stylegan_down2", "stylegan_blur", "up3_down2", "per_axis", "negative_padding",
               "input_4x4", "odd_sizes", "large_factors", "long_rows"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_filter(spec, gen: torch.Generator) -> torch.Tensor:
    """A float64 [fh, fw] filter: StyleGAN2's 4x4 for "fir4", else random of shape spec."""
    if spec == "fir4":
        return setup_filter([1, 3, 3, 1]).double()
    return torch.randn(*spec, generator=gen, dtype=torch.float64)


def check_kernel(run: Callable, shape: Sequence[int], f: torch.Tensor, up, down, pad, flip_filter: bool, gain: float,
                 dtype: torch.dtype, device: str = "cpu", seed: int = 0, name: str = "") -> None:
    """run (a kernel contract) on random x [shape] in dtype against the float64 reference on the same
    rounded x and filter, the kernel writing into a NaN-filled out; the reference in dtype sets the budget."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    f = f.to(device=device, dtype=acc_dtype(dtype))
    oracle = upfirdn2d_ref(x.double(), f.double(), list(up), list(down), list(pad), flip_filter, gain)
    same = None if dtype == torch.float64 else upfirdn2d_ref(x, f, list(up), list(down), list(pad), flip_filter, gain)
    out = poison_like(torch.empty(oracle.shape, dtype=dtype, device=device))
    got = run(x, f, *up, *down, *pad, flip_filter, gain, out=out)
    label = f"{name} [{device} {dtype} x {list(shape)} f {list(f.shape)} up {list(up)} down {list(down)} pad {list(pad)} " \
            f"flip {flip_filter} gain {gain}]"
    assert got.data_ptr() == out.data_ptr(), f"{label}: the kernel did not write into out"
    assert got.dtype == dtype and got.device == x.device and got.is_contiguous(), label
    assert_matches_oracle(got, oracle, same, dtype=dtype, name=label)


def random_config(rng: random.Random) -> dict:
    """A random configuration with a non-empty output: factors 1-4, filters 1-7 taps, images 1-12
    pixels, paddings -4..6 (so crops, and filters larger than the image), per axis."""
    while True:
        upx, upy, downx, downy = (rng.randint(1, 4) for _ in range(4))
        fh, fw, h, w = rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 12), rng.randint(1, 12)
        pad = tuple(rng.randint(-4, 6) for _ in range(4))
        out_h = (h * upy + pad[2] + pad[3] - fh + downy) // downy
        out_w = (w * upx + pad[0] + pad[1] - fw + downx) // downx
        if out_h >= 1 and out_w >= 1:
            return dict(shape=(rng.randint(1, 2), rng.randint(1, 3), h, w), fshape=(fh, fw), up=(upx, upy),
                        down=(downx, downy), pad=pad, flip_filter=rng.random() < 0.5, gain=rng.uniform(0.5, 2.0))


def cpu_run() -> Callable:
    """ganfast.ops.upfirdn2d.cpu.kernel (the C++ kernel alone, without the chooser), or a skip (no CPU extension) / failure (built without upfirdn2d)."""
    why = ganfast._ext.unavailable_reason("cpu")
    if why:
        pytest.skip(f"CPU extension unavailable: {why}")
    if not hasattr(ganfast._ext.extension("cpu"), "upfirdn2d"):
        pytest.fail("the built CPU extension has no upfirdn2d kernel (built before it existed): rebuild it "
                    "(pip install -e . or python setup.py build_ext --inplace)")
    from ganfast.ops.upfirdn2d import cpu
    return cpu.kernel


@pytest.mark.parametrize("shape, up, down, onednn", [
    ((32, 64, 16, 16), (1, 1), (1, 1), True), ((4, 512, 32, 32), (1, 1), (2, 2), True),
    ((4, 3, 8, 8), (2, 2), (1, 1), False), ((2, 4, 64, 64), (1, 1), (2, 2), False),
    ((32, 1024, 16, 16), (1, 1), (2, 2), False)], ids=str)
def test_cpu_backend_chooser_takes_the_faster_path_and_computes_the_same(shape, up, down, onednn):
    # The cpu backend's run picks oneDNN's depthwise convolution (the reference formulation) for
    # small planes without upsampling, the C++ kernel elsewhere (issue 28); either is the contract.
    from unittest import mock

    from ganfast.ops.upfirdn2d import cpu, reference
    cpu_run()
    assert cpu.prefers_onednn(torch.empty(shape), *up) == onednn
    x = torch.randn(shape)
    f = setup_filter([1, 3, 3, 1])
    args = (*up, *down, 1, 2, 2, 1, False, 2.0)
    with mock.patch.object(reference, "run", wraps=reference.run) as ref_run:
        got = cpu.run(x, f, *args)
    assert ref_run.called == onednn
    assert got.is_contiguous()
    # the public op on backend 'cpu' makes the same choice for the whole call (forward and the
    # autograd backward: oneDNN's convolution gradient also beats the kernel's up2 there)
    op = importlib.import_module("ganfast.ops.upfirdn2d")   # (the package: ganfast.ops.upfirdn2d is the function)
    xg = x.clone().requires_grad_()
    with mock.patch.object(op, "upfirdn2d_ref", wraps=op.upfirdn2d_ref) as ref_call:
        y = op.upfirdn2d(xg, f, up=list(up), down=list(down), padding=[1, 2, 2, 1], gain=2.0, backend="cpu")
    assert ref_call.called == onednn
    torch.testing.assert_close(y, got)
    torch.testing.assert_close(got.double(), upfirdn2d_ref(x.double(), f.double(), list(up), list(down), [1, 2, 2, 1],
                                                           False, 2.0), rtol=1e-5, atol=1e-5)


CASE_BY_NAME = {c[0]: c for c in CASES}


def run_case(run: Callable, case, dtype: torch.dtype, flip_filter: bool, device: str = "cpu") -> None:
    name, shape, up, down, pad, fspec, gain = case
    f = make_filter(fspec, torch.Generator().manual_seed(7))
    check_kernel(run, shape, f, up, down, pad, flip_filter, gain, dtype, device, name=name)


# ---------------------------------------------------------------- the CPU kernel vs the oracle

@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_matches_oracle_float64(case, flip_filter):
    run_case(cpu_run(), case, torch.float64, flip_filter)


@pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
@pytest.mark.parametrize("name", DTYPE_CASES)
def test_cpu_matches_oracle_dtypes(name, dtype):
    run_case(cpu_run(), CASE_BY_NAME[name], dtype, flip_filter=False)


def test_cpu_random_configurations():
    # 40 seeded random configurations (factors, filters, paddings, sizes, flip, gain), float64 and
    # float32.
    run = cpu_run()
    rng = random.Random(2024)
    for i in range(40):
        c = random_config(rng)
        f = torch.randn(*c["fshape"], generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        for dtype in (torch.float64, torch.float32):
            check_kernel(run, c["shape"], f, c["up"], c["down"], c["pad"], c["flip_filter"], c["gain"], dtype,
                         seed=i, name=f"random #{i}")


def test_cpu_separable_filters_random_configurations():
    # The CPU kernel runs a rank-1 filter (ky outer kx) as two 1-D passes: 40 random configurations
    # with random asymmetric separable filters (so a swapped or unflipped factor shows), float64,
    # float32 and bfloat16, plus the same configurations at the StyleGAN2 sizes' 4x4 [1, 3, 3, 1].
    run = cpu_run()
    rng = random.Random(7)
    for i in range(40):
        c = random_config(rng)
        gen = torch.Generator().manual_seed(100 + i)
        fh, fw = c["fshape"]
        f = torch.outer(torch.randn(fh, generator=gen, dtype=torch.float64),
                        torch.randn(fw, generator=gen, dtype=torch.float64))
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            check_kernel(run, c["shape"], f, c["up"], c["down"], c["pad"], c["flip_filter"], c["gain"], dtype,
                         seed=i, name=f"separable #{i}")
    for i, (up, down, pad) in enumerate([((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)),
                                         ((1, 1), (1, 1), (2, 2, 2, 2)), ((1, 1), (1, 1), (0, 0, 0, 0))]):
        for shape in ((3, 5, 16, 16), (2, 3, 33, 31)):
            check_kernel(run, shape, setup_filter([1, 3, 3, 1]).double(), up, down, pad, False, 4.0 if up[0] == 2 else 1.0,
                         torch.float32, seed=i, name="fir4")


def test_cpu_nearly_separable_filter_is_not_split():
    # A rank-1 filter plus a small perturbation is not separable: the kernel must use all its taps
    # (splitting it would be off by about the perturbation, far above the float64 budget).
    run = cpu_run()
    f = torch.outer(torch.tensor([1.0, 3, 3, 1], dtype=torch.float64), torch.tensor([1.0, 2, 1], dtype=torch.float64))
    f[1, 2] += 1e-6
    for up, down in (((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 1), (2, 2))):
        check_kernel(run, (2, 3, 9, 10), f, up, down, (2, 1, 2, 1), False, 1.0, torch.float64, name="near rank 1")


def test_cpu_flip_filter_is_correlation():
    # flip_filter=True with f equals flip_filter=False with f flipped on both axes, and (f being
    # asymmetric) differs from flip_filter=False with f.
    run = cpu_run()
    x = torch.randn(2, 3, 7, 6)
    f = torch.randn(3, 4)
    a = run(x, f, 2, 2, 1, 1, 1, 2, 2, 1, True, 1.0)
    b = run(x, f.flip([0, 1]).contiguous(), 2, 2, 1, 1, 1, 2, 2, 1, False, 1.0)
    c = run(x, f, 2, 2, 1, 1, 1, 2, 2, 1, False, 1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_cpu_returns_a_new_contiguous_tensor_without_out():
    run = cpu_run()
    x = torch.randn(2, 3, 5, 5)
    y = run(x, setup_filter([1, 3, 3, 1]), 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    assert y.shape == (2, 3, 10, 10) and y.is_contiguous() and y.dtype == x.dtype


def test_cpu_empty_batch():
    # N = 0: nothing to compute, the shape still follows the formula ((5 + 2 - 4 + 2) // 2 = 2)
    run = cpu_run()
    y = run(torch.randn(0, 3, 5, 5), setup_filter([1, 3, 3, 1]), 1, 1, 2, 2, 1, 1, 1, 1, False, 1.0)
    assert y.shape == (0, 3, 2, 2)


# ---------------------------------------------------------------- argument checks

def _args(**over) -> dict:
    a = dict(x=torch.randn(2, 3, 8, 8), f=setup_filter([1, 3, 3, 1]), upx=2, upy=2, downx=1, downy=1,
             px0=2, px1=1, py0=2, py1=1, flip_filter=False, gain=4.0, out=None)
    a.update(over)
    return a


BAD_ARGUMENTS = [
    # x must be [N, C, H, W]
    ("x_ndim", dict(x=torch.randn(3, 8, 8)), r"x must be \[N, C, H, W\]"),
    # integer x
    ("x_dtype", dict(x=torch.ones(2, 3, 8, 8, dtype=torch.int32)), r"x must be float16, bfloat16, float32 or float64"),
    # channels_last / transposed x: the kernel reads NCHW
    ("x_noncontiguous", dict(x=torch.randn(2, 3, 8, 8).transpose(2, 3)), r"x must be contiguous"),
    # a separable [taps] filter must arrive as its outer product
    ("f_ndim", dict(f=torch.ones(4)), r"f must be a \[fh, fw\] filter"),
    # f must be in the accumulation dtype (float32 for float32 x)
    ("f_dtype", dict(f=torch.ones(4, 4, dtype=torch.float64)), r"f must have dtype Float"),
    ("f_noncontiguous", dict(f=torch.ones(4, 6)[:, ::2]), r"f must be contiguous"),
    ("f_empty", dict(f=torch.ones(0, 3)), r"f must have at least one tap"),
    ("up_zero", dict(upx=0), r"upx must be >= 1"),
    ("down_zero", dict(downy=0), r"downy must be >= 1"),
    ("empty_output", dict(upx=1, upy=1, px0=-5, px1=-5), r"output would be empty"),
    ("extent_overflow", dict(upx=2**30), r"must fit in 31 bits"),
    ("out_shape", dict(out=torch.empty(2, 3, 8, 8)), r"out must have shape \[2, 3, 16, 16\]"),
    ("out_dtype", dict(out=torch.empty(2, 3, 16, 16, dtype=torch.float64)), r"out must have dtype Float"),
    ("out_noncontiguous", dict(out=torch.empty(2, 3, 16, 16).transpose(2, 3)), r"out must be contiguous"),
]


@pytest.mark.parametrize("over,match", [b[1:] for b in BAD_ARGUMENTS], ids=[b[0] for b in BAD_ARGUMENTS])
def test_cpu_rejects_bad_arguments_naming_them(over, match):
    run = cpu_run()
    a = _args(**over)
    with pytest.raises(RuntimeError, match=match):
        run(a.pop("x"), a.pop("f"), **a)


def test_cpu_rejects_tensors_on_another_device():
    # x must be a CPU tensor, f on x's device (a meta tensor stands in for another device)
    run = cpu_run()
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(RuntimeError, match=r"x must be on cpu"):
        run(torch.empty(2, 3, 8, 8, device="meta"), f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    with pytest.raises(RuntimeError, match=r"f must be on x's device cpu"):
        run(torch.randn(2, 3, 8, 8), f.to("meta"), 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
