"""Test-session setup. TRITON_INTERPRET must be set before triton is imported anywhere, so the
Triton kernels can run on CPU tensors here (the brief: no GPU on CI). On a machine with a GPU,
export GANFAST_TEST_GPU=1 to leave it unset and run the GPU tests on real hardware."""
import os

if os.environ.get("GANFAST_TEST_GPU", "0") in ("", "0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
