"""bias_act: the reference (the spec), the cpu backend against it, autograd, custom op, compile."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import ganfast
from ganfast import backends
from ganfast.ops import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS, bias_act_ref

from .bias_act_cases import ACTS, SHAPES, check_backend_against_oracle, make_bias, make_input

needs_cpu_ext = pytest.mark.skipif(backends.get_backend("cpu").unavailable_reason() is not None,
                                   reason=f"cpu extension: {backends.get_backend('cpu').unavailable_reason()}")


# ---------------------------------------------------------------- the reference is the spec

@pytest.mark.parametrize("act", ACTS)
def test_reference_defaults_follow_stylegan2_convention(act):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    z = x + b.view(1, -1, 1, 1)
    expected = {
        "linear": z, "relu": F.relu(z) * math.sqrt(2), "lrelu": F.leaky_relu(z, 0.2) * math.sqrt(2),
        "tanh": torch.tanh(z), "sigmoid": torch.sigmoid(z), "elu": F.elu(z), "selu": F.selu(z),
        "softplus": F.softplus(z), "swish": z * torch.sigmoid(z) * math.sqrt(2),
    }[act]
    torch.testing.assert_close(bias_act(x, b, act=act, backend="reference"), expected, rtol=0, atol=1e-12)


def test_reference_clamp_gain_alpha_and_dim():
    x = torch.randn(3, 4, 5, dtype=torch.float64) * 10
    b = torch.randn(4, dtype=torch.float64)
    y = bias_act(x.transpose(1, 2), b, dim=2, act="lrelu", alpha=0.1, gain=3.0, clamp=2.5, backend="reference")
    expected = (F.leaky_relu(x.transpose(1, 2) + b, 0.1) * 3.0).clamp(-2.5, 2.5)
    # NVIDIA's order (act, then gain) to the last bit but for the negative branch, which the
    # reference computes as (gain z) alpha, not (alpha z) gain (issue 28: the gain folded in
    # place before the activation): at most an ulp or two apart; the clamp exact
    torch.testing.assert_close(y, expected, rtol=2 * torch.finfo(torch.float64).eps, atol=0)
    positive = (x.transpose(1, 2) + b) > 0
    assert torch.equal(y[positive], expected[positive])
    assert y.abs().max() <= 2.5 and torch.equal(y.abs() == 2.5, expected.abs() == 2.5)


def test_reference_upcast_computes_in_float32():
    x = torch.randn(64, 8, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    oracle = bias_act_ref(x, b, 1, "swish", 0.0, 1.0, -1.0)
    plain = bias_act_ref(x.half(), b.half(), 1, "swish", 0.0, 1.0, -1.0)
    up = bias_act_ref(x.half(), b.half(), 1, "swish", 0.0, 1.0, -1.0, upcast=True)
    assert up.dtype == torch.float16
    assert (up.double() - oracle).abs().max() <= (plain.double() - oracle).abs().max()


@pytest.mark.parametrize("act", ACTS)
def test_reference_gradients_of_any_order(act):
    # The reference supports a third derivative (the fused backends stop at two).
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = bias_act(x, None, act=act, backend="reference")
    (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    if not g1.requires_grad:
        return  # linear: the first derivative is constant
    (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
    assert torch.isfinite(g2).all()


# ---------------------------------------------------------------- cpu backend vs the oracle

@needs_cpu_ext
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cpu_matches_oracle_all_acts_dtypes(act, dtype):
    check_backend_against_oracle("cpu", act, (2, 5, 6, 7), 1, "contiguous", dtype, True, None)


@needs_cpu_ext
@pytest.mark.parametrize("case", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.7), ("swish", 1.1), ("tanh", None)])
def test_cpu_matches_oracle_shapes_layouts(case, act, clamp):
    _, shape, dim, layout = case
    check_backend_against_oracle("cpu", act, shape, dim, layout, torch.float32, True, clamp)


@needs_cpu_ext
@pytest.mark.parametrize("case", SHAPES[:4], ids=[s[0] for s in SHAPES[:4]])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_half_dtypes_layouts_without_bias(case, dtype):
    _, shape, dim, layout = case
    check_backend_against_oracle("cpu", "elu", shape, dim, layout, dtype, False, 0.9)


@needs_cpu_ext
@pytest.mark.parametrize("act", ACTS)
def test_cpu_gradcheck_and_gradgradcheck(act):
    x = (torch.randn(2, 3, 3, 2, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act(x, b, act=act, clamp=2.0, backend="cpu")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@needs_cpu_ext
@pytest.mark.parametrize("act", ["lrelu", "swish", "softplus"])
def test_cpu_r1_penalty_matches_reference(act):
    # R1: || d D(x) / d x ||^2 back-propagated into D's parameters: a gradient of a gradient.
    torch.manual_seed(3)
    w1 = torch.randn(6, 3, 3, 3, dtype=torch.float64) * 0.3
    b1 = torch.randn(6, dtype=torch.float64) * 0.1
    w2 = torch.randn(1, 6 * 8 * 8, dtype=torch.float64) * 0.05
    real = torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def r1_grads(backend):
        params = [p.clone().requires_grad_(True) for p in (w1, b1, w2)]
        x = real.clone().requires_grad_(True)
        h = bias_act(F.conv2d(x, params[0], padding=1), params[1], act=act, backend=backend)
        logits = h.flatten(1) @ params[2].t()
        (gx,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = gx.square().sum(dim=[1, 2, 3]).mean()
        return [penalty] + list(torch.autograd.grad(penalty, params, materialize_grads=True))

    for got, exp in zip(r1_grads("cpu"), r1_grads("reference")):
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-11)


@needs_cpu_ext
def test_cpu_third_order_raises_with_advice():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = bias_act(x, torch.zeros(3, dtype=torch.float64), act="tanh", backend="cpu")
    (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="backend='reference'"):
        torch.autograd.grad(g2.sum(), x)


@needs_cpu_ext
def test_cpu_kernel_db_and_empty_input():
    ext = ganfast._ext.extension("cpu")
    x = torch.randn(3, 4, 0, 5)
    out, db = ext.bias_act(x, torch.randn(4), None, None, 0, 1, 2, 0.2, 1.0, -1.0, True)
    assert out.shape == x.shape and db.shape == (4,) and (db == 0).all()
    y = bias_act(torch.randn(0, 7), torch.randn(7), act="tanh", backend="cpu")
    assert y.shape == (0, 7)


@needs_cpu_ext
def test_cpu_kernel_rejects_bad_arguments_clearly():
    ext = ganfast._ext.extension("cpu")
    x = torch.randn(2, 4, 3)
    with pytest.raises(RuntimeError, match=r"b must have shape \[4\]"):
        ext.bias_act(x, torch.randn(5), None, None, 0, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="needs g"):
        ext.bias_act(x, None, None, None, 1, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="g must match x"):
        ext.bias_act(x, None, torch.randn(2, 3, 4).transpose(1, 2), None, 1, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="non-overlapping and dense"):
        ext.bias_act(x[:, :, ::2], None, None, None, 0, 1, 2, 0.2, 1.0, -1.0, False)
    with pytest.raises(RuntimeError, match="act code"):
        ext.bias_act(x, None, None, None, 0, 1, 42, 0.2, 1.0, -1.0, False)


# ---------------------------------------------------------------- public API: arguments

@pytest.mark.parametrize("kwargs,err,match", [
    (dict(act="gelu"), ValueError, "act must be one of"),
    (dict(dim=3), ValueError, "dim must be an int"),
    (dict(b=torch.zeros(5)), ValueError, r"b must have shape \[4\]"),
    (dict(b=torch.zeros(4, dtype=torch.float64)), TypeError, "b must have x's dtype"),
    (dict(clamp=-2.0), ValueError, "clamp must be None or >= 0"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
])
def test_bad_arguments_name_the_argument(kwargs, err, match):
    with pytest.raises(err, match=match):
        bias_act(torch.randn(2, 4, 3), **kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        bias_act(torch.ones(2, 3, dtype=torch.int64))


def test_clamp_minus_one_means_no_clamp():
    x = torch.randn(3, 4) * 100
    torch.testing.assert_close(bias_act(x, clamp=-1, backend="reference"), x)


# ---------------------------------------------------------------- dispatch

def test_explicit_backend_that_cannot_run_raises_with_reasons():
    with pytest.raises(ganfast.BackendNotSupported, match="backend 'cuda' cannot run this call"):
        bias_act(torch.randn(2, 3), backend="cuda")


@pytest.fixture
def env_monkeypatch(monkeypatch):
    """monkeypatch for environment variables that dispatch reads: it reads them once, so each
    change is followed by backends.refresh(), and the original environment is re-read after."""
    yield monkeypatch
    monkeypatch.undo()
    backends.refresh()


@needs_cpu_ext
def test_context_and_env_choose_backend(env_monkeypatch):
    monkeypatch = env_monkeypatch
    x = torch.randn(2, 3)
    with ganfast.use_backend("cuda"):
        with pytest.raises(ganfast.BackendNotSupported):
            bias_act(x)
        bias_act(x, backend="cpu")  # the argument wins over the context
    monkeypatch.setenv("GANFAST_BACKEND", "cuda")
    bias_act(x)    # read once: the change counts only after refresh()
    backends.refresh()
    with pytest.raises(ganfast.BackendNotSupported):
        bias_act(x)
    with ganfast.use_backend("cpu"):  # the context wins over the environment
        bias_act(x)
    monkeypatch.setenv("GANFAST_BACKEND", "bogus")
    backends.refresh()
    with pytest.raises(ValueError, match="backend must be one of"):
        bias_act(x)


def test_use_backend_validates_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        with ganfast.use_backend("gpu"):
            pass


def test_automatic_fallback_warns_once_and_is_correct(monkeypatch):
    real = backends._unavailable_reason
    monkeypatch.setattr(backends, "_unavailable_reason",
                        lambda name: "simulated: extension missing" if name == "cpu" else real(name))
    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.setattr(backends, "_verdicts", {})
    monkeypatch.setattr(backends, "_choices", {})
    x, b = torch.randn(3, 4, 5), torch.randn(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = bias_act(x, b, act="lrelu")
        y2 = bias_act(x, b, act="lrelu")
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert "bias_act" in msgs[0] and "reference" in msgs[0] and "simulated: extension missing" in msgs[0]
    expected = bias_act_ref(x, b, 1, "lrelu", 0.2, math.sqrt(2), -1.0)
    torch.testing.assert_close(y1, expected)
    torch.testing.assert_close(y2, expected)
    # gradients through the fallback inside the custom op, twice
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(bias_act(xr, b, act="swish").sum(), xr, create_graph=True)
    (gxx,) = torch.autograd.grad(gx.sum(), xr)
    xr2 = x.clone().requires_grad_(True)
    (ex,) = torch.autograd.grad(bias_act(xr2, b, act="swish", backend="reference").sum(), xr2, create_graph=True)
    (exx,) = torch.autograd.grad(ex.sum(), xr2)
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gxx, exx)


def test_backend_declarations():
    assert backends.get_backend("reference").max_grad_order is None
    for name in ("cpu", "triton", "cuda"):
        assert backends.get_backend(name).max_grad_order == 2
    table = backends.registered_ops()["bias_act"]
    assert torch.float64 in table["cpu"] and torch.float64 not in table["cuda"]
    reasons = backends.get_backend("cuda").not_supported_reasons("bias_act", [torch.randn(2, dtype=torch.float64)])
    assert any("dtypes" in r for r in reasons) and any("cpu tensors" in r for r in reasons)


# ---------------------------------------------------------------- custom op and torch.compile

@needs_cpu_ext
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "slice"])
def test_opcheck_all_three_ops(layout):
    x = make_input((2, 4, 3, 5), layout, torch.float32)
    b = make_bias(4, torch.float32).requires_grad_(True)
    xr = x.detach().requires_grad_(True)
    g = torch.randn(x.shape).requires_grad_(True)
    gg = torch.randn(x.shape)
    ops = torch.ops.ganfast
    torch.library.opcheck(ops.bias_act.default, (xr, b, 1, "swish", 0.0, 1.0, 3.0, "cpu"))
    torch.library.opcheck(ops.bias_act.default, (xr, None, 1, "lrelu", 0.2, 1.0, -1.0, ""))
    torch.library.opcheck(ops.bias_act_grad.default, (g, xr, b, 1, "tanh", 0.0, 2.0, -1.0, True, "cpu"))
    torch.library.opcheck(ops.bias_act_grad2.default, (gg, g.detach(), x, b.detach(), 1, "tanh", 0.0, 2.0, -1.0, True, "cpu"))


@needs_cpu_ext
def test_torch_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()

    def layer(x, w, b):
        return bias_act(F.conv2d(x, w, padding=1), b, act="lrelu", clamp=256, backend="cpu")

    compiled = torch.compile(layer, fullgraph=True)  # fullgraph: any graph break is an error
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = compiled(x, w, b)
    y_ref = layer(x, w, b)
    torch.testing.assert_close(y, y_ref)
    g = torch.autograd.grad(y.square().sum(), [x, w, b])
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, w, b])
    for a, e in zip(g, g_ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_torch_compile_does_not_recompile_when_the_scalar_cache_grows(monkeypatch):
    # bias_act caches its resolved scalars per (act, alpha, gain, clamp) in a module dict. Read
    # while dynamo traces, that dict became a guard, so every new entry (another layer's first
    # eager call) recompiled every compiled graph (~40x the steady step in bench/train_step.py).
    import importlib
    ba = importlib.import_module("ganfast.ops.bias_act")     # the package (ganfast.ops.bias_act is the function)
    monkeypatch.setattr(ba, "_SCALARS", {})
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, b: bias_act(x, b, act="lrelu", gain=1.5, clamp=4.0, backend="reference"),
                             fullgraph=True)
    x, b = torch.randn(2, 3, 4), torch.randn(3)
    compiled(x, b)
    for gain in (0.5, 2.5, 3.5):      # other layers' calls fill the cache
        bias_act(x, b, act="lrelu", gain=gain, backend="reference")
    with torch._dynamo.config.patch(error_on_recompile=True):
        y = compiled(x, b)
    torch.testing.assert_close(y, bias_act(x, b, act="lrelu", gain=1.5, clamp=4.0, backend="reference"))


# ---------------------------------------------------------------- nn module

@needs_cpu_ext
def test_bias_act_module():
    m = ganfast.nn.BiasAct(6, act="lrelu", bias_init=0.5, lr_multiplier=0.01, clamp=256)
    assert "act='lrelu'" in repr(m) and "lr_multiplier=0.01" in repr(m) and "clamp=256" in repr(m)
    x = torch.randn(2, 6, 3, 3)
    y = m(x)
    torch.testing.assert_close(y, bias_act_ref(x, torch.full([6], 0.5), 1, "lrelu", 0.2, math.sqrt(2), 256.0))
    y.sum().backward()
    assert m.bias.grad is not None and m.bias.grad.shape == (6,)
    assert ganfast.nn.BiasAct(4, bias=False)(torch.randn(3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match="act must be one of"):
        ganfast.nn.BiasAct(4, act="mish")
    with pytest.raises(ValueError, match="channels must be a positive int"):
        ganfast.nn.BiasAct(0)


@needs_cpu_ext
@pytest.mark.parametrize("act", ["tanh", "lrelu"])
def test_custom_op_path_differentiates_twice(act):
    # The public function takes autograd.Functions in eager mode; the custom ops (what
    # torch.compile sees) carry their own registered autograd: check it to second order too.
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: torch.ops.ganfast.bias_act(x, b, 1, act, 0.2, 1.3, 1.5, "cpu")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@needs_cpu_ext
def test_cpu_kernel_writes_every_output_element():
    from ganfast.ops.bias_act import cpu
    from .bias_act_cases import check_poisoned_output
    check_poisoned_output(cpu.run, "cpu", dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64))


@needs_cpu_ext
def test_cpu_kernel_rejects_out_of_wrong_layout():
    ext = ganfast._ext.extension("cpu")
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match="out must match x"):
        ext.bias_act(x, None, None, None, 0, 1, 2, 0.2, 1.0, -1.0, False, torch.empty_like(x, memory_format=torch.channels_last))
