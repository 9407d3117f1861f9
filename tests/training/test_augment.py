"""Discriminator augmentation (ganfast.training.augment): each ADA transform against an independent
expectation (torch.flip / rot90 / reflect-padded shifts, the colour formulas on constant images, the
wavelet round trip), p = 0 as the identity, gradients, the adaptive controller's steps, and the
Trainer wiring (every D input augmented, R1 through the pipe, p in ticks and checkpoints)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfast.data import InMemoryImages
from ganfast.models.stylegan2 import build_stylegan2
from ganfast.testing.host_sync import host_syncs
from ganfast.training.augment import (AUGMENT_PRESETS, SYM2_LOWPASS, SYM6_LOWPASS, AdaptiveP, AugmentPipe, DiffAugment,
                                      wavelet_filter_bank)
from ganfast.training.loop import Trainer, TrainingConfig


def images(n=4, c=3, h=16, w=16, dtype=torch.float64, seed=0):
    return torch.randn(n, c, h, w, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def assert_close(got, expected, atol, what):
    err = (got - expected).abs()
    if not bool(err.max() <= atol):
        idx = torch.nonzero(err > atol)[:5].tolist()
        pairs = [(i, float(got[tuple(i)]), float(expected[tuple(i)])) for i in idx]
        raise AssertionError(f"{what}: max error {float(err.max()):.3g} > {atol:g}; first (index, got, expected): {pairs}")


def draws(pipe, x, seed):
    torch.manual_seed(seed)
    return pipe(x)


# ---- p = 0 and the published constants ----

@pytest.mark.parametrize("name", list(AUGMENT_PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_the_identity_bit_for_bit(name, channels):
    x = images(c=channels, dtype=torch.float32)
    y = AugmentPipe.preset(name, p=0.0)(x)
    assert y.dtype == x.dtype and torch.equal(y, x)


def test_wavelet_constants_are_orthonormal_and_the_filter_bank_sums_to_the_identity():
    for h in (SYM6_LOWPASS, SYM2_LOWPASS):
        h = np.asarray(h)
        auto = np.correlate(h, h, mode="full")[::-1][len(h) - 1::2]      # lags 0, 2, 4, ...
        assert abs(h.sum() - math.sqrt(2)) < 1e-12 and abs(auto[0] - 1) < 1e-12 and np.abs(auto[1:]).max() < 1e-12
    bank = wavelet_filter_bank()
    assert bank.shape == (4, 43)
    impulse = np.zeros(43)
    impulse[21] = 1.0
    np.testing.assert_allclose(bank.sum(0), impulse, atol=1e-12)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-15)                # zero phase
    # band 0 passes a constant, the others remove it; the top band passes the Nyquist frequency alone
    alternating = (-1.0) ** (np.arange(43) - 21)          # the Nyquist frequency, +1 at the centre tap
    np.testing.assert_allclose(bank.sum(1), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(bank @ alternating, [0, 0, 0, 1], atol=1e-12)


# ---- pixel blitting: exact ----

def single(**kwargs):
    """A pipe with only the given transforms, always applied (p = 1)."""
    return AugmentPipe(p=1.0, **kwargs)


def test_xflip_and_rotate90_are_torch_flip_and_rot90():
    x = images(n=64)
    for pipe, options in ((single(xflip=1), [x, torch.flip(x, dims=[3])]),
                          (single(rotate90=1), [torch.rot90(x, k, dims=(2, 3)) for k in range(4)])):
        y = draws(pipe, x, 0)
        seen = set()
        for i in range(x.shape[0]):
            match = [k for k, o in enumerate(options) if torch.equal(y[i], o[i])]
            assert len(match) == 1, f"image {i} is none (or several) of the expected moves"
            seen.add(match[0])
        assert seen == set(range(len(options)))          # 64 draws reach every outcome


def reflect_shift(x, tx, ty):
    """x shifted right by tx and down by ty, the uncovered pixels mirrored (F.pad 'reflect')."""
    h, w = x.shape[-2:]
    padded = F.pad(x[None], [abs(tx), abs(tx), abs(ty), abs(ty)], mode="reflect")[0]
    return padded[..., abs(ty) - ty:abs(ty) - ty + h, abs(tx) - tx:abs(tx) - tx + w]


def test_integer_translation_is_a_reflect_padded_shift_within_xint_max():
    x = images(n=64, h=16, w=24)
    y = draws(single(xint=1, xint_max=0.125), x, 1)
    shifts = set()
    for i in range(x.shape[0]):
        match = [(tx, ty) for tx in range(-3, 4) for ty in range(-2, 3) if torch.equal(y[i], reflect_shift(x[i], tx, ty))]
        assert match, f"image {i} is no reflect-padded shift within 0.125 of the size"
        shifts.add(match[0])
    assert len(shifts) > 10


def test_blits_compose_flip_after_turn_after_shift():
    # NVIDIA's matrix order flip @ rotate90 @ translate: the image is shifted, then turned, then flipped
    x = images(n=1, h=8, w=8)
    pipe = single(xflip=1, rotate90=1, xint=1)
    for seed in range(40):
        y = draws(pipe, x, seed)
        ok = any(torch.equal(y[0], torch.flip(torch.rot90(reflect_shift(x[0], tx, ty), k, dims=(1, 2)), dims=[2])
                             if f else torch.rot90(reflect_shift(x[0], tx, ty), k, dims=(1, 2)))
                 for f in (0, 1) for k in range(4) for tx in (-1, 0, 1) for ty in (-1, 0, 1))
        assert ok, f"seed {seed}: not a composition shift -> turn -> flip"


# ---- geometric: the wavelet resampling path ----

def test_geometric_path_with_identity_matrix_reproduces_the_input():
    # sym6 up 2x, sampling at the pixels, flipped sym6 down 2x: the identity (orthonormal filter)
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 5e-5)):
        x = images(c=3, h=16, w=20, dtype=dtype)
        y = draws(single(scale=1, scale_std=0.0), x, 0)          # every image "scaled" by 2^0
        assert_close(y, x, atol, f"identity round trip {dtype}")


def smooth(n=2, c=1, size=32, seed=0):
    """A band-limited image: a few low-frequency cosines (what resampling should reproduce)."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    out = torch.zeros(n, c, size, size, dtype=torch.float64)
    for _ in range(4):
        fx, fy, phase = torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor([0.08, 0.08, 6.3])
        out += torch.cos(2 * math.pi * (fx * xs + fy * ys) + phase)
    return out / 4


