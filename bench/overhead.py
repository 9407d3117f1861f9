"""Host overhead: one call of each ganfast op and ganfast.nn module at tiny shapes, next to the
eager composite it replaces and one torch.add as the unit.

At tiny shapes (x [2, 8, 4, 4]) the kernels cost next to nothing, so what is timed is the host
path: Python dispatch, argument checks, autograd bookkeeping, allocation. It is the same on CPU
and GPU, and at 32-256 px GAN layers it decides GPU speed (STYLE.md, "The host path"). Passes:
  fwd         under no_grad
  fwd+bwd     the forward, then torch.autograd.grad of every leaf (inputs and parameters)
  double_bwd  R1 / path length: the input gradient with create_graph, then the gradient of its
              squared norm w.r.t. the leaves and the incoming gradient (which in a network
              depends on later layers); for the ops and modules used that way
Variants, side by side in one run:
  ganfast-auto       the op / module as a user calls it (automatic backend)
  ganfast-reference  the same with backend='reference' (ganfast's plain-PyTorch path)
  eager-composite    the same formula in plain torch, as written without ganfast: StyleGAN2's and
                     BigGAN's layers in torch, nn.BatchNorm2d + nn.ReLU, torch's spectral_norm
  torch.add          torch.add(x, x) on the case's tiny input, no autograd: the unit
Modules run in training mode (power iterations and running statistics update each call) and draw
random noise where they have noise. Before any timing each composite is checked against both
ganfast variants in float64 on the CPU (outputs, in-place state such as running statistics and
power-iteration vectors, and the gradients of every pass timed; fixed noise): a wrong composite
raises and nothing is written.

Method: torch.set_num_threads(1) (the extension runs on ATen's pool, so it is single-threaded
too), --warmup untimed calls, then the best (minimum) of --repeats batches of --calls calls,
time.perf_counter around each batch, gc off; per-call microseconds. CUDA: one synchronize per
batch, not per call. Rows (JSONL, with machine, versions and git SHA) are appended to
bench/results/overhead.jsonl: ratio_to_composite = us / composite us (<= 1 meets STYLE.md's bar),
ratio_to_add = us / torch.add us.

    python bench/overhead.py --label "baseline before host-path work"
    python bench/overhead.py --ops bias_act ModulatedConv2d --calls 200
"""

import argparse
import copy
import dataclasses
import datetime
import gc
import math
import os
import sys
import time
import uuid
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ganfast.nn as gnn  # noqa: E402
from ganfast import backends, ops  # noqa: E402
from ganfast.bench.environment import environment, load_average  # noqa: E402
from ganfast.bench.results import append_rows  # noqa: E402
from ganfast.models.common import set_backend  # noqa: E402

AUTO, REF, COMPOSITE, ADD = "ganfast-auto", "ganfast-reference", "eager-composite", "torch.add"
PASSES = ("fwd", "fwd+bwd", "double_bwd")
FIRST_ORDER = ("fwd", "fwd+bwd")
SQRT2 = math.sqrt(2)
N, C, H, W = 2, 8, 4, 4          # the tiny shape: kernels cost ~nothing, the host path is all
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "overhead.jsonl")


@dataclasses.dataclass
class Variant:
    fn: Callable                      # fn(*inputs) -> output tensor
    params: list                      # this variant's own parameters (leaves besides the inputs)
    state: Callable[[], dict]         # the state its calls update in place, by name (for the check)


@dataclasses.dataclass
class Bound:
    """One case's tensors on a device and dtype, and the callables of its variants."""
    inputs: tuple                     # positional arguments, shared by the variants
    grad_inputs: tuple                # indices of the inputs that are leaves of the gradients
    first_wrt: tuple                  # double_bwd: indices of the inputs of the first gradient
    add_input: torch.Tensor           # torch.add's operand: the case's tiny float input
    variants: dict                    # AUTO / REF / COMPOSITE -> Variant


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str                         # "op" or "module"
    backend_op: str                   # the ganfast.backends op whose automatic choice a row records
    passes: tuple
    setup: Callable[..., Bound]       # setup(dtype, device, check) -> Bound; check: deterministic noise


def _randn(*shape, dtype, device, grad=False, scale=1.0, shift=0.0):
    t = (torch.randn(*shape) * scale + shift).to(device, dtype)
    return t.requires_grad_(grad)


