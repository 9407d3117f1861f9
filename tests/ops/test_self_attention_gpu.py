"""self_attention2d on CUDA tensors: the triton backend (the op's GPU path; there is no CUDA C++
kernel for it) against the float64 oracle, at the real layer widths, every dtype, forward,
backward and R1's double backward.

Skipped without a CUDA device; nothing touches CUDA at import or collection. The Triton kernels
run on the GPU only with GANFAST_TEST_GPU=1 (tests/conftest.py otherwise sets TRITON_INTERPRET=1).
Run on a GPU machine with:  GANFAST_TEST_GPU=1 pytest tests/ops/test_self_attention_gpu.py
"""
from __future__ import annotations

import pytest
import torch

from ganfast import backends
from ganfast.ops import self_attention2d
from ganfast.ops.self_attention.reference import self_attention2d_ref
from ganfast.testing import assert_matches_oracle

from .test_self_attention import NAMES, _leaf, forward_grads_r1, make_block

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_triton_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    why = backends.get_backend("triton").unavailable_reason()
    if why:
        pytest.skip(f"backend 'triton' unavailable: {why}")
    if backends.triton_interpret():
        pytest.skip("TRITON_INTERPRET is set: export GANFAST_TEST_GPU=1 to run the Triton kernels on the GPU")


# [B, C, H, W]: one comment per case.
SHAPES = [
    pytest.param((2, 64, 6, 6), id="c64-6x6"),          # C/8 = 8, N = 36, M = 9: every block masked
    pytest.param((1, 192, 32, 32), id="c192-32x32-b1"),  # BigGAN widths (24, 96), batch 1, N = 1024
    pytest.param((2, 256, 17, 17), id="c256-17x17"),     # SAGAN widths (32, 128), N = 289 not a block multiple
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_on_gpu_matches_reference(shape, dtype):
    ts = make_block(*shape, dtype=dtype)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype).to(torch.float64)
    cuda = lambda ts_: [t.cuda() for t in ts_]
    oracle = forward_grads_r1(self_attention2d_ref, _leaf(ts, torch.float64), dy)
    same = forward_grads_r1(self_attention2d_ref, cuda(_leaf(ts, dtype)), dy.to(dtype).cuda())
    got = forward_grads_r1(lambda *a: self_attention2d(*a, backend="triton"), cuda(_leaf(ts, dtype)),
                           dy.to(dtype).cuda())
    for n, g, o, s in zip(NAMES, got, oracle, same):
        assert g.device.type == "cuda" and g.dtype == dtype, n
        assert_matches_oracle(g, o, s, dtype=dtype, name=f"triton/{dtype}/{n}")
