"""spectral_norm on the Triton backend: the kernel contract (matvec_t, matvec_gram) of
ganfast/ops/spectral_norm/reference.py.

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every output is held to the accuracy
    rule against the float64 reference on the same rounded inputs: error at most 2x the error of
    the reference in fp32 (its accumulation dtype). Small tiles (the `small_tiles` fixture) reach
    many row blocks, several column chunks a row, column splits and a multi-step reduction on
    small matrices; the module's own tiles are reached too. Then the power iteration of
    reference.power_iteration_step on these kernels against the definition.
(b) Ahead of time: every aot_specs() launch compiles for sm_80 and sm_90 without spills, within
    shared memory, with 128-bit loads of W where its rows allow them (slow: one compile subprocess).
"""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.spectral_norm import reference  # noqa: E402
from ganfast.ops.spectral_norm import triton as sn_triton  # noqa: E402
from ganfast.testing import assert_matches_oracle, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import has_vector_loads, reported, spec_id  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 64 elements: a 37 x 45 W takes 5 row blocks of 8 rows and 6 column chunks a row
    (the last ones partial), the reduction sums its 5 partials in steps of 2; a 3 x 130 W is one
    row block of 9 chunks, which matvec_t splits over 5 programs."""
    for name, value in dict(TILE=64, TARGET_PROGRAMS=8, MIN_ROWS=4, MIN_ROWS_T=8, MIN_BLOCK_K=4,
                            SUM_TILE=16, SUM_BLOCK_N=8).items():
        monkeypatch.setattr(sn_triton, name, value)


def _inputs(shape, k, dtype, seed=0, vector_axis=0):
    """(w [O, K] in dtype, x [k, shape[vector_axis]] fp32): seeded, drawn in float64, rounded."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.randn((k, shape[vector_axis]), generator=gen, dtype=torch.float64).to(torch.float32)
    return w, x


def _assert_fp32_result(got, shape):
    assert tuple(got.shape) == tuple(shape), (tuple(got.shape), shape)
    assert got.dtype == torch.float32 and got.is_contiguous() and got.device.type == torch.device(DEVICE).type


def _check_matvec_t(shape, k, dtype, seed=0):
    w, u = _inputs(shape, k, dtype, seed, vector_axis=0)
    got = sn_triton.matvec_t(w.to(DEVICE), u.to(DEVICE))
    _assert_fp32_result(got, (k, shape[1]))
    oracle = reference.matvec_t(w.double(), u.double())
    assert_matches_oracle(got, oracle, reference.matvec_t(w, u), name=f"matvec_t {list(shape)} k={k} {dtype}")


def _check_matvec_gram(shape, k, dtype, gram, seed=0):
    w, v = _inputs(shape, k, dtype, seed, vector_axis=1)
    t, s = sn_triton.matvec_gram(w.to(DEVICE), v.to(DEVICE), gram)
    t_oracle, s_oracle = reference.matvec_gram(w.double(), v.double(), gram)
    t_same, s_same = reference.matvec_gram(w, v, gram)
    what = f"matvec_gram {list(shape)} k={k} gram={gram} {dtype}"
    _assert_fp32_result(t, (k, shape[0]))
    assert_matches_oracle(t, t_oracle, t_same, name=f"{what}: t")
    if not gram:
        assert s is None
        return
    _assert_fp32_result(s, (k, shape[1]))
    assert_matches_oracle(s, s_oracle, s_same, name=f"{what}: s")


# ---- (a) semantics under the interpreter (or on a GPU) ----

# W shapes [O, K] under small tiles (64 elements, 2-4 rows): one comment per case.
SMALL_TILE_SHAPES = [
    pytest.param((1, 1), id="1x1"),             # a single element: one program, a 1x1 tile
    pytest.param((1, 45), id="O=1"),            # one row (D's final linear): s written without a reduction
    pytest.param((37, 1), id="K=1"),            # one column: a tile of rows only
    pytest.param((37, 45), id="37x45"),         # no block divides: the last row block and chunk are partial
    pytest.param((3, 130), id="few-rows-long"),  # one row block, many chunks (and splits for matvec_t)
    pytest.param((64, 16), id="exact-blocks"),  # sizes every block divides
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", SMALL_TILE_SHAPES)
def test_matvec_t(small_tiles, shape, k, dtype):
    _check_matvec_t(shape, k, dtype)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gram", [True, False], ids=["gram", "t-only"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", SMALL_TILE_SHAPES)
def test_matvec_gram(small_tiles, shape, k, gram, dtype):
    _check_matvec_gram(shape, k, dtype, gram)


# W shapes under the module's own tiles: one comment per case.
MODULE_TILE_SHAPES = [
    pytest.param((9, 1500), id="9x1500"),       # 4-row blocks of 1024 columns: 3 programs, 2 chunks (the
                                                # second partial), the reduction; matvec_t splits K
    pytest.param((300, 20), id="300x20"),       # narrow (G's linear): 128-row tiles of 32 columns
    pytest.param((1, 3000), id="1x3000"),       # one row: a 1 x 2048 tile, 2 chunks
]


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", MODULE_TILE_SHAPES)
def test_module_tiles(shape, dtype):
    k = 2 if dtype == torch.float32 else 1
    _check_matvec_t(shape, k, dtype)
    _check_matvec_gram(shape, k, dtype, True)


@needs_device
@pytest.mark.parametrize("gram", [True, False], ids=["gram", "t-only"])
def test_more_vectors_than_a_pass(small_tiles, gram):
    # k = 6 > MAX_NSV = 4: two passes (4 vectors, then 2) into row slices of t and s
    _check_matvec_t((37, 45), 6, torch.float32)
    _check_matvec_gram((37, 45), 6, torch.float32, gram)