def _inputs_state(inputs):
    return lambda: {f"input{i}": t for i, t in enumerate(inputs) if isinstance(t, torch.Tensor)}


def _op_bound(inputs, grad_inputs, first_wrt, auto, ref, composite, add_input=None) -> Bound:
    state = _inputs_state(inputs)
    return Bound(tuple(inputs), tuple(grad_inputs), tuple(first_wrt),
                 inputs[0] if add_input is None else add_input,
                 {AUTO: Variant(auto, [], state), REF: Variant(ref, [], state),
                  COMPOSITE: Variant(composite, [], state)})


# ---- eager composites: the formulas in plain torch, as written without ganfast ----

def lrelu_bias(x, b):
    """StyleGAN2's bias + lrelu epilogue: F.leaky_relu(x + b, 0.2) * sqrt(2)."""
    return F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2) * SQRT2


def depthwise_kernel(f: torch.Tensor, channels: int, gain: float = 1.0) -> torch.Tensor:
    """A [fh, fw] FIR filter as a groups=C conv2d weight [C, 1, fh, fw] (flipped: conv2d correlates).
    Computed once, as a user's module would hold it in a buffer."""
    return (f * gain).flip([0, 1])[None, None].repeat(channels, 1, 1, 1)


def upsample2d_composite(x, fk, pad):
    """upfirdn2d up=2: zero insertion (reshape + pad), padding, depthwise conv2d."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(n, c, 2 * h, 2 * w)
    return F.conv2d(F.pad(x, pad), fk, groups=c)


def modconv_composite(x, weight, styles, padding, demodulate=True):
    """StyleGAN2's modulated_conv2d, fused_modconv path: per-sample weights, one grouped conv."""
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    wm = weight[None] * styles[:, None, :, None, None]                      # [N, Cout, Cin, k, k]
    if demodulate:
        wm = wm * (wm.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    y = F.conv2d(x.reshape(1, n * cin, h, w), wm.reshape(n * cout, cin, *weight.shape[2:]), padding=padding, groups=n)
    return y.reshape(n, cout, *y.shape[2:])


def adain_composite(x, noise, strength, bias, scale, shift, eps=1e-8):
    """StyleGAN's (v1) epilogue: noise, bias, lrelu, instance norm, style scale and shift."""
    y = F.leaky_relu(x + noise * strength.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1), 0.2)
    return F.instance_norm(y, eps=eps) * scale[:, :, None, None] + shift[:, :, None, None]


