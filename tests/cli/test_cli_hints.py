"""Errors of the command line say what to do: the hint of each, from a real bad input."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from odedsl.cli.main import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
RESNET = str(SPECS / "resnet.ode")
TINY = ["--set", "depth=3", "--set", "width=4", "--set", "size=8"]
NO_MATPLOTLIB = importlib.util.find_spec("matplotlib") is None


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _exit_2(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; it must exit 2 with a located message and no traceback: its stderr."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _hint(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip().startswith("hint: ")]
    assert len(lines) == 1, err
    return lines[0].strip().removeprefix("hint: ")


@pytest.mark.parametrize("command", ["gradcheck", "plot"])
def test_batch_of_one_says_to_pass_two_or_more(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--depths", "2,4"] if command == "plot" else []
    err = _exit_2(capsys, command, RESNET, *TINY, *extra, "--batch", "1")
    assert "--batch 1: must be at least 2 [E205]" in err
    assert _hint(err).startswith("pass --batch 2 or more (the default is 4)")


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ODEDSL_MAX_DEPTH", "lots", "e.g. ODEDSL_MAX_DEPTH=100000 (the default), or unset it"),
        ("ODEDSL_MAX_DEPTH", "0", "ODEDSL_MAX_DEPTH=100000"),
        ("ODEDSL_MAX_IMPORTS", "-1", "ODEDSL_MAX_IMPORTS=256"),
        ("ODEDSL_MAX_WIDTH", "٣", "write it in ASCII digits"),
    ],
)
def test_a_bad_limit_variable_names_a_value_that_works(
    name: str,
    value: str,
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    err = _exit_2(capsys, "check", RESNET)
    assert f"environment variable {name}={value!r}" in err and "[E130]" in err
    assert fragment in _hint(err)


def test_the_hint_of_a_limit_variable_is_a_value_it_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Doing what the hint says works: the suggested value passes."""
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", "1e5")
    hint = _hint(_exit_2(capsys, "check", RESNET))
    suggested = hint.split("e.g. ODEDSL_MAX_DEPTH=")[1].split()[0]
    monkeypatch.setenv("ODEDSL_MAX_DEPTH", suggested)
    assert main(["check", RESNET]) == 0


def test_plot_integrators_without_names(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(capsys, "plot", RESNET, *TINY, "--depths", "2,4", "--integrators", " , ")
    assert "--integrators ' , ': expected integrator names [E130]" in err
    assert "e.g. --integrators euler,heun,rk4" in _hint(err)


@pytest.mark.skipif(NO_MATPLOTLIB, reason="the `plot` extra")
def test_plot_output_of_another_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "sweep.txt")
    err = _exit_2(capsys, "plot", RESNET, *TINY, "--depths", "2,4", "-o", out)
    assert "expected a .png, .pdf or .svg file" in err
    assert "e.g. -o resnet-gradient-error.png (the default)" in _hint(err)


@pytest.mark.skipif(NO_MATPLOTLIB, reason="the `plot` extra")
def test_show_draw_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes").write_text("")
    target = str(tmp_path / "notes" / "arch.png")
    err = _exit_2(capsys, "show", RESNET, "--draw", target)
    assert f"--draw {target!r}: cannot write there: " in err and "[E130]" in err
    assert _hint(err).startswith("name a file in a folder you can write in")
