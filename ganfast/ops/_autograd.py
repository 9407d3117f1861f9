"""vjp for the fused ops' double backwards (the math path through a reference backward that gives
every op gradients of any order), by plain autograd where it can be."""
from __future__ import annotations

from typing import Callable

import torch


def vjp(fn: Callable, *primals: torch.Tensor):
    """(outputs, pullback) as torch.func.vjp(fn, *primals).

    Where no graph of the result is being built (grad mode off: a double backward without
    create_graph, as R1 and path length take it) fn runs on detached copies of the primals under
    autograd, and pullback is one torch.autograd.grad: a fraction of functorch's per-call cost.
    Otherwise (a third order is coming), and below the autograd keys (inside a custom op's kernel,
    where autograd records nothing), it is torch.func.vjp, which composes with any order.
    pullback(cotangents) gives one gradient per primal, zeros where an output does not depend on it.
    """
    if torch.is_grad_enabled():
        return torch.func.vjp(fn, *primals)
    with torch.enable_grad():
        ins = tuple(p.detach().requires_grad_() for p in primals)
        outs = fn(*ins)
    outs_t = outs if isinstance(outs, tuple) else (outs,)
    if not any(o.requires_grad for o in outs_t):
        return torch.func.vjp(fn, *primals)

    def pullback(cotangents):
        cot_t = cotangents if isinstance(cotangents, tuple) else (cotangents,)
        pairs = [(o, c) for o, c in zip(outs_t, cot_t) if c is not None and o.requires_grad]
        grads = (torch.autograd.grad([o for o, _ in pairs], ins, [c for _, c in pairs], allow_unused=True)
                 if pairs else (None,) * len(ins))
        return tuple(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, ins))

    return tuple(o.detach() for o in outs_t) if isinstance(outs, tuple) else outs.detach(), pullback
