"""ganfast.training.regularizers against hand computations: R1 on linear and quadratic D's (and its
gradient reaching D's weights, labels, GradScaler, autocast), WGAN-GP and DRAGAN on linear D's
(where the penalty does not depend on the sampled points) and on where they sample, path length
with a linear synthesis (exact lengths) and on a tiny StyleGAN2 G, lazy regularization's
published numbers, and BigGAN's orthogonal regularization on a hand matrix."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganfast.models.stylegan2 import StyleGAN2Generator
from ganfast.nn.spectral_norm import spectral_norm
from ganfast.training.regularizers import (LazySchedule, PathLengthRegularizer, dragan_penalty, gradient_penalty,
                                           lazy_optimizer_args, orthogonal_regularization, r1_penalty)

W_345 = torch.tensor([3.0, 4.0])     # ||w|| = 5


def linear_d(w: torch.Tensor):
    """D(x) = x.flatten(1) . w: its input gradient is w at every x."""
    return lambda x: x.flatten(1) @ w.to(x.dtype)


def quadratic_d(x: torch.Tensor) -> torch.Tensor:
    """D(x) = ||x||^2 / 2 per sample: its input gradient is x itself."""
    return 0.5 * x.flatten(1).square().sum(1)


class RecordingD(nn.Module):
    """A linear D that keeps the last input it saw (to check where a penalty samples)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.seen = None

    def forward(self, x, c=None):
        self.seen = x.detach().clone()
        return x.flatten(1) @ self.w


# ---------------------------------------------------------------- R1

def test_r1_on_a_linear_d_is_the_squared_weight_norm():
    real = torch.randn(5, 2)
    penalty, logits = r1_penalty(linear_d(W_345), real)
    assert penalty.item() == 25.0
    assert torch.equal(logits, real @ W_345)


def test_r1_sums_per_sample_then_averages():
    real = torch.tensor([[1.0, 2.0], [3.0, 0.0]])               # ||x||^2 = 5 and 9
    penalty, _ = r1_penalty(quadratic_d, real)
    assert penalty.item() == (5 + 9) / 2


