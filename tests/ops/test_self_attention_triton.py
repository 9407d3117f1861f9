"""self_attention on the Triton backend: attention_forward / attention_backward against the
contract functions attention_ref / attention_backward_ref of ganfast/ops/self_attention/reference.py.

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. o, the row statistics (as the
    log-sum-exp they give), dq, dk and dv are held to the accuracy rule against the reference in
    float64 on the same rounded inputs: error at most 2x that of the reference run in the same
    dtype, plus a floor. The backward runs on the kernels' own o and row statistics. Outputs are poisoned (every allocation of the launchers filled with
    NaN), so an unwritten element fails. The interpreter computes bf16 dots wrongly, so there the
    bf16 kernels upcast their dot operands (after rounding them to bf16): DOT_FP32.
(b) Bad arguments raise, naming the argument.
(c) Ahead of time: every launch configuration compiles for sm_80 and sm_90 without spills and
    within shared memory, the fp16 / bf16 dots on tensor cores (mma.sync on sm_80, wgmma or
    mma.sync on sm_90) (slow: one compile subprocess).
"""
from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("triton")

from ganfast import backends  # noqa: E402
from ganfast.ops.self_attention import reference as ref  # noqa: E402
from ganfast.ops.self_attention import triton as attn_triton  # noqa: E402
from ganfast.testing import triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every tensor the launchers allocate starts as NaN."""
    def alloc(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(attn_triton, "_alloc", alloc)


@pytest.fixture
def small_tiles(monkeypatch):
    """16 x 16 tiles in every kernel, so small problems span several query and key blocks (the
    last of each partial): the online softmax rescales, the backward loops accumulate."""
    def tiles(kernel, d, dv, dtype):
        return dict(BLOCK_N=16, BLOCK_M=16, num_warps=4, num_stages=1)
    monkeypatch.setattr(attn_triton, "tiles", tiles)


# (B, N, M, D, Dv): one comment per case. N = H * W queries, M = N / 4 keys (2x2 max-pooled maps).
SHAPES = [
    pytest.param((1, 36, 9, 8, 32), id="b1-6x6-C64"),        # batch 1; C = 64: D = 8, Dv = 32, padded to 16 and
                                                             # 32; 36 queries and 9 keys, less than one block
    pytest.param((2, 100, 25, 24, 96), id="10x10-C192"),     # BigGAN's C = 192: D = 24, Dv = 96 (padded to 32,
                                                             # 128); 100 queries, no block divides them
    pytest.param((2, 288, 72, 32, 128), id="12x24-C256"),    # SAGAN's C = 256; 72 keys: 2-3 key blocks, the last
                                                             # partial; 288 queries, 3-9 query blocks
]
LAYOUTS = [
    pytest.param("maps", id="maps"),                # transposed views of [B, D, N] maps: the real layout
    pytest.param("contiguous", id="contiguous"),    # [B, N, D] contiguous
]


def _tensor(gen, b, rows, width, dtype, layout, magnitude=1.0):
    """A [b, rows, width] tensor: a transposed view of [b, width, rows] ('maps') or contiguous."""
    if layout == "maps":
        t = torch.randn(b, width, rows, generator=gen, dtype=torch.float64).transpose(1, 2)
    else:
        t = torch.randn(b, rows, width, generator=gen, dtype=torch.float64)
    return (t * magnitude).to(dtype).to(DEVICE)


def _inputs(shape, dtype, layout="maps", seed=0, magnitude=1.0) -> dict:
    """q, k, v (scaled by magnitude) in `layout` and do contiguous, in dtype on DEVICE."""
    gen = torch.Generator().manual_seed(seed)
    b, n, m, d, dv = shape
    return dict(q=_tensor(gen, b, n, d, dtype, layout, magnitude), k=_tensor(gen, b, m, d, dtype, layout, magnitude),
                v=_tensor(gen, b, m, dv, dtype, layout), do=_tensor(gen, b, n, dv, dtype, "contiguous"))


def _as(args: dict, dtype=None) -> dict:
    """args on the CPU (in dtype when given): the reference's inputs."""
    return {k: v.to(device="cpu", dtype=dtype or v.dtype) for k, v in args.items()}


def _assert_output(got: torch.Tensor, shape: tuple, dtype: torch.dtype) -> None:
    assert tuple(got.shape) == shape and got.dtype == dtype, (tuple(got.shape), got.dtype, shape, dtype)
    assert got.is_contiguous() and got.device.type == torch.device(DEVICE).type


