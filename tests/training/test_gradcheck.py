"""Gradient checks against store in float64, the inits behind them, and the depth sweep."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.diagnostics import DslError
from odedsl.training.gradcheck import (
    compare,
    gradient_errors,
    load_with_integrator,
    perturb,
    reconstruction_error,
    stages_of,
)
from odedsl.training.plot import depth_sweep, fit_slope, slope_text

TINY = {"depth": 3, "width": 4, "size": 8}


def _by_stage(rows: list) -> dict:  # type: ignore[type-arg]
    return {r.stage: r for r in rows}


def test_store_against_store_is_exactly_zero(specs: Path) -> None:
    rows = _by_stage(gradient_errors(specs / "resnet.ode", overrides=TINY, backward="store"))
    assert rows["body"].grad_error == 0.0 and rows["all"].grad_error == 0.0
    assert rows["body"].reconstruction_error is None and rows["body"].grad_norm > 0


def test_exact_inverses_match_store_to_rounding(specs: Path) -> None:
    params = {"depth": 2, "size": 8}
    rows = gradient_errors(specs / "hamiltonian.ode", overrides=params)
    assert [r.stage for r in rows] == ["stage1", "stage2", "stage3", "all"]
    for r in rows:
        assert r.grad_error < 1e-12, r
        assert r.stage == "all" or r.reconstruction_error < 1e-12


@pytest.mark.filterwarnings("error::odedsl.runtime.ApproximateGradientWarning")
def test_euler_invert_is_approximate_unless_residuals_vanish(specs: Path) -> None:
    """(The check measures the error ApproximateGradientWarning warns of: it says nothing.)"""
    woken = _by_stage(gradient_errors(specs / "resnet.ode", overrides=TINY, backward="invert"))
    assert woken["body"].grad_error > 1e-3 and woken["body"].reconstruction_error > 1e-4
    assert woken["body"].inverse == "approximate"
    # zero-residual initialisation: f = 0, so the reverse Euler step is exact
    asleep = _by_stage(
        gradient_errors(specs / "resnet.ode", overrides=TINY, backward="invert", init="spec")
    )
    assert asleep["body"].grad_error == 0.0


def test_smooth_init_is_linear_in_depth_and_shared_across_depths(specs: Path) -> None:
    models = []
    for depth in (4, 8):
        m = odedsl.compile(specs / "resnet.ode", depth=depth, width=4, size=8, dtype=torch.float64)
        perturb(m, "smooth", seed=0)
        models.append(m)
    (_, stage4), (_, stage8) = stages_of(models[0])[0], stages_of(models[1])[0]
    w = [s.conv1.weight for s in stage8.f]
    assert torch.allclose(w[2] - w[1], w[6] - w[5])  # equal steps: linear in depth
    assert torch.allclose(stage4.f[0].conv1.weight, stage8.f[0].conv1.weight)
    assert torch.allclose(stage4.f[3].conv1.weight, stage8.f[7].conv1.weight)  # same θ(1)
    assert torch.equal(models[0].head.linear1.weight, models[1].head.linear1.weight)


def test_reconstruction_of_an_exact_stage(specs: Path) -> None:
    m = odedsl.compile(specs / "revnet.ode", depth=3, size=8, dtype=torch.float64)
    perturb(m, "random", seed=1)
    _, stage = stages_of(m)[0]
    x = torch.randn(
        2,
        *m.stem(torch.randn(2, *m.input_shape, dtype=torch.float64)).shape[1:],
        dtype=torch.float64,
    )
    assert reconstruction_error(stage, x) < 1e-12


def test_integrator_swap_keeps_imports_and_network(specs: Path) -> None:
    spec = load_with_integrator(specs / "resnet.ode", "heun", depth=4)
    assert [s.integrator for s in spec.network.stages] == ["heun"]
    assert spec.network.name == "resnet"


def test_an_unknown_swapped_integrator_is_the_option_s_error(specs: Path) -> None:
    """`--integrator hamiltonain` was located on the spec's `integrator euler` clause (the
    caret under `euler`, the message naming 'hamiltonain'): it is not the spec's error."""
    with pytest.raises(DslError) as err:
        load_with_integrator(specs / "resnet.ode", "hamiltonain", depth=4)
    (d,) = err.value.diagnostics
    assert d.span is None and "'hamiltonain'" in d.message
    assert d.hint == "did you mean 'hamiltonian'?"


def test_sweep_rows_and_slopes(specs: Path) -> None:
    rows = depth_sweep(
        specs / "resnet.ode",
        [2, 4],
        integrators=["euler", "heun"],
        overrides={"width": 4, "size": 8},
    )
    assert {(r.integrator, r.depth) for r in rows if r.stage == "body"} == {
        ("euler", 2),
        ("euler", 4),
        ("heun", 2),
        ("heun", 4),
    }
    assert all(r.backward == "invert" for r in rows if r.stage == "body")
    assert fit_slope([1, 2, 4], [1.0, 0.5, 0.25]) == pytest.approx(-1.0)
    assert fit_slope([1, 2], [0.0, 0.0]) is None


