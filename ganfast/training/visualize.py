"""Pictures of a run: image grids (samples, interpolations) and loss / metric curves."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["image_grid", "save_image_grid", "save_curves", "read_jsonl"]

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
