"""Where a stage's residuals sit on a point whose gradient is undefined or is rounding noise.

Why the differential fuzz test needs it: ``invert`` reconstructs a stage's states to within
rounding, ±1e-17 where the forward had an exact 0, and two kinds of points turn that into a
different gradient, where neither ``store``'s nor ``invert``'s is more right:

* **kinks**: a ReLU or leaky ReLU whose input is an exact 0 takes the other one-sided
  derivative, a max-pool window with a tie may pick the other maximum (zero-padded channels;
  a group a ReLU emptied, then normalised);
* **degenerate normalisations**: a batch/group/layer norm of a group that is numerically
  constant (variance below the layer's ``eps``) divides by ``sqrt(eps)`` in forward and
  backward, so the gradients behind it are amplified rounding (a constant-zero channel's
  bias gradient: -2^-19 in one mode, +2^-19 in the other). Chained, the factor compounds:
  a dozen of them overflow float32, and plain autograd's own gradient is inf or NaN.

This module finds such points in a ``store`` forward, so that a disagreement can be
attributed to them and only to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odedsl.runtime import OdeStage


def _exact_zeros(x: Tensor) -> bool:
    return bool((x == 0).any())


def _pool_ties(pool: nn.MaxPool2d) -> Callable[[Tensor], bool]:
    def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    kernel, padding, dilation = pair(pool.kernel_size), pair(pool.padding), pair(pool.dilation)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)

    def ties(x: Tensor) -> bool:
        if pool.ceil_mode or dilation != (1, 1):
            return True  # not modelled: assume the worst
        ph, pw = padding
        planes = x.reshape(-1, 1, *x.shape[-2:])
        planes = F.pad(planes, (pw, pw, ph, ph), value=-math.inf)
        cols = F.unfold(planes, kernel_size=kernel, stride=stride)  # (planes, k*k, windows)
        top = cols.max(dim=1, keepdim=True).values
        return bool(((cols == top).sum(dim=1) > 1).any())

    return ties


def _degenerate(module: nn.Module) -> Callable[[Tensor], bool]:
    """True when some group the layer normalises has a variance below its ``eps``."""

    def groups(x: Tensor) -> Tensor:
        if isinstance(module, nn.GroupNorm):
            return x.reshape(x.shape[0], module.num_groups, -1)
        if isinstance(module, nn.LayerNorm):
            return x.reshape(*x.shape[: x.dim() - len(module.normalized_shape)], -1)
        return x.transpose(0, 1).reshape(x.shape[1], -1)  # batch norm: per channel

    def check(x: Tensor) -> bool:
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.training:
            return False  # running statistics: a fixed affine map
        return bool((groups(x).var(dim=-1, unbiased=False) < module.eps).any())

    return check


NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _check_of(module: nn.Module, norms_only: bool) -> Callable[[Tensor], bool] | None:
    if isinstance(module, NORMS):
        return _degenerate(module)
    if norms_only:
        return None
    if isinstance(module, nn.ReLU | nn.LeakyReLU):
        return _exact_zeros
    if isinstance(module, nn.MaxPool2d):
        return _pool_ties(module)
    return None


def _recorder(
    where: str, check: Callable[[Tensor], bool], hits: list[str]
) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
    def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if where not in hits and check(args[0]):
            hits.append(where)

    return hook


def ill_posed_points(
    model: nn.Module, run: Callable[[], object], *, norms_only: bool = False
) -> list[str]:
    """Names of the layers inside ODE stages whose input sat on a kink or made a degenerate
    normalisation during ``run()`` (a forward of ``model``): an exact zero into a ReLU or leaky
    ReLU, a tie in a max-pool window, a normalised group of variance below ``eps``; with
    ``norms_only``, the degenerate normalisations alone (kinks change a gradient, they do not
    make it overflow)."""
    hits: list[str] = []
    handles = []
    for stage_name, stage in model.named_modules():
        if not isinstance(stage, OdeStage):
            continue
        for name, module in stage.named_modules():
            check = _check_of(module, norms_only)
            if check is not None:
                hook = _recorder(f"{stage_name}.{name}", check, hits)
                handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return hits
