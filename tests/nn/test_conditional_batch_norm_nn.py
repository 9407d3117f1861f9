"""ganfast.nn.ConditionalBatchNorm2d: BigGAN's ccbn written out by hand with the same weights,
torch BatchNorm2d's running statistics (momentum=None: the cumulative average), eval on the
running statistics, accumulate_standing_stats, argument errors, and the cpu backend against the
float64 reference under the accuracy rule.

Tests taking the `backend` fixture run once per backend: the name is passed as backend= and is
also the context backend, which the spectrally normalized gain / bias linears' power iterations
follow (nothing falls to the automatic choice).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import ganfast
from ganfast import backends
from ganfast.nn import ConditionalBatchNorm2d, SpectralNorm, accumulate_standing_stats
from ganfast.testing import assert_matches_oracle

F64, F32 = torch.float64, torch.float32
EPS = 1e-5
TIGHT = dict(rtol=1e-10, atol=1e-12)

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")
BACKENDS = ["reference", pytest.param("cpu", marks=needs_cpu_ext)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with backends.use_backend(request.param):
        yield request.param


def _module(backend, c=5, cond_dim=7, dtype=F64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return ConditionalBatchNorm2d(c, cond_dim, backend=backend, **kwargs).to(dtype)


def _inputs(n=4, c=5, h=3, w=6, cond_dim=7, dtype=F64, seed=0):
    """x [n, c, h, w] with a different mean and spread per channel; cond [n, cond_dim]."""
    g = torch.Generator().manual_seed(seed)
    ch = torch.arange(c, dtype=F64).view(1, c, 1, 1)
    x = torch.randn(n, c, h, w, generator=g, dtype=F64) * (0.5 + ch) + 2 * ch - 3
    cond = torch.randn(n, cond_dim, generator=g, dtype=F64)
    return x.to(dtype).requires_grad_(), cond.to(dtype).requires_grad_()


def _linear_weight(lin, leaf=None):
    """The weight the linear applies: W, or W / (u^T W v) from its stored vectors (spectral norm),
    computed here; `leaf` stands in for the raw W (for gradients)."""
    if not parametrize.is_parametrized(lin):
        return lin.weight if leaf is None else leaf
    w = lin.parametrizations.weight.original if leaf is None else leaf
    sn = lin.parametrizations.weight[0]
    return w / (sn._u @ w @ sn._v)          # u, v constant: sigma's gradient is u v^T


def _ccbn(x, cond, gain_w, bias_w, running_mean, running_var, training, momentum, act):
    """BigGAN's ccbn (layers.py): gain = 1 + linear(y), bias = linear(y), F.batch_norm without
    affine, out * gain + bias, then the activation. Updates copies of the running statistics;
    returns (out, running_mean, running_var)."""
    rm, rv = running_mean.clone(), running_var.clone()
    gain = 1 + F.linear(cond, gain_w)
    bias = F.linear(cond, bias_w)
    out = F.batch_norm(x, rm, rv, None, None, training, momentum, EPS)
    out = out * gain[:, :, None, None] + bias[:, :, None, None]
    return (F.relu(out) if act == "relu" else out), rm, rv


def _raw_weights(m):
    """The gain and bias linears' trainable weights (the raw W under spectral norm)."""
    return [lin.parametrizations.weight.original if parametrize.is_parametrized(lin) else lin.weight
            for lin in (m.gain, m.bias)]


# ---------------------------------------------------------------- the module is BigGAN's ccbn

@pytest.mark.parametrize("act", [None, "relu"], ids=["linear", "relu"])
@pytest.mark.parametrize("sn", [True, False], ids=["sn", "no-sn"])
def test_matches_biggan_ccbn(sn, act, backend):
    m = _module(backend, sn=sn, act=act)
    assert isinstance(m.gain, nn.Linear) and parametrize.is_parametrized(m.gain) == sn
    for step in range(2):
        x, cond = _inputs(seed=step)
        rm, rv = m.running_mean.clone(), m.running_var.clone()
        y = m(x, cond)
        # the hand-written layer, on leaf copies of the same weights and inputs
        wg, wb = (w.detach().clone().requires_grad_() for w in _raw_weights(m))
        xe, ce = x.detach().clone().requires_grad_(), cond.detach().clone().requires_grad_()
        expected, rm, rv = _ccbn(xe, ce, _linear_weight(m.gain, wg), _linear_weight(m.bias, wb), rm, rv, True, 0.1, act)
        torch.testing.assert_close(y, expected, **TIGHT, msg=lambda e: f"step {step} output: {e}")
        torch.testing.assert_close(m.running_mean, rm, **TIGHT)
        torch.testing.assert_close(m.running_var, rv, **TIGHT)
        assert m.num_batches_tracked.item() == step + 1
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x, cond] + _raw_weights(m), gy)
        grads_e = torch.autograd.grad(expected, [xe, ce, wg, wb], gy)
        for name, a, e in zip(["x", "cond", "gain weight", "bias weight"], grads, grads_e):
            torch.testing.assert_close(a, e, **TIGHT, msg=lambda msg: f"step {step} grad {name}: {msg}")
    # eval: the running statistics, nothing updated
    m.eval()
    x, cond = _inputs(seed=5)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    y = m(x, cond)
    expected, _, _ = _ccbn(x, cond, _linear_weight(m.gain), _linear_weight(m.bias), m.running_mean, m.running_var,
                           False, 0.1, act)
    torch.testing.assert_close(y, expected, **TIGHT)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed in eval"


