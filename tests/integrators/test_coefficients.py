"""Scalar coefficients of an integrator that overflow or divide by zero are located errors,
never a crash at run time (found by the 10,000-input fuzz job)."""

from __future__ import annotations

import pytest
import torch

import odedsl

SPEC = """\
network n(g: float = 0.0) {
    input vector[2]
    stage s = ode(200) { integrator my(gamma=g) residual { linear(2) } }
}
integrator my(x; gamma: float = 1) { x += h * EXPR * f(x, t) }
"""


@pytest.mark.parametrize(
    ("expr", "code", "message"),
    [
        ("9" * 30, "E240", "number too large"),
        ("1e15^1e15", "E240", "undefined or too large"),
        ("2^2^2^2^2^2", "E240", "undefined or too large"),
        ("exp(1e14)", "E240", "undefined or too large"),
        ("0^(-1)", "E240", "undefined or too large"),
        ("1/0", "E240", "division by zero"),
        ("1/(1-1)", "E240", "division by zero"),
        ("(1/h)^1000", "E240", "fails on its coefficients with h = 0.005"),
        ("1/gamma", "E240", "fails on its coefficients"),
        ("t^(-1)", "E240", "fails on its coefficients"),
        ("(t - 0.5)^0.5", "E240", "a coefficient is not real at t = 0"),
    ],
)
def test_bad_coefficients_are_located_errors(
    expr: str, code: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(odedsl.DslError) as err:
        odedsl.load_spec(SPEC.replace("EXPR", expr))
    (d,) = [d for d in err.value.diagnostics if d.severity == "error"]
    assert d.code == code and message in d.message and d.span is not None
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("expr", ["h^1e15", "2^h^1000", "gamma", "sqrt(2)"])
def test_harmless_coefficients_run(expr: str) -> None:
    model = odedsl.compile(SPEC.replace("EXPR", expr))
    assert torch.isfinite(model(torch.randn(3, 2))).all()


def test_a_state_that_divides_itself_is_not_a_bad_coefficient() -> None:
    """``x * x / x`` was E240 "a coefficient is not finite": the dry run's state was 0."""
    text = SPEC.replace("integrator my(x; gamma: float = 1) { x += h * EXPR * f(x, t) }", "")
    weird = text + "integrator my(x; gamma: float = 1) { x += h * f(x, t) * x / x }\n"
    euler = text + "integrator my(x; gamma: float = 1) { x += h * f(x, t) }\n"
    torch.manual_seed(0)
    state = odedsl.compile(euler, dtype=torch.float64).state_dict()
    x = torch.randn(3, 2, dtype=torch.float64) + 3  # no state of 0 along the way
    outputs = []
    for source in (weird, euler):
        model = odedsl.compile(source, dtype=torch.float64)
        model.load_state_dict(state)
        outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)


NET4 = "network n() { input vector[4] stage s = ode(4) { integrator my residual { linear(4) } } }\n"


def _chain(op: str, n: int) -> str:
    body = " ".join(f"a{i} = a{i - 1} {op} a{i - 1}" for i in range(1, n))
    return f"integrator my(x) {{ a0 = x + h {body} x += h * f(a{n - 1}, t) }}\n"


@pytest.mark.parametrize(("op", "n"), [("+", 16), ("+", 40), ("*", 12)])
def test_exponential_temporary_chains_are_refused_quickly(op: str, n: int) -> None:
    import time

    net = NET4
    start = time.process_time()
    with pytest.raises(odedsl.DslError) as err:
        odedsl.load_spec(net + _chain(op, n))
    assert time.process_time() - start < 2.0
    assert err.value.diagnostics[0].code == "E250"


def test_a_coefficient_that_is_nan_at_this_h_is_refused() -> None:
    net = NET4
    with pytest.raises(odedsl.DslError) as err:
        odedsl.load_spec(net + "integrator my(x) { x += h * f(x, t) / (h - h) }\n")
    assert "not finite" in err.value.diagnostics[0].message


