"""Resource limits are checked against the parameters the user asked for, not the defaults:
a spec whose default depth exceeds ``ODEDSL_MAX_DEPTH`` trains with ``--set depth=2``."""

from __future__ import annotations

from pathlib import Path

import pytest

from odedsl.cli.main import main
from odedsl.diagnostics import DslError
from odedsl.training.data import synthetic
from odedsl.training.model import fit_spec

DEEP = """\
network deep(depth: int = 16, width: int = 4, classes: int = 10,
             channels: int = 3, size: int = 32, stride: int = 4) {
    input image[channels, size, size]
    stem { conv2d(width, kernel=3, stride=stride, padding=1) relu }
    stage body = ode(depth) {
        integrator euler
        residual { conv2d(width, kernel=3, padding=1) relu }
    }
    head { adaptive_avgpool2d(1) flatten linear(classes) }
}
"""


@pytest.fixture
def deep_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A spec whose default depth (16) is above the limit (8)."""
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "8")
    path = tmp_path / "deep.ode"
    path.write_text(DEEP, encoding="utf-8")
    return path


def test_fit_spec_checks_limits_against_the_overrides(deep_spec: Path) -> None:
    bundle = synthetic(channels=1, size=8, n_train=32, n_test=8)
    fitted = fit_spec(deep_spec, bundle, {"depth": 2})
    assert fitted.params["depth"] == 2
    assert fitted.from_data == {"channels": 1, "size": 8, "classes": 10, "stride": 1}
    assert tuple(fitted.spec.network.input_shape) == (1, 8, 8)


def test_fit_spec_still_refuses_a_depth_over_the_limit(deep_spec: Path) -> None:
    bundle = synthetic(channels=1, size=8, n_train=32, n_test=8)
    with pytest.raises(DslError) as err:
        fit_spec(deep_spec, bundle, {"depth": 9})
    assert [d.code for d in err.value.diagnostics] == ["E250"]


def test_train_command_honours_set_before_the_limit_check(
    deep_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", str(deep_spec), "--set", "depth=2", "--data", "synthetic"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert "E250" not in capsys.readouterr().err