def test_eval_normalizes_with_the_running_statistics(backend):
    m = _module(backend, sn=False)
    with torch.no_grad():
        m.running_mean.uniform_(-2, 2)
        m.running_var.uniform_(0.5, 3)
    m.eval()
    x, cond = _inputs()
    y = m(x, cond)
    gain, bias = 1 + cond @ m.gain.weight.t(), cond @ m.bias.weight.t()
    xhat = (x - m.running_mean.view(1, -1, 1, 1)) / (m.running_var.view(1, -1, 1, 1) + EPS).sqrt()
    torch.testing.assert_close(y, xhat * gain[:, :, None, None] + bias[:, :, None, None], **TIGHT)
    # no batch statistics: a sample alone gives its row of the batch's output
    torch.testing.assert_close(m(x[1:2], cond[1:2]), y[1:2], **TIGHT)
    assert m.num_batches_tracked.item() == 0


@pytest.mark.parametrize("momentum", [0.1, 0.35, None], ids=["0.1", "0.35", "cumulative"])
def test_running_statistics_follow_batchnorm2d(momentum, backend):
    m = _module(backend, c=3, sn=False, momentum=momentum)
    bn = nn.BatchNorm2d(3, eps=EPS, momentum=momentum, affine=False).double()
    means, variances = [], []
    for i, (n, h, w) in enumerate([(4, 3, 5), (2, 1, 1), (3, 4, 2), (1, 5, 3)]):   # counts 60, 2, 24, 15
        x, cond = _inputs(n, 3, h, w, seed=i)
        m(x, cond)
        bn(x)
        torch.testing.assert_close(m.running_mean, bn.running_mean, **TIGHT, msg=lambda e: f"batch {i}: {e}")
        torch.testing.assert_close(m.running_var, bn.running_var, **TIGHT, msg=lambda e: f"batch {i}: {e}")
        assert m.num_batches_tracked.item() == bn.num_batches_tracked.item() == i + 1
        means.append(x.detach().mean(dim=(0, 2, 3)))
        variances.append(x.detach().var(dim=(0, 2, 3), correction=1))
    if momentum is None:
        # the cumulative average: the plain average of the batches' mean and unbiased variance
        torch.testing.assert_close(m.running_mean, torch.stack(means).mean(0), **TIGHT)
        torch.testing.assert_close(m.running_var, torch.stack(variances).mean(0), **TIGHT)


# ---------------------------------------------------------------- standing statistics

class _G(nn.Module):
    """ccbn (relu) -> conv -> torch BatchNorm2d -> ccbn: every norm accumulate_standing_stats handles."""

    def __init__(self):
        super().__init__()
        self.cbn1 = ConditionalBatchNorm2d(4, 6, act="relu", momentum=0.1)
        self.conv = nn.Conv2d(4, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3, momentum=0.2)
        self.cbn2 = ConditionalBatchNorm2d(3, 6, sn=False, momentum=0.3)

    def forward(self, x, cond):
        return self.cbn2(self.bn(self.conv(self.cbn1(x, cond))), cond)


@pytest.mark.parametrize("was_training", [True, False], ids=["from-train", "from-eval"])
def test_accumulate_standing_stats_averages_the_batches(was_training, backend):
    torch.manual_seed(0)
    model = _G().double()
    g = torch.Generator().manual_seed(1)

    def run_batch():
        n = 2 + len(seen["cbn1"]) % 3                      # batch sizes 2, 3, 4, 2, ...
        model(torch.randn(n, 4, 5, 3, generator=g, dtype=F64), torch.randn(n, 6, generator=g, dtype=F64))

    norms = {"cbn1": model.cbn1, "bn": model.bn, "cbn2": model.cbn2}
    seen = {name: [] for name in norms}
    for _ in range(2):                                     # running statistics from before: discarded
        run_batch()
    for name, mod in norms.items():
        mod.register_forward_pre_hook(lambda mod, args, name=name: seen[name].append(args[0].detach().clone()))
    model.train(was_training)
    sn_vectors = {n: b.clone() for n, b in model.named_buffers() if n.endswith(("_u", "_v"))}
    accumulate_standing_stats(model, run_batch, num_batches=5)
    assert model.training == was_training and all(mod.training == was_training for mod in model.modules())
    assert sn_vectors and all(torch.equal(b, sn_vectors[n]) for n, b in model.named_buffers() if n in sn_vectors)
    assert (model.cbn1.momentum, model.bn.momentum, model.cbn2.momentum) == (0.1, 0.2, 0.3)
    for name, mod in norms.items():
        xs = seen[name]
        assert len(xs) == 5 and mod.num_batches_tracked.item() == 5
        # the average of each batch's statistics of what the layer saw (in training mode)
        mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
        var = torch.stack([x.var(dim=(0, 2, 3), correction=1) for x in xs]).mean(0)
        torch.testing.assert_close(mod.running_mean, mean, **TIGHT, msg=lambda e: f"{name} mean: {e}")
        torch.testing.assert_close(mod.running_var, var, **TIGHT, msg=lambda e: f"{name} var: {e}")


