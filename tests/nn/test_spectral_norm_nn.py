"""ganfast.nn spectral norm: the drop-in ganfast.nn.utils.spectral_norm against
torch.nn.utils.parametrizations.spectral_norm (same seed: same u, v, outputs, gradients and
state dicts, both ways), the folded forward, num_svs, the SN layers, the R1 double backward,
bf16 autocast and torch.compile.

Tests taking the `backend` fixture run once per backend of the power iteration: the name is
passed as backend= and is also the context backend (so nothing falls to the automatic choice).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import ganfast
from ganfast import backends
from ganfast.nn import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear
from ganfast.nn.utils import remove_spectral_norm, sigma_of, spectral_norm
from ganfast.testing import assert_matches_oracle

F64, F32 = torch.float64, torch.float32

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")
BACKENDS = ["reference", pytest.param("cpu", marks=needs_cpu_ext)]

# Ours against torch's: the same math with different rounding (the fused power iteration; W / sigma
# applied to the layer's output instead of to W; other summation orders), over a few training
# steps. atol is scaled by the largest expected magnitude (see _assert_close).
TOL = {F64: dict(rtol=1e-9, atol=1e-11), F32: dict(rtol=2e-5, atol=2e-6)}


def _assert_close(got, expected, dtype, what):
    """assert_close with TOL[dtype], atol times max(1, max |expected|): sums that cancel (a bias
    gradient) keep the rounding of their terms."""
    tol = dict(TOL[dtype])
    tol["atol"] *= max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, **tol, msg=lambda m: f"{what}: {m}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    with backends.use_backend(request.param):
        yield request.param


class DoubledConv2d(nn.Conv2d):
    """A user layer overriding forward: spectral_norm must keep this forward (not fold), which
    reads self.weight, i.e. W / sigma."""

    def forward(self, x):
        return 2 * super().forward(x) + 1


# name -> (layer, input [float64, cast to the layer's dtype; Embedding: indices], extra forward args)
LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), lambda: torch.randn(3, 7, dtype=F64), ()),              # wider than tall
    "conv1d-no-bias": (lambda: nn.Conv1d(4, 6, 3, padding=1, bias=False),                     # no bias to add
                       lambda: torch.randn(2, 4, 9, dtype=F64), ()),
    "conv2d-groups-reflect": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="reflect"),
                              lambda: torch.randn(2, 4, 5, 7, dtype=F64), ()),                  # W [6, 2, 3, 3]
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1),             # dim=1: W [4, 3, 3, 3]
                         lambda: torch.randn(2, 4, 4, 5, dtype=F64), ()),
    "conv-transpose2d-output-size": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1),  # output_padding 1
                                     lambda: torch.randn(2, 4, 4, 5, dtype=F64), ([8, 10],)),
    "embedding": (lambda: nn.Embedding(10, 6), lambda: torch.randint(0, 10, (3, 4)), ()),       # index lookup
    "user-subclass": (lambda: DoubledConv2d(3, 5, 3, padding=1),                                # not folded
                      lambda: torch.randn(2, 3, 6, 6, dtype=F64), ()),
}
DTYPES = [pytest.param(F64, id="float64"), pytest.param(F32, id="float32")]


def _layer(case, dtype, seed=0):
    torch.manual_seed(seed)
    return LAYERS[case][0]().to(dtype)


def _input(case, dtype, seed=0):
    torch.manual_seed(100 + seed)
    x = LAYERS[case][1]()
    return x.to(dtype).requires_grad_() if x.is_floating_point() else x


def _pair(case, dtype, backend, seed=0, **kwargs):
    """(torch's, ours): the same layer, spectrally normalized from the same RNG state."""
    base = _layer(case, dtype, seed)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    parametrizations.spectral_norm(theirs)
    torch.manual_seed(1)
    spectral_norm(ours, backend=backend, **kwargs)
    return theirs, ours


def _sn(m):
    """The parametrization object holding _u and _v (torch's or ours)."""
    return m.parametrizations.weight[0]


def _w_mat(m):
    """The raw weight as the [W.shape[dim], -1] matrix the power iteration uses."""
    return m.parametrizations.weight.original.detach().movedim(_sn(m).dim, 0).flatten(1)


def _sigma_from_buffers(m):
    """u^T W v from the stored vectors, computed here (num_svs = 1)."""
    sn = _sn(m)
    return sn._u @ _w_mat(m).to(sn._u.dtype) @ sn._v


def _copy(x):
    return x.detach().clone().requires_grad_() if x.is_floating_point() else x


def _run(m, case, x):
    return m(x, *LAYERS[case][2])


def _step(m, case, x, lr=0.05):
    """One training step: forward, loss (y * gy).sum() for a fixed gy, backward, SGD.
    Returns (y, gradients by name; "input": x's)."""
    y = _run(m, case, x)
    if x.is_floating_point():
        x.grad = None
    gy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * gy).sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    if x.is_floating_point():
        grads["input"] = x.grad.clone()
    with torch.no_grad():
        for p in m.parameters():
            p -= lr * p.grad
            p.grad = None
    return y.detach(), grads


