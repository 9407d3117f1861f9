"""Training tricks against mode collapse: minibatch discrimination (Salimans et al. 2016) and
experience replay of generated samples (Shrivastava et al. 2017)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["MinibatchDiscrimination", "ExperienceReplay"]


def _check_positive_int(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


def _check_unit_interval(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{who}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, section 3.2): x [N, A] -> cat(x, o(x)) [N, A + B].

    With T [A, B * C] (B = num_kernels, C = kernel_dim), M = (x T) viewed as [N, B, C] and
        c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1),
        o(x_i)_b = sum_{j != i} c_b(x_i, x_j)
    i.e. the sum over the whole batch minus 1, the sample's similarity to itself (exp(0) = 1), so a
    batch of one gives o = 0 and a collapsed batch of N identical samples gives N - 1. D sees how
    close each sample is to the rest of its batch and can reject a batch that lacks diversity.
    Put it before D's last linear layer; the cost is O(N^2 B C).
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int):
        super().__init__()
        who = "MinibatchDiscrimination"
        self.in_features = _check_positive_int(who, "in_features", in_features)
        self.num_kernels = _check_positive_int(who, "num_kernels", num_kernels)
        self.kernel_dim = _check_positive_int(who, "kernel_dim", kernel_dim)
        # N(0, 1/A): M's entries start at about x's scale whatever A is, so the similarities
        # exp(-L1) start neither all 1 nor all underflowed to 0.
        self.T = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) / in_features ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.in_features:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MinibatchDiscrimination: x must be [N, {self.in_features}], got {got}")
        m = (x @ self.T.to(x.dtype)).view(x.shape[0], self.num_kernels, self.kernel_dim)     # [N, B, C]
        l1 = (m[:, None] - m[None, :]).abs().sum(3)                                           # [N, N, B]
        o = torch.exp(-l1).sum(1) - 1                                                         # [N, B]
        return torch.cat([x, o], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}"


class ExperienceReplay:
    """A bounded buffer of past generated samples to show D again (Shrivastava et al. 2017), so D
    cannot forget what G produced a few steps ago and G cannot cycle between modes.

    push(fake) stores samples: while the buffer has room they are appended; once it holds
    `capacity`, each new sample replaces a uniformly chosen stored one with probability
    replace_prob (random replacement: old samples fade out geometrically). mix(fake, fraction)
    returns D's fake batch with round(fraction * N) random rows swapped for stored samples, once
    the buffer holds at least that many (before that, fake unchanged). Per D step:
        d_fake = replay.mix(fake.detach()); replay.push(fake)      # mix first: replay older samples
    Every random choice comes from torch's global CPU generator, so torch.manual_seed reproduces
    it on any device. state_dict / load_state_dict carry the buffer for checkpoints.
    """

    def __init__(self, capacity: int, replace_prob: float = 0.5):
        self.capacity = _check_positive_int("ExperienceReplay", "capacity", capacity)
        self.replace_prob = _check_unit_interval("ExperienceReplay", "replace_prob", replace_prob)
        self.buffer: Optional[torch.Tensor] = None      # [capacity, ...], allocated at the first push
        self.size = 0                                    # rows of buffer in use

    def __len__(self) -> int:
        return self.size

    def _check_batch(self, who: str, fake: torch.Tensor) -> None:
        if not isinstance(fake, torch.Tensor) or fake.ndim < 2 or fake.shape[0] == 0:
            got = list(fake.shape) if isinstance(fake, torch.Tensor) else type(fake).__name__
            raise ValueError(f"ExperienceReplay.{who}: fake must be a batch [N, ...] with N >= 1, got {got}")
        if self.buffer is not None and fake.shape[1:] != self.buffer.shape[1:]:
            raise ValueError(f"ExperienceReplay.{who}: fake samples must be {list(self.buffer.shape[1:])} like "
                             f"the stored ones, got {list(fake.shape[1:])}")

    @torch.no_grad()
    def push(self, fake: torch.Tensor) -> None:
        """Store the samples of fake [N, ...] (detached copies)."""
        self._check_batch("push", fake)
        fake = fake.detach()
        if self.buffer is None:
            self.buffer = fake.new_empty((self.capacity,) + tuple(fake.shape[1:]))
        fake = fake.to(self.buffer.dtype)
        appended = min(self.capacity - self.size, fake.shape[0])
        self.buffer[self.size:self.size + appended] = fake[:appended]
        self.size += appended
        rest = fake[appended:]
        if rest.shape[0] == 0:
            return
        chosen = (torch.rand(rest.shape[0]) < self.replace_prob).nonzero()[:, 0]
        # distinct slots, so no two samples race for one (index writes with repeats are
        # nondeterministic on GPUs); a batch larger than the buffer keeps its first `capacity` picks
        chosen = chosen[:self.capacity]
        slots = torch.randperm(self.capacity)[:chosen.shape[0]]
        self.buffer[slots.to(self.buffer.device)] = rest[chosen.to(rest.device)]

    @torch.no_grad()
    def query(self, fake: torch.Tensor) -> torch.Tensor:
        """CycleGAN's history of generated images (Zhu et al. 2017, after Shrivastava et al.): D's
        fake batch for fake [N, ...] (a new tensor, detached). While the buffer has room a sample
        is stored and shown as it is; once full, each sample is, with probability replace_prob,
        swapped with a random stored one (D sees the old one, the new one takes its slot), else
        shown as it is. The slots swapped in one call are distinct (the reference draws them
        independently; with 50 slots a repeat within a small batch is rare and only changes which
        old sample survives). Host-side decisions come from the global CPU generator (no device
        read), as in push."""
        self._check_batch("query", fake)
        fake = fake.detach()
        if self.buffer is None:
            self.buffer = fake.new_empty((self.capacity,) + tuple(fake.shape[1:]))
        out = fake.clone()
        stored = min(self.capacity - self.size, fake.shape[0])
        self.buffer[self.size:self.size + stored] = fake[:stored].to(self.buffer.dtype)
        self.size += stored
        rest = fake.shape[0] - stored
        if rest == 0:
            return out
        chosen = (torch.rand(rest) < self.replace_prob).nonzero()[:, 0][:self.capacity] + stored
        if chosen.numel() == 0:
            return out
        slots = torch.randperm(self.capacity)[:chosen.numel()].to(self.buffer.device)
        chosen = chosen.to(fake.device)
        out[chosen] = self.buffer[slots].to(fake.dtype)
        self.buffer[slots] = fake[chosen].to(self.buffer.dtype)
        return out

    def sample(self, n: int) -> torch.Tensor:
        """n distinct stored samples [n, ...], drawn uniformly; needs n <= len(self)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > self.size:
            raise ValueError(f"ExperienceReplay.sample: n must be an int in [0, {self.size}] (the samples "
                             f"stored), got {n!r}")
        if self.buffer is None:
            raise ValueError("ExperienceReplay.sample: nothing has been pushed yet")
        rows = torch.randperm(self.size)[:n]
        return self.buffer[rows.to(self.buffer.device)]

    def mix(self, fake: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
        """fake [N, ...] with round(fraction * N) random rows replaced by stored samples (a new
        tensor; the kept rows keep their autograd graph). Returns fake itself until the buffer
        holds that many samples."""
        self._check_batch("mix", fake)
        _check_unit_interval("ExperienceReplay.mix", "fraction", fraction)
        replaced = round(fraction * fake.shape[0])
        if replaced == 0 or replaced > self.size:
            return fake
        rows = torch.randperm(fake.shape[0])[:replaced].to(fake.device)
        return fake.index_copy(0, rows, self.sample(replaced).to(fake.device, fake.dtype))

    def state_dict(self) -> dict:
        buffer = self.buffer[:self.size].clone() if self.buffer is not None else None
        return {"capacity": self.capacity, "replace_prob": self.replace_prob, "buffer": buffer}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"capacity", "replace_prob", "buffer"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"ExperienceReplay.load_state_dict: state must have keys buffer, capacity, "
                             f"replace_prob, got {got}")
        if state["capacity"] != self.capacity:
            raise ValueError(f"ExperienceReplay.load_state_dict: the state's capacity {state['capacity']} differs "
                             f"from this buffer's {self.capacity}")
        replace_prob = _check_unit_interval("ExperienceReplay.load_state_dict", "replace_prob", state["replace_prob"])
        stored = state["buffer"]
        if stored is not None and (not isinstance(stored, torch.Tensor) or stored.ndim < 2
                                   or stored.shape[0] > self.capacity):
            got = list(stored.shape) if isinstance(stored, torch.Tensor) else type(stored).__name__
            raise ValueError(f"ExperienceReplay.load_state_dict: buffer must be None or [n <= {self.capacity}, ...], "
                             f"got {got}")
        # checked in full before anything changes, so a bad state leaves this buffer as it was
        self.replace_prob = replace_prob
        if stored is None:
            self.buffer, self.size = None, 0
        else:
            self.buffer = stored.new_empty((self.capacity,) + tuple(stored.shape[1:]))
            self.buffer[:stored.shape[0]] = stored
            self.size = stored.shape[0]

    def __repr__(self) -> str:
        return f"ExperienceReplay(capacity={self.capacity}, replace_prob={self.replace_prob}, size={self.size})"
