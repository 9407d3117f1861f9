"""Img2ImgTrainer: each task's step computes the losses of its reference, in its order, checked by
hand in float64 with small stand-in networks; the history pool; lr decay; exact resume."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganfast.training import TrainingConfig
from ganfast.training.img2img import Img2ImgTrainer, adversarial_d_loss, adversarial_g_loss
from ganfast.training.tricks import ExperienceReplay

R = 8


class _Paired(nn.Module):
    img2img, z_dim, c_dim, img_resolution = "paired", 0, 0, R

    def __init__(self, cin=1, cout=2):
        super().__init__()
        self.in_channels, self.out_channels, self.img_channels = cin, cout, cout
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x))


class _PairD(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv2d(c, 1, 3, stride=2)

    def forward(self, x, y):
        return self.conv(torch.cat([x, y], 1))          # [N, 1, h, w] patch logits


class _Unpaired(nn.Module):
    img2img, z_dim, c_dim, img_resolution = "unpaired", 0, 0, R

    def __init__(self, ca=2, cb=2):
        super().__init__()
        self.channels_A, self.channels_B, self.img_channels = ca, cb, cb
        self.G_AB, self.G_BA = nn.Conv2d(ca, cb, 3, padding=1), nn.Conv2d(cb, ca, 3, padding=1)

    def forward(self, x, direction="AB"):
        return torch.tanh((self.G_AB if direction == "AB" else self.G_BA)(x))


class _TwoD(nn.Module):
    def __init__(self, ca=2, cb=2):
        super().__init__()
        self.D_A, self.D_B = nn.Conv2d(ca, 1, 3, stride=2), nn.Conv2d(cb, 1, 3, stride=2)

    def forward(self, x, domain="A"):
        return (self.D_A if domain == "A" else self.D_B)(x)


class _Unit(nn.Module):
    img2img, z_dim, c_dim, img_resolution = "unit", 0, 0, R

    def __init__(self, c=1):
        super().__init__()
        self.channels_A = self.channels_B = self.img_channels = c
        self.enc = nn.ModuleDict({"A": nn.Conv2d(c, 4, 3, padding=1), "B": nn.Conv2d(c, 4, 3, padding=1)})
        self.shared_encoder = nn.Conv2d(4, 4, 1)
        self.shared_decoder = nn.Conv2d(4, 4, 1)
        self.dec = nn.ModuleDict({"A": nn.Conv2d(4, c, 3, padding=1), "B": nn.Conv2d(4, c, 3, padding=1)})

    def encode(self, x, domain):
        return self.shared_encoder(torch.relu(self.enc[domain](x)))

    def decode(self, h, domain):
        return torch.tanh(self.dec[domain](torch.relu(self.shared_decoder(h))))

    def forward(self, x, direction="AB"):
        return self.decode(self.encode(x, direction[0]), direction[1])


class _SR(nn.Module):
    img2img, z_dim, c_dim, img_resolution, scale = "sr", 0, 0, R, 2

    def __init__(self, c=1):
        super().__init__()
        self.in_channels = self.img_channels = c
        self.conv = nn.Conv2d(c, 4 * c, 3, padding=1)

    def forward(self, lr):
        return torch.tanh(F.pixel_shuffle(self.conv(lr), 2))


class _SRD(nn.Module):
    def __init__(self, c=1):
        super().__init__()
        self.conv = nn.Conv2d(c, 1, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean((1, 2, 3))


class _Data(torch.utils.data.Dataset):
    """In-memory items (x [C, R, R], 0) with A and B stacked on channels (or SR's HR images)."""

    def __init__(self, n, channels, channels_A=None, channels_B=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, channels, R, R, generator=g, dtype=torch.float64) * 2 - 1
        self.channels, self.num_classes = channels, 0
        if channels_A is not None:
            self.channels_A, self.channels_B = channels_A, channels_B

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], 0

    def get_batch(self, indices):
        idx = torch.as_tensor(list(indices))
        return self.x[idx], torch.zeros(len(idx), dtype=torch.int64)


