"""Fuzz tests (issue 26) of spectral_norm's public ops: power_iteration, sigma_estimate and
spectral_sigma on every backend and dtype that runs here, against the float64 definition
(power_iteration_ref; u^T W v) under the accuracy rule (tests/fuzz/harness.py).

Drawn: W [O, K] with size-0, size-1, odd and prime sizes (up to 300 x 1300 on the CPU backends,
smaller for Triton, whose interpreter is slow), every layout; num_svs from 1 to min(O, K, 4)
(more vectors than min(O, K), or than the rank of an expanded, rank-1 W, are rounding noise or
0 / 0: Gram-Schmidt of a vector against a full basis),
u and v as plain vectors or [num_svs, .] rows in any layout but broadcast (they are written in
place); n_iters 1-4, both orders (u_first), eps from 1e-12 to 1e-2 (see EPS).

In place, by design (power_iteration's docstring): power_iteration updates u and v. The harness
checks that inputs are unchanged, so the wrapper below hands the op copies of u and v in the same
strides and returns them: the check covers W exactly, and the updated copies are compared with the
definition's u and v (a path that did not write them in place, or wrote them wrongly, fails there).
"""
from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast.ops import power_iteration, sigma_estimate, spectral_sigma
from ganfast.ops.spectral_norm import power_iteration_ref
from tests.fuzz.harness import (check_nonfinite, check_op, dtype_name, fuzz_backends, fuzz_dtypes, fuzz_settings,
                                layouts, make_tensor)

OP = "spectral_norm"
BACKEND_DTYPES = [pytest.param(b, d, id=f"{b}-{dtype_name(d)}") for b in fuzz_backends(OP) for d in fuzz_dtypes(OP, b)]
# eps guards a division (normalize(x) = x / max(||x||, eps)); an eps above the vectors' norms stops
# normalizing them, and the state then shrinks by ||W|| / eps an iteration until, with num_svs > 1,
# Gram-Schmidt's |q|^2 underflows in fp32 and the definition itself is NaN (seen: eps = 10, a
# 4 x 2 W, 4 iterations): the range drawn stays below the norms the scales below give.
EPS = [1e-12, 1e-8, 1e-4, 1e-2]
SEEDS = st.integers(0, 2**31 - 1)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _size(draw, backend: str) -> int:
    """One side of W: edge sizes, primes, or any size up to the backend's cap."""
    cap = 70 if backend == "triton" else 300
    return draw(st.one_of(st.sampled_from([0, 1, 2, 3, 5, 7, 13, 31, 37, 64]), st.integers(1, cap)))


@st.composite
def sn_cases(draw, backend: str, dtype: torch.dtype):
    """(inputs for power_iteration / sigma_estimate, seed): W in dtype, u, v in its acc dtype."""
    seed = draw(SEEDS)
    o, k = _size(draw, backend), _size(draw, backend)
    if backend != "triton" and draw(st.integers(0, 9)) == 0:   # now and then a large plane
        o, k = draw(st.sampled_from([(259, 1283), (512, 1152), (1, 4608)]))
    w_layout = draw(layouts(2, broadcastable=True))
    # an expanded W has rank 1: a second singular pair is as undetermined as past min(O, K)
    num_svs = 1 if w_layout == "expand" else draw(st.integers(1, max(1, min(o, k, 4))))
    two_d = num_svs > 1 or draw(st.booleans())
    lead = (num_svs,) if two_d else ()
    acc = _acc(dtype)
    scale = draw(st.sampled_from([0.01, 1.0, 100.0]))
    inputs = dict(
        w_mat=make_tensor(seed, (o, k), w_layout, dtype, scale=scale),
        u=make_tensor(seed + 1, lead + (o,), draw(layouts(len(lead) + 1)), acc),
        v=make_tensor(seed + 2, lead + (k,), draw(layouts(len(lead) + 1)), acc),
    )
    return inputs, seed


def _state_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of t with t's strides (power_iteration writes it in place, as it would a layer's buffer)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    return out.copy_(t)


