"""Training steps of the image-to-image families: pix2pix (paired), CycleGAN and UNIT (unpaired),
SRGAN (super-resolution). `Img2ImgTrainer` is a `Trainer` (same checkpoints, AMP, gradient
accumulation, multi-process all-reduce, non-finite checks, EMA, logs) whose two phases compute
these losses instead of the noise-to-image ones.

Data: the reals of a step are the dataset's items, x = cat([A, B]) on channels for the paired and
unpaired tasks ([channels_A + channels_B, R, R]; ganfast.data.img2img), or the high-resolution
image for SR (its low-resolution input is made in the step by bicubic downsampling). G says its
task in G.img2img ('paired', 'unpaired', 'unit', 'sr'; see ganfast.models.pix2pix, cyclegan,
unit, srgan).

One step, per task (as the reference implementations order them):
  paired    D phase: fake = G(x) (kept with its graph); D's loss on (x, y) vs (x, fake), halved.
            G phase: adversarial loss of D(x, fake) + l1_weight * |fake - y| (the same fake).
  unpaired  G phase: fake_B = G_AB(A), fake_A = G_BA(B), the cycles G_BA(fake_B) ~ A and
            G_AB(fake_A) ~ B (cycle_weight), identity G_AB(B) ~ B and G_BA(A) ~ A (identity_weight
            * cycle_weight), and the adversarial losses of D_B(fake_B), D_A(fake_A).
            D phase: D_A and D_B on their reals vs those fakes through a history of pool_size
            generated images each (ExperienceReplay.query), each loss halved, one optimizer step.
  unit      D phase: translations A->B, B->A from the noisy shared codes (no gradient to G);
            D_A, D_B losses. G phase: reconstructions within each domain (recon_weight), the KL
            term mean(h^2) of each code (kl_weight), cycle reconstructions A->B->A and B->A->B
            (cycle_weight) with the KL of the re-encoded codes (kl_weight), adversarial losses.
  sr        D phase: sr = G(bicubic_downsample(hr)) (kept with its graph); D on hr vs sr.
            G phase: content loss (content_loss: pixel MSE, the classifier's features, or a user
            VGG) + adv_weight * adversarial loss of D(sr) (the same sr).
The adversarial losses follow the references' scaling: G's lsgan loss is mean((D - 1)^2), its
sigmoid loss BCE against 1; D's loss is the mean of the real and fake terms for pix2pix and
CycleGAN (their 0.5), their sum for UNIT and SRGAN. Patch discriminators' logits are averaged over
every patch. lr_decay (pix2pix / CycleGAN's second half) sets both learning rates on the host from
the image count before each step.

Not captured in CUDA graphs (cuda_graphs is refused): the paired and SR steps keep G's graph from
one phase to the next, and the history pool decides on the host.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.data import ImageFolder
from ganfast.data.img2img import bicubic_downsample, bicubic_upsample, open_img2img_data
from ganfast.training.ema import unwrap_model
from ganfast.training.loop import Trainer, TrainingConfig
from ganfast.training.tricks import ExperienceReplay
from ganfast.training.visualize import image_grid, save_grid_png

__all__ = ["Img2ImgTrainer", "IMG2IMG_TASKS", "IMG2IMG_LOSSES", "adversarial_d_loss", "adversarial_g_loss",
           "img2img_task"]

IMG2IMG_TASKS = ("paired", "unpaired", "unit", "sr")
IMG2IMG_LOSSES = ("nonsaturating", "lsgan")        # the references' GAN losses (vanilla BCE, least squares)


def img2img_task(G: nn.Module) -> Optional[str]:
    """G's image-to-image task ('paired', 'unpaired', 'unit', 'sr'), or None for a noise-to-image G."""
    task = getattr(unwrap_model(G), "img2img", None)
    return task if task in IMG2IMG_TASKS else None