def _cfg(**kw):
    base = dict(loss="nonsaturating", batch=4, lr=1e-2, betas=(0.5, 0.999), ema_kimg=0.0)
    base.update(kw)
    return TrainingConfig(**base)


def _first_batch(trainer):
    """The reals of the trainer's first step (the data stream is deterministic)."""
    from ganfast.data import batch_iterator
    return next(iter(batch_iterator(trainer.data, trainer.local_batch, seed=trainer.config.seed)))[0]


def _close(a, b):
    """Step statistics are float32 (the trainer's stat buffers): float32 rounding of float64 values."""
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=1e-6, atol=1e-7)


def test_paired_step_is_pix2pix():
    """D first on the (x, y) / (x, G(x)) pairs, halved; then G's BCE + 100 L1 on the same fake with
    the updated D."""
    torch.manual_seed(0)
    G, D = _Paired().double(), _PairD().double()
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    trainer = Img2ImgTrainer(G, D, _Data(8, 3, 1, 2), _cfg())
    x = _first_batch(trainer)
    stats = dict(trainer.step())
    A, B = x[:, :1], x[:, 1:]
    fake = G0(A)
    _close(stats["loss_D"], 0.5 * (F.softplus(-D0(A, B)).mean() + F.softplus(D0(A, fake)).mean()))
    D1 = trainer.D              # the G phase sees D after its step
    _close(stats["loss_G"], F.softplus(-D1(A, fake)).mean() + 100 * (fake - B).abs().mean())
    _close(stats["l1"], (fake - B).abs().mean())
    assert not torch.equal(G.conv.weight, G0.conv.weight) and not torch.equal(D.conv.weight, D0.conv.weight)


def test_unpaired_step_is_cyclegan():
    """G first (adversarial + 10 cycle + 0.5 * 10 identity, LSGAN), then D_A / D_B on those fakes
    (the pool shows the first batch as it is), halved."""
    torch.manual_seed(0)
    G, D = _Unpaired().double(), _TwoD().double()
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    trainer = Img2ImgTrainer(G, D, _Data(8, 4, 2, 2), _cfg(loss="lsgan"))
    x = _first_batch(trainer)
    stats = dict(trainer.step())
    A, B = x[:, :2], x[:, 2:]
    fB, fA = G0(A, "AB"), G0(B, "BA")
    adv = (D0(fB, "B") - 1).square().mean() + (D0(fA, "A") - 1).square().mean()
    cycle = (G0(fB, "BA") - A).abs().mean() + (G0(fA, "AB") - B).abs().mean()
    identity = (G0(B, "AB") - B).abs().mean() + (G0(A, "BA") - A).abs().mean()
    _close(stats["loss_G"], adv + 10 * cycle + 5 * identity)
    _close(stats["cycle"], cycle)
    _close(stats["identity"], identity)
    d_a = (D0(A, "A") - 1).square().mean() + D0(fA, "A").square().mean()
    d_b = (D0(B, "B") - 1).square().mean() + D0(fB, "B").square().mean()
    _close(stats["loss_D"], 0.5 * (d_a + d_b))
    assert len(trainer.pools["A"]) == 4 and len(trainer.pools["B"]) == 4