def _assert_same_state(ours, theirs, dtype, what):
    for name in ("_u", "_v"):
        _assert_close(getattr(_sn(ours), name), getattr(_sn(theirs), name), dtype, f"{what}: {name}")


# ---------------------------------------------------------------- the drop-in against torch's

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_state_dict_keys_and_initial_vectors_match_torch(case, dtype, backend):
    theirs, ours = _pair(case, dtype, backend)
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert list(sd_o) == list(sd_t)
    for k in sd_t:
        assert sd_o[k].shape == sd_t[k].shape and sd_o[k].dtype == sd_t[k].dtype, k
    # the same draws, then 15 power iterations each
    _assert_same_state(ours, theirs, dtype, "after init")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_training_steps_match_torch(case, dtype, backend):
    theirs, ours = _pair(case, dtype, backend)
    for step in range(3):
        x = _input(case, dtype, seed=step)
        y_t, g_t = _step(theirs, case, _copy(x))
        y_o, g_o = _step(ours, case, x)
        _assert_close(y_o, y_t, dtype, f"step {step} output")
        assert list(g_o) == list(g_t)
        for name in g_t:
            _assert_close(g_o[name], g_t[name], dtype, f"step {step} grad {name}")
        _assert_same_state(ours, theirs, dtype, f"step {step}")


@pytest.mark.parametrize("case", list(LAYERS))
def test_stock_layers_are_folded_and_overriding_ones_are_not(case):
    with backends.use_backend("reference"):
        m = spectral_norm(_layer(case, F64))
        base = type(m).__mro__[1]
        folded = type(m).forward is not base.forward
        assert folded == (case != "user-subclass")
        unfolded = spectral_norm(_layer(case, F64), fold=False)
        assert type(unfolded).forward is type(unfolded).__mro__[1].forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_eval_uses_the_stored_vectors(case, dtype, backend):
    theirs, ours = _pair(case, dtype, backend)
    x = _input(case, dtype)
    for m in (theirs, ours):
        _step(m, case, _copy(x))
    theirs.eval()
    ours.eval()
    u, v = _sn(ours)._u.clone(), _sn(ours)._v.clone()
    y1, y2 = _run(ours, case, x), _run(ours, case, x)
    assert torch.equal(_sn(ours)._u, u) and torch.equal(_sn(ours)._v, v)   # no update in eval
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    _assert_close(y1, _run(theirs, case, x), dtype, "eval output")
    # the divisor is u^T W v of the stored vectors
    _assert_close(sigma_of(ours)[0], _sigma_from_buffers(ours), dtype, "sigma")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_state_dicts_load_both_ways(case, dtype, backend):
    theirs, ours = _pair(case, dtype, backend)
    x = _input(case, dtype)
    _step(theirs, case, _copy(x))
    _step(ours, case, _copy(x))
    _step(ours, case, _copy(x))          # two steps: the states differ from torch's now
    fresh_ours, fresh_theirs = _pair(case, dtype, backend, seed=5)[::-1]
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    for a, b, what in ((fresh_ours, theirs, "torch's state into ours"), (fresh_theirs, ours, "ours into torch's")):
        a.eval()
        b.eval()
        _assert_close(_run(a, case, x), _run(b, case, x), dtype, f"{what}, eval")
        a.train()
        b.train()
        _assert_close(_run(a, case, x), _run(b, case, x), dtype, f"{what}, train")
        _assert_same_state(a, b, dtype, what)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(LAYERS))
