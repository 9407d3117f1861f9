"""spectral_norm's CUDA kernels (ganfast.ops.spectral_norm.cuda, csrc/spectral_norm/spectral_norm_cuda.cu)
and Triton kernels (ganfast.ops.spectral_norm.triton) on a GPU: the CPU kernels' cases
(test_spectral_norm_kernels.py) against the float64 reference, the edges of the CUDA kernels' own
paths (16-byte vs scalar loads, direction groups, one block vs partials), NaN-poisoned outputs
(the CUDA kernels take preallocated ones), and the power iteration run on each.

Skipped without a CUDA device. Nothing here touches CUDA at import or collection: the device check
runs inside a fixture, and the Triton module is imported inside the tests. Run on a GPU machine with
GANFAST_TEST_GPU=1 pytest tests/ops/test_spectral_norm_gpu.py
"""
from __future__ import annotations

from types import ModuleType

import pytest
import torch

import ganfast
from ganfast import backends
from ganfast.ops.spectral_norm import reference
from ganfast.testing import assert_matches_oracle

from .test_spectral_norm_kernels import KS, SHAPES, check_matvec_gram, check_matvec_t

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BACKENDS = ["cuda", "triton"]


@pytest.fixture(autouse=True)
def _needs_cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


def _ext(kind: str):
    why = ganfast._ext.unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} extension unavailable: {why}")
    mod = ganfast._ext.extension(kind)
    if not hasattr(mod, "sn_matvec_gram"):
        pytest.fail(f"the built {kind} extension has no spectral_norm kernels (built before they existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return mod


def kernel_module(backend: str) -> ModuleType:
    """The kernel-contract module of `backend`, imported here (not at collection)."""
    if backend == "cuda":
        _ext("cuda")
        from ganfast.ops.spectral_norm import cuda
        return cuda
    if backend == "triton":
        if backends.triton_interpret():
            pytest.skip("TRITON_INTERPRET is set: run with GANFAST_TEST_GPU=1 to compile the Triton kernels for the GPU")
        why = backends.get_backend("triton").unavailable_reason()
        if why:
            pytest.skip(f"triton unavailable: {why}")
        from ganfast.ops.spectral_norm import triton
        return triton
    raise ValueError(backend)


def _poison(backend: str) -> bool:
    # The CUDA wrappers take preallocated outputs; the Triton contract is the bare signature.
    return backend == "cuda"


# ---------------------------------------------------------------- the CPU kernels' cases

@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matvec_t_matches_oracle(backend, shape, dtype, k):
    name, O, K = shape
    check_matvec_t(kernel_module(backend), O, K, k, dtype, "cuda", _poison(backend), name=name)


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "t_only"])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matvec_gram_matches_oracle(backend, shape, dtype, k, gram):
    name, O, K = shape
    check_matvec_gram(kernel_module(backend), O, K, k, dtype, gram, "cuda", _poison(backend), name=name)


# ---------------------------------------------------------------- the CUDA kernels' own paths

