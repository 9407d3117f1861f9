"""spectral_norm's CPU kernels (ganfast.ops.spectral_norm.cpu: matvec_t, matvec_gram;
csrc/spectral_norm/) against the float64 reference on the same (rounded) inputs, under the accuracy
rule (ganfast/testing/accuracy.py), with NaN-poisoned outputs so an unwritten element fails; their
argument checks; and the power iteration run on them (reference.power_iteration_step) against the
definition (reference.power_iteration_ref).

tests/ops/test_spectral_norm_gpu.py runs the same cases on the CUDA and Triton kernels.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

import pytest
import torch

import ganfast
from ganfast.ops.spectral_norm import reference
from ganfast.testing import assert_matches_oracle, poison_like

# (name, O, K): W [O, K]. The CPU kernels walk rows in blocks of 4, columns in 32-byte vectors
# (8 floats, 4 doubles) and chunks of 1024, and split the rows over the threads (matvec_t the
# columns too when the rows do not give every thread a part).
SHAPES = [
    # O = 1: one block of one row
    ("one_row", 1, 37),
    # K = 1: no whole vector, only the scalar column tails
    ("one_column", 29, 1),
    ("one_by_one", 1, 1),
    # divides nothing: 7 = 4 + 3 rows, 13 = 8 + 5 columns
    ("odd", 7, 13),
    # tall and narrow: many row blocks, K below a vector
    ("tall", 301, 5),
    # wide: three column chunks (1024), an odd tail
    ("wide", 3, 2053),
    # BigGAN's shared class embedding [n_classes, dim] as W
    ("embedding", 1000, 128),
    # a 3x3 conv with odd channels: [Cout, Cin * 9]
    ("conv3x3_odd", 45, 17 * 9),
    # large: a row part per thread, each with its partial s (every thread)
    ("large", 1536, 1384),
    # small K, many rows: row parts of an odd number of blocks
    ("tall_small_k", 4099, 40),
    # few rows, long ones: matvec_t splits the columns (at 32-element boundaries) instead
    ("short_wide", 5, 40001),
]
SHAPE_BY_NAME = {s[0]: s for s in SHAPES}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
KS = [1, 2, 3]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_w(O: int, K: int, dtype: torch.dtype, device: str, seed: int, offset: int = 0) -> torch.Tensor:
    """Random W [O, K] in dtype; offset > 0 starts it that many elements into its storage (a
    contiguous view whose data is not 16-byte aligned)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(O, K, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if not offset:
        return w
    base = torch.empty(O * K + offset, dtype=dtype, device=device)
    base[offset:] = w.reshape(-1)
    return base[offset:].view(O, K)


def make_vectors(k: int, n: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(k, n, generator=gen, dtype=torch.float64).to(device=device, dtype=acc_dtype(dtype))


def _check_out(got: torch.Tensor, out: Optional[torch.Tensor], shape, dtype, device, label: str) -> None:
    if out is not None:
        assert got.data_ptr() == out.data_ptr(), f"{label}: the kernel did not write into out"
    assert got.shape == shape and got.dtype == acc_dtype(dtype) and got.device.type == torch.device(device).type, \
        f"{label}: got {tuple(got.shape)} {got.dtype} on {got.device}"
    assert got.is_contiguous(), label


def check_matvec_t(kernel: ModuleType, O: int, K: int, k: int, dtype: torch.dtype, device: str = "cpu",
                   poison: bool = True, seed: int = 0, offset: int = 0, name: str = "") -> None:
    """kernel.matvec_t on random W [O, K] in dtype and u [k, O] against reference.matvec_t in
    float64 on the same rounded inputs; reference.matvec_t in the kernel's dtypes sets the budget.
    poison: the kernel writes into a NaN-filled out (kernels that take one)."""
    w = make_w(O, K, dtype, device, seed, offset)
    u = make_vectors(k, O, dtype, device, seed)
    oracle = reference.matvec_t(w.double(), u.double())
    same = None if dtype == torch.float64 else reference.matvec_t(w, u)
    label = f"{name} matvec_t [{device} {dtype} W [{O}, {K}] k {k}]"
    out = poison_like(torch.empty(k, K, dtype=acc_dtype(dtype), device=device)) if poison else None
    got = kernel.matvec_t(w, u, out=out) if poison else kernel.matvec_t(w, u)
    _check_out(got, out, (k, K), dtype, device, label)
    assert_matches_oracle(got, oracle, same, dtype=acc_dtype(dtype), name=label)


def check_matvec_gram(kernel: ModuleType, O: int, K: int, k: int, dtype: torch.dtype, gram: bool,
                      device: str = "cpu", poison: bool = True, seed: int = 0, offset: int = 0, name: str = "") -> None:
    """kernel.matvec_gram on random W [O, K] in dtype and v [k, K]: t against v W^T and, when
    gram, s against (v W^T) W, in float64 on the same rounded inputs (the budget as check_matvec_t)."""
    w = make_w(O, K, dtype, device, seed, offset)
    v = make_vectors(k, K, dtype, device, seed)
    t_oracle, s_oracle = reference.matvec_gram(w.double(), v.double(), gram)
    t_same, s_same = (None, None) if dtype == torch.float64 else reference.matvec_gram(w, v, gram)
    label = f"{name} matvec_gram [{device} {dtype} W [{O}, {K}] k {k} gram {gram}]"
    t_out = s_out = None
    if poison:
        t_out = poison_like(torch.empty(k, O, dtype=acc_dtype(dtype), device=device))
        s_out = poison_like(torch.empty(k, K, dtype=acc_dtype(dtype), device=device)) if gram else None
        t, s = kernel.matvec_gram(w, v, gram, t_out=t_out, s_out=s_out)
    else:
        t, s = kernel.matvec_gram(w, v, gram)
    _check_out(t, t_out, (k, O), dtype, device, label + " t")
    assert_matches_oracle(t, t_oracle, t_same, dtype=acc_dtype(dtype), name=label + " t")
    if not gram:
        assert s is None, f"{label}: s must be None without gram"
        return
    _check_out(s, s_out, (k, K), dtype, device, label + " s")
    assert_matches_oracle(s, s_oracle, s_same, dtype=acc_dtype(dtype), name=label + " s")


def cpu_kernel() -> ModuleType:
    """ganfast.ops.spectral_norm.cpu, or a skip (no CPU extension) / failure (built without it)."""
    why = ganfast._ext.unavailable_reason("cpu")
    if why:
        pytest.skip(f"CPU extension unavailable: {why}")
    if not hasattr(ganfast._ext.extension("cpu"), "sn_matvec_gram"):
        pytest.fail("the built CPU extension has no spectral_norm kernels (built before they existed): rebuild it "
                    "(pip install -e . or python setup.py build_ext --inplace)")
    from ganfast.ops.spectral_norm import cpu
    return cpu


# ---------------------------------------------------------------- the CPU kernels vs the oracle

@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_cpu_matvec_t_matches_oracle(shape, dtype, k):
    name, O, K = shape
    check_matvec_t(cpu_kernel(), O, K, k, dtype, name=name)


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "t_only"])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_cpu_matvec_gram_matches_oracle(shape, dtype, k, gram):
    name, O, K = shape
    check_matvec_gram(cpu_kernel(), O, K, k, dtype, gram, name=name)