def test_fractional_translation_moves_a_smooth_image_by_the_drawn_offset():
    # translation by t pixels of a sum of cosines: the same cosines with their phases moved
    x = smooth(n=1)
    pipe = single(xfrac=1, xfrac_std=0.05)
    torch.manual_seed(3)
    y = pipe(x)
    torch.manual_seed(3)                 # the same draws again: the offset t [1, 2] (fractions of the size)
    torch.rand(1, 1, dtype=torch.float64)    # _chosen
    t = torch.randn(1, 2, dtype=torch.float64) * 0.05
    tx, ty = (t[0] * 32).tolist()
    assert abs(tx) > 0.2 and abs(ty) > 0.2           # a fractional move, not a whole pixel
    size = 32
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    gen = torch.Generator().manual_seed(0)
    waves = [torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor([0.08, 0.08, 6.3]) for _ in range(4)]

    def moved(sign):
        return sum(torch.cos(2 * math.pi * (fx * (xs - sign * tx) + fy * (ys - sign * ty)) + ph)
                   for fx, fy, ph in waves) / 4

    inner = slice(6, -6)                 # away from the reflected border
    # bilinear resampling of the 2x image errs by about (pi f)^2 / 8 of the amplitude at frequency f
    assert_close(y[0, 0, inner, inner], moved(1)[inner, inner], 6e-3, "fractional translation")
    assert float((y[0, 0, inner, inner] - moved(-1)[inner, inner]).abs().max()) > 0.1     # not the other way


