"""modulated_conv2d in plain PyTorch, in both StyleGAN2 formulations: the specification.

For sample n, output channel o:
    w[n, o, i]  = weight[o, i] * styles[n, i]                                  (modulation)
    dcoef[n, o] = rsqrt(sum over (i, kh, kw) of w[n, o, i]^2 + 1e-8)            (demodulation)
    y[n, o]     = conv2d_resample(x[n], w[n, o] * dcoef[n, o], ...) + noise
    out         = bias_act(y, bias, act, alpha, gain, clamp)
conv2d_resample upsamples (zero insertion, then the resample filter with gain up^2), convolves
with the ("valid") kernel, then filters and downsamples; `padding` is with respect to the
upsampled image, as in the StyleGAN2 codebases. Two formulations compute the same thing:
  grouped (fused_modconv=True):  per-sample weights [N, Cout, Cin, kh, kw], one grouped conv
  scaled  (fused_modconv=False): x * styles, one shared conv, then * dcoef
fused_modconv=None picks the faster of the two for the shape (prefer_grouped). The fast paths
are held to both. Never imports Triton or the extensions.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ganfast.ops.bias_act.reference import bias_act_ref
from ganfast.ops.upfirdn2d.reference import IntPair, filter_size, parse_padding, upfirdn2d_ref


def resample_padding(f: Optional[torch.Tensor], up: int, down: int, padding: IntPair) -> tuple[int, int, int, int]:
    """The upfirdn2d padding [x0, x1, y0, y1] of conv2d_resample's first step: the user padding
    (relative to the upsampled image) plus what centres the resample filter for up and down."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return px0, px1, py0, py1


def conv2d_resample_ref(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1,
                        down: int = 1, padding: IntPair = 0, groups: int = 1, flip_weight: bool = True,
                        flip_filter: bool = False, upfirdn2d=upfirdn2d_ref) -> torch.Tensor:
    """x [N, C, H, W] (C = groups * w.shape[1]), w [Cout, C / groups, kh, kw].

    upsample by `up` through f (gain up^2), pad, convolve with w (flip_weight=True: correlation,
    as torch's conv2d; False: true convolution), then filter with f and keep every down-th pixel.
    upfirdn2d: the resampling function (the fused paths pass ganfast's op on their backend).
    """
    for name, v in (("up", up), ("down", down)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"conv2d_resample: {name} must be an int >= 1, got {v!r}")
    px0, px1, py0, py1 = pad = resample_padding(f, up, down, padding)
    w = w.to(x.dtype) if flip_weight else w.flip([2, 3]).to(x.dtype)   # now a correlation kernel
    kh, kw = w.shape[2:]
    if up == 1 and down == 1 and px0 == px1 >= 0 and py0 == py1 >= 0:
        # plain padding: let the convolution do it (as the StyleGAN2 codebases do)
        return F.conv2d(x, w, padding=(py0, px0), groups=groups)
    if up > 1 and down == 1:
        # Transposed convolution at the input resolution, then the filter: 1/up^2 of the
        # multiply-adds of convolving the zero-inserted image. The two chains are linear and
        # shift-invariant, so they commute; conv_transpose2d with the flipped kernel is the full
        # correlation of the zero-inserted image (shifted by k - 1), hence the padding.
        cout, cin_g = w.shape[:2]
        wt = w.reshape(groups, cout // groups, cin_g, kh, kw).transpose(1, 2).reshape(groups * cin_g, cout // groups, kh, kw)
        x = F.conv_transpose2d(x, wt.flip([2, 3]), stride=up, groups=groups)
        return upfirdn2d(x, f, padding=[px0 - kw + 1, px1 + up - kw, py0 - kh + 1, py1 + up - kh], gain=up ** 2,
                         flip_filter=flip_filter)
    if down > 1 and up == 1:
        # The filter first, then a strided convolution: 1/down^2 of the multiply-adds of
        # convolving at full resolution and discarding. A 1x1 kernel commutes with decimation,
        # so the filter itself decimates (1/down^2 of its work too; the discriminator's skips).
        if kh == 1 and kw == 1:
            return F.conv2d(upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter), w, groups=groups)
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return F.conv2d(x, w, stride=down, groups=groups)
    return _conv2d_resample_direct(x, w, f, up, down, pad, groups, flip_filter, upfirdn2d)