def adversarial_d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss, the sum of its real and fake terms, each averaged over every logit (patches too):
    lsgan mean((r - 1)^2) + mean(f^2); nonsaturating BCE(r, 1) + BCE(f, 0)."""
    r, f = real_logits.float(), fake_logits.float()
    if kind == "lsgan":
        return (r - 1).square().mean() + f.square().mean()
    return F.softplus(-r).mean() + F.softplus(f).mean()


def adversarial_g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss on D's logits of its images: lsgan mean((f - 1)^2); nonsaturating BCE(f, 1)."""
    f = fake_logits.float()
    if kind == "lsgan":
        return (f - 1).square().mean()
    return F.softplus(-f).mean()


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).abs().mean()


class Img2ImgTrainer(Trainer):
    """Trains an image-to-image G and D (see the module docstring) with a TrainingConfig; the
    arguments are Trainer's. data: an image-to-image dataset (ganfast.data.img2img) for the
    paired and unpaired tasks, a plain image dataset for SR. G.img2img names the task."""

    def __init__(self, G: nn.Module, D: nn.Module, data, config: Optional[TrainingConfig] = None, **kwargs):
        task = img2img_task(G)
        if task is None:
            raise ValueError(f"Img2ImgTrainer: G must be an image-to-image generator (G.img2img one of "
                             f"{IMG2IMG_TASKS}); {type(G).__name__} has img2img={getattr(G, 'img2img', None)!r}")
        cfg = config if config is not None else TrainingConfig(loss="lsgan" if task in ("unpaired", "unit")
                                                               else "nonsaturating")
        if isinstance(cfg, TrainingConfig):
            self._check_config(task, cfg)
        self.task = task
        g = unwrap_model(G)
        if task in ("paired", "unpaired", "unit"):
            self.channels_A = int(getattr(g, "in_channels", getattr(g, "channels_A", 0)))
            self.channels_B = int(getattr(g, "out_channels", getattr(g, "channels_B", 0)))
            data_channels = getattr(data, "channels_A", None), getattr(data, "channels_B", None)
            if data_channels != (None, None) and data_channels != (self.channels_A, self.channels_B):
                raise ValueError(f"Img2ImgTrainer: the data has {data_channels[0]} + {data_channels[1]} channels "
                                 f"(A + B), G expects {self.channels_A} + {self.channels_B}")
        self._fakes: list = []           # what the first phase of a step made, for the second (per micro-batch)
        super().__init__(G, D, data, cfg, **kwargs)
        cfg = self.config
        self.pools = None
        if task == "unpaired" and cfg.pool_size > 0:
            self.pools = {"A": ExperienceReplay(cfg.pool_size), "B": ExperienceReplay(cfg.pool_size)}
        self.content = None
        if task == "sr":
            from ganfast.models.srgan import ContentLoss
            self.content = ContentLoss(cfg.content_loss, cfg.content_weights).to(self.device)
        self._base_lrs = [[g["lr"] for g in opt.param_groups] for opt in (self.opt_G, self.opt_D)]

    @staticmethod
    def _check_config(task: str, cfg: TrainingConfig) -> None:
        if cfg.loss not in IMG2IMG_LOSSES:
            raise ValueError(f"Img2ImgTrainer: loss must be one of {IMG2IMG_LOSSES} for the image-to-image "
                             f"families, got {cfg.loss!r}")
        unsupported = [name for name, on in (("cuda_graphs", cfg.cuda_graphs), ("growth", cfg.growth is not None),
                                             ("aug", cfg.aug != "none"), ("r1_gamma", cfg.r1_gamma > 0),
                                             ("pl_weight", cfg.pl_weight > 0), ("n_critic", cfg.n_critic != 1),
                                             ("replay_fraction", cfg.replay_fraction > 0),
                                             ("label_smoothing", cfg.label_smoothing > 0),
                                             ("gp_weight", cfg.gp_weight is not None), ("clip", cfg.clip is not None),
                                             ("ortho_beta", cfg.ortho_beta > 0), ("drift_weight", cfg.drift_weight > 0))
                       if on]
        if unsupported:
            raise ValueError(f"Img2ImgTrainer: {', '.join(unsupported)} do(es) not apply to the image-to-image "
                             f"steps (task {task!r}); leave them at their defaults")

    # ---- inputs ----

    def _next_latents(self) -> None:
        """No latents: the noise of these generators is dropout (pix2pix) or UNIT's code noise, drawn
        from the global RNG inside the phase."""

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :self.channels_A], x[:, self.channels_A:]

    def _lowres(self, hr: torch.Tensor) -> torch.Tensor:
        return bicubic_downsample(hr, unwrap_model(self.G).scale)

    # ---- the phases ----

    def _d_main(self) -> dict:
        cfg, G, D, kind = self.config, self.G_main, self.D_main, self.config.loss
        reals = self._inputs["real"]
        if self.task == "unpaired":           # G ran first: its fakes wait in self._fakes
            fakes, self._fakes = self._fakes, []
        else:
            self._fakes = []

        def micro(i):
            x = self._micro(reals, i)
            if self.task == "paired":
                A, B = self._split(x)
                fake = G(A)
                self._fakes.append(fake)                     # the G phase reuses it, with its graph
                real_logits, fake_logits = D(A, B), D(A, fake.detach())
                loss = 0.5 * adversarial_d_loss(kind, real_logits, fake_logits)
            elif self.task == "sr":
                sr = G(self._lowres(x))
                self._fakes.append(sr)
                real_logits, fake_logits = D(x), D(sr.detach())
                loss = adversarial_d_loss(kind, real_logits, fake_logits)
            else:
                A, B = self._split(x)
                if self.task == "unpaired":
                    fake_B, fake_A = fakes[i]
                    if self.pools is not None:
                        fake_B, fake_A = self.pools["B"].query(fake_B), self.pools["A"].query(fake_A)
                    half = 0.5
                else:
                    with torch.no_grad():
                        g = G
                        h_A, h_B = g.encode(A, "A"), g.encode(B, "B")
                        fake_B = g.decode(h_A + torch.randn_like(h_A), "B")
                        fake_A = g.decode(h_B + torch.randn_like(h_B), "A")
                    half = 1.0
                real_A, fake_A_logits = D(A, "A"), D(fake_A.detach(), "A")
                real_B, fake_B_logits = D(B, "B"), D(fake_B.detach(), "B")
                loss = half * (adversarial_d_loss(kind, real_A, fake_A_logits)
                               + adversarial_d_loss(kind, real_B, fake_B_logits))
                real_logits = torch.cat([real_A.flatten(), real_B.flatten()])
                fake_logits = torch.cat([fake_A_logits.flatten(), fake_B_logits.flatten()])
            return loss, {"real_score": real_logits.float().mean(), "fake_score": fake_logits.float().mean()}

        return self._run_phase("loss_D", self.D, self.opt_D, self.scaler_D, micro)

    def _g_main(self) -> dict:
        cfg, G, D, kind = self.config, self.G_main, self.D_main, self.config.loss
        reals = self._inputs["real"]
        made, self._fakes = self._fakes, []

        def micro(i):
            x = self._micro(reals, i)
            stats = {}
            if self.task == "paired":
                A, B = self._split(x)
                fake = made[i]
                stats["loss_G_adv"] = adversarial_g_loss(kind, D(A, fake))
                stats["l1"] = _l1(fake, B)
                return stats["loss_G_adv"] + cfg.l1_weight * stats["l1"], stats
            if self.task == "sr":
                sr = made[i]
                stats["content"] = self.content(sr, x)
                stats["loss_G_adv"] = adversarial_g_loss(kind, D(sr))
                return stats["content"] + cfg.adv_weight * stats["loss_G_adv"], stats
            A, B = self._split(x)
            if self.task == "unpaired":
                fake_B, fake_A = G(A, "AB"), G(B, "BA")
                rec_A, rec_B = G(fake_B, "BA"), G(fake_A, "AB")
                self._fakes.append((fake_B.detach(), fake_A.detach()))      # for the D phase
                stats["loss_G_adv"] = adversarial_g_loss(kind, D(fake_B, "B")) + adversarial_g_loss(kind, D(fake_A, "A"))
                stats["cycle"] = _l1(rec_A, A) + _l1(rec_B, B)
                loss = stats["loss_G_adv"] + cfg.cycle_weight * stats["cycle"]
                if cfg.identity_weight > 0 and self.channels_A == self.channels_B:
                    stats["identity"] = _l1(G(B, "AB"), B) + _l1(G(A, "BA"), A)
                    loss = loss + cfg.identity_weight * cfg.cycle_weight * stats["identity"]
                return loss, stats
            # unit
            g = G
            h_A, h_B = g.encode(A, "A"), g.encode(B, "B")
            z_A, z_B = h_A + torch.randn_like(h_A), h_B + torch.randn_like(h_B)
            rec_A, rec_B = g.decode(z_A, "A"), g.decode(z_B, "B")
            fake_B, fake_A = g.decode(z_A, "B"), g.decode(z_B, "A")
            h_BA, h_AB = g.encode(fake_A, "A"), g.encode(fake_B, "B")      # the codes of the translations
            cyc_A = g.decode(h_AB + torch.randn_like(h_AB), "A")
            cyc_B = g.decode(h_BA + torch.randn_like(h_BA), "B")
            stats["recon"] = _l1(rec_A, A) + _l1(rec_B, B)
            stats["kl"] = h_A.float().square().mean() + h_B.float().square().mean()
            stats["cycle"] = _l1(cyc_A, A) + _l1(cyc_B, B)
            stats["cycle_kl"] = h_AB.float().square().mean() + h_BA.float().square().mean()
            stats["loss_G_adv"] = adversarial_g_loss(kind, D(fake_B, "B")) + adversarial_g_loss(kind, D(fake_A, "A"))
            loss = (stats["loss_G_adv"] + cfg.recon_weight * stats["recon"] + cfg.kl_weight * stats["kl"]
                    + cfg.cycle_weight * stats["cycle"] + cfg.kl_weight * stats["cycle_kl"])
            return loss, stats

        try:
            return self._run_g_phase(micro)
        finally:
            if self.task != "unpaired":
                self._fakes = []

    def _d_reg(self) -> dict:
        raise RuntimeError("Img2ImgTrainer: no lazy regularization phase")

    def _g_reg(self) -> dict:
        raise RuntimeError("Img2ImgTrainer: no lazy regularization phase")

    # ---- one step ----

    def _set_lr(self) -> None:
        decay = self.config.lr_decay
        if decay is None:
            return
        start, end = decay
        kimg = self.progress.cur_nimg / 1000
        factor = min(max((end - kimg) / (end - start), 0.0), 1.0)
        for opt, bases in zip((self.opt_G, self.opt_D), self._base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def step(self):
        """One step: the two phases in the task's order (see the module docstring), then the EMA."""
        cfg, p = self.config, self.progress
        self._set_lr()
        self._step_bad.zero_()
        parts: list = []

        def run(phase: str):
            names, values = self._timed(phase, self._phases[phase])
            if values is not None:
                parts.append((names, values))

        self._next_real()
        try:
            for phase in (("G main", "D main") if self.task == "unpaired" else ("D main", "G main")):
                run(phase)
        finally:
            self._fakes = []              # a failed phase must not leave graphs behind
        p.d_steps += 1
        p.cur_nimg += self.batch
        host = {}
        if self.ema is not None:
            host["ema_beta"] = self.ema.beta(p.cur_nimg, self.batch)
            self._inputs.fill_scalar("ema_beta", host["ema_beta"], torch.float64, self.device)
            run("EMA")
        if cfg.lr_decay is not None:
            host["lr_factor"] = self.opt_G.param_groups[0]["lr"] / self._base_lrs[0][0]
        p.step += 1
        return self._finish_step(*self._gather_stats(parts), host)

    def checkpoint_objects(self) -> dict[str, Any]:
        objects = super().checkpoint_objects()
        if self.pools is not None:
            objects["pool_A"], objects["pool_B"] = self.pools["A"], self.pools["B"]
        return objects

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "AB", use_ema: bool = True) -> torch.Tensor:
        """G's output for inputs x [N, C, H, W] (A images; B for direction 'BA'; LR images for SR),
        in eval mode, on the CPU."""
        G = self.ema.module if (use_ema and self.ema is not None) else unwrap_model(self.G)
        was_training = G.training
        G.eval()
        try:
            x = x.to(self.device, self.dtype)
            out = G(x, direction) if self.task in ("unpaired", "unit") else G(x)
        finally:
            G.train(was_training)
        return out.float().cpu()