def test_unit_step_losses():
    """D on noisy-code translations (no gradient to G), then G's GAN + 10 recon + 0.01 KL + 10 cycle
    + 0.01 cycle KL; the noise replayed from the global RNG state before the step."""
    torch.manual_seed(0)
    G, D = _Unit().double(), _TwoD(1, 1).double()
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    trainer = Img2ImgTrainer(G, D, _Data(8, 2, 1, 1), _cfg(loss="lsgan"))
    x = _first_batch(trainer)
    state = torch.get_rng_state()
    stats = dict(trainer.step())
    torch.set_rng_state(state)
    A, B = x[:, :1], x[:, 1:]
    with torch.no_grad():
        hA, hB = G0.encode(A, "A"), G0.encode(B, "B")
        fB, fA = G0.decode(hA + torch.randn_like(hA), "B"), G0.decode(hB + torch.randn_like(hB), "A")
    d = ((D0(A, "A") - 1).square().mean() + D0(fA, "A").square().mean()
         + (D0(B, "B") - 1).square().mean() + D0(fB, "B").square().mean())
    _close(stats["loss_D"], d)
    D1 = trainer.D
    hA, hB = G0.encode(A, "A"), G0.encode(B, "B")
    zA, zB = hA + torch.randn_like(hA), hB + torch.randn_like(hB)
    rA, rB, fB, fA = G0.decode(zA, "A"), G0.decode(zB, "B"), G0.decode(zA, "B"), G0.decode(zB, "A")
    hBA, hAB = G0.encode(fA, "A"), G0.encode(fB, "B")
    cA, cB = G0.decode(hAB + torch.randn_like(hAB), "A"), G0.decode(hBA + torch.randn_like(hBA), "B")
    recon = (rA - A).abs().mean() + (rB - B).abs().mean()
    kl = hA.square().mean() + hB.square().mean()
    cycle = (cA - A).abs().mean() + (cB - B).abs().mean()
    cycle_kl = hAB.square().mean() + hBA.square().mean()
    adv = (D1(fB, "B") - 1).square().mean() + (D1(fA, "A") - 1).square().mean()
    _close(stats["loss_G"], adv + 10 * recon + 0.01 * kl + 10 * cycle + 0.01 * cycle_kl)
    _close(stats["recon"], recon)
    _close(stats["cycle_kl"], cycle_kl)


def test_sr_step_is_srgan():
    """D first on HR vs G(bicubic-downsampled HR); G's content (pixel MSE) + 1e-3 BCE on the same SR."""
    from ganfast.data.img2img import bicubic_downsample
    torch.manual_seed(0)
    G, D = _SR().double(), _SRD().double()
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    trainer = Img2ImgTrainer(G, D, _Data(8, 1), _cfg(content_loss="mse"))
    hr = _first_batch(trainer)
    stats = dict(trainer.step())
    sr = G0(bicubic_downsample(hr, 2))
    _close(stats["loss_D"], F.softplus(-D0(hr)).mean() + F.softplus(D0(sr)).mean())
    _close(stats["loss_G"], (sr - hr).square().mean() + 1e-3 * F.softplus(-trainer.D(sr)).mean())