@needs_device
def test_int64_offsets(monkeypatch, small_tiles):
    # Matrices near 2**31 elements take the int64-offset kernels; lower the limit to reach them.
    monkeypatch.setattr(sn_triton, "INDEX_32_LIMIT", 0)
    _check_matvec_t((37, 45), 2, torch.float16)
    _check_matvec_gram((37, 45), 3, torch.bfloat16, True)
    _check_matvec_gram((37, 45), 1, torch.float32, False)


@needs_device
def test_empty_inputs():
    w = torch.randn(3, 5, device=DEVICE)
    # no rows: s = u W is a sum of nothing
    s = sn_triton.matvec_t(torch.empty(0, 5, device=DEVICE), torch.empty(2, 0, device=DEVICE))
    assert s.shape == (2, 5) and not s.any()
    t, s = sn_triton.matvec_gram(torch.empty(0, 5, device=DEVICE), torch.randn(2, 5, device=DEVICE), True)
    assert t.shape == (2, 0) and s.shape == (2, 5) and not s.any()
    # no columns: t = v W^T is a sum of nothing
    t, s = sn_triton.matvec_gram(torch.empty(3, 0, device=DEVICE), torch.empty(2, 0, device=DEVICE), True)
    assert t.shape == (2, 3) and not t.any() and s.shape == (2, 0)
    # no vectors
    assert sn_triton.matvec_t(w, torch.empty(0, 3, device=DEVICE)).shape == (0, 5)
    t, s = sn_triton.matvec_gram(w, torch.empty(0, 5, device=DEVICE), False)
    assert t.shape == (0, 3) and s is None


@needs_device
def test_launchers_reject_bad_arguments():
    w = torch.randn(3, 5, device=DEVICE)
    u, v = torch.randn(1, 3, device=DEVICE), torch.randn(1, 5, device=DEVICE)
    with pytest.raises(ValueError, match="contiguous"):
        sn_triton.matvec_t(w.t(), torch.randn(1, 5, device=DEVICE))
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        sn_triton.matvec_gram(w.double(), v, True)
    with pytest.raises(ValueError, match=r"\[O, K\]"):
        sn_triton.matvec_t(w[0], u)
    with pytest.raises(ValueError, match=r"u must be a contiguous \[k, 3\] float32"):
        sn_triton.matvec_t(w, v)
    with pytest.raises(ValueError, match=r"v must be a contiguous \[k, 5\] float32"):
        sn_triton.matvec_gram(w, v.double(), False)
    with pytest.raises(ValueError, match=r"v must be"):
        sn_triton.matvec_gram(w, v[0], False)


@pytest.mark.parametrize("kind", ["gram", "t"])
def test_plan_covers_every_element_once(kind):
    # Over many shapes, the plan's blocks cover W, every program has work, tiles stay within TILE
    # and keep MIN_BLOCK_K columns where K has them.
    for o in [1, 2, 3, 5, 17, 100, 511, 512, 513, 4097, 24576, 100000]:
        for kk in [1, 2, 7, 16, 27, 100, 148, 1536, 4608, 9999, 65536]:
            cfg = sn_triton.plan(o, kk, kind)
            rows, block_k = cfg["BLOCK_O"], cfg["BLOCK_K"]
            what = (o, kk, cfg)
            assert rows * block_k <= sn_triton.TILE, what
            assert (cfg["row_blocks"] - 1) * rows < o <= cfg["row_blocks"] * rows, what
            assert (cfg["num_kb"] - 1) * block_k < kk <= cfg["num_kb"] * block_k, what
            splits, per_split = cfg["splits"], cfg["kb_per_split"]
            assert (splits - 1) * per_split < cfg["num_kb"] <= splits * per_split, what
            assert block_k >= min(triton.next_power_of_2(kk), sn_triton.MIN_BLOCK_K), what
            assert kind == "t" or cfg["splits"] == 1, what


@needs_device
@pytest.mark.parametrize("u_first", [False, True], ids=["v-first", "u-first"])
@pytest.mark.parametrize("k", [1, 2])
def test_power_iteration_step(small_tiles, k, u_first):
    # reference.power_iteration_step on the Triton passes against the definition, in fp32: sigma,
    # u and v after 3 iterations (k = 1: the fused gram passes; k = 2: Gram-Schmidt between passes).
    gen = torch.Generator().manual_seed(k)
    w = torch.randn(37, 45, generator=gen, dtype=torch.float64).float()
    u = torch.nn.functional.normalize(torch.randn(k, 37, generator=gen, dtype=torch.float64), dim=1).float()
    v = torch.nn.functional.normalize(torch.randn(k, 45, generator=gen, dtype=torch.float64), dim=1).float()
    got = reference.power_iteration_step(sn_triton, w.to(DEVICE), u.to(DEVICE), v.to(DEVICE), 3, 1e-12, u_first)
    oracle = reference.power_iteration_ref(w.double(), u.double(), v.double(), 3, 1e-12, u_first)
    same = reference.power_iteration_ref(w, u, v, 3, 1e-12, u_first)
    for name, g, o, sd in zip(("sigma", "u", "v"), got, oracle, same):
        assert g.dtype == torch.float32
        assert_matches_oracle(g, o, sd, name=f"power iteration k={k} u_first={u_first}: {name}")


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = sn_triton.aot_specs()


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
        assert has_vector_loads(result.ptx), f"no 128-bit loads: {result.row()}"
