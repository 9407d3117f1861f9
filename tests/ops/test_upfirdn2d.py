"""upfirdn2d reference: against a direct per-pixel sum (an oracle written from the definition),
its gradient as another upfirdn2d, gradients of any order, setup_filter, and argument errors."""
from __future__ import annotations

import itertools

import pytest
import torch

import ganfast
from ganfast.ops.upfirdn2d import gradient_args, output_size, setup_filter, upfirdn2d
from tests.ops.reference_v0 import upfirdn2d_v0


def direct(x: torch.Tensor, f: torch.Tensor, up, down, pad, flip_filter=False, gain=1.0) -> torch.Tensor:
    """upfirdn2d from its definition, one output pixel at a time (float64, slow, obviously right):
    out[oy, ox] = gain * sum over taps (i, j) of f[i, j] * u[oy*down + i - pad0, ox*down + j - pad0]
    with u the zero-upsampled input and f flipped (true convolution) unless flip_filter."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    if f.ndim == 1:
        f = torch.outer(f, f)
    if not flip_filter:
        f = f.flip([0, 1])
    fh, fw = f.shape
    n, c, h, w = x.shape
    out_h = (h * upy + py0 + py1 - fh + downy) // downy
    out_w = (w * upx + px0 + px1 - fw + downx) // downx
    out = torch.zeros(n, c, out_h, out_w, dtype=torch.float64)
    for oy, ox, i, j in itertools.product(range(out_h), range(out_w), range(fh), range(fw)):
        uy, ux = oy * downy + i - py0, ox * downx + j - px0   # position in the upsampled image
        if 0 <= uy < h * upy and 0 <= ux < w * upx and uy % upy == 0 and ux % upx == 0:
            out[:, :, oy, ox] += f[i, j] * x[:, :, uy // upy, ux // upx]
    return out * gain


CASES = [
    # (name, x shape, up, down, padding [x0, x1, y0, y1], filter shape)
    ("identity", (2, 3, 5, 4), (1, 1), (1, 1), (0, 0, 0, 0), None),
    ("stylegan_up2", (1, 2, 4, 4), (2, 2), (1, 1), (2, 1, 2, 1), (4,)),            # upsample2d, [1,3,3,1]
    ("stylegan_down2", (2, 2, 8, 8), (1, 1), (2, 2), (1, 1, 1, 1), (4,)),          # downsample2d
    ("per_axis", (1, 2, 5, 7), (2, 3), (3, 1), (1, 2, 0, 3), (3, 2)),             # x and y differ
    ("crop", (2, 1, 6, 5), (1, 1), (1, 1), (-1, -2, 0, -1), (3, 2)),              # negative padding
    ("crop_past_edge", (1, 1, 2, 3), (1, 1), (1, 1), (-3, 5, 1, 1), (2,)),        # crop wider than the image
    ("odd_everything", (3, 1, 3, 5), (3, 2), (2, 3), (2, 4, 3, 1), (5, 3)),
]


@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_matches_the_definition(case, flip_filter):
    _, shape, up, down, pad, fshape = case
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    f = None if fshape is None else torch.randn(fshape, generator=g, dtype=torch.float64)
    got = upfirdn2d(x, f, up=list(up), down=list(down), padding=list(pad), flip_filter=flip_filter, gain=1.3)
    expected = direct(x, torch.ones(1, 1, dtype=torch.float64) if f is None else f, up, down, pad, flip_filter, 1.3)
    assert got.shape == expected.shape
    assert tuple(got.shape[2:]) == output_size(shape[2], shape[3], f, list(up), list(down), list(pad))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_separable_filter_equals_its_outer_product():
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    a = upfirdn2d(x, taps, up=2, padding=[2, 1, 2, 1], gain=4)
    b = upfirdn2d(x, torch.outer(taps, taps), up=2, padding=[2, 1, 2, 1], gain=4)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_upsampling_keeps_a_constant_image_constant_inside():
    # StyleGAN2's upsample2d: [1, 3, 3, 1] normalized, gain up^2; interior pixels of a constant
    # image stay at the constant.
    f = setup_filter([1, 3, 3, 1])
    y = upfirdn2d(torch.full((1, 1, 6, 6), 2.5), f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert y.shape == (1, 1, 12, 12)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full((1, 1, 8, 8), 2.5))


def test_gradient_is_an_upfirdn2d_with_swapped_arguments():
    # The rule the fused kernels' backward will use: dL/dx = upfirdn2d(dL/dy, f, up=down, down=up,
    # flip_filter=not flip_filter, padding=gradient_args(...)), checked on random configurations.
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for trial in range(120):
        h, w = torch.randint(1, 8, (2,), generator=gen).tolist()
        up = torch.randint(1, 4, (2,), generator=gen).tolist()
        down = torch.randint(1, 4, (2,), generator=gen).tolist()
        pad = torch.randint(-2, 5, (4,), generator=gen).tolist()
        fshape = torch.randint(1, 5, (1 if trial % 2 else 2,), generator=gen).tolist()
        f = torch.randn(fshape, generator=gen, dtype=torch.float64)
        flip = trial % 3 == 0
        x = torch.randn(2, 2, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        out_h, out_w = output_size(h, w, f, up, down, pad)
        if out_h < 1 or out_w < 1:
            continue
        y = upfirdn2d(x, f, up, down, pad, flip, gain=0.7)
        dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (dx,) = torch.autograd.grad(y, x, dy)
        dx2 = upfirdn2d(dy, f, gain=0.7, **gradient_args(h, w, f, up, down, pad, flip))
        torch.testing.assert_close(dx2, dx, rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 60


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, f: upfirdn2d(x, f, up=[2, 1], down=[1, 2], padding=[1, 0, 2, -1])
    assert torch.autograd.gradcheck(fn, (x, f))
    assert torch.autograd.gradgradcheck(fn, (x, f))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_low_precision_runs_in_its_dtype(dtype):
    x = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    y = upfirdn2d(x.to(dtype), f, down=2, padding=1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), upfirdn2d(x, f, down=2, padding=1), rtol=2e-2, atol=2e-2)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert setup_filter([1, 2, 3, 4, 4, 3, 2, 1]).shape == (8,)   # 8+ taps: separable by default
    assert setup_filter([1, 3, 3, 1], separable=True).shape == (4,)
    torch.testing.assert_close(setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(setup_filter([1, 2], normalize=False, flip_filter=True, separable=True),
                               torch.tensor([2.0, 1.0]))
    assert setup_filter(None).shape == (1, 1) and setup_filter(None).item() == 1
    with pytest.raises(ValueError, match="do not sum to 0"):
        setup_filter([1, -1])
    with pytest.raises(ValueError, match="cannot be made separable"):
        setup_filter([[1, 2], [3, 4]], separable=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(up=0), "up must be >= 1"),
    (dict(down=[1, 2, 3]), "down must be an int or a pair"),
    (dict(padding=[1, 2, 3]), "padding must be an int"),
    (dict(f=torch.ones(2, 2, 2)), "f must be None, a \\[taps\\] or a \\[fh, fw\\] tensor"),
    (dict(padding=-3), "the output would be empty"),
    (dict(x=torch.ones(3, 4, 4)), "x must be \\[N, C, H, W\\]"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(x=torch.ones(1, 1, 4, 4), f=torch.ones(2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        upfirdn2d(**args)


def test_a_filter_gradient_needs_the_reference():
    # The kernels take the filter as a constant: an explicit fused backend refuses a filter that
    # wants a gradient, the automatic choice computes it with the reference.
    x, f = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ganfast.BackendNotSupported, match="gradient with respect to f needs backend='reference'"):
        upfirdn2d(x, f, up=2, backend="cpu")
    upfirdn2d(x, f, up=2).sum().backward()
    assert f.grad is not None


# ---------------------------------------------------------------- the cpu backend through the public op

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")
STYLEGAN_CALLS = [dict(up=2, padding=[2, 1, 2, 1], gain=4), dict(down=2, padding=1),
                  dict(up=[2, 1], down=[1, 3], padding=[0, 2, -1, 1])]


@needs_cpu_ext
@pytest.mark.parametrize("kw", STYLEGAN_CALLS, ids=["up2", "down2", "mixed"])
def test_cpu_gradients_of_any_order(kw):
    # The backward is upfirdn2d again on the same backend, so gradcheck and gradgradcheck hold.
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    fn = lambda x: upfirdn2d(x, f, backend="cpu", **kw)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    g = torch.randn_like(fn(x))
    got = torch.autograd.grad((fn(x) * g).sum(), x)[0]
    expected = torch.autograd.grad((upfirdn2d(x, f, backend="reference", **kw) * g).sum(), x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@needs_cpu_ext
def test_custom_op_passes_opcheck():
    from ganfast.ops.upfirdn2d import kernel_filter
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    f = kernel_filter(setup_filter([1, 3, 3, 1]), x)
    torch.library.opcheck(torch.ops.ganfast.upfirdn2d.default, (x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0, "cpu"))


@needs_cpu_ext
def test_compiles_without_graph_breaks():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    f = setup_filter([1, 3, 3, 1])
    fn = torch.compile(lambda x: upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, backend="cpu").square().sum(),
                       fullgraph=True, backend="aot_eager")
    loss = fn(x)
    (dx,) = torch.autograd.grad(loss, x)
    expected = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, backend="reference").square().sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(dx, torch.autograd.grad(expected, x)[0])


def test_the_fast_reference_equals_the_old_formulation():
    # Issue 28: depthwise (transposed) convolutions instead of single-channel ones. Values, first
    # and second derivatives (in x and f) equal the old formulation's on random configurations.
    gen = torch.Generator().manual_seed(28)
    checked = 0
    for trial in range(150):
        h, w = torch.randint(1, 9, (2,), generator=gen).tolist()
        up = torch.randint(1, 4, (2,), generator=gen).tolist()
        down = torch.randint(1, 4, (2,), generator=gen).tolist()
        pad = torch.randint(-3, 5, (4,), generator=gen).tolist()
        if trial % 4 == 0:                                  # the symmetric paddings the models use
            pad = [pad[0], pad[0], pad[2], pad[2]]
        kind = trial % 5
        fshape = None if kind == 4 else [1] if kind == 3 else torch.randint(1, 6, (1 if kind % 2 else 2,), generator=gen).tolist()
        f = None if fshape is None else torch.randn(fshape, generator=gen, dtype=torch.float64, requires_grad=True)
        if min(output_size(h, w, f, up, down, pad)) < 1:
            continue
        flip, gain = trial % 3 == 0, float(torch.rand((), generator=gen) * 3)
        x = torch.randn(2, 1 + trial % 4, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        outs = [fn(x, f, up, down, pad, flip, gain) for fn in (
            lambda *a: upfirdn2d(*a[:2], up=a[2], down=a[3], padding=a[4], flip_filter=a[5], gain=a[6], backend="reference"),
            upfirdn2d_v0)]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
        wrt = [x] if f is None else [x, f]
        dy = torch.randn(outs[0].shape, generator=gen, dtype=torch.float64, requires_grad=True)
        grads = [torch.autograd.grad(y, wrt, dy, create_graph=True) for y in outs]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        # the backward's own derivatives (what R1's double backward runs): in dy, x and f
        second = [torch.autograd.grad(sum((g * g).sum() for g in gs), [dy] + wrt, allow_unused=True,
                                      materialize_grads=True) for gs in grads]
        for a, b in zip(*second):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
        checked += 1
    assert checked > 80