def test_r1_on_images_and_its_gradient_reaches_d():
    # D = a Linear on flattened [N, 1, 2, 2] images; R1 = ||W||^2 and d R1 / d W = 2 W
    D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        D[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    penalty, logits = r1_penalty(D, torch.randn(3, 1, 2, 2))
    assert logits.shape == (3,)                                 # D's [N, 1] as [N]
    assert penalty.item() == pytest.approx(1 + 4 + 0.25 + 9)
    penalty.backward()
    assert torch.allclose(D[1].weight.grad, 2 * D[1].weight.detach())
    assert D[1].bias.grad is None                               # the gradient does not depend on the bias


def test_r1_passes_labels_to_a_conditional_d():
    table = torch.tensor([[1.0, 0.0], [3.0, 4.0]])              # class 0: ||w||^2 = 1, class 1: 25
    D = lambda x, c: (x * table[c]).sum(1)                      # noqa: E731
    penalty, _ = r1_penalty(D, torch.randn(3, 2), c=torch.tensor([0, 1, 1]))
    assert penalty.item() == pytest.approx((1 + 25 + 25) / 3)


def test_r1_with_a_grad_scaler_unscales_the_gradient():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    real = torch.randn(4, 2)
    penalty, _ = r1_penalty(linear_d(W_345), real, scaler=scaler)
    assert penalty.item() == 25.0


def test_r1_under_autocast_is_float32():
    D = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        D.weight.copy_(W_345[None])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty, logits = r1_penalty(D, torch.randn(4, 2))
    assert logits.dtype == torch.float32 and penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(25.0, rel=1e-2)      # bf16 matmul in the backward


def test_penalties_reject_non_batches():
    for call in (lambda x: r1_penalty(quadratic_d, x), lambda x: dragan_penalty(quadratic_d, x),
                 lambda x: gradient_penalty(quadratic_d, x, x)):
        with pytest.raises(ValueError, match=r"\[N, \.\.\.\]"):
            call(torch.zeros(3))
    with pytest.raises(ValueError, match="logits"):
        r1_penalty(lambda x: x, torch.randn(3, 2))              # a D returning [N, 2]


# ---------------------------------------------------------------- WGAN-GP

def test_gradient_penalty_on_linear_d():
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    assert gradient_penalty(linear_d(W_345 / 5), real, fake).item() == pytest.approx(0.0, abs=1e-12)
    assert gradient_penalty(linear_d(W_345), real, fake).item() == pytest.approx((5 - 1) ** 2)
    assert gradient_penalty(linear_d(W_345), real, fake, target=5.0).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_uses_per_sample_norms():
    # real == fake pins x_hat to real; D's gradient there is x: norms 5 and 1
    real = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert gradient_penalty(quadratic_d, real, real.clone()).item() == pytest.approx(((5 - 1) ** 2 + 0) / 2)


def test_gradient_penalty_samples_on_the_segments():
    D = RecordingD(torch.tensor([1.0, 1.0, 1.0]))
    real, fake = torch.randn(64, 3), torch.randn(64, 3)
    gradient_penalty(D, real, fake)
    # x_hat_i = real_i + t_i (fake_i - real_i) with one t_i in [0, 1] per sample
    t = (D.seen - real) / (fake - real)
    assert torch.allclose(t, t[:, :1].expand_as(t), atol=1e-4)
    assert (t >= -1e-5).all() and (t <= 1 + 1e-5).all() and t[:, 0].std() > 0.1


def test_gradient_penalty_shape_mismatch():
    with pytest.raises(ValueError, match="fake must have real's shape"):
        gradient_penalty(quadratic_d, torch.randn(2, 3), torch.randn(2, 4))


# ---------------------------------------------------------------- DRAGAN

@pytest.mark.parametrize("seed", [0, 1])
def test_dragan_on_linear_d_ignores_the_sampled_points(seed):
    torch.manual_seed(seed)
    real = torch.randn(8, 1, 2, 2)
    w = torch.tensor([1.0, 2.0, 2.0, 4.0])                      # ||w|| = 5
    assert dragan_penalty(linear_d(w), real).item() == pytest.approx(16.0)
    assert dragan_penalty(linear_d(w), real, k=5.0).item() == pytest.approx(0.0, abs=1e-10)


def test_dragan_perturbs_upward_within_noise_scale_times_batch_std():
    D = RecordingD(torch.tensor([1.0, 1.0]))
    real = torch.randn(256, 2) * 3 + 1
    dragan_penalty(D, real, noise_scale=0.5)
    shift = D.seen - real
    bound = 0.5 * real.std(correction=0).item()
    assert shift.min() >= 0 and shift.max() <= bound * (1 + 1e-6)
    assert shift.max() > 0.5 * bound                            # it does perturb
    dragan_penalty(D, real, noise_scale=0.0)
    assert torch.equal(D.seen, real)


# ---------------------------------------------------------------- path length

class LinearStyleG:
    """mapping(z) = z W repeated over num_ws = 2 copies (w_dim 4); synthesis(ws) = s0 ws[:, 0] + s1 ws[:, 1]
    viewed as [N, 1, 2, 2]. Then d sum(img * y) / d ws[:, k] = s_k y, so the path length of y is
    exactly ||y|| sqrt((s0^2 + s1^2) / 2)."""

    def __init__(self, s0: float, s1: float):
        self.map_weight = torch.randn(3, 4, requires_grad=True)
        self.scales = torch.tensor([s0, s1], requires_grad=True)

    def mapping(self, z, c=None):
        return (z @ self.map_weight)[:, None].repeat(1, 2, 1)

    def synthesis(self, ws):
        return (ws * self.scales[None, :, None]).sum(1).view(-1, 1, 2, 2)


def expected_noise(seed: int, n: int) -> torch.Tensor:
    """The noise the regularizer draws right after torch.manual_seed(seed): N(0, 1) / sqrt(H W)."""
    torch.manual_seed(seed)
    return torch.randn(n, 1, 2, 2) / 2.0


def test_path_length_on_a_linear_synthesis_is_exact():
    G = LinearStyleG(1.0, 2.0)
    reg = PathLengthRegularizer(decay=0.01, batch_shrink=2)
    z = torch.randn(6, 3)
    torch.manual_seed(123)
    penalty, lengths = reg.penalty(G, z)
    expected = expected_noise(123, 3).flatten(1).norm(dim=1) * math.sqrt((1 + 4) / 2)
    assert lengths.shape == (3,) and torch.allclose(lengths, expected, rtol=1e-6)
    pl_mean = 0.01 * expected.mean()                            # lerp from 0
    assert reg.pl_mean.item() == pytest.approx(pl_mean.item(), rel=1e-6)
    assert penalty.item() == pytest.approx((expected - pl_mean).square().mean().item(), rel=1e-5)
    # a second step moves pl_mean by `decay` of the way toward the new mean
    torch.manual_seed(7)
    _, lengths2 = reg.penalty(G, z)
    assert reg.pl_mean.item() == pytest.approx((pl_mean + 0.01 * (lengths2.mean() - pl_mean)).item(), rel=1e-6)


def test_path_length_penalty_trains_the_synthesis():
    # penalty = mean((L sqrt((s0^2 + s1^2)/2) - m)^2) with m = pl_mean: its gradient reaches the
    # synthesis scales through the double backward, and is zero for the mapping (ws do not change J)
    G = LinearStyleG(1.0, 2.0)
    penalty, _ = PathLengthRegularizer().penalty(G, torch.randn(4, 3))
    penalty.backward()
    assert G.scales.grad is not None and (G.scales.grad > 0).all()
    assert G.map_weight.grad is None or torch.equal(G.map_weight.grad, torch.zeros(3, 4))


def test_path_length_batch_shrink_keeps_one_sample():
    _, lengths = PathLengthRegularizer(batch_shrink=4).penalty(LinearStyleG(1.0, 1.0), torch.randn(1, 3))
    assert lengths.shape == (1,)
    with pytest.raises(ValueError, match="batch_shrink"):
        PathLengthRegularizer(batch_shrink=0)


def test_path_length_on_a_tiny_stylegan2():
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, img_channels=1, channel_base=64, channel_max=8,
                           mapping_layers=1)
    reg = PathLengthRegularizer()
    assert G.training
    penalty, lengths = reg.penalty(G, torch.randn(4, 8))
    assert torch.count_nonzero(G.mapping.w_avg) == 0          # the regularization pass leaves w_avg alone
    assert lengths.shape == (2,) and torch.isfinite(penalty) and (lengths > 0).all()
    assert reg.pl_mean.item() == pytest.approx(0.01 * lengths.mean().item(), rel=1e-5)
    penalty.backward()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)
    assert "pl_mean" in reg.state_dict()


