"""Derived inverses, as properties: exact schemes undo a step to rounding, approximate ones
converge at the order the theory predicts, exact-unstable ones amplify rounding like γ^-N.

Orders of the reverse-time scheme (Φ⁻ ∘ Φ - id) for a method of order p, weights smooth in
time: one step O(h^(p+1)) for odd p, O(h^(p+2)) for even p (the h^(p+1) error terms of the
forward and the reversed step cancel); over a stage of N = 1/h layers one order less. Euler:
2 and 1; Heun: 4 and 3; RK4: 6 and 5.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odedsl.integrators import Integrator
from odedsl.runtime.program import AffineUpdate, State, Step

from .helpers import (
    Table,
    chunk_width,
    fields,
    rel_error,
    slope,
    smooth_call,
    stdlib,
    steps,
    unwind,
    user_integrator,
)

# A user-written exact scheme with three state variables, a parameter and an affine update.
TRIPLE = user_integrator("""
integrator triple(a, b, c; beta: float = 2) split channels {
    k = f(b, t)
    a += h * k
    c = beta * c + h * q(a, t) - sqrt(h) * k
    b -= h * g(a + c, t + h / 2)
}""")

# A user-written approximate scheme: Ralston's second-order Runge–Kutta method.
RALSTON = user_integrator("""
integrator ralston(x) {
    k1 = f(x, t)
    k2 = f(x + 2 / 3 * h * k1, t + 2 * h / 3)
    x += h * (k1 / 4 + 3 / 4 * k2)
}""")

EXACT = ["hamiltonian", "midpoint", "leapfrog", "momentum", "additive_coupling", "reversible_heun"]


def integrator(name: str) -> Integrator:
    return TRIPLE if name == "triple" else RALSTON if name == "ralston" else stdlib(name)


def random_state(integ: Integrator, batch: int, width: int, seed: int, dtype) -> State:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, width, generator=gen, dtype=dtype) for _ in integ.state)


def test_user_triple_is_classified_exact() -> None:
    cls = TRIPLE.classify()
    assert cls.kind == "exact" and cls.warnings == ()
    assert TRIPLE.residuals == ("f", "q", "g") and TRIPLE.offsets == (0.0, 0.5)
    assert TRIPLE.classify({"beta": 0.5}).kind == "exact-unstable"
    assert RALSTON.classify().kind == "approximate"


@pytest.mark.parametrize("name", [*EXACT, "triple"])
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    h=st.floats(0.01, 1.0),
    t=st.floats(-1.0, 1.0),
    batch=st.integers(1, 3),
    width=st.integers(1, 6),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_exact_inverse_undoes_the_step(name, seed, h, t, batch, width, dtype) -> None:
    integ = integrator(name)
    program = integ.program()
    table = Table(integ.residuals, integ.offsets, width, seed, dtype)
    bound = 1e-12 if dtype == torch.float64 else 4e-6  # measured: 4e-16, 2.2e-7
    for step in [program.step] + ([program.first] if program.first else []):
        state = random_state(integ, batch, width, seed + 1, dtype)
        if step is program.first:
            state = (torch.zeros_like(state[0]), state[1])  # the first layer starts at rest
        assert step.kind in ("exact", "exact-unstable") and step.inverse is not None
        new = step.forward(state, table, h, t)
        assert rel_error(step.inverse(new, table, h, t), state) <= bound
        assert_updates_agree(step, state, new, table, h, t, bound)


def assert_updates_agree(step: Step, state: State, new: State, call, h, t, bound) -> None:
    """The update list the runtime fuses is the same step, bit for bit, and undoes it."""
    assert step.updates is not None
    s = list(state)
    for u in step.updates:
        if isinstance(u, AffineUpdate):
            s[u.target] = u.factor * s[u.target] + u.increment(tuple(s), call, h, t)
        else:
            s[u.a], s[u.b] = s[u.b], s[u.a]
    for a, b in zip(s, new, strict=True):
        assert torch.equal(a, b)
    for u in reversed(step.updates):
        if isinstance(u, AffineUpdate):
            s[u.target] = (s[u.target] - u.increment(tuple(s), call, h, t)) / u.factor
        else:
            s[u.a], s[u.b] = s[u.b], s[u.a]
    assert rel_error(tuple(s), state) <= bound


ORDERS = {"euler": (2, 1), "heun": (4, 3), "rk4": (6, 5), "ralston": (4, 3)}


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_approximate_inverse_converges_at_the_predicted_order(name: str) -> None:
    integ = integrator(name)
    program = integ.program()
    one_step, stage = ORDERS[name]
    fs = fields(integ.residuals, 6, seed=7)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    hs = [0.2, 0.1, 0.05, 0.025]
    errors = []
    for h in hs:
        call = smooth_call(fs, 0.3, h)
        new = program.step.forward((x,), call, h, 0.3)
        assert program.step.inverse is not None
        errors.append(rel_error(program.step.inverse(new, call, h, 0.3), (x,)))
    assert slope(hs, errors) == pytest.approx(one_step, abs=0.3)
    depths = [8, 16, 32, 64]
    errors = []
    for n in depths:
        final = steps(program, x, fs, 1 / n, n)[-1]
        errors.append(rel_error(unwind(program, final, fs, 1 / n, n), (x,)))
    assert slope([1 / n for n in depths], errors) == pytest.approx(stage, abs=0.3)


def inversion_errors(integ: Integrator, gamma: float, depths: list[int]) -> list[float]:
    program = integ.program({"gamma": gamma})
    fs = fields(["f"], 8, seed=0)
    x = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = []
    for n in depths:
        states = steps(program, x, fs, 1 / n, n)
        out.append(rel_error(unwind(program, states[-1], fs, 1 / n, n), states[0]))
    return out


def test_momentum_inversion_error_grows_like_gamma_to_the_minus_n() -> None:
    """Measured float64 inversion error of momentum (γ = 0.9) at depth 16/64/256:
    7.3e-15, 4.9e-11, 7.8e-2, i.e. ×1.13 per layer against the predicted 1/γ = 1.11."""
    depths = [16, 64, 256]
    errors = inversion_errors(stdlib("momentum"), 0.9, depths)
    rate = (math.log(errors[-1]) - math.log(errors[0])) / (depths[-1] - depths[0])
    assert 0.7 * math.log(1 / 0.9) < rate < 1.5 * math.log(1 / 0.9)
    assert errors[0] < 1e-12 and errors[-1] > 1e-4
    cls = stdlib("momentum").classify(depth=64)
    assert cls.kind == "exact-unstable" and cls.growth == pytest.approx(1 / 0.9)
    (warning,) = cls.diagnostics
    assert warning.code == "W300" and warning.severity == "warning"
    assert "(1/0.9)^64 ≈ 848" in warning.message and "(1/0.9)^64" in cls.warnings[0]
    assert stdlib("momentum").classify({"gamma": 1.0}).kind == "exact"


def test_heavy_ball_growth_matches_one_over_gamma_and_gamma_one_is_stable() -> None:
    """With the residual scaled by h the growth is 1/γ per layer (fitted: 0.096-0.103 vs 0.105
    in log), and γ = 1 keeps the error at rounding level at any depth."""
    hb = user_integrator(
        "integrator hb(x, v = 0; gamma: float = 0.9) { v = gamma * v + h * f(x, t)  x += h * v }"
    )
    depths = [16, 64, 128]
    errors = inversion_errors(hb, 0.9, depths)
    rate = (math.log(errors[-1]) - math.log(errors[0])) / (depths[-1] - depths[0])
    assert rate == pytest.approx(math.log(1 / 0.9), rel=0.15)
    assert max(inversion_errors(hb, 1.0, [256])) < 1e-13


def test_programs_are_cached_per_parameter_values() -> None:
    mom = stdlib("momentum")
    assert mom.program() is mom.program({"gamma": 0.9})
    assert mom.program({"gamma": 0.5}) is not mom.program()
    w = chunk_width(mom, 4)
    assert w == 4
