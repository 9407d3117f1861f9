"""modulated_conv2d reference: the two StyleGAN2 formulations against each other and against
plain convolution, per-sample independence, resampling shapes and alignment, demodulation,
the fp16 safeguard, gradients of any order, argument errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ganfast
from ganfast.ops.modulated_conv2d import demod_coefficients, modulated_conv2d
from ganfast.ops.upfirdn2d import setup_filter

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


def test_fused_backends_say_they_are_not_built_yet():
    with pytest.raises(ganfast.BackendNotSupported, match="has no modulated_conv2d kernel"):
        modulated_conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 1, 1), torch.ones(1, 1), backend="cpu")