def test_remove_spectral_norm_leaves_w_over_sigma(case, training, backend):
    theirs, ours = _pair(case, F64, backend)
    x = _input(case, F64)
    _step(theirs, case, _copy(x))
    _step(ours, case, _copy(x))
    ours.train(training)
    theirs.train(training)
    expected = ours.parametrizations.weight.original.detach() / _sigma_from_buffers(ours)
    cls = type(ours).__mro__[1]
    remove_spectral_norm(ours)
    parametrize.remove_parametrizations(theirs, "weight")
    assert type(ours) is cls and not parametrize.is_parametrized(ours)
    assert isinstance(ours.weight, nn.Parameter)
    has_bias = getattr(ours, "bias", None) is not None
    assert sorted(ours.state_dict()) == sorted(["weight"] + (["bias"] if has_bias else []))
    if not training:
        # eval: the stored vectors give sigma (training mode runs one more iteration first, as torch's)
        _assert_close(ours.weight.detach(), expected, F64, "weight after removal vs W / sigma")
    _assert_close(ours.weight.detach(), theirs.weight.detach(), F64, "weight after removal vs torch's")
    _assert_close(_run(ours, case, x), _run(theirs, case, x), F64, "output after removal")


@pytest.mark.parametrize("case", list(LAYERS))
def test_weight_attribute_is_w_over_sigma(case, backend):
    theirs, ours = _pair(case, F64, backend)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        w_o, w_t = ours.weight, theirs.weight      # training: one power iteration each
        _assert_close(w_o, w_t, F64, f"weight vs torch's, training={training}")
        expected = ours.parametrizations.weight.original / _sigma_from_buffers(ours)
        _assert_close(w_o, expected, F64, f"weight vs W / sigma, training={training}")
        _assert_same_state(ours, theirs, F64, f"training={training}")
    # differentiable in the raw weight as torch's (sigma's gradient u v^T)
    g_o, = torch.autograd.grad(ours.weight.square().sum(), ours.parametrizations.weight.original)
    g_t, = torch.autograd.grad(theirs.weight.square().sum(), theirs.parametrizations.weight.original)
    _assert_close(g_o, g_t, F64, "gradient of |weight|^2")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_fold_false_gives_the_same_result(case, dtype, backend):
    base = _layer(case, dtype)
    folded, plain = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    spectral_norm(folded, backend=backend)
    torch.manual_seed(1)
    spectral_norm(plain, backend=backend, fold=False)
    for step in range(2):
        x = _input(case, dtype, seed=step)
        y_f, g_f = _step(folded, case, x)
        y_p, g_p = _step(plain, case, _copy(x))
        _assert_close(y_f, y_p, dtype, f"step {step} output")
        for name in g_p:
            _assert_close(g_f[name], g_p[name], dtype, f"step {step} grad {name}")
        for name in ("_u", "_v"):
            _assert_close(getattr(_sn(folded), name), getattr(_sn(plain), name), dtype, f"step {step} {name}")


# ---------------------------------------------------------------- num_svs (BigGAN)

@pytest.mark.parametrize("u_first", [True, False], ids=["u-first", "v-first"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_two_singular_values(dtype, u_first, backend):
    # W [5, 7] with singular values 4, 2.5, 1, 0.5, 0.25: the top two converge geometrically
    # (ratios 2.5/4 and 1/2.5 per half-iteration)
    g = torch.Generator().manual_seed(3)
    q1, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))
    q2, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=F64))
    s = torch.tensor([4.0, 2.5, 1.0, 0.5, 0.25], dtype=F64)
    layer = nn.Linear(7, 5).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(q1 @ torch.diag(s) @ q2[:5])
    spectral_norm(layer, num_svs=2, n_power_iterations=40, u_first=u_first, backend=backend)
    sn = _sn(layer)
    assert sn._u.shape == (2, 5) and sn._v.shape == (2, 7) and sn._u.dtype == dtype
    x = torch.randn(3, 7, dtype=dtype)
    for _ in range(2):
        y = layer(x)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == F64 else dict(rtol=2e-5, atol=2e-5)
    top2 = torch.linalg.svdvals(layer.parametrizations.weight.original.detach().double())[:2]
    torch.testing.assert_close(sigma_of(layer), top2.to(dtype), **tol)
    eye = torch.eye(2, dtype=dtype)
    torch.testing.assert_close(sn._u @ sn._u.t(), eye, **tol)
    torch.testing.assert_close(sn._v @ sn._v.t(), eye, **tol)
    # W is divided by the first singular value only
    expected = F.linear(x, layer.parametrizations.weight.original / sigma_of(layer)[0], layer.bias)
    _assert_close(y, expected, dtype, "output")
    assert sorted(layer.state_dict()) == sorted(["bias", "parametrizations.weight.original",
                                                 "parametrizations.weight.0._u", "parametrizations.weight.0._v"])


