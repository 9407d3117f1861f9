"""tools/train_fmnist_classifier.py: a tiny training run on hand-written IDX files."""
import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ganfast.metrics.classifier import load_fmnist_classifier

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_fmnist_classifier.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("train_fmnist_classifier", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_torch_settings():
    """main() sets the thread count and deterministic mode for the whole process; undo that."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _write_idx(path: Path, array: np.ndarray) -> None:
    # Magic: 0, 0, 0x08 (unsigned byte), number of dimensions; then big-endian uint32 sizes.
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_dataset(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        labels = np.arange(n) % 10
        # Class c: a bright square whose side grows with c, so the task is learnable.
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 4:6 + 2 * c, 4:6 + 2 * c] = 200 + rng.integers(0, 50)
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)


def test_missing_files(tool, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not hold the Fashion-MNIST"):
        tool.main(["--root", str(tmp_path), "--out", str(tmp_path / "w.safetensors"), "--epochs", "1"])


def test_tiny_run_writes_loadable_deterministic_weights(tool, tmp_path, capsys, restore_torch_settings):
    _fake_dataset(tmp_path, 60)
    outputs = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for out in outputs:
        assert tool.main(["--root", str(tmp_path), "--out", str(out), "--epochs", "1", "--threads", "1"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    first, second = (load_fmnist_classifier(out) for out in outputs)
    assert first.metadata["epochs"] == "1" and first.metadata["seed"] == "0"
    assert 0.0 <= float(first.metadata["test_accuracy"]) <= 1.0
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
