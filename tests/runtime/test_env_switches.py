"""The runtime reads its ``ODEDSL_CHECK_*`` switches strictly (``ODEDSL_CHECK_FORWARD=false``
switched the check on; ``ODEDSL_CHECK_INVERSE=-1`` or ``0.0`` failed every backward), and a
stage refuses a check tolerance that means nothing."""

from __future__ import annotations

import os

import pytest
import torch

from odedsl.runtime import OdeStage
from odedsl.runtime.guard import check_inverse_env, forward_check_enabled, inverse_tolerance
from odedsl.runtime.sketch import sketch_enabled

from .util import make_stage


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ODEDSL_")]:
        monkeypatch.delenv(name)


def test_the_runtime_reads_switches_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "false")
    assert forward_check_enabled(False) is False  # was on: any value but "" and "0"
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "on")
    assert forward_check_enabled(False) is True
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "maybe")
    with pytest.raises(ValueError, match="ODEDSL_CHECK_FORWARD='maybe'"):
        forward_check_enabled(False)
    for raw, want in (("", None), ("0", False), ("off", False), ("1", "nan"), ("2e-7", 2e-7)):
        monkeypatch.setenv("ODEDSL_CHECK_INVERSE", raw)
        got = check_inverse_env()
        assert (got != got) if want == "nan" else got == want, raw
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "-1")
    with pytest.raises(ValueError, match="relative tolerance above 0"):
        inverse_tolerance(None)


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), float("inf"), "1e-6"])
def test_a_stage_refuses_a_meaningless_check_tolerance(bad: object) -> None:
    with pytest.raises(ValueError, match="check_inverse must be None, True, False or a relative"):
        make_stage("euler", 2, check_inverse=bad)
    stage = make_stage("euler", 2, check_inverse=1e-6)
    assert isinstance(stage, OdeStage) and stage.check_inverse == 1e-6
    with pytest.raises(ValueError, match="check_inverse must be None, True, False or a relative"):
        stage.check_inverse = bad  # set later: refused too (it failed inside a backward)
    assert stage.check_inverse == 1e-6
    stage.check_inverse = False
    assert stage.check_inverse is False


def test_the_off_switch_silences_the_drift_sketch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``off`` means what ``0`` means: no exact check and no drift estimate."""
    stage = make_stage("hamiltonian", 2, backward="invert", dtype=torch.float64)
    assert sketch_enabled(stage)
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "off")
    assert not sketch_enabled(stage)
