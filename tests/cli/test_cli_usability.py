"""Findings of a user-journey audit of the command line: each bad argument is a one-line error
with a hint (exit 2), never a traceback, and options behave as the rest of the CLI does."""

from __future__ import annotations

from pathlib import Path

import pytest

from odedsl.cli.main import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
RESNET = str(SPECS / "resnet.ode")


def _exit_2(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; it must exit 2 without a traceback: its stderr."""
    try:
        code = main(list(args))
    except SystemExit as exited:  # argparse's usage errors
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_parameter_set_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(capsys, "check", RESNET, "--set", "depth=4", "--set", "depth=8")
    assert "--set depth given twice ('depth=4' and 'depth=8') [E130]" in err
    assert "hint: give each parameter once" in err


def test_version_prints_the_installed_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    import odedsl
    from odedsl.cli.main import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"odedsl {importlib.metadata.version('odedsl')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert version() == odedsl.__version__