@pytest.mark.parametrize("make, kwargs, error, match", [
    (lambda: nn.Linear(3, 5), dict(dim=2), IndexError, r"dim must be in \[-2, 1\].*got 2"),
    (lambda: nn.Conv2d(3, 5, 3), dict(dim=-5), IndexError, r"dim must be in \[-4, 3\].*got -5"),
    (lambda: nn.Linear(3, 5), dict(n_power_iterations=0), ValueError,
     "n_power_iterations must be a positive int, got 0"),
    (lambda: nn.Linear(3, 5), dict(num_svs=4), ValueError, r"num_svs \(4\) must be at most min\(out, in\) = 3"),
    (lambda: nn.Conv2d(2, 3, 1), dict(num_svs=3), ValueError, r"num_svs \(3\) must be at most min\(out, in\) = 2"),
    (lambda: nn.Linear(3, 5), dict(num_svs=0), ValueError, "num_svs must be a positive int"),
    (lambda: nn.Linear(3, 5), dict(name="kernel"), ValueError, "Linear has no parameter or buffer named 'kernel'"),
    (lambda: nn.Linear(3, 5), dict(eps=0.0), ValueError, "eps must be > 0"),
])
def test_bad_arguments_name_the_argument(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        spectral_norm(make(), backend="reference", **kwargs)


def test_sigma_of_a_plain_layer_is_an_error():
    with pytest.raises(ValueError, match="Linear.weight is not spectrally normalized"):
        sigma_of(nn.Linear(3, 5))
    torch_sn = parametrizations.spectral_norm(nn.Linear(3, 5))
    with pytest.raises(ValueError, match="no ganfast SpectralNorm parametrization"):
        sigma_of(torch_sn)


# ---------------------------------------------------------------- the SN layers

# name -> (ours, the torch layer it stands for, input)
SN_LAYERS = {
    "SNConv2d": (lambda b: SNConv2d(3, 4, 3, padding=1, backend=b), lambda: nn.Conv2d(3, 4, 3, padding=1),
                 lambda: torch.randn(2, 3, 5, 5)),
    "SNLinear": (lambda b: SNLinear(6, 4, backend=b), lambda: nn.Linear(6, 4), lambda: torch.randn(3, 6)),
    "SNEmbedding": (lambda b: SNEmbedding(7, 5, backend=b), lambda: nn.Embedding(7, 5),
                    lambda: torch.randint(0, 7, (4,))),
    "SNConvTranspose2d": (lambda b: SNConvTranspose2d(3, 4, 4, stride=2, padding=1, backend=b),
                          lambda: nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), lambda: torch.randn(2, 3, 3, 3)),
}


def _sn_layer_pair(name, backend):
    make, make_torch, make_x = SN_LAYERS[name]
    torch.manual_seed(0)
    ours = make(backend)
    torch.manual_seed(0)
    theirs = parametrizations.spectral_norm(make_torch())
    torch.manual_seed(1)
    return ours, theirs, make_x()


@pytest.mark.parametrize("name", list(SN_LAYERS))
def test_sn_layers_are_torch_layers_with_spectral_norm(name, backend):
    ours, theirs, x = _sn_layer_pair(name, backend)
    assert isinstance(ours, type(theirs).__mro__[1])
    _assert_close(ours(x), theirs(x), F32, "output")
    assert ours.sigma.shape == () and ours.sigma.dtype == F32
    _assert_close(ours.sigma, _sigma_from_buffers(theirs), F32, "sigma")
    assert "n_power_iterations=1" in repr(ours)


