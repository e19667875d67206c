"""Numerical guards: NaN/Inf named by stage and layer, inversion drift checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from odedsl.runtime import (
    ApproximateGradientWarning,
    InversionDriftError,
    InversionDriftWarning,
    Invert,
    NumericalFault,
    ParametersModifiedError,
    WeightSchedule,
)

from .programs import MLP, PROGRAMS
from .util import MODES, grad_error, make_stage, run


class Poisonable(MLP):
    """An MLP that returns NaN once ``poison`` is set (after the forward, for the backward)."""

    poison = False

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out * float("nan") if self.poison else out


@pytest.mark.parametrize("program", ["hamiltonian", "euler", "midpoint"])
def test_nan_in_reconstruction_names_stage_and_layer(program):
    torch.manual_seed(0)
    stage = make_stage(program, 8, backward="invert", residual=Poisonable)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    out = stage(x)
    stage.f[5].poison = True
    with pytest.raises(NumericalFault, match=r"'body'.*layer 5") as info:
        out.sum().backward()
    assert info.value.stage == "body" and info.value.layer == 5


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_forward_check_names_stage_and_layer(mode):
    torch.manual_seed(0)
    stage = make_stage("euler", 8, backward=mode, residual=Poisonable, check_forward=True)
    stage.f[3].poison = True
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(NumericalFault, match=r"'body'.*forward state at layer 3"):
        stage(x)
    stage.f[3].poison = False
    stage(x)  # finite: no error


def test_forward_check_from_environment(monkeypatch):
    stage = make_stage("euler", 4, residual=Poisonable)
    stage.f[2].poison = True
    x = torch.randn(6, 8, dtype=torch.float64)
    assert torch.isnan(stage(x)).all()  # off by default
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "1")
    with pytest.raises(NumericalFault, match="layer 2"):
        stage(x)


def test_approximate_drift_warns_with_stage_and_error():
    torch.manual_seed(0)
    stage = make_stage("euler", 16, schedule=WeightSchedule("tied"), check_inverse=1e-9)
    x = torch.randn(6, 8, dtype=torch.float64)
    with pytest.warns(InversionDriftWarning, match=r"'body'.*relative error") as record:
        run(stage, x, "invert")
    drift = next(w.message for w in record if isinstance(w.message, InversionDriftWarning))
    assert 1e-9 < drift.relative_error < 0.1 and drift.stage == "body"


def test_drift_check_from_environment(monkeypatch):
    torch.manual_seed(0)
    stage = make_stage("euler", 16, schedule=WeightSchedule("tied"))
    x = torch.randn(6, 8, dtype=torch.float64)
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "1e-12")
    with pytest.warns(InversionDriftWarning):
        run(stage, x, "invert")
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "1")  # default tolerance: O(h) drift passes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ApproximateGradientWarning)  # said once per stage
        run(stage, x, "invert")


def test_exact_drift_raises_when_weights_change_before_backward():
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 16, backward="invert", check_inverse=1e-8)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    stage(x).sum().backward()  # consistent: passes
    out = stage(x)
    with torch.no_grad():
        stage.f[7].lin2.weight.add_(0.1)  # an optimizer step between forward and backward
    with pytest.raises(ParametersModifiedError, match=r"'body': f\.7\.lin2\.weight was"):
        out.sum().backward()  # the version counter moved: refused before any reconstruction
    out = stage(x)
    stage.f[7].lin2.weight.data.add_(0.1)  # .data: a change no version counter sees
    with pytest.raises(InversionDriftError, match=r"'body'.*relative error") as info:
        out.sum().backward()
    assert info.value.relative_error > 1e-8


def test_check_inverse_keeps_the_input():
    """The check costs one saved stage input, and only when on."""
    from odedsl.runtime import activation_bytes
    from odedsl.runtime.sketch import sketch_bytes

    stage = make_stage("hamiltonian", 16, backward="invert", residual=lambda w: nn.Linear(w, w))
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    off = activation_bytes(stage, x)
    state = x.numel() * x.element_size()
    assert off == state + sketch_bytes(stage.program.init_state(x))  # output + input sketch
    stage.check_inverse = True
    assert activation_bytes(stage, x) == 2 * state  # output + the input itself


def test_amplified_rounding_in_an_exact_inverse_is_never_silent():
    """Momentum with γ = 1/2 and no anchors doubles rounding every layer: at depth 64 the
    reconstruction is garbage and the gradients are wrong; without any opt-in check the sketch
    of the input says so (once), and with the default anchors it stays quiet."""
    torch.manual_seed(5)
    stage = make_stage("momentum", 64)
    stage.program = PROGRAMS["momentum"](0.5)
    x = torch.randn(16, 8, dtype=torch.float64)
    store = run(stage, x, "store")
    with pytest.warns(InversionDriftWarning, match="estimated relative error") as caught:
        wrong = run(stage, x, Invert(anchor_tol=1e300))
    assert grad_error(wrong, store) > 1e-2
    (w,) = [c.message for c in caught if isinstance(c.message, InversionDriftWarning)]
    assert w.stage == "body" and w.relative_error > 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = run(stage, x, Invert())
    assert grad_error(right, store) < 1e-6


def test_sketch_estimates_the_drift_relative_to_the_input():
    """The estimate is within a small factor of the true error relative to the stage input,
    however large the output; only an input of exactly zero (a zero-initialised stem) is
    measured against the output, so its rounding is no drift."""
    from odedsl.runtime.sketch import estimated_drift, sketch

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 3, 5, 5, generator=g, dtype=torch.float64),)
    out = (1e6 * torch.randn(32, 3, 5, 5, generator=g, dtype=torch.float64),)
    for size in (1e-9, 1e-3, 1.0):
        e = size * torch.randn(x[0].shape, generator=g, dtype=torch.float64)
        true = float(e.norm() / x[0].norm())
        got = estimated_drift((x[0] + e,), sketch(x), out)
        assert true / 3 < got < true * 3, (size, got, true)
    zero = (torch.zeros(32, 3, 5, 5, dtype=torch.float64),)
    rounding = (1e-15 * torch.randn(zero[0].shape, generator=g, dtype=torch.float64),)
    assert estimated_drift(rounding, sketch(zero), out) < 1e-15


AMPLIFYING = """network n(depth: int = 12) { input vector[8]
  stage body = ode(depth) { integrator additive_coupling residual { linear(4) } }
  head { linear(3) } }"""


@pytest.mark.parametrize(
    ("spec", "params", "scale", "drifts"),
    [
        ("specs/momentum.ode", {"gamma": 3.0, "depth": 32, "size": 8}, None, True),
        ("specs/momentum.ode", {"gamma": 1.5, "depth": 32, "size": 8}, None, False),
        (AMPLIFYING, {}, 1.5, True),
    ],
)
def test_an_amplifying_stage_is_anchored_by_measurement(spec, params, scale, drifts):
    """Found by a red-team pass (2026-12-02): exact inverses of stages that amplify their
    state (momentum with γ = 3, a coupling with large linear residuals) reconstruct the input
    only to within rounding of the *output*; the gradients were 0.36 and 5.7 off store's in
    float64. Measured anchors make them exact; without measurement the drift sketch still says
    so (it had measured against the output and stayed silent), exactly when the gradient is
    off."""
    from pathlib import Path

    import odedsl
    from odedsl.runtime import OdeStage
    from odedsl.training.gradcheck import perturb

    root = Path(__file__).resolve().parents[2]
    source = str(root / spec) if spec.endswith(".ode") else spec
    store = odedsl.compile(source, backward="store", dtype=torch.float64, **params)
    if scale is None:
        perturb(store, "random", 0)
    else:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in store.parameters():
                p.normal_(0, scale)
    x = torch.randn(
        4, *store.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )

    def grads(m):
        m(x).square().sum().backward()
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    exact = grads(store)
    for measure in (True, False):
        invert = odedsl.compile(source, backward="invert", dtype=torch.float64, **params)
        invert.load_state_dict(store.state_dict())
        (body,) = [m for m in invert.modules() if isinstance(m, OdeStage)]
        body.backward_mode = Invert(measure_anchors=measure)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = grads(invert)
        error = float((got - exact).norm() / exact.norm())
        warned = any(issubclass(w.category, InversionDriftWarning) for w in seen)
        planned = Invert().plan(body.program, body.depth, torch.float64)
        if measure:
            assert not warned and error < 1e-6, error
            measured = body.anchor_plan(torch.float64)
            assert measured.count > planned.count or not drifts, measured
        else:
            assert warned == drifts, error
            assert (error > 1e-3) == drifts  # the warning is there exactly when it is off
            assert body.anchor_plan(torch.float64) == planned


def test_the_exact_check_default_tolerances():
    """``ODEDSL_CHECK_INVERSE=1`` without a tolerance: 1e-8 in float64, 1e-3 in float32; a NaN
    error never passes; approximate kinds warn instead of raising."""
    from odedsl.runtime.errors import InversionDriftError
    from odedsl.runtime.guard import report_drift

    nan = float("nan")
    report_drift("s", "exact", 1e-9, nan, torch.float64)
    report_drift("s", "exact", 1e-4, nan, torch.float32)
    for error, dtype in ((1e-6, torch.float64), (1e-2, torch.float32), (nan, torch.float64)):
        with pytest.raises(InversionDriftError):
            report_drift("s", "exact", error, nan, dtype)
    with pytest.warns(InversionDriftWarning):
        report_drift("s", "approximate", 1.0, nan, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_exact_check_default_tolerance_of_16_bit_states(dtype):
    """Other dtypes than float32 and float64: 1e-2 (``exact_drift_tolerance``, shared with
    invert's recompute cap)."""
    from odedsl.runtime.errors import InversionDriftError
    from odedsl.runtime.guard import exact_drift_tolerance, report_drift

    nan = float("nan")
    report_drift("s", "exact", 9e-3, nan, dtype)
    with pytest.raises(InversionDriftError):
        report_drift("s", "exact", 2e-2, nan, dtype)
    assert exact_drift_tolerance(dtype) == 1e-2


@pytest.mark.parametrize(
    ("dtype", "quiet", "loud"),
    [(torch.float64, 5e-7, 2e-6), (torch.float32, 5e-3, 2e-2), (torch.float16, 5e-2, 2e-1)],
)
def test_sketch_warning_thresholds(dtype, quiet, loud):
    """The sketch warns above 1e-6 (float64), 1e-2 (float32), 1e-1 (half precision): loose on
    purpose, it is there for catastrophic drift; measured anchors keep ordinary drift far
    below (the float32 threshold had been pinned only by its constant, mutation audit)."""
    from types import SimpleNamespace

    from odedsl.runtime.sketch import warn_if_drifted

    stage = SimpleNamespace(name="body", kind="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_drifted(stage, quiet, dtype)
    with pytest.warns(InversionDriftWarning, match="tolerance"):
        warn_if_drifted(stage, loud, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_drifted(stage, 10 * loud, dtype)  # once per stage


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_approximate_invert_says_so_once_per_stage(integrator: str) -> None:
    """``odedsl check`` reports ``inverse: approximate``; a script calling the API trained on
    approximate gradients without a word (red-team audit, 2026-12-02)."""
    stage = make_stage(integrator, 4, backward="invert")
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    with pytest.warns(ApproximateGradientWarning, match="gradcheck") as caught:
        stage(x).sum().backward()
    assert [w.message.stage for w in caught.list] == [stage.name]
    assert caught.list[0].filename == __file__  # the caller's line, not the library's
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximateGradientWarning)
        stage(x).sum().backward()  # once per stage
        with torch.no_grad():
            make_stage(integrator, 4, backward="invert")(x)  # no backward, nothing to say


@pytest.mark.parametrize("integrator", ["midpoint", "hamiltonian"])
def test_exact_invert_and_other_modes_say_nothing(integrator: str) -> None:
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximateGradientWarning)
        make_stage(integrator, 4, backward="invert")(x).sum().backward()
        make_stage("euler", 4, backward="checkpoint(2)")(x).sum().backward()


def test_a_traced_approximate_stage_differentiates_exactly_and_says_only_that() -> None:
    """Under torch.jit.trace the layers run as plain operations (exact gradients, the
    TracedStageWarning says so); the approximate warning contradicted it (review, 2026-12-03)."""
    from odedsl.runtime import TracedStageWarning

    stage = make_stage("euler", 4, backward="invert")
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    with pytest.warns(TracedStageWarning) as caught:
        torch.jit.trace(stage, (x,), check_trace=False)
    assert not [w for w in caught if issubclass(w.category, ApproximateGradientWarning)]
