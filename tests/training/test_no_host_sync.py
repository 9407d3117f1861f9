"""A steady-state training step makes no host synchronization (ganfast.training.loop), and the
device-side decisions that make that possible change nothing in what is trained.

The proof runs on the CPU, where a synchronization costs nothing and so goes unnoticed: every
Python-level entry point through which a device tensor's value reaches the host (Tensor.item,
__bool__, tolist, nonzero, torch.cuda.synchronize, ...; ganfast.testing.host_sync lists them) is
patched to raise when ganfast's code calls it, and whole training steps of the StyleGAN2 recipe (R1
and path length lazily, EMA) and the BigGAN recipe (2 D steps, orthogonal regularization, EMA)
run through it. On a GPU the same code can be captured in CUDA graphs (TrainingConfig(cuda_graphs
=True)); the GPU test at the end compares that against eager steps.
"""
from __future__ import annotations

import copy

import pytest
import torch

import ganfast.models as gm
import ganfast.training.loop as loop
from ganfast.data import InMemoryImages
from ganfast.models.mlp import MLPDiscriminator, MLPGenerator
from ganfast.testing.host_sync import HostSyncError, host_syncs
from ganfast.training.graphs import PhaseRunner, StaticInputs
from ganfast.training.loop import Trainer, TrainingConfig
from ganfast.training.recipes import recipe_for
from ganfast.training.toy import RingOfGaussians

# (preset, family, TrainingConfig overrides): lazy R1 and path length every 2 steps, so the steady
# steps below run them and skip them
PRESETS = [("stylegan2-32-fmnist", "stylegan2", {"r1_interval": 2, "pl_interval": 2}),
           ("biggan-32", "biggan", {})]
PHASES = {"stylegan2": {"D main", "D reg", "G main", "G reg", "EMA"}, "biggan": {"D main", "G main", "EMA"}}


def preset_trainer(preset, family, overrides, batch=2, **model):
    gan = gm.create(preset, seed=0, **model)
    G, D = gan.G, gan.D
    res, ch = G.img_resolution, G.img_channels
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(16) % G.c_dim if G.c_dim else None
    data = InMemoryImages(torch.randint(0, 256, (16, ch, res, res), dtype=torch.uint8, generator=gen), labels,
                          name="noise")
    fields = {**recipe_for(family, res, batch), "batch": batch, **overrides}
    return Trainer(G, D, data, TrainingConfig(**fields))


@pytest.mark.parametrize("preset, family, overrides", PRESETS, ids=[p[0] for p in PRESETS])
def test_steady_state_steps_make_no_host_synchronization(preset, family, overrides):
    t = preset_trainer(preset, family, overrides)
    first = t.step()                  # warm-up: lazy optimizer state, the first call of every phase
    t.phase_seconds.clear()
    with host_syncs(raise_on_sync=True) as found:
        steps = [t.step() for _ in range(2)]        # step 1 skips the lazy phases (every 2), step 2 runs them
        with found.allowed():
            ran = set(t.phase_seconds)
    assert found.count() == 0 and ran == PHASES[family]
    assert t.captured_phases == []                   # eager phases: nothing replayed from a graph
    # the statistics stayed on the device; read now, once per step, and once for the whole tick
    rows = [dict(s) for s in [first] + steps]
    assert all(v == v for row in rows for v in row.values()) and all(row["skipped"] == 0 for row in rows)
    assert ("loss_Dreg" in rows[2] and "loss_Greg" in rows[2] and "loss_Dreg" not in rows[1]) == (family == "stylegan2")
    tick = t.read_stats()
    assert tick["loss_G"] == pytest.approx(sum(row["loss_G"] for row in rows) / 3, rel=1e-5)


def test_the_check_fails_on_a_host_read_inside_a_phase(monkeypatch):
    # The old per-phase check, bool(torch.isfinite(loss)), put back: the proof must catch it.
    original = Trainer._reduce_and_check

    def old_check(self, opt, scaler, loss):
        bad = original(self, opt, scaler, loss)
        bool(torch.isfinite(loss))               # the host read the old loop made in every phase
        return bad

    t = preset_trainer(*PRESETS[0])
    t.step()
    monkeypatch.setattr(Trainer, "_reduce_and_check", old_check)
    with host_syncs() as found:                  # counting: one per optimizer phase (step 1: D main, G main)
        t.step()
    assert [(label, where.split(":")[0]) for label, where in found.events] == [("Tensor.__bool__", "training/loop.py")] * 2
    with host_syncs(raise_on_sync=True), pytest.raises(HostSyncError, match=r"Tensor.__bool__ called from .*loop.py"):
        t.step()