# ---------------------------------------------------------------- lazy regularization

def test_lazy_optimizer_args_published_numbers():
    # StyleGAN2 (config F): D regularized every 16 steps, lr 0.0025, betas (0, 0.99)
    lr, (beta1, beta2) = lazy_optimizer_args(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002352941176470588, rel=1e-12)
    assert beta1 == 0.0 and beta2 == pytest.approx(0.99 ** (16 / 17), rel=1e-12)
    assert beta2 == pytest.approx(0.9905855, abs=1e-7)           # exp((16/17) ln 0.99)
    # G's path length every 4 steps: ratio 4/5
    lr, (_, beta2) = lazy_optimizer_args(0.0025, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.002) and beta2 == pytest.approx(0.99 ** 0.8)


@pytest.mark.parametrize("interval", [None, 0])
def test_not_lazy_leaves_the_optimizer_alone(interval):
    assert lazy_optimizer_args(1e-3, (0.5, 0.9), interval) == (1e-3, (0.5, 0.9))
    schedule = LazySchedule(interval)
    assert schedule.weight == 1 and all(schedule.due(step) for step in range(5))


def test_lazy_schedule():
    schedule = LazySchedule(16)
    assert [step for step in range(40) if schedule.due(step)] == [0, 16, 32]
    assert schedule.weight == 16
    with pytest.raises(ValueError, match="interval"):
        LazySchedule(-1)
    with pytest.raises(ValueError, match="step"):
        schedule.due(-1)


# ---------------------------------------------------------------- orthogonal regularization

HAND = torch.tensor([[1.0, 2.0], [3.0, 4.0]])   # W W^T = [[5, 11], [11, 25]]: off-diagonal 2 * 11^2 = 242


def test_orthogonal_regularization_on_a_hand_matrix():
    layer = nn.Linear(2, 2)                                     # its bias (1-D) is skipped
    with torch.no_grad():
        layer.weight.copy_(HAND)
    assert orthogonal_regularization(layer, beta=1e-4).item() == pytest.approx(242e-4)
    # gradient: 4 beta (W W^T * (1 - I)) W = 4 [[0, 11], [11, 0]] W at beta = 1
    orthogonal_regularization(layer, beta=1.0).backward()
    assert torch.allclose(layer.weight.grad, 4 * torch.tensor([[33.0, 44.0], [11.0, 22.0]]))
    assert layer.bias.grad is None