@pytest.mark.parametrize("threads", [1, 3, 5])
@pytest.mark.parametrize("name", ["large", "tall_small_k", "short_wide", "odd"])
def test_cpu_any_thread_count(name, threads):
    # The row / column parts depend on the thread count: one part, and more parts than cores
    # (3 and 5 do not divide the rows or columns evenly), five directions (three groups of <= 2).
    kernel = cpu_kernel()
    _, O, K = SHAPE_BY_NAME[name]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_matvec_t(kernel, O, K, 5, torch.float32, name=f"{name} threads {threads}")
        check_matvec_gram(kernel, O, K, 5, torch.bfloat16, True, name=f"{name} threads {threads}")
    finally:
        torch.set_num_threads(before)


def test_cpu_unaligned_w():
    # W starting one element into its storage: every vector load is unaligned
    kernel = cpu_kernel()
    for dtype in (torch.float32, torch.float16):
        check_matvec_t(kernel, 37, 264, 2, dtype, offset=1, name="unaligned")
        check_matvec_gram(kernel, 37, 264, 2, dtype, True, offset=1, name="unaligned")


def test_cpu_returns_new_tensors_without_out():
    kernel = cpu_kernel()
    w = torch.randn(6, 10, dtype=torch.float16)
    u, v = torch.randn(2, 6), torch.randn(2, 10)
    s = kernel.matvec_t(w, u)
    t, s2 = kernel.matvec_gram(w, v, True)
    assert s.shape == (2, 10) and t.shape == (2, 6) and s2.shape == (2, 10)
    assert all(x.dtype == torch.float32 and x.is_contiguous() for x in (s, t, s2))
    assert kernel.matvec_gram(w, v, False)[1] is None


