"""ImageFolder, ZipImages, NpzImages, resize/crop geometry, xflip and open_dataset, on small
images generated here with known pixel values (expected values are computed by hand)."""
import contextlib
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ganfast.data.fashion_mnist as fm
from ganfast.data import (FashionMNIST, ImageFolder, InMemoryImages, NpzImages, ZipImages, open_dataset,
                          resize_center_crop, uint8_to_float)


def to_float(value):
    """uint8 value -> the dataset's float: v / 127.5 - 1, computed in float32."""
    return float(np.float32(value) / np.float32(127.5) - np.float32(1))


def solid(mode, size, color):
    return Image.new(mode, size, color)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def two_class_folder(root: Path) -> Path:
    """cats/ (red PNGs, one in a nested folder) and dogs/ (blue PNGs)."""
    save(solid("RGB", (8, 8), (255, 0, 51)), root / "cats" / "a.png")
    save(solid("RGB", (12, 10), (255, 0, 51)), root / "cats" / "deeper" / "b.PNG")
    save(solid("RGB", (8, 8), (0, 0, 255)), root / "dogs" / "c.png")
    save(solid("RGB", (8, 8), (0, 0, 255)), root / "dogs" / "d.bmp")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"garbage that must not even be looked at")
    return root


@contextlib.contextmanager
def no_warnings():
    """Turns any warning inside into a failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- ImageFolder

def test_folder_labels_from_first_level_subfolders(tmp_path):
    dataset = ImageFolder(two_class_folder(tmp_path / "pets"), resolution=4)
    assert len(dataset) == 4 and dataset.num_classes == 2 and dataset.class_names == ("cats", "dogs")
    assert dataset.channels == 3 and dataset.resolution == 4 and dataset.name == "pets" and dataset.num_skipped == 0
    red = torch.tensor([to_float(255), to_float(0), to_float(51)]).view(3, 1, 1).expand(3, 4, 4)
    blue = torch.tensor([to_float(0), to_float(0), to_float(255)]).view(3, 1, 1).expand(3, 4, 4)
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 4, 4) and image.dtype == torch.float32
        assert label.dtype == torch.int64 and label.ndim == 0
        torch.testing.assert_close(image, red if int(label) == 0 else blue, rtol=0, atol=1e-6)
    assert [int(dataset[i][1]) for i in range(4)] == [0, 0, 1, 1]   # sorted: cats/a, cats/deeper/b, dogs/c, dogs/d


def test_folder_labels_false_and_top_level_images(tmp_path):
    root = two_class_folder(tmp_path / "pets")
    unlabeled = ImageFolder(root, 4, labels=False)
    assert unlabeled.num_classes == 0 and unlabeled.class_names == () and int(unlabeled[0][1]) == -1
    save(solid("RGB", (8, 8), (1, 2, 3)), root / "loose.png")
    auto = ImageFolder(root, 4)                          # an image outside every class folder: no labels
    assert auto.num_classes == 0 and len(auto) == 5
    with pytest.raises(ValueError, match="labels=True needs every image in a first-level sub-folder"):
        ImageFolder(root, 4, labels=True)
    with pytest.raises(ValueError, match="labels must be"):
        ImageFolder(root, 4, labels="yes")


def test_folder_single_subfolder_is_unlabeled_in_auto(tmp_path):
    save(solid("RGB", (8, 8), (9, 9, 9)), tmp_path / "only" / "a.png")
    save(solid("RGB", (8, 8), (9, 9, 9)), tmp_path / "only" / "b.png")
    assert ImageFolder(tmp_path, 8).num_classes == 0
    forced = ImageFolder(tmp_path, 8, labels=True)
    assert forced.num_classes == 1 and forced.class_names == ("only",) and int(forced[1][1]) == 0


def test_folder_grayscale_detection_and_conversion(tmp_path):
    save(solid("L", (6, 6), 100), tmp_path / "g1.png")
    save(solid("L", (6, 6), 200), tmp_path / "g2.jpg", quality=100)
    gray = ImageFolder(tmp_path, 6)
    assert gray.channels == 1
    torch.testing.assert_close(gray[0][0], torch.full((1, 6, 6), to_float(100)), rtol=0, atol=0)
    torch.testing.assert_close(gray[1][0], torch.full((1, 6, 6), to_float(200)), rtol=0, atol=2 / 127.5)
    as_rgb = ImageFolder(tmp_path, 6, channels=3)
    image = as_rgb[0][0]
    assert image.shape == (3, 6, 6) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    save(solid("RGB", (6, 6), (10, 200, 30)), tmp_path / "rgb.png")
    assert ImageFolder(tmp_path, 6).channels == 3        # one color image makes the set RGB
    # 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 123.81 -> 124
    luma = ImageFolder(tmp_path, 6, channels=1)
    torch.testing.assert_close(luma[2][0], torch.full((1, 6, 6), to_float(124)), rtol=0, atol=0)


def test_folder_alpha_and_palette(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (200, 100, 50, 255))
    rgba.putpixel((1, 0), (200, 100, 50, 0))        # fully transparent -> black
    rgba.putpixel((2, 0), (200, 100, 50, 128))      # half: 200 * 128 / 255 = 100.4 -> 100, 50.2 -> 50, 25.1 -> 25
    save(rgba, tmp_path / "a_rgba.png")
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([12, 34, 56] + [0, 0, 0] * 255)
    save(palette, tmp_path / "b_palette.png")
    dataset = ImageFolder(tmp_path, 2, labels=False)
    # 4x2 -> center 2x2 square = columns 1..2, no resize.
    image = dataset[0][0]
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([to_float(100), to_float(50), to_float(25)]), rtol=0,
                               atol=1 / 127.5)
    torch.testing.assert_close(image[:, 1, 0], torch.tensor([to_float(200), to_float(100), to_float(50)]))
    torch.testing.assert_close(dataset[1][0][:, 0, 0], torch.tensor([to_float(12), to_float(34), to_float(56)]))


def test_folder_16_bit_gray_and_exif_orientation(tmp_path):
    save(Image.fromarray(np.full((4, 4), 200 * 256 + 99, np.uint16)), tmp_path / "a_16bit.png")   # I;16
    halves = np.zeros((4, 8), np.uint8)
    halves[:, 4:] = 255                                       # stored: left black, right white
    exif = Image.Exif()
    exif[0x0112] = 3                                          # orientation 3: display rotated by 180 degrees
    save(Image.fromarray(halves), tmp_path / "b_rotated.png", exif=exif)
    dataset = ImageFolder(tmp_path, 4)
    assert dataset.channels == 1
    torch.testing.assert_close(dataset[0][0], torch.full((1, 4, 4), to_float(200)), rtol=0, atol=0)
    # Center square of the rotated picture: columns 2..5 of [white x4, black x4].
    expected = torch.tensor([1.0, 1.0, -1.0, -1.0]).expand(1, 4, 4)
    torch.testing.assert_close(dataset[1][0], expected, rtol=0, atol=0)


def test_folder_webp_jpeg_uppercase_extensions(tmp_path):
    save(solid("RGB", (16, 16), (0, 128, 255)), tmp_path / "a.webp", lossless=True)
    save(solid("RGB", (16, 16), (0, 128, 255)), tmp_path / "b.JPEG", quality=95)
    dataset = ImageFolder(tmp_path, 8)
    assert len(dataset) == 2
    expected = torch.tensor([to_float(0), to_float(128), to_float(255)]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(dataset[0][0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(dataset[1][0], expected, rtol=0, atol=4 / 127.5)     # JPEG is lossy


def test_center_crop_geometry_exact_columns(tmp_path):
    # 61 wide, 30 high, column x has gray value 4x: the 30x30 center square starts at (61 - 30) // 2 = 15.
    pattern = np.tile((np.arange(61) * 4).astype(np.uint8), (30, 1))
    save(Image.fromarray(pattern), tmp_path / "wide.png")
    image = ImageFolder(tmp_path, 30)[0][0]
    torch.testing.assert_close(image[0], torch.from_numpy(pattern[:, 15:45]).float() / 127.5 - 1, rtol=0, atol=0)


def test_center_crop_then_resize_keeps_the_middle(tmp_path):
    # 20 wide, 40 high: black top 10 rows, white middle 20, black bottom 10. The center square is
    # exactly the white part, so after resizing to 10 nothing black may remain.
    pattern = np.zeros((40, 20, 3), dtype=np.uint8)
    pattern[10:30] = 255
    save(Image.fromarray(pattern), tmp_path / "tall.png")
    image = ImageFolder(tmp_path, 10)[0][0]
    assert image.shape == (3, 10, 10)
    torch.testing.assert_close(image, torch.ones(3, 10, 10), rtol=0, atol=0)
    # And upscaling a 2 x 2 checker keeps its quadrants (bicubic, away from the seam).
    checker = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    upscaled = resize_center_crop(torch.from_numpy(checker).view(1, 1, 2, 2), 16)[0, 0]
    assert upscaled[0, 0] == 0 and upscaled[0, 15] == 255 and upscaled[15, 0] == 255 and upscaled[15, 15] == 0


def test_resize_center_crop_constant_and_errors():
    constant = torch.full((2, 3, 17, 23), 77, dtype=torch.uint8)
    for mode in ("bicubic", "bilinear"):
        assert torch.equal(resize_center_crop(constant, 8, mode), torch.full((2, 3, 8, 8), 77, dtype=torch.uint8))
        assert torch.equal(resize_center_crop(constant, 40, mode), torch.full((2, 3, 40, 40), 77, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        resize_center_crop(constant.float(), 8)
    with pytest.raises(ValueError, match="resolution"):
        resize_center_crop(constant, 0)
    assert torch.equal(uint8_to_float(torch.tensor([0, 255, 51], dtype=torch.uint8)), torch.tensor([-1.0, 1.0, -0.6]))


def test_corrupt_file_skipped_with_one_warning(tmp_path):
    root = two_class_folder(tmp_path / "pets")
    bad = root / "dogs" / "broken.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = ImageFolder(root, 4)
    assert len(caught) == 1 and "broken.png" in str(caught[0].message)
    assert dataset.num_skipped == 1 and dataset.skipped_files == [str(bad)]
    assert len(dataset) == 4 and dataset.class_names == ("cats", "dogs")
    with no_warnings():
        [dataset[i] for i in range(len(dataset))]          # the rest reads cleanly


def test_truncated_file_replaced_deterministically_at_read_time(tmp_path):
    rng = np.random.default_rng(0)
    for name, value in (("a.png", 10), ("c.png", 30)):
        save(solid("L", (16, 16), value), tmp_path / name)
    noisy = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(noisy, "PNG")
    (tmp_path / "b.png").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])   # header fine, data cut
    with no_warnings():
        dataset = ImageFolder(tmp_path, 16)                 # the header check passes
    assert len(dataset) == 3 and dataset.num_skipped == 0
    with pytest.warns(UserWarning, match="b.png") as caught:
        image, _ = dataset[1]
    assert len(caught) == 1
    torch.testing.assert_close(image, torch.full((1, 16, 16), to_float(30)))   # the next image, c.png
    assert dataset.num_skipped == 1 and dataset.skipped_files[0].endswith("b.png")
    with no_warnings():
        again, _ = dataset[1]                               # same replacement, no second warning
    assert torch.equal(again, image)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-dir"):
        ImageFolder(tmp_path / "missing-dir", 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(empty, 8)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(empty, 8)
    (empty / "x.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 image files"):
        ImageFolder(empty, 8)
    with pytest.raises(ValueError, match="not a directory"):
        ImageFolder(empty / "readme.txt", 8)
    save(solid("L", (4, 4), 0), tmp_path / "ok" / "a.png")
    for bad_resolution in (0, -4, 8.0, True):
        with pytest.raises(ValueError, match="resolution"):
            ImageFolder(tmp_path / "ok", bad_resolution)
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(tmp_path / "ok", 4, channels=4)


# ---------------------------------------------------------------- ZipImages

def write_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, image in members:
            if isinstance(image, bytes):
                archive.writestr(name, image)
            else:
                buffer = io.BytesIO()
                image.save(buffer, "PNG")
                archive.writestr(name, buffer.getvalue())
    return path


def test_zip_images_with_enclosing_folder_and_corrupt_member(tmp_path):
    path = write_zip(tmp_path / "pets.zip", [
        ("pets/", b""),
        ("pets/dogs/x.png", solid("RGB", (6, 6), (0, 0, 255))),
        ("pets/cats/y.png", solid("RGB", (6, 6), (255, 0, 0))),
        ("pets/cats/z.png", b"not an image"),
        ("__MACOSX/pets/cats/._y.png", b"resource fork junk"),
    ])
    with pytest.warns(UserWarning, match="z.png") as caught:
        dataset = ZipImages(path, 3)
    assert len(caught) == 1
    assert dataset.class_names == ("cats", "dogs") and len(dataset) == 2 and dataset.num_skipped == 1
    assert dataset.name == "pets" and dataset.channels == 3
    image, label = dataset[0]
    assert int(label) == 0 and image.shape == (3, 3, 3)
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    # A copy sent to another process (pickle, as DataLoader workers with spawn do) reopens the archive.
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1][0], dataset[1][0]) and int(clone[1][1]) == 1


def test_zip_without_enclosing_folder_matches_folder(tmp_path):
    members = [("a/1.png", solid("L", (5, 9), 40)), ("b/2.png", solid("L", (5, 5), 90)),
               ("b/3.png", solid("L", (7, 5), 140))]
    path = write_zip(tmp_path / "flat.zip", members)
    for name, image in members:
        save(image, tmp_path / "folder" / name)
    from_zip, from_folder = ZipImages(path, 5, xflip=True), ImageFolder(tmp_path / "folder", 5, xflip=True)
    assert from_zip.class_names == from_folder.class_names == ("a", "b") and len(from_zip) == len(from_folder) == 6
    for index in range(6):
        assert torch.equal(from_zip[index][0], from_folder[index][0])
        assert int(from_zip[index][1]) == int(from_folder[index][1])


def test_zip_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.zip"):
        ZipImages(tmp_path / "nothing.zip", 8)
    (tmp_path / "fake.zip").write_bytes(b"PK but not really")
    with pytest.raises(ValueError, match="not a zip archive"):
        ZipImages(tmp_path / "fake.zip", 8)
    with pytest.raises(ValueError, match="no images"):
        ZipImages(write_zip(tmp_path / "texts.zip", [("a.txt", b"hello")]), 8)


# ---------------------------------------------------------------- NpzImages

def npz(tmp_path, name="data.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_layouts_give_the_same_images(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    nhwc[0, 1, 2] = (10, 20, 30)
    expected = torch.tensor([to_float(10), to_float(20), to_float(30)])
    for layout, array in (("nhwc", nhwc), ("nchw", nhwc.transpose(0, 3, 1, 2))):
        dataset = NpzImages(npz(tmp_path, f"{layout}.npz", images=array))
        assert (len(dataset), dataset.channels, dataset.resolution, dataset.num_classes) == (5, 3, 6, 0)
        torch.testing.assert_close(dataset[0][0][:, 1, 2], expected, rtol=0, atol=0)
        assert int(dataset[0][1]) == -1
    gray = rng.integers(0, 256, size=(4, 7, 7), dtype=np.uint8)
    for array in (gray, gray[..., None], gray[:, None]):          # [N, H, W], [N, H, W, 1], [N, 1, H, W]
        dataset = NpzImages(npz(tmp_path, images=array))
        assert dataset.channels == 1
        torch.testing.assert_close(dataset[3][0][0], torch.from_numpy(gray[3]).float() / 127.5 - 1, rtol=0, atol=0)


def test_npz_ambiguous_axes_prefer_the_square_reading(tmp_path):
    # [N, 3, 4, 4] reads as 3-channel 4x4; [N, 4, 4, 3] as 4x4 RGB (not 4-channel 4x3).
    assert NpzImages(npz(tmp_path, images=np.zeros((2, 3, 4, 4), np.uint8))).resolution == 4
    dataset = NpzImages(npz(tmp_path, images=np.zeros((2, 4, 4, 3), np.uint8)))
    assert dataset.resolution == 4 and dataset.channels == 3


def test_npz_float_ranges_and_dtypes(tmp_path):
    unit = np.array([[[0.0, 0.5], [1.0, 0.2]]], dtype=np.float32)          # [1, 2, 2] in [0, 1]
    # 0.5 * 255 = 127.5 -> 128 (round half to even), 0.2 * 255 = 51
    expected = torch.tensor([[to_float(0), to_float(128)], [to_float(255), to_float(51)]])
    torch.testing.assert_close(NpzImages(npz(tmp_path, x=unit))[0][0][0], expected, rtol=0, atol=0)
    signed = unit * 2 - 1                                                   # the same picture in [-1, 1]
    torch.testing.assert_close(NpzImages(npz(tmp_path, x=signed.astype(np.float64)))[0][0][0], expected, rtol=0, atol=0)
    as_int64 = (unit * 255).round().astype(np.int64)
    assert NpzImages(npz(tmp_path, x=as_int64))[0][0].shape == (1, 2, 2)
    for bad, message in ((unit * 3, r"\[0, 1\] or \[-1, 1\]"), (as_int64 + 250, r"\[0, 255\]"),
                         (np.full((1, 2, 2), np.nan, np.float32), "NaN"), (unit > 0.3, "dtype bool"),
                         (np.zeros((2, 5, 5, 2), np.uint8), "channel axis"), (np.zeros((4, 4), np.uint8), "shape")):
        with pytest.raises(ValueError, match=message):
            NpzImages(npz(tmp_path, x=bad))


def test_npz_labels_keys_resize_and_channels(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 10, 8, 3), dtype=np.uint8)      # 10 high, 8 wide
    path = npz(tmp_path, images=images, labels=np.array([0, 2, 1, 2, 0, 1]), y=np.array([1, 1, 0, 0, 1, 0]))
    dataset = NpzImages(path)
    assert dataset.num_classes == 3 and dataset.class_names == ("0", "1", "2") and int(dataset[1][1]) == 2
    assert dataset.resolution == 8                                          # the shorter side, center crop rows 1..8
    torch.testing.assert_close(dataset[2][0], torch.from_numpy(images[2, 1:9]).permute(2, 0, 1).float() / 127.5 - 1,
                               rtol=0, atol=0)
    assert int(NpzImages(path, labels_key="y")[0][1]) == 1
    assert NpzImages(path, labels=False).num_classes == 0
    assert NpzImages(path, resolution=4)[0][0].shape == (3, 4, 4)
    luma = NpzImages(path, channels=1)
    r, g, b = (int(v) for v in images[0, 1, 0])
    assert luma.channels == 1
    assert luma.images[0, 0, 0, 0] == (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
    with pytest.raises(ValueError, match=r"it holds \['images', 'labels', 'y'\]"):
        NpzImages(path, key="pixels")
    with pytest.raises(ValueError, match="no label array 'classes'"):
        NpzImages(path, labels_key="classes")
    with pytest.raises(ValueError, match="integer array"):
        NpzImages(npz(tmp_path, "short.npz", images=images, labels=np.array([0, 1])))
    unlabeled = npz(tmp_path, "u.npz", images=images)
    with pytest.raises(ValueError, match="no label array 'labels'"):
        NpzImages(unlabeled, labels=True)


def test_npz_alpha_and_file_errors(tmp_path):
    rgba = np.zeros((1, 2, 2, 4), dtype=np.uint8)
    rgba[0, 0, 0] = (200, 100, 50, 255)
    rgba[0, 0, 1] = (200, 100, 50, 0)
    image = NpzImages(npz(tmp_path, images=rgba))[0][0]
    assert image.shape == (3, 2, 2)
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([to_float(200), to_float(100), to_float(50)]))
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([-1.0, -1.0, -1.0]))
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        NpzImages(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        NpzImages(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.zeros((1, 2, 2), np.uint8))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match="single array"):
        NpzImages(tmp_path / "single.npz")
    with pytest.raises(ValueError, match="pass key="):
        NpzImages(npz(tmp_path, a=np.zeros((1, 2, 2), np.uint8), b=np.zeros(1)))


# ---------------------------------------------------------------- xflip

def test_xflip_is_an_exact_mirror_by_index(tmp_path, monkeypatch):
    monkeypatch.delenv(fm.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    plain, flipped = FashionMNIST(), FashionMNIST(xflip=True)
    assert len(flipped) == 2 * len(plain) == 12000
    for index in (0, 17, 5999):
        image, label = flipped[6000 + index]
        original, original_label = plain[index]
        assert torch.equal(flipped[index][0], original)
        assert torch.equal(image, original.flip(-1)) and not torch.equal(image, original)
        assert int(label) == int(original_label)
    assert torch.equal(flipped[-1][0], plain[5999][0].flip(-1))
    with pytest.raises(IndexError):
        flipped[12000]
    # The same for a decoded dataset: column x of item N + i is column W - 1 - x of item i.
    pattern = np.tile((np.arange(6) * 40).astype(np.uint8), (6, 1))
    save(Image.fromarray(pattern), tmp_path / "ramp.png")
    folder = ImageFolder(tmp_path, 6, xflip=True)
    assert len(folder) == 2
    torch.testing.assert_close(folder[1][0][0], torch.from_numpy(pattern[:, ::-1].copy()).float() / 127.5 - 1,
                               rtol=0, atol=0)


# ---------------------------------------------------------------- open_dataset

def test_open_dataset_dispatch(tmp_path, monkeypatch):
    monkeypatch.delenv(fm.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    padded = open_dataset(None, 32)
    assert isinstance(padded, FashionMNIST) and torch.all(padded[0][0][0, 0] == -1)
    resized = open_dataset("fashion-mnist", 64, channels=3, xflip=True, labels=False)
    assert resized[0][0].shape == (3, 64, 64) and len(resized) == 12000 and resized.num_classes == 0
    folder = two_class_folder(tmp_path / "pets")
    assert isinstance(open_dataset(folder, 8), ImageFolder)
    assert open_dataset(str(folder), 8, labels=False).num_classes == 0
    archive = write_zip(tmp_path / "a.ZIP", [("x.png", solid("L", (4, 4), 3))])
    assert isinstance(open_dataset(archive, 4), ZipImages)
    arrays = npz(tmp_path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]))
    from_npz = open_dataset(arrays, 8, channels=3)
    assert isinstance(from_npz, NpzImages) and from_npz[0][0].shape == (3, 8, 8) and from_npz.num_classes == 2


def test_open_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10"):
        open_dataset("cifar10", 32)
    with pytest.raises(FileNotFoundError, match="gone.zip"):
        open_dataset(tmp_path / "gone.zip", 32)
    (tmp_path / "list.txt").write_text("a.png")
    with pytest.raises(ValueError, match=r"accepted: None or 'fashion-mnist', a directory.*\.zip.*\.npz"):
        open_dataset(tmp_path / "list.txt", 32)
    with pytest.raises(ValueError, match="spec must be"):
        open_dataset(42, 32)


# ---------------------------------------------------------------- InMemoryImages

def test_in_memory_images_validation_and_channels():
    images = torch.zeros(4, 1, 3, 3, dtype=torch.uint8)
    images[2, 0, 1, 1] = 255
    dataset = InMemoryImages(images, torch.tensor([0, 1, 1, 0]), name="toy", class_names=["left", "right", "none"],
                             channels=3)
    assert dataset.num_classes == 3 and dataset.class_names == ("left", "right", "none")   # names may exceed labels
    image, label = dataset[2]
    assert image.shape == (3, 3, 3) and float(image[1, 1, 1]) == 1.0 and float(image[2, 0, 0]) == -1.0
    assert int(label) == 1 and "num_classes=3" in repr(dataset)
    batch, labels = dataset.get_batch([2, 0])
    assert torch.equal(batch[0], image) and labels.tolist() == [1, 0]
    for bad_images, message in ((images.float(), "uint8"), (images[:, :, :2], "R, R"),
                                (images.expand(4, 2, 3, 3), "1 or 3"), (images[:0], "non-empty")):
        with pytest.raises(ValueError, match=message):
            InMemoryImages(bad_images, None, name="bad")
    with pytest.raises(ValueError, match=">= 0"):
        InMemoryImages(images, torch.tensor([0, -1, 0, 0]), name="bad")
    with pytest.raises(ValueError, match=r"labels must be \[4\]"):
        InMemoryImages(images, torch.tensor([0, 1]), name="bad")
    with pytest.raises(ValueError, match="1 class names"):
        InMemoryImages(images, torch.tensor([0, 1, 1, 0]), name="bad", class_names=["only"])
    with pytest.raises(ValueError, match="cannot show 3-channel images as channels=1"):
        InMemoryImages(images.expand(4, 3, 3, 3), None, name="bad", channels=1)
