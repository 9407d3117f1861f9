"""upfirdn2d's CUDA kernel (ganfast.ops.upfirdn2d.cuda.run, csrc/upfirdn2d/upfirdn2d_cuda.cu) against
the float64 reference, on the cases of the CPU kernel's tests (test_upfirdn2d_kernels.py) and on the
edges of the CUDA kernel's own paths (tiles, planes per block, the shared-memory budget, the
direct fallback), with NaN-poisoned outputs; and against the CPU kernel.

Skipped without a CUDA device. Nothing here touches CUDA at import or collection: the device check
runs inside a fixture. Run on a GPU machine with:  pytest tests/ops/test_upfirdn2d_gpu.py
"""
from __future__ import annotations

import random
from typing import Callable

import pytest
import torch

import ganfast
from ganfast.ops.upfirdn2d.reference import setup_filter

from .test_upfirdn2d_kernels import CASE_BY_NAME, CASES, DTYPE_CASES, check_kernel, random_config, run_case

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


def _ext(kind: str):
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    mod = ganfast._ext.extension(kind)
    if not hasattr(mod, "upfirdn2d"):
        pytest.fail(f"the built {kind} extension has no upfirdn2d kernel (built before it existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return mod


def cuda_run() -> Callable:
    _ext("cuda")
    from ganfast.ops.upfirdn2d import cuda
    return cuda.run


# ---------------------------------------------------------------- the CPU kernel's cases

@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_oracle_float32(case, flip_filter):
    run_case(cuda_run(), case, torch.float32, flip_filter, device="cuda")


@pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
@pytest.mark.parametrize("name", DTYPE_CASES)
def test_cuda_matches_oracle_half_dtypes(name, dtype):
    run_case(cuda_run(), CASE_BY_NAME[name], dtype, flip_filter=False, device="cuda")


def test_cuda_random_configurations():
    # The CPU tests' 40 seeded random configurations, float32.
    run = cuda_run()
    rng = random.Random(2024)
    for i in range(40):
        c = random_config(rng)
        f = torch.randn(*c["fshape"], generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        check_kernel(run, c["shape"], f, c["up"], c["down"], c["pad"], c["flip_filter"], c["gain"], torch.float32,
                     device="cuda", seed=i, name=f"random #{i}")


# ---------------------------------------------------------------- the CUDA kernel's own paths

# (name, x shape, up, down, padding, filter, gain), as CASES.
CUDA_CASES = [
    # StyleGAN2 layer sizes: 64x64 -> 128x128 up, 128x128 -> 64x64 down (many full tiles)
    ("stylegan_up2_64", (2, 32, 64, 64), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    ("stylegan_down2_128", (2, 32, 128, 128), (1, 1), (2, 2), (1, 1, 1, 1), "fir4", 1.0),
    # outputs that divide no tile (64 x 16): partial tiles on the right and bottom
    ("partial_tiles", (2, 3, 70, 131), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # 8x8 outputs, 21 planes: 16 planes per block, the second block's group partial
    ("planes_per_block_partial", (3, 7, 4, 4), (2, 2), (1, 1), (2, 1, 2, 1), "fir4", 4.0),
    # 4x4 outputs over 1024 planes: 64 planes per block
    ("planes_per_block_4x4", (2, 512, 4, 4), (1, 1), (1, 1), (2, 1, 2, 1), "fir4", 1.0),
    # a 40x40 filter with down 2: the 64 x 16 tile exceeds the shared-memory budget, the tile shrinks
    ("tile_shrinks", (1, 2, 60, 70), (1, 1), (2, 2), (20, 19, 20, 19), (40, 40), 1.0),
    # a 100x100 filter: no tile fits the budget, the direct kernel runs
    ("direct_large_filter", (1, 2, 8, 9), (1, 1), (1, 1), (99, 99, 99, 99), (100, 100), 1.0),
    # down 5 with one tap: a tile would stage 25 pixels per output read, the direct kernel runs
    ("direct_sparse_taps", (2, 3, 33, 41), (1, 1), (5, 5), (0, 0, 0, 0), (1, 1), 1.0),
    # per-axis factors on a large plane: the runtime-factor tile kernel
    ("per_axis_large", (1, 4, 50, 61), (2, 1), (1, 2), (1, 2, 0, 1), (3, 4), 1.0),
]
CUDA_CASE_BY_NAME = {c[0]: c for c in CUDA_CASES}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c[0] for c in CUDA_CASES])
def test_cuda_paths_match_oracle(case, dtype):
    run_case(cuda_run(), case, dtype, flip_filter=False, device="cuda")


@pytest.mark.parametrize("name", ["stylegan_up2", "stylegan_down2", "large_factors", "filter_larger_than_image"])
def test_cuda_kernel_agrees_with_cpu_kernel(name):
    # Same taps in the same order (upfirdn2d_pixel, rows then columns): float32 results agree to
    # rounding (fused multiply-adds may differ).
    cuda_ext, cpu_ext = _ext("cuda"), _ext("cpu")
    _, shape, up, down, pad, fspec, gain = CASE_BY_NAME[name]
    x = torch.randn(*shape)
    f = setup_filter([1, 3, 3, 1]) if fspec == "fir4" else torch.randn(*fspec)
    for flip_filter in (False, True):
        got = cuda_ext.upfirdn2d(x.cuda(), f.cuda(), *up, *down, *pad, flip_filter, gain)
        want = cpu_ext.upfirdn2d(x, f, *up, *down, *pad, flip_filter, gain)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)


def test_cuda_is_deterministic():
    # No atomics: every output is one thread's sum in a fixed order.
    run = cuda_run()
    x = torch.randn(2, 16, 70, 90, device="cuda")
    f = setup_filter([1, 3, 3, 1], device="cuda")
    assert torch.equal(run(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0), run(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0))


def test_cuda_rejects_bad_devices_and_float64():
    # The shape, dtype and layout checks are shared with the CPU kernel (upfirdn2d_common.cpp);
    # here what the CUDA entry point adds: device placement, and no float64.
    run = cuda_run()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(RuntimeError, match=r"x must be on cuda"):
        run(x.cpu(), f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    with pytest.raises(RuntimeError, match=r"f must be on x's device"):
        run(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    with pytest.raises(RuntimeError, match=r"x must be float16, bfloat16, float32 on cuda"):
        run(x.double(), f.double().cuda(), 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)


def test_cuda_runs_on_the_tensors_device_and_current_stream():
    run = cuda_run()
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    x = torch.randn(2, 8, 70, 70, device=dev)
    f = setup_filter([1, 3, 3, 1], device=dev)
    want = run(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        got = run(x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
    side.synchronize()
    assert got.device == dev
    assert torch.equal(got, want), "differs on a side stream"


def test_cuda_empty_batch():
    run = cuda_run()
    y = run(torch.randn(0, 3, 5, 5, device="cuda"), setup_filter([1, 3, 3, 1], device="cuda"),
            1, 1, 2, 2, 1, 1, 1, 1, False, 1.0)
    assert y.shape == (0, 3, 2, 2)
