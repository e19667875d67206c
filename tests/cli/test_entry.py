"""The console script: importing it is light (no torch), so a Ctrl-C during start-up meets
``entry``'s handler and ends with ``interrupted`` and exit code 130, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import odedsl.cli.main as cli_main
from odedsl.cli.common import EXIT_BAD_INPUT


def test_importing_the_cli_does_not_import_torch() -> None:
    code = (
        "import sys, odedsl.cli.main\n"
        "heavy = sorted(m for m in ('torch', 'odedsl.cli.common', 'odedsl.cli.environment') "
        "if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_exit_bad_input_and_build_parser_stay_importable_from_main() -> None:
    from odedsl.cli.main import EXIT_BAD_INPUT as from_main
    from odedsl.cli.main import build_parser

    assert from_main == EXIT_BAD_INPUT == 2
    assert build_parser().prog == "odedsl"


def _interrupt(*args: object, **kwargs: object) -> int:
    raise KeyboardInterrupt


def test_entry_turns_an_interrupt_into_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "main", _interrupt)
    with pytest.raises(SystemExit) as exited:
        cli_main.entry()
    assert exited.value.code == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "interrupted"
    assert "Traceback" not in captured.err + captured.out


def test_main_turns_an_interrupt_while_loading_commands_into_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "build_parser", _interrupt)
    assert cli_main.main(["check", "x.ode"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_python_dash_m_odedsl_is_the_console_script(tmp_path) -> None:
    spec = tmp_path / "bad.ode"
    spec.write_text("network n() { input vector[4] stage s = ode(2) { residual { nope } } }\n")
    done = subprocess.run(
        [sys.executable, "-m", "odedsl", "check", str(spec)], capture_output=True, text=True
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "bad.ode:1:" in done.stderr and "^" in done.stderr
    assert "Traceback" not in done.stderr
    usage = subprocess.run([sys.executable, "-m", "odedsl"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: odedsl ")
