"""The trainer's optimizers and their device-side skip.

A phase whose loss or gradients are not finite must leave the weights and the optimizer state as
they were. The decision is a tensor on the device (`skip`, a 0-dim bool), never read by the host,
so a step can run without synchronizing and be captured in a CUDA graph:

    Adam      runs fused (torch's one-kernel Adam, on CPU and CUDA) and is handed `skip` the way
              torch.amp.GradScaler hands it a found-inf flag: `optimizer.found_inf` (float32, 1 =
              skip). The kernel then leaves parameters and moments alone, and the step counter is
              put back, all on the device.
    RMSprop   (no fused form in torch) steps as usual and is then put back where `skip` is set:
              parameters and state tensors are copied before the step and restored with
              torch.where after it. On CUDA it is built capturable, so its step counter lives on
              the device with the flag.

Either way a step that is not skipped gives the bits of a plain optimizer.step() of that optimizer.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch

__all__ = ["make_optimizer", "step_unless"]

_PLACEMENT_KEYS = ("fused", "capturable", "foreach")


def make_optimizer(kind: str, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
                   device: torch.device, capturable: bool) -> torch.optim.Optimizer:
    """kind 'adam' (eps 1e-8) or 'rmsprop'. capturable: the optimizer will be captured in a CUDA graph."""
    params = list(params)
    if kind == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, capturable=capturable or device.type == "cuda")
    else:
        # fused: the kernel that takes found_inf; capturable only tells torch's capture check that
        # this instance may be captured (the fused kernel keeps its step counter on the device anyway)
        opt = torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, fused=True, capturable=capturable)
    opt.register_load_state_dict_pre_hook(_keep_placement)
    return opt


def _keep_placement(opt: torch.optim.Optimizer, state_dict: dict) -> dict:
    """A checkpoint written with other fused / capturable settings (another device, an older
    ganfast) is loaded with this optimizer's: they decide where the step counter lives, and the
    saved hyperparameters would otherwise replace them."""
    groups = [{**saved, **{k: ours[k] for k in _PLACEMENT_KEYS if k in ours}}
              for saved, ours in zip(state_dict["param_groups"], opt.param_groups)]
    return {**state_dict, "param_groups": groups}


def step_unless(opt: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """opt.step(), or nothing at all where the 0-dim bool tensor `skip` is True (decided on the
    device: the host never reads it)."""
    if all(group.get("fused") for group in opt.param_groups):
        opt.found_inf = skip.to(torch.float32)
        try:
            opt.step()
        finally:
            del opt.found_inf
        return
    saved = []
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                state = opt.state.get(p)
                saved.append((p, p.detach().clone(),
                              {k: v.clone() for k, v in state.items() if torch.is_tensor(v)} if state else None))
    with warnings.catch_warnings():
        # a capturable RMSprop outside a graph warns that capturable costs time; here it is on purpose
        warnings.filterwarnings("ignore", message=".*capturable=True.*")
        opt.step()
    with torch.no_grad():
        for p, before, state_before in saved:
            p.copy_(torch.where(skip, before, p))
            for k, v in opt.state[p].items():
                if torch.is_tensor(v):       # state created by this step goes back to its initial zeros
                    old = state_before[k] if state_before is not None else torch.zeros_like(v)
                    v.copy_(torch.where(skip, old, v))
