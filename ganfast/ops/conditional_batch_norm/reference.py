"""Conditional batch norm (BigGAN's ccbn) in plain PyTorch: the specification and the fallback.

x [N, C, H, W]; gain, bias [N, C] per sample (BigGAN: 1 + linear(y), linear(y) of the shared
class embedding and a z chunk). Per channel c, over every sample and pixel of the batch (and of
every process in `process_group`: cross-replica statistics):

    mean[c], var[c] = batch mean and biased variance of x[:, c]            (training)
                    = running_mean[c], running_var[c]                        (eval)
    xhat = (x - mean[c]) * rstd[c],  rstd = 1 / sqrt(var + eps)
    z    = xhat * gain[n, c] + bias[n, c]
    y    = relu(z) when act == 'relu', else z

Statistics are float32 (float64 for float64 x) whatever x's dtype. In training, the running
statistics move like torch's BatchNorm: r <- (1 - momentum) r + momentum * batch, with the
unbiased variance (count / (count - 1), count = N*H*W summed over the processes).

Cross-replica: each process's (count, mean, M2) per channel is all-gathered and combined with
Chan's formula (stable, unlike sum / sum of squares). Through autograd the reference uses
torch.distributed.nn's differentiable all_gather, so its gradients are the gradients of the
global statistics (and every order of them).

The kernels (cpu.py, triton.py, cuda.py) implement the four passes at the end of this file; the
statistics' combination and the all-reduces are common Python in __init__.py.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "relu")


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def combine_stats(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chan's combination of per-part (count [P], mean [P, C], M2 [P, C]) into the whole's
    (count [], mean [C], M2 [C]). Differentiable."""
    total = count.sum()
    w = (count / total).unsqueeze(1)
    mean_all = (w * mean).sum(dim=0)
    m2_all = (m2 + count.unsqueeze(1) * (mean - mean_all) ** 2).sum(dim=0)
    return total, mean_all, m2_all


def _gather_parts(count, mean, m2, process_group, differentiable: bool):
    import torch.distributed as dist
    part = torch.cat([count.reshape(1), mean, m2]).unsqueeze(0)    # [1, 1 + 2C]
    if differentiable:
        import torch.distributed.nn.functional as dist_fn
        parts = torch.cat(dist_fn.all_gather(part, group=process_group), dim=0)
    else:
        world = dist.get_world_size(process_group)
        parts = part.new_empty(world, part.shape[1])
        dist.all_gather_into_tensor(parts, part.contiguous(), group=process_group)
    c = mean.shape[0]
    return parts[:, 0], parts[:, 1:1 + c], parts[:, 1 + c:]


