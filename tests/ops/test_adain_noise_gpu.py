"""adain_noise on CUDA tensors: the cuda backend's kernel contract (ganfast.ops.adain_noise.cuda
forward / backward) against the reference contract in float64, and the CUDA kernel against the CPU
kernel (same seeded noise, same results).

Skipped without a CUDA device. Nothing here touches CUDA at import or collection: the device check
runs inside a fixture. Run on a GPU machine with:  pytest tests/ops/test_adain_noise_gpu.py
"""
from __future__ import annotations

import pytest
import torch

import ganfast
from ganfast.ops.adain_noise import reference
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.testing import assert_matches_oracle, poison_like

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last"]
NOISE_KINDS = ["seed", "tensor", "shared_plane", "none"]
SEED = 1234


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


def _ext(kind: str):
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    mod = ganfast._ext.extension(kind)
    if not hasattr(mod, "adain_noise_forward"):
        pytest.fail(f"the built {kind} extension has no adain_noise kernels (built before they existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return mod


def _cuda_contract():
    _ext("cuda")
    from ganfast.ops.adain_noise import cuda
    return cuda


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_args(shape, layout="contiguous", noise_kind="seed", with_ns=True, with_b=True, seed=0):
    """Float64 CPU inputs of the contract: dict of x, s, t, noise, ns, b, g, seed.

    x has a mean offset (0.5) so that the statistics are not those of a centred plane."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    r = lambda *sz: torch.randn(*sz, generator=gen, dtype=torch.float64)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    a = dict(x=(r(*shape) * 2 + 0.5).contiguous(memory_format=fmt), s=r(n, c) * 0.3 + 1.0, t=r(n, c),
             noise=None, ns=r(c) * 0.5 if with_ns else None, b=r(c) * 0.5 if with_b else None,
             g=r(*shape).contiguous(memory_format=fmt), seed=-1)
    if noise_kind == "tensor":
        a["noise"] = r(n, 1, h, w)
    elif noise_kind == "shared_plane":
        a["noise"] = r(1, 1, h, w)
    elif noise_kind == "seed":
        a["seed"] = SEED + seed
    return a


def cast(a: dict, dtype: torch.dtype, device="cuda") -> dict:
    """x, noise and g in dtype; the small tensors in its accumulation dtype (as the contract wants)."""
    out = dict(a)
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device=device, dtype=dtype if k in ("x", "noise", "g") else _acc(dtype))
    return out


def as_float64(a: dict) -> dict:
    return {k: v.to(torch.float64) if isinstance(v, torch.Tensor) else v for k, v in a.items()}


def run_contract(mod, a: dict, act: str, eps: float = 1e-8) -> dict:
    """forward then backward (with the forward's own stats) of contract module `mod`."""
    spec = ACTIVATIONS[act]
    tail = (act, spec.def_alpha, spec.def_gain, eps, a["seed"])
    out, stats = mod.forward(a["x"], a["s"], a["t"], a["noise"], a["ns"], a["b"], *tail)
    dx, ds, dt, sdz, sdzn = mod.backward(a["g"], a["x"], a["s"], a["noise"], a["ns"], a["b"], stats, *tail)
    return dict(out=out, stats=stats, dx=dx, ds=ds, dt=dt, sdz=sdz, sdzn=sdzn)


def check_against_oracle(shape, layout, dtype, act="lrelu", noise_kind="seed", with_ns=True, with_b=True,
                         eps=1e-8, seed=0):
    """Every output of the cuda contract in `dtype` against the float64 reference on the same
    (rounded) inputs, under the accuracy rule; the reference run in `dtype` sets the budget."""
    cuda = _cuda_contract()
    a = cast(make_args(shape, layout, noise_kind, with_ns, with_b, seed), dtype)
    got = run_contract(cuda, a, act, eps)
    oracle = run_contract(reference, as_float64(a), act, eps)
    same = run_contract(reference, a, act, eps)
    assert got["out"].dtype == dtype and got["out"].stride() == a["x"].stride(), "out keeps x's dtype and layout"
    assert got["dx"].dtype == dtype and got["dx"].stride() == a["x"].stride(), "dx keeps x's dtype and layout"
    for k in oracle:
        # Outputs like x are held to x's dtype; the fp32 statistics and plane sums to fp32's floor
        # (plus twice the error of the reference run from the same fp16/bf16 inputs).
        d = dtype if k in ("out", "dx") else _acc(dtype)
        assert got[k].dtype == d, f"{k}: dtype {got[k].dtype}, expected {d}"
        assert_matches_oracle(got[k], oracle[k], same[k], dtype=d,
                              name=f"{k} [cuda {act} {noise_kind} {layout} {tuple(shape)} {dtype}]")


# ---------------------------------------------------------------- the contract vs the oracle

# (name, shape [N, C, H, W]) -- StyleGAN's maps, and the edges of the kernel's paths. "Fused": the
# plane fits one register tile (NCHW: 4096 pixels in fp32/fp16/bf16; channels_last: 256) and one
# kernel does everything; past that the plane is split into chunks over several blocks.
SHAPES = [
    ("4x4x512", (2, 512, 4, 4)),           # StyleGAN's first block: 4 threads per plane, 64 planes per block
    ("8x8x512", (2, 512, 8, 8)),
    ("1x1", (3, 7, 1, 1)),                 # one pixel: variance 0, out = t
    ("batch1_odd", (1, 3, 7, 9)),          # batch 1, a plane that divides no tile
    ("c3_groups_straddle", (3, 3, 5, 6)),  # channels_last: a 4-plane slot group spans two samples
    ("16x16_c24", (2, 24, 16, 16)),        # channels_last: the largest fused plane; C not a multiple of 16
    ("64x64x64", (1, 64, 64, 64)),         # NCHW: the largest fused plane (256 threads x 16)
    ("65x64", (2, 16, 65, 64)),            # just past one tile: split path, a partial last tile
    ("128x128x64", (2, 64, 128, 128)),     # split path, several chunks per plane
    ("256x256x32", (2, 32, 256, 256)),     # a large plane: many chunks per plane, combined in order
]


@pytest.mark.parametrize("case", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_oracle_shapes_layouts(case, layout, dtype):
    check_against_oracle(case[1], layout, dtype, act="lrelu", noise_kind="seed")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (2, 6, 80, 70)], ids=["fused", "split"])
def test_matches_oracle_all_acts(act, dtype, shape):
    check_against_oracle(shape, "contiguous", dtype, act=act, noise_kind="tensor")


@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
@pytest.mark.parametrize("with_ns,with_b", [(True, True), (False, False)], ids=["ns_b", "no_ns_b"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 20, 9, 9), (2, 20, 40, 40)], ids=["fused", "split"])
def test_matches_oracle_noise_kinds(noise_kind, with_ns, with_b, layout, dtype, shape):
    # Per-sample noise, one plane shared by the batch ([1, 1, H, W]: batch stride 0), seeded noise
    # drawn in the kernel, and none; noise strength and bias given or absent.
    check_against_oracle(shape, layout, dtype, act="swish", noise_kind=noise_kind, with_ns=with_ns, with_b=with_b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_oracle_multi_tile_chunks(layout):
    # Enough planes (4096) that a chunk holds several register tiles on any current GPU: the
    # per-thread statistics are merged across tiles (Chan's formula) before the block combines them.
    check_against_oracle((8, 512, 65, 64), layout, torch.float16, act="lrelu", noise_kind="seed")


@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (2, 8, 96, 96)], ids=["fused", "split"])
def test_offset_planes_keep_their_variance(shape):
    # |mean| >> std (x = 1000 + N(0, 1)): a variance from E[y^2] - E[y]^2 in fp32 would lose every
    # digit; the kernel's per-thread two-pass statistics merged by Chan's formula keep them.
    cuda = _cuda_contract()
    a = cast(make_args(shape, noise_kind="none", with_b=False), torch.float32)
    a["x"] = a["x"] + 1000.0
    out, stats = cuda.forward(a["x"], a["s"], a["t"], None, None, None, "linear", 0.0, 1.0, 1e-8, -1)
    want_out, want_stats = reference.forward(*(as_float64(a)[k] for k in ("x", "s", "t")), None, None, None,
                                             "linear", 0.0, 1.0, 1e-8, -1)
    torch.testing.assert_close(stats.double(), want_stats, rtol=1e-4, atol=0)
    torch.testing.assert_close(out.double(), want_out, rtol=0, atol=2e-3)