# ---- what `ganfast train` / `ganfast generate` need of these families ----

# preset family -> the task of its data
IMG2IMG_FAMILIES = {"pix2pix": "paired", "cyclegan": "unpaired", "unit": "unpaired", "srgan": "sr"}
# preset family -> the built-in data `ganfast train` uses without --data
DEFAULT_IMG2IMG_DATA = {"pix2pix": "edges2fmnist", "cyclegan": "fmnist:sneaker-ankleboot",
                        "unit": "fmnist:sneaker-ankleboot", "srgan": "fashion-mnist"}


def generator_channels(G: nn.Module) -> tuple[int, int]:
    """(input channels, output channels) of an image-to-image G (A and B for the unpaired tasks)."""
    task = img2img_task(G)
    if task == "unpaired" or task == "unit":
        return int(G.channels_A), int(G.channels_B)
    if task == "sr":
        return int(G.in_channels), int(G.img_channels)
    return int(G.in_channels), int(G.out_channels)


def open_run_data(family: str, G: nn.Module, data: Optional[str], split: str = "train", xflip: bool = False):
    """The dataset of a run of an image-to-image preset (family one of IMG2IMG_FAMILIES) with
    generator G: `data` (None: DEFAULT_IMG2IMG_DATA[family]) at G's resolution and channels."""
    task = IMG2IMG_FAMILIES[family]
    c_in, c_out = generator_channels(G)
    spec = data or DEFAULT_IMG2IMG_DATA[family]
    channels = c_out if c_in == c_out else None
    return open_img2img_data(spec, task, G.img_resolution, channels=channels, split=split, xflip=xflip)


