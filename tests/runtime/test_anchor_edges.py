"""Edges of measured anchors and segment recomputation, each pinned after a mutation audit of
odedsl/runtime/invert.py (2026-12-02) found that no test failed when it was changed: the exact
spacing measured, tightening only, the drift thresholds, recomputation with frozen parameters
or non-finite drifted values, one warning per stage, agreement on a non-finite output."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

from odedsl.runtime import AnchorWarning, InversionDriftWarning, Invert
from odedsl.runtime import invert as inv

from .test_measured_anchors import _count_measures, _momentum
from .util import grad_error, make_stage, run

F64 = torch.float64
TOL = inv.ANCHOR_TOL[F64]


def _fake_layer_drift(monkeypatch, cross_at):
    """layer_drift returning 0 below distance ``cross_at`` from the output, 4x the aim from it
    on (a stage without planned anchors: the i-th call is distance i); ``None``: never."""
    state = {"i": 0}
    real_measure = inv._measure

    def measure(*a):
        state["i"] = 0
        return real_measure(*a)

    def drift(s, sk):
        state["i"] += 1
        big = cross_at is not None and state["i"] >= cross_at
        return torch.tensor(4 * inv._targets(TOL, F64).aim if big else 0.0, dtype=F64)

    monkeypatch.setattr(inv, "_measure", measure)
    monkeypatch.setattr(inv, "layer_drift", drift)


def _hamiltonian(depth=16):
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", depth, backward="invert")
    return stage


def _step(stage, x):
    stage(x.clone().requires_grad_()).sum().backward()


# --- M10 / M52: the measured spacing is the largest distance whose drift stays under the aim
def test_measured_spacing_is_the_last_distance_under_the_aim(monkeypatch):
    stage = _hamiltonian(16)
    _fake_layer_drift(monkeypatch, cross_at=5)  # drift crosses the aim 5 layers from a restart
    _step(stage, torch.randn(4, 8, dtype=F64))
    assert stage.anchor_plan(F64) == (4, 3)


# --- M12: a re-measurement never loosens the spacing
def test_a_re_measurement_only_tightens(monkeypatch):
    stage = _hamiltonian(16)
    x = torch.randn(4, 8, dtype=F64)
    _fake_layer_drift(monkeypatch, cross_at=5)
    _step(stage, x)
    assert stage.anchor_plan(F64) == (4, 3)
    _fake_layer_drift(monkeypatch, cross_at=None)  # weights shrank: no drift now
    calls = _count_measures(monkeypatch)
    inv._rechecks(stage).add((16, F64, "cpu", TOL))
    _step(stage, x)
    assert calls == [1] and stage.anchor_plan(F64) == (4, 3)


# --- M19 / M20 / M21 / M27: the backward's anchor-drift thresholds
def _fixed_anchor_drift(monkeypatch, value):
    monkeypatch.setattr(inv, "relative_drift", lambda s, a: torch.tensor(value, dtype=F64))


@pytest.mark.parametrize(
    ("fraction", "remeasures", "recomputes"),
    [(0.25, False, False), (0.75, True, False), (2.0, True, True)],
)
def test_anchor_drift_thresholds(monkeypatch, fraction, remeasures, recomputes):
    """Below half the tolerance: nothing; between half and the tolerance: re-measure next
    call, no recomputation; above: the segment is recomputed (warned), gradients exact."""
    stage = _momentum(0.5, 64, 0.1, backward="invert")
    x = torch.randn(8, 8, dtype=F64)
    run(stage, x, None, copy_module=False)  # measures
    assert stage.anchor_plan(F64).count > 0
    store = run(stage, x, "store")
    calls = _count_measures(monkeypatch)
    _fixed_anchor_drift(monkeypatch, fraction * TOL)
    stage.zero_grad()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = run(stage, x, None, copy_module=False)
    recomputed = [w for w in record if "recomputed layers" in str(w.message)]
    assert bool(recomputed) == recomputes, [str(w.message) for w in record]
    assert grad_error(got, store) < 1e-10
    monkeypatch.setattr(inv, "relative_drift", lambda s, a: torch.tensor(0.0, dtype=F64))
    stage.zero_grad()
    run(stage, x, None, copy_module=False)
    assert len(calls) == int(remeasures)


# --- M29: a drifted walk's non-finite values do not raise once the segment is recomputed
class Fragile(nn.Module):
    """Linear, NaN for inputs beyond 10x what the forward gave it (a residual that is only
    defined near the trajectory, e.g. log/sqrt/overflowing exp)."""

    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w, w)
        self.seen, self.limit = 0.0, float("inf")

    def forward(self, x):
        m = float(x.detach().abs().max())
        self.seen = max(self.seen, m)
        out = self.lin(x)
        return out * float("nan") if m > self.limit else out


def test_recomputed_segment_forgets_the_drifted_walks_non_finite_values():
    stage = _momentum(3.0, 32, 1.0, residual=Fragile, backward="invert")
    x = torch.randn(16, 8, dtype=F64)
    run(stage, x, None, copy_module=False)  # measures: anchors every 13
    assert stage.anchor_plan(F64) == (13, 2)
    with torch.no_grad():
        for name, p in stage.named_parameters():
            if 14 <= int(name.split(".")[1]) < 24:
                p.mul_(300.0)
    store = run(stage, x, "store", copy_module=False)
    for f in stage.f:
        f.limit = 10 * f.seen
    stage.backward_mode = Invert()
    stage.zero_grad()
    with pytest.warns(InversionDriftWarning, match="drifted by inf"):
        got = run(stage, x, None, copy_module=False)  # must not raise NumericalFault
    assert grad_error(got, store) < 1e-9


# --- M34: segment recomputation with frozen parameters
def test_recompute_with_frozen_parameters(monkeypatch):
    stage = _momentum(0.5, 64, 0.1, backward="invert")
    x = torch.randn(8, 8, dtype=F64)
    run(stage, x, None, copy_module=False)
    stage.f[3].weight.requires_grad_(False)
    stage.f[40].bias.requires_grad_(False)
    store = run(stage, x, "store")
    _fixed_anchor_drift(monkeypatch, 2 * TOL)  # every segment recomputed
    stage.zero_grad()
    with pytest.warns(InversionDriftWarning, match="recomputed layers"):
        got = run(stage, x, None, copy_module=False)
    assert grad_error(got, store) < 1e-10


# --- M47: the recomputation warning is said once per stage
def test_recomputation_is_warned_once(monkeypatch):
    stage = _momentum(0.5, 64, 0.1, backward="invert")
    x = torch.randn(8, 8, dtype=F64)
    run(stage, x, None, copy_module=False)
    _fixed_anchor_drift(monkeypatch, 2 * TOL)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            run(stage, x, None, copy_module=False)
    assert len([w for w in record if "recomputed layers" in str(w.message)]) == 1


# --- M48: check_inverse=False silences the recomputation warning (it still recomputes)
def test_recomputation_is_silent_when_drift_reports_are_off(monkeypatch):
    stage = _momentum(0.5, 64, 0.1, check_inverse=False, backward="invert")
    x = torch.randn(8, 8, dtype=F64)
    run(stage, x, None, copy_module=False)
    store = run(stage, x, "store")
    _fixed_anchor_drift(monkeypatch, 2 * TOL)
    stage.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = run(stage, x, None, copy_module=False)
    assert grad_error(got, store) < 1e-10


# --- M46: the every-layer AnchorWarning is said once per stage
def test_dense_anchor_warning_once_per_stage():
    torch.manual_seed(0)
    stage = make_stage("hamiltonian", 8, residual=lambda w: nn.Linear(w, w))
    with torch.no_grad():
        for p in stage.parameters():
            p.normal_(0, 100.0)  # measured: an anchor at every layer
    stage.backward_mode = Invert()
    x = torch.randn(16, 8, dtype=F64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _step(stage, x)
        stage.load_state_dict(stage.state_dict())  # forgets: measures again, every layer again
        _step(stage, x)
    assert len([w for w in record if issubclass(w.category, AnchorWarning)]) == 1


# --- M39: a stage anchored at every layer whose one-layer drift passes half the tolerance
# never re-measures (nothing denser exists)
def test_every_layer_anchored_does_not_re_measure_even_when_one_layer_drifts(monkeypatch):
    calls = _count_measures(monkeypatch)
    stage = _momentum(0.1, 16, 300.0)  # one layer's restart drift 1.8e-12 > tol / 2
    stage.backward_mode = Invert()
    x = torch.randn(16, 8, dtype=F64)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for _ in range(4):
            _step(stage, x)
    assert stage.anchor_plan(F64) == (1, 15)
    assert len(calls) == 1


# --- M31: only the drifted segment is recomputed, not everything above it
def test_only_the_drifted_segment_is_recomputed():
    stage = _momentum(3.0, 32, 1.0, backward="invert")
    x = torch.randn(16, 8, dtype=F64)
    run(stage, x, None, copy_module=False)
    assert stage.anchor_plan(F64) == (13, 2)
    with torch.no_grad():
        for name, p in stage.named_parameters():
            if 14 <= int(name.split(".")[1]) < 24:
                p.mul_(300.0)
    with pytest.warns(InversionDriftWarning, match="recomputed layers 13 to 25 "):
        run(stage, x, None, copy_module=False)


# --- M36: a fused update whose increment needs no gradient (input-free, frozen residual)
class FrozenBias(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.b = nn.Parameter(torch.randn(w), requires_grad=False)

    def forward(self, x):
        return self.b.expand_as(x)


def test_fused_update_with_an_increment_that_needs_no_gradient():
    torch.manual_seed(0)
    stage = make_stage("momentum", 8, residual=FrozenBias)
    x = torch.randn(4, 8, dtype=F64)
    store = run(stage, x, "store")
    got = run(stage, x, Invert())
    assert torch.allclose(got.input_grad, store.input_grad, rtol=1e-12, atol=1e-14)


# --- M43: a measuring call agrees on the output's finiteness before measuring (simulated
# two-rank group: this rank's output is finite, the other rank's is not)
def test_measuring_call_agrees_on_a_non_finite_output(monkeypatch):
    def agree(values, group, device):
        caller = sys._getframe(1).f_code.co_name
        if caller == "_measure" and values[0] >= 0:  # "is my output non-finite?"
            return [1.0]  # the other rank's is
        return list(values)

    monkeypatch.setattr(inv, "_collective_group", lambda tables: "group")
    monkeypatch.setattr(inv, "_agree_max", agree)
    stage = _momentum(0.5, 64, 100.0, backward="invert")
    _step(stage, torch.randn(8, 8, dtype=F64))
    assert inv._measured(stage) == {}  # returned like the other rank: measure next time


# --- M50: a one-layer stage has nothing to anchor: no "every layer" AnchorWarning
def test_a_one_layer_stage_is_not_warned_about_dense_anchors():
    stage = _momentum(0.1, 1, 300.0, backward="invert")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnchorWarning)
        _step(stage, torch.randn(16, 8, dtype=F64))
    assert stage.anchor_plan(F64) == (None, 0)


# --- M07: a measuring call whose output is non-finite measures nothing (a NaN batch must not
# pin the stage to anchors at every layer forever: measurements only tighten)
def test_a_non_finite_measuring_call_does_not_pin_dense_anchors():
    from odedsl.runtime import NumericalFault

    stage = _momentum(0.5, 16, 0.1, backward="invert")
    bad = torch.randn(4, 8, dtype=F64)
    bad[0, 0] = float("nan")
    with warnings.catch_warnings(), pytest.raises(NumericalFault):
        warnings.simplefilter("ignore")
        _step(stage, bad)
    _step(stage, torch.randn(4, 8, dtype=F64))  # measures now
    assert stage.anchor_plan(F64) == Invert().plan(stage.program, 16, F64)


def test_the_one_layer_floor_is_not_growth(monkeypatch):
    """Anchors bound how rounding *grows*; a drift one reconstructed layer already has is no
    anchor's to remove. A flat drift of twice the aim at every distance used to read as a
    crossing at distance 1 (an anchor at every layer, store's memory, an AnchorWarning: a
    float64 Hamiltonian net in the export tests did this with 2e-13 after one layer); growth
    of more than ONE_LAYER_GROWTH over that floor still anchors."""
    aim = inv._targets(TOL, F64).aim
    level = {"flat": 2 * aim}
    monkeypatch.setattr(inv, "layer_drift", lambda s, sk: torch.tensor(level["flat"], dtype=F64))
    stage = _hamiltonian(16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _step(stage, torch.randn(4, 8, dtype=F64))
    assert stage.anchor_plan(F64) == (None, 0)
    _fake_layer_drift(monkeypatch, cross_at=5)  # 0, then 4× the tolerance's aim: growth
    fresh = _hamiltonian(16)
    _step(fresh, torch.randn(4, 8, dtype=F64))
    assert fresh.anchor_plan(F64) == (4, 3)


# --- the every-layer AnchorWarning quotes what forced every layer: the verification's halving
def test_dense_warning_quotes_the_verification_when_it_forced_every_layer(monkeypatch):
    """The measuring walk crossed at 5 layers (spacing 4); the verification then found every
    segment drifting (patched: 0.25) and halved 4 → 2 → 1. The warning names that drift over
    the 2-layer segments, not the crossing's 4x the aim after 5 layers."""
    stage = _hamiltonian(16)
    _fake_layer_drift(monkeypatch, cross_at=5)
    monkeypatch.setattr(inv, "_worst_segment_drift", lambda *a: 0.25)
    with pytest.warns(AnchorWarning) as record:
        _step(stage, torch.randn(4, 8, dtype=F64))
    assert stage.anchor_plan(F64) == (1, 15)
    message = str(record[0].message)
    assert "a drift of 0.25 after 2 layers in float64" in message, message