def test_rotation_and_scaling_keep_the_centre_and_the_mean_brightness():
    x = smooth(n=8, c=1)
    for kwargs in (dict(rotate=1), dict(scale=1), dict(aniso=1)):
        y = draws(single(**kwargs), x, 5)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert not torch.allclose(y, x, atol=1e-3)
        # a constant image stays constant (the interpolation and both filters preserve DC)
        c = torch.full((2, 3, 16, 16), 0.37, dtype=torch.float64)
        assert_close(draws(single(**kwargs), c, 6), c, 1e-9, f"constant image through {kwargs}")


# ---- colour: formulas on constant images ----

def colour_only(name, **kwargs):
    return single(**{name: 1}, **kwargs)


def test_brightness_adds_the_same_offset_to_every_channel():
    x = images(n=16)
    y = draws(colour_only("brightness"), x, 0)
    b = (y - x)[:, :, 0, 0]                                   # [n, 3]
    assert_close(y - x, b[:, :, None, None].expand_as(x), 1e-12, "one offset per image")
    assert_close(b, b[:, :1].expand_as(b), 1e-12, "same for r, g, b")
    assert 0.05 < float(b[:, 0].std()) < 0.6                  # std 0.2


def test_contrast_scales_every_value_about_zero():
    x = images(n=16)
    y = draws(colour_only("contrast"), x, 0)
    c = (y / x)[:, 0, 0, 0]
    assert_close(y, x * c[:, None, None, None], 1e-12, "contrast")
    assert (c > 0).all() and float(torch.log2(c).std()) > 0.1


def test_lumaflip_reflects_about_the_plane_orthogonal_to_grey():
    x = images(n=32)
    y = draws(colour_only("lumaflip"), x, 0)
    grey = x.mean(dim=1, keepdim=True)
    flipped = x - 2 * grey                         # (I - 2 v v^T) x with v = (1, 1, 1) / sqrt 3
    per_image = [torch.equal(y[i], x[i]) or bool((y[i] - flipped[i]).abs().max() < 1e-12) for i in range(32)]
    assert all(per_image) and any(not torch.equal(y[i], x[i]) for i in range(32))


def test_saturation_and_hue_keep_grey_and_act_on_colour():
    grey = torch.full((8, 3, 4, 4), 0.3, dtype=torch.float64)
    for name in ("saturation", "hue"):
        assert_close(draws(colour_only(name), grey, 0), grey, 1e-12, f"{name} of a grey image")
    x = images(n=8)
    y = draws(colour_only("saturation"), x, 1)
    mean = x.mean(1, keepdim=True)
    s = ((y - mean) / (x - mean))[:, 0, 0, 0]
    assert_close(y, mean + (x - mean) * s[:, None, None, None], 1e-10, "saturation scales the chroma")
    y = draws(colour_only("hue"), x, 2)
    # a rotation about the grey axis keeps the grey part and the chroma's length
    assert_close(y.mean(1), x.mean(1), 1e-12, "hue keeps luma")
    assert_close((y - y.mean(1, keepdim=True)).norm(dim=1), (x - mean).norm(dim=1), 1e-12, "hue keeps |chroma|")


def test_single_channel_images_get_brightness_contrast_and_sign_flip_only():
    x = images(n=64, c=1)
    y = draws(AugmentPipe.preset("color", p=1.0), x, 0)
    # every image is a * x + b (NVIDIA's luminance rule: hue and saturation do nothing here)
    a = (y[:, :, 0, 1] - y[:, :, 0, 0]) / (x[:, :, 0, 1] - x[:, :, 0, 0])
    b = y[:, :, 0, 0] - a * x[:, :, 0, 0]
    assert_close(y, a[:, :, None, None] * x + b[:, :, None, None], 1e-10, "affine per image")
    assert (a < 0).any() and (a > 0).any()                 # lumaflip: x -> -x


