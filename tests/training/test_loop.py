"""The training loop (ganfast.training.loop): phases, lazy regularization, gradient accumulation,
non-finite handling, mixed precision, exact resume, and fast ops vs reference on a tiny StyleGAN2."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ganfast.data import InMemoryImages
from ganfast.models import set_backend
from ganfast.models.began import BEGANDiscriminatorMLP
from ganfast.models.mlp import MLPDiscriminator, MLPGenerator
from ganfast.models.stylegan2 import build_stylegan2
from ganfast.training.checkpoint import list_checkpoints
from ganfast.training.loop import TRAINING_LOSSES, NonFiniteError, Trainer, TrainingConfig
from ganfast.training.toy import RingOfGaussians


def mlp_pair(seed=0, hidden=16, loss="nonsaturating"):
    torch.manual_seed(seed)
    G = MLPGenerator(z_dim=4, hidden=hidden, layers=2)
    D = BEGANDiscriminatorMLP(2, hidden=hidden, embed_dim=4) if loss == "began" else MLPDiscriminator(hidden=hidden, layers=2)
    return G, D


RING = RingOfGaussians(size=512, std=0.05, seed=1)


def trainer(loss="nonsaturating", seed=0, run_dir=None, G=None, D=None, **cfg):
    if G is None:
        G, D = mlp_pair(seed, loss=loss)
    cfg.setdefault("batch", 16)
    cfg.setdefault("lr", 1e-3)
    return Trainer(G, D, RING, TrainingConfig(loss=loss, seed=seed, **cfg), run_dir=run_dir)


def params(*modules):
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


# ---- config ----

@pytest.mark.parametrize("kwargs, name", [
    ({"loss": "gan"}, "loss"), ({"batch": 0}, "batch"), ({"n_critic": 0}, "n_critic"), ({"amp": "fp8"}, "amp"),
    ({"betas": (0.5,)}, "betas"), ({"lr": -1.0}, "lr"), ({"label_smoothing": 0.1, "loss": "hinge"}, "label_smoothing"),
    ({"replay_fraction": 0.5}, "replay_size"), ({"r1_interval": -1}, "r1_interval"), ({"optimizer": "sgd"}, "optimizer"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainingConfig(**kwargs)


def test_config_loss_defaults_and_round_trip():
    assert TrainingConfig(loss="wgan-gp").penalty_weight == 10 and TrainingConfig(loss="wgan-gp").base_loss == "wgan"
    assert TrainingConfig(loss="dragan").base_loss == "nonsaturating" and TrainingConfig(loss="dragan").penalty_weight == 10
    assert TrainingConfig(loss="wgan").clip_value == 0.01 and TrainingConfig(loss="wgan-gp").clip_value is None
    assert TrainingConfig(loss="hinge").penalty_weight == 0
    cfg = TrainingConfig(loss="hinge", batch=8, betas=(0.5, 0.9), r1_gamma=1.0)
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        TrainingConfig.from_dict({**cfg.to_dict(), "lrr": 1})


# ---- every loss ----

@pytest.mark.parametrize("loss", TRAINING_LOSSES)
def test_every_loss_trains_and_moves_both_networks(loss):
    t = trainer(loss, n_critic=2 if loss in ("wgan", "wgan-gp") else 1)
    g0, d0 = params(t.G), params(t.D)
    for _ in range(2):
        stats = t.step()
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["skipped"] == 0
    assert not torch.equal(params(t.G), g0) and not torch.equal(params(t.D), d0)
    assert t.progress.step == 2 and t.progress.cur_nimg == 2 * 16 * t.config.n_critic
    if loss == "wgan":        # weight clipping after every D step
        assert max(p.abs().max().item() for p in t.D.parameters()) <= 0.01 + 1e-7
    if loss in ("wgan-gp", "dragan"):
        assert stats["gp"] > 0
    if loss == "began":
        assert 0 <= stats["k"] <= 1 and "M" in stats


# ---- lazy regularization ----

def test_lazy_r1_runs_every_interval_with_scaled_optimizer():
    t = trainer(r1_gamma=1.0, r1_interval=3, betas=(0.5, 0.99))
    ratio = 3 / 4
    group = t.opt_D.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3 * ratio)
    assert group["betas"] == pytest.approx((0.5 ** ratio, 0.99 ** ratio))
    assert t.opt_G.param_groups[0]["lr"] == pytest.approx(1e-3)          # G has no lazy phase
    ran = [("loss_Dreg" in t.step()) for _ in range(7)]
    assert ran == [True, False, False, True, False, False, True]


def test_lazy_r1_penalty_is_weighted_by_gamma_half_times_interval():
    t = trainer(r1_gamma=4.0, r1_interval=5)
    stats = t.step()
    assert stats["loss_Dreg"] == pytest.approx(stats["r1"] * 4.0 / 2 * 5, rel=1e-5)


def test_non_lazy_r1_is_part_of_the_main_phase():
    t = trainer(r1_gamma=2.0, r1_interval=0)
    stats = t.step()
    assert "loss_Dreg" not in stats and stats["r1"] > 0
    assert t.opt_D.param_groups[0]["lr"] == pytest.approx(1e-3)


# ---- gradient accumulation ----

def test_gradient_accumulation_equals_one_big_batch():
    # the MLP pair has no batch statistics, so micro-batches of 4 must give the batch-16 gradients
    runs = []
    for batch_gpu in (16, 4):
        t = trainer(batch=16, batch_gpu=batch_gpu, r1_gamma=1.0, r1_interval=2, ema_kimg=0.1)
        losses = [t.step()["loss_D"] for _ in range(3)]
        runs.append((losses, params(t.G, t.D, t.ema.module)))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-5, atol=1e-6)


def test_batch_must_split_into_micro_batches():
    with pytest.raises(ValueError, match="batch_gpu"):
        trainer(batch=16, batch_gpu=5)


# ---- non-finite values ----

class PoisonedD(nn.Module):
    """An MLP D whose logits (mode 'loss') or the gradient of its output bias (mode 'grad') turn
    NaN while poisoned; the other gradients stay finite."""

    def __init__(self, D):
        super().__init__()
        self.inner, self.mode, self.c_dim = D, None, 0
        D.out.bias.register_hook(lambda g: g * float("nan") if self.mode == "grad" else g)

    def forward(self, x, c=None):
        y = self.inner(x, c)
        return y * float("nan") if self.mode == "loss" else y


def poisoned_trainer(tmp_path=None, **cfg):
    G, D = mlp_pair()
    return trainer(G=G, D=PoisonedD(D), run_dir=tmp_path, **cfg)


def test_non_finite_loss_skips_the_step_and_leaves_weights_alone():
    t = poisoned_trainer()
    t.step()
    before = params(t.G, t.D)
    t.D.mode = "loss"
    stats = t.step()
    assert stats["skipped"] == 2                                  # D's phase and G's phase
    assert torch.equal(params(t.G, t.D), before)
    t.D.mode = None
    assert t.step()["skipped"] == 0 and t.progress.bad_in_a_row == 0 and t.progress.bad_total == 2


def test_non_finite_gradients_are_skipped_or_cleaned_with_nan_to_num():
    t = poisoned_trainer()
    t.D.mode = "grad"
    before = params(t.D)
    assert t.step()["skipped"] >= 1 and torch.equal(params(t.D), before)
    t = poisoned_trainer(nan_to_num=True)
    t.D.mode = "grad"
    before = params(t.D)
    assert t.step()["skipped"] == 0
    after = params(t.D)
    assert torch.isfinite(after).all() and not torch.equal(after, before)
    assert torch.equal(t.D.inner.out.bias, before[-1:])         # its cleaned gradient was 0: Adam left it


def test_too_many_bad_steps_stop_with_a_clear_error_and_a_good_checkpoint(tmp_path):
    t = poisoned_trainer(tmp_path, max_bad_steps=3)
    t.step()
    good = params(t.G, t.D)
    t.D.mode = "loss"
    t.step()                                      # 2 bad phases
    stats = t.step()                              # 4 >= 3: the run halts on the device, no host read yet
    with pytest.raises(NonFiniteError, match=r"non-finite.*loss_D.*saved"):
        stats["skipped"]                          # the first read of the step's stats raises
    ckpts = list_checkpoints(tmp_path)
    assert len(ckpts) == 1
    G2, D2 = mlp_pair(seed=5)
    t2 = trainer(G=G2, D=PoisonedD(D2), run_dir=tmp_path, max_bad_steps=3)
    t2.resume("auto")
    assert torch.equal(params(t2.G, t2.D), good)


# ---- mixed precision ----

@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_modes_train(amp, tmp_path):
    t = trainer(amp=amp, r1_gamma=1.0, r1_interval=2, run_dir=tmp_path)
    assert (t.scaler_D is not None) == (amp == "fp16")
    for _ in range(2):
        stats = t.step()
    assert all(math.isfinite(v) for v in stats.values())
    t.save()
    if amp == "fp16":                              # the scalers are part of the checkpoint
        G, D = mlp_pair(seed=3)
        t2 = trainer(G=G, D=D, amp=amp, r1_gamma=1.0, r1_interval=2, run_dir=tmp_path)
        t2.resume("auto")
        assert t2.scaler_D.get_scale() == t.scaler_D.get_scale()


# ---- checkpoints and exact resume ----

def test_resume_continues_with_exactly_the_uninterrupted_losses(tmp_path):
    cfg = dict(r1_gamma=1.0, r1_interval=2, ema_kimg=0.05, label_smoothing=0.1, replay_fraction=0.5, replay_size=32)
    full = trainer(**cfg)
    expected = [full.step() for _ in range(6)]

    first = trainer(run_dir=tmp_path, **cfg)
    first.train(steps=3)
    G, D = mlp_pair(seed=9)                                 # different initial weights: all must come from the checkpoint
    resumed = trainer(G=G, D=D, run_dir=tmp_path, **cfg)
    assert resumed.resume("auto").name == "ckpt-000000003"
    got = [resumed.step() for _ in range(3)]
    assert got == expected[3:]
    assert torch.equal(params(resumed.G, resumed.D, resumed.ema.module), params(full.G, full.D, full.ema.module))


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    trainer(run_dir=tmp_path).train(steps=1)
    with pytest.raises(ValueError, match="lr"):
        trainer(run_dir=tmp_path, lr=5e-4).resume("auto")


def test_resume_of_a_checkpoint_written_before_a_config_field_existed(tmp_path):
    # a field added later (schedule, ...) is absent from older checkpoints: they trained with its
    # default, so they resume when this run uses the default, and are refused otherwise
    import json
    trainer(run_dir=tmp_path).train(steps=1)
    meta_path = list_checkpoints(tmp_path)[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("schedule", "pl_style_mixing", "ema_average_buffers"):
        del meta["config"]["training"][key]
    meta_path.write_text(json.dumps(meta))
    assert trainer(run_dir=tmp_path).resume("auto").name == "ckpt-000000001"
    with pytest.raises(ValueError, match="schedule"):
        trainer(run_dir=tmp_path, schedule="nvlabs").resume("auto")


def test_train_by_kimg_and_snapshots(tmp_path):
    t = trainer(run_dir=tmp_path)
    t.train(kimg=0.1, snap_steps=3)                        # 100 images / 16 per step -> 7 steps
    assert t.progress.step == 7
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000003", "ckpt-000000006", "ckpt-000000007"]
    with pytest.raises(ValueError, match="exactly one"):
        t.train()


def test_trainer_rejects_a_path_length_weight_without_a_style_based_G():
    with pytest.raises(ValueError, match="pl_weight"):
        trainer(pl_weight=2.0)


# ---- InfoGAN / ACGAN heads ----

@pytest.mark.parametrize("preset", ["acgan-32", "infogan-32"])
def test_auxiliary_heads_are_trained(preset):
    from ganfast.models import create
    gan = create(preset, seed=0, ngf=8, ndf=8)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8, generator=gen)
    data = InMemoryImages(images, torch.arange(32) % 10, name="noise")
    t = Trainer(gan.G, gan.D, data, TrainingConfig(batch=4, lr=2e-4, betas=(0.5, 0.999), ema_kimg=0))
    stats = t.step()
    key = "aux" if preset == "acgan-32" else "info"
    assert math.isfinite(stats[key]) and math.isfinite(stats[key + "_G"])


# ---- fast ops vs reference ----

def tiny_stylegan2(seed):
    torch.manual_seed(seed)
    return build_stylegan2(resolution=8, z_dim=16, w_dim=16, img_channels=1, channel_base=64, channel_max=16,
                           mapping_layers=2, mbstd_group_size=2)


def test_tiny_stylegan2_trains_alike_on_fast_ops_and_reference():
    gen = torch.Generator().manual_seed(0)
    data = InMemoryImages(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen), None, name="noise")
    cfg = dict(batch=4, r1_gamma=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2, ema_kimg=0.01)
    G, D = tiny_stylegan2(0)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    set_backend(G_ref, "reference")
    set_backend(D_ref, "reference")
    runs = []
    for g, d in ((G, D), (G_ref, D_ref)):
        torch.manual_seed(123)                             # noise inputs, style mixing, penalty sampling
        t = Trainer(g, d, data, TrainingConfig(**cfg))
        runs.append([t.step() for _ in range(4)])
    # The first two steps agree to float32 rounding (measured 1e-7). Later steps drift apart by up
    # to ~1e-3 (measured 1.1e-3 relative on fake_score at step 3), as a float32 and a float64
    # reference run do too: Adam's first updates are about lr * sign(gradient), so a parameter
    # whose exact gradient is ~0 moves by +-lr on rounding noise alone.
    for step, (fast, ref) in enumerate(zip(*runs)):
        assert fast.keys() == ref.keys()
        rel, abs_ = (1e-5, 1e-6) if step < 2 else (1e-2, 1e-3)
        for k in fast:
            assert fast[k] == pytest.approx(ref[k], rel=rel, abs=abs_), (step, k, fast[k], ref[k])
    assert "loss_Greg" in runs[0][0] and "loss_Dreg" in runs[0][0]


def test_a_run_is_fixed_by_its_seed_whatever_the_global_rng_was():
    # stylegan2's steps draw noise inputs, style-mixing cutoffs and path-length noise from the
    # global RNG: the Trainer seeds it from config.seed, so two runs agree whatever ran before
    gen = torch.Generator().manual_seed(0)
    data = InMemoryImages(torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=gen), None, name="noise")
    cfg = dict(batch=4, pl_weight=2.0, pl_interval=1, seed=5)
    runs = []
    for global_seed in (1, 2):
        G, D = tiny_stylegan2(0)
        torch.manual_seed(global_seed)
        t = Trainer(G, D, data, TrainingConfig(**cfg))
        runs.append([t.step() for _ in range(2)] + [params(G, D)])
    assert runs[0][:2] == runs[1][:2] and torch.equal(runs[0][2], runs[1][2])
    G, D = tiny_stylegan2(0)
    t = Trainer(G, D, data, TrainingConfig(**{**cfg, "seed": 6}))
    assert [t.step() for _ in range(2)] != runs[0][:2]           # and the seed matters


def _record_phases(t):
    """Wrap t._timed: a list of (phase, copy of the latents z it sees)."""
    calls, real_timed = [], t._timed

    def timed(name, fn, *args):
        z = t._inputs._buffers.get("z")
        calls.append((name, None if z is None else z.clone()))
        return real_timed(name, fn, *args)
    t._timed = timed
    return calls


@pytest.mark.parametrize("schedule", ["ganfast", "nvlabs"])
def test_schedule_orders_the_phases_and_draws_latents_like_its_namesake(schedule):
    gen = torch.Generator().manual_seed(0)
    data = InMemoryImages(torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=gen), None, name="noise")
    G, D = tiny_stylegan2(0)
    t = Trainer(G, D, data, TrainingConfig(batch=4, r1_gamma=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2,
                                           ema_kimg=1.0, ema_rampup=0.05, schedule=schedule))
    calls = _record_phases(t)
    stats = t.step()
    order = [name for name, _ in calls]
    z = dict(calls)
    if schedule == "nvlabs":
        # stylegan2-ada-pytorch: Gmain, Greg, Dmain, Dreg, each phase with latents of its own, and
        # the EMA beta from cur_nimg before the step: 0 at the start (G_ema copies G)
        assert order == ["G main", "G reg", "D main", "D reg", "EMA"]
        assert not torch.equal(z["G main"], z["G reg"]) and not torch.equal(z["G reg"], z["D main"])
        assert stats["ema_beta"] == 0.0
    else:
        assert order == ["D main", "D reg", "G main", "G reg", "EMA"]
        assert torch.equal(z["G main"], z["G reg"]) and not torch.equal(z["D main"], z["G main"])
        assert stats["ema_beta"] == pytest.approx(0.5 ** (4 / (0.05 * 4)))
    calls.clear()
    t.step()                                   # the lazy phases wait for their interval
    assert [name for name, _ in calls] == (["G main", "D main", "EMA"] if schedule == "nvlabs"
                                           else ["D main", "G main", "EMA"])


def test_nvlabs_switches_reach_the_regularizer_and_the_ema():
    G, D = tiny_stylegan2(0)
    data = InMemoryImages(torch.zeros(8, 1, 8, 8, dtype=torch.uint8), None, name="zeros")
    t = Trainer(G, D, data, TrainingConfig(batch=4, pl_weight=2.0, pl_style_mixing=True, pl_update_w_avg=True,
                                           ema_average_buffers=False))
    assert t.pl.style_mixing and t.pl.update_w_avg and not t.ema.average_buffers
    with pytest.raises(ValueError, match="schedule"):
        TrainingConfig(schedule="nvidia")
    with pytest.raises(ValueError, match="pl_style_mixing"):
        TrainingConfig(pl_style_mixing=1)


# ---- torch.compile of the main phases ----

@pytest.mark.slow
def test_compiled_main_phases_train_like_eager():
    # The main phases run compiled; lazy R1 (a double backward) runs eagerly on the same modules.
    runs = []
    for compile_ in (False, True):
        torch._dynamo.reset()
        t = trainer(r1_gamma=1.0, r1_interval=2, compile=compile_)
        runs.append(([t.step() for _ in range(3)], params(t.G, t.D)))
        if compile_:
            assert t.G_main is not t.G and "loss_Dreg" in runs[-1][0][0]
    for eager, compiled in zip(runs[0][0], runs[1][0]):
        assert eager.keys() == compiled.keys()
        for k in eager:       # Inductor fuses and reorders float ops: equal up to rounding
            assert compiled[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-5), k
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_tiny_stylegan2_trains_under_autocast(amp):
    # bf16: the mapping network stays float32 and biases follow autocast's output dtype.
    # fp16: R1's scaled inner gradient overflows at the GradScaler's first scales; the scaler skips
    # those steps and lowers the scale, and they do not count as bad steps.
    gen = torch.Generator().manual_seed(0)
    data = InMemoryImages(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen), None, name="noise")
    G, D = tiny_stylegan2(0)
    t = Trainer(G, D, data, TrainingConfig(batch=4, r1_gamma=1.0, r1_interval=1, pl_weight=2.0, pl_interval=1,
                                           amp=amp, max_bad_steps=2))
    stats = [t.step() for _ in range(4)]
    assert all(math.isfinite(s["loss_D"]) and math.isfinite(s["loss_G"]) for s in stats)
    assert t.progress.bad_total == 0
    if amp == "fp16":
        assert t.scaler_D.get_scale() < 65536.0            # lowered after the overflows
    else:
        assert all(math.isfinite(s["r1"]) for s in stats)
