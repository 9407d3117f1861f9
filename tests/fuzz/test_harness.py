"""The fuzz harness catches what it is meant to catch (each check fails on a planted fault)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast.testing import assert_matches_oracle
from tests.fuzz.harness import (CASES, check_nonfinite, check_op, fuzz_backends, fuzz_dtypes, fuzz_settings,
                                layouts, make_tensor, nudged)


def _ref(x, w):   # differentiable to any order
    return torch.tanh(x) * w


@fuzz_settings(10)
@given(seed=st.integers(0, 2**31 - 1), layout=layouts(4, broadcastable=True))
def test_make_tensor_layouts_keep_values(seed, layout):
    shape = (3, 2, 5, 4)
    t = make_tensor(seed, shape, layout, torch.float32)
    base = make_tensor(seed, shape, "contiguous", torch.float32)
    assert t.shape == shape
    if layout == "expand":   # constant along dim 0, equal to the base's first slice
        assert t.stride(0) == 0 and torch.equal(t, base[:1].expand(shape))
    else:
        assert torch.equal(t, base)
    if layout == "slice":
        assert not t.is_contiguous()
    if layout == "channels_last":
        assert t.is_contiguous(memory_format=torch.channels_last)


@fuzz_settings(10)
@given(seed=st.integers(0, 2**31 - 1), layout=layouts(4, broadcastable=True),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
def test_nudged_moves_values_by_about_an_ulp_in_the_same_layout(seed, layout, dtype):
    # the twin case of check_op: same shape, strides and offset; values within 2 ulps, most of
    # them moved; an expanded tensor stays constant along its broadcast dim, a slice's margin NaN
    t = make_tensor(seed, (3, 2, 5, 4), layout, dtype)
    n = nudged(t, seed)
    assert (n.shape, n.stride(), n.storage_offset(), n.dtype) == (t.shape, t.stride(), t.storage_offset(), dtype)
    rel = ((n.double() - t.double()).abs() / t.double().abs()).max()
    assert rel <= 2 * torch.finfo(dtype).eps
    assert (n != t).double().mean() > 0.3
    if layout == "expand":
        assert n.stride(0) == 0
    if layout == "slice":
        margin = torch.empty(0, dtype=dtype).set_(n.untyped_storage())[0]
        assert margin.isnan()
    assert nudged(3.5, seed) == 3.5 and torch.equal(nudged(torch.arange(3), seed), torch.arange(3))


def test_budget_takes_the_largest_reference_error_sample():
    oracle = torch.tensor([1.0, 2.0], dtype=torch.float64)
    ref = oracle + torch.tensor([1e-4, 0.0], dtype=torch.float64)
    got = oracle + torch.tensor([3e-4, 0.0], dtype=torch.float64)   # 3x the first sample's error
    with pytest.raises(AssertionError, match="budget"):
        assert_matches_oracle(got, oracle, ref, dtype=torch.float32)
    # a second sample of the reference's error twice the first covers it; a non-finite one counts for nothing
    assert_matches_oracle(got, oracle, ref, dtype=torch.float32, other_ref_errors=(2e-4,))
    with pytest.raises(AssertionError, match="largest of 2 samples"):
        assert_matches_oracle(got, oracle, ref, dtype=torch.float32, other_ref_errors=(1.4e-4,))
    with pytest.raises(AssertionError, match="budget"):
        assert_matches_oracle(got, oracle, ref, dtype=torch.float32, other_ref_errors=(float("inf"), float("nan")))


def test_an_over_budget_draw_fails_only_when_it_reproduces_on_a_nudged_copy():
    # a fast path whose error is a draw of the reference's size: over the budget on the first
    # inputs only (counted, not failed); a systematic error (3x the reference's, every time) fails
    x, w = make_tensor(1, (2, 3), "contiguous", torch.float32), make_tensor(2, (2, 3), "contiguous", torch.float32)
    calls = []

    def once(x, w):   # 1e-5 off on its first call, exact after
        calls.append(1)
        return _ref(x, w) + (1e-5 if len(calls) == 1 else 0.0)

    key = ("planted-once", "cpu", "float32")
    before = CASES[(key[0] + " (over budget once, not on a nudged copy)",) + key[1:]]
    check_op("planted-once", once, _ref, {"x": x, "w": w}, dtype=torch.float32, diff=(), second_order=False,
             seed=3, backend="cpu")
    assert len(calls) == 2
    assert CASES[(key[0] + " (over budget once, not on a nudged copy)",) + key[1:]] == before + 1
    with pytest.raises(AssertionError, match="and on the case nudged by about an ulp, again"):
        check_op("planted-always", lambda x, w: _ref(x, w) + 1e-5, _ref, {"x": x, "w": w}, dtype=torch.float32,
                 diff=(), second_order=False, seed=3, backend="cpu")


def test_check_op_passes_the_reference_and_counts():
    x, w = make_tensor(1, (2, 3), "slice", torch.float16), make_tensor(2, (2, 3), "transpose", torch.float16)
    before = CASES[("planted", "cpu", "float16")]
    check_op("planted", _ref, _ref, {"x": x, "w": w}, dtype=torch.float16, diff=("x", "w"), second_order=True,
             seed=3, backend="cpu")
    assert CASES[("planted", "cpu", "float16")] == before + 1


@pytest.mark.parametrize("fault, message", [
    (lambda x, w: _ref(x, w) * (1 + 1e-2), "output 0"),                         # forward error
    (lambda x, w: _ref(x.detach(), w), "gradient of x"),                        # gradient lost
    (lambda x, w: x.detach().tanh() * w + (x - x.detach()), "gradient of x"),   # wrong first derivative
    (lambda x, w: torch.tanh(x) * w + 0.01 * (x - x.detach()) ** 2, "second-order gradient of x"),
    (lambda x, w: _ref(x, w.detach().mul_(2) * 0.5 + (w - w.detach())), "input w was modified"),   # in place
])
def test_check_op_catches_faults(fault, message):
    x, w = make_tensor(1, (2, 3), "contiguous", torch.float32), make_tensor(2, (2, 3), "contiguous", torch.float32)
    with pytest.raises(AssertionError, match=message):
        check_op("planted", fault, _ref, {"x": x, "w": w}, dtype=torch.float32, diff=("x", "w"),
                 second_order=True, seed=3, backend="cpu")


def test_check_op_catches_modified_input_and_aliasing():
    x, w = make_tensor(1, (2, 3), "slice", torch.float32), make_tensor(2, (2, 3), "contiguous", torch.float32)

    def writes_margin(x, w):   # writes the poisoned element just before the view
        torch.empty(0).set_(x.untyped_storage())[0].fill_(0.0)
        return _ref(x, w)

    with pytest.raises(AssertionError, match="input x was modified"):
        check_op("planted", writes_margin, _ref, {"x": x, "w": w}, dtype=torch.float32, diff=(), second_order=False,
                 seed=0, backend="cpu")
    with pytest.raises(AssertionError, match="shares storage with input w"):
        check_op("planted", lambda x, w: w.detach(), lambda x, w: w, {"x": x, "w": w}, dtype=torch.float32, diff=(),
                 second_order=False, seed=0, backend="cpu")


def test_check_op_fast_must_raise_where_the_reference_raises():
    def ref(x):
        if x.shape[0] == 0:
            raise ValueError("x: empty")
        return x * 2

    with pytest.raises(AssertionError, match="the reference raises"):
        check_op("planted", lambda x: x * 2, ref, {"x": torch.zeros(0, 2)}, dtype=torch.float32, diff=("x",),
                 second_order=False, seed=0, backend="cpu")


def test_check_nonfinite_catches_a_swallowed_nan():
    x = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    check_nonfinite("planted", torch.tanh, torch.tanh, {"input": x}, dtype=torch.float32, backend="cpu")
    with pytest.raises(AssertionError, match="NaN positions differ"):
        check_nonfinite("planted", lambda input: torch.tanh(input).nan_to_num(), torch.tanh, {"input": x},
                        dtype=torch.float32, backend="cpu")
    with pytest.raises(AssertionError, match=r"\+inf positions differ"):
        check_nonfinite("planted", lambda input: input.clamp(max=1e30), lambda input: input, {"input": x},
                        dtype=torch.float32, backend="cpu")


def test_backends_and_dtypes_are_what_the_registry_lists():
    assert fuzz_backends("bias_act")[0] == "reference" and "cpu" in fuzz_backends("bias_act")
    assert torch.float64 in fuzz_dtypes("bias_act", "cpu")
