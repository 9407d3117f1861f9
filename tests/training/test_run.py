"""`ganfast train / generate / metrics` end to end on tiny models (ganfast.training.run and the CLI)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganfast.cli import main
from ganfast.training.allocator import tune_cpu_allocator
from ganfast.training.checkpoint import list_checkpoints
from ganfast.training.visualize import image_grid, read_jsonl

# stylegan2-32-fmnist shrunk to seconds: 8 channels, z/w 16
TINY = "channel_max=8,channel_base=256,z_dim=16,w_dim=16"


def train(out, *extra):
    argv = ["train", "--out", str(out), "--preset", "stylegan2-32-fmnist", "--model", TINY, "--kimg", "0.024", "--batch", "8", "--tick", "0.008",
            "--snap", "0.016", "--metrics", "swd", "--metrics-images", "16", "--no-progress", *extra]
    return main(argv)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train(out) == 0
    return out


def test_train_writes_log_samples_checkpoints_metrics_and_curves(run_dir):
    log = read_jsonl(run_dir / "log.jsonl")
    assert [row["step"] for row in log] == [1, 2, 3]
    assert all(row["sec_per_kimg"] > 0 and "loss_D" in row and "loss_G" in row for row in log)
    assert log[0]["loss_Dreg"] >= 0 and log[0]["loss_Greg"] >= 0        # lazy R1 / path length ran at step 0
    # snapshots at 16 images (step 2) and at the end (step 3)
    assert [p.name for p in list_checkpoints(run_dir)] == ["ckpt-000000002", "ckpt-000000003"]
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["tag"] for m in metrics] == ["start", "snapshot", "final"]
    assert all(m["swd_avg"] > 0 for m in metrics)
    grids = sorted(p.name for p in (run_dir / "samples").glob("grid-*.png"))
    assert len(grids) == 4 and (run_dir / "samples" / "latest.png").exists()       # start + 3 ticks
    assert (run_dir / "samples" / "latest.png").read_bytes() == (run_dir / "samples" / grids[-1]).read_bytes()
    assert not list((run_dir / "samples").glob("*.tmp"))
    picture = np.asarray(Image.open(run_dir / "samples" / "latest.png"))
    assert picture.shape == (2 * (8 * 33 + 1),) * 2                               # 8x8 grid of 32 px, scale 2
    assert (run_dir / "curves.png").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["kimg"] == pytest.approx(0.024)
    assert summary["first_metrics"]["tag"] == "start" and summary["last_metrics"]["tag"] == "final"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["training"]["loss"] == "nonsaturating" and config["training"]["pl_weight"] == 2.0
    # a CPU run tunes glibc's allocator (ganfast.training.allocator) and records what it did
    assert config["cpu_allocator"] == tune_cpu_allocator()


def test_resume_auto_continues_to_a_longer_budget(run_dir, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert train(out, "--resume", "auto", "--kimg", "0.04") == 0
    log = read_jsonl(out / "log.jsonl")
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5]
    assert list_checkpoints(out)[-1].name == "ckpt-000000005"


def test_resume_a_checkpoint_written_before_runs_recorded_class_names(run_dir, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    for ckpt in list_checkpoints(out):
        meta = json.loads((ckpt / "meta.json").read_text())
        assert meta["config"]["run"].pop("class_names")[1] == "Trouser"
        (ckpt / "meta.json").write_text(json.dumps(meta))
    assert train(out, "--resume", "auto", "--kimg", "0.032") == 0
    # a real difference in the run config is still refused
    ckpt = list_checkpoints(out)[-1]
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["config"]["run"]["xflip"] = True
    (ckpt / "meta.json").write_text(json.dumps(meta))
    assert train(out, "--resume", "auto", "--kimg", "0.04") == 2
    assert "different run" in capsys.readouterr().err


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_of_ticks_metrics_and_grids(run_dir):
    acc = _events(run_dir)
    ticks = acc.Scalars("Progress/loss_D")
    log = read_jsonl(run_dir / "log.jsonl")
    assert [e.step for e in ticks] == [8, 16, 24]                           # x axis: images seen
    assert [e.value for e in ticks] == pytest.approx([row["loss_D"] for row in log], rel=1e-6)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    swd = acc.Scalars("Metrics/swd_avg")
    assert [e.step for e in swd] == [0, 16, 24]
    assert [e.value for e in swd] == pytest.approx([m["swd_avg"] for m in metrics], rel=1e-6)
    grids = acc.Images("samples")
    assert [e.step for e in grids] == [0, 8, 16, 24]
    assert (grids[-1].width, grids[-1].height) == (8 * 33 + 1, 8 * 33 + 1)


def test_tensorboard_resume_drops_the_events_after_the_checkpoint(run_dir, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    shutil.rmtree(list_checkpoints(out)[-1])           # killed after the tick at 24 images, before its checkpoint
    with open(out / "log.jsonl", "a") as f:
        f.write('{"kimg": 0.03')                        # and torn mid-line
    assert train(out, "--resume", "auto", "--metrics", "none") == 0
    steps = [e.step for e in _events(out).Scalars("Progress/loss_D")]
    assert steps == [8, 16, 24]                         # the orphaned 24 is replaced, not doubled
    # the JSONL logs too: the killed run's rows after the checkpoint are gone, so kimg never repeats
    assert [row["step"] for row in read_jsonl(out / "log.jsonl")] == [1, 2, 3]
    assert (out / "log.jsonl").read_text().endswith("}\n")
    assert [m["tag"] for m in read_jsonl(out / "metrics.jsonl")] == ["start", "snapshot"]


def test_tensorboard_off_or_missing(tmp_path, monkeypatch, capsys):
    import sys
    from ganfast.training.run import _TensorBoard
    assert _TensorBoard(tmp_path / "a", False, None).writer is None and not (tmp_path / "a").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)      # as if not installed
    board = _TensorBoard(tmp_path / "b", None, None)
    assert board.writer is None and "not installed" in board.note
    board.scalars("Progress", {"loss": 1.0}, 0)                            # a no-op, not an error
    with pytest.raises(ValueError, match="tensorboard"):
        _TensorBoard(tmp_path / "c", True, None)
    assert main(["train", "--out", str(tmp_path / "r"), "--tensorboard", "--no-progress", "--metrics",
                 "none"]) == 2
    assert "tensorboard" in capsys.readouterr().err


def test_generate_grid_interpolation_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["generate", "--ckpt", str(run_dir), "--n", "6", "--out", str(out), "--scale", "1",
                 "--truncation", "0.7"]) == 0
    assert np.asarray(Image.open(out)).shape == (2 * 33 + 1, 3 * 33 + 1)          # 6 images: 3 columns
    assert main(["generate", "--ckpt", str(run_dir), "--n", "2", "--interpolate", "5", "--out", str(out),
                 "--scale", "1"]) == 0
    assert np.asarray(Image.open(out)).shape == (2 * 33 + 1, 5 * 33 + 1)
    assert main(["generate", "--ckpt", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--ckpt", str(run_dir), "--classes", "--out", str(out)])      # unconditional G


def test_generate_is_deterministic_and_uses_the_ema_weights(run_dir):
    from ganfast.training.run import generate_images, load_generator
    G, meta = load_generator(run_dir)
    G_raw, _ = load_generator(run_dir, use_ema=False)
    a, b = generate_images(G, 4, seed=1), generate_images(G, 4, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, generate_images(G_raw, 4, seed=1))
    assert meta["step"] == 3


def test_metrics_command_appends_to_the_run(run_dir, capsys):
    before = len(read_jsonl(run_dir / "metrics.jsonl"))
    assert main(["metrics", "--run", str(run_dir), "--metrics", "swd", "--n", "16"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["swd_avg"] > 0 and row["step"] == 3
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == before + 1


def test_train_on_a_folder_of_pngs(tmp_path):
    folder = tmp_path / "my_images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="broken.png"):
        assert train(tmp_path / "run", "--data", str(folder), "--kimg", "0.008") == 0
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["dataset"]["size"] == 10


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/dir"], "/no/such/dir"),
    (["--preset", "stylegan9-32"], "stylegan2-32"),                  # the error lists the valid names
])
def test_train_errors_a_user_can_act_on(tmp_path, capsys, args, message):
    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err


def test_train_refuses_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "empty" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_another_preset(run_dir, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert main(["train", "--out", str(out), "--preset", "dcgan-32", "--resume", "auto", "--no-progress",
                 "--metrics", "none"]) == 2
    assert "stylegan2-32-fmnist" in capsys.readouterr().err


def test_image_grid_layout():
    images = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(images, ncols=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 128 and grid[4, 1, 0] == 255 and grid[4, 4, 0] == 0
    with pytest.raises(ValueError, match="images"):
        image_grid(torch.zeros(2, 2, 4, 4))


# ---------------------------------------------------------------- conditional runs (the default preset)

@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """The default preset (class-conditional), shrunk: default metrics, so class_acc is among them."""
    from ganfast.training.run import DEFAULT_PRESET
    out = tmp_path_factory.mktemp("cond")
    assert main(["train", "--out", str(out), "--model", "ngf=4,ndf=4", "--kimg", "0.016", "--batch", "8",
                 "--tick", "0.008", "--snap", "0.016", "--metrics-images", "40", "--no-progress",
                 "--no-tensorboard"]) == 0
    assert json.loads((out / "run.json").read_text())["run"]["preset"] == DEFAULT_PRESET
    return out


def test_default_run_is_conditional_and_reports_class_accuracy(cond_run):
    metrics = read_jsonl(cond_run / "metrics.jsonl")
    assert [m["tag"] for m in metrics] == ["start", "final"]
    for m in metrics:
        assert {"swd_avg", "fid", "kid", "class_acc", "class_acc_min"} <= set(m)
        per_class = [m[f"class_acc_{k}"] for k in range(10)]     # 40 images: 4 asked of every class
        assert 0 <= m["class_acc_min"] == min(per_class) and m["class_acc"] == pytest.approx(sum(per_class) / 10)
    run = json.loads((cond_run / "run.json").read_text())
    assert run["options"]["metrics"] == ["swd", "fid", "kid", "class_acc"]
    assert run["run"]["class_names"][0] == "T-shirt/top" and len(run["run"]["class_names"]) == 10
    assert json.loads((cond_run / "summary.json").read_text())["last_metrics"]["class_acc"] >= 0


def test_conditional_grid_has_one_named_row_per_class(cond_run, tmp_path):
    picture = np.asarray(Image.open(cond_run / "samples" / "latest.png"))
    assert picture.shape[0] == 2 * (10 * 33 + 1)                    # 10 class rows of 32 px, scale 2
    margin = picture.shape[1] - 2 * (8 * 33 + 1)                    # 8 samples per row, names on the left
    assert margin > 0 and picture[:, :margin].max() == 255          # white text in the margin
    out = tmp_path / "classes.png"
    assert main(["generate", "--ckpt", str(cond_run), "--classes", "--n", "3", "--out", str(out), "--scale", "1"]) == 0
    classes = np.asarray(Image.open(out))
    assert classes.shape[0] == 10 * 33 + 1 and classes.shape[1] > 3 * 33 + 1


def test_sample_grid_rows_are_classes_and_columns_share_a_latent():
    from ganfast.models import create
    from ganfast.training.run import generate_images, sample_grid
    G = create("cdcgan-32", seed=0, ngf=4, c_dim=3).G.eval()
    with torch.no_grad():
        G.norms[-1].bias.weight.normal_()                            # make the classes differ
    grid = sample_grid(G, 4, ("a", "b", "c"), seed=5)               # 3 rows x 2 columns, names on the left
    cells = grid[:, -(2 * 33 + 1):, 0]
    assert cells.shape == (3 * 33 + 1, 2 * 33 + 1)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5))
    for row in range(3):
        expected = image_grid(generate_images(G, 2, c=torch.full((2,), row), z=z), ncols=2)[:, :, 0]
        assert np.array_equal(cells[row * 33:row * 33 + 34], expected)
    unconditional = create("dcgan-32", seed=0, ngf=4).G
    assert sample_grid(unconditional, 4, seed=5).shape == (2 * 33 + 1, 2 * 33 + 1, 1)


def test_class_acc_refused_for_an_unconditional_model(run_dir, capsys):
    assert main(["metrics", "--run", str(run_dir), "--metrics", "class_acc", "--n", "16"]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_a_fresh_run_refuses_a_directory_with_checkpoints(run_dir, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["train", "--out", str(out), "--no-progress", "--metrics", "none"]) == 2
    err = capsys.readouterr().err
    assert "--resume auto" in err and "ckpt-000000003" in err
    assert sorted(p.name for p in out.rglob("*")) == before          # nothing written


def test_metrics_command_defaults_for_a_conditional_run(cond_run, capsys):
    assert main(["metrics", "--run", str(cond_run), "--n", "20"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert {"swd_avg", "fid", "kid", "precision", "recall", "class_acc", "class_acc_min"} <= set(row)


def test_default_metrics_add_class_acc_only_for_fashion_mnist_classes():
    from ganfast.models import create
    from ganfast.training.run import default_metrics
    G10 = create("cdcgan-32", ngf=4).G
    assert default_metrics(G10) == default_metrics(G10, "fashion-mnist") == ("swd", "fid", "kid", "class_acc")
    assert default_metrics(G10, "my_images/") == ("swd", "fid", "kid")          # not the classifier's labels
    assert default_metrics(create("cdcgan-32", ngf=4, c_dim=3).G) == ("swd", "fid", "kid")
    assert default_metrics(create("dcgan-32", ngf=4).G) == ("swd", "fid", "kid")
