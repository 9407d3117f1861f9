"""bias_act: fused bias + activation + gain + clamp, on every backend.

Autograd pattern (every ganfast op repeats it): three torch custom ops,
  ganfast::bias_act        x -> y
  ganfast::bias_act_grad   (g, x) -> (dx, db)          its autograd is the double backward
  ganfast::bias_act_grad2  (gg, g, x) -> (x-term, db)   raises: order 3 needs backend='reference'
each with register_fake (so torch.compile traces it without running it) and register_autograd.
The backend is resolved inside the op, on real tensors, so a compiled graph keeps dispatching at
run time. backend='reference' bypasses the custom ops entirely: plain PyTorch, any gradient order.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import backends
from ganfast.ops._layout import dense, is_eager, layout_of
from ganfast.ops.bias_act.reference import ACTIVATIONS, bias_act_ref, bias_shape

__all__ = ["bias_act", "BIAS_ACT_ACTIVATIONS", "resolve_args"]

BIAS_ACT_ACTIVATIONS = tuple(ACTIVATIONS)
OP = "bias_act"

backends.register_op(OP, backends.FUSED_OP_DTYPES)


def _impl(name: str):
    """The module implementing the kernel contract `run(order, x, b, g, gg, dim, act, alpha, gain, clamp, want_db)`."""
    return backends.kernel_module(OP, name)


def _run(order: int, x, b, g, gg, dim, act, alpha, gain, clamp, want_db, backend, db_tensor=True):
    """(out, db) from backend's kernel. db_tensor: a tensor even where no db is computed (custom
    ops return tensors; the eager Functions take None and allocate nothing)."""
    x = dense(x)
    if b is not None and not b.is_contiguous():
        b = b.contiguous()
    g = layout_of(g, x) if g is not None else None
    gg = layout_of(gg, x) if gg is not None else None
    name = backends.select(OP, (x, b, g, gg), backend or None)
    out, db = _impl(name).run(order, x, b, g, gg, dim, act, alpha, gain, clamp, want_db and b is not None)
    if db is None and db_tensor:
        db = x.new_zeros(x.shape[dim] if b is not None else 0)
    return out, db


# ---- custom ops ----

@torch.library.custom_op("ganfast::bias_act", mutates_args=())
def _bias_act_op(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float,
                 gain: float, clamp: float, backend: str) -> torch.Tensor:
    return _run(0, x, b, None, None, dim, act, alpha, gain, clamp, False, backend)[0]


@torch.library.custom_op("ganfast::bias_act_grad", mutates_args=())
def _bias_act_grad_op(g: torch.Tensor, x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                      alpha: float, gain: float, clamp: float, want_db: bool,
                      backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(1, x, b, g, None, dim, act, alpha, gain, clamp, want_db, backend)


@torch.library.custom_op("ganfast::bias_act_grad2", mutates_args=())
def _bias_act_grad2_op(gg: torch.Tensor, g: torch.Tensor, x: torch.Tensor, b: Optional[torch.Tensor],
                       dim: int, act: str, alpha: float, gain: float, clamp: float, want_db: bool,
                       backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(2, x, b, g, gg, dim, act, alpha, gain, clamp, want_db, backend)


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(x)


def _fake_grad(x, b, dim, want_db):
    return torch.empty_like(x), x.new_empty(x.shape[dim] if b is not None else 0)


@_bias_act_grad_op.register_fake
def _(g, x, b, dim, act, alpha, gain, clamp, want_db, backend):
    return _fake_grad(x, b, dim, want_db)


@_bias_act_grad2_op.register_fake
def _(gg, g, x, b, dim, act, alpha, gain, clamp, want_db, backend):
    return _fake_grad(x, b, dim, want_db)


def _save(ctx, tensors, output, *, names):
    ctx.save_for_backward(*tensors)
    for k, v in names.items():
        setattr(ctx, k, v)


def _setup_fwd(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp, backend = inputs
    _save(ctx, (x, b), output, names=dict(has_b=b is not None, args=(dim, act, alpha, gain, clamp), backend=backend))


def _backward_fwd(ctx, dy, grad_op=None):
    grad_op = grad_op or torch.ops.ganfast.bias_act_grad
    x, b = ctx.saved_tensors
    dim, act, alpha, gain, clamp = ctx.args
    want_db = ctx.has_b and ctx.needs_input_grad[1]
    dx, db = grad_op(dy, x, b, dim, act, alpha, gain, clamp, want_db, ctx.backend)
    return dx, (db if want_db else None), None, None, None, None, None, None


def _setup_grad(ctx, inputs, output):
    g, x, b, dim, act, alpha, gain, clamp, want_db, backend = inputs
    _save(ctx, (g, x, b), output, names=dict(has_b=b is not None, args=(dim, act, alpha, gain, clamp), backend=backend))


def _backward_grad(ctx, gdx, gdb, grad_op=None, grad2_op=None):
    grad_op = grad_op or torch.ops.ganfast.bias_act_grad
    grad2_op = grad2_op or torch.ops.ganfast.bias_act_grad2
    g, x, b = ctx.saved_tensors
    dim, act, alpha, gain, clamp = ctx.args
    # db = sum(dx) over every dim but `dim`, so its gradient reaches dx broadcast along dim.
    gt = gdx
    if ctx.has_b and gdb is not None and gdb.numel() > 0:
        gdb_b = gdb.reshape(bias_shape(x, dim))
        gt = gdb_b.expand_as(x) if gt is None else gt + gdb_b
    if gt is None:
        return (None,) * 10
    d_g = d_x = d_b = None
    if ctx.needs_input_grad[0]:
        d_g, _ = grad_op(gt, x, b, dim, act, alpha, gain, clamp, False, ctx.backend)
    wants_x = ctx.needs_input_grad[1] or (ctx.has_b and ctx.needs_input_grad[2])
    if wants_x and not ACTIVATIONS[act].zero_second_derivative:
        want_db = ctx.has_b and ctx.needs_input_grad[2]
        d_x, db = grad2_op(gt, g, x, b, dim, act, alpha, gain, clamp, want_db, ctx.backend)
        d_b = db if want_db else None
    return d_g, d_x, d_b, None, None, None, None, None, None, None


def _backward_grad2(ctx, *grads):
    raise RuntimeError(
        "ganfast.ops.bias_act: the fused backends compute gradients up to order 2; "
        "for a third-order gradient call bias_act(..., backend='reference')")


_bias_act_op.register_autograd(_backward_fwd, setup_context=_setup_fwd)
_bias_act_grad_op.register_autograd(_backward_grad, setup_context=_setup_grad)
_bias_act_grad2_op.register_autograd(_backward_grad2, setup_context=lambda ctx, inputs, output: None)


# ---- the same three ops as autograd.Functions, for eager mode ----
# torch.library's autograd wrapper costs ~50 us a call in eager mode, which dominates small layers
# (a 4x4x512 map). Outside torch.compile the public function uses these Functions instead; they
# share the setup and backward bodies above and call the same kernels.

class _BiasActFn(torch.autograd.Function):
    # forward(ctx, ...) rather than a separate setup_context: apply() then skips a per-call
    # inspect.signature bind (~60 us). The scalar arguments travel as one tuple: apply() walks
    # its arguments in Python, ~1 us each.
    @staticmethod
    def forward(ctx, x, b, args):
        dim, act, alpha, gain, clamp, backend = args
        out = _run(0, x, b, None, None, dim, act, alpha, gain, clamp, False, backend, db_tensor=False)[0]
        _setup_fwd(ctx, (x, b) + args, out)
        return out

    @staticmethod
    def backward(ctx, dy):
        # a first-order backward (no graph of it being built) runs the kernel alone
        grads = _backward_fwd(ctx, dy, grad_op=_BiasActGradFn.apply if torch.is_grad_enabled() else _grad_direct)
        return grads[0], grads[1], None


def _grad_direct(g, x, b, dim, act, alpha, gain, clamp, want_db, backend):
    return _run(1, x, b, g, None, dim, act, alpha, gain, clamp, want_db, backend, db_tensor=False)


class _BiasActGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, x, b, dim, act, alpha, gain, clamp, want_db, backend):
        out = _run(1, x, b, g, None, dim, act, alpha, gain, clamp, want_db, backend, db_tensor=False)
        _setup_grad(ctx, (g, x, b, dim, act, alpha, gain, clamp, want_db, backend), out)
        return out

    @staticmethod
    def backward(ctx, gdx, gdb):
        return _backward_grad(ctx, gdx, gdb, grad_op=_BiasActGradFn.apply, grad2_op=_BiasActGrad2Fn.apply)


class _BiasActGrad2Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gg, g, x, b, dim, act, alpha, gain, clamp, want_db, backend):
        return _run(2, x, b, g, gg, dim, act, alpha, gain, clamp, want_db, backend, db_tensor=False)

    @staticmethod
    def backward(ctx, *grads):
        return _backward_grad2(ctx, *grads)


# ---- public API ----

# (act, alpha, gain, clamp) -> (alpha, gain, clamp) as floats, checked: a layer passes the same
# ones on every call.
_SCALARS: dict = {}


def _resolve_scalars(act, alpha, gain, clamp) -> tuple[float, float, float]:
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if clamp is None or clamp == -1:  # -1: "no clamp", as in the StyleGAN2/3 codebases
        clamp = -1.0
    elif clamp < 0:
        raise ValueError(f"bias_act: clamp must be None or >= 0, got {clamp}")
    return alpha, gain, float(clamp)


def resolve_args(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha, gain, clamp):
    """Validate bias_act's arguments; return (dim, alpha, gain, clamp) resolved to plain numbers."""
    if type(x) is torch.Tensor or type(x) is torch.nn.Parameter:
        # the common call, checked with the fewest attribute reads (this runs on every call)
        ndim = x.ndim
        if x.is_floating_point() and type(dim) is int and -ndim <= dim < ndim:
            dim = dim % ndim
            if b is None or (type(b) in (torch.Tensor, torch.nn.Parameter) and b.ndim == 1
                             and b.shape[0] == x.shape[dim] and b.dtype == x.dtype and b.device == x.device):
                if torch.compiler.is_compiling():
                    # traced once per graph: no cache, whose contents dynamo would guard on (a
                    # new entry from any other layer's eager call would recompile the graph)
                    return (dim,) + _resolve_scalars(act, alpha, gain, clamp)
                key = (act, alpha, gain, clamp)
                try:
                    found = _SCALARS.get(key)
                except TypeError:   # an unhashable argument: the slow path says what is wrong
                    found = None
                if found is None:
                    found = _resolve_scalars(act, alpha, gain, clamp)
                    if len(_SCALARS) < 1024:
                        _SCALARS[key] = found
                return (dim,) + found
    return _resolve_args_checked(x, b, dim, act, alpha, gain, clamp)