# (name, O, K, k, w offset in elements).
CUDA_CASES = [
    # K % 8 == 0, aligned: 16-byte loads (4 floats / 8 halves per thread)
    ("vector_loads", 40, 264, 2, 0),
    # the same W one element into its storage: not 16-byte aligned, the scalar path
    ("unaligned_w", 40, 264, 2, 1),
    # K % 8 != 0: the scalar path
    ("k_not_multiple_of_8", 40, 260, 2, 0),
    # five directions: two groups (4 + 1) over the same rows
    ("five_directions", 70, 136, 5, 0),
    # fewer rows than a block's minimum (8): one block, matvec_gram writes s directly; one row group for matvec_t
    ("one_block", 5, 1000, 1, 0),
    # BigGAN-128's 1536 -> 1536 3x3 conv: many blocks and column tiles, partials summed
    ("biggan_conv3x3", 1536, 13824, 1, 0),
    # many rows per block (64) and a long K (several column loops per thread in phase 2)
    ("long_rows", 20000, 4104, 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c[0] for c in CUDA_CASES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_paths_match_oracle(backend, case, dtype):
    name, O, K, k, offset = case
    kernel = kernel_module(backend)
    check_matvec_t(kernel, O, K, k, dtype, "cuda", _poison(backend), offset=offset, name=name)
    for gram in (True, False):
        check_matvec_gram(kernel, O, K, k, dtype, gram, "cuda", _poison(backend), offset=offset, name=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_is_deterministic(backend):
    # Partials are added in a fixed order (no atomics): two runs agree bit for bit
    kernel = kernel_module(backend)
    w = torch.randn(1536, 1384, device="cuda")
    u, v = torch.randn(2, 1536, device="cuda"), torch.randn(2, 1384, device="cuda")
    assert torch.equal(kernel.matvec_t(w, u), kernel.matvec_t(w, u))
    t1, s1 = kernel.matvec_gram(w, v, True)
    t2, s2 = kernel.matvec_gram(w, v, True)
    assert torch.equal(t1, t2) and torch.equal(s1, s2)


@pytest.mark.parametrize("n_iters", [1, 3])
@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_power_iteration_step_matches_definition(backend, k, u_first, n_iters):
    # In float32 on the GPU kernels against the float64 definition on the same rounded W, u, v;
    # the definition run in float32 sets the budget.
    kernel = kernel_module(backend)
    gen = torch.Generator().manual_seed(k)
    w = torch.randn(300, 517, generator=gen).cuda()
    u, v = torch.randn(k, 300, generator=gen).cuda(), torch.randn(k, 517, generator=gen).cuda()
    got = reference.power_iteration_step(kernel, w, u, v, n_iters, 1e-12, u_first)
    want = reference.power_iteration_ref(w.double(), u.double(), v.double(), n_iters, 1e-12, u_first)
    same = reference.power_iteration_ref(w, u, v, n_iters, 1e-12, u_first)
    for name, g, o, s in zip(("sigma", "u", "v"), got, want, same):
        assert_matches_oracle(g, o, s, dtype=torch.float32, name=f"{backend} power_iteration_step {name}")


def test_cuda_kernels_agree_with_cpu_kernels():
    # Same sums in a different order: float32 results agree to rounding
    cuda_ext, cpu_ext = _ext("cuda"), _ext("cpu")
    w = torch.randn(300, 1000)
    u, v = torch.randn(3, 300), torch.randn(3, 1000)
    torch.testing.assert_close(cuda_ext.sn_matvec_t(w.cuda(), u.cuda()).cpu(), cpu_ext.sn_matvec_t(w, u),
                               rtol=1e-5, atol=1e-4)
    t_gpu, s_gpu = cuda_ext.sn_matvec_gram(w.cuda(), v.cuda(), True)
    t_cpu, s_cpu = cpu_ext.sn_matvec_gram(w, v, True)
    torch.testing.assert_close(t_gpu.cpu(), t_cpu, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=1e-5, atol=1e-2)


def test_cuda_rejects_bad_devices_and_float64():
    # The shape, dtype and layout checks are shared with the CPU kernels (spectral_norm_common.cpp);
    # here what the CUDA entry points add: device placement, and no float64.
    cuda_ext = _ext("cuda")
    w = torch.randn(5, 12, device="cuda")
    u, v = torch.randn(2, 5, device="cuda"), torch.randn(2, 12, device="cuda")
    with pytest.raises(RuntimeError, match=r"sn_matvec_t w must be on cuda"):
        cuda_ext.sn_matvec_t(w.cpu(), u.cpu())
    with pytest.raises(RuntimeError, match=r"sn_matvec_gram w must be on cuda"):
        cuda_ext.sn_matvec_gram(w.cpu(), v.cpu(), True)
    with pytest.raises(RuntimeError, match=r"u must be on w's device"):
        cuda_ext.sn_matvec_t(w, u.cpu())
    with pytest.raises(RuntimeError, match=r"s_out must be on w's device"):
        cuda_ext.sn_matvec_gram(w, v, True, s_out=torch.empty(2, 12))
    with pytest.raises(RuntimeError, match=r"w must be float16, bfloat16, float32 on cuda"):
        cuda_ext.sn_matvec_t(w.double(), u.double())


def test_cuda_runs_on_the_tensors_device_and_current_stream():
    kernel = kernel_module("cuda")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the current one on multi-GPU
    w = torch.randn(700, 1384, device=dev)
    v = torch.randn(1, 1384, device=dev)
    want = kernel.matvec_gram(w, v, True)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        got = kernel.matvec_gram(w, v, True)
    side.synchronize()
    assert got[0].device == dev and got[1].device == dev
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), "differs on a side stream"


@pytest.mark.parametrize("O,K", [(0, 5), (4, 0)])
def test_cuda_empty_w(O, K):
    kernel = kernel_module("cuda")
    w = torch.randn(O, K, device="cuda")
    u, v = torch.randn(2, O, device="cuda"), torch.randn(2, K, device="cuda")
    assert torch.equal(kernel.matvec_t(w, u), torch.zeros(2, K, device="cuda"))
    t, s = kernel.matvec_gram(w, v, True)
    assert torch.equal(t, torch.zeros(2, O, device="cuda")) and torch.equal(s, torch.zeros(2, K, device="cuda"))
