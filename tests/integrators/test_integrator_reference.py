"""Every standard integrator's emitted step against a hand-written PyTorch version of the
paper's equation; the approximate inverses against Sander et al. (2022) eqs. 6 and 9; CSE."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import Tensor

from odedsl.integrators import standard_library
from odedsl.runtime.program import State

from .helpers import Table, chunk_width, fields, stdlib, steps

W, B = 5, 3  # width of one state variable, batch


def state_for(name: str, seed: int = 0) -> State:
    gen = torch.Generator().manual_seed(seed)
    n = len(stdlib(name).state)
    return tuple(torch.randn(B, W, generator=gen, dtype=torch.float64) for _ in range(n))


# The equations, written out by hand (T[name, c] is the residual at time t + c h).
def euler(T: Table, h: float, x: Tensor) -> State:
    return (x + h * T["f", 0.0](x),)


def heun(T: Table, h: float, x: Tensor) -> State:  # HeunNet, seed 000 eq. 8
    y = x + h * T["f", 0.0](x)
    return (x + h / 2 * (T["f", 0.0](x) + T["f", 1.0](y)),)


def rk4(T: Table, h: float, x: Tensor) -> State:
    k1 = T["f", 0.0](x)
    k2 = T["f", 0.5](x + h / 2 * k1)
    k3 = T["f", 0.5](x + h / 2 * k2)
    k4 = T["f", 1.0](x + h * k3)
    return (x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4),)


def hamiltonian(T: Table, h: float, y: Tensor, z: Tensor) -> State:  # Chang et al. 2018
    y1 = y + h * T["f", 0.0](z)
    return (y1, z - h * T["g", 0.0](y1))


def midpoint(T: Table, h: float, prev: Tensor, x: Tensor) -> State:  # Y_{j-1} + 2h f(Y_j)
    return (x, prev + 2 * h * T["f", 0.0](x))


def leapfrog(T: Table, h: float, x: Tensor, d: Tensor) -> State:
    """Y_{j+1} = 2Y_j - Y_{j-1} - h² f(Y_j) [CMH18], on the state (Y_j, d_j = Y_j - Y_{j-1})
    the library carries (summed form, for rounding)."""
    prev = x - d
    nxt = 2 * x - prev - h**2 * T["f", 0.0](x)
    return (nxt, nxt - x)


def momentum(T: Table, h: float, x: Tensor, v: Tensor, gamma: float = 0.9) -> State:
    v1 = gamma * v + (1 - gamma) * T["f", 0.0](x)
    return (x + v1, v1)


def additive_coupling(T: Table, h: float, x1: Tensor, x2: Tensor) -> State:  # RevNet
    y1 = x1 + T["f", 0.0](x2)
    return (y1, x2 + T["g", 0.0](y1))


def reversible_heun(T: Table, h: float, y: Tensor, z: Tensor) -> State:
    # Kidger et al. (2021): z' = 2y - z + h f(z, t); y' = y + h/2 (f(z, t) + f(z', t + h)).
    z1 = 2 * y - z + h * T["f", 0.0](z)
    return (y + h / 2 * (T["f", 0.0](z) + T["f", 1.0](z1)), z1)


REFERENCES = {
    f.__name__: f
    for f in (
        euler,
        heun,
        rk4,
        hamiltonian,
        midpoint,
        leapfrog,
        momentum,
        additive_coupling,
        reversible_heun,
    )
}


def test_the_standard_library_is_complete() -> None:
    assert set(standard_library()) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("h", [0.1, 0.37])
def test_forward_step_matches_the_paper(name: str, h: float) -> None:
    integrator = stdlib(name)
    program = integrator.program()
    table = Table(integrator.residuals, integrator.offsets, W, seed=1)
    state = state_for(name)
    got = program.step.forward(state, table, h, 0.25)
    want = REFERENCES[name](table, h, *state)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(("name", "start"), [("midpoint", "euler"), ("leapfrog", "taylor")])
def test_two_step_stage_matches_a_hand_loop(name: str, start: str) -> None:
    """A stage of N layers: the stated first layer once, then the body N - 1 times."""
    integrator = stdlib(name)
    fs = fields(["f"], W, seed=2)
    x0 = torch.randn(B, W, dtype=torch.float64)
    n, h = 12, 1 / 12
    got = integrator.program().output(steps(integrator.program(), x0, fs, h, n)[-1])
    ys = [x0]
    f0 = fs["f"](x0, 0.0)
    ys.append(x0 + h * f0 if start == "euler" else x0 - h**2 / 2 * f0)
    for j in range(1, n):
        fj = fs["f"](ys[j], j * h)
        if name == "midpoint":
            ys.append(ys[j - 1] + 2 * h * fj)
        else:
            ys.append(2 * ys[j] - ys[j - 1] - h**2 * fj)
    torch.testing.assert_close(got, ys[-1], rtol=1e-13, atol=1e-14)


def test_init_state_and_output_follow_the_declaration() -> None:
    x = torch.randn(B, 2 * W, dtype=torch.float64)
    ham = stdlib("hamiltonian").program()
    y, z = ham.init_state(x)
    assert torch.equal(y, x[:, :W]) and torch.equal(z, x[:, W:])
    assert torch.equal(ham.output((y, z)), x)
    mom = stdlib("momentum").program()
    xs, v = mom.init_state(x)
    assert xs is x and torch.equal(v, torch.zeros_like(x))
    y, z = stdlib("reversible_heun").program().init_state(x)
    assert torch.equal(y, x) and torch.equal(z, x)
    mid = stdlib("midpoint").program()
    prev, cur = mid.init_state(x)
    assert torch.equal(prev, torch.zeros_like(x)) and cur is x
    assert mid.output((prev, cur)) is cur
    with pytest.raises(ValueError, match="equal channel chunks"):
        ham.init_state(torch.randn(B, 2 * W + 1))


def test_euler_inverse_is_eq_6() -> None:
    """x_n = x_{n+1} - h f(x_{n+1}, θ_n): with layer-wise weights every offset of layer n is θ_n
    (resnet_nodes' ResNetTransformMemory.backward does exactly this)."""
    table = Table(["f"], [0.0], W, seed=3)
    layer_n = lambda name, x, c: table["f", 0.0](x)  # noqa: E731
    (x1,) = state_for("euler")
    (got,) = stdlib("euler").program().step.inverse((x1,), layer_n, 0.2, 0.0)
    torch.testing.assert_close(got, x1 - 0.2 * table["f", 0.0](x1), rtol=0, atol=0)
    (got,) = stdlib("euler").program().step.inverse((x1,), table, 0.2, 0.0)
    torch.testing.assert_close(got, x1 - 0.2 * table["f", 1.0](x1), rtol=0, atol=0)


def test_heun_inverse_is_eq_9() -> None:
    """ỹ = x̃ - h f(x̃, θ_{n+1});  x̃_n = x̃ - h/2 (f(x̃, θ_{n+1}) + f(ỹ, θ_n)), as in
    resnet_nodes' ResNetTransformMemoryHeun.backward."""
    table = Table(["f"], [0.0, 1.0], W, seed=4)
    h = 0.3
    (x,) = state_for("heun")
    y = x - h * table["f", 1.0](x)
    want = x - h / 2 * (table["f", 1.0](x) + table["f", 0.0](y))
    (got,) = stdlib("heun").program().step.inverse((x,), table, h, 0.0)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("name", "forward", "inverse"),
    [
        ("heun", 2, 2),
        ("rk4", 4, 4),
        ("reversible_heun", 2, 2),
        ("hamiltonian", 2, 2),
        ("euler", 1, 1),
        ("midpoint", 1, 1),
    ],
)
def test_common_subexpressions_are_evaluated_once(name: str, forward: int, inverse: int) -> None:
    integrator = stdlib(name)
    program = integrator.program()
    table = Table(integrator.residuals, integrator.offsets, W, seed=5)
    state = state_for(name)
    new = program.step.forward(state, table, 0.1, 0.0)
    assert table.count == forward
    table.count = 0
    assert program.step.inverse is not None
    program.step.inverse(new, table, 0.1, 0.0)
    assert table.count == inverse


