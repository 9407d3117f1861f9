"""Image-to-image datasets (ganfast.data.img2img): item layout and ranges of every spec, the
Fashion-MNIST edge maps, the pix2pix / CycleGAN folder readers on tiny PNGs written here, the
unpaired pairing, xflip, the bicubic SR helpers, and batch_iterator on all of them."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganfast.data import (FashionMNIST, FMNIST_CLASS_NAMES, PairedImages, UnpairedImages, batch_iterator,
                          bicubic_downsample, bicubic_upsample, fmnist_edges, open_img2img_data, uint8_to_float)


def save_png(path: Path, pixels: np.ndarray) -> Path:
    """pixels uint8 [H, W] (gray) or [H, W, 3] (RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def truncated_png(path: Path) -> Path:
    """A PNG whose header passes ImageFolder's construction check and whose pixel data is cut short."""
    noise = np.random.default_rng(1).integers(0, 256, size=(16, 32, 3), dtype=np.uint8)
    save_png(path, noise)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def aligned_pixels(left, right, side=8) -> np.ndarray:
    """An aligned pix2pix file, RGB [side, 2 * side, 3]: left half colour `left`, right half `right`."""
    pixels = np.empty((side, 2 * side, 3), dtype=np.uint8)
    pixels[:, :side] = left
    pixels[:, side:] = right
    return pixels


def colour(value) -> torch.Tensor:
    """An RGB uint8 triple as the dataset's float [3]."""
    return uint8_to_float(torch.tensor(value, dtype=torch.uint8))


def mean_colour(image: torch.Tensor) -> torch.Tensor:
    return image.mean(dim=(-2, -1))


def sobel_magnitude(images: np.ndarray) -> np.ndarray:
    """|Sobel gradient| of float images [N, H, W] (zero outside), computed independently of the package."""
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    height, width = images.shape[1:]

    def at(dy, dx):
        return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return np.hypot(gx, gy)


@pytest.fixture(scope="module")
def fmnist_train():
    return FashionMNIST(32)


@pytest.fixture(scope="module")
def edges2fmnist():
    return open_img2img_data("edges2fmnist", "paired", 32)


# ---------------------------------------------------------------- edges2fmnist

def test_edges2fmnist_layout(edges2fmnist, fmnist_train):
    data = edges2fmnist
    assert (data.name, data.channels_A, data.channels_B, data.channels, data.resolution) == ("edges2fmnist", 1, 1, 2, 32)
    assert data.num_classes == 0 and data.class_names == () and data.class_A is None and data.class_B is None
    assert len(data) == len(fmnist_train) == 6000
    x, label = data[17]
    assert x.shape == (2, 32, 32) and x.dtype == torch.float32 and int(label) == 0
    torch.testing.assert_close(x[1:], fmnist_train[17][0], rtol=0, atol=0)      # B is the image itself
    assert set(x[0].unique().tolist()) <= {-1.0, 1.0}                            # A: black lines on white
    assert float((x[0] == 1).float().mean()) > 0.7
    batch, labels = data.get_batch([3, 17, 5999])
    assert batch.shape == (3, 2, 32, 32) and labels.tolist() == [0, 0, 0]
    torch.testing.assert_close(batch[1], x, rtol=0, atol=0)
    torch.testing.assert_close(data.domain_images("B"), uint8_to_float(fmnist_train.images), rtol=0, atol=0)


def test_edges2fmnist_test_split_direction_and_channels():
    test = open_img2img_data("edges2fmnist", "paired", 32, split="test")
    assert len(test) == 1000 and test.split == "test"
    torch.testing.assert_close(test.domain_images("B"), uint8_to_float(FashionMNIST(32, split="test").images))
    swapped = open_img2img_data("edges2fmnist", "paired", 32, split="test", direction="BtoA")
    torch.testing.assert_close(swapped[5][0], test[5][0].flip(0), rtol=0, atol=0)   # 1 + 1 channels: swap = flip
    rgb = open_img2img_data("edges2fmnist", "paired", 32, split="test", channels=3)
    assert rgb.channels_A == rgb.channels_B == 3 and rgb[5][0].shape == (6, 32, 32)
    torch.testing.assert_close(rgb[5][0][3:], test[5][0][1:].expand(3, -1, -1), rtol=0, atol=0)
    bigger = open_img2img_data("edges2fmnist", "paired", 48, split="test")
    assert bigger[0][0].shape == (2, 48, 48)


def test_edges_are_thin_lines_on_the_gradients(fmnist_train):
    photos = fmnist_train.images[::12, 0]                               # 500 images, all classes
    edges = fmnist_edges(photos)
    assert edges.dtype == torch.uint8 and edges.shape == photos.shape
    assert set(edges.unique().tolist()) <= {0, 255}
    on = (edges == 0).numpy()
    # Edge pixels sit where the gradient is: their mean |Sobel| is several times the others'.
    magnitude = sobel_magnitude(photos.numpy() / 255.0)
    ratio = magnitude[on].mean() / magnitude[~on].mean()
    assert ratio > 5, ratio
    # A sane density: outlines, not filled shapes, not nearly empty.
    density = on.mean()
    assert 0.04 < density < 0.25, density
    assert on.reshape(len(on), -1).any(axis=1).all()                   # every garment has lines
    # Thin: few edge pixels lie in a fully-set 2 x 2 block (a two-pixel-wide line would).
    blocks = on[:, :-1, :-1] & on[:, 1:, :-1] & on[:, :-1, 1:] & on[:, 1:, 1:]
    assert blocks.sum() < 0.05 * on.sum(), blocks.sum() / on.sum()
    # The silhouette is kept: pixels of the garment's outer boundary lie within 1 px of a line.
    garment = photos.numpy() > 20
    inside = np.pad(garment, ((0, 0), (1, 1), (1, 1)))
    interior = np.ones_like(garment)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        interior &= inside[:, 1 + dy:1 + dy + 32, 1 + dx:1 + dx + 32]
    boundary = garment & ~interior
    near_line = F.max_pool2d(torch.from_numpy(on).float().unsqueeze(1), 3, 1, 1).squeeze(1).numpy() > 0
    covered = (boundary & near_line).sum() / boundary.sum()
    assert covered > 0.95, covered
    # Deterministic, and numpy in -> numpy out with the same values.
    assert torch.equal(fmnist_edges(photos), edges)
    as_array = fmnist_edges(photos.numpy())
    assert isinstance(as_array, np.ndarray) and np.array_equal(as_array, edges.numpy())


def test_edges_of_a_square_and_of_blank_images():
    square = torch.zeros(1, 20, 20, dtype=torch.uint8)
    square[0, 5:15, 5:15] = 200
    on = fmnist_edges(square)[0] == 0
    ys, xs = torch.nonzero(on, as_tuple=True)
    # Every line pixel lies on the square's outline (rows / columns 4..5 and 14..15, 1 px slack).
    on_outline = ((ys >= 4) & (ys <= 15) & (xs >= 4) & (xs <= 15)) & ~((ys >= 6) & (ys <= 13) & (xs >= 6) & (xs <= 13))
    assert bool(on_outline.all()) and on.sum() >= 30
    flat = torch.full((2, 16, 16), 90, dtype=torch.uint8)
    flat[1] = 0
    edges = fmnist_edges(flat)
    assert bool((edges[1] == 255).all())                               # black: nothing to outline
    # Flat gray: only its frame (the image continues as black background beyond the border).
    assert bool((edges[0, 2:-2, 2:-2] == 255).all()) and int((edges[0] == 0).sum()) >= 40
    with pytest.raises(ValueError, match="images must be uint8"):
        fmnist_edges(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images must be uint8"):
        fmnist_edges(torch.zeros(2, 16, 16))


# ---------------------------------------------------------------- fmnist:<a>-<b>

def test_fmnist_domains(fmnist_train):
    data = open_img2img_data("fmnist:sneaker-ankleboot", "unpaired", 32)
    assert (data.class_A, data.class_B, data.name) == (7, 9, "fmnist:sneaker-ankleboot")
    assert (data.channels_A, data.channels_B, data.channels, data.num_classes) == (1, 1, 2, 0)
    assert len(data) == 600 and data[0][0].shape == (2, 32, 32) and int(data[0][1]) == 0
    images = uint8_to_float(fmnist_train.images)
    for domain, label in (("A", 7), ("B", 9)):
        torch.testing.assert_close(data.domain_images(domain), images[fmnist_train.labels == label], rtol=0, atol=0)
    # Every item's A is a sneaker and its B an ankle boot: disjoint by class.
    x, _ = data.get_batch(torch.arange(len(data)))
    pool_A = {bytes(im.numpy()) for im in images[fmnist_train.labels == 7]}
    pool_B = {bytes(im.numpy()) for im in images[fmnist_train.labels == 9]}
    assert all(bytes(im.numpy()) in pool_A for im in x[:, :1]) and all(bytes(im.numpy()) in pool_B for im in x[:, 1:])
    assert not pool_A & pool_B
    aliased = open_img2img_data("fmnist:t-shirt-ankle-boot", "unpaired", 32, split="test")
    assert (aliased.class_A, aliased.class_B, aliased.name, len(aliased)) == (0, 9, "fmnist:tshirt-ankleboot", 100)
    swapped = open_img2img_data("fmnist:Top-Dress", "unpaired", 32, split="test", direction="BtoA")
    assert (swapped.class_A, swapped.class_B) == (3, 0)


def test_fmnist_domain_names_are_checked():
    with pytest.raises(ValueError, match="tshirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankleboot"):
        open_img2img_data("fmnist:sneaker-sock", "unpaired", 32)
    with pytest.raises(ValueError, match="different classes"):
        open_img2img_data("fmnist:boot-ankleboot", "unpaired", 32)
    with pytest.raises(ValueError, match="does not name two classes"):
        open_img2img_data("fmnist:sneaker", "unpaired", 32)
    assert FMNIST_CLASS_NAMES[7] == "sneaker"


# ---------------------------------------------------------------- pairing, xflip

def indexed_images(count: int, offset: int, side: int = 4) -> torch.Tensor:
    """uint8 [count, 1, side, side]: image k filled with offset + k (its identity)."""
    return (torch.arange(count, dtype=torch.uint8) + offset).view(count, 1, 1, 1).expand(-1, 1, side, side).clone()


def identities(data, indices):
    """(A identity, B identity) of each item, read back from the float pixels."""
    x, _ = data.get_batch(indices)
    values = ((x[:, :, 0, 0] + 1) * 127.5).round().to(torch.int64)
    return values[:, 0].tolist(), values[:, data.channels_A].tolist()


def test_unpaired_pairing_covers_both_domains_and_is_fixed():
    images_A, images_B = indexed_images(3, 0), indexed_images(7, 100)
    data = UnpairedImages(images_A, images_B, name="toy")
    assert len(data) == 7 and (data.num_A, data.num_B) == (3, 7)
    ids_A, ids_B = identities(data, torch.arange(7))
    assert ids_A == [i % 3 for i in range(7)]                         # A[i % nA]
    assert sorted(ids_B) == list(range(100, 107))                     # every B once an epoch
    again = UnpairedImages(images_A, images_B, name="toy")
    assert identities(again, torch.arange(7)) == (ids_A, ids_B)       # a fixed pairing, resumable
    assert ids_B != list(range(100, 107))                             # and not the identity order
    torch.testing.assert_close(data.domain_images("B"), uint8_to_float(images_B), rtol=0, atol=0)
    torch.testing.assert_close(data.domain_images("A"), uint8_to_float(images_A), rtol=0, atol=0)
    more_A = UnpairedImages(indexed_images(9, 0), indexed_images(4, 100), name="toy")
    ids_A, ids_B = identities(more_A, torch.arange(9))
    assert sorted(ids_A) == list(range(9)) and set(ids_B) == set(range(100, 104))
    swapped = UnpairedImages(images_A, images_B, name="toy", direction="BtoA")   # the rule holds after the swap
    ids_A, ids_B = identities(swapped, torch.arange(7))
    assert ids_A == [100 + i for i in range(7)] and set(ids_B) == {0, 1, 2}
    with pytest.raises(ValueError, match="domain must be one of"):
        data.domain_images("C")


def test_xflip_mirrors_A_and_B_together():
    ramp = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    data = PairedImages(ramp * 3, ramp * 5 + 1, name="toy", xflip=True)
    assert len(data) == 4
    for index in range(2):
        plain, mirrored = data[index][0], data[index + 2][0]
        torch.testing.assert_close(mirrored, plain.flip(-1), rtol=0, atol=0)
        assert not torch.equal(mirrored, plain)
    batch, _ = data.get_batch([2, 0])
    torch.testing.assert_close(batch[0], data[2][0], rtol=0, atol=0)
    torch.testing.assert_close(data.domain_images("A"), uint8_to_float(ramp * 3), rtol=0, atol=0)   # unmirrored
    with pytest.raises(ValueError, match="same number of images"):
        PairedImages(ramp, ramp[:1], name="toy")


# ---------------------------------------------------------------- pix2pix folders

def test_aligned_folder_left_half_is_A(tmp_path):
    root = tmp_path / "facades"
    save_png(root / "1.png", aligned_pixels((255, 0, 0), (0, 0, 255)))
    save_png(root / "2.png", aligned_pixels((0, 255, 0), (255, 255, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = open_img2img_data(root, "paired", 4)
    assert (data.layout, data.name, data.channels_A, data.channels_B, len(data)) == ("aligned", "facades", 3, 3, 2)
    x, label = data[0]
    assert x.shape == (6, 4, 4) and int(label) == 0
    torch.testing.assert_close(mean_colour(x[:3]), colour((255, 0, 0)), rtol=0, atol=1e-6)
    torch.testing.assert_close(mean_colour(x[3:]), colour((0, 0, 255)), rtol=0, atol=1e-6)
    swapped = open_img2img_data(root, "paired", 4, direction="BtoA")
    torch.testing.assert_close(mean_colour(swapped[1][0][:3]), colour((255, 255, 0)), rtol=0, atol=1e-6)
    gray = open_img2img_data(root, "paired", 4, channels=1)
    assert gray.channels == 2 and gray[0][0].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="split='test' needs a test/ or val/ sub-folder"):
        open_img2img_data(root, "paired", 4, split="test")


def test_aligned_folder_splits_and_a_truncated_file(tmp_path):
    root = tmp_path / "maps"
    save_png(root / "train" / "a.png", aligned_pixels(10, 20))
    save_png(root / "train" / "b.png", aligned_pixels(30, 40))
    truncated_png(root / "train" / "c.png")                              # fails only when decoded
    (root / "train" / "d.png").write_bytes(b"not a png at all")           # fails ImageFolder's header check
    save_png(root / "train" / "huge.png", aligned_pixels(70, 80, side=24))   # 1152 pixels > max_pixels
    save_png(root / "val" / "v.png", aligned_pixels(50, 60))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = open_img2img_data(root, "paired", 4, max_pixels=600)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "left out 3 image file(s)" in messages[0], messages   # one, naming all three
    assert all(name in messages[0] for name in ("c.png", "d.png", "huge.png", "truncated", "max_pixels=600"))
    assert len(train) == 2 and sorted(train.skipped_files) == [str(root / "train" / n) for n in ("c.png", "d.png",
                                                                                                  "huge.png")]
    assert mean_colour(train[1][0]).tolist() == pytest.approx(colour([30, 30, 30, 40, 40, 40]).tolist())
    test = open_img2img_data(root, "paired", 4, split="test")            # no test/: val/
    assert len(test) == 1 and mean_colour(test[0][0])[0] == pytest.approx(float(colour(50)))
    (root / "val").rename(root / "other")
    with pytest.raises(ValueError, match=r"needs a test/ or val/ sub-folder .* it has train/"):
        open_img2img_data(root, "paired", 4, split="test")


def test_A_B_folders_match_names(tmp_path):
    root = tmp_path / "pairs"
    for stem, value in (("x", 10), ("y", 20), ("z", 30)):
        save_png(root / "A" / "train" / f"{stem}.png", np.full((8, 8), value, np.uint8))
    for stem, value in (("x", 110), ("z", 130), ("w", 140)):
        save_png(root / "B" / "train" / f"{stem}.png", np.full((8, 8, 3), value, np.uint8))
    save_png(root / "A" / "test" / "t.png", np.full((8, 8), 1, np.uint8))
    save_png(root / "B" / "test" / "t.jpg", np.full((8, 8, 3), 2, np.uint8))      # matched without the extension
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = open_img2img_data(root, "paired", 4)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "y.png" in messages[0] and "w.png" in messages[0], messages
    assert data.layout == "A/B" and len(data) == 2 and (data.channels_A, data.channels_B) == (1, 3)
    values = [((data[i][0].mean(dim=(-2, -1)) + 1) * 127.5).round().tolist() for i in range(2)]
    assert values == [[10, 110, 110, 110], [30, 130, 130, 130]]            # x with x, z with z
    test = open_img2img_data(root, "paired", 4, split="test", channels=1)
    assert len(test) == 1 and test.channels == 2
    with pytest.warns(UserWarning, match="y.png"):
        swapped = open_img2img_data(root, "paired", 4, direction="BtoA")
    assert (swapped.channels_A, swapped.channels_B) == (3, 1)
    assert ((swapped[0][0][:3].mean() + 1) * 127.5).round() == 110


# ---------------------------------------------------------------- CycleGAN folder

def test_cyclegan_folder(tmp_path):
    root = tmp_path / "horse2zebra"
    for index in range(3):
        save_png(root / "trainA" / f"{index}.png", np.full((6, 6, 3), 10 + index, np.uint8))
    for index in range(5):
        save_png(root / "trainB" / f"{index}.png", np.full((6, 6, 3), 100 + index, np.uint8))
    save_png(root / "testA" / "0.png", np.full((6, 6), 7, np.uint8))
    save_png(root / "testB" / "0.png", np.full((6, 6, 3), 8, np.uint8))
    data = open_img2img_data(root, "unpaired", 4)
    assert len(data) == 5 and (data.channels_A, data.channels_B, data.class_A, data.name) == (3, 3, None, "horse2zebra")
    ids_A, ids_B = identities(data, torch.arange(5))
    assert ids_A == [10, 11, 12, 10, 11] and sorted(ids_B) == [100, 101, 102, 103, 104]
    assert data.domain_images("A").shape == (3, 3, 4, 4) and data.domain_images("B").shape == (5, 3, 4, 4)
    test = open_img2img_data(root, "unpaired", 4, split="test")
    assert len(test) == 1 and (test.channels_A, test.channels_B) == (1, 3)
    (root / "testB").rename(root / "elsewhere")
    with pytest.raises(ValueError, match="testA/ and testB/ or valA/ and valB/"):
        open_img2img_data(root, "unpaired", 4, split="test")


# ---------------------------------------------------------------- batch_iterator

def test_batch_iterator_on_translation_sets(tmp_path, edges2fmnist):
    for data in (edges2fmnist, UnpairedImages(indexed_images(3, 0), indexed_images(5, 50), name="toy", xflip=True)):
        batches = batch_iterator(data, batch_size=8, seed=3)
        x, labels = next(batches)
        assert x.shape == (8, data.channels, data.resolution, data.resolution) and labels.tolist() == [0] * 8
        assert float(x.min()) >= -1 and float(x.max()) <= 1
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))[:8]
        torch.testing.assert_close(x, torch.stack([data[int(i)][0] for i in order]), rtol=0, atol=0)


# ---------------------------------------------------------------- super-resolution

def test_bicubic_helpers():
    constant = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(bicubic_downsample(constant, 4), torch.full((2, 3, 4, 4), 0.3))
    grid = torch.linspace(0, 1, 32)
    smooth = (torch.sin(2 * torch.pi * grid)[:, None] * torch.cos(torch.pi * grid)[None, :] * 0.8).expand(1, 1, 32, 32)
    lr = bicubic_downsample(smooth, 2)
    hr = bicubic_upsample(lr, 2)
    assert lr.shape == (1, 1, 16, 16) and hr.shape == (1, 1, 32, 32)
    assert float((hr - smooth).abs().mean()) < 0.01
    noise = torch.randn(2, 1, 16, 16) * 3                               # far outside [-1, 1]: clamped
    for out in (bicubic_downsample(noise, 2), bicubic_upsample(noise, 3)):
        assert float(out.min()) >= -1 and float(out.max()) <= 1
    assert bicubic_upsample(noise, 3).shape == (2, 1, 48, 48)
    with pytest.raises(ValueError, match="divisible by scale=3"):
        bicubic_downsample(constant, 3)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="scale must be an int"):
            bicubic_upsample(constant, bad)
    with pytest.raises(ValueError, match="float tensor"):
        bicubic_downsample(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2)


def test_sr_data(tmp_path):
    train = open_img2img_data(None, "sr", 32)
    assert len(train) == 6000 and train.channels == 1
    test = open_img2img_data("fashion-mnist", "sr", 32, split="test")
    assert len(test) == 1000 and test.split == "test"
    root = tmp_path / "photos"
    save_png(root / "train" / "a.png", np.full((8, 8, 3), 9, np.uint8))
    save_png(root / "test" / "b.png", np.full((8, 8, 3), 200, np.uint8))
    save_png(root / "test" / "c.png", np.full((8, 8, 3), 201, np.uint8))
    assert len(open_img2img_data(root, "sr", 8)) == 1
    folder_test = open_img2img_data(root, "sr", 8, split="test")
    assert len(folder_test) == 2 and folder_test[0][0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="direction applies to"):
        open_img2img_data(None, "sr", 32, direction="BtoA")
    with pytest.raises(ValueError, match="test/ or val/"):
        open_img2img_data(root / "test", "sr", 8, split="test")


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        open_img2img_data("edges2fmnist", "pix2pix", 32)
    with pytest.raises(ValueError, match="split must be one of"):
        open_img2img_data("edges2fmnist", "paired", 32, split="val")
    with pytest.raises(ValueError, match="direction must be one of"):
        open_img2img_data("edges2fmnist", "paired", 32, direction="AB")
    with pytest.raises(ValueError, match="resolution must be"):
        open_img2img_data("edges2fmnist", "paired", 0)
    with pytest.raises(FileNotFoundError, match="neither a built-in spec nor a directory"):
        open_img2img_data(tmp_path / "absent", "unpaired", 32)
    with pytest.raises(ValueError, match="spec for task 'paired' must be"):
        open_img2img_data(None, "paired", 32)