def _as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 and channels == 3 else images


def _test_items(dataset, n: int) -> torch.Tensor:
    """The first n items of a held-out dataset, [n, C, R, R]."""
    n = min(n, len(dataset))
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(list(range(n)))[0]
    return torch.stack([dataset[i][0] for i in range(n)])


@torch.no_grad()
def translation_images(G: nn.Module, items: torch.Tensor, device=None, batch: int = 64) -> tuple[torch.Tensor, int]:
    """The cells of a translation grid for held-out items [n, C, R, R] (dataset items: A and B on
    channels, or HR images for SR), and the cells per item: paired A | G(A) | B (3); unpaired and
    UNIT A | A->B | A->B->A | B | B->A | B->A->B (6); SR the input (nearest-upscaled) | G(input)
    | bicubic | HR (4). G runs in eval mode; images in [-1, 1], all with the same channel count."""
    task = img2img_task(G)
    device = device or next(G.parameters()).device
    c_in, c_out = generator_channels(G)
    was_training = G.training
    G.eval()
    cells = []
    try:
        for i in range(0, items.shape[0], batch):
            x = items[i:i + batch].to(device, next(G.parameters()).dtype)
            if task == "sr":
                lr = bicubic_downsample(x, G.scale)
                row = [F.interpolate(lr, scale_factor=G.scale, mode="nearest"), G(lr),
                       bicubic_upsample(lr, G.scale), x]
            elif task == "paired":
                A, B = x[:, :c_in], x[:, c_in:]
                row = [A, G(A), B]
            else:
                A, B = x[:, :c_in], x[:, c_in:]
                AB, BA = G(A, "AB"), G(B, "BA")
                row = [A, AB, G(AB, "BA"), B, BA, G(BA, "AB")]
            width = 3 if any(r.shape[1] == 3 for r in row) else 1      # gray cells beside color ones: as RGB
            cells.append(torch.stack([_as_channels(r.float().clamp(-1, 1), width).cpu() for r in row], 1))
    finally:
        G.train(was_training)
    out = torch.cat(cells)                   # [n, cells, C, R, R]
    return out.flatten(0, 1), out.shape[1]