def _conv2d_resample_direct(x, w, f, up, down, pad, groups, flip_filter, upfirdn2d=upfirdn2d_ref):
    """conv2d_resample by its definition (w a correlation kernel, pad from resample_padding):
    zero-insert, filter and pad; convolve at the upsampled resolution; filter and decimate."""
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)
    x = F.conv2d(x, w, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def fp16_prenormalize(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's fp16 safeguard: scale weight per output channel and styles per sample so that
    the modulated weights stay in fp16 range. With demodulation the scales cancel exactly."""
    cin, kh, kw = weight.shape[1:]
    weight = weight * (1 / (cin * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """dcoef [N, Cout] = rsqrt(sum over (Cin, kh, kw) of (weight * styles)^2 + 1e-8), computed as
    styles^2 @ (weight^2 summed over the kernel) without forming the per-sample weights."""
    wsq = weight.square().sum(dim=[2, 3])                   # [Cout, Cin]
    return (styles.square() @ wsq.t() + 1e-8).rsqrt()      # [N, Cout]


def prefer_grouped(x_shape, weight_shape) -> bool:
    """Whether the grouped formulation is the faster plain-PyTorch one for x [N, Cin, H, W] and
    weight [Cout, Cin, kh, kw] (fused_modconv=None). Measured on oneDNN (bench/
    reference_formulations.py, forward, backward and double backward): the grouped convolution
    wins when the per-sample weights are small beside the image, 4 * Cout * kh * kw <= H * W
    (ToRGB's 1x1 convolutions to 1-3 channels: 2-4x), and loses by 2-15x otherwise (every 3x3
    layer of a StyleGAN2 at 64+ channels), where scaling x and y costs less than building N
    weight copies. NVIDIA's code picks the scaled one whenever it trains, so this is never slower."""
    cout, _, kh, kw = weight_shape
    return 4 * cout * kh * kw <= x_shape[2] * x_shape[3]


def modulated_conv2d_ref(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                         noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntPair = 0,
                         resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                         flip_weight: bool = True, fused_modconv: Optional[bool] = None,
                         bias: Optional[torch.Tensor] = None, act: str = "linear", alpha: float = 0.0, gain: float = 1.0, clamp: float = -1.0,
                         fp16_safeguard: bool = False) -> torch.Tensor:
    """Reference modulated_conv2d with resolved arguments (see the module docstring).

    x [N, Cin, H, W]; weight [Cout, Cin, kh, kw]; styles [N, Cin]; noise broadcastable to the
    output [N, Cout, H', W'] or None; bias [Cout] or None; clamp < 0: none. fused_modconv picks the
    formulation (grouped: True, scaled: False, None: prefer_grouped).
    """
    n, cin = x.shape[:2]
    if fused_modconv is None:
        fused_modconv = prefer_grouped(x.shape, weight.shape)
    cout = weight.shape[0]
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if fp16_safeguard and demodulate:
        weight, styles = fp16_prenormalize(weight, styles)
    if fused_modconv and n > 0:   # (an empty batch would be groups = 0, which torch refuses: same math scaled)
        w = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)           # [N, Cout, Cin, kh, kw]
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, cout, 1, 1, 1)
        y = conv2d_resample_ref(x.reshape(1, n * cin, *x.shape[2:]), w.reshape(n * cout, cin, *w.shape[3:]),
                                resample_filter, up, down, padding, groups=n, flip_weight=flip_weight)
        y = y.reshape(n, cout, *y.shape[2:])
    else:
        y = conv2d_resample_ref(x * styles.reshape(n, cin, 1, 1), weight, resample_filter, up, down, padding,
                                flip_weight=flip_weight)
        if demodulate:
            y = y * demod_coefficients(weight, styles).reshape(n, cout, 1, 1)
    if noise is not None:
        y = y + noise.to(y.dtype)
    b = bias.to(y.dtype) if bias is not None else None
    return bias_act_ref(y, b, 1, act, alpha, gain, clamp)


# ---- kernel contracts of the fused backends ----
#
# The fused paths split modulated_conv2d into
#   a      = conv2d(x * styles, weight)  (the modulated convolution before demodulation)
#   dcoef  = demod_coefficients(weight, styles)          [N, Cout], fp32
#   out    = epilogue(a, dcoef, noise, bias)             one pass: demod, noise, bias, act, gain, clamp
# The cpu backend runs the convolution through torch (oneDNN) and the epilogue in C++; the triton
# backend fuses all three into an implicit-GEMM kernel; the cuda backend runs the convolution
# through torch (cuDNN) and the epilogue and demodulation in CUDA.