def _resolve_args_checked(x, b, dim, act, alpha, gain, clamp):
    """resolve_args with every check spelled out (any argument; raises naming what is wrong)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"bias_act: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("bias_act: x must have at least one dimension, got a 0-d tensor")
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    if not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim must be an int in [{-x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {dim!r}")
    dim = dim % x.ndim
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"bias_act: b must have shape [{x.shape[dim]}] (x.shape[dim={dim}]), got {got}")
        if b.dtype != x.dtype:
            raise TypeError(f"bias_act: b must have x's dtype {x.dtype}, got {b.dtype}")
        if b.device != x.device:
            raise ValueError(f"bias_act: b must be on x's device {x.device}, got {b.device}")
    return (dim,) + _resolve_scalars(act, alpha, gain, clamp)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             backend: Optional[str] = None) -> torch.Tensor:
    """Fused bias + activation + gain + clamp: ``clamp(act(x + b, alpha) * gain, -clamp, clamp)``.

    Drop-in for the StyleGAN2/StyleGAN3 ``bias_act`` (same names, order and defaults).

    Args:
        x: [..., C, ...] floating tensor, C at `dim`; any layout (contiguous, channels_last, strided).
        b: [C] bias added along `dim`, or None.
        dim: the dimension of x that b runs along (default 1, the channel dim of NCHW).
        act: one of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
        alpha: lrelu's negative slope (default 0.2) or elu's alpha (default 1); ignored by the rest.
            (NVIDIA's bias_act ignores alpha for elu and always computes alpha 1: the defaults
            agree, an explicit elu alpha other than 1 does not.)
        gain: multiplier after the activation (default sqrt(2) for relu, lrelu, swish; 1 otherwise).
        clamp: clamp the output to [-clamp, clamp]; None (or -1) for no clamping.
        backend: 'reference', 'cpu', 'triton' or 'cuda'; None picks one (see ganfast.backends).

    Returns:
        y: a new tensor (never x itself) of x's shape, dtype and layout. Differentiable twice on
        the fused backends (R1 and path-length regularization need that), to any order on
        'reference'.

    Non-finite inputs give NaN and +-inf where the reference gives them, with one difference:
    swish(-inf) is NaN on 'reference' and 'triton' (-inf * sigmoid(-inf) = -inf * 0) and -inf
    on 'cpu', whose vectorized exp saturates (the limit is 0; neither is it).
    """
    dim, alpha, gain, clamp = resolve_args(x, b, dim, act, alpha, gain, clamp)
    name = backends.requested_backend(backend)
    if name == "reference":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if not is_eager(x, b):   # torch.compile / tracing: the custom op
        return torch.ops.ganfast.bias_act(x, b, dim, act, alpha, gain, clamp, name or "")
    if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
        return _BiasActFn.apply(x, b, (dim, act, alpha, gain, clamp, name or ""))
    # nothing to differentiate: the kernel alone, without autograd's bookkeeping
    return _run(0, x, b, None, None, dim, act, alpha, gain, clamp, False, name, db_tensor=False)[0]