def test_accumulate_standing_stats_restores_state_when_run_batch_raises(backend):
    model = _G().double().eval()

    def run_batch():
        raise KeyError("data loader ran dry")

    with pytest.raises(KeyError, match="ran dry"):
        accumulate_standing_stats(model, run_batch, num_batches=3)
    assert not model.training and (model.cbn1.momentum, model.bn.momentum, model.cbn2.momentum) == (0.1, 0.2, 0.3)


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("cond_shape", [(4, 8), (3, 7), (4,), (4, 7, 1)], ids=["cond-dim", "batch", "1d", "3d"])
def test_bad_cond_shape_is_an_error(cond_shape):
    m = _module("reference", sn=False)
    x, _ = _inputs()
    with pytest.raises(ValueError, match=r"cond must be \[N, cond_dim\] = \[4, 7\], got shape"):
        m(x, torch.randn(cond_shape, dtype=F64))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_features=0), "num_features must be a positive int, got 0"),
    (dict(num_features=-3), "num_features must be a positive int, got -3"),
    (dict(num_features=2.0), "num_features must be a positive int, got 2.0"),
    (dict(num_features=True), "num_features must be a positive int, got True"),
    (dict(cond_dim=0), "cond_dim must be a positive int, got 0"),
    (dict(act="lrelu"), r"act must be one of \(None, 'relu'\), got 'lrelu'"),
    (dict(momentum=1.5), r"momentum must be in \[0, 1\] or None, got 1.5"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(num_features=5, cond_dim=7) | kwargs
    with pytest.raises(ValueError, match=match):
        ConditionalBatchNorm2d(args.pop("num_features"), args.pop("cond_dim"), **args)


def test_accumulate_standing_stats_needs_a_batch():
    with backends.use_backend("reference"):
        model = _G()
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        accumulate_standing_stats(model, lambda: None, num_batches=0)


@pytest.mark.parametrize("name", ["reference", pytest.param("cpu", marks=needs_cpu_ext)])
def test_backend_argument_reaches_the_sn_linears(name):
    # backend= names where the module runs; the gain / bias linears' power iterations included
    m = ConditionalBatchNorm2d(4, 6, sn=True, backend=name)
    sns = [p for p in m.modules() if isinstance(p, SpectralNorm)]
    assert len(sns) == 2 and all(p.backend == name for p in sns), [p.backend for p in sns]


# ---------------------------------------------------------------- cpu against the float64 reference

# [N, C, H, W]: one comment per case.
CPU_SHAPES = [
    pytest.param((2, 3, 1, 1), id="1x1"),          # one pixel a plane: statistics over the batch only
    pytest.param((1, 5, 7, 3), id="batch1-odd"),   # batch 1, odd C and plane
    pytest.param((3, 6, 33, 17), id="large"),      # 561-pixel planes: several threads per channel
]


@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("sn, act", [(True, "relu"), (False, None)], ids=["sn-relu", "plain"])
@pytest.mark.parametrize("dtype", [F32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", CPU_SHAPES)
def test_cpu_matches_the_oracle(shape, dtype, sn, act, training):
    n, c, h, w = shape
    with backends.use_backend("reference"):
        m = _module(None, c=c, cond_dim=7, dtype=F32, sn=sn, act=act)    # fp32 parameters and statistics
    with torch.no_grad():
        m.running_mean.uniform_(-2, 2)
        m.running_var.uniform_(0.5, 3)
    m.train(training)
    x, cond = _inputs(n, c, h, w, cond_dim=7, dtype=F64)
    x = x.detach().to(dtype)
    gy = torch.randn(shape, dtype=F64)
    results = {}
    for name, mod_dtype, x_dtype in (("cpu", F32, dtype), ("ref", F32, dtype), ("oracle", F64, F64)):
        mod = copy.deepcopy(m).to(mod_dtype)
        xi = x.to(x_dtype).requires_grad_()
        ci = cond.detach().to(mod_dtype).requires_grad_()
        with backends.use_backend("reference" if name != "cpu" else "cpu"):
            y = mod(xi, ci)
            grads = torch.autograd.grad(y, [xi, ci] + _raw_weights(mod), gy.to(y.dtype))
        results[name] = dict(y=y, x=grads[0], cond=grads[1], gain_w=grads[2], bias_w=grads[3],
                             running_mean=mod.running_mean, running_var=mod.running_var)
    assert results["cpu"]["y"].dtype == dtype
    for key in results["oracle"]:
        got = results["cpu"][key]
        assert_matches_oracle(got, results["oracle"][key], results["ref"][key], dtype=got.dtype,
                              name=f"{key} {list(shape)}")