@pytest.mark.parametrize("name", list(SN_LAYERS))
def test_sn_layers_under_bf16_autocast(name, backend):
    ours, theirs, x = _sn_layer_pair(name, backend)
    oracle_layer = copy.deepcopy(theirs).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_torch = ours(x), theirs(x)
    assert y.dtype == y_torch.dtype, "the output dtype torch's layer gives under autocast"
    oracle = oracle_layer(x.double() if x.is_floating_point() else x)
    assert_matches_oracle(y.float(), oracle, y_torch.float(), dtype=y.dtype, name=f"{name} under autocast")
    # train: forward under autocast, backward outside; fp32 gradients and state
    opt = torch.optim.SGD(ours.parameters(), lr=0.05)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ours(x).float().square().mean()
        opt.zero_grad()
        loss.backward()
        for n, p in ours.named_parameters():
            assert p.grad.dtype == F32 and torch.isfinite(p.grad).all(), n
        opt.step()
    assert ours.sigma.dtype == F32 and torch.isfinite(ours.sigma) and ours.sigma > 0
    assert _sn(ours)._u.dtype == F32 and _sn(ours)._v.dtype == F32


@pytest.mark.parametrize("name", list(SN_LAYERS))
def test_power_iteration_stays_fp32_under_autocast(name, backend):
    # u, v and sigma are fp32 state (reference.py): autocast must not run the iteration in bf16.
    # torch's own spectral_norm keeps it fp32 (torch.mv is not an autocast op).
    ours, theirs, x = _sn_layer_pair(name, backend)
    plain = copy.deepcopy(ours)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(x)
        theirs(x)
    plain(x)
    # against ours without autocast: the same fp32 arithmetic; against torch's: other rounding
    # (a bf16 iteration is off by ~1e-3)
    same, other = dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(ours.sigma, plain.sigma, **same)
    torch.testing.assert_close(ours.sigma, _sigma_from_buffers(theirs), **other)
    for n in ("_u", "_v"):
        torch.testing.assert_close(getattr(_sn(ours), n), getattr(_sn(plain), n), **same, msg=lambda m: f"{n}: {m}")
        torch.testing.assert_close(getattr(_sn(ours), n), getattr(_sn(theirs), n), **other,
                                   msg=lambda m: f"{n} vs torch's: {m}")


# ---------------------------------------------------------------- R1 through a spectrally normalized D

class _D(nn.Module):
    """SNConv2d -> lrelu -> SNConv2d (stride 2) -> lrelu -> SNLinear, on [N, 3, 5, 5]."""

    def __init__(self, conv=SNConv2d, linear=SNLinear, dtype=F32):
        super().__init__()
        self.conv1 = conv(3, 6, 3, padding=1, dtype=dtype)
        self.conv2 = conv(6, 8, 3, stride=2, padding=1, dtype=dtype)   # 5x5 -> 3x3
        self.fc = linear(8 * 3 * 3, 1, dtype=dtype)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        return self.fc(h.flatten(1))


def _torch_d(dtype):
    return _D(lambda *a, **k: parametrizations.spectral_norm(nn.Conv2d(*a, **k)),
              lambda *a, **k: parametrizations.spectral_norm(nn.Linear(*a, **k)), dtype)


def _r1_grads(d, x):
    """Parameter gradients of the R1 penalty ||d D(x).sum() / dx||^2 (plus the D output, so the
    first-order path is in too) and D's state after the step."""
    x = x.detach().clone().requires_grad_()
    out = d(x)
    gx, = torch.autograd.grad(out.sum(), x, create_graph=True)
    (gx.square().sum() + out.mean()).backward()
    return {n: p.grad for n, p in d.named_parameters()}