# ---------------------------------------------------------------- the raw CUDA kernel

def _raw(ext, a: dict, act: str, out_fwd=None, out_bwd=None, eps: float = 1e-8):
    spec = ACTIVATIONS[act]
    tail = (spec.code, spec.def_alpha, spec.def_gain, eps, a["seed"])
    out, stats = ext.adain_noise_forward(a["x"], a["s"], a["t"], a["noise"], a["ns"], a["b"], *tail, out_fwd)
    grads = ext.adain_noise_backward(a["g"], a["x"], a["s"], a["noise"], a["ns"], a["b"], stats, *tail, out_bwd)
    return [out, stats, *grads]


NAMES = ["out", "stats", "dx", "ds", "dt", "sdz", "sdzn"]


@pytest.mark.parametrize("shape", [(2, 6, 9, 7), (2, 6, 100, 90)], ids=["fused", "split"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_writes_every_output_element(shape, layout, dtype):
    # out and dx handed in filled with NaN: an element no block writes stays NaN. With out= the
    # results are bitwise those of a fresh allocation (the reductions have a fixed order).
    ext = _ext("cuda")
    a = cast(make_args(shape, layout, "seed"), dtype)
    fresh = _raw(ext, a, "lrelu")
    got = _raw(ext, a, "lrelu", out_fwd=poison_like(a["x"]), out_bwd=poison_like(a["x"]))
    for name, f, g in zip(NAMES, fresh, got):
        assert torch.isfinite(g).all(), f"{name}: {int((~torch.isfinite(g)).sum())} elements not written"
        assert torch.equal(f, g), f"{name}: differs from a run with fresh outputs"


def test_kernel_is_deterministic():
    # No atomics: the chunk partials are combined in a fixed order.
    ext = _ext("cuda")
    a = cast(make_args((2, 16, 200, 180), "channels_last", "seed"), torch.float32)
    first, second = _raw(ext, a, "swish"), _raw(ext, a, "swish")
    for name, f, s in zip(NAMES, first, second):
        assert torch.equal(f, s), f"{name} differs between two identical calls"


@pytest.mark.parametrize("shape", [(3, 2, 33, 35), (2, 2, 90, 70)], ids=["fused", "split"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", [0, SEED, 2**40 + 7])  # 2**40 + 7: the seed's high word matters
def test_seeded_noise_is_the_cpu_kernels_and_the_references(shape, layout, seed):
    # x = 0, linear, strength 1, no bias, s = 1, t = 0: out = (noise - mean) * rstd, so
    # out / rstd + mean is the noise the kernel drew; it must be reference.draw_noise (to fp32
    # rounding) and the CPU kernel must draw the same.
    cuda_ext, cpu_ext = _ext("cuda"), _ext("cpu")
    n, c, h, w = shape
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.zeros(shape, dtype=torch.float32).contiguous(memory_format=fmt)
    s, t = torch.ones(n, c), torch.zeros(n, c)
    code = ACTIVATIONS["linear"].code
    got = cuda_ext.adain_noise_forward(x.cuda(), s.cuda(), t.cuda(), None, None, None, code, 0.0, 1.0, 1e-8, seed)
    cpu = cpu_ext.adain_noise_forward(x, s, t, None, None, None, code, 0.0, 1.0, 1e-8, seed)
    out, stats = got[0].cpu().double(), got[1].cpu().double()
    drawn = out / stats[..., 1, None, None] + stats[..., 0, None, None]  # [N, C, H, W]
    want = reference.draw_noise(seed, n, h, w, dtype=torch.float64).expand(n, c, h, w)
    torch.testing.assert_close(drawn, want, rtol=0, atol=2e-5)
    torch.testing.assert_close(got[0].cpu(), cpu[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1].cpu(), cpu[1], rtol=1e-5, atol=1e-6)
    other = cuda_ext.adain_noise_forward(x.cuda(), s.cuda(), t.cuda(), None, None, None, code, 0.0, 1.0, 1e-8,
                                         seed + 1)
    assert not torch.allclose(other[0], got[0]), "a different seed must draw different noise"


# Agreement of the CUDA and CPU kernels on identical inputs, per dtype: (rtol, atol). They share the
# per-element math; they differ in CUDA intrinsics vs libm and in the order of the sums.
KERNEL_AGREEMENT = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-4, 1e-4),
}


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", list(KERNEL_AGREEMENT))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (2, 5, 70, 66)], ids=["fused", "split"])
def test_cuda_kernel_agrees_with_cpu_kernel(act, dtype, layout, shape):
    # Also float64, which the cuda backend does not advertise but the kernel implements.
    cuda_ext, cpu_ext = _ext("cuda"), _ext("cpu")
    a = make_args(shape, layout, "seed")
    got = _raw(cuda_ext, cast(a, dtype, "cuda"), act)
    want = _raw(cpu_ext, cast(a, dtype, "cpu"), act)
    rtol, atol = KERNEL_AGREEMENT[dtype]
    for name, gv, wv in zip(NAMES, got, want):
        # Plane sums add thousands of terms: scale the tolerance with their magnitude.
        scale = max(1.0, float(wv.abs().max())) if name in ("ds", "dt", "sdz", "sdzn") else 1.0
        torch.testing.assert_close(gv.cpu(), wv, rtol=rtol, atol=atol * scale, msg=lambda m: f"{name}: {m}")


def test_empty_planes():
    ext = _ext("cuda")
    a = cast(make_args((2, 3, 0, 4), noise_kind="seed"), torch.float32)
    out, stats, dx, ds, dt, sdz, sdzn = _raw(ext, a, "lrelu")
    assert out.shape == dx.shape == (2, 3, 0, 4) and stats.shape == (2, 3, 2)
    for v in (ds, dt, sdz, sdzn):
        assert v.shape == (2, 3) and (v == 0).all()


def test_rejects_tensors_on_the_wrong_device():
    # The shape, dtype and layout checks are shared with the CPU kernel (adain_noise_common.cpp);
    # here, what the CUDA entry point adds: device placement.
    ext = _ext("cuda")
    a = cast(make_args((2, 4, 3, 3), noise_kind="none"), torch.float32)
    code = ACTIVATIONS["lrelu"].code
    with pytest.raises(RuntimeError, match="x must be on cuda"):
        ext.adain_noise_forward(a["x"].cpu(), a["s"].cpu(), a["t"].cpu(), None, None, None, code, 0.2, 1.0, 1e-8, -1)
    with pytest.raises(RuntimeError, match="s \\(style scale\\) must be on"):
        ext.adain_noise_forward(a["x"], a["s"].cpu(), a["t"], None, None, None, code, 0.2, 1.0, 1e-8, -1)


def test_runs_on_the_tensors_device_and_current_stream():
    ext = _ext("cuda")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    a = cast(make_args((2, 8, 70, 70), noise_kind="seed"), torch.float32, device=dev)
    want = _raw(ext, a, "tanh")
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        got = _raw(ext, a, "tanh")
    side.synchronize()
    for name, g, w in zip(NAMES, got, want):
        assert g.device == dev, f"{name} on {g.device}"
        assert torch.equal(g, w), f"{name}: differs on a side stream"
