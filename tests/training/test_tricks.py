"""ganfast.training.tricks: minibatch discrimination against a hand case and a plain loop, and the
experience-replay buffer's capacity, replacement, mixing, gradients, reproducibility and state."""
from __future__ import annotations

import math

import pytest
import torch

from ganfast.training.tricks import ExperienceReplay, MinibatchDiscrimination


# ---------------------------------------------------------------- minibatch discrimination

def minibatch_features_loop(x: torch.Tensor, T: torch.Tensor, num_kernels: int, kernel_dim: int) -> torch.Tensor:
    """o(x) [N, B] by the paper's definition, one pair and one kernel at a time."""
    n = x.shape[0]
    m = (x @ T).view(n, num_kernels, kernel_dim)
    o = torch.zeros(n, num_kernels, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            for b in range(num_kernels):
                o[i, b] += torch.exp(-(m[i, b] - m[j, b]).abs().sum())
    return o


def test_minibatch_discrimination_hand_case():
    layer = MinibatchDiscrimination(1, num_kernels=1, kernel_dim=1)
    with torch.no_grad():
        layer.T.fill_(1.0)                                      # M = x
    x = torch.tensor([[0.0], [1.0], [3.0]])
    expected = torch.tensor([[math.exp(-1) + math.exp(-3)],
                             [math.exp(-1) + math.exp(-2)],
                             [math.exp(-3) + math.exp(-2)]])
    out = layer(x)
    assert out.shape == (3, 2) and torch.equal(out[:, :1], x)
    assert torch.allclose(out[:, 1:], expected, rtol=1e-6)


def test_minibatch_discrimination_matches_a_loop():
    layer = MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3).double()
    x = torch.randn(5, 6, dtype=torch.float64) * 0.3
    out = layer(x)
    assert out.shape == (5, 6 + 4)
    expected = minibatch_features_loop(x, layer.T.detach(), 4, 3)
    assert torch.allclose(out[:, 6:], expected, rtol=1e-12, atol=1e-14), (out[:, 6:] - expected).abs().max()


def test_minibatch_discrimination_counts_look_alikes():
    layer = MinibatchDiscrimination(3, num_kernels=2, kernel_dim=2)
    collapsed = torch.randn(1, 3).repeat(4, 1)                  # 4 identical samples: 3 perfect matches each
    assert torch.allclose(layer(collapsed)[:, 3:], torch.full((4, 2), 3.0))
    assert torch.equal(layer(torch.randn(1, 3))[:, 3:], torch.zeros(1, 2))   # nobody else in the batch


def test_minibatch_discrimination_errors():
    with pytest.raises(ValueError, match="num_kernels"):
        MinibatchDiscrimination(3, 0, 2)
    with pytest.raises(ValueError, match=r"x must be \[N, 3\]"):
        MinibatchDiscrimination(3, 2, 2)(torch.randn(2, 4))


# ---------------------------------------------------------------- experience replay

def batch(start: int, n: int) -> torch.Tensor:
    """n samples [n, 1, 2] whose values name them: sample k is [k, -k]."""
    k = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([k, -k], dim=1)[:, None]


def stored_ids(replay: ExperienceReplay) -> list[int]:
    return sorted(int(v) for v in replay.state_dict()["buffer"][:, 0, 0])


def test_replay_fills_to_capacity_in_order():
    replay = ExperienceReplay(10, replace_prob=0.0)
    replay.push(batch(0, 4))
    replay.push(batch(4, 4))
    assert len(replay) == 8
    replay.push(batch(8, 4))                                    # 2 fit; replace_prob 0 drops the rest
    assert len(replay) == 10 and stored_ids(replay) == list(range(10))
    replay.push(batch(100, 4))
    assert stored_ids(replay) == list(range(10))


def test_replay_replaces_distinct_slots_once_full():
    replay = ExperienceReplay(6, replace_prob=1.0)
    replay.push(batch(0, 6))
    replay.push(batch(100, 4))                                  # every new sample enters, in its own slot
    ids = stored_ids(replay)
    assert len(ids) == 6 and [i for i in ids if i >= 100] == [100, 101, 102, 103]
    replay.push(batch(200, 9))                                  # a batch larger than the buffer
    assert len(replay) == 6 and all(i >= 200 for i in stored_ids(replay))
    assert len(set(stored_ids(replay))) == 6


def test_replay_sample_draws_distinct_stored_samples():
    replay = ExperienceReplay(8)
    replay.push(batch(0, 8))
    drawn = replay.sample(8)[:, 0, 0]
    assert sorted(drawn.tolist()) == list(range(8))             # without replacement: all of them
    assert replay.sample(0).shape == (0, 1, 2)


def test_replay_mix_waits_for_enough_samples():
    replay = ExperienceReplay(8)
    fake = batch(100, 4)
    assert replay.mix(fake) is fake                             # empty buffer
    replay.push(batch(0, 1))
    assert replay.mix(fake, fraction=0.5) is fake               # needs 2, holds 1
    assert replay.mix(fake, fraction=0.25) is not fake          # needs 1


def test_replay_mix_replaces_the_requested_fraction():
    replay = ExperienceReplay(8)
    replay.push(batch(0, 8))
    fake = batch(100, 8).requires_grad_(True)
    mixed = replay.mix(fake, fraction=0.25)
    ids = mixed[:, 0, 0].detach()
    replayed = ids < 100
    assert mixed.shape == fake.shape and int(replayed.sum()) == 2
    assert len(set(ids[replayed].tolist())) == 2                # two distinct stored samples
    assert torch.equal(mixed[~replayed], fake[~replayed].detach())   # the kept rows stay where they were
    mixed.sum().backward()                                      # and keep their graph
    assert torch.equal(fake.grad[:, 0, 0], (~replayed).float())


def test_replay_is_reproducible_under_manual_seed():
    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        replay = ExperienceReplay(5, replace_prob=0.5)
        outputs = []
        for step in range(6):
            fake = batch(10 * step, 4)
            outputs.append(replay.mix(fake))
            replay.push(fake)
        return torch.stack(outputs)
    assert torch.equal(run(3), run(3))


def test_replay_state_round_trip():
    replay = ExperienceReplay(6, replace_prob=0.3)
    replay.push(batch(0, 4))
    restored = ExperienceReplay(6)
    restored.load_state_dict(replay.state_dict())
    assert len(restored) == 4 and restored.replace_prob == 0.3
    assert torch.equal(restored.state_dict()["buffer"], replay.state_dict()["buffer"])
    torch.manual_seed(1)
    expected = replay.mix(batch(100, 4))
    torch.manual_seed(1)
    assert torch.equal(restored.mix(batch(100, 4)), expected)
    empty = ExperienceReplay(6)
    empty.load_state_dict(ExperienceReplay(6).state_dict())
    assert len(empty) == 0
    with pytest.raises(ValueError, match="capacity"):
        ExperienceReplay(7).load_state_dict(replay.state_dict())


def test_replay_errors():
    replay = ExperienceReplay(4)
    with pytest.raises(ValueError, match="capacity"):
        ExperienceReplay(0)
    with pytest.raises(ValueError, match="replace_prob"):
        ExperienceReplay(4, replace_prob=1.5)
    replay.push(batch(0, 2))
    with pytest.raises(ValueError, match=r"n must be an int in \[0, 2\]"):
        replay.sample(3)
    with pytest.raises(ValueError, match=r"fake samples must be \[1, 2\]"):
        replay.push(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="fraction"):
        replay.mix(batch(0, 2), fraction=2.0)
