"""The shared machinery of the property-based fuzz tests (issue 26): every public op on every backend
that runs here, against its float64 reference, on shapes, layouts, dtypes and arguments drawn by
hypothesis.

Profiles (see fuzz_settings):
- CI (default): `ci_examples` cases per test, derandomized (the same cases on every run), no
  example database, no deadline.
- long: GANFAST_FUZZ_EXAMPLES=N runs N cases per test; derandomized unless GANFAST_FUZZ_SEED=S
  is set, in which case tests/fuzz/conftest.py seeds every fuzz test with S (hypothesis.seed,
  which overrides derandomize; `pytest --hypothesis-seed=S` does the same).
  GANFAST_FUZZ_SHRINK=0 reports a failure as found, without shrinking it (a failing case of a
  slow backend can take minutes to shrink). With
  GANFAST_FUZZ_REPORT=path the session writes the per-(op, backend, dtype) case counts there.

A case (check_op): the oracle is the reference on float64 copies of the inputs; the reference run
in the case's dtype sets the error budget (ganfast.testing.assert_matches_oracle: 2x its error plus
a per-dtype floor), taking the largest of TWINS + 1 samples of that error: the case itself and
TWINS twins whose inputs are nudged by about an ulp (`nudged`), each run in float64 and in dtype.
(One sample is a noisy budget where an output is a sum with cancellation or has few elements: a
fast path exactly as accurate as the reference fails 2x-of-one-sample 30% of the time on a
one-element output, 2x the largest of 4 samples 4%; fast paths that accumulate in fp32 do better.)
An output over that budget fails the case when the same check on a copy of the case nudged by about
an ulp is over budget too: an accuracy defect is systematic and reproduces there, a draw of the
rounding errors does not (the chance of two for a path as accurate as the reference is ~0.2%). An
exceedance that does not reproduce is counted, under "<op> (over budget once, not on a nudged
copy)", and reported with the other counts. Forward values, first-order gradients for a random cotangent and (where the op
has them) second-order gradients are held to that rule; inputs must be unchanged afterwards (every
byte of their storage, so a write into the margin of a sliced view is caught too) and no output may
share storage with an input. When the reference raises for the inputs, the fast path must raise too.
"""
from __future__ import annotations

import collections
import functools
import math
import os
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import hypothesis
import torch
from hypothesis import HealthCheck
from hypothesis import strategies as st

import ganfast.ops  # noqa: F401  (imports register every op's backends and dtypes)
from ganfast import backends
from ganfast.testing import assert_matches_oracle, first_mismatches

FUZZ_BACKENDS = ("reference", "cpu", "triton")
TWINS = 3   # nudged twin cases per check_op case: more samples of the reference's own error
F64 = torch.float64

# (op, backend, dtype name) -> cases checked. Ops are suffixed for the other kinds of check:
# "<op> (non-finite)" for check_nonfinite, "<op> (both raised)" for a check_op case where the
# reference raised and the fast path raised too.
CASES: collections.Counter = collections.Counter()
# the same keys -> seconds spent in those checks (for sizing the profiles)
SECONDS: collections.Counter = collections.Counter()


# ---- profiles ----

def long_profile_examples() -> Optional[int]:
    """GANFAST_FUZZ_EXAMPLES as an int, or None for the CI profile."""
    n = os.environ.get("GANFAST_FUZZ_EXAMPLES", "")
    return int(n) if n else None


def fuzz_seed() -> Optional[int]:
    """GANFAST_FUZZ_SEED as an int, or None (derandomized)."""
    s = os.environ.get("GANFAST_FUZZ_SEED", "")
    return int(s) if s else None


