"""Hostile data (issue 26): zip members with absolute / '..' / backslash / drive-letter names,
duplicates, symlink entries and bomb-sized members; images whose header declares a huge pixel
count; truncated, empty and non-image files; FIFOs and symlinks out of an image folder; pickled
.npz arrays; damaged Fashion-MNIST files. Each is refused or skipped with one warning naming it,
and training goes on. Every file is made here, in tmp_path."""
import gzip
import io
import os
import stat
import struct
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ganfast.data.fashion_mnist as fm
from ganfast.data import FashionMNIST, ImageFolder, NpzImages, ZipImages, batch_iterator, open_dataset, read_idx
from ganfast.data.datasets import DEFAULT_MAX_PIXELS

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def png_bytes(color=RED, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png_bytes(seed=0, size=(16, 16)) -> bytes:
    """Random pixels: the IDAT is as long as the pixels, so cutting the file in half cuts the data."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, "PNG")
    return buffer.getvalue()


def truncated_png_bytes() -> bytes:
    """A PNG whose header is intact (Image.open succeeds) and whose pixel data is cut short."""
    data = noise_png_bytes(seed=1)
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png_bytes(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose IHDR declares width x height 8-bit gray pixels (a one-colour image
    that size compresses to little more; decoding it would take width * height bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def write_zip(path: Path, members) -> Path:
    """members: (name, bytes) or (ZipInfo, bytes); written in order (duplicates allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def patch_central_directory(path: Path, name: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of `name`'s central-directory record (offset from its PK\\1\\2 signature),
    as a hand-made or hostile archive would have it; zipfile's writer never produces these."""
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")
    while start >= 0:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46:start + 46 + name_len].decode() == name:
            struct.pack_into(fmt, data, start + offset, value)
            path.write_bytes(bytes(data))
            return
        start = data.find(b"PK\x01\x02", start + 46)
    raise AssertionError(f"{name} not in {path}")


def construct_with_warnings(factory):
    """(dataset, [warning messages]) with every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = factory()
    return dataset, [str(w.message) for w in caught]


def color_of(image: torch.Tensor):
    """The RGB uint8 colour of a constant image item float32 [3, R, R]."""
    values = ((image + 1) * 127.5).round().to(torch.int64)
    assert bool((values == values[:, :1, :1]).all()), "not a constant image"
    return tuple(int(v) for v in values[:, 0, 0])


# ---------------------------------------------------------------- zip members

@pytest.mark.parametrize("name, reason", [
    ("/etc/x.png", "absolute path"),
    ("../up.png", "'..' component"),
    ("cats/../../x.png", "'..' component"),
    ("..\\windows.png", "backslash"),
    ("cats\\x.png", "backslash"),
    ("C:/drive.png", "drive letter"),
    ("c:relative.png", "drive letter"),
])
def test_zip_member_with_hostile_name_is_refused(tmp_path, name, reason):
    archive = write_zip(tmp_path / "data.zip", [("cats/a.png", png_bytes(RED)), ("dogs/b.png", png_bytes(BLUE)),
                                                 (name, png_bytes(GREEN))])
    dataset, messages = construct_with_warnings(lambda: ZipImages(archive, 4))
    assert len(messages) == 1 and f"{archive}:{name} ({reason}" in messages[0], messages
    assert dataset.skipped_files == [f"{archive}:{name}"]
    # the name created no class ('', '..', 'C:' ...) and its image is never read
    assert len(dataset) == 2 and dataset.class_names == ("cats", "dogs")
    assert sorted(color_of(dataset[i][0]) for i in range(2)) == sorted([RED, BLUE])


def test_zip_duplicates_symlinks_and_encrypted_members_are_refused(tmp_path):
    link = zipfile.ZipInfo("cats/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16           # how `zip -y` stores a symlink
    archive = write_zip(tmp_path / "data.zip", [
        ("cats/a.png", png_bytes(RED)), ("dogs/b.png", png_bytes(BLUE)),
        ("dogs/dup.png", png_bytes(GREEN)), ("dogs/dup.png", png_bytes(RED)),   # which one would be read?
        (link, b"../../../etc/passwd"),
        ("cats/secret.png", png_bytes(GREEN)),
        ("notes/../../x.txt", b"not an image name: never read, not reported")])
    patch_central_directory(archive, "cats/secret.png", 8, "<H", 0x1)        # general purpose bit 0: encrypted
    dataset, messages = construct_with_warnings(lambda: ZipImages(archive, 4))
    assert len(messages) == 1, messages
    assert "dup.png (the name occurs 2 times" in messages[0]
    assert "link.png (symlink entry)" in messages[0] and "secret.png (encrypted)" in messages[0]
    assert "x.txt" not in messages[0]
    assert sorted(dataset.skipped_files) == sorted(f"{archive}:{m}" for m in
                                                   ("dogs/dup.png", "cats/link.png", "cats/secret.png"))
    assert len(dataset) == 2 and dataset.class_names == ("cats", "dogs")


def test_zip_bomb_members_are_refused_from_their_declared_sizes(tmp_path):
    archive = write_zip(tmp_path / "data.zip", [("a.png", png_bytes(RED)), ("huge.png", png_bytes(GREEN)),
                                                 ("ratio.png", png_bytes(BLUE)), ("small.png", png_bytes(BLUE))])
    patch_central_directory(archive, "huge.png", 24, "<I", 0xF0000000)    # ~4 GB uncompressed declared
    patch_central_directory(archive, "ratio.png", 24, "<I", 64 << 20)     # 64 MiB out of a few hundred bytes
    dataset, messages = construct_with_warnings(lambda: ZipImages(archive, 4))
    assert len(messages) == 1, messages
    assert f"huge.png (declares {0xF0000000} bytes uncompressed, more than {2 ** 30})" in messages[0]
    assert "ratio.png (declares 67108864 bytes uncompressed from" in messages[0] and "1100:1" in messages[0]
    assert dataset.names == ["a.png", "small.png"]                   # an honest stored member passes


# ---------------------------------------------------------------- decompression-bomb images

def test_huge_image_skipped_from_its_header_by_ganfasts_own_limit(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(RED))
    (folder / "bomb.png").write_bytes(bomb_png_bytes(30000, 30000))
    (folder / "big.png").write_bytes(bomb_png_bytes(10000, 10000))   # above ours, below Pillow's error
    limit_before = Image.MAX_IMAGE_PIXELS
    dataset, messages = construct_with_warnings(lambda: ImageFolder(folder, 4))
    # one warning (Pillow's DecompressionBombWarning about big.png is not a second one) naming both
    assert len(messages) == 1, messages
    assert (f"big.png (_ImageTooLarge: 10000x10000 = 100000000 pixels declared, more than "
            f"max_pixels={DEFAULT_MAX_PIXELS}") in messages[0]
    assert "bomb.png (DecompressionBombError: Image size (900000000 pixels)" in messages[0]   # Pillow's is first
    assert dataset.names == ["good.png"] and Image.MAX_IMAGE_PIXELS == limit_before
    # a user who switched Pillow's check off still has ganfast's
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    dataset, messages = construct_with_warnings(lambda: ImageFolder(folder, 4))
    assert len(messages) == 1 and "bomb.png (_ImageTooLarge: 30000x30000 = 900000000 pixels" in messages[0], messages
    assert dataset.names == ["good.png"]


def test_max_pixels_boundary_argument_and_recheck_at_decode_time(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(RED, (8, 8)))
    (folder / "b.png").write_bytes(png_bytes(BLUE, (8, 8)))
    (folder / "c.png").write_bytes(png_bytes(BLUE, (9, 8)))
    dataset, messages = construct_with_warnings(lambda: ImageFolder(folder, 4, max_pixels=64))
    assert len(messages) == 1 and "c.png (_ImageTooLarge: 9x8 = 72 pixels declared, more than max_pixels=64" \
        in messages[0], messages
    assert dataset.names == ["a.png", "b.png"]                     # 8 x 8 = 64 is allowed
    with pytest.raises(ValueError, match="max_pixels"):
        ImageFolder(folder, 4, max_pixels=0)
    with pytest.raises(ValueError, match="max_pixels"):
        open_dataset(folder, 4, max_pixels=2.5)
    # a file that grew after construction is refused when it is read, from its header
    (folder / "b.png").write_bytes(png_bytes(GREEN, (20, 20)))
    with pytest.warns(UserWarning, match=r"b.png \(_ImageTooLarge: 20x20 = 400 pixels") as caught:
        image, _ = dataset[1]
    assert len(caught) == 1 and color_of(image) == RED              # a.png in its place


def test_every_image_above_max_pixels_is_an_error_naming_the_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(RED, (8, 8)))
    with pytest.warns(UserWarning, match="a.png"), pytest.raises(ValueError, match=r"none of the 1 image files in directory .*imgs'"):
        ImageFolder(folder, 4, max_pixels=63)


# ---------------------------------------------------------------- broken files in a folder

def test_non_images_empty_files_fifos_and_image_named_folders(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(RED))
    (folder / "text.png").write_text("hello, I am a text file")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "x.png").mkdir()                                      # a folder: walked, never opened
    os.mkfifo(folder / "pipe.png")                                  # opening it would block forever
    dataset, messages = construct_with_warnings(lambda: ImageFolder(folder, 4))
    assert len(messages) == 1, messages
    for name in ("text.png (UnidentifiedImageError", "empty.jpg (UnidentifiedImageError",
                 "pipe.png (not a regular file"):
        assert f"{folder / name}" in messages[0]
    assert "x.png" not in messages[0].replace("text.png", "")
    assert dataset.names == ["good.png"] and dataset.num_skipped == 3


def test_symlinks_out_of_the_folder_are_refused_and_loops_end(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(GREEN))
    root = tmp_path / "pets"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "a.png").write_bytes(png_bytes(RED))
    (root / "dogs" / "b.png").write_bytes(png_bytes(BLUE))
    (root / "cats" / "link.png").symlink_to(outside / "secret.png")         # out: refused
    (root / "dogs" / "elsewhere").symlink_to(outside, target_is_directory=True)   # out: not followed
    (root / "cats" / "broken.png").symlink_to(tmp_path / "nowhere.png")     # broken: refused
    (root / "cats" / "also_b.png").symlink_to(root / "dogs" / "b.png")      # inside: kept
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)     # a loop: not walked again
    (root / "dogs" / ".hidden").symlink_to(outside, target_is_directory=True)   # hidden: ignored silently
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)                       # the root itself may be a link
    for path in (root, alias):
        dataset, messages = construct_with_warnings(lambda: ImageFolder(path, 4))
        assert len(messages) == 1, messages
        assert f"{path / 'cats' / 'link.png'} (symlink -> {outside / 'secret.png'}, outside the folder)" in messages[0]
        assert f"{path / 'dogs' / 'elsewhere'} (symlinked folder -> {outside}, outside the folder" in messages[0]
        assert f"{path / 'cats' / 'broken.png'} (FileNotFoundError" in messages[0]
        assert ".hidden" not in messages[0] and dataset.num_skipped == 3
        assert dataset.names == ["cats/a.png", "cats/also_b.png", "dogs/b.png"]
        assert dataset.class_names == ("cats", "dogs")


# ---------------------------------------------------------------- decode failures while training

def folder_with_truncated_image(root: Path) -> Path:
    root.mkdir()
    for name, color in (("a.png", RED), ("b.png", BLUE), ("d.png", GREEN)):
        (root / name).write_bytes(png_bytes(color, (16, 16)))
    (root / "c.png").write_bytes(truncated_png_bytes())          # its header passes the construction check
    return root


def test_truncated_image_skipped_while_training_no_workers(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # construction: no warning
        dataset = ImageFolder(folder_with_truncated_image(tmp_path / "imgs"), 4)
    assert len(dataset) == 4
    batches = batch_iterator(dataset, batch_size=4, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = [color_of(image) for _ in range(3) for image in next(batches)[0]]   # 3 epochs
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "c.png (OSError: image file is truncated" in messages[0], messages
    assert set(seen) == {RED, BLUE, GREEN} and len(seen) == 12
    assert dataset.skipped_files == [str(tmp_path / "imgs" / "c.png")]


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="", flush=True)


def test_truncated_image_skipped_in_a_dataloader_worker(tmp_path, capfd):
    dataset = ImageFolder(folder_with_truncated_image(tmp_path / "imgs"), 4)
    with warnings.catch_warnings():
        # The worker warns on its own stderr, as outside pytest (whose warning recorder, inherited
        # by the forked worker, would keep the warning in the worker's memory).
        warnings.simplefilter("always")
        warnings.showwarning = _print_warning
        batches = batch_iterator(dataset, batch_size=4, seed=0, num_workers=1)
        seen = [color_of(image) for _ in range(3) for image in next(batches)[0]]
        del batches                                             # ends the persistent worker
    assert set(seen) == {RED, BLUE, GREEN} and len(seen) == 12
    err = capfd.readouterr().err
    assert err.count("cannot decode") == 1 and "c.png (OSError: image file is truncated" in err, err


# ---------------------------------------------------------------- npz and Fashion-MNIST files

def _touch(path):
    Path(path).touch()


class _Payload:
    """Unpickling it creates a file: proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return _touch, (self.path,)


def test_npz_object_array_is_refused_and_its_pickle_never_runs(tmp_path):
    # the payload is live: np.load(allow_pickle=True) would run it
    live = tmp_path / "live.npz"
    np.savez(live, images=np.array([_Payload(tmp_path / "ran_once")], dtype=object))
    with np.load(live, allow_pickle=True) as npz:
        npz["images"]
    assert (tmp_path / "ran_once").exists()
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, images=np.zeros((2, 4, 4), np.uint8),
             labels=np.array([_Payload(tmp_path / "pwned")], dtype=object))
    with pytest.raises(ValueError, match=r"cannot read array 'labels' of .*hostile.npz.*allow_pickle=False"):
        NpzImages(hostile)
    np.savez(hostile, images=np.array([_Payload(tmp_path / "pwned")], dtype=object))
    with pytest.raises(ValueError, match=r"cannot read array 'images' of .*hostile.npz.*allow_pickle=False"):
        open_dataset(hostile, 4)
    assert not (tmp_path / "pwned").exists()


def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_fashion_mnist_root_with_damaged_files_names_the_file(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.array([0, 1, 2], np.uint8)
    root = tmp_path / "fm"
    root.mkdir()
    (root / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    images_file = root / "train-images-idx3-ubyte"
    images_file.write_bytes(_idx_bytes(images))
    assert len(FashionMNIST(root=root)) == 3                           # the files are fine as made
    images_file.write_bytes(_idx_bytes(images)[:-5])
    with pytest.raises(ValueError, match=rf"{images_file}.* is truncated"):
        FashionMNIST(root=root)
    images_file.write_bytes(b"\x1f\x8a" + _idx_bytes(images)[2:])     # wrong magic
    with pytest.raises(ValueError, match=rf"{images_file}.* is not an IDX file"):
        FashionMNIST(root=root)
    # a header declaring (2^32 - 1)^3 values: an exact error, no int64 overflow
    images_file.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2 ** 32 - 1] * 3) + b"\0" * 16)
    with pytest.raises(ValueError, match=rf"needs {(2 ** 32 - 1) ** 3} data bytes, found 16"):
        FashionMNIST(root=root)


