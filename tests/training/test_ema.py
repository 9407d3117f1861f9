"""ganfast.training.ema: the StyleGAN2-ADA decay (half-life in images, ramp-up), the update
arithmetic, buffers, wrappers, dtypes and the state round trip, each against hand-computed values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ganfast.training.ema import EMA, ema_beta, unwrap_model


def _fill(module: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)
    return module


@pytest.mark.parametrize("cur_nimg, batch_size, half_life_kimg, rampup, expected", [
    (10 ** 9, 64, 0.064, None, 0.5),                  # one half-life (64 images) per batch of 64
    (10 ** 9, 32, 0.064, None, 0.7071067811865476),   # half a half-life per batch: sqrt(1/2)
    (640, 32, 10.0, 0.05, 0.5),                       # ramp-up: half-life min(10000, 640*0.05) = 32
    (0, 32, 10.0, 0.05, 0.0),                         # nothing seen yet: copy the source
    (10 ** 6, 32, 10.0, 0.05, 0.9977843871238888),    # ramp-up over (50000 > 10000): 2**-0.0032
    (10 ** 6, 32, 10.0, None, 0.9977843871238888),
])
def test_beta_matches_hand_values(cur_nimg, batch_size, half_life_kimg, rampup, expected):
    assert ema_beta(cur_nimg, batch_size, half_life_kimg, rampup) == pytest.approx(expected, rel=1e-15, abs=0)


def test_update_moves_parameters_by_beta_towards_the_source():
    source = nn.Linear(1, 1)
    ema = EMA(source, half_life_kimg=0.064, rampup=None, batch_size=64)   # beta = 0.5
    with torch.no_grad():
        source.weight.fill_(1.0), source.bias.fill_(-2.0)
        ema.module.weight.fill_(3.0), ema.module.bias.fill_(2.0)
    assert ema.update(cur_nimg=64) == 0.5
    assert ema.module.weight.item() == 2.0 and ema.module.bias.item() == 0.0     # 1 + .5 (3 - 1), -2 + .5 (2 + 2)
    ema.update(cur_nimg=128)
    assert ema.module.weight.item() == 1.5 and ema.module.bias.item() == -1.0
    assert source.weight.item() == 1.0 and source.bias.item() == -2.0            # the source is untouched


def test_the_gap_halves_every_half_life_and_vanishes_for_a_frozen_source():
    # float64: in float32 the average stalls about ulp / (2 (1 - beta)) short of the source.
    source = _fill(nn.Linear(3, 2).double(), 1.0)
    ema = EMA(source, half_life_kimg=1.0, rampup=None, batch_size=100)       # 10 updates per half-life
    _fill(ema.module, 0.0)
    for i in range(1, 11):
        ema.update(cur_nimg=100 * i)
    assert torch.allclose(ema.module.weight, torch.full((2, 3), 0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    for i in range(11, 301):
        ema.update(cur_nimg=100 * i)
    gap = (1.0 - ema.module.weight).max().item()
    assert gap == pytest.approx(2.0 ** -30, rel=1e-9)                         # 30 half-lives


def test_rampup_makes_early_averages_follow_the_source():
    with_rampup = EMA(_fill(nn.Linear(1, 1), 0.0), half_life_kimg=10.0, rampup=0.05, batch_size=32)
    without = EMA(with_rampup.source, half_life_kimg=10.0, rampup=None, batch_size=32)
    _fill(with_rampup.source, 1.0)
    with_rampup.update(cur_nimg=320)      # half-life 320 * 0.05 = 16 images: beta = 0.5 ** 2
    without.update(cur_nimg=320)          # half-life 10000 images
    assert with_rampup.module.weight.item() == 0.75
    assert without.module.weight.item() < 0.01


def _bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


@pytest.mark.parametrize("average_buffers, expected_mean", [(True, [1.0, 2.0]), (False, [2.0, 4.0])])
def test_float_buffers_averaged_or_copied_integer_buffers_always_copied(average_buffers, expected_mean):
    source = _bn_model()
    ema = EMA(source, half_life_kimg=0.064, rampup=None, batch_size=64, average_buffers=average_buffers)
    bn, bn_ema = source[1], ema.module[1]
    bn.running_mean.copy_(torch.tensor([2.0, 4.0]))
    bn.num_batches_tracked.fill_(5)
    bn_ema.running_mean.zero_()
    ema.update(cur_nimg=64)               # beta = 0.5
    assert bn_ema.running_mean.tolist() == expected_mean
    assert bn_ema.num_batches_tracked.item() == 5 and bn_ema.num_batches_tracked.dtype == torch.int64


def test_copy_is_frozen_in_eval_mode_and_update_builds_no_graph():
    source = _bn_model().train()
    ema = EMA(source, batch_size=4)
    assert not ema.module.training and source.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in source.parameters())
    source(torch.randn(4, 2)).sum().backward()
    ema.update(cur_nimg=4)
    assert all(p.grad is None and p.grad_fn is None for p in ema.module.parameters())
    with torch.no_grad():
        source[0].weight.add_(1.0)        # a deep copy: the source's later changes wait for update()
    assert not torch.equal(ema.module[0].weight, source[0].weight)


def test_ema_in_float64_of_a_float32_source():
    source = _fill(nn.Linear(2, 2), 0.375)
    ema = EMA(source, half_life_kimg=0.064, rampup=None, batch_size=64)
    ema.module.double()
    _fill(ema.module, 1.0)
    ema.update(cur_nimg=64)
    assert ema.module.weight.dtype == torch.float64
    assert torch.equal(ema.module.weight, torch.full((2, 2), 0.6875, dtype=torch.float64))   # (.375 + 1) / 2


class _CompiledLike(nn.Module):
    """What torch.compile returns, as far as unwrapping goes: the model under `_orig_mod`."""

    def __init__(self, inner):
        super().__init__()
        self._orig_mod = inner


def test_wrappers_are_unwrapped_so_names_match_the_bare_model():
    bare = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(bare)) is bare
    assert unwrap_model(_CompiledLike(nn.DataParallel(bare))) is bare
    ema = EMA(nn.DataParallel(bare), half_life_kimg=0.064, rampup=None, batch_size=64)
    assert list(ema.state_dict()) == ["weight", "bias"]
    _fill(bare, 2.0), _fill(ema.module, 0.0)
    ema.update(cur_nimg=64)
    assert torch.equal(ema.module.weight, torch.full((2, 2), 1.0))


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ddp_wrapped_source(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        bare = nn.Linear(2, 2)
        ema = EMA(nn.parallel.DistributedDataParallel(bare), half_life_kimg=0.064, rampup=None, batch_size=64)
        assert list(ema.state_dict()) == ["weight", "bias"]
        _fill(bare, 4.0), _fill(ema.module, 0.0)
        ema.update(cur_nimg=64)
        assert torch.equal(ema.module.bias, torch.full((2,), 2.0))
    finally:
        dist.destroy_process_group()


def test_state_round_trip_and_strict_loading():
    source = _bn_model()
    ema = EMA(source, batch_size=8)
    source(torch.randn(8, 2))             # moves the running statistics
    _fill(source, 0.5)
    for i in range(1, 4):
        ema.update(cur_nimg=8 * i)
    other = EMA(_bn_model(), batch_size=8)
    other.load_state_dict(ema.state_dict())
    for key, value in ema.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key

    state = ema.state_dict()
    with pytest.raises(ValueError, match=r"'0.weight' has shape \[3, 2\] in the state dict, \[2, 2\] here"):
        other.load_state_dict({**state, "0.weight": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match=r"absent from the state dict \['1.running_var'\], keys the module lacks \[\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})


def test_bad_arguments_raise_value_errors():
    model = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="half_life_kimg"):
        EMA(model, half_life_kimg=0.0)
    with pytest.raises(ValueError, match="rampup"):
        EMA(model, rampup=-0.05)
    with pytest.raises(ValueError, match="batch_size"):
        EMA(model, batch_size=0)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        EMA(torch.zeros(2))
    with pytest.raises(ValueError, match="batch_size is required"):
        EMA(model).update(cur_nimg=10)
    with pytest.raises(ValueError, match="cur_nimg"):
        ema_beta(-1, 32, 10.0, 0.05)
    ema = EMA(nn.Sequential(nn.Linear(1, 1)), batch_size=1)
    ema.source.append(nn.Linear(1, 1))    # the source changed after the copy was made
    with pytest.raises(ValueError, match="no longer match"):
        ema.update(cur_nimg=1)