# ---- the device-side decisions change nothing ----

def mlp_trainer(seed=0, D=None, **cfg):
    torch.manual_seed(seed)
    G = MLPGenerator(z_dim=4, hidden=16, layers=2)
    D = MLPDiscriminator(hidden=16, layers=2) if D is None else D(MLPDiscriminator(hidden=16, layers=2))
    cfg = {"batch": 16, "lr": 1e-3, "seed": seed, "r1_gamma": 1.0, "r1_interval": 2, "ema_kimg": 0.05, **cfg}
    return Trainer(G, D, RingOfGaussians(size=512, std=0.05, seed=1), TrainingConfig(**cfg))


class PoisonedD(torch.nn.Module):
    """An MLP D whose logits turn NaN while `poisoned` (a Python flag: no tensor is read)."""

    def __init__(self, D):
        super().__init__()
        self.inner, self.poisoned, self.c_dim = D, False, 0

    def forward(self, x, c=None):
        y = self.inner(x, c)
        return y * float("nan") if self.poisoned else y


def state_of(t):
    """Every parameter, EMA parameter and optimizer state tensor, cloned."""
    out = [p.detach().clone() for p in list(t.G.parameters()) + list(t.D.parameters()) + list(t.ema.module.parameters())]
    for opt in (t.opt_G, t.opt_D):
        for group in opt.param_groups:
            for p in group["params"]:
                out += [v.detach().clone() for v in opt.state[p].values() if torch.is_tensor(v)]
    return out


def host_step_unless(opt, skip):
    """The pre-device-side decision, for comparison: the host reads the flag and skips the call."""
    if not bool(skip):
        opt.step()


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_device_side_skip_trains_exactly_like_the_host_side_skip(monkeypatch, optimizer):
    # Two identical runs with a NaN injected at steps 2 and 3: the device-side skip (the optimizer
    # handed a found-inf flag, or put back with torch.where) against the host deciding as before.
    # Same losses, same `skipped`, same weights and optimizer state, bit for bit.
    cfg = {"optimizer": optimizer, **({"loss": "wgan"} if optimizer == "rmsprop" else {})}
    runs = []
    for host_side in (False, True):
        if host_side:
            monkeypatch.setattr(loop, "step_unless", host_step_unless)
        t = mlp_trainer(D=PoisonedD, **cfg)
        stats = []
        for i in range(6):
            t.D.poisoned = i in (2, 3)
            stats.append(dict(t.step()))
        runs.append((stats, state_of(t)))
    (device_stats, device_state), (host_stats, host_state) = runs
    assert [s["skipped"] for s in device_stats] == [0, 0, 3, 2, 0, 0]     # step 2 also ran the lazy R1
    assert [{k: str(v) for k, v in row.items()} for row in device_stats] == \
           [{k: str(v) for k, v in row.items()} for row in host_stats]          # bit for bit, NaN == NaN
    assert all(torch.equal(a, b) for a, b in zip(device_state, host_state))


def test_a_skipped_step_leaves_weights_and_optimizer_state_alone_without_a_host_read():
    t = mlp_trainer(D=PoisonedD)
    for _ in range(2):
        t.step()
    before = state_of(t)
    t.D.poisoned = True
    with host_syncs(raise_on_sync=True):
        stats = t.step()                       # D main, lazy R1 (due at D step 2) and G main: all non-finite
    after = state_of(t)
    n_g, n_d, n_ema = (sum(1 for _ in m.parameters()) for m in (t.G, t.D, t.ema.module))
    # G, D and both optimizers' states (moments and step counters) are as they were; the EMA still
    # moved towards the (unchanged) G, as it always did on a skipped step
    keep = list(range(n_g + n_d)) + list(range(n_g + n_d + n_ema, len(after)))
    assert len(after) > n_g + n_d + n_ema and all(torch.equal(before[i], after[i]) for i in keep)
    assert stats["skipped"] == 3 and t.progress.bad_in_a_row == 3 and t.progress.bad_total == 3
    t.D.poisoned = False
    assert t.step()["skipped"] == 0 and t.progress.bad_in_a_row == 0 and t.progress.bad_total == 3