def test_adversarial_losses():
    r, f = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    _close(adversarial_d_loss("lsgan", r, f), ((r - 1) ** 2).mean() + (f ** 2).mean())
    _close(adversarial_g_loss("lsgan", f), ((f - 1) ** 2).mean())
    _close(adversarial_d_loss("nonsaturating", r, f),
           F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
           + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    _close(adversarial_g_loss("nonsaturating", f), F.binary_cross_entropy_with_logits(f, torch.ones_like(f)))


def test_history_pool_query():
    pool = ExperienceReplay(4, replace_prob=1.0)
    first = torch.arange(3.0).view(3, 1)
    assert torch.equal(pool.query(first), first) and len(pool) == 3       # room: stored and shown as they are
    second = torch.tensor([[10.0], [11.0]])
    out = pool.query(second)
    assert out[0].item() == 10.0 and len(pool) == 4                     # the 4th slot takes 10, shown as is
    assert out[1].item() in (0.0, 1.0, 2.0, 10.0)                         # 11 swapped for a stored one
    assert 11.0 in pool.buffer.flatten().tolist()
    never = ExperienceReplay(2, replace_prob=0.0)
    never.query(torch.zeros(2, 1))
    assert torch.equal(never.query(torch.ones(3, 1)), torch.ones(3, 1))
    with pytest.raises(ValueError, match="fake"):
        pool.query(torch.zeros(0, 1))


def test_lr_decay_is_linear_over_its_window():
    torch.manual_seed(0)
    trainer = Img2ImgTrainer(_Paired().double(), _PairD().double(), _Data(8, 3, 1, 2),
                             _cfg(lr_decay=[0.004, 0.020]))
    seen = []
    for _ in range(4):
        trainer._set_lr()
        seen.append(trainer.opt_G.param_groups[0]["lr"])
        trainer.progress.cur_nimg += 4
    assert seen == pytest.approx([1e-2, 1e-2, 0.75e-2, 0.5e-2])
    trainer.progress.cur_nimg = 24
    trainer._set_lr()
    assert trainer.opt_D.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("make", [lambda: (_Unpaired().double(), _TwoD().double(), _Data(12, 4, 2, 2), "lsgan"),
                                  lambda: (_Paired().double(), _PairD().double(), _Data(12, 3, 1, 2), "nonsaturating")],
                         ids=["cyclegan-pool", "pix2pix"])
def test_resume_continues_exactly(tmp_path, make):
    def trainer_at(run_dir, seed=0):
        torch.manual_seed(seed)
        G, D, data, loss = make()
        return Img2ImgTrainer(G, D, data, _cfg(loss=loss, pool_size=3), run_dir=run_dir)

    straight = trainer_at(tmp_path / "a")
    straight.train(steps=5)
    first = trainer_at(tmp_path / "b")
    first.train(steps=2)
    torch.manual_seed(123)          # whatever ran in between
    resumed = trainer_at(tmp_path / "b")
    resumed.resume("auto")
    resumed.train(steps=5)
    for a, b in zip(straight.G.parameters(), resumed.G.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.D.parameters(), resumed.D.parameters()):
        assert torch.equal(a, b)


def test_refuses_what_does_not_apply():
    with pytest.raises(ValueError, match="img2img"):
        Img2ImgTrainer(nn.Linear(2, 2), _PairD(), _Data(4, 3, 1, 2), _cfg())
    with pytest.raises(ValueError, match="loss must be one of"):
        Img2ImgTrainer(_Paired(), _PairD(), _Data(4, 3, 1, 2), _cfg(loss="hinge"))
    with pytest.raises(ValueError, match="r1_gamma"):
        Img2ImgTrainer(_Paired(), _PairD(), _Data(4, 3, 1, 2), _cfg(r1_gamma=1.0))
    with pytest.raises(ValueError, match="channels"):
        Img2ImgTrainer(_Paired(), _PairD(), _Data(4, 3, 2, 1), _cfg())
    with pytest.raises(ValueError, match="lr_decay"):
        TrainingConfig(lr_decay=[3, 1])
    with pytest.raises(ValueError, match="content_weights"):
        TrainingConfig(content_loss="vgg")


@pytest.mark.parametrize("task", ["paired", "unpaired", "unit", "sr"])
def test_bf16_autocast_steps_are_finite(task):
    """amp='bf16' on the CPU: every task's two phases run under autocast and train."""
    torch.manual_seed(0)
    G, D, data, loss = {"paired": (_Paired(), _PairD(), _Data(8, 3, 1, 2), "nonsaturating"),
                        "unpaired": (_Unpaired(), _TwoD(), _Data(8, 4, 2, 2), "lsgan"),
                        "unit": (_Unit(), _TwoD(1, 1), _Data(8, 2, 1, 1), "lsgan"),
                        "sr": (_SR(), _SRD(), _Data(8, 1), "nonsaturating")}[task]
    data.x = data.x.float()
    before = [p.detach().clone() for p in G.parameters()]
    trainer = Img2ImgTrainer(G, D, data, _cfg(loss=loss, amp="bf16"))
    for _ in range(2):
        stats = dict(trainer.step())
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values()) and stats["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_translate_uses_G_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    G = _Unpaired().double()
    trainer = Img2ImgTrainer(G, _TwoD().double(), _Data(8, 4, 2, 2), _cfg(loss="lsgan"))
    x = torch.rand(3, 2, R, R, dtype=torch.float64)
    assert G.training
    _close(trainer.translate(x, "BA"), G(x, "BA").float())
    assert G.training
