"""ganfast.testing.triton_aot: the PTX checks, ptxas parsing, the interpreter guard and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from ganfast.testing import triton_aot  # noqa: E402

# Lines as Triton writes them for sm_80 / sm_90 (eviction hints and predicates included).
PTX_V4 = """
	@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
	@%p2 ld.global.L1::evict_last.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd2 + 0 ];
	@%p1 st.global.v4.b32 [ %rd3 + 0 ], { %r1, %r2, %r3, %r4 };
"""
PTX_SCALAR = """
	@%p1 ld.global.b32 { %r1 }, [ %rd1 + 0 ];
	ld.global.v2.b32 { %r2, %r3 }, [ %rd2 + 0 ];
	st.global.b16 [ %rd3 + 0 ], { %rs1 };
	ld.shared.v4.b32 { %r1, %r2, %r3, %r4 }, [ %r9 + 0 ];
"""
PTX_MMA_80 = "\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 { %f1, %f2, %f3, %f4 }, ...;"
PTX_MMA_90 = "\twgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 { %f1 }, %rd1, %rd2, 1, 1, 1, 0, 1;"

# The smallest kernel ptxas accepts: one parameter, nothing done.
PTX_EMPTY_KERNEL = """
.version 8.0
.target sm_80
.address_size 64
.visible .entry noop(.param .u64 noop_param_0)
{
	ret;
}
"""


def test_ptx_checks():
    assert triton_aot.has_vector_loads(PTX_V4) and triton_aot.has_vector_stores(PTX_V4)
    # 64-bit vectors, shared-memory vectors and scalar accesses are not 128-bit global accesses.
    assert not triton_aot.has_vector_loads(PTX_SCALAR) and not triton_aot.has_vector_stores(PTX_SCALAR)
    assert triton_aot.has_mma(PTX_MMA_80) and triton_aot.has_mma(PTX_MMA_90)
    assert not triton_aot.has_mma(PTX_V4)


def test_shared_memory_limits():
    assert triton_aot.SHARED_MEMORY_LIMIT[80] == 166912  # A100: 163 KiB per block
    assert triton_aot.SHARED_MEMORY_LIMIT[90] == 232448  # H100: 227 KiB per block


@pytest.mark.parametrize("arch", [80, 90])
def test_ptxas_resources_parses_the_log(arch):
    res = triton_aot.ptxas_resources(PTX_EMPTY_KERNEL.replace("sm_80", f"sm_{arch}"), arch)
    assert res["spill_stores"] == 0 and res["spill_loads"] == 0 and res["stack_bytes"] == 0
    assert 0 <= res["registers"] < 32
    assert "noop" in res["ptxas_log"]


def test_refuses_interpreter_functions():
    # tests/conftest.py sets TRITON_INTERPRET, so triton.jit made interpreter wrappers here.
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("TRITON_INTERPRET is unset in this run")
    with pytest.raises(TypeError, match="TRITON_INTERPRET is set"):
        triton_aot.compile_spec(dict(kernel="ganfast.ops.bias_act.triton:_bias_act_kernel", signature={}), 80)


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "ganfast.testing.triton_aot", *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_compiles_one_kernel():
    sig = {"x_ptr": "*fp32", "b_ptr": "*fp32", "g_ptr": "*fp32", "gg_ptr": "*fp32", "out_ptr": "*fp32",
           "numel": "i32", "channels": "i32", "inner": "i32", "alpha": "fp32", "gain": "fp32", "clamp": "fp32"}
    consts = {"ACT": 0, "ORDER": 0, "HAS_BIAS": False, "BLOCK": 1024, "INDEX_64": False, "ROUND_BF16": False}
    proc = _cli("--kernel", "ganfast.ops.bias_act.triton:_bias_act_kernel", "--signature", json.dumps(sig),
                "--constexprs", json.dumps(consts), "--aligned", "x_ptr", "out_ptr", "numel", "--arch", "80")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["arch"] == 80 and result["kernel"] == "_bias_act_kernel"
    assert result["spill_stores"] == 0 and result["registers"] > 0
    assert triton_aot.has_vector_loads(result["ptx"])


@pytest.mark.slow
def test_cli_names_missing_arguments():
    proc = _cli("--kernel", "ganfast.ops.bias_act.triton:_bias_act_kernel", "--signature", '{"x_ptr": "*fp32"}',
                "--arch", "80")
    assert proc.returncode != 0
    assert "spec misses arguments" in proc.stderr and "out_ptr" in proc.stderr