def _rows(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.reshape(k, t.shape[-1])


def power_iteration_fast(w_mat, u, v, *, n_iters, eps, u_first, backend):
    """(sigma, u, v) after power_iteration on copies of u and v (updated in place by the op)."""
    u_state, v_state = _state_copy(u), _state_copy(v)
    ptrs = (u_state.data_ptr(), v_state.data_ptr())
    sigma = power_iteration(w_mat, u_state, v_state, n_iters, eps, u_first, backend=backend)
    assert (u_state.data_ptr(), v_state.data_ptr()) == ptrs
    assert not sigma.requires_grad
    return sigma, u_state, v_state


def power_iteration_definition(w_mat, u, v, *, n_iters, eps, u_first):
    k = 1 if u.ndim == 1 else u.shape[0]
    sigma, un, vn = power_iteration_ref(w_mat, _rows(u, k), _rows(v, k), n_iters, eps, u_first)
    return (sigma, un, vn) if u.ndim == 2 else (sigma[0], un[0], vn[0])


def sigma_estimate_definition(w_mat, u, v):
    """u^T (W v) per vector, in W's acc dtype: reference.py's association (t = v W^T, then u . t).
    (u^T W) v rounds differently, and over a long row (K = 4608) one order's fp32 error was 3.7x the
    other's on the reference backend itself (the long profile)."""
    k = 1 if u.ndim == 1 else u.shape[0]
    acc = _acc(w_mat.dtype)
    t = _rows(v, k).to(acc) @ w_mat.to(acc).t()                        # [k, O]
    sigma = (t * _rows(u, k).to(acc)).sum(1)
    return sigma if u.ndim == 2 else sigma[0]


def spectral_sigma_definition(w_mat, u, v, sigma):
    """The value sigma, the gradient of u^T W v (u, v constant) in W."""
    k = 1 if u.ndim == 1 else u.shape[0]
    acc = _acc(w_mat.dtype)
    est = ((_rows(u, k).to(acc) @ w_mat.to(acc)) * _rows(v, k).to(acc)).sum(1)
    est = est if u.ndim == 2 else est[0]
    return sigma + (est - est.detach())


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_power_iteration(backend, dtype, data):
    inputs, seed = data.draw(sn_cases(backend, dtype))
    inputs.update(n_iters=data.draw(st.integers(1, 4)), eps=data.draw(st.sampled_from(EPS)),
                  u_first=data.draw(st.booleans()))
    check_op("power_iteration", functools.partial(power_iteration_fast, backend=backend), power_iteration_definition,
             inputs, dtype=dtype, diff=(), second_order=False, seed=seed)


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_sigma_estimate(backend, dtype, data):
    inputs, seed = data.draw(sn_cases(backend, dtype))
    check_op("sigma_estimate", functools.partial(sigma_estimate, backend=backend), sigma_estimate_definition,
             inputs, dtype=dtype, diff=(), second_order=False, seed=seed)


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_spectral_sigma(backend, dtype, data):
    # sigma from the backend's own power iteration (spectral_sigma itself has no backend): the
    # value passes through, the gradient in W (first and second order) is that of u^T W v.
    inputs, seed = data.draw(sn_cases(backend, dtype))
    sigma, u, v = power_iteration_fast(inputs["w_mat"], inputs["u"], inputs["v"], n_iters=1, eps=1e-12,
                                       u_first=False, backend=backend)
    inputs.update(u=u, v=v, sigma=sigma)
    check_op("spectral_sigma", spectral_sigma, spectral_sigma_definition, inputs, dtype=dtype, diff=("w_mat",),
             second_order=True, seed=seed, backend=backend)


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(15)
@given(data=st.data())
def test_fuzz_nonfinite_weights(backend, dtype, data):
    # NaN / +-inf entries in W (a diverged layer): sigma, u and v are non-finite where the
    # definition's are.
    inputs, seed = data.draw(sn_cases(backend, dtype))
    w = inputs["w_mat"].clone()
    if w.numel():
        n_bad = data.draw(st.integers(1, min(3, w.numel())))
        for _ in range(n_bad):
            i = data.draw(st.integers(0, w.numel() - 1))
            w[tuple(int(j) for j in torch.unravel_index(torch.tensor(i), w.shape))] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    inputs.update(w_mat=w, n_iters=data.draw(st.integers(1, 3)), eps=1e-12, u_first=data.draw(st.booleans()))
    check_nonfinite("power_iteration", functools.partial(power_iteration_fast, backend=backend),
                    power_iteration_definition, inputs, dtype=dtype)
    del inputs["n_iters"], inputs["eps"], inputs["u_first"]
    check_nonfinite("sigma_estimate", functools.partial(sigma_estimate, backend=backend), sigma_estimate_definition,
                    inputs, dtype=dtype)


# ---- hostile arguments: an error naming the argument, never a crash ----

def _hostile(kind: str, o: int, k: int, dtype: torch.dtype):
    """(w_mat, u, v, extra kwargs, the message's pattern) for one kind of bad call."""
    acc = _acc(dtype)
    w, u, v = torch.randn(o, k).to(dtype), torch.randn(o, dtype=acc), torch.randn(k, dtype=acc)
    return {
        "w-rank": (w[None], u, v, {}, "w_mat must be a 2-D \\[out, in\\] matrix"),
        "w-int": (w.to(torch.int32), u, v, {}, "w_mat must be a floating tensor"),
        "u-size": (w, torch.randn(o + 1, dtype=acc), v, {}, f"u must be \\[{o}\\] or \\[num_svs, {o}\\]"),
        "v-rank": (w, u, torch.randn(1, 1, k, dtype=acc), {}, f"v must be \\[{k}\\] or \\[num_svs, {k}\\]"),
        "u-dtype": (w, u.to(torch.float16), v, {}, "u must be float(32|64) .* got float16"),
        "v-dtype": (w, u, v.to(torch.float64 if acc == torch.float32 else torch.float32), {}, "v must be float"),
        "u-meta": (w, torch.empty(o, dtype=acc, device="meta"), v, {}, "u must be on w_mat's device cpu, got meta"),
        "w-meta": (torch.empty(o, k, dtype=dtype, device="meta"), u, v, {}, "u must be on w_mat's device meta"),
        "count": (w, torch.randn(2, o, dtype=acc), torch.randn(3, k, dtype=acc), {},
                  "u and v must hold the same number of vectors"),
        "num_svs-0": (w, torch.randn(0, o, dtype=acc), torch.randn(0, k, dtype=acc), {},
                      "u and v must hold at least one vector"),
    }[kind]


HOSTILE = ["w-rank", "w-int", "u-size", "v-rank", "u-dtype", "v-dtype", "u-meta", "w-meta", "count", "num_svs-0"]


@fuzz_settings(30)
@given(kind=st.sampled_from(HOSTILE), o=st.integers(1, 9), k=st.integers(1, 9),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
       backend=st.sampled_from(fuzz_backends(OP)), fn=st.sampled_from(["power_iteration", "sigma_estimate",
                                                                        "spectral_sigma"]))
def test_fuzz_hostile_arguments_name_the_argument(kind, o, k, dtype, backend, fn):
    w, u, v, kwargs, match = _hostile(kind, o, k, dtype)
    with pytest.raises(ValueError, match=f"ganfast.ops.{fn}: {match}"):
        if fn == "power_iteration":
            power_iteration(w, u, v, backend=backend, **kwargs)
        elif fn == "sigma_estimate":
            sigma_estimate(w, u, v, backend=backend, **kwargs)
        else:
            spectral_sigma(w, u, v, torch.ones(u.shape[:-1]))


@fuzz_settings(10)
@given(setting=st.sampled_from([("n_iters", 0), ("n_iters", 2.0), ("n_iters", True), ("eps", 0.0), ("eps", -1.0),
                                ("eps", float("nan"))]),
       backend=st.sampled_from(fuzz_backends(OP)))
def test_fuzz_hostile_settings_name_the_argument(setting, backend):
    name, value = setting
    with pytest.raises(ValueError, match=f"ganfast.ops.power_iteration: {name} must be"):
        power_iteration(torch.randn(4, 3), torch.randn(4), torch.randn(3), backend=backend, **{name: value})


def test_spectral_sigma_sigma_of_the_wrong_shape_names_it():
    w, u, v = torch.randn(4, 3), torch.randn(2, 4), torch.randn(2, 3)
    with pytest.raises(ValueError, match="ganfast.ops.spectral_sigma: sigma must hold 2 value"):
        spectral_sigma(w, u, v, torch.ones(3))