def translation_grid(G: nn.Module, dataset, n: int, device=None):
    """A uint8 [H, W, C] grid of G's translations of the first n held-out items of dataset (see
    translation_images), about sqrt(n) items per row."""
    images, per_item = translation_images(G, _test_items(dataset, n), device=device)
    items = images.shape[0] // per_item
    per_row = max(1, math.ceil(math.sqrt(items * per_item) / per_item))
    return image_grid(images, ncols=per_row * per_item)


@torch.no_grad()
def translate_folder(G: nn.Module, input_dir, out_dir, direction: str = "AB", device=None, batch: int = 32,
                     grid_items: int = 32) -> dict:
    """`ganfast generate --input DIR --out DIR`: G's output for every image under input_dir, each
    written as out_dir/<its relative path, .png>, plus out_dir/side_by_side.png showing the first
    grid_items side by side (input | output). Inputs are center-cropped and resized to G's input
    size (SR: the low resolution) and converted to its input channels (ganfast.data.ImageFolder:
    unreadable or oversized files are skipped with one warning). direction 'AB' or 'BA' for the
    unpaired models (A->B: the first domain to the second). Returns {'written': n, 'grid': path}."""
    task = img2img_task(G)
    if task is None:
        raise ValueError("--input: this checkpoint's generator maps noise to images; --input needs an "
                         "image-to-image model (pix2pix, cyclegan, unit or srgan presets)")
    if direction not in ("AB", "BA"):
        raise ValueError(f"--direction must be 'AB' or 'BA', got {direction!r}")
    c_in, c_out = generator_channels(G)
    if task in ("unpaired", "unit") and direction == "BA":
        c_in, c_out = c_out, c_in
    size = G.img_resolution // G.scale if task == "sr" else G.img_resolution
    folder = ImageFolder(input_dir, resolution=size, channels=c_in, labels=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or next(G.parameters()).device
    dtype = next(G.parameters()).dtype
    was_training = G.training
    G.eval()
    shown, written = [], 0
    try:
        for start in range(0, len(folder), batch):
            indices = range(start, min(start + batch, len(folder)))
            x = torch.stack([folder[i][0] for i in indices]).to(device, dtype)
            y = (G(x, direction) if task in ("unpaired", "unit") else G(x)).float().clamp(-1, 1).cpu()
            for i, out in zip(indices, y):
                path = (out_dir / folder.names[i]).with_suffix(".png")
                path.parent.mkdir(parents=True, exist_ok=True)
                save_grid_png(image_grid(out[None], padding=0), path)
                written += 1
            for xi, yi in zip(x.float().cpu(), y):
                if len(shown) < 2 * grid_items:
                    if task == "sr":
                        xi = F.interpolate(xi[None], scale_factor=G.scale, mode="nearest")[0]
                    width = 3 if 3 in (xi.shape[0], yi.shape[0]) else 1
                    shown += [_as_channels(xi[None], width)[0], _as_channels(yi[None], width)[0]]
    finally:
        G.train(was_training)
    items = len(shown) // 2
    per_row = max(1, math.ceil(math.sqrt(items * 2) / 2))
    grid = save_grid_png(image_grid(torch.stack(shown), ncols=2 * per_row), out_dir / "side_by_side.png", scale=2)
    return {"written": written, "grid": str(grid)}
