"""Shared fixtures for the integrator-algebra tests: residual functions, calls, stage loops.

Everything here is written directly in PyTorch and never uses the algebra's output, so the
tests compare the emitted graphs against independent references.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from odedsl.diagnostics import Diagnostics, DslError
from odedsl.integrators import Integrator, analyse, standard_library
from odedsl.runtime.program import IntegratorProgram, State
from odedsl.syntax.parse import parse


class Layer(nn.Module):
    """A small residual function: tanh(W x + b), W scaled to keep it Lipschitz ~1."""

    def __init__(self, width: int, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        scale = 1.0 / math.sqrt(width)
        self.w = nn.Parameter(torch.randn(width, width, generator=gen, dtype=dtype) * scale)
        self.b = nn.Parameter(torch.randn(width, generator=gen, dtype=dtype) * 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.w.T + self.b)


class Table:
    """``call(name, x, c)`` backed by a dict of modules indexed by (name, offset); counts calls."""

    def __init__(
        self,
        names: Iterable[str],
        offsets: Iterable[float],
        width: int,
        seed: int,
        dtype: torch.dtype = torch.float64,
    ):
        gen = torch.Generator().manual_seed(seed)
        offs = sorted({float(c) for c in offsets} | {1.0 - float(c) for c in offsets})
        self.modules = {(n, c): Layer(width, gen, dtype) for n in names for c in offs}
        self.count = 0

    def __call__(self, name: str, x: Tensor, c: float) -> Tensor:
        self.count += 1
        return self.modules[(name, float(c))](x)

    def __getitem__(self, key: tuple[str, float]) -> nn.Module:
        return self.modules[key]


class Field(nn.Module):
    """A residual function smooth in time: tanh((W0 + s W1) x + b0 + s b1)."""

    def __init__(self, width: int, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        scale = 1.0 / math.sqrt(width)
        self.w0 = torch.randn(width, width, generator=gen, dtype=dtype) * scale
        self.w1 = torch.randn(width, width, generator=gen, dtype=dtype) * scale
        self.b0 = torch.randn(width, generator=gen, dtype=dtype) * 0.5
        self.b1 = torch.randn(width, generator=gen, dtype=dtype) * 0.5

    def forward(self, x: Tensor, s: float) -> Tensor:
        return torch.tanh(x @ (self.w0 + s * self.w1).T + self.b0 + s * self.b1)


def fields(names: Iterable[str], width: int, seed: int, dtype=torch.float64) -> dict[str, Field]:
    gen = torch.Generator().manual_seed(seed)
    return {n: Field(width, gen, dtype) for n in names}


def smooth_call(fs: dict[str, Field], t: float, h: float):
    """The call a runtime would build for the layer at time t: offset c → time t + c h."""
    return lambda name, x, c: fs[name](x, t + c * h)


def stdlib(name: str) -> Integrator:
    return standard_library()[name]


def user_integrator(text: str) -> Integrator:
    """Parse and check one integrator declaration written in the language."""
    module = parse(text, "<test>")
    diags = Diagnostics()
    (decl,) = module.integrators
    integrator = analyse(decl, diags)
    if integrator is None:
        raise DslError(diags.items)
    return integrator


def chunk_width(integrator: Integrator, width: int) -> int:
    return width // len(integrator.state) if integrator.split_channels else width


def rel_error(a: State, b: State) -> float:
    num = max(float((x - y).detach().abs().max()) for x, y in zip(a, b, strict=True))
    den = max(float(y.detach().abs().max()) for y in b)
    return num / max(den, 1e-300)


def steps(
    program: IntegratorProgram, x: Tensor, fs: dict[str, Field], h: float, n: int, t0: float = 0.0
) -> list[State]:
    """The states of a stage of ``n`` layers run with the program (first step, then loop)."""
    state = program.init_state(x)
    out = [state]
    for k in range(n):
        t = t0 + k * h
        step = program.first if (k == 0 and program.first is not None) else program.step
        state = step.forward(state, smooth_call(fs, t, h), h, t)
        out.append(state)
    return out


def unwind(
    program: IntegratorProgram,
    state: State,
    fs: dict[str, Field],
    h: float,
    n: int,
    t0: float = 0.0,
) -> State:
    """Reconstruct the stage's initial state from its final one with the derived inverses."""
    for k in reversed(range(n)):
        t = t0 + k * h
        step = program.first if (k == 0 and program.first is not None) else program.step
        assert step.inverse is not None
        state = step.inverse(state, smooth_call(fs, t, h), h, t)
    return state


def slope(xs: Iterable[float], ys: Iterable[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    cov = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return cov / sum((a - mx) ** 2 for a in lx)
