"""Every mode's forward equals a hand-written PyTorch loop of the equations; state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from odedsl.runtime import OdeStage, WeightSchedule

from .programs import PROGRAMS
from .util import MODES, make_stage, run


def reference(program: str, stage: OdeStage, x: Tensor, tied: bool, gamma: float = 0.9) -> Tensor:
    """The integrators written out by hand, indexing residual copies directly."""
    n_layers, h = stage.depth, stage.h

    def f(name: str, n: int) -> nn.Module:
        return stage.get_submodule(name)[0 if tied else n]  # type: ignore[index]

    if program == "euler":
        for n in range(n_layers):
            x = x + h * f("f", n)(x)
        return x
    if program == "heun":  # HeunNet: corrector with θ_{n+1}
        for n in range(n_layers):
            k1 = f("f", n)(x)
            k2 = f("f", n + 1)(x + h * k1)
            x = x + h / 2 * (k1 + k2)
        return x
    if program == "hamiltonian":
        y, z = x.chunk(2, dim=1)
        for n in range(n_layers):
            y = y + h * f("f", n)(z)
            z = z - h * f("g", n)(y)
        return torch.cat([y, z], dim=1)
    if program == "momentum":
        v = torch.zeros_like(x)
        for n in range(n_layers):
            v = gamma * v + (1 - gamma) * f("f", n)(x)
            x = x + h * v
        return x
    assert program == "midpoint"
    prev, x = x, x + h * f("f", 0)(x)
    for n in range(1, n_layers):
        prev, x = x, prev + 2 * h * f("f", n)(x)
    return x


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_forward_matches_hand_written_loop(program, mode, tied):
    torch.manual_seed(1)
    schedule = WeightSchedule("tied" if tied else "untied")
    stage = make_stage(program, 7, schedule=schedule, backward=mode)
    x = torch.randn(10, 8, dtype=torch.float64)
    expected = reference(program, copy.deepcopy(stage), x, tied)
    got = run(stage, x).out  # with grad: the mode's own forward path
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    with torch.no_grad():
        torch.testing.assert_close(stage(x), expected, rtol=1e-13, atol=1e-13)


def test_step_and_t0_are_used():
    seen: list[float] = []
    prog = PROGRAMS["euler"]()
    step = prog.step

    def forward(s, call, h, t):
        seen.append(t)
        return step.forward(s, call, h, t)

    from dataclasses import replace

    prog = replace(prog, step=replace(step, forward=forward))
    stage = OdeStage("s", prog, {"f": lambda: nn.Linear(2, 2)}, 3, step=0.5, t0=1.0)
    x = torch.randn(4, 2)
    mod = stage.f[0]
    expected = x
    for _ in range(3):
        expected = expected + 0.5 * mod(expected)
    torch.testing.assert_close(stage(x), expected)
    assert seen == [1.0, 1.5, 2.0]


def test_state_dict_keys_and_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("body", make_stage("hamiltonian", 4, backward="invert"))
    keys = list(net.state_dict())
    assert "body.f.3.lin1.weight" in keys and "body.g.0.bn.running_mean" in keys
    assert not any(k.startswith("body.f.4") for k in keys)
    x = torch.randn(6, 8, dtype=torch.float64)
    run(net, x, copy_module=False)  # train a step's worth of statistics
    other = nn.Sequential()
    other.add_module("body", make_stage("hamiltonian", 4, backward="store"))
    other.load_state_dict(net.state_dict())
    net.eval(), other.eval()
    torch.testing.assert_close(net(x), other(x), rtol=0, atol=0)


def test_kind_and_repr():
    stage = make_stage("momentum", 4, backward=("checkpoint", 2))
    assert stage.kind == "exact-unstable"
    assert "checkpoint(2)" in repr(stage) and "momentum" in repr(stage)
    assert make_stage("heun", 2).kind == "approximate"


def test_configuration_errors():
    prog = PROGRAMS["euler"]()
    with pytest.raises(ValueError, match="factories"):
        OdeStage("s", prog, {"g": nn.Identity}, 2)
    with pytest.raises(ValueError, match="depth"):
        OdeStage("s", prog, {"f": nn.Identity}, 0)
    with pytest.raises(ValueError, match="unknown backward mode"):
        OdeStage("s", prog, {"f": nn.Identity}, 2, backward="adjoint")
    with pytest.raises(ValueError, match="must be a positive integer, got 0"):
        OdeStage("s", prog, {"f": nn.Identity}, 2, backward=("checkpoint", 0))
    from dataclasses import replace

    none = replace(prog, step=replace(prog.step, inverse=None, kind="none"))
    with pytest.raises(ValueError, match="no inverse"):
        OdeStage("s", none, {"f": nn.Identity}, 2, backward="invert")
