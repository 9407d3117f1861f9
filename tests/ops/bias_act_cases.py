"""Shared cases for the bias_act tests of every backend: inputs, oracle and comparison helpers."""
from __future__ import annotations

import math

import torch

from ganfast.ops import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS, bias_act_ref
from ganfast.testing import assert_matches_oracle

ACTS = list(ACTIVATIONS)

# (name, shape, dim, layout) -- each one a case that has bitten elementwise kernels.
SHAPES = [
    ("nchw_4x4_odd_c", (2, 5, 4, 4), 1, "contiguous"),       # 4x4 maps (StyleGAN's first block), odd C
    ("nchw_1x1", (3, 7, 1, 1), 1, "contiguous"),             # 1x1 maps: inner == 1 in NCHW
    ("batch1_odd_hw", (1, 3, 7, 9), 1, "contiguous"),        # batch 1, sizes that divide no block
    ("channels_last", (2, 6, 5, 3), 1, "channels_last"),     # bias runs along the fastest dim
    ("noncontiguous_slice", (2, 6, 8, 5), 1, "slice"),       # not dense: must be copied, not misread
    ("dim2_of_4d", (2, 3, 5, 4), 2, "contiguous"),           # bias along H (dim != 1)
    ("linear_nc", (9, 33), 1, "contiguous"),                 # [N, C] fully connected output
    ("last_dim", (4, 3, 17), -1, "contiguous"),              # bias along the last dim (inner == 1)
    ("c1", (2, 1, 6, 6), 1, "contiguous"),                   # C == 1: any stride of dim is legal
    ("big_rows", (2, 3, 150, 130), 1, "contiguous"),         # rows longer than the CPU chunk (16384)
]

