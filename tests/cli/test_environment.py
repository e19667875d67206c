"""The ``ODEDSL_*`` environment variables at the command line: a bad value is E130 before a
command runs (it was a traceback mid-training), an unknown name is W130. The runtime's own
reading of them: ``tests/runtime/test_env_switches.py``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from odedsl.cli.environment import KNOWN
from odedsl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
RESNET = str(ROOT / "specs" / "resnet.ode")
SMALL = ["--set", "depth=2", "--set", "width=4"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ODEDSL_")]:
        monkeypatch.delenv(name)


BAD = [
    ("ODEDSL_CHECK_INVERSE", "abc"),
    ("ODEDSL_CHECK_INVERSE", "-1"),
    ("ODEDSL_CHECK_INVERSE", "0.0"),  # a tolerance of 0 failed every backward
    ("ODEDSL_CHECK_INVERSE", "nan"),
    ("ODEDSL_CHECK_INVERSE", "inf"),
    ("ODEDSL_CHECK_FORWARD", "maybe"),
    ("ODEDSL_CHECK_FORWARD", "2"),
    ("ODEDSL_TRAIN_CRASH_AFTER", "x"),
    ("ODEDSL_TRAIN_CRASH_AFTER", "-3"),
    ("ODEDSL_MAX_DEPTH", "lots"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_is_e130_before_anything_runs(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["check", RESNET, *SMALL]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[E130]" in err and f"{name}=" in err, err
    assert "hint: " in err
    assert main(["check", RESNET, *SMALL, "--json"]) == 2
    (diagnostic,) = json.loads(capsys.readouterr().out)["errors"]
    assert diagnostic["code"] == "E130" and name in diagnostic["message"]


def test_train_with_a_bad_check_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The case that gave a traceback: the value is read in the first invert backward."""
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "abc")
    out = tmp_path / "run"
    argv = ["train", RESNET, *SMALL, "--data", "synthetic", "--epochs", "1", "--quiet"]
    assert main([*argv, "--backward", "invert", "--out", str(out)]) == 2
    assert "ODEDSL_CHECK_INVERSE='abc'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ODEDSL_CHECK_INVERSE", "1e-6"),
        ("ODEDSL_CHECK_INVERSE", " ON "),
        ("ODEDSL_CHECK_INVERSE", "0"),
        ("ODEDSL_CHECK_FORWARD", "false"),
        ("ODEDSL_CHECK_FORWARD", "Yes"),
        ("ODEDSL_TRAIN_CRASH_AFTER", "0"),
        ("ODEDSL_MAX_DEPTH", "7"),
    ],
)
def test_good_values_pass(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["check", RESNET, *SMALL]) == 0
    assert capsys.readouterr().err == ""


def test_an_unknown_name_warns_with_the_nearest_known_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ODEDSL_MAX_DEPHT", "5")
    monkeypatch.setenv("ODEDSL_SOMETHING", "1")
    assert main(["check", RESNET, *SMALL]) == 0  # a warning, the command still runs
    err = capsys.readouterr().err
    assert "warning: environment variable ODEDSL_MAX_DEPHT is not one odedsl reads" in err
    assert "[W130]" in err and "did you mean ODEDSL_MAX_DEPTH?" in err
    assert "ODEDSL_SOMETHING" in err and "odedsl reads ODEDSL_MAX_SPEC_BYTES" in err


def test_known_lists_every_variable_the_package_reads() -> None:
    """Every ``ODEDSL_<NAME>`` literal in the package's source is in KNOWN (limits are read
    as ``ODEDSL_`` + field name, so they are listed from ``Limits``' fields)."""
    files = [p for p in (ROOT / "odedsl").rglob("*.py") if p.name != "environment.py"]
    source = "\n".join(p.read_text() for p in files)  # environment.py shows a typo
    named = set(re.findall(r"\bODEDSL_[A-Z][A-Z_]*[A-Z]\b", source))
    assert named <= set(KNOWN), sorted(named - set(KNOWN))
    assert {"ODEDSL_CHECK_INVERSE", "ODEDSL_TRAIN_CRASH_AFTER", "ODEDSL_MAX_DEPTH"} <= named


def test_every_bad_value_is_reported_at_once_with_its_own_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ODEDSL_CHECK_INVERSE", "abc")
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "maybe")
    monkeypatch.setenv("ODEDSL_TRAIN_CRASH_AFTER", "x")
    assert main(["check", RESNET, *SMALL, "--json"]) == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert [e["code"] for e in errors] == ["E130"] * 3
    inverse, forward, crash = errors
    assert "ODEDSL_CHECK_INVERSE='abc'" in inverse["message"]
    assert "ODEDSL_CHECK_INVERSE=1e-6" in inverse["hint"]
    assert "ODEDSL_CHECK_FORWARD='maybe'" in forward["message"]
    assert forward["hint"] == "e.g. ODEDSL_CHECK_FORWARD=1, or unset it"
    assert "ODEDSL_TRAIN_CRASH_AFTER" in crash["message"] and "testing hook" in crash["hint"]


@pytest.mark.parametrize("name", ["ODEDSL_CHECK_INVERSE", "ODEDSL_CHECK_FORWARD"])
def test_a_long_value_is_quoted_to_40_characters(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, "z" * 100)
    assert main(["check", RESNET, *SMALL]) == 2
    err = capsys.readouterr().err
    assert f"{name}='{'z' * 37}...'" in err and "z" * 38 not in err, err


def test_the_test_suites_own_variable_is_not_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ODEDSL_REGEN_GOLDEN", "1")
    assert main(["check", RESNET, *SMALL]) == 0
    assert capsys.readouterr().err == ""


def test_a_bad_limit_is_reported_with_the_other_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limits are checked first, with the switches (loading the spec reads them too, so
    only a second bad variable shows whether the environment check covers them)."""
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "lots")
    monkeypatch.setenv("ODEDSL_CHECK_FORWARD", "maybe")
    assert main(["check", RESNET, *SMALL]) == 2
    err = capsys.readouterr().err
    assert "[E130]" in err and "ODEDSL_MAX_DEPTH='lots'" in err, err