def test_colour_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="1-channel .* or 3-channel"):
        AugmentPipe(brightness=1)(images(c=2))
    with pytest.raises(ValueError, match="xflip"):
        AugmentPipe(xflip=-1)
    with pytest.raises(ValueError, match="unknown pipeline 'bgx'"):
        AugmentPipe.preset("bgx")


# ---- filter, noise, cutout ----

def test_imgfilter_with_unit_gains_is_the_identity_and_keeps_a_constant():
    x = images(n=2, h=12, w=12)                     # smaller than the 43-tap filter: reflect by index
    pipe = single(imgfilter=1, imgfilter_std=0.0)   # gains 2^0 = 1 in every band: the identity bank
    assert_close(draws(pipe, x, 0), x, 1e-10, "unit gains")     # the bank sums to the impulse to ~1e-12
    c = torch.full((4, 1, 32, 32), -0.5, dtype=torch.float64)
    y = draws(single(imgfilter=1), c, 1)
    # a constant lies in band 0 alone; its gain is normalized by the expected power
    assert_close(y, y[:, :, :1, :1].expand_as(y), 1e-10, "still constant")


def test_noise_and_cutout():
    x = torch.ones(64, 1, 16, 16, dtype=torch.float64)
    y = draws(single(noise=1), x, 0)
    std = (y - x).flatten(1).std(1)
    assert float(std.max()) < 0.6 and float(std.mean()) > 0.02        # |N(0, 0.1)| per image
    y = draws(single(cutout=1), x, 1)
    zeros = (y == 0).flatten(1).sum(1)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0} and int(zeros.max()) == 64     # an 8x8 square (size 0.5)
    assert int(zeros.min()) > 0                      # clipped at the edges but never empty


# ---- gradients ----

def test_the_pipe_is_differentiable_twice_in_the_images():
    x = images(n=2, c=3, h=6, w=6).requires_grad_(True)
    pipe = AugmentPipe.preset("bgcfnc", p=0.7)     # every group; p < 1, so some images skip some
    fn = lambda t: draws(pipe, t, 11)         # noqa: E731 (the same draws in every call)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-7)
    assert torch.autograd.gradgradcheck(fn, (x,), atol=1e-6, fast_mode=True)   # R1 differentiates through it


# ---- the adaptive controller ----

def test_controller_moves_p_by_the_documented_step_and_clamps_at_zero():
    pipe = AugmentPipe.preset("bgc")
    ada = AdaptiveP(pipe, target=0.6, interval=4, kimg=500)
    step = 32 * 4 / 500_000
    for _ in range(4):                          # r_t 0.9 > 0.6: up once, after 4 D steps
        assert float(pipe.p) == 0.0
        ada.observe(torch.tensor(0.9), 1, 32)
    assert float(pipe.p) == pytest.approx(step)
    for _ in range(8):                          # mean 0.5 < 0.6 over each interval: down twice, clamped
        ada.observe(torch.tensor(0.2 if _ % 2 else 0.8), 1, 32)
    assert float(pipe.p) == 0.0
    ada.observe(torch.tensor(float("nan")), 2, 64)     # a skipped phase counts as no observation
    ada.observe(torch.tensor(0.61), 2, 64)
    assert float(pipe.p) == pytest.approx(step)
    ada.observe(torch.tensor(0.6), 4, 128)              # exactly at the target: no move
    assert float(pipe.p) == pytest.approx(step)


def tiny_trainer(aug="ada", run_dir=None, **cfg):
    torch.manual_seed(0)
    G, D = build_stylegan2(resolution=8, z_dim=16, w_dim=16, img_channels=1, channel_base=64, channel_max=16,
                           mapping_layers=2, mbstd_group_size=2)
    gen = torch.Generator().manual_seed(0)
    data = InMemoryImages(torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=gen), None, name="noise")
    fields = dict(batch=4, r1_gamma=1.0, r1_interval=2, ema_kimg=0.01, aug=aug, aug_interval=1, aug_kimg=0.1)
    fields.update(cfg)
    return Trainer(G, D, data, TrainingConfig(**fields), run_dir=run_dir)