def test_r1_through_sn_layers_matches_torch(backend):
    torch.manual_seed(0)
    ours = _D(dtype=F64)               # float64 from the start: the 15 initial iterations too
    torch.manual_seed(0)
    theirs = _torch_d(F64)
    x = torch.randn(2, 3, 5, 5, dtype=F64)
    g_o, g_t = _r1_grads(ours, x), _r1_grads(theirs, x)
    assert list(g_o) == list(g_t)
    for n in g_t:
        assert g_o[n].abs().max() > 0, n
        _assert_close(g_o[n], g_t[n], F64, n)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_r1_cpu_matches_reference(dtype):
    torch.manual_seed(0)
    with backends.use_backend("reference"):
        d = _D()                       # fp32 state; the float64 oracle is a converted copy
    x = torch.randn(2, 3, 5, 5)
    d_cpu, d_ref, d_oracle = copy.deepcopy(d).to(dtype), copy.deepcopy(d).to(dtype), copy.deepcopy(d).double()
    with backends.use_backend("cpu"):
        g_cpu = _r1_grads(d_cpu, x.to(dtype))
    with backends.use_backend("reference"):
        g_ref = _r1_grads(d_ref, x.to(dtype))
        g_oracle = _r1_grads(d_oracle, x.double())
    for n in g_ref:
        if dtype == F64:
            torch.testing.assert_close(g_cpu[n], g_ref[n], rtol=1e-10, atol=1e-12, msg=lambda m: f"{n}: {m}")
        else:
            assert_matches_oracle(g_cpu[n], g_oracle[n], g_ref[n], name=f"R1 grad {n}")


def test_gradgradcheck_through_sn_conv2d(backend):
    torch.manual_seed(0)
    # eval: sigma from the stored u, v (training would move them at every call gradcheck makes)
    conv = SNConv2d(2, 2, 2, padding=1, backend=backend, dtype=F64).eval()
    w = conv.parametrizations.weight.original.detach().clone().requires_grad_()
    b = conv.bias.detach().clone().requires_grad_()
    x = torch.randn(1, 2, 3, 2, dtype=F64, requires_grad=True)      # -> [1, 2, 4, 3]

    def fn(x, w, b):
        return torch.func.functional_call(conv, {"parametrizations.weight.original": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


# ---------------------------------------------------------------- torch.compile

def test_compiled_training_step_equals_eager(backend):
    torch.manual_seed(0)
    eager = SNConv2d(3, 4, 3, padding=1, backend=backend)
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(lambda x: compiled_layer(x).square().sum(), backend="aot_eager", fullgraph=True,
                             dynamic=False)
    for step in range(2):
        x = torch.randn(2, 3, 6, 5, requires_grad=True)
        xc = _copy(x)
        u_before = _sn(compiled_layer)._u.clone()
        loss = eager(x).square().sum()
        loss.backward()
        loss_c = compiled(xc)
        loss_c.backward()
        torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xc.grad, x.grad, rtol=1e-5, atol=1e-6)
        for (n, p), pc in zip(eager.named_parameters(), compiled_layer.parameters()):
            torch.testing.assert_close(pc.grad, p.grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step} {n}: {m}")
        # the power iteration ran inside the graph and updated the buffers as eager did
        assert not torch.equal(_sn(compiled_layer)._u, u_before)
        for n in ("_u", "_v"):
            torch.testing.assert_close(getattr(_sn(compiled_layer), n), getattr(_sn(eager), n), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(compiled_layer.sigma, eager.sigma, rtol=1e-6, atol=1e-7)


def test_reconverge_after_the_weight_is_overwritten():
    from ganfast.nn import SNLinear
    from ganfast.nn.utils import reconverge_spectral_norms
    torch.manual_seed(0)
    m = SNLinear(12, 9).eval()
    with torch.no_grad():
        m.parametrizations.weight.original.copy_(torch.randn(9, 12) * 5)   # a new weight: u, v are stale
    true_sigma = torch.linalg.matrix_norm(m.parametrizations.weight.original.detach(), ord=2)
    m.weight
    assert abs(float(m.sigma) - float(true_sigma)) > 0.05 * float(true_sigma)   # stale u, v: far off
    reconverge_spectral_norms(m, n_iters=200)
    assert not m.training
    m.weight                                          # eval: the stored u, v give sigma
    torch.testing.assert_close(m.sigma, true_sigma, rtol=1e-4, atol=0)