TOLERANT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_input(shape, layout, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if layout == "slice":
        full = torch.randn(*shape[:-1], shape[-1] * 2, generator=g, dtype=torch.float64)
        x = full[..., ::2]
        assert not x.is_contiguous()
    else:
        x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    return x.to(device=device, dtype=dtype)


def make_bias(c, dtype, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(c, generator=g, dtype=torch.float64) * 0.5).to(device=device, dtype=dtype)


def kwargs_for(act, clamp):
    return dict(act=act, clamp=clamp)


def resolved(act, x, b, dim, clamp):
    """Reference keyword arguments with the StyleGAN2 defaults resolved."""
    spec = ACTIVATIONS[act]
    return dict(dim=dim % x.ndim, act=act, alpha=spec.def_alpha, gain=spec.def_gain,
                clamp=-1.0 if clamp is None else float(clamp))


def forward_and_grads(fn, x, b, dy, ddx, create_graph=True):
    """y = fn(x, b); first grads (dx, db) for dy; second grads of <dx, ddx> + <db, 1> w.r.t. (x, b)."""
    x = x.detach().requires_grad_(True)
    b = b.detach().requires_grad_(True) if b is not None else None
    y = fn(x, b)
    params = [x] + ([b] if b is not None else [])
    first = torch.autograd.grad(y, params, dy, create_graph=create_graph)
    out = {"y": y, "dx": first[0]}
    if b is not None:
        out["db"] = first[1]
    if create_graph:
        loss = (first[0] * ddx).sum() + (first[1].sum() if b is not None else 0)
        if loss.requires_grad:
            second = torch.autograd.grad(loss, params, allow_unused=True)
            out["ddx_x"] = second[0] if second[0] is not None else torch.zeros_like(x)
            if b is not None:
                out["ddx_b"] = second[1] if second[1] is not None else torch.zeros_like(b)
        else:  # nothing depends on x any more (f'' == 0 and no clamp): the second grads are zero
            out["ddx_x"] = torch.zeros_like(x)
            if b is not None:
                out["ddx_b"] = torch.zeros_like(b)
    return out


def check_backend_against_oracle(backend, act, shape, dim, layout, dtype, with_bias, clamp,
                                 second_order=True, device="cpu"):
    """The accuracy rule for forward, backward and double backward of one backend on one case."""
    x64 = make_input(shape, layout, torch.float64)
    c = x64.shape[dim]
    b64 = make_bias(c, torch.float64) if with_bias else None
    dy64 = torch.randn(x64.shape, dtype=torch.float64)
    ddx64 = torch.randn(x64.shape, dtype=torch.float64)
    kw = resolved(act, x64, b64, dim, clamp)

    def ref(x, b):
        return bias_act_ref(x, b, **kw)

    def fast(x, b):
        return bias_act(x, b, dim=dim, act=act, clamp=clamp, backend=backend)

    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    oracle = forward_and_grads(ref, x64, b64, dy64, ddx64, second_order)
    same = forward_and_grads(ref, cast(x64), cast(b64), cast(dy64), cast(ddx64), second_order)
    got = forward_and_grads(fast, cast(x64), cast(b64), cast(dy64), cast(ddx64), second_order)
    assert got["y"].shape == x64.shape and got["y"].dtype == dtype
    if layout == "channels_last":
        assert got["y"].is_contiguous(memory_format=torch.channels_last), "output must keep x's layout"
    for k in oracle:
        budget_ref = same[k] if dtype != torch.float64 else None
        assert_matches_oracle(got[k], oracle[k], budget_ref, dtype=dtype,
                              name=f"{backend}/{act}/{k}/{layout}{tuple(shape)}")


def gain_of(act):
    return ACTIVATIONS[act].def_gain


__all__ = ["ACTS", "SHAPES", "TOLERANT_DTYPES", "make_input", "make_bias", "resolved",
           "forward_and_grads", "check_backend_against_oracle", "gain_of", "math"]


def check_poisoned_output(run, device="cpu", dtypes=(torch.float32, torch.float16)):
    """`run` is a backend module's kernel contract `run(order, ..., want_db, out=)`: hand it
    NaN-filled outputs and compare with the reference's contract, so an element the kernel never
    writes fails. Orders 0/1/2, NCHW, channels_last, [N, C], sizes that divide no block."""
    from ganfast.ops.bias_act import reference
    from ganfast.testing import poison_like
    for dtype in dtypes:
        for shape, layout, dim in (((2, 5, 7, 3), "contiguous", 1), ((2, 6, 5, 3), "channels_last", 1),
                                   ((13, 7), "contiguous", 1), ((1, 3, 1, 1), "contiguous", 1)):
            x64 = make_input(shape, layout, torch.float64, seed=5)
            b64 = make_bias(x64.shape[dim], torch.float64, seed=6)
            g64 = torch.randn(x64.shape, dtype=torch.float64).to(memory_format=torch.channels_last) \
                if layout == "channels_last" else torch.randn(x64.shape, dtype=torch.float64)
            gg64 = torch.randn_like(g64)
            # Round the inputs to dtype first: this check is about unwritten elements, and an input
            # that rounding moves across the clamp bound would flip a whole gradient element.
            x64, b64, g64, gg64 = (t.to(dtype).double() for t in (x64, b64, g64, gg64))
            for order in (0, 1, 2):
                args = (dim, "swish", 0.0, 1.3, 2.0, True)
                want, want_db = reference.run(order, x64, b64, g64 if order else None,
                                              gg64 if order == 2 else None, *args)
                cast = lambda t: t.to(device=device, dtype=dtype)
                x = cast(x64)
                out = poison_like(x)
                got, got_db = run(order, x, cast(b64), cast(g64) if order else None,
                                  cast(gg64) if order == 2 else None, *args, out=out)
                assert got.data_ptr() == out.data_ptr(), "the kernel must write into the given out"
                name = f"poisoned {layout}{shape} order {order}"
                assert torch.isfinite(got).all(), f"{name}: unwritten (NaN) elements remain"
                tol = 1e-5 if dtype == torch.float32 else 2e-2
                torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol, msg=name)
                torch.testing.assert_close(got_db.double().cpu(), want_db, rtol=tol, atol=tol * x.numel() ** 0.5,
                                           msg=name + " db")