def test_trainer_augments_every_image_D_sees_and_takes_R1_through_the_pipe(monkeypatch):
    t = tiny_trainer(aug_p=0.5, aug_target=None)       # fixed p
    seen = []
    real_forward = t.D.forward
    monkeypatch.setattr(t.augment, "forward", lambda x, f=t.augment.forward: seen.append(x.requires_grad) or f(x))
    monkeypatch.setattr(t.D, "forward", lambda x, c=None: seen.append("D") or real_forward(x, c))
    t.step()                                            # D main (reals, fakes), D reg (R1), G main
    assert seen.count("D") == 4 and len(seen) == 8
    assert all(seen[i] != "D" and seen[i + 1] == "D" for i in range(0, 8, 2))     # each D call on augmented input
    assert seen[4] is True                            # R1: the reals require grad before the pipe
    assert float(t.augment.p) == 0.5 and t.ada is None
    tick = t.read_stats()                              # fixed p still reports p and D's r_t
    assert tick["aug_p"] == 0.5 and -1 <= tick["r_t"] <= 1


def test_ada_run_reports_p_and_r_t_and_checkpoints_them_without_host_syncs(tmp_path):
    t = tiny_trainer(run_dir=tmp_path)
    t.step()
    with host_syncs(raise_on_sync=True) as found:
        for _ in range(3):
            t.step()
    assert found.count() == 0
    tick = t.read_stats()
    assert -1 <= tick["r_t"] <= 1 and tick["aug_p"] == pytest.approx(float(t.augment.p))
    t.augment.p.fill_(0.25)
    t.save()
    u = tiny_trainer(run_dir=tmp_path)
    u.resume("auto")
    assert float(u.augment.p) == 0.25 and u.ada.steps == t.ada.steps


def test_config_checks_the_augmentation_fields():
    for kwargs, name in (({"aug": "adaptive"}, "aug"), ({"aug_pipe": "xyz"}, "aug_pipe"), ({"aug_p": 1.5}, "aug_p"),
                         ({"aug_target": -0.1}, "aug_target"), ({"aug_interval": 0}, "aug_interval"),
                         ({"aug_kimg": 0}, "aug_kimg"), ({"diffaugment_policy": "color,zoom"}, "diffaugment_policy"),
                         ({"aug": "ada", "loss": "began"}, "aug")):
        with pytest.raises(ValueError, match=name):
            TrainingConfig(**kwargs)


# ---- DiffAugment ----