def test_read_idx_refuses_a_gzip_bomb_without_inflating_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "MAX_IDX_BYTES", 1 << 16)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 1 << 20) + b"\0" * (1 << 20)))
    assert bomb.stat().st_size < 1 << 16                              # small on disk, 1 MiB inside
    with pytest.raises(ValueError, match=rf"{bomb}.* more than 65536 bytes uncompressed"):
        read_idx(bomb)
    raw = tmp_path / "raw-idx"
    raw.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 1 << 17) + b"\0" * (1 << 17))
    with pytest.raises(ValueError, match=rf"{raw}.* more than 65536 bytes,"):
        read_idx(raw)


# ---------------------------------------------------------------- end to end

def test_train_on_a_zip_with_good_and_hostile_members(tmp_path):
    """`ganfast train` on a tiny model: every bad member is named in a warning, training ends."""
    from ganfast.cli import main
    members = [(f"imgs/{i}.png", noise_png_bytes(seed=10 + i, size=(40, 48))) for i in range(6)]
    members += [("imgs/truncated.png", truncated_png_bytes()), ("imgs/bomb.png", bomb_png_bytes(30000, 30000)),
                ("imgs/text.png", b"not an image"), ("../escape.png", png_bytes()), ("/abs.png", png_bytes())]
    archive = write_zip(tmp_path / "data.zip", members)
    argv = ["train", "--out", str(tmp_path / "run"), "--preset", "stylegan2-32-fmnist",
            "--model", "channel_max=8,channel_base=256,z_dim=16,w_dim=16", "--data", str(archive),
            "--kimg", "0.016", "--batch", "8", "--tick", "0.008", "--snap", "0.016", "--metrics", "none",
            "--no-progress"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    text = "\n".join(str(w.message) for w in caught)
    for name in ("bomb.png (DecompressionBombError", "text.png (UnidentifiedImageError",
                 "../escape.png ('..' component", "/abs.png (absolute path", "truncated.png (OSError"):
        assert name in text, text
    # two steps of 8 from 7 listed images: the truncated one was drawn, replaced, and warned about once
    assert text.count("truncated.png") == 1
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"steps": 2' in summary
