"""Multi-process training through torch.distributed: set-up from torchrun's environment, gradient
all-reduce, parameter broadcast, cross-replica batch norm, and a clean exit.

Launch with torchrun (one process per GPU, or several CPU processes with gloo):

    torchrun --standalone --nproc_per_node=8 -m ganfast.cli train ...           # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
             --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m ganfast.cli train ...   # on each node

Why gradients are all-reduced by hand rather than through DistributedDataParallel: the
regularization phases (R1, path length) take gradients of gradients, which DDP's reducer hooks do
not support, and the lazy phases use only part of each network, which DDP would flag as unused
parameters. One flat all-reduce per optimizer step (what NVlabs' StyleGAN2-ADA does too) is the
same communication as DDP's bucketed one, without those limits. Results equal single-process
training with the same global batch up to float summation order (tested with 2 gloo processes).

Faults. Every collective of the process group times out after GANFAST_DIST_TIMEOUT seconds
(default DEFAULT_TIMEOUT_S, 30 minutes: longer than any legitimate wait, e.g. the other ranks
waiting while rank 0 computes metrics at a snapshot). A process that dies closes its connections,
so with gloo the others fail at their next collective at once; a process that hangs (or, with
NCCL, dies: NCCL does not notice) makes the others fail after the timeout. Under torchrun the
agent also notices a dead worker and stops the others itself (it sends them SIGTERM, then SIGKILL
after its shutdown timeout). `is_process_group_failure` tells these errors from others.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedContext", "init_distributed", "all_reduce_mean_", "broadcast_module_",
           "use_cross_replica_batch_norm", "shutdown_distributed", "collective_timeout_s", "max_over_ranks",
           "is_process_group_failure", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank in [0, world_size), its device, and the process group
    (None for a single process)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    group: Optional[object] = None
    cpu_group: Optional[object] = None     # a gloo group for small host-side agreements (max_over_ranks)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes samples and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"init_distributed: environment variable {name} must be an integer, got {text!r}") from None


def collective_timeout_s() -> float:
    """GANFAST_DIST_TIMEOUT (seconds > 0), else DEFAULT_TIMEOUT_S."""
    text = os.environ.get("GANFAST_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"init_distributed: GANFAST_DIST_TIMEOUT must be a number of seconds > 0, got {text!r}")
    return value


def init_distributed(device: Optional[str] = None, backend: Optional[str] = None) -> DistributedContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (NCCL on CUDA,
    gloo on CPU, unless `backend` says otherwise) with collectives timing out after
    collective_timeout_s(). Without torchrun's variables: a single process.

    device: "cpu", "cuda" or None (cuda when available). On CUDA each process takes GPU
    LOCAL_RANK. A process group that is already initialized is used as it is.
    """
    rank, world_size, local_rank = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"init_distributed: RANK={rank} and WORLD_SIZE={world_size} are inconsistent")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"init_distributed: device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("init_distributed: device='cuda' but torch sees no CUDA device")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world_size == 1 and not dist.is_initialized():
        return DistributedContext(device=dev)
    timeout = datetime.timedelta(seconds=collective_timeout_s())
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if device == "cuda" else "gloo"), timeout=timeout,
                                **({"device_id": dev} if device == "cuda" else {}))
    # a CPU group for the per-step stop agreement: a flag all-reduced there never waits on the GPU
    cpu_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              device=dev, group=dist.group.WORLD, cpu_group=cpu_group)


def max_over_ranks(value: int, ctx: DistributedContext) -> int:
    """The largest of every process's `value` (a small int; each must call it): how processes agree
    on a host-side decision (stop on a signal, a failed checkpoint). One tiny CPU all-reduce, no
    GPU synchronization; `value` itself for one process."""
    if not ctx.distributed:
        return value
    # a context built by hand may lack the CPU group: then the flag goes through the main group, on
    # its device (for NCCL a GPU round trip)
    on_cpu = ctx.cpu_group is not None
    flag = torch.tensor([value], dtype=torch.int64, device="cpu" if on_cpu else ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=ctx.cpu_group if on_cpu else ctx.group)
    return int(flag[0])


def is_process_group_failure(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another process died, hung past the
    timeout or lost its connection (torch's DistError family; gloo raises plain RuntimeErrors
    from its transport, recognised by their text)."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(mark in text for mark in (
        "gloo/transport", "Connection reset by peer", "Connection closed by peer", "Timed out waiting", "NCCL"))


def all_reduce_mean_(flat: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Average `flat` over the processes, in place (a no-op for one process)."""
    if ctx.distributed:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=ctx.group)
        flat.div_(ctx.world_size)
    return flat


@torch.no_grad()
def broadcast_module_(module: nn.Module, ctx: DistributedContext, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every process (so all start identical)."""
    if not ctx.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src, group=ctx.group)


def use_cross_replica_batch_norm(modules: Iterable[nn.Module], ctx: DistributedContext) -> int:
    """Point every ganfast batch-norm layer (BatchNormAct2d, ConditionalBatchNorm2d: anything with a
    `process_group` attribute) at the world group, so their batch statistics are over the global
    batch, as BigGAN's cross-replica batch norm. Returns how many layers were switched. Plain
    torch BatchNorm layers are left alone (nn.SyncBatchNorm needs CUDA); a warning names them."""
    import warnings
    switched, plain = 0, []
    for root in modules:
        for name, m in root.named_modules():
            if hasattr(m, "process_group") and isinstance(m, nn.Module):
                m.process_group = ctx.group if ctx.distributed else None
                switched += 1
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and ctx.distributed:
                plain.append(name)
    if plain:
        warnings.warn(f"use_cross_replica_batch_norm: plain torch batch-norm layers {plain[:5]} keep per-process "
                      f"statistics (use ganfast.nn.BatchNormAct2d for cross-replica statistics)")
    return switched


def shutdown_distributed(ctx: DistributedContext) -> None:
    """Leave together: a barrier, then destroy the process group (a process that exits while
    another still talks to it can abort the other at teardown)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier(group=ctx.group)
        dist.destroy_process_group()