def test_diffaugment_policies():
    x = images(n=32, c=3, h=16, w=16)
    torch.manual_seed(0)
    assert torch.equal(DiffAugment("")(x), x)
    y = DiffAugment("translation")(x)
    # every image is x shifted by at most 2 pixels (16 / 8) with zeros shifted in
    for i in range(32):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)]
                shifted[:, max(-dy, 0):max(-dy, 0) + src.shape[1], max(-dx, 0):max(-dx, 0) + src.shape[2]] = src
                found = found or torch.equal(y[i], shifted)
        assert found, f"image {i} is no shift within 2 pixels"
    ones = torch.ones(64, 1, 16, 16, dtype=torch.float64)
    y = DiffAugment("cutout")(ones)
    zeros = (y == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 64 and int(zeros.min()) >= 16      # an 8x8 square, its centre inside
    y = DiffAugment("color")(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    grey = torch.full((8, 3, 4, 4), 0.2, dtype=torch.float64)
    out = DiffAugment("color")(grey)                                # brightness only: + U(-0.5, 0.5)
    assert_close(out, out[:, :1, :1, :1].expand_as(out), 1e-12, "grey stays flat")
    assert float((out - grey).abs().max()) <= 0.5
    with pytest.raises(ValueError, match="unknown policy"):
        DiffAugment("color,zoom")


def test_trainer_with_diffaugment_trains():
    t = tiny_trainer(aug="diffaugment")
    t.step()
    stats = t.read_stats()
    assert "aug_p" not in stats and "r_t" not in stats and math.isfinite(stats["loss_D"])


# ---- ganfast train --aug ----

TINY_RUN = ["--preset", "stylegan2-32-fmnist", "--model", "channel_max=8,channel_base=256,z_dim=16,w_dim=16",
            "--kimg", "0.024", "--batch", "8", "--tick", "0.008", "--snap", "0.024", "--metrics", "none",
            "--no-progress"]


def test_train_aug_ada_logs_p_and_r_t_per_tick_to_the_log_and_tensorboard(tmp_path):
    from ganfast.cli import main
    from ganfast.training.visualize import read_jsonl
    out = tmp_path / "ada"
    assert main(["train", "--out", str(out), *TINY_RUN, "--aug", "ada", "--target", "0.6", "--aug-p", "0.1",
                 "--set", "aug_kimg=0.1,aug_interval=1"]) == 0
    training = json.loads((out / "run.json").read_text())["training"]
    assert (training["aug"], training["aug_p"], training["aug_target"], training["aug_pipe"]) == ("ada", 0.1, 0.6, "bgc")
    log = read_jsonl(out / "log.jsonl")
    assert len(log) == 3 and all(-1 <= row["r_t"] <= 1 and row["aug_p"] >= 0 for row in log)
    # each step moves p by 8 / 100 images either way (interval 1, 0.1 kimg from 0 to 1): never still
    assert len({round(row["aug_p"], 6) for row in [{"aug_p": 0.1}] + log}) > 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("Progress/aug_p")] == pytest.approx([row["aug_p"] for row in log], rel=1e-6)
    assert [e.value for e in acc.Scalars("Progress/r_t")] == pytest.approx([row["r_t"] for row in log], rel=1e-6)


def test_train_aug_flags(tmp_path, capsys, monkeypatch):
    import ganfast.training.run as run
    from ganfast.cli import main
    asked = []
    monkeypatch.setattr(run, "run_training", lambda options: asked.append(options.training_overrides) or {})
    for flags, expected in ((["--aug", "ada"], {"aug": "ada"}),
                            (["--aug", "ada", "--aug-p", "0.3"], {"aug": "ada", "aug_p": 0.3, "aug_target": None}),
                            (["--aug", "ada", "--aug-p", "0.3", "--target", "0.5", "--aug-pipe", "bgcfnc"],
                             {"aug": "ada", "aug_p": 0.3, "aug_target": 0.5, "aug_pipe": "bgcfnc"}),
                            (["--aug", "diffaugment"], {"aug": "diffaugment"})):
        assert main(["train", "--out", str(tmp_path / "x"), *flags]) == 0
        assert asked[-1] == expected, flags
    for flags in (["--target", "0.5"], ["--aug", "diffaugment", "--aug-p", "0.2"]):
        with pytest.raises(SystemExit):
            main(["train", "--out", str(tmp_path / "x"), *flags])
        assert "need --aug ada" in capsys.readouterr().err


def test_a_resumed_ada_run_continues_exactly(tmp_path):
    # the checkpoint falls inside a controller interval (3 D steps): its partial sums must carry over
    t = tiny_trainer(run_dir=tmp_path / "a", aug_interval=3, aug_kimg=0.02, aug_p=0.5)
    t.train(steps=4, snap_steps=2)
    first = [dict(t.step()) for _ in range(3)]
    u = tiny_trainer(run_dir=tmp_path / "a", aug_interval=3, aug_kimg=0.02, aug_p=0.5)
    u.resume(tmp_path / "a" / "checkpoints" / "ckpt-000000002")
    u.train(steps=4)
    again = [dict(u.step()) for _ in range(3)]
    assert again == first and float(u.augment.p) == float(t.augment.p) != 0.5      # p moved, identically
