"""Numerical faults injected into compiled specs: each reported with its stage and layer.

* NaN/Inf in a forward pass: an error naming the stage and the first bad layer, when the
  opt-in check is on (``ODEDSL_CHECK_FORWARD=1`` or ``stage.check_forward = True``), in every
  backward mode; silent (NaN output) when it is off.
* NaN in a state reconstructed by invert backward: always an error naming stage and layer.
* Inversion drift past the tolerance (``ODEDSL_CHECK_INVERSE`` or ``stage.check_inverse``):
  an exact inverse raises, an approximate one warns, both with the measured relative error;
  without that check an exact inverse still warns (once per stage) with the drift estimated
  from a sketch of the input.

The expected layer is where the fault was injected; the expected drift is measured here
independently (reconstructing the stage input by hand) and its O(h) decay checked.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import odedsl
from odedsl.runtime import (
    InversionDriftError,
    InversionDriftWarning,
    Invert,
    NumericalFault,
    OdeStage,
)

SPEC = """\
network net(depth: int = 6) {
    input vector[4]
    stem { linear(8) }
    stage first = ode(2) {
        integrator INTEGRATOR
        backward BACKWARD
        residual { linear(RES) tanh }
    }
    stage body = ode(depth) {
        integrator INTEGRATOR
        backward BACKWARD
        residual { linear(RES) ACT }
    }
    head { linear(2) }
}
"""


def compile_net(
    integrator: str = "euler", backward: str = "invert", act: str = "tanh", **params: int
) -> nn.Module:
    res = "4" if integrator in ("additive_coupling", "hamiltonian") else "8"
    text = SPEC.replace("INTEGRATOR", integrator).replace("BACKWARD", backward)
    text = text.replace("ACT", act)
    torch.manual_seed(0)
    return odedsl.compile(text.replace("RES", res), dtype=torch.float64, **params)


X = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ODEDSL_CHECK_FORWARD", raising=False)
    monkeypatch.delenv("ODEDSL_CHECK_INVERSE", raising=False)
    yield


def poison(stage: OdeStage, layer: int, value: float = float("nan")) -> None:
    """Put ``value`` in one weight of the residual that layer ``layer`` of an untied stage
    reads (one slot per layer: euler and coupling integrators read no time ahead). Through
    ``.data``, which no version counter sees: between a forward and its backward, an edit
    autograd can see is refused before any reconstruction (``ParametersModifiedError``,
    tests/reliability/test_torch_conventions.py), and these tests are about what the
    reconstruction meets."""
    stage.residual_modules("f")[layer].linear1.weight.data[0, 0] = value


# ------------------------------------------------------------------ forward (opt-in)
@pytest.mark.parametrize("backward", ["store", "checkpoint(2)", "invert"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_forward_names_stage_and_layer(
    backward: str, value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tanh would saturate an infinity back to ±1: no activation after the poisoned weight
    model = compile_net(backward=backward, act="identity")
    poison(model.body, 3, value)
    assert not torch.isfinite(model(X)).all()  # off by default: the NaN goes through
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "1")
    with pytest.raises(NumericalFault) as err:
        model(X.requires_grad_(backward != "store"))
    assert (err.value.stage, err.value.layer) == ("body", 3)
    assert "stage 'body'" in str(err.value) and "layer 3" in str(err.value)
    assert "forward" in str(err.value) and "learning rate" in err.value.hint


def test_forward_check_by_attribute_and_first_stage() -> None:
    model = compile_net()
    poison(model.first, 1)
    model.first.check_forward = True
    with pytest.raises(NumericalFault) as err, torch.no_grad():
        model(X)
    assert (err.value.stage, err.value.layer) == ("first", 1)


def test_non_finite_input_is_layer_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    model = compile_net()
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "1")
    x = X.clone()
    x[1, 2] = float("nan")
    with pytest.raises(NumericalFault) as err:
        model(x)
    assert (err.value.stage, err.value.layer) == ("first", 0)


def test_finite_forward_passes_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "1")
    model = compile_net()
    model(X.requires_grad_()).sum().backward()


# ------------------------------------------------------------------ reconstruction (always)
@pytest.mark.parametrize("integrator", ["euler", "additive_coupling"])
def test_non_finite_reconstruction_names_stage_and_layer(integrator: str) -> None:
    """A weight poisoned between forward and backward: the forward was finite, the state
    rebuilt at that layer is not. No switch is needed for this check."""
    model = compile_net(integrator)
    x = X.clone().requires_grad_()
    y = model(x)
    assert torch.isfinite(y).all()
    poison(model.body, 4)
    with pytest.raises(NumericalFault) as err:
        y.sum().backward()
    assert (err.value.stage, err.value.layer) == ("body", 4)
    assert "reconstructed" in str(err.value)
    assert "checkpoint(k) or store" in err.value.hint and "hint:" in str(err.value)


@pytest.mark.parametrize("integrator", ["euler", "additive_coupling"])
def test_a_forward_nan_is_not_blamed_on_the_inverse(integrator: str) -> None:
    """Without the forward check, a NaN the forward made reaches invert's backward through the
    stage output; it used to be reported as made by the reconstruction, at the last layer."""
    model = compile_net(integrator, act="identity")
    poison(model.body, 3)
    y = model(X.clone().requires_grad_())
    with pytest.raises(NumericalFault) as err:
        y.sum().backward()
    assert (err.value.stage, err.value.layer) == ("body", None)
    assert "stage output: the forward pass produced it" in str(err.value)
    assert "ODEDSL_CHECK_FORWARD=1" in err.value.hint and "reconstructed" not in str(err.value)


# ------------------------------------------------------------------ drift
class Jitter(nn.Module):
    """A residual made non-deterministic: each call adds fresh noise (not replayed)."""

    def __init__(self, inner: nn.Module, size: float) -> None:
        super().__init__()
        self.inner, self.size = inner, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.size * torch.randn_like(x)


def _jitter(model: nn.Module, layer: int, size: float) -> None:
    """Unreplayed noise in one layer. The stage keeps its planned anchors (none): measuring
    would read the noise as rounding growth, anchor every layer and recompute the noisy
    segment (said by its own warning, ``tests/runtime/test_anchor_edges.py``), and these
    tests are about what the input check sees."""
    f = model.body.residual_modules("f")
    f[layer] = Jitter(f[layer], size)
    model.body.backward_mode = Invert(measure_anchors=False)


def test_drift_of_an_exact_inverse_is_an_error_with_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = compile_net("additive_coupling")
    _jitter(model, 2, 1e-3)
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "1")  # defaults: 1e-8 in float64
    x = X.clone().requires_grad_()
    with pytest.raises(InversionDriftError) as err:
        model(x).sum().backward()
    e = err.value
    assert e.stage == "body" and 1e-6 < e.relative_error < 1e-1
    assert f"relative error {e.relative_error:.3g}" in str(e) and "'exact'" in str(e)


def test_exact_inverse_without_fault_passes_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "1")
    model = compile_net("additive_coupling")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(X.clone().requires_grad_()).sum().backward()


def test_without_the_exact_check_a_sketch_warns_once_with_the_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exact check (keeping the input, raising) is opt-in; by default a sketch of the input
    estimates the drift and warns, once per stage; ``ODEDSL_CHECK_INVERSE=0`` silences it."""
    model = compile_net("additive_coupling")
    _jitter(model, 2, 1e-3)
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "1")
    with pytest.raises(InversionDriftError) as err:
        model(X.clone().requires_grad_()).sum().backward()
    exact = err.value.relative_error
    monkeypatch.delenv("ODEDSL_CHECK_INVERSE")
    with pytest.warns(InversionDriftWarning) as caught:
        model(X.clone().requires_grad_()).sum().backward()
    (w,) = [c.message for c in caught if isinstance(c.message, InversionDriftWarning)]
    assert w.stage == "body" and exact / 4 < w.relative_error < exact * 4
    assert "estimated relative error" in str(w) and "checkpoint(k)" in str(w)
    with warnings.catch_warnings():  # once per stage
        warnings.simplefilter("error")
        model(X.clone().requires_grad_()).sum().backward()
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "0")
    quiet = compile_net("additive_coupling")
    _jitter(quiet, 2, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(X.clone().requires_grad_()).sum().backward()


def _true_drift(model: nn.Module, x: torch.Tensor) -> float:
    """The reverse-Euler reconstruction of ``body``'s input, by hand (seed 000 eq. 6):
    x_n ≈ x_{n+1} - h f_n(x_{n+1}); its relative error against the true input."""
    stage = model.body
    with torch.no_grad():
        inp = model.first(model.stem(x))
        state = inp
        for n in range(stage.depth):
            state = state + stage.h * stage.residual_modules("f")[n](state)
        for n in reversed(range(stage.depth)):
            state = state - stage.h * stage.residual_modules("f")[n](state)
    return float((state - inp).norm() / inp.norm())


@pytest.mark.parametrize("depth", [4, 16])
def test_drift_of_an_approximate_inverse_warns_with_its_measured_size(depth: int) -> None:
    model = compile_net("euler", depth=depth)
    with torch.no_grad():  # a residual large enough for a visible O(h) drift
        for m in model.body.residual_modules("f"):
            m.linear1.weight.mul_(4.0)
    expected = _true_drift(model, X)
    model.body.check_inverse = expected / 2
    x = X.clone().requires_grad_()
    with pytest.warns(InversionDriftWarning) as caught:
        model(x).sum().backward()
    (w,) = [c.message for c in caught if isinstance(c.message, InversionDriftWarning)]
    assert w.stage == "body"
    assert w.relative_error == pytest.approx(expected, rel=1e-6)
    assert f"relative error {expected:.3g}" in str(w) and "'approximate'" in str(w)
    model.body.check_inverse = expected * 2  # under the tolerance: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(X.clone().requires_grad_()).sum().backward()


def test_approximate_drift_decays_like_h() -> None:
    """The measured drift is the reverse-time scheme's: first order in h = 1/N."""
    drift = {}
    for depth in (8, 32):
        model = compile_net("euler", depth=depth)
        with torch.no_grad():
            for m in model.body.residual_modules("f"):
                m.linear1.weight.copy_(model.body.residual_modules("f")[0].linear1.weight * 4)
                m.linear1.bias.copy_(model.body.residual_modules("f")[0].linear1.bias)
        model.body.check_inverse = 1e-12
        with pytest.warns(InversionDriftWarning) as caught:
            model(X.clone().requires_grad_()).sum().backward()
        drift[depth] = next(
            c.message.relative_error
            for c in caught
            if isinstance(c.message, InversionDriftWarning) and c.message.stage == "body"
        )
    assert 2.5 < drift[8] / drift[32] < 6.5  # 4× smaller step, about 4× less drift
