"""``start`` blocks in one-step integrators (the first layer is its own step), and the leapfrog
network written with one in summed form, whose float32 forward keeps float64 accuracy where the
two-step form loses it."""

from __future__ import annotations

import pytest
import torch

import odedsl

from .helpers import fields, rel_error, stdlib, steps, unwind, user_integrator

# Störmer–Verlet in velocity form, from rest: a half kick on the first layer.
KICK = user_integrator("""
integrator kick(x, v = 0) {
    start {
        v += h / 2 * f(x, t)
        x += h * v
    }
    v += h * f(x, t)
    x += h * v
}""")

B, W = 5, 3


def test_the_start_block_is_the_first_layer_only() -> None:
    program = KICK.program()
    assert program.first is not None and KICK.classify().kind == "exact"
    fs = fields(["f"], W, seed=3)
    x0 = torch.randn(B, W, dtype=torch.float64)
    n, h = 9, 1 / 9
    got = program.output(steps(program, x0, fs, h, n)[-1])
    x, v = x0, torch.zeros_like(x0)
    for k in range(n):
        v = v + (h / 2 if k == 0 else h) * fs["f"](x, k * h)
        x = x + h * v
    torch.testing.assert_close(got, x, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("integrator", ["kick", "leapfrog"])
def test_the_derived_inverse_undoes_the_start_step_too(integrator: str) -> None:
    integ = KICK if integrator == "kick" else stdlib("leapfrog")
    program = integ.program()
    fs = fields(["f"], W, seed=4)
    x0 = torch.randn(B, W, dtype=torch.float64)
    n, h = 7, 0.3
    final = steps(program, x0, fs, h, n)[-1]
    back = unwind(program, final, fs, h, n)
    for a, b in zip(back, program.init_state(x0), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_equations_show_the_start_block_and_its_inverse_last() -> None:
    fwd, inv = KICK.equations()
    assert fwd[:2] == ["start: v ← v + h/2·f(x, t)", "start: x ← x + h·v"]
    assert inv[-2:] == ["start: x ← x - h·v", "start: v ← v - h/2·f(x, t)"]


SPEC = """\
integrator kick(x, v = 0) {{
    start {{ v += h / 2 * f(x, t)   x += h * v }}
    v += h * f(x, t)
    x += h * v
}}
network net(depth: int = 10) {{
    input vector[6]
    stage body = ode(depth) {{
        integrator {integrator}
        weights {weights}
        residual {{ linear(12) tanh linear(6) }}
    }}
    head {{ linear(3) }}
}}
"""


def _grads(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    (model(x) ** 2).sum().backward()
    return [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]


@pytest.mark.parametrize("integrator", ["kick", "leapfrog"])
@pytest.mark.parametrize("weights", ["tied", "untied"])
def test_a_stage_with_a_start_block_inverts_exactly(integrator: str, weights: str) -> None:
    torch.manual_seed(0)
    text = SPEC.format(integrator=integrator, weights=weights)
    store = odedsl.compile(text, dtype=torch.float64)
    invert = odedsl.compile(text, dtype=torch.float64, backward="invert")
    invert.load_state_dict(store.state_dict())
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(invert(x), store(x), rtol=1e-13, atol=1e-13)
    for a, b in zip(_grads(invert, x), _grads(store, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# the paper's two-step form of the leapfrog network, as a user would write it
LEAPFROG_TWO_STEP = """\
integrator leapfrog_two_step(x) two_step {
    start { next = x - h^2 / 2 * f(x, t) }
    next = 2 * x - prev - h^2 * f(x, t)
}
"""

DEEP = """\
{decl}
network net(depth: int = 1024) {{
    input vector[16]
    stage body = ode(depth) {{
        integrator {integrator}
        weights tied
        residual {{ linear(32) tanh linear(16) }}
    }}
}}
"""


def test_leapfrog_float32_keeps_the_accuracy_the_two_step_form_loses() -> None:
    """Same network, same weights, N = 1024: the stage output in float32 against float64.
    The library's summed form stays near float32 rounding; the paper's two-step form, written
    as a user integrator, is over 100× further off (its rounding grows linearly in depth)."""
    torch.manual_seed(1)
    x = torch.randn(64, 16, dtype=torch.float64) * 4
    errors = {}
    for integrator in ("leapfrog", "leapfrog_two_step"):
        text = DEEP.format(decl=LEAPFROG_TWO_STEP, integrator=integrator)
        exact = odedsl.compile(text, dtype=torch.float64)
        if integrator == "leapfrog":
            state = exact.state_dict()
        exact.load_state_dict(state)
        single = odedsl.compile(text, dtype=torch.float32)
        single.load_state_dict(state)
        with torch.no_grad():
            errors[integrator] = rel_error((single(x.float()).double(),), (exact(x),))
    assert errors["leapfrog"] < 1e-5, errors
    assert errors["leapfrog_two_step"] > 100 * errors["leapfrog"], errors


WARN_SPEC = """\
{decl}
network net(depth: int = 8) {{
    input vector[4]
    stage body = ode(depth) {{
        integrator {name}
        backward {backward}
        residual {{ linear(4) tanh }}
    }}
}}
"""


@pytest.mark.parametrize(
    ("name", "decl", "root"),
    [
        ("leapfrog_two_step", LEAPFROG_TWO_STEP, 1),
        (
            "alternating",
            "integrator alternating(x) two_step {\n  start { next = x }\n"
            "  next = -2 * x - prev + h * f(x, t)\n}",
            -1,
        ),
        ("leapfrog", "", None),  # the standard one, summed form
        ("midpoint", "", None),  # roots ±1, simple: bounded rounding
        (
            "damped",
            "integrator damped(x) two_step {\n  start { next = x }\n"
            "  next = 1.5 * x - 0.5 * prev + h * f(x, t)\n}",
            None,
        ),
    ],
)
@pytest.mark.parametrize("backward", ["store", "invert"])
def test_a_two_step_recursion_with_a_double_root_warns_in_every_mode(
    name: str, decl: str, root: int | None, backward: str
) -> None:
    """W301 at the stage's integrator clause: the forward itself grows rounding linearly."""
    spec = odedsl.load_spec(WARN_SPEC.format(decl=decl, name=name, backward=backward))
    found = [w for w in spec.warnings if w.code == "W301"]
    if root is None:
        assert not found
        return
    (warning,) = found
    assert f"double root at {root}" in warning.message and "summed form" in (warning.hint or "")
    assert warning.span is not None and warning.span.line == decl.count("\n") + 5


def test_a_factor_below_one_in_the_start_block_is_exact() -> None:
    """The start block runs once, so its factor 1/2 doubles rounding once: the kind is exact
    (it was reported exact-unstable, "×2/layer", with no W300 to match; red-team pass,
    2026-12-02). In the body the same factor is exact-unstable."""
    once = user_integrator(
        "integrator w(x, v = 0) {\n    start { v = 0.5 * v + h * f(x, t)  x += v }\n"
        "    v += h * f(x, t)\n    x += h * v\n}"
    )
    assert once.classify().kind == "exact" and once.classify().warnings == ()
    every = user_integrator(
        "integrator w(x, v = 0) {\n    v = 0.5 * v + h * f(x, t)\n    x += v\n}"
    )
    assert every.classify().kind == "exact-unstable"