def cbn_composite(x, gain, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """BigGAN's ccbn with its ReLU: F.batch_norm without affine, per-sample gain and bias."""
    y = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return F.relu(y * gain[:, :, None, None] + bias[:, :, None, None])


def attention_composite(x, w_theta, w_phi, w_g, w_o, gamma):
    """BigGAN's Attention.forward (SAGAN): 1x1 convs, max-pooled keys and values, bmm, softmax."""
    n, c, h, w = x.shape
    cq, cv = w_theta.shape[0], w_g.shape[0]
    theta = F.conv2d(x, w_theta).view(n, cq, h * w)
    phi = F.max_pool2d(F.conv2d(x, w_phi), [2, 2]).view(n, cq, h * w // 4)
    g = F.max_pool2d(F.conv2d(x, w_g), [2, 2]).view(n, cv, h * w // 4)
    beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
    o = F.conv2d(torch.bmm(g, beta.transpose(1, 2)).view(n, cv, h, w), w_o)
    return gamma * o + x


def power_iteration_composite(w_mat, u, v, eps=1e-12):
    """torch.nn.utils.parametrizations.spectral_norm's step: _power_method (one iteration, u
    first, in place) and its sigma = vdot(u, W v)."""
    u = F.normalize(torch.mv(w_mat, v), dim=0, eps=eps, out=u)
    v = F.normalize(torch.mv(w_mat.H, u), dim=0, eps=eps, out=v)
    return torch.vdot(u, torch.mv(w_mat, v))


# ---- the ops ----

def _bias_act(dtype, device, check=False):
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    b = _randn(C, dtype=dtype, device=device, grad=True)
    return _op_bound((x, b), (0, 1), (0,),
                     lambda x, b: ops.bias_act(x, b, act="lrelu"),
                     lambda x, b: ops.bias_act(x, b, act="lrelu", backend="reference"),
                     lrelu_bias)


def _upfirdn2d(dtype, device, check=False):
    # StyleGAN2's upsample2d: up=2 through the [1, 3, 3, 1] filter (4x4), gain 4, output 2H x 2W
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    f = ops.setup_filter([1, 3, 3, 1], device=device)
    pad = [2, 1, 2, 1]
    fk = depthwise_kernel(f, C, gain=4).to(dtype)
    return _op_bound((x,), (0,), (0,),
                     lambda x: ops.upfirdn2d(x, f, up=2, padding=pad, gain=4),
                     lambda x: ops.upfirdn2d(x, f, up=2, padding=pad, gain=4, backend="reference"),
                     lambda x: upsample2d_composite(x, fk, pad))


def _conv2d_resample(dtype, device, check=False):
    # StyleGAN2 D's downsampling conv: filter [1, 3, 3, 1], 3x3 kernel, down=2
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    w = _randn(C, C, 3, 3, dtype=dtype, device=device, grad=True)
    f = ops.setup_filter([1, 3, 3, 1], device=device)
    fk = depthwise_kernel(f, C).to(dtype)
    return _op_bound((x, w), (0, 1), (0,),
                     lambda x, w: ops.conv2d_resample(x, w, f, down=2, padding=1),
                     lambda x, w: ops.conv2d_resample(x, w, f, down=2, padding=1, backend="reference"),
                     lambda x, w: F.conv2d(F.conv2d(F.pad(x, [2, 2, 2, 2]), fk, groups=C), w, stride=2))


def _modulated_conv2d(dtype, device, check=False):
    # StyleGAN2's SynthesisLayer core: 3x3, demodulated, noise, bias, lrelu (gain sqrt 2)
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    weight = _randn(C, C, 3, 3, dtype=dtype, device=device, grad=True)
    styles = _randn(N, C, dtype=dtype, device=device, grad=True, shift=1.0)
    bias = _randn(C, dtype=dtype, device=device, grad=True)
    noise = _randn(N, 1, H, W, dtype=dtype, device=device, scale=0.1)

    def fast(backend):
        return lambda x, weight, styles, bias: ops.modulated_conv2d(
            x, weight, styles, noise, padding=1, bias=bias, act="lrelu", gain=SQRT2, backend=backend)

    return _op_bound((x, weight, styles, bias), (0, 1, 2, 3), (0, 2), fast(None), fast("reference"),
                     lambda x, weight, styles, bias: lrelu_bias(modconv_composite(x, weight, styles, 1) + noise, bias))


def _adain_noise(dtype, device, check=False):
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    scale = _randn(N, C, dtype=dtype, device=device, grad=True, shift=1.0)
    shift = _randn(N, C, dtype=dtype, device=device, grad=True)
    strength = _randn(C, dtype=dtype, device=device, grad=True, scale=0.1)
    bias = _randn(C, dtype=dtype, device=device, grad=True)
    noise = _randn(N, 1, H, W, dtype=dtype, device=device)

    def fast(backend):
        return lambda x, scale, shift, strength, bias: ops.adain_noise(
            x, scale, shift, noise=noise, noise_strength=strength, bias=bias, act="lrelu", alpha=0.2, backend=backend)

    return _op_bound((x, scale, shift, strength, bias), (0, 1, 2, 3, 4), (0, 1, 2), fast(None), fast("reference"),
                     lambda x, scale, shift, strength, bias: adain_composite(x, noise, strength, bias, scale, shift))


def _conditional_batch_norm(dtype, device, check=False):
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    gain = _randn(N, C, dtype=dtype, device=device, grad=True, scale=0.1, shift=1.0)
    bias = _randn(N, C, dtype=dtype, device=device, grad=True, scale=0.1)
    # running statistics in x's dtype: F.batch_norm takes no other
    rm, rv = torch.zeros(C, device=device, dtype=dtype), torch.ones(C, device=device, dtype=dtype)

    def fast(backend):
        return lambda x, gain, bias, rm, rv: ops.conditional_batch_norm(
            x, gain, bias, rm, rv, training=True, momentum=0.1, eps=1e-5, act="relu", backend=backend)

    return _op_bound((x, gain, bias, rm, rv), (0, 1, 2), (0,), fast(None), fast("reference"),
                     lambda x, gain, bias, rm, rv: cbn_composite(x, gain, bias, rm, rv, True))


def _self_attention2d(dtype, device, check=False):
    # SAGAN / BigGAN: Cq = C / 8, Cv = C / 2, keys and values max-pooled by 2
    torch.manual_seed(0)
    x = _randn(N, C, H, W, dtype=dtype, device=device, grad=True)
    ws = [_randn(o, i, 1, 1, dtype=dtype, device=device, grad=True, scale=0.3)
          for o, i in ((C // 8, C), (C // 8, C), (C // 2, C), (C, C // 2))]
    gamma = torch.tensor(0.5, device=device, dtype=dtype).requires_grad_(True)

    def fast(backend):
        return lambda x, wt, wp, wg, wo, gamma: ops.self_attention2d(x, wt, wp, wg, wo, gamma, pool=2, backend=backend)

    return _op_bound((x, *ws, gamma), range(6), (0,), fast(None), fast("reference"), attention_composite)


def _power_iteration(dtype, device, check=False):
    # a 3x3 conv weight [8, 8, 3, 3] as [8, 72]; torch's order (u first), one iteration
    torch.manual_seed(0)
    w_mat = _randn(C, C * 9, dtype=dtype, device=device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    u = F.normalize(torch.randn(C), dim=0).to(device, acc)
    v = F.normalize(torch.randn(C * 9), dim=0).to(device, acc)
    return _op_bound((w_mat, u, v), (), (),
                     lambda w, u, v: ops.power_iteration(w, u, v, 1, 1e-12, u_first=True),
                     lambda w, u, v: ops.power_iteration(w, u, v, 1, 1e-12, u_first=True, backend="reference"),
                     power_iteration_composite)


# ---- the modules and their torch twins ----

class TorchBiasAct(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return lrelu_bias(x, self.bias)


class TorchFullyConnected(nn.Module):
    """StyleGAN2's FullyConnectedLayer (lr_multiplier 1, lrelu) in torch."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(cout, cin)), nn.Parameter(torch.zeros(cout))
        self.weight_gain = 1 / math.sqrt(cin)

    def forward(self, x):
        return F.leaky_relu(F.linear(x, self.weight * self.weight_gain, self.bias), 0.2) * SQRT2


class TorchConv2dLayer(nn.Module):
    """StyleGAN2's Conv2dLayer (3x3, no resampling, lrelu) in torch."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(cout, cin, k, k)), nn.Parameter(torch.zeros(cout))
        self.weight_gain, self.padding = 1 / math.sqrt(cin * k * k), k // 2

    def forward(self, x):
        return F.leaky_relu(F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding), 0.2) * SQRT2


class TorchSynthesisLayer(nn.Module):
    """StyleGAN2's SynthesisLayer (fused_modconv) and ToRGBLayer in torch: affine, modulated conv,
    noise, bias, lrelu (linear for ToRGB)."""

    def __init__(self, cin, cout, k, w_dim, demodulate=True, use_noise=True, resolution=None, noise_mode="random"):
        super().__init__()
        self.affine_weight = nn.Parameter(torch.randn(cin, w_dim))
        self.affine_bias = nn.Parameter(torch.ones(cin))
        self.weight, self.bias = nn.Parameter(torch.randn(cout, cin, k, k)), nn.Parameter(torch.zeros(cout))
        self.affine_gain, self.demodulate, self.padding = 1 / math.sqrt(w_dim), demodulate, k // 2
        self.rgb_gain = 1 / math.sqrt(cin * k * k)
        self.use_noise, self.noise_mode = use_noise, noise_mode
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x, w):
        styles = F.linear(w, self.affine_weight * self.affine_gain, self.affine_bias)
        if not self.demodulate:
            styles = styles * self.rgb_gain
        y = modconv_composite(x, self.weight, styles, self.padding, self.demodulate)
        if not self.use_noise:
            return y + self.bias.view(1, -1, 1, 1)
        if self.noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *y.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        else:
            noise = self.noise_const * self.noise_strength
        return lrelu_bias(y + noise, self.bias)


class TorchAdaINLayer(nn.Module):
    """StyleGAN's (v1) layer epilogue in torch: noise, bias, lrelu, instance norm, style."""

    def __init__(self, channels, w_dim, resolution, noise_mode="random"):
        super().__init__()
        self.affine_weight = nn.Parameter(torch.randn(2 * channels, w_dim))
        self.affine_bias = nn.Parameter(torch.cat([torch.ones(channels), torch.zeros(channels)]))
        self.noise_strength, self.bias = nn.Parameter(torch.zeros(channels)), nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.channels, self.affine_gain, self.noise_mode = channels, 1 / math.sqrt(w_dim), noise_mode

    def forward(self, x, w):
        st = F.linear(w, self.affine_weight * self.affine_gain, self.affine_bias)
        if self.noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const
        return adain_composite(x, noise, self.noise_strength, self.bias, st[:, :self.channels], st[:, self.channels:])


class TorchCCBN(nn.Module):
    """BigGAN's ccbn (SN linears from torch's spectral_norm) with its ReLU."""

    def __init__(self, channels, cond_dim, momentum=0.1, eps=1e-5):
        super().__init__()
        self.gain = torch_spectral_norm(nn.Linear(cond_dim, channels, bias=False))
        self.bias = torch_spectral_norm(nn.Linear(cond_dim, channels, bias=False))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.momentum, self.eps = momentum, eps

    def forward(self, x, cond):
        if self.training:
            self.num_batches_tracked.add_(1)
        return cbn_composite(x, 1 + self.gain(cond), self.bias(cond), self.running_mean, self.running_var,
                             self.training, self.momentum, self.eps)


class TorchAttention(nn.Module):
    """BigGAN's Attention with torch's spectral_norm on the four 1x1 convs."""

    def __init__(self, ch):
        super().__init__()
        conv = lambda i, o: torch_spectral_norm(nn.Conv2d(i, o, 1, bias=False))
        self.theta, self.phi = conv(ch, ch // 8), conv(ch, ch // 8)
        self.g, self.o = conv(ch, ch // 2), conv(ch // 2, ch)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return attention_composite(x, self.theta.weight, self.phi.weight, self.g.weight, self.o.weight, self.gamma)


def _module_variant(module: nn.Module, param_names: list, state_keys: list, rename=lambda k: k) -> Variant:
    """module(*inputs), its parameters in the order of param_names (ganfast's names), and its
    state (ganfast's keys) after the calls."""
    named = dict(module.named_parameters())
    params = [named[rename(k)] for k in param_names]
    return Variant(lambda *inputs: module(*inputs), params,
                   lambda: {k: module.state_dict()[rename(k)] for k in state_keys})


def _module_case(name, backend_op, passes, build, build_twin, make_inputs, grad_inputs, first_wrt, rename=lambda k: k,
                 add_shape=(N, C, H, W)) -> Case:
    """build(check) -> the ganfast module; build_twin(check) -> its torch twin, loaded with the
    ganfast module's state (keys through rename), so both compute from the same numbers."""

    def setup(dtype, device, check=False):
        torch.manual_seed(0)
        fast = build(check).train()
        with torch.no_grad():            # move zero-initialized parameters (noise strength, gamma,
            for p in fast.parameters():  # biases) off zero, so the check sees every term
                p.add_(torch.randn_like(p), alpha=0.1)
        twin = build_twin(check).train()
        state = {rename(k): v for k, v in fast.state_dict().items()}
        missing, _ = twin.load_state_dict(state, strict=False)
        if missing:
            raise KeyError(f"overhead: {name}: the torch twin has state the ganfast module lacks: {missing}")
        ref = set_backend(copy.deepcopy(fast), "reference")
        for m in (fast, ref, twin):
            m.to(device, dtype)
        param_names = [k for k, _ in fast.named_parameters()]
        twin_keys = set(twin.state_dict())
        state_keys = [k for k in fast.state_dict() if rename(k) in twin_keys]
        inputs = make_inputs(dtype, device)
        add_input = _randn(*add_shape, dtype=dtype, device=device)
        return Bound(tuple(inputs), tuple(grad_inputs), tuple(first_wrt), add_input,
                     {AUTO: _module_variant(fast, param_names, state_keys),
                      REF: _module_variant(ref, param_names, state_keys),
                      COMPOSITE: _module_variant(twin, param_names, state_keys, rename)})

    return Case(name, "module", backend_op, passes, setup)


def _x(dtype, device):
    return [_randn(N, C, H, W, dtype=dtype, device=device, grad=True)]


def _x_w(dtype, device):
    return _x(dtype, device) + [_randn(N, C, dtype=dtype, device=device, grad=True)]


def _mode(check):
    return "const" if check else "random"    # random noise cannot be compared; the timing uses it


def _build_cases() -> dict:
    cases = [
        Case("bias_act", "op", "bias_act", PASSES, _bias_act),
        Case("upfirdn2d", "op", "upfirdn2d", PASSES, _upfirdn2d),
        Case("conv2d_resample", "op", "upfirdn2d", PASSES, _conv2d_resample),
        Case("modulated_conv2d", "op", "modulated_conv2d", PASSES, _modulated_conv2d),
        Case("adain_noise", "op", "adain_noise", PASSES, _adain_noise),
        Case("conditional_batch_norm", "op", "conditional_batch_norm", PASSES, _conditional_batch_norm),
        Case("self_attention2d", "op", "self_attention", FIRST_ORDER, _self_attention2d),
        Case("power_iteration", "op", "spectral_norm", ("fwd",), _power_iteration),
        _module_case("BiasAct", "bias_act", PASSES, lambda check: gnn.BiasAct(C, act="lrelu"),
                     lambda check: TorchBiasAct(C), _x, (0,), (0,)),
        _module_case("EqualizedLinear", "bias_act", PASSES, lambda check: gnn.EqualizedLinear(C, C, act="lrelu"),
                     lambda check: TorchFullyConnected(C, C),
                     lambda dtype, device: [_randn(N, C, dtype=dtype, device=device, grad=True)], (0,), (0,),
                     add_shape=(N, C)),
        _module_case("EqualizedConv2d", "bias_act", PASSES, lambda check: gnn.EqualizedConv2d(C, C, 3, act="lrelu"),
                     lambda check: TorchConv2dLayer(C, C, 3), _x, (0,), (0,)),
        _module_case("ModulatedConv2d", "modulated_conv2d", PASSES,
                     lambda check: gnn.ModulatedConv2d(C, C, 3, w_dim=C, resolution=H, noise_mode=_mode(check)),
                     lambda check: TorchSynthesisLayer(C, C, 3, C, resolution=H, noise_mode=_mode(check)),
                     _x_w, (0, 1), (0, 1)),
        _module_case("ToRGB", "modulated_conv2d", PASSES, lambda check: gnn.ToRGB(C, 3, w_dim=C),
                     lambda check: TorchSynthesisLayer(C, 3, 1, C, demodulate=False, use_noise=False),
                     _x_w, (0, 1), (0, 1)),
        _module_case("AdaINNoise", "adain_noise", PASSES,
                     lambda check: gnn.AdaINNoise(C, w_dim=C, resolution=H, noise_mode=_mode(check)),
                     lambda check: TorchAdaINLayer(C, C, H, noise_mode=_mode(check)), _x_w, (0, 1), (0, 1)),
        _module_case("ConditionalBatchNorm2d", "conditional_batch_norm", PASSES,
                     lambda check: gnn.ConditionalBatchNorm2d(C, cond_dim=C, act="relu"),
                     lambda check: TorchCCBN(C, C), _x_w, (0, 1), (0,)),
        _module_case("BatchNormAct2d", "conditional_batch_norm", PASSES,
                     lambda check: gnn.BatchNormAct2d(C, act="relu"),
                     lambda check: nn.Sequential(nn.BatchNorm2d(C), nn.ReLU()), _x, (0,), (0,),
                     rename=lambda k: f"0.{k}"),
        _module_case("SelfAttention2d", "self_attention", FIRST_ORDER, lambda check: gnn.SelfAttention2d(C),
                     lambda check: TorchAttention(C), _x, (0,), ()),
        _module_case("SNLinear", "spectral_norm", FIRST_ORDER, lambda check: gnn.SNLinear(C, C),
                     lambda check: torch_spectral_norm(nn.Linear(C, C)),
                     lambda dtype, device: [_randn(N, C, dtype=dtype, device=device, grad=True)], (0,), (),
                     add_shape=(N, C)),
        _module_case("SNConv2d", "spectral_norm", FIRST_ORDER, lambda check: gnn.SNConv2d(C, C, 3, padding=1),
                     lambda check: torch_spectral_norm(nn.Conv2d(C, C, 3, padding=1)), _x, (0,), ()),
        _module_case("SNConvTranspose2d", "spectral_norm", FIRST_ORDER,
                     lambda check: gnn.SNConvTranspose2d(C, C, 4, stride=2, padding=1),
                     lambda check: torch_spectral_norm(nn.ConvTranspose2d(C, C, 4, stride=2, padding=1)), _x, (0,), ()),
        _module_case("SNEmbedding", "spectral_norm", FIRST_ORDER, lambda check: gnn.SNEmbedding(10, C),
                     lambda check: torch_spectral_norm(nn.Embedding(10, C)),
                     lambda dtype, device: [torch.tensor([3, 7], device=device)], (), (), add_shape=(N, C)),
    ]
    return {c.name: c for c in cases}


# MinibatchStd is plain torch (no ganfast op inside): nothing to compare.
CASES = _build_cases()


# ---- the composite check ----

def _evaluate(bound: Bound, variant: str, passes) -> dict:
    """Output, state, and the gradients of the passes, of one call of `variant`."""
    v = bound.variants[variant]
    leaves = [bound.inputs[i] for i in bound.grad_inputs] + v.params
    out = v.fn(*bound.inputs)
    res = {"output": out}
    if len(passes) > 1:
        gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device)
        res["gradient"] = torch.autograd.grad(out, leaves, gy, retain_graph=True, allow_unused=True)
        if "double_bwd" in passes:
            gy.requires_grad_(True)
            first = torch.autograd.grad(out, [bound.inputs[i] for i in bound.first_wrt], gy, create_graph=True)
            penalty = sum(g.square().sum() for g in first)
            res["second gradient"] = torch.autograd.grad(penalty, leaves + [gy], allow_unused=True)
    res["state"] = v.state()
    return res


def _assert_same(got, expected, what: str, rtol: float, atol: float) -> None:
    if isinstance(expected, dict):
        for k in expected:
            _assert_same(got[k], expected[k], f"{what} {k}", rtol, atol)
    elif isinstance(expected, (tuple, list)):
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same(g, e, f"{what} [{i}]", rtol, atol)
    elif got is not None or expected is not None:  # an unused leaf: None on one side means zeros
        g = torch.zeros_like(expected) if got is None else got
        e = torch.zeros_like(got) if expected is None else expected
        torch.testing.assert_close(g.detach(), e.detach(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check_composite(case: Case, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Assert that the eager composite computes what ganfast-auto and ganfast-reference compute:
    in float64 on the CPU, fresh state per variant, outputs, in-place state and the gradients of
    every pass the case times. Raises AssertionError naming the case, the variant and the value."""
    cpu = torch.device("cpu")
    expected = _evaluate(case.setup(torch.float64, cpu, check=True), COMPOSITE, case.passes)
    for variant in (AUTO, REF):
        got = _evaluate(case.setup(torch.float64, cpu, check=True), variant, case.passes)
        try:
            _assert_same(got, expected, "", rtol, atol)
        except AssertionError as err:
            raise AssertionError(f"overhead: {case.name}: {variant} and {COMPOSITE} differ in{err}") from None


# ---- timing ----

def _pass_call(bound: Bound, variant: str, pass_: str) -> Callable[[], object]:
    """One call of `variant` in `pass_` (grad mode is the caller's: off for fwd)."""
    if variant == ADD:
        a = bound.add_input
        return lambda: torch.add(a, a)
    v = bound.variants[variant]
    fn, inputs = v.fn, bound.inputs
    if pass_ == "fwd":
        return lambda: fn(*inputs)
    leaves = [inputs[i] for i in bound.grad_inputs] + v.params
    with torch.no_grad():
        gy = torch.randn_like(fn(*inputs))
    if pass_ == "fwd+bwd":
        return lambda: torch.autograd.grad(fn(*inputs), leaves, gy, allow_unused=True)
    first = [inputs[i] for i in bound.first_wrt]
    # In R1 / path length the incoming gradient depends on parameters downstream: gy is a leaf too,
    # so the second backward runs the op's double backward even where the op is linear in its input.
    gy.requires_grad_(True)
    leaves2 = leaves + [gy]

    def double_bwd():   # the input gradient with create_graph, then the gradient of its squared norm
        g = torch.autograd.grad(fn(*inputs), first, gy, create_graph=True)
        return torch.autograd.grad(sum(t.square().sum() for t in g), leaves2, allow_unused=True)

    return double_bwd


def time_calls(call: Callable[[], object], calls: int, repeats: int, warmup: int, device: torch.device,
               grad: bool) -> list:
    """Per-call microseconds of each of `repeats` batches of `calls` calls, after `warmup` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            call()
        sync()
        samples = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                sync()
                samples.append((time.perf_counter() - start) / calls * 1e6)
        finally:
            gc.enable()
    return samples


def measure_case(case: Case, device: torch.device, calls: int, repeats: int, warmup: int) -> list:
    """Rows (without the run's common fields) for every pass and variant of one case."""
    bound = case.setup(torch.float32, device)
    shape = list(bound.add_input.shape)
    auto_backend = backends.select(case.backend_op, (bound.add_input,))
    add = time_calls(_pass_call(bound, ADD, "fwd"), calls, repeats, warmup, device, grad=False)
    rows = [{"op": case.name, "kind": case.kind, "pass": "fwd", "variant": ADD, "backend": None,
             "us_per_call": min(add), "us_batches": add}]
    for pass_ in case.passes:
        for variant in (COMPOSITE, AUTO, REF):
            t = time_calls(_pass_call(bound, variant, pass_), calls, repeats, warmup, device, grad=pass_ != "fwd")
            rows.append({"op": case.name, "kind": case.kind, "pass": pass_, "variant": variant,
                         "backend": {AUTO: auto_backend, REF: "reference"}.get(variant),
                         "us_per_call": min(t), "us_batches": t})
    composite = {r["pass"]: r["us_per_call"] for r in rows if r["variant"] == COMPOSITE}
    for r in rows:
        r["ratio_to_composite"] = r["us_per_call"] / composite[r["pass"]]
        r["ratio_to_add"] = r["us_per_call"] / min(add)
        r["shape"] = shape
    return rows


# ---- output ----

def format_table(rows: list) -> str:
    """op, pass, ganfast-auto / reference / composite us, ganfast-auto over composite, and over torch.add."""
    by = {(r["op"], r["pass"], r["variant"]): r for r in rows}
    head = ("op", "pass", "ganfast us", "reference us", "composite us", "ratio", "x torch.add")
    lines = []
    for r in rows:
        if r["variant"] != AUTO:
            continue
        ref, comp = by.get((r["op"], r["pass"], REF)), by[(r["op"], r["pass"], COMPOSITE)]
        lines.append((r["op"], r["pass"], f"{r['us_per_call']:.1f}", "" if ref is None else f"{ref['us_per_call']:.1f}",
                      f"{comp['us_per_call']:.1f}", f"{r['ratio_to_composite']:.2f}", f"{r['ratio_to_add']:.1f}"))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head)] + [fmt(line) for line in lines])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed batches; the best counts (default %(default)s)")
    ap.add_argument("--calls", type=int, default=400, help="calls per batch (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: --calls)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default %(default)s)")
    ap.add_argument("--ops", nargs="+", default=None, metavar="NAME",
                    help=f"a subset of: {', '.join(CASES)} (default: all)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSONL file the rows are appended to (default %(default)s)")
    ap.add_argument("--label", default=None, help="a note stored in every row (what this run measures)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.ops or () if n not in CASES]
    if unknown:
        ap.error(f"unknown --ops {unknown}; known: {', '.join(CASES)}")
    if args.repeats < 1 or args.calls < 1:
        ap.error("--repeats and --calls must be >= 1")
    cases = [CASES[n] for n in (args.ops or CASES)]
    device = torch.device(args.device)
    warmup = args.calls if args.warmup is None else args.warmup
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with torch.random.fork_rng(devices=[]):    # the setups seed torch's RNG; leave the caller's alone
            for case in cases:
                check_composite(case)
            env = environment(device)
            run_id = uuid.uuid4().hex[:8]
            rows = []
            for case in cases:
                case_rows = measure_case(case, device, args.calls, args.repeats, warmup)
                stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                for r in case_rows:
                    r.update({"bench": "overhead", "dtype": "float32", "device": device.type,
                              "threads": torch.get_num_threads(), "calls": args.calls, "repeats": args.repeats,
                              "warmup": warmup, "composite_checked": True, "label": args.label,
                              "load_avg": load_average(), "timestamp": stamp, "run_id": run_id, **env})
                rows.extend(case_rows)
                auto = {r["pass"]: r for r in case_rows if r["variant"] == AUTO}
                print(f"{case.name:24s} " + "  ".join(
                    f"{p} {auto[p]['us_per_call']:.1f} us ({auto[p]['ratio_to_composite']:.2f}x)" for p in case.passes),
                    flush=True)
    finally:
        torch.set_num_threads(threads)
    append_rows(args.out, rows)
    print(f"\n{env['machine']['cpu']}, {args.threads} thread(s), {device.type}, float32, best of {args.repeats} x "
          f"{args.calls} calls; ratio = ganfast-auto / eager composite, x torch.add = ganfast-auto / torch.add(x, x)")
    print(format_table(rows))
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