def _check_forward(args: dict, scale: float = 1.0, what: str = ""):
    """attention_forward against attention_ref under the accuracy rule; returns (o, stats)."""
    q, k, v = args["q"], args["k"], args["v"]
    b, n, _ = q.shape
    o, stats = attn_triton.attention_forward(q, k, v, scale)
    _assert_output(o, (b, n, v.shape[2]), q.dtype)
    _assert_output(stats, (b, attn_triton.stats_rows(q.dtype, v.shape[2]), n), torch.float32)
    if q.dtype != torch.float32:   # fp16 / bf16: o in fp32 too, o itself its rounding
        o32 = stats[:, 2:].transpose(1, 2)
        assert torch.equal(o32.to(q.dtype), o)
        o64 = ref.attention_ref(*(args[k].to(device="cpu", dtype=torch.float64) for k in "qkv"), scale)
        assert (o32.double().cpu() - o64).abs().max() <= (o.double().cpu() - o64).abs().max()
    lse = attn_triton.lse_of(stats)
    a64, same = _as(args, torch.float64), _as(args)
    o64, lse64 = ref.attention_ref(a64["q"], a64["k"], a64["v"], scale, return_lse=True)
    o_same, lse_same = ref.attention_ref(same["q"], same["k"], same["v"], scale, return_lse=True)
    name = f"{tuple(q.shape)} keys {k.shape[1]} Dv {v.shape[2]} {q.dtype} scale {scale} {what}"
    assert_matches_oracle(o, o64, o_same, name=f"o {name}")
    assert_matches_oracle(lse, lse64, lse_same, dtype=q.dtype, name=f"lse {name}")
    # the row max is the largest score (the oracle's, up to the scores' own rounding)
    s64 = torch.matmul(a64["q"], a64["k"].transpose(1, 2)) * scale
    s_same = torch.matmul(same["q"], same["k"].transpose(1, 2)) * scale
    assert_matches_oracle(stats[:, 0], s64.amax(-1), s_same.amax(-1), dtype=q.dtype, name=f"row max {name}")
    return o, stats


def _check_backward(args: dict, scale: float = 1.0, what: str = "", factor: float = 2.0):
    """attention_backward (on the kernels' own o and row statistics) against attention_backward_ref
    under the accuracy rule (error <= factor x the reference's in dtype + floor); returns (dq, dk, dv)."""
    q, k, v, do = args["q"], args["k"], args["v"], args["do"]
    o, stats = attn_triton.attention_forward(q, k, v, scale)
    grads = attn_triton.attention_backward(do, q, k, v, o, stats, scale)
    a64, same = _as(args, torch.float64), _as(args)
    oracle = ref.attention_backward_ref(a64["do"], a64["q"], a64["k"], a64["v"], scale)
    in_dtype = ref.attention_backward_ref(same["do"], same["q"], same["k"], same["v"], scale)
    name = f"{tuple(q.shape)} keys {k.shape[1]} Dv {v.shape[2]} {q.dtype} scale {scale} {what}"
    for label, got, want, same_dtype, like in zip(("dq", "dk", "dv"), grads, oracle, in_dtype, (q, k, v)):
        _assert_output(got, tuple(like.shape), like.dtype)
        assert_matches_oracle(got, want, same_dtype, name=f"{label} {name}", factor=factor)
    return grads


# ---- (a) semantics under the interpreter (or on a GPU) ----

@needs_device
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward(shape, dtype, layout):
    _check_forward(_inputs(shape, dtype, layout, seed=1))


@needs_device
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward(shape, dtype, layout):
    _check_backward(_inputs(shape, dtype, layout, seed=2))


