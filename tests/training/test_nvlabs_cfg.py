"""stylegan2-ada-pytorch's --cfg values as ganfast presets: the published cfg_specs table (typed in
from its train.py), the networks and the TrainingConfig each preset gets through `ganfast train`."""
from __future__ import annotations

import json

import pytest
import torch

import ganfast.models as gm
from ganfast.cli import main
from ganfast.training.recipes import NVLABS_CFG_NAMES, nvlabs_cfg_spec, nvlabs_cfg_training
from ganfast.training.run import RunOptions, _training_config

# train.py's cfg_specs rows: (mb, mbstd, fmaps, lrate, gamma, ema, ramp, map, ref_gpus)
PUBLISHED = {
    "stylegan2": (32, 4, 1, 0.002, 10, 10, None, 8, 8),
    "paper256": (64, 8, 0.5, 0.0025, 1, 20, None, 8, 8),
    "paper512": (64, 8, 1, 0.0025, 0.5, 20, None, 8, 8),
    "paper1024": (32, 4, 1, 0.002, 2, 10, None, 8, 8),
    "cifar": (64, 32, 1, 0.0025, 0.01, 500, 0.05, 2, 2),
}


@pytest.mark.parametrize("cfg", sorted(PUBLISHED))
def test_fixed_cfgs_are_the_published_rows(cfg):
    spec = nvlabs_cfg_spec(cfg, 256)
    got = tuple(spec[k] for k in ("mb", "mbstd", "fmaps", "lrate", "gamma", "ema", "ramp", "map", "ref_gpus"))
    assert got == PUBLISHED[cfg]
    assert nvlabs_cfg_spec(cfg, 1024, gpus=4) == spec          # only 'auto' reads resolution and GPUs


@pytest.mark.parametrize("res, gpus, expected", [
    # mb = max(min(gpus * min(4096 // res, 32), 64), gpus); mbstd = min(mb // gpus, 4);
    # gamma = 0.0002 res^2 / mb; ema = mb * 10 / 32
    (32, 1, dict(mb=32, mbstd=4, fmaps=0.5, lrate=0.0025, gamma=0.0002 * 32 ** 2 / 32, ema=10.0)),
    (256, 1, dict(mb=16, mbstd=4, fmaps=0.5, lrate=0.0025, gamma=0.0002 * 256 ** 2 / 16, ema=5.0)),
    (256, 8, dict(mb=64, mbstd=4, fmaps=0.5, lrate=0.0025, gamma=0.0002 * 256 ** 2 / 64, ema=20.0)),
    (512, 2, dict(mb=16, mbstd=4, fmaps=1, lrate=0.0025, gamma=0.0002 * 512 ** 2 / 16, ema=5.0)),
    (1024, 1, dict(mb=4, mbstd=4, fmaps=1, lrate=0.002, gamma=0.0002 * 1024 ** 2 / 4, ema=1.25)),
])
def test_auto_cfg_formulas(res, gpus, expected):
    spec = nvlabs_cfg_spec("auto", res, gpus)
    assert {k: spec[k] for k in expected} == pytest.approx(expected)
    assert spec["ramp"] == 0.05 and spec["map"] == 2 and spec["ref_gpus"] == gpus


def test_bad_cfg_arguments_name_themselves():
    with pytest.raises(ValueError, match="cfg must be one of"):
        nvlabs_cfg_spec("paper128", 128)
    with pytest.raises(ValueError, match="gpus"):
        nvlabs_cfg_spec("auto", 128, gpus=0)


def test_cifar_networks_and_recipe():
    gan = gm.create("stylegan2-ada-cifar", seed=0)
    assert (gan.img_resolution, gan.z_dim, gan.G.w_dim, gan.G.num_ws) == (32, 512, 512, 8)
    assert gan.G.style_mixing_prob == 0.0 and len(gan.G.mapping.layers) == 2
    assert gan.D.blocks[0].architecture == "orig" and gan.D.mbstd.group_size == 32
    t = nvlabs_cfg_training("cifar", 32)
    assert (t["batch"], t["batch_gpu"], t["lr"], t["r1_gamma"], t["pl_weight"], t["ema_kimg"], t["ema_rampup"]) == \
        (64, 32, 0.0025, 0.01, 0.0, 500.0, 0.05)


def test_paper256_networks():
    gan = gm.create("stylegan2-ada-paper256", seed=0)
    # fmaps 0.5: channel_base 16384, 512 channels at most; the 8-layer mapping; 0.9 style mixing
    assert gan.parameter_counts() == {"G": 24767458, "D": 24001089}
    assert gan.G.style_mixing_prob == 0.9 and len(gan.G.mapping.layers) == 8
    assert gan.D.blocks[0].architecture == "resnet" and gan.D.mbstd.group_size == 8


def test_every_cfg_preset_exists_and_trains_with_its_recipe():
    for cfg in NVLABS_CFG_NAMES:
        preset = gm.get_preset(f"stylegan2-ada-{cfg}")
        assert preset.recipe is not None and preset.kwargs["cfg"] == cfg
    tiny = dict(channel_max=8, channel_base=64, z_dim=8, w_dim=8, img_channels=1)
    preset = gm.get_preset("stylegan2-ada-paper256")
    gan = gm.create("stylegan2-ada-paper256", resolution=16, **tiny)
    config = _training_config(RunOptions(preset="stylegan2-ada-paper256"), preset, gan)
    assert (config.batch, config.batch_gpu, config.lr, config.r1_gamma, config.ema_kimg, config.ema_rampup) == \
        (64, 8, 0.0025, 1.0, 20.0, None)
    assert (config.schedule, config.pl_style_mixing, config.pl_update_w_avg, config.ema_average_buffers,
            config.nan_to_num) == ("nvlabs", True, True, False, True)
    # another --batch drops the reference's per-GPU batch (it belongs to the reference batch)
    config = _training_config(RunOptions(preset="stylegan2-ada-paper256", batch=8), preset, gan)
    assert (config.batch, config.batch_gpu) == (8, None)
    # auto reads the resolution and the process count
    auto = gm.get_preset("stylegan2-ada-auto")
    gan = gm.create("stylegan2-ada-auto", resolution=16, gpus=2, **tiny)
    config = _training_config(RunOptions(preset="stylegan2-ada-auto"), auto, gan, world_size=2)
    assert (config.batch, config.batch_gpu) == (64, 32)
    assert config.r1_gamma == pytest.approx(0.0002 * 16 ** 2 / 64)


def test_ganfast_train_with_a_cfg_preset(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "stylegan2-ada-cifar", "--model",
               "channel_max=8,channel_base=64,z_dim=8,w_dim=8,img_channels=1,mbstd_group_size=4", "--batch", "8",
               "--kimg", "0.016", "--tick", "0.008", "--snap", "0.016", "--metrics", "none", "--no-progress",
               "--no-tensorboard", "--out", str(out)])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["training"]["schedule"] == "nvlabs" and run["training"]["r1_gamma"] == 0.01
    assert run["training"]["batch"] == 8 and run["training"]["lr"] == 0.0025
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss_G"])) for r in rows)