@pytest.mark.parametrize("O,K", [(0, 5), (4, 0)])
def test_cpu_empty_w(O, K):
    # An empty sum is zero: O = 0 gives s = 0, K = 0 gives t = 0 (the poisoned outputs are cleared)
    kernel = cpu_kernel()
    w = torch.randn(O, K)
    u, v = torch.randn(2, O), torch.randn(2, K)
    s = kernel.matvec_t(w, u, out=poison_like(torch.empty(2, K)))
    t, s2 = kernel.matvec_gram(w, v, True, t_out=poison_like(torch.empty(2, O)), s_out=poison_like(torch.empty(2, K)))
    torch.testing.assert_close(s, torch.zeros(2, K))
    torch.testing.assert_close(t, torch.zeros(2, O))
    torch.testing.assert_close(s2, torch.zeros(2, K))


# ---------------------------------------------------------------- the power iteration on the CPU kernels

@pytest.mark.parametrize("n_iters", [1, 3])
@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("O,K", [(37, 53), (300, 517)])
def test_power_iteration_step_on_cpu_kernels_matches_definition(O, K, k, u_first, n_iters):
    # reference.power_iteration_step with the CPU passes (the fused single-pass form for k = 1)
    # equals the definition step by step, in float64.
    kernel = cpu_kernel()
    gen = torch.Generator().manual_seed(O + k)
    w = torch.randn(O, K, generator=gen, dtype=torch.float64)
    u = torch.randn(k, O, generator=gen, dtype=torch.float64)
    v = torch.randn(k, K, generator=gen, dtype=torch.float64)
    u0, v0 = u.clone(), v.clone()
    sigma, u1, v1 = reference.power_iteration_step(kernel, w, u, v, n_iters, 1e-12, u_first)
    sigma_ref, u_ref, v_ref = reference.power_iteration_ref(w, u, v, n_iters, 1e-12, u_first)
    assert torch.equal(u, u0) and torch.equal(v, v0), "the inputs were modified"
    label = f"power_iteration_step [W [{O}, {K}] k {k} u_first {u_first} n_iters {n_iters}]"
    assert_matches_oracle(sigma, sigma_ref, dtype=torch.float64, name=label + " sigma")
    assert_matches_oracle(u1, u_ref, dtype=torch.float64, name=label + " u")
    assert_matches_oracle(v1, v_ref, dtype=torch.float64, name=label + " v")


# ---------------------------------------------------------------- argument checks

def _t_args(**over) -> dict:
    a = dict(w=torch.randn(5, 12), u=torch.randn(2, 5), out=None)
    a.update(over)
    return a


def _gram_args(**over) -> dict:
    a = dict(w=torch.randn(5, 12), v=torch.randn(2, 12), gram=True, t_out=None, s_out=None)
    a.update(over)
    return a


BAD_T_ARGUMENTS = [
    # W is a matrix: the weight viewed as [out, -1]
    ("w_ndim", dict(w=torch.randn(5, 3, 4)), r"sn_matvec_t w must be a 2-D \[O, K\] matrix"),
    ("w_dtype", dict(w=torch.ones(5, 12, dtype=torch.int32)), r"w must be float16, bfloat16, float32 or float64"),
    ("w_noncontiguous", dict(w=torch.randn(12, 5).t()), r"w must be contiguous"),
    # u [k, O]: its length is W's rows, k >= 1
    ("u_length", dict(u=torch.randn(2, 12)), r"u must be \[k, O\] = \[k, 5\] with k >= 1"),
    ("u_ndim", dict(u=torch.randn(5)), r"u must be \[k, O\] = \[k, 5\]"),
    ("u_no_rows", dict(u=torch.randn(0, 5)), r"u must be \[k, O\] = \[k, 5\] with k >= 1"),
    # u in the accumulation dtype: float32 for a half W
    ("u_dtype", dict(w=torch.randn(5, 12, dtype=torch.float16), u=torch.randn(2, 5, dtype=torch.float16)),
     r"u must have dtype Float \(the accumulation dtype for w of dtype Half\)"),
    ("u_dtype_double", dict(w=torch.randn(5, 12, dtype=torch.float64)), r"u must have dtype Double"),
    ("u_noncontiguous", dict(u=torch.randn(5, 2).t()), r"u must be contiguous"),
    ("out_shape", dict(out=torch.empty(2, 5)), r"out must have shape \[2, 12\]"),
    ("out_dtype", dict(out=torch.empty(2, 12, dtype=torch.float64)), r"out must have dtype Float"),
    ("out_noncontiguous", dict(out=torch.empty(12, 2).t()), r"out must be contiguous"),
]

