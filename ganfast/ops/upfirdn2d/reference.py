"""upfirdn2d in plain PyTorch: the specification and the universal fallback.

For each channel of x [N, C, H, W], in order:
  1. upsample by inserting up - 1 zeros after every pixel (per axis: up_x, up_y);
  2. pad with zeros (padding [x0, x1, y0, y1]; negative values crop);
  3. convolve with the FIR filter f (true convolution; flip_filter=True gives correlation),
     keeping only outputs whose footprint lies inside the padded image ("valid");
  4. downsample by keeping every down-th pixel (per axis: down_x, down_y).
f is [fh, fw] (non-separable), [taps] (separable: applied along x, then along y) or None (the
identity). gain scales the result: a 2-D filter is multiplied by gain, a separable one by
sqrt(gain) per axis. Output size per axis: (in * up + pad0 + pad1 - taps + down) // down.
The argument conventions are those of the StyleGAN2/StyleGAN3 codebases' upfirdn2d, so it drops
in. Differentiable to any order by autograd. Never imports Triton or the extensions.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

IntPair = Union[int, Sequence[int]]


def parse_scaling(scaling: IntPair, name: str) -> tuple[int, int]:
    """(sx, sy) from an int or an [x, y] pair, each >= 1."""
    if isinstance(scaling, int) and not isinstance(scaling, bool):
        scaling = (scaling, scaling)
    if not isinstance(scaling, (list, tuple)) or len(scaling) != 2 or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in scaling):
        raise ValueError(f"upfirdn2d: {name} must be an int or a pair of ints [x, y], got {scaling!r}")
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1, got {list(scaling)}")
    return sx, sy


def parse_padding(padding: IntPair) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, an [x, y] pair or an [x0, x1, y0, y1] quadruple."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding)
    if not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4) or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in padding):
        raise ValueError(f"upfirdn2d: padding must be an int, [x, y] or [x0, x1, y0, y1] ints, got {padding!r}")
    if len(padding) == 2:
        px, py = padding
        padding = (px, px, py, py)
    return tuple(padding)


def filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(fw, fh) of a filter: [fh, fw], [taps] (separable: taps x taps) or None (1 x 1)."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        got = f"shape {list(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"upfirdn2d: f must be None, a [taps] or a [fh, fw] tensor, got {got}")
    fw, fh = f.shape[-1], f.shape[0]
    if fw < 1 or fh < 1:
        raise ValueError(f"upfirdn2d: f must have at least one tap, got shape {list(f.shape)}")
    return fw, fh


def output_size(in_h: int, in_w: int, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
                padding: IntPair = 0) -> tuple[int, int]:
    """(out_h, out_w) of upfirdn2d for an [in_h, in_w] input."""
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    return ((in_h * upy + py0 + py1 - fh + downy) // downy, (in_w * upx + px0 + px1 - fw + downx) // downx)


def setup_filter(f, normalize: bool = True, flip_filter: bool = False, gain: float = 1,
                 separable: Optional[bool] = None, device=None) -> torch.Tensor:
    """A float32 FIR filter for upfirdn2d from f: a tensor or nested list of shape [fh, fw] or
    [taps], a number (a 1-tap filter) or None (the identity, [1]).

    normalize: divide by the sum so a constant signal keeps its magnitude. gain: overall scale (a
    2-D filter times gain, a separable one times sqrt(gain), so gain >= 0 there). separable:
    return [taps] (True) or [taps, taps] (False, the outer product); None picks separable for 1-D
    filters of 8 taps or more, as the StyleGAN2 codebases do.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: f must be a number, [taps] or [fh, fw], got shape {list(f.shape)}")
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("setup_filter: normalize=True needs a filter whose taps do not sum to 0")
        f = f / total
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim == 2 and separable:
        raise ValueError("setup_filter: a 2-D filter cannot be made separable")
    if f.ndim == 1 and gain < 0:
        raise ValueError(f"setup_filter: a separable filter takes sqrt(gain) on each axis, so gain must be >= 0, "
                         f"got {gain} (pass separable=False, or the gain to upfirdn2d)")
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def resolve_args(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair, down: IntPair,
                 padding: IntPair) -> tuple[int, int, int, int, int, int, int, int, int, int]:
    """Validate upfirdn2d's arguments; return (upx, upy, downx, downy, px0, px1, py0, py1, out_h, out_w)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"upfirdn2d: x must be [N, C, H, W] (floating point), got "
                         f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    filter_size(f)
    if f is not None and f.device != x.device:
        raise ValueError(f"upfirdn2d: f must be on x's device {x.device}, got {f.device}")
    out_h, out_w = output_size(x.shape[2], x.shape[3], f, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d: the output would be empty ({out_h} x {out_w}) for x {list(x.shape)}, "
                         f"f {list(f.shape) if f is not None else None}, up {[upx, upy]}, down {[downx, downy]}, "
                         f"padding {[px0, px1, py0, py1]}")
    return upx, upy, downx, downy, px0, px1, py0, py1, out_h, out_w


def _pad_crop(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    """Pad with zeros, then crop (negative padding). Padding first keeps a crop wider than the
    image well defined: it cuts into the zeros padded on the other side."""
    if px0 > 0 or px1 > 0 or py0 > 0 or py1 > 0:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if px0 < 0 or px1 < 0 or py0 < 0 or py1 < 0:
        x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    return x


def _depthwise(k: torch.Tensor, c: int, axis: Optional[str]) -> torch.Tensor:
    """The [C, 1, kh, kw] weight of a depthwise (groups = C) convolution with kernel k for every
    channel: k [kh, kw] (axis None), or a [taps] kernel along 'x' or 'y'. Contiguous, because
    oneDNN's depthwise kernels want a dense weight (an expanded one costs ~5x)."""
    shape = {None: k.shape, "x": (1, k.shape[0]), "y": (k.shape[0], 1)}[axis]
    return k.reshape(1, 1, *shape).repeat(c, 1, 1, 1)