def test_orthogonal_regularization_reshapes_conv_filters():
    conv = nn.Conv2d(1, 2, kernel_size=(1, 2), bias=False)      # weight [2, 1, 1, 2] -> [2, 2] = HAND
    with torch.no_grad():
        conv.weight.copy_(HAND.view(2, 1, 1, 2))
    assert orthogonal_regularization(conv, beta=1.0).item() == pytest.approx(242.0)


def test_orthogonal_regularization_is_zero_for_orthonormal_rows():
    q, _ = torch.linalg.qr(torch.randn(5, 3))                   # 3 orthonormal columns
    layer = nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(q.t() * 7)                           # orthogonal rows of any norm: the diagonal is free
    assert orthogonal_regularization(layer).item() == pytest.approx(0.0, abs=1e-9)


def test_orthogonal_regularization_skips_embeddings_and_uses_raw_spectral_norm_weights():
    model = nn.Sequential(nn.Embedding(4, 2), spectral_norm(nn.Linear(2, 2)))
    with torch.no_grad():
        model[0].weight.copy_(HAND.repeat(2, 1))
        model[1].parametrizations.weight.original.copy_(HAND)
    # only the Linear's raw weight counts (W / sigma would give 242 / sigma^4)
    assert orthogonal_regularization(model, beta=1.0).item() == pytest.approx(242.0)
    assert orthogonal_regularization(nn.Embedding(3, 2)).item() == 0.0


@pytest.mark.parametrize("mean_in_graph", [True, False])
def test_path_length_gradient_through_pl_mean(mean_in_graph):
    # NVIDIA's StyleGAN2Loss differentiates through pl_mean = buffer.lerp(mean(L), decay); the
    # hand formula below does the same with autograd on the scales, in float64
    torch.manual_seed(0)
    G = LinearStyleG(1.0, 2.0)
    G.scales = G.scales.detach().double().requires_grad_(True)
    G.map_weight = G.map_weight.detach().double().requires_grad_(True)
    reg = PathLengthRegularizer(decay=0.3, batch_shrink=1, mean_in_graph=mean_in_graph).double()
    reg.pl_mean.fill_(0.5)
    z = torch.randn(4, 3, dtype=torch.float64)
    torch.manual_seed(11)
    penalty, _ = reg.penalty(G, z)
    got, = torch.autograd.grad(penalty, G.scales)

    torch.manual_seed(11)
    y = (torch.randn(4, 1, 2, 2, dtype=torch.float64) / 2.0).flatten(1).norm(dim=1)   # the regularizer's draw
    scales = G.scales.detach().clone().requires_grad_(True)
    lengths = y * ((scales.square().sum()) / 2).sqrt()
    m = torch.tensor(0.5, dtype=torch.float64).lerp(lengths.mean(), 0.3)
    expected, = torch.autograd.grad((lengths - (m if mean_in_graph else m.detach())).square().mean(), scales)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14), (got, expected)
    assert reg.pl_mean.item() == pytest.approx(m.item(), rel=1e-12)


def test_path_length_mean_in_graph_changes_the_gradient():
    def grad(mean_in_graph):
        torch.manual_seed(0)
        G = LinearStyleG(1.0, 2.0)
        reg = PathLengthRegularizer(decay=0.3, batch_shrink=1, mean_in_graph=mean_in_graph)
        torch.manual_seed(5)
        penalty, _ = reg.penalty(G, torch.randn(4, 3))
        return torch.autograd.grad(penalty, G.scales)[0]
    assert not torch.allclose(grad(True), grad(False), rtol=1e-3)


def test_path_length_nvlabs_options_mix_styles_and_update_w_avg():
    # stylegan2-ada-pytorch's Gpl pass goes through run_G: style mixing, and (in training mode) a
    # w_avg update; ganfast's defaults do neither
    def run(**options):
        torch.manual_seed(0)
        G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, img_channels=1, channel_base=64, channel_max=8,
                               mapping_layers=1, style_mixing_prob=1.0)
        reg = PathLengthRegularizer(**options)
        torch.manual_seed(3)
        _, lengths = reg.penalty(G, torch.randn(4, 8))
        return lengths, G.mapping.w_avg.clone()

    plain, w_plain = run()
    mixed, w_mixed = run(style_mixing=True)
    updated, w_updated = run(update_w_avg=True)
    assert torch.count_nonzero(w_plain) == 0 and torch.equal(w_mixed, w_plain)
    assert torch.count_nonzero(w_updated) > 0 and torch.equal(updated, plain)
    assert not torch.allclose(mixed, plain)       # the Jacobian is taken at other ws
    assert "style_mixing=True" in repr(PathLengthRegularizer(style_mixing=True))
