"""modulated_conv2d's fused-backend kernels on CUDA tensors (ganfast.ops.modulated_conv2d.cuda):
the checks of test_modulated_conv2d_kernels.py (the float64 reference contracts, the accuracy rule,
NaN-poisoned outputs) on the CUDA kernels, their launch paths (vector / element accesses, planes
split over several blocks), and agreement with the CPU kernels.

Skipped without a CUDA device. Nothing here touches CUDA at import or collection: the device check
runs inside a fixture. Run on a GPU machine with:  pytest tests/ops/test_modulated_conv2d_gpu.py
"""
from __future__ import annotations

import pytest
import torch

from ganfast.ops.bias_act.reference import ACTIVATIONS

from .test_modulated_conv2d_kernels import (ACTS, NOISE_KINDS, SHAPES, _run_epilogue, _valid_args, check_demod,
                                            check_epilogue, contract_module, extension_or_skip, make_case,
                                            make_demod_inputs)

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture
def cuda():
    return contract_module("cuda")


# ---------------------------------------------------------------- epilogue vs the oracle

@pytest.mark.parametrize("clamped", [False, True], ids=["no_clamp", "clamp"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue_every_activation(cuda, act, clamped, dtype):
    check_epilogue(cuda, make_case((2, 5, 6, 8), dtype, act, clamp=None if clamped else -1.0), dtype, "cuda")


@pytest.mark.parametrize("noise_kind", list(NOISE_KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue_noise_views(cuda, noise_kind, dtype):
    # Flat planes as vectors (per_sample, shared, full), flat element loads (offset_per_sample:
    # not 16-byte aligned), and the (h, w) path (transposed, per_channel, every_other_column).
    check_epilogue(cuda, make_case((2, 6, 8, 8), dtype, "lrelu", noise_kind=noise_kind), dtype, "cuda")


@pytest.mark.parametrize("with_dcoef,with_bias,noise_kind", [
    (False, True, "per_sample"), (True, False, "per_sample"), (False, False, "none"),
], ids=["no_dcoef", "no_bias", "nothing"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_epilogue_optional_inputs(cuda, with_dcoef, with_bias, noise_kind, dtype):
    case = make_case((2, 4, 6, 6), dtype, "swish", with_dcoef=with_dcoef, with_bias=with_bias, noise_kind=noise_kind)
    check_epilogue(cuda, case, dtype, "cuda")


# The CPU test shapes plus the CUDA kernels' own edges.
CUDA_SHAPES = SHAPES + [
    ("split_planes", (1, 3, 256, 256)),   # few large planes: the backward cuts each into many chunks
    ("split_odd", (2, 3, 181, 173)),      # chunks of element accesses, a partial last chunk
    ("warp_per_plane", (4, 512, 4, 4)),   # StyleGAN's 4x4 layer: 8 planes per block
    ("plane_of_two_warps", (2, 33, 12, 12)),  # 64 threads per plane: a two-warp plane sum
]


@pytest.mark.parametrize("case", CUDA_SHAPES, ids=[s[0] for s in CUDA_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
def test_epilogue_shapes(cuda, case, dtype):
    # float64 too: the cuda backend does not advertise it, but the kernels implement it.
    check_epilogue(cuda, make_case(case[1], dtype, "lrelu", seed=1), dtype, "cuda", name=case[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue_unaligned_a_takes_element_accesses(cuda, dtype):
    # a, g and the outputs one element into their storage: not 16-byte aligned, so the kernels
    # run their element-at-a-time path (the vector path would misread). Same per-element math:
    # out and da are the aligned run's bits; the sums are added in another order.
    case = make_case((2, 4, 8, 8), dtype, "lrelu")
    x = case.inputs(dtype, "cuda")
    shifted = lambda t: torch.cat([t.new_zeros(1), t.flatten()])[1:].view(t.shape)
    fast = dict(x, a=shifted(x["a"]), g=shifted(x["g"]))
    assert fast["a"].data_ptr() % 16 != 0
    out = _run_epilogue(cuda, fast, False, out=shifted(torch.full_like(x["a"], float("nan"))))
    assert torch.equal(out, _run_epilogue(cuda, x, False)), "out: the element path differs from the vector path"
    da, sums = _run_epilogue(cuda, fast, True, out=shifted(torch.full_like(x["a"], float("nan"))))
    want_da, want_sums = _run_epilogue(cuda, x, True)
    assert torch.equal(da, want_da), "da: the element path differs from the vector path"
    scale = max(1.0, float(want_sums.abs().max()))
    torch.testing.assert_close(sums, want_sums, rtol=1e-5, atol=1e-5 * scale)


def test_epilogue_stylegan2_layers(cuda):
    # The benchmark's layers: lrelu, clamp 256, gain sqrt(2), [N, 1, H, W] noise.
    for shape in ((4, 256, 64, 64), (4, 512, 32, 32)):
        check_epilogue(cuda, make_case(shape, torch.float32, "lrelu", clamp=256.0), torch.float32, "cuda")
        check_epilogue(cuda, make_case(shape, torch.float16, "lrelu", clamp=256.0), torch.float16, "cuda")


def test_epilogue_empty(cuda):
    for shape in ((2, 3, 0, 4), (0, 3, 4, 4)):
        a = torch.randn(shape, device="cuda")
        out = cuda.epilogue_forward(a, None, None, None, "lrelu", 0.2, 2 ** 0.5, 256.0)
        da, sums = cuda.epilogue_backward(a, a, None, None, None, "lrelu", 0.2, 2 ** 0.5, 256.0)
        assert out.shape == da.shape == shape
        assert sums.shape == (*shape[:2], 2) and not sums.any()


# ---------------------------------------------------------------- against the CPU kernels

# Agreement of the CUDA and CPU kernels on identical inputs: (rtol, atol). They share the
# per-element math; they differ in CUDA intrinsics (__expf) vs the CPU's polynomials, in FMA
# contraction, and in the order of the sums (scaled by the sums' size below).
KERNEL_AGREEMENT = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5)}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", list(KERNEL_AGREEMENT))
@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 130, 120)], ids=["one_block_per_plane", "split"])
def test_cuda_kernels_agree_with_cpu_kernels(act, dtype, shape):
    cuda, cpu = contract_module("cuda"), contract_module("cpu")
    case = make_case(shape, dtype, act)
    rtol, atol = KERNEL_AGREEMENT[dtype]
    for backward in (False, True):
        got = _run_epilogue_with(cuda, case, dtype, "cuda", backward)
        want = _run_epilogue_with(cpu, case, dtype, "cpu", backward)
        for k, gv, wv in zip(("out", "sums"), got, want):
            scale = max(1.0, float(wv.abs().max())) if k == "sums" else 1.0
            torch.testing.assert_close(gv.cpu(), wv, rtol=rtol, atol=atol * scale,
                                       msg=lambda m: f"{k} backward={backward}: {m}")
    weight, styles = make_demod_inputs(7, 300, 3, 5)
    torch.testing.assert_close(cuda.demod_coefficients(weight.to("cuda", dtype), styles.to("cuda", dtype)).cpu(),
                               cpu.demod_coefficients(weight.to(dtype), styles.to(dtype)), rtol=rtol, atol=atol)


def _run_epilogue_with(mod, case, dtype, device, backward):
    x = case.inputs(dtype, device)
    if backward:
        return mod.epilogue_backward(x["g"], x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper)
    return (mod.epilogue_forward(x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper),)


def test_backward_is_deterministic(cuda):
    # No atomics: the chunk sums are added in a fixed order.
    case = make_case((2, 4, 300, 280), torch.float32, "swish", noise_kind="shared")
    x = case.inputs(torch.float32, "cuda")
    first = cuda.epilogue_backward(x["g"], x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper)
    second = cuda.epilogue_backward(x["g"], x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper)
    for k, f, s in zip(("da", "sums"), first, second):
        assert torch.equal(f, s), f"{k} differs between two identical calls"


# ---------------------------------------------------------------- demodulation coefficients

# (name, Cout, Cin, k, N)
CUDA_DEMOD_SHAPES = [
    ("3x3", 8, 5, 3, 3),
    ("1x1_torgb", 3, 16, 1, 2),
    ("wide_cin", 5, 1500, 1, 3),           # two chunks of input channels in shared memory
    ("cin_2049", 4, 2049, 3, 2),           # three chunks, the last of one channel
    ("many_samples", 6, 40, 3, 21),        # more samples than warps: warps take several
    ("stylegan_512", 512, 512, 3, 16),     # a StyleGAN2 layer
]


@pytest.mark.parametrize("case", CUDA_DEMOD_SHAPES, ids=[s[0] for s in CUDA_DEMOD_SHAPES])
@pytest.mark.parametrize("w_dtype,s_dtype", [
    (torch.float64, torch.float64), (torch.float32, torch.float32), (torch.float16, torch.float16),
    (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
], ids=["f64", "f32", "f16", "bf16", "f16_w_f32_styles"])
def test_demod_matches_oracle(cuda, case, w_dtype, s_dtype):
    name, cout, cin, k, n = case
    weight, styles = make_demod_inputs(cout, cin, k, n)
    check_demod(cuda, weight, styles, w_dtype, s_dtype, device="cuda", name=name)


def test_demod_zero_styles_and_edges(cuda):
    weight, styles = make_demod_inputs(4, 6, 3, 2)
    styles[1] = 0
    w, s = weight.float().cuda(), styles.float().cuda()
    torch.testing.assert_close(cuda.demod_coefficients(w, s)[1].cpu(), torch.full((4,), 1e4), rtol=1e-6, atol=0)
    assert cuda.demod_coefficients(w, s[:0]).shape == (0, 4)
    assert cuda.demod_coefficients(w[:0], s).shape == (2, 0)
    torch.testing.assert_close(cuda.demod_coefficients(w[:, :0].contiguous(), s[:, :0]).cpu(),
                               torch.full((2, 4), 1e4), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- device placement and streams

def test_rejects_tensors_on_the_wrong_device(cuda):
    # The shape, dtype and layout checks are shared with the CPU kernels
    # (modulated_conv2d_common.cpp, tested there); here, what the CUDA entry points add.
    args = _valid_args(torch.float32, "cuda")
    with pytest.raises(RuntimeError, match="a must be on cuda"):
        _run_epilogue(cuda, {k: v.cpu() for k, v in args.items()}, False)
    with pytest.raises(RuntimeError, match="dcoef must be on cuda"):
        _run_epilogue(cuda, dict(args, dcoef=args["dcoef"].cpu()), True)
    with pytest.raises(RuntimeError, match="noise must be on cuda"):
        _run_epilogue(cuda, dict(args, noise=args["noise"].cpu()), False)
    weight, styles = make_demod_inputs(4, 6, 3, 2)
    with pytest.raises(RuntimeError, match="weight must be on cuda"):
        cuda.demod_coefficients(weight.float(), styles.float())
    with pytest.raises(RuntimeError, match="styles must be on cuda"):
        cuda.demod_coefficients(weight.float().cuda(), styles.float())


def test_runs_on_the_tensors_device_and_current_stream(cuda):
    extension_or_skip("cuda")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    case = make_case((2, 8, 70, 70), torch.float32, "tanh")
    x = case.inputs(torch.float32, dev)
    weight, styles = make_demod_inputs(16, 8, 3, 2)
    weight, styles = weight.float().to(dev), styles.float().to(dev)

    def run_all():
        return [
            cuda.epilogue_forward(x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper),
            *cuda.epilogue_backward(x["g"], x["a"], x["dcoef"], x["noise"], x["bias"], *case.hyper),
            cuda.demod_coefficients(weight, styles)]

    want = run_all()
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        got = run_all()
    side.synchronize()
    for k, g, w in zip(("out", "da", "sums", "dcoef"), got, want):
        assert g.device == dev, f"{k} on {g.device}"
        assert torch.equal(g, w), f"{k}: differs on a side stream"


def test_act_codes_match_the_cpu_extension():
    # The act code is the ganfast::Act id in both extensions (one table: ACTIVATIONS).
    ext = extension_or_skip("cuda")
    a = torch.randn(1, 1, 2, 2, device="cuda")
    with pytest.raises(RuntimeError, match=r"act code must be in \[0, 9\)"):
        ext.modconv_epilogue_forward(a, None, None, None, len(ACTIVATIONS), 0.0, 1.0, -1.0)
