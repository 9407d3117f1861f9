"""ganfast.training.growing: the growth schedule (stage and alpha from the image count), the reals'
box-filter downsampling and fade-in, the schedule's validation and JSON round trip, and
TrainingConfig's checks of a growing run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ganfast.training.growing import PAPER_BATCH, GrowthSchedule, GrowthState, Stage, grow_reals
from ganfast.training.loop import TrainingConfig


def test_scaled_schedule_stages_and_states():
    s = GrowthSchedule.scaled(32, stage_kimg=2, batch={32: 8}, lr={16: 1e-3})
    assert [st.resolution for st in s.stages] == [4, 8, 16, 32]
    assert [(st.fade_kimg, st.stable_kimg) for st in s.stages] == [(0, 2), (2, 2), (2, 2), (2, 2)]
    assert s.stages[3].batch == 8 and s.stages[2].lr == 1e-3 and s.stages[0].batch is None
    assert s.total_kimg == 14 and s.final_resolution == 32
    # 4x4 for 2k images, then 8x8 fading in over 2k, stable 2k, then 16x16 ...
    assert s.state_at(0) == GrowthState(0, 4, 1.0)
    assert s.state_at(1999) == GrowthState(0, 4, 1.0)
    assert s.state_at(2000) == GrowthState(1, 8, 0.0)
    assert s.state_at(2500) == GrowthState(1, 8, 0.25)
    assert s.state_at(3999) == GrowthState(1, 8, 0.9995)
    assert s.state_at(4000) == GrowthState(1, 8, 1.0)
    assert s.state_at(6000) == GrowthState(2, 16, 0.0)
    assert s.state_at(13_000) == GrowthState(3, 32, 1.0)
    assert s.state_at(10 ** 9) == GrowthState(3, 32, 1.0)           # the last stage lasts forever


def test_paper_schedule():
    s = GrowthSchedule.paper(1024)
    assert [st.resolution for st in s.stages] == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert all(st.fade_kimg == 600 and st.stable_kimg == 600 for st in s.stages[1:])
    assert [st.batch for st in s.stages] == [PAPER_BATCH[r] for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)]
    assert [st.batch for st in s.stages][-3:] == [14, 6, 3]
    assert s.total_kimg == 600 + 8 * 1200


def test_round_trip_through_json_lists():
    s = GrowthSchedule.scaled(16, stage_kimg=0.5, batch={16: 4})
    again = GrowthSchedule.from_list(s.to_list())
    assert again.stages == s.stages
    assert TrainingConfig.from_dict(TrainingConfig(growth=s.to_list()).to_dict()).growth == s.to_list()


@pytest.mark.parametrize("stages, match", [
    ([], "empty"),
    ([Stage(6, 0, 1)], "power of two"),
    ([Stage(4, 0, 1), Stage(16, 1, 1)], "double"),
    ([Stage(4, 1, 1)], "first stage"),
    ([Stage(4, 0, -1)], "stable_kimg"),
    ([Stage(4, 0, 1), Stage(8, float("nan"), 1)], "fade_kimg"),
    ([Stage(4, 0, 1, batch=0)], "batch"),
    ([Stage(4, 0, 1, lr=0.0)], "lr"),
])
def test_bad_schedules_raise(stages, match):
    with pytest.raises(ValueError, match=match):
        GrowthSchedule(stages)


def test_bad_lists_raise():
    with pytest.raises(ValueError, match="list"):
        GrowthSchedule.from_list("4,8")
    with pytest.raises(ValueError, match="needs resolution"):
        GrowthSchedule.from_list([{"resolution": 4}])
    with pytest.raises(ValueError, match="growth"):
        TrainingConfig(growth=[{"resolution": 4, "fade_kimg": 1, "stable_kimg": 1}])
    with pytest.raises(ValueError, match="compile"):
        TrainingConfig(growth=GrowthSchedule.scaled(8, 1).to_list(), compile=True)
    with pytest.raises(ValueError, match="replay"):
        TrainingConfig(growth=GrowthSchedule.scaled(8, 1).to_list(), replay_fraction=0.5, replay_size=4)


def test_grow_reals_box_filter_and_fade():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(grow_reals(x, 16, 1.0), x)
    # 4x4: the mean of each 4x4 block (the paper's box filter)
    by_hand = x.reshape(2, 3, 4, 4, 4, 4).mean(dim=(3, 5))
    torch.testing.assert_close(grow_reals(x, 4, 1.0), by_hand, rtol=1e-15, atol=1e-15)
    # fading in 8x8: (1 - alpha) * nearest-up(2x2 means at 4x4) + alpha * the 8x8 image
    x8 = grow_reals(x, 8, 1.0)
    low = grow_reals(x, 4, 1.0).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(grow_reals(x, 8, 0.3), 0.7 * low + 0.3 * x8, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(grow_reals(x, 8, 0.0), low, rtol=1e-15, atol=1e-15)   # alpha 0: only the low path
    with pytest.raises(ValueError, match="divide"):
        grow_reals(x, 32, 1.0)
    with pytest.raises(ValueError, match="resolution >= 8"):
        grow_reals(x, 4, 0.5)
    with pytest.raises(ValueError, match=r"\[N, C, R, R\]"):
        grow_reals(x[0], 8, 1.0)


# ---------------------------------------------------------------- the Trainer growing a ProGAN

from ganfast.data import InMemoryImages                                    # noqa: E402
from ganfast.models import create                                         # noqa: E402
from ganfast.training.loop import Trainer                                  # noqa: E402

TINY = dict(resolution=16, img_channels=1, z_dim=8, fmap_base=64, fmap_max=16)


def tiny_data(n=64):
    g = torch.Generator().manual_seed(0)
    return InMemoryImages(torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8), None, "noise")


# 4x4 for 32 images, 8x8 fading in over 32 and stable for 32 (batch 8), 16x16 fading in over 32 (batch 4, lr 5e-4)
SCHEDULE = GrowthSchedule([Stage(4, 0, 0.032), Stage(8, 0.032, 0.032, batch=8), Stage(16, 0.032, 0.032, batch=4, lr=5e-4)])


def growing_trainer(run_dir=None, seed=0, **cfg):
    torch.manual_seed(0)          # the gradient penalty's mixing weights come from the global RNG
    gan = create("progan-32", seed=seed, **TINY)
    fields = dict(loss="wgan-gp", drift_weight=0.001, lr=1e-3, betas=(0.0, 0.99), batch=16, ema_kimg=0.01,
                  ema_rampup=None, growth=SCHEDULE.to_list(), seed=0)
    fields.update(cfg)
    return Trainer(gan.G, gan.D, tiny_data(), TrainingConfig(**fields), run_dir=run_dir)


def stage_of(net):
    return net.current_resolution, net.current_alpha


def test_the_trainer_follows_the_schedule():
    t = growing_trainer()
    seen = []
    for _ in range(14):
        before = t.progress.cur_nimg
        stats = t.step()
        state = t.growth_state
        assert state == SCHEDULE.state_at(before)                         # the stage of the images seen before the step
        for net in (t.G, t.D, t.ema.module):                              # G, D and G's EMA all at it
            assert stage_of(net) == (state.resolution, state.alpha)
        assert t._inputs["real"].shape[-1] == state.resolution and t._inputs["real"].shape[0] == t.batch
        assert math.isfinite(stats["loss_D"]) and "drift" in stats
        seen.append((state.resolution, round(state.alpha, 4), t.batch, t.opt_G.param_groups[0]["lr"]))
    assert seen == [(4, 1.0, 16, 1e-3), (4, 1.0, 16, 1e-3),
                    (8, 0.0, 8, 1e-3), (8, 0.25, 8, 1e-3), (8, 0.5, 8, 1e-3), (8, 0.75, 8, 1e-3),
                    (8, 1.0, 8, 1e-3), (8, 1.0, 8, 1e-3), (8, 1.0, 8, 1e-3), (8, 1.0, 8, 1e-3),
                    (16, 0.0, 4, 5e-4), (16, 0.125, 4, 5e-4), (16, 0.25, 4, 5e-4), (16, 0.375, 4, 5e-4)]
    assert t.progress.cur_nimg == 32 + 64 + 16


def test_a_stage_change_keeps_weights_and_optimizer_moments():
    t = growing_trainer()
    t.step()
    t.step()                                                               # the 4x4 stage is over
    p = next(iter(t.G.blocks["4"].parameters()))                           # a layer that continues
    new = next(iter(t.G.blocks["8"].parameters()))                         # a layer not trained yet
    weight, state = p.detach().clone(), {k: v.clone() for k, v in t.opt_G.state[p].items()}
    assert new not in t.opt_G.state or not t.opt_G.state[new]
    t.step()                                                               # the first 8x8 step (alpha 0)
    assert t.growth_state.resolution == 8
    assert int(t.opt_G.state[p]["step"]) == int(state["step"]) + 1        # Adam continued, not restarted
    # the moments moved on from the old ones: m' = beta1 m + (1 - beta1) g with beta1 = 0 is g alone,
    # v' = 0.99 v + 0.01 g^2 keeps the history
    g = t.opt_G.state[p]["exp_avg"]
    torch.testing.assert_close(t.opt_G.state[p]["exp_avg_sq"], 0.99 * state["exp_avg_sq"] + 0.01 * g * g,
                               rtol=1e-5, atol=1e-12)
    assert not torch.equal(p.detach(), weight)


def test_resume_mid_fade_gives_the_uninterrupted_losses(tmp_path):
    full = growing_trainer()
    expected = [dict(full.step()) for _ in range(8)]
    first = growing_trainer(run_dir=tmp_path)
    first.train(steps=4)                                                   # stops mid-fade: 8x8, alpha 0.25 trained
    assert first.growth_state == GrowthState(1, 8, 0.25)
    resumed = growing_trainer(run_dir=tmp_path, seed=7)                   # other initial weights
    resumed.resume("auto")
    assert resumed.growth_state == SCHEDULE.state_at(resumed.progress.cur_nimg) == GrowthState(1, 8, 0.5)
    assert stage_of(resumed.G) == (8, 0.5) and resumed.batch == 8
    got = [dict(resumed.step()) for _ in range(4)]
    assert got == expected[4:]
    for a, b in ((resumed.G, full.G), (resumed.D, full.D), (resumed.ema.module, full.ema.module)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    import json
    meta = json.loads((tmp_path / "checkpoints" / "ckpt-000000004" / "meta.json").read_text())
    assert meta["config"]["growth_state"] == {"index": 1, "resolution": 8, "alpha": 0.5}


def test_growth_needs_a_growing_model_with_the_final_resolution():
    gan = create("dcgan-32", seed=0, ngf=4, ndf=4)
    cfg = TrainingConfig(growth=GrowthSchedule.scaled(32, 1).to_list())
    with pytest.raises(ValueError, match="set_stage"):
        Trainer(gan.G, gan.D, tiny_data(), cfg)
    gan = create("progan-32", seed=0, **TINY)
    with pytest.raises(ValueError, match="ends at 32x32"):
        Trainer(gan.G, gan.D, tiny_data(), cfg)
    with pytest.raises(ValueError, match="divisible"):
        Trainer(gan.G, gan.D, tiny_data(), TrainingConfig(batch=8, batch_gpu=3, growth=SCHEDULE.to_list()))


def test_a_short_progan_run_grows_to_32_and_its_metrics_fall(tmp_path):
    """`ganfast train --preset progan-32` (shrunk) on the built-in Fashion-MNIST: 4 -> 32 with fades,
    the log and metrics say where the run stands, grids are at the final size, FID falls."""
    import json
    import numpy as np
    from PIL import Image
    from ganfast.cli import main
    from ganfast.training.visualize import read_jsonl
    out = tmp_path / "pg"
    assert main(["train", "--preset", "progan-32", "--model", "fmap_base=128,fmap_max=16,z_dim=32",
                 "--stage-kimg", "0.4", "--kimg", "3.2", "--batch", "16", "--tick", "0.2", "--snap", "3.2",
                 "--metrics", "swd,fid", "--metrics-images", "256", "--no-progress", "--no-tensorboard",
                 "--out", str(out)]) == 0
    log = read_jsonl(out / "log.jsonl")
    stages = [(r["resolution"], r["alpha"]) for r in log]
    assert [res for res, _ in stages][0] == 4 and stages[-1] == (32, 1.0)
    assert sorted({res for res, _ in stages}) == [4, 8, 16, 32]
    assert any(0 < a < 1 for _, a in stages)                               # fades were logged
    metrics = read_jsonl(out / "metrics.jsonl")
    first, last = metrics[0], metrics[-1]
    assert (first["resolution"], last["resolution"], last["alpha"]) == (4, 32, 1.0)
    assert last["fid"] < 0.8 * first["fid"]      # (this tiny model's SWD need not fall yet; the README run's does)
    assert np.asarray(Image.open(out / "samples" / "latest.png")).shape[0] == 2 * (8 * 33 + 1)   # 32 px cells
    config = json.loads((out / "run.json").read_text())["training"]
    assert config["loss"] == "wgan-gp" and config["drift_weight"] == 0.001
    assert [s["resolution"] for s in config["growth"]] == [4, 8, 16, 32]
    assert all(s["fade_kimg"] == 0.4 for s in config["growth"][1:])
    # `ganfast generate` on its checkpoint: the stage comes back from the checkpoint's buffers
    assert main(["generate", "--ckpt", str(out), "--n", "4", "--out", str(tmp_path / "g.png"), "--scale", "1"]) == 0
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (2 * 33 + 1, 2 * 33 + 1)