def test_statistics_read_per_tick_equal_those_read_per_step():
    # Reading the stats every step (a host read each) or once at the end changes nothing in the
    # training, and the tick read gives the means of the per-step values.
    per_step = mlp_trainer(seed=3)
    rows = [dict(per_step.step()) for _ in range(4)]
    per_tick = mlp_trainer(seed=3)
    for _ in range(4):
        per_tick.step()
    tick = per_tick.read_stats()
    assert all(torch.equal(a, b) for a, b in zip(state_of(per_step), state_of(per_tick)))
    assert tick["loss_Dreg"] == pytest.approx((rows[0]["loss_Dreg"] + rows[2]["loss_Dreg"]) / 2, rel=1e-6)
    for k in ("loss_D", "loss_G", "real_score", "ema_beta", "skipped"):
        assert tick[k] == pytest.approx(sum(r[k] for r in rows) / 4, rel=1e-6, abs=1e-12), k
    assert per_tick.read_stats() == {}          # reset by the read


def test_the_halt_after_max_bad_steps_freezes_the_weights_until_it_is_read():
    t = mlp_trainer(D=PoisonedD, max_bad_steps=3)
    t.step()
    t.D.poisoned = True
    t.step()                                    # 2 bad phases in a row: D main, G main
    t.step()                                    # 5 (D main, lazy R1, G main) >= 3: halted on the device
    frozen = state_of(t)
    t.D.poisoned = False
    with host_syncs(raise_on_sync=True):
        t.step()                                # a clean step, but the run has halted: a no-op on the weights
    n_g, n_d = sum(1 for _ in t.G.parameters()), sum(1 for _ in t.D.parameters())
    assert all(torch.equal(a, b) for a, b in list(zip(frozen, state_of(t)))[:n_g + n_d])
    with pytest.raises(loop.NonFiniteError, match=r"stopped at step 3: 5 phases .*loss_D 2, loss_Dreg 1, loss_G 2"):
        t.read_stats()


def test_cuda_graphs_is_a_clear_error_without_cuda():
    with pytest.raises(ValueError, match=r"cuda_graphs=True .*needs a CUDA device.*cpu"):
        mlp_trainer(cuda_graphs=True)
    with pytest.raises(ValueError, match=r"cuda_graphs=True cannot be combined with amp='fp16'"):
        TrainingConfig(cuda_graphs=True, amp="fp16")
    with pytest.raises(ValueError, match=r"cuda_graphs=True cannot be combined with compile=True"):
        TrainingConfig(cuda_graphs=True, compile=True)
    with pytest.raises(ValueError, match=r"CUDA graphs need a CUDA device"):
        PhaseRunner("D main", dict, torch.device("cpu"), cuda_graphs=True)


def test_static_inputs_keep_their_storage_and_refuse_a_new_shape():
    inputs = StaticInputs()
    a = inputs.fill("real", torch.ones(2, 3), torch.float64)
    b = inputs.fill("real", torch.full((2, 3), 2.0), torch.float64)
    assert a is b and a.dtype == torch.float64 and torch.equal(a, torch.full((2, 3), 2.0, dtype=torch.float64))
    codes = inputs.fill("codes", {"cat": torch.zeros(2, dtype=torch.int64)})
    assert inputs.fill("codes", {"cat": torch.ones(2, dtype=torch.int64)})["cat"] is codes["cat"]
    with pytest.raises(ValueError, match=r"'real' must keep shape \[2, 3\]"):
        inputs.fill("real", torch.ones(4, 3), torch.float64)


# ---- on a GPU: the captured phases train like the eager ones ----

@pytest.mark.gpu
def test_cuda_graph_steps_train_like_eager_steps():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    runs = []
    for graphs in (False, True):
        torch.manual_seed(0)
        G, D = MLPGenerator(z_dim=4, hidden=16, layers=2), MLPDiscriminator(hidden=16, layers=2)
        cfg = TrainingConfig(batch=16, lr=1e-3, r1_gamma=1.0, r1_interval=2, ema_kimg=0.05, cuda_graphs=graphs)
        t = Trainer(G, D, RingOfGaussians(size=512, std=0.05, seed=1), cfg, device="cuda")
        stats = [t.step() for _ in range(12)]          # warm-up, capture of every phase, replays
        runs.append(([dict(s) for s in stats], [p.detach().cpu() for p in t.G.parameters()]))
        if graphs:
            assert {"D main", "D reg", "G main", "EMA"} <= set(t.captured_phases)
    for eager, graph in zip(runs[0][0], runs[1][0]):
        assert eager.keys() == graph.keys()
        for k in eager:
            assert graph[k] == pytest.approx(eager[k], rel=1e-5, abs=1e-6), k
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-5, atol=1e-6)
