"""An endless, resumable, rank-sharded index stream, and the batch iterator built on it.

The stream (the training loop relies on exactly this definition):
    global positions p = 0, 1, 2, ...; with L = dataset length, p lies in epoch e = p // L and
    maps to index perm_e[p % L], where
        perm_e = torch.randperm(L, generator=torch.Generator().manual_seed(seed + e))  if shuffle
        perm_e = arange(L)                                                              otherwise.
    Rank r of W yields positions start + r, start + r + W, start + r + 2W, ...

Consequences: with local batch b, the k-th batch of every rank together is exactly global
positions [start + k*b*W, start + (k+1)*b*W), so W processes see the same images as one process
with batch b*W; and resuming with start = (images consumed so far, all ranks together) continues
the stream where it stopped. Batches are a deterministic function of (dataset, seed, shuffle,
start, rank, world_size, batch_size), whatever num_workers is.
"""
from __future__ import annotations

import itertools
import signal
from typing import Iterator, List, Optional, Tuple

import torch

from .datasets import InMemoryImages

__all__ = ["InfiniteSampler", "batch_iterator"]


def _check_int(where: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields dataset indices forever, following the stream in the module docstring.

    dataset_len: L >= 1; seed: >= 0 (epoch e uses seed + e); shuffle: permute each epoch;
    rank / world_size: this process's share; start: the first global position (resume point).
    """

    def __init__(self, dataset_len: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        super().__init__()
        where = "InfiniteSampler"
        _check_int(where, "dataset_len", dataset_len, 1)
        _check_int(where, "seed", seed, 0)
        _check_int(where, "world_size", world_size, 1)
        _check_int(where, "rank", rank, 0)
        _check_int(where, "start", start, 0)
        if rank >= world_size:
            raise ValueError(f"{where}: rank must be < world_size, got rank={rank}, world_size={world_size}")
        self.dataset_len = dataset_len
        self.seed = seed
        self.shuffle = bool(shuffle)
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self._cached_epoch: Optional[int] = None
        self._cached_permutation: List[int] = []

    def permutation(self, epoch: int) -> List[int]:
        """perm_epoch as a list of L indices (the latest one is cached)."""
        if epoch != self._cached_epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                self._cached_permutation = torch.randperm(self.dataset_len, generator=generator).tolist()
            else:
                self._cached_permutation = list(range(self.dataset_len))
            self._cached_epoch = epoch
        return self._cached_permutation

    def index_at(self, position: int) -> int:
        """The dataset index at global position `position`."""
        epoch, offset = divmod(position, self.dataset_len)
        return self.permutation(epoch)[offset]

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        while True:
            yield self.index_at(position)
            position += self.world_size


def _in_memory_batches(dataset: InMemoryImages, sampler: InfiniteSampler, batch_size: int,
                       pin_memory: bool) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    indices = iter(sampler)
    pin = pin_memory and torch.cuda.is_available()     # as DataLoader: pinning needs an accelerator
    while True:
        images, labels = dataset.get_batch(list(itertools.islice(indices, batch_size)))
        yield (images.pin_memory(), labels.pin_memory()) if pin else (images, labels)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: Ctrl-C reaches the terminal's whole process
    group and a scheduler's SIGTERM often the whole job, but only the main process should act on
    them (finish the step, checkpoint, exit: ganfast.training.run), and it needs its workers to
    finish the step. Workers still exit with the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_iterator(dataset: torch.utils.data.Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                   rank: int = 0, world_size: int = 1, start: int = 0, num_workers: int = 0,
                   pin_memory: bool = False) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless (images float32 [batch_size, C, R, R], labels int64 [batch_size]) batches of this
    rank's share of the InfiniteSampler stream (module docstring), deterministic given
    (seed, shuffle, start, rank, world_size, batch_size).

    In-memory datasets (InMemoryImages: FashionMNIST, NpzImages) take a fast path that gathers each
    batch from the stored tensor with no DataLoader (num_workers is then unused: there is nothing
    to decode); it gives the same batches as the DataLoader path. Other datasets go through a
    torch DataLoader with `num_workers` persistent workers.
    """
    where = "batch_iterator"
    _check_int(where, "batch_size", batch_size, 1)
    _check_int(where, "num_workers", num_workers, 0)
    sampler = InfiniteSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                              start=start)
    if isinstance(dataset, InMemoryImages):
        return _in_memory_batches(dataset, sampler, batch_size, pin_memory)
    # A private generator for the workers' base seed: the DataLoader would otherwise draw it from the
    # global RNG when the iterator starts, which shifts every later random draw of a resumed run.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                         pin_memory=pin_memory, persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(seed + start),
                                         worker_init_fn=_ignore_stop_signals if num_workers else None)
    return iter(loader)