# The float32 backward at scores of ~1400 under the interpreter is held to 16x the reference's
# error, not 2x. The backward recomputes P = exp(s - m) / l with the forward's row max m and sum l
# (exact up to the scores' own rounding: a P built from the reference's fp32 scores and the kernels'
# m, l has the reference's error, checked). But the interpreter's tile dots are numpy GEMMs whose
# summation order depends on the tile shape, so the backward's k q^T differs from the forward's
# q k^T by an ulp or two (an ulp of 1400 is 1.2e-4), a relative error of the dominant P that the
# reference's self-consistent softmax does not have: measured dv 14x, dk 4.4x at 16x16 tiles, 1.0x
# at 64x64. Compiled, the fp32 dots sum over D in one order in both kernels, so on a GPU the rule
# is 2x (unverified until a GPU run: GANFAST_TEST_GPU=1 runs this file there). fp16 / bf16 stay far
# inside 2x: their references round the scores themselves.
LARGE_SCORE_BACKWARD_FACTOR = {torch.float32: 16.0 if backends.triton_interpret() else 2.0,
                               torch.float16: 2.0, torch.bfloat16: 2.0}


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_scores(small_tiles, dtype):
    # q and k scaled by 8: scores of several hundred, so a later key block's maximum exceeds the
    # running one by far more than fp32's exp range (the accumulator must be rescaled, never
    # overflow); with 16-key tiles every row sees 7 key blocks.
    args = _inputs((2, 100, 100, 24, 96), dtype, seed=3, magnitude=8.0)
    _check_forward(args, what="large scores")
    _check_backward(args, what="large scores", factor=LARGE_SCORE_BACKWARD_FACTOR[dtype])


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_several_blocks_and_scale(small_tiles, dtype):
    # 16 x 16 tiles: 7 query blocks and 2 key blocks (the last 9 of 16 keys), so every kernel
    # loops with partial blocks; scale = 1/sqrt(D) (not SAGAN's 1) reaches o, lse, dq and dk.
    args = _inputs((1, 100, 25, 24, 96), dtype, seed=4)
    _check_forward(args, scale=24 ** -0.5, what="16x16 tiles")
    _check_backward(args, scale=24 ** -0.5, what="16x16 tiles")


@needs_device
def test_backward_is_deterministic():
    # No atomics: the same inputs give the same bits.
    args = _inputs((2, 100, 25, 24, 96), torch.float16, seed=5)
    q, k, v, do = args["q"], args["k"], args["v"], args["do"]
    o, stats = attn_triton.attention_forward(q, k, v)
    first = attn_triton.attention_backward(do, q, k, v, o, stats)
    second = attn_triton.attention_backward(do, q, k, v, o, stats)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@needs_device
def test_empty_inputs():
    gen = torch.Generator().manual_seed(6)
    r = lambda *s: torch.randn(*s, generator=gen).to(DEVICE)  # noqa: E731
    q, k, v = r(2, 5, 8), r(2, 0, 8), r(2, 0, 16)          # no keys: o = 0, lse = -inf, as the reference
    o, stats = attn_triton.attention_forward(q, k, v)
    assert o.shape == (2, 5, 16) and not o.any() and stats.shape == (2, 2, 5)
    assert (attn_triton.lse_of(stats) == float("-inf")).all()
    dq, dk, dv = attn_triton.attention_backward(r(2, 5, 16), q, k, v, o, stats)
    assert dq.shape == q.shape and not dq.any() and dk.shape == k.shape and dv.shape == v.shape
    q, k, v = r(2, 0, 8), r(2, 3, 8), r(2, 3, 16)          # no queries: nothing reaches k and v
    o, stats = attn_triton.attention_forward(q, k, v)
    assert o.shape == (2, 0, 16) and stats.shape == (2, 2, 0)
    dq, dk, dv = attn_triton.attention_backward(r(2, 0, 16), q, k, v, o, stats)
    assert dq.shape == (2, 0, 8) and not dk.any() and not dv.any() and dv.shape == (2, 3, 16)


def test_dot_fp32_only_for_bf16_under_the_interpreter():
    assert attn_triton.dot_fp32(torch.bfloat16) == backends.triton_interpret()
    assert not attn_triton.dot_fp32(torch.float16) and not attn_triton.dot_fp32(torch.float32)


@pytest.mark.parametrize("d,dv,width_class", [(8, 32, 128), (24, 96, 128), (32, 128, 128), (64, 256, 256),
                                              (128, 512, 512), (128, 32, 512), (1, 512, 512)])
def test_width_classes(d, dv, width_class):
    # Tiles are keyed by the wider of Dv and 4 D (padded); every class has tiles for every kernel.
    assert attn_triton.width_class(d, dv) == width_class
    for kernel in ("forward", "dkdv", "dq"):
        for dtype in DTYPES:
            t = attn_triton.tiles(kernel, d, dv, dtype)
            assert t["BLOCK_N"] >= 16 and t["BLOCK_M"] >= 16, (kernel, dtype, t)


# ---- (b) bad arguments ----

