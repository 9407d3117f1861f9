"""conditional_batch_norm's kernel contract on CUDA tensors: the CUDA kernels
(ganfast.ops.conditional_batch_norm.cuda, csrc/conditional_batch_norm/conditional_batch_norm_cuda.cu)
and the Triton kernels (ganfast.ops.conditional_batch_norm.triton) against the float64 reference,
on the CPU kernels' cases (test_conditional_batch_norm_kernels.py) and on the edges of the CUDA
kernels' own paths, with NaN-poisoned outputs; and the CUDA kernels against the CPU kernels.

Skipped without a CUDA device. Nothing here touches CUDA (or imports Triton) at import or
collection: the device check runs inside a fixture. Run on a GPU machine with:
    GANFAST_TEST_GPU=1 pytest tests/ops/test_conditional_batch_norm_gpu.py
"""
from __future__ import annotations

import importlib
import inspect
from types import SimpleNamespace

import pytest
import torch

import ganfast

from .test_conditional_batch_norm_kernels import (CASES, check_backward_dx, check_backward_sums, check_channel_stats,
                                                  check_forward_apply, make_inputs, run_case, run_stats_case)

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BACKENDS = ["cuda", "triton"]


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


def _cuda_ext(kind: str = "cuda"):
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    mod = ganfast._ext.extension(kind)
    if not hasattr(mod, "cbn_forward_apply"):
        pytest.fail(f"the built {kind} extension has no conditional_batch_norm kernels (built before they existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return mod


class _OutOptional:
    """A contract whose forward_apply / backward_dx may lack the optional `out` argument (the
    Triton launchers): out is passed only where accepted (and then checked by the test helpers),
    otherwise the result is copied into it, so the helpers' checks run unchanged."""

    def __init__(self, mod):
        self.mod = mod
        self.channel_stats = mod.channel_stats
        self.backward_sums = mod.backward_sums

    def _call(self, fn, args, out):
        if out is None or "out" in inspect.signature(fn).parameters:
            return fn(*args) if out is None else fn(*args, out=out)
        return out.copy_(fn(*args))

    def forward_apply(self, *args, out=None):
        return self._call(self.mod.forward_apply, args, out)

    def backward_dx(self, *args, out=None):
        return self._call(self.mod.backward_dx, args, out)


def contract(backend: str):
    """The kernel contract of `backend` on CUDA tensors, or a skip naming what is missing."""
    if backend == "cuda":
        _cuda_ext()
        from ganfast.ops.conditional_batch_norm import cuda
        return cuda
    try:
        importlib.import_module("triton")
    except ImportError as e:
        pytest.skip(f"triton not importable: {e}")
    mod = importlib.import_module("ganfast.ops.conditional_batch_norm.triton")
    return _OutOptional(mod)


# ---------------------------------------------------------------- the CPU kernels' cases

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpu_channel_stats(case, dtype, backend):
    run_stats_case(contract(backend), case, dtype, device="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpu_passes_match_oracle(case, dtype, relu, backend):
    run_case(contract(backend), case, dtype, relu, device="cuda")


# ---------------------------------------------------------------- the CUDA kernels' own paths

# (name, x shape, kind), as CASES.
GPU_CASES = [
    # the benchmark layer's planes: 16-byte packs, 256 threads per plane in backward_sums,
    # statistics in several chunks per channel
    ("bench_64x64", (8, 192, 64, 64), "normal"),
    # BigGAN at 128x128: 16 (fp32) or 8 (fp16) packs per thread per plane in backward_sums
    ("biggan_128x128", (2, 96, 128, 128), "normal"),
    # BigGAN at 4x4 with 1536 channels: 128 (fp32) or 256 (fp16) planes per backward_sums block
    ("biggan_4x4_c1536", (8, 1536, 4, 4), "normal"),
    # 8x8: 32 (fp32) or 64 (fp16) planes per backward_sums block, the last block partial (111 planes)
    ("map_8x8_partial_block", (3, 37, 8, 8), "normal"),
    # 6x6 = 36 pixels: whole float packs, not whole 8-element packs (fp16 / bf16 fall back to 1)
    ("map_6x6", (5, 11, 6, 6), "normal"),
    # a big batch of few channels: each channel's statistics in many chunks, one channel at 1000 sigma
    ("few_channels_many_chunks", (64, 2, 32, 32), "offset"),
    # 16x32 in fp32: 64 threads per plane in backward_sums (two warps, combined in shared memory)
    ("two_warps_per_plane", (2, 9, 16, 32), "normal"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_paths_match_oracle(case, dtype, backend):
    c = contract(backend)
    run_stats_case(c, case, dtype, device="cuda")
    run_case(c, case, dtype, relu=True, device="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_unaligned_tensors_take_the_scalar_path(backend):
    # x and dy one element into their storage: contiguous but not 16-byte aligned
    c = contract(backend)
    a = make_inputs((2, 5, 8, 8), "normal", torch.float32, device="cuda")
    for k in ("x", "dy"):
        buf = torch.empty(getattr(a, k).numel() + 1, device="cuda")
        view = buf[1:].view_as(getattr(a, k))
        view.copy_(getattr(a, k))
        setattr(a, k, view)
    check_channel_stats(c, "unaligned", a, torch.float32)
    check_forward_apply(c, "unaligned", a, torch.float32, True)
    check_backward_sums(c, "unaligned", a, torch.float32, True)
    check_backward_dx(c, "unaligned", a, torch.float32, True)


def _all_passes(c, a: SimpleNamespace, relu: bool):
    small = (a.mean, a.rstd, a.gain, a.bias, relu)
    return (c.channel_stats(a.x), c.forward_apply(a.x, *small), c.backward_sums(a.dy, a.x, *small),
            c.backward_dx(a.dy, a.x, *small, a.c1, a.c2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_is_deterministic(backend):
    # No atomics: the reductions add in a fixed order, the same bits every run.
    c = contract(backend)
    a = make_inputs((16, 64, 32, 32), "normal", torch.float32, device="cuda")
    for u, v in zip(_all_passes(c, a, True), _all_passes(c, a, True)):
        assert torch.equal(u, v)


def test_cuda_agrees_with_cpu():
    # Same per-element math (conditional_batch_norm.h); the sums differ in order only.
    _cuda_ext("cpu")
    from ganfast.ops.conditional_batch_norm import cpu
    g = contract("cuda")
    a = make_inputs((4, 12, 16, 16), "normal", torch.float32, device="cuda")
    b = SimpleNamespace(**{k: v.cpu() for k, v in vars(a).items()})
    for got, want in zip(_all_passes(g, a, True), _all_passes(cpu, b, True)):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


def test_cuda_rejects_bad_devices_and_float64():
    # The shape, dtype and layout checks are shared with the CPU kernels (conditional_batch_norm_common.cpp);
    # here what the CUDA entry points add: device placement, and no float64.
    c = contract("cuda")
    a = make_inputs((2, 3, 4, 4), "normal", torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match=r"x must be on cuda"):
        c.channel_stats(a.x.cpu())
    with pytest.raises(RuntimeError, match=r"gain must be on x's device"):
        c.forward_apply(a.x, a.mean, a.rstd, a.gain.cpu(), a.bias, True)
    with pytest.raises(RuntimeError, match=r"x must be float16, bfloat16, float32 on cuda"):
        c.channel_stats(a.x.double())


def test_cuda_runs_on_the_tensors_device_and_current_stream():
    c = contract("cuda")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    a = make_inputs((4, 16, 32, 32), "normal", torch.float32, device=dev)
    want = _all_passes(c, a, True)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        got = _all_passes(c, a, True)
    side.synchronize()
    for u, v in zip(got, want):
        assert u.device == dev
        assert torch.equal(u, v), "differs on a side stream"


def test_cuda_empty_inputs():
    c = contract("cuda")
    a = make_inputs((1, 3, 4, 4), "normal", torch.float32, device="cuda")
    x = torch.empty(0, 3, 4, 4, device="cuda")
    g0 = torch.empty(0, 3, device="cuda")
    assert bool(c.channel_stats(x).isnan().all())
    assert c.forward_apply(x, a.mean, a.rstd, g0, g0, True).shape == x.shape
    assert c.backward_sums(x, x, a.mean, a.rstd, g0, g0, True).shape == (0, 3, 2)
    assert c.backward_dx(x, x, a.mean, a.rstd, g0, g0, True, a.c1, a.c2).shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("map_4x4", "odd_channels", "batch_1", "many_planes")],
                         ids=lambda c: c[0])
def test_cuda_reads_gain_and_bias_expanded_over_the_batch(case, dtype):
    # gain / bias [C].expand(N, -1) (batch stride 0, BatchNormAct2d's weight and bias): every pass
    # and both one-call steps give exactly what they give on the [N, C] copy ([C] gradients:
    # the copy's summed over N by sum_to, as autograd's expand)
    c = contract("cuda")
    ext = _cuda_ext()
    _, shape, kind = case
    a = make_inputs(shape, kind, dtype, device="cuda")
    n = shape[0]
    g, b = a.gain[0].clone(), a.bias[-1].clone()
    ge, be, gc, bc = g.expand(n, -1), b.expand(n, -1), g.expand(n, -1).contiguous(), b.expand(n, -1).contiguous()
    for relu in (False, True):
        assert torch.equal(c.forward_apply(a.x, a.mean, a.rstd, ge, be, relu),
                           c.forward_apply(a.x, a.mean, a.rstd, gc, bc, relu))
        assert torch.equal(c.backward_sums(a.dy, a.x, a.mean, a.rstd, ge, be, relu),
                           c.backward_sums(a.dy, a.x, a.mean, a.rstd, gc, bc, relu))
        assert torch.equal(c.backward_dx(a.dy, a.x, a.mean, a.rstd, ge, be, relu, a.c1, a.c2),
                           c.backward_dx(a.dy, a.x, a.mean, a.rstd, gc, bc, relu, a.c1, a.c2))
    for training in (True, False):
        rm1, rv1 = a.mean.clone(), 1 / a.rstd.square()
        rm2, rv2 = rm1.clone(), rv1.clone()
        y1, mean1, var1 = ext.cbn_forward_step(a.x, g, b, rm1, rv1, training, 0.1, 1e-5, True)
        y2, mean2, var2 = ext.cbn_forward_step(a.x, gc, bc, rm2, rv2, training, 0.1, 1e-5, True)
        for u, v in ((y1, y2), (mean1, mean2), (var1, var2), (rm1, rm2), (rv1, rv2)):
            assert torch.equal(u, v), f"forward step training={training}"
        dx1, dg1, db1 = ext.cbn_backward_step(a.dy, a.x, g, b, mean1, var1, training, 1e-5, True)
        dx2, dg2, db2 = ext.cbn_backward_step(a.dy, a.x, gc, bc, mean2, var2, training, 1e-5, True)
        assert torch.equal(dx1, dx2) and torch.equal(dg1, dg2.sum_to_size(g.shape))
        assert torch.equal(db1, db2.sum_to_size(b.shape)), f"backward step training={training}"
