"""Pictures of a run: image grids (samples, interpolations) and loss / metric curves."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["image_grid", "label_rows", "save_image_grid", "save_curves", "read_jsonl"]

PathLike = Union[str, Path]


def image_grid(images: torch.Tensor, ncols: Optional[int] = None, padding: int = 1) -> np.ndarray:
    """images [N, C, H, W] in [-1, 1] (C = 1 or 3) -> uint8 [rows*(H+p)+p, cols*(W+p)+p, C] with
    `padding` black pixels between cells; ncols defaults to ceil(sqrt(N))."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"image_grid: images must be [N >= 1, 1 or 3, H, W], got {got}")
    n, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"image_grid: ncols must be an int >= 1, got {ncols!r}")
    nrows = math.ceil(n / ncols)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(c, nrows * (h + padding) + padding, ncols * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = pixels[i]
    return grid.permute(1, 2, 0).numpy()


def label_rows(grid: np.ndarray, names: Sequence[str], padding: int = 1) -> np.ndarray:
    """An `image_grid` array (uint8 [H, W, C]) with a margin on the left naming each row (names[i]
    beside row i, white on black, Pillow's built-in font), for grids of one class per row."""
    from PIL import Image, ImageDraw, ImageFont
    rows = len(names)
    if rows < 1 or (grid.shape[0] - padding) % rows:
        raise ValueError(f"label_rows: a grid of {grid.shape[0]} pixel rows cannot hold {rows} equal rows of images")
    row_h = (grid.shape[0] - padding) // rows
    size = max(6, min(11, row_h - 4))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:          # Pillow < 10.1: only the fixed bitmap font
        font = ImageFont.load_default()
    width = max(int(math.ceil(font.getlength(str(n)))) for n in names) + 4
    margin = Image.new("L", (width, grid.shape[0]), 0)
    draw = ImageDraw.Draw(margin)
    for i, name in enumerate(names):
        top, bottom = font.getbbox(str(name))[1::2]
        y = padding + i * row_h + (row_h - padding - (bottom - top)) // 2 - top
        draw.text((2, y), str(name), fill=255, font=font)
    text = np.asarray(margin, dtype=np.uint8)[:, :, None].repeat(grid.shape[2], axis=2)
    return np.concatenate([text, grid], axis=1)


def save_image_grid(images: torch.Tensor, path: PathLike, ncols: Optional[int] = None, scale: int = 1) -> Path:
    """Write `image_grid(images, ncols)` as a PNG (nearest-neighbour upscaled by `scale`)."""
    return save_grid_png(image_grid(images, ncols), path, scale)


def save_grid_png(grid: np.ndarray, path: PathLike, scale: int = 1) -> Path:
    """Write an `image_grid` array (uint8 [H, W, C]) as a PNG, nearest-neighbour upscaled by `scale`."""
    from PIL import Image
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def read_jsonl(path: PathLike) -> list[dict]:
    """The JSON objects of a JSON Lines file; a torn last line (a killed writer) is ignored."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def save_curves(log_rows: Sequence[dict], metric_rows: Sequence[dict], path: PathLike) -> Optional[Path]:
    """Plot the losses of the tick log and the metrics against kimg into one PNG. Returns None
    (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    loss_keys = sorted({k for r in log_rows for k in r if k.startswith("loss_")})
    metric_keys = sorted({k for r in metric_rows for k in r if k not in ("kimg", "step", "time")
                          and isinstance(r[k], (int, float))})
    panels = [("losses", loss_keys, log_rows)] + [(k, [k], metric_rows) for k in metric_keys
                                                  if k in ("fid", "kid", "swd_avg", "precision", "recall")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, keys, rows) in zip(axes[0], panels):
        for k in keys:
            xs = [r["kimg"] for r in rows if k in r]
            ys = [r[k] for r in rows if k in r]
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("kimg")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
