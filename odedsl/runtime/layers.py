"""Torch modules for the layers the spec registry offers that torch.nn lacks, and the
``Sequence`` container residual functions and sections are built from.

Kept in the runtime (torch only) so generated standalone code can carry it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AntisymmetricConv2d(nn.Conv2d):
    """A convolution with operator K − Kᵀ (Chang et al. 2018, midpoint network).

    For stride 1 and 'same' padding the adjoint of ``conv2d(·, W)`` is ``conv2d(·, W*)`` with
    ``W*`` the kernel flipped in space and transposed in channels, so ``W − W*`` gives an
    exactly antisymmetric operator on zero-padded images.
    """

    def effective_weight(self) -> Tensor:
        w = self.weight
        return w - w.flip(-1, -2).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class AntisymmetricLinear(nn.Linear):
    """A linear map with matrix K − Kᵀ."""

    def effective_weight(self) -> Tensor:
        return self.weight - self.weight.t()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def effective_weight(module: nn.Module) -> Tensor:
    fn = getattr(module, "effective_weight", None)
    return fn() if fn is not None else module.weight  # type: ignore[return-value]


class TransposeOf(nn.Module):
    """Kᵀ: the adjoint of an earlier conv2d/linear of the same :class:`Sequence`, weight shared.

    ``Kᵀσ(Kz + b)`` is the Hamiltonian network's residual (Chang et al. 2018, eq. 7).
    """

    def __init__(self, ref: str, out_features: int, bias: bool = False):
        super().__init__()
        self.ref = ref
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor, of: nn.Module) -> Tensor:
        w = effective_weight(of)
        if isinstance(of, nn.Conv2d):
            return F.conv_transpose2d(
                x,
                w,
                self.bias,
                stride=of.stride,
                padding=of.padding,
                dilation=of.dilation,
                groups=of.groups,
            )
        return F.linear(x, w.t(), self.bias)


class PadChannels(nn.Module):
    """Zero channel padding, the parameter-free transition of reversible networks."""

    def __init__(self, out: int):
        super().__init__()
        self.out = out

    def forward(self, x: Tensor) -> Tensor:
        extra = self.out - x.shape[1]
        if extra == 0:
            return x
        pad = [0, 0] * (x.dim() - 2) + [0, extra]
        return F.pad(x, pad)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class Sequence(nn.Module):
    """Named layers applied in order; ``TransposeOf`` layers receive the layer they refer to.

    Unlike ``nn.Sequential`` the children keep readable names (``conv1``, ``bn2``), which is
    what ``state_dict`` keys show.
    """

    def __init__(self, layers: dict[str, nn.Module]):
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            if isinstance(layer, TransposeOf):
                x = layer(x, getattr(self, layer.ref))
            else:
                x = layer(x)
        return x