def fuzz_settings(ci_examples: int) -> hypothesis.settings:
    """The hypothesis settings of a fuzz test: `ci_examples` deterministic cases in CI, or
    GANFAST_FUZZ_EXAMPLES cases (seeded by GANFAST_FUZZ_SEED when set) in the long profile."""
    n = long_profile_examples()
    shrink = os.environ.get("GANFAST_FUZZ_SHRINK", "1") not in ("", "0")
    phases = tuple(hypothesis.Phase) if shrink else tuple(p for p in hypothesis.Phase if p != hypothesis.Phase.shrink)
    return hypothesis.settings(
        phases=phases,
        max_examples=ci_examples if n is None else n,
        derandomize=n is None or fuzz_seed() is None,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- what runs here ----

def fuzz_backends(op: str) -> list[str]:
    """The backends among FUZZ_BACKENDS that implement `op` and run on CPU tensors here (Triton
    through its interpreter: tests/conftest.py sets TRITON_INTERPRET=1)."""
    out = []
    for name in FUZZ_BACKENDS:
        b = backends.get_backend(name)
        if backends.op_dtypes(op, name) is None or b.unavailable_reason() is not None:
            continue
        if b.accepts_device(torch.device("cpu")):
            out.append(name)
    return out


def fuzz_dtypes(op: str, backend: str) -> list[torch.dtype]:
    """Every dtype `backend` lists for `op`, in a fixed order."""
    return sorted(backends.op_dtypes(op, backend) or (), key=str)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- inputs ----

LAYOUTS = ("contiguous", "channels_last", "slice", "transpose", "expand")


def layouts(ndim: int, broadcastable: bool = False) -> st.SearchStrategy[str]:
    """One memory layout for an ndim-D tensor (see make_tensor)."""
    names = ["contiguous", "slice"]
    if ndim >= 2:
        names.append("transpose")
    if ndim == 4:
        names.append("channels_last")
    if broadcastable:
        names.append("expand")
    return st.sampled_from(names)


def _poison(dtype: torch.dtype):
    if dtype.is_floating_point or dtype.is_complex:
        return float("nan")
    return False if dtype == torch.bool else -1


def make_tensor(seed: int, shape: Sequence[int], layout: str, dtype: torch.dtype, scale: float = 1.0,
                positive: bool = False) -> torch.Tensor:
    """A tensor of logical `shape` whose values come from torch.Generator(seed) and do not depend
    on `layout`.

    Values: floating dtypes: standard normal in float64 times `scale` (positive: scale * (0.25 +
    |normal|)), then rounded to `dtype`; integer dtypes: uniform in [0, max(1, int(scale))); bool:
    fair coins. Layouts:
      contiguous     a fresh contiguous tensor
      channels_last  4-D only: channels-last strides
      slice          a view taking every 2nd element of the last dim (and offset by one along
                     every dim) of a bigger tensor whose other elements are poison (NaN, or -1
                     for integers), so a kernel that ignores strides reads poison
      transpose      the same logical shape stored with the dims in reverse order
      expand         the first dim of size > 1 is broadcast from size 1 with stride 0; the
                     values along it are the values at index 0 (the only layout whose values
                     differ: they are constant along that dim)
    """
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(int(seed))
    if dtype.is_floating_point:
        v = torch.randn(shape, generator=g, dtype=F64)
        if positive:
            v = 0.25 + v.abs()
        v = (v * scale).to(dtype)
    elif dtype == torch.bool:
        v = torch.randint(0, 2, shape, generator=g).bool()
    else:
        v = torch.randint(0, max(1, int(scale)), shape, generator=g).to(dtype)
    return lay_out(v, layout)


def lay_out(v: torch.Tensor, layout: str) -> torch.Tensor:
    """v (any layout) stored in `layout` (see make_tensor); the values do not change, except
    along the broadcast dim of 'expand'. Lets a test adjust values before laying them out."""
    shape = tuple(v.shape)
    ndim = len(shape)
    if layout == "contiguous" or ndim == 0:
        return v.contiguous()
    if layout == "channels_last":
        if ndim != 4:
            raise ValueError(f"layout 'channels_last' needs a 4-D shape, got {shape}")
        return v.contiguous(memory_format=torch.channels_last)
    if layout == "slice":
        big_shape = tuple(s + 1 for s in shape[:-1]) + (2 * shape[-1] + 1,)
        big = torch.full(big_shape, _poison(v.dtype), dtype=v.dtype)
        view = big[tuple(slice(1, None) for _ in shape[:-1]) + (slice(1, None, 2),)]
        view.copy_(v)
        return view
    if layout == "transpose":
        order = tuple(reversed(range(ndim)))
        return v.permute(order).contiguous().permute(order)
    if layout == "expand":
        d = next((i for i, s in enumerate(shape) if s > 1), 0)
        return v.narrow(d, 0, 1).contiguous().expand(shape) if shape[d] > 0 else v.contiguous()
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def nudged(v: Any, seed: int) -> Any:
    """v with every floating value moved by about an ulp of its dtype (a relative change uniform in
    +-eps, rounded back), same shape, strides and offset over a nudged copy of its storage (so an
    expanded tensor stays constant along its broadcast dim and a slice's poison margin stays NaN);
    anything else as it is. The twin case of check_op."""
    if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.numel() == 0:
        return v
    flat = torch.empty(0, dtype=v.dtype).set_(v.untyped_storage())
    g = torch.Generator().manual_seed(int(seed) + 7)
    u = torch.rand(flat.shape, generator=g, dtype=F64) * 2 - 1
    moved = (flat.to(F64) * (1 + u * torch.finfo(v.dtype).eps)).to(v.dtype)
    return torch.as_strided(moved, v.shape, v.stride(), v.storage_offset())


# swish(-inf) is NaN in the reference (-inf * sigmoid(-inf) = -inf * 0) and -inf on the cpu
# backend, whose exp saturates: a documented difference (bias_act's docstring), so the fuzz tests
# plant only these in the cpu's swish cases
NO_NEG_INF = (math.nan, math.inf)


def plant_nonfinite(t: torch.Tensor, seed: int, kinds: Sequence[float] = (math.nan, math.inf, -math.inf)
                    ) -> torch.Tensor:
    """A contiguous copy of t with about 3 in 8 of its elements replaced by one of `kinds` (NaN,
    +inf, -inf by default; positions and kinds from torch.Generator(seed))."""
    g = torch.Generator().manual_seed(int(seed))
    which = torch.randint(0, 8, t.shape, generator=g)
    special = torch.tensor([kinds[i % len(kinds)] for i in range(3)], dtype=t.dtype)
    return torch.where(which < 3, special[which.clamp(max=2)], t).contiguous()


def describe(t: Any) -> str:
    """shape / dtype / strides of a tensor argument for error messages."""
    if isinstance(t, torch.Tensor):
        return f"{tuple(t.shape)} {dtype_name(t.dtype)} strides {t.stride()} on {t.device.type}"
    return repr(t)


# ---- checks ----

def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _storage_bytes(t: torch.Tensor) -> torch.Tensor:
    """Every byte of t's storage (not just the view), as a uint8 copy."""
    return torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).clone()


