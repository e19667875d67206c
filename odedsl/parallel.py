"""Data-parallel training helpers: a BatchNorm synchronised across processes on any backend.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (its kernels are CUDA/XPU only: "SyncBatchNorm
expected input tensor to be on GPU"), so a model trained with DDP over gloo on CPU cannot
share batch statistics between processes with it. :class:`SyncBatchNorm` here does, with
plain tensor operations and two differentiable all-reduces (sum and count, then the centred
sum of squares), on every device and backend.

It works inside ODE stages in every backward mode: the statistics are global in the forward
pass and in each recomputation (checkpoint or invert backward), so every process rebuilds the
same states, and running statistics are updated once per forward (the stage's buffer guard
restores them after recomputation). Every process must run the same stages in the same order,
as DDP already requires.

Usage::

    model = odedsl.parallel.convert_sync_batchnorm(odedsl.compile("net.ode"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation over the union of the batches of all processes of ``process_group``.

    Without an initialised process group, in eval mode, or with one process, it is exactly
    ``BatchNorm{1,2,3}d``. Inputs are ``[N, C, ...]``.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {input.dim()}-D")

    def _synchronised(self) -> bool:
        return (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input: Tensor) -> Tensor:
        if not self._synchronised():
            return super().forward(input)
        self._check_input_dim(input)
        group = self.process_group or dist.group.WORLD
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        view = (1, c) + (1,) * (input.dim() - 2)
        # float32 at least: under autocast the input may be float16, where a count above
        # 65504 is inf (NaN outputs) and bfloat16, where counts above 256 round
        wide = torch.promote_types(input.dtype, torch.float32)
        local = torch.cat(
            [
                input.sum(dims, dtype=wide),
                torch.full((1,), input.numel() // c, dtype=wide, device=input.device),
            ]
        )
        total = _AllReduceSum.apply(local, group)
        count = float(total[c].detach())
        mean = total[:c] / count
        centred = input - mean.view(view)
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / count
        out = centred * torch.rsqrt(var + self.eps).view(view)
        if self.affine:
            out = out * self.weight.view(view) + self.bias.view(view)
        if not torch.is_autocast_enabled(input.device.type):  # autocast: float32, as torch's
            out = out.to(input.dtype)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return out

    def _update_running_stats(self, mean: Tensor, var: Tensor, count: float) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            unbiased = var * count / max(count - 1.0, 1.0)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum every process reads is the sum
    of every process's gradient (an all-reduce again)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=ctx.group)
        return out, None


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Replace every ``BatchNorm*d`` in ``module`` (in place, and returned) by a
    :class:`SyncBatchNorm` with the same parameters and buffers, so state dict keys and values
    are unchanged (checkpoints load either way)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        return _converted(module, process_group)
    for name, child in list(module.named_children()):
        new = convert_sync_batchnorm(child, process_group)
        if new is not child:
            module.add_module(name, new)  # same name: fx graphs and Sequence order unchanged
    return module


def _converted(bn: _BatchNorm, process_group: Any) -> SyncBatchNorm:
    sync = SyncBatchNorm(
        bn.num_features,
        bn.eps,
        bn.momentum,
        bn.affine,
        bn.track_running_stats,
        process_group=process_group,
    )
    if bn.affine:
        with torch.no_grad():
            sync.weight = bn.weight
            sync.bias = bn.bias
    sync.running_mean = bn.running_mean
    sync.running_var = bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.train(bn.training)
    return sync.to(device=_device(bn))


def _device(module: nn.Module) -> torch.device | None:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return None