def upfirdn2d_ref(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
                  padding: IntPair = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Reference upfirdn2d (see the module docstring). x: [N, C, H, W]; returns [N, C, out_h, out_w].

    Written the way plain PyTorch runs it fastest (bench/reference_formulations.py): the filter
    is a depthwise convolution (groups = C), separable filters as two 1-D ones; decimation is the
    convolution's stride; upsampling is a depthwise transposed convolution with stride up, which
    is the full convolution of the zero-inserted image without its zeros. The definition above,
    step by step (tests/ops/test_upfirdn2d.py::upfirdn2d_by_definition), computes the same to
    float64 rounding.
    """
    upx, upy, downx, downy, px0, px1, py0, py1, out_h, out_w = resolve_args(x, f, up, down, padding)
    c = x.shape[1]
    if x.numel() == 0:
        # nothing to filter (and torch's grouped convolutions refuse groups = C = 0); the sum
        # keeps the result in x's graph, as every other call's
        return x.new_zeros(x.shape[0], c, out_h, out_w) + x.sum() * 0
    if f is None or f.numel() == 1:
        if upx > 1 or upy > 1:            # zero insertion: each pixel followed by up - 1 zeros
            n, _, h, w = x.shape
            x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, upx - 1, 0, 0, 0, upy - 1]).reshape(n, c, h * upy, w * upx)
        x = _pad_crop(x, px0, px1, py0, py1)
        scale = gain if f is None else f.reshape([]).to(x.dtype) ** (3 - f.ndim) * gain  # separable: both axes
        return (x * scale)[:, :, ::downy, ::downx]
    if f.ndim == 1 and gain < 0:
        # a separable filter takes sqrt(gain) on each axis: a negative gain's sign goes on the result
        return -upfirdn2d_ref(x, f, up, down, padding, flip_filter, -gain)
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    fh, fw = f.shape[0], f.shape[-1]
    if upx > 1 or upy > 1:
        # conv_transpose2d(x, k, stride=up)[m] = sum_i x[i] k[m - up*i]: the true convolution of
        # the zero-inserted image with k, in full (length (in - 1) * up + taps). Taking k = f
        # (f flipped when flip_filter) and shifting by taps - 1 gives steps 1-3.
        k = f.flip(list(range(f.ndim))) if flip_filter else f
        if f.ndim == 1:
            x = F.conv_transpose2d(x, _depthwise(k, c, "x"), stride=(1, upx), groups=c)
            x = F.conv_transpose2d(x, _depthwise(k, c, "y"), stride=(upy, 1), groups=c)
        else:
            x = F.conv_transpose2d(x, _depthwise(k, c, None), stride=(upy, upx), groups=c)
        x = _pad_crop(x, px0 - fw + 1, px1 + upx - fw, py0 - fh + 1, py1 + upy - fh)
        return x[:, :, ::downy, ::downx]
    # conv2d correlates, so flip for a true convolution; symmetric padding goes to the convolution
    k = f if flip_filter else f.flip(list(range(f.ndim)))
    symmetric = px0 == px1 >= 0 and py0 == py1 >= 0
    if not symmetric:
        x = _pad_crop(x, px0, px1, py0, py1)
    pad_y, pad_x = (py0, px0) if symmetric else (0, 0)
    if f.ndim == 1:
        x = F.conv2d(x, _depthwise(k, c, "x"), stride=(1, downx), padding=(0, pad_x), groups=c)
        return F.conv2d(x, _depthwise(k, c, "y"), stride=(downy, 1), padding=(pad_y, 0), groups=c)
    return F.conv2d(x, _depthwise(k, c, None), stride=(downy, downx), padding=(pad_y, pad_x), groups=c)


def run(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
        px0: int, px1: int, py0: int, py1: int, flip_filter: bool, gain: float) -> torch.Tensor:
    """The kernel contract every backend implements (cpu.py, cuda.py, triton.py: same signature).

    x: [N, C, H, W] contiguous (NCHW), fp16/bf16/fp32 (fp64 on cpu); f: [fh, fw] contiguous
    float32 (float64 when x is) on x's device, a 2-D filter (separable ones arrive as the outer
    product); up/down >= 1; paddings any ints (negative crops). Returns a new contiguous
    [N, C, out_h, out_w] tensor in x's dtype, every element written, accumulated in fp32 (fp64):

      out[n, c, oy, ox] = gain * sum_{fy, fx} k[fy, fx] * xu[n, c, oy*downy + fy - py0, ox*downx + fx - px0]
      xu[.., y, x] = x[.., y / upy, x / upx] when upy | y and upx | x and inside the image, else 0
      k = f flipped on both axes (a true convolution), or f itself when flip_filter

    The output is never empty (the caller checks). Gradients are not the kernel's business: the
    gradient of upfirdn2d is again an upfirdn2d (see ganfast.ops.upfirdn2d.gradient_args).
    """
    return upfirdn2d_ref(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain)