def test_graphs_are_lint_clean_and_readable() -> None:
    for name, integrator in standard_library().items():
        graphs = integrator.graphs()
        parts = [graphs.step] + ([graphs.first] if graphs.first else [])
        for part in parts:
            modules = [part.forward, *part.increments]
            modules += [part.inverse] if part.inverse is not None else []
            for gm in modules:
                gm.graph.lint()
                args = [n.name for n in gm.graph.nodes if n.op == "placeholder"][-3:]
                assert args == ["h", "t", "call"], name
    nodes = {n.name: n for n in stdlib("heun").graphs().step.forward.graph.nodes}
    assert nodes["x_1"].meta["span"].line == nodes["k2"].meta["span"].line + 1
    code = stdlib("heun").graphs().step.forward.code
    assert "k1 = " in code and "k2 = " in code and "x_1 = x + " in code
    calls = [
        n
        for n in stdlib("heun").graphs().step.forward.graph.nodes
        if n.op == "call_function" and n.target.__name__ == "residual"
    ]
    assert [n.args[1:2] + n.args[3:] for n in calls] == [("f", 0.0), ("f", 1.0)]


def test_equations_read_like_the_papers() -> None:
    fwd, inv = stdlib("heun").equations()
    assert fwd == ["k1 = f(x, t)", "k2 = f(x + h·k1, t + h)", "x ← x + h/2·(k1 + k2)"]
    assert inv == ["k1 = f(x, t + h)", "k2 = f(x - h·k1, t)", "x ← x - h/2·(k1 + k2)"]
    assert stdlib("euler").equations() == (["x ← x + h·f(x, t)"], ["x ← x - h·f(x, t + h)"])
    fwd, inv = stdlib("hamiltonian").equations()
    assert inv == ["z ← z + h·g(y, t)", "y ← y - h·f(z, t)"]
    fwd, inv = stdlib("momentum").equations()
    assert inv == ["x ← x - v", "v ← (v - (1 - gamma)·f(x, t))/gamma"]
    fwd, inv = stdlib("midpoint").equations()
    assert fwd[-1] == "(prev, x) ← (x, next)"
    assert inv[:2] == ["(x, next) ← (prev, x)", "prev ← next - 2·h·f(x, t)"]
    fwd, inv = stdlib("leapfrog").equations()
    assert fwd == [
        "start: d ← d - h^2/2·f(x, t)",
        "start: x ← x + d",
        "d ← d - h^2·f(x, t)",
        "x ← x + d",
    ]
    assert inv == [
        "x ← x - d",
        "d ← d + h^2·f(x, t)",
        "start: x ← x - d",
        "start: d ← d + h^2/2·f(x, t)",
    ]


@pytest.mark.parametrize("name", ["heun", "momentum", "leapfrog"])
def test_steps_survive_pickling(name: str) -> None:
    integrator = stdlib(name)
    program = integrator.program()
    table = Table(integrator.residuals, integrator.offsets, chunk_width(integrator, W), seed=6)
    state = state_for(name)
    step = pickle.loads(pickle.dumps(program.step))
    for a, b in zip(
        step.forward(state, table, 0.1, 0.0),
        program.step.forward(state, table, 0.1, 0.0),
        strict=True,
    ):
        assert torch.equal(a, b)