def test_a_parameter_that_zeroes_a_residual_input_is_a_located_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``f(gamma * x, t)`` with gamma = 0 would call the residual with the number 0."""
    spec = SPEC.replace("h * EXPR * f(x, t)", "h * f(gamma * x, t)")
    assert torch.isfinite(odedsl.compile(spec, g=1.0)(torch.randn(3, 2))).all()
    with pytest.raises(odedsl.DslError) as err:
        odedsl.load_spec(spec)
    (d,) = [d for d in err.value.diagnostics if d.severity == "error"]
    assert d.code == "E240" and "does not depend on the state" in d.message
    assert d.span is not None and d.span.line == 3
    assert "Traceback" not in capfd.readouterr().err


def test_a_state_that_divides_itself_in_its_own_update_inverts_exactly() -> None:
    """``v = v * v / v + h * f(x, t)``: the factor of v is 1 (exact inverse), but the
    increment was the update at v = 0 as written, 0/0: a false E240 (audit, 2026-12-03)."""
    text = (
        "integrator my(x, v = x) { v = v * v / v + h * f(x, t)  x = x + h * v }\n"
        "network n() { input vector[4] stage s = ode(4) {"
        " integrator my backward MODE residual { linear(4) tanh } } }\n"
    )
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64) + 2  # v = x stays away from 0
    grads = []
    for mode in ("store", "invert"):
        torch.manual_seed(0)
        model = odedsl.compile(text.replace("MODE", mode), dtype=torch.float64)
        assert model.s.kind == "exact"
        model(x).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


#: ``x += h f / (1 - t)``: finite at every layer time t < 1, but the reverse Euler step of the
#: last layer reads the coefficient at t + h = 1.
TO_ONE = (
    "integrator to_one(x) { x += h * f(x, t) / (1 - t) }\n"
    "network n(depth: int = 4) { input vector[4] stage s = ode(depth) {"
    " integrator to_one weights tied backward MODE residual { linear(4) tanh } } }\n"
)


def test_an_inverse_only_singularity_refuses_invert_but_not_store_or_checkpoint() -> None:
    """The dry run refused `store` for a singularity only the inverse meets, and named the
    layer time (0.75) where the coefficient is finite, not the t + h = 1 it steps back from."""
    for mode in ("store", "checkpoint(2)"):
        model = odedsl.compile(TO_ONE.replace("MODE", mode))
        y = model(torch.randn(3, 4))
        y.square().sum().backward()
        assert torch.isfinite(y).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(odedsl.DslError) as err:
        odedsl.load_spec(TO_ONE.replace("MODE", "invert"))
    (d,) = err.value.diagnostics
    assert d.code == "E240" and "the inverse of integrator 'to_one'" in d.message
    assert "inverse of the layer at t = 0.75, which steps back from t + h = 1" in d.message
    assert d.span is not None and d.span.column == TO_ONE.split("\n")[1].index("backward") + 1
    assert d.hint == "use backward store or checkpoint(k), which never run the inverse"


def test_check_and_show_say_where_a_store_stages_inverse_fails(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from odedsl.cli.main import main

    spec = tmp_path / "to_one.ode"
    spec.write_text(TO_ONE.replace("MODE", "store"))
    assert main(["check", str(spec)]) == 0
    assert "inverse approximate, failing at this depth)" in capsys.readouterr().out
    assert main(["check", str(spec), "--json"]) == 0
    (stage,) = json.loads(capsys.readouterr().out)["network"]["stages"]
    assert stage["inverse_fault"].endswith("which steps back from t + h = 1")
    assert main(["show", str(spec)]) == 0
    assert "at this depth the inverse fails (a coefficient" in capsys.readouterr().out
    spec.write_text(TO_ONE.replace("MODE", "store").replace("/ (1 - t)", "/ (2 - t)"))
    assert main(["check", str(spec), "--json"]) == 0
    (stage,) = json.loads(capsys.readouterr().out)["network"]["stages"]
    assert stage["inverse_fault"] is None


def test_the_runtime_refuses_a_depth_or_mode_the_validator_would_have_refused() -> None:
    """set_depth moved the layer times onto a singularity (h / (t - 1/2) at depth 4) without
    a word: the output was inf. Switching a store stage to invert met the inverse's."""
    half = TO_ONE.replace("/ (1 - t)", "/ (t - 0.5)").replace("MODE", "store")
    stage = odedsl.compile(half, depth=3).s
    with pytest.raises(ValueError, match=r"fails on its coefficients at depth 4 .* at t = 0\.5"):
        stage.set_depth(4)
    assert (stage.depth, stage.h) == (3, 1 / 3)  # unchanged
    stage.set_depth(5)  # t = 0.4, 0.6: no layer on the singularity
    stage = odedsl.compile(TO_ONE.replace("MODE", "store")).s
    with pytest.raises(ValueError, match="the inverse of integrator 'to_one' fails"):
        stage.backward_mode = "invert"
    assert str(stage.backward_mode) == "store"
    stage.backward_mode = "checkpoint(2)"
    stage.set_depth(8)


PROBED = [
    f"integrator my(x, v = 0) {{ v += h * f(x, t) / (t - 0.6) \n x += {expr} }}"
    for expr in (
        "h * f(x, t) / (1 - t)",
        "h * f(x, t + h) / (t * t - 0.25)",
        "h * f(x, t) * (t - 0.5)^0.5",
        "h * f(x, t) / (h - 0.25)",
        "h * f(x, t) / (1 / (t - 0.5))",
        "h * f(x, t) * sqrt(t - 0.3) * exp(1 / (t - 0.25))",
    )
] + [  # a start block, probed at t0 only
    "integrator my(x, d = 0) { start { d -= h^2 / 2 * f(x, t) / (t - 0.25) \n x += d }"
    " d -= h^2 * f(x, t) / (t - 0.5) \n x += d }"
]


@pytest.mark.parametrize("integrator", PROBED)
def test_exported_codes_probe_finds_what_the_dry_run_finds(integrator: str) -> None:
    """Exported code carries no step graphs, so it checks its coefficients by running its own
    steps (CoefficientProbe): the same faults, named alike, at every depth and start time."""
    from odedsl.runtime import CoefficientProbe

    spec = odedsl.load_spec(
        integrator + "\n" + SPEC.replace("my(gamma=g)", "euler").split("integrator my(")[0]
    )
    program = spec.integrators["my"].program({})
    probe = CoefficientProbe(2, program.step, program.first)
    assert program.coefficient_check is not None
    for depth in range(1, 13):
        for t0 in (0.0, 0.1, 0.25):
            want = [str(f) for f in program.coefficient_check(1 / depth, depth, t0)]
            assert [str(f) for f in probe(1 / depth, depth, t0)] == want, (depth, t0)