def _storage_ptr(t: torch.Tensor) -> Optional[int]:
    if t.numel() == 0 or t.untyped_storage().nbytes() == 0:
        return None
    return t.untyped_storage().data_ptr()


def _backend_of(fast_fn: Callable, backend: Optional[str]) -> str:
    if backend is not None:
        return backend
    if isinstance(fast_fn, functools.partial) and "backend" in fast_fn.keywords:
        return str(fast_fn.keywords["backend"])
    return "unspecified"


def _context(name: str, backend: str, dtype: torch.dtype, inputs: dict) -> str:
    args = "\n".join(f"  {k} = {describe(v)}" for k, v in inputs.items())
    return f"{name} [backend {backend}, {dtype_name(dtype)}] with\n{args}"


def _leaves(inputs: dict, diff: Iterable[str], cast: Optional[torch.dtype], copy: bool) -> dict:
    """The inputs for one run: floating tensors cast to `cast` (None: kept; float64: contiguous
    too), detached (sharing storage unless copy), names in diff made requires-grad leaves."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            t = v.detach()
            if cast is not None and t.is_floating_point():
                # the float64 oracle on contiguous copies: its values are what matter, and torch's
                # float64 CPU convolution backward raises on some layouts (slow_conv2d: "grad_weight
                # must be contiguous" with a channels_last x and a transposed weight)
                t = t.to(cast).contiguous() if cast == F64 else t.to(cast)
            if copy and t.data_ptr() == v.data_ptr():
                t = t.clone()
            if k in diff and t.is_floating_point():
                t.requires_grad_(True)
            out[k] = t
        else:
            out[k] = v
    return out


def _grads(outs: tuple, leaves: dict, diff: Sequence[str], cotangents: list, create_graph: bool) -> list:
    """Gradients of sum(out_i * cotangent_i) w.r.t. the diff leaves (zeros where unused)."""
    pairs = [(o, c) for o, c in zip(outs, cotangents) if c is not None and o.requires_grad]
    wrt = [leaves[k] for k in diff]
    if not pairs:
        return [torch.zeros_like(w) for w in wrt]
    got = torch.autograd.grad([o for o, _ in pairs], wrt, [c.to(o.dtype) for o, c in pairs],
                              create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(got, wrt)]


def _second(grads: list, leaves: dict, diff: Sequence[str], vs: list) -> list:
    """Gradients of sum_i(sum(grad_i * v_i)) w.r.t. the diff leaves (zeros where it is constant)."""
    wrt = [leaves[k] for k in diff]
    terms = [(g * v.to(g.dtype)).sum() for g, v in zip(grads, vs) if g.requires_grad]
    if not terms:
        return [torch.zeros_like(w) for w in wrt]
    got = torch.autograd.grad(sum(terms), wrt, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(got, wrt)]


def _twin_errors(twins: list, i: int) -> tuple:
    """The twin cases' reference-in-dtype errors on output i, twins being (oracle outputs, reference
    outputs) pairs."""
    return tuple(_twin_error(o, r, i) for o, r in twins)


def _twin_error(oracles: Sequence, refs: Sequence, i: int) -> float:
    """A twin case's reference-in-dtype error on its output i: max |ref - oracle| where both are
    finite floating tensors (else 0: no sample)."""
    o, r = oracles[i], refs[i]
    if not (isinstance(o, torch.Tensor) and isinstance(r, torch.Tensor) and o.is_floating_point()
            and r.is_floating_point() and o.shape == r.shape and o.numel()):
        return 0.0
    o, r = o.detach().to(F64), r.detach().to(F64)
    if not (torch.isfinite(o).all() and torch.isfinite(r).all()):
        return 0.0
    return float((r - o).abs().max())


class OverBudget(AssertionError):
    """A finite fast result over the accuracy budget (check_op retries the case nudged)."""


def _compare(got, oracle, ref, dtype: torch.dtype, what: str, context: str, twin_errors: tuple = ()) -> None:
    if not isinstance(oracle, torch.Tensor):
        if got != oracle:
            raise AssertionError(f"{context}\n{what}: got {got!r}, the reference gives {oracle!r}")
        return
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{context}\n{what}: got {type(got).__name__}, the reference gives a tensor")
    try:
        if got.dtype != ref.dtype:
            raise AssertionError(f"{what}: dtype {got.dtype}, the reference in the same dtype gives {ref.dtype}")
        if not got.is_floating_point():
            assert torch.equal(got, oracle.to(got.dtype)), f"{what}: integer output differs from the reference"
            return
        try:
            assert_matches_oracle(got, oracle, ref, dtype=dtype, name=what, other_ref_errors=twin_errors)
        except AssertionError as e:
            if got.shape == oracle.shape and bool(torch.isfinite(got).all()):
                raise OverBudget(str(e)) from None
            raise
    except OverBudget as e:
        raise OverBudget(f"{context}\n{e}") from None
    except AssertionError as e:
        raise AssertionError(f"{context}\n{e}") from None


def _timed(check):
    """check, with the seconds of each call added to SECONDS under the key its case was counted."""
    @functools.wraps(check)
    def timed(*args, **kwargs):
        before, start = set(CASES.items()), time.perf_counter()
        try:
            return check(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            for key, _ in set(CASES.items()) - before:
                SECONDS[key] += spent
    return timed


@_timed
def check_op(name: str, fast_fn: Callable, ref_fn: Callable, inputs: dict, *, dtype: torch.dtype,
             diff: Sequence[str], second_order: bool, seed: int, nondiff_outputs: Sequence[int] = (),
             backend: Optional[str] = None) -> None:
    """One fuzz case: fast_fn(**inputs) against ref_fn (see the module docstring for the rule).

    inputs: name -> tensor (already in `dtype` and laid out), None or a Python value. diff: the
    names whose gradients are checked (None entries are skipped). nondiff_outputs: indices of
    outputs (of a tuple result) that get no cotangent. backend: the fast path's backend, for
    messages and the case count (taken from a functools.partial's backend= keyword when omitted).
    """
    backend = _backend_of(fast_fn, backend)
    args = dict(dtype=dtype, diff=diff, second_order=second_order, seed=seed, nondiff_outputs=nondiff_outputs,
                backend=backend)
    try:
        _check_case(name, fast_fn, ref_fn, inputs, **args)
    except OverBudget as first:
        again = {k: nudged(v, int(seed) + 1000) for k, v in inputs.items()}
        try:
            _check_case(name, fast_fn, ref_fn, again, **args)
        except OverBudget as second:
            raise AssertionError(f"{first}\nand on the case nudged by about an ulp, again:\n"
                                 f"{_budget_line(second)}") from None
        CASES[(f"{name} (over budget once, not on a nudged copy)", backend, dtype_name(dtype))] += 1


def _budget_line(e: Exception) -> str:
    """The line of an OverBudget message that names the output and its error against the budget."""
    return next((line for line in str(e).splitlines() if "> budget" in line), str(e))


def _check_case(name: str, fast_fn: Callable, ref_fn: Callable, inputs: dict, *, dtype: torch.dtype,
                diff: Sequence[str], second_order: bool, seed: int, nondiff_outputs: Sequence[int],
                backend: str) -> None:
    """check_op's checks on one set of inputs (counted under CASES when they pass)."""
    context = _context(name, backend, dtype, inputs)
    diff = [k for k in diff if isinstance(inputs.get(k), torch.Tensor) and inputs[k].is_floating_point()]
    before = {k: _storage_bytes(v) for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    oracle_in = _leaves(inputs, diff, F64, copy=True)
    try:
        oracle = _as_tuple(ref_fn(**oracle_in))
    except (TypeError, ValueError, RuntimeError) as ref_error:
        try:
            fast_fn(**_leaves(inputs, diff, None, copy=False))
        except (TypeError, ValueError, RuntimeError):
            CASES[(f"{name} (both raised)", backend, dtype_name(dtype))] += 1
            return
        raise AssertionError(f"{context}\nthe reference raises ({type(ref_error).__name__}: {ref_error}) "
                             "but the fast path returns") from None
    ref_in = _leaves(inputs, diff, None, copy=True)
    ref = _as_tuple(ref_fn(**ref_in))
    # More samples of the reference's own error (twin cases): the inputs nudged by about an ulp,
    # run in float64 and in dtype. Their rounding errors are fresh draws of the same size, so the
    # budget (2x the largest) does not rest on one sample; see the module docstring.
    twin_ins = []   # (oracle inputs, reference inputs, oracle outputs, reference outputs)
    for t in range(TWINS):
        nudge = {k: nudged(v, seed + 7 * (t + 1)) for k, v in inputs.items()}
        o_in, r_in = _leaves(nudge, diff, F64, copy=True), _leaves(nudge, diff, None, copy=True)
        try:
            twin_ins.append((o_in, r_in, _as_tuple(ref_fn(**o_in)), _as_tuple(ref_fn(**r_in))))
        except (TypeError, ValueError, RuntimeError):   # a nudge across a boundary the op checks
            pass
    fast_in = _leaves(inputs, diff, None, copy=False)
    fast = _as_tuple(fast_fn(**fast_in))

    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and not torch.equal(before[k], _storage_bytes(v)):
            raise AssertionError(f"{context}\ninput {k} was modified by the call")
    in_ptrs = {p: k for k, v in inputs.items() if isinstance(v, torch.Tensor) and (p := _storage_ptr(v)) is not None}
    if len(fast) != len(oracle):
        raise AssertionError(f"{context}\n{len(fast)} outputs, the reference gives {len(oracle)}")
    for i, o in enumerate(fast):
        if isinstance(o, torch.Tensor) and _storage_ptr(o) in in_ptrs:
            raise AssertionError(f"{context}\noutput {i} shares storage with input {in_ptrs[_storage_ptr(o)]}")

    for i, (f, o, r) in enumerate(zip(fast, oracle, ref)):
        _compare(f, o, r, dtype, f"output {i}", context, _twin_errors([(t[2], t[3]) for t in twin_ins], i))

    if not diff:
        CASES[(name, backend, dtype_name(dtype))] += 1
        return
    g = torch.Generator().manual_seed(int(seed) + 1)

    def draw(t):   # a random tensor like t, rounded to dtype (the same values for all three runs)
        return torch.randn(t.shape, generator=g, dtype=F64).to(dtype).to(F64)

    cot = [None if (i in nondiff_outputs or not isinstance(o, torch.Tensor) or not o.is_floating_point())
           else draw(o) for i, o in enumerate(oracle)]
    g_oracle = _grads(oracle, oracle_in, diff, cot, second_order)
    g_ref = _grads(ref, ref_in, diff, cot, second_order)
    g_fast = _grads(fast, fast_in, diff, cot, second_order)
    g_twins = [(_grads(t[2], t[0], diff, cot, second_order), _grads(t[3], t[1], diff, cot, second_order))
               for t in twin_ins]
    for i, (k, f, o, r) in enumerate(zip(diff, g_fast, g_oracle, g_ref)):
        _compare(f, o, r, dtype, f"gradient of {k}", context, _twin_errors(g_twins, i))

    if second_order:
        vs = [draw(t) for t in g_oracle]
        gg_oracle = _second(g_oracle, oracle_in, diff, vs)
        gg_ref = _second(g_ref, ref_in, diff, vs)
        gg_fast = _second(g_fast, fast_in, diff, vs)
        gg_twins = [(_second(go, t[0], diff, vs), _second(gr, t[1], diff, vs))
                    for t, (go, gr) in zip(twin_ins, g_twins)]
        for i, (k, f, o, r) in enumerate(zip(diff, gg_fast, gg_oracle, gg_ref)):
            _compare(f, o, r, dtype, f"second-order gradient of {k}", context, _twin_errors(gg_twins, i))

    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and not torch.equal(before[k], _storage_bytes(v)):
            raise AssertionError(f"{context}\ninput {k} was modified by the backward pass")
    CASES[(name, backend, dtype_name(dtype))] += 1


def _nonfinite_mismatch(got: torch.Tensor, want: torch.Tensor, k: int = 5) -> Optional[str]:
    for label, pred in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        g, w = pred(got), pred(want)
        if not torch.equal(g, w):
            idx = (g != w).nonzero()[:k]
            lines = [f"  at {tuple(i.tolist())}: got {got[tuple(i)].item():.9g}, reference {want[tuple(i)].item():.9g}"
                     for i in idx]
            return f"{label} positions differ at {int((g != w).sum())} elements; first:\n" + "\n".join(lines)
    return None


def _nonfinite_outputs_differ(fast: tuple, ref: tuple) -> Optional[str]:
    """Why the non-finite positions of two results differ, or None when they agree."""
    if len(fast) != len(ref):
        return f"{len(fast)} outputs, the reference gives {len(ref)}"
    for i, (f, r) in enumerate(zip(fast, ref)):
        if not (isinstance(f, torch.Tensor) and f.is_floating_point()):
            continue
        if f.shape != r.shape:
            return f"output {i}: shape {tuple(f.shape)} != reference {tuple(r.shape)}"
        why = _nonfinite_mismatch(f.detach().to(F64), r.detach().to(F64))
        if why:
            return f"output {i}: {why}"
    return None


@_timed
def check_nonfinite(name: str, fast_fn: Callable, ref_fn: Callable, inputs: dict, *, dtype: torch.dtype,
                    backend: Optional[str] = None) -> None:
    """Inputs carrying NaN / inf: the fast outputs' NaN, +inf and -inf positions must equal the
    reference's run in the same dtype, or, where that one differs, the reference's in float64
    (counted as "<op> (non-finite, as float64)"; torch's own low-precision kernels are not always
    right about inf: its bf16 CPU convolution gives NaN for an inf beside zero padding). When the
    reference raises, the fast path must raise."""
    backend = _backend_of(fast_fn, backend)
    context = _context(name, backend, dtype, inputs)
    with torch.no_grad():
        try:
            ref = _as_tuple(ref_fn(**inputs))
        except (TypeError, ValueError, RuntimeError) as ref_error:
            try:
                fast_fn(**inputs)
            except (TypeError, ValueError, RuntimeError):
                CASES[(f"{name} (non-finite, both raised)", backend, dtype_name(dtype))] += 1
                return
            raise AssertionError(f"{context}\nthe reference raises ({type(ref_error).__name__}: {ref_error}) "
                                 "but the fast path returns") from None
        fast = _as_tuple(fast_fn(**inputs))
    why = _nonfinite_outputs_differ(fast, ref)
    if why is not None and dtype != F64:
        # the reference in float64 decides where the one in dtype is itself off: torch's bf16 CPU
        # convolution turns an inf beside the zero padding into NaN, where fp32 and fp64 give inf
        with torch.no_grad():
            ref64 = _as_tuple(ref_fn(**{k: v.to(F64) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                        for k, v in inputs.items()}))
        if _nonfinite_outputs_differ(fast, ref64) is None:
            CASES[(f"{name} (non-finite, as float64)", backend, dtype_name(dtype))] += 1
            return
    if why is not None:
        raise AssertionError(f"{context}\n{why}")
    CASES[(f"{name} (non-finite)", backend, dtype_name(dtype))] += 1


def case_rows() -> list[dict]:
    """CASES as JSON-able rows {op, backend, dtype, cases, seconds}, sorted."""
    return [{"op": op, "backend": b, "dtype": d, "cases": n, "seconds": round(SECONDS[(op, b, d)], 3)}
            for (op, b, d), n in sorted(CASES.items())]


__all__ = ["CASES", "NO_NEG_INF", "SECONDS", "FUZZ_BACKENDS", "LAYOUTS", "case_rows", "check_nonfinite", "check_op", "describe",
           "dtype_name", "first_mismatches", "fuzz_backends", "fuzz_dtypes", "fuzz_seed", "fuzz_settings",
           "lay_out", "layouts", "long_profile_examples", "make_tensor", "plant_nonfinite"]