def batch_stats(x: torch.Tensor, process_group=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(count [], mean [C], biased var [C]) over (N, H, W) of x, across `process_group`'s
    processes when given; in acc_dtype(x); differentiable (across processes too)."""
    xa = x.to(acc_dtype(x))
    var, mean = torch.var_mean(xa, dim=(0, 2, 3), correction=0)
    count = torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), dtype=xa.dtype, device=x.device)
    if process_group is None:
        return count, mean, var
    total, mean, m2 = combine_stats(*_gather_parts(count, mean, var * count, process_group, torch.is_grad_enabled()))
    return total, mean, m2 / total


@torch.no_grad()
def update_running_stats(running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                         momentum: float, count: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """torch BatchNorm's update, in place: r <- (1 - momentum) r + momentum * batch (unbiased var)."""
    if running_mean is not None:
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    if running_var is not None:
        unbiased = var * (count / (count - 1).clamp_min(1))
        running_var.lerp_(unbiased.to(running_var.dtype), momentum)


def conditional_batch_norm_ref(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                               running_mean: Optional[torch.Tensor] = None,
                               running_var: Optional[torch.Tensor] = None, training: bool = True,
                               momentum: float = 0.1, eps: float = 1e-5, act: Optional[str] = None,
                               process_group=None, upcast: bool = False) -> torch.Tensor:
    """The definition (module docstring). Differentiable to any order in x, gain and bias.

    upcast: compute in float64 (the test oracle); otherwise in acc_dtype(x), the result cast
    to x's dtype. Updates running_mean / running_var in place when training and given.

    Written as BigGAN writes it: torch's batch norm without affine, then gain and bias per sample
    (addcmul) and the ReLU. Where F.batch_norm does not compute the definition (cross-replica
    statistics, one value per channel, running statistics in another dtype), the statistics and
    the normalization are written out.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"conditional_batch_norm: act must be one of {ACTIVATIONS}, got {act!r}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("conditional_batch_norm: eval (training=False) needs running_mean and running_var")
    acc = torch.float64 if upcast else acc_dtype(x)
    xa = x.to(acc)
    c = x.shape[1]
    if not training:
        # written out, not F.batch_norm: torch's CPU batch-norm backward in eval misreads strided
        # running statistics (dx ~200x off for x [1, 2, 1, 1] and running_var a stride-2 view) and
        # an x whose size-1 dims carry unusual strides (x [1, 39, 3, 1], strides (1, 1, 39, 117):
        # dx's values in NCHW order under channels-last strides). Both found by the fuzz tests.
        rstd = torch.rsqrt(running_var.to(acc) + eps)
        xhat = (xa - running_mean.to(acc).reshape(1, c, 1, 1)) * rstd.reshape(1, c, 1, 1)
    elif _fused_batch_norm_applies(xa, running_mean, running_var, process_group):
        # torch's batch norm without affine (the gain is per sample): the batch statistics, the
        # normalization and the running statistics' update (the rule above) in one fused op
        xhat = F.batch_norm(xa, running_mean, running_var, None, None, True, momentum, eps)
    else:
        count, mean, var = batch_stats(xa, process_group)
        update_running_stats(running_mean, running_var, momentum, count.detach(), mean.detach(), var.detach())
        xhat = (xa - mean.reshape(1, c, 1, 1)) * torch.rsqrt(var + eps).reshape(1, c, 1, 1)
    z = torch.addcmul(bias.to(acc)[:, :, None, None], xhat, gain.to(acc)[:, :, None, None])
    if act == "relu":
        z = F.relu(z, inplace=True)          # addcmul's backward reads its operands, not z
    return z.to(x.dtype)


def _fused_batch_norm_applies(xa: torch.Tensor, running_mean: Optional[torch.Tensor],
                              running_var: Optional[torch.Tensor], process_group) -> bool:
    """Whether F.batch_norm computes the training step as defined: one process, more than one value
    per channel (it refuses one; the definition gives xhat = 0), an NCHW-contiguous x, and the running statistics both
    absent or both contiguous in the computation's dtype (its CPU kernel takes no other)."""
    if process_group is not None or xa.shape[0] * xa.shape[2] * xa.shape[3] < 2:
        return False
    if not xa.is_contiguous():
        # torch's CPU batch-norm backward gave dx in NCHW order under channels-last strides for an
        # x whose size-1 dims carry unusual strides (found by the fuzz tests): NCHW x only
        return False
    if running_mean is None and running_var is None:
        return True
    # contiguous ones only: F.batch_norm updates them in place, and its CPU kernels misread strided
    # running statistics in eval's backward (above); the written-out path updates any view
    return (running_mean is not None and running_var is not None and running_mean.dtype == running_var.dtype == xa.dtype
            and running_mean.is_contiguous() and running_var.is_contiguous())


# ---- the kernel contract: four passes ----
# x [N, C, H, W] contiguous (NCHW), fp16/bf16/fp32 (fp64 on cpu); mean, rstd, c1, c2 [C] and
# gain, bias [N, C] contiguous in acc_dtype(x); relu: bool. Results are new tensors, every
# element written; sums accumulated in acc_dtype(x) (or wider).

def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """[C, 2]: (mean, M2 = sum of squared deviations from the mean) of x[:, c] over (N, H, W)."""
    xa = x.to(acc_dtype(x))
    var, mean = torch.var_mean(xa, dim=(0, 2, 3), correction=0)
    return torch.stack([mean, var * (x.shape[0] * x.shape[2] * x.shape[3])], dim=1)


def _z(x, mean, rstd, gain, bias):
    c = x.shape[1]
    xhat = (x.to(mean.dtype) - mean.reshape(1, c, 1, 1)) * rstd.reshape(1, c, 1, 1)
    return xhat, xhat * gain[:, :, None, None] + bias[:, :, None, None]


def forward_apply(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
                  bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """y [N, C, H, W] in x's dtype: z = (x - mean[c]) * rstd[c] * gain[n, c] + bias[n, c], relu'd."""
    _, z = _z(x, mean, rstd, gain, bias)
    return (torch.relu(z) if relu else z).to(x.dtype)


def backward_sums(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                  gain: torch.Tensor, bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """[N, C, 2]: per plane, (sum over H, W of dz, of dz * xhat), dz = dy * (z > 0 when relu).

    These are dbias[n, c] and dgain[n, c]; dy is like x (same shape, dtype and layout)."""
    xhat, z = _z(x, mean, rstd, gain, bias)
    dz = dy.to(mean.dtype)
    if relu:
        dz = torch.where(z > 0, dz, torch.zeros_like(dz))
    return torch.stack([dz.sum(dim=(2, 3)), (dz * xhat).sum(dim=(2, 3))], dim=2)


def backward_dx(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
                bias: torch.Tensor, relu: bool, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """dx [N, C, H, W] in x's dtype: rstd[c] * (gain[n, c] * dz - c1[c] - xhat * c2[c]).

    c1 = mean over the batch of gain * dz, c2 = of gain * dz * xhat (from backward_sums, all
    processes): the batch-statistics terms; zero in eval."""
    xhat, z = _z(x, mean, rstd, gain, bias)
    c = x.shape[1]
    dz = dy.to(mean.dtype)
    if relu:
        dz = torch.where(z > 0, dz, torch.zeros_like(dz))
    dx = rstd.reshape(1, c, 1, 1) * (gain[:, :, None, None] * dz - c1.reshape(1, c, 1, 1) - xhat * c2.reshape(1, c, 1, 1))
    return dx.to(x.dtype)
