"""Data-parallel plumbing for ``torchrun --nproc_per_node N <script>.py ...``.

Every helper here is a no-op (or the identity) in a single process, so the loop and the methods
call them unconditionally. Under torchrun (``WORLD_SIZE`` > 1) ``init_distributed`` joins the
process group (NCCL on CUDA with device ``cuda:LOCAL_RANK``, gloo on CPU); each rank trains on its
slice of every global batch and gradients are averaged by ``average_gradients`` after backward
(a bucketed all-reduce of the optimizer's gradients: the optimizer state, and so the checkpoints,
stay those of plain modules without a 'module.' prefix).
"""
from __future__ import annotations

import atexit
import datetime
import os
import sys
import warnings
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

from helper.errors import UserError

BUCKET_BYTES = 32 * 2**20  # gradient all-reduce bucket size

_control_group: Any = None  # a gloo group for host-side flags (the stop request) when the main one is NCCL


def env_world_size() -> int:
    """Number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside torchrun)."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the rank that prints, logs and writes checkpoints."""
    return rank() == 0


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group when WORLD_SIZE > 1 and return this rank's device.

    CUDA uses NCCL on ``cuda:LOCAL_RANK``; CPU uses gloo. Ranks other than 0 get a silent stdout
    (stderr stays, for errors). The group is destroyed at exit.
    """
    if env_world_size() <= 1 or is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            raise UserError(f"--device {device} cannot be combined with torchrun: each process uses the GPU of "
                            "its local rank. Pass --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES.")
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if local_processes > torch.cuda.device_count():  # the same check on every rank: rank 0 reports it
            raise UserError(f"torchrun started {local_processes} processes on this machine, but only "
                            f"{torch.cuda.device_count()} GPUs are visible. Lower --nproc_per_node to the number of "
                            "GPUs (one process per GPU).")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                            **({"device_id": device} if backend == "nccl" else {}))
    global _control_group
    _control_group = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    atexit.register(destroy)
    if rank() != 0:
        sys.stdout = open(os.devnull, "w")
        warnings.filterwarnings("ignore")
    return device


def destroy() -> None:
    """Leave the process group (registered at exit, for runs that end with an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """End a run cleanly: wait for every rank, then leave the process group while the interpreter is
    fully alive (gloo's threads can abort the process when torn down during interpreter exit)."""
    if is_distributed():
        dist.barrier()
        destroy()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over ranks (a new tensor; ``tensor`` itself in a single process)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def all_reduce_min(tensor: Tensor) -> Tensor:
    if not is_distributed():
        return tensor
    smallest = tensor.clone()
    dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
    return smallest


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is set on any rank (host-side, over gloo: no GPU synchronisation)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(value.item())


def all_gather(tensor: Tensor) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order, without autograd.

    All ranks must pass the same shape (training batches are equal-sized: drop_last).
    """
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _AllGatherWithGrad(Function):
    """all_gather whose backward sums the gathered gradient over ranks and keeps this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        ctx.rows = tensor.shape[0]
        return all_gather(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """``all_gather`` that back-propagates into every rank's own rows.

    When each rank computes the same loss L from the gathered tensor, every rank receives
    sum_ranks dL/d(its rows) = N dL/d(its rows), and gradient averaging divides by N again: the
    result equals single-process training on the concatenated batch.
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


class _AllReduceWithGrad(Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.contiguous().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


@torch.no_grad()
def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of ``optimizer``'s parameters over ranks (bucketed all-reduce).

    Parameters without a gradient are skipped; every rank runs the same code, so the set is the
    same everywhere. Call between ``backward()`` and ``optimizer.step()``.
    """
    if not is_distributed():
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    scale = 1.0 / world_size()
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat.mul_(scale)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def _buckets(grads: list[Tensor]) -> Iterable[list[Tensor]]:
    """Consecutive groups of same-dtype/device gradients of at most ``BUCKET_BYTES`` each."""
    bucket: list[Tensor] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or grad.dtype != bucket[0].dtype
                       or grad.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(grad)
        size += nbytes
    if bucket:
        yield bucket


@torch.no_grad()
def broadcast_norm_stats(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's BatchNorm running statistics to every rank (as DDP's buffer broadcast does),
    so that validation and checkpoints see one model."""
    if not is_distributed():
        return
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
                for buffer in (layer.running_mean, layer.running_var, layer.num_batches_tracked):
                    if buffer is not None:
                        dist.broadcast(buffer, src=0)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all ranks (SyncBatchNorm for any backend, gloo included).

    Mean and variance of the global batch come from two differentiable all-reduces of per-channel
    sums, so forward and backward equal single-process BatchNorm on the concatenated batch (up to
    float summation order). Outside distributed training it is plain BatchNorm2d; the state_dict
    keys are BatchNorm2d's.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, 2, 3]
        values = x.float()
        count = values.numel() // values.shape[1] * world_size()
        mean = _AllReduceWithGrad.apply(values.sum(dims)) / count
        centered = values - mean[None, :, None, None]
        var = _AllReduceWithGrad.apply(centered.square().sum(dims)) / count
        out = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make ``module``'s BatchNorm2d layers compute statistics over all ranks (--sync_bn).

    CUDA: torch's SyncBatchNorm (new modules, same state_dict keys). Other devices: the layers
    become GlobalBatchNorm2d in place (same objects, parameters and buffers). Identity in a
    single process.
    """
    if not is_distributed():
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for layer in module.modules():
        if type(layer) is nn.BatchNorm2d:
            layer.__class__ = GlobalBatchNorm2d
    return module
