"""Helpers for the runtime tests: building stages, running a loss, comparing gradients."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from odedsl.runtime import OdeStage, WeightSchedule

from .programs import MLP, PROGRAMS, state_width

MODES = ("store", ("checkpoint", 3), "invert")


def make_stage(
    program: str,
    depth: int,
    width: int = 8,
    schedule: WeightSchedule | None = None,
    backward: object = "store",
    dtype: torch.dtype = torch.float64,
    residual: Callable[[int], nn.Module] = MLP,
    **kwargs: object,
) -> OdeStage:
    prog = PROGRAMS[program]()
    sw = state_width(program, width)
    stage = OdeStage(
        "body",
        prog,
        {r: (lambda: residual(sw)) for r in prog.residuals},
        depth=depth,
        schedule=schedule or WeightSchedule("untied"),
        backward=backward,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return stage.to(dtype)


@dataclass
class Run:
    out: Tensor
    input_grad: Tensor | None
    grads: dict[str, Tensor | None]
    module: nn.Module


def run(
    module: nn.Module,
    x: Tensor,
    mode: object | None = None,
    seed: int = 0,
    copy_module: bool = True,
) -> Run:
    """Deep-copy ``module`` (setting every stage's mode), run a fixed random loss, backward."""
    m = copy.deepcopy(module) if copy_module else module
    if mode is not None:
        for sub in m.modules():
            if isinstance(sub, OdeStage):
                sub.backward_mode = mode  # type: ignore[assignment]
    xx = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = m(xx)
    g = torch.Generator().manual_seed(123)
    weight = torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)
    (out * weight).sum().backward()
    base = getattr(m, "_orig_mod", m)  # torch.compile wrapper
    grads = {k: p.grad for k, p in base.named_parameters()}
    return Run(out.detach(), xx.grad, grads, m)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def grad_error(a: Run, b: Run) -> float:
    """‖g_a − g_b‖ / ‖g_b‖ over all parameter grads and the input grad."""
    keys = sorted(k for k, g in b.grads.items() if g is not None)
    ga = torch.cat([a.grads[k].flatten() for k in keys] + [a.input_grad.flatten()])  # type: ignore[union-attr]
    gb = torch.cat([b.grads[k].flatten() for k in keys] + [b.input_grad.flatten()])  # type: ignore[union-attr]
    return rel(ga, gb)


def max_param_error(a: Run, b: Run) -> float:
    """Largest relative error over the parameter tensors and the input gradient.

    Tensors whose true gradient is negligible (a bias whose gradient cancels over the batch,
    leaving rounding noise) are measured against a floor: 1e-6 of the whole gradient's norm in
    float64, 1e-3 in float32.
    """
    pairs = [(a.grads[k], g) for k, g in b.grads.items() if g is not None]
    pairs.append((a.input_grad, b.input_grad))
    floor = (1e-6 if b.out.dtype == torch.float64 else 1e-3) * float(
        torch.cat([g.flatten() for _, g in pairs]).norm()
    )  # type: ignore[union-attr]
    return max(float((x - y).norm()) / max(float(y.norm()), floor) for x, y in pairs)  # type: ignore[operator,union-attr]