def test_rejects_bad_arguments():
    f = attn_triton.attention_forward
    a = _inputs((2, 36, 9, 8, 32), torch.float32)
    q, k, v, do = a["q"], a["k"], a["v"], a["do"]
    with pytest.raises(ValueError, match=r"q must be a \[B, N, D\] tensor"):
        f(q[0], k, v)
    with pytest.raises(TypeError, match="q must be float32, float16 or bfloat16"):
        f(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="k must have q's dtype"):
        f(q, k.half(), v)
    with pytest.raises(TypeError, match="v must be a"):
        f(q, k, v.tolist())
    with pytest.raises(ValueError, match=r"k must be \[B, M, D\] = \[2, M, 8\]"):
        f(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"v must be \[B, M, Dv\] = \[2, 9, Dv\]"):
        f(q, k, v[:, :5])
    wide = torch.zeros(1, 4, 129, device=DEVICE)
    with pytest.raises(ValueError, match="query/key width D must be 1 to 128"):
        f(wide, wide, torch.zeros(1, 4, 8, device=DEVICE))
    with pytest.raises(ValueError, match="value width Dv must be 1 to 512"):
        f(q, k, torch.zeros(2, 9, 513, device=DEVICE))
    with pytest.raises(ValueError, match="scale must be finite"):
        f(q, k, v, float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        f(q, k, v, torch.tensor(1.0))
    o, stats = f(q, k, v)
    b = attn_triton.attention_backward
    with pytest.raises(ValueError, match=r"do must be \[B, N, Dv\] = \[2, 36, 32\] in q's dtype"):
        b(do.half(), q, k, v, o, stats)
    with pytest.raises(ValueError, match=r"o must be \[B, N, Dv\]"):
        b(do, q, k, v, o[:, :7], stats)
    with pytest.raises(ValueError, match=r"stats must be \[B, R, N\] = \[2, 2, 36\] float32"):
        b(do, q, k, v, o, stats.double())
    with pytest.raises(ValueError, match=r"stats must be a \[B, R, N\] tensor"):
        b(do, q, k, v, o, attn_triton.lse_of(stats))      # a log-sum-exp is not the row statistics


@pytest.mark.skipif(not backends.triton_interpret(), reason="the CPU is a device only under the interpreter")
def test_rejects_mixed_devices():
    meta = torch.zeros(2, 9, 32, device="meta")
    a = _inputs((2, 36, 9, 8, 32), torch.float32)
    with pytest.raises(ValueError, match="v must be on q's device cpu"):
        attn_triton.attention_forward(a["q"], a["k"], meta)


# ---- (c) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = attn_triton.aot_specs()
# The tensor-core instruction each architecture must use: Hopper's wgmma needs 64 rows a
# warpgroup, so the narrower tiles (the widest classes) run mma.sync there.
TENSOR_CORE_OP = {80: re.compile(r"\bmma\.sync\b"), 90: re.compile(r"\b(?:wgmma\.mma_async|mma\.sync)\b")}


@pytest.fixture(scope="module")
def aot_results():
    from ganfast.testing.triton_aot import compile_by_name
    return compile_by_name(AOT_SPECS, AOT_ARCHS)


def test_aot_spec_names_are_unique():
    names = [s["name"] for s in AOT_SPECS]
    assert len(names) == len(set(names))


def test_every_tile_is_compiled_ahead_of_time():
    # Every TILES entry (kernel, width class, operand bytes) is the tile of some AOT spec.
    names = {"_forward_kernel": "forward", "_dkdv_kernel": "dkdv", "_dq_kernel": "dq"}
    compiled = set()
    for s in AOT_SPECS:
        kernel = s["kernel"].rpartition(":")[2]
        if kernel in names:
            width = attn_triton.width_class(*s["widths"])
            compiled.add((names[kernel], width, 4 if s["signature"]["q_ptr"] == "*fp32" else 2))
    wanted = {(kernel, *key) for kernel, table in attn_triton.TILES.items() for key in table}
    assert wanted <= compiled, wanted - compiled


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOT_ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("spec", AOT_SPECS, ids=spec_id)
def test_aot_compiles_within_resources(aot_results, spec, arch, record_property):
    result = reported(aot_results[(spec["name"], arch)], record_property)
    assert result.problems() == [], result.row()
    if spec["tensor_cores"]:
        assert TENSOR_CORE_OP[arch].search(result.ptx), f"no tensor cores: {result.row()}"
