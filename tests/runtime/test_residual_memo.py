"""Approximate invert reuses the recomputation's residual values in the next reconstruction.

The reference is a hand-written adjoint of seed 000 (eq. 6 reconstruction, eq. 7 VJPs at the
reconstructed states; eq. 9 for HeunNet) that evaluates every residual afresh; the counts pin
that the reuse happens exactly where the weights match, and never in stochastic stages.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from odedsl.runtime import WeightSchedule
from odedsl.runtime.calls import ResidualMemo

from .programs import MLP
from .util import make_stage


class Counted(MLP):
    """An MLP that counts its evaluations (class-wide, reset by the test)."""

    calls = 0

    def forward(self, x: Tensor) -> Tensor:
        Counted.calls += 1
        return super().forward(x)


def _euler_steps(fs: nn.ModuleList, h: float, tied: bool) -> tuple[Callable, Callable]:
    def f(n: int) -> nn.Module:
        return fs[0] if tied else fs[n]

    def step(n: int, x: Tensor) -> Tensor:
        return x + h * f(n)(x)

    def inverse(n: int, x: Tensor) -> Tensor:  # eq. 6: θ_n at the layer's output
        return x - h * f(n)(x)

    return step, inverse


def _heun_steps(fs: nn.ModuleList, h: float, tied: bool) -> tuple[Callable, Callable]:
    def f(i: int) -> nn.Module:
        return fs[0] if tied else fs[i]

    def step(n: int, x: Tensor) -> Tensor:  # eq. 8, θ_n then θ_{n+1}
        k1 = f(n)(x)
        return x + h / 2 * (k1 + f(n + 1)(x + h * k1))

    def inverse(n: int, x: Tensor) -> Tensor:  # eq. 9: the same step with -h from t + h
        k1 = f(n + 1)(x)
        return x - h / 2 * (k1 + f(n)(x - h * k1))

    return step, inverse


def _hand_written_adjoint(stage, x: Tensor, weight: Tensor, steps) -> list[Tensor]:
    """Input and parameter gradients of sum(weight * stage(x)) by eq. 6-7, one layer at a
    time, every residual evaluated afresh."""
    step, inverse = steps
    params = list(stage.parameters())
    with torch.no_grad():
        state = x
        for n in range(stage.depth):
            state = step(n, state)
    g = weight
    acc = [torch.zeros_like(p) for p in params]
    for n in reversed(range(stage.depth)):
        with torch.no_grad():
            state = inverse(n, state)
        leaf = state.detach().requires_grad_()
        with torch.enable_grad():
            out = step(n, leaf)
        got = torch.autograd.grad(out, [leaf, *params], g, allow_unused=True)
        g = got[0]
        acc = [a if d is None else a + d for a, d in zip(acc, got[1:], strict=True)]
        state = leaf.detach()
    return [g, *acc]


CASES = {
    "euler-tied": ("euler", "tied", _euler_steps),
    "euler-untied": ("euler", "untied", _euler_steps),
    "heun-tied": ("heun", "tied", _heun_steps),
    "heun-untied": ("heun", "untied", _heun_steps),
}
# residual evaluations in one invert backward at depth N: N or 2N recomputed, plus the
# inverse's, less one per layer but the first when the weights match
BACKWARD_CALLS = {
    "euler-tied": lambda n: n + 1,
    "euler-untied": lambda n: 2 * n,
    "heun-tied": lambda n: 2 * n + n + 1,
    "heun-untied": lambda n: 2 * n + n + 1,
}


@pytest.mark.parametrize("case", list(CASES))
def test_reuse_matches_the_hand_written_adjoint(case):
    program, weights, steps_of = CASES[case]
    depth = 12
    torch.manual_seed(1)
    stage = make_stage(
        program, depth, schedule=WeightSchedule(weights), backward="invert", residual=Counted
    )
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 8, dtype=torch.float64)
    out = stage(x)
    Counted.calls = 0
    (out * weight).sum().backward()
    assert Counted.calls == BACKWARD_CALLS[case](depth)
    got = [x.grad, *(p.grad for p in stage.parameters())]
    want = _hand_written_adjoint(
        stage, x.detach(), weight, steps_of(stage.f, stage.h, weights == "tied")
    )
    for a, b in zip(got, want, strict=True):
        assert float((a - b).norm()) <= 1e-12 * max(float(b.norm()), 1e-300)


def test_stochastic_stage_never_reuses():
    """Each layer replays its own random stream: no value may be shared between layers."""
    torch.manual_seed(0)
    stage = make_stage(
        "euler",
        8,
        schedule=WeightSchedule("tied"),
        backward="invert",
        residual=lambda w: Counted(w, dropout=0.5, bn=False),
        stochastic=True,
    )
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    out = stage(x)
    Counted.calls = 0
    out.sum().backward()
    assert Counted.calls == 2 * 8


def test_memo_matches_only_the_same_unchanged_tensor():
    memo = ResidualMemo()
    x = torch.randn(3, 4)
    blend = ((0, 1.0),)
    key = memo.key("f", blend, x)
    memo.keep(key, x, x * 2)
    memo.advance()
    assert memo.take(memo.key("f", blend, x.detach())) is not None  # same storage and version
    assert memo.take(memo.key("g", blend, x)) is None  # another residual
    assert memo.take(memo.key("f", ((1, 1.0),), x)) is None  # another slot
    assert memo.take(memo.key("f", blend, x.clone())) is None  # equal values, other storage
    assert memo.take(memo.key("f", blend, x[1:])) is None  # a view at another offset
    x.add_(1.0)  # in place: the version counter moves
    assert memo.take(memo.key("f", blend, x)) is None
    memo.advance()  # only the last recomputation's values are offered
    assert memo.offered == {}


def test_memo_keeps_states_not_intermediates():
    """Heun's ``x + h k1`` is evaluated once per layer and never again: not kept."""
    memo = ResidualMemo()
    leaf = torch.randn(3, 4, requires_grad=True)
    inner = leaf * 2
    memo.keep(memo.key("f", ((0, 1.0),), inner), inner, inner)
    memo.keep(memo.key("f", ((0, 1.0),), leaf), leaf, leaf)
    assert len(memo.fresh) == 1
