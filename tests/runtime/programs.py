"""Hand-written integrator programs and residual modules shared by the runtime tests.

Written directly against the contract in ``odedsl.runtime.program`` (not produced by the
integrator algebra), so runtime tests do not depend on the rest of the package.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from odedsl.runtime.program import AffineUpdate, IntegratorProgram, State, Step, SwapUpdate


def _identity_state(x: Tensor) -> State:
    return (x,)


def _first(state: State) -> Tensor:
    return state[0]


def euler() -> IntegratorProgram:
    """x += h f(x, t); inverse: reverse Euler x_n = x_{n+1} - h f(x_{n+1}, θ_n) (eq. 6)."""

    def forward(s: State, call, h: float, t: float) -> State:
        return (s[0] + h * call("f", s[0], 0.0),)

    def inverse(s: State, call, h: float, t: float) -> State:
        return (s[0] - h * call("f", s[0], 1.0),)

    step = Step(forward, inverse, "approximate")
    return IntegratorProgram("euler", ("x",), ("f",), (0.0,), _identity_state, _first, step)


def heun() -> IntegratorProgram:
    """HeunNet (eq. 8); inverse: the reverse Heun scheme, offsets reflected (eq. 9)."""

    def forward(s: State, call, h: float, t: float) -> State:
        x = s[0]
        k1 = call("f", x, 0.0)
        k2 = call("f", x + h * k1, 1.0)
        return (x + h / 2 * (k1 + k2),)

    def inverse(s: State, call, h: float, t: float) -> State:
        x = s[0]
        k1 = call("f", x, 1.0)
        y = x - h * k1
        return (x - h / 2 * (k1 + call("f", y, 0.0)),)

    step = Step(forward, inverse, "approximate")
    return IntegratorProgram("heun", ("x",), ("f",), (0.0, 1.0), _identity_state, _first, step)


def hamiltonian() -> IntegratorProgram:
    """y += h f(z, t); z -= h g(y, t), state split by channels (dim 1)."""

    def forward(s: State, call, h: float, t: float) -> State:
        y = s[0] + h * call("f", s[1], 0.0)
        return (y, s[1] - h * call("g", y, 0.0))

    def inverse(s: State, call, h: float, t: float) -> State:
        z = s[1] + h * call("g", s[0], 0.0)
        return (s[0] - h * call("f", z, 0.0), z)

    updates = (
        AffineUpdate(0, 1.0, lambda s, call, h, t: h * call("f", s[1], 0.0)),
        AffineUpdate(1, 1.0, lambda s, call, h, t: -h * call("g", s[0], 0.0)),
    )
    step = Step(forward, inverse, "exact", updates)

    def init(x: Tensor) -> State:
        y, z = x.chunk(2, dim=1)
        return (y, z)

    def output(s: State) -> Tensor:
        return torch.cat(s, dim=1)

    return IntegratorProgram("hamiltonian", ("y", "z"), ("f", "g"), (0.0,), init, output, step)


def momentum(gamma: float = 0.9) -> IntegratorProgram:
    """v = γ v + (1 − γ) f(x); x += h v (MomentumNet with step h). Exact-unstable for γ < 1."""

    def forward(s: State, call, h: float, t: float) -> State:
        v = gamma * s[1] + (1 - gamma) * call("f", s[0], 0.0)
        return (s[0] + h * v, v)

    def inverse(s: State, call, h: float, t: float) -> State:
        x = s[0] - h * s[1]
        return (x, (s[1] - (1 - gamma) * call("f", x, 0.0)) / gamma)

    updates = (
        AffineUpdate(1, gamma, lambda s, call, h, t: (1 - gamma) * call("f", s[0], 0.0)),
        AffineUpdate(0, 1.0, lambda s, call, h, t: h * s[1]),
    )
    kind = "exact-unstable" if gamma < 1 else "exact"
    step = Step(forward, inverse, kind, updates)

    def init(x: Tensor) -> State:
        return (x, torch.zeros_like(x))

    return IntegratorProgram("momentum", ("x", "v"), ("f",), (0.0,), init, _first, step)


def midpoint() -> IntegratorProgram:
    """Two-step (leapfrog) midpoint on (prev, x): x1 = x0 + h f(x0), then
    next = prev + 2h f(x); written as an update of prev followed by a swap."""

    def first_fwd(s: State, call, h: float, t: float) -> State:
        return (s[1], s[1] + h * call("f", s[1], 0.0))

    def first_inv(s: State, call, h: float, t: float) -> State:
        return (s[0], s[0])

    def forward(s: State, call, h: float, t: float) -> State:
        return (s[1], s[0] + 2 * h * call("f", s[1], 0.0))

    def inverse(s: State, call, h: float, t: float) -> State:
        return (s[1] - 2 * h * call("f", s[0], 0.0), s[0])

    updates = (
        AffineUpdate(0, 1.0, lambda s, call, h, t: 2 * h * call("f", s[1], 0.0)),
        SwapUpdate(0, 1),
    )
    step = Step(forward, inverse, "exact", updates)
    first = Step(first_fwd, first_inv, "exact")

    def init(x: Tensor) -> State:
        return (x, x)

    def output(s: State) -> Tensor:
        return s[1]

    return IntegratorProgram(
        "midpoint", ("prev", "x"), ("f",), (0.0,), init, output, step, first=first
    )


PROGRAMS = {
    "euler": euler,
    "heun": heun,
    "hamiltonian": hamiltonian,
    "momentum": momentum,
    "midpoint": midpoint,
}
EXACT = ("hamiltonian", "momentum", "midpoint")


class MLP(nn.Module):
    """A small residual: Linear → BatchNorm → tanh → Linear (optional dropout)."""

    def __init__(self, width: int, hidden: int = 16, dropout: float = 0.0, bn: bool = True):
        super().__init__()
        self.lin1 = nn.Linear(width, hidden, bias=not bn)  # a bias before BN has no gradient
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lin2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.drop(torch.tanh(self.bn(self.lin1(x)))))


class ConvBlock(nn.Module):
    """A small convolutional residual: BN → ReLU → 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.relu(self.bn(x)))


def state_width(program: str, width: int) -> int:
    """Features each residual sees: half the input for the channel-split Hamiltonian."""
    return width // 2 if program == "hamiltonian" else width
