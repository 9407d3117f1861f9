"""modulated_conv2d reference: the two StyleGAN2 formulations against each other and against
plain convolution, per-sample independence, resampling shapes and alignment, demodulation,
the fp16 safeguard, gradients of any order, argument errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ganfast
from ganfast import backends
from ganfast.ops.modulated_conv2d import demod_coefficients, modulated_conv2d
from ganfast.ops.upfirdn2d import setup_filter

from .modulated_conv2d_cases import CASES, check_backend_against_oracle

F64 = torch.float64


def _inputs(n=2, cin=3, cout=5, h=8, w=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, cin, h, w, generator=g, dtype=F64), torch.randn(cout, cin, k, k, generator=g, dtype=F64),
            torch.randn(n, cin, generator=g, dtype=F64))


RESAMPLE = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 1, 0), (1, 2, 0)]  # (up, down, padding); 3x3 uses 1, 1x1 uses 0


@pytest.mark.parametrize("up, down, padding", RESAMPLE)
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("flip_weight", [True, False])
def test_grouped_and_scaled_formulations_agree(up, down, padding, demodulate, flip_weight):
    k = 3 if padding == 1 else 1
    x, w, s = _inputs(k=k)
    f = setup_filter([1, 3, 3, 1]).to(F64)
    kw = dict(up=up, down=down, padding=padding, resample_filter=f, demodulate=demodulate, flip_weight=flip_weight,
              bias=torch.randn(5, dtype=F64), act="lrelu", gain=2 ** 0.5, clamp=256)
    a = modulated_conv2d(x, w, s, fused_modconv=True, **kw)
    b = modulated_conv2d(x, w, s, fused_modconv=False, **kw)
    assert a.shape == (2, 5, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cout, k, res, grouped", [(1, 1, 32, True), (3, 1, 8, True), (16, 3, 32, True),
                                                    (64, 3, 32, False), (64, 3, 4, False), (3, 1, 2, False)])
def test_automatic_formulation_picks_by_shape_and_computes_the_same(cout, k, res, grouped):
    # fused_modconv=None (the modules' default) runs the faster formulation for the shape
    # (reference.prefer_grouped, issue 28): its values and gradients are those of the chosen one.
    from unittest import mock

    from ganfast.ops.modulated_conv2d import reference as ref
    assert ref.prefer_grouped((2, 4, res, res), (cout, 4, k, k)) == grouped
    g = torch.Generator().manual_seed(cout + res)
    x = torch.randn(2, 4, res, res, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(cout, 4, k, k, dtype=F64, generator=g)
    s = torch.randn(2, 4, dtype=F64, generator=g)
    seen = []
    real = ref.conv2d_resample_ref

    def spy(x_, w_, *a, **kw):
        seen.append(kw.get("groups", 1) if "groups" in kw else (a[4] if len(a) > 4 else 1))
        return real(x_, w_, *a, **kw)

    with mock.patch.object(ref, "conv2d_resample_ref", spy):
        auto = modulated_conv2d(x, w, s, padding=k // 2, backend="reference")
    assert seen == [2 if grouped else 1]
    explicit = modulated_conv2d(x, w, s, padding=k // 2, fused_modconv=grouped, backend="reference")
    torch.testing.assert_close(auto, explicit, rtol=0, atol=0)
    dy = torch.randn(auto.shape, dtype=F64, generator=g)
    torch.testing.assert_close(torch.autograd.grad(auto, x, dy)[0], torch.autograd.grad(explicit, x, dy)[0],
                               rtol=0, atol=0)


def test_fast_resampling_paths_equal_the_definition():
    # conv2d_resample runs up as a transposed convolution then the filter, and down as the filter
    # then a strided convolution (1/4 of the multiply-adds at 2x); both must equal the definition
    # (zero-insert, filter, convolve at the high resolution, filter, decimate) for any factors,
    # kernel and filter sizes, paddings (negative crops), groups and flips.
    import random
    from ganfast.ops.modulated_conv2d.reference import _conv2d_resample_direct, conv2d_resample_ref, resample_padding
    rng = random.Random(0)
    checked = 0
    for _ in range(150):
        up, down = rng.choice([(2, 1), (4, 1), (3, 1), (1, 2), (1, 3), (1, 4)])
        groups, cin_g, cout_g = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 3)
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        f = rng.choice([setup_filter([1, 3, 3, 1]), setup_filter([1, 2, 1]), setup_filter([1, 3, 3, 1], separable=True),
                        None, setup_filter(torch.rand(3, 2) + 0.1)])
        f = f.double() if f is not None else None
        pad = [rng.randint(-1, 3) for _ in range(4)]
        flip_weight, flip_filter = rng.choice([True, False]), rng.choice([True, False])
        x = torch.randn(2, groups * cin_g, rng.randint(kh + 4, 12), rng.randint(kw + 4, 12), dtype=F64)
        w = torch.randn(groups * cout_g, cin_g, kh, kw, dtype=F64)
        try:
            expected = _conv2d_resample_direct(x, w if flip_weight else w.flip([2, 3]), f, up, down,
                                               resample_padding(f, up, down, pad), groups, flip_filter)
        except ValueError:  # an empty output: nothing to compare
            continue
        got = conv2d_resample_ref(x, w, f, up, down, pad, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
        assert got.shape == expected.shape, (up, down, kh, kw, pad)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 100


def test_unit_styles_without_demodulation_is_plain_conv():
    x, w, _ = _inputs()
    ones = torch.ones(2, 3, dtype=F64)
    y = modulated_conv2d(x, w, ones, padding=1, demodulate=False)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)
    y = modulated_conv2d(x, w, ones, padding=1, demodulate=False, flip_weight=False)
    torch.testing.assert_close(y, F.conv2d(x, w.flip([2, 3]), padding=1), rtol=1e-12, atol=1e-12)


def test_modulation_and_demodulation_follow_the_formula():
    # Sample by sample: conv with weight * styles[n] per input channel, divided per output
    # channel by the norm of those weights (the definition, no grouping involved).
    x, w, s = _inputs(n=3)
    noise = torch.randn(3, 1, 8, 8, dtype=F64)
    y = modulated_conv2d(x, w, s, noise=noise, padding=1)
    for i in range(3):
        wi = w * s[i].reshape(1, 3, 1, 1)
        wi = wi / (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(y[i:i + 1], F.conv2d(x[i:i + 1], wi, padding=1) + noise[i:i + 1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(demod_coefficients(w, s),
                               ((w[None] * s[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt())


def test_demodulation_keeps_unit_variance():
    x, w, s = _inputs(n=4, cin=64, cout=32, h=16, w=16)
    y = modulated_conv2d(x, w, s * 10, padding=1)
    assert abs(y[:, :, 1:-1, 1:-1].std().item() - 1) < 0.1  # the styles' scale is divided out


@pytest.mark.parametrize("up, down", [(2, 1), (1, 2)])
def test_resampling_keeps_a_constant_image_constant_inside(up, down):
    # Identity 1x1 weights, unit styles, no demodulation: only the resampling acts, and a
    # normalized filter keeps a constant's value away from the borders (alignment and gain).
    x = torch.full((1, 2, 8, 8), 3.0, dtype=F64)
    w = torch.eye(2, dtype=F64).reshape(2, 2, 1, 1)
    y = modulated_conv2d(x, w, torch.ones(1, 2, dtype=F64), up=up, down=down,
                         resample_filter=setup_filter([1, 3, 3, 1]).to(F64), demodulate=False)
    size = 8 * up // down
    assert y.shape == (1, 2, size, size)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 3.0))


def test_fp16_safeguard_changes_nothing_mathematically():
    # The per-output-channel and per-sample scales cancel in the demodulation, up to its + 1e-8.
    x, w, s = _inputs()
    a = modulated_conv2d(x, w * 1e3, s * 1e-2, padding=1, fp16_safeguard=True)
    b = modulated_conv2d(x, w * 1e3, s * 1e-2, padding=1, fp16_safeguard=False)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_fp16_runs_with_the_safeguard_where_plain_fp16_overflows():
    x, w, s = _inputs()
    big_w, big_s = w * 300, s * 300  # modulated weights ~1e5: past fp16's 65504
    y16 = modulated_conv2d(x.half(), big_w.half(), big_s.half(), padding=1)  # safeguard on by default
    assert torch.isfinite(y16).all()
    torch.testing.assert_close(y16.double(), modulated_conv2d(x, big_w.half().double(), big_s.half().double(), padding=1),
                               rtol=2e-2, atol=2e-2)


def test_gradcheck_and_gradgradcheck():
    x, w, s = (t.requires_grad_() for t in _inputs(n=2, cin=2, cout=2, h=5, w=5))
    f = setup_filter([1, 3, 3, 1]).to(F64)
    fn = lambda x, w, s: modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, act="swish")
    assert torch.autograd.gradcheck(fn, (x, w, s))
    assert torch.autograd.gradgradcheck(fn, (x, w, s))


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=torch.ones(2, 3, 8)), "x must be a floating \\[N, Cin, H, W\\]"),
    (dict(weight=torch.ones(5, 4, 3, 3)), "weight must be \\[Cout, 3, kh, kw\\]"),
    (dict(styles=torch.ones(2, 4)), "styles must be \\[2, 3\\]"),
    (dict(bias=torch.ones(4)), "bias must be \\[5\\]"),
    (dict(act="gelu"), "act must be one of"),
    (dict(up=0), "up must be an int >= 1"),
    (dict(clamp=-2), "clamp must be None or >= 0"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(x=torch.ones(2, 3, 8, 8), weight=torch.ones(5, 3, 3, 3), styles=torch.ones(2, 3), padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        modulated_conv2d(**args)


def test_reference_rejects_nothing_it_documents():
    # backend='reference' never dispatches: it is plain PyTorch, any dtype, any order.
    x, w, s = _inputs()
    assert modulated_conv2d(x, w, s, padding=1, backend="reference").dtype == F64


# ---------------------------------------------------------------- the fused composition, kernels aside

def test_fused_autograd_plumbing_matches_the_reference_to_second_order(monkeypatch):
    # The fused paths' autograd (custom ops, Function twins, the conv gradients of the one-kernel
    # path, the double backward through the epilogue backward) with the reference kernel contracts
    # standing in for the kernels, in float64: any mismatch is the plumbing's. Covers the split
    # path (cpu/cuda) and the one-kernel path (triton), eagerly and under torch.compile.
    import sys
    from ganfast import backends
    from ganfast.ops.modulated_conv2d import reference as ref
    mc = sys.modules["ganfast.ops.modulated_conv2d"]
    uf = sys.modules["ganfast.ops.upfirdn2d"]
    monkeypatch.setattr(mc, "_impl", lambda name: ref)
    monkeypatch.setattr(uf, "_impl", lambda name: sys.modules["ganfast.ops.upfirdn2d.reference"])
    monkeypatch.setattr(backends, "select", lambda op, tensors, backend=None: backend or "cpu")
    f = setup_filter([1, 3, 3, 1]).to(F64)
    for path in ("cpu", "triton"):
        for up, down in ((1, 1), (2, 1), (1, 2)):
            for compiled in (False, True):
                x, w, s = (t.requires_grad_() for t in _inputs(n=2, cin=3, cout=4, h=6, w=5))
                b = torch.randn(4, dtype=F64, requires_grad=True)
                ns = torch.tensor(0.7, dtype=F64, requires_grad=True)
                noise = torch.randn(2, 1, 6 * up // down, 5 * up // down, dtype=F64)
                kw = dict(up=up, down=down, padding=1, resample_filter=f, act="swish", gain=1.3)

                def fused(x, w, s, b, ns):
                    return modulated_conv2d(x, w, s, noise * ns, bias=b, backend=path, **kw)
                fn = torch.compile(fused, backend="aot_eager", fullgraph=True, dynamic=False) if compiled else fused
                args = (x, w, s, b, ns)
                y1 = fn(*args)
                y2 = modulated_conv2d(x, w, s, noise * ns, bias=b, backend="reference", **kw)
                torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
                g = torch.randn_like(y1)
                # (torch.compile's aot_autograd has no double backward: first order only there)
                g1 = torch.autograd.grad((y1 * g).sum(), args, create_graph=not compiled)
                g2 = torch.autograd.grad((y2 * g).sum(), args, create_graph=True)
                for a, e in zip(g1, g2):
                    torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
                if compiled:
                    continue
                h1 = torch.autograd.grad(sum(t.square().sum() for t in g1[:3]), args)
                h2 = torch.autograd.grad(sum(t.square().sum() for t in g2[:3]), args)
                for a, e in zip(h1, h2):
                    torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


def _fused_backends() -> list:
    """The fused backends that run on CPU tensors here (triton through its interpreter)."""
    out = []
    if ganfast._ext.unavailable_reason("cpu") is None:
        out.append("cpu")
    if backends.triton_interpret():
        out.append("triton")
    return out


@pytest.mark.parametrize("backend", _fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("up", [1, 2], ids=["one-kernel", "split"])
def test_noise_gradient_has_no_spurious_second_order_in_styles(backend, dtype, up):
    # issue 26 (fuzz-found: fp16, up = down = 2, every output from the padding): the noise
    # gradient dz was da / dcoef, whose derivative in dcoef is two rounded terms (through da, and
    # the division's own) that cancel only up to fp16 rounding: a second-order gradient of styles
    # of 0.002 where float64 gives exactly 0. With x = 0 the convolution output a is 0, so dz is a
    # function of noise and bias alone and its derivatives in styles and weight are exactly 0.
    g = torch.Generator().manual_seed(26)
    x = torch.zeros(2, 3, 5, 5, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g).to(dtype).requires_grad_()
    s = (torch.rand(2, 3, generator=g) + 0.5).to(dtype).requires_grad_()
    noise = (torch.randn(2, 1, 5 * up, 5 * up, generator=g) * 0.5).to(dtype).requires_grad_()
    b = (torch.randn(4, generator=g) * 0.2).to(dtype)
    f = setup_filter([1, 3, 3, 1])
    y = modulated_conv2d(x, w, s, noise, up=up, padding=1, resample_filter=f, bias=b, act="tanh", backend=backend)
    cot = torch.randn(y.shape, generator=g).to(dtype)
    (dn,) = torch.autograd.grad(y, noise, cot, create_graph=True)
    v = torch.randn(dn.shape, generator=g).to(dtype)
    ds, dw = torch.autograd.grad((dn * v).sum(), (s, w), allow_unused=True)
    for name, t in (("styles", ds), ("weight", dw)):
        assert t is None or not t.any(), f"{name}: second-order gradient {t.flatten()[:4].tolist()}, exactly 0 expected"


# ---------------------------------------------------------------- the cpu backend

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_cpu_matches_the_oracle(case, dtype):
    check_backend_against_oracle("cpu", case, dtype, double=dtype in (torch.float64, torch.float32))


@needs_cpu_ext
def test_cpu_gradcheck_and_gradgradcheck():
    x, w, s = (t.requires_grad_() for t in _inputs(n=2, cin=2, cout=3, h=5, w=4))
    b = torch.randn(3, dtype=F64, requires_grad=True)
    noise = torch.randn(2, 1, 5, 4, dtype=F64, requires_grad=True)
    fn = lambda x, w, s, b, n: modulated_conv2d(x, w, s, n, padding=1, bias=b, act="swish", clamp=0.8, backend="cpu")
    assert torch.autograd.gradcheck(fn, (x, w, s, b, noise))
    assert torch.autograd.gradgradcheck(fn, (x, w, s, b, noise))


@needs_cpu_ext
def test_custom_ops_pass_opcheck():
    a = torch.randn(2, 3, 4, 5, requires_grad=True)
    dcoef = (torch.rand(2, 3) + 0.5).requires_grad_()
    noise = torch.randn(2, 1, 4, 5, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    args = ("lrelu", 0.2, 1.4, 0.9, "cpu")
    torch.library.opcheck(torch.ops.ganfast.modconv_epilogue.default, (a, dcoef, noise, bias) + args)
    torch.library.opcheck(torch.ops.ganfast.modconv_epilogue.default, (a, None, None, None) + args)
    g = torch.randn(2, 3, 4, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.modconv_epilogue_backward.default, (g, a, dcoef, noise, bias) + args)
    w = torch.randn(3, 4, 3, 3, requires_grad=True)
    s = torch.randn(2, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.modconv_demod.default, (w, s, "cpu"))


@needs_cpu_ext
def test_compiles_without_graph_breaks():
    # as the first ganfast call of a process: nothing cached, so the backend choice happens while
    # dynamo traces (it once reached an importlib call there: a graph break when run alone)
    ganfast.backends.clear_cache()
    ganfast._ext._load.cache_clear()
    x, w, s = (t.float().requires_grad_() for t in _inputs())
    noise = torch.randn(2, 1, 8, 8)
    fn = lambda x, w, s: modulated_conv2d(x, w, s, noise, padding=1, act="lrelu", gain=2 ** 0.5, clamp=1.0,
                                          backend="cpu")
    compiled = torch.compile(lambda *a: fn(*a).square().sum(), fullgraph=True, backend="aot_eager")
    loss = compiled(x, w, s)
    grads = torch.autograd.grad(loss, (x, w, s))
    expected = modulated_conv2d(x, w, s, noise, padding=1, act="lrelu", gain=2 ** 0.5, clamp=1.0,
                                backend="reference").square().sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    for a, e in zip(grads, torch.autograd.grad(expected, (x, w, s))):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the modules

@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu_ext)])
def test_modules_match_the_stylegan2_layer_formula(backend):
    # ModulatedConv2d is StyleGAN2's SynthesisLayer: styles = affine(w) with the equalized
    # learning rate (bias 1), noise * strength, bias, lrelu * sqrt(2), conv_clamp; ToRGB scales the
    # styles by 1/sqrt(fan_in) and does not demodulate.
    torch.manual_seed(1)
    layer = ganfast.nn.ModulatedConv2d(6, 5, 3, w_dim=8, resolution=8, noise_mode="const", conv_clamp=0.5,
                                       backend=backend).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x, w = torch.randn(2, 6, 8, 8, dtype=F64), torch.randn(2, 8, dtype=F64)
    styles = w @ layer.affine_weight.t() / 8 ** 0.5 + layer.affine_bias
    wt = layer.weight[None] * styles[:, None, :, None, None]
    wt = wt * (wt.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    conv = torch.cat([F.conv2d(x[i:i + 1], wt[i], padding=1) for i in range(2)])
    expected = (F.leaky_relu(conv + layer.noise_const * 0.3 + layer.bias.view(1, -1, 1, 1), 0.2) * 2 ** 0.5).clamp(-0.5, 0.5)
    torch.testing.assert_close(layer(x, w), expected, rtol=1e-10, atol=1e-10)
    rgb = ganfast.nn.ToRGB(6, 3, w_dim=8, backend=backend).double()
    styles = (w @ rgb.affine_weight.t() / 8 ** 0.5 + rgb.affine_bias) / 6 ** 0.5
    expected = torch.cat([F.conv2d(x[i:i + 1], rgb.weight * styles[i].view(1, 6, 1, 1)) for i in range(2)]) \
        + rgb.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(rgb(x, w), expected, rtol=1e-10, atol=1e-10)
    assert "demodulate=False" in repr(rgb) and "kernel_size=3" in repr(layer)


def test_module_arguments_are_checked():
    with pytest.raises(ValueError, match="noise_mode='const' needs resolution"):
        ganfast.nn.ModulatedConv2d(4, 4, 3, w_dim=8, noise_mode="const")
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        ganfast.nn.ModulatedConv2d(4, 4, 0, w_dim=8)
    layer = ganfast.nn.ModulatedConv2d(4, 4, 3, w_dim=8)
    with pytest.raises(ValueError, match="w must have shape \\[N, 8\\]"):
        layer(torch.randn(2, 4, 8, 8), torch.randn(2, 7))


# ---------------------------------------------------------------- the triton backend (interpreter on CPU)

needs_triton = pytest.mark.skipif(not backends.triton_interpret() and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")
TRITON_DEVICE = "cpu" if backends.triton_interpret() else "cuda"


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_the_oracle(case, dtype):
    # The one-kernel path (layer, torgb, odd; up2 after the fused upsampling) and the split path
    # (down2: torch's convolution, then the Triton epilogue), gradients through torch's conv
    # gradients and the Triton epilogue backward, the R1 double backward in fp32.
    pytest.importorskip("triton")
    check_backend_against_oracle("triton", case, dtype, device=TRITON_DEVICE, double=dtype == torch.float32)


@needs_triton
def test_triton_fused_op_passes_opcheck():
    pytest.importorskip("triton")
    d = TRITON_DEVICE
    x = torch.randn(2, 3, 5, 4, device=d, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=d, requires_grad=True)
    s = torch.randn(2, 3, device=d, requires_grad=True)
    dcoef = (torch.rand(2, 4, device=d) + 0.5).requires_grad_()
    noise = torch.randn(2, 1, 5, 4, device=d, requires_grad=True)
    b = torch.randn(4, device=d, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.modconv_fused.default,
                          (x, w, s, dcoef, noise, b, 1, 1, 1, 1, True, "lrelu", 0.2, 1.4, -1.0, True, "triton"))
