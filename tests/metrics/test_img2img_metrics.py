"""ganfast.metrics.img2img: each pixel metric against an independent float64 computation (numpy,
explicit loops over windows and images) on fresh random inputs and odd sizes, known values,
invariants, bad inputs; translation_scores on real Fashion-MNIST test images; evaluate_img2img for
each task with small stand-in generators and datasets that satisfy the image-to-image contract."""
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganfast.metrics import (class_accuracy, classifier_features, evaluate_img2img, feature_distance, l1_error,
                             psnr, sharpness, ssim, translation_scores)
from ganfast.metrics.img2img import PSNR_MSE_FLOOR, ssim_window_size
from ganfast.metrics.images import rgb_to_gray

SNEAKER, ANKLE_BOOT = 7, 9


def random_images(shape, seed):
    """float32 in [-1, 1] of the given [N, C, H, W] shape (the generators' output dtype)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def noisy(x, std, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def assert_close(got, expected, tol, what=""):
    got, expected = np.atleast_1d(np.asarray(got, dtype=np.float64)), np.atleast_1d(np.asarray(expected))
    bad = np.flatnonzero(~(np.abs(got - expected) <= tol))
    assert bad.size == 0, f"{what}: first mismatches (index, got, expected): " + ", ".join(
        f"({i}, {got[i]!r}, {expected[i]!r})" for i in bad[:5])


# --------------------------------------------------------------------------- float64 oracles


def l1_oracle(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    return np.array([np.abs(a[i] - b[i]).sum() / a[i].size for i in range(a.shape[0])])


def psnr_oracle(a, b, data_range=2.0):
    a, b = a.double().numpy(), b.double().numpy()
    out = []
    for i in range(a.shape[0]):
        mse = max(((a[i] - b[i]) ** 2).sum() / a[i].size, PSNR_MSE_FLOOR * data_range ** 2)
        out.append(10 * math.log10(data_range ** 2 / mse))
    return np.array(out)


def ssim_oracle(a, b, data_range=2.0):
    """Wang et al.'s SSIM window by window: weighted moments of each k x k patch written out
    (variance as the weighted mean of squared deviations), on the images shifted to [0, 2]."""
    a, b = a.double().numpy() + 1.0, b.double().numpy() + 1.0
    n, c, h, w = a.shape
    k = min(11, h if h % 2 else h - 1)
    r = (k - 1) / 2
    window = np.array([[math.exp(-((y - r) ** 2 + (x - r) ** 2) / (2 * 1.5 ** 2)) for x in range(k)]
                       for y in range(k)])
    window /= window.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = []
    for i in range(n):
        values = []
        for ch in range(c):
            for y in range(h - k + 1):
                for x in range(w - k + 1):
                    pa, pb = a[i, ch, y:y + k, x:x + k], b[i, ch, y:y + k, x:x + k]
                    ma, mb = (window * pa).sum(), (window * pb).sum()
                    va, vb = (window * (pa - ma) ** 2).sum(), (window * (pb - mb) ** 2).sum()
                    cov = (window * (pa - ma) * (pb - mb)).sum()
                    values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        out.append(np.mean(values))
    return np.array(out)


def sharpness_oracle(images):
    x = images.double().numpy()
    n, c, h, w = x.shape
    out = []
    for i in range(n):
        total = 0.0
        for ch in range(c):
            for y in range(h - 1):
                for xx in range(w - 1):
                    total += math.hypot(x[i, ch, y, xx + 1] - x[i, ch, y, xx], x[i, ch, y + 1, xx] - x[i, ch, y, xx])
        out.append(total / (c * (h - 1) * (w - 1)))
    return np.array(out)


# Shapes that bite: a single pixel (SSIM window 1), 4 px (window 3), 7 px (window 7), 12 px (even,
# window 11 leaves 2x2 positions), 11 px (exactly one window), 16 px RGB, batch 1, odd channel counts.
SHAPES = [(3, 1, 1, 1), (2, 3, 4, 4), (3, 1, 7, 7), (2, 1, 12, 12), (1, 3, 11, 11), (2, 3, 16, 16)]


@pytest.mark.parametrize("shape", SHAPES)
def test_pixel_metrics_match_float64_oracles(shape):
    seed = 100 + sum(shape)
    a = random_images(shape, seed)
    b = noisy(a, 0.3, seed + 1)
    assert_close(l1_error(a, b, per_image=True), l1_oracle(a, b), 1e-12, "l1 per image")
    assert_close(l1_error(a, b), l1_oracle(a, b).mean(), 1e-12, "l1")
    for data_range in (2.0, 1.0):
        assert_close(psnr(a, b, data_range, per_image=True), psnr_oracle(a, b, data_range), 1e-9, "psnr per image")
        assert_close(psnr(a, b, data_range), psnr_oracle(a, b, data_range).mean(), 1e-9, "psnr")
        assert_close(ssim(a, b, data_range, per_image=True), ssim_oracle(a, b, data_range), 1e-10, "ssim per image")
    assert_close(ssim(a, b), ssim_oracle(a, b).mean(), 1e-10, "ssim")
    if shape[-1] >= 2:
        assert_close(sharpness(a, per_image=True), sharpness_oracle(a), 1e-12, "sharpness per image")
        assert_close(sharpness(b), sharpness_oracle(b).mean(), 1e-12, "sharpness")


def test_per_image_values_are_float64_tensors_and_means_are_floats():
    a, b = random_images((4, 1, 9, 9), 1), random_images((4, 1, 9, 9), 2)
    for fn in (l1_error, psnr, ssim):
        per = fn(a, b, per_image=True)
        assert isinstance(per, torch.Tensor) and per.dtype == torch.float64 and per.shape == (4,)
        assert type(fn(a, b)) is float
    assert sharpness(a, per_image=True).shape == (4,) and type(sharpness(a)) is float


def test_ssim_matches_torchmetrics_inside_its_padding():
    # torchmetrics pads by reflection ('same' map); away from the padding its map is the valid map.
    from torchmetrics.functional.image import structural_similarity_index_measure

    a = random_images((3, 3, 27, 27), 5)
    b = noisy(a, 0.4, 6)
    _, full = structural_similarity_index_measure(a.double() + 1, b.double() + 1, data_range=2.0,
                                                  return_full_image=True, reduction="none")
    assert_close(ssim(a, b, per_image=True), full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).numpy(), 1e-12, "ssim")


def test_psnr_known_values():
    # A constant offset d gives MSE = d^2: 10 log10(2^2 / d^2) on the [-1, 1] scale.
    base = random_images((3, 1, 10, 10), 7) * 0.4
    for d in (0.5, 0.1, 0.01):
        assert_close(psnr(base + d, base), 10 * math.log10(4 / d ** 2), 1e-4, f"offset {d}")
        assert_close(psnr(base + d, base, data_range=1.0), 10 * math.log10(1 / d ** 2), 1e-4, f"offset {d}, L=1")
    # Black vs white: MSE = 4, 0 dB.
    assert psnr(-torch.ones(1, 3, 5, 5), torch.ones(1, 3, 5, 5)) == 0.0


def test_psnr_of_identical_images_is_floored_not_infinite():
    a = random_images((2, 1, 8, 8), 8)
    b = a.clone()
    b[1] = noisy(a[1:], 0.2, 9)[0]
    per = psnr(a, b, per_image=True)
    assert per[0] == pytest.approx(-10 * math.log10(PSNR_MSE_FLOOR)) == pytest.approx(100.0)
    assert math.isfinite(psnr(a, b)) and psnr(a, b) == pytest.approx(float(per.mean()))


def test_l1_known_value():
    a = torch.full((2, 1, 3, 3), -0.25)
    assert l1_error(a, a + 0.5) == pytest.approx(0.5, abs=1e-7)
    assert l1_error(a, a) == 0.0


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance anywhere: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) with m = value + 1.
    c1 = (0.01 * 2) ** 2
    for v1, v2 in ((-0.5, 0.5), (0.0, 0.25), (1.0, -1.0)):
        m1, m2 = v1 + 1, v2 + 1
        expected = (2 * m1 * m2 + c1) / (m1 ** 2 + m2 ** 2 + c1)
        got = ssim(torch.full((1, 1, 13, 13), v1), torch.full((1, 1, 13, 13), v2))
        assert got == pytest.approx(expected, abs=1e-12), (v1, v2)


def test_ssim_invariants():
    x = random_images((3, 3, 20, 20), 10)
    y = noisy(x, 0.2, 11)
    assert_close(ssim(x, x, per_image=True), np.ones(3), 1e-12, "ssim(x, x)")
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-14)
    scores = [ssim(x, noisy(x, std, 12)) for std in (0.05, 0.2, 0.5, 1.0)]
    assert all(hi > lo for hi, lo in zip(scores, scores[1:])), scores
    assert scores[-1] < 0.5 < scores[0] < 1.0


def test_ssim_window_size():
    assert [ssim_window_size(r) for r in (1, 2, 3, 4, 9, 10, 11, 12, 32)] == [1, 1, 3, 3, 9, 9, 11, 11, 11]


def test_sharpness_known_values_and_blur():
    ramp = (-1 + 0.05 * torch.arange(16.0)).expand(2, 1, 16, 16)       # dx = 0.05, dy = 0
    assert sharpness(ramp) == pytest.approx(0.05, abs=1e-6)
    assert sharpness(ramp.transpose(-1, -2)) == pytest.approx(0.05, abs=1e-6)
    assert sharpness(torch.full((1, 3, 4, 4), 0.3)) == 0.0
    x = random_images((2, 1, 32, 32), 13)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert sharpness(blurred) < 0.5 * sharpness(x)


def test_pixel_metrics_accept_uint8_like_the_other_metrics():
    a = random_images((2, 1, 8, 8), 14)
    u = ((a + 1) * 127.5).round().to(torch.uint8)
    assert psnr(u, u.float() / 127.5 - 1) == pytest.approx(100.0)


@pytest.mark.parametrize("call, argument", [
    (lambda: psnr(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 9, 9)), "a, b"),
    (lambda: ssim(torch.zeros(2, 1, 8, 8), torch.zeros(1, 1, 8, 8)), "a, b"),
    (lambda: l1_error(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)), "a"),
    (lambda: l1_error(np.zeros((1, 1, 8, 8)), torch.zeros(1, 1, 8, 8)), "a"),
    (lambda: l1_error(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), float("nan"))), "b"),
    (lambda: psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8) + 200), "b"),
    (lambda: psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), data_range=0), "data_range"),
    (lambda: ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), data_range=float("inf")), "data_range"),
    (lambda: ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), data_range=True), "data_range"),
    (lambda: ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), per_image=1), "per_image"),
    (lambda: ssim(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)), "a"),
    (lambda: sharpness(torch.zeros(1, 1, 1, 1)), "images"),
    (lambda: sharpness(torch.zeros(0, 1, 4, 4)), "images"),
    (lambda: feature_distance(torch.zeros(2, 1, 32, 32), torch.zeros(3, 1, 32, 32)), "a, b"),
])
def test_bad_inputs_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        call()


# --------------------------------------------------------------------------- classifier metrics


@pytest.fixture(scope="module")
def fmnist_test():
    """Real Fashion-MNIST test images (32x32, [-1, 1]) by class: {class: [n, 1, 32, 32]}."""
    from ganfast.data import FashionMNIST

    dataset = FashionMNIST(resolution=32, split="test")
    images, labels = dataset.get_batch(range(len(dataset)))
    return {cls: images[labels == cls][:60] for cls in (SNEAKER, ANKLE_BOOT)}


def test_feature_distance_is_the_squared_classifier_feature_distance(fmnist_test):
    a, b = fmnist_test[SNEAKER][:6], fmnist_test[ANKLE_BOOT][:6]
    fa = classifier_features(a).double().numpy()
    fb = classifier_features(b).double().numpy()
    expected = np.array([((fa[i] - fb[i]) ** 2).sum() for i in range(6)])
    assert_close(feature_distance(a, b, per_image=True), expected, 1e-9 * expected.max(), "feature distance")
    assert feature_distance(a, b) == pytest.approx(expected.mean(), rel=1e-12)
    assert feature_distance(a, a) == 0.0
    assert feature_distance(b, a) == pytest.approx(feature_distance(a, b), rel=1e-12)
    # Same class is closer than another class, on average.
    assert feature_distance(a, fmnist_test[SNEAKER][6:12]) < feature_distance(a, b)
    # RGB goes through luma: the distance of the gray versions.
    rgb_a = torch.cat([a, a * 0.5, a.clamp(min=0)], dim=1)
    assert feature_distance(rgb_a, b.expand(-1, 3, -1, -1)) == pytest.approx(
        feature_distance(rgb_to_gray(rgb_a), b), rel=1e-6)


def test_translation_scores_on_real_fashion_mnist(fmnist_test):
    boots, sneakers = fmnist_test[ANKLE_BOOT], fmnist_test[SNEAKER]
    reference, translated = boots[:30], boots[30:]      # a perfect translator: other real boots
    scores = translation_scores(translated, ANKLE_BOOT, reference, source=sneakers)
    assert set(scores) == {"target_acc", "fid", "source_target_acc", "source_fid"}
    assert all(type(v) is float for v in scores.values())
    assert scores["target_acc"] >= 0.85, scores
    assert scores["source_target_acc"] <= 0.1, scores
    assert scores["fid"] < 0.5 * scores["source_fid"], scores
    # The accuracy is class_accuracy's (percent) as a fraction.
    expected = class_accuracy(translated, torch.full((translated.shape[0],), ANKLE_BOOT))["class_acc"] / 100
    assert scores["target_acc"] == pytest.approx(expected)
    assert set(translation_scores(translated, ANKLE_BOOT, reference)) == {"target_acc", "fid"}


@pytest.mark.parametrize("kwargs, argument", [
    (dict(target_class=10), "target_class"),
    (dict(target_class=-1), "target_class"),
    (dict(target_class=True), "target_class"),
    (dict(target_class=9.0), "target_class"),
    (dict(target_class=9, translated=torch.zeros(1, 1, 32, 32)), "translated"),
    (dict(target_class=9, target_reals=torch.zeros(1, 1, 32, 32)), "target_reals"),
    (dict(target_class=9, source=torch.zeros(2, 1, 32)), "source"),
])
def test_translation_scores_bad_inputs(kwargs, argument):
    args = dict(translated=torch.zeros(3, 1, 32, 32), target_reals=torch.zeros(3, 1, 32, 32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{argument}:"):
        translation_scores(args.pop("translated"), args.pop("target_class"), args.pop("target_reals"), **args)


# --------------------------------------------------------------------------- evaluate_img2img: stand-ins


class StandInPairs:
    """The contract's paired/unpaired test split: items (cat([A_i, B_i]), 0), channels_A/B,
    class_A/B, domain_images(domain) -> [n, C, R, R]; no get_batch (the per-item path)."""

    def __init__(self, a, b, class_a=None, class_b=None, domains=None):
        self.a, self.b = a, b
        self.channels_A, self.channels_B = a.shape[1], b.shape[1]
        self.channels = self.channels_A + self.channels_B
        self.num_classes, self.class_names = 0, ()
        self.class_A, self.class_B = class_a, class_b
        self.domains = domains

    def __len__(self):
        return self.a.shape[0]

    def __getitem__(self, i):
        return torch.cat([self.a[i], self.b[i]]), 0

    def domain_images(self, domain):
        return self.domains[domain]


class StandInPairsInMemory(StandInPairs):
    """The same with get_batch (the contract's in-memory sets)."""

    def get_batch(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return torch.cat([self.a[indices], self.b[indices]], dim=1), torch.zeros(len(indices), dtype=torch.int64)


class StandInImages:
    """A plain image dataset: items (image [C, R, R], label)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], 0


class Recorder(nn.Module):
    """Base of the stand-in generators: one parameter (so devices and modes have something to
    act on) and a log of the mode and grad state of each call."""

    def __init__(self, img2img):
        super().__init__()
        self.img2img = img2img
        self.z_dim = self.c_dim = 0
        self.weight = nn.Parameter(torch.ones(()))
        self.inner = nn.Linear(1, 1)
        self.calls = []

    def record(self):
        self.calls.append((self.training, self.inner.training, torch.is_grad_enabled()))


class PairedG(Recorder):
    def __init__(self, fn=lambda a: a):
        super().__init__("paired")
        self.fn = fn

    def forward(self, a):
        self.record()
        return self.fn(a) * self.weight


class TwoWayG(Recorder):
    def __init__(self, img2img="unpaired", ab=lambda x: x, ba=lambda x: x):
        super().__init__(img2img)
        self.ab, self.ba = ab, ba

    def forward(self, x, direction="AB"):
        self.record()
        return {"AB": self.ab, "BA": self.ba}[direction](x)


class SuperResolutionG(Recorder):
    def __init__(self, upsample, scale=2):
        super().__init__("sr")
        self.scale = scale
        self.upsample = upsample

    def forward(self, lr):
        self.record()
        return self.upsample(lr, self.scale)


def _stand_in_bicubic_module():
    module = types.ModuleType("ganfast.data.img2img")

    def bicubic_downsample(hr, scale):
        return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(-1, 1)

    def bicubic_upsample(lr, scale):
        return F.interpolate(lr, scale_factor=scale, mode="bicubic").clamp(-1, 1)

    module.bicubic_downsample, module.bicubic_upsample = bicubic_downsample, bicubic_upsample
    return module


@pytest.fixture
def img2img_data(monkeypatch):
    """ganfast.data.img2img, or while that module has not landed a stand-in with its two bicubic
    functions, installed where evaluate_img2img imports it from."""
    try:
        import ganfast.data.img2img as module
    except ModuleNotFoundError as error:
        if error.name != "ganfast.data.img2img":
            raise
        module = _stand_in_bicubic_module()
        monkeypatch.setitem(sys.modules, "ganfast.data.img2img", module)
    return module


def assert_json_floats(result):
    assert all(type(v) is float for v in result.values()), result
    json.dumps(result)


# --------------------------------------------------------------------------- evaluate_img2img: tasks


@pytest.mark.parametrize("dataset_type", [StandInPairs, StandInPairsInMemory])
def test_evaluate_paired_identity_equals_its_input_baseline(dataset_type):
    a = random_images((7, 1, 12, 12), 20)
    b = noisy(a, 0.3, 21)
    G = PairedG().train()
    result = evaluate_img2img(G, dataset_type(a, b), batch=3)
    assert set(result) == {"l1", "psnr", "ssim", "input_l1", "input_psnr", "input_ssim", "n"}
    assert_json_floats(result)
    for name in ("l1", "psnr", "ssim"):
        assert result[name] == result[f"input_{name}"], name
    assert result["l1"] == pytest.approx(l1_oracle(a, b).mean(), abs=1e-12)
    assert result["psnr"] == pytest.approx(psnr_oracle(a, b).mean(), abs=1e-9)
    assert result["ssim"] == pytest.approx(ssim_oracle(a, b).mean(), abs=1e-10)
    assert result["n"] == 7.0
    # Run in eval mode under no_grad, in 3 batches (3 + 3 + 1); the modes are restored afterwards.
    assert G.calls == [(False, False, False)] * 3
    assert G.training and G.inner.training and torch.is_grad_enabled()


def test_evaluate_paired_fixed_function_first_n_items_and_channel_change():
    a = random_images((9, 3, 8, 8), 22)
    b = random_images((9, 1, 8, 8), 23)
    G = PairedG(fn=lambda x: 0.5 * x.mean(dim=1, keepdim=True)).eval()
    G.inner.train()            # a mixed-mode module comes back mixed
    result = evaluate_img2img(G, StandInPairsInMemory(a, b), n=5, batch=2)
    # Edges (3 channels here) vs image (1): no input baseline.
    assert set(result) == {"l1", "psnr", "ssim", "n"}
    out = 0.5 * a[:5].mean(dim=1, keepdim=True)
    assert result["l1"] == pytest.approx(l1_oracle(out, b[:5]).mean(), abs=1e-7)
    assert result["psnr"] == pytest.approx(psnr_oracle(out, b[:5]).mean(), abs=1e-5)
    assert result["ssim"] == pytest.approx(ssim_oracle(out, b[:5]).mean(), abs=1e-6)
    assert result["n"] == 5.0
    assert not G.training and G.inner.training
    assert evaluate_img2img(G, StandInPairsInMemory(a, b), n=50)["n"] == 9.0


@pytest.mark.parametrize("task", ["unpaired", "unit"])
def test_evaluate_unpaired_cycle_without_classes(task):
    a = random_images((5, 1, 8, 8), 24)
    b = random_images((5, 3, 8, 8), 25)
    # A -> B repeats the gray channel; B -> A keeps the first channel: A -> B -> A is exact, B -> A -> B is not.
    G = TwoWayG(task, ab=lambda x: x.expand(-1, 3, -1, -1), ba=lambda x: x[:, :1])
    result = evaluate_img2img(G, StandInPairs(a, b), batch=2)
    assert set(result) == {"cycle_l1_A", "cycle_psnr_A", "cycle_l1_B", "cycle_psnr_B", "n"}
    assert_json_floats(result)
    assert result["cycle_l1_A"] == 0.0 and result["cycle_psnr_A"] == pytest.approx(100.0)
    cycled_b = b[:, :1].expand(-1, 3, -1, -1)
    assert result["cycle_l1_B"] == pytest.approx(l1_oracle(cycled_b, b).mean(), abs=1e-7)
    assert result["cycle_psnr_B"] == pytest.approx(psnr_oracle(cycled_b, b).mean(), abs=1e-5)
    assert all(call == (False, False, False) for call in G.calls) and len(G.calls) == 3 * 4


@pytest.mark.parametrize("task", ["unpaired", "unit"])
def test_evaluate_unpaired_translation_scores(fmnist_test, task):
    sneakers, boots = fmnist_test[SNEAKER], fmnist_test[ANKLE_BOOT]
    a, b = sneakers[:40], boots[:40]
    domains = {"A": sneakers[20:], "B": boots[20:]}
    data = StandInPairsInMemory(a, b, class_a=SNEAKER, class_b=ANKLE_BOOT, domains=domains)
    identity = evaluate_img2img(TwoWayG(task), data, batch=16)
    expected_keys = {"cycle_l1_A", "cycle_psnr_A", "cycle_l1_B", "cycle_psnr_B", "n"} | {
        f"{d}_{k}" for d in ("AB", "BA") for k in ("target_acc", "fid", "source_target_acc", "source_fid")}
    assert set(identity) == expected_keys
    assert_json_floats(identity)
    # A translator that does nothing scores exactly its baseline.
    for d in ("AB", "BA"):
        assert identity[f"{d}_target_acc"] == identity[f"{d}_source_target_acc"]
        assert identity[f"{d}_fid"] == identity[f"{d}_source_fid"]
    assert identity["AB_source_target_acc"] <= 0.1 and identity["BA_source_target_acc"] <= 0.1

    # A 'translator' that flips each image upside down (a fixed function): the scores are
    # translation_scores of its outputs against the target domain's held-out images.
    flip = TwoWayG(task, ab=lambda x: x.flip(-2), ba=lambda x: x.flip(-2))
    flipped = evaluate_img2img(flip, data, n=30, batch=7)
    ab = translation_scores(a[:30].flip(-2), ANKLE_BOOT, domains["B"], source=a[:30])
    ba = translation_scores(b[:30].flip(-2), SNEAKER, domains["A"], source=b[:30])
    for d, scores in (("AB", ab), ("BA", ba)):
        for key, value in scores.items():
            assert flipped[f"{d}_{key}"] == pytest.approx(value, rel=1e-9, abs=1e-12), (d, key)
    assert flipped["cycle_l1_A"] == 0.0 and flipped["n"] == 30.0


def test_evaluate_sr_bicubic_generator_equals_the_baseline(img2img_data):
    hr = noisy(random_images((5, 1, 16, 16), 26) * 0.2, 0.3, 27)
    G = SuperResolutionG(img2img_data.bicubic_upsample, scale=2)
    result = evaluate_img2img(G, StandInImages(hr), batch=2)
    metrics = ("psnr", "ssim", "sharpness", "feature_distance")
    assert set(result) == set(metrics) | {f"bicubic_{m}" for m in metrics} | {"hr_sharpness", "n"}
    assert_json_floats(result)
    for m in metrics:
        assert result[m] == result[f"bicubic_{m}"], m
    assert result["hr_sharpness"] == pytest.approx(sharpness_oracle(hr).mean(), abs=1e-9)
    baseline = img2img_data.bicubic_upsample(img2img_data.bicubic_downsample(hr, 2), 2)
    assert result["psnr"] == pytest.approx(psnr_oracle(baseline, hr).mean(), abs=1e-6)
    assert result["ssim"] == pytest.approx(ssim_oracle(baseline, hr).mean(), abs=1e-7)
    # Bicubic interpolation loses the fine detail of noisy images.
    assert result["bicubic_sharpness"] < result["hr_sharpness"]


def test_evaluate_sr_other_generator_rgb(img2img_data):
    hr = random_images((4, 3, 12, 12), 28)
    nearest = SuperResolutionG(lambda lr, s: F.interpolate(lr, scale_factor=s, mode="nearest"), scale=3)
    result = evaluate_img2img(nearest, StandInImages(hr))
    # RGB: no feature distance (the classifier is a grayscale Fashion-MNIST one).
    assert set(result) == {"psnr", "ssim", "sharpness", "bicubic_psnr", "bicubic_ssim", "bicubic_sharpness",
                           "hr_sharpness", "n"}
    lr = img2img_data.bicubic_downsample(hr, 3)
    sr = F.interpolate(lr, scale_factor=3, mode="nearest")
    assert result["psnr"] == pytest.approx(psnr_oracle(sr, hr).mean(), abs=1e-6)
    assert result["sharpness"] == pytest.approx(sharpness_oracle(sr).mean(), abs=1e-7)
    assert result["psnr"] != result["bicubic_psnr"]


def test_evaluate_seeds_a_noisy_generator_and_restores_the_global_rng():
    a = random_images((4, 1, 8, 8), 29)
    G = PairedG(fn=lambda x: (x + 0.1 * torch.randn_like(x)).clamp(-1, 1))
    data = StandInPairs(a, a)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = evaluate_img2img(G, data, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluate_img2img(G, data, seed=3) == first
    assert evaluate_img2img(G, data, seed=3, device=None) == first      # None: G's own device
    assert evaluate_img2img(G, data, seed=4)["l1"] != first["l1"]


def test_evaluate_bad_arguments():
    a = random_images((3, 1, 8, 8), 30)
    data = StandInPairs(a, a)
    cases = [
        (lambda: evaluate_img2img(nn.Linear(1, 1), data), "G"),
        (lambda: evaluate_img2img(PairedG(fn=lambda x: x[..., :4, :4]), data), "G"),
        (lambda: evaluate_img2img(SuperResolutionG(lambda lr, s: lr, scale=0), StandInImages(a)), "G"),
        (lambda: evaluate_img2img(PairedG(), data, n=0), "n"),
        (lambda: evaluate_img2img(PairedG(), data, n=2.0), "n"),
        (lambda: evaluate_img2img(PairedG(), data, batch=0), "batch"),
        (lambda: evaluate_img2img(PairedG(), data, seed=None), "seed"),
        (lambda: evaluate_img2img(PairedG(), StandInImages(a)), "dataset"),
        (lambda: evaluate_img2img(PairedG(), 5), "dataset"),
    ]
    for call, argument in cases:
        with pytest.raises(ValueError, match=f"^{argument}:"):
            call()
    # A failed evaluation still restores the mode.
    G = PairedG(fn=lambda x: x[..., :4, :4]).train()
    with pytest.raises(ValueError):
        evaluate_img2img(G, data)
    assert G.training


def test_evaluate_on_the_real_held_out_sets():
    # The contract's data end to end (ganfast.data.img2img, test splits) with do-nothing generators.
    from ganfast.data.img2img import bicubic_upsample, open_img2img_data

    paired = open_img2img_data("edges2fmnist", "paired", resolution=32, split="test")
    result = evaluate_img2img(PairedG(), paired, n=48)
    assert result["l1"] == result["input_l1"] and result["n"] == 48.0
    x = paired.get_batch(range(48))[0]
    assert result["psnr"] == pytest.approx(psnr(x[:, :1], x[:, 1:]), abs=1e-9)

    unpaired = open_img2img_data("fmnist:sneaker-ankleboot", "unpaired", resolution=32, split="test")
    result = evaluate_img2img(TwoWayG(), unpaired, n=48)
    assert result["AB_target_acc"] == result["AB_source_target_acc"] <= 0.1
    assert result["BA_fid"] == result["BA_source_fid"] > 0
    assert result["cycle_l1_A"] == result["cycle_l1_B"] == 0.0

    hr_images = open_img2img_data(None, "sr", resolution=32, split="test")
    result = evaluate_img2img(SuperResolutionG(bicubic_upsample, scale=4), hr_images, n=48)
    assert result["psnr"] == result["bicubic_psnr"] and result["feature_distance"] > 0
    assert result["sharpness"] < result["hr_sharpness"]