def epilogue_forward(a: torch.Tensor, dcoef: Optional[torch.Tensor], noise: Optional[torch.Tensor],
                     bias: Optional[torch.Tensor], act: str, alpha: float, gain: float,
                     clamp: float) -> torch.Tensor:
    """Epilogue kernel contract (forward). Every backend: same signature and meaning.

    a:     [N, C, H, W] contiguous, fp16/bf16/fp32 (fp64 on cpu).
    dcoef: [N, C] contiguous float32 (float64 when a is), or None (no demodulation).
    noise: a's dtype, expanded to [N, C, H, W] (any strides, 0 for broadcast dims), or None.
    bias:  [C] contiguous float32 (float64 when a is), or None.
    act, alpha, gain, clamp: as bias_act (clamp < 0: none). Math in fp32 (fp64 for fp64).
      z = a * dcoef[n, c] + noise + bias[c];  out = clamp(act(z) * gain, -clamp, clamp)
    Returns a new contiguous tensor like a.
    """
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    z = a.to(acc)
    if dcoef is not None:
        z = z * dcoef.to(acc)[:, :, None, None]
    if noise is not None:
        z = z + noise.to(acc)
    return bias_act_ref(z, bias.to(acc) if bias is not None else None, 1, act, alpha, gain, clamp).to(a.dtype)


def epilogue_backward(g: torch.Tensor, a: torch.Tensor, dcoef: Optional[torch.Tensor],
                      noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], act: str,
                      alpha: float, gain: float, clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Epilogue kernel contract (backward), given g = dL/dout (a's shape, dtype and layout).

    With z as in epilogue_forward and dz = dL/dz = g * gain * act'(z) * [|gain * act(z)| <= clamp]:
      da   = dz * dcoef[n, c]  (dz when dcoef is None), a new contiguous tensor in a's dtype
      sums = [N, C, 2] float32 (float64 when a is): sums[n, c, 0] = sum_hw dz,
             sums[n, c, 1] = sum_hw dz * a       (accumulated in fp32 / fp64, deterministic)
    so dbias = sums[..., 0].sum(0), ddcoef = sums[..., 1], dnoise = dz summed to noise's shape.
    Derivative conventions at kinks are bias_act's (csrc/common/bias_act_math.h).
    """
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    a_acc = a.to(acc)
    z = a_acc if dcoef is None else a_acc * dcoef.to(acc)[:, :, None, None]
    if noise is not None:
        z = z + noise.to(acc)
    b = bias.to(acc) if bias is not None else None

    def f(z_):
        return bias_act_ref(z_, b, 1, act, alpha, gain, clamp)

    dz = torch.func.vjp(f, z)[1](g.to(acc))[0]
    da = dz if dcoef is None else dz * dcoef.to(acc)[:, :, None, None]
    sums = torch.stack([dz.sum(dim=[2, 3]), (dz * a_acc).sum(dim=[2, 3])], dim=-1)
    return da.to(a.dtype), sums


def modconv_forward(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, dcoef: Optional[torch.Tensor],
                    noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], padding: tuple[int, int, int, int],
                    flip_weight: bool, act: str, alpha: float, gain: float, clamp: float,
                    want_a: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Fused modulated-convolution kernel contract (triton; up = down = 1), everything in one pass.

    x:       [N, Cin, H, W] contiguous, fp16/bf16/fp32.
    weight:  [Cout, Cin, kh, kw] contiguous, x's dtype.   styles: [N, Cin] contiguous float32.
    dcoef:   [N, Cout] contiguous float32 or None.        noise, bias, act..clamp: as epilogue_forward.
    padding: (x0, x1, y0, y1), each >= 0. flip_weight: True = correlation (torch's conv2d).
      a   = conv2d(pad(x) * styles[n, cin], weight)         [N, Cout, H', W'], fp32 accumulation
      out = epilogue_forward(a, dcoef, noise, bias, ...)    every element written once
    Returns (out, a): a (in x's dtype, contiguous) only when want_a (the backward needs it), else None.
    The per-sample weights weight * styles[n] are never written to memory.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    px0, px1, py0, py1 = padding
    xs = F.pad(x.to(acc), [px0, px1, py0, py1]) * styles.to(acc)[:, :, None, None]
    w = weight.to(acc) if flip_weight else weight.to(acc).flip([2, 3])
    a = F.conv2d(xs, w)
    out = epilogue_forward(a, dcoef, noise, bias, act, alpha, gain, clamp)
    return out.to(x.dtype), (a.to(x.dtype) if want_a else None)


forward = modconv_forward  # the name the backends' modules use for the fused-convolution contract
