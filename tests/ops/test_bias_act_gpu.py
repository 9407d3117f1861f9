"""bias_act on CUDA tensors: the cuda and triton backends against the float64 oracle, and the CUDA
kernel against the CPU kernel.

Skipped without a CUDA device. Nothing here touches CUDA at import or collection: the device check
runs inside a fixture. The triton cases need GANFAST_TEST_GPU=1 (tests/conftest.py otherwise sets
TRITON_INTERPRET=1, which would run the Triton kernels in the interpreter instead of on the GPU).
Run on a GPU machine with:  GANFAST_TEST_GPU=1 pytest tests/ops/test_bias_act_gpu.py
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ganfast
from ganfast import backends
from ganfast.ops import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS, bias_act_ref
from ganfast.testing import assert_matches_oracle

from .bias_act_cases import ACTS, SHAPES, TOLERANT_DTYPES, forward_and_grads, make_bias, make_input, resolved

pytestmark = pytest.mark.gpu

GPU_BACKENDS = ["cuda", "triton"]


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


def _require(backend: str) -> None:
    """Skip, naming why, when `backend` cannot run on CUDA tensors here."""
    why = backends.get_backend(backend).unavailable_reason()
    if why:
        pytest.skip(f"backend '{backend}' unavailable: {why}")
    if backend == "triton" and backends.triton_interpret():
        pytest.skip("TRITON_INTERPRET is set: export GANFAST_TEST_GPU=1 to run the Triton kernels on the GPU")


def _ext(kind: str):
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    return ganfast._ext.extension(kind)


def check_against_oracle(backend, act, shape, dim, layout, dtype, clamp, with_bias=True):
    """Forward, backward and double backward (x and b) of `backend` on CUDA tensors against the
    float64 reference, under the accuracy rule.

    The inputs are rounded to `dtype` before the oracle sees them: otherwise an input that the
    rounding moves across a clamp boundary or a kink flips a whole gradient element, and the
    comparison measures the input rounding (a bf16 step is 0.4%), not the kernel."""
    rnd = lambda t: None if t is None else t.to(dtype).to(torch.float64)
    x64 = rnd(make_input(shape, layout, torch.float64))
    b64 = rnd(make_bias(x64.shape[dim], torch.float64)) if with_bias else None
    dy64, ddx64 = rnd(torch.randn(x64.shape, dtype=torch.float64)), rnd(torch.randn(x64.shape, dtype=torch.float64))
    kw = resolved(act, x64, b64, dim, clamp)
    ref = lambda x, b: bias_act_ref(x, b, **kw)
    fast = lambda x, b: bias_act(x, b, dim=dim, act=act, clamp=clamp, backend=backend)
    cast = lambda t: None if t is None else t.to(device="cuda", dtype=dtype)
    oracle = forward_and_grads(ref, x64, b64, dy64, ddx64)
    same = forward_and_grads(ref, cast(x64), cast(b64), cast(dy64), cast(ddx64))
    got = forward_and_grads(fast, cast(x64), cast(b64), cast(dy64), cast(ddx64))
    assert got["y"].dtype == dtype and got["y"].stride() == cast(x64).stride(), "y keeps x's dtype and layout"
    for k in oracle:
        assert_matches_oracle(got[k], oracle[k], same[k], dtype=dtype, name=f"{backend}/{act}/{k}/{layout}{tuple(shape)}")


# ---------------------------------------------------------------- fast backends vs the oracle

@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", TOLERANT_DTYPES)
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_matches_oracle_all_acts_dtypes(backend, act, dtype, clamp):
    # Forward, backward and double backward (x and b) against the float64 reference.
    _require(backend)
    check_against_oracle(backend, act, (2, 5, 6, 7), 1, "contiguous", dtype, clamp)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("case", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("dtype", TOLERANT_DTYPES)
@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("swish", 1.1)])
def test_matches_oracle_shapes_layouts(backend, case, dtype, act, clamp):
    _require(backend)
    _, shape, dim, layout = case
    check_against_oracle(backend, act, shape, dim, layout, dtype, clamp)


# Shapes aimed at the CUDA kernel's paths: 16-byte vectors (4 fp32, 8 fp16/bf16), the scalar tail,
# rows shorter than a vector, and the grid-stride loop.
GPU_SHAPES = [
    ("nchw_inner_3", (4, 6, 3), 1, "contiguous"),               # rows of 3: a vector spans 2-3 channels
    ("nchw_inner_8", (3, 5, 2, 4), 1, "contiguous"),            # rows exactly one fp16 vector long
    ("tail_after_vectors", (1, 3, 7, 5), 1, "contiguous"),      # numel 105: vectors then a scalar tail
    ("channels_last_c16", (2, 16, 3, 5), 1, "channels_last"),   # C % 8 == 0: bias loaded as a vector
    ("channels_last_c12", (2, 12, 3, 5), 1, "channels_last"),   # C % 8 != 0: a vector wraps past C
    ("linear_c8", (5, 8), 1, "contiguous"),                     # [N, C], one fp16 vector per row
    ("grid_stride", (8, 64, 128, 130), 1, "contiguous"),        # 8.5M elements: more than one grid pass
    ("dim0_1d", (37,), 0, "contiguous"),                        # 1-D x: db is out itself
]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("case", GPU_SHAPES, ids=[s[0] for s in GPU_SHAPES])
@pytest.mark.parametrize("dtype", TOLERANT_DTYPES)
def test_matches_oracle_vector_and_tail_paths(backend, case, dtype):
    _require(backend)
    _, shape, dim, layout = case
    check_against_oracle(backend, "softplus", shape, dim, layout, dtype, 2.0)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", TOLERANT_DTYPES)
def test_unaligned_and_noncontiguous_views(backend, dtype):
    # x at storage offset 1 (pointer not 16-byte aligned: the scalar path), and a strided view that
    # the wrapper must copy rather than misread.
    _require(backend)
    base = torch.randn(2 * 6 * 5 * 7 + 1, dtype=torch.float64)
    b = make_bias(6, torch.float64)
    for x64 in (base[1:].view(2, 6, 5, 7), torch.randn(2, 6, 5, 14, dtype=torch.float64)[..., ::2]):
        x = x64.to(device="cuda", dtype=dtype)
        assert x64.dim() == 4
        got = bias_act(x, b.to("cuda", dtype), act="tanh", clamp=0.9, backend=backend)
        oracle = bias_act_ref(x.cpu().double(), b.to(dtype).double(), 1, "tanh", 0.0, 1.0, 0.9)  # rounded inputs
        same = bias_act_ref(x.cpu(), b.to(dtype), 1, "tanh", 0.0, 1.0, 0.9)
        assert_matches_oracle(got, oracle, same, dtype=dtype, name=f"{backend}/unaligned-or-strided")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("act", ["lrelu", "swish", "softplus"])
def test_r1_penalty_matches_reference(backend, act):
    # R1 (a gradient of a gradient into the discriminator's parameters) in fp32 on the GPU.
    _require(backend)
    g = torch.Generator().manual_seed(3)
    w1 = (torch.randn(6, 3, 3, 3, generator=g) * 0.3).cuda()
    b1 = (torch.randn(6, generator=g) * 0.1).cuda()
    w2 = (torch.randn(1, 6 * 8 * 8, generator=g) * 0.05).cuda()
    real = torch.randn(4, 3, 8, 8, generator=g).cuda()

    def r1_grads(name):
        params = [p.clone().requires_grad_(True) for p in (w1, b1, w2)]
        x = real.clone().requires_grad_(True)
        h = bias_act(F.conv2d(x, params[0], padding=1), params[1], act=act, backend=name)
        logits = h.flatten(1) @ params[2].t()
        (gx,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = gx.square().sum(dim=[1, 2, 3]).mean()
        return [penalty] + list(torch.autograd.grad(penalty, params, materialize_grads=True))

    for got, exp in zip(r1_grads(backend), r1_grads("reference")):
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_empty_input(backend):
    _require(backend)
    x = torch.randn(3, 4, 0, 5, device="cuda", requires_grad=True)
    b = torch.randn(4, device="cuda", requires_grad=True)
    y = bias_act(x, b, act="tanh", backend=backend)
    assert y.shape == x.shape
    dx, db = torch.autograd.grad(y.sum(), (x, b))
    assert dx.shape == x.shape and db.shape == (4,) and (db == 0).all()


# ---------------------------------------------------------------- the raw CUDA kernel

def _raw_inputs(dtype, shape=(3, 10, 7, 5), dim=1, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    like = lambda: torch.randn(x.shape, generator=g, dtype=torch.float64).to(memory_format=(
        torch.channels_last if layout == "channels_last" else torch.contiguous_format))
    b = torch.randn(x.shape[dim], generator=g, dtype=torch.float64) * 0.5
    return [t.to(dtype) for t in (x, b, like(), like())]


# Agreement of the CUDA and CPU kernels (same per-element math, bias_act_math.h), per dtype:
# (rtol, atol). They differ only in libm vs CUDA intrinsics and in the order db is summed.
KERNEL_AGREEMENT = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("dtype", list(KERNEL_AGREEMENT))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_kernel_agrees_with_cpu_kernel(act, order, dtype, layout):
    # Also float64, which the cuda backend does not advertise but the kernel implements.
    cuda_ext, cpu_ext = _ext("cuda"), _ext("cpu")
    x, b, g, gg = _raw_inputs(dtype, layout=layout)
    spec = ACTIVATIONS[act]
    args = (order, 1, spec.code, spec.def_alpha, spec.def_gain, 1.5, True)
    cpu_out, cpu_db = cpu_ext.bias_act(x, b, g if order >= 1 else None, gg if order == 2 else None, *args)
    cu = [t.cuda() for t in (x, b, g, gg)]
    out, db = cuda_ext.bias_act(cu[0], cu[1], cu[2] if order >= 1 else None, cu[3] if order == 2 else None, *args)
    assert out.dtype == dtype and out.stride() == x.stride(), "out keeps x's dtype and layout"
    rtol, atol = KERNEL_AGREEMENT[dtype]
    torch.testing.assert_close(out.cpu(), cpu_out, rtol=rtol, atol=atol)
    # db sums ~100 values: its rounding tolerance grows with them.
    torch.testing.assert_close(db.cpu(), cpu_db, rtol=rtol * 10, atol=atol * 10)


def test_cuda_kernel_db_matches_float64_sum():
    cuda_ext = _ext("cuda")
    for shape, dim, layout in [((4, 6, 33, 17), 1, "contiguous"), ((4, 6, 5, 3), 1, "channels_last"),
                               ((9, 24), 1, "contiguous"), ((37,), 0, "contiguous")]:
        x, b, g, _ = _raw_inputs(torch.float32, shape, dim, layout)
        out, db = cuda_ext.bias_act(x.cuda(), b.cuda(), g.cuda(), None, 1, dim, 8, 0.0, 1.0, -1.0, True)
        dims = [d for d in range(len(shape)) if d != dim]
        want = out.double().sum(dims) if dims else out.double()
        assert db.dtype == torch.float32 and db.shape == (shape[dim],)
        torch.testing.assert_close(db.double(), want, rtol=1e-5, atol=1e-4)


def test_cuda_kernel_covers_vector_tail_and_unaligned_paths():
    # 1-D fp16 x of n elements from an aligned and an unaligned (offset 1) pointer: whole 8-element
    # vectors, the scalar tail, or everything scalar. out comes from torch.empty, so an element no
    # path writes would be arbitrary and fail the comparison.
    cuda_ext = _ext("cuda")
    for n in (1, 7, 8, 9, 4096 + 3):
        base = torch.randn(n + 1, device="cuda", dtype=torch.float16)
        for x in (base[:n], base[1:]):
            out, _ = cuda_ext.bias_act(x, None, None, None, 0, 0, 1, 0.0, 1.0, -1.0, False)
            torch.testing.assert_close(out, torch.relu(x), rtol=0, atol=0)


def test_cuda_kernel_rejects_tensors_on_the_wrong_device():
    # The shape, layout and dtype checks are shared with the CPU kernel (bias_act_common.cpp) and
    # tested in test_bias_act.py; here, what only the CUDA entry point adds: device placement.
    cuda_ext = _ext("cuda")
    x = torch.randn(2, 4, 3, device="cuda")
    with pytest.raises(RuntimeError, match="x must be on cuda"):
        cuda_ext.bias_act(x.cpu(), None, None, None, 0, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="b must be on"):
        cuda_ext.bias_act(x, torch.randn(4), None, None, 0, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="g must be on"):
        cuda_ext.bias_act(x, None, torch.randn(2, 4, 3), None, 1, 1, 2, 0.2, 1.0, -1.0, False)


def test_cuda_kernel_runs_on_the_tensors_device_and_current_stream():
    cuda_ext = _ext("cuda")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    x = torch.randn(64, 33, device=dev)
    b = torch.randn(33, device=dev)
    s = torch.cuda.Stream(device=dev)
    with torch.cuda.stream(s):
        out, db = cuda_ext.bias_act(x, b, None, None, 0, 1, 3, 0.0, 1.0, -1.0, True)
    s.synchronize()
    assert out.device == dev and db.device == dev
    torch.testing.assert_close(out, torch.tanh(x + b))
    torch.testing.assert_close(db, torch.tanh(x + b).sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_cuda_kernel_64bit_indexing():
    # 2^31 + 9 fp16 elements (4 GiB in, 4 GiB out): offsets past int32. Checked at both ends.
    cuda_ext = _ext("cuda")
    n = 2**31 + 9
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * n * 2:
        pytest.skip(f"needs {3 * n * 2 / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    c = 3
    x = torch.empty(n // c * c, dtype=torch.float16, device="cuda").uniform_(-2, 2).view(-1, c)
    b = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float16, device="cuda")
    out, _ = cuda_ext.bias_act(x, b, None, None, 0, 1, 2, 0.2, 1.0, -1.0, False)
    for rows in (slice(0, 1000), slice(x.shape[0] - 1000, None)):
        want = F.leaky_relu(x[rows].float() + b.float(), 0.2).half()
        torch.testing.assert_close(out[rows], want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_kernels_write_every_output_element(backend):
    import importlib
    from .bias_act_cases import check_poisoned_output
    _require(backend)
    mod = importlib.import_module(f"ganfast.ops.bias_act.{backend}")
    check_poisoned_output(mod.run, "cuda", dtypes=(torch.float32, torch.float16, torch.bfloat16))