BAD_GRAM_ARGUMENTS = [
    ("w_ndim", dict(w=torch.randn(60)), r"sn_matvec_gram w must be a 2-D \[O, K\] matrix"),
    ("w_noncontiguous", dict(w=torch.randn(5, 24)[:, ::2]), r"w must be contiguous"),
    # v [k, K]: its length is W's columns
    ("v_length", dict(v=torch.randn(2, 5)), r"v must be \[k, K\] = \[k, 12\] with k >= 1"),
    ("v_dtype", dict(v=torch.randn(2, 12, dtype=torch.float64)), r"v must have dtype Float"),
    ("v_noncontiguous", dict(v=torch.randn(12, 2).t()), r"v must be contiguous"),
    ("t_out_shape", dict(t_out=torch.empty(2, 12)), r"t_out must have shape \[2, 5\]"),
    ("t_out_dtype", dict(t_out=torch.empty(2, 5, dtype=torch.float16)), r"t_out must have dtype Float"),
    ("s_out_shape", dict(s_out=torch.empty(1, 12)), r"s_out must have shape \[2, 12\]"),
    ("s_out_noncontiguous", dict(s_out=torch.empty(12, 2).t()), r"s_out must be contiguous"),
    # no s without gram: an s_out would stay unwritten
    ("s_out_without_gram", dict(gram=False, s_out=torch.empty(2, 12)), r"s_out was given with gram=False"),
]


@pytest.mark.parametrize("over,match", [b[1:] for b in BAD_T_ARGUMENTS], ids=[b[0] for b in BAD_T_ARGUMENTS])
def test_cpu_matvec_t_rejects_bad_arguments_naming_them(over, match):
    kernel = cpu_kernel()
    a = _t_args(**over)
    with pytest.raises(RuntimeError, match=match):
        kernel.matvec_t(a.pop("w"), a.pop("u"), **a)


@pytest.mark.parametrize("over,match", [b[1:] for b in BAD_GRAM_ARGUMENTS], ids=[b[0] for b in BAD_GRAM_ARGUMENTS])
def test_cpu_matvec_gram_rejects_bad_arguments_naming_them(over, match):
    kernel = cpu_kernel()
    a = _gram_args(**over)
    with pytest.raises(RuntimeError, match=match):
        kernel.matvec_gram(a.pop("w"), a.pop("v"), a.pop("gram"), **a)


def test_cpu_rejects_tensors_on_another_device():
    # W must be a CPU tensor, the vectors and outputs on W's device (meta stands in for another device)
    kernel = cpu_kernel()
    w, u, v = torch.randn(5, 12), torch.randn(2, 5), torch.randn(2, 12)
    with pytest.raises(RuntimeError, match=r"sn_matvec_t w must be on cpu"):
        kernel.matvec_t(w.to("meta"), u)
    with pytest.raises(RuntimeError, match=r"sn_matvec_gram w must be on cpu"):
        kernel.matvec_gram(w.to("meta"), v, True)
    with pytest.raises(RuntimeError, match=r"u must be on w's device cpu"):
        kernel.matvec_t(w, u.to("meta"))
    with pytest.raises(RuntimeError, match=r"v must be on w's device cpu"):
        kernel.matvec_gram(w, v.to("meta"), False)
    with pytest.raises(RuntimeError, match=r"out must be on w's device cpu"):
        kernel.matvec_t(w, u, out=torch.empty(2, 12, device="meta"))
    with pytest.raises(RuntimeError, match=r"t_out must be on w's device cpu"):
        kernel.matvec_gram(w, v, True, t_out=torch.empty(2, 5, device="meta"))


# ---- the one-call power iteration (sn_power_iteration) ----

@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("n_iters", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 37), (7, 13), (45, 17 * 9)], ids=["one_row", "odd", "conv3x3_odd"])
def test_cpu_one_call_power_iteration_equals_the_python_composition(shape, dtype, n_iters, u_first):
    """The eager path's one call runs reference.power_iteration_step's passes and vector ops in the
    same order: bit-identical sigma, u and v (u and v written in place)."""
    why = ganfast._ext.unavailable_reason("cpu")
    if why:
        pytest.skip(f"CPU extension unavailable: {why}")
    from ganfast.ops.spectral_norm import cpu
    gen = torch.Generator().manual_seed(3)
    acc = reference.acc_dtype(torch.empty(0, dtype=dtype))
    w = torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)
    u = torch.nn.functional.normalize(torch.randn(1, shape[0], generator=gen, dtype=acc), dim=1)
    v = torch.nn.functional.normalize(torch.randn(1, shape[1], generator=gen, dtype=acc), dim=1)
    sigma_want, u_want, v_want = reference.power_iteration_step(cpu, w, u, v, n_iters, 1e-12, u_first)
    u_got, v_got = u.clone(), v.clone()
    sigma_got = ganfast._ext.extension("cpu").sn_power_iteration(w, u_got, v_got, n_iters, 1e-12, u_first)
    for got, want in ((sigma_got, sigma_want), (u_got, u_want), (v_got, v_want)):
        assert torch.equal(got, want), (got, want)