def test_no_slope_is_fitted_through_rounding() -> None:
    """An exact inverse's float64 errors (2.5e-16, 7.8e-16, 9.3e-16 for midpoint) got a
    slope, +0.63, as if they were the scheme's; so did an approximate line's rounding tail."""
    depths, rounding = [2, 4, 8], [2.5e-16, 7.8e-16, 9.3e-16]
    assert slope_text(depths, rounding, "exact") == "exact: rounding only"
    assert slope_text(depths, [1e-2, 1e-3, 1e-4], "exact-unstable") == "exact: rounding only"
    assert slope_text(depths, rounding, "approximate") == "at rounding level: no slope"
    tail = [1e-8, 1e-11, 3e-16]  # the last point is rounding: the slope of the first two
    assert slope_text(depths, tail, "approximate") == f"slope {math.log(1e-3) / math.log(2):+.2f}"
    assert slope_text([2, 4], [1e-3, float("nan")], "approximate") == "slope n/a"


DROPOUT = """
network drop(depth: int = 3, size: int = 8) {
    input image[1, size, size]
    stem { conv2d(8, kernel=3, padding=1) batchnorm2d relu }
    stage body = ode(depth) {
        integrator additive_coupling
        backward invert
        residual { conv2d(4, kernel=3, padding=1) relu dropout(0.3) conv2d(4, kernel=3, padding=1) }
    }
    head { adaptive_avgpool2d(1) flatten linear(10) }
}
"""


def test_dropout_is_replayed_in_both_models_and_in_the_reconstruction(tmp_path: Path) -> None:
    (tmp_path / "drop.ode").write_text(DROPOUT)
    body = _by_stage(gradient_errors(tmp_path / "drop.ode"))["body"]
    assert body.grad_error < 1e-12 and body.reconstruction_error < 1e-12


def test_gradcheck_reports_the_anchors_invert_kept(specs: Path) -> None:
    """The anchors column: what the checked run kept (planned or measured), so a user sees the
    memory an exact gradient cost; none for store, none for a stable exact stage."""
    rows = _by_stage(gradient_errors(specs / "momentum.ode", overrides={"depth": 256, "size": 8}))
    body = rows["body"]
    assert body.anchors is not None and body.anchors >= 2 and body.grad_error < 1e-9
    assert rows["all"].anchors is None
    stored = _by_stage(gradient_errors(specs / "revnet.ode", overrides=TINY, backward="store"))
    assert stored["body"].anchors is None
    stable = _by_stage(gradient_errors(specs / "revnet.ode", overrides={"depth": 3, "size": 8}))
    assert stable["body"].anchors == 0


TWO_STAGES = """\
network two(depth: int = 4) {
    input vector[6]
    stage a = ode(depth) { integrator euler backward store residual { linear(6) tanh } }
    stage b = ode(depth) { integrator euler backward invert residual { linear(6) tanh } }
}
"""


def test_a_stage_row_measures_its_own_mode_only() -> None:
    """A store stage before an approximate invert stage showed the later stage's error as its
    own (1.7e-3; audit, 2026-12-02): each row now has its stage in its mode and every other
    stage in store. The `all` row keeps the whole network's error."""
    torch.manual_seed(0)
    ref = odedsl.compile(TWO_STAGES, dtype=torch.float64, backward="store")
    test = odedsl.compile(TWO_STAGES, dtype=torch.float64)
    test.load_state_dict(ref.state_dict())
    rows = _by_stage(compare(ref, test, depth=4))
    assert rows["a"].backward == "store" and rows["a"].grad_error == 0.0
    assert rows["b"].grad_error > 1e-3 and rows["all"].grad_error > 1e-3
    alone = odedsl.compile(TWO_STAGES, dtype=torch.float64, backward="store")
    alone.load_state_dict(ref.state_dict())
    alone.get_submodule("b").backward_mode = "invert"
    assert _by_stage(compare(ref, alone, depth=4))["b"].grad_error == rows["b"].grad_error


def test_two_recomputing_stages_each_measure_their_own_mode() -> None:
    """With two approximate stages, each row has its own stage in invert and the other in
    store (a copy of the network per row): it equals the error of a network where that stage
    alone inverts, and is not store's 0."""
    source = TWO_STAGES.replace("backward store", "backward invert")
    torch.manual_seed(0)
    ref = odedsl.compile(source, dtype=torch.float64, backward="store")
    test = odedsl.compile(source, dtype=torch.float64)
    test.load_state_dict(ref.state_dict())
    rows = _by_stage(compare(ref, test, depth=4))
    for name in ("a", "b"):
        alone = odedsl.compile(source, dtype=torch.float64, backward="store")
        alone.load_state_dict(ref.state_dict())
        alone.get_submodule(name).backward_mode = "invert"
        want = _by_stage(compare(ref, alone, depth=4))[name].grad_error
        assert rows[name].backward == "invert" and rows[name].grad_error == want > 1e-4, name
