"""InfiniteSampler against the stream's definition written out by hand, rank sharding, resume,
and batch_iterator's two paths (in-memory fast path and DataLoader)."""
import itertools
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ganfast.data import ImageFolder, InfiniteSampler, InMemoryImages, ZipImages, batch_iterator


def take(iterable, count):
    return list(itertools.islice(iterable, count))


def hand_built_stream(length, seed, epochs):
    """The definition: epoch e is randperm(L) under a generator seeded with seed + e."""
    stream = []
    for epoch in range(epochs):
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        stream.extend(torch.randperm(length, generator=generator).tolist())
    return stream


def test_stream_matches_its_definition():
    expected = hand_built_stream(7, seed=3, epochs=4)
    assert take(InfiniteSampler(7, seed=3), 28) == expected
    # Each epoch is a permutation, and consecutive epochs differ (seed + e changes).
    assert all(sorted(expected[e * 7:(e + 1) * 7]) == list(range(7)) for e in range(4))
    assert expected[:7] != expected[7:14]


def test_no_shuffle_is_arange_repeated():
    assert take(InfiniteSampler(4, shuffle=False), 10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert take(InfiniteSampler(4, shuffle=False, rank=1, world_size=3, start=2), 4) == [3, 2, 1, 0]


def test_start_offset_resumes_exactly_across_epoch_boundaries():
    whole = take(InfiniteSampler(5, seed=11), 40)
    for start in (0, 3, 5, 9, 23):
        assert take(InfiniteSampler(5, seed=11, start=start), 40 - start) == whole[start:]
    # Position 4 is the last of epoch 0, position 5 the first of epoch 1 (seed 12).
    assert take(InfiniteSampler(5, seed=11, start=4), 2) == [hand_built_stream(5, 11, 1)[4],
                                                             hand_built_stream(5, 12, 1)[0]]


@pytest.mark.parametrize("world_size,start", [(2, 0), (3, 7)])
def test_ranks_together_are_the_single_process_stream(world_size, start):
    local_batch, steps = 3, 6
    single = take(InfiniteSampler(10, seed=5, start=start), local_batch * world_size * steps)
    per_rank = [take(InfiniteSampler(10, seed=5, rank=r, world_size=world_size, start=start), local_batch * steps)
                for r in range(world_size)]
    for k in range(steps):
        global_batch = single[k * local_batch * world_size:(k + 1) * local_batch * world_size]
        # Rank r's j-th item of batch k is global position start + k*b*W + j*W + r.
        for r in range(world_size):
            assert per_rank[r][k * local_batch:(k + 1) * local_batch] == global_batch[r::world_size]
        assert sorted(sum((p[k * local_batch:(k + 1) * local_batch] for p in per_rank), [])) == sorted(global_batch)


def test_sampler_argument_errors():
    for kwargs, message in (({"dataset_len": 0}, "dataset_len"), ({"dataset_len": 4.0}, "dataset_len"),
                            ({"dataset_len": 4, "rank": 2, "world_size": 2}, "rank"),
                            ({"dataset_len": 4, "world_size": 0}, "world_size"),
                            ({"dataset_len": 4, "seed": -1}, "seed"), ({"dataset_len": 4, "start": -3}, "start")):
        with pytest.raises(ValueError, match=message):
            InfiniteSampler(**kwargs)


class Wrapped(torch.utils.data.Dataset):
    """The same items, but not an InMemoryImages: batch_iterator must take the DataLoader path."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        return self.inner[index]


def small_in_memory(xflip=True):
    images = torch.randint(0, 256, (9, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return InMemoryImages(images, torch.arange(9) % 3, name="toy", xflip=xflip)


def test_fast_path_equals_dataloader_path():
    dataset = small_in_memory()                      # 18 items with xflip; 5 batches of 7 cross epochs
    fast = take(batch_iterator(dataset, 7, seed=2, start=4), 5)
    slow = take(batch_iterator(Wrapped(dataset), 7, seed=2, start=4), 5)
    for (fast_images, fast_labels), (slow_images, slow_labels) in zip(fast, slow):
        assert fast_images.shape == (7, 1, 4, 4) and fast_images.dtype == torch.float32
        assert fast_labels.shape == (7,) and fast_labels.dtype == torch.int64
        assert torch.equal(fast_images, slow_images) and torch.equal(fast_labels, slow_labels)


def test_batches_follow_the_stream_and_resume():
    dataset = small_in_memory()
    batches = take(batch_iterator(dataset, 4, seed=9), 6)
    positions = take(InfiniteSampler(len(dataset), seed=9), 24)
    for k, (images, labels) in enumerate(batches):
        expected = torch.stack([dataset[i][0] for i in positions[4 * k:4 * k + 4]])
        assert torch.equal(images, expected)
    resumed = take(batch_iterator(dataset, 4, seed=9, start=3 * 4), 3)
    for (a, la), (b, lb) in zip(resumed, batches[3:]):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # Two ranks with batch 2 each: their k-th batches are the single-rank batch 4's halves.
    rank_batches = [take(batch_iterator(dataset, 2, seed=9, rank=r, world_size=2), 6) for r in range(2)]
    for k, (images, _) in enumerate(batches):
        assert torch.equal(images[0::2], rank_batches[0][k][0]) and torch.equal(images[1::2], rank_batches[1][k][0])


@pytest.mark.parametrize("container", ["folder", "zip"])
def test_dataloader_workers_give_the_same_batches(tmp_path, container):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for index in range(6):
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    if container == "zip":
        with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
            for path in sorted(root.rglob("*.png")):
                archive.write(path, path.relative_to(root).as_posix())
        # Opened here (at construction) and again in each worker: a handle shared across fork would race.
        dataset = ZipImages(tmp_path / "images.zip", 4, xflip=True)
    else:
        dataset = ImageFolder(root, 4, xflip=True)
    assert dataset.num_classes == 2
    serial = take(batch_iterator(dataset, 5, seed=1), 4)
    parallel = take(batch_iterator(dataset, 5, seed=1, num_workers=2), 4)
    for (a, la), (b, lb) in zip(serial, parallel):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_batch_iterator_argument_errors():
    dataset = small_in_memory()
    with pytest.raises(ValueError, match="batch_size"):
        batch_iterator(dataset, 0)
    with pytest.raises(ValueError, match="num_workers"):
        batch_iterator(dataset, 2, num_workers=-1)
    with pytest.raises(ValueError, match="rank"):
        batch_iterator(dataset, 2, rank=1)
    with pytest.raises(IndexError):
        dataset.get_batch([18])


class _SignalDispositions(torch.utils.data.Dataset):
    """Each item reports whether SIGINT and SIGTERM are ignored in the process that loads it."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        import signal
        ignored = [signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]
        return torch.tensor(ignored, dtype=torch.float32), index


def test_loader_workers_ignore_stop_signals_and_the_main_process_keeps_its_handlers():
    # Ctrl-C reaches every process of the terminal's group: the workers must not die of it while
    # the main process finishes its step and checkpoints (ganfast.training.run)
    import signal
    # a background job of a non-interactive shell starts with SIGINT ignored: give this process
    # Python's own handlers for the test, so "the main process keeps its handlers" means something
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        images, _ = next(batch_iterator(_SignalDispositions(), 4, num_workers=1))
        assert images.tolist() == [[1.0, 1.0]] * 4
        images, _ = next(batch_iterator(_SignalDispositions(), 4, num_workers=0))
        assert images.tolist() == [[0.0, 0.0]] * 4 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited[0])
        signal.signal(signal.SIGTERM, inherited[1])
