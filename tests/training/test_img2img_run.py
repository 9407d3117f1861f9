"""`ganfast train` / `ganfast generate --input` for the image-to-image presets, end to end on the
built-in data with the presets' networks made small (the run machinery is what is tested here;
the steps' losses are in test_img2img_trainer.py)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganfast.cli import main
from ganfast.training.run import RunOptions, load_generator, run_training

# each preset shrunk (same builders) so a run of a few steps takes seconds
SMALL = {
    "pix2pix-32": {"ngf": 8, "ndf": 8},
    "cyclegan-32": {"ngf": 8, "ndf": 8, "n_blocks": 1},
    "unit-32": {"dim": 8, "ndf": 8},
    "srgan-32": {"ngf": 8, "n_blocks": 1, "ndf": 8, "d_dense": 16},
}
# what every evaluation of the family reports (ganfast.metrics.img2img.evaluate_img2img)
KEYS = {
    "pix2pix-32": ("l1", "psnr", "ssim", "input_l1", "input_psnr", "input_ssim"),
    "cyclegan-32": ("cycle_l1_A", "cycle_l1_B", "AB_target_acc", "AB_source_target_acc", "BA_target_acc", "AB_fid"),
    "unit-32": ("cycle_l1_A", "AB_target_acc", "BA_source_target_acc"),
    "srgan-32": ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "sharpness", "hr_sharpness"),
}


def _options(preset, out, **kw):
    base = dict(preset=preset, out=str(out), kimg=0.032, batch=8, tick_kimg=0.016, snap_kimg=0.016, seed=1,
                metrics_images=24, grid=4, model_overrides=dict(SMALL[preset]), progress=False, tensorboard=False)
    base.update(kw)
    return RunOptions(**base)


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_run_writes_logs_metrics_grids_and_resumes(tmp_path, preset):
    out = tmp_path / "run"
    summary = run_training(_options(preset, out))
    assert summary["kimg"] == pytest.approx(0.032) and summary["steps"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tag"] for r in rows] == ["start", "snapshot", "final"]
    for key in KEYS[preset]:
        assert all(np.isfinite(r[key]) for r in rows), key
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_D"]) and np.isfinite(r["loss_G"]) for r in log)
    if preset in ("pix2pix-32", "cyclegan-32"):          # the references' linear decay over the second half
        config = json.loads((out / "run.json").read_text())["training"]
        assert config["lr_decay"] == [0.016, 0.032]
    grid = np.asarray(Image.open(out / "samples" / "latest.png"))
    cells = {"pix2pix-32": 3, "cyclegan-32": 6, "unit-32": 6, "srgan-32": 4}[preset]
    # 4 held-out items, each a row of `cells` 32 px images (2x upscaled, 1 px padding)
    assert grid.shape[1] // 2 >= cells * 33 and grid.shape[0] // 2 >= 33
    # a longer budget continues from the last checkpoint
    resumed = run_training(_options(preset, out, kimg=0.048, resume="auto"))
    assert resumed["steps"] == 6


def test_generate_translates_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run_training(_options("pix2pix-32", run, metrics=()))
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(inputs / name)
    (inputs / "notes.txt").write_text("not an image")
    code = main(["generate", "--ckpt", str(run), "--input", str(inputs), "--out", str(tmp_path / "out")])
    assert code == 0
    assert "wrote 3 images" in capsys.readouterr().out
    for name in ("a.png", "b.png", "sub/c.png"):
        image = np.asarray(Image.open(tmp_path / "out" / name))
        assert image.shape == (32, 32)                       # 1-channel G at 32 px
    assert (tmp_path / "out" / "side_by_side.png").exists()
    # the translation is G's: the same as running the loaded generator on the resized input
    G, _ = load_generator(run)
    from ganfast.data import ImageFolder
    x = ImageFolder(inputs, resolution=32, channels=1, labels=False)[0][0]
    expected = ((G(x[None]).clamp(-1, 1)[0, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.abs(np.asarray(Image.open(tmp_path / "out" / "a.png")).astype(int) - expected).max() <= 1


def test_generate_input_errors(tmp_path, capsys):
    run = tmp_path / "run"
    run_training(_options("pix2pix-32", run, metrics=(), kimg=0.016))
    with pytest.raises(SystemExit):
        main(["generate", "--ckpt", str(run)])              # an image-to-image model needs --input
    assert "--input" in capsys.readouterr().err
    code = main(["generate", "--ckpt", str(run), "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "missing" in capsys.readouterr().err


def test_img2img_metrics_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="img2img"):
        run_training(_options("pix2pix-32", tmp_path / "r", metrics=("fid",)))


def test_metrics_command_evaluates_translations(tmp_path, capsys):
    run = tmp_path / "run"
    run_training(_options("srgan-32", run, metrics=(), kimg=0.016))
    capsys.readouterr()
    assert main(["metrics", "--run", str(run), "--n", "16"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["n"] == 16 and np.isfinite(row["psnr"]) and np.isfinite(row["bicubic_psnr"])
    with pytest.raises(SystemExit):
        main(["metrics", "--run", str(run), "--metrics", "fid"])
